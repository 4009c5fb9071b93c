//! One reconcile pass: make systemd on this host match the units the
//! cluster gives this machine.
//!
//! A pass is an idempotent diff, not told why it runs (a new feed, a
//! retry, the agent starting): running it twice changes nothing the second
//! time. In order:
//!
//! 1. **Render** every desired unit in memory ([`render`]): a plain unit as
//!    written, a container unit through
//!    [`render_service`], each
//!    behind the marker line of [`crate::unit_dir`].
//! 2. **Observe**: the files flotilla wrote ([`UnitDir::managed`]), what is
//!    at each desired unit's path, and what systemd says of each unit. The
//!    states of every unit come from one `ListUnitsByNames` call; units
//!    systemd has no file for (new ones) need nothing more, and of the
//!    others only those whose file or state is not as the last pass left
//!    them are read whole (the first pass reads them all), so that one
//!    change among hundreds of units, or hundreds of new units, costs a
//!    few calls, not hundreds.
//! 3. **Plan** ([`plan`], pure): which files to write (only those whose
//!    content changed) and remove (only files flotilla wrote), whether to
//!    reload, which jobs to run, which units to refuse.
//! 4. **Apply**: stop units that are no longer desired, write and remove
//!    files, reload systemd *once* if it must, then run the jobs together.
//!    [`Reconciler::reconcile`] waits for their results;
//!    [`Reconciler::reconcile_overlapping`], which the agent runs, does not:
//!    the next pass can write and start the units that arrived meanwhile
//!    while these start, and the results come in through
//!    [`Reconciler::jobs_finished`]. A pass sends no second job for a unit
//!    whose job for the same contents still runs.
//!
//! A reload is needed for files systemd has loaded (changed contents) and
//! for removed files. A new unit's file needs none where systemd loads a
//! unit it had not found when a job asks for it (systemd 246 and later,
//! [`SystemdManager::loads_new_unit_files`]): starting new units costs no
//! reload, which takes hundreds of milliseconds with hundreds of units
//! loaded.
//!
//! The rules of the plan:
//!
//! - `launched`: started when not running; restarted when running and its
//!   content hash changed. A unit that this agent already started for the
//!   same hash and that then stopped or failed is left to systemd's
//!   `Restart=` policy, not started again by every pass.
//! - `loaded`: its file is present and it is stopped.
//! - gone from the feed: stopped, then its file removed.
//! - a unit that the host defines elsewhere (its `FragmentPath` is not
//!   flotilla's file, e.g. `/etc/systemd/system/x.service`, or it is
//!   masked), or whose path holds a file flotilla did not write, is never
//!   touched: it is refused, and reported failed with the reason.
//!
//! A running unit whose hash did not change is never restarted, whatever
//! else changed in its rendered file (such as the shim's path): so a
//! restarted agent restarts nothing.
//!
//! Which hash each running unit was started with is kept in the unit
//! directory ([`UnitDir::save_started`]) after every pass that changed it,
//! so an agent that crashed between writing a unit's new file and
//! restarting the unit restarts it when it comes back. (Which units this
//! agent started, to leave them to `Restart=` once they stop, is not kept:
//! a unit found stopped by a new agent is started.)
//!
//! A pass reads at most [`IN_FLIGHT`] units at once, and at most
//! [`JOBS_IN_FLIGHT`] jobs wait in systemd at once over all passes; the
//! connection to systemd keeps the calls awaiting a reply under
//! dbus-daemon's limit whoever makes them. A container unit's start lasts
//! as long as its image pull and Docker's create and start, so a pass
//! sends the other jobs first, and container starts hold at most
//! [`CONTAINER_JOBS_IN_FLIGHT`] of the slots: other units' jobs, and
//! stops, never wait behind hundreds of pulls.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flotilla_proto::wire::AssignedUnit;
use flotilla_proto::{DesiredState, UnitName, UnitSpec};
use futures_util::stream::{self, StreamExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::container::render::render_service;
use crate::metrics::{AgentMetrics, PassResult};
use crate::systemd::{
    JobKind, JobResult, SystemdError, SystemdManager, UnitProperties, read_units,
};
use crate::unit_dir::{OnDisk, UnitDir, UnitDirError, managed_content};

/// How many reads of units a pass has in flight at once. dbus-daemon
/// refuses more than 128 calls awaiting a reply on one connection (its
/// default `max_replies_per_connection`), which the reporter and the jobs
/// share (`DbusSystemd` keeps all of them under that).
pub const IN_FLIGHT: usize = 48;

/// How many jobs may wait in systemd at once, over all passes. systemd
/// runs a deep queue faster than a shallow one (on the B5 host: 81 plain
/// units/s one at a time, 145/s with 100 queued); each job's call awaits
/// its reply only until systemd has queued it.
pub const JOBS_IN_FLIGHT: usize = 256;

/// How many of the [`JOBS_IN_FLIGHT`] slots the starts of container units
/// may hold at once: the others are always left for the other jobs.
pub const CONTAINER_JOBS_IN_FLIGHT: usize = JOBS_IN_FLIGHT / 2;

/// A unit this machine should have, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub name: String,
    /// What the unit runs with: the unit's content hash, as the cluster
    /// gives it, and for a unit that uses secrets their versions too, so
    /// that a secret's new value restarts the unit as new contents do.
    pub hash: String,
    /// The unit's content hash, as the cluster gives it: what is
    /// reported.
    pub unit_hash: String,
    /// `Loaded` or `Launched`.
    pub state: DesiredState,
    /// The whole file to write (marker included), or why the unit cannot
    /// be rendered.
    pub content: Result<String, String>,
    /// It runs a container through the shim: its start lasts as long as
    /// the image's pull and Docker's create and start.
    pub container: bool,
}

