//! pgsplit: a PostgreSQL wire-protocol proxy that pools server connections and routes
//! each transaction to the primary or a replica.
//!
//! # Where each concern lives
//!
//! Read [`server`] first: it accepts a connection and hands it to a login, then to a
//! session; everything else is called from there. Modules marked *pure* make decisions over
//! plain data (and an injected clock) and do no IO; they have unit tests next to them.
//!
//! ```text
//! server.rs        the listener, the client limit, each connection's task: cancel request
//!                  or login, then a session (or the admin console)
//! proxy.rs         the state every client shares: config, pools, routing, registries, lag
//!                  board, metrics, client TLS; RELOAD and live SET
//! frontend/        the client side
//!   login/         a client's way in: the handshake (startup packet, TLS and GSS
//!                  negotiation, authentication), then its pools, first server, cancel key
//!                  and session context
//!   session/       one client's loop: read, dispatch, write; statements (forwarded, renamed
//!                  or answered by pgsplit), checkout and settings sync, relay of the
//!                  server's replies, read-your-writes positions
//!     decide/      the session's decisions, pure: release, route, pipelined messages,
//!                  what a statement binds or writes, positions, waits, local answers
//!   pending.rs     replies a server still owes, and pgsplit's own answers, in order
//!   settings.rs    SET / RESET and startup parameters, and the SQL that replays them
//!   retry.rs       a read a replica refused as a write runs again on the primary, once
//!   stream.rs      a client's connection, clear or TLS
//! backend/         the server side
//!   connection.rs  one server connection: connect, authenticate, its state
//!   pool.rs        deadpool pools per (node, database, user), fences, SHOW POOLS rows
//!   nodes.rs       the node places: `[[nodes]]`, then room for members Patroni adds
//!   tls.rs, cleartext.rs, stream.rs   TLS to the nodes; no password in clear
//! classify/        SQL text -> class (read, write, begin, session-bound, ...), pure: one
//!                  lexer, a sharded cache, keyword rules, a sqlparser walk for the rest,
//!                  the function catalog
//! router.rs        routing policy, pure: (client state, class, time) -> node and reason
//! topology.rs      the replicas as the router sees them: selection, cooldown; the write target
//! roles.rs         roles discovered, pure: recovery state and timeline -> writer, readers
//! lag/             the lag guard, pure: primary WAL timeline, health state machine, history,
//!                  the board of what the monitor last saw
//! monitor.rs       one check task per node, feeding roles, lag state, board and topology
//! patroni/         members from Patroni's REST API (`[topology]`): a small HTTP GET, the
//!                  `/cluster` answer and what changed (pure), nodes added at run time
//! causal/          read-your-writes by LSN: positions, signed causal tokens, the WAL flusher
//! control.rs       pgsplit's own queries to a node (monitor, catalog, flusher)
//! catalog.rs       keeps the classifier's function catalog fresh (IO shell)
//! clients/         the one client registry: connections counted, cancel keys -> the
//!                  server connection serving each client, SHOW CLIENTS lines
//! prepared.rs      named prepared statements across pooled connections
//! admin/           the admin console (database pgsplit): commands and tables, pure; session
//! prometheus.rs    what /metrics exports, from a snapshot of the proxy
//! http.rs          the /metrics, /healthz and /status endpoint
//! status_page.rs   the /status page: nodes, lag charts, pools, clients, pure
//! config/          config.toml: serde structs, defaults, validation, live keys, secrets
//! auth/            client authentication, pure: SCRAM-SHA-256(-PLUS), md5
//! wire/            the wire protocol, pure: framing, startup packets, messages, errors
//! net.rs           read one whole message from a stream
//! link.rs          a TCP connection in clear or inside TLS, behind one type
//! tls.rs           TLS for client connections ([tls])
//! limits.rs        limits before login, pure: accept backoff, log throttle
//! lock.rs          locks taken even when poisoned
//! logfmt.rs        the log field formatter that escapes control characters
//! ```
//!
//! Outside `src/`: `tests/` (integration tests against the dev cluster; `common/` is the
//! harness), `dev/` (the dev cluster, demo and test command), `bench/` (the benchmark
//! scripts, their results in `bench/results/`; see `docs/benchmarks.md`), `benches/`
//! (criterion micro-benchmarks), `examples/` (the bulk-import probe, a web application
//! that reads its users' writes), `.ci/run` (CI).

pub mod admin;
pub mod auth;
pub mod backend;
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
pub mod patroni;
pub mod prepared;
pub mod prometheus;
pub mod proxy;
pub mod roles;
pub mod router;
pub mod server;
pub mod status_page;
pub mod tls;
pub mod topology;
pub mod wire;
