//! The syntax of systemd unit files, as systemd.syntax(7) and systemd's own
//! parser (`config_parse()` in `src/shared/conf-parser.c`) define it.
//!
//! What is parsed here, checked against systemd 252:
//!
//! - Lines end where systemd's `read_line_full()` ends them: at `\n`, at
//!   `\r` and at a NUL byte, a run such as `\r\n` being one line end (the
//!   exact rule is in `unit_file/lines.rs`). A `\r` or NUL is read as
//!   the end of a line, exactly as systemd reads it, rather than rejected:
//!   what follows it is a line like any other, parsed, validated and counted
//!   for resources, because it is a line systemd runs. Such a line end draws
//!   a warning (editors and `cat` show the next line on the same one, so it
//!   can hide settings from a reader), which `flotilla verify --strict`
//!   turns into a failure. Line numbers in diagnostics count lines the same
//!   way, as systemd's own messages do.
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
//! - A UTF-8 byte order mark is skipped at the start of the first line that
//!   starts with one (usually the first line), as systemd 252 does.
//! - Repeated keys are kept in order; repeated sections are merged by readers
//!   as systemd does (see [`UnitFile::values`]).
//!
//! Stricter than systemd, which only logs and ignores these: a line without
//! `=` inside a section, an assignment before the first section, and an
//! assignment with an empty key are errors.
//!
//! # Limits
//!
//! Anyone who may submit a unit can make flotilla parse it, and the agent
//! hands it to systemd, whose own handling of continued lines rescans the
//! whole logical line for every line added to it. So the parse is linear in
//! the input (it touches each byte a bounded number of times; the steps are
//! counted in [`crate::work`]) and a unit file is bounded:
//! [`MAX_UNIT_FILE_BYTES`], [`MAX_LINES`], [`MAX_LINE_BYTES`],
//! [`MAX_CONTINUED_LINES`], [`MAX_SECTIONS`] and [`MAX_ENTRIES`]. Each bound
//! is far above what a real unit needs and keeps systemd's own parse of the
//! file cheap; going past one is an error on the line where it happens, and
//! the parse stops there (the unit is rejected anyway).

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::work;

mod lines;

/// The largest unit file flotilla accepts, in bytes: far above any real
/// unit, and well under what one store value may hold.
pub const MAX_UNIT_FILE_BYTES: usize = 256 * 1024;

/// The most lines (as systemd counts them, see the module documentation) a
/// unit file may have. A real unit has tens; a file of the largest size
/// would need lines of 8 bytes on average to reach it.
pub const MAX_LINES: usize = 32 * 1024;

/// The longest logical line (a line and the lines that continue it, joined)
/// in bytes. systemd's own limit is 1 MiB (`LONG_LINE_MAX`); flotilla's is
/// lower because systemd rescans a logical line for every line it adds to
/// it, and because no real setting comes near it.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// The most lines one logical line may span (a backslash at the end of each
/// but the last; comment lines skipped inside it do not count). With
/// [`MAX_LINE_BYTES`], this bounds what systemd spends rescanning continued
/// lines: at most this many rescans of a line for every byte of the file.
pub const MAX_CONTINUED_LINES: usize = 256;

/// The most `[Section]` headers in a unit file (repeated headers count each
/// time).
pub const MAX_SECTIONS: usize = 1024;

/// The most `Key=Value` assignments in a unit file.
pub const MAX_ENTRIES: usize = 8 * 1024;

/// How many lines `text` has, counted as systemd counts them (see the
/// module documentation).
pub(crate) fn count_lines(text: &str) -> usize {
    lines::lines(text).count()
}

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
    /// run of `flotilla verify` shows every problem. Going past one of the
    /// [limits](self#limits) does stop it, with an error on that line.
    pub fn parse(text: &str) -> (UnitFile, Vec<Diagnostic>) {
        let (file, diagnostics, _) = Self::parse_whole(text);
        (file, diagnostics)
    }

    /// As [`UnitFile::parse`], and whether the whole text was read (no limit
    /// stopped the parse).
    pub(crate) fn parse_whole(text: &str) -> (UnitFile, Vec<Diagnostic>, bool) {
        let mut parser = Parser::default();
        if text.len() > MAX_UNIT_FILE_BYTES {
            parser.too_big(text);
            return parser.finish();
        }
        for (index, line) in lines::lines(text).enumerate() {
            let number = index + 1;
            if number > MAX_LINES {
                parser.over_limit(
                    number,
                    format!("unit file has more than {MAX_LINES} lines, the most flotilla accepts"),
                );
                break;
            }
            parser.feed(line_number(number), line);
            if parser.stopped {
                break;
            }
        }
        parser.finish()
    }

    /// The sections with this name, in file order (systemd merges repeated
    /// sections).
    pub fn sections_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Section> + 'a {
        self.sections.iter().filter(move |s| {
            work::charge(1);
            s.name == name
        })
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
        self.entries(section).filter(move |v| {
            work::charge(1);
            v.key == key
        })
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

