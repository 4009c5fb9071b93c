//! The raft log's files: reopening after each kind of write, damage,
//! compaction and snapshots, crashes between a compaction's steps.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use ::raft::prelude::SnapshotMetadata;

use super::disk::{LOG_HEADER_LEN, log_name, snapshot_name};
use super::*;

pub(super) fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: format!("command {index} of term {term}")
            .into_bytes()
            .into(),
        ..Entry::default()
    }
}

pub(super) fn entries(first: u64, last: u64, term: u64) -> Vec<Entry> {
    (first..=last).map(|i| entry(i, term)).collect()
}

pub(super) fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote,
        commit,
        ..HardState::default()
    }
}

pub(super) fn conf_state(voters: &[u64]) -> ConfState {
    ConfState {
        voters: voters.to_vec(),
        ..ConfState::default()
    }
}

pub(super) fn snapshot(index: u64, term: u64, cs: ConfState, data: &[u8]) -> Snapshot {
    let mut meta = SnapshotMetadata {
        index,
        term,
        ..SnapshotMetadata::default()
    };
    meta.set_conf_state(cs);
    let mut s = Snapshot::default();
    s.set_metadata(meta);
    s.data = data.to_vec().into();
    s
}

pub(super) fn open(dir: &Path) -> (RaftLog, Recovered) {
    RaftLog::open(dir).unwrap()
}

fn all_entries(log: &RaftLog) -> Vec<Entry> {
    let (first, last) = (log.first_index().unwrap(), log.last_index().unwrap());
    log.entries(first, last + 1, None, GetEntriesContext::empty(false))
        .unwrap()
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != disk::LOCK_FILE)
        .collect();
    names.sort();
    names
}

// ---- Reopening ----

#[test]
fn the_log_can_be_shared_between_threads() {
    fn shared<T: Send + Sync + Clone + 'static>() {}
    shared::<RaftLog>();
}

#[test]
fn a_new_directory_is_fresh_and_private() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("raft");
    let (log, recovered) = open(&dir);
    assert!(recovered.fresh);
    assert_eq!(recovered.snapshot, None);
    assert_eq!((recovered.first_index, recovered.last_index), (1, 0));
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(files(&dir), [log_name(0)]);
    // One open at a time.
    assert!(matches!(
        RaftLog::open(&dir),
        Err(StoreError::Locked { .. })
    ));
    drop(log);
    let (_log, recovered) = open(&dir);
    assert!(!recovered.fresh);
}

#[test]
fn each_kind_of_record_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let reopen = |log: RaftLog| {
        log.sync().unwrap();
        drop(log);
        open(dir.path())
    };
    let (log, _) = open(dir.path());
    log.initialize(conf_state(&[1, 2, 3])).unwrap();
    // initialize is durable by itself.
    drop(log);
    let (log, r) = open(dir.path());
    assert_eq!(r.conf_state, conf_state(&[1, 2, 3]));

    log.append(&entries(1, 3, 1)).unwrap();
    let (log, r) = reopen(log);
    assert_eq!((r.first_index, r.last_index), (1, 3));
    assert_eq!(all_entries(&log), entries(1, 3, 1));

    log.set_hard_state(&hard_state(1, 2, 2)).unwrap();
    let (log, r) = reopen(log);
    assert_eq!(r.hard_state, hard_state(1, 2, 2));

    log.set_commit(3).unwrap();
    let (log, r) = reopen(log);
    assert_eq!(r.hard_state, hard_state(1, 2, 3));

    log.set_conf_state(conf_state(&[1, 2])).unwrap();
    let (log, r) = reopen(log);
    assert_eq!(r.conf_state, conf_state(&[1, 2]));
    assert_eq!(r.hard_state, hard_state(1, 2, 3));
    assert_eq!(all_entries(&log), entries(1, 3, 1));
    assert_eq!(log.initial_state().unwrap().conf_state, conf_state(&[1, 2]));
}

