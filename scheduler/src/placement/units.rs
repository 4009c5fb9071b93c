//! The unit side of [`PlacementView`]: units put and removed, and the
//! indexes of their `Conflicts`/`Replaces` patterns and `MachineOf`
//! followers.

use std::ops::Bound;

use flotilla_proto::UnitName;
use flotilla_proto::fleet;
use flotilla_proto::resources::Resources;

use super::index::{self, PatternId, UnitId, count_up};
use super::view::{PlacementView, UnitEntry};
use super::{UnassignReason, UnitInput};

impl PlacementView {
    /// Adds a unit or updates it. A unit that changed is looked at again in
    /// the next plan: it stays where it is if that machine is still
    /// eligible, and is unassigned otherwise (a unit that becomes inactive
    /// or global always is). Putting a unit unchanged does nothing.
    ///
    /// Templates (`web@.service`) never run themselves, so they are never
    /// placed whatever their desired state.
    pub fn put_unit(&mut self, name: UnitName, input: UnitInput) {
        let wants = input.desired.is_scheduled() && !name.is_template();
        let resources = Resources {
            cpu_millis: input.resources.cpu_millis.filter(|&c| c > 0),
            memory_bytes: input.resources.memory_bytes.filter(|&m| m > 0),
        };
        let fleet = input.fleet;
        let u = match self.unit_by_name.get(name.as_str()).copied() {
            Some(u) => {
                let e = self.unit(u);
                if e.fleet == fleet && e.resources == resources && e.wants == wants {
                    return;
                }
                let placed = e.placed;
                let old = e.resources;
                let was_global = e.fleet.global;
                // Held across the update, so that a unit that keeps its
                // metadata does not drop its combination (and have it
                // found again) when it is the only one to ask for it.
                let held = e.combo;
                if let Some(c) = held {
                    self.combos.hold(c);
                }
                self.detach(u);
                self.unindex_unit(u);
                let e = self.unit_mut(u);
                e.fleet = fleet;
                e.resources = resources;
                e.wants = wants;
                self.index_unit(u);
                if let Some(c) = held {
                    self.release_combo(c);
                }
                let e = self.unit_mut(u);
                let now_global = e.fleet.global;
                if let Some(m) = placed {
                    if now_global {
                        e.pending_reason = Some(UnassignReason::Global);
                    } else {
                        // Accumulated until a plan looks at the unit: two
                        // changes may grow it and then shrink it a little.
                        e.resources_grew |= resources.cpu_millis.unwrap_or(0)
                            > old.cpu_millis.unwrap_or(0)
                            || resources.memory_bytes.unwrap_or(0) > old.memory_bytes.unwrap_or(0);
                        self.attach(u, m);
                    }
                }
                if was_global || now_global {
                    self.refresh_global_reservations();
                    self.machines_changed = true;
                }
                u
            }
            None => {
                let entry = UnitEntry {
                    name: name.clone(),
                    fleet,
                    resources,
                    wants,
                    conflict_pids: Vec::new(),
                    replace_pids: Vec::new(),
                    matched_by: Vec::new(),
                    combo: None,
                    placed: None,
                    assigned: None,
                    pending_reason: None,
                    dirty: false,
                    resources_grew: false,
                    changed: false,
                    blocked: None,
                };
                let u = match self.free_units.pop() {
                    Some(u) => {
                        self.units[u.index()] = Some(entry);
                        u
                    }
                    None => {
                        self.units.push(Some(entry));
                        UnitId::at(self.units.len() - 1)
                    }
                };
                self.unit_by_name.insert(name.as_str().into(), u);
                self.index_unit(u);
                if self.unit(u).fleet.global {
                    self.refresh_global_reservations();
                    self.machines_changed = true;
                }
                u
            }
        };
        self.unit_mut(u).changed = true;
        self.mark_dirty(u);
        self.mark_followers_dirty(&name);
    }

    /// Removes a unit (destroyed). When it was assigned, the next plan
    /// unassigns it ([`UnassignReason::Removed`]). Returns whether it was
    /// there.
    pub fn remove_unit(&mut self, name: &UnitName) -> bool {
        let Some(u) = self.unit_by_name.get(name.as_str()).copied() else {
            return false;
        };
        self.detach(u);
        self.unindex_unit(u);
        let was_global = self.unit(u).fleet.global;
        self.unit_by_name.remove(name.as_str());
        self.blocked_room.remove(&u);
        self.blocked_machines.remove(&u);
        self.displaced.remove(&u);
        if let Some(entry) = self.units[u.index()].take()
            && let Some(machine) = entry.assigned
        {
            self.orphans
                .push((entry.name, machine, UnassignReason::Removed));
        }
        self.free_units.push(u);
        if was_global {
            self.refresh_global_reservations();
            self.machines_changed = true;
        }
        self.room_freed = true;
        self.mark_followers_dirty(name);
        true
    }

