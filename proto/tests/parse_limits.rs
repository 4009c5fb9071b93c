//! The parse is linear in its input, and a unit file is bounded: each
//! limit is an error on the line where it is reached. Work is counted in
//! steps (`flotilla_proto::work`), never timed.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use flotilla_proto::unit_file::{
    MAX_CONTINUED_LINES, MAX_ENTRIES, MAX_LINE_BYTES, MAX_LINES, MAX_SECTIONS, MAX_UNIT_FILE_BYTES,
};
use flotilla_proto::{Diagnostic, UnitFile, UnitSpec, work};

/// Steps the parser may take per byte of input (and per line, each of
/// which is at least one byte).
const STEPS_PER_BYTE: u64 = 4;

fn parse_counted(text: &str) -> (UnitFile, Vec<Diagnostic>, u64) {
    let ((file, diagnostics), steps) = work::measure(|| UnitFile::parse(text));
    (file, diagnostics, steps)
}

fn assert_linear(what: &str, text: &str) -> Vec<Diagnostic> {
    let (_, diagnostics, steps) = parse_counted(text);
    let bound = STEPS_PER_BYTE * (text.len() as u64 + 1);
    assert!(
        steps <= bound,
        "{what}: {steps} steps for {} bytes (at most {bound})",
        text.len()
    );
    diagnostics
}

/// A logical line of `n` lines (at least 2), each continued onto the next.
fn continued(n: usize) -> String {
    let mut text = String::from("[Service]\nExecStart=/bin/echo \\\n");
    for _ in 2..n.max(2) {
        text.push_str("x\\\n");
    }
    text.push_str("end\n");
    text
}

#[test]
fn a_long_continued_line_costs_steps_in_proportion_to_its_bytes() {
    // The shape that took seconds to parse: 131,000 continued lines in
    // 262 KB (rescanning the joined line for each). It is linear now, and
    // past the limit on continued lines.
    let mut text = String::from("[Service]\nExecStart=/bin/true \\\n");
    while text.len() + 2 < 262_000 {
        text.push_str("\\\n");
    }
    let diagnostics = assert_linear("131,000 continued lines", &text);
    // Also more lines than a unit file may have.
    assert_eq!(diagnostics.len(), 2, "{diagnostics:?}");
    assert_eq!(diagnostics[1].line, Some(MAX_LINES as u32 + 1));
    assert_eq!(diagnostics[0].line, Some(2));
    assert_eq!(
        diagnostics[0].message,
        format!(
            "line is continued over more than {MAX_CONTINUED_LINES} lines, the most flotilla accepts"
        )
    );
}

#[test]
fn steps_grow_in_proportion_to_the_input_whatever_its_shape() {
    type Shape = Box<dyn Fn(usize) -> String>;
    let shapes: Vec<(&str, Shape)> = vec![
        (
            "plain assignments",
            Box::new(|n| {
                let mut t = String::from("[Service]\n");
                for i in 0..n {
                    t.push_str(&format!("Environment=A{i}=value\n"));
                }
                t
            }),
        ),
        (
            "lines continued up to the limit, again and again",
            Box::new(|n| {
                let mut t = String::from("[Service]\n");
                for _ in 0..n / MAX_CONTINUED_LINES + 1 {
                    t.push_str("ExecStartPre=/bin/echo \\\n");
                    for _ in 1..MAX_CONTINUED_LINES {
                        t.push_str("a\\\n");
                    }
                    t.push_str("b\n");
                }
                t
            }),
        ),
        (
            "comments inside a continuation",
            Box::new(|n| {
                let mut t = String::from("[Service]\nExecStart=/bin/echo \\\n");
                for _ in 0..n {
                    t.push_str("# a comment that is skipped \\\n");
                }
                t.push_str("end\n");
                t
            }),
        ),
        (
            "backslashes",
            Box::new(|n| format!("[Unit]\nDescription={}x\n", "\\".repeat(2 * n))),
        ),
        (
            "lines ending in carriage returns",
            Box::new(|n| "[Unit]\rDescription=x\r".repeat(n / 2 + 1)),
        ),
        (
            "errors on every line",
            Box::new(|n| format!("[Unit]\n{}", "garbage\n".repeat(n))),
        ),
        (
            "section headers",
            Box::new(|n| "[X-A]\n".repeat(n.min(MAX_SECTIONS))),
        ),
        ("one long continued line", Box::new(continued)),
    ];
    for (what, make) in &shapes {
        for n in [10, 100, 1_000, 10_000, 30_000] {
            let text = make(n);
            if text.len() <= MAX_UNIT_FILE_BYTES {
                assert_linear(&format!("{what} (n = {n})"), &text);
            }
        }
    }
}

