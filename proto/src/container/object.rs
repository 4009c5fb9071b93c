//! Podman Quadlet's `.network` and `.volume` files: a Docker network or
//! volume as a unit, which container units name in `Network=NAME.network`,
//! `Volume=NAME.volume:/dir` or `Mount=type=volume,source=NAME.volume,...`.
//!
//! As in Quadlet, the file `NAME.network` is the unit
//! `NAME-network.service` (see [`crate::name`]), with a `[Network]`
//! section; `NAME.volume` is `NAME-volume.service`, with `[Volume]`. The
//! agent renders it as a oneshot service (`RemainAfterExit=yes`) whose
//! main process, `flotilla shim network|volume`, creates the Docker network
//! or volume if it is missing, labelled `flotilla.unit=UNIT`.
//!
//! A Docker network or volume exists per machine, and any machine may run
//! a container that uses one, so such a unit is Global: its file is on
//! every machine (narrowed with `MachineMetadata=`), and a container unit
//! that names it gets `Requires=` and `After=` on it, so systemd creates the
//! network or volume on the container's machine before the container, even
//! when the unit is only loaded. The unit may not be placed with
//! `MachineID=`, `MachineOf=`, `Conflicts=` or `Replaces=`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::name::{QUADLET_OBJECT_SUFFIXES, UnitName, UnitType};
use crate::suggest;
use crate::unit_file::{UnitFile, ValueRef};
use crate::value::{parse_bool, split_words};
use crate::work;

use super::specifiers::expand_specifiers;
use super::{ContainerSpec, Network, VolumeSource, check_container_name};

/// The section of a `.network` unit.
pub const NETWORK_SECTION: &str = "Network";
/// The section of a `.volume` unit.
pub const VOLUME_SECTION: &str = "Volume";

/// The most `Subnet=`, `Label=` or `Options=` values one file may hold.
pub const MAX_OBJECT_VALUES: usize = 256;

/// A Docker network or volume that a unit creates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DockerObject {
    Network(NetworkFile),
    Volume(VolumeFile),
}

impl DockerObject {
    /// The Docker name of the network or volume.
    pub fn docker_name(&self) -> &str {
        match self {
            DockerObject::Network(n) => &n.name,
            DockerObject::Volume(v) => &v.name,
        }
    }

    /// `network` or `volume`.
    pub fn kind(&self) -> &'static str {
        match self {
            DockerObject::Network(_) => "network",
            DockerObject::Volume(_) => "volume",
        }
    }

    /// Reads the `[Network]` or `[Volume]` section of unit `name`, and
    /// checks the rest of the unit against what flotilla renders for it.
    /// `None` when the unit has neither section.
    pub fn from_unit_file(
        name: &UnitName,
        file: &UnitFile,
        diags: &mut Diagnostics,
    ) -> Option<DockerObject> {
        let section = [NETWORK_SECTION, VOLUME_SECTION]
            .into_iter()
            .find(|s| file.has_section(s))?;
        let header = file.sections_named(section).next()?;
        let header_line = Some(header.line).filter(|l| *l > 0);
        let suffix = section.to_ascii_lowercase();
        let error = |diags: &mut Diagnostics, message: String| {
            diags.push(Diagnostic::error(header_line, message));
        };
        let bare = name.stem().strip_suffix(&format!("-{suffix}"));
        match bare {
            _ if name.unit_type() != UnitType::Service || name.stem().contains('@') => error(
                diags,
                format!(
                    "a [{section}] section belongs in a NAME.{suffix} file (the unit NAME-{suffix}.service), not in {name}"
                ),
            ),
            None | Some("") => error(
                diags,
                format!(
                    "a [{section}] section belongs in a NAME.{suffix} file, the unit NAME-{suffix}.service: name the unit {}.{suffix}",
                    name.stem()
                ),
            ),
            Some(_) => {}
        }
        for other in ["Container", NETWORK_SECTION, VOLUME_SECTION] {
            if other != section && file.has_section(other) {
                error(
                    diags,
                    format!(
                        "a unit with a [{section}] section cannot also have a [{other}] section"
                    ),
                );
            }
        }
        check_service(file, &suffix, diags);
        check_placement(file, &suffix, diags);
        let default_name = format!("flotilla-{}", bare.unwrap_or(name.stem()));
        let object = if section == NETWORK_SECTION {
            DockerObject::Network(read_network(name, file, default_name, header_line, diags))
        } else {
            DockerObject::Volume(read_volume(name, file, default_name, diags))
        };
        Some(object)
    }
}

