//! [`Cluster`]: the control plane over the store: what every server does for
//! the API, leader or not. User writes (units, desired state) and agents'
//! writes (registration, state reports) go straight to the store; only the
//! leader's reconciler writes assignments (see [`crate::reconciler`]).

use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::fleet::{FleetOptions, units_conflict};
use flotilla_proto::wire::{
    self, AssignedUnit, MachinePage, MachinePatch, MachineResource, MachineUnits, Registration,
    ServerList, ServerResource, StatePage, StateReport, Unit, UnitPage, UnitPut,
};
use flotilla_proto::{
    Capacity, ClusterId, DesiredState, Machine, MachineId, UnitName, UnitSpec, UnitState,
};

use crate::control::{ControlError, ControlPlane, MAX_PAGE, PageRequest, PutOutcome, StateFilter};
use crate::keys::{Key, Keys};
use crate::records::{self, LeaderRecord, SchedRecord, UnitRecord};
use crate::store::{
    Compare, CompareOp, KeyValue, LeaseId, RangeOptions, Store, StoreError, Txn, TxnOp,
    TxnOpResponse,
};

/// The default page size of listings.
const DEFAULT_PAGE: usize = 100;

/// How many times a compare-and-swap write is retried when another writer
/// got there first.
const CAS_ATTEMPTS: usize = 16;

/// Settings of the control plane.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub keys: Keys,
    /// How long a machine stays alive without a heartbeat.
    pub machine_ttl: Duration,
    /// The cluster served, as [`crate::identity::cluster_id`] found it: told
    /// to every agent with its registration and its units.
    pub cluster_id: ClusterId,
}

