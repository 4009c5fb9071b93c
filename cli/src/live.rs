//! Blocking until changed units run their new contents: after `start
//! --replace`, `submit --replace` of a launched unit, or `apply`, the
//! command returns only once every machine that runs each unit it gave new
//! contents reports the unit active and started with them (the state's
//! `startedHash`), so that what a script does next talks to the new
//! version.
//!
//! - The machines: the one a unit is placed on; for a `Global` unit, every
//!   machine that reports a state for it (at least one).
//! - A unit that failed with the new contents, or that the agent refused,
//!   ends the wait with an error naming the unit, the machine and why.
//! - An agent that does not say which contents it started a unit with (one
//!   from before `startedHash`) is taken at its word the old way: the unit
//!   counts as running the new contents once it is active with their file
//!   written, and a note says so.
//!
//! Like [`crate::units::wait_for`], it follows the server's watch, not a
//! clock, and gives up after `attempts` rounds when asked to.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::bail;
use flotilla_api::client::StateQuery;
use flotilla_proto::wire::Unit;
use flotilla_proto::{MachineId, UnitName, UnitState, fleet, value};

use crate::client::Ctx;

/// How long one round of waiting lasts at most.
const ROUND: Duration = Duration::from_secs(5);

/// Where one unit is towards running its new contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Every machine runs them.
    Running {
        /// Machines whose agent does not say which contents a unit was
        /// started with: taken as running them because they are active
        /// with their file written.
        unsaid: Vec<MachineId>,
    },
    /// Not yet, and why (for the progress line).
    Waiting(String),
    /// The unit failed with the new contents (or was refused) on a
    /// machine.
    Failed { machine: MachineId, reason: String },
}

/// Whether a unit is `Global=true` (it runs on every machine it applies
/// to and has no one machine).
fn is_global(unit: &Unit) -> bool {
    unit.options
        .iter()
        .rev()
        .find(|o| o.section == fleet::SECTION && o.name == "Global")
        .and_then(|o| value::parse_bool(&o.value))
        .unwrap_or(false)
}

/// Where `unit` is towards running the contents whose hash is `hash`, from
/// the states its machines reported.
pub fn progress(unit: &Unit, hash: &str, states: &[UnitState]) -> Progress {
    let machines: Vec<&UnitState> = if is_global(unit) {
        if states.is_empty() {
            return Progress::Waiting(format!("{} is reported by no machine yet", unit.name));
        }
        states.iter().collect()
    } else {
        let Some(machine) = &unit.machine_id else {
            return Progress::Waiting(match &unit.unscheduled_reason {
                Some(reason) => format!("{} is not placed ({reason})", unit.name),
                None => format!("{} is not placed", unit.name),
            });
        };
        match states.iter().find(|s| &s.machine == machine) {
            Some(s) => vec![s],
            None => {
                return Progress::Waiting(format!(
                    "{} is not reported by {} yet",
                    unit.name,
                    short(machine)
                ));
            }
        }
    };
    let mut unsaid = Vec::new();
    let mut waiting = Vec::new();
    for s in machines {
        match on_machine(s, hash) {
            OnMachine::Runs => {}
            OnMachine::RunsUnsaid => unsaid.push(s.machine.clone()),
            OnMachine::Failed(reason) => {
                return Progress::Failed {
                    machine: s.machine.clone(),
                    reason,
                };
            }
            OnMachine::Waiting(why) => waiting.push(format!("{} {why}", short(&s.machine))),
        }
    }
    if waiting.is_empty() {
        Progress::Running { unsaid }
    } else {
        Progress::Waiting(format!("{} on {}", unit.name, waiting.join(", ")))
    }
}

/// Where a unit is on one machine.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OnMachine {
    /// Active, started with the new contents.
    Runs,
    /// Active with the new file written; the agent does not say what it
    /// was started with.
    RunsUnsaid,
    Failed(String),
    Waiting(String),
}

