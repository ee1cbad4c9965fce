//! Failover on the real cluster (issue 16): roles are discovered, not configured.
//!
//! The primary is stopped hard (`dev/cluster.sh stop-primary immediate`) and replica1 is
//! promoted (`dev/cluster.sh promote 1`): a write a client sent before the promotion, and
//! waiting for a primary meanwhile, runs on the promoted node; the time from the promotion
//! to that first write is printed and bounded. A client that was in a transaction on the
//! old primary gets 08006 for it and writes again on the same connection. Then the old
//! primary is started again
//! beside the new one, on its old timeline, as when nothing fences it: over 10 s of
//! writes through pgsplit (old connections, fresh ones, and a second pgsplit started now
//! whose config still names the old node as the primary), none lands on it (its row
//! count does not move) and no read goes to it or to replica2 (still on the old
//! timeline). `SHOW NODES` says why, and the metrics count the change.
//!
//! A replica promoted while the primary still runs (a switchover nothing fenced): writes
//! go to the promoted one at once; a client in a transaction on the old primary gets
//! 08006 for it (its connection there is closed, so the old primary rolls it back) and
//! goes on; the pooled connections to the old primary are not used again.
//!
//! A primary restart (`stop-primary`, `start-primary`): idle clients, and one that keeps
//! its server connection in session pooling, write afterwards with no error.
//!
//! The tests change the whole cluster: they run one at a time ([`SERIAL`]; cargo runs
//! test files one after another), each holds `common::REPLICA_REPLAY_LOCK` while it
//! starts (as `primary_outage.rs` does; the lock goes with the primary), and a drop guard
//! runs `dev/cluster.sh rebuild` even when a test panics, so later tests find one primary
//! and two streaming replicas.

mod common;

use std::time::{Duration, Instant};

use common::{admin, admin_rows, admin_value, node_port, primary_port, TestProxy};
use tokio_postgres::{Client, SimpleQueryMessage};

/// Puts the cluster back to one primary and two streaming replicas when dropped.
struct Rebuild;

impl Drop for Rebuild {
    fn drop(&mut self) {
        if let Err(e) = common::cluster_command(&["rebuild"]) {
            eprintln!("{e}");
        }
    }
}

async fn cluster(args: &'static [&'static str]) {
    let result = tokio::task::spawn_blocking(move || common::cluster_command(args))
        .await
        .unwrap();
    if let Err(e) = result {
        panic!("{e}");
    }
}

const TABLE: &str = "pgsplit_test_failover";

/// The tests of this file, one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn routed(c: &mut pgsplit::config::Config) {
    c.routing.enabled = true;
    c.lag.check_interval = pgsplit::config::Duration::from_millis(100);
    c.pool.primary_wait_timeout = pgsplit::config::Duration::from_secs(20);
}

/// A proxy on the cluster and the table the tests write to, made through it on the
/// primary and replicated to replica1.
async fn setup(app: &str) -> TestProxy {
    let proxy = TestProxy::start(routed).await;
    let setup = proxy.connect(app).await;
    setup
        .batch_execute(&format!(
            "drop table if exists {TABLE}; create table {TABLE} (id bigserial primary key, port int)"
        ))
        .await
        .unwrap();
    assert_eq!(write(&setup).await.unwrap(), primary_port());
    // replica1 must have the table before it becomes the primary.
    common::wait_until(30, "replica1 has the table", || async {
        count_on(node_port("replica1")).await == Some(1)
    })
    .await;
    proxy
}

/// Writes one row through `client`; returns the port of the node it landed on.
async fn write(client: &Client) -> Result<u16, tokio_postgres::Error> {
    let rows = client
        .simple_query(&format!(
            "insert into {TABLE} (port) select inet_server_port() returning port"
        ))
        .await?;
    Ok(first_value(&rows).parse().unwrap())
}

fn first_value(rows: &[SimpleQueryMessage]) -> String {
    rows.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .expect("a row")
}

