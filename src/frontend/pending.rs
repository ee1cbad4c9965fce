//! What a server still owes the client, in order, and what to do with each reply.
//!
//! Every message pgsplit sends to a server that will be answered is recorded here, and so
//! is every answer pgsplit gives on the server's behalf (a ParseComplete for a statement
//! the server already has, a CloseComplete for a client-side Close). Server messages are
//! then matched against the queue in order: replies to messages pgsplit injected itself
//! are swallowed, its own answers are emitted at exactly the point the client expects
//! them, and an error skips what the server skips (everything up to the next Sync).
//! The queue being empty means no Sync or Query is outstanding.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

/// The kind of message a reply is expected for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Parse,
    Bind,
    Describe,
    Execute,
    Close,
    Sync,
    /// A simple Query or a FunctionCall: answered up to ReadyForQuery.
    Query,
}

impl Kind {
    /// Whether a server message with `tag` is the last reply to this kind of message.
    fn completed_by(self, tag: u8) -> bool {
        match self {
            Kind::Parse => tag == b'1',
            Kind::Bind => tag == b'2',
            Kind::Close => tag == b'3',
            Kind::Describe => tag == b'T' || tag == b'n',
            Kind::Execute => matches!(tag, b'C' | b'I' | b's'),
            Kind::Sync | Kind::Query => tag == b'Z',
        }
    }

    /// Whether an ErrorResponse leaves this entry waiting for ReadyForQuery.
    fn waits_for_ready(self) -> bool {
        matches!(self, Kind::Sync | Kind::Query)
    }
}

/// Which server replies the client must not see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hide {
    /// The client sees every reply.
    Nothing,
    /// The completion message is dropped (a Parse or Close pgsplit injected); errors
    /// still reach the client.
    Completion,
    /// A Query whose text pgsplit extended with its position query after the client's one
    /// statement: once that statement has completed (or failed, when the rest never runs),
    /// every reply up to ReadyForQuery is pgsplit's. True once it has.
    Position(bool),
    /// A Sync pgsplit sent in the middle of the client's batch, after a statement that
    /// ended the transaction on a replica, so that the rest of the batch can run elsewhere
    /// (see `Session::split_batch`): its ReadyForQuery is pgsplit's.
    Split,
}

/// The statement a Parse creates on the server, which is gone (or was never made) if the
/// Parse fails or the server skips it after an earlier error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A named statement (pgsplit's name for it on the server).
    Named(Arc<str>),
    /// The unnamed statement, by the id of the client's statement it holds; `before` is
    /// the one the server connection held before (it keeps that one if the Parse is
    /// skipped).
    Unnamed { id: u64, before: Option<u64> },
}

/// A Parse whose statement the server did not make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmade {
    pub parsed: Parsed,
    /// The Parse itself failed (PostgreSQL had already dropped the unnamed statement);
    /// otherwise the server skipped it after an earlier error.
    pub failed: bool,
}

/// One expected reply, or one answer of pgsplit's own.
#[derive(Debug, Clone)]
pub enum Pending {
    Reply {
        kind: Kind,
        hide: Hide,
        /// For a Parse: the statement it creates, forgotten if the Parse fails or is
        /// skipped.
        statement: Option<Parsed>,
    },
    Synthetic(Bytes),
    /// The client ended a COPY (CopyDone or CopyFail). No reply: it marks where the
    /// Syncs a server ignores in copy-in mode stop.
    CopyEnd,
    /// pgsplit's own query for the write position after a commit (a simple Query; see
    /// `crate::causal`): none of its replies reach the client.
    Position,
    /// The Execute of pgsplit's position query inside a client's extended-protocol batch
    /// (before its Sync): its rows, completion and error are pgsplit's.
    PositionRows,
    /// pgsplit's own simple Query that cleans the connection for its new client, sent
    /// ahead of the client's first message (`DISCARD SEQUENCES`: see
    /// `Session::forget_sequences`): none of its replies reach the client.
    Cleanup,
}

impl Pending {
    pub fn reply(kind: Kind) -> Pending {
        Pending::Reply {
            kind,
            hide: Hide::Nothing,
            statement: None,
        }
    }
}

