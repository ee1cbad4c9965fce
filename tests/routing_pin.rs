//! Read/write splitting against the real cluster, part 2: the read-your-writes time pin
//! (`read_your_writes = "time"`), including against replicas held behind with
//! `recovery_min_apply_delay`. Helpers in `common::routing`; see `tests/routing.rs`.

mod common;

use std::time::{Duration, Instant};

use common::routing::*;
use common::{unique, TestProxy};
use pgsplit::config::ReadYourWrites;
use pgsplit::router::Reason;
use tokio_postgres::Client;

// ---------------------------------------------------------------------------------------
// 2. Read-your-writes pin
// ---------------------------------------------------------------------------------------

const PIN: Duration = Duration::from_millis(2000);

async fn pinned_proxy(pin: Duration) -> TestProxy {
    routed(move |c| {
        c.routing.read_your_writes = ReadYourWrites::Time;
        c.routing.pin_after_write = pin.into();
    })
    .await
}

/// One timed read: where it ran, when it was sent and when its answer came.
struct TimedRead {
    port: i32,
    sent: Instant,
    done: Instant,
}

async fn timed_read(client: &Client) -> TimedRead {
    let sent = Instant::now();
    let port = port(client, "select inet_server_port()").await;
    TimedRead {
        port,
        sent,
        done: Instant::now(),
    }
}

