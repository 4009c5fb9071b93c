//! Git sources as the API carries them (`/v1/sync`, `flotilla sync`): a
//! repository's branch the leader follows, applying each new commit as
//! `flotilla apply` would, and what it last did.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::state::DesiredState;

/// The longest name of a source.
pub const MAX_SOURCE_NAME_LEN: usize = 63;

/// The longest repository address, branch or path.
pub const MAX_SOURCE_FIELD_LEN: usize = 1024;

/// The longest CA bundle (`ca`), host key list (`knownHosts`) or signer
/// key list (`signers`) of a source.
pub const MAX_SOURCE_TRUST_LEN: usize = 64 * 1024;

/// What a source does with a unit it owns that was changed by hand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftMode {
    /// Put it back as the last applied commit has it, at the next sync.
    #[default]
    Revert,
    /// Leave it, and report it.
    Warn,
}

impl DriftMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DriftMode::Revert => "revert",
            DriftMode::Warn => "warn",
        }
    }
}

impl fmt::Display for DriftMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DriftMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "revert" => Ok(DriftMode::Revert),
            "warn" => Ok(DriftMode::Warn),
            other => Err(format!("drift must be revert or warn, not {other:?}")),
        }
    }
}

/// A source, as `PUT /v1/sync/{name}` makes or changes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourcePut {
    /// The repository's address (`https://`, `ssh://`, `git://`,
    /// `file://`).
    pub repo: String,
    /// The branch followed; `main` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The directory of the repository that holds the units; the top when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// How often the repository is fetched, as a systemd time span
    /// (`30s`, `5min`); the server's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Destroy units of this source that a new commit no longer names.
    #[serde(default)]
    pub prune: bool,
    #[serde(default)]
    pub drift: DriftMode,
    /// The cluster secret that authenticates the fetch: for `https://`,
    /// `USER:PASSWORD` (or `USER:TOKEN`), sent only to the repository's
    /// host; for `ssh://`, an OpenSSH private key (the deploy key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
    /// `https://` only: the CA certificates (PEM) the repository's server
    /// certificate must chain to, instead of the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// `ssh://` only, and needed there: the server's host keys, as lines
    /// of OpenSSH's `known_hosts` (what `ssh-keyscan` prints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<String>,
    /// Apply only commits signed (with git's SSH signatures) by one of
    /// these SSH public keys, one per line (`KEYTYPE KEY [COMMENT]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signers: Option<String>,
}

/// A source as the server keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    pub name: String,
    pub repo: String,
    pub branch: String,
    /// Empty: the top of the repository.
    #[serde(default)]
    pub path: String,
    #[serde(with = "crate::duration::serde_timespan")]
    pub interval: Duration,
    pub prune: bool,
    pub drift: DriftMode,
    /// Paused sources are not fetched, applied or checked for drift.
    #[serde(default)]
    pub paused: bool,
    /// The secret the fetch authenticates with (see [`SourcePut`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<String>,
    /// The keys a commit must be signed by to be applied (see
    /// [`SourcePut`]); absent: any commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signers: Option<String>,
}

/// A commit and when the source saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitAt {
    /// The commit's id (hex).
    pub commit: String,
    pub at_ms: u64,
}

/// What applying a commit (or reverting drift) changed, by unit name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncChanges {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub created: Vec<String>,
    /// New contents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaced: Vec<String>,
    /// Only the desired state changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub state_changed: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destroyed: Vec<String>,
}

impl SyncChanges {
    pub fn is_empty(&self) -> bool {
        self.created.is_empty()
            && self.replaced.is_empty()
            && self.state_changed.is_empty()
            && self.destroyed.is_empty()
    }
}

impl fmt::Display for SyncChanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} created, {} replaced, {} state changed, {} destroyed",
            self.created.len(),
            self.replaced.len(),
            self.state_changed.len(),
            self.destroyed.len()
        )
    }
}

/// Why the last sync failed: a commit refused (a unit that does not
/// verify, a bad `flotilla.yaml`: each problem with its file and line), or
/// the repository out of reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncFailure {
    pub at_ms: u64,
    /// The commit refused; absent when none was read (a fetch failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    pub message: String,
}

/// A unit the source owns whose contents or desired state differ from
/// the last applied commit's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Drifted {
    pub unit: String,
    /// What differs: `contents`, `desired state loaded, not launched`,
    /// `destroyed`.
    pub how: String,
}

/// What a source applied of one unit: the drift baseline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Owned {
    /// The unit's content hash, as `GET /v1/units` shows it.
    pub hash: String,
    pub desired: DesiredState,
}

/// What a source last did. Kept in the store, so that a new leader
/// continues where the last one left off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fetched: Option<CommitAt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied: Option<CommitAt>,
    /// What the last applied commit (or the last revert) changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_changes: Option<SyncChanges>,
    /// Set while the last sync failed; cleared by the next good one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<SyncFailure>,
    /// Units changed by hand, as last checked (with `drift: revert`, those
    /// that could not be put back).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drifted: Vec<Drifted>,
    /// The last drift found, and when; with `drift: revert` it was put back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drift: Option<DriftSeen>,
    /// The units this source owns, as it last applied them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub owned: BTreeMap<String, Owned>,
}

/// Drift found at one sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftSeen {
    pub at_ms: u64,
    pub units: Vec<Drifted>,
    /// Whether the source put them back.
    pub reverted: bool,
}

/// A source and what it last did (`GET /v1/sync/{name}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceInfo {
    pub source: Source,
    pub status: SourceStatus,
}

/// `GET /v1/sync`: every source, in name order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceList {
    pub sources: Vec<SourceInfo>,
}

/// Whether `name` may name a source: 1 to [`MAX_SOURCE_NAME_LEN`] ASCII
/// letters, digits, `-` and `_`, starting with a letter or digit.
pub fn check_source_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SOURCE_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "source name {name:?}: 1 to {MAX_SOURCE_NAME_LEN} letters, digits, '-' and '_', starting with a letter or digit"
        ))
    }
}

/// The actor a source's changes are attributed to: `sync:NAME@abc1234`.
pub fn actor(name: &str, commit: &str) -> String {
    format!("sync:{name}@{}", commit.get(..7).unwrap_or(commit))
}
