//! The log over the memory store: chunks and transactions counted,
//! retention, bounds, filters, pages, following, and writes that fail.

use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::event::{Event, EventKind, MAX_DETAIL_LEN};
use flotilla_proto::{MachineId, UnitName};

use super::*;
use flotilla_store::{Fault, MemoryOptions, MemoryStore, Method, WatchOptions};

fn unit(n: usize) -> UnitName {
    UnitName::parse(&format!("u{n}.service")).unwrap()
}

fn machine(n: u8) -> MachineId {
    MachineId::parse(&format!("{n:02x}").repeat(16)).unwrap()
}

fn placed(n: usize, at_ms: u64) -> Event {
    Event::new(EventKind::UnitPlaced, at_ms)
        .unit(&unit(n))
        .machine(&machine((n % 3) as u8 + 1))
}

fn log_on(store: &Arc<MemoryStore>, retention: EventRetention) -> EventLog {
    EventLog::new(store.clone(), Keys::default(), retention)
}

async fn all(log: &EventLog, filter: &EventFilter) -> Vec<Event> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = log.list(filter, token.as_deref(), Some(7)).await.unwrap();
        out.extend(page.events);
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => return out,
        }
    }
}

fn units_of(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.unit.as_ref().map(|u| u.to_string()).unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn ten_thousand_events_are_a_few_transactions_of_chunks() {
    let store = Arc::new(MemoryStore::new());
    let log = log_on(&store, EventRetention::default());
    let before = store.calls().of(Method::Txn);
    log.record_all((0..10_000).map(|n| placed(n, 1_000 + n as u64)).collect());
    log.flush().await;
    let txns = store.calls().of(Method::Txn) - before;
    let keys = store
        .range(&Keys::default().events(), RangeOptions::default())
        .await
        .unwrap()
        .kvs;
    // 10,000 / 128 chunks, at most 128 puts and 1 MiB per transaction.
    assert_eq!(keys.len(), 10_000usize.div_ceil(EVENTS_PER_CHUNK), "chunks");
    assert!(txns <= 3, "{txns} transactions for 10,000 events");
    let events = all(&log, &EventFilter::default()).await;
    assert_eq!(events.len(), 10_000);
    assert_eq!(events[0].unit, Some(unit(0)));
    assert_eq!(events[9_999].unit, Some(unit(9_999)));
    // Ids are unique and in order.
    let ids: std::collections::BTreeSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), 10_000);
}

#[tokio::test]
async fn events_keep_their_order_across_records_and_chunks() {
    let store = Arc::new(MemoryStore::new());
    let log = log_on(&store, EventRetention::default());
    for n in 0..300 {
        log.record(placed(n, 5));
    }
    log.flush().await;
    let events = all(&log, &EventFilter::default()).await;
    let expected: Vec<String> = (0..300).map(|n| unit(n).to_string()).collect();
    assert_eq!(units_of(&events), expected);
}

#[tokio::test]
async fn details_are_bounded_and_chunks_stay_under_their_size() {
    let store = Arc::new(MemoryStore::new());
    let log = log_on(&store, EventRetention::default());
    let long = "x".repeat(100_000);
    log.record_all(
        (0..200)
            .map(|n| placed(n, 1).detail(long.clone()).actor(long.clone()))
            .collect(),
    );
    log.flush().await;
    let kvs = store
        .range(&Keys::default().events(), RangeOptions::default())
        .await
        .unwrap()
        .kvs;
    assert!(kvs.iter().all(|kv| kv.value.len() <= MAX_CHUNK_BYTES));
    let events = all(&log, &EventFilter::default()).await;
    assert_eq!(events.len(), 200);
    assert!(
        events
            .iter()
            .all(|e| e.detail.as_ref().unwrap().len() <= MAX_DETAIL_LEN)
    );
}

