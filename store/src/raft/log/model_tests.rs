//! The raft log's Storage compared with raft-rs's MemStorage on random
//! sequences of writes, compactions, snapshots, reopens and crashes, with a
//! fixed seed and case count (every run tries the same sequences).

use ::raft::storage::MemStorage;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use super::tests::{conf_state, entries, hard_state, open, snapshot};
use super::*;

/// What the log must answer: raft-rs's MemStorage driven through its own
/// methods, plus the snapshot stored (MemStorage makes one up instead).
struct Model {
    mem: MemStorage,
    snapshot: Option<Snapshot>,
}

impl Model {
    fn new() -> Model {
        Model {
            mem: MemStorage::new(),
            snapshot: None,
        }
    }

    fn first(&self) -> u64 {
        self.mem.first_index().unwrap()
    }

    fn last(&self) -> u64 {
        self.mem.last_index().unwrap()
    }

    fn hard_state(&self) -> HardState {
        self.mem.initial_state().unwrap().hard_state
    }

    fn conf_state(&self) -> ConfState {
        self.mem.initial_state().unwrap().conf_state
    }

    /// The entries after `index`.
    fn after(&self, index: u64) -> Vec<Entry> {
        if index >= self.last() {
            return Vec::new();
        }
        self.mem
            .entries(
                index + 1,
                self.last() + 1,
                None,
                GetEntriesContext::empty(false),
            )
            .unwrap()
    }

    /// A MemStorage that has a snapshot at `index`, `term` and `entries`
    /// after it.
    fn rebuild(
        index: u64,
        term: u64,
        entries: &[Entry],
        hs: HardState,
        cs: ConfState,
        snapshot: Option<Snapshot>,
    ) -> Model {
        let mem = MemStorage::new();
        if index > 0 {
            mem.wl()
                .apply_snapshot(self::snapshot(index, term, cs.clone(), b""))
                .unwrap();
        }
        mem.wl().append(entries).unwrap();
        mem.wl().set_hardstate(hs);
        mem.wl().set_conf_state(cs);
        Model { mem, snapshot }
    }

    fn copy(&self) -> Model {
        let index = self.first() - 1;
        let term = self.mem.term(index).unwrap();
        Model::rebuild(
            index,
            term,
            &self.after(index),
            self.hard_state(),
            self.conf_state(),
            self.snapshot.clone(),
        )
    }
}

/// Compares every answer of the log's Storage with the model's.
fn assert_same(log: &RaftLog, model: &Model) {
    let (first, last) = (model.first(), model.last());
    assert_eq!(log.first_index(), model.mem.first_index());
    assert_eq!(log.last_index(), model.mem.last_index());
    let state = log.initial_state().unwrap();
    assert_eq!(state.hard_state, model.hard_state());
    assert_eq!(state.conf_state, model.conf_state());
    for idx in 0..=last + 2 {
        assert_eq!(log.term(idx), model.mem.term(idx), "term({idx})");
    }
    let ctx = || GetEntriesContext::empty(false);
    for low in first.saturating_sub(2)..=last + 1 {
        let mut highs = vec![low, low + 1, (low + last).div_ceil(2), last + 1];
        highs.retain(|&h| h >= low && h <= last + 1);
        for high in highs {
            // MemStorage panics on a range in an empty log.
            if last < first && low >= first {
                continue;
            }
            for max in [None, Some(0), Some(60), Some(100), Some(u64::MAX)] {
                assert_eq!(
                    log.entries(low, high, max, ctx()),
                    model.mem.entries(low, high, max, ctx()),
                    "entries({low}, {high}, {max:?})"
                );
            }
        }
    }
    // Past the end: an error where MemStorage panics.
    assert!(log.entries(first, last + 2, None, ctx()).is_err());

    assert!(!log.take_snapshot_request());
    let stored = model
        .snapshot
        .as_ref()
        .map_or(0, |s| s.get_metadata().index);
    for request in [0, stored, stored + 1] {
        let answer = log.snapshot(request, 2);
        match &model.snapshot {
            Some(s) if crate::raft::storage::usable(s, request, 2) => {
                assert_eq!(answer.as_ref(), Ok(s))
            }
            _ => {
                assert_eq!(
                    answer,
                    Err(::raft::Error::Store(
                        StorageError::SnapshotTemporarilyUnavailable
                    ))
                );
                assert!(log.take_snapshot_request());
            }
        }
    }
    assert!(!log.take_snapshot_request());
}

fn assert_recovered(recovered: &Recovered, model: &Model) {
    assert!(!recovered.fresh);
    assert_eq!(recovered.snapshot, model.snapshot);
    assert_eq!(recovered.hard_state, model.hard_state());
    assert_eq!(recovered.conf_state, model.conf_state());
    assert_eq!(recovered.first_index, model.first());
    assert_eq!(recovered.last_index, model.last());
    assert_eq!(recovered.torn_tail, None);
}

