//! flotilla's benchmarks against the published anchors (issue 7, and
//! `docs/benchmarks.md`). Run them with `scripts/bench`, which builds in
//! release, raises the open-files limit and cleans up whatever happens.
//!
//! - B1: placement decisions in memory.
//! - B2: placements committed to the store by the real reconcile loop
//!   (embedded store on disk and on tmpfs, a local etcd, and three raft
//!   stores in process over the servers' mutual-TLS peer transport).
//! - B3: leader failover among three `flotilla server` processes on etcd,
//!   and among three that replicate the store with raft.
//! - B4: machine loss: a machine's 1,000 units re-placed after its lease ends.
//! - B5: agent convergence on real systemd: the real agent in a test host
//!   (systemd-nspawn) starting 500 plain and 100 container units from
//!   cold, against bare D-Bus `StartUnit` calls on the same host, then one
//!   change at a time. Needs root.
//! - B6: fan-out to thousands of long-polling agents.
//! - B7: a server's memory after 3,000 replaces of one 250 KB unit.
//! - B8: side by side with CoreOS fleet 1.0 (built from its source and run
//!   here, on the same kind of test hosts): scheduling 300 units, machine
//!   loss, memory, listing. Needs root.
//!
//! Benchmarks measure; nothing here asserts a time.

mod access;
mod agent_host;
mod b1;
mod b2;
mod b3;
mod b3_raft;
mod b4;
mod b5;
mod b6;
mod b7;
mod b8;
mod b8_rows;
mod fleet;
mod hostbus;
mod procs;
mod raft_cluster;
mod report;
mod stats;
mod stores;
mod workload;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

use crate::report::{MachineInfo, Row};
use crate::stats::dur;
use crate::stores::{Backend, filesystem_of};

/// Runs flotilla's benchmarks and prints each figure beside its anchor.
#[derive(Debug, Parser)]
#[command(name = "flotilla-bench")]
struct Args {
    /// Rows to run: B1 B2 B3 B4 B5 B6 B7 B8 (default: all). B5 and B8
    /// need root.
    rows: Vec<String>,

    /// Smaller sizes, for a smoke run of every row in a few minutes.
    #[arg(long)]
    quick: bool,

    /// The `flotilla` binary (B3, B5 and B6 start `flotilla server`; B5
    /// runs `flotilla agent` in its host) [default: next to this binary].
    #[arg(long, value_name = "PATH")]
    flotilla: Option<PathBuf>,

    /// A directory on the real disk for data [default: /var/tmp].
    #[arg(long, value_name = "DIR", default_value = "/var/tmp")]
    disk: PathBuf,

    /// A directory on a tmpfs for data [default: /dev/shm].
    #[arg(long, value_name = "DIR", default_value = "/dev/shm")]
    tmpfs: PathBuf,

    /// B1: machine counts (comma-separated) [default: 5000,10000].
    #[arg(long, value_delimiter = ',')]
    b1_machines: Vec<usize>,

    /// B1 and B2 (embedded): groups of 1,000 units [default: 1000].
    #[arg(long)]
    groups: Option<usize>,

    /// B2 on etcd: groups of 1,000 units [default: 200].
    #[arg(long)]
    etcd_groups: Option<usize>,

    /// B2 on raft (three stores in process): groups of 1,000 units
    /// [default: 200].
    #[arg(long)]
    raft_groups: Option<usize>,

    /// B3: the stores to run it on (comma-separated): etcd, raft
    /// [default: etcd,raft].
    #[arg(long, value_delimiter = ',', value_parser = ["etcd", "raft"])]
    b3_stores: Vec<String>,

    /// B3: units placed when the leader is killed [default: 100000].
    #[arg(long)]
    b3_units: Option<usize>,

    /// B4: machines, each holding 1,000 units [default: 100].
    #[arg(long)]
    b4_machines: Option<usize>,

    /// B4: the stores to run it on (comma-separated): embedded, etcd
    /// [default: embedded,etcd].
    #[arg(long, value_delimiter = ',', value_parser = ["embedded", "etcd"])]
    b4_stores: Vec<String>,

    /// B5: plain units [default: 500].
    #[arg(long)]
    b5_plain: Option<usize>,

    /// B5: container units [default: 100].
    #[arg(long)]
    b5_containers: Option<usize>,

    /// B5: changes of one plain unit, one at a time [default: 20]; a
    /// quarter as many (at least one) of a container unit; as many new
    /// plain units, one at a time.
    #[arg(long)]
    b5_changes: Option<usize>,

