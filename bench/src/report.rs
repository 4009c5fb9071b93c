//! The rows the benchmarks produce, the machine they ran on, and the table
//! printed at the end.

use std::fmt::Write as _;

/// One line of the results table.
#[derive(Debug, Clone)]
pub struct Row {
    /// `B1`..`B6`.
    pub id: &'static str,
    /// Which variant: strategy, store, size.
    pub case: String,
    /// The measured figure(s).
    pub figure: String,
    /// The published anchor it is compared with.
    pub anchor: String,
    /// Our goal.
    pub goal: String,
    /// How the figure compares: with the anchor, and whether the goal is met.
    pub ratio: String,
}

impl Row {
    /// Prints the row as it is produced, so a long run shows progress.
    pub fn announce(&self) {
        println!(
            "  => {} {}: {}\n     anchor: {} | goal: {} | {}",
            self.id, self.case, self.figure, self.anchor, self.goal, self.ratio
        );
    }
}

/// A throughput against an anchor and a goal, both in the same unit:
/// "40.0x anchor, 1.52x goal (met)".
pub fn rate_ratio(figure: f64, anchor: f64, anchor_name: &str, goal: f64) -> String {
    format!(
        "{:.1}x {anchor_name}; {:.2}x goal ({})",
        figure / anchor,
        figure / goal,
        met(figure >= goal)
    )
}

/// A time against an anchor and a goal (smaller is better): "3.3x faster
/// than anchor, 0.8x goal (missed)", where the goal ratio is goal / figure.
pub fn time_ratio(figure_s: f64, anchor_s: f64, anchor_name: &str, goal_s: f64) -> String {
    if figure_s <= 0.0 {
        return "no figure".to_owned();
    }
    format!(
        "{:.1}x faster than {anchor_name}; goal/figure {:.2} ({})",
        anchor_s / figure_s,
        goal_s / figure_s,
        met(figure_s < goal_s)
    )
}

pub fn met(ok: bool) -> &'static str {
    if ok { "goal met" } else { "goal MISSED" }
}

/// What the benchmarks ran on.
#[derive(Debug, Clone)]
pub struct MachineInfo {
    pub cores: usize,
    pub memory_bytes: u64,
    pub cpu_model: String,
    pub kernel: String,
    pub load: String,
}

impl MachineInfo {
    pub fn read() -> MachineInfo {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_bytes = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024);
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        MachineInfo {
            cores,
            memory_bytes,
            cpu_model,
            kernel,
            load: load_average(),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "{} cores (available_parallelism), {:.1} GiB memory (MemTotal), {}, Linux {}, load average at start {}",
            self.cores,
            self.memory_bytes as f64 / (1u64 << 30) as f64,
            self.cpu_model,
            self.kernel,
            self.load
        )
    }
}

/// The 1, 5 and 15 minute load averages: how busy the shared machine was.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The results as a Markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str("| id | case | figure | anchor | goal | ratio |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            r.id,
            cell(&r.case),
            cell(&r.figure),
            cell(&r.anchor),
            cell(&r.goal),
            cell(&r.ratio)
        );
    }
    out
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', "<br>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_say_which_way() {
        let r = rate_ratio(200_000.0, 3_750.0, "Nomad C1M", 100_000.0);
        assert!(
            r.starts_with("53.3x Nomad C1M; 2.00x goal (goal met)"),
            "{r}"
        );
        let t = time_ratio(2.0, 10.0, "Borg", 3.0);
        assert!(t.starts_with("5.0x faster than Borg"), "{t}");
        assert!(t.ends_with("(goal met)"), "{t}");
        assert!(time_ratio(4.0, 10.0, "Borg", 3.0).ends_with("(goal MISSED)"));
    }

    #[test]
    fn the_table_escapes_pipes() {
        let row = Row {
            id: "B1",
            case: "a|b".into(),
            figure: "1".into(),
            anchor: "2".into(),
            goal: "3".into(),
            ratio: "4".into(),
        };
        assert!(table(&[row]).contains("a\\|b"));
    }

    #[test]
    fn the_machine_is_described() {
        let m = MachineInfo::read();
        assert!(m.cores >= 1);
        assert!(m.describe().contains("cores"));
    }
}
