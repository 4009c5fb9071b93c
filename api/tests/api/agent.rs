//! `/v1/agent/...`: registration, heartbeats, the units long poll and
//! state reports; `/v1/state` over what was reported.

use std::time::Duration;

use flotilla_api::client::{PageQuery, StateQuery};
use flotilla_proto::DesiredState;
use flotilla_proto::wire::{StateReport, UnitPut};

use crate::fake::{CLUSTER_ID, TTL_MS};
use crate::{SERVICE, Server, machine, machine_id, name, state, until, within};

#[tokio::test]
async fn register_and_heartbeat() {
    let server = Server::start().await;
    let client = server.agent(1).await;
    let id = machine_id(1);
    let registration = client.register_machine(&machine(1)).await.unwrap();
    assert_eq!(registration.ttl_ms, TTL_MS);
    assert_eq!(registration.cluster_id, CLUSTER_ID);
    let renewed = client.heartbeat(&id, registration.lease).await.unwrap();
    assert_eq!(renewed, registration);

    let e = client
        .heartbeat(&id, registration.lease + 1)
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");

    server.fake.expire(&id);
    let e = client.heartbeat(&id, registration.lease).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    // Registering again gives a new lease.
    let again = client.register_machine(&machine(1)).await.unwrap();
    assert_ne!(again.lease, registration.lease);

    let token = server.machine_token(2).await;
    let (status, headers, body) = server
        .raw_as(
            Some(&token),
            "POST",
            &format!("{}/v1/agent/machines", server.url),
            Some("application/json"),
            r#"{"id":"xyz","hostname":"h","capacity":{"cpuMillis":1,"memoryBytes":1},"agentVersion":"1"}"#,
        )
        .await;
    let e = crate::error_body(status, &headers, &body);
    assert_eq!(
        (e.error.code, e.error.reason.as_str()),
        (400, "invalid_json")
    );
    assert!(
        e.error.message.contains("machine id"),
        "{}",
        e.error.message
    );
}

#[tokio::test]
async fn units_long_poll_wakes_on_placement() {
    let server = Server::start().await;
    let client = server.agent(1).await;
    let id = machine_id(1);
    client.register_machine(&machine(1)).await.unwrap();
    let web = name("web.service");
    server
        .client()
        .put_unit(
            &web,
            &UnitPut {
                desired_state: Some(DesiredState::Launched),
                text: Some(SERVICE.into()),
                ..UnitPut::default()
            },
        )
        .await
        .unwrap();

    // Without an index: at once, and nothing placed yet.
    let now = client
        .machine_units(&id, None, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(now.units.is_empty());
    assert_eq!(now.cluster_id, CLUSTER_ID);

    let poll = tokio::spawn({
        let client = client.clone();
        let id = id.clone();
        async move {
            client
                .machine_units(&id, Some(now.index), Duration::from_secs(30))
                .await
        }
    });
    // The poll is waiting in the control plane before anything changes.
    until(|| server.fake.waiters() > 0).await;
    assert!(!poll.is_finished());
    server.fake.place(&web, &id);

    let got = within(poll).await.unwrap().unwrap();
    assert!(got.index > now.index);
    assert_eq!(got.units.len(), 1);
    assert_eq!(got.units[0].name, "web.service");
    assert_eq!(got.units[0].text, SERVICE);
    assert_eq!(got.units[0].desired_state, DesiredState::Launched);

    // A poll whose wait passes answers with the same set.
    let same = client
        .machine_units(&id, Some(got.index), Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(same, got);

    // Another machine's feed is not this agent's to read.
    let e = client
        .machine_units(&machine_id(9), None, Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    // An unknown machine's own feed.
    let e = server
        .agent(9)
        .await
        .machine_units(&machine_id(9), None, Duration::ZERO)
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

#[tokio::test]
async fn report_and_list_states() {
    let server = Server::start().await;
    let client = server.client();
    let agents = [server.agent(1).await, server.agent(2).await];
    for (agent, n) in agents.iter().zip([1, 2]) {
        agent.register_machine(&machine(n)).await.unwrap();
    }
    let report = |n: u8, units: &[&str]| StateReport {
        states: units.iter().map(|u| state(u, n)).collect(),
        removed: Vec::new(),
    };
    agents[0]
        .report_states(&machine_id(1), &report(1, &["a", "b", "c"]))
        .await
        .unwrap();
    agents[1]
        .report_states(&machine_id(2), &report(2, &["a", "d"]))
        .await
        .unwrap();
    assert_eq!(
        server.fake.state(&name("b"), &machine_id(1)),
        Some(state("b", 1))
    );

    let all = client.all_states(&StateQuery::default()).await.unwrap();
    assert_eq!(all.len(), 5);
    let on_2 = client
        .all_states(&StateQuery {
            unit: None,
            machine: Some(machine_id(2)),
        })
        .await
        .unwrap();
    assert_eq!(on_2, vec![state("a", 2), state("d", 2)]);
    let of_a = client
        .all_states(&StateQuery {
            unit: Some(name("a")),
            machine: None,
        })
        .await
        .unwrap();
    assert_eq!(of_a, vec![state("a", 1), state("a", 2)]);

    // Pages of two.
    let mut page = PageQuery {
        token: None,
        limit: Some(2),
    };
    let mut walked = Vec::new();
    loop {
        let got = client
            .list_states(&StateQuery::default(), &page)
            .await
            .unwrap();
        assert!(got.states.len() <= 2);
        walked.extend(got.states);
        match got.next_page_token {
            Some(t) => page.token = Some(t),
            None => break,
        }
    }
    assert_eq!(walked, all);

    // Removed units lose their state.
    agents[0]
        .report_states(
            &machine_id(1),
            &StateReport {
                states: Vec::new(),
                removed: vec!["b.service".into()],
            },
        )
        .await
        .unwrap();
    assert_eq!(server.fake.state(&name("b"), &machine_id(1)), None);

    // A state of another machine than the path's.
    let e = agents[0]
        .report_states(&machine_id(1), &report(2, &["x"]))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    let e = agents[0]
        .report_states(&machine_id(9), &report(9, &["x"]))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    let e = server
        .agent(9)
        .await
        .report_states(&machine_id(9), &report(9, &["x"]))
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");

    let e = server
        .raw_error(
            "GET",
            &format!("{}/v1/state?machineID=nope", server.url),
            None,
            "",
        )
        .await;
    assert_eq!(
        (e.error.code, e.error.reason.as_str()),
        (400, "invalid_machine_id")
    );
}
