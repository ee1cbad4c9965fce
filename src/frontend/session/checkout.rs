//! Getting a server connection for a statement: classify it (an extended-protocol batch
//! as a whole), ask the router, check out from the chosen node's pool (skipping a
//! replica that cannot be reached), bring the connection's settings to the client's, and
//! note what the statement does to the session (a write pins reads, a session-bound
//! feature keeps the connection).

use super::*;
use crate::backend::pool::{get_connection, lost, unavailable};
use crate::classify::ON_LOOP;
use crate::topology::WriteTarget;
use decide::effects::{self, Claim};
use decide::pipeline::{self, AfterSplit, Known, Place};
use decide::release::PrimaryChanged;
use decide::route;

/// What the session can tell about SQL without waiting, for the pipeline rules.
impl Known for Session {
    fn class_of(&self, sql: &[u8]) -> Classification {
        self.classify_now(sql)
    }

    fn prepared(&self, name: &[u8]) -> Option<Classification> {
        self.statements
            .get(name)
            .map(|stmt| self.classify_now(&stmt.query))
    }

    fn unnamed(&self) -> Option<Classification> {
        self.unnamed.as_ref().map(|u| self.classify_now(&u.sql))
    }
}

impl Session {
    /// Whether the next client message must wait until the server has answered what came
    /// before: it starts a statement that may not run on the replica the client is on
    /// (see `decide::pipeline::must_wait`), or it binds or describes the client's unnamed
    /// statement while the Parse of it, sent before a Sync, is unanswered (the server may
    /// have failed or skipped it: PostgreSQL then has no unnamed statement, or the one
    /// from before).
    pub(super) fn must_wait_for_route(&self) -> bool {
        let Some(server) = self.server.as_ref() else {
            return false;
        };
        if matches!(self.split, BatchSplit::Sent { .. }) {
            // The rest of the batch is routed once the replica has answered pgsplit's Sync.
            return true;
        }
        let place = Place {
            on_primary: self.on_primary,
            owes_replies: !self.queue.is_empty(),
            status: server.status,
            in_batch: self.in_batch,
        };
        // (Asked of every client message: the unnamed check looks at the message only
        // while a Parse of the client's unnamed statement is unanswered, which is rare.)
        pipeline::must_wait(place, &self.inbox, self.ctx.max_message_size, self)
            || (self.unnamed_unsure()
                && pipeline::uses_unnamed(&self.inbox, self.ctx.max_message_size))
    }

    /// The batch ended its transaction on the replica the client is on, and the next
    /// client message starts a statement that may not run there (see
    /// `decide::pipeline::must_split`).
    pub(super) fn must_split(&self) -> bool {
        self.server.is_some() && pipeline::must_split(&self.inbox, self.ctx.max_message_size, self)
    }

    /// Splits the batch where the replica's part ends: pgsplit's own Sync goes after what
    /// was sent, and the client's next messages wait until it is answered. Then, unless
    /// an error came first (the rest is skipped, as PostgreSQL skips it), the replica goes
    /// back to its pool and the rest of the batch is routed afresh (`split_ended`).
    pub(super) fn split_batch(&mut self) {
        let BatchSplit::Ended { failed } = self.split else {
            return;
        };
        tracing::debug!(
            client = self.ctx.client.pid,
            "the batch ended its transaction on a replica and goes on with what may not run there: split"
        );
        self.to_server.extend_from_slice(&msg::sync_message());
        self.syncs_sent += 1;
        self.queue.push(Pending::Reply {
            kind: Kind::Sync,
            hide: Hide::Split,
            statement: None,
        });
        self.split = BatchSplit::Sent { failed };
    }

    /// The replica answered pgsplit's Sync in the middle of the batch (see `split_batch`).
    pub(super) fn split_ended(&mut self, status: TxStatus) {
        let failed = matches!(self.split, BatchSplit::Sent { failed: true });
        self.split = BatchSplit::None;
        match pipeline::after_split(failed, status) {
            AfterSplit::Skip => self.skip_to_sync = true,
            AfterSplit::Release => self.release(),
            AfterSplit::Stay => {}
        }
    }

