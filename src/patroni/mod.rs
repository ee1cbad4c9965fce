//! Members from Patroni (`[topology] patroni_url`): every `patroni_interval`, `GET
//! /cluster` from the first Patroni REST API that answers ([`http`]), its members parsed
//! and compared with pgsplit's nodes ([`members`], pure), and the result applied: a member
//! not in `[[nodes]]` fills an empty node place (`crate::backend::nodes`) and gets its
//! pools and monitor checks, with the settings of the first `[[nodes]]` entry (TLS mode
//! and CA, cleartext policy); a member tagged `noloadbalance`, or one Patroni added that
//! `/cluster` no longer lists, gets no reads. Roles stay the monitor's: an added member
//! takes reads only once its checks find it a healthy replica on the primary's timeline.
//! While no URL answers, the last view stays.

pub mod http;
pub mod members;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::{NodeAddr, Nodes, Origin};
use crate::config::{NodeConfig, NodeRole, TopologyConfig};
use crate::monitor::Monitor;
use crate::topology::Topology;
use members::{Member, Plan, View};

/// What the poller works on.
pub struct Poller {
    /// The REST APIs, `(host, port)`, in the configured order.
    urls: Vec<(String, u16)>,
    interval: Duration,
    timeout: Duration,
    /// Settings an added member takes (the first `[[nodes]]` entry's).
    template: NodeConfig,
    nodes: Arc<Nodes>,
    topology: Arc<Topology>,
    monitor: Monitor,
}

impl Poller {
    /// A poller for `config` (its URLs validated); `template` is the first `[[nodes]]`
    /// entry.
    pub fn new(
        config: &TopologyConfig,
        template: &NodeConfig,
        nodes: Arc<Nodes>,
        topology: Arc<Topology>,
        monitor: Monitor,
    ) -> Poller {
        Poller {
            urls: config
                .patroni_url
                .iter()
                .filter_map(|u| crate::config::parse_http_url(u).ok())
                .collect(),
            interval: config.patroni_interval.as_std(),
            timeout: config.patroni_timeout.as_std(),
            template: NodeConfig {
                role: NodeRole::Auto,
                weight: 1,
                ..template.clone()
            },
            nodes,
            topology,
            monitor,
        }
    }

    /// Polls until the runtime stops.
    pub fn spawn(self) {
        tokio::spawn(self.run());
    }

    async fn run(self) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The URL that answered last is asked first.
        let mut first = 0;
        let mut failing = false;
        // Members whose trouble was logged (no place left, cannot be added), once each.
        let mut warned: BTreeSet<String> = BTreeSet::new();
        loop {
            tick.tick().await;
            match self.fetch(&mut first).await {
                Ok(members) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!("Patroni's /cluster answers again");
                    }
                    let free: Vec<usize> = (0..self.nodes.len())
                        .filter(|i| self.nodes.get(*i).is_none())
                        .collect();
                    let plan = members::plan(&self.nodes.infos(), &free, &members);
                    self.apply(plan, &mut warned);
                }
                Err(e) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(error = %e, "cannot read the members from Patroni; keeping the last ones read");
                    }
                }
            }
        }
    }

    /// `/cluster`'s members from the first URL that answers, starting at `first`.
    async fn fetch(&self, first: &mut usize) -> Result<Vec<Member>, String> {
        let mut errors = Vec::new();
        for k in 0..self.urls.len() {
            let i = (*first + k) % self.urls.len();
            let (host, port) = &self.urls[i];
            let answer = http::get(host, *port, "/cluster", self.timeout)
                .await
                .map_err(|e| e.to_string())
                .and_then(|body| members::parse(&body).map_err(|e| e.to_string()));
            match answer {
                Ok(members) => {
                    *first = i;
                    return Ok(members);
                }
                Err(e) => errors.push(format!("http://{host}:{port}: {e}")),
            }
        }
        Err(errors.join("; "))
    }

    fn apply(&self, plan: Plan, warned: &mut BTreeSet<String>) {
        for (place, member) in plan.add {
            if let Err(e) = self.add(place, &member) {
                if warned.insert(member.name.clone()) {
                    tracing::error!(member = %member.name, error = %e, "cannot add the Patroni member");
                }
            }
        }
        for view in plan.changed {
            let Some(info) = self
                .nodes
                .infos()
                .into_iter()
                .find(|n| n.index == view.index)
            else {
                continue;
            };
            self.set_view(view, info.origin);
            let reads = view.balanced(info.origin);
            if view.noloadbalance != info.noloadbalance {
                tracing::info!(node = %info.name, noloadbalance = view.noloadbalance, reads, "Patroni's noloadbalance tag changed");
            }
            if view.listed != info.listed {
                if view.listed {
                    tracing::info!(node = %info.name, reads, "listed in Patroni's /cluster again");
                } else {
                    tracing::warn!(node = %info.name, origin = info.origin.as_str(), reads, "no longer listed in Patroni's /cluster");
                }
            }
        }
        for name in plan.no_room {
            if warned.insert(name.clone()) {
                tracing::warn!(member = %name, max = self.nodes.len(), "a Patroni member is not served: every place for added members is taken (topology.patroni_max_added)");
            }
        }
    }

    /// Puts `view` in the node places and the router's table.
    fn set_view(&self, view: View, origin: Origin) {
        self.nodes
            .set_patroni(view.index, view.listed, view.noloadbalance);
        let balanced = view.balanced(origin);
        self.topology.update(view.index, |r| r.balanced = balanced);
    }

    /// Fills `place` with `member` and starts its checks.
    fn add(&self, place: usize, member: &Member) -> Result<(), crate::backend::TlsSetupError> {
        let (Some(host), Some(port)) = (member.host.clone(), member.port) else {
            return Ok(());
        };
        let config = NodeConfig {
            name: member.name.clone(),
            host,
            port,
            ..self.template.clone()
        };
        let addr = Arc::new(NodeAddr::from_config(&config)?);
        if !self.nodes.fill(place, addr.clone()) {
            return Ok(());
        }
        self.set_view(
            View {
                index: place,
                listed: true,
                noloadbalance: member.noloadbalance,
            },
            Origin::Patroni,
        );
        tracing::info!(node = %member.name, host = %config.host, port, patroni_role = %member.role, patroni_state = %member.state, noloadbalance = member.noloadbalance, "a Patroni member joins: checked from now on, it takes reads once its checks find it a healthy replica");
        self.monitor.watch(place, addr);
        Ok(())
    }
}
