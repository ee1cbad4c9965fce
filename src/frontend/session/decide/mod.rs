//! The session's decisions, without IO: when a server connection goes back to its pool,
//! which node serves a statement, whether a pipelined message waits, what a statement does
//! to the session (binds it, writes, ends a transaction), when the read-your-writes
//! position is read, when a wait for a node ends, and what pgsplit answers itself. Each
//! rule is a function over plain data (time passed in), so it is unit tested here; the
//! session (`super`) reads sockets, keeps the state and calls these.

pub mod effects;
pub mod local;
pub mod pipeline;
pub mod position;
pub mod release;
pub mod route;
pub mod signal;
pub mod waits;
