//! The machines that match each distinct `MachineMetadata` the units ask
//! for (a *combination*: every key, one of its allowed values), kept in the
//! orderings the strategies walk.
//!
//! A unit that asks for `region=eu disk=hdd` walks the machines of its
//! combination, best first, and takes the first that passes the other
//! checks: every candidate matches its metadata, so none is visited only to
//! be skipped for it. (Walking the machines of one `key=value` instead, as
//! the view once did, visits with `spread` mostly the least loaded
//! machines of `region=eu`, which are the `disk=ssd` ones other units left
//! behind, and skips them one by one.)
//!
//! The units that ask for one combination share its entry, counted; the
//! entry goes with the last of them. An entry is filled in when a unit
//! first walks it (a pass over the machines), and each of its orderings
//! when a unit first walks that one, so that only walked orderings cost
//! upkeep: with `spread`, a placement moves its machine in the load
//! ordering of each combination it matches, and in nothing else but the
//! cluster's orderings. Once filled in, an entry follows the machines: one
//! that joins, or whose metadata changes, is matched against every
//! filled-in entry; one that leaves leaves them; and one whose load or free
//! room changes moves in those it belongs to (each machine lists them).
//!
//! The upkeep grows with the number of filled-in combinations a machine
//! matches: units that ask for many distinct combinations that the same
//! machines match (`region=eu`, `region=eu region=us`, `region=eu
//! disk=hdd`, ...) make each placement on those machines move them in as
//! many orderings. So at most [`MAX_FILLED`] combinations are filled in at
//! once: a unit whose combination is not (the cluster asks for more) walks
//! the cluster's machines and checks each one's metadata, as the view did
//! before it had combinations, which is slower but bounds the upkeep of
//! every placement. In the B1 workload a machine matches four.
//!
//! Whether a machine matches is [`FleetOptions::metadata_matches`], the one
//! rule every other check uses.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use flotilla_proto::fleet::FleetOptions;

use super::index::{ComboId, Mx, OrderKey, OrderKind, OrderSets};
use super::view::PlacementView;

/// A `MachineMetadata` in one form for every unit that asks for it: each
/// key's allowed values sorted and without repeats (which changes nothing
/// of what matches). Compared and hashed by the metadata alone.
#[derive(Debug, Clone)]
pub(crate) struct Wanted(FleetOptions);

impl Wanted {
    /// The combination a unit's `MachineMetadata` asks for.
    pub fn of(metadata: &BTreeMap<String, Vec<String>>) -> Wanted {
        let machine_metadata = metadata
            .iter()
            .map(|(key, values)| {
                let mut values = values.clone();
                values.sort_unstable();
                values.dedup();
                (key.clone(), values)
            })
            .collect();
        Wanted(FleetOptions {
            machine_metadata,
            ..FleetOptions::default()
        })
    }

    /// Whether `metadata` is in the form [`of`](Wanted::of) gives it, so
    /// that it can be looked up as it is.
    fn is_canonical(metadata: &BTreeMap<String, Vec<String>>) -> bool {
        metadata
            .values()
            .all(|values| values.windows(2).all(|w| w[0] < w[1]))
    }

    /// Whether a machine with this metadata matches.
    pub fn matches(&self, machine_metadata: &BTreeMap<String, String>) -> bool {
        self.0.metadata_matches(machine_metadata)
    }

    pub fn metadata(&self) -> &BTreeMap<String, Vec<String>> {
        &self.0.machine_metadata
    }
}

impl PartialEq for Wanted {
    fn eq(&self, other: &Wanted) -> bool {
        self.metadata() == other.metadata()
    }
}

impl Eq for Wanted {}

impl Hash for Wanted {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As the map hashes itself, which `Borrow` requires.
        self.metadata().hash(state);
    }
}

impl Borrow<BTreeMap<String, Vec<String>>> for Wanted {
    fn borrow(&self) -> &BTreeMap<String, Vec<String>> {
        self.metadata()
    }
}

/// One combination and the machines that match it.
#[derive(Debug)]
pub(crate) struct Combo {
    pub wanted: Wanted,
    /// How many units ask for it.
    refs: u32,
    /// Its machines, in the orderings walked so far; in none until the
    /// first walk (then the machines list the entry in
    /// `MachineEntry::combos`).
    pub sets: OrderSets,
}

