//! `/v1/watch`: wait for any change to units, assignments or states.

use axum::Json;
use axum::extract::State;
use flotilla_scheduler::control::ControlPlane;

use super::extract::{Drain, PollParams, QueryParams};
use super::routes::Endpoint;
use super::{ApiError, AppState};
use crate::wire::WatchIndex;

/// `GET /v1/watch?index=N&wait=SECONDS`: answers with the store revision
/// once something changed after `index` (0 when absent: answers at once),
/// or when `wait` passed. A server shutting down answers at once with
/// `index` itself, as if the wait had passed.
pub(super) async fn watch<C: ControlPlane>(
    State(s): State<AppState<C>>,
    drain: Drain,
    QueryParams(params): QueryParams<PollParams>,
) -> Result<Json<WatchIndex>, ApiError> {
    let index = params.index()?.unwrap_or(0);
    let wait = params.wait(&s.config)?;
    let _open = (index > 0).then(|| s.metrics.long_poll(Endpoint::Watch));
    let index = tokio::select! {
        changed = s.control.wait_for_change(index, wait) => changed?,
        () = drain.started() => index,
    };
    Ok(Json(WatchIndex { index }))
}