    /// The client's unnamed statement was parsed before a Sync that has been sent since,
    /// and the server has not answered that Parse yet.
    pub(super) fn unnamed_unsure(&self) -> bool {
        let Some(unnamed) = self.unnamed.as_ref() else {
            return false;
        };
        let syncs = self.syncs_sent;
        self.unnamed_before
            .iter()
            .any(|&(id, _, sent_after)| id == unnamed.id && sent_after < syncs)
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
                    (Some(c), true) => {
                        let unnamed = self.unnamed.as_ref().is_some_and(|u| Some(&u.sql) == sql);
                        self.batch_class(c, unnamed)
                    }
                    (Some(c), false) => c,
                    (None, _) => Classification::UNKNOWN,
                };
                self.note_comment_token(sql);
                self.routing.newest_write = self.ctx.routing.positions.newest();
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
    /// told, then goes on outside a transaction (see `decide::release::primary_changed`).
    fn transaction_lost(&mut self) -> Option<(&'static str, String)> {
        if let Some(why) = self.lost_transaction.take() {
            return Some(why);
        }
        let server = self.server.as_mut()?;
        // Only another node taking writes cuts it: while no node is known to (the
        // primary's checks fail, perhaps only because it is slow), the connection is
        // left to fail, or not, on its own.
        let changed = release::primary_changed(
            self.on_primary,
            !self.queue.is_empty(),
            self.ctx.routing.primary(),
            self.primary_node,
            server.status,
            self.bound,
        );
        match changed {
            PrimaryChanged::Keep => return None,
            PrimaryChanged::Replace => {
                server.broken = true;
                self.release();
                return None;
            }
            PrimaryChanged::Cut => server.broken = true,
        }
        let node = server.node.name.clone();
        let bound = std::mem::take(&mut self.bound);
        self.binding = None;
        self.routing.session_bound = false;
        self.release();
        tracing::info!(client = self.ctx.client.pid, %node, "the primary changed: the client's server connection to the former primary is closed");
        Some(release::cut_error(&node, bound))
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
        let effects = effects::effects(&class, self.on_primary);
        if effects.writes {
            self.wrote = true;
            self.writes.sent_one();
            // (A write may call nextval, if only through a column default or a trigger.)
            let client = self.ctx.client.pid;
            if let Some(server) = self.server.as_mut() {
                server.sequences_of = Some(client);
            }
        }
        self.ending |= effects.ends;
        if effects.ends && !self.on_primary && self.in_batch && self.split == BatchSplit::None {
            self.split = BatchSplit::Ended { failed: false };
        }
        self.left_state |= effects.leaves_state;
    }

    /// Before the statement `ensure_server` just classified runs: when it needs a real
    /// session, binds the client to its server connection (kept until the client leaves,
    /// then reset), or returns the error it fails with instead (see
    /// `decide::effects::claim`: 0A000 on a replica, 53300 at the pool's
    /// `pool.max_pinned_per_pool`).
    pub(super) fn claim_session(&mut self) -> Option<(&'static str, String)> {
        let pools = &self.ctx.pools;
        let primary = self.ctx.routing.primary();
        let take_place = || {
            let pool = pools[primary.unwrap_or(0)].manager();
            pool.bind().ok_or_else(|| pool.bound().1)
        };
        let claim = effects::claim(
            self.bound,
            self.statement_class,
            self.on_primary,
            self.ctx.mode,
            take_place,
        );
        match claim {
            Claim::NotNeeded => return None,
            Claim::Refuse(code, message) => return Some((code, message)),
            Claim::Bind(place) => {
                if place.is_some() {
                    self.binding = place;
                }
            }
        }
        tracing::debug!(
            client = self.ctx.client.pid,
            "client bound to its server connection"
        );
        self.bound = true;
        self.routing.session_bound = true;
        None
    }

