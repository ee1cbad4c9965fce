//! Reads through a primary outage (issue 16, a first slice): with the primary stopped
//! (`dev/cluster.sh stop-primary`), new clients still log in (the login's server connection
//! comes from a replica) and read from the replicas, and so do clients connected before;
//! a write fails with an error, never hangs; once the primary is back, the same connection
//! writes again.

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
    let proxy = TestProxy::start(|c| {
        c.routing.enabled = true;
        c.lag.check_interval = pgsplit::config::Duration::from_millis(100);
    })
    .await;
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

    let started = Instant::now();
    let err = before
        .simple_query("select txid_current()")
        .await
        .expect_err("a write with no primary fails");
    eprintln!(
        "a write with the primary down failed after {:?}: {err}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "it did not hang"
    );

    drop(stopped);
    common::wait_until(60, "the same connection writes again", || async {
        before.simple_query("select txid_current()").await.is_ok()
    })
    .await;
}
