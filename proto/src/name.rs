//! Unit names: `prefix.type`, templates `prefix@.type` and instances
//! `prefix@instance.type`, with the specifiers systemd expands from them.
//!
//! A valid name is one systemd loads a unit file under: what systemd's
//! `unit_name_is_valid()` (`src/basic/unit-name.c`) accepts, less what
//! flotilla refuses on purpose:
//!
//! - at most [`MAX_NAME_LEN`] bytes (systemd refuses `UNIT_NAME_MAX`, 256,
//!   and more: the limit counts the terminating NUL);
//! - a leading `.`: such a file is hidden. systemd's `hidden_or_backup_file()`
//!   leaves it out when it lists unit files (`systemctl list-unit-files`
//!   never shows it), and the agent reserves dot-files in its unit directory
//!   for its own temporary files and skips them when it looks for what it
//!   wrote, so it would never remove the unit. `.hidden.service` and
//!   `...service` are refused;
//! - only letters, digits and `:_.@-`, one `@` at most (systemd also allows
//!   `\` escapes and further `@` in an instance name);
//! - the runtime-only types `.scope` and `.device`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The longest unit name systemd accepts, in bytes: `UNIT_NAME_MAX` (256)
/// less the terminating NUL.
pub const MAX_NAME_LEN: usize = 255;

/// The kinds of unit flotilla can place: those a unit file can define.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnitType {
    Service,
    Socket,
    Target,
    Timer,
    Path,
    Mount,
    Automount,
    Swap,
    Slice,
}

impl UnitType {
    pub const ALL: [UnitType; 9] = [
        UnitType::Service,
        UnitType::Socket,
        UnitType::Target,
        UnitType::Timer,
        UnitType::Path,
        UnitType::Mount,
        UnitType::Automount,
        UnitType::Swap,
        UnitType::Slice,
    ];

    /// The suffix without its dot, as in `service`.
    pub fn suffix(self) -> &'static str {
        match self {
            UnitType::Service => "service",
            UnitType::Socket => "socket",
            UnitType::Target => "target",
            UnitType::Timer => "timer",
            UnitType::Path => "path",
            UnitType::Mount => "mount",
            UnitType::Automount => "automount",
            UnitType::Swap => "swap",
            UnitType::Slice => "slice",
        }
    }

    fn from_suffix(s: &str) -> Option<UnitType> {
        UnitType::ALL.into_iter().find(|t| t.suffix() == s)
    }
}

impl fmt::Display for UnitType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.suffix())
    }
}

/// Why a string is not a valid unit name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("unit name is empty")]
    Empty,
    #[error(
        "unit name {name:?} is longer than {MAX_NAME_LEN} characters, the most systemd accepts"
    )]
    TooLong { name: String },
    #[error(
        "unit name {name:?} contains {found:?}: only letters, digits and \":_.@-\" are allowed"
    )]
    BadCharacter { name: String, found: char },
    #[error("unit name {name:?} has nothing before its type suffix")]
    EmptyPrefix { name: String },
    #[error(
        "unit name {name:?} starts with '.': that is a hidden file, which systemd leaves out when it lists unit files and flotilla's agent would never clean up"
    )]
    Hidden { name: String },
    #[error(
        "unit name {name:?} has type \".{suffix}\", which systemd creates at run time and no unit file can define"
    )]
    RuntimeOnlyType { name: String, suffix: String },
    #[error("unit name {name:?} has more than one '@'")]
    SeveralAt { name: String },
    #[error(
        "{name:?} names a .{suffix} file, which cannot be a template or an instance: a Docker {suffix} has one name per machine"
    )]
    QuadletTemplate { name: String, suffix: String },
    #[error("{instance:?} is not a valid instance name for template {template:?}")]
    BadInstance { template: String, instance: String },
}

/// A valid unit name, always with its type suffix.
///
/// A name given without a known suffix means a service, as `systemctl`
/// reads it: `web` is `web.service`, and `web.v2` is `web.v2.service`.
/// Quadlet's `db.network` and `data.volume` are `db-network.service` and
/// `data-volume.service`, as Quadlet names them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UnitName {
    full: String,
    /// Byte offset of the '.' before the type suffix.
    dot: usize,
    /// Byte offset of the '@', if any.
    at: Option<usize>,
    kind: UnitType,
}

const RUNTIME_ONLY: [&str; 2] = ["scope", "device"];

