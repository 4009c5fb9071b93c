//! `flotilla import-fleet`: copies the units of a running CoreOS fleet
//! cluster into flotilla, reading fleet's registry from its etcd (see
//! [`registry`]) and writing through flotilla's API.
//!
//! For each of fleet's units (templates first, then the others, by name):
//!
//! - missing in flotilla: created with fleet's text and desired state;
//! - present with the same contents (flotilla's content hash, which ignores
//!   layout): its desired state is set to fleet's if it differs;
//! - present with other contents: reported and left alone, or replaced with
//!   `--replace`;
//! - refused by flotilla's unit file checks, or unreadable in fleet's
//!   registry: reported with the reason, and the others still imported.
//!
//! Running it again finds nothing to do. `--dry-run` reports the same plan
//! (unit files checked locally with flotilla's validator) and changes
//! nothing. The exit code is 1 when a unit failed or differs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use flotilla_proto::fleet::{glob_match, validate_glob};
use flotilla_proto::wire::{Unit, UnitPut};
use flotilla_proto::{DesiredState, UnitFile, UnitName, UnitSpec};
use serde::Serialize;

use crate::Output;
use crate::client::{Ctx, print_json};

pub mod registry;

use registry::{DEFAULT_KEY_PREFIX, FleetUnit, Job, Registry};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// fleet's etcd: the client URL of one member, http:// or https://
    /// (one of fleet's etcd_servers). It must serve etcd's v2 API.
    #[arg(long, value_name = "URL")]
    etcd: String,
    /// Where fleet keeps its registry in etcd (fleet's etcd_key_prefix).
    #[arg(long, default_value = DEFAULT_KEY_PREFIX, value_name = "PREFIX")]
    key_prefix: String,
    /// CA certificates (PEM) to verify an https:// etcd with, instead of
    /// the system's. Client certificates and user names for etcd are not
    /// supported: give the command an etcd member that needs neither, or
    /// run it where one listens on loopback.
    #[arg(long, value_name = "FILE")]
    etcd_ca: Option<PathBuf>,
    /// How long each request to etcd may take, its answer included.
    #[arg(long, default_value = "30s", value_name = "TIMESPAN", value_parser = parse_span)]
    etcd_timeout: Duration,
    /// Report what would be done, and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Replace the contents of units that flotilla has with different
    /// contents (without it they are reported and left alone).
    #[arg(long)]
    replace: bool,
    /// Import only these units: names, or globs such as 'web@*.service'
    /// (fleet's patterns) [default: every unit of fleet].
    #[arg(value_name = "UNIT")]
    units: Vec<String>,
}

fn parse_span(s: &str) -> Result<Duration, String> {
    flotilla_proto::duration::parse_timespan(s).map_err(|e| e.to_string())
}

/// What happened to one unit (or, with `--dry-run`, would happen).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Outcome {
    /// flotilla did not have it: created with fleet's text and state.
    #[serde(rename_all = "camelCase")]
    Created { desired_state: DesiredState },
    /// Same contents; the desired state was changed to fleet's.
    StateChanged {
        from: DesiredState,
        to: DesiredState,
    },
    /// Same contents and desired state: nothing to do.
    #[serde(rename_all = "camelCase")]
    Unchanged { desired_state: DesiredState },
    /// Other contents, replaced with fleet's (`--replace`).
    #[serde(rename_all = "camelCase")]
    Replaced { desired_state: DesiredState },
    /// Other contents, left alone (no `--replace`).
    #[serde(rename_all = "camelCase")]
    Differs {
        fleet_state: DesiredState,
        flotilla_state: DesiredState,
    },
    /// Not imported: why.
    Failed { reason: String },
}

