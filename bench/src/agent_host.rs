//! The real `flotilla agent` in a test host, run as an operator runs it
//! (B5, B8): the `flotilla` binary bound read-only into the host, a
//! `flotilla server` here that made a new cluster, a join string in a file
//! only root reads, and the agent as a `Type=notify` unit of the host's
//! systemd.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flotilla_api::client::Client;
use flotilla_testbed::{Host, HostOptions};

use crate::procs::ServerProc;

/// Where the binary is in the host.
pub const HOST_BIN: &str = "/opt/flotilla/bin/flotilla";
/// The agent's unit in the host.
pub const AGENT_UNIT: &str = "flotilla-agent";
/// Where the agent keeps its credential, the CA and the cluster it joined
/// (its default `--state-dir`).
pub const AGENT_STATE_DIR: &str = "/var/lib/flotilla-agent";
/// Where the host keeps the join string the agent is given.
pub const JOIN_TOKEN_FILE: &str = "/etc/flotilla/join.token";
/// How long a fresh server may take to have a leader.
const LEADER_LIMIT: Duration = Duration::from_secs(30);

/// Boots a test host named `name` with `flotilla` at [`HOST_BIN`], and
/// notes its PID 1 for `scripts/bench`'s cleanup.
pub fn boot(name: &str, flotilla: &Path) -> anyhow::Result<Host> {
    let host = Host::boot(
        name,
        &HostOptions {
            binds_ro: vec![(flotilla.to_owned(), PathBuf::from(HOST_BIN))],
            ..HostOptions::default()
        },
    )?;
    crate::procs::record_pid(host.leader_pid());
    Ok(host)
}

/// A fresh `flotilla server` with its data in `data_dir`, its log in
/// `log`, machines alive for `machine_ttl` without a heartbeat; and the
/// operator's client (HTTPS, the first admin token) once it has a leader.
pub async fn start_server(
    flotilla: &Path,
    data_dir: &Path,
    log: &Path,
    machine_ttl: &str,
) -> anyhow::Result<(ServerProc, Client)> {
    let args = vec![
        "--data-dir".to_owned(),
        data_dir.display().to_string(),
        "--machine-ttl".to_owned(),
        machine_ttl.to_owned(),
    ];
    let server = ServerProc::start(flotilla, &args, "info", log, None)?;
    let client = server.admin().await?.with_timeout(Duration::from_secs(30));
    let deadline = Instant::now() + LEADER_LIMIT;
    loop {
        let led = client
            .list_servers()
            .await
            .is_ok_and(|l| l.servers.iter().any(|s| s.leader));
        if led {
            return Ok((server, client));
        }
        if Instant::now() > deadline {
            bail!(
                "the server had no leader within {} s",
                LEADER_LIMIT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Readies `host` to join `server`'s cluster at the agent's next start,
/// as an operator readies a machine: a join string in a file only root
/// reads, and no state directory left from another cluster (the agent
/// refuses orders from a cluster other than the one it joined, and a
/// fresh server is a new cluster).
pub async fn join_cluster(host: &Host, server: &ServerProc) -> anyhow::Result<()> {
    host.run(&["rm", "-rf", AGENT_STATE_DIR])
        .context("cannot remove the agent's state directory in the host")?;
    let access = server.access().await?;
    let join = access
        .join_token(&[&server.endpoint], host.name(), 1)
        .await?;
    let root = PathBuf::from(format!("/proc/{}/root", host.leader_pid()));
    write_secret(
        &root.join(JOIN_TOKEN_FILE.trim_start_matches('/')),
        &join.join,
    )
}

/// Writes `text` to `path` (mode 0600), making its directory (0700).
fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(file, "{text}").with_context(|| format!("cannot write {}", path.display()))
}

/// Starts `flotilla agent` as a `Type=notify` unit of the host's systemd:
/// returns once it said `READY=1` (its machine registered). The first
/// time after [`join_cluster`] it joins with the join string given; after
/// that it uses the credential it keeps.
pub fn start_agent(host: &Host, endpoint: &str) -> anyhow::Result<()> {
    host.spawn_unit(
        AGENT_UNIT,
        &[
            "--property=Type=notify",
            // As deploy/flotilla-agent.service: only the agent's process
            // is signalled when it stops.
            "--property=KillMode=process",
            HOST_BIN,
            "agent",
            "--server",
            endpoint,
            "--join-token-file",
            JOIN_TOKEN_FILE,
        ],
    )
    .with_context(|| format!("the agent did not start:\n{}", journal_tail(host)))
}

/// Stops the agent (SIGTERM; its units keep running).
pub fn stop_agent(host: &Host) {
    let _ = host.output(&["systemctl", "stop", AGENT_UNIT]);
}

/// The last lines of the agent's journal.
pub fn journal_tail(host: &Host) -> String {
    unit_journal_tail(host, AGENT_UNIT)
}

/// The last lines of a unit's journal in the host.
pub fn unit_journal_tail(host: &Host, unit: &str) -> String {
    host.output(&[
        "journalctl",
        "--no-pager",
        "-o",
        "short-precise",
        "-u",
        unit,
        "-n",
        "30",
    ])
    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    .unwrap_or_default()
}
