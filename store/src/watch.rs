//! Watches for the local backends: a bounded history window of events and
//! the registry of watchers, fed by the state machine's commits.
//!
//! Each commit is published to the [`Hub`] while the state's write lock is
//! held, and a watch registers under the hub's lock, so a read at revision R
//! followed by a watch from R + 1 sees every later change exactly once.
//!
//! Delivery is push first: a commit's events go straight into the queue of
//! each watcher whose prefix matches. Matching watchers are found through an
//! index by prefix, so a commit costs one lookup per distinct prefix length,
//! not one per watcher (10k agents each watching their own prefix must not
//! all be woken by every write). A watcher that does not read and fills its
//! queue is not allowed to hold memory without bound: it stops receiving
//! pushes and reads the history window from where it stopped when it reads
//! again ("lagging", etcd's unsynced watchers). If the history has moved past
//! it by then, it ends with [`StoreError::Compacted`], as in etcd.
//!
//! Both the history and each queue are bounded in events and in bytes
//! ([`WatchOptions`]): values can be large (a unit file of hundreds of
//! kilobytes), and a history bounded only by count kept every value of the
//! last 100,000 events reachable. Bytes are accounted per event
//! ([`WatchEvent::accounted_bytes`]), an upper bound of what is held.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::{BoxFuture, HistoryStats, StoreError, StoreResult, WatchEvent, WatchOptions, lock};

/// Most events returned by one [`Watcher::next`] (a revision is never split,
/// so one answer can hold more when a single revision is larger).
const MAX_BATCH_EVENTS: usize = 1024;

/// Most history events a lagging watcher scans per turn of the hub's lock,
/// so that catching up does not stall commits.
const MAX_SCAN_EVENTS: usize = 16 * 1024;

/// A stream of changes under a prefix, in revision order, each revision
/// whole. Dropping it cancels the watch.
pub struct Watcher {
    source: Box<dyn WatchSource>,
    prefix: String,
    next_revision: u64,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("prefix", &self.prefix)
            .field("next_revision", &self.next_revision)
            .finish_non_exhaustive()
    }
}

impl Watcher {
    /// Wraps a backend's source; `start_revision` is the first revision the
    /// watch delivers (already resolved from 0, "now").
    pub(crate) fn new(source: Box<dyn WatchSource>, prefix: &str, start_revision: u64) -> Self {
        Watcher {
            source,
            prefix: prefix.to_owned(),
            next_revision: start_revision,
        }
    }

    /// Waits for the next changes: the events of one or more whole
    /// revisions, in order, never empty.
    ///
    /// Errors end the watch (later calls return an error again):
    /// [`Compacted`](StoreError::Compacted) when the watcher fell behind the
    /// history window, [`Closed`](StoreError::Closed) when the store closed,
    /// [`Unavailable`](StoreError::Unavailable) when the stream broke. After
    /// `Unavailable`, watch again from [`Watcher::next_revision`]; after
    /// `Compacted`, read again and watch from the read's revision + 1.
    pub async fn next(&mut self) -> StoreResult<Vec<WatchEvent>> {
        let events = self.source.next_batch().await?;
        if let Some(last) = events.last() {
            self.next_revision = last.revision() + 1;
        }
        Ok(events)
    }

    /// The prefix watched.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The revision this watch delivers next: every change before it (under
    /// the prefix, since the start) has been returned. Watching again from
    /// here continues without a gap or a repeat.
    pub fn next_revision(&self) -> u64 {
        self.next_revision
    }
}

/// What a backend provides behind a [`Watcher`].
pub(crate) trait WatchSource: Send {
    /// The next non-empty batch of whole revisions, or the error that ends
    /// the watch.
    fn next_batch(&mut self) -> BoxFuture<'_, StoreResult<Vec<WatchEvent>>>;
}

/// The history window and the watchers of one local store.
#[derive(Debug)]
pub(crate) struct Hub {
    options: WatchOptions,
    /// Events of the revisions `compact_revision..=current_revision` that
    /// are still kept, in order.
    history: VecDeque<WatchEvent>,
    /// The accounted bytes of `history`.
    history_bytes: usize,
    /// The oldest revision a watch can start from.
    compact_revision: u64,
    current_revision: u64,
    next_id: u64,
    by_prefix: HashMap<String, Vec<Arc<Slot>>>,
    /// How many watched prefixes have each length (in bytes).
    prefix_lens: BTreeMap<usize, usize>,
    closed: bool,
}