#[test]
fn conflict_truncation_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path());
    log.append(&entries(1, 5, 1)).unwrap();
    log.sync().unwrap();
    log.append(&entries(3, 4, 2)).unwrap();
    log.sync().unwrap();
    let expected = [entries(1, 2, 1), entries(3, 4, 2)].concat();
    assert_eq!(all_entries(&log), expected);
    drop(log);
    let (log, r) = open(dir.path());
    assert_eq!(r.last_index, 4);
    assert_eq!(all_entries(&log), expected);
    assert_eq!(
        log.term(5),
        Err(::raft::Error::Store(StorageError::Unavailable))
    );
}

#[test]
fn what_was_not_synced_is_lost_and_one_sync_is_one_frame() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path());
    log.append(&entries(1, 2, 1)).unwrap();
    log.set_hard_state(&hard_state(1, 1, 1)).unwrap();
    log.sync().unwrap();
    let (bytes, count) = log.size();
    assert_eq!(count, 2);
    // Nothing to write: no frame.
    log.sync().unwrap();
    assert_eq!(log.size().0, bytes);
    log.append(&entries(3, 4, 1)).unwrap();
    log.set_commit(4).unwrap();
    drop(log);
    let (log, r) = open(dir.path());
    assert_eq!(r.last_index, 2);
    assert_eq!(r.hard_state, hard_state(1, 1, 1));
    assert_eq!(log.size(), (bytes, 2));
    let data = fs::read(dir.path().join(log_name(0))).unwrap();
    let (frames, end) = frame::scan(&data, LOG_HEADER_LEN);
    assert_eq!((frames.len(), end), (1, frame::End::Clean));
}

// ---- Damage ----

/// A log of three syncs; returns the file's length before the last.
fn three_syncs(dir: &Path) -> u64 {
    let (log, _) = open(dir);
    log.initialize(conf_state(&[1])).unwrap();
    log.append(&entries(1, 3, 1)).unwrap();
    log.set_hard_state(&hard_state(1, 1, 2)).unwrap();
    log.sync().unwrap();
    let before = log.size().0;
    log.append(&entries(4, 6, 2)).unwrap();
    log.set_commit(5).unwrap();
    log.sync().unwrap();
    before
}

#[test]
fn a_torn_tail_anywhere_in_the_last_frame_is_cut_keeping_what_came_before() {
    let dir = tempfile::tempdir().unwrap();
    let before = three_syncs(dir.path()) as usize;
    let path = dir.path().join(log_name(0));
    let whole = fs::read(&path).unwrap();
    for cut in before + 1..whole.len() {
        fs::write(&path, &whole[..cut]).unwrap();
        let (log, r) = open(dir.path());
        let torn = r
            .torn_tail
            .unwrap_or_else(|| panic!("cut at {cut}: no torn tail"));
        assert!(
            torn.contains(&path.display().to_string())
                && torn.contains(&format!("offset {before}")),
            "{torn}"
        );
        assert_eq!(r.last_index, 3, "cut at {cut}");
        assert_eq!(r.hard_state, hard_state(1, 1, 2));
        assert_eq!(r.conf_state, conf_state(&[1]));
        assert_eq!(all_entries(&log), entries(1, 3, 1));
        assert_eq!(fs::metadata(&path).unwrap().len() as usize, before);
        // The log goes on after the cut.
        log.append(&entries(4, 4, 3)).unwrap();
        log.sync().unwrap();
        drop(log);
        let (log, r) = open(dir.path());
        assert_eq!(r.torn_tail, None);
        assert_eq!(log.term(4), Ok(3));
    }
    // Cut exactly between frames: nothing to see.
    fs::write(&path, &whole[..before]).unwrap();
    let (_log, r) = open(dir.path());
    assert_eq!((r.last_index, r.torn_tail), (3, None));
}

