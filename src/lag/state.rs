//! One replica's health: the state machine that turns each monitor check into healthy,
//! lagging, down or promoted, with hysteresis so a lag that hovers around the threshold does
//! not flap the replica in and out of the read rotation.
//!
//! Rules, applied by [`ReplicaHealth::observe`] to each check:
//!
//! - **healthy → lagging** as soon as one check's lag is above `max_bytes` or above `max_lag`
//!   (either one ejects), or the time lag is unknown (unknown is not fresh).
//! - **lagging → healthy** only when the byte lag *and* the time lag stay at or below
//!   `readmit_fraction` × their thresholds for `readmit_after` without a break. Any check above
//!   that level, with unknown lag, or failed restarts the wait. Between the readmit level and
//!   the threshold the replica stays out.
//! - **healthy / lagging → down** after `down_after_failures` consecutive failed checks.
//! - **down → healthy** after `up_after_successes` consecutive successful checks, if the last
//!   one's lag is within the thresholds; otherwise **down → lagging** (and the readmission rule
//!   takes over). The very first check of a replica (pgsplit has just started) takes it up
//!   at once when its lag is within the thresholds, so reads go to replicas from the start.
//! - **any → promoted** when a check finds the node out of recovery: it is a primary now, not a
//!   replica. It leaves that state like down does, once it is back in recovery (rebuilt as a
//!   replica) for `up_after_successes` checks; failed checks leave it promoted.
//!
//! A new [`ReplicaHealth`] starts **down** ("not checked yet"): no reads go to a replica before
//! a check has shown it reachable and fresh.

use std::fmt;
use std::time::{Duration, Instant};

use super::{format_bytes, format_duration};

/// Where a replica stands. Only [`Healthy`](HealthState::Healthy) serves reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthState {
    /// Reachable and fresh enough: in the read rotation.
    Healthy,
    /// Reachable but behind (or lag unknown): out of the read rotation until it catches up.
    Lagging,
    /// Failing checks (or not checked yet): out of the read rotation.
    Down,
    /// No longer in recovery, so no longer a replica: out of the read rotation. Log it loudly.
    Promoted,
}

impl HealthState {
    /// Whether reads may go to the replica.
    pub fn serves_reads(self) -> bool {
        self == HealthState::Healthy
    }

    /// Lower-case name for logs and `SHOW REPLICAS`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Healthy => "healthy",
            HealthState::Lagging => "lagging",
            HealthState::Down => "down",
            HealthState::Promoted => "promoted",
        }
    }
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The outcome of one monitor check of a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sample {
    /// The check ran.
    Ok {
        /// Primary LSN minus the replica's replay LSN (saturating).
        lag_bytes: u64,
        /// Time lag; `None` when unknown (see `PrimaryTimeline::lag_seconds`).
        lag: Option<Duration>,
        /// `pg_is_in_recovery()`; false means the node was promoted.
        in_recovery: bool,
    },
    /// The check failed: connection refused, timeout, error.
    Failed {
        /// What went wrong, for the transition reason.
        reason: String,
    },
}

/// A change of state, to be logged once (loudly when `to` is [`HealthState::Promoted`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: HealthState,
    pub to: HealthState,
    /// Why, with the figures: "lag 8.2 MB > max 2.0 MB", "3 failed checks: connection refused".
    pub reason: String,
    /// When (the `now` of the check that caused it).
    pub at: Instant,
}

impl fmt::Display for Transition {
    /// `healthy -> lagging: lag 8.2 MB > max 2.0 MB`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}: {}", self.from, self.to, self.reason)
    }
}

/// The limits a replica is judged by. Replaceable live through
/// [`ReplicaHealth::set_thresholds`]; [`validate`](LagThresholds::validate) says what is wrong.
///
/// Defaults: `max_bytes` 16 MB, `max_lag` 1 s, `readmit_fraction` 0.5, `readmit_after` 1 s,
/// `down_after_failures` 3, `up_after_successes` 2.
#[derive(Debug, Clone, PartialEq)]
pub struct LagThresholds {
    /// Eject when the byte lag is above this. `None`: bytes do not eject.
    pub max_bytes: Option<u64>,
    /// Eject when the time lag is above this. `None`: time does not eject (unknown time lag
    /// still does).
    pub max_lag: Option<Duration>,
    /// Readmit only at or below this fraction of each threshold. In (0, 1].
    pub readmit_fraction: f64,
    /// ... held without a break for this long. Zero readmits at the first check below.
    pub readmit_after: Duration,
    /// Consecutive failed checks that take a replica down. At least 1.
    pub down_after_failures: u32,
    /// Consecutive successful checks that bring a down replica back. At least 1.
    pub up_after_successes: u32,
}

