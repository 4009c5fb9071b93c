//! An in-memory systemd for unit tests that behaves like the real one in
//! what the agent relies on:
//!
//! - it reads unit files from a runtime unit directory (a temporary
//!   directory in tests): a unit not yet loaded is loaded from its file
//!   when first asked for; a loaded unit keeps the text it was loaded with
//!   until [`SystemdManager::reload`], and says `NeedDaemonReload` when its
//!   file changed meanwhile;
//! - units defined elsewhere on the host ([`FakeSystemd::add_host_unit`])
//!   shadow the runtime directory, as `/etc/systemd/system` does;
//! - start, stop and restart change `ActiveState`, `SubState` and
//!   `MainPID` (a new PID for every start), and notify subscribers;
//! - starting a unit without a file is refused, as systemd refuses it;
//! - a unit asked for before its file existed is loaded once the file is
//!   there, as systemd 246 and later do, or ([`FakeSystemd::before_246`])
//!   stays not found until a reload, as older systemd does.
//!
//! It records every call ([`FakeSystemd::calls`]), can hold jobs running
//! ([`FakeSystemd::hold_jobs`]), and can inject failures:
//! a job that ends `failed` ([`FakeSystemd::fail_jobs_of`]), a bus that is
//! down ([`FakeSystemd::set_unavailable`]), a main process that dies
//! ([`FakeSystemd::crash`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::{
    ChangeFeed, ChangeSink, JobKind, JobResult, SystemdError, SystemdManager, UnitProperties,
    change_feed,
};

/// A call the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeCall {
    Reload,
    Job(JobKind, String),
    Unit(String),
    /// `unit_states` of this many units.
    UnitStates(usize),
}

#[derive(Debug, Clone)]
struct FakeUnit {
    fragment: PathBuf,
    /// The file's text when systemd last read it.
    text: String,
    active: bool,
    failed: bool,
    main_pid: u32,
    n_restarts: u32,
    state_change_usec: u64,
}

#[derive(Debug)]
struct State {
    unit_dir: PathBuf,
    /// Units defined outside the runtime directory: name to fragment path.
    host_units: BTreeMap<String, PathBuf>,
    loaded: BTreeMap<String, FakeUnit>,
    calls: Vec<FakeCall>,
    failing_jobs: BTreeSet<String>,
    unavailable: bool,
    next_pid: u32,
    clock_usec: u64,
    sinks: Vec<ChangeSink>,
    /// Whether a unit asked for before its file existed is loaded once
    /// the file is there (systemd 246 and later), or stays not found until
    /// a reload, as older systemd keeps it.
    loads_new_files: bool,
    /// Units asked for without a file, when they stay not found.
    not_found: BTreeSet<String>,
    /// While `true`, jobs are taken (and recorded) but do not run.
    holding: tokio::sync::watch::Sender<bool>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct FakeSystemd {
    state: Mutex<State>,
}

impl FakeSystemd {
    /// A systemd whose runtime unit directory is `unit_dir`.
    pub fn new(unit_dir: &Path) -> FakeSystemd {
        FakeSystemd {
            state: Mutex::new(State {
                unit_dir: unit_dir.to_owned(),
                host_units: BTreeMap::new(),
                loaded: BTreeMap::new(),
                calls: Vec::new(),
                failing_jobs: BTreeSet::new(),
                unavailable: false,
                next_pid: 1000,
                clock_usec: 1_700_000_000_000_000,
                sinks: Vec::new(),
                loads_new_files: true,
                not_found: BTreeSet::new(),
                holding: tokio::sync::watch::Sender::new(false),
            }),
        }
    }

    /// While `hold` is true, jobs are taken (and recorded) but wait to run
    /// until it is false again, as long jobs do.
    pub fn hold_jobs(&self, hold: bool) {
        self.lock().holding.send_replace(hold);
    }

