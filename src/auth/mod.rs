//! Client authentication, server side: pgsplit plays the PostgreSQL server towards its
//! clients and checks their passwords with SCRAM-SHA-256, md5, or not at all (trust).
//!
//! Pure protocol logic: no IO, no async. The session layer frames and sends the
//! messages; this module only computes and checks their bodies.
//!
//! - [`scram`]: SCRAM-SHA-256 exchange ([`ScramServer`]) and stored secrets
//!   ([`ScramSecret`]), following PostgreSQL's `auth-scram.c`.
//! - [`md5`]: md5 password check ([`verify_md5_response`]) and stored hashes.
//! - [`AuthError`]: why an attempt failed, with the SQLSTATE PostgreSQL would use.
//!
//! A typical SCRAM login:
//!
//! ```text
//! let secret = ScramSecret::parse(verifier)?;      // at config load; unknown user: ScramSecret::mock(user)
//! let mut scram = ScramServer::with_random_nonce(secret);
//! send AuthenticationSASL(MECHANISMS)  // MECHANISMS_PLUS and .with_channel_binding() on TLS
//! recv SASLInitialResponse(mech, data) -> send AuthenticationSASLContinue(scram.client_first(mech, data)?)
//! recv SASLResponse(data)              -> send AuthenticationSASLFinal(scram.client_final(data)?), AuthenticationOk
//! any Err(e)                           -> ErrorResponse(e.sqlstate(), ...) and close
//! ```

mod error;
pub mod md5;
pub mod scram;

use std::fmt;
use std::str::FromStr;

pub use self::error::AuthError;
pub use self::md5::{is_md5_hash, md5_password_hash, verify_md5_response};
pub use self::scram::{ScramSecret, ScramServer, MECHANISMS, MECHANISMS_PLUS, SCRAM_SHA_256};

/// How clients must prove who they are (the `pg_hba.conf` method names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// SASL SCRAM-SHA-256 (`scram-sha-256`).
    ScramSha256,
    /// MD5 challenge-response (`md5`).
    Md5,
    /// No password (`trust`).
    Trust,
}

impl AuthMethod {
    /// The name used in configuration files and in `pg_hba.conf`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ScramSha256 => "scram-sha-256",
            AuthMethod::Md5 => "md5",
            AuthMethod::Trust => "trust",
        }
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authentication method name that is not one of `scram-sha-256`, `md5`, `trust`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown authentication method \"{0}\" (expected one of: scram-sha-256, md5, trust)")]
pub struct UnknownAuthMethod(pub String);

impl FromStr for AuthMethod {
    type Err = UnknownAuthMethod;

    /// Parses `scram-sha-256`, `md5` or `trust`, ignoring ASCII case and surrounding
    /// whitespace.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim();
        [AuthMethod::ScramSha256, AuthMethod::Md5, AuthMethod::Trust]
            .into_iter()
            .find(|method| method.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| UnknownAuthMethod(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_method_round_trips_through_display() {
        for method in [AuthMethod::ScramSha256, AuthMethod::Md5, AuthMethod::Trust] {
            assert_eq!(method.to_string().parse::<AuthMethod>(), Ok(method));
        }
        assert_eq!("scram-sha-256".parse(), Ok(AuthMethod::ScramSha256));
        assert_eq!("md5".parse(), Ok(AuthMethod::Md5));
        assert_eq!("trust".parse(), Ok(AuthMethod::Trust));
        assert_eq!(" SCRAM-SHA-256 ".parse(), Ok(AuthMethod::ScramSha256));
    }

    #[test]
    fn auth_method_rejects_unknown_names() {
        for bad in ["", "scram", "scram-sha-1", "password", "md5 trust", "cert"] {
            let err = bad.parse::<AuthMethod>().unwrap_err();
            assert_eq!(err, UnknownAuthMethod(bad.to_string()));
            assert!(err.to_string().contains("scram-sha-256, md5, trust"));
        }
    }
}
