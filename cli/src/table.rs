//! The listings, as tables with fleet's columns, or JSON with `-o json`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

use flotilla_api::client::StateQuery;
use flotilla_proto::wire::MachineResource;
use flotilla_proto::{MachineId, UnitState};
use serde::Serialize;

use crate::Output;
use crate::client::{Ctx, print_json};

/// Prints rows under a header, each column as wide as its widest cell,
/// every cell escaped ([`escape`]).
pub fn print(header: &[&str], rows: &[Vec<String>]) {
    print!("{}", render(header, rows));
}

/// The table [`print()`] prints.
fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let header: Vec<String> = header.iter().map(|h| escape(h)).collect();
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| escape(cell)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A cell as it may reach a terminal: control characters (which could
/// move the cursor, rewrite the title, or hide text when a machine
/// supplies them in its hostname or metadata) are written as escapes:
/// `\n`, `\t`, `\r`, and `\u{1b}` for the others.
fn escape(cell: &str) -> String {
    flotilla_proto::field::escape_controls(cell, &[])
}

/// `shortid/ip`, as fleetctl shows a machine.
fn machine_label(id: &MachineId, machines: &BTreeMap<MachineId, MachineResource>) -> String {
    match machines.get(id).and_then(|m| m.primary_ip.as_deref()) {
        Some(ip) => format!("{}/{ip}", id.short()),
        None => id.short().to_owned(),
    }
}

async fn machines_by_id(ctx: &Ctx) -> anyhow::Result<BTreeMap<MachineId, MachineResource>> {
    Ok(ctx
        .client
        .all_machines()
        .await?
        .into_iter()
        .map(|m| (m.machine.id.clone(), m))
        .collect())
}

/// One row of `list-units`: a unit on a machine.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct UnitRow {
    unit: String,
    #[serde(rename = "machineID")]
    machine_id: Option<MachineId>,
    active_state: Option<String>,
    sub_state: Option<String>,
    health: Option<String>,
    main_pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unscheduled_reason: Option<String>,
    /// The state's last error: for an `unknown` state, why it is unknown
    /// ("machine unreachable for 4s; last reported active/running"); for a
    /// failed one, why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
}

pub async fn list_units(ctx: Ctx) -> anyhow::Result<ExitCode> {
    let units = ctx.client.all_units().await?;
    let states = ctx.client.all_states(&StateQuery::default()).await?;
    let machines = machines_by_id(&ctx).await?;
    let mut by_unit: BTreeMap<&str, Vec<&UnitState>> = BTreeMap::new();
    for s in &states {
        by_unit.entry(s.unit.as_str()).or_default().push(s);
    }
    let mut rows = Vec::new();
    for u in &units {
        if u.current_state.is_none() {
            // Templates run nowhere themselves.
            continue;
        }
        let reported = by_unit.get(u.name.as_str()).cloned().unwrap_or_default();
        // The machine the unit is placed on, and any machine that reports
        // it (Global units run on many; a moved unit may linger briefly).
        let mut on: BTreeSet<MachineId> = reported.iter().map(|s| s.machine.clone()).collect();
        on.extend(u.machine_id.clone());
        if on.is_empty() {
            rows.push(UnitRow {
                unit: u.name.clone(),
                machine_id: None,
                active_state: None,
                sub_state: None,
                health: None,
                main_pid: None,
                unscheduled_reason: u.unscheduled_reason.clone(),
                last_error: None,
            });
            continue;
        }
        for m in on {
            let state = reported.iter().find(|s| s.machine == m);
            rows.push(UnitRow {
                unit: u.name.clone(),
                machine_id: Some(m),
                active_state: state.map(|s| s.active_state.clone()),
                sub_state: state.map(|s| s.sub_state.clone()),
                health: state.map(|s| s.health.to_string()),
                main_pid: state.and_then(|s| s.main_pid),
                unscheduled_reason: None,
                last_error: state.and_then(|s| s.last_error.clone()),
            });
        }
    }
    if ctx.output == Output::Json {
        print_json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    // Why a unit is not placed, why it failed (a container unit whose
    // image could not be pulled), or why its state is unknown (its machine
    // is unreachable), in a last column shown only when needed.
    let reason = |r: &UnitRow| {
        r.unscheduled_reason.clone().or_else(|| {
            matches!(r.active_state.as_deref(), Some("unknown" | "failed"))
                .then(|| r.last_error.clone())
                .flatten()
        })
    };
    let reasons = rows.iter().any(|r| reason(r).is_some());
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut row = vec![
                r.unit.clone(),
                r.machine_id
                    .as_ref()
                    .map(|m| machine_label(m, &machines))
                    .unwrap_or_else(|| "-".into()),
                dash(&r.active_state),
                dash(&r.sub_state),
                dash(&r.health),
            ];
            if reasons {
                row.push(dash(&reason(r)));
            }
            row
        })
        .collect();
    let mut header = vec!["UNIT", "MACHINE", "ACTIVE", "SUB", "HEALTH"];
    if reasons {
        header.push("REASON");
    }
    print(&header, &cells);
    Ok(ExitCode::SUCCESS)
}

