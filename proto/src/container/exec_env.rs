//! `$` in `Exec=`, as systemd substitutes it in the `ExecStart=` that
//! Quadlet generates (systemd.service(5), "Command lines"; systemd 252's
//! `replace_env_argv()`): Quadlet passes the words of `Exec=` on to podman
//! in `ExecStart=` without escaping `$`, so systemd substitutes them from
//! the service's environment before podman runs.
//!
//! - a word that is `$NAME` (not `${` or `$$`) becomes the variable's value
//!   split into words (quotes group them), or nothing when it is unset;
//! - `${NAME}` anywhere in a word becomes the value as it is (empty when
//!   unset); `${NAME:...}` is left as written;
//! - `$$` is one `$`; any other `$` is kept.
//!
//! The same substitution (within words) applies to the other values
//! Quadlet passes in `ExecStart=` and flotilla passes to Docker as strings:
//! `Environment=` and `Label=` values and `HealthCmd=`
//! ([`substitute_values`]). Values flotilla checks for their form
//! (`Image=`, `PublishPort=`, `Volume=`, ...) take `$` as written.
//!
//! The shim, the service's main process, does this with its own
//! environment, which is the service's.

use super::{ContainerSpec, HealthCmd};

/// The words of `Exec=` after systemd's substitution, with `lookup`
/// reading the service's environment.
pub fn substitute(words: &[String], lookup: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(words.len());
    for word in words {
        let bytes = word.as_bytes();
        if bytes.first() == Some(&b'$') && !matches!(bytes.get(1), Some(b'{' | b'$')) {
            if let Some(value) = lookup(&word[1..]) {
                out.extend(split_relaxed(&value));
            }
            continue;
        }
        out.push(replace(word, &lookup));
    }
    out
}

/// The values Quadlet puts in `ExecStart=` as words of their own after a
/// flag (`--env NAME=value`, `--label`, `--health-cmd`), after systemd's
/// substitution: `${NAME}` and `$$` within them, as [`substitute`] does
/// within a word. `Exec=` itself goes through [`substitute`].
pub fn substitute_values(spec: &mut ContainerSpec, lookup: impl Fn(&str) -> Option<String>) {
    for value in spec
        .environment
        .values_mut()
        .chain(spec.labels.values_mut())
    {
        *value = replace(value, &lookup);
    }
    match &mut spec.health_cmd {
        Some(HealthCmd::Shell(cmd)) => *cmd = replace(cmd, &lookup),
        Some(HealthCmd::Exec(args)) => {
            for arg in args {
                *arg = replace(arg, &lookup);
            }
        }
        Some(HealthCmd::None) | None => {}
    }
}

/// `${NAME}` and `$$` in one word (systemd's `replace_env()`).
fn replace(word: &str, lookup: &impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            match body.find(['}', ':']) {
                Some(end) if body.as_bytes()[end] == b'}' => {
                    out.push_str(&lookup(&body[..end]).unwrap_or_default());
                    rest = &body[end + 1..];
                }
                // `${NAME:...}` or an unclosed `${`: kept as written.
                _ => {
                    out.push_str("${");
                    rest = body;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A value split as systemd splits it for `$NAME` (`strv_split_full()`
/// with `EXTRACT_RELAX | EXTRACT_UNQUOTE`): words at whitespace, quotes
/// group them, a backslash takes the next character as it is (no C
/// escapes), and an unbalanced quote or a final backslash just end the
/// value.
fn split_relaxed(value: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next) => {
                    word.push(next);
                    in_word = true;
                }
                None => break,
            },
            c if Some(c) == quote => quote = None,
            '"' | '\'' if quote.is_none() => {
                quote = Some(c);
                in_word = true;
            }
            ' ' | '\t' | '\n' | '\r' if quote.is_none() => {
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
    if in_word {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(words: &[&str]) -> Vec<String> {
        let words: Vec<String> = words.iter().map(|w| (*w).to_owned()).collect();
        substitute(&words, |name| match name {
            "ONE" => Some("a b  'c d'".to_owned()),
            "EMPTY" => Some(String::new()),
            "X" => Some("x y".to_owned()),
            _ => None,
        })
    }

    #[test]
    fn whole_words_split_braces_substitute_dollars_escape() {
        assert_eq!(run(&["$ONE", "z"]), ["a", "b", "c d", "z"]);
        assert_eq!(run(&["$UNSET", "$EMPTY", "z"]), ["z"]);
        assert_eq!(run(&["${X}", "a${X}b", "${UNSET}c"]), ["x y", "ax yb", "c"]);
        assert_eq!(run(&["$$X", "a$$b", "$$"]), ["$X", "a$b", "$"]);
        assert_eq!(
            run(&["a$X", "a$", "${X:-d}", "${X"]),
            ["a$X", "a$", "${X:-d}", "${X"]
        );
    }

    #[test]
    fn values_substitute_within_words() {
        let (file, _) = crate::unit_file::UnitFile::parse(
            "[Container]\nImage=nginx\nEnvironment=A=${X}:$$HOME B=$X\nLabel=l=${X}\nHealthCmd=echo $${X} ${X}\n",
        );
        let mut diags = crate::diagnostic::Diagnostics::new();
        let name = crate::name::UnitName::parse("web.service").unwrap();
        let mut spec = ContainerSpec::from_unit_file(&name, &file, &mut diags).unwrap();
        substitute_values(&mut spec, |n| (n == "X").then(|| "x y".to_owned()));
        assert_eq!(spec.environment["A"], "x y:$HOME");
        assert_eq!(spec.environment["B"], "$X");
        assert_eq!(spec.labels["l"], "x y");
        assert_eq!(
            spec.health_cmd,
            Some(HealthCmd::Shell("echo ${X} x y".into()))
        );
    }

    #[test]
    fn split_values_take_backslashes_literally_and_forgive_quotes() {
        assert_eq!(split_relaxed(r"a\ b \x41 'c"), ["a b", "x41", "c"]);
        assert_eq!(split_relaxed("x\\"), ["x"]);
    }
}
