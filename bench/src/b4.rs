//! B4: machine loss. The real leader (election and reconcile loop, in
//! process) runs on a store holding `machines` machines, each on its own
//! lease kept alive by this process, and `machines x 1,000` plain units,
//! which `spread` places 1,000 to a machine. Then one machine's lease is no
//! longer kept alive (its agent died): the store ends the lease and deletes
//! the machine's key. The figure is the time from that delete (as a
//! follower of the store sees it) until every one of its units (1,000) has
//! been assigned to another machine, committed. Then the next machine dies
//! (holding a few more by then), `deaths` times: median and worst. Every unit has a state
//! report (`state/<unit>/<machine>`), as running agents write them (the
//! leader deletes the dead machine's reports); a second run without them
//! shows what that costs.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flotilla_proto::{Health, MachineId, UnitName, UnitState};
use flotilla_scheduler::keys::{Key, Keys};
use flotilla_scheduler::placement::Strategy;
use flotilla_scheduler::records;
use flotilla_store::{LeaseId, Store, TxnOp, WatchEvent};

use crate::report::{Row, time_ratio};
use crate::stats::{Samples, count, dur};
use crate::stores::{
    Backend, Leader, OpenStore, encoded, follow_decisions, machine_ops, revision, unit_ops,
    units_on, write_all,
};
use crate::workload::{machine, machine_id, plain_record};

pub struct Case {
    pub label: String,
    pub backend: Backend,
    pub machines: usize,
    pub per_machine: usize,
    /// Write a state report per unit, as running agents do.
    pub states: bool,
    /// Machines that die, one after the other (each a measurement).
    pub deaths: usize,
}

/// The lease TTL asked for each machine: `flotilla server`'s default
/// `--machine-ttl`, so that the keepalives load the store as much as a
/// cluster of agents with default settings does.
const MACHINE_TTL: Duration = Duration::from_secs(10);

pub async fn run(case: &Case) -> anyhow::Result<Row> {
    let units = case.machines * case.per_machine;
    println!(
        "B4 {}: {} machines, {} units{}, {} machines die one after the other",
        case.label,
        case.machines,
        units,
        if case.states {
            ", a state report each"
        } else {
            ""
        },
        case.deaths
    );
    let open = OpenStore::open(&case.backend, "b4").await?;
    let stop_keepalive = Arc::new(AtomicBool::new(false));
    let result = measure(&open, case, stop_keepalive.clone()).await;
    stop_keepalive.store(true, Ordering::Relaxed);
    open.close().await;
    let deaths = result?;
    let mut replaced = Samples::default();
    let mut moved = Vec::new();
    let mut ttl = Duration::ZERO;
    for d in &deaths {
        replaced.push(d.replaced);
        moved.push(count(d.moved as f64));
        ttl = d.ttl;
    }
    let (median, worst) = (replaced.percentile(50.0), replaced.max());
    Ok(Row {
        id: "B4",
        case: format!(
            "{}, {} machines, {} units{}, {} machine deaths",
            case.label,
            count(case.machines as f64),
            count(units as f64),
            if case.states {
                " with a state report each"
            } else {
                ", no state reports"
            },
            deaths.len()
        ),
        figure: format!(
            "all units of the dead machine ({}) re-placed and committed, after its lease expired (its key's delete): median {}, worst {} ({}); lease TTL {}",
            moved.join(", "),
            dur(median),
            dur(worst),
            deaths
                .iter()
                .map(|d| format!("first unit +{}, last +{}", dur(d.first), dur(d.replaced)))
                .collect::<Vec<_>>()
                .join("; "),
            dur(ttl)
        ),
        anchor: "fleet agent TTL 30 s; Nomad >= 20 s to mark a node down".to_owned(),
        goal: "< 1 s after the lease expires".to_owned(),
        ratio: time_ratio(worst.as_secs_f64(), 30.0, "fleet's TTL alone", 1.0),
    })
}

/// One machine's death.
struct Death {
    ttl: Duration,
    moved: usize,
    /// From the delete to the first unit re-assigned.
    first: Duration,
    /// From the delete to the last unit re-assigned.
    replaced: Duration,
}

