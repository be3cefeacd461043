//! The PROXY protocol on the listeners, end to end: headers sent by a test
//! client (v1, v2, split over many writes, hostile) and by HAProxy as the L4
//! balancer in front; the address they carry reaches X-Forwarded-For and
//! client-IP bucketing, and a connection without an acceptable header is
//! closed unserved and counted.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::pki::Ca;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const V2_SIG: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

fn v1(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
    let family = if src.contains(':') { "TCP6" } else { "TCP4" };
    format!("PROXY {family} {src} {dst} {sport} {dport}\r\n").into_bytes()
}

/// A v2 PROXY (command 1) or LOCAL (command 0) header over TCP/IPv4, with
/// `tlv` bytes after the addresses.
fn v2_tcp4(command: u8, src: [u8; 4], sport: u16, tlv: &[u8]) -> Vec<u8> {
    let mut h = V2_SIG.to_vec();
    h.push(0x20 | command);
    h.push(0x11);
    let len = 12 + tlv.len();
    h.extend_from_slice(&(len as u16).to_be_bytes());
    h.extend_from_slice(&src);
    h.extend_from_slice(&[10, 0, 0, 1]);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&443u16.to_be_bytes());
    h.extend_from_slice(tlv);
    h
}

fn v2_tcp6(src: std::net::Ipv6Addr, sport: u16) -> Vec<u8> {
    let mut h = V2_SIG.to_vec();
    h.extend_from_slice(&[0x21, 0x21, 0, 36]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&443u16.to_be_bytes());
    h
}

const GET: &[u8] = b"GET /who HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";

/// Sends `bytes` in one write and reads the answer until the proxy closes.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = ok(TcpStream::connect(addr).await, "connect");
    let _ = s.write_all(bytes).await;
    read_until_close(&mut s, Duration::from_secs(5)).await.0
}

fn forwarded_for(up: &Upstream) -> String {
    up.last_seen()
        .and_then(|s| {
            s.headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok().map(str::to_owned))
        })
        .unwrap_or_default()
}

