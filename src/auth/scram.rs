//! SCRAM-SHA-256 (RFC 5802 / RFC 7677), server side, as PostgreSQL's
//! `src/backend/libpq/auth-scram.c` does it.
//!
//! [`ScramSecret`] is what the server stores (salt, iteration count, StoredKey, ServerKey);
//! [`ScramServer`] runs one exchange against one client:
//!
//! ```text
//! client                                   ScramServer
//! SASLInitialResponse(mech, client-first)  -> client_first()  -> server-first  (AuthenticationSASLContinue)
//! SASLResponse(client-final)               -> client_final()  -> server-final  (AuthenticationSASLFinal)
//! ```
//!
//! The caller frames the messages; this module only sees and returns their bodies.
//! If a client sends `SASLInitialResponse` without an initial response (length -1), the
//! caller answers with an empty `AuthenticationSASLContinue` and passes the next
//! `SASLResponse` body to [`ScramServer::client_first`], as PostgreSQL does.
//!
//! PostgreSQL specifics kept here:
//! - the user name in client-first-message (`n=`) is ignored; the startup user counts;
//! - channel binding `tls-server-end-point` (RFC 5929) only, and only when the caller
//!   gives the connection's binding data ([`ScramServer::with_channel_binding`], a TLS
//!   client): then `SCRAM-SHA-256-PLUS` is accepted, and gs2 flag `y` is refused as a
//!   downgrade; without it `p=` and `SCRAM-SHA-256-PLUS` are refused with
//!   [`AuthError::ChannelBindingNotSupported`];
//! - authorization identities (`a=`) and mandatory extensions (`m=`) are refused;
//! - passwords go through SASLprep when they are valid UTF-8 without prohibited
//!   characters, and are used as raw bytes otherwise;
//! - unknown users get a [`ScramSecret::mock`] secret with a per-user stable salt, run the
//!   whole exchange (including the proof computation) and fail with the same
//!   [`AuthError::WrongProof`] as a wrong password.
//!
//! Randomness is injectable: [`ScramServer::new`] takes the server nonce bytes and
//! [`ScramSecret::mock_with_key`] the mock-salt key, so tests are deterministic.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::error::{sanitize, AuthError};

mod messages;

use messages::{parse_client_final, parse_client_first, Gs2Binding};

/// SASL mechanism name of SCRAM-SHA-256 without channel binding.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// SASL mechanism name of SCRAM-SHA-256 with channel binding.
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";
/// The mechanisms to list in `AuthenticationSASL`, in order of preference.
pub const MECHANISMS: &[&str] = &[SCRAM_SHA_256];
/// The mechanisms to list when channel binding is possible (a TLS client), as PostgreSQL
/// lists them.
pub const MECHANISMS_PLUS: &[&str] = &[SCRAM_SHA_256_PLUS, SCRAM_SHA_256];
/// The one channel-binding type supported (RFC 5929), as PostgreSQL.
pub const TLS_SERVER_END_POINT: &str = "tls-server-end-point";
/// PostgreSQL's default `scram_iterations`.
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// PostgreSQL's default salt length in bytes.
pub const DEFAULT_SALT_LEN: usize = 16;
/// Length of the raw server nonce, before base64 (PostgreSQL's `SCRAM_RAW_NONCE_LEN`).
pub const SERVER_NONCE_LEN: usize = 18;

const KEY_LEN: usize = 32;
type HmacSha256 = Hmac<Sha256>;

/// A user's stored SCRAM-SHA-256 credential: what PostgreSQL keeps in
/// `pg_authid.rolpassword` as `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`.
///
/// `Debug` does not print the keys.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; KEY_LEN],
    server_key: [u8; KEY_LEN],
    /// A mock secret for an unknown user: the exchange always fails.
    doomed: bool,
}

impl ScramSecret {
    /// Derive the secret from a plain password, as `CREATE ROLE ... PASSWORD` would with
    /// this salt and iteration count. An `iterations` of 0 means [`DEFAULT_ITERATIONS`].
    ///
    /// This runs PBKDF2 (`iterations` rounds): do it once per configured password, not
    /// once per connection.
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> Self {
        let iterations = if iterations == 0 {
            DEFAULT_ITERATIONS
        } else {
            iterations
        };
        let prepared = saslprep(password);
        let mut salted = [0u8; KEY_LEN];
        pbkdf2::pbkdf2_hmac::<Sha256>(&prepared, salt, iterations, &mut salted);
        let client_key = hmac(&salted, &[b"Client Key"]);
        let stored_key: [u8; KEY_LEN] = Sha256::digest(client_key).into();
        let server_key = hmac(&salted, &[b"Server Key"]);
        ScramSecret {
            iterations,
            salt: salt.to_vec(),
            stored_key,
            server_key,
            doomed: false,
        }
    }

