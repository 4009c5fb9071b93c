//! [`RaftLog`]: the durable storage a raft node runs on (raft-rs's
//! [`Storage`]), in a directory of its own. Its documentation says how it
//! works: files, records, syncs, compaction, recovery.

// Its user, the raft node, is written alongside: until it lands, only the
// tests call this module.

mod disk;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use ::raft::prelude::{ConfState, Entry, HardState, Snapshot};
use ::raft::{GetEntriesContext, RaftState, Storage, StorageError};

use crate::embedded::frame;
use crate::{StoreError, StoreResult};

/// What [`RaftLog::open`] found.
#[derive(Debug, Clone)]
pub(crate) struct Recovered {
    /// Whether the directory held no raft log (created now).
    pub fresh: bool,
    /// The last snapshot stored (its metadata: index, term, conf_state; and
    /// its data bytes), if any.
    pub snapshot: Option<Snapshot>,
    pub hard_state: HardState,
    /// The membership in force at the end of the log (from the snapshot's
    /// metadata, or [`RaftLog::set_conf_state`]).
    pub conf_state: ConfState,
    pub first_index: u64,
    pub last_index: u64,
    /// A torn tail cut off the end of the log on open (an interrupted,
    /// unacknowledged write), for a warning: it names the file, the offset
    /// and the bytes cut.
    pub torn_tail: Option<String>,
}

/// The durable storage of a raft node: raft-rs's [`Storage`], answering
/// as its [`MemStorage`](::raft::storage::MemStorage) does, but
/// on disk, so that it survives kill -9 and a power cut.
///
/// Cloning is cheap: clones share one log. Every method takes a lock on
/// the shared state; writes are meant to come from one thread (the raft
/// node's loop), reads from anywhere.
///
/// # Files
///
/// In its directory (created with mode 0700 when absent):
///
/// - `raft.lock`: held (`flock`) while a `RaftLog` has the directory open.
/// - `raft-snapshot-<gen>` (16 hex digits): the snapshot that generation
///   `gen`'s log follows (magic `FLOTRSN1`, then the protobuf `Snapshot`,
///   metadata and data, as one frame). None for generation 0.
/// - `raft-log-<gen>`: a 20-byte header (magic `FLOTRLG1`, the generation
///   as `u64`, a CRC32 of both), then frames (`[u32 length][u32 payload
///   CRC][u32 header CRC][payload]`, the embedded store's `frame.rs`). One
///   frame per [`sync`](RaftLog::sync), holding the records appended and
///   set since the last one: each `[u8 tag][u32 length][body]`, an entry
///   (`E`), a hard state (`H`), a conf state (`S`), all protobuf, or a
///   commit index (`C`, `u64`).
/// - `*.tmp`: a file being written; removed on open.
///
/// Replaying a log applies its records in order: the last hard state, conf
/// state and commit win, and an entry at index `i` replaces the entries
/// from `i` on (raft's conflict truncation).
///
/// # Writes
///
/// [`append`](RaftLog::append), [`set_hard_state`](RaftLog::set_hard_state),
/// [`set_commit`](RaftLog::set_commit) and
/// [`set_conf_state`](RaftLog::set_conf_state) change what the [`Storage`]
/// answers at once and buffer their records; [`sync`](RaftLog::sync)
/// writes the buffer as one frame and fdatasyncs it, once per raft Ready.
/// After a failed write or fsync, what reached the disk is unknown: every
/// later write fails with that [`StoreError::Io`] (reads still answer);
/// the process should stop and reopen the log.
///
/// # Compaction and snapshots
///
/// [`compact`](RaftLog::compact) (a snapshot of this node's own state) and
/// [`apply_snapshot`](RaftLog::apply_snapshot) (one from the leader) start
/// a new generation: `raft-snapshot-<gen+1>.tmp` and `raft-log-<gen+1>.tmp`
/// (the conf state, the hard state and the entries after the snapshot) are
/// written and fsynced; the snapshot is renamed into place, the directory
/// fsynced, then the log renamed, the directory fsynced; then generation
/// `gen` is removed. Opening uses the newest log and the snapshot of its
/// generation, and removes every other file, so a crash at any step leaves
/// either the old generation (the new log was not in place) or the new one.
///
/// # Damage policy
///
/// As the embedded store's: a log that ends in an incomplete frame (the
/// last sync, interrupted before it was acknowledged, or a truncated file)
/// is cut there and reported in [`Recovered::torn_tail`]; any other damage
/// (a checksum mismatch in a frame written whole, a record that does not
/// decode, a gap in the entries, a commit index past the last entry, a
/// damaged or missing snapshot) is [`StoreError::Corrupt`] naming the file
/// and offset, and nothing is loaded.
///
/// # Memory
///
/// Every entry after the snapshot is kept in memory; the node bounds them
/// by compacting (see [`size`](RaftLog::size)). The snapshot's data is kept
/// too (shared, not copied, when raft asks for it).
#[derive(Clone)]
pub(crate) struct RaftLog {
    shared: Arc<Shared>,
}

