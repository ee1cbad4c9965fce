//! A client's way in: the first packet (SSLRequest answered `S` and TLS started when
//! `[tls]` allows it, else `N`; GSSENCRequest answered `N`; a direct TLS handshake; a
//! CancelRequest passed on), the StartupMessage, and authentication with SCRAM-SHA-256,
//! md5 or trust against the users in config.toml. Failures answer with the error
//! PostgreSQL would send (28P01, 3D000, 08P01, 28000).

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::auth::{verify_md5_response, ScramSecret, ScramServer, MECHANISMS, MECHANISMS_PLUS};
use crate::config::{ClientAuth, DatabaseConfig, UserConfig};
use crate::frontend::stream::ClientStream;
use crate::net::{read_frame, ReadError};
use crate::tls::{ALPN_POSTGRESQL, TLS_HANDSHAKE_BYTE};
use crate::wire::error::code;
use crate::wire::frame::{cstr, int32};
use crate::wire::message as msg;
use crate::wire::startup::{self, StartupMessage, StartupPacket};
use crate::wire::PgError;

/// Authentication messages from clients are small; refuse anything bigger.
const AUTH_MESSAGE_LIMIT: usize = 16 * 1024;

/// What a new connection turned out to be.
pub enum Accepted {
    /// A cancel request, already passed on.
    Cancel { pid: i32, secret: Vec<u8> },
    /// A startup message, not yet authenticated.
    Startup(StartupMessage),
}

/// Why a login failed. `Refused` errors are sent to the client before closing.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("{0}")]
    Refused(PgError),
    #[error("client went away during login: {0}")]
    Gone(String),
    #[error("client did not finish logging in within client_login_timeout")]
    Timeout,
    #[error("TLS handshake failed: {0}")]
    Tls(String),
}

impl From<std::io::Error> for LoginError {
    fn from(e: std::io::Error) -> Self {
        LoginError::Gone(e.to_string())
    }
}

impl From<ReadError> for LoginError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Frame(f) => {
                LoginError::Refused(PgError::fatal(code::PROTOCOL_VIOLATION, f.to_string()))
            }
            other => LoginError::Gone(other.to_string()),
        }
    }
}

fn refused(code: &'static str, message: impl Into<String>) -> LoginError {
    LoginError::Refused(PgError::fatal(code, message))
}

/// A connection that ended during its first packets: the error, and the stream when
/// there is one to send it on.
pub type StartupFailure = (Option<ClientStream>, LoginError);

/// Reads first packets until a StartupMessage or CancelRequest arrives, starting TLS on
/// the way when `tls` is given (an SSLRequest answered `S`, or a TLS handshake straight
/// away); without it SSLRequest is answered `N`. GSSENCRequest is always answered `N`.
pub async fn read_startup(
    tcp: TcpStream,
    tls: Option<&TlsAcceptor>,
    timeout: Duration,
) -> Result<(ClientStream, Accepted), StartupFailure> {
    tokio::time::timeout(timeout, read_startup_inner(tcp, tls))
        .await
        .map_err(|_| (None, LoginError::Timeout))?
}

async fn read_startup_inner(
    tcp: TcpStream,
    tls: Option<&TlsAcceptor>,
) -> Result<(ClientStream, Accepted), StartupFailure> {
    let mut stream = match tls {
        Some(acceptor) if first_byte(&tcp).await? == TLS_HANDSHAKE_BYTE => {
            let stream = handshake(acceptor, tcp).await?;
            if stream.alpn() != Some(ALPN_POSTGRESQL) {
                return Err((
                    Some(stream),
                    refused(
                        code::PROTOCOL_VIOLATION,
                        "direct TLS connection without ALPN protocol \"postgresql\"",
                    ),
                ));
            }
            stream
        }
        _ => ClientStream::Plain(tcp),
    };
    // SSLRequest and GSSENCRequest may each come once before the StartupMessage.
    for _ in 0..3 {
        let packet = match read_packet(&mut stream).await {
            Ok(packet) => packet,
            Err(e) => return Err((Some(stream), e)),
        };
        match packet {
            StartupPacket::SslRequest => {
                stream = match (stream, tls) {
                    (ClientStream::Plain(mut tcp), Some(acceptor)) => {
                        tcp.write_all(b"S").await.map_err(|e| (None, e.into()))?;
                        handshake(acceptor, tcp).await?
                    }
                    (mut stream, _) => match stream.send(b"N").await {
                        Ok(()) => stream,
                        Err(e) => return Err((None, e.into())),
                    },
                };
            }
            StartupPacket::GssEncRequest => {
                if let Err(e) = stream.send(b"N").await {
                    return Err((None, e.into()));
                }
            }
            StartupPacket::Cancel { pid, secret } => {
                return Ok((stream, Accepted::Cancel { pid, secret }))
            }
            StartupPacket::Startup(m) => return Ok((stream, Accepted::Startup(m))),
        }
    }
    Err((
        Some(stream),
        refused(
            code::PROTOCOL_VIOLATION,
            "too many encryption requests before the startup packet",
        ),
    ))
}

