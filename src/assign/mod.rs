//! Pure routing decisions: which group (and pinned target) serves a request,
//! and whether the client gets a new cookie.
//!
//! [`decide`] does no I/O and takes the clock and the source of fresh client ids
//! as arguments, so every rule of DESIGN.md §2–§4 is unit-tested without sockets.

pub mod bucket;
pub mod cookie;
pub mod pass;
mod routing;

use bucket::{bucket_of, client_id_from_key};
pub use cookie::{ClientId, CookieCodec, Pin, Rejection};
pub use pass::{PassCodec, PassResult};
pub use routing::{Routing, target_id};

/// What the request offers to the decision.
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestView<'a> {
    /// The sticky cookie, as [`read_cookie`] found it; `None` when there was none.
    pub cookie: Option<Result<Pin, Rejection>>,
    /// The group a verified tester pass (or, from `override_plain_from`,
    /// a plain name in the override header) names.
    pub override_group: Option<&'a [u8]>,
    /// The bucketing key (header value or client IP) for clients without a cookie.
    pub bucket_key: Option<&'a [u8]>,
}

/// Why a request went where it went. Metric label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No cookie: assigned by weight.
    New,
    /// A valid cookie, honoured.
    Sticky,
    /// A tester pass in the override header chose the group for this request only.
    Override,
    /// The cookie's group is draining or gone: moved to another group.
    Reassigned,
    /// The cookie's target is gone: moved within the same group.
    Retargeted,
    /// The cookie was authentic but expired: re-bucketed with the same client id.
    Expired,
    /// The cookie did not verify: assigned anew.
    Invalid,
    /// Every target of the client's group is unhealthy: served by another group
    /// for now, its cookie unchanged.
    Failover,
    /// The session store did not answer: bucketed by the session id.
    StoreUnavailable,
    /// A write on a route with `writes:`: served by its writes group.
    Write,
    /// A read inside the client's read-your-writes window: served by the
    /// writes group, so it never reads older data than it wrote.
    ReadYourWrites,
}

impl Reason {
    pub const ALL: [Reason; 11] = [
        Reason::New,
        Reason::Sticky,
        Reason::Override,
        Reason::Reassigned,
        Reason::Retargeted,
        Reason::Expired,
        Reason::Invalid,
        Reason::Failover,
        Reason::StoreUnavailable,
        Reason::Write,
        Reason::ReadYourWrites,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Reason::New => "new",
            Reason::Sticky => "sticky",
            Reason::Override => "override",
            Reason::Reassigned => "reassigned",
            Reason::Retargeted => "retargeted",
            Reason::Expired => "expired",
            Reason::Invalid => "invalid",
            Reason::Failover => "failover",
            Reason::StoreUnavailable => "store_unavailable",
            Reason::Write => "write",
            Reason::ReadYourWrites => "read_your_writes",
        }
    }
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Index into `snapshot.groups`.
    pub group: usize,
    /// Index of the pinned target in the group, or `None` to pick one.
    /// `balance::route` sets the target finally used.
    pub target: Option<usize>,
    pub client_id: ClientId,
    pub issued_at: u32,
    pub expires_at: u32,
    /// Send `Set-Cookie` (the assignment is new or changed).
    pub issue_cookie: bool,
    pub reason: Reason,
    /// Why an offered cookie was not honoured.
    pub rejected: Option<Rejection>,
    /// The read-your-writes window of the client's pin (Unix seconds; 0:
    /// none), carried while the pin is honoured.
    pub writes_until: u32,
}

impl Decision {
    /// The pin this decision records once the target whose id is
    /// `target_id` (of the group named `group`) is chosen.
    pub fn pin(&self, group: &str, target_id: u32) -> Option<Pin> {
        let mut pin = Pin::new(
            self.client_id,
            group,
            target_id,
            self.issued_at,
            self.expires_at,
        )?;
        pin.writes_until = self.writes_until;
        Some(pin)
    }
}

