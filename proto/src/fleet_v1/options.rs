//! Unit files as fleet's API carries them: the options that fleet's
//! unit-file reader (go-systemd's `unit.Deserialize`) reads from a file,
//! the file it writes back from options (`unit.Serialize`), and fleet's
//! unit hash, the SHA-1 of that file.
//!
//! fleet's reader differs from systemd's, and fleet's clients depend on the
//! difference: it keeps a continued value as written, backslash and line
//! end included (`ExecStart=/bin/sh -c \` + a new line + `"sleep 1"` is one
//! option whose value holds both lines), so that writing the options back
//! gives the file again and the hash `fleetctl` computes from a local file
//! matches the cluster's. flotilla's own parser joins continued lines, as
//! systemd does; this module is what `/fleet/v1/` shows instead. It is a
//! port of go-systemd's lexer (v14, vendored by fleet 1.0), quirks kept:
//! a line end is `\n` (a `\r` before it stays in the line, as Go's lexer
//! leaves it), and a line of 2,048 bytes or more is refused.

use std::fmt;

use sha1::{Digest, Sha1};

use crate::wire::UnitOption;

/// systemd's `LINE_MAX` as go-systemd assumes it: longer lines are refused.
pub const LINE_MAX: usize = 2048;

/// Why fleet's reader refuses a unit file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LexError {
    #[error("line too long (max {LINE_MAX} bytes)")]
    LineTooLong,
    #[error("unable to find end of section")]
    UnterminatedSection,
    #[error("found garbage after section name {section}: {garbage:?}")]
    GarbageAfterSection { section: String, garbage: String },
    #[error("unexpected newline encountered while parsing option name")]
    NewlineInName,
    #[error("unexpected end of file while parsing option name {name:?}")]
    EndInName { name: String },
}

/// The options of `text`, as fleet reads them.
pub fn parse(text: &str) -> Result<Vec<UnitOption>, LexError> {
    if text
        .split('\n')
        .any(|line| line.split('\r').any(|part| part.len() >= LINE_MAX))
    {
        return Err(LexError::LineTooLong);
    }
    let mut lexer = Lexer { text, at: 0 };
    let mut options = Vec::new();
    let mut section: Option<String> = None;
    while let Some(c) = lexer.next_char() {
        match &section {
            // Before the first section header, everything but a header or
            // a comment is skipped a character at a time.
            None => {
                if c == '[' {
                    section = Some(lexer.section_header()?);
                } else if is_comment(c) {
                    lexer.skip_comment();
                }
            }
            Some(current) => {
                if c.is_whitespace() {
                    continue;
                }
                if c == '[' {
                    section = Some(lexer.section_header()?);
                } else if is_comment(c) {
                    lexer.skip_comment();
                } else {
                    lexer.at -= c.len_utf8();
                    let name = lexer.option_name()?;
                    let value = lexer.option_value();
                    options.push(UnitOption {
                        section: current.clone(),
                        name,
                        value,
                    });
                }
            }
        }
    }
    Ok(options)
}

/// The unit file fleet writes for `options`: one header per section, in
/// the order sections first appear (a section given twice is merged), each
/// option as `Name=Value`, a blank line between sections.
pub fn serialize(options: &[UnitOption]) -> String {
    let mut sections: Vec<(&str, Vec<&UnitOption>)> = Vec::new();
    for o in options {
        match sections.iter_mut().find(|(name, _)| *name == o.section) {
            Some((_, list)) => list.push(o),
            None => sections.push((&o.section, vec![o])),
        }
    }
    let mut out = String::new();
    for (i, (name, list)) in sections.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push('[');
        out.push_str(name);
        out.push_str("]\n");
        for o in list {
            out.push_str(&o.name);
            out.push('=');
            out.push_str(&o.value);
            out.push('\n');
        }
    }
    out
}

/// fleet's hash of a unit: SHA-1 of [`serialize`]d options.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnitHash(pub [u8; 20]);

impl UnitHash {
    pub fn of(options: &[UnitOption]) -> UnitHash {
        UnitHash(Sha1::digest(serialize(options).as_bytes()).into())
    }
}

impl fmt::Display for UnitHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for UnitHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UnitHash({self})")
    }
}

fn is_comment(c: char) -> bool {
    c == '#' || c == ';'
}

