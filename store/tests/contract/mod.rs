//! The store contract, written once and run against every backend.
//!
//! A test file instantiates it with [`contract_tests!`], naming the test
//! attribute (memory and embedded stores run on a paused tokio clock; a real
//! etcd needs real time) and an async factory returning a [`Fixture`]:
//!
//! ```ignore
//! #[macro_use]
//! mod contract;
//! async fn etcd() -> contract::Fixture { ... }
//! contract_tests!(#[tokio::test] etcd);
//! ```
//!
//! It lives here, shared by test files, rather than in the library behind a
//! feature: it is test code only, it needs tokio's `test-util` (which the
//! library must not depend on), and every backend (the etcd one too) lives in
//! this crate, so every backend's test file can include it.
//!
//! Each case gets a store of its own and assumes nobody else writes to it
//! (revisions are checked exactly). Time only passes through tokio's clock,
//! so with a paused clock lease tests take no real time; with a real clock,
//! they take as long as their TTLs (10 s). Nothing waits a fixed time for
//! something to happen: waits are for a condition, bounded by a deadline.

#![allow(dead_code)] // each test file uses the cases it instantiates

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use flotilla_store::{
    Compare, CompareOp, KeyValue, LeaseId, RangeOptions, Store, StoreError, Txn, TxnOp,
    TxnOpResponse, WatchEvent, Watcher,
};

/// A store to test, and whatever must live as long as it (a temporary
/// directory, a server process). Dropped in field order: the store first.
pub struct Fixture {
    pub store: Arc<dyn Store>,
    pub guard: Box<dyn Any + Send>,
}

/// Expands to one test per contract case, each on a fresh store from
/// `$factory`.
macro_rules! contract_tests {
    (#[$attr:meta] $factory:path) => {
        contract_tests!(@cases #[$attr] $factory;
            fresh_store_is_empty,
            put_assigns_revisions_and_versions,
            delete_moves_the_revision_only_when_a_key_goes,
            delete_prefix_deletes_in_one_revision,
            range_is_by_prefix_in_key_order,
            range_paginates_with_limit_and_start_after,
            txn_compares_values,
            txn_compares_versions_and_revisions,
            txn_compares_leases,
            txn_needs_every_compare_to_hold,
            txn_runs_every_op_kind_in_one_revision,
            txn_failure_branch_runs_when_a_compare_fails,
            txn_that_fails_changes_nothing,
            read_only_txn_keeps_the_revision,
            too_many_ops_are_refused,
            invalid_requests_are_refused,
            concurrent_compare_and_swap_is_serialised,
            watch_replays_history_then_follows_live_changes,
            watch_sees_only_its_prefix,
            watch_from_zero_starts_at_the_next_revision,
            watch_delivers_a_transaction_whole,
            watch_of_deletes_carries_the_previous_value,
            watch_changes_sees_what_watch_sees,
            read_then_watch_sees_every_later_change_exactly_once,
            watch_resumes_from_next_revision_without_gap,
            watch_from_a_compacted_revision_fails,
            compact_beyond_the_current_revision_fails,
            lease_expiry_deletes_its_keys_with_events,
            lease_revoke_deletes_its_keys_in_one_revision,
            keepalive_extends_the_lease,
            keepalive_after_expiry_fails,
            unknown_leases_are_refused,
            put_without_lease_takes_the_key_off_its_lease,
        );
    };
    (@cases #[$attr:meta] $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[$attr]
            async fn $case() {
                let fixture = $factory().await;
                crate::contract::$case(fixture.store.clone()).await;
                drop(fixture);
            }
        )*
    };
}

/// Expands to one test per case of the local stores' own watch history
/// (memory, embedded): what they keep is bounded in events and in bytes.
/// etcd keeps its history itself (compacted by its own settings), so these
/// cases do not apply to it.
#[allow(unused_macros)] // the etcd tests do not use it
macro_rules! history_contract_tests {
    (#[$attr:meta] $factory:path) => {
        contract_tests!(@cases #[$attr] $factory;
            large_replaces_keep_the_history_within_its_byte_bound,
        );
    };
}

type S = Arc<dyn Store>;

mod history;
#[allow(unused_imports)] // the etcd tests do not run the history cases
pub use history::*;

/// A bound on every wait: generous, since a paused clock makes it free and
/// a real one only reaches it when a test is failing.
const DEADLINE: Duration = Duration::from_secs(60);

const TTL: Duration = Duration::from_secs(10);

fn v(s: &str) -> &[u8] {
    s.as_bytes()
}

async fn current_revision(store: &S) -> u64 {
    store.get("/revision-probe").await.unwrap().revision
}

async fn value_of(store: &S, key: &str) -> Option<Vec<u8>> {
    store.get(key).await.unwrap().kv.map(|kv| kv.value.to_vec())
}

fn keys(kvs: &[KeyValue]) -> Vec<&str> {
    kvs.iter().map(|kv| kv.key.as_str()).collect()
}

/// (revision, key, "put"/"delete") of events, for comparing.
fn summary(events: &[WatchEvent]) -> Vec<(u64, String, &'static str)> {
    events
        .iter()
        .map(|e| {
            let kind = match e {
                WatchEvent::Put { .. } => "put",
                WatchEvent::Delete { .. } => "delete",
            };
            (e.revision(), e.key().to_owned(), kind)
        })
        .collect()
}

