//! The JSON shapes of flotilla's HTTP API (`/v1/...`), shared by the server,
//! the typed client, the CLI and the agent.
//!
//! Field names are camelCase and the resources follow fleet's v1 API (units
//! with `options`, `desiredState`, `currentState`, `machineID`; pages with
//! `nextPageToken`), with flotilla's additions beside them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cluster::ClusterId;
use crate::diagnostic::{Diagnostic, UnitFileError};
use crate::field::FieldError;
use crate::machine::{Capacity, Machine, MachineId, check_metadata_entry};
use crate::state::{DesiredState, UnitState};
use crate::unit_file::{Entry, Section, UnitFile};

/// One `Key=Value` of a unit file, as fleet's API carries unit contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitOption {
    pub section: String,
    pub name: String,
    pub value: String,
}

/// The options of a unit file, in file order.
pub fn options_of(file: &UnitFile) -> Vec<UnitOption> {
    file.sections
        .iter()
        .flat_map(|s| {
            s.entries.iter().map(move |e| UnitOption {
                section: s.name.clone(),
                name: e.key.clone(),
                value: e.value.clone(),
            })
        })
        .collect()
}

/// Unit-file text from fleet-style options: consecutive options of one
/// section share a header. `unit` names the unit in the error.
///
/// Each option must stay one `Key=Value` line of its section: a section
/// name, option name or value that holds a line end (`\n`, `\r` or NUL, all
/// of which end a line for systemd) would start lines of its own, and an
/// option name that is empty, holds `=`, starts like a comment or a header,
/// or has blanks at its ends would read back as another line. Such options
/// are refused, each with an error naming its section and option.
pub fn text_of(unit: &str, options: &[UnitOption]) -> Result<String, UnitFileError> {
    let diagnostics: Vec<Diagnostic> = options.iter().filter_map(option_problem).collect();
    if !diagnostics.is_empty() {
        return Err(UnitFileError {
            file: unit.to_owned(),
            diagnostics,
        });
    }
    let mut file = UnitFile::default();
    for o in options {
        if file.sections.last().is_none_or(|s| s.name != o.section) {
            file.sections.push(Section {
                name: o.section.clone(),
                line: 0,
                entries: Vec::new(),
            });
        }
        if let Some(section) = file.sections.last_mut() {
            section.entries.push(Entry {
                key: o.name.clone(),
                value: o.value.clone(),
                line: 0,
            });
        }
    }
    Ok(file.to_string())
}

/// Why an option cannot be written as one line of its section, if it
/// cannot.
fn option_problem(o: &UnitOption) -> Option<Diagnostic> {
    const LINE_ENDS: [char; 3] = ['\n', '\r', '\0'];
    let line_end = |what: &str, text: &str| {
        text.find(LINE_ENDS).map(|at| {
            let c = &text[at..at + 1];
            format!(
                "the {what} contains {c:?}, which ends a line in a unit file, so the rest would be \
                 read as lines of their own; give each setting as an option of its own"
            )
        })
    };
    let message = if o.section.is_empty() {
        Some("the section name is empty".to_owned())
    } else if let Some(m) = line_end("section name", &o.section) {
        Some(m)
    } else if let Some(m) = line_end("option name", &o.name) {
        Some(m)
    } else if let Some(m) = line_end("value", &o.value) {
        Some(m)
    } else if o.name.is_empty() {
        Some("the option name is empty".to_owned())
    } else if o.name.contains('=') {
        Some("the option name contains '=', so it would read back as another option".to_owned())
    } else if o.name.starts_with(['#', ';', '[']) {
        Some(format!(
            "the option name starts with {:?}, so it would read back as a comment or a section header",
            &o.name[..1]
        ))
    } else if o.name.trim() != o.name {
        Some("the option name has blanks at its start or end, which a unit file drops".to_owned())
    } else {
        None
    }?;
    Some(Diagnostic::error(None, message).at_option(
        &o.section.escape_debug().to_string(),
        &o.name.escape_debug().to_string(),
    ))
}

/// A unit as the API shows it (`GET /v1/units/{name}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Unit {
    pub name: String,
    /// The unit file's options, as fleet's API gives them.
    pub options: Vec<UnitOption>,
    /// The unit file as submitted, comments and layout included.
    pub text: String,
    /// Content hash of the unit file (see `UnitFile::content_hash`).
    pub hash: String,
    pub desired_state: DesiredState,
    /// What the cluster has achieved towards the desired state, as fleet
    /// reports it: `inactive` until placed, `loaded` once placed, `launched`
    /// once its machine reports it active. Absent for templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_state: Option<DesiredState>,
    /// The machine the unit is placed on.
    #[serde(rename = "machineID", default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<MachineId>,
    /// Why the unit is not placed, when it should be and is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unscheduled_reason: Option<String>,
    /// The store revision at which the unit was last changed.
    pub revision: i64,
}

