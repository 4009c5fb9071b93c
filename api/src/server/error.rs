//! Every error the API answers with, and the one place that gives each its
//! HTTP status and reason.

use axum::Json;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flotilla_proto::machine::MachineIdError;
use flotilla_proto::name::NameError;
use flotilla_proto::wire::{ErrorBody, ErrorDetail};
use flotilla_scheduler::control::ControlError;
use flotilla_scheduler::secrets::SecretsError;
use flotilla_scheduler::trust::{AuthError, TrustError};

/// An error response: a control-plane error, or a request the API refused
/// before it reached the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The control plane refused or failed.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// No route has this path.
    #[error("no route for {method} {path}")]
    RouteNotFound { method: Method, path: String },
    /// The path exists, not with this method.
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: Method, path: String },
    /// A body that is not declared as JSON.
    #[error("request body must be application/json, not {}", found.as_deref().unwrap_or("untyped"))]
    UnsupportedMediaType { found: Option<String> },
    /// A `Content-Type` fleet's API refuses (`/fleet/v1/`: exactly one,
    /// `application/json`), with fleet's message.
    #[error("{0}")]
    ContentType(String),
    /// A body that is not the JSON this route takes.
    #[error("request body is not valid for this route: {0}")]
    InvalidJson(String),
    /// A body over [`ApiConfig::body_limit`](super::ApiConfig::body_limit).
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The body could not be read (the connection broke, or bad framing).
    #[error("cannot read the request body: {0}")]
    BodyUnreadable(String),
    /// A path parameter that is not a unit name.
    #[error("{0}")]
    InvalidUnitName(NameError),
    /// A path parameter that is not a machine id.
    #[error("{0}")]
    InvalidMachineId(MachineIdError),
    /// A path that could not be decoded.
    #[error("invalid path: {0}")]
    InvalidPath(String),
    /// A query parameter with a bad value.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// A request that is well-formed JSON but inconsistent with its route,
    /// or with itself.
    #[error("{0}")]
    BadRequest(String),
    /// No credential, or one that is not valid (unknown, revoked,
    /// expired).
    #[error("{0}")]
    Unauthorized(String),
    /// A valid credential that may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// Managing credentials failed.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// The credentials could not be checked now (the store is slow).
    #[error("{0}")]
    AuthUnavailable(String),
    /// A machine's agent cannot be reached from this server now (503).
    #[error("{0}")]
    Unreachable(String),
    /// Too many requests to agents are open (429).
    #[error("{0}")]
    TooManyRequests(String),
    /// A machine's agent answered with an error, or not as it should (502).
    #[error("{0}")]
    AgentFailed(String),
    /// Managing or delivering secrets failed.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// Managing git sources failed.
    #[error(transparent)]
    Sync(#[from] flotilla_sync::SourcesError),
    /// A raft membership change on a server whose store is not replicated
    /// with raft (embedded or etcd).
    #[error("this server's store is not replicated with raft: its membership cannot change")]
    NotReplicated,
    /// A caller whose version this server does not serve (426).
    #[error(transparent)]
    VersionIncompatible(crate::version::Incompatible),
    /// A `Flotilla-Version` header that is not a version (400).
    #[error("{0}")]
    InvalidVersion(String),
    /// The body did not arrive within the body timeout.
    #[error("the request body did not arrive within {seconds} s")]
    BodyTimeout { seconds: u64 },
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        match e {
            AuthError::Unavailable(_) => ApiError::AuthUnavailable(e.to_string()),
            AuthError::Malformed(_)
            | AuthError::Unknown
            | AuthError::Expired
            | AuthError::NoUsesLeft => ApiError::Unauthorized(e.to_string()),
        }
    }
}

impl ApiError {
    /// The status and the stable, machine-readable reason of this error.
    pub fn status_and_reason(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Control(e) => control_status(e),
            ApiError::RouteNotFound { .. } => (StatusCode::NOT_FOUND, "route_not_found"),
            ApiError::MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
            }
            ApiError::UnsupportedMediaType { .. } => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::ContentType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            ApiError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            ApiError::BodyUnreadable(_) => (StatusCode::BAD_REQUEST, "body_unreadable"),
            ApiError::InvalidUnitName(_) => (StatusCode::BAD_REQUEST, "invalid_unit_name"),
            ApiError::InvalidMachineId(_) => (StatusCode::BAD_REQUEST, "invalid_machine_id"),
            ApiError::InvalidPath(_) => (StatusCode::BAD_REQUEST, "invalid_path"),
            ApiError::InvalidQuery(_) => (StatusCode::BAD_REQUEST, "invalid_query"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::Trust(e) => trust_status(e),
            ApiError::Secrets(e) => secrets_status(e),
            ApiError::Sync(e) => sync_status(e),
            ApiError::AuthUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::BodyTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            ApiError::Unreachable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unreachable"),
            ApiError::TooManyRequests(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            ApiError::AgentFailed(_) => (StatusCode::BAD_GATEWAY, "agent_failed"),
            ApiError::NotReplicated => (StatusCode::CONFLICT, "not_replicated"),
            ApiError::VersionIncompatible(_) => {
                (StatusCode::UPGRADE_REQUIRED, "version_incompatible")
            }
            ApiError::InvalidVersion(_) => (StatusCode::BAD_REQUEST, "invalid_version"),
        }
    }

