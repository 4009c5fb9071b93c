//! What the container takes from the host it runs on: its time zone
//! (`Timezone=`), the environment of the unit (`EnvironmentHost=`) and its
//! proxy settings (`HttpProxy=`).
//!
//! Docker has no `--tz` and no `--env-host`: the shim, which runs on the
//! host as the unit's main process, does it. `Timezone=ZONE` sets `TZ=ZONE`
//! and binds the host's `/usr/share/zoneinfo/ZONE` at `/etc/localtime`;
//! `Timezone=local` binds the host's `/etc/localtime`. `EnvironmentHost=yes`
//! passes the shim's environment (systemd's for the unit: the manager's
//! and the unit's `[Service]` `Environment=`), and `HttpProxy=` (default
//! yes, as Podman) passes its proxy variables.
//!
//! | key | value |
//! |---|---|
//! | `Timezone=` | `local`, or a zone of the host's zoneinfo such as `Europe/Paris` |
//! | `EnvironmentHost=` | boolean |
//! | `HttpProxy=` | boolean, default yes |

use serde::{Deserialize, Serialize};

use crate::value::parse_bool;

/// The keys read here.
pub(super) const KEYS: &[&str] = &["Timezone", "EnvironmentHost", "HttpProxy"];

/// What the container takes from the host (`ContainerSpec::inherit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InheritOptions {
    /// `Timezone=`: `None` keeps the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<Timezone>,
    /// `EnvironmentHost=`: the shim's environment goes into the container.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub environment_host: bool,
    /// `HttpProxy=`: the shim's proxy variables go into the container.
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub http_proxy: bool,
}

fn yes() -> bool {
    true
}

fn is_yes(b: &bool) -> bool {
    *b
}

impl Default for InheritOptions {
    fn default() -> Self {
        InheritOptions {
            timezone: None,
            environment_host: false,
            // Podman's default.
            http_proxy: true,
        }
    }
}

impl InheritOptions {
    /// Whether every setting is at its default.
    pub fn is_default(&self) -> bool {
        *self == InheritOptions::default()
    }
}

/// `Timezone=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Timezone {
    /// `local`: the host's own time zone.
    Local,
    /// A zone of the host's zoneinfo, such as `Europe/Paris` or `UTC`.
    Zone(String),
}

/// The variables `HttpProxy=` passes, in both cases as programs read them.
pub const PROXY_VARIABLES: [&str; 8] = [
    "http_proxy",
    "https_proxy",
    "ftp_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "FTP_PROXY",
    "NO_PROXY",
];

/// Reads one assignment of a key of [`KEYS`]; `value` has its specifiers
/// expanded, and is empty for an empty assignment (which resets the key).
pub(super) fn read(o: &mut InheritOptions, key: &str, value: &str) -> Result<(), String> {
    let boolean = |default: bool| -> Result<bool, String> {
        if value.is_empty() {
            return Ok(default);
        }
        parse_bool(value).ok_or_else(|| {
            format!(
                "expected a boolean (yes or no, true or false, on or off, 1 or 0), found {value:?}"
            )
        })
    };
    match key {
        "Timezone" => {
            o.timezone = match value {
                "" => None,
                "local" => Some(Timezone::Local),
                zone => {
                    check_zone(zone)?;
                    Some(Timezone::Zone(zone.to_owned()))
                }
            }
        }
        "EnvironmentHost" => o.environment_host = boolean(false)?,
        "HttpProxy" => o.http_proxy = boolean(true)?,
        _ => {}
    }
    Ok(())
}

/// A zone name: parts of letters, digits, `_`, `+`, `-` between `/`.
fn check_zone(zone: &str) -> Result<(), String> {
    let valid = zone.split('/').all(|part| {
        !part.is_empty()
            && part != "."
            && part != ".."
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.'))
    });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "expected local or a time zone such as Europe/Paris or UTC, found {zone:?}"
        ))
    }
}
