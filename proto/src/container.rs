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
//! | `Exec=` | arguments after the image, with systemd command-line quoting | |
//! | `Entrypoint=` | a program, or a JSON array `["/bin/sh", "-c"]` (`[]` clears the image's) | |
//! | `Environment=` | `NAME=value` words, quoted as in systemd: `Environment="A=b c" D=e` | yes |
//! | `EnvironmentFile=` | absolute paths on the host, several per line | yes |
//! | `PublishPort=` | `[[IP:][HOST-PORT]:]CONTAINER-PORT[/tcp\|udp\|sctp]`, ports or ranges `8000-8009` | yes |
//! | `Volume=` | `[SOURCE:]CONTAINER-DIR[:OPTIONS]`; SOURCE an absolute host path or a volume name | yes |
//! | `User=` | `user[:group]`, names or numbers | |
//! | `WorkingDir=` | an absolute path in the container | |
//! | `ContainerName=` | a Docker container name; default `flotilla-` and the unit name without its suffix | |
//! | `Label=` | `key=value` words, as `Environment=` | yes |
//! | `HealthCmd=` | a shell command, a JSON array (exec form), or `none` to disable the image's check | |
//! | `HealthInterval=`, `HealthTimeout=`, `HealthStartPeriod=` | time spans (`30s`, `1min 30s`), at least 1ms | |
//! | `HealthRetries=` | a positive whole number | |
//! | `HealthOnFailure=` | `none` (default), `kill`, `restart` or `stop` | |
//! | `Notify=` | `no` (default: ready when the container runs), `yes` (the container notifies), `healthy` | |
//! | `StopSignal=` | `SIGTERM`, `TERM`, `15`, `SIGRTMIN+3`…; kept as the signal's name | |
//! | `StopTimeout=` | a time span in whole seconds; default 10s, as Docker | |
//! | `ReadOnly=`, `RunInit=` (also `Init=`) | booleans | |
//! | `AddCapability=`, `DropCapability=` | capabilities, with or without `CAP_`, any case, or `ALL` | yes |
//!
//! As in systemd, the last assignment of a single-valued key wins, an empty
//! assignment resets a key to its default, and an empty assignment of a
//! repeatable key empties the list so far. Stricter than systemd and Quadlet:
//! a bad value is an error, not skipped.
//!
//! Specifiers `%n`, `%N`, `%p`, `%i` and `%%` are expanded for the unit's
//! name, as in `[X-Fleet]`; any other specifier is an error, because it
//! would name something on the host. In a template (`web@.service`), values
//! that use `%i` are checked when an instance is made from it.
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
//! Quadlet keys flotilla does not implement (`Network=`, `Pod=`, `Mount=`,
//! ...) are errors that say so, rather than unknown keys.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::duration::{self, Timespan};
use crate::name::{UnitName, UnitType};
use crate::suggest;
use crate::unit_file::{UnitFile, ValueRef};
use crate::value::{parse_bool, split_words};
use crate::work;

/// The section this module reads.
pub const SECTION: &str = "Container";

/// Docker's default for [`ContainerSpec::stop_timeout`].
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The most `PublishPort=` mappings one container may have (each may be a
/// range of ports). Each is checked against those before it for a host
/// port published twice, so this bounds that work; real containers publish
/// a handful.
pub const MAX_PUBLISHED_PORTS: usize = 1024;

/// The keys flotilla reads in `[Container]`.
pub const KEYS: [&str; 25] = [
    "Image",
    "Exec",
    "Entrypoint",
    "Environment",
    "EnvironmentFile",
    "PublishPort",
    "Volume",
    "User",
    "WorkingDir",
    "ContainerName",
    "Label",
    "HealthCmd",
    "HealthInterval",
    "HealthTimeout",
    "HealthRetries",
    "HealthStartPeriod",
    "HealthOnFailure",
    "Notify",
    "StopSignal",
    "StopTimeout",
    "ReadOnly",
    "RunInit",
    "Init",
    "AddCapability",
    "DropCapability",
];

/// Podman Quadlet `[Container]` keys that flotilla does not implement, with
/// a hint where flotilla has another way to the same end.
const QUADLET_UNSUPPORTED: [(&str, &str); 68] = [
    ("AddDevice", ""),
    ("AddHost", ""),
    ("Annotation", ""),
    ("AutoUpdate", ""),
    (
        "CgroupsMode",
        "; the container always runs in the unit's cgroup",
    ),
    ("ContainersConfModule", ""),
    ("DNS", ""),
    ("DNSOption", ""),
    ("DNSSearch", ""),
    ("EnvironmentHost", ""),
    ("ExposeHostPort", ""),
    ("GIDMap", ""),
    ("GlobalArgs", ""),
    ("Group", "; give the group in User=, as User=user:group"),
    ("GroupAdd", ""),
    ("HealthLogDestination", ""),
    ("HealthMaxLogCount", ""),
    ("HealthMaxLogSize", ""),
    ("HealthStartupCmd", ""),
    ("HealthStartupInterval", ""),
    ("HealthStartupRetries", ""),
    ("HealthStartupSuccess", ""),
    ("HealthStartupTimeout", ""),
    ("HostName", ""),
    ("IP", ""),
    ("IP6", ""),
    ("LogDriver", "; the container's output goes to the journal"),
    ("LogOpt", "; the container's output goes to the journal"),
    ("Mask", ""),
    (
        "Memory",
        "; the container runs in the unit's cgroup, so set MemoryMax= in [Service]",
    ),
    ("Mount", "; use Volume="),
    ("Network", ""),
    ("NetworkAlias", ""),
    ("NoNewPrivileges", ""),
    (
        "PidsLimit",
        "; the container runs in the unit's cgroup, so set TasksMax= in [Service]",
    ),
    ("Pod", ""),
    ("PodmanArgs", ""),
    ("Pull", ""),
    ("ReadOnlyTmpfs", ""),
    ("ReloadCmd", ""),
    ("ReloadSignal", ""),
    ("RemapGid", ""),
    ("RemapUid", ""),
    ("RemapUidSize", ""),
    ("RemapUsers", ""),
    ("Retry", ""),
    ("RetryDelay", ""),
    ("Rootfs", "; use Image="),
    ("SeccompProfile", ""),
    ("Secret", ""),
    ("SecurityLabelDisable", ""),
    ("SecurityLabelFileType", ""),
    ("SecurityLabelLevel", ""),
    ("SecurityLabelNested", ""),
    ("SecurityLabelType", ""),
    ("ServiceName", "; the unit's own name is the service's name"),
    ("ShmSize", ""),
    ("StartWithPod", ""),
    ("SubGIDMap", ""),
    ("SubUIDMap", ""),
    ("Sysctl", ""),
    ("Timezone", ""),
    ("Tmpfs", ""),
    ("UIDMap", ""),
    ("Ulimit", ""),
    ("Unmask", ""),
    ("UserNS", ""),
    ("VolatileTmp", ""),
];

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

/// `PublishPort=`: a port (or range) of the container published on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// The host address to bind; `None` binds every address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
    /// The host port(s); `None` lets Docker choose a free one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<PortRange>,
    /// The port(s) in the container; as many as `host_port` when both are
    /// given.
    pub container_port: PortRange,
    pub protocol: Protocol,
}

