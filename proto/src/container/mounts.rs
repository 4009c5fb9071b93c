//! The mount keys of `[Container]` beside `Volume=`: `Mount=` (Docker's
//! `--mount`), `Tmpfs=`, and the tmpfs that `ReadOnly=` and `VolatileTmp=`
//! bring, as podman-systemd.unit(5) describes them:
//!
//! - `ReadOnly=yes` with `ReadOnlyTmpfs=` (default yes) mounts a writable
//!   tmpfs on `/run`, `/tmp` and `/var/tmp` (podman also names `/dev` and
//!   `/dev/shm`, which Docker always mounts writable);
//! - `VolatileTmp=yes` without `ReadOnly=yes` mounts a tmpfs on `/tmp`
//!   (`rw,size=512M,mode=1777`, as Quadlet does);
//! - neither covers a path the unit mounts itself.
//!
//! A path in the container may be mounted once, by any of `Volume=`,
//! `Mount=` and `Tmpfs=`: a second mount is an error naming the first's
//! line.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::name::UnitName;
use crate::unit_file::ValueRef;
use crate::value::parse_bool;
use crate::work;

use super::specifiers::expand_specifiers;
use super::{SECTION, Volume, check_container_name};

/// The most `Mount=` and `Tmpfs=` values one container may have, together.
/// Each new one is compared with those before it for a path mounted twice,
/// so this bounds that work.
pub const MAX_MOUNTS: usize = 256;

/// Paths `ReadOnly=yes` covers with a writable tmpfs, unless
/// `ReadOnlyTmpfs=no`.
pub const READ_ONLY_TMPFS: [&str; 3] = ["/run", "/tmp", "/var/tmp"];

/// Tmpfs options of the tmpfs `ReadOnly=yes` brings.
pub const READ_ONLY_TMPFS_OPTIONS: &str = "rw,nosuid,nodev";

/// Tmpfs options of `VolatileTmp=yes`'s `/tmp`, Quadlet's.
pub const VOLATILE_TMP_OPTIONS: &str = "rw,size=512M,mode=1777";

/// The mounts of the container beside `Volume=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// `Mount=`, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// `Tmpfs=`, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<Tmpfs>,
    /// `ReadOnlyTmpfs=` (default yes).
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub read_only_tmpfs: bool,
    /// `VolatileTmp=`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub volatile_tmp: bool,
}

fn yes() -> bool {
    true
}

fn is_yes(b: &bool) -> bool {
    *b
}

impl Default for MountSpec {
    fn default() -> Self {
        MountSpec {
            mounts: Vec::new(),
            tmpfs: Vec::new(),
            read_only_tmpfs: true,
            volatile_tmp: false,
        }
    }
}

impl MountSpec {
    pub fn is_empty(&self) -> bool {
        *self == MountSpec::default()
    }

    /// Every tmpfs Docker mounts by path (its `HostConfig.Tmpfs`):
    /// `Tmpfs=`, then those `ReadOnly=` (`read_only`) or `VolatileTmp=`
    /// bring on paths no mount of the unit's (`volumes` and these) covers.
    pub fn tmpfs_mounts(&self, read_only: bool, volumes: &[Volume]) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .tmpfs
            .iter()
            .map(|t| (t.target.clone(), t.options.join(",")))
            .collect();
        let taken = |path: &str| {
            volumes.iter().any(|v| same_path(&v.target, path))
                || self.mounts.iter().any(|m| same_path(&m.target, path))
                || self.tmpfs.iter().any(|t| same_path(&t.target, path))
        };
        let implied: Vec<(&str, &str)> = if read_only && self.read_only_tmpfs {
            READ_ONLY_TMPFS
                .iter()
                .map(|p| (*p, READ_ONLY_TMPFS_OPTIONS))
                .collect()
        } else if !read_only && self.volatile_tmp {
            vec![("/tmp", VOLATILE_TMP_OPTIONS)]
        } else {
            Vec::new()
        };
        for (path, options) in implied {
            if !taken(path) {
                out.push((path.to_owned(), options.to_owned()));
            }
        }
        out
    }
}

/// What a `Mount=` mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    Bind,
    Volume,
    Tmpfs,
}

