//! The lag guard's IO shell: one task per node on its own control connection (never one
//! from the client pools, so checks go on when the pools are exhausted). The primary's
//! task samples `pg_current_wal_lsn()` into a shared timeline; each replica's task reads
//! `pg_last_wal_replay_lsn()`, turns it into lag in bytes and in time (from that timeline,
//! so it does not grow while the primary is idle), feeds the pure state machine in
//! `crate::lag`, and puts every transition into the router's replica table, logged once
//! with the figures behind it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_postgres::types::PgLsn;
use tokio_postgres::{Client, NoTls};

use crate::backend::NodeAddr;
use crate::config::Config;
use crate::lag::timeline::lag_bytes;
use crate::lag::{HealthState, LagThresholds, PrimaryTimeline, ReplicaHealth, Sample};
use crate::topology::{ReplicaState, Topology};

/// What the monitor needs to know.
#[derive(Debug, Clone)]
pub struct MonitorSettings {
    pub interval: Duration,
    pub thresholds: LagThresholds,
    pub user: String,
    pub password: Option<String>,
    pub database: String,
    pub connect_timeout: Duration,
}

impl MonitorSettings {
    /// The monitor settings of a (validated) configuration.
    pub fn from_config(config: &Config) -> MonitorSettings {
        let lag = &config.lag;
        let user = lag
            .monitor_user
            .as_deref()
            .and_then(|u| config.user(u))
            .or(config.users.first());
        let database = lag
            .monitor_database
            .as_deref()
            .and_then(|d| config.database(d))
            .or(config.databases.first());
        let bytes = lag.max_replica_lag.as_u64();
        MonitorSettings {
            interval: lag.check_interval.as_std(),
            thresholds: LagThresholds {
                max_bytes: (bytes > 0).then_some(bytes),
                max_lag: lag.max_replica_delay.non_zero(),
                readmit_fraction: f64::from(lag.readmit_percent) / 100.0,
                readmit_after: lag.readmit_after.as_std(),
                down_after_failures: lag.down_after_failures,
                up_after_successes: lag.up_after_successes,
            },
            user: user
                .map(|u| u.server_user().to_string())
                .unwrap_or_default(),
            password: user.and_then(|u| u.server_password()).map(str::to_string),
            database: database
                .map(|d| d.server_database().to_string())
                .unwrap_or_default(),
            connect_timeout: config.proxy.server_connect_timeout.as_std(),
        }
    }
}

/// Starts the checks: one task for the primary, one per replica (`replicas` holds node
/// indexes and addresses). They stop when the runtime does.
pub fn spawn(
    primary: Arc<NodeAddr>,
    replicas: Vec<(usize, Arc<NodeAddr>)>,
    topology: Arc<Topology>,
    settings: MonitorSettings,
    thresholds: watch::Receiver<LagThresholds>,
) {
    let timeline = Arc::new(Mutex::new(PrimaryTimeline::new()));
    tokio::spawn(watch_primary(primary, timeline.clone(), settings.clone()));
    // The thresholds in force now, not the configuration's: a reload that came before the
    // monitor started is already in the channel, and a new receiver takes it as seen.
    let current = thresholds.borrow().clone();
    for (index, node) in replicas {
        let health = match ReplicaHealth::new(current.clone(), Instant::now()) {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(node = %node.name, error = %e, "lag thresholds are invalid; replica not watched");
                continue;
            }
        };
        tokio::spawn(watch_replica(
            index,
            node,
            health,
            timeline.clone(),
            topology.clone(),
            settings.clone(),
            thresholds.clone(),
        ));
    }
}

/// A control connection, reopened when it breaks.
struct Control {
    node: Arc<NodeAddr>,
    settings: MonitorSettings,
    client: Option<Client>,
}

impl Control {
    fn new(node: Arc<NodeAddr>, settings: MonitorSettings) -> Control {
        Control {
            node,
            settings,
            client: None,
        }
    }

