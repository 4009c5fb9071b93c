//! `flotilla server` and its data directory, through the real binary: a
//! server whose store lost its log refuses to start (exit status not zero,
//! a message naming what is missing and what to do) instead of serving an
//! empty cluster; so does one pointed at a directory that is not a store's,
//! and one on etcd whose key prefix holds no cluster or another one. A log
//! cut short is reported as what it may be.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{BIN, ServerProcess, TempDir, stderr};
use flotilla_proto::wire::UnitPut;
use flotilla_proto::{DesiredState, UnitName};

const WAL_0: &str = "wal-0000000000000000";

/// How long a refused server may take to exit (it exits at once; this is
/// only reached when it started serving instead).
const EXIT_DEADLINE: Duration = Duration::from_secs(30);

/// Runs `flotilla server ARGS` until it exits; fails the test (after
/// killing it) if it is still running at the deadline.
fn run_server(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .arg("server")
        .args(["--listen", "127.0.0.1:0", "--machine-ttl", "1s"])
        .args(args)
        .env_remove("FLOTILLA_TOKEN")
        .env_remove("FLOTILLA_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + EXIT_DEADLINE;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the server was still running after {EXIT_DEADLINE:?}:\n{}",
                stderr(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Asserts the server refused to start, with every one of `parts` in its
/// message; returns the message.
#[track_caller]
fn assert_refused(out: &Output, parts: &[&str]) -> String {
    let err = stderr(out);
    assert!(
        !out.status.success(),
        "the server exited successfully:\n{err}"
    );
    assert!(!err.contains("listening on"), "the server listened:\n{err}");
    for part in parts {
        assert!(err.contains(part), "{part:?} not in:\n{err}");
    }
    err
}

/// Starts a server on `data` (with `extra` flags), writes a unit through
/// its API, and kills it.
fn run_and_write(data: &Path, extra: &[&str]) {
    let server = ServerProcess::start(data, extra);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = server.client().with_timeout(Duration::from_secs(10));
    let put = UnitPut {
        desired_state: Some(DesiredState::Inactive),
        text: Some("[Service]\nExecStart=/bin/true\n".to_owned()),
        ..UnitPut::default()
    };
    rt.block_on(client.put_unit(&UnitName::parse("kept.service").unwrap(), &put))
        .unwrap();
    server.kill();
}

fn cluster_id_of(data: &Path) -> String {
    let text = std::fs::read_to_string(data.join("identity")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["clusterId"].as_str().unwrap().to_owned()
}

#[test]
fn a_server_whose_log_was_emptied_or_deleted_refuses_to_start() {
    let dir = TempDir::new("emptied-log");
    let data = dir.path().join("data");
    run_and_write(&data, &[]);
    let cluster = cluster_id_of(&data);
    let data_arg = data.to_str().unwrap();
    let wal = data.join(WAL_0);

    std::fs::write(&wal, b"").unwrap();
    let out = run_server(&["--data-dir", data_arg]);
    assert_refused(
        &out,
        &[
            &cluster,
            &format!("its log {WAL_0} is empty (0 bytes)"),
            "restore the directory from a backup",
            "to really start a new cluster, empty the directory",
        ],
    );
    assert_eq!(
        std::fs::metadata(&wal).unwrap().len(),
        0,
        "nothing repaired"
    );

    std::fs::remove_file(&wal).unwrap();
    let out = run_server(&["--data-dir", data_arg]);
    assert_refused(
        &out,
        &[
            &cluster,
            "its log and snapshots are missing",
            "restore the directory from a backup",
        ],
    );
    assert!(!wal.exists(), "no new log was made");

    // Emptied as the message says, the directory is a new cluster.
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::create_dir(&data).unwrap();
    let server = ServerProcess::start(&data, &[]);
    assert_ne!(cluster_id_of(&data), cluster, "a new cluster, a new id");
    server.kill();
}

#[test]
fn a_server_pointed_at_a_directory_of_other_files_refuses_to_start() {
    let dir = TempDir::new("foreign-dir");
    dir.write("etc/passwd", "root:x:0:0::/root:/bin/sh\n");
    let etc = dir.path().join("etc");
    let out = run_server(&["--data-dir", etc.to_str().unwrap()]);
    assert_refused(
        &out,
        &["it holds passwd but no identity file", "check --data-dir"],
    );
    let left: Vec<_> = std::fs::read_dir(&etc).unwrap().collect();
    assert_eq!(left.len(), 1, "the directory was left as it was");
}

/// Starts a server and returns its log up to the line that says it
/// listens (then kills it).
fn startup_log(data: &Path) -> String {
    let mut child = Command::new(BIN)
        .arg("server")
        .args(["--listen", "127.0.0.1:0", "--machine-ttl", "1s"])
        .args(["--data-dir", data.to_str().unwrap()])
        .env_remove("FLOTILLA_TOKEN")
        .env_remove("FLOTILLA_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + EXIT_DEADLINE;
    let mut log = String::new();
    let listening = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                log.push_str(&line);
                log.push('\n');
                if line.contains("listening on") {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(listening, "the server did not start:\n{log}");
    log
}

#[test]
fn a_cut_log_is_reported_as_interrupted_or_truncated() {
    let dir = TempDir::new("cut-log");
    let data = dir.path().join("data");
    run_and_write(&data, &[]);
    let wal = data.join(WAL_0);
    let bytes = std::fs::read(&wal).unwrap();
    // Cut into the last frame: an interrupted write and a truncated file
    // look the same.
    std::fs::write(&wal, &bytes[..bytes.len() - 3]).unwrap();
    let log = startup_log(&data);
    assert!(
        log.contains(
            "the store's log ends in an incomplete write: either the last group commit was \
             interrupted before it was acknowledged, or the file was truncated"
        ),
        "{log}"
    );
    assert!(!log.contains("never acknowledged"), "{log}");
}

#[test]
fn a_server_on_etcd_refuses_a_key_prefix_without_its_cluster() {
    let etcd = flotilla_testbed::Etcd::start().unwrap();
    let dir = TempDir::new("etcd-prefix");
    let data = dir.path().join("data");
    let endpoint = etcd.endpoint();
    run_and_write(&data, &["--etcd", &endpoint]);
    let cluster = cluster_id_of(&data);

    let out = run_server(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--etcd",
        &endpoint,
        "--key-prefix",
        "/flotila/v1/",
    ]);
    assert_refused(
        &out,
        &[
            &cluster,
            "holds no cluster id under key prefix /flotila/v1/",
            "check --key-prefix and --etcd",
        ],
    );

    // The right prefix still serves.
    let server = ServerProcess::start(&data, &["--etcd", &endpoint]);
    assert_eq!(cluster_id_of(&data), cluster);
    server.kill();
}