/// A port, or an inclusive range of ports: `start <= end`, both in 1..=65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    /// How many ports the range holds.
    pub fn len(self) -> u32 {
        u32::from(self.end) - u32::from(self.start) + 1
    }

    /// Always false: a range holds at least one port.
    pub fn is_empty(self) -> bool {
        false
    }

    fn overlaps(self, other: PortRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// The transport protocol of a published port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

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
    /// A named Docker volume, created if missing.
    Named(String),
}

/// A signal, by number, shown and serialised by its name (`SIGTERM`,
/// `SIGRTMIN+3`) with Linux's numbering on x86 and ARM. Signals 32 and 33,
/// which the C library reserves and which have no name, show as numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signal(u8);

/// Standard signals 1..=31, by number.
const SIGNAL_NAMES: [&str; 31] = [
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
    "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
    "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];
const SIGNAL_ALIASES: [(&str, u8); 3] = [("IOT", 6), ("CLD", 17), ("POLL", 29)];
/// glibc's SIGRTMIN (the kernel's 32 and 33 are taken by the C library).
const SIGRTMIN: u8 = 34;
const SIGRTMAX: u8 = 64;

/// Why a value is not a signal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a signal name such as SIGTERM or TERM, or a number from 1 to 64, found {0:?}")]
pub struct SignalError(pub String);

impl Signal {
    /// The signal with this number, if it is one (1..=64).
    pub fn from_number(n: u8) -> Option<Signal> {
        (1..=SIGRTMAX).contains(&n).then_some(Signal(n))
    }

    /// The signal's number.
    pub fn number(self) -> u8 {
        self.0
    }
}

impl FromStr for Signal {
    type Err = SignalError;

    /// Reads a name with or without `SIG`, in any case, an alias (`IOT`,
    /// `CLD`, `POLL`), `RTMIN+n`/`RTMAX-n`, or a number.
    fn from_str(s: &str) -> Result<Signal, SignalError> {
        let bad = || SignalError(s.to_owned());
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return s.parse().ok().and_then(Signal::from_number).ok_or_else(bad);
        }
        let upper = s.to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        if let Some(i) = SIGNAL_NAMES.iter().position(|n| *n == name) {
            // Safe: the table has 31 entries.
            return Ok(Signal(u8::try_from(i + 1).unwrap_or(0)));
        }
        if let Some(&(_, n)) = SIGNAL_ALIASES.iter().find(|(a, _)| *a == name) {
            return Ok(Signal(n));
        }
        let offset = |text: &str| -> Option<u8> {
            if text.is_empty() {
                return Some(0);
            }
            if !text.bytes().all(|b| b.is_ascii_digit()) || text.len() > 2 {
                return None;
            }
            text.parse().ok()
        };
        let number = if let Some(rest) = name.strip_prefix("RTMIN") {
            let k = match rest.strip_prefix('+') {
                Some(k) if !k.is_empty() => offset(k),
                Some(_) => None,
                None => offset(rest).filter(|_| rest.is_empty()),
            };
            k.and_then(|k| SIGRTMIN.checked_add(k))
        } else if let Some(rest) = name.strip_prefix("RTMAX") {
            let k = match rest.strip_prefix('-') {
                Some(k) if !k.is_empty() => offset(k),
                Some(_) => None,
                None => offset(rest).filter(|_| rest.is_empty()),
            };
            k.and_then(|k| SIGRTMAX.checked_sub(k))
        } else {
            None
        };
        number
            .filter(|n| (SIGRTMIN..=SIGRTMAX).contains(n))
            .map(Signal)
            .ok_or_else(bad)
    }
}

impl fmt::Display for Signal {
    /// `SIGTERM`; real-time signals as `SIGRTMIN`, `SIGRTMIN+1` ..
    /// `SIGRTMIN+15`, `SIGRTMAX-14` .. `SIGRTMAX` (the names Docker
    /// knows); 32 and 33 as numbers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        match n {
            1..=31 => write!(f, "SIG{}", SIGNAL_NAMES[usize::from(n - 1)]),
            SIGRTMIN => f.write_str("SIGRTMIN"),
            SIGRTMAX => f.write_str("SIGRTMAX"),
            35..=49 => write!(f, "SIGRTMIN+{}", n - SIGRTMIN),
            50..=63 => write!(f, "SIGRTMAX-{}", SIGRTMAX - n),
            _ => write!(f, "{n}"),
        }
    }
}

impl Serialize for Signal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Signal, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Linux capabilities (capabilities(7)), up to CAP_CHECKPOINT_RESTORE
/// (Linux 5.9), without their `CAP_` prefix.
const CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

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
fn is_name_char(c: char) -> bool {
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
        Some(spec)
    }
}

/// The state of one pass over the section's assignments, in file order.
struct Reader<'a> {
    name: &'a UnitName,
    diags: &'a mut Diagnostics,
    spec: ContainerSpec,
    /// Whether the effective `Image=` is set (even if it was bad, so that a
    /// bad image is not also reported as missing).
    image_set: bool,
    /// Whether the effective `HealthCmd=` is set to a check, even one
    /// deferred to instances.
    health_cmd_set: bool,
    /// The effective `Notify=` and `HealthOnFailure=` assignments, checked
    /// against `HealthCmd=` at the end.
    notify_at: Option<(u32, String)>,
    on_failure_at: Option<(u32, String)>,
    /// Health settings that have no effect with `HealthCmd=none`.
    health_tuning: Vec<(u32, String)>,
    /// Lines of the effective `PublishPort=` values, in the order of
    /// `spec.publish_ports`.
    port_lines: Vec<u32>,
    /// The line of each effective `Volume=`, by its path in the container.
    volume_targets: HashMap<String, u32>,
}

/// A value after specifier expansion.
enum Expanded {
    Value(String),
    /// The value uses `%i` in a template: checked in each instance.
    Deferred,
    /// An error was reported.
    Failed,
}

