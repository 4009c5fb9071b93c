//! The machine the agent runs on, as it registers it: its id, hostname,
//! addresses, capacity and the operator's metadata.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use flotilla_proto::{Capacity, Machine, MachineId};

/// Where systemd keeps the machine's id.
pub const MACHINE_ID_FILE: &str = "/etc/machine-id";

/// The agent's version, as registered.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Why the machine could not be described.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error("cannot read the machine id from {path}: {source}")]
    ReadId {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} does not hold a machine id: {source}")]
    BadId {
        path: PathBuf,
        source: flotilla_proto::machine::MachineIdError,
    },
}

/// The machine's id, from `path` (normally [`MACHINE_ID_FILE`]).
pub fn machine_id(path: &Path) -> Result<MachineId, MachineError> {
    let text = std::fs::read_to_string(path).map_err(|source| MachineError::ReadId {
        path: path.to_owned(),
        source,
    })?;
    MachineId::parse(text.trim()).map_err(|source| MachineError::BadId {
        path: path.to_owned(),
        source,
    })
}

/// The kernel's hostname; `localhost` if it cannot be read.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The machine's addresses other than loopback and IPv6 link-local, IPv4
/// first (the most likely to be reachable), each once, in interface order.
pub fn addresses() -> Vec<String> {
    let found = match if_addrs::get_if_addrs() {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!("cannot list the machine's network addresses: {e}");
            return Vec::new();
        }
    };
    order_addresses(found.iter().map(|i| i.ip()))
}

fn order_addresses(ips: impl Iterator<Item = IpAddr>) -> Vec<String> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for ip in ips {
        match ip {
            IpAddr::V4(a) if !a.is_loopback() && !a.is_unspecified() => v4.push(ip),
            // fe80::/10: link-local, useless to anyone else without a zone.
            IpAddr::V6(a)
                if !a.is_loopback()
                    && !a.is_unspecified()
                    && (a.segments()[0] & 0xffc0) != 0xfe80 =>
            {
                v6.push(ip)
            }
            _ => {}
        }
    }
    let mut out: Vec<String> = Vec::new();
    for ip in v4.into_iter().chain(v6) {
        let s = ip.to_string();
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// What the machine offers units: its CPUs (those this process may use)
/// and its memory (`MemTotal` of `/proc/meminfo`).
pub fn capacity() -> Capacity {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1);
    let memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| mem_total(&text))
        .unwrap_or(0);
    Capacity {
        cpu_millis: cpus * 1000,
        memory_bytes,
    }
}

/// `MemTotal:  16318204 kB` in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    let unit = words.next().unwrap_or("B");
    let factor = match unit {
        "kB" => 1024,
        "B" => 1,
        _ => return None,
    };
    value.checked_mul(factor)
}

/// The whole description of this machine, read from the host now.
pub fn describe(
    machine_id_file: &Path,
    metadata: &BTreeMap<String, String>,
) -> Result<Machine, MachineError> {
    Ok(Machine {
        id: machine_id(machine_id_file)?,
        hostname: hostname(),
        addresses: addresses(),
        metadata: metadata.clone(),
        capacity: capacity(),
        agent_version: AGENT_VERSION.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory() {
        let text = "MemTotal:       16318204 kB\nMemFree:  1 kB\n";
        assert_eq!(mem_total(text), Some(16318204 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        assert!(capacity().cpu_millis >= 1000);
        assert!(capacity().memory_bytes > 0);
    }

    #[test]
    fn address_order() {
        let ips = [
            "127.0.0.1",
            "::1",
            "fe80::1",
            "2001:db8::5",
            "10.0.0.2",
            "10.0.0.2",
            "192.168.1.4",
        ]
        .map(|s| s.parse::<IpAddr>().unwrap());
        assert_eq!(
            order_addresses(ips.into_iter()),
            ["10.0.0.2", "192.168.1.4", "2001:db8::5"]
        );
    }

    #[test]
    fn machine_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("machine-id");
        std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").unwrap();
        let m = describe(&path, &BTreeMap::new()).unwrap();
        assert_eq!(m.id.as_str(), "0123456789abcdef0123456789abcdef");
        assert_eq!(m.agent_version, AGENT_VERSION);
        std::fs::write(&path, "nope\n").unwrap();
        assert!(matches!(machine_id(&path), Err(MachineError::BadId { .. })));
        assert!(matches!(
            machine_id(&dir.path().join("absent")),
            Err(MachineError::ReadId { .. })
        ));
    }
}
