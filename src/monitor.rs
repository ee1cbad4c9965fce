//! The lag guard's IO shell: one task per node on its own control connection (a pool of one
//! from `crate::control`, never one from the client pools, so checks go on when the pools
//! are exhausted). The primary's
//! task samples `pg_current_wal_lsn()` into a shared timeline every `lag.check_interval`;
//! right after each sample, each replica's task reads `pg_last_wal_replay_lsn()`, turns it
//! into lag in bytes and in time (from that timeline,
//! so it does not grow while the primary is idle), feeds the pure state machine in
//! `crate::lag`, and puts every transition into the router's replica table, logged once
//! with the figures behind it. What each check saw goes to the shared [`LagBoard`] for the
//! admin console and the metrics; the `[lag]` settings follow live changes.
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

use crate::backend::NodeAddr;
use crate::causal::{ClusterId, WritePositions};
use crate::config::LagConfig;
use crate::control::{self, ControlError, ControlLogin};
use crate::lag::timeline::lag_bytes;
use crate::lag::{
    HealthState, LagBoard, LagThresholds, PrimaryReport, PrimaryTimeline, ReplicaHealth, Sample,
};
use crate::topology::{ReplicaState, Topology};

/// The primary's check: its WAL position, the cluster's identity that causal tokens name
/// (system identifier and timeline), and its WAL page size (see `causal::commit_bound`).
const PRIMARY_CHECK: &str = "SELECT pg_current_wal_lsn(), \
     (SELECT system_identifier FROM pg_control_system()), \
     (SELECT timeline_id FROM pg_control_checkpoint()), \
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