/// One watcher's side of the hub.
#[derive(Debug)]
pub(crate) struct Slot {
    id: u64,
    prefix: String,
    /// Events before this revision are not delivered (a watch from the
    /// future).
    min_revision: u64,
    queue: Mutex<Queue>,
    notify: Notify,
}

#[derive(Debug, Default)]
struct Queue {
    events: VecDeque<WatchEvent>,
    /// The accounted bytes of `events`.
    bytes: usize,
    /// Set when the watcher must read the history from this revision on
    /// instead of receiving pushes (its initial replay, or an overflow).
    lagging_from: Option<u64>,
    /// The error that ends the watch, once the queued events are read.
    ended: Option<StoreError>,
}

impl Hub {
    /// A hub for a store at `revision` whose history before it is unknown
    /// (a fresh store, or one loaded from a snapshot).
    pub(crate) fn new(options: WatchOptions, revision: u64) -> Self {
        Hub {
            options,
            history: VecDeque::new(),
            history_bytes: 0,
            // The initial revision has no events, so a fresh store can be
            // watched from it; after a snapshot at R, R's events are gone.
            compact_revision: if revision == super::state::INITIAL_REVISION {
                revision
            } else {
                revision + 1
            },
            current_revision: revision,
            next_id: 0,
            by_prefix: HashMap::new(),
            prefix_lens: BTreeMap::new(),
            closed: false,
        }
    }

    /// Records the events of one new revision and delivers them.
    pub(crate) fn publish(&mut self, revision: u64, events: &[WatchEvent]) {
        debug_assert!(revision > self.current_revision);
        debug_assert!(events.iter().all(|e| e.revision() == revision));
        self.current_revision = revision;
        for event in events {
            self.deliver(event);
        }
        for event in events {
            self.history_bytes += event.accounted_bytes();
            self.history.push_back(event.clone());
        }
        while self.history.len() > self.options.history_events
            || self.history_bytes > self.options.history_bytes
        {
            let Some(oldest) = self.history.front().map(WatchEvent::revision) else {
                break;
            };
            self.pop_history_before(oldest + 1);
            self.compact_revision = oldest + 1;
        }
    }

    /// Drops the history's events before `revision`.
    fn pop_history_before(&mut self, revision: u64) {
        while let Some(event) = self.history.front()
            && event.revision() < revision
        {
            self.history_bytes -= event.accounted_bytes();
            self.history.pop_front();
        }
    }

    /// What the history holds now.
    pub(crate) fn stats(&self) -> HistoryStats {
        HistoryStats {
            events: self.history.len(),
            bytes: self.history_bytes,
            compact_revision: self.compact_revision,
            current_revision: self.current_revision,
            options: self.options,
        }
    }

    fn deliver(&self, event: &WatchEvent) {
        let key = event.key();
        let revision = event.revision();
        for &len in self.prefix_lens.range(..=key.len()).map(|(len, _)| len) {
            if !key.is_char_boundary(len) {
                continue;
            }
            let Some(slots) = self.by_prefix.get(&key[..len]) else {
                continue;
            };
            for slot in slots {
                if revision < slot.min_revision {
                    continue;
                }
                let mut queue = lock(&slot.queue);
                if queue.ended.is_some() || queue.lagging_from.is_some() {
                    continue;
                }
                let bytes = event.accounted_bytes();
                // A queue holding only this revision takes it whole, so that
                // a revision larger than the byte bound still reaches live
                // watchers.
                let only_this_revision = queue
                    .events
                    .front()
                    .is_none_or(|front| front.revision() == revision);
                let full = queue.events.len() >= self.options.watcher_queue_events
                    || (queue.bytes + bytes > self.options.watcher_queue_bytes
                        && !only_this_revision);
                if full {
                    // Drop this revision's part already queued and switch to
                    // reading the history from it, so that the revision is
                    // delivered whole and nothing twice.
                    while let Some(back) = queue.events.back()
                        && back.revision() == revision
                    {
                        queue.bytes -= back.accounted_bytes();
                        queue.events.pop_back();
                    }
                    queue.lagging_from = Some(revision);
                } else {
                    queue.bytes += bytes;
                    queue.events.push_back(event.clone());
                }
                drop(queue);
                slot.notify.notify_one();
            }
        }
    }

