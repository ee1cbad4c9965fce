//! The server side: connections from pgsplit to PostgreSQL nodes, and their pools.

pub mod connection;
pub mod pool;

pub use connection::{BackendError, NodeAddr, ServerConn};
pub use pool::{PoolKey, Pools, ServerPool};
