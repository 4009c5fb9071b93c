//! What agents ask of the control plane: keeping their machine's lease
//! alive, the feed of the units their machine should run (a long poll),
//! and the states they report; and the watch that clients block on.
//!
//! State reports are stored only for units the cluster has. An agent can
//! race a `destroy`: it observed the unit before the unit was deleted, and
//! its report arrives after. Storing that state would leave a key under
//! `state/` that nothing ever deletes, and an agent that reports made-up
//! unit names could grow `state/` without bound. So each state is written
//! in a transaction that requires its unit to exist (the same atomic view
//! `delete_unit` removes states in: either the state is written before the
//! delete, which removes it, or the delete wins and the state is not
//! written). States of units that do not exist are dropped, and the rest of
//! the batch is stored: the report is not failed, since the agent can do
//! nothing about a unit that is gone, and it stops reporting it once its
//! feed no longer carries it.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use flotilla_proto::event::{Event, EventKind};
use flotilla_proto::fleet::{FleetOptions, units_conflict};
use flotilla_proto::wire::{AssignedUnit, MachineUnits, Registration, StateReport};
use flotilla_proto::{Machine, MachineId, UnitName, UnitState};

use crate::cluster::{
    CAS_ATTEMPTS, Cluster, duration_ms, from_wire_revision, internal, store_error, to_wire_revision,
};
use crate::control::ControlError;
use crate::keys::Key;
use crate::records;
use flotilla_store::{Compare, LeaseId, RangeOptions, StoreError, Txn, TxnOp, TxnOpResponse};

impl Cluster {
    /// Keeps a machine's lease alive; `NotFound` when the lease is gone.
    pub(crate) async fn keep_alive(
        &self,
        id: &MachineId,
        lease: i64,
    ) -> Result<Registration, ControlError> {
        let key = self.keys().machine(id);
        let got = self.store.get(&key).await.map_err(store_error)?;
        let lease_id = LeaseId(lease);
        if got.kv.as_ref().and_then(|kv| kv.lease) != Some(lease_id) {
            return Err(ControlError::NotFound {
                what: format!("registration of machine {id} on lease {lease_id}"),
            });
        }
        match self.store.keepalive(lease_id).await {
            Ok(ttl) => {
                // A renewal after a silence past the overdue mark: the
                // machine was cut off and is back, its lease intact.
                if let Some(gap) = self.liveness.renewed(id)
                    && gap > self.liveness.overdue_after()
                    && gap < ttl.max(self.liveness.overdue_after() * 2)
                {
                    self.events.record(
                        Event::new(EventKind::MachineCutOff, crate::trust::now_ms())
                            .machine(id)
                            .detail(format!(
                                "no heartbeat for {:.1}s, then back before its lease ended",
                                gap.as_secs_f64()
                            )),
                    );
                }
                Ok(Registration {
                    lease,
                    ttl_ms: duration_ms(ttl),
                    cluster_id: self.config.cluster_id,
                })
            }
            Err(StoreError::LeaseNotFound { .. }) => Err(ControlError::NotFound {
                what: format!("lease {lease_id} of machine {id}"),
            }),
            Err(e) => Err(store_error(e)),
        }
    }

    /// Waits until something under the units, assignments or states
    /// changed after `index`, or `wait` passed; returns the revision now.
    pub(crate) async fn wait_for_any_change(
        &self,
        index: i64,
        wait: Duration,
    ) -> Result<i64, ControlError> {
        let index = from_wire_revision(index);
        if index > 0 {
            let keys = self.keys().clone();
            let relevant = |k: &str| {
                matches!(
                    keys.parse(k),
                    Some(Key::Unit(_) | Key::Assignment(..) | Key::Sched(_) | Key::State(..))
                )
            };
            self.wait_under_any(&[keys.root()], index, wait, relevant)
                .await?;
        }
        Ok(to_wire_revision(self.current_revision().await?))
    }

