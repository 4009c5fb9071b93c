//! B5's host: the checks before a run, the units it starts (their text,
//! and how the agent renders them), the host booted with Docker and
//! busybox, and the units submitted to the server.

use std::path::Path;

use anyhow::bail;
use flotilla_agent::container::render::render_service;
use flotilla_api::client::Client;
use flotilla_proto::{UnitName, UnitSpec};
use flotilla_testbed::{CgroupDriver, Host};

use super::Config;
use crate::agent_host::{self, HOST_BIN};

pub(super) fn preflight(config: &Config) -> anyhow::Result<()> {
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

pub(super) fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// The units of the run, by kind.
pub(super) struct Units {
    pub(super) plain: Vec<String>,
    pub(super) containers: Vec<String>,
}

impl Units {
    pub(super) fn new(config: &Config) -> Units {
        Units {
            plain: (0..config.plain)
                .map(|i| format!("b5-p-{i:04}.service"))
                .collect(),
            containers: (0..config.containers)
                .map(|i| format!("b5-c-{i:04}.service"))
                .collect(),
        }
    }

    pub(super) fn all(&self) -> Vec<String> {
        self.plain.iter().chain(&self.containers).cloned().collect()
    }
}

/// The reference's name for one of the agent's units.
pub(super) fn base_name(name: &str) -> String {
    format!("b5base-{}", name.trim_start_matches("b5-"))
}

pub(super) fn plain_text(i: usize, change: Option<usize>) -> String {
    let mut text = format!(
        "[Unit]\nDescription=B5 plain unit {i}\n\n[Service]\nExecStart=/bin/sleep infinity\n"
    );
    if let Some(k) = change {
        text.push_str(&format!("Environment=B5_CHANGE={k}\n"));
    }
    text
}

pub(super) fn container_text(i: usize, change: Option<usize>) -> String {
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
pub(super) fn rendered(name: &str, text: &str) -> anyhow::Result<String> {
    let checked = UnitSpec::check(name, name, text)?;
    Ok(match render_service(&checked.spec, Path::new(HOST_BIN)) {
        Some(file) => file.to_string(),
        None => text.to_owned(),
    })
}

pub(super) fn boot(flotilla: &Path) -> anyhow::Result<Host> {
    let host = agent_host::boot("b5-host", flotilla)?;
    host.start_docker(CgroupDriver::Cgroupfs)?;
    host.load_busybox()?;
    Ok(host)
}

/// Submits and launches units given by name and text.
pub(super) async fn submit(client: &Client, units: &[(String, String)]) -> anyhow::Result<()> {
    let units = units
        .iter()
        .map(|(name, text)| Ok((UnitName::parse(name)?, text.clone())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    crate::workload::launch_all(client, units).await
}

/// The units of `names` to change: `n` of them, spread out.
pub(super) fn spread(names: &[String], n: usize) -> Vec<(usize, String)> {
    let n = n.min(names.len());
    (0..n)
        .map(|j| {
            let i = j * names.len() / n;
            (i, names[i].clone())
        })
        .collect()
}
