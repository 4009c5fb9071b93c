//! The `[Container]` section of container units.
//!
//! A `.service` unit with a `[Container]` section runs a Docker container
//! as the service itself: flotilla renders the unit with `flotilla shim` as
//! its main process (`Type=notify`, `Delegate=yes`), and the shim creates the
//! container inside the unit's cgroup, hands systemd the container's main
//! process, streams its output to the journal, and removes it when the unit
//! stops. [`ContainerSpec`] is what the section asks for, checked and typed,
//! ready for the shim to use.
//!
//! Key names and syntax follow Podman Quadlet's `[Container]` section
//! (podman-systemd.unit(5)), so that Quadlet units port with few changes:
//!
//! | key | value | repeatable |
//! |---|---|---|
//! | `Image=` (required) | an image reference, `docker.io/library/nginx:1.27`, `app@sha256:…` | |
//! | `Exec=` | arguments after the image, with systemd command-line quoting; `$` substituted as in `ExecStart=` ([`exec_env`]) | |
//! | `Entrypoint=` | a program, or a JSON array `["/bin/sh", "-c"]` (`[]` or an empty `Entrypoint=` clears the image's, as in Quadlet) | |
//! | `Environment=` | `NAME=value` words, quoted as in systemd: `Environment="A=b c" D=e`; a bare `NAME` passes the service's own variable | yes |
//! | `EnvironmentFile=` | absolute paths on the host, several per line | yes |
//! | `PublishPort=` | `[[IP:][HOST-PORT]:]CONTAINER-PORT[/tcp\|udp\|sctp]`, ports or ranges `8000-8009`; an empty IP (`:80:92`) is every address | yes |
//! | `Volume=` | `[SOURCE:]CONTAINER-DIR[:OPTIONS]`; SOURCE an absolute host path or a volume name | yes |
//! | `User=` | `user[:group]`, names or numbers | |
//! | `WorkingDir=` | an absolute path in the container | |
//! | `ContainerName=` | a Docker container name; default `flotilla-` and the unit name without its suffix | |
//! | `Label=` | `key=value` words, as `Environment=`; a bare `key` has an empty value | yes |
//! | `HealthCmd=` | a shell command, a JSON array (exec form), or `none` to disable the image's check | |
//! | `HealthInterval=`, `HealthTimeout=`, `HealthStartPeriod=` | time spans (`30s`, `1min 30s`), at least 1ms | |
//! | `HealthRetries=` | a positive whole number | |
//! | `HealthOnFailure=` | `none` (default), `kill`, `restart` or `stop` | |
//! | `Notify=` | `no` (default: ready when the container runs), `yes` (the container notifies), `healthy` | |
//! | `StopSignal=` | `SIGTERM`, `TERM`, `15`, `SIGRTMIN+3`…; kept as the signal's name | |
//! | `StopTimeout=` | a time span in whole seconds; default 10s, as Docker | |
//! | `ReadOnly=`, `RunInit=` (also `Init=`) | booleans | |
//! | `AddCapability=`, `DropCapability=` | capabilities, with or without `CAP_`, any case, or `ALL` | yes |
//! | `Pull=` | `missing` (default), `always`, `never` or `newer` | |
//! | `AuthFile=` (flotilla's) | an absolute path on the host to a file in Docker's `config.json` format | |
//! | `AutoUpdate=` | `registry`: restart the unit when the registry has a newer image | |
//! | `Secret=` | `NAME[,type=mount\|env][,target=…][,uid=…][,gid=…][,mode=…]`: a secret of the cluster, as a file or a variable ([`secret`]) | yes |
//! | network keys (`Network=`, `NetworkAlias=`, `IP=`, `IP6=`, `HostName=`, `AddHost=`, `DNS=`, `DNSOption=`, `DNSSearch=`, `ExposeHostPort=`) | see `network` | most |
//! | `Mount=`, `Tmpfs=`, `ReadOnlyTmpfs=`, `VolatileTmp=` | see `mounts` | `Mount=`, `Tmpfs=` |
//!
//! As in systemd, the last assignment of a single-valued key wins, an empty
//! assignment resets a key to its default (but `Entrypoint=`, which clears
//! the image's, as in Quadlet), and an empty assignment of a repeatable key
//! empties the list so far. Single-valued keys are read as Quadlet's
//! `Lookup()` reads them: every `"` at either end is removed
//! (`Image="nginx"`), with a warning when they were not a pair. Stricter than systemd and Quadlet:
//! a bad value is an error, not skipped.
//!
//! Specifiers are expanded as the system manager expands them in a system
//! service (`specifiers`): those of the unit's name (`%n %N %p %i ...`) and
//! the manager's fixed directories and user (`%h` is `/root`, `%t` `/run`,
//! `%S` `/var/lib`, `%U` `0`...). Those naming the host the unit lands on
//! (`%H`, `%m`, `%b`...) are errors: flotilla reads a unit once for every
//! host. In a template (`web@.service`), values that use its instance are
//! checked when an instance is made from it.
//!
//! The unit as a whole must also fit what flotilla renders: only a
//! `.service` can have a `[Container]` section, and its `[Service]` section
//! must not set `ExecStart=` (the shim is the main process), a `Type=` other
//! than `notify`, `NotifyAccess=` other than `all` (the shim reports for the
//! container after handing it the main PID), `Delegate=no` (the container's
//! cgroup lives under the unit's), or `KillMode=` other than `control-group`
//! or `mixed` (so that stopping the unit stops every process of the
//! container; Quadlet has the same rule).
//!
//! Quadlet keys flotilla does not implement (`Pod=`, `Pull=`, ...) are
//! errors that say so, rather than unknown keys.
//!
//! The parts: [`keys`] lists the keys, `reader` reads the section in file
//! order, and each kind of value has its own module (ports, volumes, image
//! references, signals, capabilities, pulls); `service` checks the rest of the
//! unit.
//!
//! Keys that map to Docker's host settings, security options and reload
//! have modules of their own, each filling one field of the spec with a
//! type of its own: [`host`] (`AddDevice=`, `Ulimit=`, `ShmSize=`,
//! `Sysctl=`, `Annotation=`, `LogDriver=`), [`security`] (`Group=`,
//! `GroupAdd=`, `UserNS=`, `NoNewPrivileges=`, `SeccompProfile=`,
//! `AppArmor=`, `SecurityLabel*=`, `Unmask=`), [`inherit`] (`Timezone=`,
//! `EnvironmentHost=`, `HttpProxy=`) and [`reload`] (`ReloadCmd=`,
//! `ReloadSignal=`).
//!
//! [`object`] reads Quadlet's `.network` and `.volume` files, the Docker
//! networks and volumes that container units name.

