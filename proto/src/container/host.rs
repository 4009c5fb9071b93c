//! What the host lends the container: devices, resource limits of the
//! process (`ulimit`), the size of `/dev/shm`, namespaced kernel settings,
//! OCI annotations, and whether its output has somewhere else to go
//! (`LogDriver=`).
//!
//! | key | value | repeatable |
//! |---|---|---|
//! | `AddDevice=` | `[-]HOST-DEVICE[:CONTAINER-DEVICE][:PERMISSIONS]` words, permissions of `r`, `w`, `m`; `-` adds it only if the host has it | yes |
//! | `Ulimit=` | `NAME=SOFT[:HARD]`, numbers, `-1` or `unlimited` | yes |
//! | `ShmSize=` | bytes, with `b`, `k`, `m` or `g` (1024-based) | |
//! | `Sysctl=` | `NAME=VALUE` words, namespaced settings only | yes |
//! | `Annotation=` | `KEY=VALUE` words | yes |
//! | `LogDriver=` | `journald` or `passthrough`: the output goes to the unit's journal | |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::value::split_words;

/// The keys read here.
pub(super) const KEYS: &[&str] = &[
    "AddDevice",
    "Ulimit",
    "ShmSize",
    "Sysctl",
    "Annotation",
    "LogDriver",
];

/// The most `AddDevice=`, `Ulimit=`, `Sysctl=` or `Annotation=` entries one
/// container may have, each.
pub const MAX_HOST_ENTRIES: usize = 256;

/// What the host lends the container (`ContainerSpec::host`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostOptions {
    /// `AddDevice=`: device nodes of the host, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
    /// `Ulimit=`: one per resource; a later one for the same resource wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
    /// `ShmSize=`: the size of `/dev/shm` in bytes; `None` keeps Docker's
    /// (64 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<u64>,
    /// `Sysctl=`: namespaced kernel settings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    /// `Annotation=`: OCI annotations on the container.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl HostOptions {
    /// Whether every setting is at its default.
    pub fn is_empty(&self) -> bool {
        *self == HostOptions::default()
    }
}

/// `AddDevice=`: a device node of the host in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// The device's path on the host.
    pub host: String,
    /// Its path in the container; `None`: the same as on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Some of `r`, `w`, `m` (mknod); `None`: Docker's `rwm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<String>,
    /// The value started with `-`: added only if the host has it (checked
    /// when the container is created, on the host that runs it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

/// `Ulimit=`: a resource limit of the container's processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    /// The resource, as Docker names it (`nofile`, `nproc`, ...).
    pub name: String,
    /// The soft limit; -1 is unlimited.
    pub soft: i64,
    /// The hard limit; -1 is unlimited.
    pub hard: i64,
}

/// The resources Docker knows a limit for (setrlimit(2), without `RLIMIT_`).
pub const ULIMITS: [&str; 15] = [
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// Reads one assignment of a key of [`KEYS`]; `value` has its specifiers
/// expanded, and is empty for an empty assignment (which resets the key).
pub(super) fn read(host: &mut HostOptions, key: &str, value: &str) -> Result<(), String> {
    match key {
        "AddDevice" if value.is_empty() => host.devices.clear(),
        // Several devices may share a line, as in Quadlet.
        "AddDevice" => {
            for word in split_words(value).map_err(|e| format!("bad quoting: {e}"))? {
                full(host.devices.len())?;
                host.devices.push(parse_device(&word)?);
            }
        }
        "Ulimit" if value.is_empty() => host.ulimits.clear(),
        "Ulimit" => {
            full(host.ulimits.len())?;
            let ulimit = parse_ulimit(value)?;
            host.ulimits.retain(|u| u.name != ulimit.name);
            host.ulimits.push(ulimit);
        }
        "ShmSize" if value.is_empty() => host.shm_size = None,
        "ShmSize" => host.shm_size = Some(parse_shm_size(value)?),
        "Sysctl" if value.is_empty() => host.sysctls.clear(),
        "Sysctl" => {
            for (name, v) in pairs(value, "NAME=VALUE")? {
                check_sysctl(&name)?;
                full(host.sysctls.len())?;
                host.sysctls.insert(name, v);
            }
        }
        "Annotation" if value.is_empty() => host.annotations.clear(),
        "Annotation" => {
            for (k, v) in pairs(value, "KEY=VALUE")? {
                full(host.annotations.len())?;
                host.annotations.insert(k, v);
            }
        }
        "LogDriver" => check_log_driver(value)?,
        _ => {}
    }
    Ok(())
}

fn full(len: usize) -> Result<(), String> {
    if len >= MAX_HOST_ENTRIES {
        return Err(format!(
            "a container may have at most {MAX_HOST_ENTRIES} of these"
        ));
    }
    Ok(())
}

/// `KEY=VALUE` words, quoted as in systemd; keys not empty.
pub(super) fn pairs(value: &str, shape: &str) -> Result<Vec<(String, String)>, String> {
    let words = split_words(value).map_err(|e| format!("bad quoting: {e}"))?;
    words
        .into_iter()
        .map(|word| match word.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(format!("expected {shape}, found {word:?}")),
        })
        .collect()
}

