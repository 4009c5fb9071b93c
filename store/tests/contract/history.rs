//! The cases of [`history_contract_tests!`]: the local stores' own watch
//! history, bounded in events and in bytes.

use flotilla_store::StoreError;

use super::{DEADLINE, S, next_events, summary, v};

/// 3,000 replaces of one 250 KB value: a history bounded only by count
/// kept all of them (750 MB) reachable. The history's own accounting stays
/// under its byte bound throughout; a watch from before what is kept, and a
/// watcher that stopped reading, end with `Compacted`, and resync by
/// reading again and watching from the read's revision + 1.
pub async fn large_replaces_keep_the_history_within_its_byte_bound(store: S) {
    const VALUE_BYTES: usize = 250 * 1024;
    const REPLACES: usize = 3_000;
    let bound = store
        .watch_history()
        .expect("a local store reports its history")
        .options
        .history_bytes;
    assert!(
        bound < REPLACES * VALUE_BYTES,
        "the case needs a bound below what the replaces write"
    );
    let mut stalled = store.watch("/big/", 0).await.unwrap();
    let mut value = vec![b'x'; VALUE_BYTES];
    let first = store.put("/big/unit", &value, None).await.unwrap().revision;
    let mut most = 0;
    for i in 1..REPLACES {
        value[..8].copy_from_slice(&(i as u64).to_le_bytes());
        store.put("/big/unit", &value, None).await.unwrap();
        let history = store.watch_history().unwrap();
        assert!(
            history.bytes <= bound,
            "replace {i}: the history holds {} accounted bytes, over its bound of {bound}",
            history.bytes
        );
        most = most.max(history.bytes);
    }
    let history = store.watch_history().unwrap();
    assert!(history.compact_revision > first, "{history:?}");
    assert!(history.events > 0, "recent revisions are kept: {history:?}");
    assert!(
        most > bound / 2,
        "the bound, not something else, limited the history: {most} of {bound}"
    );

    // A watch from before what is kept fails (from the call or the stream).
    let err = match store.watch("/big/", first).await {
        Err(err) => err,
        Ok(mut watcher) => tokio::time::timeout(DEADLINE, watcher.next())
            .await
            .unwrap()
            .unwrap_err(),
    };
    assert!(
        matches!(err, StoreError::Compacted { requested, compact_revision }
            if requested == first && compact_revision == history.compact_revision),
        "{err:?}"
    );
    // The watcher that stopped reading gets what it holds, then Compacted.
    let mut delivered = 0;
    let err = loop {
        match tokio::time::timeout(DEADLINE, stalled.next())
            .await
            .unwrap()
        {
            Ok(events) => {
                delivered += events.len();
                assert!(delivered < REPLACES, "a stalled watcher was kept whole");
            }
            Err(err) => break err,
        }
    };
    assert!(matches!(err, StoreError::Compacted { .. }), "{err:?}");

    // Resync: read, then watch from the read's revision + 1.
    let read = store.get("/big/unit").await.unwrap();
    assert_eq!(read.kv.unwrap().value[..8], value[..8]);
    let mut watcher = store.watch("/big/", read.revision + 1).await.unwrap();
    let next = store.put("/big/unit", v("small"), None).await.unwrap();
    let events = next_events(&mut watcher, 1).await;
    assert_eq!(
        summary(&events),
        [(next.revision, "/big/unit".to_owned(), "put")]
    );
}
