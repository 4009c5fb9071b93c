//! Rolling updates on a real systemd host: a `flotilla server` here, an
//! agent on a test host, ten instances of a template given new contents
//! with `start --replace`, and what systemd did read from the host's
//! journal.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::hosts::{boot, start_agent, stop_agent, wait_for};
use common::{ServerProcess, TempDir, ok};
use flotilla_testbed::Host;

const UNITS: usize = 10;

fn template(version: &str, exec: &str, extra: &str) -> String {
    format!(
        "[Unit]\nDescription={version}\n\n[Service]\nExecStart={exec}\n\n[X-Fleet]\nRolloutMaxParallel=3\nRolloutMinHealthyTime=1s\n{extra}"
    )
}

fn instances(prefix: &str) -> Vec<String> {
    (1..=UNITS)
        .map(|i| format!("{prefix}@{i}.service"))
        .collect()
}

fn description(host: &Host, unit: &str) -> String {
    host.run(&["systemctl", "show", "-p", "Description", "--value", unit])
        .unwrap()
        .trim()
        .to_owned()
}

/// From the host's journal (`-o short-unix`), each unit's intervals from
/// `Stopping` to the next `Started`, after `since` (seconds).
fn down_intervals(journal: &str, prefix: &str, since: f64) -> Vec<(f64, f64)> {
    let mut stopping: std::collections::BTreeMap<String, f64> = Default::default();
    let mut out = Vec::new();
    for line in journal.lines() {
        let Some((ts, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(ts) = ts.parse::<f64>() else { continue };
        if ts < since {
            continue;
        }
        let Some(msg) = rest.split_once(": ").map(|(_, m)| m) else {
            continue;
        };
        let unit_of = |m: &str| {
            m.split_whitespace()
                .next()
                .filter(|u| u.starts_with(&format!("{prefix}@")))
                .map(|u| u.trim_end_matches('.').to_owned())
        };
        if let Some(m) = msg.strip_prefix("Stopping ")
            && let Some(u) = unit_of(m)
        {
            stopping.insert(u, ts);
        } else if let Some(m) = msg.strip_prefix("Started ")
            && let Some(u) = unit_of(m)
            && let Some(from) = stopping.remove(&u)
        {
            out.push((from, ts));
        }
    }
    out
}

/// The most intervals that overlap at one time.
fn most_at_once(intervals: &[(f64, f64)]) -> usize {
    let mut edges: Vec<(f64, i32)> = intervals
        .iter()
        .flat_map(|&(a, b)| [(a, 1), (b, -1)])
        .collect();
    edges.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}

fn host_now(host: &Host) -> f64 {
    host.run(&["date", "+%s.%N"])
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn ten_instances_roll_out_three_at_a_time_and_a_failing_version_stops() {
    let dir = TempDir::new("rollout-host");
    let data = dir.path().join("data");
    let server = ServerProcess::start_with_ttl(&data, "10s", &[]);
    let host = boot("flt-rollout");
    start_agent(&host, &server, "role=web");
    let names = instances("w");
    let args = |first: &[&'static str]| -> Vec<String> {
        first
            .iter()
            .map(|s| s.to_string())
            .chain(names.iter().cloned())
            .collect()
    };
    let run = |a: &[String]| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        server.run(dir.path(), &a)
    };

    dir.write("w@.service", &template("v1", "/bin/sleep infinity", ""));
    ok(&run(&args(&["start"])));
    dir.write("w@.service", &template("v2", "/bin/sleep infinity", ""));
    let since = host_now(&host);
    ok(&run(&args(&["start", "--replace"])));
    // Every instance runs the new contents, and no more than three were
    // down at once.
    for n in &names {
        assert_eq!(description(&host, n), "v2", "{n}");
    }
    let journal = host
        .run(&["journalctl", "--no-pager", "-o", "short-unix", "-u", "w@*"])
        .unwrap();
    let down = down_intervals(&journal, "w", since);
    assert_eq!(
        down.len(),
        UNITS,
        "restarts seen in the journal:\n{journal}"
    );
    let most = most_at_once(&down);
    assert!(most <= 3, "{most} instances down at once:\n{journal}");
    // In four waves, each started once the one before had run its new
    // contents for the min-healthy-time (1 s).
    let mut starts: Vec<f64> = down.iter().map(|&(from, _)| from).collect();
    starts.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let gaps = starts.windows(2).filter(|w| w[1] - w[0] >= 1.0).count();
    assert_eq!(gaps, 3, "restarts at {starts:?}:\n{journal}");
    let status = ok(&server.run(dir.path(), &["rollout", "status", "w@.service"]));
    assert!(status.contains("State:    succeeded"), "{status}");
    assert!(status.contains("Waves:    4 of 4 done"), "{status}");

    // A version that exits 1 stops the rollout after the first wave; the
    // other instances still run v2.
    dir.write("w@.service", &template("v3", "/bin/sh -c 'exit 1'", ""));
    let out = run(&args(&["start", "--replace"]));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("failed in wave 1 of 4"), "{stderr}");
    let status = ok(&server.run(dir.path(), &["rollout", "status", "w@.service"]));
    assert!(status.contains("State:    failed"), "{status}");
    assert!(status.contains("Failure:  w@"), "{status}");
    for n in &names[3..] {
        assert_eq!(description(&host, n), "v2", "{n}");
        let active = host.run(&["systemctl", "is-active", n]).unwrap();
        assert_eq!(active.trim(), "active", "{n}");
    }

    // With auto-revert, the first wave is back on its old contents.
    let r = instances("r");
    dir.write("r@.service", &template("v1", "/bin/sleep infinity", ""));
    let mut start: Vec<&str> = vec!["start"];
    start.extend(r.iter().map(String::as_str));
    ok(&server.run(dir.path(), &start));
    dir.write(
        "r@.service",
        &template("v2", "/bin/sh -c 'exit 1'", "RolloutAutoRevert=yes\n"),
    );
    let mut replace: Vec<&str> = vec!["start", "--replace"];
    replace.extend(r.iter().map(String::as_str));
    let out = server.run(dir.path(), &replace);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("got their old contents back"), "{stderr}");
    wait_for(&host, "the first wave to run v1 again", || {
        r[..3]
            .iter()
            .all(|n| {
                description(&host, n) == "v1"
                    && host.run(&["systemctl", "is-active", n]).unwrap().trim() == "active"
            })
            .then_some(())
    });
    for n in &r[3..] {
        assert_eq!(description(&host, n), "v1", "{n}");
    }
    stop_agent(&host);
}

