//! Listings of units, states and machines, a page at a time.
//!
//! A page is bounded twice: by its `limit` (at most
//! [`MAX_PAGE`](crate::control::MAX_PAGE) items) and by bytes: it stops
//! early, with a `nextPageToken`, when the JSON of the next item would take
//! it past [`Quotas::page_bytes`](crate::quota::Quotas::page_bytes). The
//! store is read a few keys at a time, so a request holds at most about a
//! page's worth of values, whatever the size of the units and the limit
//! asked for. A page always holds at least one item, so that it moves on.
//!
//! States (alone, and joined to their units) are shown as the servers
//! know them: those of a machine whose heartbeat is overdue say so
//! (`unknown`, see `liveness.rs`) rather than repeat its last report.
//!
//! The page token is the last key of the previous page without its
//! prefix: a unit name, a machine id, or `unit/machine` for states. A
//! token that is not one of these is refused rather than handed to the
//! store.

use flotilla_proto::wire::{MachinePage, MachineResource, StatePage, Unit, UnitOption, UnitPage};
use flotilla_proto::{Capacity, DesiredState, Machine, MachineId, UnitName, UnitState};
use serde::Serialize;

use crate::cluster::{Cluster, internal, store_error, to_wire_revision};
use crate::control::{ControlError, MAX_PAGE, PageRequest, StateFilter};
use crate::keys::Key;
use crate::liveness;
use crate::parsed::Parsed;
use crate::records::{self, SchedRecord, UnitRecord};
use flotilla_store::{KeyValue, RangeOptions, RangeResponse, TxnOpResponse};

/// The default page size of listings.
const DEFAULT_PAGE: usize = 100;

/// Units read from the store at a time while filling a page: with unit
/// records of at most ~256 KiB, a few MiB held at once.
const UNIT_CHUNK: usize = 16;

/// Machines or states read from the store at a time.
const SMALL_CHUNK: usize = 100;

/// A page being filled: at most `limit` items and, after the first, at
/// most `budget` bytes of JSON.
struct Fill {
    limit: usize,
    budget: usize,
    items: usize,
    bytes: usize,
}

impl Fill {
    fn new(page: &PageRequest, budget: usize) -> Fill {
        Fill {
            limit: page_limit(page),
            budget,
            items: 0,
            bytes: 0,
        }
    }

    /// Whether `item` still fits; counts it if so.
    fn admit(&mut self, item: &impl Serialize) -> bool {
        let size = encoded_len(item);
        if self.items > 0 && self.bytes.saturating_add(size) > self.budget {
            return false;
        }
        self.items += 1;
        self.bytes = self.bytes.saturating_add(size);
        true
    }

    fn full(&self) -> bool {
        self.items >= self.limit
    }

    /// How many more keys to read, at most `chunk`.
    fn want(&self, chunk: usize) -> usize {
        self.limit.saturating_sub(self.items).clamp(1, chunk)
    }
}

