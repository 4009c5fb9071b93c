//! `flotilla status` and `flotilla journal`: a unit as its host's systemd
//! has it, and its journal, read through the servers (the host's agent
//! answers; no shell on the host is needed).

use std::io::Write;
use std::process::ExitCode;

use flotilla_api::client::JournalQuery;
use flotilla_proto::inspect::{JournalEntry, ReplyLine, UnitStatus};
use flotilla_proto::{MachineId, UnitName};

use crate::Output;
use crate::client::{Ctx, print_json};
use crate::table::bytes;
use crate::trust::timestamp;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Unit names.
    #[arg(required = true, value_name = "UNIT")]
    units: Vec<String>,
    /// The machine, for a Global unit (it runs on several).
    #[arg(long, value_name = "ID")]
    machine: Option<MachineId>,
    /// Journal lines to show (operators and admins only).
    #[arg(short = 'n', long, default_value_t = 10)]
    lines: u32,
}

#[derive(Debug, clap::Args)]
pub struct JournalArgs {
    /// The unit.
    #[arg(value_name = "UNIT")]
    unit: String,
    /// The last N lines.
    #[arg(short = 'n', long, default_value_t = 10)]
    lines: u32,
    /// Keep printing new lines as they come, until interrupted.
    #[arg(short, long)]
    follow: bool,
    /// Lines since this time, as journalctl --since reads it
    /// (`2026-12-05 10:00`, `-1h`, `today`).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// The machine, for a Global unit (it runs on several).
    #[arg(long, value_name = "ID")]
    machine: Option<MachineId>,
}

pub async fn status(ctx: Ctx, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let mut all = Vec::new();
    for u in &args.units {
        let name = UnitName::parse(u)?;
        all.push(
            ctx.client
                .unit_status(&name, args.machine.as_ref(), Some(args.lines))
                .await?,
        );
    }
    if ctx.output == Output::Json {
        print_json(&all)?;
        return Ok(ExitCode::SUCCESS);
    }
    let hostnames: std::collections::HashMap<MachineId, String> = ctx
        .client
        .all_machines()
        .await
        .map(|ms| {
            ms.into_iter()
                .map(|m| (m.machine.id, m.machine.hostname))
                .collect()
        })
        .unwrap_or_default();
    let mut out = std::io::stdout().lock();
    for (i, s) in all.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        write!(out, "{}", render_status(s, &hostnames))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A status as `systemctl status` lays it out.
fn render_status(
    s: &UnitStatus,
    hostnames: &std::collections::HashMap<MachineId, String>,
) -> String {
    let e = |v: &str| flotilla_proto::field::escape_controls(v, &[]);
    let mut out = String::new();
    let dot = match s.active_state.as_str() {
        "active" | "reloading" => "●",
        "failed" => "×",
        _ => "○",
    };
    out.push_str(&format!("{dot} {}", e(&s.unit)));
    if !s.description.is_empty() {
        out.push_str(&format!(" - {}", e(&s.description)));
    }
    out.push('\n');
    let mut row = |label: &str, value: String| {
        out.push_str(&format!("{label:>11}: {value}\n"));
    };
    if let Some(m) = &s.machine {
        let host = hostnames
            .get(m)
            .map(|h| format!(" ({})", e(h)))
            .unwrap_or_default();
        row("Machine", format!("{m}{host}"));
    }
    row("Loaded", e(&s.load_state));
    let mut active = format!("{} ({})", e(&s.active_state), e(&s.sub_state));
    if s.since_us > 0 {
        active.push_str(&format!(" since {}", timestamp(s.since_us / 1000)));
    }
    row("Active", active);
    if let Some(pid) = s.main_pid {
        row("Main PID", pid.to_string());
    }
    if let Some(t) = s.tasks {
        row("Tasks", t.to_string());
    }
    if let Some(m) = s.memory_bytes {
        row("Memory", bytes(m));
    }
    if let Some(c) = s.cpu_nsec {
        row("CPU", format!("{}ms", c / 1_000_000));
    }
    row("Restarts", s.restarts.to_string());
    if !s.result.is_empty() {
        let status = s
            .exit_status
            .map(|x| format!(" (status {x})"))
            .unwrap_or_default();
        row("Result", format!("{}{status}", e(&s.result)));
    }
    if !s.status_text.is_empty() {
        row("Status", e(&s.status_text));
    }
    if let Some(image) = &s.image {
        row("Image", e(image));
    }
    if let Some(c) = &s.container_id {
        row(
            "Container",
            format!("{} ({:?})", e(c), s.health).to_lowercase(),
        );
    }
    if let Some(probe) = s.last_probe.as_deref().filter(|p| !p.is_empty()) {
        row("Last probe", e(probe));
    }
    if !s.control_group.is_empty() {
        row("CGroup", e(&s.control_group));
    }
    if !s.log.is_empty() {
        out.push('\n');
        for entry in &s.log {
            out.push_str(&journal_line(entry));
        }
    }
    out
}

/// One journal line as `journalctl` prints it: time, program\[pid\],
/// message (control characters escaped: logs come from the host).
fn journal_line(entry: &JournalEntry) -> String {
    let e = |v: &str| flotilla_proto::field::escape_controls(v, &['\t']);
    let who = match (entry.identifier.is_empty(), entry.pid) {
        (false, Some(pid)) => format!("{}[{pid}]", e(&entry.identifier)),
        (false, None) => e(&entry.identifier),
        (true, Some(pid)) => format!("[{pid}]"),
        (true, None) => String::new(),
    };
    let cut = if entry.truncated { " [cut]" } else { "" };
    format!(
        "{} {who}: {}{cut}\n",
        timestamp(entry.at_us / 1000),
        e(&entry.message)
    )
}

pub async fn journal(ctx: Ctx, args: JournalArgs) -> anyhow::Result<ExitCode> {
    let name = UnitName::parse(&args.unit)?;
    let query = JournalQuery {
        lines: Some(args.lines),
        follow: args.follow,
        since: args.since.clone(),
        machine: args.machine.clone(),
    };
    let mut stream = ctx.client.journal(&name, &query).await?;
    let mut out = std::io::stdout();
    loop {
        let line = stream.next_line().await?;
        match line {
            None => {
                anyhow::bail!(
                    "the journal of {name} was cut off: the host, its agent or the server went away"
                )
            }
            Some(ReplyLine::KeepAlive) => continue,
            Some(ReplyLine::End { .. }) => return Ok(ExitCode::SUCCESS),
            Some(ReplyLine::Error { message }) => {
                anyhow::bail!(
                    "the journal of {name}: {}",
                    flotilla_proto::field::escape_controls(&message, &[])
                )
            }
            Some(ReplyLine::Entry(entry)) => {
                if ctx.output == Output::Json {
                    serde_json::to_writer(&mut out, &entry)?;
                    out.write_all(b"\n")?;
                } else {
                    out.write_all(journal_line(&entry).as_bytes())?;
                }
                out.flush()?;
            }
            Some(ReplyLine::Status(_)) => {}
        }
    }
}
