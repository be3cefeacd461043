//! The sticky cookie codec: `v1.<base64url(payload)>.<base64url(HMAC-SHA256)>`.
//!
//! Payload (big-endian, 33 bytes + group name, + 4 after a write):
//! `key id u32 | client id [16] | issued-at u32 | expires-at u32 | target id u32 | len u8 | group
//! [| writes-until u32]`. The last field is there only while a route's
//! read-your-writes window is open, so every other pin is as it always was.
//! The MAC covers a binding of the cookie's name, domain and path (and, for a
//! route of `routes:`, the route's name) followed by `"v1." + payload`, so a
//! value cannot be replayed under another cookie or on another route. The key
//! id (a fingerprint of the key, not its position) lets rotation add keys in front.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::config::{CookieKey, PinCarrier, Sticky};

type HmacSha256 = Hmac<Sha256>;

/// Longer values are refused before any decoding work is done.
pub const MAX_VALUE_LEN: usize = 256;
const PREFIX: &str = "v1.";
const MAC_LEN: usize = 32;
const FIXED_LEN: usize = 4 + 16 + 4 + 4 + 4 + 1;
const MAX_GROUP_LEN: usize = 32;
const MAX_PAYLOAD: usize = FIXED_LEN + MAX_GROUP_LEN + 4;

/// A client's random identity; its bucket is derived from it.
pub type ClientId = [u8; 16];

/// What a verified cookie says.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Pin {
    pub client_id: ClientId,
    pub issued_at: u32,
    pub expires_at: u32,
    pub target: u32,
    /// Until when (Unix seconds) the client's reads go to its route's
    /// `writes` group, after a write; 0: no window open.
    pub writes_until: u32,
    group: [u8; MAX_GROUP_LEN],
    group_len: u8,
}

impl Pin {
    pub fn new(
        client_id: ClientId,
        group: &str,
        target: u32,
        issued_at: u32,
        expires_at: u32,
    ) -> Option<Self> {
        let g = group.as_bytes();
        if g.len() > MAX_GROUP_LEN {
            return None;
        }
        let mut buf = [0u8; MAX_GROUP_LEN];
        buf[..g.len()].copy_from_slice(g);
        Some(Self {
            client_id,
            issued_at,
            expires_at,
            target,
            writes_until: 0,
            group: buf,
            group_len: g.len() as u8,
        })
    }

    pub fn group(&self) -> &[u8] {
        &self.group[..usize::from(self.group_len)]
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pin")
            .field("group", &String::from_utf8_lossy(self.group()))
            .field("target", &self.target)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Why a cookie was not accepted. Label values for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("too long")]
    TooLong,
    #[error("malformed")]
    Malformed,
    #[error("signed by an unknown key")]
    UnknownKey,
    #[error("bad signature")]
    BadSignature,
    #[error("expired")]
    Expired,
}

impl Rejection {
    pub const ALL: [Rejection; 5] = [
        Rejection::TooLong,
        Rejection::Malformed,
        Rejection::UnknownKey,
        Rejection::BadSignature,
        Rejection::Expired,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Rejection::TooLong => "too_long",
            Rejection::Malformed => "malformed",
            Rejection::UnknownKey => "unknown_key",
            Rejection::BadSignature => "bad_signature",
            Rejection::Expired => "expired",
        }
    }
}

struct PreparedKey {
    kid: u32,
    /// HMAC state that has already absorbed the cookie binding.
    mac: HmacSha256,
}

/// Signs and verifies sticky cookies for one snapshot's settings.
pub struct CookieCodec {
    keys: Vec<PreparedKey>,
}

