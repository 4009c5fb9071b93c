//! B2: placements committed to the store by the real leader: the election
//! (`leader::campaign`) and the reconcile loop (`reconciler::run`), in this
//! process, on each store.
//!
//! The units (B1's groups) and the machines are written first, straight
//! into the store; then the leader starts, loads the view, plans in batches
//! and commits each batch in fenced transactions of up to 128 operations
//! (an assignment and a `sched/` record per unit). A follower of the store
//! (a watch from before the leader started) notes when the first
//! assignment was committed and when the last unit's decision was: the
//! figure is placements per second between the two.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_scheduler::keys::Keys;
use flotilla_scheduler::placement::Strategy;

use crate::report::{Row, rate_ratio};
use crate::stats::{bytes, count, dur};
use crate::stores::{
    Backend, Leader, OpenStore, encoded, follow_decisions, machine_ops, revision, unit_ops,
    write_all,
};
use crate::workload::{groups, machine};

pub struct Case {
    pub label: String,
    pub backend: Backend,
    pub embedded: bool,
    pub machines: usize,
    pub groups: usize,
    pub per_group: usize,
}

const ANCHOR: f64 = 3_750.0;
const ANCHOR_TEXT: &str =
    "Nomad C1M 3,750/s; C2M 1,500/s; etcd docs: 583 writes/s for one client unbatched";

pub async fn run(case: &Case) -> anyhow::Result<Row> {
    let units = case.groups * case.per_group;
    println!(
        "B2 {}: {} machines, {} units",
        case.label, case.machines, units
    );
    let open = OpenStore::open(&case.backend, "b2").await?;
    let result = measure(&open, case).await;
    let disk = open.data_bytes();
    open.close().await;
    let (placed, unsched, first_to_last, leader_to_first, written, write_time) = result?;
    let rate = placed as f64 / first_to_last.as_secs_f64();
    let (goal, goal_text) = match (&case.backend, case.embedded) {
        (Backend::Raft(_), _) => (15_000.0, "15,000 through raft, 3 servers"),
        (_, true) => (20_000.0, "20,000 embedded"),
        _ => (5_000.0, "5,000 on one local etcd"),
    };
    println!(
        "  {} placed, {} unschedulable; first assignment {} after the leader started; last decision {} after the first; store data {}",
        placed,
        unsched,
        dur(leader_to_first),
        dur(first_to_last),
        bytes(disk as f64)
    );
    Ok(Row {
        id: "B2",
        case: format!(
            "{}, {} machines, {} units",
            case.label,
            count(case.machines as f64),
            count(units as f64)
        ),
        figure: format!(
            "{} placements/s committed ({} placed, {} unschedulable, first to last commit {}; leader start to first commit {}; {} keys written beforehand at {}/s)",
            count(rate),
            count(placed as f64),
            count(unsched as f64),
            dur(first_to_last),
            dur(leader_to_first),
            count(written as f64),
            count(written as f64 / write_time.as_secs_f64())
        ),
        anchor: ANCHOR_TEXT.to_owned(),
        goal: format!(">= {goal_text}/s"),
        ratio: rate_ratio(rate, ANCHOR, "Nomad C1M", goal),
    })
}

type Measured = (usize, usize, Duration, Duration, usize, Duration);

async fn measure(open: &OpenStore, case: &Case) -> anyhow::Result<Measured> {
    let store = open.store.clone();
    let keys = Keys::default();
    let groups = groups(case.groups)?;
    let units = case.groups * case.per_group;

    let t = Instant::now();
    let values: Vec<_> = groups.iter().map(|g| encoded(&g.record)).collect();
    let named = groups
        .iter()
        .zip(&values)
        .flat_map(|(g, v)| (0..case.per_group).map(move |i| (g.name(i), Arc::clone(v))));
    let mut written = write_all(&store, unit_ops(&keys, named), 8).await?;
    let lease = store.grant(Duration::from_secs(3600)).await?.id;
    written += write_all(
        &store,
        machine_ops(&keys, (0..case.machines).map(|i| (machine(i), lease))),
        8,
    )
    .await?;
    let write_time = t.elapsed();
    println!(
        "  wrote {written} keys in {} ({}/s)",
        dur(write_time),
        count(written as f64 / write_time.as_secs_f64())
    );

    let from = revision(&*store).await? + 1;
    let follower = tokio::spawn(follow_decisions(
        store.clone(),
        from,
        units,
        Duration::from_secs(1800),
    ));
    let started = Instant::now();
    let leader = Leader::start(store.clone(), Strategy::Spread).await?;
    let progress = follower.await??;
    if let Some(e) = leader.stop().await {
        anyhow::bail!("the reconcile loop stopped on its own: {e}");
    }
    if progress.resyncs > 0 {
        println!(
            "  (the follower fell behind the store's watch window {} times and read again)",
            progress.resyncs
        );
    }
    let (Some(first), Some(last)) = (progress.first_assign, progress.all_decided) else {
        anyhow::bail!(
            "not every unit was decided in time: {} placed, {} unschedulable of {units}",
            progress.placed,
            progress.unschedulable
        );
    };
    Ok((
        progress.placed,
        progress.unschedulable,
        last.duration_since(first),
        first.duration_since(started),
        written,
        write_time,
    ))
}
