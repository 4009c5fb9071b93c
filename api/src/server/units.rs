//! `/v1/units` and `/v1/units/{name}`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use flotilla_proto::wire::{Unit, UnitPage, UnitPut};
use flotilla_scheduler::control::{ControlPlane, PutOutcome};

use super::extract::{CallerOf, JsonBody, PageParams, QueryParams, UnitPath};
use super::{ApiError, AppState, events};

/// `GET /v1/units?nextPageToken=&limit=`: units in name order.
pub(super) async fn list<C: ControlPlane>(
    State(s): State<AppState<C>>,
    QueryParams(params): QueryParams<PageParams>,
) -> Result<Json<UnitPage>, ApiError> {
    let page = params.page()?;
    Ok(Json(s.control.list_units(page).await?))
}

/// `GET /v1/units/{name}`: the unit, or 404.
pub(super) async fn get<C: ControlPlane>(
    State(s): State<AppState<C>>,
    UnitPath(name): UnitPath,
) -> Result<Json<Unit>, ApiError> {
    Ok(Json(s.control.get_unit(&name).await?))
}

/// `PUT /v1/units/{name}`: 201 when the unit was created, 204 when it
/// existed.
pub(super) async fn put<C: ControlPlane>(
    State(s): State<AppState<C>>,
    UnitPath(name): UnitPath,
    CallerOf(caller): CallerOf,
    JsonBody(put): JsonBody<UnitPut>,
) -> Result<StatusCode, ApiError> {
    if put.options.is_some() && put.text.is_some() {
        return Err(ApiError::BadRequest(format!(
            "unit {name}: give its contents as options or as text, not both"
        )));
    }
    let change = events::UnitChange::of(&put);
    let outcome = s.control.put_unit(&name, put).await?;
    events::unit_put(&s, &caller, &name, change, outcome);
    Ok(match outcome {
        PutOutcome::Created => StatusCode::CREATED,
        PutOutcome::Updated | PutOutcome::Unchanged => StatusCode::NO_CONTENT,
    })
}

/// `DELETE /v1/units/{name}`: 204, or 404.
pub(super) async fn delete<C: ControlPlane>(
    State(s): State<AppState<C>>,
    UnitPath(name): UnitPath,
    CallerOf(caller): CallerOf,
) -> Result<StatusCode, ApiError> {
    s.control.delete_unit(&name).await?;
    events::unit_destroyed(&s, &caller, &name);
    Ok(StatusCode::NO_CONTENT)
}
