//! Looking at units on their hosts without a shell there: a unit's status
//! (`flotilla status`) and its journal (`flotilla journal`).
//!
//! Hosts need not accept connections: a server hands an [`AgentRequest`]
//! to the unit's agent over the agent's own long poll
//! (`GET /v1/agent/machines/{id}/requests`), and the agent streams the
//! answer back (`POST /v1/agent/machines/{id}/replies/{request}`) as
//! newline-delimited JSON [`ReplyLine`]s, which the server relays to the
//! client as they come.

use serde::{Deserialize, Serialize};

use crate::machine::MachineId;
use crate::name::UnitName;
use crate::state::Health;

/// The most journal lines one request may ask for (`-n`).
pub const MAX_LINES: u32 = 10_000;

/// The longest journal message passed on; longer ones are cut, with
/// `truncated` set.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// The longest `since` given to the journal.
pub const MAX_SINCE_LEN: usize = 64;

/// What a server asks of an agent on a client's behalf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRequest {
    /// Unique among the server's open requests; the reply names it.
    pub id: String,
    pub unit: UnitName,
    #[serde(flatten)]
    pub kind: RequestKind,
}

/// What is asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum RequestKind {
    /// The unit's systemd status, and its last `lines` journal lines.
    #[serde(rename_all = "camelCase")]
    Status { lines: u32 },
    /// The unit's journal: the last `lines` lines (or those since
    /// `since`, as `journalctl --since` reads it), then, with `follow`,
    /// new lines as they come until the client goes away.
    #[serde(rename_all = "camelCase")]
    Journal {
        lines: u32,
        follow: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<String>,
    },
}

/// `GET /v1/agent/machines/{id}/requests`: what the agent should do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRequests {
    pub requests: Vec<AgentRequest>,
}

/// One line of the journal, as `journalctl -o json` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalEntry {
    /// When it was logged, in microseconds since the Unix epoch.
    pub at_us: u64,
    /// The program that logged it (`SYSLOG_IDENTIFIER`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub identifier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// syslog priority, 0 (emerg) to 7 (debug).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    pub message: String,
    /// The message was longer than [`MAX_MESSAGE_BYTES`] and was cut.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// What `systemctl status` shows of a unit, read on its host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnitStatus {
    pub unit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<MachineId>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    /// When the active state last changed, in microseconds since the Unix
    /// epoch (0 if never).
    pub since_us: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_pid: Option<u32>,
    /// Processes in the unit's cgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<u64>,
    /// Memory of the unit's cgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// CPU time of the unit's cgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_nsec: Option<u64>,
    /// How often `Restart=` restarted it.
    pub restarts: u32,
    /// Why it last stopped (`success`, `exit-code`, `signal`, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub result: String,
    /// The main process's last exit status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    /// The last `STATUS=` the service sent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status_text: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub control_group: String,
    /// For a container unit: its image, as its unit file names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// For a container unit: its container and health, as reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default)]
    pub health: Health,
    /// What the container's last health probe printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe: Option<String>,
    /// Its last journal lines (only for callers who may read logs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<JournalEntry>,
}

/// One line of a reply stream (agent to server, server to client).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ReplyLine {
    Entry(JournalEntry),
    Status(Box<UnitStatus>),
    /// Nothing new, sent now and then so that idle streams stay open.
    KeepAlive,
    /// The stream ends normally, and why (`done`, ...).
    End {
        reason: String,
    },
    /// The stream ends because something failed.
    Error {
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_lines_read_back() {
        let r = AgentRequest {
            id: "r1".into(),
            unit: UnitName::parse("web.service").unwrap_or_else(|e| panic!("{e}")),
            kind: RequestKind::Journal {
                lines: 10,
                follow: true,
                since: None,
            },
        };
        let json = serde_json::to_string(&r).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"id":"r1","unit":"web.service","kind":"journal","lines":10,"follow":true}"#
        );
        let back: AgentRequest = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, r);
        let line = ReplyLine::End {
            reason: "done".into(),
        };
        assert_eq!(
            serde_json::to_string(&line).unwrap_or_default(),
            r#"{"type":"end","reason":"done"}"#
        );
    }
}
