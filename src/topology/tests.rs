//! Unit tests for `crate::topology`.

use super::*;

fn picks(replicas: &[Replica], n: u64) -> Vec<usize> {
    let now = Instant::now();
    (0..n)
        .map(|t| replicas[choose(replicas, now, t).unwrap()].node)
        .collect()
}

#[test]
fn idle_replicas_share_reads_round_robin() {
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
    rs[0].state = ReplicaState::Lagging;
    assert_eq!(picks(&rs, 3), vec![2, 2, 2]);
    rs[1].cooldown_until = Some(now + Duration::from_secs(5));
    assert_eq!(choose(&rs, now, 0), None);
    assert!(rs[1].available(now + Duration::from_secs(5)));
}

#[test]
fn leases_count_outstanding_work_until_dropped() {
    let topo = Arc::new(Topology::new(
        vec![Replica::new(1, 1), Replica::new(2, 1)],
        Duration::from_secs(5),
    ));
    let now = Instant::now();
    let a = topo.lease(now, true).unwrap();
    let b = topo.lease(now, true).unwrap();
    assert_ne!(a.node, b.node);
    let c = topo.lease(now, true).unwrap();
    assert_eq!(
        topo.snapshot().iter().map(|r| r.outstanding).sum::<usize>(),
        3
    );
    drop((a, b, c));
    assert!(topo.snapshot().iter().all(|r| r.outstanding == 0));
    topo.refused(1, now);
    assert_eq!(topo.lease(now, true).unwrap().node, 2);
    assert_eq!(topo.snapshot().iter().map(|r| r.reads).sum::<u64>(), 4);
}

#[test]
fn a_lease_without_a_turn_leaves_the_round_robin_where_it_was() {
    let topo = Arc::new(Topology::new(
        vec![Replica::new(1, 1), Replica::new(2, 1)],
        Duration::from_secs(5),
    ));
    let now = Instant::now();
    let mut nodes = Vec::new();
    for _ in 0..4 {
        // Describe-only batch, then the execution: alternate between replicas.
        drop(topo.lease(now, false));
        nodes.push(topo.lease(now, true).unwrap().node);
    }
    assert_eq!(nodes, vec![1, 2, 1, 2]);
}
