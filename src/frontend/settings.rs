//! Session settings a client made (startup parameters and SET / RESET outside or within
//! a committed transaction), so they can be replayed on whichever server connection the
//! client gets next and never leak to another client.
//!
//! Statements are read with the classifier's lexer (`crate::classify::statements` and
//! `source_tokens`), so literals, quoted identifiers and comments hide nothing and fake
//! nothing.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::classify::{
    dotted_name, source_tokens, starts_with_any_kw, statements, Token, TokenKind,
};
use crate::wire::message::TxStatus;

/// The settings `RESET ALL` leaves alone (PostgreSQL marks them `GUC_NO_RESET_ALL`);
/// `DISCARD ALL` resets them too.
const KEPT_BY_RESET_ALL: [&str; 2] = ["role", "session_authorization"];

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
    /// `RESET ALL`: every setting except `role` and `session_authorization`.
    ResetAll,
    /// `DISCARD ALL`: every setting.
    DiscardAll,
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
    /// These settings (name -> SET statement) differ from the server's own defaults. They
    /// can differ from the client's current settings: a `RESET` brings a setting to the
    /// server's default, not to the client's startup value.
    Now(BTreeMap<String, String>),
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
                        if !is_pgsplit_parameter(&n) {
                            startup.insert(n.to_ascii_lowercase(), set_statement(&n, &v));
                        }
                    }
                }
                _ if name.starts_with("_pq_.") || is_pgsplit_parameter(name) => {}
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
        self.block_pending() || might_change_setting(sql)
    }

    /// A statement with this SQL is being executed.
    pub fn statement_sent(&mut self, sql: &[u8]) {
        let changes = changes_in(sql, self.block_pending());
        self.changes_sent(changes);
    }

    /// Records the changes of a statement sent, found with [`changes_in`] (apart from the
    /// event loop, for a long text).
    pub fn changes_sent(&mut self, changes: Vec<SettingChange>) {
        self.running.extend(changes);
    }

    /// Whether a transaction block holds changes its control statements decide on (then
    /// every statement is read for them).
    pub fn block_pending(&self) -> bool {
        !self.pending.is_empty()
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
            return outcome.server_settings();
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
                | SettingChange::ResetAll
                | SettingChange::DiscardAll) => {
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
        outcome.server_settings()
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
            .any(|stmt| {
                let stmt = stmt.as_bytes();
                source_tokens(stmt).any(|t| {
                    matches!(t.kind, TokenKind::Word | TokenKind::Str)
                        && t.text(stmt)
                            .to_ascii_lowercase()
                            .windows(b"serializable".len())
                            .any(|w| w == b"serializable")
                })
            })
    }

    /// The settings to apply on a server connection: name -> SET statement.
    pub fn current(&self) -> &BTreeMap<String, String> {
        &self.current
    }

    /// Applies one committed change to the client's settings and to the server's (which
    /// were the client's before the first change).
    fn apply(&mut self, change: &SettingChange, outcome: &mut Outcome) {
        let server = outcome.server.get_or_insert_with(|| self.current.clone());
        match change {
            SettingChange::Set { name, statement } => {
                self.current.insert(name.clone(), statement.clone());
                server.insert(name.clone(), statement.clone());
            }
            SettingChange::Reset { name } => {
                match self.startup.get(name) {
                    Some(s) => self.current.insert(name.clone(), s.clone()),
                    None => self.current.remove(name),
                };
                server.remove(name);
            }
            SettingChange::ResetAll => {
                let kept = |name: &String| KEPT_BY_RESET_ALL.contains(&name.as_str());
                let mut current = self.startup.clone();
                for (name, statement) in &self.current {
                    if kept(name) {
                        current.insert(name.clone(), statement.clone());
                    }
                }
                self.current = current;
                server.retain(|name, _| kept(name));
            }
            SettingChange::DiscardAll => {
                self.current = self.startup.clone();
                server.clear();
            }
            _ => {}
        }
    }
}

/// What settling changes did.
#[derive(Debug, Default)]
struct Outcome {
    /// The server's settings after the changes; `None` when nothing changed.
    server: Option<BTreeMap<String, String>>,
}

