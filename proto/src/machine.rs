//! Machines: the hosts that run units, as their agents describe them.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::field::{self, FieldError};

/// The longest hostname a machine may register: DNS's limit for a whole
/// name.
pub const MAX_HOSTNAME_LEN: usize = 253;

/// The most addresses a machine may register.
pub const MAX_ADDRESSES: usize = 64;

/// The longest metadata key.
pub const MAX_METADATA_KEY_LEN: usize = 128;

/// The longest metadata value.
pub const MAX_METADATA_VALUE_LEN: usize = 1024;

/// The longest agent version string.
pub const MAX_AGENT_VERSION_LEN: usize = 128;

/// A machine's id: the 32 lowercase hex characters of its
/// `/etc/machine-id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MachineId(String);

/// Why a string is not a machine id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "machine id {0:?} is not 32 lowercase hexadecimal characters (the format of /etc/machine-id)"
)]
pub struct MachineIdError(pub String);

impl MachineId {
    pub fn parse(s: &str) -> Result<MachineId, MachineIdError> {
        let valid = s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if valid {
            Ok(MachineId(s.to_owned()))
        } else {
            Err(MachineIdError(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 8 characters, as fleetctl shows machines.
    pub fn short(&self) -> &str {
        &self.0[..8]
    }
}

impl fmt::Display for MachineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for MachineId {
    type Error = MachineIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        MachineId::parse(&s)
    }
}

impl From<MachineId> for String {
    fn from(id: MachineId) -> String {
        id.0
    }
}

impl std::str::FromStr for MachineId {
    type Err = MachineIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MachineId::parse(s)
    }
}

/// What a machine offers to units, in the units resource requests use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capacity {
    /// Thousandths of a CPU: 4 CPUs are 4000.
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

/// A machine as its agent registered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    pub id: MachineId,
    pub hostname: String,
    /// Addresses the machine is reachable at, most useful first.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Operator-given `key=value` pairs that `MachineMetadata=` matches.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    pub capacity: Capacity,
    pub agent_version: String,
}

impl Machine {
    /// Checks every string the agent supplied: a hostname of at most
    /// [`MAX_HOSTNAME_LEN`] bytes, at most [`MAX_ADDRESSES`] addresses that
    /// are each an IP address, metadata as [`check_metadata_entry`] wants
    /// it, an agent version of at most [`MAX_AGENT_VERSION_LEN`] bytes, and
    /// no control character anywhere. The number and total size of
    /// metadata entries are the cluster's quotas, checked by the scheduler.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.hostname.is_empty() {
            return Err(FieldError::Empty {
                field: "hostname".into(),
            });
        }
        field::check_line("hostname", &self.hostname, MAX_HOSTNAME_LEN)?;
        if self.addresses.len() > MAX_ADDRESSES {
            return Err(FieldError::TooMany {
                field: "addresses".into(),
                count: self.addresses.len(),
                max: MAX_ADDRESSES,
            });
        }
        for (i, address) in self.addresses.iter().enumerate() {
            if address.parse::<std::net::IpAddr>().is_err() {
                return Err(FieldError::NotAnAddress {
                    field: format!("addresses[{i}]"),
                    excerpt: field::excerpt(address),
                });
            }
        }
        for (key, value) in &self.metadata {
            check_metadata_entry(key, Some(value))?;
        }
        field::check_line("agentVersion", &self.agent_version, MAX_AGENT_VERSION_LEN)
    }
}

/// Checks one metadata entry (`value` is `None` for a key being removed):
/// a key of 1 to [`MAX_METADATA_KEY_LEN`] bytes without `=` (which
/// `MachineMetadata=key=value` could not match), a value of at most
/// [`MAX_METADATA_VALUE_LEN`] bytes, no control character in either.
pub fn check_metadata_entry(key: &str, value: Option<&str>) -> Result<(), FieldError> {
    let key_field = || format!("metadata key {}", field::excerpt(key));
    if key.is_empty() {
        return Err(FieldError::Empty {
            field: "a metadata key".into(),
        });
    }
    field::check_line(&key_field(), key, MAX_METADATA_KEY_LEN)?;
    if key.contains('=') {
        return Err(FieldError::Forbidden {
            field: key_field(),
            found: '=',
        });
    }
    match value {
        Some(value) => field::check_line(
            &format!("metadata[{}]", field::excerpt(key)),
            value,
            MAX_METADATA_VALUE_LEN,
        ),
        None => Ok(()),
    }
}

/// The bytes a machine's metadata takes, as its quota counts them: the
/// lengths of its keys and values.
pub fn metadata_bytes(metadata: &BTreeMap<String, String>) -> usize {
    metadata.iter().map(|(k, v)| k.len() + v.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            id: MachineId::parse("0123456789abcdef0123456789abcdef").unwrap(),
            hostname: "web-1".into(),
            addresses: vec!["10.0.0.1".into(), "fd00::1".into()],
            metadata: [("role".to_owned(), "web".to_owned())].into(),
            capacity: Capacity::default(),
            agent_version: "0.1.0".into(),
        }
    }

    #[test]
    fn a_plain_machine_is_valid() {
        assert_eq!(machine().validate(), Ok(()));
    }

    #[test]
    fn each_supplied_string_is_checked_and_named() {
        type Change = fn(&mut Machine);
        let cases: [(Change, &str); 9] = [
            (|m| m.hostname.clear(), "hostname is empty"),
            (
                |m| m.hostname = "\u{1b}]0;owned\u{7}".into(),
                "hostname holds the control character U+001B at byte 0; control characters are refused",
            ),
            (
                |m| m.hostname = "h".repeat(300),
                "hostname is 300 bytes long, over the limit of 253 bytes",
            ),
            (
                |m| m.addresses.push("10.0.0.2\u{1b}[31m".into()),
                "addresses[2] is not an IP address: \"10.0.0.2\\u{1b}[31m\"",
            ),
            (
                |m| m.addresses = vec!["10.0.0.1".into(); 65],
                "addresses has 65 entries, over the limit of 64",
            ),
            (
                |m| {
                    m.metadata.insert("ro\u{1b}le".into(), "x".into());
                },
                "metadata key \"ro\\u{1b}le\" holds the control character U+001B at byte 2; control characters are refused",
            ),
            (
                |m| {
                    m.metadata.insert("role".into(), "web\u{9b}".into());
                },
                "metadata[\"role\"] holds the control character U+009B at byte 3; control characters are refused",
            ),
            (
                |m| {
                    m.metadata.insert("a=b".into(), "x".into());
                },
                "metadata key \"a=b\" holds '=', which it cannot hold",
            ),
            (
                |m| m.agent_version = "1\r".into(),
                "agentVersion holds the control character U+000D at byte 1; control characters are refused",
            ),
        ];
        for (change, message) in cases {
            let mut m = machine();
            change(&mut m);
            assert_eq!(m.validate().unwrap_err().to_string(), message);
        }
    }

    #[test]
    fn metadata_bytes_count_keys_and_values() {
        let metadata = [("ab".to_owned(), "cde".to_owned())].into();
        assert_eq!(metadata_bytes(&metadata), 5);
    }

    #[test]
    fn machine_ids() {
        let id = MachineId::parse("0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(id.short(), "01234567");
        assert!(MachineId::parse("0123456789ABCDEF0123456789abcdef").is_err());
        assert!(MachineId::parse("0123456789abcdef").is_err());
        assert!(MachineId::parse("0123456789abcdef0123456789abcdeg").is_err());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"0123456789abcdef0123456789abcdef\"");
        assert!(serde_json::from_str::<MachineId>("\"xyz\"").is_err());
    }
}
