//! systemd, as the agent needs it: a narrow trait ([`SystemdManager`]) over
//! the `org.freedesktop.systemd1` D-Bus API, its real implementation
//! ([`DbusSystemd`], over zbus) and an in-memory fake that behaves like it
//! ([`FakeSystemd`], for unit tests).
//!
//! What the agent asks of systemd, and nothing more: reload unit files,
//! run start/stop/restart jobs and wait for their results, read a unit's
//! properties, and be told when units change.

mod changes;
mod dbus;
mod fake;
pub mod manager;
pub mod signalled;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};

pub use changes::{ChangeFeed, ChangeSink, Closed, change_feed};
pub use dbus::{DbusSystemd, unit_name_from_path};
pub use fake::{FakeCall, FakeSystemd};
pub use manager::{ListedUnit, ManagerProxy};

/// The runtime unit directory: systemd reads unit files from it, below
/// `/etc/systemd/system` in priority, and it is emptied at boot.
pub const RUNTIME_UNIT_DIR: &str = "/run/systemd/system";

/// How long [`DbusSystemd`] waits for a job's result by default.
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(120);

/// The jobs the agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    Start,
    Stop,
    Restart,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Start => "start",
            JobKind::Stop => "stop",
            JobKind::Restart => "restart",
        }
    }
}

/// How a job ended: the `result` of systemd's `JobRemoved` signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobResult {
    /// It did what it was asked.
    Done,
    /// Another job replaced it.
    Canceled,
    /// It ran out of time (`TimeoutStartSec=` and the like).
    Timeout,
    /// The unit failed.
    Failed,
    /// A unit it depends on failed.
    Dependency,
    /// Nothing to do (a stop of a unit that was not running, say).
    Skipped,
    /// A result this agent does not know.
    Other(String),
}

impl JobResult {
    pub fn parse(result: &str) -> JobResult {
        match result {
            "done" => JobResult::Done,
            "canceled" => JobResult::Canceled,
            "timeout" => JobResult::Timeout,
            "failed" => JobResult::Failed,
            "dependency" => JobResult::Dependency,
            "skipped" => JobResult::Skipped,
            other => JobResult::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            JobResult::Done => "done",
            JobResult::Canceled => "canceled",
            JobResult::Timeout => "timeout",
            JobResult::Failed => "failed",
            JobResult::Dependency => "dependency",
            JobResult::Skipped => "skipped",
            JobResult::Other(s) => s,
        }
    }

    /// Whether the job achieved its aim.
    pub fn is_success(&self) -> bool {
        matches!(self, JobResult::Done | JobResult::Skipped)
    }
}

/// Where systemd has a unit's definition from: what a reconcile pass plans
/// with beside the unit's states ([`SystemdManager::unit_source`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitSource {
    /// `FragmentPath`: the unit file systemd loaded it from; empty when
    /// none.
    pub fragment_path: String,
    /// `NeedDaemonReload`: its file changed since systemd read it.
    pub need_daemon_reload: bool,
}

/// The properties of a unit the agent reads: `org.freedesktop.systemd1.Unit`
/// and, for services, `org.freedesktop.systemd1.Service`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitProperties {
    /// `LoadState`: `loaded`, `not-found`, `bad-setting`, `error`,
    /// `masked`, ...
    pub load_state: String,
    /// `ActiveState`: `active`, `reloading`, `inactive`, `failed`,
    /// `activating`, `deactivating`.
    pub active_state: String,
    /// `SubState`: `running`, `dead`, `exited`, `auto-restart`, ...
    pub sub_state: String,
    /// `FragmentPath`: the unit file systemd loaded it from; empty when
    /// none.
    pub fragment_path: String,
    /// `ControlGroup`: the unit's cgroup, when it has processes.
    pub control_group: String,
    /// `NeedDaemonReload`: its file changed since systemd read it.
    pub need_daemon_reload: bool,
    /// `StateChangeTimestamp`: when `ActiveState` last changed, in
    /// microseconds since the Unix epoch (0 if never).
    pub state_change_usec: u64,
    /// `MainPID` (services; 0 when none).
    pub main_pid: u32,
    /// `NRestarts`: how often `Restart=` restarted it (services).
    pub n_restarts: u32,
    /// `StatusText`: the last `STATUS=` the service sent (services).
    pub status_text: String,
    /// `ExecMainStatus`: the main process's exit status (services).
    pub exec_main_status: i32,
    /// `Result`: why it last stopped (`success`, `exit-code`, `signal`,
    /// `timeout`, ...; services).
    pub result: String,
    /// `Description`.
    pub description: String,
    /// `TasksCurrent`: processes in its cgroup (services; `None` when
    /// systemd does not count them).
    pub tasks: Option<u64>,
    /// `MemoryCurrent`: memory of its cgroup (services; `None` when not
    /// accounted).
    pub memory_bytes: Option<u64>,
    /// `CPUUsageNSec`: CPU time of its cgroup (services; `None` when not
    /// accounted).
    pub cpu_nsec: Option<u64>,
}

