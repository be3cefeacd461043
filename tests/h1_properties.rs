//! Property tests of the native HTTP/1.1 parsers (`switchyard::h1`), and a
//! differential test of its chunked decoder against hyper's, which the TLS
//! listener and the hyper-util upstream client use: on every input both must
//! accept with the same data and the same end of message, or both refuse.

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::service::service_fn;
use proptest::prelude::*;
use switchyard::h1::{Decoded, Decoder, Framing, FramingError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The request that follows the body under test on the same connection: where
/// each side thinks the body ends shows as whether this comes out whole.
const NEXT: &[u8] = b"GET /next HTTP/1.1\r\nhost: x\r\n\r\n";

/// The body's data, and what was left in the buffer after its end, decoding
/// `wire` fed in pieces of the given sizes (cycled).
fn native(wire: &[u8], steps: &[usize]) -> Result<(Vec<u8>, Vec<u8>), FramingError> {
    let mut d = Decoder::new(Framing::Chunked);
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    let mut rest = wire;
    let mut step = steps.iter().copied().cycle();
    loop {
        match d.decode(&mut buf)? {
            Decoded::Data(b) => data.extend_from_slice(&b),
            Decoded::End => return Ok((data, [&buf[..], rest].concat())),
            Decoded::NeedMore if rest.is_empty() => {
                d.eof()?;
                return Ok((data, buf.to_vec()));
            }
            Decoded::NeedMore => {
                let n = step.next().unwrap_or(1).clamp(1, rest.len());
                buf.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
            }
        }
    }
}

/// A request hyper's service saw: method, path, body (`None`: it failed).
type Seen = (String, String, Option<Vec<u8>>);

/// A request after the body: its method and path.
type Next = Option<(String, String)>;

/// What hyper's server made of `POST` + chunked `body` + [`NEXT`] on one
/// connection: the POST body's data (or `None`: refused), and the request
/// it read after it, if any.
async fn hyper_reads(body: &[u8]) -> (Option<Vec<u8>>, Next) {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let (client, server) = tokio::io::duplex(1 << 20);
    let log = Arc::clone(&seen);
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let log = Arc::clone(&log);
        async move {
            let method = req.method().to_string();
            let path = req.uri().path().to_owned();
            let data = match req.into_body().collect().await {
                Ok(c) => Some(c.to_bytes().to_vec()),
                Err(_) => None,
            };
            if let Ok(mut l) = log.lock() {
                l.push((method, path, data));
            }
            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                http_body_util::Empty::<Bytes>::new(),
            ))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .half_close(true)
        .serve_connection(hyper_util::rt::TokioIo::new(server), service);
    let wire = [
        &b"POST /body HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"[..],
        body,
        NEXT,
    ]
    .concat();
    let drive_client = async move {
        let mut client = client;
        let _ = client.write_all(&wire).await;
        let _ = client.shutdown().await;
        let mut sink = Vec::new();
        let _ = client.read_to_end(&mut sink).await;
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        tokio::join!(conn, drive_client)
    })
    .await;
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let first = seen
        .first()
        .filter(|(_, p, _)| p == "/body")
        .and_then(|(_, _, d)| d.clone());
    let next = seen.get(1).map(|(m, p, _)| (m.clone(), p.clone()));
    (first, next)
}

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    }
}

/// The request the native parser reads at the start of `rest`.
fn next_request(rest: &[u8]) -> Next {
    let mut buf = BytesMut::from(rest);
    let head = switchyard::h1::head::parse_request(&mut buf, 100, &mut Vec::new()).ok()??;
    Some((
        head.parts.method.to_string(),
        head.parts.uri.path().to_owned(),
    ))
}

/// Both stacks' verdict on one body: equal, or the test fails with both.
fn same_verdict(rt: &tokio::runtime::Runtime, body: &[u8], steps: &[usize]) {
    let wire = [body, NEXT].concat();
    let ours = native(&wire, steps);
    let (theirs, next) = rt.block_on(hyper_reads(body));
    let ours_view = ours
        .as_ref()
        .ok()
        .map(|(d, rest)| (d.clone(), next_request(rest)));
    let theirs_view = theirs.map(|d| (d, next));
    assert_eq!(
        ours_view,
        theirs_view,
        "body {:?}: native {:?}",
        String::from_utf8_lossy(body),
        ours.as_ref().map(|(d, r)| (
            String::from_utf8_lossy(d).into_owned(),
            String::from_utf8_lossy(r).into_owned()
        )),
    );
}

/// A chunked body written the way real peers do, with the liberties the
/// grammar allows (case, leading zeros, blanks, extensions, trailers).
fn wellformed() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let chunk = (
        proptest::collection::vec(any::<u8>(), 1..40),
        0usize..3,
        any::<bool>(),
        prop::option::of("[a-z=\"; \t]{0,12}"),
        prop::option::of("[ \t]{1,2}"),
    );
    let trailers = proptest::collection::vec(("[a-z-]{1,8}", "[ -~]{0,10}"), 0..3);
    (proptest::collection::vec(chunk, 0..5), trailers).prop_map(|(chunks, trailers)| {
        let mut wire = Vec::new();
        let mut data = Vec::new();
        for (bytes, zeros, upper, ext, blank) in chunks {
            let size = format!("{}{:x}", "0".repeat(zeros), bytes.len());
            wire.extend_from_slice(if upper { size.to_uppercase() } else { size }.as_bytes());
            if let Some(b) = blank {
                wire.extend_from_slice(b.as_bytes());
            }
            if let Some(e) = ext {
                wire.push(b';');
                wire.extend_from_slice(e.as_bytes());
            }
            wire.extend_from_slice(b"\r\n");
            wire.extend_from_slice(&bytes);
            wire.extend_from_slice(b"\r\n");
            data.extend_from_slice(&bytes);
        }
        wire.extend_from_slice(b"0\r\n");
        for (name, value) in trailers {
            wire.extend_from_slice(format!("{name}: {}\r\n", value.trim()).as_bytes());
        }
        wire.extend_from_slice(b"\r\n");
        (wire, data)
    })
}

