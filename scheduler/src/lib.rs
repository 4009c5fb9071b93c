//! flotilla's scheduler: the store contract and its backends (embedded and
//! etcd), leader election with fencing, placement, the reconcile loop and
//! machine liveness. See `DESIGN.md` at the repository root for the map.
//!
//! - [`store`]: the store contract (etcd v3 semantics) and its local
//!   backends, [`store::MemoryStore`] for tests and the durable
//!   [`store::EmbeddedStore`].

pub mod placement;
pub mod store;
