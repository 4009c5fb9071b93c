//! The agent's metrics (docs/metrics.md lists them all): reconcile passes
//! and their duration, D-Bus call latency, the units this machine runs by
//! systemd's active state, unit restarts and container health.
//!
//! [`AgentMetrics`] holds the handles; cloning it shares them. `flotilla
//! agent --metrics-listen` registers one and serves it; the reconcile loop
//! ([`crate::reconcile::Reconciler::with_metrics`]), the reporter
//! ([`crate::report::Reporter::with_metrics`]) and systemd
//! ([`crate::systemd::DbusSystemd::with_metrics`]) record into it. A
//! default one that is registered nowhere records for no one.
//!
//! The units' gauges and the restarts come from the states the reporter
//! reads from systemd (when systemd says a unit changed), whether or not
//! the servers can be reached: a machine cut off from its servers still
//! shows what it runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use flotilla_proto::{Health, UnitState};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// systemd's active states; any other is counted as `other`.
const ACTIVE_STATES: [&str; 8] = [
    "active",
    "reloading",
    "inactive",
    "failed",
    "activating",
    "deactivating",
    "maintenance",
    "refreshing",
];

/// What became of a reconcile pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassResult {
    /// Everything was applied.
    Ok,
    /// Some changes did not apply; the pass runs again after a backoff.
    Retry,
    /// The pass stopped on an error; it runs again after a backoff.
    Error,
}

impl PassResult {
    pub fn as_str(self) -> &'static str {
        match self {
            PassResult::Ok => "ok",
            PassResult::Retry => "retry",
            PassResult::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActiveLabel {
    active_state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HealthLabel {
    health: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// 0.1 ms to 3 s, doubling.
fn dbus_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// What the agent last saw of a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    active_state: &'static str,
    /// For a container unit (its shim reported a container): its health.
    health: Option<&'static str>,
    n_restarts: u32,
}

/// The agent's metrics; see the [module documentation](self).
#[derive(Debug, Clone)]
pub struct AgentMetrics {
    passes: Family<ResultLabel, Counter>,
    pass_durations: Histogram,
    dbus: Histograms<MethodLabel>,
    restarts: Counter,
    units: Family<ActiveLabel, Gauge>,
    containers: Family<HealthLabel, Gauge>,
    seen: Arc<Mutex<HashMap<String, Seen>>>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        AgentMetrics {
            passes: Family::default(),
            // 5 ms to 80 s, doubling.
            pass_durations: Histogram::new(exponential_buckets(0.005, 2.0, 15)),
            dbus: Family::new_with_constructor(dbus_buckets),
            restarts: Counter::default(),
            units: Family::default(),
            containers: Family::default(),
            seen: Arc::default(),
        }
    }
}

fn health_name(health: Health) -> &'static str {
    match health {
        Health::None => "none",
        Health::Starting => "starting",
        Health::Healthy => "healthy",
        Health::Unhealthy => "unhealthy",
    }
}

impl AgentMetrics {
    /// Adds every metric to `registry`, and `flotilla_build_info`.
    pub fn register(&self, registry: &mut Registry) {
        let info: Family<BuildLabels, Gauge> = Family::default();
        info.get_or_create(&BuildLabels {
            version: env!("CARGO_PKG_VERSION"),
        })
        .set(1);
        registry.register(
            "flotilla_build_info",
            "The version of flotilla this process runs (always 1)",
            info,
        );
        registry.register(
            "flotilla_agent_reconcile_passes",
            "Reconcile passes, by result: ok, retry (some changes did not apply) or error",
            self.passes.clone(),
        );
        registry.register(
            "flotilla_agent_reconcile_duration_seconds",
            "How long reconcile passes took",
            self.pass_durations.clone(),
        );
        registry.register(
            "flotilla_agent_dbus_call_duration_seconds",
            "How long systemd took to answer the agent's D-Bus calls, by method",
            self.dbus.clone(),
        );
        registry.register(
            "flotilla_agent_unit_restarts",
            "Restarts of this machine's units by systemd (Restart=), from their NRestarts, since the agent started",
            self.restarts.clone(),
        );
        registry.register(
            "flotilla_agent_units",
            "This machine's units, by systemd's active state",
            self.units.clone(),
        );
        registry.register(
            "flotilla_agent_containers",
            "This machine's container units whose shim reported a container, by health",
            self.containers.clone(),
        );
        // Every result shows from the start, at 0, so that rates and
        // alerts have a series to work on.
        for result in [PassResult::Ok, PassResult::Retry, PassResult::Error] {
            let _ = self.passes.get_or_create_owned(&ResultLabel {
                result: result.as_str(),
            });
        }
    }

    /// Records a reconcile pass.
    pub fn pass(&self, result: PassResult, took: Duration) {
        self.passes
            .get_or_create(&ResultLabel {
                result: result.as_str(),
            })
            .inc();
        self.pass_durations.observe(took.as_secs_f64());
    }

