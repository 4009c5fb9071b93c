//! Per-cluster quotas, and the counters that enforce them without reading
//! the world per request.
//!
//! [`Quotas`] bounds what one authenticated but hostile (or broken) client
//! can make the cluster hold: units and the bytes of their files, machines,
//! the metadata of each machine, and the bytes of one page of a listing.
//! Cluster-wide capacity that would be exceeded is refused with
//! [`ControlError::QuotaExceeded`] (507); a single request over a limit of
//! its own with [`ControlError::TooLarge`] (413). Both are decided before
//! anything is written.
//!
//! # How the counts are kept
//!
//! A `Tally` counts the keys under one prefix and the bytes of their
//! values. It reads the prefix once, page by page, and then follows the
//! store's watch from the first page's revision, so that every later
//! change is counted exactly once whichever server made it, and a restart
//! simply counts again. Checking a write against the count reads no store
//! key.
//!
//! Why a watch and not a counter key updated in each write's transaction:
//! a counter key would be one compare-and-swap hot spot that every unit
//! write of every server contends on (a burst of `apply` would retry
//! itself to failure), and would need a migration for stores written
//! before it existed. The watch costs one stream per prefix per server.
//!
//! Concurrent writers: each check reserves what the write adds under the
//! tally's lock, and the reservation is held until the watch has counted
//! the write (or the write failed), so that writers on one server cannot
//! together pass a quota they each fit under. Writers on *different*
//! servers see each other's writes only through the watch: a quota can be
//! overshot by the writes in flight on the other servers at that moment
//! (a handful of units, never an unbounded number), which is the price of
//! not serialising every write through one key.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use flotilla_proto::backoff::Backoff;
use tokio::sync::watch;

use crate::control::ControlError;
use flotilla_store::{RangeOptions, Store, StoreError, WatchEvent};

/// Units a cluster holds by default: the scale placement is built for
/// (DESIGN.md, Scheduling).
pub const DEFAULT_MAX_UNITS: u64 = 1_000_000;

/// Bytes of unit records (each unit file JSON-encoded with its hash and
/// desired state, as stored) a cluster holds by default: 512 MiB, a quarter
/// of etcd's default backend quota, so that history and state fit beside.
pub const DEFAULT_MAX_UNIT_BYTES: u64 = 512 * 1024 * 1024;

/// Live machines a cluster holds by default: twice the 10,000 placement is
/// measured at.
pub const DEFAULT_MAX_MACHINES: u64 = 20_000;

/// Metadata keys of one machine, by default.
pub const DEFAULT_MAX_METADATA_KEYS: usize = 64;

/// Bytes of one machine's metadata (keys and values), by default.
pub const DEFAULT_MAX_METADATA_BYTES: usize = 16 * 1024;

/// Bytes of JSON one page of a listing holds, by default (a page stops
/// early rather than pass it, and says where to go on).
pub const DEFAULT_PAGE_BYTES: usize = 8 * 1024 * 1024;

/// How long a write waits for the counts to be loaded (at start, or after
/// the store dropped the history the watch needed) before it is answered
/// "unavailable".
const READY_WAIT: Duration = Duration::from_secs(5);

/// Keys read per page while counting a prefix: bounds the memory of a
/// count to this many values (a unit record is at most ~256 KiB).
const COUNT_PAGE: usize = 256;

