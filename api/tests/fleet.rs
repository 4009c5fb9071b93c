//! fleet's v1 API at `/fleet/v1/`, rule by rule, as tables of requests and
//! the answers fleet 1.0 gives them (its `api/` package): a real server
//! (embedded store, leader, scheduler) over real HTTPS, with a simulated
//! agent for machines and reported states. Where flotilla answers
//! otherwise on purpose, the case says what fleet does and why.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use flotilla_api::client::Client;
use flotilla_api::daemon::Daemon;
use flotilla_proto::trust::{Role, TokenCreate};
use flotilla_proto::wire::StateReport;
use flotilla_proto::{MachineId, UnitName};
use flotilla_scheduler::placement::Strategy;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use support::{client_options, machine, machine_id, raw_request, unit_state};

const TTL: Duration = Duration::from_secs(2);
const DEADLINE: Duration = Duration::from_secs(30);

struct Server {
    daemon: Option<Daemon>,
    ca_pem: Vec<u8>,
    admin: String,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let daemon = Daemon::start(support::daemon_config(
            dir.path().join("data"),
            TTL,
            Strategy::default(),
        ))
        .await
        .unwrap();
        let ca_pem = daemon.trust().ca.cert_pem().as_bytes().to_vec();
        let admin = std::fs::read_to_string(daemon.admin_token_path().unwrap())
            .unwrap()
            .trim()
            .to_owned();
        Server {
            daemon: Some(daemon),
            ca_pem,
            admin,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.daemon.as_ref().unwrap().url())
    }

    fn client_with(&self, token: &str) -> Client {
        Client::with_options(
            [self.daemon.as_ref().unwrap().url()],
            client_options(&self.ca_pem, Some(token)),
        )
        .unwrap()
    }

    async fn token(&self, role: Role, uses: Option<u32>) -> String {
        self.client_with(&self.admin)
            .create_token(&TokenCreate {
                role,
                name: format!("test {role}"),
                ttl_ms: None,
                uses,
            })
            .await
            .unwrap()
            .token
    }

    /// `method path` as the admin (or `token`), with `body` declared
    /// `content_type`; the status and the body as JSON (`null` if none).
    async fn call(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> (u16, Value) {
        let (status, _, bytes) = raw_request(
            &self.ca_pem,
            Some(token.unwrap_or(&self.admin)),
            method,
            &self.url(path),
            content_type,
            body.to_owned(),
        )
        .await;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "{method} {path}: not JSON: {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        (status, value)
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(None, "GET", path, None, "").await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(d) = self.daemon.take() {
            // The runtime is still there when a test body ends normally;
            // a panicking test drops it anyway.
            drop(d);
        }
    }
}

