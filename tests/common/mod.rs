//! Shared harness for the integration tests: an in-process pgsplit per test, talking to the
//! real local cluster (`dev/cluster.sh up`), plus clients for it (tokio-postgres, psql,
//! pgbench) and a direct superuser connection to the primary for checks.
//!
//! Every test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use pgsplit::config::{Config, NodeRole};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

pub mod raw;
pub mod routing;

/// Password of the `app` and `app_md5` roles, as dev/cluster.sh creates them.
pub const APP_PASSWORD: &str = "secret";
/// Password of the `postgres` superuser.
pub const SUPERUSER_PASSWORD: &str = "postgres";

/// The cluster's port for a node, from the variables dev/test.sh exports.
pub fn node_port(name: &str) -> u16 {
    let (var, default) = match name {
        "primary" => ("PGSPLIT_PRIMARY_PORT", 15432),
        "replica1" => ("PGSPLIT_REPLICA1_PORT", 15433),
        "replica2" => ("PGSPLIT_REPLICA2_PORT", 15434),
        other => panic!("unknown node {other}"),
    };
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn primary_port() -> u16 {
    node_port("primary")
}

/// The primary's address, to run a raw sequence against PostgreSQL itself.
pub fn primary_addr() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], primary_port()))
}

/// Logs from the proxy when `RUST_LOG` is set (e.g. `RUST_LOG=pgsplit=debug`).
fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .fmt_fields(pgsplit::logfmt::EscapedFields)
                .try_init();
        }
    });
}

/// Panics with a helpful message when the primary does not accept connections.
pub async fn require_cluster() {
    let port = primary_port();
    let up = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await;
    if !matches!(up, Ok(Ok(_))) {
        panic!(
            "the dev cluster's primary is not reachable on 127.0.0.1:{port}; run dev/cluster.sh up \
             (or use dev/test.sh, which starts it)"
        );
    }
}

/// Panics with a helpful message when no node of `config` accepts connections: the dev
/// cluster's primary for the usual config, any node for another cluster (tests/patroni.rs).
async fn require_nodes(config: &Config) {
    let dev_cluster = config.nodes.iter().any(|n| n.port == primary_port());
    if dev_cluster || config.nodes.is_empty() {
        return require_cluster().await;
    }
    for node in &config.nodes {
        let up = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect((node.host.as_str(), node.port)),
        )
        .await;
        if matches!(up, Ok(Ok(_))) {
            return;
        }
    }
    let ports: Vec<u16> = config.nodes.iter().map(|n| n.port).collect();
    panic!("no node of the test's cluster accepts connections (ports {ports:?})");
}

/// The repository's config.toml with the cluster's ports and a free listen port, and
/// limits suited to tests (patient checkouts: the machine may be loaded).
pub fn test_config() -> Config {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"));
    let mut config = Config::load(path).expect("config.toml loads");
    config.proxy.listen = "127.0.0.1:0".parse().unwrap();
    config.metrics.listen = "127.0.0.1:0".parse().unwrap();
    config.pool.checkout_timeout = pgsplit::config::Duration::from_secs(30);
    config.proxy.server_connect_timeout = pgsplit::config::Duration::from_secs(30);
    // Pooling and protocol tests watch the primary; routing tests switch this on.
    config.routing.enabled = false;
    for node in &mut config.nodes {
        node.port = match node.role {
            NodeRole::Primary => primary_port(),
            NodeRole::Replica | NodeRole::Auto => node_port(&node.name),
        };
    }
    config
}

/// A pgsplit running inside the test process. Stops accepting clients when dropped.
pub struct TestProxy {
    pub addr: SocketAddr,
    /// Where `/metrics` and `/healthz` are served.
    pub metrics_addr: Option<SocketAddr>,
    pub proxy: Arc<pgsplit::proxy::Proxy>,
    task: JoinHandle<()>,
}

