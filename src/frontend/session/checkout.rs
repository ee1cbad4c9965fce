//! Getting a server connection for a statement: classify it (an extended-protocol batch
//! as a whole), ask the router, check out from the chosen node's pool (skipping a
//! replica that cannot be reached), bring the connection's settings to the client's, and
//! note what the statement does to the session (a write pins reads, a session-bound
//! feature keeps the connection).

use super::*;
use crate::backend::pool::{get_connection, lost, unavailable};
use crate::classify::ON_LOOP;
use crate::topology::WriteTarget;

impl Session {
    /// Whether the next client message starts a statement (a Query, or the first message
    /// of an extended-protocol batch) that may not run on the replica the client is on,
    /// while that replica still owes replies to earlier pipelined statements. Such a
    /// message waits: once the replica is done and released, it is routed afresh.
    pub(super) fn must_wait_for_route(&self) -> bool {
        let Some(server) = self.server.as_ref() else {
            return false;
        };
        if self.on_primary || self.queue.is_empty() || server.status != TxStatus::Idle {
            return false;
        }
        let Ok(Some(total)) = peek_frame_len(&self.inbox, self.ctx.max_message_size) else {
            return false;
        };
        if self.inbox.len() < total {
            return false;
        }
        let (tag, body) = (self.inbox[0], &self.inbox[5..total]);
        let class = match tag {
            b'Q' => read_query(body).map(|sql| self.classify_now(sql)),
            // A FunctionCall names its function by OID: not known to be a read.
            b'F' => Some(Classification::UNKNOWN),
            _ if self.in_batch => return false,
            b'P' => read_parse(body).map(|p| self.classify_now(p.query)),
            b'B' => read_bind(body)
                .and_then(|(_, name, _)| self.statements.get(name))
                .map(|stmt| self.classify_now(&stmt.query)),
            _ => None,
        };
        let Some(class) = class else {
            return false;
        };
        let class = if tag == b'Q' || tag == b'F' {
            class
        } else {
            // With the rest of the batch after this message.
            self.batch_class_of(&self.inbox[total..], class)
        };
        !router::replica_ok(&class)
    }

    /// Makes sure a server connection is checked out for a statement with `sql` (none for
    /// messages that carry no SQL), routing it when one must be chosen. `extended` says
    /// the statement is part of an extended-protocol batch, which is routed as a whole.
    /// Returns false when no server could be had: the client has been sent the error and
    /// the message is dropped.
    pub(super) async fn ensure_server(
        &mut self,
        sql: Option<&Bytes>,
        extended: bool,
    ) -> Result<bool, SessionEnd> {
        if let Some((code, why)) = self.transaction_lost() {
            PgError::error(code, why).encode(&mut self.outbox);
            self.status = TxStatus::Idle;
            return Ok(false);
        }
        let class = match sql {
            Some(sql) => Some(self.classify(sql).await),
            None => None,
        };
        // Kept for `note_statement`, so the statement is classified once.
        self.statement_class = class;
        let attached = match self.server.is_some() {
            true => self.resync_kept_server().await?,
            false => {
                let batch = match (class, extended) {
                    (Some(c), true) => self.batch_class(c),
                    (Some(c), false) => c,
                    (None, _) => Classification::UNKNOWN,
                };
                self.note_comment_token(sql);
                let attached = self.check_out(batch).await?;
                self.routing.statement_token = router::StatementToken::None;
                attached
            }
        };
        Ok(attached)
    }

    /// Why the client's open transaction is gone, if it is: its server connection was
    /// lost between statements, or it runs on a node that no longer takes writes (another
    /// was promoted): that connection is closed (the node rolls back) and the client is
    /// told, then goes on outside a transaction. One atomic load while on the primary.
    fn transaction_lost(&mut self) -> Option<(&'static str, String)> {
        if let Some(why) = self.lost_transaction.take() {
            return Some(why);
        }
        if !self.on_primary || !self.queue.is_empty() {
            return None;
        }
        let server = self.server.as_mut()?;
        // Only another node taking writes cuts it: while no node is known to (the
        // primary's checks fail, perhaps only because it is slow), the connection is
        // left to fail, or not, on its own.
        match self.ctx.routing.primary() {
            Some(writer) if Some(writer) != self.primary_node => {}
            _ => return None,
        }
        server.broken = true;
        if server.status == TxStatus::Idle && !self.bound {
            // Kept between transactions (session pooling): replaced, nothing lost.
            self.release();
            return None;
        }
        let node = server.node.name.clone();
        let bound = std::mem::take(&mut self.bound);
        self.binding = None;
        self.routing.session_bound = false;
        self.release();
        tracing::info!(client = self.ctx.cancel.pid, %node, "the primary changed: the client's server connection to the former primary is closed");
        let lost = match bound {
            true => "this session's state on it (temporary tables, LISTEN, session locks, SQL prepared statements) is lost",
            false => "the transaction that ran there is rolled back",
        };
        Some((code::CONNECTION_FAILURE, format!(
            "pgsplit: the primary changed while this client held a connection to {node}, the former primary: {lost}; run it again"
        )))
    }

