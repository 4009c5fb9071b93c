//! The syntax of systemd unit files, as systemd.syntax(7) and systemd's own
//! parser (`src/shared/conf-parser.c`) define it.
//!
//! What is parsed here, checked against systemd 252:
//!
//! - `[Section]` headers. Leading and trailing whitespace around the header is
//!   ignored; a header that does not end in `]` or names no section is an
//!   error.
//! - `Key=Value` assignments. Whitespace around the key, around the `=` and at
//!   the end of the line is trimmed; the value keeps inner whitespace. An empty
//!   value (`Key=`) is kept: for list settings it resets the list.
//! - Lines whose first non-blank character is `#` or `;` are comments.
//! - A line ending in an odd number of backslashes continues on the next line;
//!   the last backslash is replaced by a space. Comment lines inside a
//!   continuation are skipped (systemd does the same: see systemd.syntax(7),
//!   "KeyThree=value 3\ # this line is ignored"); an empty line ends it. A
//!   continuation still open at the end of the file ends there.
//! - A UTF-8 byte order mark at the start is skipped; `\r\n` line ends are
//!   read like `\n`.
//! - Repeated keys are kept in order; repeated sections are merged by readers
//!   as systemd does (see [`UnitFile::values`]).
//!
//! Stricter than systemd, which only logs and ignores these: a line without
//! `=` inside a section, an assignment before the first section, and an
//! assignment with an empty key are errors.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::diagnostic::{Diagnostic, Diagnostics};

/// systemd refuses lines longer than this (`LONG_LINE_MAX`, 1 MiB).
pub const MAX_LINE_LEN: usize = 1024 * 1024;

/// A parsed unit file: its sections in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitFile {
    pub sections: Vec<Section>,
}

/// One `[Name]` header and the assignments under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    pub name: String,
    /// 1-based line of the header; 0 for sections built in code.
    pub line: u32,
    pub entries: Vec<Entry>,
}

/// One `Key=Value` assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub key: String,
    pub value: String,
    /// 1-based line where the assignment starts; 0 for entries built in code.
    pub line: u32,
}

/// Where a value came from, for diagnostics about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueRef<'a> {
    pub section: &'a str,
    pub key: &'a str,
    pub value: &'a str,
    pub line: u32,
}

impl ValueRef<'_> {
    /// An error about this option, pointing at its line.
    pub fn error(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic::error(line_of(self.line), message).at_option(self.section, self.key)
    }

    /// A warning about this option, pointing at its line.
    pub fn warning(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic::warning(line_of(self.line), message).at_option(self.section, self.key)
    }
}

fn line_of(line: u32) -> Option<u32> {
    (line > 0).then_some(line)
}

impl UnitFile {
    /// Parses unit-file text. Syntax errors do not stop the parse: every bad
    /// line is reported, and the lines around it are still read, so that one
    /// run of `flotilla verify` shows every problem.
    pub fn parse(text: &str) -> (UnitFile, Vec<Diagnostic>) {
        let mut parser = Parser::default();
        // systemd skips a UTF-8 byte order mark at the start of a file.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (index, raw) in text.split('\n').enumerate() {
            let number = u32::try_from(index + 1).unwrap_or(u32::MAX);
            parser.feed(number, raw);
        }
        parser.finish()
    }

    /// The sections with this name, in file order (systemd merges repeated
    /// sections).
    pub fn sections_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Section> + 'a {
        self.sections.iter().filter(move |s| s.name == name)
    }

    /// Whether any section with this name exists.
    pub fn has_section(&self, name: &str) -> bool {
        self.sections.iter().any(|s| s.name == name)
    }

    /// Every assignment in the named section(s), in file order.
    pub fn entries<'a>(&'a self, section: &'a str) -> impl Iterator<Item = ValueRef<'a>> + 'a {
        self.sections_named(section).flat_map(|s| {
            s.entries.iter().map(|e| ValueRef {
                section: &s.name,
                key: &e.key,
                value: &e.value,
                line: e.line,
            })
        })
    }

    /// Every value assigned to `key` in the named section(s), in file order,
    /// including empty assignments.
    pub fn values<'a>(
        &'a self,
        section: &'a str,
        key: &'a str,
    ) -> impl Iterator<Item = ValueRef<'a>> + 'a {
        self.entries(section).filter(move |v| v.key == key)
    }

    /// The value that takes effect for a single-valued setting: the last one
    /// assigned, as systemd reads it.
    pub fn last_value<'a>(&'a self, section: &'a str, key: &'a str) -> Option<ValueRef<'a>> {
        self.values(section, key).last()
    }

    /// A stable hash of what the unit means, not how it is laid out: comments,
    /// blank lines, whitespace, line continuations and the order of sections
    /// do not change it; the order of assignments within a section does.
    /// Repeated sections hash as if merged. Lowercase hex SHA-256.
    pub fn content_hash(&self) -> String {
        let mut names: Vec<&str> = self.sections.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let mut hasher = Sha256::new();
        for name in names {
            hash_field(&mut hasher, b'S', name);
            for section in self.sections_named(name) {
                for entry in &section.entries {
                    hash_field(&mut hasher, b'K', &entry.key);
                    hash_field(&mut hasher, b'V', &entry.value);
                }
            }
        }
        hex(&hasher.finalize())
    }
}

