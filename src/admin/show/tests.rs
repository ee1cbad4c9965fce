//! Unit tests for `crate::admin::show`.

use super::*;
use crate::lag::{HealthState, LagHistory};

fn report(node: usize, state: HealthState, since: Instant) -> ReplicaReport {
    ReplicaReport {
        node,
        state,
        since,
        reason: "lag 6.6 MB > max 2.0 MB".into(),
        lag_bytes: Some(6_920_000),
        lag: Some(Duration::from_millis(1250)),
        ejections: 1,
        checks: 10,
        history: LagHistory::new(),
    }
}

fn names() -> Vec<String> {
    vec!["primary".into(), "replica1".into(), "replica2".into()]
}

fn infos() -> Vec<NodeInfo> {
    names()
        .into_iter()
        .enumerate()
        .map(|(index, name)| NodeInfo {
            index,
            name,
            host: "127.0.0.1".into(),
            port: 5432 + index as u16,
            origin: Origin::Config,
            noloadbalance: false,
            listed: true,
        })
        .collect()
}

#[test]
fn replicas_show_state_lag_reason_and_reads() {
    let t0 = Instant::now();
    let now = t0 + Duration::from_secs(3);
    let mut routed = Replica::new(1, 1);
    routed.reads = 42;
    let t = replicas(
        &names(),
        &[report(1, HealthState::Lagging, t0)],
        &[routed],
        now,
    );
    assert_eq!(t.get(0, "node"), Some("replica1"));
    assert_eq!(t.get(0, "state"), Some("lagging"));
    assert_eq!(t.get(0, "lag_bytes"), Some("6920000"));
    assert_eq!(t.get(0, "lag_seconds"), Some("1.250"));
    assert_eq!(t.get(0, "reason"), Some("lag 6.6 MB > max 2.0 MB"));
    assert_eq!(t.get(0, "in_state"), Some("3.0 s"));
    assert_eq!(t.get(0, "reads_served"), Some("42"));
    assert_eq!(t.get(0, "ejections"), Some("1"));
}

#[test]
fn lag_shows_percentiles_and_ejected_shares() {
    let t0 = Instant::now();
    let mut r = report(2, HealthState::Healthy, t0);
    // 10 checks: 9 at 1 MB, one at 3 MB. Threshold 2 MB: 10% ejected; half (1 MB): 10%
    // (1 MB is not above 1 MB); double (4 MB): none.
    for i in 0..10u64 {
        let bytes = if i == 9 { 3 << 20 } else { 1 << 20 };
        r.history.record(
            t0 + Duration::from_millis(250 * i),
            bytes,
            Some(Duration::ZERO),
        );
    }
    let thresholds = LagThresholds {
        max_bytes: Some(2 << 20),
        max_lag: None,
        ..LagThresholds::default()
    };
    let now = t0 + Duration::from_millis(2500);
    let t = lag(&names(), &[r], &thresholds, now);
    assert_eq!(t.get(0, "node"), Some("replica2"));
    assert_eq!(t.get(0, "samples"), Some("10"));
    assert_eq!(t.get(0, "bytes_p50"), Some("1.0 MB"));
    assert_eq!(t.get(0, "bytes_max"), Some("3.0 MB"));
    assert_eq!(t.get(0, "seconds_p99"), Some("0.000"));
    assert_eq!(t.get(0, "threshold"), Some("2.0 MB"));
    assert_eq!(t.get(0, "ejected_at_threshold"), Some("10.0%"));
    assert_eq!(t.get(0, "ejected_at_half"), Some("10.0%"));
    assert_eq!(t.get(0, "ejected_at_double"), Some("0.0%"));
    // No checks yet: the row is there with the threshold and nothing else.
    let empty = lag(
        &names(),
        &[report(1, HealthState::Down, t0)],
        &thresholds,
        now,
    );
    assert_eq!(empty.get(0, "samples"), Some("0"));
    assert_eq!(empty.get(0, "bytes_p50"), None);
    assert_eq!(empty.get(0, "threshold"), Some("2.0 MB"));
}