    /// Enters a unit's patterns, combination and followers in the indexes.
    fn index_unit(&mut self, u: UnitId) {
        let e = self.unit(u);
        if e.fleet.global {
            self.globals.insert(u);
            return;
        }
        let combo = match self.units[u.index()].as_ref() {
            Some(e) => self.combos.intern(&e.fleet.machine_metadata),
            None => None,
        };
        self.unit_mut(u).combo = combo;
        let e = self.unit(u);
        let conflicts = e.fleet.conflicts.clone();
        let replaces = e.fleet.replaces.clone();
        let leaders = e.fleet.machine_of.clone();
        let name = e.name.clone();
        let conflict_pids = self.intern_all(u, &conflicts);
        let replace_pids = self.intern_all(u, &replaces);
        let matched_by = self.patterns.matching(name.as_str());
        let e = self.unit_mut(u);
        e.conflict_pids = conflict_pids;
        e.replace_pids = replace_pids;
        e.matched_by = matched_by;
        for leader in leaders {
            let list = self.followers.entry(leader).or_default();
            if !list.contains(&u) {
                list.push(u);
            }
        }
    }

    /// Interns patterns for unit `u`, once each. A new pattern is added to
    /// the `matched_by` of the other units it matches, and counted on the
    /// machines of those that are placed.
    fn intern_all(&mut self, u: UnitId, texts: &[String]) -> Vec<PatternId> {
        let mut pids = Vec::with_capacity(texts.len());
        for text in texts {
            if self
                .patterns
                .lookup(text)
                .is_some_and(|pid| pids.contains(&pid))
            {
                continue;
            }
            let (pid, new) = self.patterns.intern(text);
            pids.push(pid);
            if new {
                self.link_new_pattern(u, pid, text);
            }
        }
        pids
    }

    fn link_new_pattern(&mut self, u: UnitId, pid: PatternId, text: &str) {
        let prefix = index::literal_prefix(text);
        let hits: Vec<UnitId> = self
            .names_with_prefix(prefix)
            .filter(|(name, x)| *x != u && fleet::glob_match(text, name))
            .map(|(_, x)| x)
            .collect();
        for x in hits {
            let e = self.unit_mut(x);
            if e.fleet.global {
                continue;
            }
            let pos = e.matched_by.binary_search(&pid).unwrap_or_else(|p| p);
            e.matched_by.insert(pos, pid);
            if let Some(m) = e.placed
                && let Some(p) = self.patterns.get_mut(pid)
            {
                count_up(&mut p.matches, m);
            }
        }
    }

    /// Drops a unit's patterns, combination and followers from the indexes.
    /// The unit must not be placed.
    fn unindex_unit(&mut self, u: UnitId) {
        debug_assert!(self.unit(u).placed.is_none(), "unindexing a placed unit");
        if self.unit(u).fleet.global {
            self.globals.remove(&u);
            return;
        }
        let e = self.unit_mut(u);
        let mut pids = std::mem::take(&mut e.conflict_pids);
        pids.append(&mut e.replace_pids);
        e.matched_by.clear();
        let combo = e.combo.take();
        let leaders = e.fleet.machine_of.clone();
        if let Some(c) = combo {
            self.release_combo(c);
        }
        for pid in pids {
            if let Some((text, prefix)) = self.patterns.release(pid) {
                let hits: Vec<UnitId> = self
                    .names_with_prefix(&prefix)
                    .filter(|(name, _)| fleet::glob_match(&text, name))
                    .map(|(_, x)| x)
                    .collect();
                for x in hits {
                    self.unit_mut(x).matched_by.retain(|&p| p != pid);
                }
            }
        }
        for leader in leaders {
            if let Some(list) = self.followers.get_mut(&leader) {
                list.retain(|&f| f != u);
                if list.is_empty() {
                    self.followers.remove(&leader);
                }
            }
        }
    }

    /// Units whose names start with `prefix`, in name order.
    fn names_with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, UnitId)> + 'a {
        self.unit_by_name
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(name, _)| name.starts_with(prefix))
            .map(|(name, &u)| (&**name, u))
    }
}
