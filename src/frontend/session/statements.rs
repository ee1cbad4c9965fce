//! Client messages that carry statements: Query, Parse, Bind, Describe, Close and the
//! rest, forwarded with statement names rewritten, or answered by pgsplit itself
//! (DEALLOCATE, `SET pgsplit.route`, ParseComplete for statements prepared lazily).

use super::*;
use crate::frontend::settings::changes_in;
use decide::local::{self, raise_sql, Block, Deallocate, NO_UNNAMED};

/// How many of the client's unanswered unnamed Parses remember the statement before them.
const UNNAMED_BEFORE_KEPT: usize = 64;

impl Session {
    pub(super) async fn on_query(&mut self, frame: Frame) -> Result<(), SessionEnd> {
        let Some(sql) = read_query(frame.body()) else {
            return Err(malformed("Query"));
        };
        // A simple Query destroys the unnamed statement and portal.
        self.unnamed = None;
        self.local_portal = None;
        if self.server.is_none() {
            // Answers to earlier extended-protocol messages go first.
            self.release_held();
        }
        if let Some(answer) = self.deallocate(sql) {
            return self.answer_locally(answer);
        }
        if let Some(command) = router::route_command(sql) {
            return self.on_route_command(command).await;
        }
        if let Some(answered) = self.on_signal_query(sql) {
            return answered;
        }
        let route_sql = frame.bytes.slice(5..5 + sql.len());
        if sql.len() > crate::classify::ON_LOOP {
            // Read apart from the event loop: a long text would hold up every client this
            // thread serves.
            let text = route_sql.clone();
            let pending = self.settings.block_pending();
            let changes = tokio::task::spawn_blocking(move || changes_in(&text, pending))
                .await
                .unwrap_or_default();
            self.settings.changes_sent(changes);
        } else {
            self.settings.statement_sent(sql);
        }
        if !self.ensure_server(Some(&route_sql), false).await? {
            msg::ready_for_query(self.status, &mut self.outbox);
            return Ok(());
        }
        if let Some((code, message)) = self.claim_session() {
            return self.raise_on_server(code, &message);
        }
        self.note_statement(sql);
        self.server_mut().unnamed = None;
        if !self.on_primary && self.queue.is_empty() && self.status == TxStatus::Idle {
            self.retry = Some(ReadRetry::new(frame.bytes.clone()));
        }
        match self.commit_query(sql) {
            Some((query, entry)) => {
                self.to_server.extend_from_slice(&query);
                self.queue.push(entry);
            }
            None => {
                self.to_server.extend_from_slice(&frame.bytes);
                self.queue.push(Pending::reply(Kind::Query));
            }
        }
        Ok(())
    }