impl TestProxy {
    /// Starts a proxy with the test config, changed by `adjust`.
    pub async fn start(adjust: impl FnOnce(&mut Config)) -> TestProxy {
        let mut config = test_config();
        adjust(&mut config);
        TestProxy::start_with(config, None).await
    }

    /// Starts a proxy with `config`; `RELOAD` and `Proxy::reload_file` read `file`. With
    /// routing on, returns once the lag monitor has seen every reachable replica fresh
    /// (replicas start out of the read rotation until it has), so tests find them serving
    /// reads; a replica that fails its checks is given the checks that take it down.
    pub async fn start_with(config: Config, file: Option<std::path::PathBuf>) -> TestProxy {
        let routing = config.routing.enabled;
        let started = TestProxy::launch(config, file).await;
        if routing {
            let proxy = started.proxy.clone();
            let settled = move || {
                let checked = proxy.config().lag.down_after_failures as u64 + 1;
                let serving: Vec<usize> = proxy
                    .routing()
                    .topology
                    .snapshot()
                    .iter()
                    .filter(|r| r.state == pgsplit::lag::HealthState::Healthy)
                    .map(|r| r.node)
                    .collect();
                proxy
                    .board()
                    .replicas()
                    .iter()
                    .all(|r| serving.contains(&r.node) || r.checks >= checked)
            };
            wait_until(10, "the lag monitor has judged every replica", || {
                let done = settled();
                async move { done }
            })
            .await;
        }
        started
    }

