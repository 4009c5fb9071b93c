//! fleet's v1 API at `/fleet/v1/`, for fleet's own clients (fleetctl, the
//! Python `fleet` client, scripts written against fleet): the routes,
//! fields, defaults, status codes and error messages of fleet 1.0's
//! `api/` package and `schema/v1.json`, served from the same control plane
//! as flotilla's `/v1/`.
//!
//! Where fleet and flotilla differ, fleet's semantics win here: a unit
//! created without a desired state is `inactive`; new contents for an
//! existing unit replace it (and reset its desired state, as fleet does);
//! unit options keep continued lines as written and the unit hash is
//! fleet's SHA-1 ([`flotilla_proto::fleet_v1::options`]). Where fleet
//! would store nonsense or answer 500 for a bad request (an unknown desired
//! state, an option value whose line ends would be read back as other
//! lines), flotilla answers 400 and stores nothing. Authentication and
//! roles apply as on `/v1/`: fleet's clients present a client certificate
//! signed by the cluster CA (docs/security.md).

mod machines;
mod state;
mod stopping;
mod units;

pub(crate) use stopping::Stopping;

pub(super) use machines::{list as list_machines, patch as patch_machines};
pub(super) use state::{get as get_state, list as list_states};
pub(super) use units::{
    delete as delete_unit, get as get_unit, list as list_units, put as put_unit,
};

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::{Uri, header};
use axum::response::IntoResponse;
use flotilla_proto::UnitName;
use flotilla_proto::fleet_v1::{self, FleetUnit, FleetUnitOption, PAGE_SIZE, UnitOption};
use flotilla_proto::state::DesiredState;
use flotilla_proto::value::parse_bool;
use flotilla_proto::wire::Unit;
use flotilla_scheduler::control::{ControlError, PageRequest};

use super::ApiError;

/// fleet's discovery document, as fleet 1.0 ships it (`schema/v1.json`,
/// Apache-2.0, (c) the fleet authors); its `rootUrl` is `$ENDPOINT/` on
/// purpose: clients put their own endpoint there.
const DISCOVERY: &str = include_str!("discovery.json");

/// `GET /fleet/v1/discovery`.
pub(super) async fn discovery() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DISCOVERY)
}

/// The `{name}` of a `/fleet/v1/` item route, as given: fleet checks
/// names itself, with its own rules and messages.
pub(super) struct ItemPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ItemPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(item)| ItemPath(item))
            .map_err(|e: PathRejection| ApiError::InvalidPath(e.body_text()))
    }
}

/// The first value of each query parameter, as fleet reads them; a query
/// that does not decode is a 400.
fn query_param(uri: &Uri, name: &str) -> Result<Option<String>, ApiError> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map_err(|e| ApiError::InvalidQuery(e.body_text()))?;
    Ok(pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v))
}

/// The page fleet's `nextPageToken` asks for, [`PAGE_SIZE`] items long.
/// The token is flotilla's own, opaque to fleet's clients as fleet's is.
fn page(uri: &Uri) -> Result<PageRequest, ApiError> {
    Ok(PageRequest {
        token: query_param(uri, "nextPageToken")?.filter(|t| !t.is_empty()),
        limit: Some(PAGE_SIZE),
    })
}

/// The unit `name` names, if fleet would take it as a unit name and it is
/// one of flotilla's, spelled the same (flotilla reads `web` as
/// `web.service`; fleet does not).
fn unit_name(name: &str) -> Option<UnitName> {
    fleet_v1::name::validate(name).ok()?;
    UnitName::parse(name)
        .ok()
        .filter(|parsed| parsed.as_str() == name)
}

/// fleet's 404 for a unit.
fn no_such_unit() -> ApiError {
    ApiError::Control(ControlError::NotFound {
        what: "unit".into(),
    })
}

/// A control-plane "not found" as fleet words it for a unit; any other
/// error as it is.
fn fleet_error(e: ControlError) -> ApiError {
    match e {
        ControlError::NotFound { .. } => no_such_unit(),
        other => ApiError::Control(other),
    }
}

/// The unit's options as fleet reads its file: continued lines kept. A
/// file fleet's reader refuses (one that came in through `/v1/`) shows
/// flotilla's reading.
fn options_of(unit: &Unit) -> Vec<UnitOption> {
    fleet_v1::options::parse(&unit.text).unwrap_or_else(|_| unit.options.clone())
}

/// Whether a unit is `Global`: its last `[X-Fleet] Global=` is true.
fn is_global(options: &[UnitOption]) -> bool {
    options
        .iter()
        .rfind(|o| o.section == "X-Fleet" && o.name == "Global")
        .and_then(|o| parse_bool(o.value.trim()))
        .unwrap_or(false)
}

/// A unit as fleet shows it. A Global unit has neither a current state nor
/// a machine (it has many); a template is `inactive`; a unit just set to
/// stop through this API shows `launched` a moment longer (see
/// [`stopping`]).
fn fleet_unit(unit: Unit, stopping: &Stopping) -> FleetUnit {
    let options = options_of(&unit);
    let global = is_global(&unit.options);
    let template = UnitName::parse(&unit.name).is_ok_and(|n| n.is_template());
    let current_state = if global {
        String::new()
    } else if template {
        DesiredState::Inactive.to_string()
    } else if unit.desired_state == DesiredState::Loaded && stopping.shows_launched(&unit.name) {
        DesiredState::Launched.to_string()
    } else {
        unit.current_state
            .map(|s| s.to_string())
            .unwrap_or_default()
    };
    let machine_id = match (&unit.machine_id, global) {
        (Some(id), false) => id.to_string(),
        _ => String::new(),
    };
    FleetUnit {
        name: unit.name,
        options: options.into_iter().map(FleetUnitOption::from).collect(),
        desired_state: unit.desired_state.to_string(),
        current_state,
        machine_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_fleet_and_flotilla_both_read_the_same() {
        assert!(unit_name("web.service").is_some());
        assert!(unit_name("web@1.service").is_some());
        // flotilla would read these as web.service; fleet has no such unit.
        assert!(unit_name("web").is_none());
        assert!(unit_name("web.bogus").is_none());
    }

    #[test]
    fn global_is_the_last_assignment() {
        let o = |v: &str| UnitOption {
            section: "X-Fleet".into(),
            name: "Global".into(),
            value: v.into(),
        };
        assert!(is_global(&[o("true")]));
        assert!(is_global(&[o("false"), o("yes")]));
        assert!(!is_global(&[o("true"), o("false")]));
        assert!(!is_global(&[]));
    }
}
