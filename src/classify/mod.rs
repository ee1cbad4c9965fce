//! SQL text -> statement class, for routing: may this run on a replica, must it run on the
//! primary, does it open or close a transaction, or does it need a real session?
//!
//! Pure and IO-free. [`Classifier::classify`] takes the raw bytes of a simple-protocol `Query`
//! or of a `Parse` message's SQL and returns a [`Classification`]. The path it takes:
//!
//! 1. `lexer.rs` scans the bytes once into *canonical text*: literals become `''` / `0`,
//!    comments go, whitespace collapses. It also notes a leading `/* pgsplit:primary */` hint.
//!    Unterminated quotes or comments and control bytes make the statement a write.
//! 2. `cache.rs` looks the canonical text up (bounded, sharded, CLOCK eviction). The class is a
//!    function of the canonical text alone, so statements that differ only in literal values
//!    (pgbench with random ids, ORMs that inline literals) share one entry.
//! 3. On a miss, `statement.rs` splits the text into statements and applies keyword rules:
//!    transaction control, session statements, DML, DDL, `COPY`, `EXPLAIN`, `DECLARE`,
//!    locking clauses sqlparser cannot read (`FOR NO KEY UPDATE`, `FOR KEY SHARE`), and calls
//!    of the functions in `functions.rs`. A plain `SELECT` without parentheses is settled there;
//!    other queries are parsed with sqlparser and walked whole by `walk.rs`.
//! 4. Functions that are neither built-in nor configured are looked up in the primary's
//!    catalog (`catalog.rs`), which the IO shell loads and refreshes with
//!    [`Classifier::set_catalog`]: a volatile user function makes a write that may leave
//!    session state. So does a write naming a relation the catalog says may run user code
//!    (triggers, rules). A new catalog starts a new cache generation.
//!
//! Unknown or unparsable SQL is a [`Class::Write`]: it goes to the primary.

mod cache;
mod catalog;
mod functions;
mod lexer;
mod statement;
mod walk;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::lock::RwLocked;
use cache::Cache;
pub use catalog::FunctionCatalog;
use functions::{Functions, QualifiedNames};

/// The SQL lexer, for everything else in pgsplit that reads SQL text.
pub(crate) use lexer::{
    dotted_name, short_command, source_tokens, statements, Kind as TokenKind, Token,
};

/// The longest SQL text a session reads on its event loop (parsing it takes a few
/// milliseconds at most); longer text is read on a blocking thread.
pub const ON_LOOP: usize = 8 * 1024;

/// The longest statement text the classifier reads; longer ones run on the primary.
/// (Parsing takes about 2 µs a token: callers classify long text off the event loop.)
pub const MAX_CLASSIFIED: usize = 256 * 1024;

/// The deepest a statement's parse tree may nest for the classifier to parse it (see
/// [`nesting_bound`]); deeper ones run on the primary. Parsing, walking and dropping a
/// tree recurse as deep as it nests: 50,000 levels overflow a 2 MiB thread stack.
pub const MAX_NESTING: usize = 10_000;

/// A bound on how deep the parse tree of canonical text can nest: a level per operator
/// character, opening parenthesis and `AND` / `OR` / `NOT` word.
fn nesting_bound(canon: &[u8]) -> usize {
    let operators = canon
        .iter()
        .filter(|b| b"+-*/%^<>=|&~!(".contains(b))
        .count();
    let words = canon
        .split(|b| !b.is_ascii_alphabetic())
        .filter(|w| {
            w.eq_ignore_ascii_case(b"and")
                || w.eq_ignore_ascii_case(b"or")
                || w.eq_ignore_ascii_case(b"not")
        })
        .count();
    operators + words
}

