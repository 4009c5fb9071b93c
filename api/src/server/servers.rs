//! `/v1/servers`.

use axum::Json;
use axum::extract::State;
use flotilla_proto::wire::ServerList;
use flotilla_scheduler::control::ControlPlane;

use super::{ApiError, AppState};

/// `GET /v1/servers`: every live server, and which one leads.
pub(super) async fn list<C: ControlPlane>(
    State(s): State<AppState<C>>,
) -> Result<Json<ServerList>, ApiError> {
    Ok(Json(s.control.list_servers().await?))
}