    /// B6: simulated agents, one run per count (comma-separated)
    /// [default: 1000,5000]. Each run has two assignment changes per agent.
    #[arg(long, value_delimiter = ',')]
    agents: Vec<usize>,

    /// B6: run on the real disk as well as on tmpfs.
    #[arg(long)]
    b6_disk: bool,

    /// B7: replaces of the large unit [default: 3000].
    #[arg(long)]
    b7_replaces: Option<usize>,

    /// B8: plain units scheduled by fleet and by flotilla [default: 300].
    #[arg(long)]
    b8_units: Option<usize>,

    /// B8: rounds, each running fleet and flotilla one after the other,
    /// in alternating order [default: 2].
    #[arg(long)]
    b8_rounds: Option<usize>,

    /// Keep the logs of the processes started (B3, B6, B8; for B8 also
    /// each host's agent journal and when the schedule step started) for a
    /// look after the run: they are copied here.
    #[arg(long, value_name = "DIR")]
    keep_logs: Option<PathBuf>,

    /// Write the results table (Markdown) and the machine to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// Sizes of one run.
struct Sizes {
    b1_machines: Vec<usize>,
    groups: usize,
    etcd_groups: usize,
    raft_groups: usize,
    b2_machines: usize,
    b3_units: usize,
    b3_stores: Vec<String>,
    b3_machines: usize,
    b4_machines: usize,
    b4_stores: Vec<String>,
    b5_plain: usize,
    b5_containers: usize,
    b5_changes: usize,
    agents: Vec<usize>,
    parking: usize,
    submits: usize,
    b7_replaces: usize,
    b8_units: usize,
    b8_rounds: usize,
    b8_listings: usize,
}

impl Sizes {
    fn of(args: &Args) -> Sizes {
        let quick = args.quick;
        Sizes {
            b1_machines: if args.b1_machines.is_empty() {
                if quick {
                    vec![2_000, 5_000]
                } else {
                    vec![5_000, 10_000]
                }
            } else {
                args.b1_machines.clone()
            },
            groups: args.groups.unwrap_or(if quick { 100 } else { 1_000 }),
            etcd_groups: args.etcd_groups.unwrap_or(if quick { 20 } else { 200 }),
            raft_groups: args.raft_groups.unwrap_or(if quick { 20 } else { 200 }),
            b2_machines: if quick { 2_000 } else { 5_000 },
            b3_units: args
                .b3_units
                .unwrap_or(if quick { 10_000 } else { 100_000 }),
            b3_machines: 100,
            b3_stores: if args.b3_stores.is_empty() {
                vec!["etcd".to_owned(), "raft".to_owned()]
            } else {
                args.b3_stores.clone()
            },
            b4_machines: args.b4_machines.unwrap_or(if quick { 10 } else { 100 }),
            b4_stores: if args.b4_stores.is_empty() {
                vec!["embedded".to_owned(), "etcd".to_owned()]
            } else {
                args.b4_stores.clone()
            },
            b5_plain: args.b5_plain.unwrap_or(if quick { 50 } else { 500 }),
            b5_containers: args.b5_containers.unwrap_or(if quick { 10 } else { 100 }),
            b5_changes: args.b5_changes.unwrap_or(if quick { 5 } else { 20 }),
            agents: if !args.agents.is_empty() {
                args.agents.clone()
            } else if quick {
                vec![500]
            } else {
                vec![1_000, 5_000]
            },
            parking: if quick { 2 } else { 10 },
            submits: if quick { 3 } else { 5 },
            b7_replaces: args.b7_replaces.unwrap_or(if quick { 500 } else { 3_000 }),
            b8_units: args.b8_units.unwrap_or(if quick { 60 } else { 300 }),
            b8_rounds: args.b8_rounds.unwrap_or(if quick { 1 } else { 2 }),
            b8_listings: if quick { 5 } else { 10 },
        }
    }
}

const ALL: [&str; 8] = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8"];

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .with_writer(std::io::stderr)
        .init();
    let rows: Vec<String> = if args.rows.is_empty() {
        ALL.iter().map(|s| (*s).to_owned()).collect()
    } else {
        args.rows.iter().map(|r| r.to_uppercase()).collect()
    };
    for r in &rows {
        if !ALL.contains(&r.as_str()) {
            anyhow::bail!("unknown row {r}: the rows are {}", ALL.join(" "));
        }
    }
    let sizes = Sizes::of(&args);
    if let Some(dir) = &args.keep_logs {
        procs::keep_logs(dir.clone());
    }
    let machine = MachineInfo::read();
    println!("machine: {}", machine.describe());
    println!(
        "data: real disk {} ({}), tmpfs {} ({})",
        args.disk.display(),
        filesystem_of(&args.disk),
        args.tmpfs.display(),
        filesystem_of(&args.tmpfs)
    );
    let disk = work_dir(&args.disk)?;
    let tmpfs = work_dir(&args.tmpfs)?;
    let flotilla = match &args.flotilla {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("this binary has no directory")?
            .join("flotilla"),
    };

