//! Hot reload: every trigger (in-place write, rename, ConfigMap symlink swap,
//! SIGHUP), refusals that keep the old config serving, live state kept across
//! reloads, and a reload storm under keep-alive load with zero failed requests.

mod common;

use std::time::Duration;

use common::*;

const WITHIN: Duration = Duration::from_secs(2);

fn two_groups(blue: u32, green: u32, b: &Upstream, g: &Upstream, extra: &str) -> String {
    config_yaml(&[("blue", blue, &[b]), ("green", green, &[g])], extra)
}

/// Sends `n` cookie-less requests and returns the `x-upstream` names seen.
async fn new_clients(proxy: std::net::SocketAddr, n: usize) -> Vec<String> {
    let c = h1_client();
    let mut out = Vec::new();
    for _ in 0..n {
        let got = get(&c, &format!("http://{proxy}/"), None).await;
        assert_eq!(got.status, 200);
        out.push(got.upstream().to_owned());
    }
    out
}

/// Cookies of `n` new clients, with the group each was put in.
async fn pinned_clients(proxy: std::net::SocketAddr, n: usize) -> Vec<(String, String)> {
    let c = h1_client();
    let mut out = Vec::new();
    for _ in 0..n {
        let got = get(&c, &format!("http://{proxy}/"), None).await;
        let cookie = got
            .set_cookie("switchyard")
            .unwrap_or_else(|| panic!("no cookie"));
        out.push((format!("switchyard={cookie}"), got.upstream().to_owned()));
    }
    out
}

async fn assert_still_pinned(proxy: std::net::SocketAddr, pinned: &[(String, String)]) {
    let c = h1_client();
    for (cookie, group) in pinned {
        let got = get(&c, &format!("http://{proxy}/"), Some(cookie)).await;
        assert_eq!(&got.upstream(), group, "a pinned client changed group");
        assert!(
            got.set_cookie("switchyard").is_none(),
            "a pinned client got a new cookie"
        );
    }
}

/// The shared story of every trigger test: pin clients at 50/50, apply 0/100,
/// see new clients all go green while pinned clients stay where they were.
async fn shift_is_served(
    proxy: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    apply: impl FnOnce(),
) {
    let pinned = pinned_clients(proxy, 40).await;
    assert!(
        pinned.iter().any(|(_, g)| g == "blue"),
        "no client landed in blue"
    );
    apply();
    assert!(
        wait_generation(admin, 2, WITHIN).await,
        "the new weights were not in force within 2 s"
    );
    let seen = new_clients(proxy, 30).await;
    assert!(
        seen.iter().all(|u| u == "green"),
        "new clients must follow 0/100: {seen:?}"
    );
    assert_still_pinned(proxy, &pinned).await;
    assert_eq!(
        metric_at(
            admin,
            "switchyard_group_weight{group=\"green\",route=\"default\"}"
        )
        .await,
        100.0
    );
    assert_eq!(
        metric_at(admin, "switchyard_config_reloads_total{result=\"ok\"}").await,
        1.0
    );
}

#[tokio::test]
async fn an_edit_in_place_is_applied() {
    let (b, g) = blue_and_green().await;
    let w = Watched::start(&two_groups(50, 50, &b, &g, "")).await;
    let next = two_groups(0, 100, &b, &g, "");
    shift_is_served(w.running.proxy_addr, w.running.admin_addr, || {
        ok(std::fs::write(&w.path, &next), "write in place");
    })
    .await;
    let status = status_at(w.running.admin_addr).await;
    let reload = &status["config"]["reload"];
    assert_eq!(reload["last_result"], "ok");
    assert_eq!(reload["last_trigger"], "file change");
    let changes = reload["last_changes"].to_string();
    assert!(
        changes.contains("green weight 50 -> 100 (share 50.0% -> 100.0%)"),
        "{changes}"
    );
    assert!(
        changes.contains("50.00% of bucket space moves blue -> green"),
        "{changes}"
    );
    assert_eq!(
        status["config"]["sha256"],
        switchyard::reload::content_hash(&next)
    );
}

