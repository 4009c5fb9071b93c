//! B7: a server's memory under large replaces. One `flotilla server`
//! process (embedded store) and one unit of about 250 KB replaced
//! `replaces` times through the API, one call at a time, as an operator
//! re-submitting a large unit would.
//!
//! The server's resident memory (`VmRSS` of the process) is read once it
//! serves, after the replaces, and its peak (`VmHWM`). Each replace is a
//! new value in the store and an event (with the value and the previous
//! value) in the watch history: with a history bounded only by count,
//! 3,000 replaces grew a server from 27 MB to 822 MB and it stayed there.
//! The history's byte bound (64 MiB by default) caps what it keeps; the
//! figure is what the process holds, allocator included. Nothing here
//! asserts a size.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use flotilla_proto::wire::UnitPut;
use flotilla_proto::{DesiredState, UnitName};

use crate::procs::ServerProc;
use crate::report::{Row, met};
use crate::stats::{bytes, count, dur};

pub struct Config {
    pub flotilla: PathBuf,
    /// Where the server's data directory goes.
    pub data_parent: PathBuf,
    /// How many times the unit is replaced.
    pub replaces: usize,
    /// The unit file's size in bytes (at most 256 KiB, flotilla's limit).
    pub unit_bytes: usize,
}

/// Before the history had a byte bound: 27 MB at start, 822 MB after
/// 3,000 replaces of a 250 KB unit.
const ANCHOR: &str =
    "history bounded by count only: 27 MB at start, 822 MB after 3,000 replaces of a 250 KB unit";

/// The goal: the history's 64 MiB bound, the store's copy and the
/// allocator's slack over what the server holds at start.
const GOAL_GROWTH: u64 = 150 * 1024 * 1024;

pub async fn run(config: &Config) -> anyhow::Result<Vec<Row>> {
    let dir = config
        .data_parent
        .join(format!("b7-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let args = vec![
        "--data-dir".to_owned(),
        dir.join("data").display().to_string(),
    ];
    let result = match ServerProc::start(
        &config.flotilla,
        &args,
        "warn",
        &dir.join("server.log"),
        None,
    ) {
        Ok(server) => {
            let r = measure(config, &server).await;
            drop(server);
            r
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// A unit file of `size` bytes: a service padded with comment lines, the
/// first of which carries `round` so that every replace changes it.
fn unit_text(size: usize, round: usize) -> String {
    let mut text = format!(
        "[Unit]\nDescription=a large unit\n# round {round:08}\n[Service]\nExecStart=/bin/true\n"
    );
    let line = format!("# {}\n", "x".repeat(97));
    while text.len() + line.len() <= size {
        text.push_str(&line);
    }
    text
}

async fn measure(config: &Config, server: &ServerProc) -> anyhow::Result<Vec<Row>> {
    // As an operator: over HTTPS with the cluster's first admin token,
    // once the server answers.
    let client = server.admin().await?.with_timeout(Duration::from_secs(30));
    let name = UnitName::parse("large.service")?;
    let at_start = server.rss().context("cannot read the server's memory")?;
    println!(
        "B7: {} replaces of a {} unit; server RSS at start {}",
        count(config.replaces as f64),
        bytes(config.unit_bytes as f64),
        bytes(at_start.0 as f64)
    );
    let t = Instant::now();
    for round in 0..config.replaces {
        let put = UnitPut {
            desired_state: Some(DesiredState::Inactive),
            text: Some(unit_text(config.unit_bytes, round)),
            replace: true,
            ..UnitPut::default()
        };
        client
            .put_unit(&name, &put)
            .await
            .with_context(|| format!("replace {round}"))?;
    }
    let took = t.elapsed();
    let (after, peak) = server.rss().context("cannot read the server's memory")?;
    let growth = after.saturating_sub(at_start.0);
    println!(
        "  done in {}; server RSS {} after (peak {})",
        dur(took),
        bytes(after as f64),
        bytes(peak as f64)
    );
    Ok(vec![Row {
        id: "B7",
        case: format!(
            "memory: one {} unit replaced {} times through the API, embedded store",
            bytes(config.unit_bytes as f64),
            count(config.replaces as f64)
        ),
        figure: format!(
            "server RSS {} at start, {} after the replaces (+{}), peak {}; {} replaces/s",
            bytes(at_start.0 as f64),
            bytes(after as f64),
            bytes(growth as f64),
            bytes(peak as f64),
            count(config.replaces as f64 / took.as_secs_f64())
        ),
        anchor: ANCHOR.to_owned(),
        goal: format!("grows by < {}", bytes(GOAL_GROWTH as f64)),
        ratio: met(growth < GOAL_GROWTH).to_owned(),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_has_the_size_asked_and_parses() {
        let text = unit_text(250 * 1000, 7);
        assert!(text.len() <= 250 * 1000 && text.len() > 250 * 1000 - 100);
        assert_ne!(text, unit_text(250 * 1000, 8));
        let checked = flotilla_proto::UnitSpec::check_named(
            "large.service",
            &UnitName::parse("large.service").unwrap(),
            &text,
        );
        assert!(checked.is_ok(), "{checked:?}");
    }
}
