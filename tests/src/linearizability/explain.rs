//! Why a key's history is not linearizable, in words: the longest
//! linearizable prefix the search found, and the operations that could not
//! be placed after it.

use std::fmt::Write as _;

use super::{Event, KeyOp, Op, Outcome, Step, Value};

/// How many operations of the prefix (its end) and candidates to show.
const SHOWN: usize = 12;

/// A register value in words.
fn value(v: Option<Value>) -> String {
    match v {
        Some(v) => v.to_string(),
        None => "absent".into(),
    }
}

/// One event in words, e.g. `client 2: cas 4 -> 7 swapped (called at 100
/// ns, returned at 250 ns)`.
pub(super) fn describe(event: &Event) -> String {
    let op = match &event.op {
        Op::Read => "read".to_owned(),
        Op::Write(v) => format!("write {v}"),
        Op::Cas { expected, new } => format!("cas {} -> {new}", value(*expected)),
        Op::Delete => "delete".to_owned(),
    };
    let outcome = match &event.outcome {
        Outcome::Read(v) => format!("returned {}", value(*v)),
        Outcome::Written | Outcome::Deleted => "done".to_owned(),
        Outcome::Cas(true) => "swapped".to_owned(),
        Outcome::Cas(false) => "not swapped".to_owned(),
        Outcome::Unknown => "outcome unknown".to_owned(),
    };
    let times = match event.ret {
        Some(ret) => format!("called at {} ns, returned at {ret} ns", event.call),
        None => format!("called at {} ns, never returned", event.call),
    };
    format!("client {}: {op}, {outcome} ({times})", event.client)
}

/// Why `step` cannot be placed when the register holds `v`, or `None` if
/// it can.
fn misfit(step: Step, v: Option<Value>) -> Option<String> {
    if step.apply(v).is_some() {
        return None;
    }
    Some(match step {
        Step::Read(seen) => format!("it read {}, but the value was {}", value(seen), value(v)),
        Step::Cas {
            expected,
            swapped: true,
            ..
        } => format!(
            "it swapped from {}, but the value was {}",
            value(expected),
            value(v)
        ),
        Step::Cas {
            expected,
            swapped: false,
            ..
        } => format!("it found the value was not {}, but it was", value(expected)),
        Step::Set(_) | Step::MaybeCas { .. } => "it always fits".to_owned(),
    })
}

/// The explanation of a key whose search got stuck after `prefix`.
pub(super) fn explain(key: &str, ops: &[KeyOp], prefix: &[usize]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "key {key:?}: no linearization of its {} operations; the longest linearizable prefix found has {}",
        ops.len(),
        prefix.len()
    );
    let mut v = None;
    let skipped = prefix.len().saturating_sub(SHOWN);
    if skipped > 0 {
        let _ = writeln!(out, "  ({skipped} earlier operations)");
    }
    let mut placed = vec![false; ops.len()];
    for (n, &i) in prefix.iter().enumerate() {
        placed[i] = true;
        // A prefix is a legal run: each step fits.
        v = ops[i].exact.apply(v).unwrap_or(v);
        if n >= skipped {
            let _ = writeln!(
                out,
                "  {}. {}; value then {}",
                n + 1,
                describe(ops[i].event),
                value(v)
            );
        }
    }
    // The operation that had to be placed first: the earliest return left.
    let Some(due) = (0..ops.len())
        .filter(|&i| !placed[i])
        .filter_map(|i| ops[i].ret.map(|r| (r, i)))
        .min()
    else {
        let _ = writeln!(out, "and every operation left has an unknown outcome");
        return out;
    };
    let _ = writeln!(
        out,
        "after it, with the value {}, none of the operations called by {} ns (when {} returned) could be placed next:",
        value(v),
        due.0,
        describe(ops[due.1].event)
    );
    let candidates: Vec<usize> = (0..ops.len())
        .filter(|&i| !placed[i] && ops[i].call <= due.0)
        .collect();
    for &i in candidates.iter().take(SHOWN) {
        let why = misfit(ops[i].exact, v)
            .unwrap_or_else(|| "it fits, but no order of the rest does after it".to_owned());
        let _ = writeln!(out, "  - {}: {why}", describe(ops[i].event));
    }
    if candidates.len() > SHOWN {
        let _ = writeln!(out, "  ({} more)", candidates.len() - SHOWN);
    }
    out
}
