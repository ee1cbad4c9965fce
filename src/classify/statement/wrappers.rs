//! Statements that wrap another and may run it: `EXPLAIN [ANALYZE]`, `COPY (query) TO`,
//! `DECLARE ... CURSOR FOR`; the class of what they run decides theirs.

use super::{Class, Kind, Rules, Token, READ};

impl Rules<'_> {
    /// The class of a statement wrapped by `EXPLAIN ANALYZE`, `COPY (...) TO STDOUT` or
    /// `DECLARE ... FOR`, which runs it: a read stays a read; anything else is a write,
    /// except that session-bound stays session-bound.
    pub(super) fn executed(&self, inner: &[Token], depth: u8) -> Class {
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
    pub(super) fn explain(&self, t: &[Token], depth: u8) -> Class {
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

    /// `COPY (query) TO STDOUT` runs the query; `COPY t [(cols)] TO STDOUT` reads `t`;
    /// `COPY ... FROM` writes; `COPY ... TO 'file' | PROGRAM` acts on the server: a write.
    pub(super) fn copy(&self, t: &[Token], depth: u8) -> Class {
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
    pub(super) fn declare(&self, t: &[Token], depth: u8) -> Class {
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
}