    /// Runs `sql` (one row expected), connecting first if needed.
    async fn query_one(&mut self, sql: &str) -> Result<tokio_postgres::Row, String> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = Some(self.connect().await?);
        }
        let client = self.client.as_ref().ok_or("not connected")?;
        let limit = self.settings.interval.max(Duration::from_millis(100)) * 8;
        match tokio::time::timeout(limit, client.query_one(sql, &[])).await {
            Ok(Ok(row)) => Ok(row),
            Ok(Err(e)) => {
                self.client = None;
                Err(e.to_string())
            }
            Err(_) => {
                self.client = None;
                Err(format!("check took longer than {limit:?}"))
            }
        }
    }

    async fn connect(&self) -> Result<Client, String> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.node.host)
            .port(self.node.port)
            .user(&self.settings.user)
            .dbname(&self.settings.database)
            .application_name("pgsplit monitor")
            .connect_timeout(self.settings.connect_timeout);
        if let Some(password) = &self.settings.password {
            config.password(password);
        }
        let (client, connection) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }
}

async fn watch_primary(
    node: Arc<NodeAddr>,
    timeline: Arc<Mutex<PrimaryTimeline>>,
    settings: MonitorSettings,
) {
    let mut tick = ticker(settings.interval);
    let mut control = Control::new(node.clone(), settings);
    let mut failing = false;
    loop {
        tick.tick().await;
        match control.query_one("SELECT pg_current_wal_lsn()").await {
            Ok(row) => {
                let lsn: PgLsn = match row.try_get(0) {
                    Ok(lsn) => lsn,
                    Err(e) => {
                        tracing::warn!(node = %node.name, error = %e, "unexpected LSN from the primary");
                        continue;
                    }
                };
                lock(&timeline).record(Instant::now(), u64::from(lsn));
                if std::mem::replace(&mut failing, false) {
                    tracing::info!(node = %node.name, "primary checks work again");
                }
            }
            Err(e) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(node = %node.name, error = %e, "cannot check the primary's WAL position");
                }
            }
        }
    }
}

async fn watch_replica(
    index: usize,
    node: Arc<NodeAddr>,
    mut health: ReplicaHealth,
    timeline: Arc<Mutex<PrimaryTimeline>>,
    topology: Arc<Topology>,
    settings: MonitorSettings,
    mut thresholds: watch::Receiver<LagThresholds>,
) {
    let mut tick = ticker(settings.interval);
    let mut control = Control::new(node.clone(), settings);
    loop {
        tick.tick().await;
        if thresholds.has_changed().unwrap_or(false) {
            let new = thresholds.borrow_and_update().clone();
            if let Err(e) = health.set_thresholds(new) {
                tracing::warn!(node = %node.name, error = %e, "lag thresholds refused; keeping the old ones");
            }
        }
        let sample = match control
            .query_one("SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()")
            .await
        {
            Ok(row) => {
                let in_recovery: bool = row.try_get(0).unwrap_or(false);
                let replay: Option<PgLsn> = row.try_get(1).unwrap_or(None);
                let now = Instant::now();
                let timeline = lock(&timeline);
                let Some(primary) = timeline.latest() else {
                    // No primary position yet: nothing to compare with.
                    continue;
                };
                let replay = replay.map(u64::from).unwrap_or(0);
                // Behind everything the timeline remembers: at least its whole span.
                let lag = timeline
                    .lag_seconds(replay, now)
                    .unwrap_or_else(|| timeline.span(now));
                Sample::Ok {
                    lag_bytes: lag_bytes(primary, replay),
                    lag: Some(lag),
                    in_recovery,
                }
            }
            Err(reason) => Sample::Failed { reason },
        };
        let Some(t) = health.observe(&sample, Instant::now()) else {
            continue;
        };
        let state = match t.to {
            HealthState::Healthy => ReplicaState::Healthy,
            HealthState::Lagging => ReplicaState::Lagging,
            HealthState::Down => ReplicaState::Down,
            HealthState::Promoted => ReplicaState::Down,
        };
        topology.update(index, |r| r.state = state);
        match t.to {
            HealthState::Healthy => {
                tracing::info!(node = %node.name, transition = %t, "replica back in the read rotation")
            }
            HealthState::Promoted => {
                tracing::error!(node = %node.name, transition = %t, "node is no longer a replica (promoted?); no reads go to it")
            }
            _ => {
                tracing::warn!(node = %node.name, transition = %t, "replica out of the read rotation")
            }
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