impl Cluster {
    /// `GET /v1/units`: units in name order.
    pub(crate) async fn units_page(&self, page: PageRequest) -> Result<UnitPage, ControlError> {
        let prefix = self.keys().units();
        let start = match &page.token {
            Some(token) => Some(UnitName::parse(token).map_err(|_| bad_token())?.to_string()),
            None => None,
        };
        let mut fill = Fill::new(&page, self.quotas().page_bytes);
        let mut units = Vec::new();
        let mut after = start.map(|s| format!("{prefix}{s}"));
        let mut next_page_token = None;
        'read: loop {
            let range = self
                .chunk(&prefix, after.as_deref(), fill.want(UNIT_CHUNK))
                .await?;
            let read = range.kvs.len();
            let last_key = range.kvs.last().map(|kv| kv.key.clone());
            let mut records = Vec::with_capacity(read);
            for kv in range.kvs {
                if let Some(Key::Unit(name)) = self.keys().parse(&kv.key) {
                    let record: UnitRecord =
                        records::decode(&kv.key, &kv.value).map_err(internal)?;
                    records.push((name, record, kv));
                }
            }
            let views = self.unit_views(records).await?;
            let viewed = views.len();
            for (i, unit) in views.into_iter().enumerate() {
                let more_here = i + 1 < viewed;
                if !fill.admit(&unit) {
                    next_page_token = units.last().map(|u: &Unit| u.name.clone());
                    break 'read;
                }
                units.push(unit);
                if fill.full() {
                    if more_here || range.more {
                        next_page_token = units.last().map(|u| u.name.clone());
                    }
                    break 'read;
                }
            }
            if !range.more || read == 0 {
                break;
            }
            after = last_key;
        }
        Ok(UnitPage {
            units,
            next_page_token,
        })
    }

    /// Keys under `prefix` after `after`, at most `limit` of them.
    async fn chunk(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<RangeResponse, ControlError> {
        let mut options = RangeOptions::default().limit(limit);
        if let Some(a) = after {
            options = options.start_after(a);
        }
        self.store.range(prefix, options).await.map_err(store_error)
    }

    /// The units as the API shows them, joined with their placement and
    /// state (read together, in as few transactions as the store allows),
    /// their files parsed off the async threads.
    pub(crate) async fn unit_views(
        &self,
        records: Vec<(UnitName, UnitRecord, KeyValue)>,
    ) -> Result<Vec<Unit>, ControlError> {
        let per_txn = (self.store.limits().max_txn_ops / 2).max(1);
        let mut joined: Vec<(Option<SchedRecord>, Vec<UnitState>)> =
            Vec::with_capacity(records.len());
        for group in records.chunks(per_txn) {
            let ops = group.iter().flat_map(|(name, _, _)| {
                [
                    flotilla_store::TxnOp::get(self.keys().sched(name)),
                    flotilla_store::TxnOp::range(
                        self.keys().unit_states(name),
                        RangeOptions::default(),
                    ),
                ]
            });
            let resp = self
                .store
                .txn(flotilla_store::Txn::new().and_then(ops))
                .await
                .map_err(store_error)?;
            let mut responses = resp.responses.into_iter();
            for _ in group {
                let sched = match responses.next() {
                    Some(TxnOpResponse::Get(g)) => match g.kv {
                        Some(kv) => Some(records::decode(&kv.key, &kv.value).map_err(internal)?),
                        None => None,
                    },
                    other => return Err(internal(format!("unexpected answer {other:?}"))),
                };
                let states = match responses.next() {
                    Some(TxnOpResponse::Range(range)) => range
                        .kvs
                        .iter()
                        .map(|kv| records::decode(&kv.key, &kv.value).map_err(internal))
                        .collect::<Result<Vec<UnitState>, _>>()?,
                    other => return Err(internal(format!("unexpected answer {other:?}"))),
                };
                joined.push((sched, states));
            }
        }
        let machines: Vec<MachineId> = joined
            .iter()
            .flat_map(|(_, states)| states.iter().map(|s| s.machine.clone()))
            .collect();
        let verdicts = self
            .liveness
            .verdicts(&*self.store, self.keys(), &machines)
            .await;
        for (_, states) in &mut joined {
            for state in states {
                if let Some(v) = verdicts.get(&state.machine) {
                    liveness::mark(state, *v);
                }
            }
        }
        let mut units = Vec::with_capacity(records.len());
        for ((name, record, kv), (sched, states)) in records.into_iter().zip(joined) {
            let parsed = self.parsed.get(&name, &record.hash, &record.text).await?;
            units.push(unit_resource(&name, record, &kv, sched, &states, &parsed));
        }
        Ok(units)
    }

    /// `GET /v1/state`: observed states in unit, then machine order.
    pub(crate) async fn states_page(
        &self,
        filter: StateFilter,
        page: PageRequest,
    ) -> Result<StatePage, ControlError> {
        let all = self.keys().states();
        let prefix = match &filter.unit {
            Some(unit) => self.keys().unit_states(unit),
            None => all.clone(),
        };
        if let Some(token) = &page.token {
            let valid = token
                .split_once('/')
                .is_some_and(|(u, m)| UnitName::parse(u).is_ok() && MachineId::parse(m).is_ok());
            if !valid {
                return Err(bad_token());
            }
        }
        let mut fill = Fill::new(&page, self.quotas().page_bytes);
        let mut after = page.token.as_ref().map(|t| format!("{all}{t}"));
        let mut states: Vec<UnitState> = Vec::new();
        let mut next_page_token = None;
        // With a machine filter a chunk of keys may hold few matches: read
        // on until the page is full or the keys end.
        'read: loop {
            let range = self
                .chunk(&prefix, after.as_deref(), fill.want(SMALL_CHUNK))
                .await?;
            for (i, kv) in range.kvs.iter().enumerate() {
                let Some(Key::State(_, machine)) = self.keys().parse(&kv.key) else {
                    continue;
                };
                if filter.machine.as_ref().is_some_and(|m| *m != machine) {
                    continue;
                }
                let state: UnitState = records::decode(&kv.key, &kv.value).map_err(internal)?;
                if !fill.admit(&state) {
                    next_page_token = states.last().map(|s| format!("{}/{}", s.unit, s.machine));
                    break 'read;
                }
                states.push(state);
                if fill.full() {
                    if i + 1 < range.kvs.len() || range.more {
                        next_page_token = kv.key.strip_prefix(&all).map(str::to_owned);
                    }
                    break 'read;
                }
            }
            if !range.more || range.kvs.is_empty() {
                break;
            }
            after = range.kvs.last().map(|kv| kv.key.clone());
        }
        let machines: Vec<MachineId> = states.iter().map(|s| s.machine.clone()).collect();
        let verdicts = self
            .liveness
            .verdicts(&*self.store, self.keys(), &machines)
            .await;
        for state in &mut states {
            if let Some(v) = verdicts.get(&state.machine) {
                liveness::mark(state, *v);
            }
        }
        Ok(StatePage {
            states,
            next_page_token,
        })
    }

    /// `GET /v1/machines`: live machines in id order.
    pub(crate) async fn machines_page(
        &self,
        page: PageRequest,
    ) -> Result<MachinePage, ControlError> {
        let prefix = self.keys().machines();
        if let Some(token) = &page.token {
            MachineId::parse(token).map_err(|_| bad_token())?;
        }
        let mut fill = Fill::new(&page, self.quotas().page_bytes);
        let mut after = page.token.as_ref().map(|t| format!("{prefix}{t}"));
        let mut machines: Vec<MachineResource> = Vec::new();
        let mut next_page_token = None;
        'read: loop {
            let range = self
                .chunk(&prefix, after.as_deref(), fill.want(SMALL_CHUNK))
                .await?;
            for (i, kv) in range.kvs.iter().enumerate() {
                let machine: Machine = records::decode(&kv.key, &kv.value).map_err(internal)?;
                let resource = self.machine_resource(machine).await?;
                if !fill.admit(&resource) {
                    next_page_token = machines.last().map(|m| m.machine.id.to_string());
                    break 'read;
                }
                machines.push(resource);
                if fill.full() {
                    if i + 1 < range.kvs.len() || range.more {
                        next_page_token = machines.last().map(|m| m.machine.id.to_string());
                    }
                    break 'read;
                }
            }
            if !range.more || range.kvs.is_empty() {
                break;
            }
            after = range.kvs.last().map(|kv| kv.key.clone());
        }
        Ok(MachinePage {
            machines,
            next_page_token,
        })
    }

    /// The units placed on machine `id`.
    async fn assigned_units(&self, id: &MachineId) -> Result<Vec<UnitName>, ControlError> {
        let prefix = self.keys().machine_assignments(id);
        let range = self
            .store
            .range(&prefix, RangeOptions::default())
            .await
            .map_err(store_error)?;
        Ok(range
            .kvs
            .iter()
            .filter_map(|kv| match self.keys().parse(&kv.key) {
                Some(Key::Assignment(_, unit)) => Some(unit),
                _ => None,
            })
            .collect())
    }

    /// A machine as the API shows it, with the resources its units reserve.
    pub(crate) async fn machine_resource(
        &self,
        machine: Machine,
    ) -> Result<MachineResource, ControlError> {
        let units = self.assigned_units(&machine.id).await?;
        let mut used = Capacity::default();
        for unit in &units {
            if let Some((record, _)) = self.read_unit(unit).await? {
                let parsed = self.parsed.get(unit, &record.hash, &record.text).await?;
                if let Some((_, r)) = &parsed.checked {
                    // Saturating: a sum past u64::MAX is more than any
                    // machine has, and shows as the most it can.
                    used.cpu_millis = used.cpu_millis.saturating_add(r.cpu_millis.unwrap_or(0));
                    used.memory_bytes = used
                        .memory_bytes
                        .saturating_add(r.memory_bytes.unwrap_or(0));
                }
            }
        }
        Ok(MachineResource {
            primary_ip: machine.addresses.first().cloned(),
            machine,
            used,
            units: units.len() as u64,
        })
    }
}

