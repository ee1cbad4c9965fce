//! Unit tests for `crate::lag::state`.

use super::*;
use crate::lag::timeline::PrimaryTimeline;
use HealthState::*;

const MB: u64 = 1 << 20;
const KB: u64 = 1 << 10;
const TICK: Duration = Duration::from_millis(250);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn bytes_only(max: u64) -> LagThresholds {
    LagThresholds {
        max_bytes: Some(max),
        max_lag: None,
        ..LagThresholds::default()
    }
}

fn ok(lag_bytes: u64, lag: Duration) -> Sample {
    Sample::Ok {
        lag_bytes,
        lag: Some(lag),
        in_recovery: true,
    }
}

fn failed(reason: &str) -> Sample {
    Sample::Failed {
        reason: reason.to_owned(),
    }
}

/// A replica driven by a simulated clock that advances one tick per check.
struct Sim {
    health: ReplicaHealth,
    now: Instant,
    transitions: Vec<Transition>,
}

impl Sim {
    fn new(thresholds: LagThresholds) -> Sim {
        let now = Instant::now();
        Sim {
            health: ReplicaHealth::new(thresholds, now).unwrap(),
            now,
            transitions: Vec::new(),
        }
    }

    /// Starts healthy: two clean checks.
    fn healthy(thresholds: LagThresholds) -> Sim {
        let mut sim = Sim::new(thresholds);
        sim.check(ok(0, Duration::ZERO));
        sim.check(ok(0, Duration::ZERO));
        assert_eq!(sim.state(), Healthy);
        sim.transitions.clear();
        sim
    }

    /// Starts lagging at `lag_bytes`.
    fn lagging(thresholds: LagThresholds, lag_bytes: u64) -> Sim {
        let mut sim = Sim::healthy(thresholds);
        sim.check(ok(lag_bytes, Duration::ZERO));
        assert_eq!(sim.state(), Lagging);
        sim.transitions.clear();
        sim
    }

    fn check(&mut self, sample: Sample) -> Option<Transition> {
        self.now += TICK;
        let t = self.health.observe(&sample, self.now);
        if let Some(t) = &t {
            assert_eq!(t.at, self.now);
            assert_ne!(t.from, t.to, "{t}");
            self.transitions.push(t.clone());
        }
        t
    }

    fn state(&self) -> HealthState {
        self.health.state()
    }
}

#[test]
fn defaults_are_valid_and_documented() {
    let d = LagThresholds::default();
    assert_eq!(d.validate(), Ok(()));
    assert_eq!(d.max_bytes, Some(16 * MB));
    assert_eq!(d.max_lag, Some(Duration::from_secs(1)));
    assert_eq!(d.readmit_fraction, 0.5);
    assert_eq!(d.readmit_after, Duration::from_secs(1));
    assert_eq!(d.down_after_failures, 3);
    assert_eq!(d.up_after_successes, 2);
    assert_eq!(d.readmit_bytes(), Some(8 * MB));
    assert_eq!(d.readmit_lag(), Some(ms(500)));
}

