//! When a server connection leaves the client, and how: given back once the client is
//! idle (transaction pooling), given back or closed when the client leaves, kept or cut
//! when the server closes or another node becomes the primary, and reset before reuse
//! when it may carry session state.

use crate::config::PoolMode;
use crate::wire::error::code;
use crate::wire::message::TxStatus;

/// What the session knows of the server connection it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// The transaction status the server last reported.
    pub status: TxStatus,
    /// The server still owes replies to what was sent.
    pub owes_replies: bool,
    /// Bytes from the server not handled yet.
    pub unread: bool,
    /// The connection failed or must not be reused.
    pub broken: bool,
}

/// In transaction pooling, whether the server connection goes back now: the client is
/// idle and nothing is outstanding. A session-bound client keeps it, and so does an
/// extended-protocol batch the client has not ended with a Sync: the server holds the
/// batch's implicit transaction (and after an error, ignores everything up to that Sync),
/// even when every reply has arrived.
pub fn release_when_idle(mode: PoolMode, bound: bool, in_batch: bool, server: &Held) -> bool {
    mode == PoolMode::Transaction
        && !bound
        && !in_batch
        && server.status == TxStatus::Idle
        && !server.owes_replies
        && !server.unread
}

/// What becomes of a server connection the client gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveBack {
    /// Back to the pool as it is.
    AsIs,
    /// Back to the pool, reset (DISCARD ALL) before anyone gets it.
    Reset,
    /// Closed.
    Close,
}

/// A connection given back while the client stays (idle, or the statement goes
/// elsewhere): a broken one is closed; one that ran something that may have left untracked
/// session state is reset.
pub fn on_release(broken: bool, left_state: bool) -> GiveBack {
    match (broken, left_state) {
        (true, _) => GiveBack::Close,
        (false, true) => GiveBack::Reset,
        (false, false) => GiveBack::AsIs,
    }
}

/// Whether a server connection must forget its sequence values (`currval`, `lastval`)
/// before `client` runs anything on it: another client's statements may have set them
/// (`sequences_of`), and on a fresh connection they are unset. The client's own stay, as
/// on its own session.
pub fn forgets_sequences(sequences_of: Option<i32>, client: i32) -> bool {
    sequences_of.is_some_and(|owner| owner != client)
}

/// The client left holding `server`: a clean connection goes back to the pool (reset
/// first if it may carry session state: session pooling, a session-bound client, or
/// untracked state), anything else is closed so the server rolls back. A batch without
/// its Sync holds an implicit transaction on the server. Also says whether a query may
/// still be running on a closed one (it is then cancelled: PostgreSQL would only notice
/// the closed socket when it next writes).
pub fn on_leave(
    mode: PoolMode,
    bound: bool,
    left_state: bool,
    in_batch: bool,
    server: &Held,
) -> (GiveBack, bool) {
    let clean = !server.broken
        && server.status == TxStatus::Idle
        && !in_batch
        && !server.owes_replies
        && !server.unread;
    if !clean {
        return (GiveBack::Close, server.owes_replies);
    }
    match mode == PoolMode::Session || bound || left_state {
        true => (GiveBack::Reset, false),
        false => (GiveBack::AsIs, false),
    }
}

