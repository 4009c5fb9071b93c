#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test
//! No silent empty cluster: a store knows it exists.
//!
//! The embedded store initializes a directory once (an identity file beside
//! its log) and refuses a directory that lost its log, a directory that is
//! not a store's, and the data directory of a server on etcd; it adopts a
//! directory made by an earlier version. On etcd, the cluster id is a key
//! under the prefix and each server records the id it serves in its data
//! directory ([`identity::cluster_id`]); the etcd cases run against a real
//! etcd (`flotilla_testbed::Etcd`, Debian's etcd-server or
//! `$FLOTILLA_ETCD`), which is killed and removed when the test ends.

use std::fs;
use std::path::{Path, PathBuf};

use flotilla_scheduler::identity::{self, IdentityError};
use flotilla_scheduler::keys::Keys;
use flotilla_store::identity::{
    Identity, StateLocation, new_cluster_id, read_identity, write_identity,
};
use flotilla_store::{
    EmbeddedOptions, EmbeddedStore, Initialized, RangeOptions, Recovery, Store, StoreError,
};

const WAL_0: &str = "wal-0000000000000000";

async fn open(dir: &Path) -> StoreResult {
    EmbeddedStore::open(dir, EmbeddedOptions::default()).await
}

type StoreResult = Result<(EmbeddedStore, Recovery), StoreError>;

async fn open_ok(dir: &Path) -> (EmbeddedStore, Recovery) {
    open(dir).await.expect("open the store")
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A store in `dir` with a few keys, closed.
async fn populated(dir: &Path) -> Recovery {
    let (store, recovery) = open_ok(dir).await;
    for key in ["/a", "/b", "/c"] {
        store.put(key, b"v", None).await.unwrap();
    }
    store.close().await;
    recovery
}

#[tokio::test]
async fn a_new_directory_is_initialized_once_and_keeps_its_cluster_id() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let (store, recovery) = open_ok(&dir).await;
    assert_eq!(recovery.initialized, Initialized::New);
    let identity = read_identity(&dir).unwrap().expect("an identity file");
    assert_eq!(identity.cluster_id, recovery.cluster_id);
    assert_eq!(identity.state, StateLocation::Embedded);
    assert_eq!(store.cluster_id(), recovery.cluster_id);
    let dyn_store: &dyn Store = &store;
    assert_eq!(dyn_store.cluster_id(), Some(recovery.cluster_id));
    // The server asks through the same function on every backend.
    let served = identity::cluster_id(dyn_store, &Keys::default(), &dir)
        .await
        .unwrap();
    assert_eq!(served, recovery.cluster_id);
    store.close().await;

    let (store, again) = open_ok(&dir).await;
    assert_eq!(again.initialized, Initialized::Before);
    assert_eq!(again.cluster_id, recovery.cluster_id);
    store.close().await;
    assert_eq!(names(&dir), ["LOCK", "identity", WAL_0]);

    // An empty directory that exists is new too, as is one with only
    // `LOCK` and `lost+found` (a file system of its own).
    let empty = parent.path().join("empty");
    fs::create_dir_all(empty.join("lost+found")).unwrap();
    fs::write(empty.join("LOCK"), b"").unwrap();
    let (store, other) = open_ok(&empty).await;
    assert_eq!(other.initialized, Initialized::New);
    assert_ne!(
        other.cluster_id, recovery.cluster_id,
        "a new cluster, a new id"
    );
    store.close().await;
}

/// Checks a refusal: the error, its message, and that nothing was written.
fn assert_state_lost(err: StoreError, dir: &Path, cluster: &Recovery, missing: &str) {
    let message = err.to_string();
    match &err {
        StoreError::StateLost {
            dir: d,
            cluster_id,
            missing: m,
            ..
        } => {
            assert_eq!(d, dir);
            assert_eq!(*cluster_id, cluster.cluster_id);
            assert!(m.contains(missing), "{m}");
        }
        other => panic!("expected StateLost, got {other:?}"),
    }
    assert!(!err.is_temporary());
    for part in [
        &cluster.cluster_id.to_string(),
        "restore the directory from a backup",
        "to really start a new cluster, empty the directory",
    ] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }
}

