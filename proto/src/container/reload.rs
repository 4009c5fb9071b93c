//! `ReloadCmd=` and `ReloadSignal=`: what `systemctl reload` does to the
//! container. flotilla renders `ExecReload=flotilla shim reload`, which runs
//! the command in the container (as `docker exec`) or sends it the signal
//! (as `docker kill --signal`), as Quadlet's `ExecReload=` does with
//! `podman exec` and `podman kill`.
//!
//! | key | value |
//! |---|---|
//! | `ReloadCmd=` | a command line, quoted as systemd's, run in the container |
//! | `ReloadSignal=` | a signal sent to the container's main process |
//!
//! The two exclude each other.

use serde::{Deserialize, Serialize};

use crate::diagnostic::Diagnostics;
use crate::unit_file::UnitFile;
use crate::value::split_words;

use super::{ContainerSpec, SECTION, Signal};

/// The keys read here.
pub(super) const KEYS: &[&str] = &["ReloadCmd", "ReloadSignal"];

/// What `systemctl reload` does (`ContainerSpec::reload`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadOptions {
    /// `ReloadCmd=`: a program and its arguments, run in the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    /// `ReloadSignal=`: sent to the container's main process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<Signal>,
}

impl ReloadOptions {
    /// Whether the unit can be reloaded: one of the two is set.
    pub fn is_empty(&self) -> bool {
        self.cmd.is_empty() && self.signal.is_none()
    }
}

/// Reads one assignment of a key of [`KEYS`]; `value` has its specifiers
/// expanded, and is empty for an empty assignment (which resets the key).
pub(super) fn read(r: &mut ReloadOptions, key: &str, value: &str) -> Result<(), String> {
    match key {
        "ReloadCmd" => {
            r.cmd.clear();
            if !value.is_empty() {
                let words = split_words(value).map_err(|e| format!("bad quoting: {e}"))?;
                if words.first().is_none_or(String::is_empty) {
                    return Err(format!(
                        "expected a program and its arguments, found {value:?}"
                    ));
                }
                r.cmd = words;
            }
        }
        "ReloadSignal" => {
            r.signal = None;
            if !value.is_empty() {
                r.signal = Some(value.parse::<Signal>().map_err(|e| e.to_string())?);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Unit-wide rule: `ReloadCmd=` and `ReloadSignal=` exclude each other, as
/// in Quadlet.
pub(super) fn check(file: &UnitFile, spec: &ContainerSpec, diags: &mut Diagnostics) {
    if spec.reload.cmd.is_empty() || spec.reload.signal.is_none() {
        return;
    }
    if let Some(v) = file.last_value(SECTION, "ReloadSignal") {
        diags.push(v.error(
            "ReloadCmd= and ReloadSignal= exclude each other: systemctl reload either runs a command in the container or signals it",
        ));
    }
}
