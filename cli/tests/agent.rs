//! `flotilla agent` on real systemd hosts: a `flotilla server` process here,
//! a test host (systemd-nspawn, its own systemd and machine id) running
//! the real binary as a unit of its systemd, and the units it runs checked
//! in the host's systemd with `systemctl`, as a user would.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::hosts::{
    HOST_BIN, boot, journal, main_pid, show, start_agent, stop_agent, wait_active, wait_for,
};
use common::{BIN, ServerProcess, TempDir, ok};
use flotilla_api::client::StateQuery;
use flotilla_proto::{UnitName, UnitState};
use flotilla_testbed::free_port;

/// Observed states as the servers have them (`GET /v1/state`).
fn states(server: &ServerProcess, unit: &str) -> Vec<UnitState> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = server.client();
    rt.block_on(client.all_states(&StateQuery {
        unit: Some(UnitName::parse(unit).unwrap()),
        machine: None,
    }))
    .unwrap()
}

/// `flotilla list-units -o json`, rows of one unit.
fn listed(server: &ServerProcess, dir: &TempDir, unit: &str) -> Vec<serde_json::Value> {
    let out = ok(&server.run(dir.path(), &["list-units", "-o", "json"]));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    rows.into_iter().filter(|r| r["unit"] == unit).collect()
}

fn sleeper(description: &str) -> String {
    format!(
        "[Unit]\nDescription={description}\n\n[Service]\nExecStart=/bin/sleep infinity\n\n[X-Fleet]\nMachineMetadata=role=web\n"
    )
}

/// A server on a fixed free port (so that it can be restarted where the
/// agent looks for it), with a machine TTL long enough that restarting the
/// agent does not end the machine's lease.
fn start_server(data: &std::path::Path, port: u16) -> ServerProcess {
    let listen = format!("127.0.0.1:{port}");
    ServerProcess::start_args(
        data,
        &[
            "--listen",
            &listen,
            "--machine-ttl",
            "10s",
            "--data-dir",
            data.to_str().unwrap(),
        ],
    )
}

