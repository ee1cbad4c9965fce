//! The pgsplit binary and its signals: SIGHUP reads the config file again (a `[lag]` change
//! shows in the admin console), SIGTERM drains and exits.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{admin_rows, wait_until};

/// A free loopback port (bound and released).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The test config as a file, with `lag_line` as the whole `[lag]` section.
fn write_config(path: &std::path::Path, listen: u16, metrics: u16, lag_line: &str) {
    let config = common::test_config();
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
    let mut file: toml::Table = text.parse().unwrap();
    let set = |file: &mut toml::Table, section: &str, key: &str, value: toml::Value| {
        file.entry(section)
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .unwrap()
            .insert(key.into(), value);
    };
    set(
        &mut file,
        "proxy",
        "listen",
        format!("127.0.0.1:{listen}").into(),
    );
    set(
        &mut file,
        "metrics",
        "listen",
        format!("127.0.0.1:{metrics}").into(),
    );
    let nodes = file["nodes"].as_array_mut().unwrap();
    for (node, configured) in nodes.iter_mut().zip(&config.nodes) {
        node.as_table_mut()
            .unwrap()
            .insert("port".into(), i64::from(configured.port).into());
    }
    file.insert("lag".into(), toml::Value::Table(lag_line.parse().unwrap()));
    std::fs::write(path, toml::to_string(&file).unwrap()).unwrap();
}

/// Kills the child if the test ends early.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name}");
}

#[tokio::test]
async fn sighup_reloads_the_lag_settings_and_sigterm_exits() {
    common::require_cluster().await;
    let dir = std::env::temp_dir().join(common::unique("pgsplit_signals"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.toml");
    let (port, metrics) = (free_port(), free_port());
    write_config(&file, port, metrics, "max_replica_lag = \"16MB\"");
    let child = Command::new(env!("CARGO_BIN_EXE_pgsplit"))
        .arg("--config")
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut running = Running(child);

    let mut c = tokio_postgres::Config::new();
    c.host("127.0.0.1")
        .port(port)
        .user("admin")
        .password(common::ADMIN_PASSWORD)
        .dbname("pgsplit");
    let connect = || async {
        let (client, connection) = c.connect(tokio_postgres::NoTls).await.ok()?;
        tokio::spawn(connection);
        Some(client)
    };
    let mut console = None;
    for _ in 0..200 {
        console = connect().await;
        if console.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let console = console.expect("pgsplit listens within 20 s");
    let value = |rows: common::AdminRows| rows[0][0].1.clone().unwrap();
    assert_eq!(
        value(admin_rows(&console, "SHOW max_replica_lag").await),
        "16MB"
    );

    write_config(&file, port, metrics, "max_replica_lag = \"2MB\"");
    signal(&running.0, "HUP");
    wait_until(5, "SIGHUP applies the new threshold", || async {
        value(admin_rows(&console, "SHOW max_replica_lag").await) == "2MB"
    })
    .await;

    drop(console);
    signal(&running.0, "TERM");
    let mut exited = None;
    for _ in 0..100 {
        if let Some(status) = running.0.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = exited.expect("pgsplit exits within 10 s of SIGTERM with no clients");
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}
