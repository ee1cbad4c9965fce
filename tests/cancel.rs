//! Cancel requests through pgsplit: they reach the server running the client's query,
//! only that one, and the client's connection stays usable.

mod common;

use std::time::{Duration, Instant};

use common::{backends, describe, show, sqlstate, superuser, wait_until, TestProxy};
use tokio_postgres::{Client, NoTls};

/// Waits until a backend with this application_name is running a query containing
/// `needle`.
async fn wait_for_running(checker: &Client, app: &str, needle: &str) {
    wait_until(20, &format!("{app} to be running {needle}"), || async {
        backends(checker, app)
            .await
            .iter()
            .any(|(state, query)| state == "active" && query.contains(needle))
    })
    .await;
}

/// Runs `query` alongside `side`, which waits for the query to be running and then acts
/// on it. The query may end before `side` returns (a cancel can take effect before the
/// cancel connection is closed); callers check the query's result, so a query that ended
/// for another reason still fails the test. A query that ended and left `side` waiting
/// (it was never seen running: it failed at once, or ran elsewhere) fails the test with
/// the query's result, 5 s later.
async fn alongside<Q, S>(query: Q, side: S) -> (Q::Output, S::Output)
where
    Q: std::future::Future,
    Q::Output: std::fmt::Debug,
    S: std::future::Future,
{
    let ended = std::sync::Mutex::new(None);
    let query = async {
        let out = query.await;
        *ended.lock().unwrap() = Some((Instant::now(), format!("{out:?}")));
        out
    };
    let side = async {
        let stranded = async {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if let Some((at, out)) = ended.lock().unwrap().as_ref() {
                    if at.elapsed() > Duration::from_secs(5) {
                        return out.clone();
                    }
                }
            }
        };
        tokio::select! {
            done = tokio::time::timeout(Duration::from_secs(30), side) => {
                done.expect("the side task did not finish in 30 s")
            }
            out = stranded => panic!("the query ended before the side task acted on it: {out}"),
        }
    };
    tokio::join!(query, side)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_query() {
    let proxy = TestProxy::start(|_| {}).await;
    let checker = superuser().await;
    let app = common::unique("cancel_simple");
    let client = proxy.connect(&app).await;

    for (round, extended) in [(0, false), (1, true), (2, false)] {
        let started = Instant::now();
        let query = {
            let client = &client;
            async move {
                if extended {
                    client
                        .query("select pg_sleep($1)", &[&10f64])
                        .await
                        .map(|_| ())
                } else {
                    client.simple_query("select pg_sleep(10)").await.map(|_| ())
                }
            }
        };
        let cancel = async {
            wait_for_running(&checker, &app, "pg_sleep").await;
            let at = Instant::now();
            client
                .cancel_token()
                .cancel_query(NoTls)
                .await
                .expect("send cancel request");
            at
        };
        let (result, cancelled_at) = alongside(query, cancel).await;
        let done = Instant::now();
        let e = result.expect_err("the query was not cancelled");
        assert_eq!(sqlstate(&e), "57014", "round {round}: {}", describe(&e));
        assert!(
            done - cancelled_at < Duration::from_secs(2),
            "round {round}: the query ended {:?} after the cancel request",
            done - cancelled_at
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(show(&client, "select 'still usable'").await, "still usable");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_inside_a_transaction() {
    let proxy = TestProxy::start(|_| {}).await;
    let checker = superuser().await;
    let app = common::unique("cancel_tx");
    let client = proxy.connect(&app).await;
    client.batch_execute("BEGIN").await.unwrap();
    let query = client.simple_query("select pg_sleep(10)");
    let cancel = async {
        wait_for_running(&checker, &app, "pg_sleep").await;
        client.cancel_token().cancel_query(NoTls).await.unwrap();
    };
    let (result, ()) = alongside(query, cancel).await;
    assert_eq!(sqlstate(&result.unwrap_err()), "57014");
    let e = client.simple_query("select 1").await.unwrap_err();
    assert_eq!(sqlstate(&e), "25P02");
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(show(&client, "select 1").await, "1");
}

/// With a pool of one, a client waiting for the connection gets it once the running
/// query is cancelled, and the cancel does not touch the waiting client's query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_with_a_waiting_client() {
    let proxy = TestProxy::start(|c| c.pool.max_size = 1).await;
    let checker = superuser().await;
    let app = common::unique("cancel_pool1");
    let sleeper = proxy.connect(&app).await;
    let waiter = proxy.connect(&format!("{app}_waiter")).await;

    let sleep = sleeper.simple_query("select pg_sleep(10)");
    let others = async {
        wait_for_running(&checker, &app, "pg_sleep").await;
        // The waiter queues for the only server connection.
        let waiting = waiter.query_one("select 'waited'::text", &[]);
        let cancel = async {
            wait_for_waiter(&proxy).await;
            sleeper.cancel_token().cancel_query(NoTls).await.unwrap();
        };
        let (row, ()) = tokio::join!(waiting, cancel);
        row
    };
    let (slept, waited) = tokio::join!(sleep, others);
    assert_eq!(sqlstate(&slept.unwrap_err()), "57014");
    assert_eq!(
        waited
            .expect("the waiting client's query")
            .get::<_, &str>(0),
        "waited"
    );
    assert_eq!(show(&sleeper, "select 1").await, "1");
}

/// Waits until some client of `proxy` is queued for a server connection.
async fn wait_for_waiter(proxy: &TestProxy) {
    wait_until(20, "a client to wait for a server connection", || async {
        proxy
            .proxy
            .pools()
            .all()
            .iter()
            .any(|(_, pool)| pool.status().waiting > 0)
    })
    .await;
}

/// With a pool of one, a client queued for the connection sends a cancel: the query
/// that holds the connection (another client's) is not cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_from_a_waiting_client_does_not_hit_the_running_one() {
    let proxy = TestProxy::start(|c| c.pool.max_size = 1).await;
    let checker = superuser().await;
    let app = common::unique("cancel_from_waiter");
    let sleeper = proxy.connect(&app).await;
    let waiter = proxy.connect(&format!("{app}_waiter")).await;
    let sleep = sleeper.simple_query("select pg_sleep(1.5)");
    let others = async {
        wait_for_running(&checker, &app, "pg_sleep").await;
        let waiting = waiter.simple_query("select 'waited'");
        let cancel = async {
            wait_for_waiter(&proxy).await;
            waiter.cancel_token().cancel_query(NoTls).await.unwrap();
        };
        let (waited, ()) = tokio::join!(waiting, cancel);
        waited
    };
    let (slept, waited) = tokio::join!(sleep, others);
    slept.unwrap_or_else(|e| {
        panic!(
            "the waiting client's cancel hit another client: {}",
            describe(&e)
        )
    });
    // Whether the waiting query itself was cancelled or ran is up to the proxy; either
    // way the waiting client is usable afterwards.
    if let Err(e) = waited {
        assert_eq!(sqlstate(&e), "57014", "{}", describe(&e));
    }
    assert_eq!(show(&waiter, "select 1").await, "1");
}

/// A client that has no query running sends a cancel while another client runs a
/// query on the server connection the first one used before: nothing is cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_cancel_does_not_hit_another_client() {
    let proxy = TestProxy::start(|c| c.pool.max_size = 1).await;
    let checker = superuser().await;
    let app = common::unique("cancel_stale");
    let idle = proxy.connect(&format!("{app}_idle")).await;
    let busy = proxy.connect(&app).await;
    // Both have used the only server connection.
    assert_eq!(
        show(&idle, "select pg_backend_pid()").await,
        show(&busy, "select pg_backend_pid()").await
    );

    let sleep = busy.simple_query("select pg_sleep(1.5)");
    let cancel = async {
        wait_for_running(&checker, &app, "pg_sleep").await;
        idle.cancel_token().cancel_query(NoTls).await.unwrap();
    };
    let (slept, ()) = alongside(sleep, cancel).await;
    slept.unwrap_or_else(|e| panic!("another client's cancel hit this query: {}", describe(&e)));
    assert_eq!(show(&idle, "select 1").await, "1");
}

