//! flotilla reads unit files as a real systemd does: on a test host (its
//! own systemd as PID 1, see `flotilla_testbed::Host`), units whose lines
//! end in `\r`, NUL and their combinations are loaded by systemd, and the
//! sections, keys and lines it reports (`systemd-analyze verify`) and the
//! settings it applies (`systemctl show`) are the ones flotilla's parser
//! reports. `flotilla verify --strict` refuses such files.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use flotilla_proto::{UnitFile, UnitSpec};
use flotilla_testbed::{Host, HostOptions};

/// Where the units go in the host: its own (throw-away) `/etc`.
const UNIT_DIR: &str = "/etc/systemd/system";

/// Units whose keys systemd does not know (`Probe*`) in the sections it
/// does: `systemd-analyze verify` names each with its section and line, so
/// that what systemd read can be compared with what flotilla read.
const PROBES: [(&str, &str); 5] = [
    (
        "cr.service",
        "[Unit]\nDescription=hi\rProbeA=1\r[Service]\rProbeB=2\rExecStart=/bin/true\n",
    ),
    (
        "nul.service",
        "[Unit]\nDescription=hi\0ProbeA=1\0[Service]\0ProbeB=2\nExecStart=/bin/true\0",
    ),
    (
        "mixed.service",
        "[Unit]\nDescription=hi\rProbeA=1\r[Service]\rProbeB=2\r\nProbeC=3\n\rProbeD=4\0\
         ProbeE=5\n\0ProbeF=6\r\0ProbeG=7\r\n\0ProbeH=8\n\n\0\r\nProbeJ=1\nExecStart=/bin/true\n",
    ),
    (
        "bom.service",
        "[Unit]\n\u{feff}ProbeA=1\n\u{feff}ProbeB=2\n[Service]\n\u{feff}# comment\nProbeC=3\r\nExecStart=/bin/true\n",
    ),
    (
        "crlf.service",
        "\u{feff}[Unit]\r\nDescription=hi\r\nProbeA=1\r\n[Service]\r\nProbeB=x \\\r\n # skipped\r\n y\r\nProbeC=2\r\nExecStart=/bin/true\r\n",
    ),
];

/// The unit that hid a whole `[Service]` behind a `Description=`.
const HIDDEN: &str = "[Unit]\nDescription=web\r[Service]\rExecStartPre=/bin/true\rMemoryMax=100G\r\
                      ExecStart=/bin/sleep 1\r[X-Fleet]\rConflicts=*\n";

fn boot() -> Host {
    Host::boot("syntax", &HostOptions::default()).unwrap()
}

/// Writes a unit file into the host, byte for byte, through its root as
/// this machine sees it.
fn write_unit(host: &Host, name: &str, text: &str) {
    let path = format!("/proc/{}/root{UNIT_DIR}/{name}", host.leader_pid());
    std::fs::write(&path, text).unwrap();
}

/// `(line, section, key)` of every `Unknown key` message of
/// `systemd-analyze verify` for the unit.
fn systemd_unknown_keys(host: &Host, name: &str) -> BTreeSet<(u32, String, String)> {
    let path = format!("{UNIT_DIR}/{name}");
    let out = host.output(&["systemd-analyze", "verify", &path]).unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let mut keys = BTreeSet::new();
    // "/etc/systemd/system/cr.service:3: Unknown key 'ProbeA' in section [Unit], ignoring."
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(&format!("{path}:")) else {
            continue;
        };
        let Some((number, message)) = rest.split_once(": Unknown key '") else {
            continue;
        };
        let (key, rest) = message.split_once("' in section [").unwrap();
        let (section, _) = rest.split_once(']').unwrap();
        keys.insert((number.parse().unwrap(), section.to_owned(), key.to_owned()));
    }
    assert!(!keys.is_empty(), "systemd-analyze verify said:\n{text}");
    keys
}

/// The same, as flotilla's parser reads the file.
fn flotilla_unknown_keys(text: &str) -> BTreeSet<(u32, String, String)> {
    let (file, _) = UnitFile::parse(text);
    file.sections
        .iter()
        .flat_map(|s| {
            s.entries
                .iter()
                .filter(|e| e.key.starts_with("Probe") || e.key.starts_with('\u{feff}'))
                .map(|e| (e.line, s.name.clone(), e.key.clone()))
        })
        .collect()
}

fn show(host: &Host, unit: &str, property: &str) -> String {
    let out = host
        .run(&["systemctl", "show", "--value", "-p", property, unit])
        .unwrap();
    out.trim_end_matches('\n').to_owned()
}

#[test]
fn systemd_reads_the_lines_flotilla_reads() {
    let host = boot();
    for (name, text) in PROBES {
        write_unit(&host, name, text);
    }
    for (name, text) in PROBES {
        let mut systemd = systemd_unknown_keys(&host, name);
        let mut flotilla = flotilla_unknown_keys(text);
        // A continued line: systemd names its last line, flotilla its
        // first; compare those by section and key.
        let continued = |keys: &mut BTreeSet<(u32, String, String)>| {
            let found: Vec<_> = keys
                .iter()
                .filter(|(_, _, k)| k == "ProbeB")
                .cloned()
                .collect();
            for k in &found {
                keys.remove(k);
            }
            found
                .into_iter()
                .map(|(_, s, k)| (s, k))
                .collect::<Vec<_>>()
        };
        if name == "crlf.service" {
            assert_eq!(continued(&mut systemd), continued(&mut flotilla), "{name}");
        }
        assert_eq!(
            systemd, flotilla,
            "{name}: systemd (left) and flotilla (right)"
        );
    }

    // The unit that hides a [Service] behind its Description=: systemd runs
    // the hidden lines, and flotilla reads, counts and places them too.
    write_unit(&host, "hidden.service", HIDDEN);
    host.run(&["systemctl", "daemon-reload"]).unwrap();
    assert_eq!(show(&host, "hidden.service", "LoadState"), "loaded");
    let checked = UnitSpec::check("hidden.service", "hidden.service", HIDDEN).unwrap();
    let spec = &checked.spec;
    assert_eq!(
        show(&host, "hidden.service", "Description"),
        spec.file.last_value("Unit", "Description").unwrap().value
    );
    assert_eq!(
        show(&host, "hidden.service", "MemoryMax"),
        spec.resources.memory_bytes.unwrap().to_string()
    );
    let pre = show(&host, "hidden.service", "ExecStartPre");
    assert!(pre.contains("path=/bin/true"), "{pre}");
    assert_eq!(
        spec.file
            .last_value("Service", "ExecStartPre")
            .unwrap()
            .value,
        "/bin/true"
    );
    assert_eq!(spec.fleet.conflicts, ["*"]);
}

#[test]
fn verify_strict_refuses_lines_hidden_by_carriage_returns() {
    let dir = common::TempDir::new("hidden");
    dir.write("web.service", HIDDEN);
    let run = |strict: bool| {
        let mut args = vec!["verify"];
        if strict {
            args.push("--strict");
        }
        args.push("web.service");
        let mut child = Command::new(common::BIN)
            .args(&args)
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"").unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run(true);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(
            "web.service:2: warning: line ends in \"\\r\" (and so do 5 more lines): systemd reads a \\r or NUL byte as the end of a line"
        ),
        "{text}"
    );
    assert_eq!(run(false).status.code(), Some(0));
}
