//! Desired and observed unit state.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::machine::MachineId;
use crate::name::UnitName;

/// What the user wants of a unit, with fleet's three states.
///
/// - `inactive`: stored in the cluster, not scheduled (`flotilla submit`).
/// - `loaded`: scheduled to a machine and its file written to systemd there,
///   not started (`flotilla load`, and `flotilla stop` from launched).
/// - `launched`: scheduled, loaded and started (`flotilla start`).
///
/// Any state can be asked for from any other: `start` on an inactive unit
/// schedules, loads and starts it; `unload` on a launched unit stops it and
/// removes its file. `destroy` removes the unit altogether, which is not a
/// state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    Inactive,
    Loaded,
    Launched,
}

impl DesiredState {
    /// Whether a unit in this state needs a machine.
    pub fn is_scheduled(self) -> bool {
        self != DesiredState::Inactive
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DesiredState::Inactive => "inactive",
            DesiredState::Loaded => "loaded",
            DesiredState::Launched => "launched",
        }
    }
}

impl fmt::Display for DesiredState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown desired state name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown desired state {0:?}: expected inactive, loaded or launched")]
pub struct DesiredStateError(pub String);

impl std::str::FromStr for DesiredState {
    type Err = DesiredStateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "inactive" => Ok(DesiredState::Inactive),
            "loaded" => Ok(DesiredState::Loaded),
            "launched" => Ok(DesiredState::Launched),
            other => Err(DesiredStateError(other.to_owned())),
        }
    }
}

/// A container's health, as its health check reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// No health check is defined.
    #[default]
    None,
    /// The check has not passed yet (within its start period).
    Starting,
    Healthy,
    Unhealthy,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::None => "-",
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        })
    }
}

/// A unit as its machine's agent observes it in systemd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnitState {
    pub unit: UnitName,
    pub machine: MachineId,
    /// systemd's `LoadState` (`loaded`, `not-found`, `bad-setting`, ...).
    pub load_state: String,
    /// systemd's `ActiveState` (`active`, `inactive`, `failed`, ...).
    pub active_state: String,
    /// systemd's `SubState` (`running`, `dead`, `exited`, ...).
    pub sub_state: String,
    /// The content hash of the unit file the agent has written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_pid: Option<u32>,
    #[serde(default)]
    pub n_restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default)]
    pub health: Health,
    /// When the active state last changed, in milliseconds since the Unix
    /// epoch.
    pub since_ms: u64,
    /// The last failure the agent saw for this unit, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}
