//! From the rendered unit file to the container Docker creates.
//!
//! The shim reads its settings from the unit file systemd runs, so that the
//! file on the host is the one source of truth: [`read_spec`] reads the
//! `[X-Container]` section with proto's own `[Container]` parser, and
//! [`create_config`] turns the [`ContainerSpec`] into Docker's terms.

use std::path::{Path, PathBuf};

use flotilla_proto::UnitName;
use flotilla_proto::container::{
    ContainerSpec, HealthCmd, PortMapping, Protocol, SECTION, VolumeSource,
};
use flotilla_proto::diagnostic::Diagnostics;
use flotilla_proto::unit_file::{Section, UnitFile};

use super::render::RENDERED_SECTION;
use super::runtime::{CreateConfig, HealthConfig, PortBinding};

/// The label that marks a container as the one of a unit: its value is the
/// unit's name. The shim replaces and the cleanup removes only a container
/// with this label.
pub const UNIT_LABEL: &str = "flotilla.unit";

/// Where the shim's notify socket is mounted in a container of a
/// `Notify=yes` unit; `NOTIFY_SOCKET` points there.
pub const CONTAINER_NOTIFY_DIR: &str = "/run/flotilla";
/// The socket's file name, in [`CONTAINER_NOTIFY_DIR`] and on the host.
pub const NOTIFY_SOCKET_NAME: &str = "notify";

/// Why a unit's container settings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the unit file {path}: {source}")]
    ReadUnit {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} has no [{RENDERED_SECTION}] section: it is not a container unit rendered by flotilla"
    )]
    NotAContainer { path: PathBuf },
    #[error("{path}: {}", .problems.join("; "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
    #[error("cannot read the environment file {path}: {source}")]
    EnvironmentFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The unit file of `unit` in `dir`: its own, or its template's for an
/// instance (`web@1.service` runs from `web@.service`).
pub fn unit_file_path(dir: &Path, unit: &UnitName) -> PathBuf {
    let own = dir.join(unit.as_str());
    if !own.exists()
        && let Some(template) = unit.template()
    {
        let template = dir.join(template.as_str());
        if template.exists() {
            return template;
        }
    }
    own
}

/// Reads the container settings of `unit` from its rendered unit file.
pub fn read_spec(unit: &UnitName, path: &Path) -> Result<ContainerSpec, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadUnit {
        path: path.to_owned(),
        source,
    })?;
    parse_spec(unit, path, &text)
}

/// [`read_spec`] on text. Only `[X-Container]` is read (as `[Container]`):
/// the rest of the unit is systemd's, and was checked before rendering.
pub fn parse_spec(unit: &UnitName, path: &Path, text: &str) -> Result<ContainerSpec, ConfigError> {
    let (file, syntax) = UnitFile::parse(text);
    let sections: Vec<Section> = file
        .sections
        .into_iter()
        .filter(|s| s.name == RENDERED_SECTION)
        .map(|s| Section {
            name: SECTION.to_owned(),
            ..s
        })
        .collect();
    if sections.is_empty() {
        return Err(ConfigError::NotAContainer {
            path: path.to_owned(),
        });
    }
    let only = UnitFile { sections };
    let mut diags = Diagnostics::new();
    diags.extend(syntax);
    let spec = ContainerSpec::from_unit_file(unit, &only, &mut diags);
    let problems: Vec<String> = diags
        .into_sorted()
        .into_iter()
        .filter(|d| d.is_error())
        .map(|d| d.to_string().replace("[Container]", "[X-Container]"))
        .collect();
    match spec {
        Some(spec) if problems.is_empty() => Ok(spec),
        _ => Err(ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        }),
    }
}

/// Reads `EnvironmentFile=` files as Docker's `--env-file` does: one
/// `NAME=value` per line taken as is, `#` comments and blank lines skipped,
/// and a bare `NAME` taken from the shim's own environment when set there;
/// then the variables the unit takes from the service's environment (the
/// shim's), `Environment=NAME`.
pub fn read_environment_files(spec: &ContainerSpec) -> Result<Vec<String>, ConfigError> {
    let mut env = Vec::new();
    for path in &spec.environment_files {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::EnvironmentFile {
                path: PathBuf::from(path),
                source,
            })?;
        env.extend(parse_env_file(&text, |name| std::env::var(name).ok()));
    }
    // `Environment=NAME`: the service's own variable, which is the shim's.
    env.extend(spec.from_service.resolve(|name| std::env::var(name).ok()));
    Ok(env)
}

fn parse_env_file(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let mut env = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.contains('=') {
            env.push(line.to_owned());
        } else if let Some(value) = lookup(line.trim_end()) {
            env.push(format!("{}={value}", line.trim_end()));
        }
    }
    env
}

