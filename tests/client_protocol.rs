//! tokio-postgres through pgsplit: binary types with parameters, pipelining, errors that
//! leave the connection usable, prepared statements over small pools and small
//! per-server statement caches, COPY over the extended protocol, startup parameters and
//! a large streamed result.

mod common;

use std::time::{Duration, SystemTime};

use common::raw::RawConn;
use common::{show, sqlstate, with_timeout, TestProxy, APP_PASSWORD};
use futures_util::future::try_join_all;
use futures_util::{pin_mut, SinkExt, TryStreamExt};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::SimpleQueryMessage;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_types_round_trip_with_parameters() {
    let proxy = TestProxy::start(|_| {}).await;
    let client = proxy.connect("types_round_trip").await;

    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let big_bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let text = "héllo wörld — 日本語 🐘 \u{7f} tab\there";
    let when = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
    let array: Vec<i32> = vec![1, -2, i32::MAX, i32::MIN, 0];
    let numeric = "-12345678901234567890.123456789000";
    let uuid = "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11";
    let json = r#"{"b": [1, 2, {"c": null}], "a": "é"}"#;

    let stmt = client
        .prepare(
            "select $1::int2, $2::int4, $3::int8, $4::float8, $5::bool, $6::bytea, $7::text, \
             $8::timestamptz, $9::int4[], $10::text::numeric::text, $11::text::uuid::text, \
             $12::text::jsonb::text, $13::bytea, length($13::bytea), $3::int8 - 1",
        )
        .await
        .unwrap();
    assert_eq!(stmt.params()[0], Type::INT2);
    assert_eq!(stmt.columns()[8].type_(), &Type::INT4_ARRAY);

    for (small, int, big, float) in [
        (i16::MIN, i32::MIN, i64::MIN + 1, f64::MIN_POSITIVE),
        (i16::MAX, i32::MAX, i64::MAX, f64::INFINITY),
        (0, 0, 0, -0.5),
        (-1, 42, 1 << 40, 1e300),
    ] {
        let row = client
            .query_one(
                &stmt,
                &[
                    &small, &int, &big, &float, &true, &all_bytes, &text, &when, &array, &numeric,
                    &uuid, &json, &big_bytes,
                ],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i16>(0), small);
        assert_eq!(row.get::<_, i32>(1), int);
        assert_eq!(row.get::<_, i64>(2), big);
        assert_eq!(row.get::<_, f64>(3), float);
        assert!(row.get::<_, bool>(4));
        assert_eq!(row.get::<_, Vec<u8>>(5), all_bytes);
        assert_eq!(row.get::<_, &str>(6), text);
        assert_eq!(row.get::<_, SystemTime>(7), when);
        assert_eq!(row.get::<_, Vec<i32>>(8), array);
        assert_eq!(row.get::<_, &str>(9), numeric);
        assert_eq!(row.get::<_, &str>(10), uuid.to_lowercase());
        assert_eq!(
            row.get::<_, &str>(11),
            r#"{"a": "é", "b": [1, 2, {"c": null}]}"#
        );
        assert_eq!(row.get::<_, Vec<u8>>(12), big_bytes);
        assert_eq!(row.get::<_, i32>(13), big_bytes.len() as i32);
        assert_eq!(row.get::<_, i64>(14), big - 1);
    }

    // NaN does not compare equal; check it on its own.
    let row = client
        .query_one("select $1::float8", &[&f64::NAN])
        .await
        .unwrap();
    assert!(row.get::<_, f64>(0).is_nan());

    // NULLs of every kind, both ways.
    let none_i16: Option<i16> = None;
    let none_i32: Option<i32> = None;
    let none_i64: Option<i64> = None;
    let none_f64: Option<f64> = None;
    let none_bool: Option<bool> = None;
    let none_bytes: Option<Vec<u8>> = None;
    let none_text: Option<&str> = None;
    let none_time: Option<SystemTime> = None;
    let none_array: Option<Vec<i32>> = None;
    let row = client
        .query_one(
            &stmt,
            &[
                &none_i16,
                &none_i32,
                &none_i64,
                &none_f64,
                &none_bool,
                &none_bytes,
                &none_text,
                &none_time,
                &none_array,
                &none_text,
                &none_text,
                &none_text,
                &none_bytes,
            ],
        )
        .await
        .unwrap();
    for i in 0..row.len() {
        let is_null = match row.columns()[i].type_() {
            &Type::INT2 => row.get::<_, Option<i16>>(i).is_none(),
            &Type::INT4 => row.get::<_, Option<i32>>(i).is_none(),
            &Type::INT8 => row.get::<_, Option<i64>>(i).is_none(),
            &Type::FLOAT8 => row.get::<_, Option<f64>>(i).is_none(),
            &Type::BOOL => row.get::<_, Option<bool>>(i).is_none(),
            &Type::BYTEA => row.get::<_, Option<Vec<u8>>>(i).is_none(),
            &Type::TEXT => row.get::<_, Option<&str>>(i).is_none(),
            &Type::TIMESTAMPTZ => row.get::<_, Option<SystemTime>>(i).is_none(),
            &Type::INT4_ARRAY => row.get::<_, Option<Vec<i32>>>(i).is_none(),
            other => panic!("unexpected column type {other}"),
        };
        assert!(is_null, "column {i} should be NULL");
    }

    // An array with a NULL element and a text array with non-ASCII.
    let row = client
        .query_one(
            "select $1::int4[], $2::text[]",
            &[
                &vec![Some(1i32), None, Some(3)],
                &vec!["ä", "", "\"quoted\"", "NULL"],
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Vec<Option<i32>>>(0),
        vec![Some(1), None, Some(3)]
    );
    assert_eq!(
        row.get::<_, Vec<String>>(1),
        vec!["ä", "", "\"quoted\"", "NULL"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_queries_on_one_client() {
    let proxy = TestProxy::start(|c| c.pool.max_size = 2).await;
    let client = proxy.connect("pipelined").await;

    // One prepared statement executed 500 times without waiting for answers.
    let stmt = client
        .prepare("select $1::int4 * 2, $2::text")
        .await
        .unwrap();
    let labels: Vec<String> = (0..500).map(|i| format!("row-{i}")).collect();
    let futures = (0..500i32).map(|i| {
        let stmt = &stmt;
        let label = &labels[i as usize];
        let client = &client;
        async move { client.query_one(stmt, &[&i, label]).await }
    });
    let rows = with_timeout(60, "500 pipelined executes", try_join_all(futures))
        .await
        .unwrap();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.get::<_, i32>(0), 2 * i as i32);
        assert_eq!(row.get::<_, &str>(1), labels[i]);
    }

    // Statements prepared, executed and closed in the pipeline (tokio-postgres names a
    // statement per call and closes it afterwards), with a failure in the middle that
    // must fail only its own query.
    let futures = (0..200i32).map(|i| {
        let client = &client;
        async move {
            let sql = if i == 100 {
                "select 1 / ($1::int4 - 100)".to_string()
            } else {
                format!("select $1::int4 + {i}")
            };
            client.query(sql.as_str(), &[&i]).await
        }
    });
    let results = with_timeout(
        60,
        "200 pipelined prepare+execute",
        futures_util::future::join_all(futures),
    )
    .await;
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(rows) => {
                assert_ne!(i, 100, "division by zero must fail");
                assert_eq!(rows[0].get::<_, i32>(0), 2 * i as i32);
            }
            Err(e) => {
                assert_eq!(i, 100, "query {i} failed: {e}");
                assert_eq!(sqlstate(&e), "22012");
            }
        }
    }

    // Simple-protocol batches pipelined with extended ones.
    let simple = client.simple_query("select 1; select 2");
    let extended = client.query_one("select $1::text", &[&"x"]);
    let (simple, extended) = tokio::join!(simple, extended);
    let values: Vec<String> = simple
        .unwrap()
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(values, ["1", "2"]);
    assert_eq!(extended.unwrap().get::<_, &str>(0), "x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_leave_the_connection_usable() {
    let proxy = TestProxy::start(|c| c.pool.max_size = 1).await;
    let mut client = proxy.connect("errors_usable").await;

    let e = client.query("select 1/0", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "22012");
    assert_eq!(one(&client, "select 1").await, 1);

    // Errors at prepare time: syntax and a missing table.
    let e = client.prepare("selec 1").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42601");
    let e = client
        .prepare("select * from no_such_table_anywhere")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42P01");
    assert_eq!(one(&client, "select 2").await, 2);

    // Wrong parameter data: invalid input at Bind.
    let stmt = client.prepare("select $1::text::int4").await.unwrap();
    let e = client.query_one(&stmt, &[&"nope"]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "22P02");
    assert_eq!(
        client
            .query_one(&stmt, &[&"7"])
            .await
            .unwrap()
            .get::<_, i32>(0),
        7
    );

    // An error inside a transaction aborts it until ROLLBACK, then all is well.
    {
        let tx = client.transaction().await.unwrap();
        tx.execute("select 1", &[]).await.unwrap();
        let e = tx.execute("select 1/0", &[]).await.unwrap_err();
        assert_eq!(sqlstate(&e), "22012");
        let e = tx.execute("select 1", &[]).await.unwrap_err();
        assert_eq!(sqlstate(&e), "25P02");
        tx.rollback().await.unwrap();
    }
    assert_eq!(one(&client, "select 3").await, 3);

    // A simple query with an error in its second statement.
    let e = client
        .simple_query("select 1; select 1/0; select 3")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "22012");
    assert_eq!(one(&client, "select 4").await, 4);

    // Another client shares the single server connection without seeing any of it.
    let other = proxy.connect("errors_usable_other").await;
    assert_eq!(one(&other, "select 5").await, 5);
    assert_eq!(one(&client, "select 6").await, 6);
}