impl<'a> Reader<'a> {
    fn new(name: &'a UnitName, diags: &'a mut Diagnostics) -> Self {
        Reader {
            name,
            diags,
            spec: ContainerSpec {
                image: String::new(),
                exec: Vec::new(),
                entrypoint: None,
                environment: BTreeMap::new(),
                environment_files: Vec::new(),
                publish_ports: Vec::new(),
                volumes: Vec::new(),
                user: None,
                working_dir: None,
                container_name: default_container_name(name),
                labels: BTreeMap::new(),
                health_cmd: None,
                health_interval: None,
                health_timeout: None,
                health_retries: None,
                health_start_period: None,
                health_on_failure: HealthOnFailure::None,
                notify: Notify::Running,
                stop_signal: None,
                stop_timeout: DEFAULT_STOP_TIMEOUT,
                read_only: false,
                add_capabilities: Vec::new(),
                drop_capabilities: Vec::new(),
                init: false,
            },
            image_set: false,
            health_cmd_set: false,
            notify_at: None,
            on_failure_at: None,
            health_tuning: Vec::new(),
            port_lines: Vec::new(),
            volume_targets: HashMap::new(),
        }
    }

    fn error(&mut self, v: &ValueRef<'_>, message: impl Into<String>) {
        self.diags.push(v.error(message));
    }

    fn entry(&mut self, v: ValueRef<'_>) {
        work::charge(v.key.len() + v.value.len() + 1);
        let value = v.value;
        match v.key {
            "Image" => self.image(&v),
            "Exec" => self.exec(&v),
            "Entrypoint" => self.entrypoint(&v),
            "Environment" => {
                if value.is_empty() {
                    self.spec.environment.clear();
                } else if let Some(pairs) = self.assignments(&v, Assignments::Environment) {
                    self.spec.environment.extend(pairs);
                }
            }
            "Label" => {
                if value.is_empty() {
                    self.spec.labels.clear();
                } else if let Some(pairs) = self.assignments(&v, Assignments::Label) {
                    self.spec.labels.extend(pairs);
                }
            }
            "EnvironmentFile" => self.environment_file(&v),
            "PublishPort" => self.publish_port(&v),
            "Volume" => self.volume(&v),
            "User" => {
                self.spec.user = None;
                if !value.is_empty()
                    && let Expanded::Value(user) = self.expand(&v, value)
                {
                    match check_user(&user) {
                        Ok(()) => self.spec.user = Some(user),
                        Err(reason) => self.error(&v, reason),
                    }
                }
            }
            "WorkingDir" => {
                self.spec.working_dir = None;
                if !value.is_empty()
                    && let Expanded::Value(dir) = self.expand(&v, value)
                {
                    if dir.starts_with('/') {
                        self.spec.working_dir = Some(dir);
                    } else {
                        self.error(
                            &v,
                            format!("expected an absolute path in the container, found {dir:?}"),
                        );
                    }
                }
            }
            "ContainerName" => {
                self.spec.container_name = default_container_name(self.name);
                if !value.is_empty()
                    && let Expanded::Value(name) = self.expand(&v, value)
                {
                    match check_container_name(&name) {
                        Ok(()) => self.spec.container_name = name,
                        Err(reason) => self.error(&v, reason),
                    }
                }
            }
            "HealthCmd" => self.health_cmd(&v),
            "HealthInterval" => {
                self.spec.health_interval = self.health_duration(&v);
            }
            "HealthTimeout" => {
                self.spec.health_timeout = self.health_duration(&v);
            }
            "HealthStartPeriod" => {
                self.spec.health_start_period = self.health_duration(&v);
            }
            "HealthRetries" => {
                self.spec.health_retries = None;
                self.note_health_tuning(&v);
                if !value.is_empty() {
                    match value.parse::<u32>() {
                        Ok(n) if n > 0 && value.bytes().all(|b| b.is_ascii_digit()) => {
                            self.spec.health_retries = Some(n);
                        }
                        _ => self.error(
                            &v,
                            format!(
                                "expected a whole number of retries, at least 1, found {value:?}"
                            ),
                        ),
                    }
                }
            }
            "HealthOnFailure" => {
                self.spec.health_on_failure = HealthOnFailure::None;
                self.on_failure_at = None;
                let action = match value {
                    "" | "none" => Some(HealthOnFailure::None),
                    "kill" => Some(HealthOnFailure::Kill),
                    "restart" => Some(HealthOnFailure::Restart),
                    "stop" => Some(HealthOnFailure::Stop),
                    _ => None,
                };
                match action {
                    Some(action) => {
                        self.spec.health_on_failure = action;
                        if action != HealthOnFailure::None {
                            self.on_failure_at = Some((v.line, value.to_owned()));
                        }
                    }
                    None => self.error(
                        &v,
                        format!("expected none, kill, restart or stop, found {value:?}"),
                    ),
                }
            }
            "Notify" => {
                self.spec.notify = Notify::Running;
                self.notify_at = None;
                if value.eq_ignore_ascii_case("healthy") {
                    self.spec.notify = Notify::Healthy;
                    self.notify_at = Some((v.line, value.to_owned()));
                } else if !value.is_empty() {
                    match parse_bool(value) {
                        Some(true) => self.spec.notify = Notify::Container,
                        Some(false) => {}
                        None => {
                            self.error(&v, format!("expected yes, no or healthy, found {value:?}"))
                        }
                    }
                }
            }
            "StopSignal" => {
                self.spec.stop_signal = None;
                if !value.is_empty() {
                    match value.parse::<Signal>() {
                        Ok(signal) => self.spec.stop_signal = Some(signal),
                        Err(e) => self.error(&v, e.to_string()),
                    }
                }
            }
            "StopTimeout" => {
                self.spec.stop_timeout = DEFAULT_STOP_TIMEOUT;
                if !value.is_empty() {
                    match duration::parse_timespan(value) {
                        Ok(d) if d.subsec_nanos() == 0 => self.spec.stop_timeout = d,
                        Ok(_) => self.error(
                            &v,
                            format!(
                                "Docker counts the stop timeout in whole seconds, found {value:?}"
                            ),
                        ),
                        Err(e) => self.error(&v, e.to_string()),
                    }
                }
            }
            "ReadOnly" => self.spec.read_only = self.boolean(&v),
            "RunInit" | "Init" => self.spec.init = self.boolean(&v),
            "AddCapability" => {
                if value.is_empty() {
                    self.spec.add_capabilities.clear();
                } else {
                    let caps = self.capabilities(&v);
                    push_unique(&mut self.spec.add_capabilities, caps);
                }
            }
            "DropCapability" => {
                if value.is_empty() {
                    self.spec.drop_capabilities.clear();
                } else {
                    let caps = self.capabilities(&v);
                    push_unique(&mut self.spec.drop_capabilities, caps);
                }
            }
            key => {
                let message = match QUADLET_UNSUPPORTED.iter().find(|(k, _)| *k == key) {
                    Some((_, hint)) => {
                        format!("this Podman Quadlet key is not supported by flotilla{hint}")
                    }
                    None => suggest::unknown_key_message(SECTION, key, KEYS),
                };
                self.error(&v, message);
            }
        }
    }

