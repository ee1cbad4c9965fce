//! Which node serves a statement: the router's decision (`crate::router`, where the
//! policy and its fallback live), taken in session pooling as "the primary, routing off",
//! and taken again when the replica picked cannot serve.

use std::time::Instant;

use crate::classify::Classification;
use crate::config::PoolMode;
use crate::router::{self, ClientRouting, Decision, Pick, Policy, Reason, Target};
use crate::topology::Unleased;

/// Where the transaction or statement that starts with `class` runs. In session pooling
/// every client keeps its primary connection: routing is off. `lease` is asked for a
/// replica (its node index) that has replayed the position given, only when one may serve.
pub fn route(
    mode: PoolMode,
    policy: &Policy,
    client: &ClientRouting,
    class: &Classification,
    now: Instant,
    lease: impl FnOnce(u64) -> Result<usize, Unleased>,
) -> Decision {
    if mode == PoolMode::Session {
        return Decision {
            target: Target::Primary,
            reason: Reason::Disabled,
        };
    }
    router::decide(policy, client, class, now, |lsn| pick(lease(lsn)))
}

/// What a replica lease (a node index, or why there is none) tells the router.
pub fn pick(lease: Result<usize, Unleased>) -> Pick {
    match lease {
        Ok(node) => Pick::Replica(node),
        Err(Unleased::Behind) => Pick::Behind,
        Err(Unleased::Unavailable) => Pick::Unavailable,
    }
}

/// The replica picked for a read routed for `reason` could not serve it (unreachable,
/// shutting down, or its connection died before anything was sent): where the read goes
/// with `next`, the lease taken again. Another replica keeps the reason; with every one
/// behind the position, the primary (awaiting replay); with none, the fallback.
pub fn after_refusal(policy: &Policy, next: Result<usize, Unleased>, reason: Reason) -> Decision {
    router::after_pick(policy, pick(next), reason, Reason::AwaitingReplay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Class;
    use crate::router::Fallback;

    const READ: Classification = Classification::of(Class::Read {
        primary_table: false,
    });

    fn primary(reason: Reason) -> Decision {
        Decision {
            target: Target::Primary,
            reason,
        }
    }

    /// The route of a statement of `class` for a new client, with `lease` answering.
    fn route_new(
        mode: PoolMode,
        class: Classification,
        lease: impl FnOnce(u64) -> Result<usize, Unleased>,
    ) -> Decision {
        let client = ClientRouting::default();
        route(
            mode,
            &Policy::default(),
            &client,
            &class,
            Instant::now(),
            lease,
        )
    }

    fn no_lease(_: u64) -> Result<usize, Unleased> {
        panic!("no replica is asked for")
    }

    #[test]
    fn session_pooling_keeps_everything_on_the_primary_without_asking_for_a_replica() {
        let decision = route_new(PoolMode::Session, READ, no_lease);
        assert_eq!(decision, primary(Reason::Disabled));
    }

    #[test]
    fn transaction_pooling_sends_a_read_to_the_replica_leased() {
        let decision = route_new(PoolMode::Transaction, READ, |_| Ok(2));
        let on_replica = Decision {
            target: Target::Replica(2),
            reason: Reason::Read,
        };
        assert_eq!(decision, on_replica);
        let behind = route_new(PoolMode::Transaction, READ, |_| Err(Unleased::Behind));
        assert_eq!(behind.target, Target::Primary);
        let write = Classification::of(Class::Write);
        let decision = route_new(PoolMode::Transaction, write, no_lease);
        assert_eq!(decision, primary(Reason::Write));
    }

    #[test]
    fn a_lease_becomes_the_routers_pick() {
        assert_eq!(pick(Ok(1)), Pick::Replica(1));
        assert_eq!(pick(Err(Unleased::Behind)), Pick::Behind);
        assert_eq!(pick(Err(Unleased::Unavailable)), Pick::Unavailable);
    }

    #[test]
    fn after_a_refusal_another_replica_keeps_the_reason() {
        let policy = Policy::default();
        let next = after_refusal(&policy, Ok(2), Reason::ReadOnlyTransaction);
        assert_eq!(
            next,
            Decision {
                target: Target::Replica(2),
                reason: Reason::ReadOnlyTransaction
            }
        );
    }

    #[test]
    fn after_a_refusal_with_every_replica_behind_the_read_awaits_replay_on_the_primary() {
        let policy = Policy::default();
        // Even when the first choice was for a presented token.
        for reason in [Reason::Read, Reason::AwaitingToken] {
            assert_eq!(
                after_refusal(&policy, Err(Unleased::Behind), reason),
                primary(Reason::AwaitingReplay)
            );
        }
    }

    #[test]
    fn after_a_refusal_with_no_replica_left_the_fallback_decides() {
        let policy = Policy::default();
        assert_eq!(
            after_refusal(&policy, Err(Unleased::Unavailable), Reason::Read),
            primary(Reason::NoReplica)
        );
        let strict = Policy {
            fallback: Fallback::Error,
            ..Policy::default()
        };
        assert_eq!(
            after_refusal(&strict, Err(Unleased::Unavailable), Reason::Read),
            Decision {
                target: Target::Refuse,
                reason: Reason::NoReplica
            }
        );
    }
}
