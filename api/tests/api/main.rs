#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test
//! The API end to end over real HTTPS: a whole server as `flotilla server`
//! assembles it ([`Daemon`]: the API, the control plane, the leader and its
//! reconcile loop, the credentials) over an in-memory store, called
//! through the typed client (and through raw requests where the client
//! cannot send what is tested). Tests reach into the store only to see
//! what the API cannot show and to make the store fail.

mod access;
mod agent;
mod errors;
mod events;
mod failover;
mod limits;
mod machines;
mod openapi;
mod rollouts;
mod secrets;
mod shutdown;
#[path = "../support/mod.rs"]
mod support;
mod sync;
mod ui;
mod units;
mod version;
mod watch;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use flotilla_api::client::{Client, ClientOptions};
use flotilla_api::daemon::Daemon;
use flotilla_api::server::{ApiConfig, Trust};
use flotilla_proto::trust::Role;
use flotilla_proto::wire::ErrorBody;
use flotilla_proto::{ClusterId, UnitName, UnitState};
use flotilla_scheduler::identity::ClusterRecord;
use flotilla_scheduler::keys::Keys;
use flotilla_scheduler::placement::Strategy;
use flotilla_store::{MemoryStore, Method, Store};

pub use support::{eventually, machine, machine_id};
use support::{tester, token_create};

/// How long any awaited condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// How long a machine stays alive without a heartbeat, unless a test asks
/// for another TTL: long enough that no test sees a machine expire
/// unless it waits for it.
pub const MACHINE_TTL: Duration = Duration::from_secs(10);

/// A server under test: the whole server over an in-memory store, on
/// HTTPS.
pub struct Server {
    /// The store the server runs on.
    pub store: Arc<MemoryStore>,
    pub url: String,
    pub trust: Arc<Trust>,
    /// The cluster CA's certificate, PEM.
    pub ca_pem: Vec<u8>,
    /// The cluster's first admin token.
    pub admin: String,
    daemon: Option<Daemon>,
    _dir: tempfile::TempDir,
}

impl Server {
    pub async fn start() -> Server {
        Server::with_config(ApiConfig::default()).await
    }

    pub async fn with_config(config: ApiConfig) -> Server {
        Server::with(config, MACHINE_TTL).await
    }

    /// A server whose machines live `machine_ttl` without a heartbeat.
    pub async fn with_machine_ttl(machine_ttl: Duration) -> Server {
        Server::with(ApiConfig::default(), machine_ttl).await
    }

    async fn with(api: ApiConfig, machine_ttl: Duration) -> Server {
        Server::with_daemon(|config| {
            config.api = api;
            config.machine_ttl = machine_ttl;
        })
        .await
    }

    /// A server with the test defaults, changed by `edit`.
    pub async fn with_daemon(edit: impl FnOnce(&mut flotilla_api::daemon::DaemonConfig)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut config =
            support::daemon_config(dir.path().join("data"), MACHINE_TTL, Strategy::default());
        edit(&mut config);
        let store = Arc::new(MemoryStore::new());
        let daemon = Daemon::start_in_memory(config, store.clone())
            .await
            .unwrap();
        let admin = std::fs::read_to_string(daemon.admin_token_path().unwrap()).unwrap();
        let trust = Arc::clone(daemon.trust());
        Server {
            store,
            url: daemon.url(),
            ca_pem: trust.ca.cert_pem().as_bytes().to_vec(),
            trust,
            admin: admin.trim().to_owned(),
            daemon: Some(daemon),
            _dir: dir,
        }
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("data")
    }

    /// The id of the cluster, as the server recorded it in its store.
    pub async fn cluster_id(&self) -> ClusterId {
        let key = Keys::default().cluster();
        let kv = self.store.get(&key).await.unwrap().kv.unwrap();
        serde_json::from_slice::<ClusterRecord>(&kv.value)
            .unwrap()
            .cluster_id
    }

    /// How many watches the server has opened on its store so far: a
    /// long poll is waiting in the control plane once this grew after it
    /// was sent.
    pub fn watches(&self) -> u64 {
        self.store.calls().of(Method::Watch)
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

    /// Stops the server as `flotilla server` stops (drains the API, resigns
    /// leadership) and waits, within [`DEADLINE`], until it has.
    pub async fn stop(mut self) -> Result<(), flotilla_api::daemon::DaemonError> {
        let daemon = self.daemon.take().unwrap();
        within(daemon.stop()).await
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