/// Reads exactly `n` events (never splitting a batch: more is a failure).
async fn next_events(watcher: &mut Watcher, n: usize) -> Vec<WatchEvent> {
    let mut events = Vec::new();
    while events.len() < n {
        let batch = tokio::time::timeout(DEADLINE, watcher.next())
            .await
            .expect("watch event within the deadline")
            .expect("watch event");
        assert!(!batch.is_empty(), "a watch batch is never empty");
        events.extend(batch);
    }
    assert_eq!(
        events.len(),
        n,
        "more events than expected: {:?}",
        summary(&events)
    );
    events
}

/// Writes `key` and reads events up to and including its put: shows that
/// nothing else arrived before it, without waiting for an absence.
async fn events_until_marker(store: &S, watcher: &mut Watcher, key: &str) -> Vec<WatchEvent> {
    store.put(key, v("marker"), None).await.unwrap();
    let mut events = Vec::new();
    loop {
        let batch = tokio::time::timeout(DEADLINE, watcher.next())
            .await
            .expect("watch event within the deadline")
            .expect("watch event");
        let done = batch.iter().any(|e| e.key() == key);
        events.extend(batch.into_iter().filter(|e| e.key() != key));
        if done {
            return events;
        }
    }
}

pub async fn fresh_store_is_empty(store: S) {
    let got = store.get("/a").await.unwrap();
    assert!(got.kv.is_none());
    assert!(got.revision >= 1);
    let all = store.range("", RangeOptions::default()).await.unwrap();
    assert!(all.kvs.is_empty());
    assert!(!all.more);
    assert_eq!(all.revision, got.revision);
}

pub async fn put_assigns_revisions_and_versions(store: S) {
    let r0 = current_revision(&store).await;
    let first = store.put("/k/a", v("1"), None).await.unwrap();
    assert_eq!(first.revision, r0 + 1);
    assert!(first.prev.is_none());
    let kv = store.get("/k/a").await.unwrap().kv.unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version, kv.lease),
        (r0 + 1, r0 + 1, 1, None)
    );
    assert_eq!(&kv.value[..], v("1"));

    let second = store.put("/k/a", v("2"), None).await.unwrap();
    assert_eq!(second.revision, r0 + 2);
    assert_eq!(second.prev.as_ref().map(|p| &p.value[..]), Some(v("1")));
    let kv = store.get("/k/a").await.unwrap().kv.unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r0 + 1, r0 + 2, 2)
    );

    // The same value again is still a write.
    let third = store.put("/k/a", v("2"), None).await.unwrap();
    assert_eq!(third.revision, r0 + 3);
    let other = store.put("/k/b", v("x"), None).await.unwrap();
    assert_eq!(other.revision, r0 + 4);
    let a = store.get("/k/a").await.unwrap();
    assert_eq!(a.revision, r0 + 4);
    assert_eq!(a.kv.unwrap().version, 3);
}

pub async fn delete_moves_the_revision_only_when_a_key_goes(store: S) {
    store.put("/d/a", v("1"), None).await.unwrap();
    let put = store.put("/d/a", v("2"), None).await.unwrap();
    let deleted = store.delete("/d/a").await.unwrap();
    assert_eq!(deleted.revision, put.revision + 1);
    assert_eq!(keys(&deleted.deleted), ["/d/a"]);
    assert_eq!(&deleted.deleted[0].value[..], v("2"));
    assert!(value_of(&store, "/d/a").await.is_none());

    let nothing = store.delete("/d/a").await.unwrap();
    assert_eq!(nothing.revision, deleted.revision);
    assert!(nothing.deleted.is_empty());
    assert_eq!(current_revision(&store).await, deleted.revision);

    // Created again: a new life, version 1.
    let again = store.put("/d/a", v("3"), None).await.unwrap();
    let kv = store.get("/d/a").await.unwrap().kv.unwrap();
    assert_eq!((kv.create_revision, kv.version), (again.revision, 1));
}

pub async fn delete_prefix_deletes_in_one_revision(store: S) {
    for key in ["/p/a", "/p/b/c", "/p/d", "/pq", "/o"] {
        store.put(key, v("x"), None).await.unwrap();
    }
    let r = current_revision(&store).await;
    let deleted = store.delete_prefix("/p/").await.unwrap();
    assert_eq!(deleted.revision, r + 1);
    assert_eq!(keys(&deleted.deleted), ["/p/a", "/p/b/c", "/p/d"]);
    let left = store.range("/", RangeOptions::default()).await.unwrap();
    assert_eq!(keys(&left.kvs), ["/o", "/pq"]);
    let nothing = store.delete_prefix("/p/").await.unwrap();
    assert_eq!(nothing.revision, r + 1);
    assert!(nothing.deleted.is_empty());
}

pub async fn range_is_by_prefix_in_key_order(store: S) {
    for key in ["/r/b", "/r/a", "/r/c/d", "/r", "/ra", "/q"] {
        store.put(key, key.as_bytes(), None).await.unwrap();
    }
    let r = store.range("/r/", RangeOptions::default()).await.unwrap();
    assert_eq!(keys(&r.kvs), ["/r/a", "/r/b", "/r/c/d"]);
    assert!(!r.more);
    assert_eq!(r.revision, current_revision(&store).await);
    assert_eq!(&r.kvs[2].value[..], v("/r/c/d"));
    let all = store.range("", RangeOptions::default()).await.unwrap();
    assert_eq!(
        keys(&all.kvs),
        ["/q", "/r", "/r/a", "/r/b", "/r/c/d", "/ra"]
    );
    assert!(
        store
            .range("/none/", RangeOptions::default())
            .await
            .unwrap()
            .kvs
            .is_empty()
    );
}