impl UnitProperties {
    /// A unit systemd has no file for and does not run.
    pub fn not_found() -> UnitProperties {
        UnitProperties {
            load_state: "not-found".into(),
            active_state: "inactive".into(),
            sub_state: "dead".into(),
            ..UnitProperties::default()
        }
    }

    /// Running or on its way up: `active`, `reloading` or `activating`
    /// (which includes waiting to be restarted by `Restart=`).
    pub fn is_active(&self) -> bool {
        matches!(
            self.active_state.as_str(),
            "active" | "reloading" | "activating"
        )
    }

    /// Whether systemd knows the unit from a file (or masked it).
    pub fn is_defined(&self) -> bool {
        !matches!(self.load_state.as_str(), "not-found" | "stub" | "")
    }
}

/// Why a systemd operation failed. Each variant says whether trying again
/// may help ([`SystemdError::is_temporary`]).
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    /// No connection to systemd's bus: temporary.
    #[error("cannot connect to systemd over d-bus: {0}")]
    Connect(String),
    /// systemd refused the request for this unit (a bad setting, no such
    /// unit, a unit that may not be started by hand): not temporary, the
    /// unit must change first.
    #[error("systemd refused to {operation} {unit}: {message}")]
    Refused {
        operation: &'static str,
        unit: String,
        /// The D-Bus error name, such as `org.freedesktop.systemd1.NoSuchUnit`.
        name: String,
        message: String,
    },
    /// The call failed on the way (the bus, a broken connection, an answer
    /// that does not decode): temporary.
    #[error("d-bus call {operation} failed: {message}")]
    Bus {
        operation: &'static str,
        message: String,
    },
    /// A job was queued and gave no result in time: temporary (it may still
    /// finish).
    #[error("the {operation} job of {unit} gave no result within {}s", .waited.as_secs())]
    JobTimeout {
        operation: &'static str,
        unit: String,
        waited: Duration,
    },
}

impl SystemdError {
    /// Whether the same request may succeed later without anything
    /// changing.
    pub fn is_temporary(&self) -> bool {
        match self {
            SystemdError::Connect(_)
            | SystemdError::Bus { .. }
            | SystemdError::JobTimeout { .. } => true,
            SystemdError::Refused { .. } => false,
        }
    }

    /// Whether systemd refused a job queued in mode `fail` because another
    /// job of the unit is queued (a stop or restart someone asked for):
    /// systemd keeps that job, and it decides what happens to the unit.
    pub fn is_conflict(&self) -> bool {
        matches!(self, SystemdError::Refused { name, .. } if name == TRANSACTION_IS_DESTRUCTIVE)
    }
}

/// The error name systemd answers a job in mode `fail` with when it would
/// cancel a queued job.
pub const TRANSACTION_IS_DESTRUCTIVE: &str = "org.freedesktop.systemd1.TransactionIsDestructive";

/// What the agent needs from systemd. Implementations are cheap to share
/// (`Arc`) and safe to call concurrently.
pub trait SystemdManager: Send + Sync + 'static {
    /// `Reload`: reads every unit file again. Returns when systemd has
    /// finished.
    fn reload(&self) -> impl Future<Output = Result<(), SystemdError>> + Send;

    /// Queues a job for `unit` (mode `replace`) and waits for its result.
    /// Stopping a unit systemd does not know succeeds.
    fn job(
        &self,
        kind: JobKind,
        unit: &str,
    ) -> impl Future<Output = Result<JobResult, SystemdError>> + Send;

    /// The unit's properties, loading it from its file if systemd has not
    /// yet (`LoadUnit`); a unit without a file is `not-found`.
    fn unit(&self, name: &str)
    -> impl Future<Output = Result<UnitProperties, SystemdError>> + Send;

    /// Where systemd has the unit from ([`UnitSource`]), loading it as
    /// [`SystemdManager::unit`] does. Two properties rather than every one
    /// of the unit and its service: systemd writes a whole read's hundreds
    /// of values on the thread that also runs the jobs, which a restarted
    /// agent's first pass, reading every unit it runs, would slow.
    fn unit_source(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<UnitSource, SystemdError>> + Send {
        async move {
            let props = self.unit(name).await?;
            Ok(UnitSource {
                fragment_path: props.fragment_path,
                need_daemon_reload: props.need_daemon_reload,
            })
        }
    }

    /// What state reports need of each unit (the states,
    /// `StateChangeTimestamp`, and of a service `MainPID`, `NRestarts`,
    /// `StatusText`, `Result` and `ExecMainStatus`; the rest may be left
    /// empty), each unit's result by name, with at most `in_flight` calls
    /// awaiting systemd's reply at once. Read as [`SystemdManager::unit`]
    /// reads a unit, or, where the implementation kept them, from systemd's
    /// signals of the unit's last change.
    fn unit_statuses(
        &self,
        names: Vec<String>,
        in_flight: usize,
    ) -> impl Future<Output = HashMap<String, Result<UnitProperties, SystemdError>>> + Send {
        read_each(self, names, in_flight)
    }

    /// The load, active and sub states of many units in one call
    /// (`ListUnitsByNames`), loading each as [`SystemdManager::unit`] does;
    /// the other properties are left empty. In the order of `names`.
    fn unit_states(
        &self,
        names: &[String],
    ) -> impl Future<Output = Result<Vec<UnitProperties>, SystemdError>> + Send;

    /// A feed of the names of units whose properties changed or whose job
    /// ended, from now on. It closes when the connection to systemd is lost.
    fn subscribe(&self) -> impl Future<Output = Result<ChangeFeed, SystemdError>> + Send;

    /// Whether a job (or `LoadUnit`) for a unit systemd did not find loads
    /// the unit's file written since, without a `Reload`: systemd 246 and
    /// later look again when a unit directory changed. Then starting new
    /// units costs no reload, which takes hundreds of milliseconds with
    /// hundreds of units loaded.
    fn loads_new_unit_files(&self) -> bool {
        false
    }
}

