//! pgsplit in front of a real Patroni cluster (issue 16): one etcd and three PostgreSQL 15
//! nodes run by Debian's `patroni` (`dev/patroni.sh`, which this test starts when it is not
//! up), every node configured with `role = "auto"`.
//!
//! While pgbench writes through pgsplit (each transaction inserts a row recording the
//! node and timeline it ran on) and a probe client writes one row at a time, `patronictl
//! switchover` moves the leader, then `patronictl failover` moves it again. Checked:
//!
//! - no lost write: every row the probe was told was committed, and at least as many rows
//!   as pgbench counted committed transactions, are on the final leader (a write on a
//!   diverged old leader would be rewound away), and each row's node matches its timeline;
//! - no write on a node in recovery: no client ever sees a read-only or recovery error;
//! - failed transactions: for the switchover, at most the pgbench clients (one transaction
//!   in flight each when the old leader stopped) and at most one probe write (the one in
//!   flight);
//! - the old leader, once Patroni has restarted it as a replica of the new leader (with
//!   pg_rewind when needed), is back in pgsplit's read rotation (`SHOW NODES`, and a read
//!   lands on it) within 60 s.
//!
//! The figures (time from the patronictl command to the first write through pgsplit on the
//! new leader, the longest gap between successful writes, errors pgbench saw, time until
//! the old leader serves reads again) are printed. The cluster is left running, as the dev
//! cluster is; `dev/patroni.sh down` stops it. A file lock keeps two runs on one machine
//! from moving each other's leader.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{admin, admin_rows, admin_value, TestProxy};
use tokio_postgres::{Client, SimpleQueryMessage};

/// The Patroni members and their PostgreSQL ports (dev/patroni.sh's defaults, or the
/// PGSPLIT_PATRONI_PORT1..3 it was created with).
fn members() -> Vec<(String, u16)> {
    (1..=3)
        .map(|i| {
            let port = std::env::var(format!("PGSPLIT_PATRONI_PORT{i}"))
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(16431 + i);
            (format!("pg{i}"), port)
        })
        .collect()
}

fn port_of(member: &str) -> u16 {
    members()
        .into_iter()
        .find(|(name, _)| name == member)
        .unwrap_or_else(|| panic!("no member {member}"))
        .1
}

/// Runs `dev/patroni.sh` with `args` (each command bounds its own waits); its stdout.
async fn patroni(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let what = format!("dev/patroni.sh {}", args.join(" "));
    let out = common::with_timeout(
        240,
        &what,
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/dev/patroni.sh"))
                .args(&args)
                .stdin(std::process::Stdio::null())
                .output()
        }),
    )
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}{stderr}",
        out.status
    );
    eprintln!("{what}:\n{stdout}{stderr}");
    stdout
}

/// An exclusive lock on a file beside the Patroni cluster's directory, held while alive
/// (the OS drops it with the process): two test runs on one machine (two checkouts, say)
/// would move each other's leader. Waits up to 10 minutes for it.
async fn cluster_lock() -> std::fs::File {
    let dir =
        std::env::var("PGSPLIT_PATRONI_DIR").unwrap_or_else(|_| "/tmp/pgsplit-patroni".into());
    let path = format!("{}.test-lock", dir.trim_end_matches('/'));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        match file.try_lock() {
            Ok(()) => return file,
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot lock {path}: {e}"),
        }
    }
}

/// A proxy on the Patroni members, all `role = "auto"`, routing on, 100 ms checks, and
/// writes waiting up to 30 s for a leader (a switchover leaves none for a few seconds).
async fn proxy() -> TestProxy {
    proxy_with(|_| {}).await
}

/// [`proxy`], with `more` changes to its config.
async fn proxy_with(more: impl FnOnce(&mut pgsplit::config::Config)) -> TestProxy {
    TestProxy::start(|c| {
        c.routing.enabled = true;
        c.lag.check_interval = pgsplit::config::Duration::from_millis(100);
        c.pool.primary_wait_timeout = pgsplit::config::Duration::from_secs(30);
        let template = c.nodes[0].clone();
        c.nodes = members()
            .into_iter()
            .map(|(name, port)| {
                let mut node = template.clone();
                node.name = name;
                node.port = port;
                node.role = pgsplit::config::NodeRole::Auto;
                node
            })
            .collect();
        more(c);
    })
    .await
}