/// Renders the feed's units: those whose desired state is `loaded` or
/// `launched`, each once (the last of a name wins). `shim` is the path of
/// the `flotilla` binary that container units run.
pub fn render(units: &[AssignedUnit], shim: &Path) -> Vec<Desired> {
    let mut out: BTreeMap<&str, Desired> = BTreeMap::new();
    for unit in units {
        if !unit.desired_state.is_scheduled() {
            continue;
        }
        let hash = run_hash(unit);
        let rendered = render_one(unit, shim);
        let container = rendered.as_ref().is_ok_and(|(_, container)| *container);
        let content = rendered.map(|(body, _)| managed_content(&hash, &body));
        out.insert(
            &unit.name,
            Desired {
                name: unit.name.clone(),
                hash,
                unit_hash: unit.hash.clone(),
                state: unit.desired_state,
                content,
                container,
            },
        );
    }
    out.into_values().collect()
}

/// The unit's hash, with the versions of its secrets when it uses any:
/// `HASH+NAME.VERSION,...`.
fn run_hash(unit: &AssignedUnit) -> String {
    if unit.secrets.is_empty() {
        return unit.hash.clone();
    }
    let versions: Vec<String> = unit
        .secrets
        .iter()
        .map(|(name, version)| format!("{name}.{version}"))
        .collect();
    format!("{}+{}", unit.hash, versions.join(","))
}

/// The unit's file, and whether it runs a container.
fn render_one(unit: &AssignedUnit, shim: &Path) -> Result<(String, bool), String> {
    let name = UnitName::parse(&unit.name).map_err(|e| e.to_string())?;
    if name.is_template() {
        return Err(format!("{name} is a template: only its instances run"));
    }
    let checked = UnitSpec::check_named(name.as_str(), &name, &unit.text)
        .map_err(|e| format!("the unit file is not valid: {e}"))?;
    let used = checked.spec.container.as_ref().map(|c| c.secrets.names());
    if let Some(missing) = used
        .unwrap_or_default()
        .into_iter()
        .find(|s| !unit.secrets.contains_key(*s))
    {
        return Err(format!(
            "secret {missing} does not exist: make it with flotilla secret create {missing}"
        ));
    }
    Ok(match render_service(&checked.spec, shim) {
        Some(file) => (file.to_string(), true),
        None => (unit.text.clone(), false),
    })
}

/// What the agent found of a desired unit before acting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub disk: OnDisk,
    pub props: UnitProperties,
}

/// What the agent knows of the units it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    /// Units this agent (this process) started, with the hash it started
    /// them with: one that then stopped or failed is left to systemd's
    /// `Restart=`, not started again by every pass.
    pub started: HashMap<String, String>,
    /// The hash each running unit was last started with by an agent on
    /// this host, kept across restarts of the agent when it remembers
    /// ([`Reconciler::remembering`]): what decides a restart.
    pub recorded: HashMap<String, String>,
}

/// What a pass will do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Units flotilla wrote that are no longer desired and still run:
    /// stopped before their files go.
    pub stop_removed: Vec<String>,
    /// Files to write: unit name and whole content.
    pub write: Vec<(String, String)>,
    /// Files flotilla wrote for units no longer desired.
    pub remove: Vec<String>,
    /// Whether systemd must read unit files again (once, after writing).
    pub reload: bool,
    /// Jobs to run after the reload.
    pub jobs: Vec<(JobKind, String)>,
    /// Desired units left alone, and why.
    pub refused: BTreeMap<String, String>,
}

impl Plan {
    /// Whether the pass changes nothing.
    pub fn is_empty(&self) -> bool {
        self.stop_removed.is_empty()
            && self.write.is_empty()
            && self.remove.is_empty()
            && !self.reload
            && self.jobs.is_empty()
    }
}

