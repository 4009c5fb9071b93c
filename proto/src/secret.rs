//! Secrets of the cluster, as the API carries them: `/v1/secrets` (made,
//! listed and removed by people; a value is never read back) and the
//! agent's `GET /v1/agent/machines/{id}/units/{unit}/secrets` (the values
//! of the secrets a unit placed on that machine uses).
//!
//! Values travel base64-encoded (standard alphabet, with padding): a
//! secret is bytes, not text.

use std::fmt;

use serde::{Deserialize, Serialize};

pub use crate::container::secret::{MAX_SECRET_NAME_LEN, check_secret_name};

/// The largest secret value, in bytes (before base64).
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// The most secrets a cluster keeps.
pub const MAX_SECRETS: usize = 1000;

/// `PUT /v1/secrets/{name}`: a secret's value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretPut {
    /// The value, base64.
    pub value: String,
    /// Replace the value of a secret that exists (otherwise 409).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replace: bool,
}

impl fmt::Debug for SecretPut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretPut")
            .field("value", &"<redacted>")
            .field("replace", &self.replace)
            .finish()
    }
}

/// What is known of a secret, never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretInfo {
    pub name: String,
    /// The value's size in bytes.
    pub size: u64,
    /// 1 when made, one more at each change of its value.
    pub version: u64,
    /// When it was made and last changed, in milliseconds since the epoch.
    pub created_ms: u64,
    pub updated_ms: u64,
    /// The units whose `Secret=` name it, in name order (in
    /// `GET /v1/secrets` only).
    #[serde(default)]
    pub used_by: Vec<String>,
}

/// `GET /v1/secrets`: every secret, in name order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretList {
    pub secrets: Vec<SecretInfo>,
}

/// One secret's value, for an agent.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretValue {
    pub name: String,
    pub version: u64,
    /// The value, base64.
    pub value: String,
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretValue")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("value", &"<redacted>")
            .finish()
    }
}

/// `GET /v1/agent/machines/{id}/units/{unit}/secrets`: the values of the
/// secrets the unit uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnitSecrets {
    pub unit: String,
    pub secrets: Vec<SecretValue>,
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `bytes` in base64 (standard alphabet, padded), as values travel.
pub fn encode_value(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Why a value is not base64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the value is not base64 (standard alphabet, padded): {0}")]
pub struct Base64Error(&'static str);

/// The bytes of a base64 value ([`encode_value`]'s form).
pub fn decode_value(text: &str) -> Result<Vec<u8>, Base64Error> {
    let text = text.as_bytes();
    if !text.len().is_multiple_of(4) {
        return Err(Base64Error("its length is not a multiple of 4"));
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for (i, chunk) in text.chunks(4).enumerate() {
        let last = i + 1 == text.len() / 4;
        let pad = chunk.iter().rev().take_while(|c| **c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return Err(Base64Error("'=' is only padding at the end"));
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            let v = BASE64
                .iter()
                .position(|x| *x == c)
                .ok_or(Base64Error("a character outside the alphabet"))?;
            n = (n << 6) | v as u32;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip() {
        for (plain, coded) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"\xff\x00\xfe", "/wD+"),
        ] {
            assert_eq!(encode_value(plain), coded);
            assert_eq!(decode_value(coded).unwrap(), plain);
        }
        for bad in ["Zg=", "Z===", "Zg==Zg==", "Zm9*", "===="] {
            assert!(decode_value(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_hides_values() {
        let v = SecretValue {
            name: "db".into(),
            version: 2,
            value: "c2VjcmV0".into(),
        };
        assert!(!format!("{v:?}").contains("c2VjcmV0"));
        let p = SecretPut {
            value: "c2VjcmV0".into(),
            replace: true,
        };
        assert!(!format!("{p:?}").contains("c2VjcmV0"));
    }
}
