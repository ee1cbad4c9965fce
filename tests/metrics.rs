//! The HTTP endpoint: `/metrics` carries the routing, lag, pool and client figures in
//! Prometheus format, and `/healthz` says whether the primary is reachable.

mod common;

use common::{http_get as get, metric_sample as sample, wait_until, TestProxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_carry_routing_lag_pool_and_client_figures() {
    let proxy = TestProxy::start(|c| c.routing.enabled = true).await;
    let addr = proxy.metrics_addr.expect("metrics enabled");
    let client = proxy.connect("metrics_test").await;
    for _ in 0..6 {
        client.simple_query("select 1").await.unwrap();
    }
    let table = common::unique("metrics_pin");
    client
        .batch_execute(&format!("create table {table} (x int); drop table {table}"))
        .await
        .unwrap();

    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    let value = |series: &str| {
        sample(&body, series).unwrap_or_else(|| panic!("{series} missing from:\n{body}"))
    };
    let replica_reads = value(r#"pgsplit_routed_total{node="replica1"}"#)
        + value(r#"pgsplit_routed_total{node="replica2"}"#);
    assert!(replica_reads >= 6.0, "{body}");
    assert!(value(r#"pgsplit_routed_by_reason_total{reason="read"}"#) >= 6.0);
    assert!(value(r#"pgsplit_routed_by_reason_total{reason="write"}"#) >= 1.0);
    assert!(value("pgsplit_pins_total") >= 1.0);
    for node in ["replica1", "replica2"] {
        let healthy = format!(r#"pgsplit_replica_state{{node="{node}",state="healthy"}}"#);
        assert_eq!(value(&healthy), 1.0);
        let lagging = format!(r#"pgsplit_replica_state{{node="{node}",state="lagging"}}"#);
        assert_eq!(value(&lagging), 0.0);
        let lag = value(&format!(r#"pgsplit_replica_lag_bytes{{node="{node}"}}"#));
        assert!(
            (0.0..16.0 * 1024.0 * 1024.0).contains(&lag),
            "{node} lag {lag}"
        );
        value(&format!(r#"pgsplit_replica_lag_seconds{{node="{node}"}}"#));
        value(&format!(
            r#"pgsplit_replica_ejections_total{{node="{node}"}}"#
        ));
    }
    assert!(
        value(r#"pgsplit_pool_connections{node="primary",database="app",user="app",state="idle"}"#)
            >= 1.0
    );
    assert_eq!(value("pgsplit_clients"), 1.0);
    assert!(
        value("pgsplit_checkout_wait_seconds_count") >= 7.0,
        "{body}"
    );
    assert!(body.contains(r#"pgsplit_checkout_wait_seconds_bucket{le="0.001"}"#));
    assert!(value("pgsplit_classify_cache_hits_total") >= 5.0);
    let ratio = value("pgsplit_classify_cache_hit_ratio");
    assert!((0.0..=1.0).contains(&ratio));
    assert_eq!(
        value("pgsplit_max_replica_lag_bytes"),
        16.0 * 1024.0 * 1024.0
    );

    let (status, body) = get(addr, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("ok"), "{body}");
    assert!(body.contains("2/2 replicas"), "{body}");
    assert_eq!(get(addr, "/nothing").await.0, 404);
}

#[tokio::test]
async fn healthz_fails_when_the_primary_is_unreachable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let proxy = TestProxy::start(|c| {
        c.nodes[0].port = port;
        c.proxy.server_connect_timeout = pgsplit::config::Duration::from_millis(500);
    })
    .await;
    let addr = proxy.metrics_addr.unwrap();
    wait_until(5, "healthz reports the primary down", || async {
        let (status, body) = get(addr, "/healthz").await;
        status == 503 && body.contains("primary unreachable")
    })
    .await;
    let (_, metrics) = get(addr, "/metrics").await;
    assert_eq!(sample(&metrics, "pgsplit_primary_up"), Some(0.0));
}
