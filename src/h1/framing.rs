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
    #[error("invalid trailer section")]
    Trailer,
    #[error("chunk extensions or trailer section too long")]
    TooLong,
    #[error("connection closed before the body ended")]
    Incomplete,
}

/// Extension bytes taken over a whole chunked body, and the size of its
/// trailer section: hyper's limits, so that both stacks refuse alike.
const MAX_EXTENSIONS: u32 = 16 * 1024;
const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// Trailer fields taken when the caller names no limit (hyper's default).
pub const DEFAULT_MAX_TRAILERS: usize = 100;

/// What one step of decoding gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    /// The buffer holds nothing more of the body yet: read more.
    NeedMore,
    /// The body is complete; the buffer now starts after it.
    End,
}

/// Where a chunk-size line (`chunk-size [ BWS ] *( ";" chunk-ext ) CRLF`) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Nothing yet: a hex digit must come.
    Start,
    Digits,
    /// Blanks after the digits: no more digits may come.
    Blank,
    /// Inside the extensions: anything but CR and LF, until CR.
    Extension,
    /// After the CR: the LF must come.
    Lf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecodeState {
    /// Bytes left of a sized body.
    Length(u64),
    /// Reading a chunk-size line; the size so far.
    Size(Line, u64),
    /// Bytes left of the current chunk's data.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk, at the start of a line: a trailer field or the
    /// CRLF that ends the message.
    LineStart,
    /// Inside a trailer field line.
    Trailer,
    /// After a trailer line's CR.
    TrailerLf,
    /// After the final CR.
    EndLf,
    Close,
    Done,
}

/// Reads one message body, as framed, out of a read buffer.
///
/// The chunked coding is read as RFC 9112 §7.1 writes it, and as hyper
/// reads it (the proxy's two HTTP stacks must frame every message alike,
/// `tests/smuggling.rs`): a size line needs a hex digit, takes blanks only
/// after the digits, ends in CRLF, and has no CR or LF in its extensions;
/// chunk data ends in CRLF; every trailer line ends in CRLF and the trailer
/// section parses as header fields. Anything else is an error, never a guess.
#[derive(Debug, Clone)]
pub struct Decoder {
    state: DecodeState,
    /// Extension bytes seen so far.
    extensions: u32,
    trailer_lines: u32,
    max_trailers: u32,
    /// The trailer section as read (validated, then dropped, at its end).
    /// Boxed: most bodies have none, and the decoder lives in every
    /// response body, which moves a few times per request.
    trailers: Option<Box<BytesMut>>,
}

