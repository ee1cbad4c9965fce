//! Cancel requests across pooling. Each client gets pgsplit's own process id and secret
//! key; while a server connection serves the client, the client's slot names that
//! server's key, so a CancelRequest reaches whichever server runs the client's query
//! at that moment. A cancel request travels over the same kind of link as the node's server
//! connections (TLS when its settings say so).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;

use crate::backend::NodeAddr;
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

type Slot = Arc<Mutex<Option<CancelTarget>>>;

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
    /// Names the server connection now serving the client (or none).
    pub fn set_target(&self, target: Option<CancelTarget>) {
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = target;
    }
}

impl Drop for CancelKey {
    fn drop(&mut self) {
        self.registry
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.pid);
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
        let slot: Slot = Arc::default();
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pid, (secret, slot.clone()));
        CancelKey {
            pid,
            secret,
            slot,
            registry: self.clone(),
        }
    }

    /// The server to cancel for a client's key, if the key is right and the client is
    /// being served.
    pub fn lookup(&self, pid: i32, secret: &[u8]) -> Option<CancelTarget> {
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let (expected, slot) = clients.get(&pid)?;
        if secret != expected.to_be_bytes() {
            return None;
        }
        let target = slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
        target
    }

    /// The server now serving client `pid`, if any (for `SHOW CLIENTS`).
    pub fn serving(&self, pid: i32) -> Option<CancelTarget> {
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let (_, slot) = clients.get(&pid)?;
        let target = slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
        target
    }

    pub fn len(&self) -> usize {
        self.clients.lock().unwrap_or_else(|e| e.into_inner()).len()
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
}