/// One `Mount=`, in Docker's `--mount` terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: MountType,
    /// A host path (bind), a volume name (volume; `None` for a new
    /// anonymous one); never for tmpfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The absolute path in the container.
    pub target: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// `consistency=`: `consistent`, `cached`, `delegated` or `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
    /// `bind-propagation=`: `rprivate`, `shared`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_propagation: Option<String>,
    /// `bind-recursive=`: `enabled`, `disabled`, `writable` or `readonly`
    /// (`bind-nonrecursive` is `disabled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_recursive: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub volume_nocopy: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_subpath: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_driver: Option<String>,
    /// `volume-opt=KEY=VALUE`: the driver's options, for a volume created
    /// by this mount.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volume_options: BTreeMap<String, String>,
    /// `volume-label=KEY=VALUE`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volume_labels: BTreeMap<String, String>,
    /// `tmpfs-size=`: bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs_size: Option<u64>,
    /// `tmpfs-mode=`: permission bits, written in octal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs_mode: Option<u32>,
}

/// One `Tmpfs=PATH[:OPTIONS]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tmpfs {
    pub target: String,
    /// Mount options, as written and checked (`size=64m`, `mode=1777`,
    /// `noexec`...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// The keys this module reads.
pub(super) const MOUNT_KEYS: &[&str] = &["Mount", "Tmpfs", "ReadOnlyTmpfs", "VolatileTmp"];

/// The mount keys' part of a pass over `[Container]`.
#[derive(Default)]
pub(super) struct MountReader {
    pub(super) spec: MountSpec,
    /// Line of each effective `Mount=` and `Tmpfs=`, in order.
    mount_lines: Vec<u32>,
    tmpfs_lines: Vec<u32>,
}

impl MountReader {
    /// Reads one assignment of a key of [`MOUNT_KEYS`].
    pub(super) fn entry(&mut self, name: &UnitName, diags: &mut Diagnostics, v: &ValueRef<'_>) {
        let value = v.value.trim();
        match v.key {
            "ReadOnlyTmpfs" | "VolatileTmp" => {
                let b = if value.is_empty() {
                    Some(v.key == "ReadOnlyTmpfs")
                } else {
                    parse_bool(value)
                };
                match b {
                    Some(b) if v.key == "ReadOnlyTmpfs" => self.spec.read_only_tmpfs = b,
                    Some(b) => self.spec.volatile_tmp = b,
                    None => diags.push(v.error(format!(
                        "expected a boolean (yes or no, true or false, on or off, 1 or 0), found {value:?}"
                    ))),
                }
            }
            "Mount" | "Tmpfs" => {
                let tmpfs = v.key == "Tmpfs";
                if value.is_empty() {
                    if tmpfs {
                        self.spec.tmpfs.clear();
                        self.tmpfs_lines.clear();
                    } else {
                        self.spec.mounts.clear();
                        self.mount_lines.clear();
                    }
                    return;
                }
                if self.spec.mounts.len() + self.spec.tmpfs.len() >= MAX_MOUNTS {
                    diags.push(v.error(format!(
                        "a container may have at most {MAX_MOUNTS} Mount= and Tmpfs= together"
                    )));
                    return;
                }
                let text = match expand_specifiers(name, value) {
                    Ok(Some(text)) => text,
                    Ok(None) => return,
                    Err(message) => {
                        diags.push(v.error(message));
                        return;
                    }
                };
                let parsed = if tmpfs {
                    parse_tmpfs(&text).map(|t| (t.target.clone(), Err(t)))
                } else {
                    parse_mount(&text).map(|m| (m.target.clone(), Ok(m)))
                };
                let (target, item) = match parsed {
                    Ok(p) => p,
                    Err(reason) => {
                        diags.push(v.error(reason));
                        return;
                    }
                };
                // Bounded by MAX_MOUNTS.
                work::charge(self.spec.mounts.len() + self.spec.tmpfs.len());
                if let Some(line) = self.line_of_target(&target) {
                    diags.push(v.error(format!(
                        "{target:?} in the container is already mounted on line {line}"
                    )));
                    return;
                }
                match item {
                    Ok(m) => {
                        self.spec.mounts.push(m);
                        self.mount_lines.push(v.line);
                    }
                    Err(t) => {
                        self.spec.tmpfs.push(t);
                        self.tmpfs_lines.push(v.line);
                    }
                }
            }
            _ => {}
        }
    }

    fn line_of_target(&self, target: &str) -> Option<u32> {
        let mounts = self
            .spec
            .mounts
            .iter()
            .map(|m| &m.target)
            .zip(&self.mount_lines);
        let tmpfs = self
            .spec
            .tmpfs
            .iter()
            .map(|t| &t.target)
            .zip(&self.tmpfs_lines);
        mounts
            .chain(tmpfs)
            .find(|(t, _)| same_path(t, target))
            .map(|(_, l)| *l)
    }

