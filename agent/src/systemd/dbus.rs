//! [`SystemdManager`] over systemd's D-Bus API (`org.freedesktop.systemd1`)
//! on the system bus, with zbus.
//!
//! The calls it makes are those of [`super::manager::ManagerProxy`], the
//! one declaration of systemd's manager that flotilla has.
//!
//! Two tasks keep draining the bus for as long as the connection lives
//! (a D-Bus stream that nobody reads stalls the whole connection):
//!
//! - `JobRemoved` signals resolve the jobs being waited for. A job's
//!   signal may be read before the reply that names the job, so results
//!   nobody waits for yet are kept (the most recent few thousand).
//! - `PropertiesChanged` signals of unit objects, and `JobRemoved`, feed
//!   the names of changed units to every [`ChangeFeed`]. The values those
//!   signals carry are kept ([`super::signalled`]), so that
//!   [`SystemdManager::unit_status`] of a unit that changed needs no call;
//!   `UnitRemoved` forgets them.
//!
//! `Subscribe` is called once, so that systemd sends those signals at all.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{Semaphore, oneshot};
use zbus::message::Type as MessageType;
use zbus::{Connection, MatchRule, MessageStream, OwnedObjectPath, OwnedVariant};

use crate::metrics::AgentMetrics;

use super::manager::{
    DESTINATION, JobRemovedStream, ManagerProxy, PROPERTIES_INTERFACE, SERVICE_INTERFACE,
    UNIT_INTERFACE, UnitRemovedStream, bus_error, call_error,
};
use super::signalled::{Signalled, number};
use super::{
    ChangeFeed, ChangeSink, DEFAULT_JOB_TIMEOUT, JobKind, JobResult, SystemdError, SystemdManager,
    UnitProperties, UnitSource, change_feed, major_version,
};

/// Where systemd puts unit objects: `UNIT_PATH_PREFIX/<escaped name>`.
const UNIT_PATH_PREFIX: &str = "/org/freedesktop/systemd1/unit";
/// How many job results nobody waited for are kept, in case their waiter
/// has not read its reply yet.
const FINISHED_JOBS_KEPT: usize = 4096;

/// Jobs being waited for, and results that came before their waiter.
#[derive(Default)]
struct Jobs {
    waiting: HashMap<String, oneshot::Sender<JobResult>>,
    finished: HashMap<String, JobResult>,
    finished_order: VecDeque<String>,
}

#[derive(Default)]
struct Shared {
    jobs: Mutex<Jobs>,
    sinks: Mutex<Vec<ChangeSink>>,
    signalled: Mutex<Signalled>,
}

impl Shared {
    fn jobs(&self) -> MutexGuard<'_, Jobs> {
        // Maps of plain values stay valid if a holder panicked.
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sinks(&self) -> MutexGuard<'_, Vec<ChangeSink>> {
        self.sinks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn signalled(&self) -> MutexGuard<'_, Signalled> {
        // Plain values, valid whatever a panicking holder left.
        self.signalled.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn job_removed(&self, job: String, unit: &str, result: JobResult) {
        let mut jobs = self.jobs();
        match jobs.waiting.remove(&job) {
            Some(waiter) => {
                let _ = waiter.send(result);
            }
            None => {
                jobs.finished.insert(job.clone(), result);
                jobs.finished_order.push_back(job);
                while jobs.finished_order.len() > FINISHED_JOBS_KEPT {
                    if let Some(old) = jobs.finished_order.pop_front() {
                        jobs.finished.remove(&old);
                    }
                }
            }
        }
        drop(jobs);
        self.changed(unit);
    }

    fn changed(&self, unit: &str) {
        let mut sinks = self.sinks();
        sinks.retain(|s| !s.is_abandoned());
        for sink in sinks.iter() {
            sink.push(unit);
        }
    }

    fn close(&self) {
        for sink in self.sinks().drain(..) {
            sink.close();
        }
        // Waiters see their sender dropped.
        self.jobs().waiting.clear();
    }
}

