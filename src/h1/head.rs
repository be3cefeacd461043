//! Message heads: a response head parsed into `http` types with its body's
//! framing, and a request head written from `http` types.
//!
//! Header values are slices of the frozen head bytes (no copy per header).

use std::mem::MaybeUninit;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

use super::framing::Framing;

/// The most header fields a response head may have (hyper's default too).
pub const MAX_RESPONSE_HEADERS: usize = 100;

/// The largest response head taken; past it the response is refused.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Why a message head could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("malformed message head: {0}")]
    Parse(httparse::Error),
    #[error("message head larger than {MAX_HEAD_BYTES} bytes")]
    TooLarge,
    #[error("invalid header field")]
    Header,
    #[error("invalid or conflicting Content-Length")]
    ContentLength,
    #[error("unsupported HTTP version")]
    Version,
    #[error("invalid request target")]
    Target,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub parts: http::response::Parts,
    pub framing: Framing,
    /// The connection may carry another request after this response.
    pub keep_alive: bool,
}

/// Where a header's name and value sit in the head's bytes. Parsers take a
/// `Vec` of them to reuse, so that no table is cleared or allocated per head.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    name: (u32, u32),
    value: (u32, u32),
}

/// Heads are at most `MAX_HEAD_BYTES`, so offsets fit in 32 bits.
fn offset(base: &[u8], part: &[u8]) -> (u32, u32) {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    (start as u32, (start + part.len()) as u32)
}

/// The length of a complete head; `None` while more bytes may complete it.
fn head_len(parsed: httparse::Result<usize>, buffered: usize) -> Result<Option<usize>, HeadError> {
    match parsed {
        Ok(httparse::Status::Complete(len)) => Ok(Some(len)),
        Ok(httparse::Status::Partial) if buffered > MAX_HEAD_BYTES => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(HeadError::Parse(e)),
    }
}

fn version_of(minor: Option<u8>) -> Result<Version, HeadError> {
    match minor {
        Some(1) => Ok(Version::HTTP_11),
        Some(0) => Ok(Version::HTTP_10),
        _ => Err(HeadError::Version),
    }
}

/// Notes where each parsed header sits in `buf`.
fn record(buf: &[u8], parsed: &[httparse::Header<'_>], spans: &mut Vec<Span>) {
    spans.clear();
    spans.extend(parsed.iter().map(|h| Span {
        name: offset(buf, h.name.as_bytes()),
        value: offset(buf, h.value),
    }));
}

/// The header map of a frozen head, values sliced out of it, with room for
/// `extra` more fields (what the proxy adds) without growing.
fn header_map(head: &Bytes, spans: &[Span], extra: usize) -> Result<HeaderMap, HeadError> {
    let mut headers = HeaderMap::with_capacity(spans.len() + extra);
    for s in spans {
        let (n0, n1) = (s.name.0 as usize, s.name.1 as usize);
        let (v0, v1) = (s.value.0 as usize, s.value.1 as usize);
        headers.append(
            HeaderName::from_bytes(&head[n0..n1]).map_err(|_| HeadError::Header)?,
            HeaderValue::from_maybe_shared(head.slice(v0..v1)).map_err(|_| HeadError::Header)?,
        );
    }
    Ok(headers)
}

/// Parses the response head at the start of `buf`, taking its bytes out of
/// `buf` when it is complete. `Ok(None)`: more bytes are needed. `method` is
/// the request's, which decides whether a body follows (HEAD).
pub fn parse_response(
    buf: &mut BytesMut,
    method: &Method,
    spans: &mut Vec<Span>,
) -> Result<Option<ResponseHead>, HeadError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots);
    let Some(len) = head_len(parsed, buf.len())? else {
        return Ok(None);
    };
    let version = version_of(resp.version)?;
    let status = resp
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(HeadError::Parse(httparse::Error::Status))?;
    let lengths = LengthFields::of(resp.headers);
    record(buf, resp.headers, spans);
    let head = buf.split_to(len).freeze();
    // Room for the Set-Cookie the proxy may add.
    let mut headers = header_map(&head, spans, 1)?;
    // A head another reader could frame differently (a length next to a
    // coding, a list or repeat of lengths, lines ending in a bare LF) is
    // answered, but its connection is not trusted with another request.
    let ambiguous = lengths.ambiguous() || bare_lf(&head, spans);
    let framing = response_framing(method, status, &mut headers, lengths)?;
    let keep_alive = framing != Framing::Close && !ambiguous && persistent(version, &headers);
    // The version is the peer's business: what goes on from here is the
    // proxy's own message, in its own version.
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = status;
    parts.headers = headers;
    Ok(Some(ResponseHead {
        parts,
        framing,
        keep_alive,
    }))
}

