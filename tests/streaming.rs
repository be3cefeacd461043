//! Bodies stream through the real binary: 64 MiB each way arrive intact while
//! the proxy's resident memory stays nearly flat.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};

const SIZE: usize = 64 * 1024 * 1024;
const CHUNK: usize = 256 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_each_way_intact_in_flat_memory() {
    let up = Upstream::start("blue").await;
    let proxy = BinProxy::start(&config_yaml(&[("blue", 1, &[&up])], ""));
    let base = format!("http://{}", proxy.proxy_addr);

    // Warm up: pools, buffers and allocator arenas reach their working size.
    let client = h1_client();
    for _ in 0..20 {
        assert_eq!(get(&client, &format!("{base}/"), None).await.status, 200);
    }
    let (rss_before, _) = proxy.memory_kib();

    // Upload: the body is generated as it is sent, never held whole here either.
    let expected = {
        let mut h = Sha256::new();
        let mut off = 0;
        while off < SIZE {
            h.update(pattern_chunk(off, CHUNK));
            off += CHUNK;
        }
        hex(&h.finalize())
    };
    let stream = futures_stream(SIZE, CHUNK);
    let req = ok(
        Request::post(format!("{base}/upload")).body(StreamBody::new(stream)),
        "request",
    );
    let upload_client = Client::builder(TokioExecutor::new()).build_http();
    let resp = ok(upload_client.request(req).await, "upload");
    assert_eq!(resp.status(), 200);
    let body = ok(resp.into_body().collect().await, "body").to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!("{SIZE} {expected}"),
        "upload arrived intact"
    );

    // Download, hashed as it arrives.
    let resp = ok(
        client
            .request(ok(
                Request::get(format!("{base}/download?bytes={SIZE}")).body(Default::default()),
                "req",
            ))
            .await,
        "download",
    );
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut h = Sha256::new();
    let mut got = 0;
    while let Some(frame) = body.frame().await {
        if let Some(d) = ok(frame, "frame").data_ref() {
            got += d.len();
            h.update(d);
        }
    }
    assert_eq!(got, SIZE);
    assert_eq!(hex(&h.finalize()), expected, "download arrived intact");

    tokio::time::sleep(Duration::from_millis(50)).await;
    let (_, peak) = proxy.memory_kib();
    let growth_mib = (peak.saturating_sub(rss_before)) as f64 / 1024.0;
    eprintln!("proxy RSS before {rss_before} KiB, peak {peak} KiB, growth {growth_mib:.2} MiB");
    assert!(
        growth_mib < 16.0,
        "peak RSS grew by {growth_mib:.1} MiB (before {rss_before} KiB, peak {peak} KiB)"
    );
}

type Chunk = Result<http_body::Frame<Bytes>, std::convert::Infallible>;

/// A body stream of the `/download` pattern, made chunk by chunk.
fn futures_stream(
    total: usize,
    chunk: usize,
) -> impl futures_core::Stream<Item = Chunk> + Send + Unpin {
    struct Gen {
        off: usize,
        total: usize,
        chunk: usize,
    }
    impl futures_core::Stream for Gen {
        type Item = Chunk;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Chunk>> {
            if self.off >= self.total {
                return std::task::Poll::Ready(None);
            }
            let n = (self.total - self.off).min(self.chunk);
            let data = pattern_chunk(self.off, n);
            self.off += n;
            std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(data)))))
        }
    }
    Gen {
        off: 0,
        total,
        chunk,
    }
}