    /// Unit-wide checks, once every assignment is read.
    fn finish(mut self, header_line: Option<u32>) -> ContainerSpec {
        if !self.image_set {
            self.diags.push(Diagnostic::error(
                header_line,
                "[Container] needs Image=, the image to run, such as Image=docker.io/library/nginx:1.27",
            ));
        }
        let disabled = self.spec.health_cmd == Some(HealthCmd::None);
        let missing = if disabled {
            Some("HealthCmd=none disables it")
        } else if !self.health_cmd_set {
            // Even if the image defines one: the unit must say what it
            // waits for or acts on.
            Some("the unit sets no HealthCmd=")
        } else {
            None
        };
        if let Some(why) = missing {
            if let Some((line, value)) = self.notify_at.take() {
                self.diags.push(
                    Diagnostic::error(
                        Some(line).filter(|l| *l > 0),
                        format!(
                            "{value} waits for the container's health check to pass, but {why}"
                        ),
                    )
                    .at_option(SECTION, "Notify"),
                );
            }
            if let Some((line, value)) = self.on_failure_at.take() {
                self.diags.push(
                    Diagnostic::error(
                        Some(line).filter(|l| *l > 0),
                        format!("{value} acts on a failing health check, but {why}"),
                    )
                    .at_option(SECTION, "HealthOnFailure"),
                );
            }
        }
        if disabled {
            for (line, key) in std::mem::take(&mut self.health_tuning) {
                self.diags.push(
                    Diagnostic::warning(
                        Some(line).filter(|l| *l > 0),
                        "has no effect: HealthCmd=none disables the health check",
                    )
                    .at_option(SECTION, &key),
                );
            }
        }
        self.spec
    }

    /// Expands specifiers in `text`, part of value `v`; reports bad ones.
    fn expand(&mut self, v: &ValueRef<'_>, text: &str) -> Expanded {
        match expand_specifiers(self.name, text) {
            Ok(Some(s)) => Expanded::Value(s),
            Ok(None) => Expanded::Deferred,
            Err(message) => {
                self.error(v, message);
                Expanded::Failed
            }
        }
    }

    fn image(&mut self, v: &ValueRef<'_>) {
        self.spec.image.clear();
        self.image_set = !v.value.is_empty();
        if v.value.is_empty() {
            return;
        }
        match self.expand(v, v.value) {
            Expanded::Value(image) => {
                if image.ends_with(".image") || image.ends_with(".build") {
                    self.error(
                        v,
                        format!(
                            "{image:?} names a Podman Quadlet .image or .build unit, which flotilla does not support; name an image such as docker.io/library/nginx:1.27"
                        ),
                    );
                    return;
                }
                match check_image(&image) {
                    Ok(()) => self.spec.image = image,
                    Err(reason) => self.error(
                        v,
                        format!(
                            "expected an image reference such as docker.io/library/nginx:1.27, found {image:?}: {reason}"
                        ),
                    ),
                }
            }
            // The template keeps the value as written; each instance checks it.
            Expanded::Deferred => self.spec.image = v.value.to_owned(),
            Expanded::Failed => {}
        }
    }

    /// Splits a value into words as systemd does, reporting bad quoting.
    fn words(&mut self, v: &ValueRef<'_>) -> Option<Vec<String>> {
        match split_words(v.value) {
            Ok(words) => Some(words),
            Err(e) => {
                self.error(v, format!("bad quoting: {e}"));
                None
            }
        }
    }

    /// The words of a value with specifiers expanded; `None` when a word
    /// is bad or depends on the instance of a template.
    fn expanded_words(&mut self, v: &ValueRef<'_>) -> Option<Vec<String>> {
        let mut out = Vec::new();
        let mut complete = true;
        for word in self.words(v)? {
            match self.expand(v, &word) {
                Expanded::Value(w) => out.push(w),
                Expanded::Deferred | Expanded::Failed => complete = false,
            }
        }
        complete.then_some(out)
    }

    fn exec(&mut self, v: &ValueRef<'_>) {
        self.spec.exec.clear();
        if let Some(words) = self.expanded_words(v) {
            self.spec.exec = words;
        }
    }

    fn entrypoint(&mut self, v: &ValueRef<'_>) {
        self.spec.entrypoint = None;
        if v.value.is_empty() {
            return;
        }
        let Expanded::Value(text) = self.expand(v, v.value) else {
            return;
        };
        if text.starts_with('[') {
            match parse_json_strings(&text) {
                Ok(args) => self.spec.entrypoint = Some(args),
                Err(reason) => self.error(
                    v,
                    format!(
                        "expected a program, or a JSON array of strings such as [\"/bin/sh\", \"-c\"], found {text:?}: {reason}"
                    ),
                ),
            }
        } else {
            self.spec.entrypoint = Some(vec![text]);
        }
    }

    /// `NAME=value` words of `Environment=` or `Label=`.
    fn assignments(
        &mut self,
        v: &ValueRef<'_>,
        kind: Assignments,
    ) -> Option<Vec<(String, String)>> {
        let mut out = Vec::new();
        for word in self.words(v)? {
            let word = match self.expand(v, &word) {
                Expanded::Value(w) => w,
                Expanded::Deferred | Expanded::Failed => continue,
            };
            let Some((key, value)) = word.split_once('=') else {
                self.error(v, format!("expected {}, found {word:?}", kind.shape()));
                continue;
            };
            match kind {
                Assignments::Environment if !is_env_name(key) => {
                    self.error(
                        v,
                        format!(
                            "{key:?} is not a valid environment variable name: use letters, digits and '_', not starting with a digit"
                        ),
                    );
                    continue;
                }
                Assignments::Label if key.is_empty() => {
                    self.error(v, format!("expected {}, found {word:?}", kind.shape()));
                    continue;
                }
                _ => {}
            }
            out.push((key.to_owned(), value.to_owned()));
        }
        Some(out)
    }

    fn environment_file(&mut self, v: &ValueRef<'_>) {
        if v.value.is_empty() {
            self.spec.environment_files.clear();
            return;
        }
        let Some(words) = self.words(v) else {
            return;
        };
        for word in words {
            let Expanded::Value(path) = self.expand(v, &word) else {
                continue;
            };
            if path.starts_with('/') {
                self.spec.environment_files.push(path);
            } else {
                self.error(
                    v,
                    format!(
                        "expected an absolute path on the host, found {path:?}: a flotilla unit has no directory for a relative path to start from"
                    ),
                );
            }
        }
    }