impl Combo {
    /// Whether its machines have been found (and are kept up to date).
    pub fn filled(&self) -> bool {
        self.sets.keeps_any()
    }
}

/// The most combinations filled in at once (see the module's docs).
pub const MAX_FILLED: usize = 128;

/// Every combination the view's units ask for.
#[derive(Debug)]
pub(crate) struct ComboTable {
    slots: Vec<Option<Combo>>,
    free: Vec<ComboId>,
    by_wanted: HashMap<Wanted, ComboId>,
    /// How many are filled in, and how many may be.
    filled: usize,
    max_filled: usize,
}

impl Default for ComboTable {
    fn default() -> Self {
        ComboTable::with_max_filled(MAX_FILLED)
    }
}

impl ComboTable {
    /// A table that fills in at most `max_filled` combinations at once.
    pub fn with_max_filled(max_filled: usize) -> ComboTable {
        ComboTable {
            slots: Vec::new(),
            free: Vec::new(),
            by_wanted: HashMap::new(),
            filled: 0,
            max_filled,
        }
    }

    /// How many combinations are filled in.
    pub fn filled(&self) -> usize {
        self.filled
    }

    /// Takes a reference to the combination `metadata` asks for, adding it
    /// (not filled in) when it is new; `None` for no metadata, which every
    /// machine matches.
    pub fn intern(&mut self, metadata: &BTreeMap<String, Vec<String>>) -> Option<ComboId> {
        if metadata.is_empty() {
            return None;
        }
        let found = if Wanted::is_canonical(metadata) {
            self.by_wanted.get(metadata).copied()
        } else {
            self.by_wanted.get(&Wanted::of(metadata)).copied()
        };
        if let Some(id) = found {
            self.hold(id);
            return Some(id);
        }
        let wanted = Wanted::of(metadata);
        let combo = Combo {
            wanted: wanted.clone(),
            refs: 1,
            sets: OrderSets::default(),
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id.index()] = Some(combo);
                id
            }
            None => {
                self.slots.push(Some(combo));
                ComboId::at(self.slots.len() - 1)
            }
        };
        self.by_wanted.insert(wanted, id);
        Some(id)
    }

    /// Takes one more reference to a combination.
    pub fn hold(&mut self, id: ComboId) {
        if let Some(c) = self.get_mut(id) {
            c.refs += 1;
        }
    }

    /// Drops a reference; returns the combination when that was the last
    /// one and it is gone (its machines still list it).
    fn release(&mut self, id: ComboId) -> Option<Combo> {
        let slot = self.slots.get_mut(id.index())?;
        let c = slot.as_mut()?;
        c.refs -= 1;
        if c.refs > 0 {
            return None;
        }
        let c = slot.take()?;
        self.by_wanted.remove(&c.wanted);
        self.free.push(id);
        if c.filled() {
            self.filled -= 1;
        }
        Some(c)
    }

    pub fn get(&self, id: ComboId) -> Option<&Combo> {
        self.slots.get(id.index())?.as_ref()
    }

    pub fn get_mut(&mut self, id: ComboId) -> Option<&mut Combo> {
        self.slots.get_mut(id.index())?.as_mut()
    }

    /// Every live combination.
    pub fn iter(&self) -> impl Iterator<Item = (ComboId, &Combo)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((ComboId::at(i), c.as_ref()?)))
    }

    /// The number of units that ask for a combination (for consistency
    /// checks).
    pub fn refs(&self, id: ComboId) -> u32 {
        self.get(id).map_or(0, |c| c.refs)
    }
}

impl PlacementView {
    /// Makes the cluster's machines walkable in ordering `kind` (kept from
    /// the first time it is asked for: with `spread`, only the load
    /// ordering is, and only when a unit without metadata is placed or one
    /// blocked for room is retried).
    pub(super) fn keep_cluster_order(&mut self, kind: OrderKind) {
        if self.all.keeps(kind) {
            return;
        }
        let keys: Vec<OrderKey> = self
            .machines
            .iter()
            .flatten()
            .map(|entry| entry.keys.get(kind))
            .collect();
        self.all.keep(kind, keys);
    }