/// Decides a pass. `observed` has an entry for every desired unit whose
/// content rendered; `stray` maps each file flotilla wrote for a unit that
/// is no longer desired to that unit's properties; `memory` is what the
/// agent knows of the units it started; `loads_new_files` whether systemd
/// loads the file of a unit it had not found without a reload
/// ([`SystemdManager::loads_new_unit_files`]).
pub fn plan(
    desired: &[Desired],
    observed: &BTreeMap<String, Observed>,
    stray: &BTreeMap<String, UnitProperties>,
    memory: &Memory,
    dir: &UnitDir,
    loads_new_files: bool,
) -> Plan {
    let mut plan = Plan::default();
    for d in desired {
        let content = match &d.content {
            Ok(c) => c,
            Err(why) => {
                plan.refused.insert(d.name.clone(), why.clone());
                continue;
            }
        };
        let Some(obs) = observed.get(&d.name) else {
            continue;
        };
        let ours = dir.file(&d.name);
        if let Some(why) = refusal(&d.name, obs, &ours) {
            plan.refused.insert(d.name.clone(), why);
            continue;
        }
        let previous_hash = match &obs.disk {
            OnDisk::Managed(file) => {
                if file.content != *content {
                    plan.write.push((d.name.clone(), content.clone()));
                }
                Some(file.hash.as_str())
            }
            OnDisk::Absent | OnDisk::Foreign => {
                plan.write.push((d.name.clone(), content.clone()));
                None
            }
        };
        // A file systemd has loaded (or failed to load) is read again only
        // by a reload; one it never found, by the job itself when it can.
        let written = plan.write.last().is_some_and(|(n, _)| *n == d.name);
        let never_loaded = obs.props.load_state == "not-found" && !obs.props.is_active();
        if written && !(loads_new_files && never_loaded) {
            plan.reload = true;
        }
        // A file written by an earlier pass whose reload never happened.
        if obs.props.need_daemon_reload {
            plan.reload = true;
        }
        let active = obs.props.is_active();
        match d.state {
            DesiredState::Launched if active => {
                // The content it runs: what an agent on this host last
                // started it with, or else what its file said before this
                // pass.
                let running = memory
                    .recorded
                    .get(&d.name)
                    .map(String::as_str)
                    .or(previous_hash);
                if running.is_some_and(|h| h != d.hash) {
                    plan.jobs.push((JobKind::Restart, d.name.clone()));
                }
            }
            DesiredState::Launched => {
                if memory.started.get(&d.name) != Some(&d.hash) {
                    plan.jobs.push((JobKind::Start, d.name.clone()));
                }
            }
            DesiredState::Loaded if active => plan.jobs.push((JobKind::Stop, d.name.clone())),
            DesiredState::Loaded | DesiredState::Inactive => {}
        }
    }
    for (name, props) in stray {
        let ours = dir.file(name).display().to_string();
        // A unit that the host now defines elsewhere is not ours to stop.
        let shadowed = props.is_defined() && props.fragment_path != ours;
        if props.is_active() && !shadowed {
            plan.stop_removed.push(name.clone());
        }
        plan.remove.push(name.clone());
    }
    plan.reload |= !plan.remove.is_empty();
    plan
}

/// Why a desired unit must be left alone, if it must.
fn refusal(name: &str, obs: &Observed, ours: &Path) -> Option<String> {
    if obs.disk == OnDisk::Foreign {
        return Some(format!(
            "{} exists and was not written by flotilla: the unit is left alone",
            ours.display()
        ));
    }
    if !obs.props.is_defined() {
        return None;
    }
    if obs.props.load_state == "masked" {
        return Some(format!(
            "unit {name} is masked on this host: flotilla leaves it alone"
        ));
    }
    let fragment = obs.props.fragment_path.as_str();
    if fragment == ours.display().to_string() {
        return None;
    }
    if fragment.is_empty() {
        // Loaded from our file once, now gone: ours to write again.
        if matches!(obs.disk, OnDisk::Managed(_)) {
            return None;
        }
        return Some(format!(
            "unit {name} already exists on this host (systemd has it loaded without a file of flotilla's): flotilla leaves it alone"
        ));
    }
    Some(format!(
        "unit {name} already exists on this host at {fragment}: flotilla does not touch units it did not write"
    ))
}

/// What the reporter needs to know of a desired unit after a pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitNote {
    /// The hash of the file flotilla wrote for it; `None` when refused.
    pub hash: Option<String>,
    /// Why it was left alone; such a unit is reported failed.
    pub refused: Option<String>,
    /// The last job failure for it, until a later job for it succeeds or
    /// its content changes.
    pub error: Option<String>,
    /// The unit's content hash (as the cluster gives it) when an agent on
    /// this host last started it, known once that start or restart job
    /// ended; `None` when no record says.
    pub started: Option<String>,
}

/// What became of one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobOutcome {
    Done,
    /// It ran and did not do its work (a failed start, say).
    Failed,
    /// It may not have run, for a reason that may pass.
    Retry,
}

/// What to do after a pass (the pass does not retry itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Everything was applied: wait for the feed to change.
    AwaitChange,
    /// Something failed in a way that may pass: run again after a backoff.
    Retry,
}

/// The outcome of a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    /// Every desired unit, by name.
    pub units: BTreeMap<String, UnitNote>,
    /// Units whose files this pass removed: they no longer run here.
    pub removed: Vec<String>,
    /// What it did.
    pub plan: Plan,
    pub action: Action,
    /// What each desired unit that rendered runs with once its jobs are
    /// done ([`Desired::hash`]).
    pub hashes: BTreeMap<String, String>,
}

/// Why a pass stopped before it was done. Every case is worth retrying:
/// the next pass starts from what it finds.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    UnitDir(#[from] UnitDirError),
    #[error(transparent)]
    Systemd(#[from] SystemdError),
}

