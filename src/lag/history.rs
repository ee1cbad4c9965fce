//! The last few minutes of one replica's lag, for `SHOW LAG`: percentiles, and how much of
//! that time the replica would have been out of the rotation at the current threshold, at half
//! and at double it, so an operator can pick the threshold from data.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::state::LagThresholds;

/// One successful check's lag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LagPoint {
    pub at: Instant,
    pub lag_bytes: u64,
    /// `None`: time lag unknown.
    pub lag: Option<Duration>,
}

/// p50 / p90 / p99 / max of a set of values (nearest rank: each is a value that occurred).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percentiles<T> {
    pub p50: T,
    pub p90: T,
    pub p99: T,
    pub max: T,
}

impl<T: Ord + Copy> Percentiles<T> {
    /// `None` for no values.
    fn of(mut values: Vec<T>) -> Option<Self> {
        values.sort_unstable();
        let max = *values.last()?;
        let rank = |p: usize| {
            // Nearest rank: the ceil(p% × n)-th value, 1-based.
            let n = values.len();
            let r = (p * n).div_ceil(100).clamp(1, n);
            values[r - 1]
        };
        Some(Percentiles {
            p50: rank(50),
            p90: rank(90),
            p99: rank(99),
            max,
        })
    }
}

/// What `SHOW LAG` shows for one replica.
#[derive(Debug, Clone, PartialEq)]
pub struct LagSummary {
    /// Checks in the window.
    pub samples: usize,
    /// From the oldest check in the window to `now`.
    pub covered: Duration,
    /// Byte lag over the window.
    pub bytes: Percentiles<u64>,
    /// Time lag over the checks where it was known; `None` if it never was.
    pub seconds: Option<Percentiles<Duration>>,
    /// Checks whose time lag was unknown (left out of `seconds`, counted as ejected).
    pub unknown: usize,
    /// Share of the window's checks, 0.0 to 1.0, whose lag would have ejected the replica at
    /// the current thresholds, at half and at double them (`[current, half, double]`).
    ///
    /// Each check is judged on its own by [`LagThresholds::ejects`]: the hysteresis (the lower
    /// readmit level and the `readmit_after` wait) is ignored, so the real time out of the
    /// rotation is at least this share. Checks count equally, which is a share of time when
    /// they come at a steady interval.
    pub ejected_share_at: [f64; 3],
}

/// A bounded ring of one replica's recent lag samples.
#[derive(Debug, Clone)]
pub struct LagHistory {
    points: VecDeque<LagPoint>,
    window: Duration,
    capacity: usize,
}

impl Default for LagHistory {
    fn default() -> Self {
        Self::new()
    }
}

impl LagHistory {
    /// Default window: 5 minutes.
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
    /// Default capacity: 1200 samples, 5 minutes of 250 ms checks (about 40 kB). With a
    /// faster check interval, raise it (`window / interval`) or the window shrinks.
    pub const DEFAULT_CAPACITY: usize = 1200;

    /// An empty history with the default window and capacity.
    pub fn new() -> Self {
        Self::with_limits(Self::DEFAULT_WINDOW, Self::DEFAULT_CAPACITY)
    }

    /// An empty history keeping samples up to `window` old, at most `capacity` of them (at
    /// least 1).
    pub fn with_limits(window: Duration, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        LagHistory {
            // Grows as needed; don't reserve a huge capacity up front.
            points: VecDeque::with_capacity(capacity.min(Self::DEFAULT_CAPACITY)),
            window,
            capacity,
        }
    }

    /// Changes the window and capacity (for a live change of the check interval); evicts now.
    pub fn set_limits(&mut self, window: Duration, capacity: usize) {
        self.window = window;
        self.capacity = capacity.max(1);
        if let Some(newest) = self.points.back().map(|p| p.at) {
            self.evict(newest);
        }
    }

    /// Adds one successful check's lag at `at`. An `at` earlier than the previous sample's is
    /// taken as that sample's time. Failed checks have no lag and are not recorded.
    pub fn record(&mut self, at: Instant, lag_bytes: u64, lag: Option<Duration>) {
        let at = match self.points.back() {
            Some(last) if at < last.at => last.at,
            _ => at,
        };
        self.points.push_back(LagPoint { at, lag_bytes, lag });
        self.evict(at);
    }

    fn evict(&mut self, now: Instant) {
        while self.points.len() > self.capacity {
            self.points.pop_front();
        }
        while self
            .points
            .front()
            .is_some_and(|p| now.saturating_duration_since(p.at) > self.window)
        {
            self.points.pop_front();
        }
    }

    /// The samples kept, oldest first.
    pub fn points(&self) -> impl Iterator<Item = &LagPoint> + '_ {
        self.points.iter()
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Percentiles and ejected shares over the samples at most `window` old at `now`; `None`
    /// when there are none (no successful check lately).
    pub fn summary(&self, now: Instant, thresholds: &LagThresholds) -> Option<LagSummary> {
        let recent: Vec<&LagPoint> = self
            .points
            .iter()
            .filter(|p| now.saturating_duration_since(p.at) <= self.window)
            .collect();
        let oldest = recent.first()?;
        let bytes = Percentiles::of(recent.iter().map(|p| p.lag_bytes).collect())?;
        let seconds = Percentiles::of(recent.iter().filter_map(|p| p.lag).collect());
        let unknown = recent.iter().filter(|p| p.lag.is_none()).count();
        let at = [
            thresholds.clone(),
            scaled(thresholds, Scale::Half),
            scaled(thresholds, Scale::Double),
        ];
        let ejected_share_at = at.map(|t| {
            let ejected = recent
                .iter()
                .filter(|p| t.ejects(p.lag_bytes, p.lag))
                .count();
            ejected as f64 / recent.len() as f64
        });
        Some(LagSummary {
            samples: recent.len(),
            covered: now.saturating_duration_since(oldest.at),
            bytes,
            seconds,
            unknown,
            ejected_share_at,
        })
    }
}

#[derive(Clone, Copy)]
enum Scale {
    Half,
    Double,
}

/// The thresholds with both limits halved or doubled (saturating).
fn scaled(thresholds: &LagThresholds, scale: Scale) -> LagThresholds {
    let (max_bytes, max_lag) = match scale {
        Scale::Half => (
            thresholds.max_bytes.map(|b| b / 2),
            thresholds.max_lag.map(|d| d / 2),
        ),
        Scale::Double => (
            thresholds.max_bytes.map(|b| b.saturating_mul(2)),
            thresholds.max_lag.map(|d| d.saturating_mul(2)),
        ),
    };
    LagThresholds {
        max_bytes,
        max_lag,
        ..thresholds.clone()
    }
}

#[cfg(test)]
mod tests;
