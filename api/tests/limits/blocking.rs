//! Unit files that take long to parse delay only the requests that parse
//! them: while several listings of many large and slow units run, the
//! server keeps answering health checks and heartbeats.

use std::time::Duration;

use flotilla_proto::DesiredState;
use flotilla_scheduler::keys::Keys;
use flotilla_scheduler::quota::Quotas;
use flotilla_scheduler::records::{self, UnitRecord};
use tokio::sync::mpsc;

use crate::{DEADLINE, RealServer, machine, name};

/// Listings run this many at once, more than the server's two threads.
const LISTINGS: usize = 4;

/// Health checks and heartbeats that must all get through while the
/// listings run.
const PROBES: usize = 20;

/// How long the listings may take in all (they parse megabytes).
const LISTING_DEADLINE: Duration = Duration::from_secs(600);

/// A valid unit of about `bytes` bytes whose every line continues the one
/// before: slow to parse (the parser rescans the logical line so far at
/// each continuation).
fn slow_unit(bytes: usize) -> String {
    let mut text = String::from("[Service]\nExecStart=/bin/true \\\n");
    while text.len() < bytes {
        text.push_str("a \\\n");
    }
    text.push_str("b\n");
    text
}

/// A valid unit of about `bytes` bytes of many short options.
fn large_unit(bytes: usize) -> String {
    let mut text = String::from("[Service]\nExecStart=/bin/true\n");
    let mut i = 0;
    while text.len() < bytes {
        text.push_str(&format!("Environment=VARIABLE{i}=value\n"));
        i += 1;
    }
    text
}

/// Store keys and values of units, written before the server starts (the
/// slow ones would take as long to submit as to list).
fn seed() -> Vec<(String, Vec<u8>)> {
    let keys = Keys::default();
    let record = |text: String, hash: String| {
        records::encode(&UnitRecord {
            text,
            hash,
            desired_state: DesiredState::Inactive,
        })
    };
    let mut seed = Vec::new();
    for i in 0..40 {
        let unit = name(&format!("bulk{i:02}.service"));
        seed.push((
            keys.unit(&unit),
            record(large_unit(200_000), format!("bulk{i}")),
        ));
    }
    for i in 0..4 {
        let unit = name(&format!("slow{i}.service"));
        seed.push((
            keys.unit(&unit),
            record(slow_unit(48_000), format!("slow{i}")),
        ));
    }
    seed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_of_slow_units_do_not_hold_up_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    let server = RealServer::start_in(dir.path(), Quotas::default(), seed());
    let c = server.client();
    let agent = server.agent(1).await;
    let m = machine(1);
    let lease = agent.register_machine(&m).await.unwrap().lease;

    let (done, mut finished) = mpsc::unbounded_channel();
    let listings: Vec<_> = (0..LISTINGS)
        .map(|_| {
            let slow = c.clone().with_timeout(LISTING_DEADLINE);
            let done = done.clone();
            tokio::spawn(async move {
                let units = slow.all_units().await.unwrap().len();
                let _ = done.send(());
                units
            })
        })
        .collect();

    let probes = async {
        for _ in 0..PROBES {
            c.health().await.unwrap();
            agent.heartbeat(&m.id, lease).await.unwrap();
        }
    };
    tokio::select! {
        () = probes => {}
        _ = finished.recv() => panic!(
            "a listing finished before {PROBES} health checks and heartbeats got through"
        ),
        () = tokio::time::sleep(DEADLINE) => panic!("the health checks and heartbeats stalled"),
    }

    for listing in listings {
        let units = tokio::time::timeout(LISTING_DEADLINE, listing)
            .await
            .expect("a listing did not finish")
            .unwrap();
        assert_eq!(units, 44);
    }
    server.stop();
}