#[tokio::test]
async fn an_emptied_log_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = populated(dir.path()).await;
    let wal = dir.path().join(WAL_0);
    fs::write(&wal, b"").unwrap();
    let err = open(dir.path()).await.unwrap_err();
    assert_state_lost(
        err,
        dir.path(),
        &cluster,
        &format!("its log {WAL_0} is empty (0 bytes)"),
    );
    assert_eq!(fs::metadata(&wal).unwrap().len(), 0, "nothing was repaired");
    // Refused again, and again: nothing changed on the way.
    assert!(matches!(
        open(dir.path()).await,
        Err(StoreError::StateLost { .. })
    ));
    // Zeros (a file whose blocks were never written) are no better.
    fs::write(&wal, [0; 4096]).unwrap();
    assert!(matches!(
        open(dir.path()).await,
        Err(StoreError::StateLost { .. })
    ));
}

#[tokio::test]
async fn a_deleted_log_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = populated(dir.path()).await;
    fs::remove_file(dir.path().join(WAL_0)).unwrap();
    let err = open(dir.path()).await.unwrap_err();
    assert_state_lost(
        err,
        dir.path(),
        &cluster,
        "its log and snapshots are missing",
    );
    assert_eq!(
        names(dir.path()),
        ["LOCK", "identity"],
        "no log was created"
    );
}

#[tokio::test]
async fn a_log_lost_after_a_snapshot_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let (store, cluster) = open_ok(dir.path()).await;
    store.put("/a", b"1", None).await.unwrap();
    store.checkpoint().await.unwrap();
    store.put("/b", b"2", None).await.unwrap();
    store.close().await;
    let wal = dir.path().join("wal-0000000000000001");
    let snapshot = "snapshot-0000000000000001";
    fs::remove_file(&wal).unwrap();
    let err = open(dir.path()).await.unwrap_err();
    assert_state_lost(
        err,
        dir.path(),
        &cluster,
        &format!("the writes since snapshot {snapshot} are gone"),
    );
    fs::write(&wal, b"").unwrap();
    let err = open(dir.path()).await.unwrap_err();
    assert_state_lost(err, dir.path(), &cluster, "is empty (0 bytes)");
    // And with the snapshot gone as well.
    fs::remove_file(&wal).unwrap();
    fs::remove_file(dir.path().join(snapshot)).unwrap();
    let err = open(dir.path()).await.unwrap_err();
    assert_state_lost(
        err,
        dir.path(),
        &cluster,
        "its log and snapshots are missing",
    );
}

#[tokio::test]
async fn a_directory_of_other_files_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
    fs::create_dir(dir.path().join("ssh")).unwrap();
    let err = open(dir.path()).await.unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(&err, StoreError::NotAStore { dir: d, .. } if d == dir.path()),
        "{err:?}"
    );
    assert!(
        message.contains("it holds passwd, ssh but no identity file"),
        "{message}"
    );
    assert!(message.contains("check --data-dir"), "{message}");
    assert_eq!(names(dir.path()), ["passwd", "ssh"], "not even a LOCK file");
}

#[tokio::test]
async fn a_directory_made_by_an_earlier_version_is_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let before = populated(dir.path()).await;
    // An earlier version wrote no identity file.
    fs::remove_file(dir.path().join("identity")).unwrap();
    let (store, recovery) = open_ok(dir.path()).await;
    assert_eq!(recovery.initialized, Initialized::Adopted);
    assert_ne!(recovery.cluster_id, before.cluster_id, "a new id is made");
    let keys = store.range("/", RangeOptions::default()).await.unwrap();
    assert_eq!(keys.kvs.len(), 3, "the state is kept");
    let identity = read_identity(dir.path()).unwrap().unwrap();
    assert_eq!(identity.cluster_id, recovery.cluster_id);
    store.close().await;
    let (store, again) = open_ok(dir.path()).await;
    assert_eq!(again.initialized, Initialized::Before);
    assert_eq!(again.cluster_id, recovery.cluster_id);
    store.close().await;
}

