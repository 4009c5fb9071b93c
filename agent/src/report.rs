//! Observed state, reported as it changes: the reporter turns systemd's
//! signals (a unit's properties changed, a job ended) into [`UnitState`]s
//! and sends them to the servers in batches.
//!
//! - Nothing is polled: a unit is read again only when systemd says it
//!   changed, when the reconcile loop changed what it knows of it, or
//!   after the machine (re)registered. Reading a unit that changed costs
//!   no call of its own on D-Bus: its state is what systemd's signal of
//!   the change carried ([`SystemdManager::unit_statuses`]), with the load
//!   states of all the units of a flush in one `ListUnitsByNames` call.
//! - Changes are gathered for a short window ([`DEFAULT_BATCH`]) after the
//!   first one, then sent in one call, with only the units whose state
//!   differs from what was last sent. After a (re)registration every unit
//!   is sent.
//! - A report that fails is sent again later, with backoff, merged with
//!   whatever changed meanwhile.
//! - Units that no longer run here are sent as `removed`.
//!
//! A container unit's shim puts the container in the service's status:
//! `STATUS=flotilla: container=<id> health=<none|starting|healthy|unhealthy>`;
//! [`parse_status`] reads it back. A shim that failed leaves
//! `flotilla: failed: <reason>`, the unit's error once it is not active.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use flotilla_api::client::{Client, ClientError};
use flotilla_proto::backoff::Backoff;
use flotilla_proto::wire::StateReport;
use flotilla_proto::{Health, MachineId, UnitName, UnitState};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::metrics::AgentMetrics;
use crate::reconcile::{Pass, UnitNote};
use crate::systemd::{ChangeFeed, Closed, SystemdManager, UnitProperties};

/// How long changes are gathered before they are sent.
pub const DEFAULT_BATCH: Duration = Duration::from_millis(100);

/// How many units' properties a flush reads at once (on the connection the
/// reconcile passes share; see [`crate::reconcile::IN_FLIGHT`]).
const READS_IN_FLIGHT: usize = 16;

/// The prefix of the status a container unit's shim sets.
pub const STATUS_PREFIX: &str = "flotilla: ";

/// The container id and health in a unit's `StatusText`; none for a
/// status without [`STATUS_PREFIX`] (a plain unit, or a shim that has not
/// said yet).
pub fn parse_status(status: &str) -> (Option<String>, Health) {
    let Some(rest) = status.strip_prefix(STATUS_PREFIX) else {
        return (None, Health::None);
    };
    let mut container = None;
    let mut health = Health::None;
    for word in rest.split_whitespace() {
        match word.split_once('=') {
            Some(("container", id)) if !id.is_empty() => container = Some(id.to_owned()),
            Some(("health", h)) => {
                health = match h {
                    "starting" => Health::Starting,
                    "healthy" => Health::Healthy,
                    "unhealthy" => Health::Unhealthy,
                    _ => Health::None,
                }
            }
            _ => {}
        }
    }
    (container, health)
}

/// The state of a unit systemd runs, as the cluster sees it.
pub fn unit_state(
    machine: &MachineId,
    unit: &UnitName,
    props: &UnitProperties,
    note: &UnitNote,
) -> UnitState {
    let (container_id, health) = parse_status(&props.status_text);
    let last_error = if props.is_active() {
        None
    } else {
        // The shim's own words first: systemd clears the status at each
        // start, so it is about this run.
        shim_failure(&props.status_text)
            .or_else(|| note.error.clone())
            .or_else(|| failure(props))
    };
    UnitState {
        unit: unit.clone(),
        machine: machine.clone(),
        load_state: props.load_state.clone(),
        active_state: props.active_state.clone(),
        sub_state: props.sub_state.clone(),
        hash: note.hash.clone(),
        started_hash: note.started.clone(),
        main_pid: (props.main_pid != 0).then_some(props.main_pid),
        n_restarts: props.n_restarts,
        container_id,
        health,
        since_ms: props.state_change_usec / 1000,
        last_error,
    }
}

/// The state of a unit flotilla refused to touch: failed, with the reason.
pub fn refused_state(machine: &MachineId, unit: &UnitName, reason: &str) -> UnitState {
    UnitState {
        unit: unit.clone(),
        machine: machine.clone(),
        load_state: "error".into(),
        active_state: "failed".into(),
        sub_state: "failed".into(),
        hash: None,
        started_hash: None,
        main_pid: None,
        n_restarts: 0,
        container_id: None,
        health: Health::None,
        since_ms: 0,
        last_error: Some(reason.to_owned()),
    }
}

/// Why a container unit's shim failed, as it left it in the unit's
/// status (a pull that failed, a container Docker refused).
fn shim_failure(status: &str) -> Option<String> {
    let reason = status.strip_prefix(crate::container::shim::FAILED_STATUS)?;
    Some(format!("the container did not start: {reason}"))
}

