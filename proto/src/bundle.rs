//! A directory of unit files as the units it asks for: what `flotilla
//! apply DIR` reads from disk and what a git source reads from a commit's
//! tree (this module does no I/O: the caller hands it every file, by its
//! path relative to the directory, with its bytes).
//!
//! Every unit file (recursively, skipping hidden entries) is a unit, and
//! so is every Podman Quadlet `NAME.container` file, as the unit
//! `NAME.service` with its Quadlet drop-ins merged in. Quadlet's other
//! files (`.pod`, `.kube`, ...) are reported and skipped. An optional
//! `flotilla.yaml` at the top sets desired states and template instances:
//!
//! ```yaml
//! default-state: launched      # for units not listed under states
//! states:
//!   db.service: loaded
//! instances:
//!   worker@.service: [1, 2, 3]  # worker@1.service ... from worker@.service
//! ```
//!
//! Templates themselves are asked for inactive; their instances are units
//! with the template's contents. Every problem is reported at once, each
//! naming its file (and line, where there is one).

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::name::{QUADLET_OBJECT_SUFFIXES, UnitName, UnitType};
use crate::quadlet::{self, FileKind, Merged, Source};
use crate::state::DesiredState;
use crate::unit::UnitSpec;
use crate::unit_file::UnitFile;

/// The name of the optional manifest at the top of a directory.
pub const MANIFEST: &str = "flotilla.yaml";

/// One file of a directory: its path relative to the directory (`/`
/// between components) and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFile {
    pub path: String,
    pub bytes: Vec<u8>,
}

/// What a directory asks for one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// The unit's text, drop-ins merged.
    pub text: String,
    /// [`UnitFile::content_hash`] of `text`, as the cluster reports it.
    pub hash: String,
    pub desired: DesiredState,
}

/// Every unit a directory asks for, and what was skipped on the way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bundle {
    pub units: BTreeMap<UnitName, Wanted>,
    /// Warnings, each naming its file (and line): units that verify with
    /// warnings, Quadlet files flotilla does not read.
    pub warnings: Vec<String>,
    /// The groups of the manifest's `rollouts:` section, by name, as
    /// written: their settings are read by whoever rolls them out.
    pub rollouts: BTreeMap<String, serde_norway::Value>,
}

/// A directory that does not make a set of units: every problem, each
/// naming its file and, where there is one, its line
/// (`web.service:4: error: ...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct BundleError {
    pub errors: Vec<String>,
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.errors.join("\n"))
    }
}

/// What a file of a directory is, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A unit file, or a Quadlet `.container`, `.network` or `.volume`.
    Unit,
    /// A Quadlet file of a kind flotilla does not read: its suffix.
    Unsupported(&'static str),
    /// Not a unit (a drop-in, a manifest, notes...).
    Other,
}

/// What the file named `file_name` (the last component of its path) is.
pub fn kind(file_name: &str) -> Found {
    match quadlet::file_kind(file_name) {
        FileKind::Container => Found::Unit,
        // `.network` and `.volume`: units of their own (`NAME-network.service`).
        FileKind::OtherQuadlet(suffix) if QUADLET_OBJECT_SUFFIXES.contains(&suffix) => Found::Unit,
        FileKind::OtherQuadlet(suffix) => Found::Unsupported(suffix),
        FileKind::Other => {
            let is_unit = file_name.rsplit_once('.').is_some_and(|(stem, ext)| {
                !stem.is_empty() && UnitType::ALL.iter().any(|t| t.suffix() == ext)
            });
            if is_unit { Found::Unit } else { Found::Other }
        }
    }
}

/// Why a Quadlet file of another kind is not read.
pub fn unsupported_message(suffix: &str) -> String {
    format!("Podman Quadlet .{suffix} files are not read by flotilla: skipped")
}

/// Whether [`read`] looks at the file at `path` (relative, `/` between
/// components): units, Quadlet files and their `.conf` drop-ins, and the
/// manifest at the top; not hidden entries. Callers that gather files (a
/// directory walk, a git tree) pass only these.
pub fn reads(path: &str) -> bool {
    if path.split('/').any(|c| c.starts_with('.') || c.is_empty()) {
        return false;
    }
    if path == MANIFEST {
        return true;
    }
    let name = file_name(path);
    !matches!(kind(name), Found::Other) || name.ends_with(".conf")
}

