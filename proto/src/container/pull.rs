//! `Pull=`, `AuthFile=` and `AutoUpdate=`: when the shim pulls the unit's
//! image, and where it finds the registry's credentials.
//!
//! `Pull=` takes Podman's values (`podman run --pull`, which Quadlet's
//! `Pull=` passes on): `missing` (the default), `always`, `never` and
//! `newer`, with Podman's other spellings (`Always`, `IfNotPresent`,
//! `IfNewer`, ...). `AuthFile=` is flotilla's own key, as Quadlet's
//! `AuthFile=` in `.image` units and Podman's `--authfile`: a file on the
//! host in Docker's `config.json` format whose `auths` are used instead of
//! the host's Docker configuration. `AutoUpdate=registry` (Quadlet's) has
//! the running unit restarted when the registry has a newer image;
//! `AutoUpdate=local` is refused.

use serde::{Deserialize, Serialize};

use crate::unit_file::ValueRef;

/// When the shim pulls the image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PullPolicy {
    /// Pull only when the image is not on the host (Podman's default).
    #[default]
    Missing,
    /// Pull before every start; a failed pull fails the start.
    Always,
    /// Never pull: the image must be on the host.
    Never,
    /// Pull when the registry's digest of the image differs from the
    /// local image's, or the image is not on the host.
    Newer,
}

impl PullPolicy {
    /// The value as Quadlet writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Missing => "missing",
            PullPolicy::Always => "always",
            PullPolicy::Never => "never",
            PullPolicy::Newer => "newer",
        }
    }

    /// Podman's spellings (`containers/common` `ParsePullPolicy`).
    fn parse(s: &str) -> Option<PullPolicy> {
        Some(match s {
            "missing" | "Missing" | "ifnotpresent" | "IfNotPresent" => PullPolicy::Missing,
            "always" | "Always" => PullPolicy::Always,
            "never" | "Never" => PullPolicy::Never,
            "newer" | "Newer" | "ifnewer" | "IfNewer" => PullPolicy::Newer,
            _ => return None,
        })
    }
}

/// `AutoUpdate=`: whether the running unit follows its image's tag.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoUpdate {
    /// The image is what it was when the unit started.
    #[default]
    Off,
    /// When the registry's digest of the image differs from the local
    /// one, pull it and restart the unit.
    Registry,
}

/// `Pull=`, `AuthFile=` and `AutoUpdate=` of a `[Container]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagePull {
    /// `Pull=`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub policy: PullPolicy,
    /// `AuthFile=`: an absolute path on the host; `None` uses the host's
    /// Docker configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_file: Option<String>,
    /// `AutoUpdate=`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub auto_update: AutoUpdate,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

impl ImagePull {
    /// Whether every setting is at its default (left out when serialised).
    pub fn is_default(&self) -> bool {
        *self == ImagePull::default()
    }

    /// Reads one `Pull=`, `AuthFile=` or `AutoUpdate=` assignment; an
    /// empty value resets the key. Errors are the message for the
    /// assignment.
    pub(super) fn entry(&mut self, v: &ValueRef<'_>) -> Result<(), String> {
        let value = v.value;
        match v.key {
            "AutoUpdate" => {
                self.auto_update = match value {
                    "" => AutoUpdate::Off,
                    "registry" => AutoUpdate::Registry,
                    "local" => {
                        return Err(
                            "AutoUpdate=local is not supported by flotilla: use AutoUpdate=registry"
                                .to_owned(),
                        );
                    }
                    _ => return Err(format!("expected registry, found {value:?}")),
                };
            }
            "Pull" => {
                self.policy = PullPolicy::default();
                if !value.is_empty() {
                    self.policy = PullPolicy::parse(value).ok_or_else(|| {
                        format!("expected missing, always, never or newer, found {value:?}")
                    })?;
                }
            }
            _ => {
                self.auth_file = None;
                if value.is_empty() {
                    return Ok(());
                }
                if value.contains('%') {
                    return Err(format!(
                        "specifiers are not expanded in a path on the host, found {value:?}"
                    ));
                }
                if !value.starts_with('/') || value.split('/').any(|c| c == "..") {
                    return Err(format!(
                        "expected an absolute path on the host (a file in Docker's config.json format), found {value:?}"
                    ));
                }
                self.auth_file = Some(value.to_owned());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podman_spellings() {
        for (s, p) in [
            ("missing", PullPolicy::Missing),
            ("IfNotPresent", PullPolicy::Missing),
            ("always", PullPolicy::Always),
            ("Never", PullPolicy::Never),
            ("newer", PullPolicy::Newer),
            ("ifnewer", PullPolicy::Newer),
        ] {
            assert_eq!(PullPolicy::parse(s), Some(p), "{s}");
        }
        for bad in ["", "yes", "true", "ALWAYS", "latest"] {
            assert_eq!(PullPolicy::parse(bad), None, "{bad}");
        }
        for p in [
            PullPolicy::Missing,
            PullPolicy::Always,
            PullPolicy::Never,
            PullPolicy::Newer,
        ] {
            assert_eq!(PullPolicy::parse(p.as_str()), Some(p));
        }
    }
}
