//! A test tool, not a product binary: one raft server with the real
//! peer transport and nothing else (no API, no scheduler), so that tests can
//! run a raft cluster of real processes talking mutual TLS, and kill them.
//!
//! `flotilla-raft-peer DATA_DIR ID ID=https://HOST:PORT[,...]`: the cluster
//! CA must be in `DATA_DIR/tls/`. Prints `ready` once it listens, then
//! serves requests on its standard input, one per line, each answered on
//! standard output with its number (in any order, as they complete), until
//! its standard input closes or it is killed:
//!
//! - `N get KEY` -> `N value VALUE` or `N absent`
//! - `N put KEY VALUE` -> `N ok`
//! - `N cas KEY EXPECTED|- NEW` -> `N swapped` or `N kept` (`-`: absent)
//! - any failure -> `N error REASON`

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use flotilla_api::peer::{DialOptions, PeerLimits, PeerListener, PeerTls, PeerTransport};
use flotilla_api::tls::{ClusterCa, TLS_DIR};
use flotilla_store::raft::{RaftOptions, RaftStore};
use flotilla_store::{Compare, CompareOp, Store, Txn, TxnOp};

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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
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
        let store = Arc::new(store);
        let out = Arc::new(Mutex::new(std::io::stdout()));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        // Until standard input closes (the test dropped its handle).
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        while let Some(line) = rx.recv().await {
            let (store, out) = (store.clone(), out.clone());
            tokio::spawn(async move {
                let (number, answer) = serve(&*store, &line).await;
                let mut out = out
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let _ = writeln!(out, "{number} {answer}");
                let _ = out.flush();
            });
        }
        listener.shutdown().await;
        store.close().await;
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}

/// Answers one request line: its number and the answer.
async fn serve<'a>(store: &dyn Store, line: &'a str) -> (&'a str, String) {
    let words: Vec<&str> = line.split_whitespace().collect();
    let number = words.first().copied().unwrap_or("0");
    let answer = match words.get(1..).unwrap_or_default() {
        ["get", key] => match store.get(key).await {
            Ok(r) => match r.kv {
                Some(kv) => format!("value {}", String::from_utf8_lossy(&kv.value)),
                None => "absent".to_owned(),
            },
            Err(e) => format!("error {e}"),
        },
        ["put", key, value] => match store.put(key, value.as_bytes(), None).await {
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("error {e}"),
        },
        ["cas", key, expected, new] => {
            let compare = match *expected {
                "-" => Compare::absent(*key),
                v => Compare::value(*key, CompareOp::Equal, v.as_bytes().to_vec()),
            };
            let txn = Txn::new()
                .when([compare])
                .and_then([TxnOp::put(*key, new.as_bytes().to_vec())]);
            match store.txn(txn).await {
                Ok(r) if r.succeeded => "swapped".to_owned(),
                Ok(_) => "kept".to_owned(),
                Err(e) => format!("error {e}"),
            }
        }
        _ => "error unknown request".to_owned(),
    };
    (number, answer)
}
