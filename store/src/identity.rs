//! The identity file of a data directory: which cluster the directory
//! belongs to and where that cluster's state is kept. Written once, when
//! the directory is initialized, atomically (temporary file, fsync, rename,
//! fsync of the directory), and never changed.
//!
//! The embedded store writes it beside its log when it initializes a
//! directory, and refuses to open a directory that has one but lost its
//! log. A server on etcd writes one in its data directory to remember the
//! cluster it serves (`flotilla_scheduler::identity::cluster_id`).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use flotilla_proto::ClusterId;
use serde::{Deserialize, Serialize};

use super::{StoreError, StoreResult};

/// The identity file's name in a data directory.
pub const IDENTITY_FILE: &str = "identity";

/// What an identity file holds (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    /// The cluster the directory belongs to.
    pub cluster_id: ClusterId,
    /// When the file was written (UTC, `YYYY-MM-DDTHH:MM:SSZ`): for the
    /// embedded store, when the cluster was made; for a server on etcd,
    /// when it first served the cluster.
    pub created_at: String,
    /// Where the cluster's state is kept.
    pub state: StateLocation,
}

/// Where a cluster's state is kept, as an identity file records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum StateLocation {
    /// The embedded store, in this directory.
    Embedded,
    /// etcd, under this key prefix.
    Etcd {
        /// The prefix of every key of the cluster.
        key_prefix: String,
    },
    /// The store replicated between the servers with raft (its log in
    /// this directory's `raft/`), under this key prefix.
    Raft {
        /// The prefix of every key of the cluster.
        key_prefix: String,
    },
}

impl StateLocation {
    /// The key prefix of a cluster whose id is a key (etcd, raft).
    pub fn key_prefix(&self) -> Option<&str> {
        match self {
            StateLocation::Embedded => None,
            StateLocation::Etcd { key_prefix } | StateLocation::Raft { key_prefix } => {
                Some(key_prefix)
            }
        }
    }
}

impl Identity {
    /// A new identity made now.
    pub fn new(cluster_id: ClusterId, state: StateLocation) -> Identity {
        Identity {
            cluster_id,
            created_at: utc_now(),
            state,
        }
    }
}

/// A new cluster id: 128 bits from the kernel's random source.
pub fn new_cluster_id() -> StoreResult<ClusterId> {
    const SOURCE: &str = "/dev/urandom";
    let mut bytes = [0; 16];
    File::open(SOURCE)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| StoreError::io("reading", SOURCE, e))?;
    Ok(ClusterId::from_bytes(bytes))
}

/// The identity file of `dir`.
pub fn identity_path(dir: &Path) -> PathBuf {
    dir.join(IDENTITY_FILE)
}

/// Reads `dir`'s identity file: `None` if there is none, an error naming
/// the file if it cannot be read or does not parse.
pub fn read_identity(dir: &Path) -> StoreResult<Option<Identity>> {
    let path = identity_path(dir);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io("reading", &path, e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            path,
            offset: 0,
            reason: format!("not a flotilla identity file: {e}"),
        })
}

/// Writes `dir`'s identity file atomically: a temporary file, fsync'd,
/// renamed into place, then the directory fsync'd. A crash leaves either no
/// identity file or the whole one (and perhaps the temporary file, which
/// the next write replaces).
pub fn write_identity(dir: &Path, identity: &Identity) -> StoreResult<()> {
    let path = identity_path(dir);
    let tmp = dir.join(format!("{IDENTITY_FILE}.tmp"));
    let mut text = serde_json::to_string_pretty(identity).map_err(|e| StoreError::Internal {
        reason: format!("cannot encode the identity file: {e}"),
    })?;
    text.push('\n');
    File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })
        .map_err(|e| StoreError::io("writing", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| StoreError::io("renaming", &tmp, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("syncing directory", dir, e))
}

/// Now, in UTC, as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc(secs)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (Howard Hinnant's
/// civil_from_days).
fn utc(secs: u64) -> String {
    let days = secs / 86_400;
    let rest = secs % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_709_251_201), "2024-03-01T00:00:01Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn written_atomically_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_identity(dir.path()).unwrap(), None);
        let identity = Identity::new(
            new_cluster_id().unwrap(),
            StateLocation::Etcd {
                key_prefix: "/flotilla/v1/".to_owned(),
            },
        );
        write_identity(dir.path(), &identity).unwrap();
        assert_eq!(read_identity(dir.path()).unwrap(), Some(identity.clone()));
        let text = fs::read_to_string(identity_path(dir.path())).unwrap();
        assert!(text.contains("\"keyPrefix\": \"/flotilla/v1/\""), "{text}");
        assert!(!dir.path().join("identity.tmp").exists());
        assert_ne!(new_cluster_id().unwrap(), identity.cluster_id);

        fs::write(identity_path(dir.path()), "{").unwrap();
        assert!(matches!(
            read_identity(dir.path()),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
