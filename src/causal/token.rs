//! The causal token: a client's causal LSN, signed, that another connection (or another
//! pgsplit instance sharing the key) can present to read its writes.
//!
//! A token is a signed cookie value (the `cookie` crate's signed jar: HMAC-SHA256, the MAC
//! in base64 ahead of the payload), so a web application can store it in its user's
//! session cookie as it is. The payload names the cluster — the primary's system identifier
//! and timeline — and the LSN: `c1:<system>:<timeline>:<hi>/<lo>`. A token from another
//! cluster, or from before a failover (another timeline), is never trusted: the WAL
//! positions it speaks of are not this cluster's.
//!
//! Keys come from config (`routing.causal_key`, a file, or the environment; see
//! `config::causal_keys`); the first signs, every one is accepted, so an old key can stay
//! listed while instances change to a new one.

use cookie::{Cookie, CookieJar, Key};
use sha2::{Digest, Sha512};

/// The name a token is signed under (and the ParameterStatus / setting name).
pub const NAME: &str = "pgsplit.causal_token";

/// Which cluster (and which history of it) a WAL position belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterId {
    /// `system_identifier` from `pg_control_system()`: the same on a primary and its
    /// replicas, different for every `initdb`.
    pub system: u64,
    /// The primary's timeline: a promotion starts a new one.
    pub timeline: u32,
}

/// The keys tokens are signed and checked with.
#[derive(Clone)]
pub struct TokenKeys {
    /// Signs new tokens; checks tokens too.
    current: Key,
    /// Still accepted (key rotation).
    old: Vec<Key>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenKeys({} old)", self.old.len())
    }
}

/// Why a presented token is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "the causal token's signature does not match any key of this pgsplit (routing.causal_key)"
    )]
    Signature,
    #[error("the causal token cannot be read")]
    Malformed,
    #[error("the causal token is for another cluster (system identifier {0})")]
    OtherCluster(u64),
    #[error("the causal token is from timeline {0}; the primary is on timeline {1} (a failover happened since)")]
    OtherTimeline(u32, u32),
    #[error("the primary's identity is not known yet, so causal tokens cannot be checked")]
    NoCluster,
}

impl TokenKeys {
    /// Keys from secrets: the first signs, all are accepted.
    pub fn new(current: &str, old: &[String]) -> TokenKeys {
        TokenKeys {
            current: derive(current),
            old: old.iter().map(|s| derive(s)).collect(),
        }
    }

    /// A token for `lsn` in `cluster`.
    pub fn issue(&self, cluster: ClusterId, lsn: u64) -> String {
        let payload = format!(
            "c1:{}:{}:{:X}/{:X}",
            cluster.system,
            cluster.timeline,
            lsn >> 32,
            lsn & 0xFFFF_FFFF
        );
        let mut jar = CookieJar::new();
        jar.signed_mut(&self.current)
            .add(Cookie::new(NAME, payload));
        jar.get(NAME)
            .map(|c| c.value().to_owned())
            .unwrap_or_default()
    }

    /// The LSN a token names, if it is signed by one of the keys and names `cluster`.
    pub fn check(&self, cluster: Option<ClusterId>, token: &str) -> Result<u64, TokenError> {
        let token = token.trim();
        let payload = std::iter::once(&self.current)
            .chain(&self.old)
            .find_map(|key| {
                let jar = CookieJar::new();
                jar.signed(key)
                    .verify(Cookie::new(NAME, token.to_owned()))
                    .map(|c| c.value().to_owned())
            })
            .ok_or(TokenError::Signature)?;
        let (system, timeline, lsn) = parse_payload(&payload).ok_or(TokenError::Malformed)?;
        let cluster = cluster.ok_or(TokenError::NoCluster)?;
        if system != cluster.system {
            return Err(TokenError::OtherCluster(system));
        }
        if timeline != cluster.timeline {
            return Err(TokenError::OtherTimeline(timeline, cluster.timeline));
        }
        Ok(lsn)
    }
}

/// A signing key from a secret of any length (a 64-byte key from its SHA-512).
fn derive(secret: &str) -> Key {
    Key::from(&Sha512::digest(secret.as_bytes()))
}

/// `c1:<system>:<timeline>:<hi>/<lo>`.
fn parse_payload(payload: &str) -> Option<(u64, u32, u64)> {
    let mut parts = payload.split(':');
    if parts.next()? != "c1" {
        return None;
    }
    let system = parts.next()?.parse().ok()?;
    let timeline = parts.next()?.parse().ok()?;
    let (hi, lo) = parts.next()?.split_once('/')?;
    if parts.next().is_some() {
        return None;
    }
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some((system, timeline, (u64::from(hi) << 32) | u64::from(lo)))
}