    /// Makes combination `c` walkable in ordering `kind`: finds its
    /// machines the first time it is walked (a pass over the machines), and
    /// fills in the ordering the first time it is walked in that one.
    /// Returns whether it is walkable: a combination that is not filled in
    /// yet stays so while [`MAX_FILLED`] others are.
    pub(super) fn keep_combo_order(&mut self, c: ComboId, kind: OrderKind) -> bool {
        let Some(combo) = self.combos.get(c) else {
            return false;
        };
        if combo.sets.keeps(kind) {
            return true;
        }
        let was_filled = combo.filled();
        if !was_filled && self.combos.filled >= self.combos.max_filled {
            return false;
        }
        let keys: Vec<OrderKey> = if was_filled {
            combo
                .sets
                .members()
                .map(|m| self.machine(m).keys.get(kind))
                .collect()
        } else {
            let mut keys = Vec::new();
            for entry in self.machines.iter_mut().flatten() {
                if combo.wanted.matches(&entry.machine.metadata) {
                    entry.combos.push(c);
                    keys.push(entry.keys.get(kind));
                }
            }
            keys
        };
        if let Some(combo) = self.combos.get_mut(c) {
            combo.sets.keep(kind, keys);
        }
        if !was_filled {
            self.combos.filled += 1;
        }
        true
    }

    /// Enters machine `mx` (just added, or with new metadata) in the
    /// filled-in combinations it matches.
    pub(super) fn enter_combos(&mut self, mx: Mx) {
        let Some(entry) = self.machines[mx.index()].as_mut() else {
            return;
        };
        debug_assert!(entry.combos.is_empty(), "entering combinations twice");
        for (i, slot) in self.combos.slots.iter_mut().enumerate() {
            if let Some(combo) = slot
                && combo.filled()
                && combo.wanted.matches(&entry.machine.metadata)
            {
                combo.sets.insert(&entry.keys);
                entry.combos.push(ComboId::at(i));
            }
        }
    }

    /// Takes machine `mx` (leaving, or changing its metadata) out of every
    /// combination it is in.
    pub(super) fn leave_combos(&mut self, mx: Mx) {
        let Some(entry) = self.machines[mx.index()].as_mut() else {
            return;
        };
        for c in std::mem::take(&mut entry.combos) {
            if let Some(combo) = self.combos.get_mut(c) {
                combo.sets.remove(&entry.keys);
            }
        }
    }

