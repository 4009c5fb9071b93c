//! The leader's reconcile loop: keeps a [`PlacementView`] of the cluster up
//! to date from the store's watch, plans, and commits the decisions as
//! fenced transactions.
//!
//! - It reacts to watch events, never to a timer: a unit submitted, a
//!   machine joining or leaving (its lease expiring), an assignment written.
//! - It commits assignments in batches: one transaction carries many
//!   decisions, each transaction fenced on the leadership
//!   ([`Leadership::fence`]), so a deposed leader writes nothing.
//! - A store error is retried with backoff, with the view as it was; nothing
//!   is unscheduled because the store is slow or down. Only a machine's
//!   lease ending (its key deleted) moves its units.
//! - When the watch falls behind the store's history (`Compacted`), or after
//!   a failed commit whose outcome is unknown, the view is rebuilt from a
//!   fresh read.
//! - It records what it did in the cluster's history, when given an
//!   [`EventLog`]: that it leads, machines joined and lost, and each
//!   batch's placements, moves and reasons (`reconcile_events.rs`), all
//!   without waiting for the log's writes.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::backoff::Backoff;
use flotilla_proto::event::{Event, EventKind};
use flotilla_proto::{Machine, MachineId, UnitName, UnitSpec};

use crate::census::Census;
use crate::commit::commit;
use crate::events::EventLog;
use crate::keys::{Key, Keys};
use crate::leader::Leadership;
use crate::metrics::{LeaderSnapshot, SchedulerMetrics};
use crate::placement::{Decision, PlacementView, Strategy, UnassignReason, UnitInput};
use crate::reconcile_events;
use crate::records::{self, SchedRecord, UnitRecord};
use crate::trust::now_ms;
use flotilla_store::{KeyValue, RangeOptions, Store, StoreError, TxnOp, WatchEvent};

/// Settings of the reconcile loop.
#[derive(Debug, Clone)]
pub struct ReconcilerConfig {
    pub keys: Keys,
    pub strategy: Strategy,
    /// At most this many units planned before their decisions are
    /// committed, so a leader starting with a million units commits as it
    /// goes.
    pub plan_batch: usize,
    /// How long, after loading the view, a machine that has units assigned
    /// but no key in the store (its lease ended while this server could not
    /// reach the store, or during a failover) gets to register again before
    /// its units move: the machine TTL, so that liveness counts only time
    /// the store was reachable.
    pub machine_grace: Duration,
    /// Where the loop records what it does; `None` records nothing.
    pub events: Option<EventLog>,
    /// How the `leader-changed` event names this server (its id and
    /// address).
    pub server: String,
    /// Where leadership, placements and the units by state are counted
    /// (a default one counts for no one).
    pub metrics: SchedulerMetrics,
    /// This server's warm view ([`crate::warm::keep_warm`]): taken when it
    /// starts leading, so that it plans at once instead of reading the
    /// whole cluster first. `None`: read it.
    pub warm: Option<crate::warm::WarmView>,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        ReconcilerConfig {
            keys: Keys::default(),
            strategy: Strategy::default(),
            plan_batch: 10_000,
            machine_grace: Duration::from_secs(10),
            events: None,
            server: String::new(),
            metrics: SchedulerMetrics::default(),
            warm: None,
        }
    }
}

impl ReconcilerConfig {
    fn record(&self, events: Vec<Event>) {
        if let Some(log) = &self.events {
            log.record_all(events);
        }
    }
}

/// Why the loop returned.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// This server is no longer the leader: a fenced write failed or the
    /// lease was lost. Campaign again.
    #[error("leadership lost")]
    LeadershipLost,
    /// Shutdown was asked for.
    #[error("shut down")]
    Shutdown,
    /// The store failed in a way retrying will not fix.
    #[error("store failed: {0}")]
    Store(StoreError),
}