    /// Registers a watch of `prefix` from `from_revision` (0: the next
    /// revision). Returns the slot and the resolved start revision.
    pub(crate) fn register(
        &mut self,
        prefix: &str,
        from_revision: u64,
    ) -> StoreResult<(Arc<Slot>, u64)> {
        if self.closed {
            return Err(StoreError::Closed);
        }
        let start = if from_revision == 0 {
            self.current_revision + 1
        } else {
            from_revision
        };
        if start < self.compact_revision {
            return Err(StoreError::Compacted {
                requested: start,
                compact_revision: self.compact_revision,
            });
        }
        self.next_id += 1;
        let slot = Arc::new(Slot {
            id: self.next_id,
            prefix: prefix.to_owned(),
            min_revision: start,
            queue: Mutex::new(Queue {
                lagging_from: (start <= self.current_revision).then_some(start),
                ..Queue::default()
            }),
            notify: Notify::new(),
        });
        self.by_prefix
            .entry(prefix.to_owned())
            .or_default()
            .push(slot.clone());
        *self.prefix_lens.entry(prefix.len()).or_default() += 1;
        Ok((slot, start))
    }

    fn unregister(&mut self, slot: &Slot) {
        let Some(slots) = self.by_prefix.get_mut(&slot.prefix) else {
            return;
        };
        let before = slots.len();
        slots.retain(|s| s.id != slot.id);
        if slots.len() == before {
            return;
        }
        if slots.is_empty() {
            self.by_prefix.remove(&slot.prefix);
        }
        if let Some(count) = self.prefix_lens.get_mut(&slot.prefix.len()) {
            *count -= 1;
            if *count == 0 {
                self.prefix_lens.remove(&slot.prefix.len());
            }
        }
    }

    /// Drops history before `revision`: a watch from an earlier revision
    /// then fails with [`StoreError::Compacted`]. Compacting to a revision
    /// already compacted does nothing.
    pub(crate) fn compact(&mut self, revision: u64) -> StoreResult<()> {
        if revision > self.current_revision {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current: self.current_revision,
            });
        }
        self.pop_history_before(revision);
        self.compact_revision = self.compact_revision.max(revision);
        Ok(())
    }

    /// Ends every current watch with `error` (after the events already
    /// queued for it). With `close`, later watches fail with
    /// [`StoreError::Closed`].
    pub(crate) fn end_all(&mut self, error: &StoreError, close: bool) {
        self.closed |= close;
        for slot in self.by_prefix.values().flatten() {
            let mut queue = lock(&slot.queue);
            if queue.ended.is_none() {
                queue.ended = Some(error.clone());
            }
            drop(queue);
            slot.notify.notify_one();
        }
    }

    /// Reads the history for a lagging watcher: whole revisions from where it
    /// stopped, up to the batch and scan limits. Switches it back to pushes
    /// when it has read everything (the caller holds the hub, so no revision
    /// can slip in between).
    fn catch_up(&self, slot: &Slot) -> StoreResult<Vec<WatchEvent>> {
        let mut queue = lock(&slot.queue);
        let Some(from) = queue.lagging_from else {
            return Ok(Vec::new());
        };
        if from < self.compact_revision {
            let error = StoreError::Compacted {
                requested: from,
                compact_revision: self.compact_revision,
            };
            queue.lagging_from = None;
            queue.ended = Some(error.clone());
            return Err(error);
        }
        let mut index = self.history.partition_point(|e| e.revision() < from);
        let mut batch = Vec::new();
        let mut scanned = 0;
        while index < self.history.len()
            && batch.len() < MAX_BATCH_EVENTS
            && scanned < MAX_SCAN_EVENTS
        {
            let revision = self.history[index].revision();
            while let Some(event) = self.history.get(index)
                && event.revision() == revision
            {
                if event.key().starts_with(&slot.prefix) {
                    batch.push(event.clone());
                }
                index += 1;
                scanned += 1;
            }
        }
        queue.lagging_from = self.history.get(index).map(WatchEvent::revision);
        Ok(batch)
    }
}

