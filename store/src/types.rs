//! The values that go in and out of a [`Store`](super::Store).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A lease's id. Positive and random (63 bits), so that one lease cannot be
/// told from another; two live leases never share one. (etcd's lease ids
/// are `int64`, hence the signed type.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId(pub i64);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // etcd prints lease ids in hex; so do we, so that logs line up.
        write!(f, "{:x}", self.0)
    }
}

/// A key, its value and its history counters, as etcd v3 keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key, a path such as `/flotilla/v1/units/web.service`.
    pub key: String,
    /// The value. Shared, so that the store, its watch history and every
    /// watcher hold one copy.
    pub value: Arc<[u8]>,
    /// The revision of the transaction that created the key (since it was
    /// last absent).
    pub create_revision: u64,
    /// The revision of the transaction that last wrote the key.
    pub mod_revision: u64,
    /// How many times the key was written since it was created: 1 after the
    /// first put.
    pub version: u64,
    /// The lease the key lives on, if any: when the lease ends, the key is
    /// deleted.
    pub lease: Option<LeaseId>,
}

/// The answer to [`Store::get`](super::Store::get).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetResponse {
    /// The key, if it exists.
    pub kv: Option<KeyValue>,
    /// The store revision the read was at. A watch from `revision + 1` sees
    /// every later change.
    pub revision: u64,
}

/// How a [`Store::range`](super::Store::range) is bounded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeOptions {
    /// At most this many keys; 0 means no limit (etcd's convention).
    pub limit: usize,
    /// Only keys strictly after this one (the last key of the previous page).
    pub start_after: Option<String>,
}

impl RangeOptions {
    /// At most `limit` keys per answer (0: no limit).
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Only keys strictly after `key`.
    pub fn start_after(mut self, key: impl Into<String>) -> Self {
        self.start_after = Some(key.into());
        self
    }
}

/// The answer to [`Store::range`](super::Store::range).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeResponse {
    /// The keys, in byte order of the key.
    pub kvs: Vec<KeyValue>,
    /// Whether more keys match after the last one returned (the limit cut the
    /// answer short). Ask again with `start_after` = the last key.
    pub more: bool,
    /// The store revision the read was at.
    ///
    /// Pages of one listing are each read at their own revision. To list and
    /// then follow changes, watch from the *first* page's revision + 1: the
    /// watch may then repeat changes that later pages already show, which a
    /// caller recognises by `mod_revision` (apply an event only if it is newer
    /// than what the caller holds).
    pub revision: u64,
}

/// The answer to a put (alone or inside a transaction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutResponse {
    /// The store revision after the write (inside a transaction: the
    /// transaction's revision).
    pub revision: u64,
    /// The key as it was before, if it existed.
    pub prev: Option<KeyValue>,
}

/// The answer to a delete or delete-prefix (alone or inside a transaction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteResponse {
    /// The store revision after the write (unchanged when nothing was
    /// deleted).
    pub revision: u64,
    /// The keys deleted, as they were before, in key order.
    pub deleted: Vec<KeyValue>,
}

/// How a [`Compare`] compares the key's current state with its target
/// (etcd's `CompareResult`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// current == target
    Equal,
    /// current != target
    NotEqual,
    /// current > target
    Greater,
    /// current < target
    Less,
}

/// What a [`Compare`] looks at, and the value to compare it with.
///
/// On an absent key, version, create and mod revisions are 0 and the lease is
/// `None`, so `Version(0) == ` means "the key does not exist"; a `Value`
/// compare on an absent key is always false, whatever the operator (etcd does
/// the same).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareTarget {
    /// The value, compared as bytes (lexicographically).
    Value(Arc<[u8]>),
    /// The key's version.
    Version(u64),
    /// The key's create revision.
    CreateRevision(u64),
    /// The key's mod revision.
    ModRevision(u64),
    /// The key's lease (`None`: no lease; ordered as etcd orders lease ids,
    /// with no lease as 0).
    Lease(Option<LeaseId>),
}

/// One condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    /// The key looked at.
    pub key: String,
    /// The operator.
    pub op: CompareOp,
    /// What is compared, and with what.
    pub target: CompareTarget,
}

impl Compare {
    /// A compare on the value.
    pub fn value(key: impl Into<String>, op: CompareOp, value: impl Into<Arc<[u8]>>) -> Self {
        Compare {
            key: key.into(),
            op,
            target: CompareTarget::Value(value.into()),
        }
    }

    /// A compare on the version.
    pub fn version(key: impl Into<String>, op: CompareOp, version: u64) -> Self {
        Compare {
            key: key.into(),
            op,
            target: CompareTarget::Version(version),
        }
    }

    /// A compare on the create revision.
    pub fn create_revision(key: impl Into<String>, op: CompareOp, revision: u64) -> Self {
        Compare {
            key: key.into(),
            op,
            target: CompareTarget::CreateRevision(revision),
        }
    }

    /// A compare on the mod revision.
    pub fn mod_revision(key: impl Into<String>, op: CompareOp, revision: u64) -> Self {
        Compare {
            key: key.into(),
            op,
            target: CompareTarget::ModRevision(revision),
        }
    }

