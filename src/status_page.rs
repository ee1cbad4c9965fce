//! `GET /status` on the metrics listener: one plain HTML page for an operator with a
//! browser and no Prometheus. Each node with its discovered role, read state and lag, a chart
//! of each replica's lag over the last minutes against the threshold (inline SVG, no
//! script, no build step), the pools and the clients. Pure: it renders a [`StatusView`]
//! built from the proxy's state, so it is tested without a proxy.

use std::fmt::Write;
use std::time::{Duration, Instant};

use crate::backend::pool::PoolRow;
use crate::lag::{format_bytes, format_duration};

/// What the page shows, taken from the proxy at one moment.
#[derive(Debug, Clone)]
pub struct StatusView {
    pub version: &'static str,
    pub nodes: Vec<NodeView>,
    /// The lag threshold (`max_replica_lag`), drawn as a line on each chart.
    pub max_lag_bytes: u64,
    pub pools: Vec<PoolRow>,
    /// Logged-in clients.
    pub clients: usize,
}

/// One node.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub name: String,
    /// Discovered role: primary, replica, ...
    pub role: String,
    /// Read state: healthy, lagging, down, promoted.
    pub state: String,
    pub lag_bytes: Option<u64>,
    pub lag: Option<Duration>,
    /// Why it is in or out of the read rotation.
    pub reason: String,
    /// Lag samples: (when, bytes behind), oldest first. Empty for the primary.
    pub history: Vec<(Instant, u64)>,
}

/// Width of the chart, and the minutes it covers.
const CHART_WIDTH: f64 = 360.0;
const CHART_HEIGHT: f64 = 80.0;
const CHART_SPAN: Duration = Duration::from_secs(300);

/// The page.
pub fn render(view: &StatusView, now: Instant) -> String {
    let mut out = String::with_capacity(8 * 1024);
    out.push_str(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>pgsplit status</title>\n\
         <style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}\
         .healthy{color:#1a7f37}.lagging{color:#9a6700}.down,.promoted{color:#cf222e}</style>\n\
         </head><body>\n",
    );
    let _ = writeln!(
        out,
        "<h1>pgsplit {}</h1>\n<p>Clients logged in: <span id=\"clients\">{}</span>. Lag threshold: {}.</p>",
        escape(view.version),
        view.clients,
        format_bytes(view.max_lag_bytes)
    );
    out.push_str("<h2>Nodes</h2>\n<table id=\"nodes\">\n<tr><th>node</th><th>role</th><th>state</th><th>lag</th><th>why</th><th>lag, last 5 minutes</th></tr>\n");
    for node in &view.nodes {
        let lag = match (node.lag_bytes, node.lag) {
            (Some(b), Some(d)) => format!("{} ({})", format_bytes(b), format_duration(d)),
            (Some(b), None) => format_bytes(b),
            _ => "—".to_string(),
        };
        let _ = writeln!(
            out,
            "<tr class=\"node\" data-node=\"{name}\"><td>{name}</td><td>{role}</td>\
             <td class=\"{state}\">{state}</td><td class=\"lag\">{lag}</td><td>{why}</td><td>{chart}</td></tr>",
            name = escape(&node.name),
            role = escape(&node.role),
            state = escape(&node.state),
            lag = escape(&lag),
            why = escape(&node.reason),
            chart = chart(&node.history, view.max_lag_bytes, now),
        );
    }
    out.push_str("</table>\n<h2>Pools</h2>\n<table id=\"pools\">\n<tr><th>node</th><th>database</th><th>user</th><th>open</th><th>idle</th><th>waiting</th><th>max</th></tr>\n");
    for p in &view.pools {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&p.node),
            escape(&p.database),
            escape(&p.user),
            p.size,
            p.idle,
            p.waiting,
            p.max_size
        );
    }
    out.push_str("</table>\n</body></html>\n");
    out
}

