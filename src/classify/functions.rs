//! Functions whose call changes where a statement must run, and name matching.
//!
//! A call to a *write function* (`nextval`, `pg_notify`, transaction-level
//! advisory locks, `lo_*`, ...) makes a query a write: it must run on the primary. A call to a
//! *session-bound function* (session-level advisory locks) leaves state in the server session,
//! so the client must be pinned to one primary connection. Other functions are decided by the
//! primary's catalog (`catalog.rs`) once it is loaded: a volatile user function may write, and
//! may leave session state behind; a stable or immutable one, or a built-in that is not listed
//! here, is a read. Before the first load, functions not listed are reads. The configuration
//! adds write functions (which always win) and read-only functions (volatile functions known
//! to be safe on a replica).
//!
//! [`QualifiedNames`] is the matcher for configured names (write functions and primary tables):
//! a configured `name` matches `name` in any schema; a configured `schema.name` matches
//! `schema.name` and the unqualified `name` (which may resolve to it through `search_path`).

use super::catalog::{FunctionCatalog, Lookup};

/// What calling a function does to a statement's class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FnEffect {
    /// The statement must run on the primary.
    Write,
    /// A user function the catalog says is volatile: the statement must run on the primary,
    /// and may leave session state pgsplit does not track.
    UserWrite,
    /// A name the loaded catalog does not know. Where it surely is a call (the parser's
    /// tree), it counts as [`FnEffect::UserWrite`]; a token `name(` may be something else.
    Unknown,
    /// The statement leaves session state behind: pin the client to one primary connection.
    SessionBound,
}

/// Built-in views of the transactions the primary holds: prepared transactions (a replica
/// shows them only once replayed) and locks (a replica's are its readers'). A client that
/// reads them means the primary's (the transaction it just prepared, the locks its writes
/// hold): reads of them run on the primary, as reads of `routing.primary_tables` do.
/// (`pg_stat_activity` is not one: a client's reads run on replicas.)
pub(crate) const PRIMARY_STATE_VIEWS: &[&str] =
    &["pg_catalog.pg_prepared_xacts", "pg_catalog.pg_locks"];

/// Built-in functions that write, fail on a standby, or act on the primary's state.
/// Names are as stored in `pg_proc` (lowercase); matched on the last name component, in any schema.
const BUILTIN_WRITE: &[&str] = &[
    // sequences
    "nextval",
    "setval",
    "currval",
    "lastval",
    // transaction-level advisory locks (released at transaction end)
    "pg_advisory_xact_lock",
    "pg_advisory_xact_lock_shared",
    "pg_try_advisory_xact_lock",
    "pg_try_advisory_xact_lock_shared",
    // notifications, transaction ids
    "pg_notify",
    "txid_current",
    "txid_current_if_assigned",
    "pg_current_xact_id",
    "pg_current_xact_id_if_assigned",
    // WAL and server administration (primary-only or acting on the primary)
    "pg_current_wal_lsn",
    "pg_current_wal_insert_lsn",
    "pg_current_wal_flush_lsn",
    "pg_switch_wal",
    "pg_switch_xlog",
    "pg_create_restore_point",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
    "pg_logical_emit_message",
    "pg_create_physical_replication_slot",
    "pg_create_logical_replication_slot",
    "pg_drop_replication_slot",
    "pg_copy_physical_replication_slot",
    "pg_copy_logical_replication_slot",
    "pg_replication_slot_advance",
    "pg_logical_slot_get_changes",
    "pg_logical_slot_get_binary_changes",
    "pg_import_system_collations",
    "pg_file_write",
    "pg_file_rename",
    "pg_file_unlink",
    // large objects (the lo_* family is matched by prefix below)
    "lowrite",
    // dblink statements that change the remote or local side
    "dblink_exec",
];

/// Prefixes of built-in write function families.
const BUILTIN_WRITE_PREFIXES: &[&str] = &["lo_", "pg_stat_reset", "pg_replication_origin_"];

