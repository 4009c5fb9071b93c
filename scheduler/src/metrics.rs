//! The scheduler's metrics (docs/metrics.md lists them all): leadership,
//! placements, the units by state, machines lost, and the store's latency.
//!
//! [`SchedulerMetrics`] holds the handles; cloning it shares them. The
//! server registers one in the registry it serves at `/metrics`
//! ([`SchedulerMetrics::register`]) and hands it to the reconcile loop
//! ([`crate::reconciler::ReconcilerConfig::metrics`]) and to the store
//! ([`MeteredStore`](crate::metered_store::MeteredStore)). A default one is registered nowhere:
//! what it counts is simply not shown, which suits tests and tools.
//!
//! The gauges that only the leader knows (units by state, unschedulable
//! units, machines, the watch lag) are a [`Collector`] over the last
//! snapshot the reconcile loop published: nothing is read from the store
//! when Prometheus scrapes, and a server that does not lead shows none of
//! them (rather than zeros that would add up wrongly across servers).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::census::{Counts, STATES};
use crate::placement::UnassignReason;

/// The labels of the store's latency.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreOp {
    /// `embedded`, `etcd` or `memory`.
    pub backend: &'static str,
    /// The store method: `get`, `range`, `txn`, `watch`, `grant`,
    /// `keepalive`, `time_to_live`, `revoke`, `compact`.
    pub op: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// A histogram family whose histograms all have the same buckets.
pub type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// 0.5 ms to 8 s, doubling: a local fsync to an etcd under stress.
fn store_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

/// The store's side of the metrics: what [`MeteredStore`](crate::metered_store::MeteredStore)
/// records.
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    durations: Histograms<StoreOp>,
    /// The revision of the newest write this server committed.
    write_revision: Arc<AtomicU64>,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            durations: Family::new_with_constructor(store_buckets),
            write_revision: Arc::default(),
        }
    }
}

impl StoreMetrics {
    /// Records how long one call took.
    pub fn observe(&self, op: StoreOp, took: Duration) {
        self.durations
            .get_or_create(&op)
            .observe(took.as_secs_f64());
    }

    /// Records a write this server committed at `revision`.
    pub fn wrote(&self, revision: u64) {
        self.write_revision.fetch_max(revision, Ordering::Relaxed);
    }

    /// The revision of the newest write this server committed.
    pub fn write_revision(&self) -> u64 {
        self.write_revision.load(Ordering::Relaxed)
    }
}

/// What the leader's reconcile loop last published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaderSnapshot {
    pub counts: Counts,
    /// Live machines in the placement view.
    pub machines: u64,
    /// The newest revision the loop has applied from its watch.
    pub applied_revision: u64,
}

/// The scheduler's metrics; see the [module documentation](self).
#[derive(Debug, Clone, Default)]
pub struct SchedulerMetrics {
    leader: Gauge,
    leader_changes: Counter,
    placements: Counter,
    unassignments: Family<ReasonLabel, Counter>,
    machines_lost: Counter,
    store: StoreMetrics,
    snapshot: Arc<Mutex<Option<LeaderSnapshot>>>,
}

