//! Pools of server connections, one per (node, database, user), built on deadpool with
//! our own Manager: it connects raw protocol connections, and on recycle refuses any
//! connection that is broken, inside a transaction, has unread bytes, or is past its
//! idle or lifetime limit, or opened to a node before it lost the primary role (see
//! [`Fences`]); connections that may hold untracked session state are reset with
//! DISCARD ALL first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use deadpool::managed::{Metrics, Object, Pool, RecycleError, RecycleResult};

use super::connection::{BackendError, Credentials, NodeAddr, ServerConn};
use super::nodes::Nodes;
use crate::lock::RwLocked;
use crate::wire::message::TxStatus;

/// How pools behave; the same for every pool.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub min_size: usize,
    pub max_size: usize,
    pub checkout_timeout: Duration,
    pub connect_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    pub max_lifetime: Option<Duration>,
    pub max_statements: usize,
    /// Most session-bound clients of one pool (see [`Manager::bind`]).
    pub max_bound: usize,
}

/// When each node last lost the primary role: its server connections opened before then
/// are closed instead of reused (a client must never write to a former primary on a
/// connection kept from when it was the primary).
#[derive(Debug)]
pub struct Fences {
    since: Instant,
    /// Per node: nanoseconds after `since` of the last fence; 0 for none.
    at: Vec<AtomicU64>,
}

impl Fences {
    pub fn new(nodes: usize) -> Fences {
        Fences {
            since: Instant::now(),
            at: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// `node` lost the primary role now: its connections opened so far are not reused.
    pub fn fence(&self, node: usize) {
        let nanos = self.since.elapsed().as_nanos().max(1) as u64;
        if let Some(at) = self.at.get(node) {
            at.store(nanos, Ordering::Relaxed);
        }
    }

    /// Whether a connection to `node` opened at `created` was opened before its last fence.
    pub fn fenced(&self, node: usize, created: Instant) -> bool {
        match self.at.get(node).map(|a| a.load(Ordering::Relaxed)) {
            None | Some(0) => false,
            Some(nanos) => created <= self.since + Duration::from_nanos(nanos),
        }
    }
}

/// Creates and recycles server connections for one pool.
pub struct Manager {
    /// The node places; this pool's node is the one at `index` (an empty place until
    /// Patroni fills it: see `super::nodes`).
    nodes: Arc<Nodes>,
    /// The node's index, for `nodes` and `fences`.
    index: usize,
    fences: Arc<Fences>,
    creds: Credentials,
    settings: PoolSettings,
    /// How many clients hold a connection of this pool for their whole session.
    bound: Arc<AtomicUsize>,
}

/// A session-bound client's claim on one of its pool's places, given back when dropped.
#[derive(Debug)]
pub struct Binding(Arc<AtomicUsize>);

impl Drop for Binding {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Manager {
    /// Claims a place for a client that keeps one of this pool's connections for its
    /// whole session, or `None` when `max_bound` clients already do: session-bound
    /// clients can never take every connection of a pool.
    pub fn bind(&self) -> Option<Binding> {
        let limit = self.settings.max_bound;
        self.bound
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Binding(self.bound.clone()))
    }

    /// How many session-bound clients this pool has, and the limit.
    pub fn bound(&self) -> (usize, usize) {
        (self.bound.load(Ordering::Relaxed), self.settings.max_bound)
    }

    /// The name of the node this pool connects to.
    pub fn node_name(&self) -> &str {
        self.node().map_or(EMPTY_PLACE, |n| n.name.as_str())
    }

    /// The node this pool connects to; none while its place is empty.
    fn node(&self) -> Option<&Arc<NodeAddr>> {
        self.nodes.get(self.index)
    }

    fn expired(&self, metrics: &Metrics) -> Option<&'static str> {
        if self.fences.fenced(self.index, metrics.created) {
            return Some("opened while its node was the primary, which it is no longer");
        }
        // One clock read for both limits (this runs at every checkout).
        let now = std::time::Instant::now();
        let since = |t: std::time::Instant| now.saturating_duration_since(t);
        if self
            .settings
            .max_lifetime
            .is_some_and(|max| since(metrics.created) >= max)
        {
            return Some("past its lifetime");
        }
        let last_used = metrics.recycled.unwrap_or(metrics.created);
        if self
            .settings
            .idle_timeout
            .is_some_and(|max| since(last_used) >= max)
        {
            return Some("idle too long");
        }
        None
    }
}

impl deadpool::managed::Manager for Manager {
    /// Boxed: deadpool moves a connection by value several times per checkout and
    /// return, and a `ServerConn` is large.
    type Type = Box<ServerConn>;
    type Error = BackendError;

