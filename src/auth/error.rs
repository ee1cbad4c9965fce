//! Errors of client authentication, with the SQLSTATE PostgreSQL would report for each.
//!
//! Messages never echo raw client bytes: anything taken from the client is sanitised
//! to printable ASCII first, so an unauthenticated client cannot spam logs with junk.

/// Why a client's authentication attempt failed.
///
/// Every variant means "do not let this client in". [`AuthError::sqlstate`] gives the code
/// PostgreSQL itself would send in the `ErrorResponse`; the caller typically reports
/// `password authentication failed for user "..."` (28P01) for [`AuthError::WrongProof`]
/// and the variant's own message for the protocol errors (08P01).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The SASL message does not follow the SCRAM grammar (RFC 5802 section 7).
    #[error("malformed SCRAM message: {0}")]
    MalformedMessage(String),

    /// The client picked a SASL mechanism other than `SCRAM-SHA-256`.
    #[error("client selected an invalid SASL authentication mechanism \"{0}\"")]
    UnsupportedMechanism(String),

    /// The client asked for channel binding (`SCRAM-SHA-256-PLUS` or gs2 flag `p=`).
    #[error(
        "SCRAM channel binding is not supported: the client requires channel binding, \
         but this server offers only SCRAM-SHA-256 without it"
    )]
    ChannelBindingNotSupported,

    /// The client asked for a channel-binding type other than `tls-server-end-point`.
    #[error("unsupported SCRAM channel-binding type \"{0}\"")]
    UnsupportedChannelBindingType(String),

    /// gs2 flag `y` on a connection where the server offered channel binding: the
    /// client was told it was not available (a downgrade, RFC 5802 section 6).
    #[error(
        "SCRAM channel binding negotiation error: the client supports SCRAM channel \
         binding but thinks the server does not; however, this server does support it"
    )]
    ChannelBindingDowngrade,

    /// The channel-binding data in client-final-message is not this connection's: the
    /// client is not talking to pgsplit's certificate (a man in the middle).
    #[error("SCRAM channel binding check failed")]
    ChannelBindingCheckFailed,

    /// The `c=` attribute of client-final-message does not repeat the gs2 header of
    /// client-first-message (`biws` for `n,,`, `eSws` for `y,,`).
    #[error("unexpected SCRAM channel-binding attribute in client-final-message")]
    ChannelBindingMismatch,

    /// The gs2 header carries an authorization identity (`a=`).
    #[error("client uses authorization identity, but it is not supported")]
    AuthzidNotSupported,

    /// client-first-message starts with a mandatory extension (`m=`).
    #[error("client requires an unsupported SCRAM extension")]
    ExtensionNotSupported,

    /// The nonce in client-final-message is not client nonce + server nonce.
    #[error("invalid SCRAM response: nonce does not match")]
    NonceMismatch,

    /// The client proof is wrong: wrong password, unknown user (mock secret), or a
    /// stored secret that cannot be used. Deliberately one variant for all of these.
    #[error("password authentication failed: invalid SCRAM proof")]
    WrongProof,

    /// A SCRAM message arrived when the exchange was not expecting one (out of order,
    /// after completion, or after an earlier failure).
    #[error("invalid SCRAM exchange state: {0}")]
    InvalidState(&'static str),

    /// A stored secret is not a valid `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`.
    #[error("invalid SCRAM secret: {0}")]
    InvalidSecret(&'static str),
}

impl AuthError {
    /// The SQLSTATE PostgreSQL uses for this failure.
    ///
    /// - `28P01` invalid_password: [`AuthError::WrongProof`], [`AuthError::InvalidSecret`]
    ///   (a broken stored secret must look like a failed login to the client).
    /// - `0A000` feature_not_supported: [`AuthError::AuthzidNotSupported`],
    ///   [`AuthError::ExtensionNotSupported`].
    /// - `28000` invalid_authorization_specification: [`AuthError::ChannelBindingDowngrade`],
    ///   [`AuthError::ChannelBindingCheckFailed`].
    /// - `08P01` protocol_violation: everything else.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            AuthError::WrongProof | AuthError::InvalidSecret(_) => "28P01",
            AuthError::AuthzidNotSupported | AuthError::ExtensionNotSupported => "0A000",
            AuthError::ChannelBindingDowngrade | AuthError::ChannelBindingCheckFailed => "28000",
            AuthError::MalformedMessage(_)
            | AuthError::UnsupportedMechanism(_)
            | AuthError::ChannelBindingNotSupported
            | AuthError::UnsupportedChannelBindingType(_)
            | AuthError::ChannelBindingMismatch
            | AuthError::NonceMismatch
            | AuthError::InvalidState(_) => "08P01",
        }
    }

    /// True when the failure is a wrong password (or unknown user), as opposed to a
    /// protocol problem.
    pub fn is_wrong_password(&self) -> bool {
        matches!(self, AuthError::WrongProof | AuthError::InvalidSecret(_))
    }

    pub(crate) fn malformed(detail: impl Into<String>) -> Self {
        AuthError::MalformedMessage(detail.into())
    }
}

/// Render client bytes for an error message: printable ASCII kept, anything else `?`,
/// at most 30 characters (as PostgreSQL's `sanitize_str`).
pub(crate) fn sanitize(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(30)
        .map(|&b| {
            if (0x21..=0x7e).contains(&b) {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

/// Render one client byte for an error message: `'x'` when printable, else `0xNN`.
pub(crate) fn sanitize_byte(b: Option<&u8>) -> String {
    match b {
        None => "end of message".to_string(),
        Some(&b) if (0x21..=0x7e).contains(&b) => format!("'{}'", b as char),
        Some(&b) => format!("0x{b:02x}"),
    }
}