#[test]
fn invalid_thresholds_are_refused_with_clear_messages() {
    let d = LagThresholds::default;
    let cases = [
        (
            LagThresholds {
                max_bytes: None,
                max_lag: None,
                ..d()
            },
            ThresholdError::NoLimit,
            "max_bytes and max_lag are both unset: set a byte size, a duration or both",
        ),
        (
            LagThresholds {
                max_bytes: Some(0),
                ..d()
            },
            ThresholdError::ZeroBytes,
            "max_bytes must be greater than 0 (leave it unset to judge by time only)",
        ),
        (
            LagThresholds {
                max_lag: Some(Duration::ZERO),
                ..d()
            },
            ThresholdError::ZeroLag,
            "max_lag must be greater than 0 (leave it unset to judge by bytes only)",
        ),
        (
            LagThresholds {
                readmit_fraction: 0.0,
                ..d()
            },
            ThresholdError::Fraction(0.0),
            "readmit_fraction must be greater than 0 and at most 1, not 0",
        ),
        (
            LagThresholds {
                readmit_fraction: 1.5,
                ..d()
            },
            ThresholdError::Fraction(1.5),
            "readmit_fraction must be greater than 0 and at most 1, not 1.5",
        ),
        (
            LagThresholds {
                down_after_failures: 0,
                ..d()
            },
            ThresholdError::ZeroFailures,
            "down_after_failures must be at least 1",
        ),
        (
            LagThresholds {
                up_after_successes: 0,
                ..d()
            },
            ThresholdError::ZeroSuccesses,
            "up_after_successes must be at least 1",
        ),
    ];
    for (thresholds, error, message) in cases {
        assert_eq!(thresholds.validate(), Err(error.clone()));
        assert_eq!(error.to_string(), message);
        assert!(message.starts_with(error.field()), "{message}");
        assert!(ReplicaHealth::new(thresholds, Instant::now()).is_err());
    }
    for f in [f64::NAN, f64::INFINITY, -0.5, f64::NEG_INFINITY] {
        let t = LagThresholds {
            readmit_fraction: f,
            ..d()
        };
        assert!(
            matches!(t.validate(), Err(ThresholdError::Fraction(_))),
            "{f}"
        );
    }
    // One limit is enough; a fraction of 1 and a zero wait are allowed.
    for ok in [
        LagThresholds {
            max_lag: None,
            ..d()
        },
        LagThresholds {
            max_bytes: None,
            ..d()
        },
        LagThresholds {
            readmit_fraction: 1.0,
            readmit_after: Duration::ZERO,
            ..d()
        },
        LagThresholds {
            max_bytes: Some(1),
            max_lag: Some(Duration::MAX),
            ..d()
        },
    ] {
        assert_eq!(ok.validate(), Ok(()));
    }
}

#[test]
fn a_new_replica_is_down_until_checked() {
    let mut sim = Sim::new(LagThresholds::default());
    assert_eq!(sim.state(), Down);
    assert_eq!(sim.health.reason(), "not checked yet");
    assert!(!sim.state().serves_reads());
    // The first check takes it up at once when it is fresh (pgsplit has just started).
    let t = sim.check(ok(100 * KB, ms(50))).unwrap();
    assert_eq!((t.from, t.to), (Down, Healthy));
    assert_eq!(
        t.reason,
        "first check, lag 100 kB and 50 ms within max 16.0 MB / 1.0 s"
    );
    assert!(sim.state().serves_reads());
    assert_eq!(sim.health.since(), t.at);
}

#[test]
fn a_new_replica_whose_first_check_is_not_fresh_needs_consecutive_successes() {
    // A failed first check: two successes after it.
    let mut sim = Sim::new(LagThresholds::default());
    assert_eq!(sim.check(failed("connection refused")), None);
    assert_eq!(
        sim.check(ok(0, Duration::ZERO)),
        None,
        "one success is not enough"
    );
    let t = sim.check(ok(100 * KB, ms(50))).unwrap();
    assert_eq!((t.from, t.to), (Down, Healthy));
    assert_eq!(
        t.reason,
        "2 successful checks, lag 100 kB and 50 ms within max 16.0 MB / 1.0 s"
    );
    // A first check that succeeds but is behind (or of unknown lag) is the first of them.
    for first in [
        ok(100 * MB, ms(50)),
        Sample::Ok {
            lag_bytes: 0,
            lag: None,
            in_recovery: true,
        },
    ] {
        let mut sim = Sim::new(LagThresholds::default());
        assert_eq!(sim.check(first), None);
        assert_eq!(sim.state(), Down);
        let t = sim.check(ok(100 * KB, ms(50))).unwrap();
        assert_eq!((t.from, t.to), (Down, Healthy));
        assert!(t.reason.starts_with("2 successful checks"), "{}", t.reason);
    }
    // Only the very first check: one that comes back later needs the successes too.
    let mut sim = Sim::healthy(LagThresholds::default());
    for _ in 0..3 {
        sim.check(failed("gone"));
    }
    assert_eq!(sim.state(), Down);
    assert_eq!(sim.check(ok(0, Duration::ZERO)), None);
}

