//! Extended-protocol batches and pipelined statements: the class of a batch (its
//! statements, up to the Sync, run as one implicit transaction on one server), and whether
//! a client message must wait until the replica the client is on has answered what came
//! before, because it starts a statement that must run elsewhere.

use crate::classify::{Class, Classification};
use crate::router;
use crate::wire::frame::peek_frame_len;
use crate::wire::message::{read_bind, read_parse, read_query, read_target, TxStatus};

/// The class that adds nothing when merged with a batch's others (see `router::merge`).
const PLAIN_READ: Classification = Classification::of(Class::Read {
    primary_table: false,
});

/// What the session can tell about SQL without waiting.
pub trait Known {
    /// The class of SQL text (long text not cached yet counts as unknown: the primary).
    fn class_of(&self, sql: &[u8]) -> Classification;
    /// The class of the client's prepared statement `name`, if it has one by that name.
    fn prepared(&self, name: &[u8]) -> Option<Classification>;
    /// The class of the client's unnamed statement, if it has one.
    fn unnamed(&self) -> Option<Classification>;
}

/// The statement a Parse (`P`), a Bind (`B`) or a Describe of a statement (`D` ... `S`)
/// with `body` is about, and its class when the client has it: the SQL of a Parse, the
/// client's named statement, or its unnamed one. `None` for other messages.
fn statement(tag: u8, body: &[u8], known: &impl Known) -> Option<Statement> {
    let name = match tag {
        b'P' => {
            let parse = read_parse(body)?;
            return Some(Statement {
                unnamed: parse.name.is_empty(),
                class: Some(known.class_of(parse.query)),
            });
        }
        b'B' => read_bind(body).map(|(_, name, _)| name)?,
        b'D' => match read_target(body)? {
            (b'S', name) => name,
            _ => return None,
        },
        _ => return None,
    };
    let class = match name.is_empty() {
        true => known.unnamed(),
        false => known.prepared(name),
    };
    Some(Statement {
        unnamed: name.is_empty(),
        class,
    })
}

/// What [`statement`] finds.
struct Statement {
    /// It is the unnamed statement (parsed by this message, or before).
    unnamed: bool,
    class: Option<Classification>,
}

/// The class of an extended-protocol batch that starts with `first` and goes on with the
/// client messages in `rest`, up to its Sync. When the Sync has not arrived yet, what
/// follows is unknown: the primary. `first_unnamed` says `first` is the class of the
/// unnamed statement, which a Bind or Describe of it in `rest` then does not add again.
pub fn batch_class(
    rest: &[u8],
    first: Classification,
    first_unnamed: bool,
    max_message_size: usize,
    known: &impl Known,
) -> Classification {
    let unknown = Classification::UNKNOWN;
    let mut class = first;
    let mut unnamed_counted = first_unnamed;
    let mut rest = rest;
    loop {
        let Ok(Some(total)) = peek_frame_len(rest, max_message_size) else {
            return router::merge(class, unknown);
        };
        if rest.len() < total {
            return router::merge(class, unknown);
        }
        let (tag, body) = (rest[0], &rest[5..total]);
        if tag == b'S' {
            return class;
        }
        if let Some(stmt) = statement(tag, body, known) {
            // A Parse of the unnamed statement replaces it; a Bind or Describe of it adds
            // nothing once it is counted.
            let counted = stmt.unnamed && unnamed_counted && tag != b'P';
            unnamed_counted |= stmt.unnamed;
            if let Some(next) = stmt.class.filter(|_| !counted) {
                class = router::merge(class, next);
            }
        }
        rest = &rest[total..];
    }
}

/// Where the client's statements run now, for [`must_wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// The current server is the primary.
    pub on_primary: bool,
    /// The server still owes replies.
    pub owes_replies: bool,
    /// The server's transaction status.
    pub status: TxStatus,
    /// An extended-protocol batch is open (messages sent since the last Sync).
    pub in_batch: bool,
}

