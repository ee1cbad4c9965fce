//! The WAL flusher's IO shell: with `synchronous_commit = off`, a commit is acknowledged
//! before its WAL is flushed, and it reaches the replicas only once the primary flushes
//! it, which the WAL writer does up to `wal_writer_delay` (200 ms by default) later. When
//! a read is held on the primary for a position no replica has replayed (see
//! `WritePositions::await_replay`), this task (one per pgsplit, on its own control
//! connection to the node that takes writes now, as the monitor discovered it) makes sure
//! that position is flushed: one statement that,
//! only when the flush position is behind it, commits with `synchronous_commit = on` a
//! transactional `pg_logical_emit_message` (prefix `pgsplit`, empty; a transaction that
//! writes no WAL would commit without flushing). With synchronous commit it finds the
//! position flushed and writes nothing.
//!
//! Checks are at least [`SPACING`] apart and cover every position awaited before them, so
//! they cost the primary at most 50 trivial statements a second, and only while reads
//! wait. A failed check is retried after [`RETRY`].

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::WritePositions;
use crate::backend::Nodes;
use crate::control::{self, ControlLogin};

/// The shortest time between two checks.
pub const SPACING: Duration = Duration::from_millis(20);
/// How long after a failed check the next one is tried.
pub const RETRY: Duration = Duration::from_millis(200);
/// A check taking longer than this fails.
const LIMIT: Duration = Duration::from_secs(2);

/// Starts the flusher. `nodes` are every node place by index (a member Patroni adds may
/// take writes too); `writer` says which one takes
/// writes now (its control pool is opened on first use). It stops when the runtime does.
pub fn spawn(
    positions: Arc<WritePositions>,
    nodes: Arc<Nodes>,
    writer: impl Fn() -> Option<usize> + Send + 'static,
    login: &ControlLogin,
) {
    let login = login.clone();
    tokio::spawn(async move {
        let mut pools: Vec<Option<deadpool_postgres::Pool>> = vec![None; nodes.len()];
        let mut awaited = positions.subscribe();
        let mut failing = false;
        while awaited.changed().await.is_ok() {
            let lsn = *awaited.borrow_and_update();
            let started = Instant::now();
            let Some((index, node)) = writer().and_then(|i| Some((i, nodes.get(i)?.clone())))
            else {
                tokio::time::sleep(RETRY).await;
                continue;
            };
            let node = &node;
            let pool = match &pools[index] {
                Some(pool) => pool.clone(),
                None => match control::pool(node, &login, "pgsplit wal flush", 1) {
                    Ok(pool) => pools[index].insert(pool).clone(),
                    Err(e) => {
                        tracing::error!(node = %node.name, error = %e, "no control pool for the WAL flusher; with synchronous_commit = off, reads of clients that wrote return to the replicas only after wal_writer_delay");
                        tokio::time::sleep(RETRY).await;
                        continue;
                    }
                },
            };
            match control::query(&pool, &flush_sql(lsn), LIMIT).await {
                Ok(_) => {
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
    });
}

/// Flushes the primary's WAL up to `lsn` if it is not flushed yet: a transaction that
/// writes a WAL record and commits with `synchronous_commit = on` flushes everything
/// before it; when the flush position is already there, it writes nothing.
fn flush_sql(lsn: u64) -> String {
    format!(
        "SELECT set_config('synchronous_commit', 'on', true), \
         pg_logical_emit_message(true, 'pgsplit', '') \
         WHERE pg_current_wal_flush_lsn() < '{:X}/{:X}'::pg_lsn",
        lsn >> 32,
        lsn & 0xFFFF_FFFF
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_flush_names_the_position_as_postgresql_writes_it() {
        let sql = super::flush_sql(0x16_B374_D848);
        assert!(sql.ends_with("< '16/B374D848'::pg_lsn"), "{sql}");
    }
}