    /// Checks these mounts against `Volume=`'s (`volume_lines`: each
    /// effective `Volume=`'s line by its target): the later of two mounts
    /// of one path is the error.
    pub(super) fn finish(
        self,
        volume_lines: &HashMap<String, u32>,
        diags: &mut Diagnostics,
    ) -> MountSpec {
        let mounts = self
            .spec
            .mounts
            .iter()
            .map(|m| (&m.target, "Mount"))
            .zip(&self.mount_lines);
        let tmpfs = self
            .spec
            .tmpfs
            .iter()
            .map(|t| (&t.target, "Tmpfs"))
            .zip(&self.tmpfs_lines);
        for ((target, key), line) in mounts.chain(tmpfs) {
            work::charge(1);
            let volume = volume_lines
                .get(target.as_str())
                .or_else(|| volume_lines.get(target.trim_end_matches('/')))
                .copied();
            let Some(volume) = volume else {
                continue;
            };
            let (later, later_key, earlier) = if volume > *line {
                (volume, "Volume", *line)
            } else {
                (*line, key, volume)
            };
            diags.push(
                Diagnostic::error(
                    Some(later).filter(|l| *l > 0),
                    format!("{target:?} in the container is already mounted on line {earlier}"),
                )
                .at_option(SECTION, later_key),
            );
        }
        self.spec
    }
}

