//! The primary's WAL position over time, as pgsplit saw it, so a replica's lag can be told in
//! seconds that do not grow while the primary is idle.
//!
//! Each monitor tick records the primary's `pg_current_wal_lsn()`. Runs of the same LSN
//! collapse to the first time it was seen, so an idle primary costs one entry however long it
//! idles, and every entry is a point where the primary was first seen at a new position. The
//! time lag of a replica that has replayed up to `R` is how long ago the primary was first seen
//! past `R`: the oldest WAL the replica lacks was written no later than that.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Byte lag: how far the primary's LSN is ahead of the replica's replay LSN, zero when the
/// replica is level or ahead (it is usually checked a moment after the primary).
pub fn lag_bytes(primary_lsn: u64, replica_lsn: u64) -> u64 {
    primary_lsn.saturating_sub(replica_lsn)
}

/// One point of the timeline: the primary was first seen at `lsn` at `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    at: Instant,
    lsn: u64,
}

/// A bounded record of the primary's LSN over time.
///
/// Invariants: LSNs strictly increase and times never decrease from front to back. Entries
/// older than `max_age` are dropped, except the newest of them, which stays as the floor that
/// lets replicas at or past its LSN be answered; at most `max_entries` are kept (oldest dropped
/// first, which only shortens how far back the timeline reaches).
#[derive(Debug, Clone)]
pub struct PrimaryTimeline {
    marks: VecDeque<Mark>,
    last_recorded: Option<Instant>,
    max_age: Duration,
    max_entries: usize,
}

impl Default for PrimaryTimeline {
    fn default() -> Self {
        Self::new()
    }
}

