//! `/v1/agent/...`: registration, heartbeats, the units long poll and
//! state reports; `/v1/state` over what was reported.

use std::time::Duration;

use flotilla_api::client::{PageQuery, StateQuery};
use flotilla_proto::DesiredState;
use flotilla_proto::wire::{StateReport, UnitPut};

use crate::{
    DEADLINE, SERVICE, Server, eventually, machine, machine_id, name, state, until, within,
};

#[tokio::test]
async fn register_and_heartbeat() {
    // Machines live a second without a heartbeat: this one's lease runs
    // out for real.
    let ttl = Duration::from_secs(1);
    let server = Server::with_machine_ttl(ttl).await;
    let client = server.agent(1).await;
    let id = machine_id(1);
    let registration = client.register_machine(&machine(1)).await.unwrap();
    assert_eq!(registration.ttl_ms, 1000);
    assert_eq!(registration.cluster_id, server.cluster_id().await);
    let renewed = client.heartbeat(&id, registration.lease).await.unwrap();
    assert_eq!(renewed, registration);

    let e = client
        .heartbeat(&id, registration.lease + 1)
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");

    // No more heartbeats: the machine disappears when its lease ends, and
    // its lease is no lease any more.
    let admin = server.client();
    eventually("the machine's lease to end", DEADLINE, || async {
        admin.all_machines().await.unwrap().is_empty().then_some(())
    })
    .await;
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

    // Without an index: at once, and nothing to run yet.
    let now = client
        .machine_units(&id, None, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(now.units.is_empty());
    assert_eq!(now.cluster_id, server.cluster_id().await);

    let opened = server.watches();
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
    until(|| server.watches() > opened).await;
    assert!(!poll.is_finished());
    // A unit to launch: the leader places it on the only machine, which
    // wakes the poll.
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

    let got = within(poll).await.unwrap().unwrap();
    assert!(got.index > now.index);
    assert_eq!(got.units.len(), 1);
    assert_eq!(got.units[0].name, "web.service");
    assert_eq!(got.units[0].text, SERVICE);
    assert_eq!(got.units[0].desired_state, DesiredState::Launched);

    // A poll whose wait passes answers with the same set, as of the
    // store's revision then (the cluster's own writes, such as its
    // events, may have moved it on).
    let same = client
        .machine_units(&id, Some(got.index), Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(same.units, got.units);
    assert!(same.index >= got.index);

    // Another machine's feed is not this agent's to read.
    let e = client
        .machine_units(&machine_id(9), None, Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    // The feed of a machine that joined and is not live (it has not
    // registered, or its lease ended): what is assigned to it, here
    // nothing.
    let feed = server
        .agent(9)
        .await
        .machine_units(&machine_id(9), None, Duration::ZERO)
        .await
        .unwrap();
    assert!(feed.units.is_empty(), "{feed:?}");
}

#[tokio::test]
async fn report_and_list_states() {
    let server = Server::start().await;
    let client = server.client();
    let agents = [server.agent(1).await, server.agent(2).await];
    for (agent, n) in agents.iter().zip([1, 2]) {
        agent.register_machine(&machine(n)).await.unwrap();
    }
    // States are kept for the cluster's units only.
    for unit in ["a", "b", "c", "d"] {
        client
            .put_unit(
                &name(unit),
                &UnitPut {
                    desired_state: Some(DesiredState::Inactive),
                    text: Some(SERVICE.into()),
                    ..UnitPut::default()
                },
            )
            .await
            .unwrap();
    }
    let report = |n: u8, units: &[&str]| StateReport {
        states: units.iter().map(|u| state(u, n)).collect(),
        removed: Vec::new(),
    };
    agents[0]
        .report_states(&machine_id(1), &report(1, &["a", "b", "c"]))
        .await
        .unwrap();
    // A state of a unit the cluster does not have is dropped; the rest of
    // the report is kept.
    agents[1]
        .report_states(&machine_id(2), &report(2, &["a", "d", "gone"]))
        .await
        .unwrap();
    let of = |unit: &str, n: u8| StateQuery {
        unit: Some(name(unit)),
        machine: Some(machine_id(n)),
    };
    assert_eq!(
        client.all_states(&of("b", 1)).await.unwrap(),
        vec![state("b", 1)]
    );
    assert!(client.all_states(&of("gone", 2)).await.unwrap().is_empty());

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
    assert!(client.all_states(&of("b", 1)).await.unwrap().is_empty());
    assert_eq!(
        client
            .all_states(&StateQuery::default())
            .await
            .unwrap()
            .len(),
        4
    );

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
    // A machine that joined reports while it is not live (its agent
    // registers again meanwhile): its states are kept, and read unknown
    // until it is live.
    let nine = server.agent(9).await;
    nine.report_states(&machine_id(9), &report(9, &["a"]))
        .await
        .unwrap();
    let listed = client.all_states(&of("a", 9)).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (
            listed[0].active_state.as_str(),
            listed[0].sub_state.as_str()
        ),
        ("unknown", "unknown")
    );
    assert_eq!(
        listed[0].last_error.as_deref(),
        Some("machine left the cluster (its lease ended); last reported active/running")
    );
    nine.register_machine(&machine(9)).await.unwrap();
    assert_eq!(
        client.all_states(&of("a", 9)).await.unwrap(),
        vec![state("a", 9)]
    );

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
