//! Why a unit cannot be placed, in words for the people who run
//! `flotilla status`. Only failures come here, so this may look at every
//! candidate machine and at the units on it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::index::{Mx, UnitId};
use super::plan::{Failure, Mode, Reject};
use super::view::{BlockKind, PlacementView};

/// How many examples a reason lists before "and N more".
const EXAMPLES: usize = 3;

/// The candidates that failed, by why.
#[derive(Default)]
struct Tally {
    /// (unit placed there, machine) per kind of reason.
    conflicts: Vec<(UnitId, Mx)>,
    globals: Vec<(UnitId, Mx)>,
    displaced: Vec<(UnitId, Mx)>,
    would_displace: Vec<(UnitId, Mx)>,
    /// Machines without room, and what they lack.
    no_room: usize,
    every_lacks_cpu: bool,
    every_lacks_mem: bool,
    max_free_cpu: u64,
    max_free_mem: u64,
    /// Whether the unit asks more CPU (memory) than every one of them has
    /// at all, so that no unit leaving can make room; and whether each of
    /// them is too small for one resource or the other.
    every_too_small_cpu: bool,
    every_too_small_mem: bool,
    every_too_small: bool,
    max_capacity_cpu: u64,
    max_capacity_mem: u64,
}

impl PlacementView {
    /// Why unit `u` fits none of `candidates` (the machines that match its
    /// id and metadata, or fewer).
    pub(crate) fn explain(&self, u: UnitId, mode: &Mode<'_>, candidates: &[Mx]) -> Failure {
        let mut t = Tally {
            every_lacks_cpu: true,
            every_lacks_mem: true,
            every_too_small_cpu: true,
            every_too_small_mem: true,
            every_too_small: true,
            ..Tally::default()
        };
        let e = self.unit(u);
        let (want_cpu, want_mem) = (e.resources.cpu_millis, e.resources.memory_bytes);
        for &m in candidates {
            let Err(reject) = self.check(u, m, mode) else {
                continue;
            };
            match reject {
                Reject::MachineId
                | Reject::Metadata
                | Reject::GlobalLeader(_)
                | Reject::Leader(_) => {}
                Reject::Global(g) => t.globals.push((g, m)),
                Reject::Conflict => {
                    if let Some(x) = self.find_conflict(u, m) {
                        t.conflicts.push((x, m));
                    }
                }
                Reject::Displaced => {
                    if let Some(x) = self.find_displacer(u, m) {
                        t.displaced.push((x, m));
                    }
                }
                Reject::WouldDisplace => {
                    if let Some(x) = self.find_replacee(u, m) {
                        t.would_displace.push((x, m));
                    }
                }
                Reject::NoRoom { cpu, mem } => {
                    t.no_room += 1;
                    t.every_lacks_cpu &= cpu;
                    t.every_lacks_mem &= mem;
                    let machine = self.machine(m);
                    t.max_free_cpu = t.max_free_cpu.max(machine.free_cpu());
                    t.max_free_mem = t.max_free_mem.max(machine.free_mem());
                    let capacity = machine.machine.capacity;
                    let small_cpu = want_cpu.is_some_and(|c| c > capacity.cpu_millis);
                    let small_mem = want_mem.is_some_and(|m| m > capacity.memory_bytes);
                    t.every_too_small_cpu &= small_cpu;
                    t.every_too_small_mem &= small_mem;
                    t.every_too_small &= small_cpu || small_mem;
                    t.max_capacity_cpu = t.max_capacity_cpu.max(capacity.cpu_millis);
                    t.max_capacity_mem = t.max_capacity_mem.max(capacity.memory_bytes);
                }
            }
        }
        let mut parts: Vec<(usize, String, String)> = Vec::new();
        if !t.conflicts.is_empty() {
            let list = self.examples(&t.conflicts);
            parts.push((
                t.conflicts.len(),
                format!("runs a conflicting unit ({list})"),
                format!("run a conflicting unit ({list})"),
            ));
        }
        if !t.globals.is_empty() {
            let mut names: Vec<&str> = t
                .globals
                .iter()
                .map(|&(g, _)| self.unit(g).name.as_str())
                .collect();
            names.sort_unstable();
            names.dedup();
            let (one, many) = if let [name] = names[..] {
                (
                    format!("runs global unit {name}, which conflicts with it"),
                    format!("run global unit {name}, which conflicts with it"),
                )
            } else {
                let list = names.join(", ");
                (
                    format!("runs a global unit that conflicts with it ({list})"),
                    format!("run a global unit that conflicts with it ({list})"),
                )
            };
            parts.push((t.globals.len(), one, many));
        }
        if !t.displaced.is_empty() {
            let list = self.examples(&t.displaced);
            parts.push((
                t.displaced.len(),
                format!("runs a unit that replaces it ({list})"),
                format!("run a unit that replaces it ({list})"),
            ));
        }
        if !t.would_displace.is_empty() {
            let list = self.examples(&t.would_displace);
            parts.push((
                t.would_displace.len(),
                format!("runs a unit it replaces, which a unit moved by Replaces may not displace ({list})"),
                format!("run a unit it replaces, which a unit moved by Replaces may not displace ({list})"),
            ));
        }
        let room = (t.no_room > 0).then(|| self.room_text(u, &t));
        let reason = match (&parts[..], room) {
            ([], None) => {
                return Failure {
                    kind: BlockKind::Machines,
                    reason: self.no_machine_reason(u, candidates),
                };
            }
            ([], Some((alone, _, _))) => alone,
            ([(_, one, _)], None) => format!("every eligible machine {one}"),
            (_, room) => {
                let mut text = "no eligible machine can take it: ".to_owned();
                let mut first = true;
                let room_part = room.map(|(_, one, many)| (t.no_room, one, many));
                for (n, one, many) in parts.iter().cloned().chain(room_part) {
                    if !first {
                        text.push_str("; ");
                    }
                    first = false;
                    let verb = if n == 1 { one } else { many };
                    let _ = write!(text, "{n} {verb}");
                }
                text
            }
        };
        Failure {
            kind: BlockKind::Room,
            reason,
        }
    }

