#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_store::{
    BoxFuture, GetResponse, LeaseGrant, LeaseId, Limits, MemoryStore, RangeOptions, RangeResponse,
    StoreResult, TxnResponse, Watcher,
};
use tokio::sync::watch;

use super::*;
use crate::keys::Keys;
use crate::leader::{ElectionConfig, campaign};
use crate::records::LeaderRecord;

/// A memory store that records the transactions it is given: whether each
/// writes anything but deletes, how many delete-only transactions had
/// finished when it started, and the most in flight at once. Each
/// transaction lets the others run before it reaches the store, so that
/// those sent together are seen together.
struct Recording {
    inner: MemoryStore,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    deletes_done: AtomicUsize,
    /// `(writes other than deletes, delete-only transactions done before)`
    started: Mutex<Vec<(bool, usize)>>,
}

impl Recording {
    fn new() -> Self {
        Recording {
            inner: MemoryStore::new(),
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
            deletes_done: AtomicUsize::new(0),
            started: Mutex::new(Vec::new()),
        }
    }
}

impl Store for Recording {
    fn limits(&self) -> Limits {
        self.inner.limits()
    }
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<GetResponse>> {
        self.inner.get(key)
    }
    fn range<'a>(
        &'a self,
        prefix: &'a str,
        options: RangeOptions,
    ) -> BoxFuture<'a, StoreResult<RangeResponse>> {
        self.inner.range(prefix, options)
    }
    fn txn(&self, txn: Txn) -> BoxFuture<'_, StoreResult<TxnResponse>> {
        Box::pin(async move {
            let writes = txn.success.iter().any(|op| matches!(op, TxnOp::Put { .. }));
            self.started
                .lock()
                .unwrap()
                .push((writes, self.deletes_done.load(Ordering::SeqCst)));
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::task::yield_now().await;
            let out = self.inner.txn(txn).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            if !writes {
                self.deletes_done.fetch_add(1, Ordering::SeqCst);
            }
            out
        })
    }
    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        from_revision: u64,
    ) -> BoxFuture<'a, StoreResult<Watcher>> {
        self.inner.watch(prefix, from_revision)
    }
    fn grant(&self, ttl: Duration) -> BoxFuture<'_, StoreResult<LeaseGrant>> {
        self.inner.grant(ttl)
    }
    fn keepalive(&self, lease: LeaseId) -> BoxFuture<'_, StoreResult<Duration>> {
        self.inner.keepalive(lease)
    }
    fn time_to_live(&self, lease: LeaseId) -> BoxFuture<'_, StoreResult<Duration>> {
        self.inner.time_to_live(lease)
    }
    fn revoke(&self, lease: LeaseId) -> BoxFuture<'_, StoreResult<u64>> {
        self.inner.revoke(lease)
    }
    fn compact(&self, revision: u64) -> BoxFuture<'_, StoreResult<()>> {
        self.inner.compact(revision)
    }
}

fn election(id: &str) -> ElectionConfig {
    ElectionConfig {
        keys: Keys::default(),
        ttl: Duration::from_secs(30),
        record: LeaderRecord {
            id: id.into(),
            address: format!("{id}:7070"),
            version: "test".into(),
        },
        follow: None,
    }
}

/// What a lost machine's units ask for, as the reconcile loop orders it:
/// per unit, the delete of its old assignment, its record, its new
/// assignment.
fn moves(units: usize) -> Vec<TxnOp> {
    (0..units)
        .flat_map(|i| {
            [
                TxnOp::delete(format!("/t/assign/old/u{i}")),
                TxnOp::put(format!("/t/sched/u{i}"), b"new".to_vec()),
                TxnOp::put(format!("/t/assign/new/u{i}"), Vec::new()),
            ]
        })
        .collect()
}

/// A store holding `units` assignments to the machine that is lost.
async fn with_old_assignments(units: usize) -> Arc<Recording> {
    let store = Arc::new(Recording::new());
    for i in 0..units {
        store
            .inner
            .put(&format!("/t/assign/old/u{i}"), &[], None)
            .await
            .unwrap();
    }
    store
}

#[tokio::test]
async fn a_commit_sends_its_transactions_together_deletes_first() {
    let store = with_old_assignments(1000).await;
    let dyn_store: Arc<dyn Store> = store.clone();
    let (_stop, shutdown) = watch::channel(false);
    let leadership = campaign(dyn_store.clone(), &election("a"), shutdown)
        .await
        .unwrap();
    // Only the commit's transactions count.
    store.started.lock().unwrap().clear();
    store.most_in_flight.store(0, Ordering::SeqCst);
    let ops = moves(1000);
    let answers = commit(&*dyn_store, &leadership, &ops).await.unwrap();

    // Every write is answered, in the order of the writes.
    assert_eq!(answers.len(), ops.len());
    for (op, answer) in ops.iter().zip(&answers) {
        match (op, answer) {
            (TxnOp::Delete { .. }, TxnOpResponse::Delete(d)) => {
                assert_eq!(d.deleted.len(), 1, "{op:?}");
            }
            (TxnOp::Put { .. }, TxnOpResponse::Put(_)) => {}
            other => panic!("answer out of order: {other:?}"),
        }
    }
    for i in 0..1000 {
        assert!(
            store
                .inner
                .get(&format!("/t/assign/old/u{i}"))
                .await
                .unwrap()
                .kv
                .is_none()
        );
        assert!(
            store
                .inner
                .get(&format!("/t/assign/new/u{i}"))
                .await
                .unwrap()
                .kv
                .is_some()
        );
    }
    // 1,000 deletes and 2,000 puts in transactions of 128: 8 and 16.
    let started = store.started.lock().unwrap().clone();
    let max = store.limits().max_txn_ops;
    assert_eq!(
        started.len(),
        1000usize.div_ceil(max) + 2000usize.div_ceil(max)
    );
    let deletes = started.iter().filter(|(writes, _)| !writes).count();
    assert_eq!(deletes, 1000usize.div_ceil(max));
    for (writes, deletes_before) in &started {
        if *writes {
            assert_eq!(
                *deletes_before, deletes,
                "a transaction of puts started before every delete was committed"
            );
        }
    }
    assert_eq!(
        store.most_in_flight.load(Ordering::SeqCst),
        COMMIT_IN_FLIGHT,
        "transactions were not sent together, or more than the bound were"
    );
}

#[tokio::test]
async fn a_deposed_leader_commits_none_of_its_transactions() {
    let store = with_old_assignments(1000).await;
    let dyn_store: Arc<dyn Store> = store.clone();
    let (_stop, shutdown) = watch::channel(false);
    let first = campaign(dyn_store.clone(), &election("a"), shutdown.clone())
        .await
        .unwrap();
    // Its lease ends behind its back, and another server leads.
    store.revoke(first.lease()).await.unwrap();
    let _second = campaign(dyn_store.clone(), &election("b"), shutdown)
        .await
        .unwrap();
    let ops = moves(1000);
    let ended = commit(&*dyn_store, &first, &ops).await;
    assert!(
        matches!(ended, Err(ReconcileError::LeadershipLost)),
        "{ended:?}"
    );
    let written = store
        .inner
        .range("/t/", RangeOptions::default())
        .await
        .unwrap();
    assert_eq!(written.kvs.len(), 1000, "a deposed leader wrote");
    assert!(
        written
            .kvs
            .iter()
            .all(|kv| kv.key.starts_with("/t/assign/old/")),
        "a deposed leader wrote"
    );
}