impl Default for LagThresholds {
    fn default() -> Self {
        LagThresholds {
            max_bytes: Some(16 << 20),
            max_lag: Some(Duration::from_secs(1)),
            readmit_fraction: 0.5,
            readmit_after: Duration::from_secs(1),
            down_after_failures: 3,
            up_after_successes: 2,
        }
    }
}

/// Why a [`LagThresholds`] was refused. [`field`](ThresholdError::field) names the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ThresholdError {
    #[error("max_bytes and max_lag are both unset: set a byte size, a duration or both")]
    NoLimit,
    #[error("max_bytes must be greater than 0 (leave it unset to judge by time only)")]
    ZeroBytes,
    #[error("max_lag must be greater than 0 (leave it unset to judge by bytes only)")]
    ZeroLag,
    #[error("readmit_fraction must be greater than 0 and at most 1, not {0}")]
    Fraction(f64),
    #[error("down_after_failures must be at least 1")]
    ZeroFailures,
    #[error("up_after_successes must be at least 1")]
    ZeroSuccesses,
}

impl ThresholdError {
    /// The field the error is about (`"max_bytes"` for [`NoLimit`](ThresholdError::NoLimit)).
    pub fn field(&self) -> &'static str {
        match self {
            ThresholdError::NoLimit | ThresholdError::ZeroBytes => "max_bytes",
            ThresholdError::ZeroLag => "max_lag",
            ThresholdError::Fraction(_) => "readmit_fraction",
            ThresholdError::ZeroFailures => "down_after_failures",
            ThresholdError::ZeroSuccesses => "up_after_successes",
        }
    }
}

/// How one check's lag compares with the thresholds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Above a threshold, or unknown: eject. The reason has the figures.
    Exceeds(String),
    /// Within the thresholds but above the readmit level.
    Within,
    /// At or below the readmit level in every dimension that has a threshold.
    Readmittable,
}

impl LagThresholds {
    /// Checks the rules: a byte or time limit (or both), neither zero, a readmit fraction in
    /// (0, 1], and failure / success counts of at least 1. Returns the first problem.
    pub fn validate(&self) -> Result<(), ThresholdError> {
        if self.max_bytes.is_none() && self.max_lag.is_none() {
            return Err(ThresholdError::NoLimit);
        }
        if self.max_bytes == Some(0) {
            return Err(ThresholdError::ZeroBytes);
        }
        if self.max_lag == Some(Duration::ZERO) {
            return Err(ThresholdError::ZeroLag);
        }
        let f = self.readmit_fraction;
        if !(f > 0.0 && f <= 1.0) {
            return Err(ThresholdError::Fraction(f));
        }
        if self.down_after_failures == 0 {
            return Err(ThresholdError::ZeroFailures);
        }
        if self.up_after_successes == 0 {
            return Err(ThresholdError::ZeroSuccesses);
        }
        Ok(())
    }

    /// Whether a check with this lag would eject a healthy replica: above either threshold, or
    /// the time lag unknown.
    pub fn ejects(&self, lag_bytes: u64, lag: Option<Duration>) -> bool {
        let Some(lag) = lag else { return true };
        self.max_bytes.is_some_and(|max| lag_bytes > max)
            || self.max_lag.is_some_and(|max| lag > max)
    }

    /// The byte lag at or below which a lagging replica may come back.
    pub fn readmit_bytes(&self) -> Option<u64> {
        let fraction = self.fraction();
        // Float-to-int casts saturate; min() guards rounding up near u64::MAX.
        self.max_bytes
            .map(|max| ((max as f64 * fraction).floor() as u64).min(max))
    }

    /// The time lag at or below which a lagging replica may come back.
    pub fn readmit_lag(&self) -> Option<Duration> {
        let fraction = self.fraction();
        self.max_lag.map(|max| {
            Duration::try_from_secs_f64(max.as_secs_f64() * fraction)
                .unwrap_or(max)
                .min(max)
        })
    }

