//! A minimal hand-written protocol client, for what libraries will not send: garbage,
//! oversized length headers, FunctionCall, and for looking at ParameterStatus messages.
//! Also builders for extended-protocol messages, to send batches by hand.
//! It logs in with md5 (user `app_md5`), which needs no SCRAM state machine.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One backend message: its type byte and body.
#[derive(Debug, Clone)]
pub struct Message {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Message {
    /// The fields of an ErrorResponse / NoticeResponse, by field type byte.
    pub fn fields(&self) -> HashMap<u8, String> {
        let mut out = HashMap::new();
        let mut rest = &self.body[..];
        while let Some((&kind, tail)) = rest.split_first() {
            if kind == 0 {
                break;
            }
            let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
            out.insert(kind, String::from_utf8_lossy(&tail[..end]).into_owned());
            rest = tail.get(end + 1..).unwrap_or(&[]);
        }
        out
    }

    /// SQLSTATE of an ErrorResponse.
    pub fn code(&self) -> String {
        self.fields().get(&b'C').cloned().unwrap_or_default()
    }

    /// (name, value) of a ParameterStatus.
    pub fn parameter(&self) -> (String, String) {
        let parts: Vec<&[u8]> = self.body.split(|&b| b == 0).collect();
        (
            String::from_utf8_lossy(parts[0]).into_owned(),
            String::from_utf8_lossy(parts.get(1).copied().unwrap_or_default()).into_owned(),
        )
    }

    /// The columns of a DataRow, as text (None for NULL).
    pub fn data_row(&self) -> Vec<Option<String>> {
        let mut b = &self.body[..];
        let n = b.get_i16();
        (0..n)
            .map(|_| {
                let len = b.get_i32();
                if len < 0 {
                    None
                } else {
                    let v = String::from_utf8_lossy(&b[..len as usize]).into_owned();
                    b.advance(len as usize);
                    Some(v)
                }
            })
            .collect()
    }
}

/// A raw protocol connection.
pub struct RawConn {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to the proxy");
        stream.set_nodelay(true).unwrap();
        RawConn {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Writes bytes as they are.
    pub async fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Sends a StartupMessage (protocol 3.0) with these parameters.
    pub async fn send_startup(&mut self, params: &[(&str, &str)]) {
        let mut body = BytesMut::new();
        body.put_i32(196608);
        for (k, v) in params {
            body.put_slice(k.as_bytes());
            body.put_u8(0);
            body.put_slice(v.as_bytes());
            body.put_u8(0);
        }
        body.put_u8(0);
        let mut packet = BytesMut::new();
        packet.put_i32(body.len() as i32 + 4);
        packet.put_slice(&body);
        self.write_raw(&packet).await.unwrap();
    }

    /// Sends one typed message.
    pub async fn send(&mut self, tag: u8, body: &[u8]) {
        self.write_raw(&message(tag, body)).await.unwrap();
    }

    /// Reads one message; None when the server closed the connection.
    pub async fn recv(&mut self) -> Option<Message> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                assert!(len >= 4, "bad length {len} from the proxy");
                let total = 1 + len as usize;
                if self.buf.len() >= total {
                    let frame = self.buf.split_to(total);
                    return Some(Message {
                        tag: frame[0],
                        body: frame[5..].to_vec(),
                    });
                }
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => {
                    // A lone byte (like an SSL answer) is handled by recv_byte.
                    return None;
                }
                Ok(_) => {}
            }
        }
    }

    /// Reads one message within `secs` seconds, panicking on a timeout.
    pub async fn recv_within(&mut self, secs: u64) -> Option<Message> {
        match tokio::time::timeout(Duration::from_secs(secs), self.recv()).await {
            Ok(m) => m,
            Err(_) => panic!("no message from the proxy within {secs} s"),
        }
    }

    /// Reads a single byte (the answer to SSLRequest).
    pub async fn recv_byte(&mut self) -> Option<u8> {
        if !self.buf.is_empty() {
            return Some(self.buf.split_to(1)[0]);
        }
        let mut b = [0u8; 1];
        match self.stream.read(&mut b).await {
            Ok(1) => Some(b[0]),
            _ => None,
        }
    }

    /// Logs in with md5 and reads up to ReadyForQuery. Returns the messages received
    /// after AuthenticationOk (ParameterStatus, BackendKeyData, ReadyForQuery).
    pub async fn login_md5(
        addr: SocketAddr,
        user: &str,
        password: &str,
        params: &[(&str, &str)],
    ) -> (RawConn, Vec<Message>) {
        let mut conn = RawConn::connect(addr).await;
        let mut all = vec![("user", user)];
        all.extend_from_slice(params);
        conn.send_startup(&all).await;
        conn.finish_md5_login(user, password).await;
        let mut after = Vec::new();
        loop {
            let m = conn.recv_within(30).await.expect("login answer");
            match m.tag {
                b'E' => panic!("login failed: {:?}", m.fields()),
                b'Z' => {
                    after.push(m);
                    return (conn, after);
                }
                _ => after.push(m),
            }
        }
    }

    /// Logs in as `app_md5` to database `app`.
    pub async fn login_app(addr: SocketAddr) -> RawConn {
        let params = [("database", "app")];
        RawConn::login_md5(addr, "app_md5", super::APP_PASSWORD, &params)
            .await
            .0
    }

    /// Answers the md5 request and waits for AuthenticationOk.
    pub async fn finish_md5_login(&mut self, user: &str, password: &str) {
        let m = self.recv_within(30).await.expect("authentication request");
        assert_eq!(m.tag, b'R', "expected an authentication request, got {m:?}");
        let kind = i32::from_be_bytes(m.body[..4].try_into().unwrap());
        assert_eq!(kind, 5, "expected md5 authentication");
        let salt: [u8; 4] = m.body[4..8].try_into().unwrap();
        let hash =
            postgres_protocol::authentication::md5_hash(user.as_bytes(), password.as_bytes(), salt);
        let mut body = hash.into_bytes();
        body.push(0);
        self.send(b'p', &body).await;
        let ok = self.recv_within(30).await.expect("authentication answer");
        assert_eq!(ok.tag, b'R', "login refused: {:?}", ok.fields());
        assert_eq!(&ok.body[..4], &[0, 0, 0, 0], "expected AuthenticationOk");
    }

    /// Sends a simple Query and returns every message up to and including ReadyForQuery.
    pub async fn simple_query(&mut self, sql: &str) -> Vec<Message> {
        let mut body = sql.as_bytes().to_vec();
        body.push(0);
        self.send(b'Q', &body).await;
        self.until_ready().await
    }

    /// The bytes of the first read that returns any, within 30 s (nothing may be left
    /// over from earlier messages): what arrived in one piece.
    pub async fn first_chunk(&mut self) -> Vec<u8> {
        assert!(self.buf.is_empty(), "unread bytes before the chunk");
        let mut chunk = vec![0u8; 64 * 1024];
        let read = tokio::time::timeout(Duration::from_secs(30), self.stream.read(&mut chunk));
        let n = read.await.expect("no reply within 30 s").expect("read");
        chunk.truncate(n);
        chunk
    }

    /// Reads messages up to and including ReadyForQuery.
    pub async fn until_ready(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        loop {
            let m = self
                .recv_within(30)
                .await
                .expect("connection closed before ReadyForQuery");
            let done = m.tag == b'Z';
            out.push(m);
            if done {
                return out;
            }
        }
    }
}