#[tokio::test]
async fn a_save_by_rename_is_applied() {
    let (b, g) = blue_and_green().await;
    let w = Watched::start(&two_groups(50, 50, &b, &g, "")).await;
    let next = two_groups(0, 100, &b, &g, "");
    shift_is_served(w.running.proxy_addr, w.running.admin_addr, || {
        write_by_rename(&w.path, &next)
    })
    .await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_configmap_symlink_swap_is_applied() {
    use std::os::unix::fs::symlink;
    let (b, g) = blue_and_green().await;
    // The layout the kubelet makes: proxy.yaml -> ..data/proxy.yaml, and
    // ..data -> ..<version>, replaced by renaming a new symlink over it.
    let dir = ok(tempfile::tempdir(), "tempdir");
    let d = dir.path();
    let publish = |version: &str, yaml: String| {
        ok(std::fs::create_dir(d.join(version)), "mkdir version");
        ok(
            std::fs::write(d.join(version).join("proxy.yaml"), yaml),
            "write",
        );
        ok(symlink(version, d.join("..data_tmp")), "symlink ..data_tmp");
        ok(
            std::fs::rename(d.join("..data_tmp"), d.join("..data")),
            "swap ..data",
        );
    };
    publish("..2026_11_25_a", two_groups(50, 50, &b, &g, ""));
    ok(
        symlink("..data/proxy.yaml", d.join("proxy.yaml")),
        "symlink proxy.yaml",
    );
    let running = start_watching(&d.join("proxy.yaml")).await;
    shift_is_served(running.proxy_addr, running.admin_addr, || {
        publish("..2026_11_25_b", two_groups(0, 100, &b, &g, ""));
        ok(
            std::fs::remove_dir_all(d.join("..2026_11_25_a")),
            "remove old",
        );
    })
    .await;
}

/// Rewrites `path` in place through a hard link in another directory: inotify
/// reports events by the path used, so a directory watch does not see this
/// write. It stands in for the changes watchers miss (NFS, some volume mounts).
fn write_unseen(path: &std::path::Path, text: &str) -> tempfile::TempDir {
    let other = ok(tempfile::tempdir(), "tempdir");
    let alias = other.path().join("alias.yaml");
    ok(std::fs::hard_link(path, &alias), "hard link");
    ok(std::fs::write(&alias, text), "write through the link");
    other
}

/// SIGHUP to the real binary reloads a change the watcher cannot see; a second
/// SIGHUP with nothing changed does nothing.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_real_binary() {
    let (b, g) = blue_and_green().await;
    let slow_check = "reload:\n  check_interval: 1h\n";
    let proxy = BinProxy::start(&two_groups(50, 50, &b, &g, slow_check));
    let (p, a) = (proxy.proxy_addr, proxy.admin_addr);
    let path = proxy.config_path();
    let mut link = None;
    shift_is_served(p, a, || {
        link = Some(write_unseen(&path, &two_groups(0, 100, &b, &g, slow_check)));
        proxy.signal("HUP");
    })
    .await;
    let status = status_at(a).await;
    assert_eq!(status["config"]["reload"]["last_trigger"], "SIGHUP");
    proxy.signal("HUP");
    // Wait for the proof that this SIGHUP was read (not for a fixed time):
    // the reload status says the file matched what runs.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = status_at(a).await;
        if status["config"]["reload"]["last_result"] == "unchanged" {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second SIGHUP was never read: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status["config"]["reload"]["last_trigger"], "SIGHUP");
    assert_eq!(
        status["config"]["generation"], 2,
        "an unchanged file made a new generation"
    );
    assert_eq!(new_clients(p, 5).await, ["green"; 5]);
}

/// The periodic check finds what the watcher missed.
#[tokio::test]
async fn the_periodic_check_catches_unseen_changes() {
    let (b, g) = blue_and_green().await;
    let every = "reload:\n  check_interval: 1s\n";
    let w = Watched::start(&two_groups(50, 50, &b, &g, every)).await;
    let (p, a) = (w.running.proxy_addr, w.running.admin_addr);
    let _link = write_unseen(&w.path, &two_groups(0, 100, &b, &g, every));
    assert!(
        wait_generation(a, 2, Duration::from_secs(3)).await,
        "the periodic check missed it"
    );
    assert_eq!(
        status_at(a).await["config"]["reload"]["last_trigger"],
        "periodic check"
    );
    assert_eq!(new_clients(p, 5).await, ["green"; 5]);
}

