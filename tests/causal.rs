//! Read-your-writes by LSN (`routing.read_your_writes = "lsn"`, the default) end to end:
//! a client that wrote reads its write on the primary until a replica has replayed it, then
//! from a replica again; a client that never wrote reads from replicas all along; how soon
//! after a commit a writer's reads return to a replica on a healthy cluster; and the first
//! read after a start goes to a replica (every node is checked before clients are served);
//! causal tokens: sent as ParameterStatus after a write, presented on other connections
//! (SET, a leading comment, the startup option) and on other pgsplit instances sharing the
//! key, refused with 22023 when forged.

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

/// The client's causal token, from `SHOW pgsplit.causal_token` ("" when it has none).
async fn show_token(client: &Client) -> String {
    let rows = client
        .simple_query("show pgsplit.causal_token")
        .await
        .unwrap();
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .expect("a row")
}

/// Reads the row with a statement that carries `token` in its leading comment.
async fn read_with_comment(client: &Client, table: &str, token: &str) -> (i32, u16) {
    let row = client
        .query_one(
            &format!(
                "/* pgsplit:causal_token={token} */ select v, inet_server_port() from {table} where id = 1"
            ),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{}", common::describe(&e)));
    (row.get(0), row.get::<_, i32>(1) as u16)
}

/// A proxy with routing whose causal tokens are signed with `key`.
async fn proxy_with_key(key: &str) -> TestProxy {
    TestProxy::start(|c| {
        c.routing.enabled = true;
        c.routing.causal_key = Some(key.to_owned());
    })
    .await
}

/// With replay paused on both replicas, a write's token carries it to fresh connections in
/// each of the three ways a client can present it, while a connection with no token still
/// reads (stale) from a replica; a forged token is refused with 22023 and the connection
/// stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_carries_a_write_to_other_connections_while_replay_is_paused() {
    let proxy = TestProxy::start(|c| c.routing.enabled = true).await;
    let table = Table::new().await;
    let t = &table.0;
    replicas_have(&proxy, t, 0).await;
    let paused = common::ReplayPaused::hold().await;

    let writer = proxy.connect("token_writer").await;
    assert_eq!(show_token(&writer).await, "", "no write, no token");
    write(&writer, t, 1).await;
    let token = show_token(&writer).await;
    assert!(!token.is_empty(), "a client that wrote has a token");
    let primary = primary_port();

    // No token: a replica, which has not replayed the write.
    let bystander = proxy.connect("token_bystander").await;
    let (v, port) = read(&bystander, t).await;
    assert!(is_replica(port) && v == 0, "read {v} on port {port}");

    // 1. SET: the connection's reads see the write from now on.
    let set = proxy.connect("token_set").await;
    set.batch_execute(&format!("set pgsplit.causal_token = '{token}'"))
        .await
        .unwrap();
    assert_eq!(read(&set, t).await, (1, primary));
    assert_eq!(read(&set, t).await, (1, primary));
    assert_eq!(show_token(&set).await, token, "SHOW gives the token back");

    // 2. A comment: that statement sees the write; the next, without one, does not wait.
    let comment = proxy.connect("token_comment").await;
    assert_eq!(read_with_comment(&comment, t, &token).await, (1, primary));
    let (v, port) = read(&comment, t).await;
    assert!(is_replica(port) && v == 0, "read {v} on port {port}");

    // 3. The startup option.
    let mut config = proxy.pg_config("token_startup");
    config.options(format!("-c pgsplit.causal_token={token}"));
    let startup = common::connect_with(&config).await;
    assert_eq!(read(&startup, t).await, (1, primary));

    // A forged token: 22023, and the connection stays usable.
    // (The timeline field changed: the cluster may be on any timeline after a failover test.)
    let mut fields: Vec<String> = token.split(':').map(str::to_owned).collect();
    fields[2].push('F');
    let forged = fields.join(":");
    assert_ne!(forged, token);
    let err = set
        .batch_execute(&format!("set pgsplit.causal_token = '{forged}'"))
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("22023"), "{err:?}");
    assert_eq!(read(&set, t).await, (1, primary), "still usable");
    // In a comment: the statement runs on the primary (with a warning).
    let (v, port) = read_with_comment(&bystander, t, &forged).await;
    assert_eq!((v, port), (1, primary));
    // At startup: the login is refused with 22023.
    let mut config = proxy.pg_config("token_forged_startup");
    config.options(format!("-c pgsplit.causal_token={forged}"));
    let err = config
        .connect(tokio_postgres::NoTls)
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code().map(|c| c.code()), Some("22023"), "{err:?}");

    // Once the replicas replay the write, the token's reads return to them.
    drop(paused);
    common::wait_until(20, "a replica serves the token holder's read", || async {
        let (v, port) = read(&set, t).await;
        assert_eq!(v, 1, "the token holder missed the write (port {port})");
        is_replica(port)
    })
    .await;
}

