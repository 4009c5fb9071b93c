//! Several `flotilla server` processes on one real etcd: one leader at a
//! time, failover when it dies, no unit placed twice, and an etcd outage
//! longer than the machine TTL that moves and stops nothing.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Agent, ServerProcess, TempDir, ok};
use flotilla_api::client::Client;
use flotilla_proto::wire::{ServerResource, UnitPut};
use flotilla_proto::{DesiredState, UnitName};
use flotilla_scheduler::keys::{Key, Keys};
use flotilla_store::{EtcdConfig, EtcdStore, RangeOptions, Store};
use flotilla_testbed::Etcd;

const DEADLINE: Duration = Duration::from_secs(60);

/// `n` servers on `etcd`: the first makes the cluster CA, which the others
/// are given (copied into their data directories) before they start.
fn start_servers(dir: &TempDir, etcd: &Etcd, n: usize) -> Vec<ServerProcess> {
    (0..n)
        .map(|i| {
            // Each server records the cluster it serves in its own data
            // directory (not the default /var/lib/flotilla).
            let data = dir.path().join(format!("s{i}"));
            if i > 0 {
                common::share_ca(&dir.path().join("s0"), &data);
            }
            ServerProcess::start_args(
                &data,
                &[
                    "--listen",
                    "127.0.0.1:0",
                    "--data-dir",
                    data.to_str().unwrap(),
                    "--etcd",
                    &etcd.endpoint(),
                    "--leader-ttl",
                    "1s",
                    "--machine-ttl",
                    "3s",
                ],
            )
        })
        .collect()
}

/// A client of `servers` with the cluster's first admin token (in the data
/// directory of the server that made the cluster).
fn client(servers: &[&ServerProcess], admin: &Admin) -> Client {
    common::client_of(servers, &admin.0, &admin.1).with_timeout(Duration::from_secs(3))
}

/// The cluster CA and the first admin token, from the first server's data
/// directory (they outlive the server).
struct Admin(Vec<u8>, String);

impl Admin {
    fn of(first: &ServerProcess) -> Admin {
        Admin(first.ca_pem(), first.admin_token())
    }
}

/// Polls `check` until it gives a value, up to the deadline.
fn eventually<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    flotilla_testbed::eventually(what, DEADLINE, check)
}

fn leader(rt: &tokio::runtime::Runtime, c: &Client) -> Option<ServerResource> {
    let servers = rt.block_on(c.list_servers()).ok()?.servers;
    servers.into_iter().find(|s| s.leader)
}

/// Every assignment in etcd, read directly: unit -> machines.
fn assignments(rt: &tokio::runtime::Runtime, etcd: &Etcd) -> BTreeMap<String, BTreeSet<String>> {
    rt.block_on(async {
        let store = EtcdStore::connect(EtcdConfig::new([etcd.endpoint()]))
            .await
            .unwrap();
        let keys = Keys::default();
        let range = store
            .range(&keys.assignments(), RangeOptions::default())
            .await
            .unwrap();
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for kv in range.kvs {
            if let Some(Key::Assignment(machine, unit)) = keys.parse(&kv.key) {
                out.entry(unit.to_string())
                    .or_default()
                    .insert(machine.to_string());
            }
        }
        out
    })
}