fn same_path(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

fn check_target(target: &str) -> Result<(), String> {
    if !target.starts_with('/') {
        return Err(format!(
            "expected an absolute path in the container, found {target:?}"
        ));
    }
    if target.trim_end_matches('/').is_empty() {
        return Err("cannot mount over the container's root directory \"/\"".to_owned());
    }
    Ok(())
}

const PROPAGATION: [&str; 6] = [
    "shared", "rshared", "slave", "rslave", "private", "rprivate",
];
const RECURSIVE: [&str; 4] = ["enabled", "disabled", "writable", "readonly"];
const CONSISTENCY: [&str; 4] = ["consistent", "cached", "delegated", "default"];

/// `type=bind|volume|tmpfs,KEY[=VALUE],...`, Docker's `--mount`.
fn parse_mount(text: &str) -> Result<Mount, String> {
    let mut kind = None;
    let mut fields: Vec<(&str, Option<&str>)> = Vec::new();
    for field in text.split(',') {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v)),
            None => (field.trim(), None),
        };
        if key == "type" {
            if kind.is_some() {
                return Err("type= is given twice".to_owned());
            }
            kind = Some(match value.unwrap_or("") {
                "bind" => MountType::Bind,
                "volume" => MountType::Volume,
                "tmpfs" => MountType::Tmpfs,
                "image" => {
                    return Err(
                        "type=image is podman's: Docker's --mount cannot mount an image; copy what you need into the container's own image"
                            .to_owned(),
                    );
                }
                "devpts" => {
                    return Err(
                        "type=devpts is podman's: Docker mounts /dev/pts in every container itself"
                            .to_owned(),
                    );
                }
                other => {
                    return Err(format!(
                        "unknown mount type {other:?}: Docker mounts bind, volume or tmpfs"
                    ));
                }
            });
        } else {
            fields.push((key, value));
        }
    }
    let kind = kind.ok_or("expected type=bind, type=volume or type=tmpfs first, as Mount=type=bind,source=/srv,destination=/srv")?;
    let mut m = Mount {
        kind,
        source: None,
        target: String::new(),
        read_only: false,
        consistency: None,
        bind_propagation: None,
        bind_recursive: None,
        volume_nocopy: false,
        volume_subpath: None,
        volume_driver: None,
        volume_options: BTreeMap::new(),
        volume_labels: BTreeMap::new(),
        tmpfs_size: None,
        tmpfs_mode: None,
    };
    let type_name = match kind {
        MountType::Bind => "bind",
        MountType::Volume => "volume",
        MountType::Tmpfs => "tmpfs",
    };
    let mut seen: Vec<&str> = Vec::new();
    for (key, value) in fields {
        let canonical = match key {
            "src" => "source",
            "dst" | "destination" => "target",
            "ro" => "readonly",
            "bind-nonrecursive" => "bind-recursive",
            k => k,
        };
        if seen.contains(&canonical) && !matches!(canonical, "volume-opt" | "volume-label") {
            return Err(format!("mount option {key} is given twice"));
        }
        seen.push(canonical);
        let only = |wanted: MountType| {
            if kind == wanted {
                Ok(())
            } else {
                Err(format!(
                    "mount option {key} does not apply to type={type_name}"
                ))
            }
        };
        let needs = |value: Option<&str>| -> Result<String, String> {
            match value {
                Some(v) if !v.is_empty() => Ok(v.to_owned()),
                _ => Err(format!("mount option {key} needs a value, as {key}=VALUE")),
            }
        };
        let flag = |value: Option<&str>| -> Result<bool, String> {
            match value {
                None => Ok(true),
                Some(v) => parse_bool(v)
                    .ok_or_else(|| format!("mount option {key} takes true or false, found {v:?}")),
            }
        };
        let one_of = |value: Option<&str>, allowed: &[&str]| -> Result<String, String> {
            let v = needs(value)?;
            if allowed.contains(&v.as_str()) {
                Ok(v)
            } else {
                Err(format!(
                    "mount option {key}={v} is not one of {}",
                    allowed.join(", ")
                ))
            }
        };
        match canonical {
            "source" => {
                if kind == MountType::Tmpfs {
                    return Err("a tmpfs mount has no source".to_owned());
                }
                m.source = Some(needs(value)?);
            }
            "target" => m.target = needs(value)?,
            "readonly" => m.read_only = flag(value)?,
            "consistency" => m.consistency = Some(one_of(value, &CONSISTENCY)?),
            "bind-propagation" => {
                only(MountType::Bind)?;
                m.bind_propagation = Some(one_of(value, &PROPAGATION)?);
            }
            "bind-recursive" => {
                only(MountType::Bind)?;
                m.bind_recursive = Some(if key == "bind-nonrecursive" {
                    if flag(value)? { "disabled" } else { "enabled" }.to_owned()
                } else {
                    one_of(value, &RECURSIVE)?
                });
            }
            "volume-nocopy" => {
                only(MountType::Volume)?;
                m.volume_nocopy = flag(value)?;
            }
            "volume-subpath" => {
                only(MountType::Volume)?;
                let sub = needs(value)?;
                if sub.starts_with('/') || sub.split('/').any(|p| p == "..") {
                    return Err(format!(
                        "volume-subpath must be a path inside the volume, found {sub:?}"
                    ));
                }
                m.volume_subpath = Some(sub);
            }
            "volume-driver" => {
                only(MountType::Volume)?;
                m.volume_driver = Some(needs(value)?);
            }
            "volume-opt" | "volume-label" => {
                only(MountType::Volume)?;
                let pair = needs(value)?;
                let (k, v) = pair
                    .split_once('=')
                    .filter(|(k, _)| !k.is_empty())
                    .ok_or_else(|| format!("expected {key}=KEY=VALUE, found {key}={pair}"))?;
                let map = if canonical == "volume-opt" {
                    &mut m.volume_options
                } else {
                    &mut m.volume_labels
                };
                map.insert(k.to_owned(), v.to_owned());
            }
            "tmpfs-size" => {
                only(MountType::Tmpfs)?;
                m.tmpfs_size = Some(parse_size(&needs(value)?)?);
            }
            "tmpfs-mode" => {
                only(MountType::Tmpfs)?;
                let mode = needs(value)?;
                m.tmpfs_mode = Some(parse_mode(&mode)?);
            }
            "relabel"
            | "U"
            | "chown"
            | "idmap"
            | "tmpcopyup"
            | "notmpcopyup"
            | "suid"
            | "nosuid"
            | "dev"
            | "nodev"
            | "exec"
            | "noexec"
            | "rw"
            | "bind-propagation-mode" => {
                return Err(format!(
                    "mount option {key} is podman's: Docker's --mount does not take it"
                ));
            }
            _ => {
                return Err(format!(
                    "unknown mount option {key:?}: Docker's --mount takes source, target, readonly, consistency, bind-propagation, bind-recursive, volume-nocopy, volume-subpath, volume-driver, volume-opt, volume-label, tmpfs-size and tmpfs-mode"
                ));
            }
        }
    }
    if m.target.is_empty() {
        return Err(
            "a mount needs its path in the container: destination=PATH (or dst=, target=)"
                .to_owned(),
        );
    }
    check_target(&m.target)?;
    match (kind, &m.source) {
        (MountType::Bind, None) => {
            return Err("a bind mount needs source=, an absolute path on the host".to_owned());
        }
        (MountType::Bind, Some(s)) if !s.starts_with('/') => {
            return Err(format!(
                "the host path {s:?} is not absolute: a flotilla unit has no directory for a relative path to start from"
            ));
        }
        (MountType::Volume, Some(s)) if s.ends_with(".volume") => {
            super::object::check_reference(s, "volume")?;
        }
        (MountType::Volume, Some(s)) if check_container_name(s).is_err() => {
            return Err(format!(
                "expected a Docker volume name (letters, digits, '_', '.' or '-', at least two), found {s:?}"
            ));
        }
        _ => {}
    }
    Ok(m)
}

