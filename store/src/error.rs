//! What an error from the store means for its caller.

use std::path::PathBuf;
use std::sync::Arc;

use flotilla_proto::ClusterId;

use super::LeaseId;

/// An error from a [`Store`](super::Store) call.
///
/// Each variant says what it means for the caller. Only
/// [`Unavailable`](StoreError::Unavailable) is temporary
/// ([`StoreError::is_temporary`]): retry it with backoff. The others do not go
/// away by retrying the same call: either the request is wrong (a caller bug or
/// bad input), or the caller must do something else first (resync after
/// [`Compacted`](StoreError::Compacted), grant a new lease after
/// [`LeaseNotFound`](StoreError::LeaseNotFound)), or this store instance is
/// finished (closed, broken disk, corrupt files) and the process must reopen
/// it or stop.
///
/// **Indeterminate writes.** When a write ([`Store::txn`](super::Store::txn),
/// a put, a delete, a grant or a revoke) fails with `Unavailable` or `Io`, the
/// write may or may not have been applied (a timeout after the commit, a
/// failed fsync of a record that later turns out to be on disk). Writers must
/// be idempotent or re-read before retrying, as with etcd. All other errors
/// guarantee that the write changed nothing.
///
/// Cloning is cheap (the I/O source is shared), so that one failed group commit
/// can be reported to every caller in the group.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Temporary: the store could not serve the call now (connection lost,
    /// leader change, overload, an injected fault). Retry with backoff. For a
    /// write the outcome is unknown (see the type's documentation).
    #[error("store unavailable: {reason}")]
    Unavailable {
        /// What went wrong, for logs.
        reason: String,
    },

    /// The history a watch asked for is gone: events before
    /// `compact_revision` are no longer kept (a bounded history window, an
    /// explicit [`compact`](super::Store::compact), or a watcher so slow that
    /// the history moved past it). Resync: read the keys again (at revision R)
    /// and watch from R + 1.
    #[error(
        "revision {requested} is compacted: the oldest revision a watch can start from is {compact_revision}"
    )]
    Compacted {
        /// The revision the caller asked for (or needed next).
        requested: u64,
        /// The oldest revision a watch can start from now.
        compact_revision: u64,
    },

    /// Asked for a revision the store has not reached yet (compacting the
    /// future). A caller bug.
    #[error("revision {requested} is in the future: the store is at revision {current}")]
    FutureRevision {
        /// The revision asked for.
        requested: u64,
        /// The store's current revision.
        current: u64,
    },

    /// The lease does not exist: it was never granted, was revoked, or
    /// expired. Keys that were on it are gone. Grant a new lease (and rewrite
    /// the keys that should live on it).
    #[error("lease {lease} not found (it expired, was revoked or never existed)")]
    LeaseNotFound {
        /// The lease asked for.
        lease: LeaseId,
    },

    /// A lease TTL that the store cannot grant (zero, or more than etcd's
    /// 9,000,000,000 s). A caller bug.
    #[error("invalid lease ttl {ttl_ms} ms: it must be between 1 ms and 9,000,000,000 s")]
    InvalidTtl {
        /// The TTL asked for, in milliseconds.
        ttl_ms: u128,
    },

    /// A transaction with more compares or operations (in one branch) than
    /// [`Limits::max_txn_ops`](super::Limits::max_txn_ops). Nothing was
    /// written; split the work into several transactions.
    #[error("transaction has {ops} {what}, more than the limit of {max}")]
    TooManyOps {
        /// Which list is too long: "compares", "success operations" or
        /// "failure operations".
        what: &'static str,
        /// How many it has.
        ops: usize,
        /// The limit.
        max: usize,
    },

    /// A value larger than [`Limits::max_value_size`](super::Limits::max_value_size).
    /// Nothing was written. A caller bug or bad input.
    #[error("value of key {key:?} is {size} bytes, more than the limit of {max}")]
    ValueTooLarge {
        /// The key written.
        key: String,
        /// The value's size in bytes.
        size: usize,
        /// The limit in bytes.
        max: usize,
    },

    /// An empty key (or an empty prefix given to a delete-prefix, which would
    /// delete everything). A caller bug.
    #[error("empty {what}")]
    EmptyKey {
        /// "key" or "delete prefix".
        what: &'static str,
    },

    /// One branch of a transaction writes the same key twice (two puts, or a
    /// put inside a deleted key or prefix). etcd refuses these too. A caller
    /// bug.
    #[error("key {key:?} is written more than once in one transaction branch")]
    DuplicateKey {
        /// The key written twice.
        key: String,
    },

    /// The store was closed (or its owner dropped it). Permanent for this
    /// store instance.
    #[error("store is closed")]
    Closed,

    /// Another process (or another open store in this process) holds the
    /// embedded store's directory. Permanent until that one closes.
    #[error("store directory {path} is locked by another process")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },

    /// A store file is damaged: a record whose checksum does not match, or
    /// that cannot be decoded, or files that contradict each other. The store
    /// refuses to open rather than load damaged data. Needs an operator:
    /// restore from a backup or another replica.
    #[error("corrupt store file {path} at offset {offset}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damaged record in the file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },

    /// The embedded store's directory was initialized for a cluster (it has
    /// an identity file) but the store's state is gone: its log, or its log
    /// and snapshots, are missing or empty (a lost disk, an `rm`, a restore
    /// of part of the directory). Opening it would start an empty cluster,
    /// and every agent would then stop every unit; so the store refuses.
    /// Needs an operator: restore the directory, or empty it to really
    /// start a new cluster.
    #[error(
        "store directory {dir} belongs to cluster {cluster_id} (initialized {created_at}), but {missing}; restore the directory from a backup, or, to really start a new cluster, empty the directory"
    )]
    StateLost {
        /// The data directory.
        dir: PathBuf,
        /// The cluster its identity file names.
        cluster_id: ClusterId,
        /// When the identity file was written.
        created_at: String,
        /// What is missing, naming the files.
        missing: String,
    },

    /// The directory is not an embedded store's: it holds other files but
    /// no identity file and no log (a mistyped `--data-dir`), or it is the
    /// data directory of a server on etcd. The store starts a new cluster
    /// only in an empty (or absent) directory. Needs an operator.
    #[error("refusing to use {dir} as the store's directory: {reason}")]
    NotAStore {
        /// The directory.
        dir: PathBuf,
        /// What it holds instead, and what to do.
        reason: String,
    },

    /// A backend broke its own contract (answered an operation with the
    /// answer of another kind). A bug, not retried: report it.
    #[error("internal store error: {reason}")]
    Internal {
        /// What was wrong.
        reason: String,
    },

    /// Reading or writing the store's files failed. Permanent for this store
    /// instance: after a failed write or fsync the log's state on disk is
    /// unknown, so the embedded store refuses every later write (the process
    /// should stop and reopen the store, which replays what is on disk). For a
    /// write the outcome is unknown (see the type's documentation).
    #[error("i/o error while {action} {path}: {source}")]
    Io {
        /// What the store was doing ("appending to", "opening", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: Arc<std::io::Error>,
    },
}

impl StoreError {
    /// Whether retrying the same call later may succeed: true only for
    /// [`Unavailable`](StoreError::Unavailable).
    pub fn is_temporary(&self) -> bool {
        match self {
            StoreError::Unavailable { .. } => true,
            StoreError::Compacted { .. }
            | StoreError::FutureRevision { .. }
            | StoreError::LeaseNotFound { .. }
            | StoreError::InvalidTtl { .. }
            | StoreError::TooManyOps { .. }
            | StoreError::ValueTooLarge { .. }
            | StoreError::EmptyKey { .. }
            | StoreError::DuplicateKey { .. }
            | StoreError::Closed
            | StoreError::Locked { .. }
            | StoreError::Corrupt { .. }
            | StoreError::StateLost { .. }
            | StoreError::NotAStore { .. }
            | StoreError::Internal { .. }
            | StoreError::Io { .. } => false,
        }
    }

    /// An I/O error on `path` while `action` (such as "creating").
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            action,
            path: path.into(),
            source: Arc::new(source),
        }
    }
}

/// The result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;
