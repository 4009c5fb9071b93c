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
//! 6. **New units**: `new_units` plain units submitted (launched) one at a
//!    time with everything running: the time from the API call's return
//!    until the unit is active on the host. systemd never loaded their
//!    files, so the agent needs no daemon-reload (systemd 246 and later);
//!    the passes that reloaded are counted from its journal.
//!
//! Container units stop with `StopSignal=KILL`: busybox's `sleep` as PID 1
//! ignores SIGTERM, and a restart would otherwise wait out `StopTimeout`.
//!
//! The pieces: `host` (the checks before a run, the units and the host
//! they run on), `reference` (step 1), `scenarios` (steps 2 to 5, the
//! agent measured) and `report` (rates, rows and the agent's journal read
//! as a timeline); this file runs them in order.
mod host;
mod reference;
mod report;
mod scenarios;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::agent_host::journal_tail;
use crate::hostbus::HostBus;
use crate::report::Row;
use crate::stats::dur;
use host::{Units, boot, preflight};
use reference::reference;
use scenarios::AgentRun;

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
    /// New plain units submitted one at a time once everything runs.
    pub new_units: usize,
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

#[cfg(test)]
mod tests {
    use super::host::{base_name, container_text, plain_text, rendered, spread};
    use super::report::Span;
    use super::*;
    use crate::agent_host::HOST_BIN;
    use flotilla_proto::UnitSpec;

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
