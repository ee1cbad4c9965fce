//! A replica that stops answering without closing its connections (its processes stopped
//! with SIGSTOP: the kernel still acknowledges, so no timeout or keepalive notices) does not
//! hang the clients waiting for it (issue 11, item 6): once pgsplit's checks of it fail, a
//! client waiting for its reply gets 08006, and a new connection reads from the other
//! replica.

mod common;

use std::process::Command;
use std::time::Instant;

use common::{node_port, TestProxy};

/// Stops every process of a node (postmaster and children) while alive; continues them
/// when dropped, even when the test panics.
struct Stopped(Vec<String>);

impl Stopped {
    fn node(name: &str) -> Stopped {
        let dir = std::env::var("PGSPLIT_CLUSTER_DIR").unwrap_or("/tmp/pgsplit-cluster".into());
        let pid_file = std::fs::read_to_string(format!("{dir}/{name}/postmaster.pid"))
            .expect("the node's postmaster.pid");
        let postmaster = pid_file.lines().next().unwrap().trim().to_owned();
        let children = Command::new("pgrep")
            .args(["-P", &postmaster])
            .output()
            .expect("pgrep");
        let mut pids = vec![postmaster];
        pids.extend(
            String::from_utf8_lossy(&children.stdout)
                .split_whitespace()
                .map(str::to_owned),
        );
        signal("-STOP", &pids);
        Stopped(pids)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal("-CONT", &self.0);
    }
}

fn signal(which: &str, pids: &[String]) {
    let status = Command::new("kill").arg(which).args(pids).status();
    assert!(status.is_ok_and(|s| s.success()), "kill {which} {pids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_waiting_for_a_stopped_replica_gets_08006_and_reconnects_to_another() {
    let _lock = common::cluster_lock(common::REPLICA_REPLAY_LOCK, "the replica replay lock").await;
    let proxy = TestProxy::start(|c| {
        c.routing.enabled = true;
        c.lag.check_interval = pgsplit::config::Duration::from_millis(100);
    })
    .await;
    let (replica1, replica2) = (node_port("replica1"), node_port("replica2"));
    // Its server connection to replica1 stays in the pool between its reads.
    let client = common::client_reading_from(&proxy, replica1).await;

    let stopped = Stopped::node("replica1");
    let started = Instant::now();
    let err = common::with_timeout(
        60,
        "the stalled read's end",
        client.simple_query("select 1"),
    )
    .await
    .expect_err("the read on the stopped replica fails");
    let waited = started.elapsed();
    eprintln!("the read on the stopped replica ended after {waited:?}: {err}");
    let code = err.code().map(|c| c.code().to_owned());
    // The session ends with FATAL 08006; a driver may report the closed connection itself.
    assert!(
        code.as_deref() == Some("08006") || err.is_closed() || code.is_none(),
        "{err:?}"
    );

    let fresh = proxy.connect("stalled_fresh").await;
    let port = common::read_port(&fresh).await;
    assert_eq!(
        port, replica2,
        "a new connection reads from the other replica"
    );
    drop(stopped);
}

/// The same for the primary: a client waiting for its reply inside a transaction gets
/// 08006 once the monitor finds it down and nothing came from it for a while; once the
/// primary runs again, a new connection writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_waiting_for_a_stopped_primary_gets_08006() {
    let _lock = common::cluster_lock(common::REPLICA_REPLAY_LOCK, "the replica replay lock").await;
    let proxy = TestProxy::start(|c| {
        c.lag.check_interval = pgsplit::config::Duration::from_millis(100);
    })
    .await;
    let client = proxy.connect("stalled_primary").await;
    client.batch_execute("begin").await.unwrap();
    client.simple_query("select 1").await.unwrap();

    let stopped = Stopped::node("primary");
    let started = Instant::now();
    let err = common::with_timeout(
        60,
        "the stalled query's end",
        client.simple_query("select 2"),
    )
    .await
    .expect_err("the query on the stopped primary fails");
    eprintln!(
        "the query on the stopped primary ended after {:?}: {err}",
        started.elapsed()
    );
    let code = err.code().map(|c| c.code().to_owned());
    assert!(
        code.as_deref() == Some("08006") || err.is_closed() || code.is_none(),
        "{err:?}"
    );
    drop(stopped);

    let fresh = proxy.connect("stalled_primary_after").await;
    common::with_timeout(60, "a write after the primary runs again", async {
        loop {
            match fresh.simple_query("select txid_current()").await {
                Ok(_) => break,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            }
        }
    })
    .await;
}
