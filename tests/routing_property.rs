//! Two of routing's "never"s as one property: no write reaches a replica, and no client
//! reads a stale copy of its own write. Through pgsplit (routing on, `read_your_writes =
//! "lsn"`, replicas applying commits late, small pools shared by several clients), a
//! client's statements must give exactly what they give straight on the primary: a write
//! sent to a replica fails there (25006, 0A000) where it succeeds on the primary, and a
//! read of the client's own write served by a replica that has not replayed it returns
//! the old rows.
//!
//! Random sequences from a fixed seed, within a time bound (`PGSPLIT_ROUTING_SEED`,
//! `PGSPLIT_ROUTING_STEPS`, `PGSPLIT_ROUTING_SECS` run it differently or longer): reads,
//! writes, DDL, locking reads, write functions, data-modifying CTEs, transaction blocks
//! (read only, serializable, savepoints, errors inside), multi-statement queries, the
//! simple and extended protocols, named statements executed again, COPY in and out,
//! pipelines, pauses that let the replicas catch up, and moves to the client's other
//! connection carrying the causal token (`SET pgsplit.causal_token`). Each client works
//! on tables of its own; its sequence then runs again on a fresh copy of them straight on
//! the primary, and every step's outcome (rows as text, or the SQLSTATE) must match.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::routing::{app_on_primary, replicas_caught_up, Counts};
use common::{ReplicaApplyDelay, TestProxy};
use pgsplit::config::ReadYourWrites;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::{Client, SimpleQueryMessage};

/// One step of a client's sequence. `{t}` in SQL stands for the client's table prefix.
#[derive(Debug, Clone)]
enum Step {
    /// A simple Query (one statement, or several separated by `;`).
    Simple(String),
    /// One statement over the extended protocol (Parse, Describe, Bind, Execute).
    Extended(String),
    /// Statements sent together over the extended protocol before any reply is read.
    Pipeline(Vec<String>),
    /// Execute the statement `PREPARED[i]` with parameter `k`, prepared on the connection
    /// the first time it is used there (and kept: a named statement used again later).
    Execute(usize, i32),
    /// `COPY ... FROM STDIN` of these `(id, v)` rows (a key taken already fails it).
    CopyIn(Vec<(i32, i32)>),
    /// `COPY (SELECT ...) TO STDOUT` of the whole table.
    CopyOut,
    /// Wait this many milliseconds (long enough for the replicas to catch up), through
    /// pgsplit only.
    Pause(u64),
    /// Go on on the client's other connection, presenting the causal token of this one
    /// (only between transactions). Nothing happens on the primary.
    Switch,
}

/// What a step gave: its rows as text (all statements together), or the SQLSTATE of its
/// first error. A pipeline gives one outcome per statement.
type Outcome = Vec<Result<Vec<Vec<Option<String>>>, String>>;

/// Statements a connection prepares once and executes again with a parameter.
const PREPARED: [&str; 4] = [
    "select v::text from {t} where id = $1",
    "update {t} set v = v + 1 where id = $1",
    "select {t}_f($1)",
    "select count(*)::text from {t}_x where id <> $1",
];

/// A client connection and the statements of [`PREPARED`] it has prepared.
struct Conn {
    client: Client,
    prepared: HashMap<usize, tokio_postgres::Statement>,
}

impl Conn {
    fn new(client: Client) -> Conn {
        Conn {
            client,
            prepared: HashMap::new(),
        }
    }
}

/// Statements that read the client's own tables.
fn read(rng: &mut StdRng) -> String {
    let k = rng.gen_range(1..=5);
    match rng.gen_range(0..5) {
        0 => format!("select v::text from {{t}} where id = {k}"),
        1 => "select count(*)::text, coalesce(sum(v), 0)::text from {t}".into(),
        2 => "select id::text, v::text from {t} order by id".into(),
        3 => "select count(*)::text from {t}_x".into(),
        _ => "with r as (select v from {t} where v > 1) select count(*)::text from r".into(),
    }
}

