//! Container units: a `.service` with a `[Container]` section runs a Docker
//! container as the service itself, inside the unit's cgroup
//! (`docs/containers.md` is the user's guide).
//!
//! - [`render`]: the unit file flotilla writes for a container unit, whose
//!   main process is `flotilla shim`.
//! - [`shim`]: `flotilla shim run|stop|cleanup`, the unit's processes.
//! - [`config`]: the rendered `[X-Container]` section read back, and the
//!   container Docker creates from it.
//! - [`network`]: the network and mount keys in Docker's terms.
//! - [`object`]: `.network` and `.volume` units, and the containers that
//!   name them.
//! - [`cgroup`]: the unit's cgroup subtree, where the shim and the
//!   container live.
//! - [`runtime`]: the seam to the container engine ([`ContainerRuntime`]),
//!   with [`docker`] (the real one) and [`fake`] (in memory, for tests).
//! - [`systemd`]: the seam to systemd's manager over D-Bus
//!   ([`systemd::UnitControl`]).

pub mod cgroup;
pub mod config;
pub mod docker;
pub mod fake;
pub mod network;
pub mod object;
pub mod render;
pub mod runtime;
pub mod shim;
pub mod systemd;

pub use runtime::ContainerRuntime;

#[cfg(test)]
mod shim_tests;
