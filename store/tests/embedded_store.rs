#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test
//! The embedded store's own promises, beyond the shared contract: what
//! survives a close and reopen, what a torn tail and a damaged log do, and
//! snapshots.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flotilla_store::{
    EmbeddedOptions, EmbeddedStore, KeyValue, LeaseId, RangeOptions, Recovery, Store, StoreError,
    Txn, TxnOp, WatchEvent,
};

/// Bytes of the log header, then of each frame header (see the module
/// documentation of the embedded store).
const WAL_HEADER: usize = 20;
const FRAME_HEADER: usize = 12;

async fn open(dir: &Path) -> (EmbeddedStore, Recovery) {
    open_with(dir, EmbeddedOptions::default()).await
}

async fn open_with(dir: &Path, options: EmbeddedOptions) -> (EmbeddedStore, Recovery) {
    EmbeddedStore::open(dir, options)
        .await
        .expect("open the store")
}

/// Everything a reader can see: the revision and every key.
async fn dump(store: &dyn Store) -> (u64, Vec<KeyValue>) {
    let all = store.range("", RangeOptions::default()).await.unwrap();
    (all.revision, all.kvs)
}

fn files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    found.sort();
    found
}

fn only_wal(dir: &Path) -> PathBuf {
    let wals = files(dir, "wal-");
    assert_eq!(wals.len(), 1, "{wals:?}");
    wals[0].clone()
}

/// The offsets of the frames of a log.
fn frame_offsets(wal: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = WAL_HEADER;
    while at < wal.len() {
        offsets.push(at);
        let len = u32::from_le_bytes(wal[at..at + 4].try_into().unwrap()) as usize;
        at += FRAME_HEADER + len;
    }
    assert_eq!(at, wal.len());
    offsets
}

/// Writes one key per frame (each put waits for the one before).
async fn put_each(store: &dyn Store, keys: &[&str]) {
    for key in keys {
        store.put(key, key.as_bytes(), None).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn reopen_after_close_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (store, recovery) = open(dir.path()).await;
    assert_eq!(recovery.revision, 1);
    assert!(recovery.torn_tail.is_none());
    let lease = store.grant(Duration::from_secs(30)).await.unwrap().id;
    let gone = store.grant(Duration::from_secs(30)).await.unwrap().id;
    put_each(&store, &["/a", "/b", "/c/1", "/c/2"]).await;
    store.put("/a", b"again", None).await.unwrap();
    store.put("/leased", b"l", Some(lease)).await.unwrap();
    store.put("/gone", b"g", Some(gone)).await.unwrap();
    store.revoke(gone).await.unwrap();
    store.delete("/b").await.unwrap();
    store
        .txn(Txn::new().and_then([
            TxnOp::delete_prefix("/c/"),
            TxnOp::put("/d", b"d".as_slice()),
        ]))
        .await
        .unwrap();
    let before = dump(&store).await;
    store.close().await;
    assert!(matches!(store.get("/a").await, Err(StoreError::Closed)));

    let (store, recovery) = open(dir.path()).await;
    assert_eq!(recovery.revision, before.0);
    assert_eq!(recovery.leases, 1);
    assert!(recovery.replayed_commands > 0);
    assert_eq!(dump(&store).await, before);
    assert_eq!(
        store.get("/leased").await.unwrap().kv.unwrap().lease,
        Some(lease)
    );
    store.keepalive(lease).await.unwrap();
    assert!(matches!(
        store.keepalive(gone).await,
        Err(StoreError::LeaseNotFound { .. })
    ));
    // Revisions go on from where they were; lease ids are random, not
    // the next of a count (a host must not guess another's lease).
    assert_eq!(
        store.put("/e", b"e", None).await.unwrap().revision,
        before.0 + 1
    );
    let next = store.grant(Duration::from_secs(30)).await.unwrap().id;
    let after = store.grant(Duration::from_secs(30)).await.unwrap().id;
    for (a, b) in [(next, gone), (next, lease), (after, next)] {
        assert!(a.0.abs_diff(b.0) > 1_000_000, "{a} and {b} are close");
    }
    store.close().await;
}

#[tokio::test]
async fn watch_after_reopen_replays_the_logged_history() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path()).await;
    let first = store.put("/w/a", b"1", None).await.unwrap().revision;
    store.put("/w/b", b"1", None).await.unwrap();
    store.delete("/w/a").await.unwrap();
    store.close().await;

    let (store, _) = open(dir.path()).await;
    let mut watcher = store.watch("/w/", first).await.unwrap();
    let mut events = Vec::new();
    while events.len() < 3 {
        events.extend(watcher.next().await.unwrap());
    }
    let seen: Vec<(u64, &str)> = events.iter().map(|e| (e.revision(), e.key())).collect();
    assert_eq!(
        seen,
        [(first, "/w/a"), (first + 1, "/w/b"), (first + 2, "/w/a")]
    );
    assert!(matches!(events[2], WatchEvent::Delete { .. }));
    store.close().await;
}