/// Built-in functions that leave state in the server session.
const BUILTIN_SESSION_BOUND: &[&str] = &[
    // a session-level setting by function, which pgsplit cannot replay
    "set_config",
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "pg_advisory_unlock",
    "pg_advisory_unlock_shared",
    "pg_advisory_unlock_all",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_start_backup",
    "pg_stop_backup",
    "dblink_connect",
    "dblink_connect_u",
];

/// Built-in functions that leave state in the server session which only a reset clears:
/// counted as a volatile user function is (the primary, and the connection reset before
/// reuse). `setseed` seeds the session's `random()`; the reset seeds it afresh.
const BUILTIN_LEAVES_STATE: &[&str] = &["setseed"];

/// The effect of a built-in function, by its (case-folded) unqualified name.
pub(crate) fn builtin_effect(name: &[u8]) -> Option<FnEffect> {
    let is = |list: &[&str]| list.iter().any(|f| f.as_bytes() == name);
    if is(BUILTIN_SESSION_BOUND) {
        return Some(FnEffect::SessionBound);
    }
    if is(BUILTIN_LEAVES_STATE) {
        return Some(FnEffect::UserWrite);
    }
    if is(BUILTIN_WRITE)
        || BUILTIN_WRITE_PREFIXES
            .iter()
            .any(|p| name.starts_with(p.as_bytes()))
    {
        return Some(FnEffect::Write);
    }
    None
}

/// One configured name: an optional schema and the object's name.
type Entry = (Option<Box<[u8]>>, Box<[u8]>);

/// A set of possibly schema-qualified names, as configured (`name` or `schema.name`).
#[derive(Debug, Clone, Default)]
pub(crate) struct QualifiedNames {
    entries: Vec<Entry>,
}

impl QualifiedNames {
    /// Builds the set from configured names. Each is `name` or `schema.name`; surrounding
    /// whitespace is ignored and empty names are skipped. Names are compared byte for byte with
    /// the case-folded SQL name (unquoted identifiers fold to lowercase, as in `pg_proc`/`pg_class`).
    pub(crate) fn new<S: AsRef<str>>(names: &[S]) -> Self {
        let mut entries = Vec::new();
        for raw in names {
            let raw = raw.as_ref().trim();
            let (schema, name) = match raw.rsplit_once('.') {
                Some((schema, name)) => (Some(schema.trim()), name.trim()),
                None => (None, raw),
            };
            if name.is_empty() {
                continue;
            }
            let schema = schema
                .filter(|s| !s.is_empty())
                .map(|s| s.as_bytes().to_vec().into_boxed_slice());
            entries.push((schema, name.as_bytes().to_vec().into_boxed_slice()));
        }
        QualifiedNames { entries }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether an SQL reference `schema.name` (schema optional, both already case-folded)
    /// matches a configured name.
    pub(crate) fn matches(&self, schema: Option<&[u8]>, name: &[u8]) -> bool {
        self.entries.iter().any(|(s, n)| {
            &**n == name
                && match (s, schema) {
                    (Some(s), Some(schema)) => &**s == schema,
                    _ => true,
                }
        })
    }

    /// Whether any configured entry has this unqualified name (a cheap pre-check on identifiers).
    pub(crate) fn has_name(&self, name: &[u8]) -> bool {
        self.entries.iter().any(|(_, n)| &**n == name)
    }
}

/// SQL constructs that look like function calls in sqlparser's tree but are not in
/// `pg_proc` (so the catalog would not know them): built-in syntax, never user functions.
const SYNTAX: &[&str] = &[
    "coalesce",
    "greatest",
    "least",
    "nullif",
    "current_date",
    "current_time",
    "current_timestamp",
    "localtime",
    "localtimestamp",
    "current_role",
    "current_catalog",
    "user",
    "grouping",
    "xmlelement",
    "xmlforest",
    "xmlconcat",
    "xmlparse",
    "xmlpi",
    "xmlroot",
    "xmlserialize",
    "xmlexists",
    "trim",
    "position",
    "extract",
    "cast",
    "treat",
    "row",
    "array",
    "json_object",
    "json_array",
    "json_objectagg",
    "json_arrayagg",
];

/// The built-in lists, the configured lists and the primary's catalog (once loaded).
#[derive(Debug, Clone, Default)]
pub(crate) struct Functions {
    extra_write: QualifiedNames,
    read_only: QualifiedNames,
    catalog: Option<FunctionCatalog>,
}

impl Functions {
    pub(crate) fn new<S: AsRef<str>>(extra_write: &[S], read_only: &[S]) -> Self {
        Functions {
            extra_write: QualifiedNames::new(extra_write),
            read_only: QualifiedNames::new(read_only),
            catalog: None,
        }
    }

