//! The placement predicates on [`FleetOptions`]: whether a machine's ID
//! and metadata allow a unit, and whether two units conflict or one
//! displaces the other.

use std::collections::BTreeMap;

use super::{FleetOptions, SHORT_MACHINE_ID_LEN, glob_match};

impl FleetOptions {
    /// Whether the machine with this ID may run the unit as far as
    /// `MachineID` goes: always when it is not set; otherwise when `id` is
    /// the full ID given, or starts with the short ID given (fleet's
    /// `MachineState.MatchID` in `machine/state.go`). Case is ignored.
    pub fn machine_id_matches(&self, id: &str) -> bool {
        let Some(want) = &self.machine_id else {
            return true;
        };
        if id.eq_ignore_ascii_case(want) {
            return true;
        }
        want.len() == SHORT_MACHINE_ID_LEN
            && id
                .get(..SHORT_MACHINE_ID_LEN)
                .is_some_and(|short| short.eq_ignore_ascii_case(want))
    }

    /// Whether a machine with this metadata may run the unit as far as
    /// `MachineMetadata` goes: every key required is present on the machine
    /// with one of the values allowed for it (fleet's `HasMetadata` in
    /// `machine/machine.go`). A machine has one value per key, as in fleet.
    pub fn metadata_matches(&self, machine_metadata: &BTreeMap<String, String>) -> bool {
        self.machine_metadata.iter().all(|(key, allowed)| {
            machine_metadata
                .get(key)
                .is_some_and(|value| allowed.contains(value))
        })
    }

    /// Whether one of this unit's `Conflicts` patterns matches `other`. This
    /// is one direction only; the scheduler wants [`units_conflict`], which
    /// checks both and never reports a unit as conflicting with itself.
    pub fn conflicts_with(&self, other: &str) -> bool {
        self.conflicts.iter().any(|p| glob_match(p, other))
    }

    /// Whether one of this unit's `Replaces` patterns matches `other`. See
    /// [`unit_displaces`] for the rule the scheduler applies.
    pub fn replaces(&self, other: &str) -> bool {
        self.replaces.iter().any(|p| glob_match(p, other))
    }
}

/// Whether units `a` and `b` may not share a machine: either one's
/// `Conflicts` matches the other's name. A unit never conflicts with itself.
/// fleet: `AgentState.hasConflict` in `agent/state.go`.
pub fn units_conflict(
    a: &str,
    a_options: &FleetOptions,
    b: &str,
    b_options: &FleetOptions,
) -> bool {
    a != b && (a_options.conflicts_with(b) || b_options.conflicts_with(a))
}

/// Whether placing unit `a` on the machine of unit `b` moves `b` elsewhere:
/// `a`'s `Replaces` matches `b`, and `b`'s does not match `a`. When two units
/// replace each other, neither displaces the other, so that they cannot
/// chase each other around the cluster. fleet: `AgentState.hasReplace` in
/// `agent/state.go`.
pub fn unit_displaces(
    a: &str,
    a_options: &FleetOptions,
    b: &str,
    b_options: &FleetOptions,
) -> bool {
    a != b && a_options.replaces(b) && !b_options.replaces(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn metadata_ands_keys_and_ors_values() {
        let mut options = FleetOptions::default();
        assert!(options.metadata_matches(&metadata(&[])));
        options
            .machine_metadata
            .insert("region".into(), vec!["eu".into(), "us".into()]);
        options
            .machine_metadata
            .insert("disk".into(), vec!["ssd".into()]);
        assert!(options.metadata_matches(&metadata(&[("region", "eu"), ("disk", "ssd")])));
        assert!(options.metadata_matches(&metadata(&[
            ("region", "us"),
            ("disk", "ssd"),
            ("rack", "4")
        ])));
        // Every key must be there...
        assert!(!options.metadata_matches(&metadata(&[("region", "eu")])));
        assert!(!options.metadata_matches(&metadata(&[])));
        // ...with one of its values.
        assert!(!options.metadata_matches(&metadata(&[("region", "ap"), ("disk", "ssd")])));
        assert!(!options.metadata_matches(&metadata(&[("region", "eu"), ("disk", "hdd")])));
        // Values compare exactly.
        assert!(!options.metadata_matches(&metadata(&[("region", "EU"), ("disk", "ssd")])));
    }

    #[test]
    fn machine_ids_full_and_short() {
        let full = "0123456789abcdef0123456789abcdef";
        let other = "fedcba9876543210fedcba9876543210";
        let anywhere = FleetOptions::default();
        assert!(anywhere.machine_id_matches(full));

        let pinned = FleetOptions {
            machine_id: Some(full.to_owned()),
            ..FleetOptions::default()
        };
        assert!(pinned.machine_id_matches(full));
        assert!(pinned.machine_id_matches(&full.to_ascii_uppercase()));
        assert!(!pinned.machine_id_matches(other));
        // A full ID is not a prefix.
        assert!(!pinned.machine_id_matches("01234567"));

        let short = FleetOptions {
            machine_id: Some("01234567".to_owned()),
            ..FleetOptions::default()
        };
        assert!(short.machine_id_matches(full));
        assert!(short.machine_id_matches("01234567"));
        assert!(!short.machine_id_matches(other));
        assert!(!short.machine_id_matches("0123456"));
    }

    #[test]
    fn conflicts_work_both_ways() {
        let web = FleetOptions {
            conflicts: vec!["web@*.service".to_owned(), "cache*".to_owned()],
            ..FleetOptions::default()
        };
        let plain = FleetOptions::default();
        // Either side's patterns suffice.
        assert!(units_conflict("web@1.service", &web, "web@2.service", &web));
        assert!(units_conflict(
            "web@1.service",
            &web,
            "cache.service",
            &plain
        ));
        assert!(units_conflict(
            "cache.service",
            &plain,
            "web@1.service",
            &web
        ));
        assert!(!units_conflict("db.service", &plain, "web@1.service", &web));
        // A unit does not conflict with itself, though its pattern matches it.
        assert!(web.conflicts_with("web@1.service"));
        assert!(!units_conflict(
            "web@1.service",
            &web,
            "web@1.service",
            &web
        ));
    }

    #[test]
    fn replacing_is_one_way() {
        let master = FleetOptions {
            replaces: vec!["shadow*".to_owned()],
            ..FleetOptions::default()
        };
        let shadow = FleetOptions::default();
        assert!(master.replaces("shadow.service"));
        assert!(unit_displaces(
            "master.service",
            &master,
            "shadow.service",
            &shadow
        ));
        assert!(!unit_displaces(
            "shadow.service",
            &shadow,
            "master.service",
            &master
        ));
        // Two units that replace each other displace neither.
        let shadow_too = FleetOptions {
            replaces: vec!["master.service".to_owned()],
            ..FleetOptions::default()
        };
        assert!(!unit_displaces(
            "master.service",
            &master,
            "shadow.service",
            &shadow_too
        ));
        assert!(!unit_displaces(
            "shadow.service",
            &shadow_too,
            "master.service",
            &master
        ));
    }
}
