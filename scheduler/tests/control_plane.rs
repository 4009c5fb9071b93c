//! The control plane over a real (in-memory) store: unit writes, leader
//! election with fencing, and the reconcile loop placing units on machines
//! that register, and moving them when a machine's lease ends.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{CLUSTER_ID, HELLO, cluster, election, eventually, machine, name, spawn_leader};
use flotilla_proto::wire::{UnitOption, UnitPut};
use flotilla_proto::{DesiredState, Machine};
use flotilla_scheduler::control::{ControlError, ControlPlane, PageRequest, PutOutcome};
use flotilla_scheduler::keys::Keys;
use flotilla_scheduler::leader::campaign;
use flotilla_scheduler::reconciler::{self, ReconcileError, ReconcilerConfig};
use flotilla_store::{MemoryStore, Store, Txn, TxnOp};
use tokio::sync::watch;

fn text_put(text: &str, desired: DesiredState) -> UnitPut {
    UnitPut {
        desired_state: Some(desired),
        text: Some(text.to_owned()),
        ..UnitPut::default()
    }
}

fn desired_put(desired: DesiredState) -> UnitPut {
    UnitPut {
        desired_state: Some(desired),
        ..UnitPut::default()
    }
}

#[tokio::test]
async fn unit_writes_follow_fleet_rules() {
    let store = Arc::new(MemoryStore::new());
    let c = cluster(&store, Duration::from_secs(10));
    let web = name("web.service");

    let created = c
        .put_unit(&web, text_put(HELLO, DesiredState::Inactive))
        .await
        .unwrap();
    assert_eq!(created, PutOutcome::Created);
    // The same contents again change nothing.
    let again = c
        .put_unit(&web, text_put(HELLO, DesiredState::Inactive))
        .await
        .unwrap();
    assert_eq!(again, PutOutcome::Unchanged);
    let unit = c.get_unit(&web).await.unwrap();
    assert_eq!(unit.desired_state, DesiredState::Inactive);
    assert_eq!(unit.current_state, Some(DesiredState::Inactive));
    assert_eq!(unit.text, HELLO);

    // New contents need replace, as in fleet.
    let other = "[Service]\nExecStart=/bin/false\n";
    let err = c
        .put_unit(&web, text_put(other, DesiredState::Inactive))
        .await
        .unwrap_err();
    assert!(matches!(err, ControlError::Conflict(_)), "{err}");
    let mut replace = text_put(other, DesiredState::Inactive);
    replace.replace = true;
    c.put_unit(&web, replace).await.unwrap();
    assert_eq!(c.get_unit(&web).await.unwrap().text, other);

    // Only the desired state.
    c.put_unit(&web, desired_put(DesiredState::Launched))
        .await
        .unwrap();
    assert_eq!(
        c.get_unit(&web).await.unwrap().desired_state,
        DesiredState::Launched
    );

    // A desired-state change of a missing unit is a 404.
    let err = c
        .put_unit(&name("nope.service"), desired_put(DesiredState::Launched))
        .await
        .unwrap_err();
    assert!(matches!(err, ControlError::NotFound { .. }), "{err}");

    // A bad unit file names the line and option, and stores nothing.
    let err = c
        .put_unit(
            &name("bad.service"),
            text_put("[Service]\nCPUQuota=lots\n", DesiredState::Launched),
        )
        .await
        .unwrap_err();
    let ControlError::InvalidUnit(e) = err else {
        panic!("{err}")
    };
    assert_eq!(
        e.to_string(),
        "bad.service:2: error: [Service] CPUQuota: expected a percentage of one CPU such as 50% or 200%, found \"lots\""
    );
    assert!(matches!(
        c.get_unit(&name("bad.service")).await,
        Err(ControlError::NotFound { .. })
    ));

    // Delete.
    c.delete_unit(&web).await.unwrap();
    assert!(matches!(
        c.delete_unit(&web).await,
        Err(ControlError::NotFound { .. })
    ));
}

