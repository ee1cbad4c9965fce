//! One task per client after login: read client messages, check out a server connection
//! when one is needed, forward, relay the replies, and give the connection back to its
//! pool as soon as the client is idle (transaction pooling) or when it leaves (session
//! pooling). Named prepared statements and session settings follow the client from one
//! server connection to the next.

mod causal;
mod checkout;
mod decide;
mod flush;
mod portals;
mod relay;
mod signals;
mod statements;

pub use checkout::apply_settings;

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use deadpool::managed::{Object, PoolError};
use tokio::io::AsyncReadExt;

use decide::pipeline::BatchSplit;
use decide::release::{self, GiveBack, Held};
use decide::waits::{self, StallWatch, STALL_CHECK};
use flush::{reserve, shrink, BUFFER_SIZE, SHRINK_ABOVE, STREAM_FROM};
use portals::{Portals, Unnamed};

use super::pending::{Hide, Kind, Parsed, Pending, PendingQueue, Verdict};
use super::retry::{ReadRetry, Step};
use super::settings::{sync_sql, ClientSettings, ServerSettings};
use super::stream::ClientStream;
use crate::backend::connection::SERVER_MESSAGE_LIMIT;
use crate::backend::pool::{Binding, Manager};
use crate::backend::{BackendError, ServerConn, ServerPool};
use crate::classify::Classification;
use crate::clients::{CancelTarget, CausalPosition, Client};
use crate::config::PoolMode;
use crate::prepared::{ClientStatements, PreparedStatement};
use crate::router::{self, ClientRouting, Routing, Target};
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
    /// Disconnect a client idle inside a transaction block for this long.
    pub idle_transaction_timeout: Option<std::time::Duration>,
    /// How long a statement waits for a primary that cannot be reached.
    pub primary_wait: std::time::Duration,
    /// The client in the registry: its cancel key and state, its line in `SHOW CLIENTS`.
    pub client: Client,
    /// Where each checkout's wait goes (a Prometheus histogram).
    pub checkout_wait: metrics::Histogram,
    /// Where the time a client's reads were held on the primary, waiting for a replica
    /// to replay its position, goes (a Prometheus histogram).
    pub replay_wait: metrics::Histogram,
    /// Where the time a statement waited for a node that takes writes goes (a Prometheus
    /// histogram).
    pub primary_wait_seconds: metrics::Histogram,
    /// The position named by the causal token the client presented at startup (0: none).
    pub causal_token: u64,
}

/// A checked-out server connection.
pub type Server = Object<Manager>;

