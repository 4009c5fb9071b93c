#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test
//! Placement at scale: how many placements a second the view makes.
//! Ignored by default; run in release:
//!
//! ```text
//! PLACEMENT_UNITS=1000000 cargo test --release -p flotilla-scheduler \
//!     --test placement_scale -- --ignored --nocapture
//! ```
//!
//! The cluster: 10,000 machines in 5 regions and 100 racks; units of which
//! most are plain, some need a region, some are instances of a template
//! that spreads them with `Conflicts`, and some follow another unit.

use std::collections::BTreeMap;
use std::time::Instant;

use flotilla_proto::fleet::FleetOptions;
use flotilla_proto::resources::Resources;
use flotilla_proto::{Capacity, DesiredState, Machine, MachineId, UnitName};
use flotilla_scheduler::placement::{Decision, PlacementView, Strategy, UnitInput};

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
            fleet.conflicts.push(format!("web{}@*.service", i % 1000));
            format!("web{}@{i}.service", i % 1000)
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

fn scale(strategy: Strategy) {
    let machines: usize =
        std::env::var("PLACEMENT_MACHINES").map_or(10_000, |s| s.parse().unwrap());
    let units: usize = std::env::var("PLACEMENT_UNITS").map_or(200_000, |s| s.parse().unwrap());
    let mut view = PlacementView::new(strategy);

    let start = Instant::now();
    for i in 0..machines {
        view.put_machine(machine(i));
    }
    let inputs: Vec<(UnitName, UnitInput)> = (0..units).map(unit).collect();
    for (name, input) in &inputs {
        view.put_unit(name.clone(), input.clone());
    }
    let loaded = start.elapsed();

    let start = Instant::now();
    let mut assigned = 0;
    let mut unschedulable = Vec::new();
    while view.has_pending_work() {
        for d in view.plan_batch(50_000) {
            match d {
                Decision::Assign { .. } => assigned += 1,
                Decision::Unschedulable { unit, reason } => {
                    unschedulable.push(format!("{unit}: {reason}"));
                }
                Decision::Unassign { .. } => {}
            }
        }
    }
    let planned = start.elapsed();
    let rate = assigned as f64 / planned.as_secs_f64();
    eprintln!(
        "{strategy}: {machines} machines, {units} units: loaded in {loaded:?}, \
         {assigned} placed in {planned:?} ({rate:.0} placements/s)"
    );
    for line in unschedulable.iter().take(5) {
        eprintln!("unschedulable {line}");
    }
    eprintln!("{} unschedulable", unschedulable.len());

    // A machine dies: its units move, and nothing else is looked at.
    let start = Instant::now();
    let gone = MachineId::parse(&format!("{:032x}", 7)).unwrap();
    let moved = view.units_on(&gone).len();
    view.remove_machine(&gone);
    let decisions = view.plan();
    eprintln!(
        "a machine with {moved} units died: {} decisions in {:?}",
        decisions.len(),
        start.elapsed()
    );

    // A unit is added: one decision.
    let start = Instant::now();
    let (name, input) = unit(units + 3);
    view.put_unit(name, input);
    let decisions = view.plan();
    eprintln!(
        "one unit added: {} decision in {:?}",
        decisions.len(),
        start.elapsed()
    );
}

#[test]
#[ignore = "a measurement; run in release with --ignored --nocapture"]
fn spread_at_scale() {
    scale(Strategy::Spread);
}

#[test]
#[ignore = "a measurement; run in release with --ignored --nocapture"]
fn binpack_at_scale() {
    scale(Strategy::BinPack);
}
