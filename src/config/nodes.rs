//! The `[[nodes]]` entries: the PostgreSQL servers pgsplit connects to, how (TLS), and the
//! role each is expected to have at start.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One `[[nodes]]` entry: a PostgreSQL server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Unique name, `[A-Za-z0-9_-]+`, used in logs, metrics and the admin console.
    pub name: String,
    /// Host name or IP address.
    pub host: String,
    /// TCP port. Default 5432; must be 1..=65535.
    #[serde(default = "default_port")]
    pub port: u16,
    /// The role expected at start: primary, replica or auto. At most one node is
    /// `primary`. Roles are discovered by the monitor's checks and followed from then on;
    /// this only says where writes go before the first check.
    pub role: NodeRole,
    /// Share of reads for a node, while it is a replica, relative to the others. Default
    /// 1; must be >= 1.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// TLS to this node, as libpq's `sslmode`. Default disable; production should use
    /// verify-full.
    #[serde(default)]
    pub tls: NodeTlsMode,
    /// PEM file of the CA certificate(s) the node's certificate must chain to. Required
    /// with verify-ca and verify-full, refused with the other modes.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Answer a node that asks for the password in clear text over a link without TLS.
    /// Default false: pgsplit refuses to send it (md5 and SCRAM are not affected).
    #[serde(default)]
    pub allow_cleartext_password: bool,
}

/// How a link to a node uses TLS (`nodes[].tls`), as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeTlsMode {
    /// Plain TCP.
    #[default]
    Disable,
    /// TLS when the node offers it, else plain; the certificate is not checked.
    Prefer,
    /// TLS or no connection; the certificate is not checked.
    Require,
    /// TLS, and the certificate chains to `tls_ca_file`.
    VerifyCa,
    /// TLS, the certificate chains to `tls_ca_file` and names the node's `host`.
    VerifyFull,
}

impl NodeTlsMode {
    /// The spelling used in config.toml.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeTlsMode::Disable => "disable",
            NodeTlsMode::Prefer => "prefer",
            NodeTlsMode::Require => "require",
            NodeTlsMode::VerifyCa => "verify-ca",
            NodeTlsMode::VerifyFull => "verify-full",
        }
    }

    /// True for the modes that check the node's certificate against `tls_ca_file`.
    pub fn verifies(self) -> bool {
        matches!(self, NodeTlsMode::VerifyCa | NodeTlsMode::VerifyFull)
    }
}

fn default_port() -> u16 {
    5432
}

fn default_weight() -> u32 {
    1
}

/// The role a node is expected to have at start (`nodes[].role`). The monitor discovers
/// the real one (see `crate::roles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// Takes writes, and reads when no replica will do.
    Primary,
    /// A streaming replica that takes plain reads while fresh enough.
    Replica,
    /// Whatever the checks find.
    Auto,
}
