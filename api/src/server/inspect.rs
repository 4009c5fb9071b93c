//! `flotilla status` and `flotilla journal` through the API: the client
//! routes (`/v1/units/{name}/status`, `/v1/units/{name}/journal`) ask the
//! unit's agent through the [`Relay`](super::relay::Relay), and the agent
//! routes (`/v1/agent/machines/{id}/requests`, `.../replies/{request}`)
//! are how the agent takes the requests and streams its answers.

use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use flotilla_proto::inspect::{
    AgentRequests, MAX_LINES, MAX_SINCE_LEN, ReplyLine, RequestKind, UnitStatus,
};
use flotilla_proto::trust::Role;
use flotilla_proto::wire::Unit;
use flotilla_proto::{MachineId, UnitName};
use flotilla_scheduler::control::{ControlError, ControlPlane, PageRequest, StateFilter};
use futures_util::StreamExt;
use serde::Deserialize;

use super::extract::{CallerOf, Drain, OwnMachinePath, PollParams, QueryParams, UnitPath};
use super::relay::{Asked, RelayError};
use super::{ApiError, AppState};

/// How long an agent has to start answering a request.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// The longest an agent's reply may go without a byte (agents send a
/// keep-alive line every 15 s while following a journal).
pub const REPLY_IDLE: Duration = Duration::from_secs(45);

/// The most bytes of one reply passed on.
pub const MAX_REPLY_BYTES: u64 = 64 * 1024 * 1024;

/// The most bytes of a status reply (its log lines included).
const MAX_STATUS_BYTES: usize = 4 * 1024 * 1024;

/// Journal lines a status shows by default.
const STATUS_LINES: u32 = 10;

/// The query of the status and journal routes.
#[derive(Debug, Default, Deserialize)]
pub(super) struct InspectParams {
    /// Which machine, for a `Global` unit.
    machine: Option<String>,
    lines: Option<String>,
    follow: Option<String>,
    since: Option<String>,
}

impl InspectParams {
    fn lines(&self, default: u32) -> Result<u32, ApiError> {
        match self.lines.as_deref() {
            None | Some("") => Ok(default),
            Some(s) => s
                .parse::<u32>()
                .map(|n| n.min(MAX_LINES))
                .map_err(|_| ApiError::InvalidQuery(format!("lines must be a number, not {s:?}"))),
        }
    }

    fn follow(&self) -> Result<bool, ApiError> {
        match self.follow.as_deref() {
            None | Some("" | "false" | "0") => Ok(false),
            Some("true" | "1") => Ok(true),
            Some(s) => Err(ApiError::InvalidQuery(format!(
                "follow must be true or false, not {s:?}"
            ))),
        }
    }

    /// `since`, as `journalctl --since` takes it (`2026-12-05 10:00`,
    /// `-1h`, `today`): letters, digits, blanks and `-:+.` only.
    fn since(&self) -> Result<Option<String>, ApiError> {
        match self.since.as_deref() {
            None | Some("") => Ok(None),
            Some(s)
                if s.len() <= MAX_SINCE_LEN
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || " -:+.".contains(c)) =>
            {
                Ok(Some(s.to_owned()))
            }
            Some(s) => Err(ApiError::InvalidQuery(format!(
                "since must be a time as journalctl --since reads it (at most {MAX_SINCE_LEN} letters, digits, blanks and -:+.), not {}",
                flotilla_proto::field::excerpt(s)
            ))),
        }
    }
}

/// The machine to ask about `unit`: the one it is placed on, or for a
/// `Global` unit the `machine` asked for (which must report it).
async fn machine_of<C: ControlPlane>(
    s: &AppState<C>,
    unit: &Unit,
    name: &UnitName,
    asked: Option<&str>,
) -> Result<MachineId, ApiError> {
    let asked = asked
        .filter(|m| !m.is_empty())
        .map(|m| MachineId::parse(m).map_err(ApiError::InvalidMachineId))
        .transpose()?;
    if let Some(placed) = &unit.machine_id {
        return match asked {
            Some(m) if &m != placed => Err(ControlError::Conflict(format!(
                "unit {name} runs on machine {placed}, not on {m}"
            ))
            .into()),
            _ => Ok(placed.clone()),
        };
    }
    let states = s
        .control
        .list_states(
            StateFilter {
                unit: Some(name.clone()),
                machine: asked.clone(),
            },
            PageRequest::default(),
        )
        .await?;
    let machines: Vec<MachineId> = states.states.into_iter().map(|st| st.machine).collect();
    match (asked, machines.as_slice()) {
        (Some(m), found) if found.contains(&m) => Ok(m),
        (Some(m), _) => {
            Err(ControlError::Conflict(format!("unit {name} does not run on machine {m}")).into())
        }
        (None, [one]) => Ok(one.clone()),
        (None, []) => Err(ControlError::Conflict(format!(
            "unit {name} is not placed on a machine (its desired state is {})",
            unit.desired_state
        ))
        .into()),
        (None, many) => Err(ApiError::BadRequest(format!(
            "unit {name} runs on {} machines: say which with machine= (for example {})",
            many.len(),
            many[0]
        ))),
    }
}

