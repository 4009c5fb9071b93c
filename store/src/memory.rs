//! [`MemoryStore`]: the store for unit tests. Same state machine, watches
//! and leases as the embedded store, without a disk; it counts calls and can
//! be told to fail them.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::engine::{Committer, Engine, Shared};
use super::state::{Command, Outcome, StateMachine};
use super::{
    BoxFuture, GetResponse, HistoryStats, LeaseGrant, LeaseId, Limits, RangeOptions, RangeResponse,
    Store, StoreError, StoreResult, Txn, TxnResponse, WatchOptions, Watcher, lock,
};

/// Options of a [`MemoryStore`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryOptions {
    /// Request limits.
    pub limits: Limits,
    /// Watch history.
    pub watch: WatchOptions,
}

/// A [`Store`] method, for counting calls and aiming faults. `put`,
/// `delete` and `delete_prefix` are transactions, and count as [`Method::Txn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// [`Store::get`]
    Get,
    /// [`Store::range`]
    Range,
    /// [`Store::txn`] (and put, delete, delete-prefix)
    Txn,
    /// [`Store::watch`]
    Watch,
    /// [`Store::grant`]
    Grant,
    /// [`Store::keepalive`]
    KeepAlive,
    /// [`Store::time_to_live`]
    TimeToLive,
    /// [`Store::revoke`]
    Revoke,
    /// [`Store::compact`]
    Compact,
}

impl Method {
    const ALL: [Method; 9] = [
        Method::Get,
        Method::Range,
        Method::Txn,
        Method::Watch,
        Method::Grant,
        Method::KeepAlive,
        Method::TimeToLive,
        Method::Revoke,
        Method::Compact,
    ];

    fn index(self) -> usize {
        match self {
            Method::Get => 0,
            Method::Range => 1,
            Method::Txn => 2,
            Method::Watch => 3,
            Method::Grant => 4,
            Method::KeepAlive => 5,
            Method::TimeToLive => 6,
            Method::Revoke => 7,
            Method::Compact => 8,
        }
    }
}

/// When an injected fault strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// Before the call does anything: nothing changes.
    Before,
    /// After the call did its work: a write is applied, yet the caller gets
    /// the error (a timeout after commit; tests that writers are idempotent).
    After,
}

/// A fault to inject into the next matching calls.
#[derive(Debug, Clone)]
pub struct Fault {
    /// The method it strikes (`None`: any).
    pub method: Option<Method>,
    /// How many calls it strikes.
    pub times: usize,
    /// Before or after the call's work.
    pub point: FaultPoint,
    /// The error returned.
    pub error: StoreError,
}

impl Fault {
    /// The next `times` calls (of any method) fail with
    /// [`StoreError::Unavailable`] before doing anything.
    pub fn unavailable(times: usize) -> Self {
        Fault {
            method: None,
            times,
            point: FaultPoint::Before,
            error: StoreError::Unavailable {
                reason: "injected fault".to_owned(),
            },
        }
    }

    /// Aims the fault at one method.
    pub fn on(mut self, method: Method) -> Self {
        self.method = Some(method);
        self
    }

    /// Strikes after the call's work instead of before.
    pub fn after(mut self) -> Self {
        self.point = FaultPoint::After;
        self
    }
}

/// How many times each method was called (faulted calls included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallCounts([u64; 9]);

impl CallCounts {
    /// Calls of one method.
    pub fn of(&self, method: Method) -> u64 {
        self.0[method.index()]
    }

    /// Calls of every method.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// Applies commands at once: no log.
#[derive(Debug)]
struct Direct;

impl Committer for Direct {
    fn commit(
        &self,
        shared: &Arc<Shared>,
        command: Command,
    ) -> impl Future<Output = StoreResult<Outcome>> + Send {
        std::future::ready(shared.apply_one(&command))
    }
}

/// An in-memory [`Store`] for tests: the embedded store's state machine,
/// watches and leases (driven by tokio's clock, so `tokio::time::pause`
/// controls expiry), plus call counts and fault injection.
///
/// Creating one needs no runtime; granting a lease starts its expiry task,
/// which needs a tokio runtime.
pub struct MemoryStore {
    engine: Arc<Engine<Direct>>,
    faults: Mutex<VecDeque<Fault>>,
    calls: [AtomicU64; 9],
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("revision", &self.engine.shared().read().revision())
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store with default options.
    pub fn new() -> Self {
        MemoryStore::with_options(MemoryOptions::default())
    }

    /// An empty store.
    pub fn with_options(options: MemoryOptions) -> Self {
        let shared = Arc::new(Shared::new(StateMachine::default(), options.watch));
        MemoryStore {
            engine: Engine::new(shared, Direct, options.limits),
            faults: Mutex::new(VecDeque::new()),
            calls: Default::default(),
        }
    }

    /// Queues a fault; faults strike in the order injected.
    pub fn inject(&self, fault: Fault) {
        if fault.times > 0 {
            lock(&self.faults).push_back(fault);
        }
    }