/// Length-prefixed, tagged fields, so that no two different units can
/// produce the same byte stream.
fn hash_field(hasher: &mut Sha256, tag: u8, text: &str) {
    hasher.update([tag]);
    hasher.update((text.len() as u64).to_le_bytes());
    hasher.update(text.as_bytes());
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Serialises to canonical unit-file text: one `[Section]` header per
/// section in order, one `Key=Value` per line, a blank line between
/// sections. Parsing the output gives back the same sections and entries
/// (line numbers aside).
impl fmt::Display for UnitFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, section) in self.sections.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            writeln!(f, "[{}]", section.name)?;
            for entry in &section.entries {
                write!(f, "{}={}", entry.key, entry.value)?;
                // A value ending in an odd number of backslashes would read
                // back as a continuation; systemd reads `\ ` at the end of a
                // line as a backslash followed by trimmed whitespace.
                if ends_with_continuation(&entry.value) {
                    f.write_str(" ")?;
                }
                f.write_str("\n")?;
            }
        }
        Ok(())
    }
}

/// Whether a line ends in an unescaped backslash, scanning escapes from the
/// start as systemd does.
fn ends_with_continuation(line: &str) -> bool {
    let mut escaped = false;
    for c in line.chars() {
        escaped = !escaped && c == '\\';
    }
    escaped
}

const WHITESPACE: &[char] = &[' ', '\t', '\n', '\r'];

fn is_comment(line: &str) -> bool {
    line.trim_start_matches(WHITESPACE).starts_with(['#', ';'])
}

#[derive(Default)]
struct Parser {
    file: UnitFile,
    diagnostics: Diagnostics,
    /// A logical line being assembled from continued physical lines: its
    /// first line number and text so far.
    pending: Option<(u32, String)>,
    /// Whether an assignment before any section has been reported already;
    /// one report is enough.
    reported_outside: bool,
}

impl Parser {
    fn feed(&mut self, number: u32, raw: &str) {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if raw.len() > MAX_LINE_LEN {
            self.diagnostics.push(Diagnostic::error(
                Some(number),
                format!("line is longer than {MAX_LINE_LEN} bytes"),
            ));
            return;
        }
        let (start, mut text) = match self.pending.take() {
            Some((start, text)) => {
                if is_comment(raw) {
                    self.pending = Some((start, text));
                    return;
                }
                (start, text)
            }
            None => {
                if is_comment(raw) {
                    return;
                }
                (number, String::new())
            }
        };
        text.push_str(raw);
        if ends_with_continuation(&text) {
            text.pop();
            text.push(' ');
            self.pending = Some((start, text));
            return;
        }
        self.line(start, &text);
    }

    fn finish(mut self) -> (UnitFile, Vec<Diagnostic>) {
        if let Some((start, text)) = self.pending.take() {
            self.line(start, &text);
        }
        (self.file, self.diagnostics.into_sorted())
    }