    /// What a unit needs and the most the machines without room have free
    /// (or have at all, when it asks more than they hold, so that no unit
    /// leaving can help): the reason when room is the only problem, and the
    /// part of a longer reason for one machine and for several.
    fn room_text(&self, u: UnitId, t: &Tally) -> (String, String, String) {
        let e = self.unit(u);
        let cpu = fmt_cpu(e.cpu());
        let mem = fmt_bytes(e.mem());
        let both = format!("{cpu} CPU and {mem} memory");
        let too_big = match (t.every_too_small_cpu, t.every_too_small_mem) {
            (true, false) => Some((format!("{cpu} CPU"), fmt_cpu(t.max_capacity_cpu))),
            (false, true) => Some((format!("{mem} memory"), fmt_bytes(t.max_capacity_mem))),
            (true, true) => Some((
                both.clone(),
                format!(
                    "{} CPU and {} memory",
                    fmt_cpu(t.max_capacity_cpu),
                    fmt_bytes(t.max_capacity_mem)
                ),
            )),
            (false, false) => None,
        };
        if let Some((need, most)) = too_big {
            return (
                format!("needs {need}, more than any eligible machine has (at most {most})"),
                format!("is too small (needs {need}, at most {most})"),
                format!("are too small (needs {need}, at most {most})"),
            );
        }
        if t.every_too_small {
            return (
                format!("needs {both}, and no eligible machine has both"),
                format!("is too small (needs {both}, not both)"),
                format!("are too small (needs {both}, none has both)"),
            );
        }
        let free_cpu = fmt_cpu(t.max_free_cpu);
        let free_mem = fmt_bytes(t.max_free_mem);
        let (need, free) = match (t.every_lacks_cpu, t.every_lacks_mem) {
            (true, false) => (format!("{cpu} CPU"), Some(free_cpu)),
            (false, true) => (format!("{mem} memory"), Some(free_mem)),
            (true, true) => (both, Some(format!("{free_cpu} CPU and {free_mem} memory"))),
            (false, false) => (both, None),
        };
        match free {
            Some(free) => (
                format!("needs {need}, the most any eligible machine has free is {free}"),
                format!("has too little free (needs {need}, the most free is {free})"),
                format!("have too little free (needs {need}, the most free is {free})"),
            ),
            None => (
                format!("needs {need}, and no eligible machine has both free"),
                format!("has too little free (needs {need}, not both free)"),
                format!("have too little free (needs {need}, not both free on any)"),
            ),
        }
    }

