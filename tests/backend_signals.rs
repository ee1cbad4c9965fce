//! `pg_terminate_backend()` and `pg_cancel_backend()` with the process id a client got
//! from pgsplit (its BackendKeyData): the other client's session ends with 57P01 (its
//! query on a server stopped with it), or its statement is cancelled with 57014, as
//! PostgreSQL does for a backend; a process id that is a server's still goes to the server.

mod common;

use std::time::{Duration, Instant};

use common::raw::{self, Message, RawConn};
use common::{backends, superuser, wait_until, TestProxy, APP_PASSWORD};

/// Logs in as `app_md5` with this application_name; returns the connection and the process
/// id pgsplit gave it.
async fn login(proxy: &TestProxy, app: &str) -> (RawConn, i32) {
    let params = [("database", "app"), ("application_name", app)];
    let (conn, messages) = RawConn::login_md5(proxy.addr, "app_md5", APP_PASSWORD, &params).await;
    let key = messages
        .iter()
        .find(|m| m.tag == b'K')
        .expect("BackendKeyData");
    let pid = i32::from_be_bytes(key.body[..4].try_into().unwrap());
    (conn, pid)
}

/// The first ErrorResponse or NoticeResponse among `messages`, as (severity, code, message).
fn report(messages: &[Message], tag: u8) -> Option<(String, String, String)> {
    let m = messages.iter().find(|m| m.tag == tag)?;
    let f = m.fields();
    Some((f[&b'S'].clone(), f[&b'C'].clone(), f[&b'M'].clone()))
}

/// The single value of the single row among `messages`.
fn value(messages: &[Message]) -> Option<String> {
    let rows: Vec<_> = messages.iter().filter(|m| m.tag == b'D').collect();
    assert!(rows.len() <= 1, "{}", raw::tags(messages));
    rows.first()?.data_row().into_iter().next().flatten()
}

/// Waits until the client with this application_name runs `pg_sleep` on a server.
async fn sleep_running(checker: &tokio_postgres::Client, app: &str) {
    wait_until(20, "the sleep to run", || async {
        backends(checker, app)
            .await
            .iter()
            .any(|(state, q)| state == "active" && q.contains("pg_sleep"))
    })
    .await;
}

/// What a terminated session receives: FATAL 57P01, then the end of the connection.
async fn expect_terminated(conn: &mut RawConn, within: Duration) {
    let started = Instant::now();
    let m = conn
        .recv_within(within.as_secs())
        .await
        .expect("an error before the connection closes");
    assert_eq!(m.tag, b'E', "{m:?}");
    let f = m.fields();
    assert_eq!((f[&b'S'].as_str(), f[&b'C'].as_str()), ("FATAL", "57P01"));
    assert_eq!(
        f[&b'M'],
        "terminating connection due to administrator command"
    );
    assert!(conn.recv_within(5).await.is_none(), "the connection closes");
    assert!(started.elapsed() < within);
}

/// A Bind of `statement` to the unnamed portal with one text parameter.
fn bind_text(statement: &str, param: &str) -> Vec<u8> {
    let mut bind = raw::cstr("");
    bind.extend(raw::cstr(statement));
    bind.extend_from_slice(&0i16.to_be_bytes());
    bind.extend_from_slice(&1i16.to_be_bytes());
    bind.extend_from_slice(&(param.len() as i32).to_be_bytes());
    bind.extend_from_slice(param.as_bytes());
    bind.extend_from_slice(&0i16.to_be_bytes());
    raw::message(b'B', &bind)
}

