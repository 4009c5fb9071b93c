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
#[path = "../support/mod.rs"]
mod support;

pub use support::{machine, machine_id};
use support::{tester, token_create};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flotilla_api::client::{Client, ClientError};
use flotilla_api::server::{self, ApiConfig, Transport, Trust};
use flotilla_api::tls::{ClusterCa, server_config};
use flotilla_proto::trust::Role;
use flotilla_proto::wire::{ErrorBody, UnitPut};
use flotilla_proto::{ClusterId, DesiredState, UnitName};
use flotilla_scheduler::cluster::{Cluster, ClusterConfig};
use flotilla_scheduler::keys::Keys;
use flotilla_scheduler::quota::Quotas;
use flotilla_scheduler::trust::{AuditLog, AuditRetention, Credentials};
use flotilla_store::{EmbeddedOptions, EmbeddedStore, Store};
use tokio::sync::oneshot;

/// How long any awaited condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub const SERVICE: &str = "[Service]\nExecStart=/bin/sleep infinity\n";

/// A server on its own runtime (two worker threads, as on the machines
/// the tests run on) and its own data directory; stopped, and its thread
/// joined, when dropped.
pub struct RealServer {
    pub url: String,
    /// The cluster CA's certificate, PEM.
    pub ca_pem: Vec<u8>,
    /// An admin token.
    pub admin: String,
    /// The machines' credentials, made once each (a machine holds one).
    machines: std::sync::Mutex<std::collections::BTreeMap<u8, String>>,
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
        let (ready, address) = std::sync::mpsc::channel::<(SocketAddr, Vec<u8>, String)>();
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
                        keys: Keys::default(),
                        machine_ttl: Duration::from_secs(60),
                        cluster_id: ClusterId::from_bytes([7; 16]),
                        quotas,
                    },
                ));
                let ca = ClusterCa::generate().unwrap();
                let tls = server_config(
                    ca.issue_server(&["127.0.0.1".into()]).unwrap(),
                    ca.cert_der(),
                )
                .unwrap();
                let trust = Arc::new(Trust {
                    credentials: Credentials::start(store.clone(), Keys::default(), None),
                    audit: AuditLog::new(store.clone(), Keys::default(), AuditRetention::default()),
                    ca: Arc::new(ca),
                    secrets: Arc::new(flotilla_scheduler::secrets::Secrets::new(
                        store.clone(),
                        Keys::default(),
                        flotilla_scheduler::secrets::SecretsKey::generate().unwrap(),
                    )),
                    sync: Arc::new(flotilla_sync::Sources::new(
                        store.clone(),
                        Keys::default(),
                        Default::default(),
                    )),
                });
                let (_, admin) = trust
                    .credentials
                    .create_token(&token_create(Role::Admin), &tester())
                    .await
                    .unwrap();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                ready
                    .send((
                        listener.local_addr().unwrap(),
                        trust.ca.cert_pem().as_bytes().to_vec(),
                        admin.expose(),
                    ))
                    .unwrap();
                let config = ApiConfig::default();
                let limits = config.http;
                let router = server::router(cluster, trust, config);
                server::serve(listener, router, Transport::Tls(tls), limits, async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
                store.close().await;
            });
        });
        let (address, ca_pem, admin) = address.recv_timeout(DEADLINE).unwrap();
        RealServer {
            url: format!("https://{address}"),
            ca_pem,
            admin,
            machines: Default::default(),
            stop: Some(stop),
            thread: Some(thread),
            _dir: None,
        }
    }

    /// A client with the admin token.
    pub fn client(&self) -> Client {
        self.client_with(&self.admin)
    }

    /// A client with `token`, trusting the cluster CA.
    pub fn client_with(&self, token: &str) -> Client {
        Client::with_options(
            [&self.url],
            support::client_options(&self.ca_pem, Some(token)),
        )
        .unwrap()
    }

    /// The credential of machine `n` (joined the first time).
    pub async fn machine_token(&self, n: u8) -> String {
        if let Some(t) = self.machines.lock().unwrap().get(&n) {
            return t.clone();
        }
        let join = self
            .client()
            .create_token(&token_create(Role::Join))
            .await
            .unwrap();
        let created = self
            .client_with(&join.token)
            .join(&machine_id(n))
            .await
            .unwrap();
        self.machines
            .lock()
            .unwrap()
            .insert(n, created.token.clone());
        created.token
    }

    /// A client acting as machine `n` (its agent).
    pub async fn agent(&self, n: u8) -> Client {
        let token = self.machine_token(n).await;
        self.client_with(&token)
    }

    /// A raw request, with the credential its route wants: machine 1's on
    /// the agent routes, the admin token on the others. Returns the status
    /// and the body.
    pub async fn raw(&self, method: &str, url: &str, body: Option<Vec<u8>>) -> (u16, Vec<u8>) {
        let token = if url.contains("/v1/agent/") {
            self.machine_token(1).await
        } else {
            self.admin.clone()
        };
        raw(&self.ca_pem, &token, method, url, body).await
    }

    /// As [`RealServer::raw`], expecting a JSON error; returns it.
    pub async fn raw_error(&self, method: &str, url: &str, body: Option<Vec<u8>>) -> ErrorBody {
        let (status, body) = self.raw(method, url, body).await;
        error_body(method, url, status, &body)
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

/// A raw request with `token`, trusting `ca_pem`; returns the status and
/// the body.
async fn raw(
    ca_pem: &[u8],
    token: &str,
    method: &str,
    url: &str,
    body: Option<Vec<u8>>,
) -> (u16, Vec<u8>) {
    let content_type = body.is_some().then_some("application/json");
    let (status, _, body) = support::raw_request(
        ca_pem,
        Some(token),
        method,
        url,
        content_type,
        body.unwrap_or_default(),
    )
    .await;
    (status, body)
}

/// The JSON error of an answer.
fn error_body(method: &str, url: &str, status: u16, body: &[u8]) -> ErrorBody {
    let error: ErrorBody = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "{method} {}: status {status}, not an error body ({e}): {}",
            &url[..url.len().min(120)],
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )
    });
    assert_eq!(error.error.code, status);
    error
}
