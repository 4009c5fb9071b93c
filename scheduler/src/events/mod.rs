//! [`EventLog`]: the cluster's history (`flotilla events`), kept in the
//! store with bounded retention.
//!
//! Who records what:
//!
//! - the leader's reconcile loop: units placed, moved (with the reason),
//!   unplaced, unschedulable (when the reason changes: it compares with
//!   the scheduling record its write replaced), machines joined and lost,
//!   and the leader itself when it takes over;
//! - every server, from its agents' state reports: units started, stopped
//!   and failed, on a transition from the state the report replaced;
//! - every server's API: units created, changed and destroyed, machines
//!   removed, with the name of the caller's credential.
//!
//! Recording never blocks nor fails what it describes: [`EventLog::record`]
//! puts the events in a bounded queue in memory and returns; a task drains
//! the queue and writes it. A write that fails is retried a few times, then
//! dropped with an error in the log; a queue that is full drops new events
//! (counted, and logged).
//!
//! Events are stored in chunks: one key
//! (`events/<ms>-<seq>-<server>-<count>`) holds up to [`EVENTS_PER_CHUNK`]
//! events and at most [`MAX_CHUNK_BYTES`], and one transaction puts as
//! many chunks as fit in [`MAX_TXN_BYTES`] and the store's operation limit.
//! So the events of a pass that places 10,000 units cost about 80 keys in
//! two transactions, beside the 160 transactions of the placements
//! themselves, instead of 10,000 keys. Keys sort by time, then by the
//! writing server's sequence; an event's id is its chunk's key (without
//! the prefix) and its place in the chunk.
//!
//! Reading: [`EventLog::list`] reads chunks in key order from a time or a
//! page token, filtered by unit and machine, and scans at most
//! [`SCAN_BUDGET`] events per call (a filter that matches little returns a
//! short page with a token, rather than read the whole log).
//! [`EventLog::follow`] waits on the store's watch for chunks written after
//! a store revision. [`EventLog::trim`] drops the oldest chunks beyond the
//! [`EventRetention`].

mod read;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_proto::MachineId;
use flotilla_proto::UnitName;
use flotilla_proto::backoff::Backoff;
use flotilla_proto::event::Event;
use tokio::sync::Notify;

use crate::keys::Keys;
use crate::trust::now_ms;
use flotilla_store::{RangeOptions, Store, StoreError, Txn, TxnOp, lock};

pub use read::{CATCH_UP_SLACK, SCAN_BUDGET};

/// How much of the log is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRetention {
    /// At most this many events (the oldest chunks go first).
    pub max_events: usize,
    /// Events younger than this.
    pub max_age: Duration,
}

impl Default for EventRetention {
    fn default() -> Self {
        EventRetention {
            max_events: 100_000,
            max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Most events in one stored chunk.
pub const EVENTS_PER_CHUNK: usize = 128;

/// Most bytes of one stored chunk (JSON); an event is at most about 1.5
/// KiB, so a chunk of big events holds fewer.
pub const MAX_CHUNK_BYTES: usize = 64 * 1024;

/// Most bytes of chunks put in one transaction (etcd refuses requests over
/// 1.5 MiB by default).
pub const MAX_TXN_BYTES: usize = 1024 * 1024;

/// Most events waiting to be written; past it, new events are dropped.
pub const QUEUE_CAPACITY: usize = 50_000;

/// Most events one write takes from the queue.
const EVENTS_PER_WRITE: usize = 64 * EVENTS_PER_CHUNK;

/// Attempts at writing one transaction of chunks before it is dropped.
const WRITE_ATTEMPTS: usize = 4;

/// The most events in one page of `GET /v1/events`.
pub const MAX_EVENT_PAGE: usize = 1000;

/// Events in a page when the request names no limit.
pub const DEFAULT_EVENT_PAGE: usize = 100;

/// Which events a reader wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Events at or after this time (milliseconds since the Unix epoch).
    pub since_ms: Option<u64>,
    /// Events about this unit.
    pub unit: Option<UnitName>,
    /// Events about machines whose id starts with this (a whole id, or the
    /// short one `list-machines` shows): as the machine, or the one a unit
    /// left.
    pub machine: Option<String>,
}

impl EventFilter {
    /// Whether `event` passes the filter.
    pub fn matches(&self, event: &Event) -> bool {
        if self.since_ms.is_some_and(|since| event.at_ms < since) {
            return false;
        }
        if let Some(unit) = &self.unit
            && event.unit.as_ref() != Some(unit)
        {
            return false;
        }
        if let Some(prefix) = &self.machine {
            let on = |m: &Option<MachineId>| {
                m.as_ref()
                    .is_some_and(|m| m.as_str().starts_with(prefix.as_str()))
            };
            if !on(&event.machine) && !on(&event.from_machine) {
                return false;
            }
        }
        true
    }
}

/// Why the log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// A page token this log did not give.
    #[error("nextPageToken is not a token this listing gave; start again without it")]
    BadToken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The event log over a store. Cheap to clone: clones share the queue and
/// the writer, so that a server's events keep their order.
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    keys: Keys,
    retention: EventRetention,
    /// This log's part of every chunk key, so that servers writing in the
    /// same millisecond do not collide.
    tag: String,
    queue: Mutex<Queue>,
    /// Woken when the writer finds the queue empty.
    idle: Notify,
}

#[derive(Debug, Default)]
struct Queue {
    events: VecDeque<Event>,
    /// Whether a writer task is running.
    writing: bool,
    /// Events dropped since the writer last said so.
    dropped: u64,
    /// The time and sequence of the last chunk key.
    last_ms: u64,
    seq: u64,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("retention", &self.inner.retention)
            .field("tag", &self.inner.tag)
            .finish_non_exhaustive()
    }
}