fn first_row(rows: &[SimpleQueryMessage]) -> Vec<String> {
    rows.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .expect("a row")
}

/// The timeline of the node a statement runs on (it must be out of recovery).
const TIMELINE: &str = "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int";

/// One probe write: when it finished, and (id, port, timeline) or the error.
struct ProbeWrite {
    done: Instant,
    result: Result<(i64, u16, i32), String>,
}

/// How many clients stay idle through each switchover or failover.
const IDLE: usize = 5;

/// Inserts one row (client -1) through `client`: (id, port, timeline) or the error.
async fn probe_write(client: &Client, table: &str, phase: i32) -> Result<(i64, u16, i32), String> {
    let sql = format!(
        "insert into {table} (phase, client, port, tli) \
         values ({phase}, -1, inet_server_port(), {TIMELINE}) returning id, port, tli"
    );
    match common::with_timeout(60, "a probe write", client.simple_query(&sql)).await {
        Ok(rows) => {
            let row = first_row(&rows);
            Ok((
                row[0].parse().unwrap(),
                row[1].parse().unwrap(),
                row[2].parse().unwrap(),
            ))
        }
        Err(e) => Err(common::describe(&e)),
    }
}

/// Writes one row at a time through a client of `config` until `stop`, every 10 ms; like an
/// application, it connects again when its connection was closed (a statement in flight
/// on a node that stops ends the session, as with PostgreSQL).
async fn probe(
    config: tokio_postgres::Config,
    table: String,
    phase: i32,
    stop: Arc<Mutex<bool>>,
) -> Vec<ProbeWrite> {
    let mut writes = Vec::new();
    let mut client = common::connect_with(&config).await;
    let mut ended = false;
    while !*stop.lock().unwrap() {
        // A FATAL error ends the session; tokio-postgres may not have seen the socket close
        // yet when it returns it.
        if ended || client.is_closed() {
            client = common::connect_with(&config).await;
        }
        let result = probe_write(&client, &table, phase).await;
        ended = result.as_ref().is_err_and(|e| e.starts_with("FATAL"));
        writes.push(ProbeWrite {
            done: Instant::now(),
            result,
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    writes
}

/// SHOW NODES sampled every 100 ms until `stop`: (when, node, role, writes, reads) at each
/// change.
type NodeSample = (Instant, String, String, String, String);

async fn watch_nodes(admin: Client, stop: Arc<Mutex<bool>>) -> Vec<NodeSample> {
    let mut changes: Vec<NodeSample> = Vec::new();
    while !*stop.lock().unwrap() {
        let rows = admin_rows(&admin, "SHOW NODES").await;
        let now = Instant::now();
        for (name, _) in members() {
            let value = |c| admin_value(&rows, &name, c).unwrap_or_default();
            let (role, writes, reads) = (value("role"), value("writes"), value("reads"));
            let last = changes.iter().rev().find(|c| c.1 == name);
            if last.is_none_or(|l| (&l.2, &l.3, &l.4) != (&role, &writes, &reads)) {
                changes.push((now, name.clone(), role, writes, reads));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    changes
}

/// Polls `SHOW NODES` every 100 ms until `check` accepts it; panics after `secs`, showing
/// the last answer.
async fn wait_nodes(
    admin: &Client,
    secs: u64,
    what: &str,
    check: impl Fn(&common::AdminRows) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let rows = admin_rows(admin, "SHOW NODES").await;
        if check(&rows) {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {secs} s waiting for: {what}; SHOW NODES: {rows:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One node takes writes and the two others serve reads.
fn settled(rows: &common::AdminRows) -> bool {
    let count = |column: &str| {
        members()
            .iter()
            .filter(|(name, _)| admin_value(rows, name, column).as_deref() == Some("true"))
            .count()
    };
    count("writes") == 1 && count("reads") == 2
}

/// Waits up to 30 s for one leader and two replicas in the rotation.
async fn await_settled(admin: &Client) {
    wait_nodes(
        admin,
        30,
        "one leader and two replicas in the rotation",
        settled,
    )
    .await;
}

/// What pgbench reported for one phase.
struct Bench {
    processed: u64,
    aborted: usize,
    errors: Vec<String>,
    /// pgbench runs it took (see `pgbench_for`).
    runs: usize,
}

const CLIENTS: usize = 8;

/// How long pgbench runs in each phase; the switch starts 3 s in. Under CPU stress a
/// switchover took 19 s (most of it Python starting patronictl), so this leaves room.
const BENCH_SECS: u64 = 25;

/// pgbench runs one after another for `secs` seconds in all: pgbench ends a client at its
/// first error, and a run whose clients all failed ends early, so the next run keeps the
/// load on (its clients log in and wait for the new leader meanwhile).
async fn pgbench_for(proxy: &TestProxy, script: &std::path::Path, phase: i32, secs: u64) -> Bench {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut all = Bench {
        processed: 0,
        aborted: 0,
        errors: Vec::new(),
        runs: 0,
    };
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if left < Duration::from_secs(1) {
            break;
        }
        let run = pgbench(proxy, script, phase, left.as_secs()).await;
        all.processed += run.processed;
        all.aborted += run.aborted;
        all.errors.extend(run.errors);
        all.runs += 1;
    }
    all
}

/// pgbench through `proxy` for `secs` seconds, CLIENTS clients, each transaction
/// `begin; insert; end` into `table`, tagged with `phase`. A client whose transaction fails
/// is aborted by pgbench (it retries only serialization failures), so each error is one
/// failed transaction.
async fn pgbench(proxy: &TestProxy, script: &std::path::Path, phase: i32, secs: u64) -> Bench {
    let mut cmd = common::pg_command("pgbench", proxy.port(), "app", common::APP_PASSWORD, "app");
    cmd.env("PGAPPNAME", "pgsplit_test_patroni").args([
        "-n",
        "-c",
        &CLIENTS.to_string(),
        "-j",
        "2",
        "-T",
        &secs.to_string(),
        "-D",
        &format!("phase={phase}"),
        "-f",
        script.to_str().unwrap(),
    ]);
    let out = common::run_command(cmd, None, secs + 120).await;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // 0: all clients ran to the end; 2: some were aborted by an error.
    assert!(
        matches!(out.status.code(), Some(0) | Some(2)),
        "pgbench failed ({:?}):\n{text}",
        out.status
    );
    let errors: Vec<String> = text
        .lines()
        .filter(|l| l.contains("aborted in command"))
        .map(str::to_owned)
        .collect();
    Bench {
        processed: common::pgbench_figure(&text, "number of transactions actually processed:"),
        aborted: errors.len(),
        errors,
        runs: 1,
    }
}

/// The rows of `table` on the node at `port`: (id, phase, client, port, timeline).
async fn rows_on(port: u16, table: &str) -> Vec<(i64, i32, i32, u16, i32)> {
    let direct = common::replica_superuser(port).await;
    direct
        .query(
            &format!("select id, phase, client, port, tli from {table} order by id"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get::<_, i64>(0),
                r.get::<_, i32>(1),
                r.get::<_, i32>(2),
                r.get::<_, i32>(3) as u16,
                r.get::<_, i32>(4),
            )
        })
        .collect()
}

/// What one switchover or failover did, for the final checks.
struct Phase {
    action: &'static str,
    number: i32,
    old: String,
    new: String,
    probe: Vec<ProbeWrite>,
    bench: Bench,
}

/// Runs pgbench (BENCH_SECS) and the probe, and `dev/patroni.sh ACTION NEW` 3 s into them;
/// returns once the old leader and the third node are back in pgsplit's read rotation.
async fn phase(
    proxy: &TestProxy,
    table: &str,
    script: &std::path::Path,
    action: &'static str,
    number: i32,
    new: &str,
) -> Phase {
    let old = patroni(&["leader"]).await.trim().to_string();
    assert_ne!(old, new);
    let (old_port, new_port) = (port_of(&old), port_of(new));
    // Idle clients: each wrote before and writes again once the new leader leads.
    let mut idle = Vec::new();
    for i in 0..IDLE {
        let client = proxy.connect(&format!("patroni_idle_{number}_{i}")).await;
        assert_eq!(
            probe_write(&client, table, number).await.unwrap().1,
            old_port
        );
        idle.push(client);
    }
    let stop = Arc::new(Mutex::new(false));
    let prober = tokio::spawn(probe(
        proxy.pg_config(&format!("patroni_probe_{number}")),
        table.to_string(),
        number,
        stop.clone(),
    ));
    let watcher = tokio::spawn(watch_nodes(admin(proxy).await, stop.clone()));
    let bench = pgbench_for(proxy, script, number, BENCH_SECS);
    let switch = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let started = Instant::now();
        patroni(&[action, new]).await;
        (started, Instant::now())
    };
    let (bench, (started, returned)) = tokio::join!(bench, switch);
    let mut idle_writes = Vec::new();
    for client in &idle {
        idle_writes.push(probe_write(client, table, number).await);
    }

    // The old leader back in the read rotation: SHOW NODES, then a read that lands on it.
    let admin_client = admin(proxy).await;
    wait_nodes(
        &admin_client,
        60,
        &format!("{old} serves reads again"),
        |rows| {
            admin_value(rows, &old, "role").as_deref() == Some("replica")
                && admin_value(rows, &old, "reads").as_deref() == Some("true")
        },
    )
    .await;
    common::wait_until(30, &format!("a read lands on {old}"), || async {
        common::read_ports(proxy, 2, 1).await.contains(&old_port)
    })
    .await;
    // And the other replica, which follows the new leader once Patroni points it there.
    wait_nodes(
        &admin_client,
        60,
        "one leader and two replicas in the rotation",
        settled,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    *stop.lock().unwrap() = true;
    let probe = prober.await.unwrap();
    let changes = watcher.await.unwrap();

    let first_on_new = probe
        .iter()
        .find(|w| matches!(w.result, Ok((_, port, _)) if port == new_port))
        .map(|w| w.done.saturating_duration_since(started));
    let mut gap = Duration::ZERO;
    let mut last_ok = None;
    for w in probe.iter().filter(|w| w.result.is_ok()) {
        if let Some(last) = last_ok {
            gap = gap.max(w.done.saturating_duration_since(last));
        }
        last_ok = Some(w.done);
    }
    let probe_errors: Vec<&String> = probe
        .iter()
        .filter_map(|w| w.result.as_ref().err())
        .collect();
    // When SHOW NODES first showed the old leader as a replica serving reads again.
    let back = changes
        .iter()
        .find(|(at, node, role, _, reads)| {
            *at > started && *node == old && role == "replica" && reads == "true"
        })
        .map(|c| c.0.saturating_duration_since(started));
    eprintln!(
        "{action} {old} -> {new}: patronictl returned after {:?}; first probe write on {new} \
         {:?} after the command started; longest gap between successful probe writes {gap:?}; \
         probe: {} writes, errors {probe_errors:?}; pgbench ({} runs): {} transactions, {} failed {:?}; \
         {old} back in the read rotation {back:?} after the command started",
        returned - started,
        first_on_new,
        probe.len(),
        bench.runs,
        bench.processed,
        bench.aborted,
        bench.errors,
    );
    for (at, node, role, writes, reads) in &changes {
        // Seconds from the command's start (negative: before it).
        let at = at.saturating_duration_since(started).as_secs_f64()
            - started.saturating_duration_since(*at).as_secs_f64();
        eprintln!("  SHOW NODES {at:+.2}s {node}: role={role} writes={writes} reads={reads}");
    }
    // Never two nodes taking writes at once in pgsplit's view (one sample is one instant).
    let mut writer: std::collections::BTreeMap<&str, bool> = Default::default();
    for (i, (at, node, _, writes, _)) in changes.iter().enumerate() {
        writer.insert(node, writes == "true");
        if changes.get(i + 1).is_none_or(|next| next.0 != *at) {
            assert!(
                writer.values().filter(|w| **w).count() <= 1,
                "two nodes took writes at once: {writer:?}"
            );
        }
    }
    assert!(
        first_on_new.is_some(),
        "no probe write reached {new} after the {action}"
    );
    // Clients idle through it (between transactions, so holding no server connection)
    // see no error, and write on the new leader.
    for result in &idle_writes {
        match result {
            Ok((_, port, _)) => {
                assert_eq!(*port, new_port, "{action}: an idle client wrote elsewhere")
            }
            Err(e) => panic!("{action}: an idle client's write failed: {e}"),
        }
    }
    let mut probe = probe;
    probe.extend(idle_writes.into_iter().map(|result| ProbeWrite {
        done: Instant::now(),
        result,
    }));
    Phase {
        action,
        number,
        old,
        new: new.to_string(),
        probe,
        bench,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_and_failover_under_pgbench_lose_no_write() {
    let began = Instant::now();
    let _lock = cluster_lock().await;
    patroni(&["up"]).await;
    let proxy = proxy().await;
    let admin_client = admin(&proxy).await;
    await_settled(&admin_client).await;

    let table = common::unique("pgsplit_test_patroni");
    let setup = proxy.connect("patroni_setup").await;
    setup
        .batch_execute(&format!(
            "create table {table} (id bigserial primary key, phase int not null, \
             client int not null, port int not null, tli int not null)"
        ))
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(common::unique("pgsplit_patroni"));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("write.sql");
    std::fs::write(
        &script,
        format!(
            "begin;\ninsert into {table} (phase, client, port, tli) values \
             (:phase, :client_id, inet_server_port(), {TIMELINE});\nend;\n"
        ),
    )
    .unwrap();

    // Switchover to one replica, then failover to the member that never led.
    let leader = patroni(&["leader"]).await.trim().to_string();
    let names: Vec<String> = members().into_iter().map(|(n, _)| n).collect();
    let others: Vec<&String> = names.iter().filter(|n| **n != leader).collect();
    let switchover = phase(&proxy, &table, &script, "switchover", 1, others[0]).await;
    let failover = phase(&proxy, &table, &script, "failover", 2, others[1]).await;
    let _ = std::fs::remove_dir_all(&dir);

    let final_port = port_of(&failover.new);
    let rows = rows_on(final_port, &table).await;
    let ids: BTreeSet<i64> = rows.iter().map(|r| r.0).collect();
    // Each node wrote on one timeline: the row's timeline matches where it ran.
    let mut timeline_of: std::collections::BTreeMap<u16, BTreeSet<i32>> = Default::default();
    for (_, _, _, port, tli) in &rows {
        timeline_of.entry(*port).or_default().insert(*tli);
    }
    eprintln!(
        "rows on the final leader {}: {} (timelines by port: {timeline_of:?})",
        failover.new,
        rows.len()
    );

    for phase in [&switchover, &failover] {
        let (action, old, new) = (phase.action, &phase.old, &phase.new);
        // No write on a node in recovery (it would fail read-only), none lost.
        for error in phase
            .probe
            .iter()
            .filter_map(|w| w.result.as_ref().err())
            .chain(&phase.bench.errors)
        {
            assert!(
                !error.contains("read-only")
                    && !error.contains("recovery")
                    && !error.contains("25006"),
                "{action}: a write reached a node in recovery: {error}"
            );
        }
        let lost: Vec<i64> = phase
            .probe
            .iter()
            .filter_map(|w| w.result.as_ref().ok())
            .map(|(id, _, _)| *id)
            .filter(|id| !ids.contains(id))
            .collect();
        assert!(
            lost.is_empty(),
            "{action}: acknowledged probe writes lost: {lost:?}"
        );
        let ok: Vec<&(i64, u16, i32)> = phase
            .probe
            .iter()
            .filter_map(|w| w.result.as_ref().ok())
            .collect();
        for (_, port, _) in &ok {
            assert!(
                *port == port_of(old) || *port == port_of(new),
                "{action}: a probe write ran on port {port}, neither {old} nor {new}"
            );
        }
        // Once a write ran on the new leader, none ran on the old one.
        let first_new = ok.iter().position(|(_, p, _)| *p == port_of(new)).unwrap();
        assert!(
            ok[first_new..].iter().all(|(_, p, _)| *p == port_of(new)),
            "{action}: a write ran on {old} after one ran on {new}"
        );
        let pgbench_rows = rows
            .iter()
            .filter(|r| r.1 == phase.number && r.2 >= 0)
            .count() as u64;
        assert!(
            pgbench_rows >= phase.bench.processed,
            "{action}: pgbench committed {} transactions, the final leader has {pgbench_rows} of their rows",
            phase.bench.processed
        );
        // A transaction may commit and lose its reply: at most one per failed client.
        assert!(
            pgbench_rows <= phase.bench.processed + phase.bench.aborted as u64,
            "{action}: {pgbench_rows} rows for {} committed transactions and {} failed",
            phase.bench.processed,
            phase.bench.aborted
        );
        assert!(phase.bench.processed > 0, "{action}: pgbench wrote nothing");
    }
    // Only transactions in flight on the old leader when it stopped fail: at most one
    // statement of the probe, at most one transaction per pgbench client.
    for phase in [&switchover, &failover] {
        let probe_errors = phase.probe.iter().filter(|w| w.result.is_err()).count();
        assert!(
            probe_errors <= 1,
            "{}: {probe_errors} probe writes failed",
            phase.action
        );
        assert!(phase.bench.aborted <= CLIENTS);
    }
    for (port, timelines) in &timeline_of {
        assert_eq!(
            timelines.len(),
            1,
            "port {port} wrote on timelines {timelines:?}"
        );
    }
    eprintln!("test took {:?}", began.elapsed());
}

/// The port of the fourth member, which `dev/patroni.sh add` starts (issue 16, item 6).
fn added_port() -> u16 {
    std::env::var("PGSPLIT_PATRONI_PORT4")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16435)
}

/// Patroni's REST API on pg2 (any member's serves the whole cluster).
fn rest_url() -> String {
    let port: u16 = std::env::var("PGSPLIT_PATRONI_REST_PORT2")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(18009);
    format!("http://127.0.0.1:{port}")
}

/// Members from Patroni (issue 16, item 6): pgsplit configured with the three original
/// members and `[topology] patroni_url` (a URL where nothing listens first, then pg2's
/// REST API). A fourth member started with `dev/patroni.sh add` joins the read rotation
/// without a config change (`SHOW NODES` shows it from Patroni, and reads land on it);
/// tagged `noloadbalance`, it gets none of 40 reads; stopped and gone from `/cluster`, it
/// leaves the rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_added_with_patroni_joins_the_rotation() {
    let began = Instant::now();
    let _lock = cluster_lock().await;
    patroni(&["up"]).await;
    // A fourth member left by an earlier run would not be "added".
    patroni(&["remove"]).await;
    let proxy = proxy_with(|c| {
        c.topology.patroni_url = vec!["http://127.0.0.1:1".into(), rest_url()];
        c.topology.patroni_interval = pgsplit::config::Duration::from_millis(200);
    })
    .await;
    let admin_client = admin(&proxy).await;
    await_settled(&admin_client).await;
    let rows = admin_rows(&admin_client, "SHOW NODES").await;
    assert_eq!(rows.len(), 3, "only the configured nodes: {rows:?}");
    for (name, _) in members() {
        assert_eq!(
            admin_value(&rows, &name, "source").as_deref(),
            Some("config")
        );
    }

    let port = added_port();
    let started = Instant::now();
    patroni(&["add"]).await;
    let streaming = started.elapsed();
    wait_nodes(&admin_client, 30, "pg4 from Patroni serves reads", |rows| {
        admin_value(rows, "pg4", "source").as_deref() == Some("patroni")
            && admin_value(rows, "pg4", "role").as_deref() == Some("replica")
            && admin_value(rows, "pg4", "reads").as_deref() == Some("true")
    })
    .await;
    common::wait_until(30, "a read lands on pg4", || async {
        common::read_ports(&proxy, 4, 2).await.contains(&port)
    })
    .await;
    let joined = started.elapsed();

    // Tagged noloadbalance: no reads for it, the others serve them all.
    let tagging = Instant::now();
    patroni(&["tag", "pg4", "noloadbalance"]).await;
    wait_nodes(&admin_client, 10, "pg4 tagged noloadbalance", |rows| {
        admin_value(rows, "pg4", "noloadbalance").as_deref() == Some("true")
            && admin_value(rows, "pg4", "reads").as_deref() == Some("false")
    })
    .await;
    let untagged_out = tagging.elapsed();
    let ports = common::read_ports(&proxy, 10, 4).await;
    assert_eq!(ports.len(), 40);
    assert!(
        !ports.contains(&port),
        "a read went to pg4, tagged noloadbalance: {ports:?}"
    );
    let replicas: BTreeSet<u16> = ports.iter().copied().collect();
    assert_eq!(
        replicas.len(),
        2,
        "reads should be spread over the two other replicas: {ports:?}"
    );

    // Gone from /cluster: out of the rotation (it was added by Patroni).
    patroni(&["remove"]).await;
    wait_nodes(&admin_client, 10, "pg4 no longer listed", |rows| {
        admin_value(rows, "pg4", "reads").as_deref() == Some("false")
            && admin_value(rows, "pg4", "reason").is_some_and(|r| r.contains("no longer listed"))
    })
    .await;
    eprintln!(
        "pg4: dev/patroni.sh add returned (pg4 streaming) after {streaming:?}; a read through \
         pgsplit landed on it {joined:?} after the add started; out of the rotation \
         {untagged_out:?} after dev/patroni.sh tag started; test took {:?}",
        began.elapsed()
    );
}
