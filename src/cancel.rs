//! Cancel requests across pooling. Each client gets pgsplit's own process id and secret
//! key; while a server connection serves the client, the client's slot names that
//! server's key, so a CancelRequest reaches whichever server runs the client's query
//! at that moment. A cancel request travels over the same kind of link as the node's server
//! connections (TLS when its settings say so).
//!
//! A cancel must not be lost while the client's statement is still on its way: waiting
//! for a server connection, or being written to one. The slot's [`Phase`] says where the
//! statement is: a cancel that comes while it is `Waiting` is kept (`Requested`) and
//! wakes the session, which answers 57014 if it has no server yet, or cancels the
//! statement on its server once it has been written there (see [`on_cancel`] and
//! [`on_sent`], the pure rules).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;

use crate::backend::NodeAddr;
use crate::lock::Locked;
use crate::wire::startup::encode_cancel;

/// The server key a cancel request must be sent to. `Debug` hides the secret.
#[derive(Clone)]
pub struct CancelTarget {
    pub node: Arc<NodeAddr>,
    pub pid: i32,
    /// Shared with the server connection it names: setting a target copies nothing.
    pub secret: Arc<[u8]>,
}

impl std::fmt::Debug for CancelTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelTarget")
            .field("node", &self.node)
            .field("pid", &self.pid)
            .field("secret", &"<hidden>")
            .finish()
    }
}

/// Where the client's statement is, as far as cancel requests are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing of the client's is outstanding: a cancel is ignored (as PostgreSQL ignores
    /// one for a backend waiting for a command).
    Idle,
    /// The client sent something pgsplit has not yet written to a server: a cancel is kept.
    Waiting,
    /// A cancel came while `Waiting`.
    Requested,
    /// The statement is on the server named by the slot's target: a cancel goes there.
    Running,
}

/// What to do with a cancel request, by the phase of the client's statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnCancel {
    /// Send it to the server running the statement.
    Forward,
    /// Keep it for the session (the statement has not reached a server yet).
    Keep,
    Ignore,
}

/// A cancel request arrives: what to do, and the phase after it. Pure.
pub fn on_cancel(phase: Phase, has_target: bool) -> (OnCancel, Phase) {
    match phase {
        Phase::Running if has_target => (OnCancel::Forward, phase),
        Phase::Waiting | Phase::Requested => (OnCancel::Keep, Phase::Requested),
        _ => (OnCancel::Ignore, phase),
    }
}

/// The session has written what it had for the server; `owes` says whether the server
/// still owes the client replies. Returns the new phase, and whether a cancel that came
/// meanwhile must now be sent to the server. Pure.
pub fn on_sent(phase: Phase, owes: bool) -> (Phase, bool) {
    match (phase, owes) {
        (Phase::Requested, true) => (Phase::Running, true),
        (_, true) => (Phase::Running, false),
        // Nothing outstanding: a cancel that came meanwhile had nothing to cancel.
        (_, false) => (Phase::Idle, false),
    }
}

#[derive(Debug)]
struct SlotState {
    /// The server connection serving the client (shown by `SHOW CLIENTS` too).
    target: Option<CancelTarget>,
    phase: Phase,
}

#[derive(Debug)]
struct SlotInner {
    state: Mutex<SlotState>,
    /// Wakes a session waiting for a server when a cancel for it comes.
    requested: tokio::sync::Notify,
}

type Slot = Arc<SlotInner>;

fn new_slot() -> Slot {
    Arc::new(SlotInner {
        state: Mutex::new(SlotState {
            target: None,
            phase: Phase::Idle,
        }),
        requested: tokio::sync::Notify::new(),
    })
}

impl SlotInner {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.locked()
    }
}

/// All connected clients' keys.
#[derive(Default)]
pub struct CancelRegistry {
    next_pid: AtomicI32,
    clients: Mutex<HashMap<i32, (i32, Slot)>>,
}

