//! A test host's systemd, driven from outside (B5): over the host's own
//! system bus socket, `/proc/<its PID 1>/root/run/dbus/system_bus_socket`,
//! with zbus, and its runtime unit directory read and written through the
//! same `/proc/<pid>/root`. No process is spawned per call, so the figures
//! are systemd's, not `systemctl`'s. The calls are those of the agent's
//! declaration of systemd's manager (`flotilla_agent::systemd::manager`).
//!
//! Jobs are run and waited for with the agent's own D-Bus code
//! ([`DbusSystemd`], which subscribes to systemd's signals): those
//! connections are made only while jobs run and dropped after, so that
//! while the agent is measured systemd sends its signals to the agent
//! alone. The connection kept for the whole run only makes method calls.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flotilla_agent::systemd::manager::{
    DESTINATION, ManagerProxy, PROPERTIES_INTERFACE, SERVICE_INTERFACE, UNIT_INTERFACE,
};
use flotilla_agent::systemd::{DbusSystemd, JobKind, SystemdManager};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use zbus::{Connection, OwnedObjectPath, OwnedVariant};

/// Jobs waited for at once by [`jobs_at_once`], below the system bus's
/// limit of pending calls per connection.
pub const IN_FLIGHT: usize = 100;

/// How long a job may take before it counts as failed (a hundred
/// containers started at once take a while).
const JOB_TIMEOUT: Duration = Duration::from_secs(600);

/// A host's systemd, reached through its bus socket.
#[derive(Clone)]
pub struct HostBus {
    socket: PathBuf,
    conn: Connection,
    manager: ManagerProxy<'static>,
    unit_dir: PathBuf,
}

impl HostBus {
    /// Connects to the systemd of the host whose PID 1 is `leader` (as
    /// this machine sees it).
    pub async fn connect(leader: u32) -> anyhow::Result<HostBus> {
        let root = PathBuf::from(format!("/proc/{leader}/root"));
        let socket = root.join("run/dbus/system_bus_socket");
        let conn = connect(&socket).await?;
        let manager = ManagerProxy::new(&conn)
            .await
            .context("cannot make a proxy of the host's systemd")?;
        Ok(HostBus {
            socket,
            conn,
            manager,
            unit_dir: root.join("run/systemd/system"),
        })
    }

    /// A connection that runs jobs and waits for their results (the
    /// agent's code). Drop it when done: while it lives, systemd sends it
    /// every unit's changes.
    pub async fn jobs(&self) -> anyhow::Result<Arc<DbusSystemd>> {
        let conn = connect(&self.socket).await?;
        let systemd = DbusSystemd::with_connection(conn)
            .await
            .context("cannot subscribe to the host's systemd")?;
        Ok(Arc::new(systemd.with_job_timeout(JOB_TIMEOUT)))
    }

    /// The units matching `patterns` whose active state is `active`.
    pub async fn active(&self, patterns: &[&str]) -> anyhow::Result<Vec<String>> {
        let units = self
            .manager
            .list_units_by_patterns(&["active"], patterns)
            .await
            .context("ListUnitsByPatterns on the host")?;
        Ok(units.into_iter().map(|u| u.0).collect())
    }

    /// The object path of a loaded unit.
    pub async fn unit_path(&self, unit: &str) -> anyhow::Result<OwnedObjectPath> {
        self.manager
            .get_unit(unit)
            .await
            .with_context(|| format!("GetUnit {unit} on the host"))
    }

    /// A service's `MainPID` and `ActiveState`, from its object path.
    pub async fn main_pid(&self, path: &OwnedObjectPath) -> anyhow::Result<(u32, String)> {
        let pid = self.property(path, SERVICE_INTERFACE, "MainPID").await?;
        let pid = u32::try_from(&pid).context("MainPID is not a u32")?;
        let state = self.property(path, UNIT_INTERFACE, "ActiveState").await?;
        let state = <&str>::try_from(&state)
            .context("ActiveState is not a string")?
            .to_owned();
        Ok((pid, state))
    }

