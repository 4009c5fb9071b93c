#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test
//! The API end to end over real HTTP: the server on `127.0.0.1:0` over the
//! in-memory [`fake::FakeControl`], called through the typed client (and
//! through raw requests where the client cannot send what is tested).

mod agent;
mod errors;
mod failover;
mod fake;
mod machines;
mod openapi;
mod shutdown;
mod units;
mod watch;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use flotilla_api::client::Client;
use flotilla_api::server::{self, ApiConfig};
use flotilla_proto::wire::ErrorBody;
use flotilla_proto::{Capacity, Health, Machine, MachineId, UnitName, UnitState};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use fake::FakeControl;

/// How long any awaited condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A server under test.
pub struct Server {
    pub fake: Arc<FakeControl>,
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub async fn start() -> Server {
        Server::with_config(ApiConfig::default()).await
    }

    pub async fn with_config(config: ApiConfig) -> Server {
        let fake = Arc::new(FakeControl::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = server::router(Arc::clone(&fake), config);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(listener, router, async move {
            let _ = stopped.await;
        }));
        Server {
            fake,
            url,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn client(&self) -> Client {
        Client::new([&self.url], None).unwrap()
    }

    /// Asks for shutdown and waits (within [`DEADLINE`]) for `serve` to
    /// return.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().unwrap();
        within(task).await.unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Awaits `f`, failing the test if it takes longer than [`DEADLINE`].
pub async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(DEADLINE, f)
        .await
        .expect("did not complete within the deadline")
}

/// Polls `condition` until it holds, failing the test after [`DEADLINE`].
pub async fn until(mut condition: impl FnMut() -> bool) {
    within(async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// A request the typed client would not send; returns the status, the
/// headers and the body.
pub async fn raw(
    method: &str,
    url: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut request = reqwest::Client::new().request(method.parse().unwrap(), url);
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    let response = request.body(body).send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

/// As [`raw`], expecting an error; checks that the body is an
/// `ErrorBody` whose code is the status, and returns it.
pub async fn raw_error(
    method: &str,
    url: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> ErrorBody {
    let (status, headers, body) = raw(method, url, content_type, body).await;
    assert_eq!(headers["content-type"], "application/json");
    let error: ErrorBody = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "not an error body ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    });
    assert_eq!(error.error.code, status);
    error
}

pub fn name(s: &str) -> UnitName {
    UnitName::parse(s).unwrap()
}

pub fn machine_id(n: u8) -> MachineId {
    MachineId::parse(&format!("{n:02x}").repeat(16)).unwrap()
}

pub fn machine(n: u8) -> Machine {
    Machine {
        id: machine_id(n),
        hostname: format!("host{n}"),
        addresses: vec![format!("10.0.0.{n}")],
        metadata: [("role".to_owned(), "web".to_owned())].into(),
        capacity: Capacity {
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
        },
        agent_version: "0.1.0".into(),
    }
}

pub fn state(unit: &str, machine: u8) -> UnitState {
    UnitState {
        unit: name(unit),
        machine: machine_id(machine),
        load_state: "loaded".into(),
        active_state: "active".into(),
        sub_state: "running".into(),
        hash: None,
        main_pid: Some(42),
        n_restarts: 0,
        container_id: None,
        health: Health::None,
        since_ms: 1_700_000_000_000,
        last_error: None,
    }
}

pub const SERVICE: &str = "[Unit]\nDescription=web\n\n[Service]\nExecStart=/bin/sleep infinity\n";

#[test]
fn config_debug_hides_the_token() {
    let config = ApiConfig {
        token: Some("s3cret".into()),
        ..ApiConfig::default()
    };
    assert!(!format!("{config:?}").contains("s3cret"));
}
