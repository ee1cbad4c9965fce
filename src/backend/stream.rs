//! The byte stream of a link to a node ([`crate::link::MaybeTls`] over a rustls client
//! session), so the server connection, the control connections and cancel requests do not
//! care whether it is encrypted; and the halves it splits into.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{tcp, TcpStream};
use tokio_rustls::client::TlsStream;

use crate::link::MaybeTls;

/// A link to a node.
pub type ServerStream = MaybeTls<TlsStream<TcpStream>>;

/// The reading half of [`ServerStream::split`].
pub enum ReadHalf<'a> {
    Plain(tcp::ReadHalf<'a>),
    Tls(tokio::io::ReadHalf<&'a mut TlsStream<TcpStream>>),
}

/// The writing half of [`ServerStream::split`]. A TLS half may keep written bytes in the
/// session until it is flushed.
pub enum WriteHalf<'a> {
    Plain(tcp::WriteHalf<'a>),
    Tls(tokio::io::WriteHalf<&'a mut TlsStream<TcpStream>>),
}

impl ServerStream {
    /// Borrows a reading and a writing half that can be used at the same time (for
    /// reading replies while a large write is blocked). The plain halves are `TcpStream`'s
    /// own, free; the TLS halves share the session behind a lock.
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        match self {
            ServerStream::Plain(s) => {
                let (r, w) = s.split();
                (ReadHalf::Plain(r), WriteHalf::Plain(w))
            }
            ServerStream::Tls(s) => {
                let (r, w) = tokio::io::split(&mut **s);
                (ReadHalf::Tls(r), WriteHalf::Tls(w))
            }
        }
    }

    /// True when the link has nothing unread and is not closed, checked without waiting.
    /// A byte that was there is consumed: a link that is not quiet is not used again.
    pub fn is_quiet(&mut self) -> bool {
        let mut probe = [0u8; 1];
        match self {
            ServerStream::Plain(s) => {
                matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            // One poll with a waker that does nothing: the session reads what the socket
            // holds (a close_notify, an error, data) and says Pending when that is nothing.
            ServerStream::Tls(s) => {
                let mut cx = Context::from_waker(Waker::noop());
                let mut buf = ReadBuf::new(&mut probe);
                Pin::new(&mut **s).poll_read(&mut cx, &mut buf).is_pending()
            }
        }
    }
}

impl AsyncRead for ReadHalf<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ReadHalf::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Plain(s) => Pin::new(s).poll_write(cx, buf),
            WriteHalf::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Plain(s) => Pin::new(s).poll_flush(cx),
            WriteHalf::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Plain(s) => Pin::new(s).poll_shutdown(cx),
            WriteHalf::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
