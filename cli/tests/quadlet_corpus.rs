//! Podman Quadlet's own test cases as data: every `.container` file of
//! podman's `test/e2e/quadlet/` (vendored in `tests/data/quadlet/`, see its
//! README), with its drop-ins, is checked by `flotilla verify` as a user
//! would run it, and the outcome of each must be the one listed in
//! `tests/data/quadlet/expected.txt`: `accepted`, or `refused:` and the
//! first error.
//!
//! When flotilla learns new keys, the outcomes change on purpose. To
//! refresh the expectations, run the one explicit command
//!
//! ```text
//! cargo test -p flotilla --test quadlet_corpus -- --ignored refresh_expectations
//! ```
//!
//! and read `git diff cli/tests/data/quadlet/expected.txt` before
//! committing it (it refuses to run under `CI`). The count of accepted
//! cases is in docs/containers.md (a test checks it); the refresh prints
//! it.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const EXPECTED: &str = "expected.txt";

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/quadlet")
}

/// `NAME.container: accepted` or `NAME.container: refused: FIRST ERROR`,
/// one line per case, in name order.
fn outcomes() -> String {
    let dir = corpus();
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".container"))
        .collect();
    files.sort();
    assert!(files.len() >= 100, "{} cases", files.len());
    let out = Command::new(common::BIN)
        .args(["verify", "-o", "json"])
        .args(&files)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let reports = report["files"].as_array().unwrap();
    let mut lines = String::new();
    for file in &files {
        // The file's own report, then its drop-ins', in verify's order.
        let first_error = reports
            .iter()
            .filter(|r| r["file"] == file.as_str() || r["dropin_of"] == file.as_str())
            .flat_map(|r| {
                let source = r["file"].as_str().unwrap_or_default().to_owned();
                r["diagnostics"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(move |d| (source.clone(), d.clone()))
            })
            .find(|(_, d)| d["severity"] == "error");
        let outcome = match first_error {
            None => "accepted".to_owned(),
            Some((source, d)) => {
                let mut text = String::from("refused: ");
                if source != *file {
                    text.push_str(&format!("{source}: "));
                }
                if let Some(line) = d["line"].as_u64() {
                    text.push_str(&format!("line {line}: "));
                }
                if let Some(option) = d["option"].as_object() {
                    text.push_str(&format!(
                        "[{}] {}: ",
                        option["section"].as_str().unwrap(),
                        option["key"].as_str().unwrap()
                    ));
                }
                text.push_str(d["message"].as_str().unwrap());
                text.replace('\n', "\\n")
            }
        };
        lines.push_str(&format!("{file}: {outcome}\n"));
    }
    lines
}

#[test]
fn each_quadlet_case_has_its_expected_outcome() {
    let expected = std::fs::read_to_string(corpus().join(EXPECTED)).unwrap();
    let actual = outcomes();
    if expected != actual {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .filter(|(e, a)| e != a)
            .map(|(e, a)| format!("expected: {e}\nactual:   {a}"))
            .collect();
        panic!(
            "Quadlet cases changed outcome (refresh with `cargo test -p flotilla --test quadlet_corpus -- --ignored refresh_expectations` if that is intended):\n{}\n({} expected lines, {} actual)",
            diff.join("\n"),
            expected.lines().count(),
            actual.lines().count()
        );
    }
}

/// The figure docs/containers.md gives.
fn figure(outcomes: &str) -> String {
    let total = outcomes.lines().count();
    let accepted = outcomes
        .lines()
        .filter(|l| l.ends_with(": accepted"))
        .count();
    format!("**{accepted} of {total}**")
}

#[test]
fn the_docs_give_the_number_of_accepted_cases() {
    let expected = std::fs::read_to_string(corpus().join(EXPECTED)).unwrap();
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/containers.md");
    let doc = std::fs::read_to_string(doc).unwrap();
    let figure = figure(&expected);
    assert!(
        doc.contains(&figure),
        "docs/containers.md should say {figure} Quadlet cases are accepted"
    );
}

#[test]
#[ignore = "rewrites tests/data/quadlet/expected.txt: run it explicitly, then review the diff"]
fn refresh_expectations() {
    assert!(
        std::env::var_os("CI").is_none(),
        "refreshing expectations is for a maintainer, not CI"
    );
    let actual = outcomes();
    std::fs::write(corpus().join(EXPECTED), &actual).unwrap();
    println!(
        "{} Quadlet cases accepted: put that in docs/containers.md",
        figure(&actual)
    );
}
