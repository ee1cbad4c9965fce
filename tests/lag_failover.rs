//! Replica failures and lag spikes end to end, on the real cluster, while clients read
//! through pgsplit:
//!
//! - **a replica stopped hard** (`dev/cluster.sh stop 2`, i.e. `pg_ctl stop -m immediate`)
//!   under a continuous read load: only the reads that were running on it when it died fail,
//!   every read started after it is gone succeeds on the other nodes, the monitor marks it
//!   down, and once it is started again it comes back and serves reads;
//! - **a bulk import** on the primary (`pgbench -i -s 20` in a schema of its own in database
//!   bench) with a 2 MB lag threshold: the replicas leave the read rotation while they replay
//!   it and come back after, with no client error, and no read goes to a replica while it is
//!   out;
//! - **lag hovering around the threshold** (a 1 s apply delay on the replicas while the
//!   primary writes at a rate that puts the lag above the threshold, then at one that puts it
//!   between the readmit level and the threshold, and so on): each replica is ejected once and
//!   readmitted once, after the writes stop. A second proxy without hysteresis watches the
//!   same replicas and must flap, which shows that the lag really crossed the threshold back
//!   and forth as the monitor sees it.
//!
//! Each test changes how the replicas run, so each holds `common::REPLICA_REPLAY_LOCK` (the
//! first two directly, the third through `common::ReplicaApplyDelay`) for its whole length,
//! and drop guards put the cluster back even when it panics. Replica states come from the
//! proxy's topology, recorded by a background poller every 20 ms ([`StateLog`]); the server
//! behind each read is `inet_server_port()` evaluated inside it. The figures each test
//! measures go to stderr (`--nocapture` shows them).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    cluster_lock, node_index, node_port, pg_command, primary_port, replica_state,
    replica_superuser, run_command, superuser, wait_until, with_timeout, TestProxy, APP_PASSWORD,
    REPLICA_REPLAY_LOCK,
};
use pgsplit::config::ByteSize;
use pgsplit::lag::HealthState;
use pgsplit::topology::Topology;
use tokio::task::JoinHandle;
use tokio_postgres::types::PgLsn;
use tokio_postgres::{AsyncMessage, Client, NoTls, SimpleQueryMessage};

/// Concurrent readers in the read-load tests.
const READERS: usize = 8;

/// What each reader runs in a loop: an autocommit read that names its server, and lasts
/// long enough (10 ms) to be caught running when a replica dies.
const READ_SQL: &str = "select inet_server_port(), pg_sleep(0.01)";

