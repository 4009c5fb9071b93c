//! The unit's commands: `flotilla shim run` (its `ExecStart=`), `stop`
//! (`ExecStop=`) and `cleanup` (`ExecStopPost=`), from the unit's options
//! to a [`Shim`] on Docker and the system bus; and what `reload` shares
//! with them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla_proto::UnitName;
use flotilla_proto::container::{Notify, exec_env};
use tokio::sync::mpsc;

use super::{
    BARRIER_TIMEOUT, FAILED_STATUS, NOTIFY_DIR, Notifier, SdNotify, Shim, ShimError, UNIT_DIR,
    Watchdog, WatchdogMode, stdio_sink, watchdog_interval,
};
use crate::container::auto_update::{AUTO_UPDATE_ENV, auto_update_interval};
use crate::container::cgroup::{Cgroups, SHIM_LEAF};
use crate::container::config::{self, UNIT_LABEL};
use crate::container::docker::Docker;
use crate::container::host_config;
use crate::container::pull::PullSettings;
use crate::container::runtime::ContainerRuntime;
use crate::container::secrets;
use crate::container::systemd::SystemdBus;

/// What `flotilla shim` needs to know about the unit.
#[derive(Debug, Clone)]
pub struct UnitOptions {
    /// What the unit's watchdog watches (`shim run --watchdog`).
    pub watchdog: WatchdogMode,
    /// The unit's name, such as `web.service`.
    pub unit: UnitName,
    /// Its rendered unit file; `None`: [`UNIT_DIR`]`/NAME` (or its
    /// template's for an instance).
    pub unit_file: Option<PathBuf>,
}

impl UnitOptions {
    pub(in crate::container) fn path(&self) -> PathBuf {
        self.unit_file
            .clone()
            .unwrap_or_else(|| config::unit_file_path(Path::new(UNIT_DIR), &self.unit))
    }
}

pub(in crate::container) fn tokio_runtime() -> Result<tokio::runtime::Runtime, ShimError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ShimError::Tokio)
}

/// Docker's client, with a request timeout that covers a stop.
pub(in crate::container) async fn docker(stop_timeout: Duration) -> Result<Docker, ShimError> {
    let timeout = (stop_timeout + Duration::from_secs(60)).max(Duration::from_secs(120));
    Ok(Docker::connect(&Docker::socket_from_env(), timeout).await?)
}

/// `flotilla shim run`: runs the unit's container until it exits; returns
/// the shim's exit status. A failure is left in the unit's status too.
pub fn run(options: &UnitOptions) -> Result<u8, ShimError> {
    let result = run_unit(options);
    if let Err(e) = &result {
        report_failure(&SdNotify, e);
    }
    result
}

/// Leaves why the shim failed in the unit's `STATUS=` ([`FAILED_STATUS`]),
/// which systemd keeps until the unit starts again, and waits until
/// systemd has read it (before the shim's exit). One line, and its
/// backslashes doubled: systemd unescapes the value.
pub fn report_failure<N: Notifier>(notifier: &N, e: &ShimError) {
    let reason = e
        .to_string()
        .replace(['\n', '\r'], " ")
        .replace('\\', "\\\\");
    notifier.notify(&format!("STATUS={FAILED_STATUS}{reason}"));
    notifier.barrier(BARRIER_TIMEOUT);
}

fn run_unit(options: &UnitOptions) -> Result<u8, ShimError> {
    let path = options.path();
    let mut spec = config::read_spec(&options.unit, &path)?;
    crate::container::object::resolve(&mut spec, path.parent().unwrap_or(Path::new(UNIT_DIR)))?;
    // `$` in Exec= and the other values Quadlet puts in ExecStart=, as
    // systemd substitutes them there: the shim's environment is the
    // service's.
    spec.exec = exec_env::substitute(&spec.exec, |name| std::env::var(name).ok());
    exec_env::substitute_values(&mut spec, |name| std::env::var(name).ok());
    let mut env_files = config::read_environment_files(&spec)?;
    env_files.extend(secrets::prepare(
        &spec,
        &options.unit,
        Path::new(secrets::SECRETS_DIR),
    )?);
    let host = host_config::read_host(&spec)?;
    let pid = std::process::id();
    let watchdog = watchdog_interval(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        pid,
    )
    .map(|interval| Watchdog {
        interval,
        mode: options.watchdog,
    });
    let notify_dir = (spec.notify == Notify::Container)
        .then(|| Path::new(NOTIFY_DIR).join(options.unit.as_str()));
    let auto_update = auto_update_interval(&spec, std::env::var(AUTO_UPDATE_ENV).ok().as_deref());
    tokio_runtime()?.block_on(async {
        let shim = Shim {
            unit: options.unit.clone(),
            runtime: docker(spec.stop_timeout).await?,
            spec,
            systemd: SystemdBus::default(),
            notifier: SdNotify,
            cgroups: Cgroups::default(),
            pid,
            watchdog,
            env_files,
            notify_dir: notify_dir.clone(),
            host,
            pulls: PullSettings::default(),
            auto_update,
        };
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(forward_stop_signals(tx));
        let exit = shim.run(rx, stdio_sink()).await;
        if let Some(dir) = notify_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        Ok(exit?.status())
    })
}

