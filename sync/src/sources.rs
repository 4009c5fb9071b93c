//! Git sources in the store (`sync/sources/<name>`, `sync/status/<name>`;
//! see `flotilla_scheduler::keys`): made, changed, paused and removed
//! through the API by any server; their status written by the leader.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::container::secret::check_secret_name;
use flotilla_proto::duration::{format_timespan, parse_timespan};
use flotilla_proto::sync::{
    MAX_SOURCE_FIELD_LEN, MAX_SOURCE_TRUST_LEN, Source, SourceInfo, SourcePut, SourceStatus,
    check_source_name,
};
use flotilla_scheduler::keys::Keys;
use flotilla_store::{Compare, CompareOp, RangeOptions, Store, StoreError, Txn, TxnOp};

use crate::transport::Scheme;

/// What sources may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceLimits {
    /// The shortest interval a source may ask for.
    pub min_interval: Duration,
    /// The interval of a source that asks for none.
    pub default_interval: Duration,
    /// The longest interval.
    pub max_interval: Duration,
    /// Sources in the cluster.
    pub max_sources: usize,
}

impl Default for SourceLimits {
    fn default() -> Self {
        SourceLimits {
            min_interval: Duration::from_secs(10),
            default_interval: Duration::from_secs(60),
            max_interval: Duration::from_secs(24 * 3600),
            max_sources: 100,
        }
    }
}

/// Why a source could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum SourcesError {
    /// The request is not a valid source (400).
    #[error("{0}")]
    Invalid(String),
    #[error("source {name} does not exist")]
    NotFound { name: String },
    /// The cluster has as many sources as it may (507).
    #[error("the cluster has {limit} git sources, as many as it may")]
    Full { limit: usize },
    /// Another writer changed the source at the same time (409).
    #[error("source {name} was changed at the same time: try again")]
    Changed { name: String },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{key} does not decode: {message}")]
    Corrupt { key: String, message: String },
}

