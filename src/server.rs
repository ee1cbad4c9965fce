//! The proxy itself: the listening socket, the limits on clients, and what happens to
//! each new connection (cancel request, or login then a session).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::auth::ScramSecret;
use crate::backend::connection::Credentials;
use crate::backend::pool::PoolSettings;
use crate::backend::{NodeAddr, PoolKey, Pools, ServerPool};
use crate::cancel::{send_cancel, CancelRegistry};
use crate::classify::{Classifier, ClassifierOptions};
use crate::config::{ClientAuth, Config, NodeRole, PasswordKind, PoolMode};
use crate::frontend::login::{self, Accepted, LoginError};
use crate::frontend::session::{apply_settings, Server, Session, SessionContext};
use crate::frontend::settings::ClientSettings;
use crate::monitor::MonitorSettings;
use crate::router::{Policy, RouteStats, Routing};
use crate::topology::{Replica, Topology};
use crate::wire::error::code;
use crate::wire::message as msg;
use crate::wire::PgError;

/// How long a client may take to log in (PostgreSQL's authentication_timeout is 60 s).
const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// State shared by every client of one proxy.
pub struct Proxy {
    config: Config,
    pools: Pools,
    routing: Arc<Routing>,
    cancel: Arc<CancelRegistry>,
    clients: AtomicUsize,
    /// SCRAM secrets of the configured users, derived once.
    secrets: HashMap<String, ScramSecret>,
    /// The lag thresholds the monitor applies; replaced live on reload.
    lag_thresholds: tokio::sync::watch::Sender<crate::lag::LagThresholds>,
}

/// A bound, not yet serving, proxy.
pub struct Listener {
    listener: TcpListener,
    proxy: Arc<Proxy>,
}

impl Proxy {
    pub fn new(config: Config) -> Proxy {
        let nodes: Vec<Arc<NodeAddr>> = config
            .nodes
            .iter()
            .map(|n| {
                Arc::new(NodeAddr {
                    name: n.name.clone(),
                    host: n.host.clone(),
                    port: n.port,
                })
            })
            .collect();
        let primary = config
            .nodes
            .iter()
            .position(|n| n.role == NodeRole::Primary)
            .unwrap_or(0);
        let settings = PoolSettings {
            min_size: config.pool.min_size,
            max_size: config.pool.max_size,
            checkout_timeout: config.pool.checkout_timeout.as_std(),
            connect_timeout: config.proxy.server_connect_timeout.as_std(),
            idle_timeout: config.pool.idle_timeout.non_zero(),
            max_lifetime: config.pool.max_lifetime.non_zero(),
            max_statements: config.pool.max_prepared_statements,
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
        let replicas = config
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.role == NodeRole::Replica)
            .map(|(i, n)| Replica::new(i, n.weight))
            .collect();
        let routing = Arc::new(Routing {
            classifier: Classifier::new(ClassifierOptions {
                write_functions: config.routing.write_functions.clone(),
                primary_tables: config.routing.primary_tables.clone(),
                cache_capacity: config.routing.classify_cache_size,
                ..ClassifierOptions::default()
            }),
            policy: Policy {
                enabled: config.routing.enabled,
                pin_after_write: config.routing.pin_after_write.as_std(),
                fallback: config.routing.fallback,
            },
            topology: Arc::new(Topology::new(
                replicas,
                config.routing.replica_cooldown.as_std(),
            )),
            primary,
            stats: RouteStats::new(config.nodes.len()),
        });
        let (lag_thresholds, _) =
            tokio::sync::watch::channel(MonitorSettings::from_config(&config).thresholds);
        Proxy {
            lag_thresholds,
            pools: Pools::new(nodes, settings),
            routing,
            cancel: Arc::new(CancelRegistry::default()),
            clients: AtomicUsize::new(0),
            secrets,
            config,
        }
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

    /// Starts the lag guard's checks of every node.
    fn start_monitor(&self) {
        let nodes = self.pools.nodes();
        let replicas = self
            .config
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.role == NodeRole::Replica)
            .map(|(i, _)| (i, nodes[i].clone()))
            .collect();
        crate::monitor::spawn(
            nodes[self.routing.primary].clone(),
            replicas,
            self.routing.topology.clone(),
            MonitorSettings::from_config(&self.config),
            self.lag_thresholds.subscribe(),
        );
    }

    /// Applies a reloaded configuration (SIGHUP): the lag thresholds change at once, for
    /// the next check of every replica. Other changes need a restart; they are returned
    /// so the caller can say so. An invalid configuration never gets here (the loader
    /// validates it), so the old values stay on any error.
    pub fn reload(&self, new: &Config) -> Vec<&'static str> {
        let thresholds = MonitorSettings::from_config(new).thresholds;
        if *self.lag_thresholds.borrow() != thresholds {
            tracing::info!(?thresholds, "lag thresholds changed");
            self.lag_thresholds.send_replace(thresholds);
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
        let lag_rest = |c: &Config| {
            (
                c.lag.check_interval,
                c.lag.monitor_user.clone(),
                c.lag.monitor_database.clone(),
            )
        };
        if lag_rest(new) != lag_rest(&self.config) {
            needs_restart.push("lag.check_interval/monitor_user/monitor_database");
        }
        needs_restart
    }

    /// Clients connected now.
    pub fn client_count(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }
}