/// Whether the next client message in `inbox` starts a statement (a Query, or the first
/// message of an extended-protocol batch) that may not run on the replica the client is
/// on, while that replica still owes replies to earlier pipelined statements. Such a
/// message waits: once the replica is done and released, it is routed afresh.
pub fn must_wait(place: Place, inbox: &[u8], max_message_size: usize, known: &impl Known) -> bool {
    if place.on_primary || !place.owes_replies || place.status != TxStatus::Idle {
        return false;
    }
    let Some((tag, body, rest)) = next_message(inbox, max_message_size) else {
        return false;
    };
    let class = match tag {
        b'Q' | b'F' => simple_class(tag, body, known),
        _ if place.in_batch => None,
        // A Sync or Flush alone runs nothing.
        b'S' | b'H' => None,
        // A batch starts here, with whatever message (a Describe or Bind of a statement
        // parsed before, a Close): its class is that of every statement in it up to its
        // Sync.
        _ => Some(batch_from(tag, body, rest, max_message_size, known)),
    };
    class.is_some_and(|class| !router::replica_ok(&class))
}

/// The next client message in `inbox`, if it is whole: its type, its body, and what
/// follows it.
fn next_message(inbox: &[u8], max_message_size: usize) -> Option<(u8, &[u8], &[u8])> {
    let Ok(Some(total)) = peek_frame_len(inbox, max_message_size) else {
        return None;
    };
    let body = inbox.get(5..total)?;
    Some((inbox[0], body, &inbox[total..]))
}

/// The class of what a Query or FunctionCall runs (a FunctionCall names its function by
/// OID: not known to be a read); `None` for a Query that cannot be read.
fn simple_class(tag: u8, body: &[u8], known: &impl Known) -> Option<Classification> {
    match tag {
        b'Q' => read_query(body).map(|sql| known.class_of(sql)),
        _ => Some(Classification::UNKNOWN),
    }
}

/// The class of the statements from the message with `tag` and `body` on, followed by the
/// client messages in `rest`, up to the batch's Sync.
fn batch_from(
    tag: u8,
    body: &[u8],
    rest: &[u8],
    max_message_size: usize,
    known: &impl Known,
) -> Classification {
    let stmt = statement(tag, body, known);
    let unnamed = stmt
        .as_ref()
        .is_some_and(|s| s.unnamed && s.class.is_some());
    // A message that names no statement the client has adds nothing.
    let first = stmt.and_then(|s| s.class).unwrap_or(PLAIN_READ);
    batch_class(rest, first, unnamed, max_message_size, known)
}

/// Where the client's current extended-protocol batch stands in being split (see
/// [`must_split`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchSplit {
    /// Nothing ended the transaction on a replica in this batch.
    #[default]
    None,
    /// A COMMIT or ROLLBACK of the batch went to the replica the client is on. `failed`:
    /// the server reported an error since.
    Ended { failed: bool },
    /// pgsplit sent its own Sync after it; its ReadyForQuery has not come yet.
    Sent { failed: bool },
}

impl BatchSplit {
    /// The server reported an error.
    pub fn note_error(&mut self) {
        if let BatchSplit::Ended { failed } | BatchSplit::Sent { failed } = self {
            *failed = true;
        }
    }
}

/// What follows once the replica has answered pgsplit's Sync in the middle of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterSplit {
    /// An error came before it (after the COMMIT, or before it: the transaction failed
    /// and the COMMIT was skipped): as PostgreSQL would, the rest of the batch is skipped
    /// up to the client's Sync, which gets ReadyForQuery.
    Skip,
    /// The transaction ended: the replica goes back to its pool, and the rest of the batch
    /// is routed afresh.
    Release,
    /// Still inside a transaction (not expected after a COMMIT or ROLLBACK): the rest
    /// runs where it is.
    Stay,
}

/// See [`AfterSplit`]: `failed` says an error came before pgsplit's Sync, `status` is the
/// transaction status its ReadyForQuery reported.
pub fn after_split(failed: bool, status: TxStatus) -> AfterSplit {
    match (failed, status) {
        (true, _) | (false, TxStatus::Failed) => AfterSplit::Skip,
        (false, TxStatus::Idle) => AfterSplit::Release,
        (false, TxStatus::InTransaction) => AfterSplit::Stay,
    }
}

