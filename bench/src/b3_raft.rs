//! B3 on raft: leader failover among three `flotilla server` processes
//! that replicate the store between themselves (`--peers`, `--raft-id`),
//! without etcd.
//!
//! The cluster is written first, in process: three raft stores on the
//! servers' data directories and peer ports (see `raft_cluster`) take the
//! units and machines (on a lease long enough for the run: nothing here
//! keeps it alive, and a new raft leader gives every lease a whole TTL),
//! and the real leader places them all. Then the stores close and the
//! servers start on the same directories: the first alone, the others
//! given a copy of its cluster CA and secrets key, as an operator does.
//! Once a leader has placed a warm-up unit, it is killed with SIGKILL and
//! two new units are submitted through a survivor at once, as on etcd.
//! The figure is the time from the kill until a survivor's API shows the
//! first new unit placed (its reads are linearizable: placed there means
//! committed); `list-servers` is polled too, for when it shows a new
//! leader. The killed server is started again and the cluster given time
//! to settle before the second round kills the new leader: 3 -> 2 servers
//! both times, since 1 server of 3 commits nothing. The new leader's log
//! says when raft elected it, when its scheduler took the leader key, and
//! when its placement view was loaded: where the time went.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use flotilla_api::client::Client;
use flotilla_api::tls::ClusterCa;
use flotilla_proto::wire::UnitPut;
use flotilla_proto::{DesiredState, UnitName};
use flotilla_scheduler::keys::Keys;
use flotilla_scheduler::placement::Strategy;
use flotilla_store::{RangeOptions, Store};

use crate::access::{Access, SECRETS_KEY, START_LIMIT, share_ca};
use crate::procs::{ServerProc, parse_utc};
use crate::raft_cluster::{RaftCluster, peer_url};
use crate::report::{Row, time_ratio};
use crate::stats::{count, dur};
use crate::stores::{
    Leader, encoded, follow_decisions, machine_ops, revision, unit_ops, write_all,
};
use crate::workload::{machine, plain_record, plain_text};
use flotilla_testbed::free_port;

/// How long the unit that sorts last may take after the first is placed.
const LAST_UNIT_GRACE: Duration = Duration::from_secs(20);
/// How long a round may take from the kill to the first new placement.
const ROUND_LIMIT: Duration = Duration::from_secs(120);
/// Between two polls of a survivor's API.
const POLL: Duration = Duration::from_millis(10);

pub struct Config {
    pub flotilla: PathBuf,
    pub work: PathBuf,
    pub units: usize,
    pub machines: usize,
    pub rounds: usize,
}

const SERVERS: usize = 3;

pub async fn run(config: &Config) -> anyhow::Result<Vec<Row>> {
    println!(
        "B3 on raft: {SERVERS} servers with --peers, {} units on {} machines",
        config.units, config.machines
    );
    let dirs: Vec<PathBuf> = (1..=SERVERS)
        .map(|i| config.work.join(format!("b3-raft-server-{i}")))
        .collect();
    let mut servers: Vec<Option<ServerProc>> = Vec::new();
    let result = measure(config, &dirs, &mut servers).await;
    drop(servers);
    for (i, d) in dirs.iter().enumerate() {
        let _ = std::fs::remove_dir_all(d);
        let _ = std::fs::remove_file(log_of(&config.work, i));
    }
    result
}

fn log_of(work: &Path, i: usize) -> PathBuf {
    work.join(format!("b3-raft-server-{}.log", i + 1))
}

/// The arguments of server `i` (0-based).
fn server_args(dirs: &[PathBuf], ports: &[u16], i: usize) -> Vec<String> {
    let peers: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(j, p)| format!("{}={}", j + 1, peer_url(*p)))
        .collect();
    vec![
        "--data-dir".to_owned(),
        dirs[i].display().to_string(),
        "--peers".to_owned(),
        peers.join(","),
        "--raft-id".to_owned(),
        (i + 1).to_string(),
        "--machine-ttl".to_owned(),
        "10s".to_owned(),
    ]
}