    /// A compare on the lease.
    pub fn lease(key: impl Into<String>, op: CompareOp, lease: Option<LeaseId>) -> Self {
        Compare {
            key: key.into(),
            op,
            target: CompareTarget::Lease(lease),
        }
    }

    /// Holds when the key does not exist (etcd's `create_revision == 0`).
    pub fn absent(key: impl Into<String>) -> Self {
        Compare::create_revision(key, CompareOp::Equal, 0)
    }

    /// Holds when the key exists.
    pub fn exists(key: impl Into<String>) -> Self {
        Compare::create_revision(key, CompareOp::Greater, 0)
    }
}

/// One operation of a transaction branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// Write a key (on a lease, or on none: a put without a lease takes the
    /// key off the lease it was on).
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: Arc<[u8]>,
        /// The lease to put the key on.
        lease: Option<LeaseId>,
    },
    /// Delete a key (nothing happens if it is absent).
    Delete {
        /// The key.
        key: String,
    },
    /// Delete every key that starts with `prefix` (which must not be empty).
    DeletePrefix {
        /// The prefix.
        prefix: String,
    },
    /// Read a key. Reads inside a transaction see the writes of the
    /// operations before them in the same branch.
    Get {
        /// The key.
        key: String,
    },
    /// Read keys by prefix.
    Range {
        /// The prefix (empty: every key).
        prefix: String,
        /// Limit and start.
        options: RangeOptions,
    },
}

impl TxnOp {
    /// A put without a lease.
    pub fn put(key: impl Into<String>, value: impl Into<Arc<[u8]>>) -> Self {
        TxnOp::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        }
    }

    /// A put on a lease.
    pub fn put_with_lease(
        key: impl Into<String>,
        value: impl Into<Arc<[u8]>>,
        lease: LeaseId,
    ) -> Self {
        TxnOp::Put {
            key: key.into(),
            value: value.into(),
            lease: Some(lease),
        }
    }

    /// A delete.
    pub fn delete(key: impl Into<String>) -> Self {
        TxnOp::Delete { key: key.into() }
    }

    /// A delete of every key under `prefix`.
    pub fn delete_prefix(prefix: impl Into<String>) -> Self {
        TxnOp::DeletePrefix {
            prefix: prefix.into(),
        }
    }

    /// A read of one key.
    pub fn get(key: impl Into<String>) -> Self {
        TxnOp::Get { key: key.into() }
    }

    /// A read by prefix.
    pub fn range(prefix: impl Into<String>, options: RangeOptions) -> Self {
        TxnOp::Range {
            prefix: prefix.into(),
            options,
        }
    }

    /// Whether the operation writes.
    pub fn is_write(&self) -> bool {
        match self {
            TxnOp::Put { .. } | TxnOp::Delete { .. } | TxnOp::DeletePrefix { .. } => true,
            TxnOp::Get { .. } | TxnOp::Range { .. } => false,
        }
    }
}

/// A multi-key compare-and-swap: if every compare holds, the `success`
/// operations run, otherwise the `failure` ones; atomically, in one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// The conditions (all must hold; none: the success branch runs).
    pub compares: Vec<Compare>,
    /// What runs when every compare holds.
    pub success: Vec<TxnOp>,
    /// What runs otherwise.
    pub failure: Vec<TxnOp>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Txn::default()
    }

    /// Adds conditions.
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.compares.extend(compares);
        self
    }

    /// Adds operations to the success branch.
    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.success.extend(ops);
        self
    }

    /// Adds operations to the failure branch.
    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.failure.extend(ops);
        self
    }

    /// Whether neither branch writes (such a transaction never changes the
    /// revision).
    pub fn is_read_only(&self) -> bool {
        !self
            .success
            .iter()
            .chain(&self.failure)
            .any(TxnOp::is_write)
    }
}

/// The answer to one operation of a transaction, in the order of the
/// operations of the branch that ran. Revisions inside are the transaction's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOpResponse {
    /// For [`TxnOp::Put`].
    Put(PutResponse),
    /// For [`TxnOp::Delete`] and [`TxnOp::DeletePrefix`].
    Delete(DeleteResponse),
    /// For [`TxnOp::Get`].
    Get(GetResponse),
    /// For [`TxnOp::Range`].
    Range(RangeResponse),
}

/// The answer to [`Store::txn`](super::Store::txn).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether every compare held (so the success branch ran).
    pub succeeded: bool,
    /// The store revision after the transaction: a new revision if it wrote
    /// anything, the current one otherwise.
    pub revision: u64,
    /// One answer per operation of the branch that ran.
    pub responses: Vec<TxnOpResponse>,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was written (created or updated). `kv.mod_revision` is the
    /// event's revision.
    Put {
        /// The key as written.
        kv: KeyValue,
        /// The key as it was before, if it existed.
        prev: Option<KeyValue>,
    },
    /// A key was deleted (by a delete, a delete-prefix, or the end of its
    /// lease).
    Delete {
        /// The key.
        key: String,
        /// The revision of the delete.
        revision: u64,
        /// The key as it was before (the memory and embedded stores always
        /// know it).
        prev: Option<KeyValue>,
    },
}

