//! A linearizability checker for histories of a key-value store, for the
//! fault tests of the replicated store (kill -9, partitions, `SIGSTOP` of
//! servers while clients run compare-and-swap updates).
//!
//! # What it checks
//!
//! A history is a set of [`Event`]s: one operation of one client on one key,
//! with the time it was called, the time it returned and what it returned.
//! The history is *linearizable* when every operation can be given a single
//! instant between its call and its return at which it takes effect, such
//! that the operations in the order of those instants are a legal run of the
//! model: each key an atomic register, absent at the start.
//!
//! # The model
//!
//! One register per key, holding an optional [`Value`] (`None`: absent):
//!
//! | operation | outcome | legal when | new value |
//! |---|---|---|---|
//! | [`Op::Read`] | [`Outcome::Read`]`(v)` | the value is `v` | unchanged |
//! | [`Op::Write`]`(v)` | [`Outcome::Written`] | always | `Some(v)` |
//! | [`Op::Cas`] | [`Outcome::Cas`]`(true)` | the value is `expected` | `Some(new)` |
//! | [`Op::Cas`] | [`Outcome::Cas`]`(false)` | the value is not `expected` | unchanged |
//! | [`Op::Delete`] | [`Outcome::Deleted`] | always | `None` |
//!
//! Linearizability is compositional (Herlihy and Wing, 1990, theorem 1): a
//! history is linearizable if and only if the sub-history of each key is.
//! The checker splits the history by key and checks the keys one by one,
//! in the order of their names. Transactions over several keys are beyond
//! this model: a history records operations on one key each (an etcd
//! compare-and-swap is a transaction comparing and writing the same key).
//!
//! # Unknown outcomes
//!
//! An operation that failed, timed out, or never returned
//! ([`Outcome::Unknown`], or `ret: None`) may have taken effect at any time
//! after its call, or never. As in Knossos, its return time is taken as
//! infinite and its result as unconstrained:
//! - a read with an unknown outcome constrains nothing and is dropped;
//! - a write or a delete with an unknown outcome sets the value if it is
//!   linearized; it may be linearized at any point after its call, and
//!   linearizing it after every other operation is the same as never;
//! - a compare-and-swap with an unknown outcome sets `new` if it is
//!   linearized when the value is `expected`, and changes nothing otherwise.
//!
//! Each such operation stays a candidate for every later point of the
//! search, which can make it exponential. Three reductions, each keeping
//! a linearization if there is one, spare most of that cost:
//! - values that no operation compares the register with (no read
//!   returned them, no compare-and-swap expected them) are made one, since
//!   the register behaves the same whichever of them it holds; writes of
//!   unknown outcome that nobody saw are then alike, and of alike
//!   operations of unknown outcome the search tries the earliest called;
//! - an operation of unknown outcome is not linearized where it would not
//!   change the value (it may as well come last);
//! - a configuration that differs from one already explored only by more
//!   operations of unknown outcome linearized is not explored.
//!
//! What is left, for instance many concurrent writes of unknown outcome
//! whose values are all read, is what the [`Budget`] is for. A violation
//! costs more to find than a linearization: the search must rule out every
//! configuration before it.
//!
//! # The algorithm
//!
//! The search of Wing and Gong ("Testing and verifying concurrent objects",
//! 1993) with the memoisation of Lowe ("Testing for linearizability", 2017):
//! the calls and returns of a key, in the order of their times (a call
//! before a return at the same time, so that such operations count as
//! concurrent), form a list. The search repeatedly linearizes a pending
//! operation whose call comes before the first return left in the list,
//! and backtracks when it reaches a return whose operation it could not
//! linearize. A configuration (the set of linearized operations, the
//! register's value) already seen is not explored again. This is the
//! algorithm of Knossos' `linear` checker and of porcupine. Its memory is
//! about the configurations explored times a bit per operation of the key.
//!
//! The budget counts configurations, not time, so that a test's verdict
//! does not depend on the machine's speed; each configuration costs at
//! most one pass over the key's list. It applies to each key.
//!
//! A [`Recorder`] builds a history from threads that call a store.

mod explain;
mod recorder;
mod search;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_generated;

pub use recorder::{Pending, Recorder};

use std::collections::{BTreeMap, HashMap, HashSet};

/// A value of a register. Tests write small unique values (a counter per
/// client does it), so that a read names the write it saw.
pub type Value = u64;

/// One operation of a client on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A read; what it returned is in [`Outcome::Read`].
    Read,
    /// Sets the value.
    Write(Value),
    /// Compare-and-swap: sets `new` only if the value is `expected`
    /// (`None`: absent).
    Cas { expected: Option<Value>, new: Value },
    /// Removes the value.
    Delete,
}

/// What an operation returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A read returned this value (`None`: absent).
    Read(Option<Value>),
    /// A write took effect.
    Written,
    /// A compare-and-swap compared (`true`: and swapped).
    Cas(bool),
    /// A delete took effect (whether or not there was a value).
    Deleted,
    /// The call failed or timed out: it may or may not have taken effect,
    /// at any time after its call.
    Unknown,
}

