//! Unit tests for `crate::lag::history`.

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
