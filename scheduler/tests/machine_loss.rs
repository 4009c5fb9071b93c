//! A machine that leaves the cluster, as the leader's reconcile loop sees
//! it over a real (in-memory) store: what the machine reported is deleted
//! from what the leader already knows, without reading every report in the
//! store, including a report that lands after the machine left; and a
//! machine that comes back keeps what it reports.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{HELLO, cluster, machine, name, spawn_leader};
use flotilla_proto::wire::{StateReport, UnitPut};
use flotilla_proto::{DesiredState, Health, Machine, MachineId, UnitState};
use flotilla_scheduler::cluster::Cluster;
use flotilla_scheduler::control::ControlPlane;
use flotilla_scheduler::keys::Keys;
use flotilla_scheduler::reconciler::{ReconcileError, ReconcilerConfig};
use flotilla_store::{LeaseId, MemoryStore, Method, Store};
use flotilla_testbed::poll::eventually_async;
use tokio::sync::watch;

fn report(machine: &MachineId, units: &[&str]) -> StateReport {
    StateReport {
        states: units
            .iter()
            .map(|u| UnitState {
                unit: name(u),
                machine: machine.clone(),
                load_state: "loaded".into(),
                active_state: "active".into(),
                sub_state: "running".into(),
                hash: None,
                started_hash: None,
                main_pid: Some(42),
                n_restarts: 0,
                container_id: None,
                health: Health::None,
                since_ms: 0,
                last_error: None,
            })
            .collect(),
        removed: Vec::new(),
    }
}

/// Registers a machine as its agent does; its lease.
async fn register(c: &Cluster, m: &Machine) -> LeaseId {
    LeaseId(c.register_machine(m.clone()).await.unwrap().lease)
}

/// Waits, up to a deadline, until `check` holds; reads only with `get`.
async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    eventually_async(what, Duration::from_secs(20), async || {
        check().await.then_some(())
    })
    .await
}

async fn exists(store: &MemoryStore, key: &str) -> bool {
    store.get(key).await.unwrap().kv.is_some()
}

