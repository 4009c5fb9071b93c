//! `/fleet/v1/units` and `/fleet/v1/units/{name}`, as fleet's
//! `api/units.go` serves them.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use flotilla_proto::fleet_v1::options::{self, UnitHash};
use flotilla_proto::fleet_v1::{self, FleetUnit, FleetUnitPage, UnitOption};
use flotilla_proto::state::DesiredState;
use flotilla_proto::wire::UnitPut;
use flotilla_scheduler::control::{ControlError, ControlPlane};

use super::super::extract::{CallerOf, decode_body, read_body};
use super::super::{ApiError, AppState, events};
use super::{
    ItemPath, fleet_error, fleet_unit, no_such_unit, options_of, page, stopping, unit_name,
};

/// `GET /fleet/v1/units?nextPageToken=`: units in name order.
pub(in super::super) async fn list<C: ControlPlane>(
    State(s): State<AppState<C>>,
    uri: Uri,
) -> Result<Json<FleetUnitPage>, ApiError> {
    let page = s.control.list_units(page(&uri)?).await?;
    Ok(Json(FleetUnitPage {
        units: page
            .units
            .into_iter()
            .map(|u| fleet_unit(u, &s.stopping))
            .collect(),
        next_page_token: page.next_page_token.unwrap_or_default(),
    }))
}

/// `GET /fleet/v1/units/{name}`: the unit, or 404.
pub(in super::super) async fn get<C: ControlPlane>(
    State(s): State<AppState<C>>,
    ItemPath(item): ItemPath,
) -> Result<Json<FleetUnit>, ApiError> {
    let name = unit_name(&item).ok_or_else(no_such_unit)?;
    let unit = s.control.get_unit(&name).await.map_err(fleet_error)?;
    Ok(Json(fleet_unit(unit, &s.stopping)))
}

