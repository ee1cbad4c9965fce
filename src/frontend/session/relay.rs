//! Server to client: relay replies in order with pgsplit's own answers, track the
//! transaction status, and give the connection back when the client is idle.

use super::*;
use bytes::Buf;

impl Session {
    /// Handles the whole messages in the server's buffer: relays them to the client (or
    /// drops the replies meant for pgsplit), inserts pgsplit's own answers in order,
    /// tracks transaction status, and releases the server when the client is idle.
    pub(super) async fn on_server_data(&mut self) -> Result<(), SessionEnd> {
        let Some(server) = self.server.as_mut() else {
            return Ok(());
        };
        // Walk the buffer in place; only what is consumed is cut off at the end.
        let mut buf = std::mem::take(&mut server.read_buf);
        self.queue.emit_synthetic(&mut self.outbox);
        let mut pos = 0;
        if self.streaming > 0 {
            // The rest of a large message being relayed as it arrives.
            pos = self.streaming.min(buf.len());
            self.outbox.extend_from_slice(&buf[..pos]);
            self.streaming -= pos;
        }
        let mut bad_frame = None;
        let mut run_again = None;
        let mut send_position = false;
        let mut position_ended = None;
        let mut split_ended = None;
        loop {
            let total = match peek_frame_len(&buf[pos..], SERVER_MESSAGE_LIMIT) {
                Ok(Some(total)) if buf.len() - pos >= total => total,
                Ok(Some(total))
                    if total > STREAM_FROM
                        && matches!(buf[pos], b'D' | b'd')
                        && self.queue.forwards_rows() =>
                {
                    // A large row or COPY chunk goes on to the client as it arrives, never
                    // held whole. (A read watched for a refusal is not refused: it returns
                    // rows.)
                    if let Some(mut retry) = self.retry.take() {
                        if let Step::Release(held) = retry.on_message(buf[pos], &[], false) {
                            self.outbox.extend_from_slice(&held);
                        }
                    }
                    self.queue.on_server_message(buf[pos]);
                    self.outbox.extend_from_slice(&buf[pos..]);
                    self.streaming = total - (buf.len() - pos);
                    pos = buf.len();
                    break;
                }
                Ok(_) => break,
                Err(e) => {
                    bad_frame = Some(e);
                    break;
                }
            };
            let message = &buf[pos..pos + total];
            pos += total;
            let (tag, body) = (message[0], &message[5..]);
            // Nothing was asked of the server (judged before the queue takes this reply).
            let unasked = self.queue.is_empty();
            // Only a read watched for a refusal (rare) does more than match the queue.
            let step = self
                .retry
                .as_mut()
                .map(|retry| retry.on_message(tag, message, self.queue.len() == 1));
            let mut verdict = self.queue.on_server_message(tag);
            if verdict == Verdict::Position {
                self.on_position_reply(tag, body);
                if tag == b'Z' {
                    let status = msg::read_ready(body).unwrap_or(TxStatus::Idle);
                    self.server_mut().status = status;
                    position_ended = Some(status);
                }
                // pgsplit's own answers to what the client sent while the position query
                // ran (a Close) come next, before the reply to the client's Sync.
                self.queue.emit_synthetic(&mut self.outbox);
                continue;
            }
            // pgsplit's Sync in the middle of a batch: its ReadyForQuery is noted as any
            // other (transaction status, settings) but is not the client's.
            let split = verdict == Verdict::Split;
            if split {
                verdict = Verdict::Drop;
            }
            if verdict == Verdict::Cleanup {
                match tag {
                    b'Z' => {
                        let status = msg::read_ready(body).unwrap_or(TxStatus::Idle);
                        self.server_mut().status = status;
                    }
                    // The connection keeps what it should have forgotten: it is closed
                    // once this client is done with it.
                    b'E' => {
                        let server = self.server_mut();
                        tracing::warn!(node = %server.node.name, pid = server.backend_pid, "DISCARD SEQUENCES failed; the server connection is closed after use");
                        server.broken = true;
                    }
                    _ => {}
                }
                continue;
            }
            match step {
                None => {}
                Some(Step::Hold | Step::Drop) => verdict = Verdict::Drop,
                Some(Step::Release(held)) => {
                    self.outbox.extend_from_slice(&held);
                    self.retry = None;
                }
                Some(Step::Retry(query)) => {
                    verdict = Verdict::Drop;
                    self.retry = None;
                    run_again = Some(query);
                }
            }
            match tag {
                b'Z' => {
                    let status = msg::read_ready(body).unwrap_or(TxStatus::Idle);
                    self.server_mut().status = status;
                    if status == TxStatus::Idle && std::mem::take(&mut self.wrote) {
                        let routing = &self.ctx.routing;
                        let now = Instant::now();
                        if self.routing.wrote(&routing.policy, now) {
                            routing.stats.record_pin();
                            let until = self.routing.pinned_until;
                            self.ctx.client.update(|now| now.pinned_until = until);
                        }
                        self.show_causal();
                    }
                    if verdict == Verdict::Forward {
                        send_position |= self.on_client_ready(status);
                    }
                    match self.settings.ready(self.status, status) {
                        ServerSettings::Unchanged => {}
                        ServerSettings::Now(now) => self.server_mut().settings = now,
                    }
                    self.status = status;
                    if split {
                        split_ended = Some(status);
                    }
                }
                b'S' => self.server_mut().note_parameter(message),
                // An error nothing was asked for: the server is closing the connection
                // (shut down, terminated). Not relayed: the client is between statements
                // and stays (see `Session::server_gone`).
                b'E' if unasked && !self.bound => {
                    let (_, code, message) = crate::wire::error::parse_error_fields(body);
                    self.farewell = Some((crate::wire::error::farewell(&code), message));
                    self.server_mut().broken = true;
                    verdict = Verdict::Drop;
                }
                b'E' => {
                    self.settings.statement_failed();
                    self.split.note_error();
                }
                b'C' => {
                    let tag = msg::read_command_tag(body);
                    crate::prepared::command_completed(tag);
                    if tag == b"DISCARD ALL" || tag == b"DEALLOCATE ALL" {
                        let server = self.server_mut();
                        server.statements.clear();
                        server.position_prepared = false;
                    }
                    // A library LOADed stays in the backend (its settings, its hooks):
                    // no reset removes it, so the connection is closed after this client.
                    if tag == b"LOAD" {
                        self.server_mut().broken = true;
                    }
                }
                _ => {}
            }
            if verdict == Verdict::Forward {
                let at = self.outbox.len();
                self.outbox.extend_from_slice(message);
                if tag == b'A' {
                    self.name_own_notification(at);
                }
            }
            self.queue.emit_synthetic(&mut self.outbox);
        }
        if pos == buf.len() {
            // (Keeps the whole allocation for the next read, so `shrink` sees its size.)
            buf.clear();
        } else {
            buf.advance(pos);
        }
        let failed = self.queue.take_failed_statements();
        let server = self.server_mut();
        server.read_buf = buf;
        shrink(&mut server.read_buf);
        if let Some(e) = bad_frame {
            server.broken = true;
            return Err(SessionEnd::ServerLost(BackendError::Read {
                node: server.node.name.clone(),
                source: e.into(),
            }));
        }
        let mut unnamed = Vec::new();
        for unmade in failed {
            match unmade.parsed {
                Parsed::Named(name) => {
                    server.statements.remove(&name);
                }
                Parsed::Unnamed { id, before } => unnamed.push((id, before, unmade.failed)),
            }
        }
        self.unnamed_unmade(&unnamed);
        if self.queue.is_empty() {
            self.unnamed_before.clear();
        }
        if let Some(status) = position_ended {
            self.position_done(status);
        }
        if send_position {
            self.send_position().await?;
        }
        if let Some(query) = run_again {
            self.run_on_primary(query).await?;
        }
        if let Some(status) = split_ended {
            self.split_ended(status);
        }
        self.release_and_reply().await
    }