/// The limits of one cluster. [`Quotas::default`] is documented per field
/// and in docs/operations.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quotas {
    /// Most units, templates and instances included
    /// ([`DEFAULT_MAX_UNITS`]).
    pub units: u64,
    /// Most bytes of unit records, summed over all units
    /// ([`DEFAULT_MAX_UNIT_BYTES`]).
    pub unit_bytes: u64,
    /// Most live machines ([`DEFAULT_MAX_MACHINES`]).
    pub machines: u64,
    /// Most metadata keys of one machine ([`DEFAULT_MAX_METADATA_KEYS`]).
    pub metadata_keys: usize,
    /// Most bytes of one machine's metadata, keys and values
    /// ([`DEFAULT_MAX_METADATA_BYTES`]).
    pub metadata_bytes: usize,
    /// Most bytes of JSON in one page of units, machines or states
    /// ([`DEFAULT_PAGE_BYTES`]); a page always holds at least one item.
    pub page_bytes: usize,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            units: DEFAULT_MAX_UNITS,
            unit_bytes: DEFAULT_MAX_UNIT_BYTES,
            machines: DEFAULT_MAX_MACHINES,
            metadata_keys: DEFAULT_MAX_METADATA_KEYS,
            metadata_bytes: DEFAULT_MAX_METADATA_BYTES,
            page_bytes: DEFAULT_PAGE_BYTES,
        }
    }
}

/// A cluster-wide quota, as errors name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    Units,
    UnitBytes,
    Machines,
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Quota::Units => "units",
            Quota::UnitBytes => "bytes of unit files",
            Quota::Machines => "machines",
        })
    }
}

/// How many keys, and how many bytes of values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub count: u64,
    pub bytes: u64,
}

impl Usage {
    fn add(&mut self, other: Usage) {
        self.count = self.count.saturating_add(other.count);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }

    fn sub(&mut self, other: Usage) {
        self.count = self.count.saturating_sub(other.count);
        self.bytes = self.bytes.saturating_sub(other.bytes);
    }

    fn is_zero(self) -> bool {
        self == Usage::default()
    }
}

/// The count of the keys under one prefix and the bytes of their values,
/// kept from the store's watch (see the [module documentation](self)).
/// Follows the store from [`Tally::start`] or the first [`Tally::reserve`] on,
/// until dropped.
pub(crate) struct Tally {
    store: Arc<dyn Store>,
    shared: Arc<Shared>,
    count_quota: Quota,
    bytes_quota: Option<Quota>,
    follower: OnceLock<AbortOnDrop>,
}

#[derive(Debug)]
struct Shared {
    prefix: String,
    state: Mutex<State>,
    /// `true` while the counts are loaded and followed.
    ready: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct State {
    /// What the store holds, counting every change up to `seen`.
    usage: Usage,
    /// Every change at or before this revision is counted.
    seen: u64,
    /// What the live reservations of this server add.
    reserved: Usage,
    /// Reservations whose write succeeded at a revision the watch has not
    /// counted yet.
    written: Vec<(u64, Usage)>,
    /// While the watch replays what the pages of the count already saw:
    /// each page's last key (`None`: to the end) and revision.
    pages: Vec<(Option<String>, u64)>,
}

impl State {
    /// Releases the written reservations the count now includes.
    fn release_seen(&mut self) {
        let seen = self.seen;
        let mut released = Usage::default();
        self.written.retain(|(revision, usage)| {
            let counted = *revision <= seen;
            if counted {
                released.add(*usage);
            }
            !counted
        });
        self.reserved.sub(released);
    }

    /// Counts one watch event; `Err` when the event does not say enough
    /// to count it (a backend without the previous value), and the prefix
    /// must be counted again.
    fn apply(&mut self, event: &WatchEvent) -> Result<(), Resync> {
        let revision = event.revision();
        let key = event.key();
        let page_revision = self
            .pages
            .iter()
            .find(|(last, _)| last.as_deref().is_none_or(|last| key <= last))
            .map(|(_, r)| *r);
        // The page holding this key was read after the change: counted.
        let counted = page_revision.is_some_and(|r| revision <= r);
        if !counted {
            match event {
                WatchEvent::Put { kv, prev } => {
                    let size = kv.value.len() as u64;
                    if kv.create_revision == kv.mod_revision {
                        self.usage.add(Usage {
                            count: 1,
                            bytes: size,
                        });
                    } else {
                        let old = prev.as_ref().ok_or(Resync)?.value.len() as u64;
                        self.usage.bytes = self
                            .usage
                            .bytes
                            .saturating_add(size)
                            .checked_sub(old)
                            .ok_or(Resync)?;
                    }
                }
                WatchEvent::Delete { prev, .. } => {
                    let old = prev.as_ref().ok_or(Resync)?.value.len() as u64;
                    self.usage.count = self.usage.count.checked_sub(1).ok_or(Resync)?;
                    self.usage.bytes = self.usage.bytes.checked_sub(old).ok_or(Resync)?;
                }
            }
        }
        self.seen = self.seen.max(revision);
        if self.pages.iter().all(|(_, r)| *r <= self.seen) {
            self.pages.clear();
        }
        Ok(())
    }
}

/// The prefix must be counted again.
#[derive(Debug)]
struct Resync;

/// Why following a prefix stopped.
enum Stop {
    Store(StoreError),
    Resync,
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Store(e)
    }
}

