//! The store contract and its local backends.
//!
//! flotilla keeps its desired and observed state in a key-value store with
//! etcd v3 semantics, so that every backend behaves the same:
//!
//! - **Keys and revisions.** Keys are strings (paths such as
//!   `/flotilla/v1/units/web.service`), values bytes. The store has one
//!   revision, which every transaction that changes something moves up by
//!   exactly one (a write that changes nothing, such as deleting an absent
//!   key, or a failed transaction, leaves it alone). Each key carries its
//!   `create_revision`, `mod_revision`, `version` and lease ([`KeyValue`]).
//! - **Transactions.** [`Txn`]: compares on several keys, then one of two
//!   branches of operations, atomically, in one revision. Put, delete and
//!   delete-prefix are one-operation transactions.
//! - **Watches.** [`Store::watch`] streams the changes under a prefix from a
//!   revision on, replaying the history first. Read at revision R, then watch
//!   from R + 1: every later change arrives exactly once, in order. History is
//!   bounded (the local stores bound it in events and in bytes,
//!   [`WatchOptions`]); asking for more than is kept fails with
//!   [`StoreError::Compacted`], and the caller resyncs.
//! - **Leases.** [`Store::grant`] a TTL, put keys on the lease, keep it alive;
//!   when it expires or is revoked its keys are deleted (and watchers see the
//!   deletes).
//!
//! Backends: [`MemoryStore`] (tests; error injection and call counts),
//! [`EmbeddedStore`] (durable, on local disk: the default server store), and
//! `EtcdStore` (an etcd v3 cluster; cargo feature `etcd`, on by default).
//! The first two are the same state machine (`state.rs`); the embedded store
//! adds a write-ahead log and snapshots. All three pass the same contract
//! tests (`tests/contract/`).
//!
//! See `DESIGN.md` (Store; Leadership and fencing) for how the scheduler uses
//! it: every leader write is a transaction that also compares the leader
//! key's revision.

mod embedded;
mod engine;
mod error;
#[cfg(feature = "etcd")]
mod etcd;
pub mod identity;
mod lease;
mod memory;
pub mod raft;
mod state;
mod types;
mod watch;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use flotilla_proto::ClusterId;

pub use embedded::{EmbeddedOptions, EmbeddedStore, Initialized, Recovery, TornTail};
pub use error::{StoreError, StoreResult};
#[cfg(feature = "etcd")]
pub use etcd::{EtcdConfig, EtcdConnectError, EtcdStore, EtcdTls};
pub use memory::{CallCounts, Fault, FaultPoint, MemoryOptions, MemoryStore, Method};
pub use types::{
    Compare, CompareOp, CompareTarget, DeleteResponse, GetResponse, HistoryStats, KeyValue,
    LeaseGrant, LeaseId, Limits, PutResponse, RangeOptions, RangeResponse, Txn, TxnOp,
    TxnOpResponse, TxnResponse, WatchEvent, WatchOptions,
};
pub use watch::Watcher;

/// A boxed future, as the methods of [`Store`] return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A key-value store with etcd v3 semantics (see the [module
/// documentation](self)).
///
/// The methods return boxed futures so that the trait is dyn-compatible: the
/// server picks its backend at run time (embedded, or etcd when configured)
/// and hands every component an `Arc<dyn Store>`, instead of making the
/// server, the leader election, the placement and the reconcile loop generic
/// over the backend. One allocation per call is noise next to what each call
/// costs (an fsync, or a network round trip).
///
/// Every error says what it means for the caller ([`StoreError`]); only
/// [`StoreError::Unavailable`] is worth retrying as is. A write that fails
/// with `Unavailable` or `Io` may still have been applied.
pub trait Store: Send + Sync {
    /// The request limits of this store.
    fn limits(&self) -> Limits;

    /// Reads one key.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<GetResponse>>;

