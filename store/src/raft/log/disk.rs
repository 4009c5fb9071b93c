//! The raft log's files: their names, the records of a log file, snapshot
//! files, and opening a directory (choosing the generation, replaying its
//! log, cutting a torn tail). [`RaftLog`](super::RaftLog)'s documentation
//! says how the files are used.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use ::raft::prelude::{ConfState, Entry, HardState, Snapshot};
use protobuf::Message;

use super::Mem;
use crate::embedded::frame;
use crate::{StoreError, StoreResult};

const LOG_MAGIC: &[u8; 8] = b"FLOTRLG1";
/// Magic, generation (`u64`), CRC32 of both.
pub(super) const LOG_HEADER_LEN: usize = crate::embedded::frame::LOG_HEADER_LEN;
const SNAPSHOT_MAGIC: &[u8; 8] = b"FLOTRSN1";
pub(super) const LOCK_FILE: &str = "raft.lock";
const LOG_PREFIX: &str = "raft-log-";
const SNAPSHOT_PREFIX: &str = "raft-snapshot-";

const TAG_ENTRY: u8 = b'E';
const TAG_HARD_STATE: u8 = b'H';
const TAG_COMMIT: u8 = b'C';
const TAG_CONF_STATE: u8 = b'S';

pub(super) fn log_name(generation: u64) -> String {
    format!("{LOG_PREFIX}{generation:016x}")
}

pub(super) fn snapshot_name(generation: u64) -> String {
    format!("{SNAPSHOT_PREFIX}{generation:016x}")
}

pub(super) fn tmp_name(name: &str) -> String {
    format!("{name}.tmp")
}

use crate::embedded::frame::parse_generation;
pub(super) use crate::embedded::frame::sync_dir;

fn log_header(generation: u64) -> [u8; LOG_HEADER_LEN] {
    crate::embedded::frame::log_header(LOG_MAGIC, generation)
}

/// One record of a log file. A frame (one [`sync`](super::RaftLog::sync))
/// holds one or more records, each `[u8 tag][u32 length][body]`: an entry
/// or a hard state or a conf state (protobuf), or a commit index (`u64`).
#[derive(Debug)]
pub(super) enum Record {
    Entry(Entry),
    HardState(HardState),
    Commit(u64),
    ConfState(ConfState),
}

fn encode_message(tag: u8, message: &impl Message, out: &mut Vec<u8>) -> StoreResult<()> {
    let body = message.write_to_bytes().map_err(|e| StoreError::Internal {
        reason: format!("encoding a raft log record: {e}"),
    })?;
    encode_raw(tag, &body, out);
    Ok(())
}

fn encode_raw(tag: u8, body: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    // Bodies are raft entries and states, bounded by the frame's own u32
    // length; a larger one would fail its frame's checksum, not be misread.
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(body);
}

pub(super) fn encode_entry(entry: &Entry, out: &mut Vec<u8>) -> StoreResult<()> {
    encode_message(TAG_ENTRY, entry, out)
}

pub(super) fn encode_hard_state(hs: &HardState, out: &mut Vec<u8>) -> StoreResult<()> {
    encode_message(TAG_HARD_STATE, hs, out)
}

pub(super) fn encode_conf_state(cs: &ConfState, out: &mut Vec<u8>) -> StoreResult<()> {
    encode_message(TAG_CONF_STATE, cs, out)
}

pub(super) fn encode_commit(commit: u64, out: &mut Vec<u8>) {
    encode_raw(TAG_COMMIT, &commit.to_le_bytes(), out);
}

/// The records of one frame's payload.
fn decode_records(mut payload: &[u8]) -> Result<Vec<Record>, String> {
    let mut records = Vec::new();
    while !payload.is_empty() {
        if payload.len() < 5 {
            return Err(format!("{} bytes of a record header", payload.len()));
        }
        let tag = payload[0];
        let len = u32::from_le_bytes([payload[1], payload[2], payload[3], payload[4]]) as usize;
        let body = payload
            .get(5..5 + len)
            .ok_or_else(|| format!("record of {len} bytes runs past the end of its frame"))?;
        payload = &payload[5 + len..];
        let parse_error = |what: &str, e: protobuf::ProtobufError| format!("bad {what}: {e}");
        records.push(match tag {
            TAG_ENTRY => {
                Record::Entry(Entry::parse_from_bytes(body).map_err(|e| parse_error("entry", e))?)
            }
            TAG_HARD_STATE => Record::HardState(
                HardState::parse_from_bytes(body).map_err(|e| parse_error("hard state", e))?,
            ),
            TAG_CONF_STATE => Record::ConfState(
                ConfState::parse_from_bytes(body).map_err(|e| parse_error("conf state", e))?,
            ),
            TAG_COMMIT => {
                let bytes: [u8; 8] = body
                    .try_into()
                    .map_err(|_| format!("commit record of {len} bytes, not 8"))?;
                Record::Commit(u64::from_le_bytes(bytes))
            }
            other => return Err(format!("unknown record tag {other}")),
        });
    }
    Ok(records)
}

