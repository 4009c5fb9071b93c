//! The version rule over real HTTPS (`flotilla_api::version`): callers of
//! another release line are refused with 426 and a reason, before their
//! credential is looked at; agents older than the minimum are refused at
//! registration; callers without the header are served.

use flotilla_api::version::{self, MIN_AGENT_VERSION, Version};
use flotilla_proto::wire::ErrorBody;

use crate::Server;
use crate::support::machine;

/// A request with `Flotilla-Version: version` (or none) and `token`.
async fn call(
    server: &Server,
    token: Option<&str>,
    method: &str,
    path: &str,
    version: Option<&str>,
    body: Option<String>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&server.ca_pem).unwrap()])
        .build()
        .unwrap();
    let mut request = http.request(method.parse().unwrap(), format!("{}{path}", server.url));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    if let Some(v) = version {
        request = request.header("Flotilla-Version", v);
    }
    if let Some(b) = body {
        request = request.header("content-type", "application/json").body(b);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

fn error(body: &[u8]) -> ErrorBody {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
}

/// A version of the next release line.
fn next_line() -> Version {
    let v = Version::current();
    if v.major == 0 {
        Version {
            minor: v.minor + 1,
            patch: 0,
            ..v
        }
    } else {
        Version {
            major: v.major + 1,
            minor: 0,
            patch: 0,
        }
    }
}

#[tokio::test]
async fn a_client_of_another_release_line_is_refused_with_a_reason() {
    let server = Server::start().await;
    let current = Version::current();
    let newer = next_line().to_string();

    let (status, headers, body) = call(
        &server,
        Some(&server.admin),
        "GET",
        "/v1/units",
        Some(&newer),
        None,
    )
    .await;
    assert_eq!(status, 426);
    assert_eq!(headers["flotilla-version"], version::VERSION);
    let e = error(&body);
    assert_eq!(
        (e.error.code, e.error.reason.as_str()),
        (426, "version_incompatible")
    );
    assert_eq!(
        e.error.message,
        format!(
            "this server runs flotilla {current} and serves clients of flotilla {}; this client is {newer}: use a client of the same release line",
            current.line_name()
        )
    );
    // Before the credential: a caller without one learns the same.
    let (status, _, body) = call(&server, None, "GET", "/v1/units", Some(&newer), None).await;
    assert_eq!(status, 426);
    assert_eq!(error(&body).error.reason, "version_incompatible");

    // The same line, another patch: served.
    let patch = Version {
        patch: current.patch + 1,
        ..current
    }
    .to_string();
    let (status, headers, _) = call(
        &server,
        Some(&server.admin),
        "GET",
        "/v1/units",
        Some(&patch),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["flotilla-version"], version::VERSION);
    // No header (curl, fleet's clients): served.
    let (status, _, _) = call(&server, Some(&server.admin), "GET", "/v1/units", None, None).await;
    assert_eq!(status, 200);

    // Not a version: 400.
    let (status, _, body) = call(
        &server,
        Some(&server.admin),
        "GET",
        "/v1/units",
        Some("latest"),
        None,
    )
    .await;
    assert_eq!(status, 400);
    let e = error(&body);
    assert_eq!(e.error.reason, "invalid_version");
    assert!(
        e.error.message.contains("\"latest\""),
        "{}",
        e.error.message
    );

    // The typed client sends this build's version, and is served.
    server.client().all_units().await.unwrap();
}

#[tokio::test]
async fn an_agent_older_than_the_minimum_is_refused_at_registration() {
    let server = Server::start().await;
    let agent = server.agent(1).await;
    let older = Version {
        major: 0,
        minor: 0,
        patch: 9,
    };
    assert!(older < MIN_AGENT_VERSION);

    // The version in the registration's body.
    let mut m = machine(1);
    m.agent_version = older.to_string();
    let e = agent.register_machine(&m).await.unwrap_err();
    assert_eq!(e.status(), Some(426), "{e}");
    let message = e.to_string();
    assert!(
        message.contains(&format!(
            "registers agents from {MIN_AGENT_VERSION} up to its own release line; this agent is {older}: upgrade the agent"
        )),
        "{message}"
    );
    assert!(message.contains("version_incompatible"), "{message}");
    // Nothing registered.
    assert!(server.client().all_machines().await.unwrap().is_empty());

    // The version in the header, on an agent route.
    let token = server.machine_token(2).await;
    let body = serde_json::to_string(&machine(2)).unwrap();
    let (status, _, answer) = call(
        &server,
        Some(&token),
        "POST",
        "/v1/agent/machines",
        Some(&older.to_string()),
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 426);
    assert!(error(&answer).error.message.ends_with("upgrade the agent"));
    // An agent of a newer line than the server's: the servers go first.
    let (status, _, answer) = call(
        &server,
        Some(&token),
        "POST",
        "/v1/agent/machines",
        Some(&next_line().to_string()),
        Some(body),
    )
    .await;
    assert_eq!(status, 426);
    assert!(
        error(&answer)
            .error
            .message
            .ends_with("upgrade the servers first")
    );

    // This build's agent registers, and its version is listed.
    agent.register_machine(&machine(1)).await.unwrap();
    let listed = server.client().all_machines().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].machine.agent_version, "0.1.0");
}
