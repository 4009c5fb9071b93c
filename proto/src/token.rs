//! Bearer tokens: `flt1.<id>.<secret>`, where the id (16 hex digits) names
//! the credential in the store and the secret (64 hex digits, 256 random
//! bits) is known only to its holder: the store keeps its SHA-256. The
//! random bytes come from the caller (this crate does no I/O).

use std::fmt;

use sha2::{Digest, Sha256};

/// The version tag every token starts with.
pub const TOKEN_PREFIX: &str = "flt1";

/// Hex digits of a credential id (64 random bits).
pub const ID_HEX_LEN: usize = 16;

/// Hex digits of a token's secret (256 random bits).
pub const SECRET_HEX_LEN: usize = 64;

/// Hex digits of a CA fingerprint (SHA-256).
pub const FINGERPRINT_HEX_LEN: usize = 64;

/// A token: its id and its secret. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    id: String,
    secret: String,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Why a string is not a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenParseError {
    #[error("the token is empty")]
    Empty,
    #[error(
        "not a flotilla token: expected flt1.<16 hex digits>.<64 hex digits> (as `flotilla token create` prints it)"
    )]
    Malformed,
    #[error("the CA fingerprint of the join token is not 64 hex digits")]
    BadFingerprint,
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Token {
    /// The token of these random bytes: 8 for the id, 32 for the secret.
    pub fn from_random(id: [u8; ID_HEX_LEN / 2], secret: [u8; SECRET_HEX_LEN / 2]) -> Token {
        Token {
            id: hex(&id),
            secret: hex(&secret),
        }
    }

    /// Reads `flt1.<id>.<secret>`.
    pub fn parse(s: &str) -> Result<Token, TokenParseError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(TokenParseError::Empty);
        }
        let mut parts = s.split('.');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(TOKEN_PREFIX), Some(id), Some(secret), None)
                if is_hex(id, ID_HEX_LEN) && is_hex(secret, SECRET_HEX_LEN) =>
            {
                Ok(Token {
                    id: id.to_owned(),
                    secret: secret.to_owned(),
                })
            }
            _ => Err(TokenParseError::Malformed),
        }
    }

    /// The credential's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// What the store keeps of the secret.
    pub fn secret_hash(&self) -> String {
        sha256_hex(self.secret.as_bytes())
    }

    /// The whole token, to hand to its holder once.
    pub fn expose(&self) -> String {
        format!("{TOKEN_PREFIX}.{}.{}", self.id, self.secret)
    }
}

/// What `flotilla agent --join-token` takes: a join token, optionally with
/// the SHA-256 fingerprint of the cluster CA appended
/// (`flt1.<id>.<secret>.<fingerprint>`), so that a new machine can trust
/// the servers with nothing else given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinString {
    pub token: Token,
    pub ca_fingerprint: Option<String>,
}

impl JoinString {
    pub fn parse(s: &str) -> Result<JoinString, TokenParseError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(TokenParseError::Empty);
        }
        match s.rsplit_once('.') {
            Some((token, fp)) if s.split('.').count() == 4 => {
                if !is_hex(fp, FINGERPRINT_HEX_LEN) {
                    return Err(TokenParseError::BadFingerprint);
                }
                Ok(JoinString {
                    token: Token::parse(token)?,
                    ca_fingerprint: Some(fp.to_owned()),
                })
            }
            _ => Ok(JoinString {
                token: Token::parse(s)?,
                ca_fingerprint: None,
            }),
        }
    }

    /// The join string of `token` for a cluster whose CA has `fingerprint`.
    pub fn format(token: &Token, fingerprint: &str) -> String {
        format!("{}.{fingerprint}", token.expose())
    }
}

/// Compares without returning early at the first differing byte, so that
/// the time taken does not tell how much of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(n: u8) -> Token {
        Token::from_random([n; 8], [n ^ 0x5a; 32])
    }

    #[test]
    fn tokens_round_trip_and_hide_their_secret() {
        let t = token(7);
        let text = t.expose();
        assert!(text.starts_with("flt1."));
        assert_eq!(text.len(), 4 + 1 + 16 + 1 + 64);
        assert_eq!(Token::parse(&text).unwrap(), t);
        assert!(!format!("{t:?}").contains(&t.secret));
        assert_ne!(token(8), t);
    }

    #[test]
    fn malformed_tokens() {
        assert_eq!(Token::parse(""), Err(TokenParseError::Empty));
        assert_eq!(Token::parse("  "), Err(TokenParseError::Empty));
        for bad in [
            "secret",
            "flt1.abc.def",
            "flt2.0123456789abcdef.0000000000000000000000000000000000000000000000000000000000000000",
            "flt1.0123456789ABCDEF.0000000000000000000000000000000000000000000000000000000000000000",
            "flt1.0123456789abcdef.000000000000000000000000000000000000000000000000000000000000000",
        ] {
            assert_eq!(Token::parse(bad), Err(TokenParseError::Malformed), "{bad}");
        }
    }

    #[test]
    fn join_strings() {
        let t = token(9);
        let fp = sha256_hex(b"ca");
        let j = JoinString::parse(&JoinString::format(&t, &fp)).unwrap();
        assert_eq!(j.token, t);
        assert_eq!(j.ca_fingerprint.as_deref(), Some(fp.as_str()));
        let j = JoinString::parse(&t.expose()).unwrap();
        assert_eq!(j.ca_fingerprint, None);
        assert_eq!(
            JoinString::parse(&format!("{}.xyz", t.expose())),
            Err(TokenParseError::BadFingerprint)
        );
    }

    #[test]
    fn compares_in_constant_time() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
