//! `/fleet/v1/machines`: the machines, and their metadata changed with
//! fleet's JSON-patch operations, as fleet's `api/machines.go` serves them.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri};
use flotilla_proto::MachineId;
use flotilla_proto::fleet_v1::{FleetMachine, FleetMachinePage, MetadataOp, metadata_path};
use flotilla_proto::wire::MachinePatch;
use flotilla_scheduler::control::{ControlError, ControlPlane};

use super::super::extract::read_body;
use super::super::{ApiError, AppState};
use super::page;

/// `GET /fleet/v1/machines?nextPageToken=`: live machines in id order.
pub(in super::super) async fn list<C: ControlPlane>(
    State(s): State<AppState<C>>,
    uri: Uri,
) -> Result<Json<FleetMachinePage>, ApiError> {
    let page = s.control.list_machines(page(&uri)?).await?;
    Ok(Json(FleetMachinePage {
        machines: page
            .machines
            .into_iter()
            .map(|m| FleetMachine {
                id: m.machine.id.to_string(),
                primary_ip: m.primary_ip.unwrap_or_default(),
                metadata: m.machine.metadata,
            })
            .collect(),
        next_page_token: page.next_page_token.unwrap_or_default(),
    }))
}

/// `PATCH /fleet/v1/machines`: a JSON array of `{"op": "add" | "replace" |
/// "remove", "path": "/{machineID}/metadata/{key}", "value": {"value":
/// "..."}}`. Every operation is checked before any is applied; then each
/// machine's operations are applied together, in order. 204, or 404 for a
/// machine that is not live.
pub(in super::super) async fn patch<C: ControlPlane>(
    State(s): State<AppState<C>>,
    request: Request,
) -> Result<StatusCode, ApiError> {
    let body = read_body(request, &s).await?;
    let ops: Vec<MetadataOp> =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut patches: Vec<(String, MachinePatch)> = Vec::new();
    for op in &ops {
        if !matches!(op.op.as_str(), "add" | "remove" | "replace") {
            return Err(ApiError::BadRequest(
                "invalid op: expect add, remove, or replace".into(),
            ));
        }
        let Some((machine, key)) = metadata_path(&op.path) else {
            return Err(ApiError::BadRequest("machine metadata path invalid".into()));
        };
        if op.op != "remove" && op.value.value.is_empty() {
            return Err(ApiError::BadRequest(
                "invalid value: add and replace require a value".into(),
            ));
        }
        let value = (op.op != "remove").then(|| op.value.value.clone());
        match patches.iter_mut().find(|(m, _)| m == machine) {
            Some((_, patch)) => {
                patch.metadata.insert(key.to_owned(), value);
            }
            None => patches.push((
                machine.to_owned(),
                MachinePatch {
                    metadata: BTreeMap::from([(key.to_owned(), value)]),
                },
            )),
        }
    }
    // Checked for every machine before any is changed.
    for (_, patch) in &patches {
        patch.validate().map_err(ControlError::from)?;
    }
    for (machine, patch) in patches {
        let id = MachineId::parse(&machine).map_err(|_| machine_not_found(&machine))?;
        s.control
            .patch_machine(&id, patch)
            .await
            .map_err(|e| match e {
                ControlError::NotFound { .. } => machine_not_found(&machine),
                other => other.into(),
            })?;
    }
    Ok(StatusCode::NO_CONTENT)
}

fn machine_not_found(machine: &str) -> ApiError {
    ApiError::Control(ControlError::NotFound {
        what: format!("machine {machine}"),
    })
}