/// systemd over the system bus.
pub struct DbusSystemd {
    conn: Connection,
    manager: ManagerProxy<'static>,
    shared: Arc<Shared>,
    job_timeout: Duration,
    listeners: Vec<tokio::task::JoinHandle<()>>,
    metrics: AgentMetrics,
    /// See [`SystemdManager::loads_new_unit_files`]: from systemd's
    /// version, read once when connecting.
    loads_new_unit_files: bool,
    /// Bounds the calls awaiting their reply, whoever makes them (passes,
    /// jobs, the reporter).
    pending_calls: Semaphore,
}

/// How many method calls of one connection may await systemd's reply at
/// once: dbus-daemon refuses more than 128 per connection (its default
/// `max_replies_per_connection`), and the connection's own calls at
/// connect time need none of these.
pub const MAX_PENDING_CALLS: usize = 112;

impl std::fmt::Debug for DbusSystemd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbusSystemd")
            .field("job_timeout", &self.job_timeout)
            .finish_non_exhaustive()
    }
}

impl Drop for DbusSystemd {
    fn drop(&mut self) {
        for task in &self.listeners {
            task.abort();
        }
    }
}

impl DbusSystemd {
    /// Connects to systemd on the system bus and subscribes to its
    /// signals. Must run inside a tokio runtime (the listeners are tasks).
    pub async fn connect() -> Result<DbusSystemd, SystemdError> {
        let conn = Connection::system()
            .await
            .map_err(|e| SystemdError::Connect(e.to_string()))?;
        Self::with_connection(conn).await
    }

    /// As [`DbusSystemd::connect`], to the bus whose socket is at `path`
    /// (another host's, seen through its root).
    pub async fn connect_socket(path: &std::path::Path) -> Result<DbusSystemd, SystemdError> {
        let stream = std::os::unix::net::UnixStream::connect(path)
            .map_err(|e| SystemdError::Connect(format!("{}: {e}", path.display())))?;
        let conn = zbus::connection::Builder::unix_stream(stream)
            .build()
            .await
            .map_err(|e| SystemdError::Connect(format!("{}: {e}", path.display())))?;
        Self::with_connection(conn).await
    }

    /// As [`DbusSystemd::connect`], over a connection made elsewhere.
    pub async fn with_connection(conn: Connection) -> Result<DbusSystemd, SystemdError> {
        let manager = ManagerProxy::new(&conn)
            .await
            .map_err(|e| bus_error("proxy", e))?;
        let shared = Arc::new(Shared::default());
        // Both streams exist before Subscribe, so no signal is missed.
        let jobs = manager
            .receive_job_removed()
            .await
            .map_err(|e| bus_error("AddMatch JobRemoved", e))?;
        let removed = manager
            .receive_unit_removed()
            .await
            .map_err(|e| bus_error("AddMatch UnitRemoved", e))?;
        let rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .sender(DESTINATION)
            .interface(PROPERTIES_INTERFACE)
            .member("PropertiesChanged")
            .path_namespace(UNIT_PATH_PREFIX)
            .build()
            .map_err(|e| bus_error("match rule", e))?;
        let properties = MessageStream::for_match_rule(rule, &conn, None)
            .await
            .map_err(|e| bus_error("AddMatch PropertiesChanged", e))?;
        manager
            .subscribe()
            .await
            .map_err(|e| bus_error("Subscribe", e))?;
        // An unknown version is taken as an old one: a reload too many
        // costs time, a reload missing would start nothing.
        let version = manager.version().await.unwrap_or_default();
        let loads_new_unit_files =
            major_version(&version).is_some_and(|v| v >= super::LOADS_NEW_UNIT_FILES_SINCE);
        tracing::debug!(%version, loads_new_unit_files, "connected to systemd");
        let listeners = vec![
            tokio::spawn(listen_jobs(jobs, shared.clone())),
            tokio::spawn(listen_properties(properties, shared.clone())),
            tokio::spawn(listen_removed(removed, shared.clone())),
        ];
        Ok(DbusSystemd {
            conn,
            manager,
            shared,
            job_timeout: DEFAULT_JOB_TIMEOUT,
            listeners,
            metrics: AgentMetrics::default(),
            loads_new_unit_files,
            pending_calls: Semaphore::new(MAX_PENDING_CALLS),
        })
    }

    /// The same, waiting at most `timeout` for each job's result.
    pub fn with_job_timeout(mut self, timeout: Duration) -> DbusSystemd {
        self.job_timeout = timeout;
        self
    }

