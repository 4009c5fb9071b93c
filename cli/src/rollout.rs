//! Rolling updates from the command line: `flotilla rollout status`, and
//! how `apply`, `start --replace` and `submit --replace` send the new
//! contents of units that change together as one rollout and wait for it.
//!
//! Units change together when they are launched instances of one
//! template whose new contents arrive in one command (two or more), or
//! when `flotilla.yaml`'s `rollouts:` names them in one group
//! ([`flotilla_proto::rollout_groups`], the rule git sources use too).
//! Other units are written one by one, as before. See docs/rollouts.md.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use flotilla_proto::rollout::{Rollout, RolloutRequest, RolloutState};

use crate::Output;
use crate::client::{Ctx, print_json};
use crate::table::print;

#[derive(Debug, clap::Subcommand)]
pub enum RolloutCommand {
    /// Show rollouts: with NAME (a rollout's id, or a group: its latest
    /// rollout), its waves, its units and why it failed; without, every
    /// rollout the cluster keeps.
    Status {
        #[arg(value_name = "NAME")]
        name: Option<String>,
    },
}

pub async fn run(ctx: Ctx, command: RolloutCommand) -> anyhow::Result<ExitCode> {
    match command {
        RolloutCommand::Status { name: None } => {
            let list = ctx.client.list_rollouts().await?;
            if ctx.output == Output::Json {
                print_json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list.rollouts.iter().map(row).collect();
                print(
                    &["ID", "GROUP", "STATE", "WAVES", "ON NEW", "FAILURE"],
                    &rows,
                );
            }
        }
        RolloutCommand::Status { name: Some(name) } => {
            let rollout = ctx.client.get_rollout(&name).await?;
            if ctx.output == Output::Json {
                print_json(&rollout)?;
            } else {
                print!("{}", describe(&rollout));
                let rows: Vec<Vec<String>> = rollout
                    .units
                    .iter()
                    .map(|u| {
                        vec![
                            u.name.to_string(),
                            (u.wave + 1).to_string(),
                            if u.on_new { "new" } else { "old" }.to_owned(),
                        ]
                    })
                    .collect();
                println!();
                print(&["UNIT", "WAVE", "RUNS"], &rows);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn row(r: &Rollout) -> Vec<String> {
    vec![
        r.id.clone(),
        r.group.clone(),
        state_word(r),
        format!("{}/{}", r.waves_done, r.waves),
        format!("{}/{}", r.units_on_new, r.units.len()),
        r.failure.clone().unwrap_or_else(|| "-".into()),
    ]
}

fn state_word(r: &Rollout) -> String {
    if r.reverted {
        format!("{} (reverted)", r.state)
    } else {
        r.state.to_string()
    }
}

/// A rollout in a few lines, for `rollout status NAME`.
fn describe(r: &Rollout) -> String {
    let mut out = format!(
        "Rollout:  {}\nGroup:    {}\nState:    {}\nWaves:    {} of {} done",
        r.id,
        r.group,
        state_word(r),
        r.waves_done,
        r.waves
    );
    if let Some(w) = r.current_wave {
        out.push_str(&format!(", wave {} rolling out", w + 1));
    }
    out.push_str(&format!(
        "\nOn new:   {} of {} units\nSettings: max-parallel {}, min-healthy-time {} ms, wave timeout {} ms, auto-revert {}\nStarted:  {}\n",
        r.units_on_new,
        r.units.len(),
        r.settings.max_parallel,
        r.settings.min_healthy_time_ms,
        r.settings.wave_timeout_ms,
        if r.settings.auto_revert { "yes" } else { "no" },
        crate::trust::timestamp(r.created_ms),
    ));
    if let Some(f) = &r.failure {
        out.push_str(&format!("Failure:  {f}\n"));
    }
    out
}

/// How long one round of waiting lasts at most: the server's watch does
/// not wake on a rollout's own record, so a round ends at least this often.
const ROUND: Duration = Duration::from_secs(1);

/// Starts each rollout and, unless `no_block`, waits until each one ended;
/// fails with the first failure.
pub async fn run_all(
    ctx: &Ctx,
    requests: Vec<RolloutRequest>,
    no_block: bool,
    attempts: u32,
) -> anyhow::Result<()> {
    let mut started = Vec::new();
    for request in requests {
        let rollout = ctx.client.start_rollout(&request).await?;
        if ctx.output == Output::Text {
            eprintln!(
                "flotilla: rolling out {} units of {} in {} waves of at most {} (rollout {})",
                rollout.units.len(),
                rollout.group,
                rollout.waves,
                rollout.settings.max_parallel,
                rollout.id
            );
        }
        started.push(rollout.id);
    }
    if no_block {
        return Ok(());
    }
    for id in started {
        wait(ctx, &id, attempts).await?;
    }
    Ok(())
}

/// Waits until rollout `id` ended; fails when it failed, or after
/// `attempts` rounds (0: no limit).
pub async fn wait(ctx: &Ctx, id: &str, attempts: u32) -> anyhow::Result<Rollout> {
    let progress = std::io::stderr().is_terminal();
    let mut index = ctx.client.watch(0, Duration::ZERO).await?;
    let mut round = 0u32;
    loop {
        let r = ctx.client.get_rollout(id).await?;
        match r.state {
            RolloutState::Succeeded => {
                if progress {
                    eprint!("\r\x1b[K");
                }
                return Ok(r);
            }
            RolloutState::Failed => {
                if progress {
                    eprint!("\r\x1b[K");
                }
                let after = if r.reverted {
                    "the units it changed got their old contents back"
                } else {
                    "the units of later waves keep their old contents"
                };
                bail!(
                    "rollout {} failed in wave {} of {}: {}; {after} (flotilla rollout status {})",
                    r.id,
                    r.waves_done + 1,
                    r.waves,
                    r.failure.as_deref().unwrap_or("no reason recorded"),
                    r.id
                );
            }
            RolloutState::Running => {}
        }
        round += 1;
        if attempts > 0 && round > attempts {
            bail!(
                "gave up waiting for rollout {}: wave {} of {}",
                r.id,
                r.waves_done + 1,
                r.waves
            );
        }
        if progress {
            eprint!(
                "\r\x1b[Krollout {}: wave {} of {}, {} of {} units on the new contents",
                r.id,
                r.waves_done + 1,
                r.waves,
                r.units_on_new,
                r.units.len()
            );
        }
        index = ctx.client.watch(index, ROUND).await?;
    }
}