pub async fn range_paginates_with_limit_and_start_after(store: S) {
    let all: Vec<String> = (0..25).map(|i| format!("/page/{i:02}")).collect();
    for chunk in all.chunks(10) {
        let txn = Txn::new().and_then(chunk.iter().map(|k| TxnOp::put(k.as_str(), v("x"))));
        store.txn(txn).await.unwrap();
    }
    store.put("/pagf", v("outside"), None).await.unwrap();
    let mut seen = Vec::new();
    let mut options = RangeOptions::default().limit(10);
    let mut pages = 0;
    loop {
        let page = store.range("/page/", options.clone()).await.unwrap();
        pages += 1;
        assert!(page.kvs.len() <= 10);
        seen.extend(page.kvs.iter().map(|kv| kv.key.clone()));
        if !page.more {
            break;
        }
        options = options.start_after(page.kvs.last().unwrap().key.clone());
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, all);
    // A limit that exactly fits says there is no more.
    let exact = store
        .range("/page/", RangeOptions::default().limit(25))
        .await
        .unwrap();
    assert_eq!(exact.kvs.len(), 25);
    assert!(!exact.more);
    // start_after before the prefix starts at the prefix.
    let before = store
        .range("/page/", RangeOptions::default().start_after("/a").limit(1))
        .await;
    assert_eq!(keys(&before.unwrap().kvs), ["/page/00"]);
}

async fn holds(store: &S, compare: Compare) -> bool {
    store
        .txn(Txn::new().when([compare]))
        .await
        .unwrap()
        .succeeded
}

pub async fn txn_compares_values(store: S) {
    store.put("/c/v", v("m"), None).await.unwrap();
    use CompareOp::*;
    for (op, target, expected) in [
        (Equal, "m", true),
        (Equal, "n", false),
        (NotEqual, "n", true),
        (NotEqual, "m", false),
        (Greater, "a", true),
        (Greater, "m", false),
        (Greater, "z", false),
        (Less, "z", true),
        (Less, "m", false),
        (Less, "a", false),
        // Byte order: a prefix is less.
        (Greater, "", true),
        (Less, "mm", true),
    ] {
        let compare = Compare::value("/c/v", op, v(target));
        assert_eq!(holds(&store, compare).await, expected, "{op:?} {target:?}");
    }
    // A value compare on an absent key is always false.
    for op in [Equal, NotEqual, Greater, Less] {
        assert!(
            !holds(&store, Compare::value("/c/absent", op, v(""))).await,
            "{op:?}"
        );
    }
}

