//! Extended-protocol batches as PostgreSQL runs them, as a property: a batch of Parse,
//! Bind and Execute messages with Syncs and Flushes anywhere in it, mixing reads, writes,
//! statements that fail (at Parse or at Execute) and transaction control, gets through
//! pgsplit (routing on, `read_your_writes = "lsn"`, replicas applying commits late) the
//! replies it gets straight from the primary: the same messages in the same order, the
//! same rows, command tags, SQLSTATEs and transaction status, with nothing lost or left
//! waiting. pgsplit routes a batch as a whole and skips what PostgreSQL skips after an
//! error; reads that follow a write in another batch must see it.
//!
//! Random cases from a fixed seed, within a time bound (`PGSPLIT_BATCH_SEED`,
//! `PGSPLIT_BATCH_CASES`, `PGSPLIT_BATCH_SECS` run it differently or longer). One raw
//! connection to each side runs every case in turn, each on a table of its own (a case may
//! leave a transaction open, or failed, for the next: the same on both sides).

mod common;

use std::time::{Duration, Instant};

use common::raw::{execute, flush, parse, sync, Message, RawConn};
use common::routing::{app_on_primary, replicas_caught_up, Counts};
use common::{ReplicaApplyDelay, TestProxy};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One part of a batch. `{t}` in SQL stands for the side's table.
#[derive(Debug, Clone)]
enum Item {
    /// Parse, Bind and Execute of the unnamed statement and portal.
    Run(String),
    /// Parse of a named statement, then two Binds and Executes of it.
    Twice(String),
    /// Bind and Execute of the unnamed statement as it is now (a failed Parse leaves none).
    Rebind,
    /// Describe of the unnamed statement.
    Describe,
    Sync,
    Flush,
}

/// SQL for one statement: reads, writes, failures and transaction control.
fn sql(rng: &mut StdRng) -> String {
    let (k, v) = (rng.gen_range(1..=4), rng.gen_range(0..100));
    match rng.gen_range(0..16) {
        0 | 1 => format!("select v from {{t}} where id = {k}"),
        2 => "select count(*), coalesce(sum(v), 0) from {t}".into(),
        3 | 4 => format!("update {{t}} set v = v + 1 where id = {k}"),
        5 => format!(
            "insert into {{t}} values ({k}, {v}) on conflict (id) do update set v = excluded.v"
        ),
        6 => format!("delete from {{t}} where id = {k}"),
        7 => "select 1 / 0".into(),
        8 => "select * from {t}_missing".into(),
        9 => "selec 1".into(),
        10 => "begin".into(),
        11 => "begin read only".into(),
        12 => "commit".into(),
        13 => "rollback".into(),
        14 => "savepoint s".into(),
        _ => "rollback to savepoint s".into(),
    }
}

/// A batch of 1 to 8 statements with Syncs and Flushes between them, ending with a Sync
/// and then a ROLLBACK and a Sync, so that the next batch starts outside any transaction.
///
/// A named statement comes first in its batch only, with SQL that parses: pgsplit answers
/// a named Parse itself when it needs no server for it, and reports an error in the
/// statement at its first Bind, after that ParseComplete (where PostgreSQL reports it
/// instead of one); so does a Parse in a failed transaction, of a statement the server
/// connection already has (docs/pooling.md).
fn batch(rng: &mut StdRng) -> Vec<Item> {
    let mut items = Vec::new();
    if rng.gen_range(0..4) == 0 {
        let parses = loop {
            let s = sql(rng);
            if s != "selec 1" && !s.contains("_missing") {
                break s;
            }
        };
        items.push(Item::Twice(parses));
    }
    for _ in 0..rng.gen_range(1..=8) {
        // A Bind or Describe of the unnamed statement right after its Parse only: one
        // that finds none inside a failed transaction gets 25P02 through pgsplit where
        // PostgreSQL says 26000 (docs/pooling.md).
        let after_parse = matches!(items.last(), Some(Item::Run(_)));
        items.push(match rng.gen_range(0..10) {
            0 if after_parse => Item::Rebind,
            1 if after_parse => Item::Describe,
            _ => Item::Run(sql(rng)),
        });
        match rng.gen_range(0..10) {
            0 | 1 => items.push(Item::Sync),
            2 => items.push(Item::Flush),
            _ => {}
        }
    }
    // In a segment of its own: after an error, the server skips to the next Sync.
    if !matches!(items.last(), Some(Item::Sync)) {
        items.push(Item::Sync);
    }
    items.push(Item::Run("rollback".into()));
    items.push(Item::Sync);
    items
}