#[test]
fn down_comes_back_lagging_when_behind() {
    let mut sim = Sim::new(bytes_only(2 * MB));
    sim.check(failed("not yet"));
    sim.check(ok(0, Duration::ZERO));
    let t = sim.check(ok(8 * MB, Duration::ZERO)).unwrap();
    assert_eq!((t.from, t.to), (Down, Lagging));
    assert_eq!(t.reason, "2 successful checks, but lag 8.0 MB > max 2.0 MB");
    // A first check that is behind stays down (not lagging: no readmission wait).
    let mut sim = Sim::new(bytes_only(2 * MB));
    assert_eq!(sim.check(ok(8 * MB, Duration::ZERO)), None);
    // The last check decides: an unknown first check does not hold it back.
    let mut sim = Sim::new(LagThresholds::default());
    sim.check(Sample::Ok {
        lag_bytes: 0,
        lag: None,
        in_recovery: true,
    });
    assert_eq!(sim.check(ok(0, Duration::ZERO)).unwrap().to, Healthy);
}

#[test]
fn bytes_above_the_threshold_eject() {
    let mut sim = Sim::healthy(bytes_only(2 * MB));
    assert_eq!(
        sim.check(ok(2 * MB, Duration::from_secs(60))),
        None,
        "at max, not above"
    );
    let t = sim.check(ok(8_598_323, Duration::ZERO)).unwrap();
    assert_eq!((t.from, t.to), (Healthy, Lagging));
    assert_eq!(t.reason, "lag 8.2 MB > max 2.0 MB");
    assert_eq!(t.to_string(), "healthy -> lagging: lag 8.2 MB > max 2.0 MB");
    assert!(!sim.state().serves_reads());
}

#[test]
fn time_above_the_threshold_ejects_even_when_bytes_are_fine() {
    let t = LagThresholds {
        max_bytes: Some(16 * MB),
        max_lag: Some(Duration::from_secs(1)),
        ..LagThresholds::default()
    };
    let mut sim = Sim::healthy(t.clone());
    assert_eq!(sim.check(ok(10, Duration::from_secs(1))), None);
    let tr = sim.check(ok(10, ms(2_100))).unwrap();
    assert_eq!(tr.reason, "lag 2.1 s > max 1.0 s");
    // Both over: both figures.
    let mut sim = Sim::healthy(t);
    let tr = sim.check(ok(20 * MB, ms(2_100))).unwrap();
    assert_eq!(tr.reason, "lag 20.0 MB > max 16.0 MB and 2.1 s > max 1.0 s");
    // Time only.
    let mut sim = Sim::healthy(LagThresholds {
        max_bytes: None,
        ..LagThresholds::default()
    });
    assert_eq!(sim.check(ok(u64::MAX, ms(900))), None, "bytes do not count");
    assert_eq!(sim.check(ok(0, ms(1_001))).unwrap().to, Lagging);
}

#[test]
fn unknown_lag_is_not_fresh() {
    for thresholds in [LagThresholds::default(), bytes_only(2 * MB)] {
        let mut sim = Sim::healthy(thresholds);
        let t = sim
            .check(Sample::Ok {
                lag_bytes: 300 * KB,
                lag: None,
                in_recovery: true,
            })
            .unwrap();
        assert_eq!((t.from, t.to), (Healthy, Lagging));
        assert_eq!(t.reason, "lag unknown (300 kB behind)");
        // Unknown never counts towards readmission.
        for _ in 0..20 {
            assert_eq!(
                sim.check(Sample::Ok {
                    lag_bytes: 0,
                    lag: None,
                    in_recovery: true
                }),
                None
            );
        }
        assert_eq!(sim.health.reason(), "lag unknown");
    }
}

