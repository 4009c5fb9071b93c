//! Reading the log: pages in time order, and following what is written
//! after a store revision.
//!
//! An event's id, and a page token, are `<chunk key>/<n>`: the chunk's key
//! without the prefix and the event's place in it. A token says where the
//! next page starts.

use std::time::Duration;

use flotilla_proto::event::{Event, EventPage};

use super::{ChunkKey, DEFAULT_EVENT_PAGE, EventError, EventFilter, EventLog, MAX_EVENT_PAGE};
use crate::records;
use crate::trust::now_ms;
use flotilla_store::{KeyValue, RangeOptions, StoreError, WatchEvent};

/// Most events one read looks at, matching or not.
pub const SCAN_BUDGET: usize = 20_000;

/// How far back the log is read again for a follower whose revision the
/// store's watch history no longer reaches: longer than a long poll waits
/// (60 s at most), so that whatever was written after its last answer is
/// in it.
pub const CATCH_UP_SLACK: Duration = Duration::from_secs(120);

/// Chunks read from the store at a time.
const CHUNKS_PER_READ: usize = 16;

/// Where a page starts: a chunk, and how many of its events to skip.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Position {
    chunk: String,
    skip: usize,
}

impl Position {
    /// A token as [`EventLog::list`] gives them; `None` for anything else
    /// (a number with leading zeros included), so that nothing but a
    /// chunk key reaches the store.
    fn parse(token: &str) -> Option<Position> {
        let (chunk, skip_text) = token.split_once('/')?;
        let key = ChunkKey::parse(chunk)?;
        let skip: usize = skip_text.parse().ok()?;
        (skip <= key.count && skip.to_string() == skip_text).then(|| Position {
            chunk: chunk.to_owned(),
            skip,
        })
    }
}

/// The events of a chunk, each with its id. A chunk that does not decode
/// (corrupt data, or a bug) is skipped with an error in the log, rather
/// than fail every listing that passes it.
fn events_of(suffix: &str, kv: &KeyValue) -> Vec<Event> {
    match records::decode::<Vec<Event>>(&kv.key, &kv.value) {
        Ok(mut events) => {
            for (i, e) in events.iter_mut().enumerate() {
                e.id = format!("{suffix}/{i}");
            }
            events
        }
        Err(e) => {
            tracing::error!("skipping a chunk of events: {e}");
            Vec::new()
        }
    }
}

impl EventLog {
    /// Events that pass `filter`, oldest first, from `token` (a previous
    /// page's `nextPageToken`) or else from `filter.since_ms` (or the
    /// oldest kept); at most `limit` ([`MAX_EVENT_PAGE`]) of them, having
    /// looked at no more than [`SCAN_BUDGET`]. A page that stops early
    /// carries a `nextPageToken`; its `index` is the store revision of its
    /// first read, to follow from.
    pub async fn list(
        &self,
        filter: &EventFilter,
        token: Option<&str>,
        limit: Option<usize>,
    ) -> Result<EventPage, EventError> {
        let inner = &self.inner;
        let prefix = inner.keys.events();
        let limit = limit.unwrap_or(DEFAULT_EVENT_PAGE).clamp(1, MAX_EVENT_PAGE);
        let mut page = EventPage::default();
        let mut revision = None;
        let mut scanned = 0;
        // The token's chunk, read on its own (it may be gone, trimmed),
        // then the chunks after it.
        let mut first: Option<(KeyValue, usize)> = None;
        let mut after = match token {
            Some(t) => {
                let pos = Position::parse(t).ok_or(EventError::BadToken)?;
                let key = format!("{prefix}{}", pos.chunk);
                let got = inner.store.get(&key).await?;
                revision = Some(got.revision);
                first = got.kv.map(|kv| (kv, pos.skip));
                Some(key)
            }
            None => filter.since_ms.map(|ms| format!("{prefix}{ms:016}")),
        };
        loop {
            let mut options = RangeOptions::default().limit(CHUNKS_PER_READ);
            if let Some(a) = &after {
                options = options.start_after(a.clone());
            }
            let (kvs, more) = match first.take() {
                Some((kv, skip)) => (vec![(kv, skip)], true),
                None => {
                    let range = inner.store.range(&prefix, options).await?;
                    revision.get_or_insert(range.revision);
                    (
                        range.kvs.into_iter().map(|kv| (kv, 0)).collect(),
                        range.more,
                    )
                }
            };
            let read = kvs.len();
            for (n, (kv, skip)) in kvs.into_iter().enumerate() {
                after = Some(kv.key.clone());
                let Some(suffix) = kv.key.strip_prefix(&prefix) else {
                    continue;
                };
                let events = events_of(suffix, &kv);
                let count = events.len();
                for (i, e) in events.into_iter().enumerate().skip(skip) {
                    scanned += 1;
                    if filter.matches(&e) {
                        page.events.push(e);
                    }
                    let left_here = i + 1 < count || n + 1 < read || more;
                    if (page.events.len() >= limit || scanned >= SCAN_BUDGET) && left_here {
                        page.next_page_token = Some(format!("{suffix}/{}", i + 1));
                        page.index = crate::cluster::to_wire_revision(revision.unwrap_or(0));
                        return Ok(page);
                    }
                }
            }
            if !more || read == 0 {
                break;
            }
        }
        page.index = crate::cluster::to_wire_revision(revision.unwrap_or(0));
        Ok(page)
    }

