//! `config.toml`: the serde structs, their defaults, validation and the loader.
//!
//! Every table refuses unknown keys, and every optional key has a default, so the smallest
//! useful file names one primary node, one database and one user. Loading is three steps:
//! read the file ([`ConfigError::Io`]), parse the TOML ([`ConfigError::Parse`], whose message
//! carries line and column), then check the rules ([`ConfigError::Invalid`], which lists
//! *every* problem found, each with the key path it is about, like `nodes[1].port`).
//!
//! Durations and byte sizes are [`Duration`] and [`ByteSize`] (in `duration.rs`):
//! `"5s"` / `"64MB"` or bare integers (milliseconds / bytes).

mod duration;
mod live;
mod nodes;
mod secrets;
mod topology;
mod users;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use self::duration::{ByteSize, Duration, ParseUnitError};
pub use self::live::{live_setting_key, SetError, SETTABLE};
pub use self::nodes::{NodeConfig, NodeRole, NodeTlsMode};
pub use self::secrets::hidden as hidden_secret;
pub use self::topology::{parse_http_url, TopologyConfig};
pub use self::users::{ClientAuth, DatabaseConfig, PasswordKind, UserConfig};

/// Name of the admin console's virtual database; no `[[databases]]` entry may use it.
pub const ADMIN_DATABASE: &str = "pgsplit";

/// The whole `config.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[proxy]`: the client-facing side.
    #[serde(default)]
    pub proxy: ProxyConfig,
    /// `[pool]`: server connection pools.
    #[serde(default)]
    pub pool: PoolConfig,
    /// `[[nodes]]`: one primary and any number of replicas.
    #[serde(default)]
    pub nodes: Vec<NodeConfig>,
    /// `[[databases]]`: the databases clients may connect to.
    #[serde(default)]
    pub databases: Vec<DatabaseConfig>,
    /// `[[users]]`: the users clients may log in as.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// `[routing]`: read/write splitting.
    #[serde(default)]
    pub routing: RoutingConfig,
    /// `[lag]`: the replica lag guard.
    #[serde(default)]
    pub lag: LagConfig,
    /// `[metrics]`: the Prometheus and health-check endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// `[tls]`: TLS for client connections.
    #[serde(default)]
    pub tls: TlsConfig,
    /// `[topology]`: members read from Patroni besides `[[nodes]]`.
    #[serde(default)]
    pub topology: TopologyConfig,
}

/// `[tls]`: TLS between clients and pgsplit. The files are read at start and on every
/// reload (SIGHUP, `RELOAD`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The certificate chain, PEM, the server's own certificate first.
    pub cert_file: Option<PathBuf>,
    /// The certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// Whether clients may or must use TLS. Default disable.
    pub client_mode: ClientTlsMode,
}

/// `tls.client_mode`: what pgsplit answers a client's SSLRequest, and whether it serves
/// clients that do not ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientTlsMode {
    /// No TLS: SSLRequest is answered `N`.
    #[default]
    Disable,
    /// TLS for the clients that ask; plain connections are served too.
    Allow,
    /// Only TLS connections log in; others get 28000 before authentication.
    Require,
}

/// `[metrics]`: `GET /metrics` (Prometheus) and `GET /healthz` over HTTP.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve the endpoint. Default true.
    pub enabled: bool,
    /// Where it listens. Default 127.0.0.1:9930 (loopback: metrics are not for everyone).
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9930)),
        }
    }
}

/// `[lag]`: how replica lag is watched and when a replica leaves the read rotation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LagConfig {
    /// How often each node is checked. Default 250ms; > 0.
    pub check_interval: Duration,
    /// A replica further behind than this many bytes of WAL leaves the rotation.
    /// Default 16MB; 0 = bytes do not eject.
    pub max_replica_lag: ByteSize,
    /// A replica further behind than this in time leaves the rotation. Default 0 = time
    /// does not eject (a replica kept deliberately behind stays in).
    pub max_replica_delay: Duration,
    /// It comes back once its lag has stayed at or below this percentage of the
    /// thresholds for `readmit_after`. Default 50; 1..=100.
    pub readmit_percent: u32,
    /// Default 1s.
    pub readmit_after: Duration,
    /// Consecutive failed checks that mark a replica down. Default 3; > 0.
    pub down_after_failures: u32,
    /// Consecutive good checks that bring a down replica back. Default 2; > 0.
    pub up_after_successes: u32,
    /// The `[[users]]` entry whose server login the monitor uses. Default: the first user.
    pub monitor_user: Option<String>,
    /// The database the monitor connects to. Default: the first database.
    pub monitor_database: Option<String>,
}

