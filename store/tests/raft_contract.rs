#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test
//! The store contract (`contract/mod.rs`) run against a three-server raft
//! cluster in one process, through a follower (so that writes are forwarded
//! and reads go through ReadIndex), on a clean network and on one that
//! drops, duplicates and delays frames.

#[macro_use]
mod contract;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_store::raft::{LocalNetwork, NetworkFaults, RaftOptions, RaftRole, RaftStore};

use contract::Fixture;

/// A bound on waiting for the cluster to elect a leader.
const ELECTION_DEADLINE: Duration = Duration::from_secs(30);

/// Three in-memory servers on one network; returns them once one leads and
/// every server knows it.
async fn three(network: &LocalNetwork) -> Vec<Arc<RaftStore>> {
    let peers: BTreeMap<u64, String> = (1..=3).map(|i| (i, format!("local:{i}"))).collect();
    let stores: Vec<Arc<RaftStore>> = (1..=3)
        .map(|id| {
            let store = Arc::new(RaftStore::in_memory(
                RaftOptions::new(id, peers.clone()),
                network.transport(id),
            ));
            network.attach(id, store.inbox());
            store
        })
        .collect();
    let until = tokio::time::Instant::now() + ELECTION_DEADLINE;
    loop {
        let mut leaders = Vec::new();
        for s in &stores {
            leaders.push(s.status().await.unwrap().leader);
        }
        if leaders[0].is_some() && leaders.iter().all(|l| *l == leaders[0]) {
            return stores;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "no leader elected: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A follower of `stores`.
async fn follower(stores: &[Arc<RaftStore>]) -> Arc<RaftStore> {
    for s in stores {
        if s.status().await.unwrap().role == RaftRole::Follower {
            return s.clone();
        }
    }
    panic!("no follower");
}

async fn on(faults: NetworkFaults) -> Fixture {
    let network = LocalNetwork::new(11);
    let stores = three(&network).await;
    network.set_faults(faults);
    Fixture {
        store: follower(&stores).await,
        guard: Box::new((stores, network)),
    }
}

mod clean {
    use super::*;

    async fn cluster() -> Fixture {
        on(NetworkFaults::default()).await
    }

    contract_tests!(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        cluster
    );
}

mod faulty {
    use super::*;

    /// 5% of frames lost, 5% duplicated, every frame delayed up to 5 ms
    /// (and so reordered).
    async fn cluster() -> Fixture {
        on(NetworkFaults {
            drop: 0.05,
            duplicate: 0.05,
            max_delay: Duration::from_millis(5),
        })
        .await
    }

    contract_tests!(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        cluster
    );
}
