//! The WAL flusher's IO shell: with `synchronous_commit = off`, a commit is acknowledged
//! before its WAL is flushed, and it reaches the replicas only once the primary flushes
//! it, which the WAL writer does up to `wal_writer_delay` (200 ms by default) later. When a
//! session reads a position after a commit that is not flushed yet, it asks this task
//! (one per pgsplit, on its own control connection to the primary) to flush it at once:
//! it commits a transaction of its own with `synchronous_commit = on` that writes one
//! transactional `pg_logical_emit_message` (prefix `pgsplit`, empty; a transaction that
//! writes no WAL would commit without flushing), so the waiting clients' reads return to
//! the replicas in milliseconds.
//!
//! Flushes are at least [`SPACING`] apart and serve every request made before them, so a
//! write-heavy load with asynchronous commit costs the primary at most 50 flushes a second.
//! A failed flush is retried after [`RETRY`].

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::WritePositions;
use crate::backend::NodeAddr;
use crate::control::{self, ControlLogin};

/// The shortest time between two flushes.
pub const SPACING: Duration = Duration::from_millis(20);
/// How long after a failed flush the next one is tried.
pub const RETRY: Duration = Duration::from_millis(200);
/// A flush taking longer than this fails.
const LIMIT: Duration = Duration::from_secs(2);

/// Starts the flusher for the primary `node`. It stops when the runtime does.
pub fn spawn(positions: Arc<WritePositions>, node: Arc<NodeAddr>, login: &ControlLogin) {
    match control::pool(&node, login, "pgsplit wal flush", 1) {
        Ok(pool) => {
            tokio::spawn(run(positions, node, pool));
        }
        Err(e) => {
            tracing::error!(error = %e, "no control pool for the WAL flusher; with synchronous_commit = off, reads of clients that wrote return to the replicas only after wal_writer_delay")
        }
    }
}

async fn run(positions: Arc<WritePositions>, node: Arc<NodeAddr>, pool: deadpool_postgres::Pool) {
    let mut failing = false;
    loop {
        positions.unflushed().await;
        let started = Instant::now();
        match flush(&pool).await {
            Ok(()) => {
                if std::mem::take(&mut failing) {
                    tracing::info!(node = %node.name, "the primary's WAL is flushed on request again");
                }
                tokio::time::sleep_until(started + SPACING).await;
            }
            Err(e) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(node = %node.name, error = %e, "cannot flush the primary's WAL; with synchronous_commit = off, reads of clients that wrote return to the replicas only after wal_writer_delay");
                }
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Makes the primary flush its WAL now: commits a transaction that wrote a WAL record with
/// `synchronous_commit = on`, whose commit flushes everything before it.
async fn flush(pool: &deadpool_postgres::Pool) -> Result<(), control::ControlError> {
    let sql = "SELECT set_config('synchronous_commit', 'on', true), \
               pg_logical_emit_message(true, 'pgsplit', '')";
    control::query(pool, sql, LIMIT).await.map(drop)
}
