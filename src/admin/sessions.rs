//! The admin API for one session, in store mode:
//!
//! ```text
//! GET    /sessions/{id}                  the record (404 when there is none)
//! PUT    /sessions/{id}  {"group":"x"}   pin the session to group x (409
//!                                        once revoked)
//! DELETE /sessions/{id}                  revoke: its next request starts anew
//! ```
//! `{id}` is the session id (22 characters, as the record and the logs show
//! it) or the whole cookie value. With `sticky.store.admin_token` set, every
//! call needs `Authorization: Bearer <token>`. Writes go to the store (Redis
//! first); other replicas see them once their cached copy is older than
//! `sticky.store.cache_ttl`.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use super::respond::{json, text, unauthorized};
use crate::assign::bucket::bucket_of;
use crate::state::{Shared, Snapshot};
use crate::store::{Record, SessionId, SessionStore, id_text, parse_id};

/// Largest PUT body read.
const MAX_BODY: usize = 4096;

pub(super) async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(store) = &shared.store else {
        return text(
            StatusCode::NOT_FOUND,
            "no session store: sticky.store is cookie (assignments live in the cookie)\n",
        );
    };
    let snap = shared.snapshot();
    let token =
        (snap.config.sticky.store.admin_token.as_ref()).or(snap.config.admin_token.as_ref());
    if let Some(token) = token
        && let Some(refused) = unauthorized(req.headers(), token)
    {
        return refused;
    }
    let raw_id = req.uri().path().trim_start_matches("/sessions/");
    let Some(id) = session_id(&snap, raw_id) else {
        return text(
            StatusCode::BAD_REQUEST,
            "not a session id: give the 22-character id or the whole cookie value\n",
        );
    };
    let now = crate::clock::unix_now();
    match *req.method() {
        Method::GET | Method::HEAD => match store.fetch(&id, now).await {
            Ok(Some(r)) if !r.revoked => json(&describe(&snap, &id, &r)),
            Ok(_) => text(StatusCode::NOT_FOUND, "no such session\n"),
            Err(e) => unavailable(&e),
        },
        Method::PUT => put(&snap, store, &id, req, now).await,
        Method::DELETE => {
            let ttl = snap.config.sticky.ttl.secs();
            let tombstone = Record {
                group: std::sync::Arc::from(""),
                target: 0,
                bucket: bucket_of(&id),
                issued_at: now,
                expires_at: now.saturating_add(ttl),
                revoked: true,
            };
            match store.put(&id, tombstone, now).await {
                Ok(()) => {
                    tracing::info!(session = %id_text(&id), "session revoked by the admin API");
                    text(
                        StatusCode::OK,
                        "revoked; its next request starts a new session\n",
                    )
                }
                Err(e) => unavailable(&e),
            }
        }
        _ => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET, PUT or DELETE /sessions/{id}\n",
        ),
    }
}

async fn put(
    snap: &Snapshot,
    store: &SessionStore,
    id: &SessionId,
    req: Request<Incoming>,
    now: u32,
) -> Response<Full<Bytes>> {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "body over 4 KiB\n"),
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct PinRequest {
        group: String,
    }
    let Ok(pin) = serde_json::from_slice::<PinRequest>(&body) else {
        return text(
            StatusCode::BAD_REQUEST,
            "expected a JSON body like {\"group\": \"green\"}\n",
        );
    };
    let Some(g) = snap.group_by_name(pin.group.as_bytes()) else {
        return text(StatusCode::UNPROCESSABLE_ENTITY, "no such group\n");
    };
    let group = &snap.groups[g];
    // An existing session keeps its expiry; a new one gets the full TTL.
    // A revoked session stays revoked: its client is given a new session
    // at its next request, and a pin must not bring the old one back.
    let (issued_at, expires_at) = match store.fetch(id, now).await {
        Ok(Some(r)) if r.revoked => {
            return text(
                StatusCode::CONFLICT,
                "this session was revoked; its client gets a new session id at its next request, pin that one\n",
            );
        }
        Ok(Some(r)) => (r.issued_at, r.expires_at),
        Ok(None) => (now, now.saturating_add(snap.config.sticky.ttl.secs())),
        Err(e) => return unavailable(&e),
    };
    let record = Record {
        group: std::sync::Arc::from(group.name.as_str()),
        // No target: the next request picks one in the group and records it.
        target: 0,
        bucket: bucket_of(id),
        issued_at,
        expires_at,
        revoked: false,
    };
    match store.put(id, record.clone(), now).await {
        Ok(()) => {
            tracing::info!(session = %id_text(id), group = %group.name.as_str(), "session pinned by the admin API");
            json(&describe(snap, id, &record))
        }
        Err(e) => unavailable(&e),
    }
}

/// The id from its text form, or from a whole (verified) session cookie value.
fn session_id(snap: &Snapshot, raw: &str) -> Option<SessionId> {
    if let Some(id) = parse_id(raw) {
        return Some(id);
    }
    // A session cookie of any route (each route signs its own).
    snap.routes
        .iter()
        .find_map(|r| r.codec.verify(raw).ok())
        .filter(|pin| pin.group().is_empty())
        .map(|pin| pin.client_id)
}

fn describe(snap: &Snapshot, id: &SessionId, r: &Record) -> serde_json::Value {
    let target = snap.group_by_name(r.group.as_bytes()).and_then(|g| {
        let group = &snap.groups[g];
        group
            .target_by_id(r.target)
            .map(|t| group.targets[t].address.as_str().to_owned())
    });
    serde_json::json!({
        "id": id_text(id),
        "group": &*r.group,
        "target": target,
        "bucket": r.bucket,
        "issued_at": r.issued_at,
        "expires_at": r.expires_at,
    })
}

fn unavailable(e: &crate::store::StoreError) -> Response<Full<Bytes>> {
    tracing::warn!(error = %e, "admin session call failed");
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "the session store is unavailable\n",
    )
}
