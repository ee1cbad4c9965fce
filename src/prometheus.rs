//! The Prometheus metrics pgsplit exports (with `metrics` and `metrics-exporter-prometheus`).
//!
//! Most figures already live in pgsplit's own state (routing counters, the lag board, the
//! pools, the client registry), so they are copied into the recorder when Prometheus
//! scrapes, not on every statement: the hot path only records
//! into histograms (checkout, replay and primary waits).
//! The recorder is the proxy's own, not the process-global one, so several proxies (as in
//! the tests) each export their own figures.

use metrics::{Histogram, Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::backend::pool::PoolRow;
use crate::config::LagConfig;
use crate::lag::{HealthState, LagBoard};
use crate::router::{Reason, Routing};

const CHECKOUT_WAIT: &str = "pgsplit_checkout_wait_seconds";
const REPLAY_WAIT: &str = "pgsplit_replay_wait_seconds";
const PRIMARY_WAIT: &str = "pgsplit_primary_wait_seconds";

/// Each histogram: its name, upper bounds of its buckets (seconds) and help text.
const HISTOGRAMS: [(&str, [f64; 12], &str); 3] = [
    (
        CHECKOUT_WAIT,
        [
            0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05, 0.25, 1.0,
            5.0,
        ],
        "Time a client waited for a server connection",
    ),
    (
        REPLAY_WAIT,
        [
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
        ],
        "Read-your-writes by LSN: from a client's first read held on the primary because no replica had replayed its position, to its next read a replica served",
    ),
    (
        PRIMARY_WAIT,
        [
            0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0,
        ],
        "Time a statement waited for a node that takes writes (the primary restarting, failing over or switching over), until it got one or gave up after pool.primary_wait_timeout",
    ),
];

/// A proxy's metrics recorder.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    checkout_wait: Histogram,
    replay_wait: Histogram,
    primary_wait: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let builder = HISTOGRAMS
            .iter()
            .try_fold(PrometheusBuilder::new(), |b, (name, buckets, _)| {
                b.set_buckets_for_metric(Matcher::Full((*name).into()), buckets)
            })
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let metadata = Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));
        let histogram =
            |name: &'static str| recorder.register_histogram(&Key::from_name(name), &metadata);
        let (checkout_wait, replay_wait, primary_wait) = (
            histogram(CHECKOUT_WAIT),
            histogram(REPLAY_WAIT),
            histogram(PRIMARY_WAIT),
        );
        metrics::with_local_recorder(&recorder, || {
            for (name, _, help) in HISTOGRAMS {
                metrics::describe_histogram!(name, metrics::Unit::Seconds, help);
            }
        });
        Metrics {
            recorder,
            handle,
            checkout_wait,
            replay_wait,
            primary_wait,
        }
    }

    /// The histogram sessions record each checkout's wait into.
    pub fn checkout_wait(&self) -> Histogram {
        self.checkout_wait.clone()
    }

    /// The histogram sessions record how long reads were held on the primary into.
    pub fn replay_wait(&self) -> Histogram {
        self.replay_wait.clone()
    }

    /// The histogram sessions record how long statements waited for a primary into.
    pub fn primary_wait(&self) -> Histogram {
        self.primary_wait.clone()
    }

    /// Folds the histogram samples recorded since the last call into their buckets. The
    /// recorder keeps every sample until then, so this runs every second.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// The exposition text: the proxy's figures now, in Prometheus format.
    pub fn render(&self, now: &Snapshot) -> String {
        metrics::with_local_recorder(&self.recorder, || publish(now));
        self.handle.render()
    }
}

/// The proxy's figures at one moment, as the metrics read them.
pub struct Snapshot<'a> {
    /// Node names by index; empty for a place no Patroni member fills yet (not exported).
    pub names: Vec<String>,
    pub routing: &'a Routing,
    pub board: &'a LagBoard,
    /// The `[lag]` settings in force.
    pub lag: LagConfig,
    pub pools: Vec<PoolRow>,
    /// Logged-in clients.
    pub clients: usize,
    /// Connections counted against `max_client_conn` (logging in or logged in).
    pub client_connections: usize,
}