impl Outcome {
    fn server_settings(self) -> ServerSettings {
        match self.server {
            Some(now) => ServerSettings::Now(now),
            None => ServerSettings::Unchanged,
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
    const AUTH: &str = "session_authorization";
    // Changing the session authorization resets the role: it goes first, and the role is
    // set again after it.
    let mut server = Cow::Borrowed(server);
    if server.get(AUTH) != client.get(AUTH) {
        server.to_mut().remove("role");
    }
    let mut sql = String::new();
    for name in server.keys().filter(|n| !client.contains_key(*n)) {
        sql.push_str("RESET ");
        sql.push_str(&quote_ident(name));
        sql.push_str(";\n");
    }
    let (auth, rest): (Vec<_>, Vec<_>) = client.iter().partition(|(name, _)| *name == AUTH);
    for (name, statement) in auth.into_iter().chain(rest) {
        if server.get(name) != Some(statement) {
            sql.push_str(statement);
            sql.push_str(";\n");
        }
    }
    Some(sql)
}

/// The setting changes in a simple query's text (one or several statements). Statements
/// that are not SET / RESET / DISCARD ALL or transaction control contribute nothing; SET
/// LOCAL and SET TRANSACTION are transaction-scoped and not tracked.
pub fn setting_changes(sql: &str) -> Vec<SettingChange> {
    let mut changes = Vec::new();
    for stmt in statements(sql.as_bytes()) {
        // Statements end at ASCII bytes, so each is UTF-8 as the whole is.
        if let Ok(stmt) = std::str::from_utf8(stmt) {
            parse_statement(stmt, &mut changes);
        }
    }
    changes
}

/// Cheap test for whether a query might change a setting, to skip the full look on the
/// hot path: a single statement must start with SET, RESET or DISCARD; text with several
/// statements gets the full look.
/// The setting changes a statement makes, as `ClientSettings::statement_sent` records
/// them; `block_pending` as `ClientSettings::block_pending` says.
pub fn changes_in(sql: &[u8], block_pending: bool) -> Vec<SettingChange> {
    if !block_pending && !might_change_setting(sql) {
        return Vec::new();
    }
    std::str::from_utf8(sql)
        .map(setting_changes)
        .unwrap_or_default()
}

pub fn might_change_setting(sql: &[u8]) -> bool {
    if starts_with_any_kw(sql, &["SET", "RESET", "DISCARD"]) {
        return true;
    }
    // The `;` and whitespace that usually end a statement (pgbench, most drivers) do not
    // make text of several statements.
    let end = sql
        .iter()
        .rposition(|b| *b != b';' && !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    if !sql[..end].contains(&b';') {
        // One statement, and not one of those.
        return false;
    }
    let mut after_semicolon = false;
    for tok in source_tokens(sql) {
        let semicolon = tok.kind == TokenKind::Punct(b';');
        if after_semicolon && !semicolon {
            return true;
        }
        after_semicolon |= semicolon;
    }
    false
}

/// The statements whose first word makes them worth reading.
const LEADING_WORDS: [&str; 11] = [
    "SET",
    "RESET",
    "DISCARD",
    "BEGIN",
    "START",
    "COMMIT",
    "END",
    "ROLLBACK",
    "ABORT",
    "SAVEPOINT",
    "RELEASE",
];

/// Reads one statement (its original text, from its first token to its last).
fn parse_statement(stmt: &str, out: &mut Vec<SettingChange>) {
    let text = stmt.as_bytes();
    if !starts_with_any_kw(text, &LEADING_WORDS) {
        return;
    }
    let toks: Vec<Token> = source_tokens(text).collect();
    // Unquoted words in lowercase, other tokens as written (so no keyword matches them).
    let words: Vec<Cow<str>> = toks
        .iter()
        .map(|t| {
            let raw = String::from_utf8_lossy(t.text(text));
            if t.kind == TokenKind::Word {
                Cow::Owned(raw.to_ascii_lowercase())
            } else {
                raw
            }
        })
        .collect();
    let words: Vec<&str> = words.iter().map(|w| w.as_ref()).collect();
    // A savepoint's name: as PostgreSQL stores it (or as written if it cannot tell).
    let savepoint = |tok: &Token| match tok.name(text) {
        Some(name) => String::from_utf8_lossy(&name).into_owned(),
        None => String::from_utf8_lossy(tok.text(text)).into_owned(),
    };
    let last = || toks.last().map(savepoint).unwrap_or_default();
    match words.as_slice() {
        ["discard", "all"] => out.push(SettingChange::DiscardAll),
        ["reset", "all"] => out.push(SettingChange::ResetAll),
        ["begin", ..] | ["start", "transaction", ..] => out.push(SettingChange::Begin),
        ["commit" | "rollback", "prepared", ..] => {}
        ["commit" | "end", ..] => out.push(SettingChange::Commit),
        ["rollback" | "abort", rest @ ..] => match rest {
            ["to", "savepoint", _]
            | ["work" | "transaction", "to", "savepoint", _]
            | ["to", _]
            | ["work" | "transaction", "to", _] => out.push(SettingChange::RollbackTo(last())),
            _ => out.push(SettingChange::Rollback),
        },
        ["savepoint", _] => out.push(SettingChange::Savepoint(last())),
        ["release", "savepoint", _] | ["release", _] => out.push(SettingChange::Release(last())),
        ["reset", "time", "zone"] => out.push(reset("timezone")),
        ["reset", "session", "authorization"] => reset_setting("session_authorization", out),
        ["reset", ..] => {
            if let Some(name) = setting_name(text, &toks[1..]).filter(|(_, rest)| rest.is_empty()) {
                reset_setting(&name.0, out);
            }
        }
        ["set", "local" | "transaction" | "constraints", ..] => {}
        ["set", "session", "characteristics", "as", "transaction", modes @ ..] => {
            transaction_characteristics(modes, out)
        }
        ["set", "session", "session", "authorization", ..]
        | ["set", "session", "authorization", ..] => {
            set_setting("session_authorization", stmt, out)
        }
        ["set", "session", ..] => {
            if let Some((name, _)) = setting_name(text, &toks[2..]) {
                set_setting(&name, stmt, out);
            }
        }
        ["set", ..] => {
            if let Some((name, _)) = setting_name(text, &toks[1..]) {
                set_setting(&name, stmt, out);
            }
        }
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

/// Setting the session authorization also resets the role (PostgreSQL makes the new
/// session user the current user).
fn set_setting(name: &str, statement: &str, out: &mut Vec<SettingChange>) {
    if name == "session_authorization" {
        out.push(reset("role"));
    }
    out.push(set(name, statement));
}

fn reset_setting(name: &str, out: &mut Vec<SettingChange>) {
    if name == "session_authorization" {
        out.push(reset("role"));
    }
    out.push(reset(name));
}

/// The setting named at the start of `toks` (after `SET [SESSION]` or `RESET`), and the
/// tokens after its name. PostgreSQL compares setting names ignoring ASCII case, so the name
/// is lowercased, quoted or not.
fn setting_name<'t>(text: &[u8], toks: &'t [Token]) -> Option<(String, &'t [Token])> {
    let kw = |i: usize, k: &str| toks.get(i).is_some_and(|t| t.is_kw(text, k));
    let (name, used) = if kw(0, "TIME") && kw(1, "ZONE") {
        (b"timezone".to_vec(), 2)
    } else if kw(0, "XML") && kw(1, "OPTION") {
        (b"xmloption".to_vec(), 2)
    } else if kw(0, "NAMES") {
        (b"client_encoding".to_vec(), 1)
    } else if kw(0, "SCHEMA") {
        (b"search_path".to_vec(), 1)
    } else {
        dotted_name(text, toks)?
    };
    let name = String::from_utf8(name).ok()?.to_ascii_lowercase();
    Some((name, toks.get(used..).unwrap_or_default()))
}

/// `SET SESSION CHARACTERISTICS AS TRANSACTION ...` sets the default_transaction_*
/// settings; they are tracked as those, so RESET works on them.
fn transaction_characteristics(modes: &[&str], out: &mut Vec<SettingChange>) {
    let words: Vec<&str> = modes.iter().copied().filter(|w| *w != ",").collect();
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

/// Whether a startup parameter is pgsplit's own (`pgsplit.*`): it is not a server setting.
fn is_pgsplit_parameter(name: &str) -> bool {
    name.get(..8)
        .is_some_and(|p| p.eq_ignore_ascii_case("pgsplit."))
}

/// The value a client's startup packet gives pgsplit's parameter `name`, as a parameter
/// of its own or as `-c name=value` in `options` (the last one wins).
pub fn startup_option(params: &[(String, String)], name: &str) -> Option<String> {
    let mut found = None;
    for (n, v) in params {
        if n.eq_ignore_ascii_case(name) {
            found = Some(v.clone());
        } else if n == "options" {
            for (n, v) in parse_options(v) {
                if n.eq_ignore_ascii_case(name) {
                    found = Some(v);
                }
            }
        }
    }
    found
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
mod tests;
