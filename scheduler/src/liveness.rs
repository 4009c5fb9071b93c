//! Which machines have missed their heartbeats, so that the states the API
//! shows for their units say so (`unknown`, "machine unreachable for 4s")
//! instead of repeating their last report until the machine's lease ends.
//!
//! The source of truth is the store's lease of each machine: its agent
//! heartbeats at a third of the TTL, each heartbeat renews the lease, so
//! the time since the last renewal is the TTL less the time the lease has
//! left ([`Store::time_to_live`]). That works the same on every server,
//! whichever received the heartbeat, and costs no write. A machine is
//! overdue once half its TTL passed without a renewal: one and a half
//! heartbeat intervals, so a heartbeat late by half an interval is not
//! mistaken for a silent machine, and a silent one shows within one
//! interval of its first missed heartbeat.
//!
//! What a server learns is kept in memory: the time of each machine's
//! last renewal, from heartbeats this server received and from the
//! leases it asked about. A renewal less than half a TTL old needs no
//! question; a machine that looks overdue is asked about again at most
//! every [`Liveness::recheck`], in case another server received its
//! heartbeat. So listings cost at most one lease lookup per machine per
//! heartbeat interval, whatever the number of clients.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use flotilla_proto::{Health, MachineId, UnitState};
use tokio::time::Instant;

use crate::keys::Keys;
use flotilla_store::{Store, StoreError, Txn, TxnOp, TxnOpResponse, lock};

/// Most machines remembered; past it the memory starts afresh (a cluster
/// has at most the machine quota, 20,000 by default).
const MAX_REMEMBERED: usize = 100_000;

/// What a server can tell of a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Renewed within half its TTL (or not known to be otherwise).
    Live,
    /// No renewal for this long.
    Silent(Duration),
    /// Its lease is gone (its key is about to go, or went).
    Gone,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    /// The last renewal known.
    renewed: Instant,
    /// When the store was last asked.
    checked: Option<Instant>,
    /// The last renewal this server received itself (a heartbeat it
    /// served), as opposed to one learnt from the store.
    heard: Option<Instant>,
}

/// Machines' last renewals, as far as this server knows.
#[derive(Debug)]
pub(crate) struct Liveness {
    ttl: Duration,
    seen: Mutex<HashMap<MachineId, Seen>>,
}

