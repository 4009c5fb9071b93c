//! A container unit's host settings, security options and what it takes
//! from the host, in Docker's terms.
//!
//! [`read_host`] reads, once when the shim starts, what these settings need
//! from the host: the shim's environment (systemd's for the unit), the
//! `SeccompProfile=` file (Docker's API takes the profile itself, not a
//! path), which optional `AddDevice=` devices are absent, and the time zone
//! file. [`apply`] then fills the container's [`CreateConfig`] from the
//! spec and those facts, and `docker_host_config` is the part of Docker's
//! `HostConfig` they make. `Unmask=ALL` is sent as the docker CLI sends
//! `--security-opt systempaths=unconfined`: empty lists of masked and
//! read-only paths (the engine does not take that option itself).
//!
//! Docker has no `--tz` and no `--env-host`, so:
//!
//! - `Timezone=ZONE` sets `TZ=ZONE` and binds the host's
//!   `/usr/share/zoneinfo/ZONE` read-only at `/etc/localtime`;
//!   `Timezone=local` binds the file the host's `/etc/localtime` points to.
//!   A zone the host does not have fails the start.
//! - `EnvironmentHost=yes` passes the shim's environment, but for the
//!   variables that describe the shim's own link to systemd
//!   ([`SHIM_ONLY_VARIABLES`]); `HttpProxy=` (default yes, as Podman) passes
//!   only its proxy variables. Both come first, so the image's settings
//!   are overridden by them (as with Podman), and the unit's
//!   `EnvironmentFile=` and `Environment=` override them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use bollard::models::{DeviceMapping, HostConfig, ResourcesUlimits};
use flotilla_proto::container::inherit::PROXY_VARIABLES;
use flotilla_proto::container::{ContainerSpec, Seccomp, Timezone};

use super::runtime::CreateConfig;

/// Where the host keeps its time zones.
pub const ZONEINFO: &str = "/usr/share/zoneinfo";

/// The host's own time zone.
pub const LOCALTIME: &str = "/etc/localtime";

/// Variables of the shim's environment that `EnvironmentHost=` does not
/// pass: they describe the shim's own link to systemd and Docker, and
/// would mislead a program in the container.
pub const SHIM_ONLY_VARIABLES: [&str; 10] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "MANAGERPID",
    "SYSTEMD_EXEC_PID",
    "JOURNAL_STREAM",
    "DOCKER_HOST",
];

/// The part of Docker's `HostConfig` that the keys of
/// `flotilla_proto::container::{host, security}` make.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostSettings {
    pub devices: Vec<DeviceMap>,
    /// `(resource, soft, hard)`; -1 is unlimited.
    pub ulimits: Vec<(String, i64, i64)>,
    pub shm_size: Option<i64>,
    pub sysctls: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub group_add: Vec<String>,
    /// Docker's `--security-opt` values.
    pub security_opt: Vec<String>,
    /// `host`, or `None` for the daemon's default.
    pub userns_mode: Option<String>,
    /// No masked or read-only paths in `/proc` and `/sys` (what the docker
    /// CLI's `--security-opt systempaths=unconfined` sends: the engine
    /// does not take that option itself).
    pub unmask_all: bool,
}

/// A device node of the host in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMap {
    pub host: String,
    pub container: String,
    pub permissions: String,
}