#[tokio::test]
async fn a_torn_tail_is_cut_off_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path()).await;
    put_each(&store, &["/1", "/2", "/3", "/4"]).await;
    store.close().await;
    let wal = only_wal(dir.path());
    let bytes = fs::read(&wal).unwrap();
    let offsets = frame_offsets(&bytes);
    assert_eq!(offsets.len(), 4);
    let last = offsets[3];
    // The last write reached the disk only in part: cut at every offset of
    // its frame, in its header and in its payload.
    for cut in last + 1..bytes.len() {
        fs::write(&wal, &bytes[..cut]).unwrap();
        let (store, recovery) = open(dir.path()).await;
        let torn = recovery
            .torn_tail
            .unwrap_or_else(|| panic!("cut at {cut}: no torn tail reported"));
        assert_eq!(torn.path, wal, "cut at {cut}");
        assert_eq!(torn.offset, last as u64, "cut at {cut}");
        assert_eq!(torn.discarded_bytes, (cut - last) as u64, "cut at {cut}");
        assert_eq!(
            fs::metadata(&wal).unwrap().len(),
            last as u64,
            "cut at {cut}"
        );
        let keys: Vec<String> = dump(&store).await.1.into_iter().map(|kv| kv.key).collect();
        assert_eq!(keys, ["/1", "/2", "/3"], "cut at {cut}");
        store.close().await;
    }
    let cut = last + FRAME_HEADER + 3;
    fs::write(&wal, &bytes[..cut]).unwrap();
    let (store, recovery) = open(dir.path()).await;
    let torn = recovery.torn_tail.expect("torn tail reported");
    // A cut file cannot be told from an interrupted write: the warning
    // names both, and claims nothing about acknowledgements.
    let warning = torn.to_string();
    assert!(
        warning.contains("either the last group commit was interrupted before it was acknowledged, or the file was truncated"),
        "{warning}"
    );
    assert!(
        warning.contains(&format!(
            "cut {} bytes at offset {last} of {}",
            cut - last,
            wal.display()
        )),
        "{warning}"
    );
    assert!(!warning.contains("never acknowledged"), "{warning}");
    // The log goes on after the cut, and reopens clean.
    store.put("/5", b"5", None).await.unwrap();
    let before = dump(&store).await;
    store.close().await;
    let (store, recovery) = open(dir.path()).await;
    assert!(recovery.torn_tail.is_none());
    assert_eq!(dump(&store).await, before);
    store.close().await;
}

#[tokio::test]
async fn a_zero_filled_tail_is_torn() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path()).await;
    put_each(&store, &["/1", "/2"]).await;
    store.close().await;
    let wal = only_wal(dir.path());
    let mut bytes = fs::read(&wal).unwrap();
    let good = bytes.len();
    bytes.extend_from_slice(&[0; 4096]);
    fs::write(&wal, &bytes).unwrap();

    let (store, recovery) = open(dir.path()).await;
    assert_eq!(recovery.torn_tail.unwrap().offset, good as u64);
    assert_eq!(dump(&store).await.1.len(), 2);
    store.close().await;
}

