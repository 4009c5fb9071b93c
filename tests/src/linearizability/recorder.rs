//! Recording a history from the threads of a test.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::{Budget, Event, Op, Outcome, Verdict};

/// A history being recorded: clone it into each client thread, wrap each
/// call to the store in [`Recorder::call`] and [`Pending::finish`].
/// Times are nanoseconds since the recorder was made, on the monotonic
/// clock.
#[derive(Debug, Clone)]
pub struct Recorder {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    start: Instant,
    events: Mutex<Vec<Event>>,
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            inner: Arc::new(Inner {
                start: Instant::now(),
                events: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Nanoseconds since the recorder was made.
    fn now(&self) -> u64 {
        // u64 nanoseconds last 584 years.
        u64::try_from(self.inner.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn events(&self) -> MutexGuard<'_, Vec<Event>> {
        // A client thread that panicked while pushing leaves a whole Vec:
        // the history is still good.
        self.inner
            .events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks the call of `op` by `client` on `key`, now. Call right before
    /// sending the request.
    pub fn call(&self, client: u64, key: impl Into<String>, op: Op) -> Pending {
        let call = self.now();
        Pending {
            recorder: self.clone(),
            event: Some(Event {
                client,
                key: key.into(),
                op,
                call,
                ret: None,
                outcome: Outcome::Unknown,
            }),
        }
    }

    /// The events recorded so far (finished or dropped), in the order they
    /// ended.
    pub fn history(&self) -> Vec<Event> {
        self.events().clone()
    }

    /// How many writes (and successful compare-and-swaps) were
    /// acknowledged so far: a fault test checks there were enough to show
    /// anything.
    pub fn acknowledged_writes(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| matches!(e.outcome, Outcome::Written | Outcome::Cas(true)))
            .count()
    }

    /// Checks the history recorded so far.
    pub fn check(&self, budget: Budget) -> Verdict {
        super::check(&self.history(), budget)
    }
}

/// An operation called and not yet returned. [`Pending::finish`] records
/// what it returned; dropping it unfinished records that it never
/// returned (its outcome unknown), as for a client that gave up.
#[derive(Debug)]
#[must_use = "an operation dropped unfinished is recorded as never returned"]
pub struct Pending {
    recorder: Recorder,
    /// Taken when recorded.
    event: Option<Event>,
}

impl Pending {
    /// Records that the operation returned `outcome`, now. Call right
    /// after the answer arrived; [`Outcome::Unknown`] for an error or a
    /// timeout that leaves it open whether the operation took effect.
    pub fn finish(mut self, outcome: Outcome) {
        let ret = self.recorder.now();
        if let Some(mut event) = self.event.take() {
            event.ret = Some(ret);
            event.outcome = outcome;
            self.recorder.events().push(event);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(event) = self.event.take() {
            self.recorder.events().push(event);
        }
    }
}
