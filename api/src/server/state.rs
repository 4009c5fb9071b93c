//! `/v1/state`: observed unit states.

use axum::Json;
use axum::extract::State;
use flotilla_proto::wire::StatePage;
use flotilla_proto::{MachineId, UnitName};
use flotilla_scheduler::control::{ControlPlane, StateFilter};
use serde::Deserialize;

use super::extract::{PageParams, QueryParams};
use super::{ApiError, AppState};

/// The query of `GET /v1/state`, with fleet's parameter names.
#[derive(Debug, Default, Deserialize)]
pub(super) struct StateParams {
    #[serde(rename = "unitName")]
    unit_name: Option<String>,
    #[serde(rename = "machineID")]
    machine_id: Option<String>,
    #[serde(rename = "nextPageToken")]
    next_page_token: Option<String>,
    limit: Option<String>,
}

/// `GET /v1/state?unitName=&machineID=&nextPageToken=&limit=`.
pub(super) async fn list<C: ControlPlane>(
    State(s): State<AppState<C>>,
    QueryParams(params): QueryParams<StateParams>,
) -> Result<Json<StatePage>, ApiError> {
    let unit = match params.unit_name.as_deref() {
        None | Some("") => None,
        Some(name) => Some(UnitName::parse(name).map_err(ApiError::InvalidUnitName)?),
    };
    let machine = match params.machine_id.as_deref() {
        None | Some("") => None,
        Some(id) => Some(MachineId::parse(id).map_err(ApiError::InvalidMachineId)?),
    };
    let page = PageParams {
        next_page_token: params.next_page_token,
        limit: params.limit,
    }
    .page()?;
    let filter = StateFilter { unit, machine };
    Ok(Json(s.control.list_states(filter, page).await?))
}
