//! The identity of a cluster: made once, when its store is initialized, and
//! carried to agents so that a machine never takes orders from a cluster
//! other than the one it joined.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A cluster's id: 128 random bits, written like a UUID
/// (`8-4-4-4-12` lowercase hexadecimal digits). On the wire and in files it
/// is that string.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClusterId(u128);

/// Why a string is not a cluster id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cluster id {0:?} is not 32 hexadecimal digits (written 8-4-4-4-12 with dashes, or without)"
)]
pub struct ClusterIdError(pub String);

impl ClusterId {
    /// The id made of these 16 bytes (random ones, for a new cluster).
    pub const fn from_bytes(bytes: [u8; 16]) -> ClusterId {
        ClusterId(u128::from_be_bytes(bytes))
    }

    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, or the 32 digits
    /// without dashes, in either case.
    pub fn parse(s: &str) -> Result<ClusterId, ClusterIdError> {
        let dashed = s.len() == 36
            && s.char_indices()
                .all(|(i, c)| matches!(i, 8 | 13 | 18 | 23) == (c == '-'));
        let digits: String = if dashed {
            s.chars().filter(|&c| c != '-').collect()
        } else {
            s.to_owned()
        };
        if digits.len() != 32 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ClusterIdError(s.to_owned()));
        }
        u128::from_str_radix(&digits, 16)
            .map(ClusterId)
            .map_err(|_| ClusterIdError(s.to_owned()))
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = format!("{:032x}", self.0);
        write!(
            f,
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    }
}

impl fmt::Debug for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterId({self})")
    }
}

impl FromStr for ClusterId {
    type Err = ClusterIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ClusterId::parse(s)
    }
}

impl TryFrom<String> for ClusterId {
    type Error = ClusterIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        ClusterId::parse(&s)
    }
}

impl From<ClusterId> for String {
    fn from(id: ClusterId) -> String {
        id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_like_a_uuid_and_read_back() {
        let id = ClusterId::from_bytes([
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54,
            0x32, 0x10,
        ]);
        assert_eq!(id.to_string(), "01234567-89ab-cdef-fedc-ba9876543210");
        assert_eq!(ClusterId::parse(&id.to_string()), Ok(id));
        assert_eq!(ClusterId::parse("0123456789ABCDEFFEDCBA9876543210"), Ok(id));
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"01234567-89ab-cdef-fedc-ba9876543210\"");
        assert_eq!(serde_json::from_str::<ClusterId>(&json).unwrap(), id);
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "0123456789abcdef",
            "01234567-89ab-cdef-fedc-ba987654321",
            "0123456-789ab-cdef-fedc-ba9876543210",
            "01234567-89ab-cdef-fedc-ba987654321g",
            "+1234567-89ab-cdef-fedc-ba9876543210",
            "+123456789abcdeffedcba9876543210",
        ] {
            assert!(ClusterId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<ClusterId>("\"x\"").is_err());
    }
}