impl PrimaryTimeline {
    /// How far back the timeline reaches by default: 10 minutes.
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);
    /// Most entries kept by default: 4096, enough for 10 minutes of a primary that writes
    /// on every 250 ms tick (2400), with room for a faster tick. About 100 kB.
    pub const DEFAULT_MAX_ENTRIES: usize = 4096;

    /// An empty timeline with the default limits.
    pub fn new() -> Self {
        Self::with_limits(Self::DEFAULT_MAX_AGE, Self::DEFAULT_MAX_ENTRIES)
    }

    /// An empty timeline keeping about `max_age` of history in at most `max_entries`
    /// entries (at least 2 are always allowed).
    pub fn with_limits(max_age: Duration, max_entries: usize) -> Self {
        PrimaryTimeline {
            marks: VecDeque::new(),
            last_recorded: None,
            max_age,
            max_entries: max_entries.max(2),
        }
    }

    /// Changes the limits (for a live change of the check interval); applied at the next
    /// [`record`](Self::record).
    pub fn set_limits(&mut self, max_age: Duration, max_entries: usize) {
        self.max_age = max_age;
        self.max_entries = max_entries.max(2);
    }

    /// Records the primary's LSN as read at `now`.
    ///
    /// The same LSN as the last entry changes nothing but [`last_recorded`](Self::last_recorded).
    /// An LSN lower than the last one means a different primary (failover, restore): the
    /// history no longer describes it, so the timeline starts over from this sample. A `now`
    /// earlier than the previous call is taken as the previous call's time.
    pub fn record(&mut self, now: Instant, lsn: u64) {
        let now = match self.last_recorded {
            Some(last) if now < last => last,
            _ => now,
        };
        self.last_recorded = Some(now);
        match self.marks.back() {
            Some(last) if last.lsn == lsn => {}
            Some(last) if last.lsn > lsn => {
                self.marks.clear();
                self.marks.push_back(Mark { at: now, lsn });
            }
            _ => self.marks.push_back(Mark { at: now, lsn }),
        }
        self.evict(now);
    }

    fn evict(&mut self, now: Instant) {
        while self.marks.len() > self.max_entries {
            self.marks.pop_front();
        }
        // Keep one entry older than max_age as the floor.
        while self.marks.len() >= 2
            && now.saturating_duration_since(self.marks[1].at) > self.max_age
        {
            self.marks.pop_front();
        }
    }

    /// The primary's newest LSN, if any was recorded.
    pub fn latest(&self) -> Option<u64> {
        self.marks.back().map(|m| m.lsn)
    }

    /// When the primary's LSN was last recorded (changed or not); lets the caller tell a stale
    /// timeline (primary checks failing) from an idle primary.
    pub fn last_recorded(&self) -> Option<Instant> {
        self.last_recorded
    }

    /// Byte lag of a replica at `replica_lsn` behind the newest primary LSN; `None` before the
    /// first record.
    pub fn lag_bytes(&self, replica_lsn: u64) -> Option<u64> {
        self.latest()
            .map(|primary_lsn| lag_bytes(primary_lsn, replica_lsn))
    }

    /// Time lag of a replica that has replayed up to `replica_lsn`, at `now`.
    ///
    /// Zero when the replica is at or past the newest primary LSN (so an idle primary keeps a
    /// caught-up replica at zero). Otherwise `now` minus the time of the first entry whose LSN
    /// is past `replica_lsn`. `None` when that cannot be told: nothing recorded yet, or the
    /// replica is behind the oldest entry, in which case the lag is at least
    /// [`span`](Self::span).
    pub fn lag_seconds(&self, replica_lsn: u64, now: Instant) -> Option<Duration> {
        let newest = self.marks.back()?;
        if replica_lsn >= newest.lsn {
            return Some(Duration::ZERO);
        }
        let first_past = self.marks.partition_point(|m| m.lsn <= replica_lsn);
        if first_past == 0 {
            return None;
        }
        Some(now.saturating_duration_since(self.marks[first_past].at))
    }

    /// How far back the timeline reaches at `now` (zero when empty): a replica whose
    /// [`lag_seconds`](Self::lag_seconds) is `None` is at least this far behind.
    pub fn span(&self, now: Instant) -> Duration {
        self.marks
            .front()
            .map_or(Duration::ZERO, |m| now.saturating_duration_since(m.at))
    }

    /// Number of entries kept.
    pub fn len(&self) -> usize {
        self.marks.len()
    }

    /// True before the first record (or after [`clear`](Self::clear)).
    pub fn is_empty(&self) -> bool {
        self.marks.is_empty()
    }

    /// Forgets everything (for example when the primary changes).
    pub fn clear(&mut self) {
        self.marks.clear();
        self.last_recorded = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, millis: u64) -> Instant {
        t0 + Duration::from_millis(millis)
    }

    /// Records `(millis, lsn)` pairs.
    fn timeline(t0: Instant, points: &[(u64, u64)]) -> PrimaryTimeline {
        let mut tl = PrimaryTimeline::new();
        for &(t, lsn) in points {
            tl.record(ms(t0, t), lsn);
        }
        tl
    }

    #[test]
    fn empty_timeline_knows_nothing() {
        let t0 = Instant::now();
        let tl = PrimaryTimeline::new();
        assert!(tl.is_empty());
        assert_eq!(tl.latest(), None);
        assert_eq!(tl.lag_bytes(0), None);
        assert_eq!(tl.lag_seconds(0, t0), None);
        assert_eq!(tl.lag_seconds(u64::MAX, t0), None);
        assert_eq!(tl.span(t0), Duration::ZERO);
        assert_eq!(tl.last_recorded(), None);
    }

    #[test]
    fn byte_lag_is_primary_minus_replica_and_never_negative() {
        assert_eq!(lag_bytes(1_000, 400), 600);
        assert_eq!(lag_bytes(400, 1_000), 0, "replica ahead of the sample");
        assert_eq!(lag_bytes(u64::MAX, 0), u64::MAX);
        assert_eq!(lag_bytes(0, u64::MAX), 0);
        let t0 = Instant::now();
        let tl = timeline(t0, &[(0, 100), (250, 300)]);
        assert_eq!(tl.lag_bytes(100), Some(200));
        assert_eq!(tl.lag_bytes(300), Some(0));
        assert_eq!(tl.lag_bytes(900), Some(0));
    }

    #[test]
    fn replica_level_with_or_ahead_of_the_primary_has_zero_lag() {
        let t0 = Instant::now();
        let tl = timeline(t0, &[(0, 100), (250, 200)]);
        let now = ms(t0, 10_000);
        assert_eq!(tl.lag_seconds(200, now), Some(Duration::ZERO), "equal LSN");
        assert_eq!(tl.lag_seconds(250, now), Some(Duration::ZERO), "ahead");
        assert_eq!(tl.lag_seconds(u64::MAX, now), Some(Duration::ZERO));
    }

    #[test]
    fn idle_primary_does_not_grow_the_lag_of_a_caught_up_replica() {
        let t0 = Instant::now();
        let mut tl = timeline(t0, &[(0, 100), (250, 200), (500, 300)]);
        // The primary idles for ten minutes; the replica is at 300 all along.
        for tick in 3..2_400 {
            tl.record(ms(t0, tick * 250), 300);
            assert_eq!(
                tl.lag_seconds(300, ms(t0, tick * 250)),
                Some(Duration::ZERO)
            );
        }
        assert!(tl.len() <= 3, "identical LSNs collapse: {}", tl.len());
    }

    #[test]
    fn lag_counts_from_when_the_primary_first_passed_the_replica() {
        let t0 = Instant::now();
        // Idle at 100 for 100 s, then writes.
        let mut tl = timeline(t0, &[(0, 100)]);
        for tick in 1..400 {
            tl.record(ms(t0, tick * 250), 100);
        }
        tl.record(ms(t0, 100_000), 200);
        tl.record(ms(t0, 100_250), 300);
        tl.record(ms(t0, 100_500), 400);
        let now = ms(t0, 100_600);
        // A replica still at 100 lacks what was written just before 100.0 s, not 100 s of data.
        assert_eq!(tl.lag_seconds(100, now), Some(Duration::from_millis(600)));
        // Between samples: the first sample past it counts.
        assert_eq!(tl.lag_seconds(250, now), Some(Duration::from_millis(350)));
        // Exactly at an older sample: the next one counts.
        assert_eq!(tl.lag_seconds(300, now), Some(Duration::from_millis(100)));
        assert_eq!(tl.lag_seconds(399, now), Some(Duration::from_millis(100)));
        // The primary then idles; a replica stuck at 300 keeps getting staler.
        tl.record(ms(t0, 110_000), 400);
        assert_eq!(
            tl.lag_seconds(300, ms(t0, 110_000)),
            Some(Duration::from_millis(9_500))
        );
    }

    #[test]
    fn replica_behind_the_whole_timeline_is_unknown_at_least_the_span() {
        let t0 = Instant::now();
        let tl = timeline(t0, &[(0, 100), (250, 200)]);
        let now = ms(t0, 1_000);
        assert_eq!(tl.lag_seconds(99, now), None);
        assert_eq!(tl.lag_seconds(0, now), None);
        assert_eq!(tl.span(now), Duration::from_secs(1));
        // At the oldest entry's LSN it is known.
        assert_eq!(tl.lag_seconds(100, now), Some(Duration::from_millis(750)));
        // A single sample: behind it is unknown, level is zero.
        let one = timeline(t0, &[(0, 100)]);
        assert_eq!(one.lag_seconds(50, now), None);
        assert_eq!(one.lag_seconds(100, now), Some(Duration::ZERO));
    }

    #[test]
    fn old_entries_are_evicted_but_a_floor_stays() {
        let t0 = Instant::now();
        let mut tl = PrimaryTimeline::with_limits(Duration::from_secs(10), 1_000);
        // Writes every second for a minute.
        for s in 0..=60u64 {
            tl.record(ms(t0, s * 1_000), s * 10);
        }
        let now = ms(t0, 60_000);
        assert!(tl.len() <= 12, "{}", tl.len());
        assert!(tl.span(now) >= Duration::from_secs(10));
        assert!(tl.span(now) <= Duration::from_secs(11));
        // The floor answers a replica ten seconds behind...
        assert_eq!(tl.lag_seconds(500, now), Some(Duration::from_secs(9)));
        // ...but not one further behind.
        assert_eq!(tl.lag_seconds(100, now), None);
        // An idle primary keeps its one entry however old it gets.
        let mut idle = PrimaryTimeline::with_limits(Duration::from_secs(10), 1_000);
        for s in 0..=3_600u64 {
            idle.record(ms(t0, s * 1_000), 42);
        }
        assert_eq!(idle.len(), 1);
        assert_eq!(idle.latest(), Some(42));
        assert_eq!(
            idle.lag_seconds(42, ms(t0, 3_600_000)),
            Some(Duration::ZERO)
        );
        assert_eq!(idle.last_recorded(), Some(ms(t0, 3_600_000)));
    }

    #[test]
    fn entry_count_is_bounded() {
        let t0 = Instant::now();
        let mut tl = PrimaryTimeline::with_limits(Duration::from_secs(3_600), 100);
        for i in 0..10_000u64 {
            tl.record(ms(t0, i), i);
        }
        assert_eq!(tl.len(), 100);
        let now = ms(t0, 10_000);
        assert_eq!(tl.lag_seconds(9_950, now), Some(Duration::from_millis(49)));
        assert_eq!(tl.lag_seconds(9_000, now), None, "beyond what was kept");
        // Limits below 2 are raised to 2.
        let mut tiny = PrimaryTimeline::with_limits(Duration::ZERO, 0);
        for i in 0..10u64 {
            tiny.record(ms(t0, i), i);
        }
        assert_eq!(tiny.len(), 2);
        assert_eq!(tiny.lag_seconds(8, ms(t0, 9)), Some(Duration::ZERO));
    }

    #[test]
    fn lsn_going_backwards_starts_over() {
        let t0 = Instant::now();
        let mut tl = timeline(t0, &[(0, 100), (250, 200), (500, 300)]);
        tl.record(ms(t0, 750), 50);
        assert_eq!(tl.len(), 1);
        assert_eq!(tl.latest(), Some(50));
        assert_eq!(tl.lag_seconds(50, ms(t0, 800)), Some(Duration::ZERO));
        assert_eq!(tl.lag_seconds(10, ms(t0, 800)), None);
        tl.clear();
        assert!(tl.is_empty());
        assert_eq!(tl.last_recorded(), None);
    }

    #[test]
    fn time_going_backwards_is_clamped() {
        let t0 = Instant::now();
        let mut tl = timeline(t0, &[(1_000, 100)]);
        tl.record(ms(t0, 0), 200);
        assert_eq!(tl.last_recorded(), Some(ms(t0, 1_000)));
        // 200 counts as first seen at 1.0 s, not 0 s.
        assert_eq!(
            tl.lag_seconds(100, ms(t0, 1_500)),
            Some(Duration::from_millis(500))
        );
        // `now` before the entry: zero, not a panic.
        assert_eq!(tl.lag_seconds(100, t0), Some(Duration::ZERO));
        assert_eq!(tl.span(t0), Duration::ZERO);
    }

    #[test]
    fn extreme_lsns_do_not_panic() {
        let t0 = Instant::now();
        let tl = timeline(t0, &[(0, 0), (250, 1), (500, u64::MAX)]);
        let now = ms(t0, 1_000);
        assert_eq!(tl.lag_seconds(0, now), Some(Duration::from_millis(750)));
        assert_eq!(
            tl.lag_seconds(u64::MAX - 1, now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(tl.lag_seconds(u64::MAX, now), Some(Duration::ZERO));
        assert_eq!(tl.lag_bytes(0), Some(u64::MAX));
        let mut limits = PrimaryTimeline::with_limits(Duration::MAX, usize::MAX);
        limits.record(now, u64::MAX);
        limits.set_limits(Duration::ZERO, 0);
        limits.record(now, u64::MAX);
        assert_eq!(limits.len(), 1);
    }
}
