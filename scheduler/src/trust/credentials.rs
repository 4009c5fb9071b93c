//! [`Credentials`]: every credential of the cluster, kept in the store
//! (`auth/creds/<id>`) and followed by each server in memory, so that
//! checking a request costs no store round trip.
//!
//! Each server loads the prefix once and then follows its watch. A change a
//! server makes itself (a new token, a revocation, a join) is waited for in
//! its own view before the call returns, so a revoked token is refused by
//! that server from the moment `revoke` answers, and by the others as soon
//! as the watch reaches them (milliseconds).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flotilla_proto::MachineId;
use flotilla_proto::trust::{CredentialInfo, CredentialKind, Role, TokenCreate};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::token::{RandomError, Token, TokenParseError, constant_time_eq, generate, sha256_hex};
use super::view::{Held, View, follow, lock_read};
use crate::keys::Keys;
use crate::records;
use flotilla_store::{Compare, CompareOp, Store, StoreError, Txn, TxnOp};

/// How long a join token works when its maker gives no TTL.
pub const DEFAULT_JOIN_TTL: Duration = Duration::from_secs(3600);

/// Longest name of a credential.
pub const MAX_NAME_LEN: usize = 128;

/// Most credentials a cluster keeps (people, tools and machines together).
pub const MAX_CREDENTIALS: usize = 100_000;

/// How many times joining reads the join token again when other machines
/// used it at the same time.
const JOIN_ATTEMPTS: usize = 64;

/// How long a caller waits for the credentials to be loaded, or for its
/// own write to show in this server's view, before giving up.
const VIEW_DEADLINE: Duration = Duration::from_secs(5);

/// A credential as the store keeps it: what listings show, and the hash
/// of a token's secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialRecord {
    #[serde(flatten)]
    pub info: CredentialInfo,
    /// SHA-256 of a token's secret, hex; absent for certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_sha256: Option<String>,
}

/// Who made a request: the credential it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// For a machine credential, the machine it acts as.
    pub machine: Option<MachineId>,
}

impl Identity {
    /// `name (id)`, as the audit log and `createdBy` name a credential.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.name, self.id)
    }

    fn of(record: &CredentialRecord) -> Identity {
        Identity {
            id: record.info.id.clone(),
            name: record.info.name.clone(),
            role: record.info.role,
            machine: record.info.machine_id.clone(),
        }
    }
}

/// Why a credential was refused (401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Malformed(#[from] TokenParseError),
    #[error("the credential is unknown or was revoked")]
    Unknown,
    #[error("the credential expired")]
    Expired,
    #[error("the join token has no uses left")]
    NoUsesLeft,
    /// The credentials are not loaded yet (503, not 401): the store is
    /// slow or down.
    #[error("the server cannot check credentials now: {0}")]
    Unavailable(String),
}

/// Why managing credentials failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TrustError {
    /// A request that cannot be done as asked (400).
    #[error("{0}")]
    Invalid(String),
    /// Nothing by that id (404).
    #[error("{what} does not exist")]
    NotFound { what: String },
    /// Refused for what it would do (403), such as a second credential for
    /// a machine that has one.
    #[error("{0}")]
    Forbidden(String),
    /// The cluster holds as many credentials as it may (507).
    #[error("the cluster holds {limit} credentials, its limit: revoke some first")]
    Full { limit: usize },
    /// The store could not be used now (503); temporary.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A bug or corrupt data (500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for TrustError {
    fn from(e: StoreError) -> TrustError {
        match e {
            // Its message starts "store unavailable" too: said once.
            StoreError::Unavailable { reason } => TrustError::Unavailable(reason),
            e if e.is_temporary() => TrustError::Unavailable(e.to_string()),
            e => TrustError::Internal(e.to_string()),
        }
    }
}

impl From<RandomError> for TrustError {
    fn from(e: RandomError) -> TrustError {
        TrustError::Internal(e.to_string())
    }
}

/// Every credential of the cluster; see the module documentation.
pub struct Credentials {
    pub(super) store: Arc<dyn Store>,
    pub(super) keys: Keys,
    pub(super) view: RwLock<View>,
    /// The last store revision applied to the view; `None` until loaded.
    pub(super) applied: watch::Sender<Option<u64>>,
    /// SHA-256 of the token given to the server with `--token`, if any.
    static_admin: Option<String>,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("keys", &self.keys)
            .field("applied", &*self.applied.borrow())
            .finish_non_exhaustive()
    }
}

