//! Named prepared statements across pooled server connections.
//!
//! A client's statement names mean nothing to the server it happens to get, so pgsplit
//! keeps each client's statements by name and prepares them on servers under a name
//! derived from the statement itself (`pgsplit_<hash of query and parameter types>`).
//! Identical statements from different clients share one server-side statement. Each
//! server connection remembers which of those names it has, up to a bound, forgetting
//! the least recently used.
//!
//! A server-side statement keeps what its Parse resolved (parameter types, the tables
//! and types it names). After DDL (`CREATE`, `ALTER`, `DROP` of anything), the same text
//! may mean something else, and an old statement may name a type that is gone ("cache
//! lookup failed for type"). So the name also carries the *catalog epoch*, which every
//! DDL a server completes moves on: a client's Parse after DDL gets a statement of its
//! own, prepared afresh, as it would from PostgreSQL.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::wire::message::{parse_message, ParseMsg};

/// A statement a client prepared, as pgsplit will prepare it on servers.
#[derive(Debug)]
pub struct PreparedStatement {
    /// The name used on servers.
    pub server_name: Arc<str>,
    /// The Parse message that creates it on a server, under `server_name`.
    pub parse: Bytes,
    /// The SQL text, as the client sent it.
    pub query: Bytes,
}

/// The catalog epoch: how many DDL statements servers have completed (see the module doc).
static CATALOG_EPOCH: AtomicU64 = AtomicU64::new(0);