/// Statements that write, in every form that must go to the primary.
fn write(rng: &mut StdRng) -> String {
    let (k, v) = (rng.gen_range(1..=5), rng.gen_range(0..100));
    match rng.gen_range(0..12) {
        11 => "delete from {t} where id > 5".into(),
        0 | 1 => format!(
            "insert into {{t}} values ({k}, {v}) on conflict (id) do update set v = excluded.v"
        ),
        2 => format!("update {{t}} set v = v + 1 where id = {k}"),
        3 => format!("delete from {{t}} where id = {k}"),
        4 => "select nextval('{t}_s')::text".into(),
        5 => format!("select setval('{{t}}_s', {v} + 1)::text"),
        6 => format!("select {{t}}_f({k})"),
        7 => format!(
            "with w as (update {{t}} set v = v + 2 where id = {k} returning v) \
             select coalesce(sum(v), -1)::text from w"
        ),
        8 => format!("select v::text from {{t}} where id = {k} for update"),
        9 => "create table if not exists {t}_x as select * from {t}".into(),
        _ => "drop table if exists {t}_x".into(),
    }
}

/// The transaction block a sequence has open, by its statements so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    None,
    ReadWrite,
    /// `BEGIN READ ONLY`: pgsplit runs it on a replica, where a hot standby refuses
    /// `LOCK TABLE` stronger than `ROW EXCLUSIVE`, which the primary allows in a read-only
    /// transaction (docs/routing.md); its blocks take the weakest lock instead.
    ReadOnly,
}

/// A statement for the simple or extended protocol, in `block`; updates it for
/// transaction control.
fn statement(rng: &mut StdRng, block: &mut Block) -> String {
    if *block != Block::None {
        return match rng.gen_range(0..14) {
            0 => {
                *block = Block::None;
                "commit".into()
            }
            1 => {
                *block = Block::None;
                "rollback".into()
            }
            2 => "savepoint s".into(),
            3 => "rollback to savepoint s".into(),
            4 => "select 1 / 0".into(),
            5 if *block == Block::ReadOnly => "lock table {t} in access share mode".into(),
            5 => "lock table {t} in access exclusive mode".into(),
            6..=9 => read(rng),
            _ => write(rng),
        };
    }
    match rng.gen_range(0..12) {
        0 => {
            let (begin, kind) = [
                ("begin", Block::ReadWrite),
                ("begin read only", Block::ReadOnly),
                ("begin isolation level serializable", Block::ReadWrite),
            ][rng.gen_range(0..3)];
            *block = kind;
            begin.into()
        }
        1..=6 => read(rng),
        _ => write(rng),
    }
}

/// A random sequence of `steps` steps for one client.
fn sequence(rng: &mut StdRng, steps: usize) -> Vec<Step> {
    let mut block = Block::None;
    let mut out = Vec::with_capacity(steps);
    while out.len() < steps {
        let step = match rng.gen_range(0..20) {
            0 if block == Block::None => Step::Switch,
            19 if block == Block::None => Step::Pause(rng.gen_range(300..700)),
            1 | 2 if block == Block::None => {
                // Reads and writes only: a pipeline's statements are all parsed before
                // any runs, so DDL would make the outcome depend on that order alone.
                let n = rng.gen_range(2..=4);
                let statements = (0..n)
                    .map(|_| match rng.gen_bool(0.5) {
                        true => read(rng),
                        false => write(rng),
                    })
                    .filter(|s| !s.contains("{t}_x"))
                    .collect();
                Step::Pipeline(statements)
            }
            3 if block == Block::None => Step::Simple(format!("{}; {}", write(rng), read(rng))),
            4..=7 => Step::Extended(statement(rng, &mut block)),
            8 | 9 => Step::Execute(rng.gen_range(0..PREPARED.len()), rng.gen_range(1..=5)),
            10 => match rng.gen_bool(0.5) || block != Block::None {
                true => Step::CopyOut,
                // Outside transaction blocks only: refused before it starts (in a failed
                // or read-only block), a COPY FROM leaves tokio-postgres unable to read
                // the next reply, straight on PostgreSQL too.
                false => Step::CopyIn(
                    (0..rng.gen_range(1..=3))
                        .map(|_| (rng.gen_range(4..=8), rng.gen_range(0..100)))
                        .collect(),
                ),
            },
            _ => Step::Simple(statement(rng, &mut block)),
        };
        out.push(step);
    }
    out
}

