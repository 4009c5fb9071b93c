//! Who may do what: the cluster's credentials and its audit log, kept in
//! the store so that every server (one on the embedded store, several on
//! etcd) checks the same ones. docs/security.md describes the model.
//!
//! - [`token`]: the bearer tokens' format (`flt1.<id>.<secret>`), how they
//!   are made and hashed, and join strings (a join token with the cluster
//!   CA's fingerprint).
//! - [`Credentials`]: tokens and client certificates with their roles,
//!   machine credentials bound to a machine id, join, revoke, the first
//!   admin token; followed in memory by each server.
//! - [`AuditLog`]: every change, who made it and how it ended.
//!
//! Authorization (which role may call which route) is the API's: see
//! `flotilla_api::server::ROUTES`.

mod audit;
mod credentials;
pub mod token;
mod view;

pub use audit::{AuditLog, AuditRetention, MAX_AUDIT_PAGE};
pub use credentials::{
    ADMIN_TOKEN_FILE, AuthError, CredentialRecord, Credentials, DEFAULT_JOIN_TTL, Identity,
    MAX_CREDENTIALS, TrustError, now_ms,
};
pub use token::{JoinString, Token, TokenParseError};