/// Why the host could not give the container what its unit asks.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot read the seccomp profile {path} (SeccompProfile=): {source}")]
    Seccomp {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("time zone {zone} (Timezone=): {path} is not on this host: {source}")]
    Timezone {
        zone: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the settings need from the host, read by [`read_host`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// The shim's environment, as `EnvironmentHost=` and `HttpProxy=` pass
    /// it.
    pub env: Vec<(String, String)>,
    /// The `SeccompProfile=` file's text.
    pub seccomp: Option<String>,
    /// Optional `AddDevice=` devices (`-/dev/x`) this host does not have.
    pub absent_devices: Vec<String>,
    /// The file bound at `/etc/localtime` for `Timezone=`.
    pub localtime: Option<PathBuf>,
}

/// Reads what `spec`'s settings need from this host.
pub fn read_host(spec: &ContainerSpec) -> Result<HostFacts, HostError> {
    read_host_at(spec, Path::new(ZONEINFO), Path::new(LOCALTIME))
}

fn read_host_at(
    spec: &ContainerSpec,
    zoneinfo: &Path,
    localtime: &Path,
) -> Result<HostFacts, HostError> {
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let seccomp = match &spec.security.seccomp {
        Some(Seccomp::Path(path)) => {
            Some(
                std::fs::read_to_string(path).map_err(|source| HostError::Seccomp {
                    path: PathBuf::from(path),
                    source,
                })?,
            )
        }
        Some(Seccomp::Unconfined) | None => None,
    };
    let absent_devices = spec
        .host
        .devices
        .iter()
        .filter(|d| d.optional && !Path::new(&d.host).exists())
        .map(|d| d.host.clone())
        .collect();
    let localtime = match &spec.inherit.timezone {
        None => None,
        Some(tz) => {
            let (zone, path) = match tz {
                Timezone::Local => ("local", localtime.to_owned()),
                Timezone::Zone(zone) => (zone.as_str(), zoneinfo.join(zone)),
            };
            // The file itself: Docker binds what a symlink points to anyway,
            // and a missing zone is named here rather than by Docker.
            let file = std::fs::canonicalize(&path)
                .and_then(|f| {
                    if f.is_file() {
                        Ok(f)
                    } else {
                        Err(std::io::Error::other("not a file"))
                    }
                })
                .map_err(|source| HostError::Timezone {
                    zone: zone.to_owned(),
                    path,
                    source,
                })?;
            Some(file)
        }
    };
    Ok(HostFacts {
        env,
        seccomp,
        absent_devices,
        localtime,
    })
}

/// Fills `config` (made by `super::config::create_config`) with `spec`'s
/// host settings, security options and what it takes from the host.
pub fn apply(spec: &ContainerSpec, facts: &HostFacts, config: &mut CreateConfig) {
    let host = &spec.host;
    let security = &spec.security;
    let mut security_opt = Vec::new();
    if security.no_new_privileges {
        security_opt.push("no-new-privileges:true".to_owned());
    }
    match (&security.seccomp, &facts.seccomp) {
        (Some(Seccomp::Unconfined), _) => security_opt.push("seccomp=unconfined".to_owned()),
        (Some(Seccomp::Path(_)), Some(profile)) => security_opt.push(format!("seccomp={profile}")),
        _ => {}
    }
    if let Some(profile) = &security.apparmor {
        security_opt.push(format!("apparmor={profile}"));
    }
    if security.label_disable {
        security_opt.push("label=disable".to_owned());
    }
    for (part, value) in [
        ("type", &security.label_type),
        ("level", &security.label_level),
        ("filetype", &security.label_file_type),
    ] {
        if let Some(value) = value {
            security_opt.push(format!("label={part}:{value}"));
        }
    }
    config.host = HostSettings {
        devices: host
            .devices
            .iter()
            .filter(|d| !facts.absent_devices.contains(&d.host))
            .map(|d| DeviceMap {
                host: d.host.clone(),
                container: d.container.clone().unwrap_or_else(|| d.host.clone()),
                permissions: d.permissions.clone().unwrap_or_else(|| "rwm".to_owned()),
            })
            .collect(),
        ulimits: host
            .ulimits
            .iter()
            .map(|u| (u.name.clone(), u.soft, u.hard))
            .collect(),
        shm_size: host.shm_size.and_then(|s| i64::try_from(s).ok()),
        sysctls: host.sysctls.clone(),
        annotations: host.annotations.clone(),
        group_add: security.group_add.clone(),
        security_opt,
        userns_mode: security.userns_host.then(|| "host".to_owned()),
        unmask_all: security.unmask_all,
    };
    if let (Some(user), Some(group)) = (&config.user, &security.group) {
        config.user = Some(format!("{user}:{group}"));
    }
    // First, so that the unit's own variables win.
    let mut env: Vec<String> = inherited_env(spec, &facts.env);
    if let Some(file) = &facts.localtime {
        if let Some(Timezone::Zone(zone)) = &spec.inherit.timezone {
            env.push(format!("TZ={zone}"));
        }
        config
            .binds
            .push(format!("{}:{LOCALTIME}:ro", file.display()));
    }
    env.append(&mut config.env);
    config.env = env;
}

/// The shim's variables the container gets: all but [`SHIM_ONLY_VARIABLES`]
/// with `EnvironmentHost=yes`, else the proxy variables unless
/// `HttpProxy=no`.
fn inherited_env(spec: &ContainerSpec, env: &[(String, String)]) -> Vec<String> {
    let pass = |name: &str| {
        if spec.inherit.environment_host {
            !SHIM_ONLY_VARIABLES.contains(&name)
        } else {
            spec.inherit.http_proxy && PROXY_VARIABLES.contains(&name)
        }
    };
    env.iter()
        .filter(|(k, _)| pass(k))
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

/// The first version of Docker's API (Docker 24) that takes annotations.
pub const ANNOTATIONS_API: (usize, usize) = (1, 43);

/// Refuses settings that an engine speaking API `api` would silently drop.
pub fn check_engine(h: &HostSettings, api: (usize, usize)) -> Result<(), String> {
    if !h.annotations.is_empty() && api < ANNOTATIONS_API {
        return Err(format!(
            "Annotation= needs Docker 24 or later (API {}.{}), and this engine speaks API {}.{}, which would drop the annotations",
            ANNOTATIONS_API.0, ANNOTATIONS_API.1, api.0, api.1
        ));
    }
    Ok(())
}

/// Docker's `HostConfig` with these settings, the rest at its default.
pub(super) fn docker_host_config(h: &HostSettings) -> HostConfig {
    let map = |m: &BTreeMap<String, String>| -> Option<HashMap<String, String>> {
        (!m.is_empty()).then(|| m.clone().into_iter().collect())
    };
    HostConfig {
        devices: (!h.devices.is_empty()).then(|| {
            h.devices
                .iter()
                .map(|d| DeviceMapping {
                    path_on_host: Some(d.host.clone()),
                    path_in_container: Some(d.container.clone()),
                    cgroup_permissions: Some(d.permissions.clone()),
                })
                .collect()
        }),
        ulimits: (!h.ulimits.is_empty()).then(|| {
            h.ulimits
                .iter()
                .map(|(name, soft, hard)| ResourcesUlimits {
                    name: Some(name.clone()),
                    soft: Some(*soft),
                    hard: Some(*hard),
                })
                .collect()
        }),
        shm_size: h.shm_size,
        sysctls: map(&h.sysctls),
        annotations: map(&h.annotations),
        group_add: (!h.group_add.is_empty()).then(|| h.group_add.clone()),
        security_opt: (!h.security_opt.is_empty()).then(|| h.security_opt.clone()),
        userns_mode: h.userns_mode.clone(),
        masked_paths: h.unmask_all.then(Vec::new),
        readonly_paths: h.unmask_all.then(Vec::new),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use flotilla_proto::UnitName;

    use super::*;
    use crate::container::config::{create_config, parse_spec};

    fn spec(section: &str) -> ContainerSpec {
        let unit = UnitName::parse("web.service").unwrap();
        let text = format!("[X-Container]\nImage=local/busybox:latest\n{section}\n");
        parse_spec(&unit, Path::new("/run/systemd/system/web.service"), &text).unwrap()
    }

    fn config(spec: &ContainerSpec, facts: &HostFacts) -> CreateConfig {
        let unit = UnitName::parse("web.service").unwrap();
        let mut c = create_config(spec, &unit, vec!["F=file".into()], "/x".into(), None);
        apply(spec, facts, &mut c);
        c
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn every_setting_reaches_the_container() {
        let s = spec(
            "User=app\nGroup=staff\nGroupAdd=audio 44\nAddDevice=/dev/fuse\nAddDevice=-/dev/gone:/dev/g\n\
             AddDevice=/dev/sdc:/dev/xvdc:r\nUlimit=nofile=10:20\nShmSize=1m\nSysctl=net.core.somaxconn=1024\n\
             Annotation=a=b\nNoNewPrivileges=yes\nSeccompProfile=/etc/s.json\nAppArmor=unconfined\n\
             SecurityLabelDisable=yes\nSecurityLabelType=spc_t\nSecurityLabelLevel=s0:c1,c2\n\
             SecurityLabelFileType=usr_t\nUnmask=ALL\nUserNS=host\nTimezone=Europe/Paris\nEnvironment=A=unit",
        );
        let facts = HostFacts {
            env: env(&[("PATH", "/bin"), ("https_proxy", "http://p:3128")]),
            seccomp: Some("{}".to_owned()),
            absent_devices: vec!["/dev/gone".to_owned()],
            localtime: Some(PathBuf::from("/usr/share/zoneinfo/Europe/Paris")),
        };
        let c = config(&s, &facts);
        assert_eq!(c.user.as_deref(), Some("app:staff"));
        let h = &c.host;
        assert_eq!(
            h.devices,
            [
                DeviceMap {
                    host: "/dev/fuse".into(),
                    container: "/dev/fuse".into(),
                    permissions: "rwm".into()
                },
                DeviceMap {
                    host: "/dev/sdc".into(),
                    container: "/dev/xvdc".into(),
                    permissions: "r".into()
                }
            ]
        );
        assert_eq!(h.ulimits, [("nofile".to_owned(), 10, 20)]);
        assert_eq!(h.shm_size, Some(1 << 20));
        assert_eq!(h.sysctls["net.core.somaxconn"], "1024");
        assert_eq!(h.annotations["a"], "b");
        assert_eq!(h.group_add, ["audio", "44"]);
        assert_eq!(
            h.security_opt,
            [
                "no-new-privileges:true",
                "seccomp={}",
                "apparmor=unconfined",
                "label=disable",
                "label=type:spc_t",
                "label=level:s0:c1,c2",
                "label=filetype:usr_t",
            ]
        );
        assert_eq!(h.userns_mode.as_deref(), Some("host"));
        // Proxies (HttpProxy= defaults to yes), the zone, then the unit's.
        assert_eq!(
            c.env,
            [
                "https_proxy=http://p:3128",
                "TZ=Europe/Paris",
                "F=file",
                "A=unit"
            ]
        );
        assert_eq!(
            c.binds,
            ["/usr/share/zoneinfo/Europe/Paris:/etc/localtime:ro"]
        );
        let d = docker_host_config(h);
        assert_eq!(d.devices.unwrap().len(), 2);
        assert_eq!(d.ulimits.unwrap()[0].hard, Some(20));
        assert_eq!(d.shm_size, Some(1 << 20));
        assert_eq!(d.annotations.unwrap()["a"], "b");
        assert_eq!(d.userns_mode.as_deref(), Some("host"));
        assert_eq!(d.security_opt.unwrap().len(), 7);
        assert_eq!(d.masked_paths, Some(vec![]));
        assert_eq!(d.readonly_paths, Some(vec![]));
    }

    #[test]
    fn annotations_need_an_engine_that_keeps_them() {
        let c = config(&spec("Annotation=a=b"), &HostFacts::default());
        assert!(check_engine(&c.host, (1, 43)).is_ok());
        let err = check_engine(&c.host, (1, 41)).unwrap_err();
        assert!(err.starts_with("Annotation= needs Docker 24"), "{err}");
        let c = config(&spec(""), &HostFacts::default());
        assert!(check_engine(&c.host, (1, 41)).is_ok());
    }

    #[test]
    fn nothing_asked_changes_nothing() {
        let s = spec("HttpProxy=no");
        let facts = HostFacts {
            env: env(&[("HTTP_PROXY", "x")]),
            ..Default::default()
        };
        let c = config(&s, &facts);
        assert_eq!(c.host, HostSettings::default());
        assert_eq!(c.env, ["F=file"]);
        assert!(c.binds.is_empty());
        let d = docker_host_config(&c.host);
        assert!(d.devices.is_none() && d.security_opt.is_none() && d.sysctls.is_none());
        assert!(d.masked_paths.is_none() && d.readonly_paths.is_none());
    }

    #[test]
    fn the_host_environment_leaves_out_the_shims_own_variables() {
        let s = spec("EnvironmentHost=yes\nTimezone=local");
        let facts = HostFacts {
            env: env(&[
                ("PATH", "/usr/bin"),
                ("NOTIFY_SOCKET", "/run/systemd/notify"),
                ("WATCHDOG_USEC", "1"),
                ("LANG", "C.UTF-8"),
            ]),
            localtime: Some(PathBuf::from("/usr/share/zoneinfo/Etc/UTC")),
            ..Default::default()
        };
        let c = config(&s, &facts);
        // Timezone=local binds the host's zone without TZ.
        assert_eq!(c.env, ["PATH=/usr/bin", "LANG=C.UTF-8", "F=file"]);
        assert_eq!(c.binds, ["/usr/share/zoneinfo/Etc/UTC:/etc/localtime:ro"]);
    }

    #[test]
    fn the_host_is_read_for_zones_profiles_and_devices() {
        let dir = tempfile::tempdir().unwrap();
        let zones = dir.path().join("zoneinfo");
        std::fs::create_dir_all(zones.join("Europe")).unwrap();
        std::fs::write(zones.join("Europe/Paris"), "TZif").unwrap();
        let local = dir.path().join("localtime");
        std::os::unix::fs::symlink(zones.join("Europe/Paris"), &local).unwrap();
        let profile = dir.path().join("seccomp.json");
        std::fs::write(&profile, "{\"defaultAction\":\"SCMP_ACT_ALLOW\"}").unwrap();
        let s = spec(&format!(
            "Timezone=Europe/Paris\nSeccompProfile={}\nAddDevice=-/dev/null\nAddDevice=-/dev/no-such-device",
            profile.display()
        ));
        let facts = read_host_at(&s, &zones, &local).unwrap();
        assert_eq!(
            facts.localtime,
            Some(zones.join("Europe/Paris").canonicalize().unwrap())
        );
        assert_eq!(
            facts.seccomp.as_deref(),
            Some("{\"defaultAction\":\"SCMP_ACT_ALLOW\"}")
        );
        assert_eq!(facts.absent_devices, ["/dev/no-such-device"]);
        let facts = read_host_at(&spec("Timezone=local"), &zones, &local).unwrap();
        assert_eq!(
            facts.localtime,
            Some(zones.join("Europe/Paris").canonicalize().unwrap())
        );
        let err = read_host_at(&spec("Timezone=Mars/Olympus"), &zones, &local).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("time zone Mars/Olympus (Timezone=)"),
            "{err}"
        );
        // A directory is not a zone.
        assert!(read_host_at(&spec("Timezone=Europe"), &zones, &local).is_err());
        let err = read_host_at(&spec("SeccompProfile=/no/such.json"), &zones, &local).unwrap_err();
        assert!(err.to_string().contains("/no/such.json"), "{err}");
    }
}