/// Copies the proxy's figures into the (local) recorder.
fn publish(now: &Snapshot) {
    use metrics::{counter, gauge};
    let routing = now.routing;
    let name = |node: usize| now.names.get(node).cloned().unwrap_or_default();
    let filled = |node: &usize| !name(*node).is_empty();

    for (node, n) in routing.stats.by_node().into_iter().enumerate() {
        if !filled(&node) {
            continue;
        }
        counter!("pgsplit_routed_total", "node" => name(node)).absolute(n);
    }
    for reason in Reason::ALL {
        let n = routing.stats.by_reason(reason);
        counter!("pgsplit_routed_by_reason_total", "reason" => reason.as_str()).absolute(n);
    }
    counter!("pgsplit_pins_total").absolute(routing.stats.pins());

    let topology = routing.topology.snapshot();
    for r in now.board.replicas().into_iter().filter(|r| filled(&r.node)) {
        let node = name(r.node);
        gauge!("pgsplit_replica_lag_bytes", "node" => node.clone())
            .set(r.lag_bytes.map_or(f64::NAN, |b| b as f64));
        gauge!("pgsplit_replica_lag_seconds", "node" => node.clone())
            .set(r.lag.map_or(f64::NAN, |d| d.as_secs_f64()));
        for state in [
            HealthState::Healthy,
            HealthState::Lagging,
            HealthState::Down,
            HealthState::Promoted,
        ] {
            let labels = [
                Label::new("node", node.clone()),
                Label::new("state", state.as_str()),
            ];
            gauge!("pgsplit_replica_state", labels.iter())
                .set(f64::from(u8::from(r.state == state)));
        }
        counter!("pgsplit_replica_ejections_total", "node" => node.clone()).absolute(r.ejections);
        if let Some(t) = topology.iter().find(|t| t.node == r.node) {
            counter!("pgsplit_replica_reads_total", "node" => node.clone()).absolute(t.reads);
        }
    }
    let lag = &now.lag;
    gauge!("pgsplit_max_replica_lag_bytes").set(lag.max_replica_lag.as_u64() as f64);
    gauge!("pgsplit_max_replica_delay_seconds").set(lag.max_replica_delay.as_std().as_secs_f64());
    let primary = now.board.primary();
    let primary_up = primary.error.is_none() && primary.checked_at.is_some();
    gauge!("pgsplit_primary_up").set(f64::from(u8::from(primary_up)));

    // The discovered roles: which node takes writes (1 on its row, 0 on the others; -1 as
    // the index when none does), each node's role, and how often the write target changed.
    let roles = now.board.roles();
    let writer = roles.roles.writer_node();
    gauge!("pgsplit_primary_node_index").set(writer.map_or(-1.0, |w| w as f64));
    for (i, verdict) in roles.roles.nodes.iter().enumerate() {
        if !filled(&i) {
            continue;
        }
        gauge!("pgsplit_primary", "node" => name(i)).set(f64::from(u8::from(writer == Some(i))));
        let labels = [
            Label::new("node", name(i)),
            Label::new("role", verdict.role.as_str()),
        ];
        gauge!("pgsplit_node_role", labels.iter()).set(1.0);
    }
    counter!("pgsplit_role_changes_total").absolute(roles.changes);

    for p in &now.pools {
        let labels = |extra: Option<(&'static str, &'static str)>| {
            let mut l = vec![
                Label::new("node", p.node.clone()),
                Label::new("database", p.database.clone()),
                Label::new("user", p.user.clone()),
            ];
            if let Some((k, v)) = extra {
                l.push(Label::new(k, v));
            }
            l
        };
        gauge!(
            "pgsplit_pool_connections",
            labels(Some(("state", "idle"))).iter()
        )
        .set(p.idle as f64);
        gauge!(
            "pgsplit_pool_connections",
            labels(Some(("state", "active"))).iter()
        )
        .set(p.size.saturating_sub(p.idle) as f64);
        gauge!("pgsplit_pool_waiting", labels(None).iter()).set(p.waiting as f64);
        gauge!("pgsplit_pool_max_size", labels(None).iter()).set(p.max_size as f64);
    }

    gauge!("pgsplit_clients").set(now.clients as f64);
    gauge!("pgsplit_client_connections").set(now.client_connections as f64);

    let cache = routing.classifier.stats();
    counter!("pgsplit_classify_cache_hits_total").absolute(cache.hits);
    counter!("pgsplit_classify_cache_misses_total").absolute(cache.misses);
    let lookups = cache.hits + cache.misses;
    if lookups > 0 {
        gauge!("pgsplit_classify_cache_hit_ratio").set(cache.hits as f64 / lookups as f64);
    }
}
