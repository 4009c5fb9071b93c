//! The cluster's quotas: refused with 507 (the cluster is full) or 413 (one
//! request is too large) before anything is written, counted correctly
//! under concurrent writers and across a restart; and pages bounded in
//! bytes.

use std::time::Duration;

use flotilla_api::client::PageQuery;
use flotilla_proto::DesiredState;
use flotilla_proto::wire::{MachinePatch, UnitPut};
use flotilla_scheduler::quota::Quotas;

use crate::{DEADLINE, RealServer, SERVICE, api_error, machine, name, submit};

/// A unit file of about `bytes` bytes.
fn sized(bytes: usize) -> String {
    let mut text = String::from(SERVICE);
    while text.len() + 80 < bytes {
        text.push_str(&format!("# {}\n", "x".repeat(76)));
    }
    text
}

/// Retries `submit` until the quota counted a deletion, failing on any
/// other error.
async fn submit_once_room(c: &flotilla_api::client::Client, unit: &str, text: &str) {
    tokio::time::timeout(DEADLINE, async {
        loop {
            match submit(c, unit, text).await {
                Ok(()) => return,
                Err(e) if e.status() == Some(507) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("the quota never made room");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_past_the_quota_are_refused_with_507_and_nothing_is_stored() {
    let server = RealServer::start(Quotas {
        units: 3,
        ..Quotas::default()
    });
    let c = server.client();
    for i in 0..3 {
        submit(&c, &format!("u{i}.service"), SERVICE).await.unwrap();
    }
    let e = submit(&c, "u3.service", SERVICE).await.unwrap_err();
    assert_eq!(
        api_error(&e, 507, "quota_exceeded"),
        "the cluster's quota of 3 units would be exceeded: 3 in use, 1 more asked for"
    );
    assert!(
        c.get_unit(&name("u3.service"))
            .await
            .unwrap_err()
            .is_not_found()
    );
    // Changing what exists adds no unit.
    let start = UnitPut {
        desired_state: Some(DesiredState::Loaded),
        ..UnitPut::default()
    };
    c.put_unit(&name("u0.service"), &start).await.unwrap();
    // Destroying one makes room.
    c.delete_unit(&name("u1.service")).await.unwrap();
    submit_once_room(&c, "u3.service", SERVICE).await;
    assert_eq!(c.all_units().await.unwrap().len(), 3);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_do_not_pass_the_quota_together() {
    let server = RealServer::start(Quotas {
        units: 5,
        ..Quotas::default()
    });
    let c = server.client();
    let writers: Vec<_> = (0..40)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { submit(&c, &format!("w{i}.service"), SERVICE).await })
        })
        .collect();
    let mut created = 0;
    for w in writers {
        match w.await.unwrap() {
            Ok(()) => created += 1,
            Err(e) => {
                api_error(&e, 507, "quota_exceeded");
            }
        }
    }
    assert_eq!(created, 5);
    assert_eq!(c.all_units().await.unwrap().len(), 5);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_count_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let quotas = Quotas {
        units: 2,
        ..Quotas::default()
    };
    let server = RealServer::start_in(dir.path(), quotas.clone(), Vec::new());
    let c = server.client();
    submit(&c, "a.service", SERVICE).await.unwrap();
    submit(&c, "b.service", SERVICE).await.unwrap();
    server.stop();

    let server = RealServer::start_in(dir.path(), quotas, Vec::new());
    let e = submit(&server.client(), "c.service", SERVICE)
        .await
        .unwrap_err();
    api_error(&e, 507, "quota_exceeded");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_of_unit_files_past_the_quota_are_refused() {
    let server = RealServer::start(Quotas {
        unit_bytes: 100_000,
        ..Quotas::default()
    });
    let c = server.client();
    for i in 0..3 {
        submit(&c, &format!("b{i}.service"), &sized(30_000))
            .await
            .unwrap();
    }
    let e = submit(&c, "b3.service", &sized(30_000)).await.unwrap_err();
    let message = api_error(&e, 507, "quota_exceeded");
    assert!(
        message.starts_with("the cluster's quota of 100000 bytes of unit files would be exceeded"),
        "{message}"
    );
    // Growing a unit past the quota is refused too; shrinking is not.
    let replace = |text: String| UnitPut {
        text: Some(text),
        replace: true,
        ..UnitPut::default()
    };
    let e = c
        .put_unit(&name("b0.service"), &replace(sized(45_000)))
        .await
        .unwrap_err();
    api_error(&e, 507, "quota_exceeded");
    c.put_unit(&name("b0.service"), &replace(sized(1_000)))
        .await
        .unwrap();
    submit_once_room(&c, "b3.service", &sized(30_000)).await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_file_over_the_largest_size_is_413() {
    let server = RealServer::start(Quotas::default());
    let c = server.client();
    let text = sized(300_000);
    let e = submit(&c, "big.service", &text).await.unwrap_err();
    assert_eq!(
        api_error(&e, 413, "too_large"),
        format!(
            "unit file of big.service: {} bytes, over the limit of 262144 bytes",
            text.len()
        )
    );
    assert!(c.all_units().await.unwrap().is_empty());
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machines_past_the_quota_are_refused_but_known_ones_register_again() {
    let server = RealServer::start(Quotas {
        machines: 2,
        ..Quotas::default()
    });
    let c = server.client();
    server
        .agent(1)
        .await
        .register_machine(&machine(1))
        .await
        .unwrap();
    server
        .agent(2)
        .await
        .register_machine(&machine(2))
        .await
        .unwrap();
    let e = server
        .agent(3)
        .await
        .register_machine(&machine(3))
        .await
        .unwrap_err();
    assert_eq!(
        api_error(&e, 507, "quota_exceeded"),
        "the cluster's quota of 2 machines would be exceeded: 2 in use, 1 more asked for"
    );
    // An agent that restarts registers its machine again.
    server
        .agent(1)
        .await
        .register_machine(&machine(1))
        .await
        .unwrap();
    assert_eq!(c.all_machines().await.unwrap().len(), 2);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_metadata_over_its_quota_is_413() {
    let server = RealServer::start(Quotas::default());
    let c = server.client();
    let id = machine(1).id;

    let mut crowded = machine(1);
    crowded.metadata = (0..65).map(|i| (format!("k{i}"), "v".to_owned())).collect();
    let e = server
        .agent(1)
        .await
        .register_machine(&crowded)
        .await
        .unwrap_err();
    assert_eq!(
        api_error(&e, 413, "too_large"),
        format!("metadata of machine {id}: 65 keys, over the limit of 64 keys")
    );

    server
        .agent(1)
        .await
        .register_machine(&machine(1))
        .await
        .unwrap();
    // 30,000 keys in one patch.
    let patch = MachinePatch {
        metadata: (0..30_000)
            .map(|i| (format!("key{i:05}"), Some("v".to_owned())))
            .collect(),
    };
    let e = c.patch_machine(&id, &patch).await.unwrap_err();
    assert_eq!(
        api_error(&e, 413, "too_large"),
        format!("metadata of machine {id}: 30000 keys, over the limit of 64 keys")
    );
    // A patch that fits alone but not with what the machine has.
    let patch = MachinePatch {
        metadata: (0..64)
            .map(|i| (format!("p{i}"), Some("v".to_owned())))
            .collect(),
    };
    let e = c.patch_machine(&id, &patch).await.unwrap_err();
    assert_eq!(
        api_error(&e, 413, "too_large"),
        format!("metadata of machine {id}: 65 keys, over the limit of 64 keys")
    );
    // Bytes: 17 values of 1 KiB.
    let patch = MachinePatch {
        metadata: (0..17)
            .map(|i| (format!("b{i}"), Some("v".repeat(1024))))
            .collect(),
    };
    let e = c.patch_machine(&id, &patch).await.unwrap_err();
    let message = api_error(&e, 413, "too_large");
    assert!(
        message.ends_with("bytes, over the limit of 16384 bytes"),
        "{message}"
    );
    // Nothing of it was stored.
    let stored = c.all_machines().await.unwrap();
    assert_eq!(stored[0].machine.metadata, machine(1).metadata);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_large_units_stops_at_its_byte_budget() {
    let page_bytes = 1024 * 1024;
    let server = RealServer::start(Quotas {
        page_bytes,
        ..Quotas::default()
    });
    let c = server.client();
    let count = 12;
    for i in 0..count {
        submit(&c, &format!("large{i:02}.service"), &sized(200_000))
            .await
            .unwrap();
    }
    let url = |token: Option<&str>| match token {
        Some(t) => format!("{}/v1/units?limit=1000&nextPageToken={t}", server.url),
        None => format!("{}/v1/units?limit=1000", server.url),
    };
    let mut seen: Vec<String> = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let (status, body) = server.raw("GET", &url(token.as_deref()), None).await;
        assert_eq!(status, 200);
        let page: flotilla_proto::wire::UnitPage = serde_json::from_slice(&body).unwrap();
        assert!(!page.units.is_empty());
        // The budget, and the few bytes around the items.
        assert!(
            page.units.len() == 1 || body.len() <= page_bytes + 200,
            "a page of {} units took {} bytes",
            page.units.len(),
            body.len()
        );
        seen.extend(page.units.into_iter().map(|u| u.name));
        pages += 1;
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert!(pages > 1, "one page held every unit");
    let mut expected: Vec<String> = (0..count).map(|i| format!("large{i:02}.service")).collect();
    expected.sort();
    assert_eq!(seen, expected);
    // The typed client walks the same pages.
    let all = c
        .list_units(&PageQuery {
            token: None,
            limit: Some(1000),
        })
        .await
        .unwrap();
    assert!(all.next_page_token.is_some());
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_token_that_is_not_a_name_is_refused() {
    let server = RealServer::start(Quotas::default());
    for path in [
        "/v1/units?nextPageToken=..%2F..%2Fleader",
        "/v1/machines?nextPageToken=not-a-machine",
        "/v1/state?nextPageToken=web.service",
    ] {
        let e = server
            .raw_error("GET", &format!("{}{path}", server.url), None)
            .await;
        assert_eq!(
            (e.error.code, e.error.reason.as_str()),
            (400, "invalid_request"),
            "{path}"
        );
    }
    server.stop();
}

/// With the metadata quotas raised past what the store holds in one value,
/// patches that together pass the store's limit are still one request too
/// large (413), not a failure of the server (500).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_past_the_store_value_limit_is_413() {
    let server = RealServer::start(Quotas {
        metadata_keys: 1_000_000,
        metadata_bytes: 100 * 1024 * 1024,
        ..Quotas::default()
    });
    let c = server.client();
    let m = machine(1);
    server.agent(1).await.register_machine(&m).await.unwrap();
    let patch = |from: usize| MachinePatch {
        metadata: (from..from + 30_000)
            .map(|i| (format!("key{i:017}"), Some("v".to_owned())))
            .collect(),
    };
    c.patch_machine(&m.id, &patch(0)).await.unwrap();
    let e = c.patch_machine(&m.id, &patch(30_000)).await.unwrap_err();
    let message = api_error(&e, 413, "too_large");
    assert!(
        message.contains("over the limit of 1048576 bytes"),
        "{message}"
    );
    assert_eq!(
        c.all_machines().await.unwrap()[0].machine.metadata.len(),
        30_001
    );
    server.stop();
}
