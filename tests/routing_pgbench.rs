//! Read/write splitting against the real cluster, part 3: pgbench TPC-B-like in every query
//! mode and a 90/10 mixed workload, checked by the proxy's routing counters. Helpers in
//! `common::routing`; see `tests/routing.rs`.

mod common;

use common::routing::*;
use common::{pgbench, pgbench_figure, unique, TestProxy};
use pgsplit::config::ReadYourWrites;
use pgsplit::router::Reason;

// ---------------------------------------------------------------------------------------
// 3-4. pgbench
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_tpcb_through_routing_has_no_read_only_errors() {
    const SCHEMA: &str = "pgsplit_test_routing_pgbench";
    let proxy = routed(|c| {
        c.routing.read_your_writes = ReadYourWrites::Lsn;
        c.pool.max_size = 4;
        c.pool.checkout_timeout = pgsplit::config::Duration::from_secs(60);
    })
    .await;
    // One run of this test at a time on the cluster (the schema is shared).
    let lock = common::cluster_lock(7_468_526_580, "the routing pgbench lock").await;
    let setup = common::bench_schema(&proxy, "routing_pgbench_setup", SCHEMA).await;
    pgbench(
        proxy.port(),
        "bench",
        Some(SCHEMA),
        &["-i", "-s", "1", "-q"],
    )
    .await;
    // pgbench reads the scale from pgbench_branches before it starts: on a replica.
    replicas_caught_up(60).await;

    for mode in ["simple", "extended", "prepared"] {
        let before = Counts::of(&proxy);
        let args = ["-c", "16", "-j", "2", "-T", "5", "-M", mode];
        let out = pgbench(proxy.port(), "bench", Some(SCHEMA), &args).await;
        let done = pgbench_figure(&out, "number of transactions actually processed:");
        let failed = pgbench_figure(&out, "number of failed transactions:");
        assert_eq!(failed, 0, "pgbench -M {mode}:\n{out}");
        assert!(done > 0, "pgbench -M {mode} processed nothing:\n{out}");
        let delta = before.since(&proxy);
        assert!(
            delta.reason(Reason::Transaction) >= done,
            "-M {mode}: {done} transactions but {delta:?}"
        );
        eprintln!("pgbench TPC-B -M {mode} through routing: {done} transactions, {delta:?}");
    }
    let row = setup
        .query_one(
            &format!(
                "select (select sum(bbalance) from {SCHEMA}.pgbench_branches), \
                        (select sum(tbalance) from {SCHEMA}.pgbench_tellers), \
                        (select sum(abalance) from {SCHEMA}.pgbench_accounts)"
            ),
            &[],
        )
        .await
        .unwrap();
    let (b, t, a): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!((b, t), (t, a), "balances must agree");
    setup
        .batch_execute(&format!("drop schema {SCHEMA} cascade"))
        .await
        .unwrap();
    drop(lock);
}

/// Opens server connections before a timed run: `primary` transactions on the primary and
/// `replicas` read-only transactions on the replicas, all open at once. Each new server
/// connection costs a SCRAM login (PBKDF2, about 0.1 s of CPU in a debug build), which
/// would otherwise eat into a short pgbench run.
async fn warm_up(proxy: &TestProxy, primary: usize, replicas: usize) {
    let n = primary + replicas;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(n));
    // Log every client in first: a login borrows a primary connection too.
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(proxy.connect("routing_warm_up").await);
    }
    let mut tasks = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let begin = if i < primary {
                "begin"
            } else {
                "begin read only"
            };
            client.batch_execute(begin).await.unwrap();
            client.simple_query("select 1").await.unwrap();
            barrier.wait().await;
            client.batch_execute("commit").await.unwrap();
        }));
    }
    for t in tasks {
        common::with_timeout(120, "warming the pools up", t)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_workload_sends_reads_to_replicas_and_writes_to_the_primary() {
    let proxy =
        routed(|c| c.pool.checkout_timeout = pgsplit::config::Duration::from_secs(60)).await;
    let table = unique("mixed_routing");
    let _cleanup = cleanup(&format!("drop table if exists {table}")).await;
    let setup = app_on_primary().await;
    setup
        .batch_execute(&format!(
            "create table {table} (id int primary key, v int not null default 0); \
             insert into {table} select g, 0 from generate_series(1, 1000) g;"
        ))
        .await
        .unwrap();
    replicas_caught_up(30).await;
    let script = std::env::temp_dir().join(format!("{}.sql", unique("pgsplit_mixed")));
    std::fs::write(
        &script,
        format!(
            "\\set id random(1, 1000)\n\
             \\set r random(1, 100)\n\
             \\if :r <= 10\n\
             update {table} set v = v + 1 where id = :id;\n\
             \\else\n\
             select v from {table} where id = :id;\n\
             \\endif\n"
        ),
    )
    .unwrap();
    let script_arg = script.to_string_lossy().into_owned();

    warm_up(&proxy, 10, 20).await;
    let mut total_writes = 0;
    for mode in ["simple", "prepared"] {
        let before = Counts::of(&proxy);
        let args = [
            "-n",
            "-c",
            "32",
            "-j",
            "2",
            "-T",
            "4",
            "-M",
            mode,
            "-f",
            &script_arg,
        ];
        let out = pgbench(proxy.port(), "app", None, &args).await;
        let done = pgbench_figure(&out, "number of transactions actually processed:");
        assert_eq!(
            pgbench_figure(&out, "number of failed transactions:"),
            0,
            "{out}"
        );
        let d = before.since(&proxy);
        let reads = d.reads_anywhere();
        let writes = d.reason(Reason::Write);
        let on_replicas = d.reason(Reason::Read);
        eprintln!(
            "mixed -M {mode}: {done} transactions; reads {reads} ({on_replicas} on replicas), \
             writes {writes}; by node {:?}",
            d.nodes
        );
        assert!(done > 100, "-M {mode}: only {done} transactions:\n{out}");
        // Every statement was one routing decision (in-flight ones at the end may be cut).
        assert!(
            reads + writes >= done && reads + writes <= done + 64,
            "-M {mode}: {done} transactions but {reads} reads + {writes} writes routed: {d:?}"
        );
        assert!(
            on_replicas as f64 >= 0.85 * reads as f64,
            "-M {mode}: only {on_replicas} of {reads} autocommit reads reached replicas: {d:?}"
        );
        let share = writes as f64 / (reads + writes) as f64;
        assert!(
            (0.04..0.2).contains(&share),
            "-M {mode}: write share {share}: {d:?}"
        );
        // Reads by replica are counted with the node that served them: every decision that
        // reached a replica was a read.
        assert_eq!(
            d.replicas(),
            on_replicas + d.reason(Reason::ReadOnlyTransaction),
            "-M {mode}: {d:?}"
        );
        assert!(d.nodes[1] > 0 && d.nodes[2] > 0, "-M {mode}: {d:?}");
        total_writes += writes;
    }
    // Every routed write landed on the primary (a replica refuses them, and pgbench saw no
    // failure): the table's sum counts them.
    let sum: i64 = setup
        .query_one(&format!("select sum(v) from {table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        sum as u64 <= total_writes && sum as u64 + 64 >= total_writes,
        "{total_writes} writes routed, {sum} applied"
    );
    let _ = std::fs::remove_file(&script);
}
