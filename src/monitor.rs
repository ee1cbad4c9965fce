//! The monitor: one task per node on its own control connection (a pool of one from
//! `crate::control`, never one from the client pools, so checks go on when the pools are
//! exhausted). Every check reads the same things on every node: `pg_is_in_recovery()`, the
//! node's WAL position (written on a primary, replayed on a replica) and its timeline. From
//! what the checks of all nodes last saw, [`crate::roles::decide`] tells which node takes
//! writes and which may take reads; roles are discovered, not configured. When the write
//! target changes, it is logged once with the reason, new writes go to the new one at
//! once (the router reads it from the topology), and the server connections opened to the
//! former primary are fenced: closed instead of reused (`backend::pool::Fences`).
//!
//! The write target's task samples its WAL position into a shared timeline every
//! `lag.check_interval`; right after each of its checks, every other node's task reads its
//! replay position, turns it into lag in bytes and in time (from that timeline, so it does
//! not grow while the primary is idle), feeds the pure state machine in `crate::lag`, and
//! puts every transition into the router's replica table, logged once with the figures
//! behind it. What each check saw goes to the shared [`LagBoard`] for the admin console and
//! the metrics; the `[lag]` settings follow live changes.
//!
//! Each replica check also publishes the replica's replay position to the router's replica
//! table (read-your-writes by LSN). While a healthy replica is behind the highest position
//! a read was held back for (`WritePositions::awaited`), its replay position is also read
//! every [`REPLAY_POLL`] in between (outside the state machine, which keeps its pace), so a
//! client that wrote reads from a replica again soon after the replica replays its write.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::{BuildError, Pool};
use tokio::sync::watch;
use tokio_postgres::types::PgLsn;

use crate::backend::pool::Fences;
use crate::backend::{NodeAddr, Nodes};
use crate::causal::{ClusterId, WritePositions};
use crate::config::LagConfig;
use crate::control::{self, ControlError, ControlLogin};
use crate::lag::timeline::lag_bytes;
use crate::lag::{
    HealthState, LagBoard, LagThresholds, PrimaryReport, PrimaryTimeline, ReplicaHealth, Sample,
};
use crate::lock::Locked;
use crate::roles::{self, NodeSeen, Roles, Seen, Writer};
use crate::topology::{Topology, WriteTarget};

/// Every node's check: whether it is in recovery; its WAL position (written out of
/// recovery, replayed in it); the cluster's identity that causal tokens name; its timeline
/// (out of recovery, from the name of the current WAL file, which changes at once with a
/// promotion, where `pg_control_checkpoint()` waits for the next checkpoint; in recovery,
/// the timeline it receives, else the later of its minimum recovery point's and its last
/// restartpoint's, which trail what it replayed); its WAL page size
/// (see `causal::commit_bound`).
const NODE_CHECK: &str = "SELECT pg_is_in_recovery(), \
     CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, \
     (SELECT system_identifier FROM pg_control_system()), \
     CASE WHEN pg_is_in_recovery() \
          THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver), \
                        greatest((SELECT min_recovery_end_timeline FROM pg_control_recovery()), \
                                 (SELECT timeline_id FROM pg_control_checkpoint()))) \
          ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END, \
     current_setting('wal_block_size')::int8";

/// How often a replica's replay position is read while it is behind the latest write
/// position clients wait for.
pub const REPLAY_POLL: Duration = Duration::from_millis(10);

/// The thresholds a `[lag]` section sets.
pub fn thresholds(lag: &LagConfig) -> LagThresholds {
    let bytes = lag.max_replica_lag.as_u64();
    LagThresholds {
        max_bytes: (bytes > 0).then_some(bytes),
        max_lag: lag.max_replica_delay.non_zero(),
        readmit_fraction: f64::from(lag.readmit_percent) / 100.0,
        readmit_after: lag.readmit_after.as_std(),
        down_after_failures: lag.down_after_failures,
        up_after_successes: lag.up_after_successes,
    }
}

/// What the monitor's tasks share, and where their results go.
pub struct Shared {
    pub topology: Arc<Topology>,
    pub board: Arc<LagBoard>,
    pub positions: Arc<WritePositions>,
    pub fences: Arc<Fences>,
}