/// Bind of `statement` to the unnamed portal, no parameters, text results.
fn bind_plain(statement: &str) -> Vec<u8> {
    let mut body = vec![0];
    body.extend(statement.as_bytes());
    body.push(0);
    body.extend_from_slice(&[0; 6]);
    common::raw::message(b'B', &body)
}

/// The bytes of `items`, with `{t}` replaced by `table`; named statements are called
/// `b<case>_<n>`, new in every case.
fn encode(items: &[Item], table: &str, case: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, item) in items.iter().enumerate() {
        match item {
            Item::Run(s) => {
                out.extend(parse("", &s.replace("{t}", table)));
                out.extend(bind_plain(""));
                out.extend(execute(""));
            }
            Item::Twice(s) => {
                let name = format!("b{case}_{n}");
                out.extend(parse(&name, &s.replace("{t}", table)));
                for _ in 0..2 {
                    out.extend(bind_plain(&name));
                    out.extend(execute(""));
                }
            }
            Item::Rebind => {
                out.extend(bind_plain(""));
                out.extend(execute(""));
            }
            Item::Describe => {
                out.extend(common::raw::message(b'D', b"S\0"));
            }
            Item::Sync => out.extend(sync()),
            Item::Flush => out.extend(flush()),
        }
    }
    out
}

/// The replies to a batch with `syncs` Syncs, up to its last ReadyForQuery, each as text:
/// rows' values, command tags, SQLSTATEs, transaction status. pgsplit's ParameterStatus
/// (the causal token after a write) is left out.
async fn replies(conn: &mut RawConn, syncs: usize) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut ready = 0;
    while ready < syncs {
        let m = tokio::time::timeout(Duration::from_secs(30), conn.recv())
            .await
            .map_err(|_| format!("no reply within 30 s after {out:?}"))?
            .ok_or_else(|| format!("connection closed after {out:?}"))?;
        if m.tag == b'Z' {
            ready += 1;
        }
        if m.tag != b'S' {
            out.push(describe(&m));
        }
    }
    Ok(out)
}

