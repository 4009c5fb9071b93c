//! The raft group's membership through the API, on three real servers
//! replicating their store with raft over real peer TLS, each serving its
//! API over real HTTPS: `GET /v1/servers` shows every member with its raft
//! state, `POST /v1/servers` adds a fourth server (which then starts with
//! `join` and catches up), `DELETE /v1/servers/{id}` removes it; only an
//! admin may change the membership, bad bodies get 400 with a reason, the
//! last voter stays, a change without a quorum is 503, and a server without
//! raft answers 409 `not_replicated`.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla_api::client::{Client, ClientError, PageQuery};
use flotilla_api::daemon::{Daemon, RaftSettings};
use flotilla_api::tls::{ClusterCa, TLS_DIR};
use flotilla_proto::trust::Role;
use flotilla_proto::wire::{ServerList, ServerResource};
use flotilla_scheduler::placement::Strategy;
use flotilla_testbed::free_port;
use support::{client_options, raw_request, token_create};

const TTL: Duration = Duration::from_secs(2);
const DEADLINE: Duration = Duration::from_secs(60);

/// Servers of one raft cluster, each with its data directory under one
/// temporary directory, which goes with them.
struct Cluster {
    daemons: BTreeMap<u64, Daemon>,
    peers: BTreeMap<u64, String>,
    secrets_key: PathBuf,
    ca_pem: Vec<u8>,
    admin: String,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Three servers, started together (each waits for a quorum), sharing
    /// the cluster CA and the secrets key as copies of one another's.
    async fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let peers: BTreeMap<u64, String> = (1..=3)
            .map(|id| (id, format!("https://127.0.0.1:{}", free_port())))
            .collect();
        let (ca, _) = ClusterCa::load_or_create(&dir.path().join("ca")).unwrap();
        let secrets_key = dir.path().join("secrets.key");
        flotilla_scheduler::secrets::SecretsKey::read_or_create(&secrets_key).unwrap();
        let mut starting = Vec::new();
        for &id in peers.keys() {
            let config = config(dir.path(), id, &peers, &secrets_key, false);
            starting.push(tokio::spawn(
                async move { (id, Daemon::start(config).await) },
            ));
        }
        let mut daemons = BTreeMap::new();
        for s in starting {
            let (id, daemon) = s.await.unwrap();
            daemons.insert(id, daemon.unwrap());
        }
        let admin = daemons
            .values()
            .find_map(|d| d.admin_token_path())
            .map(|p| std::fs::read_to_string(p).unwrap().trim().to_owned())
            .expect("one server made the admin token");
        Cluster {
            daemons,
            peers,
            secrets_key,
            ca_pem: ca.cert_pem().as_bytes().to_vec(),
            admin,
            dir,
        }
    }

    /// Starts server `id`, added to the cluster at `peer`, with `join`.
    async fn join(&mut self, id: u64, peer: &str) {
        self.peers.insert(id, peer.to_owned());
        let config = config(self.dir.path(), id, &self.peers, &self.secrets_key, true);
        self.daemons
            .insert(id, Daemon::start(config).await.unwrap());
    }

    async fn stop(&mut self, id: u64) {
        self.daemons.remove(&id).unwrap().stop().await.unwrap();
    }

    async fn stop_all(mut self) {
        for id in self.daemons.keys().copied().collect::<Vec<_>>() {
            self.stop(id).await;
        }
    }

    fn url(&self, id: u64) -> String {
        self.daemons[&id].url()
    }

    fn client(&self, url: &str, token: &str) -> Client {
        Client::with_options([url], client_options(&self.ca_pem, Some(token))).unwrap()
    }

    fn admin(&self, id: u64) -> Client {
        self.client(&self.url(id), &self.admin)
    }

    /// `GET /v1/servers` from the server leading the raft group (it
    /// measures every member's lag itself), once `ok` holds for it.
    async fn servers_until(&self, what: &str, ok: impl Fn(&ServerList) -> bool) -> ServerList {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let last = match self.list_from_leader().await {
                Ok(list) if ok(&list) => return list,
                Ok(list) => format!("{list:#?}"),
                Err(e) => e,
            };
            assert!(
                tokio::time::Instant::now() < deadline,
                "not within {DEADLINE:?}: {what}; last seen: {last}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET /v1/servers` from the server leading the raft group, as a
    /// running server names it.
    async fn list_from_leader(&self) -> Result<ServerList, String> {
        let any = *self.daemons.keys().next().unwrap();
        let list = self
            .admin(any)
            .list_servers()
            .await
            .map_err(|e| e.to_string())?;
        let leader = list
            .servers
            .iter()
            .find(|s| s.raft_role.as_deref() == Some("leader") && !s.address.is_empty())
            .ok_or_else(|| format!("no leader in {list:#?}"))?;
        self.client(&leader.address, &self.admin)
            .list_servers()
            .await
            .map_err(|e| e.to_string())
    }
}

/// Server `id`'s settings: its own data directory with a copy of the CA
/// made in `dir/ca`, the shared secrets key, raft between `peers`.
fn config(
    dir: &Path,
    id: u64,
    peers: &BTreeMap<u64, String>,
    secrets_key: &Path,
    join: bool,
) -> flotilla_api::daemon::DaemonConfig {
    let data = dir.join(format!("server-{id}"));
    let tls = data.join(TLS_DIR);
    std::fs::create_dir_all(&tls).unwrap();
    for entry in std::fs::read_dir(dir.join("ca")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tls.join(entry.file_name())).unwrap();
    }
    let mut config = support::daemon_config(data, TTL, Strategy::Spread);
    config.secrets_key = Some(secrets_key.to_owned());
    config.raft = Some(RaftSettings {
        id,
        peers: peers.clone(),
        join,
        listen: None,
    });
    config
}

