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
//! - no channel binding: gs2 flags `n` and `y` are accepted, `p=` and
//!   `SCRAM-SHA-256-PLUS` are refused with [`AuthError::ChannelBindingNotSupported`];
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

use super::error::{sanitize, sanitize_byte, AuthError};

/// SASL mechanism name of SCRAM-SHA-256 without channel binding.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// SASL mechanism name of SCRAM-SHA-256 with channel binding (not supported).
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";
/// The mechanisms to list in `AuthenticationSASL`, in order of preference.
pub const MECHANISMS: &[&str] = &[SCRAM_SHA_256];
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
    /// gs2 channel-binding flag sent by the client: `b'n'` or `b'y'`.
    cbind_flag: u8,
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
        }
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
        if mechanism == SCRAM_SHA_256_PLUS {
            return Err(AuthError::ChannelBindingNotSupported);
        }
        if mechanism != SCRAM_SHA_256 {
            return Err(AuthError::UnsupportedMechanism(sanitize(
                mechanism.as_bytes(),
            )));
        }
        let first = parse_client_first(data)?;

        let mut server_first = Vec::with_capacity(64);
        server_first.extend_from_slice(b"r=");
        server_first.extend_from_slice(first.client_nonce);
        server_first.extend_from_slice(self.server_nonce.as_bytes());
        server_first.extend_from_slice(b",s=");
        server_first.extend_from_slice(BASE64.encode(&self.secret.salt).as_bytes());
        server_first.extend_from_slice(format!(",i={}", self.secret.iterations).as_bytes());

        self.state = State::ServerFirstSent(FirstExchange {
            cbind_flag: first.cbind_flag,
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

        let expected_cbind: &[u8] = if first.cbind_flag == b'y' {
            b"eSws" // base64("y,,")
        } else {
            b"biws" // base64("n,,")
        };
        if fin.channel_binding != expected_cbind {
            return Err(AuthError::ChannelBindingMismatch);
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

/// The parts of client-first-message the server needs.
struct ClientFirst<'a> {
    cbind_flag: u8,
    /// client-first-message-bare: everything after the gs2 header.
    bare: &'a [u8],
    client_nonce: &'a [u8],
}

/// The parts of client-final-message the server needs.
struct ClientFinal<'a> {
    channel_binding: &'a [u8],
    nonce: &'a [u8],
    /// client-final-message-without-proof: everything before `,p=`.
    without_proof: &'a [u8],
    proof: [u8; KEY_LEN],
}

/// Parse `gs2-header client-first-message-bare` (RFC 5802 section 7).
fn parse_client_first(data: &[u8]) -> Result<ClientFirst<'_>, AuthError> {
    check_message(data)?;

    let cbind_flag = match data.first() {
        Some(&flag @ (b'n' | b'y')) => {
            if data.get(1) != Some(&b',') {
                return Err(AuthError::malformed(format!(
                    "comma expected after the channel-binding flag, found {}",
                    sanitize_byte(data.get(1))
                )));
            }
            flag
        }
        Some(b'p') => return Err(AuthError::ChannelBindingNotSupported),
        other => {
            return Err(AuthError::malformed(format!(
                "unexpected channel-binding flag {}",
                sanitize_byte(other)
            )))
        }
    };
    // data[2..] starts with the optional authzid, then ','.
    match data.get(2) {
        Some(b',') => {}
        Some(b'a') => return Err(AuthError::AuthzidNotSupported),
        other => {
            return Err(AuthError::malformed(format!(
                "unexpected attribute {} in client-first-message",
                sanitize_byte(other)
            )))
        }
    }
    let bare = data.get(3..).unwrap_or_default();
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
        cbind_flag,
        bare,
        client_nonce,
    })
}

/// Parse `c=<cbind>,r=<nonce>[,extensions],p=<proof>` (RFC 5802 section 7).
fn parse_client_final(data: &[u8]) -> Result<ClientFinal<'_>, AuthError> {
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
fn check_message(data: &[u8]) -> Result<(), AuthError> {
    if data.is_empty() {
        return Err(AuthError::malformed("the message is empty"));
    }
    if data.contains(&0) {
        return Err(AuthError::malformed("the message contains a NUL byte"));
    }
    Ok(())
}

