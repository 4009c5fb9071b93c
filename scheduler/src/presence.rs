//! Each server announces itself under `servers/<id>` on a lease of its own,
//! so that `flotilla list-servers` shows the servers alive and which leads.
//! A server that dies disappears when its lease ends.
//!
//! On a raft cluster the announcement also carries the server's own raft
//! state (role, term, applied index), refreshed when it changes, at most
//! once per keepalive period (a third of the TTL): a list of servers then
//! shows each member as it sees itself, not only as the leader sees it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::keys::Keys;
use crate::records::{self, LeaderRecord, PresenceRecord, RaftPresence};
use flotilla_store::raft::RaftStore;
use flotilla_store::{LeaseId, Store, StoreError, Txn, TxnOp};

/// Keeps `record` under `servers/<id>` while the server runs: grants a
/// lease of `ttl`, keeps it alive at a third of it, and announces again
/// after the store lost the lease (an outage longer than the TTL). With
/// `raft`, the announcement carries the server's raft state, written again
/// (on the same lease) when it changed since the last turn. Revokes the
/// lease on shutdown, so the server disappears at once.
pub async fn announce(
    store: Arc<dyn Store>,
    keys: Keys,
    record: LeaderRecord,
    raft: Option<Arc<RaftStore>>,
    ttl: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let key = keys.server(&record.id);
    let mut presence = PresenceRecord {
        server: record,
        raft: None,
    };
    let mut lease: Option<LeaseId> = None;
    loop {
        let raft_now = match &raft {
            Some(r) => raft_presence(r).await,
            None => None,
        };
        // A status that could not be read keeps the last one announced.
        let changed = raft_now.is_some() && raft_now != presence.raft;
        if changed {
            presence.raft = raft_now;
        }
        if lease.is_none() {
            let value = records::encode(&presence);
            lease = match put_on_new_lease(&*store, &key, &value, ttl).await {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::warn!("cannot announce this server: {e}");
                    None
                }
            };
        } else if let Some(l) = lease {
            match store.keepalive(l).await {
                Ok(_) => {
                    if changed {
                        let value = records::encode(&presence);
                        let put = Txn::new().and_then([TxnOp::put_with_lease(&key, value, l)]);
                        if let Err(e) = store.txn(put).await {
                            tracing::debug!("cannot refresh this server's raft state: {e}");
                            // Try again next turn.
                            presence.raft = None;
                        }
                    }
                }
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

/// This server's raft state as it announces it, or `None` when the raft
/// node cannot say (it is stopping).
async fn raft_presence(raft: &RaftStore) -> Option<RaftPresence> {
    match raft.status().await {
        Ok(s) => Some(RaftPresence {
            id: s.id,
            role: s.role.as_str().to_owned(),
            term: s.term,
            applied: s.applied,
            last_index: s.last_index,
        }),
        Err(e) => {
            tracing::debug!("cannot read this server's raft state: {e}");
            None
        }
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
