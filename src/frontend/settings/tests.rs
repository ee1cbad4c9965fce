//! Unit tests for `crate::frontend::settings`.

use super::*;

fn set(name: &str, statement: &str) -> SettingChange {
    SettingChange::Set {
        name: name.into(),
        statement: statement.into(),
    }
}

#[test]
fn reads_set_and_reset_forms() {
    assert_eq!(
        setting_changes("SET search_path TO a, b"),
        vec![set("search_path", "SET search_path TO a, b")]
    );
    assert_eq!(
        setting_changes("set statement_timeout=0;"),
        vec![set("statement_timeout", "set statement_timeout=0")]
    );
    assert_eq!(
        setting_changes("SET SESSION DateStyle = 'ISO'"),
        vec![set("datestyle", "SET SESSION DateStyle = 'ISO'")]
    );
    assert_eq!(
        setting_changes("SET TIME ZONE 'UTC'"),
        vec![set("timezone", "SET TIME ZONE 'UTC'")]
    );
    assert_eq!(
        setting_changes("reset search_path"),
        vec![SettingChange::Reset {
            name: "search_path".into()
        }]
    );
    assert_eq!(setting_changes("RESET ALL"), vec![SettingChange::ResetAll]);
    assert!(setting_changes("SET LOCAL work_mem = '1MB'").is_empty());
    assert!(setting_changes("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").is_empty());
    assert!(setting_changes("select 'SET x = 1'").is_empty());
    assert_eq!(
        setting_changes("DISCARD ALL"),
        vec![SettingChange::DiscardAll]
    );
    assert_eq!(
        setting_changes(
            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY"
        ),
        vec![
            set(
                "default_transaction_isolation",
                &set_statement("default_transaction_isolation", "serializable")
            ),
            set(
                "default_transaction_read_only",
                &set_statement("default_transaction_read_only", "on")
            ),
        ]
    );
}

#[test]
fn splits_multi_statement_text_outside_quotes() {
    let sql = "SET a = 'x;y'; select $$;$$; -- ;\nSET b TO 2";
    assert_eq!(
        setting_changes(sql),
        vec![set("a", "SET a = 'x;y'"), set("b", "SET b TO 2")]
    );
    assert_eq!(statements(sql.as_bytes()).len(), 3);
}

#[test]
fn startup_parameters_become_settings() {
    let s = ClientSettings::from_startup(&[
        ("user".into(), "app".into()),
        ("database".into(), "app".into()),
        ("application_name".into(), "psql".into()),
        (
            "options".into(),
            "-c search_path=x -c statement_timeout=5s".into(),
        ),
    ]);
    let cur = s.current();
    assert_eq!(cur.len(), 3);
    assert_eq!(
        cur["application_name"],
        "SELECT pg_catalog.set_config('application_name', 'psql', false)"
    );
    assert_eq!(
        cur["search_path"],
        "SELECT pg_catalog.set_config('search_path', 'x', false)"
    );
}

const IDLE: TxStatus = TxStatus::Idle;
const IN: TxStatus = TxStatus::InTransaction;
const FAILED: TxStatus = TxStatus::Failed;

/// Runs `sql` as one query with the transaction status before and after it.
fn run(s: &mut ClientSettings, sql: &str, before: TxStatus, after: TxStatus) -> ServerSettings {
    s.statement_sent(sql.as_bytes());
    s.ready(before, after)
}

#[test]
fn reset_returns_to_startup_values() {
    let mut s = ClientSettings::from_startup(&[("application_name".into(), "a".into())]);
    let start = s.current().clone();
    run(
        &mut s,
        "SET application_name = 'b'; SET work_mem = '8MB'",
        IDLE,
        IDLE,
    );
    assert_eq!(s.current().len(), 2);
    run(&mut s, "RESET application_name", IDLE, IDLE);
    assert_eq!(s.current()["application_name"], start["application_name"]);
    assert_eq!(
        run(&mut s, "RESET ALL", IDLE, IDLE),
        ServerSettings::Now(BTreeMap::new())
    );
    assert_eq!(s.current(), &start);
}

#[test]
fn serializable_default_is_noticed() {
    let mut s = ClientSettings::default();
    assert!(!s.serializable());
    run(
        &mut s,
        "SET default_transaction_isolation = 'serializable'",
        IDLE,
        IDLE,
    );
    assert!(s.serializable());
    run(&mut s, "RESET default_transaction_isolation", IDLE, IDLE);
    assert!(!s.serializable());
    run(
        &mut s,
        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        IDLE,
        IDLE,
    );
    assert!(s.serializable());
}