/// The bytes of a new log file: its header, then `records` as one frame.
pub(super) fn log_file_bytes(generation: u64, records: &[u8]) -> Vec<u8> {
    let mut bytes = log_header(generation).to_vec();
    if !records.is_empty() {
        frame::encode(records, &mut bytes);
    }
    bytes
}

/// The bytes of a snapshot file: magic, then the snapshot (protobuf) as
/// one frame.
pub(super) fn snapshot_file_bytes(snapshot: &Snapshot) -> StoreResult<Vec<u8>> {
    let body = snapshot
        .write_to_bytes()
        .map_err(|e| StoreError::Internal {
            reason: format!("encoding a raft snapshot: {e}"),
        })?;
    let mut bytes = SNAPSHOT_MAGIC.to_vec();
    frame::encode(&body, &mut bytes);
    Ok(bytes)
}

/// Writes `bytes` to a new file at `path` and fsyncs it.
pub(super) fn write_synced(path: &Path, bytes: &[u8]) -> StoreResult<()> {
    let _ = fs::remove_file(path);
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(path)
        .map_err(|e| StoreError::io("creating", path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| StoreError::io("writing", path, e))
}

/// Renames a synced temporary file into place and syncs the directory.
pub(super) fn rename_into_place(dir: &Path, tmp: &Path, path: &Path) -> StoreResult<()> {
    fs::rename(tmp, path).map_err(|e| StoreError::io("renaming", tmp, e))?;
    sync_dir(dir)
}

pub(super) fn open_append(path: &Path) -> StoreResult<File> {
    OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| StoreError::io("opening", path, e))
}

/// Loads a snapshot file. Any damage is corruption: a snapshot is renamed
/// into place only once it is whole and synced.
fn load_snapshot(path: &Path) -> StoreResult<Snapshot> {
    let corrupt = |offset: usize, reason: String| StoreError::Corrupt {
        path: path.to_owned(),
        offset: offset as u64,
        reason,
    };
    let data = fs::read(path).map_err(|e| StoreError::io("reading", path, e))?;
    if !data.starts_with(SNAPSHOT_MAGIC) {
        return Err(corrupt(0, "not a flotilla raft snapshot".to_owned()));
    }
    let (frames, end) = frame::scan(&data, SNAPSHOT_MAGIC.len());
    match end {
        frame::End::Clean => {}
        frame::End::Torn { offset, reason } | frame::End::Corrupt { offset, reason } => {
            return Err(corrupt(offset, reason));
        }
    }
    let [frame] = frames.as_slice() else {
        return Err(corrupt(
            SNAPSHOT_MAGIC.len(),
            format!("{} frames, not one", frames.len()),
        ));
    };
    Snapshot::parse_from_bytes(frame.payload)
        .map_err(|e| corrupt(frame.offset, format!("bad snapshot: {e}")))
}

/// What opening a directory found.
pub(super) struct Opened {
    pub lock: File,
    pub generation: u64,
    pub path: PathBuf,
    pub file: File,
    pub len: u64,
    pub mem: Mem,
    pub fresh: bool,
    pub torn_tail: Option<String>,
}

