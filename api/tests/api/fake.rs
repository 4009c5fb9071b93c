//! An in-memory `ControlPlane` that behaves like the real one as far as the
//! API can tell: it validates unit files, refuses conflicting contents,
//! paginates, keeps leases and revisions, and wakes long polls. Tests can
//! place units, expire leases and inject the next error.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use flotilla_proto::event::{Event, EventPage};
use flotilla_proto::wire::{
    AssignedUnit, MachinePage, MachinePatch, MachineResource, MachineUnits, Registration,
    ServerList, ServerResource, StatePage, StateReport, Unit, UnitPage, UnitPut, options_of,
    text_of,
};
use flotilla_proto::{
    Capacity, ClusterId, DesiredState, Machine, MachineId, UnitName, UnitSpec, UnitState,
};
use flotilla_scheduler::control::{
    ControlError, ControlPlane, EventFilter, MAX_PAGE, PageRequest, PutOutcome, StateFilter,
};
use tokio::sync::watch;

const DEFAULT_PAGE: usize = 100;
pub const TTL_MS: u64 = 10_000;
/// The cluster the fake serves.
pub const CLUSTER_ID: ClusterId = ClusterId::from_bytes([7; 16]);

struct StoredUnit {
    spec: UnitSpec,
    text: String,
    desired: DesiredState,
    revision: i64,
}

struct LiveMachine {
    machine: Machine,
    lease: i64,
}

#[derive(Default)]
struct Inner {
    revision: i64,
    next_lease: i64,
    units: BTreeMap<UnitName, StoredUnit>,
    machines: BTreeMap<MachineId, LiveMachine>,
    /// unit -> machine.
    placed: BTreeMap<UnitName, MachineId>,
    /// The revision at which something for the machine last changed.
    machine_revision: BTreeMap<MachineId, i64>,
    states: BTreeMap<(UnitName, MachineId), UnitState>,
    /// Events recorded, with the revision each was recorded at.
    events: Vec<(i64, Event)>,
    fail_next: Option<ControlError>,
}

impl Inner {
    fn bump(&mut self) -> i64 {
        self.revision += 1;
        self.revision
    }

    fn touch_machine_of(&mut self, unit: &UnitName) {
        if let Some(machine) = self.placed.get(unit).cloned() {
            self.machine_revision.insert(machine, self.revision);
        }
    }

    fn unit(&self, name: &UnitName) -> Option<Unit> {
        let stored = self.units.get(name)?;
        let machine = self.placed.get(name).cloned();
        Some(Unit {
            name: name.to_string(),
            options: options_of(&stored.spec.file),
            text: stored.text.clone(),
            hash: stored.spec.hash.clone(),
            desired_state: stored.desired,
            current_state: if name.is_template() {
                None
            } else if machine.is_some() {
                Some(DesiredState::Loaded)
            } else {
                Some(DesiredState::Inactive)
            },
            machine_id: machine,
            unscheduled_reason: None,
            revision: stored.revision,
        })
    }

    fn resource(&self, live: &LiveMachine) -> MachineResource {
        MachineResource {
            machine: live.machine.clone(),
            primary_ip: live.machine.addresses.first().cloned(),
            used: Capacity::default(),
            units: self
                .placed
                .values()
                .filter(|m| **m == live.machine.id)
                .count() as u64,
        }
    }
}

pub struct FakeControl {
    inner: Mutex<Inner>,
    revision: watch::Sender<i64>,
}

impl Default for FakeControl {
    fn default() -> Self {
        FakeControl {
            inner: Mutex::new(Inner::default()),
            revision: watch::Sender::new(0),
        }
    }
}

fn not_found(what: impl Into<String>) -> ControlError {
    ControlError::NotFound { what: what.into() }
}

/// A page of `items` (sorted by key) after `token`, and the next token.
fn paginate<K: Ord + Clone, T>(
    items: impl Iterator<Item = (K, T)>,
    after: Option<K>,
    limit: Option<usize>,
    token_of: impl Fn(&K) -> String,
) -> (Vec<T>, Option<String>) {
    let limit = limit.unwrap_or(DEFAULT_PAGE).min(MAX_PAGE);
    let mut out = Vec::new();
    let mut last = None;
    let mut more = false;
    for (key, item) in items {
        if after.as_ref().is_some_and(|a| key <= *a) {
            continue;
        }
        if out.len() == limit {
            more = true;
            break;
        }
        last = Some(key);
        out.push(item);
    }
    let next = if more {
        last.as_ref().map(token_of)
    } else {
        None
    };
    (out, next)
}

