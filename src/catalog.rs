//! Keeps the classifier's function catalog fresh: the IO shell of `classify::catalog`.
//!
//! One task loads every function's schema, name and volatility from `pg_proc` in each
//! configured database, and the names of the relations whose writes may
//! run user code (triggers, rules, and what cascades into them: `FIRING_QUERY`), on control
//! connections (`crate::control`): at startup, every minute, and when classification met a
//! function the catalog does not know or DDL that may change it (at most once a second; a
//! function created since the last load is then picked up, and so is a trigger created
//! through pgsplit, once committed). The classifier is shared by all databases, so their
//! functions are merged into one catalog (conservatively, as overloads are). The catalog is
//! the same on every node of the cluster (replicas replay it), so it is read from the node
//! that takes writes now (it sees DDL first), and while none does or it fails, from the
//! next node that answers: a failover does not leave the catalog stale. A load fails
//! unless every database answers; it is retried after a few seconds, and meanwhile the
//! catalog in force stays. Every look-up is bounded by timeouts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;

use crate::classify::FunctionCatalog;
use crate::control::{self, ControlError};
use crate::router::Routing;

/// Every function of the primary, one row per schema, name and volatility.
const QUERY: &str = "SELECT DISTINCT n.nspname::text, p.proname::text, p.provolatile::text \
     FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace";

/// The names of the relations whose writes may run user code: tables and views with
/// non-internal triggers, tables with non-`SELECT` rules, then (transitively) the tables whose
/// writes reach those through a foreign key's referential action or as their inheritance or
/// partition parent, and every view outside the system schemas (an updatable view writes its
/// base table) if there is any. `pg_settings` is always among them: its update rule calls
/// `set_config`.
const FIRING_QUERY: &str = "WITH RECURSIVE fires(oid) AS ( \
         SELECT tgrelid FROM pg_catalog.pg_trigger WHERE NOT tgisinternal \
         UNION SELECT ev_class FROM pg_catalog.pg_rewrite \
             WHERE ev_type <> '1' AND rulename <> '_RETURN' \
         UNION SELECT e.up FROM fires f JOIN ( \
             SELECT conrelid AS down, confrelid AS up FROM pg_catalog.pg_constraint \
                 WHERE contype = 'f' \
                 AND (confdeltype NOT IN ('a', 'r') OR confupdtype NOT IN ('a', 'r')) \
             UNION ALL SELECT inhrelid, inhparent FROM pg_catalog.pg_inherits \
         ) e ON e.down = f.oid \
     ) \
     SELECT DISTINCT c.relname::text FROM pg_catalog.pg_class c \
     WHERE c.oid IN (SELECT oid FROM fires) \
         OR (c.relkind = 'v' AND EXISTS (SELECT 1 FROM fires) \
             AND c.relnamespace::regnamespace::text NOT IN ('pg_catalog', 'information_schema'))";

/// A loaded catalog is reloaded this often.
const PERIOD: Duration = Duration::from_secs(60);
/// A failed load is retried after this long.
const RETRY: Duration = Duration::from_secs(5);
/// How often the task looks for refresh requests: also the least time between two loads.
const TICK: Duration = Duration::from_secs(1);
/// The catalog query taking longer than this fails.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// One database's control pools, one per node (in `[[nodes]]` order; deadpool opens
/// connections only when used).
pub struct Database {
    pub name: String,
    pub pools: Vec<Pool>,
}

/// Starts the task; it stops when the runtime does.
pub fn spawn(databases: Vec<Database>, routing: Arc<Routing>) {
    tokio::spawn(refresh(databases, routing));
}

async fn refresh(databases: Vec<Database>, routing: Arc<Routing>) {
    let classifier = &routing.classifier;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut schedule = Schedule::new(Instant::now(), classifier.catalog_refresh_requests());
    let mut warned = false;
    loop {
        tick.tick().await;
        if !schedule.due(Instant::now(), classifier.catalog_refresh_requests()) {
            continue;
        }
        let nodes = databases.first().map_or(0, |d| d.pools.len());
        let mut result = Err(None);
        for node in order(routing.primary(), nodes) {
            result = load(&databases, node).await.map_err(Some);
            if result.is_ok() {
                break;
            }
        }
        let was_ok = schedule.last_ok;
        schedule.loaded(Instant::now(), result.is_ok());
        match result {
            Ok(catalog) => {
                let names = catalog.len();
                if !was_ok {
                    tracing::info!(names, "function catalog loaded");
                }
                if classifier.set_catalog(catalog) {
                    tracing::debug!(names, "function catalog changed");
                }
                warned = false;
            }
            Err(e) => {
                if !warned {
                    let error = e.map_or_else(|| "no node".to_owned(), |e| e.to_string());
                    tracing::warn!(%error, "cannot load the function catalog from any node; retrying");
                }
                warned = true;
            }
        }
    }
}