impl EventLog {
    pub fn new(store: Arc<dyn Store>, keys: Keys, retention: EventRetention) -> EventLog {
        let tag = match crate::trust::token::random_bytes(4) {
            Ok(bytes) => crate::trust::token::hex(&bytes),
            // Without randomness, the process id still tells servers apart
            // on one machine, and the time on several.
            Err(_) => format!("{:08x}", std::process::id()),
        };
        EventLog {
            inner: Arc::new(Inner {
                store,
                keys,
                retention,
                tag,
                queue: Mutex::new(Queue::default()),
                idle: Notify::new(),
            }),
        }
    }

    pub fn retention(&self) -> EventRetention {
        self.inner.retention
    }

    /// Records one event; see [`EventLog::record_all`].
    pub fn record(&self, event: Event) {
        self.record_all(vec![event]);
    }

    /// Queues events to be written, in order, and returns at once: never
    /// waits for the store, never fails. Each event is cut to its bounds
    /// ([`Event::bound`]). Must be called inside a tokio runtime (the
    /// writer is a task); outside one the events are dropped.
    pub fn record_all(&self, mut events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        for e in &mut events {
            e.bound();
            e.id.clear();
        }
        let start = {
            let mut q = lock(&self.inner.queue);
            let room = QUEUE_CAPACITY.saturating_sub(q.events.len());
            if events.len() > room {
                q.dropped += (events.len() - room) as u64;
                events.truncate(room);
            }
            q.events.extend(events);
            let start = !q.writing && !q.events.is_empty();
            if start {
                q.writing = true;
            }
            start
        };
        if start {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(write_queue(Arc::clone(&self.inner)));
                }
                Err(_) => {
                    let mut q = lock(&self.inner.queue);
                    q.writing = false;
                    q.dropped += q.events.len() as u64;
                    q.events.clear();
                    tracing::error!("events recorded outside a runtime are dropped");
                }
            }
        }
    }

    /// Waits until every event recorded so far is written (or dropped).
    pub async fn flush(&self) {
        loop {
            let idle = self.inner.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            {
                let q = lock(&self.inner.queue);
                if !q.writing && q.events.is_empty() {
                    return;
                }
            }
            idle.await;
        }
    }

    /// Drops the chunks past the retention: those older than `max_age`,
    /// and the oldest while more than `max_events` events are kept.
    /// Returns how many events were dropped.
    pub async fn trim(&self) -> Result<usize, StoreError> {
        let inner = &self.inner;
        let prefix = inner.keys.events();
        let cutoff = now_ms()
            .saturating_sub(u64::try_from(inner.retention.max_age.as_millis()).unwrap_or(u64::MAX));
        // Every chunk's key, its time and count come from the key; chunks
        // are few (a hundred thousand events are under a thousand keys).
        let mut chunks: Vec<(String, u64, usize)> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut options = RangeOptions::default().limit(100);
            if let Some(a) = after.take() {
                options = options.start_after(a);
            }
            let page = inner.store.range(&prefix, options).await?;
            for kv in &page.kvs {
                match kv.key.strip_prefix(&prefix).and_then(ChunkKey::parse) {
                    Some(c) => chunks.push((kv.key.clone(), c.ms, c.count)),
                    // Not a chunk this log writes: nothing to count it by.
                    None => chunks.push((kv.key.clone(), 0, 0)),
                }
            }
            after = page.kvs.last().map(|kv| kv.key.clone());
            if !page.more {
                break;
            }
        }
        let mut kept: usize = chunks.iter().map(|(_, _, n)| n).sum();
        let mut drop = Vec::new();
        let mut dropped_events = 0;
        for (key, ms, count) in chunks {
            if ms >= cutoff && kept <= inner.retention.max_events {
                break;
            }
            kept -= count;
            dropped_events += count;
            drop.push(key);
        }
        let max_ops = inner.store.limits().max_txn_ops.max(1);
        for chunk in drop.chunks(max_ops) {
            inner
                .store
                .txn(Txn::new().and_then(chunk.iter().map(TxnOp::delete)))
                .await?;
        }
        Ok(dropped_events)
    }
}

/// A chunk's key, without the prefix: `<ms>-<seq>-<tag>-<count>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChunkKey {
    pub ms: u64,
    pub count: usize,
}

