//! The replicas as the router sees them: which may serve reads now, and which one gets
//! the next read. Selection is a pure function of a snapshot: least outstanding work
//! relative to weight; among equals, the client's own replica. Each client gets a slot
//! when it connects (0, 1, 2, ...); with the replicas laid out by weight, the slot names
//! its own replica, so consecutive clients are spread like a weighted round-robin. A
//! client reads from its own replica as long as that replica is available and not busier
//! than the others (Pgpool-II's session-level load balancing, decided per transaction);
//! when its replica leaves the rotation it reads elsewhere, and it comes back with it.
//! `Topology` is the small shared shell around it that sessions lease replicas from; it
//! also holds the write target the monitor discovered (`crate::roles`), read with one
//! atomic load per check-out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::lag::HealthState;
use crate::lock::Locked;

/// One replica's routing-relevant state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Index of the node in the configured node list.
    pub node: usize,
    pub weight: u32,
    pub state: HealthState,
    /// Skipped until then after it refused a connection.
    pub cooldown_until: Option<Instant>,
    /// Server connections on it now serving clients.
    pub outstanding: usize,
    /// Reads routed to it so far.
    pub reads: u64,
    /// The WAL position it had replayed when last checked (0: not known).
    pub replay_lsn: u64,
    /// The discovered roles allow reads on it (a replica on the primary's timeline; see
    /// `crate::roles`).
    pub role_reads: bool,
    /// Patroni lets it take reads: not tagged `noloadbalance`, and (for a member Patroni
    /// added) still listed in its `/cluster` (see `crate::patroni`). Always true without
    /// Patroni.
    pub balanced: bool,
}

impl Replica {
    pub fn new(node: usize, weight: u32) -> Replica {
        Replica {
            node,
            weight: weight.max(1),
            state: HealthState::Healthy,
            cooldown_until: None,
            outstanding: 0,
            reads: 0,
            replay_lsn: 0,
            role_reads: true,
            balanced: true,
        }
    }

    /// Whether it may take a read at `now`.
    pub fn available(&self, now: Instant) -> bool {
        self.state == HealthState::Healthy
            && self.role_reads
            && self.balanced
            && self.cooldown_until.is_none_or(|t| now >= t)
    }
}

/// Picks the replica for a read of the client in `slot`, among the available ones that
/// have replayed `min_lsn`: the one with the least outstanding work per unit of weight;
/// among equals, the client's own replica (where `slot` falls when all the replicas are
/// laid out by weight) if it is one of them, else where `slot` falls among the equals.
/// Returns an index into `replicas`.
pub fn choose(replicas: &[Replica], now: Instant, slot: u64, min_lsn: u64) -> Option<usize> {
    let available = || {
        replicas
            .iter()
            .enumerate()
            .filter(|(_, r)| r.available(now) && r.replay_lsn >= min_lsn)
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
    // The client's own replica, from all of them, so that it does not change when
    // another replica leaves or joins the rotation (nodes that are no replica by their
    // role, such as the primary, left out).
    let own = at_slot(
        replicas
            .iter()
            .enumerate()
            .filter(|(_, r)| r.role_reads && r.balanced),
        slot,
    );
    if own.is_some_and(|own| tied().any(|(i, _)| i == own)) {
        return own;
    }
    at_slot(tied(), slot)
}

/// Where `slot` falls when `candidates` are laid out in turn, each taking as many slots
/// as its weight.
fn at_slot<'a>(
    candidates: impl Iterator<Item = (usize, &'a Replica)> + Clone,
    slot: u64,
) -> Option<usize> {
    let total: u64 = candidates.clone().map(|(_, r)| r.weight as u64).sum();
    let mut slot = slot % total.max(1);
    for (i, r) in candidates {
        if slot < r.weight as u64 {
            return Some(i);
        }
        slot -= r.weight as u64;
    }
    None
}

/// Why no replica was leased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unleased {
    /// None is available.
    Unavailable,
    /// Some are available, but none has replayed the position asked for.
    Behind,
}