fn relay_error(e: RelayError) -> ApiError {
    match e {
        RelayError::NotConnected(_) => ApiError::Unreachable(format!(
            "{e}: the machine is down, cut off, or its agent is older than this server"
        )),
        RelayError::MachineBusy { .. } | RelayError::ServerBusy(_) => {
            ApiError::TooManyRequests(e.to_string())
        }
        RelayError::UnknownRequest(_) => ApiError::Control(ControlError::NotFound {
            what: e.to_string(),
        }),
    }
}

/// `GET /v1/units/{name}/status?machine=&lines=`: the unit as its host's
/// systemd has it, with its last journal lines for callers who may read
/// logs (operators and admins).
pub(super) async fn status<C: ControlPlane>(
    State(s): State<AppState<C>>,
    UnitPath(name): UnitPath,
    CallerOf(caller): CallerOf,
    QueryParams(params): QueryParams<InspectParams>,
) -> Result<Json<UnitStatus>, ApiError> {
    let unit = s.control.get_unit(&name).await?;
    let machine = machine_of(&s, &unit, &name, params.machine.as_deref()).await?;
    let lines = if caller.role.at_least(Role::Operator) {
        params.lines(STATUS_LINES)?
    } else {
        0
    };
    let asked = s
        .relay
        .ask(&machine, &name, RequestKind::Status { lines })
        .map_err(relay_error)?;
    let mut status = collect_status(asked, &machine).await?;
    status.unit = name.to_string();
    status.machine = Some(machine.clone());
    // What only the servers know: the container and its health, as the
    // agent last reported them.
    let reported = s
        .control
        .list_states(
            StateFilter {
                unit: Some(name),
                machine: Some(machine),
            },
            PageRequest::default(),
        )
        .await?;
    if let Some(state) = reported.states.into_iter().next() {
        status.container_id = state.container_id;
        status.health = state.health;
    }
    Ok(Json(status))
}

/// Reads an agent's status reply: its `status` line, or its error.
async fn collect_status(mut asked: Asked, machine: &MachineId) -> Result<UnitStatus, ApiError> {
    let mut buffer: Vec<u8> = Vec::new();
    let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
    loop {
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            match serde_json::from_slice::<ReplyLine>(&line) {
                Ok(ReplyLine::Status(status)) => return Ok(*status),
                Ok(ReplyLine::Error { message }) => {
                    return Err(ApiError::AgentFailed(format!(
                        "the agent of machine {machine}: {message}"
                    )));
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(ApiError::AgentFailed(format!(
                        "the agent of machine {machine} answered what is not a status: {e}"
                    )));
                }
            }
        }
        if buffer.len() > MAX_STATUS_BYTES {
            return Err(ApiError::AgentFailed(format!(
                "the agent of machine {machine} sent more than {MAX_STATUS_BYTES} bytes for a status"
            )));
        }
        match tokio::time::timeout_at(deadline, asked.reply.recv()).await {
            Ok(Some(chunk)) => buffer.extend_from_slice(&chunk),
            Ok(None) => {
                return Err(ApiError::AgentFailed(format!(
                    "the agent of machine {machine} ended its answer without a status"
                )));
            }
            Err(_) => {
                return Err(ApiError::Unreachable(format!(
                    "the agent of machine {machine} did not answer within {} s",
                    ANSWER_WITHIN.as_secs()
                )));
            }
        }
    }
}

