//! The client's unnamed statement and its portals: what pgsplit keeps of them so that
//! they follow the client from one server connection to the next, and so that a setting
//! a portal's statement changes is recorded when the portal runs.

use bytes::Bytes;

use super::decide::signal::{self, SignalCall};

/// A client's unnamed statement.
#[derive(Debug, Clone)]
pub(super) struct Unnamed {
    /// Unique among all clients: a server connection records whose unnamed statement it
    /// holds by this id (`ServerConn::unnamed`).
    pub id: u64,
    /// The SQL text.
    pub sql: Bytes,
    /// The client's Parse message, as it came.
    pub parse: Bytes,
    /// The SQL is a call pgsplit may answer itself (see `signals`).
    pub signal: Option<SignalCall>,
}

impl Unnamed {
    pub fn new(sql: Bytes, parse: Bytes) -> Unnamed {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Unnamed {
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            signal: signal::call(&sql),
            sql,
            parse,
        }
    }
}

/// The portals whose statements may change session settings (most have none), so the
/// change is recorded when the portal is executed, not when it is prepared.
#[derive(Debug, Default)]
pub(super) struct Portals {
    unnamed: Option<Bytes>,
    named: std::collections::HashMap<Vec<u8>, Bytes>,
}

impl Portals {
    /// Portal `portal` (empty: the unnamed one) now runs a statement with `sql`, when it
    /// may change settings (`None`: it does not).
    pub fn bind(&mut self, portal: &[u8], sql: Option<Bytes>) {
        match (portal.is_empty(), sql) {
            (true, sql) => self.unnamed = sql,
            (false, Some(sql)) => {
                self.named.insert(portal.to_vec(), sql);
            }
            (false, None) => {
                if !self.named.is_empty() {
                    self.named.remove(portal);
                }
            }
        }
    }

    /// The SQL of portal `portal`, when it may change settings.
    pub fn get(&self, portal: &[u8]) -> Option<Bytes> {
        if portal.is_empty() {
            self.unnamed.clone()
        } else {
            self.named.get(portal).cloned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_portal_bound_again_forgets_the_statement_it_ran() {
        let mut portals = Portals::default();
        let set = Bytes::from_static(b"SET x = 1");
        portals.bind(b"", Some(set.clone()));
        portals.bind(b"p", Some(set.clone()));
        assert_eq!(portals.get(b""), Some(set.clone()));
        assert_eq!(portals.get(b"p"), Some(set.clone()));
        assert_eq!(portals.get(b"q"), None);
        portals.bind(b"", None);
        portals.bind(b"p", None);
        assert_eq!(portals.get(b""), None);
        assert_eq!(portals.get(b"p"), None);
    }

    #[test]
    fn every_unnamed_statement_has_an_id_of_its_own() {
        let sql = Bytes::from_static(b"SELECT 1");
        let a = Unnamed::new(sql.clone(), sql.clone());
        let b = Unnamed::new(sql.clone(), sql);
        assert_ne!(a.id, b.id);
    }
}
