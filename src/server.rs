//! The listening socket and the accept loop: the limits on clients, and what happens to
//! each new connection (a cancel request passed on, or a login then a session or the admin
//! console). The state the clients share is `crate::proxy`; logging in is
//! `crate::frontend::login`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::clients::send_cancel;
use crate::config::{ClientTlsMode, Config};
use crate::frontend::login::{self, time_left, Accepted, LoginError};
use crate::frontend::session::Session;
use crate::frontend::stream::ClientStream;
use crate::proxy::{causal_keys, Proxy};
use crate::tls::ClientTls;
use crate::wire::error::code;
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

async fn handle_client(proxy: Arc<Proxy>, tcp: TcpStream, peer: SocketAddr) {
    // Counted for as long as it lives.
    let connection = proxy.clients.connect();
    if connection.count > proxy.config().proxy.max_client_conn {
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
            if let Some(target) = proxy.clients.cancel(pid, &secret) {
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
    match login::login_client(
        &proxy,
        &mut stream,
        &startup,
        channel_binding,
        peer,
        deadline,
    )
    .await
    {
        Ok(login::Login::Admin(user)) => crate::admin::serve(proxy.clone(), stream, user).await,
        Ok(login::Login::Client(client)) => {
            let (ctx, settings, server) = *client;
            let end = Session::new(stream, ctx, settings, server).run().await;
            tracing::debug!(%peer, reason = %end, "client left");
        }
        Err(e) => refuse(Some(stream), e, peer).await,
    }
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
