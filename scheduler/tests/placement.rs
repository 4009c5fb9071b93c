#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test
//! Behaviour as data: every file in `tests/data/placement/` holds cases of
//! machines and units in, placements and reasons out.
//!
//! A file is a list of cases:
//!
//! ```text
//! === what the case shows
//! --- input
//! machine m1 cpu=4000 mem=8G region=eu
//! unit db.service cpu=1000 MachineMetadata=region=eu
//! plan
//! --- output
//! > plan
//! assign db.service to m1
//! ```
//!
//! The input is a script, one command a line (`#` starts a comment):
//!
//! - `machine ALIAS [cpu=MILLIS] [mem=SIZE] [id=HEX32] [KEY=VALUE...]` adds
//!   the machine, or updates it when the alias is known. Its hostname is the
//!   alias, so reasons name it so; without `id=`, its id is the alias's
//!   bytes in hex, padded with zeros (so ids sort as aliases do).
//! - `remove-machine ALIAS`.
//! - `unit NAME [state=inactive|loaded|launched] [cpu=MILLIS] [mem=SIZE]
//!   [Key=Value...]` puts a unit. The harness writes a unit file with
//!   `CPUQuota=`/`MemoryMax=` in `[Service]` and each `Key=Value` in
//!   `[X-Fleet]`, and reads it with `UnitSpec::check`, so options are parsed
//!   the real way (specifiers, validation). The default state is
//!   `launched`.
//! - `remove-unit NAME`.
//! - `assign NAME ALIAS` / `unassign NAME ALIAS`: an assignment seen in, or
//!   deleted from, the store.
//! - `strategy spread|binpack`.
//! - `plan`: prints the decisions, one a line (or `(nothing)`).
//! - `show`: prints each machine's units, then the units on no machine.
//!
//! After every `plan` the harness checks the view's indexes against a
//! recomputation and every placement against its constraints, and plans
//! again, which must decide nothing.
//!
//! The harness is the testbed's (`flotilla_testbed::data`): when the
//! expected output changes on purpose, run with `UPDATE_EXPECT=1` to rewrite
//! the files (the run still fails), read the diff, and run again.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use flotilla_proto::resources::parse_size;
use flotilla_proto::{Capacity, DesiredState, Machine, MachineId, UnitName, UnitSpec};
use flotilla_scheduler::placement::{Decision, PlacementView, Strategy, UnitInput};
use flotilla_testbed::data::{self, Case};

/// The state of one case's script.
struct Harness {
    title: String,
    view: PlacementView,
    /// Machine aliases to ids, and back.
    ids: BTreeMap<String, MachineId>,
    aliases: BTreeMap<MachineId, String>,
    /// Machines now in the view, by alias.
    live: BTreeSet<String>,
    /// Units now in the view.
    units: BTreeSet<UnitName>,
    out: String,
}

impl Harness {
    fn new(title: &str) -> Harness {
        Harness {
            title: title.to_owned(),
            view: PlacementView::new(Strategy::Spread),
            ids: BTreeMap::new(),
            aliases: BTreeMap::new(),
            live: BTreeSet::new(),
            units: BTreeSet::new(),
            out: String::new(),
        }
    }

    fn fail(&self, line: &str, why: &str) -> ! {
        panic!("case {:?}: {line:?}: {why}", self.title)
    }

    /// The id of a machine alias, made up from the alias when it has none.
    fn id(&mut self, alias: &str) -> MachineId {
        if let Some(id) = self.ids.get(alias) {
            return id.clone();
        }
        assert!(alias.len() <= 16, "alias {alias:?} is longer than 16 bytes");
        let mut hex: String = alias.bytes().map(|b| format!("{b:02x}")).collect();
        while hex.len() < 32 {
            hex.push('0');
        }
        let id = MachineId::parse(&hex).unwrap();
        self.name_machine(alias, &id);
        id
    }

    fn name_machine(&mut self, alias: &str, id: &MachineId) {
        self.ids.insert(alias.to_owned(), id.clone());
        self.aliases.insert(id.clone(), alias.to_owned());
    }

    fn alias(&self, id: &MachineId) -> String {
        self.aliases
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }

