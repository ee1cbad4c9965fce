//! Tests for parsing, defaults, every validation rule and the loader.

use super::*;

/// The shipped example, which must always load.
const EXAMPLE: &str = include_str!("../../config.toml");

const SCRAM_VERIFIER: &str = "SCRAM-SHA-256$4096:cGdzcGxpdC10ZXN0LXNhbHQ=$hKwva6wOjGZXGvKMxxG6NaimFSE7kPCcKsI43TOcQsg=:RJiDDQWchp90Pr2KuT+JPuiNPUoLrvcro1GqSIV4ahg=";
/// md5("secret" || "app").
const MD5_VERIFIER: &str = "md56a422f785c9e20873908ce25d1736ae2";

const MINIMAL: &str = r#"
[[nodes]]
name = "pg"
host = "db.internal"
role = "primary"

[[databases]]
name = "app"

[[users]]
name = "admin"
password = "pw"
"#;

fn example() -> Config {
    Config::from_toml_str(EXAMPLE).expect("the example config is valid")
}

/// The problems `validate` reports, as (key, message) pairs.
fn problems(config: &Config) -> Vec<(String, String)> {
    match config.validate() {
        Ok(()) => Vec::new(),
        Err(ConfigError::Invalid(problems)) => {
            problems.into_iter().map(|p| (p.key, p.message)).collect()
        }
        Err(other) => panic!("validate returned {other:?}"),
    }
}

#[track_caller]
fn assert_problem(config: &Config, key: &str, message: &str) {
    assert_eq!(
        problems(config),
        vec![(key.to_owned(), message.to_owned())],
        "expected exactly one problem"
    );
}

fn parse_error(text: &str) -> String {
    match Config::from_toml_str(text) {
        Err(ConfigError::Parse { message }) => message,
        other => panic!("expected a parse error, got {other:?}"),
    }
}

fn user(name: &str, password: Option<&str>, auth: ClientAuth) -> UserConfig {
    UserConfig {
        name: name.to_owned(),
        password: password.map(str::to_owned),
        auth,
        server_user: None,
        server_password: None,
        password_file: None,
        password_env: None,
        server_password_file: None,
        server_password_env: None,
    }
}

// ---- parsing and defaults ----

#[test]
fn example_config_parses_with_the_dev_cluster_layout() {
    let config = example();
    assert_eq!(config.proxy.listen, "127.0.0.1:6432".parse().unwrap());
    assert_eq!(config.proxy.pool_mode, PoolMode::Transaction);
    assert_eq!(config.proxy.max_message_size, ByteSize::mb(64));
    assert_eq!(config.proxy.admin_users, ["admin"]);

    let primary = config.primary();
    assert_eq!((primary.name.as_str(), primary.port), ("primary", 15432));
    let replicas: Vec<_> = config
        .replicas()
        .map(|n| (n.name.as_str(), n.host.as_str(), n.port, n.weight))
        .collect();
    assert_eq!(
        replicas,
        [
            ("replica1", "127.0.0.1", 15433, 1),
            ("replica2", "127.0.0.1", 15434, 1)
        ]
    );
    assert_eq!(
        config.node("replica2").map(|n| n.role),
        Some(NodeRole::Replica)
    );

    assert_eq!(
        config.database("app").map(|d| d.server_database()),
        Some("app")
    );
    assert_eq!(
        config.database("bench").map(|d| d.server_database()),
        Some("bench")
    );
    assert!(config.database("pgsplit").is_none());

    let app = config.user("app").unwrap();
    assert_eq!(app.auth, ClientAuth::ScramSha256);
    assert_eq!(
        (app.server_user(), app.server_password()),
        ("app", Some("secret"))
    );
    let app_md5 = config.user("app_md5").unwrap();
    assert_eq!(app_md5.auth, ClientAuth::Md5);
    assert_eq!(app_md5.password.as_deref(), Some("secret"));
    let admin = config.user("admin").unwrap();
    assert_eq!(admin.password.as_deref(), Some("admin"));
    assert_eq!(
        (admin.server_user(), admin.server_password()),
        ("app", Some("secret"))
    );
    assert!(config.is_admin("admin"));
    assert!(!config.is_admin("app"));
}