#[test]
fn units_follow_the_cluster_on_a_real_host() {
    let dir = TempDir::new("agent-host");
    let data = dir.path().join("data");
    let port = free_port();
    let mut server = start_server(&data, port);
    let host = boot("flt-agent-a");
    let machine_id = host.machine_id().unwrap();
    start_agent(&host, &server, "role=web,zone=a");

    // Registered with the host's machine id and metadata.
    let out = ok(&server.run(dir.path(), &["list-machines", "-o", "json"]));
    let machines: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(machines.len(), 1, "{out}");
    assert_eq!(machines[0]["id"], machine_id.as_str());
    assert_eq!(machines[0]["hostname"], "flt-agent-a");
    assert_eq!(machines[0]["metadata"]["role"], "web");
    assert_eq!(machines[0]["metadata"]["zone"], "a");
    assert!(machines[0]["capacity"]["cpuMillis"].as_u64().unwrap() >= 1000);

    // Started through the CLI: active in the host's systemd, from
    // flotilla's file, and visible in list-units soon after.
    dir.write("a.service", &sleeper("a"));
    ok(&server.run(dir.path(), &["start", "--no-block", "a.service"]));
    let pid = wait_active(&host, "a.service");
    let active_at = Instant::now();
    let s = show(&host, "a.service");
    assert_eq!(s["FragmentPath"], "/run/systemd/system/a.service");
    let file = host.run(&["cat", "/run/systemd/system/a.service"]).unwrap();
    assert!(
        file.starts_with("# flotilla: managed unit; content hash "),
        "{file}"
    );
    let row = wait_for(&host, "a.service listed as running", || {
        listed(&server, &dir, "a.service")
            .into_iter()
            .find(|r| r["activeState"] == "active" && r["mainPid"] == pid)
    });
    assert_eq!(row["machineID"], machine_id.as_str());
    assert!(
        active_at.elapsed() < Duration::from_secs(3),
        "the state took {:?} to reach the server",
        active_at.elapsed()
    );

    // A changed unit is written again and restarted.
    dir.write("a.service", &sleeper("a, changed"));
    ok(&server.run(
        dir.path(),
        &["start", "--no-block", "--replace", "a.service"],
    ));
    let new_pid = wait_for(&host, "a.service restarted", || {
        let p = main_pid(&host, "a.service");
        (p != 0 && p != pid).then_some(p)
    });
    let file = host.run(&["cat", "/run/systemd/system/a.service"]).unwrap();
    assert!(file.contains("Description=a, changed"), "{file}");
    wait_for(&host, "the new MainPID reported", || {
        states(&server, "a.service")
            .into_iter()
            .find(|s| s.main_pid == Some(new_pid))
    });

    // Restarting the agent restarts no unit; stopping it leaves them
    // running.
    stop_agent(&host);
    assert_eq!(show(&host, "a.service")["ActiveState"], "active");
    assert_eq!(main_pid(&host, "a.service"), new_pid);
    start_agent(&host, &server, "role=web,zone=a");
    dir.write("b.service", &sleeper("b"));
    ok(&server.run(dir.path(), &["start", "--no-block", "b.service"]));
    // b running proves the restarted agent has reconciled.
    let pid_b = wait_active(&host, "b.service");
    assert_eq!(main_pid(&host, "a.service"), new_pid, "a was restarted");

    // A unit whose process dies: reported failed as systemd signals it,
    // and left to its own Restart= (none here) by later passes.
    dir.write("c.service", &sleeper("c"));
    ok(&server.run(dir.path(), &["start", "--no-block", "c.service"]));
    let pid_c = wait_active(&host, "c.service");
    host.run(&["kill", "-KILL", &pid_c.to_string()]).unwrap();
    let failed = wait_for(&host, "c.service reported failed", || {
        states(&server, "c.service")
            .into_iter()
            .find(|s| s.active_state == "failed")
    });
    assert_eq!(failed.main_pid, None);
    assert_eq!(
        failed.last_error.as_deref(),
        Some("the unit failed: signal")
    );

    // A unit that asks to be stopped when its machine is cut off.
    dir.write(
        "d.service",
        &format!("{}StopAfterCutOff=1s\n", sleeper("d")),
    );
    ok(&server.run(dir.path(), &["start", "--no-block", "d.service"]));
    let pid_d = wait_active(&host, "d.service");

    // Cut off from every server: units keep running, except the one whose
    // StopAfterCutOff ran out; back, it reconciles.
    server.kill();
    wait_for(&host, "the agent to notice the server is gone", || {
        journal(&host)
            .contains("keeping the last set")
            .then_some(())
    });
    wait_for(&host, "d.service stopped while cut off", || {
        (show(&host, "d.service")["ActiveState"] == "inactive").then_some(())
    });
    assert!(journal(&host).contains("StopAfterCutOff=1s"));
    // Held stopped, its file stays; the others run on.
    assert!(
        host.run(&["test", "-f", "/run/systemd/system/d.service"])
            .is_ok()
    );
    assert_eq!(main_pid(&host, "a.service"), new_pid);
    assert_eq!(main_pid(&host, "b.service"), pid_b);
    server = start_server(&data, port);
    // Still this machine's: started again once the server answers.
    let pid_d_again = wait_active(&host, "d.service");
    assert_ne!(pid_d_again, pid_d);
    ok(&server.run(dir.path(), &["stop", "--no-block", "b.service"]));
    wait_for(
        &host,
        "b.service stopped after the server came back",
        || (show(&host, "b.service")["ActiveState"] == "inactive").then_some(()),
    );
    assert_eq!(main_pid(&host, "a.service"), new_pid);
    // Stopped, its file stays.
    assert!(
        host.run(&["test", "-f", "/run/systemd/system/b.service"])
            .is_ok()
    );

    // Destroyed: stopped, its file gone, its state gone.
    ok(&server.run(dir.path(), &["destroy", "a.service"]));
    wait_for(&host, "a.service stopped and its file removed", || {
        let s = show(&host, "a.service");
        let gone = host
            .run(&["test", "-e", "/run/systemd/system/a.service"])
            .is_err();
        (s["ActiveState"] == "inactive" && gone).then_some(())
    });
    wait_for(&host, "the state of a.service removed", || {
        states(&server, "a.service").is_empty().then_some(())
    });
    // Every pass since left the failed unit alone.
    assert_eq!(show(&host, "c.service")["ActiveState"], "failed");
    stop_agent(&host);
}