    /// Starts a proxy with `config` and returns at once, without waiting for anything.
    pub async fn launch(config: Config, file: Option<std::path::PathBuf>) -> TestProxy {
        init_tracing();
        require_nodes(&config).await;
        let listener = pgsplit::server::Listener::bind(config, file)
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let metrics_addr = listener.metrics_addr();
        let proxy = listener.proxy();
        let task = tokio::spawn(listener.serve());
        TestProxy {
            addr,
            metrics_addr,
            proxy,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Waits until the proxy has loaded the primary's function catalog. Until then the
    /// classifier cannot tell which writes fire triggers, so every write counts as leaving
    /// session state and its server connection is reset (DISCARD ALL) before reuse: a test
    /// that relies on a connection keeping its state across statements waits for this.
    pub async fn wait_for_catalog(&self) {
        wait_until(10, "the function catalog is loaded", || {
            let loaded = self.proxy.routing().classifier.catalog_generation() > 0;
            async move { loaded }
        })
        .await;
    }

    /// A tokio-postgres config for `user`/`secret` on database `app` with this
    /// application_name.
    pub fn pg_config(&self, app_name: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host("127.0.0.1")
            .port(self.port())
            .user("app")
            .password(APP_PASSWORD)
            .dbname("app")
            .application_name(app_name)
            .connect_timeout(Duration::from_secs(30));
        c
    }

    /// Connects as `app` to database `app`.
    pub async fn connect(&self, app_name: &str) -> Client {
        connect_with(&self.pg_config(app_name)).await
    }

    /// Connects and hands back the connection task too, to kill it.
    pub async fn connect_raw(&self, app_name: &str) -> (Client, JoinHandle<()>) {
        connect_task(&self.pg_config(app_name)).await
    }

    /// Largest number of server connections any pool of this proxy has open now.
    pub fn pool_sizes(&self) -> Vec<(String, usize)> {
        self.proxy
            .pools()
            .all()
            .into_iter()
            .map(|(key, pool)| {
                (
                    format!("node{}/{}/{}", key.node, key.database, key.user),
                    pool.status().size,
                )
            })
            .collect()
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects with `config`; the connection runs in its own task.
pub async fn connect_with(config: &tokio_postgres::Config) -> Client {
    connect_task(config).await.0
}

pub async fn connect_task(config: &tokio_postgres::Config) -> (Client, JoinHandle<()>) {
    let (client, connection) = with_timeout(30, "connect", config.connect(NoTls))
        .await
        .unwrap_or_else(|e| panic!("connect failed: {e} ({:?})", e.code()));
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    (client, task)
}

/// A superuser connection straight to the primary (not through pgsplit), for checks.
pub async fn superuser() -> Client {
    require_cluster().await;
    replica_superuser(primary_port()).await
}

/// Runs `fut`, panicking if it takes longer than `secs`.
pub async fn with_timeout<F: std::future::Future>(secs: u64, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {secs} s"),
    }
}

/// Polls `check` every 50 ms until it returns true, or panics with `what` after `secs`.
pub async fn wait_until<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if check().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {secs} s waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A name unique to this process and call, for tables and application names.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A client program (psql, pgbench) with the connection environment set.
pub fn pg_command(program: &str, port: u16, user: &str, password: &str, db: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", port.to_string())
        .env("PGUSER", user)
        .env("PGPASSWORD", password)
        .env("PGDATABASE", db)
        .env("PGCONNECT_TIMEOUT", "30")
        .env("PGCLIENTENCODING", "UTF8")
        .env("LC_ALL", "C.UTF-8")
        .env("TZ", "UTC")
        .kill_on_drop(true);
    cmd
}

/// Runs pgbench as `app` on database `db` through `port`, within 4 minutes; with `schema`,
/// its tables live there (`search_path` through PGOPTIONS), away from the public ones that
/// benchmarks use. Panics unless it exits 0 with no error in its output (a read-only or
/// recovery error would mean a write reached a replica); returns stdout and stderr together.
pub async fn pgbench(port: u16, db: &str, schema: Option<&str>, args: &[&str]) -> String {
    let mut cmd = pg_command("pgbench", port, "app", APP_PASSWORD, db);
    cmd.env("PGAPPNAME", "pgsplit_test_pgbench").args(args);
    if let Some(schema) = schema {
        cmd.env("PGOPTIONS", format!("-c search_path={schema}"));
    }
    let out = run_command(cmd, None, 240).await;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pgbench {args:?} failed ({:?}):\n{text}",
        out.status
    );
    for bad in ["read-only transaction", "recovery", "ERROR"] {
        assert!(
            !text.contains(bad),
            "pgbench {args:?} reported {bad:?}:\n{text}"
        );
    }
    text
}

/// The number after `label` on its line of pgbench's output, e.g. 0 from
/// "number of failed transactions: 0 (0.000%)".
pub fn pgbench_figure(output: &str, label: &str) -> u64 {
    let line = output
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no '{label}' in pgbench output:\n{output}"));
    line[label.len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.split('/').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read '{line}'"))
}

/// A connection through `proxy` to database bench in which `schema` exists, for a test
/// that runs pgbench there.
pub async fn bench_schema(proxy: &TestProxy, app_name: &str, schema: &str) -> Client {
    let mut c = proxy.pg_config(app_name);
    c.dbname("bench");
    let client = connect_with(&c).await;
    client
        .batch_execute(&format!("create schema if not exists {schema}"))
        .await
        .unwrap();
    client
}

/// Runs a prepared command to completion, with `stdin` fed to it, within `secs`.
pub async fn run_command(mut cmd: Command, stdin: Option<&[u8]>, secs: u64) -> Output {
    use std::process::Stdio;
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("spawn client program (is it installed?)");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input).await.unwrap();
        drop(pipe);
    }
    with_timeout(secs, "client program", child.wait_with_output())
        .await
        .expect("client program ran")
}

/// Rows in pg_stat_activity on the primary with this application_name, as
/// (state, query) pairs, leaving out the checker itself.
pub async fn backends(checker: &Client, app_name: &str) -> Vec<(String, String)> {
    checker
        .query(
            "select coalesce(state, ''), coalesce(query, '') from pg_stat_activity \
             where application_name = $1 and pid <> pg_backend_pid()",
            &[&app_name],
        )
        .await
        .expect("query pg_stat_activity")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// The SQLSTATE of a tokio-postgres error, as text ("" when it is not a server error).
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_default()
}

/// The first value of the first row a simple query returns ("<NULL>" for NULL).
pub async fn show(client: &Client, sql: &str) -> String {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some(r.get(0).unwrap_or("<NULL>").to_string())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no row from {sql}"))
}

/// The port of the server that runs a read of `client` (one routing decision).
pub async fn read_port(client: &Client) -> u16 {
    show(client, "select inet_server_port()")
        .await
        .parse()
        .expect("a port")
}

/// The ports that reads through `proxy` reached: `clients` fresh clients connected one
/// after another, `reads` reads each. Each client reads from a replica of its own while
/// the replicas are equally busy, consecutive clients from different ones, so two
/// clients reach both replicas when both are in the rotation and idle.
pub async fn read_ports(proxy: &TestProxy, clients: usize, reads: usize) -> Vec<u16> {
    let mut ports = Vec::new();
    for _ in 0..clients {
        let client = proxy.connect(&unique("read_ports")).await;
        for _ in 0..reads {
            ports.push(read_port(&client).await);
        }
    }
    ports
}

/// A fresh client whose reads go to the replica at `port`: its own replica, which it
/// keeps while that replica is in the rotation and no busier than the others.
pub async fn client_reading_from(proxy: &TestProxy, port: u16) -> Client {
    for _ in 0..20 {
        let client = proxy.connect(&unique("reading_from")).await;
        if read_port(&client).await == port {
            return client;
        }
    }
    panic!("no client read from port {port} in 20 tries");
}

/// A client inside a read-only transaction running on the replica at `port`; the
/// transaction holds that replica (one transaction of outstanding work) until it ends.
pub async fn transaction_on(proxy: &TestProxy, port: u16) -> Client {
    for _ in 0..20 {
        let client = proxy.connect(&unique("transaction_on")).await;
        client.batch_execute("begin read only").await.unwrap();
        if read_port(&client).await == port {
            return client;
        }
        client.batch_execute("commit").await.unwrap();
    }
    panic!("no read-only transaction landed on port {port} in 20 tries");
}

/// A tokio-postgres error with its SQLSTATE and server message, for assertion output.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => format!("{e:?}"),
    }
}