/// Why a failed unit failed, in words.
fn failure(props: &UnitProperties) -> Option<String> {
    if props.active_state != "failed" {
        return None;
    }
    Some(match props.result.as_str() {
        "exit-code" => format!("the unit failed: exit status {}", props.exec_main_status),
        "" => "the unit failed".to_owned(),
        result => format!("the unit failed: {result}"),
    })
}

/// Where reports go: the servers, or a recorder in tests.
pub trait ReportSink: Send + Sync + 'static {
    fn send(&self, report: StateReport) -> impl Future<Output = Result<(), ClientError>> + Send;
}

/// Reports of one machine to the servers.
#[derive(Debug, Clone)]
pub struct ClientSink {
    pub client: Client,
    pub machine: MachineId,
}

impl ReportSink for ClientSink {
    async fn send(&self, report: StateReport) -> Result<(), ClientError> {
        self.client.report_states(&self.machine, &report).await
    }
}

/// What the reconcile loop tells the reporter after each pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interest {
    /// Every unit this machine should have, and what the pass knows of it.
    pub units: BTreeMap<String, UnitNote>,
    /// Units the pass removed from this machine.
    pub removed: Vec<String>,
}

impl From<&Pass> for Interest {
    fn from(pass: &Pass) -> Interest {
        Interest {
            units: pass.units.clone(),
            removed: pass.removed.clone(),
        }
    }
}

/// The reporter's inputs.
pub struct ReporterInputs {
    /// systemd's changes.
    pub changes: ChangeFeed,
    /// One message per reconcile pass.
    pub passes: mpsc::Receiver<Interest>,
    /// Counts registrations of the machine; nothing is sent before the
    /// first, and every unit is sent after each.
    pub registered: watch::Receiver<u64>,
    pub shutdown: watch::Receiver<bool>,
}

/// Turns systemd's changes into state reports; see the module
/// documentation.
pub struct Reporter<S, R> {
    systemd: Arc<S>,
    sink: R,
    machine: MachineId,
    batch: Duration,
    interest: BTreeMap<String, UnitNote>,
    sent: HashMap<String, UnitState>,
    dirty: BTreeSet<String>,
    removed: BTreeSet<String>,
    full: bool,
    metrics: AgentMetrics,
}

impl<S: SystemdManager, R: ReportSink> Reporter<S, R> {
    pub fn new(systemd: Arc<S>, sink: R, machine: MachineId, batch: Duration) -> Reporter<S, R> {
        Reporter {
            systemd,
            sink,
            machine,
            batch,
            interest: BTreeMap::new(),
            sent: HashMap::new(),
            dirty: BTreeSet::new(),
            removed: BTreeSet::new(),
            full: true,
            metrics: AgentMetrics::default(),
        }
    }

    /// Shows the units' states, restarts and health in `metrics`.
    pub fn with_metrics(mut self, metrics: AgentMetrics) -> Reporter<S, R> {
        self.metrics = metrics;
        self
    }