/// `PUT /v1/units/{name}`: create a unit, replace its contents, or change
/// only its desired state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnitPut {
    /// Required when creating; when absent on an existing unit, only the
    /// contents change (and only with `replace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_state: Option<DesiredState>,
    /// The unit's contents as fleet-style options. Give this or `text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<UnitOption>>,
    /// The unit's contents as unit-file text. Give this or `options`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Replace the contents of an existing unit whose contents differ.
    /// Without it, such a request fails with 409, as in fleet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replace: bool,
}

/// `GET /v1/units`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnitPage {
    pub units: Vec<Unit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// `GET /v1/state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatePage {
    pub states: Vec<UnitState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// A machine as the API shows it (`GET /v1/machines`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineResource {
    #[serde(flatten)]
    pub machine: Machine,
    /// fleet's `primaryIP`: the first of the machine's addresses.
    #[serde(rename = "primaryIP", default, skip_serializing_if = "Option::is_none")]
    pub primary_ip: Option<String>,
    /// Resources reserved by the units placed on it.
    pub used: Capacity,
    /// How many units are placed on it.
    pub units: u64,
}

/// `GET /v1/machines`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachinePage {
    pub machines: Vec<MachineResource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// `PATCH /v1/machines/{id}`: set metadata keys, or remove those given as
/// `null`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachinePatch {
    pub metadata: BTreeMap<String, Option<String>>,
}

impl MachinePatch {
    /// Checks each key and value set as a machine's own metadata is
    /// checked at registration ([`check_metadata_entry`]).
    pub fn validate(&self) -> Result<(), FieldError> {
        for (key, value) in &self.metadata {
            check_metadata_entry(key, value.as_deref())?;
        }
        Ok(())
    }
}

/// A server of the cluster (`GET /v1/servers`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerResource {
    /// Unique per process start: `<hostname>-<pid>`.
    pub id: String,
    /// Where its API listens.
    pub address: String,
    pub version: String,
    /// Whether it leads (places units) now.
    pub leader: bool,
    /// On a raft cluster: its id in the raft group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft_id: Option<u64>,
    /// On a raft cluster: the address its peers reach it on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_address: Option<String>,
    /// On a raft cluster: `leader`, `follower`, `candidate`, `removed`, or
    /// `unreachable` for a member with no live presence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft_role: Option<String>,
    /// On a raft cluster: the raft term it is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
    /// On a raft cluster: the last log index it applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<u64>,
    /// On a raft cluster: its last log index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_index: Option<u64>,
    /// On a raft cluster: log entries it is behind the leader's last index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
}

/// `GET /v1/servers`: every live server, in id order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerList {
    pub servers: Vec<ServerResource>,
}

/// `POST /v1/servers`: adds a server to the raft group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerAdd {
    /// Its raft id: at least 1, never used before in this cluster.
    pub id: u64,
    /// Where its peers reach it: `https://HOST:PORT`.
    pub peer_address: String,
}

/// A member of the raft group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RaftMemberResource {
    pub id: u64,
    pub peer_address: String,
    /// A voter (else a learner).
    pub voter: bool,
}

/// The answer of `POST /v1/servers` and `DELETE /v1/servers/{id}`: the
/// raft group's members once the change is committed, in id order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerMembership {
    pub members: Vec<RaftMemberResource>,
}

/// The body of every error response: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// The HTTP status code, as fleet's API gives it.
    pub code: u16,
    /// A stable, machine-readable reason such as `unit_not_found`.
    pub reason: String,
    /// What went wrong, for a person.
    pub message: String,
}

// ---- agent endpoints (`/v1/agent/...`) ----

/// `POST /v1/agent/machines`: an agent registers its machine. The answer
/// names the lease that keeps the machine alive, and the cluster the server
/// serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    pub lease: i64,
    /// How long the lease lives without a heartbeat, in milliseconds.
    pub ttl_ms: u64,
    /// The cluster this server serves (made once, when its store was
    /// initialized): an agent that joined another cluster must not follow
    /// this one.
    pub cluster_id: ClusterId,
}

/// `POST /v1/agent/machines/{id}/heartbeat`: keeps the machine's lease
/// alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    pub lease: i64,
}

/// A unit an agent should have on its machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignedUnit {
    pub name: String,
    pub text: String,
    pub hash: String,
    pub desired_state: DesiredState,
    /// A `Global` unit: the agent decides whether it applies to its machine
    /// (metadata and conflicts), since the scheduler does not place it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub global: bool,
    /// The version of each secret its `Secret=` names (those that exist):
    /// the agent fetches the values when they change, and restarts the
    /// unit.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, u64>,
}

