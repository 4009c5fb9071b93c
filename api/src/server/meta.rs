//! The API about itself: `/v1/openapi.json` and `/healthz`.

use axum::http::header;
use axum::response::IntoResponse;

/// `GET /v1/openapi.json`: the OpenAPI 3 document of every route.
pub(super) async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], crate::OPENAPI)
}

/// `GET /healthz`: `ok` while the process serves HTTP. It does not ask the
/// store, so that a slow store does not get the server restarted.
pub(super) async fn health() -> &'static str {
    "ok"
}