    /// Classifies a statement's SQL: short text here, longer text on a blocking thread
    /// (parsing takes about 2 µs a token, and would hold up every client this thread
    /// serves).
    pub(super) async fn classify(&self, sql: &Bytes) -> Classification {
        if sql.len() <= ON_LOOP {
            return self.ctx.routing.classifier.classify(sql);
        }
        let routing = self.ctx.routing.clone();
        let sql = sql.clone();
        tokio::task::spawn_blocking(move || routing.classifier.classify(&sql))
            .await
            .unwrap_or(Classification::UNKNOWN)
    }

    /// Classifies SQL where waiting is not possible: long text not cached yet counts as
    /// unknown (the primary).
    fn classify_now(&self, sql: &[u8]) -> Classification {
        let classifier = &self.ctx.routing.classifier;
        if sql.len() <= ON_LOOP {
            return classifier.classify(sql);
        }
        classifier
            .classify_cached(sql)
            .unwrap_or(Classification::UNKNOWN)
    }

    /// Keeps track of what a statement does to the session: a write pins later reads to
    /// the primary; untracked session state makes the connection reset before reuse.
    pub(super) fn note_statement(&mut self, sql: &[u8]) {
        let class = match self.statement_class.take() {
            Some(class) => class,
            None => self.classify_now(sql),
        };
        if self.on_primary && router::writes(&class.class) {
            self.wrote = true;
            self.writes.sent_one();
        }
        self.ending |= class.class == Class::End;
        self.left_state |= class.leaves_state;
    }

    /// Before the statement `ensure_server` just classified runs: when it needs a real
    /// session, pins the client to its server connection (kept until the client leaves,
    /// then reset), or returns the error it fails with instead:
    /// - 0A000 on a replica (inside a read-only transaction): pinning there would strand
    ///   the client on the replica, where its later writes fail and which may leave the
    ///   rotation;
    /// - 53300 when `pool.max_pinned_per_pool` clients of the pool are session-bound already, so
    ///   that session-bound clients can never take every connection.
    pub(super) fn claim_session(&mut self) -> Option<(&'static str, String)> {
        if self.bound {
            return None;
        }
        let class = self.statement_class?;
        if class.class != Class::SessionBound {
            return None;
        }
        if !self.on_primary {
            return Some((code::FEATURE_NOT_SUPPORTED, STRANDED.to_string()));
        }
        if self.ctx.mode == PoolMode::Transaction {
            let node = self.ctx.routing.primary().unwrap_or(0);
            let pool = self.ctx.pools[node].manager();
            match pool.bind() {
                Some(binding) => self.binding = Some(binding),
                None => {
                    let (_, limit) = pool.bound();
                    return Some((
                        code::TOO_MANY_CONNECTIONS,
                        format!("pgsplit: {limit} clients already keep a server connection of their own in this pool (pool.max_pinned_per_pool); LISTEN, temporary objects, session advisory locks, SQL PREPARE and cursors WITH HOLD need one"),
                    ));
                }
            }
        }
        tracing::debug!(
            client = self.ctx.cancel.pid,
            "client bound to its server connection"
        );
        self.bound = true;
        self.routing.session_bound = true;
        None
    }

    /// The class of the extended-protocol batch that starts with `first`: the statements
    /// the client sent with it, up to the Sync, run as one implicit transaction on one
    /// server. When the Sync has not arrived yet, what follows is unknown: primary.
    pub(super) fn batch_class(&self, first: Classification) -> Classification {
        self.batch_class_of(&self.inbox, first)
    }

    /// The class of a batch that starts with `first` and goes on with the messages in
    /// `rest`, up to its Sync.
    fn batch_class_of(&self, rest: &[u8], first: Classification) -> Classification {
        let unknown = Classification::UNKNOWN;
        let mut class = first;
        let mut rest = rest;
        loop {
            let Ok(Some(total)) = peek_frame_len(rest, self.ctx.max_message_size) else {
                return router::merge(class, unknown);
            };
            if rest.len() < total {
                return router::merge(class, unknown);
            }
            let (tag, body) = (rest[0], &rest[5..total]);
            let sql = match tag {
                b'S' => return class,
                b'P' => read_parse(body).map(|p| p.query),
                b'B' => read_bind(body)
                    .and_then(|(_, name, _)| (!name.is_empty()).then_some(name))
                    .and_then(|name| self.statements.get(name))
                    .map(|stmt| &stmt.query[..]),
                _ => None,
            };
            if let Some(sql) = sql {
                class = router::merge(class, self.classify_now(sql));
            }
            rest = &rest[total..];
        }
    }