fn bad_token() -> ControlError {
    ControlError::InvalidRequest(
        "nextPageToken is not a token this listing gave; start again without it".into(),
    )
}

fn page_limit(page: &PageRequest) -> usize {
    page.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE)
}

/// The bytes of `value`'s JSON, without keeping it.
fn encoded_len(value: &impl Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing into a counter cannot fail, nor can these plain structs.
    let _ = serde_json::to_writer(&mut count, value);
    // And the comma between items.
    count.0 + 1
}

/// Joins a unit's record with its placement, reported state and parsed
/// file.
fn unit_resource(
    name: &UnitName,
    record: UnitRecord,
    kv: &KeyValue,
    sched: Option<SchedRecord>,
    states: &[UnitState],
    parsed: &Parsed,
) -> Unit {
    let machine_id = sched.as_ref().and_then(|s| s.machine.clone());
    // A Global unit has no one machine: it is launched once a machine runs
    // it, loaded once a machine reports it.
    let running = |s: &&UnitState| matches!(s.active_state.as_str(), "active" | "reloading");
    let current_state = if name.is_template() {
        None
    } else if parsed.global {
        Some(if states.iter().any(|s| running(&s)) {
            DesiredState::Launched
        } else if states.is_empty() {
            DesiredState::Inactive
        } else {
            DesiredState::Loaded
        })
    } else {
        Some(match &machine_id {
            None => DesiredState::Inactive,
            Some(m) => {
                if states.iter().any(|s| &s.machine == m && running(&s)) {
                    DesiredState::Launched
                } else {
                    DesiredState::Loaded
                }
            }
        })
    };
    let unscheduled_reason = if record.desired_state.is_scheduled() && machine_id.is_none() {
        sched.and_then(|s| s.reason)
    } else {
        None
    };
    let options: Vec<UnitOption> = parsed.options.clone();
    Unit {
        name: name.to_string(),
        options,
        text: record.text,
        hash: record.hash,
        desired_state: record.desired_state,
        current_state,
        machine_id,
        unscheduled_reason,
        revision: to_wire_revision(kv.mod_revision),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_stops_at_its_budget_but_takes_one_item() {
        let page = PageRequest {
            token: None,
            limit: Some(10),
        };
        let big = "x".repeat(100);
        let mut fill = Fill::new(&page, 150);
        assert!(fill.admit(&big));
        assert!(!fill.admit(&big), "a second item passed the budget");
        let mut fill = Fill::new(&page, 10);
        assert!(fill.admit(&big), "the first item is always taken");
        let mut fill = Fill::new(&page, 2000);
        for _ in 0..9 {
            assert!(fill.admit(&big));
        }
        assert!(fill.admit(&big));
        assert!(fill.full());
    }

    #[test]
    fn encoded_lengths_are_json_lengths() {
        let value = serde_json::json!({"a": "b\u{1}"});
        assert_eq!(encoded_len(&value), value.to_string().len() + 1);
    }
}
