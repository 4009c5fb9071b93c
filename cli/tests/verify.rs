//! `flotilla verify` run as a user runs it: the real binary, real files,
//! exit codes and messages.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::TempDir;

fn flotilla(args: &[&str], cwd: &Path, stdin: Option<&str>) -> Output {
    let mut child = Command::new(common::BIN)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

const GOOD: &str = "[Unit]\nDescription=web\n[Service]\nExecStart=/bin/true\n";

#[test]
fn a_valid_file_passes() {
    let dir = TempDir::new("valid");
    dir.write("web.service", GOOD);
    let out = flotilla(&["verify", "web.service"], &dir.0, None);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "1 unit file checked: 0 errors, 0 warnings\n");
}

#[test]
fn an_error_names_file_line_and_option_and_fails() {
    let dir = TempDir::new("error");
    dir.write(
        "web.service",
        "[Unit]\nDescription=web\ngarbage\n[Service]\nCPUQuota=lots\n",
    );
    let out = flotilla(&["verify", "web.service"], &dir.0, None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        "web.service:3: error: expected Key=Value, a [Section] header or a comment, found \"garbage\"\n\
         web.service:5: error: [Service] CPUQuota: expected a percentage of one CPU such as 50% or 200%, found \"lots\"\n\
         1 unit file checked: 2 errors, 0 warnings\n"
    );
}

#[test]
fn warnings_pass_unless_strict() {
    let dir = TempDir::new("warn");
    dir.write("web.service", "[Servce]\nExecStart=/bin/true\n");
    let out = flotilla(&["verify", "web.service"], &dir.0, None);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        "web.service:1: warning: unknown section [Servce] is ignored; did you mean [Service]?\n\
         1 unit file checked: 0 errors, 1 warning\n"
    );
    let strict = flotilla(&["verify", "--strict", "web.service"], &dir.0, None);
    assert_eq!(strict.status.code(), Some(1));
}

#[test]
fn a_directory_checks_every_unit_file_inside() {
    let dir = TempDir::new("dir");
    dir.write("units/a.service", GOOD);
    dir.write("units/nested/b.timer", "[Timer]\nOnCalendar=daily\n");
    dir.write("units/nested/c.service", "oops\n");
    dir.write("units/README.md", "not a unit\n");
    dir.write("units/.git/config.service", "not checked\n");
    let out = flotilla(&["verify", "units"], &dir.0, None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        "units/nested/c.service:1: error: expected a [Section] header before the first assignment, found \"oops\"\n\
         3 unit files checked: 1 error, 0 warnings\n"
    );
}

#[test]
fn standard_input_is_checked_under_a_given_name() {
    let dir = TempDir::new("stdin");
    let out = flotilla(&["verify", "-"], &dir.0, Some(GOOD));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    // As a timer, the [Service] section does not apply: a warning.
    let timer = flotilla(
        &["verify", "--stdin-name", "nightly.timer", "-"],
        &dir.0,
        Some("[Timer]\nOnCalendar=daily\n[Service]\nExecStart=/bin/true\n"),
    );
    assert_eq!(timer.status.code(), Some(0));
    assert_eq!(
        stdout(&timer),
        "<stdin>:3: warning: section [Service] is for .service units and is ignored in a .timer unit\n\
         1 unit file checked: 0 errors, 1 warning\n"
    );
}

#[test]
fn a_missing_file_or_bad_name_is_an_error() {
    let dir = TempDir::new("missing");
    dir.write("bad name.service", GOOD);
    let out = flotilla(
        &["verify", "nope.service", "bad name.service"],
        &dir.0,
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.starts_with("nope.service: error: cannot read: "),
        "{text}"
    );
    assert!(
        text.contains(
            "bad name.service: error: unit name \"bad name.service\" contains ' ': only letters, digits and \":_.@-\" are allowed\n"
        ),
        "{text}"
    );
    assert!(
        text.ends_with("2 unit files checked: 2 errors, 0 warnings\n"),
        "{text}"
    );
}

#[test]
fn json_output_carries_every_diagnostic() {
    let dir = TempDir::new("json");
    dir.write("web.service", "[Unit]\nDescription=x\ngarbage\n[Bogus]\n");
    let out = flotilla(&["verify", "-o", "json", "web.service"], &dir.0, None);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["errors"], 1);
    assert_eq!(report["warnings"], 1);
    let file = &report["files"][0];
    assert_eq!(file["file"], "web.service");
    assert_eq!(file["unit"], "web.service");
    assert_eq!(file["diagnostics"][0]["severity"], "error");
    assert_eq!(file["diagnostics"][0]["line"], 3);
    assert_eq!(file["diagnostics"][1]["severity"], "warning");
}

#[test]
fn no_file_is_a_usage_error() {
    let dir = TempDir::new("usage");
    let out = flotilla(&["verify"], &dir.0, None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("required"));
}

#[test]
fn network_and_volume_files_in_a_directory_are_checked() {
    let dir = TempDir::new("objects");
    dir.write("units/shop.network", "[Network]\nSubnet=10.9.0.0/24\n");
    dir.write("units/shop.volume", "[Volume]\nDrivr=local\n");
    dir.write(
        "units/web.service",
        "[Container]\nImage=nginx\nNetwork=shop.network\nVolume=shop.volume:/data\n",
    );
    let out = flotilla(&["verify", "units"], &dir.0, None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        "units/shop.volume:2: error: [Volume] Drivr: unknown key in [Volume]; did you mean Driver?\n\
         3 unit files checked: 1 error, 0 warnings\n"
    );
}
