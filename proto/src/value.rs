//! Value syntaxes shared by many options: booleans and quoted word lists, as
//! systemd reads them.

/// systemd's `parse_boolean()`: `1 yes y true t on` and `0 no n false f off`,
/// in any case.
pub fn parse_bool(value: &str) -> Option<bool> {
    const TRUE: [&str; 6] = ["1", "yes", "y", "true", "t", "on"];
    const FALSE: [&str; 6] = ["0", "no", "n", "false", "f", "off"];
    if TRUE.iter().any(|t| t.eq_ignore_ascii_case(value)) {
        Some(true)
    } else if FALSE.iter().any(|f| f.eq_ignore_ascii_case(value)) {
        Some(false)
    } else {
        None
    }
}

/// Why a word list could not be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WordsError {
    #[error("unterminated quote {0}")]
    UnterminatedQuote(char),
    #[error("backslash at the end of the value escapes nothing")]
    TrailingBackslash,
    #[error(
        "unknown escape sequence {0:?}: systemd understands \\a \\b \\f \\n \\r \\t \\v \\\\ \\\" \\' \\s, \\xHH, \\OOO (octal), \\uHHHH and \\UHHHHHHHH, none of them naming NUL; write \\\\ for a backslash"
    )]
    UnknownEscape(String),
    #[error("the escapes make bytes that are not valid UTF-8 (at byte {at} of word {word})")]
    NotUtf8 { word: usize, at: usize },
}

/// The separators of `extract_first_word()`: systemd's `WHITESPACE`, not
/// every Unicode space.
fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// Splits a value into words exactly as systemd 252's `extract_first_word()`
/// does with `EXTRACT_UNQUOTE | EXTRACT_CUNESCAPE` (how `Environment=`,
/// `ExecStart=` and Quadlet's `Exec=` read their values):
///
/// - words are separated by runs of space, tab, newline or carriage return;
/// - single or double quotes group a word, and may start or stop inside
///   one (`A="b c"` is the word `A=b c`); `""` is an empty word;
/// - a backslash, inside quotes or not, starts a C escape, decoded as
///   systemd's `cunescape_one()` does: `\a \b \f \n \r \t \v \\ \" \' \s`
///   (a space), `\xHH` and `\OOO` (a byte), `\uHHHH` and `\UHHHHHHHH` (a
///   character). The bytes must make valid UTF-8.
///
/// Stricter than systemd, which logs and skips such values: an unknown
/// escape (`\ `, `\q`, an escape of NUL), a trailing backslash and an
/// unterminated quote are errors.
pub fn split_words(value: &str) -> Result<Vec<String>, WordsError> {
    split(value, Escapes::Decode)
}