/// pgsplit instances that share `routing.causal_key` accept each other's tokens (behind one
/// load balancer, a user's next request may reach another instance); one with another key
/// refuses them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_a_key_accept_each_others_tokens() {
    let key = "the key both instances share";
    let a = proxy_with_key(key).await;
    let b = proxy_with_key(key).await;
    let stranger = proxy_with_key("a key of another deployment").await;
    let table = Table::new().await;
    let t = &table.0;
    replicas_have(&b, t, 0).await;
    let _paused = common::ReplayPaused::hold().await;

    let writer = a.connect("token_instance_a").await;
    write(&writer, t, 2).await;
    let token = show_token(&writer).await;

    let reader = b.connect("token_instance_b").await;
    reader
        .batch_execute(&format!("set pgsplit.causal_token = '{token}'"))
        .await
        .unwrap();
    assert_eq!(read(&reader, t).await, (2, primary_port()));

    let other = stranger.connect("token_instance_other").await;
    let err = other
        .batch_execute(&format!("set pgsplit.causal_token = '{token}'"))
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("22023"), "{err:?}");
}

/// The token reaches the client as a ParameterStatus ahead of the ReadyForQuery that ends
/// a transaction that wrote (simple and extended protocol, autocommit and explicit
/// transactions), never after a read or inside a transaction, and it is the token
/// `SHOW pgsplit.causal_token` gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_comes_as_parameter_status_before_ready_for_query() {
    use common::raw::{bind, execute, parse, sync, RawConn};
    let proxy = TestProxy::start(|c| c.routing.enabled = true).await;
    let table = Table::new().await;
    let t = &table.0;
    let mut conn = RawConn::login_app(proxy.addr).await;
    // The tokens a reply carries; asserts they come before its ReadyForQuery.
    let tokens = |messages: &[common::raw::Message]| -> Vec<String> {
        let mut found = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            if m.tag == b'S' && m.parameter().0 == "pgsplit.causal_token" {
                assert!(i + 1 < messages.len(), "after ReadyForQuery");
                found.push(m.parameter().1);
            }
        }
        assert_eq!(messages.last().map(|m| m.tag), Some(b'Z'));
        found
    };
    assert!(tokens(&conn.simple_query(&format!("select v from {t}")).await).is_empty());
    let first = tokens(&conn.simple_query(&format!("update {t} set v = 3")).await);
    assert_eq!(first.len(), 1, "an autocommit write gets a token");

    assert!(tokens(&conn.simple_query("begin").await).is_empty());
    assert!(tokens(&conn.simple_query(&format!("update {t} set v = 4")).await).is_empty());
    let second = tokens(&conn.simple_query("commit").await);
    assert_eq!(
        second.len(),
        1,
        "COMMIT of a transaction that wrote gets one"
    );
    assert_ne!(second, first, "for a later position");

    let mut batch = parse("", &format!("update {t} set v = 5"));
    batch.extend(bind("", ""));
    batch.extend(execute(""));
    batch.extend(sync());
    conn.write_raw(&batch).await.unwrap();
    let third = tokens(&conn.until_ready().await);
    assert_eq!(third.len(), 1, "so does an extended-protocol write");

    let shown = conn.simple_query("show pgsplit.causal_token").await;
    let row = shown.iter().find(|m| m.tag == b'D').expect("a row");
    assert_eq!(row.data_row()[0].as_deref(), Some(third[0].as_str()));
}

