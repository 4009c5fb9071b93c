//! The machine's credential: obtained once with a join token, kept in the
//! agent's state directory (mode 0600), and reused at every start. With it
//! the agent can act as its own machine and nothing else.
//!
//! The state directory (`/var/lib/flotilla-agent` by default) holds:
//! - `credential`: the machine's token;
//! - `ca.crt`: the cluster CA the servers are checked against, from
//!   `--ca` or fetched and pinned with the join string's fingerprint;
//! - `cluster-id`: the cluster the machine joined, written at its first
//!   registration ([`ClusterMemory`]). A registration or a set of units
//!   from another cluster (a server on a wiped or wrong store) is refused
//!   and changes nothing on the machine.
//!
//! A machine removed from the cluster (`flotilla machine remove`) finds its
//! credential refused; it keeps its units as they are (as when cut off) and
//! says so in its log. To join again, delete `credential` and give a new
//! join token.

use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla_api::client::{Client, ClientError, ClientOptions};
use flotilla_api::tls::{ServerTrust, fetch_ca};
use flotilla_proto::backoff::Backoff;
use flotilla_proto::token::{JoinString, TokenParseError};
use flotilla_proto::{ClusterId, MachineId};
use tokio::sync::watch;

use crate::runtime::stop_requested;

/// Where the agent keeps its credential by default.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/flotilla-agent";
/// The machine's token, in the state directory.
pub const CREDENTIAL_FILE: &str = "credential";
/// The cluster CA, in the state directory.
pub const CA_FILE: &str = "ca.crt";
/// The id of the cluster the machine joined, in the state directory.
pub const CLUSTER_ID_FILE: &str = "cluster-id";

/// The cluster this machine belongs to: remembered from its first
/// registration, checked on every registration and every set of units
/// after it.
#[derive(Debug)]
pub struct ClusterMemory {
    path: PathBuf,
    known: std::sync::Mutex<Option<ClusterId>>,
}

/// An answer from a cluster other than the machine's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the servers answer for cluster {found}, but this machine belongs to cluster {expected} (recorded in {path}): refusing their orders and changing nothing on this machine; check the agent's servers, or, to move this machine to that cluster, delete its state directory and join again"
)]
pub struct OtherCluster {
    pub expected: ClusterId,
    pub found: ClusterId,
    pub path: PathBuf,
}

impl ClusterMemory {
    /// What the state directory remembers (nothing yet on a new machine).
    pub fn load(state_dir: &Path) -> Result<ClusterMemory, CredentialError> {
        let path = state_dir.join(CLUSTER_ID_FILE);
        let known = match std::fs::read_to_string(&path) {
            Ok(text) => Some(
                ClusterId::parse(text.trim()).map_err(|e| CredentialError::Io {
                    path: path.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                })?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(CredentialError::Io { path, source }),
        };
        Ok(ClusterMemory {
            path,
            known: std::sync::Mutex::new(known),
        })
    }

    /// Accepts an answer from cluster `found`: the first one is remembered
    /// (and written down); any other later is refused.
    pub fn check(&self, found: ClusterId) -> Result<(), OtherCluster> {
        let mut known = self
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match *known {
            Some(expected) if expected == found => Ok(()),
            Some(expected) => Err(OtherCluster {
                expected,
                found,
                path: self.path.clone(),
            }),
            None => {
                let dir = self.path.parent().unwrap_or(Path::new("/"));
                if let Err(e) = write_private(dir, &self.path, &format!("{found}\n")) {
                    // Still remembered for as long as the agent runs.
                    tracing::warn!("cannot record the cluster id: {e}");
                }
                tracing::info!(cluster = %found, "this machine belongs to cluster {found}");
                *known = Some(found);
                Ok(())
            }
        }
    }
}

/// How the agent calls the servers: its token and whom it trusts.
#[derive(Clone)]
pub struct Access {
    pub token: String,
    pub trust: ServerTrust,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

/// Why the machine has no credential and cannot get one.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot use the state directory: {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "this machine has not joined the cluster ({path} does not exist): give a join token (flotilla agent --join-token, or join-token: in the agent's configuration; an admin makes one with `flotilla token create --role join`)"
    )]
    NotJoined { path: PathBuf },
    #[error("the join token is not valid: {0}")]
    BadJoinToken(#[from] TokenParseError),
    #[error(
        "the join token carries no CA fingerprint and no --ca was given: the agent cannot tell the real servers from an impostor"
    )]
    NoTrust,
    #[error("the servers refused to let this machine join: {0}")]
    Refused(ClientError),
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("stopped before the machine joined")]
    Stopped,
}

