//! Leader election over the store, with fencing.
//!
//! A server becomes leader by creating the `leader` key on a lease of its own
//! (create-if-absent in one transaction). The key's `create_revision` is the
//! leadership's fencing token: every write the leader makes is a transaction
//! that also compares the leader key's `create_revision` with it
//! ([`Leadership::fence`]), so a deposed leader, whose key expired and was
//! created again by another server, can never write.
//!
//! The leader keeps its lease alive at a third of the TTL. It considers
//! itself deposed as soon as a keepalive says the lease is gone, or when no
//! keepalive has succeeded for a whole TTL (the store may have expired it
//! meanwhile); it then stops writing, and the fence would stop it anyway.

use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::backoff::Backoff;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::keys::Keys;
use crate::records::{self, LeaderRecord};
use flotilla_store::{Compare, CompareOp, LeaseId, Store, StoreError, Txn, TxnOp, TxnOpResponse};

/// How a server campaigns.
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    pub keys: Keys,
    /// The leader's lease TTL: how long the cluster waits for a dead leader.
    pub ttl: Duration,
    /// What the leader key says about this server.
    pub record: LeaderRecord,
    /// On a replicated store whose leadership this server's scheduler
    /// follows (raft): whether this server's store leads. The server then
    /// campaigns only while its store leads, takes the leader key over from
    /// a server whose store no longer leads (without waiting for that
    /// server's lease to end, which is what makes failover fast), and gives
    /// leadership up as soon as its store stops leading. `None`: campaign
    /// whenever the leader key is free (etcd, one embedded store).
    pub follow: Option<watch::Receiver<bool>>,
}

/// Why campaigning stopped.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    /// Shutdown was asked for while campaigning.
    #[error("campaign cancelled by shutdown")]
    Cancelled,
    /// The store failed in a way retrying will not fix.
    #[error("store failed during the election: {0}")]
    Store(#[from] StoreError),
}

/// This server's leadership, until it is lost.
#[derive(Debug)]
pub struct Leadership {
    lease: LeaseId,
    revision: u64,
    leader_key: String,
    lost: watch::Receiver<bool>,
    keepalive: tokio::task::JoinHandle<()>,
}

impl Leadership {
    /// The fencing token: the leader key's `create_revision`.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn lease(&self) -> LeaseId {
        self.lease
    }

    /// The compare every leader write must include.
    pub fn fence(&self) -> Compare {
        Compare::create_revision(&self.leader_key, CompareOp::Equal, self.revision)
    }

    /// Whether leadership has been lost.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Resolves when leadership is lost.
    pub async fn lost(&self) {
        let mut lost = self.lost.clone();
        // An error means the keepalive task ended, which it only does once
        // leadership is lost.
        let _ = lost.wait_for(|lost| *lost).await;
    }

    /// Gives leadership up now, so another server takes over without waiting
    /// for the lease to expire.
    pub async fn resign(self, store: &dyn Store) {
        self.keepalive.abort();
        if let Err(e) = store.revoke(self.lease).await {
            tracing::warn!(lease = %self.lease, "could not revoke the leader lease: {e}");
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.keepalive.abort();
    }
}