/// The control plane over a store.
pub struct Cluster {
    store: Arc<dyn Store>,
    config: ClusterConfig,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    pub fn new(store: Arc<dyn Store>, config: ClusterConfig) -> Self {
        Cluster { store, config }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn keys(&self) -> &Keys {
        &self.config.keys
    }

    async fn read_unit(
        &self,
        name: &UnitName,
    ) -> Result<Option<(UnitRecord, KeyValue)>, ControlError> {
        let key = self.keys().unit(name);
        let got = self.store.get(&key).await.map_err(store_error)?;
        match got.kv {
            Some(kv) => {
                let record: UnitRecord = records::decode(&key, &kv.value).map_err(internal)?;
                Ok(Some((record, kv)))
            }
            None => Ok(None),
        }
    }

    /// The unit as the API shows it, joined with its placement and state.
    async fn unit_view(
        &self,
        name: &UnitName,
        record: UnitRecord,
        kv: &KeyValue,
    ) -> Result<Unit, ControlError> {
        let sched_key = self.keys().sched(name);
        let txn = Txn::new().and_then([
            TxnOp::get(sched_key.clone()),
            TxnOp::range(self.keys().unit_states(name), RangeOptions::default()),
        ]);
        let resp = self.store.txn(txn).await.map_err(store_error)?;
        let mut sched: Option<SchedRecord> = None;
        let mut states: Vec<UnitState> = Vec::new();
        for r in resp.responses {
            match r {
                TxnOpResponse::Get(g) => {
                    if let Some(kv) = g.kv {
                        sched = Some(records::decode(&sched_key, &kv.value).map_err(internal)?);
                    }
                }
                TxnOpResponse::Range(range) => {
                    for kv in range.kvs {
                        states.push(records::decode(&kv.key, &kv.value).map_err(internal)?);
                    }
                }
                TxnOpResponse::Put(_) | TxnOpResponse::Delete(_) => {}
            }
        }
        Ok(unit_resource(name, record, kv, sched, &states))
    }

    /// Reads a unit's template text for creating an instance.
    async fn template_text(&self, name: &UnitName) -> Result<Option<String>, ControlError> {
        let Some(template) = name.template() else {
            return Ok(None);
        };
        Ok(self.read_unit(&template).await?.map(|(r, _)| r.text))
    }

    async fn assigned_units(&self, id: &MachineId) -> Result<Vec<UnitName>, ControlError> {
        let prefix = self.keys().machine_assignments(id);
        let range = self
            .store
            .range(&prefix, RangeOptions::default())
            .await
            .map_err(store_error)?;
        Ok(range
            .kvs
            .iter()
            .filter_map(|kv| match self.keys().parse(&kv.key) {
                Some(Key::Assignment(_, unit)) => Some(unit),
                _ => None,
            })
            .collect())
    }

    async fn machine_resource(&self, machine: Machine) -> Result<MachineResource, ControlError> {
        let units = self.assigned_units(&machine.id).await?;
        let mut used = Capacity::default();
        for unit in &units {
            if let Some((record, _)) = self.read_unit(unit).await?
                && let Ok(checked) = UnitSpec::check_named(unit.as_str(), unit, &record.text)
            {
                // Saturating: a sum past u64::MAX is more than any machine
                // has, and shows as the most it can.
                let r = checked.spec.resources;
                used.cpu_millis = used.cpu_millis.saturating_add(r.cpu_millis.unwrap_or(0));
                used.memory_bytes = used
                    .memory_bytes
                    .saturating_add(r.memory_bytes.unwrap_or(0));
            }
        }
        Ok(MachineResource {
            primary_ip: machine.addresses.first().cloned(),
            machine,
            used,
            units: units.len() as u64,
        })
    }

    /// The units assigned to machine `id`, and every Global unit.
    async fn units_concerning(
        &self,
        id: &MachineId,
    ) -> Result<std::collections::HashSet<UnitName>, ControlError> {
        let mut out = std::collections::HashSet::new();
        for prefix in [self.keys().machine_assignments(id), self.keys().globals()] {
            let got = self
                .store
                .range(&prefix, RangeOptions::default())
                .await
                .map_err(store_error)?;
            out.extend(
                got.kvs
                    .iter()
                    .filter_map(|kv| match self.keys().parse(&kv.key) {
                        Some(Key::Assignment(_, unit) | Key::Global(unit)) => Some(unit),
                        _ => None,
                    }),
            );
        }
        Ok(out)
    }

    async fn machine_snapshot(&self, id: &MachineId) -> Result<MachineUnits, ControlError> {
        let assigned_prefix = self.keys().machine_assignments(id);
        let first = self
            .store
            .range(&assigned_prefix, RangeOptions::default())
            .await
            .map_err(store_error)?;
        // Later reads may be at later revisions; returning the first one's
        // revision means a change between them is delivered again on the
        // next poll rather than missed.
        let index = first.revision;
        let mut names: Vec<(UnitName, bool)> = first
            .kvs
            .iter()
            .filter_map(|kv| match self.keys().parse(&kv.key) {
                Some(Key::Assignment(_, unit)) => Some((unit, false)),
                _ => None,
            })
            .collect();
        let globals = self
            .store
            .range(&self.keys().globals(), RangeOptions::default())
            .await
            .map_err(store_error)?;
        names.extend(
            globals
                .kvs
                .iter()
                .filter_map(|kv| match self.keys().parse(&kv.key) {
                    Some(Key::Global(unit)) => Some((unit, true)),
                    _ => None,
                }),
        );
        // The machine's metadata decides which Global units apply to it.
        let machine_key = self.keys().machine(id);
        let machine: Option<Machine> =
            match self.store.get(&machine_key).await.map_err(store_error)?.kv {
                Some(kv) => Some(records::decode(&machine_key, &kv.value).map_err(internal)?),
                None => None,
            };
        let mut units = Vec::with_capacity(names.len());
        let mut placed: Vec<(UnitName, FleetOptions)> = Vec::new();
        let mut globals: Vec<(AssignedUnit, FleetOptions)> = Vec::new();
        for (name, global) in names {
            let Some((record, _)) = self.read_unit(&name).await? else {
                continue;
            };
            if global && !record.desired_state.is_scheduled() {
                continue;
            }
            let fleet = UnitSpec::check_named(name.as_str(), &name, &record.text)
                .map(|c| c.spec.fleet)
                .unwrap_or_default();
            let unit = AssignedUnit {
                name: name.to_string(),
                text: record.text,
                hash: record.hash,
                desired_state: record.desired_state,
                global,
            };
            if global {
                globals.push((unit, fleet));
            } else {
                placed.push((name, fleet));
                units.push(unit);
            }
        }
        // A Global unit runs on every live machine whose metadata matches
        // and that runs no unit it conflicts with (fleet's rule).
        if let Some(machine) = &machine {
            for (unit, fleet) in globals {
                let conflicting = placed.iter().any(|(other, other_fleet)| {
                    units_conflict(&unit.name, &fleet, other.as_str(), other_fleet)
                });
                if fleet.metadata_matches(&machine.metadata) && !conflicting {
                    units.push(unit);
                }
            }
        }
        Ok(MachineUnits {
            index: to_wire_revision(index),
            units,
            cluster_id: self.config.cluster_id,
        })
    }

    /// Waits until a key under the prefix changes after `index`, or `wait`
    /// passes; returns whether something changed.
    async fn wait_under(
        &self,
        prefix: &str,
        index: u64,
        wait: Duration,
        relevant: impl Fn(&str) -> bool,
    ) -> Result<bool, ControlError> {
        self.wait_under_any(&[prefix], index, wait, relevant).await
    }

    /// As [`Cluster::wait_under`], watching several prefixes: a watch only
    /// receives the events of its prefix, so a narrow prefix spares the
    /// poll (and the store) every other write.
    async fn wait_under_any(
        &self,
        prefixes: &[&str],
        index: u64,
        wait: Duration,
        relevant: impl Fn(&str) -> bool,
    ) -> Result<bool, ControlError> {
        let mut watches = Vec::with_capacity(prefixes.len());
        for prefix in prefixes {
            match self.store.watch(prefix, index + 1).await {
                Ok(w) => watches.push(w),
                // History before `index` is gone: the caller's view is
                // stale, so tell it to read again now.
                Err(StoreError::Compacted { .. }) => return Ok(true),
                Err(e) => return Err(store_error(e)),
            }
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // The first of the watches to have events (each `next` only
            // pulls from its queue, so dropping the others loses nothing).
            let mut nexts: Vec<_> = watches.iter_mut().map(|w| Box::pin(w.next())).collect();
            let first = std::future::poll_fn(|cx| {
                for next in &mut nexts {
                    if let std::task::Poll::Ready(r) = next.as_mut().poll(cx) {
                        return std::task::Poll::Ready(r);
                    }
                }
                std::task::Poll::Pending
            });
            match tokio::time::timeout_at(deadline, first).await {
                Err(_) => return Ok(false),
                Ok(Err(StoreError::Compacted { .. })) => return Ok(true),
                Ok(Err(e)) => return Err(store_error(e)),
                Ok(Ok(events)) => {
                    if events.iter().any(|e| relevant(e.key())) {
                        return Ok(true);
                    }
                }
            }
        }
    }

    /// One page of the keys under `prefix`: the page token is the last
    /// key of the previous page without the prefix.
    async fn page(
        &self,
        prefix: &str,
        page: &PageRequest,
    ) -> Result<crate::store::RangeResponse, ControlError> {
        let mut options = RangeOptions::default().limit(page_limit(page));
        if let Some(token) = &page.token {
            options = options.start_after(format!("{prefix}{token}"));
        }
        self.store.range(prefix, options).await.map_err(store_error)
    }

    /// The store's current revision.
    async fn current_revision(&self) -> Result<u64, ControlError> {
        let got = self
            .store
            .get(&self.keys().leader())
            .await
            .map_err(store_error)?;
        Ok(got.revision)
    }

    /// Runs a batch of write operations in transactions the store accepts.
    async fn write_chunked(&self, ops: Vec<TxnOp>) -> Result<(), ControlError> {
        let max = self.store.limits().max_txn_ops.max(1);
        let mut ops = ops.into_iter().peekable();
        while ops.peek().is_some() {
            let chunk: Vec<TxnOp> = ops.by_ref().take(max).collect();
            self.store
                .txn(Txn::new().and_then(chunk))
                .await
                .map_err(store_error)?;
        }
        Ok(())
    }
}

impl ControlPlane for Cluster {
    async fn list_units(&self, page: PageRequest) -> Result<UnitPage, ControlError> {
        let range = self.page(&self.keys().units(), &page).await?;
        let mut units = Vec::with_capacity(range.kvs.len());
        for kv in &range.kvs {
            let Some(Key::Unit(name)) = self.keys().parse(&kv.key) else {
                continue;
            };
            let record: UnitRecord = records::decode(&kv.key, &kv.value).map_err(internal)?;
            units.push(self.unit_view(&name, record, kv).await?);
        }
        let next_page_token = if range.more {
            units.last().map(|u| u.name.clone())
        } else {
            None
        };
        Ok(UnitPage {
            units,
            next_page_token,
        })
    }

