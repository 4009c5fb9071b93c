//! flotilla splits values into words as systemd does: every value in
//! `tests/data/words/values.txt` is given to a real systemd (a test host,
//! see `flotilla_testbed::Host`) in `ExecStart=` or `Environment=`, and the
//! arguments the program receives, or the variables it sees, are exactly
//! the words of `flotilla_proto::value::split_words`. A value flotilla
//! refuses is one systemd itself warns about and skips or keeps mangled
//! (`systemd-analyze verify` names its line), or one that decodes to bytes
//! that are not UTF-8.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::os::unix::fs::PermissionsExt;

use flotilla_proto::container::exec_env::substitute;
use flotilla_proto::value::split_words;
use flotilla_testbed::{Host, HostOptions};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/words/values.txt");

/// Where the units go in the host: its own (throw-away) `/etc`.
const UNIT_DIR: &str = "/etc/systemd/system";

/// Writes each argument after the first, NUL-terminated, to the file named
/// by the first.
const ARGV_SCRIPT: &str =
    "#!/bin/sh\nout=$1\nshift\nfor a in \"$@\"; do printf '%s\\0' \"$a\"; done > \"$out\"\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exec,
    Env,
    /// `ExecStart=` with [`EXEC_ENV`] set: `$` substituted.
    ExecEnv,
}

/// The service environment of `execenv` cases, as systemd reads it.
const EXEC_ENV: &str = r#""T_ONE=a b  'c d'" "T_X=x y" T_EMPTY= "T_BS=p\\ q""#;

/// [`EXEC_ENV`] as flotilla's lookup sees it.
fn exec_env(name: &str) -> Option<String> {
    match name {
        "T_ONE" => Some("a b  'c d'".to_owned()),
        "T_X" => Some("x y".to_owned()),
        "T_EMPTY" => Some(String::new()),
        "T_BS" => Some("p\\ q".to_owned()),
        _ => None,
    }
}

struct Case {
    line: usize,
    kind: Kind,
    value: String,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(DATA).unwrap();
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.starts_with('#') && !l.trim().is_empty())
        .map(|(i, l)| {
            let (kind, value) = l.split_once(' ').unwrap();
            let kind = match kind {
                "exec" => Kind::Exec,
                "env" => Kind::Env,
                "execenv" => Kind::ExecEnv,
                other => panic!("{DATA}:{}: unknown kind {other:?}", i + 1),
            };
            Case {
                line: i + 1,
                kind,
                value: value.to_owned(),
            }
        })
        .collect()
}

/// The line of the unit that holds the value.
fn value_line(kind: Kind) -> u32 {
    match kind {
        Kind::Exec | Kind::Env => 3,
        Kind::ExecEnv => 4,
    }
}

fn unit_text(case: &Case, out: &str) -> String {
    match case.kind {
        Kind::ExecEnv => format!(
            "[Service]\nType=oneshot\nEnvironment={EXEC_ENV}\nExecStart=/run/argv.sh {out} {}\n",
            case.value
        ),
        Kind::Exec => format!(
            "[Service]\nType=oneshot\nExecStart=/run/argv.sh {out} {}\n",
            case.value
        ),
        Kind::Env => format!(
            "[Service]\nType=oneshot\nEnvironment={}\nExecStart=/bin/sh -c \"env -0 > {out}\"\n",
            case.value
        ),
    }
}

fn host_path(host: &Host, path: &str) -> String {
    format!("/proc/{}/root{path}", host.leader_pid())
}

/// What systemd passed: NUL-terminated fields, as bytes (empty ones too).
fn fields(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut all: Vec<Vec<u8>> = bytes.split(|b| *b == 0).map(<[u8]>::to_vec).collect();
    // What follows the last NUL.
    all.pop();
    all
}

