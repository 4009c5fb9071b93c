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
}

/// Splits a value into words as systemd's `extract_first_word()` does with
/// quotes and C-style escapes (`EXTRACT_UNQUOTE | EXTRACT_CUNESCAPE`):
/// words are separated by whitespace; single or double quotes group a word
/// (and may start or stop inside one, as in `A="b c"`); a backslash escapes
/// the next character, with `\n`, `\t`, `\r`, `\\`, `\"`, `\'` and `\ `
/// understood.
pub fn split_words(value: &str) -> Result<Vec<String>, WordsError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let escaped = chars.next().ok_or(WordsError::TrailingBackslash)?;
                word.push(match escaped {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    other => other,
                });
                in_word = true;
            }
            c if Some(c) == quote => quote = None,
            '"' | '\'' if quote.is_none() => {
                quote = Some(c);
                in_word = true;
            }
            c if quote.is_none() && c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(WordsError::UnterminatedQuote(q));
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
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
            split_words(r#"A="b c" 'd e' f\ g"#).unwrap(),
            ["A=b c", "d e", "f g"]
        );
        assert_eq!(split_words(r#""" x"#).unwrap(), ["", "x"]);
        assert_eq!(split_words(r"a\nb").unwrap(), ["a\nb"]);
        assert_eq!(split_words("").unwrap(), Vec::<String>::new());
        assert_eq!(split_words("\"a"), Err(WordsError::UnterminatedQuote('"')));
        assert_eq!(split_words("a\\"), Err(WordsError::TrailingBackslash));
    }
}