    pub(super) async fn on_parse(&mut self, frame: Frame) -> Result<(), SessionEnd> {
        let Some(parse) = read_parse(frame.body()) else {
            return Err(malformed("Parse"));
        };
        if router::route_command(parse.query).is_some() {
            // pgsplit answers `SET / SHOW pgsplit.route` only as simple queries; over the
            // extended protocol it says so rather than let the server accept a setting
            // that would change nothing.
            return self.fail_in_batch(
                code::FEATURE_NOT_SUPPORTED,
                "pgsplit.route can only be set or shown with a simple query (not a prepared statement)",
            );
        }
        if parse.name.is_empty() {
            // The query sits after the (empty) name and its terminator.
            let sql = frame.bytes.slice(6..6 + parse.query.len());
            let unnamed = Unnamed::new(sql.clone(), frame.bytes.clone());
            let id = unnamed.id;
            // PostgreSQL drops the unnamed statement before it parses the new one: after
            // a Parse that fails, the client has none; after one the server skips (an
            // earlier message failed), it keeps the one before (see `relay`).
            let before = self.unnamed.replace(unnamed);
            if !self.ensure_server(Some(&sql), true).await? {
                self.unnamed = None;
                self.skip_to_sync = true;
                return Ok(());
            }
            self.parse_unnamed(id, &frame.bytes, Hide::Nothing);
            // (Bounded: deep pipelines of unnamed Parses keep the latest.)
            if self.unnamed_before.len() == UNNAMED_BEFORE_KEPT {
                self.unnamed_before.remove(0);
            }
            self.unnamed_before.push((id, before, self.syncs_sent));
            return Ok(());
        }
        if self.statements.get(parse.name).is_some() {
            let name = String::from_utf8_lossy(parse.name).into_owned();
            return self.fail_in_batch(
                code::DUPLICATE_PREPARED_STATEMENT,
                &format!("prepared statement \"{name}\" already exists"),
            );
        }
        let stmt = Arc::new(PreparedStatement::from_parse(&parse));
        self.statements.insert(parse.name, stmt.clone());
        match decide::signal::call(parse.query) {
            Some(call) => {
                self.signal_statements.insert(parse.name.to_vec(), call);
            }
            None if !self.signal_statements.is_empty() => {
                self.signal_statements.remove(parse.name);
            }
            None => {}
        }
        if self.server.is_none() {
            // Outside a transaction, preparing needs no server: the statement is
            // prepared on whichever server first executes it. Clients that prepare
            // synchronously (pgbench -M prepared, PQprepare) then never wait for a
            // server while holding none, and errors in the statement surface at its
            // first Bind or Describe. The ParseComplete goes out at the client's next
            // Flush or Sync, as PostgreSQL's would.
            msg::parse_complete(&mut self.held);
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

    pub(super) async fn on_bind(&mut self, frame: Frame) -> Result<(), SessionEnd> {
        let Some((portal, name, rest)) = read_bind(frame.body()) else {
            return Err(malformed("Bind"));
        };
        if self.local_portal(portal).is_some() {
            // Bound again: whatever pgsplit answered for the portal is gone.
            self.local_portal = None;
        }
        let signal = if name.is_empty() {
            self.unnamed.as_ref().and_then(|u| u.signal)
        } else if self.signal_statements.is_empty() {
            None
        } else {
            // (Only while the client still has the statement: a closed one is the server's
            // error to give.)
            self.signal_statements
                .get(name)
                .copied()
                .filter(|_| self.statements.get(name).is_some())
        };
        if let Some(call) = signal {
            if self.on_signal_bind(portal, call, rest)? {
                self.portals.bind(portal, None);
                return Ok(());
            }
        }
        let stmt = (!name.is_empty())
            .then(|| self.statements.get(name).cloned())
            .flatten();
        // What the portal will run: binding is when a statement starts to count (writes
        // pin reads, session-bound features pin the connection, settings change).
        let sql = match &stmt {
            Some(stmt) => Some(stmt.query.clone()),
            None if name.is_empty() => self.unnamed.as_ref().map(|u| u.sql.clone()),
            None => None,
        };
        let settings_sql = sql.clone().filter(|sql| self.settings.wants(sql));
        self.portals.bind(portal, settings_sql);
        let Some(stmt) = stmt else {
            if name.is_empty() {
                return self.bind_unnamed(frame).await;
            }
            return self.forward(frame, Some(Kind::Bind)).await;
        };
        if !self.bind_server(&stmt.query).await? {
            return Ok(());
        }
        self.ensure_prepared(&stmt);
        let bind = msg::bind_message(portal, stmt.server_name.as_bytes(), rest);
        self.to_server.extend_from_slice(&bind);
        self.queue.push(Pending::reply(Kind::Bind));
        Ok(())
    }

    pub(super) async fn on_describe(&mut self, frame: Frame) -> Result<(), SessionEnd> {
        let Some((kind, name)) = read_target(frame.body()) else {
            return Err(malformed("Describe"));
        };
        if kind == b'P' && self.describe_local_portal(name) {
            return Ok(());
        }
        if kind == b'S' && name.is_empty() {
            let Some(unnamed) = self.unnamed.clone() else {
                return self.fail_in_batch(code::INVALID_STATEMENT_NAME, NO_UNNAMED);
            };
            if !self.ensure_server(Some(&unnamed.sql), true).await? {
                self.skip_to_sync = true;
                return Ok(());
            }
            self.ensure_unnamed(&unnamed);
            self.to_server.extend_from_slice(&frame.bytes);
            self.queue.push(Pending::reply(Kind::Describe));
            return Ok(());
        }
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

    pub(super) async fn on_close(&mut self, frame: Frame) -> Result<(), SessionEnd> {
        let Some((kind, name)) = read_target(frame.body()) else {
            return Err(malformed("Close"));
        };
        if kind == b'S' {
            // The server-side statement stays cached for other clients; the client's
            // name is gone, as PostgreSQL would have it. (A server still holding this
            // client's unnamed statement never binds it again: its id is the client's.)
            if name.is_empty() {
                self.unnamed = None;
            } else {
                self.statements.remove(name);
            }
            let mut done = BytesMut::new();
            msg::close_complete(&mut done);
            self.reply_in_batch(done);
            return Ok(());
        }
        self.forward(frame, Some(Kind::Close)).await
    }

    /// A Bind of the unnamed statement: it runs the SQL this client parsed last, prepared
    /// again on the server connection it lands on when that one holds another (or none);
    /// a client without an unnamed statement gets 26000, as from PostgreSQL.
    async fn bind_unnamed(&mut self, frame: Frame) -> Result<(), SessionEnd> {
        let Some(unnamed) = self.unnamed.clone() else {
            return self.fail_in_batch(code::INVALID_STATEMENT_NAME, NO_UNNAMED);
        };
        if !self.bind_server(&unnamed.sql).await? {
            return Ok(());
        }
        self.ensure_unnamed(&unnamed);
        self.to_server.extend_from_slice(&frame.bytes);
        self.queue.push(Pending::reply(Kind::Bind));
        Ok(())
    }

    /// Gets a server for a Bind of a statement with `sql` (binding is when a statement
    /// starts to count: see `claim_session` and `note_statement`). Returns false when the
    /// Bind must not go on: the client has been sent the error.
    async fn bind_server(&mut self, sql: &Bytes) -> Result<bool, SessionEnd> {
        if !self.ensure_server(Some(sql), true).await? {
            self.skip_to_sync = true;
            return Ok(false);
        }
        if let Some((code, message)) = self.claim_session() {
            self.fail_in_batch(code, &message)?;
            return Ok(false);
        }
        self.note_statement(sql);
        Ok(true)
    }

    /// Queues the client's unnamed Parse on the current server unless that server holds it
    /// already; the client does not see the reply.
    fn ensure_unnamed(&mut self, unnamed: &Unnamed) {
        // (A Bind or Describe of it waits while its Parse, sent before a Sync, is not
        // answered: see `must_wait_for_route`. Should one get here anyway, the server
        // may have skipped that Parse and hold another statement, perhaps another
        // client's: it is parsed again.)
        let unsure = self.unnamed_unsure();
        if self.server_mut().unnamed == Some(unnamed.id) && !unsure {
            return;
        }
        self.parse_unnamed(unnamed.id, &unnamed.parse, Hide::Completion);
    }

    /// Sends `parse`, a Parse of the client's unnamed statement `id`, to the current
    /// server, which holds that statement from now on; the queue remembers the one it
    /// held before (kept if the server skips this Parse).
    fn parse_unnamed(&mut self, id: u64, parse: &[u8], hide: Hide) {
        let before = self.server_mut().unnamed.replace(id);
        self.to_server.extend_from_slice(parse);
        self.queue.push(Pending::Reply {
            kind: Kind::Parse,
            hide,
            statement: Some(Parsed::Unnamed { id, before }),
        });
    }

    /// Fails the extended-protocol batch at this message with `code` and `message`, as
    /// PostgreSQL fails a bad message: the error comes in order with the replies still
    /// owed, everything up to the client's Sync is skipped, and an open transaction block
    /// is aborted. Without a server, pgsplit answers itself; with one, the server raises
    /// the error (an unnamed statement that raises it, run right away, its other replies
    /// hidden), so it skips what follows exactly as it would for its own error.
    pub(super) fn fail_in_batch(
        &mut self,
        code: &'static str,
        message: &str,
    ) -> Result<(), SessionEnd> {
        let Some(server) = self.server.as_mut() else {
            PgError::error(code, message).encode(&mut self.held);
            self.skip_to_sync = true;
            return Ok(());
        };
        server.unnamed = None;
        let raise = raise_sql(code, message);
        const NO_PARAMETERS: [u8; 2] = [0, 0];
        const NO_FORMATS_NO_PARAMETERS: [u8; 6] = [0; 6];
        self.to_server.extend_from_slice(&msg::parse_message(
            b"",
            raise.as_bytes(),
            &NO_PARAMETERS,
        ));
        self.to_server
            .extend_from_slice(&msg::bind_message(b"", b"", &NO_FORMATS_NO_PARAMETERS));
        self.to_server.extend_from_slice(&msg::execute_message(b""));
        for kind in [Kind::Parse, Kind::Bind, Kind::Execute] {
            self.queue.push(Pending::Reply {
                kind,
                hide: Hide::Completion,
                statement: None,
            });
        }
        Ok(())
    }

    /// Forwards a message as it came, checking out a server first if needed.
    pub(super) async fn forward(
        &mut self,
        frame: Frame,
        kind: Option<Kind>,
    ) -> Result<(), SessionEnd> {
        if self.server.is_none() && matches!(frame.tag, b'S' | b'H') {
            // Nothing is outstanding: a Sync only asks for ReadyForQuery.
            self.release_held();
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
        if kind == Some(Kind::Sync) {
            self.commit_batch();
        }
        self.to_server.extend_from_slice(&frame.bytes);
        match kind {
            Some(Kind::Sync) => {
                self.syncs_sent += 1;
                self.queue.push_sync()
            }
            Some(kind) => self.queue.push(Pending::reply(kind)),
            None => {}
        }
        Ok(())
    }

    /// Queues a Parse for `stmt` on the current server unless it has it already; the
    /// client does not see the reply.
    pub(super) fn ensure_prepared(&mut self, stmt: &Arc<PreparedStatement>) {
        if !self.server_mut().statements.touch(&stmt.server_name) {
            self.prepare_on_server(stmt, Hide::Completion);
        }
    }

    /// Sends the Parse for `stmt`, closing the least recently used statement first when
    /// the server's cache is full.
    pub(super) fn prepare_on_server(&mut self, stmt: &Arc<PreparedStatement>, hide: Hide) {
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
            statement: Some(Parsed::Named(stmt.server_name.clone())),
        });
    }

    /// `DEALLOCATE [PREPARE] name` / `DEALLOCATE [PREPARE] ALL` for protocol-level
    /// statements is answered by pgsplit: the statements live in its own table. `name` is
    /// read as PostgreSQL reads it (unquoted: lowercased; quoted: as written).
    pub(super) fn deallocate(&mut self, sql: &[u8]) -> Option<&'static str> {
        let what = local::deallocate(sql)?;
        let existed = match &what {
            Deallocate::All => {
                self.statements.clear();
                true
            }
            Deallocate::Named(name) => self.statements.remove(name).is_some(),
        };
        local::deallocate_tag(&what, existed)
    }

    /// Answers a command without a server: CommandComplete and ReadyForQuery, in order
    /// with whatever the server still owes.
    pub(super) fn answer_locally(&mut self, tag: &str) -> Result<(), SessionEnd> {
        let mut answer = BytesMut::new();
        msg::command_complete(tag, &mut answer);
        self.reply_locally(answer)
    }

    /// Sends a reply pgsplit makes itself, followed by ReadyForQuery, in order with
    /// whatever the server still owes.
    pub(super) fn reply_locally(&mut self, mut answer: BytesMut) -> Result<(), SessionEnd> {
        msg::ready_for_query(self.status, &mut answer);
        if local::reply_after_server(self.server.is_some(), !self.queue.is_empty()) {
            self.queue.push(Pending::Synthetic(answer.freeze()));
        } else {
            self.outbox.extend_from_slice(&answer);
        }
        Ok(())
    }

    /// `SET / RESET / SHOW pgsplit.route` and `pgsplit.causal_token`, answered by pgsplit.
    pub(super) async fn on_route_command(
        &mut self,
        command: router::RouteCommand,
    ) -> Result<(), SessionEnd> {
        let block = match self.local_block() {
            Ok(block) => block,
            Err(refused) => return refused,
        };
        let mut answer = BytesMut::new();
        let outcome = match command {
            router::RouteCommand::Set(mode) => {
                self.routing.mode = mode;
                msg::command_complete("SET", &mut answer);
                Ok(())
            }
            router::RouteCommand::Show => {
                let value = local::route_value(self.routing.mode);
                msg::single_value("pgsplit.route", value, &mut answer);
                msg::command_complete("SHOW", &mut answer);
                Ok(())
            }
            router::RouteCommand::Invalid(value) => Err(local::invalid_route(&value)),
            router::RouteCommand::SetToken(token) => self.present_token(&token, &mut answer),
            router::RouteCommand::ResetToken => {
                self.forget_tokens(&mut answer);
                Ok(())
            }
            router::RouteCommand::ShowToken => {
                self.show_token(&mut answer);
                Ok(())
            }
        };
        if let Err(message) = outcome {
            return self.fail_local_command(block, code::INVALID_PARAMETER_VALUE, &message);
        }
        self.reply_locally(answer)
    }

    /// Where a command pgsplit answers itself stands (see `local::block`). In a failed
    /// transaction block it is refused, as PostgreSQL refuses every command there (25P02),
    /// and the refusal is the `Err`.
    pub(super) fn local_block(&mut self) -> Result<Block, Result<(), SessionEnd>> {
        let block = local::block(self.server.is_some(), self.status);
        if block == Block::Failed {
            return Err(self.raise_on_server(code::IN_FAILED_TRANSACTION, local::IN_FAILED_BLOCK));
        }
        Ok(block)
    }

    /// Fails a command pgsplit answers itself with `code` and `message`: inside a
    /// transaction block the server raises the error, so it aborts the block as PostgreSQL
    /// would; outside one it is pgsplit's own reply.
    pub(super) fn fail_local_command(
        &mut self,
        block: Block,
        code: &'static str,
        message: &str,
    ) -> Result<(), SessionEnd> {
        if block == Block::Inside {
            return self.raise_on_server(code, message);
        }
        let mut answer = BytesMut::new();
        PgError::error(code, message).encode(&mut answer);
        self.reply_locally(answer)
    }

    /// Makes the server fail the client's current statement with `code` and `message`:
    /// inside a transaction block, the block is aborted exactly as by a server error.
    pub(super) fn raise_on_server(
        &mut self,
        code: &'static str,
        message: &str,
    ) -> Result<(), SessionEnd> {
        let raise = raise_sql(code, message);
        self.to_server
            .extend_from_slice(&msg::query_message(&raise));
        self.queue.push(Pending::reply(Kind::Query));
        Ok(())
    }
}
