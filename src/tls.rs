//! TLS for client connections: `[tls]` made into what a new connection is offered (the
//! mode, and a rustls acceptor for the configured certificate), built at start and again
//! on every reload so new connections get the new certificate.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::{ClientTlsMode, TlsConfig};

/// The ALPN protocol PostgreSQL's clients name (required for direct TLS).
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// The first byte of a TLS handshake record: a client starting TLS at once (PostgreSQL
/// 17's `sslnegotiation=direct`) instead of sending SSLRequest first.
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;

/// Why `[tls]` could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.cert_file {}: {message}", path.display())]
    Cert {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("tls.key_file {}: {message}", path.display())]
    Key {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("tls.cert_file and tls.key_file cannot be used: {0}")]
    Rustls(#[from] rustls::Error),
}

/// What new client connections are offered.
#[derive(Clone)]
pub struct ClientTls {
    pub mode: ClientTlsMode,
    /// Present unless the mode is disable.
    pub acceptor: Option<TlsAcceptor>,
}

impl ClientTls {
    /// No TLS: SSLRequest is answered `N`.
    pub fn disabled() -> ClientTls {
        ClientTls {
            mode: ClientTlsMode::Disable,
            acceptor: None,
        }
    }

    /// Reads the certificate and key when the mode needs them (a validated config names
    /// both then).
    pub fn load(config: &TlsConfig) -> Result<ClientTls, TlsError> {
        let (ClientTlsMode::Allow | ClientTlsMode::Require, Some(cert), Some(key)) =
            (config.client_mode, &config.cert_file, &config.key_file)
        else {
            return Ok(ClientTls::disabled());
        };
        let server = server_config(read_certs(cert)?, read_key(key)?)?;
        Ok(ClientTls {
            mode: config.client_mode,
            acceptor: Some(TlsAcceptor::from(Arc::new(server))),
        })
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let failed = |message: String| TlsError::Cert {
        path: path.to_owned(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| failed(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failed(e.to_string()))?;
    if certs.is_empty() {
        return Err(failed("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// TLS 1.2 and 1.3 with ring's safe defaults, no client certificates, ALPN `postgresql`
/// (a client offering only other protocols is refused during the handshake).
fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, TlsError> {
    // ring builds quickly and everywhere, but rustls now marks it deprecated for lacking
    // post-quantum key exchange; aws-lc-rs would be the one-line change.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(config)
}