fn on_machine(s: &UnitState, hash: &str) -> OnMachine {
    let active = matches!(s.active_state.as_str(), "active" | "reloading");
    let failed = s.active_state == "failed" || s.sub_state == "auto-restart";
    let why = || {
        s.last_error.clone().unwrap_or_else(|| {
            if s.sub_state == "auto-restart" {
                "it stopped and systemd restarts it (Restart=)".to_owned()
            } else {
                "the unit failed".to_owned()
            }
        })
    };
    // Refused by the agent (a unit the host defines, a file flotilla did
    // not write, contents it cannot render): nothing it does changes that.
    if s.load_state == "error" && s.hash.is_none() {
        return OnMachine::Failed(why());
    }
    if s.active_state == "unknown" {
        return OnMachine::Waiting(format!(
            "is unreachable ({})",
            s.last_error.as_deref().unwrap_or("no heartbeat")
        ));
    }
    let file_written = s.hash.as_deref() == Some(hash);
    match s.started_hash.as_deref() {
        Some(h) if h == hash => {
            if active {
                OnMachine::Runs
            } else if failed {
                OnMachine::Failed(why())
            } else {
                OnMachine::Waiting(format!("is {}", s.active_state))
            }
        }
        Some(_) => OnMachine::Waiting(if file_written {
            "still runs the old contents".to_owned()
        } else {
            "has not the new contents yet".to_owned()
        }),
        None if !file_written => OnMachine::Waiting("has not the new contents yet".to_owned()),
        None if active => OnMachine::RunsUnsaid,
        None if s.active_state == "failed" => OnMachine::Failed(why()),
        None => OnMachine::Waiting(format!("is {}", s.active_state)),
    }
}

fn short(m: &MachineId) -> &str {
    &m.as_str()[..8.min(m.as_str().len())]
}

/// Waits until every unit of `names` runs the contents the cluster has for
/// it when this starts, on every machine that runs it; see the module
/// documentation.
pub async fn wait_running(ctx: &Ctx, names: &[UnitName], attempts: u32) -> anyhow::Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let progress_line = std::io::stderr().is_terminal();
    let clear = || {
        if progress_line {
            eprint!("\r\x1b[K");
        }
    };
    let mut index = ctx.client.watch(0, Duration::ZERO).await?;
    // The contents each unit is to run: what the cluster has at first.
    let mut hashes: Vec<Option<String>> = vec![None; names.len()];
    let mut told = BTreeSet::new();
    let mut round = 0u32;
    loop {
        let mut waiting = Vec::new();
        let read = read_all(ctx, names).await?;
        for ((name, hash), (unit, states)) in names.iter().zip(hashes.iter_mut()).zip(read) {
            let hash = hash.get_or_insert_with(|| unit.hash.clone());
            if unit.hash != *hash {
                clear();
                bail!(
                    "the contents of {name} changed again while waiting for them to run; not waiting for the newer ones"
                );
            }
            match progress(&unit, hash, &states) {
                Progress::Running { unsaid } => {
                    for m in unsaid {
                        if told.insert((name.clone(), m.clone())) {
                            clear();
                            eprintln!(
                                "flotilla: note: the agent of machine {m} does not say which contents {name} was started with (an agent older than this CLI); taken as running the new contents because it is active with their file"
                            );
                        }
                    }
                }
                Progress::Waiting(why) => waiting.push(why),
                Progress::Failed { machine, reason } => {
                    clear();
                    bail!("{name} failed with its new contents on machine {machine}: {reason}");
                }
            }
        }
        if waiting.is_empty() {
            clear();
            return Ok(());
        }
        let status = waiting.join(", ");
        round += 1;
        if attempts > 0 && round > attempts {
            clear();
            bail!("gave up waiting for the new contents to run: {status}");
        }
        if progress_line {
            eprint!("\r\x1b[Kwaiting for the new contents to run: {status}");
        }
        index = ctx.client.watch(index, ROUND).await?;
    }
}

/// How many units a round reads at once.
const IN_FLIGHT: usize = 16;

