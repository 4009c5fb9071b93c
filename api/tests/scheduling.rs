//! fleet's scheduling scenarios on a real server (embedded store, leader,
//! reconcile loop) over real HTTP, with simulated agents: in-process
//! clients that use the real agent endpoints (register, heartbeat, the
//! units feed, state reports), no systemd.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use flotilla_api::client::{Client, ClientOptions};
use flotilla_api::daemon::Daemon;
use flotilla_api::tls::ServerTrust;
use flotilla_proto::trust::{Role, TokenCreate};
use flotilla_proto::wire::{Unit, UnitPut};
use flotilla_proto::{Capacity, DesiredState, Machine, MachineId, UnitName};
use flotilla_scheduler::placement::Strategy;
use tokio::task::JoinHandle;

const TTL: Duration = Duration::from_secs(1);
const DEADLINE: Duration = Duration::from_secs(30);

// The cluster's history, on the same servers and simulated agents.
#[path = "scheduling/events.rs"]
mod events;
#[path = "support/mod.rs"]
mod support;

/// A server on a temporary directory, stopped when the test ends.
struct Server {
    daemon: Option<Daemon>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(strategy: Strategy) -> Server {
        Server::start_with_ttl(strategy, TTL).await
    }

    /// A server whose machines live `machine_ttl` without a heartbeat.
    async fn start_with_ttl(strategy: Strategy, machine_ttl: Duration) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let daemon = Daemon::start(support::daemon_config(
            dir.path().join("data"),
            machine_ttl,
            strategy,
        ))
        .await
        .unwrap();
        Server {
            daemon: Some(daemon),
            _dir: dir,
        }
    }

    /// A client with `token`, trusting the cluster CA.
    fn client_with(&self, token: &str) -> Client {
        let daemon = self.daemon.as_ref().unwrap();
        Client::with_options(
            [daemon.url()],
            ClientOptions {
                token: Some(token.to_owned()),
                trust: ServerTrust::CaPem(daemon.trust().ca.cert_pem().as_bytes().to_vec()),
                identity: None,
            },
        )
        .unwrap()
    }

    /// A client with the cluster's first admin token.
    fn client(&self) -> Client {
        let path = self.daemon.as_ref().unwrap().admin_token_path().unwrap();
        self.client_with(std::fs::read_to_string(path).unwrap().trim())
    }

    /// A client acting as machine `n`, which joins with a join token.
    async fn agent_client(&self, n: u8) -> Client {
        let join = self
            .client()
            .create_token(&TokenCreate {
                role: Role::Join,
                name: format!("join {n}"),
                ttl_ms: None,
                uses: Some(1),
            })
            .await
            .unwrap();
        let created = self
            .client_with(&join.token)
            .join(&machine_id(n))
            .await
            .unwrap();
        self.client_with(&created.token)
    }

    async fn stop(mut self) {
        if let Some(d) = self.daemon.take() {
            d.stop().await.unwrap();
        }
    }
}

fn machine_id(n: u8) -> MachineId {
    MachineId::parse(&format!("{:032x}", u128::from(n))).unwrap()
}

/// A simulated agent: joins, registers its machine and keeps its lease
/// alive until it is killed.
struct Agent {
    id: MachineId,
    lease: i64,
    client: Client,
    heartbeat: JoinHandle<()>,
}

impl Agent {
    async fn join(server: &Server, n: u8, metadata: &[(&str, &str)], cpu_millis: u64) -> Agent {
        let client = server.agent_client(n).await;
        let machine = Machine {
            id: machine_id(n),
            hostname: format!("host{n}"),
            addresses: vec![format!("10.0.0.{n}")],
            metadata: metadata
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            capacity: Capacity {
                cpu_millis,
                memory_bytes: 8 << 30,
            },
            agent_version: "simulated".into(),
        };
        let reg = client.register_machine(&machine).await.unwrap();
        let heartbeat = tokio::spawn({
            let client = client.clone();
            let id = machine.id.clone();
            async move {
                loop {
                    tokio::time::sleep(TTL / 5).await;
                    let _ = client.heartbeat(&id, reg.lease).await;
                }
            }
        });
        Agent {
            id: machine.id,
            lease: reg.lease,
            client,
            heartbeat,
        }
    }

