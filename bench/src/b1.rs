//! B1: placement decisions in memory, with the leader's placement view
//! (`flotilla_scheduler::placement::PlacementView`), no store.
//!
//! For each machine count and strategy, two runs over the same units:
//!
//! - **bulk**: every unit is put in the view, then planned in batches of
//!   the reconcile loop's size (`ReconcilerConfig::default().plan_batch`),
//!   as a leader does when it starts with a million units. The figure is
//!   placements per second of planning (loading the view is timed apart).
//! - **online**: units arrive one at a time, and each is put and planned
//!   on its own (`put_unit` + `plan`), as they are when users submit them.
//!   Each decision is timed: p50, p99 and the worst.

use std::time::{Duration, Instant};

use flotilla_scheduler::placement::{Decision, PlacementView, Strategy};
use flotilla_scheduler::reconciler::ReconcilerConfig;

use crate::report::{Row, rate_ratio};
use crate::stats::{Samples, count, dur};
use crate::workload::{Group, groups, machine, machine_id};

pub struct Config {
    pub machines: Vec<usize>,
    pub groups: usize,
    pub per_group: usize,
}

const ANCHOR: f64 = 3_750.0;
const ANCHOR_TEXT: &str = "Nomad C1M 3,750 placements/s (5,000 hosts, 5 servers); kube-scheduler ~1,000 pods/s (500 nodes)";
const GOAL: f64 = 100_000.0;

#[derive(Default)]
struct Tally {
    assigned: usize,
    unschedulable: usize,
    unassigned: usize,
}

impl Tally {
    fn add(&mut self, decisions: &[Decision]) {
        for d in decisions {
            match d {
                Decision::Assign { .. } => self.assigned += 1,
                Decision::Unschedulable { .. } => self.unschedulable += 1,
                Decision::Unassign { .. } => self.unassigned += 1,
            }
        }
    }
}

pub fn run(config: &Config) -> anyhow::Result<Vec<Row>> {
    let groups = groups(config.groups)?;
    let units = config.groups * config.per_group;
    let mut rows = Vec::new();
    for strategy in [Strategy::Spread, Strategy::BinPack] {
        for &machines in &config.machines {
            rows.push(bulk(strategy, machines, &groups, config.per_group));
            rows.push(online(strategy, machines, &groups, config.per_group));
        }
    }
    println!(
        "  (B1 sizes: {} units in {} groups)",
        count(units as f64),
        config.groups
    );
    Ok(rows)
}

fn view_with_machines(strategy: Strategy, machines: usize) -> PlacementView {
    let mut view = PlacementView::new(strategy);
    for i in 0..machines {
        view.put_machine(machine(i));
    }
    view
}

fn bulk(strategy: Strategy, machines: usize, groups: &[Group], per_group: usize) -> Row {
    let units = groups.len() * per_group;
    println!("B1 bulk: {strategy}, {machines} machines, {units} units");
    let batch = ReconcilerConfig::default().plan_batch;
    let load_start = Instant::now();
    let mut view = view_with_machines(strategy, machines);
    for g in groups {
        for i in 0..per_group {
            view.put_unit(g.name(i), g.input.clone());
        }
    }
    let loaded = load_start.elapsed();

    let mut tally = Tally::default();
    let mut batches = 0usize;
    let mut slowest_batch = Duration::ZERO;
    let max_batches = units / batch.max(1) + 1_000;
    let start = Instant::now();
    while view.has_pending_work() && batches < max_batches {
        let t = Instant::now();
        let decisions = view.plan_batch(batch);
        slowest_batch = slowest_batch.max(t.elapsed());
        batches += 1;
        tally.add(&decisions);
        if decisions.is_empty() {
            break;
        }
    }
    let planned = start.elapsed();
    let rate = tally.assigned as f64 / planned.as_secs_f64();
    println!(
        "  view loaded in {} ({} machines, {} units); planned in {} in {batches} batches of {batch} (slowest {})",
        dur(loaded),
        machines,
        units,
        dur(planned),
        dur(slowest_batch)
    );

    // Then a machine dies: what it costs to move its units (informational).
    let gone = machine_id(7);
    let moved = view.units_on(&gone).len();
    let t = Instant::now();
    view.remove_machine(&gone);
    let decisions = view.plan();
    let replanned = t.elapsed();
    println!(
        "  afterwards a machine with {moved} units died: {} decisions in {}",
        decisions.len(),
        dur(replanned)
    );
    drop(view);

    Row {
        id: "B1",
        case: format!(
            "bulk, {strategy}, {} machines, {} units",
            count(machines as f64),
            count(units as f64)
        ),
        figure: format!(
            "{} placements/s ({} placed, {} unschedulable, planned in {}; view loaded in {}; mean {} per decision)",
            count(rate),
            count(tally.assigned as f64),
            count(tally.unschedulable as f64),
            dur(planned),
            dur(loaded),
            dur(planned / (tally.assigned + tally.unschedulable).max(1) as u32)
        ),
        anchor: ANCHOR_TEXT.to_owned(),
        goal: ">= 100,000 placements/s on 2 cores".to_owned(),
        ratio: rate_ratio(rate, ANCHOR, "Nomad C1M", GOAL),
    }
}

fn online(strategy: Strategy, machines: usize, groups: &[Group], per_group: usize) -> Row {
    let units = groups.len() * per_group;
    println!("B1 online: {strategy}, {machines} machines, {units} units, one at a time");
    let mut view = view_with_machines(strategy, machines);
    let mut samples = Samples::with_capacity(units);
    let mut tally = Tally::default();
    for g in groups {
        for i in 0..per_group {
            let name = g.name(i);
            let input = g.input.clone();
            let t = Instant::now();
            view.put_unit(name, input);
            let decisions = view.plan();
            samples.push(t.elapsed());
            tally.add(&decisions);
        }
    }
    let busy = samples.sum();
    let rate = tally.assigned as f64 / busy.as_secs_f64();
    let (p50, p99, max) = (
        samples.percentile(50.0),
        samples.percentile(99.0),
        samples.max(),
    );
    println!(
        "  {} placed, {} unschedulable; per decision p50 {} p99 {} max {}",
        tally.assigned,
        tally.unschedulable,
        dur(p50),
        dur(p99),
        dur(max)
    );
    Row {
        id: "B1",
        case: format!(
            "online (put + plan per unit), {strategy}, {} machines, {} units",
            count(machines as f64),
            count(units as f64)
        ),
        figure: format!(
            "{} placements/s; per decision p50 {}, p99 {}, max {} ({} placed, {} unschedulable)",
            count(rate),
            dur(p50),
            dur(p99),
            dur(max),
            count(tally.assigned as f64),
            count(tally.unschedulable as f64)
        ),
        anchor: ANCHOR_TEXT.to_owned(),
        goal: ">= 100,000 placements/s on 2 cores, p99 reported".to_owned(),
        ratio: rate_ratio(rate, ANCHOR, "Nomad C1M", GOAL),
    }
}