/// In a batch that ended its transaction on the replica the client is on (a COMMIT or
/// ROLLBACK went there earlier in the batch, with no Sync since), whether the next client
/// message in `inbox` starts a statement that may not run there: a Parse or Bind whose
/// statements, up to the batch's Sync, are not all reads, or a Query or FunctionCall that
/// is not. The batch is then split there: what came before is synced on the replica, and
/// the rest is routed afresh, as PostgreSQL would run it on the primary after the COMMIT.
pub fn must_split(inbox: &[u8], max_message_size: usize, known: &impl Known) -> bool {
    let Some((tag, body, rest)) = next_message(inbox, max_message_size) else {
        return false;
    };
    let class = match tag {
        b'Q' | b'F' => simple_class(tag, body, known),
        b'P' | b'B' => Some(batch_from(tag, body, rest, max_message_size, known)),
        // A Describe, Execute, Close, Sync or Flush starts no statement.
        _ => None,
    };
    class.is_some_and(|class| !router::replica_ok(&class))
}

/// Whether the next client message in `inbox` (whole) is a Bind or a Describe of the
/// unnamed statement.
pub fn uses_unnamed(inbox: &[u8], max_message_size: usize) -> bool {
    match next_message(inbox, max_message_size) {
        Some((b'B', body, _)) => read_bind(body).is_some_and(|(_, name, _)| name.is_empty()),
        Some((b'D', body, _)) => read_target(body) == Some((b'S', &b""[..])),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Class;
    use crate::wire::message as msg;

    const READ: Classification = Classification::of(Class::Read {
        primary_table: false,
    });
    const WRITE: Classification = Classification::of(Class::Write);
    const LIMIT: usize = 1 << 20;

    /// SQL starting with "select" reads; anything else writes. Statement "r" reads, "w"
    /// writes, others do not exist.
    struct Fake;

    impl Known for Fake {
        fn class_of(&self, sql: &[u8]) -> Classification {
            match sql.starts_with(b"select") {
                true => READ,
                false => WRITE,
            }
        }
        fn prepared(&self, name: &[u8]) -> Option<Classification> {
            match name {
                b"r" => Some(READ),
                b"w" => Some(WRITE),
                _ => None,
            }
        }
        fn unnamed(&self) -> Option<Classification> {
            Some(READ)
        }
    }

    fn parse(sql: &str) -> Vec<u8> {
        msg::parse_message(b"", sql.as_bytes(), &[0, 0]).to_vec()
    }

    fn bind(statement: &str) -> Vec<u8> {
        msg::bind_message(b"", statement.as_bytes(), &[0; 6]).to_vec()
    }

    fn sync() -> Vec<u8> {
        msg::sync_message().to_vec()
    }

    fn batch(messages: &[Vec<u8>]) -> Vec<u8> {
        messages.concat()
    }

    #[test]
    fn a_batch_is_a_read_only_if_every_statement_up_to_its_sync_is() {
        let reads = batch(&[parse("select 1"), bind("r"), sync(), parse("insert")]);
        assert_eq!(batch_class(&reads, READ, false, LIMIT, &Fake), READ);
        let mixed = batch(&[parse("select 1"), bind("w"), sync()]);
        assert!(!router::replica_ok(&batch_class(
            &mixed, READ, false, LIMIT, &Fake
        )));
        let parsed_write = batch(&[parse("update"), sync()]);
        assert!(!router::replica_ok(&batch_class(
            &parsed_write,
            READ,
            false,
            LIMIT,
            &Fake
        )));
    }

    #[test]
    fn a_batch_whose_sync_has_not_arrived_is_unknown() {
        let open = batch(&[parse("select 1"), bind("r")]);
        assert!(!router::replica_ok(&batch_class(
            &open, READ, false, LIMIT, &Fake
        )));
        // A message cut short counts as not arrived.
        let cut = batch(&[parse("select 1"), sync()]);
        let cut = &cut[..cut.len() - 1];
        assert!(!router::replica_ok(&batch_class(
            cut, READ, false, LIMIT, &Fake
        )));
    }

    #[test]
    fn a_batch_binding_an_unknown_or_unnamed_statement_is_classed_by_the_rest() {
        let rest = batch(&[bind("nope"), bind(""), sync()]);
        assert_eq!(batch_class(&rest, READ, false, LIMIT, &Fake), READ);
    }

    const ON_REPLICA: Place = Place {
        on_primary: false,
        owes_replies: true,
        status: TxStatus::Idle,
        in_batch: false,
    };

    fn describe_unnamed() -> Vec<u8> {
        msg::target_message(b'D', b'S', b"").to_vec()
    }

    #[test]
    fn a_bind_of_the_unnamed_statement_that_started_the_batch_counts_once() {
        const BEGIN: Classification = Classification::of(Class::Begin { read_only: false });
        let rest = batch(&[bind(""), sync()]);
        // pgbench -M extended: Parse of BEGIN, then its Bind: still a BEGIN.
        assert_eq!(batch_class(&rest, BEGIN, true, LIMIT, &Fake), BEGIN);
        // Another unnamed statement (here a read) bound after a named one is counted.
        assert_ne!(batch_class(&rest, BEGIN, false, LIMIT, &Fake), BEGIN);
        // Parsed again in the batch, the unnamed statement is the new one.
        let reparsed = batch(&[parse("update"), bind(""), sync()]);
        assert!(!router::replica_ok(&batch_class(
            &reparsed, READ, true, LIMIT, &Fake
        )));
    }

    #[test]
    fn a_batch_that_starts_without_a_parse_is_classed_by_all_its_statements() {
        // A Describe of the (reading) unnamed statement, then a write, up to the Sync.
        let write_after = batch(&[describe_unnamed(), parse("insert"), sync()]);
        assert!(must_wait(ON_REPLICA, &write_after, LIMIT, &Fake));
        let close_first = batch(&[
            msg::target_message(b'C', b'S', b"x").to_vec(),
            parse("update"),
            sync(),
        ]);
        assert!(must_wait(ON_REPLICA, &close_first, LIMIT, &Fake));
        // Reads only: no need to wait.
        let reads = batch(&[describe_unnamed(), bind(""), bind("r"), sync()]);
        assert!(!must_wait(ON_REPLICA, &reads, LIMIT, &Fake));
        // A Sync or Flush alone runs nothing.
        assert!(!must_wait(ON_REPLICA, &sync(), LIMIT, &Fake));
        // Inside a batch, messages go where the batch went.
        let inside = Place {
            in_batch: true,
            ..ON_REPLICA
        };
        assert!(!must_wait(inside, &write_after, LIMIT, &Fake));
    }

    #[test]
    fn binds_and_describes_of_the_unnamed_statement_are_told_apart() {
        assert!(uses_unnamed(&bind(""), LIMIT));
        assert!(!uses_unnamed(&bind("r"), LIMIT));
        assert!(uses_unnamed(&describe_unnamed(), LIMIT));
        let portal = msg::target_message(b'D', b'P', b"").to_vec();
        assert!(!uses_unnamed(&portal, LIMIT));
        assert!(!uses_unnamed(&parse("select 1"), LIMIT));
        // Not whole yet.
        let cut = bind("");
        assert!(!uses_unnamed(&cut[..cut.len() - 1], LIMIT));
    }

    #[test]
    fn a_write_pipelined_behind_a_replicas_reply_waits() {
        let query = msg::query_message("update t").to_vec();
        assert!(must_wait(ON_REPLICA, &query, LIMIT, &Fake));
        let call = [b'F', 0, 0, 0, 4];
        assert!(must_wait(ON_REPLICA, &call, LIMIT, &Fake));
        let write_batch = batch(&[parse("select 1"), bind("w"), sync()]);
        assert!(must_wait(ON_REPLICA, &write_batch, LIMIT, &Fake));
    }

    #[test]
    fn a_read_pipelined_behind_a_replicas_reply_goes_on() {
        let query = msg::query_message("select 2").to_vec();
        assert!(!must_wait(ON_REPLICA, &query, LIMIT, &Fake));
        let read_batch = batch(&[parse("select 1"), bind("r"), sync()]);
        assert!(!must_wait(ON_REPLICA, &read_batch, LIMIT, &Fake));
    }

    #[test]
    fn nothing_waits_on_the_primary_or_when_the_replica_owes_nothing() {
        let query = msg::query_message("update t").to_vec();
        for place in [
            Place {
                on_primary: true,
                ..ON_REPLICA
            },
            Place {
                owes_replies: false,
                ..ON_REPLICA
            },
            Place {
                status: TxStatus::InTransaction,
                ..ON_REPLICA
            },
        ] {
            assert!(!must_wait(place, &query, LIMIT, &Fake), "{place:?}");
        }
    }

    #[test]
    fn a_message_inside_an_open_batch_or_not_whole_yet_goes_on() {
        let in_batch = Place {
            in_batch: true,
            ..ON_REPLICA
        };
        let write_batch = batch(&[parse("update"), sync()]);
        assert!(!must_wait(in_batch, &write_batch, LIMIT, &Fake));
        // A Query still starts a statement of its own.
        let query = msg::query_message("update t").to_vec();
        assert!(must_wait(in_batch, &query, LIMIT, &Fake));
        // Not whole yet: decided once it is.
        assert!(!must_wait(
            ON_REPLICA,
            &query[..query.len() - 1],
            LIMIT,
            &Fake
        ));
        // Messages that start no statement.
        assert!(!must_wait(ON_REPLICA, &sync(), LIMIT, &Fake));
        let unknown_statement = batch(&[bind("nope"), sync()]);
        assert!(!must_wait(ON_REPLICA, &unknown_statement, LIMIT, &Fake));
        // A batch whose Sync has not arrived may still write: it waits, whatever its first
        // message.
        assert!(must_wait(ON_REPLICA, &bind("nope"), LIMIT, &Fake));
    }

    #[test]
    fn after_the_split_the_rest_is_skipped_routed_afresh_or_stays() {
        assert_eq!(after_split(true, TxStatus::Idle), AfterSplit::Skip);
        assert_eq!(after_split(true, TxStatus::Failed), AfterSplit::Skip);
        // An error before the COMMIT: the server skipped it, the block is still open.
        assert_eq!(after_split(false, TxStatus::Failed), AfterSplit::Skip);
        assert_eq!(after_split(false, TxStatus::Idle), AfterSplit::Release);
        assert_eq!(
            after_split(false, TxStatus::InTransaction),
            AfterSplit::Stay
        );
        let mut split = BatchSplit::Ended { failed: false };
        split.note_error();
        assert_eq!(split, BatchSplit::Ended { failed: true });
        let mut none = BatchSplit::None;
        none.note_error();
        assert_eq!(none, BatchSplit::None);
        let mut split = BatchSplit::Sent { failed: false };
        split.note_error();
        assert_eq!(split, BatchSplit::Sent { failed: true });
    }

    #[test]
    fn after_a_commit_on_a_replica_the_batch_splits_where_a_write_starts() {
        // A statement whose batch, from it to the Sync, writes.
        let write = batch(&[parse("update"), bind(""), sync()]);
        assert!(must_split(&write, LIMIT, &Fake));
        assert!(must_split(&batch(&[bind("w"), sync()]), LIMIT, &Fake));
        // A read first, a write later in the batch: split at the read already (the rest
        // runs as one implicit transaction, on one node).
        let read_then_write = batch(&[parse("select 1"), bind(""), parse("insert"), sync()]);
        assert!(must_split(&read_then_write, LIMIT, &Fake));
        // Reads up to the Sync stay on the replica.
        let reads = batch(&[parse("select 1"), bind(""), bind("r"), sync()]);
        assert!(!must_split(&reads, LIMIT, &Fake));
        // The Sync not here yet: what follows is unknown.
        assert!(must_split(&parse("select 1"), LIMIT, &Fake));
        // A Query or FunctionCall starts a statement of its own.
        assert!(must_split(&msg::query_message("update t"), LIMIT, &Fake));
        assert!(!must_split(&msg::query_message("select 1"), LIMIT, &Fake));
        // Messages that start no statement, and a message not whole yet.
        for starts_none in [
            sync(),
            describe_unnamed(),
            msg::execute_message(b"").to_vec(),
        ] {
            assert!(!must_split(&starts_none, LIMIT, &Fake));
        }
        assert!(!must_split(&write[..write.len() - 1][..3], LIMIT, &Fake));
    }
}