fn hex_digit(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

impl Decoder {
    pub fn new(framing: Framing) -> Self {
        Self::with_max_trailers(framing, DEFAULT_MAX_TRAILERS)
    }

    /// A decoder that takes at most `max_trailers` trailer fields (the
    /// server's header field limit, as hyper applies it).
    pub fn with_max_trailers(framing: Framing, max_trailers: usize) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => DecodeState::Done,
            Framing::Length(n) => DecodeState::Length(n),
            Framing::Chunked => DecodeState::Size(Line::Start, 0),
            Framing::Close => DecodeState::Close,
        };
        Self {
            state,
            extensions: 0,
            trailer_lines: 0,
            max_trailers: u32::try_from(max_trailers).unwrap_or(u32::MAX),
            trailers: None,
        }
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        self.state == DecodeState::Done
    }

    /// Bytes still to come, when known.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            DecodeState::Length(n) => Some(n),
            DecodeState::Done => Some(0),
            _ => None,
        }
    }

    /// The next piece of the body from `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, FramingError> {
        loop {
            match self.state {
                DecodeState::Done => return Ok(Decoded::End),
                DecodeState::Length(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        DecodeState::Done
                    } else {
                        DecodeState::Length(left)
                    };
                    return Ok(Decoded::Data(buf.split_to(n).freeze()));
                }
                DecodeState::Close => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    return Ok(Decoded::Data(buf.split().freeze()));
                }
                DecodeState::Size(..) => {
                    if !self.size_line(buf)? {
                        return Ok(Decoded::NeedMore);
                    }
                }
                DecodeState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let left = left - n as u64;
                    let data = buf.split_to(n).freeze();
                    self.state = if left == 0 {
                        DecodeState::DataEnd
                    } else {
                        DecodeState::Data(left)
                    };
                    if left == 0 {
                        self.settle(buf);
                    }
                    return Ok(Decoded::Data(data));
                }
                DecodeState::DataEnd => match buf.get(..2) {
                    Some(b"\r\n") => {
                        buf.advance(2);
                        self.state = DecodeState::Size(Line::Start, 0);
                    }
                    Some(_) => return Err(FramingError::ChunkEnd),
                    None if buf.first().is_some_and(|&b| b != b'\r') => {
                        return Err(FramingError::ChunkEnd);
                    }
                    None => return Ok(Decoded::NeedMore),
                },
                DecodeState::LineStart
                | DecodeState::Trailer
                | DecodeState::TrailerLf
                | DecodeState::EndLf => {
                    if !self.trailer_section(buf)? {
                        return Ok(Decoded::NeedMore);
                    }
                }
            }
        }
    }

    /// Reads a chunk-size line out of `buf` as far as it goes; true once it
    /// is complete (the state then is the chunk's data, or the trailers).
    fn size_line(&mut self, buf: &mut BytesMut) -> Result<bool, FramingError> {
        let DecodeState::Size(mut line, mut size) = self.state else {
            return Ok(true);
        };
        let mut used = 0;
        let mut complete = false;
        for &b in buf.iter() {
            used += 1;
            let digit = hex_digit(b);
            line = match (line, b) {
                (Line::Start | Line::Digits, _) if digit.is_some() => {
                    size = size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(digit.unwrap_or(0)))
                        .ok_or(FramingError::ChunkSize)?;
                    Line::Digits
                }
                (Line::Digits | Line::Blank, b' ' | b'\t') => Line::Blank,
                (Line::Digits | Line::Blank, b';') => Line::Extension,
                (Line::Digits | Line::Blank | Line::Extension, b'\r') => Line::Lf,
                (Line::Extension, b'\n') => return Err(FramingError::ChunkSize),
                (Line::Extension, _) => {
                    self.extensions += 1;
                    if self.extensions >= MAX_EXTENSIONS {
                        return Err(FramingError::TooLong);
                    }
                    Line::Extension
                }
                (Line::Lf, b'\n') => {
                    complete = true;
                    break;
                }
                _ => return Err(FramingError::ChunkSize),
            };
        }
        buf.advance(used);
        self.state = match (complete, size) {
            (false, _) => DecodeState::Size(line, size),
            (true, 0) => DecodeState::LineStart,
            (true, n) => DecodeState::Data(n),
        };
        Ok(complete)
    }

    /// Reads the trailer section after the last chunk as far as `buf` goes;
    /// true once the message has ended (and its trailers were valid).
    fn trailer_section(&mut self, buf: &mut BytesMut) -> Result<bool, FramingError> {
        let mut used = 0;
        let mut ended = false;
        for &b in buf.iter() {
            used += 1;
            self.state = match (self.state, b) {
                (DecodeState::LineStart, b'\r') => {
                    self.keep_trailer_byte(b, false)?;
                    DecodeState::EndLf
                }
                (DecodeState::LineStart | DecodeState::Trailer, _) => {
                    self.keep_trailer_byte(b, true)?;
                    if b == b'\r' {
                        DecodeState::TrailerLf
                    } else {
                        DecodeState::Trailer
                    }
                }
                (DecodeState::TrailerLf, b'\n') => {
                    if self.trailer_lines >= self.max_trailers {
                        return Err(FramingError::TooLong);
                    }
                    self.trailer_lines += 1;
                    self.keep_trailer_byte(b, false)?;
                    DecodeState::LineStart
                }
                (DecodeState::EndLf, b'\n') => {
                    self.keep_trailer_byte(b, false)?;
                    ended = true;
                    break;
                }
                _ => return Err(FramingError::Trailer),
            };
        }
        buf.advance(used);
        if ended {
            self.check_trailers()?;
            self.state = DecodeState::Done;
        }
        Ok(ended)
    }

    /// Keeps a byte of the trailer section, once there is one (`start`: this
    /// byte may start it).
    fn keep_trailer_byte(&mut self, b: u8, start: bool) -> Result<(), FramingError> {
        match self.trailers.as_mut() {
            Some(t) => {
                t.extend_from_slice(&[b]);
                if t.len() >= MAX_TRAILER_BYTES {
                    return Err(FramingError::TooLong);
                }
            }
            None if start => self.trailers = Some(Box::new(BytesMut::from(&[b][..]))),
            None => {}
        }
        Ok(())
    }

    /// The trailer section must be header fields, one a line.
    fn check_trailers(&mut self) -> Result<(), FramingError> {
        let Some(section) = self.trailers.take() else {
            return Ok(());
        };
        let mut fields = vec![httparse::EMPTY_HEADER; self.trailer_lines as usize];
        match httparse::parse_headers(&section, &mut fields) {
            Ok(httparse::Status::Complete((_, fields))) => {
                let valid = fields.iter().all(|f| {
                    http::HeaderName::from_bytes(f.name.as_bytes()).is_ok()
                        && http::HeaderValue::from_bytes(f.value).is_ok()
                });
                if valid {
                    Ok(())
                } else {
                    Err(FramingError::Trailer)
                }
            }
            _ => Err(FramingError::Trailer),
        }
    }

    /// After a chunk's data: when the last chunk and an empty trailer section
    /// follow in the buffer already, takes them, so that the body is known to
    /// be complete with its last data (and the next read is not needed to
    /// learn it). Anything else is left for [`Self::decode`].
    fn settle(&mut self, buf: &mut BytesMut) {
        const END: &[u8] = b"\r\n0\r\n\r\n";
        if buf.starts_with(END) {
            buf.advance(END.len());
            self.state = DecodeState::Done;
        }
    }

    /// The peer closed: the end of a close-delimited body, an error otherwise.
    pub fn eof(&mut self) -> Result<(), FramingError> {
        match self.state {
            DecodeState::Close | DecodeState::Done => {
                self.state = DecodeState::Done;
                Ok(())
            }
            _ => Err(FramingError::Incomplete),
        }
    }
}

