//! B8: side by side with CoreOS fleet 1.0, both measured in one run on
//! the same kind of test hosts. fleet is never quoted: it runs here, built
//! from its source ([`crate::fleet`]).
//!
//! Each system gets `hosts` fresh test hosts (systemd-nspawn, this
//! machine's systemd) and runs alone on the machine: boot, measure, tear
//! down, then the other; over several rounds the order alternates (fleet
//! first in even rounds). Both use the same machine TTL (fleet's
//! `agent_ttl`, flotilla's `--machine-ttl`).
//!
//! - **fleet 1.0**: one etcd here with its v2 API (data on the real
//!   disk), `fleetd` in every host as `fleet.service` with its API on a
//!   TCP socket (`fleet.socket`), `fleetctl` against the first host's API
//!   (fleetctl's default driver, as fleet's own functional tests ran it).
//!   fleet has no server of its own: every fleetd is agent, API and engine
//!   candidate, and etcd is its store.
//! - **flotilla**: one `flotilla server` here (embedded store on the real
//!   disk), the real agent in every host, joined with a join string
//!   ([`crate::agent_host`]), and the `flotilla` CLI with the CA and the
//!   admin token.
//!
//! Then, for each:
//!
//! 1. **Schedule**: `units` plain units (`ExecStart=/bin/sleep infinity`,
//!    no constraint, so both spread them over the least-loaded hosts) are
//!    started with the CLI, `start --no-block` with every file at once.
//!    The figure is the time from the command's start until the API
//!    reports every unit `active` (fleet: `GET /fleet/v1/state`, what
//!    `fleetctl list-units` reads; flotilla: `GET /v1/state`), polled
//!    every 200 ms; when the hosts' systemd had them all is noted too, and
//!    at the end each unit must run on exactly one host, where the API
//!    says.
//! 2. **Footprint** at steady state, after 10 s idle: `VmRSS` of fleetd
//!    and of the flotilla agent on each host, of etcd and of the flotilla
//!    server; CPU time they used in those idle 10 s.
//! 3. **Listing**: `fleetctl list-units` and `flotilla list-units`, each
//!    process timed (wall), `listings` times; and the API calls alone.
//! 4. **Machine loss**: one host is crashed (SIGKILL of its systemd:
//!    [`Host::crash`]); the figure is the time until the API reports
//!    every unit active on the other hosts, and when their systemd had
//!    them all. For fleet the host killed neither serves fleetctl's API nor
//!    leads fleet's engine (flotilla's server is not on a host either).
//!
//! Nothing here asserts a time.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use flotilla_api::client::{Client, StateQuery};
use flotilla_testbed::Host;

use crate::agent_host::{self, AGENT_UNIT};
use crate::b8_rows::Measures;
use crate::fleet::{self, FleetApi};
use crate::hostbus::HostBus;
use crate::procs::{EtcdProc, ServerProc, cpu_in, cpu_of, rss_in, rss_of, rss_split_in};
use crate::report::Row;
use crate::stats::{Samples, dur};
use flotilla_testbed::free_port;

pub struct Config {
    /// The `flotilla` binary: the server, the agent in the hosts, the CLI.
    pub flotilla: PathBuf,
    /// A directory on the real disk: etcd's and the server's data, the
    /// unit files.
    pub work: PathBuf,
    pub units: usize,
    pub hosts: usize,
    pub rounds: usize,
    pub machine_ttl: Duration,
    /// Runs of each listing.
    pub listings: usize,
}

/// The units' names: `b8-0000.service` and on.
const PATTERN: &str = "b8-*";
const POLL: Duration = Duration::from_millis(200);
/// Idle time at steady state before the footprint is read.
const SETTLE: Duration = Duration::from_secs(10);
const CONVERGE_LIMIT: Duration = Duration::from_secs(900);
/// A convergence fails when nothing moved for this long.
const STALL_LIMIT: Duration = Duration::from_secs(180);
const START_LIMIT: Duration = Duration::from_secs(60);

/// The two systems.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Fleet,
    Flotilla,
}

impl System {
    pub fn label(self) -> &'static str {
        match self {
            System::Fleet => "fleet 1.0",
            System::Flotilla => "flotilla",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            System::Fleet => "fleet",
            System::Flotilla => "flot",
        }
    }
}

