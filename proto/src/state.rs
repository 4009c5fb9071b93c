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
    /// The content hash the unit was last started with on this machine:
    /// set once its start (or restart) job for those contents has ended,
    /// so a unit that is active with the hash of the unit's current
    /// contents runs them. Absent while unknown (no job of this agent's
    /// has started it, or an agent from before this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_hash: Option<String>,
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

/// The longest `lastError` stored of a reported [`UnitState`].
pub const MAX_LAST_ERROR_LEN: usize = 16 * 1024;

impl UnitState {
    /// Checks the strings an agent reported that it takes from systemd or
    /// Docker as they are: systemd's state words, the hash and the
    /// container id are one line of at most [`MAX_STATE_WORD_LEN`] bytes
    /// without control characters. The field is named with the unit, e.g.
    /// `state of web.service: subState`. `lastError` is not refused but
    /// cleaned ([`UnitState::clean_last_error`]).
    pub fn validate(&self) -> Result<(), FieldError> {
        let name = |f: &str| format!("state of {}: {f}", self.unit);
        let words = [
            ("loadState", Some(&self.load_state)),
            ("activeState", Some(&self.active_state)),
            ("subState", Some(&self.sub_state)),
            ("hash", self.hash.as_ref()),
            ("startedHash", self.started_hash.as_ref()),
            ("containerId", self.container_id.as_ref()),
        ];
        for (f, value) in words {
            if let Some(value) = value {
                field::check_line(&name(f), value, MAX_STATE_WORD_LEN)?;
            }
        }
        Ok(())
    }

    /// Makes `lastError` fit to store. An agent quotes errors it does not
    /// choose (a unit file's text, systemd's and Docker's messages), and
    /// refusing its report would stop it reporting every other unit too;
    /// so control characters other than newline and tab are escaped
    /// ([`field::escape_controls`]) and the text is cut at
    /// [`MAX_LAST_ERROR_LEN`] bytes.
    pub fn clean_last_error(&mut self) {
        if let Some(error) = &mut self.last_error {
            let needs_escape = error
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t');
            if needs_escape {
                *error = field::escape_controls(error, &['\n', '\t']);
            }
            if error.len() > MAX_LAST_ERROR_LEN {
                let mut cut = MAX_LAST_ERROR_LEN - "...".len();
                while !error.is_char_boundary(cut) {
                    cut -= 1;
                }
                error.truncate(cut);
                error.push_str("...");
            }
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
            started_hash: None,
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
        // lastError is not refused, even with what would be refused
        // elsewhere.
        let mut s = state();
        s.last_error = Some(format!("bad\r\u{1b}[31m{}", "é".repeat(MAX_LAST_ERROR_LEN)));
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn last_errors_are_cleaned_not_refused() {
        let mut s = state();
        s.clean_last_error();
        assert_eq!(s.last_error, state().last_error, "a plain error changed");
        s.last_error = Some(format!("bad\r\u{1b}[31m{}", "é".repeat(MAX_LAST_ERROR_LEN)));
        s.clean_last_error();
        let cleaned = s.last_error.unwrap();
        assert!(cleaned.starts_with("bad\\r\\u{1b}[31mé"), "{cleaned:.40}");
        assert!(cleaned.len() <= MAX_LAST_ERROR_LEN && cleaned.ends_with("..."));
        assert!(!cleaned.chars().any(|c| c.is_control()));
    }
}
