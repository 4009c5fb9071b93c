//! `PublishPort=`: ports of the container published on the host.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

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

pub(super) fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// `[[IP:][HOST-PORT]:]CONTAINER-PORT[/PROTOCOL]`.
pub(super) fn parse_port_mapping(text: &str) -> Result<PortMapping, String> {
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
                let ip = if ip.is_empty() {
                    // `:80:92`: no address, every address, as podman and
                    // Docker read it.
                    None
                } else {
                    Some(IpAddr::V4(
                        ip.parse::<std::net::Ipv4Addr>()
                            .map_err(|_| format!("{ip:?} is not an IPv4 address"))?,
                    ))
                };
                (ip, ports)
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

pub(super) fn parse_port_range(text: &str, side: &str) -> Result<PortRange, String> {
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
pub(super) fn host_ports_clash(a: &PortMapping, b: &PortMapping) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