/// Which system runs first in round `round`: they alternate.
pub fn order(round: usize) -> [System; 2] {
    if round.is_multiple_of(2) {
        [System::Fleet, System::Flotilla]
    } else {
        [System::Flotilla, System::Fleet]
    }
}

pub async fn run(config: &Config) -> anyhow::Result<Vec<Row>> {
    preflight(config)?;
    let flotilla = config
        .flotilla
        .canonicalize()
        .with_context(|| format!("cannot find {}", config.flotilla.display()))?;
    let bins = tokio::task::spawn_blocking(flotilla_testbed::fleet::binaries)
        .await
        .context("building fleet failed")??
        .context("fleet's source is not on this machine (FLOTILLA_SKIP_FLEET_PEERS is set)")?;
    let work = config.work.join(format!("b8-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let result = rounds(config, &flotilla, &bins, &work).await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn preflight(config: &Config) -> anyhow::Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("B8 needs root (it boots systemd hosts): run it as root");
    }
    for (program, package) in [
        ("systemd-nspawn", "systemd-container"),
        ("nsenter", "util-linux"),
    ] {
        if !on_path(program) {
            bail!("B8 needs {program} (Debian's {package}; scripts/bench installs it as root)");
        }
    }
    if config.hosts < 3 {
        bail!("B8 needs 3 hosts at least: one serves fleetctl, one leads fleet's engine, one dies");
    }
    if config.units == 0 || config.rounds == 0 || config.listings == 0 {
        bail!("B8 needs at least one unit, one round and one listing");
    }
    if !config.flotilla.is_file() {
        bail!(
            "B8 runs {}: build it first (cargo build --release -p flotilla)",
            config.flotilla.display()
        );
    }
    Ok(())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// The unit file every system is given, under `b8-NNNN.service`.
pub fn unit_text(i: usize) -> String {
    format!("[Unit]\nDescription=B8 sleeper {i}\n\n[Service]\nExecStart=/bin/sleep infinity\n")
}

async fn rounds(
    config: &Config,
    flotilla: &Path,
    bins: &flotilla_testbed::fleet::FleetBinaries,
    work: &Path,
) -> anyhow::Result<Vec<Row>> {
    let units_dir = work.join("units");
    std::fs::create_dir_all(&units_dir)?;
    let names: Vec<String> = (0..config.units)
        .map(|i| format!("b8-{i:04}.service"))
        .collect();
    for (i, name) in names.iter().enumerate() {
        std::fs::write(units_dir.join(name), unit_text(i))?;
    }
    println!(
        "B8: {} units on {} hosts per system, machine TTL {} s, {} round(s), {} listings each",
        config.units,
        config.hosts,
        config.machine_ttl.as_secs(),
        config.rounds,
        config.listings
    );
    let mut fleet_runs = Vec::new();
    let mut flotilla_runs = Vec::new();
    for round in 0..config.rounds {
        for system in order(round) {
            let t = Instant::now();
            println!(
                "  round {} of {}: {}",
                round + 1,
                config.rounds,
                system.label()
            );
            // Names what this round leaves with --keep-logs.
            let tag = format!("b8-{}-{}", system.tag(), round + 1);
            let cluster = match system {
                System::Fleet => start_fleet(config, bins, work, round).await,
                System::Flotilla => start_flotilla(config, flotilla, work, round, &tag).await,
            }
            .with_context(|| format!("cannot start {}", system.label()))?;
            println!("    {} hosts up in {}", config.hosts, dur(t.elapsed()));
            let mut cluster = cluster;
            let m = measure(config, &mut cluster, &units_dir, &names, &tag)
                .await
                .with_context(|| format!("{}, round {}", system.label(), round + 1))?;
            drop(cluster);
            println!("    {}", m.describe());
            match system {
                System::Fleet => fleet_runs.push(m),
                System::Flotilla => flotilla_runs.push(m),
            }
        }
    }
    Ok(crate::b8_rows::rows(config, &fleet_runs, &flotilla_runs))
}

/// One system's hosts and what serves them. Dropped in field order: the
/// bus connections, the hosts, then the server or etcd.
struct Cluster {
    buses: Vec<Option<HostBus>>,
    hosts: Vec<Host>,
    /// Each host's machine id.
    machines: Vec<String>,
    side: Side,
}

enum Side {
    Fleet {
        api: FleetApi,
        fleetctl: PathBuf,
        etcd: EtcdProc,
    },
    Flotilla {
        client: Client,
        cli: PathBuf,
        /// `XDG_CONFIG_HOME` for the CLI: empty, so no configuration file
        /// of this machine's user is read.
        config_home: PathBuf,
        server: ServerProc,
    },
}

async fn start_fleet(
    config: &Config,
    bins: &flotilla_testbed::fleet::FleetBinaries,
    work: &Path,
    round: usize,
) -> anyhow::Result<Cluster> {
    let etcd = EtcdProc::start_with(work, &format!("b8-{round}"), &["--enable-v2"])?;
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    for i in 1..=config.hosts {
        let host = fleet::boot(&format!("b8-{}{i}", System::Fleet.tag()), &bins.fleetd)?;
        let port = free_port();
        fleet::start_fleetd(&host, &etcd.endpoint, config.machine_ttl, port)?;
        hosts.push(host);
        ports.push(port);
    }
    let api = FleetApi::new(ports[0]);
    let deadline = Instant::now() + START_LIMIT;
    loop {
        let seen = api.machines().await.map(|m| m.len());
        if matches!(seen, Ok(n) if n >= config.hosts) {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "fleet saw {seen:?} machines of {} within {START_LIMIT:?}",
                config.hosts
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Cluster::new(
        hosts,
        Side::Fleet {
            api,
            fleetctl: bins.fleetctl.clone(),
            etcd,
        },
    )
    .await
}

async fn start_flotilla(
    config: &Config,
    flotilla: &Path,
    work: &Path,
    round: usize,
    tag: &str,
) -> anyhow::Result<Cluster> {
    let dir = work.join(format!("flotilla-{round}"));
    std::fs::create_dir_all(&dir)?;
    let config_home = dir.join("xdg");
    std::fs::create_dir_all(&config_home)?;
    let (server, client) = agent_host::start_server(
        flotilla,
        &dir.join("data"),
        &dir.join(format!("{tag}-server.log")),
        &format!("{}s", config.machine_ttl.as_secs()),
    )
    .await?;
    let mut hosts = Vec::new();
    for i in 1..=config.hosts {
        let host = agent_host::boot(&format!("b8-{}{i}", System::Flotilla.tag()), flotilla)?;
        agent_host::join_cluster(&host, &server).await?;
        agent_host::start_agent(&host, &server.endpoint)?;
        hosts.push(host);
    }
    let deadline = Instant::now() + START_LIMIT;
    loop {
        let seen = client.all_machines().await.map(|m| m.len());
        if matches!(seen, Ok(n) if n >= config.hosts) {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the server saw {seen:?} machines of {} within {START_LIMIT:?}",
                config.hosts
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Cluster::new(
        hosts,
        Side::Flotilla {
            client,
            cli: flotilla.to_owned(),
            config_home,
            server,
        },
    )
    .await
}

impl Cluster {
    async fn new(hosts: Vec<Host>, side: Side) -> anyhow::Result<Cluster> {
        let mut buses = Vec::new();
        let mut machines = Vec::new();
        for host in &hosts {
            buses.push(Some(HostBus::connect(host.leader_pid()).await?));
            machines.push(host.machine_id()?);
        }
        Ok(Cluster {
            buses,
            hosts,
            machines,
            side,
        })
    }

    /// The host that dies: never the one fleetctl talks to (the first),
    /// nor the one leading fleet's engine; the last such. With it, the
    /// name of the host leading fleet's engine.
    async fn victim(&self) -> anyhow::Result<(usize, Option<String>)> {
        let leader = match &self.side {
            Side::Fleet { etcd, .. } => {
                fleet::engine_leader(fleet::port_of(&etcd.endpoint)?).await?
            }
            Side::Flotilla { .. } => None,
        };
        let leads = leader.and_then(|l| {
            let i = self.machines.iter().position(|m| *m == l)?;
            Some(self.hosts[i].name().to_owned())
        });
        let victim = (1..self.hosts.len())
            .rev()
            .find(|&i| leads.as_deref() != Some(self.hosts[i].name()))
            .context("no host to kill: every host serves the API or leads the engine")?;
        Ok((victim, leads))
    }

    /// The units the API reports `active`, with the machine of each
    /// report.
    async fn reported(&self) -> anyhow::Result<Vec<(String, String)>> {
        Ok(match &self.side {
            Side::Fleet { api, .. } => api
                .states()
                .await?
                .into_iter()
                .filter(|s| s.active == "active")
                .map(|s| (s.unit, s.machine))
                .collect(),
            Side::Flotilla { client, .. } => client
                .all_states(&StateQuery::default())
                .await?
                .into_iter()
                .filter(|s| s.active_state == "active")
                .map(|s| (s.unit.to_string(), s.machine.to_string()))
                .collect(),
        })
    }

    /// A user's CLI with `args`, run in `cwd`.
    fn cli(&self, args: &[&str], cwd: &Path) -> Command {
        let mut cmd = match &self.side {
            Side::Fleet { api, fleetctl, .. } => fleet::fleetctl(fleetctl, &api.endpoint()),
            Side::Flotilla {
                cli,
                server,
                config_home,
                ..
            } => {
                let mut cmd = Command::new(cli);
                cmd.arg("--endpoint")
                    .arg(&server.endpoint)
                    .arg("--ca")
                    .arg(server.data_dir.join(crate::access::CA_CERT))
                    .arg("--token-file")
                    .arg(server.data_dir.join(crate::access::ADMIN_TOKEN))
                    .env("XDG_CONFIG_HOME", config_home)
                    .env_remove("FLOTILLA_CLUSTER")
                    .env_remove("FLOTILLA_TOKEN")
                    .env_remove("FLOTILLA_TOKEN_FILE")
                    .env_remove("FLOTILLA_ENDPOINT")
                    .env_remove("FLOTILLA_CA");
                cmd
            }
        };
        cmd.args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// All unit states through the API, as the CLI's listing reads them;
    /// how many.
    async fn list_api(&self) -> anyhow::Result<usize> {
        Ok(match &self.side {
            Side::Fleet { api, .. } => api.states().await?.len(),
            Side::Flotilla { client, .. } => client.all_states(&StateQuery::default()).await?.len(),
        })
    }

    /// With `--keep-logs`, writes each host's agent journal (wall-clock
    /// times to the microsecond) beside the other logs, named by `tag`,
    /// and `since`, the wall-clock time to read them from.
    fn keep_journals(&self, tag: &str, since: SystemTime) {
        let Some(dir) = crate::procs::kept_logs() else {
            return;
        };
        let since = since.duration_since(UNIX_EPOCH).unwrap_or_default();
        let _ = std::fs::write(
            dir.join(format!("{tag}.start")),
            format!("{}.{:06}\n", since.as_secs(), since.subsec_micros()),
        );
        let unit = self.agent_unit();
        for host in &self.hosts {
            if let Ok(out) = host.output(&[
                "journalctl",
                "-u",
                unit,
                "-o",
                "short-iso-precise",
                "--no-pager",
            ]) {
                let _ = std::fs::write(
                    dir.join(format!("{tag}-{}.journal", host.name())),
                    &out.stdout,
                );
            }
        }
    }

    fn agent_unit(&self) -> &'static str {
        match self.side {
            Side::Fleet { .. } => fleet::SERVICE_UNIT,
            Side::Flotilla { .. } => AGENT_UNIT,
        }
    }

    /// etcd's pid for fleet, the server's for flotilla.
    fn server_pid(&self) -> Option<u32> {
        match &self.side {
            Side::Fleet { etcd, .. } => etcd.pid(),
            Side::Flotilla { server, .. } => Some(server.pid),
        }
    }

    /// Polls the API and the live hosts until both show every unit of
    /// `expected` active off the `dead` host; when each first did, from
    /// `t0`.
    async fn converge(
        &self,
        expected: &HashSet<String>,
        t0: Instant,
        dead: Option<usize>,
    ) -> anyhow::Result<(Duration, Duration)> {
        let dead_machine = dead.map(|d| self.machines[d].as_str());
        let (mut api_done, mut hosts_done) = (None, None);
        let (mut best, mut progress) = (0, Instant::now());
        let mut last_error = String::new();
        loop {
            let mut api_count = 0;
            match self.reported().await {
                Ok(reported) => {
                    api_count = reported
                        .iter()
                        .filter(|(u, m)| Some(m.as_str()) != dead_machine && expected.contains(u))
                        .map(|(u, _)| u)
                        .collect::<HashSet<_>>()
                        .len();
                }
                Err(e) => last_error = format!("; the API's last error: {e:#}"),
            }
            if api_done.is_none() && api_count >= expected.len() {
                api_done = Some(t0.elapsed());
            }
            let on_hosts = self.on_hosts(expected).await?.len();
            if hosts_done.is_none() && on_hosts >= expected.len() {
                hosts_done = Some(t0.elapsed());
            }
            if let (Some(a), Some(h)) = (api_done, hosts_done) {
                return Ok((a, h));
            }
            if api_count + on_hosts > best {
                best = api_count + on_hosts;
                progress = Instant::now();
            }
            if progress.elapsed() > STALL_LIMIT || t0.elapsed() > CONVERGE_LIMIT {
                bail!(
                    "after {}: the API reports {api_count} of {} units active, the hosts run {on_hosts}, and nothing moved for {}{last_error}",
                    dur(t0.elapsed()),
                    expected.len(),
                    dur(progress.elapsed())
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Which live host runs each unit of `expected` that is active: unit
    /// -> host indices.
    async fn on_hosts(
        &self,
        expected: &HashSet<String>,
    ) -> anyhow::Result<HashMap<String, Vec<usize>>> {
        let mut out: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, bus) in self.buses.iter().enumerate() {
            let Some(bus) = bus else { continue };
            for unit in bus.active(&[PATTERN]).await? {
                if expected.contains(&unit) {
                    out.entry(unit).or_default().push(i);
                }
            }
        }
        Ok(out)
    }

    /// Checks that every unit runs on exactly one live host, the one the
    /// API reports it active on; how many run on each host.
    async fn verify(&self, expected: &HashSet<String>) -> anyhow::Result<Vec<usize>> {
        let running = self.on_hosts(expected).await?;
        let reported = self.reported().await?;
        let mut spread = vec![0; self.hosts.len()];
        for unit in expected {
            let hosts = running.get(unit).map(Vec::as_slice).unwrap_or_default();
            let [host] = hosts else {
                bail!("{unit} runs on {} hosts", hosts.len());
            };
            let machine = &self.machines[*host];
            if !reported.iter().any(|(u, m)| u == unit && m == machine) {
                bail!(
                    "{unit} runs on {}, but the API does not report it active there",
                    self.hosts[*host].name()
                );
            }
            spread[*host] += 1;
        }
        Ok(spread)
    }

    /// Each host's agent (fleetd or the flotilla agent): resident memory
    /// and CPU time used so far.
    fn agents(&self) -> anyhow::Result<Vec<AgentUse>> {
        let unit = self.agent_unit();
        let script = format!(
            "pid=$(systemctl show -p MainPID --value {unit}); cat /proc/$pid/status; echo @@; cat /proc/$pid/stat"
        );
        self.hosts
            .iter()
            .map(|host| {
                let out = host.sh(&script)?;
                let (status, stat) = out.split_once("@@").unwrap_or((&out, ""));
                let rss = rss_in(status).map(|(rss, _)| rss);
                let cpu = cpu_in(stat);
                match (rss, rss_split_in(status), cpu) {
                    (Some(rss), Some((file, _)), Some(cpu)) => Ok(AgentUse { rss, file, cpu }),
                    _ => bail!("no memory or CPU figure for {unit} on {}", host.name()),
                }
            })
            .collect()
    }

    /// The server's (or etcd's) resident memory and CPU time so far.
    fn server(&self) -> anyhow::Result<(u64, Duration)> {
        let pid = self.server_pid().context("the server is not running")?;
        let rss = rss_of(pid).context("no memory figure for the server")?.0;
        let cpu = cpu_of(&format!("/proc/{pid}/stat")).context("no CPU figure for the server")?;
        Ok((rss, cpu))
    }
}

/// What an agent process uses: resident memory (`VmRSS`), the part of it
/// mapped from files (`RssFile`), and CPU time so far.
struct AgentUse {
    rss: u64,
    file: u64,
    cpu: Duration,
}

/// Runs a command to its end off the async threads; its output and wall
/// time.
async fn timed(mut cmd: Command) -> anyhow::Result<(Output, Duration)> {
    let what = format!("{:?}", cmd.get_program());
    tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        let out = cmd.output();
        (out, t.elapsed())
    })
    .await
    .context("a command's task failed")
    .and_then(|(out, took)| Ok((out.with_context(|| format!("cannot run {what}"))?, took)))
}

fn check(out: &Output, what: &str) -> anyhow::Result<()> {
    if out.status.success() {
        return Ok(());
    }
    bail!(
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

/// How many listed lines name one of `expected`.
fn listed(stdout: &[u8], expected: &HashSet<String>) -> usize {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|first| expected.contains(first))
        })
        .count()
}

async fn measure(
    config: &Config,
    cluster: &mut Cluster,
    units_dir: &Path,
    names: &[String],
    tag: &str,
) -> anyhow::Result<Measures> {
    let expected: HashSet<String> = names.iter().cloned().collect();
    let mut m = Measures::default();

    // 1. Schedule.
    let mut args = vec!["start", "--no-block"];
    args.extend(names.iter().map(String::as_str));
    let t0 = Instant::now();
    let wall_t0 = SystemTime::now();
    let (out, took) = timed(cluster.cli(&args, units_dir)).await?;
    check(&out, "start")?;
    m.submit_returned = took;
    (m.scheduled_api, m.scheduled_hosts) = cluster.converge(&expected, t0, None).await?;
    m.spread = cluster.verify(&expected).await?;
    cluster.keep_journals(tag, wall_t0);
    println!(
        "    scheduled: all active per the API +{}, on the hosts +{} (the CLI returned +{}), spread {:?}",
        dur(m.scheduled_api),
        dur(m.scheduled_hosts),
        dur(m.submit_returned),
        m.spread
    );

    // 2. Footprint, idle at steady state.
    let agents_before = cluster.agents()?;
    let server_before = cluster.server()?;
    tokio::time::sleep(SETTLE).await;
    let agents = cluster.agents()?;
    let server = cluster.server()?;
    m.agent_rss = agents.iter().map(|a| a.rss).collect();
    m.agent_file = agents.iter().map(|a| a.file).collect();
    m.agent_idle_cpu = agents
        .iter()
        .zip(&agents_before)
        .map(|(a, b)| a.cpu.saturating_sub(b.cpu))
        .collect();
    m.server_rss = server.0;
    m.server_idle_cpu = server.1.saturating_sub(server_before.1);
    m.settle = SETTLE;

    // 3. Listing.
    let mut cli = Samples::default();
    let mut api = Samples::default();
    for _ in 0..config.listings {
        let (out, took) = timed(cluster.cli(&["list-units"], units_dir)).await?;
        check(&out, "list-units")?;
        let n = listed(&out.stdout, &expected);
        if n != names.len() {
            bail!("list-units listed {n} of the {} units", names.len());
        }
        cli.push(took);
        let t = Instant::now();
        let n = cluster.list_api().await?;
        api.push(t.elapsed());
        if n < names.len() {
            bail!("the API listed {n} unit states of {}", names.len());
        }
    }
    m.list_cli = cli;
    m.list_api = api;

    // 4. Machine loss.
    let (victim, leads) = cluster.victim().await?;
    let on_victim = m.spread[victim];
    println!(
        "    killing {} ({on_victim} units){}",
        cluster.hosts[victim].name(),
        leads.map_or_else(String::new, |l| format!("; fleet's engine leads on {l}"))
    );
    cluster.buses[victim] = None;
    let t0 = Instant::now();
    cluster.hosts[victim].crash();
    (m.loss_api, m.loss_hosts) = cluster.converge(&expected, t0, Some(victim)).await?;
    cluster.verify(&expected).await?;
    m.victim_units = on_victim;
    println!(
        "    after the loss: all active per the API +{}, on the other hosts +{}",
        dur(m.loss_api),
        dur(m.loss_hosts)
    );
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_alternates() {
        assert_eq!(order(0), [System::Fleet, System::Flotilla]);
        assert_eq!(order(1), [System::Flotilla, System::Fleet]);
        assert_eq!(order(2), order(0));
    }

    #[test]
    fn the_unit_is_valid_for_flotilla() {
        let text = unit_text(7);
        let name = "b8-0007.service";
        assert!(flotilla_proto::UnitSpec::check(name, name, &text).is_ok());
        assert!(!text.contains("X-Fleet"));
    }

    #[test]
    fn listings_are_counted_by_their_first_word() {
        let expected: HashSet<String> = ["b8-0000.service", "b8-0001.service"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let fleetctl = b"UNIT\t\tMACHINE\t\tACTIVE\tSUB\nb8-0000.service\t4cea2dcc.../127.0.0.1\tactive\trunning\nb8-0001.service\t4cea2dcc.../127.0.0.1\tactive\trunning\n";
        assert_eq!(listed(fleetctl, &expected), 2);
        assert_eq!(listed(b"UNIT MACHINE\nother.service x\n", &expected), 0);
    }
}
