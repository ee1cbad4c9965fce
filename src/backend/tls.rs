//! TLS from pgsplit to the nodes: a node's `tls` setting (libpq's sslmode) as a rustls
//! client configuration, and opening a link to a node — TCP, then, when the mode asks for
//! TLS, the SSLRequest exchange and the handshake. Pooled server connections, control
//! connections and cancel requests all open their links here, so they all use TLS alike.

use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::crypto::{
    ring, verify_tls12_signature, verify_tls13_signature, CryptoProvider,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error as RustlsError, RootCertStore,
    SignatureScheme,
};
use tokio_rustls::TlsConnector;

use super::stream::ServerStream;
use crate::config::{NodeConfig, NodeTlsMode};
use crate::wire::startup::encode_ssl_request;

/// A node's TLS settings, ready to use.
#[derive(Clone)]
pub struct NodeTls {
    pub mode: NodeTlsMode,
    /// `allow_cleartext_password` (see `super::cleartext`).
    pub allow_cleartext_password: bool,
    /// The rustls client and the name the certificate is checked against; none when the
    /// mode is disable.
    session: Option<(TlsConnector, ServerName<'static>)>,
}

impl fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeTls")
            .field("mode", &self.mode)
            .field("allow_cleartext_password", &self.allow_cleartext_password)
            .finish()
    }
}

/// Why a node's TLS settings could not be put to use (at start).
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("node {node}: cannot read tls_ca_file {}: {reason}", path.display())]
    CaFile {
        node: String,
        path: PathBuf,
        reason: String,
    },
    #[error("node {node}: tls_ca_file {} holds no usable CA certificate", path.display())]
    NoCertificate { node: String, path: PathBuf },
    #[error("node {node}: tls = {mode:?} needs tls_ca_file")]
    MissingCaFile { node: String, mode: &'static str },
    #[error("node {node}: {reason}")]
    Rustls { node: String, reason: String },
}

/// Why a link to a node could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// TCP, or the SSLRequest exchange before any TLS.
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the node does not accept TLS (it answered the SSLRequest with N) and its tls setting is {0:?}")]
    TlsRefused(&'static str),
    #[error("the node answered the SSLRequest with {0:?} instead of S or N")]
    BadAnswer(char),
    #[error("TLS handshake failed: {0}")]
    Handshake(io::Error),
}

impl NodeTls {
    /// Plain TCP, cleartext passwords refused.
    pub fn disabled() -> NodeTls {
        NodeTls {
            mode: NodeTlsMode::Disable,
            allow_cleartext_password: false,
            session: None,
        }
    }

    /// The settings of a (validated) `[[nodes]]` entry; reads `tls_ca_file`.
    pub fn from_config(node: &NodeConfig) -> Result<NodeTls, TlsSetupError> {
        // ring builds quickly everywhere; rustls marks it deprecated for lacking
        // post-quantum key exchange, which PostgreSQL links do not need yet.
        #[allow(deprecated)]
        let provider = Arc::new(ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match node.tls {
            NodeTlsMode::Disable => {
                return Ok(NodeTls {
                    allow_cleartext_password: node.allow_cleartext_password,
                    ..NodeTls::disabled()
                })
            }
            NodeTlsMode::Prefer | NodeTlsMode::Require => {
                Arc::new(AnyCertificate(provider.clone()))
            }
            NodeTlsMode::VerifyCa | NodeTlsMode::VerifyFull => {
                let path =
                    node.tls_ca_file
                        .as_deref()
                        .ok_or_else(|| TlsSetupError::MissingCaFile {
                            node: node.name.clone(),
                            mode: node.tls.as_str(),
                        })?;
                let roots = load_roots(&node.name, path)?;
                let chain =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| TlsSetupError::Rustls {
                            node: node.name.clone(),
                            reason: e.to_string(),
                        })?;
                match node.tls {
                    NodeTlsMode::VerifyCa => Arc::new(ChainOnly(chain)),
                    _ => chain,
                }
            }
        };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError::Rustls {
                node: node.name.clone(),
                reason: e.to_string(),
            })?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        // PostgreSQL 17 checks the protocol when the client names one; older servers ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        // Validation makes sure verify-full has a name to check; the other modes check
        // none, so a host rustls cannot parse just sends no server name.
        let name = ServerName::try_from(node.host.as_str())
            .map(|n| n.to_owned())
            .unwrap_or(ServerName::IpAddress(Ipv4Addr::UNSPECIFIED.into()));
        Ok(NodeTls {
            mode: node.tls,
            allow_cleartext_password: node.allow_cleartext_password,
            session: Some((TlsConnector::from(Arc::new(config)), name)),
        })
    }

    /// Connects to `host:port` and sets up TLS as the mode says: nothing for disable;
    /// otherwise an SSLRequest, then the handshake on `S`, or plain on `N` for prefer only.
    pub async fn open(&self, host: &str, port: u16) -> Result<ServerStream, LinkError> {
        let mut tcp = TcpStream::connect((host, port)).await?;
        let _ = tcp.set_nodelay(true);
        keep_alive(&tcp);
        let Some((connector, name)) = &self.session else {
            return Ok(ServerStream::Plain(tcp));
        };
        tcp.write_all(&encode_ssl_request()).await?;
        // Exactly one byte: anything the server sent after it must go through TLS (a
        // man in the middle cannot slip plaintext in ahead of the handshake).
        match tcp.read_u8().await? {
            b'S' => {}
            b'N' if self.mode == NodeTlsMode::Prefer => return Ok(ServerStream::Plain(tcp)),
            b'N' => return Err(LinkError::TlsRefused(self.mode.as_str())),
            other => return Err(LinkError::BadAnswer(other as char)),
        }
        let tls = connector
            .connect(name.clone(), tcp)
            .await
            .map_err(LinkError::Handshake)?;
        Ok(ServerStream::Tls(Box::new(tls)))
    }
}

/// The CA certificates of a PEM file.
fn load_roots(node: &str, path: &Path) -> Result<RootCertStore, TlsSetupError> {
    let read_error = |reason: String| TlsSetupError::CaFile {
        node: node.to_owned(),
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsSetupError::NoCertificate {
            node: node.to_owned(),
            path: path.to_owned(),
        });
    }
    Ok(roots)
}

/// verify-ca: the certificate must chain to the CA, whatever name it carries.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, RustlsError> {
        // The chain is checked before the name, so a name error means the chain is good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(RustlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// prefer and require: encryption without checking who the node is (as libpq). The
/// handshake signatures are still checked, so the session keys belong to the certificate
/// presented.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, RustlsError> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// TCP keepalives on a server socket, so that a node that vanished without closing (a
/// network partition, a crashed host) is noticed: probes after 30 s idle, every 10 s,
/// given up after 3 (about a minute). (A node whose process is stopped still has its
/// kernel answer them: pgsplit's monitor notices that one; see `frontend::session`.)
fn keep_alive(stream: &TcpStream) {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(std::time::Duration::from_secs(30))
        .with_interval(std::time::Duration::from_secs(10))
        .with_retries(3);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "could not set TCP keepalives on a server socket");
    }
}