/// One step of a random sequence; the numbers pick valid arguments from
/// the state at the time.
#[derive(Debug, Clone)]
enum Op {
    Append {
        at: u8,
        count: u8,
        bump: u8,
    },
    SetHardState {
        term: u8,
        vote: u8,
        commit: u8,
    },
    SetCommit(u8),
    SetConfState(u8),
    Sync,
    Compact {
        at: u8,
        data: u8,
    },
    /// Mode 0: newer than the log; 1: inside, matching; 2: inside, another
    /// term.
    ApplySnapshot {
        mode: u8,
        at: u8,
        voters: u8,
    },
    /// Sync, close, reopen.
    Reopen,
    /// Close without a sync: what was not synced is lost.
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u8>(), 0..5u8, 0..2u8).prop_map(|(at, count, bump)| Op::Append { at, count, bump }),
        2 => (0..4u8, 0..4u8, any::<u8>()).prop_map(|(term, vote, commit)| Op::SetHardState { term, vote, commit }),
        2 => any::<u8>().prop_map(Op::SetCommit),
        1 => (1..8u8).prop_map(Op::SetConfState),
        3 => Just(Op::Sync),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(at, data)| Op::Compact { at, data }),
        1 => (0..3u8, any::<u8>(), 1..8u8).prop_map(|(mode, at, voters)| Op::ApplySnapshot { mode, at, voters }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

fn voters(mask: u8) -> ConfState {
    conf_state(
        &(1..=3)
            .filter(|v| mask & (1 << (v - 1)) != 0)
            .collect::<Vec<_>>(),
    )
}

/// A number in `[low, high]` picked by `at`.
fn pick(at: u8, low: u64, high: u64) -> u64 {
    low + u64::from(at) % (high - low + 1)
}

fn run_ops(ops: &[Op]) {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, recovered) = open(dir.path());
    assert!(recovered.fresh);
    let mut model = Model::new();
    log.initialize(voters(1)).unwrap();
    model.mem.initialize_with_conf_state(voters(1));
    let mut durable = model.copy();
    for op in ops {
        let hs = model.hard_state();
        let (snap, last) = (model.first() - 1, model.last());
        match *op {
            Op::Append { at, count, bump } => {
                // Raft never replaces committed entries.
                let first = pick(at, hs.commit.max(snap) + 1, last + 1);
                let term = model.mem.term(first - 1).unwrap().max(hs.term) + u64::from(bump);
                let new = entries(first, first + u64::from(count), term);
                log.append(&new).unwrap();
                model.mem.wl().append(&new).unwrap();
            }
            Op::SetHardState { term, vote, commit } => {
                let new = hard_state(
                    hs.term + u64::from(term),
                    u64::from(vote),
                    pick(commit, hs.commit, last),
                );
                log.set_hard_state(&new).unwrap();
                model.mem.wl().set_hardstate(new);
            }
            Op::SetCommit(at) => {
                let commit = pick(at, hs.commit, last);
                log.set_commit(commit).unwrap();
                model.mem.wl().mut_hard_state().commit = commit;
            }
            Op::SetConfState(mask) => {
                log.set_conf_state(voters(mask)).unwrap();
                model.mem.wl().set_conf_state(voters(mask));
            }
            Op::Sync => {
                log.sync().unwrap();
                durable = model.copy();
            }
            Op::Compact { at, data } => {
                let index = pick(at, snap, hs.commit);
                let term = model.mem.term(index).unwrap();
                let s = snapshot(index, term, voters(7), &[data; 5]);
                log.compact(s.clone()).unwrap();
                if index > snap {
                    model = Model::rebuild(
                        index,
                        term,
                        &model.after(index),
                        hs,
                        model.conf_state(),
                        Some(s),
                    );
                }
                durable = model.copy();
            }
            Op::ApplySnapshot {
                mode,
                at,
                voters: mask,
            } => {
                let (index, term) = if mode == 0 || last == snap {
                    (last + 1 + u64::from(at % 3), hs.term + 1)
                } else {
                    let index = pick(at, snap + 1, last);
                    let term = model.mem.term(index).unwrap();
                    (index, if mode == 1 { term } else { term + 1 })
                };
                let s = snapshot(index, term, voters(mask), &[at; 7]);
                log.apply_snapshot(s.clone()).unwrap();
                let held = model.mem.term(index) == Ok(term);
                let kept = if held { model.after(index) } else { Vec::new() };
                model.mem.wl().apply_snapshot(s.clone()).unwrap();
                model.mem.wl().append(&kept).unwrap();
                if held {
                    model.mem.wl().mut_hard_state().commit = hs.commit.max(index);
                }
                model.snapshot = Some(s);
                durable = model.copy();
            }
            Op::Reopen => {
                log.sync().unwrap();
                drop(log);
                let recovered;
                (log, recovered) = open(dir.path());
                assert_recovered(&recovered, &model);
                durable = model.copy();
            }
            Op::Crash => {
                drop(log);
                let recovered;
                (log, recovered) = open(dir.path());
                model = durable.copy();
                assert_recovered(&recovered, &model);
            }
        }
        assert_same(&log, &model);
    }
}

#[test]
fn storage_answers_as_mem_storage_does_also_after_reopens() {
    const SEED: [u8; 32] = *b"flotilla raft log storage seed 1";
    let config = Config {
        cases: 128,
        // The seed is fixed, so a failure comes back by itself.
        failure_persistence: None,
        max_shrink_iters: 500,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &SEED));
    runner
        .run(&proptest::collection::vec(op(), 1..60), |ops| {
            run_ops(&ops);
            Ok(())
        })
        .unwrap();
}
