//! The SCRAM client messages as RFC 5802 writes them: client-first-message (with its gs2
//! header and channel binding flag) and client-final-message, parsed strictly into the parts
//! the server needs. Pure; the exchange itself is `super::ScramServer`.

use super::{decode_key_bytes, AuthError, KEY_LEN};
use crate::auth::error::sanitize_byte;

/// What the gs2 header says about channel binding (RFC 5802 section 6).
pub(super) enum Gs2Binding<'a> {
    /// `n`: the client does not support it.
    None,
    /// `y`: the client supports it but thinks the server does not.
    ClientOnly,
    /// `p=<type>`: the client uses this binding type.
    Plus(&'a [u8]),
}

/// The parts of client-first-message the server needs.
pub(super) struct ClientFirst<'a> {
    pub(super) binding: Gs2Binding<'a>,
    /// The gs2 header, up to and including its second ','.
    pub(super) gs2_header: &'a [u8],
    /// client-first-message-bare: everything after the gs2 header.
    pub(super) bare: &'a [u8],
    pub(super) client_nonce: &'a [u8],
}

/// The parts of client-final-message the server needs.
pub(super) struct ClientFinal<'a> {
    pub(super) channel_binding: &'a [u8],
    pub(super) nonce: &'a [u8],
    /// client-final-message-without-proof: everything before `,p=`.
    pub(super) without_proof: &'a [u8],
    pub(super) proof: [u8; KEY_LEN],
}

/// Parse `gs2-header client-first-message-bare` (RFC 5802 section 7).
pub(super) fn parse_client_first(data: &[u8]) -> Result<ClientFirst<'_>, AuthError> {
    check_message(data)?;

    let (binding, rest) = match data.first() {
        Some(&flag @ (b'n' | b'y')) => {
            if data.get(1) != Some(&b',') {
                return Err(AuthError::malformed(format!(
                    "comma expected after the channel-binding flag, found {}",
                    sanitize_byte(data.get(1))
                )));
            }
            let binding = match flag {
                b'n' => Gs2Binding::None,
                _ => Gs2Binding::ClientOnly,
            };
            (binding, data.get(2..).unwrap_or_default())
        }
        Some(b'p') => {
            if data.get(1) != Some(&b'=') {
                return Err(AuthError::malformed(
                    "expected character '=' for attribute 'p'",
                ));
            }
            let comma = data.iter().position(|&b| b == b',').ok_or_else(|| {
                AuthError::malformed("comma expected after the channel-binding type")
            })?;
            let kind = data.get(2..comma).unwrap_or_default();
            (
                Gs2Binding::Plus(kind),
                data.get(comma + 1..).unwrap_or_default(),
            )
        }
        other => {
            return Err(AuthError::malformed(format!(
                "unexpected channel-binding flag {}",
                sanitize_byte(other)
            )))
        }
    };
    // `rest` starts with the optional authzid, then ','.
    match rest.first() {
        Some(b',') => {}
        Some(b'a') => return Err(AuthError::AuthzidNotSupported),
        other => {
            return Err(AuthError::malformed(format!(
                "unexpected attribute {} in client-first-message",
                sanitize_byte(other)
            )))
        }
    }
    let bare = rest.get(1..).unwrap_or_default();
    let gs2_header = data.get(..data.len() - bare.len()).unwrap_or_default();
    if bare.first() == Some(&b'm') {
        return Err(AuthError::ExtensionNotSupported);
    }

    let mut cursor = Cursor::new(bare);
    let _ignored_username = cursor.read_attr(b'n')?;
    let client_nonce = cursor.read_attr(b'r')?;
    if client_nonce.is_empty() {
        return Err(AuthError::malformed("empty client nonce"));
    }
    if !client_nonce.iter().all(|&b| is_printable(b)) {
        return Err(AuthError::malformed(
            "non-printable characters in SCRAM nonce",
        ));
    }
    // Optional extensions: checked for syntax, otherwise ignored.
    while !cursor.at_end() {
        cursor.read_any_attr()?;
    }

    Ok(ClientFirst {
        binding,
        gs2_header,
        bare,
        client_nonce,
    })
}

