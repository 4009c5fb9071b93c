//! What the scheduler's tests over a real (in-memory) store share: the
//! cluster, machines, and leaders they run.
#![allow(dead_code)] // each test crate uses its own part of this module

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::{Capacity, ClusterId, Machine, MachineId, UnitName};
use flotilla_scheduler::cluster::{Cluster, ClusterConfig};
use flotilla_scheduler::control::ControlPlane;
use flotilla_scheduler::keys::Keys;
use flotilla_scheduler::leader::{ElectionConfig, campaign};
use flotilla_scheduler::reconciler::{self, ReconcileError, ReconcilerConfig};
use flotilla_scheduler::records::LeaderRecord;
use flotilla_store::{MemoryStore, Store};
use tokio::sync::watch;

pub const HELLO: &str = "[Service]\nExecStart=/bin/true\n";

/// The cluster the control plane serves in these tests.
pub const CLUSTER_ID: ClusterId = ClusterId::from_bytes([3; 16]);

pub fn name(s: &str) -> UnitName {
    UnitName::parse(s).unwrap()
}

/// The control plane over `store`, machines living `ttl` past their last
/// heartbeat.
pub fn cluster(store: &Arc<MemoryStore>, ttl: Duration) -> Cluster {
    Cluster::new(
        store.clone(),
        ClusterConfig {
            keys: Keys::default(),
            machine_ttl: ttl,
            cluster_id: CLUSTER_ID,
            quotas: Default::default(),
        },
    )
}

/// Machine `n` (4 CPUs, 8 GiB) with `metadata`.
pub fn machine(n: u8, metadata: &[(&str, &str)]) -> Machine {
    Machine {
        id: MachineId::parse(&format!("{:032x}", u128::from(n))).unwrap(),
        hostname: format!("host{n}"),
        addresses: vec![format!("10.0.0.{n}")],
        metadata: metadata
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        capacity: Capacity {
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
        },
        agent_version: "test".into(),
    }
}

/// Server `id`'s election, with a 2 s leader lease.
pub fn election(id: &str) -> ElectionConfig {
    ElectionConfig {
        keys: Keys::default(),
        ttl: Duration::from_secs(2),
        record: LeaderRecord {
            id: id.into(),
            address: format!("{id}:7070"),
            version: "test".into(),
        },
        follow: None,
    }
}

/// Runs a leader (campaign, then the reconcile loop) until `shutdown`
/// says so; what ended its loop.
pub fn spawn_leader(
    store: Arc<dyn Store>,
    id: &'static str,
    config: ReconcilerConfig,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<ReconcileError> {
    tokio::spawn(async move {
        let leadership = campaign(store.clone(), &election(id), shutdown.clone())
            .await
            .unwrap();
        reconciler::run(store, &leadership, &config, shutdown).await
    })
}

/// Polls `check` each time the store changes, up to a deadline.
pub async fn eventually<T>(
    c: &Cluster,
    what: &str,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut index = 1;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "timed out waiting for {what}");
        index = c
            .wait_for_change(index, left.min(Duration::from_secs(1)))
            .await
            .unwrap();
    }
}
