//! One task per client after login: read client messages, check out a server connection
//! when one is needed, forward, relay the replies, and give the connection back to its
//! pool as soon as the client is idle (transaction pooling) or when it leaves (session
//! pooling). Named prepared statements and session settings follow the client from one
//! server connection to the next.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use deadpool::managed::{Object, PoolError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::pending::{Hide, Kind, Pending, PendingQueue, Verdict};
use super::settings::{sync_sql, ClientSettings, ServerSettings};
use crate::backend::connection::SERVER_MESSAGE_LIMIT;
use crate::backend::pool::Manager;
use crate::backend::{BackendError, ServerConn, ServerPool};
use crate::cancel::{CancelKey, CancelTarget};
use crate::classify::{Class, Classification};
use crate::config::PoolMode;
use crate::prepared::{ClientStatements, PreparedStatement};
use crate::router::{self, ClientRouting, RouteMode, Routing, Target};
use crate::topology::Lease;
use crate::wire::error::code;
use crate::wire::frame::peek_frame_len;
use crate::wire::message::{self as msg, read_bind, read_parse, read_query, read_target, TxStatus};
use crate::wire::{split_frame, Frame, FrameError, PgError};

/// How a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionEnd {
    #[error("client closed the connection")]
    ClientGone,
    #[error("client error: {0}")]
    ClientIo(#[from] std::io::Error),
    #[error("{0}")]
    Refused(PgError),
    #[error("server connection lost: {0}")]
    ServerLost(BackendError),
}

/// What a session needs from the proxy around it.
pub struct SessionContext {
    /// One pool per node for this client's database and user, by node index.
    pub pools: Vec<ServerPool>,
    pub routing: Arc<Routing>,
    pub mode: PoolMode,
    pub max_message_size: usize,
    /// Disconnect a client that holds no server and sends nothing for this long.
    pub idle_timeout: Option<std::time::Duration>,
    pub cancel: CancelKey,
}

/// A checked-out server connection.
pub type Server = Object<Manager>;

/// One client's connection state.
pub struct Session {
    client: TcpStream,
    ctx: SessionContext,
    /// Bytes read from the client, not yet handled.
    inbox: BytesMut,
    /// Bytes to write to the client.
    outbox: BytesMut,
    /// Bytes to write to the server.
    to_server: BytesMut,
    server: Option<Server>,
    queue: PendingQueue,
    statements: ClientStatements,
    settings: ClientSettings,
    /// The transaction status the client last saw.
    status: TxStatus,
    /// What the router remembers about this client (pin after write, route mode).
    routing: ClientRouting,
    /// The replica slot held while a replica serves the client.
    lease: Option<Lease>,
    /// Whether the current server is the primary.
    on_primary: bool,
    /// A statement that writes ran on the primary since the client was last idle: its
    /// reads are pinned to the primary once it is idle again.
    wrote: bool,
    /// The client used a feature that needs a real session: it keeps its server
    /// connection until it leaves (which is then reset with DISCARD ALL).
    pinned: bool,
    /// The query of the last unnamed Parse.
    unnamed_sql: Option<Bytes>,
    /// Portals whose statement may change settings, with that statement's SQL.
    portals: Portals,
    /// After a failure to get a server during an extended-protocol batch: drop messages
    /// until Sync, then answer ReadyForQuery (what PostgreSQL does after an error).
    skip_to_sync: bool,
}

impl Session {
    /// A session for a client that has logged in. `server` is the connection used for
    /// login, still checked out (it is kept in session pooling).
    pub fn new(
        client: TcpStream,
        ctx: SessionContext,
        settings: ClientSettings,
        server: Option<Server>,
    ) -> Session {
        let mut session = Session {
            client,
            ctx,
            inbox: BytesMut::with_capacity(16 * 1024),
            outbox: BytesMut::with_capacity(16 * 1024),
            to_server: BytesMut::with_capacity(16 * 1024),
            server: None,
            queue: PendingQueue::default(),
            statements: ClientStatements::default(),
            settings,
            status: TxStatus::Idle,
            skip_to_sync: false,
            routing: ClientRouting::default(),
            lease: None,
            on_primary: true,
            wrote: false,
            pinned: false,
            unnamed_sql: None,
            portals: Portals::default(),
        };
        if let Some(server) = server {
            session.attach(server);
        }
        session
    }

