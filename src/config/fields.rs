//! The field readers every part of validation shares: the error list with
//! its YAML lines, and the checks of addresses, durations and integers.

use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderName;
use serde_saphyr::{Location, Spanned};

use super::duration::parse_duration;
use super::error::ConfigError;

/// Options of one validation run.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidateOptions {
    /// When no key can be read, sign with a random key made now (demo only).
    pub ephemeral_key_if_missing: bool,
}

/// The 1-based line of a parsed value, when known.
pub(super) fn line(loc: &Location) -> Option<u64> {
    match loc.line() {
        0 => None,
        n => Some(n),
    }
}

/// Every error found so far, each with its YAML path and line.
pub(super) struct Errors(pub(super) Vec<ConfigError>);

impl Errors {
    pub(super) fn at<T>(
        &mut self,
        path: impl Into<String>,
        spanned: &Spanned<T>,
        msg: impl Into<String>,
    ) {
        self.0
            .push(ConfigError::new(path, line(&spanned.referenced), msg));
    }
}

pub(super) fn socket_addr(
    errs: &mut Errors,
    path: &str,
    s: &Spanned<String>,
) -> Option<SocketAddr> {
    s.value
        .parse()
        .map_err(|_| {
            errs.at(
                path,
                s,
                format!(
                    "`{}` is not an address like 127.0.0.1:8080 or [::]:8080",
                    s.value
                ),
            )
        })
        .ok()
}

pub(super) fn duration_field(
    errs: &mut Errors,
    path: &str,
    s: &Option<Spanned<String>>,
    default: Duration,
) -> Duration {
    let d = duration_or_zero(errs, path, s, default);
    match s {
        Some(s) if d.is_zero() => {
            errs.at(path, s, "must be greater than zero");
            default
        }
        _ => d,
    }
}

/// An integer in `range`, or `default` when absent.
pub(super) fn int_field(
    errs: &mut Errors,
    path: &str,
    s: &Option<Spanned<i64>>,
    range: std::ops::RangeInclusive<u32>,
    default: u32,
) -> u32 {
    let Some(s) = s else { return default };
    match u32::try_from(s.value) {
        Ok(v) if range.contains(&v) => v,
        _ => {
            errs.at(
                path,
                s,
                format!(
                    "expected an integer from {} to {}",
                    range.start(),
                    range.end()
                ),
            );
            default
        }
    }
}

/// A duration that may be zero (meaning off), or `default` when absent.
pub(super) fn duration_or_zero(
    errs: &mut Errors,
    path: &str,
    s: &Option<Spanned<String>>,
    default: Duration,
) -> Duration {
    let Some(s) = s else { return default };
    match parse_duration(&s.value) {
        Ok(d) => d,
        Err(m) => {
            errs.at(path, s, m);
            default
        }
    }
}

pub(super) fn header_name(s: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(s.as_bytes()).map_err(|_| format!("`{s}` is not a valid header name"))
}
