//! Session settings a client made (startup parameters and SET / RESET outside or within
//! a committed transaction), so they can be replayed on whichever server connection the
//! client gets next and never leak to another client.

use std::collections::BTreeMap;

use crate::wire::message::TxStatus;

/// One change to a session setting, or a transaction event that decides whether the
/// changes before it are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingChange {
    /// `SET name ...`: the statement to replay, as the client wrote it.
    Set {
        name: String,
        statement: String,
    },
    Reset {
        name: String,
    },
    ResetAll,
    Begin,
    Commit,
    Rollback,
    Savepoint(String),
    RollbackTo(String),
    Release(String),
}

/// A client's settings: those from its startup packet and the current ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientSettings {
    startup: BTreeMap<String, String>,
    current: BTreeMap<String, String>,
    /// Changes made inside the open transaction block; they take effect at COMMIT.
    pending: Vec<SettingChange>,
    /// Savepoints of the open block, with how many pending changes preceded each.
    savepoints: Vec<(String, usize)>,
    /// Events of the statements now running, settled at their ReadyForQuery.
    running: Vec<SettingChange>,
    /// Whether a statement now running failed.
    running_failed: bool,
}

/// What a server connection's settings are after a ReadyForQuery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerSettings {
    /// As they were.
    Unchanged,
    /// The client's current settings.
    Client(BTreeMap<String, String>),
    /// The server's own defaults (after RESET ALL or DISCARD ALL).
    Defaults,
}

impl ClientSettings {
    /// The settings of a client's startup packet (everything except user, database,
    /// replication and options; `options` of the form `-c name=value` are included).
    pub fn from_startup(params: &[(String, String)]) -> ClientSettings {
        let mut startup = BTreeMap::new();
        for (name, value) in params {
            match name.as_str() {
                "user" | "database" | "replication" => {}
                "options" => {
                    for (n, v) in parse_options(value) {
                        startup.insert(n.to_ascii_lowercase(), set_statement(&n, &v));
                    }
                }
                _ if name.starts_with("_pq_.") => {}
                _ => {
                    startup.insert(name.to_ascii_lowercase(), set_statement(name, value));
                }
            }
        }
        ClientSettings {
            current: startup.clone(),
            startup,
            ..ClientSettings::default()
        }
    }

    /// Whether a statement with this SQL needs a look: it may change a setting, or a
    /// transaction block holds changes its control statements decide on.
    pub fn wants(&self, sql: &[u8]) -> bool {
        !self.pending.is_empty() || might_change_setting(sql)
    }

    /// A statement with this SQL is being executed.
    pub fn statement_sent(&mut self, sql: &[u8]) {
        if self.wants(sql) {
            if let Ok(text) = std::str::from_utf8(sql) {
                self.running.extend(setting_changes(text));
            }
        }
    }

    /// The server reported an error for a running statement.
    pub fn statement_failed(&mut self) {
        self.running_failed = true;
    }

    /// The server is ready for the next query: the transaction status was `before` the
    /// running statements and is `after` now. Their changes take effect (at once outside
    /// a block, at COMMIT inside one; a COMMIT of a failed block rolls back). Returns
    /// what the server's settings are now.
    pub fn ready(&mut self, before: TxStatus, after: TxStatus) -> ServerSettings {
        let block_before = before != TxStatus::Idle;
        let block_after = after != TxStatus::Idle;
        let committed = before != TxStatus::Failed;
        let failed = std::mem::replace(&mut self.running_failed, false);
        let events = std::mem::take(&mut self.running);
        let mut outcome = Outcome::default();
        if failed {
            // What ran in the failed statement did not take effect; if the server left
            // no block open, the block (explicit or implicit) is gone too.
            if !block_after {
                self.settle_block(false, &mut outcome);
            }
            return outcome.server_settings(&self.current);
        }
        let mut in_block = block_before;
        for event in events {
            match event {
                SettingChange::Begin => in_block = true,
                SettingChange::Commit => {
                    self.settle_block(committed, &mut outcome);
                    in_block = false;
                }
                SettingChange::Rollback => {
                    self.settle_block(false, &mut outcome);
                    in_block = false;
                }
                SettingChange::Savepoint(name) if in_block => {
                    self.savepoints.push((name, self.pending.len()));
                }
                SettingChange::RollbackTo(name) if in_block => {
                    // A savepoint we never saw was made while nothing was pending.
                    let keep = match self.savepoints.iter().rposition(|(n, _)| *n == name) {
                        Some(i) => {
                            self.savepoints.truncate(i + 1);
                            self.savepoints[i].1
                        }
                        None => 0,
                    };
                    self.pending.truncate(keep);
                }
                SettingChange::Release(name) if in_block => {
                    if let Some(i) = self.savepoints.iter().rposition(|(n, _)| *n == name) {
                        self.savepoints.truncate(i);
                    }
                }
                change @ (SettingChange::Set { .. }
                | SettingChange::Reset { .. }
                | SettingChange::ResetAll) => {
                    if in_block {
                        self.pending.push(change);
                    } else {
                        self.apply(&change, &mut outcome);
                    }
                }
                _ => {}
            }
        }
        if in_block && !block_after {
            // The block ended in a way the text did not show (the server knows best).
            self.settle_block(committed, &mut outcome);
        }
        outcome.server_settings(&self.current)
    }