/// Runs the reconcile loop while `leadership` lasts.
pub async fn run(
    store: Arc<dyn Store>,
    leadership: &Leadership,
    config: &ReconcilerConfig,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> ReconcileError {
    let who = if config.server.is_empty() {
        "a new leader".to_owned()
    } else {
        format!("server {} leads", config.server)
    };
    config.record(vec![
        Event::new(EventKind::LeaderChanged, now_ms()).detail(who),
    ]);
    let _leading = Leading::new(&config.metrics);
    // Whatever ends the lead, the warm view is kept again from then on.
    let _resume = config
        .warm
        .as_ref()
        .map(crate::warm::WarmView::resume_on_drop);
    let mut backoff = Backoff::default();
    loop {
        let started = tokio::time::Instant::now();
        let r = tokio::select! {
            r = reconcile(&store, leadership, config) => r,
            // Never ends: rollouts are driven while the loop runs.
            () = crate::rollout::drive(store.clone(), leadership, &config.keys, config.events.as_ref()) => continue,
            _ = leadership.lost() => return ReconcileError::LeadershipLost,
            _ = shutdown.wait_for(|s| *s) => return ReconcileError::Shutdown,
        };
        match r {
            ReconcileError::Store(e)
                if e.is_temporary() || matches!(e, StoreError::Compacted { .. }) =>
            {
                tracing::warn!("reconcile loop restarts after a store error: {e}");
                backoff.reset_if_quiet(started.elapsed());
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = leadership.lost() => return ReconcileError::LeadershipLost,
                    _ = shutdown.wait_for(|s| *s) => return ReconcileError::Shutdown,
                }
            }
            other => return other,
        }
    }
}

/// Counts this server as the leader until dropped.
struct Leading<'a>(&'a SchedulerMetrics);

impl<'a> Leading<'a> {
    fn new(metrics: &'a SchedulerMetrics) -> Self {
        metrics.lead();
        Leading(metrics)
    }
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        self.0.follow();
    }
}

/// Reads the cluster, then follows its changes; returns only on error.
async fn reconcile(
    store: &Arc<dyn Store>,
    leadership: &Leadership,
    config: &ReconcilerConfig,
) -> ReconcileError {
    let keys = &config.keys;
    let warm = match &config.warm {
        Some(warm) => warm.take().await,
        None => None,
    };
    let started = match warm {
        Some(warm) => Ok(warm.into_loaded(keys)),
        None => load(&**store, config).await,
    };
    let (mut view, revision, mut stray, mut held, mut census) = match started {
        Ok(v) => v,
        Err(e) => return ReconcileError::Store(e),
    };
    let held_machines: HashSet<MachineId> = held.units.values().map(|(m, _)| m.clone()).collect();
    tracing::info!(
        machines = view.machine_count(),
        units = view.unit_count(),
        revision,
        "leading: placement view loaded"
    );
    // Nothing here reads a changed key's previous value.
    let mut watch = match store.watch_changes(keys.root(), revision + 1).await {
        Ok(w) => w,
        Err(e) => return ReconcileError::Store(e),
    };
    loop {
        // Placements first: what is stray (assignments of units that are
        // gone, reports of machines that left) waits for them.
        if let Err(e) = plan_and_commit(&**store, leadership, config, &mut view).await {
            return e;
        }
        if !stray.is_empty() {
            if let Err(e) = commit(&**store, leadership, &stray).await {
                return e;
            }
            stray.clear();
        }
        config.metrics.publish(LeaderSnapshot {
            counts: census.counts(),
            machines: view.machine_count() as u64,
            applied_revision: watch.next_revision().saturating_sub(1),
        });
        let grace_end = held.until;
        let next = tokio::select! {
            events = watch.next() => Some(events),
            _ = sleep_until_or_forever(grace_end) => None,
        };
        let Some(events) = next else {
            tracing::info!("grace over: units of machines still absent move");
            let absent: HashSet<&MachineId> = held.units.values().map(|(m, _)| m).collect();
            let grace = flotilla_proto::duration::format_timespan(config.machine_grace);
            config.record(
                held_machines
                    .iter()
                    .filter(|m| absent.contains(m))
                    .map(|m| {
                        Event::new(EventKind::MachineLost, now_ms())
                            .machine(m)
                            .detail(format!(
                                "it did not register again within {grace} of this server taking the lead"
                            ))
                    })
                    .collect(),
            );
            held.release(&mut view, None);
            continue;
        };
        let events = match events {
            Ok(events) => events,
            Err(e) => return ReconcileError::Store(e),
        };
        let absorbed = absorb(keys, &mut view, &mut held, &mut census, &events);
        stray = absorbed.stray;
        let (gone, history) = (absorbed.gone, absorbed.history);
        for _ in &gone {
            config.metrics.machine_lost();
        }
        config.record(history);
    }
}