struct Lexer<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Lexer<'a> {
    fn next_char(&mut self) -> Option<char> {
        let c = self.text[self.at..].chars().next()?;
        self.at += c.len_utf8();
        Some(c)
    }

    /// The rest of the line and whether the text ended before a `\n`; the
    /// `\n` is consumed, and one `\r` dropped only where the text ends
    /// (as go-systemd's `toEOL` does).
    fn rest_of_line(&mut self) -> (&'a str, bool) {
        let rest = &self.text[self.at..];
        match rest.find('\n') {
            Some(end) => {
                self.at += end + 1;
                (&rest[..end], false)
            }
            None => {
                self.at = self.text.len();
                (rest.strip_suffix('\r').unwrap_or(rest), true)
            }
        }
    }

    /// After `[`: the name up to `]` (line ends included), then nothing
    /// but blanks to the end of the line.
    fn section_header(&mut self) -> Result<String, LexError> {
        let rest = &self.text[self.at..];
        let end = rest.find(']').ok_or(LexError::UnterminatedSection)?;
        let name = rest[..end].to_owned();
        self.at += end + 1;
        let (garbage, _) = self.rest_of_line();
        let garbage = garbage.trim();
        if !garbage.is_empty() {
            return Err(LexError::GarbageAfterSection {
                section: name,
                garbage: garbage.to_owned(),
            });
        }
        Ok(name)
    }

    /// After `#` or `;`: the comment, with its continuation lines.
    fn skip_comment(&mut self) {
        loop {
            let (line, eof) = self.rest_of_line();
            let line = line.strip_suffix(' ').unwrap_or(line);
            if !line.ends_with('\\') || eof {
                return;
            }
        }
    }

    fn option_name(&mut self) -> Result<String, LexError> {
        let start = self.at;
        loop {
            match self.next_char() {
                None => {
                    return Err(LexError::EndInName {
                        name: self.text[start..].trim().to_owned(),
                    });
                }
                Some('\n' | '\r') => return Err(LexError::NewlineInName),
                Some('=') => return Ok(self.text[start..self.at - 1].trim().to_owned()),
                Some(_) => {}
            }
        }
    }

    /// After `=`: the value, continued while a line ends in `\`, the
    /// continuation kept as written.
    fn option_value(&mut self) -> String {
        let mut value = String::new();
        loop {
            let (line, eof) = self.rest_of_line();
            if line.trim().is_empty() {
                break;
            }
            value.push_str(line);
            if !line.ends_with('\\') {
                break;
            }
            if !eof {
                value.push('\n');
            }
        }
        if value.ends_with('\n') {
            let mut trimmed = value.trim().to_owned();
            trimmed.push('\n');
            trimmed
        } else {
            value.trim().to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opt(section: &str, name: &str, value: &str) -> UnitOption {
        UnitOption {
            section: section.into(),
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn continued_values_are_kept_as_written() {
        let text = "[Service]\nExecStart=/bin/sh -c \\\n  \"sleep 1\"\nUser=core\n";
        let options = parse(text).unwrap();
        assert_eq!(
            options,
            vec![
                opt("Service", "ExecStart", "/bin/sh -c \\\n  \"sleep 1\""),
                opt("Service", "User", "core"),
            ]
        );
        assert_eq!(serialize(&options), text);
    }

    #[test]
    fn comments_blank_lines_and_layout_are_dropped() {
        let text = "# top\n\n[Unit]\n; note\nDescription = web  \n\n\n[X-Fleet]\nGlobal=true";
        let options = parse(text).unwrap();
        assert_eq!(
            options,
            vec![
                opt("Unit", "Description", "web"),
                opt("X-Fleet", "Global", "true"),
            ]
        );
        assert_eq!(
            serialize(&options),
            "[Unit]\nDescription=web\n\n[X-Fleet]\nGlobal=true\n"
        );
    }

    #[test]
    fn a_repeated_section_is_merged_when_written() {
        let options = vec![
            opt("Unit", "A", "1"),
            opt("Service", "B", "2"),
            opt("Unit", "C", "3"),
        ];
        assert_eq!(serialize(&options), "[Unit]\nA=1\nC=3\n\n[Service]\nB=2\n");
    }

    #[test]
    fn an_empty_value_and_a_value_ending_in_a_backslash() {
        assert_eq!(
            parse("[S]\nA=\nB=x \\\n\nC=y").unwrap(),
            vec![
                opt("S", "A", ""),
                opt("S", "B", "x \\\n"),
                opt("S", "C", "y")
            ]
        );
        assert_eq!(parse("[S]\nA=x\\").unwrap(), vec![opt("S", "A", "x\\")]);
    }

    #[test]
    fn a_carriage_return_stays_where_go_leaves_it() {
        // Go's lexer drops "\r" only at the very end of the text; before a
        // "\n" it stays in the line, so it ends no continuation, and the
        // value's trim removes it.
        assert_eq!(
            parse("[S]\r\nA=1 \\\r\nB=2\r").unwrap(),
            vec![opt("S", "A", "1 \\"), opt("S", "B", "2")]
        );
    }

    #[test]
    fn errors_as_fleet_gives_them() {
        assert_eq!(parse("[Unit"), Err(LexError::UnterminatedSection));
        assert!(matches!(
            parse("[Unit] x\n"),
            Err(LexError::GarbageAfterSection { .. })
        ));
        assert_eq!(parse("[Unit]\nFoo\nBar=1"), Err(LexError::NewlineInName));
        assert!(matches!(
            parse("[Unit]\nFoo"),
            Err(LexError::EndInName { .. })
        ));
        let long = format!("[Unit]\nDescription={}\n", "x".repeat(LINE_MAX));
        assert_eq!(parse(&long), Err(LexError::LineTooLong));
    }

    #[test]
    fn the_hash_is_fleets() {
        // fleet 1.0 on this file: `fleetctl list-unit-files --full` shows
        // the SHA-1 of "[Unit]\nDescription=hello\n\n[Service]\nExecStart=/bin/sleep 1\n".
        let options =
            parse("[Unit]\nDescription=hello\n[Service]\nExecStart=/bin/sleep 1\n").unwrap();
        let expected =
            Sha1::digest(b"[Unit]\nDescription=hello\n\n[Service]\nExecStart=/bin/sleep 1\n");
        assert_eq!(UnitHash::of(&options).0, <[u8; 20]>::from(expected));
        assert_eq!(UnitHash::of(&options).to_string().len(), 40);
    }
}