#[test]
fn a_file_over_the_size_limit_is_refused_on_the_line_where_it_falls() {
    let line = "Environment=A=0123456789012345678901234567890123456789012345678901234\n";
    let mut text = String::from("[Service]\n");
    while text.len() <= MAX_UNIT_FILE_BYTES {
        text.push_str(line);
    }
    let expected_line = (MAX_UNIT_FILE_BYTES - "[Service]\n".len()) / line.len() + 2;
    let diagnostics = assert_linear("too big", &text);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!(diagnostics[0].line, Some(expected_line as u32));
    assert_eq!(
        diagnostics[0].message,
        format!(
            "unit file is {} bytes, more than the {MAX_UNIT_FILE_BYTES} bytes flotilla accepts (the limit falls on this line)",
            text.len()
        )
    );
    // One byte less is read.
    text.truncate(MAX_UNIT_FILE_BYTES);
    let (_, diagnostics, _) = parse_counted(&text);
    assert!(diagnostics.is_empty(), "{:?}", diagnostics.first());
}

#[test]
fn too_many_lines() {
    let ok = "\n".repeat(MAX_LINES);
    assert!(parse_counted(&ok).1.is_empty());
    let text = "\n".repeat(MAX_LINES + 1);
    let diagnostics = assert_linear("too many lines", &text);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!(diagnostics[0].line, Some(MAX_LINES as u32 + 1));
    assert_eq!(
        diagnostics[0].message,
        format!("unit file has more than {MAX_LINES} lines, the most flotilla accepts")
    );
}

#[test]
fn too_many_assignments_or_sections() {
    let mut text = String::from("[Service]\n");
    text.push_str(&"A=1\n".repeat(MAX_ENTRIES));
    assert!(parse_counted(&text).1.is_empty());
    text.push_str("A=1\nB=2\n");
    let diagnostics = assert_linear("too many assignments", &text);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!(diagnostics[0].line, Some(MAX_ENTRIES as u32 + 2));
    assert_eq!(
        diagnostics[0].message,
        format!("unit file has more than {MAX_ENTRIES} assignments, the most flotilla accepts")
    );

    let mut text = "[X-A]\n".repeat(MAX_SECTIONS);
    assert!(parse_counted(&text).1.is_empty());
    text.push_str("[X-B]\n");
    let diagnostics = assert_linear("too many sections", &text);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!(diagnostics[0].line, Some(MAX_SECTIONS as u32 + 1));
    assert_eq!(
        diagnostics[0].message,
        format!(
            "unit file has more than {MAX_SECTIONS} section headers, the most flotilla accepts"
        )
    );
}

#[test]
fn a_logical_line_is_bounded_in_bytes_and_in_lines() {
    // At the limit on continued lines, read whole.
    let (file, diagnostics, _) = parse_counted(&continued(MAX_CONTINUED_LINES));
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let value = &file.last_value("Service", "ExecStart").unwrap().value;
    assert!(value.ends_with("x x end"), "{value}");
    // One more is an error on the line it starts on, and the lines that
    // continue it are not read as lines of their own.
    let mut text = continued(MAX_CONTINUED_LINES + 1);
    text.push_str("ExecStop=/bin/true\n");
    let (file, diagnostics, _) = parse_counted(&text);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!(diagnostics[0].line, Some(2));
    assert_eq!(
        file.sections[0]
            .entries
            .iter()
            .map(|e| e.key.as_str())
            .collect::<Vec<_>>(),
        ["ExecStop"]
    );

    // Bytes: two halves that fit, joined, do not.
    let half = "y".repeat(MAX_LINE_BYTES / 2);
    let text = format!("[Unit]\nDescription={half}\\\n{half}\\\n{half}\nAfter=a.service\n");
    let diagnostics = assert_linear("a long logical line", &text);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!(diagnostics[0].line, Some(2));
    assert_eq!(
        diagnostics[0].message,
        format!(
            "line and the lines that continue it are longer than {MAX_LINE_BYTES} bytes, the most flotilla accepts"
        )
    );
}

#[test]
fn a_unit_stopped_by_a_limit_is_rejected_without_further_noise() {
    let mut text = String::from("[Container]\n");
    text.push_str(&"Label=a=b\n".repeat(MAX_ENTRIES + 1));
    let err = UnitSpec::check("web.service", "web.service", &text).unwrap_err();
    let errors: Vec<String> = err.errors().map(|d| d.to_string()).collect();
    assert_eq!(
        errors,
        [format!(
            "line {}: error: unit file has more than {MAX_ENTRIES} assignments, the most flotilla accepts",
            MAX_ENTRIES + 2
        )]
    );
}