    let started = Instant::now();
    let mut results: Vec<Row> = Vec::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    for r in &rows {
        let t = Instant::now();
        let out = match r.as_str() {
            "B1" => b1::run(&b1::Config {
                machines: sizes.b1_machines.clone(),
                groups: sizes.groups,
                per_group: 1_000,
            }),
            "B2" => runtime.block_on(run_b2(&sizes, &disk, &tmpfs)),
            "B3" => runtime.block_on(run_b3(&sizes, &flotilla, &disk)),
            "B4" => runtime.block_on(run_b4(&sizes, &disk, &tmpfs)),
            "B5" => runtime.block_on(b5::run(&b5::Config {
                flotilla: flotilla.clone(),
                data_parent: tmpfs.clone(),
                plain: sizes.b5_plain,
                containers: sizes.b5_containers,
                changes: sizes.b5_changes,
                container_changes: sizes.b5_changes.div_ceil(4),
                new_units: sizes.b5_changes,
            })),
            "B6" => runtime.block_on(run_b6(&sizes, &flotilla, &disk, &tmpfs, args.b6_disk)),
            "B7" => runtime.block_on(b7::run(&b7::Config {
                flotilla: flotilla.clone(),
                data_parent: tmpfs.clone(),
                replaces: sizes.b7_replaces,
                unit_bytes: 250 * 1000,
            })),
            "B8" => runtime.block_on(b8::run(&b8::Config {
                flotilla: flotilla.clone(),
                work: disk.clone(),
                units: sizes.b8_units,
                hosts: 3,
                rounds: sizes.b8_rounds,
                machine_ttl: Duration::from_secs(5),
                listings: sizes.b8_listings,
            })),
            _ => unreachable!("rows are checked above"),
        };
        match out {
            Ok(rs) => {
                for row in &rs {
                    row.announce();
                }
                results.extend(rs);
            }
            Err(e) => {
                println!("  => {r} FAILED: {e:#}");
                results.push(failed(r, &e));
            }
        }
        println!("({r} took {})\n", dur(t.elapsed()));
    }
    drop(runtime);
    let _ = std::fs::remove_dir_all(&disk);
    let _ = std::fs::remove_dir_all(&tmpfs);

