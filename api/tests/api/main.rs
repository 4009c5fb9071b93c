#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test
//! The API end to end over real HTTP: the server on `127.0.0.1:0` over the
//! in-memory [`fake::FakeControl`], called through the typed client (and
//! through raw requests where the client cannot send what is tested).

mod access;
mod agent;
mod errors;
mod events;
mod failover;
mod fake;
mod limits;
mod machines;
mod openapi;
mod secrets;
mod shutdown;
#[path = "../support/mod.rs"]
mod support;
mod units;
mod watch;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use flotilla_api::client::{Client, ClientOptions};
use flotilla_api::server::{self, ApiConfig, HttpLimits, Transport, Trust};
use flotilla_api::tls::{ClusterCa, server_config};
use flotilla_proto::trust::Role;
use flotilla_proto::wire::ErrorBody;
use flotilla_proto::{UnitName, UnitState};
use flotilla_scheduler::keys::Keys;
use flotilla_scheduler::trust::{AuditLog, AuditRetention, Credentials};
use flotilla_store::MemoryStore;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use fake::FakeControl;
use flotilla_scheduler::secrets::{Secrets, SecretsKey};
pub use support::{machine, machine_id};
use support::{tester, token_create};

/// How long any awaited condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A server under test: the API over the fake control plane, on HTTPS,
/// with real credentials over an in-memory store.
pub struct Server {
    pub fake: Arc<FakeControl>,
    pub url: String,
    pub trust: Arc<Trust>,
    /// The cluster CA's certificate, PEM.
    pub ca_pem: Vec<u8>,
    /// An admin token.
    pub admin: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub async fn start() -> Server {
        Server::with_config(ApiConfig::default()).await
    }

    pub async fn with_config(config: ApiConfig) -> Server {
        let store = Arc::new(MemoryStore::new());
        let keys = Keys::default();
        let credentials = Credentials::start(store.clone(), keys.clone(), None);
        let ca = ClusterCa::generate().unwrap();
        let ca_pem = ca.cert_pem().as_bytes().to_vec();
        let cert = ca.issue_server(&["127.0.0.1".into()]).unwrap();
        let tls = server_config(cert, ca.cert_der()).unwrap();
        let trust = Arc::new(Trust {
            credentials,
            audit: AuditLog::new(store.clone(), keys.clone(), AuditRetention::default()),
            ca: Arc::new(ca),
            secrets: Arc::new(Secrets::new(store, keys, SecretsKey::generate().unwrap())),
        });
        let (_, admin) = trust
            .credentials
            .create_token(&token_create(Role::Admin), &tester())
            .await
            .unwrap();
        let fake = Arc::new(FakeControl::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let limits: HttpLimits = config.http;
        let router = server::router(Arc::clone(&fake), Arc::clone(&trust), config);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(
            listener,
            router,
            Transport::Tls(tls),
            limits,
            async move {
                let _ = stopped.await;
            },
        ));
        Server {
            fake,
            url,
            trust,
            ca_pem,
            admin: admin.expose(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A client with the admin token.
    pub fn client(&self) -> Client {
        self.client_with(Some(&self.admin))
    }

    /// A client with `token` (or none), trusting the cluster CA.
    pub fn client_with(&self, token: Option<&str>) -> Client {
        Client::with_options([&self.url], self.options(token)).unwrap()
    }

    /// The options of a client with `token` (or none), trusting the
    /// cluster CA.
    pub fn options(&self, token: Option<&str>) -> ClientOptions {
        support::client_options(&self.ca_pem, token)
    }

    /// A new token of `role`.
    pub async fn token(&self, role: Role) -> String {
        let (_, token) = self
            .trust
            .credentials
            .create_token(&token_create(role), &tester())
            .await
            .unwrap();
        token.expose()
    }

    /// A client with a new token of `role`.
    pub async fn client_as(&self, role: Role) -> Client {
        let token = self.token(role).await;
        self.client_with(Some(&token))
    }

    /// The credential of machine `n`, joined with a join token.
    pub async fn machine_token(&self, n: u8) -> String {
        let join = self.token(Role::Join).await;
        let created = self
            .client_with(Some(&join))
            .join(&machine_id(n))
            .await
            .unwrap();
        created.token
    }

    /// A client acting as machine `n` (its agent).
    pub async fn agent(&self, n: u8) -> Client {
        let token = self.machine_token(n).await;
        self.client_with(Some(&token))
    }

    /// A request the typed client would not send, with the admin token;
    /// returns the status, the headers and the body.
    pub async fn raw(
        &self,
        method: &str,
        url: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
        self.raw_as(Some(&self.admin), method, url, content_type, body)
            .await
    }

    /// As [`Server::raw`], with `token` (or none).
    pub async fn raw_as(
        &self,
        token: Option<&str>,
        method: &str,
        url: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
        support::raw_request(&self.ca_pem, token, method, url, content_type, body).await
    }

    /// As [`Server::raw`], expecting an error; checks that the body is an
    /// `ErrorBody` whose code is the status, and returns it.
    pub async fn raw_error(
        &self,
        method: &str,
        url: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> ErrorBody {
        let (status, headers, body) = self.raw(method, url, content_type, body).await;
        error_body(status, &headers, &body)
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

/// Checks that `body` is an `ErrorBody` whose code is `status`, and
/// returns it.
pub fn error_body(status: u16, headers: &reqwest::header::HeaderMap, body: &[u8]) -> ErrorBody {
    assert_eq!(headers["content-type"], "application/json");
    let error: ErrorBody = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not an error body ({e}): {}", String::from_utf8_lossy(body)));
    assert_eq!(error.error.code, status);
    error
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

pub fn name(s: &str) -> UnitName {
    UnitName::parse(s).unwrap()
}

pub fn state(unit: &str, machine: u8) -> UnitState {
    support::unit_state(unit, &machine_id(machine))
}

pub const SERVICE: &str = "[Unit]\nDescription=web\n\n[Service]\nExecStart=/bin/sleep infinity\n";