#[tokio::test]
async fn a_flipped_byte_in_the_middle_is_corruption_with_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path()).await;
    put_each(&store, &["/1", "/2", "/3", "/4"]).await;
    store.close().await;
    let wal = only_wal(dir.path());
    let mut bytes = fs::read(&wal).unwrap();
    let offsets = frame_offsets(&bytes);
    for (at, what) in [
        (offsets[1] + FRAME_HEADER + 5, "payload"),
        (offsets[1] + 1, "length"),
    ] {
        let original = bytes[at];
        bytes[at] ^= 0x10;
        fs::write(&wal, &bytes).unwrap();
        let err = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())
            .await
            .expect_err("a damaged log must not open");
        match &err {
            StoreError::Corrupt { path, offset, .. } => {
                assert_eq!(path, &wal, "{what}");
                assert_eq!(*offset, offsets[1] as u64, "{what}");
            }
            other => panic!("{what}: {other:?}"),
        }
        assert!(!err.is_temporary());
        assert!(err.to_string().starts_with("corrupt store file"), "{err}");
        // Nothing was cut or rewritten.
        assert_eq!(fs::read(&wal).unwrap(), bytes, "{what}");
        bytes[at] = original;
    }
    // Repaired, it opens with everything.
    fs::write(&wal, &bytes).unwrap();
    let (store, _) = open(dir.path()).await;
    assert_eq!(dump(&store).await.1.len(), 4);
    store.close().await;
}

#[tokio::test(start_paused = true)]
async fn snapshots_bound_the_log_and_reopen_to_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        snapshot_threshold: 8 * 1024,
        ..EmbeddedOptions::default()
    };
    let (store, _) = open_with(dir.path(), options).await;
    let lease = store.grant(Duration::from_secs(60)).await.unwrap().id;
    for i in 0..200u32 {
        let key = format!("/s/{}", i % 37);
        if i % 7 == 6 {
            store.delete(&key).await.unwrap();
        } else {
            let value = vec![u8::try_from(i % 251).unwrap(); 100];
            let on = (i % 3 == 0).then_some(lease);
            store.put(&key, &value, on).await.unwrap();
        }
    }
    let before = dump(&store).await;
    let snapshots = files(dir.path(), "snapshot-");
    assert_eq!(
        snapshots.len(),
        1,
        "old generations are removed: {snapshots:?}"
    );
    let wal = only_wal(dir.path());
    assert!(
        fs::metadata(&wal).unwrap().len() < 8 * 1024 + 1024,
        "the log stays bounded"
    );
    assert!(store.checkpoint_error().is_none());
    store.close().await;

    let (store, recovery) = open_with(dir.path(), options).await;
    assert!(recovery.generation > 1);
    assert!(recovery.snapshot_revision.is_some());
    assert_eq!(recovery.leases, 1);
    assert_eq!(dump(&store).await, before);
    // An explicit checkpoint leaves an empty log; reopening gives the same.
    store.checkpoint().await.unwrap();
    let wal = only_wal(dir.path());
    assert_eq!(fs::metadata(&wal).unwrap().len(), WAL_HEADER as u64);
    store.close().await;
    let (store, recovery) = open_with(dir.path(), options).await;
    assert_eq!(recovery.replayed_commands, 0);
    assert_eq!(recovery.snapshot_revision, Some(before.0));
    assert_eq!(dump(&store).await, before);
    // Leased keys still end with their lease.
    store.revoke(lease).await.unwrap();
    let left = dump(&store).await.1;
    assert!(left.iter().all(|kv| kv.lease.is_none()));
    assert!(left.len() < before.1.len());
    store.close().await;
}

#[tokio::test]
async fn leftovers_of_an_interrupted_snapshot_are_handled() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path()).await;
    put_each(&store, &["/1", "/2"]).await;
    store.checkpoint().await.unwrap();
    let before = dump(&store).await;
    store.close().await;
    let wal = only_wal(dir.path());
    let snapshot = files(dir.path(), "snapshot-").pop().unwrap();

    // A crash after the snapshot's rename, before its log was created; and
    // a half-written next snapshot; and a stale older generation.
    fs::remove_file(&wal).unwrap();
    let name = snapshot.file_name().unwrap().to_str().unwrap().to_owned();
    let tmp = dir.path().join("snapshot-00000000000000ff.tmp");
    fs::write(&tmp, b"half a snapshot").unwrap();
    let stale = dir.path().join("wal-0000000000000000");
    fs::write(&stale, b"stale").unwrap();

    let (store, recovery) = open(dir.path()).await;
    assert_eq!(dump(&store).await, before);
    assert!(recovery.removed_files.contains(&tmp));
    assert!(recovery.removed_files.contains(&stale));
    assert!(!tmp.exists() && !stale.exists());
    assert!(wal.exists(), "the missing log is created");
    assert!(dir.path().join(name).exists());
    store.put("/3", b"3", None).await.unwrap();
    store.close().await;
    let (store, _) = open(dir.path()).await;
    assert_eq!(dump(&store).await.1.len(), 3);
    store.close().await;
}