/// What one batch of watch events did beyond the view.
#[derive(Debug, Default)]
pub(crate) struct Absorbed {
    /// Deletes of assignments of units that are gone, and of the state
    /// reports of machines that left ([`stale_reports`]).
    pub(crate) stray: Vec<TxnOp>,
    /// Machines whose key was deleted (their lease ended).
    pub(crate) gone: Vec<MachineId>,
    /// Machines joined and lost, for the cluster's history.
    pub(crate) history: Vec<Event>,
}

/// Applies one batch of watch events to the view, the units held for
/// absent machines and the census: the leader's loop and a follower's warm
/// view (`warm.rs`) do the same with them.
pub(crate) fn absorb(
    keys: &Keys,
    view: &mut PlacementView,
    held: &mut Held,
    census: &mut Census,
    events: &[WatchEvent],
) -> Absorbed {
    let mut stray = Vec::new();
    let mut gone = Vec::new();
    let mut history = Vec::new();
    let mut reported = Vec::new();
    for event in events {
        census.apply(keys, event);
        if held.absorb(keys, event, &mut stray) {
            continue;
        }
        match (keys.parse(event.key()), event) {
            (Some(Key::State(_, machine)), WatchEvent::Put { kv, .. }) => {
                reported.push((kv.key.clone(), machine));
            }
            (Some(Key::Machine(id)), WatchEvent::Delete { .. }) => {
                history.push(
                    Event::new(EventKind::MachineLost, now_ms())
                        .machine(&id)
                        .detail(
                            "its lease ended (no heartbeat for the machine TTL), or it was removed",
                        ),
                );
                gone.push(id);
            }
            (Some(Key::Machine(id)), WatchEvent::Put { kv, .. }) => {
                // Created by this put, not registered again onto a new
                // lease (the watch carries no previous values).
                if kv.create_revision == kv.mod_revision {
                    let mut joined = Event::new(EventKind::MachineJoined, now_ms()).machine(&id);
                    if let Some(m) = machine_of(kv) {
                        joined = joined.detail(format!("hostname {}", m.hostname));
                    }
                    history.push(joined);
                }
                apply(keys, view, event, &mut stray);
                held.release(view, Some(&id));
                continue;
            }
            _ => {}
        }
        apply(keys, view, event, &mut stray);
    }
    stray.extend(stale_reports(keys, census, &gone, reported));
    Absorbed {
        stray,
        gone,
        history,
    }
}

/// Deletes of what machines that left reported, which is no longer true:
/// their units run elsewhere now, or nowhere. (When a machine comes back,
/// its agent registers, then reports afresh.) Taken from the census's
/// index of the reports, with no read of the store: every report of a
/// machine that left in this batch of events, and every report written in
/// it by a machine that had left (one in flight when its lease ended lands
/// after the index was consulted). None of a machine that came back within
/// the batch. `reported`: the state keys written in the batch, with their
/// machine.
pub(crate) fn stale_reports(
    keys: &Keys,
    census: &Census,
    gone: &[MachineId],
    reported: Vec<(String, MachineId)>,
) -> Vec<TxnOp> {
    let mut stale = BTreeSet::new();
    for machine in gone {
        if !census.has_left(machine) {
            continue;
        }
        for unit in census.reports_of(machine) {
            // The census indexes names parsed from keys: they parse again.
            if let Ok(unit) = UnitName::parse(unit) {
                stale.insert(keys.state(&unit, machine));
            }
        }
    }
    for (key, machine) in reported {
        if census.has_left(&machine) {
            stale.insert(key);
        }
    }
    stale.into_iter().map(TxnOp::delete).collect()
}

