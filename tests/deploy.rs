//! deploy/: the files operators run switchyard with, checked by the tools that
//! will read them. promtool checks the scrape config and rules and runs the
//! rule unit tests; a real Prometheus scrapes a running switchyard (through
//! the Kubernetes relabelling too) and answers every dashboard query;
//! systemd-analyze verifies the unit; the Kubernetes manifests and the
//! Dockerfile are checked against each other and against `switchyard check`.
//!
//! Needs `promtool` and `prometheus` (Debian package `prometheus`) and
//! `systemd-analyze` (package `systemd`); `tests/run` installs them.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(rel)
}

fn read(path: &Path) -> String {
    ok(
        std::fs::read_to_string(path),
        &format!("read {}", path.display()),
    )
}

/// Every document of a YAML file, as JSON values.
fn yaml_docs(path: &Path) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(&read(path))
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

fn yaml(path: &Path) -> Value {
    let mut docs = yaml_docs(path);
    assert_eq!(docs.len(), 1, "{}: one document expected", path.display());
    docs.remove(0)
}

/// Runs a tool the test needs, failing with how to install it when it is missing.
fn tool(name: &str, args: &[&str], cwd: &Path) -> Output {
    Command::new(name)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `{name}` ({e}): `bash tests/run` installs what the tests need (Debian's prometheus and systemd packages)")
        })
}

fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn switchyard(args: &[&str]) -> Output {
    ok(
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(args)
            .env_remove("SWITCHYARD_COOKIE_KEY")
            .output(),
        "run switchyard",
    )
}

/// `5s`, `2m` and plain seconds, as Kubernetes and proxy.yaml write them here.
fn seconds(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n
            .as_u64()
            .unwrap_or_else(|| panic!("{n} is not whole seconds")),
        Value::String(s) => {
            let (n, unit) = s.split_at(s.len() - 1);
            let n: u64 = n.parse().unwrap_or_else(|_| panic!("{s}: not a duration"));
            match unit {
                "s" => n,
                "m" => n * 60,
                _ => panic!("{s}: unexpected unit"),
            }
        }
        other => panic!("{other}: not a duration"),
    }
}

fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    let mut cur = v;
    for key in path.split('.') {
        cur = match key.parse::<usize>() {
            Ok(i) => &cur[i],
            Err(_) => &cur[key],
        };
    }
    assert!(!cur.is_null(), "`{path}` missing");
    cur
}

fn text<'a>(v: &'a Value, path: &str) -> &'a str {
    at(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("`{path}` is not a string"))
}

struct Kube {
    docs: Vec<(String, Value)>,
}

impl Kube {
    fn load() -> Self {
        let dir = deploy("kubernetes");
        let mut docs = Vec::new();
        for entry in ok(std::fs::read_dir(&dir), "read deploy/kubernetes") {
            let path = ok(entry, "dir entry").path();
            // kustomization.yaml is kubectl's, not an object of the cluster.
            let object = path.file_stem().is_some_and(|s| s != "kustomization");
            if object && path.extension().is_some_and(|e| e == "yaml") {
                for doc in yaml_docs(&path) {
                    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                    docs.push((name.unwrap_or_default(), doc));
                }
            }
        }
        Kube { docs }
    }

    fn one(&self, kind: &str, name: &str) -> &Value {
        let found: Vec<&Value> = self
            .docs
            .iter()
            .map(|(_, d)| d)
            .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .collect();
        assert_eq!(found.len(), 1, "one {kind} named {name} expected");
        found[0]
    }

    /// The proxy.yaml the pods run, written out for `switchyard check`.
    fn proxy_yaml(&self) -> String {
        let data = &self.one("ConfigMap", "switchyard-config")["data"];
        data["proxy.yaml"]
            .as_str()
            .unwrap_or_else(|| panic!("ConfigMap has no data.proxy.yaml"))
            .to_owned()
    }
}

fn selects(selector: &Value, labels: &Value) -> bool {
    let Some(wanted) = selector.as_object() else {
        return false;
    };
    !wanted.is_empty() && wanted.iter().all(|(k, v)| labels[k] == *v)
}

