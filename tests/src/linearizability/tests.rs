//! Hand-written histories, linearizable and not.

use super::*;

const KEY: &str = "k";

fn event(client: u64, op: Op, call: u64, ret: u64, outcome: Outcome) -> Event {
    Event {
        client,
        key: KEY.into(),
        op,
        call,
        ret: Some(ret),
        outcome,
    }
}

fn write(client: u64, v: Value, call: u64, ret: u64) -> Event {
    event(client, Op::Write(v), call, ret, Outcome::Written)
}

fn read(client: u64, seen: Option<Value>, call: u64, ret: u64) -> Event {
    event(client, Op::Read, call, ret, Outcome::Read(seen))
}

fn cas(
    client: u64,
    expected: Option<Value>,
    new: Value,
    swapped: bool,
    call: u64,
    ret: u64,
) -> Event {
    event(
        client,
        Op::Cas { expected, new },
        call,
        ret,
        Outcome::Cas(swapped),
    )
}

fn delete(client: u64, call: u64, ret: u64) -> Event {
    event(client, Op::Delete, call, ret, Outcome::Deleted)
}

/// The same operation, never returned.
fn lost(mut e: Event) -> Event {
    e.ret = None;
    e.outcome = Outcome::Unknown;
    e
}

/// The same operation, returned with an unknown outcome (a timeout).
fn timed_out(mut e: Event) -> Event {
    e.outcome = Outcome::Unknown;
    e
}

fn on(key: &str, mut e: Event) -> Event {
    e.key = key.into();
    e
}

#[track_caller]
fn assert_linearizable(history: &[Event]) {
    let verdict = check(history, Budget::default());
    assert_eq!(verdict, Verdict::Linearizable, "history: {history:#?}");
}

/// Asserts a violation on `key` and returns its explanation.
#[track_caller]
fn assert_violation(history: &[Event], key: &str) -> String {
    match check(history, Budget::default()) {
        Verdict::NotLinearizable {
            key: k,
            explanation,
        } => {
            assert_eq!(k, key, "{explanation}");
            assert!(explanation.contains(&format!("{key:?}")), "{explanation}");
            explanation
        }
        other => panic!("expected a violation on {key:?}, got {other:?}"),
    }
}

#[test]
fn an_empty_history_is_linearizable() {
    assert_linearizable(&[]);
}

#[test]
fn a_sequential_history_is_linearizable() {
    assert_linearizable(&[
        read(0, None, 0, 10),
        write(0, 1, 20, 30),
        read(1, Some(1), 40, 50),
        cas(2, Some(1), 2, true, 60, 70),
        cas(0, Some(1), 3, false, 80, 90),
        read(0, Some(2), 100, 110),
        delete(1, 120, 130),
        read(2, None, 140, 150),
        cas(1, None, 4, true, 160, 170),
        read(1, Some(4), 180, 190),
    ]);
}

#[test]
fn reads_after_overlapping_writes_may_see_either_value() {
    for last in [1, 2] {
        assert_linearizable(&[
            write(0, 1, 0, 100),
            write(1, 2, 50, 150),
            read(2, Some(last), 200, 210),
            read(0, Some(last), 220, 230),
        ]);
    }
    // Reads during the writes may see the register change.
    assert_linearizable(&[
        write(0, 1, 0, 100),
        write(1, 2, 10, 100),
        read(2, None, 5, 20),
        read(2, Some(2), 30, 40),
        read(3, Some(1), 30, 60),
        read(2, Some(1), 70, 80),
    ]);
}

#[test]
fn compare_and_swap_chains_from_several_clients_are_linearizable() {
    assert_linearizable(&[
        cas(0, None, 1, true, 0, 10),
        // Three clients race from 1: one wins, the others see it lost.
        cas(1, Some(1), 11, false, 20, 50),
        cas(2, Some(1), 21, true, 25, 45),
        cas(0, Some(1), 2, false, 30, 60),
        // The losers read and retry.
        read(1, Some(21), 55, 65),
        cas(1, Some(21), 12, true, 70, 90),
        read(0, Some(12), 80, 95),
        cas(0, Some(12), 3, true, 100, 120),
        cas(2, Some(21), 22, false, 100, 130),
        read(2, Some(3), 140, 150),
    ]);
}

