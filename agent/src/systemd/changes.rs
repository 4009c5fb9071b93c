//! A feed of changed unit names that never blocks its producer and never
//! grows past the number of units: names are coalesced until the consumer
//! takes them. The D-Bus listener pushes into it from a task that must
//! keep draining the bus (a stalled D-Bus stream stalls the connection).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// The feed closed: its producer is gone (the connection to systemd was
/// lost).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the feed of systemd changes closed: the connection to systemd was lost")]
pub struct Closed;

#[derive(Debug, Default)]
struct State {
    names: BTreeSet<String>,
    closed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    notify: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves a set of names, which is
        // still valid: take it over.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The producing side: the systemd listener.
#[derive(Debug, Clone)]
pub struct ChangeSink {
    shared: Arc<Shared>,
}

/// The consuming side: the state reporter. Dropping it lets the producer
/// see [`ChangeSink::is_abandoned`].
#[derive(Debug)]
pub struct ChangeFeed {
    shared: Arc<Shared>,
}

/// A connected pair.
pub fn change_feed() -> (ChangeSink, ChangeFeed) {
    let shared = Arc::new(Shared::default());
    (
        ChangeSink {
            shared: shared.clone(),
        },
        ChangeFeed { shared },
    )
}

impl ChangeSink {
    /// Records that `unit` changed.
    pub fn push(&self, unit: &str) {
        let mut state = self.shared.lock();
        if !state.names.contains(unit) {
            state.names.insert(unit.to_owned());
        }
        drop(state);
        self.shared.notify.notify_one();
    }

    /// Closes the feed: the consumer gets [`Closed`] once it has taken the
    /// names still queued.
    pub fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.notify.notify_one();
    }

    /// Whether the consumer dropped its feed.
    pub fn is_abandoned(&self) -> bool {
        Arc::strong_count(&self.shared) == 1
    }
}

impl ChangeFeed {
    /// Waits until some units changed and returns their names, each once.
    pub async fn changed(&mut self) -> Result<BTreeSet<String>, Closed> {
        loop {
            // Registered before looking, so a push in between still wakes
            // this wait (`notify_one` stores a permit otherwise).
            let notified = self.shared.notify.notified();
            {
                let mut state = self.shared.lock();
                if !state.names.is_empty() {
                    return Ok(std::mem::take(&mut state.names));
                }
                if state.closed {
                    return Err(Closed);
                }
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn coalesces_and_closes() {
        let (sink, mut feed) = change_feed();
        sink.push("a.service");
        sink.push("b.service");
        sink.push("a.service");
        let names = feed.changed().await.unwrap();
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["a.service", "b.service"]
        );
        let waiter = tokio::spawn(async move {
            let got = feed.changed().await;
            (got, feed)
        });
        sink.push("c.service");
        let (got, mut feed) = waiter.await.unwrap();
        assert_eq!(got.unwrap().len(), 1);
        sink.push("d.service");
        sink.close();
        assert!(feed.changed().await.unwrap().contains("d.service"));
        assert_eq!(feed.changed().await, Err(Closed));
        assert!(!sink.is_abandoned());
        drop(feed);
        assert!(sink.is_abandoned());
    }
}