#[tokio::test]
async fn filters_by_unit_machine_prefix_and_time() {
    let store = Arc::new(MemoryStore::new());
    let log = log_on(&store, EventRetention::default());
    log.record_all(vec![
        placed(1, 100),
        placed(2, 200),
        Event::new(EventKind::UnitMoved, 300)
            .unit(&unit(1))
            .machine(&machine(9))
            .from_machine(&machine(2))
            .detail("its machine left the cluster"),
        Event::new(EventKind::MachineLost, 300).machine(&machine(2)),
        Event::new(EventKind::LeaderChanged, 400).detail("server a leads"),
    ]);
    log.flush().await;
    let by_unit = all(
        &log,
        &EventFilter {
            unit: Some(unit(1)),
            ..EventFilter::default()
        },
    )
    .await;
    let kinds: Vec<EventKind> = by_unit.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::UnitPlaced, EventKind::UnitMoved]);
    // Machine 2 as the machine (u1 placed there: 1 % 3 + 1), as the one a
    // unit left, and lost; by its short id.
    let short = machine(2).short().to_owned();
    let by_machine = all(
        &log,
        &EventFilter {
            machine: Some(short),
            ..EventFilter::default()
        },
    )
    .await;
    let kinds: Vec<EventKind> = by_machine.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::UnitPlaced,
            EventKind::UnitMoved,
            EventKind::MachineLost
        ]
    );
    let since = all(
        &log,
        &EventFilter {
            since_ms: Some(300),
            ..EventFilter::default()
        },
    )
    .await;
    assert_eq!(since.len(), 3);
    assert!(since.iter().all(|e| e.at_ms >= 300));
}

#[tokio::test]
async fn pages_resume_where_they_stopped_and_refuse_other_tokens() {
    let store = Arc::new(MemoryStore::new());
    let log = log_on(&store, EventRetention::default());
    log.record_all((0..300).map(|n| placed(n, 1)).collect());
    log.flush().await;
    let first = log
        .list(&EventFilter::default(), None, Some(100))
        .await
        .unwrap();
    assert_eq!(first.events.len(), 100);
    let token = first.next_page_token.clone().unwrap();
    // The next page starts with the event after the last one given.
    let second = log
        .list(&EventFilter::default(), Some(&token), Some(100))
        .await
        .unwrap();
    assert_eq!(second.events[0].unit, Some(unit(100)));
    assert_eq!(token, second.events[0].id);
    let third = log
        .list(
            &EventFilter::default(),
            second.next_page_token.as_deref(),
            Some(1000),
        )
        .await
        .unwrap();
    assert_eq!(third.events.len(), 100);
    assert_eq!(third.next_page_token, None);
    // The limit is capped, and a token not given is refused.
    let capped = log
        .list(&EventFilter::default(), None, Some(1_000_000))
        .await
        .unwrap();
    assert_eq!(capped.events.len(), 300);
    for bad in ["x", "../units/a/0", "0001700000000000-0000000001-ab-999/0"] {
        assert!(matches!(
            log.list(&EventFilter::default(), Some(bad), None).await,
            Err(EventError::BadToken)
        ));
    }
}

#[tokio::test]
async fn a_filter_that_matches_little_reads_a_bounded_amount() {
    let store = Arc::new(MemoryStore::new());
    let log = log_on(&store, EventRetention::default());
    log.record_all((0..SCAN_BUDGET + 500).map(|n| placed(n, 1)).collect());
    log.record(Event::new(EventKind::LeaderChanged, 2).detail("the needle"));
    log.flush().await;
    let filter = EventFilter {
        unit: Some(unit(SCAN_BUDGET + 400)),
        ..EventFilter::default()
    };
    let page = log.list(&filter, None, None).await.unwrap();
    assert!(page.events.is_empty(), "{:?}", page.events);
    let token = page.next_page_token.expect("a short page goes on");
    let page = log.list(&filter, Some(&token), None).await.unwrap();
    assert_eq!(
        units_of(&page.events),
        [unit(SCAN_BUDGET + 400).to_string()]
    );
}