    /// `web@1.service on m1, web@2.service on m2 and 3 more`, by machine.
    fn examples(&self, hits: &[(UnitId, Mx)]) -> String {
        let mut by_machine: BTreeMap<&str, &str> = BTreeMap::new();
        for &(x, m) in hits {
            by_machine
                .entry(self.machine(m).label())
                .or_insert(self.unit(x).name.as_str());
        }
        let mut out = String::new();
        for (i, (machine, unit)) in by_machine.iter().take(EXAMPLES).enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{unit} on {machine}");
        }
        if by_machine.len() > EXAMPLES {
            let _ = write!(out, " and {} more", by_machine.len() - EXAMPLES);
        }
        out
    }

    /// Why no machine matches a unit's id, metadata and global leaders.
    fn no_machine_reason(&self, u: UnitId, candidates: &[Mx]) -> String {
        let e = self.unit(u);
        if self.machine_count() == 0 {
            return "no machines in the cluster".to_owned();
        }
        let metadata =
            (!e.fleet.machine_metadata.is_empty()).then(|| fmt_metadata(&e.fleet.machine_metadata));
        if let Some(id) = &e.fleet.machine_id {
            if candidates.is_empty() {
                return format!("no machine has id {id}");
            }
            let named = candidates
                .iter()
                .map(|&m| self.machine(m).label())
                .collect::<Vec<_>>()
                .join(", ");
            let matching: Vec<Mx> = candidates
                .iter()
                .copied()
                .filter(|&m| e.fleet.metadata_matches(&self.machine(m).machine.metadata))
                .collect();
            if matching.is_empty()
                && let Some(metadata) = &metadata
            {
                return format!("machine {id} ({named}) does not have metadata {metadata}");
            }
            if let Some(leader) = self.absent_global_leader(u, &matching) {
                return format!(
                    "machine {id} ({named}) does not run {leader}, which it must run beside"
                );
            }
            return format!("machine {id} ({named}) cannot take it");
        }
        let matching: Vec<Mx> = candidates
            .iter()
            .copied()
            .filter(|&m| e.fleet.metadata_matches(&self.machine(m).machine.metadata))
            .collect();
        if matching.is_empty()
            && let Some(metadata) = &metadata
        {
            return format!("no machine has metadata {metadata}");
        }
        if let Some(leader) = self.absent_global_leader(u, &matching) {
            return match &metadata {
                Some(metadata) => format!(
                    "no machine with metadata {metadata} runs {leader}, which it must run beside"
                ),
                None => format!("no machine runs {leader}, which it must run beside"),
            };
        }
        "no machine can take it".to_owned()
    }

    /// A global unit the unit must run beside that runs on none of
    /// `machines`.
    fn absent_global_leader(&self, u: UnitId, machines: &[Mx]) -> Option<String> {
        let e = self.unit(u);
        e.fleet.machine_of.iter().find_map(|leader| {
            let lid = self.lookup_name(leader)?;
            let l = self.unit(lid);
            let runs_somewhere =
                l.fleet.global && machines.iter().any(|&m| self.global_runs_on(lid, m));
            (l.fleet.global && !runs_somewhere).then(|| leader.to_string())
        })
    }

    /// Why the one machine a follower must use cannot take it.
    pub(crate) fn beside_failure(&self, u: UnitId, m: Mx, reject: &Reject) -> Failure {
        let e = self.unit(u);
        let machine = self.machine(m);
        let leaders: Vec<String> = e
            .fleet
            .machine_of
            .iter()
            .filter(|l| {
                self.lookup_name(l)
                    .is_some_and(|l| !self.unit(l).fleet.global)
            })
            .map(ToString::to_string)
            .collect();
        let what = match reject {
            Reject::MachineId => format!(
                "which its MachineID {} does not name",
                e.fleet.machine_id.as_deref().unwrap_or_default()
            ),
            Reject::Metadata => format!(
                "which does not have metadata {}",
                fmt_metadata(&e.fleet.machine_metadata)
            ),
            Reject::GlobalLeader(g) => {
                format!("which does not run {g}, which it must also run beside")
            }
            Reject::Leader(l) => format!("but {l}, which it must also run beside, is not there"),
            Reject::Global(g) => format!(
                "which runs global unit {}, which conflicts with it",
                self.unit(*g).name
            ),
            Reject::Conflict => match self.find_conflict(u, m) {
                Some(x) => format!("which runs a conflicting unit ({})", self.unit(x).name),
                None => "which runs a conflicting unit".to_owned(),
            },
            Reject::Displaced => match self.find_displacer(u, m) {
                Some(x) => format!("which runs {}, which replaces it", self.unit(x).name),
                None => "which runs a unit that replaces it".to_owned(),
            },
            Reject::WouldDisplace => match self.find_replacee(u, m) {
                Some(x) => format!("which runs {}, which it replaces", self.unit(x).name),
                None => "which runs a unit it replaces".to_owned(),
            },
            Reject::NoRoom { cpu, mem } => {
                let mut needs = Vec::new();
                if *cpu {
                    needs.push(format!(
                        "needs {} CPU, {} free",
                        fmt_cpu(e.cpu()),
                        fmt_cpu(machine.free_cpu())
                    ));
                }
                if *mem {
                    needs.push(format!(
                        "needs {} memory, {} free",
                        fmt_bytes(e.mem()),
                        fmt_bytes(machine.free_mem())
                    ));
                }
                format!("which has too little free ({})", needs.join("; "))
            }
        };
        Failure {
            kind: if reject.is_static() {
                BlockKind::Machines
            } else {
                BlockKind::Room
            },
            reason: format!(
                "must run beside {} on {}, {what}",
                leaders.join(" and "),
                machine.label()
            ),
        }
    }
}