impl FakeControl {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    fn take_failure(&self) -> Result<(), ControlError> {
        match self.lock().fail_next.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn publish(&self, revision: i64) {
        self.revision.send_replace(revision);
    }

    /// The next call fails with `error`.
    pub fn fail_next(&self, error: ControlError) {
        self.lock().fail_next = Some(error);
    }

    /// Places `unit` on `machine`, as the scheduler would.
    pub fn place(&self, unit: &UnitName, machine: &MachineId) {
        let revision = {
            let mut inner = self.lock();
            let revision = inner.bump();
            inner.placed.insert(unit.clone(), machine.clone());
            inner.machine_revision.insert(machine.clone(), revision);
            revision
        };
        self.publish(revision);
    }

    /// The machine's lease expires.
    pub fn expire(&self, machine: &MachineId) {
        let revision = {
            let mut inner = self.lock();
            inner.machines.remove(machine);
            inner.bump()
        };
        self.publish(revision);
    }

    /// How many long polls are waiting for a change.
    /// The lease machine `id` is registered on, if it is.
    pub fn lease_of(&self, id: &MachineId) -> Option<i64> {
        self.lock().machines.get(id).map(|m| m.lease)
    }

    pub fn waiters(&self) -> usize {
        self.revision.receiver_count()
    }

    pub fn revision(&self) -> i64 {
        self.lock().revision
    }

    pub fn state(&self, unit: &UnitName, machine: &MachineId) -> Option<UnitState> {
        self.lock()
            .states
            .get(&(unit.clone(), machine.clone()))
            .cloned()
    }

    /// The events recorded so far.
    pub fn events(&self) -> Vec<Event> {
        self.lock().events.iter().map(|(_, e)| e.clone()).collect()
    }

    /// The events after revision `index` that pass `filter`, each with
    /// its id (its place in the log).
    fn events_after(&self, filter: &EventFilter, index: i64) -> Vec<Event> {
        self.lock()
            .events
            .iter()
            .enumerate()
            .filter(|(_, (r, e))| *r > index && filter.matches(e))
            .map(|(i, (_, e))| Event {
                id: i.to_string(),
                ..e.clone()
            })
            .collect()
    }

    fn machine_rev(&self, id: &MachineId) -> i64 {
        self.lock().machine_revision.get(id).copied().unwrap_or(0)
    }
}

impl ControlPlane for FakeControl {
    async fn list_units(&self, page: PageRequest) -> Result<UnitPage, ControlError> {
        self.take_failure()?;
        let after = page
            .token
            .map(|t| UnitName::parse(&t))
            .transpose()
            .map_err(|_| ControlError::InvalidRequest("invalid page token".into()))?;
        let inner = self.lock();
        let (units, next_page_token) = paginate(
            inner
                .units
                .keys()
                .filter_map(|n| Some((n.clone(), inner.unit(n)?))),
            after,
            page.limit,
            |n| n.to_string(),
        );
        Ok(UnitPage {
            units,
            next_page_token,
        })
    }

    async fn get_unit(&self, name: &UnitName) -> Result<Unit, ControlError> {
        self.take_failure()?;
        self.lock()
            .unit(name)
            .ok_or_else(|| not_found(format!("unit {name}")))
    }

