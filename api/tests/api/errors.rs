//! Every error is a JSON `ErrorBody`, axum's own rejections included:
//! 404, 405, 415, 400, 413, 401, and the control plane's 500 and 503.

use flotilla_api::client::{Client, ClientError};
use flotilla_api::server::ApiConfig;
use flotilla_proto::DesiredState;
use flotilla_proto::wire::UnitPut;
use flotilla_scheduler::keys::Keys;
use flotilla_store::{Fault, Method, Store};

use crate::{SERVICE, Server, name, support};
use flotilla_proto::trust::Role;

#[tokio::test]
async fn unknown_routes_and_methods() {
    let server = Server::start().await;
    let e = server
        .raw_error("GET", &format!("{}/v1/nothing", server.url), None, "")
        .await;
    assert_eq!(
        (e.error.code, e.error.reason.as_str()),
        (404, "route_not_found")
    );
    assert_eq!(e.error.message, "no route for GET /v1/nothing");

    let (status, headers, _) = server
        .raw("POST", &format!("{}/v1/units/web", server.url), None, "")
        .await;
    assert_eq!(status, 405);
    let allow = headers["allow"].to_str().unwrap();
    for method in ["GET", "PUT", "DELETE"] {
        assert!(allow.contains(method), "{allow}");
    }
    let e = server
        .raw_error("DELETE", &format!("{}/v1/machines", server.url), None, "")
        .await;
    assert_eq!(
        (e.error.code, e.error.reason.as_str()),
        (405, "method_not_allowed")
    );
    assert_eq!(
        e.error.message,
        "method DELETE is not allowed on /v1/machines"
    );
}

#[tokio::test]
async fn bodies_must_be_json() {
    let server = Server::start().await;
    let url = format!("{}/v1/units/web", server.url);
    let e = server
        .raw_error("PUT", &url, Some("text/plain"), "{}")
        .await;
    assert_eq!(
        (e.error.code, e.error.reason.as_str()),
        (415, "unsupported_media_type")
    );
    assert!(
        e.error.message.contains("text/plain"),
        "{}",
        e.error.message
    );
    let e = server.raw_error("PUT", &url, None, "{}").await;
    assert_eq!(e.error.code, 415);

    let e = server
        .raw_error("PUT", &url, Some("application/json"), "{\"desiredState\":")
        .await;
    assert_eq!(
        (e.error.code, e.error.reason.as_str()),
        (400, "invalid_json")
    );
    let e = server
        .raw_error(
            "PUT",
            &url,
            Some("application/json; charset=utf-8"),
            r#"{"desiredState":"running","text":""}"#,
        )
        .await;
    assert_eq!(
        (e.error.code, e.error.reason.as_str()),
        (400, "invalid_json")
    );
    assert!(e.error.message.contains("running"), "{}", e.error.message);
    assert!(server.client().all_units().await.unwrap().is_empty());
}

/// serde reads a struct from a JSON array: `[]` would pass as a request
/// with every field absent. Every body must be an object.
#[tokio::test]
async fn bodies_must_be_json_objects() {
    let server = Server::start().await;
    let id = crate::machine_id(1);
    let machine = server.machine_token(1).await;
    let routes = [
        ("PUT", "/v1/units/web.service".to_owned()),
        ("PATCH", format!("/v1/machines/{id}")),
        ("POST", "/v1/agent/machines".to_owned()),
        ("POST", format!("/v1/agent/machines/{id}/heartbeat")),
        ("PUT", format!("/v1/agent/machines/{id}/state")),
    ];
    for (method, path) in &routes {
        for (body, found) in [
            ("[]", "an array"),
            ("[\"inactive\"]", "an array"),
            ("null", "null"),
            ("\"x\"", "a string"),
            ("7", "a number"),
        ] {
            // Each route as its caller: the agent routes as the machine.
            let token = if path.starts_with("/v1/agent/") {
                &machine
            } else {
                &server.admin
            };
            let (status, headers, answer) = server
                .raw_as(
                    Some(token),
                    method,
                    &format!("{}{path}", server.url),
                    Some("application/json"),
                    body,
                )
                .await;
            let e = crate::error_body(status, &headers, &answer);
            assert_eq!(
                (e.error.code, e.error.reason.as_str()),
                (400, "invalid_json"),
                "{method} {path} {body}"
            );
            assert_eq!(
                e.error.message,
                format!(
                    "request body is not valid for this route: the request body must be a JSON object, and it is {found}"
                )
            );
        }
    }
    assert!(server.client().all_units().await.unwrap().is_empty());
}