async fn measure(
    config: &Config,
    dirs: &[PathBuf],
    servers: &mut Vec<Option<ServerProc>>,
) -> anyhow::Result<Vec<Row>> {
    let ports: Vec<u16> = (0..SERVERS).map(|_| free_port()).collect();
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    // The cluster CA in the first server's data directory, as its first
    // start would make it, copied to the others.
    let (ca, _) = ClusterCa::load_or_create(&dirs[0].join("tls")).context("the cluster CA")?;
    for d in &dirs[1..] {
        share_ca(&dirs[0], d)?;
    }
    let t = Instant::now();
    prepare(config, dirs, &ports, Arc::new(ca)).await?;
    println!(
        "  wrote and placed {} units through raft in process in {}",
        config.units,
        dur(t.elapsed())
    );

    // The servers: the first alone (it makes the secrets key), then the
    // others with copies of its CA and key.
    let t = Instant::now();
    for i in 0..SERVERS {
        if i > 0 {
            wait_for_file(&dirs[0].join(SECRETS_KEY)).await?;
            share_ca(&dirs[0], &dirs[i])?;
        }
        servers.push(Some(start(config, dirs, &ports, i)?));
    }
    let access = wait_access(dirs).await?;
    let endpoints: Vec<String> = servers
        .iter()
        .flatten()
        .map(|s| s.endpoint.clone())
        .collect();
    for e in &endpoints {
        wait_serving(&access, e).await?;
    }
    let all = access
        .admin(&endpoints)?
        .with_timeout(Duration::from_secs(5));
    place_and_wait(&all, &UnitName::parse("a-warmup-0.service")?).await?;
    println!(
        "  servers up and a warm-up unit placed {} after they started",
        dur(t.elapsed())
    );

    let mut rows = Vec::new();
    for round in 0..config.rounds {
        if round > 0 {
            // Start the killed server again and let it catch up: a second
            // kill with one server down would leave no quorum.
            let down = servers
                .iter()
                .position(Option::is_none)
                .context("no server is down")?;
            let t = Instant::now();
            // On a new API port: the clients are made again.
            let restarted = start(config, dirs, &ports, down)?;
            let endpoint = restarted.endpoint.clone();
            servers[down] = Some(restarted);
            wait_serving(&access, &endpoint).await?;
            let endpoints: Vec<String> = servers
                .iter()
                .flatten()
                .map(|s| s.endpoint.clone())
                .collect();
            let all = access
                .admin(&endpoints)?
                .with_timeout(Duration::from_secs(5));
            wait_listed(&all, &endpoint).await?;
            place_and_wait(
                &all,
                &UnitName::parse(&format!("a-warmup-{round}.service"))?,
            )
            .await?;
            println!(
                "  restarted server {} in {} (serving, listed, a unit placed)",
                down + 1,
                dur(t.elapsed())
            );
        }
        match failover(config, &access, servers, round).await {
            Ok(row) => rows.push(row),
            Err(e) if rows.is_empty() => return Err(e),
            Err(e) => {
                println!("  a later round failed: {e:#}");
                break;
            }
        }
    }
    Ok(rows)
}

fn start(config: &Config, dirs: &[PathBuf], ports: &[u16], i: usize) -> anyhow::Result<ServerProc> {
    ServerProc::start(
        &config.flotilla,
        &server_args(dirs, ports, i),
        "info",
        &log_of(&config.work, i),
        None,
    )
}