async fn refused(proxy: &switchyard::app::Running, listener: &str, reason: &str) -> f64 {
    metric(
        proxy,
        &format!(
            "switchyard_proxy_protocol_refused_total{{listener=\"{listener}\",reason=\"{reason}\"}}"
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_address_a_header_carries_is_the_clients_everywhere() {
    let blue = Upstream::start("blue").await;
    let proxy = start_proxy(&config_yaml(
        &[("blue", 1, &[&blue])],
        "proxy_protocol:\n  from: [127.0.0.0/8]\n",
    ))
    .await;
    let addr = proxy.proxy_addr;

    let cases: Vec<(Vec<u8>, &str)> = vec![
        (v1("203.0.113.7", "10.0.0.1", 51000, 80), "203.0.113.7"),
        (v1("2001:db8::9", "2001:db8::1", 4000, 80), "2001:db8::9"),
        (v2_tcp4(1, [198, 51, 100, 4], 1234, &[]), "198.51.100.4"),
        // A TLV the proxy does not use (PP2_TYPE_AUTHORITY) is skipped.
        (
            v2_tcp4(
                1,
                [198, 51, 100, 5],
                1234,
                &[0x02, 0, 4, b'a', b'.', b't', b't'],
            ),
            "198.51.100.5",
        ),
        (
            v2_tcp6("2001:db8::77".parse().unwrap_or_else(|_| unreachable!()), 9),
            "2001:db8::77",
        ),
        // LOCAL: the balancer's own check; its own address is the client's.
        (v2_tcp4(0, [198, 51, 100, 6], 1, &[]), "127.0.0.1"),
    ];
    for (header, want) in cases {
        let mut bytes = header.clone();
        bytes.extend_from_slice(GET);
        let resp = exchange(addr, &bytes).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert_eq!(
            forwarded_for(&blue),
            want,
            "{:?}",
            String::from_utf8_lossy(&header)
        );
    }

    // The header and the request, a few bytes per write: nothing is lost
    // or read twice, and keep-alive goes on after it.
    let mut s = ok(TcpStream::connect(addr).await, "connect");
    let mut bytes = v1("192.0.2.44", "10.0.0.1", 3000, 80);
    bytes.extend_from_slice(b"GET /one HTTP/1.1\r\nHost: app.test\r\n\r\n");
    for piece in bytes.chunks(5) {
        ok(s.write_all(piece).await, "write");
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let (first, _) = read_response_bytes(&mut s).await;
    assert!(
        first.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&first)
    );
    ok(s.write_all(GET).await, "second request");
    let (rest, _) = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert!(rest.starts_with("HTTP/1.1 200"), "{rest}");
    assert_eq!(
        forwarded_for(&blue),
        "192.0.2.44",
        "a later request keeps the address"
    );
    assert_eq!(blue.hits(), 8);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_bucketing_follows_the_proxied_address() {
    let (blue, green) = blue_and_green().await;
    let mut yaml = config_yaml(
        &[("blue", 1, &[&blue]), ("green", 1, &[&green])],
        "proxy_protocol:\n  from: [127.0.0.1]\n",
    );
    yaml = yaml.replace("ttl: 1h\n", "ttl: 1h\n  bucket_by: client_ip\n");
    let proxy = start_proxy(&yaml).await;
    // One client address, many connections and no cookie: always one group.
    // Many addresses: both groups.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let mut bytes = v1("198.51.100.200", "10.0.0.1", 1000, 80);
        bytes.extend_from_slice(GET);
        let resp = exchange(proxy.proxy_addr, &bytes).await;
        seen.insert(upstream_of(&resp));
    }
    assert_eq!(seen.len(), 1, "one proxied address, one group: {seen:?}");
    let mut all = std::collections::BTreeSet::new();
    for i in 1..=40u8 {
        let mut bytes = v1(&format!("198.51.100.{i}"), "10.0.0.1", 1000, 80);
        bytes.extend_from_slice(GET);
        all.insert(upstream_of(&exchange(proxy.proxy_addr, &bytes).await));
    }
    assert_eq!(
        all.len(),
        2,
        "forty proxied addresses reach both groups: {all:?}"
    );
    proxy.shutdown().await;
}

fn upstream_of(resp: &str) -> String {
    resp.lines()
        .find_map(|l| l.strip_prefix("x-upstream: "))
        .unwrap_or("")
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_an_acceptable_header_is_closed_unserved_and_counted() {
    let blue = Upstream::start("blue").await;
    let proxy = start_proxy(&config_yaml(
        &[("blue", 1, &[&blue])],
        "proxy_protocol:\n  from: [127.0.0.0/8]\ntimeouts:\n  client_header: 1s\n",
    ))
    .await;
    let addr = proxy.proxy_addr;
    let mut long = b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 80".to_vec();
    long.extend(std::iter::repeat_n(b' ', 80));
    long.extend_from_slice(b"\r\n");
    let mut bad_sig = v2_tcp4(1, [1, 2, 3, 4], 1, &[]);
    bad_sig[11] = b'X';
    let mut bad_len = v2_tcp4(1, [1, 2, 3, 4], 1, &[]);
    bad_len[15] = 4; // shorter than IPv4's twelve address bytes
    let mut bad_family = v2_tcp4(1, [1, 2, 3, 4], 1, &[]);
    bad_family[13] = 0x41;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("no header", GET.to_vec()),
        ("v1 over 107 bytes", long),
        (
            "v1 with two spaces",
            b"PROXY TCP4  203.0.113.7 10.0.0.1 1 2\r\n".to_vec(),
        ),
        (
            "v1 family mismatch",
            b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n".to_vec(),
        ),
        (
            "v1 port 65536",
            b"PROXY TCP4 1.2.3.4 10.0.0.1 65536 2\r\n".to_vec(),
        ),
        ("v2 bad signature", bad_sig),
        ("v2 bad length", bad_len),
        ("v2 unknown family", bad_family),
        ("a header injected by the client after a good one", {
            let mut b = v1("203.0.113.7", "10.0.0.1", 1, 2);
            b.extend(v1("6.6.6.6", "10.0.0.1", 1, 2));
            b.extend_from_slice(GET);
            b
        }),
    ];
    let mut malformed = 0.0;
    for (what, mut bytes) in cases {
        let second_header = what.starts_with("a header injected");
        if !second_header {
            bytes.extend_from_slice(GET);
        }
        let resp = exchange(addr, &bytes).await;
        if second_header {
            // The first header is the balancer's; the second is request
            // bytes, which no server takes for HTTP.
            assert!(resp.starts_with("HTTP/1.1 400"), "{what}: {resp}");
            continue;
        }
        malformed += 1.0;
        assert_eq!(resp, "", "{what}: closed without an answer");
        assert_eq!(
            refused(&proxy, "http", "malformed").await,
            malformed,
            "{what}"
        );
    }

    // Truncated: a beginning, then the balancer goes away.
    let mut s = ok(TcpStream::connect(addr).await, "connect");
    ok(s.write_all(b"PROXY TCP4 203.0.").await, "write");
    ok(s.shutdown().await, "half-close");
    let (resp, _) = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert_eq!(resp, "");
    // A beginning, then nothing: closed at client_header.
    let mut s = ok(TcpStream::connect(addr).await, "connect");
    ok(s.write_all(&V2_SIG[..7]).await, "write");
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "closed: {n:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(refused(&proxy, "http", "truncated").await, 1.0);
    assert_eq!(refused(&proxy, "http", "timeout").await, 1.0);
    assert_eq!(blue.hits(), 0, "nothing reached the upstream");
    let served = format!(
        "switchyard_requests_total{{class=\"2xx\",group=\"blue\",target=\"{}\"}}",
        blue.addr
    );
    assert_eq!(series_at(proxy.admin_addr, &served).await, 0.0);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_outside_from_is_closed_even_with_a_well_formed_header() {
    let blue = Upstream::start("blue").await;
    let proxy = start_proxy(&config_yaml(
        &[("blue", 1, &[&blue])],
        "proxy_protocol:\n  from: [10.0.0.0/8, 2001:db8::/32]\n",
    ))
    .await;
    let mut bytes = v1("203.0.113.7", "10.0.0.1", 1, 2);
    bytes.extend_from_slice(GET);
    assert_eq!(exchange(proxy.proxy_addr, &bytes).await, "");
    assert_eq!(exchange(proxy.proxy_addr, GET).await, "");
    assert_eq!(refused(&proxy, "http", "untrusted_peer").await, 2.0);
    assert_eq!(blue.hits(), 0);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_https_listener_reads_the_header_before_the_handshake() {
    let ca = Ca::new("test CA");
    let dir = ok(tempfile::tempdir(), "tempdir");
    let (cert, key) = ca.leaf(&["app.test"]).write(dir.path(), "app");
    let blue = Upstream::start("blue").await;
    let tls = format!(
        "tls:\n  listen: 127.0.0.1:0\n  certificates:\n    - cert: {}\n      key: {}\n  proxy_protocol:\n    from: [127.0.0.1]\n",
        cert.display(),
        key.display()
    );
    let proxy = start_proxy(&config_yaml(&[("blue", 1, &[&blue])], &tls)).await;
    let addr = proxy
        .tls_addr
        .unwrap_or_else(|| panic!("no HTTPS listener"));

    let mut tcp = ok(TcpStream::connect(addr).await, "connect");
    ok(
        tcp.write_all(&v2_tcp4(1, [192, 0, 2, 99], 5, &[])).await,
        "header",
    );
    let connector = tokio_rustls::TlsConnector::from(ca.client_config(&[b"http/1.1"]));
    let name = ok(rustls_pki_types::ServerName::try_from("app.test"), "name");
    let mut tls = ok(
        connector.connect(name, tcp).await,
        "handshake after the header",
    );
    ok(tls.write_all(GET).await, "request");
    let (resp, _) = read_until_close(&mut tls, Duration::from_secs(5)).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(forwarded_for(&blue), "192.0.2.99");

    // The plain listener takes no header here: one there is a bad request.
    let mut bytes = v1("203.0.113.7", "10.0.0.1", 1, 2);
    bytes.extend_from_slice(GET);
    let plain = exchange(proxy.proxy_addr, &bytes).await;
    assert!(plain.starts_with("HTTP/1.1 400"), "{plain}");

    // A TLS client that sends no header: closed, counted on https.
    let tcp = ok(TcpStream::connect(addr).await, "connect");
    let connector = tokio_rustls::TlsConnector::from(ca.client_config(&[b"http/1.1"]));
    let name = ok(rustls_pki_types::ServerName::try_from("app.test"), "name");
    assert!(connector.connect(name, tcp).await.is_err());
    assert_eq!(refused(&proxy, "https", "malformed").await, 1.0);
    proxy.shutdown().await;
}

/// HAProxy in TCP mode as the L4 balancer (the NLB's part), sending PROXY
/// v1 to one listener and v2 to another. The upstream sees the address of
/// the client that connected to HAProxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_in_front_sends_v1_and_v2() {
    let blue = Upstream::start("blue").await;
    let proxy = start_proxy(&config_yaml(
        &[("blue", 1, &[&blue])],
        "proxy_protocol:\n  from: [127.0.0.1]\n",
    ))
    .await;
    let dir = ok(tempfile::tempdir(), "tempdir");
    let ports = [free_port(), free_port()];
    let cfg = format!(
        "global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
         frontend v1\n  bind 127.0.0.2:{p1}\n  default_backend v1\n\
         frontend v2\n  bind 127.0.0.3:{p2}\n  default_backend v2\n\
         backend v1\n  server s {up} send-proxy\n\
         backend v2\n  server s {up} send-proxy-v2\n",
        p1 = ports[0],
        p2 = ports[1],
        up = proxy.proxy_addr,
    );
    let cfg_path = dir.path().join("haproxy.cfg");
    ok(std::fs::write(&cfg_path, cfg), "write haproxy.cfg");
    let bin = ["/usr/sbin/haproxy", "haproxy"]
        .into_iter()
        .find(|b| std::process::Command::new(b).arg("-v").output().is_ok())
        .unwrap_or_else(|| panic!("haproxy is not installed (tests/run installs it)"));
    let _haproxy = Killed(ok(
        std::process::Command::new(bin)
            .args(["-db", "-f"])
            .arg(&cfg_path)
            .stdout(std::process::Stdio::null())
            .spawn(),
        "start haproxy",
    ));
    for (ip, port) in [("127.0.0.2", ports[0]), ("127.0.0.3", ports[1])] {
        let front: SocketAddr = ok(format!("{ip}:{port}").parse(), "addr");
        let mut resp = String::new();
        for _ in 0..100 {
            if TcpStream::connect(front).await.is_ok() {
                resp = exchange(front, GET).await;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            resp.starts_with("HTTP/1.1 200"),
            "through HAProxy at {front}: {resp}"
        );
        // The client connected to HAProxy from 127.0.0.1; HAProxy connected
        // to the proxy from 127.0.0.1 too, so say it with a source of our own:
        // bind the client to another loopback address.
        let sock = ok(tokio::net::TcpSocket::new_v4(), "socket");
        ok(sock.bind(ok("127.0.0.9:0".parse(), "addr")), "bind");
        let mut s = ok(sock.connect(front).await, "connect");
        ok(s.write_all(GET).await, "request");
        let (resp, _) = read_until_close(&mut s, Duration::from_secs(5)).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert_eq!(forwarded_for(&blue), "127.0.0.9", "via {ip}");
    }
    proxy.shutdown().await;
}