    fn publish_port(&mut self, v: &ValueRef<'_>) {
        if v.value.is_empty() {
            self.spec.publish_ports.clear();
            self.port_lines.clear();
            return;
        }
        let Expanded::Value(text) = self.expand(v, v.value) else {
            return;
        };
        if self.spec.publish_ports.len() == MAX_PUBLISHED_PORTS {
            self.error(
                v,
                format!(
                    "a container may publish at most {MAX_PUBLISHED_PORTS} ports or ranges of ports"
                ),
            );
            return;
        }
        let mapping = match parse_port_mapping(&text) {
            Ok(m) => m,
            Err(reason) => {
                self.error(
                    v,
                    format!(
                        "expected [[IP:][HOST-PORT]:]CONTAINER-PORT[/tcp|udp|sctp] such as 8080:80, found {text:?}: {reason}"
                    ),
                );
                return;
            }
        };
        // Each new mapping is compared with those before it: the limit
        // above keeps that to a bounded number of comparisons per line.
        work::charge(self.spec.publish_ports.len());
        let clash = self
            .spec
            .publish_ports
            .iter()
            .zip(&self.port_lines)
            .find(|(other, _)| host_ports_clash(&mapping, other))
            .map(|(other, line)| (other.protocol, *line));
        if let Some((protocol, line)) = clash {
            let host = mapping.host_port.map(|p| p.to_string()).unwrap_or_default();
            self.error(
                v,
                format!(
                    "host port {host}/{} is already published on line {line}",
                    protocol_name(protocol)
                ),
            );
            return;
        }
        self.spec.publish_ports.push(mapping);
        self.port_lines.push(v.line);
    }

    fn volume(&mut self, v: &ValueRef<'_>) {
        if v.value.is_empty() {
            self.spec.volumes.clear();
            self.volume_targets.clear();
            return;
        }
        let mut parts = Vec::new();
        for part in v.value.splitn(3, ':') {
            match self.expand(v, part) {
                Expanded::Value(p) => parts.push(p),
                Expanded::Deferred | Expanded::Failed => return,
            }
        }
        let volume = match parse_volume(&parts) {
            Ok(volume) => volume,
            Err(reason) => {
                self.error(v, reason);
                return;
            }
        };
        let same = self.volume_targets.get(&volume.target).copied();
        if let Some(line) = same {
            self.error(
                v,
                format!(
                    "{:?} in the container is already mounted on line {line}",
                    volume.target
                ),
            );
            return;
        }
        self.volume_targets.insert(volume.target.clone(), v.line);
        self.spec.volumes.push(volume);
    }

    fn health_cmd(&mut self, v: &ValueRef<'_>) {
        self.spec.health_cmd = None;
        self.health_cmd_set = false;
        if v.value.is_empty() {
            return;
        }
        let text = match self.expand(v, v.value) {
            Expanded::Value(text) => text,
            Expanded::Deferred => {
                self.health_cmd_set = true;
                return;
            }
            Expanded::Failed => return,
        };
        match parse_health_cmd(&text) {
            Ok(cmd) => {
                self.health_cmd_set = cmd != HealthCmd::None;
                self.spec.health_cmd = Some(cmd);
            }
            Err(reason) => {
                // Set, though bad: not also reported as missing.
                self.health_cmd_set = true;
                self.error(v, reason);
            }
        }
    }

    fn note_health_tuning(&mut self, v: &ValueRef<'_>) {
        self.health_tuning.retain(|(_, key)| key != v.key);
        if !v.value.is_empty() {
            self.health_tuning.push((v.line, v.key.to_owned()));
        }
    }

    /// A health-check time span: Docker takes 1ms or more.
    fn health_duration(&mut self, v: &ValueRef<'_>) -> Option<Duration> {
        self.note_health_tuning(v);
        if v.value.is_empty() {
            return None;
        }
        match duration::parse_timespan(v.value) {
            Ok(d) if d < Duration::from_millis(1) => {
                self.error(
                    v,
                    format!(
                        "Docker needs at least 1ms, found {:?}; leave it unset for the image's or Docker's default",
                        v.value
                    ),
                );
                None
            }
            Ok(d) if d.as_nanos() > i64::MAX as u128 => {
                self.error(v, format!("{:?} is longer than Docker can count", v.value));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.error(v, e.to_string());
                None
            }
        }
    }

    fn boolean(&mut self, v: &ValueRef<'_>) -> bool {
        if v.value.is_empty() {
            return false;
        }
        match parse_bool(v.value) {
            Some(b) => b,
            None => {
                self.error(
                    v,
                    format!("expected a boolean (yes or no, true or false, on or off, 1 or 0), found {:?}", v.value),
                );
                false
            }
        }
    }

    fn capabilities(&mut self, v: &ValueRef<'_>) -> Vec<String> {
        let mut out = Vec::new();
        for word in self.expanded_words(v).unwrap_or_default() {
            match normalize_capability(&word) {
                Some(cap) => out.push(cap),
                None => {
                    let upper = word.to_ascii_uppercase();
                    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
                    let message = match suggest::nearest(bare, CAPABILITIES) {
                        Some(near) => {
                            format!("unknown capability {word:?}; did you mean CAP_{near}?")
                        }
                        None => format!(
                            "unknown capability {word:?}: expected a Linux capability such as CAP_NET_ADMIN or NET_ADMIN, or ALL"
                        ),
                    };
                    self.error(v, message);
                }
            }
        }
        out
    }
}

#[derive(Clone, Copy)]
enum Assignments {
    Environment,
    Label,
}

impl Assignments {
    fn shape(self) -> &'static str {
        match self {
            Assignments::Environment => "NAME=VALUE",
            Assignments::Label => "KEY=VALUE",
        }
    }
}

fn push_unique(list: &mut Vec<String>, items: Vec<String>) {
    for item in items {
        // Capability names: the list is never longer than the known ones.
        work::charge(list.len());
        if !list.contains(&item) {
            list.push(item);
        }
    }
}

/// Expands `%n %N %p %i %%` for `name`. `Ok(None)` when `name` is a
/// template and the text uses `%i`: its value is known only per instance.
fn expand_specifiers(name: &UnitName, text: &str) -> Result<Option<String>, String> {
    if !text.contains('%') {
        return Ok(Some(text.to_owned()));
    }
    let mut out = String::with_capacity(text.len());
    let mut deferred = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push_str(name.as_str()),
            Some('N') => out.push_str(name.stem()),
            Some('p') => out.push_str(name.prefix()),
            Some('i') if name.is_template() => deferred = true,
            Some('i') => out.push_str(name.instance().unwrap_or("")),
            Some('%') => out.push('%'),
            Some(other) => {
                return Err(format!(
                    "specifier %{other} is not supported: flotilla expands %n, %N, %p, %i and %% (a literal %)"
                ));
            }
            None => {
                return Err("the value ends in a lone '%': write %% for a literal %".to_owned());
            }
        }
    }
    Ok((!deferred).then_some(out))
}