    /// Serves the client until it leaves or the session fails.
    pub async fn run(mut self) -> SessionEnd {
        let end = self.serve().await;
        let notice = match &end {
            SessionEnd::Refused(e) => Some(e.clone()),
            SessionEnd::ServerLost(e) => Some(PgError::fatal(
                code::CONNECTION_FAILURE,
                format!("server connection lost: {e}"),
            )),
            _ => None,
        };
        if let Some(err) = notice {
            let _ = self.client.write_all(&err.to_bytes()).await;
        }
        self.finish();
        end
    }

    async fn serve(&mut self) -> SessionEnd {
        loop {
            if let Err(end) = self.step().await {
                return end;
            }
        }
    }

    /// Waits for bytes from the client or the server, and handles them.
    async fn step(&mut self) -> Result<(), SessionEnd> {
        reserve(&mut self.inbox);
        let from_server = match self.server.as_mut() {
            Some(server) => {
                let server: &mut ServerConn = server;
                reserve(&mut server.read_buf);
                tokio::select! {
                    r = self.client.read_buf(&mut self.inbox) => Err(r),
                    r = server.stream.read_buf(&mut server.read_buf) => Ok(r),
                }
            }
            None => match self.ctx.idle_timeout {
                Some(limit) => {
                    match tokio::time::timeout(limit, self.client.read_buf(&mut self.inbox)).await {
                        Ok(r) => Err(r),
                        Err(_) => {
                            return Err(SessionEnd::Refused(PgError::fatal(
                                code::IDLE_SESSION_TIMEOUT,
                                "terminating connection due to client_idle_timeout",
                            )))
                        }
                    }
                }
                None => Err(self.client.read_buf(&mut self.inbox).await),
            },
        };
        match from_server {
            Err(read) => {
                if read? == 0 {
                    return Err(SessionEnd::ClientGone);
                }
                self.on_client_data().await
            }
            Ok(read) => {
                let n = read.map_err(|e| self.server_lost(e))?;
                if n == 0 {
                    return Err(self.server_lost(std::io::ErrorKind::UnexpectedEof.into()));
                }
                self.on_server_data().await
            }
        }
    }

    fn server_lost(&mut self, e: std::io::Error) -> SessionEnd {
        let node = self
            .server
            .as_ref()
            .map(|s| s.node.name.clone())
            .unwrap_or_default();
        if let Some(server) = self.server.as_mut() {
            server.broken = true;
        }
        SessionEnd::ServerLost(BackendError::Read {
            node,
            source: crate::net::ReadError::Io(e),
        })
    }

    // ----- client to server -----

