//! Control connections: pgsplit's own queries to a node (the lag monitor's checks, the
//! function catalog's look-ups), on small deadpool-postgres pools, never on the client pools
//! (so they go on when those are exhausted), logged in as the `[lag]` monitor login. Their
//! links are opened like server connections' (`NodeAddr::open`: TLS as the node's settings
//! say), and refuse to send the password in clear text alike (`backend::cleartext`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use deadpool_postgres::{
    Connect, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::JoinHandle;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls, Row};

use crate::backend::cleartext::CleartextGuard;
use crate::backend::NodeAddr;
use crate::config::Config;

/// How control connections log in to each node: the `[lag]` section's monitor login.
/// `Debug` hides the password.
#[derive(Clone)]
pub struct ControlLogin {
    pub user: String,
    pub password: Option<String>,
    pub database: String,
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for ControlLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlLogin")
            .field("user", &self.user)
            .field("password", &crate::config::hidden_secret(&self.password))
            .field("database", &self.database)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl ControlLogin {
    /// The monitor login of a (validated) configuration.
    pub fn from_config(config: &Config) -> ControlLogin {
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
        ControlLogin {
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

    /// The `tokio_postgres` settings of a connection to `node`.
    pub fn pg_config(&self, node: &NodeAddr, application_name: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&node.host)
            .port(node.port)
            .user(&self.user)
            .dbname(&self.database)
            .application_name(application_name)
            .connect_timeout(self.connect_timeout)
            // TLS, if any, is set up before tokio-postgres sees the link (`ControlConnect`).
            .ssl_mode(SslMode::Disable);
        if let Some(password) = &self.password {
            config.password(password);
        }
        config
    }
}

/// A pool of at most `size` control connections to `node`. Waiting for a connection,
/// opening one and checking one before reuse each end after the login's connect timeout.
pub fn pool(
    node: &NodeAddr,
    login: &ControlLogin,
    application_name: &str,
    size: usize,
) -> Result<Pool, deadpool_postgres::BuildError> {
    let manager = Manager::from_connect(
        login.pg_config(node, application_name),
        ControlConnect { node: node.clone() },
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let limit = Some(login.connect_timeout);
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(limit)
        .create_timeout(limit)
        .recycle_timeout(limit)
        .build()
}

/// Opens control connections to one node: the link as `NodeAddr::open` makes it, guarded
/// against cleartext password requests, then tokio-postgres's startup over it.
struct ControlConnect {
    node: NodeAddr,
}

type ConnectFuture<'a> = Pin<
    Box<dyn Future<Output = Result<(Client, JoinHandle<()>), tokio_postgres::Error>> + Send + 'a>,
>;

impl Connect for ControlConnect {
    fn connect(&self, pg_config: &tokio_postgres::Config) -> ConnectFuture<'_> {
        let pg_config = pg_config.clone();
        Box::pin(async move {
            let node = &self.node;
            let link = match node.open().await {
                Ok(link) => link,
                Err(e) => {
                    // tokio-postgres's errors have no public constructor: it reports the
                    // reason itself, as the failure of its first write.
                    let failed = FailedLink(Some(std::io::Error::other(e)));
                    return Err(match pg_config.connect_raw(failed, NoTls).await {
                        Err(e) => e,
                        Ok(_) => unreachable!("a failed link cannot log in"),
                    });
                }
            };
            let tls = link.is_tls();
            let guarded =
                CleartextGuard::new(link, &node.name, tls, node.tls.allow_cleartext_password);
            let (client, connection) = pg_config.connect_raw(guarded, NoTls).await?;
            let name = node.name.clone();
            let task = tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(node = %name, error = %ErrorChain(&e), "control connection ended");
                }
            });
            Ok((client, task))
        })
    }
}

/// A link that could not be opened, as a stream whose every read and write fails with
/// the reason.
struct FailedLink(Option<std::io::Error>);

impl FailedLink {
    fn error(&mut self) -> std::io::Error {
        self.0
            .take()
            .unwrap_or_else(|| std::io::ErrorKind::NotConnected.into())
    }
}

impl AsyncRead for FailedLink {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Err(self.get_mut().error()))
    }
}

impl AsyncWrite for FailedLink {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Err(self.get_mut().error()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Err(self.get_mut().error()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// An error with its causes, `: `-separated (tokio-postgres's own message leaves them out,
/// as in "error communicating with the server"); a cause the text already ends with (a
/// wrapper that repeats it) is not written twice.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(e) = cause {
            let more = e.to_string();
            if !text.ends_with(&more) {
                text.push_str(": ");
                text.push_str(&more);
            }
            cause = e.source();
        }
        f.write_str(&text)
    }
}

/// Why a control query failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{}", ErrorChain(.0))]
    Pool(#[from] PoolError),
    #[error("{}", ErrorChain(.0))]
    Query(#[from] tokio_postgres::Error),
    #[error("the query took longer than {0:?}")]
    Timeout(Duration),
}

/// Runs `sql` on a connection from `pool`. Taking the connection (and opening it) is bounded
/// by the pool's timeouts, the query by `limit`. A connection whose query failed or timed
/// out is closed, not reused.
pub async fn query(pool: &Pool, sql: &str, limit: Duration) -> Result<Vec<Row>, ControlError> {
    // Getting the connection has the limit too: opening a new one to a node that accepts
    // TCP but never answers (a stopped process) would wait forever.
    let client = match tokio::time::timeout(limit, pool.get()).await {
        Ok(client) => client?,
        Err(_) => return Err(ControlError::Timeout(limit)),
    };
    let result = tokio::time::timeout(limit, client.query(sql, &[])).await;
    if !matches!(result, Ok(Ok(_))) {
        drop(Object::take(client));
    }
    match result {
        Ok(rows) => Ok(rows?),
        Err(_) => Err(ControlError::Timeout(limit)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration, a control login and server credentials, printed with `Debug`,
    /// show none of the secrets the file holds.
    #[test]
    fn debug_output_never_shows_a_secret() {
        let mut c = Config::from_toml_str(
            "[proxy]\nadmin_users = []\n[[nodes]]\nname = \"p\"\nhost = \"h\"\nrole = \"primary\"\n\
             [[databases]]\nname = \"app\"\n[[users]]\nname = \"a\"\npassword = \"client-secret-1\"\nserver_password = \"server-secret-2\"\n\
             [routing]\ncausal_key = \"causal-secret-key-3\"\ncausal_old_keys = [\"old-causal-secret-4\"]\n",
        )
        .unwrap();
        c.lag.monitor_user = Some("a".into());
        let login = ControlLogin::from_config(&c);
        let creds = crate::backend::connection::Credentials {
            user: "a".into(),
            password: c.users[0].server_password().map(str::to_owned),
            database: "app".into(),
        };
        let printed = format!("{c:?} {c:#?} {:?} {login:?} {creds:?}", c.users[0]);
        for secret in [
            "client-secret-1",
            "server-secret-2",
            "causal-secret-key-3",
            "old-causal-secret-4",
        ] {
            assert!(!printed.contains(secret), "{secret} printed: {printed}");
        }
        assert!(printed.contains("<hidden>"));
    }
}