/// Docker's sizes: a number of bytes, or with a suffix `b`, `k`, `m`, `g`
/// (powers of 1024, any case, an optional `b`/`ib` after).
fn parse_size(text: &str) -> Result<u64, String> {
    let lower = text.to_ascii_lowercase();
    let digits = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits);
    let shift = match unit {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => {
            return Err(format!("expected a size such as 64m or 1g, found {text:?}"));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|n| *n > 0 && i64::try_from(*n).is_ok())
        .ok_or_else(|| format!("expected a size such as 64m or 1g, found {text:?}"))
}

fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|m| *m <= 0o7777 && text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| format!("expected permission bits in octal such as 1777, found {text:?}"))
}

/// Tmpfs mount options Docker passes on: the kernel's tmpfs and generic
/// ones.
const TMPFS_FLAGS: [&str; 14] = [
    "ro",
    "rw",
    "exec",
    "noexec",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "relatime",
    "strictatime",
];
const TMPFS_VALUES: [&str; 5] = ["size", "mode", "uid", "gid", "nr_inodes"];

/// `PATH[:OPTIONS]`.
fn parse_tmpfs(text: &str) -> Result<Tmpfs, String> {
    let (target, options) = match text.split_once(':') {
        Some((t, o)) => (t, Some(o)),
        None => (text, None),
    };
    check_target(target).map_err(|e| format!("expected PATH[:OPTIONS]: {e}"))?;
    let mut list = Vec::new();
    for option in options.into_iter().flat_map(|o| o.split(',')) {
        let (key, value) = match option.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (option, None),
        };
        match value {
            None if TMPFS_FLAGS.contains(&key) => {}
            Some(v) if TMPFS_VALUES.contains(&key) => match key {
                "size" => {
                    parse_size(v)?;
                }
                "mode" => {
                    parse_mode(v)?;
                }
                _ => {
                    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(format!("tmpfs option {key} takes a number, found {v:?}"));
                    }
                }
            },
            _ if matches!(key, "tmpcopyup" | "notmpcopyup") => {
                return Err(format!(
                    "tmpfs option {key} is podman's: Docker does not take it"
                ));
            }
            _ => {
                return Err(format!(
                    "unknown tmpfs option {option:?}: expected size=, mode=, uid=, gid=, nr_inodes= or a mount flag such as noexec"
                ));
            }
        }
        list.push(option.to_owned());
    }
    Ok(Tmpfs {
        target: target.to_owned(),
        options: list,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_modes() {
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1t").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert_eq!(parse_mode("1777"), Ok(0o1777));
        assert!(parse_mode("8").is_err());
        assert!(parse_mode("+1").is_err());
    }

    #[test]
    fn read_only_covers_run_and_tmp_unless_mounted() {
        let mut spec = MountSpec::default();
        let paths = |s: &MountSpec, ro: bool, v: &[Volume]| -> Vec<String> {
            s.tmpfs_mounts(ro, v).into_iter().map(|(p, _)| p).collect()
        };
        assert!(paths(&spec, false, &[]).is_empty());
        assert_eq!(paths(&spec, true, &[]), ["/run", "/tmp", "/var/tmp"]);
        let v = [Volume {
            source: None,
            target: "/tmp/".into(),
            options: vec![],
        }];
        assert_eq!(paths(&spec, true, &v), ["/run", "/var/tmp"]);
        spec.read_only_tmpfs = false;
        assert!(paths(&spec, true, &[]).is_empty());
        spec.volatile_tmp = true;
        assert!(paths(&spec, true, &[]).is_empty());
        assert_eq!(
            spec.tmpfs_mounts(false, &[]),
            [("/tmp".to_owned(), VOLATILE_TMP_OPTIONS.to_owned())]
        );
    }
}
