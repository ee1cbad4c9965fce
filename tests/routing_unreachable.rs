//! Read/write splitting against the real cluster, part 4: a replica that refuses
//! connections, and `fallback = "error"` when no replica is available. Helpers in
//! `common::routing`; see `tests/routing.rs`.

mod common;

use std::time::Instant;

use common::routing::*;
use common::{describe, node_port, sqlstate};
use pgsplit::config::Fallback;

// ---------------------------------------------------------------------------------------
// 5-6. Replicas that cannot be reached
// ---------------------------------------------------------------------------------------

/// A port nothing listens on.
const CLOSED_PORT: u16 = 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_refuses_connections_is_skipped() {
    let proxy = routed(|c| {
        c.routing.replica_cooldown = pgsplit::config::Duration::from_secs(60);
        for n in &mut c.nodes {
            if n.name == "replica1" {
                n.port = CLOSED_PORT;
            }
        }
    })
    .await;
    let replica2 = node_port("replica2") as i32;
    let client = proxy.connect("routing_refused").await;
    let mut on_replica2 = 0;
    for i in 0..10 {
        for p in [
            port(&client, "select inet_server_port()").await,
            port_ext(&client, "select inet_server_port()").await,
        ] {
            assert!(
                p == replica2 || p == primary(),
                "read {i}: served by {p}, expected replica2 or the primary"
            );
            if p == replica2 {
                on_replica2 += 1;
            }
        }
    }
    assert!(
        on_replica2 >= 10,
        "replica2 should serve the reads ({on_replica2} of 20)"
    );
    // Read-only transactions too.
    client.batch_execute("begin read only").await.unwrap();
    assert_eq!(port(&client, "select inet_server_port()").await, replica2);
    client.batch_execute("commit").await.unwrap();

    let now = Instant::now();
    let snapshot = proxy.proxy.routing().topology.snapshot();
    let r1 = snapshot
        .iter()
        .find(|r| r.node == 1)
        .expect("replica1 in the topology");
    // Out of the rotation: taken down by the lag monitor's failed checks, or (had a read
    // reached it before the monitor noticed) in cooldown after refusing the connection.
    assert!(
        r1.state == pgsplit::lag::HealthState::Down || r1.cooldown_until.is_some_and(|t| t > now),
        "replica1 should be out of the rotation: {snapshot:?}"
    );
    assert_eq!(proxy.proxy.routing().stats.by_node()[1], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_error_refuses_reads_when_no_replica_is_available() {
    let proxy = routed(|c| {
        c.routing.fallback = Fallback::Error;
        for n in &mut c.nodes {
            if n.name != "primary" {
                n.port = CLOSED_PORT;
            }
        }
    })
    .await;
    let client = proxy.connect("routing_fallback_error").await;
    for round in 0..3 {
        let e = simple_error(&client, "select inet_server_port()").await;
        assert_eq!(sqlstate(&e), "57P03", "round {round}: {}", describe(&e));
        let e = client
            .query("select inet_server_port()", &[])
            .await
            .unwrap_err();
        assert_eq!(
            sqlstate(&e),
            "57P03",
            "round {round} extended: {}",
            describe(&e)
        );
        let e = simple_error(&client, "begin read only").await;
        assert_eq!(
            sqlstate(&e),
            "57P03",
            "round {round} begin read only: {}",
            describe(&e)
        );
        // The connection is usable, and anything for the primary works.
        assert_primary(
            port(&client, "/* pgsplit:primary */ select inet_server_port()").await,
            "hinted read",
        );
        assert_primary(
            port(&client, "select inet_server_port(), txid_current()").await,
            "write",
        );
        client.batch_execute("begin").await.unwrap();
        assert_primary(
            port(&client, "select inet_server_port()").await,
            "read in a transaction",
        );
        client.batch_execute("commit").await.unwrap();
        let p: i32 = client
            .query_one("select inet_server_port(), txid_current()", &[])
            .await
            .unwrap()
            .get(0);
        assert_primary(p, "extended write");
    }
    // No node serves reads: the replicas fail their checks (or cool down after refusing a
    // connection), and the primary is out of recovery.
    let snapshot = proxy.proxy.routing().topology.snapshot();
    assert!(
        snapshot
            .iter()
            .all(|r| !r.state.serves_reads() || r.cooldown_until.is_some()),
        "both replicas should be out of the rotation: {snapshot:?}"
    );
    assert!(
        snapshot
            .iter()
            .filter(|r| r.node != 0)
            .all(|r| r.state == pgsplit::lag::HealthState::Down || r.cooldown_until.is_some()),
        "both replicas should be down: {snapshot:?}"
    );
}
