//! A watch on etcd behind a [`Watcher`](super::super::Watcher): one etcd
//! watch stream (with `prev_kv`, unless asked without), resumed from the
//! next revision when it breaks.
//!
//! etcd keeps the history, so resuming is exact: a new watch from the
//! revision after the last one delivered repeats nothing and misses nothing.
//! A broken stream (a lost connection, a restarted or re-elected etcd) is
//! resumed with backoff for up to
//! [`EtcdConfig::watch_resume_timeout`](super::EtcdConfig::watch_resume_timeout);
//! past it, the watch ends with [`StoreError::Unavailable`] and the caller
//! watches again from
//! [`Watcher::next_revision`](super::super::Watcher::next_revision). A
//! compacted start ends it with [`StoreError::Compacted`], which etcd reports
//! on the stream.

use std::time::Duration;

use etcd_client::{WatchClient, WatchOptions, WatchStream};
use tokio::time::Instant;

use super::super::watch::WatchSource;
use super::super::{BoxFuture, StoreError, StoreResult, WatchEvent};
use super::convert::{Failure, generic, header_revision, timed_out, to_i64, to_u64, watch_event};

/// Exponential backoff with a cap: 50 ms, 100 ms, ... up to 2 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(2);

    pub(super) fn new() -> Self {
        Backoff { next: Self::FIRST }
    }

    /// The wait before the next attempt; each is twice the last, up to the cap.
    pub(super) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }
}

/// Where and how to (re)open the watch.
#[derive(Clone)]
pub(super) struct Target {
    /// The etcd watch client (with the store's message size limit).
    pub(super) client: WatchClient,
    /// The key range watched, `[key, range_end)`.
    pub(super) key: Vec<u8>,
    pub(super) range_end: Vec<u8>,
    /// Whether events carry the previous value (`prev_kv`).
    pub(super) prev: bool,
    /// A bound on opening one watch stream.
    pub(super) request_timeout: Duration,
    /// How long a broken watch tries to resume.
    pub(super) resume_timeout: Duration,
}

impl Target {
    /// Opens a watch stream from `from_revision` (0: the next revision) and
    /// waits for etcd to confirm it. Returns the stream and the store
    /// revision when the watch was created.
    pub(super) async fn open(&self, from_revision: u64) -> StoreResult<(WatchStream, u64)> {
        let open = async {
            let mut client = self.client.clone();
            let mut options = WatchOptions::new()
                .with_range(self.range_end.clone())
                .with_start_revision(to_i64(from_revision));
            if self.prev {
                options = options.with_prev_key();
            }
            let mut stream = client
                .watch(self.key.clone(), Some(options))
                .await
                .map_err(|e| generic("watch", Failure::of(&e)))?;
            // The first answer on a new stream confirms the watch.
            loop {
                let Some(response) = stream
                    .message()
                    .await
                    .map_err(|e| generic("watch", Failure::of(&e)))?
                else {
                    return Err(StoreError::Unavailable {
                        reason: "etcd closed a new watch stream".to_owned(),
                    });
                };
                if !response.created() {
                    continue;
                }
                if response.canceled() {
                    return Err(StoreError::Unavailable {
                        reason: format!("etcd refused the watch: {}", response.cancel_reason()),
                    });
                }
                let revision = header_revision(response.header())?;
                return Ok((stream, revision));
            }
        };
        match tokio::time::timeout(self.request_timeout, open).await {
            Ok(result) => result,
            Err(_) => Err(timed_out("watch", self.request_timeout)),
        }
    }
}

/// The [`WatchSource`] of an etcd watch.
pub(super) struct EtcdWatch {
    target: Target,
    /// The first revision not delivered yet.
    next_revision: u64,
    /// The open stream; `None` after it broke, until it is resumed.
    stream: Option<WatchStream>,
    /// The error that ended the watch.
    ended: Option<StoreError>,
}

impl EtcdWatch {
    /// A watch whose stream is open and delivers from `next_revision` on.
    pub(super) fn new(target: Target, stream: WatchStream, next_revision: u64) -> Self {
        EtcdWatch {
            target,
            next_revision,
            stream: Some(stream),
            ended: None,
        }
    }

    async fn next(&mut self) -> StoreResult<Vec<WatchEvent>> {
        if let Some(error) = &self.ended {
            return Err(error.clone());
        }
        match self.receive().await {
            Ok(events) => Ok(events),
            Err(error) => {
                self.stream = None;
                self.ended = Some(error.clone());
                Err(error)
            }
        }
    }

    /// The next non-empty batch, resuming a broken stream on the way.
    async fn receive(&mut self) -> StoreResult<Vec<WatchEvent>> {
        loop {
            if self.stream.is_none() {
                self.stream = Some(self.resume().await?);
            }
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => {
                    tracing::warn!(
                        next_revision = self.next_revision,
                        "etcd closed a watch stream; resuming"
                    );
                    self.stream = None;
                    continue;
                }
                Err(error) => {
                    tracing::warn!(
                        next_revision = self.next_revision,
                        %error,
                        "etcd watch stream broke; resuming"
                    );
                    self.stream = None;
                    continue;
                }
            };
            if response.compact_revision() != 0 {
                return Err(StoreError::Compacted {
                    requested: self.next_revision,
                    compact_revision: to_u64(response.compact_revision(), "compact revision")?,
                });
            }
            if response.canceled() {
                // etcd cancels a watch it created only for a compacted start
                // (above); anything else is unexpected: end the watch, and
                // let the caller watch again.
                return Err(StoreError::Unavailable {
                    reason: format!("etcd canceled the watch: {}", response.cancel_reason()),
                });
            }
            if response.events().is_empty() {
                // A confirmation or a progress notice.
                continue;
            }
            let events = response
                .events()
                .iter()
                .map(watch_event)
                .collect::<StoreResult<Vec<_>>>()?;
            if let Some(last) = events.last() {
                self.next_revision = last.revision() + 1;
            }
            return Ok(events);
        }
    }

    /// Opens a new stream from the next revision, retrying with backoff until
    /// the resume timeout has passed.
    async fn resume(&self) -> StoreResult<WatchStream> {
        let deadline = Instant::now() + self.target.resume_timeout;
        let mut backoff = Backoff::new();
        loop {
            match self.target.open(self.next_revision).await {
                Ok((stream, _)) => {
                    tracing::info!(next_revision = self.next_revision, "etcd watch resumed");
                    return Ok(stream);
                }
                Err(error) if error.is_temporary() => {
                    let delay = backoff.next_delay();
                    if Instant::now() + delay >= deadline {
                        return Err(StoreError::Unavailable {
                            reason: format!(
                                "etcd watch could not resume from revision {} within {:?}: {error}",
                                self.next_revision, self.target.resume_timeout
                            ),
                        });
                    }
                    tokio::time::sleep(delay).await;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

impl WatchSource for EtcdWatch {
    fn next_batch(&mut self) -> BoxFuture<'_, StoreResult<Vec<WatchEvent>>> {
        Box::pin(self.next())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let mut backoff = Backoff::new();
        let delays: Vec<u128> = (0..8).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [50, 100, 200, 400, 800, 1600, 2000, 2000]);
    }
}