/// Starts the checks: one task per filled node place (`nodes`, by index); `expected` is the
/// node configured as the primary, which takes writes until the checks say otherwise. Each
/// follows `lag`, the live `[lag]` section: a new interval or new thresholds apply from the
/// next check. The tasks stop when the runtime does. The returned handle starts the checks
/// of a node added later ([`Monitor::watch`]).
pub fn spawn(
    nodes: Arc<Nodes>,
    expected: Option<usize>,
    shared: Shared,
    settings: ControlLogin,
    lag: watch::Receiver<LagConfig>,
) -> Monitor {
    let cluster = Arc::new(Cluster {
        timeline: Mutex::new(PrimaryTimeline::new()),
        roles: Mutex::new(RoleState {
            seen: vec![NodeSeen::default(); nodes.len()],
            writer: expected.map_or(Writer::None, Writer::Node),
            last_writer: expected,
            reads: Vec::new(),
        }),
        nodes: nodes.clone(),
        checked: watch::channel(0u64).0,
        shared,
    });
    let monitor = Monitor {
        cluster,
        settings,
        lag,
    };
    for (index, node) in nodes.filled() {
        monitor.watch(index, node);
    }
    monitor
}

/// Starts the checks of nodes added while pgsplit runs.
pub struct Monitor {
    cluster: Arc<Cluster>,
    settings: ControlLogin,
    lag: watch::Receiver<LagConfig>,
}

impl Monitor {
    /// Starts checking `node`, in place `index` (a place no task checks yet).
    pub fn watch(&self, index: usize, node: Arc<NodeAddr>) {
        let lag = &self.lag;
        let health = match ReplicaHealth::new(thresholds(&lag.borrow()), Instant::now()) {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(node = %node.name, error = %e, "lag thresholds are invalid; node not watched");
                return;
            }
        };
        let control = match Control::new(node.clone(), &self.settings) {
            Ok(control) => control,
            Err(e) => {
                tracing::error!(node = %node.name, error = %e, "no control pool; node not watched");
                return;
            }
        };
        self.cluster.shared.board.add(index, Instant::now());
        let clock = Clock::new(lag.clone(), self.cluster.checked.subscribe());
        let watch = NodeWatch {
            index,
            health,
            failures: 0,
            cluster: self.cluster.clone(),
        };
        tokio::spawn(watch_node(watch, control, clock));
    }
}

/// The state every node's task shares.
struct Cluster {
    /// The write target's WAL position over time.
    timeline: Mutex<PrimaryTimeline>,
    roles: Mutex<RoleState>,
    /// The node places, for their names.
    nodes: Arc<Nodes>,
    /// Counts the write target's checks; the other nodes check right after each one.
    checked: watch::Sender<u64>,
    shared: Shared,
}

/// What the role decision works from.
struct RoleState {
    seen: Vec<NodeSeen>,
    writer: Writer,
    /// The node that took writes last (kept while no node does), for `roles::to_fence`.
    last_writer: Option<usize>,
    /// Whether the roles allowed reads on each node, as last put in the topology.
    reads: Vec<bool>,
}

impl Cluster {
    /// Records one check of node `index` (`None`: it failed), decides the roles again and
    /// applies a change. Returns whether `index` is the write target now.
    fn observe(
        &self,
        index: usize,
        seen: Option<Seen>,
        now: Instant,
        stale_after: Duration,
    ) -> bool {
        let mut state = self.roles.locked();
        if let Some(node) = state.seen.get_mut(index) {
            match seen {
                Some(s) => node.checked(s, now),
                None => node.failures += 1,
            }
        }
        let names = self.nodes.names();
        let roles = roles::decide(&state.seen, &names, &state.writer, now, stale_after);
        let changed = roles.writer != state.writer;
        if changed {
            self.switch(&state.writer, &roles, &names);
            if let Some(old) = roles::to_fence(state.last_writer, &roles.writer) {
                self.shared.fences.fence(old);
            }
            if let Writer::Node(n) = roles.writer {
                state.last_writer = Some(n);
            }
            state.writer = roles.writer.clone();
        }
        // Only changes reach the topology (its lock is on the read path).
        let topology = &self.shared.topology;
        for (node, verdict) in roles.nodes.iter().enumerate() {
            if state.reads.get(node) != Some(&verdict.reads) {
                topology.update(node, |r| r.role_reads = verdict.reads);
            }
        }
        state.reads = roles.nodes.iter().map(|v| v.reads).collect();
        let is_writer = roles.writer == Writer::Node(index);
        self.shared.board.set_roles(roles, changed);
        is_writer
    }

