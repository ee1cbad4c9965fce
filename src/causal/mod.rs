//! Causal read-your-writes: a client that wrote reads from a replica only once that
//! replica has replayed the primary's WAL up to a position at or after its commit.
//!
//! The position is read on the same server connection, right after the commit: when a
//! transaction that wrote ends, the session runs [`POSITION_SQL`] there (sent together with
//! the client's COMMIT when it can tell the statement ends the transaction, else as soon
//! as ReadyForQuery says it ended), and holds the client's ReadyForQuery until the answer
//! is in. So the client's position is exact and known before it can send anything else,
//! and the client gets its causal token ([`token`]) with that ReadyForQuery. A client's
//! state ([`ClientCausal`]) is pure; [`WritePositions`] is what sessions share with the
//! monitor and the [`flusher`]: the highest position a read is held back for (replicas
//! behind it are polled fast, and flushed to with asynchronous commit), the cluster's
//! identity (which tokens name) and the WAL page size.

pub mod flusher;
pub mod token;

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::watch;

use crate::lock::Locked;

pub use token::{ClusterId, TokenError, TokenKeys};

/// What the session runs on the primary after a transaction that wrote: the insert
/// position, at or after the commit record's end (even with `synchronous_commit = off`,
/// where the write and flush positions may still be behind it; see [`flusher`]). It is
/// prepared once per server connection, as [`POSITION_STATEMENT`].
pub const POSITION_SQL: &str = "SELECT pg_current_wal_insert_lsn()";

/// The name of pgsplit's prepared statement for [`POSITION_SQL`].
pub const POSITION_STATEMENT: &str = "pgsplit_position";

/// SQL that runs the position statement, preparing it first unless `prepared`.
pub fn position_query(prepared: bool) -> &'static str {
    if prepared {
        "EXECUTE pgsplit_position"
    } else {
        "PREPARE pgsplit_position AS SELECT pg_current_wal_insert_lsn();EXECUTE pgsplit_position"
    }
}

/// What one client's reads must see: its own writes, and the writes named by tokens it
/// presented.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientCausal {
    /// A transaction of the client's that wrote has ended and its position is not known
    /// yet (its reads go to the primary).
    pending: bool,
    /// A position at or after the commit of each of its writes (0: none).
    own: u64,
    /// The highest position a token it presented names (0: none).
    presented: u64,
    /// Since when its reads have gone to the primary waiting for a replica to replay its
    /// position (for the wait histogram).
    waiting_since: Option<Instant>,
}

impl ClientCausal {
    /// A transaction of the client that wrote has ended; its position comes with
    /// [`ClientCausal::placed`].
    pub fn wrote(&mut self) {
        self.pending = true;
    }

    /// The position of its last write: `lsn` was read after the commit.
    pub fn placed(&mut self, lsn: u64) {
        self.pending = false;
        self.own = self.own.max(lsn);
    }

    /// The client presented a token for `lsn`: its reads must see that position too.
    pub fn presented(&mut self, lsn: u64) {
        self.presented = self.presented.max(lsn);
    }

    /// Forgets the tokens presented (`RESET pgsplit.causal_token`).
    pub fn forget_presented(&mut self) {
        self.presented = 0;
    }

    /// Whether a write's position is still unknown (its reads go to the primary).
    pub fn is_pending(&self) -> bool {
        self.pending
    }

    /// The position a replica must have replayed to serve this client's reads (0: any).
    pub fn lsn(&self) -> u64 {
        self.own.max(self.presented)
    }

    /// Whether its position comes from a token rather than its own writes.
    pub fn from_token(&self) -> bool {
        self.presented > self.own
    }

    /// A read of the client went to the primary at `now` because no replica has replayed
    /// its position yet.
    pub fn held_back(&mut self, now: Instant) {
        self.waiting_since.get_or_insert(now);
    }

    /// A read of the client went to a replica at `now`: returns how long its reads were
    /// held back on the primary before, if they were.
    pub fn served_by_replica(&mut self, now: Instant) -> Option<std::time::Duration> {
        self.waiting_since
            .take()
            .map(|since| now.saturating_duration_since(since))
    }

    /// The client's position as `SHOW CLIENTS` shows it.
    pub fn position(&self) -> crate::clients::CausalPosition {
        use crate::clients::CausalPosition;
        match (self.pending, self.lsn()) {
            (true, _) => CausalPosition::Pending,
            (false, 0) => CausalPosition::None,
            (false, lsn) => CausalPosition::Lsn(lsn),
        }
    }
}

/// What sessions share about write positions.
#[derive(Debug)]
pub struct WritePositions {
    /// The highest position a read was held on the primary for, waiting for a replica to
    /// replay it: while a replica is behind it, the monitor reads its replay position often.
    awaited: AtomicU64,
    /// The highest position a client's write reached (`read_your_writes = "cluster"`
    /// holds every read to it).
    newest: AtomicU64,
    /// Changes with each new highest awaited position, for the replica checks.
    published: watch::Sender<u64>,
    /// The primary's WAL page size (`wal_block_size`), once the monitor has read it.
    page: AtomicU64,
    /// The cluster the primary belongs to, once the monitor has read it.
    cluster: Mutex<Option<ClusterId>>,
}

