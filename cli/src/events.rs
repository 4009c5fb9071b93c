//! `flotilla events`: the cluster's history, listed, or followed as it
//! happens (`-f`).

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use flotilla_api::client::{EventQuery, PageQuery};
use flotilla_proto::UnitName;
use flotilla_proto::duration::parse_timespan;
use flotilla_proto::event::{Event, EventKind};
use flotilla_proto::field::escape_controls;

use crate::Output;
use crate::client::{Ctx, print_json};
use crate::table::print;
use crate::trust::timestamp;

/// How long one wait for new events lasts (the servers cap it at 60 s).
const FOLLOW_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep printing events as they happen (one line, or one JSON object,
    /// each), until interrupted or until no server answers.
    #[arg(short, long)]
    follow: bool,
    /// Only events younger than this (e.g. 10min, 2h, 7d).
    #[arg(long, value_name = "TIMESPAN", value_parser = parse_span)]
    since: Option<Duration>,
    /// Only events about this unit.
    #[arg(long, value_name = "UNIT")]
    unit: Option<UnitName>,
    /// Only events about this machine: its id, or the start of it (as
    /// list-machines shows it).
    #[arg(long, value_name = "MACHINE")]
    machine: Option<String>,
}

fn parse_span(s: &str) -> Result<Duration, String> {
    parse_timespan(s).map_err(|e| e.to_string())
}

pub async fn run(ctx: Ctx, args: Args) -> anyhow::Result<ExitCode> {
    let machine = match args.machine {
        Some(m) if !m.is_empty() && m.len() <= 32 && m.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(m.to_ascii_lowercase())
        }
        Some(m) => {
            bail!("--machine takes a machine id or the start of one (hex digits), not {m:?}")
        }
        None => None,
    };
    let since_ms = args.since.map(|d| {
        flotilla_scheduler::trust::now_ms()
            .saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    });
    let query = EventQuery {
        since_ms,
        unit: args.unit,
        machine,
    };
    // Every page, and the revision of the first: following starts there,
    // and skips what the pages already showed.
    let mut listed = Vec::new();
    let mut page = PageQuery::default();
    let mut index = None;
    loop {
        let got = ctx.client.events(&query, &page).await?;
        index.get_or_insert(got.index);
        listed.extend(got.events);
        match got.next_page_token {
            Some(t) if page.token.as_ref() != Some(&t) => page.token = Some(t),
            _ => break,
        }
    }
    if !args.follow {
        if ctx.output == Output::Json {
            print_json(&listed)?;
        } else {
            let rows: Vec<Vec<String>> = listed.iter().map(cells).collect();
            print(&["TIME", "KIND", "UNIT", "MACHINE", "DETAIL"], &rows);
        }
        return Ok(ExitCode::SUCCESS);
    }
    for e in &listed {
        line(ctx.output, e)?;
    }
    let mut seen: HashSet<String> = listed.into_iter().map(|e| e.id).collect();
    let mut index = index.unwrap_or(0);
    loop {
        match ctx.client.follow_events(&query, index, FOLLOW_WAIT).await {
            Ok(got) => {
                for e in got.events {
                    if !seen.contains(&e.id) {
                        line(ctx.output, &e)?;
                    }
                    seen.remove(&e.id);
                }
                index = got.index;
            }
            Err(e) if e.is_temporary() => {
                eprintln!("flotilla: no server answers ({e}): stopped following");
                return Ok(ExitCode::FAILURE);
            }
            Err(e) => return Err(e).context("following the events"),
        }
    }
}

/// An event's cells: time, kind, unit, machine (`from -> to` for a move)
/// and what happened, with who did it.
fn cells(e: &Event) -> Vec<String> {
    let machine = match (&e.from_machine, &e.machine) {
        (Some(from), Some(to)) => format!("{} -> {}", from.short(), to.short()),
        (Some(from), None) => format!("{} ->", from.short()),
        (None, Some(m)) => m.short().to_owned(),
        (None, None) => "-".to_owned(),
    };
    let detail = match (&e.detail, &e.actor) {
        (Some(d), Some(a)) => format!("{d} (by {a})"),
        (Some(d), None) => d.clone(),
        (None, Some(a)) => format!("by {a}"),
        (None, None) => "-".to_owned(),
    };
    vec![
        timestamp(e.at_ms),
        e.kind.to_string(),
        e.unit
            .as_ref()
            .map(|u| u.to_string())
            .unwrap_or_else(|| "-".into()),
        machine,
        detail,
    ]
}

/// The longest kind, so that following keeps the columns that follow it
/// in line.
fn kind_width() -> usize {
    EventKind::ALL
        .iter()
        .map(|k| k.as_str().len())
        .max()
        .unwrap_or(0)
}

/// Prints one event as it comes: a line of its cells (control characters
/// escaped), or one JSON object.
fn line(output: Output, e: &Event) -> anyhow::Result<()> {
    if output == Output::Json {
        println!("{}", serde_json::to_string(e).context("encoding JSON")?);
        return Ok(());
    }
    let c: Vec<String> = cells(e)
        .iter()
        .map(|cell| escape_controls(cell, &[]))
        .collect();
    println!(
        "{}  {:<width$}  {}  {}  {}",
        c[0],
        c[1],
        c[2],
        c[3],
        c[4],
        width = kind_width()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use flotilla_proto::MachineId;

    use super::*;

    #[test]
    fn a_move_names_both_machines_and_a_change_who_made_it() {
        let a = MachineId::parse(&"a1".repeat(16)).unwrap();
        let b = MachineId::parse(&"b2".repeat(16)).unwrap();
        let moved = Event::new(EventKind::UnitMoved, 0)
            .unit(&UnitName::parse("web.service").unwrap())
            .machine(&b)
            .from_machine(&a)
            .detail("its machine left the cluster");
        assert_eq!(
            cells(&moved),
            [
                "1970-01-01 00:00:00Z",
                "unit-moved",
                "web.service",
                "a1a1a1a1 -> b2b2b2b2",
                "its machine left the cluster"
            ]
        );
        let changed = Event::new(EventKind::UnitChanged, 0)
            .unit(&UnitName::parse("web.service").unwrap())
            .detail("desired state launched")
            .actor("alice");
        assert_eq!(cells(&changed)[4], "desired state launched (by alice)");
        assert_eq!(cells(&Event::new(EventKind::LeaderChanged, 0))[3], "-");
    }
}
