//! Machines: the hosts that run units, as their agents describe them.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::*;

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
