//! Every request body type the API decodes, fed generated input: arbitrary
//! bytes, arbitrary JSON (deep and wide), and valid bodies with their
//! values bent. Decoding (and the checks that follow it on each route)
//! never panics, refuses with a 400 reason, and costs time in proportion
//! to the input (serde_json is a single pass, and stops at 128 levels of
//! nesting).
//!
//! As the unit-file harness (proto/tests/generated.rs): proptest with a
//! fixed seed and a fixed number of cases, so that CI is deterministic;
//! `FLOTILLA_FUZZ_CASES` runs more.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use flotilla_proto::Machine;
use flotilla_proto::trust::{CertCreate, JoinRequest, TokenCreate};
use flotilla_proto::wire::{Heartbeat, MachinePatch, StateReport, UnitPut, text_of};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::Value;

use super::ApiError;
use super::extract::decode_body;

const CASES: u32 = 400;
const SEED: [u8; 32] = *b"flotilla api request body seed 1";

fn runner() -> TestRunner {
    let cases = std::env::var("FLOTILLA_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(CASES);
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &SEED))
}

/// Decodes `bytes` as every body type, and runs the checks each route
/// runs on a decoded body: an answer or a 400, never a panic.
fn decode_every_body(bytes: &[u8]) {
    fn refused<T>(r: Result<T, ApiError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                let (status, _) = e.status_and_reason();
                assert_eq!(status.as_u16(), 400, "{e}");
                None
            }
        }
    }
    if let Some(put) = refused(decode_body::<UnitPut>(bytes))
        && let Some(options) = &put.options
    {
        let _ = text_of("fuzz.service", options);
    }
    if let Some(m) = refused(decode_body::<Machine>(bytes)) {
        let _ = m.validate();
    }
    if let Some(p) = refused(decode_body::<MachinePatch>(bytes)) {
        let _ = p.validate();
    }
    if let Some(r) = refused(decode_body::<StateReport>(bytes)) {
        for s in &r.states {
            let _ = s.validate();
        }
    }
    refused(decode_body::<Heartbeat>(bytes));
    refused(decode_body::<TokenCreate>(bytes));
    refused(decode_body::<CertCreate>(bytes));
    refused(decode_body::<JoinRequest>(bytes));
}

/// Arbitrary JSON, up to a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("desiredState".to_owned()),
                    Just("options".to_owned()),
                    Just("text".to_owned()),
                    Just("id".to_owned()),
                    Just("metadata".to_owned()),
                    Just("states".to_owned()),
                    Just("lease".to_owned()),
                    Just("role".to_owned()),
                    Just("machineID".to_owned()),
                    "[a-zA-Z]{1,10}",
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid body of some route, with one value replaced.
fn bent() -> impl Strategy<Value = Value> {
    let bodies = vec![
        serde_json::json!({"desiredState": "launched", "text": "[Service]\nExecStart=/bin/true\n"}),
        serde_json::json!({"desiredState": "loaded", "options": [{"section": "Service", "name": "ExecStart", "value": "/bin/true"}]}),
        serde_json::json!({"id": "0123456789abcdef0123456789abcdef", "hostname": "h", "addresses": ["10.0.0.1"], "metadata": {"role": "web"}, "capacity": {"cpuMillis": 1000, "memoryBytes": 1024}, "agentVersion": "1"}),
        serde_json::json!({"metadata": {"disk": "ssd", "old": null}}),
        serde_json::json!({"states": [{"unit": "a.service", "machine": "0123456789abcdef0123456789abcdef", "loadState": "loaded", "activeState": "active", "subState": "running", "sinceMs": 0}], "removed": ["b.service"]}),
        serde_json::json!({"lease": 7}),
        serde_json::json!({"role": "viewer", "name": "n", "ttlMs": 1000}),
        serde_json::json!({"machineID": "0123456789abcdef0123456789abcdef"}),
    ];
    (
        prop::sample::select(bodies),
        json(),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(mut body, value, at)| {
            if let Value::Object(map) = &mut body {
                let keys: Vec<String> = map.keys().cloned().collect();
                let key = at.get(&keys).clone();
                map.insert(key, value);
            }
            body
        })
}

#[test]
fn arbitrary_bytes_never_panic() {
    runner()
        .run(&prop::collection::vec(any::<u8>(), 0..512), |bytes| {
            decode_every_body(&bytes);
            Ok(())
        })
        .unwrap();
}

#[test]
fn arbitrary_json_never_panics() {
    runner()
        .run(&json(), |value| {
            decode_every_body(&serde_json::to_vec(&value).unwrap());
            Ok(())
        })
        .unwrap();
}

#[test]
fn bent_bodies_never_panic() {
    runner()
        .run(&bent(), |value| {
            decode_every_body(&serde_json::to_vec(&value).unwrap());
            Ok(())
        })
        .unwrap();
}

#[test]
fn deep_and_wide_bodies_are_refused_without_recursing() {
    // 100,000 levels of nesting: serde_json stops at 128.
    let deep = format!("{{\"a\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    decode_every_body(deep.as_bytes());
    // A million keys of one object.
    let wide: String = std::iter::once("{".to_owned())
        .chain((0..1_000_000).map(|i| format!("\"k{i}\":0,")))
        .chain(std::iter::once("\"z\":0}".to_owned()))
        .collect();
    decode_every_body(wide.as_bytes());
}