/// Podman Quadlet's files that flotilla runs as services, named as Quadlet
/// names them: `NAME.network` is the unit `NAME-network.service`, and
/// `NAME.volume` is `NAME-volume.service` (see `crate::container::object`).
pub const QUADLET_OBJECT_SUFFIXES: [&str; 2] = ["network", "volume"];

/// Longest name an error shows whole.
const MAX_SHOWN: usize = 512;

/// A name as an error shows it: whole up to [`MAX_SHOWN`] bytes, else its
/// start and its length, so that a 100 KB name makes a short error.
fn shown(name: &str) -> String {
    if name.len() <= MAX_SHOWN {
        return name.to_owned();
    }
    let mut end = 64;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &name[..end], name.len())
}

impl UnitName {
    /// Validates a name, adding `.service` when it has no unit type suffix.
    pub fn parse(name: &str) -> Result<UnitName, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if let Some(found) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || ":_.@-".contains(*c)))
        {
            return Err(NameError::BadCharacter {
                name: shown(name),
                found,
            });
        }
        let full = match name.rsplit_once('.') {
            Some((_, suffix)) if UnitType::from_suffix(suffix).is_some() => name.to_owned(),
            Some((stem, suffix)) if QUADLET_OBJECT_SUFFIXES.contains(&suffix) => {
                if stem.is_empty() {
                    return Err(NameError::EmptyPrefix { name: shown(name) });
                }
                if stem.contains('@') {
                    return Err(NameError::QuadletTemplate {
                        name: shown(name),
                        suffix: suffix.to_owned(),
                    });
                }
                format!("{stem}-{suffix}.service")
            }
            Some((_, suffix)) if RUNTIME_ONLY.contains(&suffix) => {
                return Err(NameError::RuntimeOnlyType {
                    name: shown(name),
                    suffix: shown(suffix),
                });
            }
            _ => format!("{name}.service"),
        };
        if full.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong { name: shown(&full) });
        }
        if full.starts_with('.') && full.rfind('.') != Some(0) {
            return Err(NameError::Hidden { name: full });
        }
        // Safe: `full` ends in ".<suffix>" by construction above.
        let dot = full.rfind('.').unwrap_or(0);
        let kind = UnitType::from_suffix(&full[dot + 1..]).unwrap_or(UnitType::Service);
        if dot == 0 {
            return Err(NameError::EmptyPrefix { name: full });
        }
        let stem = &full[..dot];
        let at = stem.find('@');
        if stem.matches('@').count() > 1 {
            return Err(NameError::SeveralAt { name: full });
        }
        if at == Some(0) {
            return Err(NameError::EmptyPrefix { name: full });
        }
        Ok(UnitName {
            full,
            dot,
            at,
            kind,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }

    pub fn unit_type(&self) -> UnitType {
        self.kind
    }

    /// `foo@.service`: a template, from which instances are made.
    pub fn is_template(&self) -> bool {
        self.at.is_some_and(|at| at + 1 == self.dot)
    }

    /// `foo@bar.service`: an instance of the template `foo@.service`.
    pub fn is_instance(&self) -> bool {
        self.at.is_some_and(|at| at + 1 < self.dot)
    }

    /// The name without its type suffix (`%N`).
    pub fn stem(&self) -> &str {
        &self.full[..self.dot]
    }

    /// The part before `@`, or the stem when there is no `@` (`%p`).
    pub fn prefix(&self) -> &str {
        match self.at {
            Some(at) => &self.full[..at],
            None => self.stem(),
        }
    }

    /// The part between `@` and the suffix (`%i`); empty for templates.
    pub fn instance(&self) -> Option<&str> {
        self.at.map(|at| &self.full[at + 1..self.dot])
    }

    /// The template an instance is made from: `foo@bar.service` ->
    /// `foo@.service`.
    pub fn template(&self) -> Option<UnitName> {
        if !self.is_instance() {
            return None;
        }
        let name = format!("{}@.{}", self.prefix(), self.kind);
        UnitName::parse(&name).ok()
    }

    /// The instance `instance` of this template; an error when this is not a
    /// template or `instance` is not a valid instance name.
    pub fn instantiate(&self, instance: &str) -> Result<UnitName, NameError> {
        let bad = || NameError::BadInstance {
            template: self.full.clone(),
            instance: instance.to_owned(),
        };
        if !self.is_template() || instance.is_empty() || instance.contains('@') {
            return Err(bad());
        }
        UnitName::parse(&format!("{}@{}.{}", self.prefix(), instance, self.kind)).map_err(|_| bad())
    }

    /// Expands the specifiers `%n` (full name), `%N` (name without suffix),
    /// `%p` (prefix), `%i` (instance) and `%%` in `text`, as systemd does.
    /// Any other specifier is left as written.
    pub fn expand_specifiers(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push_str(self.as_str()),
                Some('N') => out.push_str(self.stem()),
                Some('p') => out.push_str(self.prefix()),
                Some('i') => out.push_str(self.instance().unwrap_or("")),
                Some('%') => out.push('%'),
                Some(other) => {
                    out.push('%');
                    out.push(other);
                }
                None => out.push('%'),
            }
        }
        out
    }
}