/// Each unit and its states, in the order of `names`, [`IN_FLIGHT`] at a
/// time.
async fn read_all(ctx: &Ctx, names: &[UnitName]) -> anyhow::Result<Vec<(Unit, Vec<UnitState>)>> {
    use futures_util::stream::{self, StreamExt, TryStreamExt};
    stream::iter(names)
        .map(|name| async move {
            let unit = ctx.client.get_unit(name).await?;
            let filter = StateQuery {
                unit: Some(name.clone()),
                machine: None,
            };
            let states = ctx.client.all_states(&filter).await?;
            anyhow::Ok((unit, states))
        })
        .buffered(IN_FLIGHT)
        .try_collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_proto::wire::UnitOption;
    use flotilla_proto::{DesiredState, Health};

    fn machine(n: u8) -> MachineId {
        MachineId::parse(&format!("{:032x}", u128::from(n))).unwrap()
    }

    fn unit(global: bool, placed: Option<u8>) -> Unit {
        let options = if global {
            vec![UnitOption {
                section: "X-Fleet".into(),
                name: "Global".into(),
                value: "true".into(),
            }]
        } else {
            Vec::new()
        };
        Unit {
            name: "web.service".into(),
            options,
            text: String::new(),
            hash: "new".into(),
            desired_state: DesiredState::Launched,
            current_state: Some(DesiredState::Launched),
            machine_id: placed.map(machine),
            unscheduled_reason: None,
            revision: 1,
        }
    }

    fn state(m: u8, active: &str, hash: Option<&str>, started: Option<&str>) -> UnitState {
        UnitState {
            unit: UnitName::parse("web.service").unwrap(),
            machine: machine(m),
            load_state: "loaded".into(),
            active_state: active.into(),
            sub_state: "running".into(),
            hash: hash.map(str::to_owned),
            started_hash: started.map(str::to_owned),
            main_pid: None,
            n_restarts: 0,
            container_id: None,
            health: Health::None,
            since_ms: 0,
            last_error: (active == "failed").then(|| "the unit failed: exit status 3".to_owned()),
        }
    }

    fn waits(p: Progress) -> bool {
        matches!(p, Progress::Waiting(_))
    }

    #[test]
    fn a_placed_unit_runs_its_new_contents_once_started_with_them() {
        let u = unit(false, Some(1));
        // The new file is written, the old contents still run.
        let old = state(1, "active", Some("new"), Some("old"));
        assert!(waits(progress(&u, "new", &[old])));
        // Restarting.
        let restarting = state(1, "activating", Some("new"), Some("new"));
        assert!(waits(progress(&u, "new", &[restarting])));
        let runs = state(1, "active", Some("new"), Some("new"));
        assert_eq!(
            progress(&u, "new", std::slice::from_ref(&runs)),
            Progress::Running { unsaid: vec![] }
        );
        // A state of another machine (where it ran before) is not its.
        let elsewhere = state(2, "active", Some("new"), Some("new"));
        assert!(waits(progress(&u, "new", &[elsewhere])));
        assert!(waits(progress(&unit(false, None), "new", &[runs])));
    }

    #[test]
    fn a_failure_with_the_new_contents_ends_the_wait() {
        let u = unit(false, Some(1));
        let failed = state(1, "failed", Some("new"), Some("new"));
        assert_eq!(
            progress(&u, "new", &[failed]),
            Progress::Failed {
                machine: machine(1),
                reason: "the unit failed: exit status 3".into()
            }
        );
        // A failure of the old contents before the new start is no news.
        let failed_before = state(1, "failed", Some("new"), Some("old"));
        assert!(waits(progress(&u, "new", &[failed_before])));
        let mut refused = state(1, "failed", None, None);
        refused.load_state = "error".into();
        refused.last_error = Some("unit web.service already exists on this host".into());
        assert!(matches!(
            progress(&u, "new", &[refused]),
            Progress::Failed { reason, .. } if reason.contains("already exists")
        ));
        let mut looping = state(1, "activating", Some("new"), Some("new"));
        looping.sub_state = "auto-restart".into();
        assert!(matches!(
            progress(&u, "new", &[looping]),
            Progress::Failed { .. }
        ));
    }

    #[test]
    fn an_agent_that_does_not_say_is_taken_at_its_state() {
        let u = unit(false, Some(1));
        let active_new_file = state(1, "active", Some("new"), None);
        assert_eq!(
            progress(&u, "new", &[active_new_file]),
            Progress::Running {
                unsaid: vec![machine(1)]
            }
        );
        let old_file = state(1, "active", Some("old"), None);
        assert!(waits(progress(&u, "new", &[old_file])));
    }

    #[test]
    fn a_global_unit_waits_for_every_machine_that_reports_it() {
        let u = unit(true, None);
        assert!(waits(progress(&u, "new", &[])));
        let one = state(1, "active", Some("new"), Some("new"));
        let two_old = state(2, "active", Some("new"), Some("old"));
        assert!(waits(progress(&u, "new", &[one.clone(), two_old])));
        let two = state(2, "active", Some("new"), Some("new"));
        assert_eq!(
            progress(&u, "new", &[one, two]),
            Progress::Running { unsaid: vec![] }
        );
    }

    #[test]
    fn an_unreachable_machine_is_waited_for() {
        let u = unit(false, Some(1));
        let mut s = state(1, "unknown", Some("new"), Some("new"));
        s.last_error = Some("machine unreachable for 12s".into());
        assert!(waits(progress(&u, "new", &[s])));
    }
}
