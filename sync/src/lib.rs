//! Git sources: the leader follows a branch of a repository and applies
//! each new commit as `flotilla apply` would (docs/git-sync.md).
//!
//! - [`git`]: the fetch of one branch and the read of a commit's files,
//!   with gitoxide.
//! - [`transport`]: how each transport is reached (credentials, trust).
//! - [`signed`]: commits signed by a source's keys.
//! - [`sources`]: the sources and their status in the store.
//! - [`plan`]: what a commit changes, and drift.
//! - [`mod@follow`]: the leader's task per source.
//!
//! A crate of its own so that gitoxide enters only the server's build.

pub mod follow;
pub mod git;
pub mod plan;
pub mod signed;
pub mod sources;
pub mod transport;

pub use follow::{FollowConfig, SyncMetrics, follow};
pub use sources::{SourceLimits, Sources, SourcesError};
