//! The PostgreSQL error a client sees when pgsplit itself refuses or fails something:
//! severity, SQLSTATE and a readable message, encoded as an ErrorResponse.

use bytes::BytesMut;
use pgwire::messages::response::ErrorResponse;
use pgwire::messages::Message;

/// SQLSTATE codes pgsplit answers with.
pub mod code {
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const CONNECTION_FAILURE: &str = "08006";
    pub const CANNOT_CONNECT: &str = "08001";
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const INVALID_AUTHORIZATION: &str = "28000";
    pub const UNKNOWN_DATABASE: &str = "3D000";
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    pub const PROGRAM_LIMIT: &str = "54000";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    /// The class of a WARNING notice with no code of its own.
    pub const WARNING: &str = "01000";
    pub const CRASH_SHUTDOWN: &str = "57P02";
    pub const QUERY_CANCELED: &str = "57014";
    pub const IDLE_SESSION_TIMEOUT: &str = "57P05";
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
    pub const INVALID_PARAMETER_VALUE: &str = "22023";
    pub const IN_FAILED_TRANSACTION: &str = "25P02";
    pub const IDLE_IN_TRANSACTION_TIMEOUT: &str = "25P03";
    pub const UNDEFINED_OBJECT: &str = "42704";
    pub const SYNTAX_ERROR: &str = "42601";
    pub const DUPLICATE_PREPARED_STATEMENT: &str = "42P05";
    pub const INVALID_STATEMENT_NAME: &str = "26000";
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    pub const CONFIG_FILE_ERROR: &str = "F0000";
    pub const INTERNAL_ERROR: &str = "XX000";

    /// The SQLSTATE pgsplit shows when it reports a server's failure in an error of its
    /// own (a checkout or settings sync that failed): the codes a client can act on are
    /// kept, anything else becomes a connection failure.
    pub fn relayed(code: &str) -> &'static str {
        match code {
            "08001" => CANNOT_CONNECT,
            "3D000" => UNKNOWN_DATABASE,
            "28P01" => INVALID_PASSWORD,
            "53300" => TOO_MANY_CONNECTIONS,
            "22023" => INVALID_PARAMETER_VALUE,
            "42704" => UNDEFINED_OBJECT,
            _ => CONNECTION_FAILURE,
        }
    }
}

/// The SQLSTATE a client is shown for a transaction lost because its server ended the
/// connection with error `code` (sent while the client was between statements): the
/// reasons a client can act on are kept (the idle-in-transaction timeout it set, an
/// administrator's termination or shutdown), anything else is a connection failure. Pure.
pub fn farewell(code: &str) -> &'static str {
    match code {
        "25P03" => code::IDLE_IN_TRANSACTION_TIMEOUT,
        "57P01" => code::ADMIN_SHUTDOWN,
        "57P05" => code::IDLE_SESSION_TIMEOUT,
        _ => code::CONNECTION_FAILURE,
    }
}

/// How bad an error is: `Error` ends the statement, `Fatal` ends the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// An error pgsplit sends to a client in PostgreSQL's own format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
}

impl PgError {
    /// An error that ends the statement but keeps the connection.
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        PgError {
            severity: Severity::Error,
            code,
            message: message.into(),
        }
    }

    /// An error after which pgsplit closes the connection.
    pub fn fatal(code: &'static str, message: impl Into<String>) -> Self {
        PgError {
            severity: Severity::Fatal,
            code,
            message: message.into(),
        }
    }

    /// Appends the ErrorResponse message to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        let severity = self.severity.as_str().to_string();
        let msg = ErrorResponse::new(vec![
            (b'S', severity.clone()),
            (b'V', severity),
            (b'C', self.code.to_string()),
            (b'M', self.message.clone()),
        ]);
        // Encoding into a BytesMut cannot fail for these field types.
        let _ = msg.encode(buf);
    }

    /// The encoded ErrorResponse as bytes.
    pub fn to_bytes(&self) -> BytesMut {
        let mut buf = BytesMut::new();
        self.encode(&mut buf);
        buf
    }
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.severity.as_str(),
            self.code,
            self.message
        )
    }
}

/// Reads the SQLSTATE and message out of an ErrorResponse or NoticeResponse body.
pub fn parse_error_fields(body: &[u8]) -> (String, String, String) {
    let (mut severity, mut code, mut message) = (String::new(), String::new(), String::new());
    let mut rest = body;
    while let Some((&field, after)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let Some((value, after)) = super::frame::cstr(after) else {
            break;
        };
        let value = String::from_utf8_lossy(value).into_owned();
        match field {
            b'V' => severity = value,
            b'S' if severity.is_empty() => severity = value,
            b'C' => code = value,
            b'M' => message = value,
            _ => {}
        }
        rest = after;
    }
    (severity, code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_servers_farewell_keeps_the_codes_a_client_acts_on() {
        assert_eq!(farewell("25P03"), "25P03");
        assert_eq!(farewell("57P01"), "57P01");
        assert_eq!(farewell("57P05"), "57P05");
        assert_eq!(farewell("XX000"), "08006");
        assert_eq!(farewell(""), "08006");
    }

    #[test]
    fn encodes_and_reads_back() {
        let e = PgError::fatal(code::INVALID_PASSWORD, "password authentication failed");
        let bytes = e.to_bytes();
        assert_eq!(bytes[0], b'E');
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        assert_eq!(len + 1, bytes.len());
        let (sev, code, msg) = parse_error_fields(&bytes[5..]);
        assert_eq!(sev, "FATAL");
        assert_eq!(code, "28P01");
        assert_eq!(msg, "password authentication failed");
    }
}
