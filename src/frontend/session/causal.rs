//! Read-your-writes by LSN in the session (see `crate::causal`): the position query after
//! a transaction that wrote, the client's ReadyForQuery held until it is answered, the
//! causal token sent as ParameterStatus, and tokens presented by the client.

use super::*;
use crate::causal::{self, token, TokenError};
use crate::router::StatementToken;
use decide::position::{self, Standing};

impl Session {
    /// Whether this session reads positions after its writes: routing by LSN in
    /// transaction pooling.
    pub(super) fn reads_positions(&self) -> bool {
        position::reads_positions(&self.ctx.routing.policy, self.ctx.mode)
    }

    /// Where the client stands for the position rules.
    fn standing(&self) -> Standing {
        Standing {
            reads_positions: self.reads_positions(),
            on_primary: self.on_primary,
            unplaced: self.writes.unplaced(),
        }
    }

    /// Whether the statement being sent ends a transaction that wrote, so that the
    /// position query can go with it (see `commit_query` and `commit_batch`).
    fn commit_carries_position(&mut self) -> bool {
        let ending = std::mem::take(&mut self.ending);
        position::carries_position(ending, self.standing())
    }

    /// A simple Query `sql` to send: when it is one statement that ends a transaction that
    /// wrote (COMMIT, END, ...), the position query is appended to its text, so that its
    /// answer comes in the same reply, before the ReadyForQuery, at no extra round trip
    /// (the statement ends the transaction block; the query then runs on its own). Returns
    /// the Query message to send instead, and the entry its replies are matched with.
    pub(super) fn commit_query(&mut self, sql: &[u8]) -> Option<(Bytes, Pending)> {
        if !self.commit_carries_position() || crate::classify::statements(sql).len() != 1 {
            return None;
        }
        let query = position::commit_query(sql, self.position_query());
        let entry = Pending::Reply {
            kind: Kind::Query,
            hide: Hide::Position(false),
            statement: None,
        };
        Some((query, entry))
    }

    /// Before the Sync of an extended-protocol batch is sent: when the batch ends a
    /// transaction that wrote, the position query (Bind and Execute of pgsplit's prepared
    /// statement, with its Parse the first time on this server connection) goes ahead of
    /// the Sync, so its rows come before the batch's ReadyForQuery. After an error earlier
    /// in the batch the server skips it.
    pub(super) fn commit_batch(&mut self) {
        if !self.commit_carries_position() {
            return;
        }
        const NO_FORMATS_NO_PARAMETERS: [u8; 6] = [0; 6];
        let name = causal::POSITION_STATEMENT.as_bytes();
        let server = self.server_mut();
        if !std::mem::replace(&mut server.position_prepared, true) {
            let sql = causal::POSITION_SQL.as_bytes();
            let parse = msg::parse_message(name, sql, &NO_FORMATS_NO_PARAMETERS[..2]);
            self.to_server.extend_from_slice(&parse);
        }
        let bind = msg::bind_message(b"", name, &NO_FORMATS_NO_PARAMETERS);
        self.to_server.extend_from_slice(&bind);
        self.to_server.extend_from_slice(&msg::execute_message(b""));
        self.queue.push(Pending::PositionRows);
        self.position_sent();
    }

