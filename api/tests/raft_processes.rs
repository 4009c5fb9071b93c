#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test
//! The store contract (`store/tests/contract/`) on a raft cluster of three
//! servers talking mutual TLS over loopback: two are real processes
//! (`flotilla-raft-peer`, the raft store with the server's peer transport),
//! the third runs in the test, and the contract goes through it. Each case
//! gets a cluster of its own; the processes are killed and the directories
//! removed when its fixture drops, whether the case passed or not.

#[path = "../../store/tests/contract/mod.rs"]
#[macro_use]
mod contract;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use contract::Fixture;
use flotilla_api::peer::{DialOptions, PeerLimits, PeerListener, PeerTls, PeerTransport};
use flotilla_api::tls::{ClusterCa, TLS_DIR};
use flotilla_store::raft::{RaftOptions, RaftStore};

/// A bound on the cluster electing a leader.
const DEADLINE: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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