/// `apply` with a `rollouts:` group in `flotilla.yaml`: the group's
/// launched units with new contents are one rollout, in waves of the
/// group's `max-parallel`, and `rollout status` reports it; a manifest
/// that names a unit the directory lacks is refused before anything is
/// sent. (A simulated agent reports what it runs: no host is needed.)
#[test]
fn apply_rolls_out_a_group_of_flotilla_yaml() {
    let dir = TempDir::new("rollout-apply");
    let server = ServerProcess::start(&dir.path().join("data"), &[]);
    let _agent = common::Agent::start(&[&server], 7);
    let manifest = "instances:\n  worker@.service: [1, 2, 3]\nrollouts:\n  backend:\n    units: [worker@.service, api.service]\n    max-parallel: 2\n    min-healthy-time: 0\n";
    dir.write("repo/flotilla.yaml", manifest);
    dir.write(
        "repo/worker@.service",
        "[Service]\nExecStart=/bin/sleep 1000\n",
    );
    dir.write("repo/api.service", "[Service]\nExecStart=/bin/sleep 1000\n");
    let repo = dir.path().join("repo");
    let repo = repo.to_str().unwrap();
    ok(&server.run(dir.path(), &["apply", repo]));

    dir.write(
        "repo/worker@.service",
        "[Service]\nExecStart=/bin/sleep 2000\n",
    );
    dir.write("repo/api.service", "[Service]\nExecStart=/bin/sleep 2000\n");
    let out = server.run(dir.path(), &["apply", repo]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("rolling out 4 units of backend in 2 waves of at most 2"),
        "{stderr}"
    );
    let status = ok(&server.run(dir.path(), &["rollout", "status", "backend"]));
    assert!(status.contains("State:    succeeded"), "{status}");
    assert!(status.contains("On new:   4 of 4 units"), "{status}");
    let json = ok(&server.run(dir.path(), &["-o", "json", "rollout", "status"]));
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(list["rollouts"].as_array().unwrap().len(), 1, "{json}");
    assert_eq!(list["rollouts"][0]["settings"]["maxParallel"], 2);

    // A group naming what the directory lacks: nothing is sent.
    dir.write(
        "repo/flotilla.yaml",
        &manifest.replace("api.service]", "db.service]"),
    );
    dir.write("repo/api.service", "[Service]\nExecStart=/bin/sleep 3000\n");
    let out = server.run(dir.path(), &["apply", repo]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "flotilla.yaml: rollouts: backend: db.service is not a unit of the directory"
        ),
        "{stderr}"
    );
    let cat = ok(&server.run(dir.path(), &["cat", "api.service"]));
    assert!(cat.contains("sleep 2000"), "{cat}");
}

