//! Statement-level rules over canonical text: split into statements, dispatch on the leading
//! keywords, and combine the classes of a multi-statement string.
//!
//! Most statement kinds are settled here from their keywords alone (transaction control,
//! `SET`/`SHOW`, `LISTEN`, `PREPARE`, DML, DDL, `COPY`, `EXPLAIN`, `DECLARE`); only queries go
//! to the parser (`walk.rs`), and the commonest query shape (a single `SELECT` without
//! parentheses, `INTO`, `FOR` or a primary-table name) is settled here too. The keyword rules
//! also catch what sqlparser cannot read: `FOR NO KEY UPDATE` / `FOR KEY SHARE`, calls of
//! write functions by their `name(` syntax, `CREATE TEMP ...`, `DO`, `VACUUM`, ...

use std::borrow::Cow;
use std::cell::Cell;

use super::functions::{FnEffect, Functions, QualifiedNames};
use super::lexer::{tokens, Kind, Token};
use super::{walk, Class, Shape};

/// Nesting limit for `EXPLAIN`/`COPY (...)`/`DECLARE ... FOR` wrappers.
const MAX_DEPTH: u8 = 4;

const READ: Class = Class::Read {
    primary_table: false,
};

/// What classifying a canonical text found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub shape: Shape,
    /// It calls a function the loaded catalog does not know (the catalog may be stale).
    pub unknown_function: bool,
    /// It is DDL that may change what the catalog says (`CREATE` or `ALTER` of anything
    /// not temporary: functions, triggers, rules, foreign keys, partitions, views).
    pub changes_catalog: bool,
}

/// Classifies a whole canonical text (one or more statements).
pub(crate) fn classify(
    canon: &[u8],
    functions: &Functions,
    primary_tables: &QualifiedNames,
) -> Outcome {
    let toks = tokens(canon);
    let rules = Rules {
        canon,
        functions,
        primary_tables,
        user_write: Cell::new(false),
        unknown_function: Cell::new(false),
    };
    let class = class_of(&toks, &rules);
    let leaves_state = rules.user_write.get()
        || rules.may_run_user_code(class, &toks)
        || toks
            .split(|t| t.kind == Kind::Punct(b';'))
            .any(|stmt| rules.leaves_state(stmt));
    Outcome {
        shape: Shape {
            class,
            leaves_state,
        },
        unknown_function: rules.unknown_function.get(),
        changes_catalog: class == Class::Write
            && toks
                .split(|t| t.kind == Kind::Punct(b';'))
                .any(|stmt| rules.any_kw(stmt.first(), &["CREATE", "ALTER"])),
    }
}

/// The class of a whole token list (one or more statements).
fn class_of(toks: &[Token], rules: &Rules<'_>) -> Class {
    let mut classes = Vec::new();
    let mut start = 0;
    let mut depth = 0i64;
    for (i, tok) in toks.iter().enumerate() {
        match tok.kind {
            Kind::Punct(b'(') => depth += 1,
            Kind::Punct(b')') => depth -= 1,
            Kind::Punct(b';') if depth == 0 => {
                let stmt = toks.get(start..i).unwrap_or_default();
                if !stmt.is_empty() {
                    classes.push((stmt, rules.statement(stmt, 0)));
                }
                start = i + 1;
            }
            // `;` inside parentheses (CREATE RULE ... DO (a; b)) or unbalanced parentheses:
            // nothing a read needs.
            Kind::Punct(b';') => return Class::Write,
            _ => {}
        }
        if depth < 0 {
            return Class::Write;
        }
    }
    let last = toks.get(start..).unwrap_or_default();
    if !last.is_empty() {
        classes.push((last, rules.statement(last, 0)));
    }
    match classes.as_slice() {
        [] => READ,
        [(_, class)] => *class,
        many => rules.combine(many),
    }
}

struct Rules<'a> {
    canon: &'a [u8],
    functions: &'a Functions,
    primary_tables: &'a QualifiedNames,
    /// A call of a user function that may write was found: running the text may leave
    /// session state behind.
    user_write: Cell<bool>,
    /// The parser found a call of a function the loaded catalog does not know.
    unknown_function: Cell<bool>,
}

