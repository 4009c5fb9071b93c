//! `Secret=`: secrets of the cluster (`flotilla secret create`) given to
//! the container, as a file or as an environment variable.
//!
//! The syntax is Podman's (`podman run --secret`, podman-systemd.unit(5)):
//!
//! ```text
//! Secret=NAME[,type=mount][,target=PATH][,uid=UID][,gid=GID][,mode=MODE]
//! Secret=NAME,type=env[,target=VARIABLE]
//! ```
//!
//! - `type=mount` (the default): the value is a read-only file in the
//!   container, at `target` (default `/run/secrets/NAME`; a relative
//!   target is under `/run/secrets/`), owned by `uid`:`gid` (default
//!   0:0) with `mode` (octal, default `0400`).
//! - `type=env`: the value is the environment variable `target` (default
//!   the secret's name), which Docker shows in `docker inspect`.
//!
//! Only names are in the unit: the values never are.

use serde::{Deserialize, Serialize};

use crate::diagnostic::Diagnostics;
use crate::name::UnitName;
use crate::unit_file::ValueRef;

use super::specifiers::expand_specifiers;

/// The longest secret name.
pub const MAX_SECRET_NAME_LEN: usize = 128;

/// The most `Secret=` one container may have.
pub const MAX_SECRETS_PER_CONTAINER: usize = 64;

/// Where a mounted secret goes when `target=` is not absolute.
pub const SECRETS_DIR: &str = "/run/secrets";

/// The mode of a mounted secret when `mode=` is not given.
pub const DEFAULT_SECRET_MODE: u32 = 0o400;

/// The `Secret=` assignments of a container, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContainerSecrets {
    pub uses: Vec<SecretUse>,
}

impl ContainerSecrets {
    pub fn is_empty(&self) -> bool {
        self.uses.is_empty()
    }

    /// The names of the secrets used, each once, in file order.
    pub fn names(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for u in &self.uses {
            if !out.contains(&u.name.as_str()) {
                out.push(&u.name);
            }
        }
        out
    }
}

/// One `Secret=`: which secret, and how the container gets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretUse {
    pub name: String,
    #[serde(flatten)]
    pub delivery: SecretDelivery,
}

/// How a container gets a secret's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SecretDelivery {
    /// A read-only file at `target` in the container.
    Mount {
        target: String,
        uid: u32,
        gid: u32,
        mode: u32,
    },
    /// The environment variable `target`.
    Env { target: String },
}

/// Checks a secret's name: 1 to [`MAX_SECRET_NAME_LEN`] letters, digits,
/// `_`, `.` or `-`, starting with a letter or digit (so that it is also a
/// file name, and never `.` or `..`).
pub fn check_secret_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !valid {
        return Err(format!(
            "{name:?} is not a secret name: use letters, digits, '_', '.' and '-', starting with a letter or digit"
        ));
    }
    if name.len() > MAX_SECRET_NAME_LEN {
        return Err(format!(
            "a secret name has at most {MAX_SECRET_NAME_LEN} characters, found {}",
            name.len()
        ));
    }
    Ok(())
}

/// Reads one `Secret=` assignment into `secrets`; an empty one empties
/// the list so far.
pub(super) fn read(
    secrets: &mut ContainerSecrets,
    v: &ValueRef<'_>,
    diags: &mut Diagnostics,
    unit: &UnitName,
) {
    if v.value.is_empty() {
        secrets.uses.clear();
        return;
    }
    let text = match expand_specifiers(unit, v.value) {
        Ok(Some(text)) => text,
        // Checked in each instance.
        Ok(None) => return,
        Err(message) => {
            diags.push(v.error(message));
            return;
        }
    };
    if secrets.uses.len() == MAX_SECRETS_PER_CONTAINER {
        diags.push(v.error(format!(
            "a container may use at most {MAX_SECRETS_PER_CONTAINER} secrets"
        )));
        return;
    }
    let result = parse_secret(&text).and_then(|u| {
        match secrets.uses.iter().find(|other| same_target(other, &u)) {
            Some(other) => Err(format!(
                "secret {} goes to {} already, as secret {}",
                u.name,
                describe_target(&u.delivery),
                other.name
            )),
            None => Ok(u),
        }
    });
    match result {
        Ok(u) => secrets.uses.push(u),
        Err(reason) => diags.push(v.error(reason)),
    }
}

