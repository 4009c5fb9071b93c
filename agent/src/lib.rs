//! flotilla's per-host agent: renders assigned units into systemd over
//! D-Bus, runs container units inside their unit's cgroup, and reports
//! observed state and health.
//!
//! - [`container`]: container units: how they are rendered into a service
//!   whose main process is `flotilla shim`, and the shim itself.
//! - [`credential`]: the machine's credential, obtained once with a join
//!   token and kept in the agent's state directory.
//! - [`cut_off`]: `StopAfterCutOff=`, stopping units while the machine is
//!   cut off from the servers.
//! - [`notify`]: systemd's notification protocol (`sd_notify`).
//! - [`Agent`] ([`runtime`]): the agent assembled: registration and lease,
//!   the feed of this machine's units, reconcile passes, state reports.
//! - [`reconcile`]: one pass: render every unit, write what changed,
//!   reload once, start/stop/restart.
//! - [`systemd`]: the narrow [`SystemdManager`](systemd::SystemdManager)
//!   trait, its D-Bus implementation and an in-memory fake.
//! - [`unit_dir`]: the unit files flotilla writes and the marker that
//!   tells them apart.
//! - [`report`]: unit states from systemd's signals, batched to the servers.
//! - [`machine`]: the machine's id, hostname, addresses and capacity.
//! - [`metrics`]: the agent's Prometheus metrics (docs/metrics.md).

pub mod container;
pub mod credential;
pub mod cut_off;
pub mod inspect;
pub mod machine;
pub mod metrics;
pub mod notify;
pub mod reconcile;
pub mod report;
pub mod runtime;
pub mod systemd;
pub mod unit_dir;

pub use runtime::{Agent, AgentConfig, AgentError};
