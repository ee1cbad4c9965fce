//! Helpers shared by the routing tests (`tests/routing*.rs`): proxies with routing
//! adjusted, which node served a statement, counters, fixtures, and raw protocol batches.

use std::time::Duration;

use super::raw::{self, Message, RawConn};
use super::{describe, node_port, primary_port, unique, TestProxy, APP_PASSWORD};
use pgsplit::config::{Config, ReadYourWrites};
use pgsplit::router::Reason;
use tokio_postgres::{Client, SimpleQueryMessage};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

pub fn primary() -> i32 {
    primary_port() as i32
}

pub fn replica_ports() -> [i32; 2] {
    [node_port("replica1") as i32, node_port("replica2") as i32]
}

pub fn is_replica(port: i32) -> bool {
    replica_ports().contains(&port)
}

/// A proxy with routing on and, unless `adjust` says otherwise, no read-your-writes (so
/// that rule tests can write and read on one connection).
pub async fn routed(adjust: impl FnOnce(&mut Config)) -> TestProxy {
    TestProxy::start(|c| {
        c.routing.enabled = true;
        c.routing.read_your_writes = ReadYourWrites::Off;
        adjust(c);
    })
    .await
}

/// Every row of every statement of a simple query, as text.
pub async fn rows(client: &Client, sql: &str) -> Vec<Vec<String>> {
    super::admin_rows(client, sql)
        .await
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|(_, v)| v.unwrap_or_else(|| "<NULL>".to_string()))
                .collect()
        })
        .collect()
}

/// The first column of the first row of a simple query, as a port.
pub async fn port(client: &Client, sql: &str) -> i32 {
    let rows = rows(client, sql).await;
    let first = rows.first().unwrap_or_else(|| panic!("no row from {sql}"));
    first[0]
        .parse()
        .unwrap_or_else(|_| panic!("{sql}: {:?} is not a port", first[0]))
}

/// The first column of the only row of a query over the extended protocol, as a port.
pub async fn port_ext(client: &Client, sql: &str) -> i32 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)))
        .get(0)
}

#[track_caller]
pub fn assert_primary(port: i32, what: &str) {
    assert_eq!(
        port,
        primary(),
        "{what}: expected the primary, served by {port}"
    );
}

#[track_caller]
pub fn assert_replica(port: i32, what: &str) {
    assert!(
        is_replica(port),
        "{what}: expected a replica {:?}, served by {port}",
        replica_ports()
    );
}

/// The error of a simple query that must fail.
pub async fn simple_error(client: &Client, sql: &str) -> tokio_postgres::Error {
    match client.simple_query(sql).await {
        Ok(_) => panic!("{sql}: expected an error"),
        Err(e) => e,
    }
}

/// A connection straight to a node (not through pgsplit) as `user`.
pub async fn direct(port: u16, user: &str, password: &str) -> Client {
    let mut c = tokio_postgres::Config::new();
    c.host("127.0.0.1")
        .port(port)
        .user(user)
        .password(password)
        .dbname("app")
        .application_name("pgsplit-routing-test-setup")
        .connect_timeout(Duration::from_secs(30));
    super::connect_with(&c).await
}

/// User `app` straight on the primary: setup and checks that must not go through pgsplit.
pub async fn app_on_primary() -> Client {
    super::require_cluster().await;
    direct(primary_port(), "app", APP_PASSWORD).await
}

/// Superuser connections straight to each replica.
pub async fn replica_superusers() -> Vec<Client> {
    let mut out = Vec::new();
    for name in ["replica1", "replica2"] {
        out.push(super::replica_superuser(node_port(name)).await);
    }
    out
}

/// Waits until both replicas have replayed every transaction the primary committed so far:
/// commits a transaction there and waits for its commit record on each replica (replay
/// follows WAL order, so everything committed before it is visible too).
pub async fn replicas_caught_up(secs: u64) {
    let primary = app_on_primary().await;
    let xid: String = primary
        .query_one("select pg_current_xact_id()::text", &[])
        .await
        .unwrap()
        .get(0);
    let replicas = replica_superusers().await;
    let sql = format!("select pg_xact_status('{xid}'::xid8) = 'committed'");
    for (i, replica) in replicas.iter().enumerate() {
        super::wait_until(
            secs,
            &format!("replica{} replays xid {xid}", i + 1),
            || async {
                // "transaction ID is in the future" until the replica has heard of it.
                replica
                    .query_one(&sql, &[])
                    .await
                    .map(|r| r.get::<_, Option<bool>>(0) == Some(true))
                    .unwrap_or(false)
            },
        )
        .await;
    }
}