impl Liveness {
    pub(crate) fn new(ttl: Duration) -> Liveness {
        Liveness {
            ttl,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// How long without a renewal makes a machine overdue: half its TTL.
    pub(crate) fn overdue_after(&self) -> Duration {
        self.ttl / 2
    }

    /// How long a verdict of silence read from the store stands before
    /// the store is asked again: a twelfth of the TTL (a quarter of a
    /// heartbeat interval), between 50 ms and a second.
    fn recheck(&self) -> Duration {
        (self.ttl / 12).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// A heartbeat or registration of `machine` renewed its lease now.
    /// Notes a renewal of `machine`'s lease now, received by this server;
    /// returns how long it had been since the last one this server
    /// received, if it received one (a machine whose agent just moved
    /// here from another server has none, so its silence is not
    /// mistaken for a cut).
    pub(crate) fn renewed(&self, machine: &MachineId) -> Option<Duration> {
        let mut seen = lock(&self.seen);
        if seen.len() >= MAX_REMEMBERED && !seen.contains_key(machine) {
            seen.clear();
        }
        let now = Instant::now();
        let before = seen
            .get(machine)
            .and_then(|s| s.heard)
            .map(|heard| now.saturating_duration_since(heard));
        seen.insert(
            machine.clone(),
            Seen {
                renewed: now,
                checked: None,
                heard: Some(now),
            },
        );
        before
    }

    /// What is known of each machine, asking the store about those whose
    /// last known renewal is older than half the TTL. A store that cannot
    /// answer makes no machine look silent.
    pub(crate) async fn verdicts(
        &self,
        store: &dyn Store,
        keys: &Keys,
        machines: impl IntoIterator<Item = &MachineId>,
    ) -> HashMap<MachineId, Verdict> {
        let now = Instant::now();
        let overdue = self.overdue_after();
        let mut out = HashMap::new();
        let mut ask = Vec::new();
        {
            let seen = lock(&self.seen);
            for m in machines {
                if out.contains_key(m) || ask.contains(m) {
                    continue;
                }
                match seen.get(m) {
                    Some(s) if now.saturating_duration_since(s.renewed) <= overdue => {
                        out.insert(m.clone(), Verdict::Live);
                    }
                    Some(s)
                        if s.checked
                            .is_some_and(|c| now.saturating_duration_since(c) < self.recheck()) =>
                    {
                        out.insert(
                            m.clone(),
                            Verdict::Silent(now.saturating_duration_since(s.renewed)),
                        );
                    }
                    _ => ask.push(m.clone()),
                }
            }
        }
        if ask.is_empty() {
            return out;
        }
        let asked = match self.ask(store, keys, &ask).await {
            Ok(asked) => asked,
            Err(e) => {
                tracing::debug!("cannot tell whether machines are overdue: {e}");
                for m in ask {
                    out.insert(m, Verdict::Live);
                }
                return out;
            }
        };
        let now = Instant::now();
        let mut seen = lock(&self.seen);
        for (m, left) in asked {
            let verdict = match left {
                Some(left) => {
                    let since = self.ttl.saturating_sub(left);
                    let renewed = now.checked_sub(since).unwrap_or(now);
                    // A heartbeat this server received meanwhile is newer.
                    let renewed = seen.get(&m).map_or(renewed, |s| s.renewed.max(renewed));
                    if seen.len() >= MAX_REMEMBERED && !seen.contains_key(&m) {
                        seen.clear();
                    }
                    let heard = seen.get(&m).and_then(|s| s.heard);
                    seen.insert(
                        m.clone(),
                        Seen {
                            renewed,
                            checked: Some(now),
                            heard,
                        },
                    );
                    let since = now.saturating_duration_since(renewed);
                    if since > overdue {
                        Verdict::Silent(since)
                    } else {
                        Verdict::Live
                    }
                }
                None => {
                    seen.remove(&m);
                    Verdict::Gone
                }
            };
            out.insert(m, verdict);
        }
        out
    }

    /// The time each machine's lease has left; `None` for a machine with
    /// no key or whose lease is gone. A machine whose key has no lease
    /// (written by hand) counts as renewed now.
    async fn ask(
        &self,
        store: &dyn Store,
        keys: &Keys,
        machines: &[MachineId],
    ) -> Result<Vec<(MachineId, Option<Duration>)>, StoreError> {
        let mut out = Vec::with_capacity(machines.len());
        let max = store.limits().max_txn_ops.max(1);
        for group in machines.chunks(max) {
            let resp = store
                .txn(Txn::new().and_then(group.iter().map(|m| TxnOp::get(keys.machine(m)))))
                .await?;
            for (m, r) in group.iter().zip(resp.responses) {
                let lease = match r {
                    TxnOpResponse::Get(g) => match g.kv {
                        Some(kv) => kv.lease,
                        None => {
                            out.push((m.clone(), None));
                            continue;
                        }
                    },
                    _ => None,
                };
                let left = match lease {
                    None => Some(self.ttl),
                    Some(lease) => match store.time_to_live(lease).await {
                        Ok(left) => Some(left),
                        Err(StoreError::LeaseNotFound { .. }) => None,
                        Err(e) => return Err(e),
                    },
                };
                out.push((m.clone(), left));
            }
        }
        Ok(out)
    }
}

/// Shows a state of a machine that is silent or gone as `unknown`, with
/// why and what was last reported.
pub(crate) fn mark(state: &mut UnitState, verdict: Verdict) {
    let why = match verdict {
        Verdict::Live => return,
        Verdict::Silent(for_) => format!("machine unreachable for {}s", for_.as_secs()),
        Verdict::Gone => "machine left the cluster (its lease ended)".to_owned(),
    };
    state.last_error = Some(format!(
        "{why}; last reported {}/{}",
        state.active_state, state.sub_state
    ));
    state.active_state = "unknown".into();
    state.sub_state = "unknown".into();
    state.health = Health::None;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flotilla_proto::UnitName;

    use super::*;
    use flotilla_store::{MemoryStore, Method};

    fn machine(n: u8) -> MachineId {
        MachineId::parse(&format!("{n:02x}").repeat(16)).unwrap()
    }

    async fn register(store: &MemoryStore, keys: &Keys, m: &MachineId, ttl: Duration) {
        let grant = store.grant(ttl).await.unwrap();
        store
            .put(&keys.machine(m), b"{}", Some(grant.id))
            .await
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_gap_is_between_heartbeats_this_server_received() {
        let store = Arc::new(MemoryStore::new());
        let keys = Keys::default();
        let ttl = Duration::from_secs(6);
        let live = Liveness::new(ttl);
        let m = machine(1);
        register(&store, &keys, &m, ttl).await;
        // Known only from the store: no gap to tell.
        tokio::time::advance(Duration::from_secs(4)).await;
        live.verdicts(store.as_ref(), &keys, [&m]).await;
        assert_eq!(live.renewed(&m), None);
        // Heard twice: the time between.
        tokio::time::advance(Duration::from_secs(2)).await;
        live.verdicts(store.as_ref(), &keys, [&m]).await;
        assert_eq!(live.renewed(&m), Some(Duration::from_secs(2)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_machine_is_overdue_after_half_its_ttl_and_gone_when_its_lease_ends() {
        let store = Arc::new(MemoryStore::new());
        let keys = Keys::default();
        let ttl = Duration::from_secs(6);
        let (a, b) = (machine(1), machine(2));
        register(&store, &keys, &a, ttl).await;
        let liveness = Liveness::new(ttl);
        let v = liveness.verdicts(&*store, &keys, [&a, &b]).await;
        assert_eq!(v[&a], Verdict::Live);
        assert_eq!(v[&b], Verdict::Gone, "no key: gone");
        // Just before half the TTL: live, and answered from memory.
        tokio::time::advance(Duration::from_millis(2900)).await;
        let asked = store.calls().of(Method::TimeToLive);
        let v = liveness.verdicts(&*store, &keys, [&a]).await;
        assert_eq!(v[&a], Verdict::Live);
        assert_eq!(
            store.calls().of(Method::TimeToLive),
            asked,
            "asked the store"
        );
        // Past it: silent, and a second listing soon after does not ask
        // again.
        tokio::time::advance(Duration::from_millis(1200)).await;
        let v = liveness.verdicts(&*store, &keys, [&a]).await;
        assert!(
            matches!(v[&a], Verdict::Silent(d) if d >= Duration::from_secs(4)),
            "{v:?}"
        );
        let asked = store.calls().of(Method::TimeToLive);
        liveness.verdicts(&*store, &keys, [&a]).await;
        assert_eq!(store.calls().of(Method::TimeToLive), asked);
        // The lease ends.
        tokio::time::advance(Duration::from_secs(3)).await;
        let v = liveness.verdicts(&*store, &keys, [&a]).await;
        assert_eq!(v[&a], Verdict::Gone);
    }

    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_elsewhere_is_seen_at_the_next_recheck() {
        let store = Arc::new(MemoryStore::new());
        let keys = Keys::default();
        let ttl = Duration::from_secs(6);
        let a = machine(1);
        register(&store, &keys, &a, ttl).await;
        let lease = store
            .get(&keys.machine(&a))
            .await
            .unwrap()
            .kv
            .unwrap()
            .lease;
        let liveness = Liveness::new(ttl);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(matches!(
            liveness.verdicts(&*store, &keys, [&a]).await[&a],
            Verdict::Silent(_)
        ));
        // Another server renews the lease; this one learns it once its
        // verdict is older than the recheck period.
        store.keepalive(lease.unwrap()).await.unwrap();
        tokio::time::advance(liveness.recheck()).await;
        assert_eq!(
            liveness.verdicts(&*store, &keys, [&a]).await[&a],
            Verdict::Live
        );
        // A heartbeat this server receives counts at once.
        tokio::time::advance(Duration::from_secs(4)).await;
        liveness.renewed(&a);
        assert_eq!(
            liveness.verdicts(&*store, &keys, [&a]).await[&a],
            Verdict::Live
        );
    }

    #[tokio::test]
    async fn a_store_that_cannot_answer_makes_no_machine_silent() {
        let store = Arc::new(MemoryStore::new());
        let keys = Keys::default();
        store.fail_next(1);
        let a = machine(1);
        let v = Liveness::new(Duration::from_secs(6))
            .verdicts(&*store, &keys, [&a])
            .await;
        assert_eq!(v[&a], Verdict::Live);
    }

    #[test]
    fn a_silent_machine_s_state_says_so_and_keeps_the_last_report() {
        let mut state = UnitState {
            unit: UnitName::parse("web.service").unwrap(),
            machine: machine(1),
            load_state: "loaded".into(),
            active_state: "active".into(),
            sub_state: "running".into(),
            hash: None,
            started_hash: None,
            main_pid: Some(7),
            n_restarts: 0,
            container_id: None,
            health: Health::Healthy,
            since_ms: 1,
            last_error: None,
        };
        let live = state.clone();
        mark(&mut state, Verdict::Live);
        assert_eq!(state, live);
        mark(&mut state, Verdict::Silent(Duration::from_millis(7400)));
        assert_eq!(state.active_state, "unknown");
        assert_eq!(state.sub_state, "unknown");
        assert_eq!(state.health, Health::None);
        assert_eq!(
            state.last_error.as_deref(),
            Some("machine unreachable for 7s; last reported active/running")
        );
    }
}