impl ChunkKey {
    fn format(ms: u64, seq: u64, tag: &str, count: usize) -> String {
        format!("{ms:016}-{seq:010}-{tag}-{count:03}")
    }

    /// Parses a chunk key; `None` for anything this log does not write.
    pub(crate) fn parse(suffix: &str) -> Option<ChunkKey> {
        let mut parts = suffix.split('-');
        let (ms, seq, tag, count) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
        let tag_ok =
            !tag.is_empty() && tag.len() <= 16 && tag.bytes().all(|b| b.is_ascii_hexdigit());
        if parts.next().is_some()
            || !digits(ms, 16)
            || !digits(seq, 10)
            || !tag_ok
            || !digits(count, 3)
        {
            return None;
        }
        let count: usize = count.parse().ok()?;
        if count == 0 || count > EVENTS_PER_CHUNK {
            return None;
        }
        Some(ChunkKey {
            ms: ms.parse().ok()?,
            count,
        })
    }
}

/// The writer: drains the queue until it is empty.
async fn write_queue(inner: Arc<Inner>) {
    loop {
        let (batch, dropped) = {
            let mut q = lock(&inner.queue);
            if q.events.is_empty() {
                q.writing = false;
                drop(q);
                inner.idle.notify_waiters();
                return;
            }
            let n = q.events.len().min(EVENTS_PER_WRITE);
            let batch: Vec<Event> = q.events.drain(..n).collect();
            (batch, std::mem::take(&mut q.dropped))
        };
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "events were dropped: more were recorded than the store took ({QUEUE_CAPACITY} may wait)"
            );
        }
        write_batch(&inner, batch).await;
    }
}

/// Writes events as chunks, in as few transactions as the limits allow.
async fn write_batch(inner: &Inner, events: Vec<Event>) {
    let prefix = inner.keys.events();
    let chunks = chunk(events);
    let max_ops = inner.store.limits().max_txn_ops.max(1);
    let max_bytes = MAX_TXN_BYTES.min(inner.store.limits().max_value_size.max(1) * max_ops);
    let mut txn_ops: Vec<TxnOp> = Vec::new();
    let mut txn_bytes = 0;
    let mut txn_events = 0;
    for (value, count) in chunks {
        if !txn_ops.is_empty() && (txn_ops.len() >= max_ops || txn_bytes + value.len() > max_bytes)
        {
            put_chunks(inner, std::mem::take(&mut txn_ops), txn_events).await;
            txn_bytes = 0;
            txn_events = 0;
        }
        let key = {
            let mut q = lock(&inner.queue);
            q.last_ms = q.last_ms.max(now_ms());
            q.seq += 1;
            format!(
                "{prefix}{}",
                ChunkKey::format(q.last_ms, q.seq, &inner.tag, count)
            )
        };
        txn_bytes += value.len();
        txn_events += count;
        txn_ops.push(TxnOp::put(key, value));
    }
    if !txn_ops.is_empty() {
        put_chunks(inner, txn_ops, txn_events).await;
    }
}

/// Splits events into encoded chunks of at most [`EVENTS_PER_CHUNK`] events
/// and [`MAX_CHUNK_BYTES`] bytes; returns each chunk's JSON and count.
fn chunk(events: Vec<Event>) -> Vec<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut current: Vec<Vec<u8>> = Vec::new();
    let mut bytes = 2;
    let finish = |current: &mut Vec<Vec<u8>>, out: &mut Vec<(Vec<u8>, usize)>| {
        let count = current.len();
        let mut value = Vec::with_capacity(MAX_CHUNK_BYTES);
        value.push(b'[');
        for (i, e) in current.drain(..).enumerate() {
            if i > 0 {
                value.push(b',');
            }
            value.extend_from_slice(&e);
        }
        value.push(b']');
        out.push((value, count));
    };
    for event in events {
        // Serialising an event cannot fail: plain strings and numbers.
        let encoded = serde_json::to_vec(&event).unwrap_or_default();
        if !current.is_empty()
            && (current.len() >= EVENTS_PER_CHUNK || bytes + encoded.len() + 1 > MAX_CHUNK_BYTES)
        {
            finish(&mut current, &mut out);
            bytes = 2;
        }
        bytes += encoded.len() + 1;
        current.push(encoded);
    }
    if !current.is_empty() {
        finish(&mut current, &mut out);
    }
    out
}

/// Puts chunks in one transaction, retrying temporary errors a few times;
/// drops them (with an error in the log) when the store will not take them.
async fn put_chunks(inner: &Inner, ops: Vec<TxnOp>, events: usize) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    for attempt in 1..=WRITE_ATTEMPTS {
        match inner.store.txn(Txn::new().and_then(ops.clone())).await {
            Ok(_) => return,
            Err(e) if e.is_temporary() && attempt < WRITE_ATTEMPTS => {
                tracing::debug!("writing events failed, trying again: {e}");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => {
                tracing::error!(
                    events,
                    "cannot write events to the store, dropping them: {e}"
                );
                return;
            }
        }
    }
}
