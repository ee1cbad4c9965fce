//! Statements named by the relation they touch: `TABLE name` (a read, of a primary table
//! or not) and `CREATE` (temporary objects need a real session; the rest are writes).

use std::borrow::Cow;

use super::{Class, Kind, Rules, Token};

impl Rules<'_> {
    /// `TABLE [ONLY] name [*]` (sqlparser cannot parse it as a statement).
    pub(super) fn table(&self, t: &[Token]) -> Class {
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
    pub(super) fn qualified_name(&self, t: &[Token], i: &mut usize) -> Option<bool> {
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

    /// `CREATE [OR REPLACE] [GLOBAL | LOCAL] {TEMP | TEMPORARY} ...` and anything created in
    /// `pg_temp` live only in this session; every other `CREATE` is a write.
    pub(super) fn create(&self, t: &[Token]) -> Class {
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
