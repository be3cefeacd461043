//! `switchyard rollout status|pause|resume|promote|abort|retry [ROUTE]`:
//! the admin API's rollout calls from a shell. The admin address and the
//! token come from the flags, else `SWITCHYARD_ADMIN_TOKEN`, else the
//! config file (its `admin` and `admin_token`).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use switchyard::config::{self, SystemKeys, ValidateOptions};

/// What to do and where.
#[derive(Debug)]
pub struct Call<'a> {
    /// `status`, or a command (`pause`, `resume`, `promote`, `abort`, `retry`).
    pub action: &'a str,
    pub route: Option<&'a str>,
    pub config: &'a Path,
    pub admin: Option<SocketAddr>,
    pub token_file: Option<&'a Path>,
}

pub fn run(call: &Call) -> Result<()> {
    // Only `admin` and `admin_token` are read: cookie keys need not be here.
    let opts = ValidateOptions {
        ephemeral_key_if_missing: true,
    };
    let loaded = config::load_file(call.config, &SystemKeys, opts).ok();
    let admin = call
        .admin
        .or(loaded.as_ref().map(|(c, _)| c.admin))
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9901)));
    let token = match call.token_file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read {}", f.display()))?
            .trim()
            .to_owned(),
        None => match std::env::var("SWITCHYARD_ADMIN_TOKEN") {
            Ok(t) => t.trim().to_owned(),
            Err(_) => loaded
                .as_ref()
                .and_then(|(c, _)| c.admin_token.as_ref())
                .map(|t| t.expose().to_owned())
                .with_context(|| {
                    format!(
                        "no admin token: set SWITCHYARD_ADMIN_TOKEN, pass --token-file, or run where {} and its admin_token can be read",
                        call.config.display()
                    )
                })?,
        },
    };
    let (method, path) = match (call.action, call.route) {
        ("status", None) => ("GET", "/rollouts".to_owned()),
        ("status", Some(r)) => ("GET", format!("/rollouts/{r}")),
        (cmd, route) => {
            let route = match route {
                Some(r) => r.to_owned(),
                None => only_route(admin, &token)?,
            };
            ("POST", format!("/rollouts/{route}/{cmd}"))
        }
    };
    let (status, body) = request(admin, method, &path, &token)?;
    if !(200..300).contains(&status) {
        bail!("{method} {path}: {status}: {}", body.trim());
    }
    let doc: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("{path}: not JSON: {body}"))?;
    match doc.as_array() {
        Some(all) if all.is_empty() => println!("no route has a rollout"),
        Some(all) => all.iter().for_each(print_one),
        None => print_one(&doc),
    }
    Ok(())
}

/// The route of the one rollout there is, for a command given none.
fn only_route(admin: SocketAddr, token: &str) -> Result<String> {
    let (status, body) = request(admin, "GET", "/rollouts", token)?;
    if status != 200 {
        bail!("GET /rollouts: {status}: {}", body.trim());
    }
    let all: Vec<serde_json::Value> = serde_json::from_str(&body)?;
    let names: Vec<&str> = all.iter().filter_map(|v| v["route"].as_str()).collect();
    match names.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => bail!("no route has a rollout"),
        many => bail!(
            "several routes have rollouts ({}): name one",
            many.join(", ")
        ),
    }
}

/// `web: blue -> green  progressing at step 2/4 (canary 25%)  failures 0/2`
/// and why it is there.
fn print_one(v: &serde_json::Value) {
    let steps = v["steps"].as_array().map_or(0, Vec::len);
    let s = &v["status"];
    let where_ = if s.is_null() {
        "not started".to_owned()
    } else {
        format!(
            "{} at step {}/{steps} (canary {}%)  failures {}/{}",
            s["state"].as_str().unwrap_or("?"),
            s["step"],
            s["canary_weight_percent"],
            s["failures"],
            v["analysis"]["failures_to_abort"]
        )
    };
    println!(
        "{}: {} -> {}  {where_}",
        v["route"].as_str().unwrap_or("?"),
        v["stable"].as_str().unwrap_or("?"),
        v["canary"].as_str().unwrap_or("?"),
    );
    if let Some(r) = s["reason"].as_str() {
        println!("  {r}");
    }
}

/// One HTTP/1.1 exchange with the admin listener: (status, body).
fn request(admin: SocketAddr, method: &str, path: &str, token: &str) -> Result<(u16, String)> {
    let timeout = Duration::from_secs(10);
    let mut s = std::net::TcpStream::connect_timeout(&admin, timeout)
        .with_context(|| format!("cannot connect to the admin listener at {admin}"))?;
    s.set_read_timeout(Some(timeout))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {admin}\r\nauthorization: Bearer {token}\r\ncontent-length: 0\r\nconnection: close\r\nuser-agent: switchyard-rollout\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.take(4 << 20).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP answer from {admin}"))?;
    Ok((status, body.to_owned()))
}