#[test]
fn an_unknown_write_that_a_later_read_shows_took_effect() {
    assert_linearizable(&[
        write(0, 1, 0, 10),
        lost(write(1, 2, 20, 0)),
        read(0, Some(2), 100, 110),
    ]);
    assert_linearizable(&[
        write(0, 1, 0, 10),
        timed_out(write(1, 2, 20, 30)),
        read(0, Some(2), 100, 110),
    ]);
    // It may take effect long after its call, after later writes.
    assert_linearizable(&[
        lost(write(1, 2, 0, 0)),
        write(0, 3, 20, 30),
        read(0, Some(3), 40, 50),
        read(0, Some(2), 60, 70),
    ]);
    // A timeout does not stop it: it may take effect after the client
    // gave up on it.
    assert_linearizable(&[
        timed_out(write(1, 2, 0, 10)),
        write(0, 3, 20, 30),
        read(0, Some(3), 40, 50),
        read(0, Some(2), 60, 70),
    ]);
    // An unknown delete and compare-and-swap, likewise.
    assert_linearizable(&[
        write(0, 1, 0, 10),
        lost(delete(1, 20, 0)),
        read(0, Some(1), 30, 40),
        read(0, None, 50, 60),
        timed_out(cas(1, None, 5, true, 70, 80)),
        read(0, Some(5), 90, 100),
    ]);
}

#[test]
fn an_unknown_write_that_never_shows() {
    assert_linearizable(&[
        write(0, 1, 0, 10),
        lost(write(1, 2, 20, 0)),
        read(0, Some(1), 100, 110),
        read(2, Some(1), 120, 130),
        write(0, 3, 140, 150),
        read(2, Some(3), 160, 170),
    ]);
}

#[test]
fn an_unknown_read_constrains_nothing() {
    assert_linearizable(&[
        write(0, 1, 0, 10),
        timed_out(read(1, Some(7), 20, 30)),
        lost(read(1, None, 40, 0)),
    ]);
}

#[test]
fn a_stale_read_after_a_completed_write_is_found() {
    let why = assert_violation(
        &[
            write(0, 1, 0, 10),
            write(1, 2, 20, 30),
            read(2, Some(1), 40, 50),
        ],
        KEY,
    );
    assert!(
        why.contains("longest linearizable prefix found has 2"),
        "{why}"
    );
    assert!(why.contains("client 2: read, returned 1"), "{why}");
    assert!(why.contains("it read 1, but the value was 2"), "{why}");
    let verdict = check(
        &[write(0, 1, 0, 10), read(2, None, 40, 50)],
        Budget::default(),
    );
    assert!(
        verdict
            .to_string()
            .starts_with("the history is not linearizable: key \"k\""),
        "{verdict}"
    );
}

#[test]
fn sequential_reads_seeing_new_then_old_are_found() {
    assert_violation(
        &[
            write(0, 1, 0, 10),
            write(1, 2, 20, 100),
            read(2, Some(2), 30, 40),
            read(2, Some(1), 50, 60),
        ],
        KEY,
    );
}

#[test]
fn two_successful_swaps_from_the_same_value_are_found() {
    let why = assert_violation(
        &[
            write(0, 1, 0, 10),
            cas(1, Some(1), 2, true, 20, 40),
            cas(2, Some(1), 3, true, 25, 35),
        ],
        KEY,
    );
    assert!(
        why.contains("it swapped from 1, but the value was"),
        "{why}"
    );
}

#[test]
fn a_read_of_a_value_never_written_is_found() {
    assert_violation(&[write(0, 1, 0, 10), read(1, Some(9), 5, 20)], KEY);
}

#[test]
fn a_read_of_a_write_called_after_the_read_returned_is_found() {
    assert_violation(&[read(0, Some(1), 0, 10), write(1, 1, 20, 30)], KEY);
    // Even with an unknown outcome: it cannot take effect before its call.
    assert_violation(&[read(0, Some(1), 0, 10), lost(write(1, 1, 20, 0))], KEY);
}

#[test]
fn an_unknown_write_takes_effect_at_most_once() {
    assert_violation(
        &[
            write(0, 1, 0, 10),
            lost(write(1, 2, 15, 0)),
            read(0, Some(2), 20, 30),
            write(0, 3, 40, 50),
            read(0, Some(3), 60, 70),
            read(0, Some(2), 80, 90),
        ],
        KEY,
    );
}