    /// Runs again on the primary an autocommit read that its replica refused as a write
    /// (see `frontend::retry`): the replica goes back to its pool, and the read counts as
    /// a write that may leave state (it called something that writes).
    async fn run_on_primary(&mut self, query: Bytes) -> Result<(), SessionEnd> {
        if let Some(server) = self.server.as_ref() {
            tracing::info!(node = %server.node.name, client = self.ctx.client.pid, "a replica refused a read as a write (25006); running it on the primary");
        }
        self.release();
        if !self.check_out(Classification::UNKNOWN).await? {
            msg::ready_for_query(self.status, &mut self.outbox);
            return Ok(());
        }
        self.statement_class = Some(Classification::UNKNOWN);
        self.note_statement(&[]);
        self.to_server.extend_from_slice(&query);
        self.queue.push(Pending::reply(Kind::Query));
        self.flush_server().await
    }

    /// Unnamed Parses the server did not carry out (`(id, before, failed)`, in order): the
    /// first one decides, as in PostgreSQL. If it failed, the unnamed statement is gone;
    /// if the server skipped it, what was there before stays, on the server connection
    /// and for the client.
    fn unnamed_unmade(&mut self, unmade: &[(u64, Option<u64>, bool)]) {
        let Some(&(_, before, failed)) = unmade.first() else {
            return;
        };
        let gone = |id: u64| unmade.iter().any(|u| u.0 == id);
        let server = self.server_mut();
        if server.unnamed.is_some_and(gone) {
            server.unnamed = if failed { None } else { before };
        }
        if !self.unnamed.as_ref().is_some_and(|u| gone(u.id)) {
            return;
        }
        // The first of the client's own Parses among them (a hidden one, preparing the
        // client's statement on this connection, changes nothing for the client).
        let own = unmade.iter().find_map(|&(id, _, failed)| {
            let i = self.unnamed_before.iter().position(|b| b.0 == id)?;
            Some((i, failed))
        });
        if let Some((i, failed)) = own {
            let (_, before, _) = self.unnamed_before.swap_remove(i);
            self.unnamed = if failed { None } else { before };
        }
    }

    /// In transaction pooling, returns the server connection once the client is idle and
    /// nothing is outstanding (see `decide::release::release_when_idle`).
    pub(super) fn release_if_idle(&mut self) {
        let Some(server) = self.server.as_ref() else {
            return;
        };
        let held = self.held_server(server);
        if release::release_when_idle(self.ctx.mode, self.bound, self.in_batch, &held) {
            self.release();
        }
    }

    pub(super) fn release(&mut self) {
        self.ctx.client.set_target(None);
        self.farewell = None;
        self.lease = None;
        self.hold_from = None;
        if let Some(mut server) = self.server.take() {
            match release::on_release(server.broken, self.left_state) {
                GiveBack::Close => drop(Object::take(server)),
                GiveBack::Reset => {
                    tracing::debug!(node = %server.node.name, pid = server.backend_pid, "server connection may hold untracked session state; it is reset before reuse");
                    server.needs_discard = true;
                }
                GiveBack::AsIs => {}
            }
        }
        self.left_state = false;
        self.split = BatchSplit::None;
        self.queue.clear();
    }
}
