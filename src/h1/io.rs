//! The socket reads and writes both native HTTP/1 sides make (the server in
//! `listener::native`, the client in `upstream::pool`): a read into the
//! connection's buffer, and a head with the body bytes behind it in one
//! vectored write.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

/// Room made in a read buffer before each read.
pub const READ_CHUNK: usize = 8 * 1024;

/// Reads what the socket has into `buf`. `Ok(0)`: the peer closed.
pub fn poll_fill<T: AsyncRead + Unpin>(
    io: &mut T,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// One write of `head` then `data` (vectored when both have bytes); what
/// the socket took is taken off the front of both. A write of nothing is an
/// error (`WriteZero`), never a success that would loop.
pub fn poll_write_pair<T: AsyncWrite + Unpin>(
    io: &mut T,
    cx: &mut Context<'_>,
    head: &mut BytesMut,
    data: &mut Bytes,
) -> Poll<io::Result<usize>> {
    let io = Pin::new(io);
    let written = match (head.is_empty(), data.is_empty()) {
        (false, false) => {
            let bufs = [io::IoSlice::new(head), io::IoSlice::new(data)];
            io.poll_write_vectored(cx, &bufs)
        }
        (false, true) => io.poll_write(cx, head),
        _ => io.poll_write(cx, data),
    };
    match written {
        Poll::Ready(Ok(0)) => Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
        Poll::Ready(Ok(n)) => {
            let from_head = n.min(head.len());
            head.advance(from_head);
            data.advance(n - from_head);
            Poll::Ready(Ok(n))
        }
        other => other,
    }
}
