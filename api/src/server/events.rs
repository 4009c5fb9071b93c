//! `/v1/events`: the cluster's history, as pages or followed (long poll);
//! and the events of changes people make through the API, with the name
//! of their credential.

use axum::Json;
use axum::extract::State;
use flotilla_proto::event::{Event, EventKind, EventPage};
use flotilla_proto::wire::UnitPut;
use flotilla_proto::{DesiredState, UnitName};
use flotilla_scheduler::control::{ControlPlane, EventFilter, PutOutcome};
use flotilla_scheduler::trust::{Identity, now_ms};
use serde::Deserialize;

use super::extract::{Drain, PageParams, PollParams, QueryParams};
use super::{ApiError, AppState};

/// The query of `GET /v1/events`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct EventParams {
    since_ms: Option<String>,
    unit: Option<String>,
    machine: Option<String>,
    next_page_token: Option<String>,
    limit: Option<String>,
    index: Option<String>,
    wait: Option<String>,
}

/// `GET /v1/events?sinceMs=&unit=&machine=&limit=&nextPageToken=`: a page
/// of events, oldest first. With `index=N` (and `wait=SECONDS`), the events
/// written after store revision N instead, waiting for the first; a server
/// shutting down answers at once with none and `index` N.
pub(super) async fn list<C: ControlPlane>(
    State(s): State<AppState<C>>,
    drain: Drain,
    QueryParams(params): QueryParams<EventParams>,
) -> Result<Json<EventPage>, ApiError> {
    let since_ms = match params.since_ms.as_deref() {
        None | Some("") => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            ApiError::InvalidQuery(format!(
                "sinceMs must be milliseconds since the Unix epoch, not {}",
                flotilla_proto::field::excerpt(v)
            ))
        })?),
    };
    let unit = match params.unit.as_deref() {
        None | Some("") => None,
        Some(name) => Some(UnitName::parse(name).map_err(ApiError::InvalidUnitName)?),
    };
    let machine = match params.machine.as_deref() {
        None | Some("") => None,
        Some(m) if m.len() <= 32 && m.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(m.to_ascii_lowercase())
        }
        Some(m) => {
            return Err(ApiError::InvalidQuery(format!(
                "machine must be a machine id or the start of one (hex digits), not {}",
                flotilla_proto::field::excerpt(m)
            )));
        }
    };
    let filter = EventFilter {
        since_ms,
        unit,
        machine,
    };
    let page = PageParams {
        next_page_token: params.next_page_token,
        limit: params.limit,
    }
    .page()?;
    let poll = PollParams {
        index: params.index,
        wait: params.wait,
    };
    let Some(index) = poll.index()? else {
        return Ok(Json(s.control.list_events(filter, page).await?));
    };
    if page.token.is_some() {
        return Err(ApiError::InvalidQuery(
            "give index (to follow) or nextPageToken (to page), not both".into(),
        ));
    }
    let wait = poll.wait(&s.config)?;
    tokio::select! {
        page = s.control.follow_events(filter, index, wait, page.limit) => Ok(Json(page?)),
        () = drain.started() => Ok(Json(EventPage {
            index,
            ..EventPage::default()
        })),
    }
}

/// What a `PUT` of a unit asked for, kept before the put consumes it.
#[derive(Debug, Clone, Copy)]
pub(super) struct UnitChange {
    contents: bool,
    desired: Option<DesiredState>,
}

impl UnitChange {
    pub(super) fn of(put: &UnitPut) -> UnitChange {
        UnitChange {
            contents: put.text.is_some() || put.options.is_some(),
            desired: put.desired_state,
        }
    }
}

/// Records that `caller` created or changed unit `name` as `change` says,
/// unless the put changed nothing.
pub(super) fn unit_put<C: ControlPlane>(
    s: &AppState<C>,
    caller: &Identity,
    name: &UnitName,
    change: UnitChange,
    outcome: PutOutcome,
) {
    let created = match outcome {
        PutOutcome::Created => true,
        PutOutcome::Updated => false,
        PutOutcome::Unchanged => return,
    };
    let mut what = Vec::new();
    if change.contents {
        what.push(if created {
            "contents given".to_owned()
        } else {
            "new contents".to_owned()
        });
    }
    if let Some(d) = change.desired {
        what.push(format!("desired state {d}"));
    }
    let kind = if created {
        EventKind::UnitCreated
    } else {
        EventKind::UnitChanged
    };
    let mut event = by(caller, Event::new(kind, now_ms()).unit(name));
    if !what.is_empty() {
        event = event.detail(what.join(", "));
    }
    s.control.record_change(event);
}

/// Records that `caller` destroyed unit `name`.
pub(super) fn unit_destroyed<C: ControlPlane>(s: &AppState<C>, caller: &Identity, name: &UnitName) {
    let event = Event::new(EventKind::UnitDestroyed, now_ms()).unit(name);
    s.control.record_change(by(caller, event));
}

/// Records that `caller` removed machine `id`.
pub(super) fn machine_removed<C: ControlPlane>(
    s: &AppState<C>,
    caller: &Identity,
    id: &flotilla_proto::MachineId,
) {
    let event = Event::new(EventKind::MachineRemoved, now_ms()).machine(id);
    s.control.record_change(by(caller, event));
}

fn by(caller: &Identity, event: Event) -> Event {
    event.actor(caller.name.clone())
}
