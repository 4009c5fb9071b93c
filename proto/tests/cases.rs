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
//! Lines before the first `===` are comments. When the expected output
//! changes on purpose, run with `UPDATE_EXPECT=1` to rewrite the files, then
//! read the diff before committing it.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::fmt::Write as _;
use std::path::Path;

use flotilla_proto::{UnitName, UnitSpec};

struct Case {
    title: String,
    unit: String,
    show: Vec<String>,
    input: String,
    output: String,
}

fn parse_cases(text: &str) -> (String, Vec<Case>) {
    let mut preamble = String::new();
    let mut cases: Vec<Case> = Vec::new();
    #[derive(PartialEq)]
    enum Part {
        Header,
        Input,
        Output,
    }
    let mut part = Part::Header;
    for line in text.split_inclusive('\n') {
        if let Some(title) = line.strip_prefix("=== ") {
            cases.push(Case {
                title: title.trim().to_owned(),
                unit: "test.service".to_owned(),
                show: vec!["file".to_owned()],
                input: String::new(),
                output: String::new(),
            });
            part = Part::Header;
            continue;
        }
        let Some(case) = cases.last_mut() else {
            preamble.push_str(line);
            continue;
        };
        match line.trim_end_matches('\n') {
            "--- input" => part = Part::Input,
            "--- output" => part = Part::Output,
            l => match part {
                Part::Header => {
                    if let Some(u) = l.strip_prefix("unit:") {
                        case.unit = u.trim().to_owned();
                    } else if let Some(s) = l.strip_prefix("show:") {
                        case.show = s.split_whitespace().map(str::to_owned).collect();
                    } else {
                        assert!(
                            l.trim().is_empty(),
                            "case {:?}: unexpected line {l:?}",
                            case.title
                        );
                    }
                }
                Part::Input => case.input.push_str(line),
                Part::Output => case.output.push_str(line),
            },
        }
    }
    for case in &mut cases {
        // A blank line separates cases; it is not part of the output.
        let trimmed = case.output.trim_end_matches('\n').len();
        case.output.truncate(trimmed);
        if trimmed > 0 {
            case.output.push('\n');
        }
    }
    (preamble, cases)
}

fn run_case(case: &Case) -> String {
    let mut out = String::new();
    let name = match UnitName::parse(&case.unit) {
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
    for what in &case.show {
        let shown = match what.as_str() {
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
    let text = std::fs::read_to_string(&path).unwrap();
    let (preamble, cases) = parse_cases(&text);
    assert!(!cases.is_empty(), "{file} holds no case");
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut failures = Vec::new();
    let mut rewritten = preamble;
    for case in &cases {
        let actual = run_case(case);
        if actual != case.output {
            failures.push(format!(
                "--- {file}: {}\n--- expected\n{}--- actual\n{}",
                case.title, case.output, actual
            ));
        }
        writeln!(rewritten, "=== {}", case.title).unwrap();
        if case.unit != "test.service" {
            writeln!(rewritten, "unit: {}", case.unit).unwrap();
        }
        if case.show != ["file"] {
            writeln!(rewritten, "show: {}", case.show.join(" ")).unwrap();
        }
        write!(rewritten, "--- input\n{}--- output\n{}", case.input, actual).unwrap();
        if !actual.is_empty() && !actual.ends_with('\n') {
            rewritten.push('\n');
        }
        rewritten.push('\n');
    }
    let rewritten = rewritten.trim_end().to_owned() + "\n";
    if update {
        std::fs::write(&path, rewritten).unwrap();
        return;
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
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
    container_network => "container_network.txt",
    container_objects => "container_objects.txt",
}