/// Parse `c=<cbind>,r=<nonce>[,extensions],p=<proof>` (RFC 5802 section 7).
pub(super) fn parse_client_final(data: &[u8]) -> Result<ClientFinal<'_>, AuthError> {
    check_message(data)?;

    let mut cursor = Cursor::new(data);
    let channel_binding = cursor.read_attr(b'c')?;
    let nonce = cursor.read_attr(b'r')?;
    // Skip extensions until the proof; remember where the proof's ',' is.
    let (proof_start, proof_b64) = loop {
        let start = cursor.pos;
        let (attr, value) = cursor.read_any_attr()?;
        if attr == b'p' {
            break (start, value);
        }
    };
    if !cursor.at_end() {
        return Err(AuthError::malformed(
            "garbage found at the end of client-final-message",
        ));
    }
    let proof = decode_key_bytes(proof_b64)
        .ok_or_else(|| AuthError::malformed("malformed proof in client-final-message"))?;
    // proof_start > 0: the 'c' and 'r' attributes precede it, and a ',' separates them.
    let without_proof = data
        .get(..proof_start.saturating_sub(1))
        .unwrap_or_default();

    Ok(ClientFinal {
        channel_binding,
        nonce,
        without_proof,
        proof,
    })
}

/// Checks shared by both client messages.
pub(super) fn check_message(data: &[u8]) -> Result<(), AuthError> {
    if data.is_empty() {
        return Err(AuthError::malformed("the message is empty"));
    }
    if data.contains(&0) {
        return Err(AuthError::malformed("the message contains a NUL byte"));
    }
    Ok(())
}

/// Reads `attr=value` pairs separated by ','.
pub(super) struct Cursor<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(input: &'a [u8]) -> Self {
        Cursor { input, pos: 0 }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    /// Read `<attr>=<value>` for a given attribute letter.
    fn read_attr(&mut self, attr: u8) -> Result<&'a [u8], AuthError> {
        let found = self.input.get(self.pos);
        if found != Some(&attr) {
            return Err(AuthError::malformed(format!(
                "expected attribute '{}' but found {}",
                attr as char,
                sanitize_byte(found)
            )));
        }
        self.read_value(attr)
    }

    /// Read any `<ALPHA>=<value>`, returning the attribute letter and value.
    fn read_any_attr(&mut self) -> Result<(u8, &'a [u8]), AuthError> {
        match self.input.get(self.pos) {
            Some(&attr) if attr.is_ascii_alphabetic() => Ok((attr, self.read_value(attr)?)),
            None => Err(AuthError::malformed(
                "attribute expected, but found end of message",
            )),
            other => Err(AuthError::malformed(format!(
                "attribute expected, but found invalid character {}",
                sanitize_byte(other)
            ))),
        }
    }

    /// At `<attr>`: skip it and '=', return the value up to ',' or the end, and move
    /// past the ','.
    fn read_value(&mut self, attr: u8) -> Result<&'a [u8], AuthError> {
        if self.input.get(self.pos + 1) != Some(&b'=') {
            return Err(AuthError::malformed(format!(
                "expected character '=' for attribute '{}'",
                attr as char
            )));
        }
        let start = self.pos + 2;
        let rest = self.input.get(start..).unwrap_or_default();
        let len = rest.iter().position(|&b| b == b',').unwrap_or(rest.len());
        let value = rest.get(..len).unwrap_or_default();
        // Past the value and its ',' (if any).
        self.pos = (start + len + 1).min(self.input.len());
        Ok(value)
    }
}

/// RFC 5802 `printable`: %x21-2B / %x2D-7E (printable ASCII except ',').
pub(super) fn is_printable(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && b != b','
}
