//! Unit tests for `crate::clients`: the registry's counts, `SHOW CLIENTS` rows and cancel
//! requests.

use super::*;
use crate::backend::{NodeAddr, NodeTls};

fn new_client(user: &str) -> NewClient {
    NewClient {
        user: user.into(),
        database: "app".into(),
        peer: SocketAddr::from(([127, 0, 0, 1], 5000)),
        connected_at: Instant::now(),
    }
}

fn target(node: &str, pid: i32) -> CancelTarget {
    CancelTarget {
        node: Arc::new(NodeAddr {
            name: node.into(),
            host: "127.0.0.1".into(),
            port: 1,
            tls: NodeTls::disabled(),
        }),
        pid,
        secret: Arc::from(&[1u8, 2, 3, 4][..]),
    }
}

#[test]
fn connections_are_counted_from_accept_until_dropped() {
    let clients = Arc::new(Clients::default());
    let a = clients.connect();
    let b = clients.connect();
    assert_eq!((a.count, b.count), (1, 2));
    assert_eq!(clients.connections(), 2);
    // Counted whether or not they log in.
    assert!(clients.is_empty());
    drop(a);
    assert_eq!(clients.connections(), 1);
    assert_eq!(clients.connect().count, 2);
    drop(b);
    assert_eq!(clients.connections(), 0);
}

#[test]
fn entries_live_as_long_as_their_session() {
    let clients = Arc::new(Clients::default());
    let a = clients.register(new_client("a"));
    let b = clients.register(new_client("b"));
    assert_ne!(a.pid, b.pid);
    let until = Instant::now();
    a.update(|now| now.pinned_until = Some(until));
    let rows = clients.rows();
    let ids: Vec<i32> = rows.iter().map(|(r, _)| r.id).collect();
    assert_eq!(ids, vec![a.pid, b.pid]);
    assert_eq!(rows[0].0.user, "a");
    assert_eq!(rows[0].0.now.pinned_until, Some(until));
    assert!(rows[1].0.now.pinned_until.is_none());
    assert_eq!(clients.len(), 2);
    drop(b);
    assert_eq!(clients.rows().len(), 1);
    drop(a);
    assert!(clients.rows().is_empty());
    assert!(clients.is_empty());
}

#[test]
fn a_row_names_the_node_serving_the_client_now() {
    let clients = Arc::new(Clients::default());
    let client = clients.register(new_client("a"));
    assert_eq!(clients.rows()[0].1, None);
    client.set_target(Some(target("replica1", 7)));
    assert_eq!(clients.rows()[0].1.as_deref(), Some("replica1"));
    client.set_target(None);
    assert_eq!(clients.rows()[0].1, None);
}

#[test]
fn cancel_needs_the_right_secret_and_a_target() {
    let clients = Arc::new(Clients::default());
    let key = clients.register(new_client("a"));
    assert!(clients.cancel(key.pid, &key.secret.to_be_bytes()).is_none());
    key.set_target(Some(target("primary", 99)));
    // Nothing outstanding yet: ignored.
    assert!(clients.cancel(key.pid, &key.secret.to_be_bytes()).is_none());
    key.waiting();
    assert!(key.sent(true).is_none());
    let wrong = key.secret.wrapping_add(1).to_be_bytes();
    assert!(clients.cancel(key.pid, &wrong).is_none());
    let found = clients.cancel(key.pid, &key.secret.to_be_bytes());
    assert_eq!(found.map(|t| t.pid), Some(99));
    let pid = key.pid;
    drop(key);
    assert!(clients.cancel(pid, &[0; 4]).is_none());
    assert!(clients.is_empty());
}

#[tokio::test]
async fn a_cancel_for_a_waiting_statement_is_kept_and_wakes_the_session() {
    let clients = Arc::new(Clients::default());
    let key = clients.register(new_client("a"));
    let secret = key.secret.to_be_bytes();
    key.waiting();
    let wait = tokio::time::timeout(std::time::Duration::from_millis(50), key.requested());
    assert!(wait.await.is_err(), "no cancel yet");
    let key = Arc::new(key);
    let waiter = tokio::spawn({
        let key = key.clone();
        async move { key.requested().await }
    });
    tokio::task::yield_now().await;
    assert!(clients.cancel(key.pid, &secret).is_none());
    tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
        .await
        .expect("woken")
        .expect("joined");
    assert!(key.take_requested());
    assert!(!key.take_requested());
    // Kept until the statement reaches its server, then sent there.
    key.set_target(Some(target("replica1", 7)));
    key.waiting();
    assert!(clients.cancel(key.pid, &secret).is_none());
    assert_eq!(key.sent(true).map(|t| t.pid), Some(7));
    assert_eq!(clients.cancel(key.pid, &secret).map(|t| t.pid), Some(7));
    // A cancel while nothing is outstanding is not kept for the next statement.
    assert!(key.sent(false).is_none());
    assert!(clients.cancel(key.pid, &secret).is_none());
    key.waiting();
    assert!(key.sent(true).is_none());
}

#[tokio::test]
async fn a_client_signals_another_of_its_user_by_process_id() {
    let clients = Arc::new(Clients::default());
    let caller = clients.register(new_client("app"));
    let target_client = Arc::new(clients.register(new_client("app")));
    let other_user = clients.register(new_client("admin"));
    assert!(is_client_pid(i64::from(caller.pid)));

    // Cancel: sent to the server running the target's statement.
    target_client.set_target(Some(target("primary", 41)));
    target_client.waiting();
    target_client.sent(true);
    let (how, server) = caller.signal(target_client.pid, Signal::Cancel);
    assert_eq!((how, server.map(|t| t.pid)), (Signaled::Sent, Some(41)));

    // Terminate: the target's session is woken.
    let waiter = tokio::spawn({
        let target_client = target_client.clone();
        async move { target_client.terminated().await }
    });
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    let (how, server) = caller.signal(target_client.pid, Signal::Terminate);
    assert_eq!((how, server.is_none()), (Signaled::Sent, true));
    tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
        .await
        .expect("woken")
        .expect("joined");

    // Another user's client, and a process id no client has.
    let (how, _) = caller.signal(other_user.pid, Signal::Terminate);
    assert_eq!(how, Signaled::NotAllowed);
    let gone = other_user.pid;
    drop(other_user);
    assert_eq!(
        caller.signal(gone, Signal::Cancel).0,
        Signaled::NoSuchClient
    );
}