async fn one(client: &tokio_postgres::Client, sql: &str) -> i32 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_survive_eviction_from_a_small_server_cache() {
    let proxy = TestProxy::start(|c| {
        c.pool.max_size = 1;
        c.pool.max_prepared_statements = 3;
    })
    .await;
    let a = proxy.connect("evict_a").await;
    let b = proxy.connect("evict_b").await;

    let a_stmts = prepare_family(&a, "a", 10).await;
    let b_stmts = prepare_family(&b, "b", 10).await;
    for round in 0..5i32 {
        for (k, a_stmt) in a_stmts.iter().enumerate() {
            let row = a.query_one(a_stmt, &[&round]).await.unwrap();
            assert_eq!(row.get::<_, i32>(0), round + k as i32);
            assert_eq!(row.get::<_, &str>(1), format!("a{k}"));
            // Interleave the other client on the same (only) server connection, going
            // backwards through its statements.
            let k2 = 9 - k;
            let row = b.query_one(&b_stmts[k2], &[&round]).await.unwrap();
            assert_eq!(row.get::<_, i32>(0), round + k2 as i32);
            assert_eq!(row.get::<_, &str>(1), format!("b{k2}"));
        }
    }

    // Pipelined: all ten statements at once, several times, both clients.
    let futures = (0..60usize).map(|i| {
        let (client, stmts, tag) = if i % 2 == 0 {
            (&a, &a_stmts, "a")
        } else {
            (&b, &b_stmts, "b")
        };
        let k = (i * 7) % 10;
        async move {
            let row = client.query_one(&stmts[k], &[&(i as i32)]).await?;
            assert_eq!(row.get::<_, i32>(0), i as i32 + k as i32);
            assert_eq!(row.get::<_, &str>(1), format!("{tag}{k}"));
            Ok::<_, tokio_postgres::Error>(())
        }
    });
    with_timeout(60, "pipelined executes", try_join_all(futures))
        .await
        .unwrap();

    let sizes = proxy.pool_sizes();
    assert!(sizes.iter().all(|(_, n)| *n <= 1), "pool sizes {sizes:?}");
    // The only server connection holds no more than 3 prepared statements (this query's
    // own among them).
    let on_server: i64 = a
        .query_one("select count(*) from pg_prepared_statements", &[])
        .await
        .unwrap()
        .get(0);
    assert!(on_server <= 3, "{on_server} statements on the server");
    let on_server: i64 = a
        .query_one("select count(*) from pg_prepared_statements", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        (1..=3).contains(&on_server),
        "{on_server} statements on the server"
    );
}