#[test]
fn damage_before_the_end_is_corruption_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    three_syncs(dir.path());
    let path = dir.path().join(log_name(0));
    let whole = fs::read(&path).unwrap();
    // A byte of the first frame's payload.
    let mut bad = whole.clone();
    bad[LOG_HEADER_LEN + frame::HEADER_LEN + 3] ^= 0x10;
    fs::write(&path, &bad).unwrap();
    match RaftLog::open(dir.path()) {
        Err(e @ StoreError::Corrupt { .. }) => {
            let StoreError::Corrupt {
                path: ref at,
                offset,
                ..
            } = e
            else {
                unreachable!()
            };
            assert_eq!((at, offset), (&path, LOG_HEADER_LEN as u64));
            assert!(e.to_string().contains(&log_name(0)), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // Nothing was cut.
    assert_eq!(fs::read(&path).unwrap(), bad);
    // A damaged header.
    let mut bad = whole.clone();
    bad[9] ^= 1;
    fs::write(&path, &bad).unwrap();
    assert!(matches!(
        RaftLog::open(dir.path()),
        Err(StoreError::Corrupt { offset: 0, .. })
    ));
}

// ---- Compaction and snapshots ----

/// A log holding entries 1..=10 (term 1), committed to 8.
fn ten_entries(dir: &Path) -> RaftLog {
    let (log, _) = open(dir);
    log.initialize(conf_state(&[1, 2, 3])).unwrap();
    log.append(&entries(1, 10, 1)).unwrap();
    log.set_hard_state(&hard_state(1, 1, 8)).unwrap();
    log.sync().unwrap();
    log
}

#[test]
fn compaction_drops_entries_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = ten_entries(dir.path());
    let (bytes, count) = log.size();
    assert_eq!(count, 10);
    // Conf state changes after the snapshot's index stay.
    log.set_conf_state(conf_state(&[1, 2])).unwrap();
    let s = snapshot(5, 1, conf_state(&[1, 2, 3]), b"state at 5");
    log.compact(s.clone()).unwrap();
    let (after, count) = log.size();
    assert!(after < bytes, "{after} >= {bytes}");
    assert_eq!(count, 5);
    assert_eq!(files(dir.path()), [log_name(1), snapshot_name(1)]);
    let check = |log: &RaftLog| {
        assert_eq!((log.first_index(), log.last_index()), (Ok(6), Ok(10)));
        assert_eq!(log.term(5), Ok(1));
        assert_eq!(
            log.term(4),
            Err(::raft::Error::Store(StorageError::Compacted))
        );
        assert_eq!(all_entries(log), entries(6, 10, 1));
        assert_eq!(log.snapshot(5, 2), Ok(s.clone()));
        let state = log.initial_state().unwrap();
        assert_eq!(state.hard_state, hard_state(1, 1, 8));
        assert_eq!(state.conf_state, conf_state(&[1, 2]));
    };
    check(&log);
    // The same index again changes nothing.
    log.compact(s.clone()).unwrap();
    assert_eq!(files(dir.path()), [log_name(1), snapshot_name(1)]);
    drop(log);
    let (log, r) = open(dir.path());
    assert_eq!(r.snapshot, Some(s.clone()));
    assert_eq!((r.first_index, r.last_index), (6, 10));
    assert_eq!(r.conf_state, conf_state(&[1, 2]));
    check(&log);
}

#[test]
fn a_snapshot_request_is_remembered_until_taken() {
    let dir = tempfile::tempdir().unwrap();
    let log = ten_entries(dir.path());
    let unavailable = Err(::raft::Error::Store(
        StorageError::SnapshotTemporarilyUnavailable,
    ));
    assert_eq!(log.snapshot(0, 2), unavailable);
    assert!(log.take_snapshot_request());
    assert!(!log.take_snapshot_request());
    let s = snapshot(4, 1, conf_state(&[1, 2, 3]), b"four");
    log.compact(s.clone()).unwrap();
    assert_eq!(log.snapshot(3, 2), Ok(s.clone()));
    assert!(!log.take_snapshot_request());
    assert_eq!(log.snapshot(5, 2), unavailable);
    assert!(log.take_snapshot_request());
}

#[test]
fn compaction_refuses_what_does_not_fit_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = ten_entries(dir.path());
    let cs = conf_state(&[1]);
    for bad in [
        snapshot(9, 1, cs.clone(), b""), // not committed
        snapshot(5, 2, cs.clone(), b""), // another term
    ] {
        assert!(matches!(log.compact(bad), Err(StoreError::Internal { .. })));
    }
    log.compact(snapshot(5, 1, cs.clone(), b"")).unwrap();
    assert!(matches!(
        log.compact(snapshot(4, 1, cs.clone(), b"")),
        Err(StoreError::Internal { .. })
    ));
    // Appends that overwrite the snapshot or leave a gap change nothing.
    for bad in [
        entries(5, 6, 2),
        entries(12, 12, 2),
        vec![entry(11, 1), entry(13, 1)],
    ] {
        assert!(matches!(log.append(&bad), Err(StoreError::Internal { .. })));
    }
    assert!(matches!(
        log.apply_snapshot(snapshot(5, 1, cs.clone(), b"")),
        Err(StoreError::Internal { .. })
    ));
    assert!(matches!(
        log.initialize(cs),
        Err(StoreError::Internal { .. })
    ));
    assert_eq!(all_entries(&log), entries(6, 10, 1));
    assert_eq!(log.size().1, 5);
}

