//! The admin API of rollouts, every call behind `admin_token`:
//!
//! ```text
//! GET  /rollouts                     every route's plan and where it stands
//! GET  /rollouts/{route}             one of them
//! POST /rollouts/{route}/{command}   pause | resume | promote | abort | retry | reset
//! ```
//! Without `admin_token` in the config, the API is off (403): a command
//! changes where clients go, and nothing that does is open on this listener.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use super::respond::{json, text, unauthorized};
use crate::rollout::{Command, CommandError, Rollouts};
use crate::state::Shared;

pub(super) async fn handle(
    shared: &Shared,
    rollouts: &Rollouts,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let snap = shared.snapshot();
    let Some(token) = &snap.config.admin_token else {
        return text(
            StatusCode::FORBIDDEN,
            "the rollout API is off: set `admin_token` (env:NAME or file:PATH) in the config\n",
        );
    };
    if let Some(refused) = unauthorized(req.headers(), token) {
        return refused;
    }
    let path = req.uri().path().trim_start_matches("/rollouts");
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let one = |route: &str| {
        rollouts
            .view(&shared.snapshot())
            .into_iter()
            .find(|v| v["route"].as_str() == Some(route))
    };
    match (req.method(), parts.as_slice()) {
        (&Method::GET | &Method::HEAD, []) => json(&serde_json::Value::Array(rollouts.view(&snap))),
        (&Method::GET | &Method::HEAD, [route]) => match one(route) {
            Some(v) => json(&v),
            None => text(StatusCode::NOT_FOUND, "this route has no rollout\n"),
        },
        (&Method::POST, [route, command]) => {
            let Some(cmd) = Command::parse(command) else {
                return text(
                    StatusCode::NOT_FOUND,
                    "commands: pause, resume, promote, abort, retry, reset\n",
                );
            };
            match rollouts.command(route, cmd).await {
                Ok(_) => match one(route) {
                    Some(v) => json(&v),
                    None => text(StatusCode::OK, "done\n"),
                },
                Err(e) => refused(&e),
            }
        }
        (_, [_, _]) => text(StatusCode::METHOD_NOT_ALLOWED, "commands are POST\n"),
        _ => text(
            StatusCode::NOT_FOUND,
            "try GET /rollouts, GET /rollouts/{route} or POST /rollouts/{route}/{pause|resume|promote|abort|retry|reset}\n",
        ),
    }
}

/// A command that was not carried out: its status and why, as JSON.
fn refused(e: &CommandError) -> Response<Full<Bytes>> {
    let status = match e {
        CommandError::NoRollout(_) => StatusCode::NOT_FOUND,
        CommandError::NotStarted(_) | CommandError::Refused(_) => StatusCode::CONFLICT,
        CommandError::Store(_) | CommandError::Busy => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut r = json(&serde_json::json!({ "error": e.to_string() }));
    *r.status_mut() = status;
    r
}