    /// Derive the secret from a plain password with a fresh random salt of
    /// [`DEFAULT_SALT_LEN`] bytes and [`DEFAULT_ITERATIONS`], as PostgreSQL does.
    pub fn generate(password: &str) -> Self {
        let mut salt = [0u8; DEFAULT_SALT_LEN];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        Self::from_password(password, &salt, DEFAULT_ITERATIONS)
    }

    /// Parse a stored PostgreSQL verifier
    /// `SCRAM-SHA-256$<iterations>:<salt b64>$<StoredKey b64>:<ServerKey b64>`
    /// (surrounding whitespace is ignored).
    pub fn parse(verifier: &str) -> Result<Self, AuthError> {
        let verifier = verifier.trim();
        let (scheme, rest) = verifier.split_once('$').ok_or(AuthError::InvalidSecret(
            "expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>",
        ))?;
        if scheme != SCRAM_SHA_256 {
            return Err(AuthError::InvalidSecret("scheme is not SCRAM-SHA-256"));
        }
        let (iterations, rest) = rest.split_once(':').ok_or(AuthError::InvalidSecret(
            "missing ':' after the iteration count",
        ))?;
        let (salt, keys) = rest
            .split_once('$')
            .ok_or(AuthError::InvalidSecret("missing '$' after the salt"))?;
        let (stored_key, server_key) = keys.split_once(':').ok_or(AuthError::InvalidSecret(
            "missing ':' between StoredKey and ServerKey",
        ))?;

        let iterations = match iterations.parse::<u32>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(AuthError::InvalidSecret(
                    "iteration count is not a positive integer",
                ))
            }
        };
        let salt = BASE64
            .decode(salt)
            .map_err(|_| AuthError::InvalidSecret("salt is not valid base64"))?;
        let stored_key = decode_key(stored_key).ok_or(AuthError::InvalidSecret(
            "StoredKey is not 32 bytes of base64",
        ))?;
        let server_key = decode_key(server_key).ok_or(AuthError::InvalidSecret(
            "ServerKey is not 32 bytes of base64",
        ))?;
        Ok(ScramSecret {
            iterations,
            salt,
            stored_key,
            server_key,
            doomed: false,
        })
    }

    /// A plausible secret for a user that does not exist (or has no usable SCRAM
    /// secret). The exchange runs normally and fails with [`AuthError::WrongProof`].
    ///
    /// The salt is stable per user name for the life of the process (derived from a
    /// random per-process key), so probing the same name twice does not reveal that
    /// it is fake. Use [`ScramSecret::mock_with_key`] to supply the key yourself.
    pub fn mock(user: &str) -> Self {
        static KEY: OnceLock<[u8; KEY_LEN]> = OnceLock::new();
        let key = KEY.get_or_init(|| {
            let mut key = [0u8; KEY_LEN];
            rand::rngs::OsRng.fill_bytes(&mut key);
            key
        });
        Self::mock_with_key(user, key)
    }

    /// [`ScramSecret::mock`] with an explicit secret key: salt = first
    /// [`DEFAULT_SALT_LEN`] bytes of SHA-256(user || key), as PostgreSQL's
    /// `scram_mock_salt` (which uses the cluster's mock authentication nonce).
    pub fn mock_with_key(user: &str, key: &[u8]) -> Self {
        let digest = Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update(key)
            .finalize();
        ScramSecret {
            iterations: DEFAULT_ITERATIONS,
            salt: digest[..DEFAULT_SALT_LEN].to_vec(),
            stored_key: [0; KEY_LEN],
            server_key: [0; KEY_LEN],
            doomed: true,
        }
    }

    /// The verifier string in PostgreSQL's format (what [`ScramSecret::parse`] reads).
    pub fn to_verifier(&self) -> String {
        format!(
            "{}${}:{}${}:{}",
            SCRAM_SHA_256,
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(self.stored_key),
            BASE64.encode(self.server_key)
        )
    }

    /// PBKDF2 iteration count.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// Raw salt bytes.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// StoredKey = H(HMAC(SaltedPassword, "Client Key")).
    pub fn stored_key(&self) -> &[u8; KEY_LEN] {
        &self.stored_key
    }

    /// ServerKey = HMAC(SaltedPassword, "Server Key").
    pub fn server_key(&self) -> &[u8; KEY_LEN] {
        &self.server_key
    }

    /// True for a [`ScramSecret::mock`] secret, which never authenticates anyone.
    pub fn is_mock(&self) -> bool {
        self.doomed
    }
}

impl FromStr for ScramSecret {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramSecret")
            .field("iterations", &self.iterations)
            .field("salt", &BASE64.encode(&self.salt))
            .field("keys", &"<redacted>")
            .field("mock", &self.doomed)
            .finish()
    }
}