#[test]
fn config_hides_passwords_and_marks_what_set_changes() {
    let config = Config::from_toml_str(
        r#"
        [[nodes]]
        name = "primary"
        host = "127.0.0.1"
        role = "primary"
        [[databases]]
        name = "app"
        [[users]]
        name = "admin"
        password = "hunter2"
        "#,
    )
    .unwrap();
    let live = config.lag.with("max_replica_lag", "2MB").unwrap();
    let t = config_table(&config, &live);
    let row = |key: &str| t.rows.iter().position(|r| r[0].as_deref() == Some(key));
    let lag = row("lag.max_replica_lag").unwrap();
    assert_eq!(t.get(lag, "value"), Some("2MB"), "the live value");
    assert_eq!(t.get(lag, "changeable"), Some("true"));
    let port = row("nodes[0].port").unwrap();
    assert_eq!(t.get(port, "changeable"), Some("false"));
    let password = row("users[0].password").unwrap();
    assert_eq!(t.get(password, "value"), Some("********"));
    assert!(t.rows.iter().all(|r| r[1].as_deref() != Some("hunter2")));
    assert!(
        row("proxy.listen").unwrap() < row("pool.max_size").unwrap(),
        "file order"
    );
}

fn config_table(c: &Config, lag: &LagConfig) -> Table {
    config(c, lag)
}

#[test]
fn a_setting_shows_alone() {
    let lag = LagConfig::default();
    let t = setting(&lag, "max_replica_lag").unwrap();
    assert_eq!(t.columns, vec!["max_replica_lag"]);
    assert_eq!(t.get(0, "max_replica_lag"), Some("16MB"));
    assert!(setting(&lag, "monitor_user").is_none());
}

#[test]
fn utc_dates() {
    assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
    assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
    assert_eq!(utc(1_795_000_000), "2026-11-18 11:06:40 UTC");
}

#[test]
fn nodes_show_role_timeline_and_why() {
    use crate::roles::{decide, NodeSeen, Seen, Writer};
    let now = Instant::now();
    let seen = |in_recovery, timeline| NodeSeen {
        last_ok: Some((
            Seen {
                in_recovery,
                timeline: Some(timeline),
            },
            now,
        )),
        failures: 0,
    };
    let roles = decide(
        &[seen(false, 1), seen(false, 2), seen(true, 2)],
        &names(),
        &Writer::Node(0),
        now,
        Duration::from_secs(1),
    );
    let report = RoleReport { roles, changes: 1 };
    let mut healthy = Replica::new(2, 1);
    healthy.state = crate::lag::HealthState::Healthy;
    let lagging = report_of(2);
    let t = nodes(
        &infos(),
        &report,
        &[lagging],
        &[Replica::new(0, 1), Replica::new(1, 1), healthy.clone()],
        now,
    );
    assert_eq!(t.get(0, "role"), Some("diverged"));
    assert_eq!(t.get(0, "timeline"), Some("1"));
    assert_eq!(t.get(0, "writes"), Some("false"));
    assert!(t.get(0, "reason").unwrap().contains("old primary"));
    assert_eq!(t.get(1, "role"), Some("primary"));
    assert_eq!(t.get(1, "writes"), Some("true"));
    assert_eq!(t.get(2, "role"), Some("replica"));
    assert_eq!(t.get(2, "reads"), Some("true"));
    assert_eq!(t.get(2, "role_changes"), Some("1"));
    assert_eq!(t.get(2, "source"), Some("config"));
    assert_eq!(t.get(2, "noloadbalance"), Some("false"));
    // Added from Patroni and tagged noloadbalance (the topology has it out of the
    // rotation); an empty place (index 3) is not shown.
    let mut tagged = infos();
    tagged[2].origin = Origin::Patroni;
    tagged[2].noloadbalance = true;
    let mut excluded = healthy.clone();
    excluded.balanced = false;
    let t = nodes(&tagged, &report, &[], &[excluded], now);
    assert_eq!(t.rows.len(), 3);
    assert_eq!(t.get(2, "source"), Some("patroni"));
    assert_eq!(t.get(2, "noloadbalance"), Some("true"));
    assert_eq!(t.get(2, "reads"), Some("false"));
    assert!(t.get(2, "reason").unwrap().contains("noloadbalance"));
    tagged[2].noloadbalance = false;
    tagged[2].listed = false;
    let t = nodes(&tagged, &report, &[], &[], now);
    assert!(t.get(2, "reason").unwrap().contains("no longer listed"));
    // Out of the rotation for its lag: the reason says so.
    healthy.state = crate::lag::HealthState::Lagging;
    let t = nodes(&infos(), &report, &[report_of(2)], &[healthy], now);
    assert_eq!(t.get(2, "reads"), Some("false"));
    assert!(
        t.get(2, "reason").unwrap().contains("lag 6.6 MB"),
        "{:?}",
        t.get(2, "reason")
    );
}

fn report_of(node: usize) -> ReplicaReport {
    report(node, HealthState::Lagging, Instant::now())
}
