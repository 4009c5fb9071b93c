//! Extractors that turn a request into typed values, refusing with an
//! [`ApiError`] (and so a JSON error body) where axum's own would answer
//! in plain text.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use flotilla_proto::{MachineId, UnitName};
use flotilla_scheduler::control::{ControlPlane, PageRequest};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::auth::Caller;
use super::{ApiConfig, ApiError, AppState};
use flotilla_scheduler::trust::Identity;

/// A JSON request body: refused with 415 unless declared
/// `application/json` (or `+json`), 413 over the body limit, 400 unless it
/// is a JSON object that decodes as `T` (serde would otherwise read a
/// struct from an array, so that `[]` passed as an empty request).
pub(crate) struct JsonBody<T>(pub T);

impl<C: ControlPlane, T: DeserializeOwned> FromRequest<AppState<C>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState<C>) -> Result<Self, ApiError> {
        check_json_content_type(req.headers())?;
        let bytes = read_body(req, state).await?;
        decode_body(&bytes).map(JsonBody)
    }
}

/// The whole request body: 413 over the body limit (refused before a
/// byte is read when the request announces it), 408 when it does not
/// arrive within the body timeout.
pub(crate) async fn read_body<C: ControlPlane>(
    req: Request,
    state: &AppState<C>,
) -> Result<Bytes, ApiError> {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > state.config.body_limit as u64) {
        return Err(ApiError::PayloadTooLarge {
            limit: state.config.body_limit,
        });
    }
    let timeout = state.config.http.body_read_timeout;
    let read = tokio::time::timeout(timeout, Bytes::from_request(req, state))
        .await
        .map_err(|_| ApiError::BodyTimeout {
            seconds: timeout.as_secs(),
        })?;
    read.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge {
                limit: state.config.body_limit,
            }
        } else {
            ApiError::BodyUnreadable(lower_first(&e.body_text()))
        }
    })
}

/// A request body as `T`: a JSON object that decodes as `T`, or 400.
/// serde_json stops at 128 levels of nesting, so a deep body is an error,
/// not a deep recursion.
pub(crate) fn decode_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    check_object(bytes)?;
    serde_json::from_slice(bytes).map_err(|e| ApiError::InvalidJson(e.to_string()))
}

/// Refuses a body that is not a JSON object, before decoding it: every
/// request body of the API is one.
fn check_object(body: &[u8]) -> Result<(), ApiError> {
    let first = body
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    let found = match first {
        Some(b'{') => return Ok(()),
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b'-' | b'0'..=b'9') => "a number",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        Some(_) => "not JSON",
        None => "empty",
    };
    Err(ApiError::InvalidJson(format!(
        "the request body must be a JSON object, and it is {found}"
    )))
}

fn check_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let found = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let is_json = found.as_deref().is_some_and(|v| {
        let essence = v
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        essence == "application/json"
            || (essence.starts_with("application/") && essence.ends_with("+json"))
    });
    if is_json {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType { found })
    }
}

/// The query string, decoded into a struct of `Option<String>` fields
/// whose values the handler then parses with the helpers below, so that a
/// bad value is named in the error.
pub(crate) struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(q)| QueryParams(q))
            .map_err(|e| ApiError::InvalidQuery(lower_first(&e.body_text())))
    }
}

/// The `{name}` of a unit route, validated as a unit name (a name without
/// a type suffix means a service).
pub(crate) struct UnitPath(pub UnitName);

impl<S: Send + Sync> FromRequestParts<S> for UnitPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(path_error)?;
        UnitName::parse(&raw)
            .map(UnitPath)
            .map_err(ApiError::InvalidUnitName)
    }
}

/// The `{id}` of a machine route, validated as a machine id.
pub(crate) struct MachinePath(pub MachineId);

impl<S: Send + Sync> FromRequestParts<S> for MachinePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(path_error)?;
        MachineId::parse(&raw)
            .map(MachinePath)
            .map_err(ApiError::InvalidMachineId)
    }
}

/// The `{id}` of `DELETE /v1/servers/{id}`: a raft id, a number from 1.
pub(crate) struct RaftIdPath(pub u64);