    /// Stops heartbeating, as a crashed host would: the lease runs out.
    fn kill(&self) {
        self.heartbeat.abort();
    }

    /// The units the server tells this machine to run.
    async fn units(&self) -> BTreeSet<String> {
        let feed = self
            .client
            .machine_units(&self.id, None, Duration::ZERO)
            .await
            .unwrap();
        feed.units.into_iter().map(|u| u.name).collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

async fn launch(client: &Client, name: &str, text: &str) {
    let put = UnitPut {
        desired_state: Some(DesiredState::Launched),
        text: Some(text.to_owned()),
        ..UnitPut::default()
    };
    client
        .put_unit(&UnitName::parse(name).unwrap(), &put)
        .await
        .unwrap();
}

fn service(fleet: &str) -> String {
    format!("[Service]\nExecStart=/bin/sleep 1000\n[X-Fleet]\n{fleet}\n")
}

/// Waits, following the server's watch, until `check` gives a value.
async fn eventually<T, F, Fut>(client: &Client, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut index = 0;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "timed out waiting for {what}");
        index = client
            .watch(index, left.min(Duration::from_secs(1)))
            .await
            .unwrap();
    }
}

async fn units(client: &Client) -> BTreeMap<String, Unit> {
    client
        .all_units()
        .await
        .unwrap()
        .into_iter()
        .map(|u| (u.name.clone(), u))
        .collect()
}