#[tokio::test]
async fn options_that_would_add_lines_are_refused_and_nothing_is_stored() {
    let store = Arc::new(MemoryStore::new());
    let c = cluster(&store, Duration::from_secs(10));
    let web = name("web.service");
    let option = |section: &str, name: &str, value: &str| UnitOption {
        section: section.into(),
        name: name.into(),
        value: value.into(),
    };
    for hidden in ["\n", "\r", "\0"] {
        let put = UnitPut {
            desired_state: Some(DesiredState::Launched),
            options: Some(vec![
                option(
                    "Unit",
                    "Description",
                    &format!("web{hidden}[X-Fleet]{hidden}Conflicts=*"),
                ),
                option("Service", "ExecStart", "/bin/true"),
            ]),
            ..UnitPut::default()
        };
        let err = c.put_unit(&web, put).await.unwrap_err();
        let ControlError::InvalidUnit(e) = err else {
            panic!("{err}")
        };
        assert!(
            e.to_string().starts_with(&format!(
                "web.service: error: [Unit] Description: the value contains {hidden:?}, which ends a line"
            )),
            "{e}"
        );
        assert!(matches!(
            c.get_unit(&web).await,
            Err(ControlError::NotFound { .. })
        ));
    }
}

#[tokio::test]
async fn a_machine_shows_what_its_units_reserve_without_wrapping() {
    let store = Arc::new(MemoryStore::new());
    let c = cluster(&store, Duration::from_secs(10));
    let m = machine(1, &[]);
    c.register_machine(m.clone()).await.unwrap();
    // Three units of 7 EiB on one machine (an old leader's or an operator's
    // assignments: placement would not put them there) are more than a u64
    // counts: the sum shows as the most it can, not as a wrapped small one.
    let keys = Keys::default();
    for unit in ["a.service", "b.service", "c.service"] {
        let text = "[Service]\nExecStart=/bin/true\nMemoryMax=7E\nCPUQuota=1000%\n";
        c.put_unit(&name(unit), text_put(text, DesiredState::Launched))
            .await
            .unwrap();
        store
            .put(&keys.assignment(&m.id, &name(unit)), &[], None)
            .await
            .unwrap();
    }
    let page = c.list_machines(PageRequest::default()).await.unwrap();
    let shown = &page.machines[0];
    assert_eq!(shown.units, 3);
    assert_eq!(shown.used.memory_bytes, u64::MAX);
    assert_eq!(shown.used.cpu_millis, 30_000);
}

