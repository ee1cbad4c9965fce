//! Logging a client in: the handshake (startup packet, TLS, authentication; in
//! `handshake.rs`), then what makes a logged-in client: its database and server pools, a
//! first server connection whose ParameterStatus values it receives (the primary's, or a
//! replica's through a primary outage), its causal token, its cancel key and registry entry,
//! and the context its session runs with. An admin user asking for database `pgsplit` gets
//! the admin console instead.

mod handshake;

pub use handshake::*;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::auth::ScramSecret;
use crate::backend::connection::Credentials;
use crate::backend::pool::get_connection;
use crate::backend::{PoolKey, ServerPool};
use crate::clients::NewClient;
use crate::config::{ClientAuth, PoolMode, ADMIN_DATABASE};
use crate::frontend::session::{apply_settings, Server, SessionContext};
use crate::frontend::settings::ClientSettings;
use crate::frontend::stream::ClientStream;
use crate::proxy::Proxy;
use crate::wire::error::code;
use crate::wire::message as msg;
use crate::wire::PgError;

/// A logged-in client: an ordinary one, ready for its session, or an admin.
pub enum Login {
    Client(Box<(SessionContext, ClientSettings, Option<Server>)>),
    /// Authenticated as this admin user on the admin database.
    Admin(String),
}

/// Logs in a client: authentication, database, a first server connection whose
/// ParameterStatus values the client receives, and its cancel key. An admin user asking
/// for database `pgsplit` gets the admin console instead.
pub async fn login_client(
    proxy: &Arc<Proxy>,
    stream: &mut ClientStream,
    startup: &crate::wire::startup::StartupMessage,
    channel_binding: Option<&[u8]>,
    peer: SocketAddr,
    deadline: Option<tokio::time::Instant>,
) -> Result<Login, LoginError> {
    let (user_name, database_name) = requested(startup)?;
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
    negotiate(startup, &mut out);
    if !out.is_empty() {
        stream.send(&out).await?;
        out.clear();
    }
    authenticate(
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
    let database = find_database(&proxy.config().databases, &database_name)?;

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
    let client = proxy.clients.register(NewClient {
        user: user_name.clone(),
        database: database_name.clone(),
        peer,
        connected_at: Instant::now(),
    });
    for status in server.parameters.values() {
        out.extend_from_slice(status);
    }
    msg::backend_key_data(client.pid, client.secret, &mut out);
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
        client,
        checkout_wait: proxy.metrics().checkout_wait(),
        replay_wait: proxy.metrics().replay_wait(),
        primary_wait_seconds: proxy.metrics().primary_wait(),
        causal_token,
    };
    tracing::debug!(user = %user_name, database = %database_name, "client logged in");
    Ok(Login::Client(Box::new((ctx, settings, keep))))
}

/// A server connection for a login: its ParameterStatus values are the client's. The
/// primary's, or, when the primary cannot be reached, an available replica's, so that
/// clients that only read can log in through a primary outage. When no node can serve
/// (a switchover: the primary stopping, the replicas not yet following the new one), the
/// login waits for one up to `pool.primary_wait_timeout`, as a write waits for a primary.
/// Returns the connection and whether it is the primary's.
async fn login_server(proxy: &Proxy, pools: &[ServerPool]) -> Result<(Server, bool), LoginError> {
    let since = Instant::now();
    let wait = proxy.config().pool.primary_wait_timeout.as_std();
    loop {
        match try_login_server(proxy, pools).await {
            Ok(found) => return Ok(found),
            Err((_, true)) if since.elapsed() < wait => {
                tokio::time::sleep(LOGIN_RETRY).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// How often a login that found no node to serve it tries again.
const LOGIN_RETRY: Duration = Duration::from_millis(100);

/// One try of [`login_server`]; an error says whether no node could be reached (worth
/// another try) rather than one refusing the login.
async fn try_login_server(
    proxy: &Proxy,
    pools: &[ServerPool],
) -> Result<(Server, bool), (LoginError, bool)> {
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
        return Err((
            LoginError::Refused(PgError::fatal(
                code::CANNOT_CONNECT_NOW,
                "pgsplit: no node takes writes now and no replica is available",
            )),
            true,
        ));
    };
    let retry = crate::backend::pool::unavailable(&failure);
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
    Err((
        LoginError::Refused(PgError::fatal(sqlstate, message)),
        retry,
    ))
}

/// What is left of the login time (`client_login_timeout`); no deadline is no limit.
pub fn time_left(deadline: Option<tokio::time::Instant>) -> Duration {
    deadline.map_or(Duration::MAX, |d| {
        d.saturating_duration_since(tokio::time::Instant::now())
    })
}
