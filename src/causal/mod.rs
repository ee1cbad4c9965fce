//! Causal read-your-writes: a client that wrote reads from a replica only once that
//! replica has replayed the primary's WAL up to a position at or after its commit.
//!
//! The position comes from one shared sampler ([`sampler`]), on demand: when a
//! transaction that wrote ends, the session only notes the number of the last sample sent
//! ([`WritePositions::mark`], one atomic load; any later sample was sent after the commit).
//! When the client then wants to read and no later sample is answered yet, its read goes to
//! the primary and it asks for one ([`WritePositions::ask`]); the sampler runs one
//! `pg_current_wal_insert_lsn()` for everyone waiting. So a client that never reads between
//! its writes (TPC-B) costs nothing, and a write-heavy load pays one query per sample, not
//! one per transaction. Once answered, the client's causal LSN is the highest answer it
//! got, and a replica may serve its reads once its replay position (published by the
//! monitor) has reached it (`topology::choose`). The client's state ([`ClientCausal`]) is
//! pure.

pub mod sampler;

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use tokio::sync::{watch, Notify};

/// What one client's reads must see: its own writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientCausal {
    /// The mark of its last write whose position is not known yet.
    pending: Option<u64>,
    /// A WAL position at or after the commit of each of its writes whose position is
    /// known (0: none).
    lsn: u64,
}

impl ClientCausal {
    /// A transaction of the client that wrote has ended; `mark` is
    /// [`WritePositions::mark`] taken after its commit.
    pub fn wrote(&mut self, mark: u64) {
        // A sample sent after the later write covers every earlier one too.
        self.pending = Some(self.pending.map_or(mark, |m| m.max(mark)));
    }

    /// Whether a write's position is still unknown (its reads go to the primary).
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Takes the position of the pending write if `positions` has it.
    pub fn settle(&mut self, positions: &WritePositions) {
        if let Some(mark) = self.pending {
            if let Some(lsn) = positions.answer(mark) {
                self.pending = None;
                self.lsn = self.lsn.max(lsn);
            }
        }
    }

    /// The client wants to read while its write's position is unknown: asks for a sample.
    pub fn ask(&self, positions: &WritePositions) {
        if let Some(mark) = self.pending {
            positions.ask(mark);
        }
    }

    /// The position a replica must have replayed to serve this client's reads (0: any).
    pub fn lsn(&self) -> u64 {
        self.lsn
    }

    /// The client's position as `SHOW CLIENTS` shows it.
    pub fn position(&self) -> crate::clients::CausalPosition {
        use crate::clients::CausalPosition;
        match (self.pending, self.lsn) {
            (Some(_), _) => CausalPosition::Pending,
            (None, 0) => CausalPosition::None,
            (None, lsn) => CausalPosition::Lsn(lsn),
        }
    }
}

/// The shared exchange between sessions that wrote and the sampler. Samples are numbered
/// 1, 2, ... in the order their queries are sent.
#[derive(Debug)]
pub struct WritePositions {
    /// The number of the last sample whose query was sent (or is about to be).
    sent: AtomicU64,
    /// The number of the last sample answered; `lsn` answers it and every earlier one.
    answered: AtomicU64,
    /// The highest position sampled.
    lsn: AtomicU64,
    /// The lowest sample number that answers every client waiting (0: none waits).
    wanted: AtomicU64,
    /// Wakes the sampler.
    wake: Notify,
    /// Each new position, for the replica checks (see `monitor`).
    published: watch::Sender<u64>,
}

impl Default for WritePositions {
    fn default() -> Self {
        WritePositions {
            sent: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            lsn: AtomicU64::new(0),
            wanted: AtomicU64::new(0),
            wake: Notify::new(),
            published: watch::Sender::new(0),
        }
    }
}

impl WritePositions {
    /// A transaction that wrote has just ended (its commit is acknowledged): every sample
    /// numbered above the mark returned was sent after the commit.
    pub fn mark(&self) -> u64 {
        self.sent.load(SeqCst)
    }

    /// A position at or after the commit of the write marked `mark`, once a sample sent
    /// after it has been answered.
    pub fn answer(&self, mark: u64) -> Option<u64> {
        (self.answered.load(SeqCst) > mark).then(|| self.lsn.load(SeqCst))
    }

    /// A client waits for the position of its write marked `mark`: asks for a sample sent
    /// after it (waking the sampler unless another client already asked for one as late).
    pub fn ask(&self, mark: u64) {
        if self.wanted.fetch_max(mark + 1, SeqCst) < mark + 1 {
            self.wake.notify_one();
        }
    }

