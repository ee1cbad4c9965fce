//! Read-your-writes by LSN (`routing.read_your_writes = "lsn"`, the default) end to end:
//! a client that wrote reads its write on the primary until a replica has replayed it, then
//! from a replica again; a client that never wrote reads from replicas all along; how soon
//! after a commit a writer's reads return to a replica on a healthy cluster; and the first
//! read after a start goes to a replica (every node is checked before clients are served).

mod common;

use std::time::{Duration, Instant};

use common::{node_port, primary_port, ReplicaApplyDelay, TestProxy, SUPERUSER_PASSWORD};
use tokio_postgres::Client;

/// A table `causal_*` (id 1, v 0) on the primary, readable and writable by the proxy's
/// users, dropped when the test ends.
struct Table(String);

impl Table {
    async fn new() -> Table {
        let name = common::unique("causal");
        let primary = common::superuser().await;
        primary
            .batch_execute(&format!(
                "drop table if exists {name};
                 create table {name} (id int primary key, v int not null);
                 insert into {name} values (1, 0);
                 grant select, update on {name} to public;"
            ))
            .await
            .unwrap();
        Table(name)
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        let sql = format!("drop table if exists {}", self.0);
        if !common::psql_sync(primary_port(), "postgres", SUPERUSER_PASSWORD, &[&sql]) {
            eprintln!("could not drop {}", self.0);
        }
    }
}

fn is_replica(port: u16) -> bool {
    port == node_port("replica1") || port == node_port("replica2")
}

