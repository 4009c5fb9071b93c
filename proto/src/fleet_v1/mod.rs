//! fleet's v1 API (`/fleet/v1/`), as CoreOS fleet 1.0 defines it in its
//! `schema/v1.json` and serves it from its `api/` package: the JSON shapes,
//! fleet's reading and writing of unit files ([`options`]) and its unit
//! name rules ([`name`]).
//!
//! Field names and emptiness follow fleet's generated Go types: every field
//! is left out when empty, and `null` reads as empty. flotilla's own API
//! (`/v1/`, [`crate::wire`]) is richer; this module is only what fleet's
//! clients (fleetctl, the Python `fleet` client, scripts) expect.

pub mod name;
pub mod options;

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

pub use crate::wire::UnitOption;

/// The page size of fleet's listings (fleetd's default `token_limit`).
pub const PAGE_SIZE: usize = 100;

/// `null`, or a missing field, reads as the type's empty value, as Go's
/// decoder leaves a field it is given `null` for.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// One `Key=Value` of a unit file; a missing `value` reads as "".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetUnitOption {
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub section: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub value: String,
}

impl From<UnitOption> for FleetUnitOption {
    fn from(o: UnitOption) -> Self {
        FleetUnitOption {
            section: o.section,
            name: o.name,
            value: o.value,
        }
    }
}

impl From<FleetUnitOption> for UnitOption {
    fn from(o: FleetUnitOption) -> Self {
        UnitOption {
            section: o.section,
            name: o.name,
            value: o.value,
        }
    }
}

/// fleet's `Unit`: in a `PUT` body, and as `GET` answers it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetUnit {
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub options: Vec<FleetUnitOption>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub desired_state: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub current_state: String,
    #[serde(
        rename = "machineID",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub machine_id: String,
}

/// `GET /fleet/v1/units`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetUnitPage {
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub units: Vec<FleetUnit>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub next_page_token: String,
}

/// fleet's `UnitState`: what a machine reports of one unit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetUnitState {
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub hash: String,
    #[serde(
        rename = "machineID",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub machine_id: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub systemd_load_state: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub systemd_active_state: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub systemd_sub_state: String,
}

/// `GET /fleet/v1/state`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetUnitStatePage {
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub states: Vec<FleetUnitState>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub next_page_token: String,
}

/// fleet's `Machine`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetMachine {
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub id: String,
    #[serde(
        rename = "primaryIP",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub primary_ip: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub metadata: BTreeMap<String, String>,
}

/// `GET /fleet/v1/machines`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetMachinePage {
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub machines: Vec<FleetMachine>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub next_page_token: String,
}

/// One operation of `PATCH /fleet/v1/machines`: `add`, `replace` or
/// `remove` of `/{machineID}/metadata/{key}`, with the new value (for add
/// and replace) as `{"value": "..."}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataOp {
    #[serde(default, deserialize_with = "nullable")]
    pub op: String,
    #[serde(default, deserialize_with = "nullable")]
    pub path: String,
    #[serde(default, deserialize_with = "nullable")]
    pub value: MetadataValue,
}

/// The `value` of a [`MetadataOp`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataValue {
    #[serde(default, deserialize_with = "nullable")]
    pub value: String,
}

/// The machine and key a [`MetadataOp`]'s path names, if it is of the
/// form `/{machineID}/metadata/{key}` (fleet's `metadataPathRegex`: a key
/// of letters, digits, `_`, `.` and `-`).
pub fn metadata_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (machine, key) = rest.split_once("/metadata/")?;
    let key_ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    (!machine.is_empty() && !machine.contains('/') && key_ok).then_some((machine, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_fields_are_left_out_and_null_reads_as_empty() {
        let unit = FleetUnit {
            name: "a.service".into(),
            desired_state: "launched".into(),
            ..FleetUnit::default()
        };
        assert_eq!(
            serde_json::to_string(&unit).unwrap(),
            r#"{"name":"a.service","desiredState":"launched"}"#
        );
        let read: FleetUnit = serde_json::from_str(
            r#"{"name":null,"options":[{"section":"Unit","name":"Description"}],"machineID":null,"extra":1}"#,
        )
        .unwrap();
        assert_eq!(read.name, "");
        assert_eq!(read.options[0].value, "");
        assert_eq!(read.machine_id, "");
    }

    #[test]
    fn metadata_paths_as_fleet_matches_them() {
        assert_eq!(metadata_path("/abc/metadata/role"), Some(("abc", "role")));
        assert_eq!(
            metadata_path("/abc/metadata/a_b.c-d"),
            Some(("abc", "a_b.c-d"))
        );
        for bad in [
            "abc/metadata/role",
            "/abc/metadata/",
            "/abc/metadata/a/b",
            "//metadata/role",
            "/a/b/metadata/role",
            "/abc/meta/role",
            "/abc/metadata/ro le",
        ] {
            assert_eq!(metadata_path(bad), None, "{bad}");
        }
    }
}
