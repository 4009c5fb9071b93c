//! The network keys of `[Container]`: `Network=`, `NetworkAlias=`, `IP=`,
//! `IP6=`, `HostName=`, `AddHost=`, `DNS=`, `DNSOption=`, `DNSSearch=` and
//! `ExposeHostPort=`, read as Quadlet reads them and checked against what
//! Docker accepts.
//!
//! Each assignment is one value (as Quadlet passes each to podman's
//! option of the same name); an empty assignment empties a repeatable key
//! and resets a single one. The combinations Docker refuses at create
//! time (a published port with `Network=host`, a host name while sharing
//! another container's network...) are errors naming the line, checked
//! once the whole section is read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::name::UnitName;
use crate::unit_file::ValueRef;
use crate::work;

use super::ports::{PortRange, Protocol, parse_port_range, protocol_name};
use super::specifiers::expand_specifiers;
use super::{SECTION, check_container_name};

/// The most values one repeatable network key may hold (`DNS=`,
/// `AddHost=`, ...): each new one is compared with those before it, so this
/// bounds that work; Docker's own limits are lower for most (three name
/// servers are read by the resolver).
pub const MAX_NETWORK_VALUES: usize = 256;

/// How the container is networked, from the network keys of `[Container]`.
/// Serialised, fields at their default are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// `Network=`: the networks, in order. Empty: Docker's default bridge.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<Network>,
    /// `NetworkAlias=`: names of the container on every user-defined
    /// network it joins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// `IP=`: a static IPv4 address on its one user-defined network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    /// `IP6=`: a static IPv6 address on its one user-defined network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    /// `HostName=`: the host name in the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `AddHost=`: lines added to the container's `/etc/hosts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_hosts: Vec<HostEntry>,
    /// `DNS=`: name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<IpAddr>,
    /// `DNSOption=`: resolver options (`ndots:2`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_options: Vec<String>,
    /// `DNSSearch=`: search domains (`.` for none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    /// `ExposeHostPort=`: ports the container exposes without publishing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<ExposedPort>,
}

impl NetworkSpec {
    pub fn is_empty(&self) -> bool {
        *self == NetworkSpec::default()
    }

    /// The user-defined networks the container joins.
    pub fn user_networks(&self) -> impl Iterator<Item = (&str, &EndpointOptions)> {
        self.networks.iter().filter_map(|n| match n {
            Network::Named { name, options } => Some((name.as_str(), options)),
            _ => None,
        })
    }
}

/// One `Network=` value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Network {
    /// `host`: the host's own network stack.
    Host,
    /// `none`: only a loopback interface.
    None,
    /// `bridge`: Docker's default bridge, the default when no `Network=`
    /// is set; said explicitly, it may be joined with user networks.
    Bridge {
        #[serde(default, skip_serializing_if = "EndpointOptions::is_empty")]
        options: EndpointOptions,
    },
    /// A user-defined Docker network, by name (it must exist on the host),
    /// or `NAME.network`: the network of the unit `NAME-network.service`,
    /// whose Docker name the shim reads from that unit on the host.
    Named {
        name: String,
        #[serde(default, skip_serializing_if = "EndpointOptions::is_empty")]
        options: EndpointOptions,
    },
    /// `container:NAME`: the network stack of another container.
    Container { name: String },
}

impl Network {
    fn is_user_defined(&self) -> bool {
        matches!(self, Network::Named { .. })
    }

    /// A network mode that must be the container's only one.
    fn exclusive(&self) -> Option<&'static str> {
        match self {
            Network::Host => Some("host"),
            Network::None => Some("none"),
            Network::Container { .. } => Some("container:"),
            Network::Bridge { .. } | Network::Named { .. } => None,
        }
    }
}

/// Options after `Network=NAME:`, Docker's per-network endpoint settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointOptions {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    /// `mac=`: the interface's MAC address, `xx:xx:xx:xx:xx:xx`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

impl EndpointOptions {
    pub fn is_empty(&self) -> bool {
        *self == EndpointOptions::default()
    }
}

/// An `AddHost=` line of `/etc/hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEntry {
    pub name: String,
    /// An IP address, or `host-gateway` (Docker puts the host's address).
    pub address: String,
}

/// An `ExposeHostPort=` port or range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExposedPort {
    pub ports: PortRange,
    #[serde(default, skip_serializing_if = "super::is_default")]
    pub protocol: Protocol,
}