/// Reads the row's value and the port of the node that served the read.
async fn read(client: &Client, table: &str) -> (i32, u16) {
    let row = client
        .query_one(
            &format!("select v, inet_server_port() from {table} where id = 1"),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{}", common::describe(&e)));
    (row.get(0), row.get::<_, i32>(1) as u16)
}

/// Sets the row's value (an autocommit write); returns when the commit is acknowledged.
async fn write(client: &Client, table: &str, v: i32) {
    client
        .execute(&format!("update {table} set v = $1 where id = 1"), &[&v])
        .await
        .unwrap_or_else(|e| panic!("{}", common::describe(&e)));
}

/// Waits until a client that never wrote reads `v` from a replica (both replicas serve
/// reads and have the table).
async fn replicas_have(proxy: &TestProxy, table: &str, v: i32) {
    let reader = proxy.connect("causal_setup").await;
    common::wait_until(20, "the replicas serve the table", || async {
        let mut seen = Vec::new();
        for _ in 0..4 {
            if let Ok(row) = reader
                .query_one(
                    &format!("select v, inet_server_port() from {table} where id = 1"),
                    &[],
                )
                .await
            {
                seen.push((row.get::<_, i32>(0), row.get::<_, i32>(1) as u16));
            }
        }
        seen.len() == 4 && seen.iter().all(|&(got, port)| got == v && is_replica(port))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_reads_its_write_on_the_primary_until_a_replica_replayed_it() {
    let proxy = TestProxy::start(|c| c.routing.enabled = true).await;
    let table = Table::new().await;
    let t = &table.0;
    replicas_have(&proxy, t, 0).await;

    // Both replicas apply commits 2 s late (no pause: replay goes on, only later).
    let delay = Duration::from_secs(2);
    let _delay = ReplicaApplyDelay::hold(delay).await;
    let writer = proxy.connect("causal_writer").await;
    let bystander = proxy.connect("causal_bystander").await;
    let (_, port) = read(&writer, t).await;
    assert!(is_replica(port), "before writing, reads go to replicas");

    write(&writer, t, 1).await;
    let committed = Instant::now();
    let mut on_primary = 0;
    let served_by_replica = loop {
        let (v, port) = read(&writer, t).await;
        assert_eq!(
            v, 1,
            "the writer missed its own write (read on port {port})"
        );
        if is_replica(port) {
            break committed.elapsed();
        }
        assert_eq!(port, primary_port());
        on_primary += 1;
        // The bystander never wrote: it reads from replicas, which have not applied the
        // write yet.
        if on_primary % 20 == 1 && committed.elapsed() < delay - Duration::from_millis(500) {
            let (v, port) = read(&bystander, t).await;
            assert!(
                is_replica(port),
                "a client that never wrote reads from replicas"
            );
            assert_eq!(v, 0, "the replicas apply commits {delay:?} late");
        }
        assert!(
            committed.elapsed() < delay + Duration::from_secs(10),
            "the writer's reads never returned to a replica"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    eprintln!(
        "{on_primary} reads on the primary, then a replica {served_by_replica:?} after the commit"
    );
    assert!(
        on_primary > 0,
        "the first reads after the write go to the primary"
    );
    assert!(
        served_by_replica >= delay - Duration::from_millis(100),
        "a replica served the read {served_by_replica:?} after the commit, before applying it"
    );
}

/// How soon after a commit a writer's next read is served by a replica, on a healthy
/// cluster: the bounds asserted here are generous (a shared test machine); the figures
/// are printed for the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writers_reads_return_to_a_replica_soon_after_the_commit() {
    let proxy = TestProxy::start(|c| c.routing.enabled = true).await;
    let table = Table::new().await;
    let t = &table.0;
    replicas_have(&proxy, t, 0).await;
    // No other test delays or pauses the replicas meanwhile.
    let _lock = common::cluster_lock(common::REPLICA_REPLAY_LOCK, "the replica replay lock").await;
    let writer = proxy.connect("causal_timed_writer").await;
    let mut waits = Vec::new();
    for v in 1..=50 {
        write(&writer, t, v).await;
        let committed = Instant::now();
        loop {
            let (got, port) = read(&writer, t).await;
            assert_eq!(
                got, v,
                "the writer missed its own write (read on port {port})"
            );
            if is_replica(port) {
                waits.push(committed.elapsed());
                break;
            }
            assert!(
                committed.elapsed() < Duration::from_secs(10),
                "write {v}: reads never returned to a replica"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    waits.sort();
    let median = waits[waits.len() / 2];
    let p99 = waits[(waits.len() * 99).div_ceil(100) - 1];
    eprintln!(
        "commit -> first read served by a replica, {} writes: median {median:?}, p99 {p99:?}, max {:?}",
        waits.len(),
        waits[waits.len() - 1]
    );
    assert!(median < Duration::from_millis(500), "median {median:?}");
    assert!(p99 < Duration::from_secs(3), "p99 {p99:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_read_after_a_start_goes_to_a_replica() {
    let mut config = common::test_config();
    config.routing.enabled = true;
    // Launched without waiting for the monitor: the proxy itself checks every node before
    // it serves the first client.
    let proxy = TestProxy::launch(config, None).await;
    let client = proxy.connect("causal_first_read").await;
    let port = common::read_port(&client).await;
    assert!(is_replica(port), "the first read ran on port {port}");
}

/// `SHOW CLIENTS` shows each client's causal position: none for a client that never wrote,
/// the WAL position its reads wait for (as PostgreSQL writes an LSN) once a writer's
/// position is known.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_clients_shows_the_causal_position() {
    let proxy = TestProxy::start(|c| c.routing.enabled = true).await;
    let table = Table::new().await;
    let t = &table.0;
    replicas_have(&proxy, t, 0).await;
    let console = common::admin(&proxy).await;
    let reader = proxy.connect("causal_show_reader").await;
    read(&reader, t).await;
    let writer = proxy.connect("causal_show_writer").await;
    write(&writer, t, 7).await;
    let is_lsn = |v: &str| {
        v.split_once('/').is_some_and(|(hi, lo)| {
            [hi, lo]
                .iter()
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_hexdigit()))
        })
    };
    common::wait_until(10, "the writer's position in SHOW CLIENTS", || async {
        // Its reads ask for the position and take it once the sample is answered.
        read(&writer, t).await;
        let rows = common::admin_rows(&console, "SHOW CLIENTS").await;
        let shown: Vec<Option<String>> = rows
            .iter()
            .map(|r| {
                r.iter()
                    .find(|(c, _)| c == "causal_lsn")
                    .and_then(|(_, v)| v.clone())
            })
            .collect();
        shown.len() == 2
            && shown.iter().filter(|v| v.is_none()).count() == 1
            && shown.iter().flatten().all(|v| is_lsn(v))
    })
    .await;
}
