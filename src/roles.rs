//! Which node takes writes, and which may take reads, decided from what the monitor's
//! checks last saw of every node (`pg_is_in_recovery()` and the node's timeline). Roles
//! are discovered, not configured: `role` in config is only what is expected at start.
//! Pure code: the monitor passes its observations and `now`; tests pass made-up ones.
//!
//! Rules ([`decide`]):
//!
//! - A node is **up** while its last successful check is at most `stale_after` old.
//! - The **write target** is the up node out of recovery on the highest timeline, if it
//!   is the only one there and that timeline is not below the highest any node was last
//!   seen on (a node on a lower one is an old primary that came back: its data diverged).
//! - Two or more up nodes out of recovery on the same highest timeline, or on timelines
//!   not known, are a **split brain**: no write target, writes are refused with an error
//!   naming them, until one leaves.
//! - With no up node out of recovery, the previous write target stays (it may be
//!   restarting; writes wait for it, bounded by `pool.primary_wait_timeout`) unless it
//!   was last seen in recovery or on a timeline that another node has since gone past.
//! - A node out of recovery that is not the write target gets no reads either (an old
//!   primary, or one side of a split brain); nor does a replica on a timeline below the
//!   write target's (it still follows the old primary). Other replicas take reads, as
//!   far as their lag allows (see `crate::lag`).

use std::fmt;
use std::time::{Duration, Instant};

/// What one successful check read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub in_recovery: bool,
    /// The timeline the node writes on (out of recovery) or receives or replayed (in
    /// recovery); `None` when it could not be read.
    pub timeline: Option<u32>,
}

/// What the checks of one node have shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeSeen {
    /// The last successful check and when it ran.
    pub last_ok: Option<(Seen, Instant)>,
    /// Checks failed since the last successful one.
    pub failures: u32,
}

impl NodeSeen {
    /// Records a successful check that read `seen` at `now`. A replica's timeline does not
    /// go back while it stays in recovery: when its WAL receiver stops (the primary went
    /// away, as in a switchover), the check falls back to the timeline of its minimum
    /// recovery point or last restartpoint, which can trail the one it received, and would
    /// make it look like a replica of an old timeline. So, between two successful checks in
    /// recovery with no failed one between them, the higher timeline counts. (A failed
    /// check forgets it: the node may come back rebuilt.)
    pub fn checked(&mut self, mut seen: Seen, now: Instant) {
        if let Some((before, _)) = self.last_ok.filter(|_| self.failures == 0) {
            if before.in_recovery && seen.in_recovery {
                seen.timeline = seen.timeline.max(before.timeline);
            }
        }
        self.last_ok = Some((seen, now));
        self.failures = 0;
    }
}

/// Who takes writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Writer {
    /// This node (index in the configured node list).
    Node(usize),
    /// No node is known to take writes: writes wait for one, then fail.
    None,
    /// Several nodes are out of recovery on the same timeline (or on unknown ones): writes
    /// are refused until one leaves.
    SplitBrain(Vec<usize>),
}

/// A node's discovered role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Takes writes.
    Primary,
    /// In recovery on the primary's timeline: may take reads.
    Replica,
    /// In recovery on a timeline the primary has left: no reads.
    OldTimeline,
    /// Out of recovery on a timeline the primary has left (a returned old primary): no
    /// reads, no writes.
    Diverged,
    /// Out of recovery beside another node on the same timeline: no reads, no writes.
    SplitBrain,
    /// Out of recovery, while the write target cannot be told (no node on the highest
    /// timeline is up): no reads, no writes.
    Unconfirmed,
    /// No successful check lately.
    Unreachable,
    /// Not checked successfully yet.
    Unknown,
}

impl Role {
    /// Lower-case name for logs and `SHOW NODES`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
            Role::OldTimeline => "old_timeline",
            Role::Diverged => "diverged",
            Role::SplitBrain => "split_brain",
            Role::Unconfirmed => "unconfirmed",
            Role::Unreachable => "unreachable",
            Role::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One node's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub role: Role,
    /// The timeline last seen; `None` when never read.
    pub timeline: Option<u32>,
    /// Whether the roles allow reads on it (its lag is judged apart).
    pub reads: bool,
    /// Why, for `SHOW NODES`.
    pub why: String,
}

