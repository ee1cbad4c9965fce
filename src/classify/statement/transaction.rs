//! Transaction control: `BEGIN` / `START TRANSACTION` (read-only or not), and the
//! statements that end a block or act inside one (`COMMIT`, `ROLLBACK [TO]`, `... AND
//! CHAIN`, `COMMIT PREPARED`).

use super::{Class, Kind, Rules, Token};

impl Rules<'_> {
    /// `BEGIN [WORK | TRANSACTION] [mode [, ...]]` / `START TRANSACTION [mode [, ...]]`;
    /// `rest` starts after `BEGIN` / `START`. Read-only unless SERIALIZABLE, which a hot
    /// standby refuses.
    pub(super) fn begin(&self, rest: &[Token]) -> Class {
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
    pub(super) fn end(&self, t: &[Token]) -> Class {
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
}