fn launch(rt: &tokio::runtime::Runtime, c: &Client, name: &str) {
    let put = UnitPut {
        desired_state: Some(DesiredState::Launched),
        text: Some("[Service]\nExecStart=/bin/sleep 1000\n".into()),
        ..UnitPut::default()
    };
    let name = UnitName::parse(name).unwrap();
    // A server may be down mid-failover: the client moves to the next.
    eventually(&format!("{name} submitted"), || {
        rt.block_on(c.put_unit(&name, &put)).ok()
    });
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn the_leader_fails_over_and_no_unit_is_placed_twice() {
    let dir = TempDir::new("ha-failover");
    let etcd = Etcd::start().unwrap();
    let mut servers = start_servers(&dir, &etcd, 3);
    let rt = runtime();
    let all: Vec<&ServerProcess> = servers.iter().collect();
    let admin = Admin::of(&servers[0]);
    let c = client(&all, &admin);
    let first = eventually("a leader", || leader(&rt, &c));
    let listing = eventually("three servers listed", || {
        let listing = ok(&servers[0].run(dir.path(), &["list-servers"]));
        (listing.lines().count() == 4).then_some(listing)
    });
    assert_eq!(listing.matches(" yes").count(), 1, "{listing}");
    let _agents = [Agent::start(&all, 1), Agent::start(&all, 2)];

    // A burst of placements, with the leader killed in the middle of it.
    for i in 0..20 {
        launch(&rt, &c, &format!("before{i}.service"));
    }
    let leader_at = servers
        .iter()
        .position(|s| s.endpoint == first.address)
        .unwrap();
    servers.remove(leader_at).kill();
    let survivors: Vec<&ServerProcess> = servers.iter().collect();
    let c = client(&survivors, &admin);
    for i in 0..20 {
        launch(&rt, &c, &format!("after{i}.service"));
    }
    let second = eventually("a new leader", || {
        leader(&rt, &c).filter(|l| l.id != first.id)
    });
    assert_ne!(second.address, first.address);

    // Every unit ends assigned exactly once, as etcd itself says.
    let placed = eventually("all 40 units placed", || {
        let a = assignments(&rt, &etcd);
        (a.len() == 40).then_some(a)
    });
    for (unit, machines) in &placed {
        assert_eq!(machines.len(), 1, "{unit} is assigned to {machines:?}");
    }
}

#[test]
fn an_etcd_outage_longer_than_the_machine_ttl_moves_and_stops_nothing() {
    let dir = TempDir::new("ha-etcd");
    let mut etcd = Etcd::start().unwrap();
    let servers = start_servers(&dir, &etcd, 2);
    let rt = runtime();
    let all: Vec<&ServerProcess> = servers.iter().collect();
    let admin = Admin::of(&servers[0]);
    let c = client(&all, &admin);
    eventually("a leader", || leader(&rt, &c));
    let _agents = [Agent::start(&all, 1), Agent::start(&all, 2)];
    for i in 0..10 {
        launch(&rt, &c, &format!("steady{i}.service"));
    }
    let before = eventually("all 10 units placed", || {
        let a = assignments(&rt, &etcd);
        (a.len() == 10).then_some(a)
    });

    // etcd goes away for longer than the machine TTL (3 s). The pause is
    // the fault being injected, not a wait for a condition.
    etcd.stop();
    let down = rt.block_on(c.list_units(&Default::default()));
    assert!(down.is_err(), "a read with etcd down answered: {down:?}");
    std::thread::sleep(Duration::from_secs(5));
    etcd.restart().unwrap();

    // Everything recovers by itself; no unit moved or stopped.
    let units = eventually("the API answers again", || rt.block_on(c.all_units()).ok());
    assert_eq!(units.len(), 10);
    assert!(
        units
            .iter()
            .all(|u| u.desired_state == DesiredState::Launched)
    );
    // Over a few rounds of changes (heartbeats, reports), the leader, back
    // on etcd, moves nothing.
    for _ in 0..5 {
        let index = rt.block_on(c.watch(0, Duration::ZERO)).unwrap();
        let _ = rt.block_on(c.watch(index, Duration::from_secs(1)));
        assert_eq!(
            assignments(&rt, &etcd),
            before,
            "a unit moved after the outage"
        );
    }
    let machines = rt.block_on(c.all_machines()).unwrap();
    assert_eq!(
        machines.len(),
        2,
        "a machine was declared dead: {machines:?}"
    );
}

#[test]
fn servers_cut_off_from_etcd_longer_than_the_machine_ttl_move_nothing() {
    let dir = TempDir::new("ha-cutoff");
    let etcd = Etcd::start().unwrap();
    let servers = start_servers(&dir, &etcd, 1);
    let rt = runtime();
    let all: Vec<&ServerProcess> = servers.iter().collect();
    let admin = Admin::of(&servers[0]);
    let c = client(&all, &admin);
    eventually("a leader", || leader(&rt, &c));
    let _agents = [Agent::start(&all, 1), Agent::start(&all, 2)];
    for i in 0..10 {
        launch(&rt, &c, &format!("kept{i}.service"));
    }
    let before = eventually("all 10 units placed", || {
        let a = assignments(&rt, &etcd);
        (a.len() == 10).then_some(a)
    });

    // The server freezes while etcd runs on: the agents cannot heartbeat
    // through it, and etcd ends the machines' leases (TTL 3 s). The pause is
    // the fault being injected.
    servers[0].signal("STOP");
    std::thread::sleep(Duration::from_secs(6));
    servers[0].signal("CONT");

    // The machines come back (their agents register again) and keep their
    // units: liveness counted only while the store was reachable.
    eventually("both machines registered again", || {
        let machines = rt.block_on(c.all_machines()).ok()?;
        (machines.len() == 2).then_some(())
    });
    for _ in 0..5 {
        let index = rt.block_on(c.watch(0, Duration::ZERO)).unwrap();
        let _ = rt.block_on(c.watch(index, Duration::from_secs(1)));
        assert_eq!(
            assignments(&rt, &etcd),
            before,
            "a unit moved after the cut"
        );
    }
}
