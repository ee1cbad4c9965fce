//! The first packet a client sends, which has no type byte: SSLRequest, GSSENCRequest,
//! CancelRequest or a StartupMessage with its parameters.

use thiserror::Error;

use super::frame::cstr;

/// PostgreSQL refuses startup packets longer than this (MAX_STARTUP_PACKET_LENGTH).
pub const MAX_STARTUP_PACKET: usize = 10_000;

const SSL_REQUEST: u32 = 80877103;
const GSSENC_REQUEST: u32 = 80877104;
const CANCEL_REQUEST: u32 = 80877102;

/// What a client's first packet asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel { pid: i32, secret: Vec<u8> },
    Startup(StartupMessage),
}

/// A StartupMessage: the protocol version and the parameters (user, database, options...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    pub major: u16,
    pub minor: u16,
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    /// The value of a parameter, if the client sent it.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a first packet was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum StartupError {
    #[error("invalid length of startup packet")]
    BadLength,
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("invalid startup packet layout: expected terminator as last byte")]
    Malformed,
    #[error("invalid cancel request")]
    BadCancel,
}

/// The total length of the first packet, from its first four bytes, checked against the
/// limits PostgreSQL applies before anything is allocated.
pub fn packet_len(header: [u8; 4]) -> Result<usize, StartupError> {
    let len = u32::from_be_bytes(header) as usize;
    if !(8..=MAX_STARTUP_PACKET).contains(&len) {
        return Err(StartupError::BadLength);
    }
    Ok(len)
}

/// Parses a whole first packet (length field included).
pub fn parse(packet: &[u8]) -> Result<StartupPacket, StartupError> {
    if packet.len() < 8 {
        return Err(StartupError::BadLength);
    }
    let code = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
    let body = &packet[8..];
    match code {
        SSL_REQUEST => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST => {
            if body.len() < 8 {
                return Err(StartupError::BadCancel);
            }
            let pid = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
            Ok(StartupPacket::Cancel {
                pid,
                secret: body[4..].to_vec(),
            })
        }
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major != 3 {
                return Err(StartupError::UnsupportedProtocol { major, minor });
            }
            Ok(StartupPacket::Startup(StartupMessage {
                major,
                minor,
                params: parse_params(body)?,
            }))
        }
    }
}

/// Reads the NUL-terminated name/value pairs, ending with an empty name.
fn parse_params(mut body: &[u8]) -> Result<Vec<(String, String)>, StartupError> {
    let mut params = Vec::new();
    loop {
        let (name, rest) = cstr(body).ok_or(StartupError::Malformed)?;
        if name.is_empty() {
            if !rest.is_empty() {
                return Err(StartupError::Malformed);
            }
            return Ok(params);
        }
        let (value, rest) = cstr(rest).ok_or(StartupError::Malformed)?;
        params.push((
            String::from_utf8_lossy(name).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
        body = rest;
    }
}

/// Encodes a StartupMessage (protocol 3.0) with the given parameters, for connecting to
/// a server.
pub fn encode_startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196608u32.to_be_bytes());
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// Encodes an SSLRequest, for asking a server for TLS.
pub fn encode_ssl_request() -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&8u32.to_be_bytes());
    out[4..].copy_from_slice(&SSL_REQUEST.to_be_bytes());
    out
}

/// Encodes a CancelRequest for a server's process id and secret key.
pub fn encode_cancel(pid: i32, secret: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + secret.len());
    out.extend_from_slice(&((12 + secret.len()) as u32).to_be_bytes());
    out.extend_from_slice(&CANCEL_REQUEST.to_be_bytes());
    out.extend_from_slice(&pid.to_be_bytes());
    out.extend_from_slice(secret);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_an_ssl_request() {
        assert!(matches!(
            parse(&encode_ssl_request()),
            Ok(StartupPacket::SslRequest)
        ));
    }

    #[test]
    fn round_trips_a_startup_message() {
        let packet = encode_startup(&[("user", "app"), ("database", "app")]);
        let header = [packet[0], packet[1], packet[2], packet[3]];
        assert_eq!(packet_len(header).unwrap(), packet.len());
        match parse(&packet).unwrap() {
            StartupPacket::Startup(m) => {
                assert_eq!((m.major, m.minor), (3, 0));
                assert_eq!(m.param("user"), Some("app"));
                assert_eq!(m.param("database"), Some("app"));
                assert_eq!(m.param("options"), None);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn recognises_ssl_gss_and_cancel() {
        let ssl = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        assert_eq!(parse(&ssl).unwrap(), StartupPacket::SslRequest);
        let gss = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];
        assert_eq!(parse(&gss).unwrap(), StartupPacket::GssEncRequest);
        let cancel = encode_cancel(42, &[0, 0, 0, 7]);
        assert_eq!(
            parse(&cancel).unwrap(),
            StartupPacket::Cancel {
                pid: 42,
                secret: vec![0, 0, 0, 7]
            }
        );
    }

    #[test]
    fn refuses_huge_and_tiny_lengths() {
        // A declared 1 GB packet is refused from its header alone.
        assert_eq!(
            packet_len(0x4000_0000u32.to_be_bytes()),
            Err(StartupError::BadLength)
        );
        assert_eq!(packet_len([0, 0, 0, 4]), Err(StartupError::BadLength));
    }

    #[test]
    fn refuses_other_protocols_and_bad_layouts() {
        let mut v2 = encode_startup(&[("user", "app")]);
        v2[4..8].copy_from_slice(&0x0002_0000u32.to_be_bytes());
        assert!(matches!(
            parse(&v2),
            Err(StartupError::UnsupportedProtocol { major: 2, .. })
        ));
        let mut bad = encode_startup(&[("user", "app")]);
        bad.pop();
        assert_eq!(parse(&bad), Err(StartupError::Malformed));
        let garbage = [0, 0, 0, 12, 0, 3, 0, 0, b'u', b's', b'e', b'r'];
        assert_eq!(parse(&garbage), Err(StartupError::Malformed));
    }
}