impl ExposedPort {
    /// Docker's `PORT/PROTOCOL` keys, one per port of the range.
    pub fn docker_keys(&self) -> impl Iterator<Item = String> + '_ {
        (self.ports.start..=self.ports.end)
            .map(move |p| format!("{p}/{}", protocol_name(self.protocol)))
    }
}

/// The keys this module reads.
pub(super) const NETWORK_KEYS: &[&str] = &[
    "Network",
    "NetworkAlias",
    "IP",
    "IP6",
    "HostName",
    "AddHost",
    "DNS",
    "DNSOption",
    "DNSSearch",
    "ExposeHostPort",
];

/// The network keys' part of a pass over `[Container]`.
#[derive(Default)]
pub(super) struct NetworkReader {
    pub(super) spec: NetworkSpec,
    /// The line of each effective `Network=`, in the order of
    /// `spec.networks`.
    network_lines: Vec<u32>,
    /// Whether an effective `Network=` is known only per instance.
    network_deferred: bool,
    /// The line of the effective value of each key, for the checks at the
    /// end (the first, for a repeatable key).
    lines: Vec<(&'static str, u32)>,
}

impl NetworkReader {
    fn note(&mut self, key: &'static str, line: u32, reset: bool) {
        if reset {
            self.lines.retain(|(k, _)| *k != key);
        } else if !self.lines.iter().any(|(k, _)| *k == key) {
            self.lines.push((key, line));
        }
    }

    fn line_of(&self, key: &str) -> Option<u32> {
        self.lines.iter().find(|(k, _)| *k == key).map(|(_, l)| *l)
    }

    /// Reads one assignment of a key of [`NETWORK_KEYS`].
    pub(super) fn entry(&mut self, name: &UnitName, diags: &mut Diagnostics, v: &ValueRef<'_>) {
        let Some(key) = NETWORK_KEYS.iter().copied().find(|k| *k == v.key) else {
            return;
        };
        let empty = v.value.trim().is_empty();
        if empty {
            self.reset(key);
            self.note(key, v.line, true);
            return;
        }
        if !matches!(key, "IP" | "IP6" | "HostName") && self.count(key) >= MAX_NETWORK_VALUES {
            diags.push(v.error(format!(
                "a container may have at most {MAX_NETWORK_VALUES} values of {key}="
            )));
            return;
        }
        let text = match expand_specifiers(name, v.value.trim()) {
            Ok(Some(text)) => text,
            Ok(None) => {
                if key == "Network" {
                    self.network_deferred = true;
                }
                return;
            }
            Err(message) => {
                diags.push(v.error(message));
                return;
            }
        };
        let result = self.assign(key, &text, v.line);
        match result {
            Ok(()) => {
                if matches!(key, "IP" | "IP6" | "HostName") {
                    self.note(key, v.line, true);
                }
                self.note(key, v.line, false);
            }
            Err(message) => diags.push(v.error(message)),
        }
    }

    fn count(&self, key: &str) -> usize {
        let s = &self.spec;
        match key {
            "Network" => s.networks.len(),
            "NetworkAlias" => s.aliases.len(),
            "AddHost" => s.add_hosts.len(),
            "DNS" => s.dns.len(),
            "DNSOption" => s.dns_options.len(),
            "DNSSearch" => s.dns_search.len(),
            "ExposeHostPort" => s.expose.len(),
            _ => 0,
        }
    }

    fn reset(&mut self, key: &str) {
        let s = &mut self.spec;
        match key {
            "Network" => {
                s.networks.clear();
                self.network_lines.clear();
                self.network_deferred = false;
            }
            "NetworkAlias" => s.aliases.clear(),
            "IP" => s.ip = None,
            "IP6" => s.ip6 = None,
            "HostName" => s.hostname = None,
            "AddHost" => s.add_hosts.clear(),
            "DNS" => s.dns.clear(),
            "DNSOption" => s.dns_options.clear(),
            "DNSSearch" => s.dns_search.clear(),
            "ExposeHostPort" => s.expose.clear(),
            _ => {}
        }
    }

