//! `/v1/machines` and `/v1/machines/{id}`.

use axum::Json;
use axum::extract::State;
use flotilla_proto::wire::{MachinePage, MachinePatch, MachineResource};
use flotilla_scheduler::control::ControlPlane;

use super::extract::{JsonBody, MachinePath, PageParams, QueryParams};
use super::{ApiError, AppState};

/// `GET /v1/machines?nextPageToken=&limit=`: live machines in id order.
pub(super) async fn list<C: ControlPlane>(
    State(s): State<AppState<C>>,
    QueryParams(params): QueryParams<PageParams>,
) -> Result<Json<MachinePage>, ApiError> {
    let page = params.page()?;
    Ok(Json(s.control.list_machines(page).await?))
}

/// `PATCH /v1/machines/{id}`: sets metadata keys, removes those given as
/// `null`; answers with the machine.
pub(super) async fn patch<C: ControlPlane>(
    State(s): State<AppState<C>>,
    MachinePath(id): MachinePath,
    JsonBody(patch): JsonBody<MachinePatch>,
) -> Result<Json<MachineResource>, ApiError> {
    Ok(Json(s.control.patch_machine(&id, patch).await?))
}
