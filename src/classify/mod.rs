//! SQL text -> statement class, for routing: may this run on a replica, must it run on the
//! primary, does it open or close a transaction, or does it need a real session?
//!
//! Pure and IO-free. [`Classifier::classify`] takes the raw bytes of a simple-protocol `Query`
//! or of a `Parse` message's SQL and returns a [`Classification`]. The path it takes:
//!
//! 1. `lexer/` scans the bytes once into *canonical text*: literals become `''` / `0`,
//!    comments go, whitespace collapses. It also notes a leading `/* pgsplit:primary */` hint.
//!    Unterminated quotes or comments and control bytes make the statement a write.
//! 2. `cache.rs` looks the canonical text up (bounded, sharded, CLOCK eviction). The class is a
//!    function of the canonical text alone, so statements that differ only in literal values
//!    (pgbench with random ids, ORMs that inline literals) share one entry.
//! 3. On a miss, `statement/` splits the text into statements and applies keyword rules:
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
    dotted_name, short_command, source_tokens, starts_with_any_kw, statements, Kind as TokenKind,
    Token,
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
mod tests;