/// The ReadyForQuery after a write waits for its position; the reply it ends waits with
/// it, so the client gets the whole reply in one piece, as PostgreSQL sends it (psycopg's
/// pipeline tests count the round trips in a libpq trace). Before the fix, the rows and
/// CommandComplete went out first and the token and ReadyForQuery a round trip later; a
/// read as soon as anything arrives saw the split in most of 20 tries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writes_reply_comes_in_one_piece_with_its_token() {
    use common::raw::{bind, execute, parse, sync, RawConn};
    let proxy = TestProxy::start(|c| c.routing.enabled = true).await;
    let table = Table::new().await;
    let t = &table.0;
    let mut conn = RawConn::login_app(proxy.addr).await;
    let update = format!("update {t} set v = v + 1 returning v");
    for i in 0..20 {
        if i % 2 == 0 {
            let mut body = update.clone().into_bytes();
            body.push(0);
            conn.write_raw(&common::raw::message(b'Q', &body))
                .await
                .unwrap();
        } else {
            let mut batch = parse("", &update);
            batch.extend(bind("", ""));
            batch.extend(execute(""));
            batch.extend(sync());
            conn.write_raw(&batch).await.unwrap();
        }
        let chunk = conn.first_chunk().await;
        let mut tags = Vec::new();
        let mut rest = &chunk[..];
        while rest.len() >= 5 {
            let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            tags.push(rest[0] as char);
            rest = &rest[(1 + len).min(rest.len())..];
        }
        let tags: String = tags.into_iter().collect();
        assert!(
            tags.ends_with("SZ") && tags.contains('C') && rest.is_empty(),
            "write {i}: the first read got {tags:?}, not the whole reply with its token"
        );
    }
}

/// The position query pgsplit runs after a write (a simple Query, which destroys the
/// server's unnamed statement) does not cost the client its unnamed statement: binding it
/// again after the write works, as it would on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unnamed_statement_survives_the_position_query() {
    use common::raw::{bind, execute, parse, sync, tags, RawConn};
    let proxy = TestProxy::start(|c| c.routing.enabled = true).await;
    let table = Table::new().await;
    let t = &table.0;
    let mut conn = RawConn::login_app(proxy.addr).await;
    let mut batch = parse("", &format!("update {t} set v = v + 1 where id = 1"));
    for _ in 0..2 {
        batch.extend(bind("", ""));
        batch.extend(execute(""));
        batch.extend(sync());
        conn.write_raw(&batch).await.unwrap();
        let reply = conn.until_ready().await;
        assert!(!tags(&reply).contains('E'), "{reply:?}");
        batch.clear();
    }
    let v = conn.simple_query(&format!("select v from {t}")).await;
    let row = v.iter().find(|m| m.tag == b'D').expect("a row");
    assert_eq!(row.data_row()[0].as_deref(), Some("2"));
}

/// tokio-postgres closes each statement of a pipeline as soon as its rows are in (Close
/// and Sync), so a Close can reach pgsplit while it reads the position of a write in the
/// same pipeline. pgsplit answers that Close itself; the answer must come before the
/// reply to the Sync behind it. (It came after it, and tokio-postgres ended the connection
/// with "unexpected message from server", in most runs of 30 such pipelines; found by
/// `routing_property`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_sent_while_the_position_is_read_is_answered_in_order() {
    let proxy = TestProxy::start(|c| c.routing.enabled = true).await;
    let table = Table::new().await;
    let t = &table.0;
    let (client, connection) = proxy
        .pg_config("causal_close")
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    let ended = tokio::spawn(connection);
    let statements = [
        format!("update {t} set v = v + 1 where id = 1"),
        format!("update {t} set v = v + 1 where id = 2"),
        format!("select v from {t} where id = 1"),
    ];
    for i in 1..=100 {
        let pipeline = statements.iter().map(|s| client.query(s.as_str(), &[]));
        let results = futures_util::future::join_all(pipeline).await;
        let after = client.query_one(&statements[2], &[]).await;
        if results.iter().any(Result::is_err) || after.is_err() {
            let why = match ended.is_finished() {
                true => format!("{:?}", ended.await),
                false => "still connected".to_string(),
            };
            panic!("pipeline {i}: {results:?}, then {after:?}; the connection: {why}");
        }
        let v: i32 = after.unwrap().get(0);
        assert_eq!(v, i, "after pipeline {i}, a read of its own writes");
    }
}