#[test]
fn a_host_unit_with_the_same_name_is_never_touched() {
    let dir = TempDir::new("agent-collision");
    let data = dir.path().join("data");
    let server = start_server(&data, free_port());
    let host = boot("flt-agent-b");
    let host_unit =
        "[Unit]\nDescription=a unit of the host\n\n[Service]\nExecStart=/bin/sleep 1000\n";
    host.sh(&format!(
        "printf '%s' '{host_unit}' > /etc/systemd/system/x.service && systemctl daemon-reload && systemctl start x.service"
    ))
    .unwrap();
    let pid = wait_active(&host, "x.service");
    start_agent(&host, &server, "role=web");

    dir.write("x.service", &sleeper("flotilla's x"));
    ok(&server.run(dir.path(), &["start", "--no-block", "x.service"]));
    let state = wait_for(&host, "x.service reported failed", || {
        states(&server, "x.service")
            .into_iter()
            .find(|s| s.active_state == "failed")
    });
    let reason = state.last_error.unwrap();
    assert!(reason.contains("/etc/systemd/system/x.service"), "{reason}");
    // Nothing of the host's unit changed, and flotilla wrote no file.
    assert_eq!(main_pid(&host, "x.service"), pid);
    assert_eq!(show(&host, "x.service")["ActiveState"], "active");
    assert_eq!(
        host.run(&["cat", "/etc/systemd/system/x.service"]).unwrap(),
        host_unit
    );
    assert!(
        host.run(&["test", "-e", "/run/systemd/system/x.service"])
            .is_err()
    );
    // list-units shows it failed too.
    let rows = listed(&server, &dir, "x.service");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["activeState"], "failed");

    // Destroyed in the cluster: the host's unit still runs.
    ok(&server.run(dir.path(), &["destroy", "x.service"]));
    wait_for(&host, "the state of x.service removed", || {
        states(&server, "x.service").is_empty().then_some(())
    });
    assert_eq!(main_pid(&host, "x.service"), pid);
    stop_agent(&host);
}

#[test]
fn flotilla_dev_is_a_one_machine_cluster() {
    let dir = TempDir::new("agent-dev");
    let host = boot("flt-agent-dev");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    // Ready (READY=1) once its own machine is registered.
    host.spawn_unit(
        "flotilla-dev",
        &[
            "--property=Type=notify",
            // As from a root shell: its client configuration goes to
            // /root/.config/flotilla/config.yaml.
            "--setenv=HOME=/root",
            HOST_BIN,
            "dev",
            "--listen",
            &listen,
            "--data-dir",
            "/var/lib/flotilla-dev",
            "--metadata",
            "role=web",
        ],
    )
    .unwrap();
    // The CLI on the host is set up by `flotilla dev`: no flags, no
    // variables, its client configuration names the cluster, its CA and
    // its admin token.
    let who = host.run(&[HOST_BIN, "whoami"]).unwrap();
    assert!(who.contains("role admin"), "{who}");
    // Here, the same with the CA and token read from the host.
    let ca = dir.write(
        "ca.crt",
        &host
            .run(&["cat", "/var/lib/flotilla-dev/tls/ca.crt"])
            .unwrap(),
    );
    let token = dir.write(
        "admin.token",
        &host
            .run(&["cat", "/var/lib/flotilla-dev/admin.token"])
            .unwrap(),
    );
    let flotilla = |args: &[&str]| {
        std::process::Command::new(BIN)
            .args(args)
            .current_dir(dir.path())
            .env("FLOTILLA_ENDPOINT", format!("https://{listen}"))
            .env("FLOTILLA_CA", &ca)
            .env("FLOTILLA_TOKEN_FILE", &token)
            .env("FLOTILLA_CLIENT_CONFIG", dir.path().join("none.yaml"))
            .env_remove("FLOTILLA_TOKEN")
            .output()
            .unwrap()
    };
    let out = ok(&flotilla(&["list-machines", "-o", "json"]));
    let machines: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(machines.len(), 1, "{out}");
    assert_eq!(machines[0]["id"], host.machine_id().unwrap().as_str());

    dir.write("d.service", &sleeper("d"));
    // `flotilla start` blocks until the unit runs.
    ok(&flotilla(&["start", "d.service"]));
    let pid = wait_active(&host, "d.service");
    // Stopping `flotilla dev` leaves its units running.
    host.run(&["systemctl", "stop", "flotilla-dev"]).unwrap();
    assert_eq!(main_pid(&host, "d.service"), pid);
}