fn container_template(version: &str, health: &str) -> String {
    format!(
        "[Unit]\nDescription={version}\n\n[Container]\nImage=local/busybox:latest\nExec=sleep 100000\n\
HealthCmd={health}\nHealthInterval=1s\nHealthRetries=1\nStopTimeout=1\n\n\
[X-Fleet]\nRolloutMaxParallel=1\nRolloutMinHealthyTime=1s\n"
    )
}

/// Container units with a health check, on a real host with Docker: a
/// new version whose health check fails stops the rollout in its first
/// wave, although systemd has the unit active, and the other instances
/// keep the old version.
#[test]
fn an_unhealthy_container_stops_the_rollout() {
    let dir = TempDir::new("rollout-health");
    let data = dir.path().join("data");
    let server = ServerProcess::start_with_ttl(&data, "10s", &[]);
    let host = Host::boot(
        "flt-rollout-ct",
        &flotilla_testbed::HostOptions {
            binds_ro: vec![(common::BIN.into(), common::hosts::HOST_BIN.into())],
            ..flotilla_testbed::HostOptions::default()
        },
    )
    .unwrap();
    host.start_docker(flotilla_testbed::CgroupDriver::Cgroupfs)
        .unwrap();
    host.load_busybox().unwrap();
    start_agent(&host, &server, "role=web");
    let names: Vec<String> = (1..=3).map(|i| format!("c@{i}.service")).collect();
    let mut start: Vec<&str> = vec!["start"];
    start.extend(names.iter().map(String::as_str));
    let mut replace: Vec<&str> = vec!["start", "--replace"];
    replace.extend(names.iter().map(String::as_str));

    dir.write("c@.service", &container_template("v1", "true"));
    ok(&server.run(dir.path(), &start));
    dir.write("c@.service", &container_template("v2", "false"));
    let out = server.run(dir.path(), &replace);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("failed in wave 1 of 3") && stderr.contains("its health check fails"),
        "{stderr}"
    );
    // systemd has the first instance active with v2: only its health
    // check said no.
    assert_eq!(description(&host, &names[0]), "v2");
    let active = host.run(&["systemctl", "is-active", &names[0]]).unwrap();
    assert_eq!(active.trim(), "active");
    for n in &names[1..] {
        assert_eq!(description(&host, n), "v1", "{n}");
        let active = host.run(&["systemctl", "is-active", n]).unwrap();
        assert_eq!(active.trim(), "active", "{n}");
    }
    let status = ok(&server.run(dir.path(), &["rollout", "status", "c@.service"]));
    assert!(status.contains("State:    failed"), "{status}");
    stop_agent(&host);
}