/// When the next load is due: at once, then [`PERIOD`] after a load ([`RETRY`] after a
/// failed one), or at the next tick when classification asked for a refresh since the
/// last load began (only after a good load, so a failing primary is not asked every tick).
#[derive(Debug)]
struct Schedule {
    next_due: Instant,
    last_ok: bool,
    /// The classifier's refresh-request count when the last load began.
    seen: u64,
}

impl Schedule {
    fn new(now: Instant, requests: u64) -> Schedule {
        Schedule {
            next_due: now,
            last_ok: false,
            seen: requests,
        }
    }

    /// Whether to load now, given the classifier's refresh-request count.
    fn due(&mut self, now: Instant, requests: u64) -> bool {
        if now < self.next_due && !(self.last_ok && requests != self.seen) {
            return false;
        }
        self.seen = requests;
        true
    }

    /// A load ended at `now`.
    fn loaded(&mut self, now: Instant, ok: bool) {
        self.last_ok = ok;
        self.next_due = now + if ok { PERIOD } else { RETRY };
    }
}

/// Why a load failed.
#[derive(Debug, thiserror::Error)]
#[error("database {database}: {error}")]
struct LoadError {
    database: String,
    error: ControlError,
}

/// The functions and firing relations of every database, merged.
/// The nodes to read the catalog from, in the order tried: the one that takes writes
/// (`writer`), then every other.
fn order(writer: Option<usize>, nodes: usize) -> impl Iterator<Item = usize> {
    writer
        .filter(|&w| w < nodes)
        .into_iter()
        .chain((0..nodes).filter(move |&n| Some(n) != writer))
}

/// The catalog of every database, read on `node`.
async fn load(databases: &[Database], node: usize) -> Result<FunctionCatalog, LoadError> {
    let mut functions = Vec::new();
    let mut firing = Vec::new();
    for database in databases {
        let Some(pool) = database.pools.get(node) else {
            continue;
        };
        lookup(pool, &mut functions, &mut firing)
            .await
            .map_err(|error| LoadError {
                database: database.name.clone(),
                error,
            })?;
    }
    Ok(FunctionCatalog::from_rows(functions).with_firing_relations(firing))
}

/// One database's functions and firing relations, added to `functions` and `firing`.
async fn lookup(
    pool: &Pool,
    functions: &mut Vec<(String, String, String)>,
    firing: &mut Vec<String>,
) -> Result<(), ControlError> {
    for row in control::query(pool, QUERY, QUERY_TIMEOUT).await? {
        functions.push((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
    }
    for row in control::query(pool, FIRING_QUERY, QUERY_TIMEOUT).await? {
        firing.push(row.try_get(0)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_is_read_first_then_every_other_node() {
        let tried = |writer, nodes| order(writer, nodes).collect::<Vec<_>>();
        assert_eq!(tried(Some(1), 3), [1, 0, 2]);
        assert_eq!(tried(Some(0), 3), [0, 1, 2]);
        assert_eq!(tried(None, 3), [0, 1, 2]);
        // A writer index past the nodes (it cannot be) is not tried.
        assert_eq!(tried(Some(5), 2), [0, 1]);
        assert_eq!(tried(None, 0), Vec::<usize>::new());
    }

    #[test]
    fn schedule() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, 7);
        assert!(s.due(t0, 7), "at startup");
        s.loaded(t0, true);
        assert!(!s.due(t0 + TICK, 7));
        assert!(s.due(t0 + TICK, 8), "an unknown function was met");
        s.loaded(t0 + TICK, true);
        assert!(!s.due(t0 + 2 * TICK, 8));
        assert!(s.due(t0 + TICK + PERIOD, 8), "every minute");
        s.loaded(t0 + TICK + PERIOD, false);
        let failed = t0 + TICK + PERIOD;
        assert!(!s.due(failed + TICK, 9), "not every tick while failing");
        assert!(s.due(failed + RETRY, 9), "retried");
    }
}
