//! The proxy itself: the listening socket, the limits on clients, and what happens to
//! each new connection (cancel request, or login then a session).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::admin::show::PoolRow;
use crate::auth::ScramSecret;
use crate::backend::connection::Credentials;
use crate::backend::pool::{get_connection, PoolSettings};
use crate::backend::{NodeAddr, PoolKey, Pools, ServerPool};
use crate::cancel::{send_cancel, CancelRegistry};
use crate::classify::{Classifier, ClassifierOptions};
use crate::clients::{ClientNow, ClientRegistry, ClientRow};
use crate::config::ADMIN_DATABASE;
use crate::config::{
    ClientAuth, ClientTlsMode, Config, ConfigError, LagConfig, NodeRole, PasswordKind, PoolMode,
    ReadYourWrites, SetError,
};
use crate::control::ControlLogin;
use crate::frontend::login::{self, Accepted, LoginError};
use crate::frontend::session::{apply_settings, Server, Session, SessionContext};
use crate::frontend::settings::ClientSettings;
use crate::frontend::stream::ClientStream;
use crate::lag::LagBoard;
use crate::prometheus::Metrics;
use crate::router::{Policy, RouteStats, Routing};
use crate::tls::{ClientTls, TlsError};
use crate::topology::{Replica, ReplicaState, Topology, WriteTarget};
use crate::wire::error::code;
use crate::wire::message as msg;
use crate::wire::PgError;

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

/// How long a start waits for the first check of every node before accepting clients (a
/// node that refuses connections fails its check at once; one that does not answer at all
/// is not waited for longer).
const FIRST_CHECKS_LIMIT: Duration = Duration::from_secs(3);

/// State shared by every client of one proxy.
pub struct Proxy {
    config: Config,
    pools: Pools,
    routing: Arc<Routing>,
    cancel: Arc<CancelRegistry>,
    /// Connections counted against `max_client_conn`: every one from accept on.
    clients: AtomicUsize,
    /// Connections refused for `max_client_conn`, logged at most once a second.
    refusals: std::sync::Mutex<crate::limits::LogThrottle>,
    /// Logged-in clients, for `SHOW CLIENTS`.
    registry: Arc<ClientRegistry>,
    /// SCRAM secrets of the configured users, derived once.
    secrets: HashMap<String, ScramSecret>,
    /// The `[lag]` section in force: the file's, or changed live by `SET` or a reload.
    lag: tokio::sync::watch::Sender<LagConfig>,
    /// What the monitor last saw of each node.
    board: Arc<LagBoard>,
    /// The file `RELOAD` and SIGHUP read again, if the proxy was started from one.
    config_path: Option<PathBuf>,
    metrics: Metrics,
    /// What new connections are offered: `[tls]` as last loaded (at start, or by a reload).
    tls: std::sync::RwLock<ClientTls>,
}

/// A bound, not yet serving, proxy.
pub struct Listener {
    listener: TcpListener,
    /// The `/metrics` and `/healthz` endpoint, when enabled.
    http: Option<TcpListener>,
    proxy: Arc<Proxy>,
}

