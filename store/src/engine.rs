//! What the memory and embedded stores share: the state machine behind a
//! lock, the watch hub, the lessor, and the request paths. The two differ
//! only in how a command is committed ([`Committer`]): the memory store
//! applies it at once, the embedded store first appends it to its log and
//! fsyncs, then applies it.
//!
//! Locks are always taken in the order state, hub, lessor (and a watcher's
//! queue after the hub), and never held across an `.await`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use super::lease::{Lessor, run_expiry};
use super::state::{Command, Outcome, RevokeReason, StateMachine, validate_txn};
use super::watch::{Hub, LocalWatch, Watcher};
use super::{
    GetResponse, HistoryStats, LeaseGrant, LeaseId, Limits, RangeOptions, RangeResponse,
    StoreError, StoreResult, Txn, TxnResponse, WatchOptions, lock,
};

/// The longest lease TTL granted (etcd's limit, 9,000,000,000 s).
pub(crate) const MAX_TTL: Duration = Duration::from_secs(9_000_000_000);

/// The state, the history and the deadlines of one local store.
#[derive(Debug)]
pub(crate) struct Shared {
    state: RwLock<StateMachine>,
    hub: Arc<Mutex<Hub>>,
    lessor: Arc<Lessor>,
}

impl Shared {
    /// Wraps a state (empty, or loaded from a snapshot); its leases get a
    /// whole TTL from now.
    pub(crate) fn new(state: StateMachine, watch: WatchOptions) -> Self {
        let lessor = Lessor::default();
        for (&id, lease) in state.leases() {
            lessor.start(id, Duration::from_millis(lease.ttl_ms));
        }
        Shared {
            hub: Arc::new(Mutex::new(Hub::new(watch, state.revision()))),
            state: RwLock::new(state),
            lessor: Arc::new(lessor),
        }
    }

