//! Both versions on well-formed, truncated and hostile headers, and
//! properties over arbitrary bytes.

use proptest::prelude::*;

use super::*;

fn v4(a: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port)
}

/// A v2 header: command, family/transport byte, the address block and TLVs.
fn v2(command: u8, fam: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x20 | command);
    out.push(fam);
    let len = u16::try_from(addresses.len() + tlvs.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(addresses);
    out.extend_from_slice(tlvs);
    out
}

fn v2_inet(src: SocketAddr, dst: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
    let mut a = Vec::new();
    let fam = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            a.extend_from_slice(&s.octets());
            a.extend_from_slice(&d.octets());
            0x11
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            a.extend_from_slice(&s.octets());
            a.extend_from_slice(&d.octets());
            0x21
        }
        _ => 0,
    };
    a.extend_from_slice(&src.port().to_be_bytes());
    a.extend_from_slice(&dst.port().to_be_bytes());
    v2(1, fam, &a, tlvs)
}

fn done(buf: &[u8]) -> (usize, Proxied) {
    match parse(buf) {
        Ok(Parsed::Done { len, proxied }) => (len, proxied),
        other => panic!("{other:?} for {buf:?}"),
    }
}

#[test]
fn v1_lines_give_the_client_and_what_follows_is_left() {
    let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\nGET / HTTP/1.1\r\n";
    let (len, p) = done(line);
    assert_eq!(&line[len..len + 3], b"GET");
    assert_eq!(
        p,
        Proxied::Tcp {
            source: v4([203, 0, 113, 7], 51000),
            destination: v4([10, 0, 0, 1], 443)
        }
    );
    let (_, p) = done(b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n");
    assert!(matches!(p, Proxied::Tcp { source, .. } if source.port() == 1 && source.is_ipv6()));
    assert_eq!(done(b"PROXY UNKNOWN\r\n").1, Proxied::Local);
    assert_eq!(done(b"PROXY UNKNOWN ffff::1 ::1 1 2\r\n").1, Proxied::Local);
}

#[test]
fn v1_refuses_what_the_spec_does_not_allow() {
    let bad: &[&[u8]] = &[
        b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\rX",
        b"PROXY TCP4  203.0.113.7 10.0.0.1 51000 443\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.1 051000 443\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.1 65536 443\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.1 +1 443\r\n",
        b"PROXY TCP4 ::1 10.0.0.1 1 443\r\n",
        b"PROXY TCP6 10.0.0.1 ::1 1 443\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.1 51000\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443 x\r\n",
        b"PROXY UDP4 203.0.113.7 10.0.0.1 51000 443\r\n",
        b"PROXY TCP4 203.0.113.\xff 10.0.0.1 51000 443\r\n",
    ];
    for b in bad {
        assert_eq!(
            parse(b),
            Err(HeaderError::V1Malformed),
            "{}",
            String::from_utf8_lossy(b)
        );
    }
    let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 120]].concat();
    assert_eq!(parse(&long), Err(HeaderError::V1TooLong));
    assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(HeaderError::NotProxy));
    assert_eq!(parse(b"proxy TCP4"), Err(HeaderError::NotProxy));
}

#[test]
fn v2_gives_the_client_skips_tlvs_and_says_local_for_the_balancer_itself() {
    let src = v4([198, 51, 100, 9], 40000);
    let dst = v4([10, 0, 0, 2], 8080);
    // An AWS NLB-like TLV (0xEA, the VPC endpoint id) and a NOOP.
    let tlvs = [&[0xEA, 0, 3][..], b"vpc", &[0x04, 0, 0][..]].concat();
    let mut h = v2_inet(src, dst, &tlvs);
    let header_len = h.len();
    h.extend_from_slice(b"GET /");
    assert_eq!(
        done(&h),
        (
            header_len,
            Proxied::Tcp {
                source: src,
                destination: dst
            }
        )
    );
    let six = v2_inet(
        "[2001:db8::7]:1234".parse().unwrap_or(src),
        "[::1]:443".parse().unwrap_or(dst),
        &[],
    );
    assert!(matches!(done(&six).1, Proxied::Tcp { source, .. } if source.port() == 1234));
    assert_eq!(done(&v2(0, 0x00, &[], &[])).1, Proxied::Local);
    // LOCAL with addresses (some balancers send them): still local.
    assert_eq!(done(&v2(0, 0x11, &[0; 12], &[])).1, Proxied::Local);
    assert_eq!(done(&v2(1, 0x00, &[], &[])).1, Proxied::Local);
    assert_eq!(done(&v2(1, 0x31, &[0; 216], &[])).1, Proxied::Local);
}

