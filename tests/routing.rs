//! Read/write splitting against the real cluster. Every check names the node that served a
//! statement with `inet_server_port()` evaluated inside that same statement (directly, in a
//! `RETURNING` clause, or through a view `w_*` that is `select inet_server_port() as port`,
//! which keeps the SQL free of parentheses so the classifier's fast path is exercised too),
//! or, where PostgreSQL gives no row to look at, by the proxy's routing counters.
//!
//! Covered: every routing rule (autocommit reads, writes, DDL, transactions, read-only
//! transactions, locking reads, write functions, data-modifying CTEs, multi-statement
//! queries, unparsable SQL, the hint, `SET pgsplit.route`, `primary_tables`, the extended
//! protocol and re-used prepared statements, pipelining, session-bound features, settings
//! on replicas), the read-your-writes pin (including against replicas held 2 s behind with
//! `recovery_min_apply_delay`), pgbench TPC-B-like in all query modes, a 90/10 mixed
//! workload, a replica that refuses connections and `fallback = "error"`.
//!
//! Tables and views come from `common::unique`; setup runs straight on the primary as user
//! `app`, so the proxy's counters only see what each test sends through it.

mod common;

use std::collections::BTreeSet;

use common::raw::Message;
use common::routing::*;
use common::{describe, sqlstate, unique};
use futures_util::{SinkExt, TryStreamExt};
use pgsplit::router::Reason;
use tokio_postgres::{Client, SimpleQueryMessage};

