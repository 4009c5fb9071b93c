//! Planning: the dirty units, one at a time, leaders first; each either
//! stays, moves, is placed, or is reported unschedulable.

use std::collections::{HashMap, HashSet};

use flotilla_proto::fleet;
use flotilla_proto::{MachineId, UnitName};

use super::index::{Mx, Order, OrderKey, OrderKind, UnitId, count_of};
use super::view::{BlockKind, Blocked, PlacementView, UnitEntry};
use super::{Decision, Strategy, UnassignReason};

/// How deep leaders are placed before their followers within one plan. A
/// deeper chain of `MachineOf` still converges: a follower is retried when
/// its leader is placed.
const MAX_LEADER_DEPTH: usize = 32;

/// How many times one unit may be placed within one plan. Only units that
/// `Replaces` and `MachineOf` chase around (each placement displacing the
/// unit another follows) come near it; past it the unit waits for the next
/// change.
const MAX_PLACEMENTS: u32 = 3;

/// Rounds of retries within one plan (units blocked for room are retried
/// after a round that freed room). What is left stays dirty for the next
/// plan.
const MAX_ROUNDS: usize = 64;

/// Why a machine cannot take a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reject {
    /// Its `MachineID` names another machine.
    MachineId,
    /// The machine's metadata does not match.
    Metadata,
    /// A global unit it must run beside does not run there.
    GlobalLeader(UnitName),
    /// A unit it must run beside is not placed there.
    Leader(UnitName),
    /// A global unit that conflicts with it runs there.
    Global(UnitId),
    /// A unit placed there conflicts with it.
    Conflict,
    /// A unit placed there replaces it.
    Displaced,
    /// A unit placed there is one it replaces, and it may not displace
    /// (it was displaced itself in this plan).
    WouldDisplace,
    /// Not enough free CPU or memory.
    NoRoom { cpu: bool, mem: bool },
}

impl Reject {
    /// Whether the machine is ruled out by what it is (id, metadata, the
    /// global units it runs) rather than by what is placed on it.
    pub fn is_static(&self) -> bool {
        matches!(
            self,
            Reject::MachineId | Reject::Metadata | Reject::GlobalLeader(_)
        )
    }
}

/// What a check takes into account.
#[derive(Clone, Copy)]
pub(crate) struct Mode<'a> {
    /// The machine is known to match the unit's `MachineMetadata` (it
    /// comes from the unit's combination): not checked again.
    pub metadata_known: bool,
    /// The unit is placed on the machine checked, and counted there.
    pub on_machine: bool,
    /// Check resources.
    pub room: bool,
    /// The unit was displaced in this plan: it may not displace others.
    pub displaced: bool,
    /// The active global units that conflict with the unit.
    pub globals: &'a [UnitId],
}

/// Why a unit cannot be placed now.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub kind: BlockKind,
    pub reason: String,
}

/// What one plan has done so far.
#[derive(Default)]
struct PlanCtx {
    /// Units processed, in the order they were first finished.
    touched: Vec<UnitId>,
    touched_set: HashSet<UnitId>,
    /// Why each unit first left its machine in this plan.
    unassigned: HashMap<UnitId, UnassignReason>,
    /// Units being processed (a follower waiting for its leader).
    in_progress: HashSet<UnitId>,
    /// Units whose unschedulable reason is new in this plan.
    reported: HashSet<UnitId>,
    /// How many times each unit was placed in this plan.
    placements: HashMap<UnitId, u32>,
}

impl PlanCtx {
    fn touch(&mut self, u: UnitId) {
        if self.touched_set.insert(u) {
            self.touched.push(u);
        }
    }
}

impl PlacementView {
    /// Decides for every dirty unit: see the [module documentation](super).
    pub fn plan(&mut self) -> Vec<Decision> {
        self.plan_batch(usize::MAX)
    }

