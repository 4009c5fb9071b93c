//! Crash safety of `flotilla server` on its embedded store: a server killed
//! with SIGKILL in the middle of a burst of writes keeps, once restarted,
//! every write it acknowledged.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ServerProcess, TempDir};
use flotilla_proto::wire::UnitPut;
use flotilla_proto::{DesiredState, UnitName};

const WRITERS: usize = 8;
/// Acknowledged writes to wait for before the kill.
const BEFORE_KILL: usize = 150;

#[test]
fn every_acknowledged_write_survives_sigkill() {
    let dir = TempDir::new("crash");
    let data = dir.path().join("data");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut acknowledged: BTreeSet<String> = BTreeSet::new();
    for round in 0..3 {
        let server = ServerProcess::start(&data, &[]);
        let client = server.client().with_timeout(Duration::from_secs(5));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let client = client.clone();
                let acked = acked.clone();
                rt.spawn(async move {
                    for i in 0.. {
                        let name = format!("r{round}-w{w}-{i}.service");
                        let put = UnitPut {
                            desired_state: Some(DesiredState::Inactive),
                            text: Some(format!("[Service]\nExecStart=/bin/echo {name}\n")),
                            ..UnitPut::default()
                        };
                        match client
                            .put_unit(&UnitName::parse(&name).unwrap(), &put)
                            .await
                        {
                            Ok(_) => acked.lock().unwrap().push(name),
                            // The server is gone: the burst is over.
                            Err(_) => return,
                        }
                    }
                })
            })
            .collect();
        // Wait (with a deadline) for enough acknowledged writes, then kill.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while acked.lock().unwrap().len() < BEFORE_KILL {
            assert!(std::time::Instant::now() < deadline, "the burst stalled");
            std::thread::sleep(Duration::from_millis(5));
        }
        server.kill();
        for w in writers {
            rt.block_on(w).unwrap();
        }
        acknowledged.extend(acked.lock().unwrap().drain(..));

        // Every acknowledged write is there after a restart.
        let server = ServerProcess::start(&data, &[]);
        let client = server.client();
        let stored: BTreeSet<String> = rt
            .block_on(client.all_units())
            .unwrap()
            .into_iter()
            .map(|u| u.name)
            .collect();
        let lost: Vec<_> = acknowledged.difference(&stored).collect();
        assert!(
            lost.is_empty(),
            "round {round}: lost {} acknowledged writes: {lost:?}",
            lost.len()
        );
        server.kill();
    }
}
