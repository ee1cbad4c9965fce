//! import_probe: what clients of a read/write-splitting proxy see while the primary is busy
//! with a bulk import (issue "benchmarks", scenario 2).
//!
//! It runs, all at once, for `--seconds` (or until SIGTERM / Ctrl-C):
//!
//! - a **writer** through the proxy that increments a shared marker
//!   (`pgsplit_probe_marker`, row 0) every `--write-every-ms` and remembers the value it
//!   last saw committed, and when each value was committed;
//! - **pinned clients** through the proxy: each writes its own row of
//!   `pgsplit_probe_pinned`, then at once reads it back in a separate autocommit statement.
//!   The read falls inside the client's read-your-writes pin, so a value older than the one
//!   it just wrote is a *stale read inside the pin*;
//! - **plain readers** through the proxy: `SELECT v, inet_server_port()` of the marker. A
//!   read is *stale* when `v` is lower than the value the writer had committed before the
//!   read was sent. The port names the node that served it (`--nodes`);
//! - with `--token-readers N` (pgsplit only), a **token writer** through the proxy that
//!   increments a second marker (row 1) on its own connection and then takes its causal
//!   token (`SHOW pgsplit.causal_token`), and N **token readers**, other connections (like
//!   an application pool's) that read row 1 with the latest token the writer handed over in
//!   a leading comment `/* pgsplit:causal_token=... */`. Such a read is *stale* when it
//!   returns a value lower than the one the writer had committed when it took the token;
//! - a **sampler** every `--sample-ms`: each replica's lag in bytes measured the way pgsplit
//!   does (the primary's `pg_current_wal_lsn()` minus the replica's
//!   `pg_last_wal_replay_lsn()`, the replica asked directly), the lag the primary reports in
//!   `pg_stat_replication` (replay position reported by the standby, up to
//!   `wal_receiver_status_interval` old), and the proxy's own view of each replica: pgsplit's
//!   `/metrics` (`--metrics URL`) or Pgpool-II's `SHOW POOL_NODES` (`--pgpool-show-nodes`).
//!
//! A read served by a replica whose lag has stayed above `--threshold-bytes` for longer than
//! `--check-interval-ms` + 1 s (the time the proxy needs to notice) is a *late read*: the
//! proxy should have taken that replica out of the rotation by then.
//!
//! Output: one TSV row per second (`--out`, header first; see [`tsv_header`]) and, at the
//! end, one `SUMMARY key=value ...` line on stdout. Errors are counted, never fatal: a failed
//! read is data. The first few of each kind are printed to stderr.
//!
//! ```sh
//! cargo run --release --example import_probe -- \
//!   --proxy 'host=127.0.0.1 port=6432 user=app password=secret dbname=app' \
//!   --primary 'host=127.0.0.1 port=15432 user=postgres password=postgres dbname=app' \
//!   --seconds 90 --threshold-bytes 16777216 --out /tmp/import.tsv \
//!   --metrics http://127.0.0.1:9930/metrics
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::{Client, Config, NoTls, SimpleQueryMessage};

/// Every statement the probe sends gives up after this long (counted as an error).
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed connection attempt or a broken connection.
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);
/// How many errors of each kind are printed to stderr (all are counted).
const PRINTED_ERRORS: u64 = 5;

#[derive(Parser, Debug)]
#[command(about = "Stale reads, routing and replica lag through a proxy during a bulk import")]
struct Args {
    /// Connection string of the proxy (the clients connect here).
    #[arg(long)]
    proxy: String,
    /// Connection string of the primary, as a superuser (setup and lag sampling). Replicas
    /// are reached with the same host, user, password and database on their --nodes port.
    #[arg(long)]
    primary: String,
    /// Stop after this many seconds (SIGTERM or Ctrl-C stop it earlier, cleanly).
    #[arg(long, default_value_t = 90)]
    seconds: u64,
    /// The proxy's lag threshold in bytes (pgsplit lag.max_replica_lag, Pgpool-II delay_threshold).
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    threshold_bytes: i64,
    /// The proxy's check interval in ms: late reads are those more than this + 1 s after the
    /// lag passed the threshold.
    #[arg(long, default_value_t = 250)]
    check_interval_ms: u64,
    /// Where to write the per-second TSV.
    #[arg(long)]
    out: PathBuf,
    /// pgsplit's Prometheus endpoint, e.g. http://127.0.0.1:9930/metrics.
    #[arg(long, conflicts_with = "pgpool_show_nodes")]
    metrics: Option<String>,
    /// Ask the proxy (Pgpool-II) `SHOW POOL_NODES` for its view of each node.
    #[arg(long)]
    pgpool_show_nodes: bool,
    /// Node names by port, the primary first: name=port,name=port,...
    #[arg(long, default_value = "primary=15432,replica1=15433,replica2=15434")]
    nodes: String,
    /// Plain readers.
    #[arg(long, default_value_t = 4)]
    readers: usize,
    /// Clients that write their own row and read it back.
    #[arg(long, default_value_t = 2)]
    pinned: usize,
    /// Connections that read the token writer's row with its latest causal token in a
    /// leading comment (pgsplit only); 0: no token writer either.
    #[arg(long, default_value_t = 0)]
    token_readers: usize,
    /// Pause between two reads of one reader (and between two loops of a pinned client), ms.
    #[arg(long, default_value_t = 5)]
    read_pause_ms: u64,
    /// How often the writer increments the marker, ms.
    #[arg(long, default_value_t = 20)]
    write_every_ms: u64,
    /// How often lag and the proxy's view are sampled, ms.
    #[arg(long, default_value_t = 250)]
    sample_ms: u64,
}