#[tokio::test]
async fn without_an_identity_an_empty_log_is_refused_and_a_bare_one_is_new() {
    // A first start interrupted after the log was made: the log has its
    // header and nothing else, and the directory no identity. Nothing was
    // ever stored: a new cluster.
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_ok(dir.path()).await;
    store.close().await;
    fs::remove_file(dir.path().join("identity")).unwrap();
    let (store, recovery) = open_ok(dir.path()).await;
    assert_eq!(recovery.initialized, Initialized::New);
    store.close().await;

    // A store of an earlier version whose log was emptied: no identity to
    // tell, so refused rather than guessed.
    fs::remove_file(dir.path().join("identity")).unwrap();
    fs::write(dir.path().join(WAL_0), b"").unwrap();
    let err = open(dir.path()).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err:?}");
    assert!(
        message.contains(&format!("its log {WAL_0} holds no log header (0 bytes)")),
        "{message}"
    );
    assert!(!dir.path().join("identity").exists());
}

#[tokio::test]
async fn the_data_directory_of_a_server_on_etcd_is_not_an_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let recorded = Identity::new(
        new_cluster_id().unwrap(),
        StateLocation::Etcd {
            key_prefix: "/flotilla/v1/".to_owned(),
        },
    );
    write_identity(dir.path(), &recorded).unwrap();
    let err = open(dir.path()).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err:?}");
    assert!(
        message.contains(&recorded.cluster_id.to_string()),
        "{message}"
    );
    assert!(
        message.contains("on etcd (key prefix /flotilla/v1/)"),
        "{message}"
    );
    assert_eq!(names(dir.path()), ["LOCK", "identity"]);
}

#[cfg(feature = "etcd")]
mod on_etcd {
    use super::*;
    use flotilla_store::{EtcdConfig, EtcdStore};
    use flotilla_testbed::Etcd;

    async fn etcd_store(etcd: &Etcd) -> EtcdStore {
        EtcdStore::connect(EtcdConfig::new([etcd.endpoint()]))
            .await
            .unwrap()
    }

    fn data_dir(parent: &Path, name: &str) -> PathBuf {
        parent.join(name)
    }

    #[tokio::test]
    async fn the_first_server_makes_the_cluster_id_and_others_adopt_it() {
        let etcd = Etcd::start().unwrap();
        let store = etcd_store(&etcd).await;
        let keys = Keys::default();
        let parent = tempfile::tempdir().unwrap();
        let first = data_dir(parent.path(), "server-1");

        let id = identity::cluster_id(&store, &keys, &first).await.unwrap();
        let record = read_identity(&first)
            .unwrap()
            .expect("the server records it");
        assert_eq!(record.cluster_id, id);
        assert_eq!(
            record.state,
            StateLocation::Etcd {
                key_prefix: "/flotilla/v1/".to_owned()
            }
        );
        let key = store.get(&keys.cluster()).await.unwrap().kv.unwrap();
        let stored: identity::ClusterRecord = serde_json::from_slice(&key.value).unwrap();
        assert_eq!(stored.cluster_id, id);

        // A restart: the same id, nothing written.
        let revision = store.get("/probe").await.unwrap().revision;
        assert_eq!(
            identity::cluster_id(&store, &keys, &first).await.unwrap(),
            id
        );
        assert_eq!(store.get("/probe").await.unwrap().revision, revision);

        // A second server with a fresh data directory joins the same cluster.
        let second = data_dir(parent.path(), "server-2");
        assert_eq!(
            identity::cluster_id(&store, &keys, &second).await.unwrap(),
            id
        );
        assert_eq!(read_identity(&second).unwrap().unwrap().cluster_id, id);

        // Keys of an earlier version without a cluster id: a new prefix's
        // first server adopts them (and makes the id).
        let old = Keys::new("/old/");
        store
            .put("/old/units/a.service", b"{}", None)
            .await
            .unwrap();
        let third = data_dir(parent.path(), "server-3");
        let adopted = identity::cluster_id(&store, &old, &third).await.unwrap();
        assert_ne!(adopted, id);
        assert!(store.get(&old.cluster()).await.unwrap().kv.is_some());
    }

