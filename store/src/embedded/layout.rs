//! What a data directory holds, and whether the store may open it: the
//! files of each generation, the leftovers of interrupted writes, and the
//! identity file that says the directory was initialized.
//!
//! The rules (the store's documentation gives the why):
//!
//! | identity | snapshot and log | verdict |
//! |---|---|---|
//! | none | none, and no other file (or only `LOCK`, `lost+found`) | a new cluster |
//! | none | none, but other files | refused: not a store directory |
//! | none | a snapshot, or a log with its header | adopted (made by an earlier version) |
//! | none | only a log without its header (empty, short, zeros) | refused |
//! | embedded | the log of the newest generation, whole header | opened |
//! | embedded | newest log missing or without header, the previous log still there | opened (a crash between a snapshot and its log) |
//! | embedded | anything else missing or empty | refused: state lost |
//! | etcd | - | refused: a server on etcd's directory |

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::frame::parse_generation;
use super::{LOCK_FILE, WAL_HEADER_LEN, snapshot_name, wal_name};
use crate::identity::{IDENTITY_FILE, Identity, StateLocation, read_identity};
use crate::{StoreError, StoreResult};

/// Names a data directory may hold besides the store's own files without
/// being foreign: the mount point's `lost+found` of a directory on its own
/// file system, and `tls`, where a server keeps the cluster CA (an operator
/// may put one there before the first start).
const IGNORED: &[&str] = &["lost+found", "tls"];

/// What opening found in the directory.
#[derive(Debug)]
pub(super) struct Layout {
    /// Generations with a snapshot, and with a log.
    pub snapshots: Vec<u64>,
    pub wals: Vec<u64>,
    /// Leftovers of interrupted writes, removed.
    pub removed_files: Vec<PathBuf>,
    /// The identity file, if the directory has one.
    pub identity: Option<Identity>,
    /// Whether the directory holds state to keep (a snapshot, or a log
    /// with at least its header); without an identity, such a directory
    /// is adopted.
    pub has_state: bool,
}

impl Layout {
    /// The newest generation: that of the newest snapshot (0 without one).
    pub fn generation(&self) -> u64 {
        self.snapshots.iter().copied().max().unwrap_or(0)
    }
}

/// Whether a log has its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogState {
    Missing,
    /// Shorter than its header, or a header of zeros: `len` bytes.
    NoHeader {
        len: u64,
    },
    Whole,
}

/// Refuses a directory that holds files but nothing of a store (no
/// identity file, no log, no snapshot, no leftover of one), before the
/// store takes its lock: a mistyped `--data-dir` such as `/etc` is left
/// untouched, without a `LOCK` file. [`inspect`] checks again under the
/// lock.
pub(super) fn refuse_foreign(dir: &Path) -> StoreResult<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io("listing", dir, e)),
    };
    let mut others = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io("listing", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = name == IDENTITY_FILE
            || name.starts_with("wal-")
            || name.starts_with("snapshot-")
            || name == LOCK_FILE
            || name == format!("{IDENTITY_FILE}.tmp")
            || IGNORED.contains(&name.as_str());
        if ours {
            return Ok(());
        }
        others.push(name);
    }
    if others.is_empty() {
        Ok(())
    } else {
        Err(foreign(dir, &others))
    }
}

