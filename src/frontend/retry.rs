//! The safety net under read routing: an autocommit read that a replica refuses as a write
//! (25006, "cannot execute ... in a read-only transaction": a function that writes, which
//! the classifier took for a read) is run again on the primary, once, and the client never
//! sees the refusal.
//!
//! Pure: the session feeds it the server's reply to the read, message by message, and does
//! what each [`Step`] says. A retry is only possible while nothing of the reply has reached
//! the client, so the messages that come before the first row or completion (the row
//! description, notices, parameter changes) are held back until the reply shows its kind.

use bytes::{Bytes, BytesMut};

use crate::wire::error::parse_error_fields;

/// The SQLSTATE of a write refused by a hot standby.
const READ_ONLY_TRANSACTION: &str = "25006";

/// One simple-protocol autocommit read on a replica, watched for a refusal.
#[derive(Debug)]
pub struct ReadRetry {
    /// The client's Query message, to send again.
    query: Bytes,
    /// Messages of the reply held back so far.
    held: BytesMut,
    /// The replica refused the read: the rest of its reply is dropped.
    refused: bool,
}

/// What to do with one server message of the watched reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Kept back for now (the retry has taken it).
    Hold,
    /// Not for the client: the reply of a refused read.
    Drop,
    /// The reply is an ordinary one: send these held messages, then this message as
    /// usual; the watch is over.
    Release(BytesMut),
    /// The refused read's reply is over: send this Query to the primary; the watch is over.
    Retry(Bytes),
}

impl ReadRetry {
    pub fn new(query: Bytes) -> ReadRetry {
        ReadRetry {
            query,
            held: BytesMut::new(),
            refused: false,
        }
    }

    /// Takes the next server message (`tag`, whole `message`); `alone` says the read is the
    /// only thing the client is waiting for (nothing was pipelined after it), which a retry
    /// needs, as it changes the order of replies otherwise.
    pub fn on_message(&mut self, tag: u8, message: &[u8], alone: bool) -> Step {
        if self.refused {
            return match tag {
                b'Z' => Step::Retry(self.query.clone()),
                _ => Step::Drop,
            };
        }
        match tag {
            b'T' | b'N' | b'S' => {
                self.held.extend_from_slice(message);
                Step::Hold
            }
            b'E' if alone && refused_as_write(message) => {
                self.refused = true;
                self.held.clear();
                Step::Drop
            }
            _ => Step::Release(std::mem::take(&mut self.held)),
        }
    }
}

/// Whether an ErrorResponse (whole message) is a hot standby's refusal of a write.
fn refused_as_write(message: &[u8]) -> bool {
    let (_, code, _) = parse_error_fields(message.get(5..).unwrap_or_default());
    code == READ_ONLY_TRANSACTION
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::error::PgError;
    use crate::wire::message as msg;

    fn error(code: &'static str) -> BytesMut {
        let mut out = BytesMut::new();
        PgError::error(code, "refused").encode(&mut out);
        out
    }

    fn ready() -> BytesMut {
        let mut out = BytesMut::new();
        msg::ready_for_query(msg::TxStatus::Idle, &mut out);
        out
    }

    fn row_description() -> BytesMut {
        let mut out = BytesMut::new();
        msg::row_description(&["f"], &mut out);
        out
    }

    fn query() -> Bytes {
        msg::query_message("select f()")
    }

    #[test]
    fn a_refused_read_is_retried_and_the_client_sees_nothing_of_it() {
        let mut r = ReadRetry::new(query());
        assert_eq!(r.on_message(b'T', &row_description(), true), Step::Hold);
        assert_eq!(r.on_message(b'E', &error("25006"), true), Step::Drop);
        assert_eq!(r.on_message(b'Z', &ready(), true), Step::Retry(query()));
    }

    #[test]
    fn an_ordinary_reply_releases_what_was_held() {
        let mut r = ReadRetry::new(query());
        let t = row_description();
        assert_eq!(r.on_message(b'T', &t, true), Step::Hold);
        let mut row = BytesMut::new();
        msg::data_row(&[Some("1")], &mut row);
        assert_eq!(r.on_message(b'D', &row, true), Step::Release(t));
    }

    #[test]
    fn other_errors_and_pipelined_reads_are_not_retried() {
        let mut r = ReadRetry::new(query());
        let e = error("42883");
        assert_eq!(r.on_message(b'E', &e, true), Step::Release(BytesMut::new()));
        let mut r = ReadRetry::new(query());
        assert_eq!(
            r.on_message(b'E', &error("25006"), false),
            Step::Release(BytesMut::new())
        );
    }
}