    /// Makes the next `times` calls fail with [`StoreError::Unavailable`].
    pub fn fail_next(&self, times: usize) {
        self.inject(Fault::unavailable(times));
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        lock(&self.faults).clear();
    }

    /// Calls made so far.
    pub fn calls(&self) -> CallCounts {
        let mut counts = CallCounts::default();
        for method in Method::ALL {
            counts.0[method.index()] = self.calls[method.index()].load(Ordering::Relaxed);
        }
        counts
    }

    /// Ends every open watch with [`StoreError::Unavailable`] (after the
    /// events already queued for it), as a broken connection would.
    pub fn interrupt_watchers(&self) {
        self.engine
            .shared()
            .interrupt_watchers(&StoreError::Unavailable {
                reason: "injected watch interruption".to_owned(),
            });
    }

    fn take_fault(&self, method: Method) -> Option<(FaultPoint, StoreError)> {
        let mut faults = lock(&self.faults);
        let index = faults
            .iter()
            .position(|f| f.method.is_none_or(|m| m == method))?;
        let fault = &mut faults[index];
        fault.times -= 1;
        let struck = (fault.point, fault.error.clone());
        if fault.times == 0 {
            faults.remove(index);
        }
        Some(struck)
    }

    async fn call<T>(
        &self,
        method: Method,
        work: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        self.calls[method.index()].fetch_add(1, Ordering::Relaxed);
        match self.take_fault(method) {
            None => work.await,
            Some((FaultPoint::Before, error)) => Err(error),
            Some((FaultPoint::After, error)) => {
                let _ = work.await;
                Err(error)
            }
        }
    }
}

impl Store for MemoryStore {
    fn limits(&self) -> Limits {
        self.engine.limits()
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<GetResponse>> {
        Box::pin(self.call(Method::Get, async move { self.engine.get(key) }))
    }

    fn range<'a>(
        &'a self,
        prefix: &'a str,
        options: RangeOptions,
    ) -> BoxFuture<'a, StoreResult<RangeResponse>> {
        Box::pin(self.call(
            Method::Range,
            async move { self.engine.range(prefix, &options) },
        ))
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, StoreResult<TxnResponse>> {
        Box::pin(self.call(Method::Txn, self.engine.txn(txn)))
    }

    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        from_revision: u64,
    ) -> BoxFuture<'a, StoreResult<Watcher>> {
        Box::pin(self.call(Method::Watch, async move {
            self.engine.watch(prefix, from_revision)
        }))
    }

    fn grant(&self, ttl: Duration) -> BoxFuture<'_, StoreResult<LeaseGrant>> {
        Box::pin(self.call(Method::Grant, self.engine.grant(ttl)))
    }

    fn keepalive(&self, lease: LeaseId) -> BoxFuture<'_, StoreResult<Duration>> {
        Box::pin(self.call(
            Method::KeepAlive,
            async move { self.engine.keepalive(lease) },
        ))
    }

    fn time_to_live(&self, lease: LeaseId) -> BoxFuture<'_, StoreResult<Duration>> {
        Box::pin(self.call(Method::TimeToLive, async move {
            self.engine.time_to_live(lease)
        }))
    }

    fn revoke(&self, lease: LeaseId) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(self.call(Method::Revoke, self.engine.revoke(lease)))
    }

    fn compact(&self, revision: u64) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(self.call(
            Method::Compact,
            async move { self.engine.compact(revision) },
        ))
    }

    fn watch_history(&self) -> Option<HistoryStats> {
        Some(self.engine.watch_history())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn faults_strike_in_order_and_count() {
        let store = MemoryStore::new();
        store.inject(Fault::unavailable(1).on(Method::Get));
        store.inject(Fault::unavailable(2).on(Method::Txn).after());
        assert!(store.put("/a", b"1", None).await.is_err());
        assert!(store.put("/b", b"2", None).await.is_err());
        // The "after" faults let the writes through.
        assert!(
            store
                .range("/", RangeOptions::default())
                .await
                .unwrap()
                .kvs
                .len()
                == 2
        );
        assert!(matches!(
            store.get("/a").await,
            Err(StoreError::Unavailable { .. })
        ));
        assert!(store.get("/a").await.unwrap().kv.is_some());
        let calls = store.calls();
        assert_eq!(calls.of(Method::Txn), 2);
        assert_eq!(calls.of(Method::Get), 2);
        assert_eq!(calls.total(), 5);
    }

    #[tokio::test]
    async fn interrupted_watchers_end_with_unavailable() {
        let store = MemoryStore::new();
        let mut watcher = store.watch("/", 0).await.unwrap();
        store.put("/a", b"1", None).await.unwrap();
        store.interrupt_watchers();
        assert_eq!(watcher.next().await.unwrap().len(), 1);
        assert!(matches!(
            watcher.next().await,
            Err(StoreError::Unavailable { .. })
        ));
        // A new watch works, from where the old one stopped.
        let mut again = store.watch("/", watcher.next_revision()).await.unwrap();
        store.put("/b", b"2", None).await.unwrap();
        assert_eq!(again.next().await.unwrap()[0].key(), "/b");
    }
}