/// Whether a line ends in an unescaped backslash. A backslash escapes the
/// character after it, whatever it is, so the line continues exactly when
/// its trailing run of backslashes is odd; systemd scans escapes from the
/// start of the line, which comes to the same.
fn ends_with_continuation(line: &str) -> bool {
    let run = line.bytes().rev().take_while(|&b| b == b'\\').count();
    work::charge(run);
    run % 2 == 1
}

/// systemd's `WHITESPACE`.
const WHITESPACE: &[char] = &[' ', '\t', '\n', '\r'];

fn is_comment(line: &str) -> bool {
    line.trim_start_matches(WHITESPACE).starts_with(['#', ';'])
}

fn line_number(number: usize) -> u32 {
    u32::try_from(number).unwrap_or(u32::MAX)
}

/// A logical line being assembled from continued lines.
struct Pending {
    /// The line it starts on.
    start: u32,
    text: String,
    /// How many lines it spans so far.
    lines: usize,
    /// Whether it went past a limit (already reported): the lines that
    /// continue it are skipped rather than read as lines of their own.
    overflowed: bool,
}

#[derive(Default)]
struct Parser {
    file: UnitFile,
    diagnostics: Diagnostics,
    pending: Option<Pending>,
    /// Whether a byte order mark was skipped already: systemd skips one.
    bom_seen: bool,
    entries: usize,
    /// Whether an assignment before any section has been reported already;
    /// one report is enough.
    reported_outside: bool,
    /// The first line whose end is a `\r` or NUL that editors do not show,
    /// what ended it, and how many lines end that way.
    hidden_end: Option<(u32, String)>,
    hidden_ends: usize,
    /// Whether a limit was reached: nothing more is read.
    stopped: bool,
}

impl Parser {
    fn feed(&mut self, number: u32, line: lines::Line<'_>) {
        work::charge(line.text.len() + line.end.len() + 1);
        if !line.ends_plainly() {
            self.hidden_ends += 1;
            if self.hidden_end.is_none() {
                self.hidden_end = Some((number, line.end.to_owned()));
            }
        }
        let raw = line.text;
        if raw.len() > MAX_LINE_BYTES {
            self.diagnostics.push(Diagnostic::error(
                Some(number),
                format!("line is longer than {MAX_LINE_BYTES} bytes, the most flotilla accepts"),
            ));
            // Skip it, and the rest of the logical line it belongs to.
            let start = self.pending.as_ref().map_or(number, |p| p.start);
            self.pending = ends_with_continuation(raw).then_some(Pending {
                start,
                text: String::new(),
                lines: 0,
                overflowed: true,
            });
            return;
        }
        // systemd looks for comments before anything else, also inside a
        // continuation, and before it skips a byte order mark.
        if is_comment(raw) {
            return;
        }
        let raw = match raw.strip_prefix('\u{feff}') {
            Some(rest) if !self.bom_seen => {
                self.bom_seen = true;
                rest
            }
            _ => raw,
        };
        let continued = ends_with_continuation(raw);
        // The part of the line that goes into the logical line: a final
        // backslash becomes a space.
        let body = if continued {
            // The last byte is an ASCII backslash: a char boundary.
            &raw[..raw.len() - 1]
        } else {
            raw
        };
        let Some(mut pending) = self.pending.take() else {
            if continued {
                let mut text = String::with_capacity(raw.len());
                text.push_str(body);
                text.push(' ');
                self.pending = Some(Pending {
                    start: number,
                    text,
                    lines: 1,
                    overflowed: false,
                });
            } else {
                self.line(number, raw);
            }
            return;
        };
        pending.lines += 1;
        if !pending.overflowed {
            if pending.lines > MAX_CONTINUED_LINES {
                self.diagnostics.push(Diagnostic::error(
                    Some(pending.start),
                    format!(
                        "line is continued over more than {MAX_CONTINUED_LINES} lines, the most flotilla accepts"
                    ),
                ));
                pending.overflowed = true;
            } else if pending.text.len() + raw.len() > MAX_LINE_BYTES {
                self.diagnostics.push(Diagnostic::error(
                    Some(pending.start),
                    format!(
                        "line and the lines that continue it are longer than {MAX_LINE_BYTES} bytes, the most flotilla accepts"
                    ),
                ));
                pending.overflowed = true;
            }
        }
        if pending.overflowed {
            pending.text = String::new();
        } else {
            work::charge(body.len());
            pending.text.push_str(body);
            if continued {
                pending.text.push(' ');
            }
        }
        if continued {
            self.pending = Some(pending);
        } else if !pending.overflowed {
            self.line(pending.start, &pending.text);
        }
    }

