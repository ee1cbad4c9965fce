//! Statements pgsplit answers itself, without a server: `DEALLOCATE` of protocol-level
//! statements (they live in pgsplit's table), `SET / RESET / SHOW pgsplit.route` and
//! `pgsplit.causal_token`; where such an answer goes in the reply stream, and how an error
//! of pgsplit's own is raised on the server so that it aborts a transaction block exactly
//! as a server error would.

use crate::router::RouteMode;
use crate::wire::message::TxStatus;

/// PostgreSQL's message for a command sent inside a failed transaction block (25P02).
pub const IN_FAILED_BLOCK: &str =
    "current transaction is aborted, commands ignored until end of transaction block";

/// PostgreSQL's message for a Bind or Describe of an unnamed statement that does not exist.
pub const NO_UNNAMED: &str = "unnamed prepared statement does not exist";

/// A `DEALLOCATE` pgsplit answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deallocate {
    /// `DEALLOCATE [PREPARE] ALL`.
    All,
    /// `DEALLOCATE [PREPARE] name`, the name read as PostgreSQL reads it (unquoted:
    /// lowercased; quoted: as written).
    Named(Vec<u8>),
}

/// Reads `DEALLOCATE [PREPARE] name` / `DEALLOCATE [PREPARE] ALL`, one statement (the
/// name, then at most a few `;`).
pub fn deallocate(sql: &[u8]) -> Option<Deallocate> {
    let (_, rest) = crate::classify::short_command(sql, &["DEALLOCATE"], 8)?;
    let name = match rest.as_slice() {
        [prepare, name] if prepare.is_kw(sql, "PREPARE") => name,
        [name] => name,
        _ => return None,
    };
    if name.is_kw(sql, "ALL") {
        return Some(Deallocate::All);
    }
    Some(Deallocate::Named(name.name(sql)?.into_owned()))
}

/// The CommandComplete tag for a `DEALLOCATE` of `what`, given whether the client had the
/// statement named (`None`: pgsplit does not answer; the server gives its error).
pub fn deallocate_tag(what: &Deallocate, existed: bool) -> Option<&'static str> {
    match what {
        Deallocate::All => Some("DEALLOCATE ALL"),
        Deallocate::Named(_) => existed.then_some("DEALLOCATE"),
    }
}

/// Where pgsplit's own reply (with its ReadyForQuery) goes: after the replies the server
/// still owes, in order, or straight to the client.
pub fn reply_after_server(has_server: bool, owes_replies: bool) -> bool {
    has_server && owes_replies
}

/// Where a `pgsplit.route` / `pgsplit.causal_token` command runs, for its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// Outside a transaction block: an error is pgsplit's own reply.
    Outside,
    /// Inside one: an error is raised on the server, so it aborts the block as
    /// PostgreSQL would.
    Inside,
    /// Inside a failed one: the command is refused as PostgreSQL refuses every command
    /// there (25P02).
    Failed,
}

/// The block a command runs in, from the client's transaction status and whether it
/// holds a server.
pub fn block(has_server: bool, status: TxStatus) -> Block {
    match (has_server, status) {
        (false, _) | (true, TxStatus::Idle) => Block::Outside,
        (true, TxStatus::InTransaction) => Block::Inside,
        (true, TxStatus::Failed) => Block::Failed,
    }
}

/// The value `SHOW pgsplit.route` shows.
pub fn route_value(mode: RouteMode) -> &'static str {
    match mode {
        RouteMode::Auto => "auto",
        RouteMode::Primary => "primary",
    }
}

/// The message for a bad `SET pgsplit.route` value.
pub fn invalid_route(value: &str) -> String {
    format!("invalid value for parameter \"pgsplit.route\": \"{value}\" (use 'auto' or 'primary')")
}

/// SQL that fails with `code` and `message` when the server runs it: how pgsplit makes an
/// error of its own abort the client's transaction block, exactly as a server error would.
pub fn raise_sql(code: &str, message: &str) -> String {
    format!(
        "DO $pgsplit$BEGIN RAISE EXCEPTION USING ERRCODE = '{code}', MESSAGE = {}; END$pgsplit$",
        // No `$` in the message, so it cannot end the dollar quote.
        crate::frontend::settings::quote_literal(&message.replace('$', ""))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> Option<Deallocate> {
        Some(Deallocate::Named(name.as_bytes().to_vec()))
    }

    #[test]
    fn deallocate_is_read_as_postgresql_reads_it() {
        assert_eq!(deallocate(b"DEALLOCATE s1"), named("s1"));
        assert_eq!(deallocate(b"deallocate prepare S1;"), named("s1"));
        assert_eq!(deallocate(b"DEALLOCATE \"S1\""), named("S1"));
        assert_eq!(deallocate(b"DEALLOCATE \"a\"\"b\""), named("a\"b"));
        assert_eq!(deallocate(b"DEALLOCATE ALL"), Some(Deallocate::All));
        assert_eq!(
            deallocate(b"DEALLOCATE PREPARE all ;"),
            Some(Deallocate::All)
        );
    }

    #[test]
    fn other_text_is_not_a_deallocate_pgsplit_answers() {
        let not_answered =
            "SELECT 1|DEALLOCATE|DEALLOCATE a b|DEALLOCATE s1; SELECT 1|DEALLOCATE 'x'";
        for sql in not_answered.split('|') {
            assert_eq!(deallocate(sql.as_bytes()), None, "{sql}");
        }
    }

    #[test]
    fn deallocate_of_a_name_the_client_does_not_have_goes_to_the_server() {
        assert_eq!(
            deallocate_tag(&Deallocate::All, false),
            Some("DEALLOCATE ALL")
        );
        let s1 = Deallocate::Named(b"s1".to_vec());
        assert_eq!(deallocate_tag(&s1, true), Some("DEALLOCATE"));
        assert_eq!(deallocate_tag(&s1, false), None);
    }

    #[test]
    fn a_local_reply_waits_for_what_the_server_still_owes() {
        assert!(reply_after_server(true, true));
        assert!(!reply_after_server(true, false));
        assert!(!reply_after_server(false, false));
    }

    #[test]
    fn a_route_command_inside_a_block_is_answered_as_the_server_would() {
        assert_eq!(block(false, TxStatus::Idle), Block::Outside);
        // No server: whatever the client last saw, nothing is open on a server.
        assert_eq!(block(false, TxStatus::Failed), Block::Outside);
        assert_eq!(block(true, TxStatus::Idle), Block::Outside);
        assert_eq!(block(true, TxStatus::InTransaction), Block::Inside);
        assert_eq!(block(true, TxStatus::Failed), Block::Failed);
    }

    #[test]
    fn route_values_and_their_error() {
        assert_eq!(route_value(RouteMode::Auto), "auto");
        assert_eq!(route_value(RouteMode::Primary), "primary");
        assert_eq!(
            invalid_route("replica"),
            "invalid value for parameter \"pgsplit.route\": \"replica\" (use 'auto' or 'primary')"
        );
    }

    #[test]
    fn a_raised_error_cannot_break_out_of_its_quoting() {
        let sql = raise_sql("0A000", "it's $pgsplit$ bad");
        assert_eq!(
            sql,
            "DO $pgsplit$BEGIN RAISE EXCEPTION USING ERRCODE = '0A000', MESSAGE = 'it''s pgsplit bad'; END$pgsplit$"
        );
    }
}