impl Drop for Credentials {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Credentials {
    /// Starts following the credentials in `store` (inside a tokio
    /// runtime). `static_admin`, the token given to the server with
    /// `--token`, is an admin credential this server alone knows.
    pub fn start(
        store: Arc<dyn Store>,
        keys: Keys,
        static_admin: Option<&str>,
    ) -> Arc<Credentials> {
        let (applied, _) = watch::channel(None);
        let (stop, stopped) = watch::channel(false);
        let credentials = Arc::new(Credentials {
            store,
            keys,
            view: RwLock::new(View::default()),
            applied,
            static_admin: static_admin.map(|t| sha256_hex(t.as_bytes())),
            stop,
        });
        tokio::spawn(follow(Arc::downgrade(&credentials), stopped));
        credentials
    }

    /// Who `presented` (a bearer token) is.
    pub async fn authenticate_token(&self, presented: &str) -> Result<Identity, AuthError> {
        if let Some(hash) = &self.static_admin
            && constant_time_eq(sha256_hex(presented.as_bytes()).as_bytes(), hash.as_bytes())
        {
            return Ok(Identity {
                id: "static".into(),
                name: "the server's --token".into(),
                role: Role::Admin,
                machine: None,
            });
        }
        let token = Token::parse(presented)?;
        self.loaded().await?;
        let view = lock_read(&self.view);
        let held = view.by_id.get(token.id()).ok_or(AuthError::Unknown)?;
        let record = &held.record;
        let matches = record.info.kind == CredentialKind::Token
            && record
                .secret_sha256
                .as_deref()
                .is_some_and(|h| constant_time_eq(h.as_bytes(), token.secret_hash().as_bytes()));
        if !matches {
            return Err(AuthError::Unknown);
        }
        check_usable(record, now_ms())?;
        Ok(Identity::of(record))
    }

    /// Who holds the client certificate with this serial number (hex, as
    /// [`crate::trust::token::hex`] prints it). The certificate itself was
    /// checked against the cluster CA by TLS; this checks that it was not
    /// revoked.
    pub async fn authenticate_certificate(&self, serial: &str) -> Result<Identity, AuthError> {
        self.loaded().await?;
        let view = lock_read(&self.view);
        let held = view.by_id.get(serial).ok_or(AuthError::Unknown)?;
        if held.record.info.kind != CredentialKind::Certificate {
            return Err(AuthError::Unknown);
        }
        check_usable(&held.record, now_ms())?;
        Ok(Identity::of(&held.record))
    }