#[test]
fn kubernetes_manifests_fit_together() {
    let kube = Kube::load();
    for (file, doc) in &kube.docs {
        assert!(
            doc["apiVersion"].is_string() && doc["kind"].is_string(),
            "{file}: apiVersion and kind"
        );
        assert!(doc["metadata"]["name"].is_string(), "{file}: metadata.name");
    }
    let deployment = kube.one("Deployment", "switchyard");
    let spec = at(deployment, "spec");
    assert!(
        at(spec, "replicas").as_u64() >= Some(2),
        "at least 2 replicas"
    );
    let pod_labels = at(spec, "template.metadata.labels");
    assert!(selects(at(spec, "selector.matchLabels"), pod_labels));
    let pod = at(spec, "template.spec");
    let container = at(pod, "containers.0");
    let proxy: Value = serde_saphyr::from_str(&kube.proxy_yaml())
        .unwrap_or_else(|e| panic!("ConfigMap proxy.yaml: {e}"));

    // Probes on the admin listener that proxy.yaml opens.
    let admin_port: u64 = ok(
        text(&proxy, "admin")
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .parse(),
        "admin port",
    );
    let port_of = |name: &str| -> u64 {
        let ports = at(container, "ports")
            .as_array()
            .cloned()
            .unwrap_or_default();
        let p = ports.iter().find(|p| p["name"] == name);
        p.and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("container port {name}"))
    };
    assert_eq!(port_of("admin"), admin_port);
    let listen_port: u64 = ok(
        text(&proxy, "listen")
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .parse(),
        "listen port",
    );
    assert_eq!(port_of("http"), listen_port);
    assert_eq!(text(container, "readinessProbe.httpGet.path"), "/readyz");
    assert_eq!(text(container, "livenessProbe.httpGet.path"), "/healthz");
    assert_eq!(text(container, "readinessProbe.httpGet.port"), "admin");
    assert_eq!(text(container, "livenessProbe.httpGet.port"), "admin");
    let annotations = at(spec, "template.metadata.annotations");
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], admin_port.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");

    // SIGKILL must never cut the drain short.
    let pre_stop = seconds(at(container, "lifecycle.preStop.sleep.seconds"));
    let drain = seconds(at(&proxy, "shutdown.drain_delay"));
    let grace = seconds(at(&proxy, "shutdown.grace"));
    let termination = seconds(at(pod, "terminationGracePeriodSeconds"));
    assert!(
        pre_stop + drain + grace < termination,
        "preStop {pre_stop}s + drain_delay {drain}s + grace {grace}s must fit in terminationGracePeriodSeconds {termination}s"
    );

    // Locked down and sized.
    assert_eq!(at(pod, "securityContext.runAsNonRoot"), &json!(true));
    assert_eq!(
        at(container, "securityContext.readOnlyRootFilesystem"),
        &json!(true)
    );
    assert_eq!(
        at(container, "securityContext.allowPrivilegeEscalation"),
        &json!(false)
    );
    assert_eq!(
        at(container, "securityContext.capabilities.drop"),
        &json!(["ALL"])
    );
    assert!(at(container, "resources.requests.cpu").is_string());
    assert!(at(container, "resources.requests.memory").is_string());
    assert!(at(container, "resources.limits.memory").is_string());

    // The ConfigMap is mounted as a directory (a subPath mount never sees
    // the `..data` swap), and --config points into it.
    let mounts = at(container, "volumeMounts")
        .as_array()
        .cloned()
        .unwrap_or_default();
    let volumes = at(pod, "volumes").as_array().cloned().unwrap_or_default();
    let mount_of = |source: &str, name: &str| -> String {
        let volume = volumes
            .iter()
            .find(|v| v[source]["name"] == name || v[source]["secretName"] == name)
            .unwrap_or_else(|| panic!("no volume from {source} {name}"));
        let mount = mounts
            .iter()
            .find(|m| m["name"] == volume["name"])
            .unwrap_or_else(|| panic!("volume {} not mounted", volume["name"]));
        assert!(
            mount["subPath"].is_null(),
            "{name} mounted with subPath: edits would never arrive"
        );
        text(mount, "mountPath").to_owned()
    };
    let config_dir = mount_of("configMap", "switchyard-config");
    let args: Vec<&str> = at(container, "args")
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        args,
        ["run", "--config", &format!("{config_dir}/proxy.yaml")]
    );

    // The key: Secret volume -> file: key source in proxy.yaml.
    let secret = kube.one("Secret", "switchyard-cookie-key");
    let key_name = at(secret, "stringData")
        .as_object()
        .and_then(|m| m.keys().next().cloned())
        .unwrap_or_else(|| panic!("secret has no key"));
    let key_dir = mount_of("secret", "switchyard-cookie-key");
    assert_eq!(
        at(&proxy, "sticky.keys"),
        &json!([format!("file:{key_dir}/{key_name}")]),
        "proxy.yaml reads the key the Secret mounts"
    );

    // Services, PDB and ServiceMonitor select the pods and name real ports.
    let service = kube.one("Service", "switchyard");
    assert!(selects(at(service, "spec.selector"), pod_labels));
    assert_eq!(at(service, "spec.ports.0.targetPort"), "http");
    let admin_service = kube.one("Service", "switchyard-admin");
    assert!(selects(at(admin_service, "spec.selector"), pod_labels));
    assert_eq!(at(admin_service, "spec.ports.0.targetPort"), "admin");
    let pdb = kube.one("PodDisruptionBudget", "switchyard");
    assert!(selects(at(pdb, "spec.selector.matchLabels"), pod_labels));
    assert!(at(pdb, "spec.minAvailable").as_u64() >= Some(1));
    let monitor = kube.one("ServiceMonitor", "switchyard");
    assert!(selects(
        at(monitor, "spec.selector.matchLabels"),
        at(admin_service, "metadata.labels")
    ));
    assert!(!selects(
        at(monitor, "spec.selector.matchLabels"),
        at(service, "metadata.labels")
    ));
    assert_eq!(at(monitor, "spec.endpoints.0.port"), "admin");

    // kustomization lists files that exist.
    let kustomization = yaml(&deploy("kubernetes/kustomization.yaml"));
    for r in at(&kustomization, "resources")
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let file = deploy("kubernetes").join(r.as_str().unwrap_or_default());
        assert!(
            file.is_file(),
            "kustomization names missing {}",
            file.display()
        );
    }
}