/// A `.network` file, in Docker's terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkFile {
    /// `NetworkName=`, or `flotilla-NAME` for `NAME.network`.
    pub name: String,
    /// `Driver=`: Docker's default (`bridge`) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// `IPAMDriver=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam_driver: Option<String>,
    /// `Subnet=`, each with the `Gateway=` and `IPRange=` of the same rank.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<IpamPool>,
    /// `IPv6=`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ipv6: bool,
    /// `Internal=`: no route out of the network.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
    /// `Label=`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `Options=` (the driver's), with `InterfaceName=` as the bridge
    /// driver's `com.docker.network.bridge.name`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    /// `NetworkDeleteOnStop=`: remove the network when the unit stops.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete_on_stop: bool,
}

/// One subnet of a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamPool {
    pub subnet: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<String>,
}

/// A `.volume` file, in Docker's terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeFile {
    /// `VolumeName=`, or `flotilla-NAME` for `NAME.volume`.
    pub name: String,
    /// `Driver=`: Docker's `local` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// `Label=`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The driver's options: `Type=` as `type`, `Device=` as `device`,
    /// `Options=` as `o` (the local driver's mount(8) options).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// The unit a container's reference names: `db.network` is
/// `db-network.service`; `None` for a value that names no such file.
pub fn object_unit(reference: &str) -> Option<UnitName> {
    let (_, suffix) = reference.rsplit_once('.')?;
    if !QUADLET_OBJECT_SUFFIXES.contains(&suffix) {
        return None;
    }
    UnitName::parse(reference).ok()
}

/// The `.network` and `.volume` units a container unit names, in order,
/// each once: the unit gets `Requires=` and `After=` on them.
pub fn required_units(spec: &ContainerSpec) -> Vec<UnitName> {
    let networks = spec.attach.network.networks.iter().filter_map(|n| match n {
        Network::Named { name, .. } => Some(name.as_str()),
        _ => None,
    });
    let volumes = spec.volumes.iter().filter_map(|v| match &v.source {
        Some(VolumeSource::Named(name)) => Some(name.as_str()),
        _ => None,
    });
    let mounts = spec
        .attach
        .mounts
        .mounts
        .iter()
        .filter_map(|m| m.source.as_deref());
    let mut out: Vec<UnitName> = Vec::new();
    for unit in networks
        .chain(volumes)
        .chain(mounts)
        .filter_map(object_unit)
    {
        if !out.contains(&unit) {
            out.push(unit);
        }
    }
    out
}

