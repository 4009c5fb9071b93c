//! The values stored under each key (see [`crate::keys`]), as JSON.

use flotilla_proto::{DesiredState, MachineId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// `units/<unit>`: what the user asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnitRecord {
    /// The unit file as submitted.
    pub text: String,
    /// Its content hash.
    pub hash: String,
    pub desired_state: DesiredState,
}

/// `sched/<unit>`: the leader's decision for a unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchedRecord {
    /// Where the unit is placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<MachineId>,
    /// Why it is not placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `leader`: who leads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaderRecord {
    /// The server's id (unique per process start).
    pub id: String,
    /// Where its API listens.
    pub address: String,
    pub version: String,
}

/// `servers/<id>`: a live server's announcement, its [`LeaderRecord`] with,
/// on a raft cluster, its own view of the raft group as of its last
/// announcement. Records of servers without raft read the same as before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceRecord {
    #[serde(flatten)]
    pub server: LeaderRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft: Option<RaftPresence>,
}

/// A server's raft state, as it announces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RaftPresence {
    /// Its id in the raft group.
    pub id: u64,
    /// `leader`, `follower`, `candidate` or `removed`.
    pub role: String,
    pub term: u64,
    /// The last log index it applied.
    pub applied: u64,
    /// Its last log index.
    pub last_index: u64,
}

/// A stored value that does not decode: corrupt data or a bug.
#[derive(Debug, thiserror::Error)]
#[error("value of {key} does not decode: {source}")]
pub struct DecodeError {
    pub key: String,
    #[source]
    pub source: serde_json::Error,
}

/// Encodes a record for the store.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail: no maps with non-string
    // keys, no custom serialisers that error.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Decodes a stored record, naming the key when it does not decode.
pub fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(bytes).map_err(|source| DecodeError {
        key: key.to_owned(),
        source,
    })
}
