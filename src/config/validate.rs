//! The rules a parsed config must keep, checked all at once so one run reports every
//! problem, each with the key path it is about.

use std::collections::hash_map::{Entry, HashMap};

use tokio_rustls::rustls::pki_types::ServerName;

use super::{
    ByteSize, ClientAuth, ClientTlsMode, Config, LagConfig, NodeConfig, NodeRole, NodeTlsMode,
    PasswordKind, Problem, UserConfig, ADMIN_DATABASE,
};

/// Every problem in `config`, in file order; empty when it is valid.
pub(super) fn problems(config: &Config) -> Vec<Problem> {
    let mut out = Problems(Vec::new());
    proxy(config, &mut out);
    pool(config, &mut out);
    nodes(config, &mut out);
    databases(config, &mut out);
    users(config, &mut out);
    routing(config, &mut out);
    lag(config, &mut out);
    tls(config, &mut out);
    out.0.extend(super::topology::problems(&config.topology));
    out.0
}

fn tls(config: &Config, out: &mut Problems) {
    let tls = &config.tls;
    let mode = match tls.client_mode {
        ClientTlsMode::Disable => None,
        ClientTlsMode::Allow => Some("allow"),
        ClientTlsMode::Require => Some("require"),
    };
    let files = [
        ("cert_file", &tls.cert_file, &tls.key_file),
        ("key_file", &tls.key_file, &tls.cert_file),
    ];
    for (key, file, other) in files {
        match (file, mode) {
            (Some(_), _) => {}
            (None, Some(mode)) => out.add(
                format!("tls.{key}"),
                format!("must be set when client_mode is \"{mode}\""),
            ),
            (None, None) if other.is_some() => out.add(
                format!("tls.{key}"),
                "cert_file and key_file go together: set both or neither",
            ),
            (None, None) => {}
        }
    }
}

fn lag(config: &Config, out: &mut Problems) {
    out.0.extend(lag_rules(&config.lag));
    let lag = &config.lag;
    if let Some(user) = &lag.monitor_user {
        if config.user(user).is_none() {
            out.add(
                "lag.monitor_user",
                format!("no [[users]] entry named {user:?}"),
            );
        }
    }
    if let Some(db) = &lag.monitor_database {
        if config.database(db).is_none() {
            out.add(
                "lag.monitor_database",
                format!("no [[databases]] entry named {db:?}"),
            );
        }
    }
}

/// The `[lag]` rules that need nothing but the section itself (also checked on a live `SET`).
pub(super) fn lag_rules(lag: &LagConfig) -> Vec<Problem> {
    let mut out = Problems(Vec::new());
    if lag.check_interval.is_zero() {
        out.add("lag.check_interval", "must be greater than 0");
    }
    if lag.max_replica_lag.as_u64() == 0 && lag.max_replica_delay.is_zero() {
        out.add(
            "lag.max_replica_lag",
            "max_replica_lag and max_replica_delay cannot both be 0",
        );
    }
    if !(1..=100).contains(&lag.readmit_percent) {
        out.add("lag.readmit_percent", "must be between 1 and 100");
    }
    if lag.down_after_failures == 0 {
        out.add("lag.down_after_failures", "must be at least 1");
    }
    if lag.up_after_successes == 0 {
        out.add("lag.up_after_successes", "must be at least 1");
    }
    out.0
}

fn routing(config: &Config, out: &mut Problems) {
    let routing = &config.routing;
    if routing.replica_cooldown.is_zero() {
        out.add("routing.replica_cooldown", "must be greater than 0");
    }
    let secrets = routing
        .causal_key
        .iter()
        .map(|k| ("causal_key".to_owned(), k));
    let old = routing.causal_old_keys.iter().enumerate();
    for (key, secret) in secrets.chain(old.map(|(i, k)| (format!("causal_old_keys[{i}]"), k))) {
        if secret.chars().count() < super::MIN_CAUSAL_KEY {
            out.add(
                format!("routing.{key}"),
                format!("must have at least {} characters", super::MIN_CAUSAL_KEY),
            );
        }
    }
    if routing.causal_key.is_some() && routing.causal_key_file.is_some() {
        out.add(
            "routing.causal_key_file",
            "set causal_key or causal_key_file, not both",
        );
    }
    for (key, names) in [
        ("primary_tables", &routing.primary_tables),
        ("write_functions", &routing.write_functions),
        ("read_only_functions", &routing.read_only_functions),
    ] {
        for (i, name) in names.iter().enumerate() {
            let parts: Vec<&str> = name.split('.').collect();
            let ok = parts.len() <= 2
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && !p.contains(char::is_whitespace));
            if !ok {
                out.add(
                    format!("routing.{key}[{i}]"),
                    "must be a name or schema.name without spaces",
                );
            }
        }
    }
}

struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }
}

const MIN_MESSAGE_SIZE: ByteSize = ByteSize::kb(1);
const MAX_MESSAGE_SIZE: ByteSize = ByteSize::gb(1);

fn proxy(config: &Config, out: &mut Problems) {
    let proxy = &config.proxy;
    if proxy.worker_threads == 0 {
        out.add("proxy.worker_threads", "must be at least 1");
    }
    if proxy.max_client_conn == 0 {
        out.add("proxy.max_client_conn", "must be at least 1");
    }
    if !(MIN_MESSAGE_SIZE..=MAX_MESSAGE_SIZE).contains(&proxy.max_message_size) {
        out.add(
            "proxy.max_message_size",
            format!(
                "must be between {MIN_MESSAGE_SIZE} and {MAX_MESSAGE_SIZE} (got {})",
                proxy.max_message_size
            ),
        );
    }
    if proxy.server_connect_timeout.is_zero() {
        out.add("proxy.server_connect_timeout", "must be greater than 0");
    }
    for (i, name) in proxy.admin_users.iter().enumerate() {
        if config.user(name).is_none() {
            out.add(
                format!("proxy.admin_users[{i}]"),
                format!("no [[users]] entry is named {name:?}"),
            );
        }
    }
}

fn pool(config: &Config, out: &mut Problems) {
    let pool = &config.pool;
    if pool.max_size == 0 {
        out.add("pool.max_size", "must be at least 1");
    } else if pool.min_size > pool.max_size {
        out.add(
            "pool.min_size",
            format!("must not exceed pool.max_size ({})", pool.max_size),
        );
    }
    if pool.checkout_timeout.is_zero() {
        out.add("pool.checkout_timeout", "must be greater than 0");
    }
    if pool.max_prepared_statements == 0 {
        out.add("pool.max_prepared_statements", "must be at least 1");
    }
    if pool.max_pinned_per_pool > pool.max_size {
        out.add(
            "pool.max_pinned_per_pool",
            format!("must not exceed pool.max_size ({})", pool.max_size),
        );
    }
}

fn nodes(config: &Config, out: &mut Problems) {
    if config.nodes.is_empty() {
        out.add("nodes", "at least one [[nodes]] entry is required");
        return;
    }
    let mut names = HashMap::new();
    let mut primary = None;
    for (i, node) in config.nodes.iter().enumerate() {
        let key = |field: &str| format!("nodes[{i}].{field}");
        if node.name.is_empty() {
            out.add(key("name"), "must not be empty");
        } else if !node
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            out.add(
                key("name"),
                format!(
                    "may only contain letters, digits, '_' and '-' (got {:?})",
                    node.name
                ),
            );
        } else if let Some(first) = seen_before(&mut names, &node.name, i) {
            out.add(
                key("name"),
                format!(
                    "duplicate name {:?} (already used by nodes[{first}])",
                    node.name
                ),
            );
        }
        if node.host.trim().is_empty() {
            out.add(key("host"), "must not be empty");
        }
        if node.port == 0 {
            out.add(key("port"), "must be between 1 and 65535");
        }
        node_tls(node, &key, out);
        if node.role == NodeRole::Primary {
            match primary {
                None => primary = Some(i),
                Some(first) => out.add(
                    key("role"),
                    format!(
                        "nodes[{first}] is already the primary; at most one node may have role = \"primary\" (use \"auto\" to let pgsplit find it)"
                    ),
                ),
            }
        }
        if node.weight == 0 {
            out.add(key("weight"), "must be at least 1");
        }
    }
}

/// `tls`, `tls_ca_file`: a CA file exactly when the mode checks certificates, and a host
/// name verify-full can check the certificate against.
fn node_tls(node: &NodeConfig, key: &dyn Fn(&str) -> String, out: &mut Problems) {
    let mode = node.tls.as_str();
    match &node.tls_ca_file {
        None if node.tls.verifies() => {
            out.add(key("tls_ca_file"), format!("is required with tls = {mode:?}"))
        }
        Some(_) if !node.tls.verifies() => out.add(
            key("tls_ca_file"),
            format!(
                "is only used with tls = \"verify-ca\" or \"verify-full\" (got tls = {mode:?}); remove it or verify the node"
            ),
        ),
        Some(path) if path.as_os_str().is_empty() => out.add(key("tls_ca_file"), "must not be empty"),
        _ => {}
    }
    if node.tls == NodeTlsMode::VerifyFull && ServerName::try_from(node.host.as_str()).is_err() {
        out.add(
            key("host"),
            format!(
                "{:?} is neither a DNS name nor an IP address, so tls = \"verify-full\" cannot check the certificate against it",
                node.host
            ),
        );
    }
}