struct Shared {
    core: RwLock<Core>,
    /// Set when raft asked for a snapshot newer than the stored one.
    snapshot_requested: AtomicBool,
}

struct Core {
    dir: PathBuf,
    mem: Mem,
    disk: Disk,
}

/// The open log file.
struct Disk {
    generation: u64,
    path: PathBuf,
    file: File,
    /// Bytes in the file.
    len: u64,
    /// Records not written yet (the next frame's payload).
    pending: Vec<u8>,
    /// Set when the file can no longer be trusted; every later write fails
    /// with it.
    failed: Option<StoreError>,
    /// Held for the log's life: releases the directory when dropped.
    _lock: File,
}

impl Disk {
    fn check(&self) -> StoreResult<()> {
        match &self.failed {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }
}

/// What the log holds, in memory.
#[derive(Debug, Clone, Default)]
pub(super) struct Mem {
    snapshot: Option<Snapshot>,
    /// The snapshot's index and term (0 without one).
    snap_index: u64,
    snap_term: u64,
    /// The entries after the snapshot: `entries[i]` has index
    /// `snap_index + 1 + i`.
    entries: Vec<Entry>,
    hard_state: HardState,
    conf_state: ConfState,
}

impl Mem {
    /// Starts from `snapshot`, without entries.
    fn restore(&mut self, snapshot: Snapshot) {
        let meta = snapshot.get_metadata();
        self.snap_index = meta.index;
        self.snap_term = meta.term;
        self.conf_state = meta.get_conf_state().clone();
        self.entries.clear();
        self.snapshot = Some(snapshot);
    }

    fn first_index(&self) -> u64 {
        self.snap_index + 1
    }

    fn last_index(&self) -> u64 {
        self.snap_index + self.entries.len() as u64
    }

    /// The term of the entry at `index`, when the log knows it.
    fn term(&self, index: u64) -> Option<u64> {
        if index == self.snap_index {
            return Some(self.snap_term);
        }
        let at = index.checked_sub(self.first_index())?;
        self.entries.get(usize::try_from(at).ok()?).map(|e| e.term)
    }

    /// Appends `entries` (consecutive indexes), replacing those from the
    /// first one's index on; refuses a gap or an overwrite of the snapshot.
    fn append(&mut self, entries: &[Entry]) -> Result<(), String> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if let Some(pair) = entries.windows(2).find(|w| w[1].index != w[0].index + 1) {
            return Err(format!(
                "entries not consecutive: index {} follows {}",
                pair[1].index, pair[0].index
            ));
        }
        if first.index <= self.snap_index {
            return Err(format!(
                "entry at index {} overwrites the snapshot at index {}",
                first.index, self.snap_index
            ));
        }
        if first.index > self.last_index() + 1 {
            return Err(format!(
                "entry at index {} leaves a gap after the last entry {}",
                first.index,
                self.last_index()
            ));
        }
        // first.index > snap_index, so this is at most entries.len().
        self.entries
            .truncate((first.index - self.first_index()) as usize);
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    /// The records that make a new log file hold this state.
    fn records(&self) -> StoreResult<Vec<u8>> {
        let mut records = Vec::new();
        disk::encode_conf_state(&self.conf_state, &mut records)?;
        disk::encode_hard_state(&self.hard_state, &mut records)?;
        for entry in &self.entries {
            disk::encode_entry(entry, &mut records)?;
        }
        Ok(records)
    }
}

fn misuse(reason: String) -> StoreError {
    StoreError::Internal {
        reason: format!("raft log: {reason}"),
    }
}

impl RaftLog {
    /// Opens (creating when absent, mode 0700) the raft log in `dir`.
    pub(crate) fn open(dir: &Path) -> StoreResult<(RaftLog, Recovered)> {
        let opened = disk::open(dir)?;
        let mem = opened.mem;
        let recovered = Recovered {
            fresh: opened.fresh,
            snapshot: mem.snapshot.clone(),
            hard_state: mem.hard_state.clone(),
            conf_state: mem.conf_state.clone(),
            first_index: mem.first_index(),
            last_index: mem.last_index(),
            torn_tail: opened.torn_tail,
        };
        let core = Core {
            dir: dir.to_owned(),
            mem,
            disk: Disk {
                generation: opened.generation,
                path: opened.path,
                file: opened.file,
                len: opened.len,
                pending: Vec::new(),
                failed: None,
                _lock: opened.lock,
            },
        };
        let log = RaftLog {
            shared: Arc::new(Shared {
                core: RwLock::new(core),
                snapshot_requested: AtomicBool::new(false),
            }),
        };
        Ok((log, recovered))
    }