    /// Drops a unit's reference to combination `c`; the last one takes it
    /// out of its machines' lists.
    pub(super) fn release_combo(&mut self, c: ComboId) {
        let Some(gone) = self.combos.release(c) else {
            return;
        };
        for m in gone.sets.members() {
            if let Some(entry) = self.machines[m.index()].as_mut() {
                entry.combos.retain(|&x| x != c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use flotilla_proto::fleet::FleetOptions;
    use flotilla_proto::resources::Resources;
    use flotilla_proto::{Capacity, DesiredState, Machine, MachineId, UnitName};

    use super::*;
    use crate::placement::index::Order;
    use crate::placement::{Decision, Strategy, UnitInput};

    fn id(i: usize) -> MachineId {
        MachineId::parse(&format!("{i:032x}")).expect("32 hex digits")
    }

    fn machine(i: usize, pairs: &[(&str, &str)]) -> Machine {
        Machine {
            id: id(i),
            hostname: format!("m{i}"),
            addresses: Vec::new(),
            metadata: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            capacity: Capacity {
                cpu_millis: 10_000,
                memory_bytes: 1 << 40,
            },
            agent_version: "test".to_owned(),
        }
    }

    fn input(wants: &[(&str, &[&str])], cpu: Option<u64>) -> UnitInput {
        let mut fleet = FleetOptions::default();
        for (k, vs) in wants {
            fleet.machine_metadata.insert(
                (*k).to_owned(),
                vs.iter().map(|v| (*v).to_owned()).collect(),
            );
        }
        UnitInput {
            fleet,
            resources: Resources {
                cpu_millis: cpu,
                memory_bytes: None,
            },
            desired: DesiredState::Launched,
        }
    }

    fn name(n: &str) -> UnitName {
        UnitName::parse(n).expect("a unit name")
    }

    const EU_HDD: &[(&str, &[&str])] = &[("region", &["eu"]), ("disk", &["hdd"])];

    /// The machines combination `c` holds, by index, least loaded first.
    fn by_load(view: &PlacementView, c: ComboId) -> Vec<u64> {
        let combo = view.combos.get(c).expect("a live combination");
        combo
            .sets
            .walk(Order::Load)
            .expect("the load ordering is kept")
            .map(|k| k.id.1)
            .collect()
    }

    fn combo_of(view: &PlacementView, unit: &str) -> ComboId {
        let u = view.lookup_name(&name(unit)).expect("a unit");
        view.unit(u)
            .combo
            .expect("a unit with metadata has a combination")
    }

    /// Machines 0..6: eu/us alternating, hdd for the first three.
    fn cluster(strategy: Strategy) -> PlacementView {
        let mut view = PlacementView::new(strategy);
        for i in 0..6 {
            let region = if i % 2 == 0 { "eu" } else { "us" };
            let disk = if i < 3 { "hdd" } else { "ssd" };
            view.put_machine(machine(i, &[("region", region), ("disk", disk)]));
        }
        view
    }

    #[test]
    fn a_combination_first_walked_after_machines_exist_holds_those_that_match() {
        let mut view = cluster(Strategy::Spread);
        view.put_unit(name("a.service"), input(EU_HDD, None));
        let c = combo_of(&view, "a.service");
        // Asked for, not walked yet: nothing is kept for it.
        assert!(!view.combos.get(c).unwrap().filled());
        assert!(view.machines.iter().flatten().all(|m| m.combos.is_empty()));
        view.check_consistency().unwrap();

        let decisions = view.plan();
        assert_eq!(
            decisions,
            vec![Decision::Assign {
                unit: name("a.service"),
                machine: id(0)
            }]
        );
        // eu and hdd: machines 0 and 2, and only the load ordering.
        assert_eq!(by_load(&view, c), vec![2, 0]);
        let combo = view.combos.get(c).unwrap();
        assert!(combo.sets.keeps(OrderKind::Load) && !combo.sets.keeps(OrderKind::FreeCpu));
        view.check_consistency().unwrap();
    }

    #[test]
    fn loads_reorder_the_combination_and_spread_takes_its_least_loaded() {
        let mut view = cluster(Strategy::Spread);
        // Machine 0 gets a unit that asks for nothing first.
        view.put_unit(name("x.service"), input(&[], None));
        view.plan();
        let mut placed = Vec::new();
        for i in 0..4 {
            let unit = format!("a{i}.service");
            view.put_unit(name(&unit), input(EU_HDD, None));
            for d in view.plan() {
                if let Decision::Assign { machine, .. } = d {
                    placed.push(machine);
                }
            }
            view.check_consistency().unwrap();
        }
        // 0 holds x: 2 first, then by load and id.
        assert_eq!(placed, vec![id(2), id(0), id(2), id(0)]);
        let c = combo_of(&view, "a0.service");
        assert_eq!(by_load(&view, c), vec![2, 0]);
        // A unit leaving moves its machine ahead.
        view.remove_unit(&name("a1.service"));
        view.plan();
        assert_eq!(by_load(&view, c), vec![0, 2]);
        view.check_consistency().unwrap();
    }

    #[test]
    fn machines_joining_and_leaving_enter_and_leave_filled_combinations() {
        let mut view = cluster(Strategy::Spread);
        view.put_unit(name("a.service"), input(EU_HDD, None));
        view.plan();
        let c = combo_of(&view, "a.service");
        view.put_machine(machine(10, &[("region", "eu"), ("disk", "hdd")]));
        view.put_machine(machine(11, &[("region", "eu"), ("disk", "ssd")]));
        assert_eq!(by_load(&view, c), vec![2, 10, 0]);
        view.check_consistency().unwrap();
        view.remove_machine(&id(2));
        assert_eq!(by_load(&view, c), vec![10, 0]);
        // The next unit takes the least loaded that joined.
        view.put_unit(name("b.service"), input(EU_HDD, None));
        let decisions = view.plan();
        assert!(decisions.contains(&Decision::Assign {
            unit: name("b.service"),
            machine: id(10)
        }));
        view.check_consistency().unwrap();
    }

    #[test]
    fn metadata_changes_move_a_machine_in_and_out_of_combinations() {
        let mut view = cluster(Strategy::Spread);
        view.put_unit(name("a.service"), input(EU_HDD, None));
        view.plan();
        let c = combo_of(&view, "a.service");
        assert_eq!(view.placement(&name("a.service")), Some(&id(0)));
        // Machine 1 (us, hdd) moves to eu; machine 0 (eu, hdd, with the
        // unit) takes ssd.
        view.put_machine(machine(1, &[("region", "eu"), ("disk", "hdd")]));
        view.put_machine(machine(0, &[("region", "eu"), ("disk", "ssd")]));
        assert_eq!(by_load(&view, c), vec![1, 2]);
        view.check_consistency().unwrap();
        let decisions = view.plan();
        assert!(decisions.contains(&Decision::Assign {
            unit: name("a.service"),
            machine: id(1)
        }));
        assert_eq!(by_load(&view, c), vec![2, 1]);
        view.check_consistency().unwrap();
    }

    #[test]
    fn binpack_keeps_the_orderings_its_units_walk() {
        let mut view = cluster(Strategy::BinPack);
        view.put_unit(name("a.service"), input(EU_HDD, Some(1000)));
        view.plan();
        let c = combo_of(&view, "a.service");
        let kept = |view: &PlacementView| {
            let sets = &view.combos.get(c).unwrap().sets;
            OrderKind::ALL.map(|k| sets.keeps(k))
        };
        assert_eq!(kept(&view), [false, true, false]);
        // A unit without requests walks the load ordering, which is
        // filled in from the machines the combination holds.
        view.put_unit(name("b.service"), input(EU_HDD, None));
        view.plan();
        assert_eq!(kept(&view), [true, true, false]);
        assert_eq!(by_load(&view, c), vec![0, 2]);
        view.check_consistency().unwrap();
    }

    #[test]
    fn equal_metadata_shares_one_combination_which_goes_with_its_last_unit() {
        let mut view = cluster(Strategy::Spread);
        view.put_unit(name("a.service"), input(&[("region", &["us", "eu"])], None));
        // The same values, in another order and repeated.
        view.put_unit(
            name("b.service"),
            input(&[("region", &["eu", "us", "eu"])], None),
        );
        view.put_unit(name("c.service"), input(&[("region", &["eu"])], None));
        view.plan();
        let c = combo_of(&view, "a.service");
        assert_eq!(combo_of(&view, "b.service"), c);
        assert_ne!(combo_of(&view, "c.service"), c);
        assert_eq!(view.combos.refs(c), 2);
        assert_eq!(by_load(&view, c).len(), 6);
        view.check_consistency().unwrap();

        // Put again with new resources only: it keeps its combination,
        // filled in.
        view.remove_unit(&name("b.service"));
        view.put_unit(
            name("a.service"),
            input(&[("region", &["us", "eu"])], Some(10)),
        );
        assert_eq!(combo_of(&view, "a.service"), c);
        assert!(view.combos.get(c).unwrap().filled());
        view.plan();
        view.check_consistency().unwrap();

        // The last unit takes it away, and the machines forget it.
        view.remove_unit(&name("a.service"));
        view.plan();
        assert!(view.combos.get(c).is_none());
        assert!(
            view.machines
                .iter()
                .flatten()
                .all(|m| !m.combos.contains(&c))
        );
        view.check_consistency().unwrap();
        // A new combination may take its slot, and starts empty.
        view.put_unit(name("d.service"), input(&[("disk", &["ssd"])], None));
        let d = combo_of(&view, "d.service");
        assert!(!view.combos.get(d).unwrap().filled());
        view.plan();
        assert_eq!(by_load(&view, d), vec![4, 5, 3]);
        view.check_consistency().unwrap();
    }

    #[test]
    fn the_cluster_orderings_are_kept_once_asked_for() {
        let mut view = cluster(Strategy::Spread);
        let kept = |view: &PlacementView| OrderKind::ALL.map(|k| view.all.keeps(k));
        view.put_unit(name("a.service"), input(EU_HDD, Some(1000)));
        view.plan();
        // Units with metadata walk their combination only.
        assert_eq!(kept(&view), [false, false, false]);
        view.check_consistency().unwrap();
        view.put_unit(name("b.service"), input(&[], None));
        view.put_unit(name("big.service"), input(&[], Some(20_000)));
        let decisions = view.plan();
        assert!(matches!(
            &decisions[..],
            [Decision::Assign { .. }, Decision::Unschedulable { .. }]
        ));
        assert_eq!(kept(&view), [true, false, false]);
        assert_eq!(view.all.len(), 6);
        view.check_consistency().unwrap();
        // A unit leaving frees room: the unit blocked for room is retried,
        // and the most free anywhere says it still cannot fit.
        view.remove_unit(&name("b.service"));
        let decisions = view.plan();
        assert!(matches!(&decisions[..], [Decision::Unassign { .. }]));
        assert_eq!(kept(&view), [true, true, true]);
        assert_eq!(view.all.max_free(), (10_000, 1 << 40));
        view.put_machine(machine(7, &[]));
        assert_eq!(view.all.len(), 7);
        view.check_consistency().unwrap();
    }

    #[test]
    fn past_the_limit_units_walk_the_cluster_and_place_as_before() {
        // Twelve machines in six slots; units ask for one slot each, so
        // six combinations, with room for three to be filled in.
        let build = |max_filled: usize| {
            let mut view = PlacementView::new(Strategy::Spread);
            view.combos = ComboTable::with_max_filled(max_filled);
            for i in 0..12 {
                let slot = (i % 6).to_string();
                view.put_machine(machine(i, &[("slot", &slot)]));
            }
            view
        };
        let slots = ["0", "1", "2", "3", "4", "5"];
        let mut capped = build(3);
        let mut free = build(MAX_FILLED);
        let mut decisions = [Vec::new(), Vec::new()];
        for round in 0..3 {
            for (s, slot) in slots.iter().enumerate() {
                let unit = name(&format!("u{round}-{s}.service"));
                for (view, out) in [&mut capped, &mut free].into_iter().zip(&mut decisions) {
                    view.put_unit(unit.clone(), input(&[("slot", &[slot])], None));
                    out.extend(view.plan());
                    view.check_consistency().unwrap();
                }
            }
        }
        // The same decisions, every unit on a machine of its slot.
        assert_eq!(decisions[0], decisions[1]);
        assert_eq!(decisions[0].len(), 18);
        assert_eq!(capped.combos.filled(), 3);
        assert_eq!(free.combos.filled(), 6);
        assert!(
            capped
                .machines
                .iter()
                .flatten()
                .all(|m| m.combos.len() <= 1)
        );
        // The last unit of a filled-in combination frees its room, and the
        // next combination walked is filled in.
        for round in 0..3 {
            capped.remove_unit(&name(&format!("u{round}-0.service")));
        }
        capped.plan();
        assert_eq!(capped.combos.filled(), 2);
        capped.put_unit(name("late.service"), input(&[("slot", &["5"])], None));
        let late = capped.plan();
        assert!(matches!(
            &late[..],
            [Decision::Assign { machine, .. }] if *machine == id(5) || *machine == id(11)
        ));
        assert_eq!(capped.combos.filled(), 3);
        capped.check_consistency().unwrap();
    }

    #[test]
    fn wanted_is_one_form_for_equal_metadata() {
        let mut a = BTreeMap::new();
        a.insert("region".to_owned(), vec!["us".to_owned(), "eu".to_owned()]);
        let mut b = BTreeMap::new();
        b.insert(
            "region".to_owned(),
            vec!["eu".to_owned(), "us".to_owned(), "us".to_owned()],
        );
        assert_eq!(Wanted::of(&a), Wanted::of(&b));
        assert!(!Wanted::is_canonical(&a) && !Wanted::is_canonical(&b));
        assert!(Wanted::is_canonical(Wanted::of(&a).metadata()));
        let mut t = ComboTable::default();
        assert_eq!(t.intern(&BTreeMap::new()), None);
        let ca = t.intern(&a);
        let canonical = Wanted::of(&b).metadata().clone();
        assert_eq!(t.intern(&canonical), ca);
        assert_eq!(ca.map(|c| t.refs(c)), Some(2));
    }
}
