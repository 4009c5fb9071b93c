//! Strings machines supply, state reports of units that do not exist, and
//! oversize paths, queries and bodies on every route: each refused with a
//! 400 or 413 naming what is wrong, never a 500, never stored.

use flotilla_proto::wire::{MachinePatch, StateReport};
use flotilla_proto::{Machine, UnitState};
use flotilla_scheduler::quota::Quotas;

use crate::{RealServer, SERVICE, api_error, machine, machine_id, name, submit};

fn state(unit: &str, m: &Machine) -> UnitState {
    crate::support::unit_state(unit, &m.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_in_machine_strings_are_refused_naming_the_field() {
    let server = RealServer::start(Quotas::default());
    let c = server.client();
    type Change = fn(&mut Machine);
    let cases: [(Change, &str); 4] = [
        (
            |m| m.hostname = "web\u{1b}]0;owned\u{7}".into(),
            "hostname holds the control character U+001B at byte 3; control characters are refused",
        ),
        (
            |m| m.addresses = vec!["10.0.0.1\u{1b}[2J".into()],
            "addresses[0] is not an IP address: \"10.0.0.1\\u{1b}[2J\"",
        ),
        (
            |m| {
                m.metadata.insert("disk\u{9b}".into(), "ssd".into());
            },
            "metadata key \"disk\\u{9b}\" holds the control character U+009B at byte 4; control characters are refused",
        ),
        (
            |m| m.hostname = "h".repeat(1_000_000),
            "hostname is 1000000 bytes long, over the limit of 253 bytes",
        ),
    ];
    let agent = server.agent(1).await;
    for (change, message) in cases {
        let mut m = machine(1);
        change(&mut m);
        let e = agent.register_machine(&m).await.unwrap_err();
        assert_eq!(api_error(&e, 400, "invalid_field"), message);
    }
    assert!(c.all_machines().await.unwrap().is_empty());

    // PATCH metadata is checked the same way.
    let m = machine(1);
    agent.register_machine(&m).await.unwrap();
    let patch = MachinePatch {
        metadata: [("role".to_owned(), Some("web\u{1b}[31m".to_owned()))].into(),
    };
    let e = c.patch_machine(&m.id, &patch).await.unwrap_err();
    assert_eq!(
        api_error(&e, 400, "invalid_field"),
        "metadata[\"role\"] holds the control character U+001B at byte 3; control characters are refused"
    );
    assert_eq!(
        c.all_machines().await.unwrap()[0].machine.metadata["role"],
        "web"
    );

    // And what agents report of their units.
    submit(&c, "web.service", SERVICE).await.unwrap();
    let mut bad = state("web.service", &m);
    bad.sub_state = "running\u{1b}[8m".into();
    let report = StateReport {
        states: vec![bad],
        removed: vec![],
    };
    let e = agent.report_states(&m.id, &report).await.unwrap_err();
    assert_eq!(
        api_error(&e, 400, "invalid_field"),
        "state of web.service: subState holds the control character U+001B at byte 7; control characters are refused"
    );
    assert!(c.all_states(&Default::default()).await.unwrap().is_empty());

    // An error the agent quotes is kept, cleaned, rather than refused: the
    // report of every other unit goes with it.
    let mut failed = state("web.service", &m);
    failed.last_error = Some(format!("bad\u{1b}[31m{}", "x".repeat(100_000)));
    let report = StateReport {
        states: vec![failed],
        removed: vec![],
    };
    agent.report_states(&m.id, &report).await.unwrap();
    let stored = c.all_states(&Default::default()).await.unwrap();
    let error = stored[0].last_error.as_deref().unwrap();
    assert!(error.starts_with("bad\\u{1b}[31mxxx"), "{}", &error[..20]);
    assert_eq!(error.len(), flotilla_proto::state::MAX_LAST_ERROR_LEN);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_of_units_the_cluster_does_not_have_are_dropped() {
    let server = RealServer::start(Quotas::default());
    let c = server.client();
    let agent = server.agent(1).await;
    let m = machine(1);
    agent.register_machine(&m).await.unwrap();
    submit(&c, "real.service", SERVICE).await.unwrap();

    // A made-up unit beside a real one: the real one is stored, the batch
    // does not fail.
    let report = StateReport {
        states: vec![state("ghost.service", &m), state("real.service", &m)],
        removed: vec![],
    };
    agent.report_states(&m.id, &report).await.unwrap();
    let stored: Vec<String> = c
        .all_states(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.unit.to_string())
        .collect();
    assert_eq!(stored, ["real.service"]);

    // An agent racing a destroy: its report arrives after the unit is gone
    // and leaves nothing behind.
    c.delete_unit(&name("real.service")).await.unwrap();
    let late = StateReport {
        states: vec![state("real.service", &m)],
        removed: vec![],
    };
    agent.report_states(&m.id, &late).await.unwrap();
    assert!(c.all_states(&Default::default()).await.unwrap().is_empty());
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_paths_queries_and_bodies_answer_400_or_413() {
    let server = RealServer::start(Quotas::default());
    let c = server.client();
    let agent = server.agent(1).await;
    let m = machine(1);
    let lease = agent.register_machine(&m).await.unwrap().lease;
    submit(&c, "web.service", SERVICE).await.unwrap();
    let url = |path: &str| format!("{}{path}", server.url);
    let long = "a".repeat(60_000);
    let digits = "9".repeat(40);
    let id = machine_id(1);

    // Queries and paths the API refuses, with the reason it gives.
    let refused = [
        ("GET", format!("/v1/units/{long}"), "invalid_unit_name"),
        ("PUT", format!("/v1/units/{long}"), "invalid_unit_name"),
        ("DELETE", format!("/v1/units/{long}"), "invalid_unit_name"),
        (
            "GET",
            format!("/v1/units?nextPageToken={long}"),
            "invalid_request",
        ),
        (
            "GET",
            format!("/v1/state?unitName={long}"),
            "invalid_unit_name",
        ),
        (
            "GET",
            format!("/v1/state?machineID={long}"),
            "invalid_machine_id",
        ),
        (
            "GET",
            format!("/v1/state?nextPageToken={long}"),
            "invalid_request",
        ),
        (
            "GET",
            format!("/v1/machines?nextPageToken={long}"),
            "invalid_request",
        ),
        (
            "PATCH",
            format!("/v1/machines/{long}"),
            "invalid_machine_id",
        ),
        ("GET", format!("/v1/watch?index={digits}"), "invalid_query"),
        ("GET", format!("/v1/units?limit={long}"), "invalid_query"),
        (
            "POST",
            format!("/v1/agent/machines/{long}/heartbeat"),
            "invalid_machine_id",
        ),
        (
            "GET",
            format!("/v1/agent/machines/{long}/units"),
            "invalid_machine_id",
        ),
        (
            "GET",
            format!("/v1/agent/machines/{id}/units?index={digits}"),
            "invalid_query",
        ),
        (
            "PUT",
            format!("/v1/agent/machines/{long}/state"),
            "invalid_machine_id",
        ),
    ];
    for (method, path, reason) in refused {
        let e = server
            .raw_error(method, &url(&path), Some(b"{}".to_vec()))
            .await;
        assert_eq!(
            (e.error.code, e.error.reason.as_str()),
            (400, reason),
            "{method} {}",
            &path[..path.len().min(60)]
        );
    }

    // Numbers too large to hold mean "as much as allowed".
    let (status, _) = server
        .raw(
            "GET",
            &url(&format!("/v1/units?limit=1{}", "0".repeat(30))),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .raw("GET", &url("/v1/watch?index=0&wait=1e30"), None)
        .await;
    assert_eq!(status, 200);

    // Bodies: too large for a field (400), or for a limit (413).
    let json = |v: serde_json::Value| Some(serde_json::to_vec(&v).unwrap());
    let bodies = [
        (
            "PUT",
            "/v1/units/big.service".to_owned(),
            json(serde_json::json!({
                "desiredState": "inactive",
                "text": format!("{SERVICE}# {}\n", "x".repeat(900_000)),
            })),
            413,
            "too_large",
        ),
        (
            "PATCH",
            format!("/v1/machines/{id}"),
            json(serde_json::json!({
                "metadata": (0..30_000)
                    .map(|i| (format!("key-{i:016}"), "v"))
                    .collect::<std::collections::BTreeMap<_, _>>(),
            })),
            413,
            "too_large",
        ),
        (
            "PATCH",
            format!("/v1/machines/{id}"),
            json(serde_json::json!({"metadata": {long.clone(): "v"}})),
            400,
            "invalid_field",
        ),
        (
            "POST",
            "/v1/agent/machines".to_owned(),
            json(serde_json::json!({
                "id": id, "hostname": "h", "addresses": [], "metadata": {},
                "capacity": {"cpuMillis": 1, "memoryBytes": 1},
                "agentVersion": "v".repeat(1_000_000),
            })),
            400,
            "invalid_field",
        ),
        (
            "POST",
            format!("/v1/agent/machines/{id}/heartbeat"),
            Some(format!("{{\"lease\": {digits}}}").into_bytes()),
            400,
            "invalid_json",
        ),
        (
            "PUT",
            format!("/v1/agent/machines/{id}/state"),
            json(serde_json::json!({"states": [{
                "unit": "web.service", "machine": id, "loadState": "loaded",
                "activeState": "failed", "subState": "f".repeat(1_000_000), "sinceMs": 0,
            }]})),
            400,
            "invalid_field",
        ),
    ];
    for (method, path, body, status, reason) in bodies {
        let e = server.raw_error(method, &url(&path), body).await;
        assert_eq!(
            (e.error.code, e.error.reason.as_str()),
            (status, reason),
            "{method} {path}: {}",
            e.error.message
        );
    }
    // The lease still works and nothing was stored.
    agent.heartbeat(&m.id, lease).await.unwrap();
    assert_eq!(c.all_units().await.unwrap().len(), 1);
    assert_eq!(
        c.all_machines().await.unwrap()[0].machine.metadata,
        m.metadata
    );
    server.stop();
}