// ------------------------------------------------------------------------------------------
// Nodes
// ------------------------------------------------------------------------------------------

/// The cluster's nodes: index 0 is the primary, the rest are replicas.
#[derive(Debug, Clone)]
struct Nodes {
    names: Vec<String>,
    ports: Vec<u16>,
}

impl Nodes {
    fn parse(spec: &str) -> Result<Nodes> {
        let mut nodes = Nodes {
            names: Vec::new(),
            ports: Vec::new(),
        };
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, port) = item
                .split_once('=')
                .ok_or_else(|| anyhow!("--nodes: '{item}' is not name=port"))?;
            let port: u16 = port
                .parse()
                .with_context(|| format!("--nodes: bad port in '{item}'"))?;
            nodes.names.push(name.to_string());
            nodes.ports.push(port);
        }
        if nodes.names.len() < 2 {
            bail!("--nodes needs the primary and at least one replica");
        }
        Ok(nodes)
    }

    fn index_of_port(&self, port: u16) -> Option<usize> {
        self.ports.iter().position(|&p| p == port)
    }

    fn index_of_name(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    fn replicas(&self) -> std::ops::Range<usize> {
        1..self.names.len()
    }
}

// ------------------------------------------------------------------------------------------
// What is recorded
// ------------------------------------------------------------------------------------------

/// Counters of one second. Vectors are indexed by node (0 = primary).
#[derive(Debug, Clone, Default)]
struct Second {
    reads: Vec<u64>,
    stale: Vec<u64>,
    /// Replica reads while the replica's lag was above the threshold (any time).
    over: Vec<u64>,
    /// Replica reads more than the detection grace after the lag passed the threshold.
    late: Vec<u64>,
    /// Replica reads sent between two samples of the proxy's view that both had the replica
    /// out of the read rotation: the proxy routed a read to a replica it had ejected.
    while_out: Vec<u64>,
    /// Changes of the proxy's view seen in this second: out of / back into the rotation.
    ejected: Vec<u64>,
    readmitted: Vec<u64>,
    max_stale_age_ms: u64,
    pinned_reads: u64,
    pinned_stale: u64,
    pinned_off_primary: u64,
    /// Reads by the token readers, those older than the token's write, those a replica served.
    token_reads: u64,
    token_stale: u64,
    token_off_primary: u64,
    writes: u64,
    errors: u64,
    sample_errors: u64,
    /// Largest byte lag sampled in this second, measured directly.
    lag: Vec<Option<i64>>,
    /// Largest lag the primary reported in pg_stat_replication.
    sr_lag: Vec<Option<i64>>,
    /// The lag the proxy reported.
    proxy_lag: Vec<Option<i64>>,
    /// Whether the proxy had the replica in its read rotation at every sample (false if it
    /// was out at any sample of this second; None if the proxy was not asked or did not answer).
    proxy_in: Vec<Option<bool>>,
}

impl Second {
    fn new(n: usize) -> Second {
        Second {
            reads: vec![0; n],
            stale: vec![0; n],
            over: vec![0; n],
            late: vec![0; n],
            while_out: vec![0; n],
            ejected: vec![0; n],
            readmitted: vec![0; n],
            lag: vec![None; n],
            sr_lag: vec![None; n],
            proxy_lag: vec![None; n],
            proxy_in: vec![None; n],
            ..Second::default()
        }
    }
}

fn max_opt(a: Option<i64>, b: i64) -> Option<i64> {
    Some(a.map_or(b, |a| a.max(b)))
}

/// Per-replica lag state kept by the sampler and read by the readers.
#[derive(Debug, Clone, Default)]
struct LagState {
    /// When the sampler first saw the lag above the threshold, while it still is.
    above_since: Option<Instant>,
}

/// One change of the proxy's view of a replica, for the summary.
#[derive(Debug, Clone)]
struct Transition {
    t: f64,
    node: usize,
    now_in: bool,
    lag: Option<i64>,
}

/// State shared by every task.
struct Shared {
    args: Args,
    nodes: Nodes,
    start: Instant,
    stop: AtomicBool,
    /// The highest marker value the writer has seen committed.
    committed: AtomicI64,
    /// commit_times[v - 1] = when value v was committed.
    commit_times: Mutex<Vec<Instant>>,
    /// The token writer's latest hand-over: the value it had committed and its causal
    /// token taken right after.
    token: Mutex<Option<(i64, String)>>,
    lag: Mutex<Vec<LagState>>,
    seconds: Mutex<Vec<Second>>,
    transitions: Mutex<Vec<Transition>>,
    error_counts: Mutex<HashMap<&'static str, u64>>,
    late_printed: AtomicU64,
    /// Replica reads (node, sent) not yet judged against the proxy's view.
    pending_reads: Mutex<Vec<(usize, Instant)>>,
}

