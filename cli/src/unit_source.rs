//! Unit files read from disk: systemd unit files, and Podman Quadlet
//! `NAME.container` files, which are the unit `NAME.service` with their
//! Quadlet drop-ins merged in (`flotilla_proto::quadlet`).

use std::path::Path;

use anyhow::Context;
use flotilla_proto::quadlet::{self, FileKind, Located, Merged, MergedError, Source};
use flotilla_proto::{Checked, UnitName};

/// A unit read from a file (and its drop-ins).
#[derive(Debug)]
pub struct LocalUnit {
    pub name: UnitName,
    pub merged: Merged,
}

impl LocalUnit {
    /// The unit's text, drop-ins merged.
    pub fn text(&self) -> &str {
        &self.merged.text
    }

    /// Checks the unit; every diagnostic names its own file and line.
    pub fn check(&self) -> Result<(Checked, Vec<Located>), MergedError> {
        self.merged.check(&self.name)
    }
}

pub use flotilla_proto::bundle::{Found, unsupported_message};

/// What the file at `path` is, by its name.
pub fn kind(path: &Path) -> Found {
    flotilla_proto::bundle::kind(&file_name(path))
}

/// Whether a path relative to an applied directory has a hidden
/// component (skipped, as `.git`).
pub fn is_hidden(path: &str) -> bool {
    path.split('/').any(|c| c.starts_with('.'))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The unit a file or command-line name stands for: `NAME.container` is
/// `NAME.service`; other names as systemd reads them.
pub fn unit_name(name: &str) -> Result<UnitName, flotilla_proto::name::NameError> {
    match quadlet::container_unit_name(name) {
        Some(result) => result,
        None => UnitName::parse(name),
    }
}

/// The unit named by the last part of `path`.
pub fn unit_name_of_path(path: &Path) -> anyhow::Result<UnitName> {
    unit_name(&file_name(path)).with_context(|| format!("{}", path.display()))
}

/// Reads the unit file at `path`; a `.container` with the Quadlet drop-ins
/// beside it.
pub fn read(path: &Path) -> anyhow::Result<LocalUnit> {
    let name = unit_name_of_path(path)?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let main = Source {
        file: path.display().to_string(),
        text,
    };
    let file = file_name(path);
    let dropins = if quadlet::file_kind(&file) == FileKind::Container {
        read_dropins(path, &file)?
    } else {
        Vec::new()
    };
    Ok(LocalUnit {
        name,
        merged: Merged::new(main, dropins),
    })
}

/// Text read from standard input, checked as unit `name` (a `.container`
/// name is its `.service`; no drop-ins).
pub fn from_text(file: &str, name: &str, text: String) -> anyhow::Result<LocalUnit> {
    let name = unit_name(name)?;
    Ok(LocalUnit {
        name,
        merged: Merged::new(
            Source {
                file: file.to_owned(),
                text,
            },
            Vec::new(),
        ),
    })
}

fn read_dropins(path: &Path, file: &str) -> anyhow::Result<Vec<Source>> {
    let dir = path.parent().unwrap_or(Path::new(""));
    let mut listing = Vec::new();
    for sub in quadlet::dropin_dirs(file) {
        let full = dir.join(&sub);
        let entries = match std::fs::read_dir(&full) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", full.display())),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot read {}", full.display()))?;
            if entry.file_type().is_ok_and(|t| !t.is_dir()) {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        listing.push((sub, names));
    }
    quadlet::choose_dropins(&listing)
        .into_iter()
        .map(|(sub, name)| {
            let p = dir.join(sub).join(name);
            let text = std::fs::read_to_string(&p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            Ok(Source {
                file: p.display().to_string(),
                text,
            })
        })
        .collect()
}