/// One operation of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub client: u64,
    pub key: String,
    pub op: Op,
    /// When it was called, in nanoseconds of a monotonic clock.
    pub call: u64,
    /// When it returned, on the same clock; `None`: it never returned (its
    /// outcome must then be [`Outcome::Unknown`]).
    pub ret: Option<u64>,
    pub outcome: Outcome,
}

/// How much work the search may do on one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The most configurations (set of linearized operations, value)
    /// explored on one key before giving up with [`Verdict::Unknown`].
    pub max_states: u64,
}

impl Budget {
    /// A budget of `max_states` configurations per key.
    pub fn states(max_states: u64) -> Budget {
        Budget { max_states }
    }
}

impl Default for Budget {
    /// A quarter of a million configurations per key: far more than a
    /// linearizable history of a few thousand operations needs (about one
    /// per operation), and enough to find the violations of the generated
    /// histories of a thousand operations per key, a twentieth of them of
    /// unknown outcome. Each configuration keeps a bit per operation of
    /// the key, and some bookkeeping: spending it all on a key of a
    /// thousand operations takes about 25 MB.
    fn default() -> Budget {
        Budget::states(250_000)
    }
}

/// The result of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every key's sub-history is linearizable.
    Linearizable,
    /// The sub-history of `key` is not linearizable (the first such key
    /// in the order of names).
    NotLinearizable {
        key: String,
        /// The longest linearizable prefix found and the operations that
        /// could not be placed after it.
        explanation: String,
    },
    /// The search of `key` exceeded its budget of states before deciding
    /// (and no other key was found not linearizable).
    Unknown { key: String },
    /// An event of `key` is malformed (an outcome that does not fit its
    /// operation, a return before its call, an outcome without a return).
    Invalid { key: String, reason: String },
}

impl Verdict {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

/// For a test's failure message: `assert!(v.is_linearizable(), "{v}")`.
impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Linearizable => write!(f, "the history is linearizable"),
            Verdict::NotLinearizable { explanation, .. } => {
                write!(f, "the history is not linearizable: {explanation}")
            }
            Verdict::Unknown { key } => write!(
                f,
                "the search of key {key:?} exceeded its budget: raise it, or record a shorter history"
            ),
            Verdict::Invalid { key, reason } => {
                write!(f, "the history of key {key:?} is malformed: {reason}")
            }
        }
    }
}

/// What a check explored, to assert on the cost of a search.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// The keys checked.
    pub keys: usize,
    /// The operations checked (unknown reads left out).
    pub operations: usize,
    /// The configurations explored over all keys.
    pub states: u64,
    /// The most configurations explored on one key.
    pub max_states_per_key: u64,
}

/// Checks that `history` is linearizable, key by key (see the module's
/// documentation). A definite violation on any key wins over a key whose
/// search ran out of budget.
pub fn check(history: &[Event], budget: Budget) -> Verdict {
    check_with_stats(history, budget).0
}

/// As [`check`], with what the search explored.
pub fn check_with_stats(history: &[Event], budget: Budget) -> (Verdict, Stats) {
    let mut by_key: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for event in history {
        by_key.entry(event.key.as_str()).or_default().push(event);
    }
    let mut stats = Stats {
        keys: by_key.len(),
        ..Stats::default()
    };
    let mut over_budget = None;
    for (key, events) in by_key {
        let ops = match prepare(&events) {
            Ok(ops) => ops,
            Err(reason) => {
                let key = key.to_owned();
                return (Verdict::Invalid { key, reason }, stats);
            }
        };
        stats.operations += ops.len();
        let (found, states) = search::search(&ops, budget.max_states);
        stats.states += states;
        stats.max_states_per_key = stats.max_states_per_key.max(states);
        match found {
            search::Found::Linearizable => {}
            search::Found::Stuck { prefix } => {
                let explanation = explain::explain(key, &ops, &prefix);
                let key = key.to_owned();
                return (Verdict::NotLinearizable { key, explanation }, stats);
            }
            search::Found::OverBudget => {
                over_budget.get_or_insert_with(|| key.to_owned());
            }
        }
    }
    match over_budget {
        Some(key) => (Verdict::Unknown { key }, stats),
        None => (Verdict::Linearizable, stats),
    }
}

/// What an operation does to the register, as the search applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Step {
    /// Legal when the value is this one.
    Read(Option<Value>),
    /// Sets this value (a write, a delete), whether or not it is known to
    /// have taken effect.
    Set(Option<Value>),
    /// A compare-and-swap that answered: legal when the comparison came
    /// out as `swapped` says.
    Cas {
        expected: Option<Value>,
        new: Value,
        swapped: bool,
    },
    /// A compare-and-swap with an unknown outcome: swaps if the value is
    /// `expected`, whenever it is linearized.
    MaybeCas { expected: Option<Value>, new: Value },
}

