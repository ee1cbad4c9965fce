//! Read-your-writes by LSN, the session's part of it (see `crate::causal`): which writes a
//! position read on the primary covers, whether the position query goes along with a
//! statement that ends a transaction or is sent on its own once the client is idle, and
//! the Query message that carries it after a COMMIT.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::config::PoolMode;
use crate::router::Policy;
use crate::wire::message::TxStatus;

/// Whether a session reads positions after its writes: routing by position (`lsn` or
/// `cluster`) in transaction pooling.
pub fn reads_positions(policy: &Policy, mode: PoolMode) -> bool {
    policy.enabled && policy.read_your_writes.by_position() && mode == PoolMode::Transaction
}

/// The client's writes and the position queries that cover them, counted.
#[derive(Debug, Default)]
pub struct Writes {
    /// Statements that write sent so far.
    sent: u64,
    /// The writes covered by a position the client holds.
    covered: u64,
    /// For each position query on its way, in order: the writes sent before it.
    in_flight: VecDeque<u64>,
}

impl Writes {
    /// A statement that writes is being sent.
    pub fn sent_one(&mut self) {
        self.sent += 1;
    }

    /// Writes were sent that no position query sent after them covers yet.
    pub fn unplaced(&self) -> bool {
        self.sent > self.covered
    }

    /// A position query is on its way: it covers every write sent so far.
    pub fn position_sent(&mut self) {
        self.in_flight.push_back(self.sent);
    }

    /// The oldest position query on its way was answered. `placed`: outside any
    /// transaction, with a position, which then covers the writes sent before it.
    /// Positions are answered in the order sent; one skipped after an error leaves an
    /// older mark at the front, which claims less, never more.
    pub fn answered(&mut self, placed: bool) {
        let covers = self.in_flight.pop_front();
        if let (true, Some(covers)) = (placed, covers) {
            self.covered = self.covered.max(covers);
        }
    }

    /// Nothing is outstanding on the server any more: no position query is on its way.
    pub fn settled(&mut self) {
        self.in_flight.clear();
    }
}

/// Where the client stands for read-your-writes, as the position rules need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// The session reads positions (see [`reads_positions`]).
    pub reads_positions: bool,
    /// The current server is the primary.
    pub on_primary: bool,
    /// Writes were sent that no position covers yet ([`Writes::unplaced`]).
    pub unplaced: bool,
}

/// Whether the statement or batch being sent, which ends a transaction (`ending`), carries
/// the position query with it: the transaction wrote, on the primary, and no position
/// covers that yet.
pub fn carries_position(ending: bool, standing: Standing) -> bool {
    ending && standing.unplaced && standing.on_primary && standing.reads_positions
}

/// When the client's ReadyForQuery with `status` is about to be relayed: whether the
/// position query is sent now, on its own, with the ReadyForQuery held until its answer.
/// So it is when the client is idle after writes that no position covers yet (an
/// autocommit write, a COMMIT that came with other statements), output is not held
/// already, and nothing else is outstanding (`owes_replies`, an open batch): a client that
/// pipelined more gets its position once it is idle.
pub fn send_position_now(
    status: TxStatus,
    holding: bool,
    owes_replies: bool,
    in_batch: bool,
    standing: Standing,
) -> bool {
    status == TxStatus::Idle
        && !holding
        && standing.reads_positions
        && standing.unplaced
        && standing.on_primary
        && !owes_replies
        && !in_batch
}