/// What a step expects back.
enum Expect {
    /// This status and exactly this body.
    Body(u16, Value),
    /// This status and an error body `{"error": {"code", "message"}}` with
    /// fleet's message.
    Error(u16, &'static str),
    /// This status and an error body whose message contains this.
    ErrorContaining(u16, &'static str),
}

/// One request of a table: method, path, `Content-Type`, body.
struct Step {
    method: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    body: String,
    expect: Expect,
}

const JSON: Option<&str> = Some("application/json");

fn step(method: &'static str, path: &'static str, body: Value, expect: Expect) -> Step {
    Step {
        method,
        path,
        content_type: JSON,
        body: if body.is_null() {
            String::new()
        } else {
            body.to_string()
        },
        expect,
    }
}

async fn run(server: &Server, steps: Vec<Step>) {
    for (i, s) in steps.into_iter().enumerate() {
        let (status, body) = server
            .call(None, s.method, s.path, s.content_type, &s.body)
            .await;
        let what = format!("step {i}: {} {} {}", s.method, s.path, s.body);
        match s.expect {
            Expect::Body(code, expected) => {
                assert_eq!((status, &body), (code, &expected), "{what}");
            }
            Expect::Error(code, message) => {
                assert_eq!(status, code, "{what}: {body}");
                assert_eq!(body["error"]["code"], json!(code), "{what}: {body}");
                assert_eq!(body["error"]["message"], json!(message), "{what}");
            }
            Expect::ErrorContaining(code, part) => {
                assert_eq!(status, code, "{what}: {body}");
                assert_eq!(body["error"]["code"], json!(code), "{what}: {body}");
                let message = body["error"]["message"].as_str().unwrap_or_default();
                assert!(message.contains(part), "{what}: {message}");
            }
        }
    }
}

fn opts(pairs: &[(&str, &str, &str)]) -> Value {
    Value::Array(
        pairs
            .iter()
            .map(|(s, n, v)| json!({"section": s, "name": n, "value": v}))
            .collect(),
    )
}

fn hello() -> Value {
    opts(&[
        ("Unit", "Description", "hello"),
        ("Service", "ExecStart", "/bin/sleep 1000"),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_are_created_changed_and_destroyed_as_fleet_does() {
    let server = Server::start().await;
    use Expect::*;
    let steps = vec![
        // fleetctl submit: no desiredState; fleet makes the unit inactive.
        step(
            "PUT",
            "/fleet/v1/units/a.service",
            json!({"name": "a.service", "options": hello()}),
            Body(201, Value::Null),
        ),
        step(
            "GET",
            "/fleet/v1/units/a.service",
            Value::Null,
            Body(
                200,
                json!({
                    "name": "a.service", "options": hello(), "desiredState": "inactive", "currentState": "inactive"
                }),
            ),
        ),
        // The name may be left out of the body; it comes from the URL.
        step(
            "PUT",
            "/fleet/v1/units/b.service",
            json!({"options": hello(), "desiredState": "loaded"}),
            Body(201, Value::Null),
        ),
        // The same options again and a state: only the state changes.
        step(
            "PUT",
            "/fleet/v1/units/a.service",
            json!({"options": hello(), "desiredState": "inactive"}),
            Body(204, Value::Null),
        ),
        // The same options and no state: nothing to set, 409.
        step(
            "PUT",
            "/fleet/v1/units/a.service",
            json!({"options": hello()}),
            Error(409, "must provide DesiredState to update existing unit"),
        ),
        step(
            "PUT",
            "/fleet/v1/units/a.service",
            json!({}),
            Error(409, "must provide DesiredState to update existing unit"),
        ),
        // Options that differ replace the unit, and its desired state
        // becomes the body's, or inactive (fleet's CreateUnit).
        step(
            "PUT",
            "/fleet/v1/units/b.service",
            json!({"options": opts(&[("Service", "ExecStart", "/bin/sleep 2000")])}),
            Body(201, Value::Null),
        ),
        step(
            "GET",
            "/fleet/v1/units/b.service",
            Value::Null,
            Body(
                200,
                json!({
                    "name": "b.service",
                    "options": [{"section": "Service", "name": "ExecStart", "value": "/bin/sleep 2000"}],
                    "desiredState": "inactive", "currentState": "inactive"
                }),
            ),
        ),
        // A desired state alone, for a unit that does not exist: 409.
        step(
            "PUT",
            "/fleet/v1/units/nope.service",
            json!({"desiredState": "launched"}),
            Error(409, "unit does not exist and options field empty"),
        ),
        step(
            "PUT",
            "/fleet/v1/units/nope.service",
            json!({"options": [], "desiredState": "launched"}),
            Error(409, "unit does not exist and options field empty"),
        ),
        // The body's name must be the URL's.
        step(
            "PUT",
            "/fleet/v1/units/a.service",
            json!({"name": "b.service", "options": hello()}),
            Error(
                400,
                "name in URL \"a.service\" differs from unit name in request body \"b.service\"",
            ),
        ),
        // fleet's name rules, with fleet's messages.
        step(
            "PUT",
            "/fleet/v1/units/nodot",
            json!({"options": hello()}),
            Error(400, "unit name must contain \".\""),
        ),
        step(
            "PUT",
            "/fleet/v1/units/a.bogus",
            json!({"options": hello()}),
            Error(400, "invalid unit type: \"bogus\""),
        ),
        step(
            "PUT",
            "/fleet/v1/units/@a.service",
            json!({"options": hello()}),
            Error(400, "unit name cannot start in \"@\""),
        ),
        step(
            "PUT",
            "/fleet/v1/units/a@1.mount",
            json!({"options": hello()}),
            Error(400, "invalid unit type for template: \"mount\""),
        ),
        // The body must be JSON, declared as such.
        step(
            "PUT",
            "/fleet/v1/units/a.service",
            Value::Null,
            ErrorContaining(400, "unable to decode body"),
        ),
        Step {
            method: "PUT",
            path: "/fleet/v1/units/a.service",
            content_type: None,
            body: "{}".into(),
            expect: Error(415, "expected 1 Content-Type, got 0"),
        },
        Step {
            method: "PUT",
            path: "/fleet/v1/units/a.service",
            content_type: Some("text/plain"),
            body: "{}".into(),
            expect: Error(415, "only acceptable Content-Type is application/json"),
        },
        Step {
            method: "PUT",
            path: "/fleet/v1/units/a.service",
            content_type: Some("application/json; charset=utf-8"),
            body: r#"{"desiredState":"loaded"}"#.into(),
            expect: Body(204, Value::Null),
        },
        // fleet stores an unknown state as given (and then never reaches
        // it); flotilla refuses it.
        step(
            "PUT",
            "/fleet/v1/units/a.service",
            json!({"desiredState": "running"}),
            ErrorContaining(400, "unknown desired state \"running\""),
        ),
        // An option without a value is an empty value, as Go reads it.
        step(
            "PUT",
            "/fleet/v1/units/c.service",
            json!({"options": [
                {"section": "Unit", "name": "Description"},
                {"section": "Service", "name": "ExecStart", "value": "/bin/true"}
            ]}),
            Body(201, Value::Null),
        ),
        step(
            "GET",
            "/fleet/v1/units/c.service",
            Value::Null,
            Body(
                200,
                json!({
                    "name": "c.service",
                    "options": [
                        {"section": "Unit", "name": "Description"},
                        {"section": "Service", "name": "ExecStart", "value": "/bin/true"}
                    ],
                    "desiredState": "inactive", "currentState": "inactive"
                }),
            ),
        ),
        // fleet would store a value holding a bare line end and read it
        // back as another option; flotilla refuses it.
        step(
            "PUT",
            "/fleet/v1/units/d.service",
            json!({"options": opts(&[("Service", "ExecStart", "/bin/true\nUser=root")])}),
            ErrorContaining(
                400,
                "option ExecStart in [Service] would not read back as given",
            ),
        ),
        step(
            "GET",
            "/fleet/v1/units/d.service",
            Value::Null,
            Error(404, "unit does not exist"),
        ),
        // A unit file flotilla refuses is refused with its reason, and
        // nothing is stored.
        step(
            "PUT",
            "/fleet/v1/units/e.service",
            json!({"options": opts(&[
                ("Service", "ExecStart", "/bin/true"),
                ("X-Fleet", "MachineID", "0123456789abcdef0123456789abcdef"),
                ("X-Fleet", "Global", "true")
            ])}),
            ErrorContaining(400, "Global"),
        ),
        step(
            "GET",
            "/fleet/v1/units/e.service",
            Value::Null,
            Error(404, "unit does not exist"),
        ),
        // Templates: stored, never activated.
        step(
            "PUT",
            "/fleet/v1/units/w@.service",
            json!({"options": hello()}),
            Body(201, Value::Null),
        ),
        step(
            "PUT",
            "/fleet/v1/units/w@.service",
            json!({"desiredState": "launched"}),
            Error(400, "cannot activate template \"w@.service\""),
        ),
        step(
            "GET",
            "/fleet/v1/units/w@.service",
            Value::Null,
            Body(
                200,
                json!({
                    "name": "w@.service", "options": hello(), "desiredState": "inactive", "currentState": "inactive"
                }),
            ),
        ),
        // An instance with no options does not exist yet: fleetctl sends
        // the template's options itself.
        step(
            "PUT",
            "/fleet/v1/units/w@1.service",
            json!({"desiredState": "loaded"}),
            Error(409, "unit does not exist and options field empty"),
        ),
        step(
            "PUT",
            "/fleet/v1/units/w@1.service",
            json!({"options": hello(), "desiredState": "loaded"}),
            Body(201, Value::Null),
        ),
        // Destroy.
        step(
            "DELETE",
            "/fleet/v1/units/a.service",
            Value::Null,
            Body(204, Value::Null),
        ),
        step(
            "DELETE",
            "/fleet/v1/units/a.service",
            Value::Null,
            Error(404, "unit does not exist"),
        ),
        step(
            "GET",
            "/fleet/v1/units/a.service",
            Value::Null,
            Error(404, "unit does not exist"),
        ),
        // A name flotilla would complete (`b` is b.service to flotilla's
        // own API) is no unit to fleet.
        step(
            "GET",
            "/fleet/v1/units/b",
            Value::Null,
            Error(404, "unit does not exist"),
        ),
        step(
            "DELETE",
            "/fleet/v1/units/b",
            Value::Null,
            Error(404, "unit does not exist"),
        ),
        // Unknown routes and methods.
        step(
            "GET",
            "/fleet/v1/units/",
            Value::Null,
            ErrorContaining(404, ""),
        ),
        step(
            "POST",
            "/fleet/v1/units",
            Value::Null,
            ErrorContaining(405, ""),
        ),
        step(
            "GET",
            "/fleet/v1/bogus",
            Value::Null,
            ErrorContaining(404, ""),
        ),
    ];
    run(&server, steps).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continued_lines_and_fleets_hash_round_trip() {
    let server = Server::start().await;
    // As fleetctl reads a file with a continued line, it sends the line end
    // and backslash in the value; it must come back exactly so, or fleetctl
    // warns that the unit differs from its file.
    let options = opts(&[
        ("Unit", "Description", "continued"),
        ("Service", "ExecStart", "/bin/sh -c \\\n  'sleep 1000'"),
        ("X-Fleet", "Conflicts", "other*.service"),
    ]);
    let (status, _) = server
        .call(
            None,
            "PUT",
            "/fleet/v1/units/cont.service",
            JSON,
            &json!({"options": options}).to_string(),
        )
        .await;
    assert_eq!(status, 201);
    let unit = server.get("/fleet/v1/units/cont.service").await;
    assert_eq!(unit["options"], options);
    // flotilla's own API shows the file fleet would have written, and
    // flotilla's reading of it (the continued line joined, as systemd).
    let own = server.get("/v1/units/cont.service").await;
    assert_eq!(
        own["text"],
        json!(
            "[Unit]\nDescription=continued\n\n[Service]\nExecStart=/bin/sh -c \\\n  'sleep 1000'\n\n[X-Fleet]\nConflicts=other*.service\n"
        )
    );
    // Submitting the same options again is no change.
    let (status, body) = server
        .call(
            None,
            "PUT",
            "/fleet/v1/units/cont.service",
            JSON,
            &json!({"options": options, "desiredState": "inactive"}).to_string(),
        )
        .await;
    assert_eq!((status, body), (204, Value::Null));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_page_as_fleet_does() {
    let server = Server::start().await;
    for n in 0..150 {
        let path = format!("/fleet/v1/units/u{n:03}.service");
        let (status, _) = server
            .call(
                None,
                "PUT",
                &path,
                JSON,
                &json!({"options": hello()}).to_string(),
            )
            .await;
        assert_eq!(status, 201);
    }
    let first = server.get("/fleet/v1/units").await;
    assert_eq!(first["units"].as_array().unwrap().len(), 100);
    assert_eq!(first["units"][0]["name"], json!("u000.service"));
    let token = first["nextPageToken"].as_str().unwrap();
    let second = server
        .get(&format!("/fleet/v1/units?nextPageToken={token}"))
        .await;
    let names: Vec<&str> = second["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 50);
    assert_eq!(names[0], "u100.service");
    assert!(second.get("nextPageToken").is_none(), "{second}");
    // Empty listings leave their arrays out, as fleet's do.
    assert_eq!(server.get("/fleet/v1/machines").await, json!({}));
    assert_eq!(server.get("/fleet/v1/state").await, json!({}));
}

/// A simulated agent for machine `n`: joins, registers, heartbeats, and
/// reports every unit it is given as active with the hash it was given.
struct Agent {
    id: MachineId,
    client: Client,
    tasks: Vec<JoinHandle<()>>,
}

impl Agent {
    async fn start(server: &Server, n: u8) -> Agent {
        let join = server.token(Role::Join, Some(1)).await;
        let created = server
            .client_with(&join)
            .join(&machine_id(n))
            .await
            .unwrap();
        let client = server.client_with(&created.token);
        let reg = client.register_machine(&machine(n)).await.unwrap();
        let id = machine_id(n);
        let beat = tokio::spawn({
            let (client, id) = (client.clone(), id.clone());
            async move {
                loop {
                    tokio::time::sleep(TTL / 5).await;
                    let _ = client.heartbeat(&id, reg.lease).await;
                }
            }
        });
        let report = tokio::spawn({
            let (client, id) = (client.clone(), id.clone());
            async move {
                let mut index = None;
                loop {
                    let Ok(feed) = client
                        .machine_units(&id, index, Duration::from_secs(5))
                        .await
                    else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    index = Some(feed.index);
                    let states = feed
                        .units
                        .iter()
                        .map(|u| {
                            let mut s = unit_state(&u.name, &id);
                            s.hash = Some(u.hash.clone());
                            if u.desired_state != flotilla_proto::DesiredState::Launched {
                                s.active_state = "inactive".into();
                                s.sub_state = "dead".into();
                            }
                            s
                        })
                        .collect();
                    let _ = client
                        .report_states(
                            &id,
                            &StateReport {
                                states,
                                removed: Vec::new(),
                            },
                        )
                        .await;
                }
            }
        });
        Agent {
            id,
            client,
            tasks: vec![beat, report],
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

/// Waits until `GET path` answers 200 with a body `check` accepts.
async fn until(server: &Server, path: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (status, body) = server.call(None, "GET", path, None, "").await;
        if status == 200 && check(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "GET {path}: still {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_machines_and_metadata_as_fleet_shows_them() {
    let server = Server::start().await;
    let agent = Agent::start(&server, 1).await;
    let _ = &agent.client;
    let id = agent.id.to_string();
    let machines = until(&server, "/fleet/v1/machines", |b| {
        b.get("machines").is_some()
    })
    .await;
    assert_eq!(
        machines,
        json!({"machines": [{"id": id, "primaryIP": "10.0.0.1", "metadata": {"role": "web"}}]})
    );

    // Before any machine reports it, a unit has no state: 404, with
    // fleet's message (fleetctl waits on this).
    let (status, _) = server
        .call(
            None,
            "PUT",
            "/fleet/v1/units/s.service",
            JSON,
            &json!({"options": hello(), "desiredState": "launched"}).to_string(),
        )
        .await;
    assert_eq!(status, 201);
    let unit = until(&server, "/fleet/v1/units/s.service", |u| {
        u["currentState"] == "launched"
    })
    .await;
    assert_eq!(unit["machineID"], json!(id));
    let state = server.get("/fleet/v1/state/s.service").await;
    // fleet's hash: SHA-1 of the unit file fleet writes for the options.
    // `printf '[Unit]\nDescription=hello\n\n[Service]\nExecStart=/bin/sleep 1000\n' | sha1sum`
    let sha1 = "0920127507448386dca811da7f5ad48d5f3e2efa";
    assert_eq!(
        state,
        json!({
            "name": "s.service", "hash": sha1, "machineID": id,
            "systemdLoadState": "loaded", "systemdActiveState": "active", "systemdSubState": "running"
        })
    );
    let listed = server.get(&format!("/fleet/v1/state?machineID={id}")).await;
    assert_eq!(listed, json!({"states": [state.clone()]}));
    let listed = server.get("/fleet/v1/state?unitName=s.service").await;
    assert_eq!(listed, json!({"states": [state]}));
    // Filters that match nothing, or name nothing fleet would, give none.
    assert_eq!(
        server.get("/fleet/v1/state?unitName=other.service").await,
        json!({})
    );
    assert_eq!(server.get("/fleet/v1/state?unitName=s").await, json!({}));
    assert_eq!(server.get("/fleet/v1/state?machineID=xyz").await, json!({}));
    let (status, body) = server
        .call(None, "GET", "/fleet/v1/state/none.service", None, "")
        .await;
    assert_eq!(
        (status, &body["error"]["message"]),
        (404, &json!("unit state does not exist"))
    );

    // Global units show no current state and no machine: they have many.
    let global = opts(&[
        ("Service", "ExecStart", "/bin/sleep 1000"),
        ("X-Fleet", "Global", "true"),
    ]);
    let (status, _) = server
        .call(
            None,
            "PUT",
            "/fleet/v1/units/g.service",
            JSON,
            &json!({"options": global, "desiredState": "launched"}).to_string(),
        )
        .await;
    assert_eq!(status, 201);
    until(&server, "/fleet/v1/state/g.service", |s| {
        s["systemdActiveState"] == "active"
    })
    .await;
    let g = server.get("/fleet/v1/units/g.service").await;
    assert_eq!(
        g,
        json!({"name": "g.service", "options": global, "desiredState": "launched"})
    );

    // Metadata, with fleet's JSON patch.
    let patch = |ops: Value| {
        let server = &server;
        async move {
            server
                .call(None, "PATCH", "/fleet/v1/machines", None, &ops.to_string())
                .await
        }
    };
    let path = format!("/{id}/metadata/disk");
    assert_eq!(
        patch(json!([{"op": "add", "path": path, "value": {"value": "ssd"}}])).await,
        (204, Value::Null)
    );
    let m = server.get("/fleet/v1/machines").await;
    assert_eq!(
        m["machines"][0]["metadata"],
        json!({"role": "web", "disk": "ssd"})
    );
    assert_eq!(
        patch(json!([{"op": "remove", "path": path}])).await,
        (204, Value::Null)
    );
    let m = server.get("/fleet/v1/machines").await;
    assert_eq!(m["machines"][0]["metadata"], json!({"role": "web"}));
    for (ops, message) in [
        (
            json!([{"op": "move", "path": path}]),
            "invalid op: expect add, remove, or replace",
        ),
        (
            json!([{"op": "add", "path": "/x/disk", "value": {"value": "a"}}]),
            "machine metadata path invalid",
        ),
        (
            json!([{"op": "add", "path": path}]),
            "invalid value: add and replace require a value",
        ),
        (
            json!([{"op": "replace", "path": path, "value": {"value": ""}}]),
            "invalid value: add and replace require a value",
        ),
    ] {
        let (status, body) = patch(ops.clone()).await;
        assert_eq!(
            (status, &body["error"]["message"]),
            (400, &json!(message)),
            "{ops}"
        );
    }
    // Every operation is checked before any is applied.
    let (status, _) = patch(json!([
        {"op": "add", "path": path, "value": {"value": "hdd"}},
        {"op": "bogus", "path": path}
    ]))
    .await;
    assert_eq!(status, 400);
    let m = server.get("/fleet/v1/machines").await;
    assert_eq!(m["machines"][0]["metadata"], json!({"role": "web"}));
    let (status, _) = patch(json!([{"op": "add", "path": format!("/{}/metadata/disk", machine_id(9)), "value": {"value": "a"}}])).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_discovery_document_is_fleets_and_roles_apply() {
    let server = Server::start().await;
    let doc: Value =
        serde_json::from_str(include_str!("../src/server/fleet/discovery.json")).unwrap();
    // Anyone may read the discovery document, as the OpenAPI document.
    let (status, _, bytes) = raw_request(
        &server.ca_pem,
        None,
        "GET",
        &server.url("/fleet/v1/discovery"),
        None,
        "",
    )
    .await;
    assert_eq!(status, 200);
    let served: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(served, doc);
    assert_eq!(served["rootUrl"], json!("$ENDPOINT/"));
    // Everything else needs a credential, and changes need a role that may
    // make them.
    let (status, _, _) = raw_request(
        &server.ca_pem,
        None,
        "GET",
        &server.url("/fleet/v1/units"),
        None,
        "",
    )
    .await;
    assert_eq!(status, 401);
    let viewer = server.token(Role::Viewer, None).await;
    let (status, _) = server
        .call(Some(&viewer), "GET", "/fleet/v1/units", None, "")
        .await;
    assert_eq!(status, 200);
    let (status, body) = server
        .call(
            Some(&viewer),
            "PUT",
            "/fleet/v1/units/v.service",
            JSON,
            &json!({"options": hello()}).to_string(),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let operator = server.token(Role::Operator, None).await;
    let (status, _) = server
        .call(Some(&operator), "PATCH", "/fleet/v1/machines", None, "[]")
        .await;
    assert_eq!(status, 403);
    let (status, _) = server
        .call(
            Some(&operator),
            "PUT",
            "/fleet/v1/units/v.service",
            JSON,
            &json!({"options": hello()}).to_string(),
        )
        .await;
    assert_eq!(status, 201);
    // A unit stored through fleet's API is the same unit on flotilla's.
    let own = server.client_with(&server.admin);
    let unit = own
        .get_unit(&UnitName::parse("v.service").unwrap())
        .await
        .unwrap();
    assert_eq!(unit.desired_state, flotilla_proto::DesiredState::Inactive);
}
