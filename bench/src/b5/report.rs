//! B5's figures: rates and rows of the report, and what the agent's
//! journal says of where its time went.

use std::time::{Duration, SystemTime};

use flotilla_testbed::Host;

use super::{CHANGE_GOAL_S, FLEET_POLL_S, RATE_MARGIN, SYSTEMD_RUN_S};
use crate::agent_host::AGENT_UNIT;
use crate::report::{Row, met, time_ratio};
use crate::stats::{Samples, count, dur};

/// A set of units started together: how many, in how long.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rate {
    pub(super) units: usize,
    pub(super) took: Duration,
}

impl Rate {
    pub(super) fn per_s(self) -> f64 {
        self.units as f64 / self.took.as_secs_f64().max(1e-9)
    }

    pub(super) fn describe(self) -> String {
        format!(
            "{}/s ({} in {})",
            per_second(self.per_s()),
            self.units,
            dur(self.took)
        )
    }
}

/// A rate for people: one decimal below 100.
pub(super) fn per_second(r: f64) -> String {
    if r < 100.0 {
        format!("{r:.1}")
    } else {
        count(r)
    }
}

pub(super) fn cold_row(
    case: String,
    rate: Rate,
    detail: &str,
    timeline: &Timeline,
    bare: String,
    best: f64,
) -> Row {
    let per_s = rate.per_s();
    Row {
        id: "B5",
        case,
        figure: format!(
            "{}/s: all {} active on the host {} after the agent started ({detail}); agent's journal: {}",
            per_second(per_s),
            rate.units,
            dur(rate.took),
            timeline.describe()
        ),
        anchor: format!(
            "systemd-run ~22 ms per transient service (45/s); bare D-Bus StartUnit on this host: {bare}"
        ),
        goal: format!(
            "converge at the rate systemd allows: >= {:.0}% of the best bare D-Bus rate ({}/s)",
            RATE_MARGIN * 100.0,
            per_second(best)
        ),
        ratio: format!(
            "{:.1}x systemd-run; {:.2}x the bare D-Bus rate ({})",
            per_s * SYSTEMD_RUN_S,
            per_s / best.max(1e-9),
            met(per_s >= RATE_MARGIN * best)
        ),
    }
}

/// The changes of one kind.
#[derive(Default)]
pub(super) struct Changes {
    pub(super) count: usize,
    /// From the API call's return to the unit running again on the host.
    pub(super) restarted: Samples,
    /// The API call itself.
    pub(super) put: Samples,
    /// From the API call's return until the API showed the new process.
    pub(super) server: Samples,
    pub(super) server_missed: usize,
    /// From the API call's return to the agent's "wrote" line.
    pub(super) to_written: Samples,
    /// From the "wrote" line to the agent's "restart ...: done" line.
    pub(super) written_to_done: Samples,
    pub(super) passes: usize,
}

impl Changes {
    pub(super) fn row(mut self, kind: &str, running: usize, mut bare: Samples) -> Row {
        let (p50, p99, max) = (
            self.restarted.percentile(50.0),
            self.restarted.percentile(99.0),
            self.restarted.max(),
        );
        let journal = if self.to_written.is_empty() {
            "not found".to_owned()
        } else {
            format!(
                "file written p50 {} (max {}) after the API call returned, then reload + restart done p50 {} (max {}); {} reconcile passes",
                dur(self.to_written.percentile(50.0)),
                dur(self.to_written.max()),
                dur(self.written_to_done.percentile(50.0)),
                dur(self.written_to_done.max()),
                self.passes
            )
        };
        Row {
            id: "B5",
            case: format!(
                "one change of a {kind} unit ({} changes, one at a time, {running} units running)",
                self.count
            ),
            figure: format!(
                "API call returned -> running again on the host with the new file: p50 {}, p99 {}, max {} (the PUT itself p50 {}; the API showed the new MainPID p50 {} after the return{}); agent's journal: {journal}; the same change done bare (write, Reload, RestartUnit): p50 {}",
                dur(p50),
                dur(p99),
                dur(max),
                dur(self.put.percentile(50.0)),
                dur(self.server.percentile(50.0)),
                if self.server_missed > 0 {
                    format!(", {} not within 10 s", self.server_missed)
                } else {
                    String::new()
                },
                dur(bare.percentile(50.0)),
            ),
            anchor: "fleet polled systemd every 1 s".to_owned(),
            goal: "one change applied < 200 ms".to_owned(),
            ratio: format!(
                "p99: {}",
                time_ratio(
                    p99.as_secs_f64(),
                    FLEET_POLL_S,
                    "fleet's 1 s poll",
                    CHANGE_GOAL_S
                )
            ),
        }
    }
}

/// New units submitted one at a time.
#[derive(Default)]
pub(super) struct NewUnits {
    /// Units running on the host meanwhile.
    pub(super) running: usize,
    /// From the API call's return to the unit active on the host.
    pub(super) active: Samples,
    /// The API call itself.
    pub(super) put: Samples,
    /// The agent's passes that changed something, and those that
    /// reloaded systemd.
    pub(super) passes: usize,
    pub(super) reloads: usize,
}

