//! The OpenAPI document matches the routes: the same (method, path) pairs
//! as `ROUTES`, each of them served by the live router and no other method
//! on those paths; its schemas match the wire types in full: every field,
//! type, enum and nested object.

use std::collections::BTreeSet;

use flotilla_api::OPENAPI;
use flotilla_api::server::{HttpMethod, ROUTES};
use flotilla_api::wire::WatchIndex;
use flotilla_proto::event::{Event, EventKind, EventPage};
use flotilla_proto::trust::{
    AuditEntry, AuditPage, CertCreate, CertIssued, CredentialInfo, CredentialKind, CredentialList,
    JoinRequest, Role, TokenCreate, TokenCreated, WhoAmI,
};
use flotilla_proto::wire::{
    AssignedUnit, MachineResource, MachineUnits, RaftMemberResource, Registration, ServerAdd,
    ServerList, ServerMembership, ServerResource, StateReport, Unit, UnitOption,
};
use flotilla_proto::{ClusterId, DesiredState};
use serde_json::Value;

use crate::{Server, machine, machine_id, state};

fn document() -> Value {
    serde_json::from_str(OPENAPI).expect("openapi.json is JSON")
}

/// (METHOD, path) of every operation in the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (key, _) in item.as_object().unwrap() {
            if HttpMethod::ALL
                .iter()
                .any(|m| m.as_str().eq_ignore_ascii_case(key))
            {
                out.insert((key.to_uppercase(), path.clone()));
            } else {
                assert!(
                    ["parameters", "summary", "description"].contains(&key.as_str()),
                    "{path}: unexpected key {key}"
                );
            }
        }
    }
    out
}

#[test]
fn the_document_lists_exactly_the_routes() {
    let doc = document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    // fleet's routes (`/fleet/v1/...`) are described by fleet's own
    // discovery document, served at `/fleet/v1/discovery`.
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .filter(|r| !r.path.starts_with("/fleet/"))
        .map(|r| (r.method.as_str().to_owned(), r.path.to_owned()))
        .collect();
    assert_eq!(documented(&doc), routes);
}

#[test]
fn every_reference_resolves() {
    let doc = document();
    fn walk(v: &Value, doc: &Value) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    let pointer = r.strip_prefix('#').expect("local reference");
                    assert!(doc.pointer(pointer).is_some(), "dangling {r}");
                }
                map.values().for_each(|v| walk(v, doc));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, doc)),
            _ => {}
        }
    }
    walk(&doc, &doc);
}

/// The properties a schema allows and requires (through `allOf` too).
fn properties(doc: &Value, schema: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut allowed = BTreeSet::new();
    let mut required = BTreeSet::new();
    let mut stack = vec![doc["components"]["schemas"][schema].clone()];
    while let Some(s) = stack.pop() {
        if let Some(r) = s["$ref"].as_str() {
            stack.push(doc.pointer(r.strip_prefix('#').unwrap()).unwrap().clone());
        }
        if let Some(all) = s["allOf"].as_array() {
            stack.extend(all.iter().cloned());
        }
        if let Some(props) = s["properties"].as_object() {
            allowed.extend(props.keys().cloned());
        }
        if let Some(req) = s["required"].as_array() {
            required.extend(req.iter().map(|r| r.as_str().unwrap().to_owned()));
        }
    }
    assert!(!allowed.is_empty(), "no schema {schema}");
    (allowed, required)
}

/// Every field of `value` is in the schema, and every required one is in
/// `value` (which has every optional field set); and the whole value, its
/// nested objects, arrays, types and enums, conforms to the schema.
fn check(doc: &Value, schema: &str, value: impl serde::Serialize) {
    let value = serde_json::to_value(value).unwrap();
    let keys: BTreeSet<String> = value.as_object().unwrap().keys().cloned().collect();
    let (allowed, required) = properties(doc, schema);
    assert_eq!(keys, allowed, "{schema}: fields and properties differ");
    assert!(required.is_subset(&keys), "{schema}: required {required:?}");
    let schema_value = &doc["components"]["schemas"][schema];
    if let Some(v) = violation(doc, schema_value, &value, schema) {
        panic!("the document's schema and the wire type differ: {v}");
    }
}

