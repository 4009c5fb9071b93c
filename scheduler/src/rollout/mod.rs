//! Rolling updates ([`flotilla_proto::rollout`], docs/rollouts.md).
//!
//! A batch of new contents for units that change together arrives as one
//! request (`POST /v1/rollouts`). Units whose contents do not change are
//! left alone; units that are not launched get their new contents at once
//! (nothing restarts); the launched ones are written as a rollout record,
//! `rollouts/<id>`, with a lock per unit, `rolling/<unit>`, in one
//! transaction that fails if another rollout holds one of them. While the
//! lock is there, `PUT /v1/units/{name}` with new contents for the unit
//! is refused (409): a rollout is not superseded half-way, it ends
//! (succeeds or fails) first. The ids of the running rollouts are kept in
//! one key, `rollouts-running`, written in the same transactions, which
//! the leader reads once and then watches. Desired-state changes and deletes are not
//! refused; a unit destroyed mid-rollout fails it.
//!
//! The leader drives each running rollout (`driver.rs`): it writes the new
//! contents of one wave at a time into `units/<unit>`, fenced like its
//! other writes, and decides when a wave is done or failed from the
//! agents' reports (`waves.rs`, a pure function). A new leader resumes
//! from the record. Agents are unchanged: to them a wave is units whose
//! contents changed.
//!
//! The API records that a rollout started (with who started it); the
//! driver records its waves, completion and failure.
//!
//! - `record.rs`: the record and its view; `waves.rs`: one step;
//!   `driver.rs`: the leader's loop; this file: starting, listing and
//!   reading rollouts for the API.

mod driver;
mod record;
mod waves;

use std::collections::{BTreeMap, HashSet};

use flotilla_proto::rollout::{
    KEPT_FINISHED, MAX_GROUP_LEN, MAX_ROLLOUT_UNITS, OnContents, Rollout, RolloutList,
    RolloutRequest, RolloutState, unit_on_contents,
};
use flotilla_proto::unit::MAX_UNIT_FILE_BYTES;
use flotilla_proto::wire::UnitPut;
use flotilla_proto::{DesiredState, UnitName, UnitState};
use flotilla_store::{Compare, CompareOp, RangeOptions, Txn, TxnOp};

pub(crate) use driver::drive;
pub use record::{RolloutRecord, RolloutUnit, RunningRollouts};

use crate::cluster::{CAS_ATTEMPTS, Cluster, internal, store_error};
use crate::control::ControlError;
use crate::records;
use crate::trust::now_ms;

/// The largest rollout record, in bytes: the distinct texts of its units
/// before and after, and its progress. Under etcd's default request limit
/// (1.5 MiB).
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

impl Cluster {
    /// Refuses new contents for a unit a running rollout holds (409).
    pub(crate) async fn refuse_if_rolling(&self, name: &UnitName) -> Result<(), ControlError> {
        let key = self.keys().rolling_unit(name);
        let got = self.store.get(&key).await.map_err(store_error)?;
        match got.kv {
            Some(kv) => Err(ControlError::Conflict(format!(
                "unit {name} is being rolled out by rollout {}: its contents change only through it until it ends \
                 (see flotilla rollout status {})",
                String::from_utf8_lossy(&kv.value),
                String::from_utf8_lossy(&kv.value)
            ))),
            None => Ok(()),
        }
    }