/// A well-formed body with a few bytes replaced, inserted or removed, drawn
/// from the bytes that framing turns on.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let edit = (
        any::<prop::sample::Index>(),
        0u8..3,
        prop::sample::select(b"\r\n \t;:0aF5xZ\x00".to_vec()),
    );
    (wellformed(), proptest::collection::vec(edit, 1..4)).prop_map(|((mut wire, _), edits)| {
        for (at, kind, byte) in edits {
            let i = at.index(wire.len() + 1);
            match kind {
                0 if i < wire.len() => wire[i] = byte,
                1 => wire.insert(i, byte),
                _ if i < wire.len() => {
                    wire.remove(i);
                }
                _ => wire.push(byte),
            }
        }
        wire
    })
}

/// The pieces chunked framing is made of, for bodies put together at random.
const SOUP: &[&[u8]] = &[
    b"\r\n",
    b"\r",
    b"\n",
    b"0",
    b"5",
    b"a",
    b"F",
    b"g",
    b" ",
    b"\t",
    b";",
    b";x=\"y\"",
    b"hello",
    b"x-t: 1",
    b":",
    b"\r\n\r\n",
    b"0\r\n\r\n",
];

/// Cases of each property below. proptest lets `PROPTEST_CASES` override
/// it; [`the_properties_run_their_full_count`] fails when that thins them.
const CASES: u32 = 256;

#[test]
fn the_properties_run_their_full_count() {
    let config = ProptestConfig {
        cases: CASES,
        ..ProptestConfig::default()
    };
    let effective = proptest::test_runner::contextualize_config(config).cases;
    assert!(
        effective >= CASES,
        "PROPTEST_CASES lowers the properties to {effective} cases (of {CASES}): unset it"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_a_parser(
        wire in proptest::collection::vec(any::<u8>(), 0..300),
        step in 1usize..40,
    ) {
        for framing in [Framing::Chunked, Framing::Length(17), Framing::Close] {
            let mut d = Decoder::new(framing);
            let mut buf = BytesMut::new();
            for piece in wire.chunks(step) {
                buf.extend_from_slice(piece);
                while let Ok(Decoded::Data(_)) = d.decode(&mut buf) {}
            }
            let _ = d.eof();
        }
        let mut spans = Vec::new();
        let _ = switchyard::h1::head::parse_request(&mut BytesMut::from(&wire[..]), 100, &mut spans);
        let _ = switchyard::h1::head::parse_response(&mut BytesMut::from(&wire[..]), &http::Method::GET, &mut spans);
    }

    #[test]
    fn a_body_rechunked_at_random_boundaries_decodes_to_the_same_bytes(
        data in proptest::collection::vec(any::<u8>(), 0..2000),
        cuts in proptest::collection::vec(1usize..300, 1..20),
        steps in proptest::collection::vec(1usize..64, 1..8),
    ) {
        let mut out = BytesMut::new();
        let mut rest = &data[..];
        let mut encoder = switchyard::h1::Encoder::new(Framing::Chunked);
        for cut in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let n = (*cut).min(rest.len());
            let mut piece = Bytes::copy_from_slice(&rest[..n]);
            prop_assert!(encoder.encode(&mut out, &mut piece).is_ok());
            out.extend_from_slice(&piece);
            rest = &rest[n..];
        }
        prop_assert!(encoder.finish(&mut out).is_ok());
        let wire = [&out[..], NEXT].concat();
        prop_assert_eq!(native(&wire, &steps), Ok((data, NEXT.to_vec())));
    }

    #[test]
    fn native_and_hyper_agree_on_wellformed_bodies((wire, data) in wellformed(), steps in proptest::collection::vec(1usize..32, 1..6)) {
        let full = [&wire[..], NEXT].concat();
        prop_assert_eq!(native(&full, &steps), Ok((data, NEXT.to_vec())));
        same_verdict(&runtime(), &wire, &steps);
    }

    #[test]
    fn native_and_hyper_agree_on_mutated_bodies(wire in mutated(), steps in proptest::collection::vec(1usize..32, 1..6)) {
        same_verdict(&runtime(), &wire, &steps);
    }

    #[test]
    fn native_and_hyper_agree_on_token_soup(tokens in proptest::collection::vec(prop::sample::select(SOUP.to_vec()), 0..24)) {
        same_verdict(&runtime(), &tokens.concat(), &[7]);
    }
}

/// The cases that were once let through on the cleartext path (issue 24),
/// by name, so that a regression is named when it comes back.
#[test]
fn the_smuggling_cases_get_one_verdict_from_both() {
    let rt = runtime();
    for body in [
        &b"\r\n\r\nGET /x HTTP/1.1\r\nhost: x\r\n\r\n"[..],
        b" \r\n\r\n",
        b";x\r\n\r\n",
        b"zz\r\n",
        b"5\r\nhelloEXTRA\r\n0\r\n\r\n",
        b"5;a\nb\r\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n",
        b"5\r\nhello\r\n0\r\n\r\n",
    ] {
        same_verdict(&rt, body, &[1]);
        same_verdict(&rt, body, &[1000]);
    }
}
