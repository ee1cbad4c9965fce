//! Extended-protocol batches and pipelined statements: the class of a batch (its
//! statements, up to the Sync, run as one implicit transaction on one server), and whether
//! a client message must wait until the replica the client is on has answered what came
//! before, because it starts a statement that must run elsewhere.

use crate::classify::Classification;
use crate::router;
use crate::wire::frame::peek_frame_len;
use crate::wire::message::{read_bind, read_parse, read_query, TxStatus};

/// What the session can tell about SQL without waiting.
pub trait Known {
    /// The class of SQL text (long text not cached yet counts as unknown: the primary).
    fn class_of(&self, sql: &[u8]) -> Classification;
    /// The class of the client's prepared statement `name`, if it has one by that name.
    fn prepared(&self, name: &[u8]) -> Option<Classification>;
}

/// The class of an extended-protocol batch that starts with `first` and goes on with the
/// client messages in `rest`, up to its Sync. When the Sync has not arrived yet, what
/// follows is unknown: the primary.
pub fn batch_class(
    rest: &[u8],
    first: Classification,
    max_message_size: usize,
    known: &impl Known,
) -> Classification {
    let unknown = Classification::UNKNOWN;
    let mut class = first;
    let mut rest = rest;
    loop {
        let Ok(Some(total)) = peek_frame_len(rest, max_message_size) else {
            return router::merge(class, unknown);
        };
        if rest.len() < total {
            return router::merge(class, unknown);
        }
        let (tag, body) = (rest[0], &rest[5..total]);
        let next = match tag {
            b'S' => return class,
            b'P' => read_parse(body).map(|p| known.class_of(p.query)),
            b'B' => read_bind(body)
                .and_then(|(_, name, _)| (!name.is_empty()).then_some(name))
                .and_then(|name| known.prepared(name)),
            _ => None,
        };
        if let Some(next) = next {
            class = router::merge(class, next);
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
    let Ok(Some(total)) = peek_frame_len(inbox, max_message_size) else {
        return false;
    };
    if inbox.len() < total {
        return false;
    }
    let (tag, body) = (inbox[0], &inbox[5..total]);
    let class = match tag {
        b'Q' => read_query(body).map(|sql| known.class_of(sql)),
        // A FunctionCall names its function by OID: not known to be a read.
        b'F' => Some(Classification::UNKNOWN),
        _ if place.in_batch => return false,
        b'P' => read_parse(body).map(|p| known.class_of(p.query)),
        b'B' => read_bind(body).and_then(|(_, name, _)| known.prepared(name)),
        _ => None,
    };
    let Some(class) = class else {
        return false;
    };
    let class = if tag == b'Q' || tag == b'F' {
        class
    } else {
        // With the rest of the batch after this message.
        batch_class(&inbox[total..], class, max_message_size, known)
    };
    !router::replica_ok(&class)
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
        assert_eq!(batch_class(&reads, READ, LIMIT, &Fake), READ);
        let mixed = batch(&[parse("select 1"), bind("w"), sync()]);
        assert!(!router::replica_ok(&batch_class(
            &mixed, READ, LIMIT, &Fake
        )));
        let parsed_write = batch(&[parse("update"), sync()]);
        assert!(!router::replica_ok(&batch_class(
            &parsed_write,
            READ,
            LIMIT,
            &Fake
        )));
    }

    #[test]
    fn a_batch_whose_sync_has_not_arrived_is_unknown() {
        let open = batch(&[parse("select 1"), bind("r")]);
        assert!(!router::replica_ok(&batch_class(&open, READ, LIMIT, &Fake)));
        // A message cut short counts as not arrived.
        let cut = batch(&[parse("select 1"), sync()]);
        let cut = &cut[..cut.len() - 1];
        assert!(!router::replica_ok(&batch_class(cut, READ, LIMIT, &Fake)));
    }

    #[test]
    fn a_batch_binding_an_unknown_or_unnamed_statement_is_classed_by_the_rest() {
        let rest = batch(&[bind("nope"), bind(""), sync()]);
        assert_eq!(batch_class(&rest, READ, LIMIT, &Fake), READ);
    }

    const ON_REPLICA: Place = Place {
        on_primary: false,
        owes_replies: true,
        status: TxStatus::Idle,
        in_batch: false,
    };

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
        assert!(!must_wait(ON_REPLICA, &bind("nope"), LIMIT, &Fake));
    }
}
