//! Keeps the classifier's function catalog fresh: the IO shell of `classify::catalog`.
//!
//! One task loads every function's schema, name and volatility from the primary's
//! `pg_proc` in each configured database, on control connections (`crate::control`): at
//! startup, every minute, and when classification met a function the catalog does not know
//! (at most once a second; a function created since the last load is then picked up). The
//! classifier is shared by all databases, so their functions are merged into one catalog
//! (conservatively, as overloads are). A load fails unless every database answers; it is
//! retried after a few seconds, and meanwhile the catalog in force stays. Every look-up is
//! bounded by timeouts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;

use crate::classify::FunctionCatalog;
use crate::control::{self, ControlError};
use crate::router::Routing;

/// Every function of the primary, one row per schema, name and volatility.
const QUERY: &str = "SELECT DISTINCT n.nspname::text, p.proname::text, p.provolatile::text \
     FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace";

/// A loaded catalog is reloaded this often.
const PERIOD: Duration = Duration::from_secs(60);
/// A failed load is retried after this long.
const RETRY: Duration = Duration::from_secs(5);
/// How often the task looks for unknown functions: also the least time between two loads.
const TICK: Duration = Duration::from_secs(1);
/// The catalog query taking longer than this fails.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// A control pool to one database of the primary.
pub struct Database {
    pub name: String,
    pub pool: Pool,
}

/// Starts the task; it stops when the runtime does.
pub fn spawn(databases: Vec<Database>, routing: Arc<Routing>) {
    tokio::spawn(refresh(databases, routing));
}

async fn refresh(databases: Vec<Database>, routing: Arc<Routing>) {
    let classifier = &routing.classifier;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_due = Instant::now();
    let (mut last_ok, mut warned) = (false, false);
    let mut seen = classifier.unknown_functions_seen();
    loop {
        tick.tick().await;
        let unknown = classifier.unknown_functions_seen();
        if Instant::now() < next_due && !(last_ok && unknown != seen) {
            continue;
        }
        seen = unknown;
        match load(&databases).await {
            Ok(catalog) => {
                let names = catalog.len();
                if !last_ok {
                    tracing::info!(names, "function catalog loaded from the primary");
                }
                if classifier.set_catalog(catalog) {
                    tracing::debug!(names, "function catalog changed");
                }
                (last_ok, warned) = (true, false);
                next_due = Instant::now() + PERIOD;
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %e, "cannot load the function catalog from the primary; retrying");
                }
                (last_ok, warned) = (false, true);
                next_due = Instant::now() + RETRY;
            }
        }
    }
}

/// Why a load failed.
#[derive(Debug, thiserror::Error)]
#[error("database {database}: {error}")]
struct LoadError {
    database: String,
    error: ControlError,
}

/// The functions of every database, merged.
async fn load(databases: &[Database]) -> Result<FunctionCatalog, LoadError> {
    let mut functions = Vec::new();
    for database in databases {
        lookup(&database.pool, &mut functions)
            .await
            .map_err(|error| LoadError {
                database: database.name.clone(),
                error,
            })?;
    }
    Ok(FunctionCatalog::from_rows(functions))
}

/// One database's functions, added to `functions`.
async fn lookup(
    pool: &Pool,
    functions: &mut Vec<(String, String, String)>,
) -> Result<(), ControlError> {
    for row in control::query(pool, QUERY, QUERY_TIMEOUT).await? {
        functions.push((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
    }
    Ok(())
}
