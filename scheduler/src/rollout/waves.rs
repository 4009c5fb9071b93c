//! One step of a rollout, as a pure function of its record, what the
//! machines report and the time: which contents to write, what the record
//! becomes, and which events say so. The driver (`driver.rs`) reads, calls
//! [`step`] and writes what it returns; it is the only place that decides.
//!
//! A running rollout moves so:
//!
//! 1. The current wave's new contents are not written yet: write them, and
//!    note when (`wave_started_ms`).
//! 2. They are written: each unit of the wave is looked at on every
//!    machine that reports it ([`unit_on_contents`]).
//!    - One failed with them (or a unit was destroyed): the rollout fails,
//!      naming the unit and why; with auto-revert, every unit it changed
//!      gets its old contents back.
//!    - All run them: from the first time this is seen (`ready_since_ms`),
//!      once `min_healthy_time` has passed with it still so, the wave is
//!      done; the next wave's contents are written at once, or, after the
//!      last wave, the rollout succeeded.
//!    - Otherwise: `ready_since_ms` is cleared (a unit that stopped
//!      running them starts the count again), and once the wave timeout
//!      has passed since the contents were written, the rollout fails.
//!
//! A finished rollout (succeeded or failed) never moves again.

use std::collections::{HashMap, HashSet};

use flotilla_proto::event::{Event, EventKind};
use flotilla_proto::rollout::{OnContents, RolloutState, unit_on_contents};
use flotilla_proto::{UnitName, UnitState};

use super::record::RolloutRecord;

/// What the machines report of a rollout's units.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Each unit's reported states (one per machine that reports it).
    pub states: HashMap<UnitName, Vec<UnitState>>,
    /// Units that no longer exist.
    pub missing: HashSet<UnitName>,
}

/// What one step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The record after the step.
    pub record: RolloutRecord,
    /// Units (indexes) to give their new contents.
    pub write_new: Vec<usize>,
    /// Units (indexes) to give their old contents back.
    pub write_old: Vec<usize>,
    pub events: Vec<Event>,
}

impl Step {
    /// Whether the step changes nothing.
    pub fn is_idle(&self, before: &RolloutRecord) -> bool {
        self.record == *before && self.write_new.is_empty() && self.write_old.is_empty()
    }

    /// Whether the rollout ended in this step, so its locks go.
    pub fn finished(&self) -> bool {
        self.record.state != RolloutState::Running
    }
}

/// One step of rollout `before` at `now_ms`.
pub fn step(before: &RolloutRecord, observed: &Observed, now_ms: u64) -> Step {
    let mut s = Step {
        record: before.clone(),
        write_new: Vec::new(),
        write_old: Vec::new(),
        events: Vec::new(),
    };
    if before.state != RolloutState::Running {
        return s;
    }
    let Some(started) = before.wave_started_ms else {
        start_wave(&mut s, now_ms);
        return s;
    };
    let r = &before;
    let mut waiting: Option<String> = None;
    for i in r.wave_units(r.wave) {
        let unit = &r.units[i];
        if observed.missing.contains(&unit.name) {
            fail(&mut s, &unit.name, "it was destroyed".to_owned(), now_ms);
            return s;
        }
        let states = observed
            .states
            .get(&unit.name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        match unit_on_contents(states, &unit.new_hash) {
            OnContents::Runs => {}
            OnContents::Failed(why) => {
                fail(&mut s, &unit.name, why, now_ms);
                return s;
            }
            OnContents::Waiting(why) => {
                waiting.get_or_insert(format!("{} {why}", unit.name));
            }
        }
    }
    if let Some(why) = waiting {
        s.record.ready_since_ms = None;
        let timeout = r.settings.wave_timeout_ms;
        if now_ms.saturating_sub(started) >= timeout {
            let unit = r.units[r.wave_units(r.wave).start].name.clone();
            fail(
                &mut s,
                &unit,
                format!(
                    "wave {} did not run its new contents within {} ms: {why}",
                    r.wave + 1,
                    timeout
                ),
                now_ms,
            );
        } else if s.record != *before {
            s.record.updated_ms = now_ms;
        }
        return s;
    }
    let since = *s.record.ready_since_ms.get_or_insert(now_ms);
    if now_ms.saturating_sub(since) < r.settings.min_healthy_time_ms {
        if s.record != *before {
            s.record.updated_ms = now_ms;
        }
        return s;
    }
    // The wave is done.
    let rec = &mut s.record;
    s.events.push(
        Event::new(EventKind::RolloutWaveCompleted, now_ms).detail(format!(
            "rollout {}: wave {} of {} runs its new contents",
            rec.id,
            rec.wave + 1,
            rec.waves()
        )),
    );
    rec.wave += 1;
    rec.wave_started_ms = None;
    rec.ready_since_ms = None;
    rec.updated_ms = now_ms;
    if rec.wave >= rec.waves() {
        rec.state = RolloutState::Succeeded;
        s.events.push(
            Event::new(EventKind::RolloutCompleted, now_ms).detail(format!(
                "rollout {} of {}: {} units run their new contents",
                rec.id,
                rec.group,
                rec.units.len()
            )),
        );
    } else {
        start_wave(&mut s, now_ms);
    }
    s
}

/// Writes the current wave's new contents.
fn start_wave(s: &mut Step, now_ms: u64) {
    let rec = &mut s.record;
    let range = rec.wave_units(rec.wave);
    let names: Vec<&str> = rec.units[range.clone()]
        .iter()
        .map(|u| u.name.as_str())
        .collect();
    s.events.push(
        Event::new(EventKind::RolloutWaveStarted, now_ms).detail(format!(
            "rollout {}: wave {} of {}: {}",
            rec.id,
            rec.wave + 1,
            rec.waves(),
            names.join(" ")
        )),
    );
    s.write_new.extend(range);
    rec.wave_started_ms = Some(now_ms);
    rec.ready_since_ms = None;
    rec.updated_ms = now_ms;
}

/// Stops the rollout on `unit`'s failure; with auto-revert, every unit
/// given new contents gets its old ones back.
fn fail(s: &mut Step, unit: &UnitName, why: String, now_ms: u64) {
    let rec = &mut s.record;
    let failure = format!("{unit}: {why}");
    rec.state = RolloutState::Failed;
    rec.failure = Some(failure.clone());
    rec.updated_ms = now_ms;
    let mut detail = format!(
        "rollout {} stopped in wave {}: {failure}",
        rec.id,
        rec.wave + 1
    );
    if rec.settings.auto_revert {
        s.write_old.extend(rec.written());
        rec.reverted = true;
        detail.push_str("; the units it changed get their old contents back");
    }
    rec.wave_started_ms = None;
    rec.ready_since_ms = None;
    s.events.push(
        Event::new(EventKind::RolloutFailed, now_ms)
            .unit(unit)
            .detail(detail),
    );
}

#[cfg(test)]
mod tests;
