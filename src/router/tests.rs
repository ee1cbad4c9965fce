//! Unit tests for `crate::router`.

use super::*;

fn c(class: Class) -> Classification {
    Classification::of(class)
}

const READ: Class = Class::Read {
    primary_table: false,
};

fn route(client: &ClientRouting, class: Class, now: Instant) -> Decision {
    decide(&Policy::default(), client, &c(class), now, |_| {
        Pick::Replica(7)
    })
}

#[test]
fn reads_go_to_replicas_and_writes_to_the_primary() {
    let now = Instant::now();
    let client = ClientRouting::default();
    assert_eq!(route(&client, READ, now).target, Target::Replica(7));
    assert_eq!(route(&client, Class::Write, now).target, Target::Primary);
    assert_eq!(route(&client, Class::Write, now).reason, Reason::Write);
    assert_eq!(
        route(&client, Class::Begin { read_only: false }, now).reason,
        Reason::Transaction
    );
    assert_eq!(
        route(&client, Class::Begin { read_only: true }, now).target,
        Target::Replica(7)
    );
    assert_eq!(
        route(&client, Class::SessionBound, now).reason,
        Reason::SessionBound
    );
    assert_eq!(
        route(
            &client,
            Class::Read {
                primary_table: true
            },
            now
        )
        .reason,
        Reason::PrimaryTable
    );
    assert_eq!(route(&client, Class::Session, now).target, Target::Primary);
}

fn timed() -> Policy {
    Policy {
        read_your_writes: ReadYourWrites::Time,
        ..Policy::default()
    }
}

#[test]
fn pin_after_write_holds_reads_on_the_primary_until_it_ends() {
    let policy = timed();
    let route =
        |client: &ClientRouting, now| decide(&policy, client, &c(READ), now, |_| Pick::Replica(7));
    let t0 = Instant::now();
    let mut client = ClientRouting::default();
    assert!(client.wrote(&policy, t0));
    assert_eq!(route(&client, t0).reason, Reason::Pinned);
    let later = t0 + Duration::from_millis(4_999);
    assert_eq!(route(&client, later).reason, Reason::Pinned);
    // A later write extends the pin.
    client.wrote(&policy, t0 + Duration::from_secs(3));
    assert_eq!(
        route(&client, t0 + Duration::from_millis(7_999)).reason,
        Reason::Pinned
    );
    assert_eq!(
        route(&client, t0 + Duration::from_secs(8)).target,
        Target::Replica(7)
    );
    assert!(!client.causal.is_pending(), "no position asked for");
}

#[test]
fn zero_pin_or_off_disables_read_your_writes() {
    let now = Instant::now();
    for policy in [
        Policy {
            pin_after_write: Duration::ZERO,
            ..timed()
        },
        Policy {
            read_your_writes: ReadYourWrites::Off,
            ..Policy::default()
        },
    ] {
        let mut client = ClientRouting::default();
        assert!(!client.wrote(&policy, now));
        assert!(!client.is_pinned(now));
        let d = decide(&policy, &client, &c(READ), now, |min| {
            assert_eq!(min, 0);
            Pick::Replica(7)
        });
        assert_eq!(d.target, Target::Replica(7));
    }
}

#[test]
fn by_lsn_reads_wait_for_a_replica_that_replayed_the_write() {
    let policy = Policy::default();
    let now = Instant::now();
    let mut client = ClientRouting::default();
    // A client that never wrote asks for any replica.
    let d = decide(&policy, &client, &c(READ), now, |min| {
        assert_eq!(min, 0);
        Pick::Replica(7)
    });
    assert_eq!(d.target, Target::Replica(7));
    assert!(client.wrote(&policy, now));
    // Position unknown: the primary, without asking for a replica.
    let d = decide(&policy, &client, &c(READ), now, |_| panic!("not asked"));
    assert_eq!(
        (d.target, d.reason),
        (Target::Primary, Reason::AwaitingReplay)
    );
    client.causal.placed(4242);
    let d = decide(&policy, &client, &c(READ), now, |min| {
        assert_eq!(min, 4242);
        Pick::Behind
    });
    assert_eq!(
        (d.target, d.reason),
        (Target::Primary, Reason::AwaitingReplay)
    );
    // However long it takes (no time limit), and whatever the fallback says.
    let strict = Policy {
        fallback: Fallback::Error,
        ..Policy::default()
    };
    let d = decide(
        &strict,
        &client,
        &c(READ),
        now + Duration::from_secs(3600),
        |_| Pick::Behind,
    );
    assert_eq!(d.target, Target::Primary);
    let d = decide(&policy, &client, &c(READ), now, |_| Pick::Replica(7));
    assert_eq!((d.target, d.reason), (Target::Replica(7), Reason::Read));
}

