//! The admin console's tables, built from snapshots of the proxy's state. Pure: each
//! function takes plain data and `now`, so they are tested without a proxy.

use std::time::{Duration, Instant};

use crate::backend::pool::PoolRow;
use crate::backend::{NodeInfo, Origin};
use crate::classify::CacheStats;
use crate::clients::{CausalPosition, ClientRow};
use crate::config::{Config, LagConfig, SETTABLE};
use crate::lag::{format_bytes, format_duration, LagThresholds, ReplicaReport, RoleReport};
use crate::roles::Role;
use crate::router::Reason;
use crate::topology::Replica;

/// A result set of text columns; `None` is NULL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl Table {
    fn new(columns: &[&'static str]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    fn push(&mut self, row: Vec<Option<String>>) {
        debug_assert_eq!(row.len(), self.columns.len());
        self.rows.push(row);
    }

    /// The value in `column` of row `row`, for tests and the like.
    pub fn get(&self, row: usize, column: &str) -> Option<&str> {
        let i = self.columns.iter().position(|c| *c == column)?;
        self.rows.get(row)?.get(i)?.as_deref()
    }
}

fn text(value: impl ToString) -> Option<String> {
    Some(value.to_string())
}

/// Seconds with millisecond precision: `"0.250"`.
fn seconds(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// `SHOW REPLICAS`: one row per replica. `nodes` are the configured node names by index.
pub fn replicas(
    nodes: &[String],
    reports: &[ReplicaReport],
    routing: &[Replica],
    now: Instant,
) -> Table {
    let mut t = Table::new(&[
        "node",
        "state",
        "lag_bytes",
        "lag_seconds",
        "reason",
        "since",
        "in_state",
        "reads_served",
        "active",
        "ejections",
    ]);
    for report in reports {
        let entry = routing.iter().find(|r| r.node == report.node);
        let in_state = now.saturating_duration_since(report.since);
        t.push(vec![
            nodes.get(report.node).cloned(),
            text(report.state),
            report.lag_bytes.map(|b| b.to_string()),
            report.lag.map(seconds),
            text(&report.reason),
            text(wall_clock_ago(in_state)),
            text(format_duration(in_state)),
            entry.map(|e| e.reads.to_string()),
            entry.map(|e| e.outstanding.to_string()),
            text(report.ejections),
        ]);
    }
    t
}

/// `SHOW NODES`: one row per node: the role its checks show, its timeline, whether it
/// takes writes, whether it is in the read rotation, and why; where it came from
/// (`[[nodes]]` or Patroni) and whether Patroni tags it `noloadbalance`. `nodes` are the
/// filled node places, `reports` the lag figures of every node, `routing` the topology's
/// entries.
pub fn nodes(
    nodes: &[NodeInfo],
    roles: &RoleReport,
    reports: &[ReplicaReport],
    routing: &[Replica],
    now: Instant,
) -> Table {
    let mut t = Table::new(&[
        "node",
        "role",
        "timeline",
        "writes",
        "reads",
        "reason",
        "role_changes",
        "source",
        "noloadbalance",
    ]);
    for (i, verdict) in roles.roles.nodes.iter().enumerate() {
        // Empty places (kept for members Patroni may add) are not shown.
        let Some(info) = nodes.iter().find(|n| n.index == i) else {
            continue;
        };
        let entry = routing.iter().find(|r| r.node == i);
        let reads = entry.is_some_and(|e| e.available(now));
        let health = reports.iter().find(|r| r.node == i);
        // A replica by its role that is out of the rotation: its lag or health says why.
        let reason = match health {
            Some(h) if verdict.role == Role::Replica && !reads => {
                format!(
                    "{}; out of the read rotation: {} ({})",
                    verdict.why, h.state, h.reason
                )
            }
            _ => verdict.why.clone(),
        };
        let reason = if info.noloadbalance {
            format!("{reason}; no reads: tagged noloadbalance in Patroni")
        } else if !info.listed && info.origin == Origin::Patroni {
            format!("{reason}; no reads: no longer listed in Patroni's /cluster")
        } else {
            reason
        };
        t.push(vec![
            text(&info.name),
            text(verdict.role),
            verdict.timeline.map(|t| t.to_string()),
            text(roles.roles.writer_node() == Some(i)),
            text(reads),
            text(reason),
            text(roles.changes),
            text(info.origin.as_str()),
            text(info.noloadbalance),
        ]);
    }
    t
}

/// `SHOW LAG`: per replica, lag percentiles over the history window and the share of it the
/// replica would have been ejected at the current threshold, at half and at double it.
pub fn lag(
    nodes: &[String],
    reports: &[ReplicaReport],
    thresholds: &LagThresholds,
    now: Instant,
) -> Table {
    let mut t = Table::new(&[
        "node",
        "samples",
        "window",
        "bytes_p50",
        "bytes_p90",
        "bytes_p99",
        "bytes_max",
        "seconds_p50",
        "seconds_p90",
        "seconds_p99",
        "seconds_max",
        "threshold",
        "ejected_at_threshold",
        "ejected_at_half",
        "ejected_at_double",
    ]);
    let threshold = describe_threshold(thresholds);
    for report in reports {
        let name = nodes.get(report.node).cloned();
        let Some(s) = report.history.summary(now, thresholds) else {
            let mut row = vec![name, text(0)];
            row.resize(t.columns.len(), None);
            row[11] = text(&threshold);
            t.push(row);
            continue;
        };
        let secs = |f: fn(&crate::lag::Percentiles<Duration>) -> Duration| {
            s.seconds.as_ref().map(|p| seconds(f(p)))
        };
        let share = |x: f64| text(format!("{:.1}%", x * 100.0));
        t.push(vec![
            name,
            text(s.samples),
            text(format_duration(s.covered)),
            text(format_bytes(s.bytes.p50)),
            text(format_bytes(s.bytes.p90)),
            text(format_bytes(s.bytes.p99)),
            text(format_bytes(s.bytes.max)),
            secs(|p| p.p50),
            secs(|p| p.p90),
            secs(|p| p.p99),
            secs(|p| p.max),
            text(&threshold),
            share(s.ejected_share_at[0]),
            share(s.ejected_share_at[1]),
            share(s.ejected_share_at[2]),
        ]);
    }
    t
}

/// `16.0 MB`, `1.0 s`, or `16.0 MB or 1.0 s`.
fn describe_threshold(t: &LagThresholds) -> String {
    let parts: Vec<String> = [
        t.max_bytes.map(format_bytes),
        t.max_lag.map(format_duration),
    ]
    .into_iter()
    .flatten()
    .collect();
    parts.join(" or ")
}

/// `SHOW POOLS`.
pub fn pools(rows: &[PoolRow]) -> Table {
    let mut t = Table::new(&[
        "node",
        "database",
        "user",
        "size",
        "idle",
        "active",
        "waiting",
        "max_size",
        "pinned",
        "max_pinned",
    ]);
    for p in rows {
        t.push(vec![
            text(&p.node),
            text(&p.database),
            text(&p.user),
            text(p.size),
            text(p.idle),
            text(p.size.saturating_sub(p.idle)),
            text(p.waiting),
            text(p.max_size),
            text(p.bound),
            text(p.max_bound),
        ]);
    }
    t
}

/// `SHOW CLIENTS`: each client with the name of the node serving it now, if any.
pub fn clients(rows: &[(ClientRow, Option<String>)], now: Instant) -> Table {
    let mut t = Table::new(&[
        "id",
        "user",
        "database",
        "addr",
        "connected_for",
        "node",
        "pinned_for",
        "causal_lsn",
    ]);
    for (c, node) in rows {
        let pinned = c
            .now
            .pinned_until
            .filter(|until| *until > now)
            .map(|until| format_duration(until - now));
        t.push(vec![
            text(c.id),
            text(&c.user),
            text(&c.database),
            text(c.peer),
            text(format_duration(
                now.saturating_duration_since(c.connected_at),
            )),
            node.clone(),
            pinned,
            (c.now.causal != CausalPosition::None).then(|| c.now.causal.to_string()),
        ]);
    }
    t
}

/// What `SHOW STATS` reports.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Node names with the transactions/statements routed to each.
    pub by_node: Vec<(String, u64)>,
    pub by_reason: Vec<(Reason, u64)>,
    /// Read-your-writes pins started or extended.
    pub pins: u64,
    pub cache: CacheStats,
    pub clients: usize,
}