/// What [`load`] read.
pub(crate) type Loaded = (PlacementView, u64, Vec<TxnOp>, Held, Census);

/// Builds the view from a consistent-enough read: units, then machines,
/// then assignments; and the census of the units by state (from the
/// units, the leader's decisions, the `Global` marks and the states).
/// Returns the revision to watch from (that of the first read: later
/// changes are seen again through the watch and are idempotent), and the
/// deletes of assignments whose unit is gone.
pub(crate) async fn load(
    store: &dyn Store,
    config: &ReconcilerConfig,
) -> Result<Loaded, StoreError> {
    let keys = &config.keys;
    let mut view = PlacementView::new(config.strategy);
    let (units, revision) = range_all(store, &keys.units()).await?;
    // Checking every unit file is the CPU-heavy part of taking the lead:
    // it runs on a blocking thread, not on the threads that answer the
    // API's heartbeats and long polls.
    let parse_keys = keys.clone();
    let (mut inputs, mut census) = tokio::task::spawn_blocking(move || {
        let mut inputs: HashMap<UnitName, UnitInput> = HashMap::new();
        let mut census = Census::default();
        for kv in &units {
            census.put(&parse_keys, kv);
            if let Some(Key::Unit(name)) = parse_keys.parse(&kv.key)
                && let Some(input) = unit_input(&name, kv)
            {
                inputs.insert(name, input);
            }
        }
        (inputs, census)
    })
    .await
    .map_err(|e| StoreError::Internal {
        reason: format!("checking the units failed: {e}"),
    })?;
    let (machines, _) = range_all(store, &keys.machines()).await?;
    let mut present = HashSet::new();
    for kv in &machines {
        if let Some(machine) = machine_of(kv) {
            present.insert(machine.id.clone());
            view.put_machine(machine);
        }
    }
    let (assignments, _) = range_all(store, &keys.assignments()).await?;
    for prefix in [keys.scheds(), keys.globals(), keys.states()] {
        for kv in range_all(store, &prefix).await?.0 {
            census.put(keys, &kv);
        }
    }
    let mut stray = Vec::new();
    let mut held = Held::default();
    let mut assigned = Vec::new();
    for kv in &assignments {
        let Some(Key::Assignment(machine, unit)) = keys.parse(&kv.key) else {
            continue;
        };
        if !present.contains(&machine)
            && let Some(input) = inputs.remove(&unit)
        {
            held.units.insert(unit, (machine, input));
        } else if inputs.contains_key(&unit) || held.units.contains_key(&unit) {
            assigned.push((unit, machine));
        } else {
            // An assignment of a unit that no longer exists.
            stray.push(TxnOp::delete(kv.key.clone()));
        }
    }
    for (name, input) in inputs {
        view.put_unit(name, input);
    }
    for (unit, machine) in assigned {
        // A unit held for its absent machine has a second assignment:
        // the view sorts that out once the unit joins it.
        let _ = view.set_assignment(&unit, &machine);
    }
    if !held.units.is_empty() {
        held.until = Some(tokio::time::Instant::now() + config.machine_grace);
        tracing::info!(
            units = held.units.len(),
            grace = ?config.machine_grace,
            "units of machines absent from the store wait for them to register again"
        );
    }
    Ok((view, revision, stray, held, census))
}

/// Units assigned to machines that were absent when the view was loaded,
/// kept out of the view (so nothing moves them) until their machine
/// registers again or the grace ends.
#[derive(Debug, Default)]
pub(crate) struct Held {
    units: HashMap<UnitName, (MachineId, UnitInput)>,
    pub(crate) until: Option<tokio::time::Instant>,
}

impl Held {
    pub(crate) fn holds(&self, unit: &UnitName) -> bool {
        self.units.contains_key(unit)
    }

    /// Units join the view on the machine they were assigned to; when that
    /// machine is still absent, the view moves them.
    pub(crate) fn release(&mut self, view: &mut PlacementView, machine: Option<&MachineId>) {
        let names: Vec<UnitName> = self
            .units
            .iter()
            .filter(|(_, (m, _))| machine.is_none_or(|x| x == m))
            .map(|(u, _)| u.clone())
            .collect();
        for name in names {
            if let Some((m, input)) = self.units.remove(&name) {
                view.put_unit(name.clone(), input);
                let _ = view.set_assignment(&name, &m);
            }
        }
        if self.units.is_empty() {
            self.until = None;
        }
    }

