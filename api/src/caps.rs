//! Connection caps shared by the API's and the peers' listeners: how many
//! connections are open in all and from each IP address, with each
//! connection's place given back when it ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// The connection caps: in all, and per IP address.
pub(crate) struct Caps {
    max: usize,
    per_ip: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One connection's place under the caps, given back when dropped.
pub(crate) struct Slot {
    caps: Arc<Caps>,
    ip: IpAddr,
}

impl Caps {
    pub(crate) fn new(max: usize, per_ip: usize) -> Caps {
        Caps {
            max,
            per_ip,
            open: Mutex::new((0, HashMap::new())),
        }
    }

    pub(crate) fn take(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let (total, by_ip) = &mut *open;
        let mine = by_ip.entry(ip).or_insert(0);
        if *total >= self.max || *mine >= self.per_ip {
            if *mine == 0 {
                by_ip.remove(&ip);
            }
            return None;
        }
        *total += 1;
        *mine += 1;
        Some(Slot {
            caps: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .caps
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (total, by_ip) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(n) = by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                by_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_in_all_and_per_ip_and_are_given_back() {
        let caps = Arc::new(Caps::new(3, 2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = caps.take(a).unwrap();
        let _a2 = caps.take(a).unwrap();
        assert!(caps.take(a).is_none(), "third from one IP");
        let _b1 = caps.take(b).unwrap();
        assert!(caps.take(b).is_none(), "fourth in all");
        drop(a1);
        assert!(caps.take(b).is_some());
    }
}
