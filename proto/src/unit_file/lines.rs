//! Lines as systemd reads them from a unit file.
//!
//! systemd reads unit files with `read_line_full()` (`src/basic/fileio.c`),
//! which ends a line at `\n`, at `\r` and at a NUL byte, and takes a run of
//! such bytes as one line end as long as no kind repeats in it and a NUL
//! comes last: `\n`, `\r`, `\0`, `\r\n`, `\n\r`, `\n\0`, `\r\0`, `\r\n\0`
//! and `\n\r\0` each end one line, while `\n\n` or `\0\n` end two (the
//! second line being empty). The end of the text ends the last line; text
//! that ends in a line end has no empty line after it.

/// One line and the bytes that ended it (empty at the end of the text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Line<'a> {
    pub text: &'a str,
    pub end: &'a str,
}

impl Line<'_> {
    /// Whether the line ended the way editors and `cat` show a line end:
    /// `\n`, `\r\n`, or the end of the text.
    pub fn ends_plainly(&self) -> bool {
        matches!(self.end, "" | "\n" | "\r\n")
    }
}

/// The lines of `text`, in order.
pub(crate) fn lines(text: &str) -> Lines<'_> {
    Lines { text, pos: 0 }
}

pub(crate) struct Lines<'a> {
    text: &'a str,
    pos: usize,
}

const NEWLINE: u8 = 1;
const CARRIAGE_RETURN: u8 = 2;
const NUL: u8 = 4;

fn end_kind(b: u8) -> Option<u8> {
    match b {
        b'\n' => Some(NEWLINE),
        b'\r' => Some(CARRIAGE_RETURN),
        0 => Some(NUL),
        _ => None,
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = Line<'a>;

    fn next(&mut self) -> Option<Line<'a>> {
        let bytes = self.text.as_bytes();
        let start = self.pos;
        if start >= bytes.len() {
            return None;
        }
        let end = bytes[start..]
            .iter()
            .position(|&b| end_kind(b).is_some())
            .map_or(bytes.len(), |n| start + n);
        let mut next = end;
        let mut seen = 0u8;
        while let Some(kind) = bytes.get(next).copied().and_then(end_kind) {
            if seen & NUL != 0 || seen & kind != 0 {
                break;
            }
            seen |= kind;
            next += 1;
        }
        self.pos = next;
        // Line ends are ASCII bytes, so both cuts fall on char boundaries;
        // `get` keeps that from panicking even if they did not.
        Some(Line {
            text: self.text.get(start..end).unwrap_or_default(),
            end: self.text.get(end..next).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Vec<(&str, &str)> {
        lines(text).map(|l| (l.text, l.end)).collect()
    }

    #[test]
    fn line_ends_as_systemd_reads_them() {
        assert_eq!(split(""), []);
        assert_eq!(split("a"), [("a", "")]);
        assert_eq!(split("a\n"), [("a", "\n")]);
        assert_eq!(split("a\nb"), [("a", "\n"), ("b", "")]);
        assert_eq!(split("a\r\nb"), [("a", "\r\n"), ("b", "")]);
        assert_eq!(split("a\rb"), [("a", "\r"), ("b", "")]);
        assert_eq!(split("a\0b"), [("a", "\0"), ("b", "")]);
        assert_eq!(split("a\n\rb"), [("a", "\n\r"), ("b", "")]);
        assert_eq!(split("a\r\n\0b"), [("a", "\r\n\0"), ("b", "")]);
        assert_eq!(split("a\n\r\0b"), [("a", "\n\r\0"), ("b", "")]);
        // A kind that repeats, or anything after a NUL, starts a new line.
        assert_eq!(split("a\n\nb"), [("a", "\n"), ("", "\n"), ("b", "")]);
        assert_eq!(split("a\r\rb"), [("a", "\r"), ("", "\r"), ("b", "")]);
        assert_eq!(split("a\0\nb"), [("a", "\0"), ("", "\n"), ("b", "")]);
        assert_eq!(
            split("a\r\n\r\nb"),
            [("a", "\r\n"), ("", "\r\n"), ("b", "")]
        );
        assert_eq!(split("\n"), [("", "\n")]);
    }

    #[test]
    fn plain_line_ends() {
        let ends: Vec<bool> = lines("a\nb\r\nc\rd\0e\n\rf")
            .map(|l| l.ends_plainly())
            .collect();
        assert_eq!(ends, [true, true, false, false, false, true]);
    }
}
