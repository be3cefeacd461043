//! README's canary walkthrough, run as README gives it: `switchyard demo
//! --config` on a copy of src/demo.yaml with no `SWITCHYARD_COOKIE_KEY`
//! (the demo signs with a key made for the run), README's own `sed` edit
//! applied to the copy, the reload it causes, then a comment-only edit and
//! a bare SIGHUP: every pinned client, on both routes, stays where it was,
//! and gets no new pin.
//!
//! The one deviation from README: the copy's fixed ports (8080, 9901, the
//! upstreams' 9001...) become free ones, so the test runs beside others.

mod common;

use std::time::Duration;

use common::*;

/// README's edit of the demo's copy: the `sed -i` line of its canary block.
fn readme_edit() -> String {
    let readme = ok(std::fs::read_to_string("README.md"), "read README.md");
    readme
        .lines()
        .find(|l| l.starts_with("sed -i 's/api-blue: 90, api-green: 10/"))
        .unwrap_or_else(|| {
            panic!("README's demo walkthrough has no `sed -i` edit of the api split")
        })
        .to_owned()
}

/// src/demo.yaml with every fixed port replaced by a free one.
fn demo_copy() -> String {
    let mut text = ok(
        std::fs::read_to_string("src/demo.yaml"),
        "read src/demo.yaml",
    );
    text = text.replace("127.0.0.1:8080", "127.0.0.1:0");
    text = text.replace("127.0.0.1:9901", "127.0.0.1:0");
    for port in ["9001", "9002", "9101", "9201", "9301"] {
        let from = format!("127.0.0.1:{port}");
        assert!(text.contains(&from), "src/demo.yaml no longer names {from}");
        text = text.replace(&from, &format!("127.0.0.1:{}", free_port()));
    }
    text
}

/// A client of each route, pinned: (path, cookie, upstream).
async fn pinned_clients(p: std::net::SocketAddr, n: usize) -> Vec<(&'static str, String, String)> {
    let c = h1_client();
    let mut out = Vec::new();
    for i in 0..n {
        let (path, cookie) = if i % 2 == 0 {
            ("/", "switchyard_web")
        } else {
            ("/api/orders", "switchyard_api")
        };
        let got = get(&c, &format!("http://{p}{path}"), None).await;
        assert_eq!(got.status, 200);
        let value = got
            .set_cookie(cookie)
            .unwrap_or_else(|| panic!("no {cookie} pin for a new client"));
        out.push((path, format!("{cookie}={value}"), got.upstream().to_owned()));
    }
    out
}

async fn assert_still_pinned(
    p: std::net::SocketAddr,
    clients: &[(&str, String, String)],
    after: &str,
) {
    let c = h1_client();
    for (path, cookie, upstream) in clients {
        let got = get(&c, &format!("http://{p}{path}"), Some(cookie)).await;
        assert_eq!(got.status, 200);
        assert_eq!(
            &got.upstream(),
            upstream,
            "{after}: a client of {path} moved"
        );
        assert!(
            got.headers.get("set-cookie").is_none(),
            "{after}: a client of {path} was pinned anew"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_without_a_key_keeps_every_pin_across_readme_edit_and_reloads() {
    let dir = ok(tempfile::tempdir(), "tempdir");
    let path = dir.path().join("demo.yaml");
    ok(std::fs::write(&path, demo_copy()), "write the demo's copy");
    let demo = BinProxy::start_command(ok(tempfile::tempdir(), "tempdir"), "demo", &path);
    let (p, a) = (demo.proxy_addr, demo.admin_addr);
    let clients = pinned_clients(p, 40).await;
    assert_still_pinned(p, &clients, "nothing").await;

    let edit = readme_edit().replace("/tmp/demo.yaml", &path.display().to_string());
    let ran = ok(
        std::process::Command::new("bash")
            .arg("-c")
            .arg(&edit)
            .status(),
        "run README's sed",
    );
    assert!(ran.success(), "README's edit failed: {edit}");
    assert!(
        wait_generation(a, 2, Duration::from_secs(10)).await,
        "README's edit was not reloaded"
    );
    let status = status_at(a).await;
    let changes = status["config"]["reload"]["last_changes"].to_string();
    assert!(
        changes.contains("api-green"),
        "the reload did not see the api split move: {changes}"
    );
    assert_still_pinned(p, &clients, "README's edit").await;

    let text = ok(std::fs::read_to_string(&path), "read the copy");
    write_by_rename(&path, &format!("{text}\n# a comment-only edit\n"));
    assert!(
        wait_generation(a, 3, Duration::from_secs(10)).await,
        "the comment edit was not seen"
    );
    assert_still_pinned(p, &clients, "a comment-only edit").await;

    demo.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_still_pinned(p, &clients, "SIGHUP").await;
}
