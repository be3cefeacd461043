//! The command line: `check` on good and bad configs, `keygen`, `--version`.

mod common;

use std::process::{Command, Output};

use common::ok;

/// Runs the binary with the keys the test configs name set (`SOME_KEY`, and
/// the shipped proxy.yaml's `SWITCHYARD_COOKIE_KEY`).
fn switchyard(args: &[&str]) -> Output {
    ok(
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(args)
            .env("SOME_KEY", common::TEST_KEY)
            .env("SWITCHYARD_COOKIE_KEY", common::TEST_KEY)
            .output(),
        "run switchyard",
    )
}

/// Runs the binary with no key in its environment.
fn switchyard_without_keys(args: &[&str]) -> Output {
    ok(
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(args)
            .env_remove("SOME_KEY")
            .env_remove("SWITCHYARD_COOKIE_KEY")
            .output(),
        "run switchyard",
    )
}

fn output_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn check_text(yaml: &str) -> (bool, String) {
    let dir = ok(tempfile::tempdir(), "tempdir");
    let path = dir.path().join("proxy.yaml");
    ok(std::fs::write(&path, yaml), "write");
    let out = switchyard(&["check", &path.to_string_lossy()]);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

const GOOD: &str = "listen: 127.0.0.1:8080
sticky:
  ttl: 12h
  keys: [env:SOME_KEY]
groups:
  blue:
    weight: 90
    targets:
      - address: 127.0.0.1:9001
  green:
    weight: 10
    targets:
      - address: 127.0.0.1:9101
";

#[test]
fn the_shipped_proxy_yaml_passes_check() {
    let out = switchyard(&["check", concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.yaml")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("group blue"), "{stdout}");
    assert!(
        stdout.contains("90.00%") && stdout.contains("10.00%"),
        "{stdout}"
    );
    assert!(stdout.contains("127.0.0.1:9101"), "{stdout}");
}

#[test]
fn a_good_config_prints_groups_shares_and_targets() {
    let (ok_, text) = check_text(GOOD);
    assert!(ok_, "{text}");
    assert!(
        text.contains("group green") && text.contains("share  10.00%"),
        "{text}"
    );
}

/// Each bad edit, with the path and line its error must name.
#[test]
fn bad_configs_fail_with_path_and_line() {
    let cases: &[(&str, &str, &str)] = &[
        ("ttl: 12h", "ttl: 8d", "sticky.ttl: must be at most 7d"),
        ("ttl: 12h", "ttl: 0s", "sticky.ttl: must be at least 1s"),
        (
            "    weight: 90",
            "    wieght: 90",
            "groups.blue.wieght: unknown field",
        ),
        (
            "  ttl: 12h",
            "  ttl: 12h\n  tll: 1h",
            "sticky.tll: unknown field",
        ),
        (
            "    weight: 10",
            "    weight: -1",
            "groups.green.weight: expected an integer >= 0",
        ),
        (
            "    weight: 10",
            "    weight: ten",
            "groups.green.weight: expected an integer",
        ),
        (
            "  - address: 127.0.0.1:9101",
            "  - address: nowhere",
            "groups.green.targets[0].address",
        ),
        (
            "listen: 127.0.0.1:8080",
            "listen: localhost",
            "listen: `localhost` is not an address",
        ),
        (
            "keys: [env:SOME_KEY]",
            "keys: []",
            "sticky.keys: at least one key",
        ),
        (
            "keys: [env:SOME_KEY]",
            "keys: [hunter2]",
            "sticky.keys[0]: a key must be given as",
        ),
        (
            "  ttl: 12h",
            "  ttl: 12h\n  store:\n    type: postgres",
            "sticky.store.type: expected one of cookie, memory, redis",
        ),
        (
            "  ttl: 12h",
            "  ttl: 12h\n  store:\n    type: redis\n    url: redis://:hunter2@10.0.0.5:6379/0",
            "sticky.store.url: a URL with credentials must come from",
        ),
        (
            "  ttl: 12h",
            "  ttl: 12h\n  store:\n    type: redis\n    url: http://10.0.0.5:6379/",
            "sticky.store.url: expected a redis:// or rediss:// URL",
        ),
        (
            "  ttl: 12h",
            "  ttl: 12h\n  store:\n    type: memory\n    timeout: 0s",
            "sticky.store.timeout: must be greater than zero",
        ),
        (
            "  ttl: 12h",
            "  ttl: 12h\n  store:\n    type: redis",
            "sticky.store.url: the redis store needs `url`",
        ),
    ];
    for (from, to, expect) in cases {
        let yaml = GOOD.replacen(from, to, 1);
        assert_ne!(yaml, GOOD, "case {to} did not change the file");
        let line = yaml
            .lines()
            .position(|l| to.lines().last().is_some_and(|t| l.contains(t.trim())))
            .map(|i| i + 1)
            .unwrap_or_else(|| panic!("{to} not found"));
        let (ok_, text) = check_text(&yaml);
        assert!(!ok_, "{to} was accepted:\n{text}");
        assert!(
            text.contains(expect),
            "{to}: expected `{expect}` in:\n{text}"
        );
        let wanted = format!("(line {line})");
        let err_line = text
            .lines()
            .find(|l| l.contains(expect))
            .unwrap_or_default();
        assert!(
            err_line.contains(&wanted),
            "{to}: expected {wanted} in `{err_line}`"
        );
        assert!(!text.contains("hunter2"), "a key value was echoed:\n{text}");
    }
}

#[test]
fn a_repeated_group_is_refused_not_merged() {
    let yaml =
        format!("{GOOD}  green:\n    weight: 50\n    targets: [{{address: 127.0.0.1:9102}}]\n");
    let (ok_, text) = check_text(&yaml);
    assert!(!ok_, "duplicate group accepted:\n{text}");
    assert!(
        text.contains("groups: key `green` appears twice") && text.contains("(line 14)"),
        "{text}"
    );
    let yaml = GOOD.replacen("    weight: 90\n", "    weight: 90\n    weight: 80\n", 1);
    let (ok_, text) = check_text(&yaml);
    assert!(
        !ok_ && text.contains("key `weight` appears twice") && text.contains("(line 8)"),
        "{text}"
    );
}

#[test]
fn every_error_is_listed_at_once() {
    let yaml = GOOD
        .replacen("ttl: 12h", "ttl: 30d", 1)
        .replacen("    weight: 10", "    weight: -5", 1)
        .replacen("127.0.0.1:9001", "no-port", 1);
    let (ok_, text) = check_text(&yaml);
    assert!(!ok_);
    assert!(text.contains("3 errors"), "{text}");
}

#[test]
fn keygen_prints_32_random_bytes_in_base64() {
    let a = switchyard(&["keygen"]);
    let b = switchyard(&["keygen"]);
    assert!(a.status.success());
    let (ka, kb) = (
        String::from_utf8_lossy(&a.stdout),
        String::from_utf8_lossy(&b.stdout),
    );
    assert_ne!(ka, kb);
    let bytes = ok(switchyard::config::decode_key(ka.trim()), "decode");
    assert_eq!(bytes.len(), 32);
}

#[test]
fn version_is_printed() {
    let out = switchyard(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn run_refuses_a_bad_config_and_names_the_problem() {
    let dir = ok(tempfile::tempdir(), "tempdir");
    let path = dir.path().join("proxy.yaml");
    ok(
        std::fs::write(&path, GOOD.replacen("ttl: 12h", "ttl: 8d", 1)),
        "write",
    );
    let out = switchyard(&["run", "--config", &path.to_string_lossy()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sticky.ttl") && err.contains("(line 3)"),
        "{err}"
    );
}

/// `check new --against old` names each change and how much bucket space moves,
/// without key material, and a bad `--against` file fails the command.
#[test]
fn check_against_prints_what_a_reload_would_change() {
    let against = |new: &std::path::Path, old: &std::path::Path, flag: &str| {
        switchyard(&[
            "check",
            &new.to_string_lossy(),
            flag,
            &old.to_string_lossy(),
        ])
    };
    let dir = ok(tempfile::tempdir(), "tempdir");
    let old = dir.path().join("old.yaml");
    let new = dir.path().join("new.yaml");
    ok(std::fs::write(&old, GOOD), "write old");
    let edited = GOOD
        .replace("weight: 90", "weight: 75")
        .replace("weight: 10", "weight: 25")
        .replace(
            "      - address: 127.0.0.1:9101\n",
            "      - address: 127.0.0.1:9101\n      - address: 127.0.0.1:9102\n",
        );
    ok(std::fs::write(&new, &edited), "write new");
    let out = against(&new, &old, "--against");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for want in [
        "green weight 10 -> 25 (share 10.0% -> 25.0%)",
        "blue weight 90 -> 75 (share 90.0% -> 75.0%)",
        "target 127.0.0.1:9102 added to green",
        "15.00% of bucket space moves blue -> green",
        "when their cookie expires, within 12h",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    // The alias, and the same file against itself.
    let out = against(&old, &old, "--diff");
    assert!(String::from_utf8_lossy(&out.stdout).contains("no change in effect"));
    // A listen change is flagged as a reload the proxy would refuse.
    ok(
        std::fs::write(&new, GOOD.replace("8080", "8081")),
        "write new",
    );
    let out = against(&new, &old, "--against");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("listen 127.0.0.1:8080 -> 127.0.0.1:8081 (needs a restart)"),
        "{text}"
    );
    assert!(text.contains("refuses this edit as a reload"), "{text}");
    ok(std::fs::write(&old, "groups: ["), "write bad old");
    assert!(!against(&new, &old, "--against").status.success());
}

#[test]
fn same_site_none_without_secure_is_refused_by_check() {
    let yaml = GOOD.replace("  ttl: 12h\n", "  ttl: 12h\n  same_site: none\n");
    let (passed, text) = check_text(&yaml);
    assert!(!passed, "{text}");
    assert!(
        text.contains("sticky.same_site") && text.contains("line 4"),
        "{text}"
    );
    assert!(text.contains("Secure"), "the reason is given: {text}");
    let fixed = yaml.replace("  same_site: none\n", "  same_site: none\n  secure: true\n");
    let (passed, text) = check_text(&fixed);
    assert!(passed, "with secure: true it passes: {text}");
}

#[test]
fn tls_config_errors_name_the_field_and_line() {
    let dir = ok(tempfile::tempdir(), "tempdir");
    let bad = dir.path().join("bad.pem");
    ok(std::fs::write(&bad, "not a certificate\n"), "write");
    let yaml = GOOD.replace(
        "sticky:",
        &format!(
            "tls:\n  listen: 127.0.0.1:8443\n  certificates:\n    - cert: {b}\n      key: {b}\n    - cert: /nonexistent/x.crt\n      key: /nonexistent/x.key\nsticky:",
            b = bad.display()
        ),
    ) + "    ca_file: /nonexistent/ca.pem\n";
    let (passed, text) = check_text(&yaml);
    assert!(!passed, "{text}");
    for want in [
        "tls.certificates[0].cert",
        "tls.certificates[1].cert",
        "tls.certificates[1].key",
        "groups.green.ca_file",
        "only applies with `tls: true`",
    ] {
        assert!(text.contains(want), "missing {want}: {text}");
    }
}

/// Issue 24: `check` said ok where `run` refused to start (a key's variable
/// unset). Now it refuses too, unless told the secrets are elsewhere.
#[test]
fn check_refuses_what_run_refuses_unless_told_there_are_no_secrets_here() {
    let dir = ok(tempfile::tempdir(), "tempdir");
    let path = dir.path().join("proxy.yaml");
    ok(std::fs::write(&path, GOOD), "write");
    let p = path.to_string_lossy();
    let check = switchyard_without_keys(&["check", &p]);
    assert!(!check.status.success(), "{}", output_text(&check));
    assert!(
        output_text(&check).contains("sticky.keys[0]: environment variable SOME_KEY is not set"),
        "{}",
        output_text(&check)
    );
    let run = switchyard_without_keys(&["run", "--config", &p]);
    assert!(!run.status.success(), "run starts where check refused");
    assert!(
        output_text(&run).contains("SOME_KEY is not set"),
        "{}",
        output_text(&run)
    );
    let build = switchyard_without_keys(&["check", "--no-secrets", &p]);
    assert!(build.status.success(), "{}", output_text(&build));
    assert!(output_text(&build).contains("key material was not checked"));
    // `--config` works as `run --config` does, and with the key set it passes.
    let flag = switchyard(&["check", "--config", &p]);
    assert!(flag.status.success(), "{}", output_text(&flag));
    assert!(output_text(&flag).contains("group blue"));
}

/// Issue 24: three config messages that did not say what was wrong.
#[test]
fn config_messages_say_what_is_wrong_in_plain_words() {
    let alias = GOOD
        .replace(
            "    targets:\n      - address: 127.0.0.1:9001",
            "    targets: &t\n      - address: 127.0.0.1:9001",
        )
        .replace("    weight: 10", "    weight: *t");
    let (good, text) = check_text(&alias);
    assert!(!good);
    assert!(
        text.contains("groups.green.weight: expected a single value here, not a list or a mapping (it comes from an alias; the anchored value is at line 9) (line 11)"),
        "{text}"
    );
    assert_eq!(
        text.matches('(').count(),
        text.matches(')').count(),
        "{text}"
    );

    let long_key = GOOD.replace(
        "  ttl: 12h\n",
        &format!("  ttl: 12h\n  {}: 1\n", "k".repeat(2000)),
    );
    let (good, text) = check_text(&long_key);
    assert!(!good);
    assert!(text.contains("longer than 1024 characters"), "{text}");
    assert!(text.contains("(line 4)"), "{text}");
    assert!(
        !text.contains("sticky.ttl") && !text.contains("  - sticky:"),
        "reported under another key: {text}"
    );

    let dir = ok(tempfile::tempdir(), "tempdir");
    let latin1 = dir.path().join("latin1.yaml");
    ok(
        std::fs::write(&latin1, b"listen: 127.0.0.1:8080\n# caf\xe9\n"),
        "write",
    );
    let text = output_text(&switchyard(&["check", &latin1.to_string_lossy()]));
    assert!(
        text.contains("not UTF-8 text: byte 0xe9 at line 2, column 6"),
        "{text}"
    );
    let huge = dir.path().join("huge.yaml");
    ok(std::fs::write(&huge, vec![b'#'; 5 << 20]), "write");
    let text = output_text(&switchyard(&["check", &huge.to_string_lossy()]));
    assert!(text.contains("at most 4194304 bytes (4 MiB)"), "{text}");
}

/// `check | head` ends quietly, as any command line tool does.
#[test]
fn check_into_a_closed_pipe_does_not_panic() {
    use std::io::Read;
    let mut child = ok(
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["check", concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.yaml")])
            .env("SWITCHYARD_COOKIE_KEY", common::TEST_KEY)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn(),
        "spawn",
    );
    drop(child.stdout.take());
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let _ = ok(child.wait(), "wait");
    assert!(!err.contains("panicked"), "{err}");
}

/// Issue 24: the reason a listener could not be bound was printed twice.
#[test]
fn a_taken_port_is_named_once() {
    let taken = ok(std::net::TcpListener::bind("127.0.0.1:0"), "bind");
    let port = ok(taken.local_addr(), "addr").port();
    let dir = ok(tempfile::tempdir(), "tempdir");
    let path = dir.path().join("proxy.yaml");
    let yaml = GOOD.replace(
        "listen: 127.0.0.1:8080",
        &format!("listen: 127.0.0.1:{port}\nadmin: 127.0.0.1:0"),
    );
    ok(std::fs::write(&path, yaml), "write");
    let out = switchyard(&["run", "--config", &path.to_string_lossy()]);
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&format!("cannot listen on 127.0.0.1:{port} (listen)")),
        "{text}"
    );
    assert_eq!(text.matches("in use").count(), 1, "{text}");
}
