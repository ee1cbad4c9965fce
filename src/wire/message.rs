//! Reading the client messages routing and statement bookkeeping need (Query, Parse, Bind,
//! Describe, Close), rewriting statement names in them, and building the messages pgsplit
//! sends on its own account (authentication, key data, ReadyForQuery, ...), with pgwire's
//! message types as the encoder. Query text is kept as raw bytes: it is never decoded and
//! re-encoded, so any client encoding survives.

use bytes::{BufMut, Bytes, BytesMut};
use pgwire::messages::extendedquery::{BindComplete, CloseComplete, ParseComplete};
use pgwire::messages::response::{CommandComplete, ReadyForQuery, TransactionStatus};
use pgwire::messages::startup::{
    Authentication, BackendKeyData, NegotiateProtocolVersion, SecretKey,
};
use pgwire::messages::Message;

use super::frame::{cstr, int32};

/// Transaction status as ReadyForQuery reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    Idle,
    InTransaction,
    Failed,
}

impl TxStatus {
    /// Reads the status byte of a ReadyForQuery body.
    pub fn from_byte(b: u8) -> Option<TxStatus> {
        match b {
            b'I' => Some(TxStatus::Idle),
            b'T' => Some(TxStatus::InTransaction),
            b'E' => Some(TxStatus::Failed),
            _ => None,
        }
    }

    fn to_pgwire(self) -> TransactionStatus {
        match self {
            TxStatus::Idle => TransactionStatus::Idle,
            TxStatus::InTransaction => TransactionStatus::Transaction,
            TxStatus::Failed => TransactionStatus::Error,
        }
    }
}

/// A Parse message, borrowed from its body.
#[derive(Debug, PartialEq, Eq)]
pub struct ParseMsg<'a> {
    pub name: &'a [u8],
    pub query: &'a [u8],
    /// The parameter type count and OIDs, as sent.
    pub param_types: &'a [u8],
}

/// Reads the query text of a Query message body (without its terminator).
pub fn read_query(body: &[u8]) -> Option<&[u8]> {
    cstr(body).map(|(q, _)| q)
}

/// Reads a Parse message body.
pub fn read_parse(body: &[u8]) -> Option<ParseMsg<'_>> {
    let (name, rest) = cstr(body)?;
    let (query, param_types) = cstr(rest)?;
    Some(ParseMsg {
        name,
        query,
        param_types,
    })
}

/// Reads the portal and statement names of a Bind body, and the rest of it.
pub fn read_bind(body: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (portal, rest) = cstr(body)?;
    let (statement, rest) = cstr(rest)?;
    Some((portal, statement, rest))
}

/// The parameters and result formats of a Bind body (what follows its portal and
/// statement names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindValues<'a> {
    /// The parameter format codes, two bytes each (none: all text; one: for all).
    param_formats: &'a [u8],
    /// The values; `None` is NULL.
    pub values: Vec<Option<&'a [u8]>>,
    /// The result format codes, two bytes each (none: all text; one: for all).
    result_formats: &'a [u8],
}

/// Reads the parameters and result formats of a Bind body's rest (see [`read_bind`]).
pub fn read_bind_values(rest: &[u8]) -> Option<BindValues<'_>> {
    fn take(b: &[u8], n: usize) -> Option<(&[u8], &[u8])> {
        (b.len() >= n).then(|| b.split_at(n))
    }
    fn count(b: &[u8]) -> Option<(usize, &[u8])> {
        let (n, rest) = take(b, 2)?;
        Some((usize::from(u16::from_be_bytes([n[0], n[1]])), rest))
    }
    let (n, rest) = count(rest)?;
    let (param_formats, rest) = take(rest, 2 * n)?;
    let (n, mut rest) = count(rest)?;
    let mut values = Vec::with_capacity(n);
    for _ in 0..n {
        let (len, after) = take(rest, 4)?;
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        if len < 0 {
            values.push(None);
            rest = after;
            continue;
        }
        let (value, after) = take(after, usize::try_from(len).ok()?)?;
        values.push(Some(value));
        rest = after;
    }
    let (n, rest) = count(rest)?;
    let (result_formats, _) = take(rest, 2 * n)?;
    Some(BindValues {
        param_formats,
        values,
        result_formats,
    })
}

/// Whether format code `i` of a list of codes is binary (the list's rules: none means
/// text, one applies to all).
fn binary_at(formats: &[u8], i: usize) -> bool {
    let at = if formats.len() == 2 { 0 } else { 2 * i };
    formats.get(at..at + 2) == Some(&[0, 1])
}