    /// The same, timing each method call in `metrics`.
    pub fn with_metrics(mut self, metrics: AgentMetrics) -> DbusSystemd {
        self.metrics = metrics;
        self
    }

    /// What systemd's signals told of the unit's last change, once they
    /// told all a state report needs but the load state, given as
    /// `load_state` ([`SystemdManager::unit_statuses`] answers from it).
    pub fn signalled(&self, name: &str, load_state: &str) -> Option<UnitProperties> {
        self.shared.signalled().status(name, load_state)
    }

    /// Awaits one method call to systemd, timing it as `method`, once
    /// fewer than [`MAX_PENDING_CALLS`] calls of this connection await
    /// their reply.
    async fn timed<T>(&self, method: &'static str, call: impl Future<Output = T>) -> T {
        // The semaphore is never closed.
        let _slot = self.pending_calls.acquire().await;
        let started = Instant::now();
        let out = call.await;
        self.metrics.dbus_call(method, started.elapsed());
        out
    }

    /// The object path of unit `name`, loading it from its file if systemd
    /// has not yet (`LoadUnit`).
    async fn load(&self, name: &str) -> Result<OwnedObjectPath, SystemdError> {
        self.timed("LoadUnit", self.manager.load_unit(name))
            .await
            .map_err(|e| call_error("load", name, e))
    }

    /// One property of the object at `path` (`Properties.Get`).
    async fn get(
        &self,
        path: &OwnedObjectPath,
        interface: &str,
        property: &str,
    ) -> Result<OwnedVariant, SystemdError> {
        self.properties(path, "Get", &(interface, property)).await
    }

    /// Every property of `interface` of the object at `path`
    /// (`Properties.GetAll`).
    async fn get_all(
        &self,
        path: &OwnedObjectPath,
        interface: &str,
    ) -> Result<HashMap<String, OwnedVariant>, SystemdError> {
        self.properties(path, "GetAll", &(interface,)).await
    }

    /// A call of `org.freedesktop.DBus.Properties` on the object at
    /// `path`, timed, and its reply.
    async fn properties<B, T>(
        &self,
        path: &OwnedObjectPath,
        method: &'static str,
        body: &B,
    ) -> Result<T, SystemdError>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
        T: for<'d> zbus::zvariant::DynamicDeserialize<'d>,
    {
        let call = self.conn.call_method(
            Some(DESTINATION),
            path.as_str(),
            Some(PROPERTIES_INTERFACE),
            method,
            body,
        );
        let reply = self
            .timed(method, call)
            .await
            .map_err(|e| bus_error(method, e))?;
        reply
            .body()
            .deserialize::<T>()
            .map_err(|e| bus_error(method, e))
    }
}

async fn listen_jobs(mut stream: JobRemovedStream, shared: Arc<Shared>) {
    while let Some(signal) = stream.next().await {
        match signal.args() {
            Ok(args) => shared.job_removed(
                args.job.as_str().to_owned(),
                &args.unit,
                JobResult::parse(&args.result),
            ),
            Err(e) => tracing::warn!("cannot read a JobRemoved signal: {e}"),
        }
    }
    tracing::warn!("the stream of systemd job results ended");
    shared.close();
}

async fn listen_properties(mut stream: MessageStream, shared: Arc<Shared>) {
    while let Some(message) = stream.next().await {
        let Ok(message) = message else { continue };
        let header = message.header();
        let Some(unit) = header.path().and_then(|p| unit_name_from_path(p.as_str())) else {
            continue;
        };
        // The values go in before the name goes out, so that a reader told
        // of the change finds them.
        match message
            .body()
            .deserialize::<(String, HashMap<String, OwnedVariant>, Vec<String>)>()
        {
            Ok((interface, changed, invalidated)) => {
                shared
                    .signalled()
                    .apply(&unit, &interface, &changed, &invalidated);
            }
            // Read instead: a status from an unreadable signal is unknown.
            Err(e) => {
                tracing::debug!("cannot read a PropertiesChanged signal of {unit}: {e}");
                shared.signalled().remove(&unit);
            }
        }
        shared.changed(&unit);
    }
    tracing::warn!("the stream of systemd property changes ended");
    shared.close();
}