fn databases(config: &Config, out: &mut Problems) {
    if config.databases.is_empty() {
        out.add("databases", "at least one [[databases]] entry is required");
        return;
    }
    let mut names = HashMap::new();
    for (i, db) in config.databases.iter().enumerate() {
        let key = |field: &str| format!("databases[{i}].{field}");
        if db.name.is_empty() {
            out.add(key("name"), "must not be empty");
        } else if db.name == ADMIN_DATABASE {
            out.add(
                key("name"),
                format!("{ADMIN_DATABASE:?} is reserved for the admin console"),
            );
        } else if let Some(first) = seen_before(&mut names, &db.name, i) {
            out.add(
                key("name"),
                format!(
                    "duplicate name {:?} (already used by databases[{first}])",
                    db.name
                ),
            );
        }
        if db.server_database.as_deref() == Some("") {
            out.add(key("server_database"), "must not be empty when set");
        }
    }
}

fn users(config: &Config, out: &mut Problems) {
    if config.users.is_empty() {
        out.add("users", "at least one [[users]] entry is required");
        return;
    }
    let mut names = HashMap::new();
    for (i, user) in config.users.iter().enumerate() {
        let key = |field: &str| format!("users[{i}].{field}");
        if user.name.is_empty() {
            out.add(key("name"), "must not be empty");
        } else if let Some(first) = seen_before(&mut names, &user.name, i) {
            out.add(
                key("name"),
                format!(
                    "duplicate name {:?} (already used by users[{first}])",
                    user.name
                ),
            );
        }
        user_password(user, &key, out);
        if user.server_user.as_deref() == Some("") {
            out.add(key("server_user"), "must not be empty when set");
        }
        match user.server_password.as_deref() {
            Some("") => out.add(key("server_password"), "must not be empty when set"),
            Some(p) if PasswordKind::of(p).is_verifier() => out.add(
                key("server_password"),
                "must be the plaintext password (pgsplit logs in to the nodes with it), not a stored verifier",
            ),
            Some(_) => {}
            None => {
                if user.password_kind().is_some_and(PasswordKind::is_verifier) {
                    out.add(
                        key("server_password"),
                        "required when password is a stored verifier",
                    );
                }
            }
        }
    }
}

/// Remembers `name` at `index`; returns the index that used it first, if one did.
fn seen_before<'a>(
    seen: &mut HashMap<&'a str, usize>,
    name: &'a str,
    index: usize,
) -> Option<usize> {
    match seen.entry(name) {
        Entry::Occupied(first) => Some(*first.get()),
        Entry::Vacant(slot) => {
            slot.insert(index);
            None
        }
    }
}

/// The rules tying `password` to `auth`.
fn user_password(user: &UserConfig, key: &dyn Fn(&str) -> String, out: &mut Problems) {
    let Some(password) = user.password.as_deref() else {
        if user.auth != ClientAuth::Trust {
            out.add(key("password"), "required unless auth = \"trust\"");
        }
        return;
    };
    if password.is_empty() {
        out.add(key("password"), "must not be empty");
        return;
    }
    match (PasswordKind::of(password), user.auth) {
        (PasswordKind::ScramVerifier, _) if !scram_verifier_well_formed(password) => out.add(
            key("password"),
            "looks like a SCRAM-SHA-256 verifier but is malformed \
             (expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>)",
        ),
        (PasswordKind::ScramVerifier, ClientAuth::Md5) => out.add(
            key("auth"),
            "\"md5\" cannot check a SCRAM-SHA-256 verifier; use auth = \"scram-sha-256\" \
             or a plaintext password",
        ),
        (PasswordKind::Md5Verifier, ClientAuth::ScramSha256) => out.add(
            key("auth"),
            "\"scram-sha-256\" cannot check an md5 verifier; use auth = \"md5\" \
             or a plaintext password",
        ),
        _ => {}
    }
}

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, as `pg_authid` stores it.
fn scram_verifier_well_formed(verifier: &str) -> bool {
    fn base64(s: &str) -> bool {
        let body = s.trim_end_matches('=');
        !s.is_empty()
            && s.len().is_multiple_of(4)
            && s.len() - body.len() <= 2
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    }
    // 32-byte SHA-256 keys are 44 base64 characters.
    let key = |s: &str| s.len() == 44 && base64(s);
    let Some(rest) = verifier.strip_prefix("SCRAM-SHA-256$") else {
        return false;
    };
    let Some((iterations_salt, keys)) = rest.split_once('$') else {
        return false;
    };
    let (Some((iterations, salt)), Some((stored, server))) =
        (iterations_salt.split_once(':'), keys.split_once(':'))
    else {
        return false;
    };
    !iterations.is_empty()
        && iterations.bytes().all(|b| b.is_ascii_digit())
        && iterations.parse::<u32>().is_ok_and(|n| n > 0)
        && base64(salt)
        && key(stored)
        && key(server)
}