    /// Events that pass `filter` and were written after store revision
    /// `index`, oldest first; waits up to `wait` for the first. The answer
    /// ends at a revision (so it may hold a few more than `limit`, the
    /// rest of that revision's chunks), whose number is its `index`.
    ///
    /// When the store's watch history no longer reaches `index`, the
    /// chunks of the last [`CATCH_UP_SLACK`] written after `index` are
    /// read instead: a follower that asks again within a minute of its
    /// last answer misses nothing.
    pub async fn follow(
        &self,
        filter: &EventFilter,
        index: u64,
        wait: Duration,
        limit: Option<usize>,
    ) -> Result<EventPage, EventError> {
        let inner = &self.inner;
        let prefix = inner.keys.events();
        let limit = limit.unwrap_or(DEFAULT_EVENT_PAGE).clamp(1, MAX_EVENT_PAGE);
        let mut watch = match inner.store.watch(&prefix, index + 1).await {
            Ok(w) => w,
            Err(StoreError::Compacted { .. }) => return self.catch_up(filter, index).await,
            Err(e) => return Err(e.into()),
        };
        let deadline = tokio::time::Instant::now() + wait;
        let mut page = EventPage {
            index: crate::cluster::to_wire_revision(index),
            ..EventPage::default()
        };
        loop {
            let batch = match tokio::time::timeout_at(deadline, watch.next()).await {
                Err(_) => return Ok(page),
                Ok(Err(StoreError::Compacted { .. })) => return self.catch_up(filter, index).await,
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok(batch)) => batch,
            };
            for event in batch {
                let revision = event.revision();
                let last = crate::cluster::to_wire_revision(revision);
                if page.events.len() >= limit && last != page.index {
                    // Full, at a revision's end: the rest comes next time.
                    return Ok(page);
                }
                if let WatchEvent::Put { kv, .. } = &event
                    && let Some(suffix) = kv.key.strip_prefix(&prefix)
                {
                    page.events.extend(
                        events_of(suffix, kv)
                            .into_iter()
                            .filter(|e| filter.matches(e)),
                    );
                }
                page.index = last;
            }
            if !page.events.is_empty() {
                return Ok(page);
            }
        }
    }

    /// Chunks written after `index`, read by key from [`CATCH_UP_SLACK`]
    /// ago; the answer's index is the read's revision.
    async fn catch_up(&self, filter: &EventFilter, index: u64) -> Result<EventPage, EventError> {
        let inner = &self.inner;
        let prefix = inner.keys.events();
        let slack = u64::try_from(CATCH_UP_SLACK.as_millis()).unwrap_or(u64::MAX);
        let from = now_ms().saturating_sub(slack);
        let mut after = Some(format!("{prefix}{from:016}"));
        let mut page = EventPage::default();
        let mut revision = None;
        let mut scanned = 0;
        loop {
            let mut options = RangeOptions::default().limit(CHUNKS_PER_READ);
            if let Some(a) = after.take() {
                options = options.start_after(a);
            }
            let range = inner.store.range(&prefix, options).await?;
            revision.get_or_insert(range.revision);
            for kv in &range.kvs {
                if kv.mod_revision <= index {
                    continue;
                }
                let Some(suffix) = kv.key.strip_prefix(&prefix) else {
                    continue;
                };
                let events = events_of(suffix, kv);
                scanned += events.len();
                page.events
                    .extend(events.into_iter().filter(|e| filter.matches(e)));
            }
            after = range.kvs.last().map(|kv| kv.key.clone());
            if !range.more {
                break;
            }
            if scanned >= SCAN_BUDGET {
                tracing::warn!(
                    "a follower of the events fell behind the store's history by more than {SCAN_BUDGET} events: some are not sent"
                );
                break;
            }
        }
        page.index = crate::cluster::to_wire_revision(revision.unwrap_or(index));
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_only_as_given() {
        let good = "0001700000000000-0000000001-ab12cd34-128/5";
        assert_eq!(
            Position::parse(good),
            Some(Position {
                chunk: "0001700000000000-0000000001-ab12cd34-128".into(),
                skip: 5
            })
        );
        for bad in [
            "",
            "x",
            "0001700000000000-0000000001-ab12cd34-128",
            "0001700000000000-0000000001-ab12cd34-128/129",
            "0001700000000000-0000000001-ab12cd34-128/05",
            "0001700000000000-0000000001-ab12cd34-128/-1",
            "0001700000000000-0000000001-ab12cd34-000/0",
            "0001700000000000-0000000001-ab12cd34-129/0",
            "000170000000000-0000000001-ab12cd34-128/0",
            "0001700000000000-0000000001-zz-128/0",
            "0001700000000000-0000000001-ab12cd34-128-1/0",
            "../../units/x/0",
        ] {
            assert_eq!(Position::parse(bad), None, "{bad}");
        }
    }
}
