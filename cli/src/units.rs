//! fleetctl's verbs: submit, load, start, stop, unload, destroy, restart,
//! cat. A unit is named by a local unit file (used to create the unit when
//! the cluster lacks it) or by its name.
//!
//! State changes block until the cluster reaches the state, as fleetctl's
//! do, by waiting on the server's watch (`GET /v1/watch`), not by sleeping.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use flotilla_api::client::ClientError;
use flotilla_proto::wire::{Unit, UnitPut};
use flotilla_proto::{DesiredState, UnitName, UnitSpec};

use crate::Output;
use crate::client::{Ctx, print_json};
use crate::live::wait_running;
use crate::unit_source;

#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// Unit files to submit.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Replace the contents of units that exist with different contents.
    /// A replaced unit that is launched is restarted with them; the
    /// command waits until it runs them.
    #[arg(long)]
    replace: bool,
    /// Return at once instead of waiting for replaced launched units to
    /// run their new contents.
    #[arg(long)]
    no_block: bool,
    /// Give up waiting after this many rounds of changes (0: wait as long
    /// as it takes).
    #[arg(long, default_value_t = 0, value_name = "N")]
    block_attempts: u32,
}

#[derive(Debug, clap::Args)]
pub struct StateArgs {
    /// Unit files or unit names. A file (or, for an instance such as
    /// web@1.service, a local template web@.service) creates the unit when
    /// the cluster does not have it.
    #[arg(required = true, value_name = "UNIT")]
    units: Vec<String>,
    /// Replace the contents of units that exist with different contents
    /// with those of the local files.
    #[arg(long)]
    replace: bool,
    /// Return at once instead of waiting for the units to reach the state
    /// (and, for `start`, for units with new contents to run them).
    #[arg(long)]
    no_block: bool,
    /// Give up waiting after this many rounds of changes (0: wait as long
    /// as it takes).
    #[arg(long, default_value_t = 0, value_name = "N")]
    block_attempts: u32,
}

#[derive(Debug, clap::Args)]
pub struct NamesArgs {
    /// Unit names.
    #[arg(required = true, value_name = "UNIT")]
    units: Vec<String>,
}

/// A state-changing verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Load,
    Start,
    Stop,
    Unload,
}

impl Verb {
    fn desired(self) -> DesiredState {
        match self {
            Verb::Load | Verb::Stop => DesiredState::Loaded,
            Verb::Start => DesiredState::Launched,
            Verb::Unload => DesiredState::Inactive,
        }
    }
}

/// A unit named on the command line, with the local text that can create it.
struct Target {
    name: UnitName,
    local: Option<String>,
}

/// A unit file's name and text (a Quadlet `.container` with its drop-ins
/// merged), checked locally first so that errors name the file and line
/// before anything is sent.
fn read_local(path: &Path) -> anyhow::Result<(UnitName, String)> {
    let local = unit_source::read(path)?;
    let (_, diagnostics) = local.check()?;
    for w in &diagnostics {
        eprintln!("{w}");
    }
    let text = local.text().to_owned();
    Ok((local.name, text))
}

fn file_name(path: &Path) -> anyhow::Result<UnitName> {
    unit_source::unit_name_of_path(path)
}

fn resolve(arg: &str) -> anyhow::Result<Target> {
    let path = Path::new(arg);
    let name = file_name(path)?;
    if path.is_file() {
        let (name, text) = read_local(path)?;
        return Ok(Target {
            name,
            local: Some(text),
        });
    }
    // An instance may be made from a local template beside where its file
    // would be: a unit file, or a Quadlet `.container`.
    if let Some(template) = name.template() {
        let candidates = [
            path.with_file_name(template.as_str()),
            path.with_file_name(format!("{}.container", template.stem())),
        ];
        if let Some(template_path) = candidates.iter().find(|p| p.is_file()) {
            let (_, text) = read_local(template_path)?;
            // Check the text as the instance too (specifiers expand).
            UnitSpec::check_named(&template_path.display().to_string(), &name, &text)?;
            return Ok(Target {
                name,
                local: Some(text),
            });
        }
    }
    Ok(Target { name, local: None })
}