/// The first byte the client sent, left in the socket.
async fn first_byte(tcp: &TcpStream) -> Result<u8, StartupFailure> {
    let mut byte = [0u8; 1];
    match tcp.peek(&mut byte).await {
        Ok(0) => Err((None, LoginError::Gone("connection closed".into()))),
        Ok(_) => Ok(byte[0]),
        Err(e) => Err((None, e.into())),
    }
}

async fn handshake(acceptor: &TlsAcceptor, tcp: TcpStream) -> Result<ClientStream, StartupFailure> {
    match acceptor.accept(tcp).await {
        Ok(tls) => Ok(ClientStream::Tls(Box::new(tls))),
        Err(e) => Err((None, LoginError::Tls(e.to_string()))),
    }
}

/// Reads and parses one first packet (no type byte; its length comes first).
async fn read_packet(stream: &mut ClientStream) -> Result<StartupPacket, LoginError> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).await?;
    let len = startup::packet_len(header)
        .map_err(|e| refused(code::PROTOCOL_VIOLATION, e.to_string()))?;
    let mut packet = vec![0u8; len];
    packet[..4].copy_from_slice(&header);
    stream.read_exact(&mut packet[4..]).await?;
    startup::parse(&packet).map_err(|e| refused(code::PROTOCOL_VIOLATION, e.to_string()))
}

/// Tells a client that asked for a newer minor protocol or `_pq_` options what pgsplit
/// speaks, as PostgreSQL does, so it can carry on with 3.0.
pub fn negotiate(startup: &StartupMessage, out: &mut BytesMut) {
    let options: Vec<String> = startup
        .params
        .iter()
        .filter(|(k, _)| k.starts_with("_pq_."))
        .map(|(k, _)| k.clone())
        .collect();
    if startup.minor > 0 || !options.is_empty() {
        msg::negotiate_protocol_version(options, out);
    }
}

/// Checks the client's password with the user's method. `user` is `None` for a user
/// pgsplit does not know: it goes through a SCRAM exchange that cannot succeed, so the
/// answer is the same as for a wrong password. `channel_binding` is the connection's
/// `tls-server-end-point` data when it has one (a TLS client): SCRAM-SHA-256-PLUS is
/// offered then.
pub async fn authenticate(
    stream: &mut ClientStream,
    user_name: &str,
    user: Option<(&UserConfig, &ScramSecret)>,
    channel_binding: Option<&[u8]>,
    timeout: Duration,
) -> Result<(), LoginError> {
    let exchange = authenticate_inner(stream, user_name, user, channel_binding);
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| LoginError::Timeout)?
}

async fn authenticate_inner(
    stream: &mut ClientStream,
    user_name: &str,
    user: Option<(&UserConfig, &ScramSecret)>,
    channel_binding: Option<&[u8]>,
) -> Result<(), LoginError> {
    let failed = || {
        refused(
            code::INVALID_PASSWORD,
            format!("password authentication failed for user \"{user_name}\""),
        )
    };
    let mut out = BytesMut::new();
    let mut inbox = BytesMut::new();
    match user {
        Some((u, _)) if u.auth == ClientAuth::Trust => {}
        Some((u, _)) if u.auth == ClientAuth::Md5 => {
            let salt: [u8; 4] = rand::random();
            msg::auth_md5(salt, &mut out);
            stream.send(&out).await?;
            out.clear();
            let frame = read_password(stream, &mut inbox).await?;
            let response = cstr(frame.body()).map(|(r, _)| r).unwrap_or_default();
            let stored = u.password.as_deref().unwrap_or_default();
            if !verify_md5_response(stored, user_name, salt, response) {
                return Err(failed());
            }
        }
        _ => {
            let secret = match user {
                Some((_, secret)) => secret.clone(),
                None => ScramSecret::mock(user_name),
            };
            let mut scram = ScramServer::with_random_nonce(secret);
            let mechanisms = match channel_binding {
                Some(end_point) => {
                    scram = scram.with_channel_binding(end_point.to_vec());
                    MECHANISMS_PLUS
                }
                None => MECHANISMS,
            };
            msg::auth_sasl(mechanisms, &mut out);
            stream.send(&out).await?;
            out.clear();
            let frame = read_password(stream, &mut inbox).await?;
            let (mechanism, data) = read_sasl_initial(frame.body()).ok_or_else(|| {
                refused(
                    code::PROTOCOL_VIOLATION,
                    "malformed SASLInitialResponse message",
                )
            })?;
            let first = scram
                .client_first(&mechanism, data)
                .map_err(|e| sasl_error(e, &failed))?;
            msg::auth_sasl_continue(first, &mut out);
            stream.send(&out).await?;
            out.clear();
            let frame = read_password(stream, &mut inbox).await?;
            let last = scram
                .client_final(frame.body())
                .map_err(|e| sasl_error(e, &failed))?;
            msg::auth_sasl_final(last, &mut out);
        }
    }
    msg::auth_ok(&mut out);
    stream.send(&out).await?;
    Ok(())
}

