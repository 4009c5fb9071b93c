//! What a raft node needs of its log beside raft-rs's [`Storage`] reads:
//! the writes of each Ready, made durable together, and compaction. Two
//! implementations: the durable log on disk (`log.rs`), and raft-rs's
//! `MemStorage` for in-process tests that need no durability.

use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::storage::{MemStorage, Storage};

use crate::StoreResult;

/// A raft log a node can write.
pub(crate) trait LogStorage: Storage + Clone + Send + 'static {
    /// Appends entries, replacing any at or after the first one's index.
    fn append(&self, entries: &[Entry]) -> StoreResult<()>;
    /// Records the hard state.
    fn set_hard_state(&self, hs: &HardState) -> StoreResult<()>;
    /// Records the commit index alone.
    fn set_commit(&self, commit: u64) -> StoreResult<()>;
    /// Records the membership after a change was applied.
    fn set_conf_state(&self, cs: ConfState) -> StoreResult<()>;
    /// Makes everything written so far durable.
    fn sync(&self) -> StoreResult<()>;
    /// Installs a snapshot from the leader.
    fn apply_snapshot(&self, snapshot: Snapshot) -> StoreResult<()>;
    /// Stores a snapshot of this node's applied state and drops the entries
    /// it covers.
    fn compact(&self, snapshot: Snapshot) -> StoreResult<()>;
    /// Whether raft asked for a snapshot newer than the stored one.
    fn take_snapshot_request(&self) -> bool;
    /// Entries held since the last snapshot.
    fn entries_held(&self) -> u64;
}

impl LogStorage for super::log::RaftLog {
    fn append(&self, entries: &[Entry]) -> StoreResult<()> {
        super::log::RaftLog::append(self, entries)
    }

    fn set_hard_state(&self, hs: &HardState) -> StoreResult<()> {
        super::log::RaftLog::set_hard_state(self, hs)
    }

    fn set_commit(&self, commit: u64) -> StoreResult<()> {
        super::log::RaftLog::set_commit(self, commit)
    }

    fn set_conf_state(&self, cs: ConfState) -> StoreResult<()> {
        super::log::RaftLog::set_conf_state(self, cs)
    }

    fn sync(&self) -> StoreResult<()> {
        super::log::RaftLog::sync(self)
    }

    fn apply_snapshot(&self, snapshot: Snapshot) -> StoreResult<()> {
        super::log::RaftLog::apply_snapshot(self, snapshot)
    }

    fn compact(&self, snapshot: Snapshot) -> StoreResult<()> {
        super::log::RaftLog::compact(self, snapshot)
    }

    fn take_snapshot_request(&self) -> bool {
        super::log::RaftLog::take_snapshot_request(self)
    }

    fn entries_held(&self) -> u64 {
        self.size().1
    }
}

/// raft-rs's in-memory storage, for tests: nothing survives the process,
/// and "durable" means "written".
#[derive(Clone, Default)]
pub(crate) struct MemoryLog {
    storage: MemStorage,
    snapshot_requested: std::sync::Arc<std::sync::atomic::AtomicBool>,
    snapshot: std::sync::Arc<std::sync::Mutex<Option<Snapshot>>>,
}

impl MemoryLog {
    pub(crate) fn new(conf_state: Option<ConfState>) -> Self {
        let storage = match conf_state {
            Some(cs) => MemStorage::new_with_conf_state(cs),
            None => MemStorage::new(),
        };
        MemoryLog {
            storage,
            ..MemoryLog::default()
        }
    }
}

fn raft_error(e: raft::Error) -> crate::StoreError {
    crate::StoreError::Internal {
        reason: format!("raft log: {e}"),
    }
}

impl Storage for MemoryLog {
    fn initial_state(&self) -> raft::Result<raft::RaftState> {
        self.storage.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: raft::GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.storage.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.storage.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.storage.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.storage.last_index()
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let stored = crate::lock(&self.snapshot).clone();
        match stored {
            Some(s) if usable(&s, request_index, to) => Ok(s),
            _ => {
                self.snapshot_requested
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                Err(raft::Error::Store(
                    raft::StorageError::SnapshotTemporarilyUnavailable,
                ))
            }
        }
    }
}

/// Whether a stored snapshot can be sent to `to`: new enough, and taken
/// after `to` became a member (a server added since would refuse it).
pub(crate) fn usable(snapshot: &Snapshot, request_index: u64, to: u64) -> bool {
    let meta = snapshot.get_metadata();
    let conf = meta.get_conf_state();
    meta.index >= request_index && (conf.voters.contains(&to) || conf.learners.contains(&to))
}

impl LogStorage for MemoryLog {
    fn append(&self, entries: &[Entry]) -> StoreResult<()> {
        self.storage.wl().append(entries).map_err(raft_error)
    }

    fn set_hard_state(&self, hs: &HardState) -> StoreResult<()> {
        self.storage.wl().set_hardstate(hs.clone());
        Ok(())
    }

    fn set_commit(&self, commit: u64) -> StoreResult<()> {
        self.storage.wl().mut_hard_state().set_commit(commit);
        Ok(())
    }

    fn set_conf_state(&self, cs: ConfState) -> StoreResult<()> {
        self.storage.wl().set_conf_state(cs);
        Ok(())
    }

    fn sync(&self) -> StoreResult<()> {
        Ok(())
    }

    fn apply_snapshot(&self, snapshot: Snapshot) -> StoreResult<()> {
        self.storage
            .wl()
            .apply_snapshot(snapshot.clone())
            .map_err(raft_error)?;
        *crate::lock(&self.snapshot) = Some(snapshot);
        Ok(())
    }

    fn compact(&self, snapshot: Snapshot) -> StoreResult<()> {
        let index = snapshot.get_metadata().index;
        *crate::lock(&self.snapshot) = Some(snapshot);
        // MemStorage keeps the entry at `index` as its dummy first entry.
        self.storage.wl().compact(index).map_err(raft_error)
    }

    fn take_snapshot_request(&self) -> bool {
        self.snapshot_requested
            .swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    fn entries_held(&self) -> u64 {
        let first = self.storage.first_index().unwrap_or(1);
        let last = self.storage.last_index().unwrap_or(0);
        (last + 1).saturating_sub(first)
    }
}