#[test]
fn an_agent_answered_by_another_cluster_stops_nothing() {
    let dir = TempDir::new("agent-other-cluster");
    let data = dir.path().join("data");
    let port = free_port();
    let server = start_server(&data, port);
    let host = boot("flt-agent-other");
    start_agent(&host, &server, "role=web");
    dir.write("x.service", &sleeper("x"));
    ok(&server.run(dir.path(), &["start", "--no-block", "x.service"]));
    let pid = wait_active(&host, "x.service");

    // The server comes back serving another cluster (its identity is not
    // the one the machine joined: a wrong or restored store), which knows
    // this machine's credential and has no unit for it.
    server.kill();
    let identity = data.join("identity");
    let mut record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&identity).unwrap()).unwrap();
    record["clusterId"] = "00000000-0000-4000-8000-000000000001".into();
    std::fs::write(&identity, serde_json::to_string(&record).unwrap()).unwrap();
    let server = start_server(&data, port);
    ok(&server.run(dir.path(), &["destroy", "x.service"]));

    // The agent refuses its answers, loudly, and changes nothing.
    wait_for(&host, "the agent refusing the other cluster", || {
        journal(&host)
            .contains("but this machine belongs to cluster")
            .then_some(())
    });
    assert_eq!(show(&host, "x.service")["ActiveState"], "active");
    assert_eq!(main_pid(&host, "x.service"), pid);
    host.run(&["test", "-f", "/run/systemd/system/x.service"])
        .unwrap();
    stop_agent(&host);
}

/// Blocking means live on a real host: `start --replace` returns once the
/// agent reports the unit started with its new contents, and by then
/// systemd runs a new process from the new file.
#[test]
fn start_replace_returns_once_the_host_runs_the_new_contents() {
    let dir = TempDir::new("agent-live");
    let server = start_server(&dir.path().join("data"), free_port());
    let host = boot("flt-agent-live");
    start_agent(&host, &server, "role=web");
    let hash = |text: &str| flotilla_proto::UnitFile::parse(text).0.content_hash();

    dir.write("a.service", &sleeper("v1"));
    ok(&server.run(dir.path(), &["start", "a.service"]));
    let old_pid = main_pid(&host, "a.service");
    assert_ne!(old_pid, 0, "start returned before a.service ran");
    let st = states(&server, "a.service");
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].started_hash, Some(hash(&sleeper("v1"))));

    dir.write("a.service", &sleeper("v2"));
    ok(&server.run(dir.path(), &["start", "--replace", "a.service"]));
    // Read at once after the command returned: no waiting here.
    let s = show(&host, "a.service");
    let description = host
        .run(&[
            "systemctl",
            "show",
            "-p",
            "Description",
            "--value",
            "a.service",
        ])
        .unwrap();
    assert_eq!(description.trim(), "v2", "systemd has not the new file");
    assert_eq!(s["ActiveState"], "active");
    let new_pid: u32 = s["MainPID"].parse().unwrap();
    assert!(
        new_pid != 0 && new_pid != old_pid,
        "the old process {old_pid} still runs"
    );
    let st = states(&server, "a.service");
    assert_eq!(st[0].started_hash, Some(hash(&sleeper("v2"))));
    assert_eq!(st[0].hash, Some(hash(&sleeper("v2"))));
    stop_agent(&host);
}
