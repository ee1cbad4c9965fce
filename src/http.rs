//! The small HTTP endpoint for monitoring systems (`[metrics] listen`, loopback by default):
//! `GET /metrics` (Prometheus text format), `GET /healthz` (200 when pgsplit can reach the
//! primary, 503 with the reason otherwise) and `GET /status` (a plain HTML page for an
//! operator: `crate::status_page`). One request per connection; nothing else.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::proxy::Proxy;

/// Requests are small; anything bigger is refused.
const REQUEST_LIMIT: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves until the proxy is gone.
pub async fn serve(listener: TcpListener, proxy: Weak<Proxy>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(proxy) = proxy.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, proxy)).await;
        });
    }
}

async fn answer(mut stream: TcpStream, proxy: Arc<Proxy>) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
        if request.len() > REQUEST_LIMIT {
            return respond(&mut stream, 431, "text/plain", "request too large\n").await;
        }
    }
    let line = String::from_utf8_lossy(request.split(|&b| b == b'\r').next().unwrap_or_default())
        .into_owned();
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or(path);
    match (method, path) {
        ("GET", "/metrics") => {
            let body = proxy.metrics().render(&proxy.metrics_snapshot());
            respond(&mut stream, 200, "text/plain; version=0.0.4", &body).await
        }
        ("GET", "/healthz") => {
            let (healthy, body) = health(&proxy);
            respond(
                &mut stream,
                if healthy { 200 } else { 503 },
                "text/plain",
                &body,
            )
            .await
        }
        ("GET", "/status") => {
            let page = crate::status_page::render(&proxy.status_view(), Instant::now());
            respond(&mut stream, 200, "text/html; charset=utf-8", &page).await
        }
        ("GET", _) => {
            respond(
                &mut stream,
                404,
                "text/plain",
                "try /metrics, /healthz or /status\n",
            )
            .await
        }
        _ => respond(&mut stream, 405, "text/plain", "GET only\n").await,
    }
}

/// Healthy when the monitor read the primary's WAL position lately (within 4 check
/// intervals, at least 2 s). The body says so, with the replicas in rotation.
fn health(proxy: &Proxy) -> (bool, String) {
    let primary = proxy.board().primary();
    let interval = proxy.lag_config().check_interval.as_std();
    let fresh = (interval * 4).max(Duration::from_secs(2));
    let replicas = proxy.board().replicas();
    let serving = replicas.iter().filter(|r| r.state.serves_reads()).count();
    let rotation = format!("{serving}/{} replicas in the read rotation", replicas.len());
    match (primary.checked_at, primary.error) {
        (_, Some(error)) => (false, format!("primary unreachable: {error}; {rotation}\n")),
        (Some(at), None) if Instant::now().duration_since(at) <= fresh => {
            (true, format!("ok: primary reachable; {rotation}\n"))
        }
        (Some(at), None) => (
            false,
            format!("primary not checked for {:?}; {rotation}\n", at.elapsed()),
        ),
        (None, None) => (false, format!("primary not checked yet; {rotation}\n")),
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    kind: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
