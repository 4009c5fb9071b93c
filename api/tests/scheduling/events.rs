//! The cluster's history (`GET /v1/events`) on a real server with
//! simulated agents: each kind of event, recorded once and in order; and
//! the states of a machine that stopped heartbeating shown as unknown
//! before its lease ends.

use flotilla_api::client::{EventQuery, PageQuery};
use flotilla_proto::event::{Event, EventKind};
use flotilla_proto::wire::StateReport;
use flotilla_proto::{Health, UnitState};

use super::*;

/// Every event so far.
async fn all_events(client: &Client) -> Vec<Event> {
    let mut out = Vec::new();
    let mut page = PageQuery::default();
    loop {
        let got = client.events(&EventQuery::default(), &page).await.unwrap();
        out.extend(got.events);
        match got.next_page_token {
            Some(t) => page.token = Some(t),
            None => return out,
        }
    }
}

/// Waits, following the log, until `check` holds of every event so far.
async fn events_until(client: &Client, what: &str, check: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let first = client
            .events(&EventQuery::default(), &PageQuery::default())
            .await
            .unwrap();
        let events = all_events(client).await;
        if check(&events) {
            return events;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "timed out waiting for {what}: {events:#?}");
        client
            .follow_events(
                &EventQuery::default(),
                first.index,
                left.min(Duration::from_secs(1)),
            )
            .await
            .unwrap();
    }
}

/// (kind, unit, machine, from machine) of the events about `unit` or
/// machines, leaving out the others.
type Row = (
    EventKind,
    Option<String>,
    Option<MachineId>,
    Option<MachineId>,
);

fn rows(events: &[Event], keep: impl Fn(&Event) -> bool) -> Vec<Row> {
    events
        .iter()
        .filter(|e| keep(e))
        .map(|e| {
            (
                e.kind,
                e.unit.as_ref().map(|u| u.to_string()),
                e.machine.clone(),
                e.from_machine.clone(),
            )
        })
        .collect()
}

fn active(unit: &str, machine: &MachineId, active_state: &str) -> UnitState {
    UnitState {
        unit: UnitName::parse(unit).unwrap(),
        machine: machine.clone(),
        load_state: "loaded".into(),
        active_state: active_state.into(),
        sub_state: "running".into(),
        hash: None,
        started_hash: None,
        main_pid: Some(42),
        n_restarts: 0,
        container_id: None,
        health: Health::Healthy,
        since_ms: 0,
        last_error: (active_state == "failed").then(|| "exit status 3".to_owned()),
    }
}