impl WatchEvent {
    /// The revision of the transaction that made the change.
    pub fn revision(&self) -> u64 {
        match self {
            WatchEvent::Put { kv, .. } => kv.mod_revision,
            WatchEvent::Delete { revision, .. } => *revision,
        }
    }

    /// The key changed.
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put { kv, .. } => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }

    /// The bytes this event is counted for in watch history and watcher
    /// queues ([`WatchOptions`]): its key and value, the previous key and
    /// value it carries, and a fixed overhead for the event itself and the
    /// shared values' headers. Values shared with the store or other events
    /// are counted in full, so the sum over events is an upper bound of
    /// what they keep reachable.
    pub fn accounted_bytes(&self) -> usize {
        fn kv_bytes(kv: &KeyValue) -> usize {
            kv.key.len() + kv.value.len() + SHARED_VALUE_HEADER
        }
        let bytes = match self {
            WatchEvent::Put { kv, prev } => kv_bytes(kv) + prev.as_ref().map_or(0, kv_bytes),
            WatchEvent::Delete { key, prev, .. } => key.len() + prev.as_ref().map_or(0, kv_bytes),
        };
        bytes + std::mem::size_of::<WatchEvent>()
    }
}

/// The reference counts in front of an `Arc<[u8]>`'s bytes.
const SHARED_VALUE_HEADER: usize = 2 * std::mem::size_of::<usize>();

/// The answer to [`Store::grant`](super::Store::grant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The new lease.
    pub id: LeaseId,
    /// Its TTL: it ends this long after the grant or the last keepalive.
    pub ttl: Duration,
}

/// A store's request limits. The etcd backend splits bulk work into
/// transactions of at most `max_txn_ops`; so should every caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most compares, and most operations per branch, in one transaction
    /// (etcd's `--max-txn-ops`, 128 by default).
    pub max_txn_ops: usize,
    /// Largest value, in bytes.
    pub max_value_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_txn_ops: 128,
            max_value_size: 1024 * 1024,
        }
    }
}

/// How much watch history the memory and embedded stores keep, and how
/// much a watcher that does not read may hold.
///
/// Memory is bounded in events and in bytes: an event is counted with the
/// bytes of its key and value and of the previous key and value it carries,
/// plus a fixed overhead ([`WatchEvent::accounted_bytes`]). A value shared
/// by the store, several events and several watchers is counted once per
/// event that holds it, so the count is an upper bound of the memory the
/// history keeps reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchOptions {
    /// The history window, in events: a watch can start from any revision
    /// whose events are still in it. Whole revisions are dropped from the
    /// front when it is full, and a watch from before them fails with
    /// [`Compacted`](super::StoreError::Compacted).
    pub history_events: usize,
    /// The history window, in accounted bytes: whole revisions are dropped
    /// from the front until the history holds at most this many (a single
    /// revision larger than this is not kept at all: watchers that read
    /// live changes still receive it, through their queues).
    pub history_bytes: usize,
    /// Events buffered for one watcher that does not read. Beyond it, the
    /// watcher falls back to reading the history window (and gets
    /// [`Compacted`](super::StoreError::Compacted) if it falls out of it).
    pub watcher_queue_events: usize,
    /// Accounted bytes buffered for one watcher that does not read, with
    /// the same fallback. A queue holding nothing but one revision may pass
    /// it (so that a live watcher receives even a revision larger than the
    /// bound), and takes no more events until that revision is read.
    pub watcher_queue_bytes: usize,
}

impl WatchOptions {
    /// The default history window in events.
    pub const DEFAULT_HISTORY_EVENTS: usize = 100_000;
    /// The default history window in accounted bytes: 64 MiB.
    pub const DEFAULT_HISTORY_BYTES: usize = 64 * 1024 * 1024;
    /// The default queue of one watcher in events.
    pub const DEFAULT_WATCHER_QUEUE_EVENTS: usize = 4096;
    /// The default queue of one watcher in accounted bytes: 8 MiB.
    pub const DEFAULT_WATCHER_QUEUE_BYTES: usize = 8 * 1024 * 1024;
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            history_events: Self::DEFAULT_HISTORY_EVENTS,
            history_bytes: Self::DEFAULT_HISTORY_BYTES,
            watcher_queue_events: Self::DEFAULT_WATCHER_QUEUE_EVENTS,
            watcher_queue_bytes: Self::DEFAULT_WATCHER_QUEUE_BYTES,
        }
    }
}

/// What a local store's watch history holds now
/// ([`Store::watch_history`](super::Store::watch_history)), for tests and
/// metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryStats {
    /// Events kept.
    pub events: usize,
    /// Their accounted bytes ([`WatchEvent::accounted_bytes`]).
    pub bytes: usize,
    /// The oldest revision a watch can start from.
    pub compact_revision: u64,
    /// The store's revision.
    pub current_revision: u64,
    /// The bounds in force.
    pub options: WatchOptions,
}