impl Default for LagConfig {
    fn default() -> Self {
        LagConfig {
            check_interval: Duration::from_millis(250),
            max_replica_lag: ByteSize::mb(16),
            max_replica_delay: Duration::ZERO,
            readmit_percent: 50,
            readmit_after: Duration::from_secs(1),
            down_after_failures: 3,
            up_after_successes: 2,
            monitor_user: None,
            monitor_database: None,
        }
    }
}

/// Volatile functions that are safe on a replica: they read, or make values up, but write
/// nothing. The built-ins among them are reads anyway; the list also covers extensions'
/// functions (`uuid-ossp`, `pgcrypto`) installed in a user schema.
pub const DEFAULT_READ_ONLY_FUNCTIONS: &[&str] = &[
    "random",
    "clock_timestamp",
    "timeofday",
    "gen_random_uuid",
    "pg_sleep",
    "uuid_generate_v1",
    "uuid_generate_v1mc",
    "uuid_generate_v4",
    "gen_random_bytes",
    "gen_salt",
];

/// `[routing]`: which node runs each transaction. `Debug` hides the causal keys.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Split reads from writes. When false, everything runs on the primary. Default true.
    pub enabled: bool,
    /// How a client reads its own writes. Default lsn.
    pub read_your_writes: ReadYourWrites,
    /// In `read_your_writes = "time"`: after a write, the client's reads go to the primary
    /// this long. Default 5s; 0 = off.
    pub pin_after_write: Duration,
    /// What reads do when no replica is available. Default primary.
    pub fallback: Fallback,
    /// Tables whose reads always go to the primary (`name` or `schema.name`).
    pub primary_tables: Vec<String>,
    /// Functions that write, besides the built-in list (`name` or `schema.name`). They win
    /// over everything else.
    pub write_functions: Vec<String>,
    /// Functions that are reads even when the primary's catalog says they are volatile
    /// (`name` or `schema.name`). Default: [`DEFAULT_READ_ONLY_FUNCTIONS`].
    pub read_only_functions: Vec<String>,
    /// How long a replica that refused a connection is skipped. Default 5s; > 0.
    pub replica_cooldown: Duration,
    /// Statement classifications cached, by normalised text. Default 10000; 0 = no cache.
    pub classify_cache_size: usize,
    /// The secret causal tokens are signed with (at least 16 characters). Unset: read from
    /// `causal_key_file`, else from the environment variable `PGSPLIT_CAUSAL_KEY`, else
    /// generated at start (tokens are then trusted by this process only).
    #[serde(serialize_with = "hidden")]
    pub causal_key: Option<String>,
    /// A file holding the secret (its first line), when `causal_key` is unset.
    pub causal_key_file: Option<PathBuf>,
    /// Former secrets whose tokens are still accepted (key rotation); none signs.
    #[serde(serialize_with = "hidden_list")]
    pub causal_old_keys: Vec<String>,
}

impl fmt::Debug for RoutingConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoutingConfig")
            .field("enabled", &self.enabled)
            .field("read_your_writes", &self.read_your_writes)
            .field("pin_after_write", &self.pin_after_write)
            .field("fallback", &self.fallback)
            .field("primary_tables", &self.primary_tables)
            .field("write_functions", &self.write_functions)
            .field("read_only_functions", &self.read_only_functions)
            .field("replica_cooldown", &self.replica_cooldown)
            .field("classify_cache_size", &self.classify_cache_size)
            .field("causal_key", &secrets::hidden(&self.causal_key))
            .field("causal_key_file", &self.causal_key_file)
            .field("causal_old_keys", &self.causal_old_keys.len())
            .finish()
    }
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            enabled: true,
            read_your_writes: ReadYourWrites::Lsn,
            pin_after_write: Duration::from_secs(5),
            fallback: Fallback::Primary,
            primary_tables: Vec::new(),
            write_functions: Vec::new(),
            read_only_functions: DEFAULT_READ_ONLY_FUNCTIONS
                .iter()
                .map(|f| f.to_string())
                .collect(),
            replica_cooldown: Duration::from_secs(5),
            classify_cache_size: 10_000,
            causal_key: None,
            causal_key_file: None,
            causal_old_keys: Vec::new(),
        }
    }
}

