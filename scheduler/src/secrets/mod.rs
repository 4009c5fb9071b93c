//! [`Secrets`]: the cluster's secrets, kept in the store sealed with the
//! cluster's [`SecretsKey`], made and removed by people, listed without
//! their values, and opened only for the agents of machines whose units
//! use them (the API checks that; this module keeps the values).
//!
//! Each secret is two keys, written together:
//!
//! | key | value |
//! |---|---|
//! | `secrets/meta/<name>` | [`SecretMeta`]: version, size, times, the key's id |
//! | `secrets/value/<name>` | the sealed value, hex |
//!
//! so that listings, counts and the versions in agents' feeds never read
//! (or wake on) a value.

mod seal;

pub use seal::{KEY_FILE, KeyError, SecretsKey};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use flotilla_proto::UnitFile;
use flotilla_proto::secret::{
    MAX_SECRET_BYTES, MAX_SECRETS, SecretInfo, SecretValue, check_secret_name,
};
use serde::{Deserialize, Serialize};

use crate::keys::Keys;
use crate::records::{self, UnitRecord};
use crate::trust::now_ms;
use flotilla_store::{
    Compare, CompareOp, RangeOptions, Store, StoreError, Txn, TxnOp, TxnOpResponse,
};

use seal::{hex, unhex};

/// Units read per page when listing which units use which secret.
const UNITS_PAGE: usize = 500;

/// `secrets/meta/<name>`: what is known of a secret, never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretMeta {
    pub version: u64,
    pub size: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// The id of the key the value is sealed with.
    pub key_id: String,
}

/// Why a secrets call failed; each variant is one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// A bad name or value (400).
    #[error("{0}")]
    Invalid(String),
    /// No such secret (404).
    #[error("secret {name} does not exist")]
    NotFound { name: String },
    /// The secret is used by units, and so is not removed (409).
    #[error(
        "secret {name} is used by {}: change or destroy them first (flotilla secret list shows which)",
        units.join(", ")
    )]
    InUse { name: String, units: Vec<String> },
    /// Another request changed the secret meanwhile (409); nothing was
    /// stored.
    #[error("secret {name} changed while this request ran: try again")]
    Changed { name: String },
    /// The secret exists and the request did not ask to replace it (409).
    #[error(
        "secret {name} exists already: replace its value with flotilla secret set (or --replace)"
    )]
    Exists { name: String },
    /// The value is over the limit (413).
    #[error("the value of secret {name} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        name: String,
        size: usize,
        limit: usize,
    },
    /// The cluster holds as many secrets as it may (507).
    #[error("the cluster holds {limit} secrets, its limit: remove some first")]
    Full { limit: usize },
    /// The value was sealed with another key than this server's (500):
    /// the servers do not share one key.
    #[error(
        "secret {name} is sealed with key {stored}, and this server's secrets key is {ours}: every server of a cluster needs the same secrets key (see docs/security.md)"
    )]
    WrongKey {
        name: String,
        stored: String,
        ours: String,
    },
    /// The cluster's secrets are sealed with another key than this
    /// server's: found when the server starts.
    #[error(
        "the cluster's secrets are sealed with key {recorded}, and this server's secrets key is {ours}: every server of a cluster needs the same secrets key; copy secrets.key from the data directory of a server of the cluster, or name it with --secrets-key (see docs/security.md)"
    )]
    KeyMismatch { recorded: String, ours: String },
    /// The store could not be used now (503); temporary.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A bug or corrupt data (500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for SecretsError {
    fn from(e: StoreError) -> SecretsError {
        match e {
            // Its message starts "store unavailable" too: said once.
            StoreError::Unavailable { reason } => SecretsError::Unavailable(reason),
            e if e.is_temporary() => SecretsError::Unavailable(e.to_string()),
            e => SecretsError::Internal(e.to_string()),
        }
    }
}

