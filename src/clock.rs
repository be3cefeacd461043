//! The proxy's two clocks, read in one place: a process-local monotonic
//! clock in milliseconds (health, ejection, breakers, budgets) and the wall
//! clock in Unix seconds (cookie and session expiry, which other processes
//! and restarts must agree on).

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds on a process-local monotonic clock, starting at 1 (0 means "never").
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    start.elapsed().as_millis() as u64 + 1
}

/// Seconds since the Unix epoch (0 if the system clock is before it).
pub fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs().min(u64::from(u32::MAX)) as u32)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch: for state other processes and
/// restarts read (a rollout's step began at this time).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
