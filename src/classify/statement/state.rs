//! What running a statement may do beyond its class: leave session state pgsplit does not
//! track (so its server connection is reset before reuse), run user code through triggers
//! or rules, and call functions that write or need a real session.

use super::{Class, FnEffect, Kind, Rules, Token};

impl Rules<'_> {
    /// Whether one statement may leave session state that pgsplit does not track, so the
    /// server connection must be reset before another client uses it: `DO`, `CALL` and
    /// `LOAD` run code pgsplit cannot see; `RESET ALL` keeps the role while pgsplit's
    /// settings go back to the server's defaults; `DISCARD` changes what pgsplit knows of
    /// the server; `SET ROLE` / `SET SESSION AUTHORIZATION` (and their `RESET`) change who
    /// the next client would be. Any `;` inside parentheses splits a statement early, which
    /// only finds more.
    pub(super) fn leaves_state(&self, t: &[Token]) -> bool {
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
    pub(super) fn may_run_user_code(&self, class: Class, t: &[Token]) -> bool {
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
    pub(super) fn names_firing_relation(&self, t: &[Token]) -> bool {
        self.functions.any_firing_relation()
            && t.iter().any(|tok| match tok.kind {
                Kind::UnicodeQuoted => true,
                Kind::Word | Kind::Quoted => tok
                    .name(self.canon)
                    .is_some_and(|name| self.functions.fires_user_code(&name)),
                _ => false,
            })
    }

    /// The strongest effect among the calls `name(...)` / `schema.name(...)` in `t`
    /// ([`FnEffect::UserWrite`] is reported as a write and noted in `user_write`).
    /// A call through a `U&"..."` name is treated as a write (its real name is not decoded).
    /// A configured write function also counts in attribute notation, `x.name` (PostgreSQL
    /// calls `name(x)` when `x` has no such column). A name the catalog does not know counts
    /// for nothing here: `name(` may be a table's column list, a type modifier or a keyword;
    /// the parser decides about queries.
    pub(super) fn calls(&self, t: &[Token]) -> Option<FnEffect> {
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
}
