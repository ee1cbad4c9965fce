//! One connection from pgsplit to a PostgreSQL node: connect (over TLS when the node's
//! settings say so), authenticate (SCRAM-SHA-256, md5 or cleartext, as the server asks),
//! collect ParameterStatus and BackendKeyData, and keep the state pooling needs
//! (transaction status, applied settings, prepared statements).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{self, ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::AsyncWriteExt;

use super::cleartext::{self, CleartextRefused};
use super::stream::ServerStream;
use super::tls::{LinkError, NodeTls, TlsSetupError};
use crate::config::NodeConfig;
use crate::net::{read_frame, ReadError};
use crate::prepared::ServerStatements;
use crate::wire::error::parse_error_fields;
use crate::wire::frame::{cstr, int32};
use crate::wire::message::{read_backend_key, read_parameter_status, read_ready, TxStatus};
use crate::wire::startup::encode_startup;

/// Server messages are trusted, but a sane bound keeps a broken server from exhausting
/// memory: PostgreSQL itself never sends a message over 1 GB.
pub const SERVER_MESSAGE_LIMIT: usize = 1 << 30;

/// Where a node listens, its name for logs and errors, and how links to it use TLS.
#[derive(Debug, Clone)]
pub struct NodeAddr {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub tls: NodeTls,
}

impl NodeAddr {
    /// The node of a (validated) `[[nodes]]` entry; reads its `tls_ca_file`.
    pub fn from_config(node: &NodeConfig) -> Result<NodeAddr, TlsSetupError> {
        Ok(NodeAddr {
            name: node.name.clone(),
            host: node.host.clone(),
            port: node.port,
            tls: NodeTls::from_config(node)?,
        })
    }

    /// Opens a link to the node, with TLS as its settings say, ready for a startup
    /// message or a cancel request.
    pub async fn open(&self) -> Result<ServerStream, BackendError> {
        self.tls
            .open(&self.host, self.port)
            .await
            .map_err(|e| match e {
                LinkError::Io(source) => BackendError::Connect {
                    node: self.name.clone(),
                    addr: format!("{}:{}", self.host, self.port),
                    source,
                },
                e => BackendError::Tls {
                    node: self.name.clone(),
                    addr: format!("{}:{}", self.host, self.port),
                    source: e,
                },
            })
    }
}

/// Why a server connection could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("could not connect to node {node} ({addr}): {source}")]
    Connect {
        node: String,
        addr: String,
        source: std::io::Error,
    },
    #[error("could not set up TLS with node {node} ({addr}): {source}")]
    Tls {
        node: String,
        addr: String,
        source: LinkError,
    },
    #[error(transparent)]
    CleartextRefused(#[from] CleartextRefused),
    #[error("timed out connecting to node {node}")]
    ConnectTimeout { node: String },
    #[error("node {node} said: {message}")]
    Server {
        node: String,
        severity: String,
        code: String,
        message: String,
    },
    #[error("node {node} asked for an authentication method pgsplit does not support ({method})")]
    UnsupportedAuth { node: String, method: i32 },
    #[error("authentication with node {node} failed: {reason}")]
    Auth { node: String, reason: String },
    #[error("lost connection to node {node}: {source}")]
    Read { node: String, source: ReadError },
    #[error("node {node} sent an unexpected message '{tag}' during startup")]
    Unexpected { node: String, tag: char },
    #[error("node {node} did not answer within {limit:?}")]
    ReplyTimeout {
        node: String,
        limit: std::time::Duration,
    },
}

impl BackendError {
    /// The SQLSTATE a client should see for this failure.
    pub fn sqlstate(&self) -> &str {
        match self {
            BackendError::Server { code, .. } if !code.is_empty() => code,
            BackendError::Auth { .. }
            | BackendError::UnsupportedAuth { .. }
            | BackendError::CleartextRefused(_) => "08004",
            _ => crate::wire::error::code::CANNOT_CONNECT,
        }
    }
}

/// What connecting needs besides the address.
/// `Debug` hides the password.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: Option<String>,
    pub database: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &crate::config::hidden_secret(&self.password))
            .field("database", &self.database)
            .finish()
    }
}