/// Writes the units and machines through three raft stores in process on
/// the servers' directories and peer ports, and places them with the real
/// leader.
async fn prepare(
    config: &Config,
    dirs: &[PathBuf],
    ports: &[u16],
    ca: Arc<ClusterCa>,
) -> anyhow::Result<()> {
    let cluster = RaftCluster::open(dirs.to_vec(), ports, ca).await?;
    let result = async {
        let store: Arc<dyn Store> = cluster.stores[cluster.leader().await?].clone();
        let keys = Keys::default();
        let names: Vec<UnitName> = (0..config.units)
            .map(|i| UnitName::parse(&format!("f{i:07}.service")))
            .collect::<Result<_, _>>()?;
        let value = encoded(&plain_record(&names[0])?);
        write_all(
            &store,
            unit_ops(&keys, names.iter().map(|n| (n.clone(), Arc::clone(&value)))),
            8,
        )
        .await?;
        // Nothing keeps this lease alive: long enough for the whole run.
        let grant = store.grant(Duration::from_secs(24 * 3600)).await?;
        write_all(
            &store,
            machine_ops(&keys, (0..config.machines).map(|i| (machine(i), grant.id))),
            8,
        )
        .await?;
        let from = revision(&*store).await? + 1;
        let follower = tokio::spawn(follow_decisions(
            store.clone(),
            from,
            config.units,
            Duration::from_secs(1200),
        ));
        let leader = Leader::start(store.clone(), Strategy::Spread).await?;
        let progress = follower.await??;
        if let Some(e) = leader.stop().await {
            bail!("the reconcile loop stopped on its own: {e}");
        }
        if progress.placed != config.units {
            bail!(
                "not every unit was placed: {} placed, {} unschedulable of {}",
                progress.placed,
                progress.unschedulable,
                config.units
            );
        }
        // What a new leader's load costs in store reads alone, for the
        // breakdown: everything in pages of 10,000, as its load reads.
        let t = Instant::now();
        let read = read_all(&*store, keys.root()).await?;
        println!(
            "  the leader's store reads all {} keys in pages of 10,000 in {} (in process)",
            count(read as f64),
            dur(t.elapsed())
        );
        anyhow::Ok(())
    }
    .await;
    cluster.close().await;
    result
}

/// Reads every key under `prefix` in pages of 10,000; returns how many.
async fn read_all(store: &dyn Store, prefix: &str) -> anyhow::Result<usize> {
    let mut n = 0;
    let mut after: Option<String> = None;
    for _ in 0..100_000 {
        let mut options = RangeOptions::default().limit(10_000);
        if let Some(a) = after.take() {
            options = options.start_after(a);
        }
        let page = store.range(prefix, options).await?;
        n += page.kvs.len();
        after = page.kvs.last().map(|kv| kv.key.clone());
        if !page.more {
            return Ok(n);
        }
    }
    bail!("too many pages under {prefix}")
}

