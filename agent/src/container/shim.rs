//! `flotilla shim`: the main process of a container unit.
//!
//! [`run`] is the unit's `ExecStart=`. It reads the container's settings
//! from the unit file, creates the container inside the unit's cgroup,
//! hands systemd the container's process as the unit's main process,
//! streams its output to the journal, reports its health, and ends with the
//! container's exit status. [`stop`] is the unit's `ExecStop=`: it asks the
//! running shim to stop the container (the shim then uses the container's
//! `StopSignal=` and `StopTimeout=`). [`cleanup`] is its `ExecStopPost=`: it
//! removes the container if the shim could not (it was killed).
//!
//! The lifecycle of one run ([`Shim::run`]):
//!
//! 1. *prepare*: the shim moves itself into the `shim` leaf of the unit's
//!    cgroup ([`super::cgroup`]) and removes a leftover container of the
//!    unit (from a crash); a container of the same name that flotilla did
//!    not create for this unit is left alone, and the start fails.
//! 2. *pull*: the image is pulled as `Pull=` says ([`super::pull`]),
//!    within the unit's start timeout.
//! 3. *create*: the container is created with its cgroup in the unit's
//!    (cgroupfs driver: `cgroup_parent` = the unit's cgroup) or in the
//!    unit's slice (systemd driver); its output is attached and its health
//!    events subscribed to before it starts, so nothing is missed.
//! 4. *contain*: with the systemd driver, the container's processes are
//!    moved into the unit's `payload` leaf by systemd
//!    (`AttachProcessesToUnit`).
//! 5. *running*: `MAINPID=` the container's init, `STATUS=`, and `READY=1`
//!    per `Notify=`; every health transition updates `STATUS=`, and
//!    `HealthOnFailure=` acts on `unhealthy`; `WATCHDOG=1` is sent while the
//!    container is not unhealthy when the unit has `WatchdogSec=`; with
//!    `AutoUpdate=registry`, a newer image in the registry is pulled and
//!    the unit restarted ([`super::auto_update`]).
//! 6. *exit*: when the container exits, the shim takes `MAINPID=` back
//!    (systemd learns exit statuses only from its own children), removes
//!    the container and exits with its exit code, or 0 after a stop that
//!    systemd asked for.
//!
//! `STATUS=` is what the agent reads (the unit's `StatusText`):
//! `flotilla: container=<id> health=<none|starting|healthy|unhealthy>`
//! while the container runs, `flotilla: pulling=<image>` during a pull,
//! and [`FAILED_STATUS`] and the reason when the shim fails.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_proto::container::{ContainerSpec, HealthOnFailure, Notify, exec_env};
use flotilla_proto::{Health, UnitName};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::auto_update::{AUTO_UPDATE_ENV, UpdateCheck, auto_update_interval, next_tick};
use super::cgroup::{CgroupError, Cgroups, PAYLOAD_LEAF, SHIM_LEAF};
use super::config::{self, ConfigError, NOTIFY_SOCKET_NAME, UNIT_LABEL};
use super::docker::Docker;
use super::host_config::{self, HostError, HostFacts};
use super::pull::{self, PullError, PullSettings};
use super::runtime::{
    BoxStream, CgroupDriver, ContainerRuntime, Output, OutputStream, RuntimeError,
};
use super::secrets;
use super::systemd::{SystemdBus, SystemdError, UnitControl};

/// The exit status of the shim when it, not the container, failed (the
/// image is missing, Docker refused the container, the unit file is bad),
/// as `docker run` does.
pub const SHIM_FAILURE: u8 = 125;

/// Where systemd's runtime unit files are, and so the rendered units.
pub const UNIT_DIR: &str = "/run/systemd/system";

/// Where the shim of a `Notify=yes` unit makes the notify socket it passes
/// into the container: `<dir>/<unit>/notify`.
pub const NOTIFY_DIR: &str = "/run/flotilla/shim";

/// The start of the `STATUS=` a shim that failed leaves, followed by why:
/// the agent reports it as the unit's error.
pub const FAILED_STATUS: &str = "flotilla: failed: ";

/// systemd's default `TimeoutStartSec=`, assumed when systemd cannot be
/// asked for the unit's.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(90);

/// How long the shim waits for the rest of the container's output after it
/// exits.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// How long the shim waits for systemd to process its `MAINPID=`.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long after a failed Docker event stream the shim subscribes again.
const RESUBSCRIBE: Duration = Duration::from_secs(1);

