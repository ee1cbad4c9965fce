//! The `[topology]` section: where pgsplit reads the cluster's members besides `[[nodes]]`
//! (Patroni's REST API), how often, and how many members it may add; and its rules.

use serde::{Deserialize, Deserializer, Serialize};

use super::{Duration, Problem};

/// `[topology]`: members read from Patroni's REST API (`GET /cluster`), so a member added
/// to the cluster joins the read rotation without a config change, and a member tagged
/// `noloadbalance` gets no reads. The monitor's checks stay the authority on roles.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopologyConfig {
    /// Patroni REST API base URLs, `http://host:port` (a string or a list); any member's
    /// API serves the whole cluster, the first that answers is used. Empty (the default):
    /// members come only from `[[nodes]]`. Plain HTTP only (no TLS, no authentication).
    #[serde(deserialize_with = "one_or_many")]
    pub patroni_url: Vec<String>,
    /// How often `/cluster` is read. Default 1s; at least 100ms.
    pub patroni_interval: Duration,
    /// One read of `/cluster` (connecting, sending, reading the answer) ends after this.
    /// Default 2s; > 0.
    pub patroni_timeout: Duration,
    /// How many members not in `[[nodes]]` pgsplit can add (their places are reserved at
    /// start). Default 8; at most 64.
    pub patroni_max_added: usize,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        TopologyConfig {
            patroni_url: Vec::new(),
            patroni_interval: Duration::from_secs(1),
            patroni_timeout: Duration::from_secs(2),
            patroni_max_added: 8,
        }
    }
}

impl TopologyConfig {
    /// Whether members are read from Patroni.
    pub fn patroni(&self) -> bool {
        !self.patroni_url.is_empty()
    }

    /// How many node places are reserved for members Patroni adds (0 without Patroni).
    pub fn added_places(&self) -> usize {
        if self.patroni() {
            self.patroni_max_added
        } else {
            0
        }
    }
}

/// Most members pgsplit may add (`patroni_max_added`).
pub const MAX_ADDED: usize = 64;

/// `patroni_url` as one string or a list of strings.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a URL string or a list of URL strings")]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// Splits `http://host:port[/]` into host and port (default 80). Only plain HTTP; no
/// path, user or query.
pub fn parse_http_url(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?} must start with http:// (https is not supported)"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', '@']) || rest.is_empty() {
        return Err(format!(
            "{url:?} must be http://host:port, with no path (pgsplit reads /cluster)"
        ));
    }
    let (host, port) = match rest.rsplit_once(':') {
        // An IPv6 literal without a port: [::1]
        Some((host, port)) if !port.ends_with(']') => {
            let port: u16 = port
                .parse()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{url:?}: the port must be 1..=65535"))?;
            (host, port)
        }
        _ => (rest, 80),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    Ok((host.to_owned(), port))
}

/// The rules of `[topology]`.
pub(super) fn problems(topology: &TopologyConfig) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut add = |key: String, message: String| out.push(Problem { key, message });
    for (i, url) in topology.patroni_url.iter().enumerate() {
        if let Err(e) = parse_http_url(url) {
            add(format!("topology.patroni_url[{i}]"), e);
        }
    }
    if topology.patroni_interval < Duration::from_millis(100) {
        add(
            "topology.patroni_interval".into(),
            "must be at least 100ms".into(),
        );
    }
    if topology.patroni_timeout.is_zero() {
        add(
            "topology.patroni_timeout".into(),
            "must be greater than 0".into(),
        );
    }
    if topology.patroni_max_added > MAX_ADDED {
        add(
            "topology.patroni_max_added".into(),
            format!("must be at most {MAX_ADDED}"),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_http_host_and_port() {
        assert_eq!(
            parse_http_url("http://127.0.0.1:8008"),
            Ok(("127.0.0.1".into(), 8008))
        );
        assert_eq!(
            parse_http_url("http://patroni-1/"),
            Ok(("patroni-1".into(), 80))
        );
        assert_eq!(
            parse_http_url("http://[::1]:8008"),
            Ok(("::1".into(), 8008))
        );
        assert!(parse_http_url("https://a:8008")
            .unwrap_err()
            .contains("https"));
        assert!(parse_http_url("http://a:8008/cluster")
            .unwrap_err()
            .contains("no path"));
        assert!(parse_http_url("http://a:0").unwrap_err().contains("port"));
        assert!(parse_http_url("http://:8008")
            .unwrap_err()
            .contains("no host"));
    }

    #[test]
    fn a_string_or_a_list() {
        let one: TopologyConfig = toml::from_str("patroni_url = \"http://a:8008\"").unwrap();
        assert_eq!(one.patroni_url, ["http://a:8008"]);
        let many: TopologyConfig =
            toml::from_str("patroni_url = [\"http://a:8008\", \"http://b:8008\"]").unwrap();
        assert_eq!(many.patroni_url.len(), 2);
        assert_eq!(many.added_places(), 8);
        assert_eq!(TopologyConfig::default().added_places(), 0);
        let wrong = toml::from_str::<TopologyConfig>("patroni_url = 8008").unwrap_err();
        assert!(
            wrong
                .to_string()
                .contains("a URL string or a list of URL strings"),
            "{wrong}"
        );
    }

    #[test]
    fn problems_name_their_key() {
        let bad = TopologyConfig {
            patroni_url: vec!["http://ok:1".into(), "ftp://x".into()],
            patroni_interval: Duration::from_millis(10),
            patroni_timeout: Duration::ZERO,
            patroni_max_added: 65,
        };
        let keys: Vec<String> = problems(&bad).into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "topology.patroni_url[1]",
                "topology.patroni_interval",
                "topology.patroni_timeout",
                "topology.patroni_max_added"
            ]
        );
        assert!(problems(&TopologyConfig::default()).is_empty());
    }
}
