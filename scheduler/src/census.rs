//! [`Census`]: how many units are in each desired and current state, and
//! how many are unschedulable, kept current one store change at a time so
//! that a scrape of `/metrics` reads a few numbers instead of every unit.
//!
//! The leader's reconcile loop feeds it every key it loads and every event
//! of its watch (it already watches the whole prefix). A unit's current
//! state is the one the API shows (`listing.rs`): a placed unit is
//! `launched` when its machine reports it `active` or `reloading`, else
//! `loaded`; an unplaced one is `inactive`; a `Global` unit is `launched`
//! when any machine runs it, `loaded` when some machine reports it,
//! `inactive` when none does. A unit is unschedulable when it wants a
//! machine, has none, and the leader wrote why (`sched/<unit>`).
//! Templates are not counted: they are never placed.
//!
//! It reads only what it needs of each value (the desired state of a
//! unit, the active state of a report), and keeps per unit its desired
//! state, whether it is `Global`, its machine and which machines report it
//! running: some tens of bytes beside the unit's name. Events are applied
//! with "set" semantics, so replaying changes already reflected in a read
//! (the reconcile loop watches from its first read's revision) ends in the
//! same counts.
//!
//! It also indexes the state reports by machine, and remembers which
//! machines left (their key deleted, not written since), so that the
//! leader deletes the reports of a machine that left from memory, without
//! reading every report in the store ([`Census::reports_of`],
//! [`Census::has_left`]). The index shares each unit's name with its
//! entry: a pointer per report.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use flotilla_proto::{DesiredState, MachineId, UnitName};
use serde::Deserialize;

use crate::keys::{Key, Keys};
use crate::records::{self, SchedRecord};
use flotilla_store::{KeyValue, WatchEvent};

/// The three states, in the order of the count arrays.
pub const STATES: [DesiredState; 3] = [
    DesiredState::Inactive,
    DesiredState::Loaded,
    DesiredState::Launched,
];

fn index(state: DesiredState) -> usize {
    match state {
        DesiredState::Inactive => 0,
        DesiredState::Loaded => 1,
        DesiredState::Launched => 2,
    }
}

/// What the census counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Units by `[desired][current]`, in the order of [`STATES`].
    pub by_state: [[u64; 3]; 3],
    /// Units that want a machine and were found none.
    pub unschedulable: u64,
}

impl Counts {
    /// The number of units desired `desired` and currently `current`.
    pub fn units(&self, desired: DesiredState, current: DesiredState) -> u64 {
        self.by_state[index(desired)][index(current)]
    }
}

/// Which machines report a unit, and whether each runs it. Most units are
/// reported by one machine, kept inline.
#[derive(Debug, Clone, Default)]
enum Reports {
    #[default]
    None,
    One(u32, bool),
    Many(Vec<(u32, bool)>),
}

impl Reports {
    fn set(&mut self, machine: u32, running: bool) {
        match self {
            Reports::None => *self = Reports::One(machine, running),
            Reports::One(m, r) if *m == machine => *r = running,
            Reports::One(m, r) => *self = Reports::Many(vec![(*m, *r), (machine, running)]),
            Reports::Many(v) => match v.iter_mut().find(|(m, _)| *m == machine) {
                Some(entry) => entry.1 = running,
                None => v.push((machine, running)),
            },
        }
    }

    fn remove(&mut self, machine: u32) {
        match self {
            Reports::One(m, _) if *m == machine => *self = Reports::None,
            Reports::Many(v) => {
                v.retain(|(m, _)| *m != machine);
                match v.as_slice() {
                    [] => *self = Reports::None,
                    [(m, r)] => *self = Reports::One(*m, *r),
                    _ => {}
                }
            }
            _ => {}
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Reports::None)
    }

    fn runs_on(&self, machine: u32) -> bool {
        match self {
            Reports::None => false,
            Reports::One(m, r) => *m == machine && *r,
            Reports::Many(v) => v.iter().any(|(m, r)| *m == machine && *r),
        }
    }