/// Runs passes against one systemd. Remembers, across passes, which units
/// it started with which hash and their last job errors.
#[derive(Debug)]
pub struct Reconciler<S> {
    systemd: Arc<S>,
    dir: UnitDir,
    shim: PathBuf,
    memory: Memory,
    /// The properties of each desired unit as the last pass saw them;
    /// `None` before the first pass, which reads every unit whole.
    known: Option<HashMap<String, UnitProperties>>,
    /// `memory.recorded` as last saved, when it is kept on disk.
    saved: Option<HashMap<String, String>>,
    errors: HashMap<String, (String, String)>,
    metrics: AgentMetrics,
    /// Units the next pass leaves alone, and why (their secrets could not
    /// be put in place): see [`Reconciler::hold`].
    held: BTreeMap<String, String>,
    /// Jobs sent by passes that did not wait for them
    /// ([`Reconciler::reconcile_overlapping`]), each ending with its result.
    jobs: JoinSet<Finished>,
    /// The last job sent for each unit whose job is still running.
    pending: HashMap<String, Pending>,
    /// Numbers the jobs sent, to tell a unit's last job from one it
    /// replaced.
    sent: u64,
    /// At most [`JOBS_IN_FLIGHT`] jobs wait for systemd at once, over all
    /// passes.
    slots: Arc<Semaphore>,
    /// Of those, at most [`CONTAINER_JOBS_IN_FLIGHT`] container starts.
    container_slots: Arc<Semaphore>,
}

/// A job still running, as [`Reconciler::pending`] keeps it.
#[derive(Debug, Clone)]
struct Pending {
    kind: JobKind,
    /// The hash the unit runs with once the job is done.
    hash: String,
    seq: u64,
}

/// A job that ended.
#[derive(Debug)]
struct Finished {
    kind: JobKind,
    name: String,
    hash: String,
    seq: u64,
    result: Result<JobResult, SystemdError>,
}

/// What the jobs that ended since the last look came to
/// ([`Reconciler::jobs_finished`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobsDone {
    /// How many ended.
    pub ended: usize,
    /// Some ended without doing their work: the next pass reports why.
    pub failed: bool,
    /// Some could not be sent or their result is unknown, for a reason
    /// that may pass: a pass must send them again.
    pub retry: bool,
}

impl<S: SystemdManager> Reconciler<S> {
    /// A reconciler writing to `dir`, with `shim` as the `flotilla` binary
    /// for container units.
    pub fn new(systemd: Arc<S>, dir: UnitDir, shim: PathBuf) -> Reconciler<S> {
        Reconciler {
            systemd,
            dir,
            shim,
            memory: Memory::default(),
            known: None,
            saved: None,
            errors: HashMap::new(),
            metrics: AgentMetrics::default(),
            held: BTreeMap::new(),
            jobs: JoinSet::new(),
            pending: HashMap::new(),
            sent: 0,
            slots: Arc::new(Semaphore::new(JOBS_IN_FLIGHT)),
            container_slots: Arc::new(Semaphore::new(CONTAINER_JOBS_IN_FLIGHT)),
        }
    }

    /// Counts and times every pass in `metrics`.
    pub fn with_metrics(mut self, metrics: AgentMetrics) -> Reconciler<S> {
        self.metrics = metrics;
        self
    }

    /// Keeps which hash each unit was started with in the unit directory,
    /// across restarts of the agent, starting from what is there.
    pub fn remembering(mut self) -> Reconciler<S> {
        self.memory.recorded = self.dir.load_started();
        self.saved = Some(self.memory.recorded.clone());
        self
    }

    /// Leaves `units` alone in the next pass, reported failed with the
    /// reason, as a unit that cannot be rendered is (neither started nor
    /// stopped); that pass then asks to be retried.
    pub fn hold(&mut self, units: BTreeMap<String, String>) {
        self.held = units;
    }

    /// One pass towards `feed`: every unit this machine should have
    /// (assigned units and the `Global` units that apply to it). Returns
    /// once the jobs it sent (and any still running from earlier passes)
    /// have ended, with their failures in the notes.
    pub async fn reconcile(&mut self, feed: &[AssignedUnit]) -> Result<Pass, ReconcileError> {
        let mut pass = self.reconcile_overlapping(feed).await?;
        let mut retry = false;
        while !self.jobs.is_empty() {
            retry |= self.jobs_finished().await.retry;
        }
        self.refresh(&mut pass.units, &pass.hashes);
        if retry {
            pass.action = Action::Retry;
        }
        Ok(pass)
    }

    /// One pass towards `feed` that does not wait for the jobs it sends:
    /// it returns once they are sent, so that the next pass can write and
    /// start the units that arrived meanwhile while these start. Their
    /// results come from [`Reconciler::jobs_finished`]; a later pass sends
    /// no second job for a unit whose job for the same contents runs.
    pub async fn reconcile_overlapping(
        &mut self,
        feed: &[AssignedUnit],
    ) -> Result<Pass, ReconcileError> {
        let started = std::time::Instant::now();
        let outcome = self.pass(feed).await;
        let result = match &outcome {
            Ok(pass) if pass.action == Action::AwaitChange => PassResult::Ok,
            Ok(_) => PassResult::Retry,
            Err(_) => PassResult::Error,
        };
        self.metrics.pass(result, started.elapsed());
        outcome
    }

