//! [`Cluster`]: the control plane over the store: what every server does for
//! the API, leader or not. User writes (units, desired state) and agents'
//! writes (registration, state reports) go straight to the store; only the
//! leader's reconciler writes assignments (see [`crate::reconciler`]).
//!
//! The work is split by who asks: unit and machine writes here, listings in
//! `listing.rs`, the agents' endpoints in `agents.rs`. Every write is
//! checked against the cluster's [`Quotas`] before anything is written
//! ([`crate::quota`]), and every unit file is parsed off the async threads
//! (`parsed.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::event::{Event, EventPage};
use flotilla_proto::rollout::{Rollout, RolloutList, RolloutOptions, RolloutRequest};
use flotilla_proto::unit::MAX_UNIT_FILE_BYTES;
use flotilla_proto::wire::{
    self, MachinePage, MachinePatch, MachineResource, MachineUnits, Registration, ServerList,
    ServerResource, StatePage, StateReport, Unit, UnitPage, UnitPut,
};
use flotilla_proto::{ClusterId, DesiredState, Machine, MachineId, UnitName};

use crate::control::{
    ControlError, ControlPlane, EventFilter, PageRequest, PutOutcome, StateFilter,
};
use crate::events::{EventError, EventLog, EventRetention};
use crate::keys::Keys;
use crate::liveness::Liveness;
use crate::parsed::ParsedUnits;
use crate::quota::{Quota, Quotas, Tally, Usage};
use crate::records::{self, LeaderRecord, PresenceRecord, UnitRecord};
use flotilla_store::{
    Compare, CompareOp, KeyValue, RangeOptions, Store, StoreError, Txn, TxnOp, TxnOpResponse,
};

/// How many times a compare-and-swap write is retried when another writer
/// got there first.
pub(crate) const CAS_ATTEMPTS: usize = 16;

/// Settings of the control plane.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub keys: Keys,
    /// How long a machine stays alive without a heartbeat.
    pub machine_ttl: Duration,
    /// The cluster served, as [`crate::identity::cluster_id`] found it: told
    /// to every agent with its registration and its units.
    pub cluster_id: ClusterId,
    /// What the cluster may hold, and how large a page may be
    /// ([`Quotas::default`]).
    pub quotas: Quotas,
}

/// The control plane over a store.
pub struct Cluster {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) config: ClusterConfig,
    /// Units and the bytes of their records, for the unit quotas.
    units: Tally,
    /// Live machines, for the machine quota.
    machines: Tally,
    pub(crate) parsed: ParsedUnits,
    /// The cluster's history: agents' reports and changes through the API
    /// are recorded here, and listed from here.
    pub(crate) events: EventLog,
    /// Which machines' heartbeats are overdue.
    pub(crate) liveness: Liveness,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What a write needs from a unit file that validated.
#[derive(Debug, Clone)]
pub(crate) struct UnitFacts {
    pub(crate) hash: String,
    pub(crate) global: bool,
    /// Its `Rollout*` settings.
    pub(crate) rollout: RolloutOptions,
}

impl Cluster {
    pub fn new(store: Arc<dyn Store>, config: ClusterConfig) -> Self {
        let units = Tally::new(
            Arc::clone(&store),
            config.keys.units(),
            Quota::Units,
            Some(Quota::UnitBytes),
        );
        let machines = Tally::new(
            Arc::clone(&store),
            config.keys.machines(),
            Quota::Machines,
            None,
        );
        let events = EventLog::new(
            Arc::clone(&store),
            config.keys.clone(),
            EventRetention::default(),
        );
        let liveness = Liveness::new(config.machine_ttl);
        Cluster {
            store,
            config,
            units,
            machines,
            parsed: ParsedUnits::default(),
            events,
            liveness,
        }
    }

    /// Records events in `events` (shared with the reconcile loop, so that
    /// a server's events keep one order) instead of a log of its own.
    pub fn with_events(mut self, events: EventLog) -> Self {
        self.events = events;
        self
    }

