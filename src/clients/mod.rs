//! The one registry of clients. It counts every connection from accept on (for
//! `max_client_conn`, the drain on SIGTERM and the metrics), and holds each logged-in
//! client under the process id pgsplit gave it: its cancel key and the server connection
//! serving it (so a CancelRequest reaches whichever server runs its query: see `cancel`),
//! and its line in `SHOW CLIENTS` (what the session updates: until when it is pinned, its
//! causal position). A client's entry goes away with its session.

mod cancel;
mod signal;

pub use cancel::{send_cancel, CancelTarget};
pub use signal::{is_client_pid, Signal, Signaled, PID_MAX_LIMIT};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
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

/// A logged-in client, as the registry holds it.
#[derive(Debug)]
struct Record {
    secret: i32,
    /// Its `SHOW CLIENTS` line; `now` is kept apart, below.
    row: ClientRow,
    /// What changes, updated by the session under this lock of its own (so sessions never
    /// contend on the registry's).
    now: Mutex<ClientNow>,
    cancel: cancel::Slot,
    termination: signal::Termination,
}

/// Every client: the connections counted, and the logged-in clients by process id.
#[derive(Debug, Default)]
pub struct Clients {
    /// Connections counted against `max_client_conn`: every one from accept on.
    connections: AtomicUsize,
    /// Clients registered so far: the next one's process id (see `signal::client_pid`).
    registered: AtomicU32,
    logged_in: Mutex<BTreeMap<i32, Arc<Record>>>,
}

/// A connection counted from accept on; uncounted when dropped.
#[derive(Debug)]
pub struct Connection {
    clients: Arc<Clients>,
    /// Connections counted when this one was (itself included).
    pub count: usize,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.clients.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A logged-in client's handle, held by its session: its cancel key, its cancel state and
/// its `SHOW CLIENTS` line. The client leaves the registry when it is dropped.
#[derive(Debug)]
pub struct Client {
    /// The process id pgsplit gave the client (its BackendKeyData).
    pub pid: i32,
    pub secret: i32,
    record: Arc<Record>,
    clients: Arc<Clients>,
    /// Whether the session's waker is registered for a termination (see `terminated`).
    waiting_for_termination: std::sync::atomic::AtomicBool,
}

/// Who a client that logged in is, for its `SHOW CLIENTS` line.
#[derive(Debug, Clone)]
pub struct NewClient {
    pub user: String,
    pub database: String,
    pub peer: SocketAddr,
    pub connected_at: Instant,
}

impl Clients {
    /// Counts a new connection (from accept on, whatever it turns out to be).
    pub fn connect(self: &Arc<Self>) -> Connection {
        let count = self.connections.fetch_add(1, Ordering::Relaxed) + 1;
        Connection {
            clients: self.clone(),
            count,
        }
    }

    /// Connections counted now (logging in or logged in, admin console included).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Registers a client that logged in: gives it a process id (never a server's) and a
    /// secret key.
    pub fn register(self: &Arc<Self>, login: NewClient) -> Client {
        let pid = signal::client_pid(self.registered.fetch_add(1, Ordering::Relaxed));
        let secret: i32 = rand::random();
        let record = Arc::new(Record {
            secret,
            row: ClientRow {
                id: pid,
                user: login.user,
                database: login.database,
                peer: login.peer,
                connected_at: login.connected_at,
                now: ClientNow::default(),
            },
            now: Mutex::default(),
            cancel: cancel::Slot::default(),
            termination: signal::Termination::default(),
        });
        self.lock().insert(pid, record.clone());
        Client {
            pid,
            secret,
            record,
            clients: self.clone(),
            waiting_for_termination: Default::default(),
        }
    }

    /// A cancel request for a client's key: the server to send it to, if the key is right
    /// and the client's statement runs on a server. A statement still on its way to one
    /// keeps the cancel (its session is woken; see [`Client::requested`]).
    pub fn cancel(&self, pid: i32, secret: &[u8]) -> Option<CancelTarget> {
        let record = self.lock().get(&pid).cloned()?;
        if secret != record.secret.to_be_bytes() {
            return None;
        }
        record.cancel.cancel(pid)
    }

    /// Every logged-in client as `SHOW CLIENTS` lists it, by id, with the node serving it
    /// now.
    pub fn rows(&self) -> Vec<(ClientRow, Option<String>)> {
        let records: Vec<Arc<Record>> = self.lock().values().cloned().collect();
        records
            .iter()
            .map(|record| {
                let row = ClientRow {
                    now: record.now.locked().clone(),
                    ..record.row.clone()
                };
                let node = record.cancel.target().map(|t| t.node.name.clone());
                (row, node)
            })
            .collect()
    }

    /// Clients logged in now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<i32, Arc<Record>>> {
        self.logged_in.locked()
    }
}

impl Client {
    /// Changes what `SHOW CLIENTS` says about this client.
    pub fn update(&self, f: impl FnOnce(&mut ClientNow)) {
        f(&mut self.record.now.locked());
    }

    /// Names the server connection now serving the client (or none). Without one, nothing
    /// of the client's is outstanding.
    pub fn set_target(&self, target: Option<CancelTarget>) {
        self.record.cancel.set_target(target);
    }

    /// The client sent something that has not been written to a server yet: a cancel
    /// that comes now is kept.
    pub fn waiting(&self) {
        self.record.cancel.waiting();
    }

    /// What the client sent has been written to its server (`owes`: the server owes it
    /// replies). Returns the server to cancel when a cancel came before it got there.
    pub fn sent(&self, owes: bool) -> Option<CancelTarget> {
        self.record.cancel.sent(owes)
    }

    /// Whether a cancel came for the statement still waiting; takes it (the session then
    /// answers the statement with 57014 itself, and nothing is outstanding).
    pub fn take_requested(&self) -> bool {
        self.record.cancel.take_requested()
    }

    /// Returns once a cancel has come for the statement still waiting (never while none
    /// does): to race with a wait for a server connection.
    pub async fn requested(&self) {
        self.record.cancel.requested().await
    }

    /// Returns once another client has asked, with `pg_terminate_backend()`, for this
    /// client's session to end. Awaited by one task only (the session's).
    pub fn terminated(&self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            self.record
                .termination
                .poll(cx, &self.waiting_for_termination)
        })
    }

    /// `pg_cancel_backend(pid)` or `pg_terminate_backend(pid)` called by this client for
    /// client `pid`: how it went, and for a cancel, the server to send it to (when the
    /// statement runs on one; one still on its way keeps the cancel).
    pub fn signal(&self, pid: i32, signal: Signal) -> (Signaled, Option<CancelTarget>) {
        let Some(record) = self.clients.lock().get(&pid).cloned() else {
            return (Signaled::NoSuchClient, None);
        };
        if !signal::allowed(&self.record.row.user, &record.row.user) {
            return (Signaled::NotAllowed, None);
        }
        match signal {
            Signal::Cancel => (Signaled::Sent, record.cancel.cancel(pid)),
            Signal::Terminate => {
                record.termination.request();
                (Signaled::Sent, None)
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.clients.lock().remove(&self.pid);
    }
}

#[cfg(test)]
mod tests;
