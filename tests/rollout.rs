//! Rollouts run by the proxy itself, against real upstreams: a canary that
//! starts answering 500 (or slows down) mid-rollout is aborted and every
//! client of it is back on stable; a healthy one is promoted through every
//! step; pause, resume, promote, abort and retry from the admin API behind
//! its token; a restarted proxy resumes its step (state file); two replicas
//! sharing Redis agree on the step, sum their counts, and both see one
//! abort; edits of the plan while it runs; and every bad plan named with
//! its YAML path and line.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::redis_server::RedisServer;
use common::*;
use http_body_util::Full;
use switchyard::config::{self, ValidateOptions};

/// Steps short enough for a test: 20 % and 50 % held 1 s each, then 100 %.
/// The latency check is off (a factor of 1000) but where it is the subject:
/// the p99 of 20 requests is their slowest, and a test machine that stalls
/// one of them would abort a healthy canary.
const PLAN: &str = "\
admin_token: env:ADMIN_TOKEN
rollout:
  stable: blue
  canary: green
  steps: [{weight: 20, hold: 1s}, {weight: 50, hold: 1s}, {weight: 100}]
  analysis: {interval: 300ms, min_requests: 20, failures_to_abort: 2, max_latency_over_stable: 1000}
";

fn plan_yaml(b: &Upstream, g: &Upstream, plan: &str) -> String {
    config_yaml(&[("blue", 100, &[b]), ("green", 0, &[g])], plan)
}

/// The first rollout of `/status`.
async fn rollout_at(admin: std::net::SocketAddr) -> serde_json::Value {
    status_at(admin).await["rollouts"][0].clone()
}

