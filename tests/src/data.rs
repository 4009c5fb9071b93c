//! Behaviour as data: files of cases, each a title, optional header lines,
//! an input and the output expected from it.
//!
//! ```text
//! === what the case shows
//! key: value                   (header lines, as the test allows)
//! --- input
//! ...
//! --- output
//! ...
//! ```
//!
//! Lines before the first `===` are comments. A blank line separates cases
//! and is not part of the output.
//!
//! [`check_file`] runs every case and fails with the cases whose output
//! differs. When outputs change on purpose, `UPDATE_EXPECT=1` rewrites the
//! file with the outputs as they are, and still fails when it changed
//! anything, so that a run that rewrites never passes: read the diff, then
//! run again without it. Rewriting is refused when `CI` is set.

use std::fmt::Write as _;
use std::path::Path;

/// One case of a data file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub title: String,
    /// Header lines, `key: value`, in file order.
    pub headers: Vec<(String, String)>,
    pub input: String,
    /// The expected output, ending in one line end unless empty.
    pub output: String,
}

impl Case {
    /// The value of header `key`, if the case has one.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A data file read: its comment lines and its cases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    pub preamble: String,
    pub cases: Vec<Case>,
}

/// Why a data file is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("case {title:?}: {reason}")]
pub struct DataError {
    pub title: String,
    pub reason: String,
}

/// Reads a data file's text. Header keys must be among `headers`.
pub fn parse(text: &str, headers: &[&str]) -> Result<DataFile, DataError> {
    #[derive(PartialEq)]
    enum Part {
        Header,
        Input,
        Output,
    }
    let mut preamble = String::new();
    let mut cases: Vec<Case> = Vec::new();
    let mut part = Part::Header;
    for line in text.split_inclusive('\n') {
        if let Some(title) = line.strip_prefix("=== ") {
            cases.push(Case {
                title: title.trim().to_owned(),
                headers: Vec::new(),
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
                Part::Header if l.trim().is_empty() => {}
                Part::Header => {
                    let known = l
                        .split_once(':')
                        .filter(|(k, _)| headers.contains(&k.trim()));
                    let Some((key, value)) = known else {
                        return Err(DataError {
                            title: case.title.clone(),
                            reason: format!(
                                "unexpected line {l:?} before the input (headers allowed: {})",
                                if headers.is_empty() {
                                    "none".to_owned()
                                } else {
                                    headers.join(", ")
                                }
                            ),
                        });
                    };
                    case.headers
                        .push((key.trim().to_owned(), value.trim().to_owned()));
                }
                Part::Input => case.input.push_str(line),
                Part::Output => case.output.push_str(line),
            },
        }
    }
    for case in &mut cases {
        let trimmed = case.output.trim_end_matches('\n').len();
        case.output.truncate(trimmed);
        if trimmed > 0 {
            case.output.push('\n');
        }
    }
    Ok(DataFile { preamble, cases })
}

impl DataFile {
    /// The file's text with each case's output replaced by `outputs` (in
    /// case order).
    pub fn render(&self, outputs: &[String]) -> String {
        let mut text = self.preamble.clone();
        for (case, output) in self.cases.iter().zip(outputs) {
            let _ = writeln!(text, "=== {}", case.title);
            for (key, value) in &case.headers {
                let _ = writeln!(text, "{key}: {value}");
            }
            let _ = write!(text, "--- input\n{}--- output\n{output}", case.input);
            if !output.is_empty() && !output.ends_with('\n') {
                text.push('\n');
            }
            text.push('\n');
        }
        text.trim_end().to_owned() + "\n"
    }
}

/// Runs every case of the data file at `path` through `run` and panics
/// with each case whose output differs from the expected one. With
/// `UPDATE_EXPECT` set (and `CI` not), rewrites the file first; see the
/// module documentation.
pub fn check_file(path: &Path, headers: &[&str], mut run: impl FnMut(&Case) -> String) {
    let name = path.display();
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read data file {name}: {e}"));
    let file = parse(&text, headers).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(!file.cases.is_empty(), "{name} holds no case");
    let outputs: Vec<String> = file.cases.iter().map(&mut run).collect();
    let failures: Vec<String> = file
        .cases
        .iter()
        .zip(&outputs)
        .filter(|(case, actual)| case.output != **actual)
        .map(|(case, actual)| {
            format!(
                "--- {name}: {}\n--- expected\n{}--- actual\n{actual}",
                case.title, case.output
            )
        })
        .collect();
    if std::env::var_os("UPDATE_EXPECT").is_some() && !failures.is_empty() {
        assert!(
            std::env::var_os("CI").is_none(),
            "UPDATE_EXPECT rewrites expected outputs and is refused when CI is set"
        );
        std::fs::write(path, file.render(&outputs))
            .unwrap_or_else(|e| panic!("cannot rewrite {name}: {e}"));
        panic!(
            "rewrote the expected output of {} of {} cases in {name}: read the diff, then run again without UPDATE_EXPECT",
            failures.len(),
            file.cases.len()
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed\n{}",
        failures.len(),
        file.cases.len(),
        failures.join("\n")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "comment\n=== first\nunit: a.service\n--- input\nin\n--- output\nout\n\n=== second\n--- input\n--- output\n";

    #[test]
    fn cases_read_and_render_back() {
        let file = parse(TEXT, &["unit"]).unwrap();
        assert_eq!(file.preamble, "comment\n");
        assert_eq!(file.cases.len(), 2);
        assert_eq!(file.cases[0].header("unit"), Some("a.service"));
        assert_eq!(file.cases[0].input, "in\n");
        assert_eq!(file.cases[0].output, "out\n");
        assert_eq!(file.cases[1].output, "");
        let outputs: Vec<String> = file.cases.iter().map(|c| c.output.clone()).collect();
        assert_eq!(file.render(&outputs), TEXT.trim_end().to_owned() + "\n");
    }

    #[test]
    fn unknown_headers_are_refused() {
        let e = parse(TEXT, &[]).unwrap_err();
        assert_eq!(e.title, "first");
        assert!(e.reason.contains("headers allowed: none"), "{e}");
    }
}
