//! Replica lag: how far behind the primary each replica is, whether that is too far, and the
//! recent history an operator needs to choose the threshold. Pure code: no IO, no clock of
//! its own. Every function that needs the time takes `now: Instant` from the caller, so the
//! monitor passes `Instant::now()` and tests pass a made-up timeline.
//!
//! # What is measured
//!
//! The monitor reads the primary's `pg_current_wal_lsn()` and each replica's
//! `pg_last_wal_replay_lsn()` and `pg_is_in_recovery()` on every check (every
//! `lag_check_interval`, 250 ms by default). From those:
//!
//! - **byte lag** = primary LSN − replica replay LSN (saturating at zero: a replica checked a
//!   moment after the primary may already be past the primary's sample). Always the primary
//!   minus the replica: prefer [`PrimaryTimeline::lag_bytes`], which takes only the replica's
//!   LSN, so the two cannot be swapped (a peer's lag ban never fired because they were).
//! - **time lag**: how long ago the primary was at the position the replica has replayed to.
//!   [`PrimaryTimeline`] keeps pgsplit's own record of the primary's LSN over time; the time
//!   lag is `now − (time of the first primary sample past the replica's LSN)`. It is zero when
//!   the replica has replayed everything the primary had at its last sample, so it **does not
//!   grow while the primary is idle**. Its resolution is one check interval and it errs low by
//!   at most one interval (the primary passed the replica's position some time between two
//!   samples, and the later one is used). When the timeline does not reach back far enough
//!   (pgsplit just started, or the replica is further behind than the timeline keeps), the time
//!   lag is unknown (`None`): then it is at least [`PrimaryTimeline::span`].
//!
//! `now() - pg_last_xact_replay_timestamp()` is **not** used: it is the age of the last
//! transaction the replica replayed, so on an idle primary it grows without bound although the
//! replica is perfectly up to date, and a lag guard built on it ejects every replica of a quiet
//! database. It also needs the two hosts' clocks to agree.
//!
//! # Decisions
//!
//! [`ReplicaHealth`] turns each check into the replica's state (healthy, lagging, down,
//! promoted). Ejection is immediate (lag above `max_bytes` or `max_lag`, either one, or
//! unknown); readmission has **hysteresis** in both level and time: the lag must stay at or
//! below `readmit_fraction` × each threshold for `readmit_after` without a break. So a lag that
//! hovers around the threshold ejects once and stays out, instead of flapping the replica in and
//! out of the read rotation. Consecutive failed checks take a replica down; consecutive
//! successful ones bring it back. A node that is no longer in recovery is `Promoted`: it is not a
//! replica any more and must leave the rotation (log it loudly).
//!
//! [`LagHistory`] keeps the last five minutes of samples per replica for `SHOW LAG`:
//! percentiles, and the share of the time the replica would have been ejected at the current
//! threshold, at half and at double it.
//!
//! # Wiring (for the monitor)
//!
//! ```text
//! each tick:  timeline.record(now, primary_lsn)            (when the primary check succeeds)
//!             per replica, after reading (replay_lsn, in_recovery):
//!               lag_bytes = timeline.lag_bytes(replay_lsn).unwrap_or(0)
//!               lag       = timeline.lag_seconds(replay_lsn, now)   // None = unknown
//!               sample    = Sample::Ok { lag_bytes, lag, in_recovery }   (or Sample::Failed)
//!               history.record(now, lag_bytes, lag)              (Ok samples only)
//!               if let Some(t) = health.observe(&sample, now) { log t; update topology }
//! ```
//!
//! With no primary sample yet, `lag_seconds` is `None`, so the replica counts as not fresh
//! whatever `lag_bytes` says. If the primary's own check keeps failing, the timeline goes stale
//! ([`PrimaryTimeline::last_recorded`]); whether to pass `lag: None` then is the monitor's call.
//!
//! Formatting: [`format_bytes`] and [`format_duration`] write the figures in transition reasons
//! ("8.2 MB", "350 ms", "2.1 s"). Sizes are 1024-based, like `ByteSize` in the config, so a
//! `2MB` threshold reads back as "2.0 MB".