/// Puts a unit and waits until the leader placed it: the leader has then
/// taken in every change written before it (it handles the store's changes
/// in order, and commits what they ask for before it plans).
async fn settle(c: &Cluster, store: &MemoryStore, unit: &str) {
    let put = UnitPut {
        desired_state: Some(DesiredState::Launched),
        text: Some(HELLO.to_owned()),
        ..UnitPut::default()
    };
    c.put_unit(&name(unit), put).await.unwrap();
    let sched = Keys::default().sched(&name(unit));
    until(&format!("{unit} placed"), async || {
        exists(store, &sched).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reports_of_a_machine_that_left_are_deleted_without_reading_every_report() {
    let keys = Keys::default();
    let store = Arc::new(MemoryStore::new());
    let dyn_store: Arc<dyn Store> = store.clone();
    let c = cluster(&store, Duration::from_secs(30));
    let (m1, m2) = (machine(1, &[]), machine(2, &[]));
    let lease1 = register(&c, &m1).await;
    register(&c, &m2).await;
    let (stop, shutdown) = watch::channel(false);
    let leader = spawn_leader(
        dyn_store.clone(),
        "a",
        ReconcilerConfig::default(),
        shutdown,
    );
    let units = ["a.service", "b.service", "c.service", "d.service"];
    for u in units {
        settle(&c, &store, u).await;
    }
    // Both machines report every unit (one of them a report from a machine
    // that runs something else than it was given, as after a move).
    c.report_states(&m1.id, report(&m1.id, &units))
        .await
        .unwrap();
    c.report_states(&m2.id, report(&m2.id, &units))
        .await
        .unwrap();
    settle(&c, &store, "sync1.service").await;
    let state = |m: &MachineId, u: &str| keys.state(&name(u), m);

    // Machine 1's lease ends.
    let ranges = store.calls().of(Method::Range);
    store.revoke(lease1).await.unwrap();
    until("machine 1's reports deleted", async || {
        for u in units {
            if exists(&store, &state(&m1.id, u)).await {
                return false;
            }
        }
        true
    })
    .await;
    assert_eq!(
        store.calls().of(Method::Range),
        ranges,
        "the leader read the store to find what the machine reported"
    );
    for u in units {
        assert!(
            exists(&store, &state(&m2.id, u)).await,
            "machine 2's report of {u} was deleted"
        );
    }

    // A report of machine 1 that was in flight when its lease ended lands
    // after the leader deleted the others: it is deleted too.
    c.report_states(&m1.id, report(&m1.id, &["a.service"]))
        .await
        .unwrap();
    until("machine 1's late report deleted", async || {
        !exists(&store, &state(&m1.id, "a.service")).await
    })
    .await;

    // Machine 1 comes back and reports: that stays.
    register(&c, &m1).await;
    c.report_states(&m1.id, report(&m1.id, &["b.service"]))
        .await
        .unwrap();
    settle(&c, &store, "sync2.service").await;
    assert!(
        exists(&store, &state(&m1.id, "b.service")).await,
        "the report of a machine that came back was deleted"
    );

    stop.send(true).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), leader)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(ended, ReconcileError::Shutdown), "{ended}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_with_a_warm_view_deletes_what_a_machine_that_left_meanwhile_reported() {
    let keys = Keys::default();
    let store = Arc::new(MemoryStore::new());
    let dyn_store: Arc<dyn Store> = store.clone();
    let c = cluster(&store, Duration::from_secs(30));
    let (m1, m2) = (machine(1, &[]), machine(2, &[]));
    let lease1 = register(&c, &m1).await;
    register(&c, &m2).await;
    let (stop_a, shutdown_a) = watch::channel(false);
    let a = spawn_leader(
        dyn_store.clone(),
        "a",
        ReconcilerConfig::default(),
        shutdown_a,
    );
    let units = ["a.service", "b.service"];
    for u in units {
        settle(&c, &store, u).await;
    }
    c.report_states(&m1.id, report(&m1.id, &units))
        .await
        .unwrap();
    c.report_states(&m2.id, report(&m2.id, &units))
        .await
        .unwrap();
    settle(&c, &store, "sync1.service").await;

    // Server b follows with a warm view: it reads the cluster once (six
    // prefixes).
    let ranges = store.calls().of(Method::Range);
    let (stop_b, shutdown_b) = watch::channel(false);
    let warm = flotilla_scheduler::warm::keep_warm(
        dyn_store.clone(),
        ReconcilerConfig::default(),
        shutdown_b.clone(),
    );
    until("b's view loaded", async || {
        store.calls().of(Method::Range) >= ranges + 6
    })
    .await;
    let ranges = store.calls().of(Method::Range);

    // Server a stops leading; machine 1 leaves while no server leads, and
    // b takes the lead with its view.
    stop_a.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), a)
        .await
        .unwrap()
        .unwrap();
    store.revoke(lease1).await.unwrap();
    let config = ReconcilerConfig {
        warm: Some(warm),
        ..ReconcilerConfig::default()
    };
    let b = spawn_leader(dyn_store.clone(), "b", config, shutdown_b);
    let state = |m: &MachineId, u: &str| keys.state(&name(u), m);
    until(
        "machine 1's reports deleted by the new leader",
        async || {
            for u in units {
                if exists(&store, &state(&m1.id, u)).await {
                    return false;
                }
            }
            true
        },
    )
    .await;
    for u in units {
        assert!(exists(&store, &state(&m2.id, u)).await, "{u} of machine 2");
    }
    assert_eq!(
        store.calls().of(Method::Range),
        ranges,
        "the new leader read the store to find what the machine reported"
    );
    stop_b.send(true).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), b)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(ended, ReconcileError::Shutdown), "{ended}");
}