/// Every node's verdict and the write target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles {
    pub writer: Writer,
    pub nodes: Vec<Verdict>,
}

impl Roles {
    /// The roles before any check: `expected` is the node configured as the primary.
    pub fn expected(nodes: usize, expected: Option<usize>) -> Roles {
        Roles {
            writer: expected.map_or(Writer::None, Writer::Node),
            nodes: (0..nodes)
                .map(|_| Verdict {
                    role: Role::Unknown,
                    timeline: None,
                    reads: false,
                    why: "not checked yet".to_owned(),
                })
                .collect(),
        }
    }

    /// The write target's index, if there is one.
    pub fn writer_node(&self) -> Option<usize> {
        match self.writer {
            Writer::Node(n) => Some(n),
            _ => None,
        }
    }
}

/// Decides the roles from what the checks saw (`nodes`, by node index), the write target
/// so far (`previous`, or the configured primary before the first decision) and the time.
/// `names` are the node names, for the reasons.
pub fn decide(
    nodes: &[NodeSeen],
    names: &[String],
    previous: &Writer,
    now: Instant,
    stale_after: Duration,
) -> Roles {
    let up = |seen: &NodeSeen| {
        seen.last_ok
            .filter(|(_, at)| now.saturating_duration_since(*at) <= stale_after)
            .map(|(s, _)| s)
    };
    let name = |i: usize| names.get(i).map_or("?", String::as_str);
    // The highest timeline any node was last seen on, up or not.
    let highest = nodes
        .iter()
        .filter_map(|n| n.last_ok.and_then(|(s, _)| s.timeline))
        .max();
    let out: Vec<(usize, Option<u32>)> = nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| up(n).filter(|s| !s.in_recovery).map(|s| (i, s.timeline)))
        .collect();
    // The previous write target, still the one while it cannot be seen: it was last seen
    // out of recovery on the highest timeline (or before its first check).
    let kept = || match previous {
        Writer::Node(p) => {
            let last = nodes.get(*p).and_then(|n| n.last_ok).map(|(s, _)| s);
            let superseded = last.is_some_and(|s| {
                s.in_recovery || matches!((s.timeline, highest), (Some(t), Some(h)) if t < h)
            });
            let seen_up = nodes.get(*p).and_then(up).is_some();
            (!superseded && !seen_up && *p < nodes.len()).then_some(*p)
        }
        _ => None,
    };
    let top = out.iter().map(|(_, t)| *t).max().flatten();
    let unknown = out.iter().any(|(_, t)| t.is_none());
    let writer = if out.is_empty() {
        kept().map_or(Writer::None, Writer::Node)
    } else if out.len() > 1 && unknown {
        Writer::SplitBrain(out.iter().map(|(i, _)| *i).collect())
    } else {
        let at_top: Vec<usize> = out
            .iter()
            .filter(|(_, t)| *t == top)
            .map(|(i, _)| *i)
            .collect();
        let below_highest = matches!((top, highest), (Some(t), Some(h)) if t < h);
        if below_highest {
            // Every node out of recovery is on a timeline another node has gone past.
            kept().map_or(Writer::None, Writer::Node)
        } else if at_top.len() == 1 {
            Writer::Node(at_top[0])
        } else {
            Writer::SplitBrain(at_top)
        }
    };
    let writer_timeline = match writer {
        Writer::Node(w) => nodes
            .get(w)
            .and_then(|n| n.last_ok)
            .and_then(|(s, _)| s.timeline)
            .or(highest),
        _ => highest,
    };
    let verdicts = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let timeline = n.last_ok.and_then(|(s, _)| s.timeline);
            let tl = |t: Option<u32>| t.map_or("unknown".to_owned(), |t| t.to_string());
            let verdict = |role: Role, reads: bool, why: String| Verdict {
                role,
                timeline,
                reads,
                why,
            };
            if writer == Writer::Node(i) {
                let why = match up(n) {
                    Some(_) => format!("out of recovery on timeline {}: takes writes", tl(timeline)),
                    None if n.last_ok.is_none() => {
                        "expected primary, not checked yet: writes wait for it".to_owned()
                    }
                    None => format!(
                        "unreachable ({} failed checks); last seen out of recovery on timeline {}: writes wait for it",
                        n.failures,
                        tl(timeline)
                    ),
                };
                return verdict(Role::Primary, false, why);
            }
            let Some(seen) = up(n) else {
                return match n.last_ok {
                    None => verdict(Role::Unknown, false, "not checked successfully yet".into()),
                    Some(_) => verdict(
                        Role::Unreachable,
                        false,
                        format!("{} failed checks", n.failures),
                    ),
                };
            };
            let behind = matches!((seen.timeline, writer_timeline), (Some(t), Some(w)) if t < w);
            let primary = match writer {
                Writer::Node(w) => format!("{} on timeline {}", name(w), tl(writer_timeline)),
                _ => format!("timeline {}", tl(writer_timeline)),
            };
            match (seen.in_recovery, &writer) {
                (true, _) if behind => verdict(
                    Role::OldTimeline,
                    false,
                    format!(
                        "replica on timeline {}, which the primary ({primary}) has left",
                        tl(seen.timeline)
                    ),
                ),
                (true, _) => verdict(
                    Role::Replica,
                    true,
                    format!("in recovery on timeline {}", tl(seen.timeline)),
                ),
                (false, Writer::SplitBrain(rivals)) if rivals.contains(&i) => {
                    let others: Vec<&str> = rivals
                        .iter()
                        .filter(|r| **r != i)
                        .map(|r| name(*r))
                        .collect();
                    verdict(
                        Role::SplitBrain,
                        false,
                        format!(
                            "out of recovery on timeline {}, as {} is: writes refused until one leaves",
                            tl(seen.timeline),
                            others.join(", ")
                        ),
                    )
                }
                (false, _) if behind => verdict(
                    Role::Diverged,
                    false,
                    format!(
                        "out of recovery on timeline {}, which the primary ({primary}) has left: an old primary, no reads or writes until it rejoins as a replica",
                        tl(seen.timeline)
                    ),
                ),
                (false, _) => verdict(
                    Role::Unconfirmed,
                    false,
                    format!(
                        "out of recovery on timeline {}, but a node was seen on timeline {}: no reads or writes",
                        tl(seen.timeline),
                        tl(highest)
                    ),
                ),
            }
        })
        .collect();
    Roles {
        writer,
        nodes: verdicts,
    }
}