/// Local ports of this process's TCP connections to `remote_port` (Linux: from
/// /proc/self/net/tcp{,6}, matched to this process's socket descriptors). Lets a test
/// tell its own proxy's server connections from anyone else's in pg_stat_activity.
pub fn own_ports_to(remote_port: u16) -> Vec<i32> {
    let mut inodes = std::collections::HashSet::new();
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let target = target.to_string_lossy().into_owned();
                if let Some(inode) = target
                    .strip_prefix("socket:[")
                    .and_then(|t| t.strip_suffix(']'))
                {
                    inodes.insert(inode.to_string());
                }
            }
        }
    }
    let mut ports = Vec::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 {
                continue;
            }
            let port_of = |addr: &str| {
                addr.rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            };
            if port_of(cols[2]) == Some(remote_port) && inodes.contains(cols[9]) {
                if let Some(local) = port_of(cols[1]) {
                    ports.push(local as i32);
                }
            }
        }
    }
    ports
}

/// Takes the session advisory lock `key` on the primary in a superuser session of its
/// own, held until the returned client is dropped (or the process dies): tests that share
/// something on the cluster (a schema, the replicas' replay) run one at a time, in this
/// process or another. Waits up to 10 minutes for it.
pub async fn cluster_lock(key: i64, what: &str) -> Client {
    let lock = superuser().await;
    with_timeout(
        600,
        what,
        lock.batch_execute(&format!("select pg_advisory_lock({key})")),
    )
    .await
    .unwrap();
    lock
}

/// Advisory lock key (on the primary) held by any test that changes how the replicas
/// replay (`recovery_min_apply_delay`, `pg_wal_replay_pause()`), so two such tests, in
/// this process or another, never fight over the replicas.
pub const REPLICA_REPLAY_LOCK: i64 = 7_468_526_581;