/// What to do with one server message.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    Drop,
    /// A reply to pgsplit's position query: not for the client; the session reads it.
    Position,
    /// A reply to pgsplit's cleanup query: not for the client; the session notes only its
    /// ReadyForQuery (the transaction status) and an error (the cleanup failed).
    Cleanup,
    /// The ReadyForQuery of pgsplit's Sync in the middle of a batch (`Hide::Split`): not
    /// for the client; the session notes the status and routes the rest of the batch.
    Split,
}

/// The ordered queue of expected replies for one server connection.
#[derive(Debug, Default)]
pub struct PendingQueue {
    queue: VecDeque<Pending>,
    /// The server is in copy-in mode and the client has not ended the copy yet: the
    /// server ignores Syncs until then, so none is expected.
    copy_in: bool,
    /// Server-side statements whose Parse failed or was skipped, for the caller to forget.
    failed_statements: Vec<Unmade>,
}

impl PendingQueue {
    pub fn push(&mut self, p: Pending) {
        self.queue.push_back(p);
    }

    /// Puts `p` ahead of everything queued.
    pub fn push_front(&mut self, p: Pending) {
        self.queue.push_front(p);
    }

    /// Records a Sync the client sent; in copy-in mode the server ignores it.
    pub fn push_sync(&mut self) {
        if !self.copy_in {
            self.queue.push_back(Pending::reply(Kind::Sync));
        }
    }

    /// The client sent CopyDone or CopyFail.
    pub fn client_copy_end(&mut self) {
        if self.copy_in {
            self.copy_in = false;
        } else {
            // The server has not said CopyInResponse yet (or there is no copy).
            self.queue.push_back(Pending::CopyEnd);
        }
    }

