//! An in-process network between raft nodes, for tests: it delivers frames
//! between the nodes of one process and can drop, delay, duplicate and
//! reorder them, partition the nodes, and cut a node off (a crash).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Inbox, NodeId, Transport};
use crate::lock;

/// What the network does to frames (all off by default).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NetworkFaults {
    /// Chance that a frame is lost, 0 to 1.
    pub drop: f64,
    /// Chance that a frame is delivered twice.
    pub duplicate: f64,
    /// Frames are delayed by a random time up to this (which also reorders
    /// them).
    pub max_delay: Duration,
}

#[derive(Default)]
struct Net {
    inboxes: HashMap<NodeId, Arc<dyn Inbox>>,
    /// Each node's side of a partition; nodes on different sides cannot
    /// talk. Empty: no partition.
    sides: HashMap<NodeId, usize>,
    faults: NetworkFaults,
    rng: u64,
    delivered: u64,
    dropped: u64,
}

impl Net {
    fn random(&mut self) -> f64 {
        // xorshift64*: enough for fault injection, repeatable per seed.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn connected(&self, from: NodeId, to: NodeId) -> bool {
        match (self.sides.get(&from), self.sides.get(&to)) {
            (Some(a), Some(b)) => a == b,
            // A node not named in the partition is on a side of its own.
            (None, None) => self.sides.is_empty(),
            _ => false,
        }
    }
}

/// An in-process network between raft nodes, for tests: it delivers
/// frames between the nodes of one process and can drop, delay, duplicate
/// and reorder them, partition the nodes, and cut a node off.
#[derive(Clone)]
pub struct LocalNetwork {
    net: Arc<Mutex<Net>>,
    runtime: tokio::runtime::Handle,
}

impl LocalNetwork {
    /// A network with no faults; `seed` makes its faults repeatable. Must be
    /// made inside a tokio runtime (delayed frames are delivered by tasks).
    pub fn new(seed: u64) -> Self {
        LocalNetwork {
            net: Arc::new(Mutex::new(Net {
                rng: seed.max(1),
                ..Net::default()
            })),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// The transport of node `id`.
    pub fn transport(&self, id: NodeId) -> Arc<dyn Transport> {
        Arc::new(Endpoint {
            id,
            network: self.clone(),
        })
    }

    /// Connects node `id`'s inbox (a node started or restarted).
    pub fn attach(&self, id: NodeId, inbox: Arc<dyn Inbox>) {
        lock(&self.net).inboxes.insert(id, inbox);
    }

    /// Disconnects node `id` (a node crashed or stopped).
    pub fn detach(&self, id: NodeId) {
        lock(&self.net).inboxes.remove(&id);
    }

    /// Splits the nodes into groups that cannot reach each other; a node
    /// in no group reaches nobody.
    pub fn partition(&self, groups: &[&[NodeId]]) {
        let mut net = lock(&self.net);
        net.sides.clear();
        for (side, group) in groups.iter().enumerate() {
            for &id in *group {
                net.sides.insert(id, side);
            }
        }
    }

    /// Ends every partition.
    pub fn heal(&self) {
        lock(&self.net).sides.clear();
    }

    /// Sets the faults applied to frames from now on.
    pub fn set_faults(&self, faults: NetworkFaults) {
        lock(&self.net).faults = faults;
    }

    /// Frames delivered and dropped so far.
    pub fn counts(&self) -> (u64, u64) {
        let net = lock(&self.net);
        (net.delivered, net.dropped)
    }

    fn send(&self, from: NodeId, to: NodeId, frame: Vec<u8>) {
        let mut net = lock(&self.net);
        let inbox = match net.inboxes.get(&to) {
            Some(inbox) if net.connected(from, to) && net.inboxes.contains_key(&from) => {
                inbox.clone()
            }
            _ => {
                net.dropped += 1;
                return;
            }
        };
        let faults = net.faults;
        if net.random() < faults.drop {
            net.dropped += 1;
            return;
        }
        let copies = if net.random() < faults.duplicate {
            2
        } else {
            1
        };
        for _ in 0..copies {
            net.delivered += 1;
            if faults.max_delay.is_zero() {
                inbox.deliver(from, frame.clone());
            } else {
                let delay = faults.max_delay.mul_f64(net.random());
                let (inbox, frame, network) = (inbox.clone(), frame.clone(), self.net.clone());
                self.runtime.spawn(async move {
                    tokio::time::sleep(delay).await;
                    // A node detached meanwhile (crashed) receives nothing.
                    let attached = lock(&network).inboxes.contains_key(&to);
                    if attached {
                        inbox.deliver(from, frame);
                    }
                });
            }
        }
    }
}

/// One node's side of the network.
struct Endpoint {
    id: NodeId,
    network: LocalNetwork,
}

impl Transport for Endpoint {
    fn send(&self, to: NodeId, frame: Vec<u8>) {
        self.network.send(self.id, to, frame);
    }

    fn set_peers(&self, _peers: &BTreeMap<NodeId, String>) {}
}
