//! The PROXY protocol header in front of a connection on a listener that
//! takes one: read to its last byte and not one byte further, so that what
//! follows (a TLS ClientHello, a request head) is read by whoever serves the
//! connection, exactly as if no header had been there.
//!
//! The bytes are peeked, parsed, and only then consumed: a header that turns
//! out complete in what was peeked is consumed to its length; a beginning is
//! consumed whole (all of it is header) and the next peek waits for more.

use std::net::SocketAddr;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::metrics::ProxyHeaderRefusal;
use crate::proxy_protocol::{Parsed, Proxied, V2_MAX_PAYLOAD, parse};

/// The longest header either version may have.
const MAX_HEADER: usize = 16 + V2_MAX_PAYLOAD;

/// Reads the header off `stream` and returns the client address it names
/// (`peer`, for a LOCAL or UNKNOWN header: the balancer speaks for itself).
pub(super) async fn read_header(
    stream: &mut TcpStream,
    peer: SocketAddr,
) -> Result<SocketAddr, ProxyHeaderRefusal> {
    let mut buf = vec![0u8; MAX_HEADER];
    let mut have = 0;
    loop {
        let n = stream
            .peek(&mut buf[have..])
            .await
            .map_err(|_| ProxyHeaderRefusal::Truncated)?;
        if n == 0 {
            return Err(ProxyHeaderRefusal::Truncated);
        }
        let seen = have + n;
        match parse(&buf[..seen]) {
            Ok(Parsed::Done { len, proxied }) => {
                consume(stream, &mut buf[have..len]).await?;
                return Ok(match proxied {
                    Proxied::Local => peer,
                    Proxied::Tcp { source, .. } => source,
                });
            }
            Ok(Parsed::Incomplete) if seen < MAX_HEADER => {
                consume(stream, &mut buf[have..seen]).await?;
                have = seen;
            }
            Ok(Parsed::Incomplete) | Err(_) => return Err(ProxyHeaderRefusal::Malformed),
        }
    }
}

/// Reads bytes already peeked: they are in the socket's buffer.
async fn consume(stream: &mut TcpStream, into: &mut [u8]) -> Result<(), ProxyHeaderRefusal> {
    stream
        .read_exact(into)
        .await
        .map(drop)
        .map_err(|_| ProxyHeaderRefusal::Truncated)
}
