//! Real agents on real systemd hosts: a test host (systemd-nspawn, its own
//! systemd and machine id) running the real `flotilla` binary as a unit of
//! its systemd, joined to a server of the test, and what a user would ask
//! the host's systemd about its units.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use flotilla_testbed::{Host, HostOptions};

use super::{BIN, ServerProcess};

/// Where the binary is in a host.
pub const HOST_BIN: &str = "/opt/flotilla/bin/flotilla";
/// How long anything may take to show.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn boot(name: &str) -> Host {
    Host::boot(
        name,
        &HostOptions {
            binds_ro: vec![(PathBuf::from(BIN), PathBuf::from(HOST_BIN))],
            ..HostOptions::default()
        },
    )
    .unwrap()
}

/// Starts `flotilla agent` as the unit `flotilla-agent` of the host's
/// systemd, as a `Type=notify` unit: this returns once the agent said
/// `READY=1`, which it does once its machine is registered. It joins with
/// a join string the first time, and keeps its credential after that.
pub fn start_agent(host: &Host, server: &ServerProcess, metadata: &str) {
    start_agent_with(host, server, metadata, &[]);
}

/// [`start_agent`], with more flags for `flotilla agent`.
pub fn start_agent_with(host: &Host, server: &ServerProcess, metadata: &str, extra: &[&str]) {
    let join = server.join_string();
    let join_env = format!("--setenv=FLOTILLA_JOIN_TOKEN={join}");
    let mut argv = vec![
        "--property=Type=notify",
        "--setenv=FLOTILLA_LOG=info",
        &join_env,
        HOST_BIN,
        "agent",
        "--server",
        &server.endpoint,
        "--metadata",
        metadata,
    ];
    argv.extend_from_slice(extra);
    host.spawn_unit("flotilla-agent", &argv)
        .unwrap_or_else(|e| panic!("the agent did not start: {e}\n{}", journal(host)));
}

/// Stops the agent with SIGTERM (systemctl stop) and waits until it is gone.
pub fn stop_agent(host: &Host) {
    host.run(&["systemctl", "stop", "flotilla-agent"]).unwrap();
}

pub fn journal(host: &Host) -> String {
    host.output(&[
        "journalctl",
        "--no-pager",
        "-o",
        "cat",
        "-u",
        "flotilla-agent",
        "-u",
        "flotilla-dev",
        "-n",
        "200",
    ])
    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    .unwrap_or_default()
}

/// `systemctl show` of a unit in the host.
pub fn show(host: &Host, unit: &str) -> BTreeMap<String, String> {
    let out = host
        .run(&[
            "systemctl",
            "show",
            "-p",
            "LoadState,ActiveState,SubState,MainPID,FragmentPath",
            unit,
        ])
        .unwrap();
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

pub fn main_pid(host: &Host, unit: &str) -> u32 {
    show(host, unit)["MainPID"].parse().unwrap()
}

/// Polls `check` until it returns something, up to the deadline; on
/// timeout, fails showing the agent's log.
pub fn wait_for<T>(host: &Host, what: &str, check: impl FnMut() -> Option<T>) -> T {
    flotilla_testbed::eventually_or(
        &format!("{what} on host {}", host.name()),
        DEADLINE,
        check,
        || format!("agent log:\n{}", journal(host)),
    )
}

pub fn wait_active(host: &Host, unit: &str) -> u32 {
    wait_for(host, &format!("{unit} active"), || {
        let s = show(host, unit);
        let pid: u32 = s["MainPID"].parse().unwrap_or(0);
        (s["ActiveState"] == "active" && pid != 0).then_some(pid)
    })
}