// ---------------------------------------------------------------------------------------
// 1. Routing rules
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autocommit_reads_go_to_replicas_and_both_serve() {
    let proxy = routed(|_| {}).await;
    let f = Fixture::new().await;
    // Two clients connected one after the other: each keeps to a replica of its own.
    let client = proxy.connect("routing_reads").await;
    let second = proxy.connect("routing_reads_second").await;
    let before = Counts::of(&proxy);

    let mut seen = BTreeSet::new();
    for (who, client) in [("first", &client), ("second", &second)] {
        let mut own = BTreeSet::new();
        for i in 0..10 {
            let p = port(client, "select inet_server_port()").await;
            assert_replica(p, &format!("simple read {i}"));
            own.insert(p);
            // The fast path (no parentheses): a plain SELECT of a view.
            let p = port(client, &format!("select port from {}", f.w)).await;
            assert_replica(p, &format!("simple read of the view {i}"));
            own.insert(p);
            let p = port(
                client,
                &format!("SELECT port FROM {} , {} WHERE id = 3", f.w, f.t),
            )
            .await;
            assert_replica(p, &format!("join {i}"));
            own.insert(p);
        }
        assert_eq!(
            own.len(),
            1,
            "the {who} client's 30 reads should stay on its replica, saw {own:?}"
        );
        seen.extend(own);
    }
    assert_eq!(
        seen.len(),
        2,
        "the two clients should read from different replicas, saw {seen:?}"
    );
    let delta = before.since(&proxy);
    assert_eq!(
        delta.nodes[0], 0,
        "no read may reach the primary: {delta:?}"
    );
    assert_eq!(delta.reason(Reason::Read), 60, "{delta:?}");
    assert!(
        delta.nodes[1] == 30 && delta.nodes[2] == 30,
        "reads should be shared out evenly: {delta:?}"
    );

    // The extended protocol: tokio-postgres prepares (Parse, Describe), then binds and
    // executes.
    for i in 0..10 {
        let p = port_ext(&client, "select inet_server_port()").await;
        assert_replica(p, &format!("extended read {i}"));
    }
    // A prepared statement executed again and again runs on the client's replica, and
    // on the other one while the client's is busier.
    let stmt = client.prepare("select inet_server_port()").await.unwrap();
    let mut seen = BTreeSet::new();
    let mut busy = None;
    for i in 0..10 {
        if i == 5 {
            let own = *seen.first().expect("a replica");
            busy = Some(common::transaction_on(&proxy, own as u16).await);
        }
        let p: i32 = client.query_one(&stmt, &[]).await.unwrap().get(0);
        assert_replica(p, &format!("prepared read {i}"));
        seen.insert(p);
    }
    drop(busy);
    assert_eq!(seen.len(), 2, "prepared reads on both replicas: {seen:?}");

    // COPY (SELECT ...) TO STDOUT is a read.
    let stream = client
        .copy_out(&format!("copy (select port from {}) to stdout", f.w))
        .await
        .unwrap();
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
    let text: String = chunks
        .iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    assert_replica(text.trim().parse().unwrap(), "COPY (SELECT) TO STDOUT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_ddl_go_to_the_primary() {
    let proxy = routed(|_| {}).await;
    let f = Fixture::new().await;
    let (t, w) = (&f.t, &f.w);
    let client = proxy.connect("routing_writes").await;

    for sql in [
        format!("insert into {t} (id) values (11) returning inet_server_port()"),
        format!("update {t} set v = v + 1 where id = 1 returning inet_server_port()"),
        format!("delete from {t} where id = 11 returning inet_server_port()"),
        format!("INSERT INTO {t} (id) VALUES (12) ON CONFLICT (id) DO UPDATE SET v = 1 RETURNING inet_server_port()"),
        // Data-modifying CTEs: first, second, and referenced only from a subquery.
        format!("with u as (update {t} set v = v + 1 where id = 2 returning id) select inet_server_port() from u"),
        format!("with a as (select 1 as one), b as (insert into {t} (id) values (13) returning id) \
                 select inet_server_port() from a, (select * from b) s"),
        format!("with a as (select id from {t} where id = 3), d as (delete from {t} where id = 13 returning id) \
                 select port from {w}, a where exists (select 1 from d)"),
        // MERGE is a write too.
        format!("merge into {t} using (select 4 as id) s on {t}.id = s.id \
                 when matched then update set v = v + 1; select inet_server_port()"),
    ] {
        let p = port(&client, &sql).await;
        assert_primary(p, &sql);
    }

    // Over the extended protocol too.
    let p = port_ext(
        &client,
        &format!("update {t} set v = v + 1 where id = 5 returning inet_server_port()"),
    )
    .await;
    assert_primary(p, "extended UPDATE");

    // A data-modifying CTE at depth 2 is rejected by PostgreSQL, but only after it was
    // routed: it must have gone to the primary.
    for sql in [
        format!("with a as (with b as (insert into {t} (id) values (14) returning id) select * from b) select * from a"),
        format!("select * from (with b as (insert into {t} (id) values (14) returning id) select * from b) s"),
    ] {
        let e = routed_as_write(&proxy, &client, &sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), "0A000", "{sql}: {}", describe(&e));
    }

    // DDL, SELECT INTO and CREATE TABLE AS: a replica would refuse them (25006), and the
    // tables they fill record where they ran.
    let (ctas, into) = (unique("ctas_routing"), unique("into_routing"));
    let _cleanup = cleanup(&format!(
        "drop table if exists {ctas}; drop table if exists {into}"
    ))
    .await;
    for sql in [
        format!("create table {ctas} as select port from {w}"),
        format!("select port into {into} from {w}"),
        format!("alter table {ctas} add column z int"),
        format!("create index on {ctas} (port)"),
        format!("comment on table {ctas} is 'routing test'"),
        format!("explain analyze insert into {t} (id) values (15)"),
        format!("explain (analyze, costs off) update {t} set v = v where id = 1"),
        "do $$ begin perform 1; end $$".to_string(),
        format!("vacuum {t}"),
        format!("analyze {t}"),
        format!("truncate {ctas}; insert into {ctas} (port) select port from {w}"),
    ] {
        if let Err(e) = routed_as_write(&proxy, &client, &sql).await {
            panic!("{sql}: {}", describe(&e));
        }
    }
    let check = app_on_primary().await;
    for table in [&ctas, &into] {
        let p: i32 = check
            .query_one(&format!("select port from {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_primary(p, &format!("the row written into {table}"));
    }

    // COPY ... FROM STDIN.
    let sink = client
        .copy_in(&format!("copy {t} (id, v) from stdin"))
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"16\t1\n17\t1\n"))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    // tokio-postgres returns at CommandComplete; let the ReadyForQuery behind it arrive.
    settled(&proxy).await;

    for sql in [format!("drop table {ctas}"), format!("drop table {into}")] {
        routed_as_write(&proxy, &client, &sql).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_transactions_run_on_the_primary() {
    let proxy = routed(|_| {}).await;
    let f = Fixture::new().await;
    let mut client = proxy.connect("routing_transactions").await;

    for begin in [
        "begin",
        "BEGIN TRANSACTION",
        "start transaction",
        "begin isolation level repeatable read",
        "begin read write",
    ] {
        client.batch_execute(begin).await.unwrap();
        for i in 0..3 {
            assert_primary(
                port(&client, "select inet_server_port()").await,
                &format!("read {i} after {begin}"),
            );
            assert_primary(
                port(&client, &format!("select port from {}", f.w)).await,
                &format!("view read {i} after {begin}"),
            );
        }
        client.batch_execute("commit").await.unwrap();
        assert_replica(
            port(&client, "select inet_server_port()").await,
            &format!("autocommit read after {begin} ... commit"),
        );
    }

    // tokio-postgres' transaction API (BEGIN, then the extended protocol inside).
    let tx = client.transaction().await.unwrap();
    for i in 0..3 {
        let p: i32 = tx
            .query_one("select inet_server_port()", &[])
            .await
            .unwrap()
            .get(0);
        assert_primary(p, &format!("extended read {i} in a transaction"));
    }
    tx.rollback().await.unwrap();

    // BEGIN and a read in one simple query.
    let rows = rows(&client, "begin; select inet_server_port(); commit").await;
    assert_primary(rows[0][0].parse().unwrap(), "begin; select; commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_transactions_stay_on_one_replica() {
    let proxy = routed(|_| {}).await;
    let f = Fixture::new().await;
    // Two clients connected one after the other (each keeps to a replica of its own),
    // taking turns.
    let client = proxy.connect("routing_read_only").await;
    let second = proxy.connect("routing_read_only_second").await;
    let before = Counts::of(&proxy);

    let begins = [
        "BEGIN READ ONLY",
        "start transaction read only",
        "begin isolation level repeatable read read only",
    ];
    let mut seen = BTreeSet::new();
    for round in 0..4 {
        let c = if round % 2 == 0 { &client } else { &second };
        for begin in begins {
            c.batch_execute(begin).await.unwrap();
            let mut ports = Vec::new();
            for _ in 0..3 {
                ports.push(port(c, "select inet_server_port()").await);
                ports.push(port(c, &format!("select port from {}", f.w)).await);
                ports.push(port_ext(c, "select inet_server_port()").await);
            }
            c.batch_execute("commit").await.unwrap();
            assert_replica(ports[0], &format!("{begin} (round {round})"));
            assert!(
                ports.iter().all(|p| *p == ports[0]),
                "every statement of one read-only transaction must run on the same server: \
                 {begin} gave {ports:?}"
            );
            seen.insert(ports[0]);
        }
    }
    assert_eq!(
        seen.len(),
        2,
        "read-only transactions on both replicas: {seen:?}"
    );

    // tokio-postgres' builder.
    let mut client = client;
    let tx = client
        .build_transaction()
        .read_only(true)
        .start()
        .await
        .unwrap();
    let a: i32 = tx
        .query_one("select inet_server_port()", &[])
        .await
        .unwrap()
        .get(0);
    let b: i32 = tx
        .query_one(&format!("select port from {}", f.w), &[])
        .await
        .unwrap()
        .get(0);
    tx.commit().await.unwrap();
    assert_replica(a, "build_transaction().read_only(true)");
    assert_eq!(a, b, "one read-only transaction, one replica");

    let delta = before.since(&proxy);
    assert_eq!(delta.nodes[0], 0, "nothing on the primary: {delta:?}");
    assert_eq!(
        delta.reason(Reason::ReadOnlyTransaction),
        4 * begins.len() as u64 + 1,
        "{delta:?}"
    );

    // A write inside a read-only transaction fails as PostgreSQL would fail it.
    client.batch_execute("begin read only").await.unwrap();
    let e = simple_error(&client, &format!("update {} set v = 1 where id = 1", f.t)).await;
    assert_eq!(sqlstate(&e), "25006", "{}", describe(&e));
    client.batch_execute("rollback").await.unwrap();
    assert_replica(
        port(&client, "select inet_server_port()").await,
        "a read after the failed read-only transaction",
    );
}

/// A hot standby cannot run SERIALIZABLE transactions ("cannot use serializable mode in a
/// hot standby", 0A000): reads that would run serializable must not be sent to a replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serializable_reads_are_not_sent_to_replicas() {
    let proxy = routed(|_| {}).await;
    let mut problems = Vec::new();
    // Where `statements` ran (the port of the last one), or the first error.
    async fn run(client: &Client, statements: &[&str]) -> Result<i32, String> {
        let mut last = Err("no row".to_string());
        for sql in statements {
            let messages = client
                .simple_query(sql)
                .await
                .map_err(|e| format!("{sql}: {}", describe(&e)))?;
            for m in messages {
                if let SimpleQueryMessage::Row(r) = m {
                    last = Ok(r.get(0).unwrap().parse().unwrap());
                }
            }
        }
        last
    }

    let client = proxy.connect("routing_serializable").await;
    for begin in [
        "begin isolation level serializable read only",
        "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY",
        "begin read only isolation level serializable deferrable",
    ] {
        // On a standby the BEGIN itself fails (the transaction_isolation check).
        match run(&client, &[begin, "select inet_server_port()"]).await {
            Ok(p) if p == primary() => {}
            other => problems.push(format!("{begin}: {other:?}")),
        }
        client.batch_execute("rollback").await.unwrap();
    }
    // Repeatable read is fine on a replica.
    let p = run(
        &client,
        &[
            "begin isolation level repeatable read read only",
            "select inet_server_port()",
        ],
    )
    .await;
    client.batch_execute("rollback").await.unwrap();
    assert_replica(p.unwrap(), "a REPEATABLE READ, READ ONLY transaction");

    for set in [
        "set default_transaction_isolation = 'serializable'",
        "set session characteristics as transaction isolation level serializable",
    ] {
        let client = proxy.connect("routing_serializable_default").await;
        client.batch_execute(set).await.unwrap();
        for statements in [
            &["select inet_server_port()"][..],
            &["begin read only", "select inet_server_port()", "commit"][..],
        ] {
            match run(&client, statements).await {
                Ok(p) if p == primary() => {}
                other => problems.push(format!("{set}, then {statements:?}: {other:?}")),
            }
        }
        match client.query_one("select inet_server_port()", &[]).await {
            Ok(row) if row.get::<_, i32>(0) == primary() => {}
            Ok(row) => problems.push(format!(
                "{set}, then an extended read: ran on {}",
                row.get::<_, i32>(0)
            )),
            Err(e) => problems.push(format!("{set}, then an extended read: {}", describe(&e))),
        }
        // Back to the default: back to the replicas.
        client
            .batch_execute("set default_transaction_isolation = 'read committed'")
            .await
            .unwrap();
        match run(&client, &["select inet_server_port()"]).await {
            Ok(p) if is_replica(p) => {}
            other => problems.push(format!(
                "{set}, then back to read committed: {other:?} (expected a replica)"
            )),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locking_reads_and_write_functions_go_to_the_primary() {
    let bump = unique("bump_routing");
    let bump_cfg = bump.clone();
    let proxy = routed(move |c| c.routing.write_functions = vec![bump_cfg]).await;
    let f = Fixture::new().await;
    let (t, w) = (&f.t, &f.w);
    let seq = unique("seq_routing");
    let _cleanup = cleanup(&format!(
        "drop sequence if exists {seq}; drop function if exists {bump}()"
    ))
    .await;
    let setup = app_on_primary().await;
    setup
        .batch_execute(&format!(
            "create sequence {seq}; create function {bump}() returns int language sql immutable as 'select 1';"
        ))
        .await
        .unwrap();
    replicas_caught_up(30).await;
    let client = proxy.connect("routing_locking").await;

    let lock_key = std::process::id() as i64 * 1000 + 17;
    for sql in [
        format!("select inet_server_port() from {t} where id = 1 for update"),
        format!("select inet_server_port() from {t} where id = 1 for no key update"),
        format!("select inet_server_port() from {t} where id = 1 for share"),
        format!("select inet_server_port() from {t} where id = 1 for key share"),
        format!("select inet_server_port() from {t} where id = 1 for update nowait"),
        format!("select inet_server_port() from {t} where id = 1 for update skip locked"),
        // No parentheses: the fast path must see the locking clause.
        format!("select port from {w}, {t} where {t}.id = 1 for update of {t}"),
        format!("SELECT port FROM {w}, {t} WHERE {t}.id = 1 FOR\n  NO KEY UPDATE OF {t}"),
        format!("select port from {w}, {t} where {t}.id = 1 for /* x */ share of {t}"),
        format!("select port from {w}, {t} where {t}.id = 1 for key\tshare of {t}"),
        // In a subquery.
        format!("select inet_server_port() from (select id from {t} where id = 1 for update) s"),
        // Write functions.
        format!("select inet_server_port(), nextval('{seq}')"),
        format!("select inet_server_port(), setval('{seq}', 100)"),
        format!("select inet_server_port() where nextval('{seq}') > 0"),
        "select inet_server_port(), txid_current()".to_string(),
        format!("select inet_server_port(), pg_advisory_xact_lock({lock_key})"),
        format!("select inet_server_port() from (select pg_try_advisory_xact_lock({lock_key})) s"),
        "select inet_server_port(), pg_current_wal_lsn()".to_string(),
        "select inet_server_port(), pg_notify('routing_test', 'x')".to_string(),
        "SELECT INET_SERVER_PORT(), PG_CATALOG.NEXTVAL('".to_string() + &seq + "')",
        // A configured write function, plain and qualified.
        format!("select inet_server_port(), {bump}()"),
        format!("select inet_server_port() from {t} where id = public.{bump}()"),
    ] {
        assert_primary(port(&client, &sql).await, &sql);
    }

    // set_config in WHERE (a fresh client each time: set_config holds its client on the
    // primary for the rest of its session).
    for sql in [
        "select inet_server_port() where set_config('pgsplit_test.x', '1', true) is not null",
        "select inet_server_port() from (select set_config('pgsplit_test.y', '1', false)) s",
    ] {
        let fresh = proxy.connect("routing_set_config").await;
        assert_replica(
            port(&fresh, "select inet_server_port()").await,
            "a fresh client's read",
        );
        assert_primary(port(&fresh, sql).await, sql);
    }

    // The extended protocol too.
    let p = port_ext(
        &client,
        &format!("select inet_server_port() from {t} where id = 2 for update"),
    )
    .await;
    assert_primary(p, "extended FOR UPDATE");
    let p: i32 = client
        .query_one(&format!("select inet_server_port(), nextval('{seq}')"), &[])
        .await
        .unwrap()
        .get(0);
    assert_primary(p, "extended nextval");

    // ...and the same table read without a lock still goes to a replica.
    assert_replica(
        port(
            &client,
            &format!("select inet_server_port() from {t} where id = 1"),
        )
        .await,
        "the same read without a locking clause",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_statement_queries_run_on_a_replica_only_if_every_statement_may() {
    let proxy = routed(|_| {}).await;
    let f = Fixture::new().await;
    let (t, w) = (&f.t, &f.w);
    let client = proxy.connect("routing_multi").await;

    // A read first, then a write: both on the primary (not routed by the first statement).
    for sql in [
        format!("select inet_server_port(); insert into {t} (id) values (20) returning inet_server_port()"),
        format!("select port from {w}; update {t} set v = v + 1 where id = 1 returning inet_server_port()"),
        format!("select port from {w}; select port from {w} ; select port from {w}, {t} where {t}.id = 1 for update of {t}"),
        format!("update {t} set v = v + 1 where id = 2 returning inet_server_port(); select inet_server_port()"),
        format!("select port from {w}; select nextval(pg_get_serial_sequence('{t}', 'id'))"),
    ] {
        let all = rows(&client, &sql).await;
        let ports: Vec<i32> = all.iter().filter_map(|r| r[0].parse().ok()).collect();
        assert!(!ports.is_empty(), "{sql}: no rows");
        for p in ports {
            assert_primary(p, &sql);
        }
    }
    // Reads only: one replica for all of them.
    let all = rows(
        &client,
        &format!("select inet_server_port(); select port from {w}; select port from {w}"),
    )
    .await;
    let ports: Vec<i32> = all.iter().map(|r| r[0].parse().unwrap()).collect();
    assert_replica(ports[0], "three reads in one query");
    assert!(ports.iter().all(|p| *p == ports[0]), "{ports:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_sql_goes_to_the_primary_and_never_reuses_a_route() {
    let proxy = routed(|_| {}).await;
    // The raw client waits for each ReadyForQuery, as libpq does.
    let mut raw = raw_login(&proxy).await;
    for bad in [
        "selec 1",
        "select 'unterminated",
        "select inet_server_port( from",
        "/* unterminated comment select 1",
        // A bad statement after a good one: PostgreSQL rejects the whole string before
        // running any of it.
        "select inet_server_port(); selec 1",
    ] {
        // The previous statement ran on a replica...
        let (p, errors) = raw_port(&mut raw, "select inet_server_port()").await;
        assert!(errors.is_empty(), "{errors:?}");
        assert_replica(p.unwrap(), &format!("the read before {bad}"));
        // ...the bad one goes to the primary all the same...
        let before = Counts::of(&proxy);
        let (_, errors) = raw_port(&mut raw, bad).await;
        assert!(
            errors.len() == 1 && errors[0].starts_with("42601"),
            "{bad}: {errors:?}"
        );
        let d = before.since(&proxy);
        assert_eq!(
            (d.nodes[0], d.replicas(), d.reason(Reason::Write)),
            (1, 0, 1),
            "{bad} must be routed to the primary as unknown SQL: {d:?}"
        );
        // ...and routing carries on normally.
        let (p, errors) = raw_port(&mut raw, "select inet_server_port()").await;
        assert!(errors.is_empty(), "{errors:?}");
        assert_replica(p.unwrap(), &format!("the read after {bad}"));
    }

    // With tokio-postgres, simple and extended.
    let client = proxy.connect("routing_unparsable").await;
    for bad in ["selec 1", "select inet_server_port( from"] {
        let e = routed_as_write(&proxy, &client, bad).await.unwrap_err();
        assert_eq!(sqlstate(&e), "42601", "{bad}: {}", describe(&e));
        assert_replica(
            port(&client, "select inet_server_port()").await,
            &format!("the read after {bad}"),
        );
        let before = Counts::of(&proxy);
        let e = client.query(bad, &[]).await.unwrap_err();
        assert_eq!(sqlstate(&e), "42601", "extended {bad}: {}", describe(&e));
        settled(&proxy).await;
        let d = before.since(&proxy);
        assert!(
            d.nodes[0] >= 1 && d.replicas() == 0,
            "extended {bad}: must be routed to the primary: {d:?}"
        );
        assert_replica(
            port_ext(&client, "select inet_server_port()").await,
            &format!("the extended read after {bad}"),
        );
    }
}

/// The same rule for SQL that looks like a plain SELECT (no parentheses, so the
/// classifier's fast path sees it) but that PostgreSQL cannot parse: it is not known to be a
/// read, so it goes to the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_plain_selects_go_to_the_primary() {
    let proxy = routed(|_| {}).await;
    let client = proxy.connect("routing_malformed_select").await;
    let mut problems = Vec::new();
    for bad in [
        "select 1 +",
        "select 1 1",
        "select * frm pg_class",
        "select from where",
        "select a, from pg_class",
    ] {
        let before = Counts::of(&proxy);
        let e = simple_error(&client, bad).await;
        assert_eq!(sqlstate(&e), "42601", "{bad}: {}", describe(&e));
        settled(&proxy).await;
        let d = before.since(&proxy);
        if d.nodes[0] != 1 {
            problems.push(format!("{bad:?} was routed to {:?} (by node)", d.nodes));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hint_comment_sends_a_read_to_the_primary() {
    let proxy = routed(|_| {}).await;
    let f = Fixture::new().await;
    let client = proxy.connect("routing_hint").await;
    let before = Counts::of(&proxy);

    for sql in [
        "/* pgsplit:primary */ select inet_server_port()".to_string(),
        "  /* pgsplit:primary */\nselect inet_server_port()".to_string(),
        format!("/* pgsplit:primary */ select port from {}", f.w),
        format!(
            "/* pgsplit:primary */ select port from {}; select port from {}",
            f.w, f.w
        ),
    ] {
        assert_primary(port(&client, &sql).await, &sql);
        // The hint holds for that statement only.
        assert_replica(
            port(&client, "select inet_server_port()").await,
            &format!("the read after {sql:?}"),
        );
    }
    assert_eq!(before.since(&proxy).reason(Reason::Hint), 4);

    // Extended protocol, and a prepared statement with the hint re-used.
    assert_primary(
        port_ext(&client, "/* pgsplit:primary */ select inet_server_port()").await,
        "extended hinted read",
    );
    let hinted = client
        .prepare("/* pgsplit:primary */ select inet_server_port()")
        .await
        .unwrap();
    let plain = client.prepare("select inet_server_port()").await.unwrap();
    for i in 0..5 {
        let p: i32 = client.query_one(&hinted, &[]).await.unwrap().get(0);
        assert_primary(p, &format!("hinted prepared statement, use {i}"));
        let p: i32 = client.query_one(&plain, &[]).await.unwrap().get(0);
        assert_replica(p, &format!("plain prepared statement, use {i}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_pgsplit_route_sends_reads_to_the_primary_until_reset() {
    let proxy = routed(|_| {}).await;
    let client = proxy.connect("routing_route_setting").await;
    let other = proxy.connect("routing_route_setting_other").await;

    assert_eq!(common::show(&client, "show pgsplit.route").await, "auto");
    client
        .batch_execute("SET pgsplit.route = 'primary'")
        .await
        .unwrap();
    assert_eq!(common::show(&client, "SHOW pgsplit.route").await, "primary");
    for i in 0..5 {
        assert_primary(
            port(&client, "select inet_server_port()").await,
            &format!("read {i} with pgsplit.route = primary"),
        );
        assert_primary(
            port_ext(&client, "select inet_server_port()").await,
            &format!("extended read {i} with pgsplit.route = primary"),
        );
    }
    // Read-only transactions too.
    client.batch_execute("begin read only").await.unwrap();
    assert_primary(
        port(&client, "select inet_server_port()").await,
        "read-only transaction with pgsplit.route = primary",
    );
    client.batch_execute("commit").await.unwrap();
    // Another client is not affected.
    assert_replica(
        port(&other, "select inet_server_port()").await,
        "another client",
    );

    client.batch_execute("RESET pgsplit.route").await.unwrap();
    assert_eq!(common::show(&client, "show pgsplit.route").await, "auto");
    assert_replica(
        port(&client, "select inet_server_port()").await,
        "read after RESET pgsplit.route",
    );

    client
        .batch_execute("set session pgsplit.route to primary")
        .await
        .unwrap();
    assert_primary(
        port(&client, "select inet_server_port()").await,
        "SET ... TO primary",
    );
    client
        .batch_execute("set pgsplit.route = auto")
        .await
        .unwrap();
    assert_replica(
        port(&client, "select inet_server_port()").await,
        "SET ... = auto",
    );

    // An invalid value is an error (22023) that changes nothing, and the connection goes on.
    let e = simple_error(&client, "set pgsplit.route = 'replica'").await;
    assert_eq!(sqlstate(&e), "22023", "{}", describe(&e));
    assert_eq!(common::show(&client, "show pgsplit.route").await, "auto");
    assert_replica(
        port(&client, "select inet_server_port()").await,
        "read after the invalid SET",
    );
    // Inside a transaction block too.
    client.batch_execute("begin").await.unwrap();
    let e = simple_error(&client, "set pgsplit.route = 'bogus'").await;
    assert_eq!(sqlstate(&e), "22023", "{}", describe(&e));
    client.batch_execute("rollback").await.unwrap();
    assert_eq!(common::show(&client, "show pgsplit.route").await, "auto");
}

/// pgsplit answers `SET pgsplit.route` itself, but an error it answers inside a transaction
/// block must have PostgreSQL's effect: the transaction is aborted, later statements fail
/// with 25P02 until it ends, and its COMMIT rolls it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_route_command_aborts_the_transaction_like_any_error() {
    let proxy = routed(|_| {}).await;
    let f = Fixture::new().await;
    let client = proxy.connect("routing_route_setting_tx").await;
    let mut problems = Vec::new();
    for (id, how) in [(50, "simple"), (51, "extended")] {
        client.batch_execute("begin").await.unwrap();
        client
            .batch_execute(&format!("insert into {} (id) values ({id})", f.t))
            .await
            .unwrap();
        let refused = match how {
            "simple" => client
                .simple_query("set pgsplit.route = 'bogus'")
                .await
                .err(),
            _ => client
                .execute("set pgsplit.route = 'primary'", &[])
                .await
                .err(),
        };
        let Some(e) = refused else {
            // Accepted over the extended protocol: nothing to abort.
            client.batch_execute("rollback").await.unwrap();
            continue;
        };
        let next = client.simple_query("select 1").await;
        client.batch_execute("commit").await.unwrap();
        let kept: i64 = app_on_primary()
            .await
            .query_one(
                &format!("select count(*) from {} where id = {id}", f.t),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        let next = next
            .map(|_| "success".to_string())
            .map_err(|e| describe(&e));
        if !(matches!(&next, Err(e) if e.contains("25P02")) && kept == 0) {
            problems.push(format!(
                "{how}: after the refused SET ({}) in a transaction block, `select 1` gave \
                 {next:?} (want 25P02) and COMMIT kept {kept} inserted row(s) (want 0)",
                describe(&e)
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Drivers that send everything over the extended protocol (JDBC, asyncpg, Npgsql,
/// tokio-postgres' `execute`) may send `SET pgsplit.route`. pgsplit need not support that,
/// but it must not pretend to: either the setting takes effect, or the client gets an error.
/// Never a success that leaves reads on the replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_pgsplit_route_over_the_extended_protocol_works_or_fails_loudly() {
    let proxy = routed(|_| {}).await;
    let mut problems = Vec::new();
    for in_transaction in [false, true] {
        let client = proxy.connect("routing_route_setting_ext").await;
        let context = if in_transaction {
            "inside a transaction block"
        } else {
            "outside a transaction"
        };
        if in_transaction {
            client.batch_execute("begin").await.unwrap();
        }
        let result = client.execute("SET pgsplit.route = 'primary'", &[]).await;
        if in_transaction {
            client.batch_execute("commit").await.unwrap();
        }
        if let Err(e) = result {
            // Refused: fine, as long as the connection goes on.
            eprintln!(
                "SET pgsplit.route over the extended protocol, {context}: {}",
                describe(&e)
            );
            settled(&proxy).await;
            assert_replica(
                port(&client, "select inet_server_port()").await,
                "a read after the refused SET",
            );
            continue;
        }
        let shown = common::show(&client, "SHOW pgsplit.route").await;
        for (p, how) in [
            (
                port_ext(&client, "select inet_server_port()").await,
                "extended",
            ),
            (port(&client, "select inet_server_port()").await, "simple"),
        ] {
            if p != primary() {
                problems.push(format!(
                    "SET pgsplit.route = 'primary' over the extended protocol {context} \
                     succeeded, yet the {how} read ran on {p} (SHOW pgsplit.route says {shown:?})"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_tables_are_read_on_the_primary() {
    let inventory = unique("inventory");
    let cfg = inventory.clone();
    let proxy = routed(move |c| c.routing.primary_tables = vec![cfg]).await;
    let f = Fixture::new().await;
    let _cleanup = cleanup(&format!("drop table if exists {inventory}")).await;
    let setup = app_on_primary().await;
    setup
        .batch_execute(&format!(
            "create table {inventory} (sku int primary key, stock int); \
             insert into {inventory} values (1, 5), (2, 0);"
        ))
        .await
        .unwrap();
    replicas_caught_up(30).await;
    let client = proxy.connect("routing_primary_tables").await;
    let before = Counts::of(&proxy);

    for sql in [
        format!("select inet_server_port(), stock from {inventory} where sku = 1"),
        format!("select inet_server_port(), stock from public.{inventory} where sku = 1"),
        format!("SELECT port FROM {}, {inventory} WHERE sku = 1", f.w),
        format!(
            "select port from {}, {inventory} i join {} t on t.id = i.sku where sku = 1",
            f.w, f.t
        ),
        format!(
            "select inet_server_port() where exists (select 1 from {inventory} where stock > 0)"
        ),
        format!(
            "with s as (select stock from {inventory}) select inet_server_port() from s limit 1"
        ),
    ] {
        assert_primary(port(&client, &sql).await, &sql);
        assert_primary(port_ext(&client, &sql).await, &format!("extended {sql}"));
    }
    let delta = before.since(&proxy);
    assert!(delta.reason(Reason::PrimaryTable) >= 6, "{delta:?}");
    assert_eq!(delta.replicas(), 0, "{delta:?}");

    // Other tables still go to replicas, with either protocol.
    for sql in [
        format!("select inet_server_port(), v from {} where id = 1", f.t),
        format!("select port from {}", f.w),
        format!(
            "select port from {} where port > 0 /* not {inventory} */",
            f.w
        ),
    ] {
        assert_replica(port(&client, &sql).await, &sql);
        assert_replica(port_ext(&client, &sql).await, &format!("extended {sql}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_route_by_their_own_sql() {
    let proxy = routed(|_| {}).await;
    let f = Fixture::new().await;
    let (t, w) = (&f.t, &f.w);
    let client = proxy.connect("routing_prepared").await;

    // The peers' bug: an UPDATE reaching a replica after a re-used prepared statement.
    let update = client
        .prepare(&format!(
            "update {t} set v = v + 1 where id = $1 returning inet_server_port()"
        ))
        .await
        .unwrap();
    let select = client
        .prepare(&format!(
            "select inet_server_port(), v from {t} where id = $1"
        ))
        .await
        .unwrap();
    let view = client
        .prepare(&format!("select port from {w}"))
        .await
        .unwrap();
    // Halfway, the client's replica is made busier (a read-only transaction held open on
    // it): its reads go to the other replica, where the statements are not prepared yet.
    let mut replicas_seen = BTreeSet::new();
    let mut busy = None;
    for i in 0..30 {
        if i == 15 {
            let own = *replicas_seen.first().expect("a replica");
            busy = Some(common::transaction_on(&proxy, own as u16).await);
        }
        let id = 1 + i % 10;
        let p: i32 = client.query_one(&select, &[&id]).await.unwrap().get(0);
        assert_replica(p, &format!("prepared SELECT, use {i}"));
        replicas_seen.insert(p);
        let p: i32 = client.query_one(&update, &[&id]).await.unwrap().get(0);
        assert_primary(p, &format!("prepared UPDATE, use {i}"));
        let p: i32 = client.query_one(&view, &[]).await.unwrap().get(0);
        assert_replica(p, &format!("prepared view read, use {i}"));
        replicas_seen.insert(p);
    }
    drop(busy);
    assert_eq!(replicas_seen.len(), 2, "{replicas_seen:?}");
    // All 30 updates landed.
    let check = app_on_primary().await;
    let total: i64 = check
        .query_one(&format!("select sum(v) from {t}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 30);

    // Raw protocol: statements parsed in earlier batches, bound by name later.
    let mut raw = raw_login(&proxy).await;
    let mut setup = parse_msg(
        "w",
        &format!("update {t} set v = v + 1 where id = 1 returning inet_server_port()"),
    );
    setup.extend(parse_msg("r", &format!("select port from {w}")));
    setup.extend(sync_msg());
    raw.write_raw(&setup).await.unwrap();
    let got = read_batch(&mut raw).await;
    assert!(got.errors.is_empty(), "{got:?}");
    for i in 0..10 {
        for (name, want_primary) in [("r", false), ("w", true), ("r", false)] {
            let mut batch = bind_msg(name);
            batch.extend(execute_msg());
            batch.extend(sync_msg());
            raw.write_raw(&batch).await.unwrap();
            let got = read_batch(&mut raw).await;
            assert!(got.errors.is_empty(), "Bind {name} (round {i}): {got:?}");
            let p: i32 = got.values[0].parse().unwrap();
            if want_primary {
                assert_primary(p, &format!("Bind of the UPDATE (round {i})"));
            } else {
                assert_replica(p, &format!("Bind of the SELECT (round {i})"));
            }
        }
    }
    // Both in one batch (one Sync): one implicit transaction, on the primary.
    let mut batch = bind_msg("r");
    batch.extend(execute_msg());
    batch.extend(bind_msg("w"));
    batch.extend(execute_msg());
    batch.extend(sync_msg());
    raw.write_raw(&batch).await.unwrap();
    let got = read_batch(&mut raw).await;
    assert!(got.errors.is_empty(), "{got:?}");
    assert_eq!(got.values.len(), 2, "{got:?}");
    for v in &got.values {
        assert_primary(v.parse().unwrap(), "Bind r + Bind w in one batch");
    }
    // Unnamed statements: Parse, Bind, Execute in one batch.
    let mut batch = parse_msg(
        "",
        &format!("update {t} set v = v + 1 where id = 2 returning inet_server_port()"),
    );
    batch.extend(bind_msg(""));
    batch.extend(execute_msg());
    batch.extend(sync_msg());
    raw.write_raw(&batch).await.unwrap();
    let got = read_batch(&mut raw).await;
    assert!(got.errors.is_empty(), "{got:?}");
    assert_primary(got.values[0].parse().unwrap(), "unnamed UPDATE");
}

/// A client that sends its next statement before the previous one's results came back
/// (libpq pipeline mode, JDBC batches, tokio-postgres with concurrent queries): each
/// statement must still run where its own SQL says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_write_after_a_replica_read_runs_on_the_primary() {
    let proxy = routed(|_| {}).await;
    let f = Fixture::new().await;
    let (t, w) = (&f.t, &f.w);

    // Extended protocol: two batches (two Syncs) in one write.
    let mut raw = raw_login(&proxy).await;
    let mut setup = parse_msg(
        "w",
        &format!("update {t} set v = v + 1 where id = 1 returning inet_server_port()"),
    );
    setup.extend(parse_msg("r", &format!("select port from {w}")));
    setup.extend(sync_msg());
    raw.write_raw(&setup).await.unwrap();
    read_batch(&mut raw).await;
    let mut problems = Vec::new();
    for i in 0..5 {
        let mut both = Vec::new();
        for name in ["r", "w"] {
            both.extend(bind_msg(name));
            both.extend(execute_msg());
            both.extend(sync_msg());
        }
        raw.write_raw(&both).await.unwrap();
        let read = read_batch(&mut raw).await;
        let write = read_batch(&mut raw).await;
        if !read.errors.is_empty()
            || read.values.first().map(|p| is_replica(p.parse().unwrap())) != Some(true)
        {
            problems.push(format!("round {i}: pipelined read: {read:?}"));
        }
        if !write.errors.is_empty()
            || write.values.first().map(|p| p.parse::<i32>().unwrap()) != Some(primary())
        {
            problems.push(format!(
                "round {i}: pipelined UPDATE after the read: {write:?}"
            ));
        }
    }

    // Simple protocol: two Query messages in one write.
    for i in 0..5 {
        let mut both = query_msg(&format!("select port from {w}"));
        both.extend(query_msg(&format!(
            "update {t} set v = v + 1 where id = 2 returning inet_server_port()"
        )));
        raw.write_raw(&both).await.unwrap();
        let _read = read_batch(&mut raw).await;
        let write = read_batch(&mut raw).await;
        if !write.errors.is_empty()
            || write.values.first().map(|p| p.parse::<i32>().unwrap()) != Some(primary())
        {
            problems.push(format!(
                "round {i}: pipelined simple UPDATE after a read: {write:?}"
            ));
        }
    }

    // tokio-postgres pipelines concurrent queries on one connection.
    let client = proxy.connect("routing_pipelined").await;
    let select = client
        .prepare(&format!("select port from {w}"))
        .await
        .unwrap();
    let update = client
        .prepare(&format!(
            "update {t} set v = v + 1 where id = 3 returning inet_server_port()"
        ))
        .await
        .unwrap();
    for i in 0..5 {
        let (r, u) = tokio::join!(
            client.query_one(&select, &[]),
            client.query_one(&update, &[])
        );
        match u {
            Ok(row) if row.get::<_, i32>(0) == primary() => {}
            Ok(row) => problems.push(format!(
                "round {i}: tokio-postgres pipelined UPDATE ran on {}",
                row.get::<_, i32>(0)
            )),
            Err(e) => problems.push(format!(
                "round {i}: tokio-postgres pipelined UPDATE failed: {}",
                describe(&e)
            )),
        }
        if let Err(e) = r {
            problems.push(format!(
                "round {i}: pipelined read failed: {}",
                describe(&e)
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// tokio-postgres returns an error to the application as soon as the ErrorResponse
/// arrives; the ReadyForQuery behind it may still be on its way when the application sends
/// its next statement. A read that failed on a replica followed by a write must not send
/// the write to that replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_sent_right_after_an_error_is_routed_by_its_own_sql() {
    let proxy = routed(|_| {}).await;
    let f = Fixture::new().await;
    let (t, w) = (&f.t, &f.w);
    let client = proxy.connect("routing_after_error").await;
    let update_sql = format!("update {t} set v = v + 1 where id = 1 returning inet_server_port()");
    let update = client.prepare(&update_sql).await.unwrap();
    let mut problems = Vec::new();
    for i in 0..30 {
        let e = simple_error(&client, &format!("select port / 0 from {w}")).await;
        assert_eq!(sqlstate(&e), "22012", "{}", describe(&e));
        match client.simple_query(&update_sql).await {
            Ok(_) => {}
            Err(e) => problems.push(format!("round {i}, simple: {}", describe(&e))),
        }
        let e = client
            .query(&format!("select port / 0 from {w}"), &[])
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "22012", "{}", describe(&e));
        match client.query_one(&update, &[]).await {
            Ok(row) if row.get::<_, i32>(0) == primary() => {}
            Ok(row) => problems.push(format!(
                "round {i}, extended: ran on {}",
                row.get::<_, i32>(0)
            )),
            Err(e) => problems.push(format!("round {i}, extended: {}", describe(&e))),
        }
    }
    assert!(
        problems.is_empty(),
        "{} of 60 writes failed after a failed replica read:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// A FunctionCall message (libpq's PQfn, used by its large-object API: lo_creat, lo_write,
/// ...) names a function by OID, which pgsplit does not look up: it runs on the primary,
/// also when it arrives while a replica still owes the replies to a read before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_calls_run_on_the_primary() {
    let proxy = routed(|_| {}).await;
    let f = Fixture::new().await;
    let mut raw = raw_login(&proxy).await;
    let (oid, _) = raw_port(
        &mut raw,
        "select 'inet_server_port()'::regprocedure::oid::int4",
    )
    .await;
    let mut call = Vec::new();
    call.extend_from_slice(&oid.unwrap().to_be_bytes());
    call.extend_from_slice(&0i16.to_be_bytes()); // argument formats
    call.extend_from_slice(&0i16.to_be_bytes()); // arguments
    call.extend_from_slice(&0i16.to_be_bytes()); // text result
    let call = common::raw::message(b'F', &call);
    let result_port = |answer: &[Message]| -> Result<i32, String> {
        match answer.first() {
            Some(m) if m.tag == b'V' => Ok(String::from_utf8_lossy(&m.body[4..]).parse().unwrap()),
            other => Err(format!("{other:?}")),
        }
    };
    for i in 0..3 {
        raw.write_raw(&call).await.unwrap();
        let answer = raw.until_ready().await;
        assert_eq!(result_port(&answer), Ok(primary()), "FunctionCall {i}");
    }
    let mut problems = Vec::new();
    for i in 0..5 {
        let mut both = query_msg(&format!("select port from {}", f.w));
        both.extend_from_slice(&call);
        raw.write_raw(&both).await.unwrap();
        raw.until_ready().await;
        let answer = raw.until_ready().await;
        match result_port(&answer) {
            Ok(p) if p == primary() => {}
            other => problems.push(format!("round {i}: pipelined FunctionCall: {other:?}")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_bound_features_hold_the_client_on_the_primary() {
    let proxy = routed(|_| {}).await;
    let key = std::process::id() as i64 * 1000 + 29;
    let tmp = unique("tmp_routing");
    let features: Vec<(String, Option<String>)> = vec![
        (format!("listen {}", unique("chan")), None),
        (
            format!("create temp table {tmp} (i int); insert into {tmp} values (1)"),
            Some(format!("select inet_server_port() from {tmp}")),
        ),
        (format!("select pg_advisory_lock({key})"), None),
        (
            "prepare routing_p as select inet_server_port()".to_string(),
            Some("execute routing_p".to_string()),
        ),
        (
            "declare routing_c cursor with hold for select inet_server_port() from generate_series(1, 3)"
                .to_string(),
            Some("fetch routing_c".to_string()),
        ),
    ];
    for (feature, use_it) in features {
        let client = proxy.connect("routing_session_bound").await;
        assert_replica(
            port(&client, "select inet_server_port()").await,
            &format!("a read before {feature}"),
        );
        client
            .batch_execute(&feature)
            .await
            .unwrap_or_else(|e| panic!("{feature}: {}", describe(&e)));
        for i in 0..3 {
            if let Some(sql) = &use_it {
                assert_primary(port(&client, sql).await, &format!("{sql} after {feature}"));
            }
            assert_primary(
                port(&client, "select inet_server_port()").await,
                &format!("read {i} after {feature}"),
            );
            assert_primary(
                port_ext(&client, "select inet_server_port()").await,
                &format!("extended read {i} after {feature}"),
            );
        }
        if feature.contains("advisory") {
            client
                .batch_execute(&format!("select pg_advisory_unlock({key})"))
                .await
                .unwrap();
        }
        // Another client is not held.
        let other = proxy.connect("routing_session_bound_other").await;
        assert_replica(
            port(&other, "select inet_server_port()").await,
            &format!("another client, after {feature}"),
        );
    }
}

/// A statement that needs a real session, inside a read-only transaction that runs on a
/// replica, fails with 0A000 (simple and extended protocol) instead of pinning the client
/// to that replica: the transaction is aborted, and afterwards the client reads from
/// replicas and writes on the primary as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_bound_statement_on_a_replica_fails_instead_of_stranding_the_client() {
    let proxy = routed(|_| {}).await;
    let key = std::process::id() as i64 * 1000 + 31;
    let client = proxy.connect("routing_stranded").await;
    for (what, extended) in [
        (
            "declare routing_stranded cursor with hold for select 1",
            false,
        ),
        ("select pg_advisory_lock($1)", true),
        ("listen routing_stranded", false),
    ] {
        client.batch_execute("begin read only").await.unwrap();
        assert_replica(
            port(&client, "select inet_server_port()").await,
            "the read-only transaction",
        );
        let e = if extended {
            client.query(what, &[&key]).await.unwrap_err()
        } else {
            client.batch_execute(what).await.unwrap_err()
        };
        assert_eq!(common::sqlstate(&e), "0A000", "{what}: {}", describe(&e));
        // The transaction is aborted, as after any error.
        let e = client.batch_execute("select 1").await.unwrap_err();
        assert_eq!(common::sqlstate(&e), "25P02", "{what}: {}", describe(&e));
        client.batch_execute("rollback").await.unwrap();
        assert_replica(
            port(&client, "select inet_server_port()").await,
            &format!("a read after {what} failed"),
        );
        assert_primary(
            port(&client, "select inet_server_port() from txid_current()").await,
            &format!("a write after {what} failed"),
        );
    }
}

/// A read the classifier cannot see through (a view whose column calls a function that
/// writes) goes to a replica, which refuses it with 25006. pgsplit runs it again on the
/// primary, once, and the client only sees the primary's answer; its write happened once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_refused_by_a_replica_runs_again_on_the_primary() {
    let proxy = routed(|_| {}).await;
    let schema = unique("s_refused");
    let _cleanup = cleanup(&format!("drop schema if exists {schema} cascade")).await;
    app_on_primary()
        .await
        .batch_execute(&format!(
            "create schema {schema}; create table {schema}.hits (port int); \
             create function {schema}.hit() returns int volatile language plpgsql as $$ \
             begin insert into {schema}.hits values (inet_server_port()); \
             return inet_server_port(); end $$; \
             create view {schema}.looks_like_a_read as select {schema}.hit() as port;"
        ))
        .await
        .unwrap();
    replicas_caught_up(30).await;
    let client = proxy.connect("routing_refused_read").await;
    assert_replica(
        port(&client, "select inet_server_port()").await,
        "a plain read before",
    );
    for i in 0..3 {
        let sql = format!("select port from {schema}.looks_like_a_read");
        assert_primary(port(&client, &sql).await, &format!("retried read {i}"));
    }
    let hits = app_on_primary()
        .await
        .query_one(
            &format!("select count(*), min(port) from {schema}.hits"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(hits.get::<_, i64>(0), 3, "each read wrote once");
    assert_eq!(hits.get::<_, i32>(1), primary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_settings_follow_the_client_to_replicas() {
    let proxy = routed(|_| {}).await;
    let schema = unique("s_routing");
    let _cleanup = cleanup(&format!("drop schema if exists {schema} cascade")).await;
    let setup = app_on_primary().await;
    setup
        .batch_execute(&format!(
            "create schema {schema}; create table {schema}.only_here (x int); \
             insert into {schema}.only_here values (42);"
        ))
        .await
        .unwrap();
    replicas_caught_up(30).await;

    let client = proxy.connect("routing_settings").await;
    client
        .batch_execute(&format!(
            "set search_path = {schema}, public; set statement_timeout = '12345ms'"
        ))
        .await
        .unwrap();
    // Halfway, the client's replica is made busier (a read-only transaction held open on
    // it): its reads go to the other replica, with its settings.
    let mut seen = BTreeSet::new();
    let mut busy = None;
    for i in 0..6 {
        if i == 3 {
            let own = *seen.first().expect("a replica");
            busy = Some(common::transaction_on(&proxy, own as u16).await);
        }
        let row = &rows(
            &client,
            "select inet_server_port(), x, current_setting('statement_timeout') from only_here",
        )
        .await[0];
        let p: i32 = row[0].parse().unwrap();
        assert_replica(p, &format!("read {i} with search_path set"));
        assert_eq!(row[1], "42");
        assert_eq!(row[2], "12345ms", "statement_timeout on {p}");
        seen.insert(p);
        let row = client
            .query_one("select inet_server_port(), x from only_here", &[])
            .await
            .unwrap_or_else(|e| panic!("extended read with search_path: {}", describe(&e)));
        assert_replica(row.get(0), "extended read with search_path set");
        seen.insert(row.get(0));
    }
    drop(busy);
    assert_eq!(seen.len(), 2, "{seen:?}");
    // Another client on the same server connections does not see them.
    let other = proxy.connect("routing_settings_other").await;
    for _ in 0..4 {
        let row = &rows(
            &other,
            "select inet_server_port(), current_setting('statement_timeout'), current_setting('search_path')",
        )
        .await[0];
        assert_replica(row[0].parse().unwrap(), "the other client's read");
        assert_ne!(row[1], "12345ms", "a setting leaked on {}", row[0]);
        assert!(
            !row[2].contains(&schema),
            "search_path leaked on {}",
            row[0]
        );
    }
}