/// `path` shown under `root` (the directory as the user named it).
fn shown(root: &str, path: &str) -> String {
    if root.is_empty() {
        path.to_owned()
    } else if root.ends_with('/') {
        format!("{root}{path}")
    } else {
        format!("{root}/{path}")
    }
}

fn file_name(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, name)| name)
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// `flotilla.yaml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Manifest {
    #[serde(default)]
    default_state: Option<DesiredState>,
    #[serde(default)]
    states: BTreeMap<String, DesiredState>,
    #[serde(default)]
    instances: BTreeMap<String, Vec<InstanceName>>,
    /// Groups of units rolled out together (read by the caller).
    #[serde(default)]
    rollouts: BTreeMap<String, serde_norway::Value>,
}

/// An instance name, written as a string or a number in YAML.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum InstanceName {
    Text(String),
    Number(u64),
}

impl InstanceName {
    fn as_string(&self) -> String {
        match self {
            InstanceName::Text(s) => s.clone(),
            InstanceName::Number(n) => n.to_string(),
        }
    }
}

/// The first line (from 1) of `text` that mentions `needle`, to point a
/// manifest error at the entry it is about.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

/// Reads a directory's files (paths relative to it; `root` is how the
/// directory is named in messages): every unit it asks for, by name, or
/// every problem.
pub fn read(root: &str, files: &[BundleFile]) -> Result<Bundle, BundleError> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let by_path: BTreeMap<&str, &[u8]> = files
        .iter()
        .map(|f| (f.path.as_str(), f.bytes.as_slice()))
        .collect();
    let text_of = |path: &str, errors: &mut Vec<String>| -> Option<String> {
        let bytes = by_path.get(path)?;
        match std::str::from_utf8(bytes) {
            Ok(text) => Some(text.to_owned()),
            Err(e) => {
                errors.push(format!(
                    "{}: error: not UTF-8 text (at byte {})",
                    shown(root, path),
                    e.valid_up_to()
                ));
                None
            }
        }
    };

    let mut texts: BTreeMap<UnitName, (String, String)> = BTreeMap::new();
    for path in by_path.keys().copied().filter(|p| reads(p)) {
        let name = file_name(path);
        let source = shown(root, path);
        match kind(name) {
            Found::Other => continue,
            Found::Unsupported(suffix) => {
                warnings.push(format!(
                    "{source}: warning: {}",
                    unsupported_message(suffix)
                ));
                continue;
            }
            Found::Unit => {}
        }
        let unit = match quadlet::container_unit_name(name) {
            Some(result) => result,
            None => UnitName::parse(name),
        };
        let unit = match unit {
            Ok(unit) => unit,
            Err(e) => {
                errors.push(format!("{source}: error: {e}"));
                continue;
            }
        };
        let Some(text) = text_of(path, &mut errors) else {
            continue;
        };
        let dropins = if quadlet::file_kind(name) == FileKind::Container {
            dropins(root, path, &by_path, &mut errors)
        } else {
            Vec::new()
        };
        let merged = Merged::new(
            Source {
                file: source.clone(),
                text,
            },
            dropins,
        );
        match merged.check(&unit) {
            Ok((_, located)) => warnings.extend(located.iter().map(ToString::to_string)),
            Err(e) => errors.push(e.to_string()),
        }
        if let Some((other, _)) = texts.get(&unit) {
            errors.push(format!(
                "{source}: error: unit {unit} is also defined by {other}"
            ));
            continue;
        }
        texts.insert(unit, (source, merged.text));
    }
    if !errors.is_empty() {
        return Err(BundleError { errors });
    }

    let manifest_path = shown(root, MANIFEST);
    let (manifest, manifest_text) = match text_of(MANIFEST, &mut errors) {
        None if !errors.is_empty() => return Err(BundleError { errors }),
        None => (Manifest::default(), String::new()),
        Some(text) => match serde_norway::from_str::<Option<Manifest>>(&text) {
            Ok(m) => (m.unwrap_or_default(), text),
            Err(e) => {
                let line = e
                    .location()
                    .map_or(String::new(), |l| format!(":{}", l.line()));
                return Err(BundleError {
                    errors: vec![format!("{manifest_path}{line}: error: {e}")],
                });
            }
        },
    };
    let at = |needle: &str| {
        line_of(&manifest_text, needle).map_or(manifest_path.clone(), |line| {
            format!("{manifest_path}:{line}")
        })
    };
    let default = manifest.default_state.unwrap_or(DesiredState::Launched);
    let mut units = BTreeMap::new();
    for (name, (_, text)) in &texts {
        let desired = if name.is_template() {
            DesiredState::Inactive
        } else {
            manifest
                .states
                .get(name.as_str())
                .copied()
                .unwrap_or(default)
        };
        units.insert(name.clone(), want(text, desired));
    }
    for (template, instances) in &manifest.instances {
        let template_name = match UnitName::parse(template) {
            Ok(name) => name,
            Err(e) => {
                errors.push(format!("{}: error: instances: {e}", at(template)));
                continue;
            }
        };
        let Some((source, text)) = texts
            .get(&template_name)
            .filter(|_| template_name.is_template())
        else {
            errors.push(format!(
                "{}: error: instances of {template}, which is not a template file in {}",
                at(template),
                if root.is_empty() {
                    "the directory"
                } else {
                    root
                }
            ));
            continue;
        };
        for instance in instances {
            let name = match template_name.instantiate(&instance.as_string()) {
                Ok(name) => name,
                Err(e) => {
                    errors.push(format!(
                        "{}: error: instances of {template}: {e}",
                        at(template)
                    ));
                    continue;
                }
            };
            // Specifiers expand per instance: check each one.
            if let Err(e) = UnitSpec::check_named(source, &name, text) {
                errors.push(e.to_string());
                continue;
            }
            let desired = manifest
                .states
                .get(name.as_str())
                .copied()
                .unwrap_or(default);
            units.insert(name, want(text, desired));
        }
    }
    for (name, desired) in &manifest.states {
        let known = UnitName::parse(name)
            .ok()
            .is_some_and(|n| units.contains_key(&n));
        if !known {
            errors.push(format!(
                "{}: error: states names {name}, which is neither a unit file in {} nor a listed instance",
                at(&format!("{name}:")),
                if root.is_empty() { "the directory" } else { root }
            ));
        } else if name.contains("@.") && desired.is_scheduled() {
            errors.push(format!(
                "{}: error: {name} is a template and cannot be {desired}",
                at(&format!("{name}:"))
            ));
        }
    }
    if !errors.is_empty() {
        return Err(BundleError { errors });
    }
    Ok(Bundle {
        units,
        warnings,
        rollouts: manifest.rollouts,
    })
}