/// The Query message that runs the client's `sql` (one statement that ends a transaction
/// that wrote) and then the `position` query: the client's text, a newline (which ends a
/// trailing `--` comment), `;` and the position query. Its answer comes in the same reply,
/// before the ReadyForQuery, at no extra round trip.
pub fn commit_query(sql: &[u8], position: &str) -> Bytes {
    let len = 4 + sql.len() + 2 + position.len() + 1;
    let mut query = BytesMut::with_capacity(1 + len);
    query.extend_from_slice(b"Q");
    query.extend_from_slice(&(len as u32).to_be_bytes());
    query.extend_from_slice(sql);
    query.extend_from_slice(b"\n;");
    query.extend_from_slice(position.as_bytes());
    query.extend_from_slice(b"\0");
    query.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::ReadYourWrites;
    use TxStatus::{Failed, Idle, InTransaction};

    const READY: Standing = Standing {
        reads_positions: true,
        on_primary: true,
        unplaced: true,
    };

    #[test]
    fn positions_are_read_only_when_routing_by_lsn_in_transaction_pooling() {
        let cluster = Policy {
            read_your_writes: ReadYourWrites::Cluster,
            ..Policy::default()
        };
        assert!(reads_positions(&cluster, PoolMode::Transaction));
        let lsn = Policy {
            read_your_writes: ReadYourWrites::Lsn,
            ..Policy::default()
        };
        assert!(reads_positions(&lsn, PoolMode::Transaction));
        assert!(!reads_positions(&lsn, PoolMode::Session));
        let disabled = Policy {
            enabled: false,
            ..lsn.clone()
        };
        assert!(!reads_positions(&disabled, PoolMode::Transaction));
        for other in [ReadYourWrites::Time, ReadYourWrites::Off] {
            let policy = Policy {
                read_your_writes: other,
                ..lsn.clone()
            };
            assert!(!reads_positions(&policy, PoolMode::Transaction));
        }
    }

    /// The writes after `steps`: `w` a write sent, `p` a position query sent, `a` one
    /// answered with a position outside a transaction, `x` one answered without, `s` the
    /// session settled.
    fn unplaced_after(steps: &str) -> bool {
        let mut writes = Writes::default();
        for step in steps.chars() {
            match step {
                'w' => writes.sent_one(),
                'p' => writes.position_sent(),
                'a' => writes.answered(true),
                'x' => writes.answered(false),
                's' => writes.settled(),
                other => panic!("unknown step {other}"),
            }
        }
        writes.unplaced()
    }

    #[test]
    fn a_position_covers_the_writes_sent_before_it() {
        assert!(!unplaced_after(""));
        assert!(unplaced_after("w"));
        assert!(!unplaced_after("wpa"));
        // A write sent after the position query: not covered by it.
        assert!(unplaced_after("wpwa"));
        assert!(!unplaced_after("wpwapa"));
    }

    #[test]
    fn a_position_answered_inside_a_transaction_or_not_at_all_covers_nothing() {
        assert!(unplaced_after("wpx"));
        // Its mark is gone: the next answer is the next query's.
        assert!(!unplaced_after("wpxpa"));
    }

    #[test]
    fn positions_are_matched_with_their_queries_in_order() {
        // Two on their way: the first answer covers only the writes before the first.
        assert!(unplaced_after("wpwpa"));
        assert!(!unplaced_after("wpwpaa"));
        // The first answered without a position: the second still covers both.
        assert!(!unplaced_after("wpwpxa"));
        // Settled with nothing in flight: a late answer claims nothing.
        assert!(unplaced_after("wpsa"));
    }

    /// Standings in which no position query is due: one condition missing each.
    const NOT_READY: [Standing; 3] = [
        Standing {
            reads_positions: false,
            ..READY
        },
        Standing {
            on_primary: false,
            ..READY
        },
        Standing {
            unplaced: false,
            ..READY
        },
    ];

    #[test]
    fn a_commit_carries_the_position_only_after_unplaced_writes_on_the_primary() {
        assert!(carries_position(true, READY));
        assert!(!carries_position(false, READY));
        for standing in NOT_READY {
            assert!(!carries_position(true, standing), "{standing:?}");
        }
    }

    #[test]
    fn the_position_is_sent_on_its_own_once_the_client_is_idle_with_nothing_outstanding() {
        // (status, output held, replies owed, batch open) -> sent now
        let cases = [
            (Idle, false, false, false, true),
            // Not idle.
            (InTransaction, false, false, false, false),
            (Failed, false, false, false, false),
            // Output held already (a position query is on its way).
            (Idle, true, false, false, false),
            // Pipelined work outstanding, or an open batch: later.
            (Idle, false, true, false, false),
            (Idle, false, false, true, false),
        ];
        for (status, holding, owes, in_batch, now) in cases {
            let got = send_position_now(status, holding, owes, in_batch, READY);
            assert_eq!(got, now, "{status:?} {holding} {owes} {in_batch}");
        }
        for standing in NOT_READY {
            assert!(!send_position_now(Idle, false, false, false, standing));
        }
    }

    #[test]
    fn the_commit_query_appends_the_position_query_after_a_newline() {
        let query = commit_query(b"COMMIT -- done", "SELECT 1");
        let text = b"COMMIT -- done\n;SELECT 1\0";
        assert_eq!(query[0], b'Q');
        let len = u32::from_be_bytes([query[1], query[2], query[3], query[4]]) as usize;
        assert_eq!(len, 4 + text.len());
        assert_eq!(&query[5..], text);
    }
}
