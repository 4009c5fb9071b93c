//! Three raft-replicated stores in this process, each with a real on-disk
//! log (`RaftStore::open`), talking to each other over the servers' real
//! peer transport: mutual TLS with certificates of one cluster CA, each
//! store dialling its peers (`PeerTransport`) and listening for them
//! (`PeerListener`) on its own port of 127.0.0.1. B2 commits through the
//! leader's store; B3 writes its cluster into them before the servers
//! start on the same data directories.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flotilla_api::peer::{DialOptions, PeerLimits, PeerListener, PeerTls, PeerTransport};
use flotilla_api::tls::ClusterCa;
use flotilla_store::raft::{NodeId, RaftOptions, RaftStore};

use crate::procs::dir_bytes;

/// How long the cluster may take to elect its first leader.
const ELECTION_LIMIT: Duration = Duration::from_secs(30);

/// The peer address of the server with peer port `port`.
pub fn peer_url(port: u16) -> String {
    format!("https://127.0.0.1:{port}")
}

/// Three (or more) raft stores in process.
pub struct RaftCluster {
    pub stores: Vec<Arc<RaftStore>>,
    listeners: Vec<PeerListener>,
    pub dirs: Vec<PathBuf>,
}

impl RaftCluster {
    /// Opens a store in each of `dirs` (ids 1, 2, ...), the peers reaching
    /// each other at `https://127.0.0.1:PORT` for the `ports` given, all
    /// with certificates of `ca`.
    pub async fn open(
        dirs: Vec<PathBuf>,
        ports: &[u16],
        ca: Arc<ClusterCa>,
    ) -> anyhow::Result<RaftCluster> {
        if dirs.len() != ports.len() {
            bail!("{} directories for {} ports", dirs.len(), ports.len());
        }
        let peers: BTreeMap<NodeId, String> = ports
            .iter()
            .enumerate()
            .map(|(i, p)| (i as NodeId + 1, peer_url(*p)))
            .collect();
        let mut cluster = RaftCluster {
            stores: Vec::new(),
            listeners: Vec::new(),
            dirs: dirs.clone(),
        };
        for (i, dir) in dirs.iter().enumerate() {
            let id = i as NodeId + 1;
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let url = &peers[&id];
            let tls = Arc::new(PeerTls::new(ca.clone(), id, url).context("peer certificate")?);
            let transport = Arc::new(PeerTransport::new(
                tls.clone(),
                tokio::runtime::Handle::current(),
                DialOptions::default(),
            ));
            let store = RaftStore::open(dir, RaftOptions::new(id, peers.clone()), transport)
                .await
                .with_context(|| format!("cannot open the raft store in {}", dir.display()))?;
            let store = Arc::new(store);
            let listen = std::net::SocketAddr::from(([127, 0, 0, 1], ports[i]));
            let listener = PeerListener::bind(listen, tls, store.inbox(), PeerLimits::default())
                .await
                .with_context(|| format!("cannot listen for peers on {listen}"));
            cluster.stores.push(store);
            cluster.listeners.push(listener?);
        }
        Ok(cluster)
    }

    /// The index of the store that leads, once one does: waits for the
    /// first election.
    pub async fn leader(&self) -> anyhow::Result<usize> {
        let deadline = Instant::now() + ELECTION_LIMIT;
        loop {
            if let Some(i) = self.stores.iter().position(|s| *s.leadership().borrow()) {
                return Ok(i);
            }
            if Instant::now() > deadline {
                bail!("no raft leader within {} s", ELECTION_LIMIT.as_secs_f64());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Bytes on disk of every store's data.
    pub fn data_bytes(&self) -> u64 {
        self.dirs.iter().map(|d| dir_bytes(d)).sum()
    }

    /// Stops the stores and their listeners (their ports are free after);
    /// keeps the data.
    pub async fn close(mut self) {
        for s in &self.stores {
            s.close().await;
        }
        for l in self.listeners.drain(..) {
            l.shutdown().await;
        }
    }
}