#[test]
fn a_failed_swap_while_the_value_was_the_expected_one_is_found() {
    // The kind of anomaly of Knossos' cas-register examples, in small:
    // nothing else could have changed the value while the swap compared.
    assert_violation(
        &[
            write(0, 1, 0, 10),
            cas(1, Some(1), 2, false, 20, 30),
            read(0, Some(1), 40, 50),
        ],
        KEY,
    );
    // A concurrent write of unknown outcome explains it.
    assert_linearizable(&[
        write(0, 1, 0, 10),
        lost(write(2, 7, 15, 0)),
        cas(1, Some(1), 2, false, 20, 30),
        read(0, Some(7), 40, 50),
    ]);
}

#[test]
fn porcupine_readme_histories() {
    // C0: |-------- write 100 --------|
    // C1:    |--- read -> 100 ---|
    // C2:       |- read -> absent -|
    assert_linearizable(&[
        write(0, 100, 0, 100),
        read(1, Some(100), 25, 75),
        read(2, None, 30, 60),
    ]);
    // C0: |------------- write 200 -------------|
    // C1:   |- read -> 200 -|
    // C2:                      |- read -> absent -|
    assert_violation(
        &[
            write(0, 200, 0, 100),
            read(1, Some(200), 10, 30),
            read(2, None, 40, 60),
        ],
        KEY,
    );
}

#[test]
fn knossos_readme_crashed_write_seen_by_a_concurrent_read() {
    // A write of 3 that crashed, concurrent with a read that saw 3.
    assert_linearizable(&[read(0, Some(3), 0, 30), timed_out(write(1, 3, 10, 20))]);
}

#[test]
fn once_a_read_saw_a_pending_write_later_reads_see_it_too() {
    // A read may see a write that overlaps it; a read by another client
    // called after that one returned may see it too, but not the value
    // before it (otherwise the write would not be atomic).
    assert_linearizable(&[
        write(0, 1, 0, 10),
        write(1, 2, 20, 60),
        read(2, Some(2), 30, 40),
        read(3, Some(2), 45, 55),
    ]);
    assert_violation(
        &[
            write(0, 1, 0, 10),
            write(1, 2, 20, 60),
            read(2, Some(2), 30, 40),
            read(3, Some(1), 45, 55),
        ],
        KEY,
    );
}

#[test]
fn operations_returning_at_the_same_time_as_a_call_count_as_concurrent() {
    assert_linearizable(&[write(0, 1, 0, 10), read(1, None, 10, 20)]);
}

#[test]
fn a_violation_on_one_key_among_clean_keys_is_named() {
    let mut history = Vec::new();
    for k in 0..20 {
        let key = format!("key{k:02}");
        history.push(on(&key, write(0, 1, 0, 10)));
        history.push(on(&key, write(1, 2, 5, 30)));
        history.push(on(&key, read(2, Some(2), 40, 50)));
    }
    // key07: a read of the value overwritten before it was called.
    history.push(on("key07", read(3, Some(1), 60, 70)));
    let why = assert_violation(&history, "key07");
    assert!(why.contains("client 3: read, returned 1"), "{why}");
}

#[test]
fn keys_are_independent() {
    // A value seen on one key says nothing about another.
    assert_linearizable(&[
        on("a", write(0, 1, 0, 10)),
        on("b", read(1, None, 20, 30)),
        on("b", write(1, 1, 40, 50)),
        on("a", read(0, Some(1), 60, 70)),
    ]);
}

#[test]
fn malformed_events_are_refused_with_their_key() {
    let mut bad = read(0, Some(1), 0, 10);
    bad.outcome = Outcome::Written;
    let verdict = check(&[on("x", bad)], Budget::default());
    assert!(
        matches!(&verdict, Verdict::Invalid { key, reason } if key == "x" && reason.contains("cannot have")),
        "{verdict:?}"
    );
    let backwards = write(0, 1, 10, 5);
    assert!(matches!(
        check(&[backwards], Budget::default()),
        Verdict::Invalid { .. }
    ));
    let mut no_return = write(0, 1, 10, 20);
    no_return.ret = None;
    assert!(matches!(
        check(&[no_return], Budget::default()),
        Verdict::Invalid { .. }
    ));
}