/// `GET /v1/units/{name}/journal?lines=&follow=&since=&machine=`: the
/// unit's journal from its host as newline-delimited JSON
/// ([`ReplyLine`]s), passed on as the agent sends it; with `follow`, until
/// the client goes away. The stream ends with an `end` or `error` line; a
/// stream that ends without one was cut (the host or its agent went away,
/// or this server shut down).
pub(super) async fn journal<C: ControlPlane>(
    State(s): State<AppState<C>>,
    UnitPath(name): UnitPath,
    drain: Drain,
    QueryParams(params): QueryParams<InspectParams>,
) -> Result<Response, ApiError> {
    let unit = s.control.get_unit(&name).await?;
    let machine = machine_of(&s, &unit, &name, params.machine.as_deref()).await?;
    let kind = RequestKind::Journal {
        lines: params.lines(10)?,
        follow: params.follow()?,
        since: params.since()?,
    };
    let asked = s.relay.ask(&machine, &name, kind).map_err(relay_error)?;
    let stream = futures_util::stream::unfold(
        Some((asked, Box::pin(drain.started()), true, machine)),
        |state| async move {
            let (mut asked, mut drain, first, machine) = state?;
            let wait = if first { ANSWER_WITHIN } else { REPLY_IDLE };
            tokio::select! {
                chunk = tokio::time::timeout(wait, asked.reply.recv()) => match chunk {
                    Ok(Some(bytes)) => Some((Ok::<Bytes, std::io::Error>(bytes), Some((asked, drain, false, machine)))),
                    Ok(None) => None,
                    Err(_) => {
                        let message = if first {
                            format!("the agent of machine {machine} did not answer within {} s", wait.as_secs())
                        } else {
                            format!("the agent of machine {machine} sent nothing for {} s: the host or its agent went away", wait.as_secs())
                        };
                        Some((Ok(line(&ReplyLine::Error { message })), None))
                    }
                },
                () = &mut drain => Some((
                    Ok(line(&ReplyLine::End { reason: "the server is shutting down".into() })),
                    None,
                )),
            }
        },
    );
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// A reply line of this server's own (an end or an error), as sent.
fn line(reply: &ReplyLine) -> Bytes {
    Bytes::from(crate::wire::reply_bytes(reply))
}

/// `GET /v1/agent/machines/{id}/requests?wait=SECONDS`: the requests for
/// the caller's machine, once there are any or `wait` passed.
pub(super) async fn requests<C: ControlPlane>(
    State(s): State<AppState<C>>,
    OwnMachinePath(id): OwnMachinePath,
    drain: Drain,
    QueryParams(params): QueryParams<PollParams>,
) -> Result<Json<AgentRequests>, ApiError> {
    let wait = params.wait(&s.config)?;
    let requests = s.relay.poll(&id, wait, drain.started()).await;
    Ok(Json(AgentRequests { requests }))
}

/// `POST /v1/agent/machines/{id}/replies/{request}`: the agent's answer
/// to a request, as newline-delimited JSON, passed on to the client as it
/// comes. 204 once passed on; 410 when the client went away (the agent
/// then stops); 404 for a request this machine was not asked.
pub(super) async fn reply<C: ControlPlane>(
    State(s): State<AppState<C>>,
    CallerOf(caller): CallerOf,
    Path((id, request)): Path<(String, String)>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let id = MachineId::parse(&id).map_err(ApiError::InvalidMachineId)?;
    super::extract::check_own_machine(&caller, &id)?;
    let tx = s.relay.reply(&id, &request).map_err(relay_error)?;
    let mut stream = body.into_data_stream();
    let mut passed: u64 = 0;
    loop {
        let chunk = match tokio::time::timeout(REPLY_IDLE, stream.next()).await {
            Ok(Some(Ok(chunk))) => chunk,
            Ok(Some(Err(e))) => return Err(ApiError::BodyUnreadable(e.to_string())),
            Ok(None) => return Ok(StatusCode::NO_CONTENT),
            Err(_) => {
                return Err(ApiError::BodyTimeout {
                    seconds: REPLY_IDLE.as_secs(),
                });
            }
        };
        passed += chunk.len() as u64;
        if passed > MAX_REPLY_BYTES {
            let _ = tx
                .send(line(&ReplyLine::Error {
                    message: format!("the answer is longer than {MAX_REPLY_BYTES} bytes: cut"),
                }))
                .await;
            return Err(ApiError::PayloadTooLarge {
                limit: MAX_REPLY_BYTES as usize,
            });
        }
        if tx.send(chunk).await.is_err() {
            return Ok(StatusCode::GONE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(lines: Option<&str>, follow: Option<&str>, since: Option<&str>) -> InspectParams {
        InspectParams {
            machine: None,
            lines: lines.map(str::to_owned),
            follow: follow.map(str::to_owned),
            since: since.map(str::to_owned),
        }
    }

    #[test]
    fn the_query_is_bounded_and_checked() {
        assert_eq!(params(None, None, None).lines(10).ok(), Some(10));
        assert_eq!(
            params(Some("99999999"), None, None).lines(10).ok(),
            Some(MAX_LINES)
        );
        assert!(params(Some("-1"), None, None).lines(10).is_err());
        assert_eq!(params(None, Some("true"), None).follow().ok(), Some(true));
        assert!(params(None, Some("yes please"), None).follow().is_err());
        for ok in ["-1h", "2026-12-05 10:00:00", "today", "+0.5"] {
            assert_eq!(
                params(None, None, Some(ok)).since().ok(),
                Some(Some(ok.to_owned())),
                "{ok}"
            );
        }
        let long = "1".repeat(MAX_SINCE_LEN + 1);
        for bad in ["; rm -rf /", "--unit=other", "a\nb", long.as_str()] {
            // The value goes to journalctl as one `--since=VALUE`
            // argument; characters beyond a time's are refused anyway.
            assert!(params(None, None, Some(bad)).since().is_err(), "{bad}");
        }
    }
}