    fn runs_anywhere(&self) -> bool {
        match self {
            Reports::None => false,
            Reports::One(_, r) => *r,
            Reports::Many(v) => v.iter().any(|(_, r)| *r),
        }
    }
}

/// What the census knows of one unit.
#[derive(Debug, Clone, Default)]
struct Entry {
    /// From `units/<unit>`; `None` while the unit does not exist (its
    /// placement or reports may outlive it for a moment).
    desired: Option<DesiredState>,
    /// `global/<unit>` exists.
    global: bool,
    /// The machine of `sched/<unit>`.
    machine: Option<u32>,
    /// `sched/<unit>` gives a reason and no machine.
    reason: bool,
    reports: Reports,
}

impl Entry {
    /// The unit's `(desired, current)` indexes and whether it is
    /// unschedulable, when it is counted at all.
    fn bucket(&self) -> Option<(usize, usize, bool)> {
        let desired = self.desired?;
        let current = if self.global {
            if self.reports.runs_anywhere() {
                DesiredState::Launched
            } else if self.reports.is_empty() {
                DesiredState::Inactive
            } else {
                DesiredState::Loaded
            }
        } else {
            match self.machine {
                None => DesiredState::Inactive,
                Some(m) if self.reports.runs_on(m) => DesiredState::Launched,
                Some(_) => DesiredState::Loaded,
            }
        };
        let unschedulable = desired.is_scheduled() && self.machine.is_none() && self.reason;
        Some((index(desired), index(current), unschedulable))
    }

    fn is_empty(&self) -> bool {
        self.desired.is_none()
            && !self.global
            && self.machine.is_none()
            && !self.reason
            && self.reports.is_empty()
    }
}

/// The counts, and what keeps them current; see the [module
/// documentation](self).
#[derive(Debug, Default)]
pub struct Census {
    units: HashMap<Arc<str>, Entry>,
    /// Machine ids, numbered in the order first seen.
    machine_ids: HashMap<MachineId, u32>,
    /// The units each machine (by number) has a state report of.
    reported: HashMap<u32, HashSet<Arc<str>>>,
    /// Machines (by number) whose key was deleted and not written since.
    left: HashSet<u32>,
    counts: Counts,
}

/// The part of a unit record the census reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DesiredOnly {
    desired_state: DesiredState,
}

/// The part of a state report the census reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActiveOnly {
    active_state: String,
}

impl Census {
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// How many units (and leftovers of units) it keeps an entry for.
    pub fn len(&self) -> usize {
        self.units.len()
    }

    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// The units `machine` has a state report of (`state/<unit>/<machine>`
    /// exists), as far as the keys and changes taken in say.
    pub fn reports_of(&self, machine: &MachineId) -> impl Iterator<Item = &str> {
        self.machine_ids
            .get(machine)
            .and_then(|n| self.reported.get(n))
            .into_iter()
            .flatten()
            .map(|unit| &**unit)
    }

    /// Whether `machine`'s key was seen deleted and not written since.
    pub fn has_left(&self, machine: &MachineId) -> bool {
        self.machine_ids
            .get(machine)
            .is_some_and(|n| self.left.contains(n))
    }

    /// The machines that left ([`has_left`](Self::has_left)) and still
    /// have state reports.
    pub fn left_with_reports(&self) -> impl Iterator<Item = &MachineId> {
        self.machine_ids
            .iter()
            .filter(|(_, n)| self.left.contains(n) && self.reported.contains_key(n))
            .map(|(id, _)| id)
    }

    /// Takes in a key as read from the store.
    pub fn put(&mut self, keys: &Keys, kv: &KeyValue) {
        self.apply_key(keys, &kv.key, Some(&kv.value));
    }

    /// Takes in one change of the store's watch.
    pub fn apply(&mut self, keys: &Keys, event: &WatchEvent) {
        match event {
            WatchEvent::Put { kv, .. } => self.apply_key(keys, &kv.key, Some(&kv.value)),
            WatchEvent::Delete { key, .. } => self.apply_key(keys, key, None),
        }
    }