#[test]
fn transaction_blocks_inside_one_query_decide_too() {
    let mut s = ClientSettings::default();
    run(&mut s, "BEGIN; SET a.b = 1; ROLLBACK", IDLE, IDLE);
    assert!(s.current().is_empty());
    run(&mut s, "BEGIN; SET a.b = 1; COMMIT", IDLE, IDLE);
    assert!(s.current().contains_key("a.b"));
    run(
        &mut s,
        "BEGIN; SET a.c = 1; SAVEPOINT s; SET a.d = 1; ROLLBACK TO SAVEPOINT s; COMMIT",
        IDLE,
        IDLE,
    );
    assert!(s.current().contains_key("a.c"));
    assert!(!s.current().contains_key("a.d"));
    // COMMIT of a failed block rolls back.
    run(&mut s, "BEGIN", IDLE, IN);
    run(&mut s, "SET a.e = 1", IN, IN);
    s.statement_sent(b"select 1/0");
    s.statement_failed();
    s.ready(IN, FAILED);
    run(&mut s, "COMMIT", FAILED, IDLE);
    assert!(!s.current().contains_key("a.e"));
}

#[test]
fn rollback_to_savepoint_drops_later_changes() {
    let mut s = ClientSettings::default();
    run(&mut s, "BEGIN", IDLE, IN);
    run(&mut s, "SET a.one = 1", IN, IN);
    run(&mut s, "SAVEPOINT s1", IN, IN);
    run(&mut s, "SET a.two = 2", IN, IN);
    run(&mut s, "ROLLBACK TO SAVEPOINT s1", IN, IN);
    run(&mut s, "COMMIT", IN, IDLE);
    assert!(s.current().contains_key("a.one"));
    assert!(!s.current().contains_key("a.two"));

    // A savepoint made before any change: rolling back to it drops them all.
    run(&mut s, "BEGIN", IDLE, IN);
    run(&mut s, "SAVEPOINT early", IN, IN);
    run(&mut s, "SET a.three = 3", IN, IN);
    run(&mut s, "ROLLBACK TO early", IN, IN);
    run(&mut s, "COMMIT", IN, IDLE);
    assert!(!s.current().contains_key("a.three"));
}

#[test]
fn ready_settles_running_changes() {
    let mut s = ClientSettings::default();
    assert_eq!(
        run(&mut s, "select 1", IDLE, IDLE),
        ServerSettings::Unchanged
    );
    assert!(
        matches!(run(&mut s, "SET work_mem = '8MB'", IDLE, IDLE), ServerSettings::Now(m) if m.contains_key("work_mem"))
    );

    s.statement_sent(b"SET x.y = 1");
    s.statement_failed();
    s.ready(IDLE, IDLE);
    assert!(!s.current().contains_key("x.y"));

    // Inside a transaction: kept only if it commits.
    assert_eq!(
        run(&mut s, "SET a.b = 1", IN, IN),
        ServerSettings::Unchanged
    );
    run(&mut s, "ROLLBACK", IN, IDLE);
    assert!(!s.current().contains_key("a.b"));
    run(&mut s, "SET a.b = 1", IN, IN);
    run(&mut s, "COMMIT", IN, IDLE);
    assert!(s.current().contains_key("a.b"));

    assert_eq!(
        run(&mut s, "RESET ALL", IDLE, IDLE),
        ServerSettings::Now(BTreeMap::new())
    );
    assert!(s.current().is_empty());

    // RESET ALL inside a committed transaction also leaves the server at defaults.
    run(&mut s, "SET a.b = 1", IDLE, IDLE);
    run(&mut s, "RESET ALL", IN, IN);
    assert_eq!(
        run(&mut s, "COMMIT", IN, IDLE),
        ServerSettings::Now(BTreeMap::new())
    );
}

#[test]
fn sync_sql_resets_extra_and_sets_missing() {
    let mut server = BTreeMap::new();
    server.insert("a".to_string(), "SET a TO 1".to_string());
    server.insert("b".to_string(), "SET b TO 1".to_string());
    let mut client = BTreeMap::new();
    client.insert("b".to_string(), "SET b TO 2".to_string());
    assert_eq!(
        sync_sql(&server, &client).unwrap(),
        "RESET \"a\";\nSET b TO 2;\n"
    );
    assert_eq!(sync_sql(&client, &client), None);
}