    /// The SQL that reads the position on the current server connection (preparing the
    /// statement there first if needed), as a simple query: it destroys the server's
    /// unnamed statement. A position query is on its way.
    fn position_query(&mut self) -> &'static str {
        let server = self.server_mut();
        let prepared = std::mem::replace(&mut server.position_prepared, true);
        server.unnamed = None;
        self.position_sent();
        causal::position_query(prepared)
    }

    /// A position query is on its way to the current (primary) server connection.
    fn position_sent(&mut self) {
        self.writes.position_sent();
        self.routing.causal.wrote();
    }

    /// Queues the position query on its own, as a simple Query.
    fn queue_position(&mut self) {
        let query = msg::query_message(self.position_query());
        self.to_server.extend_from_slice(&query);
        self.queue.push(Pending::Position);
    }

    /// The client's ReadyForQuery with `status` is about to be relayed. A position read
    /// in the reply it ends becomes the client's, and its token goes ahead of it. When
    /// the client is idle after writes that no position covers yet (an autocommit write,
    /// a COMMIT that came with other statements) and nothing else is outstanding, the
    /// position query is sent now and the ReadyForQuery held until its answer: returns
    /// true. A client that pipelined more gets its position once it is idle.
    pub(super) fn on_client_ready(&mut self, status: TxStatus) -> bool {
        if self.position.is_some() {
            self.position_done(status);
        }
        let now = position::send_position_now(
            status,
            self.hold_from.is_some(),
            !self.queue.is_empty(),
            self.in_batch,
            self.standing(),
        );
        if now {
            self.hold_from = Some(self.outbox.len());
        }
        now
    }

    /// Sends the position query on its own (see `on_client_ready`).
    pub(super) async fn send_position(&mut self) -> Result<(), SessionEnd> {
        self.queue_position();
        self.flush_server().await
    }

    /// One reply to the position query.
    pub(super) fn on_position_reply(&mut self, tag: u8, body: &[u8]) {
        match tag {
            b'D' => {
                let page = self.ctx.routing.positions.page();
                self.position = msg::read_data_row(body).and_then(|row| match row[..] {
                    [Some(insert)] => causal::read_position(insert, page),
                    _ => None,
                })
            }
            // The late query's own ReadyForQuery is handled by the relay.
            b'E' => {
                self.position = None;
                let (_, code, message) = crate::wire::error::parse_error_fields(body);
                // The client deallocated pgsplit's statement, or prepared one by its name.
                match code.as_str() {
                    code::INVALID_STATEMENT_NAME => self.server_mut().position_prepared = false,
                    code::DUPLICATE_PREPARED_STATEMENT => {
                        self.server_mut().position_prepared = true
                    }
                    _ => {}
                }
                tracing::debug!(client = self.ctx.client.pid, %code, %message, "the write position query failed");
            }
            _ => {}
        }
    }

    /// A position query was answered (or failed) and the server's transaction status is
    /// now `status`. Answered outside any transaction, the position is at or after every
    /// commit sent before it: it becomes the client's, and the client gets its token ahead
    /// of the ReadyForQuery (held, or about to be relayed). Answered inside one (the client
    /// began another in the same batch) or not at all, it says nothing, and the client is
    /// asked again the next time it is idle.
    pub(super) fn position_done(&mut self, status: TxStatus) {
        let placed = match (status, self.position.take()) {
            (TxStatus::Idle, Some(lsn)) => Some(lsn),
            _ => None,
        };
        self.writes.answered(placed.is_some());
        if let Some(lsn) = placed {
            self.routing.causal.placed(lsn);
            self.ctx.routing.positions.wrote(lsn);
            self.show_causal();
            let mut status = BytesMut::new();
            self.token_status(&mut status);
            let at = self.hold_from.unwrap_or(self.outbox.len());
            let tail = self.outbox.split_off(at);
            self.outbox.extend_from_slice(&status);
            self.outbox.unsplit(tail);
        }
        self.position = None;
        self.hold_from = None;
        if self.queue.is_empty() {
            self.writes.settled();
        }
    }

    /// Appends a ParameterStatus with the client's causal token, when it has a position.
    fn token_status(&self, out: &mut BytesMut) {
        if let Some(token) = self.causal_token() {
            msg::parameter_status(token::NAME, &token, out);
        }
    }

    /// A token for the client's causal position, when it has one and the cluster's
    /// identity is known.
    fn causal_token(&self) -> Option<String> {
        let lsn = self.routing.causal.lsn();
        let cluster = self.ctx.routing.positions.cluster()?;
        (lsn > 0).then(|| self.ctx.routing.tokens.issue(cluster, lsn))
    }

    /// Checks a token the client presented.
    pub(super) fn check_token(&self, token: &str) -> Result<u64, TokenError> {
        let routing = &self.ctx.routing;
        routing.tokens.check(routing.positions.cluster(), token)
    }

    /// Before routing a statement with `sql`: the causal token in its leading comment.
    /// One that does not check out sends a read to the primary, with a warning.
    pub(super) fn note_comment_token(&mut self, sql: Option<&Bytes>) {
        self.routing.statement_token = match sql.and_then(|sql| token::in_comment(sql)) {
            None => StatementToken::None,
            Some(presented) => match self.check_token(presented) {
                Ok(lsn) => StatementToken::Valid(lsn),
                Err(e) => {
                    let warning = format!("{e}; the statement runs on the primary");
                    msg::notice(
                        "WARNING",
                        code::INVALID_PARAMETER_VALUE,
                        &warning,
                        &mut self.outbox,
                    );
                    StatementToken::Invalid
                }
            },
        };
    }

    /// `SET pgsplit.causal_token = '...'`: raises the connection's causal position, and
    /// reports the token for it. Returns the error for a token that does not check out.
    pub(super) fn present_token(&mut self, token: &str, out: &mut BytesMut) -> Result<(), String> {
        let lsn = self
            .check_token(token)
            .map_err(|e| format!("invalid value for parameter \"{}\": {e}", token::NAME))?;
        self.routing.causal.presented(lsn);
        self.show_causal();
        msg::command_complete("SET", out);
        self.token_status(out);
        Ok(())
    }

    /// `RESET pgsplit.causal_token`: forgets presented tokens (the client's own writes
    /// still count).
    pub(super) fn forget_tokens(&mut self, out: &mut BytesMut) {
        self.routing.causal.forget_presented();
        self.show_causal();
        msg::command_complete("RESET", out);
        msg::parameter_status(token::NAME, &self.causal_token().unwrap_or_default(), out);
    }

    /// Puts the client's causal position in its `SHOW CLIENTS` line when it changed.
    pub(super) fn show_causal(&mut self) {
        let position = self.routing.causal.position();
        if position != self.shown_causal {
            self.shown_causal = position;
            self.ctx.client.update(|now| now.causal = position);
        }
    }

    /// `SHOW pgsplit.causal_token`.
    pub(super) fn show_token(&self, out: &mut BytesMut) {
        msg::single_value(token::NAME, &self.causal_token().unwrap_or_default(), out);
        msg::command_complete("SHOW", out);
    }
}
