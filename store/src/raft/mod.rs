//! The raft-replicated store: the shared state machine (`state.rs`) behind a
//! raft log replicated between servers.

mod transport;

pub use transport::{Inbox, NodeId, Transport};
