//! B5: agent convergence on real systemd. One test host (systemd-nspawn
//! booting this machine's systemd, with Docker and busybox inside, see
//! `flotilla-testbed`), a `flotilla server` here (embedded store on
//! tmpfs), and the real `flotilla agent` as a unit of the host's systemd.
//! The host's systemd is watched from outside over its bus socket
//! ([`crate::hostbus`]); the agent's journal says where its time went.
//!
//! 1. **Reference**, before any agent runs: what systemd itself allows on
//!    this host. The same `plain` plain units (`ExecStart=/bin/sleep
//!    infinity`) and `containers` container units (rendered as the agent
//!    renders them) are written to the host's `/run/systemd/system`
//!    directly and each set is started with bare D-Bus `StartUnit` calls
//!    (new unit files need no daemon-reload): one after the other, each
//!    waited for; then (after stopping them) concurrently, as the agent
//!    does, with at most 100 jobs in flight (the system bus refuses more
//!    than 128 pending calls on one connection). With them all running, a daemon-reload and a
//!    read of every unit's state the way the agent's pass reads it are
//!    timed, and one unit at a time is changed bare (file written,
//!    `Reload`, `RestartUnit` waited for). Then they are stopped and
//!    removed.
//! 2. **Cold start, plain units**: a fresh server holds the plain units,
//!    submitted and launched while no agent runs; the agent is started in
//!    the host with a join string in a file (`--join-token-file`), joins
//!    the cluster, and the figure is the time from its start until every unit
//!    is active in the host's systemd (polled every 50 ms with
//!    `ListUnitsByPatterns`), as units/s. When the server's API shows them
//!    all active is noted too.
//! 3. **Cold start, container units**: the agent is stopped, the container
//!    units are submitted, the agent is started again (its plain units
//!    keep running), and the same is timed for the containers.
//! 4. **Cold start, everything together**: the agent is stopped, the host
//!    emptied as by a reboot (units stopped, their files and the agent's
//!    record of what it started removed, systemd reloaded), the server
//!    replaced by a fresh one holding all the units (a new cluster, so the
//!    agent's state directory goes too and it gets a new join string), and
//!    the agent started: the time until all are active, its join included.
//! 5. **One change**: with everything running, one unit's file is changed
//!    (an `Environment=` line) and submitted with `PUT /v1/units/{name}`
//!    (`replace`). The figure is the time from the API call's return until
//!    the unit runs again on the host with a new `MainPID` (polled every
//!    5 ms over D-Bus), and the new file is checked. `changes` times on
//!    plain units, then `container_changes` times on container units.
//!
//! Container units stop with `StopSignal=KILL`: busybox's `sleep` as PID 1
//! ignores SIGTERM, and a restart would otherwise wait out `StopTimeout`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow, bail};
use flotilla_agent::container::render::render_service;
use flotilla_agent::systemd::{JobKind, SystemdManager};
use flotilla_api::client::{Client, StateQuery};
use flotilla_proto::wire::UnitPut;
use flotilla_proto::{UnitName, UnitSpec};
use flotilla_testbed::{CgroupDriver, Host};

use crate::agent_host::{self, AGENT_UNIT, HOST_BIN, journal_tail, start_agent, stop_agent};
use crate::hostbus::{HostBus, IN_FLIGHT, jobs_at_once, jobs_in_sequence};
use crate::procs::ServerProc;
use crate::report::{Row, met, time_ratio};
use crate::stats::{Samples, count, dur};

pub struct Config {
    /// The `flotilla` binary: the server here, the agent and the shim in
    /// the host.
    pub flotilla: PathBuf,
    /// Where the server's data goes (a tmpfs).
    pub data_parent: PathBuf,
    pub plain: usize,
    pub containers: usize,
    /// Changes of a plain unit.
    pub changes: usize,
    /// Changes of a container unit.
    pub container_changes: usize,
}

/// The units the agent runs; the reference's are `b5base-*`.
const AGENT_PATTERN: &str = "b5-*";
/// The agent's record, beside its unit files, of the content each unit
/// was started with (`agent/src/unit_dir.rs`).
const AGENT_RECORD: &str = ".flotilla-started";
/// The anchor: `systemd-run` takes ~22 ms per transient service.
const SYSTEMD_RUN_S: f64 = 0.022;
/// The anchor of a change: fleet's agent polled systemd every second.
const FLEET_POLL_S: f64 = 1.0;
/// The goal of a change.
const CHANGE_GOAL_S: f64 = 0.2;
/// "At the rate systemd allows", give or take the noise of one run.
const RATE_MARGIN: f64 = 0.9;
const HOST_POLL: Duration = Duration::from_millis(50);
const SERVER_POLL: Duration = Duration::from_millis(250);
const CHANGE_POLL: Duration = Duration::from_millis(5);
const CONVERGE_LIMIT: Duration = Duration::from_secs(900);
/// A cold start fails when no unit became active for this long.
const STALL_LIMIT: Duration = Duration::from_secs(120);
const CHANGE_LIMIT: Duration = Duration::from_secs(60);
/// After a change, before the next: the agent's report goes out.
const SETTLE: Duration = Duration::from_millis(300);

