//! Authentication and authorization of every route, and the audit of
//! changes: the [`guard`] in front of each route of [`ROUTES`](super::ROUTES).
//!
//! A request carries a bearer token (`Authorization: Bearer flt1....`),
//! the console's session cookie with the console's header (see
//! `super::ui`), or, over TLS, a client certificate signed by the cluster
//! CA; the first of these wins. No valid credential: 401. A credential
//! whose role the route's [`Access`] does not allow: 403, and the attempt
//! is audited. The session cookie without the console's header: 403.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use flotilla_proto::trust::AuditEntry;
use flotilla_scheduler::trust::{AuditLog, Credentials, Identity, now_ms};

use flotilla_scheduler::control::ControlPlane;

use super::listen::ConnInfo;
use super::routes::{Access, Route};
use super::ui::sessions::{self, Presented, Sessions};
use super::{ApiError, AppState};
use crate::tls::{ClusterCa, certificate_serial};

/// What the API checks credentials with, and records changes in.
pub struct Trust {
    pub credentials: Arc<Credentials>,
    pub audit: AuditLog,
    /// The cluster CA: served at `/v1/ca`, signs client certificates, and
    /// its fingerprint goes into join strings.
    pub ca: Arc<ClusterCa>,
    /// The cluster's secrets, sealed in the store.
    pub secrets: Arc<flotilla_scheduler::secrets::Secrets>,
    /// The git sources the leader follows, in the store.
    pub sync: Arc<flotilla_sync::Sources>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust")
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

/// The caller of a request that passed its route's guard.
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub Identity);

/// The state of one route's guard.
#[derive(Clone)]
pub(super) struct Guard {
    pub(super) route: Route,
    pub(super) trust: Arc<Trust>,
    pub(super) sessions: Arc<Sessions>,
}

/// Authenticates the request (unless the route is public), checks the
/// caller's role against the route, runs it, and records the change.
pub(super) async fn guard(State(g): State<Guard>, mut request: Request, next: Next) -> Response {
    if g.route.access == Access::Public {
        return next.run(request).await;
    }
    let info = request.extensions().get::<ConnInfo>().cloned();
    let caller = match authenticate(&g.trust, &g.sessions, request.headers(), info.as_ref()).await {
        Ok(Some(caller)) => caller,
        Ok(None) => return ApiError::Unauthorized(NO_CREDENTIAL.into()).into_response(),
        Err(e) => return e.into_response(),
    };
    let action = format!("{} {}", request.method(), request.uri().path());
    let response = if g.route.access.allows(caller.role) {
        request.extensions_mut().insert(Caller(caller.clone()));
        next.run(request).await
    } else {
        ApiError::Forbidden(format!(
            "{} may not call {action}: it needs {}, and the credential's role is {}",
            caller.describe(),
            g.route.access.describe(),
            caller.role
        ))
        .into_response()
    };
    if g.route.audited || response.status() == StatusCode::FORBIDDEN {
        let entry = AuditEntry {
            at_ms: now_ms(),
            actor_id: caller.id.clone(),
            actor_name: caller.name.clone(),
            role: caller.role,
            target: target(&action, &caller),
            action,
            status: response.status().as_u16(),
            peer: info.map(|i| i.peer.to_string()).unwrap_or_default(),
        };
        if let Err(e) = g.trust.audit.record(entry).await {
            tracing::error!("cannot record a change in the audit log: {e}");
        }
    }
    response
}

/// The router's fallback: no route has this path. Under `/v1/`, a caller
/// without a valid credential is told 401 instead, so that anonymous
/// probing learns nothing.
pub(super) async fn route_not_found<C: ControlPlane>(
    State(s): State<AppState<C>>,
    request: Request,
) -> Response {
    let error = ApiError::RouteNotFound {
        method: request.method().clone(),
        path: request.uri().path().to_owned(),
    };
    let (parts, _) = request.into_parts();
    refuse_anonymous(&s.trust, &s.sessions, &parts, error).await
}

/// The fallback of each path: no route of this path has this method (axum
/// adds the `Allow` header). Anonymous callers are told 401, as above.
pub(super) async fn method_not_allowed<C: ControlPlane>(
    State(s): State<AppState<C>>,
    request: Request,
) -> Response {
    let error = ApiError::MethodNotAllowed {
        method: request.method().clone(),
        path: request.uri().path().to_owned(),
    };
    let (parts, _) = request.into_parts();
    refuse_anonymous(&s.trust, &s.sessions, &parts, error).await
}

async fn refuse_anonymous(
    trust: &Trust,
    sessions: &Sessions,
    request: &axum::http::request::Parts,
    error: ApiError,
) -> Response {
    let path = request.uri.path();
    if path == "/v1" || path.starts_with("/v1/") {
        let info = request.extensions.get::<ConnInfo>();
        match authenticate(trust, sessions, &request.headers, info).await {
            Ok(Some(_)) => {}
            Ok(None) => return ApiError::Unauthorized(NO_CREDENTIAL.into()).into_response(),
            Err(e) => return e.into_response(),
        }
    }
    error.into_response()
}

const NO_CREDENTIAL: &str = "this route needs a credential: the header \"Authorization: Bearer TOKEN\", a console session, or a client certificate signed by the cluster CA";

/// Who the request is from: its bearer token, else its console session,
/// else its client certificate, else nobody.
async fn authenticate(
    trust: &Trust,
    sessions: &Sessions,
    headers: &HeaderMap,
    info: Option<&ConnInfo>,
) -> Result<Option<Identity>, ApiError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let text = value.to_str().map_err(|_| {
            ApiError::Unauthorized("the Authorization header is not plain text".into())
        })?;
        let Some((scheme, token)) = text.split_once(' ') else {
            return Err(ApiError::Unauthorized(
                "the Authorization header must be \"Bearer TOKEN\"".into(),
            ));
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::Unauthorized(format!(
                "only bearer tokens are accepted, not {scheme:?}"
            )));
        }
        return trust
            .credentials
            .authenticate_token(token.trim())
            .await
            .map(Some)
            .map_err(ApiError::from);
    }
    match sessions::presented(headers) {
        Presented::None => {}
        Presented::WithoutHeader => return Err(super::ui::missing_header()),
        Presented::Session(id) => {
            let token = sessions.token(&id).ok_or_else(|| {
                ApiError::Unauthorized(
                    "the console session has ended (signed out or expired): sign in again".into(),
                )
            })?;
            return trust
                .credentials
                .authenticate_token(&token)
                .await
                .map(Some)
                .map_err(ApiError::from);
        }
    }
    if let Some(cert) = info.and_then(|i| i.client_cert.as_ref()) {
        let serial = certificate_serial(cert).ok_or_else(|| {
            ApiError::Unauthorized("the client certificate does not parse".into())
        })?;
        return trust
            .credentials
            .authenticate_certificate(&serial)
            .await
            .map(Some)
            .map_err(ApiError::from);
    }
    Ok(None)
}

/// What a change is about, for the audit log: the path after `/v1/`, and
/// for an agent, its machine.
fn target(action: &str, caller: &Identity) -> String {
    let path = action.split_once(' ').map_or(action, |(_, p)| p);
    let rest = path.strip_prefix("/v1/").unwrap_or(path);
    match &caller.machine {
        Some(machine) if rest.starts_with("agent/") => format!("machine {machine}"),
        _ => rest.to_owned(),
    }
}
