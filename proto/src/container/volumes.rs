//! `Volume=`: volumes and bind mounts.

use serde::{Deserialize, Serialize};

use super::check_container_name;

/// `Volume=`: something mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// What is mounted; `None` for a new anonymous volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<VolumeSource>,
    /// The absolute path in the container.
    pub target: String,
    /// Docker's `-v` options, as written and checked: `ro`/`rw`, `z`/`Z`,
    /// a propagation mode (`rshared`, ...; host paths only), `nocopy`
    /// (volumes only), `consistent`/`cached`/`delegated`; at most one of
    /// each kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Volume {
    /// Whether the mount is read-only (`ro`).
    pub fn read_only(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }
}

/// The source of a [`Volume`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeSource {
    /// An absolute path on the host (a bind mount).
    Path(String),
    /// A named Docker volume, created if missing; `NAME.volume` is the
    /// volume of the unit `NAME-volume.service`.
    Named(String),
}

const RW_MODES: [&str; 2] = ["rw", "ro"];
const LABEL_MODES: [&str; 2] = ["z", "Z"];
const PROPAGATION_MODES: [&str; 6] = [
    "shared", "rshared", "slave", "rslave", "private", "rprivate",
];
const COPY_MODES: [&str; 1] = ["nocopy"];
const CONSISTENCY_MODES: [&str; 3] = ["consistent", "cached", "delegated"];

/// `[SOURCE:]CONTAINER-DIR[:OPTIONS]`, already split at the first two ':'.
pub(super) fn parse_volume(parts: &[String]) -> Result<Volume, String> {
    let (source, target, options) = match parts {
        [target] => (None, target, None),
        [source, target] => (Some(source), target, None),
        [source, target, options] => (Some(source), target, Some(options)),
        _ => return Err("expected [SOURCE:]CONTAINER-DIR[:OPTIONS]".to_owned()),
    };
    if !target.starts_with('/') {
        return Err(format!(
            "expected [SOURCE:]CONTAINER-DIR[:OPTIONS] with an absolute CONTAINER-DIR, found {target:?}"
        ));
    }
    if target.trim_end_matches('/').is_empty() {
        return Err("cannot mount over the container's root directory \"/\"".to_owned());
    }
    let source = match source {
        None => None,
        Some(s) if s.starts_with('/') => Some(VolumeSource::Path(s.clone())),
        Some(s) if s.ends_with(".volume") => {
            super::object::check_reference(s, "volume")?;
            Some(VolumeSource::Named(s.clone()))
        }
        Some(s) if check_container_name(s).is_ok() => Some(VolumeSource::Named(s.clone())),
        Some(s) if s.starts_with('.') || s.starts_with('~') => {
            return Err(format!(
                "the host path {s:?} is relative: give an absolute path, as a flotilla unit has no directory to start from"
            ));
        }
        Some(s) => {
            return Err(format!(
                "expected an absolute host path or a Docker volume name (letters, digits, '_', '.' or '-', at least two), found {s:?}"
            ));
        }
    };
    let mut list = Vec::new();
    if let Some(options) = options {
        let groups: [&[&str]; 5] = [
            &RW_MODES,
            &LABEL_MODES,
            &PROPAGATION_MODES,
            &COPY_MODES,
            &CONSISTENCY_MODES,
        ];
        let mut seen = [None::<&str>; 5];
        for option in options.split(',') {
            let Some(group) = groups.iter().position(|g| g.contains(&option)) else {
                return Err(format!(
                    "unknown volume option {option:?}: expected ro, rw, z, Z, shared, rshared, slave, rslave, private, rprivate, nocopy, consistent, cached or delegated"
                ));
            };
            if let Some(earlier) = seen[group] {
                return Err(format!(
                    "volume options {earlier:?} and {option:?} cannot be combined"
                ));
            }
            seen[group] = Some(option);
            let path = matches!(source, Some(VolumeSource::Path(_)));
            if PROPAGATION_MODES.contains(&option) && !path {
                return Err(format!(
                    "volume option {option:?} applies only to host paths"
                ));
            }
            if option == "nocopy" && path {
                return Err(
                    "volume option \"nocopy\" applies only to volumes, not host paths".to_owned(),
                );
            }
            list.push(option.to_owned());
        }
    }
    Ok(Volume {
        source,
        target: target.clone(),
        options: list,
    })
}
