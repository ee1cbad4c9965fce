//! Writing to the server and to the client, and the buffers the session reads and writes
//! through: a large message's allocation is given back once it has gone.

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Session, SessionEnd};
use crate::backend::ServerConn;
use std::time::Instant;

impl Session {
    /// Writes what is queued for the server. While the write is blocked, replies are
    /// read into the server's buffer (up to a bound), so a client that pipelines a lot
    /// cannot deadlock with a server that is blocked sending results.
    pub(super) async fn flush_server(&mut self) -> Result<(), SessionEnd> {
        let Some(server) = self.server.as_mut() else {
            self.to_server.clear();
            self.ctx.client.sent(false);
            return Ok(());
        };
        let server: &mut ServerConn = server;
        let mut written = 0;
        let mut failure = None;
        // A TLS session may hold written bytes until flushed; a plain socket holds none.
        let mut flushed = !server.stream.is_tls();
        let len = self.to_server.len();
        let (mut reader, mut writer) = server.stream.split();
        while written < len || (len > 0 && !flushed) {
            reserve(&mut server.read_buf);
            let room = server.read_buf.len() < READ_AHEAD_LIMIT;
            tokio::select! {
                biased;
                w = write_or_flush(&mut writer, &self.to_server[written..]) => match w {
                    Ok(Some(0)) => failure = Some(std::io::ErrorKind::WriteZero.into()),
                    Ok(Some(n)) => written += n,
                    Ok(None) => flushed = true,
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
        if len > 0 {
            // The server owes a reply from now: its silence is counted from here, not
            // from the last time it sent something (maybe long ago, before a restart).
            self.stall_seen.sent(Instant::now());
        }
        if let Some(e) = failure {
            return Err(self.server_lost(e));
        }
        if let Some(target) = self.ctx.client.sent(!self.queue.is_empty()) {
            // A cancel came while the statement was on its way: it is on the server now.
            tracing::debug!(client = self.ctx.client.pid, node = %target.node.name, "sending a cancel request that came before the statement reached its server");
            tokio::spawn(async move {
                if let Err(e) = crate::clients::send_cancel(&target).await {
                    tracing::warn!(error = %e, "could not send cancel request");
                }
            });
        }
        Ok(())
    }

    /// At the end of a round: gives the server back if the client is idle, then writes
    /// the outbox to the client. In this order, so that the server is back in its pool
    /// (and a replica's lease has ended) before the client sees the reply: by the time it
    /// can send anything else, through this connection or another, both are free for it.
    pub(super) async fn release_and_reply(&mut self) -> Result<(), SessionEnd> {
        self.release_if_idle();
        self.flush_client().await
    }

    /// Writes the outbox to the client, unless output is held (see `hold_from`): then the
    /// whole reply waits for its ReadyForQuery, and the client gets it in one piece, as
    /// PostgreSQL sends it (drivers that count round trips see one).
    pub(super) async fn flush_client(&mut self) -> Result<(), SessionEnd> {
        if self.hold_from.is_none() && !self.outbox.is_empty() {
            self.client.send(&self.outbox).await?;
            self.outbox.clear();
        }
        shrink(&mut self.outbox);
        Ok(())
    }
}

/// How much of a server's replies pgsplit reads ahead while it is still writing to it.
const READ_AHEAD_LIMIT: usize = 64 * 1024 * 1024;

/// Server messages larger than this (rows, COPY chunks) are relayed as they arrive.
pub(super) const STREAM_FROM: usize = 256 * 1024;

/// A buffer's normal size; one that grew past [`SHRINK_ABOVE`] for a large message is
/// given back once empty.
pub(super) const BUFFER_SIZE: usize = 16 * 1024;
pub(super) const SHRINK_ABOVE: usize = 1024 * 1024;

/// Writes some of `bytes` (`Some(count)`), or flushes when there is nothing left to write
/// (`None`): one future, so it can race reads in `flush_server`.
async fn write_or_flush(
    writer: &mut crate::backend::stream::WriteHalf<'_>,
    bytes: &[u8],
) -> std::io::Result<Option<usize>> {
    if bytes.is_empty() {
        writer.flush().await.map(|()| None)
    } else {
        writer.write(bytes).await.map(Some)
    }
}

/// Keeps room to read into.
pub(super) fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(BUFFER_SIZE);
    }
}

/// Gives an empty buffer that grew for a large message back its normal size. (Its
/// capacity is what is left of the allocation after the last message was split off; the
/// allocation is freed once nothing refers to it.)
pub(super) fn shrink(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() > SHRINK_ABOVE {
        *buf = BytesMut::with_capacity(BUFFER_SIZE);
    }
}