mod attach;
mod capability;
pub mod exec_env;
mod from_service;
pub mod host;
mod image;
pub mod inherit;
pub mod keys;
pub mod keys_doc;
mod mounts;
mod network;
pub mod object;
mod ports;
mod pull;
mod reader;
pub mod reload;
pub mod secret;
pub mod security;
mod service;
mod signal;
mod specifiers;
mod volumes;

pub use attach::Attachments;
pub use from_service::FromService;
pub use host::{Device, HostOptions, Ulimit};
pub use inherit::{InheritOptions, Timezone};
pub use keys::KEYS;
pub use mounts::{
    MAX_MOUNTS, Mount, MountSpec, MountType, READ_ONLY_TMPFS, READ_ONLY_TMPFS_OPTIONS, Tmpfs,
    VOLATILE_TMP_OPTIONS,
};
pub use network::{
    EndpointOptions, ExposedPort, HostEntry, MAX_NETWORK_VALUES, Network, NetworkSpec,
};
pub use ports::{PortMapping, PortRange, Protocol};
pub use pull::{AutoUpdate, ImagePull, PullPolicy};
pub use reload::ReloadOptions;
pub use secret::{ContainerSecrets, SecretDelivery, SecretUse};
pub use security::{Seccomp, SecurityOptions};
pub use signal::{Signal, SignalError};
pub use volumes::{Volume, VolumeSource};

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::duration;
use crate::name::{UnitName, UnitType};
use crate::unit_file::UnitFile;

use reader::Reader;
use service::check_service;

/// The section this module reads.
pub const SECTION: &str = "Container";