#[tokio::test]
async fn retention_keeps_the_newest_events_and_drops_old_ones() {
    let store = Arc::new(MemoryStore::new());
    let log = log_on(
        &store,
        EventRetention {
            max_events: 300,
            max_age: Duration::from_secs(3600),
        },
    );
    // Five writes of 128: five chunks.
    for round in 0..5 {
        log.record_all((0..128).map(|n| placed(round * 128 + n, 1)).collect());
        log.flush().await;
    }
    let dropped = log.trim().await.unwrap();
    // Dropping the three oldest chunks leaves 256 <= 300.
    assert_eq!(dropped, 3 * 128);
    let kept = all(&log, &EventFilter::default()).await;
    assert_eq!(kept.len(), 256);
    assert_eq!(kept[0].unit, Some(unit(3 * 128)));
    assert_eq!(log.trim().await.unwrap(), 0, "trimming twice drops nothing");

    // Chunks older than the age limit go whatever their number.
    let old = log_on(
        &store,
        EventRetention {
            max_events: 1_000_000,
            max_age: Duration::ZERO,
        },
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(old.trim().await.unwrap(), 256);
    assert!(all(&old, &EventFilter::default()).await.is_empty());
}

#[tokio::test]
async fn follow_waits_for_new_events_and_answers_at_a_revision() {
    let store = Arc::new(MemoryStore::new());
    let log = log_on(&store, EventRetention::default());
    log.record(placed(1, 1));
    log.flush().await;
    let listed = log.list(&EventFilter::default(), None, None).await.unwrap();
    assert_eq!(listed.events.len(), 1);
    let index = u64::try_from(listed.index).unwrap();
    // Nothing new: the wait passes, the index stays.
    let idle = log
        .follow(
            &EventFilter::default(),
            index,
            Duration::from_millis(50),
            None,
        )
        .await
        .unwrap();
    assert!(idle.events.is_empty());
    assert_eq!(idle.index, listed.index);
    // A follower waiting for unit 3 is woken by it, not by unit 2.
    let follower = {
        let log = log.clone();
        tokio::spawn(async move {
            let filter = EventFilter {
                unit: Some(unit(3)),
                ..EventFilter::default()
            };
            log.follow(&filter, index, Duration::from_secs(10), None)
                .await
        })
    };
    log.record(placed(2, 2));
    log.flush().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!follower.is_finished(), "woken by an event it filters out");
    log.record(placed(3, 3));
    log.flush().await;
    let got = follower.await.unwrap().unwrap();
    assert_eq!(units_of(&got.events), [unit(3).to_string()]);
    assert!(got.index > listed.index);
    // From the new index, nothing is given twice.
    let after = log
        .follow(
            &EventFilter::default(),
            u64::try_from(got.index).unwrap(),
            Duration::from_millis(20),
            None,
        )
        .await
        .unwrap();
    assert!(after.events.is_empty());
}

#[tokio::test]
async fn a_follower_behind_the_watch_history_catches_up_from_the_log() {
    let store = Arc::new(MemoryStore::with_options(MemoryOptions {
        watch: WatchOptions {
            history_events: 4,
            ..WatchOptions::default()
        },
        ..MemoryOptions::default()
    }));
    let log = log_on(&store, EventRetention::default());
    let now = crate::trust::now_ms();
    log.record(placed(1, now));
    log.flush().await;
    let index = u64::try_from(
        log.list(&EventFilter::default(), None, None)
            .await
            .unwrap()
            .index,
    )
    .unwrap();
    // Other writes push the history past the follower's revision.
    for n in 0..20 {
        store.put(&format!("/other/{n}"), b"x", None).await.unwrap();
    }
    log.record(placed(2, now));
    log.flush().await;
    assert!(
        matches!(
            store.watch(&Keys::default().events(), index + 1).await,
            Err(flotilla_store::StoreError::Compacted { .. })
        ),
        "the history still reaches the follower"
    );
    let got = log
        .follow(&EventFilter::default(), index, Duration::from_secs(1), None)
        .await
        .unwrap();
    assert_eq!(units_of(&got.events), [unit(2).to_string()]);
}

#[tokio::test]
async fn a_store_that_fails_drops_events_and_fails_nothing_else() {
    let store = Arc::new(MemoryStore::new());
    let log = log_on(&store, EventRetention::default());
    // More failures than the writer's attempts.
    store.inject(Fault::unavailable(WRITE_ATTEMPTS).on(Method::Txn));
    log.record(placed(1, 1));
    log.flush().await;
    log.record(placed(2, 2));
    log.flush().await;
    let events = all(&log, &EventFilter::default()).await;
    assert_eq!(units_of(&events), [unit(2).to_string()]);
}

#[tokio::test]
async fn a_full_queue_drops_new_events_without_waiting() {
    let store = Arc::new(MemoryStore::new());
    let log = log_on(&store, EventRetention::default());
    // Recording more than the queue holds, at once, returns at once.
    log.record_all((0..QUEUE_CAPACITY + 10).map(|n| placed(n, 1)).collect());
    log.flush().await;
    let events = all(&log, &EventFilter::default()).await;
    assert_eq!(events.len(), QUEUE_CAPACITY);
}
