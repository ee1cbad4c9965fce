//! Keeps the classifier's function catalog fresh: the IO shell of `classify::catalog`.
//!
//! One task loads every function's schema, name and volatility from the primary's
//! `pg_proc`, on a control connection (`crate::control`): at startup, every minute, and when
//! classification met a function the catalog does not know (at most once a second; a
//! function created since the last load is then picked up). A failed load is retried after a
//! few seconds; meanwhile the catalog in force stays. Every look-up is bounded by a timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;

use crate::classify::FunctionCatalog;
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

/// Starts the task; it stops when the runtime does.
pub fn spawn(pool: Pool, routing: Arc<Routing>) {
    tokio::spawn(refresh(pool, routing));
}

async fn refresh(pool: Pool, routing: Arc<Routing>) {
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
        match load(&pool).await {
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

/// Why a look-up failed.
#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error("{0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("{0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("the query took longer than {0:?}")]
    Timeout(Duration),
}

/// One look-up. Taking a connection is bounded by the pool's timeouts, the query by
/// [`QUERY_TIMEOUT`]; a connection whose query timed out is closed, not reused.
async fn load(pool: &Pool) -> Result<FunctionCatalog, LoadError> {
    let client = pool.get().await?;
    let rows = match tokio::time::timeout(QUERY_TIMEOUT, client.query(QUERY, &[])).await {
        Ok(rows) => rows?,
        Err(_) => {
            drop(deadpool_postgres::Object::take(client));
            return Err(LoadError::Timeout(QUERY_TIMEOUT));
        }
    };
    let mut functions = Vec::with_capacity(rows.len());
    for row in &rows {
        functions.push((
            row.try_get::<_, String>(0)?,
            row.try_get::<_, String>(1)?,
            row.try_get::<_, String>(2)?,
        ));
    }
    Ok(FunctionCatalog::from_rows(functions))
}
