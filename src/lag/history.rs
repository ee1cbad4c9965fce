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
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    fn ms(t0: Instant, millis: u64) -> Instant {
        t0 + Duration::from_millis(millis)
    }

    fn bytes_only(max: u64) -> LagThresholds {
        LagThresholds {
            max_bytes: Some(max),
            max_lag: None,
            ..LagThresholds::default()
        }
    }

    #[test]
    fn empty_history_has_no_summary() {
        let h = LagHistory::new();
        assert!(h.is_empty());
        assert_eq!(h.summary(Instant::now(), &LagThresholds::default()), None);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let t0 = Instant::now();
        let mut h = LagHistory::new();
        // 1..=100 MB in shuffled order, 100..=1 ms.
        for i in 0..100u64 {
            let v = (i * 37) % 100 + 1;
            h.record(ms(t0, i * 250), v * MB, Some(Duration::from_millis(v)));
        }
        let s = h.summary(ms(t0, 99 * 250), &bytes_only(u64::MAX)).unwrap();
        assert_eq!(s.samples, 100);
        assert_eq!(s.covered, Duration::from_millis(99 * 250));
        assert_eq!(
            s.bytes,
            Percentiles {
                p50: 50 * MB,
                p90: 90 * MB,
                p99: 99 * MB,
                max: 100 * MB
            }
        );
        let secs = s.seconds.unwrap();
        assert_eq!(secs.p50, Duration::from_millis(50));
        assert_eq!(secs.max, Duration::from_millis(100));
        assert_eq!(s.unknown, 0);
        // One sample: every percentile is that sample.
        let mut one = LagHistory::new();
        one.record(t0, 7, None);
        let s = one.summary(t0, &bytes_only(10)).unwrap();
        assert_eq!(
            s.bytes,
            Percentiles {
                p50: 7,
                p90: 7,
                p99: 7,
                max: 7
            }
        );
        assert_eq!(s.seconds, None);
        assert_eq!(s.unknown, 1);
    }

    #[test]
    fn ejected_share_at_current_half_and_double() {
        let t0 = Instant::now();
        let mut h = LagHistory::new();
        // 10 samples: 0.5, 1.5, 3 and 5 MB (4, 3, 2 and 1 of them).
        let lags = [0.5, 0.5, 0.5, 0.5, 1.5, 1.5, 1.5, 3.0, 3.0, 5.0];
        for (i, lag) in lags.iter().enumerate() {
            let bytes = (lag * MB as f64) as u64;
            h.record(ms(t0, i as u64 * 250), bytes, Some(Duration::ZERO));
        }
        let s = h.summary(ms(t0, 2_500), &bytes_only(2 * MB)).unwrap();
        // > 2 MB: 3 of 10; > 1 MB: 6 of 10; > 4 MB: 1 of 10.
        assert_eq!(s.ejected_share_at, [0.3, 0.6, 0.1]);
        // Time thresholds scale too; unknown time lag always counts as ejected.
        let mut h = LagHistory::new();
        for (i, lag) in [Some(100), Some(400), Some(900), Some(1_500), None]
            .iter()
            .enumerate()
        {
            h.record(ms(t0, i as u64 * 250), 0, lag.map(Duration::from_millis));
        }
        let t = LagThresholds {
            max_bytes: None,
            ..LagThresholds::default()
        };
        let s = h.summary(ms(t0, 1_000), &t).unwrap();
        // max 1 s: 1500 + unknown; 0.5 s: 900, 1500, unknown; 2 s: unknown.
        assert_eq!(s.ejected_share_at, [0.4, 0.6, 0.2]);
        assert_eq!(s.unknown, 1);
        assert_eq!(s.seconds.unwrap().max, Duration::from_millis(1_500));
    }

    #[test]
    fn old_samples_fall_out_of_the_window() {
        let t0 = Instant::now();
        let mut h = LagHistory::with_limits(Duration::from_secs(10), 1_000);
        for i in 0..100u64 {
            h.record(ms(t0, i * 1_000), i, None);
        }
        assert_eq!(h.len(), 11, "samples from 89 s to 99 s");
        assert_eq!(h.points().next().unwrap().lag_bytes, 89);
        // Later, with no new samples, the summary only counts what is still in the window.
        let s = h.summary(ms(t0, 105_000), &bytes_only(1)).unwrap();
        assert_eq!(s.samples, 5);
        assert_eq!(s.bytes.p50, 97);
        assert_eq!(s.covered, Duration::from_secs(10));
        assert_eq!(h.summary(ms(t0, 200_000), &bytes_only(1)), None);
    }

    #[test]
    fn memory_is_bounded_by_the_capacity() {
        let t0 = Instant::now();
        let mut h = LagHistory::new();
        for i in 0..10_000u64 {
            h.record(ms(t0, i * 10), i, Some(Duration::ZERO));
        }
        assert_eq!(h.len(), LagHistory::DEFAULT_CAPACITY);
        assert_eq!(h.points().next().unwrap().lag_bytes, 10_000 - 1_200);
        h.set_limits(Duration::from_secs(1), 50);
        assert_eq!(h.len(), 50);
        h.set_limits(Duration::from_millis(100), 0);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn time_going_backwards_is_clamped() {
        let t0 = Instant::now();
        let mut h = LagHistory::new();
        h.record(ms(t0, 1_000), 1, None);
        h.record(t0, 2, None);
        let times: Vec<Instant> = h.points().map(|p| p.at).collect();
        assert_eq!(times, vec![ms(t0, 1_000), ms(t0, 1_000)]);
        // A `now` before the samples: they count as current.
        assert_eq!(h.summary(t0, &bytes_only(1)).unwrap().samples, 2);
    }

    #[test]
    fn extreme_values_do_not_panic() {
        let t0 = Instant::now();
        let mut h = LagHistory::with_limits(Duration::MAX, usize::MAX);
        h.record(t0, u64::MAX, Some(Duration::MAX));
        h.record(t0, 0, Some(Duration::ZERO));
        let t = LagThresholds {
            max_bytes: Some(u64::MAX),
            max_lag: Some(Duration::MAX),
            ..LagThresholds::default()
        };
        let s = h.summary(t0, &t).unwrap();
        assert_eq!(s.bytes.max, u64::MAX);
        assert_eq!(s.ejected_share_at, [0.0, 0.5, 0.0]);
        let tiny = LagThresholds {
            max_bytes: Some(1),
            max_lag: Some(Duration::from_nanos(1)),
            ..LagThresholds::default()
        };
        assert_eq!(
            h.summary(t0, &tiny).unwrap().ejected_share_at,
            [0.5, 0.5, 0.5]
        );
    }
}