#[test]
fn a_crash_between_compaction_steps_recovers_the_newest_complete_state() {
    let dir = tempfile::tempdir().unwrap();
    let log = ten_entries(dir.path());
    let first = snapshot(3, 1, conf_state(&[1, 2, 3]), b"three");
    log.compact(first.clone()).unwrap();
    let saved: Vec<(String, Vec<u8>)> = files(dir.path())
        .into_iter()
        .map(|name| {
            let data = fs::read(dir.path().join(&name)).unwrap();
            (name, data)
        })
        .collect();
    assert_eq!(saved.len(), 2);
    let second = snapshot(7, 1, conf_state(&[1, 2, 3]), b"seven");
    log.compact(second.clone()).unwrap();
    drop(log);
    let restore_old = || {
        for (name, data) in &saved {
            fs::write(dir.path().join(name), data).unwrap();
        }
    };

    // Both generations whole (the old one not yet removed): the new one.
    restore_old();
    let (log, r) = open(dir.path());
    assert_eq!(r.snapshot, Some(second.clone()));
    assert_eq!((r.first_index, r.last_index), (8, 10));
    assert_eq!(all_entries(&log), entries(8, 10, 1));
    assert_eq!(files(dir.path()), [log_name(2), snapshot_name(2)]);
    drop(log);

    // The new snapshot in place but not its log: the old generation.
    fs::remove_file(dir.path().join(log_name(2))).unwrap();
    restore_old();
    let (log, r) = open(dir.path());
    assert_eq!(r.snapshot, Some(first.clone()));
    assert_eq!((r.first_index, r.last_index), (4, 10));
    assert_eq!(all_entries(&log), entries(4, 10, 1));
    assert_eq!(files(dir.path()), [log_name(1), snapshot_name(1)]);
    // And the log goes on: compacting again reuses the generation.
    log.compact(second.clone()).unwrap();
    assert_eq!(files(dir.path()), [log_name(2), snapshot_name(2)]);
    drop(log);

    // Only temporary files of the new generation: removed, old generation.
    fs::remove_file(dir.path().join(log_name(2))).unwrap();
    fs::remove_file(dir.path().join(snapshot_name(2))).unwrap();
    restore_old();
    fs::write(dir.path().join(format!("{}.tmp", log_name(2))), b"half").unwrap();
    fs::write(
        dir.path().join(format!("{}.tmp", snapshot_name(2))),
        b"half",
    )
    .unwrap();
    let (_log, r) = open(dir.path());
    assert_eq!(r.snapshot, Some(first));
    assert_eq!(files(dir.path()), [log_name(1), snapshot_name(1)]);
}