/// Polls a counter until it reaches `want` or `within` passes.
async fn wait_metric(admin: std::net::SocketAddr, name: &str, want: f64) -> bool {
    let deadline = tokio::time::Instant::now() + WITHIN;
    while tokio::time::Instant::now() < deadline {
        if metric_at(admin, name).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    eprintln!("{name} never reached {want}:\n{}", scrape_at(admin).await);
    false
}

#[tokio::test]
async fn invalid_edits_keep_the_old_config_serving() {
    let (b, g) = blue_and_green().await;
    let good = two_groups(100, 0, &b, &g, "");
    let w = Watched::start(&good).await;
    let (p, a) = (w.running.proxy_addr, w.running.admin_addr);
    // (edit, path named, text of the line it must point at)
    let bad: [(String, &str, &str); 4] = [
        (good.replace("groups:\n", "groups: [\n"), "", "groups: ["),
        (
            good.replace("weight: 0", "weight: -1"),
            "groups.green.weight",
            "weight: -1",
        ),
        (
            good.replace("ttl: 1h", "ttl: 30d"),
            "sticky.ttl",
            "ttl: 30d",
        ),
        (
            good.replace("sticky:\n", "colour: green\nsticky:\n"),
            "colour",
            "colour: green",
        ),
    ];
    for (i, (text, path, line_text)) in bad.iter().enumerate() {
        write_by_rename(&w.path, text);
        let counter = "switchyard_config_reloads_total{result=\"invalid\"}";
        assert!(
            wait_metric(a, counter, (i + 1) as f64).await,
            "edit {i} was not counted as invalid"
        );
        assert_eq!(
            metric_at(a, "switchyard_config_last_reload_success").await,
            0.0
        );
        assert_eq!(
            new_clients(p, 5).await,
            ["blue"; 5],
            "edit {i} changed what is served"
        );
        let status = status_at(a).await;
        assert_eq!(status["config"]["generation"], 1);
        let err = &status["config"]["reload"]["last_error"];
        assert_eq!(status["config"]["reload"]["last_result"], "invalid");
        let first = &err["errors"][0];
        let want_line = text
            .lines()
            .position(|l| l.contains(line_text))
            .map(|n| n as u64 + 1);
        if !path.is_empty() {
            assert!(
                first["path"].as_str().is_some_and(|p| p.starts_with(path)),
                "edit {i}: {err}"
            );
        }
        assert_eq!(first["line"].as_u64(), want_line, "edit {i}: {err}");
    }
    write_by_rename(&w.path, &two_groups(0, 100, &b, &g, ""));
    assert!(
        wait_generation(a, 2, WITHIN).await,
        "the valid edit after bad ones was not applied"
    );
    assert_eq!(new_clients(p, 5).await, ["green"; 5]);
    assert_eq!(
        metric_at(a, "switchyard_config_last_reload_success").await,
        1.0
    );
    let status = status_at(a).await;
    assert_eq!(status["config"]["reload"]["last_result"], "ok");
    assert!(
        status["config"]["reload"]["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("colour")),
        "the last error stays readable after a success"
    );
}

#[tokio::test]
async fn a_listen_change_is_refused_whole() {
    let (b, g) = blue_and_green().await;
    let w = Watched::start(&two_groups(100, 0, &b, &g, "")).await;
    let (p, a) = (w.running.proxy_addr, w.running.admin_addr);
    let edit =
        two_groups(0, 100, &b, &g, "").replace("listen: 127.0.0.1:0", "listen: 127.0.0.1:18080");
    write_by_rename(&w.path, &edit);
    assert!(
        wait_metric(
            a,
            "switchyard_config_reloads_total{result=\"restart_required\"}",
            1.0
        )
        .await,
        "a listen change was not refused"
    );
    // The weight change in the same edit was not applied either.
    assert_eq!(new_clients(p, 5).await, ["blue"; 5]);
    let status = status_at(a).await;
    assert_eq!(status["config"]["generation"], 1);
    let e = &status["config"]["reload"]["last_error"]["errors"][0];
    assert_eq!(e["path"], "listen");
    assert_eq!(e["line"], 1);
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("needs a restart")),
        "{e}"
    );
    // Undoing the edit: the file matches what runs again, and the gauge says so.
    write_by_rename(&w.path, &two_groups(100, 0, &b, &g, ""));
    assert!(wait_metric(a, "switchyard_config_last_reload_success", 1.0).await);
    let status = status_at(a).await;
    assert_eq!(status["config"]["reload"]["last_result"], "unchanged");
    assert_eq!(status["config"]["generation"], 1);
}