    /// The JSON body of this error.
    pub fn body(&self) -> ErrorBody {
        let (status, reason) = self.status_and_reason();
        ErrorBody {
            error: ErrorDetail {
                code: status.as_u16(),
                reason: reason.to_owned(),
                message: self.to_string(),
            },
        }
    }
}

/// The status and reason of each control-plane error: the one match, with
/// no wildcard arm, so that a new variant cannot go unmapped.
fn control_status(e: &ControlError) -> (StatusCode, &'static str) {
    match e {
        // The message is the `UnitFileError` display: one
        // `FILE:LINE: error: ...` line per problem.
        ControlError::InvalidUnit(_) => (StatusCode::BAD_REQUEST, "invalid_unit"),
        ControlError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
        // The message names the field: `hostname`, `metadata["role"]`.
        ControlError::InvalidField(_) => (StatusCode::BAD_REQUEST, "invalid_field"),
        // One request over a limit of its own; the message names the limit.
        ControlError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        // The cluster is full: 507, as WebDAV answers a full store.
        ControlError::QuotaExceeded { .. } => (StatusCode::INSUFFICIENT_STORAGE, "quota_exceeded"),
        ControlError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
        ControlError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
        ControlError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        ControlError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

/// The status and reason of each error of managing credentials: one match,
/// no wildcard.
fn trust_status(e: &TrustError) -> (StatusCode, &'static str) {
    match e {
        TrustError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
        TrustError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
        TrustError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
        TrustError::Full { .. } => (StatusCode::INSUFFICIENT_STORAGE, "quota_exceeded"),
        TrustError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        TrustError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

/// The status and reason of each error of git sources: one match, no
/// wildcard.
fn sync_status(e: &flotilla_sync::SourcesError) -> (StatusCode, &'static str) {
    use flotilla_sync::SourcesError;
    match e {
        SourcesError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
        SourcesError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
        SourcesError::Changed { .. } => (StatusCode::CONFLICT, "conflict"),
        SourcesError::Full { .. } => (StatusCode::INSUFFICIENT_STORAGE, "quota_exceeded"),
        SourcesError::Store(e) if e.is_temporary() => {
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
        SourcesError::Store(_) | SourcesError::Corrupt { .. } => {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        }
    }
}

/// The status and reason of each error of secrets: one match, no
/// wildcard.
fn secrets_status(e: &SecretsError) -> (StatusCode, &'static str) {
    match e {
        SecretsError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
        SecretsError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
        SecretsError::Exists { .. } => (StatusCode::CONFLICT, "conflict"),
        SecretsError::InUse { .. } => (StatusCode::CONFLICT, "conflict"),
        SecretsError::Changed { .. } => (StatusCode::CONFLICT, "conflict"),
        SecretsError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        SecretsError::Full { .. } => (StatusCode::INSUFFICIENT_STORAGE, "quota_exceeded"),
        SecretsError::WrongKey { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "wrong_secrets_key"),
        SecretsError::KeyMismatch { .. } => {
            (StatusCode::INTERNAL_SERVER_ERROR, "wrong_secrets_key")
        }
        SecretsError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        SecretsError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, _) = self.status_and_reason();
        let mut response = (status, Json(self.body())).into_response();
        if let ApiError::Unauthorized(_) = self {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use flotilla_proto::UnitFileError;
    use flotilla_proto::diagnostic::Diagnostic;
    use flotilla_proto::field::FieldError;
    use flotilla_scheduler::quota::Quota;

    use super::*;

    #[test]
    fn control_errors_map_to_one_status_each() {
        let cases = [
            (
                ControlError::InvalidUnit(UnitFileError {
                    file: "a.service".into(),
                    diagnostics: vec![Diagnostic::error(Some(3), "bad")],
                }),
                400,
                "invalid_unit",
                "a.service:3: error: bad",
            ),
            (
                ControlError::InvalidRequest("no".into()),
                400,
                "invalid_request",
                "no",
            ),
            (
                ControlError::NotFound {
                    what: "unit a.service".into(),
                },
                404,
                "not_found",
                "unit a.service does not exist",
            ),
            (
                ControlError::InvalidField(FieldError::Empty {
                    field: "hostname".into(),
                }),
                400,
                "invalid_field",
                "hostname is empty",
            ),
            (
                ControlError::TooLarge {
                    what: "metadata of machine m".into(),
                    size: 30000,
                    limit: 64,
                    unit: "keys",
                },
                413,
                "too_large",
                "metadata of machine m: 30000 keys, over the limit of 64 keys",
            ),
            (
                ControlError::QuotaExceeded {
                    quota: Quota::Units,
                    limit: 10,
                    used: 10,
                    asked: 1,
                },
                507,
                "quota_exceeded",
                "the cluster's quota of 10 units would be exceeded: 10 in use, 1 more asked for",
            ),
            (ControlError::Conflict("c".into()), 409, "conflict", "c"),
            (
                ControlError::Unavailable("slow".into()),
                503,
                "unavailable",
                "store unavailable: slow",
            ),
            (
                ControlError::Internal("bug".into()),
                500,
                "internal",
                "internal error: bug",
            ),
        ];
        for (error, code, reason, message) in cases {
            let body = ApiError::from(error).body();
            assert_eq!(body.error.code, code);
            assert_eq!(body.error.reason, reason);
            assert_eq!(body.error.message, message);
        }
    }

    #[test]
    fn unauthorized_names_the_scheme() {
        let response = ApiError::Unauthorized("no".into()).into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}