impl Outcome {
    /// Whether this outcome makes the command exit non-zero.
    fn is_problem(&self) -> bool {
        matches!(self, Outcome::Differs { .. } | Outcome::Failed { .. })
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub unit: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// How many units ended each way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub created: usize,
    pub state_changed: usize,
    pub unchanged: usize,
    pub replaced: usize,
    pub differs: usize,
    pub failed: usize,
}

impl Summary {
    fn of(rows: &[Row]) -> Summary {
        let mut s = Summary::default();
        for r in rows {
            match r.outcome {
                Outcome::Created { .. } => s.created += 1,
                Outcome::StateChanged { .. } => s.state_changed += 1,
                Outcome::Unchanged { .. } => s.unchanged += 1,
                Outcome::Replaced { .. } => s.replaced += 1,
                Outcome::Differs { .. } => s.differs += 1,
                Outcome::Failed { .. } => s.failed += 1,
            }
        }
        s
    }

    fn changes(&self) -> usize {
        self.created + self.state_changed + self.replaced
    }
}

/// The whole report, as `-o json` prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report<'a> {
    etcd: &'a str,
    key_prefix: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    etcd_index: Option<u64>,
    dry_run: bool,
    units: &'a [Row],
    summary: Summary,
}

/// What a dry run predicts for `put`: the unit file it would write is
/// checked with flotilla's validator, as the server checks it, so that a
/// refusal names file, line and option.
fn predict(name: &UnitName, put: &UnitPut, then: Outcome) -> Outcome {
    match &put.text {
        Some(text) => match UnitSpec::check_named(name.as_str(), name, text) {
            Ok(_) => then,
            Err(e) => Outcome::Failed {
                reason: e.to_string(),
            },
        },
        None => then,
    }
}

/// What to do for one unit: send a change, or only report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send `put`; on success the outcome is `then`.
    Send {
        put: UnitPut,
        then: Outcome,
    },
    Report(Outcome),
}

/// Decides what to do for fleet's unit `name`, given flotilla's unit of
/// that name, if any.
pub fn plan(
    name: &str,
    fleet: &Result<FleetUnit, registry::JobError>,
    have: Option<&Unit>,
    replace: bool,
) -> Step {
    let fleet = match fleet {
        Ok(f) => f,
        Err(e) => {
            return Step::Report(Outcome::Failed {
                reason: e.to_string(),
            });
        }
    };
    if let Err(e) = UnitName::parse(name) {
        return Step::Report(Outcome::Failed {
            reason: e.to_string(),
        });
    }
    let desired = fleet.desired;
    let write = |then: Outcome, replace: bool| Step::Send {
        put: UnitPut {
            desired_state: Some(desired),
            text: Some(fleet.text.clone()),
            replace,
            ..UnitPut::default()
        },
        then,
    };
    let Some(unit) = have else {
        return write(
            Outcome::Created {
                desired_state: desired,
            },
            false,
        );
    };
    let (file, _) = UnitFile::parse(&fleet.text);
    if file.content_hash() != unit.hash {
        if replace {
            return write(
                Outcome::Replaced {
                    desired_state: desired,
                },
                true,
            );
        }
        return Step::Report(Outcome::Differs {
            fleet_state: desired,
            flotilla_state: unit.desired_state,
        });
    }
    if unit.desired_state == desired {
        return Step::Report(Outcome::Unchanged {
            desired_state: desired,
        });
    }
    Step::Send {
        put: UnitPut {
            desired_state: Some(desired),
            ..UnitPut::default()
        },
        then: Outcome::StateChanged {
            from: unit.desired_state,
            to: desired,
        },
    }
}

/// fleet's jobs in the order they are imported: templates first (an
/// instance carries its own text, so flotilla does not need its template,
/// but a reader of the report expects it first), then by name.
fn in_order(mut jobs: Vec<Job>) -> Vec<Job> {
    jobs.sort_by(|a, b| {
        let template = |j: &Job| !j.name.contains("@.");
        (template(a), &a.name).cmp(&(template(b), &b.name))
    });
    jobs
}