/// Prepares `n` statements that differ in text: `select $1 + k, '<tag>k'`.
/// `DEALLOCATE` of a protocol-level statement is answered by pgsplit, which reads the name
/// as PostgreSQL would: unquoted names fold to lowercase, quoted ones do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_reads_names_as_postgresql_does() {
    let proxy = TestProxy::start(|_| {}).await;
    let (mut conn, _) =
        RawConn::login_md5(proxy.addr, "app_md5", APP_PASSWORD, &[("database", "app")]).await;
    for name in ["Mixed", "lower"] {
        let mut parse = format!("{name}\0select 1\0").into_bytes();
        parse.extend_from_slice(&0i16.to_be_bytes());
        conn.send(b'P', &parse).await;
    }
    conn.send(b'S', &[]).await;
    let tags: Vec<u8> = conn.until_ready().await.iter().map(|m| m.tag).collect();
    assert_eq!(tags, b"11Z");
    // What pgsplit answers: CommandComplete "DEALLOCATE"; what it does not know goes to
    // the server, which has no such statement (26000).
    let outcome = |messages: Vec<common::raw::Message>| match messages.first() {
        Some(m) if m.tag == b'C' => String::from_utf8_lossy(&m.body)
            .trim_end_matches('\0')
            .to_string(),
        Some(m) if m.tag == b'E' => m.code(),
        other => panic!("unexpected answer {other:?}"),
    };
    for (sql, expected) in [
        ("DEALLOCATE \"MIXED\"", "26000"),
        ("DEALLOCATE Mixed", "26000"),
        ("DEALLOCATE \"Mixed\"", "DEALLOCATE"),
        (
            "/* app */ deallocate PREPARE LOWER -- done\n;",
            "DEALLOCATE",
        ),
        ("DEALLOCATE lower", "26000"),
    ] {
        assert_eq!(outcome(conn.simple_query(sql).await), expected, "{sql}");
    }
}