/// Docker's health check for the spec: `None` when the unit sets nothing
/// about it (the image's check, if any, applies as it is).
fn health(spec: &ContainerSpec) -> Option<HealthConfig> {
    let test = match &spec.health_cmd {
        None => Vec::new(),
        Some(HealthCmd::None) => vec!["NONE".to_owned()],
        Some(HealthCmd::Shell(cmd)) => vec!["CMD-SHELL".to_owned(), cmd.clone()],
        Some(HealthCmd::Exec(argv)) => std::iter::once("CMD".to_owned())
            .chain(argv.iter().cloned())
            .collect(),
    };
    let tuned = spec.health_interval.is_some()
        || spec.health_timeout.is_some()
        || spec.health_start_period.is_some()
        || spec.health_retries.is_some();
    (!test.is_empty() || tuned).then_some(HealthConfig {
        test,
        interval: spec.health_interval,
        timeout: spec.health_timeout,
        start_period: spec.health_start_period,
        retries: spec.health_retries,
    })
}

fn protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

fn ports(mapping: &PortMapping) -> Vec<PortBinding> {
    let host_ip = mapping.host_ip.map(|ip| ip.to_string()).unwrap_or_default();
    (mapping.container_port.start..=mapping.container_port.end)
        .enumerate()
        .map(|(i, port)| PortBinding {
            container_port: format!("{port}/{}", protocol(mapping.protocol)),
            host_ip: host_ip.clone(),
            host_port: mapping
                .host_port
                .map(|h| {
                    // A single host port for a range: Docker picks within it.
                    if h.start == h.end {
                        h.start.to_string()
                    } else {
                        (u32::from(h.start) + u32::try_from(i).unwrap_or(0)).to_string()
                    }
                })
                .unwrap_or_default(),
        })
        .collect()
}