/// pgsplit's prepared statement for positions may be taken from under it (a client's SQL
/// `DEALLOCATE`): the client sees no error, and still gets its token after the commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deallocated_position_statement_is_prepared_again() {
    use common::raw::{tags, RawConn};
    // One server connection per node, so that the transaction runs on the connection where
    // the first write prepared the statement (with more, a busy machine may hand it another
    // one, where DEALLOCATE finds nothing: 26000). And the function catalog loaded: before
    // it is, a write may fire triggers as far as pgsplit knows, so the connection is reset
    // before reuse, which drops the statement too.
    let proxy = TestProxy::start(|c| {
        c.routing.enabled = true;
        c.pool.max_size = 1;
    })
    .await;
    proxy.wait_for_catalog().await;
    let table = Table::new().await;
    let t = &table.0;
    let mut conn = RawConn::login_app(proxy.addr).await;
    for drop_it in ["deallocate pgsplit_position", "select 1"] {
        // A first write prepares the statement on the connection.
        conn.simple_query(&format!("update {t} set v = v + 1"))
            .await;
        let mut replies = Vec::new();
        for sql in [
            "begin",
            &format!("update {t} set v = v + 1"),
            drop_it,
            "commit",
        ] {
            replies = conn.simple_query(sql).await;
            assert!(!tags(&replies).contains('E'), "{sql}: {replies:?}");
        }
        let token = replies
            .iter()
            .find(|m| m.tag == b'S' && m.parameter().0 == "pgsplit.causal_token");
        assert!(token.is_some(), "after {drop_it}: {replies:?}");
    }
}

/// A driver gives the token back as the server reported it: psycopg's
/// `conn.info.parameter_status("pgsplit.causal_token")` right after the commit (Debian's
/// python3-psycopg, over libpq) is the token `SHOW pgsplit.causal_token` returns, and
/// presenting it on another connection works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_reads_the_token_from_parameter_status() {
    let proxy = TestProxy::start(|c| c.routing.enabled = true).await;
    let table = Table::new().await;
    let conninfo = format!(
        "host=127.0.0.1 port={} user=app password={} dbname=app",
        proxy.port(),
        common::APP_PASSWORD
    );
    let script = format!(
        "import sys, psycopg\n\
         w = psycopg.connect(sys.argv[1])\n\
         w.execute('update {t} set v = v + 1')\n\
         w.commit()\n\
         token = w.info.parameter_status('pgsplit.causal_token')\n\
         shown = w.execute('show pgsplit.causal_token').fetchone()[0]\n\
         r = psycopg.connect(sys.argv[1], autocommit=True)\n\
         r.execute(\"set pgsplit.causal_token = '%s'\" % token)\n\
         print(token is not None and token == shown, r.execute('select v from {t}').fetchone()[0])\n",
        t = table.0
    );
    let mut cmd = tokio::process::Command::new("/usr/bin/python3");
    cmd.args(["-c", &script, &conninfo]).kill_on_drop(true);
    let out = common::run_command(cmd, None, 60).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "psycopg failed: {stdout}{stderr}");
    assert_eq!(stdout.trim(), "True 1");
}

