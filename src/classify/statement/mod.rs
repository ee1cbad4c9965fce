//! Statement-level rules over canonical text: split into statements, dispatch on the leading
//! keywords, and combine the classes of a multi-statement string.
//!
//! Most statement kinds are settled here from their keywords alone (transaction control,
//! `SET`/`SHOW`, `LISTEN`, `PREPARE`, DML, DDL, `COPY`, `EXPLAIN`, `DECLARE`); only queries go
//! to the parser (`walk.rs`), and the commonest query shape (a single `SELECT` without
//! parentheses, `INTO`, `FOR` or a primary-table name) is settled here too. The keyword rules
//! also catch what sqlparser cannot read: `FOR NO KEY UPDATE` / `FOR KEY SHARE`, calls of
//! write functions by their `name(` syntax, `CREATE TEMP ...`, `DO`, `VACUUM`, ...
//!
//! The rules by concern: what a statement may do beyond its class (leave session state,
//! call functions that write) in `state.rs`, transaction control in `transaction.rs`,
//! statements that run another (`EXPLAIN ANALYZE`, `COPY (...)`, `DECLARE`) in
//! `wrappers.rs`, and `TABLE` / `CREATE` in `objects.rs`.

mod objects;
mod state;
mod transaction;
mod wrappers;

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
}

#[cfg(test)]
mod tests;
