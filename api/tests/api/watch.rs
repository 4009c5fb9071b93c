//! `/v1/watch`: the long poll the CLI blocks on.

use std::time::Duration;

use flotilla_proto::DesiredState;
use flotilla_proto::wire::UnitPut;

use crate::{SERVICE, Server, name, until, within};

fn launch() -> UnitPut {
    UnitPut {
        desired_state: Some(DesiredState::Launched),
        text: Some(SERVICE.into()),
        ..UnitPut::default()
    }
}

#[tokio::test]
async fn returns_when_a_unit_changes() {
    let server = Server::start().await;
    let client = server.client();
    client.put_unit(&name("a"), &launch()).await.unwrap();

    // Index 0: at once, with the current revision.
    let index = client.watch(0, Duration::from_secs(30)).await.unwrap();
    assert_eq!(index, server.fake.revision());
    assert!(index > 0);

    let poll = tokio::spawn({
        let client = client.clone();
        async move { client.watch(index, Duration::from_secs(30)).await }
    });
    until(|| server.fake.waiters() > 0).await;
    assert!(!poll.is_finished());
    client.put_unit(&name("b"), &launch()).await.unwrap();
    let next = within(poll).await.unwrap().unwrap();
    assert!(next > index);
    assert_eq!(next, server.fake.revision());
}

#[tokio::test]
async fn returns_the_same_index_when_the_wait_passes() {
    let server = Server::start().await;
    let client = server.client();
    client.put_unit(&name("a"), &launch()).await.unwrap();
    let index = server.fake.revision();
    let got = client
        .watch(index, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(got, index);
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