impl Step {
    /// The value after this step from `value`, or `None` if the step is
    /// not legal there.
    fn apply(self, value: Option<Value>) -> Option<Option<Value>> {
        match self {
            Step::Read(seen) => (seen == value).then_some(value),
            Step::Set(to) => Some(to),
            Step::Cas {
                expected,
                new,
                swapped,
            } => match (value == expected, swapped) {
                (true, true) => Some(Some(new)),
                (false, false) => Some(value),
                _ => None,
            },
            Step::MaybeCas { expected, new } => {
                Some(if value == expected { Some(new) } else { value })
            }
        }
    }
}

/// An operation of one key, ready for the search.
#[derive(Debug, Clone)]
struct KeyOp<'a> {
    event: &'a Event,
    /// What it does, with the values nothing observes made one (see
    /// [`abstracted`]): what the search applies.
    step: Step,
    /// What it does, with its own values: what an explanation shows.
    exact: Step,
    call: u64,
    /// `None`: an unknown outcome, which returns at infinity.
    ret: Option<u64>,
    /// For an unknown outcome: the operation of unknown outcome with the
    /// same step called last before it, which the search linearizes
    /// first (see [`search`]).
    twin: Option<usize>,
}

/// The operations of one key's events, unknown reads left out; an error
/// for a malformed event.
fn prepare<'a>(events: &[&'a Event]) -> Result<Vec<KeyOp<'a>>, String> {
    let mut ops = Vec::with_capacity(events.len());
    for &event in events {
        let step = match (&event.op, &event.outcome, event.ret) {
            (_, _, Some(ret)) if ret < event.call => {
                return Err(format!(
                    "{} returned before it was called",
                    explain::describe(event)
                ));
            }
            (op, Outcome::Unknown, _) => match unknown_step(op) {
                Some(step) => step,
                None => continue,
            },
            (_, _, None) => {
                return Err(format!(
                    "{} has an outcome ({:?}) but no return time",
                    explain::describe(event),
                    event.outcome
                ));
            }
            (Op::Read, Outcome::Read(seen), _) => Step::Read(*seen),
            (Op::Write(v), Outcome::Written, _) => Step::Set(Some(*v)),
            (Op::Delete, Outcome::Deleted, _) => Step::Set(None),
            (Op::Cas { expected, new }, Outcome::Cas(swapped), _) => Step::Cas {
                expected: *expected,
                new: *new,
                swapped: *swapped,
            },
            (op, outcome, _) => {
                return Err(format!(
                    "{} has the outcome {outcome:?}, which a {op:?} cannot have",
                    explain::describe(event)
                ));
            }
        };
        let ret = match event.outcome {
            Outcome::Unknown => None,
            _ => event.ret,
        };
        ops.push(KeyOp {
            event,
            step,
            exact: step,
            call: event.call,
            ret,
            twin: None,
        });
    }
    let observed = observed(&ops);
    // A value no operation observes, to stand for all of those (one
    // exists: there are fewer operations than values).
    let opaque = (0..=Value::MAX)
        .rev()
        .find(|v| !observed.contains(v))
        .unwrap_or(Value::MAX);
    for op in &mut ops {
        op.step = abstracted(op.exact, &observed, opaque);
    }
    let mut unknown: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].ret.is_none()).collect();
    unknown.sort_by_key(|&i| (ops[i].call, i));
    let mut last_of_step = HashMap::new();
    for i in unknown {
        ops[i].twin = last_of_step.insert(ops[i].step, i);
    }
    Ok(ops)
}

/// The values some operation compares the register with: those a read
/// returned, those a compare-and-swap expected.
fn observed(ops: &[KeyOp]) -> HashSet<Value> {
    ops.iter()
        .filter_map(|op| match op.exact {
            Step::Read(seen) => seen,
            Step::Cas { expected, .. } | Step::MaybeCas { expected, .. } => expected,
            Step::Set(_) => None,
        })
        .collect()
}

/// `step` with every value that no operation observes replaced by
/// `opaque`. Operations only compare the register with observed values
/// (or absence), so two registers holding unobserved values behave the
/// same: making them one value lets the search's cache merge their
/// configurations, and makes writes of unknown outcome that nobody saw
/// interchangeable.
fn abstracted(step: Step, observed: &HashSet<Value>, opaque: Value) -> Step {
    let map = |v: Value| if observed.contains(&v) { v } else { opaque };
    match step {
        Step::Read(_) | Step::Set(None) => step,
        Step::Set(Some(v)) => Step::Set(Some(map(v))),
        Step::Cas {
            expected,
            new,
            swapped,
        } => Step::Cas {
            expected,
            new: map(new),
            swapped,
        },
        Step::MaybeCas { expected, new } => Step::MaybeCas {
            expected,
            new: map(new),
        },
    }
}

/// The step of an operation whose outcome is unknown; `None` for a read,
/// which constrains nothing then.
fn unknown_step(op: &Op) -> Option<Step> {
    match op {
        Op::Read => None,
        Op::Write(v) => Some(Step::Set(Some(*v))),
        Op::Delete => Some(Step::Set(None)),
        Op::Cas { expected, new } => Some(Step::MaybeCas {
            expected: *expected,
            new: *new,
        }),
    }
}
