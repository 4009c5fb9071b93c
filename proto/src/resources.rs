//! Resource requests for placement, read from the unit's own systemd
//! resource-control settings so that what the scheduler reserves on a
//! machine is what systemd enforces there.
//!
//! The rule (also in `docs/unit-files.md`):
//!
//! - CPU: `CPUQuota=` (a percentage of one CPU, `150%` = 1.5 CPUs) requests
//!   that much CPU.
//! - Memory: `MemoryMax=` (the hard limit) requests that much memory; when it
//!   is not set, `MemoryHigh=` (the throttling limit) does. `infinity` or an
//!   empty assignment means no request. A percentage is relative to each
//!   machine's memory, so it is not reserved (a warning says so).
//! - The settings are read from the section of the unit's own type
//!   (`[Service]` for services and container units, `[Slice]`, `[Socket]`,
//!   `[Mount]`, `[Swap]`); the last assignment wins, as in systemd.
//! - A unit without these settings requests nothing and fits anywhere.

use serde::{Deserialize, Serialize};

use crate::diagnostic::Diagnostics;
use crate::name::{UnitName, UnitType};
use crate::unit_file::{UnitFile, ValueRef};

/// What a unit asks of the machine it is placed on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Thousandths of a CPU (`CPUQuota=150%` is 1500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u64>,
    /// Bytes of memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
}

impl Resources {
    /// Whether the unit asks for nothing.
    pub fn is_empty(&self) -> bool {
        self.cpu_millis.is_none() && self.memory_bytes.is_none()
    }

    /// Reads the requests of unit `name` from its file, reporting bad values.
    pub fn from_unit_file(name: &UnitName, file: &UnitFile, diags: &mut Diagnostics) -> Resources {
        let Some(section) = resource_section(name.unit_type()) else {
            return Resources::default();
        };
        let mut out = Resources::default();
        if let Some(v) = file.last_value(section, "CPUQuota") {
            out.cpu_millis = match parse_cpu_quota(v.value) {
                Ok(m) => m,
                Err(msg) => {
                    diags.push(v.error(msg));
                    None
                }
            };
        }
        let memory = file
            .last_value(section, "MemoryMax")
            .filter(|v| !v.value.is_empty())
            .or_else(|| file.last_value(section, "MemoryHigh"));
        if let Some(v) = memory {
            out.memory_bytes = memory_request(v, diags);
        }
        out
    }
}

/// The section that holds resource-control settings for a unit type.
fn resource_section(kind: UnitType) -> Option<&'static str> {
    match kind {
        UnitType::Service => Some("Service"),
        UnitType::Slice => Some("Slice"),
        UnitType::Socket => Some("Socket"),
        UnitType::Mount => Some("Mount"),
        UnitType::Swap => Some("Swap"),
        UnitType::Target | UnitType::Timer | UnitType::Path | UnitType::Automount => None,
    }
}

fn memory_request(v: ValueRef<'_>, diags: &mut Diagnostics) -> Option<u64> {
    let value = v.value;
    if value.is_empty() || value == "infinity" {
        return None;
    }
    if value.ends_with('%') || value.ends_with('‰') || value.ends_with("‱") {
        diags.push(v.warning(
            "a share of each machine's memory is not reserved for placement; give a size such as 512M to reserve it",
        ));
        return None;
    }
    match parse_size(value) {
        Some(bytes) => Some(bytes),
        None => {
            diags.push(v.error(format!(
                "expected a size in bytes with an optional K, M, G, T, P or E suffix (1024-based), or \"infinity\", found {value:?}"
            )));
            None
        }
    }
}

/// `CPUQuota=`: empty means no quota; otherwise a positive percentage.
fn parse_cpu_quota(value: &str) -> Result<Option<u64>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    let bad = || format!("expected a percentage of one CPU such as 50% or 200%, found {value:?}");
    let number = value.strip_suffix('%').ok_or_else(bad)?.trim_end();
    let percent = parse_decimal(number).ok_or_else(bad)?;
    if percent <= 0.0 {
        return Err(format!("a CPU quota must be above 0%, found {value:?}"));
    }
    // Round up: a unit asking for 0.05% still asks for something.
    Ok(Some((percent * 10.0).ceil() as u64))
}

/// A non-negative decimal number of the plain form `12` or `12.5`.
fn parse_decimal(s: &str) -> Option<f64> {
    let valid = !s.is_empty()
        && s.chars().all(|c| c.is_ascii_digit() || c == '.')
        && s.matches('.').count() <= 1
        && s.chars().next().is_some_and(|c| c.is_ascii_digit());
    if !valid {
        return None;
    }
    s.parse().ok()
}

/// systemd's `parse_size()` with base 1024: a decimal number and an optional
/// suffix `B`, `K`, `M`, `G`, `T`, `P` or `E`, with optional whitespace
/// between them.
pub fn parse_size(value: &str) -> Option<u64> {
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, suffix) = value.split_at(split);
    let factor: u64 = match suffix.trim_start() {
        "" | "B" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        "P" => 1 << 50,
        "E" => 1 << 60,
        _ => return None,
    };
    if let Ok(whole) = number.parse::<u64>() {
        return whole.checked_mul(factor);
    }
    let n = parse_decimal(number)?;
    let bytes = n * factor as f64;
    (bytes < u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("512B"), Some(512));
        assert_eq!(parse_size("1K"), Some(1024));
        assert_eq!(parse_size("1.5G"), Some(1536 * 1024 * 1024));
        assert_eq!(parse_size("2 M"), Some(2 * 1024 * 1024));
        assert_eq!(parse_size("16E"), None);
        assert_eq!(parse_size("1Q"), None);
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn cpu_quota() {
        assert_eq!(parse_cpu_quota("150%"), Ok(Some(1500)));
        assert_eq!(parse_cpu_quota("12.5%"), Ok(Some(125)));
        assert_eq!(parse_cpu_quota(""), Ok(None));
        assert!(parse_cpu_quota("0%").is_err());
        assert!(parse_cpu_quota("1.5").is_err());
    }
}
