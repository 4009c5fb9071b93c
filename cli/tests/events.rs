//! `flotilla events` and honest states, through the CLI, with a real agent
//! on a real systemd host: a unit placed on the host and one failing
//! there, the host crashed; `list-units` shows its units unknown (machine
//! unreachable) before the machine's lease ends, then they move to another
//! machine; `flotilla events` tells placed, failed, machine lost and moved,
//! in that order, and `flotilla events -f` followed it live and ends when
//! the server goes away.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::hosts::{DEADLINE, boot, start_agent, wait_active, wait_for};
use common::{Agent, ServerProcess, TempDir, ok};

/// `flotilla list-units -o json`, the row of `unit` on `machine`.
fn row(
    server: &ServerProcess,
    dir: &TempDir,
    unit: &str,
    machine: &str,
) -> Option<serde_json::Value> {
    let out = ok(&server.run(dir.path(), &["list-units", "-o", "json"]));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    rows.into_iter()
        .find(|r| r["unit"] == unit && r["machineID"] == machine)
}

/// `flotilla events -o json`.
fn events(server: &ServerProcess, dir: &TempDir, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["events", "-o", "json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&ok(&server.run(dir.path(), &args))).unwrap()
}

/// The place in `events` of the first event of `kind` (about `unit`, when
/// given).
fn position(events: &[serde_json::Value], kind: &str, unit: Option<&str>) -> Option<usize> {
    events
        .iter()
        .position(|e| e["kind"] == kind && unit.is_none_or(|u| e["unit"] == u))
}

#[test]
fn a_crashed_host_shows_unreachable_then_its_units_move_and_events_tell_it_in_order() {
    let dir = TempDir::new("events-host");
    let data = dir.path().join("data");
    // A TTL long enough that "unreachable" (half of it) comes seconds
    // before the lease ends and the units move.
    let server = ServerProcess::start_with_ttl(&data, "6s", &[]);
    let mut host = boot("flt-events-a");
    let host_id = host.machine_id().unwrap();
    start_agent(&host, &server, "role=web");

    dir.write(
        "a.service",
        "[Unit]\nDescription=a\n\n[Service]\nExecStart=/bin/sleep infinity\n",
    );
    dir.write(
        "b.service",
        "[Unit]\nDescription=b\n\n[Service]\nExecStart=/bin/false\n",
    );
    ok(&server.run(
        dir.path(),
        &["start", "--no-block", "a.service", "b.service"],
    ));
    wait_active(&host, "a.service");
    wait_for(&host, "b.service failed, in the events", || {
        position(
            &events(&server, &dir, &[]),
            "unit-failed",
            Some("b.service"),
        )
    });
    wait_for(&host, "a.service listed running", || {
        row(&server, &dir, "a.service", &host_id).filter(|r| r["activeState"] == "active")
    });

    // Another machine, for the units to move to; and a follower.
    let other = Agent::start(&[&server], 2);
    let follower = server
        .command(dir.path())
        .args(["events", "-f", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let follower = Follower::start(follower);

    host.crash();
    let crashed = Instant::now();
    // Unknown, and why, before the lease ends: nothing has moved and no
    // machine was lost yet.
    let unknown = wait_for(&host, "a.service unknown", || {
        row(&server, &dir, "a.service", &host_id).filter(|r| r["activeState"] == "unknown")
    });
    let seen_after = crashed.elapsed();
    assert_eq!(unknown["subState"], "unknown");
    let why = unknown["lastError"].as_str().unwrap();
    assert!(why.starts_with("machine unreachable for "), "{why}");
    let so_far = events(&server, &dir, &[]);
    assert_eq!(
        position(&so_far, "machine-lost", None),
        None,
        "the units showed unknown only once the machine was lost (after {seen_after:?})"
    );
    let table = ok(&server.run(dir.path(), &["list-units"]));
    assert!(
        table.lines().next().unwrap().ends_with("REASON")
            && table.contains("machine unreachable for "),
        "{table}"
    );

    // After the lease, the units move.
    let other_id = other.id.to_string();
    wait_for(&host, "a.service on the other machine", || {
        row(&server, &dir, "a.service", &other_id)
    });
    let all = wait_for(&host, "the move in the events", || {
        let all = events(&server, &dir, &[]);
        position(&all, "unit-moved", Some("a.service")).map(|_| all)
    });
    let placed = position(&all, "unit-placed", Some("a.service")).unwrap();
    let failed = position(&all, "unit-failed", Some("b.service")).unwrap();
    let lost = position(&all, "machine-lost", None).unwrap();
    let moved = position(&all, "unit-moved", Some("a.service")).unwrap();
    assert!(
        placed < failed && failed < lost && lost < moved,
        "out of order: {all:#?}"
    );
    assert_eq!(all[placed]["machine"], host_id.as_str());
    assert_eq!(all[lost]["machine"], host_id.as_str());
    assert_eq!(all[moved]["fromMachine"], host_id.as_str());
    assert_eq!(all[moved]["machine"], other_id.as_str());
    assert_eq!(all[moved]["detail"], "its machine left the cluster");
    assert_eq!(all[failed]["detail"], "the unit failed: exit status 1");

    // The text, filtered by unit.
    let text = ok(&server.run(dir.path(), &["events", "--unit", "a.service"]));
    let kinds: Vec<&str> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    // (The other machine then reports it started there.)
    assert_eq!(
        kinds.get(..4),
        Some(&["unit-created", "unit-placed", "unit-started", "unit-moved"][..]),
        "{text}"
    );

    // The follower saw the loss and the move as they happened, and ends
    // when the server goes away.
    follower.wait_for_line(|e| e["kind"] == "unit-moved");
    drop(other);
    drop(server);
    let (code, stderr) = follower.end();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("stopped following"), "{stderr}");
}

/// `flotilla events -f` running: its lines gathered as they come.
struct Follower {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Follower {
    fn start(mut child: std::process::Child) -> Follower {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let out_reader = std::thread::spawn({
            let lines = lines.clone();
            move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            }
        });
        let err_reader = std::thread::spawn({
            let stderr = stderr.clone();
            move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let mut s = stderr.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        Follower {
            child,
            lines,
            stderr,
            readers: vec![out_reader, err_reader],
        }
    }

    fn wait_for_line(&self, check: impl Fn(&serde_json::Value) -> bool) {
        let until = Instant::now() + DEADLINE;
        loop {
            let found = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| check(&v)));
            if found {
                return;
            }
            assert!(
                Instant::now() < until,
                "the follower printed:\n{}\nstderr:\n{}",
                self.lines.lock().unwrap().join("\n"),
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (with a deadline) for the follower to exit; its exit code and
    /// stderr.
    fn end(mut self) -> (Option<i32>, String) {
        let until = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The pipes end with the process: read them to the end.
                for reader in self.readers.drain(..) {
                    let _ = reader.join();
                }
                return (status.code(), self.stderr.lock().unwrap().clone());
            }
            assert!(Instant::now() < until, "the follower did not end");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
