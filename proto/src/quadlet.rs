//! Podman Quadlet's files as they are.
//!
//! A Quadlet file `NAME.container` is the unit `NAME.service`, as Quadlet
//! names the service it generates (`web@.container` is the template
//! `web@.service`, `web@1.container` its instance `web@1.service`). Its
//! text is the unit's: `[Container]` is read as flotilla reads it, and
//! `[Unit]`, `[Service]`, `[Install]` and `[X-Fleet]` are passed through.
//!
//! Quadlet's drop-ins apply as Quadlet applies them (`GetUnitDropinPaths()`
//! and `loadUnitDropins()` in podman): `*.conf` files in the directories
//! [`dropin_dirs`] names, beside the file, most specific first
//! (`web@1.container.d`, `web@.container.d`, the truncated names of a
//! dashed name such as `foo-.container.d`, and the top-level
//! `container.d`); a name seen in a more specific directory hides the same
//! name in a broader one; the chosen files are merged in the order of their
//! names, after the file itself. Merging appends their sections, as
//! systemd merges repeated sections, so [`Merged`] is the file and its
//! drop-ins one after the other, and knows which file and line each line
//! of the whole came from.
//!
//! Reading the directories is the caller's (this crate does no I/O).

use std::fmt;

use crate::diagnostic::{Diagnostic, UnitFileError};
use crate::name::{NameError, UnitName};
use crate::unit::{Checked, UnitSpec};
use crate::unit_file::{UnitFile, count_lines};

/// The suffix of Quadlet's container files.
pub const CONTAINER_SUFFIX: &str = "container";

/// The drop-ins' suffix.
pub const DROPIN_SUFFIX: &str = "conf";

/// Quadlet's other kinds of files, which flotilla does not read.
pub const OTHER_SUFFIXES: &[&str] = &[
    "network", "volume", "pod", "kube", "image", "build", "artifact",
];

/// What a file's name says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `NAME.container`.
    Container,
    /// Another kind of Quadlet file (`.network`, `.volume`, ...): its suffix.
    OtherQuadlet(&'static str),
    /// Anything else.
    Other,
}

/// The kind of file named `file_name`.
pub fn file_kind(file_name: &str) -> FileKind {
    match file_name.rsplit_once('.') {
        Some((stem, CONTAINER_SUFFIX)) if !stem.is_empty() => FileKind::Container,
        Some((stem, suffix)) if !stem.is_empty() => OTHER_SUFFIXES
            .iter()
            .find(|s| **s == suffix)
            .map_or(FileKind::Other, |s| FileKind::OtherQuadlet(s)),
        _ => FileKind::Other,
    }
}

/// The unit a `.container` file is: `NAME.container` -> `NAME.service`.
/// `None` when the file is not a `.container`.
pub fn container_unit_name(file_name: &str) -> Option<Result<UnitName, NameError>> {
    let stem = file_name.strip_suffix(".container")?;
    Some(UnitName::parse(&format!("{stem}.service")))
}

/// The drop-in directories Quadlet reads for the file named `file_name`,
/// relative to the file's directory, most specific first.
pub fn dropin_dirs(file_name: &str) -> Vec<String> {
    let (base, ext) = match file_name.rsplit_once('.') {
        Some((base, ext)) => (base, ext),
        None => (file_name, ""),
    };
    let dropin_ext = format!(".{ext}.d");
    let (unit, instance) = match base.split_once('@') {
        Some((unit, instance)) => (unit, Some(instance)),
        None => (base, None),
    };
    // Broad to specific, then reversed, as Quadlet builds the list.
    let mut dirs = vec![format!("{ext}.d")];
    let parts: Vec<&str> = unit.split('-').collect();
    for i in 1..parts.len() {
        let truncated = format!("{}-", parts[..i].join("-"));
        dirs.push(format!("{truncated}{dropin_ext}"));
        if instance.is_some() {
            dirs.push(format!("{truncated}@{dropin_ext}"));
        }
    }
    if instance.is_some_and(|i| !i.is_empty()) {
        dirs.push(format!("{unit}@{dropin_ext}"));
    }
    dirs.push(format!("{file_name}.d"));
    dirs.reverse();
    dirs
}

