//! `/v1/events`: changes made through the API recorded with the name of
//! the credential that made them, the filters and the long poll.

use std::time::Duration;

use flotilla_api::client::{EventQuery, PageQuery};
use flotilla_proto::DesiredState;
use flotilla_proto::event::{Event, EventKind};
use flotilla_proto::trust::Role;
use flotilla_proto::wire::UnitPut;

use crate::{DEADLINE, SERVICE, Server, eventually, machine_id, name, until, within};

fn put(desired: Option<DesiredState>, text: Option<&str>) -> UnitPut {
    UnitPut {
        desired_state: desired,
        text: text.map(str::to_owned),
        ..UnitPut::default()
    }
}

/// (kind, unit, actor, detail) of each event.
fn summary(events: &[Event]) -> Vec<(EventKind, String, String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e.kind,
                e.unit.as_ref().map(|u| u.to_string()).unwrap_or_default(),
                e.actor.clone().unwrap_or_default(),
                e.detail.clone().unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test]
async fn changes_through_the_api_name_who_made_them() {
    let server = Server::start().await;
    let operator = server.client_as(Role::Operator).await;
    let web = name("web.service");
    operator
        .put_unit(&web, &put(Some(DesiredState::Launched), Some(SERVICE)))
        .await
        .unwrap();
    operator
        .put_unit(&web, &put(Some(DesiredState::Loaded), None))
        .await
        .unwrap();
    // Asking for what is already so changes nothing, and records nothing.
    operator
        .put_unit(&web, &put(Some(DesiredState::Loaded), Some(SERVICE)))
        .await
        .unwrap();
    operator.delete_unit(&web).await.unwrap();
    // fleet's API too.
    let body = r#"{"desiredState":"launched","options":[{"section":"Service","name":"ExecStart","value":"/bin/true"}]}"#;
    let token = server.token(Role::Operator).await;
    let (status, _, _) = server
        .raw_as(
            Some(&token),
            "PUT",
            &format!("{}/fleet/v1/units/f.service", server.url),
            Some("application/json"),
            body,
        )
        .await;
    assert_eq!(status, 201);
    let (status, _, _) = server
        .raw_as(
            Some(&token),
            "DELETE",
            &format!("{}/fleet/v1/units/f.service", server.url),
            None,
            "",
        )
        .await;
    assert_eq!(status, 204);
    // An admin removes a machine.
    server.machine_token(3).await;
    server
        .client()
        .remove_machine(&machine_id(3))
        .await
        .unwrap();

    // Events are written a moment after their change; the cluster's own
    // (the leader's, its placements) carry no actor.
    let viewer = server.client_as(Role::Viewer).await;
    let by_people = eventually("the six changes to be recorded", DEADLINE, || async {
        let page = viewer
            .events(&EventQuery::default(), &PageQuery::default())
            .await
            .unwrap();
        let by_people: Vec<Event> = page
            .events
            .into_iter()
            .filter(|e| e.actor.is_some())
            .collect();
        (by_people.len() >= 6).then_some(by_people)
    })
    .await;
    let op = "test operator".to_owned();
    assert_eq!(
        summary(&by_people),
        [
            (
                EventKind::UnitCreated,
                "web.service".into(),
                op.clone(),
                "contents given, desired state launched".into()
            ),
            (
                EventKind::UnitChanged,
                "web.service".into(),
                op.clone(),
                "desired state loaded".into()
            ),
            (
                EventKind::UnitDestroyed,
                "web.service".into(),
                op.clone(),
                String::new()
            ),
            (
                EventKind::UnitCreated,
                "f.service".into(),
                op.clone(),
                "contents given, desired state launched".into()
            ),
            (
                EventKind::UnitDestroyed,
                "f.service".into(),
                op.clone(),
                String::new()
            ),
            (
                EventKind::MachineRemoved,
                String::new(),
                // The name of the cluster's first admin token.
                "admin".into(),
                String::new()
            ),
        ]
    );
    assert_eq!(by_people[5].machine, Some(machine_id(3)));
    // The filters reach the control plane.
    let only_f = server
        .client()
        .events(
            &EventQuery {
                unit: Some(name("f.service")),
                ..EventQuery::default()
            },
            &PageQuery::default(),
        )
        .await
        .unwrap();
    assert!(
        only_f
            .events
            .iter()
            .all(|e| e.unit == Some(name("f.service"))),
        "{:?}",
        only_f.events
    );
    let f_by_people: Vec<Event> = only_f
        .events
        .into_iter()
        .filter(|e| e.actor.is_some())
        .collect();
    assert_eq!(summary(&f_by_people), summary(&by_people[3..5]));
}

#[tokio::test]
async fn a_follower_is_answered_when_an_event_comes_and_when_the_server_stops() {
    let server = Server::start().await;
    let client = server.client();
    // The events of one unit: the cluster's own (the leader's first) may
    // be written at any time.
    let of_a = EventQuery {
        unit: Some(name("a.service")),
        ..EventQuery::default()
    };
    let index = client
        .events(&of_a, &PageQuery::default())
        .await
        .unwrap()
        .index;
    let opened = server.watches();
    let follow = tokio::spawn({
        let client = client.clone();
        let of_a = of_a.clone();
        async move {
            client
                .follow_events(&of_a, index, Duration::from_secs(30))
                .await
        }
    });
    until(|| server.watches() > opened).await;
    assert!(!follow.is_finished());
    // An inactive unit: nothing for the leader to place, so the one event
    // is the change.
    client
        .put_unit(
            &name("a.service"),
            &put(Some(DesiredState::Inactive), Some(SERVICE)),
        )
        .await
        .unwrap();
    let got = within(follow).await.unwrap().unwrap();
    assert_eq!(got.events.len(), 1);
    assert_eq!(got.events[0].kind, EventKind::UnitCreated);
    assert!(got.index > index);

    // A server shutting down answers a follower at once, with nothing.
    let opened = server.watches();
    let follow = tokio::spawn({
        let client = client.clone();
        let index = got.index;
        async move {
            client
                .follow_events(&of_a, index, Duration::from_secs(30))
                .await
        }
    });
    until(|| server.watches() > opened).await;
    server.stop().await.unwrap();
    let last = within(follow).await.unwrap().unwrap();
    assert!(last.events.is_empty());
    assert_eq!(last.index, got.index);
}

#[tokio::test]
async fn bad_parameters() {
    let server = Server::start().await;
    for query in [
        "sinceMs=yesterday",
        "sinceMs=-1",
        "unit=bad%20name",
        "machine=zz",
        &format!("machine={}", "a".repeat(33)),
        "limit=0",
        "index=-1",
        "index=1&wait=forever",
        "index=1&nextPageToken=x",
    ] {
        let e = server
            .raw_error(
                "GET",
                &format!("{}/v1/events?{query}", server.url),
                None,
                "",
            )
            .await;
        assert_eq!(e.error.code, 400, "{query}: {}", e.error.message);
    }
}