/// Why the write target changed, for the log line of a role change.
pub fn change_reason(roles: &Roles, names: &[String]) -> String {
    let name = |i: usize| names.get(i).map_or("?", String::as_str);
    match &roles.writer {
        Writer::Node(w) => format!("{}: {}", name(*w), roles.nodes[*w].why),
        Writer::None => "no node is out of recovery on the highest timeline".to_owned(),
        Writer::SplitBrain(rivals) => {
            let list: Vec<String> = rivals
                .iter()
                .map(|r| {
                    let t = roles.nodes[*r]
                        .timeline
                        .map_or("unknown".to_owned(), |t| t.to_string());
                    format!("{} (timeline {t})", name(*r))
                })
                .collect();
            format!(
                "split brain: {} are all out of recovery",
                list.join(" and ")
            )
        }
    }
}

/// Which node's server connections must not be reused now that `new` takes writes: the
/// node that last took them (`last_writer`), once another node or a split brain replaces
/// it. A primary that only stopped answering for a while (no writer meanwhile) is not
/// fenced: back as the primary, its connections are as good as before, prepared
/// statements included.
pub fn to_fence(last_writer: Option<usize>, new: &Writer) -> Option<usize> {
    match (last_writer, new) {
        (Some(old), Writer::Node(n)) if *n != old => Some(old),
        (Some(old), Writer::SplitBrain(_)) => Some(old),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