    /// The event log this control plane records in.
    pub fn events(&self) -> &EventLog {
        &self.events
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn keys(&self) -> &Keys {
        &self.config.keys
    }

    pub(crate) fn quotas(&self) -> &Quotas {
        &self.config.quotas
    }

    /// Starts loading the counts the quotas are checked against, in the
    /// background. Without it they are loaded at the first write that
    /// needs them, which then waits for them.
    pub fn start_counting(&self) {
        self.units.start();
        self.machines.start();
    }

    /// How many units the store holds and the bytes of their records, as
    /// the unit quotas count them (once the count is loaded).
    pub async fn unit_usage(&self) -> Result<Usage, ControlError> {
        self.units.usage().await
    }

    /// How many machines are live, as the machine quota counts them.
    pub async fn machine_usage(&self) -> Result<Usage, ControlError> {
        self.machines.usage().await
    }

    pub(crate) async fn read_unit(
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

    /// Reads a unit's template text for creating an instance.
    async fn template_text(&self, name: &UnitName) -> Result<Option<String>, ControlError> {
        let Some(template) = name.template() else {
            return Ok(None);
        };
        Ok(self.read_unit(&template).await?.map(|(r, _)| r.text))
    }

    /// Validates `text` as unit `name`, off the async threads. A text read
    /// from the store with its content hash `stored_hash` validated when it
    /// was written: what the parse cache kept of it is enough.
    pub(crate) async fn unit_facts(
        &self,
        name: &UnitName,
        text: &str,
        stored_hash: Option<&str>,
    ) -> Result<UnitFacts, ControlError> {
        if let Some(hash) = stored_hash {
            let parsed = self.parsed.get(name, hash, text).await?;
            if let Some((fleet, _)) = &parsed.checked {
                return Ok(UnitFacts {
                    hash: hash.to_owned(),
                    global: fleet.global,
                    rollout: fleet.rollout,
                });
            }
        }
        let checked = self.parsed.check(name, text).await??;
        Ok(UnitFacts {
            hash: checked.spec.hash,
            global: checked.spec.fleet.global,
            rollout: checked.spec.fleet.rollout,
        })
    }

    /// Refuses metadata over the per-machine quotas (413).
    fn check_metadata(
        &self,
        id: &MachineId,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), ControlError> {
        let quotas = self.quotas();
        let too_large = |size: usize, limit: usize, unit| ControlError::TooLarge {
            what: format!("metadata of machine {id}"),
            size: size as u64,
            limit: limit as u64,
            unit,
        };
        if metadata.len() > quotas.metadata_keys {
            return Err(too_large(metadata.len(), quotas.metadata_keys, "keys"));
        }
        let bytes = flotilla_proto::machine::metadata_bytes(metadata);
        if bytes > quotas.metadata_bytes {
            return Err(too_large(bytes, quotas.metadata_bytes, "bytes"));
        }
        Ok(())
    }

    /// The store's current revision.
    pub(crate) async fn current_revision(&self) -> Result<u64, ControlError> {
        let got = self
            .store
            .get(&self.keys().leader())
            .await
            .map_err(store_error)?;
        Ok(got.revision)
    }
}

impl ControlPlane for Cluster {
    async fn list_units(&self, page: PageRequest) -> Result<UnitPage, ControlError> {
        self.units_page(page).await
    }

    async fn get_unit(&self, name: &UnitName) -> Result<Unit, ControlError> {
        let Some((record, kv)) = self.read_unit(name).await? else {
            return Err(not_found_unit(name));
        };
        let mut views = self.unit_views(vec![(name.clone(), record, kv)]).await?;
        views.pop().ok_or_else(|| not_found_unit(name))
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
        if let Some(text) = &given_text
            && text.len() > MAX_UNIT_FILE_BYTES
        {
            return Err(ControlError::TooLarge {
                what: format!("unit file of {name}"),
                size: text.len() as u64,
                limit: MAX_UNIT_FILE_BYTES as u64,
                unit: "bytes",
            });
        }
        let key = self.keys().unit(name);
        // The text last validated, so that a retry after a concurrent write
        // does not parse the same text again.
        let mut validated: Option<(String, UnitFacts)> = None;
        for _ in 0..CAS_ATTEMPTS {
            let existing = self.read_unit(name).await?;
            let (text, stored_hash) = match (&given_text, &existing) {
                (Some(t), _) => (t.clone(), None),
                (None, Some((record, _))) => (record.text.clone(), Some(record.hash.as_str())),
                (None, None) => match self.template_text(name).await? {
                    Some(t) => (t, None),
                    None if name.is_instance() => {
                        let template = name.template().map(|t| t.to_string()).unwrap_or_default();
                        return Err(ControlError::NotFound {
                            what: format!("unit {name} (and its template {template})"),
                        });
                    }
                    None => return Err(not_found_unit(name)),
                },
            };
            let facts = match &validated {
                Some((t, facts)) if *t == text => facts.clone(),
                _ => {
                    let facts = self.unit_facts(name, &text, stored_hash).await?;
                    validated = Some((text.clone(), facts.clone()));
                    facts
                }
            };
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
                hash: facts.hash.clone(),
                desired_state: desired,
            };
            let new_contents = existing
                .as_ref()
                .is_some_and(|(old, _)| old.hash != record.hash);
            let (compare, outcome, old_bytes) = match &existing {
                Some((old, kv)) => {
                    if new_contents && !put.replace {
                        return Err(ControlError::Conflict(format!(
                            "unit {name} already exists with different contents; replace it to change them"
                        )));
                    }
                    if old == &record {
                        return Ok(PutOutcome::Unchanged);
                    }
                    if new_contents {
                        self.refuse_if_rolling(name).await?;
                    }
                    (
                        Compare::mod_revision(&key, CompareOp::Equal, kv.mod_revision),
                        PutOutcome::Updated,
                        kv.value.len(),
                    )
                }
                None => (Compare::absent(&key), PutOutcome::Created, 0),
            };
            let value = records::encode(&record);
            let asked = Usage {
                count: u64::from(existing.is_none()),
                bytes: value.len().saturating_sub(old_bytes) as u64,
            };
            let quotas = self.quotas();
            let reservation = self
                .units
                .reserve(asked, quotas.units, quotas.unit_bytes)
                .await?;
            let global_key = self.keys().global(name);
            let global_op = if facts.global {
                TxnOp::put(global_key, Vec::new())
            } else {
                TxnOp::delete(global_key)
            };
            // New contents are written only while no rollout holds the
            // unit (see `crate::rollout`).
            let mut compares = vec![compare];
            if new_contents {
                compares.push(Compare::absent(self.keys().rolling_unit(name)));
            }
            let txn = Txn::new()
                .when(compares)
                .and_then([TxnOp::put(&key, value), global_op]);
            let resp = self.store.txn(txn).await.map_err(store_error)?;
            if resp.succeeded {
                reservation.written(resp.revision);
                return Ok(outcome);
            }
            // Someone else wrote the unit between our read and our write:
            // read again and decide again (the reservation is released).
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
        self.wait_for_any_change(index, wait).await
    }

    async fn start_rollout(&self, request: RolloutRequest) -> Result<Rollout, ControlError> {
        self.begin_rollout(request).await
    }

    async fn list_rollouts(&self) -> Result<RolloutList, ControlError> {
        self.rollouts().await
    }

    async fn get_rollout(&self, name: &str) -> Result<Rollout, ControlError> {
        self.rollout(name).await
    }

    async fn list_states(
        &self,
        filter: StateFilter,
        page: PageRequest,
    ) -> Result<StatePage, ControlError> {
        self.states_page(filter, page).await
    }

    async fn list_machines(&self, page: PageRequest) -> Result<MachinePage, ControlError> {
        self.machines_page(page).await
    }

    async fn patch_machine(
        &self,
        id: &MachineId,
        patch: MachinePatch,
    ) -> Result<MachineResource, ControlError> {
        patch.validate()?;
        // A patch that sets more keys than a machine may have is refused
        // before anything is read.
        let setting = patch.metadata.values().filter(|v| v.is_some()).count();
        if setting > self.quotas().metadata_keys {
            return Err(ControlError::TooLarge {
                what: format!("metadata of machine {id}"),
                size: setting as u64,
                limit: self.quotas().metadata_keys as u64,
                unit: "keys",
            });
        }
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
            self.check_metadata(id, &machine.metadata)?;
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
                        let record: PresenceRecord =
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
            .map(|PresenceRecord { server: s, raft }| ServerResource {
                leader: leader_id.as_deref() == Some(s.id.as_str()),
                id: s.id,
                address: s.address,
                version: s.version,
                raft_id: raft.as_ref().map(|r| r.id),
                peer_address: None,
                raft_role: raft.as_ref().map(|r| r.role.clone()),
                term: raft.as_ref().map(|r| r.term),
                applied: raft.as_ref().map(|r| r.applied),
                last_index: raft.as_ref().map(|r| r.last_index),
                lag: None,
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
                ..ServerResource::default()
            });
            out.sort_by(|a, b| a.id.cmp(&b.id));
        }
        Ok(ServerList { servers: out })
    }

    async fn register_machine(&self, machine: Machine) -> Result<Registration, ControlError> {
        machine.validate()?;
        self.check_metadata(&machine.id, &machine.metadata)?;
        let key = self.keys().machine(&machine.id);
        // A machine registering again (an agent restart) is not one more.
        let known = self
            .store
            .get(&key)
            .await
            .map_err(store_error)?
            .kv
            .is_some();
        let quotas = self.quotas();
        let reservation = self
            .machines
            .reserve(
                Usage {
                    count: u64::from(!known),
                    bytes: 0,
                },
                quotas.machines,
                u64::MAX,
            )
            .await?;
        let grant = self
            .store
            .grant(self.config.machine_ttl)
            .await
            .map_err(store_error)?;
        // Overwriting the key moves it to the new lease; the old lease, if
        // the agent restarted before it expired, ends holding nothing. The
        // key is never deleted on the way, so a restarting agent does not
        // look like a machine that died.
        let resp = self
            .store
            .txn(Txn::new().and_then([TxnOp::put_with_lease(
                &key,
                records::encode(&machine),
                grant.id,
            )]))
            .await
            .map_err(store_error)?;
        reservation.written(resp.revision);
        let _ = self.liveness.renewed(&machine.id);
        Ok(Registration {
            lease: grant.id.0,
            ttl_ms: duration_ms(grant.ttl),
            cluster_id: self.config.cluster_id,
        })
    }

    async fn heartbeat(&self, id: &MachineId, lease: i64) -> Result<Registration, ControlError> {
        self.keep_alive(id, lease).await
    }

    async fn machine_units(
        &self,
        id: &MachineId,
        index: Option<i64>,
        wait: Duration,
    ) -> Result<MachineUnits, ControlError> {
        self.machine_feed(id, index, wait).await
    }

    async fn report_states(&self, id: &MachineId, report: StateReport) -> Result<(), ControlError> {
        self.record_states(id, report).await
    }

    async fn list_events(
        &self,
        filter: EventFilter,
        page: PageRequest,
    ) -> Result<EventPage, ControlError> {
        self.events
            .list(&filter, page.token.as_deref(), page.limit)
            .await
            .map_err(event_error)
    }

    async fn follow_events(
        &self,
        filter: EventFilter,
        index: i64,
        wait: Duration,
        limit: Option<usize>,
    ) -> Result<EventPage, ControlError> {
        self.events
            .follow(&filter, from_wire_revision(index), wait, limit)
            .await
            .map_err(event_error)
    }

    fn record_change(&self, event: Event) {
        self.events.record(event);
    }
}

fn event_error(e: EventError) -> ControlError {
    match e {
        EventError::BadToken => ControlError::InvalidRequest(e.to_string()),
        EventError::Store(e) => store_error(e),
    }
}

pub(crate) fn not_found_unit(name: &UnitName) -> ControlError {
    ControlError::NotFound {
        what: format!("unit {name}"),
    }
}

/// What a store error means for an API caller.
pub(crate) fn store_error(e: StoreError) -> ControlError {
    match e {
        // Quotas and the request limits keep values far below the store's
        // limit; a value over it is still one request too large.
        StoreError::ValueTooLarge { key, size, max } => ControlError::TooLarge {
            what: format!("the value of {key}"),
            size: size as u64,
            limit: max as u64,
            unit: "bytes",
        },
        // The error's own message starts "store unavailable" too: said once.
        StoreError::Unavailable { reason } => ControlError::Unavailable(reason),
        e if e.is_temporary() => ControlError::Unavailable(e.to_string()),
        e => ControlError::Internal(e.to_string()),
    }
}

pub(crate) fn internal(e: impl std::fmt::Display) -> ControlError {
    ControlError::Internal(e.to_string())
}

pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Store revisions are unsigned; etcd's and the API's are signed 64-bit.
pub(crate) fn to_wire_revision(r: u64) -> i64 {
    i64::try_from(r).unwrap_or(i64::MAX)
}

pub(crate) fn from_wire_revision(r: i64) -> u64 {
    u64::try_from(r).unwrap_or(0)
}
