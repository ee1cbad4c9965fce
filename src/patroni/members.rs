//! Patroni's `/cluster` answer and what pgsplit does about it, pure: the members parsed
//! from the JSON, and [`plan`], which compares them with the node places pgsplit has and
//! says which members to add, and which nodes Patroni now lists or tags `noloadbalance`.

use serde::Deserialize;

use crate::backend::{NodeInfo, Origin};

/// One member as `/cluster` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    /// Where its PostgreSQL listens (`postgresql.connect_address`); a member that has not
    /// said yet has none.
    pub host: Option<String>,
    pub port: Option<u16>,
    /// `leader`, `replica`, `sync_standby`, `standby_leader`... (for the logs only: the
    /// monitor's checks decide roles).
    pub role: String,
    /// `running`, `streaming`, `starting`, `stopped`...
    pub state: String,
    pub timeline: Option<u32>,
    /// Bytes behind the leader, as Patroni saw it.
    pub lag: Option<u64>,
    /// Tagged `noloadbalance`: it gets no reads.
    pub noloadbalance: bool,
}

/// Why a `/cluster` answer could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Patroni's /cluster answer is not what pgsplit reads: {0}")]
pub struct ParseError(String);

#[derive(Deserialize)]
struct ClusterJson {
    members: Vec<MemberJson>,
}

#[derive(Deserialize)]
struct MemberJson {
    name: String,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    timeline: Option<u32>,
    /// A number, or "unknown".
    #[serde(default)]
    lag: Option<serde_json::Value>,
    #[serde(default)]
    tags: serde_json::Map<String, serde_json::Value>,
}

/// The members of a `/cluster` answer (`{"members": [...], ...}`).
pub fn parse(json: &str) -> Result<Vec<Member>, ParseError> {
    let cluster: ClusterJson = serde_json::from_str(json).map_err(|e| ParseError(e.to_string()))?;
    Ok(cluster
        .members
        .into_iter()
        .map(|m| Member {
            noloadbalance: m.tags.get("noloadbalance").is_some_and(truthy),
            name: m.name,
            host: m.host.filter(|h| !h.is_empty()),
            port: m.port.filter(|p| *p > 0),
            role: m.role.unwrap_or_default(),
            state: m.state.unwrap_or_default(),
            timeline: m.timeline,
            lag: m.lag.and_then(|l| l.as_u64()),
        })
        .collect())
}

/// A tag value Patroni takes as true (it reads YAML booleans and their spellings).
fn truthy(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::String(s) => {
            matches!(s.to_ascii_lowercase().as_str(), "true" | "on" | "yes" | "1")
        }
        serde_json::Value::Number(n) => n.as_u64().is_some_and(|n| n != 0),
        _ => false,
    }
}

/// Patroni's view of one node place, as pgsplit keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    pub index: usize,
    /// `/cluster` lists it.
    pub listed: bool,
    pub noloadbalance: bool,
}

impl View {
    /// Whether a node of `origin` seen so may take reads: never when tagged
    /// `noloadbalance`; a member Patroni added, only while Patroni lists it (a configured
    /// node is never removed).
    pub fn balanced(&self, origin: Origin) -> bool {
        !self.noloadbalance && (self.listed || origin == Origin::Config)
    }
}

/// What to change after one `/cluster` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Members in no place yet, each with the empty place it takes.
    pub add: Vec<(usize, Member)>,
    /// Nodes whose view changed (listed, tagged).
    pub changed: Vec<View>,
    /// Members left out: no empty place is left.
    pub no_room: Vec<String>,
}

/// Compares `members` with the nodes pgsplit has (`nodes`, the filled places) and the
/// empty places (`free`, taken in order). A member is a node when it has the node's host
/// and port, or its name. Members without an address yet wait for a later answer.
pub fn plan(nodes: &[NodeInfo], free: &[usize], members: &[Member]) -> Plan {
    let mut plan = Plan::default();
    let matches = |n: &NodeInfo, m: &Member| {
        m.name == n.name || (m.host.as_deref() == Some(n.host.as_str()) && m.port == Some(n.port))
    };
    for node in nodes {
        let member = members.iter().find(|m| matches(node, m));
        let view = View {
            index: node.index,
            listed: member.is_some(),
            noloadbalance: member.is_some_and(|m| m.noloadbalance),
        };
        if (view.listed, view.noloadbalance) != (node.listed, node.noloadbalance) {
            plan.changed.push(view);
        }
    }
    let mut free = free.iter();
    for member in members {
        if nodes.iter().any(|n| matches(n, member))
            || member.host.is_none()
            || member.port.is_none()
        {
            continue;
        }
        match free.next() {
            Some(place) => plan.add.push((*place, member.clone())),
            None => plan.no_room.push(member.name.clone()),
        }
    }
    plan
}

#[cfg(test)]
mod tests;
