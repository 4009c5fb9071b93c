//! `/v1/sync`: git sources the leader follows (docs/git-sync.md): made,
//! changed, paused, resumed and removed by operators, listed with what
//! each last did by anyone who may read the cluster.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use flotilla_proto::sync::{SourceInfo, SourceList, SourcePut};
use flotilla_scheduler::control::ControlPlane;

use super::extract::JsonBody;
use super::{ApiError, AppState};

/// `GET /v1/sync`: every source and what it last did, in name order.
pub(super) async fn list<C: ControlPlane>(
    State(s): State<AppState<C>>,
) -> Result<Json<SourceList>, ApiError> {
    Ok(Json(SourceList {
        sources: s.trust.sync.list().await?,
    }))
}

/// `GET /v1/sync/{name}`: one source and what it last did.
pub(super) async fn get<C: ControlPlane>(
    State(s): State<AppState<C>>,
    Path(name): Path<String>,
) -> Result<Json<SourceInfo>, ApiError> {
    Ok(Json(s.trust.sync.get(&name).await?))
}

/// `PUT /v1/sync/{name}`: makes a source (201) or changes it (200).
pub(super) async fn put<C: ControlPlane>(
    State(s): State<AppState<C>>,
    Path(name): Path<String>,
    JsonBody(put): JsonBody<SourcePut>,
) -> Result<(StatusCode, Json<SourceInfo>), ApiError> {
    let (info, created) = s.trust.sync.put(&name, &put).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(info)))
}

/// `POST /v1/sync/{name}/pause`: the leader stops following the source.
pub(super) async fn pause<C: ControlPlane>(
    State(s): State<AppState<C>>,
    Path(name): Path<String>,
) -> Result<Json<SourceInfo>, ApiError> {
    Ok(Json(s.trust.sync.set_paused(&name, true).await?))
}

/// `POST /v1/sync/{name}/resume`: the leader follows the source again.
pub(super) async fn resume<C: ControlPlane>(
    State(s): State<AppState<C>>,
    Path(name): Path<String>,
) -> Result<Json<SourceInfo>, ApiError> {
    Ok(Json(s.trust.sync.set_paused(&name, false).await?))
}

/// `DELETE /v1/sync/{name}`: removes the source; its units stay.
pub(super) async fn delete<C: ControlPlane>(
    State(s): State<AppState<C>>,
    Path(name): Path<String>,
) -> Result<Json<SourceInfo>, ApiError> {
    Ok(Json(s.trust.sync.remove(&name).await?))
}