    /// Runs until shutdown, or until the feed of systemd's changes closes
    /// (the connection to systemd was lost).
    pub async fn run(mut self, inputs: ReporterInputs) -> Result<(), Closed> {
        let ReporterInputs {
            mut changes,
            mut passes,
            mut registered,
            mut shutdown,
        } = inputs;
        let mut can_send = *registered.borrow_and_update() > 0;
        let mut flush_at: Option<Instant> = None;
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            let wake = async {
                match flush_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = crate::runtime::stop_requested(&mut shutdown) => return Ok(()),
                names = changes.changed() => {
                    for name in names? {
                        if self.interest.contains_key(&name) {
                            self.dirty.insert(name);
                        }
                    }
                }
                pass = passes.recv() => match pass {
                    Some(pass) => self.absorb(pass),
                    None => return Ok(()),
                },
                r = registered.changed() => {
                    if r.is_err() {
                        return Ok(());
                    }
                    can_send = true;
                    self.full = true;
                    self.dirty.extend(self.interest.keys().cloned());
                }
                () = wake => {
                    flush_at = None;
                    match self.flush().await {
                        Ok(()) => backoff.reset(),
                        Err(e) => {
                            tracing::warn!("cannot report unit states, trying again: {e}");
                            flush_at = Some(Instant::now() + backoff.next_delay());
                        }
                    }
                }
            }
            let pending = !self.dirty.is_empty() || !self.removed.is_empty();
            if can_send && pending && flush_at.is_none() {
                flush_at = Some(Instant::now() + self.batch);
            }
        }
    }

    /// Takes in what a reconcile pass knows.
    fn absorb(&mut self, pass: Interest) {
        for name in self.interest.keys() {
            if !pass.units.contains_key(name) {
                self.removed.insert(name.clone());
                self.metrics.forget(name);
            }
        }
        for name in &pass.removed {
            self.metrics.forget(name);
        }
        self.removed.extend(pass.removed);
        for (name, note) in &pass.units {
            self.removed.remove(name);
            if self.interest.get(name) != Some(note) {
                self.dirty.insert(name.clone());
            }
        }
        self.dirty.retain(|n| pass.units.contains_key(n));
        self.interest = pass.units;
    }

    /// Reads the dirty units and sends what changed.
    async fn flush(&mut self) -> Result<(), String> {
        let names = std::mem::take(&mut self.dirty);
        // Read what systemd says of them, a few at a time.
        let to_read: Vec<String> = names
            .iter()
            .filter(|n| {
                self.interest
                    .get(*n)
                    .is_some_and(|note| note.refused.is_none())
            })
            .cloned()
            .collect();
        let mut read = self.systemd.unit_statuses(to_read, READS_IN_FLIGHT).await;
        if let Some(e) = read.values().find_map(|r| r.as_ref().err()) {
            // Everything waits for the next try.
            let e = e.to_string();
            self.dirty.extend(names);
            return Err(e);
        }
        let mut states = Vec::new();
        for name in &names {
            let Some(note) = self.interest.get(name) else {
                continue;
            };
            let Ok(unit) = UnitName::parse(name) else {
                continue;
            };
            let state = match (&note.refused, read.remove(name)) {
                (Some(reason), _) => refused_state(&self.machine, &unit, reason),
                (None, Some(Ok(props))) => unit_state(&self.machine, &unit, &props, note),
                (None, _) => continue,
            };
            // What systemd says, whether or not it can be sent.
            self.metrics.observe(&state);
            if self.full || self.sent.get(name) != Some(&state) {
                states.push(state);
            }
        }
        let removed: Vec<String> = self.removed.iter().cloned().collect();
        if states.is_empty() && removed.is_empty() {
            self.full = false;
            return Ok(());
        }
        let report = StateReport {
            states: states.clone(),
            removed: removed.clone(),
        };
        if let Err(e) = self.sink.send(report).await {
            self.dirty.extend(names);
            return Err(e.to_string());
        }
        tracing::debug!(
            states = states.len(),
            removed = removed.len(),
            "reported unit states"
        );
        for state in states {
            self.sent.insert(state.unit.to_string(), state);
        }
        for name in removed {
            self.removed.remove(&name);
            self.sent.remove(&name);
        }
        self.full = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_status() {
        assert_eq!(
            parse_status("flotilla: container=abc123 health=healthy"),
            (Some("abc123".to_owned()), Health::Healthy)
        );
        assert_eq!(
            parse_status("flotilla: container=abc health=starting extra=1"),
            (Some("abc".to_owned()), Health::Starting)
        );
        assert_eq!(
            parse_status("flotilla: container=abc health=unhealthy"),
            (Some("abc".to_owned()), Health::Unhealthy)
        );
        assert_eq!(
            parse_status("flotilla: container=abc health=none"),
            (Some("abc".to_owned()), Health::None)
        );
        assert_eq!(parse_status("Serving on port 80"), (None, Health::None));
        assert_eq!(parse_status(""), (None, Health::None));
    }

    #[test]
    fn states_of_units() {
        let machine = MachineId::parse("0123456789abcdef0123456789abcdef").unwrap();
        let unit = UnitName::parse("web.service").unwrap();
        let mut props = UnitProperties {
            load_state: "loaded".into(),
            active_state: "active".into(),
            sub_state: "running".into(),
            main_pid: 42,
            n_restarts: 2,
            status_text: "flotilla: container=c1 health=healthy".into(),
            state_change_usec: 1_700_000_000_123_456,
            ..UnitProperties::default()
        };
        let note = UnitNote {
            hash: Some("h".into()),
            refused: None,
            error: Some("the start job ended with result failed".into()),
            started: Some("old".into()),
        };
        let s = unit_state(&machine, &unit, &props, &note);
        assert_eq!(s.main_pid, Some(42));
        assert_eq!(s.n_restarts, 2);
        assert_eq!(s.container_id.as_deref(), Some("c1"));
        assert_eq!(s.health, Health::Healthy);
        assert_eq!(s.since_ms, 1_700_000_000_123);
        assert_eq!(s.hash.as_deref(), Some("h"));
        assert_eq!(
            s.started_hash.as_deref(),
            Some("old"),
            "the file written and the contents started are told apart"
        );
        // Running again: the old job failure is no longer news.
        assert_eq!(s.last_error, None);
        props.active_state = "failed".into();
        props.main_pid = 0;
        props.result = "exit-code".into();
        props.exec_main_status = 3;
        let s = unit_state(&machine, &unit, &props, &UnitNote::default());
        assert_eq!(s.main_pid, None);
        assert_eq!(
            s.last_error.as_deref(),
            Some("the unit failed: exit status 3")
        );
        props.status_text = format!(
            "{}image r/app:1 is not in its registry: manifest unknown",
            crate::container::shim::FAILED_STATUS
        );
        let s = unit_state(&machine, &unit, &props, &note);
        assert_eq!(
            s.last_error.as_deref(),
            Some(
                "the container did not start: image r/app:1 is not in its registry: manifest unknown"
            ),
            "the shim's reason wins over the job's result"
        );
        let s = refused_state(&machine, &unit, "taken");
        assert_eq!(s.active_state, "failed");
        assert_eq!(s.last_error.as_deref(), Some("taken"));
    }
}
