//! What the monitor last saw of every node, shared with the admin console (`SHOW REPLICAS`,
//! `SHOW LAG`, `SHOW NODES`), the metrics and `/healthz`. The monitor writes it after each
//! check; readers take copies. Plain data behind a lock: no IO.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::history::LagHistory;
use super::state::HealthState;
use crate::lock::Locked;
use crate::roles::Roles;

/// One replica as its last check left it.
#[derive(Debug, Clone)]
pub struct ReplicaReport {
    /// Index of the node in the configured node list.
    pub node: usize,
    pub state: HealthState,
    /// When the current state began.
    pub since: Instant,
    /// Why it is in this state (the figures behind the last transition, kept current).
    pub reason: String,
    /// Byte lag at the last successful check; `None` before the first.
    pub lag_bytes: Option<u64>,
    /// Time lag at the last successful check; `None` when unknown.
    pub lag: Option<Duration>,
    /// Times it left the read rotation (healthy -> anything else).
    pub ejections: u64,
    /// Checks made so far (successful or not).
    pub checks: u64,
    /// The last five minutes of successful checks.
    pub history: LagHistory,
}

/// The primary's check.
#[derive(Debug, Clone, Default)]
pub struct PrimaryReport {
    /// When its WAL position was last read.
    pub checked_at: Option<Instant>,
    /// The error of the last check, if it failed.
    pub error: Option<String>,
}

/// The discovered roles and how often the write target changed.
#[derive(Debug, Clone)]
pub struct RoleReport {
    pub roles: Roles,
    /// Changes of the write target since start.
    pub changes: u64,
}

/// The shared board.
#[derive(Debug)]
pub struct LagBoard {
    replicas: Mutex<Vec<ReplicaReport>>,
    primary: Mutex<PrimaryReport>,
    roles: Mutex<RoleReport>,
}

impl LagBoard {
    /// A board for these nodes, none checked yet (down, like a new `ReplicaHealth`), with
    /// the roles expected at start. Every node has a replica report (any node may be a
    /// replica); [`replicas`](Self::replicas) leaves out the write target.
    pub fn new(replica_nodes: &[usize], roles: Roles, now: Instant) -> LagBoard {
        let replicas = replica_nodes
            .iter()
            .map(|&node| unchecked(node, now))
            .collect();
        LagBoard {
            replicas: Mutex::new(replicas),
            primary: Mutex::new(PrimaryReport::default()),
            roles: Mutex::new(RoleReport { roles, changes: 0 }),
        }
    }

    /// The roles as just decided; `changed` says the write target changed.
    pub fn set_roles(&self, roles: Roles, changed: bool) {
        let mut report = self.roles.locked();
        report.roles = roles;
        report.changes += u64::from(changed);
    }

    pub fn roles(&self) -> RoleReport {
        self.roles.locked().clone()
    }

    /// A report for `node`, not checked yet, if it has none (a node added while pgsplit
    /// runs: a member read from Patroni); kept in node order.
    pub fn add(&self, node: usize, now: Instant) {
        let mut replicas = self.replicas.locked();
        if replicas.iter().all(|r| r.node != node) {
            let at = replicas.partition_point(|r| r.node < node);
            replicas.insert(at, unchecked(node, now));
        }
    }

    /// Changes one replica's report.
    pub fn update(&self, node: usize, f: impl FnOnce(&mut ReplicaReport)) {
        let mut replicas = self.replicas.locked();
        if let Some(r) = replicas.iter_mut().find(|r| r.node == node) {
            f(r);
        }
    }

    /// A copy of every node's report, in node order.
    pub fn nodes(&self) -> Vec<ReplicaReport> {
        self.replicas.locked().clone()
    }

    /// A copy of the report of every node but the write target, in node order.
    pub fn replicas(&self) -> Vec<ReplicaReport> {
        let writer = self.roles().roles.writer_node();
        self.replicas
            .locked()
            .iter()
            .filter(|r| Some(r.node) != writer)
            .cloned()
            .collect()
    }

    pub fn set_primary(&self, report: PrimaryReport) {
        *self.primary.locked() = report;
    }

    pub fn primary(&self) -> PrimaryReport {
        self.primary.locked().clone()
    }
}

/// The report of a node not checked yet: down, like a new `ReplicaHealth`.
fn unchecked(node: usize, now: Instant) -> ReplicaReport {
    ReplicaReport {
        node,
        state: HealthState::Down,
        since: now,
        reason: "not checked yet".to_owned(),
        lag_bytes: None,
        lag: None,
        ejections: 0,
        checks: 0,
        history: LagHistory::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_reach_only_their_replica() {
        let now = Instant::now();
        let board = LagBoard::new(&[1, 2], Roles::expected(3, Some(0)), now);
        board.update(2, |r| {
            r.state = HealthState::Lagging;
            r.ejections += 1;
            r.lag_bytes = Some(8 << 20);
        });
        board.update(7, |r| r.ejections = 99);
        let replicas = board.replicas();
        assert_eq!(replicas[0].state, HealthState::Down);
        assert_eq!(replicas[0].lag_bytes, None);
        assert_eq!(replicas[1].state, HealthState::Lagging);
        assert_eq!(replicas[1].ejections, 1);
        assert!(replicas.iter().all(|r| r.ejections < 99));
    }

    #[test]
    fn the_write_target_is_no_replica() {
        let now = Instant::now();
        let board = LagBoard::new(&[0, 1, 2], Roles::expected(3, Some(0)), now);
        let nodes = |b: &LagBoard| b.replicas().iter().map(|r| r.node).collect::<Vec<_>>();
        assert_eq!(nodes(&board), [1, 2]);
        board.set_roles(Roles::expected(3, Some(1)), true);
        assert_eq!(nodes(&board), [0, 2]);
        assert_eq!(board.roles().changes, 1);
    }

    #[test]
    fn a_node_added_later_gets_one_report_in_node_order() {
        let now = Instant::now();
        let board = LagBoard::new(&[0, 1, 3], Roles::expected(5, Some(0)), now);
        board.add(2, now);
        board.add(2, now);
        board.add(4, now);
        let nodes: Vec<usize> = board.nodes().iter().map(|r| r.node).collect();
        assert_eq!(nodes, [0, 1, 2, 3, 4]);
        assert_eq!(board.nodes()[2].checks, 0);
    }
}
