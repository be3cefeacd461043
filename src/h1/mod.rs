//! HTTP/1.1 on the wire without hyper: message heads parsed with `httparse`
//! into `http` types and written back out ([`head`]), and body framing —
//! `Content-Length`, chunked, until close — in both directions ([`framing`]).
//!
//! The proxy speaks it itself where that is most of the work: to cleartext
//! HTTP/1.x clients (`listener::native`) and cleartext HTTP/1.1 upstreams
//! (`proxy::upstream`). Parsing stays strict where a lenient
//! reading could frame a message differently from the peer (request
//! smuggling): conflicting `Content-Length` values, a transfer coding that is
//! not chunked, a malformed chunk size are errors, never guesses.

pub mod framing;
pub mod head;
pub mod io;

pub use framing::{Decoded, Decoder, Framing, FramingError};
pub use head::{HeadError, ResponseHead};
