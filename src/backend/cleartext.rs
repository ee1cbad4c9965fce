//! A node's password never crosses the network in clear: when a node asks for it as
//! AuthenticationCleartextPassword over a link without TLS (an impostor would), pgsplit
//! refuses unless the node's `allow_cleartext_password` says otherwise. The decision is
//! [`allowed`]; server connections apply it in their own authentication, and control
//! connections (tokio-postgres, which would answer any request) through [`CleartextGuard`],
//! which watches the node's messages until authentication is over.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The AuthenticationRequest code for a cleartext password.
const CLEARTEXT: u32 = 3;
/// The AuthenticationRequest code for AuthenticationOk.
const OK: u32 = 0;

/// Whether pgsplit may answer a node's request for the password in clear text.
pub fn allowed(link_is_tls: bool, allow_cleartext_password: bool) -> bool {
    link_is_tls || allow_cleartext_password
}

/// The refusal.
#[derive(Debug, Clone, thiserror::Error)]
#[error("node {node} asks for the password in clear text over a link without TLS; pgsplit refuses to send it (set the node's tls, or allow_cleartext_password = true)")]
pub struct CleartextRefused {
    pub node: String,
}

/// What a node's messages so far say about authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Authentication is not over yet.
    Pending,
    /// It is over (AuthenticationOk or an error): nothing more to watch.
    Done,
    /// The node asked for the password in clear text.
    Cleartext,
}

/// Follows the messages a node sends from the start of a connection, across reads of
/// any size, until authentication is over.
#[derive(Debug, Default)]
pub struct AuthWatch {
    /// The type byte and length of the current message, plus the request code of an
    /// AuthenticationRequest ('R').
    header: [u8; 9],
    have: usize,
    /// Bytes of the current message's body still to pass over.
    skip: usize,
    done: bool,
}

impl AuthWatch {
    /// Feeds the next bytes the node sent.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Seen {
        while !self.done && !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let want = if self.have > 0 && self.header[0] == b'R' {
                9
            } else {
                5
            };
            let n = (want - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            // The type byte decides how much header there is.
            let want = if self.header[0] == b'R' { 9 } else { 5 };
            if self.have < want {
                continue;
            }
            let tag = self.header[0];
            let len = u32::from_be_bytes([
                self.header[1],
                self.header[2],
                self.header[3],
                self.header[4],
            ]) as usize;
            self.have = 0;
            if tag == b'R' {
                let code = u32::from_be_bytes([
                    self.header[5],
                    self.header[6],
                    self.header[7],
                    self.header[8],
                ]);
                match code {
                    CLEARTEXT => return Seen::Cleartext,
                    OK => self.done = true,
                    _ => {}
                }
                self.skip = len.saturating_sub(8);
            } else {
                self.done = tag == b'E';
                self.skip = len.saturating_sub(4);
            }
        }
        if self.done {
            Seen::Done
        } else {
            Seen::Pending
        }
    }
}

/// A stream that fails reading, with [`CleartextRefused`], when the node asks for the
/// password in clear text before authentication is over; then it just passes bytes on.
pub struct CleartextGuard<S> {
    inner: S,
    /// None once there is nothing to watch (or nothing to refuse).
    watch: Option<AuthWatch>,
    refused: Option<CleartextRefused>,
    node: String,
}

impl<S> CleartextGuard<S> {
    /// Guards `inner`, a link to `node`, unless cleartext is allowed on it.
    pub fn new(inner: S, node: &str, link_is_tls: bool, allow_cleartext_password: bool) -> Self {
        let watch = (!allowed(link_is_tls, allow_cleartext_password)).then(AuthWatch::default);
        CleartextGuard {
            inner,
            watch,
            refused: None,
            node: node.to_owned(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CleartextGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(refused) = &this.refused {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                refused.clone(),
            )));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(watch)) = (&result, this.watch.as_mut()) {
            match watch.feed(&buf.filled()[before..]) {
                Seen::Pending => {}
                Seen::Done => this.watch = None,
                Seen::Cleartext => {
                    // What the node sent is not handed on: the request is never seen.
                    buf.set_filled(before);
                    let refused = CleartextRefused {
                        node: this.node.clone(),
                    };
                    this.refused = Some(refused.clone());
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        refused,
                    )));
                }
            }
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CleartextGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn auth(code: u32, extra: &[u8]) -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend_from_slice(&((8 + extra.len()) as u32).to_be_bytes());
        m.extend_from_slice(&code.to_be_bytes());
        m.extend_from_slice(extra);
        m
    }

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&((4 + body.len()) as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn cleartext_is_allowed_over_tls_or_when_configured_only() {
        assert!(!allowed(false, false));
        assert!(allowed(true, false));
        assert!(allowed(false, true));
        assert!(allowed(true, true));
    }

    /// Feeds `bytes` in pieces of `step` bytes and returns the last answer.
    fn feed_in_steps(bytes: &[u8], step: usize) -> Seen {
        let mut watch = AuthWatch::default();
        let mut last = Seen::Pending;
        for piece in bytes.chunks(step) {
            last = watch.feed(piece);
            if last == Seen::Cleartext {
                break;
            }
        }
        last
    }

    #[test]
    fn sees_a_cleartext_request_however_the_bytes_are_cut() {
        // A NoticeResponse first, then the request.
        let mut bytes = message(b'N', b"SNOTICE\0\0");
        bytes.extend(auth(CLEARTEXT, b""));
        for step in 1..=bytes.len() {
            assert_eq!(feed_in_steps(&bytes, step), Seen::Cleartext, "step {step}");
        }
    }

    #[test]
    fn scram_and_md5_logins_pass_and_end_the_watch() {
        let mut scram = auth(10, b"SCRAM-SHA-256\0\0");
        scram.extend(auth(11, b"r=abc,s=xyz,i=4096"));
        scram.extend(auth(12, b"v=proof"));
        scram.extend(auth(OK, b""));
        // After AuthenticationOk, anything (even bytes that look like a request) is data.
        scram.extend(auth(CLEARTEXT, b""));
        let md5 = [auth(5, b"salt"), auth(OK, b"")].concat();
        for bytes in [scram, md5] {
            for step in 1..=bytes.len() {
                assert_eq!(feed_in_steps(&bytes, step), Seen::Done, "step {step}");
            }
        }
        let refused = message(b'E', b"SFATAL\0C28P01\0\0");
        assert_eq!(feed_in_steps(&refused, 3), Seen::Done);
        assert_eq!(feed_in_steps(&auth(10, b"SCRAM"), 4), Seen::Pending);
    }

    #[tokio::test]
    async fn the_guard_fails_the_read_and_hides_the_request() {
        let bytes = auth(CLEARTEXT, b"");
        let mut guard = CleartextGuard::new(&bytes[..], "replica1", false, false);
        let mut out = Vec::new();
        let err = guard.read_to_end(&mut out).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(err
            .to_string()
            .contains("node replica1 asks for the password in clear text"));
        assert!(out.is_empty());
        // Allowed (by TLS or by the setting): the bytes pass.
        for (tls, allow) in [(true, false), (false, true)] {
            let mut guard = CleartextGuard::new(&bytes[..], "replica1", tls, allow);
            let mut out = Vec::new();
            guard.read_to_end(&mut out).await.unwrap();
            assert_eq!(out, bytes);
        }
    }
}
