//! `rollouts/<id>`: a rollout as the store keeps it, with the contents
//! before and after of each unit, so that whichever server leads can drive
//! it on (and revert it) from the record alone.

use std::collections::BTreeMap;
use std::ops::Range;

use flotilla_proto::UnitName;
use flotilla_proto::rollout::{Rollout, RolloutSettings, RolloutState, RolloutUnitStatus};
use serde::{Deserialize, Serialize};

/// `rollouts/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRecord {
    pub id: String,
    pub group: String,
    pub settings: RolloutSettings,
    /// The units, in the order the waves take them.
    pub units: Vec<RolloutUnit>,
    /// Unit-file texts by content hash: the units of one group mostly
    /// share their old and their new contents, kept once each here.
    pub texts: BTreeMap<String, String>,
    pub state: RolloutState,
    /// Waves completed; while running, the index of the current wave.
    pub wave: usize,
    /// When the current wave's new contents were written; `None` before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave_started_ms: Option<u64>,
    /// Since when every unit of the current wave has run its new contents,
    /// as last seen; `None` while one does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_since_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reverted: bool,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// `rollouts-running`: the ids of the running rollouts, written with each
/// rollout's start and end. The leader reads this one key (and watches
/// it) rather than listing rollouts or locks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunningRollouts {
    pub ids: Vec<String>,
}

/// One unit of a rollout: its contents before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutUnit {
    pub name: UnitName,
    pub old_hash: String,
    pub new_hash: String,
    /// Whether the unit is `Global` with its old and its new contents
    /// (the `global/<unit>` marker follows its contents).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub old_global: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub new_global: bool,
}

impl RolloutRecord {
    /// How many waves the rollout has.
    pub fn waves(&self) -> usize {
        self.units.len().div_ceil(self.max_parallel())
    }

    fn max_parallel(&self) -> usize {
        (self.settings.max_parallel as usize).max(1)
    }

    /// The indexes of the units of wave `wave`.
    pub fn wave_units(&self, wave: usize) -> Range<usize> {
        let n = self.max_parallel();
        let start = (wave * n).min(self.units.len());
        start..((wave + 1) * n).min(self.units.len())
    }

    /// The units given their new contents so far: those of the waves done
    /// and, once written, of the current one.
    pub fn written(&self) -> Range<usize> {
        let end = match self.wave_started_ms {
            Some(_) => self.wave_units(self.wave).end,
            None => self.wave_units(self.wave).start,
        };
        0..end
    }

    /// The record as `GET /v1/rollouts/{id}` shows it, with which units
    /// run their new contents (`on_new`).
    pub fn view(&self, on_new: impl Fn(&RolloutUnit) -> bool) -> Rollout {
        let units: Vec<RolloutUnitStatus> = self
            .units
            .iter()
            .enumerate()
            .map(|(i, u)| RolloutUnitStatus {
                name: u.name.clone(),
                wave: i / self.max_parallel(),
                old_hash: u.old_hash.clone(),
                new_hash: u.new_hash.clone(),
                on_new: on_new(u),
            })
            .collect();
        Rollout {
            id: self.id.clone(),
            group: self.group.clone(),
            state: self.state,
            settings: self.settings,
            waves: self.waves(),
            waves_done: self.wave.min(self.waves()),
            current_wave: (self.state == RolloutState::Running).then_some(self.wave),
            units_on_new: units.iter().filter(|u| u.on_new).count(),
            units,
            failure: self.failure.clone(),
            reverted: self.reverted,
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
        }
    }
}
