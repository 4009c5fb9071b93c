#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test
//! Raft clusters of real processes talking mutual TLS over loopback
//! (`flotilla-raft-peer`: the raft store with the server's peer transport).
//!
//! - The store contract (`store/tests/contract/`): two servers are
//!   processes, the third runs in the test and the contract goes through
//!   it. Each case gets a cluster of its own.
//! - A nemesis: three server processes killed with SIGKILL and restarted
//!   from their directories, and paused with SIGSTOP, while clients read,
//!   write and compare-and-swap through them; the history, with a final
//!   read of every key from every server, must be linearizable.
//!
//! The processes are killed and the directories removed when a test ends,
//! whether it passed or not.

#[path = "../../store/tests/contract/mod.rs"]
#[macro_use]
mod contract;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use contract::Fixture;
use flotilla_api::peer::{DialOptions, PeerLimits, PeerListener, PeerTls, PeerTransport};
use flotilla_api::tls::{ClusterCa, TLS_DIR};
use flotilla_store::raft::{RaftOptions, RaftStore};
use flotilla_testbed::free_port;

/// A bound on the cluster electing a leader.
const DEADLINE: Duration = Duration::from_secs(60);

/// What must live as long as the cluster: the processes (killed on drop),
/// the in-test server's listener, and the directories.
struct Guard {
    children: Vec<Child>,
    _listener: PeerListener,
    _dir: tempfile::TempDir,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn cluster() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let members: BTreeMap<u64, String> = (1..=3)
        .map(|id| (id, format!("https://127.0.0.1:{}", free_port())))
        .collect();
    let peers = members
        .iter()
        .map(|(id, url)| format!("{id}={url}"))
        .collect::<Vec<_>>()
        .join(",");
    // One CA, copied into every server's data directory.
    let (ca, _) = ClusterCa::load_or_create(&dir.path().join("1").join(TLS_DIR)).unwrap();
    for id in 2..=3 {
        let tls = dir.path().join(id.to_string()).join(TLS_DIR);
        std::fs::create_dir_all(&tls).unwrap();
        for file in ["ca.crt", "ca.key"] {
            std::fs::copy(
                dir.path().join("1").join(TLS_DIR).join(file),
                tls.join(file),
            )
            .unwrap();
        }
    }
    let mut children = Vec::new();
    for id in 2..=3u64 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flotilla-raft-peer"))
            .arg(dir.path().join(id.to_string()))
            .arg(id.to_string())
            .arg(&peers)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "server {id} did not start");
        children.push(child);
    }
    let tls = Arc::new(PeerTls::new(Arc::new(ca), 1, &members[&1]).unwrap());
    let transport = Arc::new(PeerTransport::new(
        tls.clone(),
        tokio::runtime::Handle::current(),
        DialOptions::default(),
    ));
    let store = RaftStore::open(
        &dir.path().join("1"),
        RaftOptions::new(1, members.clone()),
        transport,
    )
    .await
    .unwrap();
    let port: u16 = members[&1].rsplit(':').next().unwrap().parse().unwrap();
    let listener = PeerListener::bind(
        ([127, 0, 0, 1], port).into(),
        tls,
        store.inbox(),
        PeerLimits::default(),
    )
    .await
    .unwrap();
    let until = tokio::time::Instant::now() + DEADLINE;
    while store.status().await.unwrap().leader.is_none() {
        assert!(tokio::time::Instant::now() < until, "no leader elected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Fixture {
        store: Arc::new(store),
        guard: Box::new(Guard {
            children,
            _listener: listener,
            _dir: dir,
        }),
    }
}

contract_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    cluster
);

mod nemesis {
    use std::collections::HashMap;
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::process::ChildStdin;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use flotilla_testbed::linearizability::{Budget, Op, Outcome, Recorder, Value};
    use flotilla_testbed::rng::XorShift;
    use tokio::sync::oneshot;
    use tokio::time::Instant;

    use super::*;

    /// How long a client waits for an answer before it counts the
    /// operation as unknown (a paused or killed server never answers).
    const ANSWER_WAIT: Duration = Duration::from_secs(3);

    type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<String>>>>;

    /// One server process and the requests waiting for its answers.
    struct Peer {
        child: Child,
        stdin: Mutex<ChildStdin>,
        waiting: Waiting,
        next: AtomicU64,
    }