/// Where writes go now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteTarget {
    /// This node (index in the configured node list).
    Node(usize),
    /// No node is known to take writes: a write waits for one (`pool.primary_wait_timeout`).
    Waiting,
    /// Split brain: writes are refused, for this reason.
    Refused(String),
}

/// `writer` when no node takes writes.
const NO_WRITER: usize = usize::MAX;
/// `writer` while writes are refused (split brain).
const REFUSED: usize = usize::MAX - 1;

/// The shared replica table.
#[derive(Debug)]
pub struct Topology {
    replicas: Mutex<Vec<Replica>>,
    /// The node writes go to, or [`NO_WRITER`], or [`REFUSED`].
    writer: std::sync::atomic::AtomicUsize,
    /// Why writes are refused, while `writer` is [`REFUSED`].
    refusal: Mutex<String>,
    /// The monitor finds the primary down (it failed `lag.down_after_failures` checks in a
    /// row).
    primary_down: std::sync::atomic::AtomicBool,
    /// The slot the next client gets.
    next_slot: AtomicU64,
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
            writer: std::sync::atomic::AtomicUsize::new(NO_WRITER),
            refusal: Mutex::default(),
            primary_down: Default::default(),
            next_slot: AtomicU64::new(0),
            cooldown,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Replica>> {
        self.replicas.locked()
    }

    /// The slot of a client that has just connected: the next one in turn.
    pub fn new_client_slot(&self) -> u64 {
        self.next_slot.fetch_add(1, Ordering::Relaxed)
    }

    /// Leases the replica that should take the next read of the client in `slot`, among
    /// the available ones that have replayed `min_lsn`.
    pub fn lease(
        self: &Arc<Self>,
        now: Instant,
        slot: u64,
        min_lsn: u64,
    ) -> Result<Lease, Unleased> {
        let mut replicas = self.lock();
        let Some(i) = choose(&replicas, now, slot, min_lsn) else {
            let behind = min_lsn > 0 && replicas.iter().any(|r| r.available(now));
            return Err(if behind {
                Unleased::Behind
            } else {
                Unleased::Unavailable
            });
        };
        let r = &mut replicas[i];
        r.outstanding += 1;
        r.reads += 1;
        Ok(Lease {
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

    /// A replica's replay position, as just checked.
    pub fn replayed(&self, node: usize, lsn: u64) {
        self.update(node, |r| r.replay_lsn = lsn);
    }

    /// Where writes go from now on.
    pub fn set_writer(&self, target: WriteTarget) {
        let value = match target {
            WriteTarget::Node(n) => n,
            WriteTarget::Waiting => NO_WRITER,
            WriteTarget::Refused(why) => {
                *self.refusal.locked() = why;
                REFUSED
            }
        };
        self.writer.store(value, Ordering::Release);
    }

    /// The node writes go to now, if any (one atomic load).
    pub fn writer(&self) -> Option<usize> {
        match self.writer.load(Ordering::Acquire) {
            NO_WRITER | REFUSED => None,
            n => Some(n),
        }
    }

    /// Where writes go now, with the reason when they are refused.
    pub fn write_target(&self) -> WriteTarget {
        match self.writer.load(Ordering::Acquire) {
            NO_WRITER => WriteTarget::Waiting,
            REFUSED => WriteTarget::Refused(self.refusal.locked().clone()),
            n => WriteTarget::Node(n),
        }
    }

    /// The monitor's verdict on the primary.
    pub fn set_primary_down(&self, down: bool) {
        self.primary_down.store(down, Ordering::Relaxed);
    }

    /// Whether the monitor finds the primary down.
    pub fn primary_down(&self) -> bool {
        self.primary_down.load(Ordering::Relaxed)
    }

    /// Whether the monitor has found the replica `node` down (it fails its checks) or out of
    /// recovery.
    pub fn is_down(&self, node: usize) -> bool {
        self.lock()
            .iter()
            .any(|r| r.node == node && matches!(r.state, HealthState::Down | HealthState::Promoted))
    }

    /// A copy of the table.
    pub fn snapshot(&self) -> Vec<Replica> {
        self.lock().clone()
    }
}

#[cfg(test)]
mod tests;