pub async fn list_unit_files(ctx: Ctx) -> anyhow::Result<ExitCode> {
    let units = ctx.client.all_units().await?;
    if ctx.output == Output::Json {
        print_json(&units)?;
        return Ok(ExitCode::SUCCESS);
    }
    let machines = machines_by_id(&ctx).await?;
    let cells: Vec<Vec<String>> = units
        .iter()
        .map(|u| {
            vec![
                u.name.clone(),
                u.hash.chars().take(7).collect(),
                u.desired_state.to_string(),
                u.current_state
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "-".into()),
                u.machine_id
                    .as_ref()
                    .map(|m| machine_label(m, &machines))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print(&["UNIT", "HASH", "DSTATE", "STATE", "TARGET"], &cells);
    Ok(ExitCode::SUCCESS)
}

pub async fn list_machines(ctx: Ctx) -> anyhow::Result<ExitCode> {
    let machines = ctx.client.all_machines().await?;
    if ctx.output == Output::Json {
        print_json(&machines)?;
        return Ok(ExitCode::SUCCESS);
    }
    let cells: Vec<Vec<String>> = machines
        .iter()
        .map(|m| {
            let metadata = m
                .machine
                .metadata
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            vec![
                m.machine.id.short().to_owned(),
                m.primary_ip.clone().unwrap_or_else(|| "-".into()),
                m.machine.hostname.clone(),
                m.units.to_string(),
                format!(
                    "{}/{}",
                    millis(m.used.cpu_millis),
                    millis(m.machine.capacity.cpu_millis)
                ),
                format!(
                    "{}/{}",
                    bytes(m.used.memory_bytes),
                    bytes(m.machine.capacity.memory_bytes)
                ),
                if metadata.is_empty() {
                    "-".into()
                } else {
                    metadata
                },
                or_dash(&m.machine.agent_version),
            ]
        })
        .collect();
    print(
        &[
            "MACHINE", "IP", "HOSTNAME", "UNITS", "CPU", "MEMORY", "METADATA", "VERSION",
        ],
        &cells,
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn list_servers(ctx: Ctx) -> anyhow::Result<ExitCode> {
    let servers = ctx.client.list_servers().await?.servers;
    if ctx.output == Output::Json {
        print_json(&servers)?;
        return Ok(ExitCode::SUCCESS);
    }
    // The raft columns only when the cluster runs on raft.
    let raft = servers.iter().any(|s| s.raft_id.is_some());
    let cells: Vec<Vec<String>> = servers
        .iter()
        .map(|s| {
            let mut row = vec![
                or_dash(&s.id),
                or_dash(&s.address),
                or_dash(&s.version),
                if s.leader { "yes".into() } else { "-".into() },
            ];
            if raft {
                let num = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
                row.extend([
                    num(s.raft_id),
                    or_dash(s.peer_address.as_deref().unwrap_or("")),
                    or_dash(s.raft_role.as_deref().unwrap_or("")),
                    num(s.term),
                    num(s.applied),
                    num(s.lag),
                ]);
            }
            row
        })
        .collect();
    let mut header = vec!["SERVER", "ADDRESS", "VERSION", "LEADER"];
    if raft {
        header.extend(["RAFT-ID", "PEER", "ROLE", "TERM", "APPLIED", "LAG"]);
    }
    print(&header, &cells);
    Ok(ExitCode::SUCCESS)
}

/// `-` for an empty cell.
fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.to_owned()
    }
}

/// CPUs from thousandths: `1.5`.
fn millis(m: u64) -> String {
    if m.is_multiple_of(1000) {
        (m / 1000).to_string()
    } else {
        format!("{:.2}", m as f64 / 1000.0)
    }
}

/// Bytes in the largest 1024-based unit that keeps them whole-ish: `512M`.
pub fn bytes(b: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("T", 1 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ];
    for (suffix, size) in UNITS {
        if b >= size {
            let v = b as f64 / size as f64;
            return if v.fract() < 0.05 {
                format!("{v:.0}{suffix}")
            } else {
                format!("{v:.1}{suffix}")
            };
        }
    }
    b.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_in_every_cell() {
        let rows = vec![
            vec!["0123abcd".to_owned(), "web\u{1b}]0;owned\u{7}".to_owned()],
            vec!["\u{9b}31m".to_owned(), "a\tb\nc\r".to_owned()],
        ];
        let table = render(&["MACHINE", "HOST\u{1b}[2J"], &rows);
        assert!(
            !table.chars().any(|c| c.is_control() && c != '\n'),
            "{table:?}"
        );
        assert_eq!(
            table,
            "MACHINE    HOST\\u{1b}[2J\n\
             0123abcd   web\\u{1b}]0;owned\\u{7}\n\
             \\u{9b}31m  a\\tb\\nc\\r\n"
        );
    }

    #[test]
    fn plain_cells_are_aligned_as_before() {
        let rows = vec![
            vec!["a".to_owned(), "bb".to_owned(), "c".to_owned()],
            vec!["dddd".to_owned(), "e".to_owned(), "-".to_owned()],
        ];
        assert_eq!(
            render(&["X", "Y", "Z"], &rows),
            "X     Y   Z\na     bb  c\ndddd  e   -\n"
        );
    }
}
