//! The proxy's own HTTP/1.1 client (src/proxy/upstream.rs, src/h1/) against
//! upstreams that write their answers byte by byte: chunked bodies with
//! trailers, bodies delimited by close, informational responses, HEAD, early
//! answers to uploads, idle connections the upstream closed, and responses no
//! proxy may pass on.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Method, Request};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a scripted upstream does with one request it has read.
enum Reply {
    /// Writes these bytes and waits for the next request.
    Send(Vec<u8>),
    /// Writes these bytes and closes.
    SendAndClose(Vec<u8>),
    /// Closes without a byte.
    Close,
    /// Writes these bytes at once, reads the rest of what comes until the
    /// client stops, then closes (an early answer, with a lingering close).
    SendAndDrain(Vec<u8>),
}

/// One request as the upstream read it: the head and the body bytes.
#[derive(Debug, Clone)]
struct Got {
    head: String,
    body: Vec<u8>,
}

/// An upstream that answers by script. `script(n, request)` is called with
/// the request's number on its connection (from 0).
#[derive(Clone)]
struct Scripted {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    seen: Arc<std::sync::Mutex<Vec<Got>>>,
}

impl Scripted {
    async fn start(script: fn(usize, &Got) -> Reply) -> Self {
        let listener = ok(TcpListener::bind("127.0.0.1:0").await, "bind");
        let me = Scripted {
            addr: ok(listener.local_addr(), "addr"),
            accepted: Arc::default(),
            seen: Arc::default(),
        };
        let served = me.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                served.accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(served.clone().serve(s, script));
            }
        });
        me
    }

    async fn serve(self, mut s: TcpStream, script: fn(usize, &Got) -> Reply) {
        let mut buf = Vec::new();
        for n in 0.. {
            let Some(got) = read_request(&mut s, &mut buf).await else {
                return;
            };
            if let Ok(mut seen) = self.seen.lock() {
                seen.push(got.clone());
            }
            let reply = script(n, &got);
            let (bytes, then) = match reply {
                Reply::Send(b) => (b, 0),
                Reply::SendAndClose(b) => (b, 1),
                Reply::Close => (Vec::new(), 1),
                Reply::SendAndDrain(b) => (b, 2),
            };
            if s.write_all(&bytes).await.is_err() {
                return;
            }
            match then {
                0 => {}
                1 => return,
                _ => {
                    let _ = s.shutdown().await;
                    let mut sink = [0u8; 65536];
                    while let Ok(Ok(k)) =
                        tokio::time::timeout(Duration::from_secs(2), s.read(&mut sink)).await
                    {
                        if k == 0 {
                            break;
                        }
                    }
                    return;
                }
            }
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<Got> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Reads one request: its head, and a body by Content-Length or chunked
/// (kept raw). `None` when the peer closed first.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Got> {
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    buf.drain(..end);
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    let done = |b: &[u8]| match len {
        Some(n) => b.len() >= n,
        None if chunked => b.ends_with(b"0\r\n\r\n"),
        None => true,
    };
    // An early answer is given after the head alone.
    if !head.contains("x-answer: early") {
        while !done(buf) {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    let take = len.unwrap_or(buf.len()).min(buf.len());
    let body = buf.drain(..take).collect();
    Some(Got { head, body })
}

async fn proxy_for(up: &Scripted) -> switchyard::app::Running {
    start_proxy(&format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nsticky:\n  ttl: 1h\n  keys: [env:TEST_KEY]\n\
         health:\n  outlier:\n    consecutive_failures: 1000\n\
         groups:\n  blue:\n    weight: 100\n    targets:\n      - address: {}\n",
        up.addr
    ))
    .await
}

fn path_of(got: &Got) -> &str {
    got.head.split(' ').nth(1).unwrap_or("")
}

#[tokio::test]
async fn chunked_close_delimited_and_informational_responses_reach_the_client_whole() {
    let up = Scripted::start(|_, got| match path_of(got) {
        "/chunked" => Reply::Send(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-trailer: t\r\n\r\n"
                .to_vec(),
        ),
        "/early-hints" => Reply::Send(
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"
                .to_vec(),
        ),
        _ => Reply::SendAndClose(b"HTTP/1.1 200 OK\r\nX-Kind: eof\r\n\r\nuntil the end".to_vec()),
    })
    .await;
    let proxy = proxy_for(&up).await;
    let c = h1_client();
    let base = format!("http://{}", proxy.proxy_addr);
    let got = get(&c, &format!("{base}/chunked"), None).await;
    assert_eq!(got.status, 200);
    assert_eq!(&got.body[..], b"hello, world");
    let got = get(&c, &format!("{base}/early-hints"), None).await;
    assert_eq!((got.status.as_u16(), &got.body[..]), (200, &b"final"[..]));
    // The chunked response and the one after it came on one connection.
    assert_eq!(up.accepted(), 1);
    let got = get(&c, &format!("{base}/eof"), None).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.headers.get("x-kind").map(|v| v.as_bytes()),
        Some(&b"eof"[..])
    );
    assert_eq!(&got.body[..], b"until the end");
    // A body ended by close cannot leave the connection for another request.
    let got = get(&c, &format!("{base}/chunked"), None).await;
    assert_eq!(&got.body[..], b"hello, world");
    assert_eq!(up.accepted(), 2);
}

#[tokio::test]
async fn responses_no_proxy_may_pass_on_are_a_502_counted_as_protocol_errors() {
    let up = Scripted::start(|_, got| match path_of(got) {
        "/two-lengths" => Reply::Send(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec(),
        ),
        "/garbage" => Reply::SendAndClose(b"SMTP ready\r\n\r\n".to_vec()),
        "/bad-chunk" => Reply::SendAndClose(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
        ),
        "/nothing" => Reply::Close,
        _ => Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()),
    })
    .await;
    let proxy = proxy_for(&up).await;
    let base = format!("http://{}", proxy.proxy_addr);
    for path in ["/two-lengths", "/garbage", "/nothing"] {
        let resp = raw(
            proxy.proxy_addr,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 502"), "{path}: {resp}");
        assert!(
            resp.contains("upstream sent an invalid or incomplete response"),
            "{resp}"
        );
    }
    // A malformed chunk after a good head: nothing was written to the client
    // yet, so it gets a 502; never a body completed with made-up framing.
    let resp = raw(
        proxy.proxy_addr,
        b"GET /bad-chunk HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 502"), "{resp}");
    assert!(!resp.contains("hello"), "{resp}");
    let errors = format!(
        "switchyard_upstream_errors_total{{group=\"blue\",kind=\"protocol\",target=\"{}\"}}",
        up.addr
    );
    assert_eq!(metric(&proxy, &errors).await, 3.0);
    // And the target still serves.
    let got = get(&h1_client(), &format!("{base}/fine"), None).await;
    assert_eq!((got.status.as_u16(), &got.body[..]), (200, &b"ok"[..]));
}