    fn assign(&mut self, key: &str, text: &str, line: u32) -> Result<(), String> {
        // Each new value is compared with those before it: the limit above
        // bounds the comparisons per line.
        work::charge(self.count(key));
        let s = &mut self.spec;
        match key {
            "Network" => {
                let network = parse_network(text)?;
                let at = s.networks.iter().position(|n| same_network(n, &network));
                if let Some(i) = at {
                    return Err(format!(
                        "this network is already joined on line {}",
                        self.network_lines[i]
                    ));
                }
                s.networks.push(network);
                self.network_lines.push(line);
            }
            "NetworkAlias" => {
                let alias = parse_alias(text)?;
                if !s.aliases.contains(&alias) {
                    s.aliases.push(alias);
                }
            }
            "IP" => s.ip = Some(parse_ipv4(text)?),
            "IP6" => s.ip6 = Some(parse_ipv6(text)?),
            "HostName" => {
                check_hostname(text)?;
                s.hostname = Some(text.to_owned());
            }
            "AddHost" => {
                let entry = parse_add_host(text)?;
                s.add_hosts.push(entry);
            }
            "DNS" => {
                if text.eq_ignore_ascii_case("none") {
                    return Err("DNS=none is podman's; Docker always writes /etc/resolv.conf: leave DNS= unset for the host's name servers, or name servers by address".to_owned());
                }
                let ip = text.parse::<IpAddr>().map_err(|_| {
                    format!("expected the IP address of a name server, found {text:?}")
                })?;
                if !s.dns.contains(&ip) {
                    s.dns.push(ip);
                }
            }
            "DNSOption" => {
                check_word(text, "a resolver option such as ndots:2")?;
                s.dns_options.push(text.to_owned());
            }
            "DNSSearch" => {
                if text != "." {
                    check_hostname(text).map_err(|e| format!("a search domain: {e}"))?;
                }
                s.dns_search.push(text.to_owned());
            }
            "ExposeHostPort" => {
                let (ports, protocol) = match text.rsplit_once('/') {
                    Some((ports, proto)) => (ports, parse_protocol(proto)?),
                    None => (text, Protocol::Tcp),
                };
                let ports = parse_port_range(ports, "exposed")?;
                s.expose.push(ExposedPort { ports, protocol });
            }
            _ => {}
        }
        Ok(())
    }

