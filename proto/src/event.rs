//! The cluster's history, as the API carries it (`GET /v1/events`,
//! `flotilla events`): what the leader decided (a unit placed, moved,
//! unschedulable), what machines did (joined, lost), what agents reported
//! (a unit started, stopped, failed) and what people changed through the
//! API, with who they were.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::machine::MachineId;
use crate::name::UnitName;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// The leader placed a unit on a machine (`machine`).
    UnitPlaced,
    /// The leader moved a unit from `fromMachine` to `machine`; `detail`
    /// says why.
    UnitMoved,
    /// The leader took a unit off `fromMachine` and placed it nowhere
    /// (its desired state is inactive, it became global, or no machine can
    /// take it); `detail` says why.
    UnitUnplaced,
    /// No machine can take a unit; `detail` says why. Recorded when the
    /// reason changes, not at every pass.
    UnitUnschedulable,
    /// A machine's agent reported the unit active, after it was not.
    UnitStarted,
    /// A machine's agent reported the unit inactive, after it was active.
    UnitStopped,
    /// A machine's agent reported the unit failed, after it was not;
    /// `detail` is the failure.
    UnitFailed,
    /// Someone (`actor`) created a unit through the API.
    UnitCreated,
    /// Someone (`actor`) changed a unit's contents or desired state.
    UnitChanged,
    /// Someone (`actor`) destroyed a unit.
    UnitDestroyed,
    /// A machine registered: it was not in the cluster before.
    MachineJoined,
    /// A machine left the cluster: its lease ended (no heartbeat for the
    /// machine TTL) or it was removed; its units move.
    MachineLost,
    /// A machine was cut off: its heartbeats stopped for longer than half
    /// the machine TTL, then came back before its lease ended (a network
    /// partition, or a host stalled, that healed); `detail` says for how
    /// long. Its units stayed where they were; while it was silent they
    /// showed `unknown`.
    MachineCutOff,
    /// Someone (`actor`) removed a machine through the API.
    MachineRemoved,
    /// A server became the leader (`detail` names it).
    LeaderChanged,
    /// A git source refused a commit (`detail`: the source, the commit,
    /// and each problem with its file and line); nothing was changed.
    SyncRefused,
    /// A unit a git source owns was changed by hand (`actor`: the source;
    /// `detail`: what differs, and whether it was put back).
    UnitDrifted,
    /// A rollout started (`detail` names it, its group, units and waves).
    RolloutStarted,
    /// The leader wrote the new contents of a rollout's wave (`detail`
    /// names the rollout, the wave and its units).
    RolloutWaveStarted,
    /// A wave's units ran their new contents for the min-healthy-time.
    RolloutWaveCompleted,
    /// Every unit of a rollout runs its new contents.
    RolloutCompleted,
    /// A rollout stopped on a failure (`unit`, and `detail` says why and
    /// whether the changed units got their old contents back).
    RolloutFailed,
}

impl EventKind {
    /// Every kind, in the order the documentation lists them.
    pub const ALL: [EventKind; 22] = [
        EventKind::UnitPlaced,
        EventKind::UnitMoved,
        EventKind::UnitUnplaced,
        EventKind::UnitUnschedulable,
        EventKind::UnitStarted,
        EventKind::UnitStopped,
        EventKind::UnitFailed,
        EventKind::UnitCreated,
        EventKind::UnitChanged,
        EventKind::UnitDestroyed,
        EventKind::MachineJoined,
        EventKind::MachineLost,
        EventKind::MachineCutOff,
        EventKind::MachineRemoved,
        EventKind::LeaderChanged,
        EventKind::SyncRefused,
        EventKind::UnitDrifted,
        EventKind::RolloutStarted,
        EventKind::RolloutWaveStarted,
        EventKind::RolloutWaveCompleted,
        EventKind::RolloutCompleted,
        EventKind::RolloutFailed,
    ];