    async fn create(&self) -> Result<Box<ServerConn>, BackendError> {
        let node = self.node().ok_or_else(|| BackendError::Connect {
            node: EMPTY_PLACE.to_owned(),
            addr: "-".to_owned(),
            source: std::io::Error::other("no node in this place yet"),
        })?;
        let conn = ServerConn::connect(
            node.clone(),
            &self.creds,
            self.settings.connect_timeout,
            self.settings.max_statements,
        )
        .await?;
        tracing::debug!(node = %node.name, pid = conn.backend_pid, "server connection opened");
        Ok(Box::new(conn))
    }

    async fn recycle(
        &self,
        conn: &mut Box<ServerConn>,
        metrics: &Metrics,
    ) -> RecycleResult<BackendError> {
        if conn.broken {
            return Err(RecycleError::message("connection is broken"));
        }
        if conn.status != TxStatus::Idle {
            return Err(RecycleError::message("connection is inside a transaction"));
        }
        // The server may have closed it while it sat in the pool (terminated, restarted,
        // idle timeout): a non-blocking read tells, without a round trip.
        if !conn.is_quiet() {
            return Err(RecycleError::message(
                "connection has unread data or is closed",
            ));
        }
        if let Some(why) = self.expired(metrics) {
            return Err(RecycleError::message(why));
        }
        if conn.needs_discard {
            tokio::time::timeout(self.settings.connect_timeout, conn.discard_all())
                .await
                .map_err(|_| RecycleError::message("DISCARD ALL timed out"))?
                .map_err(RecycleError::Backend)?;
        }
        Ok(())
    }
}

/// A pool of connections to one node for one (database, user).
pub type ServerPool = Pool<Manager>;

/// The node name of a place no member fills yet.
const EMPTY_PLACE: &str = "(empty place)";

/// Identifies a pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub node: usize,
    pub database: String,
    pub user: String,
}

/// One pool as `SHOW POOLS` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRow {
    pub node: String,
    pub database: String,
    pub user: String,
    /// Server connections open.
    pub size: usize,
    /// Of those, idle in the pool.
    pub idle: usize,
    /// Clients waiting for a connection.
    pub waiting: usize,
    pub max_size: usize,
    /// Session-bound clients (a connection of their own), and how many may be.
    pub bound: usize,
    pub max_bound: usize,
}

/// Every pool, created on first use.
pub struct Pools {
    nodes: Arc<Nodes>,
    fences: Arc<Fences>,
    settings: PoolSettings,
    pools: RwLock<HashMap<PoolKey, ServerPool>>,
}

impl Pools {
    pub fn new(nodes: Arc<Nodes>, settings: PoolSettings) -> Pools {
        Pools {
            fences: Arc::new(Fences::new(nodes.len())),
            nodes,
            settings,
            pools: RwLock::new(HashMap::new()),
        }
    }

    /// Every node place (filled or not), by index.
    pub fn nodes(&self) -> &Arc<Nodes> {
        &self.nodes
    }

    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    /// The nodes' fences, for the monitor to set when the primary changes.
    pub fn fences(&self) -> &Arc<Fences> {
        &self.fences
    }

    /// The pool for `key`, created if needed with the given server credentials.
    pub fn get(&self, key: &PoolKey, creds: &Credentials) -> ServerPool {
        if let Some(pool) = self.pools.read_locked().get(key) {
            return pool.clone();
        }
        let mut pools = self.pools.write_locked();
        pools
            .entry(key.clone())
            .or_insert_with(|| self.build(key, creds))
            .clone()
    }

    fn build(&self, key: &PoolKey, creds: &Credentials) -> ServerPool {
        let manager = Manager {
            nodes: self.nodes.clone(),
            index: key.node,
            fences: self.fences.clone(),
            creds: creds.clone(),
            settings: self.settings.clone(),
            bound: Arc::default(),
        };
        let timeouts = deadpool::managed::Timeouts {
            wait: Some(self.settings.checkout_timeout),
            create: Some(self.settings.connect_timeout),
            // Recycling is local unless a DISCARD ALL is due; that has its own bound.
            recycle: None,
        };
        // Building only fails when timeouts are set without a runtime; we set one.
        Pool::builder(manager)
            .max_size(self.settings.max_size)
            .timeouts(timeouts)
            .queue_mode(deadpool::managed::QueueMode::Lifo)
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .expect("pool with a runtime always builds")
    }