/// The names of the settings `sql` sets.
fn names_set(sql: &str) -> Vec<String> {
    setting_changes(sql)
        .into_iter()
        .filter_map(|c| match c {
            SettingChange::Set { name, .. } => Some(name),
            _ => None,
        })
        .collect()
}

#[test]
fn literals_identifiers_and_comments_hide_or_fake_nothing() {
    // `\'` does not close an E'' string.
    assert_eq!(
        setting_changes(r"SELECT E'it\'s'; SET work_mem = '8MB'"),
        vec![set("work_mem", "SET work_mem = '8MB'")]
    );
    // In E'', `\\` is one backslash: the next quote closes.
    assert_eq!(
        names_set(r"SELECT E'\\'; SET search_path = x"),
        ["search_path"]
    );
    // The SET is inside the E'' string.
    assert!(names_set(r"SELECT E'\'; SET fake.y = 1; --'").is_empty());
    assert_eq!(names_set("SELECT 'a /* '; SET x.y = 1"), ["x.y"]);
    // `$b$` inside an identifier starts no dollar quote.
    assert_eq!(names_set("SELECT a$b$c FROM t; SET x.y = 1"), ["x.y"]);
    assert_eq!(names_set("SELECT a$b FROM t; SET x.y = 1"), ["x.y"]);
    assert_eq!(
        names_set("SELECT $f$ $g$ ; SET fake.z = 1 $g$ $f$; SET x.y = 1"),
        ["x.y"]
    );
    // Comments nest.
    assert_eq!(
        names_set("SELECT 1 /* a /* b */ ; SET fake.x = 1 */; SET x.y = 1"),
        ["x.y"]
    );
    assert_eq!(
        names_set("SELECT \"a;SET fake.w = 1\" FROM t; SET x.y = 1"),
        ["x.y"]
    );
    // An unterminated literal swallows the rest: the server rejects the whole text.
    assert!(names_set("SELECT 'x; SET fake.v = 1").is_empty());
}

