//! Message body framing (RFC 9112 §6-7): reading a body out of a
//! connection's read buffer, and the chunked coding's bytes for writing one.
//!
//! Data is split off the read buffer as `Bytes` (no copy); the decoder keeps
//! only where it is in the message.

use bytes::{Buf, Bytes, BytesMut};

/// How a message body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: HEAD responses, 1xx, 204, 304, and requests without one.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
    /// Everything until the peer closes (responses only).
    Close,
}

/// Why a body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("invalid chunk size line")]
    ChunkSize,
    #[error("chunk data not followed by CRLF")]
    ChunkEnd,
    #[error("chunk extension or trailer section too long")]
    TooLong,
    #[error("connection closed before the body ended")]
    Incomplete,
}

/// The longest chunk size line (with extensions) and trailer section taken.
const MAX_CONTROL: usize = 16 * 1024;

/// What one step of decoding gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    /// The buffer holds nothing more of the body yet: read more.
    NeedMore,
    /// The body is complete; the buffer now starts after it.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Bytes left of a sized body.
    Length(u64),
    /// Expecting a chunk size line.
    Size,
    /// Bytes left of the current chunk's data.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// The trailer section after the last chunk; `usize`: bytes of it seen.
    Trailers(usize),
    Close,
    Done,
}

/// Reads one message body, as framed, out of a read buffer.
#[derive(Debug, Clone, Copy)]
pub struct Decoder {
    state: State,
}

impl Decoder {
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Size,
            Framing::Close => State::Close,
        };
        Self { state }
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes still to come, when known.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::Done => Some(0),
            _ => None,
        }
    }

    /// The next piece of the body from `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, FramingError> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::End),
                State::Length(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::Done
                    } else {
                        State::Length(left)
                    };
                    return Ok(Decoded::Data(buf.split_to(n).freeze()));
                }
                State::Close => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    return Ok(Decoded::Data(buf.split().freeze()));
                }
                State::Size => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        self.state = if size == 0 {
                            State::Trailers(0)
                        } else {
                            State::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_CONTROL => {
                        return Err(FramingError::TooLong);
                    }
                    Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
                    Err(_) => return Err(FramingError::ChunkSize),
                },
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let left = left - n as u64;
                    let data = buf.split_to(n).freeze();
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                    if left == 0 {
                        self.settle(buf);
                    }
                    return Ok(Decoded::Data(data));
                }
                State::DataEnd => match buf.get(..2) {
                    Some(b"\r\n") => {
                        buf.advance(2);
                        self.state = State::Size;
                    }
                    Some(_) => return Err(FramingError::ChunkEnd),
                    None if buf.first().is_some_and(|&b| b != b'\r') => {
                        return Err(FramingError::ChunkEnd);
                    }
                    None => return Ok(Decoded::NeedMore),
                },
                State::Trailers(seen) => {
                    // Trailer fields are dropped: each line up to its CRLF,
                    // until the empty line that ends the message.
                    let Some(eol) = buf.iter().position(|&b| b == b'\n') else {
                        if seen + buf.len() > MAX_CONTROL {
                            return Err(FramingError::TooLong);
                        }
                        return Ok(Decoded::NeedMore);
                    };
                    let line = &buf[..eol];
                    let empty = line == b"\r";
                    if !line.ends_with(b"\r") {
                        return Err(FramingError::ChunkEnd);
                    }
                    let seen = seen + eol + 1;
                    buf.advance(eol + 1);
                    if empty {
                        self.state = State::Done;
                    } else if seen > MAX_CONTROL {
                        return Err(FramingError::TooLong);
                    } else {
                        self.state = State::Trailers(seen);
                    }
                }
            }
        }
    }

    /// After a chunk's data: when the last chunk and an empty trailer section
    /// follow in the buffer already, takes them, so that the body is known to
    /// be complete with its last data (and the next read is not needed to
    /// learn it). Anything else is left for [`Self::decode`].
    fn settle(&mut self, buf: &mut BytesMut) {
        if !buf.starts_with(b"\r\n0") {
            return;
        }
        let rest = &buf[2..];
        let Ok(httparse::Status::Complete((used, 0))) = httparse::parse_chunk_size(rest) else {
            return;
        };
        if rest[used..].starts_with(b"\r\n") {
            buf.advance(2 + used + 2);
            self.state = State::Done;
        }
    }

    /// The peer closed: the end of a close-delimited body, an error otherwise.
    pub fn eof(&mut self) -> Result<(), FramingError> {
        match self.state {
            State::Close | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(FramingError::Incomplete),
        }
    }
}