    fn finish(mut self) -> (UnitFile, Vec<Diagnostic>, bool) {
        if let Some(pending) = self.pending.take()
            && !pending.overflowed
            && !self.stopped
        {
            self.line(pending.start, &pending.text);
        }
        if let Some((number, end)) = self.hidden_end.take() {
            let more = match self.hidden_ends {
                0 | 1 => String::new(),
                2 => " (and so does 1 more line)".to_owned(),
                n => format!(" (and so do {} more lines)", n - 1),
            };
            self.diagnostics.push(Diagnostic::warning(
                Some(number),
                format!(
                    "line ends in {end:?}{more}: systemd reads a \\r or NUL byte as the end of a line, and so \
                     does flotilla, but editors and `cat` show what follows on the same line; end lines \
                     with \\n"
                ),
            ));
        }
        (self.file, self.diagnostics.into_sorted(), !self.stopped)
    }

    /// Reports a limit reached on line `number` and stops the parse.
    fn over_limit(&mut self, number: usize, message: String) {
        self.diagnostics
            .push(Diagnostic::error(Some(line_number(number)), message));
        self.pending = None;
        self.stopped = true;
    }

    /// Reports a file over [`MAX_UNIT_FILE_BYTES`], on the line where the
    /// limit falls.
    fn too_big(&mut self, text: &str) {
        let mut offset = 0;
        let mut number = 0;
        for line in lines::lines(text) {
            number += 1;
            offset += line.text.len() + line.end.len();
            work::charge(line.text.len() + line.end.len() + 1);
            if offset > MAX_UNIT_FILE_BYTES {
                break;
            }
        }
        self.over_limit(
            number,
            format!(
                "unit file is {} bytes, more than the {MAX_UNIT_FILE_BYTES} bytes flotilla accepts (the limit falls on this line)",
                text.len()
            ),
        );
    }

    fn line(&mut self, number: u32, text: &str) {
        work::charge(text.len() + 1);
        let line = text.trim_matches(WHITESPACE);
        // A logical line that starts with a comment character once trimmed
        // (one that followed a byte order mark) is a comment too.
        if line.is_empty() || line.starts_with(['#', ';']) {
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
        if self.entries == MAX_ENTRIES {
            self.over_limit(
                number as usize,
                format!(
                    "unit file has more than {MAX_ENTRIES} assignments, the most flotilla accepts"
                ),
            );
            return;
        }
        self.entries += 1;
        section.entries.push(Entry {
            key: key.to_owned(),
            value: value.trim_matches(WHITESPACE).to_owned(),
            line: number,
        });
    }

    fn header(&mut self, number: u32, line: &str) {
        if self.file.sections.len() == MAX_SECTIONS {
            self.over_limit(
                number as usize,
                format!(
                    "unit file has more than {MAX_SECTIONS} section headers, the most flotilla accepts"
                ),
            );
            return;
        }
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
        let text = format!(
            "[Unit]\nDescription={}\nAfter=a.service\n",
            "x".repeat(MAX_LINE_BYTES)
        );
        let (file, diags) = UnitFile::parse(&text);
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].line, Some(2));
        assert!(
            diags[0].message.contains("longer than"),
            "{}",
            diags[0].message
        );
        // The lines after it are still read.
        assert_eq!(file.last_value("Unit", "After").unwrap().value, "a.service");
    }
}
