//! Git sources over real HTTPS, following a real repository served by
//! `git daemon`, with commits pushed during the test: the cluster follows
//! within the interval, a broken commit is refused (with its file and
//! line) and the next good one applied, hand changes are put back (or
//! reported and kept), pausing stops following, and pruning touches only
//! the source's own units. Every change is attributed to the source and
//! its commit.

use std::time::Duration;

use flotilla_api::client::{Client, EventQuery, PageQuery};
use flotilla_proto::event::EventKind;
use flotilla_proto::rollout::{Rollout, RolloutState};
use flotilla_proto::sync::{DriftMode, SourceInfo, SourcePut, SyncFailure};
use flotilla_proto::trust::Role;
use flotilla_proto::wire::{StateReport, UnitPut};
use flotilla_proto::{DesiredState, UnitFile};
use flotilla_testbed::GitServer;

use crate::{DEADLINE, Server, eventually, machine, machine_id, name, state};

const WEB: &str = "[Service]\nExecStart=/bin/sleep 1000\n";
const WEB_V2: &str = "[Service]\nExecStart=/bin/sleep 2000\n";
const DB: &str = "[Service]\nExecStart=/bin/sleep 3000\n";
const BROKEN: &str = "[Service]\nExecStart=/bin/true\n[X-Fleet]\nConflict=x\n";

/// A server whose sources may sync every 100 ms, and whose leader rereads
/// them every 50 ms.
async fn server() -> Server {
    Server::with_daemon(|c| {
        c.sync.limits.min_interval = Duration::from_millis(100);
        c.sync.follow.poll = Duration::from_millis(50);
    })
    .await
}

fn source(repo: &str) -> SourcePut {
    SourcePut {
        repo: repo.to_owned(),
        interval: Some("200ms".into()),
        ..SourcePut::default()
    }
}

async fn status(client: &Client, source: &str) -> SourceInfo {
    client.get_sync_source(source).await.unwrap()
}

/// Waits until `source` has applied `commit`.
async fn applied(client: &Client, source: &str, commit: &str) -> SourceInfo {
    eventually(&format!("{source} to apply {commit}"), DEADLINE, || async {
        let info = status(client, source).await;
        (info.status.last_applied.as_ref().map(|c| c.commit.as_str()) == Some(commit))
            .then_some(info)
    })
    .await
}

/// Waits until `source` has refused `commit`; what it said.
async fn refused(client: &Client, source: &str, commit: &str) -> SyncFailure {
    eventually(
        &format!("{source} to refuse {commit}"),
        DEADLINE,
        || async {
            status(client, source)
                .await
                .status
                .last_error
                .filter(|e| e.commit.as_deref() == Some(commit))
        },
    )
    .await
}

async fn text_of(client: &Client, unit: &str) -> Option<String> {
    client.get_unit(&name(unit)).await.ok().map(|u| u.text)
}

/// Waits until the leader has fetched `source` twice more after now: a
/// sync that would have happened has.
async fn two_more_fetches(client: &Client, source: &str) {
    let seen = std::sync::Mutex::new(Vec::new());
    eventually(
        &format!("two more fetches of {source}"),
        DEADLINE,
        || async {
            let at = status(client, source)
                .await
                .status
                .last_fetched
                .map(|c| c.at_ms);
            let mut seen = seen.lock().unwrap();
            if seen.last() != Some(&at) {
                seen.push(at);
            }
            (seen.len() >= 3).then_some(())
        },
    )
    .await;
}