/// Creates the tables and functions a client's sequence uses, under `prefix`, on the
/// primary (as user `app`; the function is created after the proxy started, so the
/// classifier has to find out that it writes).
async fn create_objects(primary: &Client, prefix: &str) {
    primary
        .batch_execute(&format!(
            "create table {prefix} (id int primary key, v int not null);
             insert into {prefix} select g, g from generate_series(1, 3) g;
             create sequence {prefix}_s;
             create table {prefix}_x as select * from {prefix};
             create function {prefix}_f(k int) returns text volatile language sql as
               $$ insert into {prefix} values (k, 0)
                  on conflict (id) do update set v = {prefix}.v + 1 returning v::text $$;"
        ))
        .await
        .unwrap_or_else(|e| panic!("creating {prefix}: {e}"));
}

async fn drop_objects(primary: &Client, prefix: &str) {
    let _ = primary
        .batch_execute(&format!(
            "drop function if exists {prefix}_f(int);
             drop table if exists {prefix}, {prefix}_x;
             drop sequence if exists {prefix}_s;"
        ))
        .await;
}

/// One row's columns as text (every statement above selects text).
fn row_text(row: &tokio_postgres::Row) -> Vec<Option<String>> {
    (0..row.len())
        .map(|i| match row.try_get::<_, Option<String>>(i) {
            Ok(v) => v,
            Err(_) => Some(format!("<{}>", row.columns()[i].type_())),
        })
        .collect()
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    match e.code() {
        Some(code) => code.code().to_string(),
        None => format!("no SQLSTATE: {e}"),
    }
}

/// Runs one step on `client`, with `{t}` replaced by `prefix` (a `Switch` gives nothing
/// here: moving is `run_through_proxy`'s).
async fn run(conn: &mut Conn, step: &Step, prefix: &str) -> Outcome {
    let sql = |s: &str| s.replace("{t}", prefix);
    let client = &conn.client;
    match step {
        Step::Simple(s) => vec![client
            .simple_query(&sql(s))
            .await
            .map(|messages| {
                messages
                    .iter()
                    .filter_map(|m| match m {
                        SimpleQueryMessage::Row(row) => Some(
                            (0..row.len())
                                .map(|i| row.get(i).map(str::to_owned))
                                .collect(),
                        ),
                        _ => None,
                    })
                    .collect()
            })
            .map_err(|e| sqlstate(&e))],
        Step::Extended(s) => vec![client
            .query(&sql(s), &[])
            .await
            .map(|rows| rows.iter().map(row_text).collect())
            .map_err(|e| sqlstate(&e))],
        Step::Pipeline(statements) => {
            // Prepared one by one first: then every Bind, Execute and Sync goes out in
            // order when the futures are first polled. (Pipelined `query(&str)` calls
            // each send their execution only once their own Parse is answered. In two
            // early runs the straight-to-PostgreSQL side then gave the second statement's
            // result as if it ran first; a later 148-pipeline check found no such case,
            // and the cause was not found.) Each statement is closed as
            // soon as its rows are in, as `query(&str)` does: its Close and Sync go out
            // while the rest of the pipeline (and the position of its writes) is still
            // being answered.
            let mut prepared = Vec::new();
            for s in statements {
                prepared.push(client.prepare(&sql(s)).await);
            }
            let queries = prepared.into_iter().map(|p| async move {
                let statement = p.map_err(|e| sqlstate(&e))?;
                let rows = client
                    .query(&statement, &[])
                    .await
                    .map_err(|e| sqlstate(&e))?;
                drop(statement);
                Ok(rows.iter().map(row_text).collect())
            });
            futures_util::future::join_all(queries).await
        }
        Step::Execute(i, k) => vec![execute(conn, *i, *k, prefix).await],
        Step::CopyIn(rows) => {
            let data: String = rows.iter().map(|(id, v)| format!("{id}\t{v}\n")).collect();
            let copy = sql("copy {t} (id, v) from stdin");
            vec![copy_in(client, &copy, data)
                .await
                .map(|n| vec![vec![Some(n.to_string())]])
                .map_err(|e| sqlstate(&e))]
        }
        Step::CopyOut => {
            let copy = sql("copy (select id, v from {t} order by id) to stdout");
            vec![copy_out(client, &copy)
                .await
                .map(|text| vec![vec![Some(text)]])
                .map_err(|e| sqlstate(&e))]
        }
        Step::Pause(ms) => {
            tokio::time::sleep(Duration::from_millis(*ms)).await;
            Vec::new()
        }
        Step::Switch => Vec::new(),
    }
}

