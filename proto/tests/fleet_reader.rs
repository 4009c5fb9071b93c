//! flotilla's port of fleet's unit-file reader (`fleet_v1::options`)
//! against fleet's own: the go-systemd `unit` package fleet 1.0 vendors,
//! built from fleet's source and fed the same texts (hand-picked edge cases
//! and generated ones, with a fixed seed). Both must read the same options
//! (or both refuse), write the same file back and hash it the same.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::io::Write;
use std::process::{Command, Stdio};

use flotilla_proto::fleet_v1::options::{self, UnitHash};
use flotilla_proto::wire::UnitOption;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::Value;

const EDGE_CASES: &[&str] = &[
    "",
    "[Unit]\nDescription=hello\n",
    "# only a comment",
    "garbage before\n[Unit]\nA=1",
    "[Unit]\r\nA=1\r\nB=2 \\\r\nC=3\r",
    "[Service]\nExecStart=/bin/sh -c \\\n  \"sleep 1\"\nUser=core\n",
    "[S]\nA=x \\\n\nB=y",
    "[S]\nA=x\\",
    "[S]\nA=x \\",
    "[S]\n# comment \\\ncontinued\nA=1",
    "[S]\n; comment \\ \nstill comment\nB=2",
    "[S]\nA=\nB=   \nC = spaced  ",
    "[S]\n  Indented = value\n\t\tTabbed=v",
    "[S]\n=no name",
    "[S]\nNoEquals",
    "[S]\nNo\nEquals=1",
    "[Unterminated\nA=1",
    "[S] trailing\nA=1",
    "[S]   \nA=1",
    "[A]\nx=1\n[B]\ny=2\n[A]\nz=3",
    "[Multi\nLine]\nA=1",
    "[S]\nA=a=b=c",
    "[S]\nA=\"quoted \\\" value\"",
    "[S]\nA=1 \\\n B=2 \\\n C=3",
    "[S]\nA=ünïcödé \u{a0}\n",
    "[S]\nA=1\u{85}\nB=2",
    "[X-Fleet]\nMachineMetadata=\"region=eu\" disk=ssd\nConflicts=a*.service b.service",
];

/// Runs fleet's reader on `texts`; one JSON value per text.
fn fleet_reads(reader: &std::path::Path, texts: &[String]) -> Vec<Value> {
    let mut child = Command::new(reader)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let input = serde_json::to_vec(texts).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

fn options_json(options: &[UnitOption]) -> Value {
    serde_json::to_value(options).unwrap()
}

fn compare(texts: &[String], fleet: &[Value]) {
    assert_eq!(texts.len(), fleet.len());
    for (text, theirs) in texts.iter().zip(fleet) {
        match (options::parse(text), theirs.get("error")) {
            (Ok(ours), None) => {
                assert_eq!(
                    options_json(&ours),
                    theirs["options"],
                    "options of {text:?}"
                );
                let serialized = options::serialize(&ours);
                assert_eq!(
                    serialized,
                    theirs["serialized"].as_str().unwrap(),
                    "file of {text:?}"
                );
                assert_eq!(
                    UnitHash::of(&ours).to_string(),
                    theirs["hash"].as_str().unwrap(),
                    "hash of {text:?}"
                );
            }
            (Err(_), Some(_)) => {}
            (ours, theirs) => panic!("{text:?}: flotilla reads {ours:?}, fleet {theirs:?}"),
        }
    }
}

#[test]
fn edge_cases_read_as_fleet_reads_them() {
    let Some(reader) = flotilla_testbed::fleet::unit_reader().unwrap() else {
        return;
    };
    let texts: Vec<String> = EDGE_CASES.iter().map(|s| (*s).to_owned()).collect();
    compare(&texts, &fleet_reads(&reader, &texts));
}

/// Lines made of the pieces that matter to the reader.
fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("[Unit]".to_owned()),
        Just("[X-Fleet]".to_owned()),
        Just(String::new()),
        Just("   ".to_owned()),
        Just("# note \\".to_owned()),
        Just("; note".to_owned()),
        Just("ExecStart=/bin/sh -c \\".to_owned()),
        Just("  \"sleep 1\"".to_owned()),
        Just("Key = spaced value  ".to_owned()),
        "[A-Za-z]{1,4}=[a-z =\\\\\"\\t]{0,10}",
        "[a-z =\\[\\]#;\\\\\"\\t\\r]{0,12}",
    ]
}

#[test]
fn generated_files_read_as_fleet_reads_them() {
    let Some(reader) = flotilla_testbed::fleet::unit_reader().unwrap() else {
        return;
    };
    let file = (
        prop::collection::vec(line(), 0..12),
        prop_oneof![Just("\n"), Just("\r\n")],
        any::<bool>(),
    )
        .prop_map(|(lines, end, last_end)| {
            let mut text = lines.join(end);
            if last_end {
                text.push_str(end);
            }
            text
        });
    let mut runner = TestRunner::deterministic();
    let texts: Vec<String> = (0..600)
        .map(|_| file.new_tree(&mut runner).unwrap().current())
        .collect();
    compare(&texts, &fleet_reads(&reader, &texts));
}