pub async fn run(config: &Config) -> anyhow::Result<Vec<Row>> {
    preflight(config)?;
    let flotilla = config
        .flotilla
        .canonicalize()
        .with_context(|| format!("cannot find {}", config.flotilla.display()))?;
    println!(
        "B5: one systemd host; {} plain + {} container units; {} + {} changes",
        config.plain, config.containers, config.changes, config.container_changes
    );
    let work = config
        .data_parent
        .join(format!("b5-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let result = measure(config, &flotilla, &work).await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn preflight(config: &Config) -> anyhow::Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("B5 needs root (it boots a systemd host): run it as root");
    }
    for (program, package) in [
        ("systemd-nspawn", "systemd-container"),
        ("dockerd", "docker.io"),
        ("nsenter", "util-linux"),
    ] {
        if !on_path(program) {
            bail!("B5 needs {program} (Debian's {package}; scripts/bench installs it as root)");
        }
    }
    if !["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .any(|p| Path::new(p).is_file())
    {
        bail!("B5 needs busybox (Debian's busybox-static) for its container image");
    }
    if config.plain == 0 {
        bail!("B5 needs at least one plain unit (--b5-plain)");
    }
    if !config.flotilla.is_file() {
        bail!(
            "B5 runs {} in its host: build it first (cargo build --release -p flotilla)",
            config.flotilla.display()
        );
    }
    Ok(())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// The units of the run, by kind.
struct Units {
    plain: Vec<String>,
    containers: Vec<String>,
}

impl Units {
    fn new(config: &Config) -> Units {
        Units {
            plain: (0..config.plain)
                .map(|i| format!("b5-p-{i:04}.service"))
                .collect(),
            containers: (0..config.containers)
                .map(|i| format!("b5-c-{i:04}.service"))
                .collect(),
        }
    }

    fn all(&self) -> Vec<String> {
        self.plain.iter().chain(&self.containers).cloned().collect()
    }
}

/// The reference's name for one of the agent's units.
fn base_name(name: &str) -> String {
    format!("b5base-{}", name.trim_start_matches("b5-"))
}

fn plain_text(i: usize, change: Option<usize>) -> String {
    let mut text = format!(
        "[Unit]\nDescription=B5 plain unit {i}\n\n[Service]\nExecStart=/bin/sleep infinity\n"
    );
    if let Some(k) = change {
        text.push_str(&format!("Environment=B5_CHANGE={k}\n"));
    }
    text
}

fn container_text(i: usize, change: Option<usize>) -> String {
    let mut text = format!(
        "[Unit]\nDescription=B5 container unit {i}\n\n[Container]\nImage=local/busybox:latest\nExec=sleep infinity\nStopSignal=KILL\n"
    );
    if let Some(k) = change {
        text.push_str(&format!("Environment=B5_CHANGE={k}\n"));
    }
    text
}

/// A unit as the agent would write it to systemd (without the agent's
/// marker lines, which are comments).
fn rendered(name: &str, text: &str) -> anyhow::Result<String> {
    let checked = UnitSpec::check(name, name, text)?;
    Ok(match render_service(&checked.spec, Path::new(HOST_BIN)) {
        Some(file) => file.to_string(),
        None => text.to_owned(),
    })
}

fn boot(flotilla: &Path) -> anyhow::Result<Host> {
    let host = agent_host::boot("b5-host", flotilla)?;
    host.start_docker(CgroupDriver::Cgroupfs)?;
    host.load_busybox()?;
    Ok(host)
}

async fn measure(config: &Config, flotilla: &Path, work: &Path) -> anyhow::Result<Vec<Row>> {
    let t = Instant::now();
    let host = boot(flotilla)?;
    println!(
        "  host {} booted, Docker (cgroupfs driver) up and busybox imported in {}",
        host.name(),
        dur(t.elapsed())
    );
    let bus = HostBus::connect(host.leader_pid()).await?;
    let units = Units::new(config);
    let reference = reference(config, &bus, &units).await?;
    let mut rows = vec![reference.row(config)];
    let agent = AgentRun {
        config,
        flotilla,
        work,
        host: &host,
        bus: &bus,
        units: &units,
        reference: &reference,
    };
    match agent.run(&mut rows).await {
        Ok(()) => {}
        Err(e) => {
            println!("  B5 with the agent FAILED: {e:#}");
            println!(
                "  the agent's journal, last lines:\n{}",
                journal_tail(&host)
            );
            rows.push(Row {
                id: "B5",
                case: "agent".to_owned(),
                figure: format!("FAILED: {e:#}"),
                anchor: String::new(),
                goal: String::new(),
                ratio: String::new(),
            });
        }
    }
    Ok(rows)
}

/// A set of units started together: how many, in how long.
#[derive(Debug, Clone, Copy)]
struct Rate {
    units: usize,
    took: Duration,
}

impl Rate {
    fn per_s(self) -> f64 {
        self.units as f64 / self.took.as_secs_f64().max(1e-9)
    }

    fn describe(self) -> String {
        format!(
            "{}/s ({} in {})",
            per_second(self.per_s()),
            self.units,
            dur(self.took)
        )
    }
}

/// A rate for people: one decimal below 100.
fn per_second(r: f64) -> String {
    if r < 100.0 {
        format!("{r:.1}")
    } else {
        count(r)
    }
}

/// What systemd itself allows on the host.
struct Reference {
    plain_seq: Rate,
    plain_batch: Rate,
    containers_seq: Option<Rate>,
    containers_batch: Option<Rate>,
    /// A `Reload` with the plain units running, and with all of them.
    reload_plain: Duration,
    reload_all: Duration,
    /// What the agent does before each pass: `LoadUnit` and the unit's
    /// and service's properties (`GetAll` twice), unit after unit, for
    /// every unit running.
    observe_all: Duration,
    change_plain: Samples,
    change_container: Samples,
    reloads: Samples,
}

impl Reference {
    fn best_plain(&self) -> f64 {
        self.plain_seq.per_s().max(self.plain_batch.per_s())
    }

    fn best_containers(&self) -> Option<f64> {
        match (self.containers_seq, self.containers_batch) {
            (Some(a), Some(b)) => Some(a.per_s().max(b.per_s())),
            _ => None,
        }
    }

    fn containers(&self) -> String {
        match (self.containers_seq, self.containers_batch) {
            (Some(s), Some(b)) => {
                format!(
                    "in sequence {}, concurrently {}",
                    s.describe(),
                    b.describe()
                )
            }
            _ => "none".to_owned(),
        }
    }

    fn row(&self, config: &Config) -> Row {
        let mut change_plain = self.change_plain.clone();
        let mut change_container = self.change_container.clone();
        let mut reloads = self.reloads.clone();
        Row {
            id: "B5",
            case: format!(
                "reference: bare D-Bus StartUnit on the same host, {} plain + {} container units",
                config.plain, config.containers
            ),
            figure: format!(
                "new unit files started without a daemon-reload (systemd loads them on StartUnit): plain in sequence {}, concurrently {}; containers {}; a daemon-reload with {} plain units running {}, with all {} {}; reading every unit's state as the agent's pass does (LoadUnit + 2 GetAll each, one unit after the other) {} for {}; one change done bare (write, Reload, RestartUnit) with all running: plain p50 {} max {}, container p50 {} max {} (the Reload alone p50 {})",
                self.plain_seq.describe(),
                self.plain_batch.describe(),
                self.containers(),
                config.plain,
                dur(self.reload_plain),
                config.plain + config.containers,
                dur(self.reload_all),
                dur(self.observe_all),
                config.plain + config.containers,
                dur(change_plain.percentile(50.0)),
                dur(change_plain.max()),
                dur(change_container.percentile(50.0)),
                dur(change_container.max()),
                dur(reloads.percentile(50.0)),
            ),
            anchor: "systemd-run ~22 ms per transient service (45/s)".to_owned(),
            goal: "reference for the rows below".to_owned(),
            ratio: format!(
                "plain, best of the two: {:.1}x systemd-run",
                self.best_plain() * SYSTEMD_RUN_S
            ),
        }
    }
}

async fn reference(config: &Config, bus: &HostBus, units: &Units) -> anyhow::Result<Reference> {
    let plain: Vec<String> = units.plain.iter().map(|n| base_name(n)).collect();
    let containers: Vec<String> = units.containers.iter().map(|n| base_name(n)).collect();
    let all: Vec<String> = plain.iter().chain(&containers).cloned().collect();
    let systemd = bus.jobs().await?;
    let result = reference_on(config, bus, &systemd, &plain, &containers).await;
    // Whatever happened: nothing of the reference stays for the agent.
    let cleanup = async {
        jobs_at_once(&systemd, JobKind::Stop, &all).await?;
        for name in &all {
            bus.remove_unit(name)?;
        }
        systemd.reload().await?;
        anyhow::Ok(())
    }
    .await;
    drop(systemd);
    let reference = result?;
    cleanup.context("cannot remove the reference's units")?;
    let left = bus.active(&["b5base-*"]).await?;
    if !left.is_empty() {
        bail!(
            "{} reference units still run after their removal",
            left.len()
        );
    }
    Ok(reference)
}

async fn reference_on(
    config: &Config,
    bus: &HostBus,
    systemd: &Arc<flotilla_agent::systemd::DbusSystemd>,
    plain: &[String],
    containers: &[String],
) -> anyhow::Result<Reference> {
    // New unit files need no daemon-reload: systemd reads a unit's file
    // when the unit is first asked for (and again, if it was not found,
    // once its directory changed).
    for (i, name) in plain.iter().enumerate() {
        bus.write_unit(name, &plain_text(i, None))?;
    }
    let plain_seq = Rate {
        units: plain.len(),
        took: jobs_in_sequence(systemd, JobKind::Start, plain).await?,
    };
    println!(
        "  reference: {} plain units started one after the other over D-Bus: {}",
        plain.len(),
        plain_seq.describe()
    );
    let t = Instant::now();
    systemd.reload().await?;
    let reload_plain = t.elapsed();
    jobs_at_once(systemd, JobKind::Stop, plain).await?;
    let plain_batch = Rate {
        units: plain.len(),
        took: jobs_at_once(systemd, JobKind::Start, plain).await?,
    };
    println!(
        "  reference: the same started concurrently ({IN_FLIGHT} jobs in flight at most): {} (a daemon-reload with them running: {})",
        plain_batch.describe(),
        dur(reload_plain)
    );

    for (i, name) in containers.iter().enumerate() {
        bus.write_unit(name, &rendered(name, &container_text(i, None))?)?;
    }
    let (mut containers_seq, mut containers_batch) = (None, None);
    if !containers.is_empty() {
        let seq = Rate {
            units: containers.len(),
            took: jobs_in_sequence(systemd, JobKind::Start, containers).await?,
        };
        println!(
            "  reference: {} container units started one after the other: {}",
            containers.len(),
            seq.describe()
        );
        jobs_at_once(systemd, JobKind::Stop, containers).await?;
        let batch = Rate {
            units: containers.len(),
            took: jobs_at_once(systemd, JobKind::Start, containers).await?,
        };
        println!(
            "  reference: the same started concurrently: {}",
            batch.describe(),
        );
        containers_seq = Some(seq);
        containers_batch = Some(batch);
    }
    let t = Instant::now();
    systemd.reload().await?;
    let reload_all = t.elapsed();
    let t = Instant::now();
    for name in plain.iter().chain(containers) {
        systemd.unit(name).await?;
    }
    let observe_all = t.elapsed();
    println!(
        "  reference: with all {} running, a daemon-reload takes {}, and reading every unit's state as the agent's pass does {}",
        plain.len() + containers.len(),
        dur(reload_all),
        dur(observe_all)
    );

    // One change at a time, bare, with everything running.
    let mut reloads = Samples::default();
    let mut change_plain = Samples::default();
    let mut change_container = Samples::default();
    let mut k = 0;
    for (n, names, samples, container) in [
        (config.changes, plain, &mut change_plain, false),
        (
            config.container_changes,
            containers,
            &mut change_container,
            true,
        ),
    ] {
        for (i, name) in spread(names, n) {
            k += 1;
            let name = &name;
            let content = if container {
                rendered(name, &container_text(i, Some(k)))?
            } else {
                plain_text(i, Some(k))
            };
            let t = Instant::now();
            bus.write_unit(name, &content)?;
            let r = Instant::now();
            systemd.reload().await?;
            reloads.push(r.elapsed());
            let result = systemd.job(JobKind::Restart, name).await?;
            if !result.is_success() {
                bail!("restarting {name} ended with {}", result.as_str());
            }
            samples.push(t.elapsed());
        }
    }
    println!(
        "  reference: one change done bare (write, Reload, RestartUnit): plain p50 {}, container p50 {}; Reload alone p50 {}",
        dur(change_plain.percentile(50.0)),
        dur(change_container.percentile(50.0)),
        dur(reloads.percentile(50.0))
    );
    Ok(Reference {
        plain_seq,
        plain_batch,
        containers_seq,
        containers_batch,
        reload_plain,
        reload_all,
        observe_all,
        change_plain,
        change_container,
        reloads,
    })
}

/// Everything the agent's phases share.
struct AgentRun<'a> {
    config: &'a Config,
    flotilla: &'a Path,
    work: &'a Path,
    host: &'a Host,
    bus: &'a HostBus,
    units: &'a Units,
    reference: &'a Reference,
}

/// How one cold start went, from the agent's start.
struct Converged {
    /// When each unit was first seen active on the host.
    active: HashMap<String, Duration>,
    /// When `systemd-run` returned: the agent said `READY=1`, which it
    /// does once its machine is registered.
    ready: Duration,
    /// When the API first showed every unit active.
    server_all: Option<Duration>,
    timeline: Timeline,
}

impl Converged {
    /// When the last of `names` became active.
    fn last(&self, names: &[String]) -> Duration {
        names
            .iter()
            .filter_map(|n| self.active.get(n))
            .max()
            .copied()
            .unwrap_or_default()
    }

    /// When the `p`-th percent of `names` were active.
    fn percentile(&self, names: &[String], p: f64) -> Duration {
        let mut s = Samples::default();
        for d in names.iter().filter_map(|n| self.active.get(n)) {
            s.push(*d);
        }
        s.percentile(p)
    }

    fn describe(&self, names: &[String]) -> String {
        format!(
            "agent ready (registered) +{}, first unit active +{}, half +{}, all +{}; the API showed all active {}",
            dur(self.ready),
            dur(self.percentile(names, 0.0)),
            dur(self.percentile(names, 50.0)),
            dur(self.last(names)),
            self.server_all.map_or_else(
                || "never (within 30 s)".to_owned(),
                |d| format!("+{}", dur(d))
            )
        )
    }
}

impl AgentRun<'_> {
    async fn run(&self, rows: &mut Vec<Row>) -> anyhow::Result<()> {
        let units = self.units;
        let reference = self.reference;
        let best_plain = reference.best_plain();

        // Plain units from cold.
        let (server, client) = self.start_server("a").await?;
        self.join_cluster(&server).await?;
        submit(&client, &self.texts(&units.plain, false)).await?;
        let cold = self.cold(&client, &server.endpoint, &units.plain).await?;
        let rate = Rate {
            units: units.plain.len(),
            took: cold.last(&units.plain),
        };
        println!(
            "  cold start, {} plain units: {} ({})",
            units.plain.len(),
            rate.describe(),
            cold.describe(&units.plain)
        );
        println!("  agent: {}", cold.timeline.describe());
        rows.push(cold_row(
            format!(
                "cold start: {} plain units on an empty host, submitted while no agent ran",
                units.plain.len()
            ),
            rate,
            &cold.describe(&units.plain),
            &cold.timeline,
            format!(
                "plain in sequence {}, concurrently {}",
                per_second(reference.plain_seq.per_s()),
                per_second(reference.plain_batch.per_s())
            ),
            best_plain,
        ));

        // Container units, the agent started again.
        if !units.containers.is_empty() {
            stop_agent(self.host);
            submit(&client, &self.texts(&units.containers, true)).await?;
            let cold = self
                .cold(&client, &server.endpoint, &units.containers)
                .await?;
            let rate = Rate {
                units: units.containers.len(),
                took: cold.last(&units.containers),
            };
            println!(
                "  cold start, {} container units ({} plain running): {} ({})",
                units.containers.len(),
                units.plain.len(),
                rate.describe(),
                cold.describe(&units.containers)
            );
            println!("  agent: {}", cold.timeline.describe());
            if let (Some(s), Some(b), Some(best)) = (
                reference.containers_seq,
                reference.containers_batch,
                reference.best_containers(),
            ) {
                rows.push(cold_row(
                    format!(
                        "cold start: {} container units submitted while the agent was stopped ({} plain units running), then the agent started",
                        units.containers.len(),
                        units.plain.len()
                    ),
                    rate,
                    &cold.describe(&units.containers),
                    &cold.timeline,
                    format!(
                        "containers in sequence {}, concurrently {}",
                        per_second(s.per_s()),
                        per_second(b.per_s())
                    ),
                    best,
                ));
            }
        }

        // Everything together, from an empty host and a fresh server.
        let all = units.all();
        self.empty_host(&all).await?;
        drop(server);
        let (server, client) = self.start_server("b").await?;
        self.join_cluster(&server).await?;
        let mut texts = self.texts(&units.plain, false);
        texts.extend(self.texts(&units.containers, true));
        submit(&client, &texts).await?;
        let cold = self.cold(&client, &server.endpoint, &all).await?;
        let rate = Rate {
            units: all.len(),
            took: cold.last(&all),
        };
        let split = format!(
            "plain all active +{}, containers all active +{}",
            dur(cold.last(&units.plain)),
            dur(cold.last(&units.containers))
        );
        println!(
            "  cold start, {} plain + {} container units together: {} ({split}; {})",
            units.plain.len(),
            units.containers.len(),
            rate.describe(),
            cold.describe(&all)
        );
        println!("  agent: {}", cold.timeline.describe());
        // systemd's own time for the same units: each kind at its best
        // rate, one after the other.
        let bare_s = units.plain.len() as f64 / best_plain
            + reference
                .best_containers()
                .map_or(0.0, |r| units.containers.len() as f64 / r);
        rows.push(cold_row(
            format!(
                "cold start: {} plain + {} container units together on an empty host, submitted while no agent ran",
                units.plain.len(),
                units.containers.len()
            ),
            rate,
            &format!("{split}; {}", cold.describe(&all)),
            &cold.timeline,
            format!(
                "the same units at the best bare rate of each kind: {}",
                dur(Duration::from_secs_f64(bare_s))
            ),
            all.len() as f64 / bare_s.max(1e-9),
        ));

        // One change at a time.
        let plain_changes: Vec<(usize, String)> = spread(&units.plain, self.config.changes);
        let container_changes: Vec<(usize, String)> =
            spread(&units.containers, self.config.container_changes);
        let mut k = 0;
        for (picked, container) in [(plain_changes, false), (container_changes, true)] {
            if picked.is_empty() {
                continue;
            }
            let changes = self.changes(&client, &picked, container, &mut k).await?;
            let kind = if container { "container" } else { "plain" };
            let bare = if container {
                reference.change_container.clone()
            } else {
                reference.change_plain.clone()
            };
            let row = changes.row(kind, all.len(), bare);
            println!("  {}: {}", row.case, row.figure);
            rows.push(row);
        }
        stop_agent(self.host);
        drop(server);
        Ok(())
    }

    fn texts(&self, names: &[String], container: bool) -> Vec<(String, String)> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let text = if container {
                    container_text(i, None)
                } else {
                    plain_text(i, None)
                };
                (n.clone(), text)
            })
            .collect()
    }

    /// A fresh `flotilla server` with its data on the tmpfs, and a client
    /// once it has a leader.
    async fn start_server(&self, tag: &str) -> anyhow::Result<(ServerProc, Client)> {
        agent_host::start_server(
            self.flotilla,
            &self.work.join(format!("server-{tag}")),
            &self.work.join(format!("b5-server-{tag}.log")),
            // Long enough that the agent's restarts keep the machine.
            "30s",
        )
        .await
    }

    /// Readies the host to join `server`'s cluster at the agent's next
    /// start ([`agent_host::join_cluster`]).
    async fn join_cluster(&self, server: &ServerProc) -> anyhow::Result<()> {
        agent_host::join_cluster(self.host, server).await
    }

    /// Starts the agent and waits until every unit of `names` is active on
    /// the host.
    async fn cold(
        &self,
        client: &Client,
        endpoint: &str,
        names: &[String],
    ) -> anyhow::Result<Converged> {
        let expected: Arc<HashSet<String>> = Arc::new(names.iter().cloned().collect());
        let t0 = Instant::now();
        let wall0 = SystemTime::now();
        let host_watch = tokio::spawn(watch_host(self.bus.clone(), expected.clone(), t0));
        let server_watch = tokio::spawn(watch_server(client.clone(), expected.clone(), t0));
        if let Err(e) = start_agent(self.host, endpoint) {
            host_watch.abort();
            server_watch.abort();
            return Err(e);
        }
        let ready = t0.elapsed();
        let active = match host_watch.await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                server_watch.abort();
                return Err(e);
            }
            Err(e) => {
                server_watch.abort();
                return Err(anyhow!("the host watch failed: {e}"));
            }
        };
        let mut server_watch = server_watch;
        let server_all =
            match tokio::time::timeout(Duration::from_secs(30), &mut server_watch).await {
                Ok(Ok(d)) => Some(d),
                _ => {
                    server_watch.abort();
                    None
                }
            };
        let timeline = Timeline::read(self.host, wall0);
        Ok(Converged {
            active,
            ready,
            server_all,
            timeline,
        })
    }

    /// Stops the agent, then every unit of `names` on the host, removes
    /// their files and reloads systemd.
    async fn empty_host(&self, names: &[String]) -> anyhow::Result<()> {
        stop_agent(self.host);
        let t = Instant::now();
        let systemd = self.bus.jobs().await?;
        jobs_at_once(&systemd, JobKind::Stop, names).await?;
        for name in names {
            self.bus.remove_unit(name)?;
        }
        // As after a reboot: the agent's record of what it started (in
        // /run, like the units) goes too.
        self.bus.remove_unit(AGENT_RECORD)?;
        systemd.reload().await?;
        drop(systemd);
        let left = self.bus.active(&[AGENT_PATTERN]).await?;
        if !left.is_empty() {
            bail!("{} units still run on the emptied host", left.len());
        }
        println!(
            "  host emptied: agent stopped, {} units stopped and their files removed in {}",
            names.len(),
            dur(t.elapsed())
        );
        Ok(())
    }

    /// Changes each of `picked` in turn and times it.
    async fn changes(
        &self,
        client: &Client,
        picked: &[(usize, String)],
        container: bool,
        k: &mut usize,
    ) -> anyhow::Result<Changes> {
        let wall0 = SystemTime::now();
        let mut out = Changes::default();
        let mut marks = Vec::new();
        for (i, name) in picked {
            *k += 1;
            let text = if container {
                container_text(*i, Some(*k))
            } else {
                plain_text(*i, Some(*k))
            };
            let path = self.bus.unit_path(name).await?;
            let (old, _) = self.bus.main_pid(&path).await?;
            let put = UnitPut {
                text: Some(text),
                replace: true,
                ..UnitPut::default()
            };
            let unit = UnitName::parse(name)?;
            let called = Instant::now();
            client
                .put_unit(&unit, &put)
                .await
                .with_context(|| format!("cannot change {name}"))?;
            let returned = Instant::now();
            let wall = SystemTime::now();
            out.put.push(returned - called);
            let pid = loop {
                let (pid, state) = self.bus.main_pid(&path).await?;
                if state == "active" && pid != 0 && pid != old {
                    break pid;
                }
                if returned.elapsed() > CHANGE_LIMIT {
                    bail!(
                        "{name} did not run again within {} of its change (MainPID {pid}, {state})",
                        dur(CHANGE_LIMIT)
                    );
                }
                tokio::time::sleep(CHANGE_POLL).await;
            };
            out.restarted.push(returned.elapsed());
            let file = self.bus.read_unit(name)?;
            if !file.contains(&format!("B5_CHANGE={k}\n")) {
                bail!("{name} runs again, but its file on the host is not the changed one");
            }
            // When the API shows the new process.
            let query = StateQuery {
                unit: Some(unit.clone()),
                machine: None,
            };
            loop {
                let seen = client.all_states(&query).await.is_ok_and(|states| {
                    states
                        .iter()
                        .any(|s| s.main_pid == Some(pid) && s.active_state == "active")
                });
                if seen {
                    out.server.push(returned.elapsed());
                    break;
                }
                if returned.elapsed() > Duration::from_secs(10) {
                    out.server_missed += 1;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            marks.push((name.clone(), wall));
            tokio::time::sleep(SETTLE).await;
        }
        // Where the time went, from the agent's journal.
        let lines = agent_journal(self.host, wall0);
        for (name, wall) in &marks {
            let after = |needle: &str| {
                lines
                    .iter()
                    .find(|l| l.at >= *wall && l.message.contains(needle))
                    .map(|l| l.at)
            };
            let wrote = after(&format!("wrote /run/systemd/system/{name}"));
            let done = after(&format!("restart {name}: "));
            if let (Some(w), Some(d)) = (wrote, done) {
                out.to_written
                    .push(w.duration_since(*wall).unwrap_or_default());
                out.written_to_done
                    .push(d.duration_since(w).unwrap_or_default());
            }
        }
        out.passes = lines
            .iter()
            .filter(|l| l.message.contains("reconciled"))
            .count();
        out.count = picked.len();
        Ok(out)
    }
}

/// The units of `names` to change: `n` of them, spread out.
fn spread(names: &[String], n: usize) -> Vec<(usize, String)> {
    let n = n.min(names.len());
    (0..n)
        .map(|j| {
            let i = j * names.len() / n;
            (i, names[i].clone())
        })
        .collect()
}

fn cold_row(
    case: String,
    rate: Rate,
    detail: &str,
    timeline: &Timeline,
    bare: String,
    best: f64,
) -> Row {
    let per_s = rate.per_s();
    Row {
        id: "B5",
        case,
        figure: format!(
            "{}/s: all {} active on the host {} after the agent started ({detail}); agent's journal: {}",
            per_second(per_s),
            rate.units,
            dur(rate.took),
            timeline.describe()
        ),
        anchor: format!(
            "systemd-run ~22 ms per transient service (45/s); bare D-Bus StartUnit on this host: {bare}"
        ),
        goal: format!(
            "converge at the rate systemd allows: >= {:.0}% of the best bare D-Bus rate ({}/s)",
            RATE_MARGIN * 100.0,
            per_second(best)
        ),
        ratio: format!(
            "{:.1}x systemd-run; {:.2}x the bare D-Bus rate ({})",
            per_s * SYSTEMD_RUN_S,
            per_s / best.max(1e-9),
            met(per_s >= RATE_MARGIN * best)
        ),
    }
}

/// The changes of one kind.
#[derive(Default)]
struct Changes {
    count: usize,
    /// From the API call's return to the unit running again on the host.
    restarted: Samples,
    /// The API call itself.
    put: Samples,
    /// From the API call's return until the API showed the new process.
    server: Samples,
    server_missed: usize,
    /// From the API call's return to the agent's "wrote" line.
    to_written: Samples,
    /// From the "wrote" line to the agent's "restart ...: done" line.
    written_to_done: Samples,
    passes: usize,
}

impl Changes {
    fn row(mut self, kind: &str, running: usize, mut bare: Samples) -> Row {
        let (p50, p99, max) = (
            self.restarted.percentile(50.0),
            self.restarted.percentile(99.0),
            self.restarted.max(),
        );
        let journal = if self.to_written.is_empty() {
            "not found".to_owned()
        } else {
            format!(
                "file written p50 {} (max {}) after the API call returned, then reload + restart done p50 {} (max {}); {} reconcile passes",
                dur(self.to_written.percentile(50.0)),
                dur(self.to_written.max()),
                dur(self.written_to_done.percentile(50.0)),
                dur(self.written_to_done.max()),
                self.passes
            )
        };
        Row {
            id: "B5",
            case: format!(
                "one change of a {kind} unit ({} changes, one at a time, {running} units running)",
                self.count
            ),
            figure: format!(
                "API call returned -> running again on the host with the new file: p50 {}, p99 {}, max {} (the PUT itself p50 {}; the API showed the new MainPID p50 {} after the return{}); agent's journal: {journal}; the same change done bare (write, Reload, RestartUnit): p50 {}",
                dur(p50),
                dur(p99),
                dur(max),
                dur(self.put.percentile(50.0)),
                dur(self.server.percentile(50.0)),
                if self.server_missed > 0 {
                    format!(", {} not within 10 s", self.server_missed)
                } else {
                    String::new()
                },
                dur(bare.percentile(50.0)),
            ),
            anchor: "fleet polled systemd every 1 s".to_owned(),
            goal: "one change applied < 200 ms".to_owned(),
            ratio: format!(
                "p99: {}",
                time_ratio(
                    p99.as_secs_f64(),
                    FLEET_POLL_S,
                    "fleet's 1 s poll",
                    CHANGE_GOAL_S
                )
            ),
        }
    }
}

/// Polls the host until every unit of `expected` is active; when each
/// first was, from `t0`.
async fn watch_host(
    bus: HostBus,
    expected: Arc<HashSet<String>>,
    t0: Instant,
) -> anyhow::Result<HashMap<String, Duration>> {
    let mut seen = HashMap::new();
    let mut progress = Duration::ZERO;
    loop {
        let now = t0.elapsed();
        for name in bus.active(&[AGENT_PATTERN]).await? {
            if expected.contains(&name) {
                seen.entry(name).or_insert_with(|| {
                    progress = now;
                    now
                });
            }
        }
        if seen.len() >= expected.len() {
            return Ok(seen);
        }
        if now.saturating_sub(progress) > STALL_LIMIT {
            bail!(
                "{} of {} units were active on the host {} after the agent started, and none became active in the last {}",
                seen.len(),
                expected.len(),
                dur(now),
                dur(STALL_LIMIT)
            );
        }
        if t0.elapsed() > CONVERGE_LIMIT {
            bail!(
                "only {} of {} units were active on the host {} after the agent started",
                seen.len(),
                expected.len(),
                dur(CONVERGE_LIMIT)
            );
        }
        tokio::time::sleep(HOST_POLL).await;
    }
}

/// Polls the API until it shows every unit of `expected` active.
async fn watch_server(client: Client, expected: Arc<HashSet<String>>, t0: Instant) -> Duration {
    loop {
        if let Ok(states) = client.all_states(&StateQuery::default()).await {
            let active = states
                .iter()
                .filter(|s| s.active_state == "active" && expected.contains(s.unit.as_str()))
                .map(|s| s.unit.as_str())
                .collect::<HashSet<_>>()
                .len();
            if active >= expected.len() {
                return t0.elapsed();
            }
        }
        tokio::time::sleep(SERVER_POLL).await;
    }
}

/// Submits and launches units given by name and text.
async fn submit(client: &Client, units: &[(String, String)]) -> anyhow::Result<()> {
    let units = units
        .iter()
        .map(|(name, text)| Ok((UnitName::parse(name)?, text.clone())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    crate::workload::launch_all(client, units).await
}

/// A line of the agent's journal.
struct Line {
    at: SystemTime,
    message: String,
}

/// The agent's journal since `since` (whole seconds before it).
fn agent_journal(host: &Host, since: SystemTime) -> Vec<Line> {
    let _ = host.output(&["journalctl", "--sync"]);
    let secs = since
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let Ok(out) = host.output(&[
        "journalctl",
        "--no-pager",
        "-o",
        "json",
        "-u",
        AGENT_UNIT,
        "--since",
        &format!("@{secs}"),
    ]) else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let message = v.get("MESSAGE")?.as_str()?.to_owned();
            let micros: u64 = v.get("__REALTIME_TIMESTAMP")?.as_str()?.parse().ok()?;
            let at = SystemTime::UNIX_EPOCH + Duration::from_micros(micros);
            (at >= since).then_some(Line { at, message })
        })
        .collect()
}

/// What the agent's journal says of a cold start, from the agent's start.
#[derive(Default)]
struct Timeline {
    registered: Option<Duration>,
    writes: Span,
    starts: Span,
    passes: Vec<(Duration, String)>,
    warnings: usize,
    first_warning: Option<String>,
}

/// The first and last of some lines, and how many.
#[derive(Default)]
struct Span {
    n: usize,
    first: Option<Duration>,
    last: Option<Duration>,
}

impl Span {
    fn add(&mut self, at: Duration) {
        self.n += 1;
        self.first = Some(self.first.map_or(at, |f| f.min(at)));
        self.last = Some(self.last.map_or(at, |l| l.max(at)));
    }

    fn describe(&self) -> String {
        match (self.first, self.last) {
            (Some(f), Some(l)) => format!("{} between +{} and +{}", self.n, dur(f), dur(l)),
            _ => "none".to_owned(),
        }
    }
}

impl Timeline {
    fn read(host: &Host, since: SystemTime) -> Timeline {
        let mut t = Timeline::default();
        for line in agent_journal(host, since) {
            let at = line.at.duration_since(since).unwrap_or_default();
            let m = &line.message;
            if m.contains("machine registered") {
                t.registered.get_or_insert(at);
            } else if m.contains("wrote /run/systemd/system/b5-") {
                t.writes.add(at);
            } else if m.contains("start b5-") && m.contains(": ") {
                t.starts.add(at);
            } else if let Some(i) = m.find("reconciled") {
                t.passes
                    .push((at, m[i + "reconciled".len()..].trim().to_owned()));
            }
            if m.contains("WARN") || m.contains("ERROR") {
                t.warnings += 1;
                t.first_warning.get_or_insert_with(|| m.trim().to_owned());
            }
        }
        t
    }

    fn describe(&self) -> String {
        let passes = self
            .passes
            .iter()
            .map(|(at, what)| format!("+{} ({what})", dur(*at)))
            .collect::<Vec<_>>()
            .join(", ");
        let mut out = format!(
            "registered +{}; files written: {}; start jobs done: {}; passes reported: {}",
            self.registered.map_or_else(|| "?".to_owned(), dur),
            self.writes.describe(),
            self.starts.describe(),
            if passes.is_empty() { "none" } else { &passes }
        );
        if self.warnings > 0 {
            out.push_str(&format!(
                "; {} warnings, the first: {}",
                self.warnings,
                self.first_warning.as_deref().unwrap_or_default()
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_units_are_valid_and_containers_render() {
        let plain = plain_text(3, Some(7));
        assert!(UnitSpec::check("b5-p-0003.service", "b5-p-0003.service", &plain).is_ok());
        assert_eq!(rendered("b5-p-0003.service", &plain).unwrap(), plain);
        let c = rendered("b5-c-0001.service", &container_text(1, Some(2))).unwrap();
        assert!(c.contains("[X-Container]"), "{c}");
        assert!(c.contains(HOST_BIN), "{c}");
        assert!(c.contains("B5_CHANGE=2"), "{c}");
    }

    #[test]
    fn names_and_spread() {
        assert_eq!(base_name("b5-p-0001.service"), "b5base-p-0001.service");
        let names: Vec<String> = (0..10).map(|i| format!("u{i}")).collect();
        let picked = spread(&names, 5);
        assert_eq!(
            picked.iter().map(|p| p.0).collect::<Vec<_>>(),
            [0, 2, 4, 6, 8]
        );
        assert_eq!(spread(&names, 20).len(), 10);
        assert!(spread(&[], 3).is_empty());
    }

    #[test]
    fn spans() {
        let mut s = Span::default();
        assert_eq!(s.describe(), "none");
        s.add(Duration::from_millis(30));
        s.add(Duration::from_millis(10));
        assert_eq!(s.n, 2);
        assert_eq!(s.first, Some(Duration::from_millis(10)));
        assert_eq!(s.last, Some(Duration::from_millis(30)));
    }
}