/// The git sources of one cluster, in its store.
#[derive(Clone)]
pub struct Sources {
    store: Arc<dyn Store>,
    keys: Keys,
    limits: SourceLimits,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, SourcesError> {
    serde_json::from_slice(bytes).map_err(|e| SourcesError::Corrupt {
        key: key.to_owned(),
        message: e.to_string(),
    })
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs into a Vec cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Checks the credentials and trust a source of `scheme` names.
fn check_access(scheme: Scheme, put: &SourcePut) -> Result<(), String> {
    if let Some(name) = &put.credentials {
        check_secret_name(name).map_err(|e| format!("credentials: {e}"))?;
        if matches!(scheme, Scheme::Git | Scheme::File) {
            return Err(
                "credentials: git:// and file:// repositories take no credentials".to_owned(),
            );
        }
    }
    if let Some(ca) = &put.ca {
        if scheme != Scheme::Https {
            return Err("ca: only an https:// repository takes a CA".to_owned());
        }
        if ca.len() > MAX_SOURCE_TRUST_LEN {
            return Err(format!("ca: over {MAX_SOURCE_TRUST_LEN} bytes"));
        }
        crate::transport::check_ca(ca).map_err(|e| format!("ca: {e}"))?;
    }
    match (&put.known_hosts, scheme) {
        (Some(hosts), Scheme::Ssh) => {
            if hosts.len() > MAX_SOURCE_TRUST_LEN {
                return Err(format!("knownHosts: over {MAX_SOURCE_TRUST_LEN} bytes"));
            }
            crate::transport::check_known_hosts(hosts).map_err(|e| format!("knownHosts: {e}"))?;
        }
        (Some(_), _) => {
            return Err("knownHosts: only an ssh:// repository takes host keys".to_owned());
        }
        (None, Scheme::Ssh) => {
            return Err(
                "knownHosts: an ssh:// repository needs its server's host keys (ssh-keyscan HOST prints them; check them before trusting them)"
                    .to_owned(),
            );
        }
        (None, _) => {}
    }
    if let Some(keys) = &put.signers {
        if keys.len() > MAX_SOURCE_TRUST_LEN {
            return Err(format!("signers: over {MAX_SOURCE_TRUST_LEN} bytes"));
        }
        crate::signed::check_signers(keys).map_err(|e| format!("signers: {e}"))?;
    }
    if scheme == Scheme::Ssh && put.credentials.is_none() {
        return Err(
            "credentials: an ssh:// repository needs the secret holding its deploy key".to_owned(),
        );
    }
    Ok(())
}

/// Checks `put` as the source `name`, with `limits`.
pub fn check(name: &str, put: &SourcePut, limits: &SourceLimits) -> Result<Source, String> {
    check_source_name(name)?;
    let repo = put.repo.trim();
    if repo.is_empty() || repo.len() > MAX_SOURCE_FIELD_LEN {
        return Err(format!(
            "repo: give the repository's address (at most {MAX_SOURCE_FIELD_LEN} bytes)"
        ));
    }
    if repo.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("repo {repo:?}: an address has no spaces"));
    }
    let scheme = Scheme::of(repo)?;
    check_access(scheme, put)?;
    let branch = put.branch.as_deref().unwrap_or("main");
    let branch_ok = !branch.is_empty()
        && branch.len() <= MAX_SOURCE_FIELD_LEN
        && !branch.starts_with(['-', '/', '.'])
        && !branch.ends_with(['/', '.'])
        && !branch.contains("..")
        && !branch.contains("//")
        && !branch.ends_with(".lock")
        && branch
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if !branch_ok {
        return Err(format!("branch {branch:?} is not a branch name"));
    }
    let path = put.path.as_deref().unwrap_or("").trim_matches('/');
    if path.len() > MAX_SOURCE_FIELD_LEN
        || path
            .split('/')
            .any(|c| c == ".." || c == "." || (c.is_empty() && !path.is_empty()))
    {
        return Err(format!(
            "path {path:?}: a directory of the repository, without . or .."
        ));
    }
    let interval = match put.interval.as_deref() {
        None => limits.default_interval,
        Some(text) => parse_timespan(text).map_err(|e| format!("interval {text:?}: {e}"))?,
    };
    if interval < limits.min_interval || interval > limits.max_interval {
        return Err(format!(
            "interval {}: between {} and {}",
            format_timespan(interval),
            format_timespan(limits.min_interval),
            format_timespan(limits.max_interval)
        ));
    }
    Ok(Source {
        name: name.to_owned(),
        repo: repo.to_owned(),
        branch: branch.to_owned(),
        path: path.to_owned(),
        interval,
        prune: put.prune,
        drift: put.drift,
        paused: false,
        credentials: put.credentials.clone(),
        ca: put.ca.clone(),
        known_hosts: put.known_hosts.clone(),
        signers: put.signers.clone(),
    })
}

impl Sources {
    pub fn new(store: Arc<dyn Store>, keys: Keys, limits: SourceLimits) -> Sources {
        Sources {
            store,
            keys,
            limits,
        }
    }

    pub fn limits(&self) -> &SourceLimits {
        &self.limits
    }

    /// Every source's definition, in name order.
    pub async fn definitions(&self) -> Result<Vec<Source>, SourcesError> {
        let got = self
            .store
            .range(&self.keys.sync_sources(), RangeOptions::default())
            .await?;
        got.kvs
            .iter()
            .map(|kv| decode(&kv.key, &kv.value))
            .collect()
    }

    /// Every source's status, by name.
    pub async fn statuses(&self) -> Result<BTreeMap<String, SourceStatus>, SourcesError> {
        let prefix = self.keys.sync_statuses();
        let got = self.store.range(&prefix, RangeOptions::default()).await?;
        got.kvs
            .iter()
            .map(|kv| {
                let name = kv.key.strip_prefix(&prefix).unwrap_or(&kv.key).to_owned();
                Ok((name, decode(&kv.key, &kv.value)?))
            })
            .collect()
    }

