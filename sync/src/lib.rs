//! Git sources: the leader follows a branch of a repository and applies
//! each new commit as `flotilla apply` would.

pub mod git;