/// Keys rotate live: a new signing key in front keeps old cookies valid; dropping
/// the old key voids the cookies it signed (the client is assigned anew).
#[tokio::test]
async fn keys_rotate_without_a_restart() {
    let (b, g) = blue_and_green().await;
    let base = two_groups(50, 50, &b, &g, "");
    let w = Watched::start(&base).await;
    let (p, a) = (w.running.proxy_addr, w.running.admin_addr);
    let old_pins = pinned_clients(p, 10).await;
    write_by_rename(
        &w.path,
        &base.replace("[env:TEST_KEY]", "[env:OTHER_KEY, env:TEST_KEY]"),
    );
    assert!(wait_generation(a, 2, WITHIN).await);
    assert_still_pinned(p, &old_pins).await;
    let new_pins = pinned_clients(p, 10).await;
    write_by_rename(&w.path, &base.replace("[env:TEST_KEY]", "[env:OTHER_KEY]"));
    assert!(wait_generation(a, 3, WITHIN).await);
    assert_still_pinned(p, &new_pins).await;
    let c = h1_client();
    let got = get(&c, &format!("http://{p}/"), Some(&old_pins[0].0)).await;
    assert!(
        got.set_cookie("switchyard").is_some(),
        "a cookie signed by a removed key was honoured"
    );
    assert_eq!(
        metric_at(
            a,
            "switchyard_cookie_rejected_total{reason=\"unknown_key\"}"
        )
        .await,
        1.0
    );
}

/// Timeouts are live too: a shorter upstream_response turns a slow answer into a 504.
#[tokio::test]
async fn timeouts_change_live() {
    let (b, g) = blue_and_green().await;
    let base = two_groups(100, 0, &b, &g, "");
    let w = Watched::start(&base).await;
    let (p, a) = (w.running.proxy_addr, w.running.admin_addr);
    let c = h1_client();
    assert_eq!(
        get(&c, &format!("http://{p}/slow?ms=600"), None)
            .await
            .status,
        200
    );
    write_by_rename(
        &w.path,
        &format!("{base}timeouts:\n  upstream_response: 200ms\n"),
    );
    assert!(wait_generation(a, 2, WITHIN).await);
    assert_eq!(
        get(&c, &format!("http://{p}/slow?ms=600"), None)
            .await
            .status,
        504
    );
}

