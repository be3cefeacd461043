//! The `switchyard` command: run | check | keygen | demo. Errors are reported
//! here, with context; the library returns typed errors.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use clap::{Parser, Subcommand};
use std::sync::Arc;
use tokio::net::TcpListener;

use switchyard::config::{self, Config, SystemKeys, ValidateOptions};
use switchyard::reload::{ConfigSource, content_hash, diff};
use switchyard::{app, demo};

#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Sticky blue/green and canary edge proxy",
    after_help = "Environment:\n  SWITCHYARD_COOKIE_KEY  the cookie signing key, when proxy.yaml says `keys: [env:SWITCHYARD_COOKIE_KEY]` (as shipped); `switchyard keygen` makes one\n  SWITCHYARD_LOG         log filter, e.g. `debug` or `switchyard=debug,info` (default info); logs go to stderr"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run {
        /// Path to proxy.yaml.
        #[arg(long, short, default_value = "proxy.yaml")]
        config: PathBuf,
    },
    /// Validate a config as `run` would (cookie keys included) and print its
    /// groups, weights, shares and targets; with --against, also what a
    /// reload from that older file would change.
    Check {
        /// Path to proxy.yaml (default: proxy.yaml).
        #[arg(value_name = "CONFIG", conflicts_with = "config_flag")]
        config: Option<PathBuf>,
        /// Path to proxy.yaml, as `run --config` takes it.
        #[arg(long = "config", short = 'c', value_name = "CONFIG")]
        config_flag: Option<PathBuf>,
        /// The config in force now: print what replacing it with CONFIG changes,
        /// including the share of clients that would move between groups.
        #[arg(long, visible_alias = "diff", value_name = "OLD")]
        against: Option<PathBuf>,
        /// Where the keys' secrets are absent (an image build): check all
        /// but the key material, and say so.
        #[arg(long)]
        no_secrets: bool,
    },
    /// Print a fresh random cookie key (base64, 32 bytes).
    Keygen,
    /// Probe a running proxy's admin endpoint; exit 0 on a 2xx answer, 1
    /// otherwise. For container health checks in images with no curl.
    Healthcheck {
        /// The URL to GET (plain HTTP: the admin listener).
        #[arg(default_value = "http://127.0.0.1:9901/healthz")]
        url: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Show or steer the rollouts of a running proxy through its admin API
    /// (bearer token: --token-file, SWITCHYARD_ADMIN_TOKEN, or the config's
    /// admin_token).
    Rollout {
        /// status, pause, resume, promote (now, to 100 %), abort (drain the
        /// canary), retry (start an aborted rollout again) or reset (forget
        /// its state, readable or not, and start the plan again).
        #[arg(value_parser = ["status", "pause", "resume", "promote", "abort", "retry", "reset"])]
        action: String,
        /// The route; optional when only one route has a rollout.
        route: Option<String>,
        /// The config of the running proxy (for its admin address and token).
        #[arg(long, short, default_value = "proxy.yaml")]
        config: PathBuf,
        /// The admin listener, instead of the config's `admin`.
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
        /// A file holding the admin token.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Print a tester pass: the override header's value that sends its
    /// holder to GROUP on ROUTE until it expires (signed with the route's
    /// cookie keys, so run it where `run` finds them).
    Pass {
        /// The route; optional when the config has one route.
        #[arg(long)]
        route: Option<String>,
        /// The group the pass opens (one of the route's split).
        #[arg(long)]
        group: String,
        /// How long the pass is valid (at most 7d).
        #[arg(long, default_value = "8h")]
        ttl: String,
        /// Path to proxy.yaml.
        #[arg(long, short, default_value = "proxy.yaml")]
        config: PathBuf,
    },
    /// Run the proxy with built-in blue/green upstreams on the config's addresses.
    Demo {
        /// Config to run instead of the embedded one (src/demo.yaml: two routes, /api/ and the rest).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// mimalloc instead of glibc malloc: the request path allocates small, short-
/// lived objects (header maps, futures, buffers) from one thread at a time,
/// which glibc serves at several times the cost (benches/README.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc 3's `mi_option_purge_delay` (the enum in its `mimalloc.h`); the
/// test below checks that the index still holds that option's 1000 ms default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc 3's `mi_option_allow_thp` (same enum; default 1, checked below).
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// mimalloc 3 keeps freed pages resident for a second, and does its purging
/// only when it is next called at page level. A proxy whose connections have
/// all gone idle (parked, their buffers freed) makes no such calls, so that
/// memory would stay resident for as long as the quiet lasts. So: the purge
/// delay of mimalloc 2 (10 ms), and [`release_idle_memory`] on every runtime.
///
/// And no transparent huge pages. mimalloc asks for them on its arenas
/// (`MADV_HUGEPAGE`), and every 10 s khugepaged then folds the sparse pages
/// left by parked connections into whole 2 MiB pages: with 9 500 idle
/// connections, RSS climbed by 10-12 MiB per scan, from 0.5 to over 4 KiB
/// per connection within half a minute (benches/README.md, memory). A
/// proxy's working set is small and TLB misses are not what it waits on.
/// `MIMALLOC_ALLOW_THP=1` in the environment keeps them.
fn tune_allocator() {
    tune_allocator_keeping_thp(std::env::var_os("MIMALLOC_ALLOW_THP").is_some());
}

/// [`tune_allocator`], told whether to keep huge pages.
fn tune_allocator_keeping_thp(keep_thp: bool) {
    #[allow(unsafe_code)]
    // SAFETY: sets one integer option; no pointers are involved, and mimalloc
    // allows options to be set at any time.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10);
    }
    if !keep_thp {
        // The first arena was mapped (and advised) before main; new ones
        // are not, and the prctl keeps khugepaged off the first.
        #[allow(unsafe_code)]
        // SAFETY: an integer option, and a prctl that takes integers only
        // and changes nothing but this process's huge-page eligibility.
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0);
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

/// Once a second, on a thread that served no request in that second, lets
/// mimalloc free the thread's empty pages and return purged memory to the OS
/// (a walk of the thread's page queues). A thread that is serving calls into
/// mimalloc all the time, which purges as it goes; the walk there only
/// stalled requests (p99 at 64 keep-alive connections for new clients: 2.9-3.0
/// ms with it, 2.2-2.5 without).
async fn release_idle_memory() {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seen = u64::MAX;
    loop {
        tick.tick().await;
        let served = switchyard::proxy::served_on_this_thread();
        if served == seen {
            #[allow(unsafe_code)]
            // SAFETY: no arguments but a flag; collects the calling thread's heap.
            unsafe {
                libmimalloc_sys::mi_collect(false);
            }
        }
        seen = served;
    }
}

mod pass_cli;
mod rollout_cli;

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    switchyard::tls::install_default_provider();
    init_tracing();
    let result = match cli.command.unwrap_or(Command::Run {
        config: PathBuf::from("proxy.yaml"),
    }) {
        Command::Run { config: path } => {
            let opts = ValidateOptions::default();
            config::load_file(&path, &SystemKeys, opts)
                .map_err(anyhow::Error::from)
                .and_then(|(config, text)| {
                    runtime(config.run.workers).and_then(|(rt, workers)| {
                        rt.block_on(run(&path, opts, config, text, &workers))
                    })
                })
        }
        Command::Check {
            config,
            config_flag,
            against,
            no_secrets,
        } => {
            let path = config
                .or(config_flag)
                .unwrap_or_else(|| PathBuf::from("proxy.yaml"));
            return check(&path, against.as_deref(), no_secrets);
        }
        Command::Keygen => {
            keygen();
            Ok(())
        }
        Command::Healthcheck { url, timeout } => healthcheck(&url, Duration::from_secs(timeout)),
        Command::Rollout {
            action,
            route,
            config,
            admin,
            token_file,
        } => rollout_cli::run(&rollout_cli::Call {
            action: &action,
            route: route.as_deref(),
            config: &config,
            admin,
            token_file: token_file.as_deref(),
        }),
        Command::Pass {
            route,
            group,
            ttl,
            config,
        } => pass_cli::run(&pass_cli::Call {
            config: &config,
            route: route.as_deref(),
            group: &group,
            ttl: &ttl,
        }),
        Command::Demo { config: path } => load_demo(path.as_deref()).and_then(|(config, text)| {
            runtime(config.run.workers).and_then(|(rt, workers)| {
                rt.block_on(run_demo(path.as_deref(), config, text, &workers))
            })
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// `GET url` over a plain TCP connection, by hand: the probe must work in a
/// distroless image and needs no HTTP client beyond a status line.
fn healthcheck(url: &str, timeout: Duration) -> Result<()> {
    use std::io::{Read, Write};
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// URLs can be probed"))?;
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| rest.split_at(i));
    let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)
        .with_context(|| format!("{url}: cannot resolve {authority}"))?
        .next()
        .with_context(|| format!("{url}: {authority} has no address"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("{url}: cannot connect"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\nuser-agent: switchyard-healthcheck\r\n\r\n"
    )?;
    let mut head = Vec::new();
    stream
        .take(4096)
        .read_to_end(&mut head)
        .with_context(|| format!("{url}: no answer"))?;
    let head = String::from_utf8_lossy(&head);
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .with_context(|| format!("{url}: not an HTTP answer: {status_line:?}"))?;
    anyhow::ensure!((200..300).contains(&status), "{url}: {status_line}");
    println!("{url}: {status_line}");
    Ok(())
}

/// The runtimes, sized by `run.workers` (default: one per core this process may
/// run on): a current-thread runtime on the main thread, and one more on a
/// thread of its own for each further worker (thread-per-core, as nginx's and
/// HAProxy's workers are: a connection stays on the thread that accepted it,
/// so the request path has no work stealing and no cross-thread wake-ups).
fn runtime(workers: Option<u32>) -> Result<(tokio::runtime::Runtime, Vec<tokio::runtime::Handle>)> {
    let n = workers.map_or_else(
        || std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        |w| w as usize,
    );
    let build = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")
    };
    let main = build()?;
    // Runs whenever the main thread's runtime does (inside `block_on`).
    main.spawn(release_idle_memory());
    let mut extra = Vec::with_capacity(n.saturating_sub(1));
    for i in 1..n {
        let rt = build()?;
        extra.push(rt.handle().clone());
        std::thread::Builder::new()
            .name(format!("switchyard-worker-{i}"))
            // Runs until the process exits; the main thread's shutdown has
            // drained its connections by then.
            .spawn(move || rt.block_on(release_idle_memory()))
            .context("cannot start a worker thread")?;
    }
    Ok((main, extra))
}

fn source(path: &Path, opts: ValidateOptions) -> ConfigSource {
    ConfigSource {
        path: path.to_path_buf(),
        keys: Arc::new(SystemKeys),
        opts,
    }
}

async fn run(
    path: &Path,
    opts: ValidateOptions,
    config: Config,
    text: String,
    workers: &[tokio::runtime::Handle],
) -> Result<()> {
    let stop = app::shutdown_signal();
    let running = app::start_with_workers(
        config,
        content_hash(&text),
        Some(source(path, opts)),
        workers,
    )
    .await
    .context("cannot start the proxy")?;
    stop.await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

/// `check` refuses what `run` refuses: a key whose variable or file cannot
/// be read is an error, unless `no_secrets` says the secrets are elsewhere.
fn check(path: &Path, against: Option<&Path>, no_secrets: bool) -> ExitCode {
    quiet_on_closed_pipe();
    let opts = ValidateOptions {
        ephemeral_key_if_missing: no_secrets,
    };
    let load = |p: &Path| config::load_file(p, &SystemKeys, opts).map_err(|e| eprintln!("{e}"));
    let Ok((cfg, _)) = load(path) else {
        return ExitCode::FAILURE;
    };
    print_summary(path, &cfg);
    if !print_rollouts(path, &cfg) {
        return ExitCode::FAILURE;
    }
    let Some(old_path) = against else {
        return ExitCode::SUCCESS;
    };
    let Ok((old, _)) = load(old_path) else {
        eprintln!("(the config to compare against is invalid)");
        return ExitCode::FAILURE;
    };
    let lines = diff::describe(&old, &cfg);
    println!("\nagainst {}:", old_path.display());
    if lines.is_empty() {
        println!("  no change in effect");
    }
    for l in &lines {
        println!("  - {l}");
    }
    let tls = |c: &Config| c.tls.as_ref().map(|t| t.listen);
    if old.listen != cfg.listen || old.admin != cfg.admin || tls(&old) != tls(&cfg) {
        println!(
            "\n  a running proxy refuses this edit as a reload: listen/admin addresses change only on restart"
        );
    }
    ExitCode::SUCCESS
}

fn print_summary(path: &Path, cfg: &Config) {
    println!("{}: ok", path.display());
    if let Some(l) = cfg.listen {
        print!("  listen {l}  ");
    } else {
        print!("  ");
    }
    println!("admin {}", cfg.admin);
    if let Some(t) = &cfg.tls {
        println!(
            "  tls.listen {}  {} certificate(s){}",
            t.listen,
            t.certs.len(),
            if t.redirect_http {
                ", plain HTTP redirects to HTTPS"
            } else {
                ""
            }
        );
    }
    println!(
        "  form: {}",
        match cfg.form {
            config::ConfigForm::GroupsOnly =>
                "groups only (one catch-all route, `groups:` weights)",
            config::ConfigForm::Routes => "routes (each route splits between `groups:`)",
        }
    );
    let s = &cfg.sticky;
    println!(
        "  sticky{} cookie `{}`, ttl {}, {} key(s)",
        if cfg.form == config::ConfigForm::Routes {
            " defaults:"
        } else {
            ""
        },
        s.cookie_name.as_str(),
        config::duration::format_duration(std::time::Duration::from_secs(u64::from(s.ttl.secs()))),
        s.keys.len()
    );
    if s.ephemeral_key {
        println!(
            "  note: --no-secrets, and no key source could be read here: key material was not checked"
        );
    }
    let st = &s.store;
    match st.kind {
        config::StoreKind::Cookie => {}
        config::StoreKind::Memory => println!(
            "  sessions in memory (this process only), up to {} records",
            st.cache_size
        ),
        config::StoreKind::Redis(_) => println!(
            "  sessions in Redis, timeout {}, cache {} records for {}",
            config::duration::format_duration(st.timeout),
            st.cache_size,
            config::duration::format_duration(st.cache_ttl)
        ),
    }
    if cfg.form == config::ConfigForm::Routes {
        print_routes(cfg);
    }
    for g in &cfg.groups {
        if cfg.form == config::ConfigForm::Routes {
            println!("  group {}", g.name.as_str());
        } else {
            let share = 100.0 * cfg.share(g);
            let drain = if g.drain { "  (draining)" } else { "" };
            println!(
                "  group {:<12} weight {:>6}  share {:>6.2}%{drain}",
                g.name.as_str(),
                g.weight.get(),
                share
            );
        }
        if g.tls.is_some() || g.protocol != config::UpstreamProtocol::Http1 {
            let proto = if g.protocol == config::UpstreamProtocol::Http2 {
                "h2"
            } else {
                "http1"
            };
            let tls = if g.tls.is_some() { " over TLS" } else { "" };
            println!("    upstreams speak {proto}{tls}");
        }
        for t in &g.targets {
            println!(
                "    target {:<28} weight {}",
                t.address.as_str(),
                t.weight.get()
            );
        }
    }
}

/// Each rollout's plan, and where it stands when its state is in a file here.
/// Prints each route's rollout plan and where its state stands; false
/// when the state file exists but cannot be read (the proxy would hold
/// every plan), which `check` reports as an error.
fn print_rollouts(path: &Path, cfg: &Config) -> bool {
    use config::duration::format_duration as d;
    let state = switchyard::rollout::state_file(cfg, Some(path));
    let redis = matches!(cfg.sticky.store.kind, config::StoreKind::Redis(_));
    let planned = cfg.routes.iter().any(|r| r.rollout.is_some());
    let read = match state.as_deref().filter(|_| !redis && planned) {
        Some(f) => switchyard::rollout::backend::read_state_file(f),
        None => Ok(None),
    };
    let saved = match read {
        Ok(records) => serde_json::to_value(records.unwrap_or_default()).unwrap_or_default(),
        Err(e) => {
            eprintln!(
                "error: the rollout state file is not readable: {e}\n  a running proxy holds every plan on its YAML split until `switchyard rollout reset ROUTE` or the file is deleted"
            );
            return false;
        }
    };
    for r in &cfg.routes {
        let Some(p) = &r.rollout else { continue };
        let name = |g: usize| cfg.groups.get(g).map_or("?", |g| g.name.as_str());
        let after = match p.after_promote {
            config::AfterPromote::Drain => "drained",
            config::AfterPromote::Keep => "kept at weight 0",
        };
        println!(
            "  rollout on route {}: {}; then promote ({} {after})",
            r.name.as_str(),
            p.summary(name),
            name(p.stable)
        );
        let a = &p.analysis;
        println!(
            "    checks every {} over >= {} canary requests: 5xx ratio <= {}, <= stable's + {}, p{} <= {}x stable's (floor {}){}; abort after {} failed",
            d(a.interval),
            a.min_requests,
            a.max_error_ratio,
            a.max_error_ratio_over_stable,
            a.quantile * 100.0,
            a.max_latency_over_stable,
            d(a.latency_floor),
            a.max_latency
                .map(|m| format!(", <= {}", d(m)))
                .unwrap_or_default(),
            a.failures_to_abort
        );
        let at = &saved[r.name.as_str()];
        match (&state, redis) {
            (_, true) => println!(
                "    state in Redis: `switchyard rollout status {}` shows where it stands",
                r.name.as_str()
            ),
            (Some(f), false) if at.is_object() => println!(
                "    state ({}): {} at step {}/{}; {}",
                f.display(),
                at["phase"].as_str().unwrap_or("?"),
                at["step"].as_u64().unwrap_or(0) + 1,
                p.steps.len(),
                at["reason"].as_str().unwrap_or("")
            ),
            (Some(f), false) => println!("    state ({}): not started", f.display()),
            (None, false) => println!("    state: in memory"),
        }
        if let (Some(f), false) = (&state, redis)
            && let Err(e) = probe_writable(f)
        {
            println!(
                "    warning: cannot write beside {} ({e}): the plan will not advance; set `rollout_state_file` to a writable path (or use the Redis store)",
                f.display()
            );
        }
    }
    true
}

/// Whether a file can be created beside `file` (where the state is
/// written, by a temporary file renamed over it): creates one and removes it.
fn probe_writable(file: &Path) -> std::io::Result<()> {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let probe = dir.join(format!(".switchyard-check-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

/// Each route in the order it is evaluated within a host tier (the order
/// written): what it takes, its cookie, and its split.
fn print_routes(cfg: &Config) {
    for r in &cfg.routes {
        println!("  route {}: {}", r.name.as_str(), r.matches);
        println!(
            "    cookie `{}` (path {}), ttl {}",
            r.sticky.cookie_name.as_str(),
            r.sticky.path,
            config::duration::format_duration(std::time::Duration::from_secs(u64::from(
                r.sticky.ttl.secs()
            )))
        );
        for s in &r.split {
            let drain = if s.drain { "  (draining)" } else { "" };
            println!(
                "    -> {:<12} weight {:>6}  share {:>6.2}%{drain}",
                cfg.groups[s.group].name.as_str(),
                s.weight.get(),
                100.0 * r.share_of(s.group)
            );
        }
    }
}

/// A command that prints and ends (`check | head`) is ended by SIGPIPE, as
/// other command line tools are, instead of panicking in `println!`. Only
/// for such commands: the proxy itself needs EPIPE as an error on sockets.
fn quiet_on_closed_pipe() {
    #[allow(unsafe_code)]
    // SAFETY: restores the default disposition of one signal; no handler,
    // no pointers.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn keygen() {
    quiet_on_closed_pipe();
    let mut key = [0u8; 32];
    rand::fill(&mut key);
    println!("{}", base64::engine::general_purpose::STANDARD.encode(key));
}

const DEMO_OPTS: ValidateOptions = ValidateOptions {
    ephemeral_key_if_missing: true,
};

fn load_demo(path: Option<&Path>) -> Result<(Config, String)> {
    let opts = DEMO_OPTS;
    Ok(match path {
        Some(p) => config::load_file(p, &SystemKeys, opts)?,
        None => (
            config::load_str(
                demo::EMBEDDED_CONFIG,
                "embedded demo.yaml",
                &SystemKeys,
                opts,
            )?,
            demo::EMBEDDED_CONFIG.to_owned(),
        ),
    })
}

async fn run_demo(
    path: Option<&Path>,
    mut config: Config,
    text: String,
    workers: &[tokio::runtime::Handle],
) -> Result<()> {
    let opts = DEMO_OPTS;
    if config.sticky.ephemeral_key {
        tracing::warn!("no cookie key configured: signing with a random key made for this run");
    }
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for up in demo::upstreams(&config) {
        let listener = TcpListener::bind(up.address)
            .await
            .with_context(|| format!("cannot start demo upstream {} on {}", up.name, up.address))?;
        tracing::info!(upstream = %up.name, address = %up.address, "demo upstream listening");
        tasks.push(tokio::spawn(demo::serve_upstream(listener, up, rx.clone())));
    }
    // The embedded config gains an HTTPS listener with a certificate made for
    // this run. A config file is served as written (a reload of it could not
    // keep a listener the file does not name).
    let mut ca_file = None;
    if path.is_none() && config.tls.is_none() {
        let pem = demo::add_self_signed_https(&mut config, demo::DEMO_HTTPS)
            .map_err(anyhow::Error::msg)?;
        let file = std::env::temp_dir().join("switchyard-demo-cert.pem");
        match std::fs::write(&file, pem) {
            Ok(()) => ca_file = Some(file),
            Err(e) => {
                tracing::warn!(error = %e, "cannot write the demo certificate for curl --cacert")
            }
        }
    }
    let shown = config.clone();
    let stop = app::shutdown_signal();
    let running = app::start_with_workers(
        config,
        content_hash(&text),
        path.map(|p| source(p, opts)),
        workers,
    )
    .await
    .context("cannot start the proxy")?;
    print_demo_help(&running, &shown, ca_file.as_deref());
    stop.await;
    tracing::info!("shutting down");
    running.shutdown().await;
    let _ = tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

fn print_demo_help(running: &app::Running, config: &Config, ca: Option<&Path>) {
    let p = running.proxy_addr;
    let a = running.admin_addr;
    let cookies: Vec<String> = config
        .routes
        .iter()
        .map(|r| format!("{} ({})", r.sticky.cookie_name.as_str(), r.name))
        .collect();
    let mut help = format!(
        "\nswitchyard demo is running ({} route{}; pins: {}). Try, in another terminal:\n\n\
         # 1. a new client: the response carries Set-Cookie and names its upstream\n\
         curl -si -c /tmp/switchyard.jar http://{p}/ | grep -Ei '^(set-cookie|x-upstream)'\n\n\
         # 2. the same client again: no new cookie, same upstream, 20 times over\n\
         for i in $(seq 20); do curl -s -b /tmp/switchyard.jar -o /dev/null -w '%header{{x-upstream}}\\n' http://{p}/; done | sort | uniq -c\n\n",
        config.routes.len(),
        if config.routes.len() == 1 { "" } else { "s" },
        cookies.join(", ")
    );
    if config.routes.iter().any(|r| r.name.as_str() == "api") {
        help.push_str(&format!(
            "# 3. the api route: its own split and its own pin, beside the first\n\
             curl -si -b /tmp/switchyard.jar -c /tmp/switchyard.jar http://{p}/api/orders | grep -Ei '^(set-cookie|x-upstream)'\n\n"
        ));
    }
    help.push_str(&format!(
        "# 4. the metrics: assignments by group and reason\n\
         curl -s http://{a}/metrics | grep -E '^switchyard_(assignments|requests)_total'\n\n"
    ));
    if let (Some(t), Some(ca)) = (running.tls_addr, ca) {
        help.push_str(&format!(
            "# 5. HTTPS with HTTP/2 on {t}, with the certificate made for this run\n\
             curl -si --http2 --cacert {ca} https://localhost:{port}/ | grep -Ei '^(HTTP|set-cookie|x-upstream)'\n\n",
            ca = ca.display(),
            port = t.port()
        ));
    }
    help.push_str("Ctrl-C stops everything.\n");
    println!("{help}");
}

#[cfg(test)]
mod tests {
    /// A mimalloc upgrade that renumbers its options would make
    /// `tune_allocator` set some other options; this catches it. One test,
    /// as `tune_allocator` changes the whole process.
    #[test]
    fn tune_allocator_sets_the_purge_delay_and_turns_huge_pages_off() {
        let get = |o| {
            #[allow(unsafe_code)]
            // SAFETY: reads one integer option.
            unsafe {
                libmimalloc_sys::mi_option_get(o)
            }
        };
        assert_eq!(
            get(super::MI_OPTION_PURGE_DELAY),
            1000,
            "mimalloc's purge_delay default moved or renumbered"
        );
        // mimalloc reads MIMALLOC_ALLOW_THP itself: the default is 1 only
        // where the test's environment does not set it.
        let from_env = std::env::var_os("MIMALLOC_ALLOW_THP").map(|v| v != "0");
        assert_eq!(
            get(super::MI_OPTION_ALLOW_THP),
            std::ffi::c_long::from(from_env.unwrap_or(true)),
            "mimalloc's allow_thp default moved or renumbered"
        );
        // Keeping huge pages changes nothing of them; turning them off
        // turns the option and the process's eligibility off, whatever
        // the environment says (every check runs, none is gated).
        let before = get(super::MI_OPTION_ALLOW_THP);
        super::tune_allocator_keeping_thp(true);
        assert_eq!(get(super::MI_OPTION_PURGE_DELAY), 10);
        assert_eq!(get(super::MI_OPTION_ALLOW_THP), before);
        super::tune_allocator_keeping_thp(false);
        assert_eq!(get(super::MI_OPTION_ALLOW_THP), 0);
        #[allow(unsafe_code)]
        // SAFETY: a prctl query with integer arguments.
        let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(disabled, 1, "PR_SET_THP_DISABLE did not hold");
    }
}