#[test]
fn kubernetes_config_passes_check_and_the_placeholder_key_is_refused() {
    let kube = Kube::load();
    let dir = ok(tempfile::tempdir(), "tempdir");
    let config = dir.path().join("proxy.yaml");
    ok(std::fs::write(&config, kube.proxy_yaml()), "write config");
    // The key is the Secret's, mounted in the pod: not here.
    let out = switchyard(&["check", "--no-secrets", &config.to_string_lossy()]);
    assert_success(&out, "switchyard check on the ConfigMap's proxy.yaml");
    assert!(String::from_utf8_lossy(&out.stdout).contains("group green"));
    // The pods log each request on stdout, for the cluster's log agent.
    let cfg: Value = ok(serde_saphyr::from_str(&kube.proxy_yaml()), "proxy.yaml");
    assert_eq!(text(&cfg, "access_log.to"), "stdout");

    // With the Secret's placeholder in the key file, the pod must not start.
    let secret = kube.one("Secret", "switchyard-cookie-key");
    let placeholder = at(secret, "stringData")
        .as_object()
        .and_then(|m| m.values().next())
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let key_file = dir.path().join("cookie.key");
    ok(std::fs::write(&key_file, placeholder), "write key");
    let local = kube.proxy_yaml().replace(
        "file:/etc/switchyard/keys/cookie.key",
        &format!("file:{}", key_file.display()),
    );
    ok(std::fs::write(&config, local), "write config");
    let out = switchyard(&["check", &config.to_string_lossy()]);
    assert!(!out.status.success(), "the placeholder key was accepted");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sticky.keys"),
        "the refusal names sticky.keys: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_unit_is_accepted_by_systemd_analyze() {
    let unit = read(&deploy("systemd/switchyard.service"));
    for directive in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "LimitNOFILE=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "LoadCredential=cookie-key:",
        // The access log on stdout lands in the journal.
        "StandardOutput=journal",
    ] {
        assert!(unit.contains(directive), "unit lacks {directive}");
    }
    // TimeoutStopSec covers the default drain (drain_delay 0 + grace 10s).
    let stop = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .map(|v| seconds(&json!(v)))
        .unwrap_or(0);
    assert!(
        stop > 10,
        "TimeoutStopSec {stop}s does not cover shutdown.grace"
    );

    // verify checks that ExecStart names an executable: point it at this build.
    let dir = ok(tempfile::tempdir(), "tempdir");
    let path = dir.path().join("switchyard.service");
    ok(
        std::fs::write(
            &path,
            unit.replace(
                "/usr/local/bin/switchyard",
                env!("CARGO_BIN_EXE_switchyard"),
            ),
        ),
        "write unit",
    );
    let out = tool(
        "systemd-analyze",
        &["verify", &path.to_string_lossy()],
        dir.path(),
    );
    assert_success(&out, "systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify complained:\n{stderr}"
    );
}

