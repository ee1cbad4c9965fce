//! Cost of the routing decision per transaction (issue 5, item 4): the pure policy
//! (`router::decide`) and the replica lease it takes from the shared topology.
//!
//! - `decide/read`: an unpinned autocommit read, leasing a replica (least outstanding work,
//!   round-robin) and giving it back, as every read through pgsplit does;
//! - `decide/pinned_read`: a read inside the read-your-writes pin (no lease);
//! - `decide/write`: a write (no lease);
//! - `lease/two_replicas`: the lease alone.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use pgsplit::classify::{Class, Classification};
use pgsplit::router::{decide, ClientRouting, Policy};
use pgsplit::topology::{Replica, Topology};

fn topology() -> Arc<Topology> {
    Arc::new(Topology::new(
        vec![Replica::new(1, 1), Replica::new(2, 1)],
        Duration::from_secs(5),
    ))
}

fn class(class: Class) -> Classification {
    Classification::of(class)
}

fn bench_route(c: &mut Criterion) {
    let policy = Policy::default();
    let topology = topology();
    let read = class(Class::Read {
        primary_table: false,
    });
    let write = class(Class::Write);
    let unpinned = ClientRouting::default();
    let mut pinned = ClientRouting::default();
    pinned.wrote(&policy, Instant::now());

    let mut group = c.benchmark_group("decide");
    group.bench_function("read", |b| {
        b.iter(|| {
            let now = Instant::now();
            let mut lease = None;
            let decision = decide(&policy, &unpinned, black_box(&read), now, || {
                lease = topology.lease(now, 0);
                lease.as_ref().map(|l| l.node)
            });
            black_box((decision, lease))
        })
    });
    group.bench_function("pinned_read", |b| {
        b.iter(|| {
            let now = Instant::now();
            decide(&policy, &pinned, black_box(&read), now, || {
                topology.lease(now, 0).map(|l| l.node)
            })
        })
    });
    group.bench_function("write", |b| {
        b.iter(|| {
            let now = Instant::now();
            decide(&policy, &unpinned, black_box(&write), now, || {
                topology.lease(now, 0).map(|l| l.node)
            })
        })
    });
    group.finish();

    c.bench_function("lease/two_replicas", |b| {
        b.iter(|| black_box(topology.lease(Instant::now(), 0)))
    });
}

criterion_group!(benches, bench_route);
criterion_main!(benches);