    impl Peer {
        fn spawn(dir: &Path, id: u64, peers: &str) -> Peer {
            let mut child = Command::new(env!("CARGO_BIN_EXE_flotilla-raft-peer"))
                .arg(dir)
                .arg(id.to_string())
                .arg(peers)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut out = BufReader::new(child.stdout.take().unwrap());
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            assert_eq!(line.trim(), "ready", "server {id} did not start");
            let waiting: Waiting = Arc::default();
            let answers = waiting.clone();
            std::thread::spawn(move || {
                for line in out.lines() {
                    let Ok(line) = line else { break };
                    let Some((number, answer)) = line.split_once(' ') else {
                        continue;
                    };
                    let Ok(number) = number.parse::<u64>() else {
                        continue;
                    };
                    let tx = answers.lock().unwrap().remove(&number);
                    if let Some(tx) = tx {
                        let _ = tx.send(answer.to_owned());
                    }
                }
                // The process is gone: nobody gets an answer any more.
                answers.lock().unwrap().clear();
            });
            Peer {
                stdin: Mutex::new(child.stdin.take().unwrap()),
                child,
                waiting,
                next: AtomicU64::new(1),
            }
        }

        /// Sends a request; its answer, or `None` if none came in time.
        async fn ask(&self, request: &str) -> Option<String> {
            let number = self.next.fetch_add(1, Ordering::SeqCst);
            let (tx, rx) = oneshot::channel();
            self.waiting.lock().unwrap().insert(number, tx);
            {
                let mut stdin = self.stdin.lock().unwrap();
                if writeln!(stdin, "{number} {request}").is_err() || stdin.flush().is_err() {
                    return None;
                }
            }
            tokio::time::timeout(ANSWER_WAIT, rx).await.ok()?.ok()
        }

        fn signal(&self, signal: rustix::process::Signal) {
            rustix::process::kill_process(rustix::process::Pid::from_child(&self.child), signal)
                .unwrap();
        }
    }

    impl Drop for Peer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    struct Processes {
        dir: tempfile::TempDir,
        peers: String,
        running: Vec<Option<Arc<Peer>>>,
    }

    impl Processes {
        fn data(&self, id: u64) -> PathBuf {
            self.dir.path().join(id.to_string())
        }

        fn start(&mut self, id: u64) {
            let peer = Peer::spawn(&self.data(id), id, &self.peers);
            self.running[(id - 1) as usize] = Some(Arc::new(peer));
        }

        fn kill(&mut self, id: u64) {
            // Dropping the last handle kills it (SIGKILL) and reaps it.
            self.running[(id - 1) as usize] = None;
        }

        fn live(&self) -> Vec<Arc<Peer>> {
            self.running.iter().flatten().cloned().collect()
        }
    }

    const KEYS: u64 = 3;

    fn decode(answer: &str) -> Option<Option<Value>> {
        if answer == "absent" {
            return Some(None);
        }
        answer
            .strip_prefix("value ")
            .map(|v| Some(v.parse().unwrap()))
    }

