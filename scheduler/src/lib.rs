//! flotilla's scheduler: the store contract and its backends (embedded and
//! etcd), leader election with fencing, placement, the reconcile loop and
//! machine liveness. See `DESIGN.md` at the repository root for the map.
//!
//! Nothing is implemented here yet; the crate exists so that the workspace
//! has the shape the design describes.