/// Frames a typed message.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(tag);
    out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A NUL-terminated string, as the protocol writes names and queries.
pub fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// Parse of statement `name` ("" for the unnamed one), no parameter types.
pub fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut body = cstr(name);
    body.extend(cstr(sql));
    body.extend_from_slice(&0i16.to_be_bytes());
    message(b'P', &body)
}

/// Bind with one text parameter "x" when the statement is named, none otherwise.
pub fn bind(portal: &str, statement: &str) -> Vec<u8> {
    let mut body = cstr(portal);
    body.extend(cstr(statement));
    body.extend_from_slice(&0i16.to_be_bytes());
    if statement.is_empty() {
        body.extend_from_slice(&0i16.to_be_bytes());
    } else {
        body.extend_from_slice(&1i16.to_be_bytes());
        body.extend_from_slice(&1i32.to_be_bytes());
        body.push(b'x');
    }
    body.extend_from_slice(&0i16.to_be_bytes());
    message(b'B', &body)
}

/// Execute of `portal`, every row.
pub fn execute(portal: &str) -> Vec<u8> {
    let mut body = cstr(portal);
    body.extend_from_slice(&0i32.to_be_bytes());
    message(b'E', &body)
}

/// Sync.
pub fn sync() -> Vec<u8> {
    message(b'S', b"")
}

/// A Flush message: the server sends what it has, and the batch stays open.
pub fn flush() -> Vec<u8> {
    message(b'H', b"")
}

/// Close of statement `name`.
pub fn close_statement(name: &str) -> Vec<u8> {
    let mut body = vec![b'S'];
    body.extend(cstr(name));
    message(b'C', &body)
}

/// Describe of statement `name`.
pub fn describe_statement(name: &str) -> Vec<u8> {
    let mut body = vec![b'S'];
    body.extend(cstr(name));
    message(b'D', &body)
}

/// The type bytes of `messages`, as a string ("12DCZ").
pub fn tags(messages: &[Message]) -> String {
    messages.iter().map(|m| m.tag as char).collect()
}