#[tokio::test]
async fn instances_come_from_their_template() {
    let store = Arc::new(MemoryStore::new());
    let c = cluster(&store, Duration::from_secs(10));
    let template = name("worker@.service");
    let text = "[Service]\nExecStart=/bin/echo %i\n[X-Fleet]\nConflicts=worker@*.service\n";

    // A template can be submitted, but not started.
    let err = c
        .put_unit(&template, text_put(text, DesiredState::Launched))
        .await
        .unwrap_err();
    assert!(matches!(err, ControlError::InvalidRequest(_)), "{err}");
    c.put_unit(&template, text_put(text, DesiredState::Inactive))
        .await
        .unwrap();

    let one = name("worker@1.service");
    assert_eq!(
        c.put_unit(&one, desired_put(DesiredState::Launched))
            .await
            .unwrap(),
        PutOutcome::Created
    );
    let unit = c.get_unit(&one).await.unwrap();
    assert_eq!(unit.text, text);
    assert_eq!(unit.desired_state, DesiredState::Launched);

    // No template, no instance.
    let err = c
        .put_unit(
            &name("other@1.service"),
            desired_put(DesiredState::Launched),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ControlError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn listing_pages_through_every_unit() {
    let store = Arc::new(MemoryStore::new());
    let c = cluster(&store, Duration::from_secs(10));
    for i in 0..25 {
        c.put_unit(
            &name(&format!("u{i:02}.service")),
            text_put(HELLO, DesiredState::Inactive),
        )
        .await
        .unwrap();
    }
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = c
            .list_units(PageRequest {
                token: token.clone(),
                limit: Some(10),
            })
            .await
            .unwrap();
        assert!(page.units.len() <= 10);
        seen.extend(page.units.into_iter().map(|u| u.name));
        token = page.next_page_token;
        if token.is_none() {
            break;
        }
    }
    let expected: Vec<String> = (0..25).map(|i| format!("u{i:02}.service")).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn one_leader_at_a_time_and_a_deposed_leader_cannot_write() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let (_tx, shutdown) = watch::channel(false);
    let first = campaign(store.clone(), &election("a"), shutdown.clone())
        .await
        .unwrap();

    // The second server waits while the first leads.
    let second = tokio::spawn({
        let store = store.clone();
        let shutdown = shutdown.clone();
        async move { campaign(store, &election("b"), shutdown).await }
    });
    tokio::task::yield_now().await;
    assert!(!second.is_finished());

    // The first leader's lease is revoked behind its back: the second leads,
    // and a write fenced on the first leadership fails.
    store.revoke(first.lease()).await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the second server leads once the first lease is gone")
        .unwrap()
        .unwrap();
    assert_ne!(second.revision(), first.revision());
    let txn = Txn::new()
        .when([first.fence()])
        .and_then([TxnOp::put("/flotilla/v1/assign/x/y.service", Vec::new())]);
    assert!(
        !store.txn(txn).await.unwrap().succeeded,
        "the deposed leader wrote"
    );
    let txn = Txn::new()
        .when([second.fence()])
        .and_then([TxnOp::put("/flotilla/v1/assign/x/y.service", Vec::new())]);
    assert!(store.txn(txn).await.unwrap().succeeded);
    // The first leader learns it is deposed.
    tokio::time::timeout(Duration::from_secs(10), first.lost())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_places_units_and_moves_them_when_a_machine_dies() {
    let store = Arc::new(MemoryStore::new());
    let dyn_store: Arc<dyn Store> = store.clone();
    let c = cluster(&store, Duration::from_secs(1));
    let (stop, shutdown) = watch::channel(false);
    let leader = tokio::spawn({
        let store = dyn_store.clone();
        async move {
            let leadership = campaign(store.clone(), &election("a"), shutdown.clone())
                .await
                .unwrap();
            reconciler::run(store, &leadership, &ReconcilerConfig::default(), shutdown).await
        }
    });

    // Three machines; each machine's agent would heartbeat its lease.
    let mut leases = BTreeMap::new();
    for n in 1..=3 {
        let m = machine(n, &[("region", if n == 3 { "us" } else { "eu" })]);
        let reg = c.register_machine(m.clone()).await.unwrap();
        assert_eq!(reg.cluster_id, CLUSTER_ID, "agents are told the cluster");
        leases.insert(m.id.clone(), reg.lease);
    }
    let heartbeat = tokio::spawn({
        let c = cluster(&store, Duration::from_secs(1));
        let leases = leases.clone();
        async move {
            loop {
                for (id, lease) in &leases {
                    let _ = c.heartbeat(id, *lease).await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });

    // A pair that must share a machine, and a unit for region=us.
    c.put_unit(&name("db.service"), text_put(HELLO, DesiredState::Launched))
        .await
        .unwrap();
    c.put_unit(
        &name("backup.service"),
        text_put(
            "[Service]\nExecStart=/bin/true\n[X-Fleet]\nMachineOf=db.service\n",
            DesiredState::Launched,
        ),
    )
    .await
    .unwrap();
    c.put_unit(
        &name("us.service"),
        text_put(
            "[Service]\nExecStart=/bin/true\n[X-Fleet]\nMachineMetadata=region=us\n",
            DesiredState::Launched,
        ),
    )
    .await
    .unwrap();
    c.put_unit(
        &name("nowhere.service"),
        text_put(
            "[Service]\nExecStart=/bin/true\n[X-Fleet]\nMachineMetadata=region=asia\n",
            DesiredState::Launched,
        ),
    )
    .await
    .unwrap();

    let db_machine = eventually(&c, "db and backup placed together", async || {
        let db = c.get_unit(&name("db.service")).await.unwrap().machine_id?;
        let backup = c
            .get_unit(&name("backup.service"))
            .await
            .unwrap()
            .machine_id?;
        assert_eq!(db, backup, "MachineOf pair split");
        Some(db)
    })
    .await;
    let us = eventually(&c, "us.service placed", async || {
        c.get_unit(&name("us.service")).await.unwrap().machine_id
    })
    .await;
    assert_eq!(us, machine(3, &[]).id);
    let reason = eventually(&c, "nowhere.service unschedulable", async || {
        c.get_unit(&name("nowhere.service"))
            .await
            .unwrap()
            .unscheduled_reason
    })
    .await;
    assert!(reason.contains("region=asia"), "{reason}");

    // The agent of db's machine stops heartbeating: its lease ends and the
    // pair moves together to another machine.
    heartbeat.abort();
    let survivors: BTreeMap<_, _> = leases
        .iter()
        .filter(|(id, _)| **id != db_machine)
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let heartbeat = tokio::spawn({
        let c = cluster(&store, Duration::from_secs(1));
        async move {
            loop {
                for (id, lease) in &survivors {
                    let _ = c.heartbeat(id, *lease).await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    let moved = eventually(&c, "the pair moved off the dead machine", async || {
        let db = c.get_unit(&name("db.service")).await.unwrap().machine_id?;
        let backup = c
            .get_unit(&name("backup.service"))
            .await
            .unwrap()
            .machine_id?;
        (db != db_machine && db == backup).then_some(db)
    })
    .await;
    assert_ne!(moved, db_machine);

    heartbeat.abort();
    stop.send(true).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), leader)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(ended, ReconcileError::Shutdown), "{ended}");
}

/// The reconcile loop's settings, planning `plan_batch` units at a time.
fn batches_of(plan_batch: usize) -> ReconcilerConfig {
    ReconcilerConfig {
        plan_batch,
        ..ReconcilerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_gets_through_every_batch_without_waiting_for_events() {
    let store = Arc::new(MemoryStore::new());
    let dyn_store: Arc<dyn Store> = store.clone();
    let c = cluster(&store, Duration::from_secs(30));
    let m = machine(1, &[]);
    c.register_machine(m.clone()).await.unwrap();

    // A first leader places thirty units, and steps down.
    let (stop_a, shutdown_a) = watch::channel(false);
    let a = spawn_leader(dyn_store.clone(), "a", batches_of(5), shutdown_a);
    for i in 0..30 {
        c.put_unit(
            &name(&format!("u{i:02}.service")),
            text_put(HELLO, DesiredState::Launched),
        )
        .await
        .unwrap();
    }
    eventually(&c, "thirty units placed", async || {
        let placed = c.get_unit(&name("u29.service")).await.unwrap().machine_id;
        placed.filter(|p| *p == m.id)
    })
    .await;
    stop_a.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), a)
        .await
        .unwrap()
        .unwrap();

    // With no leader, a unit whose name sorts after them all arrives. The
    // next leader checks the thirty in batches of five, none of which
    // decides anything, and nothing else happens in the cluster: it must
    // still get to the new unit.
    c.put_unit(&name("zz.service"), text_put(HELLO, DesiredState::Launched))
        .await
        .unwrap();
    let (stop_b, shutdown_b) = watch::channel(false);
    let b = spawn_leader(dyn_store.clone(), "b", batches_of(5), shutdown_b);
    let placed = eventually(&c, "zz.service placed by the new leader", async || {
        c.get_unit(&name("zz.service")).await.unwrap().machine_id
    })
    .await;
    assert_eq!(placed, m.id);
    stop_b.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), b)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_write_wakes_only_the_machine_that_runs_it() {
    let store = Arc::new(MemoryStore::new());
    let dyn_store: Arc<dyn Store> = store.clone();
    let c = cluster(&store, Duration::from_secs(30));
    let (m1, m2) = (machine(1, &[]), machine(2, &[]));
    c.register_machine(m1.clone()).await.unwrap();
    c.register_machine(m2.clone()).await.unwrap();
    let (stop, shutdown) = watch::channel(false);
    let leader = spawn_leader(dyn_store.clone(), "a", batches_of(10_000), shutdown);
    let pinned = |m: &Machine, tag: &str| UnitPut {
        replace: true,
        ..text_put(
            &format!(
                "[Service]\nExecStart=/bin/true {tag}\n[X-Fleet]\nMachineID={}\n",
                m.id
            ),
            DesiredState::Launched,
        )
    };
    c.put_unit(&name("one.service"), pinned(&m1, "1"))
        .await
        .unwrap();
    c.put_unit(&name("two.service"), pinned(&m2, "2"))
        .await
        .unwrap();
    eventually(&c, "both placed", async || {
        let one = c.get_unit(&name("one.service")).await.unwrap().machine_id;
        let two = c.get_unit(&name("two.service")).await.unwrap().machine_id;
        (one.is_some() && two.is_some()).then_some(())
    })
    .await;

    // Machine 1 long-polls; a new version of machine 2's unit does not
    // wake it: it answers when its wait ends.
    let first = c.machine_units(&m1.id, None, Duration::ZERO).await.unwrap();
    assert_eq!(
        first.cluster_id, CLUSTER_ID,
        "a machine's units name the cluster"
    );
    let index = first.index;
    let poll = |wait: Duration| {
        let c = cluster(&store, Duration::from_secs(30));
        let id = m1.id.clone();
        tokio::spawn(async move {
            let t = tokio::time::Instant::now();
            let units = c.machine_units(&id, Some(index), wait).await.unwrap();
            (units, t.elapsed())
        })
    };
    let waiting = poll(Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.put_unit(&name("two.service"), pinned(&m2, "2, changed"))
        .await
        .unwrap();
    let (units, took) = waiting.await.unwrap();
    assert!(took >= Duration::from_secs(2), "woken after {took:?}");
    assert_eq!(units.units.len(), 1);

    // A new version of its own unit wakes it.
    let waiting = poll(Duration::from_secs(60));
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.put_unit(&name("one.service"), pinned(&m1, "1, changed"))
        .await
        .unwrap();
    let (units, took) = waiting.await.unwrap();
    assert!(took < Duration::from_secs(30), "not woken: {took:?}");
    assert!(units.units[0].text.contains("1, changed"));

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), leader)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_with_a_warm_view_leads_without_reading_the_cluster() {
    use flotilla_store::Method;
    let store = Arc::new(MemoryStore::new());
    let dyn_store: Arc<dyn Store> = store.clone();
    let c = cluster(&store, Duration::from_secs(30));
    let m = machine(1, &[]);
    c.register_machine(m.clone()).await.unwrap();

    // Server a leads; server b follows with a warm view.
    let (stop_a, shutdown_a) = watch::channel(false);
    let a = spawn_leader(dyn_store.clone(), "a", batches_of(10_000), shutdown_a);
    let (stop_b, shutdown_b) = watch::channel(false);
    let warm = flotilla_scheduler::warm::keep_warm(
        dyn_store.clone(),
        ReconcilerConfig::default(),
        shutdown_b.clone(),
    );
    for i in 0..30 {
        c.put_unit(
            &name(&format!("u{i:02}.service")),
            text_put(HELLO, DesiredState::Launched),
        )
        .await
        .unwrap();
    }
    eventually(&c, "thirty units placed", async || {
        c.get_unit(&name("u29.service")).await.unwrap().machine_id
    })
    .await;
    // Both servers have read the cluster once (a leads, b keeps its view):
    // six ranges each.
    eventually(&c, "both views loaded", async || {
        (store.calls().of(Method::Range) >= 12).then_some(())
    })
    .await;
    // b's view says it is ready (on raft, elections then prefer b).
    let mut ready = warm.ready();
    tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|r| *r))
        .await
        .expect("b's warm view ready")
        .unwrap();
    let b = tokio::spawn({
        let store = dyn_store.clone();
        async move {
            let leadership = campaign(store.clone(), &election("b"), shutdown_b.clone())
                .await
                .unwrap();
            let config = ReconcilerConfig {
                warm: Some(warm),
                ..ReconcilerConfig::default()
            };
            reconciler::run(store, &leadership, &config, shutdown_b).await
        }
    });
    stop_a.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), a)
        .await
        .unwrap()
        .unwrap();
    let ranges = store.calls().of(Method::Range);
    // The new leader places a new unit, and keeps the thirty where they
    // are, without reading the cluster again.
    c.put_unit(&name("zz.service"), text_put(HELLO, DesiredState::Launched))
        .await
        .unwrap();
    let placed = eventually(&c, "zz.service placed by the new leader", async || {
        c.get_unit(&name("zz.service")).await.unwrap().machine_id
    })
    .await;
    assert_eq!(placed, m.id);
    for i in 0..30 {
        let unit = c
            .get_unit(&name(&format!("u{i:02}.service")))
            .await
            .unwrap();
        assert_eq!(unit.machine_id, Some(m.id.clone()));
    }
    assert_eq!(
        store.calls().of(Method::Range),
        ranges,
        "the new leader read the cluster instead of taking its warm view"
    );
    // Taken: no view is ready while b leads.
    assert!(!*ready.borrow_and_update());
    stop_b.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), b)
        .await
        .unwrap()
        .unwrap();
}