    async fn put_unit(&self, name: &UnitName, put: UnitPut) -> Result<PutOutcome, ControlError> {
        self.take_failure()?;
        let contents = match (put.text, put.options) {
            (Some(_), Some(_)) => {
                return Err(ControlError::InvalidRequest(
                    "options and text both given".into(),
                ));
            }
            (Some(text), None) => Some(text),
            (None, Some(options)) => Some(text_of(name.as_str(), &options)?),
            (None, None) => None,
        };
        let (outcome, revision) = {
            let mut inner = self.lock();
            let outcome = match inner.units.get(name) {
                None => {
                    let desired = put.desired_state.ok_or_else(|| {
                        ControlError::InvalidRequest(format!(
                            "unit {name} does not exist: a desired state is needed to create it"
                        ))
                    })?;
                    let (spec, text) = match contents {
                        Some(text) => {
                            let checked = UnitSpec::check_named(name.as_str(), name, &text)?;
                            (checked.spec, text)
                        }
                        None => {
                            let template = name
                                .template()
                                .and_then(|t| inner.units.get(&t).map(|s| &s.spec))
                                .ok_or_else(|| not_found(format!("unit {name}")))?;
                            let instance = name.instance().unwrap_or_default();
                            let checked = template.instantiate(instance)?;
                            let text = checked.spec.file.to_string();
                            (checked.spec, text)
                        }
                    };
                    let revision = inner.bump();
                    inner.units.insert(
                        name.clone(),
                        StoredUnit {
                            spec,
                            text,
                            desired,
                            revision,
                        },
                    );
                    PutOutcome::Created
                }
                Some(existing) => {
                    let mut replacement = None;
                    if let Some(text) = contents {
                        let checked = UnitSpec::check_named(name.as_str(), name, &text)?;
                        if checked.spec.hash != existing.spec.hash {
                            if !put.replace {
                                return Err(ControlError::Conflict(format!(
                                    "unit {name} exists with other contents; set replace to replace them"
                                )));
                            }
                            replacement = Some((checked.spec, text));
                        }
                    }
                    let changes_state = put.desired_state.is_some_and(|d| d != existing.desired);
                    if replacement.is_some() || changes_state {
                        let revision = inner.bump();
                        let stored = inner
                            .units
                            .get_mut(name)
                            .expect("present: looked up above under the same lock");
                        if let Some((spec, text)) = replacement {
                            stored.spec = spec;
                            stored.text = text;
                        }
                        if let Some(desired) = put.desired_state {
                            stored.desired = desired;
                        }
                        stored.revision = revision;
                        inner.touch_machine_of(name);
                        PutOutcome::Updated
                    } else {
                        PutOutcome::Unchanged
                    }
                }
            };
            (outcome, inner.revision)
        };
        self.publish(revision);
        Ok(outcome)
    }

    async fn delete_unit(&self, name: &UnitName) -> Result<(), ControlError> {
        self.take_failure()?;
        let revision = {
            let mut inner = self.lock();
            if inner.units.remove(name).is_none() {
                return Err(not_found(format!("unit {name}")));
            }
            inner.bump();
            inner.touch_machine_of(name);
            inner.placed.remove(name);
            inner.states.retain(|(unit, _), _| unit != name);
            inner.revision
        };
        self.publish(revision);
        Ok(())
    }

    async fn wait_for_change(&self, index: i64, wait: Duration) -> Result<i64, ControlError> {
        self.take_failure()?;
        let mut rx = self.revision.subscribe();
        let _ = tokio::time::timeout(wait, rx.wait_for(|r| *r > index)).await;
        Ok(self.revision())
    }

    async fn list_states(
        &self,
        filter: StateFilter,
        page: PageRequest,
    ) -> Result<StatePage, ControlError> {
        self.take_failure()?;
        let after = page
            .token
            .map(|t| {
                let (u, m) = t.split_once(' ')?;
                Some((UnitName::parse(u).ok()?, MachineId::parse(m).ok()?))
            })
            .map(|k| k.ok_or_else(|| ControlError::InvalidRequest("invalid page token".into())))
            .transpose()?;
        let inner = self.lock();
        let matching = inner.states.iter().filter(|((u, m), _)| {
            filter.unit.as_ref().is_none_or(|f| f == u)
                && filter.machine.as_ref().is_none_or(|f| f == m)
        });
        let (states, next_page_token) = paginate(
            matching.map(|(k, v)| (k.clone(), v.clone())),
            after,
            page.limit,
            |(u, m)| format!("{u} {m}"),
        );
        Ok(StatePage {
            states,
            next_page_token,
        })
    }

    async fn list_servers(&self) -> Result<ServerList, ControlError> {
        self.take_failure()?;
        Ok(ServerList {
            servers: vec![ServerResource {
                id: "fake-1".into(),
                address: "http://127.0.0.1:0".into(),
                version: "test".into(),
                leader: true,
                ..ServerResource::default()
            }],
        })
    }

    async fn list_machines(&self, page: PageRequest) -> Result<MachinePage, ControlError> {
        self.take_failure()?;
        let after = page
            .token
            .map(|t| MachineId::parse(&t))
            .transpose()
            .map_err(|_| ControlError::InvalidRequest("invalid page token".into()))?;
        let inner = self.lock();
        let (machines, next_page_token) = paginate(
            inner
                .machines
                .iter()
                .map(|(id, live)| (id.clone(), inner.resource(live))),
            after,
            page.limit,
            |id| id.to_string(),
        );
        Ok(MachinePage {
            machines,
            next_page_token,
        })
    }