    /// The same lists with `catalog`; `None` if it is the catalog already in use.
    pub(crate) fn with_catalog(&self, catalog: FunctionCatalog) -> Option<Self> {
        if self.catalog.as_ref() == Some(&catalog) {
            return None;
        }
        Some(Functions {
            extra_write: self.extra_write.clone(),
            read_only: self.read_only.clone(),
            catalog: Some(catalog),
        })
    }

    /// Whether any write function is configured.
    pub(crate) fn any_configured(&self) -> bool {
        !self.extra_write.is_empty()
    }

    /// Whether `name` is a configured write function's name. Such a function taking a row
    /// type can be called without parentheses, in attribute notation (`SELECT t.f FROM t`).
    pub(crate) fn is_configured(&self, name: &[u8]) -> bool {
        self.extra_write.has_name(name)
    }

    /// Whether the primary's catalog has been loaded.
    pub(crate) fn catalog_loaded(&self) -> bool {
        self.catalog.is_some()
    }

    /// Whether the loaded catalog names any relation whose writes may run user code.
    pub(crate) fn any_firing_relation(&self) -> bool {
        self.catalog
            .as_ref()
            .is_some_and(|c| c.firing_relations() > 0)
    }

    /// Whether the loaded catalog says a write naming relation `name` (case-folded, any
    /// schema) may run user code (triggers, rules).
    pub(crate) fn fires_user_code(&self, name: &[u8]) -> bool {
        self.catalog
            .as_ref()
            .is_some_and(|c| c.fires_user_code(name))
    }