/// Executes `PREPARED[i]` with `k`, preparing it on this connection first if it has not
/// been (a failed Parse is tried again next time).
async fn execute(
    conn: &mut Conn,
    i: usize,
    k: i32,
    prefix: &str,
) -> Result<Vec<Vec<Option<String>>>, String> {
    if !conn.prepared.contains_key(&i) {
        let text = PREPARED[i].replace("{t}", prefix);
        let statement = conn.client.prepare(&text).await.map_err(|e| sqlstate(&e))?;
        conn.prepared.insert(i, statement);
    }
    let statement = &conn.prepared[&i];
    let rows = conn
        .client
        .query(statement, &[&k])
        .await
        .map_err(|e| sqlstate(&e))?;
    Ok(rows.iter().map(row_text).collect())
}

async fn copy_in(client: &Client, sql: &str, data: String) -> Result<u64, tokio_postgres::Error> {
    use futures_util::SinkExt;
    let sink = client.copy_in::<_, bytes::Bytes>(sql).await?;
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from(data)).await?;
    sink.finish().await
}

async fn copy_out(client: &Client, sql: &str) -> Result<String, tokio_postgres::Error> {
    use futures_util::TryStreamExt;
    let stream = client.copy_out(sql).await?;
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await?;
    Ok(chunks.iter().map(|c| String::from_utf8_lossy(c)).collect())
}

/// A connection through `proxy` whose connection task reports how it ended, if badly.
async fn connect(proxy: &TestProxy, name: &str) -> Client {
    let config = proxy.pg_config(name);
    let (client, connection) =
        common::with_timeout(30, "connect", config.connect(tokio_postgres::NoTls))
            .await
            .unwrap_or_else(|e| panic!("{name}: connect failed: {e}"));
    let name = name.to_owned();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("{name}: the connection ended: {e}");
        }
    });
    client
}

/// Presents the causal token of connection `from` on connection `to`.
async fn switch(from: &Client, to: &Client) -> Result<(), tokio_postgres::Error> {
    let shown = from.simple_query("show pgsplit.causal_token").await?;
    let token = shown.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
        _ => None,
    });
    match token.filter(|t| !t.is_empty()) {
        Some(token) => to
            .simple_query(&format!("set pgsplit.causal_token = '{token}'"))
            .await
            .map(drop),
        None => Ok(()),
    }
}