    /// Starts a rollout of `req`: see the module's documentation.
    pub(crate) async fn begin_rollout(&self, req: RolloutRequest) -> Result<Rollout, ControlError> {
        check_request(&req)?;
        let now = now_ms();
        let mut texts = BTreeMap::new();
        let mut units = Vec::new();
        let mut direct = Vec::new();
        let mut unit_options = None;
        for put in &req.units {
            if put.text.len() > MAX_UNIT_FILE_BYTES {
                return Err(ControlError::TooLarge {
                    what: format!("unit file of {}", put.name),
                    size: put.text.len() as u64,
                    limit: MAX_UNIT_FILE_BYTES as u64,
                    unit: "bytes",
                });
            }
            let Some((old, _)) = self.read_unit(&put.name).await? else {
                return Err(ControlError::NotFound {
                    what: format!("unit {} (a rollout changes units that exist)", put.name),
                });
            };
            let new = self.unit_facts(&put.name, &put.text, None).await?;
            unit_options.get_or_insert(new.rollout);
            if new.hash == old.hash {
                continue;
            }
            if old.desired_state != DesiredState::Launched {
                direct.push(put);
                continue;
            }
            let old_facts = self
                .unit_facts(&put.name, &old.text, Some(&old.hash))
                .await?;
            texts.insert(old.hash.clone(), old.text.clone());
            texts.insert(new.hash.clone(), put.text.clone());
            units.push(RolloutUnit {
                name: put.name.clone(),
                old_hash: old.hash,
                new_hash: new.hash,
                old_global: old_facts.global,
                new_global: new.global,
            });
        }
        let settings = req.settings.or(unit_options.unwrap_or_default()).resolve();
        let id = format!("{now:013}-{}", req.group);
        // A rollout left with no launched unit to restart is done.
        let state = if units.is_empty() {
            RolloutState::Succeeded
        } else {
            RolloutState::Running
        };
        let record = RolloutRecord {
            id: id.clone(),
            group: req.group.clone(),
            settings,
            units,
            texts,
            state,
            wave: 0,
            wave_started_ms: None,
            ready_since_ms: None,
            failure: None,
            reverted: false,
            created_ms: now,
            updated_ms: now,
        };
        let value = records::encode(&record);
        if value.len() > MAX_RECORD_BYTES {
            return Err(ControlError::TooLarge {
                what: format!("rollout {id} (the distinct contents of its units)"),
                size: value.len() as u64,
                limit: MAX_RECORD_BYTES as u64,
                unit: "bytes",
            });
        }
        // Everything that can refuse the request is checked before the
        // first write: a unit another rollout holds (409), the record's
        // size (413).
        for name in record
            .units
            .iter()
            .map(|u| &u.name)
            .chain(direct.iter().map(|p| &p.name))
        {
            self.refuse_if_rolling(name).await?;
        }
        // Units that do not run restart nothing: they change at once.
        for put in direct {
            let change = UnitPut {
                text: Some(put.text.clone()),
                replace: true,
                ..UnitPut::default()
            };
            crate::control::ControlPlane::put_unit(self, &put.name, change).await?;
        }
        let key = self.keys().rollout(&id);
        let running_key = self.keys().running_rollouts();
        for _ in 0..CAS_ATTEMPTS {
            let mut compares = vec![Compare::absent(&key)];
            let mut ops = vec![TxnOp::put(&key, value.clone())];
            if record.state == RolloutState::Running {
                for u in &record.units {
                    let lock = self.keys().rolling_unit(&u.name);
                    compares.push(Compare::absent(&lock));
                    ops.push(TxnOp::put(lock, id.as_bytes().to_vec()));
                }
                let (mut running, compare) = self.running_rollouts().await?;
                running.ids.push(id.clone());
                compares.push(compare);
                ops.push(TxnOp::put(&running_key, records::encode(&running)));
            }
            let resp = self
                .store
                .txn(Txn::new().when(compares).and_then(ops))
                .await
                .map_err(store_error)?;
            if resp.succeeded {
                if let Err(e) = self.prune_rollouts().await {
                    tracing::warn!("cannot drop old rollouts: {e}");
                }
                return self.view_of(&record, true).await;
            }
            // Another rollout took a unit (409), or another rollout
            // started or ended meanwhile: read again.
            for u in &record.units {
                self.refuse_if_rolling(&u.name).await?;
            }
        }
        Err(ControlError::Unavailable(format!(
            "rollout {id} could not be recorded while other rollouts kept starting and ending; try again"
        )))
    }

    /// The running rollouts' ids, and the compare that holds while they
    /// are unchanged.
    async fn running_rollouts(&self) -> Result<(RunningRollouts, Compare), ControlError> {
        let key = self.keys().running_rollouts();
        let got = self.store.get(&key).await.map_err(store_error)?;
        Ok(match got.kv {
            Some(kv) => (
                records::decode(&key, &kv.value).map_err(internal)?,
                Compare::mod_revision(&key, CompareOp::Equal, kv.mod_revision),
            ),
            None => (RunningRollouts::default(), Compare::absent(&key)),
        })
    }

    /// Every rollout kept, oldest first. Which units run their new
    /// contents is read for running rollouts; for finished ones it follows
    /// from how they ended.
    pub(crate) async fn rollouts(&self) -> Result<RolloutList, ControlError> {
        let mut rollouts = Vec::new();
        for record in self.rollout_records().await? {
            let live = record.state == RolloutState::Running;
            rollouts.push(self.view_of(&record, live).await?);
        }
        Ok(RolloutList { rollouts })
    }