    async fn on_client_data(&mut self) -> Result<(), SessionEnd> {
        loop {
            let frame = match split_frame(&mut self.inbox, self.ctx.max_message_size) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => return Err(SessionEnd::Refused(frame_error(e))),
            };
            if self.skip_to_sync {
                if frame.tag == b'S' {
                    self.skip_to_sync = false;
                    msg::ready_for_query(self.status, &mut self.outbox);
                }
                continue;
            }
            self.on_client_message(frame).await?;
        }
        self.flush_server().await?;
        if self.server.as_ref().is_some_and(|s| !s.read_buf.is_empty()) {
            // Replies that arrived while writing.
            return self.on_server_data().await;
        }
        self.queue.emit_synthetic(&mut self.outbox);
        self.flush_client().await?;
        self.release_if_idle();
        Ok(())
    }

    async fn on_client_message(&mut self, frame: Frame) -> Result<(), SessionEnd> {
        tracing::trace!(pid = self.ctx.cancel.pid, tag = %(frame.tag as char), queue = self.queue.len(), server = self.server.is_some(), "client message");
        match frame.tag {
            b'X' => Err(SessionEnd::ClientGone),
            b'Q' => self.on_query(frame).await,
            b'P' => self.on_parse(frame).await,
            b'B' => self.on_bind(frame).await,
            b'D' => self.on_describe(frame).await,
            b'C' => self.on_close(frame).await,
            b'E' => {
                let portal = crate::wire::frame::cstr(frame.body()).map(|(p, _)| p);
                if let Some(sql) = portal.and_then(|p| self.portals.get(p)) {
                    self.settings.statement_sent(&sql);
                }
                self.forward(frame, Some(Kind::Execute)).await
            }
            b'S' => self.forward(frame, Some(Kind::Sync)).await,
            b'F' => self.forward(frame, Some(Kind::Query)).await,
            b'H' | b'd' => self.forward(frame, None).await,
            b'c' | b'f' => {
                self.forward(frame, None).await?;
                self.queue.client_copy_end();
                Ok(())
            }
            other => Err(SessionEnd::Refused(PgError::fatal(
                code::PROTOCOL_VIOLATION,
                format!("invalid frontend message type {}", other),
            ))),
        }
    }

    async fn on_query(&mut self, frame: Frame) -> Result<(), SessionEnd> {
        let Some(sql) = read_query(frame.body()) else {
            return Err(malformed("Query"));
        };
        if let Some(answer) = self.deallocate(sql) {
            return self.answer_locally(answer);
        }
        if let Some(command) = router::route_command(sql) {
            return self.on_route_command(command);
        }
        self.settings.statement_sent(sql);
        let route_sql = frame.bytes.slice(5..5 + sql.len());
        if !self.ensure_server(Some(&route_sql), false).await? {
            msg::ready_for_query(self.status, &mut self.outbox);
            return Ok(());
        }
        self.to_server.extend_from_slice(&frame.bytes);
        self.queue.push(Pending::reply(Kind::Query));
        Ok(())
    }

    async fn on_parse(&mut self, frame: Frame) -> Result<(), SessionEnd> {
        let Some(parse) = read_parse(frame.body()) else {
            return Err(malformed("Parse"));
        };
        if parse.name.is_empty() {
            // The query sits after the (empty) name and its terminator.
            let sql = frame.bytes.slice(6..6 + parse.query.len());
            self.unnamed_sql = Some(sql.clone());
            return self.forward_routed(frame, Kind::Parse, &sql).await;
        }
        let stmt = Arc::new(PreparedStatement::from_parse(&parse));
        self.statements.insert(parse.name, stmt.clone());
        if self.server.is_none() {
            // Outside a transaction, preparing needs no server: the statement is
            // prepared on whichever server first executes it. Clients that prepare
            // synchronously (pgbench -M prepared, PQprepare) then never wait for a
            // server while holding none, and errors in the statement surface at its
            // first Bind or Describe.
            msg::parse_complete(&mut self.outbox);
            return Ok(());
        }
        let server = self.server_mut();
        if server.statements.touch(&stmt.server_name) {
            let mut done = BytesMut::new();
            msg::parse_complete(&mut done);
            self.queue.push(Pending::Synthetic(done.freeze()));
        } else {
            self.prepare_on_server(&stmt, Hide::Nothing);
        }
        Ok(())
    }

    async fn on_bind(&mut self, frame: Frame) -> Result<(), SessionEnd> {
        let Some((portal, name, rest)) = read_bind(frame.body()) else {
            return Err(malformed("Bind"));
        };
        let stmt = (!name.is_empty())
            .then(|| self.statements.get(name).cloned())
            .flatten();
        // Remember what the portal will run, for settings it may change.
        let sql = match &stmt {
            Some(stmt) => Some(&stmt.query),
            None if name.is_empty() => self.unnamed_sql.as_ref(),
            None => None,
        };
        let sql = sql.filter(|sql| self.settings.wants(sql)).cloned();
        self.portals.bind(portal, sql);
        let Some(stmt) = stmt else {
            return self.forward(frame, Some(Kind::Bind)).await;
        };
        if !self.ensure_server(Some(&stmt.query), true).await? {
            self.skip_to_sync = true;
            return Ok(());
        }
        self.ensure_prepared(&stmt);
        let bind = msg::bind_message(portal, stmt.server_name.as_bytes(), rest);
        self.to_server.extend_from_slice(&bind);
        self.queue.push(Pending::reply(Kind::Bind));
        Ok(())
    }

    async fn on_describe(&mut self, frame: Frame) -> Result<(), SessionEnd> {
        let Some((kind, name)) = read_target(frame.body()) else {
            return Err(malformed("Describe"));
        };
        let named = kind == b'S' && !name.is_empty();
        let Some(stmt) = named.then(|| self.statements.get(name).cloned()).flatten() else {
            return self.forward(frame, Some(Kind::Describe)).await;
        };
        if !self.ensure_server(Some(&stmt.query), true).await? {
            self.skip_to_sync = true;
            return Ok(());
        }
        self.ensure_prepared(&stmt);
        let describe = msg::target_message(b'D', b'S', stmt.server_name.as_bytes());
        self.to_server.extend_from_slice(&describe);
        self.queue.push(Pending::reply(Kind::Describe));
        Ok(())
    }

    async fn on_close(&mut self, frame: Frame) -> Result<(), SessionEnd> {
        let Some((kind, name)) = read_target(frame.body()) else {
            return Err(malformed("Close"));
        };
        if kind == b'S' && !name.is_empty() {
            // The server-side statement stays cached for other clients; the client's
            // name is gone, as PostgreSQL would have it.
            self.statements.remove(name);
            let mut done = BytesMut::new();
            msg::close_complete(&mut done);
            if self.server.is_some() {
                self.queue.push(Pending::Synthetic(done.freeze()));
            } else {
                self.outbox.extend_from_slice(&done);
            }
            return Ok(());
        }
        self.forward(frame, Some(Kind::Close)).await
    }

    /// Forwards a message as it came, checking out a server first if needed.
    async fn forward(&mut self, frame: Frame, kind: Option<Kind>) -> Result<(), SessionEnd> {
        if self.server.is_none() && matches!(frame.tag, b'S' | b'H') {
            // Nothing is outstanding: a Sync only asks for ReadyForQuery.
            if frame.tag == b'S' {
                msg::ready_for_query(self.status, &mut self.outbox);
            }
            return Ok(());
        }
        if !self.ensure_server(None, true).await? {
            if frame.tag == b'F' {
                msg::ready_for_query(self.status, &mut self.outbox);
            } else {
                self.skip_to_sync = true;
            }
            return Ok(());
        }
        self.to_server.extend_from_slice(&frame.bytes);
        match kind {
            Some(Kind::Sync) => self.queue.push_sync(),
            Some(kind) => self.queue.push(Pending::reply(kind)),
            None => {}
        }
        Ok(())
    }

    /// Forwards a message that carries SQL the router can look at.
    async fn forward_routed(
        &mut self,
        frame: Frame,
        kind: Kind,
        sql: &Bytes,
    ) -> Result<(), SessionEnd> {
        if !self.ensure_server(Some(sql), true).await? {
            self.skip_to_sync = true;
            return Ok(());
        }
        self.to_server.extend_from_slice(&frame.bytes);
        self.queue.push(Pending::reply(kind));
        Ok(())
    }

    /// Queues a Parse for `stmt` on the current server unless it has it already; the
    /// client does not see the reply.
    fn ensure_prepared(&mut self, stmt: &Arc<PreparedStatement>) {
        if !self.server_mut().statements.touch(&stmt.server_name) {
            self.prepare_on_server(stmt, Hide::Completion);
        }
    }

    /// Sends the Parse for `stmt`, closing the least recently used statement first when
    /// the server's cache is full.
    fn prepare_on_server(&mut self, stmt: &Arc<PreparedStatement>, hide: Hide) {
        let evicted = self
            .server_mut()
            .statements
            .insert(stmt.server_name.clone());
        if let Some(old) = evicted {
            let close = msg::target_message(b'C', b'S', old.as_bytes());
            self.to_server.extend_from_slice(&close);
            self.queue.push(Pending::Reply {
                kind: Kind::Close,
                hide: Hide::Completion,
                statement: None,
            });
        }
        self.to_server.extend_from_slice(&stmt.parse);
        self.queue.push(Pending::Reply {
            kind: Kind::Parse,
            hide,
            statement: Some(stmt.server_name.clone()),
        });
    }

    /// `DEALLOCATE name` / `DEALLOCATE ALL` for protocol-level statements is answered
    /// by pgsplit: the statements live in its own table.
    fn deallocate(&mut self, sql: &[u8]) -> Option<&'static str> {
        let first = sql.iter().find(|b| !b.is_ascii_whitespace())?;
        if !first.eq_ignore_ascii_case(&b'd') {
            return None;
        }
        let text = std::str::from_utf8(sql).ok()?;
        let words: Vec<&str> = text
            .trim()
            .trim_end_matches(';')
            .split_whitespace()
            .collect();
        let first = words.first()?;
        if !first.eq_ignore_ascii_case("deallocate") {
            return None;
        }
        let name = match words.as_slice() {
            [_, p, name] if p.eq_ignore_ascii_case("prepare") => *name,
            [_, name] => *name,
            _ => return None,
        };
        if name.eq_ignore_ascii_case("all") {
            self.statements.clear();
            return Some("DEALLOCATE ALL");
        }
        let name = name.trim_matches('"');
        self.statements
            .remove(name.as_bytes())
            .map(|_| "DEALLOCATE")
    }

    /// Answers a command without a server: CommandComplete and ReadyForQuery, in order
    /// with whatever the server still owes.
    fn answer_locally(&mut self, tag: &str) -> Result<(), SessionEnd> {
        let mut answer = BytesMut::new();
        msg::command_complete(tag, &mut answer);
        self.reply_locally(answer)
    }

    /// Sends a reply pgsplit makes itself, followed by ReadyForQuery, in order with
    /// whatever the server still owes.
    fn reply_locally(&mut self, mut answer: BytesMut) -> Result<(), SessionEnd> {
        msg::ready_for_query(self.status, &mut answer);
        if self.server.is_some() && !self.queue.is_empty() {
            self.queue.push(Pending::Synthetic(answer.freeze()));
        } else {
            self.outbox.extend_from_slice(&answer);
        }
        Ok(())
    }

    /// `SET / RESET / SHOW pgsplit.route`, answered by pgsplit.
    fn on_route_command(&mut self, command: router::RouteCommand) -> Result<(), SessionEnd> {
        let mut answer = BytesMut::new();
        match command {
            router::RouteCommand::Set(mode) => {
                self.routing.mode = mode;
                msg::command_complete("SET", &mut answer);
            }
            router::RouteCommand::Show => {
                let value = match self.routing.mode {
                    RouteMode::Auto => "auto",
                    RouteMode::Primary => "primary",
                };
                msg::single_value("pgsplit.route", value, &mut answer);
                msg::command_complete("SHOW", &mut answer);
            }
            router::RouteCommand::Invalid(value) => PgError::error(
                code::INVALID_PARAMETER_VALUE,
                format!("invalid value for parameter \"pgsplit.route\": \"{value}\" (use 'auto' or 'primary')"),
            )
            .encode(&mut answer),
        }
        self.reply_locally(answer)
    }

    /// Makes sure a server connection is checked out for a statement with `sql` (none for
    /// messages that carry no SQL), routing it when one must be chosen. `extended` says
    /// the statement is part of an extended-protocol batch, which is routed as a whole.
    /// Returns false when no server could be had: the client has been sent the error and
    /// the message is dropped.
    async fn ensure_server(
        &mut self,
        sql: Option<&Bytes>,
        extended: bool,
    ) -> Result<bool, SessionEnd> {
        let class = sql.map(|sql| self.ctx.routing.classifier.classify(sql));
        let attached = match self.server.is_some() {
            true => self.resync_kept_server().await?,
            false => {
                let batch = match (class, extended) {
                    (Some(c), true) => self.batch_class(c),
                    (Some(c), false) => c,
                    (None, _) => Classification {
                        class: Class::Write,
                        hint_primary: false,
                    },
                };
                self.check_out(batch).await?
            }
        };
        if attached {
            self.note_statement(class, sql);
        }
        Ok(attached)
    }

    /// Keeps track of what a statement does to the session: a write pins later reads to
    /// the primary; a session-bound feature keeps the server connection.
    fn note_statement(&mut self, class: Option<Classification>, sql: Option<&Bytes>) {
        let Some(class) = class else {
            return;
        };
        if self.on_primary && router::writes(&class.class) {
            self.wrote = true;
        }
        // set_config() is a write function to the classifier: only writes need the look.
        let session_bound = match class.class {
            Class::SessionBound => true,
            Class::Write => sql.is_some_and(|s| needs_session(s)),
            _ => false,
        };
        if session_bound && !self.pinned {
            tracing::debug!(
                client = self.ctx.cancel.pid,
                "client pinned to its server connection"
            );
            self.pinned = true;
            self.routing.session_bound = true;
        }
    }

    /// The class of the extended-protocol batch that starts with `first`: the statements
    /// the client sent with it, up to the Sync, run as one implicit transaction on one
    /// server. When the Sync has not arrived yet, what follows is unknown: primary.
    fn batch_class(&self, first: Classification) -> Classification {
        let classifier = &self.ctx.routing.classifier;
        let mut class = first;
        let mut rest = &self.inbox[..];
        loop {
            let Ok(Some(total)) = peek_frame_len(rest, self.ctx.max_message_size) else {
                return router::merge(
                    class,
                    Classification {
                        class: Class::Write,
                        hint_primary: false,
                    },
                );
            };
            if rest.len() < total {
                return router::merge(
                    class,
                    Classification {
                        class: Class::Write,
                        hint_primary: false,
                    },
                );
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
                class = router::merge(class, classifier.classify(sql));
            }
            rest = &rest[total..];
        }
    }

    /// A server kept across statements (session pooling, a pinned client) whose settings
    /// were reset (RESET ALL, DISCARD ALL) gets the client's back before the next
    /// statement, as PostgreSQL restores startup values on RESET.
    async fn resync_kept_server(&mut self) -> Result<bool, SessionEnd> {
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
    /// chosen node. A replica that cannot be reached is skipped for a cooldown and the
    /// next choice is tried.
    async fn check_out(&mut self, class: Classification) -> Result<bool, SessionEnd> {
        let routing = self.ctx.routing.clone();
        let now = Instant::now();
        let mut lease = None;
        let decision = if self.ctx.mode == PoolMode::Session {
            router::Decision {
                target: Target::Primary,
                reason: router::Reason::Disabled,
            }
        } else {
            router::decide(&routing.policy, &self.routing, &class, now, || {
                lease = routing.topology.lease(now);
                lease.as_ref().map(|l| l.node)
            })
        };
        let mut reason = decision.reason;
        let target = decision.target;
        let mut node = match target {
            Target::Primary => routing.primary,
            Target::Replica(node) => node,
            Target::Refuse => return Ok(self.refuse_read()),
        };
        let server = loop {
            let pool = &self.ctx.pools[node];
            match pool.get().await {
                Ok(server) => break server,
                Err(e) if node != routing.primary && unreachable(&e) => {
                    tracing::warn!(node = %pool.manager_node(), error = %e, "replica unreachable; skipping it for the cooldown");
                    routing.topology.refused(node, now);
                    lease = routing.topology.lease(now);
                    node = match (&lease, routing.policy.fallback) {
                        (Some(l), _) => l.node,
                        (None, router::Fallback::Primary) => {
                            reason = router::Reason::NoReplica;
                            routing.primary
                        }
                        (None, router::Fallback::Error) => return Ok(self.refuse_read()),
                    };
                }
                Err(e) => {
                    let err = checkout_error(&e, &pool.manager_node());
                    tracing::warn!(error = %err, "server checkout failed");
                    err.encode(&mut self.outbox);
                    return Ok(false);
                }
            }
        };
        routing.stats.record(reason, node);
        self.on_primary = node == routing.primary;
        self.lease = lease.filter(|l| l.node == node);
        self.attach(server);
        if let Err(e) = self.sync_settings().await {
            let err = PgError::error(
                static_code(e.sqlstate()),
                format!("could not apply session settings on the server: {e}"),
            );
            err.encode(&mut self.outbox);
            if let Some(server) = self.server.as_mut() {
                server.broken = !matches!(e, BackendError::Server { .. });
            }
            self.release();
            return Ok(false);
        }
        Ok(true)
    }

    /// A read with no replica available and `routing.fallback = "error"`: the client
    /// gets 57P03. Returns false (no server).
    fn refuse_read(&mut self) -> bool {
        PgError::error(
            code::CANNOT_CONNECT_NOW,
            "pgsplit: no replica is available for reads (routing.fallback = \"error\")",
        )
        .encode(&mut self.outbox);
        false
    }

    /// Gives the session a server connection.
    fn attach(&mut self, server: Server) {
        self.ctx.cancel.set_target(Some(CancelTarget {
            node: server.node.clone(),
            pid: server.backend_pid,
            secret: server.backend_secret.clone(),
        }));
        self.server = Some(server);
    }

    /// Brings the server's session settings to the client's.
    async fn sync_settings(&mut self) -> Result<(), BackendError> {
        let Some(server) = self.server.as_mut() else {
            return Ok(());
        };
        apply_settings(server, self.settings.current()).await
    }

    /// Writes what is queued for the server. While the write is blocked, replies are
    /// read into the server's buffer (up to a bound), so a client that pipelines a lot
    /// cannot deadlock with a server that is blocked sending results.
    async fn flush_server(&mut self) -> Result<(), SessionEnd> {
        let Some(server) = self.server.as_mut() else {
            self.to_server.clear();
            return Ok(());
        };
        let server: &mut ServerConn = server;
        let mut written = 0;
        let mut failure = None;
        let (mut reader, mut writer) = server.stream.split();
        while written < self.to_server.len() {
            reserve(&mut server.read_buf);
            let room = server.read_buf.len() < READ_AHEAD_LIMIT;
            tokio::select! {
                biased;
                w = writer.write(&self.to_server[written..]) => match w {
                    Ok(0) => failure = Some(std::io::ErrorKind::WriteZero.into()),
                    Ok(n) => written += n,
                    Err(e) => failure = Some(e),
                },
                r = reader.read_buf(&mut server.read_buf), if room => match r {
                    Ok(0) => failure = Some(std::io::ErrorKind::UnexpectedEof.into()),
                    Ok(_) => {}
                    Err(e) => failure = Some(e),
                },
            }
            if failure.is_some() {
                break;
            }
        }
        self.to_server.clear();
        match failure {
            Some(e) => Err(self.server_lost(e)),
            None => Ok(()),
        }
    }

    async fn flush_client(&mut self) -> Result<(), SessionEnd> {
        if !self.outbox.is_empty() {
            self.client.write_all(&self.outbox).await?;
            self.outbox.clear();
        }
        Ok(())
    }

    // ----- server to client -----

    /// Handles the whole messages in the server's buffer: relays them to the client (or
    /// drops the replies meant for pgsplit), inserts pgsplit's own answers in order,
    /// tracks transaction status, and releases the server when the client is idle.
    async fn on_server_data(&mut self) -> Result<(), SessionEnd> {
        let Some(server) = self.server.as_mut() else {
            return Ok(());
        };
        self.queue.emit_synthetic(&mut self.outbox);
        // Walk the buffer in place; only what is consumed is cut off at the end.
        let mut buf = std::mem::take(&mut server.read_buf);
        let mut pos = 0;
        let mut bad_frame = None;
        loop {
            let total = match peek_frame_len(&buf[pos..], SERVER_MESSAGE_LIMIT) {
                Ok(Some(total)) if buf.len() - pos >= total => total,
                Ok(_) => break,
                Err(e) => {
                    bad_frame = Some(e);
                    break;
                }
            };
            let message = &buf[pos..pos + total];
            pos += total;
            let (tag, body) = (message[0], &message[5..]);
            let verdict = self.queue.on_server_message(tag);
            match tag {
                b'Z' => {
                    let status = msg::read_ready(body).unwrap_or(TxStatus::Idle);
                    server.status = status;
                    if status == TxStatus::Idle && std::mem::take(&mut self.wrote) {
                        self.routing.wrote(&self.ctx.routing.policy, Instant::now());
                    }
                    match self.settings.ready(self.status, status) {
                        ServerSettings::Unchanged => {}
                        ServerSettings::Client(current) => server.settings = current,
                        ServerSettings::Defaults => server.settings.clear(),
                    }
                    self.status = status;
                }
                b'S' => server.note_parameter(message),
                b'E' => self.settings.statement_failed(),
                b'C' => {
                    let tag = msg::read_command_tag(body);
                    if tag == b"DISCARD ALL" || tag == b"DEALLOCATE ALL" {
                        server.statements.clear();
                    }
                }
                _ => {}
            }
            if verdict == Verdict::Forward {
                self.outbox.extend_from_slice(message);
            }
            self.queue.emit_synthetic(&mut self.outbox);
        }
        buf.advance(pos);
        server.read_buf = buf;
        if let Some(e) = bad_frame {
            server.broken = true;
            return Err(SessionEnd::ServerLost(BackendError::Read {
                node: server.node.name.clone(),
                source: e.into(),
            }));
        }
        for name in self.queue.take_failed_statements() {
            server.statements.remove(&name);
        }
        self.flush_client().await?;
        self.release_if_idle();
        Ok(())
    }

    /// In transaction pooling, returns the server connection once the client is idle and
    /// nothing is outstanding.
    fn release_if_idle(&mut self) {
        if self.ctx.mode != PoolMode::Transaction || self.pinned {
            return;
        }
        let idle = match self.server.as_ref() {
            Some(server) => {
                server.status == TxStatus::Idle
                    && self.queue.is_empty()
                    && server.read_buf.is_empty()
            }
            None => false,
        };
        if idle {
            self.release();
        }
    }

    fn release(&mut self) {
        self.ctx.cancel.set_target(None);
        self.lease = None;
        if let Some(server) = self.server.take() {
            if server.broken {
                drop(Object::take(server));
            }
        }
        self.queue.clear();
    }

    /// The client left: a clean connection goes back to the pool (reset first if it may
    /// carry session state), anything else is closed so the server rolls back.
    fn finish(&mut self) {
        self.ctx.cancel.set_target(None);
        self.lease = None;
        let Some(mut server) = self.server.take() else {
            return;
        };
        let clean = !server.broken
            && server.status == TxStatus::Idle
            && self.queue.is_empty()
            && server.read_buf.is_empty();
        if clean {
            if self.ctx.mode == PoolMode::Session || self.pinned {
                server.needs_discard = true;
            }
            drop(server);
        } else {
            tracing::debug!(node = %server.node.name, "closing a server connection left mid-transaction");
            if !self.queue.is_empty() {
                // A query may still be running; PostgreSQL would only notice the closed
                // socket when it next writes, so cancel it.
                let target = CancelTarget {
                    node: server.node.clone(),
                    pid: server.backend_pid,
                    secret: server.backend_secret.clone(),
                };
                tokio::spawn(async move {
                    if let Err(e) = crate::cancel::send_cancel(&target).await {
                        tracing::debug!(error = %e, "could not cancel an abandoned query");
                    }
                });
            }
            drop(Object::take(server));
        }
    }

    fn server_mut(&mut self) -> &mut ServerConn {
        self.server
            .as_mut()
            .expect("a server is checked out when statements are forwarded")
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

/// The portals whose statements may change session settings (most have none), so the
/// change is recorded when the portal is executed, not when it is prepared.
#[derive(Debug, Default)]
struct Portals {
    unnamed: Option<Bytes>,
    named: std::collections::HashMap<Vec<u8>, Bytes>,
}

impl Portals {
    fn bind(&mut self, portal: &[u8], sql: Option<Bytes>) {
        match (portal.is_empty(), sql) {
            (true, sql) => self.unnamed = sql,
            (false, Some(sql)) => {
                self.named.insert(portal.to_vec(), sql);
            }
            (false, None) => {
                if !self.named.is_empty() {
                    self.named.remove(portal);
                }
            }
        }
    }

    fn get(&self, portal: &[u8]) -> Option<Bytes> {
        if portal.is_empty() {
            self.unnamed.clone()
        } else {
            self.named.get(portal).cloned()
        }
    }
}

/// Whether a checkout failed because the node could not be reached (as opposed to a
/// pool that stayed exhausted or a server that refused the login).
fn unreachable(e: &PoolError<BackendError>) -> bool {
    matches!(
        e,
        PoolError::Backend(BackendError::Connect { .. } | BackendError::ConnectTimeout { .. })
            | PoolError::Timeout(deadpool::managed::TimeoutType::Create)
    )
}

/// Whether a statement uses session state pgsplit cannot carry from one server
/// connection to the next: `set_config(...)` (a session-level setting by function).
fn needs_session(sql: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"set_config";
    sql.windows(NEEDLE.len())
        .any(|w| w.eq_ignore_ascii_case(NEEDLE))
}

/// How much of a server's replies pgsplit reads ahead while it is still writing to it.
const READ_AHEAD_LIMIT: usize = 64 * 1024 * 1024;

/// Keeps room to read into.
fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
}

fn malformed(what: &str) -> SessionEnd {
    SessionEnd::Refused(PgError::fatal(
        code::PROTOCOL_VIOLATION,
        format!("invalid {what} message"),
    ))
}

fn frame_error(e: FrameError) -> PgError {
    match e {
        FrameError::TooLarge { .. } => PgError::fatal(code::PROGRAM_LIMIT, e.to_string()),
        FrameError::BadLength(_) => PgError::fatal(code::PROTOCOL_VIOLATION, e.to_string()),
    }
}

/// The SQLSTATE to show for a server-side failure pgsplit reports in its own error:
/// the codes a client can act on are kept, anything else becomes a connection failure.
fn static_code(code: &str) -> &'static str {
    match code {
        "08001" => code::CANNOT_CONNECT,
        "3D000" => code::UNKNOWN_DATABASE,
        "28P01" => code::INVALID_PASSWORD,
        "53300" => code::TOO_MANY_CONNECTIONS,
        "22023" => "22023",
        "42704" => "42704",
        _ => code::CONNECTION_FAILURE,
    }
}

/// The error a client sees when no server connection could be had.
fn checkout_error(e: &PoolError<BackendError>, node: &str) -> PgError {
    match e {
        PoolError::Timeout(_) => PgError::error(
            code::TOO_MANY_CONNECTIONS,
            format!("pgsplit: no server connection to node {node} became free in time (pool exhausted; raise pool.max_size or pool.checkout_timeout)"),
        ),
        PoolError::Backend(b) => PgError::error(static_code(b.sqlstate()), b.to_string()),
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