/// A client's entry; unregisters itself when dropped.
pub struct CancelKey {
    pub pid: i32,
    pub secret: i32,
    slot: Slot,
    registry: Arc<CancelRegistry>,
}

impl CancelKey {
    /// Names the server connection now serving the client (or none). Without one, nothing
    /// of the client's is outstanding.
    pub fn set_target(&self, target: Option<CancelTarget>) {
        let mut state = self.slot.lock();
        if target.is_none() {
            state.phase = Phase::Idle;
        }
        state.target = target;
    }

    /// The client sent something that has not been written to a server yet: a cancel
    /// that comes now is kept.
    pub fn waiting(&self) {
        let mut state = self.slot.lock();
        if state.phase != Phase::Requested {
            state.phase = Phase::Waiting;
        }
    }

    /// What the client sent has been written to its server (`owes`: the server owes it
    /// replies). Returns the server to cancel when a cancel came before it got there.
    pub fn sent(&self, owes: bool) -> Option<CancelTarget> {
        let mut state = self.slot.lock();
        let (phase, cancel) = on_sent(state.phase, owes && state.target.is_some());
        state.phase = phase;
        cancel.then(|| state.target.clone()).flatten()
    }

    /// Whether a cancel came for the statement still waiting; takes it (the session then
    /// answers the statement with 57014 itself, and nothing is outstanding).
    pub fn take_requested(&self) -> bool {
        let mut state = self.slot.lock();
        if state.phase == Phase::Requested {
            state.phase = Phase::Idle;
            return true;
        }
        false
    }