#[tokio::test]
async fn dockerfile_checks_its_config_and_its_healthcheck_probes_the_admin_listener() {
    let dockerfile = read(&deploy("docker/Dockerfile"));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Every COPY from the build context names something that exists.
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        for src in &words[1..words.len() - 1] {
            assert!(root.join(src).exists(), "Dockerfile copies missing {src}");
        }
    }
    for needed in ["USER nonroot", "HEALTHCHECK", "FROM gcr.io/distroless/"] {
        assert!(dockerfile.contains(needed), "Dockerfile lacks {needed}");
    }
    // The build step `switchyard check --no-secrets <file>` (an image build
    // has no key) passes on the shipped file.
    let checked = dockerfile
        .lines()
        .find_map(|l| l.trim().strip_prefix("RUN switchyard check --no-secrets "))
        .unwrap_or_else(|| panic!("no `RUN switchyard check --no-secrets` step"));
    assert_success(
        &switchyard(&[
            "check",
            "--no-secrets",
            &root.join(checked.trim()).to_string_lossy(),
        ]),
        "the Dockerfile's check step",
    );

    // `docker stop` waits 10 s before SIGKILL: the baked-in drain fits.
    let baked = yaml(&deploy("docker/proxy.yaml"));
    let drain = seconds(at(&baked, "shutdown.drain_delay")) + seconds(at(&baked, "shutdown.grace"));
    assert!(
        drain < 10,
        "drain_delay + grace = {drain}s outlasts docker stop's 10 s"
    );

    // The HEALTHCHECK command, run against a live proxy, then a dead one.
    let probe: Vec<String> = {
        let start = dockerfile.find("CMD [\"/usr/local/bin/switchyard\", \"healthcheck\"");
        let line = &dockerfile[start.unwrap_or_else(|| panic!("HEALTHCHECK CMD not found"))..];
        let list = &line[5..line.find(']').unwrap_or(line.len())];
        serde_json::from_str::<Vec<String>>(&format!("[{list}]"))
            .unwrap_or_else(|e| panic!("HEALTHCHECK CMD: {e}"))
    };
    let (blue, green) = blue_and_green().await;
    let proxy = BinProxy::start(&config_yaml(
        &[("blue", 1, &[&blue]), ("green", 1, &[&green])],
        "",
    ));
    let url = probe[2].replace("127.0.0.1:9901", &proxy.admin_addr.to_string());
    let out = switchyard(&["healthcheck", &url]);
    assert_success(&out, "healthcheck against a live proxy");
    assert!(String::from_utf8_lossy(&out.stdout).contains("200"));
    let readyz = format!("http://{}/nope", proxy.admin_addr);
    assert!(
        !switchyard(&["healthcheck", &readyz]).status.success(),
        "a 404 passed the probe"
    );
    let admin = proxy.admin_addr;
    drop(proxy);
    let out = switchyard(&[
        "healthcheck",
        "--timeout",
        "1",
        &format!("http://{admin}/healthz"),
    ]);
    assert!(!out.status.success(), "a stopped proxy passed the probe");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

#[test]
fn promtool_accepts_the_scrape_config_the_rules_and_the_rule_tests() {
    let dir = deploy("prometheus");
    assert_success(
        &tool("promtool", &["check", "config", "prometheus.yml"], &dir),
        "promtool check config",
    );
    let out = tool(
        "promtool",
        &["check", "rules", "switchyard.rules.yml"],
        &dir,
    );
    assert_success(&out, "promtool check rules");
    let out = tool(
        "promtool",
        &["test", "rules", "switchyard.rules.test.yml"],
        &dir,
    );
    assert_success(&out, "promtool test rules");
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS"));
    // Every alert the issue asks for exists and has a unit test.
    let rules = read(&dir.join("switchyard.rules.yml"));
    let tests = read(&dir.join("switchyard.rules.test.yml"));
    for alert in [
        "SwitchyardCanaryErrorRatioHigh",
        "SwitchyardCanaryLatencyHigh",
        "SwitchyardReloadFailing",
        "SwitchyardNoHealthyTarget",
        "SwitchyardStoreUnavailable",
        "SwitchyardRolloutAborted",
    ] {
        assert!(
            rules.contains(&format!("alert: {alert}")),
            "no alert {alert}"
        );
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "alert {alert} untested"
        );
    }
}