/// Keeps the jobs that `patterns` name (all of them when none is given).
/// A name or pattern that matches no job is an error, before anything
/// changes.
fn select(jobs: Vec<Job>, patterns: &[String]) -> anyhow::Result<Vec<Job>> {
    if patterns.is_empty() {
        return Ok(jobs);
    }
    for p in patterns {
        validate_glob(p).with_context(|| format!("bad unit pattern {p:?}"))?;
        if !jobs.iter().any(|j| glob_match(p, &j.name)) {
            bail!("no unit of fleet matches {p:?}: nothing was changed");
        }
    }
    Ok(jobs
        .into_iter()
        .filter(|j| patterns.iter().any(|p| glob_match(p, &j.name)))
        .collect())
}

pub async fn run(ctx: Ctx, args: Args) -> anyhow::Result<ExitCode> {
    let ca_pem = args
        .etcd_ca
        .as_ref()
        .map(|path| {
            std::fs::read(path)
                .with_context(|| format!("cannot read the etcd CA file {}", path.display()))
        })
        .transpose()?;
    let registry = Registry::new(
        &args.etcd,
        &args.key_prefix,
        registry::Options {
            ca_pem,
            timeout: args.etcd_timeout,
            ..registry::Options::default()
        },
    )?;
    let snapshot = registry
        .read()
        .await
        .context("cannot read fleet's registry")?;
    let jobs = in_order(select(snapshot.jobs, &args.units)?);
    let have: BTreeMap<String, Unit> = ctx
        .client
        .all_units()
        .await
        .context("cannot list flotilla's units")?
        .into_iter()
        .map(|u| (u.name.clone(), u))
        .collect();

    let mut rows = Vec::with_capacity(jobs.len());
    for job in &jobs {
        let outcome = match plan(&job.name, &job.unit, have.get(&job.name), args.replace) {
            Step::Report(outcome) => outcome,
            Step::Send { put, then } => {
                // The name parsed in `plan`, or it would not send.
                let name = UnitName::parse(&job.name)?;
                if args.dry_run {
                    predict(&name, &put, then)
                } else {
                    // The server checks the unit file: its refusal is the
                    // reason reported.
                    match ctx.client.put_unit(&name, &put).await {
                        Ok(_) => then,
                        Err(e) => Outcome::Failed {
                            reason: e.to_string(),
                        },
                    }
                }
            }
        };
        rows.push(Row {
            unit: job.name.clone(),
            outcome,
        });
    }

    let summary = Summary::of(&rows);
    let problems = rows.iter().any(|r| r.outcome.is_problem());
    match ctx.output {
        Output::Json => print_json(&Report {
            etcd: &args.etcd,
            key_prefix: registry.prefix(),
            etcd_index: snapshot.etcd_index,
            dry_run: args.dry_run,
            units: &rows,
            summary,
        })?,
        Output::Text => {
            for row in &rows {
                println!("{}", line(row, args.dry_run));
            }
            println!("{}", summary_line(&summary, args.dry_run));
        }
    }
    Ok(if problems {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// One report line: what happened, the unit, details. A multi-line reason
/// (several unit file errors) continues on indented lines.
fn line(row: &Row, dry_run: bool) -> String {
    let unit = &row.unit;
    let (what, detail) = match &row.outcome {
        Outcome::Created { desired_state } => (
            if dry_run { "would create" } else { "created" },
            format!("{unit} ({desired_state})"),
        ),
        Outcome::StateChanged { from, to } => (
            if dry_run {
                "would change"
            } else {
                "state changed"
            },
            format!("{unit}: {from} -> {to}"),
        ),
        Outcome::Unchanged { desired_state } => ("unchanged", format!("{unit} ({desired_state})")),
        Outcome::Replaced { desired_state } => (
            if dry_run { "would replace" } else { "replaced" },
            format!("{unit} ({desired_state})"),
        ),
        Outcome::Differs { .. } => (
            "differs",
            format!(
                "{unit}: flotilla has other contents; skipped (--replace to replace them with fleet's)"
            ),
        ),
        Outcome::Failed { reason } => (
            if dry_run { "would fail" } else { "failed" },
            format!("{unit}: {}", reason.replace('\n', "\n               ")),
        ),
    };
    format!("{what:<14} {detail}")
}

fn summary_line(s: &Summary, dry_run: bool) -> String {
    let total = s.changes() + s.unchanged + s.differs + s.failed;
    if s.changes() == 0 && s.differs == 0 && s.failed == 0 {
        return format!(
            "nothing to do: {total} unit{} of fleet already in flotilla as fleet has {}",
            plural(total),
            if total == 1 { "it" } else { "them" }
        );
    }
    let counts = format!(
        "{} created, {} state changed, {} replaced, {} unchanged, {} differ (skipped), {} failed",
        s.created, s.state_changed, s.replaced, s.unchanged, s.differs, s.failed
    );
    if dry_run {
        format!(
            "dry run, nothing was changed: {total} unit{} of fleet would be: {counts}",
            plural(total)
        )
    } else {
        format!("{total} unit{} of fleet: {counts}", plural(total))
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use super::*;
    use registry::JobError;

    const TEXT: &str = "[Unit]\nDescription=a\n\n[Service]\nExecStart=/bin/true\n";

    fn fleet(text: &str, desired: DesiredState) -> Result<FleetUnit, JobError> {
        Ok(FleetUnit {
            text: text.into(),
            desired,
            fleet_hash: "00".into(),
        })
    }

    fn flotilla(name: &str, text: &str, desired: DesiredState) -> Unit {
        Unit {
            name: name.into(),
            options: vec![],
            text: text.into(),
            hash: UnitFile::parse(text).0.content_hash(),
            desired_state: desired,
            current_state: None,
            machine_id: None,
            unscheduled_reason: None,
            revision: 1,
        }
    }

    #[test]
    fn a_missing_unit_is_created_with_fleet_s_text_and_state() {
        let step = plan(
            "a.service",
            &fleet(TEXT, DesiredState::Launched),
            None,
            false,
        );
        assert_eq!(
            step,
            Step::Send {
                put: UnitPut {
                    desired_state: Some(DesiredState::Launched),
                    text: Some(TEXT.into()),
                    ..UnitPut::default()
                },
                then: Outcome::Created {
                    desired_state: DesiredState::Launched
                },
            }
        );
    }

    #[test]
    fn same_contents_set_only_the_state_and_layout_does_not_count() {
        // flotilla's copy has a comment and other spacing: same contents.
        let theirs = "# mine\n[Unit]\nDescription = a\n[Service]\nExecStart=/bin/true\n";
        let have = flotilla("a.service", theirs, DesiredState::Inactive);
        let step = plan(
            "a.service",
            &fleet(TEXT, DesiredState::Loaded),
            Some(&have),
            false,
        );
        assert_eq!(
            step,
            Step::Send {
                put: UnitPut {
                    desired_state: Some(DesiredState::Loaded),
                    ..UnitPut::default()
                },
                then: Outcome::StateChanged {
                    from: DesiredState::Inactive,
                    to: DesiredState::Loaded
                },
            }
        );
        let have = flotilla("a.service", theirs, DesiredState::Loaded);
        assert_eq!(
            plan(
                "a.service",
                &fleet(TEXT, DesiredState::Loaded),
                Some(&have),
                true
            ),
            Step::Report(Outcome::Unchanged {
                desired_state: DesiredState::Loaded
            })
        );
    }

    #[test]
    fn other_contents_are_left_alone_unless_replace() {
        let have = flotilla(
            "a.service",
            "[Service]\nExecStart=/bin/false\n",
            DesiredState::Inactive,
        );
        let f = fleet(TEXT, DesiredState::Launched);
        assert_eq!(
            plan("a.service", &f, Some(&have), false),
            Step::Report(Outcome::Differs {
                fleet_state: DesiredState::Launched,
                flotilla_state: DesiredState::Inactive
            })
        );
        let Step::Send { put, then } = plan("a.service", &f, Some(&have), true) else {
            panic!("replace sends");
        };
        assert!(put.replace);
        assert_eq!(put.text.as_deref(), Some(TEXT));
        assert_eq!(
            then,
            Outcome::Replaced {
                desired_state: DesiredState::Launched
            }
        );
    }

    #[test]
    fn a_dry_run_predicts_flotilla_s_refusal_with_file_line_and_option() {
        let bad = "[Unit]\nDescription=x\n\n[X-Fleet]\nMachineID=abc\nGlobal=true\n";
        let Step::Send { put, then } = plan(
            "bad.service",
            &fleet(bad, DesiredState::Launched),
            None,
            false,
        ) else {
            panic!("sent: the server decides");
        };
        let name = UnitName::parse("bad.service").unwrap();
        let Outcome::Failed { reason } = predict(&name, &put, then.clone()) else {
            panic!("refused");
        };
        assert!(reason.starts_with("bad.service:"), "{reason}");
        assert!(reason.contains("Global"), "{reason}");
        let good = UnitPut {
            text: Some(TEXT.into()),
            ..put
        };
        assert_eq!(predict(&name, &good, then.clone()), then);
        // Unreadable in fleet's registry, or a name flotilla refuses.
        let missing = Err(JobError::MissingUnitFile { hash: "ab".into() });
        assert!(matches!(
            plan("a.service", &missing, None, false),
            Step::Report(Outcome::Failed { .. })
        ));
        assert!(matches!(
            plan(
                "a b.service",
                &fleet(TEXT, DesiredState::Inactive),
                None,
                false
            ),
            Step::Report(Outcome::Failed { .. })
        ));
    }

    fn job(name: &str) -> Job {
        Job {
            name: name.into(),
            unit: fleet(TEXT, DesiredState::Inactive),
        }
    }

    #[test]
    fn templates_come_first_and_patterns_select() {
        let jobs = vec![
            job("a.service"),
            job("web@-1.service"),
            job("web@.service"),
            job("db@.service"),
            job("web@2.service"),
        ];
        let names = |jobs: &[Job]| jobs.iter().map(|j| j.name.clone()).collect::<Vec<_>>();
        let ordered = in_order(jobs.clone());
        assert_eq!(
            names(&ordered),
            [
                "db@.service",
                "web@.service",
                "a.service",
                "web@-1.service",
                "web@2.service"
            ]
        );
        let picked = select(jobs.clone(), &["web@*".into(), "a.service".into()]).unwrap();
        assert_eq!(
            names(&picked),
            [
                "a.service",
                "web@-1.service",
                "web@.service",
                "web@2.service"
            ]
        );
        let err = select(jobs.clone(), &["nope.service".into()]).unwrap_err();
        assert!(err.to_string().contains("nope.service"), "{err}");
        assert!(select(jobs, &["[".into()]).is_err());
    }

    #[test]
    fn the_report_reads_as_intended() {
        let rows = vec![
            Row {
                unit: "a.service".into(),
                outcome: Outcome::Created {
                    desired_state: DesiredState::Launched,
                },
            },
            Row {
                unit: "b.service".into(),
                outcome: Outcome::Failed {
                    reason: "b.service:3: error: one\nb.service:4: error: two".into(),
                },
            },
        ];
        assert_eq!(line(&rows[0], false), "created        a.service (launched)");
        assert_eq!(line(&rows[0], true), "would create   a.service (launched)");
        assert_eq!(
            line(&rows[1], false),
            "failed         b.service: b.service:3: error: one\n               b.service:4: error: two"
        );
        let s = Summary::of(&rows);
        assert_eq!(
            summary_line(&s, false),
            "2 units of fleet: 1 created, 0 state changed, 0 replaced, 0 unchanged, 0 differ (skipped), 1 failed"
        );
        let json = serde_json::to_value(&rows[0]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"unit": "a.service", "status": "created", "desiredState": "launched"})
        );
        let done = Summary {
            unchanged: 3,
            ..Summary::default()
        };
        assert_eq!(
            summary_line(&done, false),
            "nothing to do: 3 units of fleet already in flotilla as fleet has them"
        );
    }
}