    /// Every credential, by name then id.
    pub async fn list(&self) -> Result<Vec<CredentialInfo>, TrustError> {
        self.loaded()
            .await
            .map_err(|e| TrustError::Unavailable(e.to_string()))?;
        let view = lock_read(&self.view);
        let mut out: Vec<CredentialInfo> =
            view.by_id.values().map(|h| h.record.info.clone()).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Makes a token for a person, a tool, or machines to join with.
    pub async fn create_token(
        &self,
        create: &TokenCreate,
        by: &Identity,
    ) -> Result<(CredentialInfo, Token), TrustError> {
        if create.role == Role::Machine {
            return Err(TrustError::Invalid(
                "machine credentials are made by joining: create a join token and give it to the agent (flotilla agent --join-token)".into(),
            ));
        }
        if create.uses.is_some() && create.role != Role::Join {
            return Err(TrustError::Invalid(
                "only join tokens have a number of uses".into(),
            ));
        }
        if create.uses == Some(0) {
            return Err(TrustError::Invalid(
                "a join token needs at least one use".into(),
            ));
        }
        let ttl = match (create.ttl_ms, create.role) {
            (Some(0), _) => return Err(TrustError::Invalid("a ttl must be positive".into())),
            (Some(ms), _) => Some(ms),
            (None, Role::Join) => Some(duration_ms(DEFAULT_JOIN_TTL)),
            (None, _) => None,
        };
        let token = generate()?;
        let now = now_ms();
        let record = CredentialRecord {
            info: CredentialInfo {
                id: token.id().to_owned(),
                name: check_name(&create.name)?,
                role: create.role,
                kind: CredentialKind::Token,
                machine_id: None,
                created_ms: now,
                expires_ms: ttl.map(|t| now.saturating_add(t)),
                uses_left: create.uses,
                created_by: by.describe(),
            },
            secret_sha256: Some(token.secret_hash()),
        };
        self.insert(&record, Vec::new(), Vec::new()).await?;
        Ok((record.info, token))
    }

    /// Records a client certificate about to be signed, with the serial
    /// number `id`; call [`Credentials::revoke`] if signing then fails.
    pub async fn create_certificate(
        &self,
        id: &str,
        name: &str,
        role: Role,
        expires_ms: u64,
        by: &Identity,
    ) -> Result<CredentialInfo, TrustError> {
        if !role.is_person() && role != Role::Metrics {
            return Err(TrustError::Invalid(format!(
                "client certificates are for people and tools (viewer, operator, admin or metrics), not {role}"
            )));
        }
        let record = CredentialRecord {
            info: CredentialInfo {
                id: id.to_owned(),
                name: check_name(name)?,
                role,
                kind: CredentialKind::Certificate,
                machine_id: None,
                created_ms: now_ms(),
                expires_ms: Some(expires_ms),
                uses_left: None,
                created_by: by.describe(),
            },
            secret_sha256: None,
        };
        self.insert(&record, Vec::new(), Vec::new()).await?;
        Ok(record.info)
    }

    /// Exchanges a join token (whose holder is `join`) for the credential
    /// of machine `machine`: a token that can act as that machine only. A
    /// machine that holds a credential already cannot join again until it
    /// is removed (`flotilla machine remove`).
    pub async fn join(
        &self,
        join: &Identity,
        machine: &MachineId,
    ) -> Result<(CredentialInfo, Token), TrustError> {
        if join.role != Role::Join {
            return Err(TrustError::Forbidden(
                "only a join token can join a machine".into(),
            ));
        }
        let bound = self.keys.machine_credential(machine);
        let join_key = self.keys.credential(&join.id);
        for _ in 0..JOIN_ATTEMPTS {
            let got = self.store.get(&join_key).await?;
            let Some(kv) = got.kv else {
                return Err(TrustError::Forbidden(
                    "the join token is unknown or was revoked".into(),
                ));
            };
            let held = Held {
                record: records::decode(&join_key, &kv.value)
                    .map_err(|e| TrustError::Internal(e.to_string()))?,
                mod_revision: kv.mod_revision,
            };
            check_usable(&held.record, now_ms())
                .map_err(|e| TrustError::Forbidden(e.to_string()))?;
            let token = generate()?;
            let record = CredentialRecord {
                info: CredentialInfo {
                    id: token.id().to_owned(),
                    name: format!("machine {machine}"),
                    role: Role::Machine,
                    kind: CredentialKind::Token,
                    machine_id: Some(machine.clone()),
                    created_ms: now_ms(),
                    expires_ms: None,
                    uses_left: None,
                    created_by: join.describe(),
                },
                secret_sha256: Some(token.secret_hash()),
            };
            // The join token as it was read must still be there (not
            // revoked meanwhile); a token limited in uses counts this one,
            // and only such a token is written, so that machines joining
            // together with an unlimited token do not contend.
            let compares = vec![
                Compare::absent(&bound),
                Compare::mod_revision(&join_key, CompareOp::Equal, held.mod_revision),
            ];
            let mut ops = vec![TxnOp::put(&bound, record.info.id.as_bytes().to_vec())];
            if let Some(left) = held.record.info.uses_left {
                let mut join_record = held.record.clone();
                join_record.info.uses_left = Some(left.saturating_sub(1));
                ops.push(TxnOp::put(&join_key, records::encode(&join_record)));
            }
            match self.try_insert(&record, compares, ops).await? {
                true => return Ok((record.info, token)),
                false => {
                    if self.store.get(&bound).await?.kv.is_some() {
                        return Err(TrustError::Forbidden(format!(
                            "machine {machine} has joined already: remove it first (flotilla machine remove {machine}), then join again"
                        )));
                    }
                    // The join token was used by another machine at the
                    // same time: read it again, after a moment of a
                    // random length, so that many machines joining at once
                    // spread out.
                    let pause = super::token::random_bytes(1).map_or(5, |b| u64::from(b[0] % 20));
                    tokio::time::sleep(Duration::from_millis(1 + pause)).await;
                }
            }
        }
        Err(TrustError::Unavailable(
            "the join token kept changing under concurrent joins; try again".into(),
        ))
    }

    /// Revokes a credential: it is refused from now on. A machine's
    /// credential is revoked with its binding, so that the machine may join
    /// again.
    pub async fn revoke(&self, id: &str) -> Result<CredentialInfo, TrustError> {
        let key = self.keys.credential(id);
        let got = self.store.get(&key).await?;
        let Some(kv) = got.kv else {
            return Err(TrustError::NotFound {
                what: format!("credential {id}"),
            });
        };
        let record: CredentialRecord =
            records::decode(&key, &kv.value).map_err(|e| TrustError::Internal(e.to_string()))?;
        let mut ops = vec![TxnOp::delete(&key)];
        if let Some(machine) = &record.info.machine_id {
            ops.push(TxnOp::delete(self.keys.machine_credential(machine)));
        }
        let txn = Txn::new()
            .when([Compare::mod_revision(
                &key,
                CompareOp::Equal,
                kv.mod_revision,
            )])
            .and_then(ops);
        let resp = self.store.txn(txn).await?;
        if !resp.succeeded {
            return Err(TrustError::Unavailable(format!(
                "credential {id} changed while it was revoked; try again"
            )));
        }
        self.seen(resp.revision).await;
        Ok(record.info)
    }

    /// Removes machine `machine`: revokes its credential and deletes its
    /// registration, so that its units are placed elsewhere and its agent
    /// is refused from now on.
    pub async fn remove_machine(&self, machine: &MachineId) -> Result<(), TrustError> {
        let bound = self.keys.machine_credential(machine);
        let machine_key = self.keys.machine(machine);
        let got = self.store.get(&bound).await?;
        let registered = self.store.get(&machine_key).await?.kv.is_some();
        let mut ops = vec![TxnOp::delete(&machine_key)];
        let mut compares = Vec::new();
        match &got.kv {
            Some(kv) => {
                let id = String::from_utf8_lossy(&kv.value).into_owned();
                ops.push(TxnOp::delete(&bound));
                ops.push(TxnOp::delete(self.keys.credential(&id)));
                compares.push(Compare::mod_revision(
                    &bound,
                    CompareOp::Equal,
                    kv.mod_revision,
                ));
            }
            None if !registered => {
                return Err(TrustError::NotFound {
                    what: format!("machine {machine}"),
                });
            }
            None => {}
        }
        let resp = self
            .store
            .txn(Txn::new().when(compares).and_then(ops))
            .await?;
        if !resp.succeeded {
            return Err(TrustError::Unavailable(format!(
                "machine {machine} joined again while it was removed; try again"
            )));
        }
        self.seen(resp.revision).await;
        Ok(())
    }

    /// At a cluster's first start, makes its first admin token and writes
    /// it to `DATA_DIR/admin.token` (mode 0600). Returns the file when it
    /// was written now; `None` when the cluster has its first admin
    /// already (made by this server or another).
    pub async fn bootstrap_admin(&self, data_dir: &Path) -> Result<Option<PathBuf>, TrustError> {
        let path = data_dir.join(ADMIN_TOKEN_FILE);
        let pending = data_dir.join(format!("{ADMIN_TOKEN_FILE}.new"));
        let bootstrap = self.keys.bootstrap();
        if self.store.get(&bootstrap).await?.kv.is_some() {
            // A crash between the store write and the rename leaves the
            // token in the pending file: finish the job.
            if let Ok(text) = std::fs::read_to_string(&pending) {
                self.loaded()
                    .await
                    .map_err(|e| TrustError::Unavailable(e.to_string()))?;
                let known = Token::parse(&text)
                    .ok()
                    .is_some_and(|t| lock_read(&self.view).by_id.contains_key(t.id()));
                if known {
                    publish(&pending, &path)?;
                    return Ok(Some(path));
                }
                let _ = std::fs::remove_file(&pending);
            }
            return Ok(None);
        }
        let token = generate()?;
        write_private(&pending, &format!("{}\n", token.expose()))?;
        let now = now_ms();
        let record = CredentialRecord {
            info: CredentialInfo {
                id: token.id().to_owned(),
                name: "admin".into(),
                role: Role::Admin,
                kind: CredentialKind::Token,
                machine_id: None,
                created_ms: now,
                expires_ms: None,
                uses_left: None,
                created_by: "the cluster's first start".into(),
            },
            secret_sha256: Some(token.secret_hash()),
        };
        let made = self
            .try_insert(
                &record,
                vec![Compare::absent(&bootstrap)],
                vec![TxnOp::put(&bootstrap, now.to_string().into_bytes())],
            )
            .await?;
        if made {
            publish(&pending, &path)?;
            Ok(Some(path))
        } else {
            let _ = std::fs::remove_file(&pending);
            Ok(None)
        }
    }

    // ---- plumbing ----

    async fn insert(
        &self,
        record: &CredentialRecord,
        compares: Vec<Compare>,
        ops: Vec<TxnOp>,
    ) -> Result<(), TrustError> {
        if self.try_insert(record, compares, ops).await? {
            Ok(())
        } else {
            Err(TrustError::Unavailable(format!(
                "credential id {} was taken; try again",
                record.info.id
            )))
        }
    }

    /// Writes `record` (which must be new) with `ops`, if `compares` hold;
    /// waits until this server's view has it.
    async fn try_insert(
        &self,
        record: &CredentialRecord,
        mut compares: Vec<Compare>,
        mut ops: Vec<TxnOp>,
    ) -> Result<bool, TrustError> {
        self.loaded()
            .await
            .map_err(|e| TrustError::Unavailable(e.to_string()))?;
        if lock_read(&self.view).by_id.len() >= MAX_CREDENTIALS {
            return Err(TrustError::Full {
                limit: MAX_CREDENTIALS,
            });
        }
        let key = self.keys.credential(&record.info.id);
        compares.push(Compare::absent(&key));
        ops.push(TxnOp::put(&key, records::encode(record)));
        let resp = self
            .store
            .txn(Txn::new().when(compares).and_then(ops))
            .await?;
        if resp.succeeded {
            self.seen(resp.revision).await;
        }
        Ok(resp.succeeded)
    }

    /// Waits until the view is loaded.
    async fn loaded(&self) -> Result<(), AuthError> {
        let mut applied = self.applied.subscribe();
        match tokio::time::timeout(VIEW_DEADLINE, applied.wait_for(Option::is_some)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(AuthError::Unavailable(
                "the credentials are not loaded from the store yet".into(),
            )),
        }
    }

    /// Waits until the view has applied `revision` (a write of this
    /// server), for at most a few seconds: past that, the watch is behind
    /// and the write shows when it catches up.
    async fn seen(&self, revision: u64) {
        let mut applied = self.applied.subscribe();
        if tokio::time::timeout(
            VIEW_DEADLINE,
            applied.wait_for(|r| r.is_some_and(|r| r >= revision)),
        )
        .await
        .is_err()
        {
            tracing::warn!(revision, "the credentials view is behind the store");
        }
    }
}

/// The file a cluster's first admin token is written to, in the data
/// directory of the server that made it.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

fn check_usable(record: &CredentialRecord, now: u64) -> Result<(), AuthError> {
    if record.info.expires_ms.is_some_and(|at| at <= now) {
        return Err(AuthError::Expired);
    }
    if record.info.uses_left == Some(0) {
        return Err(AuthError::NoUsesLeft);
    }
    Ok(())
}

fn check_name(name: &str) -> Result<String, TrustError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(TrustError::Invalid("a credential needs a name".into()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(TrustError::Invalid(format!(
            "a credential's name is at most {MAX_NAME_LEN} bytes"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(TrustError::Invalid(
            "a credential's name has no control characters".into(),
        ));
    }
    Ok(name.to_owned())
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Writes `text` to a new file readable by its owner only, and syncs it.
fn write_private(path: &Path, text: &str) -> Result<(), TrustError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io =
        |e: std::io::Error| TrustError::Internal(format!("cannot write {}: {e}", path.display()));
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Renames `from` to `to` and syncs their directory.
fn publish(from: &Path, to: &Path) -> Result<(), TrustError> {
    std::fs::rename(from, to)
        .map_err(|e| TrustError::Internal(format!("cannot write {}: {e}", to.display())))?;
    if let Some(dir) = to.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}
