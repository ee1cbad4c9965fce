//! What a statement does to the session before and as it runs: one that needs a real
//! session binds the client to its server connection (or is refused), a write pins later
//! reads, an end of transaction is noted, and untracked session state makes the
//! connection reset before reuse.

use crate::classify::{Class, Classification};
use crate::config::PoolMode;
use crate::router;
use crate::wire::error::code;

/// Why a statement that needs a real session fails inside a read-only transaction that
/// runs on a replica.
pub const STRANDED: &str = "pgsplit: LISTEN, temporary objects, session advisory locks, SQL PREPARE and cursors WITH HOLD need a session on the primary; they cannot run inside a read-only transaction that runs on a replica (run them outside BEGIN READ ONLY)";

/// What a statement's need for a real session comes to.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim<P> {
    /// None: not such a statement, or the client is bound already.
    NotNeeded,
    /// The client becomes session-bound, holding this place in its pool (transaction
    /// pooling) or none (session pooling, where every client keeps its connection).
    Bind(Option<P>),
    /// The statement fails with this error instead.
    Refuse(&'static str, String),
}

/// Before a statement of class `class` runs: when it needs a real session, the client is
/// bound to its server connection (kept until it leaves, then reset), or the statement
/// fails:
/// - 0A000 on a replica (inside a read-only transaction): binding there would strand the
///   client on the replica, where its later writes fail and which may leave the rotation;
/// - 53300 when `take_place` finds the pool's limit reached (it returns the limit):
///   `pool.max_pinned_per_pool` clients of the pool are session-bound already, so that
///   session-bound clients can never take every connection.
///
/// `take_place` is called only in transaction pooling, when the client is to be bound.
pub fn claim<P>(
    bound: bool,
    class: Option<Classification>,
    on_primary: bool,
    mode: PoolMode,
    take_place: impl FnOnce() -> Result<P, usize>,
) -> Claim<P> {
    if bound {
        return Claim::NotNeeded;
    }
    match class {
        Some(class) if class.class == Class::SessionBound => {}
        _ => return Claim::NotNeeded,
    }
    if !on_primary {
        return Claim::Refuse(code::FEATURE_NOT_SUPPORTED, STRANDED.to_string());
    }
    if mode != PoolMode::Transaction {
        return Claim::Bind(None);
    }
    match take_place() {
        Ok(place) => Claim::Bind(Some(place)),
        Err(limit) => Claim::Refuse(
            code::TOO_MANY_CONNECTIONS,
            format!("pgsplit: {limit} clients already keep a server connection of their own in this pool (pool.max_pinned_per_pool); LISTEN, temporary objects, session advisory locks, SQL PREPARE and cursors WITH HOLD need one"),
        ),
    }
}

/// What a statement that is being sent does to the session's bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Effects {
    /// It writes on the primary: once the client is idle again, its reads must see it.
    pub writes: bool,
    /// It ends a transaction (COMMIT, ROLLBACK, ...).
    pub ends: bool,
    /// It may leave session state pgsplit does not track.
    pub leaves_state: bool,
}

/// What a statement of class `class` does, sent to the primary or not (`on_primary`).
pub fn effects(class: &Classification, on_primary: bool) -> Effects {
    Effects {
        writes: on_primary && router::writes(&class.class),
        ends: class.class == Class::End,
        leaves_state: class.leaves_state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PoolMode::{Session, Transaction};

    const BOUND_CLASS: Classification = Classification {
        class: Class::SessionBound,
        hint_primary: false,
        leaves_state: false,
    };

    fn place() -> Result<u8, usize> {
        Ok(7)
    }

    fn full() -> Result<u8, usize> {
        Err(3)
    }

    #[test]
    fn a_session_bound_statement_binds_the_client_on_the_primary() {
        assert_eq!(
            claim(false, Some(BOUND_CLASS), true, Transaction, place),
            Claim::Bind(Some(7))
        );
        // Session pooling: no pool place is taken.
        let never = || -> Result<u8, usize> { panic!("no place in session pooling") };
        assert_eq!(
            claim(false, Some(BOUND_CLASS), true, Session, never),
            Claim::Bind(None)
        );
    }

    #[test]
    fn other_statements_and_bound_clients_claim_nothing() {
        let never = || -> Result<u8, usize> { panic!("nothing to claim") };
        assert_eq!(
            claim(true, Some(BOUND_CLASS), true, Transaction, never),
            Claim::NotNeeded
        );
        assert_eq!(
            claim(false, None, true, Transaction, never),
            Claim::NotNeeded
        );
        for class in [
            Class::Write,
            Class::Session,
            Class::End,
            Class::Read {
                primary_table: false,
            },
        ] {
            let c = Classification {
                class,
                ..BOUND_CLASS
            };
            assert_eq!(
                claim(false, Some(c), true, Transaction, never),
                Claim::NotNeeded
            );
        }
        // Bound already, even on a replica: nothing to refuse.
        assert_eq!(
            claim(true, Some(BOUND_CLASS), false, Transaction, never),
            Claim::NotNeeded
        );
    }

    #[test]
    fn a_session_bound_statement_on_a_replica_is_refused_with_0a000() {
        let never = || -> Result<u8, usize> { panic!("no place on a replica") };
        for mode in [Transaction, Session] {
            assert_eq!(
                claim(false, Some(BOUND_CLASS), false, mode, never),
                Claim::Refuse(code::FEATURE_NOT_SUPPORTED, STRANDED.to_string())
            );
        }
    }

    #[test]
    fn a_session_bound_statement_at_the_pools_limit_is_refused_with_53300() {
        let Claim::Refuse(code, message) = claim(false, Some(BOUND_CLASS), true, Transaction, full)
        else {
            panic!("refused at the limit");
        };
        assert_eq!(code, code::TOO_MANY_CONNECTIONS);
        assert!(message.starts_with("pgsplit: 3 clients already keep a server connection"));
        assert!(message.contains("pool.max_pinned_per_pool"));
    }

    #[test]
    fn a_write_counts_only_on_the_primary() {
        let write = Classification::of(Class::Write);
        assert!(effects(&write, true).writes);
        assert!(!effects(&write, false).writes);
        assert!(effects(&BOUND_CLASS, true).writes);
        let read = Classification::of(Class::Read {
            primary_table: false,
        });
        assert_eq!(effects(&read, true), Effects::default());
    }

    #[test]
    fn an_end_and_untracked_state_are_noted_wherever_they_run() {
        let end = Classification::of(Class::End);
        assert!(effects(&end, false).ends);
        assert!(!effects(&end, true).writes);
        assert!(effects(&Classification::UNKNOWN, false).leaves_state);
        assert!(effects(&Classification::UNKNOWN, true).writes);
    }
}
