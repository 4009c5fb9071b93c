//! `/v1/rollouts` over HTTPS with the whole server, its leader driving
//! the rollout; the test plays the machine's agent, reporting which
//! contents each unit was started with.

use std::time::Duration;

use flotilla_api::client::{Client, EventQuery, PageQuery};
use flotilla_proto::event::EventKind;
use flotilla_proto::rollout::{
    Rollout, RolloutOptions, RolloutRequest, RolloutState, RolloutUnitPut,
};
use flotilla_proto::wire::{StateReport, UnitPut};
use flotilla_proto::{DesiredState, UnitFile};

use crate::{DEADLINE, Server, eventually, machine, machine_id, name, state};

const OLD: &str = "[Service]\nExecStart=/bin/sleep infinity\n";
const NEW: &str = "[Service]\nExecStart=/bin/sleep 1d\n";

fn hash(text: &str) -> String {
    UnitFile::parse(text).0.content_hash()
}

/// Three launched instances of `w@.service` on machine 1, reported
/// running their old contents; returns the machine's agent client.
async fn three_instances(server: &Server) -> Client {
    let agent = server.agent(1).await;
    let registration = agent.register_machine(&machine(1)).await.unwrap();
    let heartbeat = agent.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if heartbeat
                .heartbeat(&machine_id(1), registration.lease)
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let client = server.client();
    for i in 1..=3 {
        let put = UnitPut {
            desired_state: Some(DesiredState::Launched),
            text: Some(OLD.into()),
            ..UnitPut::default()
        };
        client
            .put_unit(&name(&format!("w@{i}.service")), &put)
            .await
            .unwrap();
    }
    for i in 1..=3 {
        report(&agent, i, "active", &hash(OLD)).await;
    }
    agent
}

async fn report(agent: &Client, i: u8, active: &str, started: &str) {
    let mut s = state(&format!("w@{i}.service"), 1);
    s.active_state = active.into();
    s.hash = Some(started.into());
    s.started_hash = Some(started.into());
    if active == "failed" {
        s.last_error = Some("exit status 1".into());
    }
    agent
        .report_states(
            &machine_id(1),
            &StateReport {
                states: vec![s],
                removed: Vec::new(),
            },
        )
        .await
        .unwrap();
}

fn request(auto_revert: bool) -> RolloutRequest {
    RolloutRequest {
        group: "w@.service".into(),
        units: (1..=3)
            .map(|i| RolloutUnitPut {
                name: name(&format!("w@{i}.service")),
                text: NEW.into(),
            })
            .collect(),
        settings: RolloutOptions {
            max_parallel: Some(1),
            min_healthy_time: Some(Duration::ZERO),
            auto_revert: Some(auto_revert),
            ..RolloutOptions::default()
        },
    }
}

/// The hash of the contents unit `w@{i}` has in the cluster.
async fn contents(client: &Client, i: u8) -> String {
    client
        .get_unit(&name(&format!("w@{i}.service")))
        .await
        .unwrap()
        .hash
}

async fn until_state(client: &Client, id: &str, want: RolloutState) -> Rollout {
    eventually("the rollout's state", DEADLINE, || async {
        let r = client.get_rollout(id).await.unwrap();
        (r.state == want).then_some(r)
    })
    .await
}