    let table = report::table(&results);
    let summary = format!(
        "Machine: {}\nLoad average at the end: {}\nTotal time: {}\n\n{}",
        machine.describe(),
        report::load_average(),
        dur(started.elapsed()),
        table
    );
    println!("{summary}");
    if let Some(path) = &args.out {
        std::fs::write(path, &summary)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn failed(id: &str, e: &anyhow::Error) -> Row {
    let id = ALL.iter().find(|a| **a == id).copied().unwrap_or("B?");
    Row {
        id,
        case: "failed".to_owned(),
        figure: format!("FAILED: {e:#}"),
        anchor: String::new(),
        goal: String::new(),
        ratio: String::new(),
    }
}

/// A directory of this run under `parent`, removed at the end.
fn work_dir(parent: &Path) -> anyhow::Result<PathBuf> {
    let dir = parent.join(format!("flotilla-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

async fn run_b2(sizes: &Sizes, disk: &Path, tmpfs: &Path) -> anyhow::Result<Vec<Row>> {
    let cases = [
        (
            "embedded store, real disk",
            Backend::Embedded(disk.to_owned()),
            true,
            sizes.groups,
        ),
        (
            "embedded store, tmpfs",
            Backend::Embedded(tmpfs.to_owned()),
            true,
            sizes.groups,
        ),
        (
            "etcd, real disk",
            Backend::Etcd(disk.to_owned()),
            false,
            sizes.etcd_groups,
        ),
        (
            "etcd, tmpfs",
            Backend::Etcd(tmpfs.to_owned()),
            false,
            sizes.etcd_groups,
        ),
        (
            "raft, 3 stores in process over mutual TLS, real disk",
            Backend::Raft(disk.to_owned()),
            false,
            sizes.raft_groups,
        ),
        (
            "raft, 3 stores in process over mutual TLS, tmpfs",
            Backend::Raft(tmpfs.to_owned()),
            false,
            sizes.raft_groups,
        ),
    ];
    let mut rows = Vec::new();
    for (label, backend, embedded, groups) in cases {
        let case = b2::Case {
            label: label.to_owned(),
            backend,
            embedded,
            machines: sizes.b2_machines,
            groups,
            per_group: 1_000,
        };
        match b2::run(&case).await {
            Ok(row) => rows.push(row),
            Err(e) => {
                println!("  B2 {label} FAILED: {e:#}");
                let mut row = failed("B2", &e);
                row.case = label.to_owned();
                rows.push(row);
            }
        }
    }
    Ok(rows)
}

/// B3 on etcd, then on raft.
async fn run_b3(sizes: &Sizes, flotilla: &Path, disk: &Path) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut outs = Vec::new();
    if sizes.b3_stores.iter().any(|s| s == "etcd") {
        let out = b3::run(&b3::Config {
            flotilla: flotilla.to_owned(),
            work: disk.to_owned(),
            units: sizes.b3_units,
            machines: sizes.b3_machines,
            servers: 3,
            leader_ttl: "1s",
        })
        .await;
        outs.push(("etcd", out));
    }
    if sizes.b3_stores.iter().any(|s| s == "raft") {
        let out = b3_raft::run(&b3_raft::Config {
            flotilla: flotilla.to_owned(),
            work: disk.to_owned(),
            units: sizes.b3_units,
            machines: sizes.b3_machines,
            rounds: 2,
        })
        .await;
        outs.push(("raft", out));
    }
    for (label, out) in outs {
        match out {
            Ok(r) => rows.extend(r),
            Err(e) => {
                println!("  B3 on {label} FAILED: {e:#}");
                let mut row = failed("B3", &e);
                row.case = format!("on {label}");
                rows.push(row);
            }
        }
    }
    Ok(rows)
}

async fn run_b4(sizes: &Sizes, disk: &Path, tmpfs: &Path) -> anyhow::Result<Vec<Row>> {
    let cases = [
        (
            "embedded store, real disk",
            Backend::Embedded(disk.to_owned()),
            true,
        ),
        (
            "embedded store, tmpfs",
            Backend::Embedded(tmpfs.to_owned()),
            true,
        ),
        ("etcd, real disk", Backend::Etcd(disk.to_owned()), true),
        ("etcd, real disk", Backend::Etcd(disk.to_owned()), false),
    ];
    let mut rows = Vec::new();
    for (label, backend, states) in cases {
        let store = match backend {
            Backend::Etcd(_) => "etcd",
            _ => "embedded",
        };
        if !sizes.b4_stores.iter().any(|s| s == store) {
            continue;
        }
        let case = b4::Case {
            label: label.to_owned(),
            backend,
            machines: sizes.b4_machines,
            per_machine: 1_000,
            states,
            deaths: 3,
        };
        match b4::run(&case).await {
            Ok(row) => rows.push(row),
            Err(e) => {
                println!("  B4 {label} FAILED: {e:#}");
                let mut row = failed("B4", &e);
                row.case = label.to_owned();
                rows.push(row);
            }
        }
    }
    Ok(rows)
}

async fn run_b6(
    sizes: &Sizes,
    flotilla: &Path,
    disk: &Path,
    tmpfs: &Path,
    with_disk: bool,
) -> anyhow::Result<Vec<Row>> {
    let mut places = vec![("embedded store, tmpfs", tmpfs)];
    if with_disk {
        places.push(("embedded store, real disk", disk));
    }
    let mut rows = Vec::new();
    let runs = places
        .iter()
        .flat_map(|p| sizes.agents.iter().map(move |a| (*p, *a)));
    for ((label, parent), agents) in runs {
        let config = b6::Config {
            flotilla: flotilla.to_owned(),
            data_parent: parent.to_owned(),
            label: label.to_owned(),
            agents,
            parking: sizes.parking,
            // Two changes per agent, in `parking` waves.
            per_parking: (2 * agents).div_ceil(sizes.parking.max(1)),
            wave: Duration::from_secs(1),
            submits: sizes.submits,
        };
        println!(
            "B6 {label}: {} agents, {} x {} changes",
            config.agents, config.parking, config.per_parking
        );
        match b6::run(&config).await {
            Ok(r) => rows.extend(r),
            Err(e) => {
                println!("  B6 {label} FAILED: {e:#}");
                let mut row = failed("B6", &e);
                row.case = label.to_owned();
                rows.push(row);
            }
        }
    }
    Ok(rows)
}
