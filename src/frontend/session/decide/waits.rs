//! How long a session waits: for a node that owes it replies but stopped answering
//! pgsplit's checks (the stall watch), and for a client that sits idle while holding a
//! server connection.

use std::time::{Duration, Instant};

use crate::wire::message::TxStatus;

/// How often a session waiting for a node's reply looks whether the monitor found the
/// node down.
pub const STALL_CHECK: Duration = Duration::from_secs(1);

/// How long nothing must have come from a node the monitor finds down before a client
/// waiting on it is cut off (a node slow to answer checks may still be working on the
/// client's query).
pub const STALL_GRACE: Duration = Duration::from_secs(5);

/// Whether the wait for a node's reply is watched for a stall: the client is on a
/// replica (holds a lease) or on the primary, and the server owes it replies.
pub fn watched(on_replica: bool, on_primary: bool, owes_replies: bool) -> bool {
    (on_replica || on_primary) && owes_replies
}

/// The idle-in-transaction limit that applies to the wait for the next bytes: only while
/// the server is inside a transaction and owes the client nothing (the client is the one
/// that keeps the transaction open).
pub fn idle_transaction_limit(
    server: TxStatus,
    owes_replies: bool,
    limit: Option<Duration>,
) -> Option<Duration> {
    limit.filter(|_| server != TxStatus::Idle && !owes_replies)
}

/// When something last came from the server, or was last sent to it, as far as the stall
/// checks can tell: the clock is read once per check and once per write, not at every read
/// (reads are counted instead).
#[derive(Debug)]
pub struct StallWatch {
    /// The count of server reads at the last check.
    reads: u64,
    /// Since when that count has not changed (about: to within one check).
    since: Instant,
}

impl StallWatch {
    pub fn new(now: Instant) -> StallWatch {
        StallWatch {
            reads: 0,
            since: now,
        }
    }

    /// Something was just written to the server: it has had no time to answer yet.
    pub fn sent(&mut self, now: Instant) {
        self.since = now;
    }

    /// How long nothing has been read from the server since the last write to it, given
    /// the reads so far.
    pub fn quiet_for(&mut self, reads: u64, now: Instant) -> Duration {
        if reads != self.reads {
            self.reads = reads;
            self.since = now;
        }
        now.saturating_duration_since(self.since)
    }

    /// At a stall check: whether the wait ends, because the monitor finds the node down
    /// and nothing came from it for [`STALL_GRACE`].
    pub fn gave_up(&mut self, node_down: bool, reads: u64, now: Instant) -> bool {
        node_down && self.quiet_for(reads, now) >= STALL_GRACE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_servers_silence_counts_from_the_last_write_to_it() {
        let t0 = Instant::now();
        let mut watch = StallWatch::new(t0);
        watch.quiet_for(3, t0);
        // Nothing read for a minute...
        assert_eq!(watch.quiet_for(3, t0 + secs(60)), secs(60));
        // ...but a request was just sent: the server has had no time to answer it.
        watch.sent(t0 + secs(60));
        assert_eq!(watch.quiet_for(3, t0 + secs(60)), Duration::ZERO);
        assert_eq!(watch.quiet_for(3, t0 + secs(62)), secs(2));
        // A read resets it too.
        assert_eq!(watch.quiet_for(4, t0 + secs(120)), Duration::ZERO);
    }

    #[test]
    fn the_wait_ends_only_for_a_node_found_down_and_quiet_for_the_grace() {
        let t0 = Instant::now();
        let mut watch = StallWatch::new(t0);
        // Down, but quiet for less than the grace.
        assert!(!watch.gave_up(true, 0, t0 + STALL_GRACE - Duration::from_millis(1)));
        // Quiet for the grace, but not found down.
        assert!(!watch.gave_up(false, 0, t0 + STALL_GRACE));
        // Both.
        assert!(watch.gave_up(true, 0, t0 + STALL_GRACE));
        // Something came just now: it is still working.
        assert!(!watch.gave_up(true, 1, t0 + STALL_GRACE * 2));
        assert!(watch.gave_up(true, 1, t0 + STALL_GRACE * 3));
    }

    #[test]
    fn reads_seen_while_the_node_is_up_are_not_counted() {
        // The count is only looked at once the node is found down, so the quiet time
        // starts from that first look.
        let t0 = Instant::now();
        let mut watch = StallWatch::new(t0);
        assert!(!watch.gave_up(false, 7, t0 + secs(10)));
        assert!(!watch.gave_up(true, 7, t0 + secs(10)));
        assert!(watch.gave_up(true, 7, t0 + secs(10) + STALL_GRACE));
    }

    #[test]
    fn only_a_wait_for_owed_replies_is_watched() {
        assert!(watched(true, false, true));
        assert!(watched(false, true, true));
        assert!(!watched(false, false, true));
        assert!(!watched(true, true, false));
    }

    #[test]
    fn the_idle_in_transaction_limit_applies_only_to_a_client_that_keeps_one_open() {
        let limit = Some(secs(30));
        // (server status, replies owed, configured limit) -> the limit that applies
        let cases = [
            (TxStatus::InTransaction, false, limit, limit),
            (TxStatus::Failed, false, limit, limit),
            (TxStatus::Idle, false, limit, None),
            // The server is working on something: its slowness is not the client's idleness.
            (TxStatus::InTransaction, true, limit, None),
            (TxStatus::InTransaction, false, None, None),
        ];
        for (status, owes, configured, applies) in cases {
            let got = idle_transaction_limit(status, owes, configured);
            assert_eq!(got, applies, "{status:?} {owes} {configured:?}");
        }
    }
}