/// `2000m` (thousandths of a CPU, as requests are given).
pub(crate) fn fmt_cpu(millis: u64) -> String {
    format!("{millis}m")
}

/// A size as systemd writes one: `512M`, `1.5G`, `100B`.
pub(crate) fn fmt_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 6] = [
        ("E", 1 << 60),
        ("P", 1 << 50),
        ("T", 1 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ];
    for (suffix, size) in UNITS {
        if bytes >= size {
            if bytes.is_multiple_of(size) {
                return format!("{}{suffix}", bytes / size);
            }
            let tenths = (u128::from(bytes) * 10 + u128::from(size) / 2) / u128::from(size);
            return format!("{}.{}{suffix}", tenths / 10, tenths % 10);
        }
    }
    format!("{bytes}B")
}

/// `disk=ssd and region=eu`, `region=eu or region=us`, `disk=ssd and
/// (region=eu or region=us)`.
pub(crate) fn fmt_metadata(metadata: &BTreeMap<String, Vec<String>>) -> String {
    let several_keys = metadata.len() > 1;
    metadata
        .iter()
        .map(|(key, values)| {
            let alternatives: Vec<String> = values.iter().map(|v| format!("{key}={v}")).collect();
            let joined = alternatives.join(" or ");
            if several_keys && values.len() > 1 {
                format!("({joined})")
            } else {
                joined
            }
        })
        .collect::<Vec<_>>()
        .join(" and ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_systemd() {
        assert_eq!(fmt_bytes(512), "512B");
        assert_eq!(fmt_bytes(1024), "1K");
        assert_eq!(fmt_bytes(512 << 20), "512M");
        assert_eq!(fmt_bytes(3 << 29), "1.5G");
        assert_eq!(fmt_bytes(8 << 30), "8G");
        assert_eq!(fmt_bytes(7 << 60), "7E");
        assert_eq!(fmt_bytes(u64::MAX), "16.0E");
    }

    #[test]
    fn metadata_reads_as_and_of_ors() {
        let mut md = BTreeMap::new();
        md.insert("region".to_owned(), vec!["eu".to_owned()]);
        assert_eq!(fmt_metadata(&md), "region=eu");
        md.insert("region".to_owned(), vec!["eu".to_owned(), "us".to_owned()]);
        assert_eq!(fmt_metadata(&md), "region=eu or region=us");
        md.insert("disk".to_owned(), vec!["ssd".to_owned()]);
        assert_eq!(fmt_metadata(&md), "disk=ssd and (region=eu or region=us)");
    }
}
