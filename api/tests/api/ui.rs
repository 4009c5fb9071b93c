//! The web console over real HTTPS without a browser: its files and their
//! headers, sign-in and its cookie, the cookie refused without the
//! console's header, roles through a session, sign-out and expiry. The
//! browser tests are in tests/ui/.

use std::time::Duration;

use flotilla_api::server::ApiConfig;
use flotilla_api::server::ui::{CONSOLE_HEADER, COOKIE, CSP, UiConfig};
use flotilla_proto::trust::{Role, WhoAmI};
use reqwest::header::HeaderMap;

use crate::{DEADLINE, Server, eventually};

/// A browser-like request: with the session `cookie` and, when
/// `console`, the console's header.
async fn request(
    server: &Server,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    console: bool,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> (u16, HeaderMap, Vec<u8>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&server.ca_pem).unwrap()])
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut r = http.request(method.parse().unwrap(), format!("{}{path}", server.url));
    if let Some(c) = cookie {
        r = r.header("cookie", format!("{COOKIE}={c}"));
    }
    if console {
        r = r.header(CONSOLE_HEADER, "1");
    }
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    if let Some(b) = body {
        r = r.header("content-type", "application/json").body(b);
    }
    let response = r.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

fn sign_in_body(token: &str) -> Option<String> {
    Some(serde_json::json!({ "token": token }).to_string())
}