/// Docker container names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
fn check_container_name(name: &str) -> Result<(), String> {
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

/// `user[:group]`, each a name or a number.
fn check_user(text: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "expected user or user:group, each a name or a number, found {text:?}: {why}"
        ))
    };
    let (user, group) = match text.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (text, None),
    };
    for part in std::iter::once(user).chain(group) {
        if part.is_empty() {
            return bad("a part is empty");
        }
        if part.bytes().all(|b| b.is_ascii_digit()) {
            if part.parse::<u32>().is_err() {
                return bad("the number is too large for an ID");
            }
            continue;
        }
        let body = part.strip_suffix('$').unwrap_or(part);
        let mut chars = body.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid {
            return bad(&format!("{part:?} is not a user or group name"));
        }
    }
    Ok(())
}

/// POSIX shell variable names, as systemd requires in `Environment=`.
fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `CAP_NET_ADMIN`, `net_admin`, `cap_net_admin` -> `CAP_NET_ADMIN`;
/// `all` -> `ALL`.
fn normalize_capability(word: &str) -> Option<String> {
    let upper = word.to_ascii_uppercase();
    if upper == "ALL" {
        return Some(upper);
    }
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    CAPABILITIES.contains(&bare).then(|| format!("CAP_{bare}"))
}

fn parse_health_cmd(text: &str) -> Result<HealthCmd, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(HealthCmd::None);
    }
    if !text.starts_with('[') {
        return Ok(HealthCmd::Shell(text.to_owned()));
    }
    let bad = |reason: &str| {
        format!(
            "expected a shell command, none, or a JSON array of strings such as [\"curl\", \"-f\", \"http://localhost/\"], found {text:?}: {reason}"
        )
    };
    let args = parse_json_strings(text).map_err(|reason| bad(&reason))?;
    match args.first().map(String::as_str) {
        None => Err(bad("the array is empty")),
        Some("NONE") if args.len() == 1 => Ok(HealthCmd::None),
        Some("CMD-SHELL") if args.len() == 2 => Ok(HealthCmd::Shell(args[1].clone())),
        Some("CMD-SHELL") => Err(bad("[\"CMD-SHELL\", ...] takes exactly one command")),
        Some("CMD") if args.len() > 1 => Ok(HealthCmd::Exec(args[1..].to_vec())),
        Some("CMD") => Err(bad("[\"CMD\", ...] needs a program after \"CMD\"")),
        Some("NONE") => Err(bad("[\"NONE\"] takes nothing more")),
        Some(_) => Ok(HealthCmd::Exec(args)),
    }
}

/// A JSON array of strings, as `Entrypoint=` and `HealthCmd=` take.
fn parse_json_strings(text: &str) -> Result<Vec<String>, String> {
    let mut chars = text.trim().chars().peekable();
    let skip_ws = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while chars
            .next_if(|c| matches!(c, ' ' | '\t' | '\n' | '\r'))
            .is_some()
        {}
    };
    if chars.next() != Some('[') {
        return Err("expected '['".to_owned());
    }
    let mut out = Vec::new();
    skip_ws(&mut chars);
    if chars.next_if_eq(&']').is_none() {
        loop {
            skip_ws(&mut chars);
            if chars.next() != Some('"') {
                return Err("expected a string in double quotes".to_owned());
            }
            out.push(json_string(&mut chars)?);
            skip_ws(&mut chars);
            match chars.next() {
                Some(',') => {}
                Some(']') => break,
                _ => return Err("expected ',' or ']' after a string".to_owned()),
            }
        }
    }
    skip_ws(&mut chars);
    if chars.next().is_some() {
        return Err("unexpected text after ']'".to_owned());
    }
    Ok(out)
}

/// The rest of a JSON string after its opening quote.
fn json_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<String, String> {
    let mut out = String::new();
    loop {
        match chars.next() {
            None => return Err("unterminated string".to_owned()),
            Some('"') => return Ok(out),
            Some('\\') => {
                let c = match chars.next() {
                    Some('"') => '"',
                    Some('\\') => '\\',
                    Some('/') => '/',
                    Some('b') => '\u{8}',
                    Some('f') => '\u{c}',
                    Some('n') => '\n',
                    Some('r') => '\r',
                    Some('t') => '\t',
                    Some('u') => {
                        let high = hex4(chars)?;
                        let code = if (0xd800..0xdc00).contains(&high) {
                            if chars.next() != Some('\\') || chars.next() != Some('u') {
                                return Err("unpaired surrogate in \\u escape".to_owned());
                            }
                            let low = hex4(chars)?;
                            if !(0xdc00..0xe000).contains(&low) {
                                return Err("unpaired surrogate in \\u escape".to_owned());
                            }
                            0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00)
                        } else {
                            high
                        };
                        char::from_u32(code).ok_or("invalid \\u escape")?
                    }
                    _ => return Err("invalid escape in string".to_owned()),
                };
                out.push(c);
            }
            Some(c) if u32::from(c) < 0x20 => {
                return Err("control character in string".to_owned());
            }
            Some(c) => out.push(c),
        }
    }
}