    /// A server kept across statements (session pooling, a session-bound client) whose settings
    /// were reset (RESET ALL, DISCARD ALL) gets the client's back before the next
    /// statement, as PostgreSQL restores startup values on RESET.
    pub(super) async fn resync_kept_server(&mut self) -> Result<bool, SessionEnd> {
        let Some(server) = self.server.as_ref() else {
            return Ok(false);
        };
        let resync = self.queue.is_empty()
            && server.status == TxStatus::Idle
            && server.settings != *self.settings.current();
        if resync {
            self.sync_settings().await.map_err(SessionEnd::ServerLost)?;
        }
        Ok(true)
    }

    /// Routes a transaction of class `class` and checks out a server connection on the
    /// chosen node, with the client's session settings applied. A replica that cannot
    /// serve (unreachable, shutting down or starting up, or whose connection dies before
    /// anything of the client's was sent to it) is skipped for a cooldown and the next
    /// choice is tried.
    pub(super) async fn check_out(&mut self, class: Classification) -> Result<bool, SessionEnd> {
        let routing = self.ctx.routing.clone();
        let now = Instant::now();
        self.routing.serializable = self.settings.serializable();
        let mut lease = None;
        let mut min_lsn = 0;
        let decision = if self.ctx.mode == PoolMode::Session {
            router::Decision {
                target: Target::Primary,
                reason: router::Reason::Disabled,
            }
        } else {
            router::decide(&routing.policy, &self.routing, &class, now, |lsn| {
                min_lsn = lsn;
                match routing.topology.lease(now, self.replica_slot, lsn) {
                    Ok(l) => {
                        let node = l.node;
                        lease = Some(l);
                        router::Pick::Replica(node)
                    }
                    Err(Unleased::Behind) => router::Pick::Behind,
                    Err(Unleased::Unavailable) => router::Pick::Unavailable,
                }
            })
        };
        let mut reason = decision.reason;
        let target = decision.target;
        // The node that takes writes, as the monitor discovered it (one atomic load).
        let mut primary = routing.primary();
        // Whether the statement waited for a node that takes writes (for the metric).
        let mut waited = false;
        let mut node = match target {
            Target::Primary => match self.primary_or_wait(primary, now, &mut waited).await {
                Some(node) => {
                    primary = Some(node);
                    node
                }
                None => return Ok(false),
            },
            Target::Replica(node) => node,
            Target::Refuse => return Ok(self.refuse_read()),
        };
        loop {
            let pool = &self.ctx.pools[node];
            let on_replica = Some(node) != primary;
            // A cancel for the statement ends the wait for a connection (57014).
            let got = tokio::select! {
                r = get_connection(pool) => Some(r),
                () = self.ctx.cancel.requested() => None,
            };
            let Some(got) = got else {
                self.cancelled_while_waiting();
                return Ok(false);
            };
            let skipped = match got {
                Ok(server) => {
                    self.ctx.checkout_wait.record(now.elapsed().as_secs_f64());
                    self.on_primary = !on_replica;
                    self.primary_node = primary.filter(|_| !on_replica);
                    self.attach(server);
                    match self.sync_settings().await {
                        Ok(()) => break,
                        // Nothing of the client's has gone to this connection yet: drop
                        // it and let another node serve the statement.
                        Err(e) if on_replica && lost(&e) => {
                            self.drop_broken_server();
                            e.to_string()
                        }
                        // The same on the primary: a pooled connection that died idle (the
                        // primary shuts down for a switchover) costs the client nothing; it
                        // waits for the primary, or the node that takes its place.
                        Err(e)
                            if !on_replica
                                && (lost(&e) || shutting_down(&e))
                                && now.elapsed() < self.ctx.primary_wait =>
                        {
                            tracing::debug!(node = %self.ctx.pools[node].manager_node(), error = %e, "pooled primary connection lost before use; waiting for the primary");
                            self.drop_broken_server();
                            waited = true;
                            let Some(next) = self.retry_primary(now).await else {
                                return Ok(false);
                            };
                            (primary, node) = (Some(next), next);
                            continue;
                        }
                        Err(e) => {
                            routing.stats.record(reason, node);
                            let err = PgError::error(
                                code::relayed(e.sqlstate()),
                                format!("could not apply session settings on the server: {e}"),
                            );
                            err.encode(&mut self.outbox);
                            if let Some(server) = self.server.as_mut() {
                                server.broken = !matches!(e, BackendError::Server { .. });
                            }
                            self.release();
                            return Ok(false);
                        }
                    }
                }
                Err(e) if on_replica && unavailable(&e) => e.to_string(),
                Err(e) if unavailable(&e) && now.elapsed() < self.ctx.primary_wait => {
                    // The primary cannot be reached (restarting, failing over): wait for
                    // it, or for the node that takes its place, up to
                    // `pool.primary_wait_timeout`.
                    waited = true;
                    let Some(next) = self.retry_primary(now).await else {
                        return Ok(false);
                    };
                    (primary, node) = (Some(next), next);
                    continue;
                }
                Err(e) => {
                    if waited {
                        self.ctx
                            .primary_wait_seconds
                            .record(now.elapsed().as_secs_f64());
                    }
                    let err = checkout_error(&e, &pool.manager_node());
                    tracing::warn!(error = %err, "server checkout failed");
                    err.encode(&mut self.outbox);
                    return Ok(false);
                }
            };
            tracing::warn!(node = %self.ctx.pools[node].manager_node(), error = %skipped, "replica cannot serve; skipping it for the cooldown");
            routing.topology.refused(node, now);
            let next = routing.topology.lease(now, self.replica_slot, min_lsn);
            node = match (&next, routing.policy.fallback) {
                (Ok(l), _) => l.node,
                (Err(Unleased::Behind), _) => {
                    reason = router::Reason::AwaitingReplay;
                    match self.primary_or_wait(primary, now, &mut waited).await {
                        Some(node) => node,
                        None => return Ok(false),
                    }
                }
                (Err(Unleased::Unavailable), router::Fallback::Primary) => {
                    reason = router::Reason::NoReplica;
                    match self.primary_or_wait(primary, now, &mut waited).await {
                        Some(node) => node,
                        None => return Ok(false),
                    }
                }
                (Err(Unleased::Unavailable), router::Fallback::Error) => {
                    return Ok(self.refuse_read())
                }
            };
            lease = next.ok();
        }
        if waited {
            self.ctx
                .primary_wait_seconds
                .record(now.elapsed().as_secs_f64());
        }
        routing.stats.record(reason, node);
        self.lease = lease.filter(|l| l.node == node);
        if self.lease.is_some() {
            if let Some(waited) = self.routing.causal.served_by_replica(now) {
                self.ctx.replay_wait.record(waited.as_secs_f64());
            }
        } else if reason.awaits_replay() {
            self.routing.causal.held_back(now);
            routing.positions.await_replay(min_lsn);
        }
        Ok(true)
    }