/// What a statement (or a multi-statement string) needs from the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// A plain read: may run on a replica. `primary_table` is true when it touches a
    /// configured primary_tables table (must then run on the primary).
    Read { primary_table: bool },
    /// Writes, DDL, locking reads, SELECT INTO, data-modifying CTEs, write functions,
    /// EXPLAIN ANALYZE of a write, DO, CALL, COPY FROM, VACUUM, anything unparsable: the primary.
    Write,
    /// `BEGIN` / `START TRANSACTION`; `read_only` when `READ ONLY` is given (also
    /// `BEGIN ISOLATION LEVEL ... READ ONLY`).
    Begin { read_only: bool },
    /// Transaction control that ends a block: `COMMIT` / `END` / `ROLLBACK` / `ABORT` /
    /// `PREPARE TRANSACTION`.
    End,
    /// Transaction control inside a block: `SAVEPOINT`, `RELEASE`, `ROLLBACK TO`, `COMMIT AND
    /// CHAIN` / `ROLLBACK AND CHAIN` (the block goes on), and cursor `FETCH` / `MOVE` / `CLOSE`
    /// (they run where the cursor's transaction or pinned session is).
    TransactionControl,
    /// `SET` / `RESET` / `SHOW` / `DISCARD`: session utility statements that can run anywhere
    /// (the proxy replays settings itself).
    Session,
    /// Needs a real session: `LISTEN`/`UNLISTEN`, `CREATE TEMP` table/view/sequence (and
    /// `SELECT INTO TEMP`, anything created in `pg_temp`), session-level advisory locks, SQL-level
    /// `PREPARE` / `EXECUTE` / `DEALLOCATE`, `DECLARE ... WITH HOLD`. The client gets pinned
    /// to one primary connection.
    SessionBound,
}

/// The result of [`Classifier::classify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Classification {
    pub class: Class,
    /// The text starts (after whitespace and other comments) with `/* pgsplit:primary */`.
    pub hint_primary: bool,
    /// Running it may leave session state that pgsplit does not track (`DO`, `CALL`, `LOAD`,
    /// `RESET ALL`, `DISCARD`, `SET ROLE`, `SET SESSION AUTHORIZATION`, volatile user
    /// functions, writes to relations with triggers or rules, ...): the server
    /// connection it ran on is reset before another client gets it.
    pub leaves_state: bool,
}

impl Classification {
    /// What pgsplit assumes of SQL it cannot see or read: a write that may leave session
    /// state behind.
    pub const UNKNOWN: Classification = Classification {
        class: Class::Write,
        hint_primary: false,
        leaves_state: true,
    };

    /// A statement of `class` with no hint that leaves no untracked state.
    pub const fn of(class: Class) -> Classification {
        Classification {
            class,
            hint_primary: false,
            leaves_state: false,
        }
    }
}

/// What the statement rules find in a canonical text; cached by that text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    pub class: Class,
    /// See [`Classification::leaves_state`].
    pub leaves_state: bool,
}

/// Configuration of a [`Classifier`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifierOptions {
    /// Extra write functions, as stored in `pg_proc` (unquoted names are lowercase), `name`
    /// (any schema) or `schema.name` (that schema, or unqualified). They always win.
    pub write_functions: Vec<String>,
    /// Functions that are reads whatever the catalog says (volatile functions known to be
    /// safe on a replica); names as in `write_functions`.
    pub read_only_functions: Vec<String>,
    /// Tables whose reads must run on the primary, `name` (any schema) or `schema.name`
    /// (that schema, or unqualified).
    pub primary_tables: Vec<String>,
    /// Maximum number of cached statement shapes; 0 disables the cache.
    pub cache_capacity: usize,
    /// Canonical texts longer than this many bytes are classified but not cached, which bounds
    /// the cache's memory to about `cache_capacity * max_cached_len`.
    pub max_cached_len: usize,
}

impl Default for ClassifierOptions {
    fn default() -> Self {
        ClassifierOptions {
            write_functions: Vec::new(),
            read_only_functions: Vec::new(),
            primary_tables: Vec::new(),
            cache_capacity: 10_000,
            max_cached_len: 4096,
        }
    }
}