async fn wait_for_file(path: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_LIMIT;
    while !path.exists() {
        if Instant::now() > deadline {
            bail!("{} did not appear within {START_LIMIT:?}", path.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The CA and the first admin token, from whichever server wrote the token
/// (the one that bootstrapped the cluster's credentials).
async fn wait_access(dirs: &[PathBuf]) -> anyhow::Result<Access> {
    let deadline = Instant::now() + START_LIMIT;
    loop {
        for d in dirs {
            if let Some(a) = Access::read(d)? {
                return Ok(a);
            }
        }
        if Instant::now() > deadline {
            bail!("no server wrote the first admin token within {START_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_serving(access: &Access, endpoint: &str) -> anyhow::Result<()> {
    let client = access
        .admin(&[endpoint])?
        .with_timeout(Duration::from_secs(5));
    let deadline = Instant::now() + START_LIMIT;
    loop {
        let answer = client.whoami().await;
        if answer.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{endpoint} did not serve within {START_LIMIT:?}: {answer:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `list-servers` lists the server at `endpoint`, and a
/// leader.
async fn wait_listed(client: &Client, endpoint: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_LIMIT;
    loop {
        if let Ok(list) = client.list_servers().await
            && list.servers.iter().any(|s| s.address == endpoint)
            && list.servers.iter().any(|s| s.leader)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("list-servers did not list {endpoint} and a leader within {START_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn unit_put() -> UnitPut {
    UnitPut {
        desired_state: Some(DesiredState::Launched),
        text: Some(plain_text().to_owned()),
        ..UnitPut::default()
    }
}

/// Submits `unit` and waits until it is placed.
async fn place_and_wait(client: &Client, unit: &UnitName) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_LIMIT;
    while client.put_unit(unit, &unit_put()).await.is_err() {
        if Instant::now() > deadline {
            bail!("the servers did not take {unit} within {START_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    placed_by(client, unit, deadline)
        .await
        .with_context(|| format!("{unit} was not placed within {START_LIMIT:?}"))?;
    Ok(())
}

/// When a unit is seen placed, polling; `None` past the deadline.
async fn placed_by(client: &Client, unit: &UnitName, deadline: Instant) -> Option<Instant> {
    loop {
        if let Ok(u) = client.get_unit(unit).await
            && u.machine_id.is_some()
        {
            return Some(Instant::now());
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn failover(
    config: &Config,
    access: &Access,
    servers: &mut [Option<ServerProc>],
    round: usize,
) -> anyhow::Result<Row> {
    let alive: Vec<String> = servers
        .iter()
        .flatten()
        .map(|s| s.endpoint.clone())
        .collect();
    let list = access
        .admin(&alive)?
        .with_timeout(Duration::from_secs(5))
        .list_servers()
        .await
        .context("list-servers before the kill")?;
    let old = list
        .servers
        .iter()
        .find(|s| s.leader)
        .context("no server leads")?
        .address
        .clone();
    let at = servers
        .iter()
        .position(|s| s.as_ref().is_some_and(|s| s.endpoint == old))
        .with_context(|| format!("the leader {old} is none of ours"))?;
    let survivors: Vec<String> = alive.iter().filter(|e| **e != old).cloned().collect();
    let client = access
        .admin(&survivors)?
        .with_timeout(Duration::from_secs(5));
    let first_unit = UnitName::parse(&format!("a-failover-{round}.service"))?;
    let last_unit = UnitName::parse(&format!("zz-failover-{round}.service"))?;

    let killed_wall = SystemTime::now();
    let killed = Instant::now();
    if let Some(s) = servers[at].as_mut() {
        s.kill();
    }
    servers[at] = None;
    let deadline = killed + ROUND_LIMIT;

    let submit = {
        let client = client.clone();
        let units = [first_unit.clone(), last_unit.clone()];
        tokio::spawn(async move {
            let mut submitted = None;
            for unit in &units {
                while Instant::now() < deadline {
                    if client.put_unit(unit, &unit_put()).await.is_ok() {
                        submitted.get_or_insert_with(Instant::now);
                        break;
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
            submitted
        })
    };
    let new_leader = {
        let client = client.clone();
        let old = old.clone();
        tokio::spawn(async move {
            while Instant::now() < deadline {
                if let Ok(list) = client.list_servers().await
                    && list.servers.iter().any(|s| s.leader && s.address != old)
                {
                    return Some(Instant::now());
                }
                tokio::time::sleep(POLL).await;
            }
            None
        })
    };
    let first = placed_by(&client, &first_unit, deadline).await;
    let last = match first {
        Some(f) => placed_by(&client, &last_unit, f + LAST_UNIT_GRACE).await,
        None => None,
    };
    let submitted = submit.await.context("the submitting task")?;
    let new_leader = new_leader.await.context("the list-servers task")?;
    let since = |t: Option<Instant>| {
        t.map_or_else(
            || "not seen".to_owned(),
            |t| format!("+{}", dur(t.duration_since(killed))),
        )
    };
    let last_text = match last {
        Some(t) => format!("placed +{}", dur(t.duration_since(killed))),
        None => format!("NOT placed within {} of the first", dur(LAST_UNIT_GRACE)),
    };
    let steps = leader_steps(&config.work, servers, killed_wall);
    println!(
        "  round {}: killed the leader {old}; list-servers showed a new leader {}; units accepted {}; {first_unit} placed {}; {last_unit} {last_text}; the new leader's log: {steps}",
        round + 1,
        since(new_leader),
        since(submitted),
        since(first),
    );
    let total = first
        .context("no new unit was placed within 120 s of the kill")?
        .duration_since(killed);
    Ok(Row {
        id: "B3",
        case: format!(
            "raft: round {} (3 -> 2 servers{}), {} units on {} machines",
            round + 1,
            if round > 0 {
                ", the server killed before started again first"
            } else {
                ""
            },
            count(config.units as f64),
            count(config.machines as f64),
        ),
        figure: format!(
            "first new placement committed {} after SIGKILL (list-servers showed a new leader {}, unit accepted {}; new leader's log: {steps}). A unit whose name sorts last: {last_text}",
            dur(total),
            since(new_leader),
            since(submitted),
        ),
        anchor: "Borg ~10 s; kube-scheduler lease 15 s; fleet lease 10 s".to_owned(),
        goal: "< 1.5 s after the kill".to_owned(),
        ratio: time_ratio(total.as_secs_f64(), 10.0, "Borg", 1.5),
    })
}

/// What the log of the server now leading says, as times after the kill:
/// raft elected it, its scheduler leads, its view is loaded, its first
/// assignment.
fn leader_steps(work: &Path, servers: &[Option<ServerProc>], killed: SystemTime) -> String {
    servers
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_some())
        .filter_map(|(i, _)| std::fs::read_to_string(log_of(work, i)).ok())
        .find_map(|text| steps_in(&text, killed))
        .unwrap_or_else(|| "no server's log says it was elected after the kill".to_owned())
}

/// The steps of taking over in one server's log, after `killed`; `None`
/// when raft did not elect it after then.
fn steps_in(text: &str, killed: SystemTime) -> Option<String> {
    const STEPS: [(&str, &str); 4] = [
        ("this server leads the raft group", "raft leader"),
        ("this server leads", "scheduler leads"),
        ("leading: placement view loaded", "view loaded"),
        (" assign ", "first assign"),
    ];
    let mut found: Vec<Option<Duration>> = vec![None; STEPS.len()];
    for line in text.lines() {
        let Some(at) = line.split_whitespace().next().and_then(parse_utc) else {
            continue;
        };
        let Ok(after) = at.duration_since(killed) else {
            continue;
        };
        for (k, (needle, _)) in STEPS.iter().enumerate() {
            let hit = if *needle == "this server leads" {
                line.contains(needle) && !line.contains("raft group")
            } else {
                line.contains(needle)
            };
            if hit && found[k].is_none() {
                found[k] = Some(after);
            }
        }
    }
    found[0]?;
    Some(
        STEPS
            .iter()
            .zip(&found)
            .map(|((_, name), t)| {
                format!(
                    "{name} {}",
                    t.map_or_else(|| "?".to_owned(), |t| format!("+{}", dur(t)))
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_steps_of_a_take_over_are_read_from_the_log_after_the_kill() {
        let log = "\
2026-12-06T06:09:20.100000Z  INFO this server leads revision=5
2026-12-06T06:09:20.200000Z  INFO assign unit=old.service machine=m1
2026-12-06T06:09:27.749389Z  INFO this server leads the raft group term=3
2026-12-06T06:09:27.889611Z  INFO this server leads revision=2372
2026-12-06T06:09:29.696881Z  INFO leading: placement view loaded machines=100 units=100001 revision=2373
2026-12-06T06:09:29.900000Z  INFO assign unit=a-failover-0.service machine=m2
2026-12-06T06:09:29.950000Z  INFO assign unit=b.service machine=m3
";
        let killed = parse_utc("2026-12-06T06:09:27.200000Z").unwrap();
        assert_eq!(
            steps_in(log, killed).unwrap(),
            format!(
                "raft leader +{}, scheduler leads +{}, view loaded +{}, first assign +{}",
                dur(Duration::from_micros(549_389)),
                dur(Duration::from_micros(689_611)),
                dur(Duration::from_micros(2_496_881)),
                dur(Duration::from_micros(2_700_000)),
            )
        );
    }

    #[test]
    fn a_log_without_an_election_after_the_kill_has_no_steps() {
        let log = "2026-12-06T06:09:20.100000Z  INFO this server leads the raft group term=2\n";
        let killed = parse_utc("2026-12-06T06:09:27.200000Z").unwrap();
        assert_eq!(steps_in(log, killed), None);
    }
}