/// A cancel request with a key nobody has is ignored, and the proxy carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_cancel_key_is_ignored() {
    let proxy = TestProxy::start(|_| {}).await;
    let client = proxy.connect("cancel_unknown").await;
    let mut raw = common::raw::RawConn::connect(proxy.addr).await;
    let mut packet = Vec::new();
    packet.extend_from_slice(&16i32.to_be_bytes());
    packet.extend_from_slice(&80877102i32.to_be_bytes());
    packet.extend_from_slice(&123456i32.to_be_bytes());
    packet.extend_from_slice(&654321i32.to_be_bytes());
    raw.write_raw(&packet).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), raw.recv()).await;
    assert!(
        matches!(closed, Ok(None)),
        "the proxy should just close a cancel connection, got {closed:?}"
    );
    assert_eq!(show(&client, "select 1").await, "1");
}

/// With a pool of one held by another client's query, a client queued for the connection
/// cancels its own query: it fails with 57014 at once (before: the cancel found no server
/// and was dropped, and the query ran in full once the connection came free), and the
/// query holding the connection is not touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_of_a_query_waiting_for_a_server_is_not_lost() {
    let proxy = TestProxy::start(|c| {
        c.pool.max_size = 1;
        c.pool.checkout_timeout = pgsplit::config::Duration::from_secs(30);
    })
    .await;
    let checker = superuser().await;
    let app = common::unique("cancel_queued");
    let holder = proxy.connect(&app).await;
    let queued = proxy.connect(&format!("{app}_queued")).await;
    let hold = holder.simple_query("select pg_sleep(3)");
    let others = async {
        wait_for_running(&checker, &app, "pg_sleep").await;
        let query = async {
            let r = queued.simple_query("select pg_sleep(10)").await;
            (r, Instant::now())
        };
        let cancel = async {
            wait_for_waiter(&proxy).await;
            queued.cancel_token().cancel_query(NoTls).await.unwrap();
            Instant::now()
        };
        tokio::join!(query, cancel)
    };
    let (held, ((result, done), cancelled_at)) = tokio::join!(hold, others);
    held.unwrap_or_else(|e| panic!("the cancel hit the other client: {}", describe(&e)));
    let e = result.expect_err("the queued query was not cancelled");
    assert_eq!(sqlstate(&e), "57014", "{}", describe(&e));
    assert!(
        done.saturating_duration_since(cancelled_at) < Duration::from_secs(1),
        "the queued query ended {:?} after its cancel",
        done.saturating_duration_since(cancelled_at)
    );
    assert_eq!(show(&queued, "select 'usable'").await, "usable");
}
