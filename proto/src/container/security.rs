//! Who the container's processes are and what confines them: `Group=` and
//! `GroupAdd=`, the user namespace, and Docker's `--security-opt`s.
//!
//! | key | value | repeatable |
//! |---|---|---|
//! | `Group=` | the group for `User=`, a name or a number (needs `User=`) | |
//! | `GroupAdd=` | more groups, names or numbers | yes |
//! | `NoNewPrivileges=` | boolean | |
//! | `SeccompProfile=` | an absolute path of a JSON profile on the host, or `unconfined` | |
//! | `AppArmor=` | a profile name, or `unconfined` | |
//! | `SecurityLabelDisable=` | boolean | |
//! | `SecurityLabelType=`, `SecurityLabelLevel=`, `SecurityLabelFileType=` | SELinux label parts | |
//! | `SecurityLabelNested=` | only `no` | |
//! | `Unmask=` | only `ALL` | yes |
//! | `UserNS=` | only `host` | |

use serde::{Deserialize, Serialize};

use crate::diagnostic::Diagnostics;
use crate::unit_file::UnitFile;
use crate::value::{parse_bool, split_words};

use super::{ContainerSpec, SECTION};

/// The keys read here.
pub(super) const KEYS: &[&str] = &[
    "Group",
    "GroupAdd",
    "NoNewPrivileges",
    "SeccompProfile",
    "AppArmor",
    "SecurityLabelDisable",
    "SecurityLabelType",
    "SecurityLabelLevel",
    "SecurityLabelFileType",
    "SecurityLabelNested",
    "Unmask",
    "UserNS",
];

/// The most groups `GroupAdd=` may add.
pub const MAX_GROUPS: usize = 64;

/// Who the container runs as beyond `User=`, and what confines it
/// (`ContainerSpec::security`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityOptions {
    /// `Group=`: the group for `User=` (Docker's user `USER:GROUP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `GroupAdd=`: supplementary groups, without duplicates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<String>,
    /// `NoNewPrivileges=`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_new_privileges: bool,
    /// `SeccompProfile=`: `None` keeps Docker's default profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<Seccomp>,
    /// `AppArmor=`: a profile name (or `unconfined`); `None` keeps
    /// Docker's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apparmor: Option<String>,
    /// `SecurityLabelDisable=`: no SELinux separation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub label_disable: bool,
    /// `SecurityLabelType=`: the SELinux type of the processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_type: Option<String>,
    /// `SecurityLabelLevel=`: the SELinux level of the processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_level: Option<String>,
    /// `SecurityLabelFileType=`: the SELinux type of the container's files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_file_type: Option<String>,
    /// `Unmask=ALL`: `/proc` and `/sys` as the host has them (Docker's
    /// `systempaths=unconfined`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unmask_all: bool,
    /// `UserNS=host`: the host's user namespace, even when Docker remaps
    /// users (`userns-remap`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub userns_host: bool,
}

impl SecurityOptions {
    /// Whether every setting is at its default.
    pub fn is_empty(&self) -> bool {
        *self == SecurityOptions::default()
    }
}

/// `SeccompProfile=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Seccomp {
    /// No seccomp filter.
    Unconfined,
    /// A profile in Docker's JSON format, at this path on the host; read
    /// when the container is created.
    Path(String),
}

