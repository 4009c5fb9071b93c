//! The leader's loop over running rollouts: every [`TICK`], for each
//! rollout that holds locks (`rolling/`), read what the machines report of
//! its current wave, take one [`step`], and write what it says, every
//! write fenced on the leadership. Writing a unit keeps its desired state
//! and compares its revision, so a desired-state change made meanwhile is
//! not lost (the step is taken again at the next tick). The writes are
//! idempotent: writing contents a unit already has restarts nothing, so a
//! step cut short (a failed transaction, a new leader) is simply taken
//! again from the record.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::UnitName;
use flotilla_store::{Compare, CompareOp, RangeOptions, Store, StoreError, Txn, TxnOp};

use super::record::RolloutRecord;
use super::waves::{Observed, Step, step};
use crate::events::EventLog;
use crate::keys::Keys;
use crate::leader::Leadership;
use crate::records::{self, UnitRecord};
use crate::trust::now_ms;

/// How often the leader looks at running rollouts. A wave's end is seen
/// at most this late; when no rollout runs, a tick is one empty range read.
pub const TICK: Duration = Duration::from_millis(500);

/// Units written per transaction: each is a put and a `global/` marker
/// operation, under etcd's default limit of 128 operations.
const UNITS_PER_TXN: usize = 40;

/// Drives running rollouts while `leadership` lasts; never returns (the
/// reconcile loop that runs it stops it).
pub(crate) async fn drive(
    store: Arc<dyn Store>,
    leadership: &Leadership,
    keys: &Keys,
    events: Option<&EventLog>,
) {
    loop {
        if !leadership.is_lost()
            && let Err(e) = tick(&*store, leadership, keys, events).await
        {
            tracing::warn!("rollouts: {e}");
        }
        tokio::time::sleep(TICK).await;
    }
}

/// One look at every running rollout.
async fn tick(
    store: &dyn Store,
    leadership: &Leadership,
    keys: &Keys,
    events: Option<&EventLog>,
) -> Result<(), StoreError> {
    let locks = store
        .range(&keys.rolling(), RangeOptions::default())
        .await?;
    let ids: BTreeSet<String> = locks
        .kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
        .collect();
    for id in ids {
        let key = keys.rollout(&id);
        let Some(kv) = store.get(&key).await?.kv else {
            // A lock without its rollout (it was pruned, or written by
            // hand): nothing drives it, so it goes.
            release_orphan(store, leadership, &id, &locks.kvs).await?;
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
    if s.finished() {
        for u in &before.units {
            ops.push(TxnOp::delete(keys.rolling_unit(&u.name)));
        }
    }
    let txn = Txn::new()
        .when([
            leadership.fence(),
            Compare::mod_revision(&key, CompareOp::Equal, record_revision),
        ])
        .and_then(ops);
    Ok(store.txn(txn).await?.succeeded)
}

fn global_op(keys: &Keys, unit: &UnitName, global: bool) -> TxnOp {
    if global {
        TxnOp::put(keys.global(unit), Vec::new())
    } else {
        TxnOp::delete(keys.global(unit))
    }
}

/// Deletes the locks that name rollout `id`, which no longer exists.
async fn release_orphan(
    store: &dyn Store,
    leadership: &Leadership,
    id: &str,
    locks: &[flotilla_store::KeyValue],
) -> Result<(), StoreError> {
    let ops: Vec<TxnOp> = locks
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
    Ok(())
}
