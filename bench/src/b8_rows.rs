//! B8's figures and rows: one row per measure and system, fleet 1.0's
//! first, then flotilla's with the ratio between the two (both measured in
//! the same run).

use std::time::Duration;

use crate::b8::{Config, System};
use crate::report::{Row, met};
use crate::stats::{Samples, bytes, dur};

/// What one round measured of one system.
#[derive(Debug, Default, Clone)]
pub struct Measures {
    /// When the CLI's `start --no-block` returned.
    pub submit_returned: Duration,
    /// From the CLI's start until the API reported every unit active.
    pub scheduled_api: Duration,
    /// ... until the hosts' systemd ran them all.
    pub scheduled_hosts: Duration,
    /// Units per host.
    pub spread: Vec<usize>,
    /// Each host's agent (fleetd, the flotilla agent): `VmRSS`.
    pub agent_rss: Vec<u64>,
    /// The part of each `VmRSS` mapped from files (`RssFile`): the
    /// binary's code and data, shared libraries.
    pub agent_file: Vec<u64>,
    /// CPU each agent used while idle for `settle`.
    pub agent_idle_cpu: Vec<Duration>,
    /// The server's (etcd's for fleet) `VmRSS`.
    pub server_rss: u64,
    pub server_idle_cpu: Duration,
    pub settle: Duration,
    /// `list-units` runs, each process's wall time.
    pub list_cli: Samples,
    /// The API calls alone.
    pub list_api: Samples,
    /// The units on the host that died.
    pub victim_units: usize,
    /// From the kill until the API reported every unit active elsewhere.
    pub loss_api: Duration,
    /// ... until the other hosts' systemd ran them all.
    pub loss_hosts: Duration,
}

impl Measures {
    pub fn describe(&self) -> String {
        format!(
            "schedule {} (hosts {}), loss of {} units {} (hosts {}), agent RSS {}, server RSS {}, list-units p50 {}, API p50 {}",
            dur(self.scheduled_api),
            dur(self.scheduled_hosts),
            self.victim_units,
            dur(self.loss_api),
            dur(self.loss_hosts),
            bytes(mean(&self.agent_rss)),
            bytes(self.server_rss as f64),
            dur(self.list_cli.clone().percentile(50.0)),
            dur(self.list_api.clone().percentile(50.0)),
        )
    }
}

fn mean(v: &[u64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<u64>() as f64 / v.len() as f64
    }
}

/// The median of some values (the mean of the middle two for an even
/// count); zero when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// What a measure is, which says how two figures compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A time: "6.2x faster than fleet 1.0", or "1.5x slower".
    Time,
    /// Bytes held: "0.45x fleet 1.0's".
    Memory,
}

/// flotilla's figure against fleet's, smaller being better.
pub fn versus(kind: Kind, fleet: f64, flotilla: f64) -> String {
    if fleet <= 0.0 || flotilla <= 0.0 {
        return "no figure".to_owned();
    }
    match kind {
        Kind::Time if flotilla <= fleet => {
            format!("{:.1}x faster than fleet 1.0", fleet / flotilla)
        }
        Kind::Time => format!("{:.1}x slower than fleet 1.0", flotilla / fleet),
        Kind::Memory => format!("{:.2}x fleet 1.0's", flotilla / fleet),
    }
}