/// Whether a message's length headers could be read two ways: a length
/// beside a transfer coding, or a list, repeat or non-canonical length. Such
/// a message is passed on, but its connection not trusted with another.
pub fn ambiguous_length(headers: &HeaderMap) -> bool {
    !content_length_is_canonical(headers)
        || (headers.contains_key(header::CONTENT_LENGTH)
            && headers.contains_key(header::TRANSFER_ENCODING))
}

/// What a parsed head says of its length, read in the one pass over its
/// fields that finds them (the header map is then asked only for what is
/// there).
#[derive(Debug, Clone, Copy)]
struct LengthFields {
    /// `Content-Length` lines.
    lengths: usize,
    /// The one line there is, in plain decimal.
    canonical: bool,
    coded: bool,
}

impl LengthFields {
    fn of(fields: &[httparse::Header<'_>]) -> Self {
        let mut out = Self {
            lengths: 0,
            canonical: true,
            coded: false,
        };
        for f in fields {
            let name = f.name.as_bytes();
            match name.len() {
                14 if name.eq_ignore_ascii_case(b"content-length") => {
                    out.lengths += 1;
                    out.canonical &= out.lengths == 1 && is_plain_decimal(f.value);
                }
                17 if name.eq_ignore_ascii_case(b"transfer-encoding") => out.coded = true,
                _ => {}
            }
        }
        out
    }

    fn ambiguous(self) -> bool {
        !self.canonical || (self.coded && self.lengths > 0)
    }
}

/// Digits, no leading zero (but `0` itself).
fn is_plain_decimal(b: &[u8]) -> bool {
    !b.is_empty() && b.iter().all(u8::is_ascii_digit) && (b[0] != b'0' || b.len() == 1)
}

/// Whether a line of `head` (whose fields sit at `spans`) ends in LF alone.
/// Looks only where lines end: after the status line, after each field's
/// value and the blanks httparse trimmed from it, and at the end.
fn bare_lf(head: &[u8], spans: &[Span]) -> bool {
    let crlf_at = |i: usize| head.get(i..i + 2) == Some(&b"\r\n"[..]);
    let status_line_ends_well = match spans.first() {
        Some(first) => (first.name.0 as usize).checked_sub(2).is_some_and(crlf_at),
        None => true,
    };
    let fields_end_well = spans.iter().all(|s| {
        let mut i = s.value.1 as usize;
        while head.get(i).is_some_and(|&b| b == b' ' || b == b'\t') {
            i += 1;
        }
        crlf_at(i)
    });
    !(status_line_ends_well && fields_end_well && head.ends_with(b"\r\n\r\n"))
}

/// RFC 9112 §6.3. A `Content-Length` next to a chunked coding is dropped: the
/// body is re-framed on its way on, and a stale length must not go with it.
/// A list or repeat of equal lengths is read as the one length, and sent on
/// as it (the connection is closed after it: [`LengthFields::ambiguous`]).
fn response_framing(
    method: &Method,
    status: StatusCode,
    headers: &mut HeaderMap,
    lengths: LengthFields,
) -> Result<Framing, HeadError> {
    if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    if lengths.coded {
        if lengths.lengths > 0 {
            headers.remove(header::CONTENT_LENGTH);
        }
        return Ok(if last_coding_is_chunked(headers) {
            Framing::Chunked
        } else {
            Framing::Close
        });
    }
    if lengths.lengths == 0 {
        return Ok(Framing::Close);
    }
    let n = content_length(headers)?.ok_or(HeadError::ContentLength)?;
    if !lengths.canonical {
        set_content_length(headers, n);
    }
    Ok(Framing::Length(n))
}

/// Whether the final transfer coding named is `chunked`.
pub fn last_coding_is_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
        .and_then(|v| v.as_bytes().rsplit(|&b| b == b',').next())
        .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// A response's `Content-Length`: every value (and every item of a list)
/// must be the same number, as hyper's client reads it.
pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, HeadError> {
    let mut found = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        for item in v.as_bytes().split(|&b| b == b',') {
            let n = parse_decimal(item.trim_ascii()).ok_or(HeadError::ContentLength)?;
            if found.is_some_and(|f| f != n) {
                return Err(HeadError::ContentLength);
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// A request's `Content-Length`, as hyper's server reads it: one number a
/// line (no lists), every line the same number.
pub fn request_content_length(headers: &HeaderMap) -> Result<Option<u64>, HeadError> {
    let mut found = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        let n = parse_decimal(v.as_bytes()).ok_or(HeadError::ContentLength)?;
        if found.is_some_and(|f| f != n) {
            return Err(HeadError::ContentLength);
        }
        found = Some(n);
    }
    Ok(found)
}

/// Whether the `Content-Length` header is already what the proxy would send:
/// one line, one number, no leading zero.
pub fn content_length_is_canonical(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    match (values.next(), values.next()) {
        (None, _) => true,
        (Some(v), None) => is_plain_decimal(v.as_bytes()),
        _ => false,
    }
}

/// Makes a response's lengths one plain value (a list or repeat of equal
/// lengths, as hyper's client passes them, or leading zeros); a length that
/// is no length is dropped (the body's framing stands without it).
pub fn canonical_content_length(headers: &mut HeaderMap) {
    if content_length_is_canonical(headers) {
        return;
    }
    match content_length(headers) {
        Ok(Some(n)) => set_content_length(headers, n),
        _ => {
            headers.remove(header::CONTENT_LENGTH);
        }
    }
}

/// Replaces the `Content-Length` lines with the one value `n`.
pub fn set_content_length(headers: &mut HeaderMap, n: u64) {
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
}

/// Digits only (no sign, no spaces inside), any number of them (leading
/// zeros too) while the value fits: hyper's rule, so both stacks agree.
/// The largest length hyper takes is `u64::MAX - 2`.
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut n = 0u64;
    for &d in s {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    (n <= u64::MAX - 2).then_some(n)
}

/// Whether a message of `version` with these headers leaves the connection
/// open: HTTP/1.1 unless `close` is said, HTTP/1.0 only if `keep-alive` is.
pub fn persistent(version: Version, headers: &HeaderMap) -> bool {
    let said = |token: &[u8]| {
        headers.get_all(header::CONNECTION).iter().any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
        })
    };
    match version {
        Version::HTTP_11 => !said(b"close"),
        Version::HTTP_10 => said(b"keep-alive"),
        _ => false,
    }
}

/// Writes a request head for an origin server: the request line in origin
/// form, every header as given, and the framing header `framing` needs when
/// the headers do not already carry it.
pub fn write_request_head(out: &mut BytesMut, parts: &http::request::Parts, framing: Framing) {
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.reserve(64 + target.len() + parts.headers.len() * 32);
    out.put_slice(parts.method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    write_headers(out, &parts.headers);
    match framing {
        Framing::Chunked => out.put_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Length(n) if !parts.headers.contains_key(header::CONTENT_LENGTH) => {
            out.put_slice(b"content-length: ");
            let mut digits = itoa::Buffer::new();
            out.put_slice(digits.format(n).as_bytes());
            out.put_slice(b"\r\n");
        }
        _ => {}
    }
    out.put_slice(b"\r\n");
}

/// Every header line, `name: value\r\n`, in the map's order.
pub fn write_headers(out: &mut BytesMut, headers: &HeaderMap) {
    for (name, value) in headers {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
}

/// The most header fields the proxy's own server parses; a request with more
/// (when the configured limit allows more) goes to hyper's.
pub const MAX_REQUEST_HEADERS: usize = 128;

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead {
    pub parts: http::request::Parts,
    /// The head's bytes as they came, for handing the connection on.
    pub raw: Bytes,
}

/// Parses the request head at the start of `buf` with at most `max_headers`
/// fields, taking its bytes out of `buf` when it is complete. `Ok(None)`: more
/// bytes are needed (or the head is past `MAX_HEAD_BYTES`: see the error).
pub fn parse_request(
    buf: &mut BytesMut,
    max_headers: usize,
    spans: &mut Vec<Span>,
) -> Result<Option<RequestHead>, HeadError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_REQUEST_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let n = max_headers.min(MAX_REQUEST_HEADERS);
    let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut req,
        buf,
        &mut slots[..n],
    );
    let Some(len) = head_len(parsed, buf.len())? else {
        return Ok(None);
    };
    let version = version_of(req.version)?;
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return Err(HeadError::Parse(httparse::Error::Token));
    };
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| HeadError::Parse(httparse::Error::Token))?;
    let target = offset(buf, path.as_bytes());
    record(buf, req.headers, spans);
    let raw = buf.split_to(len).freeze();
    let uri = http::Uri::from_maybe_shared(raw.slice(target.0 as usize..target.1 as usize))
        .map_err(|_| HeadError::Target)?;
    // Room for Host and the X-Forwarded-* fields the proxy adds.
    let headers = header_map(&raw, spans, 4)?;
    let mut parts = http::Request::new(()).into_parts().0;
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(RequestHead { parts, raw }))
}

