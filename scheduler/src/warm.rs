//! A follower's warm placement view: every server that does not lead keeps
//! the view the leader would load (units, machines, assignments, the units
//! held for absent machines, the census) up to date from the store's watch,
//! with the same code as the leader's loop (`reconciler::absorb`), so that
//! when it starts leading it plans at once instead of reading the whole
//! cluster first (which takes about a second per 100,000 units).
//!
//! The leader takes the view (`WarmView::take`); the keeper then waits
//! until the lead ends (`WarmView::resume_on_drop`) and loads a fresh one.
//! A view that is not ready when asked (still loading, or the store failed)
//! is not waited for: the new leader loads its own, as without a warm view.
//!
//! What the old leader may not have written before it died is written by the
//! new one on taking the view: deletes of the assignments of units that are
//! gone, and of the state reports of machines that left (which the census
//! indexes: no read).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flotilla_proto::MachineId;
use flotilla_proto::backoff::Backoff;
use flotilla_store::{Store, StoreError, TxnOp, WatchEvent};
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::census::Census;
use crate::keys::{Key, Keys};
use crate::placement::PlacementView;
use crate::reconciler::{
    Absorbed, Held, Loaded, ReconcilerConfig, absorb, load, sleep_until_or_forever, stale_reports,
};

/// How long a new leader waits for the keeper to hand its view over (it
/// answers at once unless it is loading).
const TAKE_WAIT: Duration = Duration::from_millis(100);

/// The view a follower keeps, as handed to the new leader.
pub(crate) struct Warm {
    view: PlacementView,
    /// The revision the view reflects: the leader watches from the next.
    revision: u64,
    held: Held,
    census: Census,
    /// Assignment keys of units that were gone when seen, not seen deleted
    /// since.
    stray: HashSet<String>,
}

impl Warm {
    /// What the leader's loop starts from: the view, its revision, and the
    /// deletes the old leader may not have written.
    pub(crate) fn into_loaded(self, keys: &Keys) -> Loaded {
        let Warm {
            view,
            revision,
            held,
            census,
            stray,
        } = self;
        // An assignment the view does not reflect, of a unit not held for
        // its machine, is stray (a unit created again since has its own).
        let mut ops: Vec<TxnOp> = stray
            .into_iter()
            .filter(|key| match keys.parse(key) {
                Some(Key::Assignment(machine, unit)) => {
                    view.placement(&unit) != Some(&machine) && !held.holds(&unit)
                }
                _ => false,
            })
            .map(TxnOp::delete)
            .collect();
        // What machines that left since the view was loaded still have
        // reported.
        let left: Vec<MachineId> = census.left_with_reports().cloned().collect();
        ops.extend(stale_reports(keys, &census, &left, Vec::new()));
        tracing::info!(
            machines = view.machine_count(),
            units = view.unit_count(),
            revision,
            "taking the lead with this server's warm placement view"
        );
        (view, revision, ops, held, census)
    }
}

/// The handle on a follower's warm view (see the [module
/// documentation](self)). Cloning it shares the keeper.
#[derive(Clone)]
pub struct WarmView {
    requests: mpsc::Sender<oneshot::Sender<Warm>>,
    resume: Arc<Notify>,
    /// Whether this server leads: the keeper keeps nothing meanwhile.
    leading: Arc<AtomicBool>,
    /// Whether a view is ready to be taken.
    ready: Arc<watch::Sender<bool>>,
}

impl std::fmt::Debug for WarmView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WarmView")
    }
}

impl WarmView {
    /// Whether a view is ready to be taken, as it changes: a server whose
    /// view is ready plans at once when it comes to lead (on raft, the
    /// store prefers it in elections: see `RaftStore::prefer`).
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// The warm view, if the keeper has one ready; the keeper stops until
    /// [`resume_on_drop`](Self::resume_on_drop)'s guard drops.
    pub(crate) async fn take(&self) -> Option<Warm> {
        let (tx, rx) = oneshot::channel();
        self.requests.try_send(tx).ok()?;
        tokio::time::timeout(TAKE_WAIT, rx).await.ok()?.ok()
    }

    /// Marks this server as leading until the guard drops; the keeper then
    /// loads a fresh view.
    pub(crate) fn resume_on_drop(&self) -> Resume {
        self.leading.store(true, Ordering::SeqCst);
        Resume(self.clone())
    }
}

/// See [`WarmView::resume_on_drop`].
pub(crate) struct Resume(WarmView);