async fn listen_removed(mut stream: UnitRemovedStream, shared: Arc<Shared>) {
    while let Some(signal) = stream.next().await {
        match signal.args() {
            Ok(args) => shared.signalled().remove(&args.id),
            Err(e) => tracing::warn!("cannot read a UnitRemoved signal: {e}"),
        }
    }
}

impl SystemdManager for DbusSystemd {
    fn loads_new_unit_files(&self) -> bool {
        self.loads_new_unit_files
    }

    async fn reload(&self) -> Result<(), SystemdError> {
        self.timed("Reload", self.manager.reload())
            .await
            .map_err(|e| call_error("reload", "the unit files", e))
    }

    async fn job(&self, kind: JobKind, unit: &str) -> Result<JobResult, SystemdError> {
        let queued = match kind {
            JobKind::Start => {
                self.timed("StartUnit", self.manager.start_unit(unit, "replace"))
                    .await
            }
            JobKind::Stop => {
                self.timed("StopUnit", self.manager.stop_unit(unit, "replace"))
                    .await
            }
            JobKind::Restart => {
                self.timed("RestartUnit", self.manager.restart_unit(unit, "replace"))
                    .await
            }
        };
        let job = match queued {
            Ok(job) => job.as_str().to_owned(),
            Err(e) => {
                let e = call_error(kind.as_str(), unit, e);
                return match &e {
                    // Nothing to stop: the aim is reached.
                    SystemdError::Refused { name, .. }
                        if kind == JobKind::Stop && name.ends_with(".NoSuchUnit") =>
                    {
                        Ok(JobResult::Skipped)
                    }
                    _ => Err(e),
                };
            }
        };
        let receiver = {
            let mut jobs = self.shared.jobs();
            if let Some(result) = jobs.finished.remove(&job) {
                return Ok(result);
            }
            let (tx, rx) = oneshot::channel();
            jobs.waiting.insert(job.clone(), tx);
            rx
        };
        match tokio::time::timeout(self.job_timeout, receiver).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(_)) => Err(SystemdError::Bus {
                operation: kind.as_str(),
                message: "the connection to systemd was lost while waiting for the job".into(),
            }),
            Err(_) => {
                self.shared.jobs().waiting.remove(&job);
                Err(SystemdError::JobTimeout {
                    operation: kind.as_str(),
                    unit: unit.to_owned(),
                    waited: self.job_timeout,
                })
            }
        }
    }

    async fn unit(&self, name: &str) -> Result<UnitProperties, SystemdError> {
        let path = self.load(name).await?;
        let unit = self.get_all(&path, UNIT_INTERFACE).await?;
        let mut props = UnitProperties {
            load_state: string(&unit, "LoadState"),
            active_state: string(&unit, "ActiveState"),
            sub_state: string(&unit, "SubState"),
            fragment_path: string(&unit, "FragmentPath"),
            need_daemon_reload: flag(&unit, "NeedDaemonReload"),
            state_change_usec: number(&unit, "StateChangeTimestamp"),
            description: string(&unit, "Description"),
            ..UnitProperties::default()
        };
        if name.ends_with(".service") && props.is_defined() {
            let service = self.get_all(&path, SERVICE_INTERFACE).await?;
            props.control_group = string(&service, "ControlGroup");
            props.main_pid = number(&service, "MainPID");
            props.n_restarts = number(&service, "NRestarts");
            props.status_text = string(&service, "StatusText");
            props.exec_main_status = number(&service, "ExecMainStatus");
            props.result = string(&service, "Result");
            // systemd gives u64::MAX for what it does not account.
            let accounted =
                |key: &str| Some(number::<u64>(&service, key)).filter(|n| *n != u64::MAX);
            props.tasks = accounted("TasksCurrent");
            props.memory_bytes = accounted("MemoryCurrent");
            props.cpu_nsec = accounted("CPUUsageNSec");
        }
        Ok(props)
    }

    async fn unit_source(&self, name: &str) -> Result<UnitSource, SystemdError> {
        let path = self.load(name).await?;
        let fragment = self.get(&path, UNIT_INTERFACE, "FragmentPath").await?;
        let reload = self.get(&path, UNIT_INTERFACE, "NeedDaemonReload").await?;
        Ok(UnitSource {
            fragment_path: <&str>::try_from(&fragment)
                .map_err(|e| bus_error("Get", e))?
                .to_owned(),
            need_daemon_reload: bool::try_from(&reload).map_err(|e| bus_error("Get", e))?,
        })
    }

    async fn unit_statuses(
        &self,
        names: Vec<String>,
        in_flight: usize,
    ) -> HashMap<String, Result<UnitProperties, SystemdError>> {
        // The load states in one call; the rest from the signals, or read.
        let listed = match self.unit_states(&names).await {
            Ok(listed) => listed,
            Err(e) => {
                tracing::debug!("cannot list units, reading each: {e}");
                vec![UnitProperties::default(); names.len()]
            }
        };
        let mut out = HashMap::with_capacity(names.len());
        let mut to_read = Vec::new();
        for (name, listed) in names.into_iter().zip(listed) {
            if !listed.load_state.is_empty() && !listed.is_defined() {
                out.insert(name, Ok(listed));
                continue;
            }
            let signalled = if listed.load_state.is_empty() {
                None
            } else {
                self.shared.signalled().status(&name, &listed.load_state)
            };
            match signalled {
                Some(props) => {
                    out.insert(name, Ok(props));
                }
                None => to_read.push(name),
            }
        }
        out.extend(super::read_each(self, to_read, in_flight).await);
        out
    }

    async fn unit_states(&self, names: &[String]) -> Result<Vec<UnitProperties>, SystemdError> {
        let asked: Vec<&str> = names.iter().map(String::as_str).collect();
        let listed = self
            .timed("ListUnitsByNames", self.manager.list_units_by_names(&asked))
            .await
            .map_err(|e| call_error("list", "units", e))?;
        let mut by_name: HashMap<String, UnitProperties> = listed
            .into_iter()
            .map(|(name, _, load_state, active_state, sub_state, ..)| {
                let props = UnitProperties {
                    load_state,
                    active_state,
                    sub_state,
                    ..UnitProperties::default()
                };
                (name, props)
            })
            .collect();
        Ok(names
            .iter()
            .map(|n| by_name.remove(n).unwrap_or_else(UnitProperties::not_found))
            .collect())
    }

    async fn subscribe(&self) -> Result<ChangeFeed, SystemdError> {
        let (sink, feed) = change_feed();
        if self.listeners.iter().any(|t| t.is_finished()) {
            sink.close();
        } else {
            self.shared.sinks().push(sink);
        }
        Ok(feed)
    }
}