/// What a check added to a tally: held until the write is counted by the
/// watch ([`Reservation::written`]) or dropped (the write did not happen).
#[must_use = "dropping a reservation releases it at once"]
#[derive(Debug)]
pub(crate) struct Reservation {
    shared: Option<Arc<Shared>>,
    usage: Usage,
}

impl Reservation {
    /// A reservation of nothing, for writes that add nothing.
    fn none() -> Reservation {
        Reservation {
            shared: None,
            usage: Usage::default(),
        }
    }

    /// The write succeeded at `revision`: held until the watch counts it.
    pub(crate) fn written(mut self, revision: u64) {
        if let Some(shared) = self.shared.take() {
            let mut state = lock(&shared.state);
            state.written.push((revision, self.usage));
            state.release_seen();
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            lock(&shared.state).reserved.sub(self.usage);
        }
    }
}

impl Tally {
    /// A tally of the keys under `prefix`, refusing growth past the limits
    /// given to [`Tally::reserve`] as `count_quota` and `bytes_quota`.
    pub(crate) fn new(
        store: Arc<dyn Store>,
        prefix: String,
        count_quota: Quota,
        bytes_quota: Option<Quota>,
    ) -> Tally {
        let (ready, _) = watch::channel(false);
        Tally {
            store,
            shared: Arc::new(Shared {
                prefix,
                state: Mutex::new(State::default()),
                ready,
            }),
            count_quota,
            bytes_quota,
            follower: OnceLock::new(),
        }
    }

    /// Reserves `asked` under the limits (`max_bytes` is ignored without a
    /// bytes quota), or says which quota it would exceed. Waits for the
    /// counts to be loaded when they are not yet.
    pub(crate) async fn reserve(
        &self,
        asked: Usage,
        max_count: u64,
        max_bytes: u64,
    ) -> Result<Reservation, ControlError> {
        if asked.is_zero() {
            return Ok(Reservation::none());
        }
        self.ready().await?;
        let mut state = lock(&self.shared.state);
        let mut used = state.usage;
        used.add(state.reserved);
        let exceeded = |quota: Quota, used: u64, asked: u64, limit: u64| {
            (used.saturating_add(asked) > limit).then_some(ControlError::QuotaExceeded {
                quota,
                limit,
                used,
                asked,
            })
        };
        if let Some(e) = exceeded(self.count_quota, used.count, asked.count, max_count) {
            return Err(e);
        }
        if let Some(quota) = self.bytes_quota
            && let Some(e) = exceeded(quota, used.bytes, asked.bytes, max_bytes)
        {
            return Err(e);
        }
        state.reserved.add(asked);
        Ok(Reservation {
            shared: Some(Arc::clone(&self.shared)),
            usage: asked,
        })
    }

    /// What the store holds under the prefix as far as the watch has seen,
    /// once loaded (for tests and diagnostics).
    pub(crate) async fn usage(&self) -> Result<Usage, ControlError> {
        self.ready().await?;
        Ok(lock(&self.shared.state).usage)
    }

    /// Starts counting the prefix and following the store (once), without
    /// waiting for the count. A server calls it when it starts, so that its
    /// first write is not the one that waits for a whole prefix to be
    /// counted (100,000 units from etcd take seconds).
    pub(crate) fn start(&self) {
        self.follower.get_or_init(|| {
            AbortOnDrop(tokio::spawn(follow(
                Arc::clone(&self.store),
                Arc::clone(&self.shared),
            )))
        });
    }