    async fn property(
        &self,
        path: &OwnedObjectPath,
        interface: &str,
        name: &str,
    ) -> anyhow::Result<OwnedVariant> {
        let reply = self
            .conn
            .call_method(
                Some(DESTINATION),
                path.as_str(),
                Some(PROPERTIES_INTERFACE),
                "Get",
                &(interface, name),
            )
            .await
            .with_context(|| format!("Get {name} of {}", path.as_str()))?;
        reply
            .body()
            .deserialize::<OwnedVariant>()
            .with_context(|| format!("Get {name} of {}", path.as_str()))
    }

    /// Writes a unit file into the host's `/run/systemd/system`.
    pub fn write_unit(&self, name: &str, content: &str) -> anyhow::Result<()> {
        let path = self.unit_dir.join(name);
        std::fs::write(&path, content).with_context(|| format!("cannot write {}", path.display()))
    }

    /// Reads a unit file of the host's `/run/systemd/system`.
    pub fn read_unit(&self, name: &str) -> anyhow::Result<String> {
        let path = self.unit_dir.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
    }

    /// Removes a unit file of the host's `/run/systemd/system`, if there.
    pub fn remove_unit(&self, name: &str) -> anyhow::Result<()> {
        let path = self.unit_dir.join(name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot remove {}", path.display()))
            }
            _ => Ok(()),
        }
    }
}

async fn connect(socket: &Path) -> anyhow::Result<Connection> {
    let stream = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("cannot connect to {}", socket.display()))?;
    zbus::connection::Builder::unix_stream(stream)
        .build()
        .await
        .with_context(|| format!("no D-Bus connection over {}", socket.display()))
}

/// Runs a job for each unit, one after the other, each waited for; how
/// long they took together. Fails if any job did not succeed.
pub async fn jobs_in_sequence(
    systemd: &DbusSystemd,
    kind: JobKind,
    names: &[String],
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let mut failed = Vec::new();
    for name in names {
        match systemd.job(kind, name).await {
            Ok(r) if r.is_success() => {}
            Ok(r) => failed.push(format!("{name}: {}", r.as_str())),
            Err(e) => failed.push(format!("{name}: {e}")),
        }
    }
    let took = t.elapsed();
    check_jobs(kind, names.len(), &failed)?;
    Ok(took)
}

/// Runs a job for each unit concurrently, as the agent does, and waits
/// for them all; how long until the last ended. Fails if any did not
/// succeed.
///
/// At most [`IN_FLIGHT`] jobs are waited for at a time: the system bus
/// (dbus-daemon) refuses more than 128 method calls awaiting their reply
/// on one connection (`LimitsExceeded`), and each job starts with a call.
pub async fn jobs_at_once(
    systemd: &Arc<DbusSystemd>,
    kind: JobKind,
    names: &[String],
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut set = JoinSet::new();
    for name in names {
        let systemd = systemd.clone();
        let name = name.clone();
        let slots = slots.clone();
        set.spawn(async move {
            let _slot = slots.acquire_owned().await;
            let r = systemd.job(kind, &name).await;
            (name, r)
        });
    }
    let mut failed = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((_, Ok(r))) if r.is_success() => {}
            Ok((name, Ok(r))) => failed.push(format!("{name}: {}", r.as_str())),
            Ok((name, Err(e))) => failed.push(format!("{name}: {e}")),
            Err(e) => failed.push(format!("a job task failed: {e}")),
        }
    }
    let took = t.elapsed();
    check_jobs(kind, names.len(), &failed)?;
    Ok(took)
}

fn check_jobs(kind: JobKind, total: usize, failed: &[String]) -> anyhow::Result<()> {
    if failed.is_empty() {
        return Ok(());
    }
    bail!(
        "{} of {total} {} jobs failed, such as: {}",
        failed.len(),
        kind.as_str(),
        failed
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ")
    )
}
