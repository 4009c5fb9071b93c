//! The cluster the benchmarks place: machines with metadata, and units in
//! groups of the same unit file, each group with metadata constraints and
//! some spread with `Conflicts`.
//!
//! Machines: `region=r0..r4` (`i % 5`), `rack=k0..k99` (`i % 100`), and
//! `disk=ssd|hdd` (half of each region), 64 CPUs and 256 GiB each.
//!
//! Groups (`g`, 1,000 units each by default), every one with a
//! `MachineMetadata` constraint and resource requests (`CPUQuota=10%`,
//! `MemoryMax=128M`):
//!
//! | `g % 20 == 0` (a twentieth) | `disk=ssd`, and `Conflicts=g<g>@*.service`: one instance per machine |
//! |---|---|
//! | else `g % 4 == 0` | `region=r<g%5>` |
//! | `g % 4 == 1` | `disk=ssd` |
//! | `g % 4 == 2` | `region=r<g%5> region=r<g+1%5>` (either) |
//! | `g % 4 == 3` | `region=r<g%5> disk=hdd` (both) |

use std::collections::BTreeMap;

use anyhow::Context;
use flotilla_api::client::Client;
use flotilla_proto::wire::UnitPut;
use flotilla_proto::{Capacity, DesiredState, Machine, MachineId, UnitName, UnitSpec};
use flotilla_scheduler::placement::UnitInput;
use flotilla_scheduler::records::UnitRecord;
use tokio::task::JoinSet;

/// A machine of the benchmark cluster.
pub fn machine(i: usize) -> Machine {
    let mut metadata = BTreeMap::new();
    metadata.insert("region".to_owned(), format!("r{}", i % 5));
    metadata.insert("rack".to_owned(), format!("k{}", i % 100));
    let disk = if (i / 5).is_multiple_of(2) {
        "ssd"
    } else {
        "hdd"
    };
    metadata.insert("disk".to_owned(), disk.to_owned());
    Machine {
        id: machine_id(i),
        hostname: format!("bench-{i}"),
        addresses: vec![format!(
            "10.{}.{}.{}",
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        )],
        metadata,
        capacity: Capacity {
            cpu_millis: 64_000,
            memory_bytes: 256 << 30,
        },
        agent_version: "bench".to_owned(),
    }
}

/// Machine `i`'s id: `i` in 32 hex digits.
pub fn machine_id(i: usize) -> MachineId {
    MachineId::parse(&format!("{i:032x}")).expect("32 hex digits are a machine id")
}

/// One group of units: the same file under `per_group` names.
pub struct Group {
    pub index: usize,
    pub conflicts: bool,
    /// The stored record (text, hash, desired state) every unit of the group
    /// shares.
    pub record: UnitRecord,
    /// What placement sees of every unit of the group.
    pub input: UnitInput,
}

impl Group {
    pub fn new(g: usize) -> anyhow::Result<Group> {
        let conflicts = g.is_multiple_of(20);
        let mut fleet = String::new();
        if conflicts {
            fleet.push_str("MachineMetadata=disk=ssd\n");
            fleet.push_str(&format!("Conflicts=g{g:04}@*.service\n"));
        } else {
            let a = g % 5;
            let b = (g + 1) % 5;
            let metadata = match g % 4 {
                0 => format!("region=r{a}"),
                1 => "disk=ssd".to_owned(),
                2 => format!("region=r{a} region=r{b}"),
                _ => format!("region=r{a} disk=hdd"),
            };
            fleet.push_str(&format!("MachineMetadata={metadata}\n"));
        }
        let text = format!(
            "[Unit]\nDescription=benchmark group {g}\n\n[Service]\n\
             ExecStart=/bin/sleep infinity\nCPUQuota=10%\nMemoryMax=128M\n\n[X-Fleet]\n{fleet}"
        );
        // Checked once per group under its first name: the file has no
        // specifiers, so every instance reads the same.
        let name = unit_name(g, 0, conflicts)?;
        let checked = UnitSpec::check_named(name.as_str(), &name, &text)
            .with_context(|| format!("the unit file of group {g} does not check"))?;
        let desired = DesiredState::Launched;
        Ok(Group {
            index: g,
            conflicts,
            record: UnitRecord {
                text,
                hash: checked.spec.hash.clone(),
                desired_state: desired,
            },
            input: UnitInput::from_spec(&checked.spec, desired),
        })
    }

    /// The name of unit `i` of this group.
    pub fn name(&self, i: usize) -> UnitName {
        unit_name(self.index, i, self.conflicts).expect("benchmark unit names are valid")
    }
}

fn unit_name(g: usize, i: usize, conflicts: bool) -> anyhow::Result<UnitName> {
    let name = if conflicts {
        format!("g{g:04}@{i:04}.service")
    } else {
        format!("g{g:04}-{i:04}.service")
    };
    UnitName::parse(&name).with_context(|| format!("bad unit name {name}"))
}

/// Every group of a workload.
pub fn groups(count: usize) -> anyhow::Result<Vec<Group>> {
    (0..count).map(Group::new).collect()
}

/// A plain unit (no constraint, small resource requests: 4,096 fit on a
/// machine), for B3 and B4.
pub fn plain_text() -> &'static str {
    "[Unit]\nDescription=benchmark unit\n\n[Service]\nExecStart=/bin/sleep infinity\n\
     CPUQuota=1%\nMemoryMax=64M\n"
}

/// The record of a plain unit named `name`.
pub fn plain_record(name: &UnitName) -> anyhow::Result<UnitRecord> {
    let checked = UnitSpec::check_named(name.as_str(), name, plain_text())
        .with_context(|| format!("the plain unit file does not check as {name}"))?;
    Ok(UnitRecord {
        text: plain_text().to_owned(),
        hash: checked.spec.hash,
        desired_state: DesiredState::Launched,
    })
}

/// Submits units with their texts through the API and launches them, 32
/// requests at a time.
pub async fn launch_all(
    client: &Client,
    units: impl IntoIterator<Item = (UnitName, String)>,
) -> anyhow::Result<()> {
    let mut tasks = JoinSet::new();
    for (name, text) in units {
        let client = client.clone();
        let put = UnitPut {
            desired_state: Some(DesiredState::Launched),
            text: Some(text),
            ..UnitPut::default()
        };
        tasks.spawn(async move { client.put_unit(&name, &put).await });
        while tasks.len() >= 32 {
            if let Some(r) = tasks.join_next().await {
                r.context("a submit task failed")?
                    .context("submitting a unit")?;
            }
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.context("a submit task failed")?
            .context("submitting a unit")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_checks_and_names_are_distinct() {
        let groups = groups(40).unwrap();
        let mut names = std::collections::BTreeSet::new();
        for g in &groups {
            for i in [0, 1, 999] {
                assert!(names.insert(g.name(i)));
            }
            assert!(!g.input.fleet.machine_metadata.is_empty());
            assert_eq!(g.conflicts, !g.input.fleet.conflicts.is_empty());
        }
        assert_eq!(groups.iter().filter(|g| g.conflicts).count(), 2);
    }

    #[test]
    fn machines_have_distinct_ids_and_half_ssd_per_region() {
        let ssd_in_r0 = (0..1000)
            .map(machine)
            .filter(|m| m.metadata["region"] == "r0" && m.metadata["disk"] == "ssd")
            .count();
        assert_eq!(ssd_in_r0, 100);
        assert_ne!(machine_id(1), machine_id(2));
    }

    #[test]
    fn the_plain_unit_checks() {
        let name = UnitName::parse("p1.service").unwrap();
        assert!(!plain_record(&name).unwrap().hash.is_empty());
    }
}