    /// Returns once a cancel has come for the statement still waiting (never while none
    /// does): to race with a wait for a server connection.
    pub async fn requested(&self) {
        loop {
            let notified = self.slot.requested.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.slot.lock().phase == Phase::Requested {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for CancelKey {
    fn drop(&mut self) {
        self.registry.clients.locked().remove(&self.pid);
    }
}

impl CancelRegistry {
    /// Registers a new client and returns its key.
    pub fn register(self: &Arc<Self>) -> CancelKey {
        let pid = self
            .next_pid
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1)
            & 0x7fff_ffff;
        let secret: i32 = rand::random();
        let slot = new_slot();
        self.clients.locked().insert(pid, (secret, slot.clone()));
        CancelKey {
            pid,
            secret,
            slot,
            registry: self.clone(),
        }
    }

    /// A cancel request for a client's key: the server to send it to, if the key is right
    /// and the client's statement runs on a server. A statement still on its way to one
    /// keeps the cancel (its session is woken; see [`CancelKey::requested`]).
    pub fn lookup(&self, pid: i32, secret: &[u8]) -> Option<CancelTarget> {
        let clients = self.clients.locked();
        let (expected, slot) = clients.get(&pid)?;
        if secret != expected.to_be_bytes() {
            return None;
        }
        let mut state = slot.lock();
        let (action, phase) = on_cancel(state.phase, state.target.is_some());
        state.phase = phase;
        match action {
            OnCancel::Forward => state.target.clone(),
            OnCancel::Keep => {
                tracing::debug!(
                    client = pid,
                    "cancel request for a statement not on a server yet: kept"
                );
                slot.requested.notify_waiters();
                None
            }
            OnCancel::Ignore => None,
        }
    }

    /// The server now serving client `pid`, if any (for `SHOW CLIENTS`).
    pub fn serving(&self, pid: i32) -> Option<CancelTarget> {
        let clients = self.clients.locked();
        let (_, slot) = clients.get(&pid)?;
        let target = slot.lock().target.clone();
        target
    }

    pub fn len(&self) -> usize {
        self.clients.locked().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Sends a CancelRequest to the server named by `target`.
pub async fn send_cancel(target: &CancelTarget) -> std::io::Result<()> {
    let mut stream = target.node.open().await.map_err(std::io::Error::other)?;
    stream
        .write_all(&encode_cancel(target.pid, &target.secret))
        .await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_needs_the_right_secret_and_a_target() {
        let reg = Arc::new(CancelRegistry::default());
        let key = reg.register();
        assert!(reg.lookup(key.pid, &key.secret.to_be_bytes()).is_none());
        key.set_target(Some(CancelTarget {
            node: Arc::new(NodeAddr {
                name: "primary".into(),
                host: "127.0.0.1".into(),
                port: 1,
                tls: crate::backend::NodeTls::disabled(),
            }),
            pid: 99,
            secret: Arc::from(&[1u8, 2, 3, 4][..]),
        }));
        assert_eq!(reg.serving(key.pid).unwrap().node.name, "primary");
        // Nothing outstanding yet: ignored.
        assert!(reg.lookup(key.pid, &key.secret.to_be_bytes()).is_none());
        key.waiting();
        assert!(key.sent(true).is_none());
        let wrong = key.secret.wrapping_add(1).to_be_bytes();
        assert!(reg.lookup(key.pid, &wrong).is_none());
        assert_eq!(
            reg.lookup(key.pid, &key.secret.to_be_bytes()).unwrap().pid,
            99
        );
        let pid = key.pid;
        drop(key);
        assert!(reg.lookup(pid, &[0; 4]).is_none());
        assert!(reg.is_empty());
    }

    #[test]
    fn the_phase_decides_what_a_cancel_does() {
        use OnCancel::*;
        use Phase::*;
        assert_eq!(on_cancel(Idle, true), (Ignore, Idle));
        assert_eq!(on_cancel(Idle, false), (Ignore, Idle));
        assert_eq!(on_cancel(Running, true), (Forward, Running));
        assert_eq!(on_cancel(Running, false), (Ignore, Running));
        assert_eq!(on_cancel(Waiting, true), (Keep, Requested));
        assert_eq!(on_cancel(Waiting, false), (Keep, Requested));
        assert_eq!(on_cancel(Requested, false), (Keep, Requested));
        assert_eq!(on_sent(Waiting, true), (Running, false));
        assert_eq!(on_sent(Requested, true), (Running, true));
        assert_eq!(on_sent(Requested, false), (Idle, false));
        assert_eq!(on_sent(Running, false), (Idle, false));
        assert_eq!(on_sent(Idle, true), (Running, false));
    }

    #[tokio::test]
    async fn a_cancel_for_a_waiting_statement_is_kept_and_wakes_the_session() {
        let reg = Arc::new(CancelRegistry::default());
        let key = reg.register();
        let secret = key.secret.to_be_bytes();
        key.waiting();
        let wait = tokio::time::timeout(std::time::Duration::from_millis(50), key.requested());
        assert!(wait.await.is_err(), "no cancel yet");
        let key = Arc::new(key);
        let waiter = tokio::spawn({
            let key = key.clone();
            async move { key.requested().await }
        });
        tokio::task::yield_now().await;
        assert!(reg.lookup(key.pid, &secret).is_none());
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined");
        assert!(key.take_requested());
        assert!(!key.take_requested());
        // Kept until the statement reaches its server, then sent there.
        key.set_target(Some(CancelTarget {
            node: Arc::new(NodeAddr {
                name: "replica1".into(),
                host: "127.0.0.1".into(),
                port: 1,
                tls: crate::backend::NodeTls::disabled(),
            }),
            pid: 7,
            secret: Arc::from(&[1u8, 2, 3, 4][..]),
        }));
        key.waiting();
        assert!(reg.lookup(key.pid, &secret).is_none());
        assert_eq!(key.sent(true).map(|t| t.pid), Some(7));
        assert_eq!(reg.lookup(key.pid, &secret).map(|t| t.pid), Some(7));
        // A cancel while nothing is outstanding is not kept for the next statement.
        assert!(key.sent(false).is_none());
        assert!(reg.lookup(key.pid, &secret).is_none());
        key.waiting();
        assert!(key.sent(true).is_none());
        let pid = key.pid;
        drop(key);
        assert!(reg.lookup(pid, &[0; 4]).is_none());
        assert!(reg.is_empty());
    }
}
