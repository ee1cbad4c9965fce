//! What the primary's `pg_proc` says of each function name: may a call of it write?
//!
//! A `SELECT` that calls a user function may still write (a volatile plpgsql function that
//! inserts), and a replica refuses that. The catalog is a snapshot of every function's
//! schema, name and volatility (`provolatile`: `v` may write, `s` and `i` cannot), loaded from
//! the primary by the IO shell and looked up by the classifier. Overloads and schemas are
//! merged conservatively: SQL text does not say which overload (or, unqualified, which schema
//! on the `search_path`) a call means, so a name is volatile if any function it could mean is.
//! Functions in the system schemas (`pg_catalog`, `information_schema`) are only noted as
//! built-in: the classifier's built-in lists decide about them.
//!
//! The snapshot also names the relations whose writes may run user code the statement does
//! not show: tables with (non-internal) triggers or non-`SELECT` rules, tables whose writes
//! cascade into those (referential actions, inheritance parents), and every view once there
//! is any. Only the relation name counts, in any schema (conservative, as for functions).

use std::collections::{HashMap, HashSet};

/// Schemas whose functions are built-ins.
const SYSTEM_SCHEMAS: &[&str] = &["pg_catalog", "information_schema"];

/// What the catalog knows of a called name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Only built-in functions could be meant.
    BuiltIn,
    /// Some user function it could mean is volatile: it may write.
    Volatile,
    /// Every user function it could mean is stable or immutable: it cannot write.
    ReadOnly,
    /// No function of that name (in that schema): created since the snapshot, or not a
    /// function the primary knows.
    Unknown,
}

/// The user functions of one name: `(schema, volatile)`, one entry per schema.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Named {
    built_in: bool,
    user: Vec<(Box<[u8]>, bool)>,
}

/// A snapshot of the primary's functions, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FunctionCatalog {
    names: HashMap<Box<[u8]>, Named>,
    /// Names of relations whose writes may run user code (triggers, rules).
    firing: HashSet<Box<[u8]>>,
}

impl FunctionCatalog {
    /// Builds the catalog from `pg_proc` rows: schema, name and `provolatile` (`"v"`, `"s"`
    /// or `"i"`; anything else counts as volatile).
    pub fn from_rows<S: AsRef<str>>(rows: impl IntoIterator<Item = (S, S, S)>) -> Self {
        let mut names: HashMap<Box<[u8]>, Named> = HashMap::new();
        for (schema, name, volatility) in rows {
            let (schema, name) = (schema.as_ref(), name.as_ref());
            let named = names.entry(name.as_bytes().into()).or_default();
            if SYSTEM_SCHEMAS.contains(&schema) {
                named.built_in = true;
                continue;
            }
            let volatile = !matches!(volatility.as_ref(), "s" | "i");
            match named
                .user
                .iter_mut()
                .find(|(s, _)| &**s == schema.as_bytes())
            {
                Some((_, v)) => *v |= volatile,
                None => named.user.push((schema.as_bytes().into(), volatile)),
            }
        }
        for named in names.values_mut() {
            named.user.sort();
        }
        FunctionCatalog {
            names,
            firing: HashSet::new(),
        }
    }

    /// The same catalog, noting `relations` (names as in `pg_class.relname`) as relations
    /// whose writes may run user code.
    pub fn with_firing_relations<S: AsRef<str>>(
        mut self,
        relations: impl IntoIterator<Item = S>,
    ) -> Self {
        self.firing
            .extend(relations.into_iter().map(|r| r.as_ref().as_bytes().into()));
        self
    }

    /// Number of distinct relation names whose writes may run user code.
    pub fn firing_relations(&self) -> usize {
        self.firing.len()
    }

    /// Whether a write naming relation `name` (case-folded, any schema) may run user code.
    pub(crate) fn fires_user_code(&self, name: &[u8]) -> bool {
        self.firing.contains(name)
    }

