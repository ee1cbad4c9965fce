//! The write-position sampler's IO shell: one task on its own control connection to the
//! primary that, whenever clients wait for the position of their writes, runs one
//! `SELECT pg_current_wal_insert_lsn()` and answers all of them with it (see the parent
//! module). The insert position, not the write or flush position: with
//! `synchronous_commit = off` those can be behind a commit that has been acknowledged.
//!
//! Such a commit reaches the replicas only once the primary flushes it, which the WAL
//! writer does up to `wal_writer_delay` (200 ms by default) later. When the sample finds
//! the insert position ahead of the flush position, the sampler flushes it at once: it
//! commits a transaction of its own with `synchronous_commit = on` that writes one
//! transactional `pg_logical_emit_message` (prefix `pgsplit`, empty; a transaction that
//! writes no WAL would commit without flushing), so the waiting clients' reads return to the
//! replicas in milliseconds.
//!
//! Samples are at least [`SPACING`] apart, so a write-heavy load costs the primary at most
//! 50 trivial queries (and, with asynchronous commit, 50 flushes) a second. (In a 90/10
//! read/write pgbench mix with every node on one 2-core machine, samples 5 ms apart cost
//! about a fifth of the throughput, as each flush wakes the WAL senders and the replicas;
//! 20 ms apart, much less.) A lone write is sampled at once. A failed sample is retried
//! after [`RETRY`].

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::types::PgLsn;

use super::{commit_bound, WritePositions};
use crate::backend::NodeAddr;
use crate::control::{self, ControlLogin};

/// The shortest time between two samples.
pub const SPACING: Duration = Duration::from_millis(20);
/// How long after a failed sample the next one is tried.
pub const RETRY: Duration = Duration::from_millis(200);
/// A sample taking longer than this fails.
const LIMIT: Duration = Duration::from_secs(2);

/// Starts the sampler for the primary `node`. It stops when the runtime does.
pub fn spawn(positions: Arc<WritePositions>, node: Arc<NodeAddr>, login: &ControlLogin) {
    match control::pool(&node, login, "pgsplit write position", 1) {
        Ok(pool) => {
            tokio::spawn(run(positions, node, pool));
        }
        Err(e) => {
            tracing::error!(error = %e, "no control pool for the write-position sampler; the reads of clients that wrote stay on the primary")
        }
    }
}

async fn run(positions: Arc<WritePositions>, node: Arc<NodeAddr>, pool: deadpool_postgres::Pool) {
    let mut failing = false;
    let mut flush_failed = false;
    loop {
        let Some(sample) = positions.next_sample() else {
            positions.asked().await;
            continue;
        };
        let started = Instant::now();
        let result = control::query(
            &pool,
            "SELECT pg_current_wal_insert_lsn(), pg_current_wal_flush_lsn(), \
             current_setting('wal_block_size')::int8",
            LIMIT,
        )
        .await
        .map_err(|e| e.to_string())
        .and_then(|rows| {
            let row = rows.into_iter().next().ok_or("no row")?;
            let insert: PgLsn = row.try_get(0).map_err(|e| e.to_string())?;
            let flush: PgLsn = row.try_get(1).map_err(|e| e.to_string())?;
            let page: i64 = row.try_get(2).map_err(|e| e.to_string())?;
            let lsn = commit_bound(u64::from(insert), page.max(0) as u64);
            Ok((lsn, u64::from(flush)))
        });
        match result {
            Ok((lsn, flushed)) => {
                positions.publish(sample, lsn);
                if flushed < lsn {
                    if let Err(e) = flush(&pool).await {
                        if !std::mem::replace(&mut flush_failed, true) {
                            tracing::warn!(node = %node.name, error = %e, "cannot flush the primary's WAL; with synchronous_commit = off, reads of clients that wrote return to the replicas only after wal_writer_delay");
                        }
                    }
                }
                if std::mem::take(&mut failing) {
                    tracing::info!(node = %node.name, "write positions are sampled again");
                }
                tokio::time::sleep_until(started + SPACING).await;
            }
            Err(e) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(node = %node.name, error = %e, "cannot sample the primary's write position; the reads of clients that wrote stay on the primary");
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
