//! Reads through a primary outage (issue 16, a first slice): with the primary stopped
//! (`dev/cluster.sh stop-primary`), new clients still log in (the login's server connection
//! comes from a replica) and read from the replicas, and so do clients connected before;
//! a write waits for the primary up to `pool.primary_wait_timeout`, then fails, never
//! hangs; a write still waiting when the primary is back runs; the connection whose write
//! failed writes again.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{node_port, TestProxy};

/// Stops the primary while alive; starts it again when dropped, even when the test panics.
struct PrimaryStopped;

impl PrimaryStopped {
    fn now() -> PrimaryStopped {
        cluster("stop-primary");
        PrimaryStopped
    }
}

impl Drop for PrimaryStopped {
    fn drop(&mut self) {
        cluster("start-primary");
    }
}

fn cluster(command: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/dev/cluster.sh");
    let status = Command::new(script).arg(command).status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "dev/cluster.sh {command} failed"
    );
}

fn is_replica(port: u16) -> bool {
    port == node_port("replica1") || port == node_port("replica2")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_log_in_and_read_while_the_primary_is_down() {
    let _lock = common::cluster_lock(common::REPLICA_REPLAY_LOCK, "the replica replay lock").await;
    let start = |wait: u64| {
        TestProxy::start(move |c| {
            c.routing.enabled = true;
            c.lag.check_interval = pgsplit::config::Duration::from_millis(100);
            c.pool.primary_wait_timeout = pgsplit::config::Duration::from_secs(wait);
        })
    };
    let proxy = start(2).await;
    let patient = start(60).await;
    let waiting = patient.connect("outage_patient").await;
    let before = proxy.connect("outage_before").await;
    common::read_port(&before).await;

    let stopped = PrimaryStopped::now();
    for i in 0..10 {
        let fresh = proxy.connect(&format!("outage_fresh_{i}")).await;
        let port = common::read_port(&fresh).await;
        assert!(
            is_replica(port),
            "a read on a fresh connection ran on port {port}"
        );
    }
    let port = common::read_port(&before).await;
    assert!(
        is_replica(port),
        "a read on an older connection ran on port {port}"
    );

    // A write waits for the primary up to pool.primary_wait_timeout (2 s here), then fails.
    let started = Instant::now();
    let err = before
        .simple_query("select txid_current()")
        .await
        .expect_err("a write with no primary fails");
    let waited = started.elapsed();
    eprintln!("a write with the primary down failed after {waited:?}: {err}");
    assert!(
        waited >= Duration::from_secs(2),
        "it waited for the primary"
    );
    assert!(waited < Duration::from_secs(5), "then it failed");
    // The wait is in the metrics: one wait that gave up after about 2 s.
    let metrics = common::metrics_text(&proxy);
    let sample = |series| common::metric_sample(&metrics, series).unwrap_or(0.0);
    assert_eq!(
        sample("pgsplit_primary_wait_seconds_count"),
        1.0,
        "{metrics}"
    );
    let recorded = sample("pgsplit_primary_wait_seconds_sum");
    assert!((2.0..5.0).contains(&recorded), "{metrics}");

    // One that may wait longer runs once the primary is back: the restart costs it nothing.
    let write = tokio::spawn(async move {
        let started = Instant::now();
        let result = waiting.simple_query("select txid_current()").await;
        (result.map(drop), started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(stopped);
    let (result, waited) = write.await.unwrap();
    eprintln!("a write waiting for the restart ran after {waited:?}");
    result.expect("the write that waited for the primary ran");
    let metrics = common::metrics_text(&patient);
    let recorded = common::metric_sample(&metrics, "pgsplit_primary_wait_seconds_sum");
    assert!(
        recorded.is_some_and(|s| s >= 0.5 && s <= waited.as_secs_f64()),
        "the write's wait for the restart is recorded: {metrics}"
    );
    common::wait_until(60, "the same connection writes again", || async {
        before.simple_query("select txid_current()").await.is_ok()
    })
    .await;
}
