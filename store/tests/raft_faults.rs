#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test
//! Faults on raft servers with their durable logs, in one process over the
//! in-process network: servers stopped and restarted from their data
//! directories, partitions, a server paused; with concurrent clients doing
//! reads, writes and compare-and-swap, whose history must be linearizable
//! and must show every acknowledged write after the cluster heals.
//!
//! The nemesis runs a few fixed seeds for a bounded time here;
//! `scripts/raft-nemesis` runs many more seeds for longer.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flotilla_store::raft::{LocalNetwork, NetworkFaults, RaftOptions, RaftStore};
use flotilla_store::{Compare, Store, StoreError, Txn, TxnOp};
use flotilla_testbed::linearizability::{Budget, Op, Outcome, Recorder, Value};
use flotilla_testbed::rng::XorShift;
use tokio::time::Instant;

/// A bound on every wait for the cluster.
const DEADLINE: Duration = Duration::from_secs(30);

/// Servers with durable logs, each of which can be stopped and started
/// again from its directory.
struct Cluster {
    network: LocalNetwork,
    dir: tempfile::TempDir,
    size: u64,
    stores: Vec<Option<Arc<RaftStore>>>,
}

impl Cluster {
    async fn start(size: u64, seed: u64) -> Cluster {
        let mut cluster = Cluster {
            network: LocalNetwork::new(seed),
            dir: tempfile::tempdir().unwrap(),
            size,
            stores: (0..size).map(|_| None).collect(),
        };
        for id in 1..=size {
            cluster.restart(id).await;
        }
        cluster
    }