/// The rows of the table on the node on `port`, read there directly; `None` while it
/// has no such table.
async fn count_on(port: u16) -> Option<i64> {
    let direct = common::replica_superuser(port).await;
    let rows = direct
        .simple_query(&format!("select count(*) from {TABLE}"))
        .await
        .ok()?;
    first_value(&rows).parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_follow_a_promotion_and_never_reach_the_old_primary() {
    let _serial = SERIAL.lock().await;
    let lock = common::cluster_lock(common::REPLICA_REPLAY_LOCK, "the replica replay lock").await;
    let proxy = setup("failover_setup").await;
    let (old, new, stale) = (primary_port(), node_port("replica1"), node_port("replica2"));

    let checker = common::superuser().await;
    let timeline: i32 = checker
        .query_one(
            "select ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    drop(checker);
    let idle = proxy.connect("failover_idle").await;
    write(&idle).await.unwrap();
    // A client in a transaction on the primary when it stops.
    let in_transaction = proxy.connect("failover_in_transaction").await;
    in_transaction.batch_execute("begin").await.unwrap();
    assert_eq!(write(&in_transaction).await.unwrap(), old);
    let _rebuild = Rebuild;
    drop(lock);
    cluster(&["stop-primary", "immediate"]).await;
    // A write sent with no primary waits for one (pool.primary_wait_timeout).
    let waiting = tokio::spawn(async move {
        let result = write(&idle).await;
        (result, Instant::now(), idle)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster(&["promote", "1"]).await;
    let promoted = Instant::now();
    let (result, done, idle) = waiting.await.unwrap();
    let port =
        result.unwrap_or_else(|e| panic!("the waiting write failed: {}", common::describe(&e)));
    let took = done.saturating_duration_since(promoted);
    eprintln!(
        "first write through pgsplit on the promoted node {took:?} after pg_ctl promote returned"
    );
    assert_eq!(port, new, "the write ran on the promoted replica1");
    assert!(took < Duration::from_secs(10), "it took {took:?}");
    // A fresh client writes there too.
    let fresh = proxy.connect("failover_fresh").await;
    assert_eq!(write(&fresh).await.unwrap(), new);
    // The function catalog is read from the new primary: a stable function created there
    // becomes known (a read), where the old primary, stopped, could not tell.
    let function = common::unique("failover_stable");
    fresh
        .batch_execute(&format!(
            "create function {function}() returns int stable language sql as 'select 1'"
        ))
        .await
        .unwrap();
    let call = format!("select {function}()");
    common::wait_until(10, "the catalog knows the new function", || {
        let class = proxy
            .proxy
            .routing()
            .classifier
            .classify(call.as_bytes())
            .class;
        async move {
            class
                == pgsplit::classify::Class::Read {
                    primary_table: false,
                }
        }
    })
    .await;
    // The client whose transaction was on the old primary gets 08006 for it, and stays
    // connected: its next transaction runs on the new primary.
    let e = write(&in_transaction)
        .await
        .expect_err("the transaction on the stopped primary is lost");
    assert_eq!(common::sqlstate(&e), "08006", "{}", common::describe(&e));
    assert!(!in_transaction.is_closed());
    assert_eq!(write(&in_transaction).await.unwrap(), new);

    // The old primary comes back beside the new one, on its old timeline.
    cluster(&["start-primary"]).await;
    let before = count_on(old).await;
    let admin = admin(&proxy).await;
    common::wait_until(10, "SHOW NODES finds the old primary diverged", || async {
        let rows = admin_rows(&admin, "SHOW NODES").await;
        admin_value(&rows, "primary", "role").as_deref() == Some("diverged")
    })
    .await;
    // A pgsplit started now, whose config still says the old node is the primary.
    let late = TestProxy::start(routed).await;
    let late_client = late.connect("failover_late").await;
    let started = Instant::now();
    let mut writes = 0;
    while started.elapsed() < Duration::from_secs(10) {
        for client in [&idle, &fresh, &late_client] {
            assert_eq!(write(client).await.unwrap(), new, "a write went elsewhere");
            writes += 1;
        }
        let reader = late.connect("failover_reader").await;
        let read = first_value(
            &reader
                .simple_query("select inet_server_port()")
                .await
                .unwrap(),
        );
        let read: u16 = read.parse().unwrap();
        assert!(
            read != old && read != stale,
            "a read ran on port {read}, a node of the old timeline"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = count_on(old).await;
    eprintln!("{writes} writes through pgsplit in 10 s with the old primary back; rows on it: {before:?} -> {after:?}");
    assert_eq!(before, after, "writes reached the old primary");

    let rows = admin_rows(&admin, "SHOW NODES").await;
    eprintln!("SHOW NODES: {rows:?}");
    assert_eq!(
        admin_value(&rows, "replica1", "role").as_deref(),
        Some("primary")
    );
    assert_eq!(
        admin_value(&rows, "replica1", "timeline"),
        Some((timeline + 1).to_string())
    );
    assert_eq!(
        admin_value(&rows, "replica2", "role").as_deref(),
        Some("old_timeline")
    );
    let metrics = common::metrics_text(&proxy);
    assert!(
        metrics.contains("pgsplit_primary{node=\"replica1\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pgsplit_role_changes_total 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_beside_a_running_primary_cuts_its_transactions() {
    let _serial = SERIAL.lock().await;
    let lock = common::cluster_lock(common::REPLICA_REPLAY_LOCK, "the replica replay lock").await;
    let proxy = setup("switchover_setup").await;
    let (old, new) = (primary_port(), node_port("replica1"));
    // Idle pooled connections to the primary, and a client in a transaction there.
    let idle = proxy.connect("switchover_idle").await;
    assert_eq!(write(&idle).await.unwrap(), old);
    let in_transaction = proxy.connect("switchover_in_transaction").await;
    in_transaction.batch_execute("begin").await.unwrap();
    assert_eq!(write(&in_transaction).await.unwrap(), old);
    let before = count_on(old).await;

    let _rebuild = Rebuild;
    drop(lock);
    cluster(&["promote", "1"]).await;
    let promoted = Instant::now();
    let mut first = None;
    while promoted.elapsed() < Duration::from_secs(10) {
        let port = write(&idle).await.unwrap();
        if port == new {
            first = Some(promoted.elapsed());
            break;
        }
        assert_eq!(port, old);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = first.expect("writes went to the promoted node within 10 s");
    eprintln!("first write on the promoted node {first:?} after pg_ctl promote returned (old primary still running)");
    let writes_on_old = count_on(old).await.unwrap() - before.unwrap();
    eprintln!("writes that reached the old primary after the promotion: {writes_on_old}");

    // The transaction on the old primary is cut; the client goes on.
    let e = write(&in_transaction)
        .await
        .expect_err("the transaction on the old primary is cut");
    assert_eq!(common::sqlstate(&e), "08006", "{}", common::describe(&e));
    assert!(
        common::describe(&e).contains("the primary changed"),
        "{}",
        common::describe(&e)
    );
    assert_eq!(write(&in_transaction).await.unwrap(), new);
    // Rolled back there: its row never appears on the old primary.
    let after_cut = count_on(old).await.unwrap();
    for _ in 0..20 {
        assert_eq!(write(&idle).await.unwrap(), new);
    }
    assert_eq!(
        count_on(old).await.unwrap(),
        after_cut,
        "a write reached the old primary"
    );
    // No server connection of the pools is left open to the old primary.
    let checker = common::replica_superuser(old).await;
    common::wait_until(
        10,
        "pgsplit's connections to the old primary are closed",
        || async {
            let rows = checker
                .simple_query(
                    "select count(*) from pg_stat_activity where usename = 'app' \
                 and application_name not like 'pgsplit %'",
                )
                .await
                .unwrap();
            first_value(&rows) == "0"
        },
    )
    .await;
}

/// Starts the primary again when dropped, even when the test panics.
struct StartPrimary;

impl Drop for StartPrimary {
    fn drop(&mut self) {
        if let Err(e) = common::cluster_command(&["start-primary"]) {
            eprintln!("{e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_write_after_a_primary_restart_without_an_error() {
    let _serial = SERIAL.lock().await;
    let lock = common::cluster_lock(common::REPLICA_REPLAY_LOCK, "the replica replay lock").await;
    let proxy = setup("restart_setup").await;
    let session = TestProxy::start(|c| {
        routed(c);
        c.proxy.pool_mode = pgsplit::config::PoolMode::Session;
    })
    .await;
    let mut idle = Vec::new();
    for i in 0..10 {
        let client = proxy.connect(&format!("restart_idle_{i}")).await;
        assert_eq!(write(&client).await.unwrap(), primary_port());
        idle.push(client);
    }
    // In session pooling the client keeps its server connection between transactions.
    let kept = session.connect("restart_session").await;
    assert_eq!(write(&kept).await.unwrap(), primary_port());

    drop(lock);
    let started = StartPrimary;
    cluster(&["stop-primary"]).await;
    drop(started); // start-primary: returns once both replicas stream again
    let mut errors = Vec::new();
    for client in idle.iter().chain([&kept]) {
        match write(client).await {
            Ok(port) => assert_eq!(port, primary_port()),
            Err(e) => errors.push(common::describe(&e)),
        }
    }
    assert!(errors.is_empty(), "idle clients saw errors: {errors:?}");
    let admin = admin(&proxy).await;
    let rows = admin_rows(&admin, "SHOW NODES").await;
    assert_eq!(
        admin_value(&rows, "primary", "role").as_deref(),
        Some("primary")
    );
    assert_eq!(
        admin_value(&rows, "primary", "role_changes").as_deref(),
        Some("0")
    );
}
