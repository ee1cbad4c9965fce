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

/// A client's cancel state: the server connection serving it, and where its statement is.
#[derive(Debug)]
pub(super) struct Slot {
    state: Mutex<SlotState>,
    /// Wakes a session waiting for a server when a cancel for it comes.
    requested: tokio::sync::Notify,
}

#[derive(Debug)]
struct SlotState {
    /// The server connection serving the client (shown by `SHOW CLIENTS` too).
    target: Option<CancelTarget>,
    phase: Phase,
}

impl Default for Slot {
    fn default() -> Slot {
        Slot {
            state: Mutex::new(SlotState {
                target: None,
                phase: Phase::Idle,
            }),
            requested: tokio::sync::Notify::new(),
        }
    }
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.locked()
    }

    /// Names the server connection now serving the client (or none). Without one, nothing
    /// of the client's is outstanding.
    pub(super) fn set_target(&self, target: Option<CancelTarget>) {
        let mut state = self.lock();
        if target.is_none() {
            state.phase = Phase::Idle;
        }
        state.target = target;
    }

    /// The server connection now serving the client.
    pub(super) fn target(&self) -> Option<CancelTarget> {
        self.lock().target.clone()
    }

    /// The client sent something that has not been written to a server yet.
    pub(super) fn waiting(&self) {
        let mut state = self.lock();
        if state.phase != Phase::Requested {
            state.phase = Phase::Waiting;
        }
    }

    /// What the client sent has been written to its server (`owes`: the server owes it
    /// replies). Returns the server to cancel when a cancel came before it got there.
    pub(super) fn sent(&self, owes: bool) -> Option<CancelTarget> {
        let mut state = self.lock();
        let (phase, cancel) = on_sent(state.phase, owes && state.target.is_some());
        state.phase = phase;
        cancel.then(|| state.target.clone()).flatten()
    }

    /// Whether a cancel came for the statement still waiting; takes it.
    pub(super) fn take_requested(&self) -> bool {
        let mut state = self.lock();
        if state.phase == Phase::Requested {
            state.phase = Phase::Idle;
            return true;
        }
        false
    }

    /// Returns once a cancel has come for the statement still waiting.
    pub(super) async fn requested(&self) {
        loop {
            let notified = self.requested.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lock().phase == Phase::Requested {
                return;
            }
            notified.await;
        }
    }

    /// A cancel request with the right key came: the server to send it to, if the
    /// client's statement runs on one. A statement still on its way to one keeps the
    /// cancel (the session is woken).
    pub(super) fn cancel(&self, pid: i32) -> Option<CancelTarget> {
        let mut state = self.lock();
        let (action, phase) = on_cancel(state.phase, state.target.is_some());
        state.phase = phase;
        match action {
            OnCancel::Forward => state.target.clone(),
            OnCancel::Keep => {
                tracing::debug!(
                    client = pid,
                    "cancel request for a statement not on a server yet: kept"
                );
                self.requested.notify_waiters();
                None
            }
            OnCancel::Ignore => None,
        }
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
    fn the_phase_decides_what_a_cancel_does() {
        use OnCancel::*;
        use Phase::*;
        // (phase, has a target) -> (what to do, the phase after)
        let cancels = [
            ((Idle, true), (Ignore, Idle)),
            ((Idle, false), (Ignore, Idle)),
            ((Running, true), (Forward, Running)),
            ((Running, false), (Ignore, Running)),
            ((Waiting, true), (Keep, Requested)),
            ((Waiting, false), (Keep, Requested)),
            ((Requested, false), (Keep, Requested)),
        ];
        for ((phase, target), expected) in cancels {
            assert_eq!(on_cancel(phase, target), expected, "{phase:?} {target}");
        }
        // After the statement is written: the phase, and whether a cancel that came goes.
        assert_eq!(on_sent(Waiting, true), (Running, false));
        assert_eq!(on_sent(Requested, true), (Running, true));
        assert_eq!(on_sent(Requested, false), (Idle, false));
        assert_eq!(on_sent(Running, false), (Idle, false));
        assert_eq!(on_sent(Idle, true), (Running, false));
    }
}