/// How a client that wrote reads its writes (`routing.read_your_writes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadYourWrites {
    /// Its reads go to a replica only once that replica has replayed the WAL position of
    /// its last write; until then to the primary.
    #[default]
    Lsn,
    /// Its reads go to the primary for `pin_after_write` after each write.
    Time,
    /// No pin: its reads may miss its writes.
    Off,
    /// As `Lsn`, and every client's reads also see every other client's writes that
    /// completed before the read began: a read goes to a replica only once that replica
    /// has replayed the newest write position any client reached through this pgsplit.
    Cluster,
}

impl ReadYourWrites {
    /// Whether reads wait for replay of write positions (`Lsn` and `Cluster`): sessions
    /// read the position of each write, and causal tokens exist.
    pub fn by_position(self) -> bool {
        matches!(self, ReadYourWrites::Lsn | ReadYourWrites::Cluster)
    }
}

/// What reads do when no replica is available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// Reads run on the primary.
    #[default]
    Primary,
    /// Reads fail with an error.
    Error,
}

/// `[proxy]`: where pgsplit listens and how it treats clients.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Address clients connect to. Default `127.0.0.1:6432`.
    pub listen: SocketAddr,
    /// When a server connection goes back to the pool. Default transaction.
    pub pool_mode: PoolMode,
    /// Most client connections open at once, counted from accept (logging in or logged
    /// in); past it a new connection gets 53300 and is closed. Default 1000; must be > 0.
    pub max_client_conn: usize,
    /// A client must have logged in (startup packet, SSLRequest, authentication) this long
    /// after connecting, else it is closed. Default 15s; 0 = no limit.
    pub client_login_timeout: Duration,
    /// Largest client message accepted. Default 64MB; 1kB..=1GB.
    pub max_message_size: ByteSize,
    /// Close clients idle this long; zero means never. Default 0.
    pub client_idle_timeout: Duration,
    /// Give up connecting to a node after this long. Default 5s; must be > 0.
    pub server_connect_timeout: Duration,
    /// Threads serving clients. Default 1; must be > 0.
    pub worker_threads: usize,
    /// Users allowed on the admin database `pgsplit`; each must be in `[[users]]`.
    /// Default `["admin"]`.
    pub admin_users: Vec<String>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 6432)),
            pool_mode: PoolMode::Transaction,
            max_client_conn: 1000,
            client_login_timeout: Duration::from_secs(15),
            max_message_size: ByteSize::mb(64),
            client_idle_timeout: Duration::ZERO,
            server_connect_timeout: Duration::from_secs(5),
            worker_threads: 1,
            admin_users: vec!["admin".to_owned()],
        }
    }
}

/// How long a client keeps its server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// Until the end of each transaction (or autocommit statement).
    #[default]
    Transaction,
    /// Until the client disconnects.
    Session,
}

/// `[pool]`: one pool per (node, database, user).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Server connections kept open even when idle. Default 0; at most `max_size`.
    pub min_size: usize,
    /// Most server connections. Default 10; must be > 0.
    pub max_size: usize,
    /// How long a client waits for a server connection. Default 5s; must be > 0.
    pub checkout_timeout: Duration,
    /// Close server connections idle this long; zero means never. Default 10m.
    pub idle_timeout: Duration,
    /// Close server connections older than this; zero means never. Default 1h.
    pub max_lifetime: Duration,
    /// Prepared statements kept per server connection. Default 200; must be > 0.
    pub max_prepared_statements: usize,
    /// Disconnect a client idle inside a transaction this long (25P03); zero means never.
    /// Default 0, like PgBouncer's idle_transaction_timeout.
    pub idle_transaction_timeout: Duration,
    /// Most clients that keep a primary server connection of their own (LISTEN, temporary
    /// objects, session advisory locks, SQL PREPARE, cursors WITH HOLD) per pool; 0 (the
    /// default) means `max_size - 1`, at least 1, so one connection stays shared.
    pub max_pinned_per_pool: usize,
    /// How long a statement that needs the primary waits for one that cannot be reached
    /// (restarting, failing over) before it fails. Default 5s; 0 = fail at once.
    pub primary_wait_timeout: Duration,
}

impl PoolConfig {
    /// The effective limit of clients pinned to a connection of one pool.
    pub fn pinned_limit(&self) -> usize {
        match self.max_pinned_per_pool {
            0 => self.max_size.saturating_sub(1).max(1),
            n => n,
        }
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            min_size: 0,
            max_size: 10,
            checkout_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3_600),
            max_prepared_statements: 200,
            idle_transaction_timeout: Duration::ZERO,
            max_pinned_per_pool: 0,
            primary_wait_timeout: Duration::from_secs(5),
        }
    }
}