/// Lists `dir` (locked by the caller), removes the leftovers of
/// interrupted snapshots, logs and identity writes, and decides whether
/// the store may open it.
pub(super) fn inspect(dir: &Path) -> StoreResult<Layout> {
    let mut snapshots = Vec::new();
    let mut wals = Vec::new();
    let mut removed_files = Vec::new();
    let mut others = Vec::new();
    let mut has_identity = false;
    let entries = fs::read_dir(dir).map_err(|e| StoreError::io("listing", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io("listing", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            others.push(entry.file_name().to_string_lossy().into_owned());
            continue;
        };
        let leftover = name.ends_with(".tmp")
            && (name.starts_with("snapshot-")
                || name.starts_with("wal-")
                || name == format!("{IDENTITY_FILE}.tmp"));
        if leftover {
            let path = entry.path();
            fs::remove_file(&path).map_err(|e| StoreError::io("removing", &path, e))?;
            removed_files.push(path);
        } else if let Some(generation) = parse_generation(name, "snapshot-") {
            snapshots.push(generation);
        } else if let Some(generation) = parse_generation(name, "wal-") {
            wals.push(generation);
        } else if name == IDENTITY_FILE {
            has_identity = true;
        } else if name != LOCK_FILE && !IGNORED.contains(&name) {
            others.push(name.to_owned());
        }
    }
    let identity = if has_identity {
        read_identity(dir)?
    } else {
        None
    };
    let mut layout = Layout {
        snapshots,
        wals,
        removed_files,
        identity,
        has_state: false,
    };
    let generation = layout.generation();
    if let Some(newer) = layout
        .wals
        .iter()
        .copied()
        .filter(|&g| g > generation)
        .max()
    {
        return Err(StoreError::Corrupt {
            path: dir.join(wal_name(newer)),
            offset: 0,
            reason: format!(
                "log generation {newer} is newer than the newest snapshot (generation {generation})"
            ),
        });
    }
    let log = log_state(dir, &layout.wals, generation)?;
    layout.has_state = generation > 0 || log == LogState::Whole;
    match &layout.identity {
        None => check_uninitialized(dir, &layout, log, &others)?,
        Some(identity) => check_initialized(dir, &layout, log, identity)?,
    }
    Ok(layout)
}

fn log_state(dir: &Path, wals: &[u64], generation: u64) -> StoreResult<LogState> {
    if !wals.contains(&generation) {
        return Ok(LogState::Missing);
    }
    let path = dir.join(wal_name(generation));
    let mut header = Vec::with_capacity(WAL_HEADER_LEN);
    let len = fs::File::open(&path)
        .and_then(|file| {
            let len = file.metadata()?.len();
            file.take(WAL_HEADER_LEN as u64).read_to_end(&mut header)?;
            Ok::<_, io::Error>(len)
        })
        .map_err(|e| StoreError::io("reading", &path, e))?;
    Ok(
        if header.len() < WAL_HEADER_LEN || header.iter().all(|&b| b == 0) {
            LogState::NoHeader { len }
        } else {
            LogState::Whole
        },
    )
}

/// A directory without an identity file: new, adopted, or refused.
fn check_uninitialized(
    dir: &Path,
    layout: &Layout,
    log: LogState,
    others: &[String],
) -> StoreResult<()> {
    if layout.has_state {
        return Ok(());
    }
    if let LogState::NoHeader { len } = log {
        return Err(StoreError::NotAStore {
            dir: dir.to_owned(),
            reason: format!(
                "its log {} holds no log header ({len} bytes) and it has no identity file: \
                 a store whose log was emptied, or whose very first start was interrupted; \
                 restore the directory from a backup, or, if it never held a cluster's state, \
                 empty it to start a new cluster",
                wal_name(0)
            ),
        });
    }
    if others.is_empty() {
        return Ok(());
    }
    Err(foreign(dir, others))
}

/// The refusal of a directory that holds `others` and nothing of a store.
fn foreign(dir: &Path, others: &[String]) -> StoreError {
    let mut sorted: Vec<&str> = others.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    let shown = &sorted[..sorted.len().min(5)];
    let mut files = shown.join(", ");
    if sorted.len() > shown.len() {
        files.push_str(&format!(" and {} more", sorted.len() - shown.len()));
    }
    StoreError::NotAStore {
        dir: dir.to_owned(),
        reason: format!(
            "it holds {files} but no identity file and no store log, so it is not a flotilla \
             data directory; check --data-dir (a new cluster starts only in an empty or absent \
             directory)"
        ),
    }
}

/// A directory with an identity file: its state must be there.
fn check_initialized(
    dir: &Path,
    layout: &Layout,
    log: LogState,
    identity: &Identity,
) -> StoreResult<()> {
    let on = match &identity.state {
        StateLocation::Embedded => None,
        StateLocation::Etcd { key_prefix } => Some(("on etcd", key_prefix)),
        StateLocation::Raft { key_prefix } => Some(("replicated with raft", key_prefix)),
    };
    if let Some((on, key_prefix)) = on {
        return Err(StoreError::NotAStore {
            dir: dir.to_owned(),
            reason: format!(
                "it is the data directory of a server of cluster {} {on} (key prefix \
                 {key_prefix}), and holds no embedded store; give the embedded store a \
                 directory of its own",
                identity.cluster_id
            ),
        });
    }
    let generation = layout.generation();
    let log_name = wal_name(generation);
    let missing = match log {
        LogState::Whole => return Ok(()),
        // A crash between a snapshot's rename and its log's creation: the
        // previous generation's log is removed only after the new one is
        // whole, so it is still there.
        _ if generation > 0 && layout.wals.contains(&(generation - 1)) => return Ok(()),
        _ if layout.snapshots.is_empty() && layout.wals.is_empty() => {
            "its log and snapshots are missing (no wal-* or snapshot-* file)".to_owned()
        }
        LogState::Missing if generation == 0 => format!("its log {log_name} is missing"),
        LogState::NoHeader { len } if generation == 0 => {
            format!("its log {log_name} is empty ({len} bytes)")
        }
        LogState::Missing => format!(
            "its log {log_name} is missing: the writes since snapshot {} are gone",
            snapshot_name(generation)
        ),
        LogState::NoHeader { len } => format!(
            "its log {log_name} is empty ({len} bytes): the writes since snapshot {} are gone",
            snapshot_name(generation)
        ),
    };
    Err(StoreError::StateLost {
        dir: dir.to_owned(),
        cluster_id: identity.cluster_id,
        created_at: identity.created_at.clone(),
        missing,
    })
}