#[tokio::test]
async fn a_head_request_reads_no_body_and_keeps_the_connection() {
    let up = Scripted::start(|_, got| {
        if got.head.starts_with("head ") {
            Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec())
        } else {
            Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nget".to_vec())
        }
    })
    .await;
    let proxy = proxy_for(&up).await;
    let c = h1_client();
    let url = format!("http://{}/", proxy.proxy_addr);
    for _ in 0..3 {
        let req = ok(
            Request::head(&url).body(Full::<Bytes>::default()),
            "request",
        );
        let got = send(&c, req).await;
        assert_eq!(got.status, 200);
        assert_eq!(
            got.headers.get("content-length").map(|v| v.as_bytes()),
            Some(&b"100"[..])
        );
        assert!(got.body.is_empty());
        let got = get(&c, &url, None).await;
        assert_eq!(&got.body[..], b"get");
    }
    assert_eq!(
        up.accepted(),
        1,
        "every exchange on one upstream connection"
    );
}

#[tokio::test]
async fn an_idle_connection_the_upstream_dropped_is_replaced_without_an_error() {
    // One response per connection, then the next request on it is met with a
    // close: a keep-alive timeout racing the proxy's next request.
    let up = Scripted::start(|n, _| {
        if n == 0 {
            Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec())
        } else {
            Reply::Close
        }
    })
    .await;
    let proxy = proxy_for(&up).await;
    let c = h1_client();
    let url = format!("http://{}/", proxy.proxy_addr);
    for i in 0..10 {
        let got = get(&c, &url, None).await;
        assert_eq!(got.status, 200, "request {i}: {:?}", got.body);
    }
    assert_eq!(up.accepted(), 10);
    let text = scrape(&proxy).await;
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("switchyard_upstream_errors_total{") && !l.ends_with(" 0"))
        .collect();
    assert!(
        errors.is_empty(),
        "a replaced connection is no upstream error: {errors:?}"
    );
}