/// A live, authenticated server connection.
pub struct ServerConn {
    pub stream: ServerStream,
    /// Bytes read from the server and not yet handled.
    pub read_buf: BytesMut,
    pub node: Arc<NodeAddr>,
    /// The server's process id and secret key, for cancel requests.
    pub backend_pid: i32,
    pub backend_secret: Arc<[u8]>,
    /// The latest ParameterStatus message the server sent for each parameter.
    pub parameters: BTreeMap<String, Bytes>,
    /// The transaction status of the last ReadyForQuery.
    pub status: TxStatus,
    /// Session settings pgsplit applied on a client's behalf: name -> SET statement.
    pub settings: BTreeMap<String, String>,
    /// The prepared statements that exist on this server.
    pub statements: ServerStatements,
    /// Whose unnamed statement this server holds: the id pgsplit gave the client's unnamed
    /// Parse (see `frontend::session`), or `None` when it holds none a client may use.
    pub unnamed: Option<u64>,
    /// pgsplit's own prepared statement for the write position (see `crate::causal`)
    /// exists on this server.
    pub position_prepared: bool,
    /// How long pgsplit's own statements on it (settings, resets) may wait for their
    /// reply: the connect timeout.
    pub reply_limit: Duration,
    /// Set when the connection can no longer be trusted (IO failure, protocol confusion,
    /// a client that left mid-transaction); a broken connection is never pooled again.
    pub broken: bool,
    /// Set when session-level state pgsplit does not track may exist on the server
    /// (session pooling, pinned clients): it is reset with DISCARD ALL before reuse.
    pub needs_discard: bool,
    /// The client (by the process id pgsplit gave it) whose statements may have left
    /// sequence values in this session: `currval` and `lastval`, which `nextval` and
    /// `setval` set, also through a column default or a trigger. Another client gets the
    /// connection only after DISCARD SEQUENCES (see `frontend::session`).
    pub sequences_of: Option<i32>,
}

impl ServerConn {
    /// Connects to `node` and completes startup and authentication.
    pub async fn connect(
        node: Arc<NodeAddr>,
        creds: &Credentials,
        timeout: Duration,
        max_statements: usize,
    ) -> Result<ServerConn, BackendError> {
        match tokio::time::timeout(
            timeout,
            Self::connect_inner(node.clone(), creds, max_statements),
        )
        .await
        {
            Ok(result) => result.map(|mut conn| {
                conn.reply_limit = timeout;
                conn
            }),
            Err(_) => Err(BackendError::ConnectTimeout {
                node: node.name.clone(),
            }),
        }
    }

    async fn connect_inner(
        node: Arc<NodeAddr>,
        creds: &Credentials,
        max_statements: usize,
    ) -> Result<ServerConn, BackendError> {
        let stream = node.open().await?;
        let mut conn = ServerConn {
            stream,
            read_buf: BytesMut::with_capacity(16 * 1024),
            node,
            backend_pid: 0,
            backend_secret: Arc::from(&[][..]),
            parameters: BTreeMap::new(),
            status: TxStatus::Idle,
            settings: BTreeMap::new(),
            statements: ServerStatements::new(max_statements),
            unnamed: None,
            position_prepared: false,
            reply_limit: Duration::from_secs(5),
            broken: false,
            needs_discard: false,
            sequences_of: None,
        };
        let startup = encode_startup(&[
            ("user", &creds.user),
            ("database", &creds.database),
            ("application_name", "pgsplit"),
        ]);
        conn.write(&startup).await?;
        conn.authenticate(creds).await?;
        conn.finish_startup().await?;
        Ok(conn)
    }

    /// Reads one message from the server.
    pub async fn read_message(&mut self) -> Result<crate::wire::Frame, BackendError> {
        read_frame(&mut self.stream, &mut self.read_buf, SERVER_MESSAGE_LIMIT)
            .await
            .map_err(|source| BackendError::Read {
                node: self.node.name.clone(),
                source,
            })
    }

