//! Checks of the strings that machines and operators supply: hostnames,
//! addresses, metadata, reported unit states.
//!
//! These strings end up in the store and in the tables the CLI prints on
//! terminals, so each has a length limit and none may hold a control
//! character (an escape sequence in a hostname would otherwise drive the
//! terminal of whoever lists the machines). A refused string is named in
//! the error as the request names it (`hostname`, `addresses[1]`,
//! `metadata["role"]`); the refused value itself is not repeated, except as
//! a short excerpt with its control characters escaped.

/// Why a supplied string (or list of them) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// A string that must not be empty is.
    #[error("{field} is empty")]
    Empty { field: String },
    /// A string over its length limit.
    #[error("{field} is {len} bytes long, over the limit of {max} bytes")]
    TooLong {
        field: String,
        len: usize,
        max: usize,
    },
    /// A string with a control character (Unicode category Cc: C0, DEL and
    /// C1), such as the ESC of a terminal escape sequence.
    #[error(
        "{field} holds the control character {found} at byte {at}; control characters are refused"
    )]
    ControlCharacter {
        field: String,
        /// The character as `U+001B`.
        found: String,
        at: usize,
    },
    /// A character the field cannot hold, such as `=` in a metadata key.
    #[error("{field} holds {found:?}, which it cannot hold")]
    Forbidden { field: String, found: char },
    /// A list over its length limit.
    #[error("{field} has {count} entries, over the limit of {max}")]
    TooMany {
        field: String,
        count: usize,
        max: usize,
    },
    /// A string that is not an IP address where one is expected.
    #[error("{field} is not an IP address: {excerpt}")]
    NotAnAddress { field: String, excerpt: String },
}

/// Checks a one-line string: at most `max` bytes, no control character.
pub fn check_line(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.len() > max {
        return Err(FieldError::TooLong {
            field: field.to_owned(),
            len: value.len(),
            max,
        });
    }
    match value.char_indices().find(|(_, c)| c.is_control()) {
        Some((at, c)) => Err(FieldError::ControlCharacter {
            field: field.to_owned(),
            found: format!("U+{:04X}", u32::from(c)),
            at,
        }),
        None => Ok(()),
    }
}

/// `value` with its control characters, except those in `keep`, written
/// as escapes: `\n`, `\t`, `\r`, and `\u{1b}` for the others. For
/// strings that are stored or printed as they come but must not drive a
/// terminal.
pub fn escape_controls(value: &str, keep: &[char]) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            c if !c.is_control() || keep.contains(&c) => out.push(c),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
        }
    }
    out
}

/// The start of a supplied string, quoted with its control characters
/// escaped, to name it in an error without repeating all of it.
pub fn excerpt(value: &str) -> String {
    const MAX_CHARS: usize = 64;
    let mut chars = value.chars();
    let head: String = chars.by_ref().take(MAX_CHARS).collect();
    if chars.next().is_some() {
        format!("{head:?}...")
    } else {
        format!("{head:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_refuse_control_characters_and_length() {
        assert_eq!(check_line("hostname", "web-1.example", 253), Ok(()));
        assert_eq!(
            check_line("hostname", "web\u{1b}[2J", 253),
            Err(FieldError::ControlCharacter {
                field: "hostname".into(),
                found: "U+001B".into(),
                at: 3,
            })
        );
        // C1 controls and DEL are control characters too.
        assert!(check_line("h", "a\u{9b}b", 10).is_err());
        assert!(check_line("h", "a\u{7f}", 10).is_err());
        assert!(check_line("h", "a\nb", 10).is_err());
        // Other Unicode is fine.
        assert_eq!(check_line("h", "müller-ü", 20), Ok(()));
        let e = check_line("hostname", &"a".repeat(254), 253).unwrap_err();
        assert_eq!(
            e.to_string(),
            "hostname is 254 bytes long, over the limit of 253 bytes"
        );
    }

    #[test]
    fn controls_are_escaped_except_those_kept() {
        assert_eq!(escape_controls("plain", &[]), "plain");
        assert_eq!(
            escape_controls("a\u{1b}[2J\tb\nc\rd\u{9b}", &[]),
            "a\\u{1b}[2J\\tb\\nc\\rd\\u{9b}"
        );
        assert_eq!(
            escape_controls("a\n\tb\u{7}", &['\n', '\t']),
            "a\n\tb\\u{7}"
        );
    }

    #[test]
    fn excerpts_are_short_and_escaped() {
        assert_eq!(excerpt("role"), "\"role\"");
        assert_eq!(excerpt("a\u{1b}b"), "\"a\\u{1b}b\"");
        let long = excerpt(&"x".repeat(1000));
        assert!(long.len() < 80 && long.ends_with("..."), "{long}");
    }
}