    /// Lease deadlines.
    pub(crate) fn lessor(&self) -> &Arc<Lessor> {
        &self.lessor
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, StateMachine> {
        // A panic while the lock was held cannot leave the state half
        // changed: applying checks everything before it changes anything and
        // does not panic (no indexing, no unwrap); so the data is usable.
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, StateMachine> {
        // See `read` for why a poisoned lock is still usable.
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies commands in order (one revision at most each), publishes
    /// their events and keeps lease deadlines in step. Readers and new
    /// watches see all of a command or none of it.
    pub(crate) fn apply<'c>(
        &self,
        commands: impl IntoIterator<Item = &'c Command>,
    ) -> Vec<StoreResult<Outcome>> {
        let mut state = self.write();
        let mut hub = lock(&self.hub);
        let mut events = Vec::new();
        commands
            .into_iter()
            .map(|command| {
                events.clear();
                let outcome = state.apply(command, &mut events);
                if !events.is_empty() {
                    hub.publish(state.revision(), &events);
                }
                match (command, &outcome) {
                    (Command::Grant { .. }, Ok(Outcome::Grant(grant))) => {
                        self.lessor.start(grant.id, grant.ttl);
                    }
                    (Command::Revoke { lease, .. }, Ok(_)) => self.lessor.remove(*lease),
                    _ => {}
                }
                outcome
            })
            .collect()
    }

    /// Applies one command.
    pub(crate) fn apply_one(&self, command: &Command) -> StoreResult<Outcome> {
        self.apply([command])
            .pop()
            .unwrap_or(Err(StoreError::Closed))
    }

    /// Replaces the whole state (a raft follower installing the leader's
    /// snapshot). Current watches end with [`StoreError::Compacted`], since
    /// the history between the old state and the new one is unknown; their
    /// callers resync as after any compaction. Every lease gets a whole TTL
    /// from now.
    pub(crate) fn restore(&self, state: StateMachine) {
        let mut current = self.write();
        let mut hub = lock(&self.hub);
        let options = hub.stats().options;
        hub.end_all(
            &StoreError::Compacted {
                requested: current.revision() + 1,
                compact_revision: state.revision() + 1,
            },
            false,
        );
        *hub = Hub::new(options, state.revision());
        self.lessor.clear();
        for (&id, lease) in state.leases() {
            self.lessor.start(id, Duration::from_millis(lease.ttl_ms));
        }
        *current = state;
    }

    /// Gives every lease a whole TTL from now: a raft node that has just
    /// become leader, whose deadlines (kept from the keepalives it applied)
    /// may be behind the old leader's.
    pub(crate) fn renew_all_leases(&self) {
        let state = self.read();
        for (&id, lease) in state.leases() {
            self.lessor.start(id, Duration::from_millis(lease.ttl_ms));
        }
    }

    /// Ends every watch and the expiry task.
    fn close(&self) {
        lock(&self.hub).end_all(&StoreError::Closed, true);
        self.lessor.close();
    }

    /// Ends every current watch with `error` (a fault for tests).
    pub(crate) fn interrupt_watchers(&self, error: &StoreError) {
        lock(&self.hub).end_all(error, false);
    }
}

/// How a backend makes a command durable and applies it.
pub(crate) trait Committer: Send + Sync + 'static {
    /// Commits one command; answers once it is applied (and, for a durable
    /// backend, on disk).
    fn commit(
        &self,
        shared: &Arc<Shared>,
        command: Command,
    ) -> impl Future<Output = StoreResult<Outcome>> + Send;
}

/// The request paths of a local store.
#[derive(Debug)]
pub(crate) struct Engine<C> {
    shared: Arc<Shared>,
    committer: C,
    limits: Limits,
    expiry_started: AtomicBool,
    closed: AtomicBool,
}

impl<C: Committer> Engine<C> {
    pub(crate) fn new(shared: Arc<Shared>, committer: C, limits: Limits) -> Arc<Self> {
        Arc::new(Engine {
            shared,
            committer,
            limits,
            expiry_started: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        })
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub(crate) fn lessor(&self) -> &Arc<Lessor> {
        &self.shared.lessor
    }

    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    pub(crate) fn committer(&self) -> &C {
        &self.committer
    }

    /// Starts the lease expiry task, once. Must run inside a tokio runtime
    /// (it is called from async request paths and from `open`).
    pub(crate) fn start_expiry(self: &Arc<Self>) {
        if !self.expiry_started.swap(true, Ordering::SeqCst) {
            tokio::spawn(run_expiry(Arc::downgrade(self)));
        }
    }

    fn check_open(&self) -> StoreResult<()> {
        if self.closed.load(Ordering::SeqCst) {
            Err(StoreError::Closed)
        } else {
            Ok(())
        }
    }

    pub(crate) async fn commit(&self, command: Command) -> StoreResult<Outcome> {
        self.check_open()?;
        self.committer.commit(&self.shared, command).await
    }

    pub(crate) fn get(&self, key: &str) -> StoreResult<GetResponse> {
        self.check_open()?;
        if key.is_empty() {
            return Err(StoreError::EmptyKey { what: "key" });
        }
        Ok(self.shared.read().get(key))
    }

    pub(crate) fn range(&self, prefix: &str, options: &RangeOptions) -> StoreResult<RangeResponse> {
        self.check_open()?;
        Ok(self.shared.read().range(prefix, options))
    }

    pub(crate) async fn txn(&self, txn: Txn) -> StoreResult<TxnResponse> {
        self.check_open()?;
        validate_txn(&txn, &self.limits)?;
        if txn.is_read_only() {
            // Nothing to make durable: answer from the applied state.
            return Ok(self.shared.read().read_txn(&txn));
        }
        match self.commit(Command::Txn(txn)).await? {
            Outcome::Txn(response) => Ok(response),
            other => Err(mismatched("transaction", &other)),
        }
    }

    pub(crate) fn watch(&self, prefix: &str, from_revision: u64) -> StoreResult<Watcher> {
        self.check_open()?;
        let (watch, start) = LocalWatch::register(&self.shared.hub, prefix, from_revision)?;
        Ok(Watcher::new(Box::new(watch), prefix, start))
    }

    pub(crate) async fn grant(self: &Arc<Self>, ttl: Duration) -> StoreResult<LeaseGrant> {
        self.check_open()?;
        if ttl.is_zero() || ttl > MAX_TTL {
            return Err(StoreError::InvalidTtl {
                ttl_ms: ttl.as_millis(),
            });
        }
        // At most MAX_TTL, so it fits; rounded up to a whole millisecond.
        let ttl_ms = u64::try_from(ttl.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
        self.start_expiry();
        let id = random_lease_id()?;
        match self
            .commit(Command::Grant {
                ttl_ms,
                id: Some(id),
            })
            .await?
        {
            Outcome::Grant(grant) => Ok(grant),
            other => Err(mismatched("grant", &other)),
        }
    }

    pub(crate) fn keepalive(&self, lease: LeaseId) -> StoreResult<Duration> {
        self.check_open()?;
        self.shared.lessor.keepalive(lease)
    }

    pub(crate) fn time_to_live(&self, lease: LeaseId) -> StoreResult<Duration> {
        self.check_open()?;
        self.shared.lessor.time_to_live(lease)
    }

    pub(crate) async fn revoke(&self, lease: LeaseId) -> StoreResult<u64> {
        let command = Command::Revoke {
            lease,
            reason: RevokeReason::Revoked,
        };
        match self.commit(command).await? {
            Outcome::Revoke(revision) => Ok(revision),
            other => Err(mismatched("revoke", &other)),
        }
    }

    pub(crate) fn watch_history(&self) -> HistoryStats {
        lock(&self.shared.hub).stats()
    }

    pub(crate) fn compact(&self, revision: u64) -> StoreResult<()> {
        self.check_open()?;
        lock(&self.shared.hub).compact(revision)
    }

    /// Refuses every later call, ends every watch and the expiry task.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.shared.close();
    }
}

/// The state machine answers each command with an outcome of the same kind;
/// anything else is a bug, reported instead of panicking the server.
fn mismatched(command: &str, outcome: &Outcome) -> StoreError {
    StoreError::Internal {
        reason: format!("a {command} command was answered with {outcome:?}"),
    }
}

impl<C> Drop for Engine<C> {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
        self.shared.close();
    }
}

/// A random lease id: positive, 63 bits, so that a lease cannot be guessed
/// from another (etcd's are not sequential either).
fn random_lease_id() -> StoreResult<LeaseId> {
    let bits = getrandom::u64().map_err(|e| StoreError::Internal {
        reason: format!("no randomness from the operating system: {e}"),
    })?;
    Ok(LeaseId(i64::try_from(bits >> 1).unwrap_or(i64::MAX).max(1)))
}