fn string(props: &HashMap<String, OwnedVariant>, key: &str) -> String {
    props
        .get(key)
        .and_then(|v| <&str>::try_from(v).ok())
        .unwrap_or_default()
        .to_owned()
}

fn flag(props: &HashMap<String, OwnedVariant>, key: &str) -> bool {
    props
        .get(key)
        .and_then(|v| bool::try_from(v).ok())
        .unwrap_or(false)
}

/// The unit name in a unit object's path, undoing systemd's escaping
/// (`sd_bus_path_encode`: every byte other than `[A-Za-z0-9]` becomes `_`
/// and two lowercase hex digits). `None` for other paths.
pub fn unit_name_from_path(path: &str) -> Option<String> {
    let encoded = path.strip_prefix(UNIT_PATH_PREFIX)?.strip_prefix('/')?;
    if encoded.is_empty() || encoded.contains('/') {
        return None;
    }
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' {
            let hex = encoded.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_paths() {
        assert_eq!(
            unit_name_from_path("/org/freedesktop/systemd1/unit/web_2eservice").as_deref(),
            Some("web.service")
        );
        assert_eq!(
            unit_name_from_path("/org/freedesktop/systemd1/unit/web_40a_2d1_2eservice").as_deref(),
            Some("web@a-1.service")
        );
        assert_eq!(
            unit_name_from_path("/org/freedesktop/systemd1/job/12"),
            None
        );
        assert_eq!(
            unit_name_from_path("/org/freedesktop/systemd1/unit/x_2"),
            None
        );
        assert_eq!(unit_name_from_path("/org/freedesktop/systemd1/unit"), None);
    }
}
