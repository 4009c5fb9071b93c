//! The view checked against a recomputation from its machines and units:
//! every index, and every placement against its constraints. A pass over
//! everything, for tests (the randomized and data-driven placement tests
//! call it after every step).

use std::collections::{BTreeSet, HashMap};

use flotilla_proto::UnitName;
use flotilla_proto::fleet;

use super::combos::Wanted;
use super::index::{ComboId, Mx, PatternId, UnitId, count_up};
use super::view::{PlacementView, UnitEntry};

impl PlacementView {
    /// Checks every index against a recomputation from the machines and
    /// units, and, when no plan is pending, that every placed unit satisfies
    /// its constraints. Costs a pass over everything: for tests.
    pub fn check_consistency(&self) -> Result<(), String> {
        self.check_indexes()?;
        if !self.has_pending_work() {
            self.check_placements()?;
        }
        Ok(())
    }

    fn check_indexes(&self) -> Result<(), String> {
        let settled = !self.has_pending_work();
        // Machines: load, usage, reservations, orderings.
        let mut live_machines = 0;
        for (mx, entry) in self.machines.iter().enumerate() {
            let Some(entry) = entry else { continue };
            live_machines += 1;
            let mx = Mx::at(mx);
            let label = entry.label();
            if self.machine_by_id.get(&entry.machine.id) != Some(&mx) {
                return Err(format!("{label}: not indexed by id"));
            }
            let placed: BTreeSet<UnitId> = self
                .units
                .iter()
                .enumerate()
                .filter_map(|(u, e)| (e.as_ref()?.placed == Some(mx)).then_some(UnitId::at(u)))
                .collect();
            if placed != entry.units {
                return Err(format!("{label}: unit set {:?} != {placed:?}", entry.units));
            }
            let cpu: u128 = placed.iter().map(|&u| u128::from(self.unit(u).cpu())).sum();
            let mem: u128 = placed.iter().map(|&u| u128::from(self.unit(u).mem())).sum();
            if (cpu, mem) != (entry.used_cpu, entry.used_mem) {
                return Err(format!(
                    "{label}: used ({}, {}) != ({cpu}, {mem})",
                    entry.used_cpu, entry.used_mem
                ));
            }
            if self.global_reservation(&entry.machine, &entry.units)
                != (entry.global_cpu, entry.global_mem)
            {
                return Err(format!("{label}: global reservation is stale"));
            }
            if entry.compute_keys(mx) != entry.keys {
                return Err(format!("{label}: stale order keys"));
            }
            if !self.all.holds(&entry.keys) {
                return Err(format!("{label}: missing from the cluster orderings"));
            }
            // The filled-in combinations it matches, each once, each
            // holding it.
            let mut want: Vec<ComboId> = self
                .combos
                .iter()
                .filter(|(_, c)| c.filled() && c.wanted.matches(&entry.machine.metadata))
                .map(|(c, _)| c)
                .collect();
            let mut have = entry.combos.clone();
            want.sort_unstable();
            have.sort_unstable();
            if have != want {
                return Err(format!(
                    "{label}: in combinations {have:?}, matches {want:?}"
                ));
            }
            for &c in &entry.combos {
                if self
                    .combos
                    .get(c)
                    .is_none_or(|c| !c.sets.holds(&entry.keys))
                {
                    return Err(format!(
                        "{label}: missing from the orderings of combination {c:?}"
                    ));
                }
            }
        }
        let in_orders = if self.all.keeps_any() {
            live_machines
        } else {
            0
        };
        if self.all.len() != in_orders || self.machine_by_id.len() != live_machines {
            return Err("machine count mismatch".to_owned());
        }
        if !self.all.lengths_agree() {
            return Err("the cluster orderings disagree".to_owned());
        }
        for (c, combo) in self.combos.iter() {
            let matching = self
                .machines
                .iter()
                .flatten()
                .filter(|m| combo.wanted.matches(&m.machine.metadata))
                .count();
            let held = if combo.filled() { matching } else { 0 };
            if combo.sets.len() != held || !combo.sets.lengths_agree() {
                return Err(format!(
                    "combination {c:?} ({:?}) holds {} machines, {held} expected",
                    combo.wanted.metadata(),
                    combo.sets.len()
                ));
            }
        }
        let filled = self.combos.iter().filter(|(_, c)| c.filled()).count();
        if filled != self.combos.filled() {
            return Err(format!(
                "{filled} combinations filled in, {} counted",
                self.combos.filled()
            ));
        }

        // Units: names, patterns, combinations, followers, globals.
        let mut refs: HashMap<PatternId, u32> = HashMap::new();
        let mut combo_refs: HashMap<ComboId, u32> = HashMap::new();
        let mut conflict_holders: HashMap<PatternId, HashMap<Mx, u32>> = HashMap::new();
        let mut replace_holders: HashMap<PatternId, HashMap<Mx, u32>> = HashMap::new();
        let mut matches: HashMap<PatternId, HashMap<Mx, u32>> = HashMap::new();
        let mut followers: HashMap<UnitName, BTreeSet<UnitId>> = HashMap::new();
        let mut live_units = 0;
        for (u, e) in self.units.iter().enumerate() {
            let Some(e) = e else { continue };
            live_units += 1;
            let u = UnitId::at(u);
            let name = &e.name;
            if self.lookup_name(name) != Some(u) {
                return Err(format!("{name}: not indexed by name"));
            }
            if e.fleet.global != self.globals.contains(&u) {
                return Err(format!("{name}: global set is stale"));
            }
            if e.fleet.global {
                if e.placed.is_some() {
                    return Err(format!("{name}: a global unit is placed"));
                }
                if e.combo.is_some() {
                    return Err(format!("{name}: a global unit holds a combination"));
                }
                continue;
            }
            match e.combo {
                None if e.fleet.machine_metadata.is_empty() => {}
                Some(c)
                    if self
                        .combos
                        .get(c)
                        .is_some_and(|c| c.wanted == Wanted::of(&e.fleet.machine_metadata)) =>
                {
                    *combo_refs.entry(c).or_default() += 1;
                }
                other => {
                    return Err(format!(
                        "{name}: combination {other:?} for metadata {:?}",
                        e.fleet.machine_metadata
                    ));
                }
            }
            if let Some(m) = e.placed {
                let id = &self.machine(m).machine.id;
                if settled && e.assigned.as_ref() != Some(id) {
                    return Err(format!(
                        "{name}: placed on {id} but assigned {:?}",
                        e.assigned
                    ));
                }
            }
            let texts = |pids: &[PatternId]| -> Result<Vec<String>, String> {
                pids.iter()
                    .map(|&p| {
                        self.patterns
                            .get(p)
                            .map(|p| p.text.clone())
                            .ok_or_else(|| format!("{name}: dead pattern {p:?}"))
                    })
                    .collect()
            };
            let mut want: Vec<String> = e.fleet.conflicts.clone();
            let mut have = texts(&e.conflict_pids)?;
            want.sort();
            want.dedup();
            have.sort();
            if want != have {
                return Err(format!("{name}: conflict patterns {have:?} != {want:?}"));
            }
            let mut want: Vec<String> = e.fleet.replaces.clone();
            let mut have = texts(&e.replace_pids)?;
            want.sort();
            want.dedup();
            have.sort();
            if want != have {
                return Err(format!("{name}: replace patterns {have:?} != {want:?}"));
            }
            let expect_matched = self.patterns.matching(name.as_str());
            if expect_matched != e.matched_by {
                return Err(format!(
                    "{name}: matched_by {:?} != {expect_matched:?}",
                    e.matched_by
                ));
            }
            for &p in e.conflict_pids.iter().chain(&e.replace_pids) {
                *refs.entry(p).or_default() += 1;
            }
            if let Some(m) = e.placed {
                for &p in &e.conflict_pids {
                    count_up(conflict_holders.entry(p).or_default(), m);
                }
                for &p in &e.replace_pids {
                    count_up(replace_holders.entry(p).or_default(), m);
                }
                for &p in &e.matched_by {
                    count_up(matches.entry(p).or_default(), m);
                }
            }
            for leader in &e.fleet.machine_of {
                followers.entry(leader.clone()).or_default().insert(u);
            }
        }
        if live_units != self.unit_by_name.len() {
            return Err("unit count mismatch".to_owned());
        }
        for (pid, p) in self.patterns.iter() {
            let text = &p.text;
            if self.patterns.refs(pid) != refs.get(&pid).copied().unwrap_or(0) {
                return Err(format!("pattern {text:?}: stale reference count"));
            }
            let empty = HashMap::new();
            if p.conflict_holders != *conflict_holders.get(&pid).unwrap_or(&empty) {
                return Err(format!("pattern {text:?}: stale conflict holders"));
            }
            if p.replace_holders != *replace_holders.get(&pid).unwrap_or(&empty) {
                return Err(format!("pattern {text:?}: stale replace holders"));
            }
            if p.matches != *matches.get(&pid).unwrap_or(&empty) {
                return Err(format!("pattern {text:?}: stale matches"));
            }
        }
        for (c, _) in self.combos.iter() {
            if self.combos.refs(c) == 0 {
                return Err(format!("combination {c:?}: no unit asks for it"));
            }
            if self.combos.refs(c) != combo_refs.get(&c).copied().unwrap_or(0) {
                return Err(format!("combination {c:?}: stale reference count"));
            }
        }
        if refs.keys().any(|&p| self.patterns.get(p).is_none()) {
            return Err("a unit holds a dead pattern".to_owned());
        }
        let have: HashMap<UnitName, BTreeSet<UnitId>> = self
            .followers
            .iter()
            .map(|(l, fs)| (l.clone(), fs.iter().copied().collect()))
            .collect();
        if have != followers {
            return Err("followers index is stale".to_owned());
        }
        Ok(())
    }