/// A proxy with traffic in both groups and a store, so every family exists.
async fn busy_proxy() -> (Upstream, Upstream, BinProxy) {
    let (blue, green) = blue_and_green().await;
    let proxy = BinProxy::start(&config_yaml(
        &[("blue", 1, &[&blue]), ("green", 1, &[&green])],
        "  store:\n    type: memory\nrollout:\n  stable: blue\n  canary: green\n  steps: [{weight: 50, hold: 1h}]\n  analysis: {interval: 300ms, min_requests: 5}\n",
    ));
    let client = h1_client();
    let url = format!("http://{}/", proxy.proxy_addr);
    let mut seen = BTreeSet::new();
    for _ in 0..200 {
        let got = get(&client, &url, None).await;
        assert_eq!(got.status, 200);
        seen.insert(got.upstream().to_owned());
        if seen.len() == 2 && blue.hits() + green.hits() >= 20 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "traffic reached only {seen:?}");
    (blue, green, proxy)
}

/// Metric families in an exposition, with their types.
fn families(exposition: &str) -> Vec<(String, String)> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_owned(), it.next()?.to_owned()))
        })
        .collect()
}

/// Every `switchyard_…` metric an expression names, histogram suffixes folded.
fn named_metrics(expr: &str, histograms: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("switchyard_") {
        let boundary = rest[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'));
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if boundary {
            let name = &tail[..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| histograms.contains(*b)))
                .unwrap_or(name);
            out.insert(base.to_owned());
        }
        rest = &tail[end..];
    }
    out
}

/// Every PromQL expression in the dashboard: panel targets, template
/// variables and annotations.
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, &mut out);
    out
}

#[tokio::test]
async fn live_scrape_passes_promtool_and_the_dashboard_names_only_exported_metrics() {
    let (_blue, _green, proxy) = busy_proxy().await;
    // Keep serving until the rollout has judged an interval, so its
    // analysis series exist too.
    let client = h1_client();
    let url = format!("http://{}/", proxy.proxy_addr);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut exposition = scrape_at(proxy.admin_addr).await;
    while !exposition.contains("switchyard_rollout_analysis_value{") {
        assert!(
            std::time::Instant::now() < deadline,
            "no verdict: {exposition}"
        );
        for _ in 0..20 {
            get(&client, &url, None).await;
        }
        exposition = scrape_at(proxy.admin_addr).await;
    }

    let mut child = ok(
        Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn(),
        "run promtool (apt-get install prometheus)",
    );
    if let Some(mut stdin) = child.stdin.take() {
        ok(
            std::io::Write::write_all(&mut stdin, exposition.as_bytes()),
            "feed promtool",
        );
    }
    let out = ok(child.wait_with_output(), "promtool check metrics");
    assert_success(&out, "promtool check metrics on a live scrape");
    let lint = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        lint.trim().is_empty(),
        "promtool check metrics found problems:\n{lint}"
    );

    let families = families(&exposition);
    let exported: BTreeSet<String> = families.iter().map(|(n, _)| n.clone()).collect();
    let histograms: BTreeSet<String> = families
        .iter()
        .filter(|(_, t)| t == "histogram")
        .map(|(n, _)| n.clone())
        .collect();

    let dashboard: Value = serde_json::from_str(&read(&deploy("grafana/switchyard.json")))
        .unwrap_or_else(|e| panic!("deploy/grafana/switchyard.json does not parse: {e}"));
    assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() >= 6));
    let exprs = dashboard_exprs(&dashboard);
    let mut used = BTreeSet::new();
    for expr in &exprs {
        let names = named_metrics(expr, &histograms);
        assert!(
            !names.is_empty() || expr.contains("switchyard:"),
            "query names no switchyard metric: {expr}"
        );
        for name in names {
            assert!(
                exported.contains(&name),
                "dashboard query uses {name}, which switchyard does not export: {expr}"
            );
            used.insert(name);
        }
    }
    // What the issue asks the dashboard to show.
    for needed in [
        "switchyard_requests_total",
        "switchyard_route_requests_total",
        "switchyard_request_duration_seconds",
        "switchyard_group_share_ratio",
        "switchyard_assignments_total",
        "switchyard_target_healthy",
        "switchyard_config_reloads_total",
        "switchyard_rollout_step",
        "switchyard_rollout_state",
        "switchyard_rollout_canary_weight_ratio",
    ] {
        assert!(used.contains(needed), "the dashboard never shows {needed}");
    }

    // The alerting rules, too, name only real metrics.
    let rules = read(&deploy("prometheus/switchyard.rules.yml"));
    for name in named_metrics(&rules, &histograms) {
        assert!(
            exported.contains(&name),
            "a rule uses {name}, which switchyard does not export"
        );
    }
}