    /// Every source and what it last did, in name order.
    pub async fn list(&self) -> Result<Vec<SourceInfo>, SourcesError> {
        let mut statuses = self.statuses().await?;
        Ok(self
            .definitions()
            .await?
            .into_iter()
            .map(|source| SourceInfo {
                status: statuses.remove(&source.name).unwrap_or_default(),
                source,
            })
            .collect())
    }

    /// Source `name` and what it last did.
    pub async fn get(&self, name: &str) -> Result<SourceInfo, SourcesError> {
        let (source, _) = self.definition(name).await?;
        Ok(SourceInfo {
            source,
            status: self.status(name).await?.unwrap_or_default(),
        })
    }

    async fn definition(&self, name: &str) -> Result<(Source, u64), SourcesError> {
        check_source_name(name).map_err(SourcesError::Invalid)?;
        let key = self.keys.sync_source(name);
        match self.store.get(&key).await?.kv {
            Some(kv) => Ok((decode(&key, &kv.value)?, kv.mod_revision)),
            None => Err(SourcesError::NotFound {
                name: name.to_owned(),
            }),
        }
    }

    /// What source `name` last did, if it did anything yet.
    pub async fn status(&self, name: &str) -> Result<Option<SourceStatus>, SourcesError> {
        let key = self.keys.sync_status(name);
        match self.store.get(&key).await?.kv {
            Some(kv) => Ok(Some(decode(&key, &kv.value)?)),
            None => Ok(None),
        }
    }

    /// Makes source `name` (true) or changes it (false; a paused source
    /// stays paused).
    pub async fn put(
        &self,
        name: &str,
        put: &SourcePut,
    ) -> Result<(SourceInfo, bool), SourcesError> {
        let mut source = check(name, put, &self.limits).map_err(SourcesError::Invalid)?;
        let key = self.keys.sync_source(name);
        let old = self.store.get(&key).await?.kv;
        let compare = match &old {
            Some(kv) => {
                let old: Source = decode(&key, &kv.value)?;
                source.paused = old.paused;
                Compare::mod_revision(&key, CompareOp::Equal, kv.mod_revision)
            }
            None => {
                if self.definitions().await?.len() >= self.limits.max_sources {
                    return Err(SourcesError::Full {
                        limit: self.limits.max_sources,
                    });
                }
                Compare::absent(&key)
            }
        };
        let txn = Txn::new()
            .when([compare])
            .and_then([TxnOp::put(key, encode(&source))]);
        if !self.store.txn(txn).await?.succeeded {
            return Err(SourcesError::Changed {
                name: name.to_owned(),
            });
        }
        let info = SourceInfo {
            source,
            status: self.status(name).await?.unwrap_or_default(),
        };
        Ok((info, old.is_none()))
    }

    /// Pauses or resumes source `name`.
    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<SourceInfo, SourcesError> {
        let (mut source, revision) = self.definition(name).await?;
        source.paused = paused;
        let key = self.keys.sync_source(name);
        let txn = Txn::new()
            .when([Compare::mod_revision(&key, CompareOp::Equal, revision)])
            .and_then([TxnOp::put(key, encode(&source))]);
        if !self.store.txn(txn).await?.succeeded {
            return Err(SourcesError::Changed {
                name: name.to_owned(),
            });
        }
        self.get(name).await
    }

    /// Removes source `name` and its status; the units it made stay, owned
    /// by nobody.
    pub async fn remove(&self, name: &str) -> Result<SourceInfo, SourcesError> {
        let info = self.get(name).await?;
        let txn = Txn::new().and_then([
            TxnOp::delete(self.keys.sync_source(name)),
            TxnOp::delete(self.keys.sync_status(name)),
        ]);
        self.store.txn(txn).await?;
        Ok(info)
    }