/// Campaigns until this server leads, retrying store errors with backoff.
/// Returns `Cancelled` when `shutdown` turns true first.
pub async fn campaign(
    store: Arc<dyn Store>,
    config: &ElectionConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Leadership, ElectionError> {
    let key = config.keys.leader();
    let value = records::encode(&config.record);
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        if *shutdown.borrow() {
            return Err(ElectionError::Cancelled);
        }
        if let Some(follow) = &config.follow {
            let mut follow = follow.clone();
            let store_stopped = tokio::select! {
                r = follow.wait_for(|leads| *leads) => r.is_err(),
                _ = shutdown.wait_for(|s| *s) => return Err(ElectionError::Cancelled),
            };
            if store_stopped {
                // The store stopped: it will lead no more.
                let _ = shutdown.wait_for(|s| *s).await;
                return Err(ElectionError::Cancelled);
            }
        }
        match try_lead(&store, &key, &value, config.ttl).await {
            Ok(Attempt::Won { lease, revision }) => {
                let (tx, rx) = watch::channel(false);
                let keepalive = tokio::spawn(keep_alive(
                    store.clone(),
                    lease,
                    config.ttl,
                    config.follow.clone(),
                    tx,
                ));
                return Ok(Leadership {
                    lease,
                    revision,
                    leader_key: key,
                    lost: rx,
                    keepalive,
                });
            }
            Ok(Attempt::Taken { revision, lease }) if config.follow.is_some() => {
                // This server's store leads, so the holder's does not: its
                // scheduler is on its way out (or gone). End its lease (and
                // so its key); its writes, fenced on the key, fail from now.
                backoff.reset();
                if let Some(lease) = lease {
                    match store.revoke(lease).await {
                        Ok(_) | Err(StoreError::LeaseNotFound { .. }) => {
                            tracing::info!(
                                revision,
                                "took the leader key over from a server whose store no longer leads"
                            );
                        }
                        Err(e) => {
                            tracing::warn!("cannot take the leader key over: {e}");
                            sleep_or_shutdown(backoff.next_delay(), &mut shutdown).await;
                        }
                    }
                }
            }
            Ok(Attempt::Taken { revision, .. }) => {
                backoff.reset();
                // Wait for the current leader's key to go, then try again.
                let waited = tokio::select! {
                    r = wait_for_delete(&*store, &key, revision + 1) => r,
                    _ = shutdown.wait_for(|s| *s) => return Err(ElectionError::Cancelled),
                };
                if let Err(e) = waited {
                    if !e.is_temporary() && !matches!(e, StoreError::Compacted { .. }) {
                        return Err(e.into());
                    }
                    sleep_or_shutdown(backoff.next_delay(), &mut shutdown).await;
                }
            }
            Err(e) if e.is_temporary() => {
                sleep_or_shutdown(backoff.next_delay(), &mut shutdown).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

enum Attempt {
    Won {
        lease: LeaseId,
        revision: u64,
    },
    /// Another server holds the key, on this lease.
    Taken {
        revision: u64,
        lease: Option<LeaseId>,
    },
}

async fn try_lead(
    store: &Arc<dyn Store>,
    key: &str,
    value: &[u8],
    ttl: Duration,
) -> Result<Attempt, StoreError> {
    let grant = store.grant(ttl).await?;
    let txn = Txn::new()
        .when([Compare::absent(key)])
        .and_then([TxnOp::put_with_lease(key, value.to_vec(), grant.id)])
        .or_else([TxnOp::get(key)]);
    let resp = match store.txn(txn).await {
        Ok(r) => r,
        Err(e) => {
            let _ = store.revoke(grant.id).await;
            return Err(e);
        }
    };
    if resp.succeeded {
        return Ok(Attempt::Won {
            lease: grant.id,
            revision: resp.revision,
        });
    }
    let _ = store.revoke(grant.id).await;
    let (revision, lease) = match resp.responses.first() {
        Some(TxnOpResponse::Get(g)) => (g.revision, g.kv.as_ref().and_then(|kv| kv.lease)),
        _ => (resp.revision, None),
    };
    Ok(Attempt::Taken { revision, lease })
}

/// Returns once `key` is deleted at or after `from`.
async fn wait_for_delete(store: &dyn Store, key: &str, from: u64) -> Result<(), StoreError> {
    // The key may already be gone (expired between the read and now).
    if store.get(key).await?.kv.is_none() {
        return Ok(());
    }
    let mut watch = store.watch(key, from).await?;
    loop {
        for event in watch.next().await? {
            if event.key() == key && matches!(event, flotilla_store::WatchEvent::Delete { .. }) {
                return Ok(());
            }
        }
    }
}

async fn keep_alive(
    store: Arc<dyn Store>,
    lease: LeaseId,
    ttl: Duration,
    follow: Option<watch::Receiver<bool>>,
    lost: watch::Sender<bool>,
) {
    let interval = ttl / 3;
    let mut last_ok = Instant::now();
    let store_stops_leading = async move {
        match follow {
            Some(mut follow) => {
                let _ = follow.wait_for(|leads| !*leads).await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::pin!(store_stops_leading);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = &mut store_stops_leading => {
                tracing::warn!("this server's store no longer leads: giving leadership up");
                break;
            }
        }
        match store.keepalive(lease).await {
            Ok(_) => last_ok = Instant::now(),
            Err(StoreError::LeaseNotFound { .. }) => break,
            Err(e) => {
                tracing::warn!(%lease, "leader keepalive failed: {e}");
                if last_ok.elapsed() >= ttl {
                    break;
                }
            }
        }
    }
    let _ = lost.send(true);
}

async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.wait_for(|s| *s) => {}
    }
}
