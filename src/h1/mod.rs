//! HTTP/1.1 on the wire without hyper, one copy for both native sides:
//! message heads parsed with `httparse` into `http` types and written back
//! out ([`head`]), body framing (one [`Framing`] table; `Content-Length`,
//! chunked, until close) read by a [`Decoder`] and written by an
//! [`Encoder`] ([`framing`]), and the socket's read and vectored write ([`io`]).
//!
//! The proxy speaks it itself where that is most of the work: to cleartext
//! HTTP/1.x clients (`listener::native`) and cleartext HTTP/1.1 upstreams
//! (`upstream::pool`). Parsing stays strict where a lenient
//! reading could frame a message differently from the peer (request
//! smuggling): conflicting `Content-Length` values, a transfer coding that is
//! not chunked, a malformed chunk size are errors, never guesses.

pub mod framing;
pub mod head;
pub mod io;

pub use framing::{Decoded, Decoder, Encoder, Framing, FramingError, LengthMismatch};
pub use head::{HeadError, ResponseHead};
