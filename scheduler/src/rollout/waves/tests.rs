//! The wave logic against a fake cluster: a map of reported states that
//! the tests (or a fake agent) change between steps.

use std::collections::BTreeMap;

use flotilla_proto::event::EventKind;
use flotilla_proto::rollout::{RolloutSettings, RolloutState};
use flotilla_proto::{Health, MachineId, UnitName, UnitState};

use super::{Observed, Step, step};
use crate::rollout::record::{RolloutRecord, RolloutUnit};

fn record(units: usize, max_parallel: u32, auto_revert: bool) -> RolloutRecord {
    RolloutRecord {
        id: "r1".into(),
        group: "w@.service".into(),
        settings: RolloutSettings {
            max_parallel,
            min_healthy_time_ms: 1_000,
            auto_revert,
            wave_timeout_ms: 60_000,
        },
        units: (1..=units)
            .map(|i| RolloutUnit {
                name: name(i),
                old_hash: "old".into(),
                new_hash: "new".into(),
                old_global: false,
                new_global: false,
            })
            .collect(),
        texts: BTreeMap::new(),
        state: RolloutState::Running,
        wave: 0,
        wave_started_ms: None,
        ready_since_ms: None,
        failure: None,
        reverted: false,
        created_ms: 0,
        updated_ms: 0,
    }
}

fn name(i: usize) -> UnitName {
    UnitName::parse(&format!("w@{i}.service")).unwrap()
}

fn state(unit: &UnitName, active: &str, started: &str) -> UnitState {
    UnitState {
        unit: unit.clone(),
        machine: MachineId::parse("0123456789abcdef0123456789abcdef").unwrap(),
        load_state: "loaded".into(),
        active_state: active.into(),
        sub_state: "running".into(),
        hash: Some(started.into()),
        started_hash: Some(started.into()),
        main_pid: None,
        n_restarts: 0,
        container_id: None,
        health: Health::None,
        since_ms: 0,
        last_error: (active == "failed").then(|| "exit status 1".to_owned()),
    }
}

/// Every unit runs its old contents.
fn all_old(units: usize) -> Observed {
    let mut o = Observed::default();
    for i in 1..=units {
        o.states
            .insert(name(i), vec![state(&name(i), "active", "old")]);
    }
    o
}

fn set(o: &mut Observed, i: usize, active: &str, started: &str) {
    o.states
        .insert(name(i), vec![state(&name(i), active, started)]);
}

fn kinds(s: &Step) -> Vec<EventKind> {
    s.events.iter().map(|e| e.kind).collect()
}

#[test]
fn the_first_step_writes_the_first_wave_only() {
    let r = record(5, 2, false);
    let s = step(&r, &all_old(5), 100);
    assert_eq!(s.write_new, vec![0, 1]);
    assert!(s.write_old.is_empty());
    assert_eq!(s.record.wave_started_ms, Some(100));
    assert_eq!(kinds(&s), vec![EventKind::RolloutWaveStarted]);
    assert_eq!(r.waves(), 3);
}

#[test]
fn a_wave_waits_for_its_units_then_for_min_healthy_time() {
    let r = record(4, 2, false);
    let mut o = all_old(4);
    let r = step(&r, &o, 0).record;
    // Written, not yet restarted: nothing moves.
    let s = step(&r, &o, 500);
    assert!(s.is_idle(&r), "{s:?}");
    // One of two runs the new contents: still waiting.
    set(&mut o, 1, "active", "new");
    let s = step(&r, &o, 600);
    assert!(s.write_new.is_empty() && s.record.ready_since_ms.is_none());
    // Both run them: the count starts.
    set(&mut o, 2, "active", "new");
    let r = step(&r, &o, 700).record;
    assert_eq!(r.ready_since_ms, Some(700));
    let s = step(&r, &o, 1_699);
    assert!(s.is_idle(&r), "done before min-healthy-time: {s:?}");
    // After it, the wave is done and the next one written at once.
    let s = step(&r, &o, 1_700);
    assert_eq!(s.write_new, vec![2, 3]);
    assert_eq!(
        kinds(&s),
        vec![
            EventKind::RolloutWaveCompleted,
            EventKind::RolloutWaveStarted
        ]
    );
    assert_eq!(s.record.wave, 1);
}

#[test]
fn a_unit_that_stops_running_them_starts_the_count_again() {
    let mut o = all_old(2);
    let r = step(&record(2, 2, false), &o, 0).record;
    set(&mut o, 1, "active", "new");
    set(&mut o, 2, "active", "new");
    let r = step(&r, &o, 100).record;
    assert_eq!(r.ready_since_ms, Some(100));
    set(&mut o, 2, "activating", "new");
    let r = step(&r, &o, 600).record;
    assert_eq!(r.ready_since_ms, None);
    set(&mut o, 2, "active", "new");
    let r = step(&r, &o, 700).record;
    let s = step(&r, &o, 1_200);
    assert_eq!(s.record.state, RolloutState::Running, "counted from 100");
    assert_eq!(step(&r, &o, 1_700).record.state, RolloutState::Succeeded);
}

