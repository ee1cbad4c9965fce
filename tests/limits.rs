//! Limits before login: a flood of silent connections cannot exhaust the proxy (they count
//! against `max_client_conn` from accept on and are closed after `client_login_timeout`),
//! a login stalled at any step is cut off, and names from clients reach the log escaped.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::raw::RawConn;
use common::{sqlstate, wait_until, TestProxy};

/// File descriptors open in this process (the proxy runs inside it).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Reads a connection to its end: the SQLSTATEs of the errors it got, and when it ended.
async fn read_to_end(mut conn: RawConn) -> (Vec<String>, Instant) {
    let mut codes = Vec::new();
    while let Some(m) = conn.recv().await {
        if m.tag == b'E' {
            codes.push(m.code());
        }
    }
    (codes, Instant::now())
}

/// 300 connections that never send a startup packet, against `max_client_conn = 50` and a
/// 1 s login timeout: past the limit they (and a real client) get 53300 at once; the 50
/// counted ones are closed after the timeout with 08P01; then the proxy's file
/// descriptors are back where they were and a real client logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_silent_connections_is_refused_then_timed_out() {
    const LIMIT: usize = 50;
    const FLOOD: usize = 300;
    let proxy = TestProxy::start(|c| {
        c.proxy.max_client_conn = LIMIT;
        c.proxy.client_login_timeout = pgsplit::config::Duration::from_secs(1);
    })
    .await;
    // A login first, so the pool's server connection is part of the baseline.
    proxy
        .connect("limits_warmup")
        .await
        .simple_query("select 1")
        .await
        .unwrap();
    wait_until(10, "the warm-up client has left", || {
        let n = proxy.proxy.client_count();
        async move { n == 0 }
    })
    .await;
    let before = open_fds();

    let started = Instant::now();
    let mut readers = Vec::new();
    for _ in 0..FLOOD {
        let conn = RawConn::connect(proxy.addr).await;
        readers.push(tokio::spawn(read_to_end(conn)));
    }
    wait_until(
        5,
        "the proxy holds max_client_conn silent connections",
        || {
            let n = proxy.proxy.client_count();
            async move { n == LIMIT }
        },
    )
    .await;

    // A real client is refused at once, not after the login timeout.
    let asked = Instant::now();
    let e = proxy
        .pg_config("limits_real_client")
        .connect(tokio_postgres::NoTls)
        .await
        .err()
        .expect("refused while the flood holds every slot");
    assert_eq!(sqlstate(&e), "53300", "{e}");
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "refused after {:?}",
        asked.elapsed()
    );

    let mut refused = 0;
    let mut timed_out = 0;
    for reader in readers {
        let (codes, ended) = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("every silent connection is closed")
            .unwrap();
        match codes.as_slice() {
            [code] if code == "53300" => refused += 1,
            [code] if code == "08P01" => {
                timed_out += 1;
                let lived = ended - started;
                assert!(
                    lived >= Duration::from_millis(900),
                    "closed after {lived:?}"
                );
            }
            other => panic!("unexpected errors {other:?}"),
        }
    }
    assert_eq!((refused, timed_out), (FLOOD - LIMIT, LIMIT));

    wait_until(10, "every slot is free again", || {
        let n = proxy.proxy.client_count();
        async move { n == 0 }
    })
    .await;
    wait_until(10, "the file descriptors are back where they were", || {
        let now = open_fds();
        async move { now <= before + 10 }
    })
    .await;
    let client = proxy.connect("limits_after_flood").await;
    client.simple_query("select 1").await.unwrap();
}

/// The login timeout runs from accept to the end of authentication: a client that stops
/// after its SSLRequest, or in the middle of the password exchange, is closed too.
#[tokio::test]
async fn a_login_stalled_at_any_step_is_closed() {
    let proxy = TestProxy::start(|c| {
        c.proxy.client_login_timeout = pgsplit::config::Duration::from_millis(500);
    })
    .await;

    let started = Instant::now();
    let mut ssl = RawConn::connect(proxy.addr).await;
    ssl.write_raw(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    assert_eq!(ssl.recv_byte().await, Some(b'N'));
    let mut password = RawConn::connect(proxy.addr).await;
    password
        .send_startup(&[("user", "app"), ("database", "app")])
        .await;
    let request = password.recv().await.expect("an authentication request");
    assert_eq!(request.tag, b'R');

    for conn in [ssl, password] {
        let (codes, ended) = tokio::time::timeout(Duration::from_secs(5), read_to_end(conn))
            .await
            .expect("closed after the login timeout");
        assert_eq!(codes, ["08P01"]);
        assert!(ended - started >= Duration::from_millis(450));
    }
    // Logging in within the time still works.
    proxy
        .connect("limits_in_time")
        .await
        .simple_query("select 1")
        .await
        .unwrap();
}

/// A log writer into a shared buffer.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A user name with a newline, refused at login, is logged on one line, escaped. (The
/// proxy's tasks run on this test's one thread, where the log capture is installed.)
#[tokio::test]
async fn a_user_name_with_a_newline_cannot_forge_a_log_line() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .fmt_fields(pgsplit::logfmt::EscapedFields)
        .finish();
    let _capture = tracing::subscriber::set_default(subscriber);
    let proxy = TestProxy::start(|_| {}).await;

    let forged = "mallory\n2026-01-01T00:00:00Z  INFO pgsplit: admin logged in";
    let mut config = proxy.pg_config("limits_log");
    config.user(forged).password("x");
    let e = config
        .connect(tokio_postgres::NoTls)
        .await
        .err()
        .expect("an unknown user is refused");
    assert_eq!(sqlstate(&e), "28P01");
    wait_until(5, "the refusal is logged", || {
        let text = logs.text();
        async move { text.contains("client refused") }
    })
    .await;
    let text = logs.text();
    assert!(
        text.contains(r"mallory\n2026-01-01T00:00:00Z  INFO pgsplit: admin logged in"),
        "{text}"
    );
    assert!(!text.contains("mallory\n"), "{text}");
    assert!(text.lines().all(|l| !l.starts_with("2026-01-01")), "{text}");
}
