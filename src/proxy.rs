//! State shared by every client of one proxy: its configuration, server pools, routing,
//! client registries, lag board, metrics and client TLS, and what changes them at run time
//! (`RELOAD`, `SET` in the admin console). The accept loop (`server`), the admin console,
//! the metrics endpoint and the sessions all work on it; it imports none of them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::ScramSecret;
use crate::backend::pool::{PoolRow, PoolSettings};
use crate::backend::{NodeAddr, Nodes, Pools};
use crate::classify::{Classifier, ClassifierOptions};
use crate::clients::{ClientRow, Clients};
use crate::config::{ClientAuth, Config, ConfigError, LagConfig, NodeRole, PasswordKind, SetError};
use crate::control::ControlLogin;
use crate::lag::HealthState;
use crate::lag::LagBoard;
use crate::prometheus::{Metrics, Snapshot};
use crate::router::{Policy, RouteStats, Routing};
use crate::status_page::{NodeView, StatusView};
use crate::tls::{ClientTls, TlsError};
use crate::topology::{Replica, Topology, WriteTarget};

/// Why `RELOAD` changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("pgsplit was not started from a configuration file")]
    NoFile,
    #[error("{0}")]
    Config(ConfigError),
    #[error("{0}")]
    Tls(TlsError),
}

/// State shared by every client of one proxy.
pub struct Proxy {
    config: Config,
    pools: Pools,
    routing: Arc<Routing>,
    /// Every client: the connections counted against `max_client_conn` (from accept
    /// on), and the logged-in ones (cancel keys, `SHOW CLIENTS`).
    pub(crate) clients: Arc<Clients>,
    /// Connections refused for `max_client_conn`, logged at most once a second.
    pub(crate) refusals: std::sync::Mutex<crate::limits::LogThrottle>,
    /// SCRAM secrets of the configured users, derived once.
    pub(crate) secrets: HashMap<String, ScramSecret>,
    /// The `[lag]` section in force: the file's, or changed live by `SET` or a reload.
    lag: tokio::sync::watch::Sender<LagConfig>,
    /// What the monitor last saw of each node.
    board: Arc<LagBoard>,
    /// The file `RELOAD` and SIGHUP read again, if the proxy was started from one.
    pub(crate) config_path: Option<PathBuf>,
    metrics: Metrics,
    /// What new connections are offered: `[tls]` as last loaded (at start, or by a reload).
    tls: std::sync::RwLock<ClientTls>,
}

