//! `SELECT pg_cancel_backend(pid)` and `SELECT pg_terminate_backend(pid)` where `pid` is
//! one of pgsplit's client process ids (see `crate::clients::signal`): reading the call,
//! its argument (a literal, or a Bind parameter), and the answer PostgreSQL would give.

use bytes::BytesMut;

use crate::classify::{short_command, Token, TokenKind};
use crate::clients::{Signal, Signaled};
use crate::wire::error::code;
use crate::wire::message as msg;

/// A call of `pg_cancel_backend` or `pg_terminate_backend` with one argument, alone in
/// its statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalCall {
    pub signal: Signal,
    pub arg: Arg,
}

/// The process id argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    Literal(i64),
    /// `$n`, as a 0-based index into the Bind's parameters.
    Param(usize),
}

/// The integer types a `::` cast of the argument may name.
const INTEGER_TYPES: [&str; 5] = ["INT", "INTEGER", "INT4", "INT8", "BIGINT"];

/// Reads `SELECT [pg_catalog.]pg_cancel_backend(ARG)` (or `pg_terminate_backend`), where
/// ARG is an integer literal or `$n`, either optionally cast to an integer type, and
/// nothing else but trailing `;`s. Costs a few byte comparisons for any other text.
pub fn call(sql: &[u8]) -> Option<SignalCall> {
    if sql.len() > 160 || !contains_backend(sql) {
        return None;
    }
    let (_, toks) = short_command(sql, &["SELECT"], 12)?;
    let toks = match toks.as_slice() {
        [schema, dot, rest @ ..]
            if dot.kind == TokenKind::Punct(b'.')
                && schema.name(sql).as_deref() == Some(b"pg_catalog".as_slice()) =>
        {
            rest
        }
        all => all,
    };
    let [function, open, arg @ .., close] = toks else {
        return None;
    };
    let signal = match function.name(sql).as_deref() {
        Some(b"pg_cancel_backend") => Signal::Cancel,
        Some(b"pg_terminate_backend") => Signal::Terminate,
        _ => return None,
    };
    if open.kind != TokenKind::Punct(b'(') || close.kind != TokenKind::Punct(b')') {
        return None;
    }
    Some(SignalCall {
        signal,
        arg: argument(sql, arg)?,
    })
}

/// Whether `sql` has `_backend` in it (any case): a vectorised search for `_`, then one
/// comparison per `_` (every statement a client sends is checked).
fn contains_backend(sql: &[u8]) -> bool {
    memchr::memchr_iter(b'_', sql).any(|i| {
        sql.get(i + 1..i + 8)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"backend"))
    })
}

/// `[-]N` or `$n`, optionally followed by `::` and an integer type.
fn argument(sql: &[u8], toks: &[Token]) -> Option<Arg> {
    let value = match toks {
        [value, colon, colon2, ty]
            if colon.kind == TokenKind::Punct(b':')
                && colon2.kind == TokenKind::Punct(b':')
                && ty.is_any_kw(sql, &INTEGER_TYPES) =>
        {
            std::slice::from_ref(value)
        }
        [minus, value, colon, colon2, ty]
            if colon.kind == TokenKind::Punct(b':')
                && colon2.kind == TokenKind::Punct(b':')
                && ty.is_any_kw(sql, &INTEGER_TYPES) =>
        {
            return negative(sql, minus, value);
        }
        other => other,
    };
    match value {
        [t] if t.kind == TokenKind::Num => Some(Arg::Literal(integer(t.text(sql))?)),
        [t] if t.kind == TokenKind::Param => {
            let n: usize = std::str::from_utf8(t.text(sql).get(1..)?)
                .ok()?
                .parse()
                .ok()?;
            Some(Arg::Param(n.checked_sub(1)?))
        }
        [minus, value] => negative(sql, minus, value),
        _ => None,
    }
}

fn negative(sql: &[u8], minus: &Token, value: &Token) -> Option<Arg> {
    if minus.kind != TokenKind::Punct(b'-') || value.kind != TokenKind::Num {
        return None;
    }
    Some(Arg::Literal(-integer(value.text(sql))?))
}