    /// Waits for a node that takes writes, up to `pool.primary_wait_timeout` from
    /// `since`. Returns it, or `None` once the client was sent why there is none: no node
    /// came forward in time (57P03), or writes are refused (split brain, 57P03 at once).
    /// A wait that gives up is recorded in the primary wait histogram here; one that ends
    /// with a node, by the caller once it has a connection there.
    async fn await_primary(&mut self, since: Instant) -> Option<usize> {
        let node = self.await_writer(since).await;
        if node.is_none() {
            self.ctx
                .primary_wait_seconds
                .record(since.elapsed().as_secs_f64());
        }
        node
    }

    /// See `await_primary`.
    async fn await_writer(&mut self, since: Instant) -> Option<usize> {
        let topology = &self.ctx.routing.topology;
        loop {
            let why = match topology.write_target() {
                WriteTarget::Node(node) => return Some(node),
                WriteTarget::Refused(why) => why,
                WriteTarget::Waiting if since.elapsed() < self.ctx.primary_wait => {
                    tokio::select! {
                        () = tokio::time::sleep(PRIMARY_RETRY) => continue,
                        () = self.ctx.cancel.requested() => {}
                    }
                    self.cancelled_while_waiting();
                    return None;
                }
                WriteTarget::Waiting => format!(
                    "pgsplit: no node takes writes: none is out of recovery on the cluster's highest timeline (waited pool.primary_wait_timeout, {:?})",
                    self.ctx.primary_wait
                ),
            };
            PgError::error(code::CANNOT_CONNECT_NOW, why).encode(&mut self.outbox);
            return None;
        }
    }

    /// After the primary failed a checkout: waits [`PRIMARY_RETRY`], then for the node that
    /// takes writes (see `await_primary`).
    async fn retry_primary(&mut self, since: Instant) -> Option<usize> {
        tokio::time::sleep(PRIMARY_RETRY).await;
        self.await_primary(since).await
    }

