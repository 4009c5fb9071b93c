#![cfg(feature = "etcd")]
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test
//! The scheduler on a real etcd: leadership fenced by etcd, and quota
//! counts that follow every server's writes. The store's own contract on
//! etcd is in the store crate (`store/tests/etcd_contract.rs`).
//!
//! etcd is Debian's `etcd-server` (or `$FLOTILLA_ETCD`), started by the
//! testbed and killed, with its data, when the test ends.

use std::sync::Arc;
use std::time::Duration;

use flotilla_store::{EtcdConfig, EtcdStore, RangeOptions, Store};
use flotilla_testbed::Etcd;
use tokio::time::Instant;

/// A bound on waiting for an event.
const EVENT_DEADLINE: Duration = Duration::from_secs(60);

/// A fresh etcd and a store on it; the etcd lives as long as the guard.
async fn etcd_store() -> (Etcd, Arc<dyn Store>) {
    let etcd = Etcd::start().unwrap();
    let mut config = EtcdConfig::new([etcd.endpoint()]);
    config.request_timeout = Duration::from_secs(5);
    let store = EtcdStore::connect(config).await.unwrap();
    (etcd, Arc::new(store))
}

/// Leader election and fencing on etcd: while one server leads another
/// waits; when the leader's lease is revoked behind its back, the other
/// leads, and a write fenced on the old leadership is refused by etcd.
#[tokio::test]
async fn a_deposed_leader_cannot_write_on_etcd() {
    use flotilla_scheduler::keys::Keys;
    use flotilla_scheduler::leader::{ElectionConfig, campaign};
    use flotilla_scheduler::records::LeaderRecord;
    use flotilla_store::{Txn, TxnOp};

    let (_etcd, store) = etcd_store().await;
    let config = |id: &str| ElectionConfig {
        keys: Keys::default(),
        ttl: Duration::from_secs(2),
        record: LeaderRecord {
            id: id.into(),
            address: format!("http://{id}"),
            version: "test".into(),
        },
        follow: None,
    };
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let first = campaign(store.clone(), &config("a"), shutdown.clone())
        .await
        .unwrap();
    let second = tokio::spawn({
        let store = store.clone();
        let config = config("b");
        let shutdown = shutdown.clone();
        async move { campaign(store, &config, shutdown).await }
    });
    store.revoke(first.lease()).await.unwrap();
    let second = tokio::time::timeout(EVENT_DEADLINE, second)
        .await
        .expect("the second server leads once the first lease is gone")
        .unwrap()
        .unwrap();
    assert_ne!(second.revision(), first.revision());
    let write = |fence| {
        Txn::new()
            .when([fence])
            .and_then([TxnOp::put("/flotilla/v1/assign/m/u.service", Vec::new())])
    };
    assert!(
        !store.txn(write(first.fence())).await.unwrap().succeeded,
        "the deposed leader wrote"
    );
    assert!(store.txn(write(second.fence())).await.unwrap().succeeded);
    tokio::time::timeout(EVENT_DEADLINE, first.lost())
        .await
        .unwrap();
}

/// Two servers on one etcd: each counts the units for its quotas from
/// etcd's watch, so each sees the other's writes, and a unit past the
/// quota is refused whichever server is asked.
#[tokio::test]
async fn quota_counts_follow_every_server_on_etcd() {
    use flotilla_proto::wire::UnitPut;
    use flotilla_proto::{DesiredState, UnitName};
    use flotilla_scheduler::cluster::{Cluster, ClusterConfig};
    use flotilla_scheduler::control::{ControlError, ControlPlane};
    use flotilla_scheduler::keys::Keys;
    use flotilla_scheduler::quota::{Quota, Quotas, Usage};

    let (_etcd, store) = etcd_store().await;
    let config = ClusterConfig {
        quotas: Quotas {
            units: 3,
            ..Quotas::default()
        },
        keys: Keys::default(),
        machine_ttl: Duration::from_secs(10),
        cluster_id: flotilla_proto::ClusterId::from_bytes([1; 16]),
    };
    let a = Cluster::new(store.clone(), config.clone());
    let b = Cluster::new(store.clone(), config);
    let put = |text: &str| UnitPut {
        desired_state: Some(DesiredState::Inactive),
        text: Some(text.to_owned()),
        replace: true,
        ..UnitPut::default()
    };
    let unit = |s: &str| UnitName::parse(s).unwrap();
    let short = "[Service]\nExecStart=/bin/true\n";
    a.put_unit(&unit("a1.service"), put(short)).await.unwrap();
    b.put_unit(&unit("b1.service"), put(short)).await.unwrap();
    b.put_unit(&unit("b2.service"), put(short)).await.unwrap();

    // Waits until the server's count is what the store holds, counted by
    // reading it all.
    async fn agree(c: &Cluster, store: &dyn Store) -> Usage {
        let deadline = Instant::now() + EVENT_DEADLINE;
        loop {
            let range = store
                .range(&Keys::default().units(), RangeOptions::default())
                .await
                .unwrap();
            let want = Usage {
                count: range.kvs.len() as u64,
                bytes: range.kvs.iter().map(|kv| kv.value.len() as u64).sum(),
            };
            if c.unit_usage().await.unwrap() == want {
                return want;
            }
            assert!(
                Instant::now() < deadline,
                "the count never matched {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert_eq!(agree(&a, &*store).await.count, 3);
    let e = a
        .put_unit(&unit("a2.service"), put(short))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ControlError::QuotaExceeded {
                quota: Quota::Units,
                limit: 3,
                ..
            }
        ),
        "{e}"
    );

    // A delete on one server and a larger file on the other.
    b.delete_unit(&unit("b1.service")).await.unwrap();
    let long = format!("{short}# {}\n", "x".repeat(5000));
    a.put_unit(&unit("a1.service"), put(&long)).await.unwrap();
    let a_sees = agree(&a, &*store).await;
    let b_sees = agree(&b, &*store).await;
    assert_eq!(a_sees, b_sees);
    assert_eq!(a_sees.count, 2);
    assert!(a_sees.bytes > 5000, "{a_sees:?}");
}
