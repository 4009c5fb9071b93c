#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test
//! What only a replicated store shows, on servers in one process over the
//! in-process network: a minority refuses, a follower far behind catches up
//! from a snapshot, a lost leader is replaced with nothing acknowledged
//! lost, and servers are added and removed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_store::raft::{LocalNetwork, RaftOptions, RaftRole, RaftStore};
use flotilla_store::{Store, StoreError};
use flotilla_testbed::poll::{eventually_async, eventually_async_or};

/// A bound on every wait for the cluster.
const DEADLINE: Duration = Duration::from_secs(30);

fn peers(n: u64) -> BTreeMap<u64, String> {
    (1..=n).map(|i| (i, format!("local:{i}"))).collect()
}

fn options(id: u64, n: u64) -> RaftOptions {
    RaftOptions {
        // Requests fail quickly when the cluster cannot answer.
        request_timeout: Duration::from_secs(1),
        // Compaction early and often, so that catching up needs a snapshot.
        snapshot_entries: 50,
        ..RaftOptions::new(id, peers(n))
    }
}

fn start(network: &LocalNetwork, options: RaftOptions) -> Arc<RaftStore> {
    let id = options.id;
    let store = Arc::new(RaftStore::in_memory(options, network.transport(id)));
    network.attach(id, store.inbox());
    store
}

/// Waits until `check` holds, polling.
async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    eventually_async(what, DEADLINE, async || check().await.then_some(())).await
}

/// The id of the leader all of `stores` agree on, once they do.
async fn agreed_leader(stores: &[&Arc<RaftStore>]) -> u64 {
    eventually_async_or("a leader all agree on", DEADLINE, || async {
        let mut seen = Vec::new();
        for s in stores {
            seen.push(s.status().await.map(|st| st.leader).ok().flatten());
        }
        match seen[0] {
            Some(l) if seen.iter().all(|s| *s == Some(l)) => Ok(l),
            _ => Err(format!("leaders seen: {seen:?}")),
        }
    })
    .await
}

/// Waits until all of `stores` agree on a leader other than `lost`.
async fn replaced(stores: &[&Arc<RaftStore>], lost: u64) {
    until("the lost leader to be replaced", || async {
        agreed_leader(stores).await != lost
    })
    .await
}