#[test]
fn flotilla_splits_words_as_systemd_does() {
    let cases = cases();
    assert!(cases.len() > 40, "{} cases", cases.len());
    let host = Host::boot("words", &HostOptions::default()).unwrap();
    let script = host_path(&host, "/run/argv.sh");
    std::fs::write(&script, ARGV_SCRIPT).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (i, case) in cases.iter().enumerate() {
        let out = format!("/run/w{i}.out");
        std::fs::write(
            host_path(&host, &format!("{UNIT_DIR}/w{i}.service")),
            unit_text(case, &out),
        )
        .unwrap();
    }
    host.run(&["systemctl", "daemon-reload"]).unwrap();

    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let unit = format!("w{i}.service");
        let path = format!("{UNIT_DIR}/{unit}");
        let what = format!("{DATA}:{}: {:?}", case.line, case.value);
        let flotilla = split_words(&case.value).map(|words| match case.kind {
            Kind::ExecEnv => substitute(&words, exec_env),
            Kind::Exec | Kind::Env => words,
        });
        // Whatever flotilla says, systemd runs the unit: a refused value
        // is then compared with what systemd made of it.
        let _ = host.output(&["systemctl", "start", &unit]).unwrap();
        let got = std::fs::read(host_path(&host, &format!("/run/w{i}.out")));
        let systemd: Option<Vec<Vec<u8>>> = got.ok().map(|bytes| {
            let all = fields(&bytes);
            match case.kind {
                Kind::Exec | Kind::ExecEnv => all,
                Kind::Env => {
                    let mut vars: Vec<_> =
                        all.into_iter().filter(|f| f.starts_with(b"T_")).collect();
                    vars.sort();
                    vars
                }
            }
        });
        match flotilla {
            Ok(words) => {
                let mut words: Vec<Vec<u8>> = words.into_iter().map(String::into_bytes).collect();
                if case.kind == Kind::Env {
                    words.sort();
                }
                if systemd.as_ref() != Some(&words) {
                    failures.push(format!(
                        "{what}: systemd gave {:?}, flotilla {:?}",
                        systemd.map(|s| s
                            .iter()
                            .map(|w| String::from_utf8_lossy(w).into_owned())
                            .collect::<Vec<_>>()),
                        words
                            .iter()
                            .map(|w| String::from_utf8_lossy(w).into_owned())
                            .collect::<Vec<_>>()
                    ));
                }
            }
            Err(e) => {
                let verify = host.output(&["systemd-analyze", "verify", &path]).unwrap();
                let said = String::from_utf8_lossy(&verify.stderr).into_owned()
                    + &String::from_utf8_lossy(&verify.stdout);
                let line = value_line(case.kind);
                let warned = said
                    .lines()
                    .any(|l| l.starts_with(&format!("{path}:{line}:")));
                let not_utf8 = systemd
                    .as_ref()
                    .is_some_and(|ws| ws.iter().any(|w| std::str::from_utf8(w).is_err()));
                if !warned && !not_utf8 {
                    failures.push(format!(
                        "{what}: flotilla refuses it ({e}), but systemd takes it silently as {:?}; systemd-analyze said:\n{said}",
                        systemd.map(|s| s.iter().map(|w| String::from_utf8_lossy(w).into_owned()).collect::<Vec<_>>()),
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every specifier flotilla expands, in a unit whose name has dashes, an
/// instance and a prefix to unescape.
const SPECIFIERS: &str = "n N p P i I j J f h u U g G t S C L E T V d";

#[test]
fn flotilla_expands_specifiers_as_systemd_does() {
    let assignments: Vec<String> = SPECIFIERS
        .split(' ')
        .map(|s| {
            format!(
                "T_{}=%{s}",
                if s.chars().all(|c| c.is_ascii_lowercase()) {
                    format!("{s}_")
                } else {
                    s.to_owned()
                }
            )
        })
        .collect();
    let environment = assignments.join(" ");
    let host = Host::boot("specifiers", &HostOptions::default()).unwrap();
    std::fs::write(
        host_path(&host, &format!("{UNIT_DIR}/srv-web@.service")),
        format!(
            "[Service]\nType=oneshot\nEnvironment={environment}\nExecStart=/bin/sh -c \"env -0 > /run/%i.out\"\n"
        ),
    )
    .unwrap();
    host.run(&["systemctl", "daemon-reload"]).unwrap();
    host.run(&["systemctl", "start", "srv-web@a-b.service"])
        .unwrap();
    let bytes = std::fs::read(host_path(&host, "/run/a-b.out")).unwrap();
    let systemd: std::collections::BTreeMap<String, String> = fields(&bytes)
        .into_iter()
        .map(|f| String::from_utf8(f).unwrap())
        .filter(|f| f.starts_with("T_"))
        .map(|f| {
            let (k, v) = f.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();

    let name = flotilla_proto::UnitName::parse("srv-web@a-b.service").unwrap();
    let text = format!("[Container]\nImage=nginx\nEnvironment={environment}\n");
    let (spec, diagnostics) = flotilla_proto::UnitSpec::read(&name, &text);
    let spec = spec.unwrap_or_else(|| panic!("{diagnostics:?}"));
    let flotilla = spec.container.unwrap().environment;
    assert_eq!(systemd.len(), assignments.len(), "{systemd:?}");
    assert_eq!(flotilla, systemd, "flotilla (left) and systemd (right)");
}
