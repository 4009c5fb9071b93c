//! Which cluster a server serves ([`cluster_id`]), so that a store that
//! came up empty by mistake is never served as if it were the cluster.
//!
//! Every store has a cluster id, made once, when the cluster is first
//! initialized:
//!
//! - **embedded**: the store's own identity file, beside its log; the store
//!   refuses to open a directory that was initialized and lost its log
//!   ([`Store::cluster_id`]).
//! - **etcd** (and any store shared by servers): the key `<prefix>cluster`
//!   ([`Keys::cluster`]), created if absent by the first server. Each server
//!   records the id it serves in its own data directory (the same
//!   `identity` file), and refuses to start when the store under its
//!   prefix holds no cluster id (an empty or wrong `--key-prefix`, a wiped
//!   etcd) or another one. A server with no record yet adopts the id it
//!   finds.
//!
//! The id goes to agents with their registration and their units, so an
//! agent can refuse a cluster other than the one it joined.

use std::path::{Path, PathBuf};

use flotilla_proto::ClusterId;
use serde::{Deserialize, Serialize};

use crate::keys::Keys;
use flotilla_store::identity::{
    Identity, StateLocation, new_cluster_id, read_identity, utc_now, write_identity,
};
use flotilla_store::{Compare, RangeOptions, Store, StoreError, Txn, TxnOp, TxnOpResponse};

/// Why a server cannot tell which cluster it serves, or must not serve it.
/// Messages do not repeat their source error: print the chain (`{:#}`
/// with anyhow).
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or creating the cluster id in the store failed.
    #[error("cannot read or create the cluster id under key prefix {prefix}")]
    Store {
        prefix: String,
        #[source]
        source: StoreError,
    },

    /// The data directory's identity file cannot be read or written.
    #[error("cannot use the identity file of data directory {dir}")]
    DataDir {
        dir: PathBuf,
        #[source]
        source: StoreError,
    },

    /// The cluster id in the store does not parse.
    #[error("the cluster id at key {key} does not parse: {reason}")]
    BadKey { key: String, reason: String },

    /// The data directory records a cluster, the store's prefix holds none:
    /// serving it would serve an empty cluster.
    #[error(
        "data directory {dir} records cluster {recorded} (served under key prefix {recorded_prefix}), but the store holds no cluster id under key prefix {prefix}: an empty or wrong --key-prefix, or a wiped etcd, would be served as an empty cluster and its agents would stop their units; check --key-prefix and --etcd, or restore etcd from a backup; to make this server serve a new cluster, give it another data directory"
    )]
    NoClusterInStore {
        dir: PathBuf,
        recorded: ClusterId,
        recorded_prefix: String,
        prefix: String,
    },

    /// The data directory records one cluster, the store holds another.
    #[error(
        "data directory {dir} records cluster {recorded}, but the store under key prefix {prefix} belongs to cluster {found}: this server belongs to another cluster; check --key-prefix and --etcd; to make this server join cluster {found}, give it another data directory"
    )]
    OtherCluster {
        dir: PathBuf,
        recorded: ClusterId,
        found: ClusterId,
        prefix: String,
    },

    /// The data directory holds an embedded store: not a place to record
    /// a cluster on etcd.
    #[error(
        "data directory {dir} holds the embedded store of cluster {recorded}; a server on etcd needs a data directory of its own"
    )]
    EmbeddedDataDir { dir: PathBuf, recorded: ClusterId },
}

/// The value of `<prefix>cluster` (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRecord {
    pub cluster_id: ClusterId,
    /// When the cluster id was made (UTC).
    pub created_at: String,
}

/// The cluster this server serves, given its open store, its key prefix
/// and its data directory (see the [module documentation](self)).
///
/// On a store that keeps its own id (embedded), that id. Otherwise the id
/// under `<prefix>cluster`, checked against the one the data directory
/// records: created (with a new random id) when neither exists, adopted
/// (and recorded) when only the store has one, refused when the store has
/// none or another one.
pub async fn cluster_id(
    store: &dyn Store,
    keys: &Keys,
    data_dir: &Path,
) -> Result<ClusterId, IdentityError> {
    cluster_id_on(store, keys, data_dir, Replicated::Etcd).await
}

/// Which store a server records in its data directory when the cluster id
/// is a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replicated {
    Etcd,
    /// The servers' own store, replicated with raft.
    Raft,
}