    /// The rollout with id `name`, or the latest of the group `name`.
    pub(crate) async fn rollout(&self, name: &str) -> Result<Rollout, ControlError> {
        let key = self.keys().rollout(name);
        if let Some(kv) = self.store.get(&key).await.map_err(store_error)?.kv {
            let record: RolloutRecord = records::decode(&key, &kv.value).map_err(internal)?;
            return self.view_of(&record, true).await;
        }
        let latest = self
            .rollout_records()
            .await?
            .into_iter()
            .rfind(|r| r.group == name);
        match latest {
            Some(record) => self.view_of(&record, true).await,
            None => Err(ControlError::NotFound {
                what: format!("rollout {name} (by id or group)"),
            }),
        }
    }

    async fn rollout_records(&self) -> Result<Vec<RolloutRecord>, ControlError> {
        let resp = self
            .store
            .range(&self.keys().rollouts(), RangeOptions::default())
            .await
            .map_err(store_error)?;
        resp.kvs
            .iter()
            .map(|kv| records::decode(&kv.key, &kv.value).map_err(internal))
            .collect()
    }

    /// The view of `record`; with `live`, which units run their new
    /// contents is read from the machines' reports.
    async fn view_of(&self, record: &RolloutRecord, live: bool) -> Result<Rollout, ControlError> {
        let mut on_new = HashSet::new();
        if live {
            for u in &record.units {
                let states = self.unit_states(&u.name).await?;
                if unit_on_contents(&states, &u.new_hash) == OnContents::Runs {
                    on_new.insert(u.name.clone());
                }
            }
        } else {
            let written = record.written();
            for (i, u) in record.units.iter().enumerate() {
                let ended_new = match record.state {
                    RolloutState::Succeeded => true,
                    RolloutState::Running | RolloutState::Failed => {
                        !record.reverted && written.contains(&i)
                    }
                };
                if ended_new {
                    on_new.insert(u.name.clone());
                }
            }
        }
        Ok(record.view(|u| on_new.contains(&u.name)))
    }

    async fn unit_states(&self, unit: &UnitName) -> Result<Vec<UnitState>, ControlError> {
        let prefix = self.keys().unit_states(unit);
        let resp = self
            .store
            .range(&prefix, RangeOptions::default())
            .await
            .map_err(store_error)?;
        resp.kvs
            .iter()
            .map(|kv| records::decode(&kv.key, &kv.value).map_err(internal))
            .collect()
    }

    /// Drops the oldest finished rollouts past [`KEPT_FINISHED`].
    async fn prune_rollouts(&self) -> Result<(), ControlError> {
        let records = self.rollout_records().await?;
        let finished: Vec<&RolloutRecord> = records
            .iter()
            .filter(|r| r.state != RolloutState::Running)
            .collect();
        let extra = finished.len().saturating_sub(KEPT_FINISHED);
        if extra == 0 {
            return Ok(());
        }
        let ops: Vec<TxnOp> = finished[..extra]
            .iter()
            .map(|r| TxnOp::delete(self.keys().rollout(&r.id)))
            .collect();
        for chunk in ops.chunks(100) {
            self.store
                .txn(Txn::new().and_then(chunk.to_vec()))
                .await
                .map_err(store_error)?;
        }
        Ok(())
    }
}

/// Checks a request's shape before anything is read.
fn check_request(req: &RolloutRequest) -> Result<(), ControlError> {
    let bad = |m: String| Err(ControlError::InvalidRequest(m));
    let group_ok = !req.group.is_empty()
        && req.group.len() <= MAX_GROUP_LEN
        && req
            .group
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":_.@-".contains(c));
    if !group_ok {
        return bad(format!(
            "group {:?}: give 1 to {MAX_GROUP_LEN} of the characters a unit name may hold (letters, digits, :_.@-)",
            req.group
        ));
    }
    if req.units.is_empty() {
        return bad("a rollout needs at least one unit".to_owned());
    }
    if req.units.len() > MAX_ROLLOUT_UNITS {
        return Err(ControlError::TooLarge {
            what: format!("rollout of {}", req.group),
            size: req.units.len() as u64,
            limit: MAX_ROLLOUT_UNITS as u64,
            unit: "units",
        });
    }
    let mut seen = HashSet::new();
    for u in &req.units {
        if !seen.insert(&u.name) {
            return bad(format!("unit {} is named twice", u.name));
        }
        if u.name.is_template() {
            return bad(format!(
                "{} is a template: it does not run, so it is not rolled out; submit it, and roll out its instances",
                u.name
            ));
        }
    }
    req.settings
        .validate()
        .map_err(|e| ControlError::InvalidRequest(format!("settings: {e}")))
}
