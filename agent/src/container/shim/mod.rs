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
//!
//! The pieces, one file each in `shim/`: `lifecycle` (one run,
//! [`Shim::run`], and the container's output), `health` (health
//! transitions, `HealthOnFailure=` and the watchdog), `notify` (`sd_notify`,
//! `STATUS=` and the container's notify socket) and `command` (the unit's
//! `run`, `stop` and `cleanup` commands, and what `reload` shares with
//! them). This file keeps what they share: the shim's errors, constants
//! and [`Shim`] itself.

mod command;
mod health;
mod lifecycle;
mod notify;

pub use command::{Cleanup, UnitOptions, cleanup, cleanup_with, report_failure, run, stop};
pub(in crate::container) use command::{docker, tokio_runtime};
pub use health::{UnhealthyAction, Watchdog, WatchdogMode, watchdog_interval};
pub use lifecycle::{OutputSink, stdio_sink};
pub use notify::{Notifier, RecordingNotifier, SdNotify, health_word, notify_barrier, status_text};

use std::path::PathBuf;
use std::time::Duration;

use flotilla_proto::UnitName;
use flotilla_proto::container::ContainerSpec;

use super::cgroup::{CgroupError, Cgroups};
use super::config::{ConfigError, UNIT_LABEL};
use super::host_config::{HostError, HostFacts};
use super::pull::{PullError, PullSettings};
use super::runtime::RuntimeError;
use super::secrets;
use super::systemd::SystemdError;

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