/// Routing counters of a proxy at one moment, to compare with a later moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    pub reasons: Vec<u64>,
    pub nodes: Vec<u64>,
}

impl Counts {
    pub fn of(proxy: &TestProxy) -> Counts {
        let stats = &proxy.proxy.routing().stats;
        Counts {
            reasons: Reason::ALL.iter().map(|r| stats.by_reason(*r)).collect(),
            nodes: stats.by_node(),
        }
    }

    /// What was counted since `self`.
    pub fn since(&self, proxy: &TestProxy) -> Counts {
        let now = Counts::of(proxy);
        Counts {
            reasons: now
                .reasons
                .iter()
                .zip(&self.reasons)
                .map(|(a, b)| a - b)
                .collect(),
            nodes: now
                .nodes
                .iter()
                .zip(&self.nodes)
                .map(|(a, b)| a - b)
                .collect(),
        }
    }

    pub fn reason(&self, r: Reason) -> u64 {
        self.reasons[r as usize]
    }

    pub fn replicas(&self) -> u64 {
        self.nodes[1..].iter().sum()
    }

    pub fn reads_anywhere(&self) -> u64 {
        [
            Reason::Read,
            Reason::NoReplica,
            Reason::Pinned,
            Reason::Hint,
            Reason::RouteSetting,
            Reason::PrimaryTable,
            Reason::Serializable,
        ]
        .iter()
        .map(|r| self.reason(*r))
        .sum()
    }
}

/// Waits until the proxy holds no server connection for any client. tokio-postgres hands
/// an error to the caller as soon as the ErrorResponse arrives, before the ReadyForQuery
/// behind it, so the next statement can reach the proxy while the failed one's server is
/// still attached (see `statement_sent_right_after_an_error_is_routed_by_its_own_sql`);
/// its COPY ... FROM STDIN returns at CommandComplete too.
/// Tests of other rules wait for this after an error, so they check only their own rule.
pub async fn settled(proxy: &TestProxy) {
    super::wait_until(
        10,
        "the proxy to release its server connections",
        || async {
            proxy
                .proxy
                .pools()
                .all()
                .iter()
                .all(|(_, pool)| pool.status().available == pool.status().size)
        },
    )
    .await;
}

/// Runs `sql` (one simple query) and checks from the counters that it was routed once, to
/// the primary, as a write. Returns the query's result.
pub async fn routed_as_write(
    proxy: &TestProxy,
    client: &Client,
    sql: &str,
) -> Result<Vec<SimpleQueryMessage>, tokio_postgres::Error> {
    let before = Counts::of(proxy);
    let result = client.simple_query(sql).await;
    if result.is_err() {
        settled(proxy).await;
    }
    let delta = before.since(proxy);
    assert_eq!(
        (delta.nodes[0], delta.replicas(), delta.reason(Reason::Write)),
        (1, 0, 1),
        "{sql}: expected one routing decision, to the primary, as a write; counters moved by {delta:?}"
    );
    result
}

/// Drops what a test created (SQL run as `app` on the primary) when the test ends, also
/// when it panics. Synchronous on purpose, since it runs while a panic unwinds.
pub struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let sql = ["set lock_timeout = '5s'", self.0.as_str()];
        if !super::psql_sync(primary_port(), "app", APP_PASSWORD, &sql) {
            eprintln!("cleanup failed: {}", self.0);
        }
    }
}

/// Runs `drop_sql` (`drop ... if exists`) now, in case a process with the same pid left
/// the objects behind, and again when the test ends.
pub async fn cleanup(drop_sql: &str) -> Cleanup {
    app_on_primary()
        .await
        .batch_execute(drop_sql)
        .await
        .unwrap();
    Cleanup(drop_sql.to_string())
}