/// Runs `steps` through pgsplit on two connections, moving between them at each
/// `Switch` with the causal token, until `deadline`. Returns each step's outcome.
async fn run_through_proxy(
    proxy: &TestProxy,
    name: &str,
    steps: &[Step],
    prefix: &str,
    deadline: Instant,
) -> Vec<Outcome> {
    let mut connections = [
        Conn::new(connect(proxy, &format!("{name}_a")).await),
        Conn::new(connect(proxy, &format!("{name}_b")).await),
    ];
    let mut on = 0;
    let mut outcomes = Vec::new();
    for step in steps {
        if Instant::now() > deadline {
            break;
        }
        let outcome = match step {
            Step::Switch => {
                let moved = switch(&connections[on].client, &connections[1 - on].client).await;
                on = 1 - on;
                // A move gives nothing, as on the primary, unless it failed.
                moved
                    .err()
                    .map(|e| Err(format!("moving: {e}")))
                    .into_iter()
                    .collect()
            }
            _ => common::with_timeout(60, "a step", run(&mut connections[on], step, prefix)).await,
        };
        outcomes.push(outcome);
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_pgsplit_a_client_gets_what_the_primary_gives_property() {
    let seed = common::env_number("PGSPLIT_ROUTING_SEED", 5);
    let steps = common::env_number("PGSPLIT_ROUTING_STEPS", 300) as usize;
    let secs = common::env_number("PGSPLIT_ROUTING_SECS", 20);
    const CLIENTS: usize = 3;
    let proxy = TestProxy::start(|c| {
        c.routing.enabled = true;
        c.routing.read_your_writes = ReadYourWrites::Lsn;
        c.pool.max_size = 2;
    })
    .await;
    let primary = app_on_primary().await;
    let base = common::unique("rprop");
    let prefixes: Vec<(String, String)> = (0..CLIENTS)
        .map(|i| (format!("{base}_{i}p"), format!("{base}_{i}d")))
        .collect();
    for (through_proxy, direct) in &prefixes {
        create_objects(&primary, through_proxy).await;
        create_objects(&primary, direct).await;
    }
    replicas_caught_up(30).await;
    // Replicas that apply commits late: a read a replica serves too early sees old rows.
    let delay = Duration::from_millis(250);
    let _delay = ReplicaApplyDelay::hold(delay).await;

    // The oracle can fail: a connection that did not write does read old rows from a
    // replica right after a commit (on a loaded machine that may take a few tries).
    let (probe_table, _) = &prefixes[0];
    let reader = proxy.connect(&format!("{base}_probe")).await;
    let mut seen_stale = false;
    for v in 1000..1010 {
        primary
            .execute(
                &format!("update {probe_table} set v = {v} where id = 1"),
                &[],
            )
            .await
            .unwrap();
        let committed = Instant::now();
        let row = reader
            .query_one(&format!("select v from {probe_table} where id = 1"), &[])
            .await
            .unwrap();
        if committed.elapsed() < delay / 2 {
            seen_stale = row.get::<_, i32>(0) != v;
            break;
        }
    }
    assert!(seen_stale, "a read right after another connection's commit was not stale: the apply delay does not show");
    drop(reader);
    primary
        .execute(&format!("update {probe_table} set v = 1 where id = 1"), &[])
        .await
        .unwrap();
    // Both copies start alike, and the replicas have the reset row before the run.
    replicas_caught_up(30).await;

    let mut rng = StdRng::seed_from_u64(seed);
    let sequences: Vec<Vec<Step>> = (0..CLIENTS).map(|_| sequence(&mut rng, steps)).collect();
    let before = Counts::of(&proxy);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let runs = sequences
        .iter()
        .zip(&prefixes)
        .enumerate()
        .map(|(i, (seq, (p, _)))| {
            let name = format!("{base}_c{i}");
            let proxy = &proxy;
            async move { run_through_proxy(proxy, &name, seq, p, deadline).await }
        });
    let proxied = futures_util::future::join_all(runs).await;
    let counts = before.since(&proxy);
    let elapsed = started.elapsed();

    let mut ran = 0;
    for (i, ((seq, outcomes), (_, direct))) in
        sequences.iter().zip(&proxied).zip(&prefixes).enumerate()
    {
        let mut straight = Conn::new(app_on_primary().await);
        for (n, (step, got)) in seq.iter().zip(outcomes).enumerate() {
            let expected = match step {
                Step::Pause(_) => Vec::new(),
                _ => run(&mut straight, step, direct).await,
            };
            // Names in the rows differ only by the prefix.
            let normalize = |o: &Outcome, prefix: &str| format!("{o:?}").replace(prefix, "T");
            let (p, _) = &prefixes[i];
            assert_eq!(
                normalize(got, p),
                normalize(&expected, direct),
                "client {i}, step {n} (PGSPLIT_ROUTING_SEED={seed}): {step:?} through pgsplit \
                 (left) differs from the primary (right); the steps before it: {:?}",
                &seq[n.saturating_sub(8)..n]
            );
            ran += 1;
        }
    }
    eprintln!(
        "routing property: seed {seed}, {ran} steps of {CLIENTS} clients in {:.1} s; \
         {} statements on replicas, {} on the primary",
        elapsed.as_secs_f64(),
        counts.replicas(),
        counts.nodes[0],
    );
    assert!(ran >= CLIENTS * 20, "only {ran} steps ran");
    assert!(
        counts.replicas() > 0,
        "no read went to a replica: {counts:?}"
    );

    for (through_proxy, direct) in &prefixes {
        drop_objects(&primary, through_proxy).await;
        drop_objects(&primary, direct).await;
    }
}