impl NewUnits {
    pub(super) fn row(mut self) -> Row {
        let (p50, p99, max) = (
            self.active.percentile(50.0),
            self.active.percentile(99.0),
            self.active.max(),
        );
        Row {
            id: "B5",
            case: format!(
                "a new plain unit, one at a time ({} units, {} running): a file systemd never loaded",
                self.active.len(),
                self.running
            ),
            figure: format!(
                "API call returned -> active on the host: p50 {}, p99 {}, max {} (the PUT itself p50 {}); the agent's passes: {}, of which reloaded systemd: {}",
                dur(p50),
                dur(p99),
                dur(max),
                dur(self.put.percentile(50.0)),
                self.passes,
                self.reloads
            ),
            anchor: "fleet polled systemd every 1 s".to_owned(),
            goal: "a change that needs no reload active < 200 ms".to_owned(),
            ratio: format!(
                "p99: {}",
                time_ratio(
                    p99.as_secs_f64(),
                    FLEET_POLL_S,
                    "fleet's 1 s poll",
                    CHANGE_GOAL_S
                )
            ),
        }
    }
}

/// A line of the agent's journal.
pub(super) struct Line {
    pub(super) at: SystemTime,
    pub(super) message: String,
}

/// The agent's journal since `since` (whole seconds before it).
pub(super) fn agent_journal(host: &Host, since: SystemTime) -> Vec<Line> {
    let _ = host.output(&["journalctl", "--sync"]);
    let secs = since
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let Ok(out) = host.output(&[
        "journalctl",
        "--no-pager",
        "-o",
        "json",
        "-u",
        AGENT_UNIT,
        "--since",
        &format!("@{secs}"),
    ]) else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let message = v.get("MESSAGE")?.as_str()?.to_owned();
            let micros: u64 = v.get("__REALTIME_TIMESTAMP")?.as_str()?.parse().ok()?;
            let at = SystemTime::UNIX_EPOCH + Duration::from_micros(micros);
            (at >= since).then_some(Line { at, message })
        })
        .collect()
}

/// What the agent's journal says of a cold start, from the agent's start.
#[derive(Default)]
pub(super) struct Timeline {
    pub(super) registered: Option<Duration>,
    pub(super) writes: Span,
    pub(super) starts: Span,
    pub(super) passes: Vec<(Duration, String)>,
    pub(super) warnings: usize,
    pub(super) first_warning: Option<String>,
}

/// The first and last of some lines, and how many.
#[derive(Default)]
pub(super) struct Span {
    pub(super) n: usize,
    pub(super) first: Option<Duration>,
    pub(super) last: Option<Duration>,
}

impl Span {
    pub(super) fn add(&mut self, at: Duration) {
        self.n += 1;
        self.first = Some(self.first.map_or(at, |f| f.min(at)));
        self.last = Some(self.last.map_or(at, |l| l.max(at)));
    }

    pub(super) fn describe(&self) -> String {
        match (self.first, self.last) {
            (Some(f), Some(l)) => format!("{} between +{} and +{}", self.n, dur(f), dur(l)),
            _ => "none".to_owned(),
        }
    }
}

impl Timeline {
    pub(super) fn read(host: &Host, since: SystemTime) -> Timeline {
        let mut t = Timeline::default();
        for line in agent_journal(host, since) {
            let at = line.at.duration_since(since).unwrap_or_default();
            let m = &line.message;
            if m.contains("machine registered") {
                t.registered.get_or_insert(at);
            } else if m.contains("wrote /run/systemd/system/b5-") {
                t.writes.add(at);
            } else if m.contains("start b5-") && m.contains(": ") {
                t.starts.add(at);
            } else if let Some(i) = m.find("reconciled") {
                t.passes
                    .push((at, m[i + "reconciled".len()..].trim().to_owned()));
            }
            if m.contains("WARN") || m.contains("ERROR") {
                t.warnings += 1;
                t.first_warning.get_or_insert_with(|| m.trim().to_owned());
            }
        }
        t
    }

    pub(super) fn describe(&self) -> String {
        let passes = self
            .passes
            .iter()
            .map(|(at, what)| format!("+{} ({what})", dur(*at)))
            .collect::<Vec<_>>()
            .join(", ");
        let mut out = format!(
            "registered +{}; files written: {}; start jobs done: {}; passes reported: {}",
            self.registered.map_or_else(|| "?".to_owned(), dur),
            self.writes.describe(),
            self.starts.describe(),
            if passes.is_empty() { "none" } else { &passes }
        );
        if self.warnings > 0 {
            out.push_str(&format!(
                "; {} warnings, the first: {}",
                self.warnings,
                self.first_warning.as_deref().unwrap_or_default()
            ));
        }
        out
    }
}