fn integer(text: &[u8]) -> Option<i64> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// A Bind parameter's value as an integer: text (`int4in`'s leading and trailing spaces
/// allowed) or binary (2, 4 or 8 bytes, big-endian). `None` for NULL or anything else.
pub fn parameter_value(value: Option<&[u8]>, binary: bool) -> Option<i64> {
    let value = value?;
    if binary {
        return match value.len() {
            2 => Some(i64::from(i16::from_be_bytes(value.try_into().ok()?))),
            4 => Some(i64::from(i32::from_be_bytes(value.try_into().ok()?))),
            8 => Some(i64::from_be_bytes(value.try_into().ok()?)),
            _ => None,
        };
    }
    integer(value.trim_ascii())
}

/// The sender process id a client sees in a notification that came on its server
/// connection (whose backend is `server_pid`). A client receives notifications while it
/// holds a server connection of its own (LISTEN binds it to one), so one sent by that very
/// backend was sent by this client: it carries the client's own process id, as from
/// PostgreSQL, and a driver's "is this mine?" check works. Any other sender keeps the
/// server's process id, which is never a client's (see `crate::clients::PID_MAX_LIMIT`).
pub fn notification_sender(sender: i32, server_pid: i32, own: i32) -> i32 {
    if sender == server_pid {
        own
    } else {
        sender
    }
}

/// What the call answers, given whom it names and how the signal went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A row with this value (`false` comes with PostgreSQL's warning that the process id
    /// is not a backend's).
    Value(bool),
    /// 42501, with PostgreSQL's message and detail.
    Denied,
    /// The caller terminated itself: its session ends with 57P01, as a backend that
    /// signals itself does.
    EndOwnSession,
    /// The caller cancelled itself: the statement fails with 57014.
    CancelOwnStatement,
}

/// The answer to `signal` for process id `pid`, called by the client whose id is `own`;
/// `outcome` is what signalling another client did. Pure.
pub fn answer(signal: Signal, pid: i32, own: i32, outcome: impl FnOnce() -> Signaled) -> Answer {
    if pid == own {
        return match signal {
            Signal::Terminate => Answer::EndOwnSession,
            Signal::Cancel => Answer::CancelOwnStatement,
        };
    }
    match outcome() {
        Signaled::Sent => Answer::Value(true),
        Signaled::NoSuchClient => Answer::Value(false),
        Signaled::NotAllowed => Answer::Denied,
    }
}

/// PostgreSQL's 42501 message for a signal the caller may not send.
pub fn denied(signal: Signal) -> &'static str {
    match signal {
        Signal::Cancel => "permission denied to cancel query",
        Signal::Terminate => "permission denied to terminate process",
    }
}

/// The RowDescription of the call's result: one boolean column named after the function,
/// in text or binary format.
pub fn description(signal: Signal, binary: bool, buf: &mut BytesMut) {
    msg::row_description_typed(&[(signal.function(), msg::BOOL_OID, binary)], buf);
}

