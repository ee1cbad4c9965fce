//! TLS for client connections: `[tls]` made into what a new connection is offered (the
//! mode, and a rustls acceptor for the configured certificate), built at start and again
//! on every reload so new connections get the new certificate. Also the certificate's
//! `tls-server-end-point` hash (RFC 5929), the channel-binding data of SCRAM-SHA-256-PLUS.

use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256, Sha384, Sha512};
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
    /// The certificate's `tls-server-end-point` hash; none when its signature algorithm
    /// names no hash pgsplit knows (then SCRAM-SHA-256-PLUS is not offered).
    pub end_point: Option<Arc<[u8]>>,
}

impl ClientTls {
    /// No TLS: SSLRequest is answered `N`.
    pub fn disabled() -> ClientTls {
        ClientTls {
            mode: ClientTlsMode::Disable,
            acceptor: None,
            end_point: None,
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
        let certs = read_certs(cert)?;
        let end_point = tls_server_end_point(&certs[0]);
        if end_point.is_none() {
            tracing::warn!(path = %cert.display(), "the certificate's signature algorithm is not RSA or ECDSA with MD5, SHA-1 or SHA-2: SCRAM-SHA-256-PLUS (channel binding) is not offered");
        }
        let server = server_config(certs, read_key(key)?)?;
        Ok(ClientTls {
            mode: config.client_mode,
            acceptor: Some(TlsAcceptor::from(Arc::new(server))),
            end_point: end_point.map(Arc::from),
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
pub(crate) fn server_config(
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

/// The `tls-server-end-point` channel-binding data of a certificate (RFC 5929 section
/// 4.1): its DER hashed with the hash of its signature algorithm, SHA-256 when that is
/// MD5 or SHA-1. None for algorithms without a single hash (RSASSA-PSS, EdDSA), as
/// PostgreSQL.
pub fn tls_server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    let digest = match signature_algorithm(cert)? {
        // {md5,sha1,sha256}WithRSAEncryption, ecdsa-with-SHA1, ecdsa-with-SHA256
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x04 | 0x05 | 0x0b]
        | [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01]
        | [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02] => Sha256::digest(cert).to_vec(),
        // sha384WithRSAEncryption, ecdsa-with-SHA384
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c]
        | [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03] => Sha384::digest(cert).to_vec(),
        // sha512WithRSAEncryption, ecdsa-with-SHA512
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d]
        | [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04] => Sha512::digest(cert).to_vec(),
        _ => return None,
    };
    Some(digest)
}

/// The OID (its DER content) of a certificate's signatureAlgorithm:
/// `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm SEQUENCE { OID, .. }, .. }`.
fn signature_algorithm(cert: &[u8]) -> Option<&[u8]> {
    let (cert, _) = der(cert, 0x30)?;
    let (_tbs, rest) = der(cert, 0x30)?;
    let (algorithm, _) = der(rest, 0x30)?;
    let (oid, _) = der(algorithm, 0x06)?;
    Some(oid)
}

/// One DER element with this tag at the start of `input`: its content and what follows.
fn der(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        0..=0x7f => (first as usize, rest),
        0x81..=0x84 => {
            let n = (first & 0x7f) as usize;
            let bytes = rest.get(..n)?;
            let len = bytes.iter().fold(0usize, |acc, &b| (acc << 8) | b as usize);
            (len, &rest[n..])
        }
        _ => return None,
    };
    let content = rest.get(..len)?;
    Some((content, &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SignatureAlgorithm};

    fn self_signed(alg: &'static SignatureAlgorithm) -> Vec<u8> {
        let key = KeyPair::generate_for(alg).unwrap();
        let params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn end_point_hash_follows_the_signature_algorithm() {
        let p256 = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(
            tls_server_end_point(&p256),
            Some(Sha256::digest(&p256).to_vec())
        );
        let p384 = self_signed(&rcgen::PKCS_ECDSA_P384_SHA384);
        assert_eq!(
            tls_server_end_point(&p384),
            Some(Sha384::digest(&p384).to_vec())
        );
        // Ed25519 names no hash: no channel binding, as PostgreSQL.
        let ed25519 = self_signed(&rcgen::PKCS_ED25519);
        assert_eq!(tls_server_end_point(&ed25519), None);
    }

    #[test]
    fn der_reader_refuses_what_is_not_a_certificate() {
        for junk in [
            &b""[..],
            b"\x30",
            b"\x30\x05\x30\x00",
            b"\x30\x85\x00",
            b"\x04\x00",
        ] {
            assert_eq!(tls_server_end_point(junk), None);
        }
        // Long-form lengths are read.
        assert_eq!(
            der(&[0x04, 0x81, 0x01, 0xaa, 0xbb], 0x04),
            Some((&[0xaa][..], &[0xbb][..]))
        );
    }
}
