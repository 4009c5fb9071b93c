//! The `[X-Fleet]` placement options, with CoreOS fleet's semantics.
//!
//! A unit file may say where it should run in an `[X-Fleet]` section:
//!
//! | key | value | meaning |
//! |---|---|---|
//! | `MachineID` | a machine ID | run only on that machine |
//! | `MachineOf` | unit names | run on the machine that runs each of these units |
//! | `MachineMetadata` | `key=value` pairs | run only on machines with this metadata |
//! | `Conflicts` | unit name globs | never share a machine with a matching unit |
//! | `Global` | a boolean | run on every machine (that matches `MachineMetadata`) |
//! | `Replaces` | unit name globs | take the machine of a matching unit, which moves elsewhere |
//! | `StopAfterCutOff` | a time span | flotilla's own: stop the unit once its machine has been cut off from the servers this long |
//! | `RolloutMaxParallel`, `RolloutMinHealthyTime`, `RolloutAutoRevert`, `RolloutWaveTimeout` | see [`crate::rollout`] | flotilla's own: how a group of units whose contents change together is restarted in waves |
//!
//! Values:
//!
//! - `MachineID` is the machine's full ID, the 32 hexadecimal digits of
//!   `/etc/machine-id`, or its short form, the first 8 of them.
//! - `MachineOf`, `MachineMetadata`, `Conflicts` and `Replaces` take several
//!   values, separated by whitespace on one line (quoted as in systemd, so
//!   `MachineMetadata="rack=a 1" disk=ssd` is two pairs), or on repeated
//!   lines. An empty assignment (`Conflicts=`) drops the values assigned
//!   before it, as systemd does for its list settings.
//! - `MachineID`, `Global` and `StopAfterCutOff` take one value; the last
//!   assignment wins, and an empty assignment resets the option.
//! - `StopAfterCutOff` is a systemd time span (`45s`, `1min 30s`; a bare
//!   number is seconds), or `infinity`, the default: the unit keeps running
//!   however long its machine is cut off. The agent counts from the last
//!   time it renewed its machine's lease; see docs/architecture.md.
//! - `MachineOf` names units as `systemctl` does: `db` means `db.service`.
//! - `MachineMetadata`: every key named must be present on the machine; when
//!   a key is given several values, the machine needs one of them. So
//!   `MachineMetadata=region=eu disk=ssd` and `MachineMetadata=region=us`
//!   together mean "disk is ssd, and region is eu or us".
//! - `Conflicts` and `Replaces` are glob patterns matched against whole unit
//!   names with the rules of Go's `path.Match`, as fleet matches them (see
//!   [`glob_match`]). A conflict works both ways: two units may not share a
//!   machine when either one's `Conflicts` matches the other's name. A unit
//!   never conflicts with itself, so a template may say
//!   `Conflicts=web@*.service` to spread its instances.
//! - The specifiers `%n` (full name), `%N` (name without suffix), `%p`
//!   (prefix), `%i` (instance) and `%%` are expanded in every value, so an
//!   instance `web@8080.service` of a template with `MachineOf=db@%i.service`
//!   follows `db@8080.service`. In a template itself `%i` is empty, and a
//!   value that uses `%i` is checked in each instance rather than in the
//!   template.
//! - fleet's deprecated spellings `X-ConditionMachineID`,
//!   `X-ConditionMachineOf`, `X-ConditionMachineMetadata` and `X-Conflicts`
//!   are read as the new keys, with a warning.
//!
//! Combinations that fleet rejects are errors here too (fleet's
//! `ValidateOptions` in `api/units.go`):
//!
//! - `MachineID` with `MachineOf`, `Conflicts`, `Global` or `Replaces`;
//! - `Global` with `MachineOf` or `Replaces` (`Global` with `Conflicts` is
//!   allowed, as in fleet since 0.13: the unit skips machines that run a
//!   conflicting unit);
//! - `Conflicts` with `Replaces`;
//! - a `MachineOf` unit that matches one of the unit's own `Conflicts` or
//!   `Replaces` patterns: the unit could never be placed.
//!
//! Unknown keys in `[X-Fleet]` are errors, as in fleet.
//!
//! This module holds the options and their limits; `reader` reads the
//! section, `rules` holds the placement predicates, and `glob` the port of
//! Go's `path.Match`.

