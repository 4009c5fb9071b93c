//! The leader's loop over running rollouts: every [`TICK`] while one
//! runs, for each rollout listed in `rollouts-running`, read what the
//! machines report of its current wave, take one [`step`], and write what
//! it says, every write fenced on the leadership. Writing a unit keeps its desired state
//! and compares its revision, so a desired-state change made meanwhile is
//! not lost (the step is taken again at the next tick). The writes are
//! idempotent: writing contents a unit already has restarts nothing, so a
//! step cut short (a failed transaction, a new leader) is simply taken
//! again from the record.

use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::UnitName;
use flotilla_store::{Compare, CompareOp, RangeOptions, Store, StoreError, Txn, TxnOp, WatchEvent};

use super::record::{RolloutRecord, RunningRollouts};
use super::waves::{Observed, Step, step};
use crate::events::EventLog;
use crate::keys::Keys;
use crate::leader::Leadership;
use crate::records::{self, UnitRecord};
use crate::trust::now_ms;

/// How often the leader looks at running rollouts while one runs. A
/// wave's end is seen at most this late.
pub const TICK: Duration = Duration::from_millis(500);

/// Units written per transaction: each is a put and a `global/` marker
/// operation, under etcd's default limit of 128 operations.
const UNITS_PER_TXN: usize = 40;

