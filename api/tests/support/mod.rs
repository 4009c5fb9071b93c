//! What the API's test crates (`api`, `limits`, `scheduling`) share: the
//! machines they register, the credentials they make, and raw requests
//! over HTTPS.
#![allow(dead_code)] // each test crate uses its own part of this module

use std::path::PathBuf;
use std::time::Duration;

use flotilla_api::client::ClientOptions;
use flotilla_api::daemon::{DaemonConfig, TlsSettings};
use flotilla_api::server::ApiConfig;
use flotilla_api::tls::ServerTrust;
use flotilla_proto::trust::{Role, TokenCreate};
use flotilla_proto::{Capacity, Health, Machine, MachineId, UnitName, UnitState};
use flotilla_scheduler::keys::Keys;
use flotilla_scheduler::placement::Strategy;
use flotilla_scheduler::trust::Identity;

/// A server's settings for a test: every default (a 2 s leader TTL), on a
/// free loopback port, with its data in `data_dir`.
pub fn daemon_config(data_dir: PathBuf, machine_ttl: Duration, strategy: Strategy) -> DaemonConfig {
    DaemonConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir,
        etcd: None,
        raft: None,
        machine_ttl,
        leader_ttl: Duration::from_secs(2),
        strategy,
        keys: Keys::default(),
        api: ApiConfig::default(),
        tls: TlsSettings::default(),
        static_admin_token: None,
        secrets_key: None,
        replace_secrets_key: false,
        audit: Default::default(),
        events: Default::default(),
        quotas: Default::default(),
        sync: Default::default(),
    }
}

/// Machine number `n`: its id is the byte `n` sixteen times.
pub fn machine_id(n: u8) -> MachineId {
    MachineId::parse(&format!("{n:02x}").repeat(16)).unwrap()
}

/// Machine number `n`, as its agent would register it.
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

/// Unit `unit` as an agent reports it active on `machine`.
pub fn unit_state(unit: &str, machine: &MachineId) -> UnitState {
    UnitState {
        unit: UnitName::parse(unit).unwrap(),
        machine: machine.clone(),
        load_state: "loaded".into(),
        active_state: "active".into(),
        sub_state: "running".into(),
        hash: None,
        started_hash: None,
        main_pid: Some(42),
        n_restarts: 0,
        container_id: None,
        health: Health::None,
        since_ms: 1_700_000_000_000,
        last_error: None,
    }
}

/// Who makes the tests' credentials in process.
pub fn tester() -> Identity {
    Identity {
        id: "test".into(),
        name: "test".into(),
        role: Role::Admin,
        machine: None,
    }
}

/// A token of `role`, named after it, forever.
pub fn token_create(role: Role) -> TokenCreate {
    TokenCreate {
        role,
        name: format!("test {role}"),
        ttl_ms: None,
        uses: None,
    }
}

/// The options of a client with `token` (or none), trusting `ca_pem`.
pub fn client_options(ca_pem: &[u8], token: Option<&str>) -> ClientOptions {
    ClientOptions {
        token: token.map(str::to_owned),
        trust: ServerTrust::CaPem(ca_pem.to_vec()),
        identity: None,
    }
}

/// A request the typed client would not send, with `token` (or none),
/// trusting `ca_pem`; returns the status, the headers and the body.
pub async fn raw_request(
    ca_pem: &[u8],
    token: Option<&str>,
    method: &str,
    url: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem).unwrap()])
        .build()
        .unwrap();
    let mut request = http.request(method.parse().unwrap(), url);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    let response = request.body(body).send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

/// Polls `check` until it gives a value, failing the test (saying it
/// waited for `what`) once `deadline` has passed.
// Not every test binary that includes this module waits for something.
#[allow(unused_imports)]
pub use flotilla_testbed::poll::eventually_async as eventually;
