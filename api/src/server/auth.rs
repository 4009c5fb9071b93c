//! Bearer-token auth of the `/v1/` routes.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// Lets a request through when it is outside `/v1/` (`/healthz`) or
/// carries `Authorization: Bearer TOKEN` with the server's token; answers
/// 401 otherwise.
pub(super) async fn require_token(
    State(token): State<Arc<str>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let protected = path == "/v1" || path.starts_with("/v1/");
    if protected && !carries_token(&request, &token) {
        return ApiError::Unauthorized.into_response();
    }
    next.run(request).await
}

fn carries_token(request: &Request, token: &str) -> bool {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return false;
    };
    let Some((scheme, given)) = value.to_str().unwrap_or_default().split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer")
        && constant_time_eq(given.trim().as_bytes(), token.as_bytes())
}

/// Compares without returning early at the first differing byte, so that
/// the time taken does not tell how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_tokens() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
