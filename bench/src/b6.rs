//! B6: fan-out to agents. One `flotilla server` process (embedded store)
//! and, in this process, `agents` simulated agents: each registers its
//! machine, heartbeats at a third of the machine TTL, and long-polls its
//! units feed (`GET /v1/agent/machines/{id}/units?index=N`) over real
//! HTTPS on 127.0.0.1, as the real agent does: with a client of its own
//! (its own connections) and its own machine credential.
//!
//! First every machine joins (parking machines included), with one join
//! token for them all, as agents given the same join token do at their
//! first start; the joins are timed on their own and done before anything
//! below is measured, so that the figures stay those of running agents.
//! The server's per-peer connection cap is raised to fit them all: here
//! every agent connects from 127.0.0.1, in a cluster each from its own
//! address.
//!
//! The assignment changes: before the agents start, `parking` machines
//! (registered by this process, not polling) hold `per_parking` units each.
//! Once every agent polls, the parking machines stop heartbeating one
//! after another, `wave` apart; as each one's lease ends the leader moves
//! its units to the least loaded agents, so every unit is one assignment
//! change delivered to one agent (10 x 1,000 = 10,000 changes, two per
//! agent). No unit key is written meanwhile.
//!
//! Delivery latency is measured from the leader's decision (the server's
//! `assign unit=U machine=M` log line, written just before the fenced
//! commit of that decision's batch, timestamped to the microsecond) to the
//! moment the agent's long poll returned it: an upper bound of commit to
//! delivery. The server's resident memory (`VmRSS` of the process) is read
//! before the agents join and once they all poll: the difference per agent
//! is what one agent costs the server. Every delivery is checked against
//! the decisions: an agent that got a unit decided for another machine is
//! counted; at the end every agent's units are compared with where the API
//! says each unit is.
//!
//! Then `submits` units are submitted one at a time (a unit key written
//! while every agent polls), to count how many long polls each such write
//! wakes.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use flotilla_api::client::Client;
use flotilla_proto::{Capacity, Machine, UnitName};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::procs::{AssignLine, ServerProc};
use crate::report::Row;
use crate::stats::{Samples, bytes, count, dur};
use crate::workload::machine;

pub struct Config {
    pub flotilla: PathBuf,
    /// Where the server's data directory goes (real disk or tmpfs).
    pub data_parent: PathBuf,
    pub label: String,
    pub agents: usize,
    pub parking: usize,
    pub per_parking: usize,
    pub wave: Duration,
    pub submits: usize,
}

const MACHINE_TTL: Duration = Duration::from_secs(10);
/// The server's longest wait (`MAX_WAIT`): fewer polls end empty.
const LONG_POLL: Duration = Duration::from_secs(60);
/// Joins in flight at once. Joins with one token contend for it (each
/// takes one of its uses): more at once only means more "try again".
const JOINING: usize = 8;
/// Parking machines are numbered from here, far from the agents' numbers.
const PARKING_BASE: usize = 10_000_000;

const UNIT_TEXT: &str =
    "[Unit]\nDescription=fan-out unit\n\n[Service]\nExecStart=/bin/sleep infinity\n";

/// One unit arriving at one agent.
struct Delivery {
    unit: String,
    agent: usize,
    at: SystemTime,
}

#[derive(Default)]
struct Stats {
    ready: AtomicUsize,
    /// Long polls that returned before their wait ran out: wake-ups.
    polls: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    deliveries: Mutex<Vec<Delivery>>,
    /// Agents whose lease ran out and that registered again.
    reregistered: AtomicU64,
}

impl Stats {
    fn delivered(&self) -> usize {
        self.deliveries.lock().map_or(0, |d| d.len())
    }

    fn error(&self, e: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert_with(|| e.to_string());
        }
    }
}

/// The leader's decisions, from the server's log: unit -> (when, machine).
type Decisions = Arc<Mutex<HashMap<String, Vec<(SystemTime, String)>>>>;