fn parse_device(value: &str) -> Result<Device, String> {
    let bad = |why: String| {
        format!(
            "expected [-]HOST-DEVICE[:CONTAINER-DEVICE][:PERMISSIONS] such as /dev/fuse or /dev/sdc:/dev/xvdc:rw, found {value:?}: {why}"
        )
    };
    let (optional, text) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let parts: Vec<&str> = text.split(':').collect();
    let (host, container, permissions) = match parts[..] {
        [host] => (host, None, None),
        // The second part is the permissions when it is not a path, as
        // Docker and Podman read it.
        [host, second] if !second.starts_with('/') => (host, None, Some(second)),
        [host, container] => (host, Some(container), None),
        [host, container, permissions] => (host, Some(container), Some(permissions)),
        _ => return Err(bad("too many ':'".to_owned())),
    };
    for path in std::iter::once(host).chain(container) {
        if !path.starts_with('/') {
            return Err(bad(format!("{path:?} is not an absolute path")));
        }
    }
    if let Some(p) = permissions {
        let valid = !p.is_empty()
            && p.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
            && !(1..p.len()).any(|i| p[i..].contains(&p[i - 1..i]));
        if !valid {
            return Err(bad(format!(
                "permissions {p:?} are not some of r (read), w (write) and m (mknod)"
            )));
        }
    }
    Ok(Device {
        host: host.to_owned(),
        container: container.map(str::to_owned),
        permissions: permissions.map(str::to_owned),
        optional,
    })
}

fn parse_ulimit(value: &str) -> Result<Ulimit, String> {
    let bad = |why: String| {
        format!("expected NAME=SOFT[:HARD] such as nofile=1024:65536, found {value:?}: {why}")
    };
    let (name, limits) = value
        .split_once('=')
        .ok_or_else(|| bad("no '='".to_owned()))?;
    let Some(name) = ULIMITS.iter().find(|n| **n == name) else {
        return Err(bad(format!(
            "{name:?} is not a resource Docker limits: one of {}",
            ULIMITS.join(", ")
        )));
    };
    let limit = |text: &str| match text {
        "unlimited" | "-1" => Ok(-1),
        _ if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => text
            .parse::<i64>()
            .map_err(|_| bad(format!("{text:?} is too large"))),
        _ => Err(bad(format!("{text:?} is not a number, -1 or unlimited"))),
    };
    let (soft, hard) = match limits.split_once(':') {
        Some((s, h)) => (limit(s)?, limit(h)?),
        None => {
            let l = limit(limits)?;
            (l, l)
        }
    };
    // -1 is unlimited: larger than any number.
    let above = |a: i64, b: i64| b != -1 && (a == -1 || a > b);
    if above(soft, hard) {
        return Err(bad("the soft limit is above the hard limit".to_owned()));
    }
    Ok(Ulimit {
        name: (*name).to_owned(),
        soft,
        hard,
    })
}

