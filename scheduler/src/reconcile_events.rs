//! What the leader's decisions mean for the cluster's history
//! ([`crate::events`]): a unit placed, moved (with the reason it left),
//! unplaced, or unschedulable.
//!
//! The events come from the scheduling records (`sched/<unit>`) as each
//! committed batch wrote them, against the records those writes replaced
//! (the puts' answers carry them): a unit whose record did not change
//! (a new leader deciding what its predecessor did, or the same
//! unschedulable reason again) makes no event, and no extra read is made.

use std::collections::HashMap;

use flotilla_proto::event::{Event, EventKind};
use flotilla_proto::{MachineId, UnitName};

use crate::keys::Keys;
use crate::placement::{Decision, UnassignReason};
use crate::records::{self, SchedRecord};
use flotilla_store::{TxnOp, TxnOpResponse};

/// What one batch decided about one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    unit: UnitName,
    /// The machine it left, and why.
    from: Option<(MachineId, UnassignReason)>,
    /// Why no machine can take it, when the batch says so.
    unschedulable: Option<String>,
}

/// Each unit's decisions in a batch, in the order the units first appear.
pub(crate) fn outcomes(decisions: &[Decision]) -> Vec<Outcome> {
    let mut order: Vec<Outcome> = Vec::new();
    let mut at: HashMap<UnitName, usize> = HashMap::new();
    for d in decisions {
        let i = *at.entry(d.unit().clone()).or_insert_with(|| {
            order.push(Outcome {
                unit: d.unit().clone(),
                from: None,
                unschedulable: None,
            });
            order.len() - 1
        });
        let outcome = &mut order[i];
        match d {
            Decision::Assign { .. } => {}
            Decision::Unassign {
                machine, reason, ..
            } => {
                // A second assignment going, or a removed unit's, is no
                // news: the unit stays where it is, or is gone.
                if !matches!(reason, UnassignReason::Duplicate | UnassignReason::Removed)
                    && outcome.from.is_none()
                {
                    outcome.from = Some((machine.clone(), reason.clone()));
                }
            }
            Decision::Unschedulable { reason, .. } => {
                outcome.unschedulable = Some(reason.clone());
            }
        }
    }
    order
}

