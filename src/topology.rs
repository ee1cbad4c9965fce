//! The replicas as the router sees them: which may serve reads now, and which one gets
//! the next read. Selection is a pure function of a snapshot (least outstanding work
//! relative to weight, weighted round-robin among ties); `Topology` is the small shared
//! shell around it that sessions lease replicas from.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Whether a replica may serve reads, as far as health and lag go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaState {
    Healthy,
    /// Behind by more than the threshold: out of the read rotation.
    Lagging,
    /// Unreachable or failing checks.
    Down,
}

/// One replica's routing-relevant state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Index of the node in the configured node list.
    pub node: usize,
    pub weight: u32,
    pub state: ReplicaState,
    /// Skipped until then after it refused a connection.
    pub cooldown_until: Option<Instant>,
    /// Server connections on it now serving clients.
    pub outstanding: usize,
    /// Reads routed to it so far.
    pub reads: u64,
}

impl Replica {
    pub fn new(node: usize, weight: u32) -> Replica {
        Replica {
            node,
            weight: weight.max(1),
            state: ReplicaState::Healthy,
            cooldown_until: None,
            outstanding: 0,
            reads: 0,
        }
    }

    /// Whether it may take a read at `now`.
    pub fn available(&self, now: Instant) -> bool {
        self.state == ReplicaState::Healthy && self.cooldown_until.is_none_or(|t| now >= t)
    }
}

/// Picks the replica for the next read: the available one with the least outstanding
/// work per unit of weight; among equals, weighted round-robin by `turn`. Returns an
/// index into `replicas`.
pub fn choose(replicas: &[Replica], now: Instant, turn: u64) -> Option<usize> {
    let available = || {
        replicas
            .iter()
            .enumerate()
            .filter(|(_, r)| r.available(now))
    };
    // Compare outstanding/weight without division: a.o * b.w vs b.o * a.w.
    let (_, best) = available().min_by(|(_, a), (_, b)| {
        (a.outstanding as u64 * b.weight as u64).cmp(&(b.outstanding as u64 * a.weight as u64))
    })?;
    let tied = || {
        available().filter(|(_, r)| {
            r.outstanding as u64 * best.weight as u64 == best.outstanding as u64 * r.weight as u64
        })
    };
    let total: u64 = tied().map(|(_, r)| r.weight as u64).sum();
    let mut slot = turn % total.max(1);
    for (i, r) in tied() {
        if slot < r.weight as u64 {
            return Some(i);
        }
        slot -= r.weight as u64;
    }
    None
}

/// The shared replica table.
#[derive(Debug)]
pub struct Topology {
    replicas: Mutex<Vec<Replica>>,
    turn: AtomicU64,
    cooldown: Duration,
}

/// A replica taken for one transaction; gives its slot back when dropped.
#[derive(Debug)]
pub struct Lease {
    topology: Arc<Topology>,
    pub node: usize,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.topology.update(self.node, |r| {
            r.outstanding = r.outstanding.saturating_sub(1)
        });
    }
}

impl Topology {
    pub fn new(replicas: Vec<Replica>, cooldown: Duration) -> Topology {
        Topology {
            replicas: Mutex::new(replicas),
            turn: AtomicU64::new(0),
            cooldown,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Replica>> {
        self.replicas.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leases the replica that should take the next read, if any is available. `turn`
    /// says whether this read takes a round-robin turn: a batch that only prepares and
    /// describes a statement does not, so a client that prepares and then executes each
    /// query does not keep executing on the same replica.
    pub fn lease(self: &Arc<Self>, now: Instant, turn: bool) -> Option<Lease> {
        let turn = match turn {
            true => self.turn.fetch_add(1, Ordering::Relaxed),
            false => self.turn.load(Ordering::Relaxed),
        };
        let mut replicas = self.lock();
        let i = choose(&replicas, now, turn)?;
        let r = &mut replicas[i];
        r.outstanding += 1;
        r.reads += 1;
        Some(Lease {
            topology: self.clone(),
            node: r.node,
        })
    }

    /// A replica refused a connection: skip it for the cooldown.
    pub fn refused(&self, node: usize, now: Instant) {
        let until = now + self.cooldown;
        self.update(node, |r| r.cooldown_until = Some(until));
    }

    /// Changes one replica's entry.
    pub fn update(&self, node: usize, f: impl FnOnce(&mut Replica)) {
        if let Some(r) = self.lock().iter_mut().find(|r| r.node == node) {
            f(r);
        }
    }

    /// A copy of the table.
    pub fn snapshot(&self) -> Vec<Replica> {
        self.lock().clone()
    }
}

#[cfg(test)]
mod tests;