/// Cache counters, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Statements classified afresh (including those that could not be cached).
    pub misses: u64,
    /// Statement shapes currently cached.
    pub entries: usize,
}

/// The function lists in force and the cache generation they belong to.
struct Generation {
    number: u64,
    functions: Functions,
}

/// Classifies SQL text; shared by all sessions (`Send + Sync`, `&self`).
pub struct Classifier {
    functions: RwLock<Arc<Generation>>,
    /// `functions`' generation number, read on every call without the lock; set after it.
    generation: AtomicU64,
    /// Classifications that met a function the loaded catalog does not know, or DDL that
    /// may change what it says.
    refresh_requests: AtomicU64,
    primary_tables: QualifiedNames,
    cache: Cache,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Classifier {
    pub fn new(options: ClassifierOptions) -> Self {
        Classifier {
            functions: RwLock::new(Arc::new(Generation {
                number: 0,
                functions: Functions::new(&options.write_functions, &options.read_only_functions),
            })),
            generation: AtomicU64::new(0),
            refresh_requests: AtomicU64::new(0),
            primary_tables: QualifiedNames::new(
                &options
                    .primary_tables
                    .iter()
                    .map(String::as_str)
                    .chain(functions::PRIMARY_STATE_VIEWS.iter().copied())
                    .collect::<Vec<_>>(),
            ),
            cache: Cache::new(options.cache_capacity, options.max_cached_len),
        }
    }

    /// Puts a (re)loaded catalog of the primary's functions in force. Returns whether it
    /// differs from the one in force; if so, earlier classifications are no longer used.
    pub fn set_catalog(&self, catalog: FunctionCatalog) -> bool {
        let mut current = self.functions.write_locked();
        let Some(functions) = current.functions.with_catalog(catalog) else {
            return false;
        };
        let number = current.number + 1;
        *current = Arc::new(Generation { number, functions });
        self.generation.store(number, Ordering::Release);
        true
    }

    /// How many different catalogs have been put in force; 0 until the first load.
    pub fn catalog_generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// How many classifications met a function the loaded catalog does not know, or DDL
    /// (`CREATE`, `ALTER`) that may change what it says: when this grows, the catalog may be
    /// stale.
    pub fn catalog_refresh_requests(&self) -> u64 {
        self.refresh_requests.load(Ordering::Relaxed)
    }

    fn current(&self) -> Arc<Generation> {
        self.functions.read_locked().clone()
    }

    /// Classifies one simple-protocol query string or one prepared statement's SQL.
    /// Never panics; bytes need not be UTF-8. Text longer than [`MAX_CLASSIFIED`] is not
    /// read at all: it runs on the primary (reading it would hold up every other client
    /// served by the same thread).
    pub fn classify(&self, sql: &[u8]) -> Classification {
        self.classify_or_parse(sql, true)
            .unwrap_or(Classification::UNKNOWN)
    }

    /// Classifies `sql` if that takes no parsing (its shape is cached, or the text is
    /// refused as too long or too deep); None when it would have to be parsed. Lexing is
    /// cheap (milliseconds a megabyte), parsing is not: long text that is not cached yet
    /// is classified off the event loop.
    pub fn classify_cached(&self, sql: &[u8]) -> Option<Classification> {
        self.classify_or_parse(sql, false)
    }

    fn classify_or_parse(&self, sql: &[u8], parse: bool) -> Option<Classification> {
        if sql.len() > MAX_CLASSIFIED {
            self.cache.count_miss();
            return Some(Classification::UNKNOWN);
        }
        // The canonical text goes into a buffer this thread keeps: a statement found in
        // the cache (nearly all of them) costs no allocation.
        let mut canon = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
        canon.clear();
        let classified = self.classify_canonical(sql, parse, &mut canon);
        if canon.capacity() <= SCRATCH_KEPT {
            SCRATCH.with(|s| *s.borrow_mut() = canon);
        }
        classified
    }

    fn classify_canonical(
        &self,
        sql: &[u8],
        parse: bool,
        canon: &mut Vec<u8>,
    ) -> Option<Classification> {
        let scan = lexer::canonicalize(sql, true, canon);
        let write = Classification {
            hint_primary: scan.hint_primary,
            ..Classification::UNKNOWN
        };
        if scan.result.is_err() {
            self.cache.count_miss();
            return Some(write);
        }
        if scan.plain_backslash {
            // With standard_conforming_strings off, `'a\'` would not end where we think it
            // does. If that reading is valid too and differs, we cannot know which the server
            // uses: a write. (If it is not valid, such a server rejects the statement anyway.)
            let mut alternative = Vec::with_capacity(sql.len());
            let other = lexer::canonicalize(sql, false, &mut alternative);
            if other.result.is_ok() && alternative != *canon {
                self.cache.count_miss();
                return Some(write);
            }
        }
        let hash = self.cache.hash(canon);
        let generation = self.generation.load(Ordering::Acquire);
        let shape = match self.cache.get(hash, canon, generation) {
            Some(shape) => shape,
            None if nesting_bound(canon) > MAX_NESTING => {
                self.cache.count_miss();
                return Some(write);
            }
            None if !parse => return None,
            None => {
                let current = self.current();
                let outcome = statement::classify(canon, &current.functions, &self.primary_tables);
                if outcome.unknown_function || outcome.changes_catalog {
                    self.refresh_requests.fetch_add(1, Ordering::Relaxed);
                }
                self.cache
                    .insert(hash, canon.clone(), outcome.shape, current.number);
                outcome.shape
            }
        };
        Some(Classification {
            class: shape.class,
            hint_primary: scan.hint_primary,
            leaves_state: shape.leaves_state,
        })
    }

    pub fn stats(&self) -> CacheStats {
        self.cache.stats()
    }
}

thread_local! {
    /// Each thread's buffer for the canonical text of the statement it classifies.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The largest scratch buffer a thread keeps (a larger one, grown for a long statement,
/// is freed).
const SCRATCH_KEPT: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    const READ: Class = Class::Read {
        primary_table: false,
    };

    fn classifier() -> Classifier {
        Classifier::new(ClassifierOptions {
            primary_tables: vec!["inventory".into()],
            write_functions: vec!["app.bump".into()],
            ..ClassifierOptions::default()
        })
    }

    #[test]
    fn reads_of_the_nodes_own_state_go_to_the_primary() {
        let c = Classifier::new(ClassifierOptions::default());
        let primary = Class::Read {
            primary_table: true,
        };
        for sql in [
            "select gid from pg_prepared_xacts where database = $1",
            "SELECT count(*) FROM pg_catalog.pg_prepared_xacts",
            "select * from pg_locks l join pg_class c on c.oid = l.relation",
        ] {
            assert_eq!(c.classify(sql.as_bytes()).class, primary, "{sql}");
        }
        assert_eq!(c.classify(b"select * from pg_class").class, READ);
        assert_eq!(c.classify(b"select * from pg_stat_activity").class, READ);
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Classifier>();
    }

    #[test]
    fn text_over_the_bound_is_not_read_and_runs_on_the_primary() {
        let c = classifier();
        let pad = "x".repeat(MAX_CLASSIFIED);
        let big = format!("SELECT length('{pad}')");
        assert_eq!(c.classify(big.as_bytes()), Classification::UNKNOWN);
        let fits = format!("SELECT length('{}')", &pad[..MAX_CLASSIFIED - 100]);
        assert_eq!(c.classify(fits.as_bytes()).class, READ);
    }

    #[test]
    fn only_cached_shapes_are_classified_without_parsing() {
        let c = classifier();
        let sql = b"SELECT abalance FROM pgbench_accounts WHERE aid = 1";
        assert_eq!(c.classify_cached(sql), None);
        assert_eq!(c.classify(sql).class, READ);
        let other_literal = b"SELECT abalance FROM pgbench_accounts WHERE aid = 2";
        assert_eq!(
            c.classify_cached(other_literal).map(|c| c.class),
            Some(READ)
        );
        let deep = format!("select {}1", "a+".repeat(MAX_NESTING + 1));
        assert_eq!(
            c.classify_cached(deep.as_bytes()),
            Some(Classification::UNKNOWN),
            "refusing takes no parsing"
        );
    }

    #[test]
    fn text_that_may_nest_deeper_than_the_bound_is_not_parsed() {
        let c = classifier();
        // Each of these nests a level per term: parsed, 50,000 overflow a thread's stack.
        for term in ["a+", "a=1 or ", "not ", "("] {
            let deep = format!("select {}1", term.repeat(MAX_NESTING + 1));
            assert_eq!(
                c.classify(deep.as_bytes()),
                Classification::UNKNOWN,
                "{term}"
            );
        }
        let list = format!("select 1 where 1 in ({}1)", "1,".repeat(MAX_NESTING * 2));
        assert_eq!(
            c.classify(list.as_bytes()).class,
            READ,
            "a long list is flat"
        );
        let shallow = format!("select {}1", "a+".repeat(1000));
        assert_eq!(c.classify(shallow.as_bytes()).class, READ);
    }

    #[test]
    fn literals_share_a_cache_entry() {
        let c = classifier();
        for aid in [1, 42, 99_999, 7] {
            let sql = format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid};");
            assert_eq!(c.classify(sql.as_bytes()).class, READ);
        }
        assert_eq!(
            c.stats(),
            CacheStats {
                hits: 3,
                misses: 1,
                entries: 1
            }
        );
    }

