//! Tester passes: the override header's value, signed with a route's pin
//! keys, naming the route, a group and an expiry (DESIGN §6). A pass is a
//! pin in another binding: the same `v1.` codec, its MAC bound to the
//! route's name under a binding no cookie or pin header can have (an empty
//! name and a domain with a space), so no pin is ever a pass, nor a pass a
//! pin, nor one route's pass another's.
//!
//! A value that does not verify, is expired or names a group the route
//! does not split to is ignored (the client is assigned as usual) and
//! counted by its reason; it is never an error.

use super::cookie::{CookieCodec, Pin, Rejection};
use super::routing::Routing;
use crate::config::CookieKey;

/// Why a pass was not honoured, or that it was. Metric label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassResult {
    Accepted,
    /// A plain group name from an `override_plain_from` address.
    Plain,
    TooLong,
    Malformed,
    UnknownKey,
    BadSignature,
    Expired,
    /// Authentic, for this route, but its group is not in the route's split
    /// (removed since it was issued).
    UnknownGroup,
}

impl PassResult {
    pub const ALL: [Self; 8] = [
        Self::Accepted,
        Self::Plain,
        Self::TooLong,
        Self::Malformed,
        Self::UnknownKey,
        Self::BadSignature,
        Self::Expired,
        Self::UnknownGroup,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Plain => "plain",
            Self::TooLong => "too_long",
            Self::Malformed => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::UnknownGroup => "unknown_group",
        }
    }
}

impl From<Rejection> for PassResult {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::TooLong => Self::TooLong,
            Rejection::Malformed => Self::Malformed,
            Rejection::UnknownKey => Self::UnknownKey,
            Rejection::BadSignature => Self::BadSignature,
            Rejection::Expired => Self::Expired,
        }
    }
}

/// Signs and verifies one route's tester passes.
#[derive(Debug)]
pub struct PassCodec(CookieCodec);

impl PassCodec {
    /// The passes of the route named `route`, signed with `keys` (the
    /// route's pin keys: the first signs, all verify).
    pub fn new(keys: &[CookieKey], route: &str) -> Self {
        Self(CookieCodec::with_binding(
            keys,
            "",
            "tester pass",
            "",
            Some(route),
        ))
    }

    /// A pass to `group` from `now` until `expires` (Unix seconds).
    pub fn issue(&self, group: &str, now: u32, expires: u32) -> Option<String> {
        let pin = Pin::new([0; 16], group, 0, now, expires)?;
        Some(self.0.encode(&pin))
    }

    /// The verified pass in `value`, with the index of its group in
    /// `routing`; or why it is not honoured.
    pub fn check(
        &self,
        value: &[u8],
        routing: &Routing,
        now: u32,
    ) -> Result<(Pin, usize), PassResult> {
        // A length the codec refuses is refused before any scan of it.
        if value.len() > super::cookie::MAX_VALUE_LEN {
            return Err(PassResult::TooLong);
        }
        let text = std::str::from_utf8(value).map_err(|_| PassResult::Malformed)?;
        let pin = self.0.verify(text)?;
        if now >= pin.expires_at {
            return Err(PassResult::Expired);
        }
        let g = routing
            .group_by_name(pin.group())
            .ok_or(PassResult::UnknownGroup)?;
        Ok((pin, g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assign::tests::two_groups;
    use crate::config::CookieKey;

    fn key(b: u8) -> CookieKey {
        CookieKey::try_new(vec![b; 32]).unwrap_or_else(|e| panic!("{e}"))
    }

    fn routing() -> Routing {
        let cfg = two_groups(90, 10, "");
        Routing::new(&cfg, &cfg.routes[0])
    }

    const NOW: u32 = 1_700_000_000;

    #[test]
    fn a_pass_opens_its_group_until_it_expires() {
        let codec = PassCodec::new(&[key(1)], "default");
        let pass = codec.issue("green", NOW, NOW + 60).unwrap_or_default();
        let r = routing();
        let (_, g) = codec
            .check(pass.as_bytes(), &r, NOW + 59)
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(r.group_name(g), "green");
        assert_eq!(
            codec.check(pass.as_bytes(), &r, NOW + 60).err(),
            Some(PassResult::Expired)
        );
    }

    #[test]
    fn names_forgeries_other_routes_and_other_keys_are_refused_by_reason() {
        let codec = PassCodec::new(&[key(1)], "default");
        let r = routing();
        let check = |v: &str| codec.check(v.as_bytes(), &r, NOW).err();
        assert_eq!(check("green"), Some(PassResult::Malformed));
        assert_eq!(check(&"x".repeat(300)), Some(PassResult::TooLong));
        assert_eq!(
            codec.check(b"v1.\xff.x", &r, NOW).err(),
            Some(PassResult::Malformed)
        );
        let other_route = PassCodec::new(&[key(1)], "api").issue("green", NOW, NOW + 60);
        assert_eq!(
            check(&other_route.unwrap_or_default()),
            Some(PassResult::BadSignature)
        );
        let other_key = PassCodec::new(&[key(2)], "default").issue("green", NOW, NOW + 60);
        assert_eq!(
            check(&other_key.unwrap_or_default()),
            Some(PassResult::UnknownKey)
        );
        let gone = codec.issue("purple", NOW, NOW + 60).unwrap_or_default();
        assert_eq!(check(&gone), Some(PassResult::UnknownGroup));
        // A pin of the route's cookie is no pass, whatever it names.
        let cfg = two_groups(90, 10, "");
        let pin_codec = CookieCodec::new(&cfg.routes[0].sticky);
        let pin = Pin::new([7; 16], "green", 0, NOW, NOW + 60).unwrap_or_else(|| panic!("pin"));
        assert!(check(&pin_codec.encode(&pin)).is_some());
    }

    #[test]
    fn rotation_keeps_passes_signed_by_any_listed_key() {
        let old = PassCodec::new(&[key(1)], "default");
        let pass = old.issue("green", NOW, NOW + 60).unwrap_or_default();
        let rotated = PassCodec::new(&[key(2), key(1)], "default");
        assert!(rotated.check(pass.as_bytes(), &routing(), NOW).is_ok());
        let dropped = PassCodec::new(&[key(2)], "default");
        assert_eq!(
            dropped.check(pass.as_bytes(), &routing(), NOW).err(),
            Some(PassResult::UnknownKey)
        );
    }
}
