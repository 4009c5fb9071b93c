//! `flotilla apply DIR` and `flotilla diff DIR`: the cluster's units as a
//! directory of unit files kept in git.
//!
//! What DIR asks for is read by [`flotilla_proto::bundle`] (the server's
//! git sources read a commit the same way): every unit file in DIR
//! (recursively, skipping hidden entries) is a unit, and so is every
//! Podman Quadlet `NAME.container` file, as the unit `NAME.service` with
//! its Quadlet drop-ins merged in. Quadlet's other files (`.pod`, ...) are
//! reported and skipped. An optional `flotilla.yaml` in DIR sets desired
//! states and template instances:
//!
//! ```yaml
//! default-state: launched      # for units not listed under states
//! states:
//!   db.service: loaded
//! instances:
//!   worker@.service: [1, 2, 3]  # worker@1.service ... from worker@.service
//! rollouts:                     # units whose new contents roll out in waves
//!   backend:
//!     units: [worker@.service, api.service]   # a template: its instances
//!     max-parallel: 2
//!     min-healthy-time: 30s
//!     auto-revert: true
//! ```
//!
//! Launched units whose contents change are restarted in waves
//! ([`crate::rollout`]) when they are in one group of `rollouts`, or are
//! two or more instances of one template; `apply` waits for each rollout
//! and fails with the first failure.
//!
//! Templates themselves are submitted (inactive); their instances are units
//! with the template's contents. `apply` creates missing units, replaces
//! those whose contents differ, sets desired states, and with `--prune`
//! destroys units that DIR does not name. Everything is checked before
//! anything is sent, so a bad file changes nothing. Applying twice changes
//! nothing the second time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use flotilla_proto::bundle::{self, BundleFile, Wanted};
use flotilla_proto::rollout_groups::{self, Groups};
use flotilla_proto::wire::{Unit, UnitPut};
use flotilla_proto::{DesiredState, UnitName};
use serde::Serialize;

use crate::Output;
use crate::client::{Ctx, print_json};
use crate::live::wait_running;
use crate::units::wait_for;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The directory of unit files.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Also destroy units in the cluster that DIR does not name.
    #[arg(long)]
    prune: bool,
    /// Return at once instead of waiting for changed units to reach their
    /// desired states (and launched units with new contents to run them).
    #[arg(long)]
    no_block: bool,
    /// Give up waiting after this many rounds of changes (0: no limit).
    #[arg(long, default_value_t = 0, value_name = "N")]
    block_attempts: u32,
}

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The directory of unit files.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Also show units in the cluster that DIR does not name, which
    /// `apply --prune` destroys.
    #[arg(long)]
    prune: bool,
    /// Exit 1 when there are changes and 0 when there are none (errors
    /// then exit 2), as `diff --exit-code` does.
    #[arg(long)]
    exit_code: bool,
}

impl DiffArgs {
    /// Whether the exit status tells changes from none (errors are 2).
    pub fn exit_code(&self) -> bool {
        self.exit_code
    }
}

/// One difference between DIR and the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "lowercase")]
enum Change {
    /// The unit is not in the cluster.
    Create { unit: String, desired: DesiredState },
    /// The unit's contents differ.
    Replace { unit: String, desired: DesiredState },
    /// Only the desired state differs.
    State {
        unit: String,
        from: DesiredState,
        to: DesiredState,
    },
    /// The unit is in the cluster and not in DIR.
    Remove { unit: String },
}

impl Change {
    fn unit(&self) -> &str {
        match self {
            Change::Create { unit, .. }
            | Change::Replace { unit, .. }
            | Change::State { unit, .. }
            | Change::Remove { unit } => unit,
        }
    }

    fn line(&self) -> String {
        match self {
            Change::Create { unit, desired } => format!("+ {unit} ({desired})"),
            Change::Replace { unit, desired } => format!("~ {unit}: contents changed ({desired})"),
            Change::State { unit, from, to } => format!("~ {unit}: {from} -> {to}"),
            Change::Remove { unit } => format!("- {unit}"),
        }
    }
}

/// Reads and checks DIR: every unit it asks for, by name
/// ([`flotilla_proto::bundle`]); warnings go to standard error.
fn read_dir(dir: &Path) -> anyhow::Result<BTreeMap<UnitName, Wanted>> {
    read_dir_with_groups(dir).map(|(wanted, _)| wanted)
}

/// [`read_dir`], with the manifest's rollout groups.
fn read_dir_with_groups(dir: &Path) -> anyhow::Result<(BTreeMap<UnitName, Wanted>, Groups)> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let mut files = Vec::new();
    collect(dir, "", &mut files)?;
    let root = dir.display().to_string();
    let found = match bundle::read(&root, &files) {
        Ok(found) => found,
        Err(e) => bail!("{e}\nnothing was changed"),
    };
    for w in &found.warnings {
        eprintln!("{w}");
    }
    let manifest_path = dir.join(bundle::MANIFEST);
    let names: Vec<UnitName> = found.units.keys().cloned().collect();
    let groups = rollout_groups::manifest_groups(
        &manifest_path.display().to_string(),
        &found.rollouts,
        &names,
    )
    .map_err(|e| anyhow::anyhow!("{e}\nnothing was changed"))?;
    Ok((found.units, groups))
}