    /// The open block ended: keep its changes if it committed.
    fn settle_block(&mut self, committed: bool, outcome: &mut Outcome) {
        self.savepoints.clear();
        let pending = std::mem::take(&mut self.pending);
        if committed {
            for change in &pending {
                self.apply(change, outcome);
            }
        }
    }

    /// Whether the client's transactions default to SERIALIZABLE (which a hot standby
    /// cannot run).
    pub fn serializable(&self) -> bool {
        ["default_transaction_isolation", "transaction_isolation"]
            .iter()
            .filter_map(|name| self.current.get(*name))
            .any(|stmt| stmt.to_ascii_lowercase().contains("serializable"))
    }

    /// The settings to apply on a server connection: name -> SET statement.
    pub fn current(&self) -> &BTreeMap<String, String> {
        &self.current
    }

    /// Applies one committed change.
    fn apply(&mut self, change: &SettingChange, outcome: &mut Outcome) {
        outcome.changed = true;
        match change {
            SettingChange::Set { name, statement } => {
                self.current.insert(name.clone(), statement.clone());
            }
            SettingChange::Reset { name } => match self.startup.get(name) {
                Some(s) => {
                    self.current.insert(name.clone(), s.clone());
                }
                None => {
                    self.current.remove(name);
                }
            },
            SettingChange::ResetAll => {
                self.current = self.startup.clone();
                outcome.reset_all = true;
            }
            _ => {}
        }
    }
}

/// What settling changes did.
#[derive(Debug, Default)]
struct Outcome {
    changed: bool,
    reset_all: bool,
}

impl Outcome {
    fn server_settings(&self, current: &BTreeMap<String, String>) -> ServerSettings {
        if self.reset_all {
            ServerSettings::Defaults
        } else if self.changed {
            ServerSettings::Client(current.clone())
        } else {
            ServerSettings::Unchanged
        }
    }
}

/// The SQL that brings a server whose settings are `server` to the client's `client`
/// settings, or `None` when they already agree.
pub fn sync_sql(
    server: &BTreeMap<String, String>,
    client: &BTreeMap<String, String>,
) -> Option<String> {
    if server == client {
        return None;
    }
    let mut sql = String::new();
    for name in server.keys().filter(|n| !client.contains_key(*n)) {
        sql.push_str("RESET ");
        sql.push_str(&quote_ident(name));
        sql.push_str(";\n");
    }
    for (name, statement) in client {
        if server.get(name) != Some(statement) {
            sql.push_str(statement);
            sql.push_str(";\n");
        }
    }
    Some(sql)
}

/// The setting changes in a simple query's text (one or several statements). Statements
/// that are not SET / RESET contribute nothing; SET LOCAL and SET TRANSACTION are
/// transaction-scoped and not tracked.
pub fn setting_changes(sql: &str) -> Vec<SettingChange> {
    let mut changes = Vec::new();
    for stmt in split_statements(sql) {
        parse_statement(stmt, &mut changes);
    }
    changes
}