/// Signs in with `token`; returns the session id and the `Set-Cookie`.
async fn sign_in(server: &Server, token: &str) -> (String, String) {
    let (status, headers, body) = request(
        server,
        "POST",
        "/v1/session",
        None,
        true,
        &[],
        sign_in_body(token),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let set = headers["set-cookie"].to_str().unwrap().to_owned();
    let id = set
        .strip_prefix(&format!("{COOKIE}="))
        .and_then(|rest| rest.split(';').next())
        .unwrap()
        .to_owned();
    (id, set)
}

fn error_of(status: u16, headers: &HeaderMap, body: &[u8]) -> (String, String) {
    let e = crate::error_body(status, headers, body);
    (e.error.reason, e.error.message)
}

#[tokio::test]
async fn sign_in_sets_a_secure_http_only_strict_cookie() {
    let server = Server::start().await;
    let (id, set) = sign_in(&server, &server.admin).await;
    assert_eq!(id.len(), 64, "{set}");
    for flag in [
        "Path=/",
        "Secure",
        "HttpOnly",
        "SameSite=Strict",
        "Max-Age=28800",
    ] {
        assert!(set.split("; ").any(|f| f == flag), "{flag} missing: {set}");
    }
    assert!(!set.contains("Domain"), "{set}");
    // The cookie, with the header, is the admin's credential.
    let (status, _, body) = request(&server, "GET", "/v1/whoami", Some(&id), true, &[], None).await;
    assert_eq!(status, 200);
    let who: WhoAmI = serde_json::from_slice(&body).unwrap();
    assert_eq!(who.role, Role::Admin);
    // A session id the server did not give is no credential.
    let (status, headers, body) = request(
        &server,
        "GET",
        "/v1/whoami",
        Some(&"0".repeat(64)),
        true,
        &[],
        None,
    )
    .await;
    let (reason, message) = error_of(status, &headers, &body);
    assert_eq!((status, reason.as_str()), (401, "unauthorized"));
    assert!(message.contains("sign in again"), "{message}");
    // Signing in again from the same browser ends the first session.
    let (status, headers, _) = request(
        &server,
        "POST",
        "/v1/session",
        Some(&id),
        true,
        &[],
        sign_in_body(&server.admin),
    )
    .await;
    assert_eq!(status, 200);
    assert!(headers["set-cookie"].to_str().unwrap().contains(COOKIE));
    let (status, _, _) = request(&server, "GET", "/v1/whoami", Some(&id), true, &[], None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_cookie_without_the_console_header_is_refused() {
    let server = Server::start().await;
    let (id, _) = sign_in(&server, &server.admin).await;
    let (status, headers, body) =
        request(&server, "GET", "/v1/units", Some(&id), false, &[], None).await;
    let (reason, message) = error_of(status, &headers, &body);
    assert_eq!((status, reason.as_str()), (403, "forbidden"));
    assert!(message.contains(CONSOLE_HEADER), "{message}");
    // A cross-site form's change: refused, and nothing changed.
    let put =
        Some(r#"{"desiredState":"launched","text":"[Service]\nExecStart=/bin/true\n"}"#.to_owned());
    let (status, _, _) = request(
        &server,
        "PUT",
        "/v1/units/csrf.service",
        Some(&id),
        false,
        &[],
        put.clone(),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _, _) = request(
        &server,
        "GET",
        "/v1/units/csrf.service",
        Some(&id),
        true,
        &[],
        None,
    )
    .await;
    assert_eq!(status, 404);
    // The same change with the header goes through.
    let (status, _, _) = request(
        &server,
        "PUT",
        "/v1/units/csrf.service",
        Some(&id),
        true,
        &[],
        put,
    )
    .await;
    assert_eq!(status, 201);
    // Signing in also needs the header (no sign-in by a cross-site form).
    let (status, headers, body) = request(
        &server,
        "POST",
        "/v1/session",
        None,
        false,
        &[],
        sign_in_body(&server.admin),
    )
    .await;
    let (reason, _) = error_of(status, &headers, &body);
    assert_eq!((status, reason.as_str()), (403, "forbidden"));
    assert!(headers.get("set-cookie").is_none());
}

#[tokio::test]
async fn a_wrong_token_or_a_machine_token_does_not_sign_in() {
    let server = Server::start().await;
    let (status, headers, body) = request(
        &server,
        "POST",
        "/v1/session",
        None,
        true,
        &[],
        sign_in_body("flt1.0123456789abcdef.nope"),
    )
    .await;
    let (reason, _) = error_of(status, &headers, &body);
    assert_eq!((status, reason.as_str()), (401, "unauthorized"));
    assert!(headers.get("set-cookie").is_none());
    let machine = server.machine_token(1).await;
    let (status, headers, body) = request(
        &server,
        "POST",
        "/v1/session",
        None,
        true,
        &[],
        sign_in_body(&machine),
    )
    .await;
    let (reason, message) = error_of(status, &headers, &body);
    assert_eq!((status, reason.as_str()), (403, "forbidden"), "{message}");
}

#[tokio::test]
async fn a_session_has_its_tokens_role_and_ends_with_the_token() {
    let server = Server::start().await;
    let viewer = server.token(Role::Viewer).await;
    let (id, _) = sign_in(&server, &viewer).await;
    let (status, _, _) = request(&server, "GET", "/v1/units", Some(&id), true, &[], None).await;
    assert_eq!(status, 200);
    let (status, headers, body) = request(
        &server,
        "DELETE",
        "/v1/units/web.service",
        Some(&id),
        true,
        &[],
        None,
    )
    .await;
    let (reason, _) = error_of(status, &headers, &body);
    assert_eq!((status, reason.as_str()), (403, "forbidden"));
    // An operator's session may act.
    let operator = server.token(Role::Operator).await;
    let (op, _) = sign_in(&server, &operator).await;
    let put =
        Some(r#"{"desiredState":"inactive","text":"[Service]\nExecStart=/bin/true\n"}"#.to_owned());
    let (status, _, _) = request(
        &server,
        "PUT",
        "/v1/units/web.service",
        Some(&op),
        true,
        &[],
        put,
    )
    .await;
    assert_eq!(status, 201);
    // Revoking the token ends its sessions at once.
    let token_id = viewer.split('.').nth(1).unwrap().to_owned();
    server.client().revoke_credential(&token_id).await.unwrap();
    let (status, _, _) = request(&server, "GET", "/v1/units", Some(&id), true, &[], None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn sign_out_ends_the_session_and_clears_the_cookie() {
    let server = Server::start().await;
    let (id, _) = sign_in(&server, &server.admin).await;
    // Without the header, a cross-site request cannot sign the user out.
    let (status, _, _) = request(
        &server,
        "DELETE",
        "/v1/session",
        Some(&id),
        false,
        &[],
        None,
    )
    .await;
    assert_eq!(status, 403);
    let (status, _, _) = request(&server, "GET", "/v1/whoami", Some(&id), true, &[], None).await;
    assert_eq!(status, 200);
    let (status, headers, _) =
        request(&server, "DELETE", "/v1/session", Some(&id), true, &[], None).await;
    assert_eq!(status, 204);
    let set = headers["set-cookie"].to_str().unwrap();
    assert!(
        set.starts_with(&format!("{COOKIE}=;")) && set.contains("Max-Age=0"),
        "{set}"
    );
    let (status, _, _) = request(&server, "GET", "/v1/whoami", Some(&id), true, &[], None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_session_expires() {
    let server = Server::with_config(ApiConfig {
        ui: UiConfig {
            session_ttl: Duration::from_secs(1),
            ..UiConfig::default()
        },
        ..ApiConfig::default()
    })
    .await;
    let (id, set) = sign_in(&server, &server.admin).await;
    assert!(set.contains("Max-Age=1"), "{set}");
    let (status, _, _) = request(&server, "GET", "/v1/whoami", Some(&id), true, &[], None).await;
    assert_eq!(status, 200);
    eventually("the session to expire", DEADLINE, || async {
        let (status, _, _) =
            request(&server, "GET", "/v1/whoami", Some(&id), true, &[], None).await;
        (status == 401).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_console_files_are_served_with_their_types_and_policy() {
    let server = Server::start().await;
    for (path, kind) in [
        ("/ui/", "text/html; charset=utf-8"),
        ("/ui/index.html", "text/html; charset=utf-8"),
        ("/ui/style.css", "text/css; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/api.js", "text/javascript; charset=utf-8"),
        ("/ui/views.js", "text/javascript; charset=utf-8"),
    ] {
        let (status, headers, body) = request(&server, "GET", path, None, false, &[], None).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(headers["content-type"], kind, "{path}");
        assert_eq!(headers["content-security-policy"], CSP, "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["cache-control"], "no-cache");
        assert!(!body.is_empty());
        // Unchanged since the last load: 304 and no body.
        let etag = headers["etag"].to_str().unwrap().to_owned();
        let (status, again, body) = request(
            &server,
            "GET",
            path,
            None,
            false,
            &[("if-none-match", &etag)],
            None,
        )
        .await;
        assert_eq!((status, body.len()), (304, 0), "{path}");
        assert_eq!(again["etag"], etag.as_str());
    }
    // The policy allows no inline script, no other origin, no framing.
    assert!(CSP.contains("default-src 'none'") && CSP.contains("script-src 'self'"));
    assert!(CSP.contains("frame-ancestors 'none'") && !CSP.contains("unsafe"));
    // An unknown file is a JSON 404.
    let (status, headers, body) =
        request(&server, "GET", "/ui/nothing.js", None, false, &[], None).await;
    let (reason, _) = error_of(status, &headers, &body);
    assert_eq!((status, reason.as_str()), (404, "route_not_found"));
    // /ui leads to /ui/.
    let (status, headers, _) = request(&server, "GET", "/ui", None, false, &[], None).await;
    assert_eq!(
        (status, &headers["location"]),
        (308, &"/ui/".parse().unwrap())
    );
}