#[test]
fn example_config_sets_every_key_to_its_default_where_it_has_one() {
    let config = example();
    assert_eq!(config.proxy, ProxyConfig::default());
    assert_eq!(config.pool, PoolConfig::default());
}

/// The causal-key entries config.toml shows commented out load once uncommented (the key
/// and the old keys together; the key file on its own, as the two exclude each other).
#[test]
fn example_config_commented_causal_keys_load_when_uncommented() {
    let uncomment = |keys: &[&str]| {
        let mut text = EXAMPLE.to_owned();
        for key in keys {
            let commented = format!("# {key} = ");
            assert!(text.contains(&commented), "config.toml shows {key}");
            text = text.replace(&commented, &format!("{key} = "));
        }
        Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{keys:?}: {e}"))
    };
    let config = uncomment(&["causal_key", "causal_old_keys"]);
    assert!(config.routing.causal_key.is_some());
    assert_eq!(config.routing.causal_old_keys.len(), 1);
    let config = uncomment(&["causal_key_file"]);
    assert!(config.routing.causal_key_file.is_some());
}

#[test]
fn minimal_config_gets_every_default() {
    let config = Config::from_toml_str(MINIMAL).unwrap();
    assert_eq!(config.proxy, ProxyConfig::default());
    assert_eq!(config.proxy.listen.to_string(), "127.0.0.1:6432");
    assert_eq!(config.proxy.max_client_conn, 1000);
    assert_eq!(config.proxy.client_idle_timeout, Duration::ZERO);
    assert_eq!(config.proxy.server_connect_timeout, Duration::from_secs(5));
    assert_eq!(config.pool, PoolConfig::default());
    assert_eq!(config.pool.max_size, 10);
    assert_eq!(config.pool.idle_timeout.to_string(), "10m");
    assert_eq!(config.pool.max_lifetime.to_string(), "1h");
    assert_eq!(config.pool.max_prepared_statements, 200);
    assert_eq!(config.nodes[0].port, 5432);
    assert_eq!(config.nodes[0].weight, 1);
    assert_eq!(config.users[0].auth, ClientAuth::ScramSha256);
    assert_eq!(config.replicas().count(), 0);
}

#[test]
fn durations_and_sizes_read_as_strings_or_integers() {
    let text = format!(
        "[proxy]\nmax_message_size = 8192\nclient_idle_timeout = 1500\n\
         [pool]\ncheckout_timeout = \"250ms\"\nmax_lifetime = \"0\"\n{MINIMAL}"
    );
    let config = Config::from_toml_str(&text).unwrap();
    assert_eq!(config.proxy.max_message_size, ByteSize::kb(8));
    assert_eq!(
        config.proxy.client_idle_timeout,
        Duration::from_millis(1_500)
    );
    assert_eq!(config.pool.checkout_timeout, Duration::from_millis(250));
    assert_eq!(config.pool.max_lifetime.non_zero(), None);
}

#[test]
fn garbage_durations_and_sizes_are_parse_errors_with_a_position() {
    let err = parse_error(&format!("[pool]\nidle_timeout = \"5 parsecs\"\n{MINIMAL}"));
    assert!(err.contains("line 2"), "{err}");
    assert!(err.contains("unknown unit \"parsecs\""), "{err}");
    let err = parse_error(&format!(
        "[proxy]\nclient_idle_timeout = \"-1s\"\n{MINIMAL}"
    ));
    assert!(err.contains("must not be negative"), "{err}");
    let err = parse_error(&format!(
        "[proxy]\nmax_message_size = \"99999999999GB\"\n{MINIMAL}"
    ));
    assert!(err.contains("too large"), "{err}");
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    let cases = [
        (
            format!("[proxy]\npool_mod = \"session\"\n{MINIMAL}"),
            "pool_mod",
        ),
        (format!("[pool]\nmaxsize = 3\n{MINIMAL}"), "maxsize"),
        (format!("[proxies]\n{MINIMAL}"), "proxies"),
        (format!("{MINIMAL}passwd = \"x\"\n"), "passwd"),
        (
            MINIMAL.replace("role = \"primary\"", "role = \"primary\"\nwieght = 2"),
            "wieght",
        ),
        (
            MINIMAL.replace("name = \"app\"", "name = \"app\"\ndatabase = \"x\""),
            "database",
        ),
    ];
    for (text, key) in cases {
        let err = parse_error(&text);
        assert!(err.contains(&format!("unknown field `{key}`")), "{err}");
        assert!(err.contains("line "), "{err}");
    }
}