/// Docker's default for [`ContainerSpec::stop_timeout`].
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The most `PublishPort=` mappings one container may have (each may be a
/// range of ports). Each is checked against those before it for a host
/// port published twice, so this bounds that work; real containers publish
/// a handful.
pub const MAX_PUBLISHED_PORTS: usize = 1024;

/// What a `[Container]` section asks for, checked, with specifiers expanded.
///
/// Serialised, fields at their default are left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// `Image=`: the image reference, as written. In a template whose
    /// `Image=` uses `%i`, the unexpanded value (each instance has its own).
    pub image: String,
    /// `Exec=`: arguments after the image (the image's `CMD` when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exec: Vec<String>,
    /// `Entrypoint=`: `None` keeps the image's; `Some(vec![])` clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `Environment=`: variables for the container; a later assignment of a
    /// name wins. They take precedence over `environment_files`, as in
    /// Docker.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    /// `EnvironmentFile=`: absolute paths on the host, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment_files: Vec<String>,
    /// `PublishPort=`: ports published on the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish_ports: Vec<PortMapping>,
    /// `Volume=`: volumes and bind mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// `User=`: `user[:group]` to run as in the container; `None` keeps the
    /// image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `WorkingDir=`: an absolute path in the container; `None` keeps the
    /// image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `ContainerName=`, or [`default_container_name`].
    pub container_name: String,
    /// `Label=`: labels on the container.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `HealthCmd=`: `None` keeps the image's health check, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_cmd: Option<HealthCmd>,
    /// `HealthInterval=`; `None` keeps the image's or Docker's (30s).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration::serde_timespan_option"
    )]
    pub health_interval: Option<Duration>,
    /// `HealthTimeout=`; `None` keeps the image's or Docker's (30s).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration::serde_timespan_option"
    )]
    pub health_timeout: Option<Duration>,
    /// `HealthRetries=`; `None` keeps the image's or Docker's (3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_retries: Option<u32>,
    /// `HealthStartPeriod=`; `None` keeps the image's or Docker's (0s).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration::serde_timespan_option"
    )]
    pub health_start_period: Option<Duration>,
    /// `HealthOnFailure=`: what to do when the container turns unhealthy.
    #[serde(default, skip_serializing_if = "is_default")]
    pub health_on_failure: HealthOnFailure,
    /// `Notify=`: when the unit is ready.
    #[serde(default, skip_serializing_if = "is_default")]
    pub notify: Notify,
    /// `StopSignal=`; `None` keeps the image's `STOPSIGNAL`, else SIGTERM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<Signal>,
    /// `StopTimeout=`: how long a stop waits before killing the container.
    /// Whole seconds (Docker counts it in seconds).
    #[serde(
        default = "default_stop_timeout",
        skip_serializing_if = "is_default_stop_timeout",
        with = "duration::serde_timespan"
    )]
    pub stop_timeout: Duration,
    /// `ReadOnly=`: mount the container's root filesystem read-only.
    #[serde(default, skip_serializing_if = "is_default")]
    pub read_only: bool,
    /// `AddCapability=`: `CAP_X` names, or `ALL`, without duplicates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_capabilities: Vec<String>,
    /// `DropCapability=`: `CAP_X` names, or `ALL`, without duplicates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop_capabilities: Vec<String>,
    /// `RunInit=` (or `Init=`): run an init process as the container's PID 1
    /// that forwards signals and reaps zombies (Docker's `--init`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub init: bool,
    /// `AddDevice=`, `Ulimit=`, `ShmSize=`, `Sysctl=`, `Annotation=`.
    #[serde(default, skip_serializing_if = "HostOptions::is_empty")]
    pub host: HostOptions,
    /// `Group=`, `GroupAdd=`, `UserNS=` and the security options.
    #[serde(default, skip_serializing_if = "SecurityOptions::is_empty")]
    pub security: SecurityOptions,
    /// `Timezone=`, `EnvironmentHost=`, `HttpProxy=`.
    #[serde(default, skip_serializing_if = "InheritOptions::is_default")]
    pub inherit: InheritOptions,
    /// `ReloadCmd=`, `ReloadSignal=`.
    #[serde(default, skip_serializing_if = "ReloadOptions::is_empty")]
    pub reload: ReloadOptions,
    /// `Pull=`, `AuthFile=` and `AutoUpdate=`: when the image is pulled,
    /// with which credentials.
    #[serde(default, skip_serializing_if = "ImagePull::is_default")]
    pub pull: ImagePull,
    /// `Secret=`: secrets given to the container (see [`secret`]).
    #[serde(default, skip_serializing_if = "ContainerSecrets::is_empty")]
    pub secrets: ContainerSecrets,
    /// The network keys (`Network=`, `HostName=`, `DNS=`...) and the mount
    /// keys beside `Volume=` (`Mount=`, `Tmpfs=`, `ReadOnlyTmpfs=`,
    /// `VolatileTmp=`).
    #[serde(default, skip_serializing_if = "Attachments::is_empty")]
    pub attach: Attachments,
    /// What the container takes from the service's environment
    /// (`Environment=NAME`).
    #[serde(default, skip_serializing_if = "FromService::is_empty")]
    pub from_service: FromService,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

fn default_stop_timeout() -> Duration {
    DEFAULT_STOP_TIMEOUT
}

fn is_default_stop_timeout(d: &Duration) -> bool {
    *d == DEFAULT_STOP_TIMEOUT
}

/// `HealthCmd=`: the command Docker runs in the container to check health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthCmd {
    /// `HealthCmd=none`: no health check, even if the image defines one
    /// (Docker's `["NONE"]`).
    None,
    /// A command run by the container's shell, `/bin/sh -c` (Docker's
    /// `CMD-SHELL`): any value that is not `none` or a JSON array.
    Shell(String),
    /// A program and its arguments, run without a shell (Docker's `CMD`):
    /// a JSON array such as `["curl", "-f", "http://localhost/"]`. Docker's
    /// own forms `["CMD", ...]`, `["CMD-SHELL", "..."]` and `["NONE"]` are
    /// understood too.
    Exec(Vec<String>),
}

