//! Unit names as fleet's API checks them (`ValidateName` in fleet's
//! `api/units.go`, after systemd's `unit_name_is_valid`).

/// The longest unit name fleet takes.
pub const UNIT_NAME_MAX: usize = 256;

const UNIT_TYPES: [&str; 13] = [
    "automount",
    "busname",
    "device",
    "mount",
    "path",
    "scope",
    "service",
    "slice",
    "snapshot",
    "socket",
    "swap",
    "target",
    "timer",
];

const TEMPLATE_TYPES: [&str; 5] = ["path", "service", "socket", "target", "timer"];

/// Why fleet refuses a unit name; the messages are fleet's own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetNameError {
    #[error("unit name cannot be empty")]
    Empty,
    #[error("unit name exceeds maximum length ({UNIT_NAME_MAX})")]
    TooLong,
    #[error("unit name must contain \".\"")]
    NoDot,
    #[error("unit name cannot end in \".\"")]
    EndsInDot,
    #[error("invalid unit type: {0:?}")]
    UnknownType(String),
    #[error("invalid unit type for template: {0:?}")]
    TemplateType(String),
    #[error("invalid character {0:?} in unit name")]
    InvalidChar(char),
    #[error("unit name cannot start in \"@\"")]
    StartsWithAt,
}

/// Checks `name` as fleet does; the first problem found is returned.
pub fn validate(name: &str) -> Result<(), FleetNameError> {
    if name.is_empty() {
        return Err(FleetNameError::Empty);
    }
    if name.len() > UNIT_NAME_MAX {
        return Err(FleetNameError::TooLong);
    }
    let dot = name.rfind('.').ok_or(FleetNameError::NoDot)?;
    if dot == name.len() - 1 {
        return Err(FleetNameError::EndsInDot);
    }
    let suffix = &name[dot + 1..];
    if !UNIT_TYPES.contains(&suffix) {
        return Err(FleetNameError::UnknownType(suffix.to_owned()));
    }
    if name.contains('@') && !TEMPLATE_TYPES.contains(&suffix) {
        return Err(FleetNameError::TemplateType(suffix.to_owned()));
    }
    if let Some(c) = name[..dot]
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ":-_.\\@".contains(*c)))
    {
        return Err(FleetNameError::InvalidChar(c));
    }
    if name.starts_with('@') {
        return Err(FleetNameError::StartsWithAt);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `s` padded on the left with zeros to `width`, as Go's `%0*s`.
    fn padded(width: usize, s: &str) -> String {
        format!("{}{s}", "0".repeat(width - s.len()))
    }

    #[test]
    fn fleets_own_cases() {
        // fleet's api/units_test.go, TestValidateName.
        let bad = [
            String::new(),
            padded(UNIT_NAME_MAX + 1, ".service"),
            padded(UNIT_NAME_MAX * 2, ".mount"),
        ]
        .into_iter()
        .chain(
            [
                "fooservice",
                "barmount",
                "bar@foo",
                "foo.",
                "foo.service.",
                "foo@foo.service.",
                "foo.bar",
                "hello.cerveza",
                "foo.servICE",
                "foo%.service",
                "foo$asd.service",
                "hello##.mount",
                "yes/no.service",
                "this+that.mount",
                "dog=woof@.mount",
                "@foo.service",
                "@this.mount",
                "foo@1.automount",
                "foo@1.busname",
                "foo@1.device",
                "foo@1.mount",
                "foo@1.scope",
                "foo@1.slice",
                "foo@1.snapshot",
                "foo@1.swap",
            ]
            .map(String::from),
        );
        for name in bad {
            assert!(validate(&name).is_err(), "{name:?} passed");
        }
        let good = [padded(UNIT_NAME_MAX, ".service")].into_iter().chain(
            [
                "foo.service",
                "hello.mount",
                "foo@123.service",
                "foo@.service",
                "yo.yo.service",
                "hello@world.path",
                "hello:world.service",
                "yes@no\\.service",
                "foo-bar.mount",
                "jalapano_chips.service",
                "foo@1.path",
                "foo@1.service",
                "foo@1.socket",
                "foo@1.target",
                "foo@1.timer",
            ]
            .map(String::from),
        );
        for name in good {
            assert_eq!(validate(&name), Ok(()), "{name:?}");
        }
    }

    #[test]
    fn the_first_problem_is_named() {
        let cases = [
            ("", FleetNameError::Empty),
            ("foo", FleetNameError::NoDot),
            ("foo.", FleetNameError::EndsInDot),
            ("foo.bar", FleetNameError::UnknownType("bar".into())),
            ("foo@.mount", FleetNameError::TemplateType("mount".into())),
            ("foo bar.service", FleetNameError::InvalidChar(' ')),
            ("@foo.service", FleetNameError::StartsWithAt),
        ];
        for (name, error) in cases {
            assert_eq!(validate(name), Err(error), "{name:?}");
        }
    }
}