    /// Number of distinct function names.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// What a call of `schema.name` (schema optional, both already case-folded) may do.
    pub(crate) fn lookup(&self, schema: Option<&[u8]>, name: &[u8]) -> Lookup {
        if schema.is_some_and(|s| SYSTEM_SCHEMAS.iter().any(|sys| sys.as_bytes() == s)) {
            return Lookup::BuiltIn;
        }
        let Some(named) = self.names.get(name) else {
            return Lookup::Unknown;
        };
        let mut candidates = named
            .user
            .iter()
            .filter(|(s, _)| schema.is_none_or(|schema| &**s == schema))
            .peekable();
        if candidates.peek().is_none() {
            return if named.built_in && schema.is_none() {
                Lookup::BuiltIn
            } else {
                Lookup::Unknown
            };
        }
        if candidates.any(|(_, volatile)| *volatile) {
            Lookup::Volatile
        } else {
            Lookup::ReadOnly
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> FunctionCatalog {
        FunctionCatalog::from_rows([
            ("pg_catalog", "now", "s"),
            ("pg_catalog", "random", "v"),
            ("pg_catalog", "lower", "i"),
            ("information_schema", "_pg_expandarray", "i"),
            ("public", "add_order", "v"),
            ("public", "price", "s"),
            ("app", "price", "i"),
            // overloads: one volatile makes the name volatile in its schema
            ("app", "touch", "i"),
            ("app", "touch", "v"),
            ("app", "report", "s"),
            ("audit", "report", "v"),
            // a user function shadowing a built-in name
            ("public", "lower", "v"),
            ("public", "Mixed", "s"),
            ("public", "odd", "x"),
        ])
    }

    #[test]
    fn built_ins() {
        let c = catalog();
        assert_eq!(c.lookup(None, b"now"), Lookup::BuiltIn);
        assert_eq!(c.lookup(None, b"random"), Lookup::BuiltIn);
        assert_eq!(c.lookup(Some(b"pg_catalog"), b"now"), Lookup::BuiltIn);
        assert_eq!(c.lookup(Some(b"pg_catalog"), b"anything"), Lookup::BuiltIn);
        assert_eq!(
            c.lookup(Some(b"information_schema"), b"_pg_expandarray"),
            Lookup::BuiltIn
        );
        assert_eq!(c.lookup(Some(b"public"), b"now"), Lookup::Unknown);
    }

    #[test]
    fn user_functions() {
        let c = catalog();
        assert_eq!(c.lookup(None, b"add_order"), Lookup::Volatile);
        assert_eq!(c.lookup(Some(b"public"), b"add_order"), Lookup::Volatile);
        assert_eq!(c.lookup(Some(b"app"), b"add_order"), Lookup::Unknown);
        assert_eq!(c.lookup(None, b"price"), Lookup::ReadOnly);
        assert_eq!(c.lookup(Some(b"app"), b"price"), Lookup::ReadOnly);
        assert_eq!(c.lookup(None, b"Mixed"), Lookup::ReadOnly);
        assert_eq!(c.lookup(None, b"mixed"), Lookup::Unknown);
        assert_eq!(
            c.lookup(None, b"odd"),
            Lookup::Volatile,
            "unknown volatility"
        );
        assert_eq!(c.lookup(None, b"nope"), Lookup::Unknown);
    }

    #[test]
    fn merged_conservatively() {
        let c = catalog();
        assert_eq!(c.lookup(Some(b"app"), b"touch"), Lookup::Volatile);
        assert_eq!(c.lookup(None, b"report"), Lookup::Volatile);
        assert_eq!(c.lookup(Some(b"app"), b"report"), Lookup::ReadOnly);
        assert_eq!(c.lookup(Some(b"audit"), b"report"), Lookup::Volatile);
        assert_eq!(
            c.lookup(None, b"lower"),
            Lookup::Volatile,
            "a volatile user function of a built-in's name could be the one called"
        );
        assert_eq!(c.lookup(Some(b"pg_catalog"), b"lower"), Lookup::BuiltIn);
    }

    #[test]
    fn equal_snapshots_compare_equal() {
        let a = catalog();
        let mut rows = vec![("app", "touch", "v"), ("app", "touch", "i")];
        rows.reverse();
        assert_eq!(a, catalog());
        assert_eq!(
            FunctionCatalog::from_rows(rows.clone()),
            FunctionCatalog::from_rows([("app", "touch", "i"), ("app", "touch", "v")])
        );
        assert_ne!(a, FunctionCatalog::from_rows(rows));
        assert_eq!(a.len(), 10);
        assert!(FunctionCatalog::default().is_empty());
    }

    #[test]
    fn firing_relations() {
        let c = catalog().with_firing_relations(["orders", "Audit", "v_orders"]);
        assert!(c.fires_user_code(b"orders"));
        assert!(c.fires_user_code(b"Audit"));
        assert!(
            !c.fires_user_code(b"audit"),
            "names are compared case-folded"
        );
        assert!(!c.fires_user_code(b"pgbench_accounts"));
        assert!(!catalog().fires_user_code(b"orders"));
        assert_eq!(c.firing_relations(), 3);
        assert_ne!(c, catalog(), "a changed set is a new catalog");
        assert_eq!(
            c,
            catalog().with_firing_relations(["v_orders", "orders", "Audit", "orders"])
        );
    }
}