impl SchedulerMetrics {
    /// Adds every metric to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "flotilla_leader",
            "1 while this server leads the cluster, else 0",
            self.leader.clone(),
        );
        registry.register(
            "flotilla_leader_changes",
            "Times this server became the leader; summed over the servers, the leader changes of the cluster",
            self.leader_changes.clone(),
        );
        registry.register(
            "flotilla_placements",
            "Units this server placed on a machine while it led",
            self.placements.clone(),
        );
        registry.register(
            "flotilla_unassignments",
            "Units this server took off a machine while it led, by reason",
            self.unassignments.clone(),
        );
        registry.register(
            "flotilla_machines_lost",
            "Machines whose registration ended (lease expired, or removed) while this server led",
            self.machines_lost.clone(),
        );
        registry.register(
            "flotilla_store_request_duration_seconds",
            "How long calls to the store took, by backend and operation",
            self.store.durations.clone(),
        );
        registry.register_collector(Box::new(LeaderCollector {
            snapshot: Arc::clone(&self.snapshot),
            write_revision: Arc::clone(&self.store.write_revision),
        }));
    }

    /// The store's side, for [`MeteredStore`](crate::metered_store::MeteredStore).
    pub fn store(&self) -> &StoreMetrics {
        &self.store
    }

    /// This server became the leader.
    pub(crate) fn lead(&self) {
        self.leader.set(1);
        self.leader_changes.inc();
    }

    /// This server no longer leads: the leader's gauges go.
    pub(crate) fn follow(&self) {
        self.leader.set(0);
        *self.lock() = None;
    }

    pub(crate) fn placed(&self, n: u64) {
        if n > 0 {
            self.placements.inc_by(n);
        }
    }

    pub(crate) fn unassigned(&self, reason: &UnassignReason) {
        self.unassignments
            .get_or_create(&ReasonLabel {
                reason: reason.kind(),
            })
            .inc();
    }

    pub(crate) fn machine_lost(&self) {
        self.machines_lost.inc();
    }

    /// Publishes what the leader's loop knows now.
    pub(crate) fn publish(&self, snapshot: LeaderSnapshot) {
        *self.lock() = Some(snapshot);
    }

    /// The last snapshot published while leading.
    pub fn snapshot(&self) -> Option<LeaderSnapshot> {
        *self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<LeaderSnapshot>> {
        // A plain value: consistent even if a holder panicked.
        self.snapshot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The leader's gauges, from the last snapshot; nothing when not leading.
#[derive(Debug)]
struct LeaderCollector {
    snapshot: Arc<Mutex<Option<LeaderSnapshot>>>,
    write_revision: Arc<AtomicU64>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    desired: &'static str,
    current: &'static str,
}

impl Collector for LeaderCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = *self.snapshot.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(s) = snapshot else {
            return Ok(());
        };
        let mut units = encoder.encode_descriptor(
            "flotilla_units",
            "Units by desired and current state (the leader only; templates not counted)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for desired in STATES {
            for current in STATES {
                let labels = StateLabels {
                    desired: desired.as_str(),
                    current: current.as_str(),
                };
                let value = i64::try_from(s.counts.units(desired, current)).unwrap_or(i64::MAX);
                ConstGauge::new(value).encode(units.encode_family(&labels)?)?;
            }
        }
        let gauges = [
            (
                "flotilla_units_unschedulable",
                "Units that want a machine and were found none (the leader only)",
                s.counts.unschedulable,
            ),
            (
                "flotilla_machines",
                "Live machines in the leader's placement view (the leader only)",
                s.machines,
            ),
            (
                "flotilla_watch_lag_revisions",
                "Revisions between the newest write this server committed and the newest change its reconcile loop applied from its watch (the leader only)",
                self.write_revision
                    .load(Ordering::Relaxed)
                    .saturating_sub(s.applied_revision),
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

/// The registry in OpenMetrics text, for tests.
#[cfg(test)]
pub(crate) fn render(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).unwrap_or_default();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_proto::DesiredState;

    #[test]
    fn the_leaders_gauges_show_only_while_it_leads() {
        let metrics = SchedulerMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let text = render(&registry);
        assert!(text.contains("flotilla_leader 0\n"), "{text}");
        assert!(!text.contains("flotilla_units{"), "{text}");

        metrics.lead();
        let mut counts = Counts::default();
        counts.by_state[2][2] = 5;
        counts.unschedulable = 2;
        metrics.store().wrote(12);
        metrics.publish(LeaderSnapshot {
            counts,
            machines: 3,
            applied_revision: 10,
        });
        let text = render(&registry);
        assert!(text.contains("flotilla_leader 1\n"), "{text}");
        assert!(text.contains("flotilla_leader_changes_total 1\n"), "{text}");
        assert!(
            text.contains("flotilla_units{desired=\"launched\",current=\"launched\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("flotilla_units{desired=\"loaded\",current=\"inactive\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("flotilla_units_unschedulable 2\n"), "{text}");
        assert!(text.contains("flotilla_machines 3\n"), "{text}");
        assert!(text.contains("flotilla_watch_lag_revisions 2\n"), "{text}");
        assert_eq!(
            metrics.snapshot().map(|s| s
                .counts
                .units(DesiredState::Launched, DesiredState::Launched)),
            Some(5)
        );

        metrics.follow();
        let text = render(&registry);
        assert!(text.contains("flotilla_leader 0\n"), "{text}");
        assert!(!text.contains("flotilla_units"), "{text}");
        assert!(!text.contains("flotilla_watch_lag"), "{text}");
    }
}