fn want(text: &str, desired: DesiredState) -> Wanted {
    let (file, _) = UnitFile::parse(text);
    Wanted {
        text: text.to_owned(),
        hash: file.content_hash(),
        desired,
    }
}

/// The Quadlet drop-ins of the `.container` at `path`, as Quadlet chooses
/// them from the directories beside it.
fn dropins(
    root: &str,
    path: &str,
    by_path: &BTreeMap<&str, &[u8]>,
    errors: &mut Vec<String>,
) -> Vec<Source> {
    let dir = parent(path);
    let join = |a: &str, b: &str| {
        if a.is_empty() {
            b.to_owned()
        } else {
            format!("{a}/{b}")
        }
    };
    let mut listing = Vec::new();
    for sub in quadlet::dropin_dirs(file_name(path)) {
        let prefix = format!("{}/", join(dir, &sub));
        let names: Vec<String> = by_path
            .range(prefix.as_str()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .map(|(p, _)| &p[prefix.len()..])
            .filter(|rest| !rest.contains('/'))
            .map(str::to_owned)
            .collect();
        if !names.is_empty() {
            listing.push((sub, names));
        }
    }
    let mut out = Vec::new();
    for (sub, name) in quadlet::choose_dropins(&listing) {
        let p = join(dir, &format!("{sub}/{name}"));
        let Some(bytes) = by_path.get(p.as_str()) else {
            continue;
        };
        match std::str::from_utf8(bytes) {
            Ok(text) => out.push(Source {
                file: shown(root, &p),
                text: text.to_owned(),
            }),
            Err(e) => errors.push(format!(
                "{}: error: not UTF-8 text (at byte {})",
                shown(root, &p),
                e.valid_up_to()
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests;
