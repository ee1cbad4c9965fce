//! Read-your-writes by LSN in the session (see `crate::causal`): the position query after
//! a transaction that wrote, the client's ReadyForQuery held until it is answered, the
//! causal token sent as ParameterStatus, and tokens presented by the client.

use super::*;
use crate::causal::{self, token, TokenError};
use crate::router::{ReadYourWrites, StatementToken};

impl Session {
    /// Whether this session reads positions after its writes: routing by LSN in
    /// transaction pooling.
    pub(super) fn reads_positions(&self) -> bool {
        let policy = &self.ctx.routing.policy;
        policy.enabled
            && policy.read_your_writes == ReadYourWrites::Lsn
            && self.ctx.mode == PoolMode::Transaction
    }

    /// After a client message that ends its part of the conversation (a Query, or the Sync
    /// of a batch) has been queued: when the statement ends a transaction that wrote, the
    /// position query goes with it, so its answer follows the commit's ReadyForQuery with
    /// no round trip of its own. (Not after anything else: a COPY would read it as data.)
    pub(super) fn position_with_commit(&mut self) {
        let ending = std::mem::take(&mut self.ending);
        if ending && self.unplaced && self.on_primary && self.reads_positions() {
            self.queue_position();
        }
    }

    /// Queues the position query on the current (primary) server connection. Its answer
    /// covers every statement sent before it, once those have ended.
    pub(super) fn queue_position(&mut self) {
        static POSITION: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
        let query = POSITION.get_or_init(|| msg::query_message(causal::POSITION_SQL));
        self.to_server.extend_from_slice(query);
        self.queue.push(Pending::Position);
        self.unplaced = false;
        self.routing.causal.wrote();
    }

    /// The client's ReadyForQuery with `status` just arrived from the server (not yet
    /// sent on). Returns whether the position query must be sent now: when the client is
    /// idle after a transaction that wrote and nothing else is outstanding. The
    /// ReadyForQuery is then held, as it is when a position query sent with the commit
    /// comes next; a client that pipelined more gets its token later, with the answer to
    /// a position query sent once it is idle.
    pub(super) fn hold_for_position(&mut self, status: TxStatus) -> bool {
        if status != TxStatus::Idle || self.hold_from.is_some() || !self.reads_positions() {
            return false;
        }
        let now = self.unplaced && self.on_primary && self.queue.is_empty() && !self.in_batch;
        if now || self.queue.position_next() {
            self.hold_from = Some(self.outbox.len());
        }
        now
    }

    /// One reply to the position query.
    pub(super) fn on_position_reply(&mut self, tag: u8, body: &[u8]) {
        match tag {
            b'D' => {
                self.position = msg::read_data_row(body).and_then(|row| match row[..] {
                    [Some(insert), Some(flush), Some(page)] => {
                        causal::read_position(insert, flush, page)
                    }
                    _ => None,
                })
            }
            b'E' => {
                self.position = None;
                let (_, code, message) = crate::wire::error::parse_error_fields(body);
                tracing::debug!(client = self.ctx.cancel.pid, %code, message = %message.escape_debug(), "the write position query failed");
            }
            _ => {}
        }
    }

    /// The position query ended with the server's transaction status `status`. Answered
    /// outside any transaction, the position is at or after every commit sent before it:
    /// it becomes the client's, and the client gets its token ahead of the held
    /// ReadyForQuery. Answered inside one (the client began another in the same batch) or
    /// not at all, it says nothing: the next time the client is idle, it is asked again.
    pub(super) fn position_done(&mut self, status: TxStatus) {
        match (status, self.position.take()) {
            (TxStatus::Idle, Some((lsn, flushed))) => {
                self.routing.causal.placed(lsn);
                self.ctx.routing.positions.publish(lsn, flushed);
                self.show_causal();
                let mut status = BytesMut::new();
                self.token_status(&mut status);
                let at = self.hold_from.unwrap_or(self.outbox.len());
                let tail = self.outbox.split_off(at);
                self.outbox.extend_from_slice(&status);
                self.outbox.unsplit(tail);
            }
            _ => self.unplaced = true,
        }
        self.hold_from = None;
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
            self.ctx.entry.update(|now| now.causal = position);
        }
    }

    /// `SHOW pgsplit.causal_token`.
    pub(super) fn show_token(&self, out: &mut BytesMut) {
        msg::single_value(token::NAME, &self.causal_token().unwrap_or_default(), out);
        msg::command_complete("SHOW", out);
    }
}