impl Drop for Resume {
    fn drop(&mut self) {
        self.0.leading.store(false, Ordering::SeqCst);
        self.0.resume.notify_one();
    }
}

/// Starts keeping a warm view for this server, until `shutdown`.
pub fn keep_warm(
    store: Arc<dyn Store>,
    config: ReconcilerConfig,
    shutdown: watch::Receiver<bool>,
) -> WarmView {
    let (requests, rx) = mpsc::channel(1);
    let view = WarmView {
        requests,
        resume: Arc::new(Notify::new()),
        leading: Arc::new(AtomicBool::new(false)),
        ready: Arc::new(watch::channel(false).0),
    };
    tokio::spawn(keep(store, config, rx, view.clone(), shutdown));
    view
}

/// Why the keeper stopped following the store.
enum Stop {
    Shutdown,
    /// The view was handed to the leader.
    Taken,
    /// A store error: load again.
    Failed(StoreError),
}

async fn keep(
    store: Arc<dyn Store>,
    config: ReconcilerConfig,
    mut requests: mpsc::Receiver<oneshot::Sender<Warm>>,
    handle: WarmView,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        // Nothing is kept while this server leads.
        while handle.leading.load(Ordering::SeqCst) {
            tokio::select! {
                _ = handle.resume.notified() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
        let stop = follow(&*store, &config, &mut requests, &handle, &mut shutdown).await;
        handle.ready.send_replace(false);
        match stop {
            Stop::Shutdown => return,
            Stop::Taken => backoff.reset(),
            Stop::Failed(e) => {
                tracing::debug!("the warm placement view is loaded again after a store error: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        }
    }
}

/// Loads the view and follows the store until the view is taken, the store
/// fails or the server shuts down.
async fn follow(
    store: &dyn Store,
    config: &ReconcilerConfig,
    requests: &mut mpsc::Receiver<oneshot::Sender<Warm>>,
    handle: &WarmView,
    shutdown: &mut watch::Receiver<bool>,
) -> Stop {
    let keys = &config.keys;
    let (view, revision, stray, held, census) = match load(store, config).await {
        Ok(loaded) => loaded,
        Err(e) => return Stop::Failed(e),
    };
    let mut watch = match store.watch_changes(keys.root(), revision + 1).await {
        Ok(w) => w,
        Err(e) => return Stop::Failed(e),
    };
    let mut warm = Warm {
        view,
        revision,
        held,
        census,
        stray: stray.iter().filter_map(deleted_key).collect(),
    };
    handle.ready.send_replace(true);
    loop {
        tokio::select! {
            events = watch.next() => {
                let events = match events {
                    Ok(events) => events,
                    Err(e) => return Stop::Failed(e),
                };
                let Absorbed { stray, .. } =
                    absorb(keys, &mut warm.view, &mut warm.held, &mut warm.census, &events);
                note(keys, &mut warm, &events, stray);
                warm.revision = watch.next_revision().saturating_sub(1);
            }
            _ = sleep_until_or_forever(warm.held.until) => {
                warm.held.release(&mut warm.view, None);
            }
            request = requests.recv() => {
                let Some(reply) = request else { return Stop::Shutdown };
                match reply.send(warm) {
                    Ok(()) => return Stop::Taken,
                    // The leader gave up waiting (this view was loading)
                    // and loaded its own: keep nothing while it leads.
                    Err(_) if handle.leading.load(Ordering::SeqCst) => return Stop::Taken,
                    Err(back) => warm = back,
                }
            }
            _ = shutdown.wait_for(|s| *s) => return Stop::Shutdown,
        }
    }
}

/// Remembers the assignments the old leader should delete, and forgets
/// what it deleted. (What machines that left reported, it should delete
/// too: the census knows what is left of it.)
fn note(keys: &Keys, warm: &mut Warm, events: &[WatchEvent], stray: Vec<TxnOp>) {
    warm.stray.extend(
        stray
            .iter()
            .filter_map(deleted_key)
            .filter(|key| matches!(keys.parse(key), Some(Key::Assignment(..)))),
    );
    for event in events {
        if let WatchEvent::Delete { .. } = event {
            warm.stray.remove(event.key());
        }
    }
}

/// The key a delete operation deletes.
fn deleted_key(op: &TxnOp) -> Option<String> {
    match op {
        TxnOp::Delete { key } => Some(key.clone()),
        _ => None,
    }
}