    /// Whether jobs sent by earlier passes are still running.
    pub fn has_jobs(&self) -> bool {
        !self.jobs.is_empty()
    }

    /// Waits until at least one job sent by an earlier pass ends (forever
    /// when none runs), then takes the results of every job that has
    /// ended: what the units run is recorded, and failures are kept for
    /// the next pass's notes.
    pub async fn jobs_finished(&mut self) -> JobsDone {
        let Some(first) = self.jobs.join_next().await else {
            return std::future::pending().await;
        };
        let mut done = JobsDone::default();
        self.take_finished(first, &mut done);
        while let Some(next) = self.jobs.try_join_next() {
            self.take_finished(next, &mut done);
        }
        self.save_record();
        done
    }

    /// The results of the jobs that have ended, without waiting.
    fn collect_finished(&mut self) {
        let mut done = JobsDone::default();
        while let Some(next) = self.jobs.try_join_next() {
            self.take_finished(next, &mut done);
        }
    }

    fn take_finished(
        &mut self,
        joined: Result<Finished, tokio::task::JoinError>,
        done: &mut JobsDone,
    ) {
        done.ended += 1;
        let f = match joined {
            Ok(f) => f,
            Err(e) => {
                // A job task panicked or was cancelled: which unit is
                // unknown, so the next pass looks at them all again.
                tracing::error!("a job task ended abnormally: {e}");
                done.retry = true;
                return;
            }
        };
        // Only the last job sent for a unit says what it runs: an earlier
        // one was replaced (systemd cancels it) or the unit left.
        if self.pending.get(&f.name).is_none_or(|p| p.seq != f.seq) {
            return;
        }
        self.pending.remove(&f.name);
        let outcome = self.record_job(f.kind, &f.name, &f.hash, f.result);
        done.failed |= outcome != JobOutcome::Done;
        done.retry |= outcome == JobOutcome::Retry;
    }

    /// Records one job's result; whether it did its work.
    fn record_job(
        &mut self,
        kind: JobKind,
        name: &str,
        hash: &str,
        result: Result<JobResult, SystemdError>,
    ) -> JobOutcome {
        let mut outcome = JobOutcome::Done;
        match result {
            Ok(r) if r.is_success() => {
                tracing::info!("{} {name}: {}", kind.as_str(), r.as_str());
                self.errors.remove(name);
            }
            Ok(r) => {
                let message = format!("the {} job ended with result {}", kind.as_str(), r.as_str());
                tracing::warn!("{name}: {message}");
                self.errors
                    .insert(name.to_owned(), (hash.to_owned(), message));
                outcome = JobOutcome::Failed;
            }
            Err(e) => {
                tracing::warn!("{name}: {e}");
                self.errors
                    .insert(name.to_owned(), (hash.to_owned(), e.to_string()));
                if e.is_temporary() {
                    // Not started: the next pass tries again.
                    return JobOutcome::Retry;
                }
                outcome = JobOutcome::Failed;
            }
        }
        match kind {
            JobKind::Start | JobKind::Restart => {
                self.memory.started.insert(name.to_owned(), hash.to_owned());
            }
            JobKind::Stop => {
                self.memory.started.remove(name);
            }
        }
        outcome
    }

    /// Brings the notes of a pass up to date with the jobs that ended since
    /// (`hashes` are the pass's [`Pass::hashes`]): each unit's last job
    /// error and the contents it was started with.
    pub fn refresh(
        &self,
        units: &mut BTreeMap<String, UnitNote>,
        hashes: &BTreeMap<String, String>,
    ) {
        for (name, note) in units.iter_mut() {
            note.error = self.error_of(name, hashes.get(name));
            note.started = self.started_of(name);
        }
    }

    /// The unit's content hash as it was when it was last started here:
    /// the run hash recorded, without the versions of its secrets
    /// ([`run_hash`]).
    fn started_of(&self, name: &str) -> Option<String> {
        let run = self.memory.recorded.get(name)?;
        Some(run.split('+').next().unwrap_or(run).to_owned())
    }

    /// The last job error of a unit, while it runs with `hash`.
    fn error_of(&self, name: &str, hash: Option<&String>) -> Option<String> {
        self.errors
            .get(name)
            .filter(|(h, _)| Some(h) == hash)
            .map(|(_, e)| e.clone())
    }

    /// Keeps what each unit was started with on disk, when it changed.
    fn save_record(&mut self) {
        for (name, hash) in &self.memory.started {
            self.memory.recorded.insert(name.clone(), hash.clone());
        }
        if self
            .saved
            .as_ref()
            .is_some_and(|s| *s != self.memory.recorded)
        {
            // Not fatal: without the record, a restarted agent goes by the
            // markers, as it would after a reboot.
            match self.dir.save_started(&self.memory.recorded) {
                Ok(()) => self.saved = Some(self.memory.recorded.clone()),
                Err(e) => tracing::warn!("cannot record which units were started: {e}"),
            }
        }
    }