    /// Records what source `name` did, unless the source was removed
    /// meanwhile.
    pub async fn write_status(
        &self,
        name: &str,
        status: &SourceStatus,
    ) -> Result<(), SourcesError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(
                self.keys.sync_source(name),
                CompareOp::Greater,
                0,
            )])
            .and_then([TxnOp::put(self.keys.sync_status(name), encode(status))]);
        self.store.txn(txn).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(repo: &str) -> SourcePut {
        SourcePut {
            repo: repo.to_owned(),
            ..SourcePut::default()
        }
    }

    const HOST_KEY: &str =
        "[h]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    #[test]
    fn sources_are_checked() {
        let limits = SourceLimits::default();
        let s = check("web", &put("git://h/r.git"), &limits).unwrap();
        assert_eq!((s.branch.as_str(), s.path.as_str()), ("main", ""));
        assert_eq!(s.interval, limits.default_interval);
        let s = check(
            "web",
            &SourcePut {
                credentials: Some("deploy-key".into()),
                known_hosts: Some(format!("# keyscan\n{HOST_KEY}\n")),
                ..put("ssh://git@h:2222/r.git")
            },
            &limits,
        )
        .unwrap();
        assert_eq!(s.credentials.as_deref(), Some("deploy-key"));
        check(
            "web",
            &SourcePut {
                credentials: Some("token".into()),
                ..put("https://h/org/r.git")
            },
            &limits,
        )
        .unwrap();
        for (name, p, why) in [
            ("-x", put("git://h/r"), "source name"),
            ("x", put("http://h/r"), "use https://"),
            ("x", put("https://u:p@h/r"), "in a secret"),
            ("x", put("git@h:r.git"), "ssh://USER@HOST/PATH"),
            ("x", put("ftp://h/r"), "not a transport"),
            ("x", put("ssh://-oProxyCommand=x/r"), "cannot start with -"),
            (
                "x",
                SourcePut {
                    known_hosts: Some(HOST_KEY.into()),
                    ..put("ssh://git@h/r.git")
                },
                "deploy key",
            ),
            (
                "x",
                SourcePut {
                    credentials: Some("key".into()),
                    ..put("ssh://git@h/r.git")
                },
                "host keys",
            ),
            (
                "x",
                SourcePut {
                    credentials: Some("key".into()),
                    known_hosts: Some("h ssh-ed25519".into()),
                    ..put("ssh://git@h/r.git")
                },
                "line 1",
            ),
            (
                "x",
                SourcePut {
                    credentials: Some("pw".into()),
                    ..put("git://h/r")
                },
                "take no credentials",
            ),
            (
                "x",
                SourcePut {
                    ca: Some("not pem".into()),
                    ..put("https://h/r")
                },
                "ca:",
            ),
            (
                "x",
                SourcePut {
                    credentials: Some("bad name!".into()),
                    ..put("https://h/r")
                },
                "credentials:",
            ),
            (
                "x",
                SourcePut {
                    signers: Some("ssh-ed25519\n".into()),
                    ..put("git://h/r")
                },
                "signers: line 1",
            ),
            (
                "x",
                SourcePut {
                    ca: Some("x".repeat(MAX_SOURCE_TRUST_LEN + 1)),
                    ..put("https://h/r")
                },
                "ca: over 65536 bytes",
            ),
            (
                "x",
                SourcePut {
                    signers: Some(format!("{HOST_KEY}\n").repeat(1000)),
                    ..put("git://h/r")
                },
                "signers: over 65536 bytes",
            ),
            (
                "x",
                SourcePut {
                    credentials: Some("key".into()),
                    known_hosts: Some(format!("{HOST_KEY}\n").repeat(1000)),
                    ..put("ssh://git@h/r.git")
                },
                "knownHosts: over 65536 bytes",
            ),
            ("x", put(""), "repo: give"),
            (
                "x",
                SourcePut {
                    branch: Some("a..b".into()),
                    ..put("git://h/r")
                },
                "not a branch name",
            ),
            (
                "x",
                SourcePut {
                    path: Some("../etc".into()),
                    ..put("git://h/r")
                },
                "without . or ..",
            ),
            (
                "x",
                SourcePut {
                    interval: Some("1s".into()),
                    ..put("git://h/r")
                },
                "interval 1s: between 10s and 1d",
            ),
        ] {
            let e = check(name, &p, &limits).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }
}
