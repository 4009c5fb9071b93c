//! B3: leader failover. Three `flotilla server` processes share one local
//! etcd that holds `units` placed units on `machines` machines (written
//! straight into etcd, the machines on a lease this process keeps alive;
//! the first leader places them). Then the leader is killed with SIGKILL,
//! and right after the kill a new unit is submitted through a surviving
//! server. The figure is the time from the kill until etcd holds the new
//! unit's assignment, written by the new leader; a watch of etcd from
//! before the kill also notes when the old leader's key went (its lease
//! ran out) and when the new leader's was created. With three servers this
//! is done twice (3 -> 2 -> 1 servers). The servers share the first
//! one's cluster CA (copied into their data directories before they
//! start, as an operator does), and the new units are submitted over
//! HTTPS with the cluster's first admin token.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flotilla_proto::wire::UnitPut;
use flotilla_proto::{DesiredState, UnitName};
use flotilla_scheduler::keys::{Key, Keys};
use flotilla_scheduler::reconciler::ReconcilerConfig;
use flotilla_scheduler::records::{self, LeaderRecord};
use flotilla_store::{EtcdConfig, EtcdStore, Store, WatchEvent};

use crate::access::{Access, share_ca};
use crate::procs::{EtcdProc, ServerProc};
use crate::report::{Row, time_ratio};
use crate::stats::{count, dur};
use crate::stores::{encoded, follow_decisions, machine_ops, revision, unit_ops, write_all};
use crate::workload::{machine, plain_record, plain_text};

/// How long the unit that sorts last may take after the first is placed.
const LAST_UNIT_GRACE: Duration = Duration::from_secs(20);

/// What the watch of etcd saw after the kill.
#[derive(Default)]
struct Seen {
    leader_gone: Option<Instant>,
    new_leader: Option<Instant>,
    first: Option<Instant>,
    last: Option<Instant>,
}

pub struct Config {
    pub flotilla: PathBuf,
    pub work: PathBuf,
    pub units: usize,
    pub machines: usize,
    pub servers: usize,
    pub leader_ttl: &'static str,
}

