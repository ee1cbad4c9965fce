//! MD5 password authentication, server side, as PostgreSQL's `md5_crypt_verify`.
//!
//! The server sends `AuthenticationMD5Password` with a random 4-byte salt; the client
//! answers with a `PasswordMessage` holding
//! `"md5" + hex(md5(hex(md5(password + user)) + salt))`.
//! The server may know the password in plain text or only its stored hash
//! `"md5" + hex(md5(password + user))` (what `pg_authid` holds for md5 roles).

use ::md5::{Digest, Md5};

use super::scram::ScramSecret;

/// Length of a stored md5 hash: `"md5"` + 32 hex digits.
const MD5_PASSWD_LEN: usize = 35;

/// The stored form of a password for md5 authentication:
/// `"md5" + hex(md5(password + user))`, as PostgreSQL keeps it in `pg_authid`.
pub fn md5_password_hash(user: &str, password: &str) -> String {
    let digest = Md5::new()
        .chain_update(password.as_bytes())
        .chain_update(user.as_bytes())
        .finalize();
    format!("md5{}", hex(&digest))
}

/// True if `stored` is an md5 hash rather than a plain password, by PostgreSQL's rule
/// (`get_password_type`): `"md5"` followed by exactly 32 lowercase hex digits.
pub fn is_md5_hash(stored: &str) -> bool {
    stored.len() == MD5_PASSWD_LEN
        && stored.starts_with("md5")
        && stored
            .bytes()
            .skip(3)
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Check a client's md5 `PasswordMessage` body against what the server knows.
///
/// - `stored`: the plain password, or its `"md5<32 hex>"` hash (see [`is_md5_hash`]).
///   An empty password or a SCRAM verifier never matches: like PostgreSQL, you cannot
///   do md5 authentication against a SCRAM secret.
/// - `user`: the user name from the startup message.
/// - `salt`: the 4 bytes sent in `AuthenticationMD5Password`.
/// - `response`: the `PasswordMessage` body, with or without its trailing NUL.
///
/// The comparison runs in constant time.
pub fn verify_md5_response(stored: &str, user: &str, salt: [u8; 4], response: &[u8]) -> bool {
    let response = response.strip_suffix(&[0]).unwrap_or(response);
    if stored.is_empty() || ScramSecret::parse(stored).is_ok() {
        return false;
    }
    let hash = if is_md5_hash(stored) {
        stored.to_string()
    } else {
        md5_password_hash(user, stored)
    };
    let expected = salted_response(&hash, salt);
    let expected = expected.as_bytes();
    if expected.len() != response.len() {
        return false;
    }
    let diff = expected
        .iter()
        .zip(response)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(diff) == 0
}

/// `"md5" + hex(md5(<32 hex of the stored hash> + salt))`: what the client must send.
fn salted_response(stored_hash: &str, salt: [u8; 4]) -> String {
    let hex_part = stored_hash.get(3..).unwrap_or_default();
    let digest = Md5::new()
        .chain_update(hex_part.as_bytes())
        .chain_update(salt)
        .finalize();
    format!("md5{}", hex(&digest))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::md5_hash;

    const SALT: [u8; 4] = [0x9a, 0x01, 0xff, 0x3c];

    #[test]
    fn password_hash_matches_known_postgres_value() {
        // `CREATE ROLE postgres PASSWORD 'postgres'` under password_encryption = md5.
        assert_eq!(
            md5_password_hash("postgres", "postgres"),
            "md53175bce1d3201d16594cebf9d7eb3f9d"
        );
        assert!(is_md5_hash(&md5_password_hash("u", "p")));
    }

    #[test]
    fn accepts_client_response_from_plain_password() {
        let response = md5_hash(b"alice", b"s3cret", SALT);
        assert!(verify_md5_response(
            "s3cret",
            "alice",
            SALT,
            response.as_bytes()
        ));
    }

    #[test]
    fn accepts_response_with_trailing_nul() {
        let mut response = md5_hash(b"alice", b"s3cret", SALT).into_bytes();
        response.push(0);
        assert!(verify_md5_response("s3cret", "alice", SALT, &response));
    }

    #[test]
    fn accepts_client_response_from_stored_hash() {
        let stored = md5_password_hash("alice", "s3cret");
        let response = md5_hash(b"alice", b"s3cret", SALT);
        assert!(verify_md5_response(
            &stored,
            "alice",
            SALT,
            response.as_bytes()
        ));
    }

    #[test]
    fn non_ascii_password_and_user() {
        let response = md5_hash("jösé".as_bytes(), "pässwörd".as_bytes(), SALT);
        assert!(verify_md5_response(
            "pässwörd",
            "jösé",
            SALT,
            response.as_bytes()
        ));
        let stored = md5_password_hash("jösé", "pässwörd");
        assert!(verify_md5_response(
            &stored,
            "jösé",
            SALT,
            response.as_bytes()
        ));
    }

    #[test]
    fn rejects_wrong_password_user_or_salt() {
        let response = md5_hash(b"alice", b"wrong", SALT);
        assert!(!verify_md5_response(
            "s3cret",
            "alice",
            SALT,
            response.as_bytes()
        ));

        // The stored hash is bound to the user name.
        let response = md5_hash(b"bob", b"s3cret", SALT);
        assert!(!verify_md5_response(
            "s3cret",
            "alice",
            SALT,
            response.as_bytes()
        ));
        let stored = md5_password_hash("alice", "s3cret");
        assert!(!verify_md5_response(
            &stored,
            "bob",
            SALT,
            response.as_bytes()
        ));

        // A response for another salt (replay) fails.
        let response = md5_hash(b"alice", b"s3cret", [1, 2, 3, 4]);
        assert!(!verify_md5_response(
            "s3cret",
            "alice",
            SALT,
            response.as_bytes()
        ));
    }

    #[test]
    fn rejects_garbage_responses_without_panicking() {
        let good = md5_hash(b"alice", b"s3cret", SALT);
        let upper = good.to_uppercase();
        let mut doubled_nul = good.clone().into_bytes();
        doubled_nul.extend_from_slice(&[0, 0]);
        let garbage: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            b"md5".to_vec(),
            b"md5zz".to_vec(),
            good.as_bytes()[..good.len() - 1].to_vec(),
            format!("{good}0").into_bytes(),
            upper.into_bytes(),
            good.as_bytes()[3..].to_vec(),
            doubled_nul,
            vec![0xff; 35],
            b"s3cret".to_vec(),
        ];
        for response in garbage {
            assert!(
                !verify_md5_response("s3cret", "alice", SALT, &response),
                "accepted {response:?}"
            );
        }
    }

    #[test]
    fn plain_text_response_equal_to_stored_hash_is_rejected() {
        // Sending the stored hash itself must not work (it is not salted).
        let stored = md5_password_hash("alice", "s3cret");
        assert!(!verify_md5_response(
            &stored,
            "alice",
            SALT,
            stored.as_bytes()
        ));
    }

    #[test]
    fn empty_password_and_scram_secret_never_match() {
        let response = md5_hash(b"alice", b"", SALT);
        assert!(!verify_md5_response("", "alice", SALT, response.as_bytes()));

        let verifier = postgres_protocol::password::scram_sha_256(b"s3cret");
        let response = md5_hash(b"alice", verifier.as_bytes(), SALT);
        assert!(!verify_md5_response(
            &verifier,
            "alice",
            SALT,
            response.as_bytes()
        ));
        let response = md5_hash(b"alice", b"s3cret", SALT);
        assert!(!verify_md5_response(
            &verifier,
            "alice",
            SALT,
            response.as_bytes()
        ));
    }

    #[test]
    fn md5_hash_detection_follows_postgres() {
        assert!(is_md5_hash("md5fffbd1a5d1c5cb5be0a1f5e0a0f5e0a0"));
        // Uppercase hex, wrong length, wrong prefix: PostgreSQL treats these as plain text.
        assert!(!is_md5_hash("md5FFFBD1A5D1C5CB5BE0A1F5E0A0F5E0A0"));
        assert!(!is_md5_hash("md5fffbd1a5d1c5cb5be0a1f5e0a0f5e0a"));
        assert!(!is_md5_hash("MD5fffbd1a5d1c5cb5be0a1f5e0a0f5e0a0"));
        assert!(!is_md5_hash("md5fffbd1a5d1c5cb5be0a1f5e0a0f5e0ag"));
        assert!(!is_md5_hash("md5ééé"));
        assert!(!is_md5_hash(""));

        // A plain password that merely looks like "md5..." but is not a hash works as
        // a password.
        let password = "md5-not-a-hash";
        let response = md5_hash(b"alice", password.as_bytes(), SALT);
        assert!(verify_md5_response(
            password,
            "alice",
            SALT,
            response.as_bytes()
        ));
    }
}