    /// Writes bytes to the server (and flushes them out of a TLS session).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), BackendError> {
        let mut result = self.stream.write_all(bytes).await;
        if result.is_ok() && self.stream.is_tls() {
            result = self.stream.flush().await;
        }
        result.map_err(|e| BackendError::Read {
            node: self.node.name.clone(),
            source: ReadError::Io(e),
        })
    }

    fn server_error(&self, body: &[u8]) -> BackendError {
        let (severity, code, message) = parse_error_fields(body);
        BackendError::Server {
            node: self.node.name.clone(),
            severity,
            code,
            message,
        }
    }

    async fn authenticate(&mut self, creds: &Credentials) -> Result<(), BackendError> {
        let node = self.node.name.clone();
        let password = || {
            creds.password.clone().ok_or_else(|| BackendError::Auth {
                node: node.clone(),
                reason: "the server asks for a password and none is configured".into(),
            })
        };
        let encoding = |e: std::io::Error| BackendError::Auth {
            node: node.clone(),
            reason: format!("could not encode the reply: {e}"),
        };
        let mut scram: Option<ScramSha256> = None;
        loop {
            let msg = self.read_message().await?;
            match msg.tag {
                b'E' => return Err(self.server_error(msg.body())),
                b'R' => {}
                b'N' => continue,
                other => {
                    return Err(BackendError::Unexpected {
                        node,
                        tag: other as char,
                    })
                }
            }
            let (code, data) = int32(msg.body()).ok_or_else(|| BackendError::Auth {
                node: node.clone(),
                reason: "truncated authentication request".into(),
            })?;
            match code {
                0 => return Ok(()),
                3 => {
                    let allow = self.node.tls.allow_cleartext_password;
                    if !cleartext::allowed(self.stream.is_tls(), allow) {
                        return Err(CleartextRefused { node }.into());
                    }
                    let pw = password()?;
                    self.write(&password_message(pw.as_bytes()).map_err(encoding)?)
                        .await?;
                }
                5 => {
                    let pw = password()?;
                    let salt: [u8; 4] =
                        data.get(..4)
                            .and_then(|s| s.try_into().ok())
                            .ok_or_else(|| BackendError::Auth {
                                node: node.clone(),
                                reason: "truncated md5 salt".into(),
                            })?;
                    let hash = md5_hash(creds.user.as_bytes(), pw.as_bytes(), salt);
                    self.write(&password_message(hash.as_bytes()).map_err(encoding)?)
                        .await?;
                }
                10 => {
                    let pw = password()?;
                    if !sasl_mechanisms(data).any(|m| m == b"SCRAM-SHA-256") {
                        return Err(BackendError::Auth {
                            node,
                            reason: "server offers no SASL mechanism pgsplit supports".into(),
                        });
                    }
                    let client = ScramSha256::new(pw.as_bytes(), ChannelBinding::unsupported());
                    self.write(&sasl_initial_response(client.message()).map_err(encoding)?)
                        .await?;
                    scram = Some(client);
                }
                11 | 12 => {
                    let mut client = scram.take().ok_or_else(|| BackendError::Auth {
                        node: node.clone(),
                        reason: "SASL message before SASL started".into(),
                    })?;
                    let step = if code == 11 {
                        // The key derivation (PBKDF2, thousands of rounds) runs off the
                        // async threads, so a new server connection never stalls clients.
                        let data = data.to_vec();
                        let (c, step) = tokio::task::spawn_blocking(move || {
                            let step = client.update(&data);
                            (client, step)
                        })
                        .await
                        .map_err(|e| BackendError::Auth {
                            node: node.clone(),
                            reason: e.to_string(),
                        })?;
                        client = c;
                        step
                    } else {
                        client.finish(data)
                    };
                    step.map_err(|e| BackendError::Auth {
                        node: node.clone(),
                        reason: e.to_string(),
                    })?;
                    if code == 11 {
                        let reply = sasl_response(client.message()).map_err(encoding)?;
                        self.write(&reply).await?;
                    }
                    scram = Some(client);
                }
                method => return Err(BackendError::UnsupportedAuth { node, method }),
            }
        }
    }

    async fn finish_startup(&mut self) -> Result<(), BackendError> {
        loop {
            let msg = self.read_message().await?;
            match msg.tag {
                b'S' => self.note_parameter(&msg.bytes),
                b'K' => {
                    if let Some((pid, secret)) = read_backend_key(msg.body()) {
                        self.backend_pid = pid;
                        self.backend_secret = secret.into();
                    }
                }
                b'Z' => {
                    self.status = read_ready(msg.body()).unwrap_or(TxStatus::Idle);
                    return Ok(());
                }
                b'E' => return Err(self.server_error(msg.body())),
                b'N' => {}
                other => {
                    return Err(BackendError::Unexpected {
                        node: self.node.name.clone(),
                        tag: other as char,
                    })
                }
            }
        }
    }

    /// Records a ParameterStatus message (the whole message, header included).
    pub fn note_parameter(&mut self, message: &[u8]) {
        if let Some((name, _)) = read_parameter_status(&message[5..]) {
            self.parameters
                .insert(name, Bytes::copy_from_slice(message));
        }
    }

    /// Runs SQL pgsplit needs on this connection (settings, resets), reading the replies
    /// up to ReadyForQuery. Parameter changes are recorded; the first error is returned.
    pub async fn execute(&mut self, sql: &str) -> Result<(), BackendError> {
        self.execute_all(&[sql]).await
    }

    /// Runs simple queries sent in one write (one round trip), each its own transaction;
    /// the first error is returned once all have been answered.
    pub async fn execute_all(&mut self, queries: &[&str]) -> Result<(), BackendError> {
        let limit = self.reply_limit;
        match tokio::time::timeout(limit, self.execute_inner(queries)).await {
            Ok(result) => result,
            Err(_) => {
                // A node that stopped answering: this connection is of no further use.
                self.broken = true;
                Err(BackendError::ReplyTimeout {
                    node: self.node.name.clone(),
                    limit,
                })
            }
        }
    }

    async fn execute_inner(&mut self, queries: &[&str]) -> Result<(), BackendError> {
        // A simple Query destroys the unnamed statement.
        self.unnamed = None;
        let mut out = Vec::new();
        for sql in queries {
            out.extend_from_slice(&crate::wire::message::query_message(sql));
        }
        self.write(&out).await?;
        let mut error = None;
        let mut left = queries.len();
        loop {
            let msg = self.read_message().await?;
            match msg.tag {
                b'S' => self.note_parameter(&msg.bytes),
                b'E' if error.is_none() => error = Some(self.server_error(msg.body())),
                b'Z' => {
                    self.status = read_ready(msg.body()).unwrap_or(TxStatus::Idle);
                    left -= 1;
                    if left == 0 {
                        return error.map_or(Ok(()), Err);
                    }
                }
                _ => {}
            }
        }
    }

    /// Clears all session state with DISCARD ALL, and forgets what pgsplit knew of it.
    /// `random()`'s seed, which DISCARD ALL keeps (a client's `setseed` would make the next
    /// client's values predictable), is set afresh from pgsplit's own random source, as a
    /// new connection's is: in the same round trip.
    pub async fn discard_all(&mut self) -> Result<(), BackendError> {
        let seed = format!("SELECT setseed({})", rand::random::<f64>() * 2.0 - 1.0);
        self.execute_all(&["DISCARD ALL", &seed]).await?;
        self.statements.clear();
        self.position_prepared = false;
        self.settings.clear();
        self.needs_discard = false;
        self.sequences_of = None;
        Ok(())
    }

    /// True when the socket has nothing unread and is not closed: a cheap health check
    /// that needs no round trip.
    pub fn is_quiet(&mut self) -> bool {
        self.read_buf.is_empty() && self.stream.is_quiet()
    }
}