/// A container's reference to a `.network` or `.volume` file, checked:
/// `NAME.network` (or `.volume`) with a name that makes a unit name.
pub(super) fn check_reference(reference: &str, suffix: &str) -> Result<(), String> {
    let stem = reference
        .strip_suffix(&format!(".{suffix}"))
        .unwrap_or(reference);
    match UnitName::parse(reference) {
        Ok(_) if check_container_name(&format!("x{stem}")).is_ok() => Ok(()),
        Ok(_) => Err(format!(
            "{reference:?}: the name of a .{suffix} file may hold letters, digits, '_', '.' and '-'"
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn check_service(file: &UnitFile, suffix: &str, diags: &mut Diagnostics) {
    for v in file.values("Service", "ExecStart") {
        if !v.value.is_empty() {
            diags.push(v.error(format!(
                "a .{suffix} unit must not set ExecStart=: flotilla's shim creates the {suffix}"
            )));
        }
    }
    if let Some(v) = file.last_value("Service", "Type")
        && !v.value.is_empty()
        && v.value != "oneshot"
    {
        diags.push(v.error(format!(
            "a .{suffix} unit must not set Type={}: flotilla runs it as Type=oneshot, done once the {suffix} exists",
            v.value
        )));
    }
    if let Some(v) = file.last_value("Service", "RemainAfterExit")
        && parse_bool(v.value) == Some(false)
    {
        diags.push(v.error(format!(
            "a .{suffix} unit must not set RemainAfterExit=no: it stays active while the {suffix} is there for the containers that need it"
        )));
    }
}

fn check_placement(file: &UnitFile, suffix: &str, diags: &mut Diagnostics) {
    for v in file.entries("X-Fleet") {
        let refused = matches!(v.key, "MachineID" | "MachineOf" | "Conflicts" | "Replaces")
            || (v.key == "Global" && parse_bool(v.value) == Some(false));
        if refused && !v.value.is_empty() {
            diags.push(v.error(format!(
                "a .{suffix} unit is Global: every machine may run a container that needs it; narrow the machines with MachineMetadata= only"
            )));
        }
    }
}

/// The values of a repeatable key read so far, bounded.
fn bounded(count: usize, v: &ValueRef<'_>, diags: &mut Diagnostics) -> bool {
    work::charge(1);
    if count >= MAX_OBJECT_VALUES {
        diags.push(v.error(format!(
            "at most {MAX_OBJECT_VALUES} values of {}= are accepted",
            v.key
        )));
        return false;
    }
    true
}

/// `KEY=VALUE` words (`Label=`, `Options=`) into `map`.
fn key_values(v: &ValueRef<'_>, map: &mut BTreeMap<String, String>, diags: &mut Diagnostics) {
    if v.value.is_empty() {
        map.clear();
        return;
    }
    let words = match split_words(v.value) {
        Ok(w) => w,
        Err(e) => {
            diags.push(v.error(e.to_string()));
            return;
        }
    };
    for word in words {
        if !bounded(map.len(), v, diags) {
            return;
        }
        match word.split_once('=') {
            Some((k, value)) if !k.is_empty() => {
                map.insert(k.to_owned(), value.to_owned());
            }
            _ => diags.push(v.error(format!("expected KEY=VALUE, found {word:?}"))),
        }
    }
}

fn boolean(v: &ValueRef<'_>, diags: &mut Diagnostics) -> bool {
    if v.value.is_empty() {
        return false;
    }
    parse_bool(v.value).unwrap_or_else(|| {
        diags.push(v.error(format!(
            "expected a boolean (yes or no, true or false, on or off, 1 or 0), found {:?}",
            v.value
        )));
        false
    })
}

/// A single word value (`Driver=`): `None` when empty.
fn word(v: &ValueRef<'_>, diags: &mut Diagnostics) -> Option<String> {
    if v.value.is_empty() {
        return None;
    }
    if v.value.chars().all(|c| c.is_ascii_graphic()) {
        Some(v.value.to_owned())
    } else {
        diags.push(v.error(format!("expected one word, found {:?}", v.value)));
        None
    }
}

/// `NetworkName=` / `VolumeName=`: a Docker name, specifiers expanded.
fn docker_name(
    name: &UnitName,
    v: &ValueRef<'_>,
    default: &str,
    diags: &mut Diagnostics,
) -> String {
    if v.value.is_empty() {
        return default.to_owned();
    }
    let expanded = match expand_specifiers(name, v.value) {
        Ok(Some(s)) => s,
        Ok(None) => return default.to_owned(),
        Err(message) => {
            diags.push(v.error(message));
            return default.to_owned();
        }
    };
    match check_container_name(&expanded) {
        Ok(()) => expanded,
        Err(reason) => {
            diags.push(v.error(reason.replace("container name", "name")));
            default.to_owned()
        }
    }
}

/// A subnet in CIDR notation: its address and prefix length.
fn parse_cidr(text: &str) -> Result<(IpAddr, u8), String> {
    let bad = || format!("expected a subnet in CIDR notation such as 10.89.0.0/24, found {text:?}");
    let (addr, len) = text.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max || len == 0 {
        return Err(bad());
    }
    Ok((addr, len))
}

/// Whether `addr` is in the subnet `net/len`.
fn contains(net: IpAddr, len: u8, addr: IpAddr) -> bool {
    let bits = |a: IpAddr| -> (u128, u32) {
        match a {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
            IpAddr::V6(v6) => (u128::from(v6), 128),
        }
    };
    let (n, width) = bits(net);
    let (a, width_a) = bits(addr);
    if width != width_a {
        return false;
    }
    let shift = width - u32::from(len);
    n.checked_shr(shift) == a.checked_shr(shift)
}

const NETWORK_KEYS: &[&str] = &[
    "Driver",
    "IPAMDriver",
    "Subnet",
    "Gateway",
    "IPRange",
    "IPv6",
    "Internal",
    "Label",
    "Options",
    "NetworkName",
    "InterfaceName",
    "NetworkDeleteOnStop",
];

const NETWORK_UNSUPPORTED: &[(&str, &str)] = &[
    (
        "DNS",
        "Docker's networks have no name servers of their own; set DNS= on the containers",
    ),
    (
        "DisableDNS",
        "Docker's embedded DNS serves every user-defined network",
    ),
    ("ContainersConfModule", "it is podman's"),
    ("GlobalArgs", "it is podman's"),
    ("PodmanArgs", "it is podman's"),
];

fn read_network(
    name: &UnitName,
    file: &UnitFile,
    default_name: String,
    header_line: Option<u32>,
    diags: &mut Diagnostics,
) -> NetworkFile {
    let mut n = NetworkFile {
        name: default_name.clone(),
        driver: None,
        ipam_driver: None,
        subnets: Vec::new(),
        ipv6: false,
        internal: false,
        labels: BTreeMap::new(),
        options: BTreeMap::new(),
        delete_on_stop: false,
    };
    let mut subnets: Vec<((IpAddr, u8), String, u32)> = Vec::new();
    let mut gateways: Vec<(IpAddr, ValueRef<'_>)> = Vec::new();
    let mut ranges: Vec<((IpAddr, u8), String, ValueRef<'_>)> = Vec::new();
    let mut interface = None;
    for v in file.entries(NETWORK_SECTION) {
        work::charge(v.key.len() + v.value.len() + 1);
        let value = v.value.trim();
        match v.key {
            "Driver" => n.driver = word(&v, diags),
            "IPAMDriver" => n.ipam_driver = word(&v, diags),
            "Subnet" if value.is_empty() => subnets.clear(),
            "Subnet" => {
                if bounded(subnets.len(), &v, diags) {
                    match parse_cidr(value) {
                        Ok(cidr) => subnets.push((cidr, value.to_owned(), v.line)),
                        Err(e) => diags.push(v.error(e)),
                    }
                }
            }
            "Gateway" if value.is_empty() => gateways.clear(),
            "Gateway" => {
                if bounded(gateways.len(), &v, diags) {
                    match value.parse::<IpAddr>() {
                        Ok(ip) => gateways.push((ip, v)),
                        Err(_) => diags.push(v.error(format!(
                            "expected the gateway's IP address, found {value:?}"
                        ))),
                    }
                }
            }
            "IPRange" if value.is_empty() => ranges.clear(),
            "IPRange" => {
                if bounded(ranges.len(), &v, diags) {
                    match parse_cidr(value) {
                        Ok(cidr) => ranges.push((cidr, value.to_owned(), v)),
                        Err(e) => diags.push(v.error(e.replace("a subnet", "a range"))),
                    }
                }
            }
            "IPv6" => n.ipv6 = boolean(&v, diags),
            "Internal" => n.internal = boolean(&v, diags),
            "NetworkDeleteOnStop" => n.delete_on_stop = boolean(&v, diags),
            "Label" => key_values(&v, &mut n.labels, diags),
            "Options" => key_values(&v, &mut n.options, diags),
            "NetworkName" => n.name = docker_name(name, &v, &default_name, diags),
            "InterfaceName" => interface = word(&v, diags).map(|w| (w, v)),
            key => {
                let message = match NETWORK_UNSUPPORTED.iter().find(|(k, _)| *k == key) {
                    Some((_, why)) => {
                        format!("this Podman Quadlet key is not supported by flotilla: {why}")
                    }
                    None => suggest::unknown_key_message(
                        NETWORK_SECTION,
                        key,
                        NETWORK_KEYS.iter().copied(),
                    ),
                };
                diags.push(v.error(message));
            }
        }
    }
    // Quadlet's pairing: the n-th gateway and range go with the n-th subnet.
    if subnets.is_empty() {
        if let Some((_, v)) = gateways.first() {
            diags.push(v.error("a gateway needs a Subnet= to belong to"));
        }
        if let Some((_, _, v)) = ranges.first() {
            diags.push(v.error("an IP range needs a Subnet= to belong to"));
        }
    }
    for (_, v) in gateways.iter().skip(subnets.len().max(1)) {
        if !subnets.is_empty() {
            diags
                .push(v.error("more Gateway= than Subnet=: the n-th gateway is the n-th subnet's"));
        }
    }
    for (_, _, v) in ranges.iter().skip(subnets.len().max(1)) {
        if !subnets.is_empty() {
            diags.push(v.error("more IPRange= than Subnet=: the n-th range is the n-th subnet's"));
        }
    }
    for (i, ((net, len), text, _)) in subnets.iter().enumerate() {
        let gateway = gateways.get(i).map(|(ip, v)| (*ip, v));
        let range = ranges.get(i);
        if let Some((ip, v)) = gateway
            && !contains(*net, *len, ip)
        {
            diags.push(v.error(format!("the gateway {ip} is not in the subnet {text}")));
        }
        if let Some(((r, rlen), rtext, v)) = range
            && (*rlen < *len || !contains(*net, *len, *r))
        {
            diags.push(v.error(format!("the range {rtext} is not in the subnet {text}")));
        }
        n.subnets.push(IpamPool {
            subnet: text.clone(),
            gateway: gateway.map(|(ip, _)| ip),
            ip_range: range.map(|(_, t, _)| t.clone()),
        });
    }
    if n.ipv6 && !n.subnets.iter().any(|s| s.subnet.contains(':')) && !n.subnets.is_empty() {
        diags.push(Diagnostic::warning(
            header_line,
            "IPv6=yes with only IPv4 subnets: Docker picks an IPv6 subnet from its own pools",
        ));
    }
    if let Some((interface, v)) = interface {
        let bridge = n.driver.as_deref().is_none_or(|d| d == "bridge");
        if !bridge {
            diags.push(v.error(
                "InterfaceName= names the bridge of Docker's bridge driver: it does not apply to another driver",
            ));
        } else if interface.len() > 15 {
            diags.push(v.error(format!(
                "a network interface name is at most 15 characters, found {interface:?}"
            )));
        } else {
            n.options
                .insert("com.docker.network.bridge.name".to_owned(), interface);
        }
    }
    n
}

const VOLUME_KEYS: &[&str] = &[
    "Driver",
    "Label",
    "Options",
    "Type",
    "Device",
    "VolumeName",
    "Copy",
];

const VOLUME_UNSUPPORTED: &[(&str, &str)] = &[
    (
        "User",
        "Docker's local driver sets no owner; for a tmpfs volume, give Options=uid=N",
    ),
    (
        "Group",
        "Docker's local driver sets no group; for a tmpfs volume, give Options=gid=N",
    ),
    ("Image", "Docker has no image volume driver"),
    ("ContainersConfModule", "it is podman's"),
    ("GlobalArgs", "it is podman's"),
    ("PodmanArgs", "it is podman's"),
];

fn read_volume(
    name: &UnitName,
    file: &UnitFile,
    default_name: String,
    diags: &mut Diagnostics,
) -> VolumeFile {
    let mut vol = VolumeFile {
        name: default_name.clone(),
        driver: None,
        labels: BTreeMap::new(),
        options: BTreeMap::new(),
    };
    let mut kind: Option<(String, ValueRef<'_>)> = None;
    let mut device = None;
    let mut mount_options = None;
    for v in file.entries(VOLUME_SECTION) {
        work::charge(v.key.len() + v.value.len() + 1);
        let value = v.value.trim();
        match v.key {
            "Driver" if value == "image" => {
                diags.push(v.error("Driver=image is podman's: Docker has no image volume driver"))
            }
            "Driver" => vol.driver = word(&v, diags),
            "Label" => key_values(&v, &mut vol.labels, diags),
            "Type" => kind = word(&v, diags).map(|w| (w, v)),
            "Device" => device = (!value.is_empty()).then(|| value.to_owned()),
            "Options" => mount_options = (!value.is_empty()).then(|| value.to_owned()),
            "VolumeName" => vol.name = docker_name(name, &v, &default_name, diags),
            "Copy" => {
                if !boolean(&v, diags) && !value.is_empty() && parse_bool(value).is_some() {
                    diags.push(v.error(
                        "Copy=no is a volume's setting in podman and a mount's in Docker: write nocopy on the mounts instead (Volume=NAME.volume:/dir:nocopy, or volume-nocopy in Mount=)",
                    ));
                }
            }
            key => {
                let message = match VOLUME_UNSUPPORTED.iter().find(|(k, _)| *k == key) {
                    Some((_, why)) => {
                        format!("this Podman Quadlet key is not supported by flotilla: {why}")
                    }
                    None => suggest::unknown_key_message(
                        VOLUME_SECTION,
                        key,
                        VOLUME_KEYS.iter().copied(),
                    ),
                };
                diags.push(v.error(message));
            }
        }
    }
    if let Some((kind, v)) = kind {
        if device.is_none() {
            diags.push(v.error("Type= needs Device=, the device or path to mount"));
        }
        vol.options.insert("type".to_owned(), kind);
    }
    if let Some(device) = device {
        vol.options.insert("device".to_owned(), device);
    }
    if let Some(o) = mount_options {
        vol.options.insert("o".to_owned(), o);
    }
    vol
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_and_containment() {
        let (net, len) = parse_cidr("10.89.0.0/24").unwrap();
        assert!(contains(net, len, "10.89.0.1".parse().unwrap()));
        assert!(!contains(net, len, "10.89.1.1".parse().unwrap()));
        assert!(!contains(net, len, "fd00::1".parse().unwrap()));
        let (net6, len6) = parse_cidr("fd00:1::/64").unwrap();
        assert!(contains(net6, len6, "fd00:1::5".parse().unwrap()));
        for bad in ["10.0.0.0", "10.0.0.0/33", "10.0.0.0/0", "x/8", "fd00::/129"] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn references_name_units() {
        assert_eq!(
            object_unit("db.network").unwrap().as_str(),
            "db-network.service"
        );
        assert_eq!(
            object_unit("data.volume").unwrap().as_str(),
            "data-volume.service"
        );
        assert!(object_unit("data").is_none());
        assert!(object_unit("a@b.volume").is_none());
        assert!(check_reference("db.network", "network").is_ok());
        assert!(check_reference("a@b.network", "network").is_err());
    }
}