    /// Starts following the store (once), and waits until the counts are
    /// loaded.
    async fn ready(&self) -> Result<(), ControlError> {
        self.start();
        let mut ready = self.shared.ready.subscribe();
        match tokio::time::timeout(READY_WAIT, ready.wait_for(|r| *r)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(ControlError::Unavailable(format!(
                "the counts of {} that quotas are checked against are not loaded yet",
                self.shared.prefix
            ))),
        }
    }
}

/// Ends the follower task when the tally is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Counts the prefix and follows it, again after every interruption,
/// until the store closes.
async fn follow(store: Arc<dyn Store>, shared: Arc<Shared>) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let stop = follow_once(&*store, &shared, &mut backoff).await;
        shared.ready.send_replace(false);
        match stop {
            Stop::Store(StoreError::Closed) => return,
            // History the watch needed is gone, or an event lacked the
            // previous value: count again at once.
            Stop::Store(StoreError::Compacted { .. }) | Stop::Resync => {}
            Stop::Store(e) => {
                tracing::warn!(prefix = %shared.prefix, "quota counts interrupted, counting again: {e}");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

async fn follow_once(store: &dyn Store, shared: &Shared, backoff: &mut Backoff) -> Stop {
    match count_and_follow(store, shared, backoff).await {
        Ok(never) => match never {},
        Err(stop) => stop,
    }
}

async fn count_and_follow(
    store: &dyn Store,
    shared: &Shared,
    backoff: &mut Backoff,
) -> Result<std::convert::Infallible, Stop> {
    let prefix = shared.prefix.as_str();
    let mut usage = Usage::default();
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut options = RangeOptions::default().limit(COUNT_PAGE);
        if let Some(a) = &after {
            options = options.start_after(a.clone());
        }
        let range = store.range(prefix, options).await?;
        for kv in &range.kvs {
            usage.add(Usage {
                count: 1,
                bytes: kv.value.len() as u64,
            });
        }
        let last = range.kvs.last().map(|kv| kv.key.clone());
        let more = range.more && last.is_some();
        pages.push((if more { last.clone() } else { None }, range.revision));
        if !more {
            break;
        }
        after = last;
    }
    // Every change after the first page's revision is in the watch; those
    // a later page already saw are recognised by their key and revision.
    let first = pages.first().map(|(_, r)| *r).unwrap_or(0);
    let mut watcher = store.watch(prefix, first + 1).await?;
    {
        let mut state = lock(&shared.state);
        state.usage = usage;
        state.seen = first;
        state.pages = pages;
        state.release_seen();
    }
    shared.ready.send_replace(true);
    backoff.reset();
    loop {
        let events = watcher.next().await?;
        let mut state = lock(&shared.state);
        for event in &events {
            state.apply(event).map_err(|Resync| Stop::Resync)?;
        }
        state.release_seen();
    }
}

/// Locks the state; a panic while it was held left plain numbers behind,
/// which are as good as before it.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use super::*;
    use flotilla_store::{MemoryStore, Txn, TxnOp};

    const PREFIX: &str = "/t/units/";

    fn tally(store: &Arc<MemoryStore>) -> Tally {
        Tally::new(
            store.clone(),
            PREFIX.to_owned(),
            Quota::Units,
            Some(Quota::UnitBytes),
        )
    }

    async fn put(store: &MemoryStore, key: &str, bytes: usize) -> u64 {
        store
            .txn(Txn::new().and_then([TxnOp::put(format!("{PREFIX}{key}"), vec![b'x'; bytes])]))
            .await
            .unwrap()
            .revision
    }

    /// Waits until the tally shows `want`.
    async fn until_usage(t: &Tally, want: Usage) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while t.usage().await.unwrap() != want {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("usage never became {want:?}"));
    }

    /// A server starts counting when it starts: the counts load with no
    /// write asking for them, so the first write does not wait for them.
    #[tokio::test]
    async fn start_loads_the_counts_without_a_write() {
        let store = Arc::new(MemoryStore::new());
        for i in 0..3 {
            put(&store, &format!("u{i}"), 10).await;
        }
        let t = tally(&store);
        let mut ready = t.shared.ready.subscribe();
        t.start();
        tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|r| *r))
            .await
            .expect("the counts never loaded after start")
            .unwrap();
        assert_eq!(
            lock(&t.shared.state).usage,
            Usage {
                count: 3,
                bytes: 30
            }
        );
    }

    #[tokio::test]
    async fn counts_what_was_there_and_follows_every_change() {
        let store = Arc::new(MemoryStore::new());
        // More keys than a page of the count, and one outside the prefix.
        for i in 0..COUNT_PAGE + 10 {
            put(&store, &format!("u{i:04}"), 10).await;
        }
        store.put("/t/other", b"zzz", None).await.unwrap();
        let t = tally(&store);
        let n = (COUNT_PAGE + 10) as u64;
        until_usage(
            &t,
            Usage {
                count: n,
                bytes: n * 10,
            },
        )
        .await;

        put(&store, "new", 5).await;
        put(&store, "u0000", 25).await;
        store.delete(&format!("{PREFIX}u0001")).await.unwrap();
        until_usage(
            &t,
            Usage {
                count: n,
                bytes: n * 10 + 5 + 15 - 10,
            },
        )
        .await;
    }

    #[tokio::test]
    async fn reservations_hold_until_the_write_is_counted() {
        let store = Arc::new(MemoryStore::new());
        let t = tally(&store);
        let one = Usage {
            count: 1,
            bytes: 10,
        };
        let first = t.reserve(one, 2, 100).await.unwrap();
        let second = t.reserve(one, 2, 100).await.unwrap();
        // Two in flight fill a quota of two: a third is refused.
        let e = t.reserve(one, 2, 100).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "the cluster's quota of 2 units would be exceeded: 2 in use, 1 more asked for"
        );
        // One write fails: its reservation goes.
        drop(second);
        let third = t.reserve(one, 2, 100).await.unwrap();
        drop(third);
        // One write succeeds: held until counted, then counted instead.
        let revision = put(&store, "a", 10).await;
        first.written(revision);
        until_usage(
            &t,
            Usage {
                count: 1,
                bytes: 10,
            },
        )
        .await;
        assert_eq!(lock(&t.shared.state).reserved, Usage::default());
        let e = t
            .reserve(
                Usage {
                    count: 1,
                    bytes: 91,
                },
                2,
                100,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                ControlError::QuotaExceeded {
                    quota: Quota::UnitBytes,
                    limit: 100,
                    used: 10,
                    asked: 91
                }
            ),
            "{e}"
        );
    }

    #[tokio::test]
    async fn writes_racing_the_count_are_counted_once() {
        let store = Arc::new(MemoryStore::new());
        for i in 0..3 * COUNT_PAGE {
            put(&store, &format!("k{i:04}"), 1).await;
        }
        let t = Arc::new(tally(&store));
        // Writes and deletes all over the key range while the count pages
        // through it.
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..3 * COUNT_PAGE {
                    if i % 2 == 0 {
                        store.delete(&format!("{PREFIX}k{i:04}")).await.unwrap();
                    } else {
                        put(&store, &format!("k{i:04}"), 3).await;
                    }
                    put(&store, &format!("n{i:04}"), 2).await;
                    tokio::task::yield_now().await;
                }
            })
        };
        let counted = {
            let t = t.clone();
            tokio::spawn(async move { t.usage().await.unwrap() })
        };
        writer.await.unwrap();
        counted.await.unwrap();
        let n = 3 * COUNT_PAGE as u64;
        // Half the k keys left (3 bytes each), and every n key (2 bytes).
        until_usage(
            &t,
            Usage {
                count: n / 2 + n,
                bytes: 3 * (n / 2) + 2 * n,
            },
        )
        .await;
    }
}
