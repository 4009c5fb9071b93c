//! `/v1/agent/...`: what agents call to register their machine, keep it
//! alive, learn their units and report what systemd says.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use flotilla_proto::Machine;
use flotilla_proto::wire::{Heartbeat, MachineUnits, Registration, StateReport};
use flotilla_scheduler::control::ControlPlane;

use super::extract::{
    CallerOf, Drain, JsonBody, OwnMachinePath, PollParams, QueryParams, check_own_machine,
};
use super::routes::Endpoint;
use super::{ApiError, AppState};

/// `POST /v1/agent/machines`: registers the machine of the body, which
/// must be the caller's own, on a new lease; 426 for an agent version this
/// server does not register (`crate::version`).
pub(super) async fn register<C: ControlPlane>(
    State(s): State<AppState<C>>,
    CallerOf(caller): CallerOf,
    JsonBody(machine): JsonBody<Machine>,
) -> Result<Json<Registration>, ApiError> {
    check_own_machine(&caller, &machine.id)?;
    super::version::check_registration(&machine.agent_version)?;
    Ok(Json(s.control.register_machine(machine).await?))
}

/// `POST /v1/agent/machines/{id}/heartbeat`: keeps the lease alive; 404
/// when it expired and the agent must register again.
pub(super) async fn heartbeat<C: ControlPlane>(
    State(s): State<AppState<C>>,
    OwnMachinePath(id): OwnMachinePath,
    JsonBody(beat): JsonBody<Heartbeat>,
) -> Result<Json<Registration>, ApiError> {
    Ok(Json(s.control.heartbeat(&id, beat.lease).await?))
}

/// `GET /v1/agent/machines/{id}/units?index=N&wait=SECONDS`: the machine's
/// units; with `index`, once something for it changed after that revision
/// or `wait` passed. A server shutting down answers long polls at once
/// with the units as they are.
pub(super) async fn units<C: ControlPlane>(
    State(s): State<AppState<C>>,
    OwnMachinePath(id): OwnMachinePath,
    drain: Drain,
    QueryParams(params): QueryParams<PollParams>,
) -> Result<Json<MachineUnits>, ApiError> {
    let index = params.index()?;
    let wait = params.wait(&s.config)?;
    let _open = index
        .is_some_and(|i| i > 0)
        .then(|| s.metrics.long_poll(Endpoint::MachineUnits));
    let units = tokio::select! {
        units = s.control.machine_units(&id, index, wait) => units?,
        () = drain.started() => s.control.machine_units(&id, None, Duration::ZERO).await?,
    };
    Ok(Json(units))
}

/// `PUT /v1/agent/machines/{id}/state`: records the states of the report,
/// each of which must be about this machine; 204.
pub(super) async fn report_states<C: ControlPlane>(
    State(s): State<AppState<C>>,
    OwnMachinePath(id): OwnMachinePath,
    JsonBody(report): JsonBody<StateReport>,
) -> Result<StatusCode, ApiError> {
    if let Some(other) = report.states.iter().find(|st| st.machine != id) {
        return Err(ApiError::BadRequest(format!(
            "the state of unit {} is reported for machine {}, not for {id} as the path says",
            other.unit, other.machine
        )));
    }
    s.control.report_states(&id, report).await?;
    Ok(StatusCode::NO_CONTENT)
}