/// Reads `attr=value` pairs separated by ','.
struct Cursor<'a> {
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
fn is_printable(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && b != b','
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
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Low iteration count for tests that do not care about it (PBKDF2 is slow in debug).
    const FAST: u32 = 64;
    const NONCE: [u8; SERVER_NONCE_LEN] = [7; SERVER_NONCE_LEN];

    fn fast_secret(password: &str) -> ScramSecret {
        ScramSecret::from_password(password, b"0123456789abcdef", FAST)
    }

    /// Run a whole exchange between `server` and postgres-protocol's client. On success,
    /// also checks that the client accepts the server's signature.
    fn exchange(
        mut server: ScramServer,
        password: &str,
        binding: ChannelBinding,
    ) -> Result<(), AuthError> {
        let mut client = ScramSha256::new(password.as_bytes(), binding);
        let server_first = server.client_first(SCRAM_SHA_256, client.message())?;
        client
            .update(&server_first)
            .expect("client accepts server-first-message");
        let server_final = server.client_final(client.message())?;
        client
            .finish(&server_final)
            .expect("client accepts the server signature");
        assert!(server.is_authenticated());
        Ok(())
    }

    fn login(secret: ScramSecret, password: &str) -> Result<(), AuthError> {
        exchange(
            ScramServer::with_random_nonce(secret),
            password,
            ChannelBinding::unsupported(),
        )
    }

    /// A real client's first and final messages against a server with `NONCE`.
    fn transcript(password: &str, secret: &ScramSecret) -> (Vec<u8>, Vec<u8>) {
        let mut server = ScramServer::new(secret.clone(), NONCE);
        let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let first = client.message().to_vec();
        let server_first = server
            .client_first(SCRAM_SHA_256, &first)
            .expect("valid client-first-message");
        client.update(&server_first).expect("valid server-first");
        (first, client.message().to_vec())
    }

    /// A fresh server (same `NONCE`) that has answered `first`: it expects exactly the
    /// final message of the client that produced `first`.
    fn server_after(first: &[u8], secret: &ScramSecret) -> ScramServer {
        let mut server = ScramServer::new(secret.clone(), NONCE);
        server
            .client_first(SCRAM_SHA_256, first)
            .expect("valid client-first-message");
        server
    }

    /// A server that has answered a real client's first message, plus that client's
    /// final message (for tampering tests).
    fn server_after_first(password: &str, secret: ScramSecret) -> (ScramServer, Vec<u8>) {
        let (first, fin) = transcript(password, &secret);
        (server_after(&first, &secret), fin)
    }

    fn replace(haystack: &[u8], from: &str, to: &str) -> Vec<u8> {
        let text = std::str::from_utf8(haystack).expect("client messages are ASCII");
        assert!(text.contains(from), "{text} does not contain {from}");
        text.replacen(from, to, 1).into_bytes()
    }

    #[test]
    fn right_password_authenticates() {
        login(fast_secret("correct horse"), "correct horse").expect("login");
    }

    #[test]
    fn wrong_password_fails_with_wrong_proof() {
        let err = login(fast_secret("correct horse"), "battery staple").unwrap_err();
        assert_eq!(err, AuthError::WrongProof);
        assert_eq!(err.sqlstate(), "28P01");
        assert!(err.is_wrong_password());
    }

    #[test]
    fn empty_password_round_trips() {
        login(fast_secret(""), "").expect("login");
        assert_eq!(login(fast_secret(""), "x"), Err(AuthError::WrongProof));
    }

    #[test]
    fn gs2_flag_y_is_accepted() {
        // ChannelBinding::unrequested() sends "y,," and then c=eSws.
        let server = ScramServer::new(fast_secret("pw"), NONCE);
        exchange(server, "pw", ChannelBinding::unrequested()).expect("login with y,,");
    }

    #[test]
    fn postgres_verifier_authenticates() {
        // A verifier as PostgreSQL stores it, made by an independent implementation.
        let verifier = postgres_protocol::password::scram_sha_256(b"s3cret!");
        let secret = ScramSecret::parse(&verifier).expect("parse verifier");
        assert_eq!(secret.iterations(), 4096);
        assert_eq!(secret.salt().len(), 16);
        assert!(!secret.is_mock());
        login(secret.clone(), "s3cret!").expect("login");
        assert_eq!(login(secret, "s3cret"), Err(AuthError::WrongProof));
    }

    #[test]
    fn from_password_matches_postgres_verifier() {
        let verifier = postgres_protocol::password::scram_sha_256(b"hunter2");
        let parsed = ScramSecret::parse(&verifier).expect("parse");
        let derived = ScramSecret::from_password("hunter2", parsed.salt(), parsed.iterations());
        assert_eq!(derived, parsed);
        assert_eq!(derived.to_verifier(), verifier);
    }

    #[test]
    fn saslprep_matches_postgres_protocol() {
        // Non-ASCII passwords go through SASLprep on both sides; one with prohibited
        // characters (ASCII control) falls back to raw bytes on both sides.
        for password in [
            "pässwörd",
            "I\u{00AD}X",
            "\u{2168}",
            "a\u{00A0}b",
            "bell\u{7}",
            "日本語",
        ] {
            let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
            let parsed = ScramSecret::parse(&verifier).expect("parse");
            let derived = ScramSecret::from_password(password, parsed.salt(), parsed.iterations());
            assert_eq!(derived, parsed, "password {password:?}");
        }
    }

    #[test]
    fn saslprep_equivalent_passwords_authenticate() {
        // RFC 4013: soft hyphen maps to nothing, NFKC maps U+2168 to "IX",
        // no-break space maps to space.
        let secret = ScramSecret::from_password("I\u{00AD}X", b"salt", FAST);
        login(secret.clone(), "IX").expect("IX");
        login(secret, "\u{2168}").expect("roman numeral nine");
        let secret = ScramSecret::from_password("a\u{00A0}b", b"salt", FAST);
        login(secret, "a b").expect("no-break space");
        // A password that SASLprep maps to nothing is used as raw bytes (pg_saslprep
        // refuses empty output). postgres-protocol's client would send "" here instead,
        // so check the derivation directly.
        let mapped_away = ScramSecret::from_password("\u{00AD}", b"salt", FAST);
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>("\u{00AD}".as_bytes(), b"salt", FAST, &mut salted);
        assert_eq!(mapped_away.server_key(), &hmac(&salted, &[b"Server Key"]));
        assert_ne!(mapped_away, ScramSecret::from_password("", b"salt", FAST));
    }

    #[test]
    fn rfc7677_test_vector() {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("salt");
        let secret = ScramSecret::from_password("pencil", &salt, 4096);
        let mut server = ScramServer::with_nonce_text(secret, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
        let server_first = server
            .client_first(SCRAM_SHA_256, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
            .expect("client-first");
        assert_eq!(
            server_first,
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let server_final = server
            .client_final(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                  p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            )
            .expect("client-final");
        assert_eq!(
            server_final,
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        assert!(server.is_authenticated());
    }

    #[test]
    fn server_first_message_format() {
        let secret = ScramSecret::from_password("pw", &[1, 2, 3], 4096);
        let mut server = ScramServer::new(secret, [0xfb; SERVER_NONCE_LEN]);
        let reply = server
            .client_first(SCRAM_SHA_256, b"n,,n=,r=clientnonce")
            .expect("client-first");
        // 18 nonce bytes become 24 base64 characters.
        assert_eq!(
            reply,
            b"r=clientnonce+/v7+/v7+/v7+/v7+/v7+/v7,s=AQID,i=4096".to_vec()
        );
    }

    #[test]
    fn username_in_client_first_is_ignored() {
        // PostgreSQL authenticates the startup user; whatever n= says does not matter
        // (libpq and postgres-protocol send an empty one).
        let salt = b"salt";
        let secret = ScramSecret::from_password("pencil", salt, FAST);
        for bare in [&b"n=mallory,r=abc"[..], b"n=,r=abc", b"n=a=2Cb,r=abc"] {
            let mut server = ScramServer::new(secret.clone(), NONCE);
            let mut first = b"n,,".to_vec();
            first.extend_from_slice(bare);
            let server_first = server.client_first(SCRAM_SHA_256, &first).expect("first");
            let fin = manual_client_final("pencil", salt, FAST, bare, &server_first);
            server.client_final(&fin).expect("any n= is fine");
        }
    }

    /// A hand-made client-final-message (independent of the server code paths).
    fn manual_client_final(
        password: &str,
        salt: &[u8],
        iterations: u32,
        client_first_bare: &[u8],
        server_first: &[u8],
    ) -> Vec<u8> {
        let text = std::str::from_utf8(server_first).expect("ascii");
        let nonce = text
            .strip_prefix("r=")
            .and_then(|t| t.split(',').next())
            .expect("nonce");
        let without_proof = format!("c=biws,r={nonce}");
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut salted);
        let client_key = hmac(&salted, &[b"Client Key"]);
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let sig = hmac(
            &stored_key,
            &[
                client_first_bare,
                b",",
                server_first,
                b",",
                without_proof.as_bytes(),
            ],
        );
        let proof: Vec<u8> = client_key.iter().zip(sig).map(|(a, b)| a ^ b).collect();
        format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes()
    }

    #[test]
    fn mock_secret_runs_exchange_and_fails_like_wrong_password() {
        let mock = ScramSecret::mock("nobody");
        assert!(mock.is_mock());
        assert_eq!(mock.iterations(), DEFAULT_ITERATIONS);
        assert_eq!(mock.salt().len(), DEFAULT_SALT_LEN);
        // Stable per user within the process, different between users.
        assert_eq!(ScramSecret::mock("nobody").salt(), mock.salt());
        assert_ne!(ScramSecret::mock("somebody").salt(), mock.salt());

        let unknown = login(mock, "whatever").unwrap_err();
        let wrong = login(fast_secret("right"), "wrong").unwrap_err();
        assert_eq!(unknown, wrong);
        assert_eq!(unknown.to_string(), wrong.to_string());
    }

    #[test]
    fn mock_with_key_is_deterministic_and_doomed() {
        let a = ScramSecret::mock_with_key("alice", b"key");
        assert_eq!(a, ScramSecret::mock_with_key("alice", b"key"));
        assert_ne!(
            a.salt(),
            ScramSecret::mock_with_key("alice", b"other").salt()
        );
        let digest = Sha256::digest(b"alicekey");
        assert_eq!(a.salt(), &digest[..16]);

        // Even a proof that matches the mock keys is refused: the exchange is doomed.
        let mut server = ScramServer::new(a, NONCE);
        let server_first = server
            .client_first(SCRAM_SHA_256, b"n,,n=,r=abc")
            .expect("first");
        let text = std::str::from_utf8(&server_first).expect("ascii");
        let nonce = text[2..].split(',').next().expect("nonce");
        let without_proof = format!("c=biws,r={nonce}");
        // With StoredKey = 0 no ClientKey hashes to it, but also try the "natural"
        // forgery: proof = ClientSignature (ClientKey = 0).
        let sig = hmac(
            &[0; 32],
            &[
                b"n=,r=abc",
                b",",
                &server_first,
                b",",
                without_proof.as_bytes(),
            ],
        );
        let fin = format!("{without_proof},p={}", BASE64.encode(sig));
        assert_eq!(
            server.client_final(fin.as_bytes()),
            Err(AuthError::WrongProof)
        );
    }

    #[test]
    fn generate_makes_random_salted_secrets() {
        let a = ScramSecret::generate("pw");
        let b = ScramSecret::generate("pw");
        assert_ne!(a.salt(), b.salt());
        assert_eq!(a.salt().len(), DEFAULT_SALT_LEN);
        assert_eq!(a.iterations(), DEFAULT_ITERATIONS);
        assert_eq!(ScramSecret::parse(&a.to_verifier()), Ok(a.clone()));
        login(a, "pw").expect("login");
    }

    #[test]
    fn zero_iterations_means_default() {
        let secret = ScramSecret::from_password("pw", b"s", 0);
        assert_eq!(secret.iterations(), DEFAULT_ITERATIONS);
    }

    #[test]
    fn verifier_round_trip_and_from_str() {
        let verifier = postgres_protocol::password::scram_sha_256(b"x");
        let secret: ScramSecret = verifier.parse().expect("FromStr");
        assert_eq!(secret.to_verifier(), verifier);
        assert_eq!(ScramSecret::parse(&format!("  {verifier}\n")), Ok(secret));
    }

    #[test]
    fn invalid_verifiers_are_rejected() {
        let key = BASE64.encode([1u8; 32]);
        let short = BASE64.encode([1u8; 31]);
        let cases = [
            String::new(),
            "md5abcdef".to_string(),
            "plaintext password".to_string(),
            "SCRAM-SHA-256".to_string(),
            "SCRAM-SHA-256$4096".to_string(),
            "SCRAM-SHA-256$4096:c2FsdA==".to_string(),
            format!("SCRAM-SHA-256$4096:c2FsdA==${key}"),
            format!("SCRAM-SHA-1$4096:c2FsdA==${key}:{key}"),
            format!("scram-sha-256$4096:c2FsdA==${key}:{key}"),
            format!("SCRAM-SHA-256$abc:c2FsdA==${key}:{key}"),
            format!("SCRAM-SHA-256$0:c2FsdA==${key}:{key}"),
            format!("SCRAM-SHA-256$-1:c2FsdA==${key}:{key}"),
            format!("SCRAM-SHA-256$99999999999:c2FsdA==${key}:{key}"),
            format!("SCRAM-SHA-256$4096:c2Fsd!==${key}:{key}"),
            format!("SCRAM-SHA-256$4096:c2FsdA==${short}:{key}"),
            format!("SCRAM-SHA-256$4096:c2FsdA==${key}:{short}"),
            format!("SCRAM-SHA-256$4096:c2FsdA==${key}:not base64"),
            format!("SCRAM-SHA-256$4096:c2FsdA==${key}:{key}:{key}"),
        ];
        for case in cases {
            let err = ScramSecret::parse(&case).unwrap_err();
            assert!(
                matches!(err, AuthError::InvalidSecret(_)),
                "{case:?} gave {err:?}"
            );
        }
    }

    #[test]
    fn debug_does_not_leak_keys() {
        let secret = fast_secret("pw");
        let debug = format!("{secret:?}");
        assert!(debug.contains("<redacted>"));
        assert!(!debug.contains(&BASE64.encode(secret.stored_key())));
        assert!(!debug.contains(&BASE64.encode(secret.server_key())));
        let server = ScramServer::new(secret, NONCE);
        assert!(!format!("{server:?}").contains(&BASE64.encode(NONCE)));
    }

    #[test]
    fn channel_binding_is_refused() {
        let mut server = ScramServer::new(fast_secret("pw"), NONCE);
        let err = server
            .client_first(SCRAM_SHA_256, b"p=tls-server-end-point,,n=,r=abc")
            .unwrap_err();
        assert_eq!(err, AuthError::ChannelBindingNotSupported);
        assert_eq!(err.sqlstate(), "08P01");

        let mut server = ScramServer::new(fast_secret("pw"), NONCE);
        let err = server
            .client_first(SCRAM_SHA_256_PLUS, b"p=tls-server-end-point,,n=,r=abc")
            .unwrap_err();
        assert_eq!(err, AuthError::ChannelBindingNotSupported);

        // The real client asking for tls-server-end-point binding.
        let client = ScramSha256::new(b"pw", ChannelBinding::tls_server_end_point(vec![1; 32]));
        let mut server = ScramServer::new(fast_secret("pw"), NONCE);
        assert_eq!(
            server.client_first(SCRAM_SHA_256, client.message()),
            Err(AuthError::ChannelBindingNotSupported)
        );
    }

    #[test]
    fn unsupported_mechanisms_are_refused() {
        for mech in [
            "PLAIN",
            "SCRAM-SHA-1",
            "scram-sha-256",
            "",
            "SCRAM-SHA-256\u{e9}",
        ] {
            let mut server = ScramServer::new(fast_secret("pw"), NONCE);
            let err = server.client_first(mech, b"n,,n=,r=abc").unwrap_err();
            assert!(matches!(err, AuthError::UnsupportedMechanism(_)), "{mech}");
            assert!(err.to_string().is_ascii(), "message is sanitised: {err}");
        }
    }

    #[test]
    fn malformed_client_first_messages() {
        use AuthError::*;
        let malformed = |e: &AuthError| matches!(e, MalformedMessage(_));
        type Check = fn(&AuthError) -> bool;
        let cases: &[(&[u8], Check)] = &[
            (b"", malformed),
            (b"n", malformed),
            (b"n,", malformed),
            (b"n,,", malformed),
            (b"nn,,n=,r=abc", malformed),
            (b"x,,n=,r=abc", malformed),
            (b",,n=,r=abc", malformed),
            (b"n,x,n=,r=abc", malformed),
            (b"n,,r=abc", malformed),
            (b"n,,n=", malformed),
            (b"n,,n=,", malformed),
            (b"n,,n=,r", malformed),
            (b"n,,n=,r=", malformed),
            (b"n,,n=,x=abc", malformed),
            (b"n,,n=,r=ab\x01c", malformed),
            (b"n,,n=,r=ab c", malformed),
            (b"n,,n=,r=ab\xc3\xa9c", malformed),
            (b"n,,n=,r=abc\0", malformed),
            (b"n,,n=,r=abc,1=x", malformed),
            (b"n,,n=,r=abc,ext", malformed),
            (b"n,,n=,r=abc,x", malformed),
            (b"n,,n=,r=abc,,", malformed),
            (b"n,a=bob,n=,r=abc", |e| *e == AuthzidNotSupported),
            (b"y,a=bob,n=,r=abc", |e| *e == AuthzidNotSupported),
            (b"n,,m=ext,n=,r=abc", |e| *e == ExtensionNotSupported),
            (b"p=tls-unique,,n=,r=abc", |e| {
                *e == ChannelBindingNotSupported
            }),
        ];
        for (input, expected) in cases {
            let mut server = ScramServer::new(fast_secret("pw"), NONCE);
            let err = server.client_first(SCRAM_SHA_256, input).unwrap_err();
            assert!(
                expected(&err),
                "{:?} gave {err:?}",
                String::from_utf8_lossy(input)
            );
            assert!(err.to_string().is_ascii(), "message is sanitised: {err}");
        }
    }

    #[test]
    fn client_first_extensions_and_trailing_comma_are_accepted() {
        for input in [
            &b"n,,n=,r=abc,x=y"[..],
            b"n,,n=,r=abc,x=y,z=",
            b"n,,n=,r=abc,",
            b"n,,n=user\xc3\xa9=2C,r=abc",
        ] {
            let mut server = ScramServer::new(fast_secret("pw"), NONCE);
            server
                .client_first(SCRAM_SHA_256, input)
                .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(input)));
        }
    }

    #[test]
    fn channel_binding_attribute_must_match_gs2_header() {
        let (mut server, fin) = server_after_first("pw", fast_secret("pw"));
        let tampered = replace(&fin, "c=biws", "c=eSws");
        assert_eq!(
            server.client_final(&tampered),
            Err(AuthError::ChannelBindingMismatch)
        );

        let (mut server, fin) = server_after_first("pw", fast_secret("pw"));
        let tampered = replace(&fin, "c=biws", "c=cD10bHMtc2VydmVyLWVuZC1wb2ludCws");
        assert_eq!(
            server.client_final(&tampered),
            Err(AuthError::ChannelBindingMismatch)
        );
    }

    #[test]
    fn wrong_nonce_is_refused() {
        let secret = fast_secret("pw");
        let (first, fin) = transcript("pw", &secret);
        let text = String::from_utf8(fin.clone()).expect("ascii");
        let nonce = text
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .expect("nonce")
            .to_string();
        let client_nonce_len = nonce.len() - BASE64.encode(NONCE).len();
        let variants = [
            nonce[..nonce.len() - 1].to_string(),      // truncated
            format!("{nonce}x"),                       // extended
            format!("X{}", &nonce[1..]),               // client part changed
            format!("{}X", &nonce[..nonce.len() - 1]), // server part changed
            nonce[..client_nonce_len].to_string(),     // server part missing
            nonce[client_nonce_len..].to_string(),     // client part missing
            "x".to_string(),
        ];
        for bad in variants {
            let mut server = server_after(&first, &secret);
            let tampered = replace(&fin, &format!("r={nonce}"), &format!("r={bad}"));
            assert_eq!(
                server.client_final(&tampered),
                Err(AuthError::NonceMismatch),
                "{bad}"
            );
        }
        // The untouched message authenticates.
        let mut server = server_after(&first, &secret);
        server.client_final(&fin).expect("login");
        // An empty r= is a nonce mismatch too (it parses).
        let mut server = server_after(&first, &secret);
        let tampered = replace(&fin, &format!("r={nonce}"), "r=");
        assert_eq!(
            server.client_final(&tampered),
            Err(AuthError::NonceMismatch)
        );
    }

    #[test]
    fn malformed_client_final_messages() {
        let secret = fast_secret("pw");
        let (first, fin) = transcript("pw", &secret);
        let text = String::from_utf8(fin).expect("ascii");
        let (without_proof, proof) = text.rsplit_once(",p=").expect("proof");
        let cases: Vec<String> = vec![
            String::new(),
            "c=biws".to_string(),
            without_proof.to_string(),
            format!("{without_proof},"),
            format!("{without_proof},p="),
            format!("{without_proof},p=!!!!"),
            format!("{without_proof},p={}", &proof[..proof.len() - 1]),
            format!("{without_proof},p={}", BASE64.encode([0u8; 31])),
            format!("{without_proof},p={}", BASE64.encode([0u8; 33])),
            format!("{without_proof},p={proof},x=y"),
            format!("{without_proof},p={proof}\0"),
            format!("{without_proof},1=x,p={proof}"),
            format!("{without_proof},ext,p={proof}"),
            format!("r=abc,{without_proof},p={proof}"),
            without_proof.replacen("c=biws,", "", 1) + ",p=" + proof,
            format!("c=biws,p={proof}"),
            format!("C=biws{}", &text[6..]),
        ];
        for case in cases {
            let mut server = server_after(&first, &secret);
            let err = server.client_final(case.as_bytes()).unwrap_err();
            assert!(
                matches!(err, AuthError::MalformedMessage(_)),
                "{case:?} gave {err:?}"
            );
            assert_eq!(err.sqlstate(), "08P01");
        }
    }

    #[test]
    fn trailing_comma_after_proof_is_tolerated_like_postgres() {
        // PostgreSQL's parser consumes the ',' with the proof and then sees the end.
        let secret = fast_secret("pw");
        let (first, mut fin) = transcript("pw", &secret);
        fin.push(b',');
        server_after(&first, &secret)
            .client_final(&fin)
            .expect("login");
    }

    #[test]
    fn extensions_before_proof_are_part_of_the_transcript() {
        // An extension is parsed and ignored, but it is part of client-final-without-proof,
        // so a proof computed without it fails: the transcript is bound.
        let (mut server, fin) = server_after_first("pw", fast_secret("pw"));
        let tampered = replace(&fin, ",p=", ",x=ext,p=");
        assert_eq!(server.client_final(&tampered), Err(AuthError::WrongProof));
    }

    #[test]
    fn flipped_proof_bit_fails() {
        let (mut server, fin) = server_after_first("pw", fast_secret("pw"));
        let text = String::from_utf8(fin).expect("ascii");
        let (without_proof, proof) = text.rsplit_once(",p=").expect("proof");
        let mut raw = BASE64.decode(proof).expect("proof");
        raw[31] ^= 1;
        let tampered = format!("{without_proof},p={}", BASE64.encode(raw));
        assert_eq!(
            server.client_final(tampered.as_bytes()),
            Err(AuthError::WrongProof)
        );
    }

    #[test]
    fn every_truncation_of_valid_messages_fails_cleanly() {
        let secret = fast_secret("pw");
        let (first, fin) = transcript("pw", &secret);
        for len in 0..first.len() {
            let mut server = ScramServer::new(secret.clone(), NONCE);
            // "n,,n=,r=<nonce>": a cut inside the nonce still parses (a shorter nonce),
            // and then cannot match the client's final message.
            let prefix = &first[..len];
            match server.client_first(SCRAM_SHA_256, prefix) {
                Ok(_) => {
                    assert!(len > b"n,,n=,r=".len(), "{prefix:?}");
                    assert_eq!(server.client_final(&fin), Err(AuthError::NonceMismatch));
                }
                Err(err) => assert!(matches!(err, AuthError::MalformedMessage(_)), "{err:?}"),
            }
        }
        for len in 0..fin.len() {
            let mut server = server_after(&first, &secret);
            assert!(server.client_final(&fin[..len]).is_err(), "len {len}");
            assert!(!server.is_authenticated());
        }
    }

    #[test]
    fn messages_out_of_order_are_refused() {
        let mut server = ScramServer::new(fast_secret("pw"), NONCE);
        assert!(matches!(
            server.client_final(b"c=biws,r=abc,p=AAAA"),
            Err(AuthError::InvalidState(_))
        ));
        // The exchange is over after any error.
        assert!(matches!(
            server.client_first(SCRAM_SHA_256, b"n,,n=,r=abc"),
            Err(AuthError::InvalidState(_))
        ));

        let mut server = ScramServer::new(fast_secret("pw"), NONCE);
        server
            .client_first(SCRAM_SHA_256, b"n,,n=,r=abc")
            .expect("first");
        assert!(matches!(
            server.client_first(SCRAM_SHA_256, b"n,,n=,r=abc"),
            Err(AuthError::InvalidState(_))
        ));
        assert!(matches!(
            server.client_final(b"c=biws,r=abc,p=AAAA"),
            Err(AuthError::InvalidState(_))
        ));

        // After success, nothing more is accepted.
        let (mut server, fin) = server_after_first("pw", fast_secret("pw"));
        server.client_final(&fin).expect("login");
        assert!(server.is_authenticated());
        assert!(matches!(
            server.client_final(&fin),
            Err(AuthError::InvalidState(_))
        ));
        assert!(server.is_authenticated());

        // After a wrong proof, a retry is refused.
        let (mut server, fin) = server_after_first("other", fast_secret("pw"));
        assert_eq!(server.client_final(&fin), Err(AuthError::WrongProof));
        assert!(matches!(
            server.client_final(&fin),
            Err(AuthError::InvalidState(_))
        ));
        assert!(!server.is_authenticated());
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = StdRng::seed_from_u64(0x5eed);
        const ALPHABET: &[u8] = b"nyp,=rcmaxv01+/biwsS\0\xff";
        let secret = fast_secret("pw");
        for _ in 0..20_000 {
            let len = rng.gen_range(0..48);
            let input: Vec<u8> = (0..len)
                .map(|_| {
                    if rng.gen_bool(0.8) {
                        ALPHABET[rng.gen_range(0..ALPHABET.len())]
                    } else {
                        rng.gen()
                    }
                })
                .collect();
            let mut server = ScramServer::new(secret.clone(), NONCE);
            let _ = server.client_first(SCRAM_SHA_256, &input);
            let mut server = ScramServer::new(secret.clone(), NONCE);
            server
                .client_first(SCRAM_SHA_256, b"n,,n=,r=abc")
                .expect("first");
            assert!(server.client_final(&input).is_err());
        }
    }

    #[test]
    fn mutated_client_final_never_panics_nor_authenticates() {
        let mut rng = StdRng::seed_from_u64(42);
        let secret = fast_secret("pw");
        let mut client = ScramSha256::new(b"pw", ChannelBinding::unsupported());
        let first = client.message().to_vec();
        let mut server = ScramServer::new(secret.clone(), NONCE);
        let server_first = server.client_first(SCRAM_SHA_256, &first).expect("first");
        client.update(&server_first).expect("update");
        let fin = client.message().to_vec();

        for _ in 0..5_000 {
            let mut mutated = fin.clone();
            for _ in 0..rng.gen_range(1..4) {
                match rng.gen_range(0..3) {
                    0 if !mutated.is_empty() => {
                        let i = rng.gen_range(0..mutated.len());
                        let old = mutated[i];
                        while mutated[i] == old {
                            mutated[i] = rng.gen();
                        }
                    }
                    1 if !mutated.is_empty() => {
                        mutated.remove(rng.gen_range(0..mutated.len()));
                    }
                    _ => {
                        let i = rng.gen_range(0..=mutated.len());
                        mutated.insert(i, rng.gen());
                    }
                }
            }
            // Identical, or only a trailing ',' added (tolerated, see above).
            if mutated == fin || mutated.strip_suffix(b",") == Some(&fin[..]) {
                continue;
            }
            let mut server = ScramServer::new(secret.clone(), NONCE);
            server.client_first(SCRAM_SHA_256, &first).expect("first");
            if server.client_final(&mutated).is_ok() {
                // Only changes that leave the transcript intact can pass, e.g. none.
                panic!(
                    "mutated message accepted: {:?}",
                    String::from_utf8_lossy(&mutated)
                );
            }
        }
    }

    #[test]
    fn constant_time_eq_behaves_like_eq() {
        assert!(ct_eq(b"", b""));
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
