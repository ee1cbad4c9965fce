//! A client's connection ([`crate::link::MaybeTls`] over a rustls server session): one type
//! for login, the session and the admin console, so none of them cares whether it is
//! encrypted.

use std::io;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::link::MaybeTls;

/// A client connection.
pub type ClientStream = MaybeTls<TlsStream<TcpStream>>;

impl ClientStream {
    /// The ALPN protocol TLS negotiated, if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            ClientStream::Plain(_) => None,
            ClientStream::Tls(s) => s.get_ref().1.alpn_protocol(),
        }
    }

    /// Writes all of `bytes` and flushes them. TLS buffers records it could not write at
    /// once, so every write to a client goes through here rather than `write_all` alone.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes).await?;
        self.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    use tokio_rustls::rustls::pki_types::{PrivateKeyDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    /// `send` returns only once TLS has written everything: with small socket buffers and
    /// a client reading slowly, rustls keeps records it could not write yet, and the last
    /// message would stay there (nothing else writes to an idle client).
    #[tokio::test]
    async fn send_over_tls_delivers_everything_to_a_slow_reader() {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let server = crate::tls::server_config(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));

        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_send_buffer_size(4096).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1).unwrap();
        let addr = listener.local_addr().unwrap();
        let payload = vec![7u8; 1 << 20];
        let expected = payload.len() + 3;
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut stream = ClientStream::Tls(Box::new(acceptor.accept(tcp).await.unwrap()));
            stream.send(&payload).await.unwrap();
            stream.send(b"end").await.unwrap();
            // Keep the connection open (and idle) until the client has read it all.
            let _ = done_rx.await;
        });

        let mut roots = RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let client = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = socket.connect(addr).await.unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let mut received = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        let read_all = async {
            while received.len() < expected {
                let n = tls.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed after {} bytes", received.len());
                received.extend_from_slice(&chunk[..n]);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), read_all)
            .await
            .unwrap_or_else(|_| panic!("only {} of {expected} bytes arrived", received.len()));
        assert!(received.ends_with(b"end"));
        let _ = done_tx.send(());
    }
}