/// Polls the first rollout until `ok` holds of it (its value), or panics
/// after `within` with what it was.
async fn wait_rollout(
    admin: std::net::SocketAddr,
    within: Duration,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let r = rollout_at(admin).await;
        if ok(&r) {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: never happened within {within:?}; the rollout: {r:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn state_is(r: &serde_json::Value, state: &str) -> bool {
    r["status"]["state"] == state
}

/// A pinned client: its cookie, and the upstream that served it last.
type Pinned = (Option<String>, String);

/// Clients of a proxy while a test runs: new ones (no cookie) and a
/// crowd that keeps its cookies, each remembering where it was served.
struct Traffic {
    stop: Arc<AtomicBool>,
    pinned: Arc<Mutex<Vec<Pinned>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    fn start(addr: std::net::SocketAddr, loops: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let pinned = Arc::new(Mutex::new(vec![(None, String::new()); 40]));
        let tasks = (0..loops)
            .map(|n| {
                let stop = Arc::clone(&stop);
                let pinned = Arc::clone(&pinned);
                tokio::spawn(async move {
                    let c = h1_client();
                    let url = format!("http://{addr}/");
                    let mut i = n;
                    while !stop.load(Ordering::Relaxed) {
                        i += loops;
                        if i % 2 == 0 {
                            get(&c, &url, None).await;
                            continue;
                        }
                        let k = (i / 2) % 40;
                        let cookie = pinned.lock().map(|p| p[k].0.clone()).unwrap_or_default();
                        let got = get(&c, &url, cookie.as_deref()).await;
                        if let Ok(mut p) = pinned.lock() {
                            if let Some(v) = got.set_cookie("switchyard") {
                                p[k].0 = Some(format!("switchyard={v}"));
                            }
                            p[k].1 = got.upstream().to_owned();
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            pinned,
            tasks,
        }
    }

    async fn stop(self) -> Vec<Pinned> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        self.pinned.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

/// Where each pinned client's next request goes, and where 40 new ones go.
async fn where_clients_go(addr: std::net::SocketAddr, pinned: &[Pinned]) -> Vec<String> {
    let c = h1_client();
    let url = format!("http://{addr}/");
    let mut out = Vec::new();
    for (cookie, _) in pinned {
        out.push(get(&c, &url, cookie.as_deref()).await.upstream().to_owned());
    }
    for _ in 0..40 {
        out.push(get(&c, &url, None).await.upstream().to_owned());
    }
    out
}

async fn post(admin: std::net::SocketAddr, path: &str, token: Option<&str>) -> Got {
    let mut b = http::Request::post(format!("http://{admin}{path}"));
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    send(&h1_client(), ok(b.body(Full::default()), "request")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_starts_answering_500_is_aborted_and_no_client_is_left_on_it() {
    let (blue, green) = blue_and_green().await;
    let proxy = start_proxy(&plan_yaml(&blue, &green, PLAN)).await;
    let traffic = Traffic::start(proxy.proxy_addr, 4);
    wait_rollout(proxy.admin_addr, Duration::from_secs(15), "step 2", |r| {
        r["status"]["step"] == 2
    })
    .await;
    let on_green = traffic
        .pinned
        .lock()
        .map(|p| p.iter().filter(|(_, u)| u == "green").count())
        .unwrap_or(0);
    assert!(on_green > 0, "some pinned clients were on the canary");
    green.fail_with(500);
    let broke = tokio::time::Instant::now();
    let r = wait_rollout(proxy.admin_addr, Duration::from_secs(10), "abort", |r| {
        state_is(r, "aborted")
    })
    .await;
    // Two failed intervals of 300 ms, plus the tick that closes each: about
    // a second (the bound leaves room for a loaded CI machine).
    assert!(
        broke.elapsed() < Duration::from_secs(6),
        "{:?}",
        broke.elapsed()
    );
    let reason = r["status"]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("error_ratio") || reason.contains("canary_up"),
        "{reason}"
    );
    assert_eq!(r["status"]["canary_weight_percent"], 0.0);
    let pinned = traffic.stop().await;
    let hits = green.hits();
    let went = where_clients_go(proxy.proxy_addr, &pinned).await;
    assert!(went.iter().all(|u| u == "blue"), "{went:?}");
    assert_eq!(green.hits(), hits, "nothing more reached the canary");
    assert_eq!(
        metric(
            &proxy,
            "switchyard_rollout_state{route=\"default\",state=\"aborted\"}"
        )
        .await,
        1.0
    );
    assert!(
        metric(
            &proxy,
            "switchyard_rollout_analysis_total{check=\"error_ratio\",result=\"pass\",route=\"default\"}"
        )
        .await
            >= 1.0,
        "the healthy intervals were judged too"
    );
    let split = &status_at(proxy.admin_addr).await["routes"][0]["split"];
    assert_eq!(split[1]["drain"], true, "the canary is drained: {split}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_slows_down_is_aborted_on_its_latency() {
    let (blue, green) = blue_and_green().await;
    let plan = PLAN.replace("min_requests: 20", "min_requests: 5").replace(
        "max_latency_over_stable: 1000",
        "max_latency_over_stable: 1.5",
    );
    let proxy = start_proxy(&plan_yaml(&blue, &green, &plan)).await;
    let traffic = Traffic::start(proxy.proxy_addr, 8);
    wait_rollout(
        proxy.admin_addr,
        Duration::from_secs(15),
        "a verdict",
        |r| r["status"]["last_verdict"]["passed"] == true,
    )
    .await;
    green.slow_down(150);
    let r = wait_rollout(proxy.admin_addr, Duration::from_secs(15), "abort", |r| {
        state_is(r, "aborted")
    })
    .await;
    let reason = r["status"]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("latency_over_stable"), "{reason}");
    let pinned = traffic.stop().await;
    let went = where_clients_go(proxy.proxy_addr, &pinned).await;
    assert!(went.iter().all(|u| u == "blue"), "{went:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_is_promoted_through_every_step() {
    let (blue, green) = blue_and_green().await;
    let proxy = start_proxy(&plan_yaml(&blue, &green, PLAN)).await;
    let traffic = Traffic::start(proxy.proxy_addr, 4);
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        assert!(tokio::time::Instant::now() < deadline, "{seen:?}");
        let st = status_at(proxy.admin_addr).await;
        let r = &st["rollouts"][0]["status"];
        let step = (r["step"].as_u64().unwrap_or(0), r["state"].clone());
        let weights: Vec<u64> = st["routes"][0]["split"]
            .as_array()
            .map(|s| s.iter().filter_map(|g| g["weight"].as_u64()).collect())
            .unwrap_or_default();
        // The two parts of /status are read a moment apart: a step can
        // change between them. Only a document that agrees with itself counts.
        let canary_bp = r["canary_weight_percent"]
            .as_f64()
            .map(|p| (p * 100.0).round() as u64);
        if weights.get(1).copied() != canary_bp {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        if seen.last().map(|(s, _)| s) != Some(&step) {
            seen.push((step.clone(), weights));
        }
        if r["state"] == "promoted" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let steps: Vec<u64> = seen.iter().map(|((s, _), _)| *s).collect();
    assert_eq!(&steps[..3], [1, 2, 3], "every step in turn: {seen:?}");
    // The split in force at each step (basis points: blue, green).
    assert_eq!(seen[0].1, [8000, 2000], "{seen:?}");
    assert_eq!(seen[1].1, [5000, 5000], "{seen:?}");
    assert_eq!(seen[2].1, [0, 10000], "{seen:?}");
    let pinned = traffic.stop().await;
    let went = where_clients_go(proxy.proxy_addr, &pinned).await;
    assert!(
        went.iter().all(|u| u == "green"),
        "promoted, blue drained: {went:?}"
    );
    // Clients pinned to blue were there, and the drain moved them.
    let moved = series_at(
        proxy.admin_addr,
        "switchyard_assignments_total{group=\"green\",reason=\"reassigned\",route=\"default\"}",
    )
    .await;
    assert!(moved > 0.0, "no client pinned to blue was moved to green");
    assert_eq!(
        metric(
            &proxy,
            "switchyard_rollout_canary_weight_ratio{route=\"default\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_steers_a_rollout_behind_its_token() {
    let (blue, green) = blue_and_green().await;
    let plan = PLAN.replace(
        "{weight: 20, hold: 1s}",
        "{weight: 20, hold: 1s, pause: true}",
    );
    let proxy = start_proxy(&plan_yaml(&blue, &green, &plan)).await;
    let admin = proxy.admin_addr;
    for path in ["/rollouts/default/abort", "/rollouts/default/pause"] {
        assert_eq!(post(admin, path, None).await.status, 401);
        assert_eq!(post(admin, path, Some("wrong")).await.status, 401);
    }
    let lower = http::Request::get(format!("http://{admin}/rollouts"))
        .header("authorization", format!("bearer {ADMIN_TOKEN}"))
        .body(Full::default());
    assert_eq!(
        send(&h1_client(), ok(lower, "request")).await.status,
        200,
        "the scheme is case-insensitive"
    );
    let unauth = get(&h1_client(), &format!("http://{admin}/rollouts"), None).await;
    assert_eq!(unauth.status, 401);
    assert!(unauth.headers.contains_key("www-authenticate"));
    let traffic = Traffic::start(proxy.proxy_addr, 2);
    let t = Some(ADMIN_TOKEN);
    wait_rollout(
        admin,
        Duration::from_secs(10),
        "waiting at the pause step",
        |r| state_is(r, "waiting") && r["status"]["last_verdict"]["passed"] == true,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rollout_at(admin).await["status"]["step"],
        1,
        "a pause step waits"
    );
    assert_eq!(post(admin, "/rollouts/default/resume", t).await.status, 200);
    wait_rollout(admin, Duration::from_secs(10), "step 2", |r| {
        r["status"]["step"] == 2
    })
    .await;
    let paused = post(admin, "/rollouts/default/pause", t).await;
    assert_eq!(paused.status, 200);
    let body: serde_json::Value = ok(serde_json::from_slice(&paused.body), "json");
    assert_eq!(body["status"]["state"], "paused");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = rollout_at(admin).await;
    assert_eq!(
        (r["status"]["step"].clone(), r["status"]["state"].clone()),
        (2.into(), "paused".into())
    );
    assert_eq!(post(admin, "/rollouts/default/retry", t).await.status, 409);
    assert_eq!(post(admin, "/rollouts/nope/abort", t).await.status, 404);
    assert_eq!(
        post(admin, "/rollouts/default/explode", t).await.status,
        404
    );
    assert_eq!(post(admin, "/rollouts/default/abort", t).await.status, 200);
    let r = rollout_at(admin).await;
    assert!(state_is(&r, "aborted"), "{r:#}");
    assert_eq!(
        post(admin, "/rollouts/default/promote", t).await.status,
        409
    );
    assert_eq!(post(admin, "/rollouts/default/retry", t).await.status, 200);
    let r = rollout_at(admin).await;
    assert_eq!(
        (r["status"]["step"].clone(), r["status"]["state"].clone()),
        (1.into(), "waiting".into())
    );
    assert_eq!(
        post(admin, "/rollouts/default/promote", t).await.status,
        200
    );
    let pinned = traffic.stop().await;
    let went = where_clients_go(proxy.proxy_addr, &pinned).await;
    assert!(went.iter().all(|u| u == "green"), "{went:?}");
}

#[tokio::test]
async fn without_an_admin_token_the_rollout_api_is_off() {
    let (blue, green) = blue_and_green().await;
    let plan = PLAN.replace("admin_token: env:ADMIN_TOKEN\n", "");
    let proxy = start_proxy(&plan_yaml(&blue, &green, &plan)).await;
    let got = post(
        proxy.admin_addr,
        "/rollouts/default/abort",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(got.status, 403);
    assert!(String::from_utf8_lossy(&got.body).contains("admin_token"));
    let r = rollout_at(proxy.admin_addr).await;
    assert!(state_is(&r, "progressing"), "/status still shows it: {r:#}");
}

/// Writes `admin_token: file:` into a BinProxy's config directory; the
/// file ends in a space and a newline, as an editor may leave it, and
/// every side that reads it trims them.
fn bin_config(dir: &std::path::Path, b: &Upstream, g: &Upstream) -> std::path::PathBuf {
    let token = dir.join("admin.token");
    ok(
        std::fs::write(&token, format!("{ADMIN_TOKEN} \n")),
        "write token",
    );
    let plan = PLAN
        .replace("env:ADMIN_TOKEN", &format!("file:{}", token.display()))
        .replace("{weight: 50, hold: 1s}", "{weight: 50, hold: 1h}");
    let path = dir.join("proxy.yaml");
    ok(
        std::fs::write(&path, plan_yaml(b, g, &plan)),
        "write config",
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_proxy_resumes_the_step_it_was_on() {
    let (blue, green) = blue_and_green().await;
    let dir = ok(tempfile::tempdir(), "tempdir");
    let path = bin_config(dir.path(), &blue, &green);
    let mut first = BinProxy::start_at(ok(tempfile::tempdir(), "tempdir"), &path);
    let traffic = Traffic::start(first.proxy_addr, 2);
    wait_rollout(first.admin_addr, Duration::from_secs(15), "step 2", |r| {
        r["status"]["step"] == 2
    })
    .await;
    traffic.stop().await;
    let before = rollout_at(first.admin_addr).await["status"].clone();
    let log = first
        .wait_log(
            "rollout default: step 1/3 (canary 20%) -> step 2/3 (canary 50%): checks held",
            Duration::from_secs(1),
        )
        .await;
    assert!(
        log.contains("error_ratio"),
        "the figures that decided it: {log}"
    );
    first.signal("TERM");
    let _ = first.child.wait();
    let state = path.with_extension("rollout.json");
    let saved: serde_json::Value = ok(
        serde_json::from_slice(&ok(std::fs::read(&state), "state file")),
        "state json",
    );
    assert_eq!(saved["default"]["step"], 1, "{saved:#}");
    let mut second = BinProxy::start_at(ok(tempfile::tempdir(), "tempdir"), &path);
    // The first answer already has the step: no request served the YAML's 100/0.
    let st = status_at(second.admin_addr).await;
    let r = &st["rollouts"][0]["status"];
    assert_eq!(r["step"], 2, "{r:#}");
    assert_eq!(r["step_started_unix_ms"], before["step_started_unix_ms"]);
    assert_eq!(st["routes"][0]["split"][1]["weight"], 5000);
    let got = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["rollout", "status", "--admin"])
        .arg(second.admin_addr.to_string())
        .arg("--config")
        .arg(&path)
        .env("TEST_KEY", TEST_KEY)
        .output();
    let got = ok(got, "switchyard rollout status");
    let out = String::from_utf8_lossy(&got.stdout);
    assert!(
        got.status.success(),
        "{out} {}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert!(out.contains("progressing at step 2/3 (canary 50"), "{out}");
    // The token file ends in " \n"; the bare token is what a client sends.
    let req = ok(
        http::Request::get(format!("http://{}/rollouts", second.admin_addr))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .body(Full::default()),
        "request",
    );
    assert_eq!(
        send(&h1_client(), req).await.status,
        200,
        "the trimmed token is refused"
    );
    let check = ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["check", "--no-secrets"])
            .arg(&path)
            .output(),
        "switchyard check",
    );
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(
        out.contains("rollout on route default: blue -> green"),
        "{out}"
    );
    assert!(out.contains("progressing at step 2/3"), "{out}");
    let aborted = ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["rollout", "abort", "--admin"])
            .arg(second.admin_addr.to_string())
            .arg("--config")
            .arg(&path)
            .output(),
        "switchyard rollout abort",
    );
    let out = String::from_utf8_lossy(&aborted.stdout);
    assert!(out.contains("aborted at step 2/3"), "{out}");
    second.signal("TERM");
    let _ = second.child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_sharing_redis_agree_on_the_step_and_both_see_one_abort() {
    let r = RedisServer::start().await;
    let (blue, green) = blue_and_green().await;
    let plan = PLAN.replace(
        "{weight: 50, hold: 1s}",
        "{weight: 50, hold: 1s, pause: true}",
    );
    let url = r.url();
    let yaml = plan_yaml(&blue, &green, &plan).replace(
        "  keys: [env:TEST_KEY]\n",
        &format!("  keys: [env:TEST_KEY]\n  store:\n    type: redis\n    url: {url}\n    key_prefix: \"r:\"\n"),
    );
    let a = start_proxy(&yaml).await;
    let b = start_proxy(&yaml).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let leaders = [
        metric(&a, "switchyard_rollout_leader").await,
        metric(&b, "switchyard_rollout_leader").await,
    ];
    assert_eq!(
        leaders.iter().sum::<f64>(),
        1.0,
        "exactly one leads: {leaders:?}"
    );
    let (leader, follower) = if leaders[0] == 1.0 {
        (&a, &b)
    } else {
        (&b, &a)
    };
    // Traffic through the follower only: the leader judges the counts it
    // sends to Redis, so the plan can only advance if they are summed.
    let traffic = Traffic::start(follower.proxy_addr, 4);
    let r_leader = wait_rollout(
        leader.admin_addr,
        Duration::from_secs(15),
        "step 2 on the leader",
        |r| state_is(r, "waiting") && r["status"]["step"] == 2,
    )
    .await;
    assert!(
        r_leader["status"]["last_verdict"]["canary_requests"].as_u64() >= Some(20),
        "{r_leader:#}"
    );
    let r_follower = wait_rollout(
        follower.admin_addr,
        Duration::from_secs(3),
        "step 2 on the follower",
        |r| r["status"]["step"] == 2,
    )
    .await;
    // The same run at the same step (verdicts go on while it waits, so
    // the figures of the last one may differ by the time each is read).
    let key = |r: &serde_json::Value| {
        let s = &r["status"];
        [
            s["state"].clone(),
            s["step"].clone(),
            s["canary_weight_percent"].clone(),
            s["started_unix_ms"].clone(),
            s["step_started_unix_ms"].clone(),
        ]
    };
    assert_eq!(key(&r_follower), key(&r_leader), "one state for both");
    assert_eq!(r_follower["leader"], false);
    // One abort, sent to the replica that does not lead: both see it.
    assert_eq!(
        post(
            follower.admin_addr,
            "/rollouts/default/abort",
            Some(ADMIN_TOKEN)
        )
        .await
        .status,
        200
    );
    for p in [leader, follower] {
        wait_rollout(p.admin_addr, Duration::from_secs(3), "abort on both", |r| {
            state_is(r, "aborted")
        })
        .await;
    }
    let pinned = traffic.stop().await;
    for p in [leader, follower] {
        let went = where_clients_go(p.proxy_addr, &pinned).await;
        assert!(went.iter().all(|u| u == "blue"), "{went:?}");
    }
    let mut conn = r.conn().await;
    let stored: String = ok(
        redis::AsyncCommands::get(&mut conn, "r:rollout:default").await,
        "GET",
    );
    assert!(stored.contains("\"phase\":\"aborted\""), "{stored}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_of_a_running_plan_apply_as_documented() {
    let (blue, green) = blue_and_green().await;
    let plan = PLAN.replace("{weight: 50, hold: 1s}", "{weight: 50, hold: 1h}");
    let w = Watched::start(&plan_yaml(&blue, &green, &plan)).await;
    let admin = w.running.admin_addr;
    let traffic = Traffic::start(w.running.proxy_addr, 2);
    wait_rollout(admin, Duration::from_secs(15), "step 2", |r| {
        r["status"]["step"] == 2
    })
    .await;
    // New steps: the one in force keeps its weight until it ends.
    let edited = plan.replace("{weight: 50, hold: 1h}", "{weight: 60, hold: 1h}");
    write_by_rename(&w.path, &plan_yaml(&blue, &green, &edited));
    wait_rollout(admin, Duration::from_secs(5), "the new plan", |r| {
        r["steps"][1]["weight_percent"] == 60.0
    })
    .await;
    let st = status_at(admin).await;
    let said = st["config"]["reload"]["last_changes"].to_string();
    assert!(
        said.contains(
            "route default: rollout plan changed (blue -> green: 20% for 1s, 60% for 1h, 100%)"
        ),
        "{said}"
    );
    assert_eq!(st["rollouts"][0]["status"]["step"], 2);
    assert_eq!(st["routes"][0]["split"][1]["weight"], 5000, "{st:#}");
    // Without `rollout`, the YAML's weights are back.
    let gone = plan_yaml(&blue, &green, "admin_token: env:ADMIN_TOKEN\n");
    write_by_rename(&w.path, &gone);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let st = status_at(admin).await;
        let split = &st["routes"][0]["split"];
        if st["rollouts"].as_array().is_some_and(Vec::is_empty)
            && split[0]["weight"] == 100
            && split[1]["weight"] == 0
        {
            let said = st["config"]["reload"]["last_changes"].to_string();
            assert!(said.contains("route default: rollout removed"), "{said}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{st:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pinned = traffic.stop().await;
    // A plan put back starts again from its first step.
    write_by_rename(&w.path, &plan_yaml(&blue, &green, &plan));
    let r = wait_rollout(admin, Duration::from_secs(5), "a new start", |r| {
        !r["status"].is_null()
    })
    .await;
    assert_eq!(r["status"]["step"], 1, "{r:#}");
    drop(pinned);
}

#[tokio::test]
async fn a_state_file_that_cannot_be_written_holds_the_yaml_weights_and_says_why() {
    let (blue, green) = blue_and_green().await;
    let plan = format!("rollout_state_file: /proc/no-such-dir/state.json\n{PLAN}");
    let proxy = start_proxy(&plan_yaml(&blue, &green, &plan)).await;
    let r = rollout_at(proxy.admin_addr).await;
    assert!(r["status"].is_null(), "not started: {r:#}");
    let why = r["store_error"].as_str().unwrap_or("");
    assert!(why.contains("/proc/no-such-dir/state.json"), "{r:#}");
    let split = &status_at(proxy.admin_addr).await["routes"][0]["split"];
    assert_eq!(
        (split[0]["weight"].clone(), split[1]["weight"].clone()),
        (100.into(), 0.into())
    );
}

#[test]
fn check_names_a_bad_plan_with_its_path_and_line_and_fails() {
    let (dir, path) = {
        let dir = ok(tempfile::tempdir(), "tempdir");
        let path = dir.path().join("proxy.yaml");
        (dir, path)
    };
    let yaml = "listen: 127.0.0.1:0\nsticky:\n  ttl: 1h\n  keys: [env:TEST_KEY]\ngroups:\n  blue: {weight: 100, targets: [{address: 127.0.0.1:1}]}\n  green: {weight: 0, targets: [{address: 127.0.0.1:2}]}\nrollout:\n  stable: blue\n  canary: green\n  steps:\n    - {weight: 10, hold: 1m}\n    - {weight: 150}\n";
    ok(std::fs::write(&path, yaml), "write config");
    let out = ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("check")
            .arg(&path)
            .env("TEST_KEY", TEST_KEY)
            .output(),
        "switchyard check",
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("rollout.steps[1].weight"), "{said}");
    assert!(said.contains("line 13"), "{said}");
    drop(dir);
}

/// `base` (groups with weights) in the routes form, with `routes` after it.
fn routes_form(base: &str, routes: &str) -> String {
    base.replace("weight: 100, ", "")
        .replace("weight: 0, drain: true, ", "")
        .replace("weight: 0, ", "")
        + routes
}

/// Each bad plan, and the path and line `check` must name.
#[test]
fn bad_plans_are_named_with_their_path_and_line() {
    let base = "listen: 127.0.0.1:0\nsticky:\n  ttl: 1h\n  keys: [env:TEST_KEY]\ngroups:\n  blue: {weight: 100, targets: [{address: 127.0.0.1:1}]}\n  green: {weight: 0, targets: [{address: 127.0.0.1:2}]}\n  red: {weight: 0, drain: true, targets: [{address: 127.0.0.1:3}]}\n";
    let cases: &[(&str, &str, u64, &str)] = &[
        (
            "rollout:\n  stable: blue\n  canary: nosuch\n  steps: [{weight: 5}]\n",
            "rollout.canary",
            10,
            "no group named `nosuch`",
        ),
        (
            "rollout:\n  stable: blue\n  canary: blue\n  steps: [{weight: 5}]\n",
            "rollout.canary",
            10,
            "another group than stable",
        ),
        (
            "rollout:\n  stable: blue\n  canary: green\n  steps: [{weight: 5}, {weight: 101}]\n",
            "rollout.steps[1].weight",
            11,
            "percent from 0 to 100",
        ),
        (
            "rollout:\n  stable: blue\n  canary: green\n  steps: [{weight: 50}, {weight: 10}]\n",
            "rollout.steps[1].weight",
            11,
            "only grows",
        ),
        (
            "rollout:\n  stable: blue\n  canary: green\n  steps: [{weight: 5}]\n  analysis:\n    max_error_ratio: 1.5\n",
            "rollout.analysis.max_error_ratio",
            13,
            "ratio from 0 to 1",
        ),
        (
            "rollout:\n  stable: blue\n  canary: green\n  steps: [{weight: 5}]\n  analysis:\n    max_latency_over_stable: 0.5\n",
            "rollout.analysis.max_latency_over_stable",
            13,
            "factor from 1",
        ),
        (
            "rollout:\n  stable: blue\n  canary: green\n  steps: [{weight: 5}]\n  analysis:\n    quantile: 1.2\n",
            "rollout.analysis.quantile",
            13,
            "quantile from 0.5",
        ),
        (
            "rollout:\n  stable: blue\n  canary: green\n  steps: [{weight: 5}]\n  analysis:\n    failures_to_abort: 0\n",
            "rollout.analysis.failures_to_abort",
            13,
            "from 1 to 1000",
        ),
        (
            "rollout:\n  stable: blue\n  canary: green\n  steps: []\n",
            "rollout.steps",
            11,
            "at least one step",
        ),
    ];
    let check = |yaml: &str| {
        config::load_str(yaml, "t.yaml", &test_keys(), ValidateOptions::default())
            .err()
            .map(|e| e.errors)
            .unwrap_or_default()
    };
    for (plan, path, line, words) in cases {
        // Two groups only: red is out of the split for these.
        let yaml = format!(
            "{}{plan}",
            base.replace(
                "  red: {weight: 0, drain: true, targets: [{address: 127.0.0.1:3}]}\n",
                ""
            )
        );
        let errs = check(&yaml);
        let e = errs
            .iter()
            .find(|e| e.path == *path)
            .unwrap_or_else(|| panic!("{path} not named for\n{plan}\ngot: {errs:?}"));
        assert_eq!(e.line, Some(*line), "{path}: {e:?}");
        assert!(e.message.contains(words), "{path}: {}", e.message);
    }
    // Abort needs a stable group to go back to: a draining one is none.
    let routes = "routes:\n  - name: web\n    split: {blue: 100, green: 5}\n    drain: [blue]\n    rollout: {stable: blue, canary: green, steps: [{weight: 5}]}\n";
    let yaml = routes_form(base, routes);
    let errs = check(&yaml);
    let e = errs
        .iter()
        .find(|e| e.path == "routes[0].rollout.stable")
        .unwrap_or_else(|| panic!("{errs:?}"));
    assert!(
        e.message.contains("no stable group to return"),
        "{}",
        e.message
    );
    assert_eq!(e.line, Some(13));
    // Only the two groups in the split.
    let routes = "routes:\n  - name: web\n    split: {green: 0, blue: 100, red: 5}\n    rollout: {stable: blue, canary: green, steps: [{weight: 5}]}\n";
    let yaml = routes_form(base, routes);
    let errs = check(&yaml);
    let msgs: Vec<&str> = errs.iter().map(|e| e.message.as_str()).collect();
    assert!(
        msgs.iter().any(|m| m.contains("also has `red`")),
        "{msgs:?}"
    );
    // Either order of the two is fine: the canary's slice grows from its end.
    let routes = "routes:\n  - name: web\n    split: {green: 0, blue: 100}\n    rollout: {stable: blue, canary: green, steps: [{weight: 5}]}\n";
    let yaml = routes_form(base, routes);
    assert!(check(&yaml).is_empty(), "{:?}", check(&yaml));
    // A rollout at the top of a routes config belongs under its route.
    let yaml = routes_form(
        base,
        "routes:\n  - name: web\n    split: {blue: 100, green: 0}\nrollout: {stable: blue, canary: green, steps: [{weight: 5}]}\n",
    );
    let errs = check(&yaml);
    assert!(
        errs.iter()
            .any(|e| e.path == "rollout" && e.line == Some(12)),
        "{errs:?}"
    );
}

/// `switchyard rollout reset` of the default route, through the admin API.
async fn reset(admin: std::net::SocketAddr) {
    let got = post(admin, "/rollouts/default/reset", Some(ADMIN_TOKEN)).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
}

/// An aborted rollout whose state file is then truncated, emptied or
/// garbled, across a restart: the plan is held on its YAML split (no
/// canary re-opened), `/status` and a metric say why, the file is left as
/// it was with a copy aside, `check` fails naming the parse error, and only
/// `switchyard rollout reset` (or deleting the file) starts it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_state_file_holds_the_plan_until_reset() {
    let (blue, green) = blue_and_green().await;
    let dir = ok(tempfile::tempdir(), "tempdir");
    let path = bin_config(dir.path(), &blue, &green);
    let state = path.with_extension("rollout.json");
    let first = BinProxy::start_at(ok(tempfile::tempdir(), "tempdir"), &path);
    wait_rollout(first.admin_addr, Duration::from_secs(10), "started", |r| {
        r["status"]["step"] == 1
    })
    .await;
    let aborted = post(
        first.admin_addr,
        "/rollouts/default/abort",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(aborted.status, 200);
    first.signal("TERM");
    drop(first);
    let good = ok(std::fs::read(&state), "state file");
    let unreadable = "switchyard_rollout_state_unreadable{route=\"default\"}";
    for (case, bytes) in [
        ("truncated", good[..good.len() / 2].to_vec()),
        ("empty", Vec::new()),
        ("garbage", b"\x00\xffnot json".to_vec()),
    ] {
        ok(std::fs::write(&state, &bytes), "corrupt the state file");
        let check = ok(
            std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
                .args(["check", "--no-secrets"])
                .arg(&path)
                .output(),
            "switchyard check",
        );
        assert!(
            !check.status.success(),
            "{case}: check passed an unreadable state file"
        );
        let err = String::from_utf8_lossy(&check.stderr);
        assert!(
            err.contains("rollout state file is not readable"),
            "{case}: {err}"
        );

        let proxy = BinProxy::start_at(ok(tempfile::tempdir(), "tempdir"), &path);
        let (p, a) = (proxy.proxy_addr, proxy.admin_addr);
        // Two ticks at least (300 ms / 4 each): nothing moves meanwhile.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let r = rollout_at(a).await;
        let held = r["held"].as_str().unwrap_or_default();
        assert!(held.contains("not readable"), "{case}: {r:#}");
        assert!(
            r["status"].is_null(),
            "{case}: a held plan has no step: {r:#}"
        );
        assert_eq!(series_at(a, unreadable).await, 1.0, "{case}");
        let c = h1_client();
        for _ in 0..40 {
            assert_eq!(
                get(&c, &format!("http://{p}/"), None).await.upstream(),
                "blue",
                "{case}"
            );
        }
        assert_eq!(
            ok(std::fs::read(&state), "state"),
            bytes,
            "{case}: the file was written"
        );
        let kept = ok(std::fs::read_dir(dir.path()), "list")
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().contains(".unreadable-"));
        assert!(kept, "{case}: no copy kept aside");
        if case == "empty" {
            // Deleting the file ends the hold: the plan starts afresh.
            ok(std::fs::remove_file(&state), "delete the state file");
        } else {
            reset(a).await;
        }
        let r = wait_rollout(a, Duration::from_secs(10), "resumed", |r| {
            r["held"].is_null() && state_is(r, "progressing")
        })
        .await;
        assert_eq!(r["status"]["step"], 1, "{case}: {r:#}");
        assert_eq!(series_at(a, unreadable).await, 0.0, "{case}");
        let saved = ok(std::fs::read(&state), "state after the hold");
        let saved: serde_json::Value = ok(serde_json::from_slice(&saved), "readable again");
        assert_eq!(
            saved["default"]["phase"], "progressing",
            "{case}: {saved:#}"
        );
        proxy.signal("TERM");
        drop(proxy);
        ok(std::fs::write(&state, &good), "the aborted state again");
    }
}

/// A Redis record that is not the rollout's JSON is held the same way, in
/// place: the YAML split serves, `/status` says why, and `reset` deletes
/// it and starts the plan again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_redis_record_holds_the_plan_until_reset() {
    let r = RedisServer::start().await;
    let (blue, green) = blue_and_green().await;
    let url = r.url();
    let yaml = plan_yaml(&blue, &green, PLAN).replace(
        "  keys: [env:TEST_KEY]\n",
        &format!("  keys: [env:TEST_KEY]\n  store:\n    type: redis\n    url: {url}\n    key_prefix: \"h:\"\n"),
    );
    let mut conn = r.conn().await;
    let _: () = ok(
        redis::cmd("SET")
            .arg("h:rollout:default")
            .arg("{\"phase\": tru")
            .query_async(&mut conn)
            .await,
        "garble the record",
    );
    let proxy = start_proxy(&yaml).await;
    let a = proxy.admin_addr;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let rec = rollout_at(a).await;
    assert!(
        rec["held"]
            .as_str()
            .unwrap_or_default()
            .contains("not readable"),
        "{rec:#}"
    );
    assert_eq!(
        series_at(a, "switchyard_rollout_state_unreadable{route=\"default\"}").await,
        1.0
    );
    let c = h1_client();
    for _ in 0..20 {
        assert_eq!(
            get(&c, &format!("http://{}/", proxy.proxy_addr), None)
                .await
                .upstream(),
            "blue"
        );
    }
    let kept: String = ok(
        redis::cmd("GET")
            .arg("h:rollout:default")
            .query_async(&mut conn)
            .await,
        "read the record",
    );
    assert_eq!(
        kept, "{\"phase\": tru",
        "the unreadable record was overwritten"
    );
    reset(a).await;
    let rec = wait_rollout(a, Duration::from_secs(5), "resumed", |r| {
        r["held"].is_null()
    })
    .await;
    assert_eq!(rec["status"]["step"], 1, "{rec:#}");
}

/// A header of a raw response, lowercased name.
fn header_of<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    resp.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A client at loopback address `ip` pinned to `group`: its cookie pair.
async fn pinned_at(ip: std::net::Ipv4Addr, p: std::net::SocketAddr, group: &str) -> String {
    let head = "GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n";
    for _ in 0..200 {
        let (_, resp) = request_from(ip, p, head).await;
        if header_of(&resp, "x-upstream") == Some(group) {
            let set = header_of(&resp, "set-cookie").unwrap_or_default();
            return set.split(';').next().unwrap_or_default().to_owned();
        }
    }
    panic!("{ip} never landed in {group}");
}

/// One client floods the canary with requests the app answers 500 while
/// eight others, each on its own address, are served well: the analysis
/// weighs clients (DESIGN §10), so the flood does not abort the canary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_clients_flood_of_errors_does_not_abort_a_healthy_canary() {
    let (blue, green) = blue_and_green().await;
    let proxy = start_proxy(&plan_yaml(&blue, &green, PLAN)).await;
    let (p, a) = (proxy.proxy_addr, proxy.admin_addr);
    let flooder = std::net::Ipv4Addr::new(127, 0, 0, 50);
    let mut clients = vec![(flooder, pinned_at(flooder, p, "green").await, "/status/500")];
    for i in 2..10 {
        let ip = std::net::Ipv4Addr::new(127, 0, 0, i);
        clients.push((ip, pinned_at(ip, p, "green").await, "/"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (ip, cookie, path) in clients {
        let stop = Arc::clone(&stop);
        // The flooder sends ten times as often as each of the others.
        let pause = if path == "/" { 50 } else { 5 };
        tasks.push(tokio::spawn(async move {
            let head = format!(
                "GET {path} HTTP/1.1\r\nHost: app\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
            );
            while !stop.load(Ordering::Relaxed) {
                request_from(ip, p, &head).await;
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }));
    }
    let r = wait_rollout(a, Duration::from_secs(30), "promoted or aborted", |r| {
        state_is(r, "promoted") || state_is(r, "aborted")
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    assert!(
        state_is(&r, "promoted"),
        "one client's errors decided the canary: {r:#}"
    );
    let errors = series_at(
        a,
        "switchyard_route_requests_total{class=\"5xx\",group=\"green\",route=\"default\"}",
    )
    .await;
    assert!(
        errors >= 100.0,
        "the flood was served and counted: {errors}"
    );
}