    /// The highest write position known: replicas behind it may have clients waiting.
    pub fn latest(&self) -> u64 {
        self.lsn.load(SeqCst)
    }

    /// Changes with each new position sampled.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// The sampler is about to send a query: returns the sample's number, or None when no
    /// client waits for one.
    pub fn next_sample(&self) -> Option<u64> {
        if self.wanted.load(SeqCst) <= self.answered.load(SeqCst) {
            return None;
        }
        Some(self.sent.fetch_add(1, SeqCst) + 1)
    }

    /// Sample number `sample` said `lsn`.
    pub fn publish(&self, sample: u64, lsn: u64) {
        self.lsn.fetch_max(lsn, SeqCst);
        self.answered.fetch_max(sample, SeqCst);
        self.published.send_replace(lsn);
    }

    /// Waits until a client asks for a sample (or returns at once if one did since the
    /// last wait).
    async fn asked(&self) {
        self.wake.notified().await
    }
}

/// A WAL position at or after the end of every record inserted before
/// `pg_current_wal_insert_lsn()` returned `insert`. That function points past the header
/// of a page nothing has been written to yet, where a replica's replay position (the end
/// of the last record) stops at the page boundary: such a position is moved back to the
/// boundary, which is still at or after every record inserted. `page` is the server's
/// `wal_block_size`. Only the short page header (24 bytes) is undone: a page with the long
/// header starts a segment, and its size is not known here.
pub fn commit_bound(insert: u64, page: u64) -> u64 {
    const SHORT_PAGE_HEADER: u64 = 24;
    if page > SHORT_PAGE_HEADER && insert % page == SHORT_PAGE_HEADER {
        insert - SHORT_PAGE_HEADER
    } else {
        insert
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_is_pending_until_a_sample_sent_after_it_answers() {
        let positions = WritePositions::default();
        let mut client = ClientCausal::default();
        assert_eq!(client.lsn(), 0, "a client that never wrote reads anywhere");
        assert_eq!(positions.next_sample(), None, "nobody waits: no sample");
        // A sample already under way when the write ends does not count for it.
        positions.wanted.store(1, SeqCst);
        let early = positions.next_sample().unwrap();
        client.wrote(positions.mark());
        assert!(client.is_pending());
        positions.publish(early, 500);
        client.settle(&positions);
        assert!(
            client.is_pending(),
            "that sample was sent before the commit"
        );
        assert_eq!(
            positions.next_sample(),
            None,
            "and the client has not asked yet"
        );
        // It wants to read: it asks, the sampler sends one, and its answer settles it.
        client.ask(&positions);
        let sample = positions.next_sample().unwrap();
        client.settle(&positions);
        assert!(client.is_pending(), "not answered yet");
        positions.publish(sample, 1000);
        client.settle(&positions);
        assert!(!client.is_pending());
        assert_eq!(client.lsn(), 1000);
        assert_eq!(positions.latest(), 1000);
        assert_eq!(
            positions.next_sample(),
            None,
            "every waiting client is answered"
        );
    }

    #[test]
    fn the_causal_lsn_is_the_highest_of_the_clients_writes() {
        let positions = WritePositions::default();
        let mut client = ClientCausal::default();
        client.wrote(positions.mark());
        client.ask(&positions);
        let first = positions.next_sample().unwrap();
        // A second write while the first sample is under way needs a later sample.
        client.wrote(positions.mark());
        positions.publish(first, 500);
        client.settle(&positions);
        assert!(client.is_pending());
        client.ask(&positions);
        let second = positions.next_sample().unwrap();
        positions.publish(second, 700);
        client.settle(&positions);
        assert_eq!(client.lsn(), 700);
        // Answers never go back (a late one cannot lower the position).
        positions.publish(second, 600);
        assert_eq!(positions.latest(), 700);
        // An old mark is answered by the latest position, and does not lower the client's.
        client.wrote(0);
        client.settle(&positions);
        assert_eq!(client.lsn(), 700);
    }

    #[test]
    fn an_insert_position_past_an_empty_page_header_is_moved_back_to_the_boundary() {
        assert_eq!(commit_bound(8192 * 5 + 24, 8192), 8192 * 5);
        assert_eq!(commit_bound(8192 * 5 + 32, 8192), 8192 * 5 + 32);
        assert_eq!(commit_bound(8192 * 5, 8192), 8192 * 5);
        // The long header (segment start) is left alone.
        assert_eq!(commit_bound((16 << 20) + 40, 8192), (16 << 20) + 40);
        assert_eq!(commit_bound(16384 + 24, 16384), 16384);
        assert_eq!(commit_bound(8192 + 24, 16384), 8192 + 24);
        assert_eq!(commit_bound(24, 0), 24);
    }
}