/// Takes up to [`MAX_BATCH_EVENTS`] events from the queue, never splitting
/// a revision.
fn pop_batch(queue: &mut Queue) -> Vec<WatchEvent> {
    let mut batch: Vec<WatchEvent> = Vec::new();
    while let Some(front) = queue.events.front() {
        let same_revision = batch
            .last()
            .is_some_and(|last| last.revision() == front.revision());
        if batch.len() >= MAX_BATCH_EVENTS && !same_revision {
            break;
        }
        if let Some(event) = queue.events.pop_front() {
            queue.bytes -= event.accounted_bytes();
            batch.push(event);
        }
    }
    batch
}

/// A watch on a local store's hub.
pub(crate) struct LocalWatch {
    hub: Arc<Mutex<Hub>>,
    slot: Arc<Slot>,
}

impl LocalWatch {
    /// Registers a watch; returns it with its resolved start revision.
    pub(crate) fn register(
        hub: &Arc<Mutex<Hub>>,
        prefix: &str,
        from_revision: u64,
    ) -> StoreResult<(Self, u64)> {
        let (slot, start) = lock(hub).register(prefix, from_revision)?;
        Ok((
            LocalWatch {
                hub: hub.clone(),
                slot,
            },
            start,
        ))
    }

    async fn next(&mut self) -> StoreResult<Vec<WatchEvent>> {
        loop {
            let lagging = {
                let mut queue = lock(&self.slot.queue);
                if !queue.events.is_empty() {
                    return Ok(pop_batch(&mut queue));
                }
                if let Some(error) = &queue.ended {
                    return Err(error.clone());
                }
                queue.lagging_from.is_some()
            };
            if lagging {
                let batch = lock(&self.hub).catch_up(&self.slot)?;
                if !batch.is_empty() {
                    return Ok(batch);
                }
                continue;
            }
            // A push between the check above and this wait leaves a permit
            // (notify_one), so the wake-up is not lost.
            self.slot.notify.notified().await;
        }
    }
}

impl WatchSource for LocalWatch {
    fn next_batch(&mut self) -> BoxFuture<'_, StoreResult<Vec<WatchEvent>>> {
        Box::pin(self.next())
    }
}

