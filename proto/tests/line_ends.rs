//! Lines end where systemd ends them: at `\n`, `\r` and NUL. What flotilla
//! validates, places and counts is what systemd runs, including lines that
//! a `\r` or NUL hides from editors and `cat`.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use flotilla_proto::{Severity, UnitFile, UnitSpec};

/// The lines a unit shows in an editor (one, after the header) and the
/// lines systemd reads from it.
const HIDDEN_CR: &str = "[Unit]\nDescription=web\r[Service]\rExecStartPre=/bin/sh -c 'echo hidden'\r\
                         MemoryMax=100G\r[X-Fleet]\rConflicts=*\n";

fn keys(file: &UnitFile) -> Vec<(u32, String, String, String)> {
    file.sections
        .iter()
        .flat_map(|s| {
            s.entries
                .iter()
                .map(|e| (e.line, s.name.clone(), e.key.clone(), e.value.clone()))
        })
        .collect()
}

#[test]
fn lines_hidden_behind_carriage_returns_are_read_validated_and_counted() {
    let checked = UnitSpec::check("web.service", "web.service", HIDDEN_CR).unwrap();
    let spec = &checked.spec;
    assert_eq!(
        keys(&spec.file),
        [
            (2, "Unit".into(), "Description".into(), "web".into()),
            (
                4,
                "Service".into(),
                "ExecStartPre".into(),
                "/bin/sh -c 'echo hidden'".into()
            ),
            (5, "Service".into(), "MemoryMax".into(), "100G".into()),
            (7, "X-Fleet".into(), "Conflicts".into(), "*".into()),
        ]
    );
    // Counted for placement, and placed as fleet reads it.
    assert_eq!(spec.resources.memory_bytes, Some(100 << 30));
    assert_eq!(spec.fleet.conflicts, ["*"]);
    // And said, so that `verify --strict` fails on it.
    let warning = &checked.warnings[0];
    assert_eq!(warning.severity, Severity::Warning);
    assert_eq!(warning.line, Some(2));
    assert!(
        warning
            .message
            .starts_with("line ends in \"\\r\" (and so do 4 more lines): systemd reads"),
        "{}",
        warning.message
    );
}

#[test]
fn a_hidden_line_is_validated_like_any_other() {
    let text = "[Unit]\nDescription=web\r[X-Fleet]\rMachineID=not-an-id\n";
    let err = UnitSpec::check("web.service", "web.service", text).unwrap_err();
    let errors: Vec<String> = err.errors().map(|d| d.to_string()).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("line 4: error: [X-Fleet] MachineID: expected a machine ID"),
        "{errors:?}"
    );
}

#[test]
fn nul_bytes_end_lines_too() {
    let text = "[Unit]\nDescription=web\0[Service]\0MemoryMax=1G\n";
    let checked = UnitSpec::check("web.service", "web.service", text).unwrap();
    assert_eq!(checked.spec.resources.memory_bytes, Some(1 << 30));
    assert_eq!(checked.spec.file.sections[1].line, 3);
    assert!(
        checked.warnings[0]
            .message
            .starts_with("line ends in \"\\0\" (and so does 1 more line)"),
        "{}",
        checked.warnings[0].message
    );
}

#[test]
fn line_numbers_count_lines_as_systemd_does() {
    // The same file systemd-analyze verify was run on (systemd 252): it
    // reported ProbeA..ProbeJ on lines 3, 5, 6, 7, 8, 9, 10, 11, 16 and 17
    // (the last line of a continued line; flotilla names the first).
    let text = "[Unit]\nDescription=hi\rProbeA=1\r[Service]\rProbeB=2\r\nProbeC=3\n\rProbeD=4\0\
                ProbeE=5\n\0ProbeF=6\r\0ProbeG=7\r\n\0ProbeH=8\n\n\0\r\nProbeI=9\\\n a\\\r b\n\
                ProbeJ=1\nExecStart=/bin/true\n";
    let (file, diagnostics) = UnitFile::parse(text);
    let probes: Vec<(u32, &str)> = file
        .sections
        .iter()
        .flat_map(|s| s.entries.iter())
        .filter(|e| e.key.starts_with("Probe"))
        .map(|e| (e.line, e.key.as_str()))
        .collect();
    assert_eq!(
        probes,
        [
            (3, "ProbeA"),
            (5, "ProbeB"),
            (6, "ProbeC"),
            (7, "ProbeD"),
            (8, "ProbeE"),
            (9, "ProbeF"),
            (10, "ProbeG"),
            (11, "ProbeH"),
            (14, "ProbeI"),
            (17, "ProbeJ"),
        ]
    );
    assert_eq!(
        file.last_value("Service", "ProbeI").unwrap().value,
        "9  a  b"
    );
    // Only the warning about the line ends.
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!(diagnostics[0].line, Some(2));
}

#[test]
fn crlf_files_read_cleanly() {
    let text = "[Unit]\r\nDescription=web\r\n[Service]\r\nExecStart=/bin/true\r\n";
    let checked = UnitSpec::check("web.service", "web.service", text).unwrap();
    assert!(checked.warnings.is_empty(), "{:?}", checked.warnings);
}

#[test]
fn a_byte_order_mark_is_skipped_once_where_systemd_skips_it() {
    // systemd 252 skips the first byte order mark that starts a line, even
    // on a later line, and only that one.
    let text = "[Unit]\n\u{feff}ProbeA=1\n\u{feff}ProbeB=2\n";
    let (file, _) = UnitFile::parse(text);
    let keys: Vec<&str> = file.sections[0]
        .entries
        .iter()
        .map(|e| e.key.as_str())
        .collect();
    assert_eq!(keys, ["ProbeA", "\u{feff}ProbeB"]);
    // A comment after a byte order mark is a comment.
    let (file, diagnostics) = UnitFile::parse("\u{feff}# comment\n[Unit]\nDescription=x\n");
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    assert_eq!(file.sections.len(), 1);
}

#[test]
fn serialised_files_end_lines_with_newlines_only() {
    let (file, _) = UnitFile::parse(HIDDEN_CR);
    let text = file.to_string();
    assert!(!text.contains(['\r', '\0']), "{text:?}");
    let (again, diagnostics) = UnitFile::parse(&text);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    assert_eq!(again.content_hash(), file.content_hash());
}
