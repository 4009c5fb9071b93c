//! Lease deadlines for the local backends.
//!
//! The state machine knows which leases exist, their TTLs and their keys;
//! *when* a lease ends is not part of it, because time is not deterministic.
//! The [`Lessor`] holds each lease's deadline on tokio's clock (so tests can
//! pause and advance it), moves it on keepalive, and an expiry task turns
//! every passed deadline into a revoke command committed through the
//! backend's normal write path (so the embedded store logs it, and the keys'
//! deletes reach watchers like any other). This is etcd's split too: only the
//! leader's lessor tracks time and it revokes through raft.
//!
//! A lease whose deadline has passed is dead at once for keepalive and
//! time-to-live, even before its revoke is committed, so a keepalive can never
//! revive a lease that the expiry task is already revoking.
//!
//! Deadlines are not persisted: a lease restored when a store opens gets its
//! whole TTL from that moment, as etcd does, so a restarted server does not
//! expire every machine at once.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::engine::{Committer, Engine};
use super::state::{Command, RevokeReason};
use super::{LeaseId, StoreError, StoreResult, lock};

/// How long the expiry task waits before retrying a revoke that failed with
/// a temporary error. Fixed rather than a backoff: the only temporary
/// failures are brief (a full write queue), and each lease is retried on its
/// own.
const EXPIRY_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Timer {
    ttl: Duration,
    deadline: Instant,
}

#[derive(Debug, Default)]
struct Deadlines {
    timers: HashMap<LeaseId, Timer>,
    /// Deadlines still to act on; a lease handed to the expiry task leaves
    /// this set but keeps its (passed) timer until its revoke is applied.
    queue: BTreeSet<(Instant, LeaseId)>,
    closed: bool,
}

/// Lease deadlines.
#[derive(Debug, Default)]
pub(crate) struct Lessor {
    deadlines: Mutex<Deadlines>,
    changed: Notify,
}

impl Lessor {
    /// Starts the clock of a lease (granted, or restored on open).
    pub(crate) fn start(&self, lease: LeaseId, ttl: Duration) {
        let deadline = deadline_after(Instant::now(), ttl);
        let mut d = lock(&self.deadlines);
        if let Some(old) = d.timers.insert(lease, Timer { ttl, deadline }) {
            d.queue.remove(&(old.deadline, lease));
        }
        d.queue.insert((deadline, lease));
        drop(d);
        // The new deadline may be the earliest.
        self.changed.notify_one();
    }

    /// Forgets a lease (its revoke was applied).
    pub(crate) fn remove(&self, lease: LeaseId) {
        let mut d = lock(&self.deadlines);
        if let Some(old) = d.timers.remove(&lease) {
            d.queue.remove(&(old.deadline, lease));
        }
    }

    /// Moves a live lease's deadline to a whole TTL from now; returns the TTL.
    pub(crate) fn keepalive(&self, lease: LeaseId) -> StoreResult<Duration> {
        let now = Instant::now();
        let mut d = lock(&self.deadlines);
        let timer = match d.timers.get_mut(&lease) {
            Some(timer) if timer.deadline > now => timer,
            _ => return Err(StoreError::LeaseNotFound { lease }),
        };
        let old = timer.deadline;
        timer.deadline = deadline_after(now, timer.ttl);
        let (ttl, deadline) = (timer.ttl, timer.deadline);
        d.queue.remove(&(old, lease));
        d.queue.insert((deadline, lease));
        Ok(ttl)
    }

    /// The time a live lease has left.
    pub(crate) fn time_to_live(&self, lease: LeaseId) -> StoreResult<Duration> {
        let now = Instant::now();
        match lock(&self.deadlines).timers.get(&lease) {
            Some(timer) if timer.deadline > now => Ok(timer.deadline - now),
            _ => Err(StoreError::LeaseNotFound { lease }),
        }
    }