/// The first systemd version that loads a new unit file on demand
/// ([`SystemdManager::loads_new_unit_files`]).
pub const LOADS_NEW_UNIT_FILES_SINCE: u32 = 246;

/// The major version in systemd's `Version` property (`252.22-1~deb12u1`,
/// `v255`, `246`), if it has one.
pub fn major_version(version: &str) -> Option<u32> {
    let digits: String = version
        .trim_start_matches(['v', 'V'])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The properties of many units ([`SystemdManager::unit`]), with at most
/// `in_flight` calls awaiting systemd's reply at once (dbus-daemon refuses
/// more than 128 per connection), each unit's result by name.
pub async fn read_units<S: SystemdManager>(
    systemd: &Arc<S>,
    names: Vec<String>,
    in_flight: usize,
) -> HashMap<String, Result<UnitProperties, SystemdError>> {
    read_each(&**systemd, names, in_flight).await
}

/// Each unit of `names` read with [`SystemdManager::unit`], at most
/// `in_flight` at once, each result by name.
pub(crate) async fn read_each<S: SystemdManager + ?Sized>(
    systemd: &S,
    names: Vec<String>,
    in_flight: usize,
) -> HashMap<String, Result<UnitProperties, SystemdError>> {
    stream::iter(names)
        .map(|name| async move {
            let props = systemd.unit(&name).await;
            (name, props)
        })
        .buffer_unordered(in_flight)
        .collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_versions() {
        assert_eq!(major_version("252.22-1~deb12u1"), Some(252));
        assert_eq!(major_version("v255"), Some(255));
        assert_eq!(major_version("246"), Some(246));
        assert_eq!(major_version("245.4-4ubuntu3"), Some(245));
        assert_eq!(major_version(""), None);
        assert_eq!(major_version("unknown"), None);
    }

    #[test]
    fn job_results() {
        for r in [
            "done",
            "canceled",
            "timeout",
            "failed",
            "dependency",
            "skipped",
            "odd",
        ] {
            assert_eq!(JobResult::parse(r).as_str(), r);
        }
        assert!(JobResult::parse("done").is_success());
        assert!(JobResult::parse("skipped").is_success());
        assert!(!JobResult::parse("failed").is_success());
    }

    #[test]
    fn only_a_refusal_for_a_queued_job_is_a_conflict() {
        let refused = |name: &str| SystemdError::Refused {
            operation: "RestartUnit",
            unit: "web.service".into(),
            name: name.into(),
            message: "refused".into(),
        };
        let conflict = refused(TRANSACTION_IS_DESTRUCTIVE);
        assert!(conflict.is_conflict() && !conflict.is_temporary());
        assert!(!refused("org.freedesktop.systemd1.NoSuchUnit").is_conflict());
        let bus = SystemdError::Bus {
            operation: "RestartUnit",
            message: TRANSACTION_IS_DESTRUCTIVE.into(),
        };
        assert!(!bus.is_conflict());
        assert!(!SystemdError::Connect("no bus".into()).is_conflict());
    }

    #[test]
    fn activity() {
        let mut p = UnitProperties::not_found();
        assert!(!p.is_active() && !p.is_defined());
        for (state, active) in [
            ("active", true),
            ("activating", true),
            ("reloading", true),
            ("deactivating", false),
            ("failed", false),
            ("inactive", false),
        ] {
            p.active_state = state.into();
            assert_eq!(p.is_active(), active, "{state}");
        }
        p.load_state = "masked".into();
        assert!(p.is_defined());
    }
}
