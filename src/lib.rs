//! switchyard: an edge reverse proxy for blue/green and canary deployments.
//!
//! ```text
//!  proxy.yaml --config--> Config --state::Snapshot::build--> ArcSwap<Snapshot>
//!      ^  reload: inotify / SIGHUP / periodic -> same path -> one atomic store |
//!  client --listener (native HTTP/1.1 | hyper: TLS, h2, upgrades)-->
//!         proxy (one snapshot load per request) ----+
//!            |             |-> assign::decide   (pure: cookie, bucket, group)
//!            |             |-> balance::pick    (target in the group)
//!            |             '-> upstream (pooled native HTTP/1.1 | hyper-util: TLS, h2)
//!            |                   -> response + Set-Cookie
//!            |             '-> store (sticky.store: memory | redis; session id in the cookie)
//!            '-> metrics (label handles cached in the snapshot)  <- admin: /metrics /status /sessions
//!  rollout: each tick reads those counters (never a request) -> verdict -> step
//!           -> Shared::set_overrides -> a new snapshot with the step's weights
//! ```
//!
//! Layers (imports point down only; `python3 ../shared/tools/layers.py`
//! checks it in `.ci/run`):
//!
//! ```text
//!  app, demo                                  wiring, shutdown, the demo
//!  listener                                   accept, native HTTP/1 and hyper servers
//!  proxy                                      the request path: admit -> decide -> target
//!                                             -> pin -> rewrite -> forward -> respond
//!  admin                                      admin API (/status, /sessions, /rollouts)
//!  rollout   balance   checks   reload        rollouts (steps, analysis, shared state),
//!                                             target choice, health checks, reloads
//!  state                                      Snapshot + live per-target state
//!  store     upstream                         sessions; target pools and retry budget
//!  metrics   health   body                    label handles; health state machine; body adapters
//!  assign    route                            pure decision over a Routing view (and tester
//!                                             passes); which route, on the normalized path
//!  config                                     raw -> validated Config
//!  clock  h1  tls  batch  tunnels            ground (h1: the HTTP/1 wire, one copy for
//!  proxy_protocol                             the native server and the native pool;
//!                                             proxy_protocol: the PROXY v1/v2 header)
//! ```
//!
//! Glossary: a **group** is a named set of upstream **targets** running one version
//! (blue, green) with a weight; an **assignment** pins a client to a group and a
//! target until it expires, recorded in an HMAC-signed cookie; a **snapshot** is the
//! immutable runtime form of one config.

#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod app;
pub mod assign;
pub mod balance;
pub mod batch;
pub mod body;
pub mod checks;
pub mod clock;
pub mod config;
pub mod demo;
pub mod h1;
pub mod health;
pub mod listener;
pub mod metrics;
pub mod proxy;
pub mod proxy_protocol;
pub mod reload;
pub mod rollout;
pub mod route;
pub mod state;
pub mod store;
pub mod tls;
pub mod tunnels;
pub mod upstream;