#[tokio::test]
async fn bodies_over_the_limit() {
    // The default limit, 1 MiB, through the client.
    let server = Server::start().await;
    let huge = UnitPut {
        desired_state: Some(DesiredState::Launched),
        text: Some(format!("{SERVICE}# {}\n", "x".repeat(1 << 20))),
        ..UnitPut::default()
    };
    let e = server
        .client()
        .put_unit(&name("web"), &huge)
        .await
        .unwrap_err();
    match e {
        ClientError::Api {
            status,
            reason,
            message,
            ..
        } => {
            assert_eq!((status, reason.as_str()), (413, "payload_too_large"));
            assert_eq!(
                message,
                "request body is larger than the limit of 1048576 bytes"
            );
        }
        other => panic!("{other}"),
    }

    // A configured limit, through a raw request.
    let server = Server::with_config(ApiConfig {
        body_limit: 64,
        ..ApiConfig::default()
    })
    .await;
    let body = serde_json::to_vec(&UnitPut {
        desired_state: Some(DesiredState::Launched),
        text: Some(SERVICE.into()),
        ..UnitPut::default()
    })
    .unwrap();
    let e = server
        .raw_error(
            "PUT",
            &format!("{}/v1/units/web", server.url),
            Some("application/json"),
            body,
        )
        .await;
    assert_eq!(
        (e.error.code, e.error.reason.as_str()),
        (413, "payload_too_large")
    );
}

#[tokio::test]
async fn store_failures() {
    let server = Server::start().await;
    let client = server.client();
    // The store cannot be reached: every listing fails until it can
    // again. Temporary: 503.
    server
        .store
        .inject(Fault::unavailable(usize::MAX).on(Method::Range));
    let e = client.all_units().await.unwrap_err();
    server.store.clear_faults();
    assert_eq!(e.status(), Some(503));
    assert!(e.is_temporary());
    assert_eq!(
        e.to_string(),
        "store unavailable: injected fault (503 unavailable)"
    );
    assert!(client.all_units().await.unwrap().is_empty());
    // The secrets and the credentials say it the same way.
    server
        .store
        .inject(Fault::unavailable(usize::MAX).on(Method::Range));
    let e = client.list_secrets().await.unwrap_err();
    server.store.clear_faults();
    assert_eq!(
        e.to_string(),
        "store unavailable: injected fault (503 unavailable)"
    );
    server
        .store
        .inject(Fault::unavailable(usize::MAX).on(Method::Txn));
    let e = client
        .create_token(&support::token_create(Role::Viewer))
        .await
        .unwrap_err();
    server.store.clear_faults();
    assert_eq!(
        e.to_string(),
        "store unavailable: injected fault (503 unavailable)"
    );

    // A unit's record that does not decode (corrupt data): 500, not
    // temporary.
    server
        .store
        .put(&Keys::default().unit(&name("web")), b"{not json", None)
        .await
        .unwrap();
    let e = client.get_unit(&name("web")).await.unwrap_err();
    assert_eq!(e.status(), Some(500), "{e}");
    assert!(!e.is_temporary());
    assert!(e.to_string().starts_with("internal error: "), "{e}");
}

#[tokio::test]
async fn healthz_is_plain_ok() {
    let server = Server::start().await;
    let (status, _, body) = server
        .raw("GET", &format!("{}/healthz", server.url), None, "")
        .await;
    assert_eq!((status, body.as_slice()), (200, b"ok".as_slice()));
}

/// A server that is not flotilla's (a proxy's error page, a wrong port):
/// the client says what it got.
#[tokio::test]
async fn foreign_answers() {
    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::get;

    let router = Router::new()
        .route("/v1/units", get(|| async { "not json" }))
        .route(
            "/v1/machines",
            get(|| async { (StatusCode::BAD_GATEWAY, "<html>bad gateway</html>") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move { axum::serve(listener, router).await });
    let client = Client::new([&url], None).unwrap();

    let e = client.all_units().await.unwrap_err();
    assert!(matches!(e, ClientError::Decode { .. }), "{e}");
    let e = client.all_machines().await.unwrap_err();
    match e {
        ClientError::Api {
            status,
            reason,
            message,
        } => {
            assert_eq!((status, reason.as_str()), (502, "bad_gateway"));
            assert_eq!(message, "<html>bad gateway</html>");
        }
        other => panic!("{other}"),
    }
    task.abort();
}