impl fmt::Debug for CookieCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookieCodec")
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// A key's public fingerprint: the first four bytes of SHA-256 over a label and the key.
pub fn key_id(key: &CookieKey) -> u32 {
    let digest = Sha256::new()
        .chain_update(b"switchyard key id\0")
        .chain_update(key.bytes())
        .finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

impl CookieCodec {
    /// Prepares the keys of `sticky`; the first one signs.
    pub fn new(sticky: &Sticky) -> Self {
        Self::for_route(sticky, None)
    }

    /// Prepares the keys of a route's `sticky`; `route`: the name its pins
    /// are bound to (`None`: the groups-only form's route, whose pins are
    /// bound to the cookie alone, as they were before routes).
    pub fn for_route(sticky: &Sticky, route: Option<&str>) -> Self {
        match &sticky.carrier {
            PinCarrier::Cookie => Self::with_binding(
                &sticky.keys,
                sticky.cookie_name.as_str(),
                sticky.domain.as_deref().unwrap_or(""),
                &sticky.path,
                route,
            ),
            // No cookie's binding can be "header" for a domain: a cookie
            // value is never taken from a header, nor the other way.
            PinCarrier::Header(name) => {
                Self::with_binding(&sticky.keys, name.as_str(), "header", "", route)
            }
        }
    }

    pub fn with_binding(
        keys: &[CookieKey],
        name: &str,
        domain: &str,
        path: &str,
        route: Option<&str>,
    ) -> Self {
        let keys = keys
            .iter()
            .filter_map(|k| {
                let mut mac = HmacSha256::new_from_slice(k.bytes()).ok()?;
                for part in [name, domain, path] {
                    mac.update(part.as_bytes());
                    mac.update(b"\0");
                }
                if let Some(route) = route {
                    mac.update(b"route\0");
                    mac.update(route.as_bytes());
                    mac.update(b"\0");
                }
                Some(PreparedKey {
                    kid: key_id(k),
                    mac,
                })
            })
            .collect();
        Self { keys }
    }

    /// Encodes and signs `pin` with the first key, appending the value to `out`.
    pub fn encode_into(&self, pin: &Pin, out: &mut String) {
        let Some(key) = self.keys.first() else { return };
        let mut payload = [0u8; MAX_PAYLOAD];
        payload[0..4].copy_from_slice(&key.kid.to_be_bytes());
        payload[4..20].copy_from_slice(&pin.client_id);
        payload[20..24].copy_from_slice(&pin.issued_at.to_be_bytes());
        payload[24..28].copy_from_slice(&pin.expires_at.to_be_bytes());
        payload[28..32].copy_from_slice(&pin.target.to_be_bytes());
        payload[32] = pin.group_len;
        let len = FIXED_LEN + usize::from(pin.group_len);
        payload[FIXED_LEN..len].copy_from_slice(pin.group());
        let len = if pin.writes_until == 0 {
            len
        } else {
            payload[len..len + 4].copy_from_slice(&pin.writes_until.to_be_bytes());
            len + 4
        };

        let start = out.len();
        out.push_str(PREFIX);
        URL_SAFE_NO_PAD.encode_string(&payload[..len], out);
        let mut mac = key.mac.clone();
        mac.update(&out.as_bytes()[start..]);
        let tag = mac.finalize().into_bytes();
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(tag, out);
    }

    /// Encodes and signs `pin` with the first key.
    pub fn encode(&self, pin: &Pin) -> String {
        let mut s = String::with_capacity(128);
        self.encode_into(pin, &mut s);
        s
    }

    /// Verifies a cookie value. Expiry is not checked here (see `decide`), so an
    /// expired but authentic cookie still yields its client id.
    pub fn verify(&self, value: &str) -> Result<Pin, Rejection> {
        if value.len() > MAX_VALUE_LEN {
            return Err(Rejection::TooLong);
        }
        let body = value.strip_prefix(PREFIX).ok_or(Rejection::Malformed)?;
        let (payload_b64, tag_b64) = body.split_once('.').ok_or(Rejection::Malformed)?;
        let mut tag = [0u8; MAC_LEN + 3];
        let tag_len = URL_SAFE_NO_PAD
            .decode_slice(tag_b64, &mut tag)
            .map_err(|_| Rejection::Malformed)?;
        let mut payload = [0u8; MAX_PAYLOAD + 3];
        let len = URL_SAFE_NO_PAD
            .decode_slice(payload_b64, &mut payload)
            .map_err(|_| Rejection::Malformed)?;
        if tag_len != MAC_LEN || len < FIXED_LEN {
            return Err(Rejection::Malformed);
        }
        let kid = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
        let signed = &value.as_bytes()[..PREFIX.len() + payload_b64.len()];
        let mut known = false;
        let mut ok = false;
        for key in self.keys.iter().filter(|k| k.kid == kid) {
            known = true;
            let mut mac = key.mac.clone();
            mac.update(signed);
            // `verify_slice` compares in constant time.
            if mac.verify_slice(&tag[..MAC_LEN]).is_ok() {
                ok = true;
                break;
            }
        }
        match (known, ok) {
            (false, _) => return Err(Rejection::UnknownKey),
            (true, false) => return Err(Rejection::BadSignature),
            (true, true) => {}
        }
        let group_len = usize::from(payload[32]);
        let end = FIXED_LEN + group_len;
        if group_len > MAX_GROUP_LEN || (len != end && len != end + 4) {
            return Err(Rejection::Malformed);
        }
        let mut client_id = [0u8; 16];
        client_id.copy_from_slice(&payload[4..20]);
        let word = |i: usize| {
            u32::from_be_bytes([payload[i], payload[i + 1], payload[i + 2], payload[i + 3]])
        };
        let mut group = [0u8; MAX_GROUP_LEN];
        group[..group_len].copy_from_slice(&payload[FIXED_LEN..end]);
        Ok(Pin {
            client_id,
            issued_at: word(20),
            expires_at: word(24),
            target: word(28),
            writes_until: if len == end { 0 } else { word(end) },
            group,
            group_len: group_len as u8,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> CookieKey {
        CookieKey::try_new(vec![b; 32]).unwrap_or_else(|e| panic!("{e}"))
    }

    fn codec(keys: &[CookieKey]) -> CookieCodec {
        CookieCodec::with_binding(keys, "switchyard", "", "/", None)
    }

    fn pin() -> Pin {
        Pin::new([7; 16], "green", 0xdead_beef, 1_000, 2_000).unwrap_or_else(|| panic!("pin"))
    }

    #[test]
    fn round_trip_and_size() {
        let c = codec(&[key(1)]);
        let v = c.encode(&pin());
        assert!(v.starts_with("v1."), "{v}");
        assert!(v.len() < 200, "cookie is {} bytes", v.len());
        assert_eq!(c.verify(&v), Ok(pin()));
    }

    #[test]
    fn every_single_byte_change_is_rejected() {
        let c = codec(&[key(1)]);
        let v = c.encode(&pin());
        let bytes = v.as_bytes();
        for i in 0..bytes.len() {
            for replacement in [b'A', b'z', b'0', b'-', b'_', b'.', b'=', b'%', 0x7f] {
                if bytes[i] == replacement {
                    continue;
                }
                let mut b = bytes.to_vec();
                b[i] = replacement;
                let Ok(s) = String::from_utf8(b) else {
                    continue;
                };
                assert!(
                    c.verify(&s).is_err(),
                    "byte {i} -> {replacement} accepted: {s}"
                );
            }
        }
        for cut in 0..v.len() {
            assert!(c.verify(&v[..cut]).is_err(), "truncation to {cut} accepted");
        }
    }

    #[test]
    fn rotation_first_signs_all_verify() {
        let old = codec(&[key(1)]);
        let rotated = codec(&[key(2), key(1)]);
        let v_old = old.encode(&pin());
        assert_eq!(rotated.verify(&v_old), Ok(pin()));
        let v_new = rotated.encode(&pin());
        assert_eq!(old.verify(&v_new), Err(Rejection::UnknownKey));
        assert_eq!(codec(&[key(2)]).verify(&v_new), Ok(pin()));
    }

    #[test]
    fn bound_to_the_cookie_name_and_path() {
        let a = CookieCodec::with_binding(&[key(1)], "a", "", "/", None);
        let b = CookieCodec::with_binding(&[key(1)], "b", "", "/", None);
        let p = CookieCodec::with_binding(&[key(1)], "a", "", "/app", None);
        let v = a.encode(&pin());
        assert_eq!(b.verify(&v), Err(Rejection::BadSignature));
        assert_eq!(p.verify(&v), Err(Rejection::BadSignature));
    }

    #[test]
    fn a_write_window_rides_along_and_leaves_other_pins_as_they_were() {
        let c = codec(&[key(1)]);
        let plain = c.encode(&pin());
        let mut wrote = pin();
        wrote.writes_until = 1_700_000_123;
        let with = c.encode(&wrote);
        assert_eq!(c.verify(&with), Ok(wrote));
        assert_eq!(c.verify(&plain), Ok(pin()));
        assert!(with.len() > plain.len());
        // The window is signed: it cannot be added or moved by the client.
        let (payload, tag) = plain[3..].split_once('.').unwrap_or(("", ""));
        let mut bytes = URL_SAFE_NO_PAD.decode(payload).unwrap_or_default();
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        let forged = format!("v1.{}.{tag}", URL_SAFE_NO_PAD.encode(&bytes));
        assert_eq!(c.verify(&forged), Err(Rejection::BadSignature));
    }

    #[test]
    fn a_route_pin_is_bound_to_its_route() {
        let groups_only = CookieCodec::with_binding(&[key(1)], "a", "", "/", None);
        let api = CookieCodec::with_binding(&[key(1)], "a", "", "/", Some("api"));
        let web = CookieCodec::with_binding(&[key(1)], "a", "", "/", Some("web"));
        let v = api.encode(&pin());
        assert_eq!(api.verify(&v), Ok(pin()));
        assert_eq!(web.verify(&v), Err(Rejection::BadSignature));
        assert_eq!(groups_only.verify(&v), Err(Rejection::BadSignature));
        assert_eq!(
            api.verify(&groups_only.encode(&pin())),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn refuses_over_long_values_before_decoding() {
        let c = codec(&[key(1)]);
        let long = format!("v1.{}", "A".repeat(MAX_VALUE_LEN));
        assert_eq!(c.verify(&long), Err(Rejection::TooLong));
        assert_eq!(c.verify("garbage"), Err(Rejection::Malformed));
        assert_eq!(c.verify(""), Err(Rejection::Malformed));
    }
}
