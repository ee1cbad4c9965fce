//! Who is connected, for the admin console's `SHOW CLIENTS`: each session registers itself
//! at login and updates until when it is pinned; the entry goes away with the session. The
//! server serving a client is not kept here: the cancel registry already tracks it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::lock::Locked;

/// What changes while a client is connected.
#[derive(Debug, Clone, Default)]
pub struct ClientNow {
    /// Its reads go to the primary until then (read-your-writes, `"time"` mode).
    pub pinned_until: Option<Instant>,
    /// What its reads must see (read-your-writes, `"lsn"` mode).
    pub causal: CausalPosition,
}

/// A client's causal position, as `SHOW CLIENTS` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CausalPosition {
    /// It has not written (or only in another mode).
    #[default]
    None,
    /// It wrote, and the position of that write is not known yet: its reads go to the
    /// primary.
    Pending,
    /// Its reads go to replicas that have replayed this WAL position.
    Lsn(u64),
}

impl std::fmt::Display for CausalPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CausalPosition::None => Ok(()),
            CausalPosition::Pending => f.write_str("pending"),
            // PostgreSQL's pg_lsn text form.
            CausalPosition::Lsn(lsn) => write!(f, "{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff),
        }
    }
}

/// One client as `SHOW CLIENTS` lists it.
#[derive(Debug, Clone)]
pub struct ClientRow {
    /// The process id pgsplit gave the client (its BackendKeyData).
    pub id: i32,
    pub user: String,
    pub database: String,
    pub peer: SocketAddr,
    pub connected_at: Instant,
    pub now: ClientNow,
}

type Shared = Arc<Mutex<ClientNow>>;

/// The connected clients: the fixed part of each row, and the changing part the session
/// updates under its own lock (so sessions never contend on the registry's).
#[derive(Debug, Default)]
pub struct ClientRegistry {
    clients: Mutex<BTreeMap<i32, (ClientRow, Shared)>>,
}

/// A client's entry; the session updates it and it leaves the registry when dropped.
#[derive(Debug)]
pub struct ClientEntry {
    id: i32,
    now: Shared,
    registry: Arc<ClientRegistry>,
}

impl ClientRegistry {
    /// Adds a logged-in client.
    pub fn register(self: &Arc<Self>, row: ClientRow) -> ClientEntry {
        let id = row.id;
        let now = Shared::default();
        self.lock().insert(id, (row, now.clone()));
        ClientEntry {
            id,
            now,
            registry: self.clone(),
        }
    }

    /// A copy of every entry, by id.
    pub fn rows(&self) -> Vec<ClientRow> {
        self.lock()
            .values()
            .map(|(row, now)| ClientRow {
                now: lock(now).clone(),
                ..row.clone()
            })
            .collect()
    }

    /// Clients connected now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<i32, (ClientRow, Shared)>> {
        self.clients.locked()
    }
}

fn lock(now: &Mutex<ClientNow>) -> std::sync::MutexGuard<'_, ClientNow> {
    now.locked()
}

impl ClientEntry {
    /// Changes what `SHOW CLIENTS` says about this client.
    pub fn update(&self, f: impl FnOnce(&mut ClientNow)) {
        f(&mut lock(&self.now));
    }
}

impl Drop for ClientEntry {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i32) -> ClientRow {
        ClientRow {
            id,
            user: "app".into(),
            database: "app".into(),
            peer: "127.0.0.1:5000".parse().unwrap(),
            connected_at: Instant::now(),
            now: ClientNow::default(),
        }
    }

    #[test]
    fn entries_live_as_long_as_their_session() {
        let registry = Arc::new(ClientRegistry::default());
        let a = registry.register(row(2));
        let b = registry.register(row(1));
        let until = Instant::now();
        a.update(|now| now.pinned_until = Some(until));
        let rows = registry.rows();
        assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(rows[1].now.pinned_until, Some(until));
        assert!(rows[0].now.pinned_until.is_none());
        drop(b);
        assert_eq!(registry.rows().len(), 1);
        drop(a);
        assert!(registry.rows().is_empty());
    }
}