impl Default for WritePositions {
    fn default() -> Self {
        WritePositions {
            awaited: AtomicU64::new(0),
            newest: AtomicU64::new(0),
            published: watch::Sender::new(0),
            page: AtomicU64::new(8192),
            cluster: Mutex::new(None),
        }
    }
}

impl WritePositions {
    /// A read was held on the primary until a replica has replayed `lsn`.
    pub fn await_replay(&self, lsn: u64) {
        if self.awaited.fetch_max(lsn, SeqCst) < lsn {
            self.published.send_replace(lsn);
        }
    }

    /// A client's write reached `lsn` (its position is known).
    pub fn wrote(&self, lsn: u64) {
        self.newest.fetch_max(lsn, SeqCst);
    }

    /// The highest position a client's write reached so far (0 before the first).
    pub fn newest(&self) -> u64 {
        self.newest.load(SeqCst)
    }

    /// The highest position reads were held back for: replicas behind it may have clients
    /// waiting.
    pub fn awaited(&self) -> u64 {
        self.awaited.load(SeqCst)
    }

    /// Changes with each new highest awaited position.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// The primary's WAL page size (8192 until the monitor has read it).
    pub fn page(&self) -> u64 {
        self.page.load(SeqCst)
    }

    /// The monitor read the primary's WAL page size.
    pub fn set_page(&self, page: u64) {
        self.page.store(page, SeqCst);
    }

    /// The cluster the primary belongs to (None until the monitor has read it).
    pub fn cluster(&self) -> Option<ClusterId> {
        *self.cluster.locked()
    }

    /// The monitor read the primary's identity.
    pub fn set_cluster(&self, cluster: ClusterId) {
        let mut now = self.cluster.locked();
        if *now != Some(cluster) {
            tracing::info!(
                system_identifier = cluster.system,
                timeline = cluster.timeline,
                "primary's cluster identity (causal tokens name it)"
            );
            *now = Some(cluster);
        }
    }
}

/// A client's position from what [`POSITION_SQL`] returned, for WAL pages of `page`
/// bytes.
pub fn read_position(insert: &str, page: u64) -> Option<u64> {
    Some(commit_bound(parse_lsn(insert)?, page))
}

/// An LSN in PostgreSQL's text form (`16/B374D848`).
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some((u64::from(hi) << 32) | u64::from(lo))
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
    fn a_write_is_pending_until_its_position_is_read() {
        let mut client = ClientCausal::default();
        assert_eq!(client.lsn(), 0, "a client that never wrote reads anywhere");
        assert_eq!(client.position(), crate::clients::CausalPosition::None);
        client.wrote();
        assert!(client.is_pending());
        assert_eq!(client.position(), crate::clients::CausalPosition::Pending);
        client.placed(1000);
        assert!(!client.is_pending());
        assert_eq!(client.lsn(), 1000);
        // Positions never go back.
        client.wrote();
        client.placed(900);
        assert_eq!(client.lsn(), 1000);
    }

    #[test]
    fn a_presented_token_raises_the_position_without_lowering_it() {
        let mut client = ClientCausal::default();
        client.presented(500);
        assert_eq!(client.lsn(), 500);
        assert!(client.from_token());
        client.wrote();
        client.placed(700);
        assert_eq!(client.lsn(), 700);
        assert!(!client.from_token());
        client.presented(600);
        assert_eq!(client.lsn(), 700);
    }

    #[test]
    fn the_wait_runs_from_the_first_held_back_read_to_the_first_replica_read() {
        let t0 = Instant::now();
        let ms = std::time::Duration::from_millis;
        let mut client = ClientCausal::default();
        assert_eq!(client.served_by_replica(t0), None, "never held back");
        client.held_back(t0);
        client.held_back(t0 + ms(30));
        assert_eq!(client.served_by_replica(t0 + ms(45)), Some(ms(45)));
        assert_eq!(client.served_by_replica(t0 + ms(50)), None);
    }

    #[test]
    fn the_position_query_prepares_the_statement_it_runs() {
        for prepared in [false, true] {
            let sql = position_query(prepared);
            assert!(sql.ends_with(&format!("EXECUTE {POSITION_STATEMENT}")));
            assert_eq!(sql.contains(POSITION_SQL), !prepared);
        }
    }

    #[test]
    fn positions_are_read_from_their_text_form() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("zz"), None);
        assert_eq!(
            read_position("0/2018", 8192),
            Some(0x2000),
            "moved back past an empty page's header"
        );
        assert_eq!(read_position("0/2050", 8192), Some(0x2050));
        assert_eq!(read_position("x", 8192), None);
    }

    #[test]
    fn awaited_positions_are_published_and_never_go_back() {
        let positions = WritePositions::default();
        let seen = positions.subscribe();
        positions.await_replay(100);
        assert_eq!(positions.awaited(), 100);
        assert_eq!(*seen.borrow(), 100);
        positions.await_replay(50);
        assert_eq!(positions.awaited(), 100);
        assert_eq!(*seen.borrow(), 100);
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