/// What the session does when its server connection closes or fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerGone {
    /// The session ends: the server owed the client replies, or the client is bound to it.
    End,
    /// The client stays. A connection kept between transactions (session pooling) is
    /// replaced at the next statement; an open transaction is lost, and the next statement
    /// gets this error for it.
    Stay(Option<(&'static str, String)>),
}

/// The server connection closed or failed (`error`, the session's reason), with the
/// transaction status it last reported, and the error it sent unasked before closing, if
/// any (`farewell`: an idle-in-transaction timeout, a termination).
pub fn server_gone(
    owes_replies: bool,
    bound: bool,
    status: Option<TxStatus>,
    farewell: Option<(&'static str, String)>,
    error: &str,
) -> ServerGone {
    if owes_replies || bound {
        return ServerGone::End;
    }
    if status == Some(TxStatus::Idle) {
        return ServerGone::Stay(None);
    }
    ServerGone::Stay(Some(match farewell {
        Some((code, why)) => (code, format!(
            "pgsplit: the server ended the connection of this transaction: {why}; the transaction is lost (rolled back), run it again"
        )),
        None => (code::CONNECTION_FAILURE, format!(
            "pgsplit: {error}; the transaction is lost (rolled back), run it again"
        )),
    }))
}

/// What becomes of the client's server connection on the primary it was checked out
/// from, now that the monitor may have found another node taking writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrimaryChanged {
    /// Nothing to do: the node still takes writes (or none is known to: the connection is
    /// left to fail, or not, on its own), or the client is not on the primary, or the
    /// server still owes replies.
    Keep,
    /// Kept between transactions (session pooling): replaced, nothing lost.
    Replace,
    /// Closed (the node rolls back), and the client told: its transaction, or for a
    /// session-bound client its session's state, is lost.
    Cut,
}

/// Whether the client's connection to `checked_out_from` (the primary when it was checked
/// out) is cut now that `writer` takes writes. One comparison while on the primary.
pub fn primary_changed(
    on_primary: bool,
    owes_replies: bool,
    writer: Option<usize>,
    checked_out_from: Option<usize>,
    server_status: TxStatus,
    bound: bool,
) -> PrimaryChanged {
    if !on_primary || owes_replies {
        return PrimaryChanged::Keep;
    }
    match writer {
        Some(writer) if Some(writer) != checked_out_from => {}
        _ => return PrimaryChanged::Keep,
    }
    if server_status == TxStatus::Idle && !bound {
        PrimaryChanged::Replace
    } else {
        PrimaryChanged::Cut
    }
}

/// The error a client whose connection to `node`, the former primary, was cut gets at
/// its next statement.
pub fn cut_error(node: &str, bound: bool) -> (&'static str, String) {
    let lost = match bound {
        true => "this session's state on it (temporary tables, LISTEN, session locks, SQL prepared statements) is lost",
        false => "the transaction that ran there is rolled back",
    };
    (code::CONNECTION_FAILURE, format!(
        "pgsplit: the primary changed while this client held a connection to {node}, the former primary: {lost}; run it again"
    ))
}

/// Whether a server kept across statements (session pooling, a session-bound client)
/// gets the client's settings back before the next statement: it is idle, owes nothing,
/// and its settings differ (RESET ALL, DISCARD ALL reset them; PostgreSQL restores
/// startup values on RESET).
pub fn resync_settings(owes_replies: bool, status: TxStatus, settings_differ: bool) -> bool {
    !owes_replies && status == TxStatus::Idle && settings_differ
}

#[cfg(test)]
mod tests {
    use super::*;
    use PoolMode::{Session, Transaction};
    use TxStatus::{Failed, Idle, InTransaction};

    const IDLE: Held = Held {
        status: Idle,
        owes_replies: false,
        unread: false,
        broken: false,
    };

    #[test]
    fn sequence_values_are_forgotten_before_another_client_uses_the_connection() {
        assert!(forgets_sequences(Some(7), 8));
        // Its own are kept; a connection no client's statement wrote on has none.
        assert!(!forgets_sequences(Some(8), 8));
        assert!(!forgets_sequences(None, 8));
    }

    #[test]
    fn an_idle_client_gives_its_connection_back_in_transaction_pooling() {
        assert!(release_when_idle(Transaction, false, false, &IDLE));
        assert!(!release_when_idle(Session, false, false, &IDLE));
    }

    #[test]
    fn a_connection_is_kept_while_anything_is_outstanding() {
        let busy = [
            Held {
                status: InTransaction,
                ..IDLE
            },
            Held {
                status: Failed,
                ..IDLE
            },
            Held {
                owes_replies: true,
                ..IDLE
            },
            Held {
                unread: true,
                ..IDLE
            },
        ];
        for held in busy {
            assert!(
                !release_when_idle(Transaction, false, false, &held),
                "{held:?}"
            );
        }
        // A session-bound client, and a batch not ended by its Sync.
        assert!(!release_when_idle(Transaction, true, false, &IDLE));
        assert!(!release_when_idle(Transaction, false, true, &IDLE));
    }

    #[test]
    fn a_connection_given_back_is_reset_when_it_may_carry_state_and_closed_when_broken() {
        assert_eq!(on_release(false, false), GiveBack::AsIs);
        assert_eq!(on_release(false, true), GiveBack::Reset);
        assert_eq!(on_release(true, true), GiveBack::Close);
        assert_eq!(on_release(true, false), GiveBack::Close);
    }

    #[test]
    fn a_leaving_clients_clean_connection_goes_back() {
        assert_eq!(
            on_leave(Transaction, false, false, false, &IDLE),
            (GiveBack::AsIs, false)
        );
        // Reset: session pooling, a session-bound client, untracked state.
        for (mode, bound, left) in [
            (Session, false, false),
            (Transaction, true, false),
            (Transaction, false, true),
        ] {
            assert_eq!(
                on_leave(mode, bound, left, false, &IDLE),
                (GiveBack::Reset, false)
            );
        }
    }

    #[test]
    fn a_leaving_clients_connection_mid_transaction_is_closed() {
        let close = (GiveBack::Close, false);
        assert_eq!(
            on_leave(
                Session,
                false,
                false,
                false,
                &Held {
                    broken: true,
                    ..IDLE
                }
            ),
            close
        );
        let open = Held {
            status: InTransaction,
            ..IDLE
        };
        assert_eq!(on_leave(Transaction, false, false, false, &open), close);
        let unread = Held {
            unread: true,
            ..IDLE
        };
        assert_eq!(on_leave(Transaction, false, false, false, &unread), close);
        // A batch without its Sync holds an implicit transaction.
        assert_eq!(on_leave(Transaction, false, false, true, &IDLE), close);
        // A query may still run: it is cancelled.
        let running = Held {
            owes_replies: true,
            ..IDLE
        };
        assert_eq!(
            on_leave(Transaction, false, false, false, &running),
            (GiveBack::Close, true)
        );
    }

    #[test]
    fn a_lost_server_ends_the_session_only_when_it_owed_replies_or_the_client_is_bound() {
        assert_eq!(
            server_gone(true, false, Some(Idle), None, "x"),
            ServerGone::End
        );
        assert_eq!(
            server_gone(false, true, Some(Idle), None, "x"),
            ServerGone::End
        );
        assert_eq!(
            server_gone(false, false, Some(Idle), None, "x"),
            ServerGone::Stay(None)
        );
    }

    #[test]
    fn a_lost_server_of_an_open_transaction_fails_the_next_statement() {
        let ServerGone::Stay(Some((code, message))) =
            server_gone(false, false, Some(InTransaction), None, "server closed")
        else {
            panic!("the client stays, told of its transaction");
        };
        assert_eq!(code, code::CONNECTION_FAILURE);
        assert!(message.starts_with("pgsplit: server closed; the transaction is lost"));
        // The server said why before closing: the client hears it, with its code.
        let farewell = Some((
            code::IDLE_IN_TRANSACTION_TIMEOUT,
            "idle too long".to_string(),
        ));
        let ServerGone::Stay(Some((code, message))) =
            server_gone(false, false, Some(Failed), farewell, "server closed")
        else {
            panic!("the client stays, told of its transaction");
        };
        assert_eq!(code, code::IDLE_IN_TRANSACTION_TIMEOUT);
        assert!(
            message.contains("the server ended the connection of this transaction: idle too long;")
        );
        // No status known: counted as open.
        assert!(matches!(
            server_gone(false, false, None, None, "x"),
            ServerGone::Stay(Some(_))
        ));
    }

    #[test]
    fn a_new_primary_cuts_a_transaction_left_on_the_former_one() {
        use PrimaryChanged::{Cut, Keep, Replace};
        // (on the primary, replies owed, writer now, checked out from, status, bound)
        let cases = [
            // Same writer, no writer known, not on the primary, replies owed: kept.
            ((true, false, Some(0), Some(0), InTransaction, false), Keep),
            ((true, false, None, Some(0), InTransaction, false), Keep),
            ((false, false, Some(1), Some(0), InTransaction, false), Keep),
            ((true, true, Some(1), Some(0), InTransaction, false), Keep),
            // Another node takes writes.
            ((true, false, Some(1), Some(0), InTransaction, false), Cut),
            ((true, false, Some(1), None, Failed, false), Cut),
            ((true, false, Some(1), Some(0), Idle, true), Cut),
            ((true, false, Some(1), Some(0), Idle, false), Replace),
        ];
        for ((on_primary, owes, writer, from, status, bound), expected) in cases {
            let got = primary_changed(on_primary, owes, writer, from, status, bound);
            assert_eq!(
                got, expected,
                "{on_primary} {owes} {writer:?} {from:?} {status:?} {bound}"
            );
        }
    }

    #[test]
    fn the_cut_error_says_what_was_lost() {
        let (code, message) = cut_error("node0", false);
        assert_eq!(code, code::CONNECTION_FAILURE);
        assert!(message.contains(
            "to node0, the former primary: the transaction that ran there is rolled back"
        ));
        let (_, message) = cut_error("node0", true);
        assert!(message.contains("this session's state on it"));
    }

    #[test]
    fn a_kept_server_gets_the_clients_settings_back_when_idle_and_different() {
        assert!(resync_settings(false, Idle, true));
        assert!(!resync_settings(false, Idle, false));
        assert!(!resync_settings(true, Idle, true));
        assert!(!resync_settings(false, InTransaction, true));
    }
}
