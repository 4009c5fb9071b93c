//! Several servers: a call that cannot connect tries the next one, and the
//! client sticks to the one that answered.

use std::time::Duration;

use flotilla_api::client::{Client, ClientError};

use crate::Server;

/// A URL nothing listens on: a port just bound and released.
async fn dead_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

#[tokio::test]
async fn moves_to_the_next_server_and_stays() {
    let server = Server::start().await;
    let dead = dead_url().await;
    let token = server.machine_token(1).await;
    let client = Client::with_options([&dead, &server.url], server.options(Some(&token))).unwrap();
    assert_eq!(client.endpoint().as_str(), format!("{dead}/"));

    client.register_machine(&crate::machine(1)).await.unwrap();
    assert_eq!(client.endpoint().as_str(), format!("{}/", server.url));
    // The next call goes straight to the live server.
    client
        .machine_units(&crate::machine_id(1), None, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(client.endpoint().as_str(), format!("{}/", server.url));

    // Errors from a live server are answers, not failures to connect: no
    // failover on a 404.
    let e = client
        .heartbeat(&crate::machine_id(1), 12345)
        .await
        .unwrap_err();
    assert!(e.is_not_found());
    assert_eq!(client.endpoint().as_str(), format!("{}/", server.url));
}

#[tokio::test]
async fn no_server_reachable() {
    let dead = [dead_url().await, dead_url().await];
    let client = Client::new(&dead, None)
        .unwrap()
        .with_timeout(Duration::from_secs(5));
    let e = client.all_units().await.unwrap_err();
    assert!(e.is_temporary());
    match &e {
        ClientError::Unreachable {
            endpoint, cause, ..
        } => {
            assert!(endpoint.contains(&dead[1]), "{endpoint}");
            assert!(cause.to_lowercase().contains("refused"), "{cause}");
        }
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn a_timeout_is_not_retried_but_the_next_call_moves_on() {
    // A server that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let server = Server::start().await;
    let client = Client::with_options(
        [&silent_url, &server.url],
        server.options(Some(&server.admin)),
    )
    .unwrap()
    .with_timeout(Duration::from_millis(300));

    let e = client.all_units().await.unwrap_err();
    match &e {
        ClientError::Unreachable {
            endpoint, cause, ..
        } => {
            assert!(endpoint.contains(&silent_url), "{endpoint}");
            assert_eq!(cause, "timed out");
        }
        other => panic!("{other}"),
    }
    assert_eq!(client.endpoint().as_str(), format!("{}/", server.url));
    assert!(client.all_units().await.unwrap().is_empty());
    hold.abort();
}