    /// As systemd before 246: a unit asked for before its file existed
    /// stays not found until a reload.
    pub fn before_246(self) -> FakeSystemd {
        self.lock().loads_new_files = false;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Test state: a panic elsewhere must not hide it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A unit defined by a file elsewhere on the host (such as
    /// `/etc/systemd/system/NAME`), running.
    pub fn add_host_unit(&self, name: &str, fragment: &Path) {
        let mut s = self.lock();
        s.host_units.insert(name.to_owned(), fragment.to_owned());
        let pid = s.pid();
        let now = s.tick();
        s.loaded.insert(
            name.to_owned(),
            FakeUnit {
                fragment: fragment.to_owned(),
                text: String::new(),
                active: true,
                failed: false,
                main_pid: pid,
                n_restarts: 0,
                state_change_usec: now,
            },
        );
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.lock().calls.clone()
    }

    /// Forgets the calls recorded so far.
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// The calls that change something (reloads and jobs), in order.
    pub fn changes(&self) -> Vec<FakeCall> {
        self.calls()
            .into_iter()
            .filter(|c| !matches!(c, FakeCall::Unit(_) | FakeCall::UnitStates(_)))
            .collect()
    }

    /// From now on, jobs that start `unit` end `failed` and leave it
    /// failed.
    pub fn fail_jobs_of(&self, unit: &str) {
        self.lock().failing_jobs.insert(unit.to_owned());
    }

    /// While `down`, every call fails as if the bus were gone.
    pub fn set_unavailable(&self, down: bool) {
        self.lock().unavailable = down;
    }

    /// The main process of `unit` dies: the unit fails.
    pub fn crash(&self, unit: &str) {
        let mut s = self.lock();
        let now = s.tick();
        if let Some(u) = s.loaded.get_mut(unit) {
            u.active = false;
            u.failed = true;
            u.main_pid = 0;
            u.state_change_usec = now;
        }
        s.notify(unit);
    }

    /// The properties of `unit` as systemd would give them, without
    /// recording a call or loading anything.
    pub fn peek(&self, unit: &str) -> UnitProperties {
        let s = self.lock();
        s.props(unit)
    }

    /// Whether `unit` runs.
    pub fn is_active(&self, unit: &str) -> bool {
        self.peek(unit).is_active()
    }

    /// The text systemd loaded `unit` with, if loaded.
    pub fn loaded_text(&self, unit: &str) -> Option<String> {
        self.lock().loaded.get(unit).map(|u| u.text.clone())
    }
}

impl State {
    fn pid(&mut self) -> u32 {
        self.next_pid += 1;
        self.next_pid
    }

    fn tick(&mut self) -> u64 {
        self.clock_usec += 1000;
        self.clock_usec
    }

    fn notify(&mut self, unit: &str) {
        self.sinks.retain(|s| !s.is_abandoned());
        for sink in &self.sinks {
            sink.push(unit);
        }
    }

    fn check_available(&self, operation: &'static str) -> Result<(), SystemdError> {
        if self.unavailable {
            return Err(SystemdError::Bus {
                operation,
                message: "the bus is down (fake)".into(),
            });
        }
        Ok(())
    }

    fn file(&self, unit: &str) -> Option<String> {
        std::fs::read_to_string(self.unit_dir.join(unit)).ok()
    }

    /// Loads `unit` from its file if it is not loaded; whether it is now.
    fn load(&mut self, unit: &str) -> bool {
        if self.loaded.contains_key(unit) {
            return true;
        }
        if self.not_found.contains(unit) {
            return false;
        }
        let Some(text) = self.file(unit) else {
            if !self.loads_new_files {
                self.not_found.insert(unit.to_owned());
            }
            return false;
        };
        let fragment = self.unit_dir.join(unit);
        self.loaded.insert(
            unit.to_owned(),
            FakeUnit {
                fragment,
                text,
                active: false,
                failed: false,
                main_pid: 0,
                n_restarts: 0,
                state_change_usec: 0,
            },
        );
        true
    }

    fn props(&self, unit: &str) -> UnitProperties {
        let Some(u) = self.loaded.get(unit) else {
            return UnitProperties::not_found();
        };
        let host = self.host_units.contains_key(unit);
        let on_disk = if host { None } else { self.file(unit) };
        let (active_state, sub_state) = match (u.active, u.failed) {
            (true, _) => ("active", "running"),
            (false, true) => ("failed", "failed"),
            (false, false) => ("inactive", "dead"),
        };
        UnitProperties {
            load_state: if host || on_disk.is_some() {
                "loaded".into()
            } else {
                "not-found".into()
            },
            active_state: active_state.into(),
            sub_state: sub_state.into(),
            fragment_path: u.fragment.display().to_string(),
            control_group: if u.active {
                format!("/system.slice/{unit}")
            } else {
                String::new()
            },
            need_daemon_reload: !host && on_disk.as_deref() != Some(u.text.as_str()),
            state_change_usec: u.state_change_usec,
            main_pid: u.main_pid,
            n_restarts: u.n_restarts,
            status_text: String::new(),
            exec_main_status: 0,
            result: if u.failed { "exit-code" } else { "success" }.into(),
            ..UnitProperties::default()
        }
    }
}

impl SystemdManager for FakeSystemd {
    fn loads_new_unit_files(&self) -> bool {
        self.lock().loads_new_files
    }

    async fn reload(&self) -> Result<(), SystemdError> {
        let mut s = self.lock();
        s.check_available("reload")?;
        s.calls.push(FakeCall::Reload);
        s.not_found.clear();
        let names: Vec<String> = s.loaded.keys().cloned().collect();
        for name in names {
            if s.host_units.contains_key(&name) {
                continue;
            }
            match s.file(&name) {
                Some(text) => {
                    if let Some(u) = s.loaded.get_mut(&name) {
                        u.text = text;
                    }
                }
                None => {
                    // Gone from disk: systemd forgets it once it is stopped.
                    if s.loaded.get(&name).is_some_and(|u| !u.active) {
                        s.loaded.remove(&name);
                    }
                }
            }
        }
        Ok(())
    }

    async fn job(&self, kind: JobKind, unit: &str) -> Result<JobResult, SystemdError> {
        let mut holding = {
            let mut s = self.lock();
            s.check_available(kind.as_str())?;
            s.calls.push(FakeCall::Job(kind, unit.to_owned()));
            s.holding.subscribe()
        };
        // The sender lives as long as the fake.
        let _ = holding.wait_for(|held| !*held).await;
        let mut s = self.lock();
        if !s.load(unit) {
            if kind == JobKind::Stop {
                return Ok(JobResult::Skipped);
            }
            return Err(SystemdError::Refused {
                operation: kind.as_str(),
                unit: unit.to_owned(),
                name: "org.freedesktop.systemd1.NoSuchUnit".into(),
                message: format!("Unit {unit} not found."),
            });
        }
        let failing = s.failing_jobs.contains(unit);
        let pid = s.pid();
        let now = s.tick();
        let Some(u) = s.loaded.get_mut(unit) else {
            return Err(SystemdError::Bus {
                operation: kind.as_str(),
                message: "unit vanished (fake)".into(),
            });
        };
        let result = match kind {
            JobKind::Stop => {
                if u.active || u.failed {
                    u.state_change_usec = now;
                }
                u.active = false;
                u.failed = false;
                u.main_pid = 0;
                JobResult::Done
            }
            JobKind::Start | JobKind::Restart if failing => {
                u.active = false;
                u.failed = true;
                u.main_pid = 0;
                u.state_change_usec = now;
                JobResult::Failed
            }
            JobKind::Start if u.active => JobResult::Done,
            JobKind::Start | JobKind::Restart => {
                u.active = true;
                u.failed = false;
                u.main_pid = pid;
                u.state_change_usec = now;
                JobResult::Done
            }
        };
        s.notify(unit);
        Ok(result)
    }

    async fn unit(&self, name: &str) -> Result<UnitProperties, SystemdError> {
        let mut s = self.lock();
        s.check_available("load")?;
        s.calls.push(FakeCall::Unit(name.to_owned()));
        s.load(name);
        Ok(s.props(name))
    }

    async fn unit_states(&self, names: &[String]) -> Result<Vec<UnitProperties>, SystemdError> {
        let mut s = self.lock();
        s.check_available("list")?;
        s.calls.push(FakeCall::UnitStates(names.len()));
        Ok(names
            .iter()
            .map(|name| {
                s.load(name);
                let full = s.props(name);
                UnitProperties {
                    load_state: full.load_state,
                    active_state: full.active_state,
                    sub_state: full.sub_state,
                    ..UnitProperties::default()
                }
            })
            .collect())
    }

    async fn subscribe(&self) -> Result<ChangeFeed, SystemdError> {
        let mut s = self.lock();
        s.check_available("subscribe")?;
        let (sink, feed) = change_feed();
        s.sinks.push(sink);
        Ok(feed)
    }
}