pub mod board;
pub mod history;
pub mod state;
pub mod timeline;

use std::time::Duration;

pub use self::board::{LagBoard, PrimaryReport, ReplicaReport, RoleReport};
pub use self::history::{LagHistory, LagPoint, LagSummary, Percentiles};
pub use self::state::{
    HealthState, LagThresholds, ReplicaHealth, Sample, ThresholdError, Transition,
};
pub use self::timeline::PrimaryTimeline;

/// A byte count for people: `"512 B"`, `"120 kB"`, `"8.2 MB"`, `"1.0 GB"` (1024-based; one
/// decimal below 100 of a unit, none from 100 up).
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["kB", "MB", "GB", "TB", "PB", "EB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    loop {
        let shown = rounded(value);
        if shown >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
            continue;
        }
        return with_unit(shown, UNITS[unit]);
    }
}

/// A duration for people: `"0 ms"`, `"350 ms"`, `"2.1 s"`, `"12.5 min"`, `"3.0 h"`, `"2.0 d"`
/// (whole milliseconds below a second; one decimal below 100 of a unit, none from 100 up).
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_nanos().saturating_add(500_000) / 1_000_000;
    if millis < 1000 {
        return format!("{millis} ms");
    }
    // (divisor to the next unit, unit)
    const UNITS: [(f64, &str); 4] = [
        (60.0, "s"),
        (60.0, "min"),
        (24.0, "h"),
        (f64::INFINITY, "d"),
    ];
    let mut value = duration.as_secs_f64();
    for (next, unit) in UNITS {
        let shown = rounded(value);
        if shown < next {
            return with_unit(shown, unit);
        }
        value /= next;
    }
    unreachable!("the last unit has no upper bound")
}

/// `value` rounded as [`with_unit`] will print it: to one decimal below 100, whole above.
fn rounded(value: f64) -> f64 {
    let tenths = (value * 10.0).round() / 10.0;
    if tenths < 100.0 {
        tenths
    } else {
        value.round()
    }
}

fn with_unit(shown: f64, unit: &str) -> String {
    if shown < 100.0 {
        format!("{shown:.1} {unit}")
    } else {
        format!("{shown:.0} {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_like_a_person_writes_them() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1024), "1.0 kB");
        assert_eq!(format_bytes(120 * 1024), "120 kB");
        assert_eq!(format_bytes(2 << 20), "2.0 MB");
        assert_eq!(format_bytes(8_598_323), "8.2 MB");
        assert_eq!(format_bytes(99 * 1024 + 1000), "100 kB");
        assert_eq!(
            format_bytes((1 << 20) - 1),
            "1.0 MB",
            "rounding moves up a unit"
        );
        assert_eq!(format_bytes(1 << 30), "1.0 GB");
        assert_eq!(format_bytes(u64::MAX), "16.0 EB");
    }

    #[test]
    fn durations_read_like_a_person_writes_them() {
        assert_eq!(format_duration(Duration::ZERO), "0 ms");
        assert_eq!(format_duration(Duration::from_micros(400)), "0 ms");
        assert_eq!(format_duration(Duration::from_millis(350)), "350 ms");
        assert_eq!(format_duration(Duration::from_micros(999_600)), "1.0 s");
        assert_eq!(format_duration(Duration::from_millis(1000)), "1.0 s");
        assert_eq!(format_duration(Duration::from_millis(2_100)), "2.1 s");
        assert_eq!(format_duration(Duration::from_millis(59_960)), "1.0 min");
        assert_eq!(format_duration(Duration::from_secs(750)), "12.5 min");
        assert_eq!(format_duration(Duration::from_secs(3 * 3600)), "3.0 h");
        assert_eq!(format_duration(Duration::from_secs(2 * 86_400)), "2.0 d");
        assert_eq!(format_duration(Duration::from_secs(200 * 86_400)), "200 d");
        // No panic at the extreme.
        assert!(format_duration(Duration::MAX).ends_with(" d"));
    }
}