    /// As [`plan`](PlacementView::plan), looking at no more than `limit`
    /// dirty units (followed by the leaders they wait for), so that a leader
    /// starting up with a million units can commit its decisions in
    /// batches. What is left stays for the next call; see
    /// [`has_pending_work`](PlacementView::has_pending_work).
    pub fn plan_batch(&mut self, limit: usize) -> Vec<Decision> {
        let mut ctx = PlanCtx::default();
        let mut done = 0usize;
        'rounds: for _ in 0..MAX_ROUNDS {
            if std::mem::take(&mut self.machines_changed) {
                let retry: Vec<UnitId> = std::mem::take(&mut self.blocked_machines)
                    .into_iter()
                    .chain(std::mem::take(&mut self.blocked_room))
                    .collect();
                for u in retry {
                    self.mark_dirty(u);
                }
                self.room_freed = false;
            }
            if std::mem::take(&mut self.room_freed) {
                for u in std::mem::take(&mut self.blocked_room) {
                    self.mark_dirty(u);
                }
            }
            let mut batch = std::mem::take(&mut self.dirty);
            batch.retain(|&u| self.get_unit(u).is_some_and(|e| e.dirty));
            if batch.is_empty() {
                break;
            }
            // Units pinned by MachineID first: they have one machine, the
            // others can go around them. Then by name, so that any leader
            // decides the same from the same state.
            // Names are distinct, so the order is total and an unstable
            // sort gives it.
            batch.sort_unstable_by(|&a, &b| {
                let (a, b) = (self.unit(a), self.unit(b));
                (a.fleet.machine_id.is_none(), &a.name)
                    .cmp(&(b.fleet.machine_id.is_none(), &b.name))
            });
            batch.dedup();
            let mut rest = batch.into_iter();
            for u in rest.by_ref() {
                if done >= limit {
                    // Put it back, and everything after it.
                    self.dirty.push(u);
                    self.dirty.extend(rest);
                    break 'rounds;
                }
                if self.get_unit(u).is_some_and(|e| e.dirty) {
                    self.process(u, &mut ctx, 0);
                    done += 1;
                }
            }
        }
        self.displaced.clear();
        self.finish(ctx)
    }

    /// Turns what the plan did into net decisions, and records them as
    /// committed.
    fn finish(&mut self, mut ctx: PlanCtx) -> Vec<Decision> {
        let mut out = Vec::new();
        for (unit, machine, reason) in std::mem::take(&mut self.orphans) {
            out.push(Decision::Unassign {
                unit,
                machine,
                reason,
            });
        }
        for u in std::mem::take(&mut ctx.touched) {
            let final_machine = self
                .unit(u)
                .placed
                .map(|m| self.machine(m).machine.id.clone());
            let planned_reason = ctx.unassigned.remove(&u);
            let e = self.unit_mut(u);
            let pending_reason = e.pending_reason.take();
            e.resources_grew = false;
            let mut unassigned = false;
            let unplaced = final_machine.is_none();
            if e.assigned != final_machine {
                if let Some(machine) = e.assigned.take() {
                    // Every path that unplaces a unit records why: a plan in
                    // `unassigned`, an event in `pending_reason`. Should one
                    // not, its machine is gone as far as the view knows.
                    let reason = planned_reason
                        .or(pending_reason)
                        .unwrap_or(UnassignReason::MachineGone);
                    out.push(Decision::Unassign {
                        unit: e.name.clone(),
                        machine,
                        reason,
                    });
                    unassigned = true;
                }
                if let Some(machine) = &final_machine {
                    out.push(Decision::Assign {
                        unit: e.name.clone(),
                        machine: machine.clone(),
                    });
                }
                e.assigned = final_machine;
            }
            if unplaced
                && let Some(blocked) = &e.blocked
                && (unassigned || ctx.reported.contains(&u))
            {
                out.push(Decision::Unschedulable {
                    unit: e.name.clone(),
                    reason: blocked.reason.clone(),
                });
            }
        }
        out
    }

    /// Decides for one unit: keeps it, moves it, places it or blocks it.
    fn process(&mut self, u: UnitId, ctx: &mut PlanCtx, depth: usize) {
        let e = self.unit_mut(u);
        e.dirty = false;
        let changed = std::mem::take(&mut e.changed);
        ctx.in_progress.insert(u);
        // Leaders first, so that the follower sees where they end up.
        if depth < MAX_LEADER_DEPTH {
            let leaders = self.unit(u).fleet.machine_of.clone();
            for leader in leaders {
                if let Some(l) = self.lookup_name(&leader)
                    && self.unit(l).dirty
                    && !ctx.in_progress.contains(&l)
                {
                    self.process(l, ctx, depth + 1);
                }
            }
        }
        self.blocked_room.remove(&u);
        self.blocked_machines.remove(&u);
        if let Some(m) = self.unit(u).placed {
            match self.keep(u, m) {
                None => {
                    self.unit_mut(u).blocked = None;
                    ctx.in_progress.remove(&u);
                    ctx.touch(u);
                    return;
                }
                Some(reason) => {
                    self.detach(u);
                    ctx.unassigned.entry(u).or_insert(reason);
                }
            }
        }
        let e = self.unit(u);
        if !e.wants || e.fleet.global {
            self.unit_mut(u).blocked = None;
        } else if !changed && self.still_too_big(u) {
            // A retry that cannot succeed: no machine has that much free.
            // Keep the reason as it was rather than work it out again.
            self.blocked_room.insert(u);
        } else {
            let placed_before = ctx.placements.get(&u).copied().unwrap_or(0);
            let placement = if placed_before >= MAX_PLACEMENTS {
                Err(Failure {
                    kind: BlockKind::Room,
                    reason: "its placement does not settle: units it replaces or must run beside \
                             keep moving it"
                        .to_owned(),
                })
            } else {
                self.try_place(u)
            };
            match placement {
                Ok(m) => {
                    self.attach(u, m);
                    *ctx.placements.entry(u).or_insert(0) += 1;
                    self.unit_mut(u).blocked = None;
                }
                Err(failure) => {
                    match failure.kind {
                        BlockKind::Machines => {
                            self.blocked_machines.insert(u);
                        }
                        BlockKind::Room => {
                            self.blocked_room.insert(u);
                        }
                        // Retried through the followers index.
                        BlockKind::Leader => {}
                    }
                    let e = self.unit_mut(u);
                    if e.blocked.as_ref().map(|b| &b.reason) != Some(&failure.reason) {
                        ctx.reported.insert(u);
                    }
                    e.blocked = Some(Blocked {
                        kind: failure.kind,
                        reason: failure.reason,
                    });
                }
            }
        }
        ctx.in_progress.remove(&u);
        ctx.touch(u);
    }

    /// Whether unit `u`, blocked for room, asks for more CPU or memory than
    /// any machine has free: then a retry cannot place it, and costs
    /// O(log M) instead of a pass over the machines.
    fn still_too_big(&mut self, u: UnitId) -> bool {
        if (self.unit(u).blocked.as_ref()).is_none_or(|b| b.kind != BlockKind::Room) {
            return false;
        }
        self.keep_cluster_order(OrderKind::FreeCpu);
        self.keep_cluster_order(OrderKind::FreeMem);
        let e = self.unit(u);
        let (cpu, mem) = self.all.max_free();
        e.resources.cpu_millis.is_some_and(|c| c > cpu)
            || e.resources.memory_bytes.is_some_and(|m| m > mem)
    }

    /// Whether placed unit `u` may stay on machine `m`; why not otherwise.
    fn keep(&self, u: UnitId, m: Mx) -> Option<UnassignReason> {
        let e = self.unit(u);
        if !e.wants {
            return Some(UnassignReason::Inactive);
        }
        let mode = Mode {
            metadata_known: false,
            on_machine: true,
            room: e.resources_grew,
            displaced: false,
            globals: &[],
        };
        let reject = self.check(u, m, &mode).err()?;
        Some(match reject {
            Reject::MachineId => UnassignReason::MachineId,
            Reject::Metadata => UnassignReason::Metadata,
            Reject::GlobalLeader(leader) => UnassignReason::LeaderUnplaced { leader },
            Reject::Leader(leader) => {
                let placed = self
                    .lookup_name(&leader)
                    .is_some_and(|l| self.unit(l).placed.is_some());
                if placed {
                    UnassignReason::LeaderMoved { leader }
                } else {
                    UnassignReason::LeaderUnplaced { leader }
                }
            }
            // The index is a filter; the scan decides, naming the unit.
            Reject::Conflict => UnassignReason::Conflict {
                with: self.unit(self.find_conflict(u, m)?).name.clone(),
            },
            Reject::Displaced => UnassignReason::Replaced {
                by: self.unit(self.find_displacer(u, m)?).name.clone(),
            },
            Reject::NoRoom { .. } => UnassignReason::NoRoom,
            // Not checked for a unit that stays.
            Reject::Global(_) | Reject::WouldDisplace => return None,
        })
    }

    /// The best machine for unplaced unit `u`, or why there is none.
    fn try_place(&mut self, u: UnitId) -> Result<Mx, Failure> {
        let e = self.unit(u);
        let globals = self.conflicting_globals(u);
        let mode = Mode {
            metadata_known: false,
            on_machine: false,
            room: true,
            displaced: self.displaced.contains(&u),
            globals: &globals,
        };
        if let Some(m) = self.leaders_machine(e)? {
            return match self.check(u, m, &mode) {
                Ok(()) => Ok(m),
                Err(reject) => Err(self.beside_failure(u, m, &reject)),
            };
        }
        let order = self.order_for(e);
        if let Some(id) = &e.fleet.machine_id {
            let mut candidates = self.machines_with_id(id);
            candidates.sort_by_key(|&m| order.key(&self.machine(m).keys));
            if let Some(&m) = candidates
                .iter()
                .find(|&&m| self.check(u, m, &mode).is_ok())
            {
                return Ok(m);
            }
            return Err(self.explain(u, &mode, &candidates));
        }
        if !mode.displaced
            && !e.replace_pids.is_empty()
            && let Some(m) = self.replacement_target(u, &mode, order)
        {
            return Ok(m);
        }
        // The machines of the unit's combination (all match its metadata),
        // or of the cluster when it asks for none. A combination past the
        // limit of those filled in is not walkable: its unit walks the
        // cluster, and the metadata is checked on the way.
        let asks = e.combo;
        let combo = asks.filter(|&c| self.keep_combo_order(c, order.kind()));
        let metadata_known = combo.is_some() || asks.is_none();
        if combo.is_none() {
            self.keep_cluster_order(order.kind());
        }
        let walk = match combo {
            None => self.all.walk(order),
            Some(c) => self.combos.get(c).and_then(|c| c.sets.walk(order)),
        };
        let walk_mode = Mode {
            metadata_known,
            ..mode
        };
        for key in walk.into_iter().flatten() {
            if self.check(u, key.mx, &walk_mode).is_ok() {
                return Ok(key.mx);
            }
        }
        // Every machine of the combination, or of the cluster (`explain`
        // passes over those that fail the metadata).
        let candidates: Vec<Mx> = match asks.and_then(|c| self.combos.get(c)) {
            Some(c) if c.filled() => c.sets.members().collect(),
            _ => self.machine_by_id.values().copied().collect(),
        };
        Err(self.explain(u, &mode, &candidates))
    }

    /// The machine of the unit's (non-global) leaders, when it has any and
    /// they are all placed on one machine; why it must wait otherwise.
    fn leaders_machine(&self, e: &UnitEntry) -> Result<Option<Mx>, Failure> {
        let mut found: Option<(Mx, &UnitName)> = None;
        for leader in &e.fleet.machine_of {
            let wait = |why: &str| Failure {
                kind: BlockKind::Leader,
                reason: format!(
                    "waiting for {leader}, which it must run beside, to be placed{why}"
                ),
            };
            let Some(l) = self.lookup_name(leader) else {
                return Err(wait(&format!(" (there is no unit {leader})")));
            };
            let l = self.unit(l);
            if !l.wants {
                return Err(wait(&format!(" ({leader} is inactive)")));
            }
            if l.fleet.global {
                // A filter on the machines, applied by `check`.
                continue;
            }
            let Some(m) = l.placed else {
                return Err(wait(""));
            };
            match found {
                None => found = Some((m, leader)),
                Some((first, first_leader)) if first != m => {
                    return Err(Failure {
                        kind: BlockKind::Leader,
                        reason: format!(
                            "the units it must run beside are on different machines: {first_leader} on {}, {leader} on {}",
                            self.machine(first).label(),
                            self.machine(m).label()
                        ),
                    });
                }
                Some(_) => {}
            }
        }
        Ok(found.map(|(m, _)| m))
    }

    /// Among the machines that run a unit that `u` replaces, the best one
    /// that can take it.
    fn replacement_target(&self, u: UnitId, mode: &Mode<'_>, order: Order) -> Option<Mx> {
        let mut seen: HashSet<Mx> = HashSet::new();
        let mut best: Option<OrderKey> = None;
        for &pid in &self.unit(u).replace_pids {
            let Some(p) = self.patterns.get(pid) else {
                continue;
            };
            for &m in p.matches.keys() {
                if !seen.insert(m) {
                    continue;
                }
                let runs_replacee = self.machine(m).units.iter().any(|&x| self.displaces(u, x));
                if runs_replacee && self.check(u, m, mode).is_ok() {
                    let key = order.key(&self.machine(m).keys);
                    if best.is_none_or(|b| key < b) {
                        best = Some(key);
                    }
                }
            }
        }
        best.map(|k| k.mx)
    }

    /// The machines a `MachineID` names: the one with that full id, or those
    /// whose id starts with that short one.
    pub(crate) fn machines_with_id(&self, id: &str) -> Vec<Mx> {
        if id.len() == fleet::SHORT_MACHINE_ID_LEN {
            let mut list = self
                .machine_by_short
                .get(&id.to_ascii_lowercase())
                .cloned()
                .unwrap_or_default();
            list.sort_by_key(|&m| self.machine(m).idkey);
            return list;
        }
        MachineId::parse(&id.to_ascii_lowercase())
            .ok()
            .and_then(|id| self.machine_by_id.get(&id))
            .map(|&m| vec![m])
            .unwrap_or_default()
    }

    /// The active global units that conflict with unit `u`.
    fn conflicting_globals(&self, u: UnitId) -> Vec<UnitId> {
        let mut globals = self.globals_conflicting(u);
        globals.retain(|&g| self.unit(g).wants);
        globals
    }

    /// The ordering the strategy walks for a unit.
    pub(crate) fn order_for(&self, e: &UnitEntry) -> Order {
        if self.strategy == Strategy::Spread {
            return Order::Load;
        }
        match (e.resources.cpu_millis, e.resources.memory_bytes) {
            (None, None) => Order::Load,
            (Some(cpu), None) => Order::FreeCpu(cpu),
            (None, Some(mem)) => Order::FreeMem(mem),
            (Some(cpu), Some(mem)) => {
                // The larger share of the cluster's total: cpu/total_cpu
                // against mem/total_mem, multiplied out.
                let cpu_share = u128::from(cpu) * u128::from(self.total_mem);
                let mem_share = u128::from(mem) * u128::from(self.total_cpu);
                if cpu_share >= mem_share {
                    Order::FreeCpu(cpu)
                } else {
                    Order::FreeMem(mem)
                }
            }
        }
    }

    /// Whether machine `m` can take unit `u`: in the order of the module
    /// documentation, cheapest first, with the indexes (no scan of the
    /// machine's units unless two units replace each other).
    pub(crate) fn check(&self, u: UnitId, m: Mx, mode: &Mode<'_>) -> Result<(), Reject> {
        let e = self.unit(u);
        let machine = self.machine(m);
        if !e.fleet.machine_id_matches(machine.machine.id.as_str()) {
            return Err(Reject::MachineId);
        }
        if !mode.metadata_known && !e.fleet.metadata_matches(&machine.machine.metadata) {
            return Err(Reject::Metadata);
        }
        for leader in &e.fleet.machine_of {
            let Some(lid) = self.lookup_name(leader) else {
                return Err(Reject::Leader(leader.clone()));
            };
            let l = self.unit(lid);
            if l.fleet.global {
                if !self.global_runs_on(lid, m) {
                    return Err(Reject::GlobalLeader(leader.clone()));
                }
            } else if l.placed != Some(m) {
                return Err(Reject::Leader(leader.clone()));
            } else if fleet::unit_displaces(e.name.as_str(), &e.fleet, l.name.as_str(), &l.fleet) {
                // It would move away the unit it must run beside, and then
                // follow it, forever (proto rejects such units; the engine
                // must not loop on them anyway).
                return Err(Reject::WouldDisplace);
            }
        }
        for &g in mode.globals {
            if self.global_runs_on(g, m) {
                return Err(Reject::Global(g));
            }
        }
        // The unit's own contribution to the counters, when it is counted on
        // this machine: it never conflicts with or displaces itself.
        let own = |held: bool| u32::from(mode.on_machine && held);
        for &pid in &e.conflict_pids {
            if let Some(p) = self.patterns.get(pid)
                && count_of(&p.matches, m) > own(e.matched_by.contains(&pid))
            {
                return Err(Reject::Conflict);
            }
        }
        for &pid in &e.matched_by {
            let Some(p) = self.patterns.get(pid) else {
                continue;
            };
            if count_of(&p.conflict_holders, m) > own(e.conflict_pids.contains(&pid)) {
                return Err(Reject::Conflict);
            }
            if count_of(&p.replace_holders, m) > own(e.replace_pids.contains(&pid))
                && (e.replace_pids.is_empty() || self.find_displacer(u, m).is_some())
            {
                return Err(Reject::Displaced);
            }
        }
        if mode.displaced {
            for &pid in &e.replace_pids {
                if let Some(p) = self.patterns.get(pid)
                    && count_of(&p.matches, m) > own(e.matched_by.contains(&pid))
                {
                    return Err(Reject::WouldDisplace);
                }
            }
        }
        if mode.room {
            let (cpu, mem) = self.lacks_room(u, m, mode.on_machine);
            if cpu || mem {
                return Err(Reject::NoRoom { cpu, mem });
            }
        }
        Ok(())
    }

    /// Which resources machine `m` lacks for unit `u`: (CPU, memory). When
    /// `counted`, the unit is placed there and its request is in the usage.
    pub(crate) fn lacks_room(&self, u: UnitId, m: Mx, counted: bool) -> (bool, bool) {
        let e = self.unit(u);
        let machine = self.machine(m);
        // In u128: the sums are exact there (see `MachineEntry::used_cpu`).
        let lacks = |request: Option<u64>, used: u128, global: u64, capacity: u64| {
            let Some(r) = request else {
                return false;
            };
            if capacity == 0 {
                return true;
            }
            let r = u128::from(r);
            // When counted, `used` holds the unit's own request.
            let others = used + u128::from(global) - if counted { r } else { 0 };
            others + r > u128::from(capacity)
        };
        let capacity = machine.machine.capacity;
        (
            lacks(
                e.resources.cpu_millis,
                machine.used_cpu,
                machine.global_cpu,
                capacity.cpu_millis,
            ),
            lacks(
                e.resources.memory_bytes,
                machine.used_mem,
                machine.global_mem,
                capacity.memory_bytes,
            ),
        )
    }

    /// A unit on machine `m` that conflicts with `u`, the first by name.
    pub(crate) fn find_conflict(&self, u: UnitId, m: Mx) -> Option<UnitId> {
        let e = self.unit(u);
        self.first_by_name(m, |x| {
            x != u && {
                let o = self.unit(x);
                fleet::units_conflict(e.name.as_str(), &e.fleet, o.name.as_str(), &o.fleet)
            }
        })
    }

    /// A unit on machine `m` that displaces `u`, the first by name.
    pub(crate) fn find_displacer(&self, u: UnitId, m: Mx) -> Option<UnitId> {
        self.first_by_name(m, |x| x != u && self.displaces(x, u))
    }

    /// A unit on machine `m` that `u` displaces, the first by name.
    pub(crate) fn find_replacee(&self, u: UnitId, m: Mx) -> Option<UnitId> {
        self.first_by_name(m, |x| x != u && self.displaces(u, x))
    }

    fn first_by_name(&self, m: Mx, pred: impl Fn(UnitId) -> bool) -> Option<UnitId> {
        self.machine(m)
            .units
            .iter()
            .copied()
            .filter(|&x| pred(x))
            .min_by(|&a, &b| self.unit(a).name.cmp(&self.unit(b).name))
    }
}
