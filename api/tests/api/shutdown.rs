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
    let index = server.fake.revision();

    let watch = tokio::spawn({
        let client = client.clone();
        async move { client.watch(index, Duration::from_secs(60)).await }
    });
    let units = tokio::spawn({
        let agent = agent.clone();
        async move {
            agent
                .machine_units(&machine_id(1), Some(index), Duration::from_secs(60))
                .await
        }
    });
    until(|| server.fake.waiters() >= 2).await;

    let started = Instant::now();
    server.stop().await.unwrap();
    assert!(started.elapsed() < SHUTDOWN_GRACE);
    assert_eq!(within(watch).await.unwrap().unwrap(), index);
    let units = within(units).await.unwrap().unwrap();
    assert_eq!(units.index, index);
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
