//! Hand-made protocol traffic: garbage, absurd length headers, SSLRequest, unknown
//! message types, FunctionCall, and the ParameterStatus messages a client sees. The
//! proxy answers like PostgreSQL would, never waits for bytes that will not come, and
//! keeps serving everyone else.

mod common;

use std::time::{Duration, Instant};

use common::raw::{
    bind, close_statement, describe_statement, execute, parse, sync, tags, Message, RawConn,
};
use common::{show, TestProxy, APP_PASSWORD};
use rand::{Rng, SeedableRng};
use tokio::io::AsyncWriteExt;

/// The proxy still logs clients in and answers queries.
async fn still_serves(proxy: &TestProxy) {
    let client = proxy.connect("robustness_check").await;
    assert_eq!(show(&client, "select 'alive'").await, "alive");
}

/// Reads until the proxy closes the connection, within `secs`; returns what came.
async fn read_to_close(conn: &mut RawConn, secs: u64) -> Vec<Message> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, conn.recv()).await {
            Ok(Some(m)) => out.push(m),
            Ok(None) => return out,
            Err(_) => panic!("the proxy kept the connection open for {secs} s; got {out:?}"),
        }
    }
}

/// Reads until the proxy closes the connection and checks that it sent exactly one
/// message: a FATAL ErrorResponse with `code`.
async fn expect_one_fatal(conn: &mut RawConn, code: &str) {
    let got = read_to_close(conn, 10).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].tag, b'E', "{got:?}");
    assert_eq!(got[0].fields()[&b'S'], "FATAL", "{:?}", got[0].fields());
    assert_eq!(got[0].code(), code, "{:?}", got[0].fields());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_first_packets_are_refused() {
    let proxy = TestProxy::start(|_| {}).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    for round in 0..20 {
        let mut garbage = vec![0u8; 64];
        rng.fill(&mut garbage[..]);
        if round % 2 == 0 {
            garbage[0] = 0xFF;
        }
        let mut conn = RawConn::connect(proxy.addr).await;
        conn.write_raw(&garbage).await.unwrap();
        // No more bytes will come: a proxy waiting for the rest of a packet sees EOF.
        conn.stream.shutdown().await.unwrap();
        let got = read_to_close(&mut conn, 10).await;
        for m in &got {
            assert_eq!(m.tag, b'E', "round {round}: unexpected answer {m:?}");
            assert_eq!(m.code(), "08P01", "round {round}: {:?}", m.fields());
        }
        if garbage[0] == 0xFF {
            assert_eq!(
                got.len(),
                1,
                "round {round}: no ErrorResponse for a bad length"
            );
        }
    }
    still_serves(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_startup_length_is_refused_at_once() {
    let proxy = TestProxy::start(|_| {}).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    let started = Instant::now();
    // 1 GB declared, a few bytes sent, the connection left open.
    conn.write_raw(&[0x40, 0, 0, 0, 0, 3, 0, 0, b'u', b's'])
        .await
        .unwrap();
    expect_one_fatal(&mut conn, "08P01").await;
    assert!(started.elapsed() < Duration::from_secs(5));
    still_serves(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_protocol_version_is_refused() {
    let proxy = TestProxy::start(|_| {}).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    // Protocol 2.0.
    let mut packet = Vec::new();
    packet.extend_from_slice(&18i32.to_be_bytes());
    packet.extend_from_slice(&0x0002_0000i32.to_be_bytes());
    packet.extend_from_slice(b"user\0app\0\0");
    conn.write_raw(&packet).await.unwrap();
    expect_one_fatal(&mut conn, "08P01").await;
    still_serves(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_request_is_declined_then_login_works() {
    let proxy = TestProxy::start(|_| {}).await;
    let mut conn = RawConn::connect(proxy.addr).await;
    let mut ssl = Vec::new();
    ssl.extend_from_slice(&8i32.to_be_bytes());
    ssl.extend_from_slice(&80877103i32.to_be_bytes());
    conn.write_raw(&ssl).await.unwrap();
    assert_eq!(conn.recv_byte().await, Some(b'N'));
    conn.send_startup(&[("user", "app_md5"), ("database", "app")])
        .await;
    conn.finish_md5_login("app_md5", APP_PASSWORD).await;
    let ready = conn.until_ready().await;
    assert_eq!(ready.last().unwrap().body, b"I");
    let rows = conn.simple_query("select 40 + 2").await;
    let data: Vec<_> = rows.iter().filter(|m| m.tag == b'D').collect();
    assert_eq!(data[0].data_row(), vec![Some("42".to_string())]);
}

/// What a client sees at login: the server's ParameterStatus values with the client's
/// own startup settings applied, BackendKeyData, ReadyForQuery(idle).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_reports_parameter_status() {
    let proxy = TestProxy::start(|c| c.pool.max_size = 1).await;
    // Another client first leaves its own settings on the only server connection.
    let other = proxy.connect("param_status_other").await;
    other
        .batch_execute("SET DateStyle = 'German'; SET TimeZone = 'Asia/Tokyo'")
        .await
        .unwrap();

    let (mut conn, messages) = RawConn::login_md5(
        proxy.addr,
        "app_md5",
        APP_PASSWORD,
        &[
            ("database", "app"),
            ("application_name", "param_status_raw"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, DMY"),
        ],
    )
    .await;
    let params: std::collections::HashMap<String, String> = messages
        .iter()
        .filter(|m| m.tag == b'S')
        .map(|m| m.parameter())
        .collect();
    assert_eq!(
        params.get("application_name").map(String::as_str),
        Some("param_status_raw")
    );
    assert_eq!(
        params.get("client_encoding").map(String::as_str),
        Some("UTF8")
    );
    assert_eq!(
        params.get("DateStyle").map(String::as_str),
        Some("ISO, DMY")
    );
    assert_eq!(params.get("is_superuser").map(String::as_str), Some("off"));
    assert_eq!(
        params.get("session_authorization").map(String::as_str),
        Some("app_md5")
    );
    assert_eq!(
        params
            .get("standard_conforming_strings")
            .map(String::as_str),
        Some("on")
    );
    assert_eq!(
        params.get("integer_datetimes").map(String::as_str),
        Some("on")
    );
    assert!(params
        .get("server_version")
        .is_some_and(|v| v.starts_with("15")));
    // Not the other client's time zone: the server default.
    let checker = common::superuser().await;
    let default_tz = show(&checker, "show timezone").await;
    assert_eq!(params.get("TimeZone"), Some(&default_tz), "{params:?}");
    assert!(messages.iter().any(|m| m.tag == b'K'), "no BackendKeyData");
    assert_eq!(messages.last().unwrap().tag, b'Z');
    assert_eq!(messages.last().unwrap().body, b"I");

    // A SET of a reported parameter is reported back.
    let answer = conn.simple_query("SET application_name = 'renamed'").await;
    let reported: Vec<_> = answer
        .iter()
        .filter(|m| m.tag == b'S')
        .map(|m| m.parameter())
        .collect();
    assert_eq!(
        reported,
        vec![("application_name".to_string(), "renamed".to_string())]
    );
}

/// FunctionCall ('F'), which pgwire does not know, goes through as it came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_call_passes_through() {
    let proxy = TestProxy::start(|_| {}).await;
    let (mut conn, _) =
        RawConn::login_md5(proxy.addr, "app_md5", APP_PASSWORD, &[("database", "app")]).await;
    let rows = conn
        .simple_query("select 'int4pl(int4,int4)'::regprocedure::oid")
        .await;
    let oid: i32 = rows
        .iter()
        .find(|m| m.tag == b'D')
        .expect("oid row")
        .data_row()[0]
        .as_ref()
        .unwrap()
        .parse()
        .unwrap();

    for (a, b) in [(2i32, 3i32), (40, 2), (-7, 7)] {
        let mut body = Vec::new();
        body.extend_from_slice(&oid.to_be_bytes());
        body.extend_from_slice(&1i16.to_be_bytes()); // one format code:
        body.extend_from_slice(&1i16.to_be_bytes()); // binary
        body.extend_from_slice(&2i16.to_be_bytes()); // two arguments
        for v in [a, b] {
            body.extend_from_slice(&4i32.to_be_bytes());
            body.extend_from_slice(&v.to_be_bytes());
        }
        body.extend_from_slice(&1i16.to_be_bytes()); // binary result
        conn.send(b'F', &body).await;
        let answer = conn.until_ready().await;
        let tags: Vec<char> = answer.iter().map(|m| m.tag as char).collect();
        assert_eq!(tags, vec!['V', 'Z'], "{answer:?}");
        let v = &answer[0].body;
        assert_eq!(i32::from_be_bytes(v[..4].try_into().unwrap()), 4);
        assert_eq!(i32::from_be_bytes(v[4..8].try_into().unwrap()), a + b);
    }
    // A FunctionCall that fails (integer overflow) reports the error and carries on.
    let mut body = Vec::new();
    body.extend_from_slice(&oid.to_be_bytes());
    body.extend_from_slice(&1i16.to_be_bytes());
    body.extend_from_slice(&1i16.to_be_bytes());
    body.extend_from_slice(&2i16.to_be_bytes());
    for v in [i32::MAX, 1] {
        body.extend_from_slice(&4i32.to_be_bytes());
        body.extend_from_slice(&v.to_be_bytes());
    }
    body.extend_from_slice(&1i16.to_be_bytes());
    conn.send(b'F', &body).await;
    let answer = conn.until_ready().await;
    assert_eq!(answer[0].tag, b'E');
    assert_eq!(answer[0].code(), "22003");
    let rows = conn.simple_query("select 'after'").await;
    assert!(rows.iter().any(|m| m.tag == b'D'));
}

/// After login, a message declaring 1 GB is refused at once (the limit is 64 MB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_message_after_login_is_refused() {
    let proxy = TestProxy::start(|_| {}).await;
    let (mut conn, _) =
        RawConn::login_md5(proxy.addr, "app_md5", APP_PASSWORD, &[("database", "app")]).await;
    let started = Instant::now();
    conn.write_raw(&[b'Q', 0x40, 0, 0, 0, b's', b'e', b'l'])
        .await
        .unwrap();
    expect_one_fatal(&mut conn, "54000").await;
    assert!(started.elapsed() < Duration::from_secs(5));
    still_serves(&proxy).await;
}

/// An unknown message type after login is a protocol violation, like in PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_message_type_after_login() {
    let proxy = TestProxy::start(|_| {}).await;
    let (mut conn, _) =
        RawConn::login_md5(proxy.addr, "app_md5", APP_PASSWORD, &[("database", "app")]).await;
    conn.send(b'z', b"whatever").await;
    expect_one_fatal(&mut conn, "08P01").await;
    still_serves(&proxy).await;
}

/// Extended-protocol batches sent by hand: an error skips to Sync, a Sync with nothing
/// outstanding answers ReadyForQuery, and unnamed statements work across transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_made_extended_protocol_batches() {
    let proxy = TestProxy::start(|c| c.pool.max_size = 1).await;
    let (mut conn, _) =
        RawConn::login_md5(proxy.addr, "app_md5", APP_PASSWORD, &[("database", "app")]).await;

    // Sync alone.
    conn.send(b'S', b"").await;
    let got = conn.until_ready().await;
    assert_eq!(tags(&got), "Z");

    // Parse fails: Bind/Execute skipped, Sync answered.
    conn.write_raw(&[parse("", "selec 1"), bind("", ""), execute(""), sync()].concat())
        .await
        .unwrap();
    let got = conn.until_ready().await;
    assert_eq!(tags(&got), "EZ");
    assert_eq!(got[0].code(), "42601");

    // Two statements in one batch, a named one executed twice.
    conn.write_raw(
        &[
            parse("s1", "select $1::text || '!'"),
            bind("", "s1"),
            execute(""),
            parse("", "select 7"),
            bind("", ""),
            execute(""),
            bind("", "s1"),
            execute(""),
            sync(),
        ]
        .concat(),
    )
    .await
    .unwrap();
    let got = conn.until_ready().await;
    assert_eq!(tags(&got), "12DC12DC2DCZ", "{got:?}");
    let rows: Vec<_> = got
        .iter()
        .filter(|m| m.tag == b'D')
        .map(|m| m.data_row())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec![Some("x!".to_string())],
            vec![Some("7".to_string())],
            vec![Some("x!".to_string())]
        ]
    );

    // Another client uses the only server connection in between; s1 still works.
    let other = proxy.connect("raw_extended_other").await;
    assert_eq!(show(&other, "select 1").await, "1");
    conn.write_raw(&[bind("", "s1"), execute(""), sync()].concat())
        .await
        .unwrap();
    let got = conn.until_ready().await;
    assert_eq!(tags(&got), "2DCZ", "{got:?}");

    // Close of the named statement, then using it is an error (26000), then recovery.
    conn.write_raw(&[close_statement("s1"), sync()].concat())
        .await
        .unwrap();
    assert_eq!(tags(&conn.until_ready().await), "3Z");
    conn.write_raw(&[bind("", "s1"), execute(""), sync()].concat())
        .await
        .unwrap();
    let got = conn.until_ready().await;
    assert_eq!(tags(&got), "EZ");
    assert_eq!(got[0].code(), "26000");
    // Describe of a named statement prepared without a server.
    conn.write_raw(
        &[
            parse("s2", "select 1 as one"),
            describe_statement("s2"),
            sync(),
        ]
        .concat(),
    )
    .await
    .unwrap();
    let got = conn.until_ready().await;
    assert_eq!(tags(&got), "1tTZ", "{got:?}");
}
