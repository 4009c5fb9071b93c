//! Rolling updates from the command line: `flotilla rollout status`, and
//! how `apply`, `start --replace` and `submit --replace` send the new
//! contents of units that change together as one rollout and wait for it.
//!
//! Units change together when they are launched instances of one
//! template whose new contents arrive in one command (two or more), or
//! when `flotilla.yaml`'s `rollouts:` names them in one group. Other
//! units are written one by one, as before. See docs/rollouts.md.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use flotilla_proto::UnitName;
use flotilla_proto::rollout::{
    Rollout, RolloutOptions, RolloutRequest, RolloutState, RolloutUnitPut,
};

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

/// The launched units with new contents of one command, grouped: by
/// `groups` (a unit's named group, from `flotilla.yaml`), else by their
/// template when two or more instances of it change. Returns the
/// requests and the units left to write one by one.
pub fn group(
    changed: Vec<(UnitName, String)>,
    groups: &dyn Fn(&UnitName) -> Option<(String, RolloutOptions)>,
) -> (Vec<RolloutRequest>, Vec<UnitName>) {
    let mut by_group: BTreeMap<String, (RolloutOptions, Vec<RolloutUnitPut>)> = BTreeMap::new();
    let mut named = Vec::new();
    for (name, text) in changed {
        let (key, options) = match groups(&name) {
            Some((g, options)) => {
                named.push(g.clone());
                (g, options)
            }
            None => match name.template() {
                Some(t) => (t.to_string(), RolloutOptions::default()),
                None => (name.to_string(), RolloutOptions::default()),
            },
        };
        let entry = by_group.entry(key).or_insert((options, Vec::new()));
        entry.1.push(RolloutUnitPut { name, text });
    }
    let mut requests = Vec::new();
    let mut alone = Vec::new();
    for (group, (settings, units)) in by_group {
        if units.len() >= 2 || named.contains(&group) {
            requests.push(RolloutRequest {
                group,
                units,
                settings,
            });
        } else {
            alone.extend(units.into_iter().map(|u| u.name));
        }
    }
    (requests, alone)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> UnitName {
        UnitName::parse(s).unwrap()
    }

    #[test]
    fn instances_of_one_template_change_together_from_two() {
        let changed = vec![
            (n("w@1.service"), "a".into()),
            (n("w@2.service"), "a".into()),
            (n("v@1.service"), "b".into()),
            (n("db.service"), "c".into()),
        ];
        let (requests, alone) = group(changed, &|_| None);
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].group, "w@.service");
        assert_eq!(requests[0].units.len(), 2);
        assert_eq!(alone, vec![n("db.service"), n("v@1.service")]);
    }

    fn groups(yaml: &str) -> BTreeMap<String, ManifestGroup> {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn manifest_groups_name_their_units_and_a_template_its_instances() {
        let units = [n("w@1.service"), n("w@2.service"), n("api.service")];
        let path = std::path::Path::new("repo/flotilla.yaml");
        let of = manifest_groups(
            path,
            &groups(
                "b:\n  units: [w@.service]\n  min-healthy-time: 1min 30s\n  wave-timeout: 90\n",
            ),
            &units,
        )
        .unwrap();
        assert_eq!(of.len(), 2);
        let (group, options) = &of[&n("w@2.service")];
        assert_eq!(group, "b");
        assert_eq!(options.min_healthy_time, Some(Duration::from_secs(90)));
        assert_eq!(options.wave_timeout, Some(Duration::from_secs(90)));

        let twice = groups("a:\n  units: [api.service]\nb:\n  units: [api.service]\n");
        let e = manifest_groups(path, &twice, &units)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "repo/flotilla.yaml: rollouts: b: api.service is in group a too"
        );
        let bad = groups("a:\n  units: [api.service]\n  max-parallel: 0\n");
        let e = manifest_groups(path, &bad, &units).unwrap_err().to_string();
        assert!(
            e.contains("rollouts: a: maxParallel 0 is out of range"),
            "{e}"
        );
        let span = groups("a:\n  units: [api.service]\n  min-healthy-time: soon\n");
        let e = manifest_groups(path, &span, &units)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("repo/flotilla.yaml: rollouts: a: min-healthy-time: "),
            "{e}"
        );
    }

    #[test]
    fn a_named_group_rolls_out_even_one_unit_with_its_settings() {
        let options = RolloutOptions {
            max_parallel: Some(2),
            ..RolloutOptions::default()
        };
        let changed = vec![
            (n("db.service"), "c".into()),
            (n("w@1.service"), "a".into()),
        ];
        let (requests, alone) = group(changed, &|u| {
            (u.as_str() == "db.service").then(|| ("backend".to_owned(), options))
        });
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].group, "backend");
        assert_eq!(requests[0].settings, options);
        assert_eq!(alone, vec![n("w@1.service")]);
    }
}