#[tokio::test]
async fn damaged_snapshots_and_inconsistent_files_refuse_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path()).await;
    put_each(&store, &["/1", "/2"]).await;
    store.checkpoint().await.unwrap();
    store.close().await;
    let snapshot = files(dir.path(), "snapshot-").pop().unwrap();
    let mut bytes = fs::read(&snapshot).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    fs::write(&snapshot, &bytes).unwrap();
    let err = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { path, .. } if path == &snapshot),
        "{err:?}"
    );
    bytes[at] ^= 0x01;
    fs::write(&snapshot, &bytes).unwrap();

    // A log from a generation no snapshot explains.
    let future = dir.path().join("wal-00000000000000ff");
    fs::write(&future, b"").unwrap();
    let err = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { path, .. } if path == &future),
        "{err:?}"
    );
    fs::remove_file(&future).unwrap();
    let (store, _) = open(dir.path()).await;
    assert_eq!(dump(&store).await.1.len(), 2);
    store.close().await;
}

#[tokio::test(start_paused = true)]
async fn leases_are_restored_with_their_whole_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let ttl = Duration::from_secs(10);
    let (store, _) = open(dir.path()).await;
    let lease = store.grant(ttl).await.unwrap().id;
    store.put("/m/1", b"alive", Some(lease)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    store.close().await;

    // Reopened 8 s into a 10 s lease: it gets 10 s again.
    let (store, recovery) = open(dir.path()).await;
    assert_eq!(recovery.leases, 1);
    assert_eq!(store.time_to_live(lease).await.unwrap(), ttl);
    let mut watcher = store.watch("/m/", 0).await.unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        store.get("/m/1").await.unwrap().kv.is_some(),
        "not expired at the old deadline"
    );
    let events = tokio::time::timeout(Duration::from_secs(60), watcher.next())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(&events[0], WatchEvent::Delete { key, .. } if key == "/m/1"));
    store.close().await;

    // The expiry was logged: it stays expired.
    let (store, recovery) = open(dir.path()).await;
    assert_eq!(recovery.leases, 0);
    assert!(store.get("/m/1").await.unwrap().kv.is_none());
    assert!(matches!(
        store.keepalive(lease).await,
        Err(StoreError::LeaseNotFound { .. })
    ));
    store.close().await;
}

#[tokio::test]
async fn the_directory_is_locked_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path()).await;
    let err = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    store.close().await;
    let (store, _) = open(dir.path()).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_fsyncs() {
    const WRITES: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path()).await;
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..WRITES)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .put(&format!("/g/{i:03}"), b"x", None)
                    .await
                    .unwrap()
                    .revision
            })
        })
        .collect();
    let mut revisions = Vec::new();
    for task in tasks {
        revisions.push(task.await.unwrap());
    }
    revisions.sort_unstable();
    revisions.dedup();
    assert_eq!(revisions.len(), WRITES, "one revision per write");
    let frames = frame_offsets(&fs::read(only_wal(dir.path())).unwrap()).len();
    assert!(
        frames < WRITES / 2,
        "{frames} fsyncs for {WRITES} concurrent writes"
    );
    store.close().await;
}

#[tokio::test]
async fn an_unused_lease_id_from_before_a_restart_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path()).await;
    let lease = store.grant(Duration::from_secs(5)).await.unwrap().id;
    store.close().await;
    let (store, _) = open(dir.path()).await;
    let unknown = LeaseId(lease.0 + 1);
    assert!(matches!(
        store.put("/x", b"1", Some(unknown)).await,
        Err(StoreError::LeaseNotFound { .. })
    ));
    store.put("/x", b"1", Some(lease)).await.unwrap();
    store.close().await;
}