/// What the server remembers between client-first and client-final.
struct FirstExchange {
    /// The `c=` value client-final must carry: base64 of the gs2 header, followed by the
    /// binding data when the client uses channel binding.
    expected_cbind: Vec<u8>,
    /// The client uses channel binding (SCRAM-SHA-256-PLUS).
    bound: bool,
    client_nonce: Vec<u8>,
    client_first_bare: Vec<u8>,
    server_first: Vec<u8>,
}

enum State {
    Initial,
    ServerFirstSent(FirstExchange),
    Authenticated,
    Failed,
}

/// Server side of one SCRAM-SHA-256 exchange.
///
/// Any error ends the exchange: later calls return [`AuthError::InvalidState`].
pub struct ScramServer {
    secret: ScramSecret,
    server_nonce: String,
    state: State,
    /// The connection's `tls-server-end-point` binding data, when it has one.
    channel_binding: Option<Vec<u8>>,
}

impl ScramServer {
    /// Start an exchange for `secret` (use [`ScramSecret::mock`] for unknown users),
    /// with the server's share of the nonce. Supply fresh random bytes for every
    /// exchange; they are sent base64-encoded, as PostgreSQL does.
    pub fn new(secret: ScramSecret, server_nonce: [u8; SERVER_NONCE_LEN]) -> Self {
        ScramServer {
            secret,
            server_nonce: BASE64.encode(server_nonce),
            state: State::Initial,
            channel_binding: None,
        }
    }

    /// Offers channel binding: `end_point` is the connection's `tls-server-end-point`
    /// data (the hash of the server certificate, see RFC 5929). The caller then lists
    /// [`MECHANISMS_PLUS`].
    pub fn with_channel_binding(mut self, end_point: Vec<u8>) -> Self {
        self.channel_binding = Some(end_point);
        self
    }