    /// The readmit fraction, forced into [0, 1] (it is validated, but never panic on it).
    fn fraction(&self) -> f64 {
        let f = self.readmit_fraction;
        if f.is_nan() {
            0.5
        } else {
            f.clamp(0.0, 1.0)
        }
    }

    fn judge(&self, lag_bytes: u64, lag: Option<Duration>) -> Verdict {
        let Some(lag) = lag else {
            return Verdict::Exceeds(if lag_bytes > 0 {
                format!("lag unknown ({} behind)", format_bytes(lag_bytes))
            } else {
                "lag unknown".to_owned()
            });
        };
        let mut over = Vec::new();
        if let Some(max) = self.max_bytes.filter(|&max| lag_bytes > max) {
            over.push(format!(
                "{} > max {}",
                format_bytes(lag_bytes),
                format_bytes(max)
            ));
        }
        if let Some(max) = self.max_lag.filter(|&max| lag > max) {
            over.push(format!(
                "{} > max {}",
                format_duration(lag),
                format_duration(max)
            ));
        }
        if !over.is_empty() {
            return Verdict::Exceeds(format!("lag {}", over.join(" and ")));
        }
        let bytes_ok = self.readmit_bytes().is_none_or(|level| lag_bytes <= level);
        let time_ok = self.readmit_lag().is_none_or(|level| lag <= level);
        if bytes_ok && time_ok {
            Verdict::Readmittable
        } else {
            Verdict::Within
        }
    }

    /// "lag 120 kB and 100 ms" (only the dimensions that have a threshold).
    fn figures(&self, lag_bytes: u64, lag: Option<Duration>) -> String {
        let mut parts = Vec::new();
        if self.max_bytes.is_some() {
            parts.push(format_bytes(lag_bytes));
        }
        if self.max_lag.is_some() {
            parts.push(lag.map_or_else(|| "unknown".to_owned(), format_duration));
        }
        format!("lag {}", parts.join(" and "))
    }

    /// "2.0 MB / 1.0 s" for the thresholds, or the readmit levels.
    fn limits(bytes: Option<u64>, lag: Option<Duration>) -> String {
        let parts: Vec<String> = bytes
            .map(format_bytes)
            .into_iter()
            .chain(lag.map(format_duration))
            .collect();
        parts.join(" / ")
    }
}

/// One replica's state machine. Feed it every check with [`observe`](Self::observe).
#[derive(Debug, Clone)]
pub struct ReplicaHealth {
    thresholds: LagThresholds,
    state: HealthState,
    since: Instant,
    reason: String,
    /// Consecutive failed checks.
    failures: u32,
    /// Consecutive successful checks while down or promoted.
    successes: u32,
    /// While lagging: since when every check has been at or below the readmit level.
    below_since: Option<Instant>,
    /// Whether any check has been observed yet.
    checked: bool,
}

impl ReplicaHealth {
    /// A replica not checked yet: [`HealthState::Down`] since `now`, reason "not checked yet".
    pub fn new(thresholds: LagThresholds, now: Instant) -> Result<Self, ThresholdError> {
        thresholds.validate()?;
        Ok(ReplicaHealth {
            thresholds,
            state: HealthState::Down,
            since: now,
            reason: "not checked yet".to_owned(),
            failures: 0,
            successes: 0,
            below_since: None,
            checked: false,
        })
    }

    pub fn state(&self) -> HealthState {
        self.state
    }

