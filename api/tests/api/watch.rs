//! `/v1/watch`: the long poll the CLI blocks on.

use std::time::Duration;

use flotilla_proto::DesiredState;
use flotilla_proto::wire::UnitPut;

use crate::{DEADLINE, SERVICE, Server, eventually, name, until, within};
use flotilla_store::Store;

/// An inactive unit: nothing for the leader to place, so the only writes
/// that wake a watch are the tests' own.
fn submit() -> UnitPut {
    UnitPut {
        desired_state: Some(DesiredState::Inactive),
        text: Some(SERVICE.into()),
        ..UnitPut::default()
    }
}

#[tokio::test]
async fn returns_when_a_unit_changes() {
    let server = Server::start().await;
    let client = server.client();
    client.put_unit(&name("a"), &submit()).await.unwrap();
    let a = client.get_unit(&name("a")).await.unwrap();

    // Index 0: at once, with the current revision.
    let index = client.watch(0, Duration::from_secs(30)).await.unwrap();
    assert!(index >= a.revision, "{index} < {}", a.revision);
    assert!(index <= revision(&server).await);

    let opened = server.watches();
    let poll = tokio::spawn({
        let client = client.clone();
        async move { client.watch(index, Duration::from_secs(30)).await }
    });
    until(|| server.watches() > opened).await;
    assert!(!poll.is_finished());
    client.put_unit(&name("b"), &submit()).await.unwrap();
    let b = client.get_unit(&name("b")).await.unwrap();
    let next = within(poll).await.unwrap().unwrap();
    assert!(next >= b.revision, "{next} < {}", b.revision);
    assert!(next <= revision(&server).await);
}

#[tokio::test]
async fn returns_the_same_index_when_the_wait_passes() {
    let server = Server::start().await;
    let client = server.client();
    client.put_unit(&name("a"), &submit()).await.unwrap();
    // Once the cluster is quiet (the change's event written), nothing
    // moves the store on.
    eventually("the event of the change", DEADLINE, || async {
        let page = client
            .events(&Default::default(), &Default::default())
            .await
            .unwrap();
        page.events
            .iter()
            .any(|e| e.unit == Some(name("a")))
            .then_some(())
    })
    .await;
    let index = client.watch(0, Duration::ZERO).await.unwrap();
    let got = client
        .watch(index, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(got, index);
}

/// The store's revision now.
async fn revision(server: &Server) -> i64 {
    let now = server.store.get("revision probe").await.unwrap().revision;
    i64::try_from(now).unwrap()
}

#[tokio::test]
async fn bad_parameters() {
    let server = Server::start().await;
    for query in ["index=-1", "index=soon", "wait=-3", "wait=forever"] {
        let e = server
            .raw_error("GET", &format!("{}/v1/watch?{query}", server.url), None, "")
            .await;
        assert_eq!(
            (e.error.code, e.error.reason.as_str()),
            (400, "invalid_query"),
            "{query}"
        );
    }
}