    // Every change to the shared state is made after the last step that can
    // fail or panic, so a poisoned lock still guards a consistent state.
    fn read(&self) -> RwLockReadGuard<'_, Core> {
        self.shared
            .core
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Core> {
        self.shared
            .core
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A fresh log's starting membership (bootstrap of a new cluster): as
    /// `MemStorage::initialize_with_conf_state`. Durable on return. Fails
    /// on a log that holds a membership or entries already.
    #[cfg(test)]
    pub(crate) fn initialize(&self, conf_state: ConfState) -> StoreResult<()> {
        let mut core = self.write();
        core.disk.check()?;
        if core.mem.conf_state != ConfState::default() || core.mem.last_index() > 0 {
            return Err(misuse(format!(
                "initializing a log that is initialized already (membership {:?}, last index {})",
                core.mem.conf_state,
                core.mem.last_index()
            )));
        }
        let mut record = Vec::new();
        disk::encode_conf_state(&conf_state, &mut record)?;
        core.mem.conf_state = conf_state;
        core.disk.pending.extend_from_slice(&record);
        core.sync()
    }

    /// Appends entries (consecutive indexes), replacing any stored entries
    /// at or after the first one's index (raft's conflict truncation);
    /// buffered, durable after [`sync`](RaftLog::sync). Fails, changing
    /// nothing, on entries that overwrite the snapshot or leave a gap.
    pub(crate) fn append(&self, entries: &[Entry]) -> StoreResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut records = Vec::new();
        for entry in entries {
            disk::encode_entry(entry, &mut records)?;
        }
        let mut core = self.write();
        core.disk.check()?;
        core.mem.append(entries).map_err(misuse)?;
        core.disk.pending.extend_from_slice(&records);
        Ok(())
    }

    /// Records the hard state (term, vote, commit); buffered, durable after
    /// [`sync`](RaftLog::sync).
    pub(crate) fn set_hard_state(&self, hs: &HardState) -> StoreResult<()> {
        let mut record = Vec::new();
        disk::encode_hard_state(hs, &mut record)?;
        let mut core = self.write();
        core.disk.check()?;
        core.mem.hard_state = hs.clone();
        core.disk.pending.extend_from_slice(&record);
        Ok(())
    }

    /// Records only the commit index (raft's Ready may change it alone);
    /// buffered, durable after [`sync`](RaftLog::sync).
    pub(crate) fn set_commit(&self, commit: u64) -> StoreResult<()> {
        let mut core = self.write();
        core.disk.check()?;
        core.mem.hard_state.commit = commit;
        disk::encode_commit(commit, &mut core.disk.pending);
        Ok(())
    }

    /// Records the membership after a configuration change was applied;
    /// buffered, durable after [`sync`](RaftLog::sync).
    pub(crate) fn set_conf_state(&self, cs: ConfState) -> StoreResult<()> {
        let mut record = Vec::new();
        disk::encode_conf_state(&cs, &mut record)?;
        let mut core = self.write();
        core.disk.check()?;
        core.mem.conf_state = cs;
        core.disk.pending.extend_from_slice(&record);
        Ok(())
    }

    /// Makes everything appended and set so far durable (one write, one
    /// fdatasync; nothing when nothing changed); called once per raft
    /// Ready.
    pub(crate) fn sync(&self) -> StoreResult<()> {
        self.write().sync()
    }