/// A table `t_*` (id 1..=10, v 0) and a view `w_*` (`select inet_server_port() as port`),
/// created on the primary in one transaction and visible on both replicas.
pub struct Fixture {
    pub t: String,
    pub w: String,
    pub _cleanup: Cleanup,
}

impl Fixture {
    pub async fn new() -> Fixture {
        let t = unique("t_routing");
        let w = unique("w_routing");
        let cleanup = cleanup(&format!(
            "drop view if exists {w}; drop table if exists {t}"
        ))
        .await;
        let setup = app_on_primary().await;
        setup
            .batch_execute(&format!(
                "begin;
                 create table {t} (id int primary key, v int not null default 0);
                 insert into {t} select g, 0 from generate_series(1, 10) g;
                 create view {w} as select inet_server_port() as port;
                 grant select, insert, update, delete on {t} to app_md5;
                 grant select on {w} to app_md5;
                 commit;"
            ))
            .await
            .unwrap();
        let fixture = Fixture {
            t,
            w,
            _cleanup: cleanup,
        };
        fixture.wait_on_replicas().await;
        fixture
    }

    pub async fn wait_on_replicas(&self) {
        let replicas = replica_superusers().await;
        let sql = format!(
            "select to_regclass('public.{}') is not null and to_regclass('public.{}') is not null",
            self.t, self.w
        );
        for (i, replica) in replicas.iter().enumerate() {
            super::wait_until(
                30,
                &format!("{} and {} on replica{}", self.t, self.w, i + 1),
                || async {
                    replica
                        .query_one(&sql, &[])
                        .await
                        .map(|r| r.get::<_, bool>(0))
                        .unwrap_or(false)
                },
            )
            .await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Raw protocol (what tokio-postgres will not send: batches in one write)
// ---------------------------------------------------------------------------------------

/// Parse of statement `name`, no parameter types.
pub fn parse_msg(name: &str, sql: &str) -> Vec<u8> {
    raw::parse(name, sql)
}

/// Bind of the unnamed portal to `statement`, with no parameters.
pub fn bind_msg(statement: &str) -> Vec<u8> {
    let mut b = raw::cstr("");
    b.extend(raw::cstr(statement));
    b.extend_from_slice(&0i16.to_be_bytes()); // parameter formats
    b.extend_from_slice(&0i16.to_be_bytes()); // parameters
    b.extend_from_slice(&0i16.to_be_bytes()); // result formats
    raw::message(b'B', &b)
}

/// Execute of the unnamed portal, every row.
pub fn execute_msg() -> Vec<u8> {
    raw::execute("")
}

pub fn sync_msg() -> Vec<u8> {
    raw::sync()
}

/// A simple Query.
pub fn query_msg(sql: &str) -> Vec<u8> {
    raw::message(b'Q', &raw::cstr(sql))
}

/// Logs in to the proxy as `app_md5` over the raw protocol.
pub async fn raw_login(proxy: &TestProxy) -> RawConn {
    RawConn::login_md5(proxy.addr, "app_md5", APP_PASSWORD, &[("database", "app")])
        .await
        .0
}

/// What came back for one batch (up to ReadyForQuery): the first column of each DataRow
/// and the SQLSTATE of each error.
#[derive(Debug, Default)]
pub struct BatchResult {
    pub values: Vec<String>,
    pub errors: Vec<String>,
}

pub async fn read_batch(conn: &mut RawConn) -> BatchResult {
    let mut out = BatchResult::default();
    for m in conn.until_ready().await {
        match m.tag {
            b'D' => out.values.push(m.data_row()[0].clone().unwrap_or_default()),
            b'E' => out.errors.push(describe_raw(&m)),
            _ => {}
        }
    }
    out
}

/// Sends one simple query and returns the first value it gave (as a port) and its errors.
pub async fn raw_port(conn: &mut RawConn, sql: &str) -> (Option<i32>, Vec<String>) {
    conn.write_raw(&query_msg(sql)).await.unwrap();
    let got = read_batch(conn).await;
    (
        got.values.first().map(|v| v.parse::<i32>().unwrap()),
        got.errors,
    )
}

pub fn describe_raw(m: &Message) -> String {
    let f = m.fields();
    format!(
        "{} {}",
        f.get(&b'C').cloned().unwrap_or_default(),
        f.get(&b'M').cloned().unwrap_or_default()
    )
}
