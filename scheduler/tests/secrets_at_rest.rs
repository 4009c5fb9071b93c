//! Secrets at rest, in the real stores: the embedded store's files and a
//! real etcd hold only sealed values; a server with the cluster's key
//! opens them (after a restart too), one with another key says so; the
//! listing names the units that use each secret.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;

use flotilla_proto::DesiredState;
use flotilla_scheduler::keys::Keys;
use flotilla_scheduler::records::UnitRecord;
use flotilla_scheduler::secrets::{Secrets, SecretsError, SecretsKey};
use flotilla_store::{EmbeddedOptions, EmbeddedStore, RangeOptions, Store, Txn, TxnOp};

const VALUE: &[u8] = b"a value nobody may read at rest 4c1e";

fn key_bytes() -> [u8; 32] {
    [7u8; 32]
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

async fn put_unit(store: &dyn Store, keys: &Keys, name: &str, text: &str) {
    let record = UnitRecord {
        text: text.to_owned(),
        hash: "h".to_owned(),
        desired_state: DesiredState::Launched,
    };
    let key = format!("{}{name}", keys.units());
    store
        .txn(Txn::new().and_then([TxnOp::put(key, serde_json::to_vec(&record).unwrap())]))
        .await
        .unwrap();
}

/// Everything in the store, keys and values.
async fn dump(store: &dyn Store) -> Vec<u8> {
    let all = store.range("", RangeOptions::default()).await.unwrap();
    let mut out = Vec::new();
    for kv in all.kvs {
        out.extend_from_slice(kv.key.as_bytes());
        out.extend_from_slice(&kv.value);
    }
    out
}

#[tokio::test]
async fn embedded_files_hold_only_sealed_values() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::default();
    {
        let (embedded, _) = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())
            .await
            .unwrap();
        let embedded = Arc::new(embedded);
        let store: Arc<dyn Store> = embedded.clone();
        let secrets = Secrets::new(
            store.clone(),
            keys.clone(),
            SecretsKey::from_bytes(&key_bytes()),
        );
        secrets.put("db", VALUE, false).await.unwrap();
        assert!(!contains(&dump(&*store).await, VALUE));
        embedded.close().await;
    }
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !contains(&bytes, VALUE),
            "{} holds the value",
            entry.display()
        );
    }
    // Opened again by a server with the same key: the value opens.
    let (embedded, _) = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())
        .await
        .unwrap();
    let embedded = Arc::new(embedded);
    let store: Arc<dyn Store> = embedded.clone();
    let secrets = Secrets::new(store, keys.clone(), SecretsKey::from_bytes(&key_bytes()));
    let values = secrets.values(&["db"]).await.unwrap();
    assert_eq!(
        flotilla_proto::secret::decode_value(&values[0].value).unwrap(),
        VALUE
    );
    embedded.close().await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[cfg(feature = "etcd")]
#[tokio::test]
async fn etcd_holds_only_sealed_values_and_servers_share_the_key() {
    use flotilla_store::{EtcdConfig, EtcdStore};
    use flotilla_testbed::Etcd;

    let etcd = Etcd::start().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        EtcdStore::connect(EtcdConfig::new([etcd.endpoint()]))
            .await
            .unwrap(),
    );
    let keys = Keys::default();
    let first = Secrets::new(
        store.clone(),
        keys.clone(),
        SecretsKey::from_bytes(&key_bytes()),
    );
    first.claim_key().await.unwrap();
    first.put("db", VALUE, false).await.unwrap();
    first.put("unused", b"x", false).await.unwrap();
    assert!(!contains(&dump(&*store).await, VALUE));

    // A second server with the same key file reads it.
    let second = Secrets::new(
        store.clone(),
        keys.clone(),
        SecretsKey::from_bytes(&key_bytes()),
    );
    second.claim_key().await.unwrap();
    let values = second.values(&["db"]).await.unwrap();
    assert_eq!(
        flotilla_proto::secret::decode_value(&values[0].value).unwrap(),
        VALUE
    );
    // One with a key of its own says so, rather than open garbage; it is
    // refused when it starts, and the cluster's servers are not.
    let stray = Secrets::new(store.clone(), keys.clone(), SecretsKey::generate().unwrap());
    match stray.claim_key().await {
        Err(SecretsError::KeyMismatch { recorded, ours }) => assert_ne!(recorded, ours),
        other => panic!("{other:?}"),
    }
    match stray.values(&["db"]).await {
        Err(SecretsError::WrongKey { name, .. }) => assert_eq!(name, "db"),
        other => panic!("{other:?}"),
    }

    // The listing says which units use which secret.
    put_unit(
        &*store,
        &keys,
        "app.service",
        "[Container]\nImage=x\nSecret=db,type=env,target=DB\n",
    )
    .await;
    put_unit(
        &*store,
        &keys,
        "plain.service",
        "[Service]\nExecStart=/bin/true\n",
    )
    .await;
    let listed = second.list().await.unwrap();
    let used: Vec<(&str, Vec<String>)> = listed
        .iter()
        .map(|s| (s.name.as_str(), s.used_by.clone()))
        .collect();
    assert_eq!(
        used,
        vec![("db", vec!["app.service".to_owned()]), ("unused", vec![])]
    );

    // A secret in use is not removed; once no unit names it, it is.
    match second.remove("db").await {
        Err(SecretsError::InUse { units, .. }) => assert_eq!(units, vec!["app.service"]),
        other => panic!("{other:?}"),
    }
    assert_eq!(second.list().await.unwrap().len(), 2);
    put_unit(&*store, &keys, "app.service", "[Container]\nImage=x\n").await;
    second.remove("db").await.unwrap();
    let names: Vec<String> = second
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec!["unused"]);
    assert!(!contains(&dump(&*store).await, b"secrets/value/db"));
}
