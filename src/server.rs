//! The proxy itself: the listening socket, the limits on clients, and what happens to
//! each new connection (cancel request, or login then a session).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::auth::ScramSecret;
use crate::backend::connection::Credentials;
use crate::backend::pool::get_connection;
use crate::backend::{PoolKey, ServerPool};
use crate::cancel::send_cancel;
use crate::clients::{ClientNow, ClientRow};
use crate::config::ADMIN_DATABASE;
use crate::config::{ClientAuth, ClientTlsMode, Config, PoolMode};
use crate::frontend::login::{self, Accepted, LoginError};
use crate::frontend::session::{apply_settings, Server, Session, SessionContext};
use crate::frontend::settings::ClientSettings;
use crate::frontend::stream::ClientStream;
use crate::proxy::{causal_keys, Proxy};
use crate::tls::ClientTls;
use crate::wire::error::code;
use crate::wire::message as msg;
use crate::wire::PgError;

/// How long a start waits for the first check of every node before accepting clients (a
/// node that refuses connections fails its check at once; one that does not answer at all
/// is not waited for longer).
const FIRST_CHECKS_LIMIT: Duration = Duration::from_secs(3);

/// A bound, not yet serving, proxy.
pub struct Listener {
    listener: TcpListener,
    /// The `/metrics` and `/healthz` endpoint, when enabled.
    http: Option<TcpListener>,
    proxy: Arc<Proxy>,
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
        if proxy.config().routing.enabled {
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
        proxy.pools().maintain().await;
        proxy.metrics().upkeep();
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
    if count > proxy.config().proxy.max_client_conn {
        return refuse_over_limit(&proxy, tcp).await;
    }
    let _ = tcp.set_nodelay(true);
    let deadline = proxy
        .config()
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
    let user = proxy.config().user(&user_name);
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
        if !proxy.config().is_admin(&user_name) {
            return Err(LoginError::Refused(PgError::fatal(
                code::INSUFFICIENT_PRIVILEGE,
                format!("permission denied for database \"{ADMIN_DATABASE}\": user \"{user_name}\" is not in proxy.admin_users"),
            )));
        }
        return Ok(Login::Admin(user_name));
    }
    let database = login::find_database(&proxy.config().databases, &database_name)?;

    let creds = Credentials {
        user: user.server_user().to_string(),
        password: user.server_password().map(str::to_string),
        database: database.server_database().to_string(),
    };
    let pools: Vec<ServerPool> = (0..proxy.pools().nodes().len())
        .map(|node| {
            let key = PoolKey {
                node,
                database: creds.database.clone(),
                user: creds.user.clone(),
            };
            proxy.pools().get(&key, &creds)
        })
        .collect();

    // A causal token presented at startup (`options=-c pgsplit.causal_token=...`).
    let causal_token = match crate::frontend::settings::startup_option(
        &startup.params,
        crate::causal::token::NAME,
    ) {
        None => 0,
        Some(token) => {
            let routing = &proxy.routing();
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

    let mode = proxy.config().proxy.pool_mode;
    // (Session pooling runs everything on the primary: a replica's connection is not kept.)
    let keep = (mode == PoolMode::Session && on_primary).then_some(server);
    let ctx = SessionContext {
        pools,
        routing: proxy.routing().clone(),
        mode,
        max_message_size: proxy.config().proxy.max_message_size.as_usize(),
        idle_timeout: proxy.config().proxy.client_idle_timeout.non_zero(),
        idle_transaction_timeout: proxy.config().pool.idle_transaction_timeout.non_zero(),
        primary_wait: proxy.config().pool.primary_wait_timeout.as_std(),
        cancel,
        entry,
        checkout_wait: proxy.metrics().checkout_wait(),
        replay_wait: proxy.metrics().replay_wait(),
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
    let failure = match proxy.routing().primary() {
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
        for replica in proxy.routing().topology.snapshot() {
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
        let limit = proxy.config().proxy.max_client_conn;
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
