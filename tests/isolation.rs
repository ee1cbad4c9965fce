//! Isolation between the clients of one server connection (issue 9): whatever client A
//! does, the next client B that gets A's server connection sees a session exactly like a
//! fresh one. A property test drives random sequences of session-changing statements
//! through a pool of one server connection and compares B's view of its session with the
//! view on a never-used connection; named tests pin each leak the issue reports.
//!
//! Routing is off in every test here, so everything runs on the primary, and the pool
//! has one server connection, so B surely gets the connection A used.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::raw::{bind, execute, flush, parse, sync, tags, Message, RawConn};
use common::{
    primary_port, show, superuser, unique, with_timeout, TestProxy, APP_PASSWORD,
    SUPERUSER_PASSWORD,
};
use pgsplit::config::Config;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::{Client, SimpleQueryMessage};

/// Routing off (everything on the primary) and one server connection.
fn one_connection(config: &mut Config) {
    config.routing.enabled = false;
    config.pool.max_size = 1;
}

async fn one_connection_proxy() -> TestProxy {
    TestProxy::start(one_connection).await
}

/// How the property runs: on the primary alone, or with routing on, where A's reads and
/// the settings that follow them also land on a replica's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Routing off, one server connection (`one_connection`).
    Primary,
    /// Routing on (no read-your-writes, so that more of A's reads reach the replica), the
    /// primary and replica1 only, one server connection to each. B reads its view on
    /// both: in a transaction block (the primary) and a read-only one (the replica).
    Routed,
}

impl Mode {
    async fn proxy(self) -> TestProxy {
        match self {
            Mode::Primary => one_connection_proxy().await,
            Mode::Routed => {
                TestProxy::start(|c| {
                    one_connection(c);
                    c.routing.enabled = true;
                    c.routing.read_your_writes = pgsplit::config::ReadYourWrites::Off;
                    c.nodes.retain(|n| n.name != "replica2");
                })
                .await
            }
        }
    }

    async fn view(self, b: &Client) -> View {
        match self {
            Mode::Primary => view(b).await,
            Mode::Routed => {
                let primary = view_in_block(b, "BEGIN").await;
                let replica = view_in_block(b, "BEGIN READ ONLY").await;
                View::merge([("primary", primary), ("replica", replica)])
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// What a client sees of its session
// ---------------------------------------------------------------------------------------

/// A client's view of its server session: everything another client could have left
/// there. Protocol-level prepared statements are left out: pgsplit keeps its own cache of
/// them on each server connection, under its own names, and clients cannot reach them by
/// SQL (`pg_prepared_statements` lists them with `from_sql = false`).
#[derive(Debug, Clone)]
struct View {
    /// `SHOW ALL`: name -> setting.
    settings: BTreeMap<String, String>,
    /// The settings at their built-in defaults (`pg_settings.source = 'default'`).
    defaults: BTreeSet<String>,
    /// Every other part, by label: rows as text.
    parts: BTreeMap<String, Vec<String>>,
}

impl View {
    /// The view of a client that could not read it: differs from every real one.
    fn unreadable(why: String) -> View {
        View {
            settings: BTreeMap::new(),
            defaults: BTreeSet::new(),
            parts: BTreeMap::from([("error".to_string(), vec![why])]),
        }
    }

    /// One view of several, each name and label prefixed with its place.
    fn merge<const N: usize>(views: [(&str, View); N]) -> View {
        let mut merged = View {
            settings: BTreeMap::new(),
            defaults: BTreeSet::new(),
            parts: BTreeMap::new(),
        };
        for (place, view) in views {
            if let Some(error) = view.parts.get("error") {
                return View::unreadable(format!("{place}: {}", error.join(" ")));
            }
            let named = |name: String| format!("{place}: {name}");
            merged
                .settings
                .extend(view.settings.into_iter().map(|(k, v)| (named(k), v)));
            merged.defaults.extend(view.defaults.into_iter().map(named));
            merged
                .parts
                .extend(view.parts.into_iter().map(|(k, v)| (named(k), v)));
        }
        merged
    }
}

/// The queries of a view besides `SHOW ALL`, with their labels.
const VIEW_QUERIES: &[(&str, &str)] = &[
    ("current_user", "SELECT current_user"),
    ("session_user", "SELECT session_user"),
    // A custom setting (the row-level-security tenant pattern) is in neither SHOW ALL nor
    // pg_settings. Once set, its placeholder stays and reads as '' after a reset.
    (
        "custom_setting",
        "SELECT coalesce(nullif(current_setting('iso.tenant', true), ''), '<unset>')",
    ),
    (
        "locks",
        "SELECT locktype, coalesce(relation::regclass::text, ''), mode, granted, \
         coalesce(classid::text, ''), coalesce(objid::text, ''), coalesce(objsubid::text, '') \
         FROM pg_locks WHERE pid = pg_backend_pid() AND locktype <> 'virtualxid' \
         ORDER BY 1, 2, 3, 5, 6, 7",
    ),
    (
        "prepared_statements",
        "SELECT name, statement FROM pg_prepared_statements WHERE from_sql ORDER BY 1",
    ),
    (
        "temp_objects",
        "SELECT 'class ' || relkind, relname FROM pg_class \
         WHERE relnamespace = pg_my_temp_schema() \
         UNION ALL SELECT 'function', proname FROM pg_proc \
         WHERE pronamespace = pg_my_temp_schema() \
         UNION ALL SELECT 'type', typname FROM pg_type \
         WHERE typnamespace = pg_my_temp_schema() ORDER BY 2, 1",
    ),
    (
        "listen_channels",
        "SELECT c FROM pg_listening_channels() AS c ORDER BY 1",
    ),
    (
        "cursors",
        "SELECT name, is_holdable::text, statement FROM pg_cursors ORDER BY 1",
    ),
    // The session's last sequence value (nextval, setval, a serial column's default): on
    // a fresh connection an error (55000). Last: inside a view's transaction block, the
    // error ends what can be read.
    ("last_sequence_value", "SELECT lastval()::text"),
];

/// The rows of a simple query, each row's columns joined with " | "; an error is one row
/// saying so, so that a view that cannot be read differs from a good one.
async fn text_rows(client: &Client, sql: &str) -> Vec<Vec<String>> {
    match with_timeout(30, sql, client.simple_query(sql)).await {
        Ok(messages) => messages
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or("<NULL>").to_string())
                        .collect(),
                ),
                _ => None,
            })
            .collect(),
        Err(e) => vec![vec![format!("error {}", error_text(&e))]],
    }
}

/// SQLSTATE and message of a server error, or what else went wrong.
fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

async fn view(client: &Client) -> View {
    let settings = text_rows(client, "SHOW ALL")
        .await
        .into_iter()
        .map(|row| {
            let value = row.get(1).cloned().unwrap_or_default();
            (row[0].clone(), value)
        })
        .collect();
    let defaults = text_rows(
        client,
        "SELECT name FROM pg_settings WHERE source = 'default'",
    )
    .await
    .into_iter()
    .map(|row| row.join(" | "))
    .collect();
    let mut parts = BTreeMap::new();
    for (label, sql) in VIEW_QUERIES {
        let rows = text_rows(client, sql).await;
        parts.insert(
            label.to_string(),
            rows.into_iter().map(|r| r.join(" | ")).collect(),
        );
    }
    View {
        settings,
        defaults,
        parts,
    }
}

