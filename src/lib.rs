//! pgsplit: a PostgreSQL wire-protocol proxy that pools server connections and routes
//! each transaction to the primary or a replica.

pub mod admin;
pub mod auth;
pub mod backend;
pub mod cancel;
pub mod catalog;
pub mod causal;
pub mod classify;
pub mod clients;
pub mod config;
pub mod control;
pub mod frontend;
pub mod http;
pub mod lag;
pub mod limits;
pub mod link;
pub mod lock;
pub mod logfmt;
pub mod monitor;
pub mod net;
pub mod prepared;
pub mod prometheus;
pub mod proxy;
pub mod roles;
pub mod router;
pub mod server;
pub mod tls;
pub mod topology;
pub mod wire;