    /// The checks once the whole section is read: what Docker refuses.
    /// `publish_line` is the first effective `PublishPort=`.
    pub(super) fn finish(self, publish_line: Option<u32>, diags: &mut Diagnostics) -> NetworkSpec {
        let s = &self.spec;
        let error = |diags: &mut Diagnostics, key: &str, line: u32, message: String| {
            diags.push(
                Diagnostic::error(Some(line).filter(|l| *l > 0), message).at_option(SECTION, key),
            );
        };
        // A mode that must stand alone.
        if s.networks.len() > 1 || self.network_deferred {
            for (n, line) in s.networks.iter().zip(&self.network_lines) {
                if let Some(mode) = n.exclusive() {
                    error(
                        diags,
                        "Network",
                        *line,
                        format!(
                            "Network={mode} cannot be combined with other networks: Docker gives such a container no other network"
                        ),
                    );
                }
            }
        }
        let mode = s
            .networks
            .iter()
            .zip(&self.network_lines)
            .find_map(|(n, line)| n.exclusive().map(|m| (m, *line)));
        let users = s.networks.iter().filter(|n| n.is_user_defined()).count();
        let users = if self.network_deferred {
            users.max(1)
        } else {
            users
        };
        if let Some((mode, mode_line)) = mode {
            let refused: &[(&str, &str)] = match mode {
                "host" => &[(
                    "PublishPort",
                    "ports cannot be published: the container uses the host's ports directly",
                )],
                "none" => &[(
                    "PublishPort",
                    "ports cannot be published: the container has no network",
                )],
                _ => &[
                    (
                        "PublishPort",
                        "ports cannot be published: they belong to the other container",
                    ),
                    (
                        "ExposeHostPort",
                        "ports cannot be exposed: they belong to the other container",
                    ),
                    ("HostName", "the host name is the other container's"),
                    ("AddHost", "/etc/hosts is the other container's"),
                    ("DNS", "DNS settings are the other container's"),
                    ("DNSOption", "DNS settings are the other container's"),
                    ("DNSSearch", "DNS settings are the other container's"),
                ],
            };
            for (key, why) in refused {
                let line = if *key == "PublishPort" {
                    publish_line
                } else {
                    self.line_of(key)
                };
                if let Some(line) = line {
                    error(
                        diags,
                        key,
                        line,
                        format!(
                            "{key}= does not apply with Network={mode} (line {mode_line}): {why}"
                        ),
                    );
                }
            }
        }
        let needs_user = [
            ("IP", "a static IPv4 address"),
            ("IP6", "a static IPv6 address"),
            ("NetworkAlias", "a network alias"),
        ];
        for (key, what) in needs_user {
            let Some(line) = self.line_of(key) else {
                continue;
            };
            if users == 0 {
                error(
                    diags,
                    key,
                    line,
                    format!(
                        "Docker gives {what} only on a user-defined network: join one with Network=NAME"
                    ),
                );
            } else if users > 1 && key != "NetworkAlias" {
                error(
                    diags,
                    key,
                    line,
                    format!(
                        "{key}= is ambiguous with {users} user-defined networks: give the address per network, as Network=NAME:ip=ADDRESS"
                    ),
                );
            }
        }
        self.spec
    }
}

fn same_network(a: &Network, b: &Network) -> bool {
    match (a, b) {
        (Network::Named { name: x, .. }, Network::Named { name: y, .. }) => x == y,
        (Network::Container { name: x }, Network::Container { name: y }) => x == y,
        (Network::Host, Network::Host)
        | (Network::None, Network::None)
        | (Network::Bridge { .. }, Network::Bridge { .. }) => true,
        _ => false,
    }
}

/// One `Network=` value: `host`, `none`, `bridge[:OPTIONS]`,
/// `container:NAME` or `NAME[:OPTIONS]`.
fn parse_network(text: &str) -> Result<Network, String> {
    let (head, options) = match text.split_once(':') {
        Some((head, options)) => (head, Some(options)),
        None => (text, None),
    };
    let no_options = |mode: &str| match options {
        None => Ok(()),
        Some(_) => Err(format!("Network={mode} takes no options after ':'")),
    };
    match head {
        "host" => no_options("host").map(|()| Network::Host),
        "none" => no_options("none").map(|()| Network::None),
        "container" => {
            let name = options.unwrap_or("");
            check_container_name(name).map_err(|e| format!("Network=container:NAME: {e}"))?;
            Ok(Network::Container {
                name: name.to_owned(),
            })
        }
        "bridge" => {
            let options = parse_endpoint_options(options)?;
            if !options.aliases.is_empty() || options.ip.is_some() || options.ip6.is_some() {
                return Err(
                    "Docker's default bridge takes no alias or static address (only mac=): create a user-defined network for them"
                        .to_owned(),
                );
            }
            Ok(Network::Bridge { options })
        }
        "slirp4netns" | "pasta" | "private" | "ns" => Err(format!(
            "Network={head} is podman's and Docker has no such mode: use bridge, host, none, container:NAME or a Docker network's name"
        )),
        _ if head.ends_with(".container") => Err(format!(
            "{head:?} names a Podman Quadlet .container file; to share a container's network, name its container: Network=container:flotilla-{}",
            head.trim_end_matches(".container")
        )),
        _ if head.ends_with(".network") => {
            super::object::check_reference(head, "network")?;
            Ok(Network::Named {
                name: head.to_owned(),
                options: parse_endpoint_options(options)?,
            })
        }
        _ => {
            check_network_name(head)?;
            Ok(Network::Named {
                name: head.to_owned(),
                options: parse_endpoint_options(options)?,
            })
        }
    }
}

/// Docker network names: as container names, one letter or more.
fn check_network_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid =
        chars.next().is_some_and(|c| c.is_ascii_alphanumeric()) && chars.all(super::is_name_char);
    if valid {
        Ok(())
    } else {
        Err(format!(
            "expected host, none, bridge, container:NAME or a Docker network's name (letters, digits, '_', '.' or '-', starting with a letter or digit), found {name:?}"
        ))
    }
}

/// `alias=A,ip=X,ip6=Y,mac=M` after `Network=NAME:`.
fn parse_endpoint_options(options: Option<&str>) -> Result<EndpointOptions, String> {
    let mut out = EndpointOptions::default();
    let Some(options) = options else {
        return Ok(out);
    };
    for option in options.split(',') {
        let (key, value) = option.split_once('=').ok_or_else(|| {
            format!("expected network options KEY=VALUE (alias, ip, ip6, mac), found {option:?}")
        })?;
        match key {
            "alias" => out.aliases.push(parse_alias(value)?),
            "ip" => set_once(&mut out.ip, parse_ipv4(value)?, key)?,
            "ip6" => set_once(&mut out.ip6, parse_ipv6(value)?, key)?,
            "mac" => set_once(&mut out.mac, parse_mac(value)?, key)?,
            "interface_name" => {
                return Err(
                    "network option interface_name is podman's: Docker names the interfaces itself"
                        .to_owned(),
                );
            }
            _ => {
                return Err(format!(
                    "unknown network option {key:?}: Docker takes alias, ip, ip6 and mac"
                ));
            }
        }
    }
    Ok(out)
}