    /// The kind as the API writes it (`unit-placed`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::UnitPlaced => "unit-placed",
            EventKind::UnitMoved => "unit-moved",
            EventKind::UnitUnplaced => "unit-unplaced",
            EventKind::UnitUnschedulable => "unit-unschedulable",
            EventKind::UnitStarted => "unit-started",
            EventKind::UnitStopped => "unit-stopped",
            EventKind::UnitFailed => "unit-failed",
            EventKind::UnitCreated => "unit-created",
            EventKind::UnitChanged => "unit-changed",
            EventKind::UnitDestroyed => "unit-destroyed",
            EventKind::MachineJoined => "machine-joined",
            EventKind::MachineLost => "machine-lost",
            EventKind::MachineCutOff => "machine-cut-off",
            EventKind::MachineRemoved => "machine-removed",
            EventKind::LeaderChanged => "leader-changed",
            EventKind::SyncRefused => "sync-refused",
            EventKind::UnitDrifted => "unit-drifted",
            EventKind::RolloutStarted => "rollout-started",
            EventKind::RolloutWaveStarted => "rollout-wave-started",
            EventKind::RolloutWaveCompleted => "rollout-wave-completed",
            EventKind::RolloutCompleted => "rollout-completed",
            EventKind::RolloutFailed => "rollout-failed",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The longest `detail` kept in an event; a longer one is cut.
pub const MAX_DETAIL_LEN: usize = 512;

/// The longest `actor` kept in an event (a credential's name is at most
/// 128 bytes); a longer one is cut.
pub const MAX_ACTOR_LEN: usize = 128;

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Where the event is in the log: unique, and the same in every
    /// answer. Empty in an event being recorded (the log gives it one).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// When it happened, in milliseconds since the Unix epoch (the clock
    /// of the server that saw it).
    pub at_ms: u64,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<UnitName>,
    /// The machine concerned; for a move, where the unit went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<MachineId>,
    /// For a move or an unplacement, the machine the unit left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_machine: Option<MachineId>,
    /// Why, or what changed, in words (at most [`MAX_DETAIL_LEN`] bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Who made the change: the name of the credential, for changes made
    /// through the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

impl Event {
    /// An event of `kind` now-ish (`at_ms`), about nothing yet.
    pub fn new(kind: EventKind, at_ms: u64) -> Event {
        Event {
            id: String::new(),
            at_ms,
            kind,
            unit: None,
            machine: None,
            from_machine: None,
            detail: None,
            actor: None,
        }
    }

    pub fn unit(mut self, unit: &UnitName) -> Event {
        self.unit = Some(unit.clone());
        self
    }

    pub fn machine(mut self, machine: &MachineId) -> Event {
        self.machine = Some(machine.clone());
        self
    }

    pub fn from_machine(mut self, machine: &MachineId) -> Event {
        self.from_machine = Some(machine.clone());
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Event {
        self.detail = Some(detail.into());
        self
    }

    pub fn actor(mut self, actor: impl Into<String>) -> Event {
        self.actor = Some(actor.into());
        self
    }

    /// Cuts `detail` and `actor` to their limits (at a character
    /// boundary, marked with `…`).
    pub fn bound(&mut self) {
        if let Some(d) = &mut self.detail {
            cut(d, MAX_DETAIL_LEN);
        }
        if let Some(a) = &mut self.actor {
            cut(a, MAX_ACTOR_LEN);
        }
    }
}

fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max - '…'.len_utf8();
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
}

/// One page of `GET /v1/events`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventPage {
    /// Oldest first.
    pub events: Vec<Event>,
    /// Where the next page starts, when there may be more now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
    /// The store revision this answer is complete up to: pass it as
    /// `index` to wait for what comes after.
    pub index: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_written_as_the_api_documents_them() {
        for kind in EventKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            let back: EventKind = serde_json::from_str(&json).unwrap();
            assert_eq!(back, kind);
        }
    }

    #[test]
    fn details_and_actors_are_cut_at_a_character() {
        let mut e = Event::new(EventKind::UnitFailed, 1)
            .detail("é".repeat(MAX_DETAIL_LEN))
            .actor("a".repeat(1000));
        e.bound();
        let detail = e.detail.unwrap();
        assert!(detail.len() <= MAX_DETAIL_LEN, "{}", detail.len());
        assert!(detail.ends_with('…'));
        assert!(e.actor.unwrap().len() <= MAX_ACTOR_LEN);
        let mut short = Event::new(EventKind::UnitFailed, 1).detail("exit status 1");
        short.bound();
        assert_eq!(short.detail.as_deref(), Some("exit status 1"));
    }

    #[test]
    fn an_event_without_an_id_has_none_in_json() {
        let e = Event::new(EventKind::LeaderChanged, 5).detail("server a leads");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"atMs": 5, "kind": "leader-changed", "detail": "server a leads"})
        );
    }
}