pub async fn submit(ctx: Ctx, args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let mut targets = Vec::new();
    for file in &args.files {
        let (name, text) = read_local(file)?;
        targets.push(Target {
            name,
            local: Some(text),
        });
    }
    let targets = if args.replace {
        roll_out_instances(&ctx, targets, args.no_block, args.block_attempts).await?
    } else {
        targets
    };
    let changed = ensure_all(&ctx, &targets, DesiredState::Inactive, args.replace, true).await?;
    if !args.no_block {
        let launched = launched(&changed);
        wait_running(&ctx, &launched, args.block_attempts).await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// With `--replace`: the launched instances of one template whose local
/// contents differ from the cluster's, two or more, are given them as one
/// rollout ([`crate::rollout`]), waited for unless `no_block`; returns
/// the targets left to ensure one by one.
async fn roll_out_instances(
    ctx: &Ctx,
    targets: Vec<Target>,
    no_block: bool,
    attempts: u32,
) -> anyhow::Result<Vec<Target>> {
    let mut changed = Vec::new();
    for t in &targets {
        let Some(text) = &t.local else { continue };
        if !t.name.is_instance() {
            continue;
        }
        let unit = match ctx.client.get_unit(&t.name).await {
            Ok(u) => u,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        let (file, _) = flotilla_proto::UnitFile::parse(text);
        if unit.desired_state == DesiredState::Launched && file.content_hash() != unit.hash {
            changed.push((t.name.clone(), text.clone()));
        }
    }
    let (requests, _) = flotilla_proto::rollout_groups::group(changed, &|_| None);
    let rolled: Vec<UnitName> = requests
        .iter()
        .flat_map(|r| r.units.iter().map(|u| u.name.clone()))
        .collect();
    crate::rollout::run_all(ctx, requests, no_block, attempts).await?;
    Ok(targets
        .into_iter()
        .filter(|t| !rolled.contains(&t.name))
        .collect())
}

/// The units given new contents whose desired state is `launched`: those
/// whose machines restart them with the new contents.
fn launched(changed: &[(UnitName, DesiredState)]) -> Vec<UnitName> {
    changed
        .iter()
        .filter(|(_, state)| *state == DesiredState::Launched)
        .map(|(name, _)| name.clone())
        .collect()
}

/// How many units one command creates or changes at a time. Each unit is a
/// read and a write (two round trips): one at a time, 300 units took a
/// second on a loopback connection; the server handles the requests in
/// parallel and its store commits them together.
const IN_FLIGHT: usize = 16;

/// [`ensure`] for every target, [`IN_FLIGHT`] at a time. Fails with the
/// error of the first target (in the order given) that failed, once every
/// request sent has been answered: the targets before it and any others
/// that succeeded are in place, as they would be one at a time. Returns
/// the units given new contents (created or replaced), in the order
/// given, with the desired state each has after.
async fn ensure_all(
    ctx: &Ctx,
    targets: &[Target],
    desired: DesiredState,
    replace: bool,
    keep_state: bool,
) -> anyhow::Result<Vec<(UnitName, DesiredState)>> {
    use futures_util::stream::{self, StreamExt};
    type Outcome = anyhow::Result<Option<DesiredState>>;
    let mut results: Vec<(usize, Outcome)> = stream::iter(targets.iter().enumerate())
        .map(|(i, t)| async move { (i, ensure(ctx, t, desired, replace, keep_state).await) })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    results.sort_by_key(|(i, _)| *i);
    let mut changed = Vec::new();
    for (i, result) in results {
        if let Some(state) = result? {
            changed.push((targets[i].name.clone(), state));
        }
    }
    Ok(changed)
}

/// Creates the unit from its local text when the cluster lacks it, replaces
/// its contents when asked, and sets its desired state (unless `keep_state`
/// and the unit exists: `submit` does not unload a running unit). When it
/// gave the unit contents, the desired state the unit has after.
async fn ensure(
    ctx: &Ctx,
    target: &Target,
    desired: DesiredState,
    replace: bool,
    keep_state: bool,
) -> anyhow::Result<Option<DesiredState>> {
    let existing = match ctx.client.get_unit(&target.name).await {
        Ok(u) => Some(u),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e.into()),
    };
    let mut put = UnitPut {
        desired_state: Some(desired),
        ..UnitPut::default()
    };
    match (&existing, &target.local) {
        (None, Some(text)) => put.text = Some(text.clone()),
        (Some(unit), Some(text)) => {
            let (file, _) = flotilla_proto::UnitFile::parse(text);
            if file.content_hash() != unit.hash {
                if replace {
                    put.text = Some(text.clone());
                    put.replace = true;
                } else {
                    eprintln!(
                        "flotilla: {} in the cluster differs from the local file; using the cluster's (--replace to change it)",
                        target.name
                    );
                }
            }
            if keep_state {
                put.desired_state = None;
            }
        }
        (Some(_), None) | (None, None) => {}
    }
    if put.desired_state.is_none() && put.text.is_none() {
        return Ok(None);
    }
    ctx.client
        .put_unit(&target.name, &put)
        .await
        .map_err(|e| explain(e, &target.name))?;
    let state_after = put
        .desired_state
        .or(existing.map(|u| u.desired_state))
        .unwrap_or(desired);
    Ok(put.text.is_some().then_some(state_after))
}

/// Adds a hint to errors a user can act on.
fn explain(e: ClientError, name: &UnitName) -> anyhow::Error {
    if e.is_not_found() {
        let hint = match name.template() {
            Some(t) => format!("; submit its template {t} first, or run this where a file {t} is"),
            None => format!("; submit it first, or run this where a file {name} is"),
        };
        return anyhow::anyhow!("{e}{hint}");
    }
    e.into()
}

pub async fn set_state(ctx: Ctx, args: StateArgs, verb: Verb) -> anyhow::Result<ExitCode> {
    let targets = args
        .units
        .iter()
        .map(|u| resolve(u))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let desired = verb.desired();
    let names: Vec<UnitName> = targets.iter().map(|t| t.name.clone()).collect();
    let targets = if args.replace && desired == DesiredState::Launched {
        roll_out_instances(&ctx, targets, args.no_block, args.block_attempts).await?
    } else {
        targets
    };
    let changed = ensure_all(&ctx, &targets, desired, args.replace, false).await?;
    if args.no_block {
        return Ok(ExitCode::SUCCESS);
    }
    // Units given new contents wait for them to run (which a failure
    // ends); the others for the state.
    let launched = launched(&changed);
    let others: Vec<UnitName> = names
        .iter()
        .filter(|n| !launched.contains(n))
        .cloned()
        .collect();
    wait_running(&ctx, &launched, args.block_attempts).await?;
    wait_for(&ctx, &others, desired, args.block_attempts).await?;
    let mut units = Vec::with_capacity(names.len());
    for name in &names {
        units.push(ctx.client.get_unit(name).await?);
    }
    report(&ctx, &units, desired)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn restart(ctx: Ctx, args: StateArgs) -> anyhow::Result<ExitCode> {
    let names = args
        .units
        .iter()
        .map(|u| resolve(u).map(|t| t.name))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for name in &names {
        ctx.client
            .put_unit(name, &desired_only(DesiredState::Loaded))
            .await
            .map_err(|e| explain(e, name))?;
    }
    wait_for(&ctx, &names, DesiredState::Loaded, args.block_attempts).await?;
    for name in &names {
        ctx.client
            .put_unit(name, &desired_only(DesiredState::Launched))
            .await?;
    }
    if args.no_block {
        return Ok(ExitCode::SUCCESS);
    }
    let units = wait_for(&ctx, &names, DesiredState::Launched, args.block_attempts).await?;
    report(&ctx, &units, DesiredState::Launched)?;
    Ok(ExitCode::SUCCESS)
}

fn desired_only(d: DesiredState) -> UnitPut {
    UnitPut {
        desired_state: Some(d),
        ..UnitPut::default()
    }
}

pub async fn destroy(ctx: Ctx, args: NamesArgs) -> anyhow::Result<ExitCode> {
    for u in &args.units {
        let name = file_name(Path::new(u))?;
        ctx.client.delete_unit(&name).await?;
        if ctx.output == Output::Text {
            println!("Destroyed {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn cat(ctx: Ctx, args: NamesArgs) -> anyhow::Result<ExitCode> {
    let mut units = Vec::new();
    for u in &args.units {
        let name = file_name(Path::new(u))?;
        units.push(ctx.client.get_unit(&name).await?);
    }
    match ctx.output {
        Output::Json => print_json(&units)?,
        Output::Text => {
            for (i, u) in units.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print!("{}", u.text);
                if !u.text.ends_with('\n') {
                    println!();
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How long one round of waiting lasts at most.
const ROUND: Duration = Duration::from_secs(5);

/// Waits until every unit's current state is `target`, following the
/// server's watch. Returns the units as they are then.
pub async fn wait_for(
    ctx: &Ctx,
    names: &[UnitName],
    target: DesiredState,
    attempts: u32,
) -> anyhow::Result<Vec<Unit>> {
    let progress = std::io::stderr().is_terminal();
    // The store's revision before the first read: a round waits for a
    // change after what it read, so that "one round" is one real change,
    // however fast the command runs.
    let mut index = ctx.client.watch(0, Duration::ZERO).await?;
    let mut round = 0u32;
    loop {
        let mut done = Vec::new();
        let mut pending = Vec::new();
        for name in names {
            let unit = ctx.client.get_unit(name).await?;
            if unit.current_state == Some(target) {
                done.push(unit);
            } else {
                pending.push(unit);
            }
        }
        if pending.is_empty() {
            if progress {
                eprint!("\r\x1b[K");
            }
            return Ok(done);
        }
        let status = pending
            .iter()
            .map(describe_pending)
            .collect::<Vec<_>>()
            .join(", ");
        round += 1;
        if attempts > 0 && round > attempts {
            if progress {
                eprint!("\r\x1b[K");
            }
            bail!("gave up waiting for {target}: {status}");
        }
        if progress {
            eprint!("\r\x1b[Kwaiting for {target}: {status}");
        }
        index = ctx.client.watch(index, ROUND).await?;
    }
}

fn describe_pending(u: &Unit) -> String {
    let now = u
        .current_state
        .map(|s| s.to_string())
        .unwrap_or_else(|| "-".into());
    match &u.unscheduled_reason {
        Some(reason) => format!("{} is {now} ({reason})", u.name),
        None => format!("{} is {now}", u.name),
    }
}

fn report(ctx: &Ctx, units: &[Unit], state: DesiredState) -> anyhow::Result<()> {
    match ctx.output {
        Output::Json => print_json(&units),
        Output::Text => {
            for u in units {
                match &u.machine_id {
                    Some(m) => println!("Unit {} {state} on {}", u.name, &m.as_str()[..8]),
                    None => println!("Unit {} {state}", u.name),
                }
            }
            Ok(())
        }
    }
}
