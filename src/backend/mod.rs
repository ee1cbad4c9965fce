//! The server side: connections from pgsplit to PostgreSQL nodes, and their pools.

pub mod cleartext;
pub mod connection;
pub mod nodes;
pub mod pool;
pub mod stream;
pub mod tls;

pub use connection::{BackendError, NodeAddr, ServerConn};
pub use nodes::{NodeInfo, Nodes, Origin};
pub use pool::{PoolKey, Pools, ServerPool};
pub use stream::ServerStream;
pub use tls::{NodeTls, TlsSetupError};
