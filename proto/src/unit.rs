//! A whole unit as flotilla stores and schedules it: its name, its file, and
//! the options read from the file, checked together.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::container::ContainerSpec;
use crate::container::object::DockerObject;
use crate::diagnostic::{Diagnostic, Diagnostics, UnitFileError};
use crate::fleet::FleetOptions;
use crate::name::{UnitName, UnitType};
use crate::resources::Resources;
use crate::suggest;
use crate::unit_file::UnitFile;
use crate::work;

/// Re-exported: the limit belongs to the syntax ([`crate::unit_file`]).
pub use crate::unit_file::MAX_UNIT_FILE_BYTES;

/// Sections systemd or flotilla reads. Other sections get a warning, except
/// those starting with `X-`, which systemd reserves for extensions.
const KNOWN_SECTIONS: [&str; 14] = [
    "Unit",
    "Install",
    "Service",
    "Socket",
    "Timer",
    "Path",
    "Mount",
    "Automount",
    "Swap",
    "Slice",
    "X-Fleet",
    "Container",
    "Network",
    "Volume",
];

/// A unit file that parsed and validated, with the options flotilla reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitSpec {
    pub name: UnitName,
    pub file: UnitFile,
    /// Placement options from `[X-Fleet]`, specifiers expanded for this name.
    pub fleet: FleetOptions,
    /// Present when the unit has a `[Container]` section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerSpec>,
    /// Present when the unit is a `.network` or `.volume` file (a
    /// `[Network]` or `[Volume]` section): the Docker network or volume it
    /// creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<DockerObject>,
    pub resources: Resources,
    /// [`UnitFile::content_hash`] of the file.
    pub hash: String,
}

/// A unit that passed its checks, and the warnings it drew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub spec: UnitSpec,
    pub warnings: Vec<Diagnostic>,
}

impl UnitSpec {
    /// Parses and validates the text of unit `name`. `source` names where the
    /// text came from for error messages (a path, `<stdin>`, or the unit
    /// name itself). Every problem is reported, not just the first.
    pub fn check(source: &str, name: &str, text: &str) -> Result<Checked, UnitFileError> {
        let fail = |diagnostics| UnitFileError {
            file: source.to_owned(),
            diagnostics,
        };
        let name = UnitName::parse(name)
            .map_err(|e| fail(vec![Diagnostic::error(None, e.to_string())]))?;
        Self::check_named(source, &name, text)
    }

    /// As [`UnitSpec::check`], for a name already validated.
    pub fn check_named(
        source: &str,
        name: &UnitName,
        text: &str,
    ) -> Result<Checked, UnitFileError> {
        let (spec, diagnostics) = Self::read(name, text);
        match spec {
            Some(spec) => Ok(Checked {
                spec,
                warnings: diagnostics,
            }),
            None => Err(UnitFileError {
                file: source.to_owned(),
                diagnostics,
            }),
        }
    }

    /// Parses and validates; returns the unit only when no error was found,
    /// and every diagnostic in line order either way.
    pub fn read(name: &UnitName, text: &str) -> (Option<UnitSpec>, Vec<Diagnostic>) {
        let mut diags = Diagnostics::new();
        let (file, syntax, whole) = UnitFile::parse_whole(text);
        diags.extend(syntax);
        if !whole {
            // A limit stopped the parse: what was read is not the unit, and
            // checking it would only add noise to the error.
            return (None, diags.into_sorted());
        }
        check_sections(name, &file, &mut diags);
        let mut fleet = FleetOptions::from_unit_file(name, &file, &mut diags);
        let container = ContainerSpec::from_unit_file(name, &file, &mut diags);
        let object = DockerObject::from_unit_file(name, &file, &mut diags);
        // A network or volume is needed wherever a container names it.
        fleet.global |= object.is_some();
        let resources = Resources::from_unit_file(name, &file, &mut diags);
        if diags.has_errors() {
            return (None, diags.into_sorted());
        }
        let hash = file.content_hash();
        let spec = UnitSpec {
            name: name.clone(),
            file,
            fleet,
            container,
            object,
            resources,
            hash,
        };
        (Some(spec), diags.into_sorted())
    }

    /// The same unit file read as an instance of this template, with
    /// specifiers expanded for the instance's name.
    pub fn instantiate(&self, instance: &str) -> Result<Checked, UnitFileError> {
        let name = self.name.instantiate(instance).map_err(|e| UnitFileError {
            file: self.name.to_string(),
            diagnostics: vec![Diagnostic::error(None, e.to_string())],
        })?;
        let text = self.file.to_string();
        Self::check_named(name.as_str(), &name, &text)
    }
}

/// Sections that no reader knows draw a warning (systemd ignores them);
/// sections that do not fit the unit's type are errors.
fn check_sections(name: &UnitName, file: &UnitFile, diags: &mut Diagnostics) {
    let mut seen: HashSet<&str> = HashSet::new();
    for section in &file.sections {
        work::charge(1);
        let s = section.name.as_str();
        if s.is_empty() || !seen.insert(s) {
            continue;
        }
        let line = Some(section.line).filter(|l| *l > 0);
        if KNOWN_SECTIONS.contains(&s) {
            if let Some(kind) = type_section_kind(s)
                && kind != name.unit_type()
                && !(s == "Service" && file.has_section("Container"))
            {
                diags.push(Diagnostic::warning(
                    line,
                    format!(
                        "section [{s}] is for .{kind} units and is ignored in a .{} unit",
                        name.unit_type()
                    ),
                ));
            }
            continue;
        }
        if s.starts_with("X-") {
            continue;
        }
        let message = match suggest::nearest(s, KNOWN_SECTIONS) {
            Some(near) => format!("unknown section [{s}] is ignored; did you mean [{near}]?"),
            None => format!("unknown section [{s}] is ignored"),
        };
        diags.push(Diagnostic::warning(line, message));
    }
}

/// The unit type whose own section this is, for type-specific sections.
fn type_section_kind(section: &str) -> Option<UnitType> {
    UnitType::ALL.into_iter().find(|t| {
        let suffix = t.suffix();
        section.len() == suffix.len()
            && section[..1].eq_ignore_ascii_case(&suffix[..1])
            && section[1..] == suffix[1..]
    })
}
