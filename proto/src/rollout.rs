//! Rolling updates: when the contents of several launched units change
//! together (the instances of one template, or a group named in
//! `flotilla.yaml`), the leader restarts them in waves of at most
//! `max-parallel` units, and starts the next wave only once every unit of
//! the wave has run its new contents, active (and healthy, for units with
//! a health check), for `min-healthy-time`. The first failure stops the
//! rollout; with `auto-revert`, the units it changed get their previous
//! contents back. See docs/rollouts.md.
//!
//! This module holds the settings, their defaults and limits, the JSON
//! shapes of `/v1/rollouts`, and the one rule of when a machine's report
//! says a unit runs given contents ([`on_contents`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::name::UnitName;
use crate::state::{Health, UnitState};

/// Units restarted at once when nothing says otherwise.
pub const DEFAULT_MAX_PARALLEL: u32 = 1;

/// How long a wave's units must run their new contents, active and
/// healthy, before the next wave starts, when nothing says otherwise.
pub const DEFAULT_MIN_HEALTHY_TIME: Duration = Duration::from_secs(10);

/// How long a wave may take to run its new contents (from when they were
/// written) before the rollout fails, when nothing says otherwise.
pub const DEFAULT_WAVE_TIMEOUT: Duration = Duration::from_secs(300);

/// The most units one rollout may hold: a rollout is written in one store
/// transaction together with a lock per unit, and etcd refuses a
/// transaction of more than 128 operations by default.
pub const MAX_ROLLOUT_UNITS: usize = 100;

/// The largest `max-parallel` accepted (a rollout has at most
/// [`MAX_ROLLOUT_UNITS`] units).
pub const MAX_PARALLEL: u32 = MAX_ROLLOUT_UNITS as u32;

/// The longest `min-healthy-time` and wave timeout accepted: one day.
pub const MAX_ROLLOUT_TIME: Duration = Duration::from_secs(24 * 3600);

/// The longest name of a rollout's group, in bytes.
pub const MAX_GROUP_LEN: usize = 256;

/// How many finished rollouts the cluster keeps for `rollout status`; the
/// oldest finished ones are dropped when a new rollout starts.
pub const KEPT_FINISHED: usize = 50;

/// Settings a unit file (`[X-Fleet]`), `flotilla.yaml` or a request may
/// give; each one left out falls back to the next source, then to the
/// defaults. In JSON, times are milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RolloutOptions {
    /// `RolloutMaxParallel=`: units restarted at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    /// `RolloutMinHealthyTime=`: how long a wave must run its new
    /// contents before the next one starts.
    #[serde(
        skip_serializing_if = "Option::is_none",
        rename = "minHealthyTimeMs",
        with = "ms_option"
    )]
    pub min_healthy_time: Option<Duration>,
    /// `RolloutAutoRevert=`: on failure, give the changed units their
    /// previous contents back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_revert: Option<bool>,
    /// `RolloutWaveTimeout=`: how long a wave may take to run its new
    /// contents before the rollout fails.
    #[serde(
        skip_serializing_if = "Option::is_none",
        rename = "waveTimeoutMs",
        with = "ms_option"
    )]
    pub wave_timeout: Option<Duration>,
}

impl RolloutOptions {
    /// Whether no setting is given.
    pub fn is_empty(&self) -> bool {
        *self == RolloutOptions::default()
    }

    /// These options, each one left out taken from `fallback`.
    pub fn or(self, fallback: RolloutOptions) -> RolloutOptions {
        RolloutOptions {
            max_parallel: self.max_parallel.or(fallback.max_parallel),
            min_healthy_time: self.min_healthy_time.or(fallback.min_healthy_time),
            auto_revert: self.auto_revert.or(fallback.auto_revert),
            wave_timeout: self.wave_timeout.or(fallback.wave_timeout),
        }
    }

    /// Checks each given value against its limit.
    pub fn validate(&self) -> Result<(), RolloutError> {
        if let Some(n) = self.max_parallel
            && !(1..=MAX_PARALLEL).contains(&n)
        {
            return Err(RolloutError::MaxParallel(n));
        }
        for (what, d) in [
            ("minHealthyTimeMs", self.min_healthy_time),
            ("waveTimeoutMs", self.wave_timeout),
        ] {
            if let Some(d) = d
                && d > MAX_ROLLOUT_TIME
            {
                return Err(RolloutError::TooLong {
                    what,
                    ms: duration_ms(d),
                });
            }
        }
        if self.wave_timeout == Some(Duration::ZERO) {
            return Err(RolloutError::ZeroTimeout);
        }
        Ok(())
    }

    /// The settings, with the defaults for what is left out.
    pub fn resolve(&self) -> RolloutSettings {
        RolloutSettings {
            max_parallel: self.max_parallel.unwrap_or(DEFAULT_MAX_PARALLEL),
            min_healthy_time_ms: duration_ms(
                self.min_healthy_time.unwrap_or(DEFAULT_MIN_HEALTHY_TIME),
            ),
            auto_revert: self.auto_revert.unwrap_or(false),
            wave_timeout_ms: duration_ms(self.wave_timeout.unwrap_or(DEFAULT_WAVE_TIMEOUT)),
        }
    }
}