    async fn get_unit(&self, name: &UnitName) -> Result<Unit, ControlError> {
        match self.read_unit(name).await? {
            Some((record, kv)) => self.unit_view(name, record, &kv).await,
            None => Err(not_found_unit(name)),
        }
    }

    async fn put_unit(&self, name: &UnitName, put: UnitPut) -> Result<PutOutcome, ControlError> {
        let given_text = match (&put.text, &put.options) {
            (Some(_), Some(_)) => {
                return Err(ControlError::InvalidRequest(
                    "give the unit's contents as text or as options, not both".into(),
                ));
            }
            (Some(text), None) => Some(text.clone()),
            (None, Some(options)) => Some(wire::text_of(name.as_str(), options)?),
            (None, None) => None,
        };
        let key = self.keys().unit(name);
        for _ in 0..CAS_ATTEMPTS {
            let existing = self.read_unit(name).await?;
            let text = match (&given_text, &existing) {
                (Some(t), _) => t.clone(),
                (None, Some((record, _))) => record.text.clone(),
                (None, None) => match self.template_text(name).await? {
                    Some(t) => t,
                    None if name.is_instance() => {
                        let template = name.template().map(|t| t.to_string()).unwrap_or_default();
                        return Err(ControlError::NotFound {
                            what: format!("unit {name} (and its template {template})"),
                        });
                    }
                    None => return Err(not_found_unit(name)),
                },
            };
            let checked = UnitSpec::check_named(name.as_str(), name, &text)?;
            let spec = checked.spec;
            let desired = match (put.desired_state, &existing) {
                (Some(d), _) => d,
                (None, Some((record, _))) => record.desired_state,
                (None, None) => {
                    return Err(ControlError::InvalidRequest(format!(
                        "desiredState is required to create unit {name}"
                    )));
                }
            };
            if name.is_template() && desired.is_scheduled() {
                return Err(ControlError::InvalidRequest(format!(
                    "{name} is a template: it can be submitted but not {}; start an instance such as {}",
                    if desired == DesiredState::Launched {
                        "started"
                    } else {
                        "loaded"
                    },
                    name.instantiate("1")
                        .map(|n| n.to_string())
                        .unwrap_or_default()
                )));
            }
            let record = UnitRecord {
                text,
                hash: spec.hash.clone(),
                desired_state: desired,
            };
            let (compare, outcome) = match &existing {
                Some((old, kv)) => {
                    if old.hash != record.hash && !put.replace {
                        return Err(ControlError::Conflict(format!(
                            "unit {name} already exists with different contents; replace it to change them"
                        )));
                    }
                    if old == &record {
                        return Ok(PutOutcome::Updated);
                    }
                    (
                        Compare::mod_revision(&key, CompareOp::Equal, kv.mod_revision),
                        PutOutcome::Updated,
                    )
                }
                None => (Compare::absent(&key), PutOutcome::Created),
            };
            let global_key = self.keys().global(name);
            let global_op = if spec.fleet.global {
                TxnOp::put(global_key, Vec::new())
            } else {
                TxnOp::delete(global_key)
            };
            let txn = Txn::new()
                .when([compare])
                .and_then([TxnOp::put(&key, records::encode(&record)), global_op]);
            let resp = self.store.txn(txn).await.map_err(store_error)?;
            if resp.succeeded {
                return Ok(outcome);
            }
            // Someone else wrote the unit between our read and our write:
            // read again and decide again.
        }
        Err(ControlError::Unavailable(format!(
            "unit {name} kept changing under concurrent writes; try again"
        )))
    }