/// The schema of database bench that the bulk import fills (pgbench's tables in public,
/// used by the benchmarks, are left alone).
const IMPORT_SCHEMA: &str = "pgsplit_test_lag_import";

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_hard_under_read_load_only_fails_reads_in_flight() {
    let _lock = cluster_lock(REPLICA_REPLAY_LOCK, "the replica replay lock").await;
    let proxy = TestProxy::start(|c| c.routing.enabled = true).await;
    let (replica1, replica2) = (node_port("replica1"), node_port("replica2"));
    let replica2_index = node_index(&proxy, "replica2");
    wait_for_reads_on(&proxy, &[replica1, replica2]).await;

    let states = StateLog::start(&proxy);
    let load = ReadLoad::start(&proxy, READERS);
    wait_until(10, "the readers have run 20 reads on replica2", || async {
        load.successes_on(replica2, None) >= 20
    })
    .await;

    let mut stopped = StoppedReplica::new(2);
    let stop_began = Instant::now();
    stopped.stop().await;
    let stop_done = Instant::now();
    let down_at = states
        .wait_for(
            replica2_index,
            HealthState::Down,
            stop_began,
            5,
            "replica2 marked down",
        )
        .await;

    // The window without replica2: every reader gets to start reads more than 2 s after
    // the stop, so reads in it cover the time before and after the monitor noticed.
    let quiet_from = stop_done + Duration::from_secs(2);
    wait_until(15, "every reader ran a read 2 s after the stop", || async {
        let reads = load.reads();
        (0..READERS).all(|n| {
            reads
                .iter()
                .any(|r| r.reader == n && r.started > quiet_from)
        })
    })
    .await;

    let start_began = Instant::now();
    stopped.start().await;
    let start_done = Instant::now();
    let healthy_at = states
        .wait_for(
            replica2_index,
            HealthState::Healthy,
            start_began,
            15,
            "replica2 healthy again",
        )
        .await;
    wait_until(10, "reads reach replica2 again", || async {
        load.successes_on(replica2, Some(healthy_at)) >= 5
    })
    .await;
    let reads = load.finish().await;

    // Which reads failed, and whether each was running on replica2 when it died: started
    // before the stop was complete, ended after it began, and failed because the server
    // connection running it was lost. A read that failed while pgsplit was still getting
    // it a server (connecting, authenticating, applying settings) had not been sent to
    // replica2 and could have run elsewhere: it counts as a stray failure.
    let failures: Vec<&Read> = reads.iter().filter(|r| r.outcome.is_err()).collect();
    let in_flight = |r: &Read| {
        r.started <= stop_done
            && r.finished >= stop_began
            && r.failure().is_some_and(|f| f.server_lost_on("replica2"))
    };
    let stray: Vec<&&Read> = failures.iter().filter(|r| !in_flight(r)).collect();
    let during: Vec<u16> = reads
        .iter()
        .filter(|r| r.started > stop_done && r.finished < start_began)
        .filter_map(|r| r.outcome.as_ref().ok().copied())
        .collect();
    let after_stop = reads.iter().filter(|r| r.started > stop_done).count();

    eprintln!(
        "hard stop of replica2 under {READERS} readers: {} reads, {} failed (in flight on \
         replica2); stop took {:?}; marked down {:?} after the stop returned; \
         {} reads ran without it ({} on replica1, {} on the primary); start took {:?}, \
         healthy {:?} after it began",
        reads.len(),
        failures.len(),
        stop_done - stop_began,
        down_at.saturating_duration_since(stop_done),
        during.len(),
        during.iter().filter(|&&p| p == replica1).count(),
        during.iter().filter(|&&p| p == primary_port()).count(),
        start_done - start_began,
        healthy_at.saturating_duration_since(start_began),
    );
    let mut sqlstates: Vec<&str> = failures
        .iter()
        .filter_map(|r| r.failure())
        .map(|f| f.sqlstate.as_str())
        .collect();
    sqlstates.sort_unstable();
    sqlstates.dedup();
    let mut notices: Vec<&str> = failures
        .iter()
        .filter_map(|r| r.failure())
        .flat_map(|f| f.notices.iter().map(String::as_str))
        .collect();
    notices.sort_unstable();
    notices.dedup();
    eprintln!("  SQLSTATEs of the failed reads: {sqlstates:?}; notices before them: {notices:?}");
    for f in &failures {
        eprintln!(
            "  failed read (reader {}, started {:?} before the stop returned): {:?}",
            f.reader,
            stop_done.saturating_duration_since(f.started),
            f.failure()
        );
    }

    assert!(
        stray.is_empty(),
        "reads failed that were not running on replica2 when it died (stop began at +0, \
         done at +{:?}):\n{:#?}",
        stop_done - stop_began,
        stray
            .iter()
            .map(|r| r.describe(stop_began))
            .collect::<Vec<_>>()
    );
    assert!(
        failures.len() <= READERS,
        "{} reads failed, more than one per reader",
        failures.len()
    );
    assert!(after_stop > 0);
    assert!(
        during.contains(&replica1),
        "replica1 served no read while replica2 was down: {during:?}"
    );
    assert!(
        !during.contains(&replica2),
        "a read succeeded on replica2 while it was stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_import_under_read_load_ejects_and_readmits_without_client_errors() {
    let _lock = cluster_lock(REPLICA_REPLAY_LOCK, "the replica replay lock").await;
    // The default check interval (250 ms). The import writes about 80 MB/s and the
    // replicas fall 20-30 MB behind: the monitor must see it although the primary's
    // position moves 20 MB per interval (each replica is read right after the primary).
    let threshold = ByteSize::mb(4);
    let proxy = TestProxy::start(|c| {
        c.routing.enabled = true;
        c.lag.max_replica_lag = threshold;
    })
    .await;
    let replicas: Vec<(usize, u16)> = ["replica1", "replica2"]
        .iter()
        .map(|name| (node_index(&proxy, name), node_port(name)))
        .collect();
    let ports: Vec<u16> = replicas.iter().map(|&(_, port)| port).collect();
    wait_for_reads_on(&proxy, &ports).await;
    psql_on_primary(
        "bench",
        &format!("create schema if not exists {IMPORT_SCHEMA}"),
    )
    .await;

    let states = StateLog::start(&proxy);
    let lag = LagSampler::start().await;
    let load = ReadLoad::start(&proxy, READERS);
    wait_until(10, "the readers have run 50 reads", || async {
        load.reads().len() >= 50
    })
    .await;

    let import_began = Instant::now();
    common::pgbench(
        primary_port(),
        "bench",
        Some(IMPORT_SCHEMA),
        &["-i", "-s", "20", "-q"],
    )
    .await;
    let import_done = Instant::now();

    wait_until(
        10,
        "both replicas healthy within 10 s of the import",
        || async {
            replicas
                .iter()
                .all(|&(node, _)| replica_state(&proxy, node) == Some(HealthState::Healthy))
        },
    )
    .await;
    let all_healthy = Instant::now();
    wait_until(10, "reads reach both replicas again", || async {
        ports
            .iter()
            .all(|&port| load.successes_on(port, Some(all_healthy)) > 0)
    })
    .await;
    let reads = load.finish().await;
    let peaks = lag.peaks();
    drop(lag);
    psql_on_primary("bench", &format!("drop schema {IMPORT_SCHEMA} cascade")).await;

    // Reads sent while a replica was out: the topology said so just before the read was
    // sent and still just after it returned, so the routing decision was taken while it
    // was out. None may have run there.
    let mut while_out = Vec::new();
    let mut misrouted = Vec::new();
    for read in &reads {
        let out: Vec<u16> = replicas
            .iter()
            .filter(|&&(node, _)| read.out_throughout(node))
            .map(|&(_, port)| port)
            .collect();
        if let (false, Ok(port)) = (out.is_empty(), &read.outcome) {
            while_out.push(*port);
            if out.contains(port) {
                misrouted.push(read.describe(import_began));
            }
        }
    }
    let served_while_out: Vec<String> = [("replica1", ports[0]), ("replica2", ports[1])]
        .into_iter()
        .chain([("primary", primary_port())])
        .map(|(name, port)| {
            let n = while_out.iter().filter(|&&p| p == port).count();
            format!("{name}: {n}")
        })
        .collect();
    let failures: Vec<String> = reads
        .iter()
        .filter(|r| r.outcome.is_err())
        .map(|r| r.describe(import_began))
        .collect();
    let changes = states.changes();
    let ejections_during_import = changes
        .iter()
        .filter(|c| c.to == HealthState::Lagging && c.at >= import_began && c.at <= import_done)
        .count();

    eprintln!(
        "bulk import (pgbench -i -s 20) in {:?} under {READERS} readers, threshold {}: {} reads, \
         {} failed, {} sent while a replica was out (served by {:?}); lag peaks {:?}; both \
         replicas healthy {:?} after the import; transitions (time from the import start):",
        import_done - import_began,
        pgsplit::lag::format_bytes(threshold.as_u64()),
        reads.len(),
        failures.len(),
        while_out.len(),
        served_while_out,
        peaks
            .iter()
            .map(|(name, bytes)| format!("{name}: {}", pgsplit::lag::format_bytes(*bytes)))
            .collect::<Vec<_>>(),
        all_healthy - import_done,
    );
    for c in &changes {
        eprintln!("  {}", c.describe(import_began));
    }
    eprintln!(
        "  monitor sessions on the primary: {:?}",
        monitor_sessions_on_primary().await
    );

    assert!(failures.is_empty(), "client errors: {failures:#?}");
    if ejections_during_import == 0 {
        // The lag guard judges replicas against its last sample of the primary's WAL
        // position: show whether this proxy's primary checks were running.
        panic!(
            "no replica left the rotation during the import (lag peaks {peaks:?}): \
             {changes:?}; this process's monitor sessions on the primary: {:?}",
            monitor_sessions_on_primary().await
        );
    }
    assert!(
        !while_out.is_empty(),
        "no read was sent while a replica was out, so nothing shows where such reads go"
    );
    assert!(
        misrouted.is_empty(),
        "reads ran on a replica that was out of the rotation: {misrouted:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_hovering_around_the_threshold_does_not_flap() {
    const THRESHOLD: u64 = 2 << 20;
    // The readmit level with the default readmit_percent (50).
    const READMIT: u64 = THRESHOLD / 2;
    // With a 1 s apply delay, the lag is about the WAL written in the last second: 1.6
    // times the threshold at HIGH, 0.9 times at LOW. Even as the monitor sees it (its
    // primary position can be 250 ms old, so it reads up to a quarter less) LOW stays
    // above the readmit level and HIGH above the threshold.
    const HIGH: u64 = THRESHOLD * 16 / 10;
    const LOW: u64 = THRESHOLD * 9 / 10;
    let phase = Duration::from_secs(2);

    let _delay = common::ReplicaApplyDelay::hold(Duration::from_secs(1)).await;
    let guarded = TestProxy::start(|c| {
        c.routing.enabled = true;
        c.lag.max_replica_lag = ByteSize(THRESHOLD);
    })
    .await;
    // No hysteresis: back in as soon as the lag is at or below the threshold.
    let naive = TestProxy::start(|c| {
        c.routing.enabled = true;
        c.lag.max_replica_lag = ByteSize(THRESHOLD);
        c.lag.readmit_percent = 100;
        c.lag.readmit_after = pgsplit::config::Duration::ZERO;
    })
    .await;
    let replicas: Vec<(&str, usize)> = ["replica1", "replica2"]
        .iter()
        .map(|&name| (name, node_index(&guarded, name)))
        .collect();
    wait_until(10, "every replica healthy in both proxies", || async {
        replicas.iter().all(|&(_, node)| {
            replica_state(&guarded, node) == Some(HealthState::Healthy)
                && replica_state(&naive, node) == Some(HealthState::Healthy)
        })
    })
    .await;

    let guarded_states = StateLog::start(&guarded);
    let naive_states = StateLog::start(&naive);
    let lag = LagSampler::start().await;
    let primary = superuser().await;
    let table = common::unique("lag_hover");
    primary
        .batch_execute(&format!("create table {table} (x text)"))
        .await
        .unwrap();

    let writes_began = Instant::now();
    let phases: Vec<(u64, Duration)> = [HIGH, LOW]
        .repeat(4)
        .into_iter()
        .map(|rate| (rate, phase))
        .collect();
    let writes_done = write_wal_at(&primary, &table, &phases).await;

    wait_until(10, "every replica readmitted in both proxies", || async {
        replicas.iter().all(|&(_, node)| {
            replica_state(&guarded, node) == Some(HealthState::Healthy)
                && replica_state(&naive, node) == Some(HealthState::Healthy)
        })
    })
    .await;
    // The readmissions just seen in the topology are in the logs too (on a loaded machine
    // the 20 ms poll could still be behind: the guarded log once missed them).
    guarded_states.caught_up().await;
    naive_states.caught_up().await;
    let samples = lag.samples();
    drop(lag);
    primary
        .batch_execute(&format!("drop table {table}"))
        .await
        .unwrap();

    let mut report = Vec::new();
    let mut problems = Vec::new();
    for &(name, node) in &replicas {
        let ejected = guarded_states.count(node, HealthState::Healthy, HealthState::Lagging);
        let readmitted = guarded_states.count(node, HealthState::Lagging, HealthState::Healthy);
        let other = guarded_states.changes_of(node).len() - ejected - readmitted;
        let naive_ejected = naive_states.count(node, HealthState::Healthy, HealthState::Lagging);
        let first_ejection = guarded_states.first(node, HealthState::Lagging, writes_began);
        let readmission = guarded_states.first(node, HealthState::Healthy, writes_began);
        // The lag this test produced, as sampled straight from the cluster, while the
        // guarded proxy had the replica out and the writes went on.
        let hover: Vec<LagSample> = samples
            .iter()
            .filter(|s| s.replica == name && s.at < writes_done)
            .filter(|s| first_ejection.is_some_and(|at| s.at >= at))
            .copied()
            .collect();
        let crossings = hover
            .windows(2)
            .filter(|w| (w[0].bytes > THRESHOLD) != (w[1].bytes > THRESHOLD))
            .count();
        let (low, high) = (
            hover.iter().map(|s| s.bytes).min().unwrap_or(0),
            hover.iter().map(|s| s.bytes).max().unwrap_or(0),
        );
        let longest_low = longest_stretch_at_or_below(&hover, READMIT);
        report.push(format!(
            "{name}: guarded proxy ejected {ejected}x, readmitted {readmitted}x ({:?} after the \
             writes stopped); naive proxy ejected {naive_ejected}x; sampled lag while out: \
             {} .. {}, crossed the threshold {crossings}x, longest stretch at or below the \
             readmit level {longest_low:?}",
            readmission.map(|at| at.saturating_duration_since(writes_done)),
            pgsplit::lag::format_bytes(low),
            pgsplit::lag::format_bytes(high),
        ));
        // The lag was what this test is about: crossing the threshold back and forth, as
        // sampled here and as a monitor without hysteresis saw it, and never at the readmit
        // level for as long as readmission takes (readmit_after, 1 s): a readmission during
        // the writes would have been a flap, not a recovery. (A stalled writer can dip the
        // lag below that level for a moment; that entitles no readmission. 900 ms leaves a
        // margin for the 50 ms sampling.)
        if crossings < 4 {
            problems.push(format!(
                "{name}: the sampled lag crossed the threshold only {crossings}x"
            ));
        }
        if longest_low >= Duration::from_millis(900) {
            problems.push(format!(
                "{name}: the sampled lag stayed at or below the readmit level for \
                 {longest_low:?}, long enough for a readmission"
            ));
        }
        if naive_ejected < 2 {
            problems.push(format!(
                "{name}: the proxy without hysteresis ejected it {naive_ejected}x, so the \
                 monitor did not see the lag cross the threshold back and forth"
            ));
        }
        // What is tested: out once, back once, and only after the writes stopped.
        if ejected != 1 || readmitted != 1 || other != 0 {
            problems.push(format!(
                "{name}: the guarded proxy flapped: {:?}",
                guarded_states
                    .changes_of(node)
                    .iter()
                    .map(|c| c.describe(writes_began))
                    .collect::<Vec<_>>()
            ));
        }
        if readmission.is_some_and(|at| at < writes_done) {
            problems.push(format!("{name}: readmitted while the lag still hovered"));
        }
    }
    eprintln!(
        "lag hovering around {} (readmit at {}), writes {:?}:\n  {}",
        pgsplit::lag::format_bytes(THRESHOLD),
        pgsplit::lag::format_bytes(READMIT),
        writes_done - writes_began,
        report.join("\n  ")
    );
    assert!(problems.is_empty(), "{problems:#?}");
}

// ---------------------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------------------

/// A replica this test stops: started again when dropped unless the test did, even when
/// the test panics.
struct StoppedReplica {
    number: u8,
    running: bool,
}

impl StoppedReplica {
    /// Does nothing yet: made before the stop, so that a stop that fails half way is
    /// undone too.
    fn new(number: u8) -> StoppedReplica {
        StoppedReplica {
            number,
            running: true,
        }
    }

    /// `dev/cluster.sh stop N`: an immediate shutdown, returns once it is gone.
    async fn stop(&mut self) {
        self.running = false;
        self.cluster("stop").await;
    }

    /// `dev/cluster.sh start N`: returns once both replicas stream again.
    async fn start(&mut self) {
        self.cluster("start").await;
        self.running = true;
    }

    async fn cluster(&self, command: &'static str) {
        let number = self.number.to_string();
        tokio::task::spawn_blocking(move || common::cluster_command(&[command, &number]))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for StoppedReplica {
    fn drop(&mut self) {
        if self.running {
            return;
        }
        let number = self.number.to_string();
        if let Err(e) = common::cluster_command(&["start", &number]) {
            eprintln!(
                "could not start replica {number} again ({e}): run dev/cluster.sh start {number}"
            );
        }
    }
}

/// Runs one SQL statement with psql as app on the primary, in `database`.
async fn psql_on_primary(database: &str, sql: &str) {
    let mut psql = pg_command("psql", primary_port(), "app", APP_PASSWORD, database);
    psql.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql]);
    let out = run_command(psql, None, 60).await;
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The lag monitor's sessions on the primary opened by this process, as "pid state,
/// query started N s ago, connected N s ago", for failure messages.
async fn monitor_sessions_on_primary() -> Vec<String> {
    let ports = common::own_ports_to(primary_port());
    let checker = superuser().await;
    checker
        .query(
            "select format('%s %s, query started %s s ago, connected %s s ago', pid, state, \
                    round(extract(epoch from now() - query_start)::numeric, 2), \
                    round(extract(epoch from now() - backend_start)::numeric, 2)) \
             from pg_stat_activity \
             where application_name = 'pgsplit monitor' and client_port = any($1)",
            &[&ports],
        )
        .await
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_else(|e| vec![e.to_string()])
}

/// Waits until reads of fresh clients through the proxy have reached every one of
/// `ports`.
async fn wait_for_reads_on(proxy: &TestProxy, ports: &[u16]) {
    wait_until(10, "reads reach every replica", || async {
        let seen = common::read_ports(proxy, 2 * ports.len(), 2).await;
        ports.iter().all(|p| seen.contains(p))
    })
    .await;
}

/// Writes rows of about 1 kB into `table` on the primary so that it generates WAL at each
/// rate (bytes per second) for its duration, in 25 ms steps. The WAL written is measured
/// with `pg_current_wal_lsn()` after each step, so the rates are WAL bytes, whatever a row
/// costs. Returns when the last write was done.
async fn write_wal_at(primary: &Client, table: &str, phases: &[(u64, Duration)]) -> Instant {
    const ROW_WAL: f64 = 1100.0;
    let start = current_lsn(primary).await;
    let mut target = 0.0;
    let mut written = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(25));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    let mut last_write = last;
    for &(rate, length) in phases {
        let end = Instant::now() + length;
        while Instant::now() < end {
            tick.tick().await;
            let now = Instant::now();
            target += rate as f64 * (now - last).as_secs_f64();
            last = now;
            let behind = target - written as f64;
            if behind > 0.0 {
                let rows = (behind / ROW_WAL).ceil().clamp(1.0, 5000.0) as u64;
                primary
                    .batch_execute(&format!(
                        "insert into {table} select repeat('x', 1000) from generate_series(1, {rows})"
                    ))
                    .await
                    .unwrap();
                written = current_lsn(primary).await - start;
                last_write = Instant::now();
            }
        }
    }
    last_write
}

/// The longest time the samples stayed at or below `level`: from the first sample of a run
/// at or below it to the first sample above it after the run (or the run's last sample).
fn longest_stretch_at_or_below(samples: &[LagSample], level: u64) -> Duration {
    let mut longest = Duration::ZERO;
    let mut since = None;
    for s in samples {
        match (s.bytes <= level, since) {
            (true, None) => since = Some(s.at),
            (false, Some(start)) => {
                longest = longest.max(s.at - start);
                since = None;
            }
            _ => {}
        }
    }
    if let (Some(start), Some(last)) = (since, samples.last()) {
        longest = longest.max(last.at - start);
    }
    longest
}

async fn current_lsn(client: &Client) -> u64 {
    let row = client
        .query_one("select pg_current_wal_lsn()", &[])
        .await
        .unwrap();
    u64::from(row.get::<_, PgLsn>(0))
}

// ---------------------------------------------------------------------------------------
// Watching the proxy's topology
// ---------------------------------------------------------------------------------------

/// The state of every replica in a topology: (node index, state).
fn states(topology: &Topology) -> Vec<(usize, HealthState)> {
    topology
        .snapshot()
        .iter()
        .map(|r| (r.node, r.state))
        .collect()
}

/// A replica's state changing in the proxy's topology, as the poller saw it.
#[derive(Debug, Clone, Copy)]
struct Change {
    at: Instant,
    node: usize,
    from: HealthState,
    to: HealthState,
}

impl Change {
    fn describe(&self, origin: Instant) -> String {
        format!(
            "{:+.2} s node {}: {:?} -> {:?}",
            signed_secs(self.at, origin),
            self.node,
            self.from,
            self.to
        )
    }
}

/// Polls the proxy's topology every 20 ms in the background and records every change of a
/// replica's state. The monitor checks every 250 ms, so no state it sets is missed. Stops
/// when dropped.
struct StateLog {
    changes: Arc<Mutex<Vec<Change>>>,
    /// Polls done so far.
    polls: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl StateLog {
    fn start(proxy: &TestProxy) -> StateLog {
        let topology = proxy.proxy.routing().topology.clone();
        let changes = Arc::new(Mutex::new(Vec::new()));
        let sink = changes.clone();
        let polls = Arc::new(AtomicU64::new(0));
        let counter = polls.clone();
        let task = tokio::spawn(async move {
            let mut last = states(&topology);
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tick.tick().await;
                let now = states(&topology);
                let at = Instant::now();
                for (&(node, to), &(_, from)) in now.iter().zip(&last) {
                    if to != from {
                        sink.lock().unwrap().push(Change { at, node, from, to });
                    }
                }
                last = now;
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        StateLog {
            changes,
            polls,
            task,
        }
    }

    /// Waits until the log has polled again after this call (at most 5 s): what the
    /// topology said before it is then recorded. A check of the topology itself can be
    /// ahead of the log by up to one poll.
    async fn caught_up(&self) {
        let from = self.polls.load(Ordering::SeqCst);
        wait_until(5, "the state log polls again", || async {
            self.polls.load(Ordering::SeqCst) >= from + 2
        })
        .await;
    }

    fn changes(&self) -> Vec<Change> {
        self.changes.lock().unwrap().clone()
    }

    fn changes_of(&self, node: usize) -> Vec<Change> {
        self.changes()
            .into_iter()
            .filter(|c| c.node == node)
            .collect()
    }

    /// How many times `node` went from `from` to `to`.
    fn count(&self, node: usize, from: HealthState, to: HealthState) -> usize {
        self.changes_of(node)
            .iter()
            .filter(|c| c.from == from && c.to == to)
            .count()
    }

    /// When `node` first went to `to` at or after `since`.
    fn first(&self, node: usize, to: HealthState, since: Instant) -> Option<Instant> {
        self.changes_of(node)
            .iter()
            .find(|c| c.to == to && c.at >= since)
            .map(|c| c.at)
    }

    /// Waits up to `secs` until `node` has gone to `to` at or after `since`; returns when.
    async fn wait_for(
        &self,
        node: usize,
        to: HealthState,
        since: Instant,
        secs: u64,
        what: &str,
    ) -> Instant {
        wait_until(secs, what, || async {
            self.first(node, to, since).is_some()
        })
        .await;
        self.first(node, to, since).expect("seen by wait_until")
    }
}

impl Drop for StateLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------
// Lag as the cluster reports it
// ---------------------------------------------------------------------------------------

/// How far one replica's replay was behind the primary at one moment.
#[derive(Debug, Clone, Copy)]
struct LagSample {
    at: Instant,
    replica: &'static str,
    bytes: u64,
}

/// Samples every 50 ms, in the background and straight from the cluster, how far each
/// replica's replay (`pg_last_wal_replay_lsn()`) is behind the primary's
/// `pg_current_wal_lsn()`, read just before: what the monitor computes, with a fresher
/// primary position. Stops when dropped.
struct LagSampler {
    samples: Arc<Mutex<Vec<LagSample>>>,
    task: JoinHandle<()>,
}

impl LagSampler {
    async fn start() -> LagSampler {
        let primary = superuser().await;
        let mut replicas = Vec::new();
        for name in ["replica1", "replica2"] {
            replicas.push((name, replica_superuser(node_port(name)).await));
        }
        let samples = Arc::new(Mutex::new(Vec::new()));
        let sink = samples.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tick.tick().await;
                let head = current_lsn(&primary).await;
                for (name, replica) in &replicas {
                    let row = replica
                        .query_one("select pg_last_wal_replay_lsn()", &[])
                        .await
                        .unwrap();
                    let replayed = u64::from(row.get::<_, PgLsn>(0));
                    sink.lock().unwrap().push(LagSample {
                        at: Instant::now(),
                        replica: name,
                        bytes: head.saturating_sub(replayed),
                    });
                }
            }
        });
        LagSampler { samples, task }
    }

    fn samples(&self) -> Vec<LagSample> {
        self.samples.lock().unwrap().clone()
    }

    /// The largest lag sampled for each replica.
    fn peaks(&self) -> Vec<(&'static str, u64)> {
        let samples = self.samples();
        ["replica1", "replica2"]
            .into_iter()
            .map(|name| {
                let peak = samples
                    .iter()
                    .filter(|s| s.replica == name)
                    .map(|s| s.bytes)
                    .max()
                    .unwrap_or(0);
                (name, peak)
            })
            .collect()
    }
}

impl Drop for LagSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------
// Read load through the proxy
// ---------------------------------------------------------------------------------------

/// One read through the proxy, as a reader saw it.
#[derive(Debug, Clone)]
struct Read {
    reader: usize,
    started: Instant,
    finished: Instant,
    /// The replicas' states in the topology just before the read was sent, and just after
    /// it returned.
    before: Vec<(usize, HealthState)>,
    after: Vec<(usize, HealthState)>,
    /// The port of the server that ran it, or what the client got instead.
    outcome: Result<u16, ReadFailure>,
}

/// What a client got instead of a result.
#[derive(Debug, Clone)]
struct ReadFailure {
    /// The error's SQLSTATE ("" when it is not a server error).
    sqlstate: String,
    message: String,
    /// Notices the connection had received when the error came (a dying server's last
    /// words), as "SEVERITY SQLSTATE: message".
    notices: Vec<String>,
}

impl ReadFailure {
    fn from_error(e: &tokio_postgres::Error, notices: &Mutex<Vec<String>>) -> ReadFailure {
        ReadFailure {
            sqlstate: common::sqlstate(e),
            message: common::describe(e),
            notices: notices.lock().unwrap().clone(),
        }
    }

    fn other(message: impl Into<String>) -> ReadFailure {
        ReadFailure {
            sqlstate: String::new(),
            message: message.into(),
            notices: Vec::new(),
        }
    }

    /// Whether this is pgsplit telling the client that the server connection on `node`
    /// that ran its statement was lost (FATAL 08006, then pgsplit closes the client
    /// connection): the statement was in flight there. Errors while pgsplit is still
    /// getting a server for a statement are not fatal, and say something else.
    fn server_lost_on(&self, node: &str) -> bool {
        self.sqlstate == "08006"
            && self.message.starts_with("FATAL")
            && self.message.contains(&format!(
                "server connection lost: lost connection to node {node}:"
            ))
    }
}

impl Read {
    fn failure(&self) -> Option<&ReadFailure> {
        self.outcome.as_ref().err()
    }

    /// Whether the topology had `node` out of the rotation both before the read was sent
    /// and after it returned (so also when the read was routed).
    fn out_throughout(&self, node: usize) -> bool {
        let out = |states: &[(usize, HealthState)]| {
            states
                .iter()
                .any(|&(n, s)| n == node && s != HealthState::Healthy)
        };
        out(&self.before) && out(&self.after)
    }

    fn describe(&self, origin: Instant) -> String {
        format!(
            "reader {} {:+.3} s .. {:+.3} s: {:?}",
            self.reader,
            signed_secs(self.started, origin),
            signed_secs(self.finished, origin),
            self.outcome
        )
    }
}

/// Readers, each on its own client connection through the proxy, running [`READ_SQL`]
/// back to back until stopped, and reconnecting after an error (pgsplit closes a client
/// connection whose server connection died). Every read is recorded. Aborted when
/// dropped.
struct ReadLoad {
    stop: Arc<AtomicBool>,
    reads: Arc<Mutex<Vec<Read>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl ReadLoad {
    fn start(proxy: &TestProxy, readers: usize) -> ReadLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(Mutex::new(Vec::new()));
        let topology = proxy.proxy.routing().topology.clone();
        let tasks = (0..readers)
            .map(|reader| {
                let config = proxy.pg_config(&common::unique("lag_failover_reader"));
                tokio::spawn(read_loop(
                    reader,
                    config,
                    topology.clone(),
                    stop.clone(),
                    reads.clone(),
                ))
            })
            .collect();
        ReadLoad { stop, reads, tasks }
    }

    fn reads(&self) -> Vec<Read> {
        self.reads.lock().unwrap().clone()
    }

    /// Reads that succeeded on `port` (started at or after `since`, if given).
    fn successes_on(&self, port: u16, since: Option<Instant>) -> usize {
        self.reads
            .lock()
            .unwrap()
            .iter()
            .filter(|r| since.is_none_or(|t| r.started >= t))
            .filter(|r| r.outcome.as_ref().ok() == Some(&port))
            .count()
    }

    /// Stops the readers after their current read, and returns every read.
    async fn finish(mut self) -> Vec<Read> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks.drain(..) {
            with_timeout(30, "a reader stops", task).await.unwrap();
        }
        self.reads()
    }
}

impl Drop for ReadLoad {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

type Notices = Arc<Mutex<Vec<String>>>;

async fn read_loop(
    reader: usize,
    config: tokio_postgres::Config,
    topology: Arc<Topology>,
    stop: Arc<AtomicBool>,
    reads: Arc<Mutex<Vec<Read>>>,
) {
    let mut connection: Option<(Client, Notices)> = None;
    while !stop.load(Ordering::Relaxed) {
        let before = states(&topology);
        let started = Instant::now();
        let outcome = match connection.take() {
            Some(c) => Ok(c),
            None => connect_keeping_notices(&config).await,
        };
        let outcome = match outcome {
            Ok((client, notices)) => {
                let result =
                    tokio::time::timeout(Duration::from_secs(10), client.simple_query(READ_SQL))
                        .await;
                match result {
                    Ok(Ok(messages)) => match first_value(&messages).and_then(|v| v.parse().ok()) {
                        Some(port) => {
                            connection = Some((client, notices));
                            Ok(port)
                        }
                        None => Err(ReadFailure::other(format!("no port in {messages:?}"))),
                    },
                    Ok(Err(e)) => Err(ReadFailure::from_error(&e, &notices)),
                    Err(_) => Err(ReadFailure::other("the read took more than 10 s")),
                }
            }
            Err(failure) => Err(failure),
        };
        reads.lock().unwrap().push(Read {
            reader,
            started,
            finished: Instant::now(),
            before,
            after: states(&topology),
            outcome,
        });
    }
}

/// Connects, and collects the notices the connection receives (tokio-postgres only logs
/// them otherwise).
async fn connect_keeping_notices(
    config: &tokio_postgres::Config,
) -> Result<(Client, Notices), ReadFailure> {
    let notices: Notices = Arc::default();
    let (client, mut connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| ReadFailure::from_error(&e, &notices))?;
    let sink = notices.clone();
    tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notice(n)) => sink.lock().unwrap().push(format!(
                    "{} {}: {}",
                    n.severity(),
                    n.code().code(),
                    n.message()
                )),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    Ok((client, notices))
}

// ---------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------

/// The first value of the first row of a simple query's messages.
fn first_value(messages: &[SimpleQueryMessage]) -> Option<String> {
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
        _ => None,
    })
}

/// `at - origin` in seconds, negative when `at` is earlier.
fn signed_secs(at: Instant, origin: Instant) -> f64 {
    match at.checked_duration_since(origin) {
        Some(d) => d.as_secs_f64(),
        None => -(origin - at).as_secs_f64(),
    }
}