async fn value(store: &RaftStore, key: &str) -> Option<Vec<u8>> {
    store.get(key).await.unwrap().kv.map(|kv| kv.value.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_server_refuses_writes_and_reads_then_catches_up() {
    let network = LocalNetwork::new(1);
    let stores: Vec<_> = (1..=3).map(|i| start(&network, options(i, 3))).collect();
    let leader = agreed_leader(&stores.iter().collect::<Vec<_>>()).await;
    // Cut off a follower.
    let lonely = (1..=3).find(|&i| i != leader).unwrap();
    let others: Vec<u64> = (1..=3).filter(|&i| i != lonely).collect();
    network.partition(&[&[lonely], &others]);
    let isolated = &stores[(lonely - 1) as usize];
    let majority = &stores[(others[0] - 1) as usize];

    for i in 0..200 {
        majority.put(&format!("/k/{i}"), b"v", None).await.unwrap();
    }
    let write = isolated.put("/k/lonely", b"x", None).await;
    assert!(
        matches!(write, Err(StoreError::Unavailable { .. })),
        "{write:?}"
    );
    let read = isolated.get("/k/0").await;
    assert!(
        matches!(read, Err(StoreError::Unavailable { .. })),
        "{read:?}"
    );
    let watch = isolated.watch("/k/", 0).await;
    assert!(matches!(watch, Err(StoreError::Unavailable { .. })));
    // It cannot win an election alone.
    assert_ne!(isolated.status().await.unwrap().role, RaftRole::Leader);

    network.heal();
    // Far behind a compacted log: it catches up (from a snapshot).
    until("the isolated server catching up", || async {
        isolated.get("/k/199").await.is_ok_and(|r| r.kv.is_some())
    })
    .await;
    assert_eq!(value(isolated, "/k/lonely").await, None);
    let range = isolated
        .range("/k/", flotilla_store::RangeOptions::default())
        .await
        .unwrap();
    assert_eq!(range.kvs.len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_leader_is_replaced_and_nothing_acknowledged_is_lost() {
    let network = LocalNetwork::new(2);
    let mut stores: Vec<Option<Arc<RaftStore>>> = (1..=3)
        .map(|i| Some(start(&network, options(i, 3))))
        .collect();
    let all: Vec<_> = stores.iter().flatten().cloned().collect();
    let leader = agreed_leader(&all.iter().collect::<Vec<_>>()).await;
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    let client = stores[(follower - 1) as usize].clone().unwrap();
    let mut acknowledged = Vec::new();
    for i in 0..50 {
        let key = format!("/a/{i}");
        client.put(&key, b"1", None).await.unwrap();
        acknowledged.push(key);
    }
    // The leader is gone (its network cut and its node stopped).
    network.detach(leader);
    let old = stores[(leader - 1) as usize].take().unwrap();
    old.close().await;
    drop(all);
    let left: Vec<_> = stores.iter().flatten().cloned().collect();
    // They first agree on the lost leader, until it misses heartbeats.
    replaced(&left.iter().collect::<Vec<_>>(), leader).await;
    for i in 50..100 {
        let key = format!("/a/{i}");
        client.put(&key, b"1", None).await.unwrap();
        acknowledged.push(key);
    }
    for store in &left {
        for key in &acknowledged {
            assert_eq!(value(store, key).await.as_deref(), Some(&b"1"[..]), "{key}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elections_prefer_the_servers_that_are_preferred() {
    let network = LocalNetwork::new(2);
    // Server 3 campaigns first each time (its election timeout is a tenth
    // of the others'), but it is not preferred; 1 and 2 are.
    let slow = |id| RaftOptions {
        election_ticks: 20,
        ..options(id, 3)
    };
    let quick = RaftOptions {
        election_ticks: 2,
        ..options(3, 3)
    };
    let mut stores = vec![start(&network, slow(1)), start(&network, slow(2))];
    for s in &stores {
        s.prefer(true).unwrap();
    }
    stores.push(start(&network, quick));
    let all: Vec<&Arc<RaftStore>> = stores.iter().collect();
    let leader = agreed_leader(&all).await;
    assert_ne!(leader, 3, "the server that is not preferred was elected");
    assert!(stores[0].status().await.unwrap().preferred);
    assert!(!stores[2].status().await.unwrap().preferred);

    // Once the followers hold the same log, the leader is lost: server 3
    // campaigns first again, and the other follower wins.
    stores[0].put("/k", b"1", None).await.unwrap();
    let other = if leader == 1 { 2 } else { 1 };
    let survivors = [&stores[other as usize - 1], &stores[2]];
    until("the followers holding the same log", || async {
        let a = survivors[0].status().await.unwrap();
        let b = survivors[1].status().await.unwrap();
        a.last_index == b.last_index && a.applied == a.last_index && b.applied == b.last_index
    })
    .await;
    network.detach(leader);
    stores[leader as usize - 1].close().await;
    replaced(&survivors, leader).await;
    assert_eq!(agreed_leader(&survivors).await, other);
    assert_eq!(value(survivors[1], "/k").await.as_deref(), Some(&b"1"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_are_added_and_removed() {
    let network = LocalNetwork::new(3);
    let stores: Vec<_> = (1..=3).map(|i| start(&network, options(i, 3))).collect();
    agreed_leader(&stores.iter().collect::<Vec<_>>()).await;
    for i in 0..120 {
        stores[0].put(&format!("/m/{i}"), b"v", None).await.unwrap();
    }
    stores[1].add_server(4, "local:4").await.unwrap();
    let fourth = start(
        &network,
        RaftOptions {
            join: true,
            ..options(4, 3)
        },
    );
    until("the new server catching up", || async {
        fourth.get("/m/119").await.is_ok_and(|r| r.kv.is_some())
    })
    .await;
    let status = stores[0].status().await.unwrap();
    assert_eq!(status.members.len(), 4);
    assert_eq!(voters(&fourth).await, vec![1, 2, 3, 4]);
    // A write through the new server is seen everywhere.
    fourth.put("/m/from-4", b"4", None).await.unwrap();
    assert_eq!(
        value(&stores[2], "/m/from-4").await.as_deref(),
        Some(&b"4"[..])
    );

    stores[0].remove_server(4).await.unwrap();
    until("the removed server knowing it", || async {
        fourth
            .status()
            .await
            .is_ok_and(|s| s.role == RaftRole::Removed)
    })
    .await;
    assert!(fourth.put("/m/late", b"x", None).await.is_err());
    let status = stores[0].status().await.unwrap();
    assert_eq!(status.members.len(), 3);
    // Three servers of four gone to three: the cluster still writes.
    stores[2].put("/m/after", b"v", None).await.unwrap();
}

/// The voters a server knows, in order.
async fn voters(store: &RaftStore) -> Vec<u64> {
    let mut ids: Vec<u64> = store
        .status()
        .await
        .unwrap()
        .members
        .iter()
        .filter(|m| m.voter)
        .map(|m| m.id)
        .collect();
    ids.sort_unstable();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_added_before_any_compaction_learns_every_member() {
    let network = LocalNetwork::new(6);
    // No compaction: the log still holds everything since the bootstrap.
    let options = |id| RaftOptions {
        snapshot_entries: 1_000_000,
        ..options(id, 3)
    };
    let stores: Vec<_> = (1..=3).map(|i| start(&network, options(i))).collect();
    agreed_leader(&stores.iter().collect::<Vec<_>>()).await;
    stores[0].put("/early", b"1", None).await.unwrap();
    stores[0].add_server(4, "local:4").await.unwrap();
    let fourth = start(
        &network,
        RaftOptions {
            join: true,
            ..options(4)
        },
    );
    until("the new server catching up", || async {
        fourth.get("/early").await.is_ok_and(|r| r.kv.is_some())
    })
    .await;
    // It knows the first three too: from entries alone it would know only
    // itself, and could elect itself alone.
    assert_eq!(voters(&fourth).await, vec![1, 2, 3, 4]);
    // The leader lost, the other three go on, the new server among them.
    let all = [&stores[0], &stores[1], &stores[2], &fourth];
    let leader = agreed_leader(&all).await;
    network.detach(leader);
    let rest: Vec<&Arc<RaftStore>> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| *i as u64 + 1 != leader)
        .map(|(_, s)| *s)
        .collect();
    replaced(&rest, leader).await;
    fourth.put("/late", b"2", None).await.unwrap();
    assert_eq!(voters(&fourth).await, vec![1, 2, 3, 4]);
}