/// Splits a value into words as systemd's `config_parse_strv()` does
/// (`EXTRACT_UNQUOTE | EXTRACT_RETAIN_ESCAPE`), and as fleet passes
/// `[X-Fleet]` values on: quotes group words as in [`split_words`], and a
/// backslash is an ordinary character, kept (so `Conflicts=web\*` is the
/// glob `web\*`, which matches `web*` only).
pub fn split_words_keeping_backslashes(value: &str) -> Result<Vec<String>, WordsError> {
    split(value, Escapes::Keep)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Escapes {
    Decode,
    Keep,
}

fn split(value: &str, escapes: Escapes) -> Result<Vec<String>, WordsError> {
    let mut words = Vec::new();
    let mut word: Vec<u8> = Vec::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut rest = value;
    while let Some(c) = rest.chars().next() {
        rest = &rest[c.len_utf8()..];
        match c {
            '\\' if escapes == Escapes::Decode => {
                if rest.is_empty() {
                    return Err(WordsError::TrailingBackslash);
                }
                let used = unescape_one(rest, &mut word)?;
                rest = &rest[used..];
                in_word = true;
            }
            c if Some(c) == quote => quote = None,
            '"' | '\'' if quote.is_none() => {
                quote = Some(c);
                in_word = true;
            }
            c if quote.is_none() && is_separator(c) => {
                if in_word {
                    words.push(into_string(std::mem::take(&mut word), words.len())?);
                    in_word = false;
                }
            }
            c => {
                let mut buf = [0u8; 4];
                word.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                in_word = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(WordsError::UnterminatedQuote(q));
    }
    if in_word {
        words.push(into_string(word, words.len())?);
    }
    Ok(words)
}

fn into_string(bytes: Vec<u8>, index: usize) -> Result<String, WordsError> {
    String::from_utf8(bytes).map_err(|e| WordsError::NotUtf8 {
        word: index + 1,
        at: e.utf8_error().valid_up_to(),
    })
}

/// Decodes the escape after a backslash at the start of `text` as systemd's
/// `cunescape_one()` does, appending its bytes to `out`; returns how many
/// bytes of `text` it used.
fn unescape_one(text: &str, out: &mut Vec<u8>) -> Result<usize, WordsError> {
    let bytes = text.as_bytes();
    let unknown = |len: usize| {
        let end = (0..=len.min(text.len()))
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        let shown = if end == 0 {
            // An escaped multi-byte character: show it whole.
            text.chars().next().map(String::from).unwrap_or_default()
        } else {
            text[..end].to_owned()
        };
        WordsError::UnknownEscape(format!("\\{shown}"))
    };
    let hex = |from: usize, count: usize| -> Option<u32> {
        let digits = bytes.get(from..from + count)?;
        digits.iter().try_fold(0u32, |acc, b| {
            char::from(*b).to_digit(16).map(|d| (acc << 4) | d)
        })
    };
    let simple = match bytes[0] {
        b'a' => Some(0x07),
        b'b' => Some(0x08),
        b'f' => Some(0x0c),
        b'n' => Some(b'\n'),
        b'r' => Some(b'\r'),
        b't' => Some(b'\t'),
        b'v' => Some(0x0b),
        b'\\' => Some(b'\\'),
        b'"' => Some(b'"'),
        b'\'' => Some(b'\''),
        b's' => Some(b' '),
        _ => None,
    };
    if let Some(b) = simple {
        out.push(b);
        return Ok(1);
    }
    match bytes[0] {
        b'x' => match hex(1, 2) {
            Some(b) if b != 0 => {
                // A byte, as written: `\xc3\xa9` is é.
                out.push(b as u8);
                Ok(3)
            }
            _ => Err(unknown(3)),
        },
        b'0'..=b'7' => {
            let octal = bytes.get(..3).and_then(|d| {
                d.iter().try_fold(0u32, |acc, b| {
                    char::from(*b).to_digit(8).map(|d| (acc << 3) | d)
                })
            });
            match octal {
                Some(b) if b != 0 && b <= 255 => {
                    out.push(b as u8);
                    Ok(3)
                }
                _ => Err(unknown(3)),
            }
        }
        b'u' | b'U' => {
            let count = if bytes[0] == b'u' { 4 } else { 8 };
            match hex(1, count).filter(|c| *c != 0).and_then(char::from_u32) {
                Some(c) => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    Ok(1 + count)
                }
                None => Err(unknown(1 + count)),
            }
        }
        _ => Err(unknown(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans() {
        for t in ["1", "yes", "Y", "true", "T", "on"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["0", "no", "N", "false", "f", "OFF"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        assert_eq!(parse_bool("maybe"), None);
        assert_eq!(parse_bool(""), None);
    }

    #[test]
    fn words() {
        assert_eq!(split_words("a  b\tc").unwrap(), ["a", "b", "c"]);
        assert_eq!(
            split_words(r#"A="b c" 'd e' f\sg"#).unwrap(),
            ["A=b c", "d e", "f g"]
        );
        assert_eq!(split_words(r#""" x"#).unwrap(), ["", "x"]);
        assert_eq!(split_words(r"a\nb").unwrap(), ["a\nb"]);
        assert_eq!(split_words("").unwrap(), Vec::<String>::new());
        assert_eq!(split_words("\"a"), Err(WordsError::UnterminatedQuote('"')));
        assert_eq!(split_words("a\\"), Err(WordsError::TrailingBackslash));
        // Only systemd's WHITESPACE separates words.
        assert_eq!(split_words("a\u{a0}b").unwrap(), ["a\u{a0}b"]);
    }

    #[test]
    fn words_keeping_backslashes() {
        let split = split_words_keeping_backslashes;
        assert_eq!(
            split(r#"web\* "a b" x\"#).unwrap(),
            [r"web\*", "a b", r"x\"]
        );
        // A backslash does not escape a quote or a space.
        assert_eq!(split(r#""a\" b\ c"#).unwrap(), [r"a\", r"b\", "c"]);
        assert_eq!(split(r"\x41").unwrap(), [r"\x41"]);
        assert_eq!(split("'a"), Err(WordsError::UnterminatedQuote('\'')));
    }

    #[test]
    fn c_escapes() {
        let one = |v: &str| split_words(v).map(|w| w.join("|"));
        for (value, word) in [
            (r"\x41", "A"),
            (r"\110\151", "Hi"),
            (r"\u00e9", "\u{e9}"),
            (r"\U0001F600", "\u{1F600}"),
            (r"\xc3\xa9", "\u{e9}"),
            (r"\303\251", "\u{e9}"),
            (r"\a\b\f\v", "\x07\x08\x0c\x0b"),
            (r"\n\t\r", "\n\t\r"),
            (r#"\\ \" \'"#, "\\|\"|'"),
            (r#""\x41 \"q\"""#, "A \"q\""),
            (r"'a\sb'", "a b"),
            (r"\x41x", "Ax"),
            (r"\1234", "S4"),
        ] {
            assert_eq!(one(value).as_deref(), Ok(word), "{value}");
        }
        for bad in [
            r"a\ b",
            r"\q",
            r"\x4",
            r"\xzz",
            r"\x00",
            r"\000",
            r"\400",
            r"\8",
            r"\u00",
            r"\u0000",
            r"\ud800",
            r"\U00110000",
            "\\\u{e9}",
        ] {
            assert!(
                matches!(split_words(bad), Err(WordsError::UnknownEscape(_))),
                "{bad}: {:?}",
                split_words(bad)
            );
        }
        assert_eq!(
            split_words(r"ok \xe9"),
            Err(WordsError::NotUtf8 { word: 2, at: 0 })
        );
        assert_eq!(
            split_words(r"a\ b")
                .unwrap_err()
                .to_string()
                .split(':')
                .next(),
            Some("unknown escape sequence \"\\\\ \"")
        );
    }
}
