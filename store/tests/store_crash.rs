#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test
//! Crash safety of the embedded store with a real process and SIGKILL: a
//! writer process (`flotilla-store-crash-writer`) prints each key only after
//! its write was acknowledged; it is killed mid-burst, and every key it
//! printed must be in the store when it is opened again.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use flotilla_store::{EmbeddedOptions, EmbeddedStore, RangeOptions, Store};

const WRITER: &str = env!("CARGO_BIN_EXE_flotilla-store-crash-writer");

/// How long a writer may take to acknowledge its quota (it needs well under
/// a second; this is only reached when something is broken).
const DEADLINE: Duration = Duration::from_secs(60);

/// Kills and reaps the child even when the test fails.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the writer until it has acknowledged at least `quota` keys, kills it
/// with SIGKILL, and returns every `(key, value)` it acknowledged.
fn run_and_kill(
    dir: &Path,
    run: u64,
    snapshot_threshold: u64,
    quota: usize,
) -> Vec<(String, String)> {
    let mut child = Killed(
        Command::new(WRITER)
            .arg(dir)
            .arg(run.to_string())
            .arg("8")
            .arg(snapshot_threshold.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the writer"),
    );
    let stdout = child.0.stdout.take().expect("piped stdout");
    let stderr = child.0.stderr.take().expect("piped stderr");
    let (lines_tx, lines) = mpsc::channel();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines_tx
                .send(line.expect("read the writer's output"))
                .is_err()
            {
                break;
            }
        }
    });
    let errors = thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let mut acked = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while acked.len() < quota {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => acked.push(line),
            Err(error) => {
                drop(child);
                panic!(
                    "writer acknowledged {} of {quota} keys before {error:?}; its stderr:\n{}",
                    acked.len(),
                    errors.join().unwrap_or_default()
                );
            }
        }
    }
    // SIGKILL, mid-burst: the writer is busy writing.
    child.0.kill().expect("kill the writer");
    child.0.wait().expect("reap the writer");
    // Lines it printed before dying are acknowledged too.
    reader.join().expect("reader thread");
    acked.extend(lines.try_iter());
    let _ = errors.join();
    acked
        .into_iter()
        .map(|line| {
            let mut parts = line.split(' ');
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some("ack"), Some(key), Some(value), None) => (key.to_owned(), value.to_owned()),
                _ => panic!("unexpected writer output {line:?}"),
            }
        })
        .collect()
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut all_acked = Vec::new();
    let mut torn_tails = 0;
    let mut generation = 0;
    for run in 0..6 {
        // Alternate a tiny snapshot threshold (snapshots all through the
        // burst, so the kill may land in one) with the default.
        let threshold = if run % 2 == 0 {
            4 * 1024
        } else {
            64 * 1024 * 1024
        };
        let acked = run_and_kill(&data, run, threshold, 500 + 300 * run as usize);
        assert!(!acked.is_empty());
        all_acked.extend(acked);

        runtime.block_on(async {
            let (store, recovery) = EmbeddedStore::open(&data, EmbeddedOptions::default())
                .await
                .expect("the store opens after a kill");
            torn_tails += usize::from(recovery.torn_tail.is_some());
            generation = recovery.generation;
            for (key, value) in &all_acked {
                let kv = store.get(key).await.unwrap().kv;
                let kv = kv.unwrap_or_else(|| panic!("acknowledged key {key} lost (run {run})"));
                assert_eq!(&kv.value[..], value.as_bytes(), "value of {key}");
            }
            // Every transaction of three keys survived whole or not at all.
            let all = store
                .range(&format!("/crash/{run}/"), RangeOptions::default())
                .await
                .unwrap();
            let mut parts = std::collections::BTreeMap::<String, usize>::new();
            for kv in &all.kvs {
                if let Some((txn, _)) = kv.key.rsplit_once('/')
                    && kv.key.matches('/').count() == 5
                {
                    *parts.entry(txn.to_owned()).or_default() += 1;
                }
            }
            assert!(
                parts.values().all(|&n| n == 3),
                "a transaction was split: {parts:?}"
            );
            store.close().await;
        });
    }
    eprintln!(
        "{} acknowledged keys survived 6 kills ({torn_tails} torn tails cut, now at generation {generation})",
        all_acked.len()
    );
}
