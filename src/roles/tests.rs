use super::*;

const STALE: Duration = Duration::from_secs(1);

fn names() -> Vec<String> {
    ["primary", "replica1", "replica2"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn seen(in_recovery: bool, timeline: Option<u32>, at: Instant) -> NodeSeen {
    NodeSeen {
        last_ok: Some((
            Seen {
                in_recovery,
                timeline,
            },
            at,
        )),
        failures: 0,
    }
}

fn primary(tl: u32, at: Instant) -> NodeSeen {
    seen(false, Some(tl), at)
}

fn replica(tl: u32, at: Instant) -> NodeSeen {
    seen(true, Some(tl), at)
}

/// The node's last check was `ago` before `now`, and the ones after failed.
fn lost(mut n: NodeSeen, failures: u32) -> NodeSeen {
    n.failures = failures;
    n
}

fn run(nodes: &[NodeSeen], previous: &Writer, now: Instant) -> Roles {
    decide(nodes, &names(), previous, now, STALE)
}

fn roles(r: &Roles) -> Vec<Role> {
    r.nodes.iter().map(|v| v.role).collect()
}

#[test]
fn the_node_out_of_recovery_takes_writes_and_replicas_take_reads() {
    let now = Instant::now();
    let r = run(
        &[primary(1, now), replica(1, now), replica(1, now)],
        &Writer::Node(0),
        now,
    );
    assert_eq!(r.writer, Writer::Node(0));
    assert_eq!(roles(&r), [Role::Primary, Role::Replica, Role::Replica]);
    assert_eq!(
        r.nodes.iter().map(|v| v.reads).collect::<Vec<_>>(),
        [false, true, true]
    );
}

#[test]
fn roles_do_not_follow_the_configuration() {
    // Configured: node 0 is the primary; in fact node 2 is.
    let now = Instant::now();
    let r = run(
        &[replica(1, now), replica(1, now), primary(1, now)],
        &Writer::Node(0),
        now,
    );
    assert_eq!(r.writer, Writer::Node(2));
    assert!(r.nodes[0].reads);
}

#[test]
fn a_promoted_replica_takes_writes_once_the_old_primary_is_gone() {
    let t0 = Instant::now();
    let now = t0 + Duration::from_secs(3);
    // The primary stopped (last seen at t0); replica1 promoted to timeline 2; replica2
    // still on timeline 1.
    let nodes = [lost(primary(1, t0), 5), primary(2, now), replica(1, now)];
    let r = run(&nodes, &Writer::Node(0), now);
    assert_eq!(r.writer, Writer::Node(1));
    assert_eq!(
        roles(&r),
        [Role::Unreachable, Role::Primary, Role::OldTimeline]
    );
    assert!(
        !r.nodes[2].reads,
        "a replica of the old timeline takes no reads"
    );
    assert!(
        r.nodes[2].why.contains("replica1 on timeline 2"),
        "{}",
        r.nodes[2].why
    );
    assert!(change_reason(&r, &names()).starts_with("replica1: out of recovery on timeline 2"));
}

#[test]
fn a_promotion_wins_even_while_the_old_primary_still_answers() {
    let now = Instant::now();
    let r = run(
        &[primary(1, now), primary(2, now), replica(2, now)],
        &Writer::Node(0),
        now,
    );
    assert_eq!(r.writer, Writer::Node(1));
    assert_eq!(roles(&r), [Role::Diverged, Role::Primary, Role::Replica]);
    assert!(!r.nodes[0].reads);
    assert!(r.nodes[2].reads);
}

#[test]
fn an_old_primary_that_comes_back_gets_nothing() {
    let now = Instant::now();
    let r = run(
        &[primary(1, now), primary(2, now), replica(1, now)],
        &Writer::Node(1),
        now,
    );
    assert_eq!(r.writer, Writer::Node(1));
    assert_eq!(
        roles(&r),
        [Role::Diverged, Role::Primary, Role::OldTimeline]
    );
    assert!(r.nodes[0].why.contains("old primary"), "{}", r.nodes[0].why);
}

#[test]
fn an_old_primary_does_not_take_writes_while_the_new_one_is_unreachable() {
    let t0 = Instant::now();
    let now = t0 + Duration::from_secs(3);
    let nodes = [primary(1, now), lost(primary(2, t0), 9), replica(2, now)];
    let r = run(&nodes, &Writer::Node(1), now);
    assert_eq!(r.writer, Writer::Node(1), "writes wait for the new primary");
    assert_eq!(roles(&r), [Role::Diverged, Role::Primary, Role::Replica]);
    // Nor when pgsplit has forgotten who the writer was.
    let r = run(&nodes, &Writer::None, now);
    assert_eq!(r.writer, Writer::None);
    assert_eq!(r.nodes[0].role, Role::Diverged);
}

#[test]
fn an_old_primary_rejoins_as_a_replica() {
    let now = Instant::now();
    let r = run(
        &[replica(2, now), primary(2, now), replica(2, now)],
        &Writer::Node(1),
        now,
    );
    assert_eq!(roles(&r), [Role::Replica, Role::Primary, Role::Replica]);
    assert!(r.nodes[0].reads);
}

#[test]
fn two_primaries_on_one_timeline_refuse_writes() {
    let now = Instant::now();
    let r = run(
        &[primary(3, now), primary(3, now), replica(3, now)],
        &Writer::Node(0),
        now,
    );
    assert_eq!(r.writer, Writer::SplitBrain(vec![0, 1]));
    assert_eq!(
        roles(&r),
        [Role::SplitBrain, Role::SplitBrain, Role::Replica]
    );
    let reason = change_reason(&r, &names());
    assert!(
        reason.contains("primary (timeline 3) and replica1 (timeline 3)"),
        "{reason}"
    );
    assert!(r.nodes[0].why.contains("replica1"), "{}", r.nodes[0].why);
    // Once one leaves (stopped: its checks age out), the other takes writes.
    let later = now + STALE * 2;
    let r = run(
        &[primary(3, now), primary(3, later), replica(3, later)],
        &r.writer,
        later,
    );
    assert_eq!(r.writer, Writer::Node(1));
}

#[test]
fn unknown_timelines_beside_another_primary_refuse_writes() {
    let now = Instant::now();
    let r = run(
        &[primary(1, now), seen(false, None, now), replica(1, now)],
        &Writer::Node(0),
        now,
    );
    assert_eq!(r.writer, Writer::SplitBrain(vec![0, 1]));
    // Alone, an unknown timeline is no obstacle.
    let r = run(
        &[seen(false, None, now), replica(1, now), replica(1, now)],
        &Writer::Node(0),
        now,
    );
    assert_eq!(r.writer, Writer::Node(0));
}

#[test]
fn a_primary_that_restarts_stays_the_write_target() {
    let t0 = Instant::now();
    let now = t0 + Duration::from_secs(5);
    let r = run(
        &[lost(primary(1, t0), 20), replica(1, now), replica(1, now)],
        &Writer::Node(0),
        now,
    );
    assert_eq!(r.writer, Writer::Node(0));
    assert!(r.nodes[0].why.contains("writes wait"), "{}", r.nodes[0].why);
    assert_eq!(r.nodes[1].role, Role::Replica);
}

#[test]
fn a_former_primary_seen_in_recovery_is_no_write_target() {
    let t0 = Instant::now();
    let now = t0 + Duration::from_secs(5);
    let r = run(
        &[lost(replica(1, t0), 20), replica(1, now), replica(1, now)],
        &Writer::Node(0),
        now,
    );
    assert_eq!(r.writer, Writer::None);
}

#[test]
fn before_any_check_the_expected_primary_takes_writes() {
    let now = Instant::now();
    let fresh = [NodeSeen::default(); 3];
    let r = run(&fresh, &Writer::Node(0), now);
    assert_eq!(r.writer, Writer::Node(0));
    assert_eq!(roles(&r), [Role::Primary, Role::Unknown, Role::Unknown]);
    assert!(r.nodes[0].why.contains("not checked yet"));
    // role = "auto" everywhere: nobody until a check says.
    let r = run(&fresh, &Writer::None, now);
    assert_eq!(r.writer, Writer::None);
    assert_eq!(Roles::expected(3, None).writer, Writer::None);
    let r = run(
        &[replica(1, now), primary(1, now), NodeSeen::default()],
        &Writer::None,
        now,
    );
    assert_eq!(r.writer, Writer::Node(1));
}

#[test]
fn checks_go_stale_with_time() {
    let t0 = Instant::now();
    let nodes = [primary(1, t0), replica(1, t0), replica(1, t0)];
    let r = run(&nodes, &Writer::Node(0), t0 + STALE);
    assert_eq!(roles(&r), [Role::Primary, Role::Replica, Role::Replica]);
    let r = run(
        &nodes,
        &Writer::Node(0),
        t0 + STALE + Duration::from_millis(1),
    );
    assert_eq!(r.writer, Writer::Node(0), "kept: it may be restarting");
    assert_eq!(r.nodes[1].role, Role::Unreachable);
    assert!(!r.nodes[1].reads);
}

#[test]
fn only_a_replaced_writer_is_fenced() {
    // Unreachable for a while, then back: nothing to fence.
    assert_eq!(to_fence(Some(0), &Writer::None), None);
    assert_eq!(to_fence(Some(0), &Writer::Node(0)), None);
    // Another node took over, directly or after a spell with no writer.
    assert_eq!(to_fence(Some(0), &Writer::Node(1)), Some(0));
    assert_eq!(to_fence(Some(0), &Writer::SplitBrain(vec![0, 1])), Some(0));
    // No writer known before: nobody to fence.
    assert_eq!(to_fence(None, &Writer::Node(1)), None);
}

#[test]
fn a_replica_keeps_the_timeline_it_received_when_its_receiver_stops() {
    let t0 = Instant::now();
    let in_recovery = |timeline| Seen {
        in_recovery: true,
        timeline,
    };
    let mut node = NodeSeen::default();
    node.checked(in_recovery(Some(3)), t0);
    // The primary stopped: the check now reads the minimum recovery point's timeline.
    node.checked(in_recovery(Some(2)), t0);
    assert_eq!(node.last_ok.map(|(s, _)| s.timeline), Some(Some(3)));
    node.checked(in_recovery(None), t0);
    assert_eq!(node.last_ok.map(|(s, _)| s.timeline), Some(Some(3)));
    // It follows a newer one.
    node.checked(in_recovery(Some(4)), t0);
    assert_eq!(node.last_ok.map(|(s, _)| s.timeline), Some(Some(4)));
    // A failed check forgets: the node may have been rebuilt.
    node.failures = 1;
    node.checked(in_recovery(Some(1)), t0);
    assert_eq!(node.last_ok.map(|(s, _)| s.timeline), Some(Some(1)));
    assert_eq!(node.failures, 0);
    // Out of recovery, the timeline is read from the WAL file being written: as read.
    node.checked(
        Seen {
            in_recovery: false,
            timeline: Some(1),
        },
        t0,
    );
    node.checked(in_recovery(Some(0)), t0);
    assert_eq!(node.last_ok.map(|(s, _)| s.timeline), Some(Some(0)));
}

#[test]
fn a_replica_whose_receiver_stopped_keeps_serving_reads() {
    let t0 = Instant::now();
    // replica1 was promoted (timeline 2); the old primary, rewound, and replica2 follow it.
    let mut replica2 = NodeSeen::default();
    replica2.checked(
        Seen {
            in_recovery: true,
            timeline: Some(2),
        },
        t0,
    );
    // The new primary stops for a switchover; replica2's receiver stops, and its check
    // reads timeline 1 from its last restartpoint.
    replica2.checked(
        Seen {
            in_recovery: true,
            timeline: Some(1),
        },
        t0,
    );
    let nodes = [replica(2, t0), lost(primary(2, t0), 1), replica2];
    let r = run(&nodes, &Writer::Node(1), t0);
    assert_eq!(r.nodes[2].role, Role::Replica, "{r:?}");
    assert!(r.nodes[2].reads);
}
