//! End to end, as a user runs flotilla: `deploy/local-cluster` brings up a
//! server and real systemd hosts (each with Docker and `flotilla agent` from
//! `deploy/flotilla-agent.service`, in its own network namespace), the
//! `flotilla` CLI drives it, faults are injected with the script, and the
//! cluster is torn down even when a test fails.
//!
//! The script keeps its state in one place, so these tests take turns.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(90);

static TURN: Mutex<()> = Mutex::new(());

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// A cluster brought up by `deploy/local-cluster`, down when dropped.
struct Cluster {
    endpoint: String,
    /// `FLOTILLA_CA` and `FLOTILLA_TOKEN_FILE` as `up` prints them.
    ca: String,
    token_file: String,
    /// Where `up` writes its client configuration (not the user's own).
    client_config: common::TempDir,
    _turn: MutexGuard<'static, ()>,
}

impl Cluster {
    fn up(args: &[&str]) -> Cluster {
        Cluster::up_with_ttl(args, "4s")
    }

    fn up_with_ttl(args: &[&str], machine_ttl: &str) -> Cluster {
        let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        // A cluster left over by an aborted run would be in the way.
        let _ = script(&["down"]);
        let client_config = common::TempDir::new("e2e-client-config");
        let out = Command::new(repo().join("deploy/local-cluster"))
            .arg("up")
            .args(args)
            .env("FLOTILLA_BIN", common::BIN)
            .env(
                "FLOTILLA_CLIENT_CONFIG",
                client_config.path().join("config.yaml"),
            )
            .env("FLOTILLA_MACHINE_TTL", machine_ttl)
            .env("FLOTILLA_LEADER_TTL", "2s")
            .output()
            .unwrap();
        // From here on, dropping the guard tears the cluster down.
        let mut cluster = Cluster {
            endpoint: String::new(),
            ca: String::new(),
            token_file: String::new(),
            client_config,
            _turn: turn,
        };
        assert!(
            out.status.success(),
            "local-cluster up failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let exported = |name: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("up prints {name}"))
                .to_owned()
        };
        cluster.endpoint = exported("FLOTILLA_ENDPOINT");
        cluster.ca = exported("FLOTILLA_CA");
        cluster.token_file = exported("FLOTILLA_TOKEN_FILE");
        // And the client configuration it wrote names the same cluster.
        let config =
            std::fs::read_to_string(cluster.client_config.path().join("config.yaml")).unwrap();
        assert!(config.contains("current: local"), "{config}");
        cluster
    }

    /// Runs `flotilla ARGS` against the cluster.
    fn flotilla(&self, args: &[&str]) -> Output {
        Command::new(common::BIN)
            .args(args)
            .current_dir(repo())
            .env("FLOTILLA_ENDPOINT", &self.endpoint)
            .env("FLOTILLA_CA", &self.ca)
            .env("FLOTILLA_TOKEN_FILE", &self.token_file)
            .env(
                "FLOTILLA_CLIENT_CONFIG",
                self.client_config.path().join("config.yaml"),
            )
            .env_remove("FLOTILLA_TOKEN")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        common::ok(&self.flotilla(args))
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// `list-units -o json` rows.
    fn units(&self) -> Vec<Value> {
        self.json(&["list-units"]).as_array().unwrap().clone()
    }

    /// Runs a command in a host.
    fn exec(&self, host: &str, argv: &[&str]) -> String {
        let mut args = vec!["exec", host];
        args.extend_from_slice(argv);
        common::ok(&script(&args))
    }

    /// The host (name) a machine id belongs to.
    fn host_of(&self, machine: &str) -> String {
        let status = common::ok(&script(&["status"]));
        status
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(machine))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("no host with machine id {machine}:\n{status}"))
            .to_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = script(&["down"]);
    }
}

fn script(args: &[&str]) -> Output {
    Command::new(repo().join("deploy/local-cluster"))
        .args(args)
        .output()
        .unwrap()
}

/// Polls `check` until it gives a value, up to the deadline.
fn eventually<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    flotilla_testbed::eventually(what, DEADLINE, check)
}

/// When `single.service`'s journal on `host` last logged a line containing
/// `message`, in seconds of the monotonic clock the hosts share with this
/// machine (`journalctl -o short-monotonic`).
fn journal_seconds(c: &Cluster, host: &str, message: &str) -> Option<f64> {
    let out = c.exec(
        host,
        &[
            "journalctl",
            "-u",
            "single.service",
            "-o",
            "short-monotonic",
            "--no-pager",
            "-q",
        ],
    );
    out.lines()
        .rev()
        .filter(|l| l.contains(message))
        .filter_map(|l| l.strip_prefix('[')?.split_once(']')?.0.trim().parse().ok())
        .next()
}