#[test]
fn readmission_needs_both_figures_below_the_level_for_the_whole_wait() {
    let mut sim = Sim::lagging(LagThresholds::default(), 20 * MB);
    // Bytes below 8 MB but time between 0.5 s and 1 s: not readmittable.
    for _ in 0..10 {
        assert_eq!(sim.check(ok(KB, ms(700))), None);
    }
    // Time below, bytes between 8 MB and 16 MB: not readmittable.
    for _ in 0..10 {
        assert_eq!(sim.check(ok(9 * MB, ms(100))), None);
    }
    // Below for 0.75 s, then one check above the level: the wait starts over.
    for _ in 0..4 {
        assert_eq!(sim.check(ok(120 * KB, ms(100))), None);
    }
    assert_eq!(sim.check(ok(9 * MB, ms(100))), None);
    for _ in 0..4 {
        assert_eq!(sim.check(ok(120 * KB, ms(100))), None);
    }
    // The fifth check below ends a 1.0 s wait.
    let t = sim.check(ok(120 * KB, ms(100))).unwrap();
    assert_eq!((t.from, t.to), (Lagging, Healthy));
    assert_eq!(
        t.reason,
        "lag 120 kB and 100 ms below readmit 8.0 MB / 500 ms for 1.0 s"
    );
}

#[test]
fn a_failed_check_breaks_the_readmission_wait() {
    let mut sim = Sim::lagging(bytes_only(2 * MB), 5 * MB);
    for _ in 0..4 {
        sim.check(ok(0, Duration::ZERO));
    }
    sim.check(failed("timeout"));
    for _ in 0..4 {
        assert_eq!(sim.check(ok(0, Duration::ZERO)), None);
    }
    let t = sim.check(ok(0, Duration::ZERO)).unwrap();
    assert_eq!(t.reason, "lag 0 B below readmit 1.0 MB for 1.0 s");
}

#[test]
fn a_zero_wait_readmits_at_the_first_check_below() {
    let t = LagThresholds {
        readmit_after: Duration::ZERO,
        ..bytes_only(2 * MB)
    };
    let mut sim = Sim::lagging(t, 5 * MB);
    assert_eq!(sim.check(ok(MB + 1, Duration::ZERO)), None);
    let tr = sim.check(ok(MB, Duration::ZERO)).unwrap();
    assert_eq!(tr.reason, "lag 1.0 MB below readmit 1.0 MB for 0 ms");
}

#[test]
fn lagging_reason_follows_the_figures() {
    let mut sim = Sim::lagging(bytes_only(2 * MB), 5 * MB);
    assert_eq!(sim.health.reason(), "lag 5.0 MB > max 2.0 MB");
    sim.check(ok(50 * MB, Duration::ZERO));
    assert_eq!(sim.health.reason(), "lag 50.0 MB > max 2.0 MB");
    assert!(sim.transitions.is_empty());
}

#[test]
fn consecutive_failures_take_it_down() {
    let mut sim = Sim::healthy(LagThresholds::default());
    assert_eq!(sim.check(failed("connection refused")), None);
    assert_eq!(sim.check(failed("connection refused")), None);
    assert_eq!(sim.state(), Healthy, "two failures are not enough");
    assert_eq!(sim.health.consecutive_failures(), 2);
    // A success resets the count.
    sim.check(ok(0, Duration::ZERO));
    assert_eq!(sim.health.consecutive_failures(), 0);
    sim.check(failed("timeout"));
    sim.check(failed("timeout"));
    let t = sim.check(failed("connection refused")).unwrap();
    assert_eq!((t.from, t.to), (Healthy, Down));
    assert_eq!(t.reason, "3 failed checks: connection refused");
    // Further failures update the reason, without a transition.
    assert_eq!(sim.check(failed("no route to host")), None);
    assert_eq!(sim.health.reason(), "4 failed checks: no route to host");
    // Lagging goes down the same way.
    let mut sim = Sim::lagging(bytes_only(2 * MB), 5 * MB);
    sim.check(failed("x"));
    sim.check(failed("x"));
    assert_eq!(sim.check(failed("x")).unwrap().from, Lagging);
    // Down before the first success: reason follows failures.
    let mut sim = Sim::new(LagThresholds::default());
    assert_eq!(sim.check(failed("connection refused")), None);
    assert_eq!(sim.health.reason(), "1 failed check: connection refused");
}