/// Many concurrent writes of unknown outcome, then reads of their values
/// in an order that ends impossible: every subset of the writes is a
/// configuration to explore.
fn pathological(writes: u64) -> Vec<Event> {
    let mut history: Vec<Event> = (0..writes).map(|i| lost(write(i, i + 1, i, 0))).collect();
    let mut t = 1_000;
    for i in (1..=writes).chain([1]) {
        history.push(read(100, Some(i), t, t + 1));
        t += 10;
    }
    history
}

#[test]
fn the_budget_stops_a_pathological_search() {
    let budget = Budget::states(50_000);
    let (verdict, stats) = check_with_stats(&pathological(40), budget);
    assert_eq!(verdict, Verdict::Unknown { key: KEY.into() });
    assert_eq!(stats.states, budget.max_states + 1);
    // The same shape, small enough, is decided within the budget.
    let (verdict, stats) = check_with_stats(&pathological(6), budget);
    assert!(
        matches!(verdict, Verdict::NotLinearizable { .. }),
        "{verdict:?}"
    );
    assert!(stats.states < budget.max_states, "{stats:?}");
}

/// A stale read after `before` (all called before 1000).
fn stale_read_after(before: Vec<Event>) -> Vec<Event> {
    let mut history = before;
    history.extend([
        write(50, 1, 1000, 1010),
        read(51, Some(1), 1020, 1030),
        write(50, 2, 1040, 1050),
        read(51, Some(1), 1060, 1070),
    ]);
    history
}

#[test]
fn unknown_writes_nobody_saw_do_not_multiply_the_search() {
    // Each may or may not have taken effect, at any time: 2^40 sets of
    // them, but their values are never read, so which ones does not
    // matter.
    let unseen = (0..40).map(|i| lost(write(i, 100 + i, i, 0))).collect();
    let budget = Budget::states(1_000);
    let (verdict, stats) = check_with_stats(&stale_read_after(unseen), budget);
    assert!(
        matches!(verdict, Verdict::NotLinearizable { .. }),
        "{verdict:?} {stats:?}"
    );
}

#[test]
fn unknown_swaps_that_cannot_swap_do_not_multiply_the_search() {
    let dead = (0..40)
        .map(|i| lost(cas(i, Some(500 + i), 100 + i, true, i, 0)))
        .collect();
    let budget = Budget::states(1_000);
    let (verdict, stats) = check_with_stats(&stale_read_after(dead), budget);
    assert!(
        matches!(verdict, Verdict::NotLinearizable { .. }),
        "{verdict:?} {stats:?}"
    );
}

#[test]
fn a_violation_wins_over_a_key_out_of_budget() {
    let mut history: Vec<Event> = pathological(40).into_iter().map(|e| on("a", e)).collect();
    history.extend([on("b", write(0, 1, 0, 10)), on("b", read(1, None, 20, 30))]);
    let budget = Budget::states(10_000);
    assert!(matches!(check(&history, budget), Verdict::NotLinearizable { key, .. } if key == "b"));
    history.retain(|e| e.key == "a");
    assert_eq!(
        check(&history, budget),
        Verdict::Unknown { key: "a".into() }
    );
}

#[test]
fn the_recorder_records_calls_returns_and_calls_that_never_returned() {
    let recorder = Recorder::new();
    let threads: Vec<_> = (0..4)
        .map(|client| {
            let recorder = recorder.clone();
            std::thread::spawn(move || {
                let p = recorder.call(client, "k", Op::Write(client + 1));
                p.finish(Outcome::Written);
                let lost = recorder.call(client, "k", Op::Write(client + 10));
                drop(lost);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client thread panicked");
    }
    let history = recorder.history();
    assert_eq!(history.len(), 8);
    for e in &history {
        match e.op {
            Op::Write(v) if v < 10 => {
                assert_eq!(e.outcome, Outcome::Written);
                assert!(e.ret.is_some_and(|ret| ret >= e.call), "{e:?}");
            }
            _ => assert_eq!((e.ret, &e.outcome), (None, &Outcome::Unknown)),
        }
    }
    let p = recorder.call(9, "k", Op::Read);
    p.finish(Outcome::Read(Some(77)));
    assert!(matches!(
        recorder.check(Budget::default()),
        Verdict::NotLinearizable { .. }
    ));
}
