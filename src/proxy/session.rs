//! Store mode (`sticky.store: memory | redis`) on the request path: turns a
//! session cookie into the assignment its record holds before `decide` runs,
//! and says afterwards what to write back.
//!
//! ```text
//! session cookie valid -> record found      -> decide as if the cookie held it
//!                      -> record revoked    -> a new session (admin DELETE)
//!                      -> no record         -> bucket by the session id, write
//!                      -> store unavailable -> bucket by the session id, no
//!                                              write (reason store_unavailable)
//! no / bad / expired cookie, or a routing cookie from cookie mode
//!                      -> a new session: Set-Cookie with its id, write
//! ```
//! Bucketing by the session id is what `decide` does for a new client too, so
//! a client whose record is missing or unreachable lands where it was first
//! put unless the weights have moved since.

use crate::assign::{Decision, Pin, Reason, RequestView};
use crate::state::{Group, Target};
use crate::store::{Lookup, Record, SessionStore};

/// Where the request's session stands, decided before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// No store: the cookie carries the assignment.
    CookieMode,
    /// A valid session whose record was found and handed to `decide`.
    Stored,
    /// A valid session with no record: bucketed by its id and written, to
    /// expire with the session.
    Missing { expires_at: u32 },
    /// A valid session, the store unreachable: bucketed by its id, nothing written.
    Unavailable,
    /// No usable session: one is made from the decision's client id.
    New,
}

/// Looks the session up and rewrites `view.cookie` to what `decide` should see.
pub async fn resolve(store: &SessionStore, view: &mut RequestView<'_>, now: u32) -> Session {
    let pin = match view.cookie {
        // A session cookie names no group.
        Some(Ok(pin)) if pin.group().is_empty() && now < pin.expires_at => pin,
        _ => {
            // A routing cookie (written before the switch to store mode) is
            // honoured once and turned into a session.
            return Session::New;
        }
    };
    match store.get(&pin.client_id, now).await {
        Lookup::Found(r) if r.revoked => {
            view.cookie = None;
            Session::New
        }
        Lookup::Found(r) => {
            view.cookie =
                Pin::new(pin.client_id, &r.group, r.target, r.issued_at, r.expires_at).map(Ok);
            Session::Stored
        }
        // A pin with no group makes `decide` bucket by the client id.
        Lookup::Missing => Session::Missing {
            expires_at: pin.expires_at,
        },
        Lookup::Unavailable => Session::Unavailable,
    }
}

impl Session {
    /// Adjusts what `decide` made of a session without a record.
    pub fn adjust(self, d: &mut Decision) {
        match self {
            Session::Missing { expires_at } => {
                d.reason = Reason::New;
                d.expires_at = expires_at;
            }
            Session::Unavailable => {
                d.reason = Reason::StoreUnavailable;
                d.issue_cookie = false;
            }
            _ => {}
        }
    }
}

/// The record of `decision` once its target is chosen.
pub fn record(decision: &Decision, group: &Group, target: &Target) -> Record {
    Record {
        group: std::sync::Arc::from(group.name.as_str()),
        target: target.id,
        bucket: crate::assign::bucket::bucket_of(&decision.client_id),
        issued_at: decision.issued_at,
        expires_at: decision.expires_at,
        revoked: false,
    }
}
