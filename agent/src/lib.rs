//! flotilla's per-host agent: renders assigned units into systemd over
//! D-Bus, runs container units inside their unit's cgroup, and reports
//! observed state and health.
//!
//! Nothing is implemented here yet; the crate exists so that the workspace
//! has the shape the design describes.
