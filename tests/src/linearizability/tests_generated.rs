//! Generated histories: clients with random delays on a simulated atomic
//! register (linearizable by construction), with and without an injected
//! stale read; and the cost of checking a long history.

use crate::rng::XorShift;
use std::collections::HashMap;

use super::*;

/// The shape of a simulated run.
struct Run {
    clients: u64,
    keys: u64,
    ops_per_client: u64,
    /// How often an operation's outcome is unknown (per thousand).
    unknown_per_mille: u64,
}

/// An operation scheduled: it is called, takes effect at one instant
/// (or never, for some of unknown outcome) and returns.
struct Planned {
    client: u64,
    key: String,
    kind: u64,
    call: u64,
    effect: u64,
    ret: u64,
    /// Its outcome is reported as unknown.
    unknown: bool,
    /// It takes effect (always, unless its outcome is unknown).
    applies: bool,
    /// It never returns (for some of unknown outcome).
    lost: bool,
}

/// A history of `run` on atomic registers: each operation takes effect at
/// one instant between its call and its return, so the history is
/// linearizable. Values are unique: `client * 1_000_000 + n`.
fn simulate(seed: u64, run: &Run) -> Vec<Event> {
    let mut rng = XorShift::new(seed);
    let mut planned = Vec::new();
    for client in 0..run.clients {
        let mut t = rng.below(50);
        for _ in 0..run.ops_per_client {
            let call = t;
            let effect = call + 1 + rng.below(40);
            let ret = effect + rng.below(40);
            let unknown = rng.chance(run.unknown_per_mille);
            planned.push(Planned {
                client,
                key: format!("key{}", rng.below(run.keys)),
                // read, write, compare-and-swap, delete: 4:3:4:1
                kind: rng.below(12),
                call,
                effect,
                ret,
                unknown,
                applies: !unknown || rng.chance(500),
                lost: unknown && rng.chance(500),
            });
            t = ret + 1 + rng.below(30);
        }
    }
    // Apply the effects in time order; each client's last observation of
    // a key is what it compares with in its next swap.
    planned.sort_by_key(|p| (p.effect, p.client));
    let mut registers: HashMap<String, Option<Value>> = HashMap::new();
    let mut observed: HashMap<(u64, String), Option<Value>> = HashMap::new();
    let mut counter = 0;
    let mut history = Vec::with_capacity(planned.len());
    for p in planned {
        counter += 1;
        let fresh = p.client * 1_000_000 + counter;
        let register = registers.entry(p.key.clone()).or_default();
        let last_seen = observed.entry((p.client, p.key.clone())).or_default();
        let (op, outcome) = match p.kind {
            0..4 => (Op::Read, Outcome::Read(*register)),
            4..7 => {
                if p.applies {
                    *register = Some(fresh);
                }
                (Op::Write(fresh), Outcome::Written)
            }
            7..11 => {
                let expected = *last_seen;
                let swapped = p.applies && *register == expected;
                if swapped {
                    *register = Some(fresh);
                }
                let op = Op::Cas {
                    expected,
                    new: fresh,
                };
                (op, Outcome::Cas(swapped))
            }
            _ => {
                if p.applies {
                    *register = None;
                }
                (Op::Delete, Outcome::Deleted)
            }
        };
        if !p.unknown {
            *last_seen = *register;
        }
        history.push(Event {
            client: p.client,
            key: p.key,
            op,
            call: p.call,
            ret: (!p.lost).then_some(p.ret),
            outcome: if p.unknown { Outcome::Unknown } else { outcome },
        });
    }
    history
}

/// The value an operation of known outcome sets, if it sets one.
fn sets(e: &Event) -> Option<Option<Value>> {
    match (&e.op, &e.outcome) {
        (Op::Write(v), Outcome::Written) => Some(Some(*v)),
        (Op::Cas { new, .. }, Outcome::Cas(true)) => Some(Some(*new)),
        (Op::Delete, Outcome::Deleted) => Some(None),
        _ => None,
    }
}

/// Makes one read return a stale value: one set by an operation that
/// returned before another set a different one, which returned before
/// the read was called. Values being unique, no order explains it.
/// Returns the key of the read.
fn inject_stale_read(history: &mut [Event], rng: &mut XorShift) -> String {
    let reads: Vec<usize> = (0..history.len())
        .filter(|&i| matches!(history[i].outcome, Outcome::Read(_)))
        .collect();
    let start = rng.below(reads.len() as u64) as usize;
    for &r in reads[start..].iter().chain(&reads[..start]) {
        let read = &history[r];
        let done_before = |e: &Event, t: u64| e.key == read.key && e.ret.is_some_and(|ret| ret < t);
        for b in history
            .iter()
            .filter(|b| sets(b).is_some() && done_before(b, read.call))
        {
            let overwritten = history.iter().find_map(|a| match sets(a) {
                Some(Some(v)) if done_before(a, b.call) && sets(b) != Some(Some(v)) => Some(v),
                _ => None,
            });
            if let Some(v) = overwritten {
                let key = read.key.clone();
                history[r].outcome = Outcome::Read(Some(v));
                return key;
            }
        }
    }
    panic!("no read to make stale in the history");
}

const SMALL: Run = Run {
    clients: 5,
    keys: 3,
    ops_per_client: 120,
    unknown_per_mille: 40,
};

#[test]
fn simulated_atomic_registers_are_linearizable() {
    for seed in 1..=30 {
        let history = simulate(seed, &SMALL);
        let (verdict, stats) = check_with_stats(&history, Budget::default());
        assert_eq!(verdict, Verdict::Linearizable, "seed {seed}: {stats:?}");
    }
}

#[test]
fn simulated_registers_with_many_unknown_outcomes_are_linearizable() {
    let run = Run {
        unknown_per_mille: 300,
        ..SMALL
    };
    for seed in 1..=30 {
        let history = simulate(seed, &run);
        let (verdict, stats) = check_with_stats(&history, Budget::default());
        assert_eq!(verdict, Verdict::Linearizable, "seed {seed}: {stats:?}");
    }
}

#[test]
fn a_stale_read_injected_in_a_simulated_history_is_found() {
    for seed in 1..=30 {
        let mut history = simulate(seed, &SMALL);
        let key = inject_stale_read(&mut history, &mut XorShift::new(seed));
        match check(&history, Budget::default()) {
            Verdict::NotLinearizable {
                key: k,
                explanation,
            } => {
                assert_eq!(k, key, "seed {seed}: {explanation}")
            }
            other => panic!("seed {seed}: expected a violation on {key}, got {other:?}"),
        }
    }
}

#[test]
fn checking_three_clients_with_a_thousand_operations_per_key_stays_near_linear() {
    let run = Run {
        clients: 3,
        keys: 10,
        ops_per_client: 10 * 1000,
        unknown_per_mille: 5,
    };
    let history = simulate(7, &run);
    let budget = Budget::states(30_000);
    let (verdict, stats) = check_with_stats(&history, budget);
    assert_eq!(verdict, Verdict::Linearizable, "{stats:?}");
    assert_eq!(stats.keys, 10);
    // About one configuration per operation: the search barely backtracks.
    assert!(
        stats.max_states_per_key < 2 * (stats.operations as u64 / 10),
        "{stats:?}"
    );
}
