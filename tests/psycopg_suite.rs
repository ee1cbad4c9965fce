//! A bounded part of psycopg 3.3.4's own test suite through pgsplit, as `dev/compat.sh
//! psycopg` runs it by hand (routing on, transaction pooling): the protocol-heavy files
//! (libpq's `pq/`, connections, COPY, server-side cursors, pipelines, prepared statements,
//! two-phase commit, transactions): about 810 tests pass, in 75 to 85 s here. A failure of a
//! test not listed in `dev/compat-known.txt` (the tests no transaction pooler with read
//! routing can pass, each explained in docs/compatibility.md) fails this test and is named.
//!
//! `psycopg-suite.sh` (next to the repository in `../shared/peers/`, or in
//! `/work/shared/peers/`) installs the pinned psycopg wheels into a venv of its own; the
//! suite's tests come from the tarball beside it.

mod common;

use tokio::process::Command;

/// The files of the suite this test runs (the whole suite is `dev/compat.sh psycopg`).
const SELECTION: &str = "tests/pq tests/test_connection.py tests/test_copy.py \
    tests/test_copy_async.py tests/test_cursor_server.py tests/test_generators.py \
    tests/test_pipeline.py tests/test_pipeline_async.py tests/test_prepared.py \
    tests/test_prepared_async.py tests/test_tpc.py tests/test_transaction.py";

/// Known failures that would spend the suite's 30 s timeout each (a read of
/// `pg_stat_activity` on one replica, polling for a query running on the other): left out
/// here to keep the run short; the full run by hand has them.
const LEFT_OUT: [&str; 2] = [
    "tests/pq/test_pgconn.py::test_cancel_conn_blocking",
    "tests/pq/test_pgconn.py::test_cancel_conn_nonblocking",
];

#[tokio::test]
async fn psycopg_suite_bounded_selection_through_pgsplit() {
    let root = env!("CARGO_MANIFEST_DIR");
    let extra: Vec<String> = LEFT_OUT.iter().map(|t| format!("--deselect {t}")).collect();
    let mut cmd = Command::new(format!("{root}/dev/compat.sh"));
    cmd.arg("psycopg")
        .current_dir(root)
        .env("PGSPLIT_BIN", env!("CARGO_BIN_EXE_pgsplit"))
        .env("COMPAT_SELECT", SELECTION)
        .env("COMPAT_EXTRA", extra.join(" "))
        .env("COMPAT_KNOWN_OK", "1")
        // A port free now, not compat.sh's fixed default: that one lies in the range the
        // system hands out, and another test's proxy took it once in CI.
        .env("COMPAT_PORT", free_port().to_string());
    // The suite's own bound is 1800 s; this one is the CI budget's share.
    let out = common::run_command(cmd, None, 600).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "psycopg's suite through pgsplit failed (rerun with dev/compat.sh psycopg):\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("every failure is a known one"),
        "no verdict in dev/compat.sh's output:\n{stdout}\n{stderr}"
    );
}

/// A TCP port on 127.0.0.1 that nothing listens on now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("its address").port()
}