    /// The write target changes from `former` to what `roles` say: logged once with the
    /// reason; writes go to the new one from now on.
    fn switch(&self, former: &Writer, roles: &Roles, names: &[String]) {
        let reason = roles::change_reason(roles, names);
        let name = |w: &Writer| match w {
            Writer::Node(n) => names.get(*n).cloned().unwrap_or_default(),
            Writer::None => "none".to_owned(),
            Writer::SplitBrain(_) => "refused (split brain)".to_owned(),
        };
        let target = match &roles.writer {
            Writer::Node(n) => WriteTarget::Node(*n),
            Writer::None => WriteTarget::Waiting,
            Writer::SplitBrain(_) => WriteTarget::Refused(format!(
                "pgsplit: writes refused: {reason}; they resume when one of them is stopped or back in recovery"
            )),
        };
        self.shared.topology.set_writer(target);
        match &roles.writer {
            Writer::Node(_) => {
                tracing::warn!(from = %name(former), to = %name(&roles.writer), %reason, "the primary changed: writes go to the new one")
            }
            _ => {
                tracing::error!(from = %name(former), to = %name(&roles.writer), %reason, "no node takes writes")
            }
        }
    }
}

/// A node's control connection: a pool of one, reopened when it breaks.
struct Control {
    node: Arc<NodeAddr>,
    pool: Pool,
    /// A check taking longer than this fails.
    limit: Duration,
}

impl Control {
    fn new(node: Arc<NodeAddr>, login: &ControlLogin) -> Result<Control, BuildError> {
        let pool = control::pool(&node, login, "pgsplit monitor", 1)?;
        Ok(Control {
            node,
            pool,
            limit: Duration::from_secs(2),
        })
    }