    /// Leaves out of `plan` the jobs already running for the same
    /// contents, and restarts (rather than starts) a unit whose start for
    /// other contents still runs: a start merged into it would leave the
    /// unit running the old ones.
    fn skip_pending(&self, plan: &mut Plan, hashes: &BTreeMap<String, String>) {
        plan.jobs.retain_mut(|(kind, name)| {
            let Some(p) = self.pending.get(name.as_str()) else {
                return true;
            };
            let runs = |k: JobKind| matches!(k, JobKind::Start | JobKind::Restart);
            if runs(*kind) && runs(p.kind) {
                if hashes.get(name.as_str()) == Some(&p.hash) {
                    return false;
                }
                *kind = JobKind::Restart;
                return true;
            }
            !(*kind == JobKind::Stop && p.kind == JobKind::Stop)
        });
    }

    /// Sends jobs without waiting for them: each runs as a task that holds
    /// one of the [`JOBS_IN_FLIGHT`] slots until its result, and the start
    /// or restart of a container unit (in `containers`) also one of the
    /// [`CONTAINER_JOBS_IN_FLIGHT`]. Those go after the other jobs.
    fn send_jobs(
        &mut self,
        jobs: &[(JobKind, String)],
        hashes: &BTreeMap<String, String>,
        containers: &HashSet<&str>,
    ) {
        let mut ordered: Vec<_> = jobs
            .iter()
            .map(|(kind, name)| {
                let container_start = *kind != JobKind::Stop && containers.contains(name.as_str());
                (kind, name, container_start)
            })
            .collect();
        // Stable: otherwise in the plan's order.
        ordered.sort_by_key(|(_, _, container_start)| *container_start);
        for (kind, name, container_start) in ordered {
            let container_slots = container_start.then(|| self.container_slots.clone());
            let hash = hashes.get(name).cloned().unwrap_or_default();
            self.sent += 1;
            let seq = self.sent;
            self.pending.insert(
                name.clone(),
                Pending {
                    kind: *kind,
                    hash: hash.clone(),
                    seq,
                },
            );
            let systemd = self.systemd.clone();
            let slots = self.slots.clone();
            let (kind, name) = (*kind, name.clone());
            self.jobs.spawn(async move {
                // The semaphores are never closed.
                let _container_slot = match container_slots {
                    Some(c) => Some(c.acquire_owned().await),
                    None => None,
                };
                let _slot = slots.acquire_owned().await;
                let result = systemd.job(kind, &name).await;
                Finished {
                    kind,
                    name,
                    hash,
                    seq,
                    result,
                }
            });
        }
    }