    fn data(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("server-{id}"))
    }

    fn options(&self, id: u64) -> RaftOptions {
        let peers: BTreeMap<u64, String> =
            (1..=self.size).map(|i| (i, format!("local:{i}"))).collect();
        RaftOptions {
            request_timeout: Duration::from_secs(1),
            // Compaction during the run, so that restarts cross snapshots.
            snapshot_entries: 200,
            ..RaftOptions::new(id, peers)
        }
    }

    /// Starts server `id` (again) from its data directory.
    async fn restart(&mut self, id: u64) {
        assert!(self.stores[(id - 1) as usize].is_none());
        let store = RaftStore::open(&self.data(id), self.options(id), self.network.transport(id))
            .await
            .unwrap();
        let store = Arc::new(store);
        self.network.attach(id, store.inbox());
        self.stores[(id - 1) as usize] = Some(store);
    }

    /// Stops server `id`: it receives nothing more and its node stops.
    async fn stop(&mut self, id: u64) {
        self.network.detach(id);
        if let Some(store) = self.stores[(id - 1) as usize].take() {
            store.close().await;
        }
    }

    fn store(&self, id: u64) -> Option<Arc<RaftStore>> {
        self.stores[(id - 1) as usize].clone()
    }

    fn running(&self) -> Vec<u64> {
        (1..=self.size)
            .filter(|&id| self.stores[(id - 1) as usize].is_some())
            .collect()
    }

    /// Waits until every running server knows the same leader.
    async fn settled(&self) {
        let end = Instant::now() + DEADLINE;
        loop {
            let mut seen = Vec::new();
            for id in self.running() {
                let store = self.store(id).unwrap();
                seen.push(store.status().await.ok().and_then(|s| s.leader));
            }
            if let Some(Some(l)) = seen.first()
                && seen.iter().all(|s| *s == Some(*l))
            {
                return;
            }
            assert!(Instant::now() < end, "no leader agreed: {seen:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn value(store: &RaftStore, key: &str) -> Option<Vec<u8>> {
    store.get(key).await.unwrap().kv.map(|kv| kv.value.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_three_stopped_accept_no_writes_and_lose_nothing_acknowledged() {
    let mut cluster = Cluster::start(3, 5).await;
    cluster.settled().await;
    let client = cluster.store(1).unwrap();
    for i in 0..300 {
        client
            .put(&format!("/acked/{i}"), i.to_string().as_bytes(), None)
            .await
            .unwrap();
    }
    cluster.stop(2).await;
    cluster.stop(3).await;
    let write = client.put("/acked/alone", b"x", None).await;
    assert!(
        matches!(write, Err(StoreError::Unavailable { .. })),
        "{write:?}"
    );
    let read = client.get("/acked/0").await;
    assert!(
        matches!(read, Err(StoreError::Unavailable { .. })),
        "{read:?}"
    );

    // Everything comes back from disk, on every server.
    cluster.stop(1).await;
    for id in 1..=3 {
        cluster.restart(id).await;
    }
    cluster.settled().await;
    for id in 1..=3 {
        let store = cluster.store(id).unwrap();
        for i in 0..300 {
            assert_eq!(
                value(&store, &format!("/acked/{i}")).await,
                Some(i.to_string().into_bytes()),
                "server {id}, key {i}"
            );
        }
        // "/acked/alone" may be there or not: its write failed as
        // Unavailable, which may have been applied (server 1 had it in its
        // log, and may have led after the restart and committed it).
    }
    cluster
        .store(2)
        .unwrap()
        .put("/acked/after", b"y", None)
        .await
        .unwrap();
}

/// What the nemesis does next.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Stop a server (as kill -9: nothing it had not synced survives, and
    /// it acknowledged nothing it had not synced).
    Kill(u64),
    /// Start a stopped server again from its directory.
    Restart(u64),
    /// Cut a server off from the others.
    Isolate(u64),
    /// Pause a server: it neither sends nor receives for a while, then
    /// resumes where it was (a SIGSTOP of its process, as the network sees
    /// it).
    Pause(u64),
    Heal,
}

const KEYS: u64 = 4;

fn key(k: u64) -> String {
    format!("/register/{k}")
}

fn decode(bytes: &[u8]) -> Value {
    std::str::from_utf8(bytes).unwrap().parse().unwrap()
}

/// One client's operation on a random key through a random running
/// server, recorded.
async fn operate(
    recorder: &Recorder,
    client: u64,
    store: Arc<RaftStore>,
    rng: &mut XorShift,
    counter: &mut u64,
) {
    let k = rng.below(KEYS);
    let name = key(k);
    *counter += 1;
    // Unique values: client in the high bits.
    let new = (client << 32) | *counter;
    match rng.below(3) {
        0 => {
            let pending = recorder.call(client, name.clone(), Op::Read);
            match store.get(&name).await {
                Ok(r) => pending.finish(Outcome::Read(r.kv.map(|kv| decode(&kv.value)))),
                Err(_) => pending.finish(Outcome::Unknown),
            }
        }
        1 => {
            let pending = recorder.call(client, name.clone(), Op::Write(new));
            match store.put(&name, new.to_string().as_bytes(), None).await {
                Ok(_) => pending.finish(Outcome::Written),
                Err(_) => pending.finish(Outcome::Unknown),
            }
        }
        _ => {
            // Compare with what this server reads now (linearizably), or
            // with absence.
            let expected = match store.get(&name).await {
                Ok(r) => r.kv.map(|kv| decode(&kv.value)),
                Err(_) => return,
            };
            let compare = match expected {
                Some(v) => Compare::value(
                    &name,
                    flotilla_store::CompareOp::Equal,
                    v.to_string().into_bytes(),
                ),
                None => Compare::absent(&name),
            };
            let pending = recorder.call(client, name.clone(), Op::Cas { expected, new });
            let txn = Txn::new()
                .when([compare])
                .and_then([TxnOp::put(&name, new.to_string().into_bytes())]);
            match store.txn(txn).await {
                Ok(r) => pending.finish(Outcome::Cas(r.succeeded)),
                Err(_) => pending.finish(Outcome::Unknown),
            }
        }
    }
}

/// Runs clients against the cluster while the nemesis injects faults for
/// `duration`, then heals everything, reads every key from every server,
/// and checks the history.
async fn nemesis(seed: u64, duration: Duration) {
    let cluster = Arc::new(tokio::sync::Mutex::new(Cluster::start(3, seed).await));
    {
        let c = cluster.lock().await;
        c.settled().await;
        // Frames are also lost, duplicated and reordered throughout.
        c.network.set_faults(NetworkFaults {
            drop: 0.02,
            duplicate: 0.02,
            max_delay: Duration::from_millis(3),
        });
    }
    let recorder = Recorder::new();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 1..=4u64 {
        let (cluster, recorder, stop) = (cluster.clone(), recorder.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut rng = XorShift::from_state(seed * 1000 + client);
            let mut counter = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let store = {
                    let c = cluster.lock().await;
                    let running = c.running();
                    let id = running[rng.below(running.len() as u64) as usize];
                    c.store(id).unwrap()
                };
                operate(&recorder, client, store, &mut rng, &mut counter).await;
            }
        }));
    }
    let mut rng = XorShift::from_state(seed);
    let end = Instant::now() + duration;
    let mut faults = Vec::new();
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200 + rng.below(600))).await;
        let mut c = cluster.lock().await;
        let running = c.running();
        let id = 1 + rng.below(3);
        let fault = match rng.below(5) {
            // At most one server down at a time, so that the cluster goes
            // on; partitions and pauses come on top.
            0 if running.len() == 3 => Fault::Kill(id),
            0 | 1 if running.len() < 3 => {
                let down = (1..=3).find(|i| !running.contains(i)).unwrap();
                Fault::Restart(down)
            }
            2 => Fault::Isolate(id),
            3 => Fault::Pause(id),
            _ => Fault::Heal,
        };
        faults.push(fault);
        match fault {
            Fault::Kill(id) => c.stop(id).await,
            Fault::Restart(id) => c.restart(id).await,
            Fault::Isolate(id) => {
                let others: Vec<u64> = (1..=3).filter(|&i| i != id).collect();
                c.network.partition(&[&[id], &others]);
            }
            Fault::Pause(id) => {
                let others: Vec<u64> = (1..=3).filter(|&i| i != id).collect();
                c.network.partition(&[&[id], &others]);
                drop(c);
                tokio::time::sleep(Duration::from_millis(100 + rng.below(900))).await;
                cluster.lock().await.network.heal();
            }
            Fault::Heal => c.network.heal(),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    // Heal: every server running, the network whole, a leader agreed.
    let mut c = cluster.lock().await;
    c.network.heal();
    c.network.set_faults(NetworkFaults::default());
    for id in 1..=3 {
        if c.store(id).is_none() {
            c.restart(id).await;
        }
    }
    c.settled().await;
    // The final reads are part of the history: each must see the last
    // acknowledged write (or one left unknown).
    for id in 1..=3 {
        let store = c.store(id).unwrap();
        for k in 0..KEYS {
            let pending = recorder.call(100 + id, key(k), Op::Read);
            let read = store.get(&key(k)).await.unwrap();
            pending.finish(Outcome::Read(read.kv.map(|kv| decode(&kv.value))));
        }
    }
    let acknowledged = recorder.acknowledged_writes();
    assert!(
        acknowledged > 20,
        "seed {seed}: too few acknowledged writes ({acknowledged}) to show anything; faults {faults:?}"
    );
    let verdict = recorder.check(Budget::default());
    assert!(
        verdict.is_linearizable(),
        "seed {seed}: {verdict}\nfaults: {faults:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nemesis_seed_1() {
    nemesis(1, Duration::from_secs(8)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nemesis_seed_2() {
    nemesis(2, Duration::from_secs(8)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nemesis_seed_3() {
    nemesis(3, Duration::from_secs(8)).await;
}

/// For `scripts/raft-nemesis`: seeds and duration from the environment
/// (`NEMESIS_SEEDS=first..last`, `NEMESIS_SECONDS`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run by scripts/raft-nemesis"]
async fn nemesis_many_seeds() {
    let seeds = std::env::var("NEMESIS_SEEDS").unwrap_or_else(|_| "10..20".to_owned());
    let (first, last) = seeds.split_once("..").unwrap();
    let seconds: u64 = std::env::var("NEMESIS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    for seed in first.parse::<u64>().unwrap()..last.parse::<u64>().unwrap() {
        eprintln!("nemesis seed {seed} for {seconds} s");
        nemesis(seed, Duration::from_secs(seconds)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_that_lost_its_raft_log_is_refused() {
    use flotilla_store::identity::{Identity, StateLocation, new_cluster_id, write_identity};
    let dir = tempfile::tempdir().unwrap();
    // A server's directory after it served a cluster: its identity file is
    // there, its raft log is gone.
    let identity = Identity::new(
        new_cluster_id().unwrap(),
        StateLocation::Raft {
            key_prefix: "/flotilla/v1/".to_owned(),
        },
    );
    write_identity(dir.path(), &identity).unwrap();
    let network = LocalNetwork::new(9);
    let peers: BTreeMap<u64, String> = (1..=3).map(|i| (i, format!("local:{i}"))).collect();
    let opened =
        RaftStore::open(dir.path(), RaftOptions::new(1, peers), network.transport(1)).await;
    match opened {
        Err(StoreError::StateLost { missing, .. }) => {
            assert!(missing.contains("flotilla server remove 1"), "{missing}");
        }
        other => panic!("expected StateLost, got {:?}", other.err()),
    }
    // Nothing was written: no raft log was made.
    assert!(!dir.path().join(flotilla_store::raft::RAFT_DIR).exists());
}