/// Every file under `dir` that [`bundle::read`] looks at, by its path
/// relative to the top (`rel`).
fn collect(dir: &Path, rel: &str, out: &mut Vec<BundleFile>) -> anyhow::Result<()> {
    let mut entries: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            (path, e.path())
        })
        .filter(|(path, _)| !crate::unit_source::is_hidden(path))
        .collect();
    entries.sort();
    for (path, full) in entries {
        if full.is_dir() {
            collect(&full, &path, out)?;
        } else if bundle::reads(&path) {
            let bytes =
                std::fs::read(&full).with_context(|| format!("cannot read {}", full.display()))?;
            out.push(BundleFile { path, bytes });
        }
    }
    Ok(())
}

fn changes(wanted: &BTreeMap<UnitName, Wanted>, cluster: &[Unit], prune: bool) -> Vec<Change> {
    let have: BTreeMap<&str, &Unit> = cluster.iter().map(|u| (u.name.as_str(), u)).collect();
    let mut out = Vec::new();
    for (name, w) in wanted {
        let unit = name.to_string();
        match have.get(name.as_str()) {
            None => out.push(Change::Create {
                unit,
                desired: w.desired,
            }),
            Some(u) if u.hash != w.hash => out.push(Change::Replace {
                unit,
                desired: w.desired,
            }),
            Some(u) if u.desired_state != w.desired => out.push(Change::State {
                unit,
                from: u.desired_state,
                to: w.desired,
            }),
            Some(_) => {}
        }
    }
    if prune {
        for u in cluster {
            let named = UnitName::parse(&u.name)
                .ok()
                .is_some_and(|n| wanted.contains_key(&n));
            if !named {
                out.push(Change::Remove {
                    unit: u.name.clone(),
                });
            }
        }
    }
    out
}

fn print_changes(ctx: &Ctx, changes: &[Change]) -> anyhow::Result<()> {
    match ctx.output {
        Output::Json => print_json(&changes),
        Output::Text => {
            for c in changes {
                println!("{}", c.line());
            }
            if changes.is_empty() {
                println!("no changes");
            }
            Ok(())
        }
    }
}

pub async fn diff(ctx: Ctx, args: DiffArgs) -> anyhow::Result<ExitCode> {
    let wanted = read_dir(&args.dir)?;
    let cluster = ctx.client.all_units().await?;
    let changes = changes(&wanted, &cluster, args.prune);
    print_changes(&ctx, &changes)?;
    if args.exit_code && !changes.is_empty() {
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn apply(ctx: Ctx, args: Args) -> anyhow::Result<ExitCode> {
    let (wanted, groups) = read_dir_with_groups(&args.dir)?;
    let cluster = ctx.client.all_units().await?;
    let changes = changes(&wanted, &cluster, args.prune);
    // Launched units that stay launched and get new contents: in waves,
    // when they change together.
    let launched: BTreeMap<&str, bool> = cluster
        .iter()
        .map(|u| (u.name.as_str(), u.desired_state == DesiredState::Launched))
        .collect();
    let mut replaced_launched = Vec::new();
    for change in &changes {
        if let Change::Replace { unit, desired } = change
            && *desired == DesiredState::Launched
            && launched.get(unit.as_str()) == Some(&true)
        {
            let name = UnitName::parse(unit)?;
            let text = wanted[&name].text.clone();
            replaced_launched.push((name, text));
        }
    }
    let (rollouts, _) = rollout_groups::group(replaced_launched, &|u| groups.get(u).cloned());
    let rolled: Vec<String> = rollouts
        .iter()
        .flat_map(|r| r.units.iter().map(|u| u.name.to_string()))
        .collect();
    for change in &changes {
        if rolled.iter().any(|r| r == change.unit()) {
            continue;
        }
        let name = UnitName::parse(change.unit())?;
        match change {
            Change::Create { .. } | Change::Replace { .. } => {
                let w = &wanted[&name];
                let put = UnitPut {
                    desired_state: Some(w.desired),
                    text: Some(w.text.clone()),
                    replace: matches!(change, Change::Replace { .. }),
                    ..UnitPut::default()
                };
                ctx.client.put_unit(&name, &put).await?;
            }
            Change::State { to, .. } => {
                let put = UnitPut {
                    desired_state: Some(*to),
                    ..UnitPut::default()
                };
                ctx.client.put_unit(&name, &put).await?;
            }
            Change::Remove { .. } => ctx.client.delete_unit(&name).await?,
        }
    }
    print_changes(&ctx, &changes)?;
    crate::rollout::run_all(&ctx, rollouts, args.no_block, args.block_attempts).await?;
    if !args.no_block {
        // Launched units with new contents wait for them to run (which a
        // failure ends); the other changed units for their desired
        // states, state by state.
        let mut new_contents = Vec::new();
        let mut by_state: BTreeMap<DesiredState, Vec<UnitName>> = BTreeMap::new();
        for change in &changes {
            let name = UnitName::parse(change.unit())?;
            if name.is_template() || rolled.iter().any(|r| r == change.unit()) {
                continue;
            }
            let Some(w) = wanted.get(&name) else {
                continue;
            };
            let contents = matches!(change, Change::Create { .. } | Change::Replace { .. });
            if contents && w.desired == DesiredState::Launched {
                new_contents.push(name);
            } else {
                by_state.entry(w.desired).or_default().push(name);
            }
        }
        wait_running(&ctx, &new_contents, args.block_attempts).await?;
        for (state, names) in by_state {
            wait_for(&ctx, &names, state, args.block_attempts).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