    /// Runs `sql` and returns its first row, connecting first if needed.
    async fn query_one(&self, sql: &str) -> Result<tokio_postgres::Row, String> {
        match control::query(&self.pool, sql, self.limit).await {
            Ok(rows) => rows.into_iter().next().ok_or_else(|| "no row".to_owned()),
            Err(ControlError::Timeout(limit)) => Err(format!("check took longer than {limit:?}")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// When the next check runs. The write target's checks tick every `check_interval`; every
/// other node's check follows the write target's at once, so a replica's replay position
/// is read a round trip after the primary's WAL position, not up to an interval after it
/// (which would under-read the lag of a fast-writing primary by up to interval × write
/// rate, about 20 MB at 80 MB/s and 250 ms); every two intervals at the latest, so a node
/// is still checked while the primary's checks hang. With no write target, every node
/// ticks. The pace follows live changes of the interval; it also sets the check timeout
/// (8 intervals, at least 800 ms).
struct Clock {
    lag: watch::Receiver<LagConfig>,
    interval: Duration,
    tick: tokio::time::Interval,
    /// The write target's checks.
    primary: watch::Receiver<u64>,
}

impl Clock {
    fn new(lag: watch::Receiver<LagConfig>, primary: watch::Receiver<u64>) -> Clock {
        let interval = lag.borrow().check_interval.as_std();
        Clock {
            lag,
            interval,
            tick: ticker(interval),
            primary,
        }
    }

    /// Checks failed in a row after which a node is down (`lag.down_after_failures`).
    fn down_after_failures(&self) -> u32 {
        self.lag.borrow().down_after_failures
    }

    /// How long after its last successful check a node no longer counts as up for the
    /// roles: the checks that take a replica down, and one more.
    fn stale_after(&self) -> Duration {
        self.interval * (self.down_after_failures() + 1)
    }

    /// Waits for the next check (`follow`: right after the write target's); returns the
    /// `[lag]` section if it changed since the last.
    async fn next(&mut self, control: &mut Control, follow: bool) -> Option<LagConfig> {
        if follow {
            let _ = tokio::time::timeout(self.interval * 2, self.primary.changed()).await;
        } else {
            self.tick.tick().await;
        }
        if !self.lag.has_changed().unwrap_or(false) {
            return None;
        }
        let lag = self.lag.borrow_and_update().clone();
        let interval = lag.check_interval.as_std();
        if interval != self.interval {
            self.interval = interval;
            self.tick = ticker(interval);
            self.tick.tick().await; // the first tick is immediate
        }
        control.limit = (interval * 8).max(Duration::from_millis(800));
        Some(lag)
    }
}

/// One node's part of the monitor: its lag state machine and where results go.
struct NodeWatch {
    index: usize,
    health: ReplicaHealth,
    /// Checks failed in a row.
    failures: u32,
    cluster: Arc<Cluster>,
}

/// What one successful check read.
struct Check {
    seen: Seen,
    lsn: u64,
    system: u64,
    page: u64,
}

fn read_check(row: &tokio_postgres::Row) -> Result<Check, String> {
    let e = |e: tokio_postgres::Error| e.to_string();
    let in_recovery: bool = row.try_get(0).map_err(e)?;
    let lsn: Option<PgLsn> = row.try_get(1).map_err(e)?;
    let system: i64 = row.try_get(2).map_err(e)?;
    let timeline: Option<i32> = row.try_get(3).map_err(e)?;
    let page: i64 = row.try_get(4).map_err(e)?;
    Ok(Check {
        seen: Seen {
            in_recovery,
            timeline: timeline.and_then(|t| u32::try_from(t).ok()),
        },
        lsn: lsn.map_or(0, u64::from),
        system: system as u64,
        page: page.max(0) as u64,
    })
}

impl NodeWatch {
    fn shared(&self) -> &Shared {
        &self.cluster.shared
    }

    /// After a check of the write target: its WAL position goes to the timeline the lag of
    /// the others is measured against, its identity to causal tokens.
    fn primary_checked(&mut self, check: &Result<Check, String>, down_after: u32, name: &str) {
        let shared = &self.cluster.shared;
        shared
            .topology
            .set_primary_down(self.failures >= down_after);
        let was_failing = shared.board.primary().error.is_some();
        match check {
            Ok(c) => {
                let now = Instant::now();
                lock(&self.cluster.timeline).record(now, c.lsn);
                shared.positions.set_cluster(ClusterId {
                    system: c.system,
                    timeline: c.seen.timeline.unwrap_or(0),
                });
                shared.positions.set_page(c.page);
                shared.board.set_primary(PrimaryReport {
                    checked_at: Some(now),
                    error: None,
                });
                if was_failing {
                    tracing::info!(node = %name, "primary checks work again");
                }
            }
            Err(e) => {
                if !was_failing {
                    tracing::warn!(node = %name, error = %e, "cannot check the primary's WAL position");
                }
                let checked_at = shared.board.primary().checked_at;
                shared.board.set_primary(PrimaryReport {
                    checked_at,
                    error: Some(e.clone()),
                });
            }
        }
        self.cluster.checked.send_modify(|n| *n += 1);
    }

    /// The lag sample a check makes; `None` while there is no primary position to compare
    /// with.
    fn sample(&self, check: &Result<Check, String>, now: Instant) -> Option<Sample> {
        let c = match check {
            Ok(c) => c,
            Err(reason) => {
                return Some(Sample::Failed {
                    reason: reason.clone(),
                })
            }
        };
        if !c.seen.in_recovery {
            return Some(Sample::Ok {
                lag_bytes: 0,
                lag: Some(Duration::ZERO),
                in_recovery: false,
            });
        }
        self.shared().topology.replayed(self.index, c.lsn);
        let timeline = lock(&self.cluster.timeline);
        let primary = timeline.latest()?;
        // Behind everything the timeline remembers: at least its whole span.
        let lag = timeline
            .lag_seconds(c.lsn, now)
            .unwrap_or_else(|| timeline.span(now));
        Some(Sample::Ok {
            lag_bytes: lag_bytes(primary, c.lsn),
            lag: Some(lag),
            in_recovery: true,
        })
    }

    /// Feeds one sample to the state machine; publishes the figures and any transition.
    fn observe(&mut self, sample: &Sample, now: Instant, name: &str, is_writer: bool) {
        let transition = self.health.observe(sample, now);
        let health = &self.health;
        self.cluster.shared.board.update(self.index, |r| {
            r.checks += 1;
            if let Sample::Ok {
                lag_bytes,
                lag,
                in_recovery: true,
            } = sample
            {
                r.lag_bytes = Some(*lag_bytes);
                r.lag = *lag;
                r.history.record(now, *lag_bytes, *lag);
            }
            if let Some(t) = &transition {
                if t.from == HealthState::Healthy {
                    r.ejections += 1;
                }
            }
            r.state = health.state();
            r.since = health.since();
            r.reason = health.reason().to_owned();
        });
        let Some(t) = transition else {
            return;
        };
        let state = t.to;
        self.shared()
            .topology
            .update(self.index, |r| r.state = state);
        match t.to {
            HealthState::Healthy => {
                tracing::info!(node = %name, transition = %t, "replica back in the read rotation")
            }
            // The write target is out of recovery, as it should be.
            HealthState::Promoted if is_writer => {}
            HealthState::Promoted => {
                tracing::warn!(node = %name, transition = %t, "node is out of recovery, not a replica; no reads go to it")
            }
            _ if t.from == HealthState::Promoted && is_writer => {}
            _ => {
                tracing::warn!(node = %name, transition = %t, "replica out of the read rotation")
            }
        }
    }
}

async fn watch_node(mut watch: NodeWatch, mut control: Control, mut clock: Clock) {
    let name = control.node.name.clone();
    let mut replayed = 0;
    let positions = watch.shared().positions.clone();
    let mut published = positions.subscribe();
    let mut last_check = Instant::now();
    loop {
        let writer = watch.shared().topology.writer();
        let follow = writer.is_some() && writer != Some(watch.index);
        // While clients may wait for this replica (healthy and behind the highest position
        // a read was held back for), its replay position is read every REPLAY_POLL, else at
        // once when a new such position is published; but never so often that a full check
        // is put off beyond two intervals (as when the primary's checks hang).
        let between = follow
            && watch.health.state() == HealthState::Healthy
            && last_check.elapsed() < clock.interval * 2;
        let next = if !between {
            Some(clock.next(&mut control, follow).await)
        } else if positions.awaited() > replayed {
            tokio::select! {
                lag = clock.next(&mut control, follow) => Some(lag),
                () = tokio::time::sleep(REPLAY_POLL) => None,
            }
        } else {
            tokio::select! {
                lag = clock.next(&mut control, follow) => Some(lag),
                Ok(()) = published.changed() => None,
            }
        };
        let Some(lag) = next else {
            // Between two checks: only the replay position, for waiting clients.
            if let Some(lsn) = control
                .query_one("SELECT pg_last_wal_replay_lsn()")
                .await
                .ok()
                .and_then(|row| row.try_get::<_, Option<PgLsn>>(0).ok().flatten())
            {
                replayed = u64::from(lsn);
                watch.shared().topology.replayed(watch.index, replayed);
            }
            continue;
        };
        if let Some(lag) = lag {
            if let Err(e) = watch.health.set_thresholds(thresholds(&lag)) {
                tracing::warn!(node = %name, error = %e, "lag thresholds refused; keeping the old ones");
            }
        }
        let check = control
            .query_one(NODE_CHECK)
            .await
            .and_then(|row| read_check(&row));
        last_check = Instant::now();
        watch.failures = if check.is_ok() { 0 } else { watch.failures + 1 };
        if let Ok(c) = &check {
            if c.seen.in_recovery {
                replayed = c.lsn;
            }
        }
        let now = Instant::now();
        let seen = check.as_ref().ok().map(|c| c.seen);
        let is_writer = watch
            .cluster
            .observe(watch.index, seen, now, clock.stale_after());
        if is_writer {
            watch.primary_checked(&check, clock.down_after_failures(), &name);
        }
        if let Some(sample) = watch.sample(&check, now) {
            watch.observe(&sample, now, &name, is_writer);
        }
    }
}

/// A check every `interval`; a late check is not made up for.
fn ticker(interval: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

fn lock(timeline: &Mutex<PrimaryTimeline>) -> std::sync::MutexGuard<'_, PrimaryTimeline> {
    timeline.locked()
}