    /// Takes an event about a held unit; returns whether it was one.
    fn absorb(&mut self, keys: &Keys, event: &WatchEvent, stray: &mut Vec<TxnOp>) -> bool {
        match (keys.parse(event.key()), event) {
            (Some(Key::Unit(name)), WatchEvent::Put { kv, .. }) if self.holds(&name) => {
                match unit_input(&name, kv) {
                    Some(input) => {
                        if let Some(entry) = self.units.get_mut(&name) {
                            entry.1 = input;
                        }
                    }
                    None => self.drop_unit(keys, &name, stray),
                }
                true
            }
            (Some(Key::Unit(name)), WatchEvent::Delete { .. }) if self.holds(&name) => {
                self.drop_unit(keys, &name, stray);
                true
            }
            (Some(Key::Assignment(_, unit)), _) => self.holds(&unit),
            _ => false,
        }
    }

    fn drop_unit(&mut self, keys: &Keys, name: &UnitName, stray: &mut Vec<TxnOp>) {
        if let Some((machine, _)) = self.units.remove(name) {
            stray.push(TxnOp::delete(keys.assignment(&machine, name)));
        }
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
pub(crate) async fn sleep_until_or_forever(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Every key under a prefix, a page at a time; the revision of the first
/// page.
async fn range_all(store: &dyn Store, prefix: &str) -> Result<(Vec<KeyValue>, u64), StoreError> {
    const PAGE: usize = 10_000;
    let mut out = Vec::new();
    let mut first_revision = None;
    let mut after: Option<String> = None;
    loop {
        let mut options = RangeOptions::default().limit(PAGE);
        if let Some(a) = after.take() {
            options = options.start_after(a);
        }
        let page = store.range(prefix, options).await?;
        first_revision.get_or_insert(page.revision);
        let more = page.more;
        after = page.kvs.last().map(|kv| kv.key.clone());
        out.extend(page.kvs);
        if !more {
            break;
        }
    }
    Ok((out, first_revision.unwrap_or(0)))
}

fn unit_input(name: &UnitName, kv: &KeyValue) -> Option<UnitInput> {
    if name.is_template() {
        // Templates are never placed; their instances are units of their own.
        return None;
    }
    let record: UnitRecord = match records::decode(&kv.key, &kv.value) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("skipping unit {name}: {e}");
            return None;
        }
    };
    match UnitSpec::check_named(name.as_str(), name, &record.text) {
        Ok(checked) => Some(UnitInput::from_spec(&checked.spec, record.desired_state)),
        Err(e) => {
            tracing::error!("skipping unit {name}, whose stored file does not check: {e}");
            None
        }
    }
}

fn machine_of(kv: &KeyValue) -> Option<Machine> {
    match records::decode(&kv.key, &kv.value) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::error!("skipping machine: {e}");
            None
        }
    }
}

/// Applies one watch event to the view. Assignments of units the view does
/// not hold (their unit was destroyed) are collected in `stray` for
/// deletion.
fn apply(keys: &Keys, view: &mut PlacementView, event: &WatchEvent, stray: &mut Vec<TxnOp>) {
    let Some(key) = keys.parse(event.key()) else {
        return;
    };
    match (key, event) {
        (Key::Unit(name), WatchEvent::Put { kv, .. }) => match unit_input(&name, kv) {
            Some(input) => view.put_unit(name, input),
            None => {
                view.remove_unit(&name);
            }
        },
        (Key::Unit(name), WatchEvent::Delete { .. }) => {
            view.remove_unit(&name);
        }
        (Key::Machine(_), WatchEvent::Put { kv, .. }) => {
            if let Some(machine) = machine_of(kv) {
                view.put_machine(machine);
            }
        }
        (Key::Machine(id), WatchEvent::Delete { .. }) => {
            tracing::info!(machine = %id, "machine left the cluster");
            view.remove_machine(&id);
        }
        (Key::Assignment(machine, unit), WatchEvent::Put { kv, .. }) => {
            let known = view.set_assignment(&unit, &machine).is_ok();
            if !known {
                stray.push(TxnOp::delete(kv.key.clone()));
            }
        }
        (Key::Assignment(machine, unit), WatchEvent::Delete { .. }) => {
            let _ = view.clear_assignment(&unit, &machine);
        }
        _ => {}
    }
}