#[tokio::test]
async fn a_rollout_gives_one_wave_at_a_time_its_new_contents() {
    let server = Server::start().await;
    let agent = three_instances(&server).await;
    let client = server.client();
    let started = client.start_rollout(&request(false)).await.unwrap();
    assert_eq!(started.state, RolloutState::Running);
    assert_eq!((started.waves, started.units.len()), (3, 3));

    // The first wave gets its new contents; the others keep theirs until
    // it runs them.
    eventually("wave 1's contents", DEADLINE, || async {
        (contents(&client, 1).await == hash(NEW)).then_some(())
    })
    .await;
    assert_eq!(contents(&client, 2).await, hash(OLD));
    assert_eq!(contents(&client, 3).await, hash(OLD));
    // New contents for a unit the rollout holds are refused.
    let e = client
        .put_unit(
            &name("w@3.service"),
            &UnitPut {
                text: Some("[Service]\nExecStart=/bin/sleep 2d\n".into()),
                replace: true,
                ..UnitPut::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("is being rolled out by rollout"),
        "{e}"
    );
    assert!(matches!(
        e,
        flotilla_api::client::ClientError::Api { status: 409, .. }
    ));

    // The machine runs them: the next wave follows, and so on.
    for i in 1..=3u8 {
        eventually("the wave's contents", DEADLINE, || async {
            (contents(&client, i).await == hash(NEW)).then_some(())
        })
        .await;
        if i < 3 {
            assert_eq!(contents(&client, i + 1).await, hash(OLD));
        }
        report(&agent, i, "active", &hash(NEW)).await;
    }
    let done = until_state(&client, &started.id, RolloutState::Succeeded).await;
    assert_eq!((done.waves_done, done.units_on_new), (3, 3));
    // By group name, the latest rollout of the group.
    assert_eq!(
        client.get_rollout("w@.service").await.unwrap().id,
        started.id
    );
    assert_eq!(client.list_rollouts().await.unwrap().rollouts.len(), 1);
    // Its units are free again.
    client
        .put_unit(
            &name("w@3.service"),
            &UnitPut {
                text: Some(OLD.into()),
                replace: true,
                ..UnitPut::default()
            },
        )
        .await
        .unwrap();

    let kinds: Vec<EventKind> = eventually("the rollout's events", DEADLINE, || async {
        let page = client
            .events(&EventQuery::default(), &PageQuery::default())
            .await
            .unwrap();
        let kinds: Vec<EventKind> = page
            .events
            .iter()
            .map(|e| e.kind)
            .filter(|k| k.as_str().starts_with("rollout-"))
            .collect();
        (kinds.last() == Some(&EventKind::RolloutCompleted)).then_some(kinds)
    })
    .await;
    assert_eq!(
        kinds,
        [
            EventKind::RolloutStarted,
            EventKind::RolloutWaveStarted,
            EventKind::RolloutWaveCompleted,
            EventKind::RolloutWaveStarted,
            EventKind::RolloutWaveCompleted,
            EventKind::RolloutWaveStarted,
            EventKind::RolloutWaveCompleted,
            EventKind::RolloutCompleted,
        ]
    );
}

#[tokio::test]
async fn a_failing_wave_stops_the_rollout_and_auto_revert_restores_it() {
    for auto_revert in [false, true] {
        let server = Server::start().await;
        let agent = three_instances(&server).await;
        let client = server.client();
        let started = client.start_rollout(&request(auto_revert)).await.unwrap();
        eventually("wave 1's contents", DEADLINE, || async {
            (contents(&client, 1).await == hash(NEW)).then_some(())
        })
        .await;
        report(&agent, 1, "failed", &hash(NEW)).await;
        let failed = until_state(&client, &started.id, RolloutState::Failed).await;
        let failure = failed.failure.unwrap();
        assert!(
            failure.starts_with("w@1.service: on machine ") && failure.ends_with("exit status 1"),
            "{failure}"
        );
        assert_eq!(failed.reverted, auto_revert);
        assert_eq!(failed.waves_done, 0);
        // The later waves never got the new contents.
        assert_eq!(contents(&client, 2).await, hash(OLD));
        assert_eq!(contents(&client, 3).await, hash(OLD));
        let first = if auto_revert { hash(OLD) } else { hash(NEW) };
        assert_eq!(contents(&client, 1).await, first);
        server.stop().await.unwrap();
    }
}

#[tokio::test]
async fn bad_rollouts_are_refused_with_the_reason() {
    let server = Server::start().await;
    let _agent = three_instances(&server).await;
    let client = server.client();
    let mut missing = request(false);
    missing.units[2].name = name("w@9.service");
    let e = client.start_rollout(&missing).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    let mut zero = request(false);
    zero.settings.max_parallel = Some(0);
    let e = client.start_rollout(&zero).await.unwrap_err();
    assert!(
        e.to_string().contains("maxParallel 0 is out of range"),
        "{e}"
    );
    let mut bad = request(false);
    bad.units[0].text = "[Service]\nExecStart=/bin/true\n[X-Fleet]\nRolloutMaxParallel=0\n".into();
    let e = client.start_rollout(&bad).await.unwrap_err();
    assert!(
        matches!(
            e,
            flotilla_api::client::ClientError::Api { status: 400, .. }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("RolloutMaxParallel"), "{e}");
    // Nothing was changed by the refused requests.
    for i in 1..=3 {
        assert_eq!(contents(&client, i).await, hash(OLD));
    }
    // Two rollouts of the same units: the second is refused while the
    // first runs.
    client.start_rollout(&request(false)).await.unwrap();
    // ... and so is a request with a unit that is not launched too: that
    // unit is not changed either.
    let loaded = UnitPut {
        desired_state: Some(DesiredState::Loaded),
        text: Some(OLD.into()),
        ..UnitPut::default()
    };
    client.put_unit(&name("x.service"), &loaded).await.unwrap();
    let mut second = request(false);
    second.units.push(RolloutUnitPut {
        name: name("x.service"),
        text: NEW.into(),
    });
    let e = client.start_rollout(&second).await.unwrap_err();
    assert!(
        matches!(
            e,
            flotilla_api::client::ClientError::Api { status: 409, .. }
        ),
        "{e}"
    );
    assert_eq!(
        client.get_unit(&name("x.service")).await.unwrap().hash,
        hash(OLD)
    );
    // A request of only units that do not run changes them at once.
    let only = RolloutRequest {
        group: "x".into(),
        units: vec![RolloutUnitPut {
            name: name("x.service"),
            text: NEW.into(),
        }],
        settings: RolloutOptions::default(),
    };
    let done = client.start_rollout(&only).await.unwrap();
    assert_eq!((done.state, done.units.len()), (RolloutState::Succeeded, 0));
    assert_eq!(
        client.get_unit(&name("x.service")).await.unwrap().hash,
        hash(NEW)
    );
    let e = client.start_rollout(&request(false)).await.unwrap_err();
    assert!(
        matches!(
            e,
            flotilla_api::client::ClientError::Api { status: 409, .. }
        ),
        "{e}"
    );
}