impl Proxy {
    /// A proxy for `config`; causal tokens are signed with `tokens`. Fails when a node's
    /// TLS settings cannot be put to use (an unreadable `tls_ca_file`).
    pub fn new(
        config: Config,
        tokens: crate::causal::TokenKeys,
    ) -> Result<Proxy, crate::backend::TlsSetupError> {
        let configured: Vec<Arc<NodeAddr>> = config
            .nodes
            .iter()
            .map(|n| NodeAddr::from_config(n).map(Arc::new))
            .collect::<Result<_, _>>()?;
        // With Patroni, places for the members it may add (`backend::nodes`).
        let nodes = Arc::new(Nodes::new(configured, config.topology.added_places()));
        // The primary expected at start; the monitor's checks decide from then on.
        let primary = config
            .nodes
            .iter()
            .position(|n| n.role == NodeRole::Primary);
        let settings = PoolSettings {
            min_size: config.pool.min_size,
            max_size: config.pool.max_size,
            checkout_timeout: config.pool.checkout_timeout.as_std(),
            connect_timeout: config.proxy.server_connect_timeout.as_std(),
            idle_timeout: config.pool.idle_timeout.non_zero(),
            max_lifetime: config.pool.max_lifetime.non_zero(),
            max_statements: config.pool.max_prepared_statements,
            max_bound: config.pool.pinned_limit(),
        };
        let secrets = config
            .users
            .iter()
            .filter(|u| u.auth == ClientAuth::ScramSha256)
            .filter_map(|u| {
                let password = u.password.as_deref()?;
                let secret = match PasswordKind::of(password) {
                    PasswordKind::ScramVerifier => ScramSecret::parse(password).ok()?,
                    _ => ScramSecret::generate(password),
                };
                Some((u.name.clone(), secret))
            })
            .collect();
        // Every node may be a replica (roles are discovered): out of the rotation until the
        // monitor has seen them in recovery and fresh. Places for members Patroni adds
        // weigh 1.
        let replicas = (0..nodes.len())
            .map(|i| Replica {
                state: HealthState::Down,
                ..Replica::new(i, config.nodes.get(i).map_or(1, |n| n.weight))
            })
            .collect::<Vec<_>>();
        // The lag board has the configured nodes; the monitor adds those Patroni adds.
        let replica_nodes: Vec<usize> = (0..config.nodes.len()).collect();
        let routing = Arc::new(Routing {
            classifier: Classifier::new(ClassifierOptions {
                write_functions: config.routing.write_functions.clone(),
                read_only_functions: config.routing.read_only_functions.clone(),
                primary_tables: config.routing.primary_tables.clone(),
                cache_capacity: config.routing.classify_cache_size,
                ..ClassifierOptions::default()
            }),
            policy: Policy {
                enabled: config.routing.enabled,
                read_your_writes: config.routing.read_your_writes,
                pin_after_write: config.routing.pin_after_write.as_std(),
                fallback: config.routing.fallback,
            },
            topology: Arc::new(Topology::new(
                replicas,
                config.routing.replica_cooldown.as_std(),
            )),
            positions: Arc::default(),
            tokens,
            stats: RouteStats::new(nodes.len()),
        });
        if let Some(primary) = primary {
            routing.topology.set_writer(WriteTarget::Node(primary));
        }
        let (lag, _) = tokio::sync::watch::channel(config.lag.clone());
        let roles = crate::roles::Roles::expected(nodes.len(), primary);
        Ok(Proxy {
            lag,
            board: Arc::new(LagBoard::new(&replica_nodes, roles, Instant::now())),
            config_path: None,
            metrics: Metrics::new(),
            pools: Pools::new(nodes, settings),
            routing,
            clients: Arc::default(),
            refusals: Default::default(),
            secrets,
            config,
            tls: std::sync::RwLock::new(ClientTls::disabled()),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn pools(&self) -> &Pools {
        &self.pools
    }

    pub fn routing(&self) -> &Arc<Routing> {
        &self.routing
    }

    /// Starts the monitor's checks of every node, and with `[topology] patroni_url` the
    /// reading of members from Patroni (which adds nodes to the checks).
    pub(crate) fn start_monitor(&self) {
        let nodes = self.pools.nodes();
        let expected = self.expected_primary();
        let login = ControlLogin::from_config(&self.config);
        let routing = &self.config.routing;
        if routing.enabled && routing.read_your_writes.by_position() {
            let topology = self.routing.topology.clone();
            crate::causal::flusher::spawn(
                self.routing.positions.clone(),
                nodes.clone(),
                move || topology.writer(),
                &login,
            );
        }
        let monitor = crate::monitor::spawn(
            nodes.clone(),
            expected,
            crate::monitor::Shared {
                topology: self.routing.topology.clone(),
                board: self.board.clone(),
                positions: self.routing.positions.clone(),
                fences: self.pools.fences().clone(),
            },
            login,
            self.lag.subscribe(),
        );
        if let (true, Some(template)) = (self.config.topology.patroni(), self.config.nodes.first())
        {
            crate::patroni::Poller::new(
                &self.config.topology,
                template,
                nodes.clone(),
                self.routing.topology.clone(),
                monitor,
            )
            .spawn();
        }
    }

    /// The node configured with `role = "primary"`, if any.
    fn expected_primary(&self) -> Option<usize> {
        self.config
            .nodes
            .iter()
            .position(|n| n.role == NodeRole::Primary)
    }

    /// Waits, at most `limit`, until the monitor has checked every node once, so that the
    /// first reads after a start go to the replicas found fresh (clients that connect
    /// meanwhile wait in the listen backlog).
    pub(crate) async fn await_first_checks(&self, limit: Duration) {
        let started = Instant::now();
        // Every configured node, the one taking writes too (causal tokens name its
        // timeline); not the places Patroni may fill.
        let configured = self.config.nodes.len();
        let checked = || {
            self.board
                .nodes()
                .iter()
                .filter(|r| r.node < configured)
                .all(|r| r.checks > 0)
        };
        while !checked() {
            if started.elapsed() >= limit {
                tracing::warn!(waited = ?limit, "not every node answered its first check; accepting clients anyway (reads go to replicas as they pass their checks)");
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tracing::debug!(took = ?started.elapsed(), "every node checked once");
    }

    /// Starts loading the function catalog for the classifier (at once, then refreshed),
    /// with a control pool per database and node (see `crate::catalog` for which node is
    /// read). Also without routing: a volatile function may leave session state, which
    /// decides whether a server connection is reset.
    pub(crate) fn start_catalog(&self) {
        let mut databases: Vec<crate::catalog::Database> = Vec::new();
        for database in &self.config.databases {
            let name = database.server_database();
            if databases.iter().any(|d| d.name == name) {
                continue;
            }
            let login = ControlLogin {
                database: name.to_string(),
                ..ControlLogin::from_config(&self.config)
            };
            // The configured nodes (a member Patroni adds later is not read from).
            let pools = self
                .pools
                .nodes()
                .filled()
                .iter()
                .map(|(_, node)| crate::control::pool(node, &login, "pgsplit catalog", 1))
                .collect::<Result<Vec<_>, _>>();
            match pools {
                Ok(pools) => databases.push(crate::catalog::Database {
                    name: name.to_string(),
                    pools,
                }),
                Err(e) => {
                    tracing::error!(error = %e, "no control pools for the function catalog; user functions are taken to be reads, and every write or function call resets its connection");
                    return;
                }
            }
        }
        crate::catalog::spawn(databases, self.routing.clone());
    }

    /// Applies a reloaded configuration (SIGHUP, `RELOAD`): the `[lag]` thresholds and
    /// check interval change at once, from the next check of every node (replacing values
    /// changed by `SET`). Other changes need a restart; they are returned so the caller can
    /// say so. An invalid configuration never gets here (the loader validates it), so the
    /// old values stay on any error.
    pub fn reload(&self, new: &Config) -> Vec<&'static str> {
        let live = |c: &LagConfig| LagConfig {
            monitor_user: None,
            monitor_database: None,
            ..c.clone()
        };
        if live(&self.lag.borrow()) != live(&new.lag) {
            tracing::info!(lag = ?live(&new.lag), "lag settings changed");
            self.lag.send_replace(LagConfig {
                monitor_user: self.config.lag.monitor_user.clone(),
                monitor_database: self.config.lag.monitor_database.clone(),
                ..new.lag.clone()
            });
        }
        let mut needs_restart = Vec::new();
        if new.proxy != self.config.proxy {
            needs_restart.push("proxy");
        }
        if new.pool != self.config.pool {
            needs_restart.push("pool");
        }
        if new.nodes != self.config.nodes
            || new.databases != self.config.databases
            || new.users != self.config.users
        {
            needs_restart.push("nodes/databases/users");
        }
        if new.routing != self.config.routing {
            needs_restart.push("routing");
        }
        if new.metrics != self.config.metrics {
            needs_restart.push("metrics");
        }
        if new.topology != self.config.topology {
            needs_restart.push("topology");
        }
        let monitor_login =
            |c: &Config| (c.lag.monitor_user.clone(), c.lag.monitor_database.clone());
        if monitor_login(new) != monitor_login(&self.config) {
            needs_restart.push("lag.monitor_user/monitor_database");
        }
        needs_restart
    }

    /// Reads the configuration file again and applies it (see [`reload`](Self::reload)).
    /// Returns the sections that need a restart; an unreadable or invalid file changes
    /// nothing.
    ///
    /// `[tls]` is applied here, not in `reload`: its certificate files are read again and
    /// serve new connections; files that cannot be used refuse the whole reload.
    pub fn reload_file(&self) -> Result<Vec<&'static str>, ReloadError> {
        let path = self.config_path.as_deref().ok_or(ReloadError::NoFile)?;
        let config = Config::load(path).map_err(ReloadError::Config)?;
        let tls = ClientTls::load(&config.tls).map_err(ReloadError::Tls)?;
        self.set_client_tls(tls);
        Ok(self.reload(&config))
    }

    /// What new client connections are offered from now on.
    pub fn set_client_tls(&self, tls: ClientTls) {
        tracing::debug!(mode = ?tls.mode, "client TLS settings in force");
        *self
            .tls
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = tls;
    }

    /// What a new client connection is offered now.
    pub fn client_tls(&self) -> ClientTls {
        self.tls
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Changes one `[lag]` key live (the admin console's `SET`); an invalid value changes
    /// nothing. Returns the value now in force, as `SHOW CONFIG` prints it.
    pub fn set_lag(&self, key: &str, value: &str) -> Result<String, SetError> {
        let new = self.lag.borrow().with(key, value)?;
        let key = crate::config::live_setting_key(key);
        let shown = new.value_of(&key).unwrap_or_default();
        tracing::info!(%key, value = %shown, "lag setting changed with SET in the admin console");
        self.lag.send_replace(new);
        Ok(shown)
    }

    /// The `[lag]` section in force now.
    pub fn lag_config(&self) -> LagConfig {
        self.lag.borrow().clone()
    }

    /// The Prometheus recorder.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// What the monitor last saw of each node.
    pub fn board(&self) -> &LagBoard {
        &self.board
    }

    /// The logged-in clients.
    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    /// The logged-in clients, each with the node serving it now.
    pub fn client_rows(&self) -> Vec<(ClientRow, Option<String>)> {
        self.clients.rows()
    }

    /// Every server pool's figures, for `SHOW POOLS` and the metrics.
    pub fn pool_rows(&self) -> Vec<PoolRow> {
        self.pools.rows()
    }

    /// The figures the metrics endpoint exports, as they are now.
    pub fn metrics_snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            names: self.pools.nodes().names(),
            routing: &self.routing,
            board: &self.board,
            lag: self.lag_config(),
            pools: self.pool_rows(),
            clients: self.clients.len(),
            client_connections: self.client_count(),
        }
    }

    /// What the `/status` page shows, as it is now.
    pub fn status_view(&self) -> StatusView {
        let roles = self.board.roles().roles;
        let names = self.pools.nodes().names();
        let nodes = self
            .board
            .nodes()
            .into_iter()
            // Not the empty places kept for members Patroni may add.
            .filter(|r| names.get(r.node).is_some_and(|n| !n.is_empty()))
            .map(|r| {
                let verdict = roles.nodes.get(r.node);
                NodeView {
                    name: names.get(r.node).cloned().unwrap_or_default(),
                    role: verdict.map_or("unknown", |v| v.role.as_str()).to_string(),
                    state: r.state.as_str().to_string(),
                    lag_bytes: r.lag_bytes,
                    lag: r.lag,
                    reason: r.reason.clone(),
                    history: r.history.points().map(|p| (p.at, p.lag_bytes)).collect(),
                }
            })
            .collect();
        StatusView {
            version: env!("CARGO_PKG_VERSION"),
            nodes,
            max_lag_bytes: self.lag_config().max_replica_lag.as_u64(),
            pools: self.pool_rows(),
            clients: self.clients.len(),
        }
    }

    /// Connections counted now (logging in or logged in, admin console included).
    pub fn client_count(&self) -> usize {
        self.clients.connections()
    }
}

/// The causal-token keys from `[routing]`; a generated one when no secret is configured.
pub(crate) fn causal_keys(
    routing: &crate::config::RoutingConfig,
) -> Result<crate::causal::TokenKeys, crate::config::ConfigError> {
    let secret = match routing.causal_secret()? {
        Some(secret) => secret,
        None => {
            tracing::info!("no routing.causal_key: causal tokens are signed with a key generated now, so only this pgsplit process trusts them (set a shared key for several instances)");
            use rand::Rng;
            let bytes: [u8; 32] = rand::thread_rng().gen();
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        }
    };
    Ok(crate::causal::TokenKeys::new(
        &secret,
        &routing.causal_old_keys,
    ))
}