/// The events of a committed batch: `ops` as committed, `responses` their
/// answers (one each, in order).
pub(crate) fn events(
    keys: &Keys,
    outcomes: &[Outcome],
    ops: &[TxnOp],
    responses: &[TxnOpResponse],
    at_ms: u64,
) -> Vec<Event> {
    let mut sched_at: HashMap<&str, usize> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        if let TxnOp::Put { key, .. } | TxnOp::Delete { key } = op {
            sched_at.insert(key.as_str(), i);
        }
    }
    let mut out = Vec::new();
    for o in outcomes {
        let key = keys.sched(&o.unit);
        let Some(&i) = sched_at.get(key.as_str()) else {
            continue;
        };
        let new: Option<SchedRecord> = match &ops[i] {
            TxnOp::Put { value, .. } => records::decode(&key, value).ok(),
            _ => None,
        };
        let prev: Option<SchedRecord> = match responses.get(i) {
            Some(TxnOpResponse::Put(put)) => put.prev.as_ref(),
            Some(TxnOpResponse::Delete(delete)) => delete.deleted.first(),
            _ => None,
        }
        .and_then(|kv| records::decode(&kv.key, &kv.value).ok());
        let was_on = prev.as_ref().and_then(|p| p.machine.as_ref());
        let event = |kind| Event::new(kind, at_ms).unit(&o.unit);
        match new.as_ref().and_then(|n| n.machine.as_ref()) {
            Some(on) => {
                if was_on == Some(on) {
                    continue;
                }
                out.push(match (&o.from, was_on) {
                    (Some((from, why)), _) => event(EventKind::UnitMoved)
                        .machine(on)
                        .from_machine(from)
                        .detail(why.to_string()),
                    (None, Some(from)) => {
                        event(EventKind::UnitMoved).machine(on).from_machine(from)
                    }
                    (None, None) => event(EventKind::UnitPlaced).machine(on),
                });
            }
            None => {
                if let Some((from, why)) = &o.from {
                    out.push(
                        event(EventKind::UnitUnplaced)
                            .from_machine(from)
                            .detail(why.to_string()),
                    );
                }
                if let Some(reason) = &o.unschedulable
                    && prev.as_ref().and_then(|p| p.reason.as_ref()) != Some(reason)
                {
                    out.push(event(EventKind::UnitUnschedulable).detail(reason.clone()));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use flotilla_store::{KeyValue, PutResponse};

    use super::*;

    fn unit(s: &str) -> UnitName {
        UnitName::parse(s).unwrap()
    }

    fn machine(n: u8) -> MachineId {
        MachineId::parse(&format!("{n:02x}").repeat(16)).unwrap()
    }

    fn sched(machine: Option<MachineId>, reason: Option<&str>) -> SchedRecord {
        SchedRecord {
            machine,
            reason: reason.map(str::to_owned),
        }
    }

    /// An event's kind, machine, machine left and detail.
    type Seen = (
        EventKind,
        Option<MachineId>,
        Option<MachineId>,
        Option<String>,
    );

    /// The events of one sched write of `web.service` from `prev` to
    /// `new` after `decisions`.
    fn after(
        decisions: &[Decision],
        prev: Option<SchedRecord>,
        new: Option<SchedRecord>,
    ) -> Vec<Seen> {
        let keys = Keys::default();
        let key = keys.sched(&unit("web.service"));
        let op = match &new {
            Some(n) => TxnOp::put(key.clone(), records::encode(n)),
            None => TxnOp::delete(key.clone()),
        };
        let prev_kv = prev.map(|p| KeyValue {
            key: key.clone(),
            value: records::encode(&p).into(),
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            lease: None,
        });
        let response = match &new {
            Some(_) => TxnOpResponse::Put(PutResponse {
                revision: 2,
                prev: prev_kv,
            }),
            None => TxnOpResponse::Delete(flotilla_store::DeleteResponse {
                revision: 2,
                deleted: prev_kv.into_iter().collect(),
            }),
        };
        events(&keys, &outcomes(decisions), &[op], &[response], 7)
            .into_iter()
            .map(|e| (e.kind, e.machine, e.from_machine, e.detail))
            .collect()
    }

    fn assign(m: u8) -> Decision {
        Decision::Assign {
            unit: unit("web.service"),
            machine: machine(m),
        }
    }

    fn unassign(m: u8, reason: UnassignReason) -> Decision {
        Decision::Unassign {
            unit: unit("web.service"),
            machine: machine(m),
            reason,
        }
    }

    fn unschedulable(reason: &str) -> Decision {
        Decision::Unschedulable {
            unit: unit("web.service"),
            reason: reason.into(),
        }
    }

    #[test]
    fn placed_moved_and_echoes() {
        assert_eq!(
            after(&[assign(1)], None, Some(sched(Some(machine(1)), None))),
            [(EventKind::UnitPlaced, Some(machine(1)), None, None)]
        );
        // A new leader writing the same placement again: nothing.
        assert_eq!(
            after(
                &[assign(1)],
                Some(sched(Some(machine(1)), None)),
                Some(sched(Some(machine(1)), None))
            ),
            []
        );
        assert_eq!(
            after(
                &[unassign(1, UnassignReason::MachineGone), assign(2)],
                Some(sched(Some(machine(1)), None)),
                Some(sched(Some(machine(2)), None))
            ),
            [(
                EventKind::UnitMoved,
                Some(machine(2)),
                Some(machine(1)),
                Some("its machine left the cluster".into())
            )]
        );
        // Placed after waiting unschedulable: placed.
        assert_eq!(
            after(
                &[assign(3)],
                Some(sched(None, Some("no machine"))),
                Some(sched(Some(machine(3)), None))
            ),
            [(EventKind::UnitPlaced, Some(machine(3)), None, None)]
        );
    }

    #[test]
    fn unschedulable_only_when_the_reason_changes() {
        let none_fit = "no machine has room";
        assert_eq!(
            after(
                &[unschedulable(none_fit)],
                None,
                Some(sched(None, Some(none_fit)))
            ),
            [(
                EventKind::UnitUnschedulable,
                None,
                None,
                Some(none_fit.into())
            )]
        );
        assert_eq!(
            after(
                &[unschedulable(none_fit)],
                Some(sched(None, Some(none_fit))),
                Some(sched(None, Some(none_fit)))
            ),
            []
        );
        // Its machine gone and nowhere to go: unplaced, then why.
        assert_eq!(
            after(
                &[
                    unassign(1, UnassignReason::MachineGone),
                    unschedulable(none_fit)
                ],
                Some(sched(Some(machine(1)), None)),
                Some(sched(None, Some(none_fit)))
            ),
            [
                (
                    EventKind::UnitUnplaced,
                    None,
                    Some(machine(1)),
                    Some("its machine left the cluster".into())
                ),
                (
                    EventKind::UnitUnschedulable,
                    None,
                    None,
                    Some(none_fit.into())
                )
            ]
        );
    }

    #[test]
    fn unloaded_units_are_unplaced_and_removed_ones_make_nothing() {
        assert_eq!(
            after(
                &[unassign(1, UnassignReason::Inactive)],
                Some(sched(Some(machine(1)), None)),
                None
            ),
            [(
                EventKind::UnitUnplaced,
                None,
                Some(machine(1)),
                Some("its desired state is inactive".into())
            )]
        );
        assert_eq!(
            after(
                &[unassign(1, UnassignReason::Removed)],
                Some(sched(Some(machine(1)), None)),
                None
            ),
            []
        );
    }
}