#[test]
fn a_whole_rollout_never_restarts_more_than_max_parallel_at_once() {
    for (units, max_parallel) in [(10, 3), (10, 1), (7, 7), (1, 4)] {
        let mut r = record(units, max_parallel, false);
        let mut o = all_old(units);
        // The fake agent: a unit given new contents is down for 300 ms,
        // then runs them.
        let mut written_at: BTreeMap<usize, u64> = BTreeMap::new();
        let mut completed = 0;
        let mut now = 0;
        while r.state == RolloutState::Running {
            assert!(now < 1_000_000, "rollout of {units} never ended");
            for (&i, &at) in &written_at {
                if now >= at + 300 {
                    set(&mut o, i + 1, "active", "new");
                } else {
                    set(&mut o, i + 1, "activating", "new");
                }
            }
            let s = step(&r, &o, now);
            for &i in &s.write_new {
                assert!(
                    written_at.insert(i, now).is_none(),
                    "unit {i} written twice"
                );
            }
            completed += kinds(&s)
                .iter()
                .filter(|k| **k == EventKind::RolloutWaveCompleted)
                .count();
            let down = written_at.values().filter(|&&at| now < at + 300).count();
            assert!(
                down <= max_parallel as usize,
                "{down} units down at once, max-parallel {max_parallel}"
            );
            r = s.record;
            now += 100;
        }
        assert_eq!(r.state, RolloutState::Succeeded);
        assert_eq!(written_at.len(), units);
        assert_eq!(completed, r.waves());
    }
}

#[test]
fn a_failure_stops_the_rollout_and_leaves_later_waves_alone() {
    let mut o = all_old(6);
    let r = step(&record(6, 2, false), &o, 0).record;
    set(&mut o, 1, "active", "new");
    set(&mut o, 2, "failed", "new");
    let s = step(&r, &o, 100);
    assert_eq!(s.record.state, RolloutState::Failed);
    assert_eq!(
        s.record.failure.as_deref(),
        Some("w@2.service: on machine 01234567: exit status 1")
    );
    assert!(s.write_new.is_empty() && s.write_old.is_empty());
    assert!(!s.record.reverted);
    assert_eq!(kinds(&s), vec![EventKind::RolloutFailed]);
    assert_eq!(s.events[0].unit, Some(name(2)));
    // Finished: it never moves again.
    let after = step(&s.record, &all_old(6), 10_000);
    assert!(after.is_idle(&s.record));
}

#[test]
fn a_failure_with_auto_revert_gives_every_changed_unit_its_old_contents() {
    let mut o = all_old(6);
    let r = step(&record(6, 2, true), &o, 0).record;
    set(&mut o, 1, "active", "new");
    set(&mut o, 2, "active", "new");
    let r = step(&r, &o, 100).record;
    let s = step(&r, &o, 1_100);
    assert_eq!(s.write_new, vec![2, 3]);
    let r = s.record;
    set(&mut o, 3, "failed", "new");
    let s = step(&r, &o, 1_200);
    assert_eq!(s.record.state, RolloutState::Failed);
    assert_eq!(s.write_old, vec![0, 1, 2, 3]);
    assert!(s.record.reverted);
}

#[test]
fn a_failure_with_the_old_contents_is_not_the_new_ones_failing() {
    let mut o = all_old(1);
    set(&mut o, 1, "failed", "old");
    let r = step(&record(1, 1, false), &o, 0).record;
    let s = step(&r, &o, 100);
    assert_eq!(s.record.state, RolloutState::Running);
}

#[test]
fn a_wave_that_does_not_run_its_contents_in_time_fails() {
    let o = all_old(2);
    let r = step(&record(2, 1, false), &o, 0).record;
    assert_eq!(step(&r, &o, 59_999).record.state, RolloutState::Running);
    let s = step(&r, &o, 60_000);
    assert_eq!(s.record.state, RolloutState::Failed);
    let failure = s.record.failure.unwrap();
    assert!(
        failure.contains("did not run its new contents within 60000 ms"),
        "{failure}"
    );
}

#[test]
fn a_destroyed_unit_fails_the_rollout() {
    let mut o = all_old(2);
    let r = step(&record(2, 2, false), &o, 0).record;
    o.missing.insert(name(2));
    let s = step(&r, &o, 100);
    assert_eq!(s.record.state, RolloutState::Failed);
    assert_eq!(
        s.record.failure.as_deref(),
        Some("w@2.service: it was destroyed")
    );
}

#[test]
fn the_view_counts_waves_and_units_on_the_new_contents() {
    let mut o = all_old(5);
    let r = step(&record(5, 2, false), &o, 0).record;
    set(&mut o, 1, "active", "new");
    let view = r.view(|u| u.name == name(1));
    assert_eq!(view.waves, 3);
    assert_eq!(view.waves_done, 0);
    assert_eq!(view.current_wave, Some(0));
    assert_eq!(view.units_on_new, 1);
    assert_eq!(view.units[4].wave, 2);
}
