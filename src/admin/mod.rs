//! The admin console: database `pgsplit` on the proxy's own port, for the users in
//! `proxy.admin_users`. It speaks the simple query protocol (psql, `psql -c`) and answers
//! from pgsplit's own state; no server is involved.
//!
//! - `command.rs` parses what the operator typed;
//! - `show.rs` builds each table from snapshots of the state;
//! - this file runs the session: gathers the snapshots, applies `SET` and `RELOAD`, and
//!   writes the results in the wire format.

pub mod command;
pub mod show;

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use crate::config::SetError;
use crate::frontend::stream::ClientStream;
use crate::net::{read_frame, ReadError};
use crate::proxy::{Proxy, ReloadError};
use crate::router::Reason;
use crate::wire::error::code;
use crate::wire::message::{self as msg, read_query, TxStatus};
use crate::wire::PgError;
use command::{Command, Listing};
use show::Table;

/// Admin queries are short.
const QUERY_LIMIT: usize = 64 * 1024;

/// The ParameterStatus values an admin client gets at login (psql wants server_version).
const PARAMETERS: [(&str, &str); 6] = [
    ("server_version", "15.0 (pgsplit admin console)"),
    ("server_encoding", "UTF8"),
    ("client_encoding", "UTF8"),
    ("DateStyle", "ISO, MDY"),
    ("integer_datetimes", "on"),
    ("standard_conforming_strings", "on"),
];

/// Finishes the login of an admin client (already authenticated) and serves it until it
/// leaves.
pub async fn serve(proxy: Arc<Proxy>, mut stream: ClientStream, user: String) {
    let mut out = BytesMut::new();
    for (name, value) in PARAMETERS {
        msg::parameter_status(name, value, &mut out);
    }
    // No server behind the console: a key that matches nothing, so cancels are ignored.
    msg::backend_key_data(0, 0, &mut out);
    msg::ready_for_query(TxStatus::Idle, &mut out);
    if stream.send(&out).await.is_err() {
        return;
    }
    tracing::info!(%user, "admin console login");
    let mut inbox = BytesMut::with_capacity(4096);
    // After an extended-protocol message: ignore the rest of the batch until Sync.
    let mut skipping = false;
    loop {
        let frame = match read_frame(&mut stream, &mut inbox, QUERY_LIMIT).await {
            Ok(frame) => frame,
            Err(ReadError::Frame(e)) => {
                let e = PgError::fatal(code::PROTOCOL_VIOLATION, e.to_string());
                let _ = stream.send(&e.to_bytes()).await;
                return;
            }
            Err(_) => return,
        };
        out.clear();
        match frame.tag {
            b'Q' => {
                let query = read_query(frame.body()).unwrap_or_default();
                run_query(&proxy, &String::from_utf8_lossy(query), &user, &mut out);
                msg::ready_for_query(TxStatus::Idle, &mut out);
            }
            b'X' => return,
            b'S' => {
                skipping = false;
                msg::ready_for_query(TxStatus::Idle, &mut out);
            }
            b'H' => {}
            _ if skipping => {}
            _ => {
                skipping = true;
                PgError::error(
                    code::FEATURE_NOT_SUPPORTED,
                    "the admin console speaks the simple query protocol only",
                )
                .encode(&mut out);
            }
        }
        if stream.send(&out).await.is_err() {
            return;
        }
    }
}

/// Runs every command of one simple query, stopping at the first error (as PostgreSQL
/// does for a multi-statement query).
fn run_query(proxy: &Proxy, query: &str, user: &str, out: &mut BytesMut) {
    let commands = command::parse_all(query);
    if commands.is_empty() {
        msg::empty_query_response(out);
        return;
    }
    for command in commands {
        let result = command
            .map_err(|e| {
                PgError::error(
                    code::SYNTAX_ERROR,
                    format!("{e}; try SHOW HELP ({})", command::HELP_SHORT),
                )
            })
            .and_then(|c| run(proxy, c, user, out));
        if let Err(e) = result {
            e.encode(out);
            return;
        }
    }
}