async fn report(agent: &Agent, states: Vec<UnitState>) {
    agent
        .client
        .report_states(
            &agent.id,
            &StateReport {
                states,
                removed: vec![],
            },
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_lost_shows_unknown_then_its_units_move_and_the_log_says_so_in_order() {
    // Long enough a TTL that "overdue" (half of it) and "lease ended"
    // are seconds apart.
    let server = Server::start_with_ttl(Strategy::Spread, Duration::from_secs(4)).await;
    let c = server.client();
    // A unit no machine can take yet: once it has its reason, the leader
    // follows the store, and sees machines join.
    launch(&c, "probe.service", &service("MachineMetadata=role=none")).await;
    settled(&c, &["probe.service"]).await;
    let one = Agent::join(&server, 1, &[], 4000).await;
    launch(&c, "web.service", &service("")).await;
    settled(&c, &["web.service"]).await;
    let two = Agent::join(&server, 2, &[], 4000).await;
    events_until(&c, "machine 2 joined", |events| {
        events
            .iter()
            .any(|e| e.kind == EventKind::MachineJoined && e.machine.as_ref() == Some(&two.id))
    })
    .await;
    report(&one, vec![active("web.service", &one.id, "active")]).await;
    eventually(&c, "web.service launched", || async {
        (units(&c).await["web.service"].current_state == Some(DesiredState::Launched)).then_some(())
    })
    .await;

    // Machine 1 goes silent: its unit shows unknown, and why, while the
    // machine is still in the cluster (its lease has not ended).
    one.kill();
    // Nothing in the store changes when a machine goes silent: poll.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    // The machines are read just before the states, in the same round, so
    // an unknown state found is one shown while the machine was there.
    let shown = loop {
        let machines = c.all_machines().await.unwrap();
        let present = machines.iter().any(|m| m.machine.id == one.id);
        let states = c.all_states(&Default::default()).await.unwrap();
        let unknown = states
            .into_iter()
            .find(|s| s.machine == one.id && s.active_state == "unknown");
        if let Some(s) = unknown.filter(|_| present) {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "web.service never showed unknown while machine 1 was in the cluster"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(shown.sub_state, "unknown");
    assert_eq!(shown.health, Health::None);
    let why = shown.last_error.unwrap();
    assert!(
        why.starts_with("machine unreachable for ")
            && why.ends_with("; last reported active/running"),
        "{why}"
    );
    // The unit is no longer counted as running.
    assert_eq!(
        units(&c).await["web.service"].current_state,
        Some(DesiredState::Loaded)
    );
    let before_loss = all_events(&c).await;
    assert!(
        !before_loss.iter().any(|e| e.kind == EventKind::MachineLost),
        "{before_loss:#?}"
    );

    let events = events_until(&c, "web.service moved", |events| {
        events.iter().any(|e| e.kind == EventKind::UnitMoved)
    })
    .await;
    // The API's own events are recorded as its answer goes out, beside
    // the leader's: they are checked apart.
    let about = |e: &Event| {
        (e.unit.as_ref().is_some_and(|u| u.as_str() == "web.service")
            && e.kind != EventKind::UnitCreated)
            || matches!(
                e.kind,
                EventKind::MachineJoined | EventKind::MachineLost | EventKind::LeaderChanged
            )
    };
    let web = Some("web.service".to_owned());
    assert_eq!(
        rows(&events, about),
        [
            (EventKind::LeaderChanged, None, None, None),
            (EventKind::MachineJoined, None, Some(one.id.clone()), None),
            (
                EventKind::UnitPlaced,
                web.clone(),
                Some(one.id.clone()),
                None
            ),
            (EventKind::MachineJoined, None, Some(two.id.clone()), None),
            (
                EventKind::UnitStarted,
                web.clone(),
                Some(one.id.clone()),
                None
            ),
            (EventKind::MachineLost, None, Some(one.id.clone()), None),
            (
                EventKind::UnitMoved,
                web.clone(),
                Some(two.id.clone()),
                Some(one.id.clone())
            ),
        ]
    );
    let moved = events
        .iter()
        .find(|e| e.kind == EventKind::UnitMoved)
        .unwrap();
    assert_eq!(
        moved.detail.as_deref(),
        Some("its machine left the cluster")
    );
    let created = events
        .iter()
        .find(|e| e.kind == EventKind::UnitCreated && e.unit == moved.unit)
        .unwrap();
    assert_eq!(created.actor.as_deref(), Some("admin"));
    // The leader's first event; the API's "created" event of the probe
    // unit may come before it, as the API records its own events.
    let leader = events
        .iter()
        .find(|e| e.kind == EventKind::LeaderChanged)
        .unwrap();
    assert!(
        leader
            .detail
            .as_deref()
            .is_some_and(|d| d.contains(" leads")),
        "{leader:?}"
    );
    // Filtered by machine: what happened on machine 1.
    let on_one = c
        .events(
            &EventQuery {
                machine: Some(one.id.to_string()),
                ..EventQuery::default()
            },
            &PageQuery::default(),
        )
        .await
        .unwrap();
    let kinds: Vec<EventKind> = on_one.events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::MachineJoined,
            EventKind::UnitPlaced,
            EventKind::UnitStarted,
            EventKind::MachineLost,
            EventKind::UnitMoved
        ]
    );
    drop(two);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_make_events_only_on_transitions() {
    let server = Server::start(Strategy::Spread).await;
    let c = server.client();
    let agent = Agent::join(&server, 1, &[], 4000).await;
    launch(&c, "job.service", &service("")).await;
    settled(&c, &["job.service"]).await;
    for state in [
        "activating",
        "active",
        "active",
        "failed",
        "failed",
        "inactive",
    ] {
        report(&agent, vec![active("job.service", &agent.id, state)]).await;
    }
    report(&agent, vec![active("job.service", &agent.id, "active")]).await;
    report(&agent, vec![active("job.service", &agent.id, "inactive")]).await;
    let events = events_until(&c, "the last stop", |events| {
        events.iter().any(|e| e.kind == EventKind::UnitStopped)
    })
    .await;
    let reported: Vec<(EventKind, Option<String>)> = events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::UnitStarted | EventKind::UnitFailed | EventKind::UnitStopped
            )
        })
        .map(|e| (e.kind, e.detail.clone()))
        .collect();
    assert_eq!(
        reported,
        [
            (EventKind::UnitStarted, None),
            (EventKind::UnitFailed, Some("exit status 3".into())),
            (EventKind::UnitStarted, None),
            (EventKind::UnitStopped, None),
        ]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unschedulable_once_per_reason_and_unplaced_when_unloaded() {
    let server = Server::start(Strategy::Spread).await;
    let c = server.client();
    let _agent = Agent::join(&server, 1, &[("role", "web")], 4000).await;
    launch(&c, "db.service", &service("MachineMetadata=role=db")).await;
    launch(&c, "web.service", &service("")).await;
    settled(&c, &["db.service", "web.service"]).await;
    // More changes make the leader plan again: the reason stays, and is
    // not recorded again.
    for i in 0..3 {
        launch(&c, &format!("other{i}.service"), &service("")).await;
    }
    let others: Vec<String> = (0..3).map(|i| format!("other{i}.service")).collect();
    let refs: Vec<&str> = others.iter().map(String::as_str).collect();
    settled(&c, &refs).await;
    // web.service is unloaded: taken off its machine.
    let unload = UnitPut {
        desired_state: Some(DesiredState::Inactive),
        ..UnitPut::default()
    };
    c.put_unit(&UnitName::parse("web.service").unwrap(), &unload)
        .await
        .unwrap();
    let events = events_until(&c, "web.service unplaced", |events| {
        events.iter().any(|e| e.kind == EventKind::UnitUnplaced)
    })
    .await;
    let unschedulable: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == EventKind::UnitUnschedulable)
        .collect();
    assert_eq!(unschedulable.len(), 1, "{events:#?}");
    assert_eq!(
        unschedulable[0].unit.as_ref().map(|u| u.as_str()),
        Some("db.service")
    );
    assert!(
        unschedulable[0]
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("role=db")),
        "{:?}",
        unschedulable[0].detail
    );
    let unplaced = events
        .iter()
        .find(|e| e.kind == EventKind::UnitUnplaced)
        .unwrap();
    assert_eq!(
        unplaced.unit.as_ref().map(|u| u.as_str()),
        Some("web.service")
    );
    assert_eq!(
        unplaced.detail.as_deref(),
        Some("its desired state is inactive")
    );
    let changed = events
        .iter()
        .find(|e| e.kind == EventKind::UnitChanged)
        .unwrap();
    assert_eq!(changed.detail.as_deref(), Some("desired state inactive"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_silent_for_a_while_then_back_is_recorded_as_cut_off() {
    let server = Server::start_with_ttl(Strategy::Spread, Duration::from_secs(6)).await;
    let c = server.client();
    let one = Agent::join(&server, 1, &[], 4000).await;
    events_until(&c, "machine 1 joined", |events| {
        events
            .iter()
            .any(|e| e.kind == EventKind::MachineJoined && e.machine.as_ref() == Some(&one.id))
    })
    .await;
    // A partition of 3.5 s: past the overdue mark (half the TTL, 3 s),
    // short of the lease's end (6 s). The silence is the scenario itself.
    one.kill();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    one.client.heartbeat(&one.id, one.lease).await.unwrap();
    let events = events_until(&c, "machine 1 cut off", |events| {
        events
            .iter()
            .any(|e| e.kind == EventKind::MachineCutOff && e.machine.as_ref() == Some(&one.id))
    })
    .await;
    let cut = events
        .iter()
        .find(|e| e.kind == EventKind::MachineCutOff)
        .unwrap();
    let detail = cut.detail.as_deref().unwrap_or_default();
    assert!(
        detail.starts_with("no heartbeat for ")
            && detail.ends_with("then back before its lease ended"),
        "{cut:?}"
    );
    assert!(
        !events.iter().any(|e| e.kind == EventKind::MachineLost),
        "{events:#?}"
    );
    // Heartbeats on time make no such event.
    let before = events.len();
    one.client.heartbeat(&one.id, one.lease).await.unwrap();
    let now = all_events(&c).await;
    assert_eq!(
        now.iter()
            .filter(|e| e.kind == EventKind::MachineCutOff)
            .count(),
        1,
        "{:#?}",
        &now[before.min(now.len())..]
    );
}