/// Drives running rollouts while `leadership` lasts; never returns (the
/// reconcile loop that runs it stops it).
///
/// Which rollouts run is one key, `rollouts-running`: read once when the
/// leader starts (and again after a store error), then watched, so that a
/// leader with no running rollout makes no other store call until one
/// starts.
pub(crate) async fn drive(
    store: Arc<dyn Store>,
    leadership: &Leadership,
    keys: &Keys,
    events: Option<&EventLog>,
) {
    let mut backoff = flotilla_proto::backoff::Backoff::default();
    loop {
        let started = tokio::time::Instant::now();
        if let Err(e) = follow(&*store, leadership, keys, events).await {
            tracing::warn!("rollouts: {e}");
        }
        backoff.reset_if_quiet(started.elapsed());
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Reads which rollouts run, then follows that and drives them; returns
/// on a store error.
async fn follow(
    store: &dyn Store,
    leadership: &Leadership,
    keys: &Keys,
    events: Option<&EventLog>,
) -> Result<(), StoreError> {
    let key = keys.running_rollouts();
    let got = store.get(&key).await?;
    let decode = |value: &[u8]| -> RunningRollouts {
        records::decode(&key, value).unwrap_or_else(|e| {
            tracing::error!("{e}");
            RunningRollouts::default()
        })
    };
    let mut running = got.kv.map(|kv| decode(&kv.value)).unwrap_or_default();
    let mut watch = store.watch_changes(&key, got.revision + 1).await?;
    loop {
        if !running.ids.is_empty() && !leadership.is_lost() {
            tick(store, leadership, keys, events, &running.ids).await?;
        }
        let idle = running.ids.is_empty();
        let wait = async {
            if idle {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(TICK).await;
        };
        tokio::select! {
            changes = watch.next() => {
                for change in changes? {
                    match change {
                        WatchEvent::Put { kv, .. } if kv.key == key => running = decode(&kv.value),
                        WatchEvent::Delete { key: k, .. } if k == key => running = RunningRollouts::default(),
                        WatchEvent::Put { .. } | WatchEvent::Delete { .. } => {}
                    }
                }
            }
            () = wait => {}
        }
    }
}

/// One look at every running rollout.
async fn tick(
    store: &dyn Store,
    leadership: &Leadership,
    keys: &Keys,
    events: Option<&EventLog>,
    running: &[String],
) -> Result<(), StoreError> {
    for id in running {
        let key = keys.rollout(id);
        let Some(kv) = store.get(&key).await?.kv else {
            // Listed as running without its record (written by hand, or
            // deleted): nothing drives it, so it goes, with its locks.
            release_orphan(store, leadership, keys, id).await?;
            continue;
        };
        let record: RolloutRecord = match records::decode(&key, &kv.value) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("rollout {id} cannot be driven: {e}");
                continue;
            }
        };
        let observed = observe(store, keys, &record).await?;
        let s = step(&record, &observed, now_ms());
        if s.is_idle(&record) && !s.finished() {
            continue;
        }
        if apply(store, leadership, keys, &record, &s, kv.mod_revision).await?
            && let Some(log) = events
        {
            log.record_all(s.events);
        }
    }
    Ok(())
}

/// The running rollouts without `id`, and the compare that holds while
/// they are unchanged.
async fn running_without(
    store: &dyn Store,
    keys: &Keys,
    id: &str,
) -> Result<(Vec<u8>, Compare), StoreError> {
    let key = keys.running_rollouts();
    let mut running = RunningRollouts::default();
    let compare = match store.get(&key).await?.kv {
        Some(kv) => {
            running = records::decode(&key, &kv.value).unwrap_or_default();
            Compare::mod_revision(&key, CompareOp::Equal, kv.mod_revision)
        }
        None => Compare::absent(&key),
    };
    running.ids.retain(|r| r != id);
    Ok((records::encode(&running), compare))
}

/// What the machines report of the current wave's units.
async fn observe(
    store: &dyn Store,
    keys: &Keys,
    record: &RolloutRecord,
) -> Result<Observed, StoreError> {
    let mut observed = Observed::default();
    if record.wave_started_ms.is_none() {
        return Ok(observed);
    }
    for i in record.wave_units(record.wave) {
        let unit = &record.units[i].name;
        if store.get(&keys.unit(unit)).await?.kv.is_none() {
            observed.missing.insert(unit.clone());
            continue;
        }
        let prefix = keys.unit_states(unit);
        let resp = store.range(&prefix, RangeOptions::default()).await?;
        let states = resp
            .kvs
            .iter()
            .filter_map(|kv| records::decode(&kv.key, &kv.value).ok())
            .collect();
        observed.states.insert(unit.clone(), states);
    }
    Ok(observed)
}

/// Writes what step `s` says: the units' contents, then the record (and,
/// when the rollout ended, its locks go). Returns whether all of it was
/// written.
async fn apply(
    store: &dyn Store,
    leadership: &Leadership,
    keys: &Keys,
    before: &RolloutRecord,
    s: &Step,
    record_revision: u64,
) -> Result<bool, StoreError> {
    let writes: Vec<(usize, bool)> = s
        .write_new
        .iter()
        .map(|&i| (i, true))
        .chain(s.write_old.iter().map(|&i| (i, false)))
        .collect();
    for chunk in writes.chunks(UNITS_PER_TXN) {
        let mut compares = vec![leadership.fence()];
        let mut ops = Vec::new();
        for &(i, new) in chunk {
            let unit = &before.units[i];
            let (hash, global) = if new {
                (&unit.new_hash, unit.new_global)
            } else {
                (&unit.old_hash, unit.old_global)
            };
            let Some(text) = before.texts.get(hash) else {
                tracing::error!(rollout = %before.id, unit = %unit.name, "the rollout lacks the text of {hash}");
                continue;
            };
            let key = keys.unit(&unit.name);
            // A unit destroyed meanwhile is not made again; the next step
            // sees it missing.
            let Some(kv) = store.get(&key).await?.kv else {
                continue;
            };
            let current: UnitRecord = match records::decode(&key, &kv.value) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("{e}");
                    continue;
                }
            };
            let record = UnitRecord {
                text: text.clone(),
                hash: hash.clone(),
                desired_state: current.desired_state,
            };
            compares.push(Compare::mod_revision(
                &key,
                CompareOp::Equal,
                kv.mod_revision,
            ));
            ops.push(TxnOp::put(&key, records::encode(&record)));
            ops.push(global_op(keys, &unit.name, global));
        }
        if ops.is_empty() {
            continue;
        }
        if !store
            .txn(Txn::new().when(compares).and_then(ops))
            .await?
            .succeeded
        {
            // Deposed, or a unit changed meanwhile: take the step again
            // at the next tick.
            return Ok(false);
        }
    }
    let key = keys.rollout(&before.id);
    let mut ops = vec![TxnOp::put(&key, records::encode(&s.record))];
    let mut compares = vec![
        leadership.fence(),
        Compare::mod_revision(&key, CompareOp::Equal, record_revision),
    ];
    if s.finished() {
        for u in &before.units {
            ops.push(TxnOp::delete(keys.rolling_unit(&u.name)));
        }
        let (running, compare) = running_without(store, keys, &before.id).await?;
        ops.push(TxnOp::put(keys.running_rollouts(), running));
        compares.push(compare);
    }
    let txn = Txn::new().when(compares).and_then(ops);
    Ok(store.txn(txn).await?.succeeded)
}

fn global_op(keys: &Keys, unit: &UnitName, global: bool) -> TxnOp {
    if global {
        TxnOp::put(keys.global(unit), Vec::new())
    } else {
        TxnOp::delete(keys.global(unit))
    }
}

/// Ends rollout `id`, which has no record: its locks go (found with a
/// read of every lock, which only this case needs), and so does its id.
async fn release_orphan(
    store: &dyn Store,
    leadership: &Leadership,
    keys: &Keys,
    id: &str,
) -> Result<(), StoreError> {
    let locks = store
        .range(&keys.rolling(), RangeOptions::default())
        .await?;
    let ops: Vec<TxnOp> = locks
        .kvs
        .iter()
        .filter(|kv| &kv.value[..] == id.as_bytes())
        .map(|kv| TxnOp::delete(kv.key.clone()))
        .collect();
    for chunk in ops.chunks(100) {
        let txn = Txn::new()
            .when([leadership.fence()])
            .and_then(chunk.to_vec());
        store.txn(txn).await?;
    }
    let (running, compare) = running_without(store, keys, id).await?;
    let txn = Txn::new()
        .when([leadership.fence(), compare])
        .and_then([TxnOp::put(keys.running_rollouts(), running)]);
    store.txn(txn).await?;
    Ok(())
}