    async fn pass(&mut self, feed: &[AssignedUnit]) -> Result<Pass, ReconcileError> {
        self.collect_finished();
        let mut desired = render(feed, &self.shim);
        let held = std::mem::take(&mut self.held);
        for d in &mut desired {
            if let Some(why) = held.get(&d.name) {
                d.content = Err(why.clone());
            }
        }
        // What each desired unit runs with once its jobs are done.
        let hashes: BTreeMap<String, String> = desired
            .iter()
            .map(|d| (d.name.clone(), d.hash.clone()))
            .collect();
        let managed = self.dir.managed()?;
        let mut observed = BTreeMap::new();
        let mut refused_early = BTreeMap::new();
        let renderable: Vec<&Desired> = desired.iter().filter(|d| d.content.is_ok()).collect();
        let mut disks = BTreeMap::new();
        for d in &renderable {
            let disk = match managed.get(&d.name) {
                Some(file) => OnDisk::Managed(file.clone()),
                None => self.dir.read(&d.name)?,
            };
            disks.insert(d.name.clone(), disk);
        }
        // Units whose file is as desired and whose state is as it was: their
        // states in one call, the rest of what is known of them from before.
        let mut settled = self.settled(&renderable, &disks).await?;
        let unsettled = renderable
            .iter()
            .filter(|d| !settled.contains_key(&d.name))
            .map(|d| d.name.clone())
            .collect();
        let mut read = self.read_unsettled(unsettled).await?;
        for d in renderable {
            let disk = disks.remove(&d.name).unwrap_or(OnDisk::Absent);
            if let Some(props) = settled.remove(&d.name) {
                observed.insert(d.name.clone(), Observed { disk, props });
                continue;
            }
            let props = match read.remove(&d.name).unwrap_or_else(|| {
                Err(SystemdError::Bus {
                    operation: "read",
                    message: format!("{} was not read", d.name),
                })
            }) {
                Ok(p) => p,
                Err(e) if !e.is_temporary() => {
                    refused_early.insert(d.name.clone(), e.to_string());
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            observed.insert(d.name.clone(), Observed { disk, props });
        }
        let strays = managed
            .keys()
            .filter(|name| !desired.iter().any(|d| &d.name == *name))
            .cloned()
            .collect();
        let mut stray = BTreeMap::new();
        for (name, props) in read_units(&self.systemd, strays, IN_FLIGHT).await {
            stray.insert(name, props?);
        }
        let mut plan = plan(
            &desired,
            &observed,
            &stray,
            &self.memory,
            &self.dir,
            self.systemd.loads_new_unit_files(),
        );
        plan.refused.extend(refused_early);
        self.skip_pending(&mut plan, &hashes);
        let (mut action, removed) = self.apply(&plan, &desired, &observed, &hashes).await?;
        if !held.is_empty() {
            action = Action::Retry;
        }
        // What is known of each unit for the next pass; what this pass's
        // jobs changed, that pass reads in its one call.
        self.known = Some(
            observed
                .iter()
                .map(|(name, o)| (name.clone(), o.props.clone()))
                .collect(),
        );
        let mut units: BTreeMap<String, UnitNote> = desired
            .iter()
            .map(|d| {
                let refused = plan.refused.get(&d.name).cloned();
                let note = UnitNote {
                    hash: refused.is_none().then(|| d.unit_hash.clone()),
                    refused,
                    ..UnitNote::default()
                };
                (d.name.clone(), note)
            })
            .collect();
        // Memory of units that are gone; the record follows what this
        // agent started. A job still running for a unit that left says
        // nothing of what runs any more.
        let wanted = |name: &String| hashes.contains_key(name);
        self.memory.started.retain(|name, _| wanted(name));
        self.memory.recorded.retain(|name, _| wanted(name));
        self.errors.retain(|name, _| wanted(name));
        self.pending.retain(|name, _| wanted(name));
        self.save_record();
        self.refresh(&mut units, &hashes);
        Ok(Pass {
            units,
            removed,
            plan,
            action,
            hashes,
        })
    }

    async fn apply(
        &mut self,
        plan: &Plan,
        desired: &[Desired],
        observed: &BTreeMap<String, Observed>,
        hashes: &BTreeMap<String, String>,
    ) -> Result<(Action, Vec<String>), ReconcileError> {
        let mut action = Action::AwaitChange;
        let stops = plan
            .stop_removed
            .iter()
            .map(|n| (JobKind::Stop, n.clone()))
            .collect();
        let mut keep = Vec::new();
        for (_, name, result) in self.run_jobs(stops).await {
            self.pending.remove(&name);
            if let Err(e) = result {
                tracing::warn!("cannot stop {name}, which no longer runs here: {e}");
                if e.is_temporary() {
                    // Its file stays until it is stopped: the next pass
                    // tries again.
                    action = Action::Retry;
                    keep.push(name.clone());
                }
            }
            self.memory.started.remove(&name);
        }
        for (name, content) in &plan.write {
            self.dir.write(name, content)?;
            tracing::info!("wrote {}", self.dir.file(name).display());
        }
        let mut removed = Vec::new();
        for name in plan.remove.iter().filter(|n| !keep.contains(n)) {
            self.dir.remove(name)?;
            tracing::info!("removed {}", self.dir.file(name).display());
            removed.push(name.clone());
        }
        if plan.reload {
            self.systemd.reload().await?;
        }
        let containers = desired
            .iter()
            .filter(|d| d.container)
            .map(|d| d.name.as_str())
            .collect();
        self.send_jobs(&plan.jobs, hashes, &containers);
        // A launched unit found running with its content is this agent's
        // (after a restart of the agent, say): should it stop later,
        // systemd's `Restart=` decides, not the next pass.
        for d in desired {
            let running = observed.get(&d.name).is_some_and(|o| o.props.is_active());
            let acted =
                plan.jobs.iter().any(|(_, n)| *n == d.name) || self.pending.contains_key(&d.name);
            if d.state == DesiredState::Launched
                && running
                && !acted
                && !plan.refused.contains_key(&d.name)
            {
                self.memory.started.insert(d.name.clone(), d.hash.clone());
            }
        }
        Ok((action, removed))
    }

    /// The units that need no full read this pass, with their properties:
    /// those whose file is already as desired and that either have a job
    /// for these contents under way, or were loaded when the last pass saw
    /// them and are still loaded and in the active state they should have
    /// (so no job will be run for them). Their states come from one call to
    /// systemd for all of them, the rest (such as `FragmentPath`) from the
    /// last pass. Every other unit is read whole.
    async fn settled(
        &self,
        renderable: &[&Desired],
        disks: &BTreeMap<String, OnDisk>,
    ) -> Result<HashMap<String, UnitProperties>, SystemdError> {
        let Some(known) = &self.known else {
            return Ok(HashMap::new());
        };
        let candidates: Vec<(&Desired, &UnitProperties)> = renderable
            .iter()
            .filter_map(|d| {
                let before = known.get(&d.name)?;
                let as_desired = match (disks.get(&d.name), &d.content) {
                    (Some(OnDisk::Managed(file)), Ok(content)) => file.content == *content,
                    _ => false,
                };
                as_desired.then_some((*d, before))
            })
            .collect();
        if candidates.is_empty() {
            return Ok(HashMap::new());
        }
        let names: Vec<String> = candidates.iter().map(|(d, _)| d.name.clone()).collect();
        let states = self.systemd.unit_states(&names).await?;
        let mut out = HashMap::new();
        for ((d, before), now) in candidates.into_iter().zip(states) {
            // Its job for these contents is under way: its state is the
            // job's to change, and reading it whole while systemd starts
            // hundreds of units would only slow them.
            if self.pending.get(&d.name).is_some_and(|p| p.hash == d.hash) {
                let mut props = UnitProperties {
                    load_state: now.load_state,
                    active_state: now.active_state,
                    sub_state: now.sub_state,
                    need_daemon_reload: false,
                    ..before.clone()
                };
                if props.load_state == "loaded" && props.fragment_path.is_empty() {
                    // A new unit the job loaded: from the file this agent
                    // wrote, the only one it had.
                    props.fragment_path = self.dir.file(&d.name).display().to_string();
                }
                out.insert(d.name.clone(), props);
                continue;
            }
            let in_state = match d.state {
                DesiredState::Launched => now.is_active(),
                _ => !now.is_active(),
            };
            // Loaded from a file both times: what the last pass read of
            // it (its FragmentPath) still holds.
            let loaded = before.load_state == "loaded" && now.load_state == "loaded";
            if !loaded || !in_state {
                continue;
            }
            out.insert(
                d.name.clone(),
                UnitProperties {
                    load_state: now.load_state,
                    active_state: now.active_state,
                    sub_state: now.sub_state,
                    // The last pass reloaded if it had to.
                    need_daemon_reload: false,
                    ..before.clone()
                },
            );
        }
        Ok(out)
    }

    /// The properties of units not as the last pass left them: one call
    /// for the states of them all, which is all there is to know of a
    /// unit systemd has no file for (a new unit: defined nowhere else on
    /// the host, so not refused), then where systemd has each of the
    /// others from ([`SystemdManager::unit_source`]): all a plan uses beside
    /// the states. Units arriving in hundreds cost one call, and the units
    /// a restarted agent finds running two properties each, not a whole
    /// read each while systemd is busy starting the units before them.
    async fn read_unsettled(
        &self,
        names: Vec<String>,
    ) -> Result<HashMap<String, Result<UnitProperties, SystemdError>>, SystemdError> {
        if names.is_empty() {
            return Ok(HashMap::new());
        }
        let states = self.systemd.unit_states(&names).await?;
        let mut out = HashMap::new();
        let mut sourced = Vec::new();
        for (name, state) in names.into_iter().zip(states) {
            if state.load_state == "not-found" && !state.is_active() {
                out.insert(name, Ok(state));
            } else {
                sourced.push((name, state));
            }
        }
        // The rest: where systemd has each from, added to its states.
        let systemd = &self.systemd;
        let read: Vec<_> = stream::iter(sourced)
            .map(|(name, state)| async move {
                let source = systemd.unit_source(&name).await;
                let props = source.map(|s| UnitProperties {
                    fragment_path: s.fragment_path,
                    need_daemon_reload: s.need_daemon_reload,
                    ..state
                });
                (name, props)
            })
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        out.extend(read);
        Ok(out)
    }

    /// Runs jobs together, [`IN_FLIGHT`] at a time, and returns each result.
    async fn run_jobs(
        &self,
        jobs: Vec<(JobKind, String)>,
    ) -> Vec<(JobKind, String, Result<JobResult, SystemdError>)> {
        let systemd = self.systemd.clone();
        let mut out: Vec<_> = stream::iter(jobs)
            .map(move |(kind, name)| {
                let systemd = systemd.clone();
                async move {
                    let result = systemd.job(kind, &name).await;
                    (kind, name, result)
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        out.sort_by(|a, b| a.1.cmp(&b.1));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(fragment: &str) -> UnitProperties {
        UnitProperties {
            load_state: "loaded".into(),
            active_state: "active".into(),
            sub_state: "running".into(),
            fragment_path: fragment.into(),
            main_pid: 7,
            ..UnitProperties::default()
        }
    }

    #[test]
    fn a_departed_unit_shadowed_by_the_host_is_not_stopped() {
        let dir = UnitDir::new("/run/systemd/system");
        let stray = BTreeMap::from([
            (
                "mine.service".to_owned(),
                running("/run/systemd/system/mine.service"),
            ),
            (
                "shadowed.service".to_owned(),
                running("/etc/systemd/system/shadowed.service"),
            ),
        ]);
        let plan = plan(
            &[],
            &BTreeMap::new(),
            &stray,
            &Memory::default(),
            &dir,
            true,
        );
        assert_eq!(plan.stop_removed, ["mine.service"]);
        assert_eq!(plan.remove, ["mine.service", "shadowed.service"]);
        assert!(plan.reload);
    }

    #[test]
    fn refusals() {
        let ours = Path::new("/run/systemd/system/x.service");
        let obs = |disk, props| Observed { disk, props };
        let absent = || OnDisk::Absent;
        assert_eq!(
            refusal(
                "x.service",
                &obs(absent(), UnitProperties::not_found()),
                ours
            ),
            None
        );
        assert_eq!(
            refusal(
                "x.service",
                &obs(absent(), running("/run/systemd/system/x.service")),
                ours
            ),
            None
        );
        let transient = refusal(
            "x.service",
            &obs(absent(), running("/run/systemd/transient/x.service")),
            ours,
        );
        assert!(
            transient
                .unwrap()
                .contains("/run/systemd/transient/x.service")
        );
        let mut masked = running("/etc/systemd/system/x.service");
        masked.load_state = "masked".into();
        assert!(
            refusal("x.service", &obs(absent(), masked), ours)
                .unwrap()
                .contains("masked")
        );
        let foreign = refusal(
            "x.service",
            &obs(OnDisk::Foreign, UnitProperties::not_found()),
            ours,
        );
        assert!(foreign.unwrap().contains("not written by flotilla"));
    }
}
