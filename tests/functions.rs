//! User functions against the real cluster: pgsplit reads their volatility from the
//! primary's catalog, so a `SELECT` calling a volatile function that writes runs on the
//! primary (no `routing.write_functions` entry needed), a stable one still runs on a
//! replica, a function created after the proxy started is picked up,
//! `routing.read_only_functions` / `routing.write_functions` override the catalog, and the
//! session state a volatile function (or a trigger or rule fired by a write) leaves does not
//! reach the next client.
//!
//! Functions and tables are created by the superuser straight on the primary, with names
//! from `common::unique`. Each check names the node that served a statement with
//! `inet_server_port()` evaluated inside that statement.

mod common;

use std::time::Duration;

use common::{node_port, primary_port, unique, TestProxy, SUPERUSER_PASSWORD};
use pgsplit::config::Config;
use tokio_postgres::Client;

/// Drops what a test created when the test ends, also when it panics.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let sql = ["set lock_timeout = '5s'", self.0.as_str()];
        if !common::psql_sync(primary_port(), "postgres", SUPERUSER_PASSWORD, &sql) {
            eprintln!("cleanup failed: {}", self.0);
        }
    }
}

/// Runs `create_sql` as the superuser on the primary and waits until both replicas have
/// the functions named in `functions`; `drop_sql` undoes it when the returned guard drops.
async fn create(create_sql: &str, drop_sql: &str, functions: &[&str]) -> Cleanup {
    let primary = common::superuser().await;
    primary.batch_execute(drop_sql).await.unwrap();
    let cleanup = Cleanup(drop_sql.to_string());
    primary.batch_execute(create_sql).await.unwrap();
    for replica in ["replica1", "replica2"] {
        let client = common::replica_superuser(node_port(replica)).await;
        let names: Vec<String> = functions.iter().map(|f| f.to_string()).collect();
        let sql = "select count(distinct proname)::int from pg_proc where proname = any($1)";
        common::wait_until(30, &format!("{replica} has {functions:?}"), || {
            let (client, names) = (&client, &names);
            async move {
                client
                    .query_one(sql, &[names])
                    .await
                    .map(|row| row.get::<_, i32>(0) as usize == names.len())
                    .unwrap_or(false)
            }
        })
        .await;
    }
    cleanup
}

/// A routing proxy (no read-your-writes pin) whose function catalog has been loaded.
async fn routed(adjust: impl FnOnce(&mut Config)) -> TestProxy {
    let proxy = TestProxy::start(|c| {
        c.routing.enabled = true;
        c.routing.read_your_writes = pgsplit::config::ReadYourWrites::Off;
        adjust(c);
    })
    .await;
    proxy.wait_for_catalog().await;
    proxy
}

/// The port that served `sql` (its first column), by the simple protocol.
async fn simple_port(client: &Client, sql: &str) -> u16 {
    common::show(client, sql)
        .await
        .parse()
        .unwrap_or_else(|_| panic!("{sql}: not a port"))
}

/// The port that served `sql` (its first column), by the simple and by the extended
/// protocol; both must agree.
async fn port(client: &Client, sql: &str) -> u16 {
    let simple = simple_port(client, sql).await;
    let extended: i32 = client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", common::describe(&e)))
        .get(0);
    assert_eq!(
        i32::from(simple),
        extended,
        "{sql}: simple and extended protocol"
    );
    simple
}