    /// `primary`, or the node that takes writes once there is one (see `await_primary`);
    /// sets `waited` when there was none.
    async fn primary_or_wait(
        &mut self,
        primary: Option<usize>,
        since: Instant,
        waited: &mut bool,
    ) -> Option<usize> {
        match primary {
            Some(node) => Some(node),
            None => {
                *waited = true;
                self.await_primary(since).await
            }
        }
    }

    /// A cancel request came for the statement while it waited for a server: it fails
    /// with 57014, as if the server had cancelled it.
    fn cancelled_while_waiting(&mut self) {
        self.ctx.cancel.take_requested();
        tracing::debug!(
            client = self.ctx.cancel.pid,
            "statement cancelled while waiting for a server connection"
        );
        PgError::error(code::QUERY_CANCELED, CANCELLED).encode(&mut self.outbox);
    }

    /// Closes the server connection just checked out, which turned out dead before
    /// anything of the client's was sent to it.
    fn drop_broken_server(&mut self) {
        self.ctx.cancel.set_target(None);
        if let Some(mut server) = self.server.take() {
            server.broken = true;
            drop(Object::take(server));
        }
    }

    /// A read with no replica available and `routing.fallback = "error"`: the client
    /// gets 57P03. Returns false (no server).
    pub(super) fn refuse_read(&mut self) -> bool {
        PgError::error(
            code::CANNOT_CONNECT_NOW,
            "pgsplit: no replica is available for reads (routing.fallback = \"error\")",
        )
        .encode(&mut self.outbox);
        false
    }

    /// Gives the session a server connection. What pgsplit answered itself before comes
    /// first, ahead of the server's replies.
    pub(super) fn attach(&mut self, server: Server) {
        if !self.held.is_empty() {
            let held = self.held.split().freeze();
            self.queue.push_front(Pending::Synthetic(held));
        }
        self.ctx.cancel.set_target(Some(CancelTarget {
            node: server.node.clone(),
            pid: server.backend_pid,
            secret: server.backend_secret.clone(),
        }));
        self.server = Some(server);
    }

    /// Brings the server's session settings to the client's.
    pub(super) async fn sync_settings(&mut self) -> Result<(), BackendError> {
        let Some(server) = self.server.as_mut() else {
            return Ok(());
        };
        apply_settings(server, self.settings.current()).await
    }
}

/// Brings a server connection's session settings to `desired`.
pub async fn apply_settings(
    server: &mut ServerConn,
    desired: &std::collections::BTreeMap<String, String>,
) -> Result<(), BackendError> {
    if let Some(sql) = sync_sql(&server.settings, desired) {
        server.execute(&sql).await?;
        server.settings = desired.clone();
    }
    Ok(())
}

/// PostgreSQL's message for a statement cancelled by a cancel request.
pub(super) const CANCELLED: &str = "canceling statement due to user request";

/// Whether the server ended the connection because it is shutting down or not yet up
/// (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now).
fn shutting_down(e: &BackendError) -> bool {
    matches!(e, BackendError::Server { code: c, .. }
        if matches!(c.as_str(), code::ADMIN_SHUTDOWN | code::CRASH_SHUTDOWN | code::CANNOT_CONNECT_NOW))
}

/// How often a checkout retries a primary that cannot be reached.
const PRIMARY_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Why a statement that needs a real session fails inside a read-only transaction that
/// runs on a replica (see `Session::claim_session`).
const STRANDED: &str = "pgsplit: LISTEN, temporary objects, session advisory locks, SQL PREPARE and cursors WITH HOLD need a session on the primary; they cannot run inside a read-only transaction that runs on a replica (run them outside BEGIN READ ONLY)";

/// The error a client sees when no server connection could be had.
fn checkout_error(e: &PoolError<BackendError>, node: &str) -> PgError {
    match e {
        PoolError::Timeout(_) => PgError::error(
            code::TOO_MANY_CONNECTIONS,
            format!("pgsplit: no server connection to node {node} became free in time (pool exhausted; raise pool.max_size or pool.checkout_timeout)"),
        ),
        PoolError::Backend(b) => PgError::error(code::relayed(b.sqlstate()), b.to_string()),
        other => PgError::error(code::CONNECTION_FAILURE, format!("pgsplit: {other}")),
    }
}

/// The node a pool serves, for error messages.
trait PoolNode {
    fn manager_node(&self) -> String;
}

impl PoolNode for ServerPool {
    fn manager_node(&self) -> String {
        self.manager().node_name().to_string()
    }
}