/// What the agent is given to reach the servers.
#[derive(Debug, Clone)]
pub struct JoinSettings<'a> {
    pub servers: &'a [String],
    pub state_dir: &'a Path,
    /// `--join-token`: a join token, or a join string (with the CA's
    /// fingerprint).
    pub join_token: Option<&'a str>,
    /// `--ca`: the cluster CA's certificate, PEM.
    pub ca: Option<&'a [u8]>,
}

/// The machine's credential: the one kept in the state directory, or a
/// new one obtained with the join token (retrying while no server answers,
/// until `stopped`).
pub async fn obtain(
    settings: &JoinSettings<'_>,
    machine: &MachineId,
    stopped: &mut watch::Receiver<bool>,
) -> Result<Access, CredentialError> {
    let credential_path = settings.state_dir.join(CREDENTIAL_FILE);
    let ca_path = settings.state_dir.join(CA_FILE);
    if credential_path.exists() {
        let token = read(&credential_path)?.trim().to_owned();
        let trust = match settings.ca {
            Some(pem) => ServerTrust::CaPem(pem.to_vec()),
            None if ca_path.exists() => ServerTrust::CaPem(read(&ca_path)?.into_bytes()),
            None => ServerTrust::System,
        };
        return Ok(Access { token, trust });
    }
    let Some(join) = settings.join_token else {
        return Err(CredentialError::NotJoined {
            path: credential_path,
        });
    };
    let join = JoinString::parse(join)?;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let ca_pem = match (settings.ca, &join.ca_fingerprint) {
        (Some(pem), _) => pem.to_vec(),
        (None, Some(fp)) => 'fetch: loop {
            for server in settings.servers {
                match fetch_ca(server, fp).await {
                    Ok(pem) => break 'fetch pem,
                    Err(e) => tracing::warn!("cannot fetch the cluster CA: {e}"),
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff.next_delay()) => {}
                () = stop_requested(stopped) => return Err(CredentialError::Stopped),
            }
        },
        (None, None) => return Err(CredentialError::NoTrust),
    };
    let client = Client::with_options(
        settings.servers,
        ClientOptions {
            token: Some(join.token.expose()),
            trust: ServerTrust::CaPem(ca_pem.clone()),
            identity: None,
        },
    )?
    .with_timeout(Duration::from_secs(10));
    backoff.reset();
    let created = loop {
        let joined = tokio::select! {
            r = client.join(machine) => r,
            () = stop_requested(stopped) => return Err(CredentialError::Stopped),
        };
        match joined {
            Ok(created) => break created,
            Err(e) if e.is_temporary() => {
                tracing::warn!("cannot join the cluster yet, trying again: {e}");
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                    () = stop_requested(stopped) => return Err(CredentialError::Stopped),
                }
            }
            Err(e) => return Err(CredentialError::Refused(e)),
        }
    };
    write_private(
        settings.state_dir,
        &ca_path,
        &String::from_utf8_lossy(&ca_pem),
    )?;
    write_private(
        settings.state_dir,
        &credential_path,
        &format!("{}\n", created.token),
    )?;
    tracing::info!(
        machine = %machine,
        credential = %created.credential.id,
        "joined the cluster; the credential is kept in {}",
        credential_path.display()
    );
    Ok(Access {
        token: created.token,
        trust: ServerTrust::CaPem(ca_pem),
    })
}

fn read(path: &Path) -> Result<String, CredentialError> {
    std::fs::read_to_string(path).map_err(|source| CredentialError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes `text` to `path` (mode 0600) whole, making `dir` (0700) if
/// needed.
fn write_private(dir: &Path, path: &Path, text: &str) -> Result<(), CredentialError> {
    debug_assert_eq!(path.parent(), Some(dir));
    flotilla_api::files::write_atomically(path, text.as_bytes(), 0o600).map_err(|source| {
        CredentialError::Io {
            path: path.to_owned(),
            source,
        }
    })
}
