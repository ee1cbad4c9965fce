//! Control connections: pgsplit's own queries to a node (the lag monitor's checks, the
//! function catalog's look-ups), on small deadpool-postgres pools, never on the client pools
//! (so they go on when those are exhausted), logged in as the `[lag]` monitor login.

use std::time::Duration;

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio_postgres::{NoTls, Row};

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
            .connect_timeout(self.connect_timeout);
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
    let manager = Manager::from_config(
        login.pg_config(node, application_name),
        NoTls,
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

/// Why a control query failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    Pool(#[from] PoolError),
    #[error("{0}")]
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