    /// Installs a snapshot received from the leader: the entries up to its
    /// index are dropped (all of them when the log does not hold its index
    /// with its term), the membership becomes the snapshot's, the hard
    /// state's term is raised to the snapshot's and its commit to the
    /// snapshot's index. Durable on return (with everything buffered).
    /// Fails, changing nothing, on a snapshot that is not newer than the
    /// stored one.
    pub(crate) fn apply_snapshot(&self, snapshot: Snapshot) -> StoreResult<()> {
        let mut core = self.write();
        core.disk.check()?;
        let (index, term) = (snapshot.get_metadata().index, snapshot.get_metadata().term);
        let old = &core.mem;
        if index <= old.snap_index {
            return Err(misuse(format!(
                "installing a snapshot at index {index}, not newer than the stored one at {}",
                old.snap_index
            )));
        }
        let held = old.term(index) == Some(term);
        let mut hard_state = old.hard_state.clone();
        hard_state.term = hard_state.term.max(term);
        hard_state.commit = if held {
            hard_state.commit.max(index)
        } else {
            index
        };
        let entries = if held {
            old.entries[(index - old.snap_index) as usize..].to_vec()
        } else {
            Vec::new()
        };
        let mut mem = Mem::default();
        mem.restore(snapshot);
        mem.entries = entries;
        mem.hard_state = hard_state;
        core.install(mem)
    }

    /// Stores a snapshot of this node's own applied state (its index at
    /// most the commit index, its term that of the entry at its index) and
    /// drops the entries up to its index: the log compaction. The
    /// membership and hard state stay those of the log. Durable on return
    /// (with everything buffered); a crash at any point leaves either the
    /// old or the new state usable. A snapshot at the stored snapshot's
    /// index only syncs; one that does not fit the log fails, changing
    /// nothing.
    pub(crate) fn compact(&self, snapshot: Snapshot) -> StoreResult<()> {
        let mut core = self.write();
        core.disk.check()?;
        let (index, term) = (snapshot.get_metadata().index, snapshot.get_metadata().term);
        let old = &core.mem;
        if index == old.snap_index && term == old.snap_term {
            return core.sync();
        }
        if index < old.snap_index || index > old.hard_state.commit {
            return Err(misuse(format!(
                "compacting to index {index}, outside the stored snapshot at {} to the commit \
                 index {}",
                old.snap_index, old.hard_state.commit
            )));
        }
        if old.term(index) != Some(term) {
            return Err(misuse(format!(
                "compacting to index {index} at term {term}, but the log holds {:?} there",
                old.term(index)
            )));
        }
        let mem = Mem {
            snapshot: Some(snapshot),
            snap_index: index,
            snap_term: term,
            entries: old.entries[(index - old.snap_index) as usize..].to_vec(),
            hard_state: old.hard_state.clone(),
            conf_state: old.conf_state.clone(),
        };
        core.install(mem)
    }

    /// Whether [`Storage::snapshot`] was asked for a snapshot newer than the
    /// one stored since the last call (the node then compacts soon).
    pub(crate) fn take_snapshot_request(&self) -> bool {
        self.shared
            .snapshot_requested
            .swap(false, Ordering::Relaxed)
    }

    /// Bytes of log since the last snapshot (the log file and what is
    /// buffered), and entries held, for the node to decide when to compact.
    pub(crate) fn size(&self) -> (u64, u64) {
        let core = self.read();
        (
            core.disk.len + core.disk.pending.len() as u64,
            core.mem.entries.len() as u64,
        )
    }
}

impl Core {
    fn sync(&mut self) -> StoreResult<()> {
        let disk = &mut self.disk;
        disk.check()?;
        if disk.pending.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(disk.pending.len() + frame::HEADER_LEN);
        frame::encode(&disk.pending, &mut bytes);
        match disk
            .file
            .write_all(&bytes)
            .and_then(|()| disk.file.sync_data())
        {
            Ok(()) => {
                disk.len += bytes.len() as u64;
                disk.pending.clear();
                Ok(())
            }
            Err(e) => {
                let error = StoreError::io("appending to", &disk.path, e);
                disk.failed = Some(error.clone());
                Err(error)
            }
        }
    }