fn hex4(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<u32, String> {
    let mut n = 0;
    for _ in 0..4 {
        let digit = chars
            .next()
            .and_then(|c| c.to_digit(16))
            .ok_or("expected four hex digits after \\u")?;
        n = n * 16 + digit;
    }
    Ok(n)
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// `[[IP:][HOST-PORT]:]CONTAINER-PORT[/PROTOCOL]`.
fn parse_port_mapping(text: &str) -> Result<PortMapping, String> {
    let (rest, protocol) = match text.rsplit_once('/') {
        Some((rest, proto)) => {
            let protocol = match proto.to_ascii_lowercase().as_str() {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                "sctp" => Protocol::Sctp,
                _ => {
                    return Err(format!(
                        "unknown protocol {proto:?}: expected tcp, udp or sctp"
                    ));
                }
            };
            (rest, protocol)
        }
        None => (text, Protocol::Tcp),
    };
    let (host_ip, ports) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (ip, after) = bracketed
            .split_once(']')
            .ok_or("an IPv6 address opened with '[' is not closed with ']'")?;
        let ip = ip
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("{ip:?} is not an IPv6 address"))?;
        let ports = after
            .strip_prefix(':')
            .ok_or("expected ':' and the ports after the IPv6 address")?;
        if !ports.contains(':') {
            return Err("expected HOST-PORT:CONTAINER-PORT after the address".to_owned());
        }
        (Some(IpAddr::V6(ip)), ports)
    } else {
        match rest.matches(':').count() {
            0 | 1 => (None, rest),
            2 => {
                let (ip, ports) = rest.split_once(':').unwrap_or(("", rest));
                let ip = ip
                    .parse::<std::net::Ipv4Addr>()
                    .map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
                (Some(IpAddr::V4(ip)), ports)
            }
            _ => {
                return Err(
                    "too many ':'; write an IPv6 address in brackets, as [::1]:8080:80".to_owned(),
                );
            }
        }
    };
    let (host, container) = match ports.split_once(':') {
        Some((host, container)) => (Some(host), container),
        None => (None, ports),
    };
    let container_port = parse_port_range(container, "container")?;
    let host_port = match host {
        Some("") | None => None,
        Some(host) => Some(parse_port_range(host, "host")?),
    };
    if let Some(host) = host_port
        && host.len() != container_port.len()
    {
        return Err(format!(
            "the host range {host} has {} ports and the container range {container_port} has {}: they must be the same size",
            host.len(),
            container_port.len()
        ));
    }
    Ok(PortMapping {
        host_ip,
        host_port,
        container_port,
        protocol,
    })
}

fn parse_port_range(text: &str, side: &str) -> Result<PortRange, String> {
    let port = |p: &str| -> Result<u16, String> {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("the {side} port {p:?} is not a number"));
        }
        match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("the {side} port {p} is not between 1 and 65535")),
        }
    };
    let (start, end) = match text.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(text)?;
            (p, p)
        }
    };
    if start > end {
        return Err(format!("the {side} range {text} ends before it starts"));
    }
    Ok(PortRange { start, end })
}

/// Whether two mappings would bind the same host port.
fn host_ports_clash(a: &PortMapping, b: &PortMapping) -> bool {
    let (Some(pa), Some(pb)) = (a.host_port, b.host_port) else {
        return false;
    };
    let ips_clash = match (a.host_ip, b.host_ip) {
        (None, _) | (_, None) => true,
        (Some(x), Some(y)) => {
            x == y || (x.is_ipv4() == y.is_ipv4() && (x.is_unspecified() || y.is_unspecified()))
        }
    };
    a.protocol == b.protocol && ips_clash && pa.overlaps(pb)
}

const RW_MODES: [&str; 2] = ["rw", "ro"];
const LABEL_MODES: [&str; 2] = ["z", "Z"];
const PROPAGATION_MODES: [&str; 6] = [
    "shared", "rshared", "slave", "rslave", "private", "rprivate",
];
const COPY_MODES: [&str; 1] = ["nocopy"];
const CONSISTENCY_MODES: [&str; 3] = ["consistent", "cached", "delegated"];

/// `[SOURCE:]CONTAINER-DIR[:OPTIONS]`, already split at the first two ':'.
fn parse_volume(parts: &[String]) -> Result<Volume, String> {
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
            return Err(format!(
                "{s:?} names a Podman Quadlet .volume unit, which flotilla does not support; name a Docker volume or an absolute host path"
            ));
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

/// Checks an image reference against Docker's grammar
/// (`distribution/reference`): `[HOST[:PORT]/]PATH[:TAG][@DIGEST]`.
fn check_image(s: &str) -> Result<(), String> {
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it contains whitespace".to_owned());
    }
    let (rest, digest) = match s.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (s, None),
    };
    if let Some(digest) = digest {
        check_digest(digest)?;
    }
    let tail = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[tail..].find(':') {
        Some(i) => (&rest[..tail + i], Some(&rest[tail + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        let mut chars = tag.chars();
        let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
        let valid = chars.next().is_some_and(word)
            && tag.len() <= 128
            && chars.all(|c| word(c) || c == '.' || c == '-');
        if !valid {
            return Err(format!(
                "the tag {tag:?} is not valid: up to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
            ));
        }
    }
    if name.is_empty() {
        return Err("the repository name is empty".to_owned());
    }
    if name.len() > 255 {
        return Err("the repository name is longer than 255 characters".to_owned());
    }
    let path = match name.split_once('/') {
        Some((first, path))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            check_domain(first)?;
            path
        }
        _ => name,
    };
    for component in path.split('/') {
        check_path_component(component)?;
    }
    Ok(())
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or one or more `-`.
fn check_path_component(c: &str) -> Result<(), String> {
    if c.is_empty() {
        return Err("a path component between '/' is empty".to_owned());
    }
    if c.chars().any(|ch| ch.is_ascii_uppercase()) {
        return Err("repository names must be lowercase".to_owned());
    }
    let bad = || {
        Err(format!(
            "{c:?} is not a valid path component: use lowercase letters and digits, joined by '.', '_', '__' or '-'"
        ))
    };
    let alnum = |ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit();
    if !c.starts_with(alnum) || !c.ends_with(alnum) {
        return bad();
    }
    let mut separator = String::new();
    for ch in c.chars() {
        if alnum(ch) {
            let ok = separator.is_empty()
                || matches!(separator.as_str(), "." | "_" | "__")
                || separator.chars().all(|s| s == '-');
            if !ok {
                return bad();
            }
            separator.clear();
        } else {
            separator.push(ch);
        }
    }
    Ok(())
}

/// `HOST[:PORT]`, the host a DNS name or an IPv6 address in brackets.
fn check_domain(d: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "the registry {d:?} is not a valid host name or host:port"
        ))
    };
    let (host, port) = if let Some(inner) = d.strip_prefix('[') {
        let Some((ip, after)) = inner.split_once(']') else {
            return bad();
        };
        if ip.is_empty() || !ip.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return bad();
        }
        match after {
            "" => ("", None),
            _ => match after.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return bad(),
            },
        }
    } else {
        match d.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (d, None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return bad();
    }
    if !d.starts_with('[') {
        for label in host.split('.') {
            let valid = !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !valid {
                return bad();
            }
        }
    }
    Ok(())
}

/// `ALGORITHM:HEX`, as `sha256:` and 64 hex digits.
fn check_digest(d: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "the digest {d:?} is not valid: expected an algorithm and hex digits, as sha256:<64 hex digits>"
        ))
    };
    let Some((algorithm, hex)) = d.split_once(':') else {
        return bad();
    };
    let algorithm_ok = algorithm.split(['-', '_', '+', '.']).all(|part| {
        let mut chars = part.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric())
    });
    if !algorithm_ok || hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return bad();
    }
    Ok(())
}