#[test]
fn v2_refuses_bad_versions_families_lengths_and_tlvs() {
    let ok = v2_inet(v4([1, 2, 3, 4], 1), v4([5, 6, 7, 8], 2), &[]);
    let mut version = ok.clone();
    version[12] = 0x11;
    assert_eq!(parse(&version), Err(HeaderError::V2Version));
    let mut command = ok.clone();
    command[12] = 0x22;
    assert_eq!(parse(&command), Err(HeaderError::V2Version));
    for fam in [0x41, 0x13, 0x12, 0x10] {
        let mut f = ok.clone();
        f[13] = fam;
        assert_eq!(parse(&f), Err(HeaderError::V2Family), "{fam:#x}");
    }
    assert_eq!(
        parse(&v2(1, 0x11, &[0; 11], &[])),
        Err(HeaderError::V2Length)
    );
    let mut huge = ok.clone();
    huge[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    assert_eq!(parse(&huge), Err(HeaderError::V2Length));
    for tlvs in [
        &[0x01][..],
        &[0x01, 0x00][..],
        &[0x01, 0x00, 0x05, b'a'][..],
    ] {
        let h = v2_inet(v4([1, 2, 3, 4], 1), v4([5, 6, 7, 8], 2), tlvs);
        assert_eq!(parse(&h), Err(HeaderError::V2Tlv), "{tlvs:?}");
    }
}

#[test]
fn every_prefix_of_a_header_asks_for_more() {
    let headers = [
        b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n".to_vec(),
        v2_inet(v4([1, 2, 3, 4], 1), v4([5, 6, 7, 8], 2), &[0x04, 0, 1, 0]),
    ];
    for h in headers {
        for cut in 0..h.len() {
            assert_eq!(parse(&h[..cut]), Ok(Parsed::Incomplete), "cut at {cut}");
        }
        assert!(matches!(parse(&h), Ok(Parsed::Done { len, .. }) if len == h.len()));
    }
}

/// Cases of each property below. proptest lets `PROPTEST_CASES` override
/// it; [`the_properties_run_their_full_count`] fails when that thins them.
const CASES: u32 = 2048;

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
    fn arbitrary_bytes_never_panic_and_never_claim_more_than_they_hold(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        v2_start in any::<bool>(),
    ) {
        let buf = if v2_start { [V2_SIGNATURE.as_slice(), &bytes].concat() } else { bytes };
        if let Ok(Parsed::Done { len, .. }) = parse(&buf) {
            prop_assert!(len <= buf.len());
        }
    }

    #[test]
    fn addresses_come_back_as_sent(
        s in any::<[u8; 4]>(), d in any::<[u8; 4]>(), sp in any::<u16>(), dp in any::<u16>(),
        s6 in any::<[u8; 16]>(), d6 in any::<[u8; 16]>(),
    ) {
        let (src, dst) = (v4(s, sp), v4(d, dp));
        let line = format!("PROXY TCP4 {} {} {sp} {dp}\r\n", src.ip(), dst.ip());
        prop_assert_eq!(done(line.as_bytes()).1, Proxied::Tcp { source: src, destination: dst });
        prop_assert_eq!(done(&v2_inet(src, dst, &[])).1, Proxied::Tcp { source: src, destination: dst });
        let src6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::from(s6)), sp);
        let dst6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::from(d6)), dp);
        let line = format!("PROXY TCP6 {} {} {sp} {dp}\r\n", src6.ip(), dst6.ip());
        prop_assert_eq!(done(line.as_bytes()).1, Proxied::Tcp { source: src6, destination: dst6 });
        prop_assert_eq!(done(&v2_inet(src6, dst6, &[])).1, Proxied::Tcp { source: src6, destination: dst6 });
    }
}