/// The container to create for `unit`: `env_files` is what
/// [`read_environment_files`] read, `cgroup_parent` where the container's
/// cgroup goes, and `notify_dir` the host directory of the shim's notify
/// socket for a `Notify=yes` unit.
pub fn create_config(
    spec: &ContainerSpec,
    unit: &UnitName,
    env_files: Vec<String>,
    cgroup_parent: String,
    notify_dir: Option<&Path>,
) -> CreateConfig {
    let mut env = env_files;
    env.extend(spec.environment.iter().map(|(k, v)| format!("{k}={v}")));
    let mut binds = Vec::new();
    let mut anonymous_volumes = Vec::new();
    for v in &spec.volumes {
        let source = match &v.source {
            Some(VolumeSource::Path(p) | VolumeSource::Named(p)) => p,
            None => {
                anonymous_volumes.push(v.target.clone());
                continue;
            }
        };
        let mut bind = format!("{source}:{}", v.target);
        if !v.options.is_empty() {
            bind.push(':');
            bind.push_str(&v.options.join(","));
        }
        binds.push(bind);
    }
    binds.extend(super::secrets::binds(spec, unit));
    if let Some(dir) = notify_dir {
        binds.push(format!("{}:{CONTAINER_NOTIFY_DIR}", dir.display()));
        env.push(format!(
            "NOTIFY_SOCKET={CONTAINER_NOTIFY_DIR}/{NOTIFY_SOCKET_NAME}"
        ));
    }
    let mut labels = spec.labels.clone();
    labels.insert(UNIT_LABEL.to_owned(), unit.as_str().to_owned());
    CreateConfig {
        name: spec.container_name.clone(),
        image: spec.image.clone(),
        cmd: spec.exec.clone(),
        entrypoint: spec.entrypoint.clone(),
        env,
        labels,
        user: spec.user.clone(),
        working_dir: spec.working_dir.clone(),
        ports: spec.publish_ports.iter().flat_map(ports).collect(),
        binds,
        anonymous_volumes,
        health: health(spec),
        stop_signal: spec.stop_signal.map(|s| s.to_string()),
        stop_timeout: spec.stop_timeout,
        read_only: spec.read_only,
        init: spec.init,
        cap_add: spec.add_capabilities.clone(),
        cap_drop: spec.drop_capabilities.clone(),
        cgroup_parent,
        host: Default::default(),
        attach: super::network::attach_config(spec),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn spec(section: &str) -> ContainerSpec {
        let unit = UnitName::parse("web.service").unwrap();
        let text = format!(
            "[Unit]\nDescription=x\n[X-Container]\n{section}\n[Service]\nExecStart=/x shim run\nType=notify\n"
        );
        parse_spec(&unit, Path::new("/run/systemd/system/web.service"), &text).unwrap()
    }

    #[test]
    fn the_rendered_section_is_read_with_protos_parser() {
        let s = spec(
            "Image=local/busybox:latest\nExec=sleep 100\nHealthCmd=true\nHealthInterval=1s\nStopTimeout=3s\nNotify=healthy",
        );
        assert_eq!(s.image, "local/busybox:latest");
        assert_eq!(s.exec, ["sleep", "100"]);
        assert_eq!(s.container_name, "flotilla-web");
        assert_eq!(s.stop_timeout, Duration::from_secs(3));
        // [Service] ExecStart= of the rendered unit is not held against it.
    }

    #[test]
    fn a_bad_section_names_the_file_and_line() {
        let unit = UnitName::parse("web.service").unwrap();
        let path = Path::new("/run/systemd/system/web.service");
        let err = parse_spec(&unit, path, "[X-Container]\nImage=Bad\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("/run/systemd/system/web.service: line 2: error: [X-Container] Image"),
            "{text}"
        );
        let err = parse_spec(&unit, path, "[Service]\nExecStart=/bin/true\n").unwrap_err();
        assert!(matches!(err, ConfigError::NotAContainer { .. }), "{err}");
    }

    #[test]
    fn an_instance_runs_from_its_template_file() {
        let dir = tempfile::tempdir().unwrap();
        let unit = UnitName::parse("web@1.service").unwrap();
        assert_eq!(
            unit_file_path(dir.path(), &unit),
            dir.path().join("web@1.service")
        );
        std::fs::write(dir.path().join("web@.service"), "").unwrap();
        assert_eq!(
            unit_file_path(dir.path(), &unit),
            dir.path().join("web@.service")
        );
        std::fs::write(dir.path().join("web@1.service"), "").unwrap();
        assert_eq!(
            unit_file_path(dir.path(), &unit),
            dir.path().join("web@1.service")
        );
    }

    #[test]
    fn environment_files_read_as_dockers_env_files() {
        let env = parse_env_file("# c\n\nA=1\n  B = 2\nHOME\nMISSING\n", |n| {
            (n == "HOME").then(|| "/root".to_owned())
        });
        assert_eq!(env, ["A=1", "B = 2", "HOME=/root"]);
    }

    #[test]
    fn the_container_is_created_as_the_unit_asks() {
        let s = spec(
            "Image=local/busybox:latest\nExec=httpd -f\nEnvironment=A=1 B=2\nLabel=team=web\n\
             PublishPort=127.0.0.1:8000-8001:80-81\nPublishPort=53/udp\nVolume=/srv:/srv:ro\nVolume=data:/data\nVolume=/cache\n\
             HealthCmd=[\"wget\", \"-q\", \"localhost\"]\nHealthRetries=2\nStopSignal=INT\nStopTimeout=7s\n\
             ReadOnly=yes\nRunInit=yes\nAddCapability=NET_ADMIN\nDropCapability=all\nEntrypoint=[]",
        );
        let unit = UnitName::parse("web.service").unwrap();
        let c = create_config(
            &s,
            &unit,
            vec!["A=0".into(), "F=1".into()],
            "/system.slice/web.service".into(),
            Some(Path::new("/run/flotilla/shim/web.service")),
        );
        assert_eq!(c.name, "flotilla-web");
        assert_eq!(c.cmd, ["httpd", "-f"]);
        assert_eq!(c.entrypoint, Some(vec![]));
        // The unit's own Environment= comes after the files: it wins.
        assert_eq!(
            c.env,
            [
                "A=0",
                "F=1",
                "A=1",
                "B=2",
                "NOTIFY_SOCKET=/run/flotilla/notify"
            ]
        );
        assert_eq!(c.labels["team"], "web");
        assert_eq!(c.labels[UNIT_LABEL], "web.service");
        let ports: Vec<_> = c
            .ports
            .iter()
            .map(|p| format!("{} {} {}", p.host_ip, p.host_port, p.container_port))
            .collect();
        assert_eq!(
            ports,
            ["127.0.0.1 8000 80/tcp", "127.0.0.1 8001 81/tcp", "  53/udp"]
        );
        assert_eq!(
            c.binds,
            [
                "/srv:/srv:ro",
                "data:/data",
                "/run/flotilla/shim/web.service:/run/flotilla"
            ]
        );
        assert_eq!(c.anonymous_volumes, ["/cache"]);
        let h = c.health.unwrap();
        assert_eq!(h.test, ["CMD", "wget", "-q", "localhost"]);
        assert_eq!(h.retries, Some(2));
        assert_eq!(c.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(c.stop_timeout, Duration::from_secs(7));
        assert!(c.read_only && c.init);
        assert_eq!(c.cap_add, ["CAP_NET_ADMIN"]);
        assert_eq!(c.cap_drop, ["ALL"]);
        assert_eq!(c.cgroup_parent, "/system.slice/web.service");
    }

    #[test]
    fn health_settings_map_to_dockers() {
        assert_eq!(health(&spec("Image=a")), None);
        assert_eq!(
            health(&spec("Image=a\nHealthCmd=none")).unwrap().test,
            ["NONE"]
        );
        assert_eq!(
            health(&spec("Image=a\nHealthCmd=test -e /ok"))
                .unwrap()
                .test,
            ["CMD-SHELL", "test -e /ok"]
        );
        // Tuning alone keeps the image's check.
        let tuned = health(&spec("Image=a\nHealthInterval=2s")).unwrap();
        assert!(tuned.test.is_empty());
        assert_eq!(tuned.interval, Some(Duration::from_secs(2)));
    }
}