fn describe(m: &Message) -> String {
    let tag = m.tag as char;
    match m.tag {
        b'D' => format!("D {:?}", m.data_row()),
        b'C' => format!(
            "C {}",
            String::from_utf8_lossy(&m.body).trim_end_matches('\0')
        ),
        b'E' | b'N' => format!("{tag} {}", m.code()),
        b'Z' => format!("Z {}", m.body.first().map_or('?', |b| *b as char)),
        _ => tag.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_gets_through_pgsplit_what_it_gets_from_postgresql_property() {
    let seed = common::env_number("PGSPLIT_BATCH_SEED", 3);
    let cases = common::env_number("PGSPLIT_BATCH_CASES", 400);
    let secs = common::env_number("PGSPLIT_BATCH_SECS", 20);
    let proxy = TestProxy::start(|c| c.routing.enabled = true).await;
    let primary = app_on_primary().await;
    let base = common::unique("bprop");
    let tables = [format!("{base}_p"), format!("{base}_d")];
    for t in &tables {
        create_table(&primary, t, 3).await;
    }
    let _delay = ReplicaApplyDelay::hold(Duration::from_millis(200)).await;

    let mut through = RawConn::login_app(proxy.addr).await;
    let mut direct = RawConn::login_app(common::primary_addr()).await;
    let before = Counts::of(&proxy);
    let started = Instant::now();
    let mut ran = 0;
    for case in 0..cases {
        if started.elapsed() > Duration::from_secs(secs) {
            break;
        }
        let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(case));
        let items = batch(&mut rng);
        let syncs = items.iter().filter(|i| matches!(i, Item::Sync)).count();
        through
            .write_raw(&encode(&items, &tables[0], case))
            .await
            .unwrap();
        let got = replies(&mut through, syncs).await;
        direct
            .write_raw(&encode(&items, &tables[1], case))
            .await
            .unwrap();
        let expected = replies(&mut direct, syncs).await;
        assert_eq!(
            got, expected,
            "case {case} (PGSPLIT_BATCH_SEED={seed}): {items:?} through pgsplit (left) and \
             straight on the primary (right)"
        );
        ran += 1;
        // Sometimes long enough for the replicas to catch up, so later reads may go there.
        if rng.gen_range(0..8) == 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let counts = before.since(&proxy);
    eprintln!(
        "batch property: seed {seed}, {ran} batches in {:.1} s; {} on replicas, {} on the primary",
        started.elapsed().as_secs_f64(),
        counts.replicas(),
        counts.nodes[0]
    );
    assert!(ran >= 20, "only {ran} batches ran");
    assert!(
        counts.replicas() > 0,
        "no batch went to a replica: {counts:?}"
    );
    drop((through, direct));
    for t in &tables {
        let _ = primary
            .batch_execute(&format!("drop table if exists {t}"))
            .await;
    }
}

/// Creates table `name` (`id int primary key, v int not null`, rows `(g, g)` for g in
/// 1..=`rows`) for every user, and waits until the replicas have it.
async fn create_table(primary: &tokio_postgres::Client, name: &str, rows: i32) {
    primary
        .batch_execute(&format!(
            "create table {name} (id int primary key, v int not null);
             insert into {name} select g, g from generate_series(1, {rows}) g;
             grant all on {name} to public;"
        ))
        .await
        .unwrap();
    replicas_caught_up(30).await;
}

/// The messages after a Sync that follow a `BEGIN READ ONLY` in the same write wait until
/// the replica has answered it (they might have had to go elsewhere); then they run in
/// the transaction it began there. They used to wait for good, since only a released
/// server connection ended the wait (found by the property above: every seed hung).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_after_a_read_only_begin_in_the_same_write_run() {
    let proxy = TestProxy::start(|c| c.routing.enabled = true).await;
    let mut conn = RawConn::login_app(proxy.addr).await;
    let items = [
        Item::Run("begin read only".into()),
        Item::Sync,
        Item::Run("select pg_is_in_recovery()::text".into()),
        Item::Run("rollback".into()),
        Item::Sync,
    ];
    conn.write_raw(&encode(&items, "unused", 0)).await.unwrap();
    let got = replies(&mut conn, 2).await;
    assert_eq!(
        got,
        Ok([
            "1",
            "2",
            "C BEGIN",
            "Z T",
            "1",
            "2",
            "D [Some(\"true\")]",
            "C SELECT 1",
            "1",
            "2",
            "C ROLLBACK",
            "Z I"
        ]
        .map(String::from)
        .to_vec()),
        "the transaction runs on a replica, and to its end"
    );
}

/// A batch that starts with a Describe of the unnamed statement (a read, parsed in the
/// batch before) and goes on with a write, sent while a replica still answers that read:
/// it waits for the replica, then runs on the primary. It ran on the replica, where the
/// write failed with 25006 (found by the property above, seed 6): only a batch starting
/// with Parse or Bind was classed as a whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_in_a_batch_starting_with_a_describe_runs_on_the_primary() {
    let proxy = TestProxy::start(|c| c.routing.enabled = true).await;
    let table = common::unique("bdescribe");
    let primary = app_on_primary().await;
    create_table(&primary, &table, 0).await;
    let mut conn = RawConn::login_app(proxy.addr).await;
    for id in 1..=10 {
        let items = [
            Item::Run("select count(*) from {t}".into()),
            Item::Sync,
            Item::Describe,
            Item::Run(format!("insert into {{t}} values ({id}, 0)")),
            Item::Sync,
        ];
        conn.write_raw(&encode(&items, &table, 0)).await.unwrap();
        let got = replies(&mut conn, 2).await.unwrap();
        assert!(
            got.contains(&"C INSERT 0 1".to_string()),
            "insert {id}: {got:?}"
        );
    }
    let _ = primary.batch_execute(&format!("drop table {table}")).await;
}

