//! Container units: a `.service` with a `[Container]` section runs a Docker
//! container as the service itself, inside the unit's cgroup
//! (`docs/containers.md` is the user's guide).
//!
//! - [`render`]: the unit file flotilla writes for a container unit, whose
//!   main process is `flotilla shim`.
//! - [`shim`]: `flotilla shim run|stop|cleanup`, the unit's processes.
//! - [`config`]: the rendered `[X-Container]` section read back, and the
//!   container Docker creates from it.
//! - [`host_config`]: devices, limits, security options and what the
//!   container takes from the host, in Docker's terms.
//! - [`reload`]: `flotilla shim reload`, what `systemctl reload` does.
//! - [`network`]: the network and mount keys in Docker's terms.
//! - [`object`]: `.network` and `.volume` units, and the containers that
//!   name them.
//! - [`cgroup`]: the unit's cgroup subtree, where the shim and the
//!   container live.
//! - [`pull`]: the image pulled before the container is created, per
//!   `Pull=` (and [`auto_update`]: a newer one while it runs), with [`auth`] finding the registry's credentials (and
//!   `credential_helper` asking Docker's credential helpers).
//! - [`runtime`]: the seam to the container engine ([`ContainerRuntime`]),
//!   with [`docker`] (the real one) and [`fake`] (in memory, for tests).
//! - [`secrets`]: `Secret=` on the host: the files the agent writes, the
//!   shim's binds and variables.
//! - [`systemd`]: the seam to systemd's manager over D-Bus
//!   ([`systemd::UnitControl`]).

pub mod auth;
pub mod auto_update;
pub mod cgroup;
pub mod config;
mod credential_helper;
pub mod docker;
mod docker_pull;
pub mod fake;
pub mod host_config;
pub mod network;
pub mod object;
pub mod pull;
pub mod reload;
pub mod render;
pub mod runtime;
pub mod secrets;
pub mod shim;
pub mod systemd;

pub use runtime::ContainerRuntime;

#[cfg(test)]
mod pull_tests;
#[cfg(test)]
mod shim_tests;