fn row<'a>(rows: &'a [Value], unit: &str) -> Option<&'a Value> {
    rows.iter().find(|r| r["unit"] == unit)
}

/// The machine a unit is active on, if exactly one (no duplicates).
fn active_on(rows: &[Value], unit: &str) -> Option<String> {
    let active: Vec<&Value> = rows
        .iter()
        .filter(|r| r["unit"] == unit && r["activeState"] == "active")
        .collect();
    match active.as_slice() {
        [one] => Some(one["machineID"].as_str().unwrap().to_owned()),
        _ => None,
    }
}

#[test]
fn apply_converges_changes_only_what_changed_and_an_agent_restart_restarts_nothing() {
    let c = Cluster::up(&["--hosts", "3"]);
    // The examples, in a directory of our own to edit later.
    let repo_dir = common::TempDir::new("e2e-apply");
    for entry in std::fs::read_dir(repo().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        repo_dir.write(&name, &std::fs::read_to_string(&path).unwrap());
    }
    let units_dir = repo_dir.path().to_str().unwrap().to_owned();
    c.ok(&["apply", "--block-attempts", "60", &units_dir]);
    let rows = c.units();
    for unit in [
        "hello.service",
        "db.service",
        "db-backup.service",
        "web.service",
    ] {
        assert!(
            active_on(&rows, unit).is_some(),
            "{unit} is not active: {rows:#?}"
        );
    }
    // The pair shares a machine; the global unit runs on the worker hosts.
    assert_eq!(
        active_on(&rows, "db.service"),
        active_on(&rows, "db-backup.service")
    );
    let exporters = rows
        .iter()
        .filter(|r| r["unit"] == "node-exporter.service")
        .count();
    assert_eq!(exporters, 2, "{rows:#?}");
    // The container unit reports its health.
    let web = eventually("web.service healthy", || {
        let rows = c.units();
        row(&rows, "web.service")
            .filter(|r| r["health"] == "healthy")
            .cloned()
    });
    let pids: Vec<(String, Value)> = c
        .units()
        .iter()
        .map(|r| (r["unit"].as_str().unwrap().to_owned(), r["mainPid"].clone()))
        .collect();

    assert_eq!(c.ok(&["apply", &units_dir]), "no changes\n");

    // Restarting the agent of the web host restarts no unit.
    let host = c.host_of(web["machineID"].as_str().unwrap());
    c.exec(&host, &["systemctl", "restart", "flotilla-agent.service"]);
    eventually("the agent back", || {
        let out = c.exec(&host, &["systemctl", "is-active", "flotilla-agent.service"]);
        (out.trim() == "active").then_some(())
    });
    // Give the new agent time to act on every unit (it must not); a
    // negative check needs a window, not a condition to wait for.
    std::thread::sleep(Duration::from_secs(3));
    let after: Vec<(String, Value)> = c
        .units()
        .iter()
        .map(|r| (r["unit"].as_str().unwrap().to_owned(), r["mainPid"].clone()))
        .collect();
    assert_eq!(after, pids, "a unit restarted with the agent");

    // Editing one file and applying again restarts only that unit.
    let hello = std::fs::read_to_string(repo_dir.path().join("hello.service")).unwrap();
    repo_dir.write("hello.service", &hello.replace("sleep 10", "sleep 11"));
    assert_eq!(
        c.ok(&["apply", "--block-attempts", "60", &units_dir]),
        "~ hello.service: contents changed (launched)\n"
    );
    let edited = eventually("hello.service running its new contents", || {
        let rows = c.units();
        let now: Vec<(String, Value)> = rows
            .iter()
            .map(|r| (r["unit"].as_str().unwrap().to_owned(), r["mainPid"].clone()))
            .collect();
        let changed: Vec<&str> = now
            .iter()
            .zip(&after)
            .filter(|(a, b)| a != b)
            .map(|(a, _)| a.0.as_str())
            .collect();
        (changed == ["hello.service"]).then_some(now)
    });
    assert_eq!(edited.len(), after.len());

    // fleet's scenario: five mutually conflicting units on three hosts.
    let dir = common::TempDir::new("e2e-lonely");
    let mut files = Vec::new();
    for i in 1..=5 {
        let path = dir.write(
            &format!("lonely{i}.service"),
            "[Service]\nExecStart=/bin/sleep 100000\n[X-Fleet]\nConflicts=lonely*.service\n",
        );
        files.push(path.to_str().unwrap().to_owned());
    }
    let mut args = vec!["start", "--no-block"];
    args.extend(files.iter().map(String::as_str));
    c.ok(&args);
    eventually("three lonely units active, two waiting", || {
        let rows = c.units();
        let lonely: Vec<&Value> = rows
            .iter()
            .filter(|r| r["unit"].as_str().unwrap().starts_with("lonely"))
            .collect();
        let active: Vec<&str> = lonely
            .iter()
            .filter(|r| r["activeState"] == "active")
            .map(|r| r["machineID"].as_str().unwrap())
            .collect();
        let waiting = lonely
            .iter()
            .filter(|r| !r["unscheduledReason"].is_null())
            .count();
        let hosts: std::collections::BTreeSet<&str> = active.iter().copied().collect();
        (active.len() == 3 && hosts.len() == 3 && waiting == 2).then_some(())
    });
}