/// Cheap test for whether a query might change a setting, to skip the full look on the
/// hot path: a single statement must start with SET, RESET or DISCARD (or a comment);
/// text with several statements gets the full look.
pub fn might_change_setting(sql: &[u8]) -> bool {
    let mut end = sql.len();
    while end > 0 && (sql[end - 1].is_ascii_whitespace() || sql[end - 1] == b';') {
        end -= 1;
    }
    let sql = &sql[..end];
    let start = sql
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(0);
    let head = &sql[start..];
    let starts = |w: &[u8]| head.len() >= w.len() && head[..w.len()].eq_ignore_ascii_case(w);
    starts(b"set")
        || starts(b"reset")
        || starts(b"discard")
        || starts(b"/*")
        || starts(b"--")
        || sql.contains(&b';')
}

/// Removes comments before the first word of a statement.
fn strip_leading_comments(mut stmt: &str) -> &str {
    loop {
        stmt = stmt.trim_start();
        if let Some(rest) = stmt.strip_prefix("--") {
            stmt = rest.split_once('\n').map(|(_, r)| r).unwrap_or("");
        } else if let Some(rest) = stmt.strip_prefix("/*") {
            stmt = rest.split_once("*/").map(|(_, r)| r).unwrap_or("");
        } else {
            return stmt;
        }
    }
}

fn parse_statement(stmt: &str, out: &mut Vec<SettingChange>) {
    let stmt = strip_leading_comments(stmt);
    let words: Vec<&str> = stmt.split_whitespace().collect();
    let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
    match lower.as_slice() {
        ["discard", "all"] | ["reset", "all"] => out.push(SettingChange::ResetAll),
        ["begin", ..] | ["start", "transaction", ..] => out.push(SettingChange::Begin),
        ["commit" | "end", ..] => out.push(SettingChange::Commit),
        ["rollback" | "abort", rest @ ..] => match rest {
            ["to", "savepoint", _] | ["work" | "transaction", "to", "savepoint", _] => out.push(
                SettingChange::RollbackTo(unquote_name(words[words.len() - 1])),
            ),
            ["to", _] | ["work" | "transaction", "to", _] => out.push(SettingChange::RollbackTo(
                unquote_name(words[words.len() - 1]),
            )),
            _ => out.push(SettingChange::Rollback),
        },
        ["savepoint", _] => out.push(SettingChange::Savepoint(unquote_name(words[1]))),
        ["release", "savepoint", _] => out.push(SettingChange::Release(unquote_name(words[2]))),
        ["release", _] => out.push(SettingChange::Release(unquote_name(words[1]))),
        ["reset", "time", "zone"] => out.push(reset("timezone")),
        ["reset", "session", "authorization"] => out.push(reset("session_authorization")),
        ["reset", _] => out.push(SettingChange::Reset {
            name: unquote_name(words[1]),
        }),
        ["set", "local" | "transaction" | "constraints", ..] => {}
        ["set", "session", "characteristics", "as", "transaction", modes @ ..] => {
            transaction_characteristics(modes, out)
        }
        ["set", "session", "authorization", ..] => out.push(set("session_authorization", stmt)),
        ["set", "session", _, ..] => out.push(set(&setting_name(&words[2..]), stmt)),
        ["set", _, ..] => out.push(set(&setting_name(&words[1..]), stmt)),
        _ => {}
    }
}

fn set(name: &str, statement: &str) -> SettingChange {
    SettingChange::Set {
        name: name.to_string(),
        statement: statement.to_string(),
    }
}

fn reset(name: &str) -> SettingChange {
    SettingChange::Reset {
        name: name.to_string(),
    }
}

/// The setting a `SET` changes, from the words after `SET [SESSION]`.
fn setting_name(words: &[&str]) -> String {
    let first = words[0].to_ascii_lowercase();
    let second = words.get(1).map(|w| w.to_ascii_lowercase());
    match (first.as_str(), second.as_deref()) {
        ("time", Some("zone")) => "timezone".into(),
        ("names", _) => "client_encoding".into(),
        // `name=value` may come without spaces.
        _ => unquote_name(words[0].split('=').next().unwrap_or(words[0])),
    }
}