#[tokio::test]
async fn an_early_answer_to_an_upload_reaches_the_client() {
    let up = Scripted::start(|_, _| {
        Reply::SendAndDrain(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big!"
                .to_vec(),
        )
    })
    .await;
    let proxy = proxy_for(&up).await;
    let mut s = ok(TcpStream::connect(proxy.proxy_addr).await, "connect");
    let total = 8 << 20;
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nX-Answer: early\r\nContent-Length: {total}\r\n\r\n"
    );
    let (mut rd, mut wr) = s.split();
    let upload = async {
        let _ = wr.write_all(head.as_bytes()).await;
        let block = vec![b'u'; 64 * 1024];
        for _ in 0..(total / block.len()) {
            if wr.write_all(&block).await.is_err() {
                break;
            }
        }
    };
    let answer = async {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    let ((), resp) = tokio::join!(upload, answer);
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(resp.ends_with("too big!"), "{resp}");
}

#[tokio::test]
async fn request_bodies_are_framed_for_the_upstream_and_http_1_0_answers_are_not_reused() {
    let up = Scripted::start(|_, got| {
        let body = format!("{} bytes", got.body.len());
        Reply::Send(
            format!(
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    })
    .await;
    let proxy = proxy_for(&up).await;
    let c = h1_client();
    let url = format!("http://{}/", proxy.proxy_addr);
    let req = ok(
        Request::builder()
            .method(Method::POST)
            .uri(&url)
            .body(Full::new(Bytes::from_static(b"0123456789"))),
        "request",
    );
    assert_eq!(&send(&c, req).await.body[..], b"10 bytes");
    let req = ok(
        Request::builder()
            .method(Method::POST)
            .uri(&url)
            .body(Full::<Bytes>::default()),
        "request",
    );
    assert_eq!(&send(&c, req).await.body[..], b"0 bytes");
    let chunked = raw(
        proxy.proxy_addr,
        b"PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
    )
    .await;
    assert!(chunked.starts_with("HTTP/1.1 200"), "{chunked}");
    let seen = up.seen();
    assert_eq!(seen.len(), 3);
    assert!(
        seen[0].head.contains("content-length: 10\r\n"),
        "{}",
        seen[0].head
    );
    assert!(
        seen[1].head.contains("content-length: 0\r\n"),
        "{}",
        seen[1].head
    );
    assert!(
        seen[2].head.contains("transfer-encoding: chunked\r\n"),
        "{}",
        seen[2].head
    );
    assert_eq!(&seen[2].body[..], b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n");
    assert!(
        seen.iter().all(|g| g.head.contains(" http/1.1\r\n")),
        "HTTP/1.1 upstream requests"
    );
    // HTTP/1.0 without keep-alive: a connection per request.
    assert_eq!(up.accepted(), 3);
}

/// Issue 24: a response another reader could frame differently is passed on
/// with one plain length, and its connection is closed after it, never
/// reused for the next request.
#[tokio::test]
async fn ambiguous_responses_are_answered_once_and_their_connection_is_not_reused() {
    let up = Scripted::start(|_, got| match path_of(got) {
        "/list" => Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok".to_vec()),
        "/repeat" => Reply::Send(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        ),
        "/zeros" => Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 002\r\n\r\nok".to_vec()),
        "/length-and-chunked" => Reply::Send(
            b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
                .to_vec(),
        ),
        "/bare-lf" => Reply::Send(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok".to_vec()),
        _ => Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()),
    })
    .await;
    let proxy = proxy_for(&up).await;
    let c = h1_client();
    let base = format!("http://{}", proxy.proxy_addr);
    let fine = get(&c, &format!("{base}/fine"), None).await;
    assert_eq!(&fine.body[..], b"ok");
    let _ = get(&c, &format!("{base}/fine"), None).await;
    assert_eq!(up.accepted(), 1, "a plain response keeps its connection");
    for path in [
        "/list",
        "/repeat",
        "/zeros",
        "/length-and-chunked",
        "/bare-lf",
    ] {
        let before = up.accepted();
        let got = get(&c, &format!("{base}{path}"), None).await;
        assert_eq!(
            (got.status.as_u16(), &got.body[..]),
            (200, &b"ok"[..]),
            "{path}"
        );
        let lengths: Vec<_> = got.headers.get_all("content-length").iter().collect();
        assert!(lengths.len() <= 1, "{path}: {lengths:?}");
        assert!(
            lengths.iter().all(|v| v.as_bytes() == b"2"),
            "{path}: {lengths:?}"
        );
        let after = get(&c, &format!("{base}/fine"), None).await;
        assert_eq!(&after.body[..], b"ok");
        assert_eq!(
            up.accepted(),
            before + 1,
            "{path}: its connection was used again"
        );
    }
}

/// Issue 24: `Transfer-Encoding: gzip, chunked` from an upstream kept its
/// chunking dropped and its gzip coding too, so clients got gzip bytes with
/// nothing saying so. The coding now goes on to HTTP/1.1 clients (re-chunked
/// by the proxy); an HTTP/2 client, which cannot be sent a transfer coding,
/// gets a 502 that says why.
#[tokio::test]
async fn a_transfer_coding_besides_chunked_is_passed_on_or_refused_never_dropped() {
    let up = Scripted::start(|_, got| match path_of(got) {
        "/gzip-close" => Reply::SendAndClose(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n\x1f\x8bCODED".to_vec(),
        ),
        _ => Reply::Send(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n7\r\n\x1f\x8bCODED\r\n0\r\n\r\n"
                .to_vec(),
        ),
    })
    .await;
    let proxy = proxy_for(&up).await;
    for path in ["/gzip-chunked", "/gzip-close"] {
        let mut s = ok(TcpStream::connect(proxy.proxy_addr).await, "connect");
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        ok(s.write_all(req.as_bytes()).await, "write");
        let (bytes, _) = read_response_bytes(&mut s).await;
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(bytes.len());
        let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{path}: {head}");
        let codings: Vec<_> = head
            .lines()
            .filter_map(|l| l.strip_prefix("transfer-encoding:"))
            .map(str::trim)
            .collect();
        assert_eq!(codings, ["gzip, chunked"], "{path}: {head}");
        assert!(!head.contains("content-length"), "{path}: {head}");
        // The body, de-chunked, is the upstream's coded bytes as they were.
        let mut body = bytes::BytesMut::from(&bytes[(end + 4).min(bytes.len())..]);
        let mut d = switchyard::h1::Decoder::new(switchyard::h1::Framing::Chunked);
        let mut data = Vec::new();
        while let Ok(switchyard::h1::Decoded::Data(b)) = d.decode(&mut body) {
            data.extend_from_slice(&b);
        }
        assert!(d.is_done(), "{path}: the chunked body did not end");
        assert_eq!(data, b"\x1f\x8bCODED", "{path}");
    }
    let h2 = send(
        &h2_client(),
        ok(
            Request::get(format!("http://{}/gzip-chunked", proxy.proxy_addr))
                .body(Full::new(Bytes::new())),
            "request",
        ),
    )
    .await;
    assert_eq!(h2.status, 502);
    assert!(
        String::from_utf8_lossy(&h2.body).contains("transfer coding"),
        "{:?}",
        h2.body
    );
}