impl BindValues<'_> {
    /// Parameter `i`: its value (`None`: NULL) and whether it is in binary format.
    pub fn param(&self, i: usize) -> Option<(Option<&[u8]>, bool)> {
        Some((*self.values.get(i)?, binary_at(self.param_formats, i)))
    }

    /// Whether result column `i` is asked for in binary format.
    pub fn result_binary(&self, i: usize) -> bool {
        binary_at(self.result_formats, i)
    }
}

/// Reads a Describe or Close body: `S` (statement) or `P` (portal), and the name.
pub fn read_target(body: &[u8]) -> Option<(u8, &[u8])> {
    let (&kind, rest) = body.split_first()?;
    let (name, _) = cstr(rest)?;
    Some((kind, name))
}

/// Reads the status of a ReadyForQuery body.
pub fn read_ready(body: &[u8]) -> Option<TxStatus> {
    body.first().and_then(|&b| TxStatus::from_byte(b))
}

/// Reads a ParameterStatus body as (name, value).
pub fn read_parameter_status(body: &[u8]) -> Option<(String, String)> {
    let (name, rest) = cstr(body)?;
    let (value, _) = cstr(rest)?;
    Some((
        String::from_utf8_lossy(name).into_owned(),
        String::from_utf8_lossy(value).into_owned(),
    ))
}

/// Reads a BackendKeyData body as (process id, secret key bytes).
pub fn read_backend_key(body: &[u8]) -> Option<(i32, Vec<u8>)> {
    let (pid, rest) = int32(body)?;
    Some((pid, rest.to_vec()))
}

/// Reads a DataRow body as its text values (`None`: SQL NULL or not UTF-8).
pub fn read_data_row(body: &[u8]) -> Option<Vec<Option<&str>>> {
    let count = u16::from_be_bytes(body.get(..2)?.try_into().ok()?);
    let mut rest = &body[2..];
    let mut values = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let (len, after) = int32(rest)?;
        if len < 0 {
            values.push(None);
            rest = after;
            continue;
        }
        let len = len as usize;
        values.push(std::str::from_utf8(after.get(..len)?).ok());
        rest = &after[len..];
    }
    Some(values)
}

/// Reads the command tag of a CommandComplete body.
pub fn read_command_tag(body: &[u8]) -> &[u8] {
    cstr(body).map(|(t, _)| t).unwrap_or(body)
}

/// Builds a typed message from body parts.
fn typed(tag: u8, parts: &[&[u8]]) -> Bytes {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut buf = BytesMut::with_capacity(len + 5);
    buf.put_u8(tag);
    buf.put_u32((len + 4) as u32);
    for p in parts {
        buf.put_slice(p);
    }
    buf.freeze()
}

/// A Parse message under another statement name.
pub fn parse_message(name: &[u8], query: &[u8], param_types: &[u8]) -> Bytes {
    typed(b'P', &[name, b"\0", query, b"\0", param_types])
}

/// A Bind message naming another statement.
pub fn bind_message(portal: &[u8], statement: &[u8], rest: &[u8]) -> Bytes {
    typed(b'B', &[portal, b"\0", statement, b"\0", rest])
}

/// A Describe (`D`) or Close (`C`) message for a statement or portal.
pub fn target_message(tag: u8, kind: u8, name: &[u8]) -> Bytes {
    typed(tag, &[&[kind], name, b"\0"])
}

/// An Execute message for `portal`, all rows.
pub fn execute_message(portal: &[u8]) -> Bytes {
    typed(b'E', &[portal, b"\0", &0u32.to_be_bytes()])
}

/// A simple Query message.
pub fn query_message(sql: &str) -> Bytes {
    typed(b'Q', &[sql.as_bytes(), b"\0"])
}

/// A Sync message.
pub fn sync_message() -> Bytes {
    typed(b'S', &[])
}

fn encode<M: Message>(msg: M, buf: &mut BytesMut) {
    // Encoding into a growable buffer cannot fail for these messages.
    let _ = msg.encode(buf);
}

pub fn auth_ok(buf: &mut BytesMut) {
    encode(Authentication::Ok, buf);
}

pub fn auth_md5(salt: [u8; 4], buf: &mut BytesMut) {
    encode(Authentication::MD5Password(salt.to_vec()), buf);
}

/// AuthenticationSASL listing these mechanisms, in order of preference.
pub fn auth_sasl(mechanisms: &[&str], buf: &mut BytesMut) {
    let mechanisms = mechanisms.iter().map(|m| m.to_string()).collect();
    encode(Authentication::SASL(mechanisms), buf);
}

pub fn auth_sasl_continue(data: Vec<u8>, buf: &mut BytesMut) {
    encode(Authentication::SASLContinue(Bytes::from(data)), buf);
}

pub fn auth_sasl_final(data: Vec<u8>, buf: &mut BytesMut) {
    encode(Authentication::SASLFinal(Bytes::from(data)), buf);
}