    #[test]
    fn hint_is_per_call_not_cached() {
        let c = classifier();
        let hinted = c.classify(b"/* pgsplit:primary */ SELECT 1");
        assert_eq!(
            hinted,
            Classification {
                class: READ,
                hint_primary: true,
                leaves_state: false
            }
        );
        let plain = c.classify(b"SELECT 1");
        assert_eq!(plain, Classification::of(READ));
        assert_eq!(c.stats().hits, 1);
        let broken = c.classify(b"/* pgsplit:primary */ SELECT 'unterminated");
        assert_eq!(
            broken,
            Classification {
                class: Class::Write,
                hint_primary: true,
                leaves_state: true
            }
        );
    }

    #[test]
    fn empty_and_comment_only_are_reads() {
        let c = classifier();
        assert_eq!(c.classify(b"").class, READ);
        assert_eq!(c.classify(b"  -- nothing\n").class, READ);
        assert_eq!(c.classify(b";").class, READ);
    }

    #[test]
    fn backslash_ambiguity_is_a_write() {
        let c = classifier();
        // standard_conforming_strings on: a read of two strings; off: a string, then DELETE.
        let sql = b"SELECT '\\' , '; DELETE FROM t; --'";
        assert_eq!(c.classify(sql).class, Class::Write);
        // A backslash that means the same either way (LIKE escapes) is fine, and so is one
        // that makes the other reading invalid.
        assert_eq!(
            c.classify(b"SELECT * FROM t WHERE a LIKE '50\\%' ESCAPE '\\'")
                .class,
            READ
        );
        assert_eq!(
            c.classify(b"SELECT * FROM t WHERE a LIKE 'x\\_y%'").class,
            READ
        );
        assert_eq!(c.classify(b"SELECT E'\\''").class, READ);
    }