    /// Every pool with its key.
    pub fn all(&self) -> Vec<(PoolKey, ServerPool)> {
        self.pools
            .read_locked()
            .iter()
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect()
    }

    /// Every pool's figures, for `SHOW POOLS` and the metrics, sorted by database, user
    /// and node.
    pub fn rows(&self) -> Vec<PoolRow> {
        let mut rows: Vec<PoolRow> = self
            .all()
            .into_iter()
            .filter_map(|(key, pool)| {
                // Pools of an empty place (see `super::nodes`) are not shown.
                let node = self.nodes.get(key.node)?;
                let status = pool.status();
                let (bound, max_bound) = pool.manager().bound();
                Some(PoolRow {
                    node: node.name.clone(),
                    database: key.database,
                    user: key.user,
                    size: status.size,
                    idle: status.available,
                    waiting: status.waiting,
                    max_size: status.max_size,
                    bound,
                    max_bound,
                })
            })
            .collect();
        rows.sort_by(|a, b| (&a.database, &a.user, &a.node).cmp(&(&b.database, &b.user, &b.node)));
        rows
    }

    /// Closes idle connections past their limits and tops pools up to `min_size`.
    pub async fn maintain(&self) {
        for (key, pool) in self.all() {
            let Some(node) = self.nodes.get(key.node) else {
                continue;
            };
            let removed = pool.retain(|conn, metrics| {
                let expired = pool.manager().expired(&metrics).is_some();
                !expired && !conn.broken
            });
            if !removed.removed.is_empty() {
                tracing::debug!(node = %node.name, closed = removed.removed.len(), "closed idle server connections");
            }
            let missing = self.settings.min_size.saturating_sub(pool.status().size);
            let mut held = Vec::new();
            for _ in 0..missing {
                match pool.get().await {
                    Ok(conn) => held.push(conn),
                    Err(e) => {
                        tracing::warn!(node = %node.name, error = %e, "could not open server connection for min_size");
                        break;
                    }
                }
            }
        }
    }
}

/// Checks out a connection from `pool`: a free one at once when there is one (without
/// arming a timer for a wait that will not happen, which is most checkouts), else waits
/// for one up to the pool's checkout timeout. Waiters are served first either way: a
/// permit only shows as free while nobody waits for one.
pub async fn get_connection(
    pool: &ServerPool,
) -> Result<Object<Manager>, deadpool::managed::PoolError<BackendError>> {
    let mut at_once = pool.timeouts();
    at_once.wait = Some(Duration::ZERO);
    match pool.timeout_get(&at_once).await {
        Err(deadpool::managed::PoolError::Timeout(deadpool::managed::TimeoutType::Wait)) => {
            pool.get().await
        }
        other => other,
    }
}

/// Whether a checkout failed because the node cannot serve now: it could not be reached,
/// the connection was lost while logging in, or the server said it is shutting down or
/// starting up (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now).
/// Not: a pool that stayed exhausted, or a server that refused the login.
pub fn unavailable(e: &deadpool::managed::PoolError<BackendError>) -> bool {
    match e {
        deadpool::managed::PoolError::Backend(BackendError::Server { code, .. }) => {
            matches!(code.as_str(), "57P01" | "57P02" | "57P03")
        }
        deadpool::managed::PoolError::Backend(b) => lost(b),
        deadpool::managed::PoolError::Timeout(deadpool::managed::TimeoutType::Create) => true,
        _ => false,
    }
}

/// Whether the connection to the server failed (as opposed to the server answering with
/// an error, or refusing the login).
pub fn lost(e: &BackendError) -> bool {
    matches!(
        e,
        BackendError::Connect { .. }
            | BackendError::ConnectTimeout { .. }
            | BackendError::Read { .. }
            | BackendError::ReplyTimeout { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_covers_connections_opened_before_it() {
        let fences = Fences::new(2);
        let before = Instant::now();
        assert!(!fences.fenced(0, before), "no fence yet");
        fences.fence(0);
        assert!(fences.fenced(0, before));
        assert!(!fences.fenced(1, before), "only that node");
        assert!(!fences.fenced(0, Instant::now() + Duration::from_millis(1)));
        assert!(!fences.fenced(7, before), "an unknown node is never fenced");
        fences.fence(7);
    }
}
