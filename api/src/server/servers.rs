//! `/v1/servers`: the live servers, and on a raft cluster the raft group's
//! members, added and removed here.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use flotilla_proto::wire::{
    RaftMemberResource, ServerAdd, ServerList, ServerMembership, ServerResource,
};
use flotilla_scheduler::control::{ControlError, ControlPlane};
use flotilla_store::StoreError;
use flotilla_store::raft::{RaftRole, RaftStatus, RaftStore};

use super::extract::{JsonBody, RaftIdPath};
use super::{ApiError, AppState};
use crate::peer::cert::parse_peer_url;

/// The role shown for a member of the raft group with no live presence.
pub const UNREACHABLE: &str = "unreachable";

/// `GET /v1/servers`: every live server, and which one leads; on raft,
/// every member of the raft group with its raft state.
pub(super) async fn list<C: ControlPlane>(
    State(s): State<AppState<C>>,
) -> Result<Json<ServerList>, ApiError> {
    let list = s.control.list_servers().await?;
    let Some(raft) = &s.raft else {
        return Ok(Json(list));
    };
    let status = raft.status().await.map_err(store_error)?;
    Ok(Json(raft_view(list, &status)))
}

/// `POST /v1/servers`: adds a server to the raft group; 201 with the
/// members once the change is committed.
pub(super) async fn add<C: ControlPlane>(
    State(s): State<AppState<C>>,
    JsonBody(add): JsonBody<ServerAdd>,
) -> Result<(StatusCode, Json<ServerMembership>), ApiError> {
    let raft = replicated(&s)?;
    if add.id == 0 {
        return Err(ApiError::BadRequest(
            "id: a server id is a number from 1".to_owned(),
        ));
    }
    parse_peer_url(&add.peer_address).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let status = raft.status().await.map_err(store_error)?;
    if let Some(m) = status.members.iter().find(|m| m.id == add.id) {
        return Err(conflict(format!(
            "server {} is already a member, at {}",
            m.id, m.address
        )));
    }
    raft.add_server(add.id, &add.peer_address)
        .await
        .map_err(store_error)?;
    tracing::info!(id = add.id, address = %add.peer_address, "added a server to the raft group");
    Ok((StatusCode::CREATED, Json(membership(raft).await?)))
}

/// `DELETE /v1/servers/{id}`: removes a server from the raft group; 200
/// with the members once the change is committed. The last voter is not
/// removed.
pub(super) async fn remove<C: ControlPlane>(
    State(s): State<AppState<C>>,
    RaftIdPath(id): RaftIdPath,
) -> Result<Json<ServerMembership>, ApiError> {
    let raft = replicated(&s)?;
    let status = raft.status().await.map_err(store_error)?;
    let Some(member) = status.members.iter().find(|m| m.id == id) else {
        return Err(conflict(format!("server {id} is not a member")));
    };
    let voters = status.members.iter().filter(|m| m.voter).count();
    if member.voter && voters <= 1 {
        return Err(conflict(format!(
            "server {id} is the last voter: the cluster would have none left"
        )));
    }
    raft.remove_server(id).await.map_err(store_error)?;
    tracing::info!(id, "removed a server from the raft group");
    Ok(Json(membership(raft).await?))
}

/// The raft store, or 409 `not_replicated` on a server without one.
fn replicated<C>(s: &AppState<C>) -> Result<&RaftStore, ApiError> {
    s.raft.as_deref().ok_or(ApiError::NotReplicated)
}

fn conflict(message: String) -> ApiError {
    ApiError::Control(ControlError::Conflict(message))
}

/// The members as this server knows them now.
async fn membership(raft: &RaftStore) -> Result<ServerMembership, ApiError> {
    let status = raft.status().await.map_err(store_error)?;
    let mut members: Vec<RaftMemberResource> = status
        .members
        .into_iter()
        .map(|m| RaftMemberResource {
            id: m.id,
            peer_address: m.address,
            voter: m.voter,
        })
        .collect();
    members.sort_by_key(|m| m.id);
    Ok(ServerMembership { members })
}

/// A raft error: 503 when the cluster cannot commit the change now (no
/// quorum, no leader, a change already under way).
fn store_error(e: StoreError) -> ApiError {
    if e.is_temporary() {
        ApiError::Control(ControlError::Unavailable(e.to_string()))
    } else {
        ApiError::Control(ControlError::Internal(e.to_string()))
    }
}