    /// When the current state began.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// Why it is in this state: the last transition's reason, kept current while lagging
    /// (the latest figures above the threshold) and while down (the latest failure).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    pub fn thresholds(&self) -> &LagThresholds {
        &self.thresholds
    }

    /// Failed checks in a row so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// Replaces the thresholds, if valid; otherwise keeps the old ones and says why. The state
    /// is kept and judged against the new thresholds at the next check; a readmission wait in
    /// progress starts over, so readmission always takes `readmit_after` under the thresholds
    /// in force.
    pub fn set_thresholds(&mut self, thresholds: LagThresholds) -> Result<(), ThresholdError> {
        thresholds.validate()?;
        self.thresholds = thresholds;
        self.below_since = None;
        Ok(())
    }

    /// Takes one check's outcome at `now`; returns the transition it caused, if any.
    pub fn observe(&mut self, sample: &Sample, now: Instant) -> Option<Transition> {
        let first = !std::mem::replace(&mut self.checked, true);
        if first {
            if let Sample::Ok {
                lag_bytes,
                lag,
                in_recovery: true,
            } = sample
            {
                if !matches!(self.thresholds.judge(*lag_bytes, *lag), Verdict::Exceeds(_)) {
                    let why = format!(
                        "first check, {} within max {}",
                        self.thresholds.figures(*lag_bytes, *lag),
                        LagThresholds::limits(self.thresholds.max_bytes, self.thresholds.max_lag)
                    );
                    return self.go(HealthState::Healthy, why, now);
                }
            }
        }
        match sample {
            Sample::Failed { reason } => self.failed(reason, now),
            Sample::Ok {
                in_recovery: false, ..
            } => self.promoted(now),
            Sample::Ok {
                lag_bytes,
                lag,
                in_recovery: true,
            } => self.succeeded(*lag_bytes, *lag, now),
        }
    }

    fn failed(&mut self, reason: &str, now: Instant) -> Option<Transition> {
        self.failures = self.failures.saturating_add(1);
        self.successes = 0;
        self.below_since = None;
        let n = self.failures;
        let why = format!(
            "{n} failed check{}: {reason}",
            if n == 1 { "" } else { "s" }
        );
        match self.state {
            HealthState::Healthy | HealthState::Lagging
                if n >= self.thresholds.down_after_failures =>
            {
                self.go(HealthState::Down, why, now)
            }
            HealthState::Down => {
                self.reason = why;
                None
            }
            _ => None,
        }
    }

    fn promoted(&mut self, now: Instant) -> Option<Transition> {
        self.failures = 0;
        self.successes = 0;
        self.below_since = None;
        if self.state == HealthState::Promoted {
            return None;
        }
        self.go(
            HealthState::Promoted,
            "no longer in recovery: promoted, not a replica any more".to_owned(),
            now,
        )
    }

    fn succeeded(
        &mut self,
        lag_bytes: u64,
        lag: Option<Duration>,
        now: Instant,
    ) -> Option<Transition> {
        self.failures = 0;
        let verdict = self.thresholds.judge(lag_bytes, lag);
        match self.state {
            HealthState::Healthy => match verdict {
                Verdict::Exceeds(why) => self.go(HealthState::Lagging, why, now),
                Verdict::Within | Verdict::Readmittable => None,
            },
            HealthState::Lagging => match verdict {
                Verdict::Readmittable => {
                    let start = *self.below_since.get_or_insert(now);
                    let held = now.saturating_duration_since(start);
                    if held < self.thresholds.readmit_after {
                        return None;
                    }
                    let why = format!(
                        "{} below readmit {} for {}",
                        self.thresholds.figures(lag_bytes, lag),
                        LagThresholds::limits(
                            self.thresholds.readmit_bytes(),
                            self.thresholds.readmit_lag()
                        ),
                        format_duration(held)
                    );
                    self.go(HealthState::Healthy, why, now)
                }
                Verdict::Exceeds(why) => {
                    self.below_since = None;
                    self.reason = why;
                    None
                }
                Verdict::Within => {
                    self.below_since = None;
                    None
                }
            },
            HealthState::Down | HealthState::Promoted => {
                self.successes = self.successes.saturating_add(1);
                let n = self.successes;
                if n < self.thresholds.up_after_successes {
                    return None;
                }
                let back = if self.state == HealthState::Promoted {
                    "back in recovery, "
                } else {
                    ""
                };
                let checks = format!(
                    "{back}{n} successful check{}",
                    if n == 1 { "" } else { "s" }
                );
                match verdict {
                    Verdict::Exceeds(why) => {
                        self.go(HealthState::Lagging, format!("{checks}, but {why}"), now)
                    }
                    Verdict::Within | Verdict::Readmittable => {
                        let why = format!(
                            "{checks}, {} within max {}",
                            self.thresholds.figures(lag_bytes, lag),
                            LagThresholds::limits(
                                self.thresholds.max_bytes,
                                self.thresholds.max_lag
                            )
                        );
                        self.go(HealthState::Healthy, why, now)
                    }
                }
            }
        }
    }

    fn go(&mut self, to: HealthState, reason: String, now: Instant) -> Option<Transition> {
        let from = self.state;
        self.state = to;
        self.since = now;
        self.reason = reason.clone();
        self.successes = 0;
        self.below_since = None;
        Some(Transition {
            from,
            to,
            reason,
            at: now,
        })
    }
}

#[cfg(test)]
mod tests;
