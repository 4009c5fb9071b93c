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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use flotilla_store::raft::{LocalNetwork, RaftOptions};

    use super::*;

    const DEADLINE: Duration = Duration::from_secs(20);

    /// The announcement under `key`, if any.
    async fn announced(store: &dyn Store, key: &str) -> Option<PresenceRecord> {
        let kv = store.get(key).await.ok()?.kv?;
        Some(records::decode(key, &kv.value).unwrap())
    }

    /// Polls until `ok` holds for the announcement, failing after
    /// [`DEADLINE`].
    async fn until(
        store: &dyn Store,
        key: &str,
        what: &str,
        ok: impl Fn(&Option<PresenceRecord>) -> bool,
    ) -> Option<PresenceRecord> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let record = announced(store, key).await;
            if ok(&record) {
                return record;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not within {DEADLINE:?}: {what}; last: {record:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_raft_server_announces_its_raft_state_and_refreshes_it() {
        let network = LocalNetwork::new(7);
        let peers: BTreeMap<u64, String> = [(1, "local:1".to_owned())].into();
        let raft = Arc::new(RaftStore::in_memory(
            RaftOptions::new(1, peers),
            network.transport(1),
        ));
        network.attach(1, raft.inbox());
        let store: Arc<dyn Store> = raft.clone();
        let keys = Keys::default();
        let record = LeaderRecord {
            id: "host-1".into(),
            address: "https://127.0.0.1:7070".into(),
            version: "1".into(),
        };
        let key = keys.server(&record.id);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(announce(
            store.clone(),
            keys,
            record.clone(),
            Some(raft.clone()),
            Duration::from_millis(300),
            stopped,
        ));

        let first = until(&*store, &key, "the raft state announced", |r| {
            r.as_ref()
                .and_then(|r| r.raft.as_ref())
                .is_some_and(|r| r.role == "leader")
        })
        .await
        .unwrap();
        assert_eq!(first.server, record);
        let raft_state = first.raft.unwrap();
        assert_eq!(raft_state.id, 1);
        assert!(raft_state.term >= 1);
        // Its own keepalives move the log on: the announcement follows.
        until(&*store, &key, "the raft state refreshed", |r| {
            r.as_ref()
                .and_then(|r| r.raft.as_ref())
                .is_some_and(|r| r.applied > raft_state.applied)
        })
        .await;

        // Gone on shutdown.
        stop.send(true).unwrap();
        task.await.unwrap();
        assert_eq!(announced(&*store, &key).await, None);
        raft.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_raft_the_announcement_is_the_server_alone() {
        let store: Arc<dyn Store> = Arc::new(flotilla_store::MemoryStore::new());
        let keys = Keys::default();
        let record = LeaderRecord {
            id: "host-2".into(),
            address: "https://127.0.0.1:7070".into(),
            version: "1".into(),
        };
        let key = keys.server(&record.id);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(announce(
            store.clone(),
            keys,
            record.clone(),
            None,
            Duration::from_millis(300),
            stopped,
        ));
        until(&*store, &key, "announced", |r| r.is_some()).await;
        let kv = store.get(&key).await.unwrap().kv.unwrap();
        // Exactly the record older servers wrote and read.
        assert_eq!(kv.value.as_ref(), records::encode(&record).as_slice());
        stop.send(true).unwrap();
        task.await.unwrap();
    }
}
