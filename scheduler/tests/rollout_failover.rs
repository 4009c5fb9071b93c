//! A rollout outlives its leader: the leader that takes over resumes it
//! from its record, at the wave where the first one was, over a real
//! (in-memory) store. The test plays the machine's agent.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{cluster, eventually, machine, name, spawn_leader};
use flotilla_proto::rollout::{RolloutOptions, RolloutRequest, RolloutState, RolloutUnitPut};
use flotilla_proto::wire::{StateReport, UnitPut};
use flotilla_proto::{DesiredState, Health, UnitFile, UnitState};
use flotilla_scheduler::cluster::Cluster;
use flotilla_scheduler::control::ControlPlane;
use flotilla_scheduler::reconciler::ReconcilerConfig;
use flotilla_store::MemoryStore;
use tokio::sync::watch;

const OLD: &str = "[Service]\nExecStart=/bin/sleep infinity\n";
const NEW: &str = "[Service]\nExecStart=/bin/sleep 1d\n";

fn hash(text: &str) -> String {
    UnitFile::parse(text).0.content_hash()
}

fn unit(i: u8) -> String {
    format!("w@{i}.service")
}

/// Reports unit `i` on machine 1 active, started with `started`.
async fn report(c: &Cluster, i: u8, started: &str) {
    let m = machine(1, &[]);
    let state = UnitState {
        unit: name(&unit(i)),
        machine: m.id.clone(),
        load_state: "loaded".into(),
        active_state: "active".into(),
        sub_state: "running".into(),
        hash: Some(started.into()),
        started_hash: Some(started.into()),
        main_pid: Some(1),
        n_restarts: 0,
        container_id: None,
        health: Health::None,
        since_ms: 1,
        last_error: None,
    };
    c.report_states(
        &m.id,
        StateReport {
            states: vec![state],
            removed: Vec::new(),
        },
    )
    .await
    .unwrap();
}

/// Waits (20 s at most) until unit `i` has the new contents in the store.
async fn until_new(c: &Cluster, i: u8) {
    let what = format!("{} to get its new contents", unit(i));
    eventually(c, &what, async || {
        (c.get_unit(&name(&unit(i))).await.unwrap().hash == hash(NEW)).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_resumes_a_rollout_at_its_wave() {
    let store = Arc::new(MemoryStore::new());
    let c = cluster(&store, Duration::from_secs(60));
    c.register_machine(machine(1, &[])).await.unwrap();
    for i in 1..=4 {
        let put = UnitPut {
            desired_state: Some(DesiredState::Launched),
            text: Some(OLD.into()),
            ..UnitPut::default()
        };
        c.put_unit(&name(&unit(i)), put).await.unwrap();
        report(&c, i, &hash(OLD)).await;
    }
    let (stop_a, shutdown_a) = watch::channel(false);
    let a = spawn_leader(store.clone(), "a", ReconcilerConfig::default(), shutdown_a);
    let rollout = c
        .start_rollout(RolloutRequest {
            group: "w@.service".into(),
            units: (1..=4)
                .map(|i| RolloutUnitPut {
                    name: name(&unit(i)),
                    text: NEW.into(),
                })
                .collect(),
            settings: RolloutOptions {
                max_parallel: Some(1),
                min_healthy_time: Some(Duration::ZERO),
                ..RolloutOptions::default()
            },
        })
        .await
        .unwrap();
    until_new(&c, 1).await;
    report(&c, 1, &hash(NEW)).await;
    until_new(&c, 2).await;

    // The leader goes away in wave 2; another one takes over.
    stop_a.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), a)
        .await
        .unwrap()
        .unwrap();
    let mid = c.get_rollout(&rollout.id).await.unwrap();
    assert_eq!((mid.state, mid.waves_done), (RolloutState::Running, 1));
    assert_eq!(c.get_unit(&name(&unit(3))).await.unwrap().hash, hash(OLD));
    let (stop_b, shutdown_b) = watch::channel(false);
    let b = spawn_leader(store.clone(), "b", ReconcilerConfig::default(), shutdown_b);
    report(&c, 2, &hash(NEW)).await;
    until_new(&c, 3).await;
    assert_eq!(c.get_unit(&name(&unit(4))).await.unwrap().hash, hash(OLD));
    report(&c, 3, &hash(NEW)).await;
    until_new(&c, 4).await;
    report(&c, 4, &hash(NEW)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = c.get_rollout(&rollout.id).await.unwrap();
        if r.state == RolloutState::Succeeded {
            assert_eq!((r.waves_done, r.units_on_new), (4, 4));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_b.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), b)
        .await
        .unwrap()
        .unwrap();
}
