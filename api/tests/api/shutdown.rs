//! Shutdown drains: long polls in flight answer at once and `serve`
//! returns, well before the grace timeout.

use std::time::{Duration, Instant};

use flotilla_api::server::SHUTDOWN_GRACE;

use crate::{Server, machine, machine_id, until, within};

#[tokio::test]
async fn long_polls_answer_when_the_server_stops() {
    let server = Server::start().await;
    let client = server.client();
    let agent = server.agent(1).await;
    agent.register_machine(&machine(1)).await.unwrap();
    let index = client.watch(0, Duration::ZERO).await.unwrap();

    let opened = server.watches();
    let watch = tokio::spawn({
        let client = client.clone();
        async move { client.watch(index, Duration::from_secs(60)).await }
    });
    until(|| server.watches() > opened).await;
    let opened = server.watches();
    let units = tokio::spawn({
        let agent = agent.clone();
        async move {
            agent
                .machine_units(&machine_id(1), Some(index), Duration::from_secs(60))
                .await
        }
    });
    until(|| server.watches() > opened).await;

    let started = Instant::now();
    server.stop().await.unwrap();
    assert!(started.elapsed() < SHUTDOWN_GRACE);
    // The watch answers with its own index, as if its wait had passed;
    // the units feed with the units as they are, as of the store's
    // revision then (the leader resigning may have moved it on).
    assert_eq!(within(watch).await.unwrap().unwrap(), index);
    let units = within(units).await.unwrap().unwrap();
    assert!(units.index >= index, "{} < {index}", units.index);
    assert!(units.units.is_empty());
}

#[tokio::test]
async fn a_stopped_server_refuses_connections() {
    let server = Server::start().await;
    let client = server.client().with_timeout(Duration::from_secs(5));
    client.health().await.unwrap();
    server.stop().await.unwrap();
    let e = client.health().await.unwrap_err();
    assert!(e.is_temporary(), "{e}");
}