impl Proxy {
    /// A proxy for `config`; causal tokens are signed with `tokens`. Fails when a node's
    /// TLS settings cannot be put to use (an unreadable `tls_ca_file`).
    pub fn new(
        config: Config,
        tokens: crate::causal::TokenKeys,
    ) -> Result<Proxy, crate::backend::TlsSetupError> {
        let nodes: Vec<Arc<NodeAddr>> = config
            .nodes
            .iter()
            .map(|n| NodeAddr::from_config(n).map(Arc::new))
            .collect::<Result<_, _>>()?;
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
            max_pinned: config.pool.pinned_limit(),
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
        // monitor has seen them in recovery and fresh.
        let replicas = config
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| Replica {
                state: ReplicaState::Down,
                ..Replica::new(i, n.weight)
            })
            .collect::<Vec<_>>();
        let replica_nodes: Vec<usize> = replicas.iter().map(|r: &Replica| r.node).collect();
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
            stats: RouteStats::new(config.nodes.len()),
        });
        if let Some(primary) = primary {
            routing.topology.set_writer(WriteTarget::Node(primary));
        }
        let (lag, _) = tokio::sync::watch::channel(config.lag.clone());
        let roles = crate::roles::Roles::expected(config.nodes.len(), primary);
        Ok(Proxy {
            lag,
            board: Arc::new(LagBoard::new(&replica_nodes, roles, Instant::now())),
            config_path: None,
            metrics: Metrics::new(),
            pools: Pools::new(nodes, settings),
            routing,
            cancel: Arc::new(CancelRegistry::default()),
            clients: AtomicUsize::new(0),
            refusals: Default::default(),
            registry: Arc::default(),
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

    /// Starts the monitor's checks of every node.
    fn start_monitor(&self) {
        let nodes = self.pools.nodes();
        let expected = self.expected_primary();
        let login = ControlLogin::from_config(&self.config);
        let routing = &self.config.routing;
        if routing.enabled && routing.read_your_writes == ReadYourWrites::Lsn {
            let topology = self.routing.topology.clone();
            crate::causal::flusher::spawn(
                self.routing.positions.clone(),
                nodes.to_vec(),
                move || topology.writer(),
                &login,
            );
        }
        crate::monitor::spawn(
            nodes.to_vec(),
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
    async fn await_first_checks(&self, limit: Duration) {
        let started = Instant::now();
        // Every node, the one taking writes too (causal tokens name its timeline).
        let checked = || self.board.nodes().iter().all(|r| r.checks > 0);
        while !checked() {
            if started.elapsed() >= limit {
                tracing::warn!(waited = ?limit, "not every node answered its first check; accepting clients anyway (reads go to replicas as they pass their checks)");
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tracing::debug!(took = ?started.elapsed(), "every node checked once");
    }

    /// Starts loading the primary's function catalog for the classifier (at once, then
    /// refreshed), one control pool per database. Also without routing: a volatile function
    /// may leave session state, which decides whether a server connection is reset.
    fn start_catalog(&self) {
        // The catalog is the same on every node; the expected primary's is read.
        let Some(primary) = self
            .pools
            .nodes()
            .get(self.expected_primary().unwrap_or(0))
            .cloned()
        else {
            return;
        };
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
            match crate::control::pool(&primary, &login, "pgsplit catalog", 1) {
                Ok(pool) => databases.push(crate::catalog::Database {
                    name: name.to_string(),
                    pool,
                }),
                Err(e) => {
                    tracing::error!(error = %e, "no control pool for the primary; user functions are taken to be reads, and every write or function call resets its connection");
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
        let key = crate::config::setting_name(key);
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
    pub fn clients(&self) -> &ClientRegistry {
        &self.registry
    }

    /// The logged-in clients, each with the node serving it now (from the cancel registry,
    /// which tracks the server of every client for cancel requests).
    pub fn client_rows(&self) -> Vec<(ClientRow, Option<String>)> {
        self.registry
            .rows()
            .into_iter()
            .map(|row| {
                let node = self.cancel.serving(row.id).map(|t| t.node.name.clone());
                (row, node)
            })
            .collect()
    }

    /// Every server pool's figures, for `SHOW POOLS` and the metrics.
    pub fn pool_rows(&self) -> Vec<PoolRow> {
        let mut rows: Vec<PoolRow> = self
            .pools
            .all()
            .into_iter()
            .map(|(key, pool)| {
                let status = pool.status();
                let (pinned, max_pinned) = pool.manager().pinned();
                PoolRow {
                    node: self.pools.nodes()[key.node].name.clone(),
                    database: key.database,
                    user: key.user,
                    size: status.size,
                    idle: status.available,
                    waiting: status.waiting,
                    max_size: status.max_size,
                    pinned,
                    max_pinned,
                }
            })
            .collect();
        rows.sort_by(|a, b| (&a.database, &a.user, &a.node).cmp(&(&b.database, &b.user, &b.node)));
        rows
    }

    /// Connections counted now (logging in or logged in, admin console included).
    pub fn client_count(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }
}

/// The causal-token keys from `[routing]`; a generated one when no secret is configured.
fn causal_keys(
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

impl Listener {
    /// Binds the configured listen address. `config_path` is the file `RELOAD` and SIGHUP
    /// read again (none for a proxy built in code, as tests do).
    pub async fn bind(config: Config, config_path: Option<PathBuf>) -> std::io::Result<Listener> {
        let listener = TcpListener::bind(config.proxy.listen).await?;
        let http = match config.metrics.enabled {
            true => Some(TcpListener::bind(config.metrics.listen).await?),
            false => None,
        };
        let tokens = causal_keys(&config.routing).map_err(std::io::Error::other)?;
        let tls = ClientTls::load(&config.tls).map_err(std::io::Error::other)?;
        let mut proxy = Proxy::new(config, tokens).map_err(std::io::Error::other)?;
        proxy.config_path = config_path;
        proxy.set_client_tls(tls);
        Ok(Listener {
            listener,
            http,
            proxy: Arc::new(proxy),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Where `/metrics` and `/healthz` are served, when enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn proxy(&self) -> Arc<Proxy> {
        self.proxy.clone()
    }

    /// Accepts clients until the task is dropped.
    pub async fn serve(self) {
        let proxy = self.proxy.clone();
        tokio::spawn(maintain(Arc::downgrade(&proxy)));
        if let Some(http) = self.http {
            tokio::spawn(crate::http::serve(http, Arc::downgrade(&proxy)));
        }
        proxy.start_monitor();
        proxy.start_catalog();
        if proxy.config.routing.enabled {
            proxy.await_first_checks(FIRST_CHECKS_LIMIT).await;
        }
        let mut backoff = crate::limits::AcceptBackoff::default();
        let mut errors = crate::limits::LogThrottle::default();
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    backoff.succeeded();
                    let proxy = proxy.clone();
                    tokio::spawn(async move {
                        handle_client(proxy, stream, peer).await;
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep going.
                    if let Some(count) = errors.hit(Instant::now()) {
                        tracing::warn!(error = %e, count, "accept failed (count: errors since the last report)");
                    }
                    tokio::time::sleep(backoff.failed()).await;
                }
            }
        }
    }
}

/// Upkeep once a second: pool idle and lifetime limits, min_size; the metrics recorder's
/// histogram samples folded into their buckets (else they pile up until a scrape).
async fn maintain(proxy: std::sync::Weak<Proxy>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(proxy) = proxy.upgrade() else {
            return;
        };
        proxy.pools.maintain().await;
        proxy.metrics.upkeep();
    }
}

/// Counts a connected client for as long as it lives.
struct ClientSlot<'a>(&'a AtomicUsize);

impl Drop for ClientSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn handle_client(proxy: Arc<Proxy>, tcp: TcpStream, peer: SocketAddr) {
    let count = proxy.clients.fetch_add(1, Ordering::Relaxed) + 1;
    let _slot = ClientSlot(&proxy.clients);
    if count > proxy.config.proxy.max_client_conn {
        return refuse_over_limit(&proxy, tcp).await;
    }
    let _ = tcp.set_nodelay(true);
    let deadline = proxy
        .config
        .proxy
        .client_login_timeout
        .non_zero()
        .map(|t| tokio::time::Instant::now() + t);
    // The same socket, to say why when the login times out in the middle of reading.
    let spare = spare_socket(&tcp);
    let tls = proxy.client_tls();
    let read = login::read_startup(tcp, tls.acceptor.as_ref(), time_left(deadline)).await;
    let (mut stream, startup) = match read {
        Ok((stream, Accepted::Startup(startup))) => (stream, startup),
        Ok((_, Accepted::Cancel { pid, secret })) => {
            if let Some(target) = proxy.cancel.lookup(pid, &secret) {
                tracing::debug!(client = pid, node = %target.node.name, "forwarding cancel request");
                if let Err(e) = send_cancel(&target).await {
                    tracing::warn!(error = %e, "could not send cancel request");
                }
            }
            return;
        }
        Err((None, LoginError::Timeout)) => {
            let stream = spare.map(ClientStream::Plain);
            return refuse(stream, LoginError::Timeout, peer).await;
        }
        Err((stream, e)) => return refuse(stream, e, peer).await,
    };
    if tls.mode == ClientTlsMode::Require && !stream.is_tls() {
        let e = PgError::fatal(
            code::INVALID_AUTHORIZATION,
            "SSL required: this server accepts only TLS connections (connect with sslmode=require or stronger)",
        );
        return refuse(Some(stream), LoginError::Refused(e), peer).await;
    }
    let channel_binding = tls.end_point.as_deref().filter(|_| stream.is_tls());
    match login_client(
        &proxy,
        &mut stream,
        &startup,
        channel_binding,
        peer,
        deadline,
    )
    .await
    {
        Ok(Login::Admin(user)) => crate::admin::serve(proxy.clone(), stream, user).await,
        Ok(Login::Client(client)) => {
            let (ctx, settings, server) = *client;
            let end = Session::new(stream, ctx, settings, server).run().await;
            tracing::debug!(%peer, reason = %end, "client left");
        }
        Err(e) => refuse(Some(stream), e, peer).await,
    }
}

/// A logged-in client: an ordinary one, ready for its session, or an admin.
enum Login {
    Client(Box<(SessionContext, ClientSettings, Option<Server>)>),
    /// Authenticated as this admin user on the admin database.
    Admin(String),
}

/// Logs in a client: authentication, database, a first server connection whose
/// ParameterStatus values the client receives, and its cancel key. An admin user asking
/// for database `pgsplit` gets the admin console instead.
async fn login_client(
    proxy: &Arc<Proxy>,
    stream: &mut ClientStream,
    startup: &crate::wire::startup::StartupMessage,
    channel_binding: Option<&[u8]>,
    peer: SocketAddr,
    deadline: Option<tokio::time::Instant>,
) -> Result<Login, LoginError> {
    let (user_name, database_name) = login::requested(startup)?;
    let (user_name, database_name) = (user_name.to_string(), database_name.to_string());
    let user = proxy.config.user(&user_name);
    let known = user.and_then(|u| {
        let secret = proxy.secrets.get(&u.name);
        match (u.auth, secret) {
            (ClientAuth::ScramSha256, Some(s)) => Some((u, s.clone())),
            (ClientAuth::ScramSha256, None) => None,
            _ => Some((u, ScramSecret::mock(&u.name))),
        }
    });
    let mut out = BytesMut::new();
    login::negotiate(startup, &mut out);
    if !out.is_empty() {
        stream.send(&out).await?;
        out.clear();
    }
    login::authenticate(
        stream,
        &user_name,
        known.as_ref().map(|(u, s)| (*u, s)),
        channel_binding,
        time_left(deadline),
    )
    .await?;
    // Unknown users never get here (their exchange cannot succeed); be sure anyway.
    let user = user.ok_or_else(|| {
        LoginError::Refused(PgError::fatal(
            code::INVALID_PASSWORD,
            format!("password authentication failed for user \"{user_name}\""),
        ))
    })?;
    if database_name == ADMIN_DATABASE {
        if !proxy.config.is_admin(&user_name) {
            return Err(LoginError::Refused(PgError::fatal(
                code::INSUFFICIENT_PRIVILEGE,
                format!("permission denied for database \"{ADMIN_DATABASE}\": user \"{user_name}\" is not in proxy.admin_users"),
            )));
        }
        return Ok(Login::Admin(user_name));
    }
    let database = login::find_database(&proxy.config.databases, &database_name)?;

    let creds = Credentials {
        user: user.server_user().to_string(),
        password: user.server_password().map(str::to_string),
        database: database.server_database().to_string(),
    };
    let pools: Vec<ServerPool> = (0..proxy.pools.nodes().len())
        .map(|node| {
            let key = PoolKey {
                node,
                database: creds.database.clone(),
                user: creds.user.clone(),
            };
            proxy.pools.get(&key, &creds)
        })
        .collect();

    // A causal token presented at startup (`options=-c pgsplit.causal_token=...`).
    let causal_token = match crate::frontend::settings::startup_option(
        &startup.params,
        crate::causal::token::NAME,
    ) {
        None => 0,
        Some(token) => {
            let routing = &proxy.routing;
            routing
                .tokens
                .check(routing.positions.cluster(), &token)
                .map_err(|e| {
                    LoginError::Refused(PgError::fatal(
                        code::INVALID_PARAMETER_VALUE,
                        format!(
                            "invalid value for parameter \"{}\": {e}",
                            crate::causal::token::NAME
                        ),
                    ))
                })?
        }
    };
    // The client's ParameterStatus values come from a real server connection with the
    // client's startup parameters applied, exactly as PostgreSQL would report them.
    let settings = ClientSettings::from_startup(&startup.params);
    let (mut server, on_primary) = login_server(proxy, &pools).await?;
    apply_settings(&mut server, settings.current())
        .await
        .map_err(|e| {
            LoginError::Refused(PgError::fatal(code::relayed(e.sqlstate()), e.to_string()))
        })?;
    let cancel = proxy.cancel.register();
    let entry = proxy.registry.register(ClientRow {
        id: cancel.pid,
        user: user_name.clone(),
        database: database_name.clone(),
        peer,
        connected_at: Instant::now(),
        now: ClientNow::default(),
    });
    for status in server.parameters.values() {
        out.extend_from_slice(status);
    }
    msg::backend_key_data(cancel.pid, cancel.secret, &mut out);
    msg::ready_for_query(msg::TxStatus::Idle, &mut out);
    stream.send(&out).await?;

    let mode = proxy.config.proxy.pool_mode;
    // (Session pooling runs everything on the primary: a replica's connection is not kept.)
    let keep = (mode == PoolMode::Session && on_primary).then_some(server);
    let ctx = SessionContext {
        pools,
        routing: proxy.routing.clone(),
        mode,
        max_message_size: proxy.config.proxy.max_message_size.as_usize(),
        idle_timeout: proxy.config.proxy.client_idle_timeout.non_zero(),
        idle_transaction_timeout: proxy.config.pool.idle_transaction_timeout.non_zero(),
        primary_wait: proxy.config.pool.primary_wait_timeout.as_std(),
        cancel,
        entry,
        checkout_wait: proxy.metrics.checkout_wait(),
        replay_wait: proxy.metrics.replay_wait(),
        causal_token,
    };
    tracing::debug!(user = %user_name, database = %database_name, "client logged in");
    Ok(Login::Client(Box::new((ctx, settings, keep))))
}

/// A server connection for a login: its ParameterStatus values are the client's. The
/// primary's, or, when the primary cannot be reached, an available replica's, so that
/// clients that only read can log in through a primary outage. Returns the connection and
/// whether it is the primary's.
async fn login_server(proxy: &Proxy, pools: &[ServerPool]) -> Result<(Server, bool), LoginError> {
    let failure = match proxy.routing.primary() {
        Some(primary) => match get_connection(&pools[primary]).await {
            Ok(server) => return Ok((server, true)),
            Err(e) => Some(e),
        },
        None => None,
    };
    if failure
        .as_ref()
        .is_none_or(crate::backend::pool::unavailable)
    {
        let now = Instant::now();
        for replica in proxy.routing.topology.snapshot() {
            if !replica.available(now) {
                continue;
            }
            if let Ok(server) = get_connection(&pools[replica.node]).await {
                match &failure {
                    Some(e) => {
                        tracing::info!(node = %server.node.name, error = %e, "the primary cannot be reached; a replica serves this login")
                    }
                    None => {
                        tracing::info!(node = %server.node.name, "no node takes writes now; a replica serves this login")
                    }
                }
                return Ok((server, false));
            }
        }
    }
    let Some(failure) = failure else {
        return Err(LoginError::Refused(PgError::fatal(
            code::CANNOT_CONNECT_NOW,
            "pgsplit: no node takes writes now and no replica is available",
        )));
    };
    let message = match &failure {
        deadpool::managed::PoolError::Backend(b) => b.to_string(),
        other => format!("no server connection available: {other}"),
    };
    let sqlstate = match &failure {
        deadpool::managed::PoolError::Backend(b @ crate::backend::BackendError::Server { .. }) => {
            code::relayed(b.sqlstate())
        }
        _ => code::CANNOT_CONNECT,
    };
    Err(LoginError::Refused(PgError::fatal(sqlstate, message)))
}

/// What is left of the login time (`client_login_timeout`); no deadline is no limit.
fn time_left(deadline: Option<tokio::time::Instant>) -> Duration {
    deadline.map_or(Duration::MAX, |d| {
        d.saturating_duration_since(tokio::time::Instant::now())
    })
}

/// A second handle on a client's socket, for the login timeout's error when the stream
/// itself is gone with the timed-out read. (Over TLS, an unencrypted error only ends the
/// client's wait.)
fn spare_socket(tcp: &TcpStream) -> Option<TcpStream> {
    let fd = socket2::SockRef::from(tcp).try_clone().ok()?;
    fd.set_nonblocking(true).ok()?;
    TcpStream::from_std(std::net::TcpStream::from(fd)).ok()
}

/// Sends a login error (if any, and if there is a stream to send it on) and closes.
async fn refuse(stream: Option<ClientStream>, e: LoginError, peer: SocketAddr) {
    let err = match e {
        LoginError::Refused(err) => {
            tracing::info!(%peer, error = %err, "client refused");
            err
        }
        LoginError::Tls(e) => {
            tracing::info!(%peer, error = %e, "client refused: TLS handshake failed");
            return;
        }
        LoginError::Timeout => {
            tracing::debug!(%peer, "client did not log in within client_login_timeout");
            PgError::fatal(
                code::PROTOCOL_VIOLATION,
                "canceling authentication due to timeout (client_login_timeout)",
            )
        }
        other => {
            tracing::debug!(%peer, error = %other, "client left during login");
            return;
        }
    };
    if let Some(mut stream) = stream {
        let _ = stream.send(&err.to_bytes()).await;
        let _ = stream.shutdown().await;
    }
}

/// Turns away a connection past `max_client_conn` at once, PostgreSQL's way (FATAL 53300),
/// without waiting for its startup packet; logged at most once a second with a count.
async fn refuse_over_limit(proxy: &Proxy, mut stream: TcpStream) {
    let logged = proxy
        .refusals
        .lock()
        .map_or(None, |mut t| t.hit(Instant::now()));
    if let Some(count) = logged {
        let limit = proxy.config.proxy.max_client_conn;
        tracing::warn!(
            count,
            limit,
            "connections refused: max_client_conn reached (count: refusals since the last report)"
        );
    }
    // Whatever the client already sent is read, so closing sends FIN, not RST (which could
    // discard the error before the client reads it).
    let _ = stream.try_read(&mut [0u8; 1024]);
    let e = PgError::fatal(
        code::TOO_MANY_CONNECTIONS,
        "sorry, too many clients already",
    );
    let _ = stream.write_all(&e.to_bytes()).await;
    let _ = stream.shutdown().await;
}
