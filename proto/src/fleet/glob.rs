//! Glob patterns for `Conflicts` and `Replaces`: a port of Go's
//! `path.Match`, which fleet uses to match unit names.

use crate::work;

/// Why a glob pattern is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    #[error("'\\' at the end of the pattern escapes nothing")]
    TrailingBackslash,
    #[error("'[' opens a character class that is not closed with ']'")]
    UnclosedClass,
    #[error(
        "a character class needs at least one character, and a '-' or ']' in it must be escaped \
         with '\\' unless the '-' joins the two ends of a range"
    )]
    BadClass,
}

/// Checks that `pattern` is a well-formed glob for [`glob_match`].
pub fn validate_glob(pattern: &str) -> Result<(), GlobError> {
    let mut rest = pattern;
    while !rest.is_empty() {
        let (_, chunk, after) = scan_chunk(rest);
        rest = after;
        match_chunk(chunk, "")?;
    }
    Ok(())
}

/// Whether `name` matches the glob `pattern`, with the rules of Go's
/// `path.Match`, which fleet uses for `Conflicts` and `Replaces`:
///
/// - `*` matches any run of characters other than `/`, including none;
/// - `?` matches any one character other than `/`;
/// - `[abc]`, `[a-z]` match one character of the class; `[^...]` negates
///   the class (`!` is not special: `[!a]` matches `!` or `a`);
/// - `\` makes the next character match itself, also inside a class;
/// - any other character matches itself.
///
/// The whole name must match. A malformed pattern (see [`validate_glob`])
/// matches nothing, as in fleet.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    go_match(pattern, name).unwrap_or(false)
}

/// Go's `path.Match`, returning its `ErrBadPattern` as a [`GlobError`].
fn go_match(pattern: &str, name: &str) -> Result<bool, GlobError> {
    let mut pattern = pattern;
    let mut name = name;
    'pattern: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            // A trailing '*' matches the rest of the name unless it has a '/'.
            return Ok(!name.contains('/'));
        }
        // The chunk at the current position; when it is the last one, it
        // must take the rest of the name, or a '*' before it may still
        // match by skipping more.
        if let Some(left) = match_chunk(chunk, name)?
            && (left.is_empty() || !pattern.is_empty())
        {
            name = left;
            continue;
        }
        if star {
            // Let the '*' take one more character at a time, never a '/'.
            let current = name;
            for (i, c) in current.char_indices() {
                if c == '/' {
                    break;
                }
                if let Some(left) = match_chunk(chunk, &current[i + c.len_utf8()..])? {
                    if pattern.is_empty() && !left.is_empty() {
                        continue;
                    }
                    name = left;
                    continue 'pattern;
                }
            }
        }
        // No match; the rest of the pattern must still be well formed.
        while !pattern.is_empty() {
            let (_, chunk, rest) = scan_chunk(pattern);
            pattern = rest;
            match_chunk(chunk, "")?;
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

/// Splits off the leading stars and the chunk up to the next star outside
/// a class: `(star, chunk, rest)`.
fn scan_chunk(pattern: &str) -> (bool, &str, &str) {
    let stars = pattern.len() - pattern.trim_start_matches('*').len();
    work::charge(stars + 1);
    let pattern = &pattern[stars..];
    let bytes = pattern.as_bytes();
    let mut in_class = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if i + 1 < bytes.len() => i += 1,
            b'[' => in_class = true,
            b']' => in_class = false,
            b'*' if !in_class => break,
            _ => {}
        }
        i += 1;
    }
    work::charge(i);
    // `i` stops at an ASCII '*' or at the end, so it is a char boundary;
    // `get` keeps that from panicking even if it were not.
    let (chunk, rest) = match (pattern.get(..i), pattern.get(i..)) {
        (Some(chunk), Some(rest)) => (chunk, rest),
        _ => (pattern, ""),
    };
    (stars > 0, chunk, rest)
}