/// Where `value` breaks `schema` (OpenAPI 3.1's subset this document
/// uses: `$ref`, `allOf`, `type`, `enum`, `minimum`, `properties`,
/// `required`, `additionalProperties`, `items`), down to every nested
/// field: `None` when it conforms. An object schema with `properties` and
/// no `additionalProperties` is closed, so that a field added to a type
/// and not to the document is caught however deep it is.
fn violation(doc: &Value, schema: &Value, value: &Value, at: &str) -> Option<String> {
    if let Some(r) = schema["$ref"].as_str() {
        let target = doc.pointer(r.strip_prefix('#').unwrap()).unwrap();
        return violation(doc, target, value, at);
    }
    if let Some(all) = schema["allOf"].as_array() {
        // Each part constrains what it names; the union of their
        // properties is the object's.
        let mut merged = serde_json::Map::new();
        let mut required = Vec::new();
        for part in all {
            let part = match part["$ref"].as_str() {
                Some(r) => doc.pointer(r.strip_prefix('#').unwrap()).unwrap(),
                None => part,
            };
            if let Some(props) = part["properties"].as_object() {
                merged.extend(props.clone());
            }
            if let Some(req) = part["required"].as_array() {
                required.extend(req.iter().cloned());
            }
        }
        let whole = serde_json::json!({
            "type": "object", "properties": merged, "required": required,
        });
        return violation(doc, &whole, value, at);
    }
    let type_ok = |t: &str| match t {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "null" => value.is_null(),
        other => panic!("{at}: schema type {other} is not one this check knows"),
    };
    let typed = match &schema["type"] {
        Value::String(t) => type_ok(t),
        Value::Array(ts) => ts.iter().any(|t| type_ok(t.as_str().unwrap())),
        _ => true,
    };
    if !typed {
        return Some(format!("{at}: {value} is not of type {}", schema["type"]));
    }
    if let Some(values) = schema["enum"].as_array()
        && !values.contains(value)
    {
        return Some(format!("{at}: {value} is not one of {values:?}"));
    }
    if let (Some(min), Some(n)) = (schema["minimum"].as_f64(), value.as_f64())
        && n < min
    {
        return Some(format!("{at}: {n} is below the minimum {min}"));
    }
    if let Some(items) = value.as_array() {
        let item_schema = &schema["items"];
        return items
            .iter()
            .enumerate()
            .find_map(|(i, item)| violation(doc, item_schema, item, &format!("{at}[{i}]")));
    }
    let fields = value.as_object()?;
    let props = schema["properties"].as_object();
    for req in schema["required"].as_array().into_iter().flatten() {
        let req = req.as_str().unwrap();
        if !fields.contains_key(req) {
            return Some(format!("{at}: the required field {req} is missing"));
        }
    }
    for (key, field) in fields {
        let here = format!("{at}.{key}");
        let field_schema = match (
            props.and_then(|p| p.get(key)),
            &schema["additionalProperties"],
        ) {
            (Some(s), _) => s,
            (None, Value::Bool(true)) => continue,
            (None, extra) if extra.is_object() => extra,
            (None, _) if props.is_some() => {
                return Some(format!("{here}: not a property of the schema"));
            }
            (None, _) => continue,
        };
        if let Some(v) = violation(doc, field_schema, field, &here) {
            return Some(v);
        }
    }
    None
}

/// The check above finds a wrong type, a value outside an enum, a missing
/// field and an unknown one, also nested.
#[test]
fn the_schema_check_finds_what_differs() {
    let doc = document();
    let unit = |patch: &dyn Fn(&mut Value)| {
        let mut v = serde_json::json!({
            "name": "a.service",
            "options": [{"section": "Service", "name": "ExecStart", "value": "/bin/true"}],
            "text": "",
            "hash": "h",
            "desiredState": "launched",
            "currentState": "loaded",
            "machineID": "m",
            "unscheduledReason": "r",
            "revision": 1,
        });
        patch(&mut v);
        violation(&doc, &doc["components"]["schemas"]["Unit"], &v, "Unit")
    };
    assert_eq!(unit(&|_| {}), None);
    assert!(unit(&|v| v["revision"] = "1".into()).is_some());
    assert!(unit(&|v| v["desiredState"] = "running".into()).is_some());
    assert!(unit(&|v| v["options"][0]["extra"] = 1.into()).is_some());
    assert!(unit(&|v| v["options"][0]["value"] = 1.into()).is_some());
    assert!(
        unit(&|v| {
            v.as_object_mut().unwrap().remove("name");
        })
        .is_some()
    );
}