/// The rows of the call's result (its warning first, for a process id no client has) and
/// its CommandComplete.
pub fn rows(value: bool, pid: i32, binary: bool, buf: &mut BytesMut) {
    if !value {
        let warning = format!("PID {pid} is not a PostgreSQL backend process");
        msg::notice("WARNING", code::WARNING, &warning, buf);
    }
    let cell: &[u8] = match (binary, value) {
        (true, v) => &[v as u8],
        (false, true) => b"t",
        (false, false) => b"f",
    };
    msg::data_row_bytes(&[Some(cell)], buf);
    msg::command_complete("SELECT 1", buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(signal: Signal, v: i64) -> Option<SignalCall> {
        Some(SignalCall {
            signal,
            arg: Arg::Literal(v),
        })
    }

    #[test]
    fn calls_are_read_as_written_by_drivers_and_people() {
        use Signal::*;
        let param = |signal, n| {
            Some(SignalCall {
                signal,
                arg: Arg::Param(n),
            })
        };
        assert_eq!(
            call(b"select pg_terminate_backend($1)"),
            param(Terminate, 0)
        );
        assert_eq!(
            call(b"select pg_terminate_backend($1::int)"),
            param(Terminate, 0)
        );
        assert_eq!(
            call(b"SELECT pg_cancel_backend($2::bigint);"),
            param(Cancel, 1)
        );
        assert_eq!(
            call(b"SELECT pg_catalog.pg_cancel_backend(4194305)"),
            lit(Cancel, 4194305)
        );
        assert_eq!(
            call(b"  Select PG_TERMINATE_BACKEND ( 12 ) ; ;"),
            lit(Terminate, 12)
        );
        assert_eq!(
            call(b"select pg_terminate_backend(-3::int4)"),
            lit(Terminate, -3)
        );
    }

    #[test]
    fn anything_more_is_left_to_the_server() {
        let not_calls = [
            "select pg_terminate_backend(pid) from pg_stat_activity",
            "select pg_terminate_backend($1, 1000)",
            "select pg_terminate_backend($1::text)",
            "select pg_terminate_backend($1), 1",
            "select pg_terminate_backend($0)",
            "select x.pg_terminate_backend(1)",
            "select \"pg_terminate_backend\"(1) ; select 1",
            "select my_backend(1)",
            "select pg_terminate_backend('1')",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1",
        ];
        for sql in not_calls {
            assert_eq!(call(sql.as_bytes()), None, "{sql}");
        }
        // A quoted name is the function's name all the same.
        assert_eq!(
            call(b"select \"pg_terminate_backend\"(7)"),
            lit(Signal::Terminate, 7)
        );
    }

    #[test]
    fn parameters_are_read_in_either_format() {
        assert_eq!(parameter_value(Some(b"4194305"), false), Some(4194305));
        assert_eq!(parameter_value(Some(b" 42 "), false), Some(42));
        assert_eq!(parameter_value(Some(b"4x"), false), None);
        assert_eq!(parameter_value(None, false), None);
        assert_eq!(parameter_value(Some(&7i16.to_be_bytes()), true), Some(7));
        assert_eq!(
            parameter_value(Some(&4194305i32.to_be_bytes()), true),
            Some(4194305)
        );
        assert_eq!(
            parameter_value(Some(&(-1i64).to_be_bytes()), true),
            Some(-1)
        );
        assert_eq!(parameter_value(Some(&[1, 2, 3]), true), None);
    }

    #[test]
    fn the_answer_is_what_postgresql_gives_for_a_backend() {
        use Signal::*;
        let sent = || Signaled::Sent;
        assert_eq!(answer(Terminate, 5, 5, sent), Answer::EndOwnSession);
        assert_eq!(answer(Cancel, 5, 5, sent), Answer::CancelOwnStatement);
        assert_eq!(answer(Terminate, 6, 5, sent), Answer::Value(true));
        assert_eq!(
            answer(Cancel, 6, 5, || Signaled::NoSuchClient),
            Answer::Value(false)
        );
        assert_eq!(
            answer(Terminate, 6, 5, || Signaled::NotAllowed),
            Answer::Denied
        );
        assert_eq!(denied(Terminate), "permission denied to terminate process");
    }

    #[test]
    fn a_notification_from_the_clients_own_backend_names_the_client() {
        assert_eq!(notification_sender(812, 812, 4194400), 4194400);
        assert_eq!(notification_sender(813, 812, 4194400), 813);
    }

    #[test]
    fn rows_carry_the_value_in_the_format_asked() {
        let mut text = BytesMut::new();
        rows(true, 9, false, &mut text);
        assert!(text.starts_with(b"D\0\0\0\x0b\0\x01\0\0\0\x01t"));
        assert!(text.ends_with(b"C\0\0\0\x0dSELECT 1\0"));
        let mut binary = BytesMut::new();
        rows(false, 9, true, &mut binary);
        assert!(binary.starts_with(b"N"), "the warning comes first");
        let warning = String::from_utf8_lossy(&binary);
        assert!(warning.contains("PID 9 is not a PostgreSQL backend process"));
        assert!(warning.contains("D\0\0\0\x0b\0\x01\0\0\0\x01\x00"));
    }
}
