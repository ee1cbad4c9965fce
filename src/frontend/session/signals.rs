//! `pg_cancel_backend(pid)` and `pg_terminate_backend(pid)` for pgsplit's client process
//! ids, answered by pgsplit (the rules are in `decide::signal`): the other client's
//! statement is cancelled or its session ended, and the caller gets the row PostgreSQL
//! would give. A simple Query is answered at once; over the extended protocol, the Bind
//! that names the process id is answered, and so are the Describe and Execute of its
//! portal until the client's next Sync.

use super::*;
use crate::clients::{is_client_pid, Signal};
use decide::signal::{self, Answer, Arg, SignalCall};

/// What pgsplit answers for a portal bound to such a call.
#[derive(Debug)]
pub(super) struct LocalPortal {
    name: Vec<u8>,
    description: Bytes,
    rows: Bytes,
}

impl Session {
    /// Sends `signal` to client `pid` (when it is another client) and says what the call
    /// answers.
    fn signal_client(&self, signal: Signal, pid: i32) -> Answer {
        let client = &self.ctx.client;
        signal::answer(signal, pid, client.pid, || {
            let (how, cancel) = client.signal(pid, signal);
            if let Some(target) = cancel {
                tokio::spawn(async move {
                    if let Err(e) = crate::clients::send_cancel(&target).await {
                        tracing::debug!(error = %e, "could not send a cancel for pg_cancel_backend");
                    }
                });
            }
            tracing::info!(client = client.pid, target = pid, ?signal, outcome = ?how, "signal for a client");
            how
        })
    }

    /// A simple Query that calls one of the functions with one of pgsplit's process ids is
    /// answered here (`None`: it is not such a call).
    pub(super) fn on_signal_query(&mut self, sql: &[u8]) -> Option<Result<(), SessionEnd>> {
        let call = signal::call(sql)?;
        let Arg::Literal(pid) = call.arg else {
            return None;
        };
        if !is_client_pid(pid) {
            return None;
        }
        let block = match self.local_block() {
            Ok(block) => block,
            Err(refused) => return Some(refused),
        };
        let pid = pid as i32;
        let (code, message) = match self.signal_client(call.signal, pid) {
            Answer::EndOwnSession => return Some(Err(terminated_by_request())),
            Answer::Value(value) => {
                let mut answer = BytesMut::new();
                signal::description(call.signal, false, &mut answer);
                signal::rows(value, pid, false, &mut answer);
                return Some(self.reply_locally(answer));
            }
            Answer::Denied => (code::INSUFFICIENT_PRIVILEGE, signal::denied(call.signal)),
            Answer::CancelOwnStatement => (code::QUERY_CANCELED, CANCELED),
        };
        Some(self.fail_local_command(block, code, message))
    }

    /// A Bind of a statement that is such a call (`call`), with `rest` the Bind's values:
    /// answered here when the process id is one of pgsplit's. Returns whether it was.
    pub(super) fn on_signal_bind(
        &mut self,
        portal: &[u8],
        call: SignalCall,
        rest: &[u8],
    ) -> Result<bool, SessionEnd> {
        let Some(values) = msg::read_bind_values(rest) else {
            return Ok(false);
        };
        let pid = match call.arg {
            Arg::Literal(pid) => Some(pid),
            Arg::Param(i) => values
                .param(i)
                .and_then(|(value, binary)| signal::parameter_value(value, binary)),
        };
        let Some(pid) = pid.filter(|&pid| is_client_pid(pid)) else {
            return Ok(false);
        };
        let pid = pid as i32;
        match self.signal_client(call.signal, pid) {
            Answer::EndOwnSession => return Err(terminated_by_request()),
            Answer::Value(value) => {
                let binary = values.result_binary(0);
                let mut description = BytesMut::new();
                signal::description(call.signal, binary, &mut description);
                let mut rows = BytesMut::new();
                signal::rows(value, pid, binary, &mut rows);
                let mut bound = BytesMut::new();
                msg::bind_complete(&mut bound);
                self.reply_in_batch(bound);
                self.local_portal = Some(LocalPortal {
                    name: portal.to_vec(),
                    description: description.freeze(),
                    rows: rows.freeze(),
                });
            }
            Answer::Denied => {
                self.fail_in_batch(code::INSUFFICIENT_PRIVILEGE, signal::denied(call.signal))?
            }
            Answer::CancelOwnStatement => self.fail_in_batch(code::QUERY_CANCELED, CANCELED)?,
        }
        Ok(true)
    }

    /// A Describe of a portal pgsplit answers for: its RowDescription (returns false for
    /// any other portal).
    pub(super) fn describe_local_portal(&mut self, portal: &[u8]) -> bool {
        let Some(description) = self.local_portal(portal).map(|p| p.description.clone()) else {
            return false;
        };
        self.reply_in_batch(description.into());
        true
    }

    /// An Execute of a portal pgsplit answers for: its rows, once (returns false for any
    /// other portal).
    pub(super) fn execute_local_portal(&mut self, portal: &[u8]) -> bool {
        let Some(rows) = self.local_portal(portal).map(|p| p.rows.clone()) else {
            return false;
        };
        self.reply_in_batch(rows.into());
        if let Some(p) = self.local_portal.as_mut() {
            // A portal that has returned its row returns no more.
            let mut done = BytesMut::new();
            msg::command_complete("SELECT 0", &mut done);
            p.rows = done.freeze();
        }
        true
    }

    /// A NotificationResponse at `at` in the outbox, just relayed: one the client's own
    /// server connection sent names the client's process id (see
    /// `decide::signal::notification_sender`).
    pub(super) fn name_own_notification(&mut self, at: usize) {
        let Some(server) = self.server.as_ref() else {
            return;
        };
        let Some(field) = self.outbox.get_mut(at + 5..at + 9) else {
            return;
        };
        let sender = i32::from_be_bytes([field[0], field[1], field[2], field[3]]);
        let shown = signal::notification_sender(sender, server.backend_pid, self.ctx.client.pid);
        field.copy_from_slice(&shown.to_be_bytes());
    }

    pub(super) fn local_portal(&self, portal: &[u8]) -> Option<&LocalPortal> {
        self.local_portal.as_ref().filter(|p| p.name == portal)
    }

    /// A reply of pgsplit's own to an extended-protocol message, in order with the replies
    /// the server owes (or, with no server attached, held for the client's Flush or Sync).
    pub(super) fn reply_in_batch(&mut self, reply: BytesMut) {
        if self.server.is_some() {
            self.queue.push(Pending::Synthetic(reply.freeze()));
        } else {
            self.held.extend_from_slice(&reply);
        }
    }
}

/// PostgreSQL's message for a statement cancelled by request.
const CANCELED: &str = "canceling statement due to user request";
