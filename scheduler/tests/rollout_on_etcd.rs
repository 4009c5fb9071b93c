#![cfg(feature = "etcd")]
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test
//! A rollout of the most units a rollout may hold, on a real etcd (which
//! refuses a transaction of more than 128 operations): it starts, writes
//! a wave of 50, fails in it and gives all 100 units their old contents
//! back, every write within etcd's limits. The test plays the agent.
//!
//! etcd is Debian's `etcd-server` (or `$FLOTILLA_ETCD`), started by the
//! testbed and killed, with its data, when the test ends.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{CLUSTER_ID, machine, name, spawn_leader};
use flotilla_proto::rollout::{
    MAX_ROLLOUT_UNITS, RolloutOptions, RolloutRequest, RolloutState, RolloutUnitPut,
};
use flotilla_proto::wire::{StateReport, UnitPut};
use flotilla_proto::{DesiredState, Health, UnitFile, UnitState};
use flotilla_scheduler::cluster::{Cluster, ClusterConfig};
use flotilla_scheduler::control::ControlPlane;
use flotilla_scheduler::keys::Keys;
use flotilla_scheduler::reconciler::ReconcilerConfig;
use flotilla_store::{EtcdConfig, EtcdStore, Store};
use flotilla_testbed::Etcd;
use tokio::sync::watch;

const OLD: &str = "[Service]\nExecStart=/bin/sleep infinity\n";
const NEW: &str = "[Service]\nExecStart=/bin/sleep 1d\n";

fn hash(text: &str) -> String {
    UnitFile::parse(text).0.content_hash()
}

fn unit(i: usize) -> String {
    format!("w@{i:03}.service")
}

fn state(i: usize, active: &str, started: &str) -> UnitState {
    UnitState {
        unit: name(&unit(i)),
        machine: machine(1, &[]).id,
        load_state: "loaded".into(),
        active_state: active.into(),
        sub_state: "running".into(),
        hash: Some(started.into()),
        started_hash: Some(started.into()),
        main_pid: Some(1),
        n_restarts: 0,
        container_id: None,
        health: Health::None,
        since_ms: 1,
        last_error: (active == "failed").then(|| "exit status 1".to_owned()),
    }
}

async fn report(c: &Cluster, states: Vec<UnitState>) {
    c.report_states(
        &machine(1, &[]).id,
        StateReport {
            states,
            removed: Vec::new(),
        },
    )
    .await
    .unwrap();
}

/// Waits (60 s at most) until `check` holds.
async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_rollout_fits_etcds_transactions() {
    let etcd = Etcd::start().unwrap();
    let mut config = EtcdConfig::new([etcd.endpoint()]);
    config.request_timeout = Duration::from_secs(5);
    let store: Arc<dyn Store> = Arc::new(EtcdStore::connect(config).await.unwrap());
    let c = Cluster::new(
        store.clone(),
        ClusterConfig {
            keys: Keys::default(),
            machine_ttl: Duration::from_secs(60),
            cluster_id: CLUSTER_ID,
            quotas: Default::default(),
        },
    );
    c.register_machine(machine(1, &[])).await.unwrap();
    let n = MAX_ROLLOUT_UNITS;
    for i in 0..n {
        let put = UnitPut {
            desired_state: Some(DesiredState::Launched),
            text: Some(OLD.into()),
            ..UnitPut::default()
        };
        c.put_unit(&name(&unit(i)), put).await.unwrap();
    }
    report(&c, (0..n).map(|i| state(i, "active", &hash(OLD))).collect()).await;
    let (stop, shutdown) = watch::channel(false);
    let leader = spawn_leader(store.clone(), "a", ReconcilerConfig::default(), shutdown);
    let rollout = c
        .start_rollout(RolloutRequest {
            group: "w@.service".into(),
            units: (0..n)
                .map(|i| RolloutUnitPut {
                    name: name(&unit(i)),
                    text: NEW.into(),
                })
                .collect(),
            settings: RolloutOptions {
                max_parallel: Some(50),
                min_healthy_time: Some(Duration::ZERO),
                auto_revert: Some(true),
                ..RolloutOptions::default()
            },
        })
        .await
        .unwrap();
    let has = |i: usize, text: &'static str| {
        let c = &c;
        async move { c.get_unit(&name(&unit(i))).await.unwrap().hash == hash(text) }
    };
    until("wave 1's contents", async || has(49, NEW).await).await;
    assert!(has(50, OLD).await);
    report(
        &c,
        (0..50).map(|i| state(i, "active", &hash(NEW))).collect(),
    )
    .await;
    until("wave 2's contents", async || has(99, NEW).await).await;
    report(&c, vec![state(70, "failed", &hash(NEW))]).await;
    until("the rollout to fail", async || {
        c.get_rollout(&rollout.id).await.unwrap().state == RolloutState::Failed
    })
    .await;
    let failed = c.get_rollout(&rollout.id).await.unwrap();
    assert!(failed.reverted);
    assert_eq!(failed.waves_done, 1);
    until("every unit's old contents back", async || {
        for i in 0..n {
            if !has(i, OLD).await {
                return false;
            }
        }
        true
    })
    .await;
    // The units are free again: new contents go straight in.
    c.put_unit(
        &name(&unit(0)),
        UnitPut {
            text: Some(NEW.into()),
            replace: true,
            ..UnitPut::default()
        },
    )
    .await
    .unwrap();
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), leader)
        .await
        .unwrap()
        .unwrap();
}