/// Holds `recovery_min_apply_delay` on both replicas while alive, so that they are always
/// behind the primary by at least that long; puts back what was there before when dropped,
/// even when the test panics. Holds [`REPLICA_REPLAY_LOCK`] in a session of its own
/// (PostgreSQL releases it if the process dies).
pub struct ReplicaApplyDelay {
    restore: Vec<(u16, String)>,
    _lock: Client,
}

impl ReplicaApplyDelay {
    pub async fn hold(delay: Duration) -> ReplicaApplyDelay {
        let lock = cluster_lock(REPLICA_REPLAY_LOCK, "the replica replay lock").await;
        let ms = delay.as_millis();
        let mut restore = Vec::new();
        for name in ["replica1", "replica2"] {
            let port = node_port(name);
            let c = replica_superuser(port).await;
            let row = c
                .query_one(
                    "select setting, coalesce(sourcefile, '') from pg_settings \
                     where name = 'recovery_min_apply_delay'",
                    &[],
                )
                .await
                .unwrap();
            let (setting, file): (String, String) = (row.get(0), row.get(1));
            // A delay set with ALTER SYSTEM (dev/cluster.sh delay) is put back; one equal to
            // ours is taken for the leftover of a run that was killed, and cleared.
            let keep = file.ends_with("postgresql.auto.conf")
                && setting != "0"
                && setting != ms.to_string();
            let back = if keep {
                format!("alter system set recovery_min_apply_delay = '{setting}ms'")
            } else {
                "alter system reset recovery_min_apply_delay".to_string()
            };
            restore.push((port, back));
            c.simple_query(&format!(
                "alter system set recovery_min_apply_delay = '{ms}ms'"
            ))
            .await
            .unwrap();
            c.simple_query("select pg_reload_conf()").await.unwrap();
        }
        ReplicaApplyDelay {
            restore,
            _lock: lock,
        }
    }
}

impl Drop for ReplicaApplyDelay {
    fn drop(&mut self) {
        // Synchronous on purpose: this also runs while a panic unwinds.
        for (port, sql) in &self.restore {
            let restored = psql_sync(
                *port,
                "postgres",
                SUPERUSER_PASSWORD,
                &[sql, "select pg_reload_conf()"],
            );
            if !restored {
                eprintln!(
                    "could not restore recovery_min_apply_delay on port {port}: \
                     run dev/cluster.sh delay 1 0; dev/cluster.sh delay 2 0"
                );
            }
        }
    }
}

/// Pauses replay on both replicas while alive (`pg_wal_replay_pause()`), holding
/// [`REPLICA_REPLAY_LOCK`]; resumes it when dropped, even when the test panics. The replicas
/// stay in the read rotation as long as the lag guard allows (`lag.max_replica_lag`).
pub struct ReplayPaused {
    _lock: Client,
}

impl ReplayPaused {
    pub async fn hold() -> ReplayPaused {
        let lock = cluster_lock(REPLICA_REPLAY_LOCK, "the replica replay lock").await;
        for name in ["replica1", "replica2"] {
            replica_superuser(node_port(name))
                .await
                .batch_execute("select pg_wal_replay_pause()")
                .await
                .unwrap();
        }
        ReplayPaused { _lock: lock }
    }
}

impl Drop for ReplayPaused {
    fn drop(&mut self) {
        for name in ["replica1", "replica2"] {
            let port = node_port(name);
            let resume = ["select pg_wal_replay_resume()"];
            if !psql_sync(port, "postgres", SUPERUSER_PASSWORD, &resume) {
                eprintln!("could not resume replay on port {port}: run dev/cluster.sh resume");
            }
        }
    }
}

/// Runs SQL statements with psql, synchronously (for drop guards, which also run while a
/// panic unwinds), as `user` on the node at `port`, database app. True when psql succeeded.
pub fn psql_sync(port: u16, user: &str, password: &str, statements: &[&str]) -> bool {
    let mut cmd = std::process::Command::new("psql");
    cmd.args(["-X", "-w", "-q", "-h", "127.0.0.1", "-U", user, "-d", "app"])
        .args(["-p", &port.to_string()]);
    for sql in statements {
        cmd.args(["-c", sql]);
    }
    let status = cmd
        .env("PGPASSWORD", password)
        .stdout(std::process::Stdio::null())
        .status();
    matches!(status, Ok(s) if s.success())
}