fn is_replica(port: u16) -> bool {
    [node_port("replica1"), node_port("replica2")].contains(&port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volatile_functions_run_on_the_primary_and_stable_ones_on_a_replica() {
    let (t, add, price, pure) = (
        unique("t_fn"),
        unique("fn_add"),
        unique("fn_price"),
        unique("fn_pure"),
    );
    let _cleanup = create(
        &format!(
            "create table {t} (id serial primary key, port int);
             grant select, insert on {t} to app;
             grant usage on sequence {t}_id_seq to app;
             create function {add}() returns int language plpgsql volatile as $$
                 begin insert into {t} (port) values (inet_server_port()); return 1; end $$;
             create function {price}(int) returns int language sql stable as 'select $1 * 2';
             create function {pure}() returns int language sql immutable as 'select 1';"
        ),
        &format!(
            "drop function if exists {add}(); drop function if exists {price}(int);
             drop function if exists {pure}(); drop table if exists {t}"
        ),
        &[&add, &price, &pure],
    )
    .await;
    let proxy = routed(|_| {}).await;
    let client = proxy.connect("functions_volatility").await;

    // No write_functions entry: the catalog says it is volatile.
    for sql in [
        format!("select inet_server_port(), {add}()"),
        format!("select inet_server_port() from (select public.{add}()) s"),
        format!(
            "SELECT INET_SERVER_PORT() WHERE {}() = 1",
            add.to_uppercase()
        ),
    ] {
        assert_eq!(port(&client, &sql).await, primary_port(), "{sql}");
    }
    let written: i64 = common::superuser()
        .await
        .query_one(&format!("select count(*) from {t}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        written, 6,
        "each call inserted once (simple and extended protocol)"
    );

    for sql in [
        format!("select inet_server_port(), {price}(21)"),
        format!("select inet_server_port() where {price}(1) = 2 and {pure}() = 1"),
        // Built-ins that are not listed stay reads.
        "select inet_server_port(), now(), random(), pg_is_in_recovery()".to_string(),
    ] {
        let served = port(&client, &sql).await;
        assert!(
            is_replica(served),
            "{sql}: served by {served}, not a replica"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_created_after_start_are_picked_up() {
    let proxy = routed(|_| {}).await;
    let client = proxy.connect("functions_later").await;
    let (t, later_add, later_price) = (
        unique("t_fn_later"),
        unique("fn_later_add"),
        unique("fn_later_price"),
    );
    let _cleanup = create(
        &format!(
            "create table {t} (id int);
             grant insert on {t} to app;
             create function {later_add}() returns int language sql volatile as
                 'insert into {t} values (1) returning inet_server_port()';
             create function {later_price}(int) returns int language sql stable as 'select $1';"
        ),
        &format!(
            "drop function if exists {later_add}(); drop function if exists {later_price}(int);
             drop table if exists {t}"
        ),
        &[&later_add, &later_price],
    )
    .await;

    // Not in the catalog yet: the primary, which has it. The call also asks for a reload
    // (so only one call here: the next may already see the new catalog).
    let sql = format!("select inet_server_port(), {later_price}(1)");
    assert_eq!(simple_port(&client, &sql).await, primary_port(), "{sql}");
    let add = format!("select {later_add}()");
    assert_eq!(port(&client, &add).await, primary_port(), "{add}");
    // Picked up well before the minute's reload.
    let generation = proxy.proxy.routing().classifier.catalog_generation();
    let start = std::time::Instant::now();
    loop {
        if is_replica(simple_port(&client, &sql).await) {
            assert!(is_replica(port(&client, &sql).await), "{sql}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{sql}: still not on a replica after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(proxy.proxy.routing().classifier.catalog_generation() > generation);
    assert_eq!(port(&client, &add).await, primary_port(), "{add}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_lists_override_the_catalog() {
    let (safe, volatile, stable_writer) = (
        unique("fn_safe"),
        unique("fn_volatile"),
        unique("fn_stable_writer"),
    );
    let _cleanup = create(
        &format!(
            "create function {safe}() returns int language sql volatile as 'select 1';
             create function {volatile}() returns int language sql volatile as 'select 1';
             create function {stable_writer}() returns int language sql stable as 'select 1';"
        ),
        &format!(
            "drop function if exists {safe}(); drop function if exists {volatile}();
             drop function if exists {stable_writer}()"
        ),
        &[&safe, &volatile, &stable_writer],
    )
    .await;
    let (safe_cfg, writer_cfg) = (format!("public.{safe}"), stable_writer.clone());
    let proxy = routed(move |c| {
        c.routing.read_only_functions.push(safe_cfg);
        c.routing.write_functions.push(writer_cfg);
    })
    .await;
    let client = proxy.connect("functions_lists").await;

    let sql = format!("select inet_server_port(), {safe}()");
    let served = port(&client, &sql).await;
    assert!(
        is_replica(served),
        "{sql}: served by {served}, not a replica"
    );
    for sql in [
        format!("select inet_server_port(), {volatile}()"),
        format!("select inet_server_port(), {stable_writer}()"),
    ] {
        assert_eq!(port(&client, &sql).await, primary_port(), "{sql}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_left_by_a_volatile_function_does_not_reach_the_next_client() {
    let leak = unique("fn_leak");
    let _cleanup = create(
        &format!(
            "create function {leak}() returns int language plpgsql volatile as $$
                 begin perform set_config('pgsplit_test.leak', 'yes', false); return 1; end $$;"
        ),
        &format!("drop function if exists {leak}()"),
        &[&leak],
    )
    .await;
    // No routing: one primary connection shared by both clients.
    let proxy = TestProxy::start(|c| c.pool.max_size = 1).await;
    proxy.wait_for_catalog().await;
    let a = proxy.connect("functions_leak_a").await;
    let b = proxy.connect("functions_leak_b").await;
    let setting = "select coalesce(current_setting('pgsplit_test.leak', true), '')";
    assert_eq!(common::show(&b, setting).await, "");
    assert_eq!(common::show(&a, &format!("select {leak}()")).await, "1");
    assert_eq!(
        common::show(&b, setting).await,
        "",
        "the setting made inside {leak}() reached another client"
    );
}

/// Writes that fire user code the statement does not show: a foreign key's cascade into a
/// table with a trigger, a partition's own trigger, a rule, an updatable view. The catalog
/// names those relations, so each such write resets its connection, and a write to a plain
/// table keeps the fast path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_that_fire_triggers_or_rules_do_not_leak() {
    let s = unique("fn_triggers");
    let _cleanup = create(
        &format!(
            "create schema {s};
             grant usage on schema {s} to public;
             create function {s}.set_work_mem() returns trigger language plpgsql as $$
                 begin perform set_config('work_mem', '7MB', false); return null; end $$;
             create table {s}.parent (id int primary key);
             create table {s}.child (id int references {s}.parent on delete cascade);
             create trigger t after delete on {s}.child
                 for each row execute function {s}.set_work_mem();
             create table {s}.measured (a int) partition by range (a);
             create table {s}.measured_low partition of {s}.measured for values from (0) to (100);
             create trigger t after insert on {s}.measured_low
                 for each row execute function {s}.set_work_mem();
             create table {s}.ruled (a int);
             create rule r as on insert to {s}.ruled
                 do also select set_config('work_mem', '7MB', false);
             create table {s}.plain (a int);
             create view {s}.plain_view as select * from {s}.plain;
             grant all on all tables in schema {s} to public;
             insert into {s}.parent values (1), (2);
             insert into {s}.child values (1), (2);"
        ),
        &format!("drop schema if exists {s} cascade"),
        &[],
    )
    .await;
    // No routing: one primary connection shared by both clients.
    let proxy = TestProxy::start(|c| c.pool.max_size = 1).await;
    proxy.wait_for_catalog().await;
    let classifier = &proxy.proxy.routing().classifier;
    let firing = [
        format!("delete from {s}.parent where id = 1"),
        format!("insert into {s}.measured values (1)"),
        format!("insert into {s}.ruled values (1)"),
        format!("update {s}.plain_view set a = 1"),
    ];
    for sql in &firing {
        assert!(classifier.classify(sql.as_bytes()).leaves_state, "{sql}");
    }
    for sql in [
        format!("insert into {s}.plain values (1)"),
        format!("select * from {s}.child"),
    ] {
        assert!(!classifier.classify(sql.as_bytes()).leaves_state, "{sql}");
    }
    let fresh = "select (setting = reset_val)::text from pg_settings where name = 'work_mem'";
    for sql in &firing {
        let a = proxy.connect("functions_trigger_a").await;
        let b = proxy.connect("functions_trigger_b").await;
        assert_eq!(common::show(&b, fresh).await, "true");
        a.batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {}", common::describe(&e)));
        assert_eq!(
            common::show(&b, fresh).await,
            "true",
            "the setting made by {sql} reached another client"
        );
    }
}
