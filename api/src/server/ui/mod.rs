//! The web console at `/ui/`: its assets, embedded in the binary, and its
//! sign-in and sign-out (`POST` and `DELETE /v1/session`).
//!
//! The console is plain HTML, CSS and JavaScript modules that call the
//! same JSON API as the CLI, with a session cookie instead of a bearer
//! token (see `sessions`); docs/ui.md has the security model.

pub(crate) mod sessions;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flotilla_proto::trust::WhoAmI;
use flotilla_scheduler::control::ControlPlane;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::extract::JsonBody;
use super::{ApiError, AppState};
pub use sessions::{CONSOLE_HEADER, COOKIE, DEFAULT_MAX_SESSIONS, DEFAULT_SESSION_TTL, UiConfig};

/// The console's Content-Security-Policy: its own scripts, styles and API
/// only; no inline script or style, no frames, no plug-ins, no forms
/// posted anywhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One file of the console.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// Every file of the console, embedded at build time.
const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_str!("assets/index.html"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("assets/style.css"),
    },
    Asset {
        name: "api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("assets/api.js"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("assets/app.js"),
    },
    Asset {
        name: "views.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("assets/views.js"),
    },
];

/// The total size of the console's files, for docs and tests.
pub fn assets_bytes() -> usize {
    ASSETS.iter().map(|a| a.body.len()).sum()
}

/// `GET /ui`: to `/ui/`, where the console's relative addresses resolve.
pub(super) async fn redirect() -> Response {
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, HeaderValue::from_static("/ui/"))],
    )
        .into_response()
}

/// `GET /ui/`: the console's page.
pub(super) async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// `GET /ui/{file}`: one of the console's files, or a JSON 404.
pub(super) async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    serve(&file, &headers)
}

fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return ApiError::RouteNotFound {
            method: axum::http::Method::GET,
            path: format!("/ui/{name}"),
        }
        .into_response();
    };
    let etag = format!(
        "\"{}\"",
        &hex_of(&Sha256::digest(asset.body.as_bytes()))[..32]
    );
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let (status, body) = if fresh {
        (StatusCode::NOT_MODIFIED, Body::empty())
    } else {
        (StatusCode::OK, Body::from(asset.body))
    };
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Revalidated at every load (a 304 when unchanged): an upgraded
    // server's console is used at once, never a mix of two versions.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    response
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The body of `POST /v1/session`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignIn {
    token: String,
}

/// `POST /v1/session` `{token}`: checks the token as any API request's,
/// opens a session and sets its cookie; answers with the caller, as
/// `GET /v1/whoami` does. Only with the console's header, so that a
/// cross-site form cannot sign a browser in.
pub(crate) async fn sign_in<C: ControlPlane>(
    State(s): State<AppState<C>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<SignIn>,
) -> Result<Response, ApiError> {
    if !headers.contains_key(CONSOLE_HEADER) {
        return Err(missing_header());
    }
    let token = body.token.trim();
    if token.is_empty() {
        return Err(ApiError::Unauthorized("give a token to sign in".into()));
    }
    let caller = s
        .trust
        .credentials
        .authenticate_token(token)
        .await
        .map_err(ApiError::from)?;
    if !caller.role.is_person() {
        return Err(ApiError::Forbidden(format!(
            "a {} token cannot sign in to the console: use a viewer, operator or admin token",
            caller.role
        )));
    }
    // Signing in again replaces the browser's session: the old one ends.
    if let Some(old) = sessions::cookie(&headers) {
        s.sessions.close(&old);
    }
    let id = s.sessions.open(token).map_err(ApiError::AuthUnavailable)?;
    let cookie = sessions::set_cookie(&id, s.sessions.ttl());
    let mut response = Json(WhoAmI {
        id: caller.id,
        name: caller.name,
        role: caller.role,
        machine_id: caller.machine,
    })
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `DELETE /v1/session`: ends the request's session, if any, and clears
/// its cookie; 204 either way.
pub(crate) async fn sign_out<C: ControlPlane>(
    State(s): State<AppState<C>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if sessions::cookie(&headers).is_some() && !headers.contains_key(CONSOLE_HEADER) {
        return Err(missing_header());
    }
    if let Some(id) = sessions::cookie(&headers) {
        s.sessions.close(&id);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&sessions::clear_cookie()) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

/// The refusal of a request with the session cookie and without the
/// console's header.
pub(crate) fn missing_header() -> ApiError {
    ApiError::Forbidden(format!(
        "the console's session cookie is accepted only with the header {CONSOLE_HEADER}: 1, which the console sends and a cross-site request cannot"
    ))
}