pub async fn txn_compares_versions_and_revisions(store: S) {
    let created = store.put("/c/n", v("1"), None).await.unwrap().revision;
    let modified = store.put("/c/n", v("2"), None).await.unwrap().revision;
    use CompareOp::*;
    type Make = fn(&'static str, CompareOp, u64) -> Compare;
    let version: Make = |k, op, n| Compare::version(k, op, n);
    let create: Make = |k, op, n| Compare::create_revision(k, op, n);
    let modr: Make = |k, op, n| Compare::mod_revision(k, op, n);
    for (name, make, current) in [
        ("version", version, 2),
        ("create", create, created),
        ("mod", modr, modified),
    ] {
        for (op, target, expected) in [
            (Equal, current, true),
            (Equal, current + 1, false),
            (NotEqual, current + 1, true),
            (NotEqual, current, false),
            (Greater, current - 1, true),
            (Greater, current, false),
            (Less, current + 1, true),
            (Less, current, false),
        ] {
            assert_eq!(
                holds(&store, make("/c/n", op, target)).await,
                expected,
                "{name} {op:?} {target} (current {current})"
            );
        }
        // An absent key has 0 for all three.
        assert!(
            holds(&store, make("/c/absent", Equal, 0)).await,
            "{name} of absent"
        );
        assert!(
            holds(&store, make("/c/absent", Less, 1)).await,
            "{name} of absent"
        );
        assert!(
            !holds(&store, make("/c/absent", Greater, 0)).await,
            "{name} of absent"
        );
    }
    assert!(holds(&store, Compare::absent("/c/absent")).await);
    assert!(!holds(&store, Compare::exists("/c/absent")).await);
    assert!(holds(&store, Compare::exists("/c/n")).await);
}

pub async fn txn_compares_leases(store: S) {
    let lease = store.grant(TTL).await.unwrap().id;
    store.put("/c/l", v("1"), Some(lease)).await.unwrap();
    store.put("/c/nl", v("1"), None).await.unwrap();
    use CompareOp::*;
    assert!(holds(&store, Compare::lease("/c/l", Equal, Some(lease))).await);
    assert!(!holds(&store, Compare::lease("/c/l", NotEqual, Some(lease))).await);
    assert!(holds(&store, Compare::lease("/c/l", NotEqual, None)).await);
    assert!(holds(&store, Compare::lease("/c/l", Greater, None)).await);
    assert!(!holds(&store, Compare::lease("/c/l", Less, Some(lease))).await);
    assert!(
        holds(
            &store,
            Compare::lease("/c/l", Less, Some(LeaseId(lease.0 + 1)))
        )
        .await
    );
    assert!(holds(&store, Compare::lease("/c/nl", Equal, None)).await);
    assert!(holds(&store, Compare::lease("/c/absent", Equal, None)).await);
    assert!(!holds(&store, Compare::lease("/c/nl", Equal, Some(lease))).await);
}

pub async fn txn_needs_every_compare_to_hold(store: S) {
    store.put("/m/a", v("1"), None).await.unwrap();
    store.put("/m/b", v("2"), None).await.unwrap();
    let both = Txn::new().when([
        Compare::value("/m/a", CompareOp::Equal, v("1")),
        Compare::value("/m/b", CompareOp::Equal, v("2")),
    ]);
    assert!(store.txn(both).await.unwrap().succeeded);
    let one_fails = Txn::new().when([
        Compare::value("/m/a", CompareOp::Equal, v("1")),
        Compare::value("/m/b", CompareOp::Equal, v("3")),
    ]);
    assert!(!store.txn(one_fails).await.unwrap().succeeded);
    // No compare at all: the success branch runs.
    let none = store
        .txn(Txn::new().and_then([TxnOp::get("/m/a")]))
        .await
        .unwrap();
    assert!(none.succeeded);
}

pub async fn txn_runs_every_op_kind_in_one_revision(store: S) {
    let lease = store.grant(TTL).await.unwrap().id;
    for key in ["/t/old", "/t/dir/1", "/t/dir/2", "/t/keep"] {
        store.put(key, v("before"), None).await.unwrap();
    }
    let r = current_revision(&store).await;
    let txn = Txn::new().when([Compare::exists("/t/keep")]).and_then([
        TxnOp::put("/t/new", v("n")),
        TxnOp::put_with_lease("/t/leased", v("l"), lease),
        TxnOp::delete("/t/old"),
        TxnOp::delete_prefix("/t/dir/"),
        TxnOp::get("/t/new"),
        TxnOp::range("/t/", RangeOptions::default()),
        TxnOp::put("/t/keep", v("after")),
    ]);
    let response = store.txn(txn).await.unwrap();
    assert!(response.succeeded);
    assert_eq!(response.revision, r + 1);
    let [
        put_new,
        put_leased,
        del_old,
        del_dir,
        get_new,
        range_all,
        put_keep,
    ] = <[TxnOpResponse; 7]>::try_from(response.responses).unwrap();
    match put_new {
        TxnOpResponse::Put(p) => assert!(p.prev.is_none() && p.revision == r + 1),
        other => panic!("{other:?}"),
    }
    assert!(matches!(put_leased, TxnOpResponse::Put(_)));
    match del_old {
        TxnOpResponse::Delete(d) => assert_eq!(keys(&d.deleted), ["/t/old"]),
        other => panic!("{other:?}"),
    }
    match del_dir {
        TxnOpResponse::Delete(d) => assert_eq!(keys(&d.deleted), ["/t/dir/1", "/t/dir/2"]),
        other => panic!("{other:?}"),
    }
    // Reads see the writes before them in the same transaction.
    match get_new {
        TxnOpResponse::Get(g) => {
            let kv = g.kv.unwrap();
            assert_eq!((&kv.value[..], kv.mod_revision), (v("n"), r + 1));
        }
        other => panic!("{other:?}"),
    }
    match range_all {
        TxnOpResponse::Range(range) => {
            assert_eq!(keys(&range.kvs), ["/t/keep", "/t/leased", "/t/new"]);
            assert_eq!(&range.kvs[0].value[..], v("before"));
        }
        other => panic!("{other:?}"),
    }
    match put_keep {
        TxnOpResponse::Put(p) => assert_eq!(&p.prev.unwrap().value[..], v("before")),
        other => panic!("{other:?}"),
    }
    let after = store.range("/t/", RangeOptions::default()).await.unwrap();
    assert_eq!(keys(&after.kvs), ["/t/keep", "/t/leased", "/t/new"]);
    assert!(after.kvs.iter().all(|kv| kv.mod_revision == r + 1));
    assert_eq!(after.kvs[1].lease, Some(lease));
    assert_eq!(after.revision, r + 1);
}

pub async fn txn_failure_branch_runs_when_a_compare_fails(store: S) {
    store.put("/f/flag", v("off"), None).await.unwrap();
    let r = current_revision(&store).await;
    let txn = Txn::new()
        .when([Compare::value("/f/flag", CompareOp::Equal, v("on"))])
        .and_then([TxnOp::put("/f/success", v("1"))])
        .or_else([TxnOp::put("/f/failure", v("1")), TxnOp::get("/f/flag")]);
    let response = store.txn(txn).await.unwrap();
    assert!(!response.succeeded);
    assert_eq!(response.revision, r + 1);
    assert_eq!(response.responses.len(), 2);
    match &response.responses[1] {
        TxnOpResponse::Get(g) => assert_eq!(&g.kv.as_ref().unwrap().value[..], v("off")),
        other => panic!("{other:?}"),
    }
    assert!(value_of(&store, "/f/success").await.is_none());
    assert_eq!(
        value_of(&store, "/f/failure").await.as_deref(),
        Some(v("1"))
    );
}

pub async fn txn_that_fails_changes_nothing(store: S) {
    store.put("/x/a", v("1"), None).await.unwrap();
    let r = current_revision(&store).await;
    // A compare that fails with no failure branch: nothing happens.
    let response = store
        .txn(
            Txn::new()
                .when([Compare::version("/x/a", CompareOp::Equal, 9)])
                .and_then([TxnOp::put("/y/a", v("2")), TxnOp::delete_prefix("/x/")]),
        )
        .await
        .unwrap();
    assert!(!response.succeeded);
    assert_eq!(response.revision, r);
    assert!(response.responses.is_empty());
    assert!(value_of(&store, "/y/a").await.is_none());
    // An operation that fails (a lease that does not exist) undoes the
    // whole branch, including the operations before it.
    let err = store
        .txn(Txn::new().and_then([
            TxnOp::put("/x/b", v("1")),
            TxnOp::delete("/x/a"),
            TxnOp::put_with_lease("/x/c", v("1"), LeaseId(0x7fff_ffff)),
        ]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseNotFound { .. }), "{err:?}");
    assert_eq!(current_revision(&store).await, r);
    let all = store.range("/x/", RangeOptions::default()).await.unwrap();
    assert_eq!(keys(&all.kvs), ["/x/a"]);
    assert_eq!(all.kvs[0].version, 1);
}

pub async fn read_only_txn_keeps_the_revision(store: S) {
    store.put("/ro/a", v("1"), None).await.unwrap();
    let r = current_revision(&store).await;
    let response = store
        .txn(Txn::new().when([Compare::exists("/ro/a")]).and_then([
            TxnOp::get("/ro/a"),
            TxnOp::range("/ro/", RangeOptions::default()),
        ]))
        .await
        .unwrap();
    assert!(response.succeeded);
    assert_eq!(response.revision, r);
    assert_eq!(current_revision(&store).await, r);
}

pub async fn too_many_ops_are_refused(store: S) {
    let max = store.limits().max_txn_ops;
    let puts = |n: usize| (0..n).map(|i| TxnOp::put(format!("/many/{i:04}"), v("x")));
    let r = current_revision(&store).await;
    for txn in [
        Txn::new().and_then(puts(max + 1)),
        Txn::new().or_else(puts(max + 1)),
        Txn::new().when((0..=max).map(|i| Compare::absent(format!("/many/{i}")))),
    ] {
        let err = store.txn(txn).await.unwrap_err();
        assert!(
            matches!(err, StoreError::TooManyOps { ops, max: m, .. } if ops == max + 1 && m == max),
            "{err:?}"
        );
    }
    assert_eq!(current_revision(&store).await, r);
    // Exactly the limit is fine, in one revision.
    let ok = store.txn(Txn::new().and_then(puts(max))).await.unwrap();
    assert_eq!(ok.revision, r + 1);
    let all = store
        .range("/many/", RangeOptions::default())
        .await
        .unwrap();
    assert_eq!(all.kvs.len(), max);
}

pub async fn invalid_requests_are_refused(store: S) {
    let r = current_revision(&store).await;
    let big = vec![0u8; store.limits().max_value_size + 1];
    let err = store.put("/big", &big, None).await.unwrap_err();
    assert!(matches!(err, StoreError::ValueTooLarge { .. }), "{err:?}");
    let err = store.put("", v("x"), None).await.unwrap_err();
    assert!(matches!(err, StoreError::EmptyKey { .. }), "{err:?}");
    let err = store.get("").await.unwrap_err();
    assert!(matches!(err, StoreError::EmptyKey { .. }), "{err:?}");
    let err = store.delete_prefix("").await.unwrap_err();
    assert!(matches!(err, StoreError::EmptyKey { .. }), "{err:?}");
    let err = store
        .txn(Txn::new().and_then([TxnOp::put("/dup", v("1")), TxnOp::put("/dup", v("2"))]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::DuplicateKey { .. }), "{err:?}");
    let err = store
        .txn(Txn::new().and_then([TxnOp::delete_prefix("/dup/"), TxnOp::put("/dup/1", v("1"))]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::DuplicateKey { .. }), "{err:?}");
    let err = store.grant(Duration::ZERO).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidTtl { .. }), "{err:?}");
    assert!(!err.is_temporary());
    // etcd's largest TTL is 9,000,000,000 s.
    let err = store
        .grant(Duration::from_secs(9_000_000_001))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidTtl { .. }), "{err:?}");
    assert_eq!(current_revision(&store).await, r);
    // The largest value allowed is fine.
    let max = vec![7u8; store.limits().max_value_size];
    store.put("/max", &max, None).await.unwrap();
    assert_eq!(value_of(&store, "/max").await.unwrap().len(), max.len());
}