fn raft_ids(list: &ServerList) -> Vec<Option<u64>> {
    list.servers.iter().map(|s| s.raft_id).collect()
}

/// Every member is live and caught up, and exactly one leads.
fn settled(list: &ServerList, ids: &[u64]) -> bool {
    let want: Vec<Option<u64>> = ids.iter().copied().map(Some).collect();
    let leaders = list
        .servers
        .iter()
        .filter(|s| s.raft_role.as_deref() == Some("leader"))
        .count();
    raft_ids(list) == want
        && leaders == 1
        && list.servers.iter().all(|s: &ServerResource| {
            s.lag == Some(0)
                && matches!(s.raft_role.as_deref(), Some("leader" | "follower"))
                && !s.address.is_empty()
                && s.term.is_some()
                && s.applied.is_some()
        })
}

fn reason(e: ClientError) -> (u16, String) {
    match e {
        ClientError::Api { status, reason, .. } => (status, reason),
        e => panic!("not an answer from the server: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_are_listed_added_and_removed() {
    let mut cluster = Cluster::start().await;

    // Three members, one leader, none behind.
    let list = cluster
        .servers_until("three members, one leader, lag 0", |l| {
            settled(l, &[1, 2, 3])
        })
        .await;
    for s in &list.servers {
        let id = s.raft_id.unwrap();
        assert_eq!(s.peer_address.as_deref(), Some(cluster.peers[&id].as_str()));
        // The scheduler leads where the store leads.
        assert_eq!(s.leader, s.raft_role.as_deref() == Some("leader"), "{s:?}");
    }

    // Only an admin changes the membership; the refusal is audited.
    for role in [Role::Viewer, Role::Operator] {
        let token = cluster
            .admin(1)
            .create_token(&token_create(role))
            .await
            .unwrap()
            .token;
        let c = cluster.client(&cluster.url(1), &token);
        assert_eq!(
            reason(c.add_server(4, "https://127.0.0.1:1").await.unwrap_err()),
            (403, "forbidden".to_owned())
        );
        assert_eq!(
            reason(c.remove_server(3).await.unwrap_err()),
            (403, "forbidden".to_owned())
        );
        c.list_servers().await.unwrap();
    }

    // Bad requests: 400 with a reason naming what is wrong.
    let url = format!("{}/v1/servers", cluster.url(2));
    for (body, reason_is, says) in [
        (
            r#"{"id":0,"peerAddress":"https://127.0.0.1:7"}"#,
            "invalid_request",
            "from 1",
        ),
        (
            r#"{"id":5,"peerAddress":"http://127.0.0.1:7"}"#,
            "invalid_request",
            "https://",
        ),
        (
            r#"{"id":5,"peerAddress":"https://127.0.0.1"}"#,
            "invalid_request",
            "port",
        ),
        (r#"{"id":5}"#, "invalid_json", "peerAddress"),
        (
            r#"{"id":-1,"peerAddress":"https://127.0.0.1:7"}"#,
            "invalid_json",
            "id",
        ),
    ] {
        let (status, _, answer) = raw_request(
            &cluster.ca_pem,
            Some(&cluster.admin),
            "POST",
            &url,
            Some("application/json"),
            body,
        )
        .await;
        let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["reason"], reason_is, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }
    let (status, _, _) = raw_request(
        &cluster.ca_pem,
        Some(&cluster.admin),
        "DELETE",
        &format!("{url}/zero"),
        None,
        "",
    )
    .await;
    assert_eq!(status, 400);
    // A member added twice, a stranger removed: 409.
    let admin = cluster.admin(2);
    let (status, reason_is) = reason(
        admin
            .add_server(1, "https://127.0.0.1:9")
            .await
            .unwrap_err(),
    );
    assert_eq!((status, reason_is.as_str()), (409, "conflict"));
    let (status, reason_is) = reason(admin.remove_server(9).await.unwrap_err());
    assert_eq!((status, reason_is.as_str()), (409, "conflict"));

    // Add server 4 (through a follower or the leader alike): it is a
    // member at once, unreachable until it runs.
    let peer4 = format!("https://127.0.0.1:{}", free_port());
    let members = admin.add_server(4, &peer4).await.unwrap();
    let ids: Vec<u64> = members.members.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![1, 2, 3, 4]);
    assert_eq!(members.members[3].peer_address, peer4);
    assert!(members.members.iter().all(|m| m.voter));
    let list = admin.list_servers().await.unwrap();
    assert_eq!(raft_ids(&list), vec![Some(1), Some(2), Some(3), Some(4)]);
    assert_eq!(list.servers[3].raft_role.as_deref(), Some("unreachable"));
    assert_eq!(list.servers[3].id, "");

    // Started with join, it takes the cluster's state and catches up.
    cluster.join(4, &peer4).await;
    cluster
        .servers_until("server 4 caught up", |l| settled(l, &[1, 2, 3, 4]))
        .await;

    // Remove it: three members again; once stopped, it is gone from the
    // list.
    let members = cluster.admin(1).remove_server(4).await.unwrap();
    let ids: Vec<u64> = members.members.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![1, 2, 3]);
    cluster.stop(4).await;
    cluster
        .servers_until("server 4 gone", |l| settled(l, &[1, 2, 3]))
        .await;

    // Both changes are in the audit log, with their answers.
    let audit = cluster
        .admin(1)
        .audit(None, &PageQuery::default())
        .await
        .unwrap();
    let changes: Vec<(String, u16)> = audit
        .entries
        .iter()
        .filter(|e| e.action.contains("/v1/servers"))
        .map(|e| (e.action.clone(), e.status))
        .collect();
    assert!(
        changes.contains(&("POST /v1/servers".to_owned(), 201)),
        "{changes:?}"
    );
    assert!(
        changes.contains(&("DELETE /v1/servers/4".to_owned(), 200)),
        "{changes:?}"
    );
    assert!(
        changes.iter().any(|(_, status)| *status == 403),
        "{changes:?}"
    );

    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_voter_is_not_removed() {
    // A cluster of one, made of the three by removing two.
    let mut cluster = Cluster::start().await;
    cluster
        .servers_until("three members", |l| settled(l, &[1, 2, 3]))
        .await;
    let list = cluster.admin(1).list_servers().await.unwrap();
    let leader = list
        .servers
        .iter()
        .find(|s| s.raft_role.as_deref() == Some("leader"))
        .and_then(|s| s.raft_id)
        .unwrap();
    let admin = cluster.admin(leader);
    for id in [1, 2, 3].into_iter().filter(|&id| id != leader) {
        admin.remove_server(id).await.unwrap();
        cluster.stop(id).await;
    }
    let (status, reason_is) = reason(admin.remove_server(leader).await.unwrap_err());
    assert_eq!((status, reason_is.as_str()), (409, "conflict"));
    // The removed servers' announcements end with their leases.
    cluster
        .servers_until("one member left", |l| settled(l, &[leader]))
        .await;
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_raft_refuses_membership_changes() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(support::daemon_config(
        dir.path().join("data"),
        TTL,
        Strategy::Spread,
    ))
    .await
    .unwrap();
    let ca_pem = daemon.trust().ca.cert_pem().as_bytes().to_vec();
    let admin = std::fs::read_to_string(daemon.admin_token_path().unwrap())
        .unwrap()
        .trim()
        .to_owned();
    let client =
        Client::with_options([daemon.url()], client_options(&ca_pem, Some(&admin))).unwrap();
    assert_eq!(
        reason(
            client
                .add_server(2, "https://127.0.0.1:7")
                .await
                .unwrap_err()
        ),
        (409, "not_replicated".to_owned())
    );
    assert_eq!(
        reason(client.remove_server(1).await.unwrap_err()),
        (409, "not_replicated".to_owned())
    );
    // The list has no raft fields, in JSON either.
    let list = support::eventually("this server listed", DEADLINE, || async {
        let l = client.list_servers().await.ok()?;
        (!l.servers.is_empty()).then_some(l)
    })
    .await;
    assert!(
        list.servers
            .iter()
            .all(|s| s.raft_id.is_none() && s.lag.is_none())
    );
    let (_, _, body) = raw_request(
        &ca_pem,
        Some(&admin),
        "GET",
        &format!("{}/v1/servers", daemon.url()),
        None,
        "",
    )
    .await;
    let body = String::from_utf8(body).unwrap();
    assert!(!body.contains("raftId"), "{body}");
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_without_a_quorum_is_unavailable() {
    let mut cluster = Cluster::start().await;
    let list = cluster
        .servers_until("three members", |l| settled(l, &[1, 2, 3]))
        .await;
    let leader = list
        .servers
        .iter()
        .find(|s| s.raft_role.as_deref() == Some("leader"))
        .and_then(|s| s.raft_id)
        .unwrap();
    // Two of three down: the one left cannot commit anything.
    for id in [1, 2, 3].into_iter().filter(|&id| id != leader) {
        cluster.stop(id).await;
    }
    let admin = cluster.admin(leader);
    let peer = format!("https://127.0.0.1:{}", free_port());
    let (status, reason_is) = reason(admin.add_server(4, &peer).await.unwrap_err());
    assert_eq!((status, reason_is.as_str()), (503, "unavailable"));
    let (status, reason_is) = reason(admin.remove_server(leader).await.unwrap_err());
    assert_eq!((status, reason_is.as_str()), (503, "unavailable"));
    cluster.stop_all().await;
}