pub fn backend_key_data(pid: i32, secret: i32, buf: &mut BytesMut) {
    encode(BackendKeyData::new(pid, SecretKey::I32(secret)), buf);
}

pub fn ready_for_query(status: TxStatus, buf: &mut BytesMut) {
    encode(ReadyForQuery::new(status.to_pgwire()), buf);
}

pub fn parse_complete(buf: &mut BytesMut) {
    encode(ParseComplete::new(), buf);
}

pub fn bind_complete(buf: &mut BytesMut) {
    encode(BindComplete::new(), buf);
}

pub fn close_complete(buf: &mut BytesMut) {
    encode(CloseComplete::new(), buf);
}

pub fn command_complete(tag: &str, buf: &mut BytesMut) {
    encode(CommandComplete::new(tag.to_string()), buf);
}

/// A one-row, one-text-column result (RowDescription and DataRow), as SHOW returns.
pub fn single_value(column: &str, value: &str, buf: &mut BytesMut) {
    row_description(&[column], buf);
    data_row(&[Some(value)], buf);
}

/// The type oid of `text`.
pub const TEXT_OID: u32 = 25;
/// The type oid of `boolean`.
pub const BOOL_OID: u32 = 16;

/// A RowDescription of text columns (type 25, text format), as the admin console returns.
pub fn row_description(columns: &[&str], buf: &mut BytesMut) {
    let typed: Vec<(&str, u32, bool)> = columns.iter().map(|c| (*c, TEXT_OID, false)).collect();
    row_description_typed(&typed, buf);
}

/// A RowDescription of computed columns: (name, type oid, binary format). The type size is
/// given as -1 (varlena) for text and 1 for boolean.
pub fn row_description_typed(columns: &[(&str, u32, bool)], buf: &mut BytesMut) {
    let mut body = Vec::with_capacity(2 + columns.iter().map(|c| c.0.len() + 19).sum::<usize>());
    body.extend_from_slice(&(columns.len() as u16).to_be_bytes());
    for &(column, oid, binary) in columns {
        body.extend_from_slice(column.as_bytes());
        body.push(0);
        body.extend_from_slice(&0u32.to_be_bytes()); // table oid
        body.extend_from_slice(&0u16.to_be_bytes()); // column number
        body.extend_from_slice(&oid.to_be_bytes());
        let size: i16 = if oid == BOOL_OID { 1 } else { -1 };
        body.extend_from_slice(&size.to_be_bytes());
        body.extend_from_slice(&(-1i32).to_be_bytes()); // type modifier
        body.extend_from_slice(&u16::from(binary).to_be_bytes());
    }
    buf.extend_from_slice(&typed(b'T', &[&body]));
}

/// A DataRow of text values; `None` is SQL NULL.
pub fn data_row(values: &[Option<&str>], buf: &mut BytesMut) {
    let bytes: Vec<Option<&[u8]>> = values.iter().map(|v| v.map(str::as_bytes)).collect();
    data_row_bytes(&bytes, buf);
}

/// A DataRow of values in whatever format their columns have; `None` is SQL NULL.
pub fn data_row_bytes(values: &[Option<&[u8]>], buf: &mut BytesMut) {
    let mut body = Vec::with_capacity(
        2 + values
            .iter()
            .map(|v| v.map_or(4, |v| v.len() + 4))
            .sum::<usize>(),
    );
    body.extend_from_slice(&(values.len() as u16).to_be_bytes());
    for value in values {
        match value {
            Some(v) => {
                body.extend_from_slice(&(v.len() as u32).to_be_bytes());
                body.extend_from_slice(v);
            }
            None => body.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    buf.extend_from_slice(&typed(b'D', &[&body]));
}

/// A ParameterStatus message (`S`): a run-time parameter's name and value.
pub fn parameter_status(name: &str, value: &str, buf: &mut BytesMut) {
    buf.extend_from_slice(&typed(
        b'S',
        &[name.as_bytes(), b"\0", value.as_bytes(), b"\0"],
    ));
}

/// An EmptyQueryResponse (`I`): the answer to a query with no statements.
pub fn empty_query_response(buf: &mut BytesMut) {
    buf.extend_from_slice(&typed(b'I', &[]));
}

/// A NoticeResponse with severity `severity` (`NOTICE`, `WARNING`), SQLSTATE and message.
pub fn notice(severity: &str, code: &str, message: &str, buf: &mut BytesMut) {
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', message),
    ] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    buf.extend_from_slice(&typed(b'N', &[&body]));
}

/// Tells a client asking for protocol 3.x (x > 0) or `_pq_` options that pgsplit speaks 3.0.
pub fn negotiate_protocol_version(unsupported: Vec<String>, buf: &mut BytesMut) {
    encode(NegotiateProtocolVersion::new(0, unsupported), buf);
}

#[cfg(test)]
mod tests;