/// Runs one command, appending its result to `out`.
fn run(proxy: &Proxy, command: Command, user: &str, out: &mut BytesMut) -> Result<(), PgError> {
    match command {
        Command::Show(listing) => {
            let table = listing_table(proxy, listing);
            write_table(&table, "SHOW", out);
        }
        Command::ShowSetting(key) => {
            let table = show::setting(&proxy.lag_config(), &key).ok_or_else(|| {
                PgError::error(
                    code::UNDEFINED_OBJECT,
                    format!("unrecognized configuration parameter \"{key}\""),
                )
            })?;
            write_table(&table, "SHOW", out);
        }
        Command::Set { key, value } => {
            let shown = proxy.set_lag(&key, &value).map_err(|e| match e {
                SetError::UnknownKey(_) => PgError::error(code::UNDEFINED_OBJECT, e.to_string()),
                SetError::InvalidValue { .. } => {
                    PgError::error(code::INVALID_PARAMETER_VALUE, e.to_string())
                }
            })?;
            tracing::debug!(%user, %key, value = %shown, "admin SET");
            msg::command_complete("SET", out);
        }
        Command::Reload => {
            let needs_restart = proxy.reload_file().map_err(|e| match e {
                ReloadError::NoFile => PgError::error(code::FEATURE_NOT_SUPPORTED, e.to_string()),
                ReloadError::Config(_) | ReloadError::Tls(_) => PgError::error(
                    code::CONFIG_FILE_ERROR,
                    format!("configuration not reloaded, the old one stays: {e}"),
                ),
            })?;
            tracing::info!(%user, "admin RELOAD");
            if !needs_restart.is_empty() {
                msg::notice(
                    "WARNING",
                    "01000",
                    &format!(
                        "changes to {} need a restart and were not applied",
                        needs_restart.join(", ")
                    ),
                    out,
                );
            }
            msg::command_complete("RELOAD", out);
        }
    }
    Ok(())
}

/// Gathers the state a listing shows.
fn listing_table(proxy: &Proxy, listing: Listing) -> Table {
    let now = Instant::now();
    // By node index; empty for a place no Patroni member fills yet, which no listing shows.
    let names: Vec<String> = proxy.pools().nodes().names();
    let filled = |node: usize| names.get(node).is_some_and(|n| !n.is_empty());
    let reports = |all: Vec<crate::lag::ReplicaReport>| -> Vec<crate::lag::ReplicaReport> {
        all.into_iter().filter(|r| filled(r.node)).collect()
    };
    let routing = proxy.routing();
    match listing {
        Listing::Nodes => show::nodes(
            &proxy.pools().nodes().infos(),
            &proxy.board().roles(),
            &proxy.board().nodes(),
            &routing.topology.snapshot(),
            now,
        ),
        Listing::Replicas => show::replicas(
            &names,
            &reports(proxy.board().replicas()),
            &routing.topology.snapshot(),
            now,
        ),
        Listing::Lag => show::lag(
            &names,
            &reports(proxy.board().replicas()),
            &crate::monitor::thresholds(&proxy.lag_config()),
            now,
        ),
        Listing::Pools => show::pools(&proxy.pool_rows()),
        Listing::Clients => show::clients(&proxy.client_rows(), now),
        Listing::Stats => show::stats(&show::Stats {
            by_node: names
                .iter()
                .cloned()
                .zip(routing.stats.by_node())
                .filter(|(name, _)| !name.is_empty())
                .collect(),
            by_reason: Reason::ALL
                .iter()
                .map(|r| (*r, routing.stats.by_reason(*r)))
                .collect(),
            pins: routing.stats.pins(),
            cache: routing.classifier.stats(),
            clients: proxy.clients().len(),
        }),
        Listing::Config => show::config(proxy.config(), &proxy.lag_config()),
        Listing::Help => show::help(),
    }
}

/// RowDescription, the rows, and CommandComplete (`SHOW`).
fn write_table(table: &Table, tag: &str, out: &mut BytesMut) {
    msg::row_description(&table.columns, out);
    for row in &table.rows {
        let values: Vec<Option<&str>> = row.iter().map(|v| v.as_deref()).collect();
        msg::data_row(&values, out);
    }
    msg::command_complete(tag, out);
}