/// Quadlet's choice of drop-ins: `listing` holds each directory of
/// [`dropin_dirs`] (in that order) with the names of the files in it. Of
/// the `*.conf` names, the first directory that has a name wins it; the
/// result is `(directory, name)` in the order of the names, the order they
/// are merged in.
pub fn choose_dropins(listing: &[(String, Vec<String>)]) -> Vec<(String, String)> {
    let mut chosen: std::collections::BTreeMap<&str, &str> = std::collections::BTreeMap::new();
    for (dir, names) in listing {
        for name in names {
            let is_conf = name
                .rsplit_once('.')
                .is_some_and(|(stem, ext)| ext == DROPIN_SUFFIX && !stem.is_empty());
            if is_conf {
                chosen.entry(name).or_insert(dir);
            }
        }
    }
    chosen
        .into_iter()
        .map(|(name, dir)| (dir.to_owned(), name.to_owned()))
        .collect()
}

/// One file of a unit: where it is (for messages) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub file: String,
    pub text: String,
}

/// A file and its drop-ins as one unit text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// The whole text: the file, then each drop-in after an empty line (so
    /// that no line continues from one file into the next).
    pub text: String,
    /// Each source and the line of `text` it starts on.
    parts: Vec<(String, u32)>,
    /// The drop-ins' own texts, in order (checked on their own too).
    dropins: Vec<String>,
}

impl Merged {
    /// The file `main` with `dropins` merged after it, in order. (Each
    /// drop-in's first line is found by counting the lines so far: fine for
    /// the handful of drop-ins a unit has, read from the user's own disk.)
    pub fn new(main: Source, dropins: Vec<Source>) -> Merged {
        let mut text = main.text;
        let mut parts = vec![(main.file, 1)];
        let mut texts = Vec::new();
        for dropin in dropins {
            // An empty line between the files: no line continues into the
            // next file.
            text.push_str(if text.ends_with('\n') { "\n" } else { "\n\n" });
            let start = u32::try_from(count_lines(&text) + 1).unwrap_or(u32::MAX);
            text.push_str(&dropin.text);
            parts.push((dropin.file, start));
            texts.push(dropin.text);
        }
        Merged {
            text,
            parts,
            dropins: texts,
        }
    }

    /// The file and line that line `line` of the whole text came from.
    pub fn locate(&self, line: u32) -> (&str, u32) {
        let (file, start) = self
            .parts
            .iter()
            .rev()
            .find(|(_, start)| *start <= line)
            .unwrap_or(&self.parts[0]);
        (file, line.saturating_sub(*start) + 1)
    }

    /// The file everything else is merged into.
    pub fn main_file(&self) -> &str {
        &self.parts[0].0
    }

    /// Whether there are drop-ins.
    pub fn has_dropins(&self) -> bool {
        self.parts.len() > 1
    }

    /// Each drop-in's file on its own, checked for what merging would
    /// hide: an assignment before the drop-in's first section would land in
    /// the last section of the file before it. Quadlet refuses such a
    /// drop-in; so does flotilla.
    fn check_dropins(&self) -> Vec<Located> {
        let mut out = Vec::new();
        for ((file, _), text) in self.parts.iter().skip(1).zip(&self.dropins) {
            let (_, diagnostics) = UnitFile::parse(text);
            out.extend(
                diagnostics
                    .into_iter()
                    .filter(Diagnostic::is_error)
                    .map(|d| Located {
                        file: file.clone(),
                        diagnostic: d,
                    }),
            );
        }
        out
    }

    /// Checks the whole as unit `name`, each diagnostic naming the file and
    /// line it is about.
    pub fn check(&self, name: &UnitName) -> Result<(Checked, Vec<Located>), MergedError> {
        let dropin_errors = self.check_dropins();
        let (spec, diagnostics) = UnitSpec::read(name, &self.text);
        let located: Vec<Located> = diagnostics.into_iter().map(|d| self.place(d)).collect();
        match spec {
            Some(spec) if dropin_errors.is_empty() => {
                let checked = Checked {
                    spec,
                    warnings: located.iter().map(|l| l.diagnostic.clone()).collect(),
                };
                Ok((checked, located))
            }
            _ => {
                let mut all = dropin_errors;
                all.extend(located);
                Err(MergedError { diagnostics: all })
            }
        }
    }

    /// A diagnostic of the whole text, placed in its own file.
    pub fn place(&self, mut d: Diagnostic) -> Located {
        let file = match d.line {
            Some(line) => {
                let (file, line) = self.locate(line);
                d.line = Some(line);
                file.to_owned()
            }
            None => self.main_file().to_owned(),
        };
        Located {
            file,
            diagnostic: d,
        }
    }
}

/// A diagnostic and the file it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub file: String,
    pub diagnostic: Diagnostic,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.diagnostic.display_with(&self.file))
    }
}

/// A unit made of a file and its drop-ins that was rejected: every problem,
/// each in its own file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct MergedError {
    pub diagnostics: Vec<Located>,
}

