//! pgbench through pgsplit: initialisation (COPY, VACUUM, DDL) and the TPC-B-like and
//! select-only scripts in the simple, extended and prepared query modes, with 32 clients
//! over a pool of 4 server connections. No transaction may fail, and the server never
//! sees more than 4 connections for the pool.
//!
//! pgbench works in its own schema of database bench (through `-c search_path=...`), so
//! the public pgbench tables of benchmarks are left alone; an advisory lock keeps two
//! runs of this test (two checkouts, CI and a developer) from sharing that schema.
//! Server connections are counted in pg_stat_activity by the client ports of this
//! process's own sockets, which is why this file holds a single test.

mod common;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{bench_schema, pgbench, pgbench_figure, superuser, TestProxy};

const POOL: usize = 4;
/// The schema pgbench works in, inside database bench.
const SCHEMA: &str = "pgsplit_test_pgbench";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_through_a_pool_of_four() {
    let proxy = TestProxy::start(|c| {
        c.pool.max_size = POOL;
        c.pool.checkout_timeout = pgsplit::config::Duration::from_secs(60);
    })
    .await;
    let port = proxy.port();

    // One pgbench test at a time on this cluster, across processes too (the schema below
    // is shared): a session advisory lock held until the end of the test.
    let lock = common::cluster_lock(7_468_526_577, "the pgbench test lock").await;

    // pgbench's tables go in a schema of their own, so that nothing else using the
    // bench database (benchmarks, a developer's pgbench) is disturbed.
    let setup = bench_schema(&proxy, "pgbench_setup", SCHEMA).await;

    // Watch the server side all along: connections of user app to database bench that
    // this test's proxy opened for its pool (other processes may use the cluster too; the
    // function catalog's control connection is not a pool connection).
    let checker = superuser().await;
    let stop = Arc::new(AtomicBool::new(false));
    let max_server = Arc::new(AtomicI64::new(0));
    let samples = Arc::new(AtomicI64::new(0));
    let watcher = {
        let (stop, max_server, samples) = (stop.clone(), max_server.clone(), samples.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let ports = common::own_ports_to(common::primary_port());
                let n: i64 = checker
                    .query_one(
                        "select count(*) from pg_stat_activity \
                         where datname = 'bench' and usename = 'app' \
                         and application_name <> 'pgsplit catalog' \
                         and client_port = any($1)",
                        &[&ports],
                    )
                    .await
                    .unwrap()
                    .get(0);
                max_server.fetch_max(n, Ordering::Relaxed);
                samples.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let max_pool = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let pool_watcher = {
        let (stop, max_pool, p) = (stop.clone(), max_pool.clone(), proxy.proxy.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for (_, pool) in p.pools().all() {
                    max_pool.fetch_max(pool.status().size, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    let init = pgbench(port, "bench", Some(SCHEMA), &["-i", "-s", "2", "-q"]).await;
    assert!(init.contains("done in"), "{init}");

    let mut processed = Vec::new();
    for script in [&[][..], &["-S"][..]] {
        for mode in ["simple", "extended", "prepared"] {
            let mut args = vec!["-c", "32", "-j", "2", "-T", "5", "-M", mode];
            args.extend_from_slice(script);
            let out = pgbench(port, "bench", Some(SCHEMA), &args).await;
            let done = pgbench_figure(&out, "number of transactions actually processed:");
            let failed = pgbench_figure(&out, "number of failed transactions:");
            assert_eq!(failed, 0, "pgbench {args:?}:\n{out}");
            assert!(done > 0, "pgbench {args:?} processed nothing:\n{out}");
            processed.push((mode, script.len(), done));
        }
    }

    stop.store(true, Ordering::Relaxed);
    watcher.await.unwrap();
    pool_watcher.await.unwrap();
    let max_server = max_server.load(Ordering::Relaxed);
    assert!(samples.load(Ordering::Relaxed) > 10);
    assert!(
        max_server <= POOL as i64,
        "the server saw {max_server} connections for a pool of {POOL}"
    );
    let max_pool = max_pool.load(Ordering::Relaxed);
    assert!(max_pool <= POOL, "a pool grew to {max_pool}");

    // The data is consistent: TPC-B keeps branch, teller and account balances equal.
    let row = setup
        .query_one(
            &format!(
                "select (select sum(bbalance) from {SCHEMA}.pgbench_branches), \
                        (select sum(tbalance) from {SCHEMA}.pgbench_tellers), \
                        (select sum(abalance) from {SCHEMA}.pgbench_accounts), \
                        (select count(*) from {SCHEMA}.pgbench_accounts)"
            ),
            &[],
        )
        .await
        .unwrap();
    let (b, t, a, n): (i64, i64, i64, i64) = (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(b, t);
    assert_eq!(t, a);
    assert_eq!(n, 200_000);
    assert!(
        max_server >= 1,
        "the watcher never saw the proxy's server connections"
    );
    eprintln!(
        "pgbench transactions processed: {processed:?}; most server connections seen: {max_server}"
    );
    setup
        .batch_execute(&format!("drop schema {SCHEMA} cascade"))
        .await
        .unwrap();
    drop(lock);
}
