//! A client's request body on its way to an upstream, below the request path
//! and the pools that carry it:
//!
//! ```text
//! RequestBody (hyper's, or the native server's pipe)   incoming
//!   -> ClientBody (idle timeout, size limit, verdict)   idle
//!   -> UpstreamBody (replayable until first read)       replay
//! ```
//! and the deadline timer both HTTP/1 sides share ([`poll_deadline`]).

pub mod idle;
pub mod incoming;
pub mod replay;

pub use idle::{BodyCut, BodyVerdict, ClientBody, IdleTimer, Verdict, poll_deadline};
pub use incoming::{PipeError, PipeReader, PipeWriter, RequestBody, Room, pipe};
pub use replay::{Replay, UpstreamBody};

/// The error of every body on the request path, either way: hyper's,
/// the native HTTP/1 code's, or a timeout's.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
