//! [`MeteredStore`]: any store, with the time of each call recorded in the
//! server's metrics (`flotilla_store_request_duration_seconds`), and the
//! revision of each write it commits (for the leader's watch lag).

use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_proto::ClusterId;

use crate::metrics::{StoreMetrics, StoreOp};
use flotilla_store::{
    BoxFuture, GetResponse, HistoryStats, LeaseGrant, LeaseId, Limits, RangeOptions, RangeResponse,
    Store, StoreResult, Txn, TxnOp, TxnResponse, Watcher,
};

/// A store whose calls are timed; it behaves exactly as the store it wraps.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    backend: &'static str,
    metrics: StoreMetrics,
}

impl std::fmt::Debug for MeteredStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredStore")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl MeteredStore {
    /// Wraps `inner`, whose backend is named `backend` in the labels
    /// (`embedded`, `etcd`, `memory`).
    pub fn new(inner: Arc<dyn Store>, backend: &'static str, metrics: StoreMetrics) -> Self {
        MeteredStore {
            inner,
            backend,
            metrics,
        }
    }

    fn record(&self, op: &'static str, started: Instant) {
        self.metrics.observe(
            StoreOp {
                backend: self.backend,
                op,
            },
            started.elapsed(),
        );
    }

    /// Runs `call`, recording how long it took as `op`.
    fn timed<'a, T: Send + 'a>(
        &'a self,
        op: &'static str,
        call: BoxFuture<'a, T>,
    ) -> BoxFuture<'a, T> {
        Box::pin(async move {
            let started = Instant::now();
            let out = call.await;
            self.record(op, started);
            out
        })
    }
}

/// Whether the branch that ran wrote a key (so that the answer's revision
/// is the write's own).
fn wrote(txn_has_put: (bool, bool), response: &TxnResponse) -> bool {
    if response.succeeded {
        txn_has_put.0
    } else {
        txn_has_put.1
    }
}

fn has_put(ops: &[TxnOp]) -> bool {
    ops.iter().any(|op| matches!(op, TxnOp::Put { .. }))
}

impl Store for MeteredStore {
    fn limits(&self) -> Limits {
        self.inner.limits()
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<GetResponse>> {
        self.timed("get", self.inner.get(key))
    }

    fn range<'a>(
        &'a self,
        prefix: &'a str,
        options: RangeOptions,
    ) -> BoxFuture<'a, StoreResult<RangeResponse>> {
        self.timed("range", self.inner.range(prefix, options))
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, StoreResult<TxnResponse>> {
        let puts = (has_put(&txn.success), has_put(&txn.failure));
        Box::pin(async move {
            let started = Instant::now();
            let out = self.inner.txn(txn).await;
            self.record("txn", started);
            if let Ok(response) = &out
                && wrote(puts, response)
            {
                self.metrics.wrote(response.revision);
            }
            out
        })
    }

    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        from_revision: u64,
    ) -> BoxFuture<'a, StoreResult<Watcher>> {
        self.timed("watch", self.inner.watch(prefix, from_revision))
    }

    fn watch_changes<'a>(
        &'a self,
        prefix: &'a str,
        from_revision: u64,
    ) -> BoxFuture<'a, StoreResult<Watcher>> {
        self.timed("watch", self.inner.watch_changes(prefix, from_revision))
    }

    fn grant(&self, ttl: Duration) -> BoxFuture<'_, StoreResult<LeaseGrant>> {
        self.timed("grant", self.inner.grant(ttl))
    }

    fn keepalive(&self, lease: LeaseId) -> BoxFuture<'_, StoreResult<Duration>> {
        self.timed("keepalive", self.inner.keepalive(lease))
    }

    fn time_to_live(&self, lease: LeaseId) -> BoxFuture<'_, StoreResult<Duration>> {
        self.timed("time_to_live", self.inner.time_to_live(lease))
    }

    fn revoke(&self, lease: LeaseId) -> BoxFuture<'_, StoreResult<u64>> {
        self.timed("revoke", self.inner.revoke(lease))
    }

    fn compact(&self, revision: u64) -> BoxFuture<'_, StoreResult<()>> {
        self.timed("compact", self.inner.compact(revision))
    }

    fn watch_history(&self) -> Option<HistoryStats> {
        self.inner.watch_history()
    }

    fn cluster_id(&self) -> Option<ClusterId> {
        self.inner.cluster_id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{SchedulerMetrics, render};
    use flotilla_store::MemoryStore;

    #[tokio::test]
    async fn calls_are_timed_and_writes_remembered() {
        let metrics = SchedulerMetrics::default();
        let mut registry = prometheus_client::registry::Registry::default();
        metrics.register(&mut registry);
        let store = MeteredStore::new(
            Arc::new(MemoryStore::new()),
            "memory",
            metrics.store().clone(),
        );
        store.put("/a", b"1", None).await.unwrap();
        store.put("/b", b"2", None).await.unwrap();
        store.get("/a").await.unwrap();
        store.range("/", RangeOptions::default()).await.unwrap();
        let text = render(&registry);
        let count = |op: &str| {
            format!(
                "flotilla_store_request_duration_seconds_count{{backend=\"memory\",op=\"{op}\"}} "
            )
        };
        assert!(text.contains(&(count("txn") + "2\n")), "{text}");
        assert!(text.contains(&(count("get") + "1\n")), "{text}");
        assert!(text.contains(&(count("range") + "1\n")), "{text}");
        assert!(!text.contains(&count("grant")), "{text}");
        // A transaction that only reads does not move the revision known
        // to be written.
        let revision = store.get("/b").await.unwrap().revision;
        let before = metrics.store().write_revision();
        assert_eq!(before, revision);
        store
            .txn(Txn::new().and_then([TxnOp::get("/a")]))
            .await
            .unwrap();
        assert_eq!(metrics.store().write_revision(), before);
    }
}
