//! switchyard: an edge reverse proxy for blue/green and canary deployments.
pub mod assign;
pub mod config;
pub mod metrics;
pub mod state;