/// Passwords never leave pgsplit: `SHOW CONFIG` and any other serialization see `********`.
pub(crate) fn hidden<S: serde::Serializer>(
    value: &Option<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => s.serialize_some("********"),
        None => s.serialize_none(),
    }
}

/// A list of secrets, serialized as that many `********`.
pub(crate) fn hidden_list<S: serde::Serializer>(value: &[String], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(value.iter().map(|_| "********"))
}

/// One broken rule: the key it is about and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, like `proxy.max_message_size` or `nodes[1].port`.
    pub key: String,
    /// What is wrong, for a person.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML or does not fit the schema (unknown key, wrong type, bad
    /// duration...). The message carries line and column.
    #[error("{message}")]
    Parse { message: String },
    /// The file parsed but breaks rules; every problem found, in file order.
    #[error("{}", ProblemList(.0))]
    Invalid(Vec<Problem>),
}

/// Displays problems one per line.
struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl RoutingConfig {
    /// The secret causal tokens are signed with: `causal_key`, else the first line of
    /// `causal_key_file`, else the environment variable `PGSPLIT_CAUSAL_KEY`; None when
    /// none is set (one is generated at start).
    pub fn causal_secret(&self) -> Result<Option<String>, ConfigError> {
        if let Some(key) = &self.causal_key {
            return Ok(Some(key.clone()));
        }
        let secret = match &self.causal_key_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
                    path: path.clone(),
                    source,
                })?;
                Some(text.lines().next().unwrap_or_default().trim().to_owned())
            }
            None => std::env::var("PGSPLIT_CAUSAL_KEY").ok(),
        };
        match secret {
            Some(s) if s.chars().count() < MIN_CAUSAL_KEY => {
                Err(ConfigError::Invalid(vec![Problem {
                    key: "routing.causal_key".into(),
                    message: format!("the secret from causal_key_file or PGSPLIT_CAUSAL_KEY must have at least {MIN_CAUSAL_KEY} characters"),
                }]))
            }
            other => Ok(other),
        }
    }
}

/// The fewest characters a causal-token secret may have.
pub const MIN_CAUSAL_KEY: usize = 16;

impl Config {
    /// Parses and validates config text.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            message: e.to_string().trim_end().to_owned(),
        })?;
        config.resolve_secrets()?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml_str(&text)
    }

    /// Checks every rule and reports all problems at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let problems = validate::problems(self);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The primary node.
    ///
    /// # Panics
    /// If there are no nodes at all, which [`validate`](Config::validate) refuses. Without a
    /// primary (also refused) this is the first node.
    pub fn primary(&self) -> &NodeConfig {
        self.nodes
            .iter()
            .find(|n| n.role == NodeRole::Primary)
            .or_else(|| self.nodes.first())
            .expect("a validated config has a primary node")
    }

    /// The replicas, in file order.
    pub fn replicas(&self) -> impl Iterator<Item = &NodeConfig> + '_ {
        self.nodes.iter().filter(|n| n.role == NodeRole::Replica)
    }

    /// The node with this name.
    pub fn node(&self, name: &str) -> Option<&NodeConfig> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The database clients know by this name.
    pub fn database(&self, name: &str) -> Option<&DatabaseConfig> {
        self.databases.iter().find(|d| d.name == name)
    }

    /// The user clients log in as with this name.
    pub fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.name == name)
    }

    /// Every setting as `(key, value)` in file order, like `pool.max_size = 20` or
    /// `nodes[1].port = 15433`; values as the file would write them, passwords hidden.
    pub fn entries(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Ok(value) = toml::Value::try_from(self) {
            flatten("", &value, &mut out);
        }
        out
    }

    /// True when this user may use the admin console.
    pub fn is_admin(&self, user: &str) -> bool {
        self.proxy.admin_users.iter().any(|u| u == user)
    }
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut Vec<(String, String)>) {
    match value {
        toml::Value::Table(table) => {
            for (key, value) in table {
                let key = match prefix {
                    "" => key.clone(),
                    _ => format!("{prefix}.{key}"),
                };
                flatten(&key, value, out);
            }
        }
        toml::Value::Array(items) if items.iter().all(toml::Value::is_table) => {
            for (i, item) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), item, out);
            }
        }
        toml::Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

#[cfg(test)]
mod tests;