    fn apply_key(&mut self, keys: &Keys, key: &str, value: Option<&[u8]>) {
        let Some(parsed) = keys.parse(key) else {
            return;
        };
        match parsed {
            Key::Unit(unit) => {
                let desired = value.and_then(|v| {
                    records::decode::<DesiredOnly>(key, v)
                        .ok()
                        .map(|d| d.desired_state)
                });
                self.update(&unit, |e| e.desired = desired);
            }
            Key::Global(unit) => self.update(&unit, |e| e.global = value.is_some()),
            Key::Sched(unit) => {
                let sched = value.and_then(|v| records::decode::<SchedRecord>(key, v).ok());
                let machine = sched
                    .as_ref()
                    .and_then(|s| s.machine.as_ref())
                    .map(|m| self.machine_number(m));
                let reason = sched.is_some_and(|s| s.machine.is_none() && s.reason.is_some());
                self.update(&unit, |e| {
                    e.machine = machine;
                    e.reason = reason;
                });
            }
            Key::State(unit, machine) => {
                let number = self.machine_number(&machine);
                let running = value.map(|v| {
                    records::decode::<ActiveOnly>(key, v)
                        .is_ok_and(|s| matches!(s.active_state.as_str(), "active" | "reloading"))
                });
                self.update(&unit, |e| match running {
                    Some(running) => e.reports.set(number, running),
                    None => e.reports.remove(number),
                });
                self.index_report(&unit, number, value.is_some());
            }
            Key::Machine(machine) => {
                let number = self.machine_number(&machine);
                if value.is_some() {
                    self.left.remove(&number);
                } else {
                    self.left.insert(number);
                }
            }
            Key::Assignment(..) | Key::Leader | Key::Cluster => {}
        }
    }

    /// Adds or removes `unit` in the reports of machine `number`. The name
    /// is the one of the unit's entry when it has one (templates have
    /// none).
    fn index_report(&mut self, unit: &UnitName, number: u32, exists: bool) {
        if exists {
            let name = match self.units.get_key_value(unit.as_str()) {
                Some((name, _)) => Arc::clone(name),
                None => Arc::from(unit.as_str()),
            };
            self.reported.entry(number).or_default().insert(name);
        } else if let Some(units) = self.reported.get_mut(&number) {
            units.remove(unit.as_str());
            if units.is_empty() {
                self.reported.remove(&number);
            }
        }
    }

    fn machine_number(&mut self, machine: &MachineId) -> u32 {
        let next = u32::try_from(self.machine_ids.len()).unwrap_or(u32::MAX);
        *self.machine_ids.entry(machine.clone()).or_insert(next)
    }