/// A group of `flotilla.yaml`'s `rollouts:` section.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ManifestGroup {
    /// Units of DIR; a template stands for its instances.
    units: Vec<String>,
    #[serde(default)]
    max_parallel: Option<u32>,
    #[serde(default)]
    min_healthy_time: Option<Span>,
    #[serde(default)]
    auto_revert: Option<bool>,
    #[serde(default)]
    wave_timeout: Option<Span>,
}

/// A time span in YAML: systemd's words (`30s`, `1min 30s`) or seconds.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
enum Span {
    Seconds(u64),
    Text(String),
}

impl Span {
    fn duration(&self, what: &str) -> anyhow::Result<Duration> {
        match self {
            Span::Seconds(s) => Ok(Duration::from_secs(*s)),
            Span::Text(t) => flotilla_proto::duration::parse_timespan(t)
                .map_err(|e| anyhow::anyhow!("{what}: {e}")),
        }
    }
}

/// Which group of `rollouts` each unit of `units` is in, with the group's
/// settings; a unit in two groups, or a group naming what DIR lacks, is
/// an error naming the group.
pub fn manifest_groups(
    manifest: &std::path::Path,
    groups: &BTreeMap<String, ManifestGroup>,
    units: &[UnitName],
) -> anyhow::Result<BTreeMap<UnitName, (String, RolloutOptions)>> {
    let mut of = BTreeMap::new();
    for (group, g) in groups {
        let at = |what: &str| format!("{}: rollouts: {group}: {what}", manifest.display());
        let options = RolloutOptions {
            max_parallel: g.max_parallel,
            min_healthy_time: g
                .min_healthy_time
                .as_ref()
                .map(|s| s.duration(&at("min-healthy-time")))
                .transpose()?,
            auto_revert: g.auto_revert,
            wave_timeout: g
                .wave_timeout
                .as_ref()
                .map(|s| s.duration(&at("wave-timeout")))
                .transpose()?,
        };
        options
            .validate()
            .map_err(|e| anyhow::anyhow!("{}", at(&e.to_string())))?;
        let name_ok = !group.is_empty()
            && group.len() <= flotilla_proto::rollout::MAX_GROUP_LEN
            && group
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ":_.@-".contains(c));
        if !name_ok {
            bail!(
                "{}",
                at("a group's name is 1 to 256 letters, digits and :_.@-")
            );
        }
        for entry in &g.units {
            let name =
                UnitName::parse(entry).map_err(|e| anyhow::anyhow!("{}", at(&e.to_string())))?;
            let members: Vec<&UnitName> = if name.is_template() {
                units
                    .iter()
                    .filter(|u| u.template().as_ref() == Some(&name))
                    .collect()
            } else {
                units.iter().filter(|u| **u == name).collect()
            };
            if members.is_empty() {
                bail!("{}", at(&format!("{entry} is not a unit of the directory")));
            }
            for m in members {
                if let Some((other, _)) = of.insert(m.clone(), (group.clone(), options))
                    && other != *group
                {
                    bail!("{}", at(&format!("{m} is in group {other} too")));
                }
            }
        }
    }
    Ok(of)
}