/// Parse, Bind (one text parameter), Describe portal, Execute, Sync of `sql`.
fn extended(sql: &str, param: &str) -> Vec<u8> {
    let mut out = raw::parse("", sql);
    out.extend(bind_text("", param));
    let mut describe = vec![b'P'];
    describe.extend(raw::cstr(""));
    out.extend(raw::message(b'D', &describe));
    out.extend(raw::execute(""));
    out.extend(raw::sync());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_a_client_by_its_pid_ends_its_session() {
    let proxy = TestProxy::start(|_| {}).await;
    let checker = superuser().await;
    let (mut caller, caller_pid) = login(&proxy, "signals_caller").await;
    let (mut idle, idle_pid) = login(&proxy, "signals_idle").await;
    for pid in [caller_pid, idle_pid] {
        assert!(
            pid >= 1 << 22,
            "pgsplit's pids are above any server's: {pid}"
        );
    }

    // A simple query, for an idle client.
    let answer = caller
        .simple_query(&format!("SELECT pg_terminate_backend({idle_pid})"))
        .await;
    assert_eq!(raw::tags(&answer), "TDCZ");
    assert_eq!(value(&answer).as_deref(), Some("t"));
    expect_terminated(&mut idle, Duration::from_secs(5)).await;

    // The extended protocol, for a client running a query on a server: the query stops
    // with it, and that server connection is not handed to anyone mid-query.
    let app = common::unique("signals_busy");
    let (mut busy, busy_pid) = login(&proxy, &app).await;
    busy.send(b'Q', &raw::cstr("select pg_sleep(30)")).await;
    sleep_running(&checker, &app).await;
    let started = Instant::now();
    caller
        .write_raw(&extended(
            "select pg_terminate_backend($1::int)",
            &busy_pid.to_string(),
        ))
        .await
        .unwrap();
    let answer = caller.until_ready().await;
    assert_eq!(raw::tags(&answer), "12TDCZ");
    assert_eq!(value(&answer).as_deref(), Some("t"));
    expect_terminated(&mut busy, Duration::from_secs(5)).await;
    wait_until(10, "the terminated client's query to stop", || async {
        !backends(&checker, &app)
            .await
            .iter()
            .any(|(state, q)| state == "active" && q.contains("pg_sleep"))
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(15));

    // A pid no client has: PostgreSQL's warning, and false.
    let answer = caller
        .simple_query("select pg_terminate_backend(2147483000)")
        .await;
    assert_eq!(value(&answer).as_deref(), Some("f"));
    let (severity, code, message) = report(&answer, b'N').expect("a warning");
    assert_eq!((severity.as_str(), code.as_str()), ("WARNING", "01000"));
    assert_eq!(
        message,
        "PID 2147483000 is not a PostgreSQL backend process"
    );

    // A server's pid is the server's business: its answer comes through.
    caller
        .write_raw(&extended("select pg_terminate_backend($1)", "1"))
        .await
        .unwrap();
    let answer = caller.until_ready().await;
    assert_eq!(value(&answer).as_deref(), Some("f"));
    let (_, _, message) = report(&answer, b'N').expect("the server's warning");
    assert_eq!(message, "PID 1 is not a PostgreSQL backend process");

    // Its own pid: the caller's session ends, as a backend that terminates itself.
    caller
        .write_raw(&raw::message(
            b'Q',
            &raw::cstr(&format!("select pg_terminate_backend({caller_pid})")),
        ))
        .await
        .unwrap();
    expect_terminated(&mut caller, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_client_by_its_pid_cancels_its_statement_only() {
    let proxy = TestProxy::start(|_| {}).await;
    let checker = superuser().await;
    let (mut caller, _) = login(&proxy, "signals_canceller").await;
    let app = common::unique("signals_cancelled");
    let (mut busy, busy_pid) = login(&proxy, &app).await;
    busy.send(b'Q', &raw::cstr("select pg_sleep(30)")).await;
    sleep_running(&checker, &app).await;
    let started = Instant::now();
    let answer = caller
        .simple_query(&format!("select pg_cancel_backend({busy_pid});"))
        .await;
    assert_eq!(value(&answer).as_deref(), Some("t"));
    let result = busy.until_ready().await;
    let (_, code, _) = report(&result, b'E').expect("the cancelled query's error");
    assert_eq!(code, "57014");
    assert!(started.elapsed() < Duration::from_secs(15));
    // The cancelled client goes on.
    let again = busy.simple_query("select 1").await;
    assert_eq!(value(&again).as_deref(), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_clients_of_the_same_user_can_be_signalled() {
    let proxy = TestProxy::start(|_| {}).await;
    let (mut target, target_pid) = login(&proxy, "signals_other_user").await;
    // Binary parameter and result formats (tokio-postgres's), as user `app`.
    let other = proxy.connect("signals_app").await;
    let err = other
        .query_one("select pg_terminate_backend($1)", &[&target_pid])
        .await
        .expect_err("another user's client");
    assert_eq!(err.code().map(|c| c.code()), Some("42501"));
    assert!(err
        .as_db_error()
        .is_some_and(|e| e.message() == "permission denied to terminate process"));
    // The same user, with binary formats.
    let mut config = proxy.pg_config("signals_md5");
    config.user("app_md5");
    let same = common::connect_with(&config).await;
    let row = same
        .query_one("select pg_terminate_backend($1)", &[&target_pid])
        .await
        .expect("terminated");
    assert!(row.get::<_, bool>(0));
    expect_terminated(&mut target, Duration::from_secs(5)).await;
    // Both callers go on.
    for client in [&other, &same] {
        let one: i32 = client.query_one("select 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);
    }
}

/// The NotificationResponses in `messages`, as (sender pid, channel, payload).
fn notifications(messages: &[Message]) -> Vec<(i32, String)> {
    messages
        .iter()
        .filter(|m| m.tag == b'A')
        .map(|m| {
            let pid = i32::from_be_bytes(m.body[..4].try_into().unwrap());
            let rest = String::from_utf8_lossy(&m.body[4..]).replace('\0', " ");
            (pid, rest.trim().to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_names_the_client_that_sent_it_on_its_own_connection() {
    let proxy = TestProxy::start(|_| {}).await;
    let (mut listener, listener_pid) = login(&proxy, "signals_listener").await;
    let (mut other, other_pid) = login(&proxy, "signals_notifier").await;
    listener.simple_query("LISTEN signals_channel").await;
    // Its own NOTIFY: the sender is the client itself, as PostgreSQL would say.
    let own = listener
        .simple_query("NOTIFY signals_channel, 'mine'")
        .await;
    assert_eq!(
        notifications(&own),
        vec![(listener_pid, "signals_channel mine".to_string())]
    );
    // Another client's: not the listener's id (a server's, never one of pgsplit's).
    other.simple_query("NOTIFY signals_channel, 'theirs'").await;
    let mut got = Vec::new();
    while got.is_empty() {
        let m = listener.recv_within(10).await.expect("the notification");
        got = notifications(&[m]);
    }
    let (sender, text) = &got[0];
    assert_eq!(text, "signals_channel theirs");
    assert_ne!(*sender, listener_pid);
    assert_ne!(*sender, other_pid);
    assert!(*sender < 1 << 22, "a server's process id: {sender}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_waiting_for_a_server_connection_is_terminated_at_once() {
    let proxy = TestProxy::start(|c| c.pool.max_size = 1).await;
    let (mut holder, _) = login(&proxy, "signals_holder").await;
    let (mut waiter, waiter_pid) = login(&proxy, "signals_waiter").await;
    let (mut caller, _) = login(&proxy, "signals_terminator").await;
    // The pool's only connection stays with `holder`'s open transaction.
    holder.simple_query("BEGIN").await;
    holder.simple_query("SELECT 1").await;
    waiter.send(b'Q', &raw::cstr("SELECT 2")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The caller's own statement is answered without a server connection.
    let answer = caller
        .simple_query(&format!("select pg_terminate_backend({waiter_pid})"))
        .await;
    assert_eq!(value(&answer).as_deref(), Some("t"));
    // Far sooner than the 30 s checkout timeout of the test config.
    expect_terminated(&mut waiter, Duration::from_secs(5)).await;
    holder.simple_query("COMMIT").await;
    let again = caller.simple_query("SELECT 3").await;
    assert_eq!(value(&again).as_deref(), Some("3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_statement_of_the_call_is_answered_while_it_exists() {
    let proxy = TestProxy::start(|_| {}).await;
    let (mut caller, _) = login(&proxy, "signals_named").await;
    let (_idle, idle_pid) = login(&proxy, "signals_named_target").await;
    let pid = idle_pid.to_string();
    let mut batch = raw::parse("cancel_it", "SELECT pg_cancel_backend($1)");
    batch.extend(bind_text("cancel_it", &pid));
    batch.extend(raw::execute(""));
    batch.extend(raw::sync());
    caller.write_raw(&batch).await.unwrap();
    let answer = caller.until_ready().await;
    assert_eq!(raw::tags(&answer), "12DCZ");
    // An idle client has nothing to cancel; PostgreSQL still answers true.
    assert_eq!(value(&answer).as_deref(), Some("t"));
    // Closed, the statement is gone: the error is the server's, as without pgsplit.
    let mut batch = raw::close_statement("cancel_it");
    batch.extend(bind_text("cancel_it", &pid));
    batch.extend(raw::execute(""));
    batch.extend(raw::sync());
    caller.write_raw(&batch).await.unwrap();
    let answer = caller.until_ready().await;
    let (_, code, _) = report(&answer, b'E').expect("an error for the closed statement");
    assert_eq!(code, "26000");
}
