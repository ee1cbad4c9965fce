//! A small HTTP/1.1 client for Patroni's REST API: one `GET` on a plain TCP connection
//! (`Connection: close`), the whole exchange bounded by one timeout and the answer by a
//! size. No TLS, no redirects, no keep-alive. The parsing of the answer is pure.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest answer read (a `/cluster` of a few members is about 1 kB).
const MAX_ANSWER: u64 = 1 << 20;

/// Why a GET failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HttpError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(String),
    #[error("answered {0}")]
    Status(String),
    #[error("not an HTTP answer: {0}")]
    Malformed(&'static str),
}

/// `GET path` from `host:port`; the body of a 200 answer. Connecting, sending and
/// reading all end within `timeout`.
pub async fn get(
    host: &str,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<String, HttpError> {
    let exchange = async {
        let mut stream = TcpStream::connect((host, port))
            .await
            .map_err(|e| HttpError::Io(e.to_string()))?;
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\nUser-Agent: pgsplit\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| HttpError::Io(e.to_string()))?;
        let mut answer = Vec::new();
        stream
            .take(MAX_ANSWER)
            .read_to_end(&mut answer)
            .await
            .map_err(|e| HttpError::Io(e.to_string()))?;
        Ok::<_, HttpError>(answer)
    };
    let answer = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| HttpError::Timeout(timeout))??;
    body(&answer)
}

/// The body of a whole HTTP/1.x answer (read until the server closed), if its status is
/// 200: as `Content-Length` says, or chunked, or up to the end.
pub fn body(answer: &[u8]) -> Result<String, HttpError> {
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(HttpError::Malformed("no end of headers"))?;
    let head = std::str::from_utf8(&answer[..end])
        .map_err(|_| HttpError::Malformed("headers are not text"))?;
    let rest = &answer[end + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let mut parts = status.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed("no HTTP/1.x status line"));
    }
    if parts.next() != Some("200") {
        return Err(HttpError::Status(status.chars().take(100).collect()));
    }
    let header = |name: &str| {
        lines.clone().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(length) = header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| HttpError::Malformed("bad Content-Length"))?;
        rest.get(..length)
            .ok_or(HttpError::Malformed("shorter than its Content-Length"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    String::from_utf8(body).map_err(|_| HttpError::Malformed("the body is not UTF-8"))
}

/// A chunked body, decoded.
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, HttpError> {
    let bad = HttpError::Malformed("bad chunked body");
    let mut out = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or(bad.clone())?;
        let size_text = std::str::from_utf8(&rest[..line_end]).map_err(|_| bad.clone())?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad.clone())?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(rest.get(..size).ok_or(bad.clone())?);
        rest = rest.get(size + 2..).ok_or(bad.clone())?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patroni_3_0_2s_answer_has_no_length_and_ends_with_the_connection() {
        let answer = b"HTTP/1.0 200 OK\r\nServer: BaseHTTP/0.6 Python/3.11.2\r\nContent-Type: application/json\r\n\r\n{\"members\": []}";
        assert_eq!(body(answer).unwrap(), "{\"members\": []}");
    }

    #[test]
    fn content_length_and_chunked_bodies() {
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}trailing";
        assert_eq!(body(answer).unwrap(), "{}");
        let answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\n{\"a\r\n4;x=y\r\n\": 1\r\n1\r\n}\r\n0\r\n\r\n";
        assert_eq!(body(answer).unwrap(), "{\"a\": 1}");
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n{}";
        assert!(matches!(body(short), Err(HttpError::Malformed(_))));
        let cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{}";
        assert!(matches!(body(cut), Err(HttpError::Malformed(_))));
    }

    #[test]
    fn other_statuses_and_garbage_are_errors() {
        let answer = b"HTTP/1.1 503 Service Unavailable\r\n\r\n{}";
        assert_eq!(
            body(answer),
            Err(HttpError::Status("HTTP/1.1 503 Service Unavailable".into()))
        );
        assert!(matches!(
            body(b"SSH-2.0-OpenSSH\r\n"),
            Err(HttpError::Malformed(_))
        ));
        assert!(matches!(
            body(b"\x16\x03\x01\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn a_get_sends_one_http_1_1_request_and_reads_the_answer_to_the_end() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            while !request.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                socket.read_exact(&mut byte).await.unwrap();
                request.push(byte[0]);
            }
            socket
                .write_all(
                    b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"members\": []}",
                )
                .await
                .unwrap();
            String::from_utf8(request).unwrap()
        });
        let body = get("127.0.0.1", port, "/cluster", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(body, "{\"members\": []}");
        let request = server.await.unwrap();
        assert!(
            request.starts_with("GET /cluster HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")));
        assert!(request.contains("\r\nConnection: close\r\n"));
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_io_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let got = get("127.0.0.1", port, "/cluster", Duration::from_secs(5)).await;
        assert!(matches!(got, Err(HttpError::Io(_))), "{got:?}");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = tokio::spawn(async move { listener.accept().await });
        let limit = Duration::from_millis(200);
        let started = std::time::Instant::now();
        let got = get("127.0.0.1", port, "/cluster", limit).await;
        assert_eq!(got, Err(HttpError::Timeout(limit)));
        assert!(started.elapsed() < Duration::from_secs(2));
        held.abort();
    }
}