    /// [`ScramServer::new`] with a server nonce from the operating system's CSPRNG.
    pub fn with_random_nonce(secret: ScramSecret) -> Self {
        let mut nonce = [0u8; SERVER_NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        Self::new(secret, nonce)
    }

    /// Test hook: a server nonce given as printable text (e.g. RFC 7677's example).
    #[cfg(test)]
    fn with_nonce_text(secret: ScramSecret, server_nonce: &str) -> Self {
        ScramServer {
            secret,
            server_nonce: server_nonce.to_string(),
            state: State::Initial,
            channel_binding: None,
        }
    }

    /// Handle `SASLInitialResponse`: the mechanism the client chose and its
    /// client-first-message. Returns the server-first-message
    /// (`r=<nonce>,s=<salt>,i=<iterations>`), to send in `AuthenticationSASLContinue`.
    pub fn client_first(&mut self, mechanism: &str, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        if !matches!(self.state, State::Initial) {
            self.fail();
            return Err(AuthError::InvalidState(
                "client-first-message after the exchange started",
            ));
        }
        self.state = State::Failed;
        let plus = match mechanism {
            SCRAM_SHA_256 => false,
            SCRAM_SHA_256_PLUS if self.channel_binding.is_some() => true,
            SCRAM_SHA_256_PLUS => return Err(AuthError::ChannelBindingNotSupported),
            other => return Err(AuthError::UnsupportedMechanism(sanitize(other.as_bytes()))),
        };
        let first = parse_client_first(data)?;
        let mut expected_cbind = first.gs2_header.to_vec();
        match (&first.binding, &self.channel_binding) {
            (Gs2Binding::Plus(_), None) => return Err(AuthError::ChannelBindingNotSupported),
            (Gs2Binding::Plus(_), Some(_)) if !plus => {
                return Err(AuthError::malformed(
                    "The client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes channel binding data.",
                ))
            }
            (Gs2Binding::Plus(kind), Some(data)) => {
                if *kind != TLS_SERVER_END_POINT.as_bytes() {
                    return Err(AuthError::UnsupportedChannelBindingType(sanitize(kind)));
                }
                expected_cbind.extend_from_slice(data);
            }
            (_, _) if plus => {
                return Err(AuthError::malformed(
                    "The client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include channel binding data.",
                ))
            }
            (Gs2Binding::ClientOnly, Some(_)) => return Err(AuthError::ChannelBindingDowngrade),
            (Gs2Binding::ClientOnly | Gs2Binding::None, _) => {}
        }

        let mut server_first = Vec::with_capacity(64);
        server_first.extend_from_slice(b"r=");
        server_first.extend_from_slice(first.client_nonce);
        server_first.extend_from_slice(self.server_nonce.as_bytes());
        server_first.extend_from_slice(b",s=");
        server_first.extend_from_slice(BASE64.encode(&self.secret.salt).as_bytes());
        server_first.extend_from_slice(format!(",i={}", self.secret.iterations).as_bytes());

        self.state = State::ServerFirstSent(FirstExchange {
            expected_cbind: BASE64.encode(expected_cbind).into_bytes(),
            bound: plus,
            client_nonce: first.client_nonce.to_vec(),
            client_first_bare: first.bare.to_vec(),
            server_first: server_first.clone(),
        });
        Ok(server_first)
    }

    /// Handle `SASLResponse`: the client-final-message. On success returns the
    /// server-final-message (`v=<ServerSignature>`), to send in `AuthenticationSASLFinal`
    /// before `AuthenticationOk`.
    pub fn client_final(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let first = match std::mem::replace(&mut self.state, State::Failed) {
            State::ServerFirstSent(first) => first,
            State::Initial => {
                return Err(AuthError::InvalidState(
                    "client-final-message before client-first-message",
                ))
            }
            ended @ (State::Authenticated | State::Failed) => {
                self.state = ended;
                return Err(AuthError::InvalidState(
                    "client-final-message after the exchange ended",
                ));
            }
        };
        let fin = parse_client_final(data)?;

        // "biws" for "n,,", "eSws" for "y,,", more with binding data.
        if fin.channel_binding != first.expected_cbind {
            return Err(match first.bound {
                true => AuthError::ChannelBindingCheckFailed,
                false => AuthError::ChannelBindingMismatch,
            });
        }

        let nonce_ok = match fin.nonce.split_at_checked(first.client_nonce.len()) {
            Some((client_part, server_part)) => {
                // Both compared in full (no short-circuit) and in constant time.
                let client_ok = ct_eq(client_part, &first.client_nonce);
                let server_ok = ct_eq(server_part, self.server_nonce.as_bytes());
                client_ok & server_ok
            }
            None => false,
        };
        if !nonce_ok {
            return Err(AuthError::NonceMismatch);
        }

        let auth_message: [&[u8]; 5] = [
            &first.client_first_bare,
            b",",
            &first.server_first,
            b",",
            fin.without_proof,
        ];

        // Always compute the proof, even for a mock secret, so that timing does not
        // reveal whether the user exists.
        let client_signature = hmac(&self.secret.stored_key, &auth_message);
        let mut client_key = [0u8; KEY_LEN];
        for (k, (p, s)) in client_key
            .iter_mut()
            .zip(fin.proof.iter().zip(client_signature.iter()))
        {
            *k = p ^ s;
        }
        let computed_stored_key: [u8; KEY_LEN] = Sha256::digest(client_key).into();
        let proof_ok = ct_eq(&computed_stored_key, &self.secret.stored_key);
        if !proof_ok || self.secret.doomed {
            return Err(AuthError::WrongProof);
        }

        let server_signature = hmac(&self.secret.server_key, &auth_message);
        let mut server_final = b"v=".to_vec();
        server_final.extend_from_slice(BASE64.encode(server_signature).as_bytes());
        self.state = State::Authenticated;
        Ok(server_final)
    }

    /// True once [`ScramServer::client_final`] has accepted the client's proof.
    /// Stays true if the client then sends further (refused) messages.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, State::Authenticated)
    }

    /// End the exchange after an error, keeping a completed authentication as it is.
    fn fail(&mut self) {
        if !matches!(self.state, State::Authenticated) {
            self.state = State::Failed;
        }
    }
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Initial => "initial",
            State::ServerFirstSent(_) => "server-first sent",
            State::Authenticated => "authenticated",
            State::Failed => "failed",
        };
        f.debug_struct("ScramServer")
            .field("secret", &self.secret)
            .field("state", &state)
            .finish()
    }
}

/// Prepare a password as PostgreSQL's `pg_saslprep` + fallback does: ASCII as is;
/// otherwise SASLprep (RFC 4013), falling back to the raw bytes when the password
/// contains prohibited characters or maps to nothing.
fn saslprep(password: &str) -> Vec<u8> {
    if password.is_ascii() {
        return password.as_bytes().to_vec();
    }
    match stringprep::saslprep(password) {
        Ok(prepared) if !prepared.is_empty() => prepared.into_owned().into_bytes(),
        _ => password.as_bytes().to_vec(),
    }
}

/// HMAC-SHA-256 over the concatenation of `parts`.
fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; KEY_LEN] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn decode_key(b64: &str) -> Option<[u8; KEY_LEN]> {
    decode_key_bytes(b64.as_bytes())
}

/// Decode base64 that must hold exactly 32 bytes.
fn decode_key_bytes(b64: &[u8]) -> Option<[u8; KEY_LEN]> {
    let bytes = BASE64.decode(b64).ok()?;
    bytes.try_into().ok()
}

/// Compare without an early exit, so timing does not reveal where two values differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests;