#[test]
fn schemas_match_the_wire_types() {
    let doc = document();
    let unit = Unit {
        name: "a.service".into(),
        options: vec![UnitOption {
            section: "Service".into(),
            name: "ExecStart".into(),
            value: "/bin/true".into(),
        }],
        text: String::new(),
        hash: "h".into(),
        desired_state: DesiredState::Launched,
        current_state: Some(DesiredState::Loaded),
        machine_id: Some(machine_id(1)),
        unscheduled_reason: Some("r".into()),
        revision: 1,
    };
    check(&doc, "Unit", &unit);
    check(&doc, "UnitOption", &unit.options[0]);
    let mut full_state = state("a", 1);
    full_state.hash = Some("h".into());
    full_state.started_hash = Some("g".into());
    full_state.container_id = Some("c".into());
    full_state.last_error = Some("e".into());
    check(&doc, "UnitState", &full_state);
    check(&doc, "Machine", machine(1));
    let server = ServerResource {
        id: "host-1".into(),
        address: "https://127.0.0.1:7070".into(),
        version: "1".into(),
        leader: true,
        raft_id: Some(1),
        peer_address: Some("https://127.0.0.1:7071".into()),
        raft_role: Some("leader".into()),
        term: Some(2),
        applied: Some(10),
        last_index: Some(10),
        lag: Some(0),
    };
    check(&doc, "ServerResource", &server);
    check(
        &doc,
        "ServerList",
        ServerList {
            servers: vec![server],
        },
    );
    check(
        &doc,
        "ServerAdd",
        ServerAdd {
            id: 4,
            peer_address: "https://127.0.0.1:7074".into(),
        },
    );
    let member = RaftMemberResource {
        id: 1,
        peer_address: "https://127.0.0.1:7071".into(),
        voter: true,
    };
    check(&doc, "RaftMember", &member);
    check(
        &doc,
        "ServerMembership",
        ServerMembership {
            members: vec![member],
        },
    );
    check(
        &doc,
        "MachineResource",
        MachineResource {
            machine: machine(1),
            primary_ip: Some("10.0.0.1".into()),
            used: machine(1).capacity,
            units: 1,
        },
    );
    check(&doc, "Capacity", machine(1).capacity);
    check(
        &doc,
        "Registration",
        Registration {
            lease: 1,
            ttl_ms: 1,
            cluster_id: ClusterId::from_bytes([1; 16]),
        },
    );
    let assigned = AssignedUnit {
        name: "a.service".into(),
        text: String::new(),
        hash: "h".into(),
        desired_state: DesiredState::Loaded,
        global: true,
        secrets: [("db".to_owned(), 1)].into(),
    };
    check(&doc, "AssignedUnit", &assigned);
    let secret = flotilla_proto::secret::SecretInfo {
        name: "db".into(),
        size: 1,
        version: 1,
        created_ms: 1,
        updated_ms: 1,
        used_by: vec!["a.service".into()],
    };
    check(&doc, "SecretInfo", &secret);
    check(
        &doc,
        "SecretList",
        flotilla_proto::secret::SecretList {
            secrets: vec![secret],
        },
    );
    check(
        &doc,
        "SecretPut",
        flotilla_proto::secret::SecretPut {
            value: "dg==".into(),
            replace: true,
        },
    );
    let value = flotilla_proto::secret::SecretValue {
        name: "db".into(),
        version: 1,
        value: "dg==".into(),
    };
    check(&doc, "SecretValue", &value);
    check(
        &doc,
        "UnitSecrets",
        flotilla_proto::secret::UnitSecrets {
            unit: "a.service".into(),
            secrets: vec![value],
        },
    );
    check(
        &doc,
        "MachineUnits",
        MachineUnits {
            index: 1,
            units: vec![assigned],
            cluster_id: ClusterId::from_bytes([1; 16]),
        },
    );
    check(
        &doc,
        "StateReport",
        StateReport {
            states: vec![],
            removed: vec!["a.service".into()],
        },
    );
    check(&doc, "WatchIndex", WatchIndex { index: 1 });
    let credential = CredentialInfo {
        id: "0123456789abcdef".into(),
        name: "n".into(),
        role: Role::Machine,
        kind: CredentialKind::Token,
        machine_id: Some(machine_id(1)),
        created_ms: 1,
        expires_ms: Some(2),
        uses_left: Some(3),
        created_by: "b".into(),
    };
    check(&doc, "CredentialInfo", &credential);
    check(
        &doc,
        "CredentialList",
        CredentialList {
            credentials: vec![credential.clone()],
        },
    );
    check(
        &doc,
        "TokenCreate",
        TokenCreate {
            role: Role::Join,
            name: "n".into(),
            ttl_ms: Some(1),
            uses: Some(1),
        },
    );
    check(
        &doc,
        "TokenCreated",
        TokenCreated {
            credential: credential.clone(),
            token: "t".into(),
            join: Some("j".into()),
        },
    );
    check(
        &doc,
        "JoinRequest",
        JoinRequest {
            machine_id: machine_id(1),
        },
    );
    check(
        &doc,
        "CertCreate",
        CertCreate {
            role: Role::Viewer,
            name: "n".into(),
            csr_pem: "c".into(),
            ttl_ms: Some(1),
        },
    );
    check(
        &doc,
        "CertIssued",
        CertIssued {
            credential: credential.clone(),
            certificate_pem: "c".into(),
            ca_pem: "a".into(),
        },
    );
    check(
        &doc,
        "WhoAmI",
        WhoAmI {
            id: "i".into(),
            name: "n".into(),
            role: Role::Machine,
            machine_id: Some(machine_id(1)),
        },
    );
    let entry = AuditEntry {
        at_ms: 1,
        actor_id: "i".into(),
        actor_name: "n".into(),
        role: Role::Admin,
        action: "PUT /v1/units/a.service".into(),
        target: "units/a.service".into(),
        status: 201,
        peer: "127.0.0.1:1".into(),
    };
    check(&doc, "AuditEntry", &entry);
    check(
        &doc,
        "AuditPage",
        AuditPage {
            entries: vec![entry],
            next_page_token: Some("t".into()),
        },
    );
    let event = Event {
        id: "i".into(),
        ..Event::new(EventKind::UnitMoved, 1)
            .unit(&"a.service".parse().unwrap())
            .machine(&machine_id(1))
            .from_machine(&machine_id(2))
            .detail("d")
            .actor("a")
    };
    check(&doc, "Event", &event);
    check(
        &doc,
        "EventPage",
        EventPage {
            events: vec![event],
            next_page_token: Some("t".into()),
            index: 1,
        },
    );
    let rollout_options = flotilla_proto::rollout::RolloutOptions {
        max_parallel: Some(2),
        min_healthy_time: Some(std::time::Duration::from_secs(1)),
        auto_revert: Some(true),
        wave_timeout: Some(std::time::Duration::from_secs(60)),
    };
    check(&doc, "RolloutOptions", rollout_options);
    check(
        &doc,
        "RolloutRequest",
        flotilla_proto::rollout::RolloutRequest {
            group: "w@.service".into(),
            units: vec![flotilla_proto::rollout::RolloutUnitPut {
                name: "w@1.service".parse().unwrap(),
                text: "[Service]\nExecStart=/bin/true\n".into(),
            }],
            settings: rollout_options,
        },
    );
    let rollout = flotilla_proto::rollout::Rollout {
        id: "0000000000001-w@.service".into(),
        group: "w@.service".into(),
        state: flotilla_proto::rollout::RolloutState::Failed,
        settings: rollout_options.resolve(),
        waves: 2,
        waves_done: 0,
        current_wave: Some(0),
        units_on_new: 1,
        units: vec![flotilla_proto::rollout::RolloutUnitStatus {
            name: "w@1.service".parse().unwrap(),
            wave: 0,
            old_hash: "a".into(),
            new_hash: "b".into(),
            on_new: true,
        }],
        failure: Some("w@1.service: exit status 1".into()),
        reverted: true,
        created_ms: 1,
        updated_ms: 2,
    };
    check(&doc, "Rollout", &rollout);
    check(
        &doc,
        "RolloutList",
        flotilla_proto::rollout::RolloutList {
            rollouts: vec![rollout],
        },
    );
    let kinds: Vec<&str> = doc["components"]["schemas"]["EventKind"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    let ours: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(kinds, ours, "EventKind's values");
    git_sources(&doc);
}

/// The git sources' types, every optional field set.
fn git_sources(doc: &Value) {
    use flotilla_proto::sync::{
        CommitAt, DriftMode, DriftSeen, Drifted, Owned, Source, SourceInfo, SourcePut,
        SourceStatus, SyncChanges, SyncFailure,
    };
    check(
        doc,
        "SourcePut",
        SourcePut {
            repo: "git://h/r.git".into(),
            branch: Some("main".into()),
            path: Some("units".into()),
            interval: Some("30s".into()),
            prune: true,
            drift: DriftMode::Warn,
            credentials: Some("deploy".into()),
            ca: Some("-----BEGIN CERTIFICATE-----".into()),
            known_hosts: Some("h ssh-ed25519 AAAA".into()),
            signers: Some("ssh-ed25519 AAAA".into()),
        },
    );
    let at = CommitAt {
        commit: "0123456".into(),
        at_ms: 1,
    };
    let drifted = Drifted {
        unit: "a.service".into(),
        how: "contents".into(),
    };
    let info = SourceInfo {
        source: Source {
            name: "site".into(),
            repo: "git://h/r.git".into(),
            branch: "main".into(),
            path: String::new(),
            interval: std::time::Duration::from_secs(30),
            prune: false,
            drift: DriftMode::Revert,
            paused: false,
            credentials: Some("deploy".into()),
            ca: Some("-----BEGIN CERTIFICATE-----".into()),
            known_hosts: Some("h ssh-ed25519 AAAA".into()),
            signers: Some("ssh-ed25519 AAAA".into()),
        },
        status: SourceStatus {
            last_fetched: Some(at.clone()),
            last_applied: Some(at),
            last_changes: Some(SyncChanges {
                created: vec!["a.service".into()],
                replaced: vec!["b.service".into()],
                state_changed: vec!["c.service".into()],
                destroyed: vec!["d.service".into()],
            }),
            last_error: Some(SyncFailure {
                at_ms: 2,
                commit: Some("89abcde".into()),
                message: "a.service:4: error: x".into(),
            }),
            drifted: vec![drifted.clone()],
            last_drift: Some(DriftSeen {
                at_ms: 3,
                units: vec![drifted],
                reverted: true,
            }),
            owned: [(
                "a.service".to_owned(),
                Owned {
                    hash: "h".into(),
                    desired: DesiredState::Launched,
                },
            )]
            .into(),
        },
    };
    check(doc, "SourceInfo", &info);
    check(doc, "SourceStatus", &info.status);
    check(
        doc,
        "SourceList",
        flotilla_proto::sync::SourceList {
            sources: vec![info],
        },
    );
}

/// Probes the live router with every documented path and every method:
/// documented ones are routed (whatever the answer, it is not "no route"
/// or "method not allowed"), the others are 405.
#[tokio::test]
async fn the_live_router_serves_the_document() {
    let server = Server::start().await;
    let machine = server.machine_token(1).await;
    let join = server.token(Role::Join).await;
    let doc = document();
    let operations = documented(&doc);
    let paths: BTreeSet<&String> = operations.iter().map(|(_, p)| p).collect();
    for path in paths {
        let id = if path.starts_with("/v1/tokens/") {
            "0123456789abcdef".to_owned()
        } else if path.starts_with("/v1/machines/") {
            // Not a machine of this server: removing it changes nothing.
            machine_id(7).to_string()
        } else {
            machine_id(1).to_string()
        };
        let concrete = path.replace("{name}", "probe.service").replace("{id}", &id);
        let url = format!("{}{concrete}?wait=0", server.url);
        for method in HttpMethod::ALL {
            // Agent routes as the machine, the others as an admin.
            let token = if path.starts_with("/v1/agent/machines") {
                &machine
            } else if path == "/v1/agent/join" {
                &join
            } else {
                &server.admin
            };
            let (status, _, body) = server
                .raw_as(
                    Some(token),
                    method.as_str(),
                    &url,
                    Some("application/json"),
                    "{}",
                )
                .await;
            let reason = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["error"]["reason"].as_str().map(str::to_owned))
                .unwrap_or_default();
            let is_documented = operations.contains(&(method.as_str().to_owned(), path.clone()));
            if is_documented {
                assert!(
                    status != 405 && reason != "route_not_found",
                    "{} {path}: {status} {reason}",
                    method.as_str()
                );
            } else {
                assert_eq!(
                    (status, reason.as_str()),
                    (405, "method_not_allowed"),
                    "{} {path}",
                    method.as_str()
                );
            }
        }
    }
    // The document served is the crate's.
    let served = server.client().openapi().await.unwrap();
    assert_eq!(served, doc);
}