fn set_once<T>(slot: &mut Option<T>, value: T, key: &str) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("network option {key} is given twice"));
    }
    *slot = Some(value);
    Ok(())
}

fn parse_alias(text: &str) -> Result<String, String> {
    check_hostname(text).map_err(|e| format!("a network alias: {e}"))?;
    Ok(text.to_owned())
}

fn parse_ipv4(text: &str) -> Result<Ipv4Addr, String> {
    text.parse()
        .map_err(|_| format!("expected an IPv4 address such as 10.88.64.128, found {text:?}"))
}

fn parse_ipv6(text: &str) -> Result<Ipv6Addr, String> {
    text.parse()
        .map_err(|_| format!("expected an IPv6 address such as fd00::10, found {text:?}"))
}

fn parse_mac(text: &str) -> Result<String, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let valid = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    if valid {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(format!(
            "expected a MAC address such as 02:42:ac:11:00:02, found {text:?}"
        ))
    }
}

fn parse_protocol(text: &str) -> Result<Protocol, String> {
    match text.to_ascii_lowercase().as_str() {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        "sctp" => Ok(Protocol::Sctp),
        _ => Err(format!(
            "unknown protocol {text:?}: expected tcp, udp or sctp"
        )),
    }
}

/// A host name: dot-separated labels of letters, digits and '-' (also '_',
/// which Docker's DNS serves), 1 to 63 each, 253 in all.
fn check_hostname(text: &str) -> Result<(), String> {
    let valid = text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "expected a host name (labels of letters, digits and '-' separated by '.'), found {text:?}"
        ))
    }
}

/// One word of printable characters, no spaces.
fn check_word(text: &str, what: &str) -> Result<(), String> {
    if text.chars().all(|c| c.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(format!("expected {what}, found {text:?}"))
    }
}

/// `AddHost=NAME:ADDRESS` (also `NAME=ADDRESS`, as Docker takes since
/// 25.0); ADDRESS an IP address or `host-gateway`.
fn parse_add_host(text: &str) -> Result<HostEntry, String> {
    let bad = |why: String| {
        format!(
            "expected HOSTNAME:IP such as db:10.0.0.5 (or host-gateway for the IP), found {text:?}: {why}"
        )
    };
    let (name, address) = text
        .split_once('=')
        .or_else(|| text.split_once(':'))
        .ok_or_else(|| bad("no ':' between the name and the address".to_owned()))?;
    if name.contains(';') {
        return Err(bad(
            "podman's several names per line (a;b:IP): Docker takes one name per AddHost="
                .to_owned(),
        ));
    }
    check_hostname(name).map_err(bad)?;
    let address = address.trim_start_matches('[').trim_end_matches(']');
    if address != "host-gateway" && address.parse::<IpAddr>().is_err() {
        return Err(bad(format!("{address:?} is not an IP address")));
    }
    Ok(HostEntry {
        name: name.to_owned(),
        address: address.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_values() {
        assert_eq!(parse_network("host"), Ok(Network::Host));
        assert!(parse_network("host:x=1").is_err());
        assert_eq!(
            parse_network("container:db-1"),
            Ok(Network::Container {
                name: "db-1".into()
            })
        );
        let n = parse_network("backend:alias=api,ip=10.1.0.5,mac=02:42:AC:11:00:02").unwrap();
        let Network::Named { name, options } = n else {
            panic!("{n:?}");
        };
        assert_eq!(name, "backend");
        assert_eq!(options.aliases, ["api"]);
        assert_eq!(options.ip, Some(Ipv4Addr::new(10, 1, 0, 5)));
        assert_eq!(options.mac.as_deref(), Some("02:42:ac:11:00:02"));
        for bad in [
            "pasta",
            "backend:interface_name=eth1",
            "backend:ip=1.2.3.4,ip=1.2.3.5",
            "bridge:ip=1.2.3.4",
            "container:",
            "-x",
            "db.container",
            "backend:ip6=10.0.0.1",
        ] {
            assert!(parse_network(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn add_host_values() {
        let e = parse_add_host("db:10.0.0.5").unwrap();
        assert_eq!((e.name.as_str(), e.address.as_str()), ("db", "10.0.0.5"));
        let e = parse_add_host("v6:fd00::1").unwrap();
        assert_eq!(e.address, "fd00::1");
        let e = parse_add_host("gw=host-gateway").unwrap();
        assert_eq!(e.address, "host-gateway");
        assert!(parse_add_host("a;b:1.2.3.4").is_err());
        assert!(parse_add_host("db").is_err());
        assert!(parse_add_host("db:nowhere").is_err());
    }
}
