#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test
//! Every placement the view makes is the one the rules name, checked
//! against a plain model that looks at every machine: of the machines that
//! match the unit's `MachineMetadata`, run no unit it conflicts with and
//! have room for it, `spread` takes the one with the fewest units (then
//! the lowest id) and `binpack` the one with the least free of the unit's
//! dominant resource (then the least of the other, then the lowest id).
//!
//! The cluster is the benchmarks' (B1) in small: machines in regions,
//! racks and disks, units in groups that ask for one `key=value`, for
//! either of two values, or for two keys, some spread with `Conflicts`;
//! units arrive one at a time and in bulk, and machines join, leave and
//! change their metadata between them.

use std::collections::BTreeMap;

use flotilla_proto::fleet::{self, FleetOptions};
use flotilla_proto::resources::Resources;
use flotilla_proto::{Capacity, DesiredState, Machine, MachineId, UnitName};
use flotilla_scheduler::placement::{Decision, PlacementView, Strategy, UnitInput};

fn machine(i: usize, generation: usize) -> Machine {
    let mut metadata = BTreeMap::new();
    metadata.insert("region".to_owned(), format!("r{}", (i + generation) % 5));
    metadata.insert("rack".to_owned(), format!("k{}", i % 7));
    let disk = if (i / 5 + generation).is_multiple_of(2) {
        "ssd"
    } else {
        "hdd"
    };
    metadata.insert("disk".to_owned(), disk.to_owned());
    // Machines of two sizes, so that bin-packing has a choice to make.
    let big = i.is_multiple_of(3);
    Machine {
        id: MachineId::parse(&format!("{i:032x}")).unwrap(),
        hostname: format!("m{i}"),
        addresses: Vec::new(),
        metadata,
        capacity: Capacity {
            cpu_millis: if big { 8_000 } else { 4_000 },
            memory_bytes: if big { 8 << 30 } else { 16 << 30 },
        },
        agent_version: "test".to_owned(),
    }
}

/// Unit `i` of group `g`, as the benchmark's groups.
fn unit(g: usize, i: usize) -> (UnitName, UnitInput) {
    let mut fleet = FleetOptions::default();
    let mut want = |k: &str, vs: &[String]| {
        fleet.machine_metadata.insert(k.to_owned(), vs.to_vec());
    };
    let (a, b) = (format!("r{}", g % 5), format!("r{}", (g + 1) % 5));
    let conflicts = g.is_multiple_of(10);
    let name = if conflicts {
        want("disk", &["ssd".to_owned()]);
        fleet.conflicts.push(format!("g{g}@*.service"));
        format!("g{g}@{i}.service")
    } else {
        match g % 5 {
            0 => {}
            1 => want("region", &[a]),
            2 => want("disk", &["ssd".to_owned()]),
            // Either value, listed twice and out of order.
            3 => want("region", &[b.clone(), a, b]),
            _ => {
                want("region", &[a]);
                want("disk", &["hdd".to_owned()]);
            }
        }
        format!("g{g}-{i}.service")
    };
    let resources = match g % 3 {
        0 => Resources {
            cpu_millis: Some(300),
            memory_bytes: Some(256 << 20),
        },
        1 => Resources {
            cpu_millis: None,
            memory_bytes: Some(1 << 30),
        },
        _ => Resources::default(),
    };
    let input = UnitInput {
        fleet,
        resources,
        desired: DesiredState::Launched,
    };
    (UnitName::parse(&name).unwrap(), input)
}

/// The model: the machines and what is placed on each.
struct Model {
    strategy: Strategy,
    machines: BTreeMap<MachineId, Machine>,
    units: BTreeMap<UnitName, UnitInput>,
    placed: BTreeMap<UnitName, MachineId>,
}

impl Model {
    fn on(&self, m: &MachineId) -> impl Iterator<Item = &UnitName> {
        self.placed
            .iter()
            .filter(move |(_, at)| *at == m)
            .map(|(u, _)| u)
    }

    fn used(&self, m: &MachineId) -> (u64, u64) {
        self.on(m).fold((0, 0), |(c, mem), u| {
            let r = self.units[u].resources;
            (
                c + r.cpu_millis.unwrap_or(0),
                mem + r.memory_bytes.unwrap_or(0),
            )
        })
    }

    fn eligible(&self, name: &UnitName, input: &UnitInput, m: &Machine) -> bool {
        if !input.fleet.metadata_matches(&m.metadata) {
            return false;
        }
        let conflict = self.on(&m.id).any(|o| {
            fleet::units_conflict(
                name.as_str(),
                &input.fleet,
                o.as_str(),
                &self.units[o].fleet,
            )
        });
        let (cpu, mem) = self.used(&m.id);
        let fits = |want: Option<u64>, used: u64, cap: u64| want.is_none_or(|w| used + w <= cap);
        !conflict
            && fits(input.resources.cpu_millis, cpu, m.capacity.cpu_millis)
            && fits(input.resources.memory_bytes, mem, m.capacity.memory_bytes)
    }

