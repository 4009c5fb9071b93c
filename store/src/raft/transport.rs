//! The seam between a raft node and the network: raft's messages between
//! servers travel as opaque frames (each one or more encoded raft messages).
//! The server's peer transport (mutual TLS between the servers of one
//! cluster) implements [`Transport`] and hands what it receives to an
//! [`Inbox`]; the tests use an in-process transport that can drop, delay,
//! duplicate and partition.

use std::collections::BTreeMap;
use std::sync::Arc;

/// A raft node's id: unique in its cluster, never reused.
pub type NodeId = u64;

/// Where a node sends frames to its peers.
///
/// Sending is best effort and must not block: a frame to a peer that is
/// unknown, unreachable or too far behind is dropped, and raft sends again
/// (heartbeats, retried appends). Frames to one peer should arrive in the
/// order sent when they arrive at all; raft tolerates loss, duplicates and
/// reordering, only more slowly.
pub trait Transport: Send + Sync + 'static {
    /// Queues `frame` for the peer `to`.
    fn send(&self, to: NodeId, frame: Vec<u8>);

    /// The cluster's members and their peer addresses (`https://HOST:PORT`),
    /// whenever they change: at start, and when a membership change is
    /// applied. Peers no longer listed are forgotten (their connections
    /// closed).
    fn set_peers(&self, peers: &BTreeMap<NodeId, String>);
}

/// Where a transport delivers the frames it receives from peers.
pub trait Inbox: Send + Sync + 'static {
    /// Takes one frame received from the peer `from` (as its certificate,
    /// checked by the transport, names it). Must not block; a frame that
    /// cannot be decoded, or that claims to come from another server, is
    /// dropped with a log line.
    fn deliver(&self, from: NodeId, frame: Vec<u8>);
}

impl<T: Inbox + ?Sized> Inbox for Arc<T> {
    fn deliver(&self, from: NodeId, frame: Vec<u8>) {
        (**self).deliver(from, frame);
    }
}