/// Writes a response head: the status line, the headers as given but for
/// `Connection` (replaced by what `keep_alive` says for `version`), the
/// framing header, and `Date` when the headers have none.
pub fn write_response_head(
    out: &mut BytesMut,
    status: StatusCode,
    headers: &HeaderMap,
    framing: Framing,
    version: Version,
    keep_alive: bool,
) {
    out.reserve(128 + headers.len() * 48);
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
    for (name, value) in headers {
        if name == header::CONNECTION {
            continue;
        }
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    match framing {
        Framing::Length(n) if !headers.contains_key(header::CONTENT_LENGTH) => {
            out.put_slice(b"content-length: ");
            out.put_slice(itoa::Buffer::new().format(n).as_bytes());
            out.put_slice(b"\r\n");
        }
        // A `Transfer-Encoding` among the headers already ends in chunked.
        Framing::Chunked if !headers.contains_key(header::TRANSFER_ENCODING) => {
            out.put_slice(b"transfer-encoding: chunked\r\n");
        }
        _ => {}
    }
    if !keep_alive {
        out.put_slice(b"connection: close\r\n");
    } else if version == Version::HTTP_10 {
        out.put_slice(b"connection: keep-alive\r\n");
    }
    if !headers.contains_key(header::DATE) {
        out.put_slice(b"date: ");
        date::with_now(|d| out.put_slice(d));
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
}

/// The `Date` value, formatted once a second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static NOW: RefCell<(u64, Vec<u8>)> = const { RefCell::new((0, Vec::new())) };
    }

    pub fn with_now(f: impl FnOnce(&[u8])) {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        NOW.with(|cell| {
            let mut cached = cell.borrow_mut();
            if cached.0 != secs || cached.1.is_empty() {
                *cached = (secs, httpdate::fmt_http_date(now).into_bytes());
            }
            f(&cached.1);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value_of<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
        h.get(name).map(HeaderValue::as_bytes)
    }

    fn parse(wire: &[u8], method: &Method) -> Result<Option<ResponseHead>, HeadError> {
        let mut buf = BytesMut::from(wire);
        parse_response(&mut buf, method, &mut Vec::new())
    }

    #[test]
    fn a_response_head_is_parsed_and_taken_out_of_the_buffer() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 201 Made\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello"[..],
        );
        let head = parse_response(&mut buf, &Method::GET, &mut Vec::new())
            .ok()
            .flatten();
        let Some(head) = head else { panic!("no head") };
        assert_eq!(head.parts.status, StatusCode::CREATED);
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.keep_alive);
        assert_eq!(head.parts.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(value_of(&head.parts.headers, "x-a"), Some(&b"1"[..]));
        assert_eq!(&buf[..], b"hello");
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let framing = |wire: &[u8], m: &Method| parse(wire, m).ok().flatten().map(|h| h.framing);
        let get = &Method::GET;
        assert_eq!(
            framing(
                b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
                &Method::HEAD
            ),
            Some(Framing::Empty)
        );
        assert_eq!(
            framing(
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                get
            ),
            Some(Framing::Empty)
        );
        assert_eq!(
            framing(b"HTTP/1.1 204 No Content\r\n\r\n", get),
            Some(Framing::Empty)
        );
        assert_eq!(
            framing(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
                get
            ),
            Some(Framing::Chunked)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", get),
            Some(Framing::Close)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\n\r\n", get),
            Some(Framing::Close)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\n\r\n", get),
            Some(Framing::Length(4))
        );
        let chunked = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            get,
        );
        assert!(
            chunked
                .ok()
                .flatten()
                .is_some_and(|h| !h.parts.headers.contains_key("content-length"))
        );
    }

    #[test]
    fn bad_heads_are_errors() {
        let get = &Method::GET;
        for wire in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: -4\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 4 4\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/2.0 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            b"garbage\r\n\r\n",
        ] {
            assert!(
                parse(wire, get).is_err(),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        assert!(matches!(parse(b"HTTP/1.1 200 OK\r\nX: y", get), Ok(None)));
        let huge = [
            b"HTTP/1.1 200 OK\r\nX: ".as_slice(),
            &[b'y'; MAX_HEAD_BYTES],
        ]
        .concat();
        assert_eq!(parse(&huge, get).err(), Some(HeadError::TooLarge));
    }

    #[test]
    fn keep_alive_by_version_and_connection() {
        let ka = |wire: &[u8]| {
            parse(wire, &Method::GET)
                .ok()
                .flatten()
                .map(|h| h.keep_alive)
        };
        assert_eq!(
            ka(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            Some(true)
        );
        assert_eq!(
            ka(b"HTTP/1.1 200 OK\r\nConnection: x, Close\r\nContent-Length: 0\r\n\r\n"),
            Some(false)
        );
        assert_eq!(
            ka(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"),
            Some(false)
        );
        assert_eq!(
            ka(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"),
            Some(true)
        );
        assert_eq!(ka(b"HTTP/1.1 200 OK\r\n\r\n"), Some(false));
    }

    #[test]
    fn a_head_that_could_be_framed_two_ways_does_not_keep_its_connection() {
        let ka = |wire: &[u8]| {
            parse(wire, &Method::GET)
                .ok()
                .flatten()
                .map(|h| (h.keep_alive, h.parts.headers.get("content-length").cloned()))
        };
        let two = Some(HeaderValue::from_static("2"));
        assert_eq!(
            ka(b"HTTP/1.1 200 OK\r\nX-A: 1 \t\r\nContent-Length: 2\r\n\r\n"),
            Some((true, two.clone())),
            "blanks before a CRLF are fine"
        );
        for wire in [
            &b"HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nX-A: 1\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\n",
            b"HTTP/1.1 200 OK\nContent-Length: 2\n\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 02\r\n\r\n",
        ] {
            assert_eq!(
                ka(wire),
                Some((false, two.clone())),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let coded = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            &Method::GET,
        );
        assert!(coded.ok().flatten().is_some_and(|h| !h.keep_alive));
    }

    #[test]
    fn a_request_head_is_written_in_origin_form_with_its_framing() {
        let mut req = http::Request::builder()
            .method(Method::POST)
            .uri("/a?b=c")
            .header("host", "example")
            .body(())
            .unwrap_or_default();
        let (mut parts, ()) = req.into_parts();
        let mut out = BytesMut::new();
        write_request_head(&mut out, &parts, Framing::Chunked);
        assert_eq!(
            &out[..],
            b"POST /a?b=c HTTP/1.1\r\nhost: example\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        out.clear();
        write_request_head(&mut out, &parts, Framing::Length(12));
        assert!(out.ends_with(b"content-length: 12\r\n\r\n"));
        parts
            .headers
            .insert("content-length", HeaderValue::from_static("12"));
        out.clear();
        write_request_head(&mut out, &parts, Framing::Length(12));
        assert_eq!(
            out.windows(15)
                .filter(|w| w.eq_ignore_ascii_case(b"content-length:"))
                .count(),
            1
        );
        req = http::Request::new(());
        let (parts, ()) = req.into_parts();
        out.clear();
        write_request_head(&mut out, &parts, Framing::Empty);
        assert_eq!(&out[..], b"GET / HTTP/1.1\r\n\r\n");
    }
}