pub async fn concurrent_compare_and_swap_is_serialised(store: S) {
    const WRITERS: usize = 4;
    const INCREMENTS: usize = 25;
    store.put("/cas/counter", v("0"), None).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            let mut done = 0;
            while done < INCREMENTS {
                let kv = store.get("/cas/counter").await.unwrap().kv.unwrap();
                let n: u64 = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        "/cas/counter",
                        CompareOp::Equal,
                        kv.mod_revision,
                    )])
                    .and_then([TxnOp::put("/cas/counter", (n + 1).to_string().into_bytes())]);
                let response = store.txn(txn).await.unwrap();
                if response.succeeded {
                    revisions.push(response.revision);
                    done += 1;
                }
                tokio::task::yield_now().await;
            }
            revisions
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let total = WRITERS * INCREMENTS;
    assert_eq!(
        value_of(&store, "/cas/counter").await.unwrap(),
        total.to_string().into_bytes()
    );
    let distinct: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        total,
        "every successful swap has its own revision"
    );
    let kv = store.get("/cas/counter").await.unwrap().kv.unwrap();
    assert_eq!(kv.version, total as u64 + 1);
}

pub async fn watch_replays_history_then_follows_live_changes(store: S) {
    let before = store.put("/w/a", v("1"), None).await.unwrap().revision;
    let from = store.put("/w/b", v("1"), None).await.unwrap().revision;
    store.delete("/w/a").await.unwrap();
    store
        .txn(Txn::new().and_then([TxnOp::put("/w/c", v("1")), TxnOp::put("/w/d", v("1"))]))
        .await
        .unwrap();
    let mut watcher = store.watch("/w/", from).await.unwrap();
    assert_eq!(watcher.next_revision(), from);
    let replayed = next_events(&mut watcher, 4).await;
    assert_eq!(
        summary(&replayed),
        [
            (from, "/w/b".to_owned(), "put"),
            (from + 1, "/w/a".to_owned(), "delete"),
            (from + 2, "/w/c".to_owned(), "put"),
            (from + 2, "/w/d".to_owned(), "put"),
        ]
    );
    assert!(before < from);
    assert_eq!(watcher.next_revision(), from + 3);
    // Then live changes, in order, nothing else.
    store.put("/w/e", v("1"), None).await.unwrap();
    store.put("/w/b", v("2"), None).await.unwrap();
    let live = events_until_marker(&store, &mut watcher, "/w/zz-marker").await;
    assert_eq!(
        summary(&live),
        [
            (from + 3, "/w/e".to_owned(), "put"),
            (from + 4, "/w/b".to_owned(), "put")
        ]
    );
    match &live[1] {
        WatchEvent::Put { kv, prev } => {
            assert_eq!((&kv.value[..], kv.version), (v("2"), 2));
            assert_eq!(&prev.as_ref().unwrap().value[..], v("1"));
        }
        other => panic!("{other:?}"),
    }
}