/// Waits until every named unit is either placed or has a reason it is
/// not, and returns them.
async fn settled(client: &Client, names: &[&str]) -> BTreeMap<String, Unit> {
    eventually(client, "every unit placed or unschedulable", || async {
        let all = units(client).await;
        names
            .iter()
            .all(|n| {
                all.get(*n)
                    .is_some_and(|u| u.machine_id.is_some() || u.unscheduled_reason.is_some())
            })
            .then_some(all)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_of_pairs_share_a_machine_and_move_together() {
    let server = Server::start(Strategy::Spread).await;
    let c = server.client();
    let agents = [
        Agent::join(&server, 1, &[], 4000).await,
        Agent::join(&server, 2, &[], 4000).await,
        Agent::join(&server, 3, &[], 4000).await,
    ];
    for i in 1..=3 {
        launch(&c, &format!("app{i}.service"), &service("")).await;
        launch(
            &c,
            &format!("sidecar{i}.service"),
            &service(&format!("MachineOf=app{i}.service")),
        )
        .await;
    }
    let names = [
        "app1.service",
        "app2.service",
        "app3.service",
        "sidecar1.service",
        "sidecar2.service",
        "sidecar3.service",
    ];
    let all = eventually(&c, "all six placed", || async {
        let all = units(&c).await;
        names
            .iter()
            .all(|n| all.get(*n).is_some_and(|u| u.machine_id.is_some()))
            .then_some(all)
    })
    .await;
    for i in 1..=3 {
        assert_eq!(
            all[&format!("app{i}.service")].machine_id,
            all[&format!("sidecar{i}.service")].machine_id,
            "pair {i} split"
        );
    }

    // The machine of pair 1 dies: the pair moves together.
    let dead = all["app1.service"].machine_id.clone().unwrap();
    agents.iter().find(|a| a.id == dead).unwrap().kill();
    let moved = eventually(&c, "pair 1 moved off the dead machine", || async {
        let all = units(&c).await;
        let app = all["app1.service"].machine_id.clone()?;
        let sidecar = all["sidecar1.service"].machine_id.clone()?;
        (app != dead && app == sidecar).then_some(all)
    })
    .await;
    for i in 2..=3 {
        assert_eq!(
            moved[&format!("app{i}.service")].machine_id,
            moved[&format!("sidecar{i}.service")].machine_id
        );
        assert_ne!(
            moved[&format!("app{i}.service")].machine_id,
            Some(dead.clone())
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_mutually_conflicting_units_on_three_machines() {
    let server = Server::start(Strategy::Spread).await;
    let c = server.client();
    let _agents = [
        Agent::join(&server, 1, &[], 4000).await,
        Agent::join(&server, 2, &[], 4000).await,
        Agent::join(&server, 3, &[], 4000).await,
    ];
    let names: Vec<String> = (1..=5).map(|i| format!("lonely{i}.service")).collect();
    for n in &names {
        launch(&c, n, &service("Conflicts=lonely*.service")).await;
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let all = settled(&c, &refs).await;
    let placed: Vec<&Unit> = refs
        .iter()
        .map(|n| &all[*n])
        .filter(|u| u.machine_id.is_some())
        .collect();
    assert_eq!(placed.len(), 3, "{all:#?}");
    let machines: BTreeSet<_> = placed.iter().map(|u| u.machine_id.clone()).collect();
    assert_eq!(machines.len(), 3, "two conflicting units share a machine");
    for n in &refs {
        let u = &all[*n];
        if u.machine_id.is_none() {
            let reason = u.unscheduled_reason.as_deref().unwrap();
            assert!(reason.contains("conflict"), "{n}: {reason}");
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_declared_one_way_holds_both_ways() {
    let server = Server::start(Strategy::Spread).await;
    let c = server.client();
    let _agent = Agent::join(&server, 1, &[], 4000).await;
    // Only `polite` declares the conflict; `plain` arrives first.
    launch(&c, "plain.service", &service("")).await;
    settled(&c, &["plain.service"]).await;
    launch(&c, "polite.service", &service("Conflicts=plain.service")).await;
    let all = settled(&c, &["plain.service", "polite.service"]).await;
    assert!(all["plain.service"].machine_id.is_some());
    assert!(all["polite.service"].machine_id.is_none());

    // A second machine joins: the unschedulable unit is placed there.
    let second = Agent::join(&server, 2, &[], 4000).await;
    let placed = eventually(&c, "polite.service placed on the new machine", || async {
        units(&c).await["polite.service"].machine_id.clone()
    })
    .await;
    assert_eq!(placed, second.id);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_unit_runs_on_every_matching_machine_including_later_ones() {
    let server = Server::start(Strategy::Spread).await;
    let c = server.client();
    let worker1 = Agent::join(&server, 1, &[("role", "worker")], 4000).await;
    let db = Agent::join(&server, 2, &[("role", "db")], 4000).await;
    launch(
        &c,
        "exporter.service",
        &service("Global=true\nMachineMetadata=role=worker"),
    )
    .await;

    eventually(&c, "the global unit in worker1's feed", || async {
        worker1
            .units()
            .await
            .contains("exporter.service")
            .then_some(())
    })
    .await;
    assert!(!db.units().await.contains("exporter.service"));
    // The scheduler never places a global unit on one machine.
    assert_eq!(units(&c).await["exporter.service"].machine_id, None);

    let worker3 = Agent::join(&server, 3, &[("role", "worker")], 4000).await;
    eventually(&c, "the global unit in the new worker's feed", || async {
        worker3
            .units()
            .await
            .contains("exporter.service")
            .then_some(())
    })
    .await;

    // An operator turns the db machine into a worker: it gets the unit too.
    let patch = flotilla_proto::wire::MachinePatch {
        metadata: [("role".to_owned(), Some("worker".to_owned()))].into(),
    };
    let patched = c.patch_machine(&db.id, &patch).await.unwrap();
    assert_eq!(patched.machine.metadata["role"], "worker");
    eventually(
        &c,
        "the global unit in the patched machine's feed",
        || async { db.units().await.contains("exporter.service").then_some(()) },
    )
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacing_unit_takes_the_machine_and_the_replaced_one_moves() {
    let server = Server::start(Strategy::Spread).await;
    let c = server.client();
    let _agents = [
        Agent::join(&server, 1, &[], 4000).await,
        Agent::join(&server, 2, &[], 4000).await,
    ];
    launch(&c, "old.service", &service("")).await;
    let all = settled(&c, &["old.service"]).await;
    let home = all["old.service"].machine_id.clone().unwrap();

    launch(&c, "new.service", &service("Replaces=old.service")).await;
    let all = eventually(&c, "new.service on old's machine and old moved", || async {
        let all = units(&c).await;
        let new = all["new.service"].machine_id.clone()?;
        let old = all["old.service"].machine_id.clone()?;
        (new == home && old != home).then_some(all)
    })
    .await;
    assert_eq!(all["new.service"].machine_id, Some(home));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_are_placed_only_where_their_resources_fit() {
    let server = Server::start(Strategy::BinPack).await;
    let c = server.client();
    let _agents = [
        Agent::join(&server, 1, &[], 1000).await,
        Agent::join(&server, 2, &[], 1000).await,
    ];
    let names: Vec<String> = (1..=3).map(|i| format!("heavy{i}.service")).collect();
    for n in &names {
        launch(
            &c,
            n,
            "[Service]\nExecStart=/bin/sleep 1000\nCPUQuota=60%\n",
        )
        .await;
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let all = settled(&c, &refs).await;
    let placed: Vec<_> = refs
        .iter()
        .filter_map(|n| all[*n].machine_id.clone())
        .collect();
    assert_eq!(placed.len(), 2, "{all:#?}");
    assert_ne!(placed[0], placed[1], "two 0.6-CPU units on a 1-CPU machine");
    let waiting = refs.iter().find(|n| all[**n].machine_id.is_none()).unwrap();
    let reason = all[*waiting].unscheduled_reason.clone().unwrap();
    assert!(reason.to_lowercase().contains("cpu"), "{reason}");

    // The machines report their reserved resources.
    let machines = c.all_machines().await.unwrap();
    for m in machines {
        assert_eq!(m.used.cpu_millis, 600, "{m:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reported_state_makes_a_unit_launched() {
    let server = Server::start(Strategy::Spread).await;
    let c = server.client();
    let agent = Agent::join(&server, 1, &[], 4000).await;
    launch(&c, "web.service", &service("")).await;
    // The agent's feed carries the unit once it is placed; the agent
    // answers with its systemd state.
    let feed = eventually(&c, "web.service in the feed", || async {
        let feed = agent
            .client
            .machine_units(&agent.id, None, Duration::ZERO)
            .await
            .unwrap();
        feed.units
            .iter()
            .any(|u| u.name == "web.service")
            .then_some(feed)
    })
    .await;
    assert_eq!(
        units(&c).await["web.service"].current_state,
        Some(DesiredState::Loaded)
    );
    // A long poll from the feed's index returns when something changes.
    let poll = tokio::spawn({
        let c = agent.client.clone();
        let id = agent.id.clone();
        async move {
            c.machine_units(&id, Some(feed.index), Duration::from_secs(20))
                .await
        }
    });
    let state = flotilla_proto::UnitState {
        unit: UnitName::parse("web.service").unwrap(),
        machine: agent.id.clone(),
        load_state: "loaded".into(),
        active_state: "active".into(),
        sub_state: "running".into(),
        hash: None,
        started_hash: None,
        main_pid: Some(42),
        n_restarts: 0,
        container_id: None,
        health: flotilla_proto::Health::None,
        since_ms: 0,
        last_error: None,
    };
    agent
        .client
        .report_states(
            &agent.id,
            &flotilla_proto::wire::StateReport {
                states: vec![state],
                removed: vec![],
            },
        )
        .await
        .unwrap();
    eventually(&c, "web.service launched", || async {
        (units(&c).await["web.service"].current_state == Some(DesiredState::Launched)).then_some(())
    })
    .await;
    // Changing the unit's desired state wakes the agent's long poll.
    let stop = UnitPut {
        desired_state: Some(DesiredState::Loaded),
        ..UnitPut::default()
    };
    c.put_unit(&UnitName::parse("web.service").unwrap(), &stop)
        .await
        .unwrap();
    let woke = tokio::time::timeout(DEADLINE, poll)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let web = woke.units.iter().find(|u| u.name == "web.service").unwrap();
    assert_eq!(web.desired_state, DesiredState::Loaded);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_acts_only_as_itself() {
    let server = Server::start(Strategy::Spread).await;
    let c = server.client();
    let one = Agent::join(&server, 1, &[("role", "web")], 4000).await;
    let two = Agent::join(&server, 2, &[("role", "db")], 4000).await;
    launch(&c, "db.service", &service("MachineMetadata=role=db")).await;
    let placed = settled(&c, &["db.service"]).await;
    assert_eq!(placed["db.service"].machine_id.as_ref(), Some(&two.id));
    let machines = c.all_machines().await.unwrap();
    let states = c.all_states(&Default::default()).await.unwrap();

    // Machine 1 tries to be machine 2 on every agent route.
    let forbidden = |what: &str, e: flotilla_api::client::ClientError| {
        assert_eq!(e.status(), Some(403), "{what}: {e}");
    };
    let mut hijack = machines
        .iter()
        .find(|m| m.machine.id == two.id)
        .unwrap()
        .machine
        .clone();
    hijack.metadata.insert("role".into(), "web".into());
    forbidden(
        "register",
        one.client.register_machine(&hijack).await.unwrap_err(),
    );
    forbidden(
        "heartbeat",
        one.client.heartbeat(&two.id, two.lease).await.unwrap_err(),
    );
    forbidden(
        "units",
        one.client
            .machine_units(&two.id, None, Duration::ZERO)
            .await
            .unwrap_err(),
    );
    let lie = flotilla_proto::UnitState {
        unit: UnitName::parse("db.service").unwrap(),
        machine: two.id.clone(),
        load_state: "loaded".into(),
        active_state: "failed".into(),
        sub_state: "failed".into(),
        hash: None,
        started_hash: None,
        main_pid: None,
        n_restarts: 0,
        container_id: None,
        health: flotilla_proto::Health::None,
        since_ms: 0,
        last_error: Some("lies".into()),
    };
    let report = flotilla_proto::wire::StateReport {
        states: vec![lie],
        removed: vec![],
    };
    forbidden(
        "report",
        one.client
            .report_states(&two.id, &report)
            .await
            .unwrap_err(),
    );
    // Joining again as machine 2, with a fresh join token.
    let join = c
        .create_token(&TokenCreate {
            role: Role::Join,
            name: "again".into(),
            ttl_ms: None,
            uses: None,
        })
        .await
        .unwrap();
    forbidden(
        "join",
        server
            .client_with(&join.token)
            .join(&two.id)
            .await
            .unwrap_err(),
    );
    // A lease guessed for its own machine is no lease.
    let e = one.client.heartbeat(&one.id, two.lease).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");

    // Read back: nothing changed.
    assert_eq!(c.all_machines().await.unwrap(), machines);
    assert_eq!(c.all_states(&Default::default()).await.unwrap(), states);
    assert_eq!(
        units(&c).await["db.service"].machine_id.as_ref(),
        Some(&two.id)
    );
    assert_eq!(two.units().await, BTreeSet::from(["db.service".to_owned()]));

    // Removed, machine 2's units move, and its agent is refused.
    c.remove_machine(&two.id).await.unwrap();
    let e = two.client.heartbeat(&two.id, two.lease).await.unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    server.stop().await;
}
