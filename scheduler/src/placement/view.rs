//! [`PlacementView`]: the leader's in-memory picture of machines, units and
//! assignments, with the indexes placement needs, kept up to date one event
//! at a time. This module holds the view's state, its machines and its
//! assignments; the unit side (putting and removing units, indexing their
//! patterns and followers) is in `units`, and where global units run and
//! what they reserve in `globals`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use flotilla_proto::fleet::{self, FleetOptions};
use flotilla_proto::resources::Resources;
use flotilla_proto::{Machine, MachineId, UnitName};

use super::combos::ComboTable;
use super::index::{
    self, ComboId, MachineKeys, Mx, OrderSets, PatternId, PatternTable, UnitId, count_down,
    count_up,
};
use super::{PlacementError, Strategy, UnassignReason};

/// Why an unschedulable unit waits, which says what retries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockKind {
    /// No machine has the id or metadata it needs: retried when a machine
    /// joins or changes.
    Machines,
    /// Machines match, but conflicts, replacement or resources keep it off
    /// them: retried when room is freed anywhere, or a machine joins or
    /// changes.
    Room,
    /// A unit it must run beside is not placed: retried when that unit
    /// changes or is placed.
    Leader,
}

/// Why a unit is not placed, as last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Blocked {
    pub kind: BlockKind,
    pub reason: String,
}

/// A machine and what is placed on it.
#[derive(Debug)]
pub(crate) struct MachineEntry {
    pub machine: Machine,
    /// The id as a number, for ordering.
    pub idkey: u128,
    /// Units placed here.
    pub units: BTreeSet<UnitId>,
    /// Sums of the requests of the units placed here. Wider than a request:
    /// they go up and down one unit at a time and must come back exact,
    /// which a sum that saturated (or wrapped) would not (three units of
    /// `MemoryMax=7E` are more than a `u64` counts). Even 2^32 units of the
    /// largest request fit.
    pub used_cpu: u128,
    pub used_mem: u128,
    /// Sums of the requests of the global units whose metadata matches,
    /// recomputed whole when they change: a sum that saturates at
    /// `u64::MAX` is more than any machine has, which is all that matters.
    pub global_cpu: u64,
    pub global_mem: u64,
    /// Where the machine sits in the orderings now.
    pub keys: MachineKeys,
    /// The filled-in `MachineMetadata` combinations it matches, whose
    /// orderings hold it too.
    pub combos: Vec<ComboId>,
}

impl MachineEntry {
    pub fn free_cpu(&self) -> u64 {
        free(
            self.machine.capacity.cpu_millis,
            self.used_cpu,
            self.global_cpu,
        )
    }

    pub fn free_mem(&self) -> u64 {
        free(
            self.machine.capacity.memory_bytes,
            self.used_mem,
            self.global_mem,
        )
    }

    pub(super) fn compute_keys(&self, mx: Mx) -> MachineKeys {
        let load = u32::try_from(self.units.len()).unwrap_or(u32::MAX);
        MachineKeys::new(mx, self.idkey, load, self.free_cpu(), self.free_mem())
    }

    /// How reasons name the machine: its hostname, or its short id when it
    /// has none.
    pub fn label(&self) -> &str {
        if self.machine.hostname.is_empty() {
            self.machine.id.short()
        } else {
            &self.machine.hostname
        }
    }
}

/// What is left of `capacity` once `used` and `global` are taken: never
/// more than `capacity`, so it fits a `u64`.
fn free(capacity: u64, used: u128, global: u64) -> u64 {
    let taken = used + u128::from(global);
    u64::try_from(u128::from(capacity).saturating_sub(taken)).unwrap_or(0)
}