#[test]
fn a_crashed_host_s_units_move_and_a_container_lives_in_its_unit() {
    let c = Cluster::up(&["--hosts", "3"]);
    c.ok(&["apply", "--block-attempts", "60", "examples/"]);

    // The container's processes are in the unit's cgroup on its host.
    let rows = c.units();
    let web_machine = active_on(&rows, "web.service").expect("web.service active");
    let host = c.host_of(&web_machine);
    let pid = c.exec(
        &host,
        &[
            "systemctl",
            "show",
            "-p",
            "MainPID",
            "--value",
            "web.service",
        ],
    );
    let cgroup = c.exec(&host, &["cat", &format!("/proc/{}/cgroup", pid.trim())]);
    assert!(cgroup.contains("/system.slice/web.service/"), "{cgroup}");
    // What the container prints is in its unit's journal, read from here.
    let journal = c.ok(&["journal", "web.service", "-n", "100"]);
    assert!(journal.contains("serving /www on port 8080"), "{journal}");
    // Its status names the image and the container, and once a health
    // probe ran, what it printed.
    let status = eventually("web.service's last probe in its status", || {
        let status = c.ok(&["status", "web.service"]);
        status.contains("Last probe: serves").then_some(status)
    });
    assert!(status.contains("Image: local/busybox:latest"), "{status}");
    assert!(status.contains("Container: "), "{status}");
    // A host-level stop leaves no container behind.
    c.exec(&host, &["systemctl", "stop", "web.service"]);
    let left = c.exec(
        &host,
        &["docker", "ps", "-aq", "--filter", "name=flotilla-web"],
    );
    assert!(
        left.trim().is_empty(),
        "a container outlived its unit: {left}"
    );

    // The host of the db pair crashes: the pair moves together.
    let db_machine = active_on(&c.units(), "db.service").expect("db.service active");
    let db_host = c.host_of(&db_machine);
    common::ok(&script(&["kill", &db_host]));
    let moved = eventually("the pair active on another host", || {
        let rows = c.units();
        let db = active_on(&rows, "db.service")?;
        let backup = active_on(&rows, "db-backup.service")?;
        (db != db_machine && db == backup).then_some(db)
    });
    assert_ne!(moved, db_machine);

    // The crashed host boots again as the same machine: it runs what the
    // cluster gives it now, and nothing that moved away.
    common::ok(&script(&["start", &db_host]));
    let dir = common::TempDir::new("e2e-return");
    dir.write(
        "back.service",
        &format!("[Service]\nExecStart=/bin/sleep infinity\n\n[X-Fleet]\nMachineID={db_machine}\n"),
    );
    let back = dir.path().join("back.service");
    c.ok(&["start", "--block-attempts", "60", back.to_str().unwrap()]);
    // Active there means its agent has reconciled the machine's feed.
    eventually("a unit pinned to the returned machine active", || {
        (active_on(&c.units(), "back.service") == Some(db_machine.clone())).then_some(())
    });
    for unit in ["db.service", "db-backup.service"] {
        let out = script(&["exec", &db_host, "systemctl", "is-active", unit]);
        assert_ne!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "active",
            "{unit} runs again on the returned host"
        );
    }
    let rows = c.units();
    for unit in ["db.service", "db-backup.service", "hello.service"] {
        assert!(
            active_on(&rows, unit).is_some(),
            "{unit} is not active exactly once: {rows:#?}"
        );
    }
    assert_eq!(active_on(&rows, "db.service"), Some(moved));
}