    /// What machine `id` should run; with `index`, once something for it
    /// changed after that revision or `wait` passed.
    pub(crate) async fn machine_feed(
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
            // A secret's change wakes every agent's poll once; those whose
            // units use it see its new version in the snapshot.
            let secrets = keys.secret_metas();
            let relevant = |k: &str| {
                k.starts_with(&mine)
                    || k.starts_with(&secrets)
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
                secrets.as_str(),
            ];
            self.wait_under_any(&prefixes, index, wait, relevant)
                .await?;
        }
        self.machine_snapshot(id).await
    }

    /// The units assigned to machine `id`, and every Global unit.
    async fn units_concerning(&self, id: &MachineId) -> Result<HashSet<UnitName>, ControlError> {
        let mut out = HashSet::new();
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
        // Read once, when a unit uses a secret.
        let mut versions: Option<BTreeMap<String, u64>> = None;
        let mut placed: Vec<(UnitName, FleetOptions)> = Vec::new();
        let mut globals: Vec<(AssignedUnit, FleetOptions)> = Vec::new();
        for (name, global) in names {
            let Some((record, _)) = self.read_unit(&name).await? else {
                continue;
            };
            if global && !record.desired_state.is_scheduled() {
                continue;
            }
            let parsed = self.parsed.get(&name, &record.hash, &record.text).await?;
            let fleet = parsed
                .checked
                .as_ref()
                .map(|(fleet, _)| fleet.clone())
                .unwrap_or_default();
            let mut secrets = BTreeMap::new();
            if !parsed.secrets.is_empty() {
                if versions.is_none() {
                    versions = Some(
                        crate::secrets::versions(&*self.store, self.keys())
                            .await
                            .map_err(|e| ControlError::Unavailable(e.to_string()))?,
                    );
                }
                let known = versions.as_ref().map(|v| v.iter()).into_iter().flatten();
                secrets = known
                    .filter(|(n, _)| parsed.secrets.contains(n))
                    .map(|(n, v)| (n.clone(), *v))
                    .collect();
            }
            let unit = AssignedUnit {
                name: name.to_string(),
                text: record.text,
                hash: record.hash,
                desired_state: record.desired_state,
                global,
                secrets,
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

    /// Waits until a key under one of the prefixes changes after `index`
    /// (and `relevant` says it matters), or `wait` passes; returns whether
    /// something changed. A watch only receives the events of its prefix,
    /// so narrow prefixes spare the poll (and the store) every other write.
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

    /// Records a machine's report: each state once its strings check (its
    /// `lastError` cleaned rather than refused) and its unit exists (see
    /// the [module documentation](self)), and removes the states of the
    /// units it no longer has.
    pub(crate) async fn record_states(
        &self,
        id: &MachineId,
        report: StateReport,
    ) -> Result<(), ControlError> {
        let mut removed = Vec::with_capacity(report.removed.len());
        for name in &report.removed {
            removed.push(
                UnitName::parse(name).map_err(|e| ControlError::InvalidRequest(e.to_string()))?,
            );
        }
        // One state per unit (the last reported), none for a unit also
        // reported removed: one key is written once per transaction.
        let mut reported = report.states;
        for state in &mut reported {
            if &state.machine != id {
                return Err(ControlError::InvalidRequest(format!(
                    "state of {} is for machine {}, reported by machine {id}",
                    state.unit, state.machine
                )));
            }
            state.validate()?;
            state.clean_last_error();
        }
        let mut latest: BTreeMap<&UnitName, &UnitState> = BTreeMap::new();
        for state in &reported {
            latest.insert(&state.unit, state);
        }
        for unit in &removed {
            latest.remove(unit);
        }
        let states: Vec<&UnitState> = latest.into_values().collect();
        let max = self.store.limits().max_txn_ops.max(1);
        let mut dropped = Vec::new();
        for chunk in states.chunks(max) {
            dropped.extend(self.write_states_of_known_units(id, chunk).await?);
        }
        if !dropped.is_empty() {
            tracing::info!(
                machine = %id,
                units = ?dropped,
                "dropped reported states of units the cluster does not have"
            );
        }
        let deletes: Vec<TxnOp> = removed
            .iter()
            .map(|unit| TxnOp::delete(self.keys().state(unit, id)))
            .collect();
        for chunk in deletes.chunks(max) {
            self.store
                .txn(Txn::new().and_then(chunk.iter().cloned()))
                .await
                .map_err(store_error)?;
        }
        Ok(())
    }

    /// Writes the states whose unit exists, in one transaction that
    /// requires each to exist; returns the units whose states were
    /// dropped because they do not.
    async fn write_states_of_known_units(
        &self,
        id: &MachineId,
        states: &[&UnitState],
    ) -> Result<Vec<UnitName>, ControlError> {
        let mut pending: Vec<&UnitState> = states.to_vec();
        let mut dropped = Vec::new();
        for _ in 0..CAS_ATTEMPTS {
            if pending.is_empty() {
                return Ok(dropped);
            }
            let unit_keys: Vec<String> =
                pending.iter().map(|s| self.keys().unit(&s.unit)).collect();
            let txn = Txn::new()
                .when(unit_keys.iter().map(Compare::exists))
                .and_then(
                    pending
                        .iter()
                        .map(|s| TxnOp::put(self.keys().state(&s.unit, id), records::encode(*s))),
                )
                .or_else(unit_keys.iter().map(TxnOp::get));
            let resp = self.store.txn(txn).await.map_err(store_error)?;
            if resp.succeeded {
                self.record_transitions(&pending, &resp.responses);
                return Ok(dropped);
            }
            // Which units are gone, as of the failed transaction.
            let exists: Vec<bool> = resp
                .responses
                .iter()
                .map(|r| matches!(r, TxnOpResponse::Get(g) if g.kv.is_some()))
                .collect();
            if exists.len() != pending.len() {
                return Err(internal("a transaction answered the wrong number of reads"));
            }
            let mut exists = exists.into_iter();
            pending.retain(|s| {
                let keep = exists.next().unwrap_or(false);
                if !keep {
                    dropped.push(s.unit.clone());
                }
                keep
            });
        }
        Err(ControlError::Unavailable(format!(
            "the units reported by machine {id} kept changing under concurrent writes; try again"
        )))
    }

    /// Records the units that started, stopped or failed: each state
    /// written against the one its write replaced (the puts' answers carry
    /// it), so a report that repeats a state records nothing.
    fn record_transitions(&self, written: &[&UnitState], responses: &[TxnOpResponse]) {
        let now = crate::trust::now_ms();
        let events: Vec<Event> = written
            .iter()
            .zip(responses)
            .filter_map(|(state, response)| {
                let prev: Option<UnitState> = match response {
                    TxnOpResponse::Put(put) => put
                        .prev
                        .as_ref()
                        .and_then(|kv| records::decode(&kv.key, &kv.value).ok()),
                    _ => None,
                };
                transition(prev.as_ref(), state, now)
            })
            .collect();
        self.events.record_all(events);
    }
}

/// The event a unit's new state makes after its previous one, if any:
/// started (active after not), failed (failed after not), stopped
/// (inactive after running).
fn transition(prev: Option<&UnitState>, state: &UnitState, at_ms: u64) -> Option<Event> {
    let was = prev.map(|p| p.active_state.as_str());
    let now = state.active_state.as_str();
    if was == Some(now) {
        return None;
    }
    let event = match now {
        "active" if was != Some("reloading") => Event::new(EventKind::UnitStarted, at_ms),
        "failed" => Event::new(EventKind::UnitFailed, at_ms).detail(
            state
                .last_error
                .clone()
                .unwrap_or_else(|| "the unit failed".to_owned()),
        ),
        "inactive" if matches!(was, Some("active" | "reloading" | "deactivating")) => {
            Event::new(EventKind::UnitStopped, at_ms)
        }
        _ => return None,
    };
    Some(event.unit(&state.unit).machine(&state.machine))
}

#[cfg(test)]
mod tests {
    use flotilla_proto::Health;

    use super::*;

    fn state(active: &str) -> UnitState {
        UnitState {
            unit: UnitName::parse("web.service").unwrap(),
            machine: MachineId::parse(&"ab".repeat(16)).unwrap(),
            load_state: "loaded".into(),
            active_state: active.into(),
            sub_state: "x".into(),
            hash: None,
            started_hash: None,
            main_pid: None,
            n_restarts: 0,
            container_id: None,
            health: Health::None,
            since_ms: 0,
            last_error: (active == "failed").then(|| "exit status 3".to_owned()),
        }
    }

    fn kind(prev: Option<&str>, now: &str) -> Option<EventKind> {
        transition(prev.map(state).as_ref(), &state(now), 1).map(|e| e.kind)
    }

    #[test]
    fn only_transitions_make_events() {
        use EventKind::*;
        assert_eq!(kind(None, "active"), Some(UnitStarted));
        assert_eq!(kind(Some("activating"), "active"), Some(UnitStarted));
        assert_eq!(kind(Some("active"), "active"), None);
        assert_eq!(kind(Some("reloading"), "active"), None);
        assert_eq!(kind(None, "failed"), Some(UnitFailed));
        assert_eq!(kind(Some("activating"), "failed"), Some(UnitFailed));
        assert_eq!(kind(Some("failed"), "failed"), None);
        assert_eq!(kind(Some("active"), "inactive"), Some(UnitStopped));
        assert_eq!(kind(Some("deactivating"), "inactive"), Some(UnitStopped));
        assert_eq!(kind(None, "inactive"), None);
        assert_eq!(kind(Some("failed"), "inactive"), None);
        assert_eq!(kind(Some("active"), "deactivating"), None);
        let failed = transition(None, &state("failed"), 1).unwrap();
        assert_eq!(failed.detail.as_deref(), Some("exit status 3"));
        assert_eq!(failed.unit, Some(state("failed").unit));
    }
}
