//! flotilla's scheduler: the control plane over the store contract
//! (`flotilla-store`), leader election with fencing, placement, and the
//! reconcile loop. `docs/architecture.md` walks through them.
//!
//! - [`metered_store`]: a store that records each call's latency in the
//!   scheduler's metrics.
//! - [`keys`] and [`records`]: where everything lives in the store, and as
//!   what.
//! - [`identity`]: which cluster a server serves, so that a store that came
//!   up empty by mistake is refused rather than served.
//! - [`control`] and [`cluster`]: everything the API asks of the control
//!   plane, and its implementation over the store.
//! - [`leader`]: leader election, and the fence every leader write carries.
//! - [`presence`]: each server announces itself, for `list-servers`.
//! - [`quota`]: the cluster's quotas and the counters that enforce them.
//! - `placement`: which machine each unit runs on (pure, no I/O).
//! - [`reconciler`]: the leader's loop from watch events to committed
//!   placements; `commit`: how its writes are committed (fenced, several
//!   transactions at once).
//! - [`rollout`]: rolling updates: starting them, and the leader's loop
//!   that restarts their units in waves.
//! - [`events`]: the cluster's history, in the store with bounded
//!   retention.
//! - `liveness`: which machines' heartbeats are overdue, for the states
//!   the API shows.
//! - [`census`] and [`metrics`]: the units by state, and the scheduler's
//!   Prometheus metrics (docs/metrics.md).
//! - [`trust`]: credentials (tokens, client certificates, machines) and
//!   the audit log.

mod agents;
pub mod census;
pub mod cluster;
mod commit;
pub mod control;
pub mod events;
pub mod identity;
pub mod keys;
pub mod leader;
mod listing;
mod liveness;
pub mod metered_store;
pub mod metrics;
mod parsed;
pub mod placement;
pub mod presence;
pub mod quota;
mod reconcile_events;
pub mod reconciler;
pub mod records;
pub mod rollout;
pub mod secrets;
pub mod trust;
pub mod warm;