/// How long the shim waits before it tries `AttachProcessesToUnit` again.
const ATTACH_RETRY: Duration = Duration::from_millis(20);

/// How many rounds of `AttachProcessesToUnit` may it take to move a
/// container whose processes keep forking.
const ATTACH_ROUNDS: usize = 20;

/// Why the shim failed.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Pull(#[from] PullError),
    #[error(transparent)]
    Systemd(#[from] SystemdError),
    #[error(
        "a container named {name} exists that flotilla did not create for {unit} (its label {UNIT_LABEL} is {found:?}): remove or rename it, or set ContainerName= in [Container]"
    )]
    ForeignContainer {
        name: String,
        unit: String,
        found: Option<String>,
    },
    #[error("the container's processes could not be moved into {unit}: {reason}")]
    Contain { unit: String, reason: String },
    #[error("cannot set up the notify socket {path}: {source}")]
    NotifySocket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the shim's runtime: {0}")]
    Tokio(std::io::Error),
    #[error(transparent)]
    Secrets(#[from] secrets::SecretsError),
}

/// Where the shim sends systemd notifications (`sd_notify`).
pub trait Notifier: Clone + Send + Sync + 'static {
    /// Sends `state`: newline-separated assignments such as `READY=1`.
    fn notify(&self, state: &str);

    /// Waits until systemd has processed every notification sent so far
    /// (sd_notify_barrier(3)), up to `timeout`; `false` if it did not say so.
    fn barrier(&self, timeout: Duration) -> bool;
}

/// `sd_notify` to `$NOTIFY_SOCKET`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SdNotify;

impl Notifier for SdNotify {
    fn notify(&self, state: &str) {
        crate::notify::notify(state);
    }

    fn barrier(&self, timeout: Duration) -> bool {
        match notify_barrier(timeout) {
            Ok(done) => done,
            Err(e) => {
                tracing::warn!("cannot wait for systemd to read the notifications: {e}");
                false
            }
        }
    }
}

/// sd_notify_barrier(3): sends `BARRIER=1` with the write end of a pipe,
/// which systemd closes once it has processed every earlier message, and
/// waits for that. `Ok(false)` without `$NOTIFY_SOCKET` or on a timeout.
pub fn notify_barrier(timeout: Duration) -> std::io::Result<bool> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    use rustix::net::{
        AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix,
        SocketFlags, SocketType, sendmsg_addr, socket_with,
    };
    use std::os::fd::AsFd;
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(name) => SocketAddrUnix::new_abstract_name(name.as_bytes())?,
        None => SocketAddrUnix::new(path.as_str())?,
    };
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let socket = socket_with(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let fds = [write.as_fd()];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(&fds));
    sendmsg_addr(
        &socket,
        &addr,
        &[std::io::IoSlice::new(b"BARRIER=1")],
        &mut control,
        SendFlags::empty(),
    )?;
    drop(write);
    let timeout = Timespec {
        tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    let mut fds = [PollFd::new(&read, PollFlags::IN)];
    // The write end's last copy closed (POLLHUP): systemd got this far.
    Ok(poll(&mut fds, Some(&timeout))? > 0)
}

/// Keeps what was sent, for tests.
#[derive(Debug, Clone, Default)]
pub struct RecordingNotifier(pub Arc<Mutex<Vec<String>>>);

impl RecordingNotifier {
    /// Every notification so far.
    pub fn sent(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Notifier for RecordingNotifier {
    fn notify(&self, state: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(state.to_owned());
    }

    fn barrier(&self, _timeout: Duration) -> bool {
        self.notify("BARRIER=1");
        true
    }
}

/// Where the container's output goes.
pub type OutputSink = Box<dyn FnMut(Output) + Send + 'static>;

/// Writes the container's stdout to the shim's stdout and its stderr to the
/// shim's stderr: the journal, under systemd.
pub fn stdio_sink() -> OutputSink {
    Box::new(|output: Output| {
        // A write error (the journal went away) is not worth dying for.
        let _ = match output.stream {
            OutputStream::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(&output.bytes).and_then(|()| out.flush())
            }
            OutputStream::Stderr => {
                let mut err = std::io::stderr().lock();
                err.write_all(&output.bytes).and_then(|()| err.flush())
            }
        };
    })
}

/// The `STATUS=` text the agent reads.
pub fn status_text(container: &str, health: Health) -> String {
    format!(
        "flotilla: container={container} health={}",
        health_word(health)
    )
}

/// `none`, `starting`, `healthy` or `unhealthy`.
pub fn health_word(health: Health) -> &'static str {
    match health {
        Health::None => "none",
        Health::Starting => "starting",
        Health::Healthy => "healthy",
        Health::Unhealthy => "unhealthy",
    }
}