fn same_target(a: &SecretUse, b: &SecretUse) -> bool {
    match (&a.delivery, &b.delivery) {
        (SecretDelivery::Mount { target: x, .. }, SecretDelivery::Mount { target: y, .. }) => {
            x == y
        }
        (SecretDelivery::Env { target: x }, SecretDelivery::Env { target: y }) => x == y,
        _ => false,
    }
}

fn describe_target(d: &SecretDelivery) -> String {
    match d {
        SecretDelivery::Mount { target, .. } => format!("the file {target}"),
        SecretDelivery::Env { target } => format!("the variable {target}"),
    }
}

/// `NAME[,key=value...]`, or Podman's `source=NAME,key=value...`.
pub fn parse_secret(text: &str) -> Result<SecretUse, String> {
    let shape = "expected NAME[,type=mount|env][,target=...][,uid=UID][,gid=GID][,mode=MODE]";
    let mut parts = text.split(',').peekable();
    let mut name = parts.next_if(|first| !first.contains('='));
    let (mut kind, mut target, mut uid, mut gid, mut mode) = (None, None, None, None, None);
    for part in parts {
        let Some((key, value)) = part.split_once('=') else {
            return Err(format!("{shape}, found {part:?} in {text:?}"));
        };
        let seen = match key {
            "source" => name.replace(value).is_some(),
            "type" => kind.replace(value).is_some(),
            "target" => target.replace(value).is_some(),
            "uid" => uid.replace(number(key, value, 10)?).is_some(),
            "gid" => gid.replace(number(key, value, 10)?).is_some(),
            "mode" => mode.replace(number(key, value, 8)?).is_some(),
            _ => {
                return Err(format!(
                    "unknown secret option {key:?}: flotilla reads source, type, target, uid, gid and mode"
                ));
            }
        };
        if seen {
            return Err(format!(
                "the secret option {key} is given twice in {text:?}"
            ));
        }
    }
    let Some(name) = name else {
        return Err(format!("{shape}: no secret name in {text:?}"));
    };
    check_secret_name(name).map_err(|e| format!("{shape}: {e}"))?;
    let delivery = match kind.unwrap_or("mount") {
        "mount" => {
            let target = match target {
                None => format!("{SECRETS_DIR}/{name}"),
                Some(t) => mount_target(t)?,
            };
            let mode = mode.unwrap_or(DEFAULT_SECRET_MODE);
            if mode > 0o777 {
                return Err(format!(
                    "mode={mode:o} is not a file mode: expected up to 0777"
                ));
            }
            SecretDelivery::Mount {
                target,
                uid: uid.unwrap_or(0),
                gid: gid.unwrap_or(0),
                mode,
            }
        }
        "env" => {
            if uid.is_some() || gid.is_some() || mode.is_some() {
                return Err(
                    "uid, gid and mode apply to type=mount only, not to type=env".to_owned(),
                );
            }
            let target = target.unwrap_or(name).to_owned();
            if !is_env_name(&target) {
                return Err(format!(
                    "{target:?} is not a valid environment variable name: use letters, digits and '_', not starting with a digit (set target= for a secret whose name is not one)"
                ));
            }
            SecretDelivery::Env { target }
        }
        other => {
            return Err(format!(
                "unknown secret type {other:?}: expected mount or env"
            ));
        }
    };
    Ok(SecretUse {
        name: name.to_owned(),
        delivery,
    })
}