#[test]
fn names_and_statements_as_postgresql_reads_them() {
    // Setting names ignore case, quoted or not; quotes and doubled quotes are undone.
    assert_eq!(names_set(r#"SET "My.Var" = 1"#), ["my.var"]);
    assert_eq!(names_set(r#"SET "My"."V""x" TO 1"#), [r#"my.v"x"#]);
    assert_eq!(names_set("set X.y=1"), ["x.y"]);
    // The replayed text is the statement's, without comments around it (a trailing
    // `--` comment would swallow the `;` pgsplit puts after it).
    assert_eq!(
        setting_changes("/* app */ SET x.y = 1 -- why\n; SELECT 1"),
        vec![set("x.y", "SET x.y = 1")]
    );
    assert_eq!(names_set("SET SCHEMA 'app'"), ["search_path"]);
    assert_eq!(names_set("SET NAMES 'UTF8'"), ["client_encoding"]);
    assert_eq!(names_set("SET XML OPTION DOCUMENT"), ["xmloption"]);
    assert_eq!(names_set("SET SESSION ROLE app"), ["role"]);
    assert_eq!(
        setting_changes(r#"RESET "X".y"#),
        vec![SettingChange::Reset { name: "x.y".into() }]
    );
    assert!(setting_changes("RESET TRANSACTION ISOLATION LEVEL").is_empty());
    assert!(setting_changes("COMMIT PREPARED 'gx'; ROLLBACK PREPARED 'gy'").is_empty());
    assert_eq!(
        setting_changes(r#"SAVEPOINT "S1"; RELEASE s1; ROLLBACK TO SAVEPOINT "a""b""#),
        vec![
            SettingChange::Savepoint("S1".into()),
            SettingChange::Release("s1".into()),
            SettingChange::RollbackTo("a\"b".into()),
        ]
    );
}

#[test]
fn session_authorization_resets_the_role() {
    let role = reset("role");
    assert_eq!(
        setting_changes("SET SESSION AUTHORIZATION alice"),
        vec![
            role.clone(),
            set("session_authorization", "SET SESSION AUTHORIZATION alice")
        ]
    );
    assert_eq!(
        setting_changes("SET SESSION SESSION AUTHORIZATION 'alice'"),
        vec![
            role.clone(),
            set(
                "session_authorization",
                "SET SESSION SESSION AUTHORIZATION 'alice'"
            )
        ]
    );
    assert_eq!(
        setting_changes("RESET SESSION AUTHORIZATION"),
        vec![role.clone(), reset("session_authorization")]
    );
    assert_eq!(
        setting_changes("RESET session_authorization"),
        vec![role, reset("session_authorization")]
    );

    let mut s = ClientSettings::default();
    run(
        &mut s,
        "SET ROLE r; SET SESSION AUTHORIZATION u",
        IDLE,
        IDLE,
    );
    assert_eq!(
        s.current().keys().collect::<Vec<_>>(),
        ["session_authorization"]
    );
    run(&mut s, "SET ROLE r", IDLE, IDLE);
    run(&mut s, "RESET SESSION AUTHORIZATION", IDLE, IDLE);
    assert!(s.current().is_empty());
}

#[test]
fn reset_all_keeps_role_and_session_authorization_discard_all_does_not() {
    let mut s = ClientSettings::from_startup(&[("application_name".into(), "a".into())]);
    let start = s.current().clone();
    run(
        &mut s,
        "SET SESSION AUTHORIZATION u; SET ROLE r; SET work_mem = '8MB'",
        IDLE,
        IDLE,
    );
    let ServerSettings::Now(server) = run(&mut s, "RESET ALL", IDLE, IDLE) else {
        panic!("RESET ALL changes the server's settings");
    };
    assert_eq!(
        server.keys().collect::<Vec<_>>(),
        ["role", "session_authorization"]
    );
    assert_eq!(s.current()["role"], "SET ROLE r");
    assert_eq!(s.current()["application_name"], start["application_name"]);
    assert!(!s.current().contains_key("work_mem"));
    assert_eq!(
        run(&mut s, "DISCARD ALL", IDLE, IDLE),
        ServerSettings::Now(BTreeMap::new())
    );
    assert_eq!(s.current(), &start);
}

#[test]
fn reset_leaves_the_server_at_its_default_not_the_startup_value() {
    let mut s = ClientSettings::from_startup(&[("application_name".into(), "a".into())]);
    let start = s.current().clone();
    run(&mut s, "SET application_name = 'b'", IDLE, IDLE);
    let ServerSettings::Now(server) = run(&mut s, "RESET application_name", IDLE, IDLE) else {
        panic!("RESET changes the server's settings");
    };
    assert!(server.is_empty());
    assert_eq!(s.current(), &start);
    // So the next sync applies the startup value again.
    assert_eq!(
        sync_sql(&server, s.current()).unwrap(),
        format!("{};\n", start["application_name"])
    );
}

#[test]
fn sync_sql_sets_session_authorization_before_the_role() {
    let auth = |u: &str| format!("SET SESSION AUTHORIZATION {u}");
    let mut client = BTreeMap::new();
    client.insert("role".to_string(), "SET ROLE r".to_string());
    client.insert("session_authorization".to_string(), auth("u"));
    assert_eq!(
        sync_sql(&BTreeMap::new(), &client).unwrap(),
        "SET SESSION AUTHORIZATION u;\nSET ROLE r;\n"
    );
    // A server with the same role under another authorization: the role is set again
    // after the authorization changes.
    let mut server = client.clone();
    server.insert("session_authorization".to_string(), auth("v"));
    assert_eq!(
        sync_sql(&server, &client).unwrap(),
        "SET SESSION AUTHORIZATION u;\nSET ROLE r;\n"
    );
    server.remove("session_authorization");
    client.remove("session_authorization");
    server.insert("session_authorization".to_string(), auth("v"));
    assert_eq!(
        sync_sql(&server, &client).unwrap(),
        "RESET \"session_authorization\";\nSET ROLE r;\n"
    );
}

#[test]
fn quick_check_only_flags_candidates() {
    assert!(might_change_setting(b"  SET x = 1"));
    assert!(might_change_setting(b"reset all"));
    assert!(might_change_setting(b"select 1; set x = 1"));
    assert!(!might_change_setting(
        b"SELECT abalance FROM pgbench_accounts"
    ));
    assert!(might_change_setting(b"/* app */ set x = 1"));
    assert!(might_change_setting(b"-- app\nDISCARD ALL"));
    assert!(!might_change_setting(b"select 1;;"));
    assert!(!might_change_setting(
        b"UPDATE t SET a = a + 1 WHERE id = 2; \n"
    ));
    assert!(might_change_setting(b"select 1; set x = 1;"));
    assert!(!might_change_setting(b"select 'a; set x = 1'"));
    assert!(!might_change_setting(b"select 1 -- ; set x = 1"));
    assert!(!might_change_setting(b"select 'x; set y = 1"));
    assert!(!might_change_setting(b""));
}