pub async fn run(config: &Config) -> anyhow::Result<Vec<Row>> {
    println!(
        "B3: {} servers on one etcd, {} units on {} machines, leader TTL {}",
        config.servers, config.units, config.machines, config.leader_ttl
    );
    let etcd = EtcdProc::start(&config.work, "b3")?;
    let store: Arc<dyn Store> = Arc::new(
        EtcdStore::connect(EtcdConfig::new([etcd.endpoint.clone()]))
            .await
            .context("cannot connect to etcd")?,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut servers: Vec<ServerProc> = Vec::new();
    let result = measure(config, &etcd, &store, &stop, &mut servers).await;
    stop.store(true, Ordering::Relaxed);
    drop(servers);
    drop(store);
    drop(etcd);
    for i in 0..config.servers {
        let _ = std::fs::remove_dir_all(config.work.join(format!("b3-server-{i}")));
        let _ = std::fs::remove_file(config.work.join(format!("b3-server-{i}.log")));
    }
    result
}

async fn measure(
    config: &Config,
    etcd: &EtcdProc,
    store: &Arc<dyn Store>,
    stop: &Arc<AtomicBool>,
    servers: &mut Vec<ServerProc>,
) -> anyhow::Result<Vec<Row>> {
    let keys = Keys::default();
    let names: Vec<UnitName> = (0..config.units)
        .map(|i| UnitName::parse(&format!("f{i:07}.service")))
        .collect::<Result<_, _>>()?;
    let value = encoded(&plain_record(&names[0])?);
    let t = Instant::now();
    write_all(
        store,
        unit_ops(&keys, names.iter().map(|n| (n.clone(), Arc::clone(&value)))),
        8,
    )
    .await?;
    let grant = store.grant(Duration::from_secs(30)).await?;
    write_all(
        store,
        machine_ops(&keys, (0..config.machines).map(|i| (machine(i), grant.id))),
        8,
    )
    .await?;
    println!(
        "  wrote {} units into etcd in {}",
        config.units,
        dur(t.elapsed())
    );
    let keepalive = {
        let store = store.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let _ = store.keepalive(grant.id).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };

    let from = revision(&**store).await? + 1;
    let follower = tokio::spawn(follow_decisions(
        store.clone(),
        from,
        config.units,
        Duration::from_secs(1200),
    ));
    // As an operator sets up servers sharing an etcd: the first one makes
    // the cluster CA (and the first admin token), which is copied into the
    // others' data directories before they start.
    let t = Instant::now();
    let mut access = None;
    for i in 0..config.servers {
        let dir = config.work.join(format!("b3-server-{i}"));
        if let Some(first) = servers.first() {
            share_ca(&first.data_dir, &dir)?;
        }
        let args = vec![
            "--etcd".to_owned(),
            etcd.endpoint.clone(),
            "--leader-ttl".to_owned(),
            config.leader_ttl.to_owned(),
            "--machine-ttl".to_owned(),
            "10s".to_owned(),
            "--data-dir".to_owned(),
            dir.display().to_string(),
        ];
        let log = config.work.join(format!("b3-server-{i}.log"));
        let server = ServerProc::start(&config.flotilla, &args, "info", &log, None)?;
        if access.is_none() {
            access = Some(server.access().await?);
        }
        servers.push(server);
    }
    let access = access.context("no server was started")?;
    let progress = follower.await??;
    if progress.all_decided.is_none() || progress.placed != config.units {
        bail!(
            "the first leader did not place every unit: {} placed, {} unschedulable of {}",
            progress.placed,
            progress.unschedulable,
            config.units
        );
    }
    println!(
        "  the first leader placed all {} units {} after the servers started",
        config.units,
        dur(t.elapsed())
    );

    let mut rows = Vec::new();
    let mut outcome = Ok(());
    for round in 0..config.servers.saturating_sub(1) {
        match failover(config, store, &access, servers, round).await {
            Ok(row) => rows.push(row),
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    keepalive.abort();
    let _ = keepalive.await;
    if rows.is_empty() {
        outcome?;
    } else if let Err(e) = outcome {
        println!("  a later round failed: {e:#}");
    }
    Ok(rows)
}

async fn failover(
    config: &Config,
    store: &Arc<dyn Store>,
    access: &Access,
    servers: &mut [ServerProc],
    round: usize,
) -> anyhow::Result<Row> {
    let keys = Keys::default();
    let leader_key = keys.leader();
    let got = store.get(&leader_key).await?;
    let kv = got.kv.context("no server leads")?;
    let record: LeaderRecord = records::decode(&leader_key, &kv.value)?;
    let lease_left = match kv.lease {
        Some(lease) => store.time_to_live(lease).await.ok(),
        None => None,
    };
    let at = servers
        .iter_mut()
        .position(|s| s.endpoint == record.address)
        .with_context(|| format!("the leader {} is none of ours", record.address))?;
    if !servers[at].alive() {
        bail!("the leader at {} is already dead", record.address);
    }
    let survivors: Vec<String> = servers
        .iter_mut()
        .enumerate()
        .filter_map(|(i, s)| (i != at && s.alive()).then(|| s.endpoint.clone()))
        .collect();
    let client = access
        .admin(&survivors)?
        .with_timeout(Duration::from_secs(5));
    // Two new units: one whose name sorts before every placed unit, and
    // one whose name sorts after them all (see below).
    let first_unit = UnitName::parse(&format!("a-failover-{round}.service"))?;
    let last_unit = UnitName::parse(&format!("zz-failover-{round}.service"))?;

    // Follow etcd from now, then kill.
    let from = revision(&**store).await? + 1;
    let mut w = store.watch(keys.root(), from).await?;
    let follow = {
        let (first_unit, last_unit) = (first_unit.clone(), last_unit.clone());
        let leader_key = leader_key.clone();
        tokio::spawn(async move {
            let keys = Keys::default();
            let mut seen = Seen::default();
            let mut deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            loop {
                let Ok(events) = tokio::time::timeout_at(deadline, w.next()).await else {
                    return anyhow::Ok(seen);
                };
                let events = events?;
                let now = Instant::now();
                for e in &events {
                    match e {
                        WatchEvent::Delete { key, .. } if *key == leader_key => {
                            seen.leader_gone.get_or_insert(now);
                        }
                        WatchEvent::Put { kv, .. } if kv.key == leader_key => {
                            seen.new_leader.get_or_insert(now);
                        }
                        WatchEvent::Put { kv, .. } => match keys.parse(&kv.key) {
                            Some(Key::Assignment(_, u)) if u == first_unit => {
                                seen.first.get_or_insert(now);
                                // Give the other unit a while longer.
                                deadline =
                                    deadline.min(tokio::time::Instant::now() + LAST_UNIT_GRACE);
                            }
                            Some(Key::Assignment(_, u)) if u == last_unit => {
                                seen.last.get_or_insert(now);
                            }
                            _ => {}
                        },
                        WatchEvent::Delete { .. } => {}
                    }
                }
                if seen.first.is_some() && seen.last.is_some() {
                    return Ok(seen);
                }
            }
        })
    };
    let killed = Instant::now();
    servers[at].kill();
    let put = UnitPut {
        desired_state: Some(DesiredState::Launched),
        text: Some(plain_text().to_owned()),
        ..UnitPut::default()
    };
    let mut submitted = None;
    for unit in [&first_unit, &last_unit] {
        for _ in 0..600 {
            match client.put_unit(unit, &put).await {
                Ok(_) => {
                    submitted.get_or_insert_with(Instant::now);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    let submitted = submitted.context("the surviving servers never took the new units")?;
    let seen = follow.await??;
    let since = |t: Option<Instant>| {
        t.map_or_else(
            || "not seen".to_owned(),
            |t| format!("+{}", dur(t.duration_since(killed))),
        )
    };
    let last_text = match seen.last {
        Some(t) => format!("placed +{}", dur(t.duration_since(killed))),
        None => format!("NOT placed within {} of the first", dur(LAST_UNIT_GRACE)),
    };
    println!(
        "  round {}: killed the leader {}; its key went {}; new leader {}; units submitted +{}; {first_unit} placed {}; {last_unit} {last_text}",
        round + 1,
        record.id,
        since(seen.leader_gone),
        since(seen.new_leader),
        dur(submitted.duration_since(killed)),
        since(seen.first),
    );
    let total = seen
        .first
        .context("the new leader placed no new unit within 120 s of the kill")?
        .duration_since(killed);
    Ok(Row {
        id: "B3",
        case: format!(
            "round {} ({} -> {} servers), {} units on {} machines, --leader-ttl {}",
            round + 1,
            config.servers - round,
            config.servers - round - 1,
            count(config.units as f64),
            count(config.machines as f64),
            config.leader_ttl
        ),
        figure: format!(
            "first new placement committed {} after SIGKILL (old leader's key deleted {}, new leader's key {}, unit accepted +{}; leader lease had {} left at the kill). A unit whose name sorts after the first {} dirty units: {last_text}",
            dur(total),
            since(seen.leader_gone),
            since(seen.new_leader),
            dur(submitted.duration_since(killed)),
            lease_left.map_or_else(|| "?".to_owned(), dur),
            count(ReconcilerConfig::default().plan_batch as f64),
        ),
        anchor: "Borg ~10 s; kube-scheduler lease 15 s; fleet lease 10 s".to_owned(),
        goal: "< 3 s after the kill".to_owned(),
        ratio: time_ratio(total.as_secs_f64(), 10.0, "Borg", 3.0),
    })
}