    #[test]
    fn literal_contents_never_change_the_class() {
        let c = classifier();
        assert_eq!(c.classify(b"SELECT 'nextval(1)'").class, READ);
        assert_eq!(c.classify(b"SELECT $$; DELETE FROM t$$").class, READ);
        assert_eq!(c.classify(b"SELECT '; DELETE FROM t'").class, READ);
        assert_eq!(c.classify(b"SELECT nextval('s')").class, Class::Write);
        assert_eq!(c.classify(b"SELECT \"a;b\" FROM t").class, READ);
        assert_eq!(c.classify(b"SELECT 1 /* ; DELETE FROM t */").class, READ);
    }

    #[test]
    fn set_config_pins_wherever_it_is_called() {
        let c = classifier();
        let class = |sql: &str| c.classify(sql.as_bytes()).class;
        for sql in [
            "SELECT set_config('a.b', '1', false)",
            "select PG_CATALOG.Set_Config /* x */ ('a.b', '1', false)",
            r#"select 1; select "set_config"('a.b', '1', true)"#,
            "SELECT * FROM t WHERE set_config('a.b', '1', true) IS NOT NULL",
        ] {
            assert_eq!(class(sql), Class::SessionBound, "{sql}");
        }
        for sql in [
            "SELECT 'set_config(1)'",
            "SELECT 1 /* set_config( */ -- set_config(\n",
            "SELECT set_config FROM t",
            "SELECT $$set_config($$",
            "SELECT my_set_config(1)",
        ] {
            assert_ne!(class(sql), Class::SessionBound, "{sql}");
        }
    }