/// Plans and commits until the view has nothing left to decide.
async fn plan_and_commit(
    store: &dyn Store,
    leadership: &Leadership,
    config: &ReconcilerConfig,
    view: &mut PlacementView,
) -> Result<(), ReconcileError> {
    loop {
        // Each batch looks at up to `plan_batch` dirty units, so this ends:
        // a batch that decides nothing (a new leader checking units that
        // stay where they are) is no reason to leave the rest waiting for
        // the next event.
        let decisions = view.plan_batch(config.plan_batch);
        if !decisions.is_empty() {
            let ops = decision_ops(&config.keys, &decisions);
            let responses = commit(store, leadership, &ops).await?;
            if config.events.is_some() {
                let outcomes = reconcile_events::outcomes(&decisions);
                config.record(reconcile_events::events(
                    &config.keys,
                    &outcomes,
                    &ops,
                    &responses,
                    now_ms(),
                ));
            }
            count(&config.metrics, &decisions);
        }
        if !view.has_pending_work() {
            return Ok(());
        }
        // Let the API and the watch run between batches.
        tokio::task::yield_now().await;
    }
}

/// Counts committed decisions in the metrics.
fn count(metrics: &SchedulerMetrics, decisions: &[Decision]) {
    let mut placed = 0;
    for d in decisions {
        match d {
            Decision::Assign { .. } => placed += 1,
            Decision::Unassign { reason, .. } => metrics.unassigned(reason),
            Decision::Unschedulable { .. } => {}
        }
    }
    metrics.placed(placed);
}

/// The store writes for a list of decisions, one write per key (the last
/// decision about a key wins), in the order the keys were first touched.
fn decision_ops(keys: &Keys, decisions: &[Decision]) -> Vec<TxnOp> {
    let mut order: Vec<String> = Vec::new();
    let mut ops: HashMap<String, TxnOp> = HashMap::new();
    let mut set = |key: String, op: TxnOp| {
        if ops.insert(key.clone(), op).is_none() {
            order.push(key);
        }
    };
    for d in decisions {
        match d {
            Decision::Assign { unit, machine } => {
                tracing::info!(%unit, %machine, "assign");
                let key = keys.assignment(machine, unit);
                set(key.clone(), TxnOp::put(key, Vec::new()));
                let sched = SchedRecord {
                    machine: Some(machine.clone()),
                    reason: None,
                };
                let key = keys.sched(unit);
                set(key.clone(), TxnOp::put(key, records::encode(&sched)));
            }
            Decision::Unassign {
                unit,
                machine,
                reason,
            } => {
                tracing::info!(%unit, %machine, %reason, "unassign");
                let key = keys.assignment(machine, unit);
                set(key.clone(), TxnOp::delete(key));
                let key = keys.sched(unit);
                match reason {
                    UnassignReason::Removed | UnassignReason::Inactive | UnassignReason::Global => {
                        set(key.clone(), TxnOp::delete(key));
                    }
                    _ => {
                        let sched = SchedRecord {
                            machine: None,
                            reason: Some(format!("unassigned from {machine}: {reason}")),
                        };
                        set(key.clone(), TxnOp::put(key, records::encode(&sched)));
                    }
                }
            }
            Decision::Unschedulable { unit, reason } => {
                tracing::info!(%unit, %reason, "unschedulable");
                let sched = SchedRecord {
                    machine: None,
                    reason: Some(reason.clone()),
                };
                let key = keys.sched(unit);
                set(key.clone(), TxnOp::put(key, records::encode(&sched)));
            }
        }
    }
    order.into_iter().filter_map(|k| ops.remove(&k)).collect()
}