/// The view read inside a transaction block opened with `begin` (routing sends the block,
/// and so the view, to one node), which is then rolled back.
async fn view_in_block(client: &Client, begin: &str) -> View {
    if let Err(e) = with_timeout(30, begin, client.batch_execute(begin)).await {
        return View::unreadable(format!("{begin}: {}", error_text(&e)));
    }
    let view = view(client).await;
    let _ = with_timeout(30, "ROLLBACK", client.batch_execute("ROLLBACK")).await;
    view
}

/// What differs between `got` and `fresh`, one line each; empty when they are equal.
fn differences(got: &View, fresh: &View) -> String {
    if let Some(error) = got.parts.get("error") {
        return format!("  {}\n", error.join(" "));
    }
    let mut out = String::new();
    let names: BTreeSet<&String> = got.settings.keys().chain(fresh.settings.keys()).collect();
    for name in names {
        let (g, f) = (got.settings.get(name), fresh.settings.get(name));
        // A library loaded in the backend (PL/pgSQL, by any DO block or function) adds its
        // settings to SHOW ALL, and stays loaded through DISCARD ALL; at their defaults
        // they tell nothing of what another client did.
        let loaded_at_default = f.is_none() && got.defaults.contains(name);
        if g != f && !loaded_at_default {
            let _ = writeln!(out, "  SHOW {name}: {g:?} (fresh connection: {f:?})");
        }
    }
    let labels: BTreeSet<&String> = got.parts.keys().chain(fresh.parts.keys()).collect();
    for label in labels {
        let (rows, fresh_rows) = (got.parts.get(label), fresh.parts.get(label));
        if rows != fresh_rows {
            let _ = writeln!(
                out,
                "  {label}: {rows:?} (fresh connection: {fresh_rows:?})"
            );
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Objects the statements use
// ---------------------------------------------------------------------------------------

/// A schema with a table, a procedure and functions that change the session, a table whose
/// trigger sets work_mem, and a role `app` may SET ROLE to; made by the superuser, unique to
/// this test.
struct World {
    schema: String,
    role: String,
    /// Advisory lock keys of this test are `lock_base + n` (n < 2^20), away from other
    /// processes' keys (the cluster is shared).
    lock_base: i64,
}

impl World {
    async fn create(tag: &str) -> World {
        let schema = unique(&format!("iso_{tag}"));
        let role = unique(&format!("iso_role_{tag}"));
        // Different tests of this process take different slices of the key space.
        let slot = schema.rsplit('_').next().unwrap().parse::<i64>().unwrap() & 0xff;
        let lock_base = ((std::process::id() as i64 & 0xff_ffff) << 28) | (slot << 20);
        let su = superuser().await;
        su.batch_execute(&format!(
            "CREATE SCHEMA {schema};
             GRANT USAGE ON SCHEMA {schema} TO PUBLIC;
             CREATE TABLE {schema}.t (a int);
             GRANT ALL ON {schema}.t TO PUBLIC;
             CREATE PROCEDURE {schema}.set_setting(name text, value text) LANGUAGE plpgsql
                 AS $$BEGIN PERFORM set_config(name, value, false); END$$;
             CREATE FUNCTION {schema}.set_setting_fn(name text, value text) RETURNS text
                 LANGUAGE plpgsql AS $$BEGIN RETURN set_config(name, value, false); END$$;
             CREATE FUNCTION {schema}.lock_fn(k bigint) RETURNS void LANGUAGE sql
                 AS $$SELECT pg_advisory_lock(k)$$;
             CREATE FUNCTION {schema}.with_own_work_mem() RETURNS text LANGUAGE sql
                 SET work_mem = '3MB' AS $$SELECT current_setting('work_mem')$$;
             CREATE FUNCTION {schema}.set_work_mem_trigger() RETURNS trigger
                 LANGUAGE plpgsql AS $$BEGIN
                     PERFORM set_config('work_mem', NEW.a || 'MB', false); RETURN NEW;
                 END$$;
             CREATE TABLE {schema}.with_trigger (a int);
             GRANT ALL ON {schema}.with_trigger TO PUBLIC;
             CREATE TRIGGER set_work_mem BEFORE INSERT ON {schema}.with_trigger
                 FOR EACH ROW EXECUTE FUNCTION {schema}.set_work_mem_trigger();
             CREATE TABLE {schema}.serial_t (id serial, a int);
             GRANT ALL ON {schema}.serial_t TO PUBLIC;
             GRANT ALL ON SEQUENCE {schema}.serial_t_id_seq TO PUBLIC;
             CREATE SEQUENCE {schema}.seq;
             GRANT ALL ON SEQUENCE {schema}.seq TO PUBLIC;
             CREATE ROLE {role} NOLOGIN;
             GRANT {role} TO app;"
        ))
        .await
        .unwrap_or_else(|e| panic!("create the test's objects: {e}"));
        World {
            schema,
            role,
            lock_base,
        }
    }

    fn lock_key(&self, n: i64) -> i64 {
        self.lock_base + n
    }

    /// Waits (up to 10 s) until no backend holds an advisory lock of this test, as those of
    /// a dropped proxy's server connections do until they have closed.
    async fn wait_unlocked(&self) {
        let su = superuser().await;
        let low = self.lock_base & 0xffff_ffff;
        let held = format!(
            "SELECT count(*)::text FROM pg_locks WHERE locktype = 'advisory' \
             AND classid = {}::oid AND objid BETWEEN {low}::oid AND {}::oid",
            self.lock_base >> 32,
            low + (1 << 20) - 1
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while show(&su, &held).await != "0" && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Drops what `create` made, as far as it can, also when a test panics (synchronously,
/// with psql, as a drop cannot wait for a future).
impl Drop for World {
    fn drop(&mut self) {
        let sql = format!(
            "DROP SCHEMA IF EXISTS {s} CASCADE; DROP OWNED BY {r}; DROP ROLE {r}",
            s = self.schema,
            r = self.role
        );
        let _ = std::process::Command::new("psql")
            .args(["-X", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "app"])
            .arg("-p")
            .arg(primary_port().to_string())
            .args(["-c", &sql])
            .env("PGPASSWORD", SUPERUSER_PASSWORD)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

// ---------------------------------------------------------------------------------------
// Client A's statements
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    /// A simple Query message (may hold several statements).
    Simple,
    /// Parse/Bind/Execute/Sync through tokio-postgres `query` (one statement).
    Extended,
}

/// One message's worth of SQL that client A sends.
#[derive(Debug, Clone)]
struct Sent {
    proto: Proto,
    sql: String,
}

/// Statements that belong together (a transaction block is one group); a group is sent
/// whole or not at all, so a shrunk case leaves a transaction open only where the case
/// did (its last group, on purpose).
type Group = Vec<Sent>;

/// How many kinds of group `random_group` draws from.
const ARMS: u32 = 70;

/// A random group of statements for client A. `n` numbers the objects A creates (prepared
/// statements, cursors, temp tables) so they do not clash within one client.
fn random_group(rng: &mut StdRng, world: &World, n: &mut u32) -> Group {
    let s = &world.schema;
    let r = &world.role;
    *n += 1;
    let id = *n;
    let mb = rng.gen_range(1..=64);
    let key = world.lock_key(rng.gen_range(0..64));
    let arm = rng.gen_range(0..ARMS);
    let mut simple_only = false;
    let statements: Vec<String> = match arm {
        0 => vec![format!("SET work_mem = '{mb}MB'")],
        1 => vec![format!("SET search_path TO {s}, public")],
        2 => vec![format!("SET statement_timeout = '{mb}s'")],
        3 => vec!["SET DateStyle = 'German'".into()],
        4 => vec![format!("SET application_name = 'a_{mb}'")],
        5 => vec!["SET TIME ZONE 'Asia/Tokyo'".into()],
        6 => vec![format!("SET SCHEMA '{s}'")],
        7 => vec!["SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE".into()],
        8 => vec!["RESET ALL".into()],
        9 => vec!["RESET work_mem".into()],
        10 => vec!["RESET ROLE".into()],
        11 => vec![format!("SET ROLE {r}")],
        12 => vec![format!("SET SESSION ROLE {r}")],
        13 => vec![format!("SELECT set_config('work_mem', '{mb}MB', false)")],
        14 => vec![format!(
            "SELECT set_config('statement_timeout', '{mb}s', true)"
        )],
        15 => vec![format!("DO $$BEGIN EXECUTE 'SET ROLE {r}'; END$$")],
        16 => vec![format!(
            "DO $$BEGIN PERFORM set_config('work_mem', '{mb}MB', false); END$$"
        )],
        17 => vec![format!("DO $$BEGIN PERFORM pg_advisory_lock({key}); END$$")],
        18 => vec![format!(
            "DO $$BEGIN CREATE TEMP TABLE IF NOT EXISTS iso_do_{id} (a int); END$$"
        )],
        19 => vec![format!("SELECT pg_advisory_lock({key})")],
        20 => vec![format!("SELECT pg_advisory_xact_lock({key})")],
        21 => vec![format!("LISTEN iso_ch_{mb}")],
        22 => vec!["UNLISTEN *".into()],
        23 => vec![format!("PREPARE iso_p_{id} AS SELECT {mb}")],
        24 => vec![format!("CREATE TEMP TABLE iso_tmp_{id} (a int)")],
        25 => vec![
            "BEGIN".into(),
            format!("DECLARE iso_c_{id} CURSOR WITH HOLD FOR SELECT {mb}"),
            "COMMIT".into(),
        ],
        26 => vec![
            "BEGIN".into(),
            format!("SET work_mem = '{mb}MB'"),
            if rng.gen_bool(0.5) {
                "COMMIT"
            } else {
                "ROLLBACK"
            }
            .into(),
        ],
        27 => vec![
            "BEGIN".into(),
            format!("SET LOCAL work_mem = '{mb}MB'"),
            format!("SET LOCAL ROLE {r}"),
            format!("INSERT INTO {s}.t VALUES ({mb})"),
            "COMMIT".into(),
        ],
        28 => vec![
            "BEGIN".into(),
            format!("CREATE TEMP TABLE iso_drop_{id} (a int) ON COMMIT DROP"),
            format!("SET ROLE {r}"),
            if rng.gen_bool(0.5) {
                "COMMIT"
            } else {
                "ROLLBACK"
            }
            .into(),
        ],
        29 => vec![format!("CALL {s}.set_setting('work_mem', '{mb}MB')")],
        30 => vec![format!("SELECT {s}.set_setting_fn('work_mem', '{mb}MB')")],
        31 => vec![format!("SELECT {s}.lock_fn({key})")],
        32 => vec![format!("SELECT {s}.with_own_work_mem()")],
        33 => vec![format!("INSERT INTO {s}.t VALUES ({mb})")],
        34 => vec![format!("SELECT count(*) FROM {s}.t")],
        35 => vec!["SELECT 1".into()],
        36 => vec!["DISCARD ALL".into()],
        37 => vec![format!("SELECT set_config('role', '{r}', false)")],
        38 => vec![
            "BEGIN".into(),
            format!("SELECT pg_advisory_lock({key})"),
            "ROLLBACK".into(),
        ],
        39 => vec![format!("SET iso.tenant = '{mb}'")],
        40 => vec![format!("SELECT set_config('iso.tenant', '{mb}', false)")],
        41 => vec![format!(
            "DO $$BEGIN PERFORM set_config('iso.tenant', '{mb}', false); END$$"
        )],
        42 => vec![
            "BEGIN".into(),
            format!("SET LOCAL iso.tenant = '{mb}'"),
            format!("SELECT current_setting('iso.tenant')"),
            "COMMIT".into(),
        ],
        43 => vec!["SET plpgsql.extra_warnings = 'all'".into()],
        44 => vec!["RESET iso.tenant".into()],
        // Quoting that a scanner with other rules than PostgreSQL's gets wrong: each hides
        // the SET from it (multi-statement: simple protocol only).
        46 => {
            simple_only = true;
            vec![format!("SELECT E'\\''; SET work_mem = '{mb}MB'")]
        }
        47 => {
            simple_only = true;
            vec![format!("SELECT '\\'; SET work_mem = '{mb}MB'; SELECT '\\'")]
        }
        48 => {
            simple_only = true;
            vec![format!(
                "SELECT 1 AS x$a$; SET work_mem = '{mb}MB'; SELECT 2 AS y$a$"
            )]
        }
        49 => vec![
            "BEGIN".into(),
            format!("SET work_mem = '{mb}MB'"),
            "SAVEPOINT s".into(),
            "RESET work_mem".into(),
            "ROLLBACK TO SAVEPOINT s".into(),
            "COMMIT".into(),
        ],
        50 => vec![
            "BEGIN".into(),
            "SAVEPOINT s".into(),
            format!("SET work_mem = '{mb}MB'"),
            "RELEASE SAVEPOINT s".into(),
            "COMMIT".into(),
        ],
        51 => vec![format!("SELECT pg_catalog.pg_advisory_lock({key})")],
        52 => vec![format!("SELECT * FROM pg_try_advisory_lock({key})")],
        53 => vec![format!(
            "WITH l AS (SELECT pg_advisory_lock({key})) SELECT * FROM l"
        )],
        54 => vec![format!("EXPLAIN ANALYZE SELECT pg_advisory_lock({key})")],
        55 => vec![format!(
            "SELECT pg_catalog.set_config('work_mem', '{mb}MB', false)"
        )],
        56 => vec![format!("SET \"role\" = '{r}'")],
        57 => vec![format!(
            "CREATE FUNCTION pg_temp.iso_f_{id}() RETURNS int LANGUAGE sql AS 'SELECT 1'"
        )],
        58 => vec![format!("SELECT 1 AS a INTO TEMP iso_into_{id}")],
        59 => vec![format!("CREATE TEMP VIEW iso_v_{id} AS SELECT 1 AS a")],
        60 => vec!["SET work_mem TO DEFAULT".into()],
        61 => vec![format!("SET \"work_mem\" = '{mb}MB'")],
        62 => vec![format!("SET SESSION work_mem = '{mb}MB'")],
        63 => vec!["SET default_transaction_read_only = on".into()],
        64 => vec![format!("SELECT \"pg_advisory_lock\"({key})")],
        65 => {
            simple_only = true;
            vec![format!(
                "SELECT $q$ ' $q$; SET work_mem = '{mb}MB'; SELECT $q$ ' $q$"
            )]
        }
        66 => {
            simple_only = true;
            vec![format!(
                "/* /* */ SET work_mem = '1MB'; RESET work_mem; */ SET work_mem = '{mb}MB'"
            )]
        }
        67 => vec![format!("INSERT INTO {s}.with_trigger VALUES ({mb})")],
        68 => vec![format!("SELECT nextval('{s}.seq')")],
        69 => vec![format!("INSERT INTO {s}.serial_t (a) VALUES ({mb})")],
        _ => vec![format!("SET lock_timeout = '{mb}s'")],
    };
    if simple_only || (statements.len() > 1 && rng.gen_bool(0.4)) {
        return vec![Sent {
            proto: Proto::Simple,
            sql: statements.join("; "),
        }];
    }
    statements
        .into_iter()
        .map(|sql| Sent {
            proto: if rng.gen_bool(0.3) {
                Proto::Extended
            } else {
                Proto::Simple
            },
            sql,
        })
        .collect()
}

/// One random case: what A sends (sometimes ending inside a transaction it never ends),
/// and whether A stays connected (idle) while B reads its view.
#[derive(Debug, Clone)]
struct Case {
    /// The `options` startup parameter A connects with (`-c name=value ...`), if any.
    a_options: Option<String>,
    groups: Vec<Group>,
    a_stays: bool,
    /// When A does not stay, another client ends A's session with `pg_terminate_backend()`
    /// before A disconnects.
    a_terminated: bool,
}

fn random_case(rng: &mut StdRng, world: &World) -> Case {
    let mut n = 0;
    let len = rng.gen_range(1..=6);
    let mb = rng.gen_range(1..=64);
    let a_options = match rng.gen_range(0..5) {
        0 => Some(format!(
            "-c work_mem={mb}MB -c search_path={}",
            world.schema
        )),
        1 => Some(format!("-c statement_timeout={mb}s -c DateStyle=German")),
        _ => None,
    };
    let mut groups: Vec<Group> = (0..len).map(|_| random_group(rng, world, &mut n)).collect();
    if rng.gen_bool(0.15) {
        // A leaves (or idles) inside a transaction: BEGIN and statements, no end.
        let inside = loop {
            let group = random_group(rng, world, &mut n);
            let ends = |s: &Sent| {
                ["BEGIN", "COMMIT", "ROLLBACK"]
                    .iter()
                    .any(|w| s.sql.contains(w))
            };
            if !group.iter().any(ends) {
                break group;
            }
        };
        let begin = Sent {
            proto: Proto::Simple,
            sql: "BEGIN".into(),
        };
        groups.push(std::iter::once(begin).chain(inside).collect());
    }
    Case {
        a_options,
        groups,
        a_stays: rng.gen_bool(0.7),
        a_terminated: rng.gen_bool(0.3),
    }
}

/// Sends one message's worth of SQL; Err holds the SQLSTATE and message.
async fn send(client: &Client, sent: &Sent) -> Result<(), String> {
    let result = match sent.proto {
        Proto::Simple => with_timeout(30, &sent.sql, client.batch_execute(&sent.sql)).await,
        Proto::Extended => with_timeout(30, &sent.sql, client.query(sent.sql.as_str(), &[]))
            .await
            .map(|_| ()),
    };
    result.map_err(|e| error_text(&e))
}

/// What happened in one run of a case.
struct Run {
    /// B's view of its session.
    view: View,
    /// Whether A was still connected (and idle) while B read its view; A is disconnected
    /// first when it keeps the server connection (a session-bound statement pins it).
    a_stayed: bool,
    /// Each statement A sent, with its outcome.
    log: Vec<String>,
}

/// Runs `case` on `proxy`: A (application_name `a_name`) sends its statements (after an
/// error, the rest of that group is skipped and A sends ROLLBACK, so it never keeps a
/// failed transaction open), then B (`b_name`) reads its view.
async fn run_case(mode: Mode, proxy: &TestProxy, case: &Case, a_name: &str, b_name: &str) -> Run {
    let mut log = Vec::new();
    let mut config = proxy.pg_config(a_name);
    if let Some(options) = &case.a_options {
        config.options(options);
        log.push(format!("(connected with options '{options}')"));
    }
    // The client that may terminate A logs in first: A may hold the only server connection.
    let terminator = match case.a_terminated {
        true => Some(
            try_connect(&proxy.pg_config("iso_prop_terminator"))
                .await
                .expect("the terminating client connects"),
        ),
        false => None,
    };
    let a = match try_connect(&config).await {
        Ok(a) => a,
        Err(e) => {
            log.push(format!("A could not connect: {e}"));
            return Run {
                view: View::unreadable("A could not connect".into()),
                a_stayed: false,
                log,
            };
        }
    };
    // A's process id: the client registered last (B and the terminating client come later).
    let a_pid = proxy
        .proxy
        .clients()
        .rows()
        .iter()
        .map(|(row, _)| row.id)
        .max()
        .unwrap_or_default();
    // With routing on, a read after each group carries A's settings to the replica.
    let read = Sent {
        proto: Proto::Simple,
        sql: "SELECT 1".into(),
    };
    let after_group = (mode == Mode::Routed).then_some(&read);
    for group in &case.groups {
        for sent in group.iter().chain(after_group) {
            let outcome = send(&a, sent).await;
            log.push(format!(
                "{:<8} {} -> {}",
                format!("{:?}", sent.proto).to_lowercase(),
                sent.sql,
                match &outcome {
                    Ok(()) => "ok".to_string(),
                    Err(e) => format!("ERROR {e}"),
                }
            ));
            if outcome.is_err() {
                let _ = a.batch_execute("ROLLBACK").await;
                break;
            }
        }
    }
    let a_stayed = case.a_stays && connection_released(proxy).await;
    if !a_stayed {
        if let Some(c) = &terminator {
            log.push(terminate(proxy, c, a_pid).await);
        }
        drop(a);
    }
    let view = match try_connect(&proxy.pg_config(b_name)).await {
        Ok(b) => mode.view(&b).await,
        Err(e) => View::unreadable(format!("B could not connect: {e}")),
    };
    Run {
        view,
        a_stayed,
        log,
    }
}

/// Client `c` ends A's session with `pg_terminate_backend()` (a simple query, which
/// pgsplit answers without a server connection: A may hold the only one), and A's session is
/// gone within 10 s. Returns the line for the case's log; panics if A was not terminated.
async fn terminate(proxy: &TestProxy, c: &Client, a_pid: i32) -> String {
    let sql = format!("select pg_terminate_backend({a_pid})");
    let rows = with_timeout(30, &sql, c.simple_query(&sql))
        .await
        .expect("pg_terminate_backend");
    let value = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(
        value.as_deref(),
        Some("t"),
        "A ({a_pid}) was not terminated"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy
        .proxy
        .clients()
        .rows()
        .iter()
        .any(|(row, _)| row.id == a_pid)
    {
        assert!(
            Instant::now() < deadline,
            "A's session outlived its termination"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    "(then another client ran pg_terminate_backend on A)".to_string()
}

/// Connects with `config`; the connection's task ends when the client is dropped.
async fn try_connect(config: &tokio_postgres::Config) -> Result<Client, String> {
    let (client, connection) = with_timeout(30, "connect", config.connect(tokio_postgres::NoTls))
        .await
        .map_err(|e| error_text(&e))?;
    tokio::spawn(connection);
    Ok(client)
}

/// Whether every server connection of `proxy` is back in its pool (idle) within 100 ms (it
/// takes microseconds); a pinned client keeps its connection while it is idle.
async fn connection_released(proxy: &TestProxy) -> bool {
    let deadline = Instant::now() + Duration::from_millis(100);
    loop {
        if proxy.proxy.pool_rows().iter().all(|p| p.idle == p.size) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn describe(run: &Run) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "client A sent (then {}):",
        match run.a_stayed {
            true => "stayed connected, idle, while B read its view",
            false => "disconnected before B connected",
        }
    );
    for line in &run.log {
        let _ = writeln!(out, "    {line}");
    }
    if run.log.is_empty() {
        let _ = writeln!(out, "    (nothing)");
    }
    out
}

/// The smallest part of `case` that leaks when run alone on a fresh proxy: the first of
/// the whole case, its suffixes and its single groups that leaks, then greedily without
/// each group while it still leaks, then without A's startup options if it still leaks.
/// None when no part leaks on its own (the connection's history matters).
async fn shrink(
    mode: Mode,
    world: &World,
    case: &Case,
    fresh: &View,
    a_name: &str,
    b_name: &str,
) -> Option<Run> {
    let leaks = |case: Case| async move {
        world.wait_unlocked().await;
        let proxy = mode.proxy().await;
        let run = run_case(mode, &proxy, &case, a_name, b_name).await;
        (!differences(&run.view, fresh).is_empty()).then_some(run)
    };
    let len = case.groups.len();
    let parts = (0..len)
        .map(|from| case.groups[from..].to_vec())
        .chain((0..len).map(|i| vec![case.groups[i].clone()]));
    let mut start = None;
    for groups in parts {
        let part = Case {
            groups,
            ..case.clone()
        };
        if let Some(run) = leaks(part.clone()).await {
            start = Some((part, run));
            break;
        }
    }
    let (mut best, mut best_run) = start?;
    let mut i = best.groups.len();
    while i > 0 {
        i -= 1;
        let mut smaller = best.clone();
        smaller.groups.remove(i);
        if let Some(run) = leaks(smaller.clone()).await {
            best = smaller;
            best_run = run;
        }
    }
    if best.a_options.is_some() {
        let plain = Case {
            a_options: None,
            ..best.clone()
        };
        if let Some(run) = leaks(plain).await {
            best_run = run;
        }
    }
    Some(best_run)
}

/// After any sequence of statements by client A (ended by A disconnecting, or by another
/// client's `pg_terminate_backend()`), client B on A's server connection sees the session a
/// never-used connection shows: `SHOW ALL`, current_user, session_user, the
/// backend's locks, SQL prepared statements, temp objects, LISTEN channels, cursors.
/// Random cases from a fixed seed, within a time bound; `PGSPLIT_ISOLATION_SEED`,
/// `PGSPLIT_ISOLATION_CASES` and `PGSPLIT_ISOLATION_SECS` run it differently or longer. On a
/// leak it prints the seed, the case, and the smallest part of it that leaks on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_property() {
    property(Mode::Primary, 9).await;
}

/// The same with routing on: A's reads, and the settings replayed for them, also run on a
/// replica's connection, which B then reads its view on too (`Mode::Routed`). Its own
/// default seed; `PGSPLIT_ISOLATION_SEED` and the others apply to both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_property_routed() {
    property(Mode::Routed, 10).await;
}

async fn property(mode: Mode, default_seed: u64) {
    let seed = common::env_number("PGSPLIT_ISOLATION_SEED", default_seed);
    let cases = common::env_number("PGSPLIT_ISOLATION_CASES", 150);
    let secs = common::env_number("PGSPLIT_ISOLATION_SECS", 20);
    let label = match mode {
        Mode::Primary => "prop",
        Mode::Routed => "prop_routed",
    };
    let world = World::create(label).await;
    let a_name = unique("iso_prop_a");
    let b_name = unique("iso_prop_b");

    // The baseline: B's view on a server connection nobody used before.
    let fresh = {
        let proxy = mode.proxy().await;
        let b = proxy.connect(&b_name).await;
        mode.view(&b).await
    };
    let place = match mode {
        Mode::Primary => "",
        Mode::Routed => "replica: ",
    };
    assert_eq!(fresh.parts[&format!("{place}current_user")], ["app"]);
    assert_eq!(
        fresh.settings.get(&format!("{place}application_name")),
        Some(&b_name),
        "B's own application_name"
    );
    if mode == Mode::Routed {
        assert_eq!(
            fresh
                .settings
                .get("replica: in_hot_standby")
                .map(String::as_str),
            Some("on"),
            "B's read-only view is read on the replica"
        );
    }

    let proxy = mode.proxy().await;
    let started = Instant::now();
    let mut ran = 0;
    let mut stayed = 0;
    let mut terminated = 0;
    let (mut sent, mut failed) = (0, 0);
    let mut leak = None;
    for i in 0..cases {
        if started.elapsed() > Duration::from_secs(secs) {
            break;
        }
        let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(i));
        let case = random_case(&mut rng, &world);
        let run = run_case(mode, &proxy, &case, &a_name, &b_name).await;
        ran += 1;
        stayed += usize::from(run.a_stayed);
        terminated += usize::from(run.log.iter().any(|l| l.contains("pg_terminate_backend")));
        sent += run.log.iter().filter(|l| l.contains(" -> ")).count();
        failed += run.log.iter().filter(|l| l.contains("-> ERROR")).count();
        if !differences(&run.view, &fresh).is_empty() {
            leak = Some((i, case, run));
            break;
        }
    }
    // Statements of A's (and B's views) each node ran.
    let by_node = proxy.proxy.routing().stats.by_node();
    // Its backend may hold advisory locks that the shrinking would wait for.
    drop(proxy);
    if let Some((i, case, run)) = leak {
        let mut report = format!(
            "client B's session differs from a fresh connection's ({mode:?}, \
             PGSPLIT_ISOLATION_SEED={seed}, case {i} of this seed; earlier cases ran on the \
             same server connection)\n{}B saw:\n{}",
            describe(&run),
            differences(&run.view, &fresh)
        );
        match shrink(mode, &world, &case, &fresh, &a_name, &b_name).await {
            Some(small_run) => {
                let _ = write!(
                    report,
                    "\nsmallest part of the case that leaks on its own, on a fresh proxy:\n{}B saw:\n{}",
                    describe(&small_run),
                    differences(&small_run.view, &fresh)
                );
            }
            None => report.push_str(
                "\nthe case does not leak on its own on a fresh proxy: it needs what earlier \
                 cases left on the connection\n",
            ),
        }
        panic!("{report}");
    }
    println!(
        "isolation_property ({mode:?}): seed {seed}, {ran} cases in {:.1} s, A still connected in \
         {stayed}, terminated by another client in {terminated}; A sent {sent} statements, \
         {failed} failed",
        started.elapsed().as_secs_f64()
    );
    assert!(ran >= 10, "only {ran} cases ran within {secs} s");
    if mode == Mode::Routed {
        println!("statements by node (primary first): {by_node:?}");
        let replica_reads = by_node.get(1).copied().unwrap_or(0);
        // B's read-only views alone are one a case: A's reads come on top.
        assert!(
            replica_reads > ran as u64,
            "A's reads never reached the replica ({by_node:?})"
        );
    }
}

// ---------------------------------------------------------------------------------------
// One test per leak of the issue
// ---------------------------------------------------------------------------------------

/// A session's sequence values (`currval`, `lastval`) are set by `nextval`, also through
/// a serial column's default. Before this test pgsplit handed the connection to B with A's:
/// B read A's ids where a fresh connection says 55000 (checked: fails without the
/// `DISCARD SEQUENCES` of `Session::forget_sequences`). A keeps its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_values_do_not_pass_to_the_next_client() {
    let world = World::create("seq").await;
    let s = &world.schema;
    let proxy = one_connection_proxy().await;
    // Before it, every write counts as one that may leave state: the connection would be
    // reset (DISCARD ALL) after A's INSERT, and A lose its own value.
    proxy.wait_for_catalog().await;
    let a = proxy.connect(&unique("iso_seq_a")).await;
    let insert = format!("INSERT INTO {s}.serial_t (a) VALUES (1)");
    a.batch_execute(&insert).await.unwrap();
    let own = format!("SELECT currval('{s}.serial_t_id_seq')::text");
    assert_eq!(show(&a, &own).await, "1", "A's own value stays");
    assert_eq!(
        show(&a, &format!("SELECT nextval('{s}.seq')::text")).await,
        "1"
    );
    // A stays connected and idle: transaction pooling hands its connection to B.
    let b = proxy.connect(&unique("iso_seq_b")).await;
    let unset = |what: &str| {
        vec![vec![format!(
            "error 55000 {what} is not yet defined in this session"
        )]]
    };
    assert_eq!(text_rows(&b, "SELECT lastval()").await, unset("lastval"));
    assert_eq!(
        text_rows(&b, &format!("SELECT currval('{s}.seq')")).await,
        unset("currval of sequence \"seq\"")
    );
    // B's own write: its value is B's, and B keeps it.
    b.batch_execute(&insert).await.unwrap();
    assert_eq!(show(&b, "SELECT lastval()::text").await, "2");
    assert_eq!(show(&b, &own).await, "2");
}

/// `setseed()` makes the session's `random()` values a known sequence, and DISCARD ALL
/// keeps the seed. Before this test pgsplit handed the connection on with it: B's first
/// `random()` was the next value of A's sequence, as computed straight on PostgreSQL
/// (checked: fails without the reseeding in `ServerConn::discard_all`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_seed_does_not_pass_to_the_next_client() {
    let su = superuser().await;
    let sequence = text_rows(
        &su,
        "SELECT setseed(0.25); SELECT random()::text; SELECT random()::text",
    )
    .await;
    let proxy = one_connection_proxy().await;
    let a = proxy.connect(&unique("iso_seed_a")).await;
    let first = text_rows(&a, "SELECT setseed(0.25); SELECT random()::text").await;
    assert_eq!(
        first[1..],
        sequence[1..2],
        "A's own sequence, as on PostgreSQL"
    );
    // A stays connected and idle: transaction pooling hands its connection to B.
    let b = proxy.connect(&unique("iso_seed_b")).await;
    let next = show(&b, "SELECT random()::text").await;
    assert_ne!(
        next, sequence[2][0],
        "B's random() goes on with A's seeded sequence"
    );
}

/// A library a client LOADs (a superuser may load any) stays in its backend, with its
/// settings, and no reset unloads it: B found `auto_explain.log_min_duration` where a
/// fresh connection says 42704 (checked: fails without closing the connection after a
/// LOAD).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loaded_library_does_not_pass_to_the_next_client() {
    let proxy = TestProxy::start(|c| {
        one_connection(c);
        let mut su = c.users[0].clone();
        su.name = "postgres".into();
        su.password = Some(common::SUPERUSER_PASSWORD.into());
        su.server_user = None;
        su.server_password = None;
        c.users.push(su);
    })
    .await;
    let connect = |name: String| {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(proxy.port())
            .user("postgres")
            .password(common::SUPERUSER_PASSWORD)
            .dbname("app")
            .application_name(&name);
        async move {
            let (client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            client
        }
    };
    let show_setting = "SHOW auto_explain.log_min_duration";
    let a = connect(unique("iso_load_a")).await;
    let loaded = text_rows(&a, &format!("LOAD 'auto_explain'; {show_setting}")).await;
    assert_eq!(loaded, [["-1"]], "A's own library");
    // A stays connected and idle: transaction pooling hands its connection to B.
    let b = connect(unique("iso_load_b")).await;
    let got = text_rows(&b, show_setting).await;
    assert_eq!(
        got,
        [[
            "error 42704 unrecognized configuration parameter \"auto_explain.log_min_duration\""
                .to_string()
        ]]
    );
}

/// PostgreSQL's `RESET ALL` leaves `role` alone. Before 7dabd31 pgsplit took it for a
/// reset of everything A had changed and handed the connection on without a reset, so B
/// ran as A's role (checked: fails on 7dabd31^, B's current_user is A's role).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_all_does_not_hand_a_role_to_the_next_client() {
    let world = World::create("reset_all").await;
    let proxy = one_connection_proxy().await;
    let a = proxy.connect(&unique("iso_reset_all_a")).await;
    let role = show(
        &a,
        &format!("SET ROLE {}; RESET ALL; SELECT current_user", world.role),
    )
    .await;
    assert_eq!(role, world.role, "RESET ALL keeps the role in PostgreSQL");
    // A stays connected and idle: transaction pooling hands its connection to B.
    let b = proxy.connect(&unique("iso_reset_all_b")).await;
    assert_eq!(show(&b, "SELECT current_user").await, "app");
    assert_eq!(show(&b, "SELECT session_user").await, "app");
}

/// A role set by dynamic SQL inside a `DO` block is no SET that pgsplit sees; before
/// 7dabd31 the connection went to B unchanged, with A's role (checked: fails on 7dabd31^).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_set_inside_do_does_not_leak() {
    let world = World::create("do_role").await;
    let proxy = one_connection_proxy().await;
    let a = proxy.connect(&unique("iso_do_role_a")).await;
    let role = show(
        &a,
        &format!(
            "DO $$BEGIN EXECUTE 'SET ROLE {}'; END$$; SELECT current_user",
            world.role
        ),
    )
    .await;
    assert_eq!(role, world.role);
    let b = proxy.connect(&unique("iso_do_role_b")).await;
    assert_eq!(show(&b, "SELECT current_user").await, "app");
}

/// A session advisory lock taken inside a `DO` block: pgsplit sees no pg_advisory_lock()
/// call in a SELECT, so before 7dabd31 A was not pinned and B got the connection with A's
/// lock still held by its backend (checked: fails on 7dabd31^).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_lock_taken_in_do_does_not_leak() {
    let world = World::create("do_lock").await;
    let key = world.lock_key(7);
    let holders = format!(
        "SELECT count(*)::text FROM pg_locks WHERE locktype = 'advisory' \
         AND classid = {}::oid AND objid = {}::oid AND objsubid = 1",
        key >> 32,
        key & 0xffff_ffff
    );
    let su = superuser().await;
    let proxy = one_connection_proxy().await;
    let a = proxy.connect(&unique("iso_do_lock_a")).await;
    a.batch_execute(&format!(
        "DO $$BEGIN PERFORM pg_advisory_lock({key}); END$$"
    ))
    .await
    .unwrap();
    assert_eq!(show(&su, &holders).await, "1", "A's DO took the lock");
    let b = proxy.connect(&unique("iso_do_lock_b")).await;
    assert_eq!(
        show(
            &b,
            "SELECT count(*)::text FROM pg_locks \
             WHERE pid = pg_backend_pid() AND locktype = 'advisory'"
        )
        .await,
        "0",
        "B's backend holds A's advisory lock"
    );
    assert_eq!(show(&su, &holders).await, "0", "nobody holds A's lock");
}

/// A user function that changes settings or takes a session advisory lock, called in a
/// plain SELECT: pgsplit sees a read, yet the session changed. B must get neither. Found by
/// `isolation_property`; fails on 7dabd31 (only DO / CALL / ... mark the connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_changing_the_session_do_not_leak() {
    let world = World::create("fn").await;
    let key = world.lock_key(9);
    let proxy = one_connection_proxy().await;
    let a = proxy.connect(&unique("iso_fn_a")).await;
    let set = show(
        &a,
        &format!(
            "SELECT {s}.set_setting_fn('work_mem', '62MB'), {s}.lock_fn({key})",
            s = world.schema
        ),
    )
    .await;
    assert_eq!(set, "62MB");
    let b = proxy.connect(&unique("iso_fn_b")).await;
    assert_eq!(
        show(
            &b,
            "SELECT (setting = reset_val)::text FROM pg_settings WHERE name = 'work_mem'"
        )
        .await,
        "true",
        "B's work_mem is A's"
    );
    assert_eq!(
        show(
            &b,
            "SELECT count(*)::text FROM pg_locks \
             WHERE pid = pg_backend_pid() AND locktype = 'advisory'"
        )
        .await,
        "0",
        "B's backend holds A's advisory lock"
    );
}

/// A trigger that changes a setting, fired by a plain INSERT: nothing in the statement
/// tells pgsplit. Found while writing `isolation_property`; fails on 7dabd31. (Fixing it
/// may cost every write a check or a reset: the lead may rather document it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setting_changed_by_a_trigger_does_not_leak() {
    let world = World::create("trigger").await;
    let proxy = one_connection_proxy().await;
    let a = proxy.connect(&unique("iso_trigger_a")).await;
    a.batch_execute(&format!(
        "INSERT INTO {}.with_trigger VALUES (33)",
        world.schema
    ))
    .await
    .unwrap();
    let b = proxy.connect(&unique("iso_trigger_b")).await;
    assert_eq!(
        show(
            &b,
            "SELECT (setting = reset_val)::text FROM pg_settings WHERE name = 'work_mem'"
        )
        .await,
        "true",
        "B's work_mem is what A's trigger set"
    );
}

/// `SET SCHEMA 'x'` is PostgreSQL's spelling of `SET search_path TO 'x'`. It must follow
/// A and never reach B. Found by `isolation_property`: on 7dabd31, B cannot even log in
/// (42704, unrecognized configuration parameter "schema").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_schema_follows_its_client() {
    let world = World::create("set_schema").await;
    let proxy = one_connection_proxy().await;
    let a = proxy.connect(&unique("iso_set_schema_a")).await;
    a.batch_execute(&format!("SET SCHEMA '{}'", world.schema))
        .await
        .unwrap();
    let b = try_connect(&proxy.pg_config(&unique("iso_set_schema_b")))
        .await
        .unwrap_or_else(|e| panic!("B cannot connect after A's SET SCHEMA: {e}"));
    assert_eq!(show(&b, "SHOW search_path").await, "\"$user\", public");
    assert_eq!(show(&a, "SHOW search_path").await, world.schema);
}