    /// The machine the rules name for a unit, or none.
    fn best(&self, name: &UnitName, input: &UnitInput) -> Option<MachineId> {
        let total_cpu: u64 = self.machines.values().map(|m| m.capacity.cpu_millis).sum();
        let total_mem: u64 = self
            .machines
            .values()
            .map(|m| m.capacity.memory_bytes)
            .sum();
        let r = input.resources;
        // Dominant resource: true for CPU.
        let dominant = match (r.cpu_millis, r.memory_bytes) {
            (None, None) => None,
            (Some(_), None) => Some(true),
            (None, Some(_)) => Some(false),
            (Some(c), Some(m)) => {
                Some(u128::from(c) * u128::from(total_mem) >= u128::from(m) * u128::from(total_cpu))
            }
        };
        self.machines
            .values()
            .filter(|m| self.eligible(name, input, m))
            .min_by_key(|m| {
                let (cpu, mem) = self.used(&m.id);
                let free_cpu = m.capacity.cpu_millis - cpu;
                let free_mem = m.capacity.memory_bytes - mem;
                let load = self.on(&m.id).count() as u64;
                let key = match (self.strategy, dominant) {
                    (Strategy::Spread, _) | (Strategy::BinPack, None) => (load, 0),
                    (Strategy::BinPack, Some(true)) => (free_cpu, free_mem),
                    (Strategy::BinPack, Some(false)) => (free_mem, free_cpu),
                };
                (key, m.id.clone())
            })
            .map(|m| m.id.clone())
    }

    /// Applies a plan's decisions to the model, without checking them.
    fn apply(&mut self, decisions: &[Decision]) {
        for d in decisions {
            match d {
                Decision::Assign { unit, machine } => {
                    self.placed.insert(unit.clone(), machine.clone());
                }
                Decision::Unassign { unit, machine, .. } => {
                    assert_eq!(self.placed.remove(unit).as_ref(), Some(machine));
                }
                Decision::Unschedulable { .. } => {}
            }
        }
    }

    /// Checks a plan's decisions against the model, unit by unit in the
    /// order the plan took them, and applies them. The order of a plan's
    /// decisions is that in which it took the units when it took each
    /// once (it takes units blocked for room again when a unit it moved
    /// made room, but their decisions keep their first place).
    fn follow(&mut self, decisions: &[Decision]) {
        for d in decisions {
            match d {
                Decision::Assign { unit, machine } => {
                    let input = &self.units[unit];
                    let best = self.best(unit, input);
                    assert_eq!(best.as_ref(), Some(machine), "{unit} placed elsewhere");
                    self.placed.insert(unit.clone(), machine.clone());
                }
                Decision::Unassign { unit, machine, .. } => {
                    assert_eq!(self.placed.remove(unit).as_ref(), Some(machine));
                }
                Decision::Unschedulable { unit, reason } => {
                    let input = &self.units[unit];
                    assert_eq!(self.best(unit, input), None, "{unit} left out: {reason}");
                }
            }
        }
    }
}

fn run(strategy: Strategy) {
    let mut view = PlacementView::new(strategy);
    let mut model = Model {
        strategy,
        machines: BTreeMap::new(),
        units: BTreeMap::new(),
        placed: BTreeMap::new(),
    };
    let put_machine = |view: &mut PlacementView, model: &mut Model, m: Machine| {
        model.machines.insert(m.id.clone(), m.clone());
        view.put_machine(m);
    };
    for i in 0..30 {
        put_machine(&mut view, &mut model, machine(i, 0));
    }
    let groups = 30;
    let mut next = 0;
    for round in 0..4 {
        // One at a time: each unit is put and planned on its own.
        for g in 0..groups {
            let (name, input) = unit(g, next);
            model.units.insert(name.clone(), input.clone());
            view.put_unit(name, input);
            let decisions = view.plan();
            model.follow(&decisions);
        }
        next += 1;
        // In bulk: a plan takes the units by name; the model follows the
        // decisions in the order they come, which is that one.
        for g in 0..groups {
            for _ in 0..4 {
                let (name, input) = unit(g, next);
                next += 1;
                model.units.insert(name.clone(), input.clone());
                view.put_unit(name, input);
            }
        }
        let decisions = view.plan();
        let assigned: Vec<&UnitName> = decisions
            .iter()
            .filter(|d| !matches!(d, Decision::Unassign { .. }))
            .map(Decision::unit)
            .collect();
        let in_order = assigned.windows(2).all(|w| w[0] < w[1]);
        assert!(in_order, "a bulk plan took units out of name order");
        model.follow(&decisions);
        view.check_consistency().unwrap();

        // The cluster changes: a machine leaves (its units land where the
        // rules say), one joins, and two change their metadata (their
        // units stay while they still match).
        let gone = MachineId::parse(&format!("{:032x}", round * 7 + 1)).unwrap();
        model.machines.remove(&gone);
        view.remove_machine(&gone);
        put_machine(&mut view, &mut model, machine(100 + round, 0));
        for i in [round * 7 + 2, round * 7 + 3] {
            put_machine(&mut view, &mut model, machine(i, round + 1));
        }
        // Units that must move are unassigned and placed again, and units
        // blocked for room may take the room they leave: in more than one
        // pass, which the model does not follow. The result must still
        // keep every rule (`check_consistency` checks it).
        let decisions = view.plan();
        model.apply(&decisions);
        for m in model.placed.values() {
            assert!(model.machines.contains_key(m));
        }
        view.check_consistency().unwrap();
        for unit in model.units.keys() {
            assert_eq!(view.placement(unit), model.placed.get(unit), "{unit}");
        }
    }
    assert!(model.placed.len() > 500, "too few placements to say much");
}

#[test]
fn spread_takes_the_least_loaded_eligible_machine() {
    run(Strategy::Spread);
}

#[test]
fn binpack_takes_the_fullest_machine_that_fits() {
    run(Strategy::BinPack);
}