impl Shared {
    fn grace(&self) -> Duration {
        Duration::from_millis(self.args.check_interval_ms) + Duration::from_secs(1)
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Run `f` on the counters of the second `at` falls in.
    fn record(&self, at: Instant, f: impl FnOnce(&mut Second)) {
        let index = at.saturating_duration_since(self.start).as_secs() as usize;
        let n = self.nodes.names.len();
        let mut seconds = lock(&self.seconds);
        while seconds.len() <= index {
            seconds.push(Second::new(n));
        }
        f(&mut seconds[index]);
    }

    /// Count an error of `kind`; print the first few.
    fn error(&self, kind: &'static str, err: impl std::fmt::Display) {
        let sample = kind == "sample" || kind == "proxy-view";
        self.record(Instant::now(), |s| {
            if sample {
                s.sample_errors += 1;
            } else {
                s.errors += 1;
            }
        });
        let mut counts = lock(&self.error_counts);
        let count = counts.entry(kind).or_insert(0);
        *count += 1;
        if *count <= PRINTED_ERRORS {
            eprintln!("import_probe: t={:.1}s {kind} error: {err}", self.elapsed());
        }
    }

    fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}

/// Lock a mutex, going on with the data if a task panicked while holding it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ------------------------------------------------------------------------------------------
// Database helpers
// ------------------------------------------------------------------------------------------

async fn connect(config: &Config) -> Result<Client> {
    let (client, connection) = tokio::time::timeout(QUERY_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| anyhow!("connect timed out"))??;
    tokio::spawn(async move {
        // The error, if any, shows up on the client's next query.
        let _ = connection.await;
    });
    Ok(client)
}

/// Run a simple query and return its rows as text (NULL as None).
async fn rows(client: &Client, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
    let messages = tokio::time::timeout(QUERY_TIMEOUT, client.simple_query(sql))
        .await
        .map_err(|_| anyhow!("query timed out: {sql}"))??;
    Ok(messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

/// Run a simple query and return its rows as column name -> text maps.
async fn named_rows(client: &Client, sql: &str) -> Result<Vec<HashMap<String, String>>> {
    let messages = tokio::time::timeout(QUERY_TIMEOUT, client.simple_query(sql))
        .await
        .map_err(|_| anyhow!("query timed out: {sql}"))??;
    Ok(messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                row.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_string(), row.get(i).unwrap_or("").to_string()))
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

/// The first column of the first row, parsed.
async fn scalar<T: std::str::FromStr>(client: &Client, sql: &str) -> Result<T> {
    let text = rows(client, sql)
        .await?
        .into_iter()
        .next()
        .and_then(|row| row.into_iter().next().flatten())
        .ok_or_else(|| anyhow!("no value from: {sql}"))?;
    text.parse()
        .map_err(|_| anyhow!("unexpected value '{text}' from: {sql}"))
}

/// `v` and the serving port from a `SELECT v, inet_server_port()` row.
fn value_and_port(rows: &[Vec<Option<String>>]) -> Result<(i64, u16)> {
    let row = rows.first().ok_or_else(|| anyhow!("no row"))?;
    let field = |i: usize| {
        row.get(i)
            .cloned()
            .flatten()
            .ok_or_else(|| anyhow!("NULL in column {i}"))
    };
    Ok((field(0)?.parse()?, field(1)?.parse()?))
}

/// The config of a replica: the primary's, on another port.
fn replica_config(primary: &Config, port: u16) -> Config {
    let mut config = Config::new();
    for host in primary.get_hosts() {
        match host {
            tokio_postgres::config::Host::Tcp(h) => config.host(h),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(p) => config.host_path(p),
        };
    }
    config.port(port);
    if let Some(user) = primary.get_user() {
        config.user(user);
    }
    if let Some(password) = primary.get_password() {
        config.password(password);
    }
    if let Some(db) = primary.get_dbname() {
        config.dbname(db);
    }
    config.application_name("import_probe");
    config
}

/// A client that reconnects when its connection broke. `None` while it cannot connect.
struct Conn {
    config: Config,
    client: Option<Client>,
}

impl Conn {
    fn new(config: Config) -> Conn {
        Conn {
            config,
            client: None,
        }
    }

    async fn get(&mut self) -> Result<&Client> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            self.client = Some(connect(&self.config).await?);
        }
        self.client.as_ref().ok_or_else(|| anyhow!("not connected"))
    }
}

// ------------------------------------------------------------------------------------------
// Setup
// ------------------------------------------------------------------------------------------

/// Create and reset the probe's tables on the primary, grant them to the proxy's user, and
/// wait until every replica has replayed them.
async fn setup(
    args: &Args,
    nodes: &Nodes,
    primary: &Config,
    proxy_user: Option<&str>,
) -> Result<()> {
    let client = connect(primary)
        .await
        .context("connecting to the primary")?;
    let mut sql = format!(
        "CREATE TABLE IF NOT EXISTS pgsplit_probe_marker (id int PRIMARY KEY, v bigint NOT NULL);
         CREATE TABLE IF NOT EXISTS pgsplit_probe_pinned (id int PRIMARY KEY, v bigint NOT NULL);
         INSERT INTO pgsplit_probe_marker VALUES (0, 0), (1, 0) ON CONFLICT (id) DO UPDATE SET v = 0;
         DELETE FROM pgsplit_probe_pinned;
         INSERT INTO pgsplit_probe_pinned SELECT g, 0 FROM generate_series(0, {}) g;",
        args.pinned.max(1) - 1
    );
    if let Some(user) = proxy_user.filter(|u| Some(*u) != primary.get_user()) {
        let _ = write!(
            sql,
            "GRANT SELECT, INSERT, UPDATE ON pgsplit_probe_marker, pgsplit_probe_pinned TO \"{}\";",
            user.replace('"', "\"\"")
        );
    }
    client
        .batch_execute(&sql)
        .await
        .context("creating the probe tables on the primary")?;
    let lsn: String = scalar(&client, "SELECT pg_current_wal_lsn()::text").await?;
    for r in nodes.replicas() {
        let replica = connect(&replica_config(primary, nodes.ports[r]))
            .await
            .with_context(|| format!("connecting to {}", nodes.names[r]))?;
        let sql = format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn");
        let deadline = Instant::now() + Duration::from_secs(60);
        while scalar::<String>(&replica, &sql).await? != "t" {
            if Instant::now() > deadline {
                bail!(
                    "{} did not replay the probe tables within 60 s",
                    nodes.names[r]
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Client tasks
// ------------------------------------------------------------------------------------------

/// Increment the marker through the proxy every `write_every_ms`.
async fn writer(shared: Arc<Shared>, proxy: Config) {
    let mut conn = Conn::new(proxy);
    let mut tick = tokio::time::interval(Duration::from_millis(shared.args.write_every_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !shared.stopped() {
        tick.tick().await;
        let result = async {
            let client = conn.get().await?;
            scalar::<i64>(
                client,
                "UPDATE pgsplit_probe_marker SET v = v + 1 WHERE id = 0 RETURNING v",
            )
            .await
        }
        .await;
        match result {
            Ok(v) => {
                let now = Instant::now();
                {
                    let mut times = lock(&shared.commit_times);
                    while (times.len() as i64) < v {
                        times.push(now);
                    }
                }
                shared.committed.fetch_max(v, Ordering::SeqCst);
                shared.record(now, |s| s.writes += 1);
            }
            Err(e) => {
                shared.error("writer", e);
                tokio::time::sleep(RECONNECT_PAUSE).await;
            }
        }
    }
}

/// Increment the token row (marker row 1) through the proxy every `write_every_ms`, then
/// take the connection's causal token and hand it over to the token readers with the value
/// just committed.
async fn token_writer(shared: Arc<Shared>, proxy: Config) {
    let mut conn = Conn::new(proxy);
    let mut tick = tokio::time::interval(Duration::from_millis(shared.args.write_every_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !shared.stopped() {
        tick.tick().await;
        let result = async {
            let client = conn.get().await?;
            let v = scalar::<i64>(
                client,
                "UPDATE pgsplit_probe_marker SET v = v + 1 WHERE id = 1 RETURNING v",
            )
            .await?;
            let token: String = scalar(client, "SHOW pgsplit.causal_token").await?;
            if token.is_empty() {
                bail!("SHOW pgsplit.causal_token is empty after a write");
            }
            Ok((v, token))
        }
        .await;
        match result {
            Ok(handed) => *lock(&shared.token) = Some(handed),
            Err(e) => {
                shared.error("token-writer", e);
                tokio::time::sleep(RECONNECT_PAUSE).await;
            }
        }
    }
}

/// Read the token row on a connection of its own, presenting the token writer's latest
/// token in a leading comment; a value lower than the one committed when the token was
/// taken is a stale read.
async fn token_reader(shared: Arc<Shared>, proxy: Config) {
    let mut conn = Conn::new(proxy);
    while !shared.stopped() {
        let handed = lock(&shared.token).clone();
        let Some((written, token)) = handed else {
            tokio::time::sleep(Duration::from_millis(shared.args.read_pause_ms)).await;
            continue;
        };
        let sql = format!(
            "/* pgsplit:causal_token={token} */ SELECT v, inet_server_port() FROM pgsplit_probe_marker WHERE id = 1"
        );
        let result = async {
            let client = conn.get().await?;
            let sent = Instant::now();
            let got = value_and_port(&rows(client, &sql).await?)?;
            Ok::<_, anyhow::Error>((sent, got))
        }
        .await;
        match result {
            Ok((sent, (v, port))) => {
                let node = shared.nodes.index_of_port(port);
                shared.record(sent, |s| {
                    s.token_reads += 1;
                    if v < written {
                        s.token_stale += 1;
                    }
                    if node != Some(0) {
                        s.token_off_primary += 1;
                    }
                });
            }
            Err(e) => {
                shared.error("token-reader", e);
                tokio::time::sleep(RECONNECT_PAUSE).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(shared.args.read_pause_ms)).await;
    }
}

/// Write this client's own row, read it back at once; a lower value is a stale read inside
/// the read-your-writes pin.
async fn pinned_client(shared: Arc<Shared>, proxy: Config, id: usize) {
    let mut conn = Conn::new(proxy);
    let mut n: i64 = 0;
    let write = |n: i64| format!("UPDATE pgsplit_probe_pinned SET v = {n} WHERE id = {id}");
    let read = format!("SELECT v, inet_server_port() FROM pgsplit_probe_pinned WHERE id = {id}");
    while !shared.stopped() {
        n += 1;
        let result = async {
            let client = conn.get().await?;
            rows(client, &write(n)).await.context("write")?;
            let sent = Instant::now();
            let got = value_and_port(&rows(client, &read).await.context("read")?)?;
            Ok::<_, anyhow::Error>((sent, got))
        }
        .await;
        match result {
            Ok((sent, (v, port))) => {
                let node = shared.nodes.index_of_port(port);
                shared.record(sent, |s| {
                    s.pinned_reads += 1;
                    if v < n {
                        s.pinned_stale += 1;
                    }
                    if node != Some(0) {
                        s.pinned_off_primary += 1;
                    }
                });
            }
            Err(e) => {
                shared.error("pinned", e);
                tokio::time::sleep(RECONNECT_PAUSE).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(shared.args.read_pause_ms)).await;
    }
}

/// Read the marker through the proxy in a loop; judge each read.
async fn reader(shared: Arc<Shared>, proxy: Config) {
    let mut conn = Conn::new(proxy);
    let sql = "SELECT v, inet_server_port() FROM pgsplit_probe_marker WHERE id = 0";
    while !shared.stopped() {
        let result = async {
            let client = conn.get().await?;
            let sent = Instant::now();
            let committed = shared.committed.load(Ordering::SeqCst);
            let got = value_and_port(&rows(client, sql).await?)?;
            Ok::<_, anyhow::Error>((sent, committed, got))
        }
        .await;
        match result {
            Ok((sent, committed, (v, port))) => judge_read(&shared, sent, committed, v, port),
            Err(e) => {
                shared.error("reader", e);
                tokio::time::sleep(RECONNECT_PAUSE).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(shared.args.read_pause_ms)).await;
    }
}

/// Record one plain read: which node served it, whether it was stale (and how old), and
/// whether it came from a replica the proxy should already have ejected.
fn judge_read(shared: &Shared, sent: Instant, committed: i64, v: i64, port: u16) {
    let Some(node) = shared.nodes.index_of_port(port) else {
        shared.error(
            "reader",
            format!("served by unknown port {port} (see --nodes)"),
        );
        return;
    };
    let stale_age_ms = if v < committed {
        // Age: how long before the read the first newer value than v was committed.
        let times = lock(&shared.commit_times);
        let first_newer = usize::try_from(v).ok().and_then(|v| times.get(v).copied());
        Some(first_newer.map_or(0, |t| sent.saturating_duration_since(t).as_millis() as u64))
    } else {
        None
    };
    let above_since = if node == 0 {
        None
    } else {
        lock(&shared.lag)[node].above_since
    };
    let over = above_since.is_some_and(|since| sent >= since);
    let late = above_since.is_some_and(|since| sent >= since + shared.grace());
    if late && shared.late_printed.fetch_add(1, Ordering::Relaxed) < PRINTED_ERRORS {
        eprintln!(
            "import_probe: t={:.1}s late read: {} served a read {:.2}s after its lag passed the threshold",
            shared.elapsed(),
            shared.nodes.names[node],
            above_since.map_or(0.0, |since| sent.saturating_duration_since(since).as_secs_f64())
        );
    }
    if node != 0 {
        lock(&shared.pending_reads).push((node, sent));
    }
    shared.record(sent, |s| {
        s.reads[node] += 1;
        if let Some(age) = stale_age_ms {
            s.stale[node] += 1;
            s.max_stale_age_ms = s.max_stale_age_ms.max(age);
        }
        if over {
            s.over[node] += 1;
        }
        if late {
            s.late[node] += 1;
        }
    });
}

// ------------------------------------------------------------------------------------------
// Sampler: lag and the proxy's view
// ------------------------------------------------------------------------------------------

/// The proxy's view of one replica at one sample.
#[derive(Debug, Clone, Copy)]
struct ProxyView {
    in_rotation: bool,
    lag: Option<i64>,
}

/// Where the proxy's view comes from.
enum ViewSource {
    None,
    Metrics(String),
    PgpoolShowNodes(Box<Conn>),
}

async fn sampler(shared: Arc<Shared>, primary: Config, proxy: Config) {
    let mut primary_conn = Conn::new(primary.clone());
    let mut replica_conns: Vec<Conn> = shared
        .nodes
        .ports
        .iter()
        .map(|&port| Conn::new(replica_config(&primary, port)))
        .collect();
    let mut source = match (&shared.args.metrics, shared.args.pgpool_show_nodes) {
        (Some(url), _) => ViewSource::Metrics(url.clone()),
        (None, true) => ViewSource::PgpoolShowNodes(Box::new(Conn::new(proxy))),
        (None, false) => ViewSource::None,
    };
    let mut last_in: Vec<Option<bool>> = vec![None; shared.nodes.names.len()];
    let mut previous_view: Option<ViewSample> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(shared.args.sample_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !shared.stopped() {
        tick.tick().await;
        let now = Instant::now();
        let (lags, sr_lags) = match sample_lag(&shared, &mut primary_conn, &mut replica_conns).await
        {
            Ok(l) => l,
            Err(e) => {
                shared.error("sample", e);
                continue;
            }
        };
        let asked = Instant::now();
        let views = match proxy_view(&shared, &mut source).await {
            Ok(v) => v,
            Err(e) => {
                shared.error("proxy-view", e);
                HashMap::new()
            }
        };
        let view = ViewSample {
            asked,
            answered: Instant::now(),
            views: views.clone(),
        };
        judge_pending_reads(&shared, previous_view.as_ref(), &view);
        previous_view = Some(view);
        update_lag_state(&shared, now, &lags);
        note_transitions(&shared, &views, &lags, &mut last_in);
        shared.record(now, |s| {
            for r in shared.nodes.replicas() {
                if let Some(lag) = lags[r] {
                    s.lag[r] = max_opt(s.lag[r], lag);
                }
                if let Some(lag) = sr_lags[r] {
                    s.sr_lag[r] = max_opt(s.sr_lag[r], lag);
                }
                if let Some(view) = views.get(&r) {
                    s.proxy_in[r] = Some(s.proxy_in[r].unwrap_or(true) && view.in_rotation);
                    if let Some(lag) = view.lag {
                        s.proxy_lag[r] = max_opt(s.proxy_lag[r], lag);
                    }
                }
            }
        });
    }
}

/// One sample of the proxy's view: the state it reported somewhere between `asked` and
/// `answered`.
struct ViewSample {
    asked: Instant,
    answered: Instant,
    views: HashMap<usize, ProxyView>,
}

/// Judge the replica reads sent before `current` was asked: a read sent after `previous` was
/// answered, to a replica both samples show out of the rotation, went to an ejected replica
/// (no flapping in between: readmission takes longer than a sample interval).
fn judge_pending_reads(shared: &Shared, previous: Option<&ViewSample>, current: &ViewSample) {
    let judged: Vec<(usize, Instant)> = {
        let mut pending = lock(&shared.pending_reads);
        let (judged, later) = pending
            .drain(..)
            .partition(|&(_, sent)| sent < current.asked);
        *pending = later;
        judged
    };
    let Some(previous) = previous else { return };
    let out = |sample: &ViewSample, r: usize| sample.views.get(&r).is_some_and(|v| !v.in_rotation);
    for (r, sent) in judged {
        if sent > previous.answered && out(previous, r) && out(current, r) {
            if shared.late_printed.fetch_add(1, Ordering::Relaxed) < PRINTED_ERRORS {
                eprintln!(
                    "import_probe: t={:.2}s {} served a read while the proxy had it out of the rotation",
                    sent.saturating_duration_since(shared.start).as_secs_f64(),
                    shared.nodes.names[r]
                );
            }
            shared.record(sent, |s| s.while_out[r] += 1);
        }
    }
}

/// Each replica's byte lag, measured directly and as pg_stat_replication reports it.
async fn sample_lag(
    shared: &Shared,
    primary: &mut Conn,
    replicas: &mut [Conn],
) -> Result<(Vec<Option<i64>>, Vec<Option<i64>>)> {
    let n = shared.nodes.names.len();
    let client = primary.get().await.context("primary")?;
    let lsn: String = scalar(client, "SELECT pg_current_wal_lsn()::text").await?;
    let mut sr_lags = vec![None; n];
    let sql = "SELECT application_name, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint \
               FROM pg_stat_replication";
    for row in rows(client, sql).await? {
        let name = row.first().cloned().flatten().unwrap_or_default();
        let lag = row.get(1).cloned().flatten().and_then(|v| v.parse().ok());
        if let Some(r) = shared.nodes.index_of_name(&name) {
            sr_lags[r] = lag;
        }
    }
    let mut lags = vec![None; n];
    let sql = format!(
        "SELECT greatest(pg_wal_lsn_diff('{lsn}'::pg_lsn, pg_last_wal_replay_lsn()), 0)::bigint"
    );
    for r in shared.nodes.replicas() {
        let result = async {
            let client = replicas[r].get().await?;
            scalar::<i64>(client, &sql).await
        }
        .await;
        match result {
            Ok(lag) => lags[r] = Some(lag),
            Err(e) => shared.error("sample", format!("{}: {e}", shared.nodes.names[r])),
        }
    }
    Ok((lags, sr_lags))
}

/// Remember since when each replica has been above the threshold.
fn update_lag_state(shared: &Shared, now: Instant, lags: &[Option<i64>]) {
    let mut state = lock(&shared.lag);
    if state.len() < lags.len() {
        state.resize(lags.len(), LagState::default());
    }
    for r in shared.nodes.replicas() {
        match lags[r] {
            Some(lag) if lag > shared.args.threshold_bytes => {
                state[r].above_since.get_or_insert(now);
            }
            Some(_) => state[r].above_since = None,
            None => {} // unknown: keep what we knew
        }
    }
}

/// Log every change of the proxy's view of a replica (ejections and readmissions).
fn note_transitions(
    shared: &Shared,
    views: &HashMap<usize, ProxyView>,
    lags: &[Option<i64>],
    last_in: &mut [Option<bool>],
) {
    for (&r, view) in views {
        if last_in[r].is_some_and(|was| was != view.in_rotation) {
            let t = shared.elapsed();
            let what = if view.in_rotation {
                "back in"
            } else {
                "out of"
            };
            let lag = lags[r].map_or("?".into(), |l| l.to_string());
            eprintln!(
                "import_probe: t={t:.1}s {} {what} the proxy's read rotation (lag {lag} B)",
                shared.nodes.names[r]
            );
            lock(&shared.transitions).push(Transition {
                t,
                node: r,
                now_in: view.in_rotation,
                lag: lags[r],
            });
            shared.record(Instant::now(), |s| {
                if view.in_rotation {
                    s.readmitted[r] += 1;
                } else {
                    s.ejected[r] += 1;
                }
            });
        }
        last_in[r] = Some(view.in_rotation);
    }
}

async fn proxy_view(shared: &Shared, source: &mut ViewSource) -> Result<HashMap<usize, ProxyView>> {
    match source {
        ViewSource::None => Ok(HashMap::new()),
        ViewSource::Metrics(url) => {
            let body = http_get(url).await?;
            Ok(parse_pgsplit_metrics(&shared.nodes, &body))
        }
        ViewSource::PgpoolShowNodes(conn) => {
            let client = conn.get().await?;
            let rows = named_rows(client, "SHOW POOL_NODES").await?;
            Ok(parse_pool_nodes(
                &shared.nodes,
                &rows,
                shared.args.threshold_bytes,
            ))
        }
    }
}

/// GET an http:// URL (HTTP/1.0, no keep-alive) and return the body.
async fn http_get(url: &str) -> Result<String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("--metrics must be an http:// URL"))?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await?;
        let request =
            format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(QUERY_TIMEOUT, fetch)
        .await
        .map_err(|_| anyhow!("GET {url} timed out"))??;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("GET {url}: no HTTP header"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("GET {url}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

/// One Prometheus sample line: name, labels, value.
fn parse_prom_line(line: &str) -> Option<(&str, HashMap<&str, &str>, f64)> {
    if line.starts_with('#') {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = value.trim().parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, rest.strip_suffix('}')?),
        None => (series, ""),
    };
    let labels = labels
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim().trim_matches('"')))
        .collect();
    Some((name, labels, value))
}

/// pgsplit's view: a replica is in the rotation when `pgsplit_replica_state{state="healthy"}`
/// is 1; its lag is `pgsplit_replica_lag_bytes`.
fn parse_pgsplit_metrics(nodes: &Nodes, body: &str) -> HashMap<usize, ProxyView> {
    let mut views: HashMap<usize, ProxyView> = HashMap::new();
    for (name, labels, value) in body.lines().filter_map(parse_prom_line) {
        let Some(r) = labels.get("node").and_then(|n| nodes.index_of_name(n)) else {
            continue;
        };
        let view = views.entry(r).or_insert(ProxyView {
            in_rotation: false,
            lag: None,
        });
        match name {
            "pgsplit_replica_state" if labels.get("state") == Some(&"healthy") => {
                view.in_rotation = value == 1.0;
            }
            "pgsplit_replica_lag_bytes" if value.is_finite() => view.lag = Some(value as i64),
            _ => {}
        }
    }
    views
}

/// Pgpool-II's view from `SHOW POOL_NODES`: a standby is in the rotation when its status is
/// up (or waiting: not yet used since pgpool started) and its replication_delay is within
/// delay_threshold (taken to be `threshold`), since pgpool then stops load-balancing to it.
fn parse_pool_nodes(
    nodes: &Nodes,
    rows: &[HashMap<String, String>],
    threshold: i64,
) -> HashMap<usize, ProxyView> {
    let mut views = HashMap::new();
    for row in rows {
        let Some(r) = row
            .get("port")
            .and_then(|p| p.parse::<u16>().ok())
            .and_then(|p| nodes.index_of_port(p))
        else {
            continue;
        };
        if r == 0 {
            continue;
        }
        let status = row.get("status").map(String::as_str).unwrap_or("");
        let lag = row
            .get("replication_delay")
            .and_then(|d| d.trim().parse::<f64>().ok())
            .map(|d| d as i64);
        let up = status == "up" || status == "waiting";
        views.insert(
            r,
            ProxyView {
                in_rotation: up && lag.is_none_or(|l| l <= threshold),
                lag,
            },
        );
    }
    views
}

// ------------------------------------------------------------------------------------------
// Output
// ------------------------------------------------------------------------------------------

/// The TSV header. Per replica R: R_lag (bytes, largest direct sample of the second),
/// R_sr_lag (pg_stat_replication), R_proxy_lag (the proxy's figure), R_in (1 in the proxy's
/// read rotation all second, 0 out at some sample, empty if unknown), R_reads, R_stale,
/// R_over (reads while above the threshold), R_late (reads after the detection grace),
/// R_while_out (reads routed to it while the proxy had it out of the rotation), R_ejected and
/// R_readmitted (changes of the proxy's view seen in this second).
fn tsv_header(nodes: &Nodes) -> String {
    let mut cols = vec!["t".to_string(), "epoch".to_string()];
    for r in nodes.replicas() {
        let name = &nodes.names[r];
        for c in [
            "lag",
            "sr_lag",
            "proxy_lag",
            "in",
            "reads",
            "stale",
            "over",
            "late",
            "while_out",
            "ejected",
            "readmitted",
        ] {
            cols.push(format!("{name}_{c}"));
        }
    }
    cols.extend(
        [
            "primary_reads",
            "primary_stale",
            "max_stale_age_ms",
            "pinned_reads",
            "pinned_stale",
            "pinned_off_primary",
            "token_reads",
            "token_stale",
            "token_off_primary",
            "writes",
            "errors",
            "sample_errors",
        ]
        .map(String::from),
    );
    cols.join("\t")
}

fn tsv_row(nodes: &Nodes, t: usize, epoch: f64, s: &Second) -> String {
    let opt = |v: Option<i64>| v.map_or(String::new(), |v| v.to_string());
    let mut cols = vec![t.to_string(), format!("{epoch:.0}")];
    for r in nodes.replicas() {
        cols.push(opt(s.lag[r]));
        cols.push(opt(s.sr_lag[r]));
        cols.push(opt(s.proxy_lag[r]));
        cols.push(s.proxy_in[r].map_or(String::new(), |b| u8::from(b).to_string()));
        for v in [
            s.reads[r],
            s.stale[r],
            s.over[r],
            s.late[r],
            s.while_out[r],
            s.ejected[r],
            s.readmitted[r],
        ] {
            cols.push(v.to_string());
        }
    }
    for v in [
        s.reads[0],
        s.stale[0],
        s.max_stale_age_ms,
        s.pinned_reads,
        s.pinned_stale,
        s.pinned_off_primary,
        s.token_reads,
        s.token_stale,
        s.token_off_primary,
        s.writes,
        s.errors,
        s.sample_errors,
    ] {
        cols.push(v.to_string());
    }
    cols.join("\t")
}

/// The `SUMMARY` line: totals over the run.
fn summary(shared: &Shared, seconds: &[Second]) -> String {
    let nodes = &shared.nodes;
    let sum = |f: &dyn Fn(&Second) -> u64| seconds.iter().map(f).sum::<u64>();
    let mut out = format!(
        "SUMMARY seconds={} threshold_bytes={}",
        seconds.len(),
        shared.args.threshold_bytes
    );
    let total_reads = sum(&|s| s.reads.iter().sum());
    let stale_outside = sum(&|s| s.stale.iter().sum());
    let late = sum(&|s| s.late.iter().sum());
    let over = sum(&|s| s.over.iter().sum());
    let _ = write!(
        out,
        " reads={total_reads} stale_outside_pin={stale_outside}"
    );
    let _ = write!(
        out,
        " max_stale_age_ms={}",
        seconds
            .iter()
            .map(|s| s.max_stale_age_ms)
            .max()
            .unwrap_or(0)
    );
    let _ = write!(
        out,
        " pinned_reads={} stale_inside_pin={} pinned_off_primary={}",
        sum(&|s| s.pinned_reads),
        sum(&|s| s.pinned_stale),
        sum(&|s| s.pinned_off_primary)
    );
    let _ = write!(
        out,
        " token_reads={} token_stale={} token_off_primary={}",
        sum(&|s| s.token_reads),
        sum(&|s| s.token_stale),
        sum(&|s| s.token_off_primary)
    );
    let _ = write!(
        out,
        " replica_reads_over_threshold={over} late_replica_reads={late} replica_reads_while_out={}",
        sum(&|s| s.while_out.iter().sum())
    );
    let _ = write!(
        out,
        " writes={} errors={} sample_errors={}",
        sum(&|s| s.writes),
        sum(&|s| s.errors),
        sum(&|s| s.sample_errors)
    );
    let transitions = lock(&shared.transitions);
    for (i, name) in nodes.names.iter().enumerate() {
        let _ = write!(out, " reads_{name}={}", sum(&|s| s.reads[i]));
        if i == 0 {
            continue;
        }
        let max_lag = seconds.iter().filter_map(|s| s.lag[i]).max().unwrap_or(0);
        let ejections = transitions
            .iter()
            .filter(|tr| tr.node == i && !tr.now_in)
            .count();
        let out_secs = seconds
            .iter()
            .filter(|s| s.proxy_in[i] == Some(false))
            .count();
        let _ = write!(
            out,
            " max_lag_{name}={max_lag} ejections_{name}={ejections} out_seconds_{name}={out_secs} late_{name}={}",
            sum(&|s| s.late[i])
        );
    }
    out
}

/// Print each ejection and readmission, with the lag the probe measured then.
fn print_transitions(shared: &Shared) {
    for tr in lock(&shared.transitions).iter() {
        println!(
            "TRANSITION t={:.1} node={} {} lag_bytes={}",
            tr.t,
            shared.nodes.names[tr.node],
            if tr.now_in { "readmitted" } else { "ejected" },
            tr.lag.map_or("?".into(), |l| l.to_string())
        );
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Write one TSV row per finished second until the run ends, then the rest.
async fn write_rows(
    shared: &Shared,
    out: &mut std::fs::File,
    start_epoch: f64,
    deadline: Instant,
) -> Result<()> {
    let mut written = 0usize;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        // Each row once its second is over (plus a margin for the last samples).
        let next = shared.start + Duration::from_millis(written as u64 * 1000 + 1300);
        let stop = tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => Instant::now() >= deadline,
            _ = tokio::signal::ctrl_c() => true,
            _ = sigterm.recv() => true,
        };
        if stop {
            shared.stop.store(true, Ordering::SeqCst);
            // Let the tasks finish what they were doing.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let seconds = lock(&shared.seconds).clone();
        let done = (shared.start.elapsed().as_secs() as usize).min(seconds.len());
        while written < done {
            writeln!(
                out,
                "{}",
                tsv_row(
                    &shared.nodes,
                    written,
                    start_epoch + written as f64,
                    &seconds[written]
                )
            )?;
            written += 1;
        }
        out.flush()?;
        if stop {
            return Ok(());
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let nodes = Nodes::parse(&args.nodes)?;
    let proxy: Config = args.proxy.parse().context("--proxy")?;
    let primary: Config = args.primary.parse().context("--primary")?;
    let mut out = std::fs::File::create(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    setup(&args, &nodes, &primary, proxy.get_user()).await?;

    // Time starts once the tables are everywhere.
    let n = nodes.names.len();
    let shared = Arc::new(Shared {
        nodes: nodes.clone(),
        start: Instant::now(),
        stop: AtomicBool::new(false),
        committed: AtomicI64::new(0),
        commit_times: Mutex::new(Vec::new()),
        token: Mutex::new(None),
        lag: Mutex::new(vec![LagState::default(); n]),
        seconds: Mutex::new(Vec::new()),
        transitions: Mutex::new(Vec::new()),
        error_counts: Mutex::new(HashMap::new()),
        late_printed: AtomicU64::new(0),
        pending_reads: Mutex::new(Vec::new()),
        args,
    });
    let start_epoch = unix_now();
    let deadline = shared.start + Duration::from_secs(shared.args.seconds);
    writeln!(out, "{}", tsv_header(&nodes))?;

    let mut tasks = vec![
        tokio::spawn(sampler(shared.clone(), primary.clone(), proxy.clone())),
        tokio::spawn(writer(shared.clone(), proxy.clone())),
    ];
    for id in 0..shared.args.pinned {
        tasks.push(tokio::spawn(pinned_client(
            shared.clone(),
            proxy.clone(),
            id,
        )));
    }
    for _ in 0..shared.args.readers {
        tasks.push(tokio::spawn(reader(shared.clone(), proxy.clone())));
    }
    if shared.args.token_readers > 0 {
        tasks.push(tokio::spawn(token_writer(shared.clone(), proxy.clone())));
        for _ in 0..shared.args.token_readers {
            tasks.push(tokio::spawn(token_reader(shared.clone(), proxy.clone())));
        }
    }
    eprintln!(
        "import_probe: running for up to {} s ({} readers, {} pinned clients, {} token readers); writing {}",
        shared.args.seconds,
        shared.args.readers,
        shared.args.pinned,
        shared.args.token_readers,
        shared.args.out.display()
    );

    write_rows(&shared, &mut out, start_epoch, deadline).await?;
    for task in tasks {
        // A task stuck in a query gives up after QUERY_TIMEOUT at the latest.
        let _ = tokio::time::timeout(QUERY_TIMEOUT + Duration::from_secs(1), task).await;
    }
    let seconds = lock(&shared.seconds).clone();
    let done = seconds.len().min(shared.start.elapsed().as_secs() as usize);
    print_transitions(&shared);
    println!("{}", summary(&shared, &seconds[..done]));
    Ok(())
}