impl Listener {
    /// Binds the configured listen address.
    pub async fn bind(config: Config) -> std::io::Result<Listener> {
        let listener = TcpListener::bind(config.proxy.listen).await?;
        Ok(Listener {
            listener,
            proxy: Arc::new(Proxy::new(config)),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn proxy(&self) -> Arc<Proxy> {
        self.proxy.clone()
    }

    /// Accepts clients until the task is dropped.
    pub async fn serve(self) {
        let proxy = self.proxy.clone();
        tokio::spawn(maintain(Arc::downgrade(&proxy)));
        proxy.start_monitor();
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    let proxy = proxy.clone();
                    tokio::spawn(async move {
                        handle_client(proxy, stream, peer).await;
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep going.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Pool upkeep: idle and lifetime limits, min_size.
async fn maintain(proxy: std::sync::Weak<Proxy>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(proxy) = proxy.upgrade() else {
            return;
        };
        proxy.pools.maintain().await;
    }
}

/// Counts a connected client for as long as it lives.
struct ClientSlot<'a>(&'a AtomicUsize);

impl Drop for ClientSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn handle_client(proxy: Arc<Proxy>, mut stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let startup = match login::read_startup(&mut stream, LOGIN_TIMEOUT).await {
        Ok(Accepted::Startup(startup)) => startup,
        Ok(Accepted::Cancel { pid, secret }) => {
            if let Some(target) = proxy.cancel.lookup(pid, &secret) {
                tracing::debug!(client = pid, node = %target.node.name, "forwarding cancel request");
                if let Err(e) = send_cancel(&target).await {
                    tracing::warn!(error = %e, "could not send cancel request");
                }
            }
            return;
        }
        Err(e) => return refuse(stream, e, peer).await,
    };
    let count = proxy.clients.fetch_add(1, Ordering::Relaxed) + 1;
    let _slot = ClientSlot(&proxy.clients);
    if count > proxy.config.proxy.max_client_conn {
        let e = PgError::fatal(
            code::TOO_MANY_CONNECTIONS,
            "sorry, too many clients already",
        );
        return refuse(stream, LoginError::Refused(e), peer).await;
    }
    match login_client(&proxy, &mut stream, &startup).await {
        Ok((ctx, settings, server)) => {
            let end = Session::new(stream, ctx, settings, server).run().await;
            tracing::debug!(%peer, reason = %end, "client left");
        }
        Err(e) => refuse(stream, e, peer).await,
    }
}

/// Logs in a client: authentication, database, a first server connection whose
/// ParameterStatus values the client receives, and its cancel key.
async fn login_client(
    proxy: &Arc<Proxy>,
    stream: &mut TcpStream,
    startup: &crate::wire::startup::StartupMessage,
) -> Result<(SessionContext, ClientSettings, Option<Server>), LoginError> {
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
        stream.write_all(&out).await?;
        out.clear();
    }
    login::authenticate(
        stream,
        &user_name,
        known.as_ref().map(|(u, s)| (*u, s)),
        LOGIN_TIMEOUT,
    )
    .await?;
    // Unknown users never get here (their exchange cannot succeed); be sure anyway.
    let user = user.ok_or_else(|| {
        LoginError::Refused(PgError::fatal(
            code::INVALID_PASSWORD,
            format!("password authentication failed for user \"{user_name}\""),
        ))
    })?;
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

    // The client's ParameterStatus values come from a real server connection with the
    // client's startup parameters applied, exactly as PostgreSQL would report them.
    let settings = ClientSettings::from_startup(&startup.params);
    let primary = proxy.routing.primary;
    let mut server = pools[primary].get().await.map_err(|e| {
        let message = match &e {
            deadpool::managed::PoolError::Backend(b) => b.to_string(),
            other => format!("no server connection available: {other}"),
        };
        let sqlstate = match &e {
            deadpool::managed::PoolError::Backend(
                b @ crate::backend::BackendError::Server { .. },
            ) => code::relayed(b.sqlstate()),
            _ => code::CANNOT_CONNECT,
        };
        LoginError::Refused(PgError::fatal(sqlstate, message))
    })?;
    apply_settings(&mut server, settings.current())
        .await
        .map_err(|e| {
            LoginError::Refused(PgError::fatal(code::relayed(e.sqlstate()), e.to_string()))
        })?;
    let cancel = proxy.cancel.register();
    for status in server.parameters.values() {
        out.extend_from_slice(status);
    }
    msg::backend_key_data(cancel.pid, cancel.secret, &mut out);
    msg::ready_for_query(msg::TxStatus::Idle, &mut out);
    stream.write_all(&out).await?;

    let mode = proxy.config.proxy.pool_mode;
    let keep = (mode == PoolMode::Session).then_some(server);
    let ctx = SessionContext {
        pools,
        routing: proxy.routing.clone(),
        mode,
        max_message_size: proxy.config.proxy.max_message_size.as_usize(),
        idle_timeout: proxy.config.proxy.client_idle_timeout.non_zero(),
        cancel,
    };
    tracing::debug!(user = %user_name, database = %database_name, "client logged in");
    Ok((ctx, settings, keep))
}

/// Sends a login error (if any) and closes.
async fn refuse(mut stream: TcpStream, e: LoginError, peer: SocketAddr) {
    match e {
        LoginError::Refused(err) => {
            tracing::info!(%peer, error = %err, "client refused");
            let _ = stream.write_all(&err.to_bytes()).await;
            let _ = stream.shutdown().await;
        }
        other => tracing::debug!(%peer, error = %other, "client left during login"),
    }
}