#[test]
fn a_partitioned_host_s_units_move_and_it_stops_its_copies_when_healed() {
    // A machine TTL long enough that StopAfterCutOff=1s has room before it.
    let c = Cluster::up_with_ttl(&["--hosts", "2"], "8s");
    c.ok(&["start", "--block-attempts", "60", "examples/hello.service"]);
    // A unit that must not run twice follows hello, and asks to be stopped
    // once its machine is cut off.
    let dir = common::TempDir::new("e2e-cut-off");
    dir.write(
        "single.service",
        "[Service]\nExecStart=/bin/sleep infinity\n\n[X-Fleet]\nMachineOf=hello.service\nStopAfterCutOff=1s\n",
    );
    let single = dir.path().join("single.service");
    c.ok(&["start", "--block-attempts", "60", single.to_str().unwrap()]);
    let first = active_on(&c.units(), "hello.service").unwrap();
    let host = c.host_of(&first);
    eventually("single.service active next to hello", || {
        (active_on(&c.units(), "single.service") == Some(first.clone())).then_some(())
    });

    common::ok(&script(&["partition", &host]));
    let second = eventually("both active elsewhere", || {
        let rows = c.units();
        let hello = active_on(&rows, "hello.service").filter(|m| *m != first)?;
        (active_on(&rows, "single.service") == Some(hello.clone())).then_some(hello)
    });
    assert_ne!(second, first);
    // The cut-off host still runs hello meanwhile, but stopped the unit
    // with StopAfterCutOff before the other host started it (the hosts
    // share this machine's monotonic clock).
    let still = c.exec(&host, &["systemctl", "is-active", "hello.service"]);
    assert_eq!(still.trim(), "active");
    let stopped = journal_seconds(&c, &host, "Stopped single.service");
    let started = journal_seconds(&c, &c.host_of(&second), "Started single.service");
    let stopped = stopped.expect("single.service never stopped on the cut-off host");
    let started = started.expect("single.service never started on the other host");
    assert!(
        stopped < started,
        "single.service stopped on the cut-off host at {stopped}s, after the other host started it at {started}s"
    );

    common::ok(&script(&["heal", &host]));
    eventually("the healed host stopped its duplicate", || {
        let out = script(&["exec", &host, "systemctl", "is-active", "hello.service"]);
        (String::from_utf8_lossy(&out.stdout).trim() != "active").then_some(())
    });
    let rows = c.units();
    assert_eq!(active_on(&rows, "hello.service"), Some(second.clone()));
    assert_eq!(active_on(&rows, "single.service"), Some(second));
    // Held stopped until the servers answered, then removed: it moved.
    eventually("single.service's file gone from the healed host", || {
        let out = script(&[
            "exec",
            &host,
            "test",
            "-e",
            "/run/systemd/system/single.service",
        ]);
        (!out.status.success()).then_some(())
    });
}

#[test]
fn a_global_unit_reaches_a_host_that_joins_later_and_replaces_takes_a_machine() {
    let c = Cluster::up(&["--hosts", "2"]);
    c.ok(&[
        "start",
        "--block-attempts",
        "60",
        "examples/node-exporter.service",
    ]);
    // Metadata role=worker: host2 only (host1 is the edge).
    let on = |rows: &[Value]| {
        rows.iter()
            .filter(|r| r["unit"] == "node-exporter.service" && r["activeState"] == "active")
            .count()
    };
    assert_eq!(on(&c.units()), 1);
    let added = common::ok(&script(&["add"]));
    assert_eq!(added.trim(), "host3");
    eventually("the global unit on the new worker too", || {
        (on(&c.units()) == 2).then_some(())
    });

    // Replaces: new.service takes old.service's machine, old moves.
    let dir = common::TempDir::new("e2e-replaces");
    let old = dir.write("old.service", "[Service]\nExecStart=/bin/sleep 100000\n");
    c.ok(&["start", "--block-attempts", "60", old.to_str().unwrap()]);
    let home = active_on(&c.units(), "old.service").unwrap();
    let new = dir.write(
        "new.service",
        "[Service]\nExecStart=/bin/sleep 100000\n[X-Fleet]\nReplaces=old.service\n",
    );
    c.ok(&["start", "--no-block", new.to_str().unwrap()]);
    eventually("new.service on old's machine and old elsewhere", || {
        let rows = c.units();
        let new = active_on(&rows, "new.service")?;
        let old = active_on(&rows, "old.service")?;
        (new == home && old != home).then_some(())
    });
}

/// The address of the server `list-servers` says leads.
fn leader_address(c: &Cluster) -> Option<String> {
    let servers = c.json(&["list-servers"]);
    let leader = servers.as_array()?.iter().find(|s| s["leader"] == true)?;
    Some(leader["address"].as_str()?.to_owned())
}

/// The main PID of `unit` on `host`, as its systemd says.
fn main_pid(c: &Cluster, host: &str, unit: &str) -> String {
    c.exec(
        host,
        &["systemctl", "show", "-p", "MainPID", "--value", unit],
    )
}