/// The live servers of `list` joined with the raft group of `status` (the
/// serving server's view): one row per member in raft id order, each with
/// its own announced raft state (this server's is read live), and
/// `unreachable` for a member with no live announcement; then servers that
/// announce no raft state or are no longer members.
///
/// Lag is the leader's last log index minus what the member applied. When
/// this server leads, it measures a follower by what it has replicated to
/// it and committed (the follower applies it with the next heartbeat),
/// which is current; otherwise from the members' announcements, as of
/// their last one.
pub fn raft_view(list: ServerList, status: &RaftStatus) -> ServerList {
    let mut by_raft_id: BTreeMap<u64, ServerResource> = BTreeMap::new();
    let mut others = Vec::new();
    for s in list.servers {
        match s.raft_id {
            // The newest announcement wins when a server restarted.
            Some(id) => match by_raft_id.get(&id) {
                Some(seen) if seen.term >= s.term && seen.applied >= s.applied => {}
                _ => {
                    by_raft_id.insert(id, s);
                }
            },
            None => others.push(s),
        }
    }
    let leads = status.role == RaftRole::Leader;
    let leader_last = if leads {
        Some(status.last_index)
    } else {
        by_raft_id
            .values()
            .filter(|s| s.raft_role.as_deref() == Some(RaftRole::Leader.as_str()))
            .max_by_key(|s| s.term)
            .and_then(|s| s.last_index)
    };
    let mut members = status.members.clone();
    members.sort_by_key(|m| m.id);
    let mut out = Vec::with_capacity(members.len() + others.len());
    for m in &members {
        let mut row = by_raft_id.remove(&m.id).unwrap_or_default();
        row.raft_id = Some(m.id);
        row.peer_address = Some(m.address.clone());
        if m.id == status.id {
            row.raft_role = Some(status.role.as_str().to_owned());
            row.term = Some(status.term);
            row.applied = Some(status.applied);
            row.last_index = Some(status.last_index);
        } else if row.raft_role.is_none() {
            row.raft_role = Some(UNREACHABLE.to_owned());
        }
        let progress = if leads && m.id != status.id {
            m.matched
                .map(|matched| matched.min(status.commit).max(row.applied.unwrap_or(0)))
        } else {
            row.applied
        };
        row.lag = match (leader_last, progress) {
            (Some(last), Some(done)) => Some(last.saturating_sub(done)),
            _ => None,
        };
        out.push(row);
    }
    // Announcing servers that are no longer members (removed, still up).
    out.extend(by_raft_id.into_values());
    out.extend(others);
    ServerList { servers: out }
}

#[cfg(test)]
mod tests {
    use flotilla_store::raft::RaftMember;

    use super::*;

    fn announced(raft_id: u64, role: &str, term: u64, applied: u64) -> ServerResource {
        ServerResource {
            id: format!("host-{raft_id}"),
            address: format!("https://127.0.0.1:710{raft_id}"),
            version: "1".into(),
            leader: false,
            raft_id: Some(raft_id),
            raft_role: Some(role.into()),
            term: Some(term),
            applied: Some(applied),
            last_index: Some(applied),
            ..ServerResource::default()
        }
    }

    fn member(id: u64, matched: Option<u64>) -> RaftMember {
        RaftMember {
            id,
            address: format!("https://127.0.0.1:720{id}"),
            voter: true,
            matched,
        }
    }

    fn status(id: u64, role: RaftRole, members: Vec<RaftMember>) -> RaftStatus {
        RaftStatus {
            id,
            role,
            term: 3,
            leader: Some(1),
            commit: 100,
            applied: 100,
            last_index: 100,
            members,
            preferred: false,
        }
    }

    #[test]
    fn members_without_an_announcement_show_as_unreachable() {
        let list = ServerList {
            servers: vec![
                announced(1, "leader", 3, 90),
                announced(2, "follower", 3, 80),
            ],
        };
        let st = status(
            1,
            RaftRole::Leader,
            vec![
                member(3, Some(40)),
                member(1, Some(100)),
                member(2, Some(100)),
            ],
        );
        let view = raft_view(list, &st);
        let rows: Vec<_> = view
            .servers
            .iter()
            .map(|s| {
                (
                    s.raft_id,
                    s.raft_role.as_deref(),
                    s.applied,
                    s.lag,
                    s.peer_address.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                // This server, read live.
                (
                    Some(1),
                    Some("leader"),
                    Some(100),
                    Some(0),
                    Some("https://127.0.0.1:7201")
                ),
                // Replicated and committed up to the leader's last index.
                (
                    Some(2),
                    Some("follower"),
                    Some(80),
                    Some(0),
                    Some("https://127.0.0.1:7202")
                ),
                (
                    Some(3),
                    Some(UNREACHABLE),
                    None,
                    Some(60),
                    Some("https://127.0.0.1:7203")
                ),
            ]
        );
        assert_eq!(view.servers[2].id, "", "no presence, no server id");
    }

    #[test]
    fn a_follower_measures_lag_from_the_leaders_announcement() {
        let mut leader = announced(1, "leader", 3, 120);
        leader.last_index = Some(130);
        let list = ServerList {
            servers: vec![leader, announced(3, "follower", 3, 100)],
        };
        let st = status(
            2,
            RaftRole::Follower,
            vec![member(1, None), member(2, None), member(3, None)],
        );
        let view = raft_view(list, &st);
        let lags: Vec<_> = view.servers.iter().map(|s| (s.raft_id, s.lag)).collect();
        assert_eq!(
            lags,
            vec![
                (Some(1), Some(10)),
                (Some(2), Some(30)),
                (Some(3), Some(30))
            ]
        );
    }

    #[test]
    fn servers_outside_the_group_are_kept_after_the_members() {
        let mut plain = announced(9, "follower", 1, 1);
        plain.raft_id = None;
        plain.raft_role = None;
        let list = ServerList {
            servers: vec![plain.clone(), announced(4, "removed", 3, 50)],
        };
        let st = status(1, RaftRole::Leader, vec![member(1, Some(100))]);
        let view = raft_view(list, &st);
        let ids: Vec<_> = view.servers.iter().map(|s| s.raft_id).collect();
        assert_eq!(ids, vec![Some(1), Some(4), None]);
        assert_eq!(view.servers[2], plain);
    }
}
