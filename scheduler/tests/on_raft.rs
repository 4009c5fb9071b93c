#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test
//! The scheduler's leadership riding on the store's raft leadership, on
//! three raft servers in one process over the in-process network: the
//! server whose store leads becomes the scheduler's leader; cut off from the
//! others, it gives leadership up and its fenced writes fail, a server of
//! the majority takes over without waiting for the old leader's lease, and
//! after the partition heals the isolated server catches up.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_scheduler::keys::Keys;
use flotilla_scheduler::leader::{ElectionConfig, Leadership, campaign};
use flotilla_scheduler::records::LeaderRecord;
use flotilla_store::raft::{LocalNetwork, RaftOptions, RaftStore};
use flotilla_store::{Store, Txn, TxnOp};
use tokio::time::Instant;

/// A bound on every wait.
const DEADLINE: Duration = Duration::from_secs(30);

fn election(id: u64, store: &RaftStore) -> ElectionConfig {
    ElectionConfig {
        keys: Keys::default(),
        // Long, so that only following the store's leadership can explain
        // a fast takeover.
        ttl: Duration::from_secs(60),
        record: LeaderRecord {
            id: format!("server-{id}"),
            address: format!("https://server-{id}"),
            version: "test".into(),
        },
        follow: Some(store.leadership()),
    }
}

/// The raft leader's id, once every store agrees on one.
async fn raft_leader(stores: &[Arc<RaftStore>]) -> u64 {
    let end = Instant::now() + DEADLINE;
    loop {
        let mut seen = Vec::new();
        for s in stores {
            seen.push(s.status().await.ok().and_then(|st| st.leader));
        }
        if let Some(Some(l)) = seen.first()
            && seen.iter().all(|s| *s == Some(*l))
        {
            return *l;
        }
        assert!(Instant::now() < end, "no raft leader agreed: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn fenced_write(leadership: &Leadership) -> Txn {
    Txn::new()
        .when([leadership.fence()])
        .and_then([TxnOp::put("/flotilla/v1/assign/m/u.service", Vec::new())])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_leads_where_the_store_leads_and_an_isolated_leader_writes_nothing() {
    let network = LocalNetwork::new(4);
    let peers: BTreeMap<u64, String> = (1..=3).map(|i| (i, format!("local:{i}"))).collect();
    let stores: Vec<Arc<RaftStore>> = (1..=3)
        .map(|id| {
            let options = RaftOptions {
                request_timeout: Duration::from_secs(1),
                ..RaftOptions::new(id, peers.clone())
            };
            let store = Arc::new(RaftStore::in_memory(options, network.transport(id)));
            network.attach(id, store.inbox());
            store
        })
        .collect();
    let leader = raft_leader(&stores).await;
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let mut campaigns = Vec::new();
    for id in 1..=3u64 {
        let store = stores[(id - 1) as usize].clone();
        let config = election(id, &store);
        let shutdown = shutdown.clone();
        campaigns.push(tokio::spawn(async move {
            let dyn_store: Arc<dyn Store> = store;
            (id, campaign(dyn_store, &config, shutdown).await.unwrap())
        }));
    }
    // The winner is the server whose store leads.
    let (first_id, first) = loop {
        if let Some(i) = campaigns.iter().position(|c| c.is_finished()) {
            break campaigns.remove(i).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(first_id, leader);
    let own = stores[(leader - 1) as usize].clone();
    assert!(own.txn(fenced_write(&first)).await.unwrap().succeeded);

    // Cut the leader off.
    let others: Vec<u64> = (1..=3).filter(|&i| i != leader).collect();
    network.partition(&[&[leader], &others]);
    tokio::time::timeout(DEADLINE, first.lost())
        .await
        .expect("the isolated leader gives leadership up");
    // Its writes are refused: it places nothing.
    assert!(own.txn(fenced_write(&first)).await.is_err());
    // A server of the majority leads, long before the 60 s lease could end.
    let started = Instant::now();
    let (second_id, second) = loop {
        if let Some(i) = campaigns.iter().position(|c| c.is_finished()) {
            break campaigns.remove(i).await.unwrap();
        }
        assert!(Instant::now() < started + DEADLINE, "no server took over");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(others.contains(&second_id));
    let majority = stores[(second_id - 1) as usize].clone();
    assert!(majority.txn(fenced_write(&second)).await.unwrap().succeeded);
    assert!(!majority.txn(fenced_write(&first)).await.unwrap().succeeded);

    // After the heal the isolated server sees the new leader's key.
    network.heal();
    let key = Keys::default().leader();
    let end = Instant::now() + DEADLINE;
    loop {
        if let Ok(r) = own.get(&key).await
            && r.kv
                .is_some_and(|kv| kv.create_revision == second.revision())
        {
            break;
        }
        assert!(Instant::now() < end, "the isolated server never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for campaign in campaigns {
        campaign.abort();
    }
}
