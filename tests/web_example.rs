//! The web-pattern example (`examples/web_session.rs`) against an in-process pgsplit: with
//! replay paused on both replicas, every page read that carries the user's causal token
//! (from the session cookie, in a leading comment, on any connection of the page service's
//! pool, which never writes) sees the user's write on the primary, while the same read
//! without the token is stale on a replica; once replay resumes, token reads are still
//! never stale.

mod common;

#[allow(dead_code)]
#[path = "../examples/web_session.rs"]
mod web_session;

use std::sync::Arc;

use common::{node_port, TestProxy};

/// Waits until both replicas (read directly, not through pgsplit) have replayed the rows
/// of `ids` (patiently: another test may hold replay paused for a while).
async fn replicas_have_rows(ids: &[String]) {
    for name in ["replica1", "replica2"] {
        let replica = common::replica_superuser(node_port(name)).await;
        let sql = format!(
            "select count(*) from {} where id = any($1)",
            web_session::TABLE
        );
        common::wait_until(120, "the replicas have the users' rows", || async {
            let row = replica.query_one(&sql, &[&ids]).await;
            matches!(row, Ok(r) if r.get::<_, i64>(0) == ids.len() as i64)
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_users_read_their_writes_with_the_token_in_their_session_cookie() {
    let proxy = TestProxy::start(|c| c.routing.enabled = true).await;
    let url = format!("postgres://app:secret@127.0.0.1:{}/app", proxy.port());
    let users = 6;
    let app = Arc::new(web_session::App::new(&url, 3).unwrap());
    let ids = app.setup(users).await.unwrap();
    replicas_have_rows(&ids).await;

    let paused = common::ReplayPaused::hold().await;
    let routing = proxy.proxy.routing();
    let held_for_tokens = routing
        .stats
        .by_reason(pgsplit::router::Reason::AwaitingToken);
    let report = app.rounds(&ids, 3).await.unwrap();
    eprintln!("replay paused:\n{report}");
    let reads = users * 3;
    assert_eq!(report.reads, reads);
    assert_eq!(
        report.stale, 0,
        "a read with the token was stale:\n{report}"
    );
    assert!(
        report.served.keys().all(|node| !node.replica),
        "no replica has replayed the writes, so the token's reads run on the primary:\n{report}"
    );
    assert_eq!(report.unguarded_reads, reads);
    assert_eq!(
        report.unguarded_stale, reads,
        "without the token, reads go to the paused replicas and miss the write:\n{report}"
    );
    assert!(report.unguarded_served.keys().all(|node| node.replica));
    assert!(
        routing
            .stats
            .by_reason(pgsplit::router::Reason::AwaitingToken)
            >= held_for_tokens + reads as u64,
        "each page read waited for its token"
    );
    drop(paused);

    let report = app.rounds(&ids, 3).await.unwrap();
    eprintln!("replay running:\n{report}");
    assert_eq!(report.reads, reads);
    assert_eq!(
        report.stale, 0,
        "a read with the token was stale:\n{report}"
    );
    app.cleanup().await.unwrap();
}

/// A cookie value that is not a token (it could end the SQL comment) is left out of the
/// statement: the read runs without it.
#[test]
fn only_token_characters_go_into_the_comment() {
    assert!(web_session::is_token("8Hq2+/x=:c1:7300:1:16/B374D848"));
    assert!(!web_session::is_token(""));
    assert!(!web_session::is_token("x */ DROP TABLE t; /*"));
    assert!(!web_session::is_token("a b"));
}
