//! The lag guard end to end: a replica whose replay is paused while the primary writes
//! leaves the read rotation within 2 s of passing `lag.max_replica_lag`, the other replica
//! serves the reads, and it comes back within 3 s of catching up.

mod common;

use std::time::{Duration, Instant};

use common::{
    client_reading_from, node_port, read_port, read_ports, replica_superuser, superuser,
    transaction_on, wait_until, TestProxy, REPLICA_REPLAY_LOCK,
};
use pgsplit::config::ByteSize;
use pgsplit::lag::HealthState;

/// Resumes replay on a replica when dropped, even if the test panics.
struct Paused(u16);

impl Drop for Paused {
    fn drop(&mut self) {
        let resume = ["select pg_wal_replay_resume()"];
        if !common::psql_sync(self.0, "postgres", common::SUPERUSER_PASSWORD, &resume) {
            eprintln!(
                "could not resume replay on port {}: run dev/cluster.sh resume",
                self.0
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_replica_is_ejected_and_readmitted() {
    let proxy = TestProxy::start(|c| {
        c.routing.enabled = true;
        c.lag.max_replica_lag = ByteSize::mb(2);
    })
    .await;
    eject_and_readmit(&proxy).await;
}

/// The threshold changed live (what SIGHUP does after reading the file again): the 8 MB
/// behind that the default 16 MB tolerates now ejects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threshold_lowered_live_takes_effect() {
    let proxy = TestProxy::start(|c| c.routing.enabled = true).await;
    let mut lowered = common::test_config();
    lowered.routing.enabled = true;
    lowered.lag.max_replica_lag = ByteSize::mb(2);
    let needs_restart = proxy.proxy.reload(&lowered);
    assert!(needs_restart.is_empty(), "{needs_restart:?}");
    eject_and_readmit(&proxy).await;
}

/// `SET max_replica_lag` in the admin console: the 8 MB behind that the default 16 MB
/// tolerates now ejects, and `SHOW REPLICAS` tells the story.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threshold_set_in_the_admin_console_takes_effect() {
    let proxy = TestProxy::start(|c| c.routing.enabled = true).await;
    let console = common::admin(&proxy).await;
    let e = console
        .simple_query("SET max_replica_lag = '-1MB'")
        .await
        .expect_err("an invalid value is refused");
    assert_eq!(common::sqlstate(&e), "22023");
    common::admin_rows(&console, "SET max_replica_lag = '2MB'").await;
    let shown = common::admin_rows(&console, "SHOW max_replica_lag").await;
    assert_eq!(shown[0][0].1.as_deref(), Some("2MB"));
    eject_and_readmit(&proxy).await;
    let replicas = common::admin_rows(&console, "SHOW REPLICAS").await;
    eprintln!("{replicas:?}");
    let ejections = common::admin_value(&replicas, "replica1", "ejections").unwrap();
    assert!(ejections.parse::<u64>().unwrap() >= 1, "{replicas:?}");
    let lag = common::admin_rows(&console, "SHOW LAG").await;
    let ejected = common::admin_value(&lag, "replica1", "ejected_at_threshold").unwrap();
    assert_ne!(ejected, "0.0%", "the lag spell shows in SHOW LAG: {lag:?}");
}

/// `RELOAD` reads the file again: a lower threshold written to it takes effect; a file
/// with an invalid value is refused with the reason and the old value stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_the_file_and_refuses_an_invalid_one() {
    let dir = std::env::temp_dir().join(common::unique("pgsplit_reload"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.toml");
    let write_lag = |lines: &str| {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
        let mut value: toml::Table = text.parse().unwrap();
        let lag: toml::Table = lines.parse().unwrap();
        value.insert("lag".into(), toml::Value::Table(lag));
        std::fs::write(&file, toml::to_string(&value).unwrap()).unwrap();
    };
    write_lag("max_replica_lag = \"16MB\"");
    let mut config = common::test_config();
    config.routing.enabled = true;
    let proxy = TestProxy::start_with(config, Some(file.clone())).await;
    let console = common::admin(&proxy).await;

    write_lag("max_replica_lag = \"2MB\"");
    common::admin_rows(&console, "RELOAD").await;
    let shown = common::admin_rows(&console, "SHOW max_replica_lag").await;
    assert_eq!(shown[0][0].1.as_deref(), Some("2MB"));
    eject_and_readmit(&proxy).await;

    write_lag("max_replica_lag = \"4MB\"\nreadmit_percent = 500");
    let e = console
        .simple_query("RELOAD")
        .await
        .expect_err("an invalid file is refused");
    assert_eq!(common::sqlstate(&e), "F0000");
    assert!(
        common::describe(&e).contains("readmit_percent"),
        "the error names the key: {}",
        common::describe(&e)
    );
    let shown = common::admin_rows(&console, "SHOW max_replica_lag").await;
    assert_eq!(shown[0][0].1.as_deref(), Some("2MB"), "the old value stays");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Pauses replay on replica1, writes 8 MB on the primary, and checks that replica1 leaves
/// the rotation within 2 s while replica2 serves, then comes back within 3 s of resuming.
async fn eject_and_readmit(proxy: &TestProxy) {
    // No other test may pause or delay the replicas meanwhile.
    let _lock = common::cluster_lock(REPLICA_REPLAY_LOCK, "the replica replay lock").await;
    let (replica1, replica2) = (node_port("replica1"), node_port("replica2"));
    let replica1_index = 1;

    // Both replicas serve at first.
    wait_until(10, "both replicas serve reads", || async {
        let ports = read_ports(proxy, 2, 2).await;
        ports.contains(&replica1) && ports.contains(&replica2)
    })
    .await;

    // A client that reads from replica1, and a read-only transaction running on replica1
    // across the ejection: the transaction finishes there, the client's next reads avoid
    // it, and return to it once it is readmitted.
    let existing = client_reading_from(proxy, replica1).await;
    let inflight = transaction_on(proxy, replica1).await;

    let r1 = replica_superuser(replica1).await;
    r1.batch_execute("select pg_wal_replay_pause()")
        .await
        .unwrap();
    let _resume = Paused(replica1);
    let table = common::unique("lag_fill");
    let primary = superuser().await;
    primary
        .batch_execute(&format!(
            "create table {table} (x text); \
             insert into {table} select repeat('x', 1000) from generate_series(1, 8000)"
        ))
        .await
        .unwrap();
    let written = Instant::now();

    wait_until(
        2,
        "replica1 ejected within 2 s of the 8 MB write",
        || async { common::replica_state(proxy, replica1_index) == Some(HealthState::Lagging) },
    )
    .await;
    let ejected_after = written.elapsed();
    // replica2 replays the 8 MB too and may itself pass 2 MB for a moment (then it is out
    // for readmit_after): reads go to the primary until it is back. Never to replica1.
    let mut ports = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ports.contains(&replica2) && Instant::now() < deadline {
        let batch = read_ports(proxy, 2, 5).await;
        assert!(
            !batch.contains(&replica1),
            "a read reached the lagging replica: {batch:?}"
        );
        ports.extend(batch);
    }
    for _ in 0..6 {
        assert_ne!(
            read_port(&existing).await,
            replica1,
            "an existing client read from the lagging replica"
        );
    }
    let port = common::show(&inflight, "select inet_server_port() from pg_sleep(0.1)").await;
    assert_eq!(
        port,
        replica1.to_string(),
        "the transaction stays where it started"
    );
    inflight.batch_execute("commit").await.unwrap();
    assert!(
        ports.contains(&replica2),
        "replica2 should serve the reads: {ports:?}"
    );

    r1.batch_execute("select pg_wal_replay_resume()")
        .await
        .unwrap();
    let resumed = Instant::now();
    wait_until(3, "replica1 readmitted within 3 s of resuming", || async {
        common::replica_state(proxy, replica1_index) == Some(HealthState::Healthy)
    })
    .await;
    let readmitted_after = resumed.elapsed();
    wait_until(5, "replica1 serves reads again", || async {
        read_ports(proxy, 2, 2).await.contains(&replica1)
    })
    .await;
    assert_eq!(
        read_port(&existing).await,
        replica1,
        "the client whose replica was ejected reads from it again"
    );
    eprintln!(
        "ejected {ejected_after:?} after the write, readmitted {readmitted_after:?} after resume"
    );
    primary
        .batch_execute(&format!("drop table {table}"))
        .await
        .unwrap();
    // Hold the state stable: no flapping back while it is caught up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        common::replica_state(proxy, replica1_index),
        Some(HealthState::Healthy)
    );
}

/// Both replicas paused behind the threshold: reads go to the primary (the fallback) and
/// see data written after the pause, which the replicas do not have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_both_replicas_behind_reads_go_to_the_primary_and_are_fresh() {
    let proxy = TestProxy::start(|c| {
        c.routing.enabled = true;
        c.lag.max_replica_lag = ByteSize::mb(2);
    })
    .await;
    let _lock = common::cluster_lock(REPLICA_REPLAY_LOCK, "the replica replay lock").await;
    let ports = [node_port("replica1"), node_port("replica2")];
    let mut paused = Vec::new();
    for port in ports {
        replica_superuser(port)
            .await
            .batch_execute("select pg_wal_replay_pause()")
            .await
            .unwrap();
        paused.push(Paused(port));
    }
    let table = common::unique("lag_both");
    let primary = superuser().await;
    primary
        .batch_execute(&format!(
            "create table {table} (x text); grant select on {table} to app; \
             insert into {table} select repeat('x', 1000) from generate_series(1, 8000)"
        ))
        .await
        .unwrap();
    wait_until(2, "both replicas ejected", || async {
        [1, 2]
            .iter()
            .all(|&n| common::replica_state(&proxy, n) == Some(HealthState::Lagging))
    })
    .await;
    let client = proxy.connect("lag_both_reader").await;
    for _ in 0..5 {
        let sql = format!("select inet_server_port() || ':' || count(*) from {table}");
        let row = match client.simple_query(&sql).await {
            Ok(messages) => messages
                .iter()
                .find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                    _ => None,
                })
                .unwrap_or_default(),
            Err(e) => panic!("{sql}: {}", common::describe(&e)),
        };
        assert_eq!(
            row,
            format!("{}:8000", common::primary_port()),
            "a read while both replicas are behind must run on the primary and see the rows"
        );
    }
    drop(paused);
    primary
        .batch_execute(&format!("drop table {table}"))
        .await
        .unwrap();
}