/// A unit as placement sees it.
#[derive(Debug)]
pub(crate) struct UnitEntry {
    pub name: UnitName,
    pub fleet: FleetOptions,
    /// Requests, with requests of 0 dropped.
    pub resources: Resources,
    /// Whether it needs a machine: desired state not inactive, and not a
    /// template.
    pub wants: bool,
    /// Its `Conflicts` and `Replaces` patterns (not for global units).
    pub conflict_pids: Vec<PatternId>,
    pub replace_pids: Vec<PatternId>,
    /// The patterns of any unit that match its name (not for global units).
    pub matched_by: Vec<PatternId>,
    /// The combination its `MachineMetadata` asks for (not for global
    /// units, nor for units without metadata).
    pub combo: Option<ComboId>,
    /// Where the view has it now.
    pub placed: Option<Mx>,
    /// Where the store has it, as far as the view knows: the last
    /// assignment seen or committed by a plan.
    pub assigned: Option<MachineId>,
    /// Why it left `assigned`, when an event (not a plan) moved it.
    pub pending_reason: Option<UnassignReason>,
    /// Whether it waits in the dirty queue.
    pub dirty: bool,
    /// Whether its request grew since it was placed.
    pub resources_grew: bool,
    /// Whether the unit itself changed since it was last looked at (so a
    /// stale unschedulable reason must be worked out again).
    pub changed: bool,
    /// Why it is not placed, when it wants a machine and has none.
    pub blocked: Option<Blocked>,
}

impl UnitEntry {
    pub fn cpu(&self) -> u64 {
        self.resources.cpu_millis.unwrap_or(0)
    }

    pub fn mem(&self) -> u64 {
        self.resources.memory_bytes.unwrap_or(0)
    }
}

/// The cluster as placement sees it: machines, units, where each unit is
/// placed, and the indexes that make a placement cost a few lookups instead
/// of a scan. See the [module documentation](super) for the semantics and
/// costs.
///
/// Feed it every change (from the store's watch) and call
/// [`plan`](PlacementView::plan) after a batch of changes.
#[derive(Debug, Default)]
pub struct PlacementView {
    pub(crate) strategy: Strategy,

    pub(crate) machines: Vec<Option<MachineEntry>>,
    free_machines: Vec<Mx>,
    pub(crate) machine_by_id: HashMap<MachineId, Mx>,
    /// Machines by the first 8 digits of their id, for short `MachineID`s.
    pub(crate) machine_by_short: HashMap<String, Vec<Mx>>,
    /// Every machine, in the orderings asked for so far.
    pub(crate) all: OrderSets,
    /// The machines that match each `MachineMetadata` the units ask for,
    /// in the orderings walked.
    pub(crate) combos: ComboTable,
    /// Sums of the machines' capacities, to find a unit's dominant resource.
    pub(crate) total_cpu: u64,
    pub(crate) total_mem: u64,

    pub(crate) units: Vec<Option<UnitEntry>>,
    pub(super) free_units: Vec<UnitId>,
    /// Every unit by name, sorted, so that the units whose names start with
    /// a pattern's literal prefix are one range away.
    pub(crate) unit_by_name: BTreeMap<Box<str>, UnitId>,
    /// Followers by the name of each unit they must run beside (the leader
    /// need not exist).
    pub(crate) followers: HashMap<UnitName, Vec<UnitId>>,
    /// The global units.
    pub(crate) globals: BTreeSet<UnitId>,
    pub(crate) patterns: PatternTable,

    /// Units to look at in the next plan.
    pub(crate) dirty: Vec<UnitId>,
    /// Unschedulable units, by what retries them.
    pub(crate) blocked_room: BTreeSet<UnitId>,
    pub(crate) blocked_machines: BTreeSet<UnitId>,
    /// Room was freed somewhere: retry `blocked_room`.
    pub(crate) room_freed: bool,
    /// Machines joined or changed: retry every blocked unit.
    pub(crate) machines_changed: bool,
    /// Assignments the store holds that no unit of the view accounts for:
    /// those of units removed while assigned, and an assignment superseded
    /// by another of the same unit. Each becomes an `Unassign`, unless the
    /// store deletes it first.
    pub(crate) orphans: Vec<(UnitName, MachineId, UnassignReason)>,
    /// Units displaced by `Replaces` in the plan under way.
    pub(crate) displaced: HashSet<UnitId>,
}