/// A server completed a statement with this command tag: DDL moves the catalog epoch on.
pub fn command_completed(tag: &[u8]) {
    if changes_catalog(tag) {
        CATALOG_EPOCH.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether a command tag is DDL's (`CREATE TABLE`, `ALTER TYPE`, `DROP FUNCTION`, ...).
pub fn changes_catalog(tag: &[u8]) -> bool {
    [&b"CREATE "[..], b"ALTER ", b"DROP "]
        .iter()
        .any(|p| tag.starts_with(p))
}

impl PreparedStatement {
    /// Builds the server-side form of a client's Parse.
    pub fn from_parse(msg: &ParseMsg<'_>) -> PreparedStatement {
        Self::in_epoch(msg, CATALOG_EPOCH.load(Ordering::Relaxed))
    }

    /// The server-side form of a client's Parse made in catalog epoch `epoch`.
    fn in_epoch(msg: &ParseMsg<'_>, epoch: u64) -> PreparedStatement {
        let mut hasher = Sha256::new();
        hasher.update(msg.query);
        hasher.update([0u8]);
        hasher.update(msg.param_types);
        hasher.update(epoch.to_be_bytes());
        let digest = hasher.finalize();
        let mut name = String::with_capacity(9 + 32);
        name.push_str("pgsplit_");
        for b in &digest[..16] {
            name.push_str(&format!("{b:02x}"));
        }
        let parse = parse_message(name.as_bytes(), msg.query, msg.param_types);
        PreparedStatement {
            server_name: name.into(),
            parse,
            query: Bytes::copy_from_slice(msg.query),
        }
    }
}

/// One client's named statements, by the names the client gave them.
#[derive(Debug, Default)]
pub struct ClientStatements {
    by_name: HashMap<Vec<u8>, Arc<PreparedStatement>>,
}

impl ClientStatements {
    pub fn insert(&mut self, name: &[u8], stmt: Arc<PreparedStatement>) {
        self.by_name.insert(name.to_vec(), stmt);
    }

    pub fn get(&self, name: &[u8]) -> Option<&Arc<PreparedStatement>> {
        self.by_name.get(name)
    }

    pub fn remove(&mut self, name: &[u8]) -> Option<Arc<PreparedStatement>> {
        self.by_name.remove(name)
    }

    pub fn clear(&mut self) {
        self.by_name.clear();
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// The server-side statements one server connection has, bounded, least recently used
/// first out.
#[derive(Debug)]
pub struct ServerStatements {
    max: usize,
    tick: u64,
    last_used: HashMap<Arc<str>, u64>,
}

impl ServerStatements {
    pub fn new(max: usize) -> ServerStatements {
        ServerStatements {
            max: max.max(1),
            tick: 0,
            last_used: HashMap::new(),
        }
    }

    /// Whether the server has `name`; marks it used.
    pub fn touch(&mut self, name: &Arc<str>) -> bool {
        self.tick += 1;
        match self.last_used.get_mut(name) {
            Some(t) => {
                *t = self.tick;
                true
            }
            None => false,
        }
    }

    /// Records that the server now has `name`. Returns the statement to close on the
    /// server when the bound is exceeded.
    pub fn insert(&mut self, name: Arc<str>) -> Option<Arc<str>> {
        self.tick += 1;
        self.last_used.insert(name.clone(), self.tick);
        if self.last_used.len() <= self.max {
            return None;
        }
        let oldest = self
            .last_used
            .iter()
            .filter(|(n, _)| **n != name)
            .min_by_key(|(_, t)| **t)
            .map(|(n, _)| n.clone())?;
        self.last_used.remove(&oldest);
        Some(oldest)
    }

    /// Forgets `name` (its Parse failed, or it was closed).
    pub fn remove(&mut self, name: &str) {
        self.last_used.remove(name);
    }

    /// Forgets everything (after DISCARD ALL).
    pub fn clear(&mut self) {
        self.last_used.clear();
    }

    pub fn len(&self) -> usize {
        self.last_used.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last_used.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::message::read_parse;

    fn stmt(query: &[u8]) -> PreparedStatement {
        PreparedStatement::in_epoch(
            &ParseMsg {
                name: b"P_1",
                query,
                param_types: &[0, 0],
            },
            0,
        )
    }

    #[test]
    fn same_statement_gets_same_server_name() {
        let a = stmt(b"select 1");
        let b = stmt(b"select 1");
        let c = stmt(b"select 2");
        assert_eq!(a.server_name, b.server_name);
        assert_ne!(a.server_name, c.server_name);
        let parsed = read_parse(&a.parse[5..]).unwrap();
        assert_eq!(parsed.name, a.server_name.as_bytes());
        assert_eq!(parsed.query, b"select 1");
    }

    #[test]
    fn ddl_gives_later_parses_statements_of_their_own() {
        let msg = ParseMsg {
            name: b"",
            query: b"insert into t values ($1::e[])",
            param_types: &[0, 0],
        };
        let before = PreparedStatement::in_epoch(&msg, 7);
        assert_eq!(
            before.server_name,
            PreparedStatement::in_epoch(&msg, 7).server_name
        );
        assert_ne!(
            before.server_name,
            PreparedStatement::in_epoch(&msg, 8).server_name
        );
        for tag in [
            &b"CREATE TYPE"[..],
            b"DROP TABLE",
            b"ALTER TABLE",
            b"CREATE INDEX",
        ] {
            assert!(changes_catalog(tag), "{tag:?}");
        }
        for tag in [
            &b"INSERT 0 1"[..],
            b"SELECT 1",
            b"ROLLBACK",
            b"CREATED",
            b"DROPPED",
        ] {
            assert!(!changes_catalog(tag), "{tag:?}");
        }
        let epoch = CATALOG_EPOCH.load(Ordering::Relaxed);
        command_completed(b"DROP TYPE");
        assert!(CATALOG_EPOCH.load(Ordering::Relaxed) > epoch);
    }

    #[test]
    fn parameter_types_are_part_of_the_identity() {
        let a = PreparedStatement::in_epoch(
            &ParseMsg {
                name: b"",
                query: b"select $1",
                param_types: &[0, 1, 0, 0, 0, 23],
            },
            0,
        );
        let b = PreparedStatement::in_epoch(
            &ParseMsg {
                name: b"",
                query: b"select $1",
                param_types: &[0, 1, 0, 0, 0, 25],
            },
            0,
        );
        assert_ne!(a.server_name, b.server_name);
    }

    #[test]
    fn server_cache_evicts_least_recently_used() {
        let mut cache = ServerStatements::new(2);
        let (a, b, c): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "b".into(), "c".into());
        assert_eq!(cache.insert(a.clone()), None);
        assert_eq!(cache.insert(b.clone()), None);
        assert!(cache.touch(&a));
        assert_eq!(cache.insert(c.clone()), Some(b.clone()));
        assert!(cache.touch(&a) && cache.touch(&c) && !cache.touch(&b));
        cache.remove("a");
        assert_eq!(cache.len(), 1);
        cache.clear();
        assert!(cache.is_empty());
    }
}
