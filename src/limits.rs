//! Limits before login, the pure part: how long the accept loop waits after an accept error
//! (out of file descriptors and the like), and how often a flood of such errors or of
//! refused connections is logged. Time is passed in, so the tests need no clock.

use std::time::{Duration, Instant};

/// The wait after the first of a run of accept errors.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// The longest wait between accept attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The wait after accept errors: 10 ms, doubling with each error in a row up to 1 s, back
/// to 10 ms after an accept succeeds.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    errors_in_a_row: u32,
}

impl AcceptBackoff {
    /// An accept failed: how long to wait before the next one.
    pub fn failed(&mut self) -> Duration {
        let wait = FIRST_BACKOFF
            .saturating_mul(1u32 << self.errors_in_a_row.min(16))
            .min(MAX_BACKOFF);
        self.errors_in_a_row = self.errors_in_a_row.saturating_add(1);
        wait
    }

    /// An accept succeeded.
    pub fn succeeded(&mut self) {
        self.errors_in_a_row = 0;
    }
}

/// Counts events and lets one log line through per `period`, carrying how many events it
/// stands for (those since the last line, this one included).
#[derive(Debug)]
pub struct LogThrottle {
    period: Duration,
    last: Option<Instant>,
    pending: u64,
}

impl LogThrottle {
    pub fn new(period: Duration) -> LogThrottle {
        LogThrottle {
            period,
            last: None,
            pending: 0,
        }
    }

    /// One more event at `now`: `Some(count)` when it should be logged now.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        self.pending = self.pending.saturating_add(1);
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.period => None,
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.pending))
            }
        }
    }
}

impl Default for LogThrottle {
    /// At most one line a second.
    fn default() -> Self {
        LogThrottle::new(Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_10ms_to_1s_and_resets() {
        let mut backoff = AcceptBackoff::default();
        let waits: Vec<u128> = (0..10).map(|_| backoff.failed().as_millis()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        for _ in 0..100 {
            assert_eq!(backoff.failed(), MAX_BACKOFF);
        }
        backoff.succeeded();
        assert_eq!(backoff.failed(), FIRST_BACKOFF);
    }

    #[test]
    fn throttle_logs_once_a_period_with_the_count() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut throttle = LogThrottle::default();
        assert_eq!(throttle.hit(at(0)), Some(1));
        // A burst every 50 ms: one line a second, carrying the errors it stands for.
        let logged: Vec<(u64, u64)> = (1..=40)
            .filter_map(|i| throttle.hit(at(i * 50)).map(|n| (i * 50, n)))
            .collect();
        assert_eq!(logged, [(1000, 20), (2000, 20)]);
        // After a quiet spell the next event is logged at once.
        assert_eq!(throttle.hit(at(10_000)), Some(1));
    }
}