impl fmt::Display for MergedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors: Vec<String> = self
            .diagnostics
            .iter()
            .filter(|l| l.diagnostic.is_error())
            .map(Located::to_string)
            .collect();
        f.write_str(&errors.join("\n"))
    }
}

impl From<UnitFileError> for MergedError {
    fn from(e: UnitFileError) -> Self {
        MergedError {
            diagnostics: e
                .diagnostics
                .into_iter()
                .map(|d| Located {
                    file: e.file.clone(),
                    diagnostic: d,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_names() {
        assert_eq!(file_kind("web.container"), FileKind::Container);
        assert_eq!(file_kind("net.network"), FileKind::OtherQuadlet("network"));
        assert_eq!(file_kind("web.service"), FileKind::Other);
        assert_eq!(file_kind(".container"), FileKind::Other);
        let name = |f: &str| container_unit_name(f).map(|r| r.map(|n| n.to_string()));
        assert_eq!(name("web.container"), Some(Ok("web.service".to_owned())));
        assert_eq!(name("web@.container"), Some(Ok("web@.service".to_owned())));
        assert_eq!(
            name("web@1.container"),
            Some(Ok("web@1.service".to_owned()))
        );
        assert_eq!(name("web.service"), None);
        assert!(matches!(name("w b.container"), Some(Err(_))));
    }

    #[test]
    fn dropin_search_order_is_quadlets() {
        assert_eq!(
            dropin_dirs("web.container"),
            ["web.container.d", "container.d"]
        );
        assert_eq!(
            dropin_dirs("foo-bar-baz.container"),
            [
                "foo-bar-baz.container.d",
                "foo-bar-.container.d",
                "foo-.container.d",
                "container.d"
            ]
        );
        assert_eq!(
            dropin_dirs("a-b@i-j.container"),
            [
                "a-b@i-j.container.d",
                "a-b@.container.d",
                "a-@.container.d",
                "a-.container.d",
                "container.d"
            ]
        );
        assert_eq!(
            dropin_dirs("a@.container"),
            ["a@.container.d", "container.d"]
        );
    }

    #[test]
    fn the_most_specific_drop_in_of_a_name_wins_and_names_set_the_order() {
        let listing = vec![
            (
                "web.container.d".to_owned(),
                vec!["20-b.conf".to_owned(), "notes.txt".to_owned()],
            ),
            (
                "container.d".to_owned(),
                vec!["20-b.conf".to_owned(), "10-a.conf".to_owned()],
            ),
        ];
        assert_eq!(
            choose_dropins(&listing),
            [
                ("container.d".to_owned(), "10-a.conf".to_owned()),
                ("web.container.d".to_owned(), "20-b.conf".to_owned()),
            ]
        );
    }

    #[test]
    fn lines_are_placed_in_their_own_files() {
        let merged = Merged::new(
            Source {
                file: "web.container".into(),
                text: "[Container]\nImage=nginx\nBad=1".into(),
            },
            vec![Source {
                file: "web.container.d/10.conf".into(),
                text: "[Container]\nPublishPort=x\n".into(),
            }],
        );
        let err = merged
            .check(&UnitName::parse("web.service").unwrap())
            .unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.contains("web.container:3: error: [Container] Bad:"),
            "{shown}"
        );
        assert!(
            shown.contains("web.container.d/10.conf:2: error: [Container] PublishPort:"),
            "{shown}"
        );
    }

    #[test]
    fn a_dropin_must_start_with_a_section() {
        let merged = Merged::new(
            Source {
                file: "web.container".into(),
                text: "[Container]\nImage=nginx\n".into(),
            },
            vec![Source {
                file: "d/10.conf".into(),
                text: "# note\nPublishPort=80\n".into(),
            }],
        );
        let err = merged
            .check(&UnitName::parse("web.service").unwrap())
            .unwrap_err();
        assert!(err.to_string().starts_with("d/10.conf:2: error:"), "{err}");
    }

    #[test]
    fn no_line_continues_into_a_dropin() {
        let merged = Merged::new(
            Source {
                file: "web.container".into(),
                text: "[Container]\nImage=nginx\nExec=a \\".into(),
            },
            vec![Source {
                file: "d/10.conf".into(),
                text: "[Container]\nUser=1".into(),
            }],
        );
        let (checked, _) = merged
            .check(&UnitName::parse("web.service").unwrap())
            .unwrap();
        let spec = checked.spec.container.unwrap();
        assert_eq!(spec.exec, ["a"]);
        assert_eq!(spec.user.as_deref(), Some("1"));
    }
}