/// A real Prometheus on loopback, stopped when dropped.
struct Prometheus {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped scrape config, aimed at `admin`: the static job as written, and
/// the Kubernetes pod job with its discovery replaced by one target whose
/// `__meta_…` labels are what the pod manifests give. The target's address
/// has the wrong port, so only a working annotation relabel reaches it.
fn prometheus_config(admin: SocketAddr) -> Value {
    let mut config = yaml(&deploy("prometheus/prometheus.yml"));
    config["global"]["scrape_interval"] = json!("1s");
    config["global"]["evaluation_interval"] = json!("1s");
    config["rule_files"] = json!([deploy("prometheus/switchyard.rules.yml")]);
    let jobs = config["scrape_configs"].as_array_mut();
    let jobs = jobs.unwrap_or_else(|| panic!("no scrape_configs"));
    let job = jobs
        .iter_mut()
        .find(|j| j["job_name"] == "switchyard")
        .unwrap_or_else(|| panic!("no switchyard job"));
    job["static_configs"] = json!([{ "targets": [admin.to_string()] }]);

    let kube = Kube::load();
    let deployment = kube.one("Deployment", "switchyard");
    let template = at(deployment, "spec.template.metadata");
    // Kubernetes discovery's names: non-alphanumerics become `_`.
    let mut labels = serde_json::Map::new();
    for (field, meta) in [("labels", "label"), ("annotations", "annotation")] {
        for (k, v) in at(template, field).as_object().cloned().unwrap_or_default() {
            let k: String = k
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            labels.insert(format!("__meta_kubernetes_pod_{meta}_{k}"), v);
        }
    }
    // The pod listens where this test's proxy does.
    labels.insert(
        "__meta_kubernetes_pod_annotation_prometheus_io_port".into(),
        json!(admin.port().to_string()),
    );
    labels.insert("__meta_kubernetes_namespace".into(), json!("default"));
    labels.insert("__meta_kubernetes_pod_name".into(), json!("switchyard-0"));
    let mut pods =
        yaml(&deploy("prometheus/prometheus-kubernetes.yml"))["scrape_configs"][0].clone();
    let obj = pods
        .as_object_mut()
        .unwrap_or_else(|| panic!("kubernetes job"));
    assert!(
        obj.remove("kubernetes_sd_configs").is_some(),
        "the pod job discovers pods"
    );
    obj.insert(
        "static_configs".into(),
        json!([{ "targets": [format!("{}:1", admin.ip())], "labels": labels }]),
    );
    jobs.push(pods);
    config
}

async fn start_prometheus(admin: SocketAddr) -> Prometheus {
    let dir = ok(tempfile::tempdir(), "tempdir");
    let config = dir.path().join("prometheus.yml");
    // JSON is YAML: Prometheus reads it as is.
    ok(
        std::fs::write(&config, prometheus_config(admin).to_string()),
        "write config",
    );
    assert_success(
        &tool(
            "promtool",
            &["check", "config", &config.to_string_lossy()],
            dir.path(),
        ),
        "promtool check config (test copy)",
    );
    let port = free_port();
    let child = ok(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn(),
        "start prometheus (apt-get install prometheus)",
    );
    let prom = Prometheus {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        _dir: dir,
    };
    let client = h1_client();
    for _ in 0..150 {
        let ready = client
            .get(ok(format!("http://{}/-/ready", prom.addr).parse(), "uri"))
            .await
            .is_ok_and(|r| r.status() == 200);
        if ready {
            return prom;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("prometheus did not become ready");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn api(prom: &Prometheus, path_and_query: &str) -> Value {
    let got = get(
        &h1_client(),
        &format!("http://{}{path_and_query}", prom.addr),
        None,
    )
    .await;
    serde_json::from_slice(&got.body).unwrap_or_else(|e| {
        panic!(
            "{path_and_query}: not JSON ({e}): {}",
            String::from_utf8_lossy(&got.body)
        )
    })
}

async fn query(prom: &Prometheus, q: &str) -> Value {
    api(prom, &format!("/api/v1/query?query={}", urlencode(q))).await
}

fn label_values(answer: &Value, label: &str) -> BTreeSet<String> {
    answer["data"]["result"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|s| s["metric"][label].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `q` until `done` holds, for up to 30 s.
async fn eventually(prom: &Prometheus, q: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..150 {
        last = query(prom, q).await;
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{q}: not satisfied within 30 s; last answer {last}");
}

#[tokio::test]
async fn real_prometheus_scrapes_both_groups_and_runs_every_rule_and_dashboard_query() {
    let (_blue, _green, proxy) = busy_proxy().await;
    let prom = start_prometheus(proxy.admin_addr).await;

    let both = |v: &Value| {
        let groups = label_values(v, "group");
        groups.contains("blue") && groups.contains("green")
    };
    eventually(&prom, "switchyard_requests_total", both).await;

    // Both jobs reach the proxy: the static one, and the pod job through its
    // annotation relabelling (its target port was wrong on purpose).
    let up = eventually(&prom, "up{job=\"switchyard\"} == 1", |v| {
        v["data"]["result"].as_array().is_some_and(|r| r.len() == 2)
    })
    .await;
    assert!(
        label_values(&up, "pod").contains("switchyard-0"),
        "pod job not relabelled: {up}"
    );

    // The recording rules evaluate on real series, and no rule errors.
    eventually(&prom, "switchyard:group_requests:rate5m", both).await;
    let baseline = eventually(&prom, "switchyard:group_baseline", |v| {
        !label_values(v, "group").is_empty()
    })
    .await;
    assert_eq!(
        label_values(&baseline, "group").len(),
        2,
        "equal weights: both groups are baseline"
    );
    let rules = api(&prom, "/api/v1/rules").await;
    let groups = rules["data"]["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(groups.len(), 2, "both rule groups loaded: {rules}");
    for g in &groups {
        for r in g["rules"].as_array().cloned().unwrap_or_default() {
            assert_eq!(
                r["health"], "ok",
                "rule {} failed: {}",
                r["name"], r["lastError"]
            );
        }
    }

    // Every dashboard query is valid PromQL here, with Grafana's variables
    // filled in the way Grafana would.
    let dashboard: Value = serde_json::from_str(&read(&deploy("grafana/switchyard.json")))
        .unwrap_or_else(|e| panic!("dashboard JSON: {e}"));
    let mut answered = 0;
    for expr in dashboard_exprs(&dashboard) {
        if expr.starts_with("label_values(") {
            continue; // a Grafana function, not PromQL; its metric is checked by name
        }
        let q = expr
            .replace("$__rate_interval", "1m")
            .replace("$__interval", "1m")
            .replace("$job", "switchyard")
            .replace("$instance", ".*")
            .replace("$route", ".*");
        let answer = query(&prom, &q).await;
        assert_eq!(
            answer["status"], "success",
            "dashboard query fails: {q}\n{answer}"
        );
        answered += 1;
    }
    assert!(answered >= 15, "only {answered} dashboard queries");
    // The panels an operator watches during a canary show both groups.
    let per_group = "sum by (group) (rate(switchyard_requests_total{job=\"switchyard\",instance=~\".*\",group!=\"none\"}[1m]))";
    eventually(&prom, per_group, both).await;
    let configured =
        "max by (group) (switchyard_group_share_ratio{job=\"switchyard\",instance=~\".*\"})";
    let shares = eventually(&prom, configured, both).await;
    for s in shares["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        assert_eq!(s["value"][1], "0.5", "configured share: {s}");
    }
}