/// `GET /v1/agent/machines/{id}/units?index=N&wait=SECONDS`: everything the
/// machine should run, as of store revision `index`. With `index` given, the
/// call waits (up to `wait`) until something for this machine changed after
/// that revision, so an agent that reconnects with its last index misses
/// nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineUnits {
    /// The store revision this set is as of; pass it back as `index`.
    pub index: i64,
    pub units: Vec<AssignedUnit>,
    /// The cluster this set comes from: an agent that joined another
    /// cluster must not act on it (an empty set from a store that came up
    /// empty by mistake would stop every unit).
    pub cluster_id: ClusterId,
}

/// `PUT /v1/agent/machines/{id}/state`: a batch of observed unit states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateReport {
    pub states: Vec<UnitState>,
    /// Units the agent no longer has: their state is removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_text_round_trip() {
        let (file, diags) = UnitFile::parse(
            "[Unit]\nDescription=x\n[Service]\nExecStart=/bin/true\nEnvironment=\n",
        );
        assert!(diags.is_empty());
        let options = options_of(&file);
        assert_eq!(options.len(), 3);
        let (again, diags) = UnitFile::parse(&text_of("a.service", &options).unwrap());
        assert!(diags.is_empty());
        assert_eq!(again.content_hash(), file.content_hash());
    }

    fn option(section: &str, name: &str, value: &str) -> UnitOption {
        UnitOption {
            section: section.into(),
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn options_that_would_make_lines_of_their_own_are_refused() {
        let good = option("Unit", "Description", "web");
        let cases = [
            (
                option(
                    "Unit",
                    "Description",
                    "x\n[Service]\nExecStartPre=/bin/evil",
                ),
                "[Unit] Description: the value contains \"\\n\", which ends a line",
            ),
            (
                option("Unit", "Description", "x\r[X-Fleet]\rConflicts=*"),
                "[Unit] Description: the value contains \"\\r\", which ends a line",
            ),
            (
                option("Unit", "Description", "x\0MemoryMax=1E"),
                "[Unit] Description: the value contains \"\\0\", which ends a line",
            ),
            (
                option("Service]\n[X-Fleet", "Global", "true"),
                "[Service]\\n[X-Fleet] Global: the section name contains \"\\n\"",
            ),
            (
                option("Service", "A\nB", "1"),
                "[Service] A\\nB: the option name contains \"\\n\"",
            ),
            (option("", "A", "1"), "[] A: the section name is empty"),
            (
                option("Service", "", "1"),
                "[Service] : the option name is empty",
            ),
            (
                option("Service", "MemoryMax=1E #", "1"),
                "[Service] MemoryMax=1E #: the option name contains '='",
            ),
            (
                option("Service", "#x", "1"),
                "[Service] #x: the option name starts with \"#\"",
            ),
            (
                option("Service", "[X-Fleet]", "1"),
                "[Service] [X-Fleet]: the option name starts with \"[\"",
            ),
            (
                option("Service", " A", "1"),
                "[Service]  A: the option name has blanks",
            ),
        ];
        for (bad, expected) in cases {
            let err = text_of("web.service", &[good.clone(), bad.clone()]).unwrap_err();
            assert_eq!(err.file, "web.service");
            assert_eq!(err.diagnostics.len(), 1, "{bad:?}");
            let shown = err.to_string();
            assert!(
                shown.starts_with(&format!("web.service: error: {expected}")),
                "{bad:?}: {shown}"
            );
        }
    }

    #[test]
    fn patches_are_checked_like_registrations() {
        let patch = |k: &str, v: Option<&str>| MachinePatch {
            metadata: [(k.to_owned(), v.map(str::to_owned))].into(),
        };
        assert_eq!(patch("disk", Some("ssd")).validate(), Ok(()));
        assert_eq!(patch("disk", None).validate(), Ok(()));
        assert!(patch("disk", Some("ssd\u{1b}[1m")).validate().is_err());
        assert!(patch("", Some("x")).validate().is_err());
        assert!(patch("\u{7}", None).validate().is_err());
    }

    #[test]
    fn fleet_field_names() {
        let unit = Unit {
            name: "a.service".into(),
            options: vec![],
            text: String::new(),
            hash: "h".into(),
            desired_state: DesiredState::Launched,
            current_state: Some(DesiredState::Loaded),
            machine_id: None,
            unscheduled_reason: None,
            revision: 3,
        };
        let json = serde_json::to_value(&unit).unwrap();
        assert_eq!(json["desiredState"], "launched");
        assert_eq!(json["currentState"], "loaded");
        let err = ErrorBody {
            error: ErrorDetail {
                code: 404,
                reason: "unit_not_found".into(),
                message: "unit a.service does not exist".into(),
            },
        };
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"error":{"code":404,"reason":"unit_not_found","message":"unit a.service does not exist"}}"#
        );
    }
}