/// `number[unit]`, units `b`, `k`, `m`, `g` (1024-based, any case, with or
/// without a trailing `b`), as Docker's and Podman's `--shm-size`.
fn parse_shm_size(value: &str) -> Result<u64, String> {
    let bad = |why: &str| {
        format!("expected a size such as 64m or 1g (1024-based), found {value:?}: {why}")
    };
    let lower = value.to_ascii_lowercase();
    let digits = lower.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = lower.split_at(digits);
    let unit = unit
        .strip_suffix('b')
        .map_or(unit, |u| if u.is_empty() { "b" } else { u });
    let shift = match unit {
        "" | "b" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        _ => return Err(bad("the unit is not b, k, m or g")),
    };
    let n: u64 = number.parse().map_err(|_| bad("no number, or too large"))?;
    let bytes = n
        .checked_mul(1 << shift)
        .filter(|b| i64::try_from(*b).is_ok())
        .ok_or_else(|| bad("too large"))?;
    if bytes == 0 {
        return Err(bad("it must be more than 0"));
    }
    Ok(bytes)
}

/// The kernel settings a container has its own copy of (its IPC and
/// network namespaces), as Docker allows them.
fn check_sysctl(name: &str) -> Result<(), String> {
    const IPC: [&str; 8] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let shaped = !name.is_empty()
        && name.split(['.', '/']).all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if !shaped {
        return Err(format!(
            "expected a kernel setting such as net.ipv4.ip_unprivileged_port_start, found {name:?}"
        ));
    }
    let namespaced =
        IPC.contains(&name) || name.starts_with("fs.mqueue.") || name.starts_with("net.");
    if namespaced {
        Ok(())
    } else {
        Err(format!(
            "{name} is not a namespaced kernel setting: it would change the whole host, so Docker refuses it; a container may set kernel.msg*, kernel.sem, kernel.shm*, fs.mqueue.* and net.*"
        ))
    }
}

/// `LogDriver=`: the container's output goes to the unit's journal
/// through the shim, whatever Docker's log driver, so only the drivers that
/// mean that are taken.
fn check_log_driver(value: &str) -> Result<(), String> {
    match value {
        "" | "journald" | "passthrough" => Ok(()),
        "passthrough-tty" => Err(
            "passthrough-tty needs a terminal, and flotilla runs the container without one; the output goes to the unit's journal (journald or passthrough)".to_owned(),
        ),
        other => Err(format!(
            "the container's output always goes to the unit's journal through flotilla's shim, and Docker keeps no log of its own, which is what journald and passthrough mean; {other} cannot be honoured: use one of those, or leave LogDriver= out"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices() {
        let d = parse_device("-/dev/fuse").unwrap();
        assert!(d.optional && d.container.is_none() && d.permissions.is_none());
        let d = parse_device("/dev/sdc:rw").unwrap();
        assert_eq!(d.permissions.as_deref(), Some("rw"));
        let d = parse_device("/dev/sdc:/dev/xvdc:rwm").unwrap();
        assert_eq!(d.container.as_deref(), Some("/dev/xvdc"));
        for bad in ["dev/x", "/dev/x:rr", "/dev/x:/y:q", "/a:/b:r:w", "/dev/x:"] {
            assert!(parse_device(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ulimits_and_sizes() {
        let u = parse_ulimit("nofile=1024:unlimited").unwrap();
        assert_eq!((u.soft, u.hard), (1024, -1));
        assert!(parse_ulimit("nofile=-1:10").is_err());
        assert!(parse_ulimit("nofile=20:10").is_err());
        assert!(parse_ulimit("files=1").is_err());
        assert_eq!(parse_shm_size("64m"), Ok(64 << 20));
        assert_eq!(parse_shm_size("1GB"), Ok(1 << 30));
        assert_eq!(parse_shm_size("100"), Ok(100));
        assert_eq!(parse_shm_size("7b"), Ok(7));
        for bad in ["0", "m", "1t", "-1m", "99999999999g"] {
            assert!(parse_shm_size(bad).is_err(), "{bad}");
        }
    }
}
