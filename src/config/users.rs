//! The `[[databases]]` and `[[users]]` entries: what clients may connect to, as whom, how
//! they prove it, and the credentials pgsplit uses on the servers for them. `Debug` and
//! serialisation hide the passwords.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{hidden, secrets};

/// One `[[databases]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// The name clients connect to. Unique; not `pgsplit`.
    pub name: String,
    /// The database's name on the nodes; defaults to `name`.
    #[serde(default)]
    pub server_database: Option<String>,
}

impl DatabaseConfig {
    /// The database name to use on the nodes.
    pub fn server_database(&self) -> &str {
        self.server_database.as_deref().unwrap_or(&self.name)
    }
}

/// One `[[users]]` entry. `Debug` hides the passwords.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The name clients log in as. Unique.
    pub name: String,
    /// Plaintext, or a stored `SCRAM-SHA-256$...` / `md5...` verifier. Required unless
    /// `auth = "trust"`.
    #[serde(default, serialize_with = "hidden")]
    pub password: Option<String>,
    /// How clients authenticate to pgsplit. Default scram-sha-256.
    #[serde(default)]
    pub auth: ClientAuth,
    /// The user pgsplit logs in as on the nodes; defaults to `name`.
    #[serde(default)]
    pub server_user: Option<String>,
    /// The plaintext password for `server_user`; defaults to `password` when that is
    /// plaintext.
    #[serde(default, serialize_with = "hidden")]
    pub server_password: Option<String>,
    /// `password` read from this file's first line instead (at load and reload).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// `password` read from this environment variable instead.
    #[serde(default)]
    pub password_env: Option<String>,
    /// `server_password` read from this file's first line instead.
    #[serde(default)]
    pub server_password_file: Option<PathBuf>,
    /// `server_password` read from this environment variable instead.
    #[serde(default)]
    pub server_password_env: Option<String>,
}

impl UserConfig {
    /// The user name to log in as on the nodes.
    pub fn server_user(&self) -> &str {
        self.server_user.as_deref().unwrap_or(&self.name)
    }

    /// The password to log in to the nodes with: `server_password`, else `password` when it
    /// is plaintext, else `None` (log in without one).
    pub fn server_password(&self) -> Option<&str> {
        match (&self.server_password, &self.password) {
            (Some(server), _) => Some(server),
            (None, Some(password)) if PasswordKind::of(password) == PasswordKind::Plaintext => {
                Some(password)
            }
            _ => None,
        }
    }

    /// What kind of secret `password` holds, if there is one.
    pub fn password_kind(&self) -> Option<PasswordKind> {
        self.password.as_deref().map(PasswordKind::of)
    }
}

impl fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = secrets::hidden;
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("password", &hidden(&self.password))
            .field("auth", &self.auth)
            .field("server_user", &self.server_user)
            .field("server_password", &hidden(&self.server_password))
            .field("password_file", &self.password_file)
            .field("password_env", &self.password_env)
            .field("server_password_file", &self.server_password_file)
            .field("server_password_env", &self.server_password_env)
            .finish()
    }
}

/// How clients prove who they are to pgsplit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
pub enum ClientAuth {
    /// SCRAM-SHA-256 (`"scram-sha-256"`), the default.
    #[default]
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// MD5 (`"md5"`).
    #[serde(rename = "md5")]
    Md5,
    /// No password at all (`"trust"`).
    #[serde(rename = "trust")]
    Trust,
}

impl ClientAuth {
    /// The spelling used in config.toml.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::ScramSha256 => "scram-sha-256",
            ClientAuth::Md5 => "md5",
            ClientAuth::Trust => "trust",
        }
    }
}

/// What a `password` string holds, by PostgreSQL's own rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PasswordKind {
    /// The password itself.
    Plaintext,
    /// `md5` followed by 32 lowercase hex digits: md5(password || user name).
    Md5Verifier,
    /// Starts with `SCRAM-SHA-256$` (validation also checks the rest of its shape).
    ScramVerifier,
}

impl PasswordKind {
    /// Classifies a password string.
    pub fn of(password: &str) -> PasswordKind {
        let md5_hex =
            |s: &str| s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if password.starts_with("SCRAM-SHA-256$") {
            PasswordKind::ScramVerifier
        } else if password.strip_prefix("md5").is_some_and(md5_hex) {
            PasswordKind::Md5Verifier
        } else {
            PasswordKind::Plaintext
        }
    }

    /// True for the stored verifiers, which cannot log in to a server.
    pub fn is_verifier(self) -> bool {
        self != PasswordKind::Plaintext
    }
}
