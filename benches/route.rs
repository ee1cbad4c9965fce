//! Cost of the routing decision per transaction (issue 5, item 4): the pure policy
//! (`router::decide`) and the replica lease it takes from the shared topology.
//!
//! - `decide/read`: an unpinned autocommit read, leasing a replica (least outstanding work,
//!   round-robin) and giving it back, as every read through pgsplit does;
//! - `decide/pinned_read`: a read of a client whose write's position is not known yet
//!   (read-your-writes by LSN; no lease);
//! - `decide/write`: a write (no lease);
//! - `lease/two_replicas`: the lease alone.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use pgsplit::classify::{Class, Classification};
use pgsplit::router::{decide, ClientRouting, Pick, Policy};
use pgsplit::topology::{Lease, Replica, Topology, Unleased};

fn topology() -> Arc<Topology> {
    Arc::new(Topology::new(
        vec![Replica::new(1, 1), Replica::new(2, 1)],
        Duration::from_secs(5),
    ))
}

/// What `decide` is told for a lease result.
fn pick(lease: &Result<Lease, Unleased>) -> Pick {
    match lease {
        Ok(l) => Pick::Replica(l.node),
        Err(Unleased::Behind) => Pick::Behind,
        Err(Unleased::Unavailable) => Pick::Unavailable,
    }
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
            let decision = decide(&policy, &unpinned, black_box(&read), now, |lsn| {
                let l = topology.lease(now, 0, lsn);
                let p = pick(&l);
                lease = Some(l);
                p
            });
            black_box((decision, lease))
        })
    });
    group.bench_function("pinned_read", |b| {
        b.iter(|| {
            let now = Instant::now();
            decide(&policy, &pinned, black_box(&read), now, |lsn| {
                pick(&topology.lease(now, 0, lsn))
            })
        })
    });
    group.bench_function("write", |b| {
        b.iter(|| {
            let now = Instant::now();
            decide(&policy, &unpinned, black_box(&write), now, |lsn| {
                pick(&topology.lease(now, 0, lsn))
            })
        })
    });
    group.finish();

    c.bench_function("lease/two_replicas", |b| {
        b.iter(|| black_box(topology.lease(Instant::now(), 0, 0)))
    });
}

criterion_group!(benches, bench_route);
criterion_main!(benches);