fn number(key: &str, value: &str, radix: u32) -> Result<u32, String> {
    let digits = if radix == 8 {
        value.strip_prefix("0o").unwrap_or(value)
    } else {
        value
    };
    u32::from_str_radix(digits, radix)
        .ok()
        .filter(|_| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            let what = if radix == 8 {
                "an octal mode such as 0440"
            } else {
                "a number"
            };
            format!("{key}= takes {what}, found {value:?}")
        })
}

fn mount_target(t: &str) -> Result<String, String> {
    let path = if t.starts_with('/') {
        t.to_owned()
    } else {
        format!("{SECRETS_DIR}/{t}")
    };
    let bad = path.len() < 2
        || path.ends_with('/')
        || path.contains("//")
        || path.split('/').any(|c| c == "." || c == "..")
        || path.chars().any(char::is_control)
        || path.contains(':');
    if bad {
        return Err(format!(
            "target={t:?} is not a file path in the container: expected an absolute path (or a name under {SECRETS_DIR}) without '.', '..', ':' or empty components"
        ));
    }
    Ok(path)
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(name: &str, target: &str, uid: u32, gid: u32, mode: u32) -> SecretUse {
        SecretUse {
            name: name.into(),
            delivery: SecretDelivery::Mount {
                target: target.into(),
                uid,
                gid,
                mode,
            },
        }
    }

    #[test]
    fn forms() {
        assert_eq!(
            parse_secret("db"),
            Ok(mount("db", "/run/secrets/db", 0, 0, 0o400))
        );
        assert_eq!(
            parse_secret("db,type=mount,target=pw,uid=100,gid=101,mode=0440"),
            Ok(mount("db", "/run/secrets/pw", 100, 101, 0o440))
        );
        assert_eq!(
            parse_secret("db,target=/etc/app/key.pem"),
            Ok(mount("db", "/etc/app/key.pem", 0, 0, 0o400))
        );
        assert_eq!(
            parse_secret("db-pw,type=env,target=DB_PASSWORD"),
            Ok(SecretUse {
                name: "db-pw".into(),
                delivery: SecretDelivery::Env {
                    target: "DB_PASSWORD".into()
                }
            })
        );
        // Podman's source= names the secret too.
        assert_eq!(
            parse_secret("source=db,type=mount,uid=1000,gid=1001,mode=777"),
            Ok(mount("db", "/run/secrets/db", 1000, 1001, 0o777))
        );
        assert!(parse_secret("db,source=other").is_err());
        assert!(parse_secret("type=env,target=X").is_err());
        assert_eq!(
            parse_secret("TOKEN,type=env"),
            Ok(SecretUse {
                name: "TOKEN".into(),
                delivery: SecretDelivery::Env {
                    target: "TOKEN".into()
                }
            })
        );
    }

    #[test]
    fn refusals() {
        for (text, needle) in [
            ("", "not a secret name"),
            ("../x", "not a secret name"),
            (".x", "not a secret name"),
            ("a,type=file", "unknown secret type"),
            ("a,relabel=z", "unknown secret option"),
            ("a,target", "expected NAME"),
            ("a,mode=999", "octal mode"),
            ("a,mode=1777", "not a file mode"),
            ("a,uid=-1", "a number"),
            ("a,target=/x/../y", "not a file path"),
            ("a,target=/x:ro", "not a file path"),
            ("a,target=/run/secrets/", "not a file path"),
            ("a,type=env,mode=0400", "type=mount only"),
            ("db-pw,type=env", "not a valid environment variable name"),
            ("a,type=env,type=mount", "given twice"),
        ] {
            let e = parse_secret(text).unwrap_err();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
        let long = "a".repeat(MAX_SECRET_NAME_LEN + 1);
        assert!(parse_secret(&long).unwrap_err().contains("at most"));
        assert!(parse_secret(&long[1..]).is_ok());
    }

    #[test]
    fn names_once() {
        let s = ContainerSecrets {
            uses: vec![
                mount("a", "/x", 0, 0, 0o400),
                mount("b", "/y", 0, 0, 0o400),
                mount("a", "/z", 0, 0, 0o400),
            ],
        };
        assert_eq!(s.names(), vec!["a", "b"]);
    }
}