/// SETs hidden from a scanner whose quoting rules differ from PostgreSQL's (issue 9):
/// `E''` escapes, `$` inside identifiers, dollar quotes, nested comments, and (as a
/// control) a backslash in a standard string. Each must still be tracked: B never sees A's
/// work_mem, and A keeps it after B used the connection. `isolation_property` found the
/// first two on 7dabd31.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_hidden_by_quoting_are_tracked() {
    let proxy = one_connection_proxy().await;
    let b = proxy.connect(&unique("iso_quoting_b")).await;
    let default = show(&b, "SHOW work_mem").await;
    let cases = [
        (r"SELECT E'\''; SET work_mem = '41MB'", "41MB"),
        (
            "SELECT 1 AS x$a$; SET work_mem = '42MB'; SELECT 2 AS y$a$",
            "42MB",
        ),
        (
            "SELECT $q$ ' $q$; SET work_mem = '43MB'; SELECT $q$ ' $q$",
            "43MB",
        ),
        (
            "/* /* */ SET work_mem = '1MB'; RESET work_mem; */ SET work_mem = '44MB'",
            "44MB",
        ),
        (r"SELECT '\'; SET work_mem = '45MB'; SELECT '\'", "45MB"),
    ];
    let mut wrong = Vec::new();
    for (sql, value) in cases {
        let a = proxy.connect(&unique("iso_quoting_a")).await;
        a.batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let seen_by_b = show(&b, "SHOW work_mem").await;
        let kept_by_a = show(&a, "SHOW work_mem").await;
        if seen_by_b != default || kept_by_a != value {
            wrong.push(format!(
                "{sql}: B sees work_mem {seen_by_b} (want {default}), A then {kept_by_a} (want {value})"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Logs in as app_md5 (the raw client speaks md5 only) on database app at `addr`.
async fn raw_client(addr: SocketAddr) -> RawConn {
    RawConn::login_md5(addr, "app_md5", APP_PASSWORD, &[("database", "app")])
        .await
        .0
}

/// Sends `messages` (ending with a Sync) and reads up to ReadyForQuery.
async fn round_trip(conn: &mut RawConn, messages: &[Vec<u8>]) -> Vec<Message> {
    conn.write_raw(&messages.concat()).await.unwrap();
    with_timeout(30, "ReadyForQuery", conn.until_ready()).await
}

/// The text of the first DataRow of `messages`.
fn first_value(messages: &[Message]) -> Option<String> {
    messages
        .iter()
        .find(|m| m.tag == b'D')
        .and_then(|m| m.data_row().into_iter().next().flatten())
}

/// Clients A, B and C each on a connection at `addr` (through pgsplit: all on its one
/// server connection): A and B parse an unnamed statement, C binds the unnamed statement
/// without having parsed one, then B and A bind theirs. What PostgreSQL does, on separate
/// connections: C gets 26000, A and B run their own statements.
async fn unnamed_statements_of_three_clients(addr: SocketAddr) {
    println!("unnamed statements of three clients at {addr}");
    let mut a = raw_client(addr).await;
    let mut b = raw_client(addr).await;
    let mut c = raw_client(addr).await;
    let got = round_trip(&mut a, &[parse("", "SELECT 'A'::text"), sync()]).await;
    assert_eq!(tags(&got), "1Z", "A's Parse: {got:?}");
    let got = round_trip(&mut b, &[parse("", "SELECT 'B'::text"), sync()]).await;
    assert_eq!(tags(&got), "1Z", "B's Parse: {got:?}");

    let got = round_trip(&mut c, &[bind("", ""), execute(""), sync()]).await;
    assert_eq!(
        tags(&got),
        "EZ",
        "C has no unnamed statement, yet got {:?}",
        first_value(&got)
    );
    assert_eq!(got[0].code(), "26000", "{:?}", got[0].fields());

    let got = round_trip(&mut b, &[bind("", ""), execute(""), sync()]).await;
    assert_eq!(tags(&got), "2DCZ", "B's Bind: {got:?}");
    assert_eq!(first_value(&got).as_deref(), Some("B"));
    let got = round_trip(&mut a, &[bind("", ""), execute(""), sync()]).await;
    assert_eq!(tags(&got), "2DCZ", "A's Bind: {got:?}");
    assert_eq!(first_value(&got).as_deref(), Some("A"));
    // Still A's, however often it runs.
    let got = round_trip(&mut a, &[bind("", ""), execute(""), sync()]).await;
    assert_eq!(first_value(&got).as_deref(), Some("A"));
}

/// libpq's `PQprepare(conn, "", ...)` then `PQexecPrepared(conn, "", ...)` in a later round
/// trip: the Bind must run this client's own unnamed statement (re-parsed on whatever
/// server connection it lands on), or fail with 26000 when the client has none, never
/// another client's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnamed_statement_is_not_bound_across_clients() {
    // PostgreSQL itself, so the expectations are its behaviour.
    unnamed_statements_of_three_clients(common::primary_addr()).await;
    let proxy = one_connection_proxy().await;
    unnamed_statements_of_three_clients(proxy.addr).await;
}

/// A simple Query destroys the client's unnamed statement in PostgreSQL: a later Bind of
/// it fails with 26000, through pgsplit as on the server itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_drops_the_unnamed_statement() {
    async fn scenario(addr: SocketAddr) {
        println!("simple query drops the unnamed statement at {addr}");
        let mut a = raw_client(addr).await;
        let got = round_trip(&mut a, &[parse("", "SELECT 'A'::text"), sync()]).await;
        assert_eq!(tags(&got), "1Z", "{got:?}");
        let got = with_timeout(30, "simple query", a.simple_query("SELECT 1")).await;
        assert_eq!(tags(&got), "TDCZ", "{got:?}");
        let got = round_trip(&mut a, &[bind("", ""), execute(""), sync()]).await;
        assert_eq!(tags(&got), "EZ", "{got:?}");
        assert_eq!(got[0].code(), "26000", "{:?}", got[0].fields());
    }
    scenario(common::primary_addr()).await;
    let proxy = one_connection_proxy().await;
    scenario(proxy.addr).await;
}

/// Parse of a named statement that exists fails with 42P05 and leaves the first one as it
/// was, whether the two Parses come in separate round trips or in one batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_reusing_a_named_statement_fails_with_42p05() {
    /// With `proxy`, another client uses its only server connection after the first Parse.
    async fn scenario(addr: SocketAddr, proxy: Option<&TestProxy>) {
        println!("42P05 at {addr}");
        let mut a = raw_client(addr).await;
        let got = round_trip(&mut a, &[parse("s1", "SELECT $1::text || '1'"), sync()]).await;
        assert_eq!(tags(&got), "1Z", "{got:?}");
        if let Some(proxy) = proxy {
            let other = proxy.connect(&unique("iso_42p05_other")).await;
            assert_eq!(show(&other, "SELECT 1").await, "1");
        }
        let got = round_trip(&mut a, &[parse("s1", "SELECT $1::text || '2'"), sync()]).await;
        assert_eq!(tags(&got), "EZ", "{got:?}");
        assert_eq!(got[0].code(), "42P05", "{:?}", got[0].fields());
        // In one batch: the second Parse fails, and the rest up to Sync is skipped.
        let got = round_trip(
            &mut a,
            &[
                parse("s2", "SELECT $1::text || '3'"),
                parse("s2", "SELECT $1::text || '4'"),
                bind("", "s2"),
                execute(""),
                sync(),
            ],
        )
        .await;
        assert_eq!(tags(&got), "1EZ", "{got:?}");
        assert_eq!(got[1].code(), "42P05", "{:?}", got[1].fields());
        // Both keep their first text (bind() passes "x" to a named statement).
        for (name, want) in [("s1", "x1"), ("s2", "x3")] {
            let got = round_trip(&mut a, &[bind("", name), execute(""), sync()]).await;
            assert_eq!(tags(&got), "2DCZ", "{name}: {got:?}");
            assert_eq!(first_value(&got).as_deref(), Some(want));
        }
    }
    scenario(common::primary_addr(), None).await;
    let proxy = one_connection_proxy().await;
    scenario(proxy.addr, Some(&proxy)).await;
}

/// A pipeline that asks for its results with Flush and has not sent its Sync yet (psycopg's
/// pipeline mode) keeps its server connection: the server holds the batch's implicit
/// transaction and, after an error, ignores everything up to that Sync. Before this was
/// fixed, the connection went back to the pool as soon as every reply had arrived, and the
/// next client's query on it was never answered (psycopg's own suite hung on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_waiting_for_its_sync_keeps_its_server_connection() {
    let proxy = TestProxy::start(|c| {
        one_connection(c);
        c.pool.checkout_timeout = pgsplit::config::Duration::from_secs(20);
    })
    .await;
    let mut a = raw_client(proxy.addr).await;
    // Logging in takes a server connection for a moment: B does it first.
    let mut b = raw_client(proxy.addr).await;
    a.write_raw(
        &[
            parse("", "SELECT 1 / 0"),
            bind("", ""),
            execute(""),
            flush(),
        ]
        .concat(),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    while got.last().is_none_or(|m: &Message| m.tag != b'E') {
        got.push(
            with_timeout(30, "A's error", a.recv())
                .await
                .expect("a reply"),
        );
    }
    // PostgreSQL folds the constant when it plans, at Bind.
    assert_eq!(tags(&got), "1E", "{got:?}");
    assert_eq!(got[1].code(), "22012", "{:?}", got[1].fields());

    // B's query waits for the connection while A's batch is open...
    let b_query = tokio::spawn(async move {
        let got = b.simple_query("SELECT 'B'").await;
        (b, got)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!b_query.is_finished(), "B ran while A's batch was open");
    // ...and runs once A ends it.
    let got = round_trip(&mut a, &[sync()]).await;
    assert_eq!(tags(&got), "Z", "{got:?}");
    let (_b, got) = with_timeout(30, "B's query", b_query).await.unwrap();
    assert_eq!(first_value(&got).as_deref(), Some("B"), "{got:?}");
}