/// Decides where a request goes. `now` is Unix seconds; `fresh_id` is called
/// only when a client needs a brand-new random id. `None` means no group can take
/// the client (every group drained or at weight 0, which validation prevents).
pub fn decide(
    routing: &Routing,
    req: &RequestView<'_>,
    now: u32,
    fresh_id: &mut dyn FnMut() -> ClientId,
) -> Option<Decision> {
    if let Some(g) = req
        .override_group
        .and_then(|name| routing.group_by_name(name))
    {
        return Some(Decision {
            group: g,
            target: None,
            client_id: [0; 16],
            issued_at: now,
            expires_at: now,
            issue_cookie: false,
            reason: Reason::Override,
            rejected: None,
            writes_until: 0,
        });
    }
    match req.cookie {
        Some(Ok(pin)) if now >= pin.expires_at => assign(
            routing,
            pin.client_id,
            now,
            Reason::Expired,
            Some(Rejection::Expired),
        ),
        Some(Ok(pin)) => match routing.group_by_name(pin.group()) {
            Some(g) if !routing.draining(g) => {
                let target = routing.target_by_id(g, pin.target);
                Some(Decision {
                    group: g,
                    target,
                    client_id: pin.client_id,
                    issued_at: pin.issued_at,
                    // A pin is not sliding: a new target keeps the group's expiry.
                    expires_at: pin.expires_at,
                    issue_cookie: target.is_none(),
                    reason: if target.is_some() {
                        Reason::Sticky
                    } else {
                        Reason::Retargeted
                    },
                    rejected: None,
                    writes_until: pin.writes_until,
                })
            }
            // Drained or removed: move, keeping the client id so the move is stable.
            _ => assign(routing, pin.client_id, now, Reason::Reassigned, None),
        },
        Some(Err(rejection)) => {
            let id = new_client_id(req, fresh_id);
            assign(routing, id, now, Reason::Invalid, Some(rejection))
        }
        None => {
            let id = new_client_id(req, fresh_id);
            assign(routing, id, now, Reason::New, None)
        }
    }
}

/// How many sticky cookies of one request are checked at most, so a request
/// stuffed with copies cannot buy unbounded HMAC work.
pub const MAX_COOKIE_CANDIDATES: usize = 4;

/// Verifies the request's sticky cookie values and keeps the first that is
/// authentic, or else why the first one was refused. Browsers send several
/// cookies of one name when their Path or Domain differ (after an operator
/// changes `sticky.path`, say); taking the first blindly would re-assign such a
/// client on every request.
pub fn read_cookie<'a>(
    codec: &CookieCodec,
    values: impl IntoIterator<Item = &'a str>,
) -> Option<Result<Pin, Rejection>> {
    let mut first_refusal = None;
    for v in values.into_iter().take(MAX_COOKIE_CANDIDATES) {
        match codec.verify(v) {
            Ok(pin) => return Some(Ok(pin)),
            Err(e) => {
                first_refusal.get_or_insert(e);
            }
        }
    }
    first_refusal.map(Err)
}

fn new_client_id(req: &RequestView<'_>, fresh_id: &mut dyn FnMut() -> ClientId) -> ClientId {
    match req.bucket_key {
        Some(key) if !key.is_empty() => client_id_from_key(key),
        _ => fresh_id(),
    }
}

fn assign(
    routing: &Routing,
    client_id: ClientId,
    now: u32,
    reason: Reason,
    rejected: Option<Rejection>,
) -> Option<Decision> {
    let group = routing.table().group_of(bucket_of(&client_id))?;
    Some(Decision {
        group,
        target: None,
        client_id,
        issued_at: now,
        expires_at: now.saturating_add(routing.ttl_secs()),
        issue_cookie: true,
        reason,
        rejected,
        writes_until: 0,
    })
}

#[cfg(test)]
pub(crate) mod tests;