    fn run(&mut self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            ["strategy", name] => self.view.set_strategy(name.parse().unwrap()),
            ["machine", alias, ref rest @ ..] => self.machine(line, alias, rest),
            ["remove-machine", alias] => {
                let id = self.id(alias);
                assert!(self.view.remove_machine(&id), "{line}: no such machine");
                self.live.remove(alias);
            }
            ["unit", name, ref rest @ ..] => self.unit(line, name, rest),
            ["remove-unit", name] => {
                let name = UnitName::parse(name).unwrap();
                assert!(self.view.remove_unit(&name), "{line}: no such unit");
                self.units.remove(&name);
            }
            ["assign", name, alias] => {
                let id = self.id(alias);
                let name = UnitName::parse(name).unwrap();
                self.view.set_assignment(&name, &id).unwrap();
            }
            ["unassign", name, alias] => {
                let id = self.id(alias);
                let name = UnitName::parse(name).unwrap();
                let _ = self.view.clear_assignment(&name, &id);
            }
            ["plan"] => self.plan(),
            ["show"] => self.show(),
            _ => self.fail(line, "unknown command"),
        }
    }

    fn machine(&mut self, line: &str, alias: &str, words: &[&str]) {
        let mut capacity = Capacity::default();
        let mut metadata = BTreeMap::new();
        for word in words {
            let Some((key, value)) = word.split_once('=') else {
                self.fail(line, "expected key=value");
            };
            match key {
                "cpu" => capacity.cpu_millis = value.parse().unwrap(),
                "mem" => capacity.memory_bytes = parse_size(value).unwrap(),
                "id" => {
                    let id = MachineId::parse(value).unwrap();
                    self.name_machine(alias, &id);
                }
                _ => {
                    metadata.insert(key.to_owned(), value.to_owned());
                }
            }
        }
        let id = self.id(alias);
        self.view.put_machine(Machine {
            id,
            hostname: alias.to_owned(),
            addresses: Vec::new(),
            metadata,
            capacity,
            agent_version: "test".to_owned(),
        });
        self.live.insert(alias.to_owned());
    }

    fn unit(&mut self, line: &str, name: &str, words: &[&str]) {
        let mut desired = DesiredState::Launched;
        let mut service = String::from("[Service]\nExecStart=/bin/true\n");
        let mut fleet = String::from("[X-Fleet]\n");
        for word in words {
            let Some((key, value)) = word.split_once('=') else {
                self.fail(line, "expected key=value");
            };
            match key {
                "state" => desired = value.parse().unwrap(),
                "cpu" => {
                    let millis: u64 = value.parse().unwrap();
                    writeln!(service, "CPUQuota={}.{}%", millis / 10, millis % 10).unwrap();
                }
                "mem" => writeln!(service, "MemoryMax={value}").unwrap(),
                _ => writeln!(fleet, "{key}={value}").unwrap(),
            }
        }
        let text = format!("[Unit]\nDescription=test\n\n{service}\n{fleet}");
        match UnitSpec::check(name, name, &text) {
            Ok(checked) => {
                let spec = checked.spec;
                self.units.insert(spec.name.clone());
                self.view
                    .put_unit(spec.name.clone(), UnitInput::from_spec(&spec, desired));
            }
            Err(e) => {
                for d in &e.diagnostics {
                    writeln!(self.out, "rejected: {}", d.display_with(name)).unwrap();
                }
            }
        }
    }

    fn plan(&mut self) {
        let decisions = self.view.plan();
        self.out.push_str("> plan\n");
        if decisions.is_empty() {
            self.out.push_str("(nothing)\n");
        }
        for d in &decisions {
            let line = match d {
                Decision::Assign { unit, machine } => {
                    format!("assign {unit} to {}", self.alias(machine))
                }
                Decision::Unassign {
                    unit,
                    machine,
                    reason,
                } => format!("unassign {unit} from {}: {reason}", self.alias(machine)),
                Decision::Unschedulable { unit, reason } => {
                    format!("unschedulable {unit}: {reason}")
                }
            };
            writeln!(self.out, "{line}").unwrap();
        }
        if let Err(e) = self.view.check_consistency() {
            panic!("case {:?}: after a plan: {e}", self.title);
        }
        let again = self.view.plan();
        assert!(
            again.is_empty(),
            "case {:?}: a second plan decided {again:?}",
            self.title
        );
        assert!(
            !self.view.has_pending_work(),
            "case {:?}: work left",
            self.title
        );
    }

    fn show(&mut self) {
        self.out.push_str("> show\n");
        let mut placed = BTreeSet::new();
        for alias in &self.live {
            let units = self.view.units_on(&self.ids[alias]);
            placed.extend(units.iter().map(|u| (*u).clone()));
            let list: Vec<&str> = units.iter().map(|u| u.as_str()).collect();
            let list = if list.is_empty() {
                "-".to_owned()
            } else {
                list.join(" ")
            };
            writeln!(self.out, "{alias}: {list}").unwrap();
        }
        let unplaced: Vec<&str> = self
            .units
            .iter()
            .filter(|u| !placed.contains(*u))
            .map(UnitName::as_str)
            .collect();
        if !unplaced.is_empty() {
            writeln!(self.out, "on no machine: {}", unplaced.join(" ")).unwrap();
        }
    }
}

fn run_case(case: &Case) -> String {
    let mut h = Harness::new(&case.title);
    for line in case.input.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        h.run(line);
    }
    h.out
}

fn run_file(file: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/placement")
        .join(file);
    data::check_file(&path, &[], run_case);
}

macro_rules! data_files {
    ($($test:ident => $file:literal),* $(,)?) => {
        $(#[test] fn $test() { run_file($file); })*

        /// Every file in the directory has its test.
        #[test]
        fn every_file_is_listed() {
            let listed = [$($file),*];
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/placement");
            for entry in std::fs::read_dir(dir).unwrap() {
                let name = entry.unwrap().file_name().into_string().unwrap();
                assert!(listed.contains(&name.as_str()), "{name} has no test in placement.rs");
            }
        }
    };
}

data_files! {
    machine_of => "machine_of.txt",
    conflicts => "conflicts.txt",
    machine_id => "machine_id.txt",
    metadata => "metadata.txt",
    replaces => "replaces.txt",
    resources => "resources.txt",
    strategy => "strategy.txt",
    stability => "stability.txt",
    global => "global.txt",
}