    /// The class of the extended-protocol batch that starts with `first` (the client's
    /// unnamed statement when `first_unnamed`): the statements the client sent with it,
    /// up to the Sync, run as one implicit transaction on one server. When the Sync has
    /// not arrived yet, what follows is unknown: primary.
    pub(super) fn batch_class(&self, first: Classification, first_unnamed: bool) -> Classification {
        let limit = self.ctx.max_message_size;
        pipeline::batch_class(&self.inbox, first, first_unnamed, limit, self)
    }

    /// A server kept across statements (session pooling, a session-bound client) whose settings
    /// were reset (RESET ALL, DISCARD ALL) gets the client's back before the next
    /// statement, as PostgreSQL restores startup values on RESET.
    pub(super) async fn resync_kept_server(&mut self) -> Result<bool, SessionEnd> {
        let Some(server) = self.server.as_ref() else {
            return Ok(false);
        };
        let resync = release::resync_settings(
            !self.queue.is_empty(),
            server.status,
            server.settings != *self.settings.current(),
        );
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
        let decision = route::route(
            self.ctx.mode,
            &routing.policy,
            &self.routing,
            &class,
            now,
            |lsn| {
                min_lsn = lsn;
                let leased = routing.topology.lease(now, self.replica_slot, lsn);
                let node = leased.as_ref().map(|l| l.node).map_err(|e| *e);
                lease = leased.ok();
                node
            },
        );
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
            // A cancel for the statement ends the wait for a connection (57014), and so
            // does the end of the session (pg_terminate_backend).
            let got = tokio::select! {
                r = get_connection(pool) => Some(r),
                () = self.ctx.client.requested() => None,
                () = self.ctx.client.terminated() => return Err(terminated_by_request()),
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
                        Ok(()) => {
                            self.forget_sequences();
                            break;
                        }
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
            let decision = route::after_refusal(
                &routing.policy,
                next.as_ref().map(|l| l.node).map_err(|e| *e),
                reason,
            );
            reason = decision.reason;
            node = match decision.target {
                Target::Replica(node) => node,
                Target::Primary => match self.primary_or_wait(primary, now, &mut waited).await {
                    Some(node) => node,
                    None => return Ok(false),
                },
                Target::Refuse => return Ok(self.refuse_read()),
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
                        () = self.ctx.client.requested() => {}
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
        self.ctx.client.take_requested();
        tracing::debug!(
            client = self.ctx.client.pid,
            "statement cancelled while waiting for a server connection"
        );
        PgError::error(code::QUERY_CANCELED, CANCELLED).encode(&mut self.outbox);
    }

    /// Closes the server connection just checked out, which turned out dead before
    /// anything of the client's was sent to it.
    fn drop_broken_server(&mut self) {
        self.ctx.client.set_target(None);
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
        self.ctx.client.set_target(Some(CancelTarget {
            node: server.node.clone(),
            pid: server.backend_pid,
            secret: server.backend_secret.clone(),
        }));
        self.server = Some(server);
    }

    /// A connection on which another client's statements may have set sequence values
    /// (`currval`, `lastval`; unset on a fresh connection) forgets them: pgsplit's
    /// `DISCARD SEQUENCES` goes ahead of the client's first message, in the same write,
    /// and its replies are pgsplit's (`Pending::Cleanup`). No round trip of its own.
    fn forget_sequences(&mut self) {
        let client = self.ctx.client.pid;
        let Some(server) = self.server.as_mut() else {
            return;
        };
        if !release::forgets_sequences(server.sequences_of, client) {
            return;
        }
        server.sequences_of = None;
        // A simple Query drops the unnamed statement.
        server.unnamed = None;
        let cleanup = msg::query_message("DISCARD SEQUENCES");
        if self.to_server.is_empty() {
            self.to_server.extend_from_slice(&cleanup);
        } else {
            let queued = self.to_server.split();
            self.to_server.extend_from_slice(&cleanup);
            self.to_server.extend_from_slice(&queued);
        }
        self.queue.push(Pending::Cleanup);
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
