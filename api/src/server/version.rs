//! The version check of every request ([`crate::version`] has the rule):
//! a caller's `Flotilla-Version` header is checked before anything else,
//! and every answer carries the server's own version in the same header.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::version::{self, MIN_AGENT_VERSION, Version};

/// Where agents call: the agent rule applies there, the client rule
/// elsewhere.
const AGENT_PREFIX: &str = "/v1/agent/";

/// Refuses a caller whose version this server does not serve (426), or
/// whose header is not a version (400); passes requests without one.
pub(super) async fn check(request: Request, next: Next) -> Response {
    let mut response = match refusal(&request) {
        Some(e) => e.into_response(),
        None => next.run(request).await,
    };
    response
        .headers_mut()
        .insert(version::HEADER, HeaderValue::from_static(version::VERSION));
    response
}

fn refusal(request: &Request) -> Option<ApiError> {
    let header = request.headers().get(version::HEADER)?;
    let caller = match header
        .to_str()
        .map_err(|_| ())
        .and_then(|s| Version::parse(s).map_err(|_| ()))
    {
        Ok(v) => v,
        Err(()) => {
            return Some(ApiError::InvalidVersion(format!(
                "the {} header is not a flotilla version (MAJOR.MINOR.PATCH): {:?}",
                "Flotilla-Version",
                String::from_utf8_lossy(header.as_bytes())
                    .chars()
                    .take(64)
                    .collect::<String>()
            )));
        }
    };
    let server = Version::current();
    let checked = if request.uri().path().starts_with(AGENT_PREFIX) {
        version::check_agent(caller, server, MIN_AGENT_VERSION)
    } else {
        version::check_client(caller, server)
    };
    checked.err().map(ApiError::VersionIncompatible)
}

/// The version an agent registers its machine with, when it is one: the
/// same agent rule as the header's. Other strings (development builds,
/// simulators) are registered as they are.
pub(super) fn check_registration(agent_version: &str) -> Result<(), ApiError> {
    let Ok(agent) = Version::parse(agent_version) else {
        return Ok(());
    };
    version::check_agent(agent, Version::current(), MIN_AGENT_VERSION)
        .map_err(ApiError::VersionIncompatible)
}