async fn measure(
    open: &OpenStore,
    case: &Case,
    stop_all: Arc<AtomicBool>,
) -> anyhow::Result<Vec<Death>> {
    let store = open.store.clone();
    let keys = Keys::default();
    let units = case.machines * case.per_machine;

    let names: Vec<UnitName> = (0..units)
        .map(|i| UnitName::parse(&format!("p{i:07}.service")))
        .collect::<Result<_, _>>()?;
    // Every plain unit has the same file; the hash does not depend on the
    // name.
    let value = encoded(&plain_record(&names[0])?);
    write_all(
        &store,
        unit_ops(&keys, names.iter().map(|n| (n.clone(), Arc::clone(&value)))),
        8,
    )
    .await?;
    let mut leases = Vec::with_capacity(case.machines);
    let mut ttl = MACHINE_TTL;
    for _ in 0..case.machines {
        let grant = store.grant(MACHINE_TTL).await?;
        ttl = grant.ttl;
        leases.push(grant.id);
    }
    let alive: Arc<Vec<AtomicBool>> =
        Arc::new((0..case.machines).map(|_| AtomicBool::new(true)).collect());
    let keepalive = tokio::spawn(keep_alive(
        store.clone(),
        leases.clone(),
        alive.clone(),
        stop_all.clone(),
        ttl / 3,
    ));
    write_all(
        &store,
        machine_ops(&keys, (0..case.machines).map(|i| (machine(i), leases[i]))),
        8,
    )
    .await?;

    let from = revision(&*store).await? + 1;
    let follower = tokio::spawn(follow_decisions(
        store.clone(),
        from,
        units,
        Duration::from_secs(1800),
    ));
    let leader = Leader::start(store.clone(), Strategy::Spread).await?;
    let result = async {
        let progress = follower.await??;
        if progress.all_decided.is_none() || progress.placed != units {
            bail!(
                "the cluster was not placed: {} placed, {} unschedulable of {units}",
                progress.placed,
                progress.unschedulable
            );
        }
        if case.states {
            // Every unit's state, as its agent would report it: a machine
            // that leaves has its reports deleted by the leader.
            let mut states = Vec::with_capacity(progress.placement.len());
            for (unit, machine) in &progress.placement {
                let state = UnitState {
                    unit: UnitName::parse(unit)?,
                    machine: MachineId::parse(machine)?,
                    load_state: "loaded".to_owned(),
                    active_state: "active".to_owned(),
                    sub_state: "running".to_owned(),
                    hash: None,
                    started_hash: None,
                    main_pid: Some(4242),
                    n_restarts: 0,
                    container_id: None,
                    health: Health::None,
                    since_ms: 1_700_000_000_000,
                    last_error: None,
                };
                states.push(TxnOp::put(
                    keys.state(&state.unit, &state.machine),
                    records::encode(&state),
                ));
            }
            write_all(&store, states, 8).await?;
        }
        let mut deaths = Vec::new();
        for victim in 0..case.deaths.min(case.machines.saturating_sub(1)) {
            let death = kill(&*store, &keys, victim, &alive, ttl).await?;
            println!(
                "  machine {victim}: delete seen; first of its {} units re-assigned +{}, last +{}",
                death.moved,
                dur(death.first),
                dur(death.replaced)
            );
            deaths.push(death);
        }
        Ok(deaths)
    }
    .await;
    stop_all.store(true, Ordering::Relaxed);
    let _ = keepalive.await;
    if let Some(e) = leader.stop().await
        && result.is_ok()
    {
        bail!("the reconcile loop stopped on its own: {e}");
    }
    result
}

/// Stops keeping machine `victim` alive and follows the store until every
/// unit it held is assigned elsewhere.
async fn kill(
    store: &dyn Store,
    keys: &Keys,
    victim: usize,
    alive: &[AtomicBool],
    ttl: Duration,
) -> anyhow::Result<Death> {
    let victim_id = machine_id(victim);
    let held = units_on(store, &victim_id).await?;
    if held.is_empty() {
        bail!("machine {victim} holds no unit");
    }
    // Follow from now; then the victim stops being kept alive. Like the
    // leader's, this watch asks for no previous values, which etcd would
    // look up one event at a time.
    let from = revision(store).await? + 1;
    let mut w = store.watch_changes(keys.root(), from).await?;
    let victim_key = keys.machine(&victim_id);
    alive[victim].store(false, Ordering::Relaxed);
    let mut deleted_at: Option<Instant> = None;
    let mut first_moved: Option<Instant> = None;
    let mut waiting: HashSet<String> = held.clone();
    let deadline = tokio::time::Instant::now() + ttl * 3 + Duration::from_secs(120);
    while !waiting.is_empty() {
        let events = tokio::time::timeout_at(deadline, w.next())
            .await
            .context("the units of the dead machine were not all re-placed in time")??;
        let now = Instant::now();
        for e in &events {
            match e {
                WatchEvent::Delete { key, .. } if *key == victim_key => {
                    deleted_at.get_or_insert(now);
                }
                WatchEvent::Put { kv, .. } => {
                    if let Some(Key::Assignment(m, u)) = keys.parse(&kv.key)
                        && m != victim_id
                        && waiting.remove(u.as_str())
                    {
                        first_moved.get_or_insert(now);
                    }
                }
                WatchEvent::Delete { .. } => {}
            }
        }
    }
    let done = Instant::now();
    let deleted = deleted_at.context("the machine's key was never deleted")?;
    Ok(Death {
        ttl,
        moved: held.len(),
        first: first_moved.map_or(Duration::ZERO, |f| f.saturating_duration_since(deleted)),
        replaced: done.saturating_duration_since(deleted),
    })
}

/// Keeps every live machine's lease alive at a third of the TTL, until
/// `stop`. The keepalives of a round go out together: one after the other,
/// a hundred of them (a stream each on etcd) can take longer than the TTL
/// on a busy machine.
async fn keep_alive(
    store: Arc<dyn Store>,
    leases: Vec<LeaseId>,
    alive: Arc<Vec<AtomicBool>>,
    stop: Arc<AtomicBool>,
    period: Duration,
) {
    // Bounded: a benchmark run never lasts a day.
    for _ in 0..(86_400_000 / period.as_millis().max(1)) {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let mut round = tokio::task::JoinSet::new();
        for (i, lease) in leases.iter().enumerate() {
            if !alive[i].load(Ordering::Relaxed) {
                continue;
            }
            let store = store.clone();
            let lease = *lease;
            round.spawn(async move {
                if let Err(e) = store.keepalive(lease).await {
                    eprintln!("keepalive of machine {i} failed: {e}");
                }
            });
        }
        tokio::time::sleep(period).await;
        round.abort_all();
    }
}