    /// Starts a new generation holding `mem` (which has a snapshot): see
    /// [`RaftLog`], Compaction and snapshots.
    fn install(&mut self, mem: Mem) -> StoreResult<()> {
        let Some(snapshot) = &mem.snapshot else {
            return Err(misuse("a new generation without a snapshot".to_owned()));
        };
        let snapshot_bytes = disk::snapshot_file_bytes(snapshot)?;
        let old = self.disk.generation;
        let new = old + 1;
        let log_bytes = disk::log_file_bytes(new, &mem.records()?);
        let dir = &self.dir;
        let snapshot_path = dir.join(disk::snapshot_name(new));
        let snapshot_tmp = dir.join(disk::tmp_name(&disk::snapshot_name(new)));
        let log_path = dir.join(disk::log_name(new));
        let log_tmp = dir.join(disk::tmp_name(&disk::log_name(new)));
        // Failing here leaves the current generation in use: nothing lost.
        disk::write_synced(&snapshot_tmp, &snapshot_bytes)
            .and_then(|()| disk::write_synced(&log_tmp, &log_bytes))
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&snapshot_tmp);
                let _ = std::fs::remove_file(&log_tmp);
            })?;
        // Once a rename may have happened, which generation a restart opens
        // is unknown: the log must switch or stop writing.
        let switched = disk::rename_into_place(dir, &snapshot_tmp, &snapshot_path)
            .and_then(|()| disk::rename_into_place(dir, &log_tmp, &log_path))
            .and_then(|()| disk::open_append(&log_path));
        let file = match switched {
            Ok(file) => file,
            Err(error) => {
                self.disk.failed = Some(error.clone());
                return Err(error);
            }
        };
        self.disk.generation = new;
        self.disk.path = log_path;
        self.disk.file = file;
        self.disk.len = log_bytes.len() as u64;
        self.disk.pending.clear();
        self.mem = mem;
        disk::remove_generation(&self.dir, old);
        Ok(())
    }
}

impl std::fmt::Debug for RaftLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let core = self.read();
        f.debug_struct("RaftLog")
            .field("dir", &core.dir)
            .field("generation", &core.disk.generation)
            .field("first_index", &core.mem.first_index())
            .field("last_index", &core.mem.last_index())
            .finish_non_exhaustive()
    }
}

fn store_error(error: StorageError) -> ::raft::Error {
    ::raft::Error::Store(error)
}

impl Storage for RaftLog {
    fn initial_state(&self) -> ::raft::Result<RaftState> {
        let core = self.read();
        Ok(RaftState::new(
            core.mem.hard_state.clone(),
            core.mem.conf_state.clone(),
        ))
    }

    /// Entries in `[low, high)`, at most `max_size` bytes of them but at
    /// least one. `Compacted` below the first index; `Unavailable` past the
    /// last entry (where `MemStorage` panics).
    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> ::raft::Result<Vec<Entry>> {
        let max_size = max_size.into();
        let core = self.read();
        let mem = &core.mem;
        if low < mem.first_index() {
            return Err(store_error(StorageError::Compacted));
        }
        if high > mem.last_index() + 1 {
            return Err(store_error(StorageError::Unavailable));
        }
        if low >= high {
            return Ok(Vec::new());
        }
        // first_index <= low < high <= last_index + 1: inside `entries`.
        let from = (low - mem.first_index()) as usize;
        let to = (high - mem.first_index()) as usize;
        // As `raft::util::limit_size`, without copying what it would drop:
        // the first entry always, then more while the total fits.
        let max_size = max_size.filter(|&max| max != ::raft::NO_LIMIT);
        let mut size = 0;
        let mut entries = Vec::new();
        for entry in &mem.entries[from..to] {
            size += u64::from(protobuf::Message::compute_size(entry));
            if !entries.is_empty() && max_size.is_some_and(|max| size > max) {
                break;
            }
            entries.push(entry.clone());
        }
        Ok(entries)
    }

    fn term(&self, idx: u64) -> ::raft::Result<u64> {
        let core = self.read();
        let mem = &core.mem;
        match mem.term(idx) {
            Some(term) => Ok(term),
            None if idx < mem.first_index() => Err(store_error(StorageError::Compacted)),
            None => Err(store_error(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> ::raft::Result<u64> {
        Ok(self.read().mem.first_index())
    }

    fn last_index(&self) -> ::raft::Result<u64> {
        Ok(self.read().mem.last_index())
    }

    /// The stored snapshot when its index is at least `request_index`;
    /// otherwise `SnapshotTemporarilyUnavailable` (raft asks again later),
    /// and [`RaftLog::take_snapshot_request`] says so.
    fn snapshot(&self, request_index: u64, to: u64) -> ::raft::Result<Snapshot> {
        let core = self.read();
        match &core.mem.snapshot {
            Some(snapshot) if super::storage::usable(snapshot, request_index, to) => {
                Ok(snapshot.clone())
            }
            _ => {
                self.shared
                    .snapshot_requested
                    .store(true, Ordering::Relaxed);
                Err(store_error(StorageError::SnapshotTemporarilyUnavailable))
            }
        }
    }
}
