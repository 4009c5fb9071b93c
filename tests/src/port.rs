//! Free TCP ports for servers a test starts and names in advance (a raft
//! peer list, a child process's `--listen`, etcd's URLs).
//!
//! A port found by binding port 0 and releasing it is taken from the
//! kernel's ephemeral range, the same range it hands out for every
//! outgoing connection: while a test waits to start its server, any
//! connection made by another test running beside it can take the port,
//! and the server fails with "address in use". [`free_port`] hands out
//! ports below that range instead, each one once per process, starting
//! at an offset of the process id so that two test processes do not walk
//! the same ports, and only ports that bind at the moment they are given.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port handed out: above the well-known and commonly
/// configured ports (etcd's 2379, a registry's 5000, 8080, 9090).
const LOWEST: u32 = 10_000;

/// The ports this process hands out.
static PORTS: Ports = Ports::new();

/// A TCP port nothing listens on, outside the kernel's ephemeral range,
/// not handed out before by this process. It is free when returned (it
/// binds on every address); a server started on it soon after gets it
/// unless something outside the tests binds that very port.
///
/// Panics when no port in the range binds.
pub fn free_port() -> u16 {
    PORTS.next()
}

/// A walk over the range, one candidate after another.
struct Ports {
    /// The next candidate, as an offset from the start of the range;
    /// `u32::MAX` until first used, then set from the process id.
    next: AtomicU32,
}

impl Ports {
    const fn new() -> Ports {
        Ports {
            next: AtomicU32::new(u32::MAX),
        }
    }

    fn next(&self) -> u16 {
        let (low, high) = range();
        let size = high - low;
        let start = std::process::id().wrapping_mul(7919) % size;
        // Only the first call sets the start; the others find it set.
        let _ = self
            .next
            .compare_exchange(u32::MAX, start, Ordering::Relaxed, Ordering::Relaxed);
        for _ in 0..size {
            let offset = self.next.fetch_add(1, Ordering::Relaxed) % size;
            let port = (low + offset) as u16;
            if TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok() {
                return port;
            }
        }
        panic!("no free TCP port in {low}..{high}");
    }
}

/// The ports to hand out: from [`LOWEST`] up to the kernel's ephemeral
/// range, or above it when it starts too low to leave room.
fn range() -> (u32, u32) {
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(str::parse::<u32>);
            Some((it.next()?.ok()?, it.next()?.ok()?))
        })
        .unwrap_or((32_768, 60_999));
    match ephemeral {
        (start, _) if start >= LOWEST + 1_000 => (LOWEST, start),
        (_, end) if end < 64_535 => (end + 1, 65_536),
        _ => (LOWEST, 32_768),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_outside_the_ephemeral_range_and_not_repeated() {
        let (low, high) = range();
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        for &p in &ports {
            assert!(
                (low..high).contains(&u32::from(p)),
                "{p} not in {low}..{high}"
            );
            TcpListener::bind((Ipv4Addr::LOCALHOST, p)).expect("the port binds");
        }
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
    }

    #[test]
    fn a_port_in_use_is_not_handed_out() {
        let ports = Ports::new();
        let held = TcpListener::bind((Ipv4Addr::UNSPECIFIED, ports.next())).unwrap();
        let held_port = held.local_addr().unwrap().port();
        // Walk back onto the held port: it is skipped.
        let (low, _) = range();
        ports
            .next
            .store(u32::from(held_port) - low, Ordering::Relaxed);
        let p = ports.next();
        assert_ne!(p, held_port);
    }
}
