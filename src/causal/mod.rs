//! Causal read-your-writes: a client that wrote reads from a replica only once that
//! replica has replayed the primary's WAL up to a position at or after its commit.
//!
//! The position comes from one shared sampler ([`sampler`]): a session whose transaction
//! wrote asks for a sample when the transaction ends ([`WritePositions::request`] hands out
//! a ticket, nothing waits), and the sampler answers every ticket handed out before its
//! `pg_current_wal_insert_lsn()` was sent with that one position, so a write-heavy load
//! costs one query per sample, not one per transaction. Until its ticket is answered the
//! client's reads go to the primary; then its causal LSN is the highest answer it got, and
//! a replica may serve its reads once its replay position (published by the monitor) has
//! reached it. The client's state ([`ClientCausal`]) and the comparisons are pure.

pub mod sampler;

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{watch, Notify};

/// What one client's reads must see: its own writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientCausal {
    /// The ticket of its last write whose position is not known yet.
    pending: Option<u64>,
    /// A WAL position at or after the commit of each of its writes whose position is
    /// known (0: none).
    lsn: u64,
}

impl ClientCausal {
    /// A transaction of the client that wrote has ended; `ticket` will bring its position.
    pub fn wrote(&mut self, ticket: u64) {
        // A later ticket's answer covers every earlier write too.
        self.pending = Some(self.pending.map_or(ticket, |t| t.max(ticket)));
    }

    /// Whether a write's position is still unknown (its reads go to the primary).
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Takes the position of the pending write if `positions` has it.
    pub fn settle(&mut self, positions: &WritePositions) {
        if let Some(ticket) = self.pending {
            if let Some(lsn) = positions.answer(ticket) {
                self.pending = None;
                self.lsn = self.lsn.max(lsn);
            }
        }
    }

    /// The position a replica must have replayed to serve this client's reads (0: any).
    pub fn lsn(&self) -> u64 {
        self.lsn
    }

    /// Whether a replica that has replayed up to `replay` may serve this client's reads.
    pub fn fresh(&self, replay: u64) -> bool {
        self.pending.is_none() && replay >= self.lsn
    }
}

/// The shared exchange between sessions that wrote and the sampler: tickets handed out,
/// the highest ticket answered and the position that answers it.
#[derive(Debug)]
pub struct WritePositions {
    /// The last ticket handed out.
    requested: AtomicU64,
    /// Every ticket up to this one is answered by `lsn`.
    answered: AtomicU64,
    /// The highest position sampled: at or after the commit of every answered write.
    lsn: AtomicU64,
    /// Wakes the sampler.
    wake: Notify,
    /// Each new position, for the replica checks (see `monitor`).
    published: watch::Sender<u64>,
}

impl Default for WritePositions {
    fn default() -> Self {
        WritePositions {
            requested: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            lsn: AtomicU64::new(0),
            wake: Notify::new(),
            published: watch::Sender::new(0),
        }
    }
}

impl WritePositions {
    /// A transaction that wrote has just ended (its commit is done): returns the ticket its
    /// position will be answered under, and wakes the sampler.
    pub fn request(&self) -> u64 {
        let ticket = self.requested.fetch_add(1, Ordering::AcqRel) + 1;
        self.wake.notify_one();
        ticket
    }

    /// A position at or after the commit of the write that got `ticket`, once sampled.
    pub fn answer(&self, ticket: u64) -> Option<u64> {
        (self.answered.load(Ordering::Acquire) >= ticket).then(|| self.lsn.load(Ordering::Acquire))
    }

    /// The highest write position known: replicas behind it may have clients waiting.
    pub fn latest(&self) -> u64 {
        self.lsn.load(Ordering::Acquire)
    }

    /// Changes with each new position sampled.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// The sampler is about to send its query: every ticket handed out so far will be
    /// answered by it. Returns that ticket, or None when none is waiting.
    pub fn unanswered(&self) -> Option<u64> {
        let requested = self.requested.load(Ordering::Acquire);
        (requested > self.answered.load(Ordering::Acquire)).then_some(requested)
    }

    /// The sample taken after `ticket` was handed out said `lsn`.
    pub fn publish(&self, ticket: u64, lsn: u64) {
        self.lsn.fetch_max(lsn, Ordering::AcqRel);
        self.answered.fetch_max(ticket, Ordering::AcqRel);
        self.published.send_replace(lsn);
    }

    /// Waits until a ticket is handed out (or returns at once if one was since the last
    /// wait).
    async fn requested(&self) {
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
    fn a_write_is_pending_until_a_sample_taken_after_it_answers() {
        let positions = WritePositions::default();
        let mut client = ClientCausal::default();
        assert!(client.fresh(0), "a client that never wrote reads anywhere");
        let ticket = positions.request();
        client.wrote(ticket);
        assert!(client.is_pending());
        assert!(!client.fresh(u64::MAX), "position unknown: primary");
        client.settle(&positions);
        assert!(client.is_pending(), "no sample yet");
        // The sampler takes every ticket handed out before its query.
        assert_eq!(positions.unanswered(), Some(ticket));
        let later = positions.request();
        positions.publish(ticket, 1000);
        client.settle(&positions);
        assert!(!client.is_pending());
        assert_eq!(client.lsn(), 1000);
        assert!(!client.fresh(999));
        assert!(client.fresh(1000));
        // A ticket handed out after the query was sent waits for the next sample.
        assert_eq!(positions.answer(later), None);
        assert_eq!(positions.unanswered(), Some(later));
        positions.publish(later, 1500);
        assert_eq!(positions.answer(later), Some(1500));
        assert_eq!(positions.unanswered(), None);
        assert_eq!(positions.latest(), 1500);
    }

    #[test]
    fn the_causal_lsn_is_the_highest_of_the_clients_writes() {
        let positions = WritePositions::default();
        let mut client = ClientCausal::default();
        let first = positions.request();
        client.wrote(first);
        let second = positions.request();
        client.wrote(second);
        // The first answer does not settle the second write.
        positions.publish(first, 500);
        client.settle(&positions);
        assert!(client.is_pending());
        positions.publish(second, 700);
        client.settle(&positions);
        assert_eq!(client.lsn(), 700);
        // Answers never go back (samples are taken in order; a late one cannot lower it).
        positions.publish(second, 600);
        assert_eq!(positions.answer(second), Some(700));
        // An earlier ticket, answered late, does not undo a later one.
        client.wrote(first);
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