/// What the shim does when the container turns unhealthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnhealthyAction {
    /// Only report it (`HealthOnFailure=none`).
    Report,
    /// Kill the container: the unit fails with status 137 and `Restart=`
    /// applies (`kill`).
    Kill,
    /// Ask systemd to stop the unit, which does not restart it (`stop`).
    StopUnit,
    /// Ask systemd to restart the unit: a new container, whatever
    /// `Restart=` says (`restart`).
    RestartUnit,
}

impl UnhealthyAction {
    /// The action for a unit's `HealthOnFailure=`.
    pub fn for_policy(policy: HealthOnFailure) -> UnhealthyAction {
        match policy {
            HealthOnFailure::None => UnhealthyAction::Report,
            HealthOnFailure::Kill => UnhealthyAction::Kill,
            HealthOnFailure::Stop => UnhealthyAction::StopUnit,
            HealthOnFailure::Restart => UnhealthyAction::RestartUnit,
        }
    }
}

/// The unit's exit status for a container that exited with `code`: its
/// code, or 0 when the stop was asked for (a stopped unit is inactive, not
/// failed, whatever signal ended the container).
pub fn exit_status(code: i64, stop_requested: bool) -> u8 {
    if stop_requested {
        0
    } else {
        u8::try_from(code).unwrap_or(255)
    }
}

/// The watchdog's ping interval from systemd's `WATCHDOG_USEC` (half of
/// it, as sd_watchdog_enabled(3) advises); `None` without a watchdog or
/// when it is meant for another process (`WATCHDOG_PID`).
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.parse::<u32>().ok() != Some(own_pid)
    {
        return None;
    }
    let usec: u64 = usec?.parse().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(usec / 2))
}

/// What the unit's watchdog (`WatchdogSec=`) watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watchdog {
    /// How often to send `WATCHDOG=1`: see [`watchdog_interval`].
    pub interval: Duration,
    /// What a missed ping means.
    pub mode: WatchdogMode,
}

/// What the unit's watchdog watches: flotilla's own (rendered when the unit
/// sets no `WatchdogSec=`) or the user's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WatchdogMode {
    /// The user's `WatchdogSec=`: pings while the container is not
    /// unhealthy, so an unhealthy container fails the unit.
    #[default]
    Health,
    /// flotilla's: pings while the shim lives, whatever the health, so a
    /// shim that was killed fails the unit (and its cleanup removes the
    /// container) instead of leaving the container running unsupervised.
    Liveness,
}

/// How one run went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// The container's id.
    pub container: String,
    /// The container's exit code.
    pub code: i64,
    /// Whether systemd (or a health policy) asked for the stop.
    pub stop_requested: bool,
}

impl Exit {
    /// The shim's own exit status.
    pub fn status(&self) -> u8 {
        exit_status(self.code, self.stop_requested)
    }
}

/// One run of a container unit, with its seams: the engine, systemd, the
/// notify socket and the cgroup tree.
pub struct Shim<R, U, N> {
    /// The unit the shim runs as.
    pub unit: UnitName,
    /// Its `[X-Container]` section.
    pub spec: ContainerSpec,
    /// Docker.
    pub runtime: R,
    /// systemd's manager.
    pub systemd: U,
    /// `sd_notify`.
    pub notifier: N,
    /// `/proc` and the cgroup tree.
    pub cgroups: Cgroups,
    /// The shim's PID (the process that moves into the `shim` leaf).
    pub pid: u32,
    /// `WATCHDOG=1` every so often, when systemd asks for it.
    pub watchdog: Option<Watchdog>,
    /// `NAME=value` lines from the unit's `EnvironmentFile=`s.
    pub env_files: Vec<String>,
    /// For `Notify=yes`: the host directory of the notify socket passed
    /// into the container.
    pub notify_dir: Option<PathBuf>,
    /// What the container's host settings need from the host.
    pub host: HostFacts,
    /// Where pulls take their locks and find the host's credentials.
    pub pulls: PullSettings,
    /// With `AutoUpdate=registry`: how often to ask the registry for a
    /// newer image.
    pub auto_update: Option<Duration>,
}