    /// Forgets every lease (the state was replaced by a snapshot).
    pub(crate) fn clear(&self) {
        let mut d = lock(&self.deadlines);
        d.timers.clear();
        d.queue.clear();
    }

    /// Stops the expiry task.
    pub(crate) fn close(&self) {
        lock(&self.deadlines).closed = true;
        self.changed.notify_one();
    }

    fn retry_later(&self, lease: LeaseId) {
        let mut d = lock(&self.deadlines);
        if d.timers.contains_key(&lease) {
            d.queue
                .insert((deadline_after(Instant::now(), EXPIRY_RETRY), lease));
            drop(d);
            // The expiry task may be waiting with no deadline at all.
            self.changed.notify_one();
        }
    }
}

/// `now + ttl`, saturating far in the future instead of overflowing (a TTL
/// restored from a log written elsewhere is not trusted to be small).
fn deadline_after(now: Instant, ttl: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(ttl.min(FAR)).unwrap_or(now)
}

/// What the expiry task should do next.
enum Next {
    Stop,
    Wait(Option<Instant>),
    Expire(Vec<LeaseId>),
}

fn next_step(lessor: &Lessor) -> Next {
    let now = Instant::now();
    let mut d = lock(&lessor.deadlines);
    if d.closed {
        return Next::Stop;
    }
    let mut expired = Vec::new();
    while let Some(&(deadline, lease)) = d.queue.first() {
        if deadline > now {
            break;
        }
        d.queue.pop_first();
        // Only a lease whose own deadline passed: a retry queued before
        // the lease was renewed (a new raft leader renews every lease) is
        // stale.
        if d.timers.get(&lease).is_some_and(|t| t.deadline <= now) {
            expired.push(lease);
        }
    }
    if expired.is_empty() {
        Next::Wait(d.queue.first().map(|&(deadline, _)| deadline))
    } else {
        Next::Expire(expired)
    }
}

/// The expiry task of one store: revokes leases whose deadline passed.
/// It holds the engine only weakly, so it ends when the store is dropped
/// (or closed).
pub(crate) async fn run_expiry<C: Committer>(engine: Weak<Engine<C>>) {
    let Some(lessor) = engine.upgrade().map(|e| e.lessor().clone()) else {
        return;
    };
    loop {
        match next_step(&lessor) {
            Next::Stop => return,
            Next::Wait(None) => lessor.changed.notified().await,
            Next::Wait(Some(deadline)) => {
                // Either the deadline comes or a lease is granted (which may
                // have an earlier one); both mean "look again".
                let _ = tokio::time::timeout_at(deadline, lessor.changed.notified()).await;
            }
            Next::Expire(leases) => {
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                // One task per lease, so that many leases ending together
                // share group commits instead of waiting for each other.
                for lease in leases {
                    let (engine, lessor) = (engine.clone(), lessor.clone());
                    tokio::spawn(async move {
                        let revoke = Command::Revoke {
                            lease,
                            reason: RevokeReason::Expired,
                        };
                        match engine.commit(revoke).await {
                            Ok(_) => {}
                            Err(error) if error.is_temporary() => lessor.retry_later(lease),
                            // Closed, or a broken log: this store instance
                            // can write nothing more.
                            Err(_) => {}
                        }
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_retry_queued_before_a_renewal_does_not_end_the_lease() {
        let lessor = Lessor::default();
        let lease = LeaseId(7);
        lessor.start(lease, Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(11)).await;
        // The deadline passed; the revoke failed (a follower cannot end
        // leases) and is retried in a second.
        assert!(matches!(next_step(&lessor), Next::Expire(l) if l == vec![lease]));
        lessor.retry_later(lease);
        // This server becomes leader and renews every lease.
        lessor.start(lease, Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(matches!(next_step(&lessor), Next::Wait(Some(_))));
        assert!(lessor.time_to_live(lease).is_ok());
        // Its own deadline still ends it.
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(matches!(next_step(&lessor), Next::Expire(l) if l == vec![lease]));
    }
}