impl Drop for LocalWatch {
    fn drop(&mut self) {
        lock(&self.hub).unregister(&self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyValue;

    fn put(key: &str, revision: u64) -> WatchEvent {
        sized_put(key, revision, 1)
    }

    /// A put of a `len`-byte value that replaces one of the same size.
    fn sized_put(key: &str, revision: u64, len: usize) -> WatchEvent {
        let kv = |revision| KeyValue {
            key: key.to_owned(),
            value: Arc::from(vec![b'v'; len]),
            create_revision: 1,
            mod_revision: revision,
            version: 1,
            lease: None,
        };
        WatchEvent::Put {
            kv: kv(revision),
            prev: (len > 1).then(|| kv(revision - 1)),
        }
    }

    fn hub(history_events: usize, watcher_queue_events: usize) -> Arc<Mutex<Hub>> {
        hub_with(WatchOptions {
            history_events,
            watcher_queue_events,
            ..WatchOptions::default()
        })
    }

    fn hub_with(options: WatchOptions) -> Arc<Mutex<Hub>> {
        Arc::new(Mutex::new(Hub::new(options, 1)))
    }

    /// The accounting matches what is held, in the history and the queue.
    fn assert_accounted(hub: &Arc<Mutex<Hub>>, watch: Option<&LocalWatch>) {
        let h = lock(hub);
        let held: usize = h.history.iter().map(WatchEvent::accounted_bytes).sum();
        assert_eq!(h.history_bytes, held);
        if let Some(watch) = watch {
            let queue = lock(&watch.slot.queue);
            let held: usize = queue.events.iter().map(WatchEvent::accounted_bytes).sum();
            assert_eq!(queue.bytes, held);
        }
    }

    fn publish(hub: &Arc<Mutex<Hub>>, revision: u64, keys: &[&str]) {
        let events: Vec<_> = keys.iter().map(|k| put(k, revision)).collect();
        lock(hub).publish(revision, &events);
    }

    fn revisions(events: &[WatchEvent]) -> Vec<(u64, String)> {
        events
            .iter()
            .map(|e| (e.revision(), e.key().to_owned()))
            .collect()
    }

    #[tokio::test]
    async fn a_watcher_that_overflows_catches_up_from_history_without_gaps_or_repeats() {
        let hub = hub(1000, 3);
        let (mut watch, start) = LocalWatch::register(&hub, "/a/", 0).unwrap();
        assert_eq!(start, 2);
        // Revision 3 overflows the queue halfway: it must come whole, once.
        publish(&hub, 2, &["/a/1", "/b/1"]);
        publish(&hub, 3, &["/a/2", "/a/3", "/a/4"]);
        publish(&hub, 4, &["/a/5"]);
        let mut seen = Vec::new();
        while seen.len() < 5 {
            seen.extend(revisions(&watch.next().await.unwrap()));
        }
        assert_eq!(
            seen,
            [
                (2, "/a/1"),
                (3, "/a/2"),
                (3, "/a/3"),
                (3, "/a/4"),
                (4, "/a/5")
            ]
            .map(|(r, k)| (r, k.to_owned()))
        );
        // Back on pushes.
        assert!(lock(&watch.slot.queue).lagging_from.is_none());
        publish(&hub, 5, &["/a/6"]);
        assert_eq!(
            revisions(&watch.next().await.unwrap()),
            [(5, "/a/6".to_owned())]
        );
    }

    #[tokio::test]
    async fn a_lagging_watcher_past_the_history_window_gets_compacted() {
        let hub = hub(2, 1);
        let (mut watch, _) = LocalWatch::register(&hub, "/", 0).unwrap();
        for revision in 2..=6 {
            publish(&hub, revision, &["/k"]);
        }
        assert_eq!(
            revisions(&watch.next().await.unwrap()),
            [(2, "/k".to_owned())]
        );
        let err = watch.next().await.unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Compacted {
                    requested: 3,
                    compact_revision: 5
                }
            ),
            "{err:?}"
        );
        assert!(matches!(
            watch.next().await,
            Err(StoreError::Compacted { .. })
        ));
    }

    #[tokio::test]
    async fn prefixes_of_several_lengths_and_non_ascii_keys_are_matched() {
        let hub = hub(100, 100);
        let (mut short, _) = LocalWatch::register(&hub, "/", 0).unwrap();
        let (mut long, _) = LocalWatch::register(&hub, "/é/", 0).unwrap();
        let (mut other, _) = LocalWatch::register(&hub, "/x", 0).unwrap();
        publish(&hub, 2, &["/é/1", "/éa", "/"]);
        assert_eq!(short.next().await.unwrap().len(), 3);
        assert_eq!(
            revisions(&long.next().await.unwrap()),
            [(2, "/é/1".to_owned())]
        );
        drop(long);
        assert_eq!(lock(&hub).prefix_lens.len(), 2);
        publish(&hub, 3, &["/x1"]);
        assert_eq!(
            revisions(&other.next().await.unwrap()),
            [(3, "/x1".to_owned())]
        );
    }

    #[tokio::test]
    async fn history_is_trimmed_by_whole_revisions() {
        let hub = hub(3, 10);
        publish(&hub, 2, &["/a", "/b"]);
        publish(&hub, 3, &["/c", "/d"]);
        let h = lock(&hub);
        assert_eq!(h.history.len(), 2);
        assert_eq!(h.compact_revision, 3);
    }

    #[tokio::test]
    async fn ending_delivers_queued_events_first() {
        let hub = hub(10, 10);
        let (mut watch, _) = LocalWatch::register(&hub, "/", 0).unwrap();
        publish(&hub, 2, &["/a"]);
        lock(&hub).end_all(&StoreError::Closed, true);
        assert_eq!(watch.next().await.unwrap().len(), 1);
        assert!(matches!(watch.next().await, Err(StoreError::Closed)));
        assert!(matches!(
            LocalWatch::register(&hub, "/", 0),
            Err(StoreError::Closed)
        ));
    }