impl Rules<'_> {
    fn kw(&self, t: Option<&Token>, kw: &str) -> bool {
        t.is_some_and(|t| t.is_kw(self.canon, kw))
    }

    fn any_kw(&self, t: Option<&Token>, kws: &[&str]) -> bool {
        t.is_some_and(|t| t.is_any_kw(self.canon, kws))
    }

    /// A multi-statement simple query: a read only if every statement is (`SHOW` counts as a
    /// read); a statement that needs a real session pins the whole string; transaction control
    /// or settings inside it make it a write (conservative: it runs on the primary).
    fn combine(&self, classes: &[(&[Token], Class)]) -> Class {
        let mut write = false;
        let mut primary_table = false;
        for (toks, class) in classes {
            match class {
                Class::SessionBound => return Class::SessionBound,
                // SET / RESET / DISCARD inside a multi-statement string: the proxy tracks and
                // replays them like single ones; the string runs on the primary.
                Class::Session if !self.kw(toks.first(), "SHOW") => write = true,
                Class::Session => {}
                Class::Read { primary_table: p } => primary_table |= p,
                Class::Write | Class::Begin { .. } | Class::End | Class::TransactionControl => {
                    write = true
                }
            }
        }
        if write {
            Class::Write
        } else {
            Class::Read { primary_table }
        }
    }

    /// Whether one statement may leave session state that pgsplit does not track, so the
    /// server connection must be reset before another client uses it: `DO`, `CALL` and
    /// `LOAD` run code pgsplit cannot see; `RESET ALL` keeps the role while pgsplit's
    /// settings go back to the server's defaults; `DISCARD` changes what pgsplit knows of
    /// the server; `SET ROLE` / `SET SESSION AUTHORIZATION` (and their `RESET`) change who
    /// the next client would be. Any `;` inside parentheses splits a statement early, which
    /// only finds more.
    fn leaves_state(&self, t: &[Token]) -> bool {
        let at = |k: usize| t.get(k);
        if self.any_kw(at(0), &["DO", "CALL", "LOAD", "DISCARD"]) {
            return true;
        }
        if self.kw(at(0), "RESET") {
            return self.any_kw(at(1), &["ALL", "ROLE", "SESSION"]);
        }
        if self.kw(at(0), "SET") {
            let i = 1 + usize::from(self.any_kw(at(1), &["SESSION", "LOCAL"]));
            // `SET [SESSION | LOCAL] ROLE`, `SET [SESSION] SESSION AUTHORIZATION`.
            return self.kw(at(i), "ROLE")
                || (self.kw(at(i - 1), "SESSION") && self.kw(at(i), "AUTHORIZATION"))
                || (self.kw(at(i), "SESSION") && self.kw(at(i + 1), "AUTHORIZATION"));
        }
        false
    }

    /// Whether running `t` (of class `class`) may run user code that `user_write` does not
    /// cover, which may leave session state (`set_config`, advisory locks, `SET ROLE`): a
    /// write naming a relation with triggers or rules. Before the first catalog load, pgsplit
    /// cannot tell: every write may, and so may every statement that calls any function.
    fn may_run_user_code(&self, class: Class, t: &[Token]) -> bool {
        let write = matches!(class, Class::Write | Class::SessionBound);
        if !self.functions.catalog_loaded() {
            return write
                || t.windows(2).any(|w| {
                    matches!(w, [name, open] if open.kind == Kind::Punct(b'(')
                        && matches!(name.kind, Kind::Word | Kind::Quoted | Kind::UnicodeQuoted))
                });
        }
        write && self.names_firing_relation(t)
    }

    /// Whether `t` names, anywhere, a relation whose writes may run user code (triggers,
    /// rules; see `catalog.rs`). A `U&"..."` name is not decoded: it counts.
    fn names_firing_relation(&self, t: &[Token]) -> bool {
        self.functions.any_firing_relation()
            && t.iter().any(|tok| match tok.kind {
                Kind::UnicodeQuoted => true,
                Kind::Word | Kind::Quoted => tok
                    .name(self.canon)
                    .is_some_and(|name| self.functions.fires_user_code(&name)),
                _ => false,
            })
    }

    /// One statement (non-empty token slice, no top-level `;`).
    fn statement(&self, t: &[Token], depth: u8) -> Class {
        if depth > MAX_DEPTH {
            return Class::Write;
        }
        let Some(first) = t.first() else {
            return Class::Write;
        };
        if first.kind == Kind::Punct(b'(') {
            return self.query(t);
        }
        if first.kind != Kind::Word {
            return Class::Write;
        }
        let mut head = [0u8; 12];
        let text = first.text(self.canon);
        if text.len() > head.len() {
            return self.write_or_session(t);
        }
        for (h, b) in head.iter_mut().zip(text) {
            *h = b.to_ascii_uppercase();
        }
        let second = t.get(1);
        match head.get(..text.len()).unwrap_or_default() {
            // Even a plain-looking SELECT is parsed (on a cache miss): SQL that does not
            // parse is not known to be a read, so it goes to the primary.
            b"SELECT" => self.query(t),
            b"TABLE" => self.table(t),
            b"WITH" | b"VALUES" => self.query(t),
            b"BEGIN" => self.begin(t.get(1..).unwrap_or_default()),
            b"START" if self.kw(second, "TRANSACTION") => {
                self.begin(t.get(1..).unwrap_or_default())
            }
            b"COMMIT" | b"END" | b"ABORT" | b"ROLLBACK" => self.end(t),
            b"SAVEPOINT" if t.len() == 2 => Class::TransactionControl,
            b"RELEASE" if t.len() == 2 || (t.len() == 3 && self.kw(second, "SAVEPOINT")) => {
                Class::TransactionControl
            }
            b"PREPARE" if self.kw(second, "TRANSACTION") => {
                if t.len() == 3 && t.get(2).is_some_and(|t| t.kind == Kind::Str) {
                    Class::End
                } else {
                    Class::Write
                }
            }
            b"PREPARE" | b"EXECUTE" | b"DEALLOCATE" | b"LISTEN" | b"UNLISTEN" => {
                Class::SessionBound
            }
            b"SET" | b"RESET" | b"SHOW" | b"DISCARD" => Class::Session,
            b"FETCH" | b"MOVE" | b"CLOSE" => Class::TransactionControl,
            b"DECLARE" => self.declare(t, depth),
            b"EXPLAIN" => self.explain(t, depth),
            b"COPY" => self.copy(t, depth),
            b"CREATE" => self.create(t),
            // INSERT, UPDATE, DELETE, MERGE, TRUNCATE, DDL, DO, CALL, VACUUM, ANALYZE, LOCK,
            // NOTIFY, CHECKPOINT, REINDEX, CLUSTER, ALTER SYSTEM, GRANT, ... and anything unknown.
            _ => self.write_or_session(t),
        }
    }

    /// A write, unless it also calls a session-bound function (then the session is pinned).
    fn write_or_session(&self, t: &[Token]) -> Class {
        match self.calls(t) {
            Some(FnEffect::SessionBound) => Class::SessionBound,
            _ => Class::Write,
        }
    }

    /// A query statement: keyword-level checks first, then the parser.
    fn query(&self, t: &[Token]) -> Class {
        match self.calls(t) {
            Some(FnEffect::SessionBound) => return Class::SessionBound,
            Some(_) => return Class::Write,
            None => {}
        }
        if self.locking_clause(t) {
            return Class::Write;
        }
        let (Some(first), Some(last)) = (t.first(), t.last()) else {
            return Class::Write;
        };
        let bytes = self.canon.get(first.start..last.end).unwrap_or_default();
        let sql = match std::str::from_utf8(bytes) {
            Ok(sql) => Cow::Borrowed(sql),
            // Non-UTF-8 identifiers (a LATIN1 client): the parser gets replacement characters,
            // which it may reject (then: a write).
            Err(_) => String::from_utf8_lossy(bytes),
        };
        match walk::classify_query(&sql, self.functions, self.primary_tables) {
            Ok(walked) => {
                self.user_write
                    .set(self.user_write.get() || walked.user_write);
                self.unknown_function
                    .set(self.unknown_function.get() || walked.unknown_function);
                walked.class
            }
            Err(_) => Class::Write,
        }
    }

    /// The strongest effect among the calls `name(...)` / `schema.name(...)` in `t`
    /// ([`FnEffect::UserWrite`] is reported as a write and noted in `user_write`).
    /// A call through a `U&"..."` name is treated as a write (its real name is not decoded).
    /// A configured write function also counts in attribute notation, `x.name` (PostgreSQL
    /// calls `name(x)` when `x` has no such column). A name the catalog does not know counts
    /// for nothing here: `name(` may be a table's column list, a type modifier or a keyword;
    /// the parser decides about queries.
    fn calls(&self, t: &[Token]) -> Option<FnEffect> {
        let mut strongest = None;
        for (i, tok) in t.iter().enumerate() {
            if self.functions.any_configured()
                && matches!(tok.kind, Kind::Word | Kind::Quoted)
                && i > 0
                && t.get(i - 1).is_some_and(|d| d.kind == Kind::Punct(b'.'))
                && t.get(i + 1).is_none_or(|p| p.kind != Kind::Punct(b'('))
                && tok
                    .name(self.canon)
                    .is_some_and(|name| self.functions.is_configured(&name))
            {
                strongest = Some(FnEffect::Write);
            }
            if tok.kind != Kind::Punct(b'(') || i == 0 {
                continue;
            }
            let Some(callee) = t.get(i - 1) else { continue };
            let effect = match callee.kind {
                Kind::UnicodeQuoted => Some(FnEffect::Write),
                Kind::Word | Kind::Quoted => {
                    let schema = (i >= 3
                        && t.get(i - 2).is_some_and(|d| d.kind == Kind::Punct(b'.')))
                    .then(|| t.get(i - 3).and_then(|s| s.name(self.canon)))
                    .flatten();
                    callee
                        .name(self.canon)
                        .and_then(|name| self.functions.effect(schema.as_deref(), &name))
                }
                _ => None,
            };
            match effect {
                Some(FnEffect::SessionBound) => return Some(FnEffect::SessionBound),
                Some(FnEffect::Write) => strongest = Some(FnEffect::Write),
                Some(FnEffect::UserWrite) => {
                    self.user_write.set(true);
                    strongest = Some(FnEffect::Write);
                }
                Some(FnEffect::Unknown) | None => {}
            }
        }
        strongest
    }

    /// `FOR UPDATE`, `FOR NO KEY UPDATE`, `FOR SHARE`, `FOR KEY SHARE` anywhere.
    fn locking_clause(&self, t: &[Token]) -> bool {
        t.iter().enumerate().any(|(i, tok)| {
            tok.is_kw(self.canon, "FOR") && {
                let at = |k: usize| t.get(i + k);
                self.any_kw(at(1), &["UPDATE", "SHARE"])
                    || (self.kw(at(1), "NO") && self.kw(at(2), "KEY") && self.kw(at(3), "UPDATE"))
                    || (self.kw(at(1), "KEY") && self.kw(at(2), "SHARE"))
            }
        })
    }

    /// `BEGIN [WORK | TRANSACTION] [mode [, ...]]` / `START TRANSACTION [mode [, ...]]`;
    /// `rest` starts after `BEGIN` / `START`. Read-only unless SERIALIZABLE, which a hot
    /// standby refuses.
    fn begin(&self, rest: &[Token]) -> Class {
        let mut i = usize::from(self.any_kw(rest.first(), &["WORK", "TRANSACTION"]));
        let (mut read_only, mut read_write) = (false, false);
        while i < rest.len() {
            let at = |k: usize| rest.get(i + k);
            if self.kw(at(0), "ISOLATION") && self.kw(at(1), "LEVEL") {
                if self.kw(at(2), "SERIALIZABLE") {
                    // A hot standby cannot run serializable transactions: primary.
                    read_write = true;
                    i += 3;
                } else if (self.kw(at(2), "REPEATABLE") && self.kw(at(3), "READ"))
                    || (self.kw(at(2), "READ") && self.any_kw(at(3), &["COMMITTED", "UNCOMMITTED"]))
                {
                    i += 4;
                } else {
                    return Class::Write;
                }
            } else if self.kw(at(0), "READ") && self.kw(at(1), "ONLY") {
                read_only = true;
                i += 2;
            } else if self.kw(at(0), "READ") && self.kw(at(1), "WRITE") {
                read_write = true;
                i += 2;
            } else if self.kw(at(0), "DEFERRABLE") {
                i += 1;
            } else if self.kw(at(0), "NOT") && self.kw(at(1), "DEFERRABLE") {
                i += 2;
            } else {
                return Class::Write;
            }
            if rest.get(i).is_some_and(|t| t.kind == Kind::Punct(b',')) && i + 1 < rest.len() {
                i += 1;
            }
        }
        Class::Begin {
            read_only: read_only && !read_write,
        }
    }

    /// `COMMIT`/`END`/`ABORT`/`ROLLBACK [WORK|TRANSACTION] [AND [NO] CHAIN]` end the block;
    /// `ROLLBACK TO [SAVEPOINT] s` and `... AND CHAIN` (which opens a new block at once) are
    /// transaction control; `COMMIT PREPARED` / `ROLLBACK PREPARED` are writes (they run
    /// outside any block and act on the primary's prepared transactions).
    fn end(&self, t: &[Token]) -> Class {
        let rollback = self.kw(t.first(), "ROLLBACK");
        let commit = self.kw(t.first(), "COMMIT");
        if (rollback || commit) && self.kw(t.get(1), "PREPARED") {
            return Class::Write;
        }
        let i = 1 + usize::from(self.any_kw(t.get(1), &["WORK", "TRANSACTION"]));
        if rollback && self.kw(t.get(i), "TO") {
            let name_at = i + 1 + usize::from(self.kw(t.get(i + 1), "SAVEPOINT"));
            return if t.len() == name_at + 1 {
                Class::TransactionControl
            } else {
                Class::Write
            };
        }
        let at = |k: usize| t.get(i + k);
        match t.len().saturating_sub(i) {
            0 => Class::End,
            2 if self.kw(at(0), "AND") && self.kw(at(1), "CHAIN") => Class::TransactionControl,
            3 if self.kw(at(0), "AND") && self.kw(at(1), "NO") && self.kw(at(2), "CHAIN") => {
                Class::End
            }
            _ => Class::Write,
        }
    }

    /// Index of the first token at parenthesis depth 0 that satisfies `pred`.
    fn find_top(&self, t: &[Token], from: usize, pred: impl Fn(&Token) -> bool) -> Option<usize> {
        let mut depth = 0i64;
        for (i, tok) in t.iter().enumerate().skip(from) {
            match tok.kind {
                Kind::Punct(b'(') => depth += 1,
                Kind::Punct(b')') => depth -= 1,
                _ if depth == 0 && pred(tok) => return Some(i),
                _ => {}
            }
        }
        None
    }

    /// Index of the `)` matching the `(` at `open`.
    fn matching(&self, t: &[Token], open: usize) -> Option<usize> {
        let mut depth = 0i64;
        for (i, tok) in t.iter().enumerate().skip(open) {
            match tok.kind {
                Kind::Punct(b'(') => depth += 1,
                Kind::Punct(b')') => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(i);
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// The class of a statement wrapped by `EXPLAIN ANALYZE`, `COPY (...) TO STDOUT` or
    /// `DECLARE ... FOR`, which runs it: a read stays a read; anything else is a write,
    /// except that session-bound stays session-bound.
    fn executed(&self, inner: &[Token], depth: u8) -> Class {
        if inner.is_empty() {
            return Class::Write;
        }
        match self.statement(inner, depth + 1) {
            read @ Class::Read { .. } => read,
            Class::SessionBound => Class::SessionBound,
            _ => Class::Write,
        }
    }

    /// `EXPLAIN [ANALYZE] [VERBOSE] stmt` / `EXPLAIN (option [value], ...) stmt`.
    /// Plain `EXPLAIN` does not run the statement: a read, whatever it explains (a write's
    /// plan too), as long as it is a statement that can be explained. With `ANALYZE` (even
    /// `ANALYZE false`, conservatively) the statement runs.
    fn explain(&self, t: &[Token], depth: u8) -> Class {
        let mut analyze = false;
        let mut i = 1;
        if t.get(1).is_some_and(|t| t.kind == Kind::Punct(b'(')) {
            let Some(close) = self.matching(t, 1) else {
                return Class::Write;
            };
            analyze = t
                .get(2..close)
                .unwrap_or_default()
                .iter()
                .any(|tok| tok.is_any_kw(self.canon, &["ANALYZE", "ANALYSE"]));
            i = close + 1;
        } else {
            while self.any_kw(t.get(i), &["ANALYZE", "ANALYSE", "VERBOSE"]) {
                analyze |= self.any_kw(t.get(i), &["ANALYZE", "ANALYSE"]);
                i += 1;
            }
        }
        let inner = t.get(i..).unwrap_or_default();
        // What PostgreSQL can explain; anything else is a syntax error there.
        let explainable = inner.first().is_some_and(|tok| {
            tok.kind == Kind::Punct(b'(')
                || tok.is_any_kw(
                    self.canon,
                    &[
                        "SELECT", "WITH", "VALUES", "TABLE", "INSERT", "UPDATE", "DELETE", "MERGE",
                        "EXECUTE", "DECLARE", "CREATE",
                    ],
                )
        });
        if !explainable {
            return Class::Write;
        }
        if analyze {
            return self.executed(inner, depth);
        }
        match self.statement(inner, depth + 1) {
            read @ Class::Read { .. } => read,
            Class::Write | Class::SessionBound => READ,
            _ => Class::Write,
        }
    }

    /// `TABLE [ONLY] name [*]` (sqlparser cannot parse it as a statement).
    fn table(&self, t: &[Token]) -> Class {
        let mut i = 1 + usize::from(self.kw(t.get(1), "ONLY"));
        match self.qualified_name(t, &mut i) {
            Some(primary_table)
                if matches!(
                    t.get(i..),
                    Some(
                        [] | [Token {
                            kind: Kind::Punct(b'*'),
                            ..
                        }]
                    )
                ) =>
            {
                Class::Read { primary_table }
            }
            _ => self.query(t),
        }
    }

    /// Reads `[schema .] name` at `*i` (advancing past it); returns whether it names a
    /// configured primary table, or `None` if there is no name.
    fn qualified_name(&self, t: &[Token], i: &mut usize) -> Option<bool> {
        let mut parts: Vec<Cow<'_, [u8]>> = Vec::new();
        while let Some(name) = t.get(*i).and_then(|tok| tok.name(self.canon)) {
            parts.push(name);
            *i += 1;
            if t.get(*i).is_some_and(|d| d.kind == Kind::Punct(b'.')) {
                *i += 1;
            } else {
                break;
            }
        }
        let name = parts.last()?;
        let schema = parts.len().checked_sub(2).and_then(|k| parts.get(k));
        Some(self.primary_tables.matches(schema.map(|s| &**s), name))
    }

    /// `COPY (query) TO STDOUT` runs the query; `COPY t [(cols)] TO STDOUT` reads `t`;
    /// `COPY ... FROM` writes; `COPY ... TO 'file' | PROGRAM` acts on the server: a write.
    fn copy(&self, t: &[Token], depth: u8) -> Class {
        if t.get(1).is_some_and(|t| t.kind == Kind::Punct(b'(')) {
            let Some(close) = self.matching(t, 1) else {
                return Class::Write;
            };
            if !(self.kw(t.get(close + 1), "TO") && self.kw(t.get(close + 2), "STDOUT")) {
                return Class::Write;
            }
            return self.executed(t.get(2..close).unwrap_or_default(), depth);
        }
        let Some(dir) = self.find_top(t, 1, |tok| tok.is_any_kw(self.canon, &["FROM", "TO"]))
        else {
            return Class::Write;
        };
        if !(self.kw(t.get(dir), "TO") && self.kw(t.get(dir + 1), "STDOUT")) {
            return Class::Write;
        }
        // The table name: `COPY [BINARY] [schema .] name`.
        let mut i = 1 + usize::from(self.kw(t.get(1), "BINARY"));
        match self.qualified_name(t, &mut i) {
            Some(primary_table) => Class::Read { primary_table },
            None => Class::Write,
        }
    }

    /// `DECLARE name [...] CURSOR [WITH HOLD | WITHOUT HOLD] FOR query`: a cursor `WITH HOLD`
    /// outlives the transaction, so it needs a real session; otherwise it runs its query.
    fn declare(&self, t: &[Token], depth: u8) -> Class {
        let Some(for_at) = self.find_top(t, 1, |tok| tok.is_kw(self.canon, "FOR")) else {
            return Class::Write;
        };
        let options = t.get(1..for_at).unwrap_or_default();
        let with_hold = options.windows(2).any(|w| {
            matches!(w, [with, hold] if with.is_kw(self.canon, "WITH") && hold.is_kw(self.canon, "HOLD"))
        });
        if with_hold {
            return Class::SessionBound;
        }
        self.executed(t.get(for_at + 1..).unwrap_or_default(), depth)
    }

    /// `CREATE [OR REPLACE] [GLOBAL | LOCAL] {TEMP | TEMPORARY} ...` and anything created in
    /// `pg_temp` live only in this session; every other `CREATE` is a write.
    fn create(&self, t: &[Token]) -> Class {
        let mut i = 1;
        if self.kw(t.get(1), "OR") && self.kw(t.get(2), "REPLACE") {
            i = 3;
        }
        if self.any_kw(t.get(i), &["GLOBAL", "LOCAL"]) {
            i += 1;
        }
        let temporary = self.any_kw(t.get(i), &["TEMP", "TEMPORARY"])
            || t.iter().any(|tok| {
                matches!(tok.kind, Kind::Word | Kind::Quoted)
                    && tok.name(self.canon).as_deref() == Some(b"pg_temp")
            });
        if temporary {
            Class::SessionBound
        } else {
            self.write_or_session(t)
        }
    }
}

#[cfg(test)]
mod tests;