impl PlacementView {
    /// An empty view that places with `strategy`.
    pub fn new(strategy: Strategy) -> PlacementView {
        PlacementView {
            strategy,
            ..PlacementView::default()
        }
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Changes the strategy for later placements; placed units stay.
    pub fn set_strategy(&mut self, strategy: Strategy) {
        self.strategy = strategy;
    }

    // -----------------------------------------------------------------------
    // Machines.

    /// Adds a machine, or updates it (metadata, capacity, hostname...).
    ///
    /// A new machine retries every unschedulable unit. When the metadata
    /// changes, the units placed on the machine are checked again (and
    /// moved if they no longer match), and unschedulable units are retried.
    /// When the capacity grows, units blocked for room are retried; a
    /// capacity that shrinks moves nothing.
    pub fn put_machine(&mut self, machine: Machine) {
        if let Some(&mx) = self.machine_by_id.get(&machine.id) {
            self.update_machine(mx, machine);
            return;
        }
        let idkey = index::id_key(machine.id.as_str());
        let short = machine.id.short().to_owned();
        let id = machine.id.clone();
        let (global_cpu, global_mem) = self.global_reservation(&machine, &BTreeSet::new());
        self.total_cpu = self.total_cpu.saturating_add(machine.capacity.cpu_millis);
        self.total_mem = self.total_mem.saturating_add(machine.capacity.memory_bytes);
        let mx = match self.free_machines.pop() {
            Some(mx) => mx,
            None => {
                self.machines.push(None);
                Mx::at(self.machines.len() - 1)
            }
        };
        let mut entry = MachineEntry {
            machine,
            idkey,
            units: BTreeSet::new(),
            used_cpu: 0,
            used_mem: 0,
            global_cpu,
            global_mem,
            keys: MachineKeys::new(mx, idkey, 0, 0, 0),
            combos: Vec::new(),
        };
        entry.keys = entry.compute_keys(mx);
        self.machines[mx.index()] = Some(entry);
        self.insert_in_orders(mx);
        self.machine_by_id.insert(id, mx);
        self.machine_by_short.entry(short).or_default().push(mx);
        self.machines_changed = true;
    }

    fn update_machine(&mut self, mx: Mx, machine: Machine) {
        let old = self.machine(mx);
        let metadata_changed = old.machine.metadata != machine.metadata;
        let (old_cpu, old_mem) = (old.free_cpu(), old.free_mem());
        let old_capacity = old.machine.capacity;
        if metadata_changed {
            self.remove_from_orders(mx);
        }
        self.total_cpu = self
            .total_cpu
            .saturating_sub(old_capacity.cpu_millis)
            .saturating_add(machine.capacity.cpu_millis);
        self.total_mem = self
            .total_mem
            .saturating_sub(old_capacity.memory_bytes)
            .saturating_add(machine.capacity.memory_bytes);
        let (global_cpu, global_mem) = self.global_reservation(&machine, &self.machine(mx).units);
        let entry = self.machine_mut(mx);
        entry.machine = machine;
        entry.global_cpu = global_cpu;
        entry.global_mem = global_mem;
        let (new_cpu, new_mem) = (entry.free_cpu(), entry.free_mem());
        if metadata_changed {
            entry.keys = entry.compute_keys(mx);
            self.insert_in_orders(mx);
            let units: Vec<UnitId> = self.machine(mx).units.iter().copied().collect();
            for u in units {
                self.mark_dirty(u);
            }
            self.machines_changed = true;
        } else {
            self.reindex(mx);
        }
        if new_cpu > old_cpu || new_mem > old_mem {
            self.room_freed = true;
        }
    }

    /// Removes a machine (its lease expired). Its units are unassigned and
    /// placed elsewhere in the next plan. Returns whether it was there.
    pub fn remove_machine(&mut self, id: &MachineId) -> bool {
        let Some(&mx) = self.machine_by_id.get(id) else {
            return false;
        };
        let units: Vec<UnitId> = self.machine(mx).units.iter().copied().collect();
        for u in units {
            self.detach(u);
            self.unit_mut(u).pending_reason = Some(UnassignReason::MachineGone);
            self.mark_dirty(u);
        }
        self.remove_from_orders(mx);
        self.machine_by_id.remove(id);
        let short = id.short();
        if let Some(list) = self.machine_by_short.get_mut(short) {
            list.retain(|&m| m != mx);
            if list.is_empty() {
                self.machine_by_short.remove(short);
            }
        }
        if let Some(entry) = self.machines[mx.index()].take() {
            self.total_cpu = self
                .total_cpu
                .saturating_sub(entry.machine.capacity.cpu_millis);
            self.total_mem = self
                .total_mem
                .saturating_sub(entry.machine.capacity.memory_bytes);
        }
        self.free_machines.push(mx);
        true
    }

    /// Enters machine `mx` in the cluster's orderings and in those of the
    /// combinations it matches.
    fn insert_in_orders(&mut self, mx: Mx) {
        let Some(entry) = self.machines[mx.index()].as_ref() else {
            return;
        };
        self.all.insert(&entry.keys);
        self.enter_combos(mx);
    }

    fn remove_from_orders(&mut self, mx: Mx) {
        let Some(entry) = self.machines[mx.index()].as_ref() else {
            return;
        };
        self.all.remove(&entry.keys);
        self.leave_combos(mx);
    }

    /// Moves a machine in the orderings after its load or free room
    /// changed.
    pub(super) fn reindex(&mut self, mx: Mx) {
        let Some(entry) = self.machines[mx.index()].as_mut() else {
            return;
        };
        let new = entry.compute_keys(mx);
        let old = entry.keys;
        if new == old {
            return;
        }
        entry.keys = new;
        self.all.update(&old, &new);
        for &c in &entry.combos {
            if let Some(combo) = self.combos.get_mut(c) {
                combo.sets.update(&old, &new);
            }
        }
    }

    // -----------------------------------------------------------------------
    // Assignments.

    /// Records an assignment seen in the store. The echo of a committed
    /// decision changes nothing; an assignment the view did not expect
    /// (another writer's, or one read at startup) is taken as the truth and
    /// checked in the next plan. An assignment to a machine the view does
    /// not know (it left) is unassigned and the unit placed again. When the
    /// unit was assigned to another machine, that older assignment is
    /// unassigned in the next plan ([`UnassignReason::Duplicate`]) unless
    /// the store deletes it first.
    pub fn set_assignment(
        &mut self,
        unit: &UnitName,
        machine: &MachineId,
    ) -> Result<(), PlacementError> {
        let u = self.lookup(unit)?;
        // The unit accounts for this assignment now.
        self.orphans
            .retain(|(o, m, _)| !(o == unit && m == machine));
        let target = self.machine_by_id.get(machine).copied();
        let e = self.unit_mut(u);
        if e.assigned.as_ref() == Some(machine) && e.placed.is_some() && e.placed == target {
            return Ok(());
        }
        if let Some(old) = e.assigned.replace(machine.clone())
            && old != *machine
        {
            let name = e.name.clone();
            self.orphans.push((name, old, UnassignReason::Duplicate));
        }
        let e = self.unit_mut(u);
        e.pending_reason = None;
        let global = e.fleet.global;
        if e.placed != target || target.is_none() {
            self.detach(u);
            match target {
                Some(m) if !global => self.attach(u, m),
                Some(_) => self.unit_mut(u).pending_reason = Some(UnassignReason::Global),
                None => self.unit_mut(u).pending_reason = Some(UnassignReason::MachineGone),
            }
        }
        self.mark_dirty(u);
        Ok(())
    }

    /// Records that an assignment was deleted from the store. When the view
    /// has the unit somewhere else already (the echo of a move it planned),
    /// or no longer has the unit (the echo of the unassignment of a removed
    /// unit), nothing changes; otherwise the unit is unplaced and, if it
    /// wants a machine, placed again in the next plan.
    ///
    /// Returns [`PlacementError::UnknownUnit`] when the view holds no such
    /// unit: there is nothing to do then (typically the echo of the
    /// unassignment of a removed unit), and the error only says so.
    pub fn clear_assignment(
        &mut self,
        unit: &UnitName,
        machine: &MachineId,
    ) -> Result<(), PlacementError> {
        self.orphans
            .retain(|(u, m, _)| !(u == unit && m == machine));
        let u = self.lookup(unit)?;
        if self.unit(u).assigned.as_ref() != Some(machine) {
            return Ok(());
        }
        let target = self.machine_by_id.get(machine).copied();
        let e = self.unit_mut(u);
        e.assigned = None;
        e.pending_reason = None;
        if e.placed.is_some() && e.placed == target {
            self.detach(u);
        }
        self.mark_dirty(u);
        Ok(())
    }

    // -----------------------------------------------------------------------
    // Placing and unplacing in the indexes.

    /// Places unit `u` on machine `m` in every index. Its followers become
    /// dirty, and so do the units it replaces there.
    pub(crate) fn attach(&mut self, u: UnitId, m: Mx) {
        let e = self.unit_mut(u);
        debug_assert!(e.placed.is_none(), "attaching a placed unit");
        e.placed = Some(m);
        let (cpu, mem) = (e.cpu(), e.mem());
        let conflicts = std::mem::take(&mut e.conflict_pids);
        let replaces = std::mem::take(&mut e.replace_pids);
        let matched = std::mem::take(&mut e.matched_by);
        for &pid in &conflicts {
            if let Some(p) = self.patterns.get_mut(pid) {
                count_up(&mut p.conflict_holders, m);
            }
        }
        for &pid in &replaces {
            if let Some(p) = self.patterns.get_mut(pid) {
                count_up(&mut p.replace_holders, m);
            }
        }
        for &pid in &matched {
            if let Some(p) = self.patterns.get_mut(pid) {
                count_up(&mut p.matches, m);
            }
        }
        let displaces = !replaces.is_empty();
        let e = self.unit_mut(u);
        e.conflict_pids = conflicts;
        e.replace_pids = replaces;
        e.matched_by = matched;
        let machine = self.machine_mut(m);
        machine.units.insert(u);
        machine.used_cpu += u128::from(cpu);
        machine.used_mem += u128::from(mem);
        self.reindex(m);
        self.mark_followers_dirty_of(u);
        self.globals_changed_on(u, m);
        if displaces {
            let victims: Vec<UnitId> = self
                .machine(m)
                .units
                .iter()
                .copied()
                .filter(|&x| self.displaces(u, x))
                .collect();
            for x in victims {
                self.displaced.insert(x);
                self.mark_dirty(x);
            }
        }
    }

    /// Unplaces unit `u` from every index, if it is placed. Its followers
    /// become dirty, and units blocked for room are retried.
    pub(crate) fn detach(&mut self, u: UnitId) {
        let e = self.unit_mut(u);
        let Some(m) = e.placed.take() else {
            return;
        };
        let (cpu, mem) = (e.cpu(), e.mem());
        let conflicts = std::mem::take(&mut e.conflict_pids);
        let replaces = std::mem::take(&mut e.replace_pids);
        let matched = std::mem::take(&mut e.matched_by);
        for &pid in &conflicts {
            if let Some(p) = self.patterns.get_mut(pid) {
                count_down(&mut p.conflict_holders, m);
            }
        }
        for &pid in &replaces {
            if let Some(p) = self.patterns.get_mut(pid) {
                count_down(&mut p.replace_holders, m);
            }
        }
        for &pid in &matched {
            if let Some(p) = self.patterns.get_mut(pid) {
                count_down(&mut p.matches, m);
            }
        }
        let e = self.unit_mut(u);
        e.conflict_pids = conflicts;
        e.replace_pids = replaces;
        e.matched_by = matched;
        if let Some(machine) = self.machines[m.index()].as_mut() {
            machine.units.remove(&u);
            // Exact: the unit's request was added when it was attached.
            machine.used_cpu -= u128::from(cpu);
            machine.used_mem -= u128::from(mem);
            self.reindex(m);
            self.globals_changed_on(u, m);
        }
        self.room_freed = true;
        self.mark_followers_dirty_of(u);
    }

    pub(crate) fn mark_dirty(&mut self, u: UnitId) {
        if let Some(e) = self.units[u.index()].as_mut()
            && !e.dirty
        {
            e.dirty = true;
            self.dirty.push(u);
        }
    }

    /// Marks the followers of unit `u` dirty.
    fn mark_followers_dirty_of(&mut self, u: UnitId) {
        if let Some(list) = self.followers.get(&self.unit(u).name) {
            let list = list.clone();
            for f in list {
                self.mark_dirty(f);
            }
        }
    }

    pub(super) fn mark_followers_dirty(&mut self, leader: &UnitName) {
        let Some(list) = self.followers.get(leader) else {
            return;
        };
        let list = list.clone();
        for f in list {
            self.mark_dirty(f);
        }
    }

    /// Whether placed unit `a` displaces unit `b` from their machine.
    pub(crate) fn displaces(&self, a: UnitId, b: UnitId) -> bool {
        let (a, b) = (self.unit(a), self.unit(b));
        fleet::unit_displaces(a.name.as_str(), &a.fleet, b.name.as_str(), &b.fleet)
    }

    // -----------------------------------------------------------------------
    // Slots.

    pub(crate) fn unit(&self, u: UnitId) -> &UnitEntry {
        // A UnitId is only held while its slot is live: remove_unit drops
        // it from every index before freeing the slot, and the dirty queue
        // is filtered with get_unit.
        self.units[u.index()]
            .as_ref()
            .expect("a unit id held by an index names a live unit")
    }

    pub(crate) fn unit_mut(&mut self, u: UnitId) -> &mut UnitEntry {
        // As in `unit`.
        self.units[u.index()]
            .as_mut()
            .expect("a unit id held by an index names a live unit")
    }

    pub(crate) fn get_unit(&self, u: UnitId) -> Option<&UnitEntry> {
        self.units.get(u.index())?.as_ref()
    }

    pub(crate) fn machine(&self, m: Mx) -> &MachineEntry {
        // A machine slot is only held while live: remove_machine detaches
        // its units and drops it from every index before freeing the slot.
        self.machines[m.index()]
            .as_ref()
            .expect("a machine slot held by an index names a live machine")
    }

    pub(super) fn machine_mut(&mut self, m: Mx) -> &mut MachineEntry {
        // As in `machine`.
        self.machines[m.index()]
            .as_mut()
            .expect("a machine slot held by an index names a live machine")
    }

    pub(crate) fn lookup_name(&self, name: &UnitName) -> Option<UnitId> {
        self.unit_by_name.get(name.as_str()).copied()
    }

    fn lookup(&self, name: &UnitName) -> Result<UnitId, PlacementError> {
        self.lookup_name(name)
            .ok_or_else(|| PlacementError::UnknownUnit(name.clone()))
    }

    // -----------------------------------------------------------------------
    // Reading.

    /// How many machines the view holds.
    pub fn machine_count(&self) -> usize {
        self.machine_by_id.len()
    }

    /// How many units the view holds.
    pub fn unit_count(&self) -> usize {
        self.unit_by_name.len()
    }

    /// The machine the view has the unit on now. After a plan this is what
    /// its decisions committed; between plans, a unit whose machine left is
    /// on none.
    pub fn placement(&self, unit: &UnitName) -> Option<&MachineId> {
        let u = self.lookup_name(unit)?;
        let m = self.unit(u).placed?;
        Some(&self.machine(m).machine.id)
    }

    /// The units the view has on a machine, by name.
    pub fn units_on(&self, machine: &MachineId) -> Vec<&UnitName> {
        let Some(&m) = self.machine_by_id.get(machine) else {
            return Vec::new();
        };
        let mut names: Vec<&UnitName> = self
            .machine(m)
            .units
            .iter()
            .map(|&u| &self.unit(u).name)
            .collect();
        names.sort();
        names
    }

    /// Why a unit that wants a machine has none, as last reported.
    pub fn unschedulable_reason(&self, unit: &UnitName) -> Option<&str> {
        let u = self.lookup_name(unit)?;
        self.unit(u).blocked.as_ref().map(|b| b.reason.as_str())
    }

    /// Whether a plan would have something to look at: units changed, or a
    /// limited plan left some.
    pub fn has_pending_work(&self) -> bool {
        !self.orphans.is_empty()
            || self
                .dirty
                .iter()
                .any(|&u| self.get_unit(u).is_some_and(|e| e.dirty))
            || (self.room_freed && !self.blocked_room.is_empty())
            || (self.machines_changed
                && !(self.blocked_room.is_empty() && self.blocked_machines.is_empty()))
    }
}