#[test]
fn down_needs_consecutive_successes() {
    let mut sim = Sim::healthy(LagThresholds::default());
    for _ in 0..3 {
        sim.check(failed("refused"));
    }
    assert_eq!(sim.state(), Down);
    assert_eq!(sim.check(ok(0, Duration::ZERO)), None);
    sim.check(failed("refused"));
    assert_eq!(
        sim.check(ok(0, Duration::ZERO)),
        None,
        "the count starts over"
    );
    let t = sim.check(ok(0, Duration::ZERO)).unwrap();
    assert_eq!((t.from, t.to), (Down, Healthy));
}

#[test]
fn promotion_takes_it_out_of_replica_duty() {
    let promoted = Sample::Ok {
        lag_bytes: 0,
        lag: Some(Duration::ZERO),
        in_recovery: false,
    };
    for start in [Healthy, Lagging, Down] {
        let mut sim = match start {
            Healthy => Sim::healthy(LagThresholds::default()),
            Lagging => Sim::lagging(bytes_only(2 * MB), 5 * MB),
            _ => Sim::new(LagThresholds::default()),
        };
        let t = sim.check(promoted.clone()).unwrap();
        assert_eq!((t.from, t.to), (start, Promoted));
        assert_eq!(
            t.reason,
            "no longer in recovery: promoted, not a replica any more"
        );
        assert!(!sim.state().serves_reads());
        // Logged once.
        assert_eq!(sim.check(promoted.clone()), None);
        // Failures leave it promoted.
        for _ in 0..5 {
            assert_eq!(sim.check(failed("refused")), None);
        }
        assert_eq!(sim.state(), Promoted);
        // Rebuilt as a replica: back after the successes.
        assert_eq!(sim.check(ok(0, Duration::ZERO)), None);
        let t = sim.check(ok(0, Duration::ZERO)).unwrap();
        assert_eq!((t.from, t.to), (Promoted, Healthy));
        assert!(
            t.reason
                .starts_with("back in recovery, 2 successful checks, lag 0 B"),
            "{}",
            t.reason
        );
    }
}

#[test]
fn tightening_the_threshold_while_lagging_keeps_it_lagging() {
    let mut sim = Sim::lagging(bytes_only(8 * MB), 9 * MB);
    // Catching up to 5 MB: within 8 MB but above the 4 MB readmit level.
    for _ in 0..8 {
        assert_eq!(sim.check(ok(5 * MB, Duration::ZERO)), None);
    }
    sim.health.set_thresholds(bytes_only(2 * MB)).unwrap();
    assert_eq!(sim.state(), Lagging, "not reset by the change");
    for _ in 0..20 {
        assert_eq!(sim.check(ok(5 * MB, Duration::ZERO)), None);
    }
    assert_eq!(sim.health.reason(), "lag 5.0 MB > max 2.0 MB");
}

#[test]
fn tightening_the_threshold_while_healthy_ejects_at_the_next_check() {
    let mut sim = Sim::healthy(bytes_only(8 * MB));
    assert_eq!(sim.check(ok(5 * MB, Duration::ZERO)), None);
    sim.health.set_thresholds(bytes_only(2 * MB)).unwrap();
    assert_eq!(
        sim.state(),
        Healthy,
        "judged at the next check, not at the change"
    );
    let t = sim.check(ok(5 * MB, Duration::ZERO)).unwrap();
    assert_eq!(t.reason, "lag 5.0 MB > max 2.0 MB");
}

