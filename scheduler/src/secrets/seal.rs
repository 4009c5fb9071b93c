//! The cluster's secrets key, and sealing values with it:
//! ChaCha20-Poly1305 (ring's AEAD, which TLS builds already), a random
//! 96-bit nonce per value, and the secret's name as associated data, so
//! that a sealed value moved to another name does not open.

use std::io::Write;
use std::path::{Path, PathBuf};

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::{Digest, Sha256};

/// The file the key is kept in, in the server's data directory, unless
/// `--secrets-key` names another.
pub const KEY_FILE: &str = "secrets.key";

const KEY_LEN: usize = 32;

/// Why the key could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the secrets key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the secrets key {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a secrets key: expected 64 hex digits (32 random bytes), as flotilla writes it"
    )]
    Malformed { path: PathBuf },
    #[error("cannot make a secrets key: no randomness from the operating system: {0}")]
    Random(String),
}

/// The key that seals every secret of the cluster. Every server of a
/// cluster must have the same one.
pub struct SecretsKey {
    key: LessSafeKey,
    id: String,
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl SecretsKey {
    /// The key of `bytes`.
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> SecretsKey {
        // Cannot fail: the length is ChaCha20-Poly1305's key length.
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, bytes).expect("a 32-byte key");
        let id = hex(&Sha256::digest(bytes)[..8]);
        SecretsKey {
            key: LessSafeKey::new(unbound),
            id,
        }
    }

    /// A new random key.
    pub fn generate() -> Result<SecretsKey, KeyError> {
        Ok(SecretsKey::from_bytes(&random_key()?))
    }

    /// Reads the key in `path`.
    pub fn read(path: &Path) -> Result<SecretsKey, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let bytes = unhex(text.trim())
            .and_then(|b| <[u8; KEY_LEN]>::try_from(b).ok())
            .ok_or_else(|| KeyError::Malformed {
                path: path.to_owned(),
            })?;
        Ok(SecretsKey::from_bytes(&bytes))
    }

    /// Reads the key in `path`, or makes one there (mode 0600) when there
    /// is no such file.
    pub fn read_or_create(path: &Path) -> Result<SecretsKey, KeyError> {
        if path.exists() {
            return SecretsKey::read(path);
        }
        let bytes = random_key()?;
        let write = |source| KeyError::Write {
            path: path.to_owned(),
            source,
        };
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(write)?;
        file.write_all(format!("{}\n", hex(&bytes)).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(write)?;
        Ok(SecretsKey::from_bytes(&bytes))
    }

    /// A short public name of the key (the start of its SHA-256), kept
    /// with each sealed value, so that a server with another key says so.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `value` for the secret `name`: the nonce, then the
    /// ciphertext and its tag.
    pub fn seal(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| KeyError::Random(e.to_string()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + value.len() + 16);
        out.extend_from_slice(&nonce);
        let mut body = value.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut body,
            )
            // Only for inputs longer than ChaCha20 can count (256 GiB).
            .map_err(|_| KeyError::Random("the value cannot be sealed".into()))?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens what [`seal`](Self::seal) made for `name`; `None` when it was
    /// sealed with another key, for another name, or was changed.
    pub fn open(&self, name: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut body)
            .ok()?;
        Some(plain.to_vec())
    }
}

fn random_key() -> Result<[u8; KEY_LEN], KeyError> {
    let mut bytes = [0u8; KEY_LEN];
    getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(bytes)
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open() {
        let key = SecretsKey::generate().unwrap();
        let sealed = key.seal("db", b"hunter2").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(key.open("db", &sealed).as_deref(), Some(&b"hunter2"[..]));
        // Another name, another key, a changed byte: refused.
        assert_eq!(key.open("other", &sealed), None);
        assert_eq!(SecretsKey::generate().unwrap().open("db", &sealed), None);
        let mut bent = sealed.clone();
        *bent.last_mut().unwrap() ^= 1;
        assert_eq!(key.open("db", &bent), None);
        // A new nonce each time.
        assert_ne!(key.seal("db", b"hunter2").unwrap(), sealed);
    }

    #[test]
    fn key_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let made = SecretsKey::read_or_create(&path).unwrap();
        let again = SecretsKey::read_or_create(&path).unwrap();
        assert_eq!(made.id(), again.id());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, "nothex\n").unwrap();
        assert!(matches!(
            SecretsKey::read(&path),
            Err(KeyError::Malformed { .. })
        ));
    }
}