/// Writes the line that starts a chunk of `len` bytes (after the CRLF that
/// ends the previous chunk, when there was one).
pub fn chunk_start(out: &mut BytesMut, len: usize, after_chunk: bool) {
    if after_chunk {
        out.extend_from_slice(b"\r\n");
    }
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = len;
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// Writes the end of a chunked body (the last chunk, no trailers).
pub fn chunked_end(out: &mut BytesMut, after_chunk: bool) {
    if after_chunk {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` fed in pieces of `step` bytes; the data, and what was
    /// left in the buffer after the end.
    fn feed(
        framing: Framing,
        wire: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, Vec<u8>), FramingError> {
        let mut d = Decoder::new(framing);
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut rest = wire;
        loop {
            match d.decode(&mut buf)? {
                Decoded::Data(b) => data.extend_from_slice(&b),
                Decoded::End => return Ok((data, buf.to_vec())),
                Decoded::NeedMore if rest.is_empty() => {
                    d.eof()?;
                    return Ok((data, buf.to_vec()));
                }
                Decoded::NeedMore => {
                    let n = step.min(rest.len());
                    buf.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_sizes() {
        let wire = b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nx-t: 1\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, 100] {
            let (data, rest) = feed(Framing::Chunked, wire, step).unwrap_or_default();
            assert_eq!(data, b"hello 0123456789", "step {step}");
            assert_eq!(rest, b"NEXT"[..rest.len()].to_vec(), "step {step}");
        }
    }

    #[test]
    fn a_chunked_body_is_done_with_its_last_data_when_the_end_is_buffered() {
        let mut d = Decoder::new(Framing::Chunked);
        let mut buf = BytesMut::from(&b"4\r\nblue\r\n0\r\n\r\nNEXT"[..]);
        assert_eq!(
            d.decode(&mut buf),
            Ok(Decoded::Data(Bytes::from_static(b"blue")))
        );
        assert!(d.is_done());
        assert_eq!(&buf[..], b"NEXT");
        // Trailers (or a partial end) wait for the next decode.
        let mut d = Decoder::new(Framing::Chunked);
        let mut buf = BytesMut::from(&b"4\r\nblue\r\n0\r\nx: y\r\n\r\n"[..]);
        assert!(matches!(d.decode(&mut buf), Ok(Decoded::Data(_))));
        assert!(!d.is_done());
        assert_eq!(d.decode(&mut buf), Ok(Decoded::End));
        assert!(buf.is_empty());
    }

    #[test]
    fn sized_and_close_delimited_bodies() {
        assert_eq!(
            feed(Framing::Length(5), b"helloNEXT", 2),
            Ok((b"hello".to_vec(), b"NEXT"[..1].to_vec()))
        );
        assert_eq!(
            feed(Framing::Length(9), b"short", 100),
            Err(FramingError::Incomplete)
        );
        assert_eq!(
            feed(Framing::Close, b"all of it", 4),
            Ok((b"all of it".to_vec(), Vec::new()))
        );
        assert_eq!(
            feed(Framing::Empty, b"NEXT", 4),
            Ok((Vec::new(), Vec::new()))
        );
    }

    #[test]
    fn malformed_chunking_is_an_error_never_a_guess() {
        for wire in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"fffffffffffffffff\r\n",
            b"-1\r\n",
        ] {
            assert!(feed(Framing::Chunked, wire, 100).is_err(), "{wire:?}");
        }
        assert_eq!(
            feed(Framing::Chunked, b"5\r\nhel", 100),
            Err(FramingError::Incomplete)
        );
        let long = [b"1;".as_slice(), &[b'x'; 20_000]].concat();
        assert_eq!(
            feed(Framing::Chunked, &long, 4096),
            Err(FramingError::TooLong)
        );
    }

    #[test]
    fn chunk_lines_are_lowercase_hex() {
        let mut out = BytesMut::new();
        chunk_start(&mut out, 0x1a2b, false);
        chunk_start(&mut out, 1, true);
        chunked_end(&mut out, true);
        assert_eq!(&out[..], b"1a2b\r\n\r\n1\r\n\r\n0\r\n\r\n");
    }
}