#[test]
fn loosening_the_threshold_readmits_once_below_the_new_level() {
    let mut sim = Sim::lagging(bytes_only(2 * MB), 5 * MB);
    sim.health.set_thresholds(bytes_only(8 * MB)).unwrap();
    // 5 MB is within 8 MB but above the 4 MB readmit level: stays out.
    for _ in 0..20 {
        assert_eq!(sim.check(ok(5 * MB, Duration::ZERO)), None);
    }
    // Below 4 MB: back after readmit_after (5 checks at 250 ms = 1.0 s).
    for _ in 0..4 {
        assert_eq!(sim.check(ok(3 * MB, Duration::ZERO)), None);
    }
    let t = sim.check(ok(3 * MB, Duration::ZERO)).unwrap();
    assert_eq!((t.from, t.to), (Lagging, Healthy));
    assert_eq!(t.reason, "lag 3.0 MB below readmit 4.0 MB for 1.0 s");
}

#[test]
fn a_threshold_change_restarts_the_readmission_wait() {
    let mut sim = Sim::lagging(bytes_only(2 * MB), 5 * MB);
    for _ in 0..4 {
        sim.check(ok(0, Duration::ZERO));
    }
    sim.health.set_thresholds(bytes_only(4 * MB)).unwrap();
    for _ in 0..4 {
        assert_eq!(sim.check(ok(0, Duration::ZERO)), None);
    }
    assert_eq!(sim.check(ok(0, Duration::ZERO)).unwrap().to, Healthy);
}

#[test]
fn an_invalid_threshold_change_keeps_the_old_thresholds() {
    let mut sim = Sim::lagging(bytes_only(2 * MB), 5 * MB);
    let err = sim.health.set_thresholds(bytes_only(0)).unwrap_err();
    assert_eq!(err, ThresholdError::ZeroBytes);
    assert_eq!(err.field(), "max_bytes");
    assert_eq!(sim.health.thresholds(), &bytes_only(2 * MB));
    assert_eq!(sim.state(), Lagging);
}

/// Lag oscillating ±10% around the threshold for 60 simulated seconds.
fn hover(sim: &mut Sim, sample: impl Fn(f64) -> Sample) {
    for i in 0..240u32 {
        // A slow wave plus tick-to-tick noise, between 0.9 and 1.1 of the threshold.
        let wave = (f64::from(i) * 0.3).sin() * 0.07 + if i % 2 == 0 { 0.03 } else { -0.03 };
        sim.check(sample(1.0 + wave));
    }
}

#[test]
fn lag_hovering_around_the_byte_threshold_does_not_flap() {
    let mut sim = Sim::healthy(bytes_only(2 * MB));
    hover(&mut sim, |k| {
        ok((2.0 * MB as f64 * k) as u64, Duration::ZERO)
    });
    assert_eq!(sim.transitions.len(), 1, "{:?}", sim.transitions);
    assert_eq!(sim.transitions[0].to, Lagging);
    assert_eq!(sim.state(), Lagging);
}

#[test]
fn lag_hovering_around_the_time_threshold_does_not_flap() {
    let mut sim = Sim::healthy(LagThresholds::default());
    hover(&mut sim, |k| ok(KB, Duration::from_secs_f64(k)));
    assert_eq!(sim.transitions.len(), 1, "{:?}", sim.transitions);
    assert_eq!(sim.state(), Lagging);
}

#[test]
fn lag_hovering_around_the_readmit_level_does_not_readmit() {
    let mut sim = Sim::lagging(bytes_only(2 * MB), 5 * MB);
    // Every other check just above the 1 MB level: never a full second below it.
    for i in 0..240 {
        let lag = if i % 2 == 0 {
            MB - 50 * KB
        } else {
            MB + 50 * KB
        };
        assert_eq!(sim.check(ok(lag, Duration::ZERO)), None);
    }
    // Steadily below: readmitted exactly once.
    for _ in 0..40 {
        sim.check(ok(MB - 50 * KB, Duration::ZERO));
    }
    assert_eq!(sim.transitions.len(), 1);
    assert_eq!(sim.transitions[0].to, Healthy);
}