/// `SET SESSION CHARACTERISTICS AS TRANSACTION ...` sets the default_transaction_*
/// settings; they are tracked as those, so RESET works on them.
fn transaction_characteristics(modes: &[&str], out: &mut Vec<SettingChange>) {
    let text = modes.join(" ").replace(',', " ");
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut i = 0;
    while i < words.len() {
        let (name, value, used) = match &words[i..] {
            ["isolation", "level", "read", "committed", ..] => ("isolation", "read committed", 4),
            ["isolation", "level", "read", "uncommitted", ..] => {
                ("isolation", "read uncommitted", 4)
            }
            ["isolation", "level", "repeatable", "read", ..] => ("isolation", "repeatable read", 4),
            ["isolation", "level", "serializable", ..] => ("isolation", "serializable", 3),
            ["read", "only", ..] => ("read_only", "on", 2),
            ["read", "write", ..] => ("read_only", "off", 2),
            ["not", "deferrable", ..] => ("deferrable", "off", 2),
            ["deferrable", ..] => ("deferrable", "on", 1),
            _ => return,
        };
        let name = format!("default_transaction_{name}");
        out.push(set(&name, &set_statement(&name, value)));
        i += used;
    }
}

/// Lower-cases an unquoted setting name, strips the quotes of a quoted one.
fn unquote_name(word: &str) -> String {
    if word.len() >= 2 && word.starts_with('"') && word.ends_with('"') {
        word[1..word.len() - 1].replace("\"\"", "\"")
    } else {
        word.to_ascii_lowercase()
    }
}