/// An SVG line of the lag samples of the last [`CHART_SPAN`] (time left to right, bytes
/// bottom to top, scaled to the larger of the highest sample and the threshold), with the
/// threshold as a dashed line. Empty when there are no samples.
fn chart(history: &[(Instant, u64)], threshold: u64, now: Instant) -> String {
    let recent: Vec<(f64, u64)> = history
        .iter()
        .filter_map(|&(at, bytes)| {
            let age = now.checked_duration_since(at)?;
            (age <= CHART_SPAN).then_some((age.as_secs_f64(), bytes))
        })
        .collect();
    if recent.is_empty() {
        return String::new();
    }
    let top = recent
        .iter()
        .map(|&(_, b)| b)
        .max()
        .unwrap_or(0)
        .max(threshold)
        .max(1) as f64;
    let x = |age: f64| CHART_WIDTH * (1.0 - age / CHART_SPAN.as_secs_f64());
    let y = |bytes: u64| CHART_HEIGHT * (1.0 - bytes as f64 / top);
    let points: Vec<String> = recent
        .iter()
        .map(|&(age, bytes)| format!("{:.1},{:.1}", x(age), y(bytes)))
        .collect();
    format!(
        "<svg class=\"lag-chart\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\">\
         <title>lag over the last 5 minutes, up to {top}</title>\
         <line x1=\"0\" x2=\"{w}\" y1=\"{t:.1}\" y2=\"{t:.1}\" stroke=\"#cf222e\" stroke-dasharray=\"4 3\"/>\
         <polyline fill=\"none\" stroke=\"#0969da\" stroke-width=\"1.5\" points=\"{points}\"/></svg>",
        w = CHART_WIDTH,
        h = CHART_HEIGHT,
        top = escape(&format_bytes(top as u64)),
        t = y(threshold),
        points = points.join(" "),
    )
}

/// Text made safe inside HTML (names and reasons come from config and from servers).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(now: Instant) -> StatusView {
        StatusView {
            version: "0.1.0",
            nodes: vec![
                NodeView {
                    name: "primary".into(),
                    role: "primary".into(),
                    state: "promoted".into(),
                    lag_bytes: None,
                    lag: None,
                    reason: "takes writes".into(),
                    history: vec![],
                },
                NodeView {
                    name: "replica<1>".into(),
                    role: "replica".into(),
                    state: "healthy".into(),
                    lag_bytes: Some(2048),
                    lag: Some(Duration::from_millis(30)),
                    reason: "lag 2.0 kB within max 16.0 MB".into(),
                    history: vec![
                        (now - Duration::from_secs(600), 1),
                        (now - Duration::from_secs(120), 1024),
                        (now - Duration::from_secs(1), 2048),
                    ],
                },
            ],
            max_lag_bytes: 4096,
            pools: vec![PoolRow {
                node: "primary".into(),
                database: "app".into(),
                user: "app".into(),
                size: 3,
                idle: 2,
                waiting: 0,
                max_size: 10,
                bound: 0,
                max_bound: 9,
            }],
            clients: 7,
        }
    }

    #[test]
    fn lists_nodes_pools_and_clients_and_escapes_names() {
        let now = Instant::now();
        let page = render(&view(now), now);
        assert!(page.contains("<span id=\"clients\">7</span>"));
        assert!(page.contains("data-node=\"replica&lt;1&gt;\""), "{page}");
        assert!(!page.contains("replica<1>"));
        assert!(page.contains("<td class=\"healthy\">healthy</td>"));
        assert!(page.contains("<td>primary</td><td>app</td><td>app</td><td>3</td><td>2</td>"));
    }

    #[test]
    fn charts_the_last_five_minutes_against_the_threshold() {
        let now = Instant::now();
        let page = render(&view(now), now);
        // One chart (the primary has no samples), with the two recent samples only.
        assert_eq!(page.matches("<svg").count(), 1);
        let points = page
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(points.split(' ').count(), 2, "{points}");
        // The threshold (4 kB) is the top of the scale: its line is at y = 0; the newest
        // sample (2 kB, now) sits at the right edge, halfway up.
        assert!(page.contains("y1=\"0.0\""), "{page}");
        assert!(points.ends_with("358.8,40.0"), "{points}");
    }

    #[test]
    fn no_samples_no_chart() {
        assert_eq!(chart(&[], 10, Instant::now()), "");
    }
}