#[test]
fn wrong_types_and_enum_spellings_are_parse_errors() {
    for (text, needle) in [
        (MINIMAL.replace("host", "port = 70000\nhost"), "70000"),
        (MINIMAL.replace("\"primary\"", "\"leader\""), "leader"),
        (format!("{MINIMAL}auth = \"password\"\n"), "password"),
        (
            format!("[proxy]\npool_mode = \"statement\"\n{MINIMAL}"),
            "statement",
        ),
        (
            format!("[proxy]\nlisten = \"localhost\"\n{MINIMAL}"),
            "socket address",
        ),
        (format!("[proxy]\nmax_client_conn = -1\n{MINIMAL}"), "-1"),
        (
            MINIMAL.replace("host = \"db.internal\"\n", ""),
            "missing field `host`",
        ),
    ] {
        let err = parse_error(&text);
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
}

#[test]
fn empty_file_reports_every_missing_section() {
    match Config::from_toml_str("") {
        Err(ConfigError::Invalid(problems)) => {
            let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
            assert_eq!(
                keys,
                ["proxy.admin_users[0]", "nodes", "databases", "users"]
            );
        }
        other => panic!("{other:?}"),
    }
}

// ---- [proxy] rules ----

#[test]
fn max_client_conn_must_be_positive() {
    let mut config = example();
    config.proxy.max_client_conn = 0;
    assert_problem(&config, "proxy.max_client_conn", "must be at least 1");
}

#[test]
fn max_message_size_must_be_between_1kb_and_1gb() {
    let mut config = example();
    for ok in [ByteSize::kb(1), ByteSize::gb(1)] {
        config.proxy.max_message_size = ok;
        assert_eq!(problems(&config), []);
    }
    config.proxy.max_message_size = ByteSize(1023);
    assert_problem(
        &config,
        "proxy.max_message_size",
        "must be between 1kB and 1GB (got 1023B)",
    );
    config.proxy.max_message_size = ByteSize::gb(2);
    assert_problem(
        &config,
        "proxy.max_message_size",
        "must be between 1kB and 1GB (got 2GB)",
    );
}

#[test]
fn server_connect_timeout_must_be_positive_but_idle_timeouts_may_be_zero() {
    let mut config = example();
    config.proxy.client_idle_timeout = Duration::ZERO;
    config.pool.idle_timeout = Duration::ZERO;
    config.pool.max_lifetime = Duration::ZERO;
    assert_eq!(problems(&config), []);
    config.proxy.server_connect_timeout = Duration::ZERO;
    assert_problem(
        &config,
        "proxy.server_connect_timeout",
        "must be greater than 0",
    );
}

#[test]
fn admin_users_must_be_configured_users() {
    let mut config = example();
    config.proxy.admin_users = vec!["admin".into(), "root".into()];
    assert_problem(
        &config,
        "proxy.admin_users[1]",
        "no [[users]] entry is named \"root\"",
    );
    config.proxy.admin_users.clear();
    assert_eq!(problems(&config), [], "no admin users is allowed");
}

// ---- [pool] rules ----

#[test]
fn pool_max_size_must_be_positive() {
    let mut config = example();
    config.pool.max_size = 0;
    assert_problem(&config, "pool.max_size", "must be at least 1");
}

#[test]
fn pool_min_size_must_not_exceed_max_size() {
    let mut config = example();
    config.pool.min_size = 10;
    assert_eq!(problems(&config), []);
    config.pool.min_size = 11;
    assert_problem(
        &config,
        "pool.min_size",
        "must not exceed pool.max_size (10)",
    );
}

#[test]
fn checkout_timeout_and_prepared_statement_cap_must_be_positive() {
    let mut config = example();
    config.pool.checkout_timeout = Duration::ZERO;
    assert_problem(&config, "pool.checkout_timeout", "must be greater than 0");
    let mut config = example();
    config.pool.max_prepared_statements = 0;
    assert_problem(
        &config,
        "pool.max_prepared_statements",
        "must be at least 1",
    );
}

// ---- [[nodes]] rules ----

#[test]
fn at_least_one_node_is_required() {
    let mut config = example();
    config.nodes.clear();
    assert_problem(&config, "nodes", "at least one [[nodes]] entry is required");
}

#[test]
fn at_most_one_primary_and_auto_roles() {
    let mut config = example();
    config.nodes[0].role = NodeRole::Replica;
    assert_eq!(problems(&config), [], "the monitor finds the primary");
    let mut config = example();
    config.nodes[2].role = NodeRole::Primary;
    assert_problem(
        &config,
        "nodes[2].role",
        "nodes[0] is already the primary; at most one node may have role = \"primary\" (use \"auto\" to let pgsplit find it)",
    );
    let text = MINIMAL.replace("role = \"primary\"", "role = \"auto\"");
    let config = Config::from_toml_str(&text).unwrap();
    assert_eq!(config.nodes[0].role, NodeRole::Auto);
}

#[test]
fn node_names_are_unique_and_plain() {
    let mut config = example();
    config.nodes[2].name = "replica1".into();
    assert_problem(
        &config,
        "nodes[2].name",
        "duplicate name \"replica1\" (already used by nodes[1])",
    );
    config.nodes[2].name = String::new();
    assert_problem(&config, "nodes[2].name", "must not be empty");
    config.nodes[2].name = "replica 2".into();
    assert_problem(
        &config,
        "nodes[2].name",
        "may only contain letters, digits, '_' and '-' (got \"replica 2\")",
    );
    config.nodes[2].name = "Replica_2-b".into();
    assert_eq!(problems(&config), []);
}

#[test]
fn node_host_port_and_weight() {
    let mut config = example();
    config.nodes[1].host = " ".into();
    assert_problem(&config, "nodes[1].host", "must not be empty");
    let mut config = example();
    config.nodes[1].port = 0;
    assert_problem(&config, "nodes[1].port", "must be between 1 and 65535");
    let mut config = example();
    config.nodes[1].weight = 0;
    assert_problem(&config, "nodes[1].weight", "must be at least 1");
    let mut config = example();
    config.nodes[0].weight = 0;
    assert_problem(&config, "nodes[0].weight", "must be at least 1");
}

#[test]
fn node_tls_reads_libpq_spellings_and_defaults_to_disable() {
    let config = Config::from_toml_str(MINIMAL).unwrap();
    assert_eq!(config.nodes[0].tls, NodeTlsMode::Disable);
    assert_eq!(config.nodes[0].tls_ca_file, None);
    assert!(!config.nodes[0].allow_cleartext_password);
    for (spelling, mode) in [
        ("disable", NodeTlsMode::Disable),
        ("prefer", NodeTlsMode::Prefer),
        ("require", NodeTlsMode::Require),
        ("verify-ca", NodeTlsMode::VerifyCa),
        ("verify-full", NodeTlsMode::VerifyFull),
    ] {
        let text = MINIMAL.replace(
            "role = \"primary\"",
            &format!("role = \"primary\"\ntls = \"{spelling}\"\ntls_ca_file = \"ca.crt\""),
        );
        let config: Config = toml::from_str(&text).unwrap();
        assert_eq!(config.nodes[0].tls, mode);
        assert_eq!(mode.as_str(), spelling);
    }
    let text = MINIMAL.replace(
        "role = \"primary\"",
        "role = \"primary\"\ntls = \"verify_full\"",
    );
    assert!(parse_error(&text).contains("verify-full"));
}

/// The node TLS keys config.toml shows commented out load once uncommented.
#[test]
fn example_config_commented_node_tls_keys_load_when_uncommented() {
    let mut text = EXAMPLE.to_owned();
    for key in ["tls", "tls_ca_file", "allow_cleartext_password"] {
        let commented = format!("# {key} = ");
        assert!(text.contains(&commented), "config.toml shows {key}");
        text = text.replace(&commented, &format!("{key} = "));
    }
    let config = Config::from_toml_str(&text).unwrap();
    assert_eq!(config.nodes[0].tls, NodeTlsMode::VerifyFull);
    assert!(config.nodes[0].tls_ca_file.is_some());
    assert!(!config.nodes[0].allow_cleartext_password);
}

#[test]
fn node_tls_ca_file_goes_with_the_verifying_modes_only() {
    let mut config = example();
    config.nodes[1].tls = NodeTlsMode::VerifyFull;
    assert_problem(
        &config,
        "nodes[1].tls_ca_file",
        "is required with tls = \"verify-full\"",
    );
    config.nodes[1].tls = NodeTlsMode::VerifyCa;
    assert_problem(
        &config,
        "nodes[1].tls_ca_file",
        "is required with tls = \"verify-ca\"",
    );
    config.nodes[1].tls_ca_file = Some("/etc/pgsplit/ca.crt".into());
    assert_eq!(problems(&config), []);
    config.nodes[1].tls_ca_file = Some("".into());
    assert_problem(&config, "nodes[1].tls_ca_file", "must not be empty");
    config.nodes[1].tls_ca_file = Some("ca.crt".into());
    for mode in [
        NodeTlsMode::Disable,
        NodeTlsMode::Prefer,
        NodeTlsMode::Require,
    ] {
        config.nodes[1].tls = mode;
        assert_problem(
            &config,
            "nodes[1].tls_ca_file",
            &format!(
                "is only used with tls = \"verify-ca\" or \"verify-full\" (got tls = {:?}); remove it or verify the node",
                mode.as_str()
            ),
        );
    }
}

#[test]
fn node_tls_verify_full_needs_a_checkable_host() {
    let mut config = example();
    config.nodes[0].tls = NodeTlsMode::VerifyFull;
    config.nodes[0].tls_ca_file = Some("ca.crt".into());
    for host in ["127.0.0.1", "::1", "db.internal", "localhost"] {
        config.nodes[0].host = host.into();
        assert_eq!(problems(&config), [], "{host}");
    }
    config.nodes[0].host = "db internal".into();
    assert_problem(
        &config,
        "nodes[0].host",
        "\"db internal\" is neither a DNS name nor an IP address, so tls = \"verify-full\" cannot check the certificate against it",
    );
    config.nodes[0].tls = NodeTlsMode::VerifyCa;
    assert_eq!(problems(&config), [], "verify-ca does not check the name");
}

// ---- [[databases]] rules ----

#[test]
fn databases_are_required_unique_and_not_the_admin_database() {
    let mut config = example();
    config.databases.clear();
    assert_problem(
        &config,
        "databases",
        "at least one [[databases]] entry is required",
    );

    let mut config = example();
    config.databases[1].name = "app".into();
    assert_problem(
        &config,
        "databases[1].name",
        "duplicate name \"app\" (already used by databases[0])",
    );
    config.databases[1].name = String::new();
    assert_problem(&config, "databases[1].name", "must not be empty");
    config.databases[1].name = "pgsplit".into();
    assert_problem(
        &config,
        "databases[1].name",
        "\"pgsplit\" is reserved for the admin console",
    );
}

#[test]
fn server_database_defaults_to_name_and_must_not_be_empty() {
    let mut config = example();
    config.databases[1].server_database = Some("bench_real".into());
    assert_eq!(config.databases[1].server_database(), "bench_real");
    assert_eq!(problems(&config), []);
    config.databases[1].server_database = Some(String::new());
    assert_problem(
        &config,
        "databases[1].server_database",
        "must not be empty when set",
    );
}

// ---- [[users]] rules ----

#[test]
fn users_are_required_and_unique() {
    let mut config = example();
    config.users.clear();
    config.proxy.admin_users.clear();
    assert_problem(&config, "users", "at least one [[users]] entry is required");

    let mut config = example();
    config.users[1].name = "app".into();
    assert_problem(
        &config,
        "users[1].name",
        "duplicate name \"app\" (already used by users[0])",
    );
    config.users[1].name = String::new();
    assert_problem(&config, "users[1].name", "must not be empty");
}

#[test]
fn password_is_required_unless_trust() {
    let mut config = example();
    config.users[0].password = None;
    assert_problem(
        &config,
        "users[0].password",
        "required unless auth = \"trust\"",
    );
    config.users[0].auth = ClientAuth::Md5;
    assert_problem(
        &config,
        "users[0].password",
        "required unless auth = \"trust\"",
    );
    config.users[0].auth = ClientAuth::Trust;
    assert_eq!(problems(&config), []);
    assert_eq!(config.users[0].server_password(), None);
    config.users[0].password = Some(String::new());
    assert_problem(&config, "users[0].password", "must not be empty");
}

#[test]
fn stored_verifier_needs_a_server_password() {
    for (verifier, auth) in [
        (SCRAM_VERIFIER, ClientAuth::ScramSha256),
        (MD5_VERIFIER, ClientAuth::Md5),
        (SCRAM_VERIFIER, ClientAuth::Trust),
    ] {
        let mut config = example();
        config.users[0] = user("app", Some(verifier), auth);
        assert_problem(
            &config,
            "users[0].server_password",
            "required when password is a stored verifier",
        );
        assert_eq!(config.users[0].server_password(), None);
        config.users[0].server_password = Some("secret".into());
        assert_eq!(problems(&config), []);
        assert_eq!(config.users[0].server_password(), Some("secret"));
    }
}

#[test]
fn md5_auth_cannot_use_a_scram_verifier_and_scram_cannot_use_md5() {
    let mut config = example();
    config.users[1] = user("app_md5", Some(SCRAM_VERIFIER), ClientAuth::Md5);
    config.users[1].server_password = Some("secret".into());
    assert_problem(
        &config,
        "users[1].auth",
        "\"md5\" cannot check a SCRAM-SHA-256 verifier; use auth = \"scram-sha-256\" or a plaintext password",
    );
    config.users[1] = user("app_md5", Some(MD5_VERIFIER), ClientAuth::ScramSha256);
    config.users[1].server_password = Some("secret".into());
    assert_problem(
        &config,
        "users[1].auth",
        "\"scram-sha-256\" cannot check an md5 verifier; use auth = \"md5\" or a plaintext password",
    );
}

#[test]
fn malformed_scram_verifier_is_a_problem() {
    for bad in [
        "SCRAM-SHA-256$",
        "SCRAM-SHA-256$4096:c2FsdA==",
        "SCRAM-SHA-256$0:cGdzcGxpdC10ZXN0LXNhbHQ=$hKwva6wOjGZXGvKMxxG6NaimFSE7kPCcKsI43TOcQsg=:RJiDDQWchp90Pr2KuT+JPuiNPUoLrvcro1GqSIV4ahg=",
        "SCRAM-SHA-256$4096:cGdz!GxpdC10ZXN0LXNhbHQ=$hKwva6wOjGZXGvKMxxG6NaimFSE7kPCcKsI43TOcQsg=:RJiDDQWchp90Pr2KuT+JPuiNPUoLrvcro1GqSIV4ahg=",
        "SCRAM-SHA-256$4096:cGdzcGxpdC10ZXN0LXNhbHQ=$hKwva6wOjGZXGvKMxxG6NaimFSE7kPCcKsI43TOcQ:RJiDDQWchp90Pr2KuT+JPuiNPUoLrvcro1GqSIV4ahg=",
    ] {
        let mut config = example();
        config.users[0].password = Some(bad.into());
        config.users[0].server_password = Some("secret".into());
        assert_problem(
            &config,
            "users[0].password",
            "looks like a SCRAM-SHA-256 verifier but is malformed \
             (expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>)",
        );
    }
}

#[test]
fn server_user_and_server_password_rules() {
    let mut config = example();
    config.users[0].server_user = Some(String::new());
    assert_problem(
        &config,
        "users[0].server_user",
        "must not be empty when set",
    );
    let mut config = example();
    config.users[0].server_password = Some(String::new());
    assert_problem(
        &config,
        "users[0].server_password",
        "must not be empty when set",
    );
    config.users[0].server_password = Some(MD5_VERIFIER.into());
    assert_problem(
        &config,
        "users[0].server_password",
        "must be the plaintext password (pgsplit logs in to the nodes with it), not a stored verifier",
    );
}

// ---- many problems at once ----

#[test]
fn every_problem_is_reported_in_file_order() {
    let text = r#"
[proxy]
max_client_conn = 0
max_message_size = "2GB"
admin_users = ["admin", "ghost"]

[pool]
min_size = 20
max_size = 5

[[nodes]]
name = "a"
host = "127.0.0.1"
port = 0
role = "replica"

[[nodes]]
name = "a"
host = "127.0.0.1"
role = "replica"
weight = 0

[[databases]]
name = "pgsplit"

[[users]]
name = "admin"

[[users]]
name = "app"
password = "SCRAM-SHA-256$4096:cGdzcGxpdC10ZXN0LXNhbHQ=$hKwva6wOjGZXGvKMxxG6NaimFSE7kPCcKsI43TOcQsg=:RJiDDQWchp90Pr2KuT+JPuiNPUoLrvcro1GqSIV4ahg="
auth = "md5"
"#;
    let err = Config::from_toml_str(text).unwrap_err();
    let expected = "\
proxy.max_client_conn: must be at least 1
proxy.max_message_size: must be between 1kB and 1GB (got 2GB)
proxy.admin_users[1]: no [[users]] entry is named \"ghost\"
pool.min_size: must not exceed pool.max_size (5)
nodes[0].port: must be between 1 and 65535
nodes[1].name: duplicate name \"a\" (already used by nodes[0])
nodes[1].weight: must be at least 1
databases[0].name: \"pgsplit\" is reserved for the admin console
users[0].password: required unless auth = \"trust\"
users[1].auth: \"md5\" cannot check a SCRAM-SHA-256 verifier; use auth = \"scram-sha-256\" or a plaintext password
users[1].server_password: required when password is a stored verifier";
    assert_eq!(err.to_string(), expected);
    match err {
        ConfigError::Invalid(problems) => {
            assert_eq!(problems.len(), 11);
            assert_eq!(problems[4].key, "nodes[0].port");
        }
        other => panic!("{other:?}"),
    }
}

// ---- loader ----

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("pgsplit-config-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn load_reads_validates_and_names_the_file_on_io_errors() {
    let good = temp_file("good.toml", EXAMPLE);
    assert_eq!(Config::load(&good).unwrap(), example());
    std::fs::remove_file(&good).unwrap();

    let bad = temp_file("bad.toml", &MINIMAL.replace("pw", ""));
    let err = Config::load(&bad).unwrap_err();
    std::fs::remove_file(&bad).unwrap();
    assert!(
        matches!(&err, ConfigError::Invalid(p) if p.len() == 1),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "users[0].password: must not be empty");

    let missing = std::env::temp_dir().join("pgsplit-config-does-not-exist.toml");
    let err = Config::load(&missing).unwrap_err();
    assert!(matches!(&err, ConfigError::Io { path, .. } if path == &missing));
    let message = err.to_string();
    assert!(message.starts_with("cannot read "), "{message}");
    assert!(
        message.contains("pgsplit-config-does-not-exist.toml"),
        "{message}"
    );
    assert!(std::error::Error::source(&err).is_some());
}

// ---- helpers ----

#[test]
fn password_kinds_follow_postgres_rules() {
    assert_eq!(PasswordKind::of("secret"), PasswordKind::Plaintext);
    assert_eq!(PasswordKind::of(MD5_VERIFIER), PasswordKind::Md5Verifier);
    assert_eq!(
        PasswordKind::of(SCRAM_VERIFIER),
        PasswordKind::ScramVerifier
    );
    assert_eq!(PasswordKind::of("md5secret"), PasswordKind::Plaintext);
    assert_eq!(
        PasswordKind::of(&MD5_VERIFIER.to_uppercase().replacen("MD5", "md5", 1)),
        PasswordKind::Plaintext,
        "postgres only takes lowercase hex"
    );
    assert_eq!(
        PasswordKind::of("SCRAM-SHA-256$junk"),
        PasswordKind::ScramVerifier
    );
    assert!(!PasswordKind::Plaintext.is_verifier());
    assert!(PasswordKind::Md5Verifier.is_verifier());
}

#[test]
fn server_login_defaults() {
    let mut u = user("app", Some("secret"), ClientAuth::ScramSha256);
    assert_eq!(
        (u.server_user(), u.server_password()),
        ("app", Some("secret"))
    );
    assert_eq!(u.password_kind(), Some(PasswordKind::Plaintext));
    u.server_user = Some("svc".into());
    u.server_password = Some("other".into());
    assert_eq!(
        (u.server_user(), u.server_password()),
        ("svc", Some("other"))
    );
    let u = user("app", Some(MD5_VERIFIER), ClientAuth::Md5);
    assert_eq!(u.server_password(), None);
}

#[test]
fn debug_output_hides_passwords() {
    let config = example();
    let text = format!("{config:?}");
    assert!(!text.contains("secret"), "{text}");
    assert!(text.contains("<hidden>"), "{text}");
    assert!(text.contains("app_md5"), "{text}");
}

#[test]
fn client_auth_spellings() {
    for auth in [ClientAuth::ScramSha256, ClientAuth::Md5, ClientAuth::Trust] {
        let text = format!("{MINIMAL}auth = \"{}\"\n", auth.as_str());
        let config = Config::from_toml_str(&text).unwrap();
        assert_eq!(config.users[0].auth, auth);
    }
}

#[test]
fn tls_is_off_by_default_and_needs_both_files_when_on() {
    let config = Config::from_toml_str(MINIMAL).unwrap();
    assert_eq!(config.tls, TlsConfig::default());
    assert_eq!(config.tls.client_mode, ClientTlsMode::Disable);
    assert_eq!(example().tls, TlsConfig::default());

    let with = |tls: &str| Config::from_toml_str(&format!("{MINIMAL}\n[tls]\n{tls}"));
    let config =
        with("client_mode = \"require\"\ncert_file = \"a.crt\"\nkey_file = \"a.key\"").unwrap();
    assert_eq!(config.tls.client_mode, ClientTlsMode::Require);
    assert_eq!(config.tls.cert_file, Some(PathBuf::from("a.crt")));

    let mut config = Config::from_toml_str(MINIMAL).unwrap();
    config.tls.client_mode = ClientTlsMode::Allow;
    assert_eq!(
        problems(&config),
        vec![
            (
                "tls.cert_file".to_owned(),
                "must be set when client_mode is \"allow\"".to_owned()
            ),
            (
                "tls.key_file".to_owned(),
                "must be set when client_mode is \"allow\"".to_owned()
            ),
        ]
    );
    config.tls.client_mode = ClientTlsMode::Disable;
    config.tls.cert_file = Some("a.crt".into());
    assert_problem(
        &config,
        "tls.key_file",
        "cert_file and key_file go together: set both or neither",
    );
    assert!(
        parse_error(&format!("{MINIMAL}\n[tls]\nclient_mode = \"prefer\""))
            .contains("unknown variant")
    );
    assert!(parse_error(&format!("{MINIMAL}\n[tls]\nca_file = \"x\"")).contains("unknown field"));
}

/// The `[tls]` keys config.toml shows commented out load once uncommented.
#[test]
fn example_config_commented_tls_keys_load_when_uncommented() {
    let text = EXAMPLE
        .replace("# cert_file = ", "cert_file = ")
        .replace("# key_file = ", "key_file = ")
        .replace("client_mode = \"disable\"", "client_mode = \"require\"");
    let config = Config::from_toml_str(&text).unwrap();
    assert_eq!(config.tls.client_mode, ClientTlsMode::Require);
    assert!(config.tls.cert_file.is_some() && config.tls.key_file.is_some());
}

/// The `[topology]` keys config.toml shows commented out load once uncommented; bad values
/// are refused with the key they are about.
#[test]
fn example_config_commented_topology_keys_load_when_uncommented() {
    let text = EXAMPLE.replace("# patroni_url = ", "patroni_url = ");
    let config = Config::from_toml_str(&text).unwrap();
    assert_eq!(config.topology.patroni_url.len(), 2);
    assert_eq!(config.topology.added_places(), 8);
    assert!(!example().topology.patroni());
    let bad = format!("{MINIMAL}\n[topology]\npatroni_url = \"https://a:8008\"\n");
    let bad = Config::from_toml_str(&bad).unwrap_err().to_string();
    assert!(bad.contains("topology.patroni_url[0]"), "{bad}");
    assert!(
        parse_error(&format!("{MINIMAL}\n[topology]\npatroni_urls = []")).contains("unknown field")
    );
}