    #[test]
    fn configured_names() {
        let c = classifier();
        assert_eq!(c.classify(b"SELECT app.bump(1)").class, Class::Write);
        assert_eq!(c.classify(b"SELECT other.bump(1)").class, READ);
        assert_eq!(
            c.classify(b"SELECT qty FROM inventory WHERE id = 1").class,
            Class::Read {
                primary_table: true
            }
        );
        assert_eq!(
            c.classify(b"SELECT inventory FROM t WHERE id = 1").class,
            READ,
            "a column named like the table: the parser tells them apart"
        );
    }

    #[test]
    fn non_utf8_input() {
        let c = classifier();
        assert_eq!(
            c.classify(b"SELECT * FROM t WHERE x = '\xe9t\xe9'").class,
            READ
        );
        assert_eq!(c.classify(b"SELECT caf\xe9 FROM t").class, READ);
        // Needs the parser, which reads the LATIN1 name as replacement characters.
        assert_eq!(c.classify(b"SELECT lower(caf\xe9) FROM t").class, READ);
        assert_eq!(
            c.classify(b"SELECT nextval(caf\xe9) FROM t").class,
            Class::Write
        );
    }

    #[test]
    fn disabled_cache_still_classifies() {
        let c = Classifier::new(ClassifierOptions {
            cache_capacity: 0,
            ..ClassifierOptions::default()
        });
        assert_eq!(c.classify(b"SELECT 1").class, READ);
        assert_eq!(c.classify(b"SELECT 1").class, READ);
        assert_eq!(
            c.stats(),
            CacheStats {
                hits: 0,
                misses: 2,
                entries: 0
            }
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        let c = Classifier::new(ClassifierOptions {
            cache_capacity: 64,
            ..ClassifierOptions::default()
        });
        // xorshift: deterministic, no dependency
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet =
            b"SELECTFROMWHEREFORUPDATEINTOnextval()'\"$;:,.-/*\\ \n\tEeUu&0123456789\x00\xff";
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    if r % 4 == 0 {
                        (r >> 8) as u8
                    } else {
                        alphabet[(r >> 8) as usize % alphabet.len()]
                    }
                })
                .collect();
            let _ = c.classify(&bytes);
        }
    }

    #[test]
    fn many_threads_share_one_classifier() {
        let c = Classifier::new(ClassifierOptions {
            cache_capacity: 100,
            ..ClassifierOptions::default()
        });
        std::thread::scope(|scope| {
            for thread in 0..8 {
                let c = &c;
                scope.spawn(move || {
                    for i in 0..2_000 {
                        // 300 shapes through a 100-entry cache: hits, misses and evictions.
                        let sql = format!("SELECT c{} FROM t{thread} WHERE id = {i}", i % 300);
                        assert_eq!(c.classify(sql.as_bytes()).class, READ);
                        let sql = format!("UPDATE t{thread} SET c{} = {i}", i % 7);
                        assert_eq!(c.classify(sql.as_bytes()).class, Class::Write);
                    }
                });
            }
        });
        let stats = c.stats();
        assert_eq!(stats.hits + stats.misses, 8 * 2 * 2_000);
        assert!(stats.entries <= 100);
    }

    fn with_catalog() -> Classifier {
        let c = Classifier::new(ClassifierOptions {
            write_functions: vec!["app.bump".into()],
            read_only_functions: vec!["app.jitter".into()],
            ..ClassifierOptions::default()
        });
        c.set_catalog(FunctionCatalog::from_rows([
            ("pg_catalog", "now", "s"),
            ("pg_catalog", "random", "v"),
            ("pg_catalog", "pg_is_in_recovery", "v"),
            ("pg_catalog", "nextval", "v"),
            ("pg_catalog", "count", "i"),
            ("app", "add_order", "v"),
            ("app", "price", "s"),
            ("app", "bump", "i"),
            ("app", "jitter", "v"),
        ]));
        c
    }

    const USER_WRITE: Classification = Classification {
        class: Class::Write,
        hint_primary: false,
        leaves_state: true,
    };

    #[test]
    fn before_the_catalog_user_functions_are_reads() {
        let c = classifier();
        // A read, but any function may be a user function that leaves state, and any write
        // may fire a trigger: their connections are reset.
        let may_leave_state = |class| Classification {
            leaves_state: true,
            ..Classification::of(class)
        };
        assert_eq!(c.classify(b"SELECT add_order(1)"), may_leave_state(READ));
        assert_eq!(
            c.classify(b"INSERT INTO t VALUES (1)"),
            may_leave_state(Class::Write)
        );
        assert_eq!(c.classify(b"SELECT a FROM t"), Classification::of(READ));
        assert_eq!(c.catalog_refresh_requests(), 0);
    }

    #[test]
    fn volatile_user_functions_write_and_leave_state() {
        let c = with_catalog();
        for sql in [
            "SELECT add_order(1)",
            "SELECT app.add_order(1)",
            "SELECT * FROM t WHERE id = (SELECT add_order(id))",
            "SELECT * FROM add_order(1)",
            "SELECT count(*) FROM t WHERE add_order(id) > 0",
            "EXPLAIN ANALYZE SELECT add_order(1)",
            "INSERT INTO t VALUES (add_order(1))",
            "SELECT 1; SELECT add_order(1)",
        ] {
            assert_eq!(c.classify(sql.as_bytes()), USER_WRITE, "{sql}");
        }
        assert_eq!(c.catalog_refresh_requests(), 0);
    }

    #[test]
    fn stable_user_functions_and_unlisted_built_ins_stay_reads() {
        let c = with_catalog();
        for sql in [
            "SELECT price(1)",
            "SELECT app.price(1), now(), random(), pg_is_in_recovery()",
            "SELECT jitter()",
            "SELECT coalesce(a, 1), current_timestamp FROM t WHERE id IN (1, 2)",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1",
            "WITH x(a) AS (SELECT 1) SELECT * FROM x",
        ] {
            assert_eq!(
                c.classify(sql.as_bytes()),
                Classification::of(READ),
                "{sql}"
            );
        }
        assert_eq!(c.catalog_refresh_requests(), 0);
        // The built-in list and write_functions still win.
        assert_eq!(
            c.classify(b"SELECT nextval('s')"),
            Classification::of(Class::Write)
        );
        assert_eq!(
            c.classify(b"SELECT bump(1)"),
            Classification::of(Class::Write)
        );
    }

    #[test]
    fn unknown_functions_go_to_the_primary_and_ask_for_a_refresh() {
        let c = with_catalog();
        assert_eq!(c.classify(b"SELECT created_later(1)"), USER_WRITE);
        assert_eq!(c.classify(b"SELECT other.price(1)"), USER_WRITE);
        assert_eq!(c.catalog_refresh_requests(), 2);
        // Cached: asked once per statement shape and catalog.
        assert_eq!(c.classify(b"SELECT created_later(2)"), USER_WRITE);
        assert_eq!(c.catalog_refresh_requests(), 2);
        // `name(` that is not a call is not a function the catalog should know.
        assert_eq!(
            c.classify(b"INSERT INTO t (a) VALUES (1)"),
            Classification::of(Class::Write)
        );
        assert_eq!(c.catalog_refresh_requests(), 2);
    }

    #[test]
    fn ddl_asks_for_a_refresh() {
        let c = with_catalog();
        for sql in [
            "CREATE TRIGGER t BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()",
            "create or replace rule r as on insert to t do also notify c",
            "ALTER TABLE t ADD FOREIGN KEY (a) REFERENCES u ON DELETE CASCADE",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        ] {
            let before = c.catalog_refresh_requests();
            c.classify(sql.as_bytes());
            assert_eq!(c.catalog_refresh_requests(), before + 1, "{sql}");
        }
        let before = c.catalog_refresh_requests();
        for sql in [
            "CREATE TEMP TABLE x (a int)",
            "DROP TRIGGER t ON t",
            "INSERT INTO t VALUES (1)",
            "SELECT 1",
        ] {
            c.classify(sql.as_bytes());
        }
        assert_eq!(c.catalog_refresh_requests(), before);
    }

    #[test]
    fn a_new_catalog_replaces_cached_classifications() {
        let c = with_catalog();
        assert_eq!(c.classify(b"SELECT created_later(1)"), USER_WRITE);
        assert_eq!(c.classify(b"SELECT price(1)"), Classification::of(READ));
        let changed =
            FunctionCatalog::from_rows([("app", "created_later", "s"), ("app", "price", "v")]);
        assert!(c.set_catalog(changed.clone()));
        assert_eq!(
            c.classify(b"SELECT created_later(1)"),
            Classification::of(READ)
        );
        assert_eq!(c.classify(b"SELECT price(1)"), USER_WRITE);
        // The same catalog again: the cache stays.
        let hits = c.stats().hits;
        assert!(!c.set_catalog(changed));
        assert_eq!(c.classify(b"SELECT price(2)"), USER_WRITE);
        assert_eq!(c.stats().hits, hits + 1);
    }

    #[test]
    fn a_new_set_of_firing_relations_replaces_cached_classifications() {
        let c = with_catalog();
        let insert = b"INSERT INTO with_trigger VALUES (1)";
        assert_eq!(c.classify(insert), Classification::of(Class::Write));
        let generation = c.catalog_generation();
        let functions = || FunctionCatalog::from_rows([("app", "price", "s")]);
        assert!(c.set_catalog(functions().with_firing_relations(["with_trigger"])));
        assert!(c.catalog_generation() > generation);
        assert_eq!(c.classify(insert), USER_WRITE);
        assert_eq!(
            c.classify(b"INSERT INTO pgbench_history VALUES (1)"),
            Classification::of(Class::Write)
        );
        assert!(c.set_catalog(functions()));
        assert_eq!(c.classify(insert), Classification::of(Class::Write));
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let c = classifier();
        let deep = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
        assert_eq!(c.classify(deep.as_bytes()).class, Class::Write);
        let comments = format!("SELECT 1 {}{}", "/*".repeat(5000), "*/".repeat(5000));
        assert_eq!(c.classify(comments.as_bytes()).class, READ);
    }
}