/// `SHOW STATS`: one `name, value` row per counter.
pub fn stats(s: &Stats) -> Table {
    let mut t = Table::new(&["name", "value"]);
    for (node, n) in &s.by_node {
        t.push(vec![text(format!("routed_to.{node}")), text(n)]);
    }
    for (reason, n) in &s.by_reason {
        t.push(vec![text(format!("reason.{}", reason.as_str())), text(n)]);
    }
    let lookups = s.cache.hits + s.cache.misses;
    let ratio = match lookups {
        0 => None,
        n => text(format!("{:.3}", s.cache.hits as f64 / n as f64)),
    };
    let rows = [
        ("pins", text(s.pins)),
        ("classify_cache.hits", text(s.cache.hits)),
        ("classify_cache.misses", text(s.cache.misses)),
        ("classify_cache.entries", text(s.cache.entries)),
        ("classify_cache.hit_ratio", ratio),
        ("clients", text(s.clients)),
    ];
    for (name, value) in rows {
        t.push(vec![text(name), value]);
    }
    t
}

/// `SHOW CONFIG`: every setting in force (the `[lag]` ones as they are now, which `SET` or a
/// reload may have changed), and whether `SET` can change it.
pub fn config(config: &Config, lag: &LagConfig) -> Table {
    let mut t = Table::new(&["key", "value", "changeable"]);
    let live = Config {
        lag: lag.clone(),
        ..config.clone()
    };
    for (key, value) in live.entries() {
        let changeable = key
            .strip_prefix("lag.")
            .is_some_and(|k| SETTABLE.contains(&k));
        t.push(vec![text(key), text(value), text(changeable)]);
    }
    t
}

/// `SHOW <setting>`: one `[lag]` setting.
pub fn setting(lag: &LagConfig, key: &str) -> Option<Table> {
    let key = crate::config::live_setting_key(key);
    let value = lag.value_of(&key)?;
    let mut t = Table::new(&[SETTABLE.iter().find(|k| **k == key)?]);
    t.push(vec![text(value)]);
    Some(t)
}

/// `SHOW HELP`.
pub fn help() -> Table {
    let mut t = Table::new(&["command"]);
    for line in super::command::HELP {
        t.push(vec![text(line)]);
    }
    t
}

/// The wall-clock time `ago` before now, as `YYYY-MM-DD HH:MM:SS UTC`.
fn wall_clock_ago(ago: Duration) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    utc(now.saturating_sub(ago).as_secs())
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC` (civil-from-days, proleptic Gregorian).
fn utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests;
