//! Unit tests for `crate::topology`.

use super::*;

/// The replica each of the clients in slots 0..n would read from.
fn picks(replicas: &[Replica], n: u64) -> Vec<usize> {
    let now = Instant::now();
    (0..n)
        .map(|t| replicas[choose(replicas, now, t, 0).unwrap()].node)
        .collect()
}

#[test]
fn consecutive_clients_are_shared_round_robin() {
    let rs = vec![Replica::new(1, 1), Replica::new(2, 1)];
    assert_eq!(picks(&rs, 4), vec![1, 2, 1, 2]);
}

#[test]
fn weights_skew_the_round_robin() {
    let rs = vec![Replica::new(1, 3), Replica::new(2, 1)];
    let p = picks(&rs, 8);
    assert_eq!(p.iter().filter(|&&n| n == 1).count(), 6);
}

#[test]
fn least_outstanding_work_wins() {
    let mut rs = vec![Replica::new(1, 1), Replica::new(2, 1)];
    rs[0].outstanding = 3;
    rs[1].outstanding = 1;
    assert_eq!(picks(&rs, 3), vec![2, 2, 2]);
    // Relative to weight: 4 on weight 4 beats 2 on weight 1.
    rs[0] = Replica {
        outstanding: 4,
        ..Replica::new(1, 4)
    };
    rs[1].outstanding = 2;
    assert_eq!(picks(&rs, 2), vec![1, 1]);
}

#[test]
fn unavailable_replicas_are_skipped() {
    let now = Instant::now();
    let mut rs = vec![Replica::new(1, 1), Replica::new(2, 1)];
    rs[0].state = HealthState::Lagging;
    assert_eq!(picks(&rs, 3), vec![2, 2, 2]);
    rs[1].cooldown_until = Some(now + Duration::from_secs(5));
    assert_eq!(choose(&rs, now, 0, 0), None);
    assert!(rs[1].available(now + Duration::from_secs(5)));
}

#[test]
fn leases_count_outstanding_work_until_dropped() {
    let topo = Arc::new(Topology::new(
        vec![Replica::new(1, 1), Replica::new(2, 1)],
        Duration::from_secs(5),
    ));
    let now = Instant::now();
    // One client (slot 0): the second read while the first runs goes to the idle replica.
    let a = topo.lease(now, 0, 0).unwrap();
    let b = topo.lease(now, 0, 0).unwrap();
    assert_ne!(a.node, b.node);
    let c = topo.lease(now, 0, 0).unwrap();
    assert_eq!(
        topo.snapshot().iter().map(|r| r.outstanding).sum::<usize>(),
        3
    );
    drop((a, b, c));
    assert!(topo.snapshot().iter().all(|r| r.outstanding == 0));
    topo.refused(1, now);
    assert_eq!(topo.lease(now, 0, 0).unwrap().node, 2);
    assert_eq!(topo.snapshot().iter().map(|r| r.reads).sum::<u64>(), 4);
}

#[test]
fn a_client_keeps_its_replica_while_it_is_available_and_no_busier() {
    let topo = Arc::new(Topology::new(
        vec![Replica::new(1, 1), Replica::new(2, 1)],
        Duration::from_secs(5),
    ));
    let now = Instant::now();
    let (first, second) = (topo.new_client_slot(), topo.new_client_slot());
    let reads = |slot| -> Vec<usize> {
        (0..4)
            .map(|_| topo.lease(now, slot, 0).unwrap().node)
            .collect()
    };
    assert_eq!(reads(first), vec![1, 1, 1, 1]);
    assert_eq!(reads(second), vec![2, 2, 2, 2]);

    // Busier than the other: the read goes to the less busy one.
    let held = topo.lease(now, first, 0).unwrap();
    assert_eq!(held.node, 1);
    assert_eq!(topo.lease(now, first, 0).unwrap().node, 2);
    drop(held);

    // Out of the rotation: elsewhere; back in: back to it.
    topo.update(1, |r| r.state = HealthState::Lagging);
    assert_eq!(reads(first), vec![2, 2, 2, 2]);
    topo.update(1, |r| r.state = HealthState::Healthy);
    assert_eq!(reads(first), vec![1, 1, 1, 1]);
}

#[test]
fn a_client_keeps_its_replica_when_another_leaves_the_rotation() {
    let now = Instant::now();
    let mut rs = vec![Replica::new(1, 1), Replica::new(2, 1), Replica::new(3, 1)];
    let before = picks(&rs, 6);
    assert_eq!(before, vec![1, 2, 3, 1, 2, 3]);
    rs[1].state = HealthState::Down;
    let after = picks(&rs, 6);
    // Only the clients of replica 2 move, shared between the others.
    for (b, a) in before.iter().zip(&after) {
        match b {
            2 => assert_ne!(*a, 2),
            _ => assert_eq!(a, b),
        }
    }
    assert_eq!(after, vec![1, 3, 3, 1, 1, 3]);
    rs[1].state = HealthState::Healthy;
    rs[2].cooldown_until = Some(now + Duration::from_secs(5));
    assert_eq!(picks(&rs, 3), vec![1, 2, 1]);
}

#[test]
fn a_read_that_needs_a_replay_position_skips_the_replicas_behind_it() {
    let now = Instant::now();
    let mut rs = vec![Replica::new(1, 1), Replica::new(2, 1)];
    rs[0].replay_lsn = 100;
    rs[1].replay_lsn = 200;
    for slot in 0..4 {
        assert_eq!(choose(&rs, now, slot, 150), Some(1));
        assert!(choose(&rs, now, slot, 100).is_some());
    }
    assert_eq!(choose(&rs, now, 0, 201), None);
    let topo = Arc::new(Topology::new(rs, Duration::from_secs(5)));
    assert_eq!(topo.lease(now, 0, 201).unwrap_err(), Unleased::Behind);
    topo.replayed(1, 300);
    assert_eq!(topo.lease(now, 0, 201).unwrap().node, 1);
    topo.update(1, |r| r.state = HealthState::Down);
    topo.update(2, |r| r.state = HealthState::Down);
    assert_eq!(topo.lease(now, 0, 201).unwrap_err(), Unleased::Unavailable);
    assert_eq!(topo.lease(now, 0, 0).unwrap_err(), Unleased::Unavailable);
}
