//! Logging in through pgsplit: SCRAM and md5 towards clients, md5 and SCRAM towards the
//! server, and the errors PostgreSQL gives for a wrong password, an unknown user or an
//! unknown database. After each refusal the proxy carries on.

mod common;

use common::{describe, show, sqlstate, TestProxy, APP_PASSWORD};
use tokio_postgres::NoTls;

async fn refused(config: &tokio_postgres::Config) -> tokio_postgres::Error {
    match common::with_timeout(30, "login", config.connect(NoTls)).await {
        Ok(_) => panic!("login should have been refused: {config:?}"),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_errors_have_postgres_codes() {
    let proxy = TestProxy::start(|_| {}).await;

    let mut wrong_scram = proxy.pg_config("auth_wrong_scram");
    wrong_scram.password("not-the-password");
    let e = refused(&wrong_scram).await;
    assert_eq!(sqlstate(&e), "28P01", "{}", describe(&e));

    let mut wrong_md5 = proxy.pg_config("auth_wrong_md5");
    wrong_md5.user("app_md5").password("not-the-password");
    let e = refused(&wrong_md5).await;
    assert_eq!(sqlstate(&e), "28P01", "{}", describe(&e));

    let mut unknown_user = proxy.pg_config("auth_unknown_user");
    unknown_user.user("nobody_at_all").password(APP_PASSWORD);
    let e = refused(&unknown_user).await;
    assert_eq!(sqlstate(&e), "28P01", "{}", describe(&e));

    let mut unknown_db = proxy.pg_config("auth_unknown_db");
    unknown_db.dbname("no_such_database");
    let e = refused(&unknown_db).await;
    assert_eq!(sqlstate(&e), "3D000", "{}", describe(&e));

    // Without a database name, the user's name is the database: "app_md5" does not exist.
    let mut default_db = tokio_postgres::Config::new();
    default_db
        .host("127.0.0.1")
        .port(proxy.port())
        .user("app_md5")
        .password(APP_PASSWORD);
    let e = refused(&default_db).await;
    assert_eq!(sqlstate(&e), "3D000", "{}", describe(&e));

    // An empty password never logs anyone in.
    let mut empty = proxy.pg_config("auth_empty");
    empty.password("");
    let e = refused(&empty).await;
    assert_eq!(sqlstate(&e), "28P01", "{}", describe(&e));

    // The proxy still serves, with the same pools.
    let client = proxy.connect("auth_after_errors").await;
    assert_eq!(show(&client, "select current_user").await, "app");
    let mut db_default = tokio_postgres::Config::new();
    db_default
        .host("127.0.0.1")
        .port(proxy.port())
        .user("app")
        .password(APP_PASSWORD);
    let client = common::connect_with(&db_default).await;
    assert_eq!(show(&client, "select current_database()").await, "app");
    // Refused clients are not counted as connected.
    let p = proxy.proxy.clone();
    common::wait_until(10, "only the two logged-in clients to be counted", || {
        let p = p.clone();
        async move { p.client_count() == 2 }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_user_logs_in_end_to_end() {
    let proxy = TestProxy::start(|_| {}).await;
    let mut config = proxy.pg_config("auth_md5_ok");
    config.user("app_md5");
    let client = common::connect_with(&config).await;
    assert_eq!(show(&client, "select current_user").await, "app_md5");
    // The server side is md5 too (pg_hba says so for app_md5): check on the server.
    let checker = common::superuser().await;
    let method: String = checker
        .query_one(
            "select rolpassword from pg_authid where rolname = 'app_md5'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        method.starts_with("md5"),
        "app_md5 should have an md5 password"
    );

    // psql (libpq) with md5 as well.
    let out = common::run_command(
        {
            let mut c = common::pg_command("psql", proxy.port(), "app_md5", APP_PASSWORD, "app");
            c.args(["-X", "-A", "-t", "-c", "select current_user, 1 + 1"]);
            c
        },
        None,
        60,
    )
    .await;
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "app_md5|2");

    // A psql with the wrong password gets the server's wording.
    let out = common::run_command(
        {
            let mut c = common::pg_command("psql", proxy.port(), "app_md5", "wrong", "app");
            c.args(["-X", "-c", "select 1"]);
            c
        },
        None,
        60,
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("password authentication failed for user \"app_md5\""),
        "{stderr}"
    );
}

/// A user whose server login differs from its client login (`server_user`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_user_mapping() {
    let proxy = TestProxy::start(|_| {}).await;
    let mut config = proxy.pg_config("auth_mapping");
    config.user("admin").password("admin");
    let client = common::connect_with(&config).await;
    assert_eq!(show(&client, "select current_user").await, "app");
    assert_eq!(show(&client, "select session_user").await, "app");
}
