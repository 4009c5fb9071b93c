//! flotilla's domain types and its unit-file model.
//!
//! This crate does no I/O and depends on nothing heavy, so that every other
//! part of flotilla can use it: the scheduler, the API, the agent and the
//! CLI.
//!
//! - [`unit_file`]: systemd unit-file syntax (parse, serialise, content hash).
//! - [`name`]: unit names, templates, instances and specifiers.
//! - [`fleet`]: the `[X-Fleet]` placement options, with fleet's semantics.
//! - [`container`]: the `[Container]` section of container units.
//! - [`resources`]: resource requests read from systemd's own settings.
//! - [`rollout`]: rolling updates of units whose contents change together.
//! - [`machine`]: machines, their ids, metadata and capacity.
//! - [`cluster`]: the id a cluster is given once, when it is made.
//! - [`field`]: checks of the strings machines and operators supply.
//! - [`state`]: desired state (fleet's three) and observed unit state.
//! - [`mod@unit`]: a whole unit checked together ([`UnitSpec::check`]).
//! - [`value`]: booleans and quoted word lists as systemd reads them.
//! - [`wire`]: the JSON shapes of the HTTP API.
//! - [`event`]: the cluster's history (`GET /v1/events`).
//! - [`token`]: the bearer tokens' format, and join strings.
//! - [`secret`]: secrets of the cluster, as the API carries them.
//! - [`trust`]: roles, credentials and audit entries, as the API carries
//!   them.
//! - [`diagnostic`]: errors and warnings that name the line and option.
//! - [`backoff`]: retry delays with jitter and a cap, for every retry loop.
//! - [`work`]: a count of the steps reading a unit file takes, for tests.

pub mod backoff;
pub mod bundle;
pub mod cluster;
pub mod container;
pub mod diagnostic;
pub mod duration;
pub mod event;
pub mod field;
pub mod fleet;
pub mod fleet_v1;
pub mod inspect;
pub mod machine;
pub mod name;
pub mod quadlet;
pub mod resources;
pub mod rollout;
pub mod rollout_groups;
pub mod secret;
pub mod state;
pub mod suggest;
pub mod sync;
pub mod token;
pub mod trust;
pub mod unit;
pub mod unit_file;
pub mod value;
pub mod wire;
pub mod work;

pub use cluster::ClusterId;
pub use diagnostic::{Diagnostic, Severity, UnitFileError};
pub use machine::{Capacity, Machine, MachineId};
pub use name::{UnitName, UnitType};
pub use state::{DesiredState, Health, UnitState};
pub use unit::{Checked, UnitSpec};
pub use unit_file::UnitFile;