/// `read_your_writes = "cluster"`: a read on any connection sees every write that was
/// acknowledged before it began, on whichever connection it was made. A property over
/// random sequences (a fixed seed, within a time bound; `PGSPLIT_CLUSTER_RYW_SEED`,
/// `PGSPLIT_CLUSTER_RYW_STEPS`, `PGSPLIT_CLUSTER_RYW_SECS` run it differently or longer)
/// of writes and reads spread over four connections, with pauses, while the replicas apply
/// commits 300 ms late: a read right after a write must be held on the primary, one after
/// the replicas caught up may go to a replica. In `lsn` mode the same reads miss other
/// connections' writes (checked first, so the test can tell the modes apart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_cluster_mode_every_read_sees_every_earlier_write_property() {
    use pgsplit::config::ReadYourWrites;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    let seed = common::env_number("PGSPLIT_CLUSTER_RYW_SEED", 11);
    let steps = common::env_number("PGSPLIT_CLUSTER_RYW_STEPS", 200);
    let secs = common::env_number("PGSPLIT_CLUSTER_RYW_SECS", 20);
    let lsn_mode = TestProxy::start(|c| c.routing.enabled = true).await;
    let proxy = TestProxy::start(|c| {
        c.routing.enabled = true;
        c.routing.read_your_writes = ReadYourWrites::Cluster;
    })
    .await;
    let table = Table::new().await;
    let t = &table.0;
    replicas_have(&proxy, t, 0).await;
    let delay = Duration::from_millis(300);
    let _delay = ReplicaApplyDelay::hold(delay).await;

    // In `lsn` mode another connection does not wait for the write: seen on a read that
    // ended well within the apply delay (on a loaded machine that may take a few tries).
    let writer = lsn_mode.connect("cluster_ryw_lsn_writer").await;
    let other = lsn_mode.connect("cluster_ryw_lsn_other").await;
    let mut stale = None;
    for v in 1..=10 {
        write(&writer, t, -v).await;
        let committed = Instant::now();
        let (got, port) = read(&other, t).await;
        if committed.elapsed() < delay / 2 {
            stale = Some((got, port, v));
            break;
        }
    }
    let (got, port, v) = stale.expect("a read within half the apply delay, in 10 tries");
    assert!(
        is_replica(port) && got != -v,
        "lsn mode: another connection read {got} on port {port}, the write of {} it should have missed",
        -v
    );
    drop((writer, other));

    let mut clients = Vec::new();
    for i in 0..4 {
        clients.push(proxy.connect(&format!("cluster_ryw_{i}")).await);
    }
    // (The write above went through another pgsplit: this one starts from a write of its own.)
    let (mut written, mut reads, mut on_replica) = (0, 0, 0);
    write(&clients[0], t, written).await;
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut ran = 0;
    for step in 0..steps {
        if started.elapsed() > Duration::from_secs(secs) {
            break;
        }
        ran += 1;
        let client = &clients[rng.gen_range(0..clients.len())];
        match rng.gen_range(0..10) {
            0..=1 => {
                written += 1;
                write(client, t, written).await;
            }
            2..=3 => tokio::time::sleep(Duration::from_millis(rng.gen_range(0..500))).await,
            _ => {
                let (v, port) = read(client, t).await;
                reads += 1;
                on_replica += usize::from(is_replica(port));
                assert_eq!(
                    v, written,
                    "step {step} (PGSPLIT_CLUSTER_RYW_SEED={seed}): a read on port {port} missed \
                     the write of {written}"
                );
            }
        }
    }
    eprintln!(
        "cluster mode: seed {seed}, {ran} steps in {:.1} s, {reads} reads ({on_replica} on a replica)",
        started.elapsed().as_secs_f64()
    );
    assert!(reads > 0 && written > 0, "the sequence read and wrote");
    // Once the replicas replayed the last write, reads return to them.
    common::wait_until(20, "a replica serves reads again", || async {
        let (v, port) = read(&clients[0], t).await;
        assert_eq!(v, written, "a read on port {port} missed the last write");
        is_replica(port)
    })
    .await;
}