/// `HealthOnFailure=`: what happens when the container turns unhealthy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthOnFailure {
    /// Nothing but reporting the health.
    #[default]
    None,
    /// Kill the container, so that the unit fails and systemd's `Restart=`
    /// applies.
    Kill,
    /// Restart the container.
    Restart,
    /// Stop the container.
    Stop,
}

impl HealthOnFailure {
    /// The value as written in the unit file.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthOnFailure::None => "none",
            HealthOnFailure::Kill => "kill",
            HealthOnFailure::Restart => "restart",
            HealthOnFailure::Stop => "stop",
        }
    }
}

/// `Notify=`: when the unit tells systemd it is ready.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Notify {
    /// `Notify=no` (the default): ready as soon as the container runs.
    #[default]
    Running,
    /// `Notify=yes`: the program in the container sends `READY=1` itself
    /// over the notify socket.
    Container,
    /// `Notify=healthy`: ready when the container's health check first
    /// passes. Needs `HealthCmd=`.
    Healthy,
}

/// The container name flotilla gives a unit's container when the unit sets
/// no `ContainerName=`: `flotilla-` and the unit name without its type
/// suffix, with the characters Docker does not allow in names (`@` and `:`)
/// replaced by `_`: `web.service` runs `flotilla-web`, `web@1.service` runs
/// `flotilla-web_1`.
pub fn default_container_name(name: &UnitName) -> String {
    let stem: String = name
        .stem()
        .chars()
        .map(|c| if is_name_char(c) { c } else { '_' })
        .collect();
    format!("flotilla-{stem}")
}

/// Characters Docker allows in container names after the first.
pub(super) fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

impl ContainerSpec {
    /// Reads the `[Container]` section of unit `name`, reporting every
    /// problem with it and with the parts of the unit that conflict with
    /// running it as a container. `None` when the unit has no `[Container]`
    /// section.
    pub fn from_unit_file(
        name: &UnitName,
        file: &UnitFile,
        diags: &mut Diagnostics,
    ) -> Option<Self> {
        let header = file.sections_named(SECTION).next()?;
        let header_line = Some(header.line).filter(|l| *l > 0);
        if name.unit_type() != UnitType::Service {
            diags.push(Diagnostic::error(
                header_line,
                format!(
                    "a [Container] section is only allowed in a .service unit, and {name} is a .{}: flotilla runs the container as a service",
                    name.unit_type()
                ),
            ));
        }
        let mut reader = Reader::new(name, diags);
        for v in file.entries(SECTION) {
            reader.entry(v);
        }
        let spec = reader.finish(header_line);
        check_service(file, &spec, diags);
        security::check(file, &spec, diags);
        reload::check(file, &spec, diags);
        Some(spec)
    }
}

/// Docker container names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub(super) fn check_container_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() >= 2
        && chars.all(is_name_char);
    if valid {
        Ok(())
    } else {
        Err(format!(
            "expected a Docker container name: at least two letters, digits, '_', '.' or '-', starting with a letter or digit, found {name:?}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unit_file::UnitFile;

    #[test]
    fn container_names() {
        let name = |n: &str| default_container_name(&UnitName::parse(n).unwrap());
        assert_eq!(name("web.service"), "flotilla-web");
        assert_eq!(name("web@1.service"), "flotilla-web_1");
        assert_eq!(name("a:b@c:d.service"), "flotilla-a_b_c_d");
        assert_eq!(name("web@.service"), "flotilla-web_");
        for n in ["web.service", "web@1.service", "a:b@c:d.service"] {
            assert_eq!(check_container_name(&name(n)), Ok(()));
        }
        assert!(check_container_name("a").is_err());
        assert!(check_container_name("_ab").is_err());
        assert!(check_container_name("a@b").is_err());
    }

    #[test]
    fn serde_round_trip() {
        let (file, diags) = UnitFile::parse(
            "[Container]\nImage=nginx\nStopSignal=INT\nStopTimeout=1min\nHealthCmd=[\"true\"]\nHealthInterval=2.5s\nPublishPort=[::]:80:80\nVolume=data:/data:ro\n",
        );
        assert!(diags.is_empty());
        let mut d = Diagnostics::new();
        let spec =
            ContainerSpec::from_unit_file(&UnitName::parse("web").unwrap(), &file, &mut d).unwrap();
        assert!(!d.has_errors(), "{:?}", d.into_sorted());
        let json = serde_json::to_string(&spec).unwrap();
        let back: ContainerSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
        let minimal: ContainerSpec =
            serde_json::from_str(r#"{"image":"nginx","container_name":"x1"}"#).unwrap();
        assert_eq!(minimal.stop_timeout, DEFAULT_STOP_TIMEOUT);
        assert_eq!(minimal.notify, Notify::Running);
    }
}
