//! Global units in [`PlacementView`]: on which machines they run (those
//! whose metadata matches and that run no unit conflicting with them), and
//! what they reserve there.

use std::collections::BTreeSet;

use flotilla_proto::Machine;
use flotilla_proto::fleet;

use super::index::{Mx, UnitId};
use super::view::PlacementView;

impl PlacementView {
    /// What the global units that run on a machine reserve there: those
    /// that want to run, whose metadata matches, and that conflict with
    /// none of `units` (the units placed there), which is the rule the
    /// agents' feed delivers them by.
    pub(super) fn global_reservation(
        &self,
        machine: &Machine,
        units: &BTreeSet<UnitId>,
    ) -> (u64, u64) {
        let mut cpu = 0u64;
        let mut mem = 0u64;
        for &g in &self.globals {
            if self.global_runs_with(g, machine, units) {
                let g = self.unit(g);
                cpu = cpu.saturating_add(g.cpu());
                mem = mem.saturating_add(g.mem());
            }
        }
        (cpu, mem)
    }

    /// Whether global unit `g` runs on a machine with `units` placed on it:
    /// it wants to run, its metadata matches, and none of them conflicts
    /// with it (fleet's rule: the placed unit stays, the global yields).
    pub(crate) fn global_runs_with(
        &self,
        g: UnitId,
        machine: &Machine,
        units: &BTreeSet<UnitId>,
    ) -> bool {
        let ge = self.unit(g);
        ge.wants
            && ge.fleet.metadata_matches(&machine.metadata)
            && !units.iter().any(|&x| {
                let xe = self.unit(x);
                fleet::units_conflict(ge.name.as_str(), &ge.fleet, xe.name.as_str(), &xe.fleet)
            })
    }

    /// Whether global unit `g` runs on machine `m`.
    pub(crate) fn global_runs_on(&self, g: UnitId, m: Mx) -> bool {
        let entry = self.machine(m);
        self.global_runs_with(g, &entry.machine, &entry.units)
    }

    /// The global units that conflict with unit `u`, whether they want to
    /// run or not.
    pub(super) fn globals_conflicting(&self, u: UnitId) -> Vec<UnitId> {
        let e = self.unit(u);
        self.globals
            .iter()
            .copied()
            .filter(|&g| {
                let g = self.unit(g);
                fleet::units_conflict(e.name.as_str(), &e.fleet, g.name.as_str(), &g.fleet)
            })
            .collect()
    }

    /// After unit `u` came to or left machine `m`: when it conflicts with
    /// global units, whether they run there changed, and so may the
    /// machine's reservation and the machine their followers may use.
    pub(super) fn globals_changed_on(&mut self, u: UnitId, m: Mx) {
        let globals = self.globals_conflicting(u);
        if globals.is_empty() {
            return;
        }
        let entry = self.machine(m);
        let (cpu, mem) = self.global_reservation(&entry.machine, &entry.units);
        if (cpu, mem) != (entry.global_cpu, entry.global_mem) {
            if cpu < entry.global_cpu || mem < entry.global_mem {
                self.room_freed = true;
            }
            let entry = self.machine_mut(m);
            entry.global_cpu = cpu;
            entry.global_mem = mem;
            self.reindex(m);
        }
        for g in globals {
            let name = self.unit(g).name.clone();
            self.mark_followers_dirty(&name);
        }
    }

    /// Recomputes every machine's global reservation: O(machines x global
    /// units), after a global unit changes, which is rare.
    pub(super) fn refresh_global_reservations(&mut self) {
        for i in 0..self.machines.len() {
            let mx = Mx::at(i);
            let Some(entry) = self.machines[mx.index()].as_ref() else {
                continue;
            };
            let (cpu, mem) = self.global_reservation(&entry.machine, &entry.units);
            if (cpu, mem) == (entry.global_cpu, entry.global_mem) {
                continue;
            }
            if cpu < entry.global_cpu || mem < entry.global_mem {
                self.room_freed = true;
            }
            let entry = self.machine_mut(mx);
            entry.global_cpu = cpu;
            entry.global_mem = mem;
            self.reindex(mx);
        }
    }
}