    #[tokio::test]
    async fn a_server_refuses_a_prefix_without_its_cluster() {
        let etcd = Etcd::start().unwrap();
        let store = etcd_store(&etcd).await;
        let parent = tempfile::tempdir().unwrap();
        let dir = data_dir(parent.path(), "server");
        let keys = Keys::default();
        let id = identity::cluster_id(&store, &keys, &dir).await.unwrap();

        // A mistyped --key-prefix: nothing there.
        let wrong = Keys::new("/flotila/v1/");
        let err = identity::cluster_id(&store, &wrong, &dir)
            .await
            .unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(&err, IdentityError::NoClusterInStore { recorded, prefix, .. }
                if *recorded == id && prefix == "/flotila/v1/"),
            "{err:?}"
        );
        for part in [
            &id.to_string(),
            "/flotila/v1/",
            "/flotilla/v1/",
            &dir.display().to_string(),
        ] {
            assert!(message.contains(part), "{part:?} not in {message}");
        }
        assert!(
            store.get(&wrong.cluster()).await.unwrap().kv.is_none(),
            "nothing was created under the wrong prefix"
        );

        // A wiped etcd: the prefix emptied.
        store
            .put("/flotilla/v1/units/a.service", b"{}", None)
            .await
            .unwrap();
        store.delete_prefix("/flotilla/v1/").await.unwrap();
        let err = identity::cluster_id(&store, &keys, &dir).await.unwrap_err();
        assert!(
            matches!(&err, IdentityError::NoClusterInStore { .. }),
            "{err:?}"
        );
        let all = store.range("", RangeOptions::default()).await.unwrap();
        assert!(all.kvs.is_empty(), "the refusal wrote nothing");
    }

    #[tokio::test]
    async fn a_server_refuses_another_cluster() {
        let etcd = Etcd::start().unwrap();
        let store = etcd_store(&etcd).await;
        let parent = tempfile::tempdir().unwrap();
        let a = Keys::new("/a/");
        let b = Keys::new("/b/");
        let server_a = data_dir(parent.path(), "a");
        let server_b = data_dir(parent.path(), "b");
        let cluster_a = identity::cluster_id(&store, &a, &server_a).await.unwrap();
        let cluster_b = identity::cluster_id(&store, &b, &server_b).await.unwrap();
        assert_ne!(cluster_a, cluster_b);

        // Server a pointed at cluster b's prefix.
        let err = identity::cluster_id(&store, &b, &server_a)
            .await
            .unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(&err, IdentityError::OtherCluster { recorded, found, prefix, .. }
                if *recorded == cluster_a && *found == cluster_b && prefix == "/b/"),
            "{err:?}"
        );
        for part in [&cluster_a.to_string(), &cluster_b.to_string(), "/b/"] {
            assert!(message.contains(part), "{part:?} not in {message}");
        }
        // Its record is unchanged.
        assert_eq!(
            read_identity(&server_a).unwrap().unwrap().cluster_id,
            cluster_a
        );

        // An embedded store's directory is no server's record on etcd.
        let embedded = data_dir(parent.path(), "embedded");
        let (local, recovery) = open_ok(&embedded).await;
        local.close().await;
        let err = identity::cluster_id(&store, &a, &embedded)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, IdentityError::EmbeddedDataDir { recorded, .. }
                if *recorded == recovery.cluster_id),
            "{err:?}"
        );
    }
}