#[test]
fn in_cluster_mode_reads_wait_for_the_newest_write_of_any_client() {
    let cluster = Policy {
        read_your_writes: ReadYourWrites::Cluster,
        ..Policy::default()
    };
    let now = Instant::now();
    // A client that never wrote, after another client's write reached 500.
    let mut client = ClientRouting {
        newest_write: 500,
        ..Default::default()
    };
    let d = decide(&cluster, &client, &c(READ), now, |min| {
        assert_eq!(min, 500);
        Pick::Behind
    });
    assert_eq!(
        (d.target, d.reason),
        (Target::Primary, Reason::AwaitingReplay)
    );
    let d = decide(&cluster, &client, &c(READ), now, |_| Pick::Replica(7));
    assert_eq!(d.target, Target::Replica(7));
    // Its own position counts when it is the higher one, as in `lsn` mode.
    assert!(client.wrote(&cluster, now));
    let d = decide(&cluster, &client, &c(READ), now, |_| panic!("not asked"));
    assert_eq!(d.reason, Reason::AwaitingReplay);
    client.causal.placed(900);
    let d = decide(&cluster, &client, &c(READ), now, |min| {
        assert_eq!(min, 900);
        Pick::Replica(7)
    });
    assert_eq!(d.target, Target::Replica(7));
    // `lsn` mode ignores other clients' writes.
    let own = ClientRouting {
        newest_write: 500,
        ..Default::default()
    };
    let d = decide(&Policy::default(), &own, &c(READ), now, |min| {
        assert_eq!(min, 0);
        Pick::Replica(7)
    });
    assert_eq!(d.target, Target::Replica(7));
}

#[test]
fn tokens_raise_the_position_a_replica_must_have_replayed() {
    let policy = Policy::default();
    let now = Instant::now();
    let mut client = ClientRouting::default();
    client.causal.placed(100);
    // A token in the statement's comment counts for that statement only.
    client.statement_token = StatementToken::Valid(300);
    let d = decide(&policy, &client, &c(READ), now, |min| {
        assert_eq!(min, 300);
        Pick::Behind
    });
    assert_eq!(d.reason, Reason::AwaitingToken);
    client.statement_token = StatementToken::None;
    let d = decide(&policy, &client, &c(READ), now, |min| {
        assert_eq!(min, 100);
        Pick::Behind
    });
    assert_eq!(d.reason, Reason::AwaitingReplay);
    // One that does not check out sends the read to the primary; writes go there anyway.
    client.statement_token = StatementToken::Invalid;
    let d = decide(&policy, &client, &c(READ), now, |_| panic!("not asked"));
    assert_eq!((d.target, d.reason), (Target::Primary, Reason::BadToken));
    assert_eq!(
        decide(&policy, &client, &c(Class::Write), now, |_| panic!()).reason,
        Reason::Write
    );
    // A token presented with SET stays.
    client.statement_token = StatementToken::None;
    client.causal.presented(500);
    let d = decide(&policy, &client, &c(READ), now, |min| {
        assert_eq!(min, 500);
        Pick::Replica(7)
    });
    assert_eq!(d.target, Target::Replica(7));
}

#[test]
fn hint_route_setting_and_session_bound_force_the_primary() {
    let now = Instant::now();
    let hinted = Classification {
        hint_primary: true,
        ..c(READ)
    };
    let d = decide(
        &Policy::default(),
        &ClientRouting::default(),
        &hinted,
        now,
        |_| Pick::Replica(1),
    );
    assert_eq!(d.reason, Reason::Hint);
    let client = ClientRouting {
        mode: RouteMode::Primary,
        ..Default::default()
    };
    assert_eq!(route(&client, READ, now).reason, Reason::RouteSetting);
    let client = ClientRouting {
        session_bound: true,
        ..Default::default()
    };
    assert_eq!(route(&client, READ, now).reason, Reason::SessionBound);
    let client = ClientRouting {
        serializable: true,
        ..Default::default()
    };
    assert_eq!(route(&client, READ, now).reason, Reason::Serializable);
}