    /// Reads the keys that start with `prefix` (empty: every key), in key
    /// order, a page at a time.
    fn range<'a>(
        &'a self,
        prefix: &'a str,
        options: RangeOptions,
    ) -> BoxFuture<'a, StoreResult<RangeResponse>>;

    /// Runs a transaction, atomically. A transaction that fails (an error,
    /// not `succeeded: false`) changed nothing.
    ///
    /// Fails with [`StoreError::TooManyOps`], [`StoreError::ValueTooLarge`],
    /// [`StoreError::EmptyKey`] or [`StoreError::DuplicateKey`] before doing
    /// anything, and with [`StoreError::LeaseNotFound`] when the branch that
    /// runs puts a key on a lease that does not exist.
    fn txn(&self, txn: Txn) -> BoxFuture<'_, StoreResult<TxnResponse>>;

    /// Watches the keys under `prefix` (empty: every key) from
    /// `from_revision` on; 0 means from the next revision. Replays the kept
    /// history first, then follows live changes. Fails with
    /// [`StoreError::Compacted`] when `from_revision` is older than the
    /// history kept: from this call (the memory and embedded stores), or from
    /// the watcher's first [`Watcher::next`] (etcd says so on the stream).
    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        from_revision: u64,
    ) -> BoxFuture<'a, StoreResult<Watcher>>;

    /// [`watch`](Self::watch), for a caller that never reads the previous
    /// value of a changed key: its events may carry none (`prev: None`).
    /// etcd then does not look each previous value up (etcd 3.4 reads it
    /// from its backend once per event and watcher, which delays thousands
    /// of events by seconds); the other stores keep it at no cost and give
    /// it.
    fn watch_changes<'a>(
        &'a self,
        prefix: &'a str,
        from_revision: u64,
    ) -> BoxFuture<'a, StoreResult<Watcher>> {
        self.watch(prefix, from_revision)
    }

    /// Grants a lease. Backends may round the TTL up (etcd counts in whole
    /// seconds and has a minimum); the answer says what was granted.
    fn grant(&self, ttl: Duration) -> BoxFuture<'_, StoreResult<LeaseGrant>>;

    /// Keeps a lease alive: its deadline becomes a whole TTL from now.
    /// Returns the TTL. Fails with [`StoreError::LeaseNotFound`] once the
    /// lease has expired or was revoked.
    fn keepalive(&self, lease: LeaseId) -> BoxFuture<'_, StoreResult<Duration>>;

    /// The time a lease has left, or [`StoreError::LeaseNotFound`].
    fn time_to_live(&self, lease: LeaseId) -> BoxFuture<'_, StoreResult<Duration>>;

    /// Ends a lease now and deletes its keys (in one revision, if it had
    /// any). Returns the store revision after it.
    fn revoke(&self, lease: LeaseId) -> BoxFuture<'_, StoreResult<u64>>;

    /// Drops the watch history before `revision` (etcd's compact): a later
    /// watch from an earlier revision fails with [`StoreError::Compacted`].
    /// Compacting to a revision already compacted does nothing; a revision
    /// beyond the current one fails with [`StoreError::FutureRevision`].
    fn compact(&self, revision: u64) -> BoxFuture<'_, StoreResult<()>>;

    /// What the watch history holds now (events, accounted bytes, the
    /// oldest revision a watch can start from), for stores that keep it in
    /// this process (memory, embedded); `None` when another server keeps it
    /// (etcd). For tests and metrics.
    fn watch_history(&self) -> Option<HistoryStats> {
        None
    }

    /// The cluster id this store keeps beside its data, if it keeps one:
    /// the embedded store's identity file, checked against its log when it
    /// opened. `None` for stores that keep it as a key, shared by every
    /// server (etcd: see `flotilla_scheduler::identity::cluster_id`).
    fn cluster_id(&self) -> Option<ClusterId> {
        None
    }

    /// Writes one key (on a lease, or on none). One transaction.
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        lease: Option<LeaseId>,
    ) -> BoxFuture<'a, StoreResult<PutResponse>> {
        Box::pin(async move {
            let op = TxnOp::Put {
                key: key.to_owned(),
                value: value.into(),
                lease,
            };
            match single_response(self.txn(Txn::new().and_then([op])).await?) {
                TxnOpResponse::Put(put) => Ok(put),
                other => Err(mismatched(&other)),
            }
        })
    }

    /// Deletes one key. One transaction; the revision moves only if the key
    /// existed.
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<DeleteResponse>> {
        Box::pin(async move {
            match single_response(self.txn(Txn::new().and_then([TxnOp::delete(key)])).await?) {
                TxnOpResponse::Delete(delete) => Ok(delete),
                other => Err(mismatched(&other)),
            }
        })
    }

    /// Deletes every key under `prefix` (not empty), in one revision.
    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, StoreResult<DeleteResponse>> {
        Box::pin(async move {
            let txn = Txn::new().and_then([TxnOp::delete_prefix(prefix)]);
            match single_response(self.txn(txn).await?) {
                TxnOpResponse::Delete(delete) => Ok(delete),
                other => Err(mismatched(&other)),
            }
        })
    }
}

/// The one answer of a one-operation transaction (an empty delete answer if
/// a backend returned none, which the mismatch check then reports).
fn single_response(response: TxnResponse) -> TxnOpResponse {
    let revision = response.revision;
    response
        .responses
        .into_iter()
        .next()
        .unwrap_or(TxnOpResponse::Range(RangeResponse {
            kvs: Vec::new(),
            more: false,
            revision,
        }))
}

/// A backend answered an operation with the answer of another kind: a bug in
/// that backend, reported rather than panicking the server.
fn mismatched(response: &TxnOpResponse) -> StoreError {
    StoreError::Internal {
        reason: format!("a one-operation transaction was answered with {response:?}"),
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked (every
/// lock in the store is held for short sections that do not panic).
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
