//! Each server announces itself under `servers/<id>` on a lease of its own,
//! so that `flotilla list-servers` shows the servers alive and which leads.
//! A server that dies disappears when its lease ends.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::keys::Keys;
use crate::records::{self, LeaderRecord};
use flotilla_store::{LeaseId, Store, StoreError, Txn, TxnOp};

/// Keeps `record` under `servers/<id>` while the server runs: grants a
/// lease of `ttl`, keeps it alive at a third of it, and announces again
/// after the store lost the lease (an outage longer than the TTL). Revokes
/// the lease on shutdown, so the server disappears at once.
pub async fn announce(
    store: Arc<dyn Store>,
    keys: Keys,
    record: LeaderRecord,
    ttl: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let key = keys.server(&record.id);
    let value = records::encode(&record);
    let mut lease: Option<LeaseId> = None;
    loop {
        if lease.is_none() {
            lease = match put_on_new_lease(&*store, &key, &value, ttl).await {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::warn!("cannot announce this server: {e}");
                    None
                }
            };
        } else if let Some(l) = lease {
            match store.keepalive(l).await {
                Ok(_) => {}
                Err(StoreError::LeaseNotFound { .. }) => lease = None,
                Err(e) => tracing::debug!("server announcement keepalive failed: {e}"),
            }
        }
        let wait = if lease.is_some() {
            ttl / 3
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    if let Some(l) = lease {
        let _ = store.revoke(l).await;
    }
}

async fn put_on_new_lease(
    store: &dyn Store,
    key: &str,
    value: &[u8],
    ttl: Duration,
) -> Result<LeaseId, StoreError> {
    let grant = store.grant(ttl).await?;
    store
        .txn(Txn::new().and_then([TxnOp::put_with_lease(key, value.to_vec(), grant.id)]))
        .await?;
    Ok(grant.id)
}