fn sasl_error(e: crate::auth::AuthError, failed: &dyn Fn() -> LoginError) -> LoginError {
    if e.is_wrong_password() {
        failed()
    } else {
        LoginError::Refused(PgError::fatal(
            match e.sqlstate() {
                "0A000" => code::FEATURE_NOT_SUPPORTED,
                "28000" => code::INVALID_AUTHORIZATION,
                _ => code::PROTOCOL_VIOLATION,
            },
            e.to_string(),
        ))
    }
}

/// Reads a password-family message (`p`); anything else is a protocol violation.
async fn read_password(
    stream: &mut ClientStream,
    inbox: &mut BytesMut,
) -> Result<crate::wire::Frame, LoginError> {
    let frame = read_frame(stream, inbox, AUTH_MESSAGE_LIMIT).await?;
    if frame.tag != b'p' {
        return Err(refused(
            code::PROTOCOL_VIOLATION,
            format!("expected password response, got message type {}", frame.tag),
        ));
    }
    Ok(frame)
}

/// Reads a SASLInitialResponse body: the mechanism and the client's first message.
fn read_sasl_initial(body: &[u8]) -> Option<(String, &[u8])> {
    let (mechanism, rest) = cstr(body)?;
    let (len, data) = int32(rest)?;
    let data = if len < 0 {
        &[][..]
    } else {
        data.get(..len as usize)?
    };
    Some((String::from_utf8_lossy(mechanism).into_owned(), data))
}

/// The user and database a startup message asks for, after the checks PostgreSQL makes.
pub fn requested(startup: &StartupMessage) -> Result<(&str, &str), LoginError> {
    let user = startup
        .param("user")
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            refused(
                code::INVALID_AUTHORIZATION,
                "no PostgreSQL user name specified in startup packet",
            )
        })?;
    if startup
        .param("replication")
        .is_some_and(|r| r != "false" && r != "0" && r != "off")
    {
        return Err(refused(
            code::FEATURE_NOT_SUPPORTED,
            "pgsplit does not support replication connections",
        ));
    }
    let database = startup
        .param("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(user);
    Ok((user, database))
}

/// The configured database a client asked for, or PostgreSQL's 3D000 error.
pub fn find_database<'a>(
    databases: &'a [DatabaseConfig],
    name: &str,
) -> Result<&'a DatabaseConfig, LoginError> {
    databases.iter().find(|d| d.name == name).ok_or_else(|| {
        refused(
            code::UNKNOWN_DATABASE,
            format!("database \"{name}\" does not exist"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sasl_initial_response() {
        let mut body = b"SCRAM-SHA-256\0".to_vec();
        body.extend_from_slice(&5i32.to_be_bytes());
        body.extend_from_slice(b"n,,n=");
        let (mech, data) = read_sasl_initial(&body).unwrap();
        assert_eq!(mech, "SCRAM-SHA-256");
        assert_eq!(data, b"n,,n=");
        body.truncate(body.len() - 1);
        assert!(read_sasl_initial(&body).is_none());
    }

    #[test]
    fn user_is_required_and_database_defaults_to_it() {
        let m = |params: &[(&str, &str)]| StartupMessage {
            major: 3,
            minor: 0,
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        assert_eq!(requested(&m(&[("user", "app")])).unwrap(), ("app", "app"));
        assert_eq!(
            requested(&m(&[("user", "app"), ("database", "db")])).unwrap(),
            ("app", "db")
        );
        match requested(&m(&[("database", "db")])) {
            Err(LoginError::Refused(e)) => assert_eq!(e.code, "28000"),
            _ => panic!("user must be required"),
        }
        match requested(&m(&[("user", "app"), ("replication", "true")])) {
            Err(LoginError::Refused(e)) => assert_eq!(e.code, "0A000"),
            _ => panic!("replication must be refused"),
        }
    }

    #[test]
    fn unknown_database_is_3d000() {
        let dbs = vec![DatabaseConfig {
            name: "app".into(),
            server_database: None,
        }];
        assert!(find_database(&dbs, "app").is_ok());
        match find_database(&dbs, "nope") {
            Err(LoginError::Refused(e)) => {
                assert_eq!(e.code, "3D000");
                assert_eq!(e.message, "database \"nope\" does not exist");
            }
            _ => panic!(),
        }
    }

    #[test]
    fn negotiates_newer_minor_versions() {
        let mut out = BytesMut::new();
        let m = StartupMessage {
            major: 3,
            minor: 2,
            params: vec![("_pq_.x".into(), "1".into())],
        };
        negotiate(&m, &mut out);
        assert_eq!(out[0], b'v');
        let mut out = BytesMut::new();
        negotiate(
            &StartupMessage {
                major: 3,
                minor: 0,
                params: vec![],
            },
            &mut out,
        );
        assert!(out.is_empty());
    }
}