#[test]
fn extreme_inputs_do_not_panic() {
    let extremes = [
        LagThresholds {
            max_bytes: Some(u64::MAX),
            max_lag: Some(Duration::MAX),
            readmit_fraction: 1.0,
            readmit_after: Duration::MAX,
            down_after_failures: u32::MAX,
            up_after_successes: u32::MAX,
        },
        LagThresholds {
            max_bytes: Some(1),
            max_lag: Some(Duration::from_nanos(1)),
            readmit_fraction: f64::MIN_POSITIVE,
            readmit_after: Duration::ZERO,
            down_after_failures: 1,
            up_after_successes: 1,
        },
    ];
    for t in extremes {
        assert!(t.readmit_bytes().unwrap() <= t.max_bytes.unwrap());
        assert!(t.readmit_lag().unwrap() <= t.max_lag.unwrap());
        let mut sim = Sim::new(t);
        for sample in [
            ok(u64::MAX, Duration::MAX),
            ok(0, Duration::ZERO),
            ok(u64::MAX, Duration::ZERO),
            ok(0, Duration::MAX),
            Sample::Ok {
                lag_bytes: u64::MAX,
                lag: None,
                in_recovery: true,
            },
            failed(""),
            Sample::Ok {
                lag_bytes: u64::MAX,
                lag: None,
                in_recovery: false,
            },
        ] {
            for _ in 0..3 {
                sim.check(sample.clone());
            }
        }
    }
    // Fields set past validation are clamped, not trusted.
    let wild = LagThresholds {
        readmit_fraction: f64::NAN,
        ..bytes_only(10)
    };
    assert_eq!(wild.readmit_bytes(), Some(5));
    let wild = LagThresholds {
        readmit_fraction: 7.0,
        ..LagThresholds::default()
    };
    assert_eq!(wild.readmit_lag(), Some(Duration::from_secs(1)));
    // The failure count saturates.
    let mut h = ReplicaHealth::new(LagThresholds::default(), Instant::now()).unwrap();
    h.failures = u32::MAX;
    h.observe(&failed("x"), Instant::now());
    assert_eq!(h.consecutive_failures(), u32::MAX);
}

#[test]
fn ejection_and_readmission_from_the_primary_timeline() {
    // The whole chain: primary LSN samples -> lag -> state, with an idle primary.
    let thresholds = LagThresholds {
        max_bytes: Some(16 * MB),
        max_lag: Some(Duration::from_secs(1)),
        ..LagThresholds::default()
    };
    let mut sim = Sim::new(thresholds);
    let mut timeline = PrimaryTimeline::new();
    let mut primary = 1_000u64;
    let mut replica = 1_000u64;
    let mut step = |sim: &mut Sim, primary: u64, replica: u64| {
        timeline.record(sim.now + TICK, primary);
        let lag_bytes = timeline.lag_bytes(replica).unwrap_or(0);
        let lag = timeline.lag_seconds(replica, sim.now + TICK);
        sim.check(Sample::Ok {
            lag_bytes,
            lag,
            in_recovery: true,
        })
    };
    // Idle primary for a minute, replica level: healthy, never lagging.
    for _ in 0..240 {
        step(&mut sim, primary, replica);
    }
    assert_eq!(sim.state(), Healthy);
    // Replay paused while the primary writes 8 kB a tick: ejected by time after 1 s.
    let mut ejected_after = None;
    for i in 1..=20u64 {
        primary += 8 * KB;
        if let Some(t) = step(&mut sim, primary, replica) {
            ejected_after = Some(i);
            assert_eq!(t.reason, "lag 1.3 s > max 1.0 s");
        }
    }
    assert_eq!(ejected_after, Some(6));
    // The primary goes idle, replica still paused: stays out (its data is still old).
    for _ in 0..240 {
        assert_eq!(step(&mut sim, primary, replica), None);
    }
    // Replay resumes and catches up: back after readmit_after.
    replica = primary;
    let mut readmitted_after = None;
    for i in 1..=10 {
        if let Some(t) = step(&mut sim, primary, replica) {
            readmitted_after = Some(i);
            assert_eq!(t.to, Healthy);
        }
    }
    assert_eq!(readmitted_after, Some(5));
}