pub async fn watch_sees_only_its_prefix(store: S) {
    let mut watcher = store.watch("/mine/", 0).await.unwrap();
    store.put("/other/a", v("1"), None).await.unwrap();
    store.put("/mine", v("1"), None).await.unwrap();
    store.put("/mine/a", v("1"), None).await.unwrap();
    store.put("/minex", v("1"), None).await.unwrap();
    let events = events_until_marker(&store, &mut watcher, "/mine/zz-marker").await;
    assert_eq!(keys_of(&events), ["/mine/a"]);
}

fn keys_of(events: &[WatchEvent]) -> Vec<&str> {
    events.iter().map(WatchEvent::key).collect()
}

pub async fn watch_from_zero_starts_at_the_next_revision(store: S) {
    store.put("/z/old", v("1"), None).await.unwrap();
    let r = current_revision(&store).await;
    let mut watcher = store.watch("/z/", 0).await.unwrap();
    assert_eq!(watcher.next_revision(), r + 1);
    store.put("/z/new", v("1"), None).await.unwrap();
    let events = next_events(&mut watcher, 1).await;
    assert_eq!(summary(&events), [(r + 1, "/z/new".to_owned(), "put")]);
}

pub async fn watch_delivers_a_transaction_whole(store: S) {
    let mut watcher = store.watch("/tx/", 0).await.unwrap();
    let keys: Vec<String> = (0..50).map(|i| format!("/tx/{i:02}")).collect();
    let response = store
        .txn(Txn::new().and_then(keys.iter().map(|k| TxnOp::put(k.as_str(), v("x")))))
        .await
        .unwrap();
    let batch = tokio::time::timeout(DEADLINE, watcher.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(batch.len(), 50, "one batch holds the whole revision");
    assert!(batch.iter().all(|e| e.revision() == response.revision));
    assert_eq!(
        keys_of(&batch),
        keys.iter().map(String::as_str).collect::<Vec<_>>()
    );
}

pub async fn watch_of_deletes_carries_the_previous_value(store: S) {
    store.put("/del/a", v("old"), None).await.unwrap();
    let mut watcher = store.watch("/del/", 0).await.unwrap();
    let deleted = store.delete("/del/a").await.unwrap();
    let events = next_events(&mut watcher, 1).await;
    match &events[0] {
        WatchEvent::Delete {
            key,
            revision,
            prev,
        } => {
            assert_eq!((key.as_str(), *revision), ("/del/a", deleted.revision));
            assert_eq!(&prev.as_ref().expect("previous value").value[..], v("old"));
        }
        other => panic!("{other:?}"),
    }
}

/// `watch_changes` delivers the same changes, in the same batches, as
/// `watch`: only the previous values may be missing.
pub async fn watch_changes_sees_what_watch_sees(store: S) {
    store.put("/wc/a", v("1"), None).await.unwrap();
    let from = current_revision(&store).await + 1;
    store.put("/wc/a", v("2"), None).await.unwrap();
    store
        .txn(Txn::new().and_then([TxnOp::put("/wc/b", v("1")), TxnOp::delete("/wc/a")]))
        .await
        .unwrap();
    let mut full = store.watch("/wc/", from).await.unwrap();
    let mut changes = store.watch_changes("/wc/", from).await.unwrap();
    assert_eq!(changes.next_revision(), from);
    let with_prev = next_events(&mut full, 3).await;
    let without = next_events(&mut changes, 3).await;
    assert_eq!(summary(&without), summary(&with_prev));
    for (a, b) in with_prev.iter().zip(&without) {
        match (a, b) {
            (WatchEvent::Put { kv: a, .. }, WatchEvent::Put { kv: b, prev }) => {
                assert_eq!(a, b);
                if let Some(prev) = prev {
                    assert_eq!(&prev.value[..], v("1"), "a wrong previous value");
                }
            }
            (WatchEvent::Delete { .. }, WatchEvent::Delete { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(changes.next_revision(), from + 2);
}

pub async fn read_then_watch_sees_every_later_change_exactly_once(store: S) {
    const WRITES: usize = 300;
    let progress = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (store, progress) = (store.clone(), progress.clone());
        tokio::spawn(async move {
            let mut revisions = Vec::new();
            for i in 0..WRITES {
                let key = format!("/rw/{}", i % 17);
                let revision = if i % 5 == 4 {
                    store.delete(&key).await.unwrap().revision
                } else {
                    store
                        .put(&key, i.to_string().as_bytes(), None)
                        .await
                        .unwrap()
                        .revision
                };
                revisions.push(revision);
                progress.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
            revisions
        })
    };
    // Read part-way through the writes, then watch from just after the read.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while progress.load(Ordering::SeqCst) < WRITES / 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "writer makes progress"
        );
        tokio::task::yield_now().await;
    }
    let read = store.range("/rw/", RangeOptions::default()).await.unwrap();
    let mut watcher = store.watch("/rw/", read.revision + 1).await.unwrap();
    let revisions = writer.await.unwrap();
    let events = events_until_marker(&store, &mut watcher, "/rw/zz-marker").await;

    // Every write after the read arrives once, in revision order.
    let expected: Vec<u64> = revisions
        .iter()
        .copied()
        .filter(|&r| r > read.revision)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let seen: Vec<u64> = events.iter().map(WatchEvent::revision).collect();
    assert_eq!(seen, expected);
    // The read plus the events is the store's state.
    let mut state: BTreeMap<String, Vec<u8>> = read
        .kvs
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.to_vec()))
        .collect();
    for event in &events {
        match event {
            WatchEvent::Put { kv, .. } => {
                state.insert(kv.key.clone(), kv.value.to_vec());
            }
            WatchEvent::Delete { key, .. } => {
                state.remove(key);
            }
        }
    }
    let now = store.range("/rw/", RangeOptions::default()).await.unwrap();
    let now: BTreeMap<String, Vec<u8>> = now
        .kvs
        .iter()
        .filter(|kv| kv.key != "/rw/zz-marker")
        .map(|kv| (kv.key.clone(), kv.value.to_vec()))
        .collect();
    assert_eq!(state, now);
}

pub async fn watch_resumes_from_next_revision_without_gap(store: S) {
    let mut watcher = store.watch("/res/", 0).await.unwrap();
    store.put("/res/a", v("1"), None).await.unwrap();
    next_events(&mut watcher, 1).await;
    let resume = watcher.next_revision();
    drop(watcher);
    store.put("/res/b", v("1"), None).await.unwrap();
    store.put("/res/c", v("1"), None).await.unwrap();
    let mut watcher = store.watch("/res/", resume).await.unwrap();
    let events = events_until_marker(&store, &mut watcher, "/res/zz-marker").await;
    assert_eq!(keys_of(&events), ["/res/b", "/res/c"]);
}

pub async fn watch_from_a_compacted_revision_fails(store: S) {
    let r1 = store.put("/cp/a", v("1"), None).await.unwrap().revision;
    store.put("/cp/a", v("2"), None).await.unwrap();
    let r3 = store.put("/cp/a", v("3"), None).await.unwrap().revision;
    store.compact(r3).await.unwrap();
    // The contract lets a backend report it from the call or from the
    // watcher's first answer (etcd reports it on the stream).
    let err = match store.watch("/cp/", r1).await {
        Err(err) => err,
        Ok(mut watcher) => tokio::time::timeout(DEADLINE, watcher.next())
            .await
            .unwrap()
            .unwrap_err(),
    };
    match err {
        StoreError::Compacted {
            requested,
            compact_revision,
        } => {
            assert_eq!(requested, r1);
            assert_eq!(compact_revision, r3);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !StoreError::Compacted {
            requested: 0,
            compact_revision: 0
        }
        .is_temporary()
    );
    // From the compact revision itself, the history is whole.
    let mut watcher = store.watch("/cp/", r3).await.unwrap();
    let events = next_events(&mut watcher, 1).await;
    assert_eq!(summary(&events), [(r3, "/cp/a".to_owned(), "put")]);
    // Compacting again to an older revision changes nothing.
    store.compact(r1).await.unwrap();
    assert!(store.watch("/cp/", r3).await.is_ok());
}

pub async fn compact_beyond_the_current_revision_fails(store: S) {
    let r = current_revision(&store).await;
    let err = store.compact(r + 10).await.unwrap_err();
    assert!(matches!(err, StoreError::FutureRevision { .. }), "{err:?}");
}

pub async fn lease_expiry_deletes_its_keys_with_events(store: S) {
    let grant = store.grant(TTL).await.unwrap();
    assert!(grant.ttl >= TTL);
    store.put("/le/a", v("1"), Some(grant.id)).await.unwrap();
    store.put("/le/b", v("1"), Some(grant.id)).await.unwrap();
    store.put("/le/keep", v("1"), None).await.unwrap();
    let kv = store.get("/le/a").await.unwrap().kv.unwrap();
    assert_eq!(kv.lease, Some(grant.id));
    let ttl = store.time_to_live(grant.id).await.unwrap();
    assert!(ttl > Duration::ZERO && ttl <= grant.ttl, "{ttl:?}");
    let mut watcher = store.watch("/le/", 0).await.unwrap();
    // The expiry comes by itself; wait for its events.
    let events = next_events(&mut watcher, 2).await;
    assert_eq!(
        summary(&events)
            .into_iter()
            .map(|(_, k, kind)| (k, kind))
            .collect::<Vec<_>>(),
        [
            ("/le/a".to_owned(), "delete"),
            ("/le/b".to_owned(), "delete")
        ]
    );
    assert_eq!(events[0].revision(), events[1].revision(), "one revision");
    assert!(value_of(&store, "/le/a").await.is_none());
    assert!(value_of(&store, "/le/b").await.is_none());
    assert!(value_of(&store, "/le/keep").await.is_some());
    assert!(matches!(
        store.keepalive(grant.id).await,
        Err(StoreError::LeaseNotFound { .. })
    ));
}

pub async fn lease_revoke_deletes_its_keys_in_one_revision(store: S) {
    let lease = store.grant(TTL).await.unwrap().id;
    store.put("/lr/a", v("1"), Some(lease)).await.unwrap();
    store.put("/lr/b", v("1"), Some(lease)).await.unwrap();
    let r = current_revision(&store).await;
    let mut watcher = store.watch("/lr/", 0).await.unwrap();
    let revision = store.revoke(lease).await.unwrap();
    assert_eq!(revision, r + 1);
    let events = next_events(&mut watcher, 2).await;
    assert_eq!(
        summary(&events),
        [
            (r + 1, "/lr/a".to_owned(), "delete"),
            (r + 1, "/lr/b".to_owned(), "delete")
        ]
    );
    assert!(
        store
            .range("/lr/", RangeOptions::default())
            .await
            .unwrap()
            .kvs
            .is_empty()
    );
    assert!(matches!(
        store.keepalive(lease).await,
        Err(StoreError::LeaseNotFound { .. })
    ));
    assert!(matches!(
        store.revoke(lease).await,
        Err(StoreError::LeaseNotFound { .. })
    ));
    // A lease without keys ends without a revision.
    let empty = store.grant(TTL).await.unwrap().id;
    assert_eq!(store.revoke(empty).await.unwrap(), r + 1);
}

pub async fn keepalive_extends_the_lease(store: S) {
    let grant = store.grant(TTL).await.unwrap();
    store.put("/ka/a", v("1"), Some(grant.id)).await.unwrap();
    let mut watcher = store.watch("/ka/", 0).await.unwrap();
    let start = tokio::time::Instant::now();
    for _ in 0..3 {
        tokio::time::sleep(grant.ttl * 6 / 10).await;
        let ttl = store.keepalive(grant.id).await.unwrap();
        assert_eq!(ttl, grant.ttl);
        let left = store.time_to_live(grant.id).await.unwrap();
        assert!(left > grant.ttl / 2, "{left:?}");
    }
    // Kept alive well past its first TTL.
    assert!(start.elapsed() > grant.ttl);
    assert!(value_of(&store, "/ka/a").await.is_some());
    // Then it expires a TTL after the last keepalive.
    let events = next_events(&mut watcher, 1).await;
    assert_eq!(summary(&events)[0].2, "delete");
    assert!(start.elapsed() >= grant.ttl * 18 / 10 + grant.ttl);
}

pub async fn keepalive_after_expiry_fails(store: S) {
    let grant = store.grant(TTL).await.unwrap();
    store.put("/kx/a", v("1"), Some(grant.id)).await.unwrap();
    tokio::time::sleep(grant.ttl + Duration::from_secs(1)).await;
    let err = store.keepalive(grant.id).await.unwrap_err();
    assert!(
        matches!(err, StoreError::LeaseNotFound { lease } if lease == grant.id),
        "{err:?}"
    );
    assert!(!err.is_temporary());
    assert!(matches!(
        store.time_to_live(grant.id).await,
        Err(StoreError::LeaseNotFound { .. })
    ));
    // Its keys go (the expiry is committed by the store itself).
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while value_of(&store, "/kx/a").await.is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "key deleted after expiry"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A put on the expired lease fails and writes nothing.
    let err = store
        .put("/kx/b", v("1"), Some(grant.id))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseNotFound { .. }), "{err:?}");
    assert!(value_of(&store, "/kx/b").await.is_none());
}

