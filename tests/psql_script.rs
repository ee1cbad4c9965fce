//! psql through pgsplit behaves exactly as psql straight against the primary: the same
//! script gives the same stdout and stderr, byte for byte.

mod common;

use std::path::Path;

use common::{pg_command, primary_port, run_command, superuser, TestProxy, APP_PASSWORD};

/// Runs a psql script file against `port` and returns stdout, stderr and the exit
/// status. Output is compared as bytes: the script prints binary COPY data too.
async fn run_script(port: u16, script: &Path, app_name: &str) -> (Vec<u8>, Vec<u8>, i32) {
    let mut cmd = pg_command("psql", port, "app", APP_PASSWORD, "app");
    cmd.env("PGAPPNAME", app_name).args([
        "-X",
        "-v",
        "ON_ERROR_STOP=0",
        "-f",
        script.to_str().unwrap(),
    ]);
    let out = run_command(cmd, None, 120).await;
    (out.stdout, out.stderr, out.status.code().unwrap_or(-1))
}

/// Panics with the first differing line when two outputs differ.
fn assert_same(what: &str, via_proxy: &[u8], direct: &[u8]) {
    if via_proxy == direct {
        return;
    }
    let (via_proxy, direct) = (
        String::from_utf8_lossy(via_proxy),
        String::from_utf8_lossy(direct),
    );
    let p: Vec<&str> = via_proxy.lines().collect();
    let d: Vec<&str> = direct.lines().collect();
    let first = p
        .iter()
        .zip(&d)
        .position(|(a, b)| a != b)
        .unwrap_or(p.len().min(d.len()));
    let show =
        |lines: &[&str]| lines[first.saturating_sub(3)..(first + 4).min(lines.len())].join("\n");
    panic!(
        "{what} differs at line {} ({} lines through pgsplit, {} direct)\n\
         --- through pgsplit:\n{}\n--- direct:\n{}",
        first + 1,
        p.len(),
        d.len(),
        show(&p),
        show(&d)
    );
}

async fn drop_tables(names: &[&str]) {
    let checker = superuser().await;
    for name in names {
        checker
            .batch_execute(&format!("drop table if exists {name}"))
            .await
            .unwrap();
    }
}

/// A copy of tests/psql/basic.sql whose tables are named `<prefix>_t` and `<prefix>_u`
/// (unique to this process, so that parallel runs do not collide), in a temporary
/// directory that is removed on drop.
struct Script {
    dir: std::path::PathBuf,
    path: std::path::PathBuf,
    tables: [String; 2],
}

impl Script {
    fn new(prefix: &str) -> Script {
        let source = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/psql/basic.sql"));
        let prefix = common::unique(prefix);
        let text = std::fs::read_to_string(source)
            .unwrap()
            .replace("psql_basic_", &format!("{prefix}_"));
        let dir = std::env::temp_dir().join(format!("pgsplit_{prefix}"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("basic.sql");
        std::fs::write(&path, text).unwrap();
        Script {
            dir,
            path,
            tables: [format!("{prefix}_t"), format!("{prefix}_u")],
        }
    }

    async fn drop_tables(&self) {
        let names: Vec<&str> = self.tables.iter().map(String::as_str).collect();
        drop_tables(&names).await;
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_script_matches_direct_psql() {
    let script = Script::new("psql_basic");
    let proxy = TestProxy::start(|c| c.pool.max_size = 2).await;

    script.drop_tables().await;
    let direct = run_script(primary_port(), &script.path, "psql_basic").await;
    script.drop_tables().await;
    let via_proxy = run_script(proxy.port(), &script.path, "psql_basic").await;
    script.drop_tables().await;

    // The script must really have run (and its errors are the expected ones).
    let (out, err) = (
        String::from_utf8_lossy(&direct.0),
        String::from_utf8_lossy(&direct.1),
    );
    assert!(out.contains("answer is 42"), "{out}");
    assert!(out.contains("status \n--------\n done"), "{out}");
    assert!(
        out.contains("98ab2b078107b8319b6682fe504873fb  -"),
        "md5sum of the large result: {out}"
    );
    assert!(err.contains("NOTICE:  hi"), "{err}");
    assert!(err.contains("NOTICE:  inside a transaction"), "{err}");
    assert!(err.contains("ERROR:  division by zero"), "{err}");

    assert_same("stdout", &via_proxy.0, &direct.0);
    assert_same("stderr", &via_proxy.1, &direct.1);
    assert_eq!(via_proxy.2, direct.2, "exit status");
}

/// The same script with pgsplit holding only one server connection while another client
/// keeps using it (and changing its own settings): the script does not notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_script_with_a_busy_pool_of_one() {
    let script = Script::new("psql_busy");
    script.drop_tables().await;
    let direct = run_script(primary_port(), &script.path, "psql_busy").await;
    script.drop_tables().await;

    let proxy = TestProxy::start(|c| c.pool.max_size = 1).await;
    let noise = proxy.connect("psql_busy_noise").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let noise_task = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                noise
                    .batch_execute("SET search_path TO pg_catalog; SET datestyle = 'SQL'; select 1")
                    .await
                    .unwrap();
                n += 1;
            }
            n
        })
    };
    let via_proxy = run_script(proxy.port(), &script.path, "psql_busy").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = noise_task.await.unwrap();
    script.drop_tables().await;
    assert!(rounds > 0);

    assert_same("stdout", &via_proxy.0, &direct.0);
    assert_same("stderr", &via_proxy.1, &direct.1);
    assert_eq!(via_proxy.2, direct.2, "exit status");
}

/// psql sees the startup settings it asked for (PGOPTIONS, client encoding).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_startup_settings() {
    let proxy = TestProxy::start(|_| {}).await;
    let script = "\\encoding\n\\echo :ENCODING :SERVER_VERSION_NAME\nshow statement_timeout;\nshow client_encoding;\nshow application_name;\n";
    let mut outputs = Vec::new();
    for port in [proxy.port(), primary_port()] {
        let mut cmd = pg_command("psql", port, "app", APP_PASSWORD, "app");
        cmd.env("PGOPTIONS", "-c statement_timeout=4321")
            .env("PGAPPNAME", "psql_startup")
            .env("PGCLIENTENCODING", "LATIN1")
            .args(["-X", "-A", "-t", "-f", "-"]);
        let out = run_command(cmd, Some(script.as_bytes()), 60).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.push(out.stdout);
    }
    let direct = String::from_utf8_lossy(&outputs[1]);
    assert!(direct.starts_with("LATIN1\nLATIN1 15"), "{direct}");
    assert!(
        direct.contains("4321ms\nLATIN1\npsql_startup\n"),
        "{direct}"
    );
    assert_same("psql output", &outputs[0], &outputs[1]);
}