    async fn delete_unit(&self, name: &UnitName) -> Result<(), ControlError> {
        let key = self.keys().unit(name);
        let txn = Txn::new().when([Compare::exists(&key)]).and_then([
            TxnOp::delete(&key),
            TxnOp::delete(self.keys().global(name)),
            TxnOp::delete_prefix(self.keys().unit_states(name)),
        ]);
        let resp = self.store.txn(txn).await.map_err(store_error)?;
        if resp.succeeded {
            Ok(())
        } else {
            Err(not_found_unit(name))
        }
    }

    async fn wait_for_change(&self, index: i64, wait: Duration) -> Result<i64, ControlError> {
        let index = from_wire_revision(index);
        if index > 0 {
            let keys = self.keys().clone();
            let relevant = |k: &str| {
                matches!(
                    keys.parse(k),
                    Some(Key::Unit(_) | Key::Assignment(..) | Key::Sched(_) | Key::State(..))
                )
            };
            self.wait_under(keys.root(), index, wait, relevant).await?;
        }
        Ok(to_wire_revision(self.current_revision().await?))
    }

    async fn list_states(
        &self,
        filter: StateFilter,
        page: PageRequest,
    ) -> Result<StatePage, ControlError> {
        let all = self.keys().states();
        let prefix = match &filter.unit {
            Some(unit) => self.keys().unit_states(unit),
            None => all.clone(),
        };
        let limit = page_limit(&page);
        let mut after = page.token.as_ref().map(|t| format!("{all}{t}"));
        let mut states = Vec::new();
        let mut next_page_token = None;
        // With a machine filter a page of keys may hold few matches: read on
        // until the page is full or the keys end.
        'pages: loop {
            let mut options = RangeOptions::default().limit(limit);
            if let Some(a) = &after {
                options = options.start_after(a.clone());
            }
            let range = self
                .store
                .range(&prefix, options)
                .await
                .map_err(store_error)?;
            for (i, kv) in range.kvs.iter().enumerate() {
                let Some(Key::State(_, machine)) = self.keys().parse(&kv.key) else {
                    continue;
                };
                if filter.machine.as_ref().is_some_and(|m| *m != machine) {
                    continue;
                }
                states.push(records::decode::<UnitState>(&kv.key, &kv.value).map_err(internal)?);
                if states.len() == limit {
                    if i + 1 < range.kvs.len() || range.more {
                        next_page_token = kv.key.strip_prefix(&all).map(str::to_owned);
                    }
                    break 'pages;
                }
            }
            if !range.more {
                break;
            }
            after = range.kvs.last().map(|kv| kv.key.clone());
        }
        Ok(StatePage {
            states,
            next_page_token,
        })
    }

