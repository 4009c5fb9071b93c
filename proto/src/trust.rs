//! Who may do what: roles, credentials and the audit log, as the API
//! carries them (see docs/security.md for the model).
//!
//! People and tools hold a token or a client certificate with a [`Role`].
//! Machines hold a credential bound to their machine id, obtained once with
//! a join token. The secret of a token is shown once, when it is made, and
//! stored only as a hash.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::machine::MachineId;

/// What a credential may do.
///
/// `Viewer < Operator < Admin` is an order: each may do what the one before
/// it may. `Join` and `Machine` stand apart: a join token may only be
/// exchanged for a machine credential, and a machine credential may only
/// act as its own machine on the agent routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads units, states, machines and servers.
    Viewer,
    /// Also creates, changes, starts, stops and destroys units.
    Operator,
    /// Also manages credentials and machines, and reads the audit log.
    Admin,
    /// Exchanges itself for a machine credential (`flotilla agent
    /// --join-token`), and nothing else.
    Join,
    /// An agent: registers, heartbeats, reads the units feed and reports
    /// state, for its own machine only.
    Machine,
    /// A metrics scraper (Prometheus): reads `GET /metrics`, and nothing
    /// else.
    Metrics,
}

impl Role {
    /// Every role, in the order the documentation lists them.
    pub const ALL: [Role; 6] = [
        Role::Viewer,
        Role::Operator,
        Role::Admin,
        Role::Join,
        Role::Machine,
        Role::Metrics,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Join => "join",
            Role::Machine => "machine",
            Role::Metrics => "metrics",
        }
    }

    /// Whether this role is one of the people's roles (viewer, operator,
    /// admin) and at least `least`.
    pub fn at_least(self, least: Role) -> bool {
        self.is_person() && least.is_person() && self >= least
    }

    /// Viewer, operator and admin: the roles of people and tools.
    pub fn is_person(self) -> bool {
        matches!(self, Role::Viewer | Role::Operator | Role::Admin)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of [`Role::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: expected viewer, operator, admin, join, machine or metrics")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// The form a credential takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialKind {
    /// A bearer token (`Authorization: Bearer flt1....`).
    Token,
    /// A client certificate signed by the cluster's CA.
    Certificate,
}

/// A credential as listings show it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialInfo {
    /// 16 hex digits; the part of a token before its secret, and a
    /// certificate's serial number.
    pub id: String,
    /// A name for people, such as `ci-deploy` or `alice`.
    pub name: String,
    pub role: Role,
    pub kind: CredentialKind,
    /// For a machine credential: the machine it acts as.
    #[serde(rename = "machineID", default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<MachineId>,
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// When it stops working, if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
    /// For a join token limited in uses: how many are left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses_left: Option<u32>,
    /// Who made it (`name (id)` of the credential that asked).
    pub created_by: String,
}

/// `POST /v1/tokens`: make a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenCreate {
    pub role: Role,
    pub name: String,
    /// How long it works, in milliseconds; forever when absent (but for
    /// join tokens, which default to one hour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// For join tokens: how many machines may join with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u32>,
}

/// The answer to `POST /v1/tokens` and `POST /v1/agent/join`: the only
/// time the secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenCreated {
    pub credential: CredentialInfo,
    /// The whole token: `flt1.<id>.<secret>`.
    pub token: String,
    /// For a join token: the token with the cluster CA's fingerprint
    /// appended, which is all an agent needs (`flotilla agent
    /// --join-token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<String>,
}

/// `GET /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialList {
    pub credentials: Vec<CredentialInfo>,
}

/// `POST /v1/agent/join`: a machine asks for its credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    #[serde(rename = "machineID")]
    pub machine_id: MachineId,
}

/// `POST /v1/certs`: sign a client certificate. The private key stays
/// with whoever asked: only its certificate signing request travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertCreate {
    pub role: Role,
    pub name: String,
    /// A PKCS#10 certificate signing request, PEM.
    pub csr_pem: String,
    /// How long the certificate is valid, in milliseconds (default: one
    /// year).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

/// The answer to `POST /v1/certs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertIssued {
    pub credential: CredentialInfo,
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// The cluster CA's certificate, PEM, to verify the servers with.
    pub ca_pem: String,
}

/// `GET /v1/whoami`: the credential a request was made with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WhoAmI {
    pub id: String,
    pub name: String,
    pub role: Role,
    #[serde(rename = "machineID", default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<MachineId>,
}

/// One change made through the API, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// Milliseconds since the Unix epoch, when the server answered.
    pub at_ms: u64,
    /// The credential's id.
    pub actor_id: String,
    /// The credential's name.
    pub actor_name: String,
    pub role: Role,
    /// `METHOD /path` as requested.
    pub action: String,
    /// What it was about: a unit, a machine, a credential (empty when the
    /// route names none).
    pub target: String,
    /// The HTTP status of the answer.
    pub status: u16,
    /// Where the request came from (`address:port`).
    pub peer: String,
}

/// `GET /v1/audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_order_people_only() {
        assert!(Role::Admin.at_least(Role::Operator));
        assert!(Role::Operator.at_least(Role::Viewer));
        assert!(!Role::Viewer.at_least(Role::Operator));
        assert!(!Role::Machine.at_least(Role::Viewer));
        assert!(!Role::Join.at_least(Role::Viewer));
        assert!(!Role::Admin.at_least(Role::Machine));
        assert!(!Role::Metrics.at_least(Role::Viewer));
        assert!(!Role::Admin.at_least(Role::Metrics));
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("root".parse::<Role>().is_err());
    }
}