/// The cluster's secrets; see the module documentation.
pub struct Secrets {
    store: Arc<dyn Store>,
    keys: Keys,
    key: SecretsKey,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Secrets {
    pub fn new(store: Arc<dyn Store>, keys: Keys, key: SecretsKey) -> Secrets {
        Secrets { store, keys, key }
    }

    /// Makes secret `name`, or with `replace` gives an existing one a new
    /// value (and a new version). Returns what is known of it now and
    /// whether it was made.
    /// Records this server's key id as the cluster's if none is recorded
    /// yet, else checks that it is the one recorded: a server whose key
    /// differs from the cluster's is refused when it starts, not when it
    /// first opens a value.
    pub async fn claim_key(&self) -> Result<(), SecretsError> {
        let key = self.keys.secrets_key_id();
        let ours = self.key.id();
        let txn = Txn::new()
            .when([Compare::absent(&key)])
            .and_then([TxnOp::put(&key, ours.as_bytes().to_vec())])
            .or_else([TxnOp::get(&key)]);
        let response = self.store.txn(txn).await?;
        if response.succeeded {
            return Ok(());
        }
        let recorded = match response.responses.into_iter().next() {
            Some(TxnOpResponse::Get(g)) => g.kv.map(|kv| kv.value),
            other => {
                return Err(SecretsError::Internal(format!(
                    "reading the secrets key id was answered with {other:?}"
                )));
            }
        };
        let recorded = recorded
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default();
        if recorded == ours {
            Ok(())
        } else {
            Err(SecretsError::KeyMismatch {
                recorded,
                ours: ours.to_owned(),
            })
        }
    }

    /// Records this server's key id as the cluster's, whatever was
    /// recorded: to rotate the key.
    pub async fn replace_key(&self) -> Result<(), SecretsError> {
        let key = self.keys.secrets_key_id();
        self.store.put(&key, self.key.id().as_bytes(), None).await?;
        Ok(())
    }

    pub async fn put(
        &self,
        name: &str,
        value: &[u8],
        replace: bool,
    ) -> Result<(SecretInfo, bool), SecretsError> {
        check_secret_name(name).map_err(SecretsError::Invalid)?;
        if value.len() > MAX_SECRET_BYTES {
            return Err(SecretsError::TooLarge {
                name: name.to_owned(),
                size: value.len(),
                limit: MAX_SECRET_BYTES,
            });
        }
        let meta_key = self.keys.secret_meta(name);
        let old = self.store.get(&meta_key).await?.kv;
        let now = now_ms();
        let (meta, compare) = match &old {
            Some(kv) => {
                if !replace {
                    return Err(SecretsError::Exists {
                        name: name.to_owned(),
                    });
                }
                let old: SecretMeta = decode(&meta_key, &kv.value)?;
                let meta = SecretMeta {
                    version: old.version + 1,
                    size: value.len() as u64,
                    created_ms: old.created_ms,
                    updated_ms: now,
                    key_id: self.key.id().to_owned(),
                };
                (
                    meta,
                    Compare::mod_revision(&meta_key, CompareOp::Equal, kv.mod_revision),
                )
            }
            None => {
                let count = self.metas().await?.len();
                if count >= MAX_SECRETS {
                    return Err(SecretsError::Full { limit: MAX_SECRETS });
                }
                let meta = SecretMeta {
                    version: 1,
                    size: value.len() as u64,
                    created_ms: now,
                    updated_ms: now,
                    key_id: self.key.id().to_owned(),
                };
                (meta, Compare::absent(&meta_key))
            }
        };
        let sealed = self
            .key
            .seal(name, value)
            .map_err(|e| SecretsError::Internal(e.to_string()))?;
        let meta_bytes =
            serde_json::to_vec(&meta).map_err(|e| SecretsError::Internal(e.to_string()))?;
        let txn = Txn::new().when([compare]).and_then([
            TxnOp::put(meta_key, meta_bytes),
            TxnOp::put(self.keys.secret_value(name), hex(&sealed).into_bytes()),
        ]);
        if !self.store.txn(txn).await?.succeeded {
            // Another writer got there first: say so rather than overwrite
            // what it wrote.
            let name = name.to_owned();
            return Err(match old {
                None => SecretsError::Exists { name },
                Some(_) => SecretsError::Changed { name },
            });
        }
        Ok((info(name, &meta, Vec::new()), old.is_none()))
    }

    /// Removes secret `name`, unless units use it; returns what it was.
    pub async fn remove(&self, name: &str) -> Result<SecretInfo, SecretsError> {
        check_secret_name(name).map_err(SecretsError::Invalid)?;
        let meta_key = self.keys.secret_meta(name);
        let Some(kv) = self.store.get(&meta_key).await?.kv else {
            return Err(SecretsError::NotFound {
                name: name.to_owned(),
            });
        };
        if let Some(units) = self.users().await?.remove(name) {
            return Err(SecretsError::InUse {
                name: name.to_owned(),
                units: units.into_iter().collect(),
            });
        }
        let meta: SecretMeta = decode(&meta_key, &kv.value)?;
        let txn = Txn::new()
            .when([Compare::mod_revision(
                &meta_key,
                CompareOp::Equal,
                kv.mod_revision,
            )])
            .and_then([
                TxnOp::delete(meta_key),
                TxnOp::delete(self.keys.secret_value(name)),
            ]);
        if !self.store.txn(txn).await?.succeeded {
            return Err(SecretsError::Changed {
                name: name.to_owned(),
            });
        }
        Ok(info(name, &meta, Vec::new()))
    }

    /// Every secret, in name order, with the units that use each.
    pub async fn list(&self) -> Result<Vec<SecretInfo>, SecretsError> {
        let metas = self.metas().await?;
        let users = self.users().await?;
        Ok(metas
            .into_iter()
            .map(|(name, meta)| {
                let used_by = users
                    .get(&name)
                    .map(|u| u.iter().cloned().collect())
                    .unwrap_or_default();
                info(&name, &meta, used_by)
            })
            .collect())
    }

    /// The values of secrets `names`, opened, each once, in the order
    /// given; `NotFound` names the first that does not exist.
    pub async fn values(&self, names: &[&str]) -> Result<Vec<SecretValue>, SecretsError> {
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let meta_key = self.keys.secret_meta(name);
            let value_key = self.keys.secret_value(name);
            let not_found = || SecretsError::NotFound {
                name: (*name).to_owned(),
            };
            // Both in one read, so that a version and its value match
            // while another request replaces them.
            let read = self
                .store
                .txn(Txn::new().and_then([TxnOp::get(&meta_key), TxnOp::get(&value_key)]))
                .await?;
            let mut got = read.responses.into_iter().map(|r| match r {
                TxnOpResponse::Get(g) => g.kv,
                _ => None,
            });
            let (Some(meta_kv), Some(kv)) = (got.next().flatten(), got.next().flatten()) else {
                return Err(not_found());
            };
            let meta: SecretMeta = decode(&meta_key, &meta_kv.value)?;
            if meta.key_id != self.key.id() {
                return Err(SecretsError::WrongKey {
                    name: (*name).to_owned(),
                    stored: meta.key_id,
                    ours: self.key.id().to_owned(),
                });
            }
            let sealed = std::str::from_utf8(&kv.value)
                .ok()
                .and_then(unhex)
                .ok_or_else(|| SecretsError::Internal(format!("{value_key} is not hex")))?;
            let plain = self.key.open(name, &sealed).ok_or_else(|| {
                SecretsError::Internal(format!(
                    "the sealed value of secret {name} does not open with this server's key: it was changed in the store"
                ))
            })?;
            out.push(SecretValue {
                name: (*name).to_owned(),
                version: meta.version,
                value: flotilla_proto::secret::encode_value(&plain),
            });
        }
        Ok(out)
    }