    async fn list_machines(&self, page: PageRequest) -> Result<MachinePage, ControlError> {
        let range = self.page(&self.keys().machines(), &page).await?;
        let mut machines = Vec::with_capacity(range.kvs.len());
        for kv in &range.kvs {
            let machine: Machine = records::decode(&kv.key, &kv.value).map_err(internal)?;
            machines.push(self.machine_resource(machine).await?);
        }
        let next_page_token = if range.more {
            machines.last().map(|m| m.machine.id.to_string())
        } else {
            None
        };
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
        let key = self.keys().machine(id);
        for _ in 0..CAS_ATTEMPTS {
            let got = self.store.get(&key).await.map_err(store_error)?;
            let Some(kv) = got.kv else {
                return Err(ControlError::NotFound {
                    what: format!("machine {id}"),
                });
            };
            let mut machine: Machine = records::decode(&key, &kv.value).map_err(internal)?;
            for (k, v) in &patch.metadata {
                match v {
                    Some(v) => machine.metadata.insert(k.clone(), v.clone()),
                    None => machine.metadata.remove(k),
                };
            }
            let put = match kv.lease {
                Some(lease) => TxnOp::put_with_lease(&key, records::encode(&machine), lease),
                None => TxnOp::put(&key, records::encode(&machine)),
            };
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    &key,
                    CompareOp::Equal,
                    kv.mod_revision,
                )])
                .and_then([put]);
            if self.store.txn(txn).await.map_err(store_error)?.succeeded {
                return self.machine_resource(machine).await;
            }
        }
        Err(ControlError::Unavailable(format!(
            "machine {id} kept changing under concurrent writes; try again"
        )))
    }

    async fn list_servers(&self) -> Result<ServerList, ControlError> {
        let leader_key = self.keys().leader();
        let txn = Txn::new().and_then([
            TxnOp::get(leader_key.clone()),
            TxnOp::range(self.keys().servers(), RangeOptions::default()),
        ]);
        let resp = self.store.txn(txn).await.map_err(store_error)?;
        let mut leader: Option<LeaderRecord> = None;
        let mut servers = Vec::new();
        for r in resp.responses {
            match r {
                TxnOpResponse::Get(g) => {
                    if let Some(kv) = g.kv {
                        leader = Some(records::decode(&leader_key, &kv.value).map_err(internal)?);
                    }
                }
                TxnOpResponse::Range(range) => {
                    for kv in range.kvs {
                        let record: LeaderRecord =
                            records::decode(&kv.key, &kv.value).map_err(internal)?;
                        servers.push(record);
                    }
                }
                TxnOpResponse::Put(_) | TxnOpResponse::Delete(_) => {}
            }
        }
        let leader_id = leader.as_ref().map(|l| l.id.clone());
        let mut out: Vec<ServerResource> = servers
            .into_iter()
            .map(|s| ServerResource {
                leader: leader_id.as_deref() == Some(s.id.as_str()),
                id: s.id,
                address: s.address,
                version: s.version,
            })
            .collect();
        // A leader that has not announced itself yet still shows.
        if let Some(l) = leader
            && !out.iter().any(|s| s.id == l.id)
        {
            out.push(ServerResource {
                id: l.id,
                address: l.address,
                version: l.version,
                leader: true,
            });
            out.sort_by(|a, b| a.id.cmp(&b.id));
        }
        Ok(ServerList { servers: out })
    }

    async fn register_machine(&self, machine: Machine) -> Result<Registration, ControlError> {
        if machine.hostname.is_empty() {
            return Err(ControlError::InvalidRequest(
                "a machine needs a hostname".into(),
            ));
        }
        let grant = self
            .store
            .grant(self.config.machine_ttl)
            .await
            .map_err(store_error)?;
        // Overwriting the key moves it to the new lease; the old lease, if
        // the agent restarted before it expired, ends holding nothing. The
        // key is never deleted on the way, so a restarting agent does not
        // look like a machine that died.
        let key = self.keys().machine(&machine.id);
        self.store
            .txn(Txn::new().and_then([TxnOp::put_with_lease(
                &key,
                records::encode(&machine),
                grant.id,
            )]))
            .await
            .map_err(store_error)?;
        Ok(Registration {
            lease: grant.id.0,
            ttl_ms: duration_ms(grant.ttl),
            cluster_id: self.config.cluster_id,
        })
    }

    async fn heartbeat(&self, id: &MachineId, lease: i64) -> Result<Registration, ControlError> {
        let key = self.keys().machine(id);
        let got = self.store.get(&key).await.map_err(store_error)?;
        let lease_id = LeaseId(lease);
        if got.kv.as_ref().and_then(|kv| kv.lease) != Some(lease_id) {
            return Err(ControlError::NotFound {
                what: format!("registration of machine {id} on lease {lease_id}"),
            });
        }
        match self.store.keepalive(lease_id).await {
            Ok(ttl) => Ok(Registration {
                lease,
                ttl_ms: duration_ms(ttl),
                cluster_id: self.config.cluster_id,
            }),
            Err(StoreError::LeaseNotFound { .. }) => Err(ControlError::NotFound {
                what: format!("lease {lease_id} of machine {id}"),
            }),
            Err(e) => Err(store_error(e)),
        }
    }

    async fn machine_units(
        &self,
        id: &MachineId,
        index: Option<i64>,
        wait: Duration,
    ) -> Result<MachineUnits, ControlError> {
        if let Some(index) = index.map(from_wire_revision).filter(|i| *i > 0) {
            let keys = self.keys().clone();
            let mine = keys.machine_assignments(id);
            // A unit's file or state concerns this machine only when the
            // unit is assigned to it or is Global: other writes wake no one
            // (fleet woke every machine for every change). A unit assigned
            // after this read is an assignment event, which wakes it.
            let concerned = self.units_concerning(id).await?;
            let relevant = |k: &str| {
                k.starts_with(&mine)
                    || match keys.parse(k) {
                        Some(Key::Global(_)) => true,
                        Some(Key::Unit(u)) => concerned.contains(&u),
                        // Its metadata decides which Global units apply.
                        Some(Key::Machine(m)) => &m == id,
                        _ => false,
                    }
            };
            // Only the prefixes that can concern the machine: not the state
            // reports and scheduling records every agent causes.
            let machine_key = keys.machine(id);
            let prefixes = [
                mine.as_str(),
                &keys.units(),
                &keys.globals(),
                machine_key.as_str(),
            ];
            self.wait_under_any(&prefixes, index, wait, relevant)
                .await?;
        }
        self.machine_snapshot(id).await
    }

    async fn report_states(&self, id: &MachineId, report: StateReport) -> Result<(), ControlError> {
        let mut ops = Vec::with_capacity(report.states.len() + report.removed.len());
        for state in &report.states {
            if &state.machine != id {
                return Err(ControlError::InvalidRequest(format!(
                    "state of {} is for machine {}, reported by machine {id}",
                    state.unit, state.machine
                )));
            }
            ops.push(TxnOp::put(
                self.keys().state(&state.unit, id),
                records::encode(state),
            ));
        }
        for name in &report.removed {
            let unit =
                UnitName::parse(name).map_err(|e| ControlError::InvalidRequest(e.to_string()))?;
            ops.push(TxnOp::delete(self.keys().state(&unit, id)));
        }
        self.write_chunked(ops).await
    }
}