    /// The server entered copy-in mode: Syncs the client sent since, up to its end of
    /// the copy, will be ignored by the server.
    fn copy_in_started(&mut self) {
        let mut i = 1;
        while i < self.queue.len() {
            match self.queue[i] {
                Pending::CopyEnd => {
                    self.queue.remove(i);
                    return;
                }
                Pending::Reply {
                    kind: Kind::Sync, ..
                } => {
                    self.queue.remove(i);
                }
                _ => i += 1,
            }
        }
        self.copy_in = true;
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn clear(&mut self) {
        self.queue.clear();
        self.copy_in = false;
    }

    /// Whether a Sync or Query is outstanding (the server will send ReadyForQuery).
    pub fn awaits_ready(&self) -> bool {
        self.queue.iter().any(|p| {
            matches!(
                p,
                Pending::Reply {
                    kind: Kind::Sync | Kind::Query,
                    ..
                } | Pending::Position
                    | Pending::Cleanup
            )
        })
    }

    /// Moves pgsplit's own answers at the head of the queue into `out` (and drops copy
    /// markers that no copy claimed).
    pub fn emit_synthetic(&mut self, out: &mut BytesMut) {
        loop {
            match self.queue.front() {
                Some(Pending::Synthetic(bytes)) => out.extend_from_slice(bytes),
                Some(Pending::CopyEnd) => {}
                _ => return,
            }
            self.queue.pop_front();
        }
    }

    /// Takes the statements whose Parse failed or was skipped since the last call, in
    /// order.
    pub fn take_failed_statements(&mut self) -> Vec<Unmade> {
        std::mem::take(&mut self.failed_statements)
    }

    /// Whether a DataRow or CopyData arriving now goes to the client unchanged (it is not a
    /// reply to something of pgsplit's own), so it may be relayed before it is whole.
    pub fn forwards_rows(&self) -> bool {
        match self.queue.front() {
            None => true,
            Some(Pending::Reply { hide, .. }) => *hide != Hide::Position(true),
            Some(_) => false,
        }
    }

    /// Matches one server message (by its type byte) against the queue.
    pub fn on_server_message(&mut self, tag: u8) -> Verdict {
        // Asynchronous messages (notices, notifications, parameter changes) that come
        // while pgsplit's position query is answered are the client's; everything else
        // answers the query (its ParseComplete and BindComplete too, when it went as Parse,
        // Bind and Execute ahead of a batch's Sync).
        match self.queue.front_mut() {
            Some(Pending::Position | Pending::PositionRows | Pending::Cleanup)
                if matches!(tag, b'N' | b'A' | b'S') =>
            {
                return Verdict::Forward
            }
            Some(Pending::Cleanup) => {
                if tag == b'Z' {
                    self.queue.pop_front();
                }
                return Verdict::Cleanup;
            }
            // (Not expected: the server skipped the rows' Execute without an error.)
            Some(Pending::PositionRows) if tag == b'Z' => {
                self.queue.pop_front();
            }
            Some(Pending::Position) => {
                if tag == b'Z' {
                    self.queue.pop_front();
                }
                return Verdict::Position;
            }
            Some(Pending::PositionRows) => {
                match tag {
                    b'C' => {
                        self.queue.pop_front();
                    }
                    b'E' => {
                        self.queue.pop_front();
                        self.skip_to_sync(false);
                    }
                    _ => {}
                }
                return Verdict::Position;
            }
            Some(Pending::Reply {
                kind: Kind::Query,
                hide: Hide::Position(done),
                ..
            }) => {
                if !matches!(tag, b'T' | b'D' | b'C' | b'E') {
                    // Its ReadyForQuery and asynchronous messages are the client's.
                } else if *done {
                    return Verdict::Position;
                } else {
                    *done = matches!(tag, b'C' | b'E');
                }
            }
            _ => {}
        }
        let Some(Pending::Reply { kind, hide, .. }) = self.queue.front() else {
            // Nothing expected: asynchronous messages (notices, notifications,
            // parameter changes) or replies to Flush-less chatter pass through.
            return Verdict::Forward;
        };
        let (kind, hide) = (*kind, *hide);
        if tag == b'G' {
            self.copy_in_started();
            return Verdict::Forward;
        }
        if tag == b'E' {
            // An error ends copy-in mode too.
            self.copy_in = false;
            if !kind.waits_for_ready() {
                self.skip_to_sync(true);
            }
            return Verdict::Forward;
        }
        if kind.completed_by(tag) {
            self.queue.pop_front();
            if tag != b'Z' && hide == Hide::Completion {
                return Verdict::Drop;
            }
            if hide == Hide::Split {
                return Verdict::Split;
            }
            return Verdict::Forward;
        }
        if tag == b'Z' {
            // ReadyForQuery while expecting something else: the server skipped it.
            self.skip_to_sync(false);
            if let Some(Pending::Reply {
                kind: Kind::Sync | Kind::Query,
                ..
            }) = self.queue.front()
            {
                self.queue.pop_front();
            }
        }
        Verdict::Forward
    }

    /// After an error the server ignores everything up to the next Sync: drop those
    /// entries, pgsplit's own answers among them. `failed_first`: the first entry is the
    /// message that failed.
    fn skip_to_sync(&mut self, failed_first: bool) {
        let mut failed = failed_first;
        while let Some(p) = self.queue.front() {
            if let Pending::Reply {
                kind: Kind::Sync, ..
            }
            | Pending::Position = p
            {
                break;
            }
            if let Pending::Reply {
                statement: Some(parsed),
                kind: Kind::Parse,
                ..
            } = p
            {
                self.failed_statements.push(Unmade {
                    parsed: parsed.clone(),
                    failed,
                });
            }
            failed = false;
            self.queue.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(q: &mut PendingQueue, tags: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        q.emit_synthetic(&mut out);
        let mut seen: Vec<u8> = out.iter().copied().collect();
        for &t in tags {
            if q.on_server_message(t) == Verdict::Forward {
                seen.push(t);
            }
            let mut out = BytesMut::new();
            q.emit_synthetic(&mut out);
            seen.extend(out.iter().copied());
        }
        seen
    }

    /// The server messages `tags` as the client sees them, a reply to the position query
    /// marked `-`.
    fn marked(q: &mut PendingQueue, tags: &[u8]) -> Vec<u8> {
        tags.iter()
            .filter_map(|&tag| match q.on_server_message(tag) {
                Verdict::Forward => Some(tag),
                Verdict::Position => Some(b'-'),
                Verdict::Drop | Verdict::Cleanup | Verdict::Split => None,
            })
            .collect()
    }

    #[test]
    fn synthetic_parse_complete_lands_in_order() {
        let mut q = PendingQueue::default();
        q.push(Pending::Synthetic(Bytes::from_static(b"1")));
        q.push(Pending::reply(Kind::Bind));
        q.push(Pending::reply(Kind::Execute));
        q.push(Pending::reply(Kind::Sync));
        assert_eq!(run(&mut q, b"2DCZ"), b"12DCZ");
        assert!(q.is_empty());
    }

    #[test]
    fn injected_parse_is_hidden_but_its_error_is_not() {
        let mut q = PendingQueue::default();
        q.push(Pending::Reply {
            kind: Kind::Parse,
            hide: Hide::Completion,
            statement: Some(Parsed::Named("s1".into())),
        });
        q.push(Pending::reply(Kind::Bind));
        q.push(Pending::reply(Kind::Execute));
        q.push(Pending::reply(Kind::Sync));
        assert_eq!(run(&mut q, b"12CZ"), b"2CZ");
        assert!(q.take_failed_statements().is_empty());

        q.push(Pending::Reply {
            kind: Kind::Parse,
            hide: Hide::Completion,
            statement: Some(Parsed::Named("s2".into())),
        });
        q.push(Pending::reply(Kind::Bind));
        q.push(Pending::Synthetic(Bytes::from_static(b"3")));
        q.push(Pending::reply(Kind::Sync));
        assert_eq!(run(&mut q, b"EZ"), b"EZ");
        assert_eq!(
            q.take_failed_statements(),
            vec![Unmade {
                parsed: Parsed::Named(Arc::<str>::from("s2")),
                failed: true,
            }]
        );
        assert!(q.is_empty());
    }

    #[test]
    fn pipelined_syncs_stay_outstanding_until_each_ready() {
        let mut q = PendingQueue::default();
        for _ in 0..2 {
            q.push(Pending::reply(Kind::Bind));
            q.push(Pending::reply(Kind::Execute));
            q.push(Pending::reply(Kind::Sync));
        }
        run(&mut q, b"2DCZ");
        assert!(q.awaits_ready());
        run(&mut q, b"2E");
        assert!(q.awaits_ready());
        run(&mut q, b"Z");
        assert!(q.is_empty());
    }

    #[test]
    fn simple_query_error_waits_for_ready() {
        let mut q = PendingQueue::default();
        q.push(Pending::reply(Kind::Query));
        assert_eq!(run(&mut q, b"TDCNESEZ"), b"TDCNESEZ");
        assert!(q.is_empty());
    }

    #[test]
    fn syncs_sent_during_copy_in_are_not_expected() {
        // tokio-postgres: Bind, Execute, Sync, then CopyData..., CopyDone, Sync.
        let mut q = PendingQueue::default();
        q.push(Pending::reply(Kind::Bind));
        q.push(Pending::reply(Kind::Execute));
        q.push_sync();
        q.client_copy_end();
        q.push_sync();
        assert_eq!(run(&mut q, b"2GCZ"), b"2GCZ");
        assert!(q.is_empty());

        // The copy data arrives after CopyInResponse was seen.
        q.push(Pending::reply(Kind::Query));
        assert_eq!(run(&mut q, b"G"), b"G");
        q.push_sync();
        q.client_copy_end();
        assert_eq!(run(&mut q, b"CZ"), b"CZ");
        assert!(q.is_empty());

        // A CopyDone with no copy leaves nothing behind.
        q.client_copy_end();
        run(&mut q, b"");
        assert!(q.is_empty());
    }

    #[test]
    fn describe_statement_completes_on_row_description_or_no_data() {
        let mut q = PendingQueue::default();
        q.push(Pending::reply(Kind::Describe));
        q.push(Pending::reply(Kind::Describe));
        q.push(Pending::reply(Kind::Sync));
        assert_eq!(run(&mut q, b"tTnZ"), b"tTnZ");
        assert!(q.is_empty());
    }

    #[test]
    fn the_position_query_is_read_by_pgsplit_and_counts_as_outstanding() {
        let mut q = PendingQueue::default();
        q.push(Pending::reply(Kind::Query));
        q.push(Pending::Position);
        assert!(q.awaits_ready());
        assert_eq!(run(&mut q, b"CZ"), b"CZ");
        for tag in *b"TDCZ" {
            assert_eq!(q.on_server_message(tag), Verdict::Position);
        }
        assert!(q.is_empty());
        // Its error is not the client's either, and does not skip anything of the client's.
        q.push(Pending::Position);
        q.push(Pending::reply(Kind::Query));
        assert_eq!(run(&mut q, b"EZ"), b"");
        assert_eq!(run(&mut q, b"CZ"), b"CZ");
        assert!(q.is_empty());
    }

    #[test]
    fn the_cleanup_query_is_pgsplits_and_counts_as_outstanding() {
        let mut q = PendingQueue::default();
        q.push(Pending::Synthetic(Bytes::from_static(b"3")));
        q.push(Pending::Cleanup);
        q.push(Pending::reply(Kind::Query));
        assert!(q.awaits_ready());
        // What pgsplit answered before comes first; the cleanup's replies, an error
        // among them, are not the client's and skip nothing of the client's.
        let mut out = BytesMut::new();
        q.emit_synthetic(&mut out);
        assert_eq!(&out[..], b"3");
        for tag in *b"CEZ" {
            assert_eq!(q.on_server_message(tag), Verdict::Cleanup);
        }
        // A notification that arrives meanwhile is the client's.
        q.push_front(Pending::Cleanup);
        assert_eq!(q.on_server_message(b'A'), Verdict::Forward);
        assert_eq!(q.on_server_message(b'C'), Verdict::Cleanup);
        assert_eq!(q.on_server_message(b'Z'), Verdict::Cleanup);
        assert_eq!(run(&mut q, b"TDCZ"), b"TDCZ");
        assert!(q.is_empty());
    }

    #[test]
    fn pgsplits_sync_in_the_middle_of_a_batch_ends_a_skip_and_its_ready_is_pgsplits() {
        let mut q = PendingQueue::default();
        let split = Pending::Reply {
            kind: Kind::Sync,
            hide: Hide::Split,
            statement: None,
        };
        q.push(Pending::reply(Kind::Bind));
        q.push(Pending::reply(Kind::Execute));
        q.push(split.clone());
        assert!(q.awaits_ready());
        assert_eq!(run(&mut q, b"2C"), b"2C");
        assert_eq!(q.on_server_message(b'Z'), Verdict::Split);
        assert!(q.is_empty());
        // An error before it skips up to it, not past it.
        q.push(Pending::reply(Kind::Bind));
        q.push(Pending::reply(Kind::Execute));
        q.push(split);
        assert_eq!(run(&mut q, b"E"), b"E");
        assert_eq!(q.on_server_message(b'Z'), Verdict::Split);
        assert!(q.is_empty());
    }

    /// A batch that ends a transaction that wrote carries the position query as Parse,
    /// Bind and Execute ahead of its Sync: their ParseComplete and BindComplete are not
    /// the client's (JDBC's commit failed on the stray BindComplete).
    #[test]
    fn the_position_statements_parse_and_bind_replies_are_not_the_clients() {
        let mut q = PendingQueue::default();
        q.push(Pending::reply(Kind::Execute));
        q.push(Pending::PositionRows);
        q.push(Pending::reply(Kind::Sync));
        let seen = marked(&mut q, b"CN12TDCSZ");
        assert_eq!(seen, b"CN-----SZ");
        assert!(q.is_empty());
    }

    #[test]
    fn a_commit_carrying_the_position_query_shows_the_client_only_its_own_replies() {
        let mut q = PendingQueue::default();
        let with_position = Pending::Reply {
            kind: Kind::Query,
            hide: Hide::Position(false),
            statement: None,
        };
        // COMMIT; SELECT <position>: CommandComplete, then the position's rows.
        q.push(with_position.clone());
        let seen = marked(&mut q, b"NCTDCAZ");
        assert_eq!(seen, b"NC---AZ", "a notification is the client's");
        assert!(q.is_empty());
        // The COMMIT fails: the rest of the query never runs.
        q.push(with_position);
        assert_eq!(run(&mut q, b"EZ"), b"EZ");
        // Inside a batch: a hidden Parse and Bind, the rows, then the client's Sync.
        for p in [
            Pending::Reply {
                kind: Kind::Parse,
                hide: Hide::Completion,
                statement: None,
            },
            Pending::Reply {
                kind: Kind::Bind,
                hide: Hide::Completion,
                statement: None,
            },
            Pending::PositionRows,
            Pending::reply(Kind::Sync),
        ] {
            q.push(p);
        }
        assert_eq!(q.on_server_message(b'1'), Verdict::Drop);
        assert_eq!(q.on_server_message(b'2'), Verdict::Drop);
        assert_eq!(q.on_server_message(b'D'), Verdict::Position);
        assert_eq!(
            q.on_server_message(b'E'),
            Verdict::Position,
            "its error is hidden"
        );
        assert_eq!(run(&mut q, b"Z"), b"Z");
        assert!(q.is_empty());
    }
}