    #[test]
    fn an_event_is_accounted_with_its_key_value_and_previous_value() {
        let small = sized_put("/k", 3, 2).accounted_bytes();
        let large = sized_put("/k", 3, 1002).accounted_bytes();
        // The value and the previous value, each 1,000 bytes larger.
        assert_eq!(large - small, 2000);
        assert!(small > std::mem::size_of::<WatchEvent>());
    }

    #[tokio::test]
    async fn history_is_bounded_by_bytes_and_a_watch_from_before_it_is_compacted() {
        let event_bytes = sized_put("/big", 2, 10_000).accounted_bytes();
        let hub = hub_with(WatchOptions {
            history_bytes: 5 * event_bytes,
            ..WatchOptions::default()
        });
        for revision in 2..=101 {
            lock(&hub).publish(revision, &[sized_put("/big", revision, 10_000)]);
            let stats = lock(&hub).stats();
            assert!(stats.bytes <= 5 * event_bytes, "{stats:?}");
        }
        assert_accounted(&hub, None);
        let stats = lock(&hub).stats();
        assert_eq!(stats.events, 5);
        assert_eq!(stats.compact_revision, 97);
        assert!(matches!(
            LocalWatch::register(&hub, "/", 96),
            Err(StoreError::Compacted {
                requested: 96,
                compact_revision: 97
            })
        ));
        let (mut watch, _) = LocalWatch::register(&hub, "/", 97).unwrap();
        let seen = revisions(&watch.next().await.unwrap());
        assert_eq!(seen.first().map(|(r, _)| *r), Some(97));
        assert_eq!(seen.len(), 5);
    }

    #[tokio::test]
    async fn a_revision_larger_than_the_history_is_not_kept_but_reaches_live_watchers() {
        let hub = hub_with(WatchOptions {
            history_bytes: 1000,
            watcher_queue_bytes: 1000,
            ..WatchOptions::default()
        });
        let (mut watch, _) = LocalWatch::register(&hub, "/", 0).unwrap();
        lock(&hub).publish(2, &[sized_put("/a", 2, 5000), sized_put("/b", 2, 5000)]);
        let stats = lock(&hub).stats();
        assert_eq!(
            (stats.events, stats.bytes, stats.compact_revision),
            (0, 0, 3)
        );
        assert_eq!(
            revisions(&watch.next().await.unwrap()),
            [(2, "/a".to_owned()), (2, "/b".to_owned())]
        );
        assert_accounted(&hub, Some(&watch));
        // A watch from now on still works.
        let (mut later, start) = LocalWatch::register(&hub, "/", 0).unwrap();
        assert_eq!(start, 3);
        publish(&hub, 3, &["/c"]);
        assert_eq!(
            revisions(&later.next().await.unwrap()),
            [(3, "/c".to_owned())]
        );
    }

    #[tokio::test]
    async fn a_queue_past_its_byte_bound_reads_the_history_without_gaps() {
        let event_bytes = sized_put("/q", 2, 1000).accounted_bytes();
        let hub = hub_with(WatchOptions {
            watcher_queue_bytes: 3 * event_bytes,
            ..WatchOptions::default()
        });
        let (mut watch, _) = LocalWatch::register(&hub, "/", 0).unwrap();
        for revision in 2..=11 {
            lock(&hub).publish(revision, &[sized_put("/q", revision, 1000)]);
        }
        {
            let queue = lock(&watch.slot.queue);
            assert_eq!(queue.events.len(), 3);
            assert_eq!(queue.bytes, 3 * event_bytes);
            assert_eq!(queue.lagging_from, Some(5));
        }
        let mut seen = Vec::new();
        while seen.len() < 10 {
            seen.extend(revisions(&watch.next().await.unwrap()));
        }
        let expected: Vec<_> = (2..=11).map(|r| (r, "/q".to_owned())).collect();
        assert_eq!(seen, expected);
        assert_accounted(&hub, Some(&watch));
        assert_eq!(lock(&watch.slot.queue).bytes, 0);
    }
}