    /// Changes one unit's entry, moving it between the counts.
    fn update(&mut self, unit: &UnitName, change: impl FnOnce(&mut Entry)) {
        if unit.is_template() {
            return;
        }
        let entry = self.units.entry(unit.as_str().into()).or_default();
        let before = entry.bucket();
        change(entry);
        let after = entry.bucket();
        let empty = entry.is_empty();
        if empty {
            self.units.remove(unit.as_str());
        }
        if before == after {
            return;
        }
        if let Some((d, c, u)) = before {
            self.counts.by_state[d][c] -= 1;
            self.counts.unschedulable -= u64::from(u);
        }
        if let Some((d, c, u)) = after {
            self.counts.by_state[d][c] += 1;
            self.counts.unschedulable += u64::from(u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::UnitRecord;
    use flotilla_proto::{Health, UnitState};

    use DesiredState::{Inactive, Launched, Loaded};

    fn kv(key: String, value: Vec<u8>) -> KeyValue {
        KeyValue {
            key,
            value: value.into(),
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            lease: None,
        }
    }

    fn put(key: String, value: Vec<u8>) -> WatchEvent {
        WatchEvent::Put {
            kv: kv(key, value),
            prev: None,
        }
    }

    fn delete(key: String) -> WatchEvent {
        WatchEvent::Delete {
            key,
            revision: 1,
            prev: None,
        }
    }

    fn unit(name: &str, desired: DesiredState) -> WatchEvent {
        let record = UnitRecord {
            text: "[Service]\nExecStart=/bin/true\n".into(),
            hash: "h".into(),
            desired_state: desired,
        };
        put(Keys::default().unit(&n(name)), records::encode(&record))
    }

    fn sched(name: &str, machine: Option<u8>, reason: Option<&str>) -> WatchEvent {
        let record = SchedRecord {
            machine: machine.map(m),
            reason: reason.map(str::to_owned),
        };
        put(Keys::default().sched(&n(name)), records::encode(&record))
    }

    fn state(name: &str, machine: u8, active: &str) -> WatchEvent {
        let s = UnitState {
            unit: n(name),
            machine: m(machine),
            load_state: "loaded".into(),
            active_state: active.into(),
            sub_state: "running".into(),
            hash: None,
            started_hash: None,
            main_pid: None,
            n_restarts: 0,
            container_id: None,
            health: Health::None,
            since_ms: 0,
            last_error: None,
        };
        put(
            Keys::default().state(&n(name), &m(machine)),
            records::encode(&s),
        )
    }

    fn n(name: &str) -> UnitName {
        UnitName::parse(name).unwrap()
    }

    fn m(i: u8) -> MachineId {
        MachineId::parse(&format!("{:032x}", i)).unwrap()
    }

    fn feed(census: &mut Census, events: &[WatchEvent]) {
        for e in events {
            census.apply(&Keys::default(), e);
        }
    }

    #[test]
    fn a_unit_moves_through_the_states_it_is_in() {
        let keys = Keys::default();
        let mut c = Census::default();
        feed(&mut c, &[unit("a.service", Launched)]);
        assert_eq!(c.counts().units(Launched, Inactive), 1);
        feed(&mut c, &[sched("a.service", None, Some("no machine"))]);
        assert_eq!(c.counts().unschedulable, 1);
        feed(&mut c, &[sched("a.service", Some(1), None)]);
        assert_eq!(c.counts().unschedulable, 0);
        assert_eq!(c.counts().units(Launched, Loaded), 1);
        feed(&mut c, &[state("a.service", 1, "activating")]);
        assert_eq!(c.counts().units(Launched, Loaded), 1);
        feed(&mut c, &[state("a.service", 1, "active")]);
        assert_eq!(c.counts().units(Launched, Launched), 1);
        // A report from another machine than its own does not count.
        feed(
            &mut c,
            &[
                sched("a.service", Some(2), None),
                state("a.service", 2, "failed"),
            ],
        );
        assert_eq!(c.counts().units(Launched, Loaded), 1);
        feed(&mut c, &[unit("a.service", Inactive)]);
        assert_eq!(c.counts().units(Inactive, Loaded), 1);
        // Destroyed: its leftovers are dropped as they go.
        feed(
            &mut c,
            &[
                delete(keys.unit(&n("a.service"))),
                delete(keys.state(&n("a.service"), &m(1))),
                delete(keys.state(&n("a.service"), &m(2))),
            ],
        );
        assert_eq!(c.counts(), Counts::default());
        assert_eq!(c.len(), 1, "its placement is still there");
        feed(&mut c, &[delete(keys.sched(&n("a.service")))]);
        assert!(c.is_empty());
    }

    #[test]
    fn global_units_count_what_any_machine_runs() {
        let keys = Keys::default();
        let mut c = Census::default();
        feed(
            &mut c,
            &[
                unit("g.service", Launched),
                put(keys.global(&n("g.service")), Vec::new()),
            ],
        );
        assert_eq!(c.counts().units(Launched, Inactive), 1);
        feed(&mut c, &[state("g.service", 3, "failed")]);
        assert_eq!(c.counts().units(Launched, Loaded), 1);
        feed(&mut c, &[state("g.service", 4, "active")]);
        assert_eq!(c.counts().units(Launched, Launched), 1);
        feed(&mut c, &[delete(keys.state(&n("g.service"), &m(4)))]);
        assert_eq!(c.counts().units(Launched, Loaded), 1);
        // No longer Global, and placed nowhere.
        feed(&mut c, &[delete(keys.global(&n("g.service")))]);
        assert_eq!(c.counts().units(Launched, Inactive), 1);
        assert_eq!(c.counts().unschedulable, 0, "no reason was written");
    }

    #[test]
    fn templates_and_other_keys_are_not_counted() {
        let keys = Keys::default();
        let mut c = Census::default();
        feed(
            &mut c,
            &[
                unit("web@.service", Inactive),
                put(keys.machine(&m(1)), b"{}".to_vec()),
                put(keys.assignment(&m(1), &n("x.service")), Vec::new()),
                put(keys.leader(), b"{}".to_vec()),
            ],
        );
        assert_eq!(c.counts(), Counts::default());
        assert!(c.is_empty());
    }

    #[test]
    fn replaying_changes_already_read_ends_in_the_same_counts() {
        // The read saw the unit running; the watch then replays how it got
        // there.
        let keys = Keys::default();
        let events = [
            unit("a.service", Launched),
            sched("a.service", Some(1), None),
            state("a.service", 1, "active"),
        ];
        let mut c = Census::default();
        for e in &events {
            if let WatchEvent::Put { kv, .. } = e {
                c.put(&keys, kv);
            }
        }
        let read = c.counts();
        feed(&mut c, &events);
        assert_eq!(c.counts(), read);
        assert_eq!(read.units(Launched, Launched), 1);
    }

    #[test]
    fn reports_are_indexed_by_machine_and_machines_that_left_are_known() {
        let keys = Keys::default();
        let mut c = Census::default();
        let reports = |c: &Census, machine: u8| {
            let mut units: Vec<String> = c.reports_of(&m(machine)).map(str::to_owned).collect();
            units.sort();
            units
        };
        // Read at load, then changes; a template's report is indexed too,
        // though the template is not counted.
        if let WatchEvent::Put { kv, .. } = state("a.service", 1, "active") {
            c.put(&keys, &kv);
        }
        feed(
            &mut c,
            &[
                state("b.service", 1, "failed"),
                state("a.service", 2, "active"),
                state("web@.service", 1, "active"),
            ],
        );
        assert_eq!(reports(&c, 1), ["a.service", "b.service", "web@.service"]);
        assert_eq!(reports(&c, 2), ["a.service"]);
        assert!(reports(&c, 3).is_empty(), "a machine never seen");
        feed(&mut c, &[delete(keys.state(&n("b.service"), &m(1)))]);
        assert_eq!(reports(&c, 1), ["a.service", "web@.service"]);

        // Machine 1 leaves: its reports are still known until deleted.
        assert!(!c.has_left(&m(1)));
        feed(&mut c, &[put(keys.machine(&m(1)), b"{}".to_vec())]);
        assert!(!c.has_left(&m(1)));
        feed(&mut c, &[delete(keys.machine(&m(1)))]);
        assert!(c.has_left(&m(1)));
        assert!(!c.has_left(&m(2)));
        let left: Vec<&MachineId> = c.left_with_reports().collect();
        assert_eq!(left, [&m(1)]);
        feed(
            &mut c,
            &[
                delete(keys.state(&n("a.service"), &m(1))),
                delete(keys.state(&n("web@.service"), &m(1))),
            ],
        );
        assert!(reports(&c, 1).is_empty());
        assert_eq!(c.left_with_reports().count(), 0);
        assert!(c.has_left(&m(1)), "it has not come back");
        // It comes back.
        feed(&mut c, &[put(keys.machine(&m(1)), b"{}".to_vec())]);
        assert!(!c.has_left(&m(1)));
    }

    #[test]
    fn values_that_do_not_decode_count_as_absent() {
        let keys = Keys::default();
        let mut c = Census::default();
        feed(&mut c, &[unit("a.service", Loaded)]);
        feed(&mut c, &[put(keys.unit(&n("a.service")), b"junk".to_vec())]);
        assert_eq!(c.counts(), Counts::default());
    }
}