/// Reads every 50 ms until one runs on a replica, checking that every read answered before
/// `pinned_at_least` ran on the primary. Returns the first replica read.
async fn read_until_unpinned(client: &Client, pinned_at_least: Instant, secs: u64) -> TimedRead {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let read = timed_read(client).await;
        if read.done < pinned_at_least {
            assert_primary(
                read.port,
                &format!(
                    "a read answered {:?} before the pin could end",
                    pinned_at_least - read.done
                ),
            );
        }
        if is_replica(read.port) {
            return read;
        }
        assert!(
            Instant::now() < deadline,
            "reads did not return to the replicas within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_after_write_reads_own_writes_then_returns_to_replicas() {
    let proxy = pinned_proxy(PIN).await;
    let f = Fixture::new().await;
    let t = &f.t;
    let client = proxy.connect("routing_pin").await;
    let bystander = proxy.connect("routing_pin_bystander").await;
    assert_replica(
        port(&client, "select inet_server_port()").await,
        "before any write",
    );

    // A write, then reads on the primary until the pin ends, then replicas.
    let sent = Instant::now();
    let p = port(
        &client,
        &format!("update {t} set v = v + 1 where id = 1 returning inet_server_port()"),
    )
    .await;
    let answered = Instant::now();
    assert_primary(p, "the write");
    let read = timed_read(&client).await;
    assert!(
        read.done < sent + PIN,
        "the machine is too slow for this test"
    );
    assert_primary(read.port, "the read right after the write");
    assert_primary(
        port_ext(&client, "select inet_server_port()").await,
        "an extended read right after the write",
    );
    // Only this client is pinned.
    assert_replica(
        port(&bystander, "select inet_server_port()").await,
        "another client's read",
    );
    let back = read_until_unpinned(&client, sent + PIN, 6).await;
    assert!(
        back.done >= sent + PIN,
        "reads returned to a replica {:?} after the write, before the {PIN:?} pin ended",
        back.done - sent
    );
    assert!(
        back.sent <= answered + PIN + Duration::from_secs(2),
        "reads returned to a replica only {:?} after the write",
        back.sent - answered
    );

    // A later write extends the pin.
    port(
        &client,
        &format!("insert into {t} (id) values (30) returning inet_server_port()"),
    )
    .await;
    let first_done = Instant::now();
    tokio::time::sleep_until((first_done + PIN / 2).into()).await;
    let second = Instant::now();
    port(
        &client,
        &format!("update {t} set v = v + 1 where id = 30 returning inet_server_port()"),
    )
    .await;
    // A read after the first pin would have ended, but inside the second.
    tokio::time::sleep_until((first_done + PIN + Duration::from_millis(200)).into()).await;
    let read = timed_read(&client).await;
    if read.done < second + PIN {
        assert_primary(
            read.port,
            "a read after the first pin, inside the extended one",
        );
    } else {
        panic!(
            "the machine is too slow for this test (read {:?} after the second write)",
            read.done - second
        );
    }
    let back = read_until_unpinned(&client, second + PIN, 6).await;
    assert!(back.done >= second + PIN, "the extended pin ended early");

    // A write over the extended protocol pins too.
    let sent = Instant::now();
    let p: i32 = client
        .query_one(
            &format!("update {t} set v = v + 1 where id = 2 returning inet_server_port()"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_primary(p, "extended write");
    let read = timed_read(&client).await;
    assert!(
        read.done < sent + PIN,
        "the machine is too slow for this test"
    );
    assert_primary(read.port, "the read right after an extended write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_after_write_zero_disables_the_pin() {
    let proxy = pinned_proxy(Duration::ZERO).await;
    let f = Fixture::new().await;
    let client = proxy.connect("routing_no_pin").await;
    let before = Counts::of(&proxy);
    for i in 0..10 {
        let p = port(
            &client,
            &format!(
                "update {} set v = v + 1 where id = 1 returning inet_server_port()",
                f.t
            ),
        )
        .await;
        assert_primary(p, "the write");
        assert_replica(
            port(&client, "select inet_server_port()").await,
            &format!("read {i} right after a write, with pin_after_write = 0"),
        );
    }
    assert_eq!(before.since(&proxy).reason(Reason::Pinned), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_pin_only_when_they_wrote() {
    // A long pin: anything pinned stays pinned for the whole test.
    let proxy = pinned_proxy(Duration::from_secs(60)).await;
    let f = Fixture::new().await;
    let t = &f.t;

    // Read-only transaction: no pin.
    let client = proxy.connect("routing_tx_pin_ro").await;
    client.batch_execute("begin read only").await.unwrap();
    port(&client, "select inet_server_port()").await;
    client.batch_execute("commit").await.unwrap();
    assert_replica(
        port(&client, "select inet_server_port()").await,
        "a read after a read-only transaction",
    );

    // Read-write transaction that only read: no pin.
    client.batch_execute("begin").await.unwrap();
    port(
        &client,
        &format!("select inet_server_port() from {t} where id = 1"),
    )
    .await;
    client.batch_execute("commit").await.unwrap();
    assert_replica(
        port(&client, "select inet_server_port()").await,
        "a read after a transaction that only read",
    );

    // Transaction that wrote and committed: pinned.
    for (name, statements) in [
        (
            "simple",
            vec!["begin", "update T set v = v + 1 where id = 1", "commit"],
        ),
        (
            "end",
            vec!["start transaction", "insert into T (id) values (40)", "end"],
        ),
        (
            "one query",
            vec!["begin; update T set v = v + 1 where id = 2; commit"],
        ),
    ] {
        let client = proxy.connect("routing_tx_pin").await;
        assert_replica(port(&client, "select inet_server_port()").await, "before");
        for s in statements {
            client.batch_execute(&s.replace('T', t)).await.unwrap();
        }
        for i in 0..3 {
            assert_primary(
                port(&client, "select inet_server_port()").await,
                &format!("read {i} after a committed write transaction ({name})"),
            );
        }
    }
    // tokio-postgres' transaction API, the write over the extended protocol.
    let mut client = proxy.connect("routing_tx_pin_ext").await;
    assert_replica(port(&client, "select inet_server_port()").await, "before");
    let tx = client.transaction().await.unwrap();
    tx.execute(&format!("update {t} set v = v + 1 where id = 3"), &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_primary(
        port_ext(&client, "select inet_server_port()").await,
        "read after a committed transaction (extended)",
    );
}

/// Preparing a statement is not writing: a client that prepares an UPDATE (without
/// running it) still reads from replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preparing_a_write_does_not_pin() {
    let proxy = pinned_proxy(Duration::from_secs(60)).await;
    let f = Fixture::new().await;
    let client = proxy.connect("routing_prepare_no_pin").await;
    let _update = client
        .prepare(&format!("update {} set v = v + 1 where id = $1", f.t))
        .await
        .unwrap();
    assert_replica(
        port_ext(&client, "select inet_server_port()").await,
        "a read after preparing (not executing) an UPDATE",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_against_replicas_that_are_always_behind() {
    const ROUNDS: i32 = 50;
    let pin = Duration::from_secs(3);
    let proxy = pinned_proxy(pin).await;
    let table = unique("ryw_routing");
    let _cleanup = cleanup(&format!("drop table if exists {table}")).await;
    let setup = app_on_primary().await;
    setup
        .batch_execute(&format!(
            "create table {table} (id int primary key, note text)"
        ))
        .await
        .unwrap();
    replicas_caught_up(30).await;

    let behind = common::ReplicaApplyDelay::hold(Duration::from_secs(2)).await;
    let writer = proxy.connect("routing_ryw_writer").await;
    let watcher = proxy.connect("routing_ryw_watcher").await;
    let mut stale_for_watcher = 0;
    let mut last_write = Instant::now();
    for i in 1..=ROUNDS {
        last_write = Instant::now();
        let p = port(
            &writer,
            &format!("insert into {table} values ({i}, 'n{i}') returning inet_server_port()"),
        )
        .await;
        assert_primary(p, "the write");
        // The writer reads its own write, at once.
        let row = &rows(
            &writer,
            &format!("select inet_server_port(), (select count(*) from {table} where id = {i})"),
        )
        .await[0];
        assert_eq!(
            (row[0].parse::<i32>().unwrap(), row[1].as_str()),
            (primary(), "1"),
            "round {i}: the writer must read its own write on the primary"
        );
        // Someone else reads the same row from a replica.
        let row = &rows(
            &watcher,
            &format!("select inet_server_port(), (select count(*) from {table} where id = {i})"),
        )
        .await[0];
        assert_replica(row[0].parse().unwrap(), "the watcher (never wrote)");
        if row[1] == "0" {
            stale_for_watcher += 1;
        }
    }
    assert!(
        stale_for_watcher > 0,
        "the replicas were never behind: the test proves nothing (is recovery_min_apply_delay applied?)"
    );

    // After the pin, the writer's reads go back to the replicas.
    let back = read_until_unpinned(&writer, last_write + pin, 10).await;
    assert!(back.done >= last_write + pin);
    drop(behind);
    eprintln!("watcher saw {stale_for_watcher}/{ROUNDS} rows missing; writer saw none");
}