    async fn metas(&self) -> Result<Vec<(String, SecretMeta)>, SecretsError> {
        read_metas(&*self.store, &self.keys).await
    }

    /// Which units name which secret in `Secret=`, read from every unit
    /// file (a page at a time), and which git sources name one as their
    /// credentials.
    async fn users(&self) -> Result<BTreeMap<String, BTreeSet<String>>, SecretsError> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let prefix = self.keys.units();
        let mut options = RangeOptions::default().limit(UNITS_PAGE);
        loop {
            let page = self.store.range(&prefix, options.clone()).await?;
            for kv in &page.kvs {
                let record: UnitRecord = decode(&kv.key, &kv.value)?;
                let unit = kv.key.strip_prefix(&prefix).unwrap_or(&kv.key);
                for name in secrets_named(&record.text) {
                    out.entry(name).or_default().insert(unit.to_owned());
                }
            }
            match page.kvs.last() {
                Some(last) if page.more => options = options.start_after(last.key.clone()),
                _ => break,
            }
        }
        // Git sources authenticate with one (`sync:NAME`).
        let prefix = self.keys.sync_sources();
        let sources = self.store.range(&prefix, RangeOptions::default()).await?;
        for kv in &sources.kvs {
            let source: flotilla_proto::sync::Source = decode(&kv.key, &kv.value)?;
            if let Some(name) = source.credentials {
                out.entry(name)
                    .or_default()
                    .insert(format!("sync:{}", source.name));
            }
        }
        Ok(out)
    }
}