/// Starts the checks: one task for the primary, one per replica (`replicas` holds node
/// indexes and addresses). Each follows `lag`, the live `[lag]` section: a new interval or
/// new thresholds apply from the next check. What they see goes to `board`; transitions go
/// to `topology`. The tasks stop when the runtime does.
pub fn spawn(
    primary: Arc<NodeAddr>,
    replicas: Vec<(usize, Arc<NodeAddr>)>,
    topology: Arc<Topology>,
    board: Arc<LagBoard>,
    positions: Arc<WritePositions>,
    settings: ControlLogin,
    lag: watch::Receiver<LagConfig>,
) {
    let timeline = Arc::new(Mutex::new(PrimaryTimeline::new()));
    // Counts the primary's checks; each replica checks right after each one.
    let (primary_checked, _) = watch::channel(0u64);
    let replica_pace: Vec<_> = replicas
        .iter()
        .map(|_| primary_checked.subscribe())
        .collect();
    match Control::new(primary, &settings) {
        Ok(control) => {
            tokio::spawn(watch_primary(
                control,
                timeline.clone(),
                board.clone(),
                topology.clone(),
                positions.clone(),
                lag.clone(),
                primary_checked,
            ));
        }
        Err(e) => tracing::error!(error = %e, "no control pool; the primary is not watched"),
    }
    for ((index, node), pace) in replicas.into_iter().zip(replica_pace) {
        let health = match ReplicaHealth::new(thresholds(&lag.borrow()), Instant::now()) {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(node = %node.name, error = %e, "lag thresholds are invalid; replica not watched");
                continue;
            }
        };
        let control = match Control::new(node.clone(), &settings) {
            Ok(control) => control,
            Err(e) => {
                tracing::error!(node = %node.name, error = %e, "no control pool; replica not watched");
                continue;
            }
        };
        let watch = ReplicaWatch {
            index,
            health,
            timeline: timeline.clone(),
            topology: topology.clone(),
            board: board.clone(),
            positions: positions.clone(),
        };
        tokio::spawn(watch_replica(
            watch,
            control,
            Clock::new(lag.clone(), Some(pace)),
        ));
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

/// When the next check runs. The primary's checks tick every `check_interval`; each
/// replica's check follows the primary's at once (see [`Pace::AfterPrimary`]). The pace
/// follows live changes of the interval; it also sets the check timeout (8 intervals, at
/// least 800 ms).
struct Clock {
    lag: watch::Receiver<LagConfig>,
    interval: Duration,
    pace: Pace,
}

enum Pace {
    /// A tick every interval (the primary).
    Every(tokio::time::Interval),
    /// Right after each check of the primary, so the replica's replay position is read a
    /// round trip after the primary's WAL position, not up to an interval after it (which
    /// would under-read the lag of a fast-writing primary by up to interval × write rate,
    /// about 20 MB at 80 MB/s and 250 ms). Every two intervals at the latest, so a replica
    /// is still checked while the primary's checks hang.
    AfterPrimary(watch::Receiver<u64>),
}

impl Clock {
    fn new(lag: watch::Receiver<LagConfig>, after_primary: Option<watch::Receiver<u64>>) -> Clock {
        let interval = lag.borrow().check_interval.as_std();
        let pace = match after_primary {
            Some(primary) => Pace::AfterPrimary(primary),
            None => Pace::Every(ticker(interval)),
        };
        Clock {
            lag,
            interval,
            pace,
        }
    }

    /// Checks failed in a row after which a node is down (`lag.down_after_failures`).
    fn down_after_failures(&self) -> u32 {
        self.lag.borrow().down_after_failures
    }

    /// Waits for the next check; returns the `[lag]` section if it changed since the last.
    async fn next(&mut self, control: &mut Control) -> Option<LagConfig> {
        match &mut self.pace {
            Pace::Every(tick) => {
                tick.tick().await;
            }
            Pace::AfterPrimary(primary) => {
                let _ = tokio::time::timeout(self.interval * 2, primary.changed()).await;
            }
        }
        if !self.lag.has_changed().unwrap_or(false) {
            return None;
        }
        let lag = self.lag.borrow_and_update().clone();
        let interval = lag.check_interval.as_std();
        if interval != self.interval {
            self.interval = interval;
            if let Pace::Every(tick) = &mut self.pace {
                *tick = ticker(interval);
                tick.tick().await; // the first tick is immediate
            }
        }
        control.limit = (interval * 8).max(Duration::from_millis(800));
        Some(lag)
    }
}

async fn watch_primary(
    mut control: Control,
    timeline: Arc<Mutex<PrimaryTimeline>>,
    board: Arc<LagBoard>,
    topology: Arc<Topology>,
    positions: Arc<WritePositions>,
    lag: watch::Receiver<LagConfig>,
    checked: watch::Sender<u64>,
) {
    let mut clock = Clock::new(lag, None);
    let node = control.node.clone();
    // Checks failed in a row: at `lag.down_after_failures`, clients waiting on the primary
    // are told it stopped answering (see `frontend::session`).
    let mut failures = 0;
    loop {
        clock.next(&mut control).await;
        let lsn = control.query_one(PRIMARY_CHECK).await.and_then(|row| {
            let lsn = row.try_get::<_, PgLsn>(0).map_err(|e| e.to_string())?;
            let system: i64 = row.try_get(1).map_err(|e| e.to_string())?;
            let timeline: i32 = row.try_get(2).map_err(|e| e.to_string())?;
            let page: i64 = row.try_get(3).map_err(|e| e.to_string())?;
            positions.set_cluster(ClusterId {
                system: system as u64,
                timeline: timeline as u32,
            });
            positions.set_page(page.max(0) as u64);
            Ok(lsn)
        });
        let was_failing = board.primary().error.is_some();
        failures = if lsn.is_ok() { 0 } else { failures + 1 };
        topology.set_primary_down(failures >= clock.down_after_failures());
        match lsn {
            Ok(lsn) => {
                let now = Instant::now();
                lock(&timeline).record(now, u64::from(lsn));
                board.set_primary(PrimaryReport {
                    checked_at: Some(now),
                    error: None,
                });
                if was_failing {
                    tracing::info!(node = %node.name, "primary checks work again");
                }
            }
            Err(e) => {
                if !was_failing {
                    tracing::warn!(node = %node.name, error = %e, "cannot check the primary's WAL position");
                }
                let checked_at = board.primary().checked_at;
                board.set_primary(PrimaryReport {
                    checked_at,
                    error: Some(e),
                });
            }
        }
        checked.send_modify(|n| *n += 1);
    }
}

/// One replica's part of the lag guard: its state machine and where results go.
struct ReplicaWatch {
    index: usize,
    health: ReplicaHealth,
    timeline: Arc<Mutex<PrimaryTimeline>>,
    topology: Arc<Topology>,
    board: Arc<LagBoard>,
    positions: Arc<WritePositions>,
}

impl ReplicaWatch {
    /// The sample a check's result makes; `None` while there is no primary position to
    /// compare with.
    fn sample(&self, result: Result<tokio_postgres::Row, String>, now: Instant) -> Option<Sample> {
        let row = match result {
            Ok(row) => row,
            Err(reason) => return Some(Sample::Failed { reason }),
        };
        let in_recovery: bool = row.try_get(0).unwrap_or(false);
        let replay: Option<PgLsn> = row.try_get(1).unwrap_or(None);
        self.topology
            .replayed(self.index, replay.map(u64::from).unwrap_or(0));
        let timeline = lock(&self.timeline);
        let primary = timeline.latest()?;
        let replay = replay.map(u64::from).unwrap_or(0);
        // Behind everything the timeline remembers: at least its whole span.
        let lag = timeline
            .lag_seconds(replay, now)
            .unwrap_or_else(|| timeline.span(now));
        Some(Sample::Ok {
            lag_bytes: lag_bytes(primary, replay),
            lag: Some(lag),
            in_recovery,
        })
    }

    /// Feeds one sample to the state machine; publishes the figures and any transition.
    fn observe(&mut self, sample: &Sample, now: Instant, name: &str) {
        let transition = self.health.observe(sample, now);
        let health = &self.health;
        self.board.update(self.index, |r| {
            r.checks += 1;
            if let Sample::Ok { lag_bytes, lag, .. } = sample {
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
        let state = match t.to {
            HealthState::Healthy => ReplicaState::Healthy,
            HealthState::Lagging => ReplicaState::Lagging,
            HealthState::Down | HealthState::Promoted => ReplicaState::Down,
        };
        self.topology.update(self.index, |r| r.state = state);
        match t.to {
            HealthState::Healthy => {
                tracing::info!(node = %name, transition = %t, "replica back in the read rotation")
            }
            HealthState::Promoted => {
                tracing::error!(node = %name, transition = %t, "node is no longer a replica (promoted?); no reads go to it")
            }
            _ => {
                tracing::warn!(node = %name, transition = %t, "replica out of the read rotation")
            }
        }
    }
}

async fn watch_replica(mut watch: ReplicaWatch, mut control: Control, mut clock: Clock) {
    let name = control.node.name.clone();
    let mut replayed = 0;
    let mut published = watch.positions.subscribe();
    let mut last_check = Instant::now();
    loop {
        // While clients may wait for this replica (healthy and behind the highest position
        // a read was held back for), its replay position is read every REPLAY_POLL, else at
        // once when a new such position is published; but never so often that a full check
        // is put off
        // beyond two intervals (as when the primary's checks hang).
        let between = watch.health.state() == HealthState::Healthy
            && last_check.elapsed() < clock.interval * 2;
        let next = if !between {
            Some(clock.next(&mut control).await)
        } else if watch.positions.awaited() > replayed {
            tokio::select! {
                lag = clock.next(&mut control) => Some(lag),
                () = tokio::time::sleep(REPLAY_POLL) => None,
            }
        } else {
            tokio::select! {
                lag = clock.next(&mut control) => Some(lag),
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
                watch.topology.replayed(watch.index, replayed);
            }
            continue;
        };
        if let Some(lag) = lag {
            if let Err(e) = watch.health.set_thresholds(thresholds(&lag)) {
                tracing::warn!(node = %name, error = %e, "lag thresholds refused; keeping the old ones");
            }
        }
        let result = control
            .query_one("SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()")
            .await;
        last_check = Instant::now();
        if let Ok(row) = &result {
            replayed = row
                .try_get::<_, Option<PgLsn>>(1)
                .ok()
                .flatten()
                .map_or(0, u64::from);
        }
        let now = Instant::now();
        if let Some(sample) = watch.sample(result, now) {
            watch.observe(&sample, now, &name);
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
    timeline.lock().unwrap_or_else(|e| e.into_inner())
}