/// Opens (creating when absent) the raft log in `dir`: see
/// [`RaftLog`](super::RaftLog), Files.
pub(super) fn open(dir: &Path) -> StoreResult<Opened> {
    let created = !dir.exists();
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| StoreError::io("creating", dir, e))?;
    if created && let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    let lock_path = dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError::io("opening", &lock_path, e))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => return Err(StoreError::Locked { path: lock_path }),
        Err(fs::TryLockError::Error(e)) => return Err(StoreError::io("locking", &lock_path, e)),
    }

    let mut logs = Vec::new();
    let mut snapshots = Vec::new();
    let mut removed = false;
    for entry in fs::read_dir(dir).map_err(|e| StoreError::io("listing", dir, e))? {
        let entry = entry.map_err(|e| StoreError::io("listing", dir, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let ours = name.starts_with(LOG_PREFIX) || name.starts_with(SNAPSHOT_PREFIX);
        if ours && name.ends_with(".tmp") {
            // A file being written when the process stopped.
            let path = entry.path();
            fs::remove_file(&path).map_err(|e| StoreError::io("removing", &path, e))?;
            removed = true;
        } else if let Some(generation) = parse_generation(&name, LOG_PREFIX) {
            logs.push(generation);
        } else if let Some(generation) = parse_generation(&name, SNAPSHOT_PREFIX) {
            snapshots.push(generation);
        }
    }

    let fresh = logs.is_empty();
    let generation = match logs.iter().copied().max() {
        Some(generation) => generation,
        None => {
            if let Some(&g) = snapshots.iter().max() {
                return Err(StoreError::Corrupt {
                    path: dir.join(snapshot_name(g)),
                    offset: 0,
                    reason: "a raft snapshot without any raft log: the log was lost".to_owned(),
                });
            }
            let path = dir.join(log_name(0));
            let tmp = dir.join(tmp_name(&log_name(0)));
            write_synced(&tmp, &log_file_bytes(0, &[]))?;
            rename_into_place(dir, &tmp, &path)?;
            0
        }
    };

    let mut mem = Mem::default();
    if generation > 0 {
        let path = dir.join(snapshot_name(generation));
        if !snapshots.contains(&generation) {
            return Err(StoreError::Corrupt {
                path: dir.join(log_name(generation)),
                offset: 0,
                reason: format!(
                    "the snapshot it follows, {}, is missing",
                    snapshot_name(generation)
                ),
            });
        }
        mem.restore(load_snapshot(&path)?);
    }
    let path = dir.join(log_name(generation));
    let (len, torn_tail) = replay(&path, generation, &mut mem)?;

    // An interrupted compaction's new snapshot (its log was never put in
    // place), and the files of older generations.
    for g in snapshots.into_iter().filter(|&g| g != generation) {
        let stale = dir.join(snapshot_name(g));
        fs::remove_file(&stale).map_err(|e| StoreError::io("removing", &stale, e))?;
        removed = true;
    }
    for g in logs.into_iter().filter(|&g| g < generation) {
        let stale = dir.join(log_name(g));
        fs::remove_file(&stale).map_err(|e| StoreError::io("removing", &stale, e))?;
        removed = true;
    }
    if removed {
        sync_dir(dir)?;
    }
    let file = open_append(&path)?;
    Ok(Opened {
        lock,
        generation,
        path,
        file,
        len,
        mem,
        fresh,
        torn_tail,
    })
}

/// Replays a log file into `mem`, cutting off a torn tail; returns the
/// file's length after that, and the warning about the tail.
fn replay(path: &Path, generation: u64, mem: &mut Mem) -> StoreResult<(u64, Option<String>)> {
    let corrupt = |offset: usize, reason: String| StoreError::Corrupt {
        path: path.to_owned(),
        offset: offset as u64,
        reason,
    };
    let data = fs::read(path).map_err(|e| StoreError::io("reading", path, e))?;
    // Log files are renamed into place only once their header is synced.
    if data.get(..LOG_HEADER_LEN) != Some(&log_header(generation)[..]) {
        return Err(corrupt(
            0,
            format!("not a flotilla raft log header for generation {generation}"),
        ));
    }
    let (frames, end) = frame::scan(&data, LOG_HEADER_LEN);
    for frame in frames {
        let records = decode_records(frame.payload).map_err(|r| corrupt(frame.offset, r))?;
        for record in records {
            match record {
                Record::Entry(entry) => mem
                    .append(std::slice::from_ref(&entry))
                    .map_err(|r| corrupt(frame.offset, r))?,
                Record::HardState(hs) => mem.hard_state = hs,
                Record::Commit(commit) => mem.hard_state.commit = commit,
                Record::ConfState(cs) => mem.conf_state = cs,
            }
        }
    }
    let (len, torn_tail) = match end {
        frame::End::Clean => (data.len(), None),
        frame::End::Corrupt { offset, reason } => return Err(corrupt(offset, reason)),
        frame::End::Torn { offset, reason } => {
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| StoreError::io("opening", path, e))?;
            file.set_len(offset as u64)
                .and_then(|()| file.sync_all())
                .map_err(|e| StoreError::io("truncating", path, e))?;
            let warning = format!(
                "the raft log ends in an incomplete write: either the last sync was interrupted \
                 before it was acknowledged, or the file was truncated; cut {} bytes at offset \
                 {offset} of {} ({reason})",
                data.len() - offset,
                path.display()
            );
            (offset, Some(warning))
        }
    };
    if mem.hard_state.commit > mem.last_index() {
        return Err(corrupt(
            len,
            format!(
                "the commit index {} is past the last entry {}",
                mem.hard_state.commit,
                mem.last_index()
            ),
        ));
    }
    Ok((len as u64, torn_tail))
}

/// Removes a generation's files, once a newer one is in place. Failing is
/// harmless: opening removes them too.
pub(super) fn remove_generation(dir: &Path, generation: u64) {
    let _ = fs::remove_file(dir.join(log_name(generation)));
    if generation > 0 {
        let _ = fs::remove_file(dir.join(snapshot_name(generation)));
    }
    let _ = sync_dir(dir);
}