    /// Records a D-Bus call to systemd (its member name, such as
    /// `StartUnit`).
    pub fn dbus_call(&self, method: &'static str, took: Duration) {
        self.dbus
            .get_or_create(&MethodLabel { method })
            .observe(took.as_secs_f64());
    }

    /// Takes in a unit's state as read from systemd.
    pub fn observe(&self, state: &UnitState) {
        let active_state = ACTIVE_STATES
            .into_iter()
            .find(|s| *s == state.active_state)
            .unwrap_or("other");
        let now = Seen {
            active_state,
            health: state
                .container_id
                .as_ref()
                .map(|_| health_name(state.health)),
            n_restarts: state.n_restarts,
        };
        let before = self.lock().insert(state.unit.as_str().to_owned(), now);
        if let Some(before) = before {
            // NRestarts starts again from 0 when the unit is started anew.
            let restarted = if now.n_restarts >= before.n_restarts {
                now.n_restarts - before.n_restarts
            } else {
                now.n_restarts
            };
            self.restarts.inc_by(u64::from(restarted));
        }
        self.count(before, -1);
        self.count(Some(now), 1);
    }

    /// A unit no longer runs here.
    pub fn forget(&self, unit: &str) {
        let before = self.lock().remove(unit);
        self.count(before, -1);
    }

    fn count(&self, seen: Option<Seen>, by: i64) {
        let Some(seen) = seen else { return };
        self.units
            .get_or_create(&ActiveLabel {
                active_state: seen.active_state,
            })
            .inc_by(by);
        if let Some(health) = seen.health {
            self.containers
                .get_or_create(&HealthLabel { health })
                .inc_by(by);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        // Plain values: consistent even if a holder panicked.
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_proto::{MachineId, UnitName};

    fn state(unit: &str, active: &str, restarts: u32, health: Option<Health>) -> UnitState {
        UnitState {
            unit: UnitName::parse(unit).unwrap(),
            machine: MachineId::parse(&"ab".repeat(16)).unwrap(),
            load_state: "loaded".into(),
            active_state: active.into(),
            sub_state: "running".into(),
            hash: None,
            started_hash: None,
            main_pid: None,
            n_restarts: restarts,
            container_id: health.map(|_| "c1".to_owned()),
            health: health.unwrap_or_default(),
            since_ms: 0,
            last_error: None,
        }
    }

    fn page(metrics: &AgentMetrics) -> String {
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn units_restarts_and_health_follow_what_systemd_says() {
        let m = AgentMetrics::default();
        m.observe(&state("a.service", "active", 2, None));
        m.observe(&state("c.service", "activating", 0, Some(Health::Starting)));
        let text = page(&m);
        assert!(
            text.contains("flotilla_agent_units{active_state=\"active\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("flotilla_agent_units{active_state=\"activating\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("flotilla_agent_containers{health=\"starting\"} 1\n"),
            "{text}"
        );
        // The first reading of a unit is where its count starts.
        assert!(
            text.contains("flotilla_agent_unit_restarts_total 0\n"),
            "{text}"
        );

        m.observe(&state("a.service", "activating", 3, None));
        m.observe(&state("a.service", "active", 5, None));
        m.observe(&state("c.service", "active", 0, Some(Health::Healthy)));
        // Started anew: counted from 0 again.
        m.observe(&state("a.service", "active", 1, None));
        let text = page(&m);
        assert!(
            text.contains("flotilla_agent_unit_restarts_total 4\n"),
            "{text}"
        );
        assert!(
            text.contains("flotilla_agent_units{active_state=\"active\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("flotilla_agent_units{active_state=\"activating\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("flotilla_agent_containers{health=\"starting\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("flotilla_agent_containers{health=\"healthy\"} 1\n"),
            "{text}"
        );

        m.forget("c.service");
        m.forget("gone.service");
        m.observe(&state("a.service", "odd-state", 1, None));
        let text = page(&m);
        assert!(
            text.contains("flotilla_agent_units{active_state=\"active\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("flotilla_agent_units{active_state=\"other\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("flotilla_agent_containers{health=\"healthy\"} 0\n"),
            "{text}"
        );
    }

    #[test]
    fn passes_and_calls_are_counted() {
        let m = AgentMetrics::default();
        let text = page(&m);
        assert!(
            text.contains("flotilla_agent_reconcile_passes_total{result=\"error\"} 0\n"),
            "{text}"
        );
        m.pass(PassResult::Ok, Duration::from_millis(20));
        m.pass(PassResult::Retry, Duration::from_millis(20));
        m.dbus_call("StartUnit", Duration::from_millis(1));
        let text = page(&m);
        assert!(
            text.contains("flotilla_agent_reconcile_passes_total{result=\"ok\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("flotilla_agent_reconcile_duration_seconds_count 2\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "flotilla_agent_dbus_call_duration_seconds_count{method=\"StartUnit\"} 1\n"
            ),
            "{text}"
        );
    }
}