impl fmt::Display for UnitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl FromStr for UnitName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UnitName::parse(s)
    }
}

impl TryFrom<String> for UnitName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        UnitName::parse(&s)
    }
}

impl From<UnitName> for String {
    fn from(n: UnitName) -> String {
        n.full
    }
}

impl AsRef<str> for UnitName {
    fn as_ref(&self) -> &str {
        &self.full
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_of_names() {
        let n = UnitName::parse("web@8080.service").unwrap();
        assert!(n.is_instance());
        assert_eq!(n.prefix(), "web");
        assert_eq!(n.instance(), Some("8080"));
        assert_eq!(n.stem(), "web@8080");
        assert_eq!(n.template().unwrap().as_str(), "web@.service");

        let t = UnitName::parse("web@.service").unwrap();
        assert!(t.is_template());
        assert_eq!(t.instantiate("a").unwrap().as_str(), "web@a.service");
        assert!(t.instantiate("").is_err());

        let p = UnitName::parse("db").unwrap();
        assert_eq!(p.as_str(), "db.service");
        assert_eq!(p.unit_type(), UnitType::Service);
        assert_eq!(
            UnitName::parse("web.v2").unwrap().as_str(),
            "web.v2.service"
        );
        assert_eq!(
            UnitName::parse("x.timer").unwrap().unit_type(),
            UnitType::Timer
        );
    }

    #[test]
    fn specifiers() {
        let n = UnitName::parse("web@8080.service").unwrap();
        assert_eq!(
            n.expand_specifiers("%n %N %p %i %% %x %"),
            "web@8080.service web@8080 web 8080 % %x %"
        );
    }

    #[test]
    fn bad_names() {
        assert_eq!(UnitName::parse(""), Err(NameError::Empty));
        assert!(matches!(
            UnitName::parse("a b"),
            Err(NameError::BadCharacter { .. })
        ));
        assert!(matches!(
            UnitName::parse(".service"),
            Err(NameError::EmptyPrefix { .. })
        ));
        assert!(matches!(
            UnitName::parse("@x.service"),
            Err(NameError::EmptyPrefix { .. })
        ));
        assert!(matches!(
            UnitName::parse("a@b@c.service"),
            Err(NameError::SeveralAt { .. })
        ));
        assert!(matches!(
            UnitName::parse("a.scope"),
            Err(NameError::RuntimeOnlyType { .. })
        ));
        // As systemctl does, an unknown suffix is part of a service's name.
        assert_eq!(
            UnitName::parse("a.servce").unwrap().as_str(),
            "a.servce.service"
        );
        // systemd's UNIT_NAME_MAX is 256 with the NUL: 256 bytes is one
        // too many.
        let long = format!("{}.service", "a".repeat(256 - 8));
        assert!(matches!(
            UnitName::parse(&long),
            Err(NameError::TooLong { .. })
        ));
        let just = format!("{}.service", "a".repeat(255 - 8));
        assert_eq!(UnitName::parse(&just).unwrap().as_str().len(), 255);
        // A huge name makes a short error.
        for huge in ["a".repeat(100_000), format!("{}!", "a".repeat(100_000))] {
            let e = UnitName::parse(&huge).unwrap_err().to_string();
            assert!(e.len() < 300, "{} bytes: {}", e.len(), &e[..200]);
            assert!(
                e.contains("(100008 bytes)") || e.contains("(100001 bytes)"),
                "{e}"
            );
        }
        // Hidden files: skipped by systemd's listings and by the agent.
        for hidden in [".hidden.service", "...service", ".x@1.service", ".a"] {
            assert!(
                matches!(UnitName::parse(hidden), Err(NameError::Hidden { .. })),
                "{hidden}"
            );
        }
        assert!(UnitName::parse("a.b.service").is_ok());
    }
}
