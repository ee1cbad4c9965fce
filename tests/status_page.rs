//! `GET /status` in a real browser: Debian's chromium, headless, loads the page from a
//! pgsplit in front of the dev cluster and dumps the DOM it built; the replicas are there
//! with their state, their lag and a lag chart, and the primary with its role.

mod common;

use std::time::Duration;

use common::{wait_until, TestProxy};

/// The DOM chromium built from `url` (`--dump-dom`), within 60 s.
async fn dump_dom(url: &str) -> String {
    let profile = std::env::temp_dir().join(format!("pgsplit-chromium-{}", std::process::id()));
    let run = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.display()),
            "--dump-dom",
            url,
        ])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("chromium finished within 60 s")
        .expect("chromium runs (apt-get install chromium; .ci/run installs it)");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 DOM")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_headless_browser_finds_the_replicas_and_their_lag() {
    let proxy = TestProxy::start(|c| c.routing.enabled = true).await;
    let addr = proxy.metrics_addr.expect("metrics enabled");
    // A few checks, so each replica has lag samples to chart.
    wait_until(20, "both replicas checked three times", || async {
        let replicas = proxy.proxy.board().replicas();
        replicas.len() == 2 && replicas.iter().all(|r| r.history.len() >= 3)
    })
    .await;

    let dom = dump_dom(&format!("http://{addr}/status")).await;
    for replica in ["replica1", "replica2"] {
        let row = dom
            .split("<tr")
            .find(|r| r.contains(&format!("data-node=\"{replica}\"")))
            .unwrap_or_else(|| panic!("{replica} on the page: {dom}"));
        assert!(row.contains(">healthy<"), "{replica} healthy: {row}");
        assert!(row.contains(">replica<"), "{replica}'s role: {row}");
        let lag = row
            .split("class=\"lag\">")
            .nth(1)
            .and_then(|r| r.split('<').next())
            .unwrap_or_default();
        assert!(
            lag.contains('B'),
            "{replica}'s lag in bytes: {lag:?} in {row}"
        );
        assert!(
            row.contains("<svg") && row.contains("<polyline"),
            "{replica}'s lag chart: {row}"
        );
    }
    let primary = dom
        .split("<tr")
        .find(|r| r.contains("data-node=\"primary\""))
        .unwrap_or_else(|| panic!("the primary on the page: {dom}"));
    assert!(primary.contains(">primary<"), "{primary}");
    assert!(dom.contains("id=\"pools\""), "{dom}");
}
