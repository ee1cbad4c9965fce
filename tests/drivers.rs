//! The driver matrix: real drivers of other languages through pgsplit, each doing what
//! applications do (SCRAM login, prepared statements, a transaction, COPY, LISTEN/NOTIFY, a
//! cancel) and checking with `inet_server_port()` that its writes ran on the primary and a
//! plain read on a replica. sqlx runs in process; the other programs are in `tests/drivers/`; `dev/drivers.sh` installs
//! the drivers (asyncpg from PyPI, node-postgres from npm, PostgreSQL JDBC and Go's lib/pq
//! from Debian) into `PGSPLIT_DRIVERS_DIR`, and `dev/test.sh` runs it first.

mod common;

use std::path::PathBuf;
use tokio::process::Command;

use common::{node_port, primary_port, unique, TestProxy};

/// Every check a driver program prints, in order.
const CHECKS: [&str; 7] = [
    "scram login: ok",
    "prepared statement: ok",
    "transaction on the primary: ok",
    "read on a replica: ok",
    "copy: ok",
    "listen/notify: ok",
    "cancel: ok",
];

fn drivers_dir() -> PathBuf {
    std::env::var_os("PGSPLIT_DRIVERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/pgsplit-drivers"))
}

fn program(name: &str) -> String {
    format!("{}/tests/drivers/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd` against a fresh pgsplit (routing on) with a table of its own, and checks that
/// it passed every check.
async fn run_driver(label: &str, mut cmd: Command) {
    let proxy = TestProxy::start(|c| c.routing.enabled = true).await;
    let table = unique("drivers");
    let setup = proxy.connect("drivers_setup").await;
    setup
        .batch_execute(&format!("create table {table} (v int)"))
        .await
        .unwrap();
    cmd.env("PGSPLIT_PORT", proxy.addr.port().to_string())
        .env("PRIMARY_PORT", primary_port().to_string())
        .env(
            "REPLICA_PORTS",
            format!("{},{}", node_port("replica1"), node_port("replica2")),
        )
        .env("TABLE", &table)
        // Tests run at once on one cluster: each listens on a channel of its own.
        .env("CHANNEL", unique("drivers_channel"));
    let out = common::run_command(cmd, None, 120).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    setup
        .batch_execute(&format!("drop table {table}"))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{label} failed (install the drivers with dev/drivers.sh):\n{stdout}\n{stderr}"
    );
    for check in CHECKS {
        assert!(
            stdout.contains(check),
            "{label}: no '{check}' in:\n{stdout}\n{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg() {
    let mut cmd = Command::new(drivers_dir().join("venv/bin/python"));
    cmd.arg(program("asyncpg_check.py"));
    run_driver("asyncpg", cmd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres() {
    let mut cmd = Command::new("node");
    cmd.arg(program("node_pg_check.js"))
        .env("NODE_PATH", drivers_dir().join("node/node_modules"));
    run_driver("node-postgres", cmd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc() {
    let mut cmd = Command::new("java");
    cmd.args([
        "-cp",
        "/usr/share/java/postgresql.jar",
        &program("JdbcCheck.java"),
    ]);
    run_driver("JDBC", cmd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_lib_pq() {
    let mut cmd = Command::new("go");
    cmd.args(["run", "main.go"])
        .current_dir(program("go_lib_pq"))
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOCACHE", drivers_dir().join("gocache"));
    run_driver("Go lib/pq", cmd).await;
}

/// sqlx (Rust) in process, the same checks but the cancel: sqlx has no cancel request (a
/// future dropped on timeout closes its connection instead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx() {
    use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgSslMode};
    use sqlx::{Connection, PgConnection};

    let proxy = TestProxy::start(|c| c.routing.enabled = true).await;
    let table = unique("drivers_sqlx");
    let options = PgConnectOptions::new()
        .host("127.0.0.1")
        .port(proxy.addr.port())
        .username("app")
        .password(common::APP_PASSWORD)
        .database("app")
        .ssl_mode(PgSslMode::Disable);
    let mut conn = PgConnection::connect_with(&options)
        .await
        .expect("SCRAM login");
    sqlx::query(&format!("create table {table} (v int)"))
        .execute(&mut conn)
        .await
        .unwrap();

    for _ in 0..3 {
        let n: i32 = sqlx::query_scalar("select $1::int + 1")
            .bind(41)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, 42, "prepared statement");
    }

    let mut tx = conn.begin().await.unwrap();
    let port: i32 = sqlx::query_scalar(&format!(
        "insert into {table} (v) values ($1) returning inet_server_port()"
    ))
    .bind(1)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        port,
        i32::from(primary_port()),
        "the write ran on the primary"
    );

    let mut reader = PgConnection::connect_with(&options).await.unwrap();
    let port: i32 = sqlx::query_scalar("select inet_server_port()")
        .fetch_one(&mut reader)
        .await
        .unwrap();
    let replicas = [node_port("replica1"), node_port("replica2")].map(i32::from);
    assert!(
        replicas.contains(&port),
        "the read ran on {port}, not a replica"
    );

    let mut copy = conn
        .copy_in_raw(&format!("copy {table} (v) from stdin"))
        .await
        .unwrap();
    let rows: String = (0..100).map(|i| format!("{i}\n")).collect();
    copy.send(rows.as_bytes()).await.unwrap();
    assert_eq!(copy.finish().await.unwrap(), 100, "copy");

    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.clone())
        .await
        .unwrap();
    let mut listener = PgListener::connect_with(&pool).await.unwrap();
    let channel = unique("drivers_channel");
    listener.listen(&channel).await.unwrap();
    sqlx::query(&format!("notify {channel}, 'hello'"))
        .execute(&mut reader)
        .await
        .unwrap();
    let note = common::with_timeout(10, "the notification", listener.recv())
        .await
        .unwrap();
    assert_eq!(note.payload(), "hello");

    sqlx::query(&format!("drop table {table}"))
        .execute(&mut conn)
        .await
        .unwrap();
}