/// Checks the rest of the unit against what flotilla renders for a
/// container unit: its own `ExecStart=`, `Type=notify`, `NotifyAccess=all`,
/// `Delegate=yes` and a `KillMode=` that reaches every process.
fn check_service(file: &UnitFile, spec: &ContainerSpec, diags: &mut Diagnostics) {
    for v in file.values("Service", "ExecStart") {
        if !v.value.is_empty() {
            diags.push(v.error(
                "a container unit must not set ExecStart=: flotilla's shim is the main process and runs the container; give the command in [Container] Exec=",
            ));
        }
    }
    if let Some(v) = file.last_value("Service", "Type")
        && !v.value.is_empty()
        && v.value != "notify"
    {
        diags.push(v.error(format!(
            "a container unit must not set Type={}: flotilla runs it as Type=notify, so that it is ready when the container is",
            v.value
        )));
    }
    if let Some(v) = file.last_value("Service", "NotifyAccess")
        && !v.value.is_empty()
        && v.value != "all"
    {
        diags.push(v.error(format!(
            "a container unit must not set NotifyAccess={}: flotilla sets NotifyAccess=all, as the shim reports readiness after it has made the container the main process",
            v.value
        )));
    }
    if let Some(v) = file.last_value("Service", "Delegate")
        && parse_bool(v.value) == Some(false)
    {
        diags.push(v.error(
            "a container unit must not set Delegate=no: the container's processes run in a cgroup delegated under the unit's",
        ));
    }
    if let Some(v) = file.last_value("Service", "KillMode")
        && !v.value.is_empty()
        && v.value != "control-group"
        && v.value != "mixed"
    {
        diags.push(v.error(format!(
            "a container unit must not set KillMode={}: use control-group or mixed (flotilla's default), so that stopping the unit stops every process of the container",
            v.value
        )));
    }
    // TimeoutSec= sets the stop timeout too; the last of the two wins.
    let stop = file
        .entries("Service")
        .filter(|v| v.key == "TimeoutStopSec" || v.key == "TimeoutSec")
        .last();
    if let Some(v) = stop
        && let Ok(Timespan::Finite(limit)) = duration::parse_timespan_or_infinity(v.value)
        // systemd reads 0 as no timeout.
        && !limit.is_zero()
        && limit <= spec.stop_timeout
    {
        diags.push(v.warning(format!(
            "systemd kills the unit {} after stopping it, leaving the container no time past its StopTimeout of {}; make {} longer than StopTimeout",
            duration::format_timespan(limit),
            duration::format_timespan(spec.stop_timeout),
            v.key
        )));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        for (text, name, number) in [
            ("SIGTERM", "SIGTERM", 15),
            ("term", "SIGTERM", 15),
            ("15", "SIGTERM", 15),
            ("SIGIOT", "SIGABRT", 6),
            ("cld", "SIGCHLD", 17),
            ("1", "SIGHUP", 1),
            ("31", "SIGSYS", 31),
            ("32", "32", 32),
            ("33", "33", 33),
            ("34", "SIGRTMIN", 34),
            ("RTMIN", "SIGRTMIN", 34),
            ("SIGRTMIN+3", "SIGRTMIN+3", 37),
            ("rtmin+15", "SIGRTMIN+15", 49),
            ("RTMIN+16", "SIGRTMAX-14", 50),
            ("SIGRTMAX-1", "SIGRTMAX-1", 63),
            ("64", "SIGRTMAX", 64),
            ("RTMAX", "SIGRTMAX", 64),
        ] {
            let signal: Signal = text.parse().unwrap();
            assert_eq!(signal.to_string(), name, "{text}");
            assert_eq!(signal.number(), number, "{text}");
            assert_eq!(name.parse::<Signal>(), Ok(signal), "{name} reads back");
        }
        for bad in [
            "",
            "0",
            "65",
            "256",
            "SIG",
            "TERMINATE",
            "RTMIN+31",
            "RTMAX-31",
            "RTMIN+",
            "RTMIN3",
            "+15",
            "-1",
        ] {
            assert!(bad.parse::<Signal>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn image_references() {
        for good in [
            "nginx",
            "nginx:1.27",
            "library/nginx",
            "docker.io/library/nginx:1.27-alpine",
            "localhost/app",
            "localhost:5000/app:v1",
            "registry.example.com:5000/team/app_x/a__b/c---d:latest",
            "Registry.Example.com/app",
            "[::1]:5000/app",
            "app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "ghcr.io/o/app:1.0@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(check_image(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "Nginx",
            "nginx:",
            "nginx:-x",
            "a/B",
            "a//b",
            "a_.b",
            "a___b",
            "-a",
            "a-",
            "app@sha256:123",
            "app@sha256",
            "ex ample",
            "bad_host:5000/app",
            "host:port/app",
            ":tag",
        ] {
            assert!(check_image(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn json_arrays() {
        assert_eq!(
            parse_json_strings(r#"["a", "b c"]"#),
            Ok(vec!["a".to_owned(), "b c".to_owned()])
        );
        assert_eq!(parse_json_strings("[]"), Ok(vec![]));
        assert_eq!(parse_json_strings(" [ ] "), Ok(vec![]));
        assert_eq!(
            parse_json_strings(r#"["\"q\"\\\/\n\u00e9\ud83d\ude00"]"#),
            Ok(vec!["\"q\"\\/\né😀".to_owned()])
        );
        for bad in [
            r#"["a""#,
            r#"["a",]"#,
            r#"["a"] x"#,
            r#"[1]"#,
            r#"['a']"#,
            r#"["\x"]"#,
            r#"["\ud83d"]"#,
            "[\"\t\"]",
        ] {
            assert!(parse_json_strings(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ports() {
        let m = parse_port_mapping("127.0.0.1:8000-8001:80-81/UDP").unwrap();
        assert_eq!(m.host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(
            m.host_port,
            Some(PortRange {
                start: 8000,
                end: 8001
            })
        );
        assert_eq!(m.container_port, PortRange { start: 80, end: 81 });
        assert_eq!(m.protocol, Protocol::Udp);
        let m = parse_port_mapping("[::1]::53/sctp").unwrap();
        assert_eq!(m.host_ip, Some("::1".parse().unwrap()));
        assert_eq!(m.host_port, None);
        assert_eq!(m.protocol, Protocol::Sctp);
        assert!(parse_port_mapping(":80").is_ok());
        for bad in [
            "",
            "0",
            "65536",
            "80/icmp",
            "a:80",
            "::1:80:80",
            "[::1]:80",
            "1.2.3:80:80",
            "90-80",
            "80-81:80",
            "x",
        ] {
            assert!(parse_port_mapping(bad).is_err(), "{bad:?}");
        }
    }

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