/// The body's data did not match its `Content-Length`: more than it said
/// (the rest was cut off) or, at the end, less.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("body does not match its Content-Length")]
pub struct LengthMismatch;

/// Frames a body for the wire, for both native sides (the server's
/// responses, the pool's requests): a chunk-size line before each piece
/// under chunked and the last chunk at the end; under a length, the count.
/// The data itself is not copied here: the caller writes it after `out`.
#[derive(Debug, Clone, Copy)]
pub struct Encoder {
    framing: Framing,
    /// Under `Length`, bytes still due.
    left: u64,
    /// A chunk has been written (the next needs a CRLF first).
    chunked_any: bool,
    done: bool,
}

impl Encoder {
    /// An encoder for a body framed as `framing`; `Empty` is done from the start.
    pub fn new(framing: Framing) -> Self {
        Self {
            framing,
            left: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            chunked_any: false,
            done: framing == Framing::Empty,
        }
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Whether the body has ended (or never had any bytes to send).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Frames one piece of data: its chunk-size line goes into `out`, and
    /// `data` is what to write after it (emptied when the framing sends no
    /// body). Data past the length is cut off and reported.
    pub fn encode(&mut self, out: &mut BytesMut, data: &mut Bytes) -> Result<(), LengthMismatch> {
        if data.is_empty() {
            return Ok(());
        }
        match self.framing {
            Framing::Empty => data.clear(),
            Framing::Chunked => {
                if self.chunked_any {
                    out.extend_from_slice(b"\r\n");
                }
                chunk_size_line(out, data.len());
                self.chunked_any = true;
            }
            Framing::Length(_) => {
                if data.len() as u64 > self.left {
                    data.truncate(usize::try_from(self.left).unwrap_or(usize::MAX));
                    self.left = 0;
                    return Err(LengthMismatch);
                }
                self.left -= data.len() as u64;
            }
            Framing::Close => {}
        }
        Ok(())
    }

    /// Ends the body: the last chunk under chunked (no trailers). A length
    /// not reached is reported. Ending twice does nothing.
    pub fn finish(&mut self, out: &mut BytesMut) -> Result<(), LengthMismatch> {
        self.finish_with(out, None)
    }

    /// Ends the body as [`Self::finish`], with `trailers` in the last chunk
    /// under chunked (only the fields [`forwardable_trailer`] lets through);
    /// under any other framing a message has no room for them, and they
    /// are dropped.
    pub fn finish_with(
        &mut self,
        out: &mut BytesMut,
        trailers: Option<&http::HeaderMap>,
    ) -> Result<(), LengthMismatch> {
        if std::mem::replace(&mut self.done, true) {
            return Ok(());
        }
        match self.framing {
            Framing::Chunked => {
                if self.chunked_any {
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n");
                for (name, value) in trailers.into_iter().flatten() {
                    if forwardable_trailer(name) {
                        out.extend_from_slice(name.as_str().as_bytes());
                        out.extend_from_slice(b": ");
                        out.extend_from_slice(value.as_bytes());
                        out.extend_from_slice(b"\r\n");
                    }
                }
                out.extend_from_slice(b"\r\n");
                Ok(())
            }
            Framing::Length(_) if self.left > 0 => Err(LengthMismatch),
            _ => Ok(()),
        }
    }
}

/// Whether a trailer field may be forwarded: not one that frames, routes,
/// authenticates or controls the message (RFC 9110 §6.5.1), nor a
/// hop-by-hop field. Such fields in a trailer section are dropped.
pub fn forwardable_trailer(name: &http::HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "content-length"
            | "transfer-encoding"
            | "host"
            | "connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-connection"
            | "proxy-authorization"
            | "proxy-authenticate"
            | "authorization"
            | "cookie"
            | "set-cookie"
            | "content-encoding"
            | "content-type"
            | "content-range"
            | "expect"
            | "max-forwards"
            | "range"
            | "cache-control"
    )
}

/// Writes `len` in hex and the CRLF that ends a chunk-size line.
fn chunk_size_line(out: &mut BytesMut, len: usize) {
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
        assert_eq!(
            feed(Framing::Chunked, b"5\r\nhel", 100),
            Err(FramingError::Incomplete)
        );
        // RFC 9112 §7.1: a size line needs a digit and ends in CRLF; no CR
        // or LF inside an extension; trailer lines are fields ending in CRLF.
        for wire in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"fffffffffffffffff\r\n",
            b"-1\r\n",
            b"\r\n\r\nGET /x HTTP/1.1\r\n\r\n",
            b" \r\n\r\n",
            b";x\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5 5\r\nhello\r\n0\r\n\r\n",
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"5;a\rb\r\nhello\r\n0\r\n\r\n",
            b"5\rhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n",
            b"5\r\nhello\r\n0\r\nx: a\nb: c\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\r\r\n",
            b"5\r\nhello\r\n0\r\n\n",
        ] {
            assert!(
                feed(Framing::Chunked, wire, 100).is_err(),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        for wire in [
            &b"5 \t;a=b ; c\r\nhello\r\n0\r\n\r\n"[..],
            b"0005\r\nhello\r\n00\r\nx-a: 1\r\nx-b:\r\n\r\n",
            b"000000000000000000000005\r\nhello\r\n0\r\n\r\n",
        ] {
            assert_eq!(
                feed(Framing::Chunked, wire, 3).map(|(d, _)| d),
                Ok(b"hello".to_vec()),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let long = [b"1;".as_slice(), &[b'x'; 20_000]].concat();
        assert_eq!(
            feed(Framing::Chunked, &long, 4096),
            Err(FramingError::TooLong)
        );
    }

    /// What `encoder` writes for `pieces`, data behind each line, then its end.
    fn encode_all(framing: Framing, pieces: &[&[u8]]) -> (Vec<u8>, Vec<bool>) {
        let mut enc = Encoder::new(framing);
        let mut out = BytesMut::new();
        let mut fits = Vec::new();
        for p in pieces {
            let mut data = Bytes::copy_from_slice(p);
            fits.push(enc.encode(&mut out, &mut data).is_ok());
            out.extend_from_slice(&data);
        }
        fits.push(enc.finish(&mut out).is_ok());
        assert!(enc.is_done());
        (out.to_vec(), fits)
    }

    #[test]
    fn chunk_lines_are_lowercase_hex() {
        let big = vec![b'a'; 0x1a2b];
        let (wire, fits) = encode_all(Framing::Chunked, &[&big, b"", b"z"]);
        let mut want = b"1a2b\r\n".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"\r\n1\r\nz\r\n0\r\n\r\n");
        assert_eq!(wire, want);
        assert_eq!(fits, [true; 4]);
        assert_eq!(encode_all(Framing::Chunked, &[]).0, b"0\r\n\r\n");
    }

    #[test]
    fn a_length_is_held_to_both_ways() {
        assert_eq!(
            encode_all(Framing::Length(5), &[b"ab", b"cde"]),
            (b"abcde".to_vec(), vec![true, true, true])
        );
        // Past the length: cut there, and said.
        assert_eq!(
            encode_all(Framing::Length(3), &[b"ab", b"cde"]),
            (b"abc".to_vec(), vec![true, false, true])
        );
        // Short of it: said at the end.
        assert_eq!(
            encode_all(Framing::Length(5), &[b"ab"]),
            (b"ab".to_vec(), vec![true, false])
        );
        // No body on the wire, whatever the data.
        assert_eq!(
            encode_all(Framing::Empty, &[b"ab"]),
            (Vec::new(), vec![true, true])
        );
        assert_eq!(
            encode_all(Framing::Close, &[b"ab", b"c"]),
            (b"abc".to_vec(), vec![true, true, true])
        );
    }
}
