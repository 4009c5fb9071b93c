#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test
//! Hostile but authenticated input against the real control plane over
//! real HTTP: the server's router and `Cluster` on the embedded store, on a
//! runtime of its own (as a server process has), called through the typed
//! client and through raw requests.
//!
//! - `quotas`: the cluster's quotas (507), per-request limits (413), and
//!   pages bounded in bytes.
//! - `input`: machine-supplied strings, state reports for units that do
//!   not exist, oversize paths, queries and bodies.
//! - `blocking`: slow unit files delay only the requests that parse them.

mod blocking;
mod input;
mod quotas;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flotilla_api::client::{Client, ClientError};
use flotilla_api::server::{self, ApiConfig};
use flotilla_proto::wire::{ErrorBody, UnitPut};
use flotilla_proto::{Capacity, DesiredState, Machine, MachineId, UnitName};
use flotilla_scheduler::cluster::{Cluster, ClusterConfig};
use flotilla_scheduler::quota::Quotas;
use flotilla_scheduler::store::{EmbeddedOptions, EmbeddedStore, Store};
use tokio::sync::oneshot;

/// How long any awaited condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub const SERVICE: &str = "[Service]\nExecStart=/bin/sleep infinity\n";

/// A server on its own runtime (two worker threads, as on the machines
/// the tests run on) and its own data directory; stopped, and its thread
/// joined, when dropped.
pub struct RealServer {
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl RealServer {
    /// A server with these quotas on a fresh store.
    pub fn start(quotas: Quotas) -> RealServer {
        let dir = tempfile::tempdir().unwrap();
        let mut server = RealServer::start_in(dir.path(), quotas, Vec::new());
        server._dir = Some(dir);
        server
    }

    /// A server on the store in `dir` (kept when the server stops), with
    /// `seed` written into the store as is before it serves.
    pub fn start_in(dir: &Path, quotas: Quotas, seed: Vec<(String, Vec<u8>)>) -> RealServer {
        let data: PathBuf = dir.join("data");
        let (ready, address) = std::sync::mpsc::channel::<SocketAddr>();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                std::fs::create_dir_all(&data).unwrap();
                let (store, _) = EmbeddedStore::open(&data, EmbeddedOptions::default())
                    .await
                    .unwrap();
                let store = Arc::new(store);
                for (key, value) in seed {
                    store.put(&key, &value, None).await.unwrap();
                }
                let cluster = Arc::new(Cluster::new(
                    store.clone(),
                    ClusterConfig {
                        machine_ttl: Duration::from_secs(60),
                        quotas,
                        ..ClusterConfig::default()
                    },
                ));
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                ready.send(listener.local_addr().unwrap()).unwrap();
                let router = server::router(cluster, ApiConfig::default());
                server::serve(listener, router, async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
                store.close().await;
            });
        });
        let address = address.recv_timeout(DEADLINE).unwrap();
        RealServer {
            url: format!("http://{address}"),
            stop: Some(stop),
            thread: Some(thread),
            _dir: None,
        }
    }

    pub fn client(&self) -> Client {
        Client::new([&self.url], None).unwrap()
    }

    /// Stops the server and waits for its thread.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RealServer {
    fn drop(&mut self) {
        self.shut_down();
    }
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

/// Submits a unit (inactive) with `text`.
pub async fn submit(c: &Client, unit: &str, text: &str) -> Result<(), ClientError> {
    let put = UnitPut {
        desired_state: Some(DesiredState::Inactive),
        text: Some(text.to_owned()),
        ..UnitPut::default()
    };
    c.put_unit(&name(unit), &put).await.map(|_| ())
}

/// Asserts that `e` is an API error with this status and reason; returns
/// its message.
pub fn api_error(e: &ClientError, status: u16, reason: &str) -> String {
    match e {
        ClientError::Api {
            status: s,
            reason: r,
            message,
            ..
        } => {
            assert_eq!((*s, r.as_str()), (status, reason), "{message}");
            message.clone()
        }
        other => panic!("not an API error: {other}"),
    }
}

/// A raw request; returns the status and the body.
pub async fn raw(method: &str, url: &str, body: Option<Vec<u8>>) -> (u16, Vec<u8>) {
    let mut request = reqwest::Client::new().request(method.parse().unwrap(), url);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

/// As [`raw`], expecting a JSON error; returns it.
pub async fn raw_error(method: &str, url: &str, body: Option<Vec<u8>>) -> ErrorBody {
    let (status, body) = raw(method, url, body).await;
    let error: ErrorBody = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "{method} {}: status {status}, not an error body ({e}): {}",
            &url[..url.len().min(120)],
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )
    });
    assert_eq!(error.error.code, status);
    error
}