impl<S: Send + Sync> FromRequestParts<S> for RaftIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(path_error)?;
        match raw.parse::<u64>() {
            Ok(id) if id >= 1 => Ok(RaftIdPath(id)),
            _ => Err(ApiError::InvalidPath(format!(
                "{raw:?} is not a server id (a number from 1)"
            ))),
        }
    }
}

/// The `{id}` of an agent route, which must be the machine the caller's
/// credential acts as (403 otherwise).
pub(crate) struct OwnMachinePath(pub MachineId);

impl<S: Send + Sync> FromRequestParts<S> for OwnMachinePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let MachinePath(id) = MachinePath::from_request_parts(parts, state).await?;
        let CallerOf(caller) = CallerOf::from_request_parts(parts, state).await?;
        check_own_machine(&caller, &id)?;
        Ok(OwnMachinePath(id))
    }
}

/// Refuses (403) unless `caller` is the credential of machine `id`.
pub(crate) fn check_own_machine(caller: &Identity, id: &MachineId) -> Result<(), ApiError> {
    match &caller.machine {
        Some(own) if own == id => Ok(()),
        Some(own) => Err(ApiError::Forbidden(format!(
            "{} acts as machine {own} only, not {id}",
            caller.describe()
        ))),
        None => Err(ApiError::Forbidden(format!(
            "{} is not a machine's credential",
            caller.describe()
        ))),
    }
}

/// The caller that the route's guard let through.
pub(crate) struct CallerOf(pub Identity);

impl<S: Send + Sync> FromRequestParts<S> for CallerOf {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .map(|c| CallerOf(c.0.clone()))
            // Every route but the public ones is guarded: a handler that
            // asks for its caller on a public route is a bug.
            .ok_or_else(|| ApiError::Unauthorized("this route needs a credential".into()))
    }
}

fn path_error(e: PathRejection) -> ApiError {
    ApiError::InvalidPath(lower_first(&e.body_text()))
}

/// Set by [`serve`](super::serve) on every request: becomes `true` when
/// the server starts shutting down, so that long polls answer at once.
#[derive(Debug, Clone)]
pub(crate) struct Draining(pub watch::Receiver<bool>);

/// The drain signal of this request, when it is served by
/// [`serve`](super::serve) (a router driven another way never drains).
pub(crate) struct Drain(Option<watch::Receiver<bool>>);

impl Drain {
    /// Completes when the server starts shutting down; never otherwise.
    pub(crate) async fn started(self) {
        if let Some(mut rx) = self.0
            && rx.wait_for(|draining| *draining).await.is_ok()
        {
            return;
        }
        std::future::pending::<()>().await;
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Drain {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Drain(
            parts.extensions.get::<Draining>().map(|d| d.0.clone()),
        ))
    }
}

/// `nextPageToken` and `limit`, as every listing takes them.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PageParams {
    pub next_page_token: Option<String>,
    pub limit: Option<String>,
}

impl PageParams {
    /// The page asked for. A `limit` beyond what any page holds (however
    /// many digits) means the largest page; the control plane caps it.
    pub(crate) fn page(self) -> Result<PageRequest, ApiError> {
        let limit = match self.limit.as_deref() {
            None | Some("") => None,
            Some(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                match s.parse::<usize>() {
                    Ok(0) => return Err(bad_limit(s)),
                    Ok(n) => Some(n),
                    // Only digits, too many for a usize: a huge limit.
                    Err(_) if s.bytes().any(|b| b != b'0') => Some(usize::MAX),
                    Err(_) => return Err(bad_limit(s)),
                }
            }
            Some(s) => return Err(bad_limit(s)),
        };
        Ok(PageRequest {
            token: self.next_page_token.filter(|t| !t.is_empty()),
            limit,
        })
    }
}

fn bad_limit(s: &str) -> ApiError {
    ApiError::InvalidQuery(format!(
        "limit must be a positive integer, not {}",
        flotilla_proto::field::excerpt(s)
    ))
}

/// `index` and `wait` of a long poll.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct PollParams {
    pub index: Option<String>,
    pub wait: Option<String>,
}

impl PollParams {
    /// The store revision to wait past, when given.
    pub(crate) fn index(&self) -> Result<Option<i64>, ApiError> {
        match self.index.as_deref() {
            None | Some("") => Ok(None),
            Some(s) => match s.parse::<i64>() {
                Ok(n) if n >= 0 => Ok(Some(n)),
                _ => Err(ApiError::InvalidQuery(format!(
                    "index must be a store revision (an integer of 0 or more), not {}",
                    flotilla_proto::field::excerpt(s)
                ))),
            },
        }
    }