async fn event_by(client: &Client, kind: EventKind, actor: &str) -> flotilla_proto::event::Event {
    eventually(&format!("a {kind} event by {actor}"), DEADLINE, || async {
        let page = client
            .events(
                &EventQuery::default(),
                &PageQuery {
                    token: None,
                    limit: Some(1000),
                },
            )
            .await
            .unwrap();
        page.events
            .into_iter()
            .find(|e| e.kind == kind && e.actor.as_deref() == Some(actor))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_commits_and_refuses_broken_ones() {
    let git = GitServer::start("follow").unwrap();
    let server = server().await;
    let operator = server.client_as(Role::Operator).await;
    let admin = server.client();
    let first = git
        .commit(
            &[
                ("web.service", Some(WEB)),
                ("db.service", Some(DB)),
                ("flotilla.yaml", Some("states:\n  db.service: loaded\n")),
            ],
            "first",
        )
        .unwrap();
    let made = operator
        .put_sync_source("site", &source(&git.url()))
        .await
        .unwrap();
    assert_eq!(made.source.branch, "main");

    // The cluster follows, as flotilla apply would.
    let info = applied(&admin, "site", &first).await;
    assert_eq!(text_of(&admin, "web.service").await.as_deref(), Some(WEB));
    let db = admin.get_unit(&name("db.service")).await.unwrap();
    assert_eq!(db.desired_state, DesiredState::Loaded);
    let changes = info.status.last_changes.unwrap();
    assert_eq!(changes.created, ["db.service", "web.service"]);
    assert!(info.status.last_error.is_none());

    // Every change is attributed to the source and the commit, in the
    // events and in the audit log.
    let actor = format!("sync:site@{}", &first[..7]);
    let created = event_by(&admin, EventKind::UnitCreated, &actor).await;
    assert!(created.unit.is_some());
    let audit = admin.audit(None, &PageQuery::default()).await.unwrap();
    assert!(
        audit
            .entries
            .iter()
            .any(|e| e.actor_name == actor && e.action == "PUT /v1/units/web.service"),
        "{:?}",
        audit.entries
    );

    // A broken unit: nothing changes, the error names the file and line.
    let broken = git
        .commit(
            &[
                ("web.service", Some(WEB_V2)),
                ("broken.service", Some(BROKEN)),
            ],
            "broken",
        )
        .unwrap();
    let failure = refused(&admin, "site", &broken).await;
    assert!(
        failure
            .message
            .contains("broken.service:4: error: [X-Fleet] Conflict: unknown key"),
        "{}",
        failure.message
    );
    let refusal = event_by(
        &admin,
        EventKind::SyncRefused,
        &format!("sync:site@{}", &broken[..7]),
    )
    .await;
    assert!(refusal.detail.unwrap().contains("broken.service:4"));
    let info = status(&admin, "site").await;
    assert_eq!(info.status.last_applied.unwrap().commit, first);
    assert_eq!(info.status.last_fetched.unwrap().commit, broken);
    assert_eq!(text_of(&admin, "web.service").await.as_deref(), Some(WEB));
    assert_eq!(text_of(&admin, "broken.service").await, None);

    // A bad flotilla.yaml too.
    let bad_manifest = git
        .commit(
            &[
                ("broken.service", None),
                ("flotilla.yaml", Some("states:\n  db.service: running\n")),
            ],
            "bad manifest",
        )
        .unwrap();
    let failure = refused(&admin, "site", &bad_manifest).await;
    assert!(
        failure.message.starts_with("flotilla.yaml:2: error:"),
        "{}",
        failure.message
    );
    assert_eq!(text_of(&admin, "web.service").await.as_deref(), Some(WEB));

    // The next good commit is applied.
    let good = git
        .commit(
            &[("flotilla.yaml", Some("states:\n  db.service: launched\n"))],
            "good",
        )
        .unwrap();
    let info = applied(&admin, "site", &good).await;
    assert!(info.status.last_error.is_none());
    assert_eq!(
        text_of(&admin, "web.service").await.as_deref(),
        Some(WEB_V2)
    );
    let db = admin.get_unit(&name("db.service")).await.unwrap();
    assert_eq!(db.desired_state, DesiredState::Launched);
    let changes = info.status.last_changes.unwrap();
    assert_eq!(changes.replaced, ["web.service"]);
    assert_eq!(changes.state_changed, ["db.service"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_changes_are_reverted_or_reported() {
    let git = GitServer::start("drift").unwrap();
    let server = server().await;
    let admin = server.client();
    let first = git.commit(&[("web.service", Some(WEB))], "first").unwrap();
    admin
        .put_sync_source("site", &source(&git.url()))
        .await
        .unwrap();
    applied(&admin, "site", &first).await;

    // drift: revert (the default): a hand change is put back.
    admin
        .put_unit(
            &name("web.service"),
            &UnitPut {
                text: Some(WEB_V2.into()),
                replace: true,
                ..UnitPut::default()
            },
        )
        .await
        .unwrap();
    eventually("the hand change to be put back", DEADLINE, || async {
        (text_of(&admin, "web.service").await.as_deref() == Some(WEB)).then_some(())
    })
    .await;
    // The status is written once the sync that put it back ends.
    let info = eventually("the drift to be recorded", DEADLINE, || async {
        let info = status(&admin, "site").await;
        info.status.last_drift.is_some().then_some(info)
    })
    .await;
    let drift = info.status.last_drift.unwrap();
    assert!(drift.reverted);
    assert_eq!(drift.units[0].unit, "web.service");
    assert_eq!(drift.units[0].how, "contents");
    assert!(info.status.drifted.is_empty());
    let event = event_by(
        &admin,
        EventKind::UnitDrifted,
        &format!("sync:site@{}", &first[..7]),
    )
    .await;
    assert!(event.detail.unwrap().contains("put back"));

    // drift: warn: reported (status, metric) and kept.
    admin
        .put_sync_source(
            "site",
            &SourcePut {
                drift: DriftMode::Warn,
                ..source(&git.url())
            },
        )
        .await
        .unwrap();
    admin
        .put_unit(
            &name("web.service"),
            &UnitPut {
                desired_state: Some(DesiredState::Loaded),
                ..UnitPut::default()
            },
        )
        .await
        .unwrap();
    let drifted = eventually("the drift to be reported", DEADLINE, || async {
        let d = status(&admin, "site").await.status.drifted;
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(drifted[0].unit, "web.service");
    assert_eq!(drifted[0].how, "desired state loaded, not launched");
    let (code, _, body) = server
        .raw("GET", &format!("{}/metrics", server.url), None, "")
        .await;
    assert_eq!(code, 200);
    let page = String::from_utf8(body).unwrap();
    assert!(
        page.contains("flotilla_sync_drifted_units{source=\"site\"} 1"),
        "{page}"
    );
    two_more_fetches(&admin, "site").await;
    let web = admin.get_unit(&name("web.service")).await.unwrap();
    assert_eq!(web.desired_state, DesiredState::Loaded, "warn put it back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_following_and_prune_touches_only_own_units() {
    let git = GitServer::start("prune").unwrap();
    let server = server().await;
    let admin = server.client();
    // Someone else's unit, which no source owns.
    admin
        .put_unit(
            &name("theirs.service"),
            &UnitPut {
                desired_state: Some(DesiredState::Loaded),
                text: Some(DB.into()),
                ..UnitPut::default()
            },
        )
        .await
        .unwrap();
    let first = git
        .commit(
            &[
                ("units/a.service", Some(WEB)),
                ("units/b.service", Some(WEB)),
                ("clock/README.md", Some("no units here\n")),
            ],
            "first",
        )
        .unwrap();
    admin
        .put_sync_source(
            "site",
            &SourcePut {
                path: Some("units".into()),
                prune: true,
                ..source(&git.url())
            },
        )
        .await
        .unwrap();
    // A second source with no units: its fetches show the leader syncing.
    admin
        .put_sync_source(
            "clock",
            &SourcePut {
                path: Some("clock".into()),
                ..source(&git.url())
            },
        )
        .await
        .unwrap();
    applied(&admin, "site", &first).await;
    assert!(text_of(&admin, "a.service").await.is_some());

    // Paused: new commits are not followed.
    let paused = admin.pause_sync_source("site", true).await.unwrap();
    assert!(paused.source.paused);
    let second = git
        .commit(
            &[("units/a.service", None), ("units/c.service", Some(WEB))],
            "second",
        )
        .unwrap();
    applied(&admin, "clock", &second).await;
    two_more_fetches(&admin, "clock").await;
    let info = status(&admin, "site").await;
    assert_eq!(info.status.last_fetched.unwrap().commit, first);
    assert!(text_of(&admin, "a.service").await.is_some());
    assert_eq!(text_of(&admin, "c.service").await, None);

    // Resumed: followed again; prune destroys only the source's own unit.
    admin.pause_sync_source("site", false).await.unwrap();
    let info = applied(&admin, "site", &second).await;
    let changes = info.status.last_changes.unwrap();
    assert_eq!(changes.created, ["c.service"]);
    assert_eq!(changes.destroyed, ["a.service"]);
    assert_eq!(text_of(&admin, "a.service").await, None);
    assert!(text_of(&admin, "b.service").await.is_some());
    assert!(text_of(&admin, "theirs.service").await.is_some());
    let destroyed = event_by(
        &admin,
        EventKind::UnitDestroyed,
        &format!("sync:site@{}", &second[..7]),
    )
    .await;
    assert_eq!(destroyed.unit.unwrap().as_str(), "a.service");

    // Another source may not take a unit this one owns.
    admin
        .put_sync_source(
            "other",
            &SourcePut {
                path: Some("units".into()),
                ..source(&git.url())
            },
        )
        .await
        .unwrap();
    let failure = eventually("the other source to be refused", DEADLINE, || async {
        status(&admin, "other").await.status.last_error
    })
    .await;
    assert!(
        failure
            .message
            .contains("unit b.service belongs to git source site"),
        "{}",
        failure.message
    );

    // Removed: the units stay.
    admin.delete_sync_source("site").await.unwrap();
    let e = admin.get_sync_source("site").await.unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    assert!(text_of(&admin, "b.service").await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_goes_on_from_the_last_applied_commit() {
    let git = GitServer::start("failover").unwrap();
    let first = git
        .commit(
            &[("web.service", Some(WEB)), ("db.service", Some(DB))],
            "first",
        )
        .unwrap();
    let a = server().await;
    a.client()
        .put_sync_source("site", &source(&git.url()))
        .await
        .unwrap();
    applied(&a.client(), "site", &first).await;

    // A second server on the same store, with the cluster's CA and
    // secrets key, and a cache of its own.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("tls")).unwrap();
    for file in ["tls/ca.crt", "tls/ca.key", "secrets.key"] {
        std::fs::copy(a.data_dir().join(file), data.join(file)).unwrap();
    }
    // The cache of a source removed while another server led.
    std::fs::create_dir_all(data.join("sync/gone.git")).unwrap();
    let mut config = crate::support::daemon_config(
        data.clone(),
        crate::MACHINE_TTL,
        flotilla_scheduler::placement::Strategy::default(),
    );
    config.sync.limits.min_interval = Duration::from_millis(100);
    config.sync.follow.poll = Duration::from_millis(50);
    let b = flotilla_api::daemon::Daemon::start_in_memory(config, a.store.clone())
        .await
        .unwrap();
    let client = Client::with_options([b.url()], a.options(Some(&a.admin))).unwrap();
    a.stop().await.unwrap();

    // B leads, fetches into its own cache (dropping stale ones), and
    // applies only what the next commit changes.
    let second = git
        .commit(&[("web.service", Some(WEB_V2))], "second")
        .unwrap();
    let info = applied(&client, "site", &second).await;
    let changes = info.status.last_changes.unwrap();
    assert_eq!(changes.replaced, ["web.service"]);
    assert!(changes.created.is_empty(), "{changes:?}");
    assert_eq!(info.status.owned.len(), 2);
    assert!(data.join("sync/site.git").is_dir());
    assert!(
        !data.join("sync/gone.git").exists(),
        "a stale cache was kept"
    );
    assert_eq!(
        text_of(&client, "web.service").await.as_deref(),
        Some(WEB_V2)
    );
    b.stop().await.unwrap();
}

/// A commit the cluster cannot hold (its unit quota) stops at the refused
/// write: what was made stays, owned by the source, the error says why,
/// and the commit is tried again until one fits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_over_the_quota_stops_and_is_tried_again() {
    let git = GitServer::start("quota").unwrap();
    let server = Server::with_daemon(|c| {
        c.sync.limits.min_interval = Duration::from_millis(100);
        c.sync.follow.poll = Duration::from_millis(50);
        c.quotas.units = 2;
    })
    .await;
    let admin = server.client();
    let three = git
        .commit(
            &[
                ("a.service", Some(WEB)),
                ("b.service", Some(WEB)),
                ("c.service", Some(WEB)),
            ],
            "three",
        )
        .unwrap();
    admin
        .put_sync_source(
            "site",
            &SourcePut {
                prune: true,
                ..source(&git.url())
            },
        )
        .await
        .unwrap();
    let info = eventually("the quota to stop the sync", DEADLINE, || async {
        let info = status(&admin, "site").await;
        info.status.last_error.is_some().then_some(info)
    })
    .await;
    let failure = info.status.last_error.unwrap();
    assert!(failure.commit.is_none(), "{failure:?}");
    assert!(
        failure
            .message
            .contains(&format!("applying commit {}", &three[..7]))
            && failure.message.contains("quota"),
        "{}",
        failure.message
    );
    assert!(info.status.last_applied.is_none());
    let owned: Vec<&str> = info.status.owned.keys().map(String::as_str).collect();
    assert_eq!(owned, ["a.service", "b.service"]);

    // A commit that fits is applied; prune removes what the source made.
    let two = git
        .commit(&[("a.service", None), ("b.service", None)], "two")
        .unwrap();
    let info = applied(&admin, "site", &two).await;
    assert!(info.status.last_error.is_none());
    assert_eq!(text_of(&admin, "a.service").await, None);
    assert_eq!(text_of(&admin, "c.service").await.as_deref(), Some(WEB));
}

/// A commit that asks for more units than one source may own is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_over_the_unit_limit_is_refused() {
    let git = GitServer::start("units").unwrap();
    let server = Server::with_daemon(|c| {
        c.sync.limits.min_interval = Duration::from_millis(100);
        c.sync.follow.poll = Duration::from_millis(50);
        c.sync.follow.tree.max_units = 2;
    })
    .await;
    let admin = server.client();
    let commit = git
        .commit(
            &[
                ("worker@.service", Some(WEB)),
                (
                    "flotilla.yaml",
                    Some("instances:\n  worker@.service: [1, 2]\n"),
                ),
            ],
            "three units",
        )
        .unwrap();
    admin
        .put_sync_source("site", &source(&git.url()))
        .await
        .unwrap();
    let failure = eventually("the commit to be refused", DEADLINE, || async {
        status(&admin, "site").await.status.last_error
    })
    .await;
    assert_eq!(failure.commit.as_deref(), Some(commit.as_str()));
    assert_eq!(
        failure.message,
        "the commit asks for 3 units, over the limit of 2 for one source"
    );
    assert!(admin.all_units().await.unwrap().is_empty());
}

/// A repository that accepts the connection and never answers: the fetch
/// is given up after the fetch timeout, and reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_that_hangs_is_given_up() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let server = Server::with_daemon(|c| {
        c.sync.limits.min_interval = Duration::from_millis(100);
        c.sync.follow.poll = Duration::from_millis(50);
        c.sync.follow.fetch_timeout = Duration::from_millis(300);
    })
    .await;
    let admin = server.client();
    admin
        .put_sync_source("site", &source(&format!("git://127.0.0.1:{port}/r.git")))
        .await
        .unwrap();
    let failure = eventually("the fetch to be given up", DEADLINE, || async {
        status(&admin, "site").await.status.last_error
    })
    .await;
    assert!(
        failure
            .message
            .ends_with("the fetch took longer than 300ms: given up"),
        "{}",
        failure.message
    );
    server.stop().await.unwrap();
    silent.abort();
}

#[tokio::test]
async fn sources_are_checked_and_only_operators_change_them() {
    let server = server().await;
    let viewer = server.client_as(Role::Viewer).await;
    let operator = server.client_as(Role::Operator).await;
    let put = source("git://127.0.0.1:1/r.git");
    let e = viewer.put_sync_source("site", &put).await.unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    operator.put_sync_source("site", &put).await.unwrap();
    assert_eq!(viewer.list_sync_sources().await.unwrap().len(), 1);
    let e = viewer.pause_sync_source("site", true).await.unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    let e = viewer.delete_sync_source("site").await.unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");

    // Bad requests are JSON errors naming what is wrong.
    for (body, why) in [
        (r#"{"repo":"http://example.com/r.git"}"#, "use https://"),
        (
            r#"{"repo":"ssh://git@example.com/r.git","credentials":"k","knownHosts":"example.com ssh-ed25519"}"#,
            "knownHosts: line 1",
        ),
        (
            r#"{"repo":"git://h/r.git","interval":"10ms"}"#,
            "interval 10ms: between 100ms and 1d",
        ),
        (
            r#"{"repo":"git://h/r.git","drift":"ignore"}"#,
            "expected `revert` or `warn`",
        ),
        (r#"{"repo":"git://h/r.git","bogus":1}"#, "bogus"),
    ] {
        let error = server
            .raw_error(
                "PUT",
                &format!("{}/v1/sync/site", server.url),
                Some("application/json"),
                body,
            )
            .await;
        assert_eq!(error.error.code, 400, "{body}");
        assert!(error.error.message.contains(why), "{}", error.error.message);
    }
    let error = server
        .raw_error("GET", &format!("{}/v1/sync/nope", server.url), None, "")
        .await;
    assert_eq!(error.error.code, 404);

    // An unreachable repository is reported, not fatal.
    let failure = eventually("the fetch failure to be reported", DEADLINE, || async {
        status(&operator, "site").await.status.last_error
    })
    .await;
    assert!(failure.commit.is_none());
    assert!(
        failure
            .message
            .starts_with("cannot fetch branch main of git://127.0.0.1:1/r.git"),
        "{}",
        failure.message
    );
}

const W_OLD: &str = "[Service]\nExecStart=/bin/sleep infinity\n";
const W_NEW: &str = "[Service]\nExecStart=/bin/sleep 1d\n";

fn hash(text: &str) -> String {
    UnitFile::parse(text).0.content_hash()
}

/// Reports `w@{i}.service` active on machine 1, started with `text`.
async fn report_running(agent: &Client, i: u8, text: &str) {
    let mut s = state(&format!("w@{i}.service"), 1);
    s.active_state = "active".into();
    s.hash = Some(hash(text));
    s.started_hash = Some(hash(text));
    let report = StateReport {
        states: vec![s],
        removed: Vec::new(),
    };
    agent.report_states(&machine_id(1), &report).await.unwrap();
}

/// The rollouts of group `workers`.
async fn workers(client: &Client) -> Vec<Rollout> {
    let list = client.list_rollouts().await.unwrap();
    list.rollouts
        .into_iter()
        .filter(|r| r.group == "workers")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_changed_together_roll_out_in_waves() {
    let git = GitServer::start("rollout").unwrap();
    let server = server().await;
    let admin = server.client();
    // Machine 1, whose agent the test plays.
    let agent = server.agent(1).await;
    let registration = agent.register_machine(&machine(1)).await.unwrap();
    let heartbeat = agent.clone();
    let beating = tokio::spawn(async move {
        while heartbeat
            .heartbeat(&machine_id(1), registration.lease)
            .await
            .is_ok()
        {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let manifest = "instances:\n  w@.service: [1, 2, 3]\nrollouts:\n  workers:\n    \
                    units: [w@.service]\n    max-parallel: 1\n    min-healthy-time: 0\n";
    let first = git
        .commit(
            &[
                ("w@.service", Some(W_OLD)),
                ("flotilla.yaml", Some(manifest)),
            ],
            "first",
        )
        .unwrap();
    admin
        .put_sync_source("site", &source(&git.url()))
        .await
        .unwrap();
    applied(&admin, "site", &first).await;
    for i in 1..=3 {
        report_running(&agent, i, W_OLD).await;
    }

    // The template changes: its instances roll out one at a time, as
    // flotilla.yaml's group says, started by the source.
    let second = git
        .commit(&[("w@.service", Some(W_NEW))], "second")
        .unwrap();
    applied(&admin, "site", &second).await;
    let started = workers(&admin).await;
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(started[0].units.len(), 3);
    assert_eq!(started[0].settings.max_parallel, 1);
    let actor = format!("sync:site@{}", &second[..7]);
    event_by(&admin, EventKind::RolloutStarted, &actor).await;
    let on_new = || async {
        let mut n = 0;
        for i in 1..=3 {
            let unit = admin
                .get_unit(&name(&format!("w@{i}.service")))
                .await
                .unwrap();
            n += usize::from(unit.hash == hash(W_NEW));
        }
        n
    };
    eventually("the first wave's new contents", DEADLINE, || async {
        (on_new().await == 1).then_some(())
    })
    .await;

    // While it rolls out, later syncs see neither drift nor a change to
    // make: one rollout, one unit on the new contents.
    two_more_fetches(&admin, "site").await;
    let info = status(&admin, "site").await;
    assert!(info.status.drifted.is_empty(), "{info:?}");
    assert!(info.status.last_error.is_none(), "{info:?}");
    assert_eq!(workers(&admin).await.len(), 1);
    assert_eq!(on_new().await, 1);

    // The agent runs each wave's new contents: the rollout completes.
    eventually("the rollout to complete", DEADLINE, || async {
        for i in 1..=3 {
            let unit = admin
                .get_unit(&name(&format!("w@{i}.service")))
                .await
                .unwrap();
            if unit.hash == hash(W_NEW) {
                report_running(&agent, i, W_NEW).await;
            }
        }
        let r = workers(&admin).await;
        (r[0].state == RolloutState::Succeeded).then_some(())
    })
    .await;
    assert_eq!(on_new().await, 3);
    beating.abort();
}

/// A source over https:// with a password from a cluster secret and a CA
/// of its own, and one over ssh:// with a deploy key and pinned host
/// keys: both followed; a secret a source names is not removed; a wrong
/// password is reported and a corrected secret used at the next fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_over_https_and_ssh_with_credentials_from_secrets() {
    let mut https = GitServer::start("sync-https").unwrap();
    https.serve_https("deploy", "right").unwrap();
    let keys = tempfile::tempdir().unwrap();
    let key = flotilla_testbed::git::ssh_keypair(keys.path()).unwrap();
    let mut ssh = GitServer::start("sync-ssh").unwrap();
    ssh.serve_ssh(&key.public_line).unwrap();
    let server = server().await;
    let operator = server.client_as(Role::Operator).await;
    let admin = server.client();
    admin
        .put_secret("git-password", b"deploy:right\n", false)
        .await
        .unwrap();
    admin
        .put_secret("deploy-key", key.private_pem.as_bytes(), false)
        .await
        .unwrap();

    let web = https.commit(&[("web.service", Some(WEB))], "web").unwrap();
    let db = ssh.commit(&[("db.service", Some(DB))], "db").unwrap();
    let made = operator
        .put_sync_source(
            "site",
            &SourcePut {
                credentials: Some("git-password".into()),
                ca: https.https_ca_pem(),
                ..source(&https.https_url().unwrap())
            },
        )
        .await
        .unwrap();
    assert_eq!(made.source.credentials.as_deref(), Some("git-password"));
    operator
        .put_sync_source(
            "data",
            &SourcePut {
                credentials: Some("deploy-key".into()),
                known_hosts: ssh.ssh_known_hosts(),
                ..source(&ssh.ssh_url().unwrap())
            },
        )
        .await
        .unwrap();
    applied(&admin, "site", &web).await;
    applied(&admin, "data", &db).await;
    assert_eq!(text_of(&admin, "web.service").await.as_deref(), Some(WEB));
    assert_eq!(text_of(&admin, "db.service").await.as_deref(), Some(DB));

    // The secrets are in use.
    let e = admin.delete_secret("deploy-key").await.unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    assert!(e.to_string().contains("sync:data"), "{e}");
    let listed = admin.list_secrets().await.unwrap();
    let used: Vec<&str> = listed
        .iter()
        .find(|s| s.name == "git-password")
        .unwrap()
        .used_by
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(used, ["sync:site"]);

    // A wrong password: the fetch fails and says so; the units stay.
    admin
        .put_secret("git-password", b"deploy:wrong", true)
        .await
        .unwrap();
    let v2 = https
        .commit(&[("web.service", Some(WEB_V2))], "v2")
        .unwrap();
    let failed = eventually("the fetch to fail", DEADLINE, || async {
        status(&admin, "site").await.status.last_error
    })
    .await;
    assert!(failed.commit.is_none(), "{failed:?}");
    assert!(
        failed.message.contains("cannot fetch"),
        "{}",
        failed.message
    );
    assert!(!failed.message.contains("wrong"), "{}", failed.message);
    assert_eq!(text_of(&admin, "web.service").await.as_deref(), Some(WEB));
    // Put right: the next fetch uses it.
    admin
        .put_secret("git-password", b"deploy:right", true)
        .await
        .unwrap();
    let info = applied(&admin, "site", &v2).await;
    assert!(info.status.last_error.is_none());
    assert_eq!(
        text_of(&admin, "web.service").await.as_deref(),
        Some(WEB_V2)
    );

    // An ssh source without host keys, or credentials on git://: refused.
    for (put, why) in [
        (
            SourcePut {
                credentials: Some("deploy-key".into()),
                ..source(&ssh.ssh_url().unwrap())
            },
            "host keys",
        ),
        (
            SourcePut {
                credentials: Some("git-password".into()),
                ..source("git://127.0.0.1/x.git")
            },
            "no credentials",
        ),
        (source("http://127.0.0.1/x.git"), "use https://"),
    ] {
        let e = operator.put_sync_source("bad", &put).await.unwrap_err();
        assert_eq!(e.status(), Some(400), "{e}");
        assert!(e.to_string().contains(why), "{e}");
    }
}

/// A source with signers: an unsigned commit, or one signed by another
/// key, is refused and reported; the next commit signed by a listed key
/// is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_with_signers_applies_only_their_commits() {
    let git = GitServer::start("sync-signed").unwrap();
    let keys = tempfile::tempdir().unwrap();
    let ops = flotilla_testbed::ssh_keypair(keys.path()).unwrap();
    let stranger = flotilla_testbed::ssh_keypair(keys.path()).unwrap();
    let server = server().await;
    let admin = server.client();
    let first = git
        .commit_signed(&[("web.service", Some(WEB))], "first", &ops)
        .unwrap();
    admin
        .put_sync_source(
            "site",
            &SourcePut {
                signers: Some(format!("{}\n", ops.public_line)),
                ..source(&git.url())
            },
        )
        .await
        .unwrap();
    applied(&admin, "site", &first).await;

    for signer in [None, Some(&stranger)] {
        let files = [("web.service", Some(WEB_V2))];
        let bad = match signer {
            None => git.commit(&files, "unsigned").unwrap(),
            Some(key) => git.commit_signed(&files, "stranger", key).unwrap(),
        };
        let failure = refused(&admin, "site", &bad).await;
        assert!(
            failure
                .message
                .contains("only commits signed by the source's signers"),
            "{}",
            failure.message
        );
        assert_eq!(text_of(&admin, "web.service").await.as_deref(), Some(WEB));
    }
    let good = git
        .commit_signed(&[("web.service", Some(WEB_V2))], "signed", &ops)
        .unwrap();
    let info = applied(&admin, "site", &good).await;
    assert!(info.status.last_error.is_none());
    assert_eq!(
        text_of(&admin, "web.service").await.as_deref(),
        Some(WEB_V2)
    );
}