    /// The effect of calling `schema.name(...)`; both parts already case-folded. In order:
    /// the built-in lists, configured write functions, configured read-only functions, then
    /// the catalog.
    pub(crate) fn effect(&self, schema: Option<&[u8]>, name: &[u8]) -> Option<FnEffect> {
        if let Some(effect) = builtin_effect(name) {
            return Some(effect);
        }
        if self.extra_write.matches(schema, name) {
            return Some(FnEffect::Write);
        }
        if self.read_only.matches(schema, name) {
            return None;
        }
        match self.catalog.as_ref()?.lookup(schema, name) {
            Lookup::Volatile => Some(FnEffect::UserWrite),
            Lookup::Unknown if schema.is_none() && SYNTAX.iter().any(|s| s.as_bytes() == name) => {
                None
            }
            Lookup::Unknown => Some(FnEffect::Unknown),
            Lookup::BuiltIn | Lookup::ReadOnly => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins() {
        assert_eq!(builtin_effect(b"nextval"), Some(FnEffect::Write));
        assert_eq!(builtin_effect(b"setseed"), Some(FnEffect::UserWrite));
        assert_eq!(builtin_effect(b"lo_import"), Some(FnEffect::Write));
        assert_eq!(builtin_effect(b"lowrite"), Some(FnEffect::Write));
        assert_eq!(
            builtin_effect(b"pg_stat_reset_shared"),
            Some(FnEffect::Write)
        );
        assert_eq!(
            builtin_effect(b"pg_advisory_xact_lock"),
            Some(FnEffect::Write)
        );
        assert_eq!(
            builtin_effect(b"pg_try_advisory_xact_lock_shared"),
            Some(FnEffect::Write)
        );
        assert_eq!(
            builtin_effect(b"pg_advisory_lock"),
            Some(FnEffect::SessionBound)
        );
        assert_eq!(
            builtin_effect(b"pg_try_advisory_lock_shared"),
            Some(FnEffect::SessionBound)
        );
        assert_eq!(builtin_effect(b"now"), None);
        assert_eq!(builtin_effect(b"loread"), None);
        assert_eq!(
            builtin_effect(b"NEXTVAL"),
            None,
            "names are case-folded by the caller"
        );
    }

    #[test]
    fn qualified_names() {
        let names = QualifiedNames::new(&["inventory", "shop.stock", " ", "x."]);
        assert!(names.matches(None, b"inventory"));
        assert!(names.matches(Some(b"public"), b"inventory"));
        assert!(names.matches(None, b"stock"));
        assert!(names.matches(Some(b"shop"), b"stock"));
        assert!(!names.matches(Some(b"other"), b"stock"));
        assert!(!names.matches(None, b"orders"));
        assert!(names.has_name(b"stock"));
        assert!(!names.has_name(b"x"));
        assert!(QualifiedNames::new::<&str>(&[]).is_empty());
    }

    #[test]
    fn configured_functions() {
        let f = Functions::new(&["audit.log_event", "bump"], &[]);
        assert_eq!(f.effect(None, b"bump"), Some(FnEffect::Write));
        assert_eq!(f.effect(Some(b"x"), b"bump"), Some(FnEffect::Write));
        assert_eq!(
            f.effect(Some(b"audit"), b"log_event"),
            Some(FnEffect::Write)
        );
        assert_eq!(f.effect(None, b"log_event"), Some(FnEffect::Write));
        assert_eq!(f.effect(Some(b"other"), b"log_event"), None);
        assert_eq!(
            f.effect(Some(b"pg_catalog"), b"nextval"),
            Some(FnEffect::Write)
        );
        assert_eq!(f.effect(None, b"lower"), None);
        assert!(f.is_configured(b"log_event"));
        assert!(!f.is_configured(b"nextval"));
    }

    #[test]
    fn with_a_catalog() {
        let plain = Functions::new(&["app.bump"], &["app.safe_random", "uuid_generate_v4"]);
        assert_eq!(plain.effect(None, b"add_order"), None, "no catalog yet");
        let f = plain
            .with_catalog(FunctionCatalog::from_rows([
                ("pg_catalog", "random", "v"),
                ("pg_catalog", "now", "s"),
                ("pg_catalog", "nextval", "v"),
                ("public", "add_order", "v"),
                ("public", "price", "s"),
                ("app", "bump", "i"),
                ("app", "safe_random", "v"),
                ("ext", "uuid_generate_v4", "v"),
            ]))
            .expect("a new catalog");
        assert_eq!(f.effect(None, b"add_order"), Some(FnEffect::UserWrite));
        assert_eq!(
            f.effect(Some(b"public"), b"add_order"),
            Some(FnEffect::UserWrite)
        );
        assert_eq!(f.effect(None, b"price"), None);
        assert_eq!(f.effect(None, b"random"), None, "a built-in not listed");
        assert_eq!(f.effect(None, b"now"), None);
        assert_eq!(f.effect(None, b"nextval"), Some(FnEffect::Write));
        assert_eq!(
            f.effect(None, b"bump"),
            Some(FnEffect::Write),
            "write_functions wins over the catalog"
        );
        assert_eq!(
            f.effect(Some(b"app"), b"safe_random"),
            None,
            "read_only_functions"
        );
        assert_eq!(f.effect(None, b"uuid_generate_v4"), None);
        assert_eq!(
            f.effect(Some(b"other"), b"safe_random"),
            Some(FnEffect::Unknown)
        );
        assert_eq!(f.effect(None, b"created_later"), Some(FnEffect::Unknown));
        assert_eq!(f.effect(None, b"coalesce"), None, "syntax, not in pg_proc");
        assert!(f
            .with_catalog(f.catalog.clone().unwrap_or_default())
            .is_none());
    }
}