/// A superuser connection straight to the node on `port` (a replica, say), database app.
pub async fn replica_superuser(port: u16) -> Client {
    let mut c = tokio_postgres::Config::new();
    c.host("127.0.0.1")
        .port(port)
        .user("postgres")
        .password(SUPERUSER_PASSWORD)
        .dbname("app")
        .application_name("pgsplit-test-checker")
        .connect_timeout(Duration::from_secs(30));
    connect_with(&c).await
}

/// The admin user's password in config.toml.
pub const ADMIN_PASSWORD: &str = "admin";

/// Connects to the admin console of `proxy` as `user`.
pub async fn try_admin(
    proxy: &TestProxy,
    user: &str,
    password: &str,
) -> Result<Client, tokio_postgres::Error> {
    let mut c = tokio_postgres::Config::new();
    c.host("127.0.0.1")
        .port(proxy.port())
        .user(user)
        .password(password)
        .dbname("pgsplit")
        .connect_timeout(Duration::from_secs(30));
    let (client, connection) = c.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Connects to the admin console of `proxy` as `admin`.
pub async fn admin(proxy: &TestProxy) -> Client {
    try_admin(proxy, "admin", ADMIN_PASSWORD)
        .await
        .unwrap_or_else(|e| panic!("admin login failed: {}", describe(&e)))
}

/// One admin console result: rows of (column, value) pairs.
pub type AdminRows = Vec<Vec<(String, Option<String>)>>;

/// Runs an admin console command (or any simple query) and returns the rows of all its
/// statements.
pub async fn admin_rows(admin: &Client, sql: &str) -> AdminRows {
    let messages = admin
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
    messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                row.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_string(), row.get(i).map(str::to_string)))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The value of `column` in the row whose first column is `key`.
pub fn admin_value(rows: &AdminRows, key: &str, column: &str) -> Option<String> {
    let row = rows.iter().find(|r| r[0].1.as_deref() == Some(key))?;
    row.iter().find(|(c, _)| c == column)?.1.clone()
}

/// Runs `dev/cluster.sh` with `args`, synchronously (drop guards use it while a panic
/// unwinds), with this process's environment (`PGSPLIT_CLUSTER_DIR` and the ports), so it
/// acts on the cluster the tests use. Err holds the script's output when it fails.
pub fn cluster_command(args: &[&str]) -> Result<(), String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/dev/cluster.sh");
    let out = std::process::Command::new(script)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {script}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "dev/cluster.sh {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The index of the configured node called `name` in this proxy's node list (the index
/// the topology and the pools use).
pub fn node_index(proxy: &TestProxy, name: &str) -> usize {
    proxy
        .proxy
        .config()
        .nodes
        .iter()
        .position(|n| n.name == name)
        .unwrap_or_else(|| panic!("no node {name} in the proxy's config"))
}

/// The state the proxy's topology gives the replica with node index `node` now.
pub fn replica_state(proxy: &TestProxy, node: usize) -> Option<pgsplit::lag::HealthState> {
    proxy
        .proxy
        .routing()
        .topology
        .snapshot()
        .into_iter()
        .find(|r| r.node == node)
        .map(|r| r.state)
}

/// The value of the sample line of a Prometheus exposition `body` that starts with
/// `series` (name and labels as printed).
pub fn metric_sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The proxy's metrics now, in Prometheus format.
pub fn metrics_text(proxy: &TestProxy) -> String {
    proxy
        .proxy
        .metrics()
        .render(&proxy.proxy.metrics_snapshot())
}

/// Sends `GET path` and returns the status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A number from the environment (a property test's seed, case count or time bound), or
/// `default` when the variable is not set.
pub fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}
