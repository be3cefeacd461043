//! The PROXY protocol (v1 text and v2 binary, HAProxy's spec): the header an
//! L4 balancer (AWS NLB, HAProxy in TCP mode, MetalLB) puts before a
//! connection's first byte to say which client it carries. Parsing only,
//! strictly: a header that is malformed, truncated or longer than allowed is
//! an error, never a guess, because the address it names becomes the
//! client's everywhere (forwarding headers, bucketing, logs).
//!
//! ```text
//! v1: "PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n"   (at most 107 bytes)
//!     "PROXY UNKNOWN ...\r\n"                             -> the connection's own address
//! v2: \r\n\r\n\0\r\nQUIT\n | ver/cmd | fam/proto | len (BE) | addresses | TLVs
//!     LOCAL (a balancer's own health check), UNSPEC or UNIX -> the connection's own address
//! ```
//! TLVs are checked for framing and otherwise ignored.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// v2's first twelve bytes.
pub const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];
/// The longest v1 line, CRLF included (the spec's figure).
pub const V1_MAX: usize = 107;
/// The most a v2 header may carry after its 16 fixed bytes: the addresses
/// and TLVs a balancer sends fit with room to spare.
pub const V2_MAX_PAYLOAD: usize = 2048;

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxied {
    /// The balancer speaks for itself (v2 LOCAL, v1 UNKNOWN, or a family
    /// with no IP address): keep the connection's own addresses.
    Local,
    /// The client's address and the address it connected to.
    Tcp {
        source: SocketAddr,
        destination: SocketAddr,
    },
}

/// One step of reading a header from the bytes that arrived so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// What came so far is a valid beginning: read more.
    Incomplete,
    /// The header is `len` bytes long; the connection's own bytes follow it.
    Done { len: usize, proxied: Proxied },
}

/// Why a connection's first bytes are not an acceptable PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("not a PROXY protocol header")]
    NotProxy,
    #[error("PROXY v1 line longer than 107 bytes")]
    V1TooLong,
    #[error("malformed PROXY v1 line")]
    V1Malformed,
    #[error("PROXY v2 header of an unknown version or command")]
    V2Version,
    #[error("PROXY v2 header of an unknown address family or transport")]
    V2Family,
    #[error("PROXY v2 length too short for its addresses, or over the limit")]
    V2Length,
    #[error("PROXY v2 TLV runs past the header")]
    V2Tlv,
}

/// Reads a PROXY header from the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed, HeaderError> {
    const V1: &[u8] = b"PROXY ";
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        return if n < V2_SIGNATURE.len() {
            Ok(Parsed::Incomplete)
        } else {
            parse_v2(buf)
        };
    }
    let n = buf.len().min(V1.len());
    if buf[..n] == V1[..n] {
        return if n < V1.len() {
            Ok(Parsed::Incomplete)
        } else {
            parse_v1(buf)
        };
    }
    Err(HeaderError::NotProxy)
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, HeaderError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        if buf.len() >= V1_MAX {
            return Err(HeaderError::V1TooLong);
        }
        // A line feed alone, or any byte that is not printable, is no v1.
        return if window.iter().all(|&b| (0x20..0x7f).contains(&b)) {
            Ok(Parsed::Incomplete)
        } else {
            Err(HeaderError::V1Malformed)
        };
    };
    match buf.get(cr + 1) {
        None => return Ok(Parsed::Incomplete),
        Some(b'\n') => {}
        Some(_) => return Err(HeaderError::V1Malformed),
    }
    let line = std::str::from_utf8(&buf[6..cr]).map_err(|_| HeaderError::V1Malformed)?;
    let proxied = v1_fields(line).ok_or(HeaderError::V1Malformed)?;
    Ok(Parsed::Done {
        len: cr + 2,
        proxied,
    })
}

/// The fields after `PROXY `: `TCP4|TCP6 src dst sport dport`, single
/// spaces, or `UNKNOWN` and anything.
fn v1_fields(line: &str) -> Option<Proxied> {
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        return Some(Proxied::Local);
    }
    let mut f = line.split(' ');
    let (proto, src, dst, sport, dport) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
    if f.next().is_some() {
        return None;
    }
    let (src, dst): (IpAddr, IpAddr) = match proto {
        "TCP4" => (
            IpAddr::V4(src.parse::<Ipv4Addr>().ok()?),
            IpAddr::V4(dst.parse::<Ipv4Addr>().ok()?),
        ),
        "TCP6" => (
            IpAddr::V6(src.parse::<Ipv6Addr>().ok()?),
            IpAddr::V6(dst.parse::<Ipv6Addr>().ok()?),
        ),
        _ => return None,
    };
    Some(Proxied::Tcp {
        source: SocketAddr::new(src, port(sport)?),
        destination: SocketAddr::new(dst, port(dport)?),
    })
}

/// A decimal port, 0 to 65535, without a sign or leading zeros.
fn port(s: &str) -> Option<u16> {
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = s.len() > 1 && s.starts_with('0');
    if !digits || leading_zero || s.len() > 5 {
        return None;
    }
    s.parse().ok()
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, HeaderError> {
    if buf.len() < 16 {
        return Ok(Parsed::Incomplete);
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 || command > 1 {
        return Err(HeaderError::V2Version);
    }
    let (family, transport) = (buf[13] >> 4, buf[13] & 0x0f);
    let payload = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if payload > V2_MAX_PAYLOAD {
        return Err(HeaderError::V2Length);
    }
    let addresses = match family {
        0 => 0,
        1 => 12,
        2 => 36,
        3 => 216,
        _ => return Err(HeaderError::V2Family),
    };
    if transport > 2 {
        return Err(HeaderError::V2Family);
    }
    // PROXY over IP must be a stream (this is TCP), with its addresses.
    let ip = command == 1 && (family == 1 || family == 2);
    if ip && transport != 1 {
        return Err(HeaderError::V2Family);
    }
    if ip && payload < addresses {
        return Err(HeaderError::V2Length);
    }
    let len = 16 + payload;
    if buf.len() < len {
        return Ok(Parsed::Incomplete);
    }
    let body = &buf[16..len];
    if ip {
        check_tlvs(&body[addresses..])?;
    }
    let proxied = match (ip, family) {
        (true, 1) => {
            let addr = |at: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    body[at],
                    body[at + 1],
                    body[at + 2],
                    body[at + 3],
                ))
            };
            Proxied::Tcp {
                source: SocketAddr::new(addr(0), u16::from_be_bytes([body[8], body[9]])),
                destination: SocketAddr::new(addr(4), u16::from_be_bytes([body[10], body[11]])),
            }
        }
        (true, _) => {
            let addr = |at: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&body[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(o))
            };
            Proxied::Tcp {
                source: SocketAddr::new(addr(0), u16::from_be_bytes([body[32], body[33]])),
                destination: SocketAddr::new(addr(16), u16::from_be_bytes([body[34], body[35]])),
            }
        }
        _ => Proxied::Local,
    };
    Ok(Parsed::Done { len, proxied })
}

/// TLVs (`type u8 | length u16 BE | value`) must tile the rest exactly.
fn check_tlvs(mut rest: &[u8]) -> Result<(), HeaderError> {
    while !rest.is_empty() {
        if rest.len() < 3 {
            return Err(HeaderError::V2Tlv);
        }
        let n = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        rest = rest.get(3 + n..).ok_or(HeaderError::V2Tlv)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