/// Joins a unit's record with its placement and reported state.
fn unit_resource(
    name: &UnitName,
    record: UnitRecord,
    kv: &KeyValue,
    sched: Option<SchedRecord>,
    states: &[UnitState],
) -> Unit {
    let (file, _) = flotilla_proto::UnitFile::parse(&record.text);
    let machine_id = sched.as_ref().and_then(|s| s.machine.clone());
    // A Global unit has no one machine: it is launched once a machine runs
    // it, loaded once a machine reports it.
    let global = file
        .last_value(flotilla_proto::fleet::SECTION, "Global")
        .and_then(|v| flotilla_proto::value::parse_bool(v.value))
        .unwrap_or(false);
    let running = |s: &&UnitState| matches!(s.active_state.as_str(), "active" | "reloading");
    let current_state = if name.is_template() {
        None
    } else if global {
        Some(if states.iter().any(|s| running(&s)) {
            DesiredState::Launched
        } else if states.is_empty() {
            DesiredState::Inactive
        } else {
            DesiredState::Loaded
        })
    } else {
        Some(match &machine_id {
            None => DesiredState::Inactive,
            Some(m) => {
                if states.iter().any(|s| &s.machine == m && running(&s)) {
                    DesiredState::Launched
                } else {
                    DesiredState::Loaded
                }
            }
        })
    };
    let unscheduled_reason = if record.desired_state.is_scheduled() && machine_id.is_none() {
        sched.and_then(|s| s.reason)
    } else {
        None
    };
    Unit {
        name: name.to_string(),
        options: wire::options_of(&file),
        text: record.text,
        hash: record.hash,
        desired_state: record.desired_state,
        current_state,
        machine_id,
        unscheduled_reason,
        revision: to_wire_revision(kv.mod_revision),
    }
}

fn page_limit(page: &PageRequest) -> usize {
    page.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE)
}

fn not_found_unit(name: &UnitName) -> ControlError {
    ControlError::NotFound {
        what: format!("unit {name}"),
    }
}

/// What a store error means for an API caller.
fn store_error(e: StoreError) -> ControlError {
    if e.is_temporary() {
        ControlError::Unavailable(e.to_string())
    } else {
        ControlError::Internal(e.to_string())
    }
}

fn internal(e: impl std::fmt::Display) -> ControlError {
    ControlError::Internal(e.to_string())
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Store revisions are unsigned; etcd's and the API's are signed 64-bit.
fn to_wire_revision(r: u64) -> i64 {
    i64::try_from(r).unwrap_or(i64::MAX)
}

fn from_wire_revision(r: i64) -> u64 {
    u64::try_from(r).unwrap_or(0)
}