/// Kills the leading server; gives its address and its index for the
/// script.
fn kill_the_leader(c: &Cluster) -> (String, usize) {
    let leader = eventually("a leader", || leader_address(c));
    let index = c.endpoint.split(',').position(|e| e == leader).unwrap();
    common::ok(&script(&["kill-server", &index.to_string()]));
    (leader, index)
}

#[test]
fn a_killed_leader_and_an_etcd_restart_stop_and_move_nothing() {
    let c = Cluster::up(&["--hosts", "2", "--servers", "3", "--store", "etcd"]);
    c.ok(&["start", "--block-attempts", "60", "examples/hello.service"]);
    let machine = active_on(&c.units(), "hello.service").unwrap();
    let host = c.host_of(&machine);
    let pid = || main_pid(&c, &host, "hello.service");
    let before = pid();

    // Kill the leading server: the unit keeps running, a new submission is
    // placed by the next leader.
    kill_the_leader(&c);
    c.ok(&["start", "--block-attempts", "60", "examples/db.service"]);
    assert_eq!(
        pid(),
        before,
        "hello.service restarted when the leader died"
    );

    // Restart etcd: no unit moves or restarts.
    common::ok(&script(&["restart-etcd"]));
    eventually("the cluster answers again", || {
        c.flotilla(&["list-units"]).status.success().then_some(())
    });
    c.ok(&[
        "start",
        "--block-attempts",
        "60",
        "examples/db-backup.service",
    ]);
    // While etcd was down the machines could not renew their leases, so
    // their units may show unknown until the next heartbeat: wait for the
    // unit to be reported again, on the same machine, by the same process.
    eventually("hello.service reported active again", || {
        (active_on(&c.units(), "hello.service").as_ref() == Some(&machine)).then_some(())
    });
    assert_eq!(pid(), before, "hello.service restarted with etcd");
}

#[test]
fn on_raft_a_killed_leader_moves_nothing_and_two_lost_servers_stop_writes_until_one_returns() {
    // A machine TTL longer than the quorum is lost below (a refused write
    // takes the request timeout, 5 s), so that the agents' heartbeats, which
    // fail meanwhile, never outlast their leases. (A new raft leader renews
    // every lease anyway, as etcd does: the store tests show that.)
    let c = Cluster::up_with_ttl(
        &["--hosts", "2", "--servers", "3", "--store", "raft"],
        "30s",
    );
    c.ok(&["start", "--block-attempts", "60", "examples/hello.service"]);
    let machine = active_on(&c.units(), "hello.service").unwrap();
    let host = c.host_of(&machine);
    let pid = || main_pid(&c, &host, "hello.service");
    let before = pid();

    // Kill the leading server: raft elects another among the two left,
    // which places a new submission; the unit keeps running.
    let (first, first_index) = kill_the_leader(&c);
    c.ok(&["start", "--block-attempts", "60", "examples/db.service"]);
    let second = eventually("a new leader", || {
        leader_address(&c).filter(|l| *l != first)
    });
    assert_ne!(second, first);
    assert_eq!(
        pid(),
        before,
        "hello.service restarted when the leader died"
    );

    // A second server lost: the last one has no quorum and takes no write.
    let other = c
        .endpoint
        .split(',')
        .position(|e| e != first && e != second)
        .unwrap();
    common::ok(&script(&["kill-server", &other.to_string()]));
    let refused = c.flotilla(&["start", "--no-block", "examples/db-backup.service"]);
    assert!(
        !refused.status.success(),
        "a write was taken by one server of three: {}",
        String::from_utf8_lossy(&refused.stdout)
    );
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("unavailable"), "{why}");

    // One comes back (same data, same id): writes go through again.
    common::ok(&script(&["start-server", &other.to_string()]));
    c.ok(&[
        "start",
        "--block-attempts",
        "60",
        "examples/db-backup.service",
    ]);
    eventually("hello.service reported active again", || {
        (active_on(&c.units(), "hello.service").as_ref() == Some(&machine)).then_some(())
    });
    assert_eq!(pid(), before, "hello.service restarted without a quorum");

    // The first leader comes back too, and catches up: it alone answers
    // with the unit submitted while it was down.
    common::ok(&script(&["start-server", &first_index.to_string()]));
    eventually("the old leader serving what it missed", || {
        let out = c.flotilla(&["--endpoint", &first, "list-units", "-o", "json"]);
        let rows: Value = serde_json::from_slice(&out.stdout).ok()?;
        row(rows.as_array()?, "db-backup.service").map(|_| ())
    });
}