    async fn operate(recorder: &Recorder, client: u64, peer: &Peer, choice: u64, counter: u64) {
        let key = format!("/register/{}", choice % KEYS);
        let new: Value = (client << 32) | counter;
        match (choice / KEYS) % 3 {
            0 => {
                let pending = recorder.call(client, key.clone(), Op::Read);
                match peer
                    .ask(&format!("get {key}"))
                    .await
                    .as_deref()
                    .and_then(decode)
                {
                    Some(value) => pending.finish(Outcome::Read(value)),
                    None => pending.finish(Outcome::Unknown),
                }
            }
            1 => {
                let pending = recorder.call(client, key.clone(), Op::Write(new));
                match peer.ask(&format!("put {key} {new}")).await.as_deref() {
                    Some("ok") => pending.finish(Outcome::Written),
                    _ => pending.finish(Outcome::Unknown),
                }
            }
            _ => {
                let Some(Some(expected)) =
                    peer.ask(&format!("get {key}")).await.as_deref().map(decode)
                else {
                    return;
                };
                let shown = expected.map_or("-".to_owned(), |v| v.to_string());
                let pending = recorder.call(client, key.clone(), Op::Cas { expected, new });
                match peer
                    .ask(&format!("cas {key} {shown} {new}"))
                    .await
                    .as_deref()
                {
                    Some("swapped") => pending.finish(Outcome::Cas(true)),
                    Some("kept") => pending.finish(Outcome::Cas(false)),
                    _ => pending.finish(Outcome::Unknown),
                }
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigkill_and_sigstop_keep_the_history_linearizable() {
        let seed = 7;
        let dir = tempfile::tempdir().unwrap();
        let members: BTreeMap<u64, String> = (1..=3)
            .map(|id| (id, format!("https://127.0.0.1:{}", free_port())))
            .collect();
        ClusterCa::load_or_create(&dir.path().join("1").join(TLS_DIR)).unwrap();
        for id in 2..=3 {
            let tls = dir.path().join(id.to_string()).join(TLS_DIR);
            std::fs::create_dir_all(&tls).unwrap();
            for file in ["ca.crt", "ca.key"] {
                std::fs::copy(
                    dir.path().join("1").join(TLS_DIR).join(file),
                    tls.join(file),
                )
                .unwrap();
            }
        }
        let mut processes = Processes {
            peers: members
                .iter()
                .map(|(id, url)| format!("{id}={url}"))
                .collect::<Vec<_>>()
                .join(","),
            dir,
            running: vec![None, None, None],
        };
        for id in 1..=3 {
            processes.start(id);
        }
        let processes = Arc::new(tokio::sync::Mutex::new(processes));
        let recorder = Recorder::new();
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for client in 1..=3u64 {
            let (processes, recorder, stop) = (processes.clone(), recorder.clone(), stop.clone());
            clients.push(tokio::spawn(async move {
                let mut rng = XorShift::from_state(seed * 100 + client);
                let mut counter = 0;
                while !stop.load(Ordering::SeqCst) {
                    let live = processes.lock().await.live();
                    if live.is_empty() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                    let peer = live[(rng.next_u64() % live.len() as u64) as usize].clone();
                    counter += 1;
                    operate(&recorder, client, &peer, rng.next_u64(), counter).await;
                }
            }));
        }
        let mut rng = XorShift::from_state(seed);
        let mut faults = Vec::new();
        let end = Instant::now() + Duration::from_secs(12);
        while Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(300 + rng.next_u64() % 700)).await;
            let mut p = processes.lock().await;
            let id = 1 + rng.next_u64() % 3;
            let down = (1..=3).find(|&i| p.running[(i - 1) as usize].is_none());
            match (rng.next_u64() % 3, down) {
                (0, None) => {
                    faults.push(format!("kill -9 {id}"));
                    p.kill(id);
                }
                (0 | 1, Some(down)) => {
                    faults.push(format!("restart {down}"));
                    p.start(down);
                }
                _ => {
                    let Some(peer) = p.running[(id - 1) as usize].clone() else {
                        continue;
                    };
                    drop(p);
                    let pause = Duration::from_millis(200 + rng.next_u64() % 1300);
                    faults.push(format!("SIGSTOP {id} for {pause:?}"));
                    peer.signal(rustix::process::Signal::STOP);
                    tokio::time::sleep(pause).await;
                    peer.signal(rustix::process::Signal::CONT);
                }
            }
        }
        stop.store(true, Ordering::SeqCst);
        for client in clients {
            client.await.unwrap();
        }
        let mut p = processes.lock().await;
        for id in 1..=3 {
            if p.running[(id - 1) as usize].is_none() {
                p.start(id);
            }
        }
        // Every server answers a read of every key once the cluster has
        // healed; those reads end the history.
        for id in 1..=3u64 {
            let peer = p.running[(id - 1) as usize].clone().unwrap();
            for k in 0..KEYS {
                let key = format!("/register/{k}");
                let until = Instant::now() + DEADLINE;
                loop {
                    let pending = recorder.call(100 + id, key.clone(), Op::Read);
                    match peer
                        .ask(&format!("get {key}"))
                        .await
                        .as_deref()
                        .and_then(decode)
                    {
                        Some(value) => {
                            pending.finish(Outcome::Read(value));
                            break;
                        }
                        None => pending.finish(Outcome::Unknown),
                    }
                    assert!(Instant::now() < until, "server {id} never answered a read");
                }
            }
        }
        let acknowledged = recorder.acknowledged_writes();
        assert!(
            acknowledged > 20,
            "too few acknowledged writes ({acknowledged}) to show anything; faults {faults:?}"
        );
        let verdict = recorder.check(Budget::default());
        assert!(verdict.is_linearizable(), "{verdict}\nfaults: {faults:?}");
    }
}