/// Seconds for a list of rounds: "12.3 s (rounds: 12.3 s, 14.1 s)".
fn times(values: &[Duration]) -> String {
    let m = median(&values.iter().map(Duration::as_secs_f64).collect::<Vec<_>>());
    if values.len() < 2 {
        return dur(Duration::from_secs_f64(m));
    }
    format!(
        "median {} (rounds: {})",
        dur(Duration::from_secs_f64(m)),
        values
            .iter()
            .map(|d| dur(*d))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// One measure of both systems: each system's figure (the median over
/// rounds, in seconds or bytes) and its row's text.
struct Pair {
    case: String,
    fleet: (f64, String),
    flotilla: (f64, String),
    kind: Kind,
}

impl Pair {
    fn rows(self) -> [Row; 2] {
        let (show, goal) = match self.kind {
            Kind::Time => (secs(self.fleet.0), "faster than fleet 1.0"),
            Kind::Memory => (bytes(self.fleet.0), "less memory than fleet 1.0"),
        };
        let fleet_row = Row {
            id: "B8",
            case: format!("{}, {}", self.case, System::Fleet.label()),
            figure: self.fleet.1,
            anchor: "measured in this run, same hosts (no published figure)".to_owned(),
            goal: "the reference for the flotilla row".to_owned(),
            ratio: "1.0x (reference)".to_owned(),
        };
        let flotilla_row = Row {
            id: "B8",
            case: format!("{}, {}", self.case, System::Flotilla.label()),
            figure: self.flotilla.1,
            anchor: format!("fleet 1.0 in this run: {show}"),
            goal: goal.to_owned(),
            ratio: format!(
                "{} ({})",
                versus(self.kind, self.fleet.0, self.flotilla.0),
                met(self.flotilla.0 < self.fleet.0)
            ),
        };
        [fleet_row, flotilla_row]
    }
}

fn secs(d: f64) -> String {
    dur(Duration::from_secs_f64(d.max(0.0)))
}

/// CPU time as the kernel counts it, in ticks of 10 ms.
fn cpu_time(d: f64) -> String {
    if d <= 0.0 {
        "0 (under one 10 ms tick)".to_owned()
    } else {
        secs(d)
    }
}

/// A per-round duration's median, in seconds.
fn median_of(runs: &[Measures], f: fn(&Measures) -> Duration) -> f64 {
    median(&runs.iter().map(|m| f(m).as_secs_f64()).collect::<Vec<_>>())
}

/// Every sample of every round, pooled.
fn pooled(runs: &[Measures], f: fn(&Measures) -> &Samples) -> Samples {
    let mut all = Samples::default();
    for m in runs {
        all.extend_from(f(m));
    }
    all
}

pub fn rows(config: &Config, fleet: &[Measures], flotilla: &[Measures]) -> Vec<Row> {
    let n = config.units;
    let hosts = config.hosts;
    let ttl = config.machine_ttl.as_secs();
    let schedule = |runs: &[Measures], api: &str| {
        let f = |g: fn(&Measures) -> Duration| times(&runs.iter().map(g).collect::<Vec<_>>());
        let spread = runs
            .iter()
            .map(|m| {
                m.spread
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .collect::<Vec<_>>()
            .join(", ");
        (
            median_of(runs, |m| m.scheduled_api),
            format!(
                "all {n} active per {api}: {} after the CLI's `start --no-block` began; the CLI returned after {}; all running in the hosts' systemd after {}; units per host {spread}",
                f(|m| m.scheduled_api),
                f(|m| m.submit_returned),
                f(|m| m.scheduled_hosts),
            ),
        )
    };
    let loss = |runs: &[Measures], api: &str| {
        let f = |g: fn(&Measures) -> Duration| times(&runs.iter().map(g).collect::<Vec<_>>());
        let moved = runs
            .iter()
            .map(|m| m.victim_units.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        (
            median_of(runs, |m| m.loss_api),
            format!(
                "its units ({moved}) all active on the other hosts per {api} {} after the kill; running in their systemd after {}",
                f(|m| m.loss_api),
                f(|m| m.loss_hosts),
            ),
        )
    };
    let agent = |runs: &[Measures], what: &str| {
        let all: Vec<f64> = runs
            .iter()
            .flat_map(|m| m.agent_rss.iter().map(|b| *b as f64))
            .collect();
        let per_round = runs
            .iter()
            .map(|m| {
                m.agent_rss
                    .iter()
                    .map(|b| bytes(*b as f64))
                    .collect::<Vec<_>>()
                    .join(" / ")
            })
            .collect::<Vec<_>>()
            .join("; ");
        let cpu: Vec<f64> = runs
            .iter()
            .flat_map(|m| m.agent_idle_cpu.iter().map(Duration::as_secs_f64))
            .collect();
        let file: Vec<f64> = runs
            .iter()
            .flat_map(|m| m.agent_file.iter().map(|b| *b as f64))
            .collect();
        let settle = runs.first().map_or(Duration::ZERO, |m| m.settle);
        (
            median(&all),
            format!(
                "{what} VmRSS median {} (per host: {per_round}), of which mapped from files (code, libraries) median {}; CPU used idle over {}: median {} per host",
                bytes(median(&all)),
                bytes(median(&file)),
                dur(settle),
                cpu_time(median(&cpu)),
            ),
        )
    };
    let server = |runs: &[Measures], what: &str| {
        let all: Vec<f64> = runs.iter().map(|m| m.server_rss as f64).collect();
        let cpu: Vec<f64> = runs
            .iter()
            .map(|m| m.server_idle_cpu.as_secs_f64())
            .collect();
        let settle = runs.first().map_or(Duration::ZERO, |m| m.settle);
        (
            median(&all),
            format!(
                "{what} VmRSS {} (rounds: {}); CPU used idle over {}: {}",
                bytes(median(&all)),
                all.iter().map(|b| bytes(*b)).collect::<Vec<_>>().join(", "),
                dur(settle),
                cpu_time(median(&cpu)),
            ),
        )
    };
    let listing = |runs: &[Measures], f: fn(&Measures) -> &Samples, what: &str| {
        let mut all = pooled(runs, f);
        let p50 = all.percentile(50.0);
        (
            p50.as_secs_f64(),
            format!(
                "{what}: median {} of {} runs (min {}, max {})",
                dur(p50),
                all.len(),
                dur(all.percentile(0.0)),
                dur(all.max()),
            ),
        )
    };
    let pairs = [
        Pair {
            case: format!("schedule {n} plain units on {hosts} hosts, submit to all active"),
            fleet: schedule(fleet, "fleet's API (GET /fleet/v1/state)"),
            flotilla: schedule(flotilla, "GET /v1/state"),
            kind: Kind::Time,
        },
        Pair {
            case: format!(
                "machine loss: 1 of {hosts} hosts killed (SIGKILL of its systemd), machine TTL {ttl} s, to all {n} active again"
            ),
            fleet: loss(fleet, "fleet's API"),
            flotilla: loss(flotilla, "GET /v1/state"),
            kind: Kind::Time,
        },
        Pair {
            case: format!("memory of the agent on a host, {n} units in the cluster"),
            fleet: agent(fleet, "fleetd (agent, API and engine candidate in one)"),
            flotilla: agent(flotilla, "flotilla agent"),
            kind: Kind::Memory,
        },
        Pair {
            case: format!("memory of the server, {n} units"),
            fleet: server(
                fleet,
                "etcd 3.4 with --enable-v2, fleet's store (fleet has no separate server):",
            ),
            flotilla: server(flotilla, "flotilla server, embedded store:"),
            kind: Kind::Memory,
        },
        Pair {
            case: format!("`list-units` with {n} units, the CLI as a user runs it"),
            fleet: listing(
                fleet,
                |m| &m.list_cli,
                "`fleetctl list-units` (plain HTTP to fleetd's API)",
            ),
            flotilla: listing(
                flotilla,
                |m| &m.list_cli,
                "`flotilla list-units` (HTTPS, CA and token read from files)",
            ),
            kind: Kind::Time,
        },
        Pair {
            case: format!("the API call alone: every unit state, {n} units"),
            fleet: listing(
                fleet,
                |m| &m.list_api,
                "GET /fleet/v1/state, every page of 100, a new connection per page",
            ),
            flotilla: listing(
                flotilla,
                |m| &m.list_api,
                "GET /v1/state, every page, HTTPS over a kept connection",
            ),
            kind: Kind::Time,
        },
    ];
    pairs.into_iter().flat_map(Pair::rows).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn the_ratio_says_which_way() {
        assert_eq!(versus(Kind::Time, 10.0, 2.0), "5.0x faster than fleet 1.0");
        assert_eq!(versus(Kind::Time, 2.0, 3.0), "1.5x slower than fleet 1.0");
        assert_eq!(versus(Kind::Memory, 20.0, 9.0), "0.45x fleet 1.0's");
        assert_eq!(versus(Kind::Time, 0.0, 3.0), "no figure");
    }

    fn measures(secs: u64) -> Measures {
        let mut m = Measures {
            scheduled_api: Duration::from_secs(secs),
            scheduled_hosts: Duration::from_secs(secs),
            submit_returned: Duration::from_secs(1),
            spread: vec![1, 1, 1],
            agent_rss: vec![10 << 20, 12 << 20, 14 << 20],
            agent_file: vec![8 << 20, 9 << 20, 10 << 20],
            agent_idle_cpu: vec![Duration::from_millis(5); 3],
            server_rss: 30 << 20,
            settle: Duration::from_secs(10),
            victim_units: 1,
            loss_api: Duration::from_secs(secs),
            loss_hosts: Duration::from_secs(secs),
            ..Measures::default()
        };
        m.list_cli.push(Duration::from_millis(secs));
        m.list_api.push(Duration::from_millis(secs));
        m
    }

    #[test]
    fn rows_come_in_pairs_with_the_ratio_on_flotillas() {
        let config = Config {
            flotilla: "flotilla".into(),
            work: "/nonexistent".into(),
            units: 3,
            hosts: 3,
            rounds: 2,
            machine_ttl: Duration::from_secs(5),
            listings: 1,
        };
        let rows = rows(
            &config,
            &[measures(10), measures(12)],
            &[measures(2), measures(2)],
        );
        assert_eq!(rows.len(), 12);
        assert!(rows[0].case.ends_with(", fleet 1.0"), "{}", rows[0].case);
        assert!(rows[1].case.ends_with(", flotilla"), "{}", rows[1].case);
        assert!(
            rows[0].figure.contains("median 11.00 s"),
            "{}",
            rows[0].figure
        );
        assert!(
            rows[1]
                .ratio
                .starts_with("5.5x faster than fleet 1.0 (goal met)"),
            "{}",
            rows[1].ratio
        );
        // Same memory on both sides: not less, so the goal is missed.
        assert!(rows[5].ratio.contains("goal MISSED"), "{}", rows[5].ratio);
        assert!(rows[3].case.contains("machine TTL 5 s"), "{}", rows[3].case);
    }
}
