//! `/v1/rollouts`: rolling updates of units whose contents change together
//! (docs/rollouts.md). Starting one is one request for the whole group, so
//! that "change together" is one decision of the control plane.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use flotilla_proto::event::{Event, EventKind};
use flotilla_proto::rollout::{Rollout, RolloutList, RolloutRequest};
use flotilla_scheduler::control::ControlPlane;
use flotilla_scheduler::trust::now_ms;

use super::extract::{CallerOf, JsonBody};
use super::{ApiError, AppState};

/// `POST /v1/rollouts`: 201 with the rollout as it starts.
pub(super) async fn start<C: ControlPlane>(
    State(s): State<AppState<C>>,
    CallerOf(caller): CallerOf,
    JsonBody(request): JsonBody<RolloutRequest>,
) -> Result<(StatusCode, Json<Rollout>), ApiError> {
    let rollout = s.control.start_rollout(request).await?;
    let units: Vec<&str> = rollout.units.iter().map(|u| u.name.as_str()).collect();
    s.control.record_change(
        Event::new(EventKind::RolloutStarted, now_ms())
            .actor(caller.name.clone())
            .detail(format!(
                "rollout {} of {}: {} in {} waves of at most {}",
                rollout.id,
                rollout.group,
                if units.is_empty() {
                    "no launched unit to restart".to_owned()
                } else {
                    units.join(" ")
                },
                rollout.waves,
                rollout.settings.max_parallel
            )),
    );
    Ok((StatusCode::CREATED, Json(rollout)))
}

/// `GET /v1/rollouts`: the rollouts kept, oldest first.
pub(super) async fn list<C: ControlPlane>(
    State(s): State<AppState<C>>,
) -> Result<Json<RolloutList>, ApiError> {
    Ok(Json(s.control.list_rollouts().await?))
}

/// `GET /v1/rollouts/{name}`: a rollout by id, or the latest of a group.
pub(super) async fn get<C: ControlPlane>(
    State(s): State<AppState<C>>,
    Path(name): Path<String>,
) -> Result<Json<Rollout>, ApiError> {
    Ok(Json(s.control.get_rollout(&name).await?))
}