/// One client's connection state.
pub struct Session {
    client: ClientStream,
    ctx: SessionContext,
    /// Bytes read from the client, not yet handled.
    inbox: BytesMut,
    /// Bytes to write to the client.
    outbox: BytesMut,
    /// Bytes to write to the server.
    to_server: BytesMut,
    /// Answers pgsplit gave itself, with no server attached, to extended-protocol messages
    /// (ParseComplete, CloseComplete, an error): sent at the client's next Flush or Sync,
    /// as PostgreSQL sends its replies, or ahead of the replies of a server attached first.
    held: BytesMut,
    /// The client data being handled asks for replies now (a Flush, Sync, Query or
    /// FunctionCall): pgsplit's own answers at the head of the queue go out with it.
    /// Without one, they wait as PostgreSQL's replies do.
    flush_asked: bool,
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
    /// The client's place among the replicas: its reads go to the same one while that
    /// one is available and no busier than the others (see `topology`).
    replica_slot: u64,
    /// Whether the current server is the primary.
    on_primary: bool,
    /// The node that was the primary when the current server was checked out there: once
    /// another node takes writes, a transaction still on it is cut (see `checkout`).
    primary_node: Option<usize>,
    /// The server connection of the client's open transaction was lost while the client
    /// owed nothing: its next statement gets this error (08006), and the session goes on.
    lost_transaction: Option<(&'static str, String)>,
    /// The error a server sent, unasked, before closing the connection (its reason: an
    /// idle-in-transaction timeout, a termination): told to the client whose transaction
    /// it ends.
    farewell: Option<(&'static str, String)>,
    /// A statement that writes ran on the primary since the client was last idle: once it
    /// is idle again, its reads must see the write (`ClientRouting::wrote`).
    wrote: bool,
    /// Client messages wait in the inbox until the current replica has answered: they
    /// start a statement that must run elsewhere.
    held_for_route: bool,
    /// An extended-protocol batch is open (messages sent since the last Sync).
    in_batch: bool,
    /// Whether the batch ended its transaction on a replica and is split there (see
    /// `split_batch`).
    split: BatchSplit,
    /// The client used a feature that needs a real session: it keeps its server
    /// connection until it leaves (which is then reset with DISCARD ALL).
    bound: bool,
    /// The pool place a session-bound client holds (transaction pooling only).
    binding: Option<Binding>,
    /// The causal position its `SHOW CLIENTS` line shows.
    shown_causal: CausalPosition,
    /// Something that ran on the current server connection may have left session state
    /// pgsplit does not track (see `Classification::leaves_state`): the connection is reset
    /// with DISCARD ALL before the pool hands it to anyone, this client included.
    left_state: bool,
    /// The class `ensure_server` found for the statement it was given.
    statement_class: Option<Classification>,
    /// The client's unnamed statement (its last unnamed Parse, until a simple Query or a
    /// Close destroys it), prepared again on whichever server connection binds it.
    unnamed: Option<Unnamed>,
    /// For each unnamed Parse of the client's still unanswered: its id, the client's
    /// unnamed statement before it (which the client keeps if the server skips the
    /// Parse), and the number of Syncs sent before it (see `syncs_sent`).
    unnamed_before: Vec<(u64, Option<Unnamed>, u64)>,
    /// Syncs sent to servers so far: a Parse answered after a later Sync was sent may
    /// have failed or been skipped without pgsplit knowing yet.
    syncs_sent: u64,
    /// Portals whose statement may change settings, with that statement's SQL.
    portals: Portals,
    /// The portal bound to a `pg_cancel_backend` / `pg_terminate_backend` call pgsplit
    /// answered (see `signals`), until the client's next Sync.
    local_portal: Option<signals::LocalPortal>,
    /// The client's named statements that are such calls (most clients have none).
    signal_statements: std::collections::HashMap<Vec<u8>, decide::signal::SignalCall>,
    /// An autocommit read on a replica whose reply is watched for a refusal (25006), to
    /// run it again on the primary.
    retry: Option<ReadRetry>,
    /// Its writes and the position queries that cover them (read-your-writes by LSN;
    /// see `crate::causal`).
    writes: decide::position::Writes,
    /// The statement or batch being sent ends a transaction (COMMIT, ROLLBACK, ...).
    ending: bool,
    /// Output to the client waits for the answer of a position query sent on its own;
    /// the causal token goes in at this offset of the outbox, ahead of the ReadyForQuery
    /// after the write.
    hold_from: Option<usize>,
    /// What the position query answered.
    position: Option<u64>,
    /// Bytes of a large server message still to relay as they arrive (see `relay`).
    streaming: usize,
    /// When to look next whether the node the client waits for is still answering.
    stall_check: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// Reads from server connections so far, and what the last stall check saw (see
    /// `StallWatch`).
    server_reads: u64,
    stall_seen: StallWatch,
    /// After a failure to get a server during an extended-protocol batch: drop messages
    /// until Sync, then answer ReadyForQuery (what PostgreSQL does after an error).
    skip_to_sync: bool,
}

impl Session {
    /// A session for a client that has logged in. `server` is the connection used for
    /// login, still checked out (it is kept in session pooling).
    pub fn new(
        client: ClientStream,
        ctx: SessionContext,
        settings: ClientSettings,
        server: Option<Server>,
    ) -> Session {
        let replica_slot = ctx.routing.topology.new_client_slot();
        let mut session = Session {
            client,
            ctx,
            inbox: BytesMut::with_capacity(16 * 1024),
            outbox: BytesMut::with_capacity(16 * 1024),
            to_server: BytesMut::with_capacity(16 * 1024),
            held: BytesMut::new(),
            flush_asked: false,
            server: None,
            queue: PendingQueue::default(),
            statements: ClientStatements::default(),
            settings,
            status: TxStatus::Idle,
            skip_to_sync: false,
            routing: ClientRouting::default(),
            lease: None,
            replica_slot,
            on_primary: true,
            primary_node: None,
            lost_transaction: None,
            farewell: None,
            wrote: false,
            held_for_route: false,
            in_batch: false,
            split: BatchSplit::None,
            bound: false,
            binding: None,
            shown_causal: CausalPosition::None,
            left_state: false,
            statement_class: None,
            unnamed: None,
            unnamed_before: Vec::new(),
            syncs_sent: 0,
            portals: Portals::default(),
            local_portal: None,
            signal_statements: Default::default(),
            retry: None,
            writes: decide::position::Writes::default(),
            ending: false,
            hold_from: None,
            position: None,
            streaming: 0,
            stall_check: Box::pin(tokio::time::sleep(STALL_CHECK)),
            server_reads: 0,
            stall_seen: StallWatch::new(Instant::now()),
        };
        session.routing.causal.presented(session.ctx.causal_token);
        session.primary_node = session.ctx.routing.primary();
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
            let _ = self.client.send(&err.to_bytes()).await;
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
        // Messages held until the replica answered what came before: handled once they
        // need not wait any more (the replica is done and released, or the transaction it
        // began is open there, where they then run).
        if self.held_for_route && !self.must_wait_for_route() {
            self.held_for_route = false;
            return self.on_client_data().await;
        }
        reserve(&mut self.inbox);
        let woke = match self.server.as_mut() {
            Some(server) => {
                let server: &mut ServerConn = server;
                let owes = !self.queue.is_empty();
                let limit = waits::idle_transaction_limit(
                    server.status,
                    owes,
                    self.ctx.idle_transaction_timeout,
                );
                reserve(&mut server.read_buf);
                // A node that owes a reply is watched: once the monitor finds it down (it
                // stopped answering its checks) and nothing came from it for STALL_GRACE,
                // the wait ends.
                let replica = self.lease.as_ref().map(|l| l.node);
                let watch = waits::watched(replica.is_some(), self.on_primary, owes);
                let topology = &self.ctx.routing.topology;
                let reads = self.server_reads;
                let seen = &mut self.stall_seen;
                let stall = &mut self.stall_check;
                let terminated = self.ctx.client.terminated();
                let read = async {
                    tokio::pin!(terminated);
                    loop {
                        // In this order: what the server sent is read before the stall
                        // check can end the wait (a task polled late, on a busy thread,
                        // may find both ready), and before more from the client.
                        tokio::select! {
                            biased;
                            r = server.stream.read_buf(&mut server.read_buf) => return Ok(Woke::Server(r)),
                            r = self.client.read_buf(&mut self.inbox) => return Ok(Woke::Client(r)),
                            () = &mut terminated => return Err(terminated_by_request()),
                            () = stall.as_mut(), if watch => {
                                let down = match replica {
                                    Some(node) => topology.is_down(node),
                                    None => topology.primary_down(),
                                };
                                if seen.gave_up(down, reads, Instant::now()) {
                                    return Ok(Woke::Server(Err(std::io::Error::new(
                                        std::io::ErrorKind::TimedOut,
                                        "the node stopped answering (pgsplit's checks of it fail)",
                                    ))));
                                }
                                let next = tokio::time::Instant::now() + STALL_CHECK;
                                stall.as_mut().reset(next);
                            }
                        }
                    }
                };
                match limit {
                    None => read.await?,
                    Some(limit) => match tokio::time::timeout(limit, read).await {
                        Ok(r) => r?,
                        // The server connection is mid-transaction: `finish` closes it,
                        // so the server rolls back.
                        Err(_) => {
                            return Err(SessionEnd::Refused(PgError::fatal(
                                code::IDLE_IN_TRANSACTION_TIMEOUT,
                                "terminating connection due to idle-in-transaction timeout (pool.idle_transaction_timeout)",
                            )))
                        }
                    },
                }
            }
            None => {
                let read = async {
                    tokio::select! {
                        biased;
                        r = self.client.read_buf(&mut self.inbox) => Ok(Woke::Client(r)),
                        () = self.ctx.client.terminated() => Err(terminated_by_request()),
                    }
                };
                match self.ctx.idle_timeout {
                    Some(limit) => match tokio::time::timeout(limit, read).await {
                        Ok(r) => r?,
                        Err(_) => {
                            return Err(SessionEnd::Refused(PgError::fatal(
                                code::IDLE_SESSION_TIMEOUT,
                                "terminating connection due to client_idle_timeout",
                            )))
                        }
                    },
                    None => read.await?,
                }
            }
        };
        match woke {
            Woke::Client(read) => {
                if read? == 0 {
                    return Err(SessionEnd::ClientGone);
                }
                self.on_client_data().await
            }
            Woke::Server(read) => {
                match read {
                    Ok(0) => return self.server_gone(std::io::ErrorKind::UnexpectedEof.into()),
                    Ok(_) => {}
                    Err(e) => return self.server_gone(e),
                }
                self.server_reads += 1;
                self.on_server_data().await
            }
        }
    }

    /// The server connection closed or failed. While the server owes the client nothing
    /// and the client is not bound to it, the client stays: a connection kept between
    /// transactions (session pooling) is replaced at the next statement; an open
    /// transaction is lost, and the next statement gets 08006 for it (see `checkout`).
    /// Else the session ends.
    fn server_gone(&mut self, e: std::io::Error) -> Result<(), SessionEnd> {
        let status = self.server.as_ref().map(|s| s.status);
        let end = self.server_lost(e);
        let owes = !self.queue.is_empty();
        let farewell = self.farewell.take();
        match release::server_gone(owes, self.bound, status, farewell, &end.to_string()) {
            release::ServerGone::End => return Err(end),
            release::ServerGone::Stay(None) => {}
            release::ServerGone::Stay(Some(lost)) => {
                tracing::info!(client = self.ctx.client.pid, error = %end, "server connection of an open transaction lost; the client stays");
                self.lost_transaction = Some(lost);
            }
        }
        self.release();
        Ok(())
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

    async fn on_client_data(&mut self) -> Result<(), SessionEnd> {
        let mut large = false;
        if self.queue.is_empty() {
            // Until it is written to a server, a cancel for what the client sent is kept.
            self.ctx.client.waiting();
        }
        loop {
            if matches!(self.split, BatchSplit::Ended { .. }) && self.must_split() {
                self.split_batch();
            }
            if self.must_wait_for_route() {
                // Handled once the replica has answered what came before.
                self.held_for_route = true;
                break;
            }
            let frame = match split_frame(&mut self.inbox, self.ctx.max_message_size) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => return Err(SessionEnd::Refused(frame_error(e))),
            };
            large |= frame.bytes.len() > SHRINK_ABOVE;
            self.flush_asked |= matches!(frame.tag, b'H' | b'S' | b'Q' | b'F');
            if self.skip_to_sync {
                if frame.tag == b'S' {
                    self.skip_to_sync = false;
                    self.in_batch = false;
                    self.release_held();
                    msg::ready_for_query(self.status, &mut self.outbox);
                }
                continue;
            }
            self.on_client_message(frame).await?;
        }
        self.flush_server().await?;
        if large && self.inbox.is_empty() {
            // What is left of the allocation the large message was read into.
            self.inbox = BytesMut::with_capacity(BUFFER_SIZE);
        }
        shrink(&mut self.to_server);
        if self.server.as_ref().is_some_and(|s| !s.read_buf.is_empty()) {
            // Replies that arrived while writing (pgsplit's own answers go ahead of them).
            self.flush_asked = false;
            return self.on_server_data().await;
        }
        if std::mem::take(&mut self.flush_asked) {
            self.queue.emit_synthetic(&mut self.outbox);
        }
        self.release_and_reply().await
    }

    async fn on_client_message(&mut self, frame: Frame) -> Result<(), SessionEnd> {
        match frame.tag {
            // A Flush alone opens no batch (it only asks for what is pending).
            b'P' | b'B' | b'D' | b'E' | b'C' => self.in_batch = true,
            b'S' => {
                self.in_batch = false;
                self.split = BatchSplit::None;
            }
            _ => {}
        }
        tracing::trace!(pid = self.ctx.client.pid, tag = %(frame.tag as char), queue = self.queue.len(), server = self.server.is_some(), "client message");
        match frame.tag {
            b'X' => Err(SessionEnd::ClientGone),
            b'Q' => self.on_query(frame).await,
            b'P' => self.on_parse(frame).await,
            b'B' => self.on_bind(frame).await,
            b'D' => self.on_describe(frame).await,
            b'C' => self.on_close(frame).await,
            b'E' => {
                let portal = crate::wire::frame::cstr(frame.body()).map(|(p, _)| p);
                if portal.is_some_and(|p| self.execute_local_portal(p)) {
                    return Ok(());
                }
                if let Some(sql) = portal.and_then(|p| self.portals.get(p)) {
                    self.settings.statement_sent(&sql);
                }
                self.forward(frame, Some(Kind::Execute)).await
            }
            b'S' => {
                self.local_portal = None;
                self.forward(frame, Some(Kind::Sync)).await
            }
            b'F' => {
                // A FunctionCall names its function by OID: pgsplit cannot tell what it does.
                self.forward(frame, Some(Kind::Query)).await?;
                self.left_state |= self.server.is_some();
                Ok(())
            }
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

    /// The client left: a clean connection goes back to the pool (reset first if it may
    /// carry session state), anything else is closed so the server rolls back.
    fn finish(&mut self) {
        self.ctx.client.set_target(None);
        self.lease = None;
        let Some(mut server) = self.server.take() else {
            return;
        };
        let held = self.held_server(&server);
        let (give_back, cancel) = release::on_leave(
            self.ctx.mode,
            self.bound,
            self.left_state,
            self.in_batch,
            &held,
        );
        if give_back != GiveBack::Close {
            if give_back == GiveBack::Reset {
                server.needs_discard = true;
            }
            drop(server);
        } else {
            tracing::debug!(node = %server.node.name, "closing a server connection left mid-transaction");
            if cancel {
                // A query may still be running; PostgreSQL would only notice the closed
                // socket when it next writes, so cancel it.
                let target = CancelTarget {
                    node: server.node.clone(),
                    pid: server.backend_pid,
                    secret: server.backend_secret.clone(),
                };
                tokio::spawn(async move {
                    if let Err(e) = crate::clients::send_cancel(&target).await {
                        tracing::debug!(error = %e, "could not cancel an abandoned query");
                    }
                });
            }
            drop(Object::take(server));
        }
    }

    /// The client sent Flush or Sync with no server attached: what pgsplit answered
    /// itself goes out.
    fn release_held(&mut self) {
        if !self.held.is_empty() {
            self.outbox.extend_from_slice(&self.held);
            self.held.clear();
        }
    }

    /// What the release rules need to know of `server`.
    fn held_server(&self, server: &ServerConn) -> Held {
        Held {
            status: server.status,
            owes_replies: !self.queue.is_empty(),
            unread: !server.read_buf.is_empty(),
            broken: server.broken,
        }
    }

    fn server_mut(&mut self) -> &mut ServerConn {
        self.server
            .as_mut()
            .expect("a server is checked out when statements are forwarded")
    }
}

/// What a session's wait for bytes ended with.
enum Woke {
    Server(std::io::Result<usize>),
    Client(std::io::Result<usize>),
}

/// How a session ends when another client terminated it with `pg_terminate_backend()`
/// (see `signals`), as a backend's does.
fn terminated_by_request() -> SessionEnd {
    SessionEnd::Refused(PgError::fatal(
        code::ADMIN_SHUTDOWN,
        "terminating connection due to administrator command",
    ))
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