mod glob;
mod reader;
mod rollout_keys;
mod rules;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::name::UnitName;
use crate::rollout::RolloutOptions;

pub use glob::{GlobError, glob_match, validate_glob};
pub use rules::{unit_displaces, units_conflict};

/// The section these options live in.
pub const SECTION: &str = "X-Fleet";

/// Length of a full machine ID: the hexadecimal digits of `/etc/machine-id`.
pub const MACHINE_ID_LEN: usize = 32;

/// Length of a short machine ID: the first digits of a full one (fleet's
/// `ShortID`).
pub const SHORT_MACHINE_ID_LEN: usize = 8;

/// The most values one list option (`MachineOf`, `MachineMetadata`,
/// `Conflicts`, `Replaces`) may hold, repeats counted once. fleet had no
/// limit; real units give one or a few, and the scheduler looks at each
/// pattern of a unit whenever it places it.
pub const MAX_VALUES: usize = 256;

/// The longest `Conflicts` or `Replaces` pattern, in bytes: a unit name is
/// at most 255 bytes, and matching a pattern against a name costs up to the
/// product of their lengths.
pub const MAX_PATTERN_LEN: usize = 256;

/// The most (unit, pattern) pairs that checking `MachineOf` against
/// `Conflicts` and `Replaces` may compare: each unit the unit must run
/// beside is matched against each pattern, to refuse a unit that could
/// never be placed.
pub const MAX_PEER_PATTERN_PAIRS: usize = 64;

/// Where a unit may be placed, read from its `[X-Fleet]` section with
/// specifiers expanded for the unit's name. The default places anywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FleetOptions {
    /// `MachineID`: the only machine the unit may run on, a full machine ID
    /// (32 hexadecimal digits) or a short one (its first 8), lowercase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    /// `MachineOf`: units the unit must run next to, on the same machine.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub machine_of: Vec<UnitName>,
    /// `MachineMetadata`: for each key, the values a machine may have for it.
    /// Every key must match; any one of a key's values does.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub machine_metadata: BTreeMap<String, Vec<String>>,
    /// `Conflicts`: globs of units that may not share the unit's machine.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<String>,
    /// `Global`: the unit runs on every machine that matches
    /// `machine_metadata` and runs no conflicting unit.
    #[serde(skip_serializing_if = "is_false")]
    pub global: bool,
    /// `Replaces`: globs of units this unit displaces from its machine; they
    /// are moved to another machine.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replaces: Vec<String>,
    /// `StopAfterCutOff` (flotilla's own): once the agent has not renewed
    /// its machine's lease for this long, it stops the unit, and starts it
    /// again when the servers say it is still the machine's.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "crate::duration::serde_timespan_option"
    )]
    pub stop_after_cut_off: Option<Duration>,
    /// flotilla's own `Rollout*` keys: how the unit is restarted when its
    /// contents change together with others' ([`crate::rollout`]). They
    /// say nothing of where it runs.
    #[serde(skip_serializing_if = "RolloutOptions::is_empty")]
    pub rollout: RolloutOptions,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl FleetOptions {
    /// Whether no placement option is set: the unit may run anywhere.
    pub fn is_empty(&self) -> bool {
        FleetOptions {
            rollout: RolloutOptions::default(),
            ..self.clone()
        } == FleetOptions::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_only_what_is_set() {
        let options = FleetOptions {
            global: true,
            ..FleetOptions::default()
        };
        let json = serde_json::to_string(&options).unwrap();
        assert_eq!(json, r#"{"global":true}"#);
        let back: FleetOptions = serde_json::from_str(&json).unwrap();
        assert_eq!(back, options);
        assert_eq!(
            serde_json::to_string(&FleetOptions::default()).unwrap(),
            "{}"
        );
        assert!(FleetOptions::default().is_empty());
    }
}