/// Splits SQL at semicolons outside quotes, comments and dollar quotes.
fn split_statements(sql: &str) -> Vec<&str> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'\'' | b'"' => {
                let q = bytes[i];
                i += 1;
                while i < bytes.len() && bytes[i] != q {
                    i += 1;
                }
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b'$' => {
                if let Some(len) = bytes[i + 1..].iter().position(|&b| b == b'$') {
                    let tag = &bytes[i..i + len + 2];
                    if tag[1..tag.len() - 1]
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
                    {
                        let body_start = i + tag.len();
                        match find(&bytes[body_start..], tag) {
                            Some(end) => i = body_start + end + tag.len() - 1,
                            None => i = bytes.len(),
                        }
                    }
                }
            }
            b';' => {
                out.push(sql[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if start < sql.len() {
        out.push(sql[start..].trim());
    }
    out.retain(|s| !s.is_empty());
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads `-c name=value` and `--name=value` pairs from a startup `options` string.
fn parse_options(options: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut words = options.split_whitespace();
    while let Some(w) = words.next() {
        let pair = if w == "-c" {
            words.next()
        } else if let Some(rest) = w.strip_prefix("--") {
            Some(rest)
        } else {
            w.strip_prefix("-c")
        };
        if let Some((n, v)) = pair.and_then(|p| p.split_once('=')) {
            out.push((n.replace('-', "_"), v.to_string()));
        }
    }
    out
}

/// Sets `name` to `value` the way PostgreSQL applies startup options: as one string
/// value (a list like `search_path = 'a,b'` stays a list).
pub fn set_statement(name: &str, value: &str) -> String {
    format!(
        "SELECT pg_catalog.set_config({}, {}, false)",
        quote_literal(name),
        quote_literal(value)
    )
}

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, statement: &str) -> SettingChange {
        SettingChange::Set {
            name: name.into(),
            statement: statement.into(),
        }
    }

    #[test]
    fn reads_set_and_reset_forms() {
        assert_eq!(
            setting_changes("SET search_path TO a, b"),
            vec![set("search_path", "SET search_path TO a, b")]
        );
        assert_eq!(
            setting_changes("set statement_timeout=0;"),
            vec![set("statement_timeout", "set statement_timeout=0")]
        );
        assert_eq!(
            setting_changes("SET SESSION DateStyle = 'ISO'"),
            vec![set("datestyle", "SET SESSION DateStyle = 'ISO'")]
        );
        assert_eq!(
            setting_changes("SET TIME ZONE 'UTC'"),
            vec![set("timezone", "SET TIME ZONE 'UTC'")]
        );
        assert_eq!(
            setting_changes("reset search_path"),
            vec![SettingChange::Reset {
                name: "search_path".into()
            }]
        );
        assert_eq!(setting_changes("RESET ALL"), vec![SettingChange::ResetAll]);
        assert!(setting_changes("SET LOCAL work_mem = '1MB'").is_empty());
        assert!(setting_changes("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").is_empty());
        assert!(setting_changes("select 'SET x = 1'").is_empty());
        assert_eq!(
            setting_changes("DISCARD ALL"),
            vec![SettingChange::ResetAll]
        );
        assert_eq!(
            setting_changes("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY"),
            vec![
                set(
                    "default_transaction_isolation",
                    &set_statement("default_transaction_isolation", "serializable")
                ),
                set(
                    "default_transaction_read_only",
                    &set_statement("default_transaction_read_only", "on")
                ),
            ]
        );
    }

    #[test]
    fn splits_multi_statement_text_outside_quotes() {
        let sql = "SET a = 'x;y'; select $$;$$; -- ;\nSET b TO 2";
        assert_eq!(
            setting_changes(sql),
            vec![set("a", "SET a = 'x;y'"), set("b", "SET b TO 2")]
        );
        assert_eq!(split_statements(sql).len(), 3);
    }

    #[test]
    fn startup_parameters_become_settings() {
        let s = ClientSettings::from_startup(&[
            ("user".into(), "app".into()),
            ("database".into(), "app".into()),
            ("application_name".into(), "psql".into()),
            (
                "options".into(),
                "-c search_path=x -c statement_timeout=5s".into(),
            ),
        ]);
        let cur = s.current();
        assert_eq!(cur.len(), 3);
        assert_eq!(
            cur["application_name"],
            "SELECT pg_catalog.set_config('application_name', 'psql', false)"
        );
        assert_eq!(
            cur["search_path"],
            "SELECT pg_catalog.set_config('search_path', 'x', false)"
        );
    }

    const IDLE: TxStatus = TxStatus::Idle;
    const IN: TxStatus = TxStatus::InTransaction;
    const FAILED: TxStatus = TxStatus::Failed;

    /// Runs `sql` as one query with the transaction status before and after it.
    fn run(s: &mut ClientSettings, sql: &str, before: TxStatus, after: TxStatus) -> ServerSettings {
        s.statement_sent(sql.as_bytes());
        s.ready(before, after)
    }

    #[test]
    fn reset_returns_to_startup_values() {
        let mut s = ClientSettings::from_startup(&[("application_name".into(), "a".into())]);
        let start = s.current().clone();
        run(
            &mut s,
            "SET application_name = 'b'; SET work_mem = '8MB'",
            IDLE,
            IDLE,
        );
        assert_eq!(s.current().len(), 2);
        run(&mut s, "RESET application_name", IDLE, IDLE);
        assert_eq!(s.current()["application_name"], start["application_name"]);
        assert_eq!(
            run(&mut s, "RESET ALL", IDLE, IDLE),
            ServerSettings::Defaults
        );
        assert_eq!(s.current(), &start);
    }

    #[test]
    fn serializable_default_is_noticed() {
        let mut s = ClientSettings::default();
        assert!(!s.serializable());
        run(
            &mut s,
            "SET default_transaction_isolation = 'serializable'",
            IDLE,
            IDLE,
        );
        assert!(s.serializable());
        run(&mut s, "RESET default_transaction_isolation", IDLE, IDLE);
        assert!(!s.serializable());
        run(
            &mut s,
            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            IDLE,
            IDLE,
        );
        assert!(s.serializable());
    }

    #[test]
    fn transaction_blocks_inside_one_query_decide_too() {
        let mut s = ClientSettings::default();
        run(&mut s, "BEGIN; SET a.b = 1; ROLLBACK", IDLE, IDLE);
        assert!(s.current().is_empty());
        run(&mut s, "BEGIN; SET a.b = 1; COMMIT", IDLE, IDLE);
        assert!(s.current().contains_key("a.b"));
        run(
            &mut s,
            "BEGIN; SET a.c = 1; SAVEPOINT s; SET a.d = 1; ROLLBACK TO SAVEPOINT s; COMMIT",
            IDLE,
            IDLE,
        );
        assert!(s.current().contains_key("a.c"));
        assert!(!s.current().contains_key("a.d"));
        // COMMIT of a failed block rolls back.
        run(&mut s, "BEGIN", IDLE, IN);
        run(&mut s, "SET a.e = 1", IN, IN);
        s.statement_sent(b"select 1/0");
        s.statement_failed();
        s.ready(IN, FAILED);
        run(&mut s, "COMMIT", FAILED, IDLE);
        assert!(!s.current().contains_key("a.e"));
    }

    #[test]
    fn rollback_to_savepoint_drops_later_changes() {
        let mut s = ClientSettings::default();
        run(&mut s, "BEGIN", IDLE, IN);
        run(&mut s, "SET a.one = 1", IN, IN);
        run(&mut s, "SAVEPOINT s1", IN, IN);
        run(&mut s, "SET a.two = 2", IN, IN);
        run(&mut s, "ROLLBACK TO SAVEPOINT s1", IN, IN);
        run(&mut s, "COMMIT", IN, IDLE);
        assert!(s.current().contains_key("a.one"));
        assert!(!s.current().contains_key("a.two"));

        // A savepoint made before any change: rolling back to it drops them all.
        run(&mut s, "BEGIN", IDLE, IN);
        run(&mut s, "SAVEPOINT early", IN, IN);
        run(&mut s, "SET a.three = 3", IN, IN);
        run(&mut s, "ROLLBACK TO early", IN, IN);
        run(&mut s, "COMMIT", IN, IDLE);
        assert!(!s.current().contains_key("a.three"));
    }

    #[test]
    fn ready_settles_running_changes() {
        let mut s = ClientSettings::default();
        assert_eq!(
            run(&mut s, "select 1", IDLE, IDLE),
            ServerSettings::Unchanged
        );
        assert!(
            matches!(run(&mut s, "SET work_mem = '8MB'", IDLE, IDLE), ServerSettings::Client(m) if m.contains_key("work_mem"))
        );

        s.statement_sent(b"SET x.y = 1");
        s.statement_failed();
        s.ready(IDLE, IDLE);
        assert!(!s.current().contains_key("x.y"));

        // Inside a transaction: kept only if it commits.
        assert_eq!(
            run(&mut s, "SET a.b = 1", IN, IN),
            ServerSettings::Unchanged
        );
        run(&mut s, "ROLLBACK", IN, IDLE);
        assert!(!s.current().contains_key("a.b"));
        run(&mut s, "SET a.b = 1", IN, IN);
        run(&mut s, "COMMIT", IN, IDLE);
        assert!(s.current().contains_key("a.b"));

        assert_eq!(
            run(&mut s, "RESET ALL", IDLE, IDLE),
            ServerSettings::Defaults
        );
        assert!(s.current().is_empty());

        // RESET ALL inside a committed transaction also leaves the server at defaults.
        run(&mut s, "SET a.b = 1", IDLE, IDLE);
        run(&mut s, "RESET ALL", IN, IN);
        assert_eq!(run(&mut s, "COMMIT", IN, IDLE), ServerSettings::Defaults);
    }

    #[test]
    fn sync_sql_resets_extra_and_sets_missing() {
        let mut server = BTreeMap::new();
        server.insert("a".to_string(), "SET a TO 1".to_string());
        server.insert("b".to_string(), "SET b TO 1".to_string());
        let mut client = BTreeMap::new();
        client.insert("b".to_string(), "SET b TO 2".to_string());
        assert_eq!(
            sync_sql(&server, &client).unwrap(),
            "RESET \"a\";\nSET b TO 2;\n"
        );
        assert_eq!(sync_sql(&client, &client), None);
    }

    #[test]
    fn quick_check_only_flags_candidates() {
        assert!(might_change_setting(b"  SET x = 1"));
        assert!(might_change_setting(b"reset all"));
        assert!(might_change_setting(b"select 1; set x = 1"));
        assert!(!might_change_setting(
            b"SELECT abalance FROM pgbench_accounts"
        ));
    }
}
