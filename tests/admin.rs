//! The admin console (database `pgsplit`): who may log in, what each SHOW reports about a
//! running proxy, and how it answers what it does not understand. SET and RELOAD changing
//! the lag guard's behaviour are tested end to end in tests/lag.rs.

mod common;

use std::time::Duration;

use common::{admin, admin_rows, admin_value, sqlstate, try_admin, wait_until, TestProxy};

#[tokio::test]
async fn only_admin_users_with_the_right_password_get_in() {
    let proxy = TestProxy::start(|_| {}).await;
    let e = try_admin(&proxy, "app", common::APP_PASSWORD)
        .await
        .expect_err("app is not an admin user");
    assert_eq!(sqlstate(&e), "42501", "{}", common::describe(&e));
    let e = try_admin(&proxy, "admin", "wrong")
        .await
        .expect_err("wrong password");
    assert_eq!(sqlstate(&e), "28P01");
    let e = try_admin(&proxy, "nobody", "x")
        .await
        .expect_err("unknown user");
    assert_eq!(sqlstate(&e), "28P01");
    let console = admin(&proxy).await;
    let help = admin_rows(&console, "SHOW HELP").await;
    assert!(help.len() >= 8, "{help:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_pools_clients_and_stats_describe_the_running_proxy() {
    let proxy = TestProxy::start(|c| {
        c.routing.enabled = true;
        c.routing.read_your_writes = pgsplit::config::ReadYourWrites::Time;
    })
    .await;
    let console = admin(&proxy).await;

    let replicas = admin_rows(&console, "SHOW REPLICAS").await;
    assert_eq!(replicas.len(), 2, "{replicas:?}");
    for name in ["replica1", "replica2"] {
        assert_eq!(
            admin_value(&replicas, name, "state").as_deref(),
            Some("healthy")
        );
        let lag: u64 = admin_value(&replicas, name, "lag_bytes")
            .unwrap()
            .parse()
            .unwrap();
        assert!(lag < 16 << 20, "{name} lag {lag}");
    }

    // A client writes, then reads: pinned to the primary for pin_after_write.
    let client = proxy.connect("admin_test_writer").await;
    let table = common::unique("admin_pin");
    client
        .batch_execute(&format!("create temp table {table} (x int)"))
        .await
        .unwrap_or_else(|e| panic!("{}", common::describe(&e)));
    let reader = proxy.connect("admin_test_reader").await;
    for _ in 0..4 {
        reader.simple_query("select 1").await.unwrap();
    }
    let clients = admin_rows(&console, "SHOW CLIENTS").await;
    assert_eq!(clients.len(), 2, "{clients:?}");
    let pinned: Vec<_> = clients
        .iter()
        .filter_map(|r| r.iter().find(|(c, _)| c == "pinned_for")?.1.clone())
        .collect();
    // The temp table binds the writer to its session; either way it holds no pin on the
    // reader, and at least one client (the writer) shows a pin.
    assert_eq!(pinned.len(), 1, "one pinned client: {clients:?}");

    let pools = admin_rows(&console, "SHOW POOLS").await;
    let primary_pool = pools
        .iter()
        .find(|r| r[0].1.as_deref() == Some("primary"))
        .unwrap_or_else(|| panic!("a pool on the primary: {pools:?}"));
    let size: usize = primary_pool[3].1.as_deref().unwrap().parse().unwrap();
    assert!(size >= 1, "{pools:?}");

    let stats = admin_rows(&console, "SHOW STATS").await;
    let count = |key: &str| -> u64 {
        admin_value(&stats, key, "value")
            .unwrap_or_else(|| panic!("{key} in {stats:?}"))
            .parse()
            .unwrap()
    };
    let replica_reads = count("routed_to.replica1") + count("routed_to.replica2");
    assert!(
        replica_reads >= 4,
        "the reader's reads went to replicas: {stats:?}"
    );
    assert!(count("reason.read") >= 4);
    assert!(count("pins") >= 1);
    assert_eq!(count("clients"), 2);

    drop(client);
    wait_until(5, "a client that leaves leaves SHOW CLIENTS", || async {
        admin_rows(&console, "SHOW CLIENTS").await.len() == 1
    })
    .await;
}

#[tokio::test]
async fn show_config_lists_settings_without_passwords() {
    let proxy = TestProxy::start(|_| {}).await;
    let console = admin(&proxy).await;
    let config = admin_rows(&console, "show config;").await;
    assert_eq!(
        admin_value(&config, "lag.max_replica_lag", "changeable").as_deref(),
        Some("true")
    );
    assert_eq!(
        admin_value(&config, "pool.max_size", "changeable").as_deref(),
        Some("false")
    );
    let secret = config
        .iter()
        .filter(|r| {
            r[0].1.as_deref().is_some_and(|k| {
                // nodes[i].allow_cleartext_password is a flag, not a secret.
                k.ends_with("password") && !k.ends_with("allow_cleartext_password")
            })
        })
        .filter_map(|r| r[1].1.clone())
        .find(|v| v != "********");
    assert_eq!(secret, None, "passwords must not show");
}

#[tokio::test]
async fn bad_commands_get_errors_and_the_console_carries_on() {
    let proxy = TestProxy::start(|_| {}).await;
    let console = admin(&proxy).await;
    let cases = [
        ("SELECT 1", "42601"),
        ("SHOW nonsense", "42704"),
        ("SET pool_size = 3", "42704"),
        ("SET max_replica_lag = 'lots'", "22023"),
        ("SET max_replica_lag xé", "42601"), // once a panic: slicing inside 'é'
        ("SET readmit_percent = 0", "22023"),
        ("RELOAD", "0A000"), // started without a file
    ];
    for (sql, expected) in cases {
        let e = console
            .simple_query(sql)
            .await
            .err()
            .unwrap_or_else(|| panic!("{sql} must fail"));
        assert_eq!(sqlstate(&e), expected, "{sql}: {}", common::describe(&e));
    }
    // Nothing changed, and the extended protocol is refused without breaking the session.
    let value = admin_rows(&console, "SHOW max_replica_lag").await;
    assert_eq!(value[0][0].1.as_deref(), Some("16MB"));
    let e = console
        .query("SHOW lag", &[])
        .await
        .expect_err("extended protocol");
    assert_eq!(sqlstate(&e), "0A000");
    let rows = tokio::time::timeout(Duration::from_secs(5), admin_rows(&console, "SHOW LAG"))
        .await
        .expect("the console still answers");
    assert_eq!(rows.len(), 2);
}

/// `SET check_interval` changes how often the monitor checks, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_interval_changes_live() {
    let proxy = TestProxy::start(|c| c.routing.enabled = true).await;
    let console = admin(&proxy).await;
    let checks = || -> u64 {
        proxy
            .proxy
            .board()
            .replicas()
            .iter()
            .map(|r| r.checks)
            .min()
            .unwrap()
    };
    let checks_in_a_second = || async {
        let before = checks();
        tokio::time::sleep(Duration::from_secs(1)).await;
        checks() - before
    };
    let slow = checks_in_a_second().await;
    assert!(
        slow <= 6,
        "250 ms interval: about 4 checks a second, got {slow}"
    );
    admin_rows(&console, "SET check_interval = '50ms'").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fast = checks_in_a_second().await;
    assert!(
        fast >= 10,
        "50 ms interval: about 20 checks a second, got {fast}"
    );
}