/// SIGTERM and SIGINT become stop requests.
async fn forward_stop_signals(tx: mpsc::Sender<()>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot handle SIGTERM: systemd's stop will kill the container");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        if tx.send(()).await.is_err() {
            return;
        }
    }
}

/// `flotilla shim stop` (the unit's `ExecStop=`): asks the unit's running
/// shim to stop the container, and waits until it has exited. Without a
/// running shim (it was killed), stops the container itself.
pub fn stop(options: &UnitOptions, container: &str) -> Result<(), ShimError> {
    let unit = options.unit.as_str();
    let stop_timeout = config::read_spec(&options.unit, &options.path())
        .map(|s| s.stop_timeout)
        .unwrap_or(flotilla_proto::container::DEFAULT_STOP_TIMEOUT);
    let cgroups = Cgroups::default();
    let own = cgroups.of("self")?;
    let unit_cgroup = Cgroups::unit_path(&own, unit)?;
    let me = std::process::id();
    let shims: Vec<u32> = cgroups
        .procs(&format!("{unit_cgroup}/{SHIM_LEAF}"))?
        .into_iter()
        .filter(|p| *p != me)
        .collect();
    if !shims.is_empty() {
        for pid in &shims {
            signal_term(*pid);
        }
        // The shim stops the container within its stop timeout; systemd's
        // TimeoutStopSec= bounds this wait too.
        let deadline = std::time::Instant::now() + stop_timeout + Duration::from_secs(5);
        while shims.iter().any(|p| cgroups.alive(*p)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        return Ok(());
    }
    tokio_runtime()?.block_on(async {
        let docker = docker(stop_timeout).await?;
        if let Some(c) = docker.inspect(container).await?
            && c.labels.get(UNIT_LABEL).map(String::as_str) == Some(unit)
            && c.running
        {
            tracing::info!("no shim runs for {unit}: stopping container {container} directly");
            docker.stop(&c.id, stop_timeout).await?;
        }
        Ok(())
    })
}

fn signal_term(pid: u32) {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    if let Err(e) = rustix::process::kill_process(pid, rustix::process::Signal::TERM) {
        tracing::warn!("cannot signal the shim {}: {e}", pid.as_raw_nonzero());
    }
}

/// `flotilla shim cleanup` (the unit's `ExecStopPost=`): removes the unit's
/// container if it is still there, so that none outlives its unit. A
/// container of that name not created for this unit is left alone.
pub fn cleanup(options: &UnitOptions, container: &str) -> Result<(), ShimError> {
    let unit = options.unit.as_str();
    tokio_runtime()?.block_on(async {
        let docker = docker(Duration::ZERO).await?;
        match cleanup_with(&docker, unit, container).await? {
            Cleanup::Removed(id) => {
                tracing::info!("removed the container {container} ({id}) of {unit}")
            }
            Cleanup::Foreign => tracing::info!(
                "left the container {container} alone: flotilla did not create it for {unit}"
            ),
            Cleanup::Absent => {}
        }
        Ok(())
    })
}

/// What [`cleanup_with`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleanup {
    /// The unit's container was there, and has been removed.
    Removed(String),
    /// A container of that name belongs to something else.
    Foreign,
    /// No container of that name.
    Absent,
}

/// [`cleanup`] with any engine.
pub async fn cleanup_with<R: ContainerRuntime>(
    runtime: &R,
    unit: &str,
    container: &str,
) -> Result<Cleanup, ShimError> {
    let Some(c) = runtime.inspect(container).await? else {
        return Ok(Cleanup::Absent);
    };
    if c.labels.get(UNIT_LABEL).map(String::as_str) != Some(unit) {
        return Ok(Cleanup::Foreign);
    }
    runtime.remove(&c.id).await?;
    Ok(Cleanup::Removed(c.id))
}