    /// Every placed unit satisfies its constraints, but for two that the
    /// view lets stand on purpose: resources on a machine whose capacity
    /// shrank, and conflicts with global units that came later.
    fn check_placements(&self) -> Result<(), String> {
        for entry in self.machines.iter().flatten() {
            let label = entry.label();
            let units: Vec<&UnitEntry> = entry.units.iter().map(|&u| self.unit(u)).collect();
            for a in &units {
                let name = &a.name;
                if !a.wants {
                    return Err(format!("{name} is inactive but placed on {label}"));
                }
                if !a.fleet.machine_id_matches(entry.machine.id.as_str()) {
                    return Err(format!(
                        "{name} is on {label}, which its MachineID does not name"
                    ));
                }
                if !a.fleet.metadata_matches(&entry.machine.metadata) {
                    return Err(format!(
                        "{name} is on {label}, whose metadata does not match"
                    ));
                }
                for leader in &a.fleet.machine_of {
                    let beside = self.lookup_name(leader).is_some_and(|lid| {
                        let l = self.unit(lid);
                        if l.fleet.global {
                            self.global_runs_with(lid, &entry.machine, &entry.units)
                        } else {
                            l.placed
                                .is_some_and(|m| self.machine(m).machine.id == entry.machine.id)
                        }
                    });
                    if !beside {
                        return Err(format!("{name} is on {label} without {leader}"));
                    }
                }
                for b in &units {
                    let other = &b.name;
                    if fleet::units_conflict(name.as_str(), &a.fleet, other.as_str(), &b.fleet) {
                        return Err(format!("{name} and {other} conflict on {label}"));
                    }
                    if fleet::unit_displaces(name.as_str(), &a.fleet, other.as_str(), &b.fleet) {
                        return Err(format!("{name} replaces {other}, yet both are on {label}"));
                    }
                }
            }
        }
        Ok(())
    }
}