/// A frontend message encoded by postgres-protocol into a fresh buffer. (Encoding fails
/// only for a body over 2 GiB, which no password or SASL message comes near.)
fn encoded(encode: impl FnOnce(&mut BytesMut) -> std::io::Result<()>) -> std::io::Result<BytesMut> {
    let mut out = BytesMut::new();
    encode(&mut out)?;
    Ok(out)
}

fn password_message(password: &[u8]) -> std::io::Result<BytesMut> {
    encoded(|out| frontend::password_message(password, out))
}

fn sasl_initial_response(data: &[u8]) -> std::io::Result<BytesMut> {
    encoded(|out| frontend::sasl_initial_response(sasl::SCRAM_SHA_256, data, out))
}

fn sasl_response(data: &[u8]) -> std::io::Result<BytesMut> {
    encoded(|out| frontend::sasl_response(data, out))
}

/// The mechanism names of an AuthenticationSASL body.
fn sasl_mechanisms(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (name, rest) = cstr(data)?;
        if name.is_empty() {
            return None;
        }
        data = rest;
        Some(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_sasl_mechanisms() {
        let names: Vec<&[u8]> = sasl_mechanisms(b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0").collect();
        assert_eq!(
            names,
            vec![&b"SCRAM-SHA-256-PLUS"[..], &b"SCRAM-SHA-256"[..]]
        );
    }

    #[test]
    fn frames_password_messages() {
        let m = password_message(b"md5abc").unwrap();
        assert_eq!(m[0], b'p');
        assert_eq!(
            u32::from_be_bytes([m[1], m[2], m[3], m[4]]) as usize,
            m.len() - 1
        );
        let s = sasl_initial_response(b"n,,n=,r=abc").unwrap();
        assert_eq!(
            u32::from_be_bytes([s[1], s[2], s[3], s[4]]) as usize,
            s.len() - 1
        );
    }
}
