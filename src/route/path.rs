//! One path per request: the request's path normalized once, before any
//! route is chosen, and that path is what the upstream receives (DESIGN
//! §9). Routing on one spelling and forwarding another lets an origin
//! that normalizes (nginx, Go's `path.Clean`, most frameworks) serve a
//! route the proxy did not choose: `/api/../admin`, `/%61pi/x`, `//api/x`.
//!
//! ```text
//! escapes   %XX must be two hex digits (else 400); %00 is refused;
//!           unreserved characters (A-Z a-z 0-9 - . _ ~) are decoded;
//!           %2F and %5C follow `escaped_slashes` (reject | keep | decode);
//!           every other escape is kept, its hex uppercased
//! backslash a raw `\` follows `backslash` (reject | keep | slash)
//! slashes   runs of `/` become one (`merge_slashes`)
//! dots      `.` and `..` segments removed (RFC 3986 §5.2.4)
//! ```
//! The query is never touched. A path that needs none of it (the common
//! case) is returned as it came, without allocating. Normalizing twice
//! gives what normalizing once gave.

use std::borrow::Cow;

use crate::config::{Backslash, EscapedSlashes, PathSettings};

/// Why a path is refused (a 400 with this reason, counted, never forwarded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    BadEscape,
    Nul,
    EscapedSlash,
    Backslash,
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for PathError {}

impl PathError {
    /// The reason a client is told.
    pub fn reason(self) -> &'static str {
        match self {
            Self::BadEscape => "malformed percent-encoding in the path",
            Self::Nul => "an encoded NUL (%00) in the path",
            Self::EscapedSlash => "an encoded slash or backslash (%2F, %5C) in the path",
            Self::Backslash => "a backslash in the path",
        }
    }
}

/// `path` normalized as `s` says; borrowed when it was already normal.
/// A path that does not start with `/` (`*`) is left as it is.
pub fn normalize<'a>(path: &'a str, s: &PathSettings) -> Result<Cow<'a, str>, PathError> {
    if !s.normalize || !path.starts_with('/') || is_normal(path.as_bytes(), s) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(path.as_bytes(), s)?;
    let merged = if s.merge_slashes {
        merge_slashes(&decoded)
    } else {
        decoded
    };
    let out = remove_dot_segments(&merged);
    // Only bytes of the input, decoded unreserved characters, `/` and
    // uppercased hex digits were written: ASCII, so UTF-8.
    let out = String::from_utf8(out).map_err(|_| PathError::BadEscape)?;
    Ok(if out == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(out)
    })
}

/// Whether `p` needs no work: no escape, no backslash, no `//` (when
/// merging) and no `.` or `..` segment.
fn is_normal(p: &[u8], s: &PathSettings) -> bool {
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'%' | b'\\' => return false,
            b'/' => {
                let rest = &p[i + 1..];
                let segment = rest.split(|&b| b == b'/').next().unwrap_or_default();
                if segment == b"." || segment == b".." {
                    return false;
                }
                if s.merge_slashes && rest.first() == Some(&b'/') {
                    return false;
                }
            }
            _ => {}
        }
        i += 1;
    }
    true
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Escapes and backslashes, as the module says.
fn decode(p: &[u8], s: &PathSettings) -> Result<Vec<u8>, PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        let b = p[i];
        match b {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    p.get(i + 1).copied().and_then(hex),
                    p.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let v = hi << 4 | lo;
                match v {
                    0 => return Err(PathError::Nul),
                    b'/' | b'\\' => match s.escaped_slashes {
                        EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                        EscapedSlashes::Decode if v == b'/' => out.push(b'/'),
                        EscapedSlashes::Decode => backslash(&mut out, s)?,
                        EscapedSlashes::Keep => out.extend_from_slice(&[
                            b'%',
                            HEX[usize::from(hi)],
                            HEX[usize::from(lo)],
                        ]),
                    },
                    v if unreserved(v) => out.push(v),
                    _ => out.extend_from_slice(&[b'%', HEX[usize::from(hi)], HEX[usize::from(lo)]]),
                }
                i += 3;
            }
            b'\\' => {
                backslash(&mut out, s)?;
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

fn backslash(out: &mut Vec<u8>, s: &PathSettings) -> Result<(), PathError> {
    match s.backslash {
        Backslash::Reject => return Err(PathError::Backslash),
        Backslash::Keep => out.push(b'\\'),
        Backslash::Slash => out.push(b'/'),
    }
    Ok(())
}

fn merge_slashes(p: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.len());
    for &b in p {
        if !(b == b'/' && out.last() == Some(&b'/')) {
            out.push(b);
        }
    }
    out
}

/// RFC 3986 §5.2.4 over an absolute path, segment by segment: `.` goes,
/// `..` takes the segment before it (never above the root). A path that
/// ended in a dot segment ends in `/`.
fn remove_dot_segments(p: &[u8]) -> Vec<u8> {
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut parts = p[1..].split(|&b| b == b'/').peekable();
    let mut trailing = false;
    while let Some(seg) = parts.next() {
        let last = parts.peek().is_none();
        match seg {
            b"." => trailing = last,
            b".." => {
                segments.pop();
                trailing = last;
            }
            _ => {
                segments.push(seg);
                trailing = false;
            }
        }
    }
    let mut out = Vec::with_capacity(p.len());
    for seg in &segments {
        out.push(b'/');
        out.extend_from_slice(seg);
    }
    if trailing || out.is_empty() {
        out.push(b'/');
    }
    out
}

#[cfg(test)]
mod tests;