async fn prepare_family(
    client: &tokio_postgres::Client,
    tag: &str,
    n: usize,
) -> Vec<tokio_postgres::Statement> {
    let mut out = Vec::new();
    for k in 0..n {
        let sql = format!("select $1::int4 + {k}, '{tag}{k}'::text");
        out.push(client.prepare(&sql).await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_across_a_shared_pool() {
    let proxy = TestProxy::start(|c| c.pool.max_size = 2).await;
    let mut tasks = Vec::new();
    for n in 0..20i32 {
        let config = proxy.pg_config(&format!("shared_pool_{n}"));
        tasks.push(tokio::spawn(async move {
            let client = common::connect_with(&config).await;
            let shared = client.prepare("select $1::int4 * 3").await?;
            let own_sql = format!("select $1::text || '-{n}', {n}::int4");
            let own = client.prepare(&own_sql).await?;
            // Prepared but never used by some clients; closed by others.
            let spare = client.prepare("select 'spare'::text").await?;
            if n % 2 == 0 {
                drop(spare);
            }
            for i in 0..40i32 {
                let row = client.query_one(&shared, &[&(i + n)]).await?;
                assert_eq!(row.get::<_, i32>(0), 3 * (i + n));
                let arg = format!("v{i}");
                let row = client.query_one(&own, &[&arg]).await?;
                assert_eq!(row.get::<_, String>(0), format!("v{i}-{n}"));
                assert_eq!(row.get::<_, i32>(1), n);
                if i % 10 == 0 {
                    // A transaction using both statements, pipelined.
                    client.batch_execute("begin").await?;
                    let (p1, p2): ([&(dyn ToSql + Sync); 1], [&(dyn ToSql + Sync); 1]) =
                        ([&i], [&arg]);
                    let (x, y) =
                        tokio::join!(client.query_one(&shared, &p1), client.query_one(&own, &p2));
                    assert_eq!(x?.get::<_, i32>(0), 3 * i);
                    assert_eq!(y?.get::<_, String>(0), format!("v{i}-{n}"));
                    client.batch_execute("commit").await?;
                }
            }
            Ok::<_, tokio_postgres::Error>(())
        }));
    }
    for (n, task) in tasks.into_iter().enumerate() {
        with_timeout(120, "shared-pool client", task)
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("client {n}: {e} ({})", sqlstate(&e)));
    }
    let sizes = proxy.pool_sizes();
    assert!(sizes.iter().all(|(_, n)| *n <= 2), "pool sizes {sizes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_are_applied() {
    let proxy = TestProxy::start(|c| c.pool.max_size = 1).await;
    let mut config = proxy.pg_config("startup_params");
    config.options("-c statement_timeout=12345 -c DateStyle=SQL,DMY");
    let client = common::connect_with(&config).await;
    assert_eq!(show(&client, "show client_encoding").await, "UTF8");
    assert_eq!(show(&client, "show statement_timeout").await, "12345ms");
    assert_eq!(show(&client, "show datestyle").await, "SQL, DMY");
    assert_eq!(
        show(&client, "show application_name").await,
        "startup_params"
    );

    // Another client on the same single server connection has its own defaults, and the
    // first keeps its values afterwards.
    let other = proxy.connect("startup_params_other").await;
    assert_eq!(show(&other, "show statement_timeout").await, "0");
    assert_eq!(show(&other, "show datestyle").await, "ISO, MDY");
    assert_eq!(
        show(&other, "show application_name").await,
        "startup_params_other"
    );
    assert_eq!(show(&client, "show statement_timeout").await, "12345ms");
    assert_eq!(show(&client, "show datestyle").await, "SQL, DMY");
    assert_eq!(
        show(&client, "show application_name").await,
        "startup_params"
    );
}

/// PostgreSQL applies a startup value as the client wrote it, so `-c search_path=a,b`
/// is a list of two schemas, not the one schema `"a,b"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_list_parameter_stays_a_list() {
    let proxy = TestProxy::start(|c| c.pool.max_size = 1).await;
    let mut config = proxy.pg_config("startup_list_param");
    config.options("-c search_path=foo,public");
    let client = common::connect_with(&config).await;
    let table = common::unique("startup_list_t");
    let setup = proxy.connect("startup_list_param_setup").await;
    setup
        .batch_execute(&format!("create table public.{table} (a int)"))
        .await
        .unwrap();
    let found = client
        .query_one(&format!("select count(*) from {table}"), &[])
        .await;
    let shown = show(&client, "show search_path").await;
    setup
        .batch_execute(&format!("drop table public.{table}"))
        .await
        .unwrap();
    assert_eq!(shown, "foo,public");
    let found =
        found.unwrap_or_else(|e| panic!("search_path foo,public must find a table in public: {e}"));
    assert_eq!(found.get::<_, i64>(0), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_result_streams_through() {
    let proxy = TestProxy::start(|_| {}).await;
    let client = proxy.connect("large_result").await;
    let rows = client
        .query_raw(
            "select repeat('x', 1000) from generate_series(1, 100000)",
            std::iter::empty::<i32>(),
        )
        .await
        .unwrap();
    pin_mut!(rows);
    let mut count = 0usize;
    let mut bytes = 0usize;
    while let Some(row) = with_timeout(60, "next row", rows.try_next()).await.unwrap() {
        let s: &str = row.get(0);
        bytes += s.len();
        count += 1;
    }
    assert_eq!(count, 100_000);
    assert_eq!(bytes, 100_000 * 1000);
    assert_eq!(rows.rows_affected(), Some(100_000));
    assert_eq!(one(&client, "select 1").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_over_the_extended_protocol() {
    // tokio-postgres sends Bind, Execute, Sync and only then the CopyData; PostgreSQL
    // ignores a Sync that arrives in copy-in mode, so only one ReadyForQuery comes back
    // for the two Syncs of a COPY FROM STDIN.
    let proxy = TestProxy::start(|c| c.pool.max_size = 1).await;
    let client = proxy.connect("copy_extended").await;
    let table = common::unique("copy_ext");
    client
        .batch_execute(&format!(
            "drop table if exists {table}; create table {table} (id int primary key, t text)"
        ))
        .await
        .unwrap();

    let sink = client
        .copy_in(&format!("copy {table} from stdin"))
        .await
        .unwrap();
    pin_mut!(sink);
    let mut expected = String::new();
    for chunk in 0..20 {
        let mut data = String::new();
        for i in chunk * 1000..(chunk + 1) * 1000 {
            data.push_str(&format!("{i}\tvalue ü {i}\n"));
        }
        expected.push_str(&data);
        sink.send(bytes::Bytes::from(data)).await.unwrap();
    }
    let n = sink.finish().await.unwrap();
    assert_eq!(n, 20_000);

    // The connection goes on normally after COPY FROM STDIN.
    let count: i64 = client
        .query_one(&format!("select count(*) from {table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 20_000);

    let stream = client
        .copy_out(&format!(
            "copy (select * from {table} order by id) to stdout"
        ))
        .await
        .unwrap();
    pin_mut!(stream);
    let mut out = Vec::new();
    while let Some(chunk) = stream.try_next().await.unwrap() {
        out.extend_from_slice(&chunk);
    }
    assert_eq!(String::from_utf8(out).unwrap(), expected);

    // A COPY the client abandons (CopyFail) rolls back and leaves the connection usable.
    {
        let sink = client
            .copy_in::<_, bytes::Bytes>(&format!("copy {table} from stdin"))
            .await
            .unwrap();
        pin_mut!(sink);
        sink.send(bytes::Bytes::from_static(b"999999\tabandoned\n"))
            .await
            .unwrap();
        // Dropped without finish(): tokio-postgres sends CopyFail.
    }
    // Bad data: the server fails the COPY.
    let sink = client
        .copy_in::<_, bytes::Bytes>(&format!("copy {table} from stdin"))
        .await
        .unwrap();
    pin_mut!(sink);
    let _ = sink
        .send(bytes::Bytes::from_static(b"not-a-number\tx\n"))
        .await;
    let e = sink.finish().await.unwrap_err();
    assert_eq!(sqlstate(&e), "22P02");

    let count: i64 = client
        .query_one(&format!("select count(*) from {table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 20_000);
    client
        .batch_execute(&format!("drop table {table}"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_out_over_the_extended_protocol() {
    let proxy = TestProxy::start(|c| c.pool.max_size = 1).await;
    let client = proxy.connect("copy_out_extended").await;
    for round in 0..3 {
        let stream = client
            .copy_out("copy (select g, md5(g::text) from generate_series(1, 50000) g) to stdout")
            .await
            .unwrap();
        pin_mut!(stream);
        let mut out = Vec::new();
        while let Some(chunk) = stream.try_next().await.unwrap() {
            out.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 50_000, "round {round}");
        assert!(text.starts_with("1\tc4ca4238a0b923820dcc509a6f75849b\n"));
        assert_eq!(one(&client, "select 1").await, 1);
    }
}

/// Notices (RAISE NOTICE / WARNING) reach the client in order, inside and outside
/// transactions, in the simple and the extended protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_reach_the_client() {
    let proxy = TestProxy::start(|c| c.pool.max_size = 1).await;
    let (client, mut connection) = proxy
        .pg_config("notices")
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, mut notices) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.try_next().await.unwrap_or(None) {
            if let tokio_postgres::AsyncMessage::Notice(n) = message {
                let _ = tx.send(format!("{}: {}", n.severity(), n.message()));
            }
        }
    });
    let mut expect = |want: &'static str| {
        let got = notices
            .try_recv()
            .unwrap_or_else(|_| panic!("no notice; wanted {want}"));
        assert_eq!(got, want);
    };

    client
        .batch_execute("do $$ begin raise notice 'outside'; end $$")
        .await
        .unwrap();
    expect("NOTICE: outside");
    client
        .batch_execute("begin; do $$ begin raise notice 'in tx 1'; raise warning 'in tx 2'; end $$")
        .await
        .unwrap();
    expect("NOTICE: in tx 1");
    expect("WARNING: in tx 2");
    // A notice just before an error in an aborted transaction.
    let e = client
        .batch_execute("do $$ begin raise notice 'before error'; perform 1/0; end $$")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "22012");
    expect("NOTICE: before error");
    client.batch_execute("rollback").await.unwrap();
    // Extended protocol: a function that raises a notice per row.
    client
        .batch_execute(
            "create or replace function pg_temp.noisy(i int) returns int language plpgsql \
             as $$ begin raise notice 'row %', i; return i; end $$",
        )
        .await
        .unwrap();
    let rows = client
        .query("select pg_temp.noisy(g) from generate_series(1, 3) g", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    expect("NOTICE: row 1");
    expect("NOTICE: row 2");
    expect("NOTICE: row 3");
    assert!(notices.try_recv().is_err(), "unexpected extra notice");
}