/// As [`cluster_id`], recording `backend` as where the state is.
pub async fn cluster_id_on(
    store: &dyn Store,
    keys: &Keys,
    data_dir: &Path,
    backend: Replicated,
) -> Result<ClusterId, IdentityError> {
    if let Some(id) = store.cluster_id() {
        return Ok(id);
    }
    let prefix = keys.root().to_owned();
    let store_error = |source| IdentityError::Store {
        prefix: prefix.clone(),
        source,
    };
    let recorded = files(data_dir, {
        let dir = data_dir.to_owned();
        move || {
            std::fs::create_dir_all(&dir).map_err(|e| StoreError::io("creating", &dir, e))?;
            read_identity(&dir)
        }
    })
    .await?;
    let key = keys.cluster();
    let found = match store.get(&key).await.map_err(store_error)?.kv {
        Some(kv) => Some(parse_record(&key, &kv.value)?),
        None => None,
    };
    match (recorded, found) {
        (Some(recorded), _) if recorded.state == StateLocation::Embedded => {
            Err(IdentityError::EmbeddedDataDir {
                dir: data_dir.to_owned(),
                recorded: recorded.cluster_id,
            })
        }
        (Some(recorded), Some(found)) if recorded.cluster_id == found.cluster_id => {
            Ok(found.cluster_id)
        }
        (Some(recorded), Some(found)) => Err(IdentityError::OtherCluster {
            dir: data_dir.to_owned(),
            recorded: recorded.cluster_id,
            found: found.cluster_id,
            prefix,
        }),
        (Some(recorded), None) => Err(IdentityError::NoClusterInStore {
            dir: data_dir.to_owned(),
            recorded: recorded.cluster_id,
            recorded_prefix: recorded.state.key_prefix().unwrap_or_default().to_owned(),
            prefix,
        }),
        (None, Some(found)) => {
            record(data_dir, found.cluster_id, &prefix, backend).await?;
            tracing::info!(
                cluster = %found.cluster_id,
                prefix,
                "this server joined the cluster and recorded it in {}",
                data_dir.display()
            );
            Ok(found.cluster_id)
        }
        (None, None) => {
            let id = create(store, keys).await?;
            record(data_dir, id, &prefix, backend).await?;
            Ok(id)
        }
    }
}

fn parse_record(key: &str, value: &[u8]) -> Result<ClusterRecord, IdentityError> {
    serde_json::from_slice(value).map_err(|e| IdentityError::BadKey {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

/// Creates `<prefix>cluster` if it is still absent; returns the id there
/// (another server's, if it got there first).
async fn create(store: &dyn Store, keys: &Keys) -> Result<ClusterId, IdentityError> {
    let prefix = keys.root();
    let store_error = |source| IdentityError::Store {
        prefix: prefix.to_owned(),
        source,
    };
    let key = keys.cluster();
    let id = new_cluster_id().map_err(store_error)?;
    let value = serde_json::to_vec(&ClusterRecord {
        cluster_id: id,
        created_at: utc_now(),
    })
    .map_err(|e| {
        store_error(StoreError::Internal {
            reason: format!("cannot encode the cluster record: {e}"),
        })
    })?;
    let existing = store
        .range(prefix, RangeOptions::default().limit(1))
        .await
        .map_err(store_error)?;
    let response = store
        .txn(
            Txn::new()
                .when([Compare::absent(&key)])
                .and_then([TxnOp::put(&key, value)])
                .or_else([TxnOp::get(&key)]),
        )
        .await
        .map_err(store_error)?;
    if response.succeeded {
        if existing.kvs.is_empty() {
            tracing::info!(cluster = %id, prefix, "initialized a new cluster");
        } else {
            tracing::warn!(
                cluster = %id,
                prefix,
                "the store's keys under this prefix, written by an earlier version of flotilla, had no cluster id: adopted them as cluster {id}"
            );
        }
        return Ok(id);
    }
    // Another server created it between the read and this write.
    match response.responses.into_iter().next() {
        Some(TxnOpResponse::Get(got)) => match got.kv {
            Some(kv) => Ok(parse_record(&key, &kv.value)?.cluster_id),
            None => Err(store_error(StoreError::Internal {
                reason: format!("{key} was neither absent nor present"),
            })),
        },
        other => Err(store_error(StoreError::Internal {
            reason: format!("a get was answered with {other:?}"),
        })),
    }
}

/// Records in `data_dir` that this server serves cluster `id` on etcd or
/// raft.
async fn record(
    data_dir: &Path,
    id: ClusterId,
    prefix: &str,
    backend: Replicated,
) -> Result<(), IdentityError> {
    let key_prefix = prefix.to_owned();
    let state = match backend {
        Replicated::Etcd => StateLocation::Etcd { key_prefix },
        Replicated::Raft => StateLocation::Raft { key_prefix },
    };
    let identity = Identity::new(id, state);
    let dir = data_dir.to_owned();
    files(data_dir, move || write_identity(&dir, &identity)).await
}

/// Runs file work off the async threads.
async fn files<T: Send + 'static>(
    dir: &Path,
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, IdentityError> {
    let data_dir_error = |source| IdentityError::DataDir {
        dir: dir.to_owned(),
        source,
    };
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| {
            Err(StoreError::Internal {
                reason: format!("file work failed: {join}"),
            })
        })
        .map_err(data_dir_error)
}