    /// How long to wait, in seconds (fractions allowed): the configured
    /// default when absent, capped at the configured maximum (also when it
    /// is too large to be a duration at all).
    pub(crate) fn wait(&self, config: &ApiConfig) -> Result<Duration, ApiError> {
        match self.wait.as_deref() {
            None | Some("") => Ok(config.default_wait.min(config.max_wait)),
            Some(s) => match s.parse::<f64>() {
                Ok(secs) if secs.is_finite() && secs >= 0.0 => {
                    Ok(Duration::try_from_secs_f64(secs)
                        .map_or(config.max_wait, |d| d.min(config.max_wait)))
                }
                _ => Err(ApiError::InvalidQuery(format!(
                    "wait must be a number of seconds of 0 or more, not {}",
                    flotilla_proto::field::excerpt(s)
                ))),
            },
        }
    }
}

/// axum's rejection texts start with a capital; ours do not.
fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn poll(index: Option<&str>, wait: Option<&str>) -> PollParams {
        PollParams {
            index: index.map(str::to_owned),
            wait: wait.map(str::to_owned),
        }
    }

    #[test]
    fn waits_default_and_cap() {
        let config = ApiConfig::default();
        assert_eq!(poll(None, None).wait(&config).unwrap(), config.default_wait);
        assert_eq!(
            poll(None, Some("0.25")).wait(&config).unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            poll(None, Some("3600")).wait(&config).unwrap(),
            config.max_wait
        );
        // Too long to be a duration is still "as long as allowed".
        assert_eq!(
            poll(None, Some("1e30")).wait(&config).unwrap(),
            config.max_wait
        );
        for bad in ["-1", "soon", "NaN", "inf"] {
            assert!(poll(None, Some(bad)).wait(&config).is_err(), "{bad}");
        }
    }

    #[test]
    fn indexes() {
        assert_eq!(poll(None, None).index().unwrap(), None);
        assert_eq!(poll(Some("7"), None).index().unwrap(), Some(7));
        assert!(poll(Some("-7"), None).index().is_err());
        assert!(poll(Some("x"), None).index().is_err());
    }

    #[test]
    fn limits() {
        let page = |limit: &str| {
            PageParams {
                next_page_token: Some("t".into()),
                limit: Some(limit.into()),
            }
            .page()
        };
        assert_eq!(
            page("5").unwrap(),
            PageRequest {
                token: Some("t".into()),
                limit: Some(5)
            }
        );
        assert!(page("0").is_err());
        assert!(page("000").is_err());
        assert!(page("many").is_err());
        assert!(page("-5").is_err());
        assert!(page("+5").is_err());
        // A limit of 10^30 is a request for the largest page.
        assert_eq!(
            page(&format!("1{}", "0".repeat(30))).unwrap().limit,
            Some(usize::MAX)
        );
    }

    #[test]
    fn bodies_must_be_objects() {
        assert!(check_object(b" \n{\"a\": 1}").is_ok());
        for (body, found) in [
            (&b"[]"[..], "an array"),
            (b" [{}]", "an array"),
            (b"\"x\"", "a string"),
            (b"12", "a number"),
            (b"true", "a boolean"),
            (b"null", "null"),
            (b"", "empty"),
            (b"<xml/>", "not JSON"),
        ] {
            let e = check_object(body).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "request body is not valid for this route: the request body must be a JSON object, and it is {found}"
                )
            );
            assert_eq!(e.status_and_reason().1, "invalid_json");
        }
    }

    #[test]
    fn json_content_types() {
        let check = |v: Option<&'static str>| {
            let mut headers = HeaderMap::new();
            if let Some(v) = v {
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
            }
            check_json_content_type(&headers).is_ok()
        };
        assert!(check(Some("application/json")));
        assert!(check(Some("Application/JSON; charset=utf-8")));
        assert!(check(Some("application/merge-patch+json")));
        assert!(!check(Some("text/plain")));
        assert!(!check(Some("json")));
        assert!(!check(None));
    }
}