#[test]
fn a_log_without_its_snapshot_or_a_snapshot_without_a_log_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let log = ten_entries(dir.path());
    log.compact(snapshot(3, 1, conf_state(&[1]), b"")).unwrap();
    drop(log);
    let snapshot_path = dir.path().join(snapshot_name(1));
    let data = fs::read(&snapshot_path).unwrap();
    fs::remove_file(&snapshot_path).unwrap();
    assert!(matches!(
        RaftLog::open(dir.path()),
        Err(StoreError::Corrupt { path, .. }) if path == dir.path().join(log_name(1))
    ));
    fs::write(&snapshot_path, &data).unwrap();
    fs::remove_file(dir.path().join(log_name(1))).unwrap();
    assert!(matches!(
        RaftLog::open(dir.path()),
        Err(StoreError::Corrupt { path, .. }) if path == snapshot_path
    ));
    // A damaged snapshot.
    let mut bad = data.clone();
    let n = bad.len();
    bad[n - 2] ^= 1;
    fs::write(&snapshot_path, &bad).unwrap();
    fs::write(dir.path().join(log_name(1)), disk::log_file_bytes(1, &[])).unwrap();
    assert!(matches!(
        RaftLog::open(dir.path()),
        Err(StoreError::Corrupt { path, .. }) if path == snapshot_path
    ));
}

#[test]
fn a_snapshot_newer_than_the_log_replaces_it_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = ten_entries(dir.path());
    let s = snapshot(15, 3, conf_state(&[2, 3, 4]), b"leader's state at 15");
    log.apply_snapshot(s.clone()).unwrap();
    let check = |log: &RaftLog| {
        assert_eq!((log.first_index(), log.last_index()), (Ok(16), Ok(15)));
        assert_eq!(log.term(15), Ok(3));
        let state = log.initial_state().unwrap();
        assert_eq!(state.hard_state, hard_state(3, 1, 15));
        assert_eq!(state.conf_state, conf_state(&[2, 3, 4]));
        assert_eq!(log.snapshot(15, 2), Ok(s.clone()));
        // Not to a server the snapshot's membership lacks (one added since
        // would refuse it): the node is asked for a newer one.
        assert!(log.snapshot(15, 1).is_err());
        assert!(log.take_snapshot_request());
        assert_eq!(log.size().1, 0);
    };
    check(&log);
    drop(log);
    let (log, r) = open(dir.path());
    assert_eq!(r.snapshot, Some(s.clone()));
    check(&log);
    // Appends follow the snapshot.
    log.append(&entries(16, 17, 3)).unwrap();
    log.sync().unwrap();
    drop(log);
    let (log, _) = open(dir.path());
    assert_eq!(all_entries(&log), entries(16, 17, 3));
}

#[test]
fn a_snapshot_inside_the_log_keeps_what_follows_when_the_terms_match() {
    let dir = tempfile::tempdir().unwrap();
    let log = ten_entries(dir.path());
    let s = snapshot(6, 1, conf_state(&[1, 2]), b"six");
    log.apply_snapshot(s.clone()).unwrap();
    drop(log);
    let (log, r) = open(dir.path());
    assert_eq!(r.snapshot, Some(s));
    assert_eq!((r.first_index, r.last_index), (7, 10));
    assert_eq!(all_entries(&log), entries(7, 10, 1));
    // The commit index does not go back.
    assert_eq!(r.hard_state, hard_state(1, 1, 8));
    assert_eq!(r.conf_state, conf_state(&[1, 2]));

    // Another term at its index: the log does not hold it, all goes.
    let s = snapshot(9, 2, conf_state(&[1]), b"nine");
    log.apply_snapshot(s.clone()).unwrap();
    drop(log);
    let (log, r) = open(dir.path());
    assert_eq!((r.first_index, r.last_index), (10, 9));
    assert_eq!(r.hard_state, hard_state(2, 1, 9));
    assert_eq!(log.term(9), Ok(2));
    assert_eq!(r.snapshot, Some(s));
}