/// A removed target's slow in-flight response completes; afterwards its pooled
/// connection is closed. A target that stays keeps its pooled connection.
#[tokio::test]
async fn removing_a_target_lets_its_slow_response_finish_then_closes_its_pool() {
    let (b1, b2, g) = (
        Upstream::start("blue-1").await,
        Upstream::start("blue-2").await,
        Upstream::start("green").await,
    );
    let yaml = |blue: &[&Upstream]| config_yaml(&[("blue", 100, blue), ("green", 0, &[&g])], "");
    let w = Watched::start(&yaml(&[&b1])).await;
    let (p, a) = (w.running.proxy_addr, w.running.admin_addr);
    let slow =
        tokio::spawn(
            async move { get(&h1_client(), &format!("http://{p}/slow?ms=1500"), None).await },
        );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b1.open_connections(), 1);
    write_by_rename(&w.path, &yaml(&[&b2]));
    assert!(wait_generation(a, 2, WITHIN).await);
    assert_eq!(new_clients(p, 5).await, ["blue-2"; 5]);
    let got = ok(slow.await, "slow request task");
    assert_eq!(
        got.status, 200,
        "the in-flight response to a removed target failed"
    );
    assert_eq!(&got.body[..], b"slow blue-1");
    let deadline = tokio::time::Instant::now() + WITHIN;
    while b1.open_connections() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        b1.open_connections(),
        0,
        "the removed target's pool was not closed"
    );
    // blue-2 stays through a weight edit: its pooled connection is reused.
    let before = b2.accepted_connections();
    write_by_rename(
        &w.path,
        &config_yaml(&[("blue", 90, &[&b2]), ("green", 0, &[&g])], ""),
    );
    assert!(wait_generation(a, 3, WITHIN).await);
    assert_eq!(new_clients(p, 5).await, ["blue-2"; 5]);
    assert_eq!(
        b2.accepted_connections(),
        before,
        "a kept target's pool was not reused"
    );
    // The removed target's series are gone from /metrics.
    let text = scrape_at(a).await;
    assert!(
        !text.contains(&b1.addr.to_string()),
        "stale series of a removed target"
    );
}

#[tokio::test]
async fn a_removed_group_leaves_no_series_and_the_hash_metric_follows_the_file() {
    let (b, g) = blue_and_green().await;
    let first = two_groups(50, 50, &b, &g, "");
    let w = Watched::start(&first).await;
    let (p, a) = (w.running.proxy_addr, w.running.admin_addr);
    let _ = new_clients(p, 20).await;
    let hash = |t: &str| {
        format!(
            "switchyard_config_hash_info{{sha256=\"{}\"}}",
            switchyard::reload::content_hash(t)
        )
    };
    assert_eq!(metric_at(a, &hash(&first)).await, 1.0);
    let second = config_yaml(&[("blue", 1, &[&b])], "");
    write_by_rename(&w.path, &second);
    assert!(wait_generation(a, 2, WITHIN).await);
    let text = scrape_at(a).await;
    assert!(
        !text.contains("group=\"green\""),
        "stale series of a removed group:\n{text}"
    );
    assert!(!text.contains(&switchyard::reload::content_hash(&first)));
    assert_eq!(metric_at(a, &hash(&second)).await, 1.0);
    assert_eq!(metric_at(a, "switchyard_config_generation").await, 2.0);
}