/// `DELETE /fleet/v1/units/{name}`: 204, or 404.
pub(in super::super) async fn delete<C: ControlPlane>(
    State(s): State<AppState<C>>,
    ItemPath(item): ItemPath,
    CallerOf(caller): CallerOf,
) -> Result<StatusCode, ApiError> {
    let name = unit_name(&item).ok_or_else(no_such_unit)?;
    s.control.delete_unit(&name).await.map_err(fleet_error)?;
    events::unit_destroyed(&s, &caller, &name);
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /fleet/v1/units/{name}`, fleet's `set`:
///
/// - a unit that does not exist is created from `options` (409 without
///   them), in `desiredState` or else `inactive`: 201;
/// - options that differ from an existing unit's (by fleet's hash) replace
///   its contents, and its desired state becomes `desiredState` or else
///   `inactive`, as in fleet: 201;
/// - otherwise only `desiredState` is set (409 without it; 400 for a
///   template asked to be other than `inactive`): 204.
pub(in super::super) async fn put<C: ControlPlane>(
    State(s): State<AppState<C>>,
    ItemPath(item): ItemPath,
    CallerOf(caller): CallerOf,
    request: Request,
) -> Result<StatusCode, ApiError> {
    check_content_type(request.headers())?;
    let body = read_body(request, &s).await?;
    let mut unit: FleetUnit = decode_body(&body).map_err(|e| match e {
        ApiError::InvalidJson(why) => ApiError::BadRequest(format!("unable to decode body: {why}")),
        other => other,
    })?;
    if unit.name.is_empty() {
        unit.name.clone_from(&item);
    }
    if unit.name != item {
        return Err(ApiError::BadRequest(format!(
            "name in URL {item:?} differs from unit name in request body {:?}",
            unit.name
        )));
    }
    fleet_v1::name::validate(&unit.name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    // A name fleet takes and flotilla cannot hold (a unit type flotilla
    // does not run) is refused with flotilla's reason.
    let name = flotilla_proto::UnitName::parse(&unit.name).map_err(ApiError::InvalidUnitName)?;
    let given: Vec<UnitOption> = unit.options.into_iter().map(UnitOption::from).collect();

    let existing = match s.control.get_unit(&name).await {
        Ok(u) => Some(u),
        Err(ControlError::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let new_contents = match &existing {
        None if given.is_empty() => {
            return Err(ControlError::Conflict(
                "unit does not exist and options field empty".into(),
            )
            .into());
        }
        None => true,
        Some(current) => {
            !given.is_empty() && UnitHash::of(&given) != UnitHash::of(&options_of(current))
        }
    };
    let desired = parse_desired(&unit.desired_state)?;
    if new_contents {
        let put = UnitPut {
            desired_state: Some(desired.unwrap_or(DesiredState::Inactive)),
            text: Some(text_of(&unit.name, &given)?),
            options: None,
            replace: true,
        };
        let change = events::UnitChange::of(&put);
        let outcome = s.control.put_unit(&name, put).await?;
        events::unit_put(&s, &caller, &name, change, outcome);
        return Ok(StatusCode::CREATED);
    }
    let Some(desired) = desired else {
        return Err(ControlError::Conflict(
            "must provide DesiredState to update existing unit".into(),
        )
        .into());
    };
    if name.is_template() && desired != DesiredState::Inactive {
        return Err(ApiError::BadRequest(format!(
            "cannot activate template {:?}",
            unit.name
        )));
    }
    let was_running = existing
        .as_ref()
        .is_some_and(|u| u.current_state == Some(DesiredState::Launched));
    if desired == DesiredState::Launched
        && let Some(current) = existing
    {
        // A start right after a stop (fleetctl's restart) starts the unit
        // once it has stopped.
        stopping::wait_for_stop(&*s.control, &name, current)
            .await
            .map_err(fleet_error)?;
    }
    let put = UnitPut {
        desired_state: Some(desired),
        ..UnitPut::default()
    };
    let change = events::UnitChange::of(&put);
    let outcome = s.control.put_unit(&name, put).await.map_err(fleet_error)?;
    events::unit_put(&s, &caller, &name, change, outcome);
    if desired == DesiredState::Loaded && was_running {
        s.stopping.record(&name);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// fleet's `validateContentType`: exactly one `Content-Type`, and it is
/// `application/json` (parameters aside).
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let values: Vec<_> = headers.get_all(header::CONTENT_TYPE).iter().collect();
    if values.len() != 1 {
        return Err(ApiError::ContentType(format!(
            "expected 1 Content-Type, got {}",
            values.len()
        )));
    }
    let value = String::from_utf8_lossy(values[0].as_bytes());
    if value.split(';').next().unwrap_or_default().trim() != "application/json" {
        return Err(ApiError::ContentType(
            "only acceptable Content-Type is application/json".into(),
        ));
    }
    Ok(())
}

/// `desiredState`: empty for none, else one of fleet's three states.
fn parse_desired(given: &str) -> Result<Option<DesiredState>, ApiError> {
    if given.is_empty() {
        return Ok(None);
    }
    given
        .parse()
        .map(Some)
        .map_err(|e: flotilla_proto::state::DesiredStateError| ApiError::BadRequest(e.to_string()))
}

/// The unit file fleet would write for `options`, provided fleet's reader
/// reads the same options back from it: an option whose value holds a line
/// end not continued with `\` (or whose name or section would read back
/// differently) is refused, naming it, rather than stored as something
/// else.
fn text_of(unit: &str, given: &[UnitOption]) -> Result<String, ApiError> {
    let text = options::serialize(given);
    let read_back = options::parse(&text).map_err(|e| {
        ApiError::BadRequest(format!(
            "unit {unit}: its options do not make a unit file: {e}"
        ))
    })?;
    if read_back != given {
        // The first option that does not read back as given.
        let culprit = given
            .iter()
            .enumerate()
            .find(|(i, g)| read_back.get(*i) != Some(*g))
            .map(|(_, g)| g)
            .or(given.last());
        let what = culprit
            .map(|o| {
                format!(
                    "option {} in [{}]",
                    o.name.escape_debug(),
                    o.section.escape_debug()
                )
            })
            .unwrap_or_else(|| "an option".into());
        return Err(ApiError::BadRequest(format!(
            "unit {unit}: {what} would not read back as given: a value may span lines only \
             where each line but the last ends in \\, and a name or section may not hold a line end or '='"
        )));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opt(section: &str, name: &str, value: &str) -> UnitOption {
        UnitOption {
            section: section.into(),
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn continued_values_become_a_file_and_bare_line_ends_are_refused() {
        let ok = [opt("Service", "ExecStart", "/bin/sh -c \\\n  'sleep 1'")];
        assert_eq!(
            text_of("a.service", &ok).unwrap(),
            "[Service]\nExecStart=/bin/sh -c \\\n  'sleep 1'\n"
        );
        let bad = [
            opt("Unit", "Description", "x"),
            opt("Service", "ExecStart", "/bin/true\nUser=root"),
        ];
        let e = text_of("a.service", &bad).unwrap_err().to_string();
        assert!(e.contains("option ExecStart in [Service]"), "{e}");
    }

    #[test]
    fn content_type_as_fleet_checks_it() {
        let mut h = HeaderMap::new();
        assert!(check_content_type(&h).is_err());
        h.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert!(check_content_type(&h).is_ok());
        h.append(header::CONTENT_TYPE, "application/json".parse().unwrap());
        assert_eq!(
            check_content_type(&h).unwrap_err().to_string(),
            "expected 1 Content-Type, got 2"
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "application/merge-patch+json".parse().unwrap(),
        );
        assert!(check_content_type(&h).is_err());
    }
}
