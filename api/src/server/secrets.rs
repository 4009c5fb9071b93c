//! `/v1/secrets`: secrets made, listed and removed by people (a value is
//! never read back), and `GET /v1/agent/machines/{id}/units/{unit}/secrets`:
//! the values an agent needs for a unit placed on its own machine.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use flotilla_proto::UnitName;
use flotilla_proto::UnitSpec;
use flotilla_proto::secret::{SecretInfo, SecretList, SecretPut, UnitSecrets, decode_value};
use flotilla_scheduler::control::ControlPlane;
use std::time::Duration;

use super::extract::{CallerOf, JsonBody, check_own_machine};
use super::{ApiError, AppState};

/// `GET /v1/secrets`: every secret, in name order, never a value.
pub(super) async fn list<C: ControlPlane>(
    State(s): State<AppState<C>>,
) -> Result<Json<SecretList>, ApiError> {
    Ok(Json(SecretList {
        secrets: s.trust.secrets.list().await?,
    }))
}

/// `PUT /v1/secrets/{name}`: makes a secret (201), or with `replace`
/// gives it a new value (200); answers with what is known of it.
pub(super) async fn put<C: ControlPlane>(
    State(s): State<AppState<C>>,
    Path(name): Path<String>,
    JsonBody(put): JsonBody<SecretPut>,
) -> Result<(StatusCode, Json<SecretInfo>), ApiError> {
    let value = decode_value(&put.value).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let (info, created) = s.trust.secrets.put(&name, &value, put.replace).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(info)))
}

/// `DELETE /v1/secrets/{name}`: removes a secret that no unit uses (409
/// otherwise); answers with what it was.
pub(super) async fn delete<C: ControlPlane>(
    State(s): State<AppState<C>>,
    Path(name): Path<String>,
) -> Result<Json<SecretInfo>, ApiError> {
    Ok(Json(s.trust.secrets.remove(&name).await?))
}

/// `GET /v1/agent/machines/{id}/units/{unit}/secrets`: the values of the
/// secrets unit `unit` uses, for the agent of machine `id` (the caller's
/// own), and only while the unit is in that machine's feed (placed there,
/// or a Global unit); 403 otherwise.
pub(super) async fn for_unit<C: ControlPlane>(
    State(s): State<AppState<C>>,
    CallerOf(caller): CallerOf,
    Path((id, unit)): Path<(String, String)>,
) -> Result<Json<UnitSecrets>, ApiError> {
    let id = flotilla_proto::MachineId::parse(&id).map_err(ApiError::InvalidMachineId)?;
    check_own_machine(&caller, &id)?;
    let name = UnitName::parse(&unit).map_err(ApiError::InvalidUnitName)?;
    let feed = s.control.machine_units(&id, None, Duration::ZERO).await?;
    let Some(assigned) = feed.units.iter().find(|u| u.name == name.as_str()) else {
        return Err(ApiError::Forbidden(format!(
            "unit {name} is not placed on machine {id}: its secrets go only to the machine that runs it"
        )));
    };
    let checked = UnitSpec::check_named(name.as_str(), &name, &assigned.text)
        .map_err(|e| ApiError::BadRequest(format!("the unit file is not valid: {e}")))?;
    let names = checked
        .spec
        .container
        .as_ref()
        .map(|c| c.secrets.names())
        .unwrap_or_default();
    Ok(Json(UnitSecrets {
        unit: name.to_string(),
        secrets: s.trust.secrets.values(&names).await?,
    }))
}