/// A rollout's settings, as it runs with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSettings {
    pub max_parallel: u32,
    pub min_healthy_time_ms: u64,
    pub auto_revert: bool,
    pub wave_timeout_ms: u64,
}

/// A setting out of its bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    #[error("maxParallel {0} is out of range: give 1 to {MAX_PARALLEL}")]
    MaxParallel(u32),
    #[error("{what} {ms} is over the limit of one day ({limit} ms)", limit = duration_ms(MAX_ROLLOUT_TIME))]
    TooLong { what: &'static str, ms: u64 },
    #[error("waveTimeoutMs must be longer than zero")]
    ZeroTimeout,
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

mod ms_option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(super::duration_ms(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// `POST /v1/rollouts`: new contents for units that change together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRequest {
    /// The group's name: the template (`worker@.service`), or a group of
    /// `flotilla.yaml`'s `rollouts:`. `rollout status NAME` finds it by it.
    pub group: String,
    /// Each unit and its new contents (unit-file text), in the order the
    /// waves take them. Every unit must exist.
    pub units: Vec<RolloutUnitPut>,
    /// Settings over the units' own `[X-Fleet]` ones.
    #[serde(default, skip_serializing_if = "RolloutOptions::is_empty")]
    pub settings: RolloutOptions,
}

/// One unit of a [`RolloutRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutUnitPut {
    pub name: UnitName,
    pub text: String,
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RolloutState {
    /// Waves are being rolled out.
    Running,
    /// Every unit runs its new contents.
    Succeeded,
    /// A wave failed; `failure` says why. The units of later waves keep
    /// their previous contents (and, with auto-revert, so do those the
    /// rollout changed).
    Failed,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Succeeded => "succeeded",
            RolloutState::Failed => "failed",
        }
    }
}

impl std::fmt::Display for RolloutState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `GET /v1/rollouts/{id}`: a rollout and its progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// Unique; sorts in the order rollouts started.
    pub id: String,
    pub group: String,
    pub state: RolloutState,
    pub settings: RolloutSettings,
    /// How many waves there are.
    pub waves: usize,
    /// How many waves completed.
    pub waves_done: usize,
    /// The wave being rolled out (0-based), while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_wave: Option<usize>,
    /// How many units run their new contents, as their machines report.
    pub units_on_new: usize,
    pub units: Vec<RolloutUnitStatus>,
    /// Why the rollout failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Whether the units the rollout changed got their previous contents
    /// back after the failure.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reverted: bool,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// One unit of a [`Rollout`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutUnitStatus {
    pub name: UnitName,
    /// The wave it is in (0-based).
    pub wave: usize,
    pub old_hash: String,
    pub new_hash: String,
    /// Whether its machines report it runs the new contents.
    pub on_new: bool,
}

/// `GET /v1/rollouts`: the rollouts the cluster keeps, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutList {
    pub rollouts: Vec<Rollout>,
}

/// Where one machine's report of a unit is towards running the contents
/// whose hash is `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnContents {
    /// Started with those contents, active, and healthy if it has a
    /// health check.
    Runs,
    /// Not yet, and why.
    Waiting(String),
    /// It failed with those contents (or the agent refused them), and why.
    Failed(String),
}

/// Where `s` is towards running the contents whose hash is `hash`: the
/// state's `startedHash` says which contents systemd last started, so a
/// unit failed with its old contents is not taken as failing the new.
pub fn on_contents(s: &UnitState, hash: &str) -> OnContents {
    let active = matches!(s.active_state.as_str(), "active" | "reloading");
    let failed = s.active_state == "failed" || s.sub_state == "auto-restart";
    let why = || {
        s.last_error.clone().unwrap_or_else(|| {
            if s.sub_state == "auto-restart" {
                "it stopped and systemd restarts it (Restart=)".to_owned()
            } else {
                format!("the unit is {}/{}", s.active_state, s.sub_state)
            }
        })
    };
    // Refused by the agent: nothing it does changes that.
    if s.load_state == "error" && s.hash.is_none() {
        return OnContents::Failed(why());
    }
    if s.active_state == "unknown" {
        return OnContents::Waiting("its machine is unreachable".to_owned());
    }
    match s.started_hash.as_deref() {
        Some(h) if h == hash => {
            if failed {
                OnContents::Failed(why())
            } else if s.health == Health::Unhealthy {
                OnContents::Failed("its health check fails".to_owned())
            } else if !active {
                OnContents::Waiting(format!("it is {}", s.active_state))
            } else if s.health == Health::Starting {
                OnContents::Waiting("its health check has not passed yet".to_owned())
            } else {
                OnContents::Runs
            }
        }
        _ if s.hash.as_deref() == Some(hash) => {
            OnContents::Waiting("it has not been started with them yet".to_owned())
        }
        _ => OnContents::Waiting("its machine has not written them yet".to_owned()),
    }
}