/// Health and readiness as the shim last reported them.
#[derive(Debug)]
struct Reported {
    container: String,
    health: Health,
    ready: bool,
}

/// A call to the engine in flight.
type Pending<'a, T> = Pin<Box<dyn Future<Output = Result<T, RuntimeError>> + Send + 'a>>;

/// Awaits the future in `slot` if there is one, else never resolves.
async fn maybe<F: Future + Unpin>(slot: &mut Option<F>) -> F::Output {
    match slot {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

impl<R: ContainerRuntime, U: UnitControl, N: Notifier> Shim<R, U, N> {
    /// Runs the container until it exits. A request on `stop` (SIGTERM)
    /// stops it with its stop signal and timeout. Output goes to `sink`.
    pub async fn run(&self, stop: mpsc::Receiver<()>, sink: OutputSink) -> Result<Exit, ShimError> {
        let unit = self.unit.as_str();
        // From the very start: creating a container or stopping one may
        // take longer than the watchdog's period.
        let suspended = Arc::new(AtomicBool::new(false));
        let _watchdog = self.watchdog.map(|w| WatchdogTask {
            task: tokio::spawn(ping_watchdog(
                w.interval,
                self.notifier.clone(),
                suspended.clone(),
            )),
        });
        let engine = self.runtime.info().await?;
        let own = self.cgroups.of("self")?;
        let unit_cgroup = Cgroups::unit_path(&own, unit)?;
        self.cgroups
            .enter(&format!("{unit_cgroup}/{SHIM_LEAF}"), self.pid)?;
        self.replace_leftover().await?;
        self.pull().await?;
        let cgroup_parent = match engine.cgroup_driver {
            CgroupDriver::Cgroupfs => unit_cgroup.clone(),
            CgroupDriver::Systemd => Cgroups::slice_of(&unit_cgroup),
        };
        let notify_socket = match (&self.spec.notify, &self.notify_dir) {
            (Notify::Container, Some(dir)) => Some(notify_socket(dir)?),
            _ => None,
        };
        let mut config = config::create_config(
            &self.spec,
            &self.unit,
            self.env_files.clone(),
            cgroup_parent,
            notify_socket.as_ref().and(self.notify_dir.as_deref()),
        );
        host_config::apply(&self.spec, &self.host, &mut config);
        let id = self.runtime.create(&config).await?;
        tracing::info!(
            "created container {} ({id}) with Docker {} ({} cgroup driver)",
            config.name,
            engine.version,
            match engine.cgroup_driver {
                CgroupDriver::Cgroupfs => "cgroupfs",
                CgroupDriver::Systemd => "systemd",
            }
        );
        let started = self
            .start(
                &id,
                (engine.cgroup_driver, &unit_cgroup),
                stop,
                sink,
                notify_socket,
                &suspended,
            )
            .await;
        match started {
            Ok(exit) => Ok(exit),
            Err(e) => {
                if let Err(r) = self.runtime.remove(&id).await {
                    tracing::warn!("cannot remove container {id}: {r}");
                }
                Err(e)
            }
        }
    }

    /// Makes the image ready as `Pull=` says, within the unit's start
    /// timeout.
    async fn pull(&self) -> Result<(), ShimError> {
        let unit = self.unit.as_str();
        let image = &self.spec.image;
        let start_timeout = async {
            match self.systemd.start_timeout(unit).await {
                Ok(timeout) => timeout,
                Err(e) => {
                    tracing::warn!(
                        "{e}; assuming systemd's default start timeout of {}s",
                        DEFAULT_START_TIMEOUT.as_secs()
                    );
                    Some(DEFAULT_START_TIMEOUT)
                }
            }
        };
        let pulling = || {
            self.notifier
                .notify(&format!("STATUS=flotilla: pulling={image}"));
        };
        pull::ensure_image(
            &self.runtime,
            image,
            &self.spec.pull,
            &self.pulls,
            start_timeout,
            pulling,
        )
        .await?;
        Ok(())
    }

    /// Removes a container of this unit left by a crash; refuses to touch
    /// someone else's.
    async fn replace_leftover(&self) -> Result<(), ShimError> {
        let name = &self.spec.container_name;
        let Some(old) = self.runtime.inspect(name).await? else {
            return Ok(());
        };
        let label = old.labels.get(UNIT_LABEL);
        if label.map(String::as_str) != Some(self.unit.as_str()) {
            return Err(ShimError::ForeignContainer {
                name: name.clone(),
                unit: self.unit.as_str().to_owned(),
                found: label.cloned(),
            });
        }
        tracing::info!("replacing the leftover container {name} ({})", old.id);
        self.runtime.remove(&old.id).await?;
        Ok(())
    }

    async fn start(
        &self,
        id: &str,
        (driver, unit_cgroup): (CgroupDriver, &str),
        mut stop: mpsc::Receiver<()>,
        sink: OutputSink,
        notify_socket: Option<tokio::net::UnixDatagram>,
        suspended: &AtomicBool,
    ) -> Result<Exit, ShimError> {
        let output = self.runtime.attach(id).await?;
        let mut events = self.runtime.health_events(id);
        self.runtime.start(id).await?;
        let output = tokio::spawn(forward_output(output, sink));
        let mut wait: Pending<'_, i64> = Box::pin(self.runtime.wait(id));
        let info = self.runtime.inspect(id).await?;
        let mut reported = Reported {
            container: id.to_owned(),
            health: Health::None,
            ready: false,
        };
        let mut stop_requested = false;
        if let Some(info) = info.filter(|i| i.running && i.pid > 0) {
            if driver == CgroupDriver::Systemd {
                self.contain(unit_cgroup, info.pid).await?;
            }
            reported.health = info.health;
            let mut state = format!(
                "MAINPID={}\nSTATUS={}",
                info.pid,
                status_text(id, info.health)
            );
            if self.ready_now(info.health) {
                reported.ready = true;
                state.push_str("\nREADY=1");
            }
            self.notifier.notify(&state);
            tracing::info!("container {id} runs as PID {}", info.pid);
        }
        let mut stopping: Option<Pending<'_, ()>> = None;
        let mut update_every = self.auto_update.map(|every| {
            let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks
        });
        let mut updating: Option<UpdateCheck<'_>> = None;
        let mut resubscribe: Option<Instant> = None;
        let mut proxy_buf = vec![0u8; 4096];
        let code = loop {
            tokio::select! {
                code = &mut wait => match code {
                    Ok(code) => break code,
                    Err(e) => {
                        // The engine dropped the wait: ask again, unless the
                        // container is already gone.
                        tracing::warn!("waiting for container {id}: {e}");
                        match self.runtime.inspect(id).await {
                            Ok(Some(i)) if !i.running => break i.exit_code.unwrap_or(255),
                            Ok(None) => break 255,
                            _ => {
                                tokio::time::sleep(RESUBSCRIBE).await;
                                wait = Box::pin(self.runtime.wait(id));
                            }
                        }
                    }
                },
                Some(()) = stop.recv(), if !stop_requested => {
                    tracing::info!(
                        "stopping container {id} (stop signal, then SIGKILL after {}s)",
                        self.spec.stop_timeout.as_secs()
                    );
                    stop_requested = true;
                    stopping = Some(Box::pin(self.runtime.stop(id, self.spec.stop_timeout)));
                }
                result = maybe(&mut stopping) => {
                    stopping = None;
                    if let Err(e) = result {
                        tracing::warn!("cannot stop container {id}: {e}; killing it");
                        if let Err(e) = self.runtime.kill(id, "SIGKILL").await {
                            tracing::warn!("cannot kill container {id}: {e}");
                        }
                    }
                }
                event = events.next() => match event {
                    Some(Ok(health)) => {
                        self.gate_watchdog(suspended, health);
                        if let Some(request) = self.health_changed(&mut reported, health).await {
                            stop_requested |= request;
                            if request && stopping.is_none() {
                                stopping = Some(Box::pin(self.runtime.stop(id, self.spec.stop_timeout)));
                            }
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!("health events of container {id}: {e}");
                        events = Box::pin(futures_util::stream::pending());
                        resubscribe = Some(Instant::now() + RESUBSCRIBE);
                    }
                    None => {
                        events = Box::pin(futures_util::stream::pending());
                        resubscribe = Some(Instant::now() + RESUBSCRIBE);
                    }
                },
                () = async { tokio::time::sleep_until(resubscribe.unwrap_or_else(Instant::now)).await },
                    if resubscribe.is_some() => {
                    resubscribe = None;
                    events = self.runtime.health_events(id);
                    // Catch up with what happened while not subscribed.
                    if let Ok(Some(info)) = self.runtime.inspect(id).await {
                        self.gate_watchdog(suspended, info.health);
                        if self.health_changed(&mut reported, info.health).await == Some(true)
                            && stopping.is_none()
                        {
                            stop_requested = true;
                            stopping = Some(Box::pin(self.runtime.stop(id, self.spec.stop_timeout)));
                        }
                    }
                }
                () = next_tick(&mut update_every), if updating.is_none() && !stop_requested => {
                    updating = Some(Box::pin(self.check_update()));
                }
                result = maybe(&mut updating) => {
                    updating = None;
                    self.updated(result).await;
                }
                received = receive(notify_socket.as_ref(), &mut proxy_buf),
                    if notify_socket.is_some() => {
                    if let Ok(n) = received
                        && !reported.ready
                        && String::from_utf8_lossy(&proxy_buf[..n]).lines().any(|l| l == "READY=1")
                    {
                        reported.ready = true;
                        tracing::info!("the container reports ready");
                        self.notifier.notify("READY=1");
                    }
                }
            }
        };
        // systemd learns exit statuses only from its own children: the shim
        // becomes the main process again before it exits with the code, and
        // waits until systemd has taken that in (a MAINPID= read after the
        // shim exited would be refused, and the status lost).
        self.notifier.notify(&format!("MAINPID={}", self.pid));
        if !self.notifier.barrier(BARRIER_TIMEOUT) {
            tracing::warn!(
                "systemd did not confirm the shim as main process: the exit status may be lost"
            );
        }
        tracing::info!("container {id} exited with status {code}");
        if tokio::time::timeout(OUTPUT_DRAIN, output).await.is_err() {
            tracing::warn!("the output of container {id} did not end with it");
        }
        if let Err(e) = self.runtime.remove(id).await {
            tracing::warn!("cannot remove container {id}: {e} (the unit's cleanup retries)");
        }
        Ok(Exit {
            container: id.to_owned(),
            code,
            stop_requested,
        })
    }

    /// Suspends the watchdog's pings while the container is unhealthy, if
    /// that is what it watches.
    fn gate_watchdog(&self, suspended: &AtomicBool, health: Health) {
        if self
            .watchdog
            .is_some_and(|w| w.mode == WatchdogMode::Health)
        {
            suspended.store(health == Health::Unhealthy, Ordering::Relaxed);
        }
    }

    /// Whether the unit is ready as soon as the container runs with this
    /// health.
    fn ready_now(&self, health: Health) -> bool {
        match self.spec.notify {
            Notify::Running => true,
            Notify::Healthy => health == Health::Healthy,
            Notify::Container => false,
        }
    }

    /// Reports a health transition and acts on it. Returns `Some(true)`
    /// when the shim must stop the container itself (a stop request to
    /// systemd failed).
    async fn health_changed(&self, reported: &mut Reported, health: Health) -> Option<bool> {
        if reported.health == health {
            return None;
        }
        reported.health = health;
        let mut state = format!("STATUS={}", status_text(&reported.container, health));
        if !reported.ready && self.spec.notify == Notify::Healthy && health == Health::Healthy {
            reported.ready = true;
            state.push_str("\nREADY=1");
        }
        self.notifier.notify(&state);
        tracing::info!(
            "container {} is {}",
            reported.container,
            health_word(health)
        );
        if health != Health::Unhealthy {
            return Some(false);
        }
        let unit = self.unit.as_str();
        let id = &reported.container;
        match UnhealthyAction::for_policy(self.spec.health_on_failure) {
            UnhealthyAction::Report => Some(false),
            UnhealthyAction::Kill => {
                tracing::info!("HealthOnFailure=kill: killing container {id}");
                if let Err(e) = self.runtime.kill(id, "SIGKILL").await {
                    tracing::warn!("cannot kill container {id}: {e}");
                }
                Some(false)
            }
            UnhealthyAction::StopUnit => {
                tracing::info!("HealthOnFailure=stop: stopping {unit}");
                match self.systemd.stop_unit(unit).await {
                    Ok(()) => Some(false),
                    Err(e) if e.is_conflict() => {
                        tracing::info!("{e}: the job already queued decides");
                        Some(false)
                    }
                    Err(e) => {
                        tracing::warn!("{e}; stopping the container instead");
                        Some(true)
                    }
                }
            }
            UnhealthyAction::RestartUnit => {
                tracing::info!("HealthOnFailure=restart: restarting {unit}");
                match self.systemd.restart_unit(unit).await {
                    Ok(()) => {}
                    Err(e) if e.is_conflict() => {
                        tracing::info!("{e}: the job already queued decides");
                    }
                    Err(e) => {
                        tracing::warn!("{e}; killing the container instead");
                        if let Err(e) = self.runtime.kill(id, "SIGKILL").await {
                            tracing::warn!("cannot kill container {id}: {e}");
                        }
                    }
                }
                Some(false)
            }
        }
    }

    /// Docker's systemd driver put the container in a scope of its own:
    /// systemd moves its processes into the unit's `payload` leaf, round
    /// after round while the container forks.
    async fn contain(&self, unit_cgroup: &str, pid: u32) -> Result<(), ShimError> {
        let unit = self.unit.as_str();
        let payload = format!("{unit_cgroup}/{PAYLOAD_LEAF}");
        self.cgroups.create(&payload)?;
        let Ok(scope) = self.cgroups.of(&pid.to_string()) else {
            // Already gone: the container exited, and the wait says how.
            return Ok(());
        };
        if scope == payload {
            return Ok(());
        }
        let mut failed = None;
        for _ in 0..ATTACH_ROUNDS {
            let pids = self.cgroups.procs(&scope)?;
            if pids.is_empty() {
                return Ok(());
            }
            // systemd refuses the whole call if one of the processes has
            // exited since the list was read: read it again and retry.
            match self
                .systemd
                .attach_processes(unit, &format!("/{PAYLOAD_LEAF}"), &pids)
                .await
            {
                Ok(()) => failed = None,
                Err(e) => {
                    tracing::debug!("{e}; trying again");
                    failed = Some(e);
                    tokio::time::sleep(ATTACH_RETRY).await;
                }
            }
        }
        Err(match failed {
            Some(e) => ShimError::Systemd(e),
            None => ShimError::Contain {
                unit: unit.to_owned(),
                reason: format!("processes kept appearing in {scope}"),
            },
        })
    }
}

/// The watchdog's pinger, stopped with the run.
struct WatchdogTask {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchdogTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends `WATCHDOG=1` every `interval` unless `suspended`.
async fn ping_watchdog<N: Notifier>(interval: Duration, notifier: N, suspended: Arc<AtomicBool>) {
    let mut ticks = tokio::time::interval(interval);
    loop {
        ticks.tick().await;
        if !suspended.load(Ordering::Relaxed) {
            notifier.notify("WATCHDOG=1");
        }
    }
}

/// The next datagram on the notify socket; never without one.
async fn receive(
    socket: Option<&tokio::net::UnixDatagram>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match socket {
        Some(s) => s.recv(buf).await,
        None => std::future::pending().await,
    }
}

async fn forward_output(mut output: BoxStream<Result<Output, RuntimeError>>, mut sink: OutputSink) {
    while let Some(item) = output.next().await {
        match item {
            Ok(out) => sink(out),
            Err(e) => {
                tracing::warn!("{e}");
                break;
            }
        }
    }
}

/// Binds the notify socket a `Notify=yes` container sends `READY=1` to, in
/// `dir` (mounted into the container), writable by any user the container
/// runs as.
fn notify_socket(dir: &Path) -> Result<tokio::net::UnixDatagram, ShimError> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(NOTIFY_SOCKET_NAME);
    let err = |source| ShimError::NotifySocket {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        _ => {}
    }
    let socket = tokio::net::UnixDatagram::bind(&path).map_err(err)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).map_err(err)?;
    Ok(socket)
}

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
    pub(super) fn path(&self) -> PathBuf {
        self.unit_file
            .clone()
            .unwrap_or_else(|| config::unit_file_path(Path::new(UNIT_DIR), &self.unit))
    }
}

pub(super) fn tokio_runtime() -> Result<tokio::runtime::Runtime, ShimError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ShimError::Tokio)
}

/// Docker's client, with a request timeout that covers a stop.
pub(super) async fn docker(stop_timeout: Duration) -> Result<Docker, ShimError> {
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
    super::object::resolve(&mut spec, path.parent().unwrap_or(Path::new(UNIT_DIR)))?;
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