    async fn patch_machine(
        &self,
        id: &MachineId,
        patch: MachinePatch,
    ) -> Result<MachineResource, ControlError> {
        self.take_failure()?;
        let mut inner = self.lock();
        let live = inner
            .machines
            .get_mut(id)
            .ok_or_else(|| not_found(format!("machine {id}")))?;
        for (key, value) in patch.metadata {
            match value {
                Some(v) => live.machine.metadata.insert(key, v),
                None => live.machine.metadata.remove(&key),
            };
        }
        let live = &inner.machines[id];
        Ok(inner.resource(live))
    }

    async fn register_machine(&self, machine: Machine) -> Result<Registration, ControlError> {
        self.take_failure()?;
        let mut inner = self.lock();
        inner.next_lease += 1;
        let lease = inner.next_lease;
        inner
            .machines
            .insert(machine.id.clone(), LiveMachine { machine, lease });
        Ok(Registration {
            lease,
            ttl_ms: TTL_MS,
            cluster_id: CLUSTER_ID,
        })
    }

    async fn heartbeat(&self, id: &MachineId, lease: i64) -> Result<Registration, ControlError> {
        self.take_failure()?;
        let inner = self.lock();
        match inner.machines.get(id) {
            Some(live) if live.lease == lease => Ok(Registration {
                lease,
                ttl_ms: TTL_MS,
                cluster_id: CLUSTER_ID,
            }),
            _ => Err(not_found(format!("lease {lease} of machine {id}"))),
        }
    }

    async fn machine_units(
        &self,
        id: &MachineId,
        index: Option<i64>,
        wait: Duration,
    ) -> Result<MachineUnits, ControlError> {
        self.take_failure()?;
        if !self.lock().machines.contains_key(id) {
            return Err(not_found(format!("machine {id}")));
        }
        if let Some(index) = index {
            let mut rx = self.revision.subscribe();
            let _ = tokio::time::timeout(wait, rx.wait_for(|_| self.machine_rev(id) > index)).await;
        }
        let inner = self.lock();
        let units = inner
            .placed
            .iter()
            .filter(|(_, m)| *m == id)
            .filter_map(|(name, _)| {
                let stored = inner.units.get(name)?;
                Some(AssignedUnit {
                    name: name.to_string(),
                    text: stored.text.clone(),
                    hash: stored.spec.hash.clone(),
                    desired_state: stored.desired,
                    global: false,
                    secrets: Default::default(),
                })
            })
            .collect();
        Ok(MachineUnits {
            index: inner.revision,
            units,
            cluster_id: CLUSTER_ID,
        })
    }

    async fn report_states(&self, id: &MachineId, report: StateReport) -> Result<(), ControlError> {
        self.take_failure()?;
        let revision = {
            let mut inner = self.lock();
            if !inner.machines.contains_key(id) {
                return Err(not_found(format!("machine {id}")));
            }
            for removed in &report.removed {
                let unit = UnitName::parse(removed)
                    .map_err(|e| ControlError::InvalidRequest(e.to_string()))?;
                inner.states.remove(&(unit, id.clone()));
            }
            for state in report.states {
                inner
                    .states
                    .insert((state.unit.clone(), state.machine.clone()), state);
            }
            inner.bump()
        };
        self.publish(revision);
        Ok(())
    }

    async fn list_events(
        &self,
        filter: EventFilter,
        page: PageRequest,
    ) -> Result<EventPage, ControlError> {
        self.take_failure()?;
        let after = page
            .token
            .map(|t| t.parse::<usize>())
            .transpose()
            .map_err(|_| ControlError::InvalidRequest("invalid page token".into()))?;
        let index = self.revision();
        let (events, next_page_token) = paginate(
            self.events_after(&filter, 0)
                .into_iter()
                .map(|e| (e.id.parse::<usize>().unwrap_or(0), e)),
            after,
            page.limit,
            |i| i.to_string(),
        );
        Ok(EventPage {
            events,
            next_page_token,
            index,
        })
    }

    async fn follow_events(
        &self,
        filter: EventFilter,
        index: i64,
        wait: Duration,
        _limit: Option<usize>,
    ) -> Result<EventPage, ControlError> {
        self.take_failure()?;
        let mut rx = self.revision.subscribe();
        let _ = tokio::time::timeout(
            wait,
            rx.wait_for(|_| !self.events_after(&filter, index).is_empty()),
        )
        .await;
        let events = self.events_after(&filter, index);
        let index = self.revision();
        Ok(EventPage {
            events,
            next_page_token: None,
            index,
        })
    }

    fn record_change(&self, event: Event) {
        let revision = {
            let mut inner = self.lock();
            let revision = inner.bump();
            inner.events.push((revision, event));
            revision
        };
        self.publish(revision);
    }
}
