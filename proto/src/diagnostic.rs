//! Problems found in a unit file, each pointing at the line and option that
//! caused it.
//!
//! A [`Diagnostic`] does not know the name of the file it came from: the same
//! text may arrive from a file, from standard input or over the API. The
//! caller that knows the source wraps the list in a [`UnitFileError`], whose
//! `Display` prints one `FILE:LINE: error: message` line per problem.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How bad a problem is: an error rejects the unit, a warning does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One problem in a unit file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// 1-based line where the offending line (or its first physical line,
    /// for a continued line) starts; `None` when the problem concerns the
    /// unit as a whole, such as its name.
    pub line: Option<u32>,
    /// The section and key of the option at fault, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub option: Option<OptionRef>,
    pub message: String,
}

/// The option a diagnostic is about: `[Section] Key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptionRef {
    pub section: String,
    pub key: String,
}

impl Diagnostic {
    pub fn error(line: Option<u32>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            line,
            option: None,
            message: message.into(),
        }
    }

    pub fn warning(line: Option<u32>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            line,
            option: None,
            message: message.into(),
        }
    }

    /// Attaches the option this diagnostic is about.
    pub fn at_option(mut self, section: &str, key: &str) -> Self {
        self.option = Some(OptionRef {
            section: section.to_owned(),
            key: key.to_owned(),
        });
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Formats as `SOURCE:LINE: severity: [Section] Key: message`, the
    /// shape compilers use, so that editors can jump to the line.
    pub fn display_with<'a>(&'a self, source: &'a str) -> impl fmt::Display + 'a {
        DisplayWith {
            diagnostic: self,
            source,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        write!(f, "{}: ", self.severity)?;
        write_message(self, f)
    }
}

fn write_message(d: &Diagnostic, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    if let Some(option) = &d.option {
        write!(f, "[{}] {}: ", option.section, option.key)?;
    }
    f.write_str(&d.message)
}

struct DisplayWith<'a> {
    diagnostic: &'a Diagnostic,
    source: &'a str,
}

impl fmt::Display for DisplayWith<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.diagnostic.line {
            Some(line) => write!(f, "{}:{}: ", self.source, line)?,
            None => write!(f, "{}: ", self.source)?,
        }
        write!(f, "{}: ", self.diagnostic.severity)?;
        write_message(self.diagnostic, f)
    }
}

/// A unit file that was rejected, with every problem found in it.
///
/// `file` names where the text came from (a path, `<stdin>`, or the unit
/// name when the text arrived over the API).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub struct UnitFileError {
    pub file: String,
    /// Every problem found, errors and warnings, in line order. At least one
    /// is an error.
    pub diagnostics: Vec<Diagnostic>,
}

impl UnitFileError {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }
}

impl fmt::Display for UnitFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for d in self.errors() {
            if !first {
                f.write_str("\n")?;
            }
            first = false;
            write!(f, "{}", d.display_with(&self.file))?;
        }
        Ok(())
    }
}

/// Collects diagnostics while a unit file is checked.
#[derive(Debug, Default)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }

    pub fn extend(&mut self, ds: impl IntoIterator<Item = Diagnostic>) {
        self.items.extend(ds);
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }

    /// Everything collected, sorted by line (problems about the whole unit
    /// first), keeping the order of discovery within a line.
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.items.sort_by_key(|d| d.line);
        self.items
    }
}
