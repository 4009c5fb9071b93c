//! Desired and observed unit state.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::field::{self, FieldError};
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

/// The longest of systemd's state words, hash and container id in a
/// reported [`UnitState`].
pub const MAX_STATE_WORD_LEN: usize = 256;

/// The longest `lastError` of a reported [`UnitState`].
pub const MAX_LAST_ERROR_LEN: usize = 16 * 1024;

impl UnitState {
    /// Checks the strings an agent reported: systemd's state words, the
    /// hash and the container id are one line of at most
    /// [`MAX_STATE_WORD_LEN`] bytes; `lastError` may span lines (newlines
    /// and tabs) up to [`MAX_LAST_ERROR_LEN`] bytes; no other control
    /// character anywhere. The field is named as `unit`'s, e.g.
    /// `state of web.service: subState`.
    pub fn validate(&self) -> Result<(), FieldError> {
        let name = |f: &str| format!("state of {}: {f}", self.unit);
        let words = [
            ("loadState", Some(&self.load_state)),
            ("activeState", Some(&self.active_state)),
            ("subState", Some(&self.sub_state)),
            ("hash", self.hash.as_ref()),
            ("containerId", self.container_id.as_ref()),
        ];
        for (f, value) in words {
            if let Some(value) = value {
                field::check_line(&name(f), value, MAX_STATE_WORD_LEN)?;
            }
        }
        match &self.last_error {
            Some(e) => field::check_text(&name("lastError"), e, MAX_LAST_ERROR_LEN),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> UnitState {
        UnitState {
            unit: UnitName::parse("web.service").unwrap(),
            machine: MachineId::parse("0123456789abcdef0123456789abcdef").unwrap(),
            load_state: "loaded".into(),
            active_state: "failed".into(),
            sub_state: "failed".into(),
            hash: Some("abc".into()),
            main_pid: None,
            n_restarts: 0,
            container_id: Some("c0ffee".into()),
            health: Health::None,
            since_ms: 0,
            last_error: Some("the unit failed:\n\texit status 1".into()),
        }
    }

    #[test]
    fn reported_strings_are_checked() {
        assert_eq!(state().validate(), Ok(()));
        let mut s = state();
        s.sub_state = "running\u{1b}[8m".into();
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "state of web.service: subState holds the control character U+001B at byte 7; control characters are refused"
        );
        let mut s = state();
        s.container_id = Some("c".repeat(MAX_STATE_WORD_LEN + 1));
        assert!(s.validate().is_err());
        let mut s = state();
        s.last_error = Some("e".repeat(MAX_LAST_ERROR_LEN + 1));
        assert!(s.validate().is_err());
        let mut s = state();
        s.last_error = Some("bad\r".into());
        assert!(s.validate().is_err());
    }
}
