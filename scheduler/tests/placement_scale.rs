#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test
//! Placement of a whole cluster at once, in batches, as a leader starting
//! up does: every unit is decided exactly once, the result is consistent,
//! and afterwards a dead machine moves only what it held, and a new unit
//! costs one decision. Nothing here is timed: how fast this goes is
//! measured by the benchmarks (`scripts/bench B1`, docs/benchmarks.md).
//!
//! The cluster: machines in 5 regions and 100 racks; units of which most
//! are plain, some need a region, some are instances of a template that
//! spreads them with `Conflicts`, and some follow another unit.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_proto::fleet::FleetOptions;
use flotilla_proto::resources::Resources;
use flotilla_proto::{Capacity, DesiredState, Machine, MachineId, UnitName};
use flotilla_scheduler::placement::{Decision, PlacementView, Strategy, UnitInput};

const MACHINES: usize = 200;
const UNITS: usize = 10_000;
/// Units planned per batch: several batches, as the reconcile loop does.
const BATCH: usize = 1_000;

fn machine(i: usize) -> Machine {
    let mut metadata = BTreeMap::new();
    metadata.insert("region".to_owned(), format!("r{}", i % 5));
    metadata.insert("rack".to_owned(), format!("k{}", i % 100));
    Machine {
        id: MachineId::parse(&format!("{i:032x}")).unwrap(),
        hostname: format!("m{i}"),
        addresses: Vec::new(),
        metadata,
        capacity: Capacity {
            cpu_millis: 64_000,
            memory_bytes: 256 << 30,
        },
        agent_version: "test".to_owned(),
    }
}

fn unit(i: usize) -> (UnitName, UnitInput) {
    let mut fleet = FleetOptions::default();
    let name = match i % 20 {
        // Instances of a template spread over machines.
        0 => {
            fleet.conflicts.push(format!("web{}@*.service", i % 100));
            format!("web{}@{i}.service", i % 100)
        }
        // Followers of the unit before them.
        1 => {
            fleet.machine_of.push(
                UnitName::parse(&format!("u{}.service", i.checked_sub(2).unwrap_or(i + 2)))
                    .unwrap(),
            );
            format!("u{i}.service")
        }
        // A region.
        2..=5 => {
            fleet
                .machine_metadata
                .insert("region".to_owned(), vec![format!("r{}", i % 5)]);
            format!("u{i}.service")
        }
        _ => format!("u{i}.service"),
    };
    let input = UnitInput {
        fleet,
        resources: Resources {
            cpu_millis: Some(10),
            memory_bytes: Some(64 << 20),
        },
        desired: DesiredState::Launched,
    };
    (UnitName::parse(&name).unwrap(), input)
}

fn whole_cluster(strategy: Strategy) {
    let mut view = PlacementView::new(strategy);
    for i in 0..MACHINES {
        view.put_machine(machine(i));
    }
    let inputs: Vec<(UnitName, UnitInput)> = (0..UNITS).map(unit).collect();
    for (name, input) in &inputs {
        view.put_unit(name.clone(), input.clone());
    }

    // Batches until nothing is left: each unit decided exactly once.
    let mut decided: BTreeMap<UnitName, Decision> = BTreeMap::new();
    let mut batches = 0;
    while view.has_pending_work() {
        batches += 1;
        assert!(batches <= UNITS / BATCH + 10, "planning does not finish");
        for d in view.plan_batch(BATCH) {
            assert!(
                !matches!(d, Decision::Unassign { .. }),
                "nothing was placed to unassign: {d:?}"
            );
            let unit = d.unit().clone();
            assert!(decided.insert(unit, d).is_none(), "decided twice");
        }
    }
    assert!(batches > 1, "the cluster was planned in one batch");
    assert_eq!(decided.len(), UNITS);
    // Every unit fits this cluster, but a follower may not fit beside its
    // leader (bin-packing fills the leader's machine first).
    let follows: BTreeSet<&UnitName> = inputs
        .iter()
        .filter(|(_, input)| !input.fleet.machine_of.is_empty())
        .map(|(name, _)| name)
        .collect();
    for d in decided.values() {
        if let Decision::Unschedulable { unit, reason } = d {
            assert!(follows.contains(unit), "{unit} found no machine: {reason}");
        }
    }
    view.check_consistency().unwrap();
    assert!(view.plan().is_empty(), "a second plan decided something");

    // A machine dies: its units move, and only they (and units that must
    // run beside one of them) do.
    let gone = MachineId::parse(&format!("{:032x}", 7)).unwrap();
    let held: BTreeSet<UnitName> = view.units_on(&gone).into_iter().cloned().collect();
    assert!(!held.is_empty());
    let followers: BTreeSet<UnitName> = inputs
        .iter()
        .filter(|(_, input)| input.fleet.machine_of.iter().any(|l| held.contains(l)))
        .map(|(name, _)| name.clone())
        .collect();
    view.remove_machine(&gone);
    let decisions = view.plan();
    let mut moved = BTreeSet::new();
    for d in &decisions {
        match d {
            Decision::Assign { unit, machine } => {
                assert_ne!(machine, &gone);
                moved.insert(unit.clone());
            }
            Decision::Unassign { unit, .. } => {
                assert!(
                    held.contains(unit) || followers.contains(unit),
                    "{unit} moved for nothing"
                );
            }
            Decision::Unschedulable { unit, reason } => {
                assert!(follows.contains(unit), "{unit} found no machine: {reason}");
            }
        }
    }
    for unit in held.iter().filter(|u| !follows.contains(u)) {
        assert!(moved.contains(unit), "{unit} was not placed again");
    }
    assert!(
        moved
            .iter()
            .all(|u| held.contains(u) || followers.contains(u))
    );
    view.check_consistency().unwrap();

    // A unit is added: one decision.
    let (name, input) = unit(UNITS + 3);
    view.put_unit(name, input);
    assert_eq!(view.plan().len(), 1);
}

#[test]
fn spread_places_a_whole_cluster_in_batches() {
    whole_cluster(Strategy::Spread);
}

#[test]
fn binpack_places_a_whole_cluster_in_batches() {
    whole_cluster(Strategy::BinPack);
}