pub async fn unknown_leases_are_refused(store: S) {
    let unknown = LeaseId(0x7fff_0000_0000);
    for result in [
        store.put("/ul/a", v("1"), Some(unknown)).await.map(|_| ()),
        store.keepalive(unknown).await.map(|_| ()),
        store.time_to_live(unknown).await.map(|_| ()),
        store.revoke(unknown).await.map(|_| ()),
    ] {
        assert!(
            matches!(result, Err(StoreError::LeaseNotFound { lease }) if lease == unknown),
            "{result:?}"
        );
    }
    assert!(value_of(&store, "/ul/a").await.is_none());
}

pub async fn put_without_lease_takes_the_key_off_its_lease(store: S) {
    let lease = store.grant(TTL).await.unwrap().id;
    store.put("/off/a", v("1"), Some(lease)).await.unwrap();
    store.put("/off/b", v("1"), Some(lease)).await.unwrap();
    store.put("/off/a", v("2"), None).await.unwrap();
    assert_eq!(store.get("/off/a").await.unwrap().kv.unwrap().lease, None);
    store.revoke(lease).await.unwrap();
    assert_eq!(value_of(&store, "/off/a").await.as_deref(), Some(v("2")));
    assert!(value_of(&store, "/off/b").await.is_none());
    // And onto another lease.
    let other = store.grant(TTL).await.unwrap().id;
    let third = store.grant(TTL).await.unwrap().id;
    store.put("/off/c", v("1"), Some(other)).await.unwrap();
    store.put("/off/c", v("2"), Some(third)).await.unwrap();
    store.revoke(other).await.unwrap();
    assert_eq!(value_of(&store, "/off/c").await.as_deref(), Some(v("2")));
    store.revoke(third).await.unwrap();
    assert!(value_of(&store, "/off/c").await.is_none());
}