/// The token a statement carries in a leading comment `/* pgsplit:causal_token=<token> */`
/// (after any whitespace and other leading comments). Cheap for statements without one:
/// only text that starts with a comment is looked at.
pub fn in_comment(sql: &[u8]) -> Option<&str> {
    const MARK: &[u8] = b"pgsplit:causal_token=";
    // Leading comments are short; a long text is not searched for the end of one.
    let mut rest = &sql[..sql.len().min(4096)];
    loop {
        let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
        rest = &rest[start..];
        let body = rest.strip_prefix(b"/*")?;
        let end = body.windows(2).position(|w| w == b"*/")?;
        let inner = body[..end].trim_ascii();
        if let Some(token) = inner.strip_prefix(MARK) {
            return std::str::from_utf8(token).ok().map(str::trim);
        }
        rest = &body[end + 2..];
    }
}

/// Whether `value` may stand as an HTTP cookie value unquoted (RFC 6265 cookie-octets).
pub fn is_cookie_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: ClusterId = ClusterId {
        system: 7_300_000_000_000_000_001,
        timeline: 1,
    };

    #[test]
    fn a_token_names_its_lsn_and_is_a_cookie_value() {
        let keys = TokenKeys::new("a secret", &[]);
        for lsn in [0, 1, 0x1C18_3FE8, u64::MAX] {
            let token = keys.issue(CLUSTER, lsn);
            assert!(is_cookie_value(&token), "{token}");
            assert_eq!(keys.check(Some(CLUSTER), &token), Ok(lsn));
        }
    }

    #[test]
    fn instances_sharing_a_key_accept_each_others_tokens_and_an_old_key_still_counts() {
        let a = TokenKeys::new("shared", &[]);
        let b = TokenKeys::new("shared", &[]);
        let token = a.issue(CLUSTER, 42);
        assert_eq!(b.check(Some(CLUSTER), &token), Ok(42));
        // Rotation: the new key signs, the old one is still accepted.
        let rotated = TokenKeys::new("new", &["shared".to_owned()]);
        assert_eq!(rotated.check(Some(CLUSTER), &token), Ok(42));
        let fresh = rotated.issue(CLUSTER, 43);
        assert_eq!(
            a.check(Some(CLUSTER), &fresh),
            Err(TokenError::Signature),
            "a token signed with the new key is not trusted under the old one alone"
        );
    }

    #[test]
    fn forged_foreign_and_stale_tokens_are_refused() {
        let keys = TokenKeys::new("k", &[]);
        let token = keys.issue(CLUSTER, 0x500);
        let other = TokenKeys::new("another", &[]);
        assert_eq!(
            other.check(Some(CLUSTER), &token),
            Err(TokenError::Signature)
        );
        // A payload changed after signing.
        let forged = token.replace("/500", "/900");
        assert_ne!(forged, token);
        assert_eq!(
            keys.check(Some(CLUSTER), &forged),
            Err(TokenError::Signature)
        );
        for junk in ["", "x", "not a token at all", &token[..20]] {
            assert!(keys.check(Some(CLUSTER), junk).is_err(), "{junk:?}");
        }
        let elsewhere = ClusterId {
            system: 5,
            ..CLUSTER
        };
        assert_eq!(
            keys.check(Some(elsewhere), &token),
            Err(TokenError::OtherCluster(CLUSTER.system))
        );
        let promoted = ClusterId {
            timeline: 2,
            ..CLUSTER
        };
        assert_eq!(
            keys.check(Some(promoted), &token),
            Err(TokenError::OtherTimeline(1, 2))
        );
        assert_eq!(keys.check(None, &token), Err(TokenError::NoCluster));
    }

    #[test]
    fn a_comment_token_is_found_only_in_leading_comments() {
        assert_eq!(
            in_comment(b"/* pgsplit:causal_token=abc= */ SELECT 1"),
            Some("abc=")
        );
        assert_eq!(
            in_comment(b"  /* app */ /*pgsplit:causal_token=t*/SELECT 1"),
            Some("t")
        );
        assert_eq!(in_comment(b"SELECT 1 /* pgsplit:causal_token=t */"), None);
        assert_eq!(in_comment(b"/* pgsplit:primary */ SELECT 1"), None);
        assert_eq!(in_comment(b"/* unterminated pgsplit:causal_token=t"), None);
        assert_eq!(in_comment(b""), None);
    }
}
