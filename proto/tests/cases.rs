//! Behaviour as data: every file in `tests/data/` holds cases of unit text
//! in and options or diagnostics out.
//!
//! A file is a list of cases:
//!
//! ```text
//! === what the case shows
//! unit: web@1.service          (optional; default test.service)
//! show: fleet resources        (optional; default file; any of:
//!                               name file fleet container object resources hash)
//! --- input
//! [Unit]
//! Description=...
//! --- output
//! <the diagnostics, one per line, then what `show` asks for>
//! ```
//!
//! Lines before the first `===` are comments. The harness is the testbed's
//! (`flotilla_testbed::data`): when the expected output changes on purpose,
//! run with `UPDATE_EXPECT=1` to rewrite the files (the run still fails),
//! read the diff, and run again.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::fmt::Write as _;
use std::path::Path;

use flotilla_proto::{UnitName, UnitSpec};
use flotilla_testbed::data::{self, Case};

fn run_case(case: &Case) -> String {
    let mut out = String::new();
    let name = match UnitName::parse(case.header("unit").unwrap_or("test.service")) {
        Ok(n) => n,
        Err(e) => {
            writeln!(out, "name error: {e}").unwrap();
            return out;
        }
    };
    let (spec, diagnostics) = UnitSpec::read(&name, &case.input);
    for d in &diagnostics {
        writeln!(out, "{}", d.display_with(name.as_str())).unwrap();
    }
    let Some(spec) = spec else {
        return out;
    };
    assert_round_trip(&case.title, &spec.file);
    let show: Vec<&str> = case
        .header("show")
        .map_or(vec!["file"], |s| s.split_whitespace().collect());
    for what in show {
        let shown = match what {
            "file" => spec.file.to_string(),
            "name" => format!("{}\n", spec.name),
            "fleet" => json(&spec.fleet),
            "container" => json(&spec.container),
            "object" => json(&spec.object),
            "resources" => json(&spec.resources),
            "hash" => format!("{}\n", spec.hash),
            other => panic!("case {:?}: unknown show {other:?}", case.title),
        };
        out.push_str(&shown);
    }
    out
}

/// Parse -> serialise -> parse gives the same sections and entries.
fn assert_round_trip(title: &str, file: &flotilla_proto::UnitFile) {
    let text = file.to_string();
    let (again, diagnostics) = flotilla_proto::UnitFile::parse(&text);
    assert!(
        diagnostics.is_empty(),
        "case {title:?}: serialised text does not parse: {diagnostics:?}"
    );
    let strip = |f: &flotilla_proto::UnitFile| {
        f.sections
            .iter()
            .map(|s| {
                let entries: Vec<_> = s
                    .entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.clone()))
                    .collect();
                (s.name.clone(), entries)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        strip(file),
        strip(&again),
        "case {title:?}: round trip changed the file"
    );
    assert_eq!(
        file.content_hash(),
        again.content_hash(),
        "case {title:?}: round trip changed the hash"
    );
}

fn json<T: serde::Serialize>(value: &T) -> String {
    let mut s = serde_json::to_string_pretty(value).unwrap();
    s.push('\n');
    s
}

fn run_file(file: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(file);
    data::check_file(&path, &["unit", "show"], run_case);
}

macro_rules! data_files {
    ($($test:ident => $file:literal),* $(,)?) => {
        $(#[test] fn $test() { run_file($file); })*
    };
}

data_files! {
    syntax => "syntax.txt",
    names => "names.txt",
    sections => "sections.txt",
    resources => "resources.txt",
    fleet => "fleet.txt",
    container => "container.txt",
    container_host => "container_host.txt",
    container_network => "container_network.txt",
    container_objects => "container_objects.txt",
}