/// The version of every secret, by name: what agents' feeds carry.
pub async fn versions(
    store: &dyn Store,
    keys: &Keys,
) -> Result<BTreeMap<String, u64>, SecretsError> {
    Ok(read_metas(store, keys)
        .await?
        .into_iter()
        .map(|(name, meta)| (name, meta.version))
        .collect())
}

async fn read_metas(
    store: &dyn Store,
    keys: &Keys,
) -> Result<Vec<(String, SecretMeta)>, SecretsError> {
    let prefix = keys.secret_metas();
    let got = store.range(&prefix, RangeOptions::default()).await?;
    got.kvs
        .iter()
        .map(|kv| {
            let name = kv.key.strip_prefix(&prefix).unwrap_or(&kv.key).to_owned();
            Ok((name, decode(&kv.key, &kv.value)?))
        })
        .collect()
}

/// The secret names a unit file's `[Container] Secret=` lines give, as
/// written (a name with a specifier is its template's).
pub fn secrets_named(text: &str) -> Vec<String> {
    if !text.contains("Secret") {
        return Vec::new();
    }
    let (file, _) = UnitFile::parse(text);
    let mut out: Vec<String> = Vec::new();
    for v in file.entries(flotilla_proto::container::SECTION) {
        if v.key != "Secret" {
            continue;
        }
        if v.value.is_empty() {
            out.clear();
            continue;
        }
        let name = v.value.split(',').next().unwrap_or_default().to_owned();
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

fn info(name: &str, meta: &SecretMeta, used_by: Vec<String>) -> SecretInfo {
    SecretInfo {
        name: name.to_owned(),
        size: meta.size,
        version: meta.version,
        created_ms: meta.created_ms,
        updated_ms: meta.updated_ms,
        used_by,
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, SecretsError> {
    records::decode(key, bytes).map_err(|e| SecretsError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_store::MemoryStore;

    fn secrets() -> (Arc<MemoryStore>, Secrets) {
        let store = Arc::new(MemoryStore::new());
        let s = Secrets::new(
            store.clone(),
            Keys::default(),
            SecretsKey::generate().unwrap(),
        );
        (store, s)
    }

    #[tokio::test]
    async fn put_list_open_remove() {
        let (store, s) = secrets();
        let (made, created) = s.put("db", b"hunter2", false).await.unwrap();
        assert!(created);
        assert_eq!((made.version, made.size), (1, 7));
        assert!(matches!(
            s.put("db", b"x", false).await,
            Err(SecretsError::Exists { .. })
        ));
        let (again, created) = s.put("db", b"hunter3", true).await.unwrap();
        assert_eq!((again.version, created), (2, false));
        // Never in the store in clear.
        let all = store.range("", RangeOptions::default()).await.unwrap();
        for kv in &all.kvs {
            assert!(!kv.value.windows(7).any(|w| w == b"hunter3"), "{}", kv.key);
        }
        let values = s.values(&["db"]).await.unwrap();
        assert_eq!(
            flotilla_proto::secret::decode_value(&values[0].value).unwrap(),
            b"hunter3"
        );
        assert_eq!(s.list().await.unwrap().len(), 1);
        s.remove("db").await.unwrap();
        assert!(matches!(
            s.values(&["db"]).await,
            Err(SecretsError::NotFound { .. })
        ));
        assert!(s.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn another_key_says_so() {
        let (store, s) = secrets();
        s.put("db", b"v", false).await.unwrap();
        let other = Secrets::new(store, Keys::default(), SecretsKey::generate().unwrap());
        assert!(matches!(
            other.values(&["db"]).await,
            Err(SecretsError::WrongKey { .. })
        ));
    }

    #[tokio::test]
    async fn limits() {
        let (_, s) = secrets();
        let big = vec![0u8; MAX_SECRET_BYTES + 1];
        assert!(matches!(
            s.put("big", &big, false).await,
            Err(SecretsError::TooLarge { .. })
        ));
        assert!(matches!(
            s.put("../x", b"v", false).await,
            Err(SecretsError::Invalid(_))
        ));
    }

    #[test]
    fn names_in_units() {
        assert_eq!(
            secrets_named("[Container]\nImage=x\nSecret=a,type=env\nSecret=b\nSecret=a\n"),
            vec!["a", "b"]
        );
        assert!(secrets_named("[Service]\nExecStart=/bin/true\n").is_empty());
    }
}