    fn line(&mut self, number: u32, text: &str) {
        let line = text.trim_matches(WHITESPACE);
        if line.is_empty() {
            return;
        }
        if line.starts_with('[') {
            self.header(number, line);
            return;
        }
        let Some(section) = self.file.sections.last_mut() else {
            if !self.reported_outside {
                self.reported_outside = true;
                self.diagnostics.push(Diagnostic::error(
                    Some(number),
                    format!(
                        "expected a [Section] header before the first assignment, found {}",
                        quote_excerpt(line)
                    ),
                ));
            }
            return;
        };
        let Some((key, value)) = line.split_once('=') else {
            self.diagnostics.push(Diagnostic::error(
                Some(number),
                format!(
                    "expected Key=Value, a [Section] header or a comment, found {}",
                    quote_excerpt(line)
                ),
            ));
            return;
        };
        let key = key.trim_matches(WHITESPACE);
        if key.is_empty() {
            self.diagnostics.push(Diagnostic::error(
                Some(number),
                format!(
                    "expected a key before '=' in section [{}], found {}",
                    section.name,
                    quote_excerpt(line)
                ),
            ));
            return;
        }
        section.entries.push(Entry {
            key: key.to_owned(),
            value: value.trim_matches(WHITESPACE).to_owned(),
            line: number,
        });
    }

    fn header(&mut self, number: u32, line: &str) {
        let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) else {
            self.diagnostics.push(Diagnostic::error(
                Some(number),
                format!(
                    "expected a section header of the form [Name], found {}",
                    quote_excerpt(line)
                ),
            ));
            // Whatever follows belongs to no valid section; keep reading
            // into a section nobody consults, so that its lines are still
            // checked for syntax without being reported as outside any
            // section.
            self.file.sections.push(Section {
                name: String::new(),
                line: number,
                entries: Vec::new(),
            });
            return;
        };
        if name.is_empty() {
            self.diagnostics.push(Diagnostic::error(
                Some(number),
                "expected a section name between '[' and ']'",
            ));
        }
        self.file.sections.push(Section {
            name: name.to_owned(),
            line: number,
            entries: Vec::new(),
        });
    }
}

/// Quotes a line for a message, cut short if it is long.
fn quote_excerpt(line: &str) -> String {
    const MAX: usize = 60;
    match line.char_indices().nth(MAX) {
        Some((cut, _)) => format!("\"{}...\"", &line[..cut]),
        None => format!("\"{line}\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> UnitFile {
        let (file, diags) = UnitFile::parse(text);
        assert!(diags.is_empty(), "unexpected diagnostics: {diags:?}");
        file
    }

    #[test]
    fn hash_ignores_layout_but_not_meaning() {
        let a = parse_ok("[Unit]\nDescription=x\n[Service]\nExecStart=/bin/true\n");
        let b = parse_ok(
            "# comment\n[Service]\n  ExecStart = /bin/true  \n\n[Unit]\nDescription=\\\n x\n",
        );
        assert_eq!(a.content_hash(), b.content_hash());
        let c = parse_ok("[Unit]\nDescription=y\n[Service]\nExecStart=/bin/true\n");
        assert_ne!(a.content_hash(), c.content_hash());
        // An empty assignment is meaning: it resets a list.
        let d = parse_ok("[Unit]\nDescription=x\n[Service]\nExecStart=\nExecStart=/bin/true\n");
        assert_ne!(a.content_hash(), d.content_hash());
    }

    #[test]
    fn hash_is_stable() {
        // The hash is stored and compared across versions: it must not change
        // by accident.
        let a = parse_ok("[Unit]\nDescription=x\n");
        assert_eq!(
            a.content_hash(),
            "acae562683be26852a487a4469a0c72bb848b15738b4e9d27ac97413a35dd3df"
        );
    }

    #[test]
    fn trailing_backslash_value_round_trips() {
        let file = parse_ok("[Unit]\nDescription=a\\ \n");
        assert_eq!(file.sections[0].entries[0].value, "a\\");
        let again = parse_ok(&file.to_string());
        assert_eq!(again.sections[0].entries[0].value, "a\\");
    }

    #[test]
    fn crlf_and_byte_order_mark() {
        let file =
            parse_ok("\u{feff}[Unit]\r\nDescription=x\r\nAfter=a.service \\\r\n b.service\r\n");
        assert_eq!(file.sections[0].name, "Unit");
        let values: Vec<_> = file.entries("Unit").map(|v| v.value).collect();
        assert_eq!(values, ["x", "a.service   b.service"]);
    }

    #[test]
    fn overlong_line_is_an_error() {
        let text = format!("[Unit]\nDescription={}\n", "x".repeat(MAX_LINE_LEN));
        let (_, diags) = UnitFile::parse(&text);
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].line, Some(2));
        assert!(
            diags[0].message.contains("longer than"),
            "{}",
            diags[0].message
        );
    }
}
