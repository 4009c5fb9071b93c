//! A test tool, not a product binary: one raft server with the real
//! peer transport and nothing else (no API, no scheduler), so that tests can
//! run a raft cluster of real processes talking mutual TLS, and kill them.
//!
//! `flotilla-raft-peer DATA_DIR ID ID=https://HOST:PORT[,...]`: the cluster
//! CA must be in `DATA_DIR/tls/`. Prints `ready` once it listens, and runs
//! until its standard input closes or it is killed.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use flotilla_api::peer::{DialOptions, PeerLimits, PeerListener, PeerTls, PeerTransport};
use flotilla_api::tls::{ClusterCa, TLS_DIR};
use flotilla_store::raft::{RaftOptions, RaftStore};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, id, peers] = args.as_slice() else {
        return Err("usage: flotilla-raft-peer DATA_DIR ID ID=https://HOST:PORT[,...]".into());
    };
    let dir = PathBuf::from(dir);
    let id: u64 = id.parse()?;
    let mut members = BTreeMap::new();
    for peer in peers.split(',') {
        let (peer_id, url) = peer.split_once('=').ok_or("a peer is ID=URL")?;
        members.insert(peer_id.parse::<u64>()?, url.to_owned());
    }
    let url = members
        .get(&id)
        .ok_or("the peers do not name this server")?
        .clone();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let ca = ClusterCa::load(&dir.join(TLS_DIR))?.ok_or("no cluster CA in DATA_DIR/tls")?;
        let tls = Arc::new(PeerTls::new(Arc::new(ca), id, &url)?);
        let transport = Arc::new(PeerTransport::new(
            tls.clone(),
            tokio::runtime::Handle::current(),
            DialOptions::default(),
        ));
        let store = RaftStore::open(&dir, RaftOptions::new(id, members.clone()), transport).await?;
        let (_, port) = flotilla_api::peer::cert::parse_peer_url(&url)?;
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let listener =
            PeerListener::bind(listen, tls, store.inbox(), PeerLimits::default()).await?;
        println!("ready");
        // Until standard input closes (the test dropped its handle).
        tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await?;
        listener.shutdown().await;
        store.close().await;
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