/// The acceptance run: 64 keep-alive clients busy for 20 s against the real
/// binary while the file is rewritten 50 times (weights shifting, a target added
/// and removed). No request may fail and generation must end at 51.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_under_load_drop_nothing() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const CLIENTS: usize = 64;
    const RELOADS: u64 = 50;
    const RUN: Duration = Duration::from_secs(20);

    let b1 = Upstream::start("blue-1").await;
    let b2 = Upstream::start("blue-2").await;
    let g = Upstream::start("green").await;
    let yaml = |i: u64| {
        let green = (i * 37 % 101) as u32;
        let blue: Vec<&Upstream> = if i % 2 == 1 {
            vec![&b1, &b2]
        } else {
            vec![&b1]
        };
        config_yaml(
            &[
                ("blue", 100 - green.min(99), &blue),
                ("green", green, &[&g]),
            ],
            "",
        )
    };
    let proxy = BinProxy::start(&yaml(0));
    let (p, a) = (proxy.proxy_addr, proxy.admin_addr);

    let (done, failed, non2xx) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let start = tokio::time::Instant::now();
    // Clients run for RUN, and on past the last reload if that comes late.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let (done, failed, non2xx) = (Arc::clone(&done), Arc::clone(&failed), Arc::clone(&non2xx));
        let stop = Arc::clone(&stop);
        clients.push(tokio::spawn(async move {
            // One keep-alive connection per client, like a browser tab.
            let stream = ok(tokio::net::TcpStream::connect(p).await, "connect");
            let (mut send, conn) = ok(
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await,
                "handshake",
            );
            tokio::spawn(conn);
            // Half the clients carry the cookie they were given (pinned), half never do.
            let mut cookie: Option<String> = None;
            while !stop.load(Ordering::Relaxed) {
                let mut req = http::Request::get("/").header("host", "load.test");
                if let Some(c) = &cookie {
                    req = req.header("cookie", c.as_str());
                }
                let req = ok(
                    req.body(http_body_util::Full::<bytes::Bytes>::default()),
                    "request",
                );
                let res = match send.ready().await {
                    Ok(()) => send.send_request(req).await,
                    Err(e) => Err(e),
                };
                match res {
                    Ok(resp) => {
                        if !resp.status().is_success() {
                            non2xx.fetch_add(1, Ordering::Relaxed);
                        }
                        if i % 2 == 0 && cookie.is_none() {
                            cookie = resp
                                .headers()
                                .get("set-cookie")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.split(';').next())
                                .map(str::to_owned);
                        }
                        let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }));
    }

    // Reload i is due at i * slot, so all 50 land inside the first 80% of the run.
    let path = proxy.config_path();
    let slot = RUN * 4 / 5 / RELOADS as u32;
    let mut applied = 1;
    for i in 1..=RELOADS {
        tokio::time::sleep_until(start + slot * i as u32).await;
        write_by_rename(&path, &yaml(i));
        if wait_generation(a, i + 1, Duration::from_secs(5)).await {
            applied = i + 1;
        } else {
            break;
        }
    }
    let reloads_took = start.elapsed();
    tokio::time::sleep_until(start + RUN).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        ok(c.await, "client task");
    }
    let (done, failed, non2xx) = (
        done.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        non2xx.load(Ordering::Relaxed),
    );
    eprintln!(
        "{done} requests, {failed} failed, {non2xx} non-2xx, generation {applied}, \
         50 reloads in {reloads_took:?}"
    );
    assert!(
        reloads_took < RUN,
        "the reloads did not all happen under load"
    );
    assert_eq!(applied, RELOADS + 1, "not every rewrite was applied");
    assert_eq!(failed, 0, "requests failed during reloads");
    assert_eq!(non2xx, 0, "non-2xx answers during reloads");
    assert!(
        done > CLIENTS * 20,
        "the load never got going ({done} requests)"
    );
    assert_eq!(metric_at(a, "switchyard_config_generation").await, 51.0);
    assert_eq!(
        metric_at(a, "switchyard_config_reloads_total{result=\"ok\"}").await,
        50.0
    );
    assert!(
        b2.hits() > 0 && g.hits() > 0,
        "the added target and the canary never served"
    );
}

/// A `file:` key rewritten in place of the old one (a Secret rotation) is seen
/// through the key file's directory, though proxy.yaml did not change.
#[tokio::test]
async fn a_rotated_key_file_is_noticed() {
    use std::sync::Arc;
    use switchyard::config::SystemKeys;
    let (b, g) = blue_and_green().await;
    let dir = ok(tempfile::tempdir(), "tempdir");
    let secrets = ok(tempfile::tempdir(), "tempdir");
    let key = secrets.path().join("cookie-key");
    ok(std::fs::write(&key, TEST_KEY), "write key");
    let yaml = two_groups(50, 50, &b, &g, "")
        .replace("[env:TEST_KEY]", &format!("[\"file:{}\"]", key.display()));
    let path = dir.path().join("proxy.yaml");
    ok(std::fs::write(&path, &yaml), "write config");
    let running = start_watching_with(&path, Arc::new(SystemKeys)).await;
    let (p, a) = (running.proxy_addr, running.admin_addr);
    let pinned = pinned_clients(p, 5).await;
    write_by_rename(&key, "b3RoZXIta2V5LXRoYXQtaXMtbG9uZy1lbm91Z2gtMzJi");
    assert!(
        wait_generation(a, 2, WITHIN).await,
        "the key rotation was not applied"
    );
    let status = status_at(a).await;
    let changes = status["config"]["reload"]["last_changes"].to_string();
    assert!(changes.contains("no old key remains"), "{changes}");
    let got = get(&h1_client(), &format!("http://{p}/"), Some(&pinned[0].0)).await;
    assert!(
        got.set_cookie("switchyard").is_some(),
        "a cookie of the old key was honoured"
    );
}