/// Reads one assignment of a key of [`KEYS`]; `value` has its specifiers
/// expanded, and is empty for an empty assignment (which resets the key).
pub(super) fn read(s: &mut SecurityOptions, key: &str, value: &str) -> Result<(), String> {
    let word = |what: &str| -> Result<Option<String>, String> {
        if value.is_empty() {
            Ok(None)
        } else if value.chars().any(|c| c.is_whitespace() || c == '=') {
            Err(format!(
                "expected {what}, without spaces or '=', found {value:?}"
            ))
        } else {
            Ok(Some(value.to_owned()))
        }
    };
    match key {
        "Group" => {
            s.group = None;
            if !value.is_empty() {
                check_group(value)?;
                s.group = Some(value.to_owned());
            }
        }
        "GroupAdd" if value.is_empty() => s.group_add.clear(),
        "GroupAdd" => {
            for g in split_words(value).map_err(|e| format!("bad quoting: {e}"))? {
                if g == "keep-groups" {
                    return Err("keep-groups keeps the groups of the user who runs rootless Podman; Docker's containers are started by its daemon, which has no such user: name the groups".to_owned());
                }
                check_group(&g)?;
                if s.group_add.len() >= MAX_GROUPS {
                    return Err(format!(
                        "a container may have at most {MAX_GROUPS} more groups"
                    ));
                }
                if !s.group_add.contains(&g) {
                    s.group_add.push(g);
                }
            }
        }
        "NoNewPrivileges" => s.no_new_privileges = boolean(value)?,
        "SeccompProfile" => {
            s.seccomp = match value {
                "" => None,
                "unconfined" => Some(Seccomp::Unconfined),
                path if path.starts_with('/') => Some(Seccomp::Path(path.to_owned())),
                other => {
                    return Err(format!(
                        "expected unconfined or the absolute path of a JSON profile on the host, found {other:?}: a flotilla unit has no directory for a relative path to start from"
                    ));
                }
            }
        }
        "AppArmor" => s.apparmor = word("an AppArmor profile name, or unconfined")?,
        "SecurityLabelDisable" => s.label_disable = boolean(value)?,
        "SecurityLabelType" => s.label_type = word("an SELinux type such as spc_t")?,
        "SecurityLabelLevel" => s.label_level = word("an SELinux level such as s0:c1,c2")?,
        "SecurityLabelFileType" => {
            s.label_file_type = word("an SELinux type such as usr_t")?;
        }
        "SecurityLabelNested" if boolean(value)? => {
            return Err("Docker's label options have no nested mode (SELinux separation of containers inside the container is Podman's); leave it out, or run the container with SecurityLabelDisable=yes".to_owned());
        }
        "Unmask" => match value {
            "" => s.unmask_all = false,
            "ALL" | "all" => s.unmask_all = true,
            _ => {
                return Err(format!(
                    "Docker can unmask only all of /proc and /sys (Unmask=ALL, its systempaths=unconfined), not single paths such as {value:?}"
                ));
            }
        },
        "UserNS" => match value {
            "" => s.userns_host = false,
            "host" => s.userns_host = true,
            _ => {
                return Err(format!(
                    "Docker has no user namespace of a container's own: its daemon maps the users of all containers or of none (userns-remap in daemon.json); only UserNS=host, which keeps a container out of that mapping, has a meaning, not {value:?}"
                ));
            }
        },
        _ => {}
    }
    Ok(())
}

fn boolean(value: &str) -> Result<bool, String> {
    if value.is_empty() {
        return Ok(false);
    }
    parse_bool(value).ok_or_else(|| {
        format!("expected a boolean (yes or no, true or false, on or off, 1 or 0), found {value:?}")
    })
}

/// A group name or number.
fn check_group(g: &str) -> Result<(), String> {
    if g.bytes().all(|b| b.is_ascii_digit()) && !g.is_empty() {
        return g
            .parse::<u32>()
            .map(|_| ())
            .map_err(|_| format!("{g:?} is too large for a group ID"));
    }
    let mut chars = g.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid {
        Ok(())
    } else {
        Err(format!("expected a group name or number, found {g:?}"))
    }
}

/// Unit-wide rules: `Group=` is the group of `User=`, as in Quadlet.
pub(super) fn check(file: &UnitFile, spec: &ContainerSpec, diags: &mut Diagnostics) {
    let Some(group) = &spec.security.group else {
        return;
    };
    let Some(v) = file.last_value(SECTION, "Group") else {
        return;
    };
    // A User= that uses %i in a template is set, though not in the spec.
    let user_written = file
        .last_value(SECTION, "User")
        .is_some_and(|u| !u.value.is_empty());
    match &spec.user {
        None if user_written => {}
        None => diags.push(v.error(format!(
            "Group={group} is the group for User=, and the unit sets no User= (as in Quadlet); set User= too"
        ))),
        Some(user) if user.contains(':') => diags.push(v.error(format!(
            "User={user} already names a group: give it in one place"
        ))),
        Some(_) => {}
    }
}