/// Matches a chunk (no unescaped `*` outside a class) at the start of `s`;
/// returns what is left of `s` on a match. The whole chunk is always read,
/// so a malformed one is reported even when it cannot match.
fn match_chunk<'s>(chunk: &str, s: &'s str) -> Result<Option<&'s str>, GlobError> {
    work::charge(chunk.len() + 1);
    let mut chunk = chunk;
    let mut s = s;
    let mut failed = false;
    while let Some(c) = next_char(&mut chunk) {
        if !failed && s.is_empty() {
            failed = true;
        }
        match c {
            '[' => {
                let r = if failed { None } else { next_char(&mut s) };
                let negated = chunk.starts_with('^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut ranges = 0;
                loop {
                    if ranges > 0 && chunk.starts_with(']') {
                        chunk = &chunk[1..];
                        break;
                    }
                    let lo = class_char(&mut chunk)?;
                    let hi = if chunk.starts_with('-') {
                        chunk = &chunk[1..];
                        class_char(&mut chunk)?
                    } else {
                        lo
                    };
                    if r.is_some_and(|r| lo <= r && r <= hi) {
                        matched = true;
                    }
                    ranges += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            '?' => {
                if !failed && next_char(&mut s) == Some('/') {
                    failed = true;
                }
            }
            _ => {
                let literal = if c == '\\' {
                    next_char(&mut chunk).ok_or(GlobError::TrailingBackslash)?
                } else {
                    c
                };
                if !failed && next_char(&mut s) != Some(literal) {
                    failed = true;
                }
            }
        }
    }
    Ok((!failed).then_some(s))
}

/// One end of a class range, unescaped (Go's `getEsc`). The class must go
/// on after it.
fn class_char(chunk: &mut &str) -> Result<char, GlobError> {
    let mut rest = *chunk;
    let c = match next_char(&mut rest) {
        None => return Err(GlobError::UnclosedClass),
        Some('-' | ']') => return Err(GlobError::BadClass),
        Some('\\') => next_char(&mut rest).ok_or(GlobError::UnclosedClass)?,
        Some(c) => c,
    };
    if rest.is_empty() {
        return Err(GlobError::UnclosedClass);
    }
    *chunk = rest;
    Ok(c)
}

fn next_char(s: &mut &str) -> Option<char> {
    let c = s.chars().next()?;
    *s = &s[c.len_utf8()..];
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go's own table for `path.Match` (src/path/match_test.go): pattern,
    /// name, whether it matches, whether the pattern is malformed.
    const GO_CASES: &[(&str, &str, bool, bool)] = &[
        ("abc", "abc", true, false),
        ("*", "abc", true, false),
        ("*c", "abc", true, false),
        ("a*", "a", true, false),
        ("a*", "abc", true, false),
        ("a*", "ab/c", false, false),
        ("a*/b", "abc/b", true, false),
        ("a*/b", "a/c/b", false, false),
        ("a*b*c*d*e*/f", "axbxcxdxe/f", true, false),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true, false),
        ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false, false),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false, false),
        ("a*b?c*x", "abxbbxdbxebxczzx", true, false),
        ("a*b?c*x", "abxbbxdbxebxczzy", false, false),
        ("ab[c]", "abc", true, false),
        ("ab[b-d]", "abc", true, false),
        ("ab[e-g]", "abc", false, false),
        ("ab[^c]", "abc", false, false),
        ("ab[^b-d]", "abc", false, false),
        ("ab[^e-g]", "abc", true, false),
        ("a\\*b", "a*b", true, false),
        ("a\\*b", "ab", false, false),
        ("a?b", "a☺b", true, false),
        ("a[^a]b", "a☺b", true, false),
        ("a???b", "a☺b", false, false),
        ("a[^a][^a][^a]b", "a☺b", false, false),
        ("[a-ζ]*", "α", true, false),
        ("*[a-ζ]", "A", false, false),
        ("a?b", "a/b", false, false),
        ("a*b", "a/b", false, false),
        ("[\\]a]", "]", true, false),
        ("[\\-]", "-", true, false),
        ("[x\\-]", "x", true, false),
        ("[x\\-]", "-", true, false),
        ("[x\\-]", "z", false, false),
        ("[\\-x]", "x", true, false),
        ("[\\-x]", "-", true, false),
        ("[\\-x]", "a", false, false),
        ("[]a]", "]", false, true),
        ("[-]", "-", false, true),
        ("[x-]", "x", false, true),
        ("[x-]", "-", false, true),
        ("[x-]", "z", false, true),
        ("[-x]", "x", false, true),
        ("[-x]", "-", false, true),
        ("[-x]", "a", false, true),
        ("\\", "a", false, true),
        ("[a-b-c]", "a", false, true),
        ("[", "a", false, true),
        ("[^", "a", false, true),
        ("[^bc", "a", false, true),
        ("a[", "a", false, true),
        ("a[", "ab", false, true),
        ("a[", "x", false, true),
        ("a/b[", "x", false, true),
        ("*x", "xxx", true, false),
    ];

    #[test]
    fn glob_matches_like_go_path_match() {
        for &(pattern, name, matches, bad) in GO_CASES {
            assert_eq!(
                glob_match(pattern, name),
                matches,
                "{pattern:?} vs {name:?}"
            );
            assert_eq!(
                go_match(pattern, name).is_err(),
                bad,
                "{pattern:?} vs {name:?}: malformed?"
            );
            assert_eq!(
                validate_glob(pattern).is_err(),
                bad,
                "{pattern:?}: malformed?"
            );
        }
    }

    #[test]
    fn glob_on_unit_names() {
        assert!(glob_match("web@*.service", "web@8080.service"));
        assert!(glob_match("web@*.service", "web@.service"));
        assert!(!glob_match("web@*.service", "web.service"));
        assert!(glob_match("monitor*", "monitor-disk.timer"));
        assert!(glob_match("db-?.service", "db-1.service"));
        assert!(!glob_match("db-?.service", "db-10.service"));
        assert!(glob_match("db-[0-9][0-9].service", "db-10.service"));
        // '!' does not negate a class in Go, unlike in a shell.
        assert!(!glob_match("[!a]*", "b.service"));
        assert!(glob_match("[!a]*", "!x.service"));
        assert!(glob_match("[^a]*", "b.service"));
        // The whole name must match.
        assert!(!glob_match("web", "web.service"));
        assert!(glob_match("", ""));
        assert!(!glob_match("", "a"));
        assert!(glob_match("**", "abc"));
        assert!(glob_match("a**c", "abbc"));
        // A malformed pattern matches nothing.
        assert!(!glob_match("web[", "web["));
        assert_eq!(validate_glob("web["), Err(GlobError::UnclosedClass));
        assert_eq!(validate_glob("web\\"), Err(GlobError::TrailingBackslash));
        assert_eq!(validate_glob("[]"), Err(GlobError::BadClass));
        assert_eq!(validate_glob("a*[z-"), Err(GlobError::UnclosedClass));
    }
}
