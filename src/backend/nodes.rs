//! The nodes pgsplit serves, by index: the `[[nodes]]` entries first, then places reserved
//! at start for members that Patroni's REST API adds while pgsplit runs (`crate::patroni`).
//! Every table indexed by node (pools, fences, the topology, the lag board, the roles) is
//! sized for all the places at start, so adding a member grows none of them: a place is
//! filled once with the member's address (a lock-free read from then on), and an empty
//! place is never routed to (it is never checked, so it never takes reads or writes).
//! Patroni's tags and whether the member is still listed are kept here too, for the admin
//! console.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use super::connection::NodeAddr;

/// Where a node came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A `[[nodes]]` entry.
    Config,
    /// A member read from Patroni's `/cluster`, not in `[[nodes]]`.
    Patroni,
}

impl Origin {
    /// As `SHOW NODES` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Config => "config",
            Origin::Patroni => "patroni",
        }
    }
}

/// One place: a node, or room for one.
#[derive(Debug)]
struct Place {
    addr: OnceLock<Arc<NodeAddr>>,
    origin: Origin,
    /// Patroni tags the member `noloadbalance`: no reads for it.
    noloadbalance: AtomicBool,
    /// Patroni's `/cluster` lists it (a configured node not listed stays).
    listed: AtomicBool,
}

/// What is known of one filled place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub index: usize,
    pub name: String,
    pub host: String,
    pub port: u16,
    pub origin: Origin,
    pub noloadbalance: bool,
    pub listed: bool,
}

/// Every node place.
#[derive(Debug)]
pub struct Nodes {
    places: Vec<Place>,
}

impl Nodes {
    /// The configured nodes, then `added` empty places.
    pub fn new(configured: Vec<Arc<NodeAddr>>, added: usize) -> Nodes {
        let place = |addr: Option<Arc<NodeAddr>>, origin| {
            let cell = OnceLock::new();
            if let Some(addr) = addr {
                let _ = cell.set(addr);
            }
            Place {
                addr: cell,
                origin,
                noloadbalance: AtomicBool::new(false),
                listed: AtomicBool::new(origin == Origin::Config),
            }
        };
        let mut places: Vec<Place> = configured
            .into_iter()
            .map(|a| place(Some(a), Origin::Config))
            .collect();
        places.extend((0..added).map(|_| place(None, Origin::Patroni)));
        Nodes { places }
    }

    /// How many places there are (filled or not): the size of every table by node.
    pub fn len(&self) -> usize {
        self.places.len()
    }

    pub fn is_empty(&self) -> bool {
        self.places.is_empty()
    }

    /// The node in place `index`, if filled.
    pub fn get(&self, index: usize) -> Option<&Arc<NodeAddr>> {
        self.places.get(index)?.addr.get()
    }

    /// The filled places, by index.
    pub fn filled(&self) -> Vec<(usize, Arc<NodeAddr>)> {
        (0..self.len())
            .filter_map(|i| self.get(i).map(|a| (i, a.clone())))
            .collect()
    }

    /// Every place's node name by index; empty for an empty place.
    pub fn names(&self) -> Vec<String> {
        (0..self.len())
            .map(|i| self.get(i).map_or_else(String::new, |a| a.name.clone()))
            .collect()
    }

    /// What is known of every filled place.
    pub fn infos(&self) -> Vec<NodeInfo> {
        self.places
            .iter()
            .enumerate()
            .filter_map(|(index, p)| {
                let addr = p.addr.get()?;
                Some(NodeInfo {
                    index,
                    name: addr.name.clone(),
                    host: addr.host.clone(),
                    port: addr.port,
                    origin: p.origin,
                    noloadbalance: p.noloadbalance.load(Ordering::Relaxed),
                    listed: p.listed.load(Ordering::Relaxed),
                })
            })
            .collect()
    }

    /// The first empty place, if any.
    pub fn free(&self) -> Option<usize> {
        self.places.iter().position(|p| p.addr.get().is_none())
    }

    /// Puts `addr` in the empty place `index`; false when it is filled already (or there is
    /// no such place).
    pub fn fill(&self, index: usize, addr: Arc<NodeAddr>) -> bool {
        self.places
            .get(index)
            .is_some_and(|p| p.addr.set(addr).is_ok())
    }

    /// Patroni's view of place `index`: listed in `/cluster`, tagged `noloadbalance`.
    pub fn set_patroni(&self, index: usize, listed: bool, noloadbalance: bool) {
        if let Some(p) = self.places.get(index) {
            p.listed.store(listed, Ordering::Relaxed);
            p.noloadbalance.store(noloadbalance, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::NodeTls;

    fn addr(name: &str, port: u16) -> Arc<NodeAddr> {
        Arc::new(NodeAddr {
            name: name.into(),
            host: "127.0.0.1".into(),
            port,
            tls: NodeTls::disabled(),
        })
    }

    #[test]
    fn places_are_filled_once_and_keep_their_index() {
        let nodes = Nodes::new(vec![addr("a", 1), addr("b", 2)], 2);
        assert_eq!(nodes.len(), 4);
        assert_eq!(nodes.names(), ["a", "b", "", ""]);
        assert_eq!(nodes.free(), Some(2));
        assert!(nodes.fill(2, addr("c", 3)));
        assert!(!nodes.fill(2, addr("d", 4)));
        assert!(!nodes.fill(9, addr("d", 4)));
        assert_eq!(nodes.free(), Some(3));
        assert_eq!(nodes.get(2).map(|a| a.port), Some(3));
        let infos = nodes.infos();
        assert_eq!(infos.len(), 3);
        assert_eq!(infos[2].origin, Origin::Patroni);
        assert!(infos[0].listed && !infos[0].noloadbalance);
        nodes.set_patroni(2, true, true);
        assert!(nodes.infos()[2].noloadbalance);
    }
}