/// A batch that ends a read-only transaction running on a replica (`COMMIT`) and goes on
/// with a write before its Sync: PostgreSQL runs the write after the COMMIT, in the
/// batch's implicit transaction. pgsplit sent it to the replica, where it failed with
/// 25006 (found by the property above, seed 31). Now the batch is split after the COMMIT
/// and the rest runs on the primary; after an error before the COMMIT, the rest is
/// skipped, as PostgreSQL skips it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_after_a_commit_on_a_replica_in_the_same_batch_runs_on_the_primary() {
    let proxy = TestProxy::start(|c| c.routing.enabled = true).await;
    let table = common::unique("bsplit");
    let primary = app_on_primary().await;
    create_table(&primary, &table, 0).await;
    primary
        .batch_execute(&format!("insert into {table} values (1, 0)"))
        .await
        .unwrap();
    replicas_caught_up(30).await;
    let begin = encode(
        &[Item::Run("begin read only".into()), Item::Sync],
        &table,
        0,
    );
    for round in 1..=5 {
        // A new client each round: the last one's write pins its reads to the primary.
        let mut conn = RawConn::login_app(proxy.addr).await;
        conn.write_raw(&begin).await.unwrap();
        let begun = replies(&mut conn, 1).await.unwrap();
        assert_eq!(begun.last().map(String::as_str), Some("Z T"), "{begun:?}");
        let rest = [
            Item::Run("select pg_is_in_recovery()::text".into()),
            Item::Run("commit".into()),
            Item::Run("update {t} set v = v + 1 where id = 1".into()),
            Item::Run("select v::text from {t} where id = 1".into()),
            Item::Sync,
        ];
        conn.write_raw(&encode(&rest, &table, 0)).await.unwrap();
        let got = replies(&mut conn, 1).await.unwrap();
        let want = [
            "1",
            "2",
            "D [Some(\"true\")]",
            "C SELECT 1",
            "1",
            "2",
            "C COMMIT",
            "1",
            "2",
            "C UPDATE 1",
            "1",
            "2",
            &format!("D [Some(\"{round}\")]"),
            "C SELECT 1",
            "Z I",
        ];
        assert_eq!(got, want.map(String::from).to_vec(), "round {round}");
    }

    // An error before the COMMIT: the COMMIT and the write are skipped up to the Sync,
    // through pgsplit as straight on the primary.
    let failing = encode(
        &[
            Item::Run("begin read only".into()),
            Item::Sync,
            Item::Run("select 1/0".into()),
            Item::Run("commit".into()),
            Item::Run("update {t} set v = v + 1 where id = 1".into()),
            Item::Sync,
            Item::Run("rollback".into()),
            Item::Sync,
        ],
        &table,
        0,
    );
    let mut outcomes = Vec::new();
    for addr in [proxy.addr, common::primary_addr()] {
        let mut c = RawConn::login_app(addr).await;
        c.write_raw(&failing).await.unwrap();
        outcomes.push(replies(&mut c, 3).await.unwrap());
    }
    assert_eq!(
        outcomes[0], outcomes[1],
        "through pgsplit (left), straight (right)"
    );
    assert!(
        outcomes[1].contains(&"Z E".to_string()),
        "{:?}",
        outcomes[1]
    );
    let v = primary
        .query_one(&format!("select v from {table} where id = 1"), &[])
        .await
        .unwrap()
        .get::<_, i32>(0);
    assert_eq!(v, 5, "only the five rounds' updates ran");
    let _ = primary.batch_execute(&format!("drop table {table}")).await;
}

/// A Parse of the unnamed statement that the server skips (an earlier message of its
/// batch failed) leaves the client with no unnamed statement, as in PostgreSQL: a Bind of
/// it gets 26000. pgsplit took the Parse as done, so the Bind ran what the server
/// connection held: another client's unnamed statement, whose row it returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_unnamed_parse_leaves_no_unnamed_statement() {
    let proxy = TestProxy::start(|c| {
        c.routing.enabled = false;
        c.pool.max_size = 1;
    })
    .await;
    // Client B leaves its unnamed statement on the only server connection.
    let mut b = RawConn::login_app(proxy.addr).await;
    let b_batch = encode(&[Item::Run("select 'B'".into()), Item::Sync], "unused", 0);
    b.write_raw(&b_batch).await.unwrap();
    replies(&mut b, 1).await.unwrap();
    // Client A: a named statement that fails, then an unnamed Parse the server skips;
    // then a Bind of the unnamed statement. Through pgsplit and straight to PostgreSQL.
    let mut first = parse("f", "select 1/0");
    first.extend(bind_plain("f"));
    first.extend(execute(""));
    first.extend(parse("", "select 'A'"));
    first.extend(bind_plain(""));
    first.extend(execute(""));
    first.extend(sync());
    let again = encode(&[Item::Rebind, Item::Sync], "unused", 0);
    let mut outcomes = Vec::new();
    for addr in [proxy.addr, common::primary_addr()] {
        let mut a = RawConn::login_app(addr).await;
        a.write_raw(&first).await.unwrap();
        let failed = replies(&mut a, 1).await.unwrap();
        a.write_raw(&again).await.unwrap();
        outcomes.push((failed, replies(&mut a, 1).await.unwrap()));
    }
    assert_eq!(
        outcomes[0], outcomes[1],
        "through pgsplit (left), straight (right)"
    );
    assert_eq!(outcomes[1].1, ["E 26000", "Z I"].map(String::from).to_vec());

    // The same with the Bind pipelined behind the Sync, before pgsplit can know the Parse
    // was skipped: it parses the client's statement again rather than trust the server
    // connection's (PostgreSQL answers 26000 here; pgsplit runs the client's own
    // statement), and never runs another client's.
    let mut pipelined = first.clone();
    pipelined.extend(&again);
    let mut a = RawConn::login_app(proxy.addr).await;
    a.write_raw(&pipelined).await.unwrap();
    let got = replies(&mut a, 2).await.unwrap();
    assert!(
        !got.iter().any(|m| m.contains("\"B\"")),
        "client A got client B's statement's row: {got:?}"
    );
}