#[test]
fn no_replica_falls_back_as_configured() {
    let now = Instant::now();
    let client = ClientRouting::default();
    let d = decide(&Policy::default(), &client, &c(READ), now, |_| {
        Pick::Unavailable
    });
    assert_eq!((d.target, d.reason), (Target::Primary, Reason::NoReplica));
    let strict = Policy {
        fallback: Fallback::Error,
        ..Policy::default()
    };
    let d = decide(&strict, &client, &c(READ), now, |_| Pick::Unavailable);
    assert_eq!(d.target, Target::Refuse);
    // Writes never ask for a replica.
    let d = decide(&strict, &client, &c(Class::Write), now, |_| {
        panic!("not asked")
    });
    assert_eq!(d.target, Target::Primary);
}

#[test]
fn a_batch_runs_on_a_replica_only_if_every_statement_may() {
    let read = c(READ);
    assert_eq!(merge(read, read).class, READ);
    assert_eq!(merge(read, c(Class::Write)).class, Class::Write);
    assert_eq!(merge(c(Class::Write), read).class, Class::Write);
    assert_eq!(
        merge(read, c(Class::SessionBound)).class,
        Class::SessionBound
    );
    let ro = c(Class::Begin { read_only: true });
    assert_eq!(merge(ro, read).class, Class::Begin { read_only: true });
    let hinted = Classification {
        hint_primary: true,
        ..c(READ)
    };
    assert!(merge(read, hinted).hint_primary);
}

#[test]
fn route_commands_are_recognised() {
    let cmd = |s: &str| route_command(s.as_bytes());
    assert_eq!(
        cmd("SET pgsplit.route = 'primary'"),
        Some(RouteCommand::Set(RouteMode::Primary))
    );
    assert_eq!(
        cmd("set session pgsplit.route to auto;"),
        Some(RouteCommand::Set(RouteMode::Auto))
    );
    assert_eq!(
        cmd("RESET pgsplit.route"),
        Some(RouteCommand::Set(RouteMode::Auto))
    );
    assert_eq!(cmd("  show PGSPLIT.ROUTE"), Some(RouteCommand::Show));
    assert_eq!(
        cmd("SET pgsplit.route = 'replica'"),
        Some(RouteCommand::Invalid("replica".into()))
    );
    assert_eq!(cmd("SET search_path = x"), None);
    assert_eq!(cmd("select 'SET pgsplit.route = 1'"), None);
    assert_eq!(
        cmd("/* app */ SET \"pgsplit\".Route TO PRIMARY -- why\n;"),
        Some(RouteCommand::Set(RouteMode::Primary))
    );
    assert_eq!(
        cmd("set pgsplit.route=default"),
        Some(RouteCommand::Set(RouteMode::Auto))
    );
    assert_eq!(
        cmd("SET pgsplit.route = 'it''s'"),
        Some(RouteCommand::Invalid("it's".into()))
    );
    assert_eq!(cmd("SET pgsplit.route = 'primary'; SELECT 1"), None);
    assert_eq!(cmd("SET pgsplit.router = 'primary'"), None);
    assert_eq!(cmd("SET pgsplit.route.x = 'primary'"), None);
    assert_eq!(cmd("SHOW pgsplit.route x"), None);
    assert_eq!(cmd("SET LOCAL pgsplit.route = primary"), None);
}

#[test]
fn stats_count_by_reason_and_node() {
    let stats = RouteStats::new(3);
    stats.record(Reason::Read, 1);
    stats.record(Reason::Read, 2);
    stats.record(Reason::Write, 0);
    assert_eq!(stats.by_reason(Reason::Read), 2);
    assert_eq!(stats.by_node(), vec![1, 1, 1]);
    for (i, r) in Reason::ALL.iter().enumerate() {
        assert_eq!(*r as usize, i);
    }
}

#[test]
fn disabled_routing_sends_everything_to_the_primary() {
    let policy = Policy {
        enabled: false,
        ..Policy::default()
    };
    let d = decide(
        &policy,
        &ClientRouting::default(),
        &c(READ),
        Instant::now(),
        |_| panic!("not asked"),
    );
    assert_eq!(d.reason, Reason::Disabled);
}
