//! A hostile client slows only itself: connections that send nothing, half
//! a TLS handshake or half a request head are closed after the header
//! timeout; idle ones after the idle timeout; a body that does not come is
//! refused after the body timeout; a flood from one address stops at its
//! cap, and the server keeps answering everyone else meanwhile.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use flotilla_api::server::{ApiConfig, HttpLimits};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::{DEADLINE, Server, machine, within};

fn quick() -> ApiConfig {
    ApiConfig {
        http: HttpLimits {
            max_connections: Some(200),
            max_connections_per_peer: 50,
            header_read_timeout: Duration::from_millis(400),
            idle_timeout: Duration::from_millis(800),
            body_read_timeout: Duration::from_millis(400),
        },
        ..ApiConfig::default()
    }
}

fn address(server: &Server) -> SocketAddr {
    server
        .url
        .strip_prefix("https://")
        .unwrap()
        .parse()
        .unwrap()
}

/// A connection from `source` (any address of 127.0.0.0/8: the per-peer
/// cap counts by address).
async fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

/// Waits (within the deadline) until the server closes `stream`: a read
/// gives end of file or a reset.
async fn closed_by_server(stream: &mut (impl AsyncRead + Unpin)) {
    let mut buf = [0u8; 4096];
    within(async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
}

#[tokio::test]
async fn silent_and_half_open_connections_are_closed_after_the_header_timeout() {
    let server = Server::with_config(quick()).await;
    let to = address(&server);
    // Nothing at all.
    let mut silent = connect_from([127, 0, 0, 2], to).await;
    // Half a TLS handshake: a record header and nothing after it.
    let mut half_hello = connect_from([127, 0, 0, 2], to).await;
    half_hello
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    // A whole handshake, then half a request head.
    let mut half_head = tls(&server, to).await;
    half_head
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    closed_by_server(&mut silent).await;
    closed_by_server(&mut half_hello).await;
    closed_by_server(&mut half_head).await;
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let server = Server::with_config(quick()).await;
    let to = address(&server);
    let mut stream = tls(&server, to).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Kept alive, then closed once idle for the idle timeout.
    closed_by_server(&mut stream).await;
}

#[tokio::test]
async fn a_body_that_does_not_come_is_refused() {
    let server = Server::with_config(quick()).await;
    let to = address(&server);
    // Announced far over the limit: refused at once, without reading it.
    let mut stream = tls(&server, to).await;
    let head = format!(
        "PUT /v1/units/web.service HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: 104857600\r\n\r\n",
        server.admin
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_answer(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // Announced within the limit, and only a part sent: 408.
    let mut stream = tls(&server, to).await;
    let head = format!(
        "PUT /v1/units/web.service HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"text\":",
        server.admin
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_answer(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
}

#[tokio::test]
async fn a_flood_from_one_address_stops_at_its_cap_and_slows_no_one_else() {
    let server = Arc::new(Server::with_config(quick()).await);
    let to = address(&server);
    let agent = server.agent(1).await;
    let lease = agent.register_machine(&machine(1)).await.unwrap().lease;
    // A long poll in flight from 127.0.0.1 before the flood.
    let feed = agent
        .machine_units(&crate::machine_id(1), None, Duration::ZERO)
        .await
        .unwrap();
    let poll = tokio::spawn({
        let agent = agent.clone();
        async move {
            agent
                .machine_units(
                    &crate::machine_id(1),
                    Some(feed.index),
                    Duration::from_secs(5),
                )
                .await
        }
    });
    // 150 connections from 127.0.0.3 that send nothing: 50 are held (the
    // per-peer cap), the others closed at once.
    let mut flood = Vec::new();
    for _ in 0..150 {
        flood.push(connect_from([127, 0, 0, 3], to).await);
    }
    let mut refused = 0;
    for stream in &mut flood {
        let mut buf = [0u8; 1];
        // A refused connection reads end of file (or a reset) at once; a
        // held one has nothing to read.
        let read = tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await;
        if let Ok(Ok(0) | Err(_)) = read {
            refused += 1;
        }
    }
    assert!(
        refused >= 100,
        "only {refused} of 150 refused over a cap of 50"
    );
    // Meanwhile everyone else is served: health, a heartbeat, listings.
    within(async {
        server.client_with(None).health().await.unwrap();
        agent.heartbeat(&crate::machine_id(1), lease).await.unwrap();
        server.client().all_units().await.unwrap();
    })
    .await;
    // The long poll was not disturbed: it answers when its wait passes.
    let answered = tokio::time::timeout(DEADLINE, poll).await.unwrap().unwrap();
    assert!(answered.is_ok(), "{answered:?}");
}

/// A TLS connection to the server, trusting its CA.
async fn tls(server: &Server, to: SocketAddr) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in flotilla_api::tls::certificates_from_pem("ca", &server.ca_pem).unwrap() {
        roots.add(cert).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(flotilla_api::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(to).await.unwrap();
    connector
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

async fn read_answer(stream: &mut tokio_rustls::client::TlsStream<TcpStream>) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    within(async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    if out.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}