/// Where a unit is towards running `hash` on every machine that reports
/// it: it runs them when at least one machine reports it and all do; it
/// failed when one machine says so.
pub fn unit_on_contents(states: &[UnitState], hash: &str) -> OnContents {
    if states.is_empty() {
        return OnContents::Waiting("no machine reports it yet".to_owned());
    }
    let mut waiting = None;
    for s in states {
        match on_contents(s, hash) {
            OnContents::Runs => {}
            OnContents::Failed(why) => {
                return OnContents::Failed(format!("on machine {}: {why}", short(&s.machine)));
            }
            OnContents::Waiting(why) => {
                waiting.get_or_insert(format!("on machine {}: {why}", short(&s.machine)));
            }
        }
    }
    match waiting {
        Some(why) => OnContents::Waiting(why),
        None => OnContents::Runs,
    }
}

fn short(m: &crate::MachineId) -> &str {
    &m.as_str()[..8.min(m.as_str().len())]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MachineId;

    fn state(active: &str, hash: Option<&str>, started: Option<&str>) -> UnitState {
        UnitState {
            unit: UnitName::parse("w@1.service").unwrap(),
            machine: MachineId::parse("0123456789abcdef0123456789abcdef").unwrap(),
            load_state: "loaded".into(),
            active_state: active.into(),
            sub_state: if active == "active" {
                "running"
            } else {
                "dead"
            }
            .into(),
            hash: hash.map(str::to_owned),
            started_hash: started.map(str::to_owned),
            main_pid: None,
            n_restarts: 0,
            container_id: None,
            health: Health::None,
            since_ms: 0,
            last_error: (active == "failed").then(|| "exit status 1".to_owned()),
        }
    }

    #[test]
    fn a_unit_runs_contents_once_started_with_them_and_active() {
        assert_eq!(
            on_contents(&state("active", Some("new"), Some("new")), "new"),
            OnContents::Runs
        );
        assert!(matches!(
            on_contents(&state("active", Some("new"), Some("old")), "new"),
            OnContents::Waiting(_)
        ));
        assert!(matches!(
            on_contents(&state("active", Some("old"), Some("old")), "new"),
            OnContents::Waiting(_)
        ));
    }

    #[test]
    fn a_failure_counts_only_with_the_contents_it_was_started_with() {
        assert_eq!(
            on_contents(&state("failed", Some("new"), Some("new")), "new"),
            OnContents::Failed("exit status 1".into())
        );
        assert!(matches!(
            on_contents(&state("failed", Some("new"), Some("old")), "new"),
            OnContents::Waiting(_)
        ));
    }

    #[test]
    fn health_checks_gate_running() {
        let mut s = state("active", Some("new"), Some("new"));
        s.health = Health::Starting;
        assert!(matches!(on_contents(&s, "new"), OnContents::Waiting(_)));
        s.health = Health::Healthy;
        assert_eq!(on_contents(&s, "new"), OnContents::Runs);
        s.health = Health::Unhealthy;
        assert!(matches!(on_contents(&s, "new"), OnContents::Failed(_)));
    }

    #[test]
    fn a_unit_with_no_report_waits() {
        assert!(matches!(
            unit_on_contents(&[], "new"),
            OnContents::Waiting(_)
        ));
    }

    #[test]
    fn options_fall_back_and_resolve_to_defaults() {
        let unit = RolloutOptions {
            max_parallel: Some(3),
            auto_revert: Some(true),
            ..RolloutOptions::default()
        };
        let asked = RolloutOptions {
            max_parallel: Some(2),
            ..RolloutOptions::default()
        };
        let s = asked.or(unit).resolve();
        assert_eq!(s.max_parallel, 2);
        assert!(s.auto_revert);
        assert_eq!(s.min_healthy_time_ms, 10_000);
        assert_eq!(s.wave_timeout_ms, 300_000);
        let json = serde_json::to_value(asked).unwrap();
        assert_eq!(json, serde_json::json!({"maxParallel": 2}));
        let back: RolloutOptions =
            serde_json::from_value(serde_json::json!({"minHealthyTimeMs": 1500})).unwrap();
        assert_eq!(back.min_healthy_time, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn settings_out_of_bounds_are_refused() {
        let zero = RolloutOptions {
            max_parallel: Some(0),
            ..RolloutOptions::default()
        };
        assert_eq!(
            zero.validate().unwrap_err().to_string(),
            "maxParallel 0 is out of range: give 1 to 100"
        );
        let long = RolloutOptions {
            min_healthy_time: Some(Duration::from_secs(2 * 24 * 3600)),
            ..RolloutOptions::default()
        };
        assert!(long.validate().is_err());
    }
}
