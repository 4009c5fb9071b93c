//! `/fleet/v1/state` and `/fleet/v1/state/{name}`: what machines report of
//! their units, as fleet's `api/state.go` serves it.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::Uri;
use flotilla_proto::fleet_v1::options::UnitHash;
use flotilla_proto::fleet_v1::{FleetUnitState, FleetUnitStatePage};
use flotilla_proto::state::UnitState;
use flotilla_proto::wire::Unit;
use flotilla_proto::{MachineId, UnitName};
use flotilla_scheduler::control::{ControlError, ControlPlane, PageRequest, StateFilter};

use super::super::{ApiError, AppState};
use super::{ItemPath, options_of, page, query_param, unit_name};

/// `GET /fleet/v1/state?machineID=&unitName=&nextPageToken=`. A filter
/// that names no unit or machine fleet would have matches nothing, as in
/// fleet.
pub(in super::super) async fn list<C: ControlPlane>(
    State(s): State<AppState<C>>,
    uri: Uri,
) -> Result<Json<FleetUnitStatePage>, ApiError> {
    let page = page(&uri)?;
    let unit = match query_param(&uri, "unitName")?.filter(|v| !v.is_empty()) {
        None => None,
        Some(name) => match unit_name(&name) {
            Some(n) => Some(n),
            None => return Ok(Json(FleetUnitStatePage::default())),
        },
    };
    let machine = match query_param(&uri, "machineID")?.filter(|v| !v.is_empty()) {
        None => None,
        Some(id) => match MachineId::parse(&id) {
            Ok(m) if m.to_string() == id => Some(m),
            _ => return Ok(Json(FleetUnitStatePage::default())),
        },
    };
    let listed = s
        .control
        .list_states(StateFilter { unit, machine }, page)
        .await?;
    let mut hashes = Hashes::default();
    let mut states = Vec::with_capacity(listed.states.len());
    for state in listed.states {
        states.push(hashes.fleet_state(&*s.control, state).await?);
    }
    Ok(Json(FleetUnitStatePage {
        states,
        next_page_token: listed.next_page_token.unwrap_or_default(),
    }))
}

/// `GET /fleet/v1/state/{name}`: the unit's state on its machine (for a
/// Global unit, on the first machine that reports it), or 404.
pub(in super::super) async fn get<C: ControlPlane>(
    State(s): State<AppState<C>>,
    ItemPath(item): ItemPath,
) -> Result<Json<FleetUnitState>, ApiError> {
    let not_found = || {
        ApiError::Control(ControlError::NotFound {
            what: "unit state".into(),
        })
    };
    let name = unit_name(&item).ok_or_else(not_found)?;
    let unit = match s.control.get_unit(&name).await {
        Ok(unit) => unit,
        Err(ControlError::NotFound { .. }) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    let placed = unit.machine_id.clone();
    let mut hashes = Hashes::default();
    hashes.know(&name, &unit);
    let filter = StateFilter {
        unit: Some(name),
        machine: None,
    };
    let listed = s
        .control
        .list_states(filter, PageRequest::default())
        .await?;
    let mut reported = listed.states;
    let at = placed
        .and_then(|m| reported.iter().position(|st| st.machine == m))
        .unwrap_or(0);
    if reported.is_empty() {
        return Err(not_found());
    }
    let state = reported.swap_remove(at);
    Ok(Json(hashes.fleet_state(&*s.control, state).await?))
}

/// fleet's hash of each unit's current file, looked up once per unit.
#[derive(Default)]
struct Hashes {
    /// flotilla's hash of the unit's current file, and fleet's.
    known: HashMap<UnitName, Option<(String, String)>>,
}

impl Hashes {
    /// Remembers the hashes of `unit`'s current file.
    fn know(&mut self, name: &UnitName, unit: &Unit) {
        let fleet = UnitHash::of(&options_of(unit)).to_string();
        self.known
            .insert(name.clone(), Some((unit.hash.clone(), fleet)));
    }

    /// A reported state as fleet shows it. The hash is fleet's SHA-1 of the
    /// file the machine runs when that is the unit's current file; a
    /// machine still running an older file shows flotilla's hash of it,
    /// which fleet's clients show as a different hash, as it is.
    async fn fleet_state<C: ControlPlane>(
        &mut self,
        control: &C,
        state: UnitState,
    ) -> Result<FleetUnitState, ApiError> {
        if !self.known.contains_key(&state.unit) {
            match control.get_unit(&state.unit).await {
                Ok(unit) => self.know(&state.unit, &unit),
                Err(ControlError::NotFound { .. }) => {
                    self.known.insert(state.unit.clone(), None);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let hash = match (self.known.get(&state.unit), &state.hash) {
            (Some(Some((current, fleet))), Some(reported)) if current == reported => fleet.clone(),
            (_, reported) => reported.clone().unwrap_or_default(),
        };
        Ok(FleetUnitState {
            name: state.unit.to_string(),
            hash,
            machine_id: state.machine.to_string(),
            systemd_load_state: state.load_state,
            systemd_active_state: state.active_state,
            systemd_sub_state: state.sub_state,
        })
    }
}