pub async fn run(config: &Config) -> anyhow::Result<Vec<Row>> {
    check_fd_limit(config.agents)?;
    let dir = config.data_parent.join(format!(
        "b6-{}-{}",
        config.label.replace([' ', ','], ""),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (tx, rx) = mpsc::channel::<AssignLine>();
    let decisions: Decisions = Arc::default();
    let collector = {
        let decisions = decisions.clone();
        std::thread::spawn(move || {
            for a in rx {
                if let Ok(mut d) = decisions.lock() {
                    d.entry(a.unit).or_default().push((a.at, a.machine));
                }
            }
        })
    };
    // Two connections per agent (its long poll and its heartbeats, as the
    // agent holds), all from 127.0.0.1, and some to spare.
    let connections = (2 * (config.agents + config.parking) + 256).to_string();
    let args = vec![
        "--data-dir".to_owned(),
        dir.join("data").display().to_string(),
        "--machine-ttl".to_owned(),
        "10s".to_owned(),
        "--max-connections".to_owned(),
        connections.clone(),
        "--max-connections-per-peer".to_owned(),
        connections,
    ];
    let result = match ServerProc::start(
        &config.flotilla,
        &args,
        "info",
        &dir.join("server.log"),
        Some(tx),
    ) {
        Ok(server) => {
            let r = measure(config, &server, &decisions).await;
            drop(server);
            r
        }
        Err(e) => Err(e),
    };
    let _ = collector.join();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The soft limit on open files must fit two sockets per agent and then
/// some (the server, a separate process, has the same limit).
fn check_fd_limit(agents: usize) -> anyhow::Result<()> {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok());
    match soft {
        Some(n) if n < agents * 2 + 1_000 => bail!(
            "the open files limit is {n}; {agents} agents need about {}: raise it (`ulimit -n`; scripts/bench does)",
            agents * 2 + 1_000
        ),
        _ => Ok(()),
    }
}

async fn measure(
    config: &Config,
    server: &ServerProc,
    decisions: &Decisions,
) -> anyhow::Result<Vec<Row>> {
    // The operator's client, with the cluster's first admin token.
    let client = server.admin().await?.with_timeout(Duration::from_secs(30));
    eventually("a leader", Duration::from_secs(30), || async {
        client
            .list_servers()
            .await
            .is_ok_and(|l| l.servers.iter().any(|s| s.leader))
    })
    .await?;

    // Every machine joins, before anything is measured.
    let joined = join_all(config, server).await?;
    let joins = joined.agents.len() + joined.parking.len();
    let (joined_in, joined_rss) = (joined.took, joined.rss.1.saturating_sub(joined.rss.0));
    println!(
        "  {joins} machines joined in {} ({}/s, {JOINING} at a time, {} told to try again); server RSS {} before, {} after",
        dur(joined_in),
        count(joins as f64 / joined_in.as_secs_f64().max(1e-9)),
        joined.retries,
        bytes(joined.rss.0 as f64),
        bytes(joined.rss.1 as f64)
    );

    // Parking machines, then the units they hold.
    let park_stops: Vec<Arc<AtomicBool>> = (0..config.parking)
        .map(|_| Arc::new(AtomicBool::new(false)))
        .collect();
    let mut parking_tasks = JoinSet::new();
    for ((k, stop), own) in park_stops.iter().enumerate().zip(joined.parking) {
        let mut m = machine(PARKING_BASE + k);
        m.hostname = format!("parking-{k}");
        let reg = own
            .register_machine(&m)
            .await
            .context("registering a parking machine")?;
        let stop = stop.clone();
        parking_tasks.spawn(async move {
            for _ in 0..100_000 {
                tokio::time::sleep(MACHINE_TTL / 3).await;
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let _ = own.heartbeat(&m.id, reg.lease).await;
            }
        });
    }
    let total = config.parking * config.per_parking;
    let names: Vec<UnitName> = (0..total)
        .map(|i| UnitName::parse(&format!("fan{i:06}.service")))
        .collect::<Result<_, _>>()?;
    submit_all(&client, &names).await?;
    eventually(
        "the units placed on the parking machines",
        Duration::from_secs(300),
        || async { decisions.lock().map_or(0, |d| d.len()) >= total },
    )
    .await?;
    let rss_before = server.rss().context("cannot read the server's memory")?;
    println!(
        "  {} units on {} parking machines; server RSS {}",
        total,
        config.parking,
        bytes(rss_before.0 as f64)
    );

    // The agents.
    let stats = Arc::new(Stats::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let registering = Arc::new(Semaphore::new(64));
    let mut agents = JoinSet::new();
    let t = Instant::now();
    for (i, own) in joined.agents.into_iter().enumerate() {
        agents.spawn(agent(
            i,
            config.agents,
            own,
            machine(i),
            stats.clone(),
            stop_rx.clone(),
            registering.clone(),
        ));
    }
    let ready = eventually("every agent polls", Duration::from_secs(600), || async {
        stats.ready.load(Ordering::Relaxed) >= config.agents
    })
    .await;
    if let Err(e) = ready {
        let _ = stop_tx.send(true);
        bail!(
            "{e}: {} of {} agents ready, {} errors (first: {:?})",
            stats.ready.load(Ordering::Relaxed),
            config.agents,
            stats.errors.load(Ordering::Relaxed),
            stats.first_error.lock().ok().and_then(|f| f.clone())
        );
    }
    println!(
        "  {} agents registered and polling in {}",
        config.agents,
        dur(t.elapsed())
    );
    // Let a round of heartbeats go by before reading the memory.
    tokio::time::sleep(MACHINE_TTL / 2).await;
    let rss_agents = server.rss().context("cannot read the server's memory")?;
    let per_agent = rss_agents.0.saturating_sub(rss_before.0) as f64 / config.agents as f64;
    println!(
        "  server RSS with every agent polling {} ({} per agent)",
        bytes(rss_agents.0 as f64),
        bytes(per_agent)
    );

    // The waves of changes.
    let server_cpu = server.cpu();
    let own_cpu = crate::procs::cpu_of("/proc/self/stat");
    let polls_before = stats.polls.load(Ordering::Relaxed);
    let errors_before = stats.errors.load(Ordering::Relaxed);
    let t = Instant::now();
    for stop in &park_stops {
        stop.store(true, Ordering::Relaxed);
        tokio::time::sleep(config.wave).await;
    }
    let delivered_all = eventually(
        "every change delivered",
        MACHINE_TTL * 2 + Duration::from_secs(340),
        || async { stats.delivered() >= total },
    )
    .await;
    let waves_took = t.elapsed();
    let cpu_used = |before: Option<Duration>, after: Option<Duration>| match (before, after) {
        (Some(b), Some(a)) => format!(
            "{} ({:.0}% of one core)",
            dur(a.saturating_sub(b)),
            100.0 * a.saturating_sub(b).as_secs_f64() / waves_took.as_secs_f64()
        ),
        _ => "?".to_owned(),
    };
    let server_cpu = cpu_used(server_cpu, server.cpu());
    let own_cpu = cpu_used(own_cpu, crate::procs::cpu_of("/proc/self/stat"));
    println!("  CPU during the changes: server {server_cpu}, agents (this process) {own_cpu}");
    let wave_polls = stats.polls.load(Ordering::Relaxed) - polls_before;
    let wave_errors = stats.errors.load(Ordering::Relaxed) - errors_before;
    let reregistered = stats.reregistered.load(Ordering::Relaxed);
    let rss_after = server.rss().context("cannot read the server's memory")?;

    let (mut latencies, wrong) = check_deliveries(&stats, decisions)?;
    let delivered = stats.delivered();
    println!(
        "  {delivered} of {total} changes delivered in {}; {wave_polls} long polls woken; {wave_errors} errors; {wrong} deliveries of another machine's unit",
        dur(waves_took)
    );
    if let Err(e) = delivered_all {
        println!("  ({e})");
    }
    if wave_errors > 0 {
        println!(
            "  first agent error: {}",
            stats
                .first_error
                .lock()
                .ok()
                .and_then(|f| f.clone())
                .unwrap_or_default()
        );
    }
    let (warnings, kinds) = server.warnings();
    if warnings > 0 {
        println!("  the server logged {warnings} warnings, such as:");
        for k in kinds.iter().take(5) {
            println!("    {k}");
        }
    }

    // Where the API says every unit is, against what each agent holds. A
    // server still busy with the changes may take a while to answer.
    let lister = client.clone().with_timeout(Duration::from_secs(120));
    let mut where_placed: Option<HashMap<String, String>> = None;
    for _ in 0..3 {
        match lister.all_units().await {
            Ok(units) => {
                where_placed = Some(
                    units
                        .into_iter()
                        .filter_map(|u| u.machine_id.map(|m| (u.name, m.to_string())))
                        .collect(),
                );
                break;
            }
            Err(e) => println!("  listing the units failed: {e}"),
        }
    }

    // Unit writes while every agent polls.
    let mut submit_latency = Samples::default();
    let polls_before = stats.polls.load(Ordering::Relaxed);
    let mut submitted = 0;
    for j in 0..config.submits {
        let name = UnitName::parse(&format!("submit{j:04}.service"))?;
        let before = stats.delivered();
        submit_all(&client, std::slice::from_ref(&name)).await?;
        let got = eventually(
            "a submitted unit delivered",
            Duration::from_secs(120),
            || async { stats.delivered() > before },
        )
        .await;
        if got.is_err() {
            break;
        }
        submitted += 1;
    }
    let submit_polls = stats.polls.load(Ordering::Relaxed) - polls_before;
    if config.submits > 0 {
        submit_latency = latencies_of(&stats, decisions, "submit")?;
    }

    let _ = stop_tx.send(true);
    let mut held: Vec<(usize, HashSet<String>)> = Vec::new();
    let stop_deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while let Ok(Some(r)) = tokio::time::timeout_at(stop_deadline, agents.join_next()).await {
        if let Ok(h) = r {
            held.push(h);
        }
    }
    agents.abort_all();
    parking_tasks.abort_all();
    let misplaced = where_placed.as_ref().map(|placed| {
        let mut n = 0usize;
        for (i, units) in &held {
            let me = machine(*i).id.to_string();
            for u in units {
                if u.starts_with("fan") && placed.get(u) != Some(&me) {
                    n += 1;
                }
            }
        }
        n
    });

    let (p50, p99, max) = (
        latencies.percentile(50.0),
        latencies.percentile(99.0),
        latencies.max(),
    );
    let mut rows = vec![Row {
        id: "B6",
        case: format!(
            "{}, {} agents, {} assignment changes in {} waves of {} (a parking machine's lease ends every {})",
            config.label,
            count(config.agents as f64),
            count(total as f64),
            config.parking,
            count(config.per_parking as f64),
            dur(config.wave)
        ),
        figure: format!(
            "delivery p50 {}, p99 {}, max {} ({} of {} delivered in {}; {:.2} long polls woken per change; {} server warnings{}; {} agents lost their lease and registered again; CPU: server {}, agents {}); server RSS {} per agent ({} before the agents, their credentials included, {} with them, {} after the changes); {} deliveries of another machine's unit, {} units held by an agent the API does not place them on; the agents joined first, outside the figures ({} joins in {}, server RSS +{} for them)",
            dur(p50),
            dur(p99),
            dur(max),
            count(latencies.len() as f64),
            count(total as f64),
            dur(waves_took),
            wave_polls as f64 / total.max(1) as f64,
            warnings,
            if kinds.iter().any(|k| k.contains("leadership lost")) {
                ", among them the leader losing its lease"
            } else {
                ""
            },
            reregistered,
            server_cpu,
            own_cpu,
            bytes(per_agent),
            bytes(rss_before.0 as f64),
            bytes(rss_agents.0 as f64),
            bytes(rss_after.0 as f64),
            wrong,
            misplaced.map_or_else(|| "(the API did not answer the listing)".to_owned(), |n| n.to_string()),
            count(joins as f64),
            dur(joined_in),
            bytes(joined_rss as f64)
        ),
        anchor: "fleet: every change woke every machine; etcd watch memory ~18 KB per stream".to_owned(),
        goal: "p99 delivery < 1 s, server RSS per agent reported, no agent receives another machine's work".to_owned(),
        ratio: format!(
            "p99 {:.2}x the goal ({}); RSS per agent {:.2}x etcd's 18 KB per watch; {}",
            p99.as_secs_f64() / 1.0,
            if p99 < Duration::from_secs(1) && latencies.len() == total {
                "goal met"
            } else {
                "goal MISSED"
            },
            per_agent / (18.0 * 1024.0),
            if wrong == 0 && misplaced.unwrap_or(0) == 0 {
                "no cross-delivery"
            } else {
                "CROSS-DELIVERY"
            }
        ),
    }];
    if config.submits > 0 {
        let per_put = submit_polls as f64 / submitted.max(1) as f64;
        rows.push(Row {
            id: "B6",
            case: format!(
                "{}, {} agents, {} units submitted one at a time while they poll",
                config.label,
                count(config.agents as f64),
                submitted
            ),
            figure: format!(
                "{:.0} long polls woken per unit written ({:.0}% of the agents); delivery {}",
                per_put,
                100.0 * per_put / config.agents as f64,
                if submit_latency.is_empty() {
                    "never".to_owned()
                } else {
                    format!(
                        "p50 {}, p99 {}",
                        dur(submit_latency.percentile(50.0)),
                        dur(submit_latency.percentile(99.0))
                    )
                }
            ),
            anchor: "fleet: every change woke every machine".to_owned(),
            goal: "a change wakes only the agents it concerns".to_owned(),
            ratio: format!(
                "{:.2} of fleet's wake-ups ({})",
                per_put / config.agents as f64,
                if per_put <= 2.0 {
                    "goal met"
                } else {
                    "goal MISSED"
                }
            ),
        });
    }
    Ok(rows)
}

/// Every machine's own client, once joined.
struct Joined {
    agents: Vec<Client>,
    parking: Vec<Client>,
    took: Duration,
    /// Joins the server asked to try again.
    retries: u64,
    /// The server's RSS before the joins and after.
    rss: (u64, u64),
}

/// Joins every agent's machine and every parking machine with one join
/// token for them all, [`JOINING`] at a time, as agents started together
/// with the same join token do; each gets a client of its own.
async fn join_all(config: &Config, server: &ServerProc) -> anyhow::Result<Joined> {
    let machines = config.agents + config.parking;
    let uses = u32::try_from(machines).context("too many machines for one join token")?;
    let joiner = Arc::new(server.joiner(uses).await?);
    let before = server.rss().context("cannot read the server's memory")?;
    let t = Instant::now();
    let limit = Arc::new(Semaphore::new(JOINING));
    let mut joins = JoinSet::new();
    for n in (0..config.agents).chain((0..config.parking).map(|k| PARKING_BASE + k)) {
        let joiner = joiner.clone();
        let limit = limit.clone();
        joins.spawn(async move {
            let _permit = limit.acquire().await;
            let client = joiner.join(&machine(n).id).await?;
            anyhow::Ok((n, client.with_timeout(Duration::from_secs(30))))
        });
    }
    let mut clients: HashMap<usize, Client> = HashMap::with_capacity(machines);
    while let Some(r) = joins.join_next().await {
        let (n, client) = r.context("a join task failed")??;
        clients.insert(n, client);
    }
    let took = t.elapsed();
    let retries = joiner.retries();
    let after = server.rss().context("cannot read the server's memory")?;
    let mut take = |n: usize| {
        clients
            .remove(&n)
            .with_context(|| format!("machine {n} did not join"))
    };
    let agents = (0..config.agents)
        .map(&mut take)
        .collect::<anyhow::Result<_>>()?;
    let parking = (0..config.parking)
        .map(|k| take(PARKING_BASE + k))
        .collect::<anyhow::Result<_>>()?;
    Ok(Joined {
        agents,
        parking,
        took,
        retries,
        rss: (before.0, after.0),
    })
}

/// Submits and launches units of the same text.
async fn submit_all(client: &Client, names: &[UnitName]) -> anyhow::Result<()> {
    let units = names.iter().map(|n| (n.clone(), UNIT_TEXT.to_owned()));
    crate::workload::launch_all(client, units).await
}

/// Latencies of every delivery (from the decision for that machine), and
/// how many deliveries match no decision for the agent's machine.
fn check_deliveries(stats: &Stats, decisions: &Decisions) -> anyhow::Result<(Samples, usize)> {
    let deliveries = stats
        .deliveries
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    let decisions = decisions.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let mut samples = Samples::with_capacity(deliveries.len());
    let mut wrong = 0;
    for d in deliveries.iter().filter(|d| d.unit.starts_with("fan")) {
        match latency(d, &decisions) {
            Some(l) => samples.push(l),
            None => wrong += 1,
        }
    }
    Ok((samples, wrong))
}

fn latencies_of(stats: &Stats, decisions: &Decisions, prefix: &str) -> anyhow::Result<Samples> {
    let deliveries = stats
        .deliveries
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    let decisions = decisions.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let mut samples = Samples::default();
    for d in deliveries.iter().filter(|d| d.unit.starts_with(prefix)) {
        if let Some(l) = latency(d, &decisions) {
            samples.push(l);
        }
    }
    Ok(samples)
}

/// From the latest decision placing the unit on the agent's machine, made
/// before the delivery, to the delivery. `None`: no such decision.
fn latency(
    d: &Delivery,
    decisions: &HashMap<String, Vec<(SystemTime, String)>>,
) -> Option<Duration> {
    let me = machine(d.agent).id.to_string();
    let decided = decisions
        .get(&d.unit)?
        .iter()
        .filter(|(at, m)| *m == me && *at <= d.at)
        .map(|(at, _)| *at)
        .max()?;
    d.at.duration_since(decided).ok()
}

/// One simulated agent: register, heartbeat, long-poll. Returns the units
/// it holds when stopped.
async fn agent(
    index: usize,
    agents: usize,
    client: Client,
    machine: Machine,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
    registering: Arc<Semaphore>,
) -> (usize, HashSet<String>) {
    let machine = Machine {
        capacity: Capacity {
            cpu_millis: 64_000,
            memory_bytes: 256 << 30,
        },
        ..machine
    };
    let id = machine.id.clone();
    let mut known: HashSet<String> = HashSet::new();
    let permit = registering.acquire().await;
    let mut registration = None;
    for _ in 0..10 {
        match client.register_machine(&machine).await {
            Ok(r) => {
                registration = Some(r);
                break;
            }
            Err(e) => {
                stats.error(format!("register: {e}"));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let Some(registration) = registration else {
        return (index, known);
    };
    let mut index_rev = None;
    for _ in 0..10 {
        match client.machine_units(&id, None, Duration::ZERO).await {
            Ok(feed) => {
                known = feed.units.into_iter().map(|u| u.name).collect();
                index_rev = Some(feed.index);
                break;
            }
            Err(e) => {
                stats.error(format!("first feed: {e}"));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    drop(permit);
    let Some(mut index_rev) = index_rev else {
        return (index, known);
    };

    // Heartbeats, spread over the period.
    let heartbeat = {
        let client = client.clone();
        let id = id.clone();
        let stats = stats.clone();
        let mut stop = stop.clone();
        let period = MACHINE_TTL / 3;
        let machine = machine.clone();
        let mut lease = registration.lease;
        let offset = period.mul_f64(index as f64 / agents.max(1) as f64);
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(offset) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            for _ in 0..1_000_000 {
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                match client.heartbeat(&id, lease).await {
                    Ok(_) => {}
                    // The lease ran out (the server was too slow to take a
                    // heartbeat in time): register again, as the agent does.
                    Err(e) if e.is_not_found() => {
                        stats.error(format!("heartbeat: {e}"));
                        stats.reregistered.fetch_add(1, Ordering::Relaxed);
                        if let Ok(r) = client.register_machine(&machine).await {
                            lease = r.lease;
                        }
                    }
                    Err(e) => stats.error(format!("heartbeat: {e}")),
                }
            }
        })
    };

    stats.ready.fetch_add(1, Ordering::Relaxed);
    for _ in 0..1_000_000 {
        let asked = Instant::now();
        let polled = tokio::select! {
            r = client.machine_units(&id, Some(index_rev), LONG_POLL) => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        let at = SystemTime::now();
        if asked.elapsed() < LONG_POLL.mul_f64(0.9) {
            stats.polls.fetch_add(1, Ordering::Relaxed);
        }
        match polled {
            Ok(feed) => {
                let now: HashSet<String> = feed.units.into_iter().map(|u| u.name).collect();
                let fresh: Vec<&String> = now.difference(&known).collect();
                if !fresh.is_empty()
                    && let Ok(mut d) = stats.deliveries.lock()
                {
                    for unit in fresh {
                        d.push(Delivery {
                            unit: unit.clone(),
                            agent: index,
                            at,
                        });
                    }
                }
                known = now;
                index_rev = feed.index;
            }
            Err(e) => {
                stats.error(format!("long poll: {e}"));
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        }
    }
    heartbeat.abort();
    (index, known)
}

/// Polls `check` every 50 ms until it holds or `limit` passes.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out after {} waiting for {what}", dur(limit));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
