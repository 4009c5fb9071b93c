//! `flotilla agent --metrics-listen` on a real systemd host: a `flotilla
//! server` process here, a test host (systemd-nspawn, sharing this
//! machine's network) running the real agent, and its metrics page read
//! over plain HTTP as a local Prometheus would, parsed with Prometheus'
//! own parser (`promtool`), its values checked against what the units did,
//! and its metrics against docs/metrics.md.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::hosts::{DEADLINE, boot, journal, start_agent_with, stop_agent, wait_active};
use common::{BIN, ServerProcess, TempDir, ok};
use flotilla_testbed::free_port;

/// `METHOD PATH` on `port` of loopback, over plain HTTP/1.1: the status
/// and the body.
fn http(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// The samples of a page in Prometheus' text format.
fn samples(page: &str) -> BTreeMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(f64::NAN)
}

/// The families of a page: name and type, from its `# TYPE` lines.
fn families(page: &str) -> BTreeMap<String, String> {
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            (name.to_owned(), kind.to_owned())
        })
        .collect()
}

/// The metrics docs/metrics.md lists for agents: name and type.
fn documented_for_agents() -> BTreeMap<String, String> {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md"),
    )
    .unwrap();
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with("Agents"))
        .unwrap();
    section
        .lines()
        .filter(|l| l.starts_with("| `flotilla_"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`').to_owned(), cells[2].to_owned())
        })
        .collect()
}

#[test]
fn an_agents_metrics_count_what_its_units_did() {
    let dir = TempDir::new("agent-metrics");
    let server = ServerProcess::start(&dir.path().join("data"), &[]);
    let host = boot("flt-metrics-a");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    start_agent_with(&host, &server, "role=web", &["--metrics-listen", &listen]);

    // A unit that runs; one that crashes and systemd restarts (no start
    // limit); and one whose status says what a container unit's shim says
    // (the agent reads health from systemd's StatusText, as it does for a
    // real container unit; systemd-notify is sent again until systemd
    // takes it, since a sender that exits first may be missed).
    dir.write(
        "ok.service",
        "[Service]\nExecStart=/bin/sleep infinity\n[X-Fleet]\nMachineMetadata=role=web\n",
    );
    dir.write(
        "crash.service",
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nExecStart=/bin/sh -c 'sleep 0.2; exit 3'\nRestart=always\nRestartSec=100ms\n[X-Fleet]\nMachineMetadata=role=web\n",
    );
    dir.write(
        "box.service",
        "[Service]\nNotifyAccess=all\nExecStart=/bin/sh -c 'while :; do systemd-notify --status=\"flotilla: container=abc123 health=healthy\"; sleep 1; done'\n[X-Fleet]\nMachineMetadata=role=web\n",
    );
    ok(&server.run(
        dir.path(),
        &[
            "start",
            "--no-block",
            "ok.service",
            "crash.service",
            "box.service",
        ],
    ));
    wait_active(&host, "ok.service");

    let until = Instant::now() + DEADLINE;
    let page = loop {
        let page = http(port, "GET", "/metrics").map(|(status, body)| {
            assert_eq!(status, 200, "{body}");
            body
        });
        if let Some(page) = &page {
            let s = samples(page);
            if value(&s, "flotilla_agent_unit_restarts_total") >= 2.0
                && value(&s, "flotilla_agent_containers{health=\"healthy\"}") == 1.0
                && value(&s, "flotilla_agent_units{active_state=\"active\"}") >= 2.0
            {
                break page.clone();
            }
        }
        assert!(
            Instant::now() < until,
            "the agent's metrics did not show the units within {}s; last page:\n{}\nagent log:\n{}",
            DEADLINE.as_secs(),
            page.unwrap_or_default(),
            journal(&host)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    flotilla_testbed::promtool::check_metrics(&page);
    let s = samples(&page);
    assert!(value(&s, "flotilla_agent_reconcile_passes_total{result=\"ok\"}") >= 1.0);
    assert!(value(&s, "flotilla_agent_reconcile_duration_seconds_count") >= 1.0);
    // Each unit was started with one StartUnit call; the states come from
    // systemd's signals, with the load states listed (ListUnitsByNames),
    // each call timed.
    assert!(
        value(
            &s,
            "flotilla_agent_dbus_call_duration_seconds_count{method=\"StartUnit\"}"
        ) >= 3.0,
        "{page}"
    );
    assert!(
        value(
            &s,
            "flotilla_agent_dbus_call_duration_seconds_count{method=\"ListUnitsByNames\"}"
        ) >= 1.0,
        "{page}"
    );
    assert!(
        value(
            &s,
            "flotilla_agent_dbus_call_duration_seconds_sum{method=\"ListUnitsByNames\"}"
        ) > 0.0,
        "{page}"
    );
    assert_eq!(
        families(&page),
        documented_for_agents(),
        "docs/metrics.md's table of the agents' metrics differs from the page"
    );

    // Only GET /metrics is served there.
    assert_eq!(http(port, "GET", "/v1/units").map(|(s, _)| s), Some(404));
    assert_eq!(http(port, "POST", "/metrics").map(|(s, _)| s), Some(405));

    stop_agent(&host);
}

#[test]
fn an_agent_refuses_to_show_its_metrics_beyond_loopback_unless_told() {
    let out = Command::new(BIN)
        .args([
            "agent",
            "--server",
            "https://127.0.0.1:1",
            "--metrics-listen",
            "0.0.0.0:9559",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--metrics-allow-remote"), "{stderr}");
}
