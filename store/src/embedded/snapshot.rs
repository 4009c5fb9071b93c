//! Snapshots of the embedded store: the whole applied state written as
//! frames (`frame.rs`) to `snapshot-<gen>`, and read back on open. The
//! store's documentation says when they are written and how they are put
//! in place.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::Path;

use super::codec::{self, Dec, Enc};
use super::frame;
use crate::engine::Shared;
use crate::state::StateMachine;
use crate::{LeaseId, StoreError, StoreResult};

const SNAPSHOT_MAGIC: &[u8; 8] = b"FLOTSNP1";

/// Snapshot frames hold about this many bytes of keys each.
const SNAPSHOT_CHUNK: usize = 1024 * 1024;

const FRAME_META: u8 = b'M';
const FRAME_LEASES: u8 = b'L';
const FRAME_KEYS: u8 = b'K';
const FRAME_END: u8 = b'E';

/// Writes frames to a file (through a buffer) or to memory.
struct FrameWriter<W> {
    out: W,
    frame: Vec<u8>,
}

impl<W: Write> FrameWriter<W> {
    fn frame(&mut self, payload: &[u8]) -> io::Result<()> {
        self.frame.clear();
        frame::encode(payload, &mut self.frame);
        self.out.write_all(&self.frame)
    }

    /// Writes a chunk of keys: tag, count, then the encoded keys.
    fn keys(&mut self, count: usize, encoded: &mut Enc) -> io::Result<()> {
        let mut payload = Enc::default();
        payload.u8(FRAME_KEYS);
        payload.len(count);
        payload.buf.extend_from_slice(&encoded.buf);
        encoded.buf.clear();
        self.frame(&payload.buf)
    }
}

/// Writes (and fsyncs) a snapshot of the applied state to `path`; returns
/// its size.
pub(super) fn write_snapshot(path: &Path, shared: &Shared, next_index: u64) -> StoreResult<u64> {
    let io_err = |e| StoreError::io("writing", path, e);
    let file = File::create(path).map_err(io_err)?;
    let mut out = FrameWriter {
        out: BufWriter::new(file),
        frame: Vec::new(),
    };
    {
        // Readers share this lock; only the writer (busy here) changes the
        // state, so the snapshot is consistent without stopping reads.
        let state = shared.read();
        write_state(&mut out, &state, next_index).map_err(io_err)?;
    }
    let file = out.out.into_inner().map_err(|e| io_err(e.into_error()))?;
    file.sync_all().map_err(io_err)?;
    file.metadata().map(|m| m.len()).map_err(io_err)
}

/// Writes the whole of `state` as snapshot frames, magic first.
fn write_state<W: Write>(
    out: &mut FrameWriter<W>,
    state: &StateMachine,
    next_index: u64,
) -> io::Result<()> {
    out.out.write_all(SNAPSHOT_MAGIC)?;
    let mut meta = Enc::default();
    meta.u8(FRAME_META);
    meta.u64(next_index);
    meta.u64(state.revision());
    meta.i64(state.next_lease());
    meta.u64(state.leases().len() as u64);
    meta.u64(state.entries().len() as u64);
    out.frame(&meta.buf)?;

    let leases: Vec<_> = state.leases().collect();
    for chunk in leases.chunks(SNAPSHOT_CHUNK / 16) {
        let mut enc = Enc::default();
        enc.u8(FRAME_LEASES);
        enc.len(chunk.len());
        for (id, lease) in chunk {
            enc.i64(id.0);
            enc.u64(lease.ttl_ms);
        }
        out.frame(&enc.buf)?;
    }

    let mut keys = Enc::default();
    let mut count = 0;
    for (key, entry) in state.entries() {
        codec::encode_entry(key, entry, &mut keys);
        count += 1;
        if keys.buf.len() >= SNAPSHOT_CHUNK {
            out.keys(count, &mut keys)?;
            count = 0;
        }
    }
    if count > 0 {
        out.keys(count, &mut keys)?;
    }
    out.frame(&[FRAME_END])
}

/// The whole of `state` in the snapshot format, in memory (the raft store
/// sends it to a follower that fell behind its log), with the log index it
/// stands for.
pub(crate) fn encode_state(state: &StateMachine, index: u64) -> Vec<u8> {
    let mut out = FrameWriter {
        out: Vec::new(),
        frame: Vec::new(),
    };
    // Writing to a Vec cannot fail.
    let _ = write_state(&mut out, state, index);
    out.out
}

/// Reads what [`encode_state`] wrote: the state and its index, or the
/// offset and reason of the damage.
pub(crate) fn decode_state(data: &[u8]) -> Result<(StateMachine, u64), (usize, String)> {
    parse_snapshot(data)
}

/// Loads a snapshot: the state and the log index that follows it. Any
/// damage is corruption (a snapshot is renamed into place only once it is
/// whole and synced).
pub(super) fn load_snapshot(path: &Path) -> StoreResult<(StateMachine, u64)> {
    let data = fs::read(path).map_err(|e| StoreError::io("reading", path, e))?;
    parse_snapshot(&data).map_err(|(offset, reason)| StoreError::Corrupt {
        path: path.to_owned(),
        offset: offset as u64,
        reason,
    })
}

/// Parses a snapshot file; errors carry the offset of the bad frame.
fn parse_snapshot(data: &[u8]) -> Result<(StateMachine, u64), (usize, String)> {
    if !data.starts_with(SNAPSHOT_MAGIC) {
        return Err((0, "not a flotilla snapshot".to_owned()));
    }
    let (frames, end) = frame::scan(data, SNAPSHOT_MAGIC.len());
    match end {
        frame::End::Clean => {}
        frame::End::Torn { offset, reason } | frame::End::Corrupt { offset, reason } => {
            return Err((offset, reason));
        }
    }
    let mut frames = frames.into_iter();
    let meta = frames
        .next()
        .ok_or_else(|| (data.len(), "snapshot has no frames".to_owned()))?;
    let at = |offset: usize| move |reason: String| (offset, reason);
    let mut dec = Dec::new(meta.payload);
    let summary = (|| {
        if dec.u8()? != FRAME_META {
            return Err("snapshot does not start with its summary".to_owned());
        }
        let summary = (dec.u64()?, dec.u64()?, dec.i64()?, dec.u64()?, dec.u64()?);
        dec.finish()?;
        Ok(summary)
    })();
    let (next_index, revision, next_lease, lease_count, key_count) =
        summary.map_err(at(meta.offset))?;

    let mut leases = Vec::new();
    let mut kvs = Vec::new();
    let mut end_offset = None;
    for frame in frames.by_ref() {
        let mut dec = Dec::new(frame.payload);
        let last = (|| {
            match dec.u8()? {
                FRAME_LEASES => {
                    for _ in 0..dec.count()? {
                        leases.push((LeaseId(dec.i64()?), dec.u64()?));
                    }
                }
                FRAME_KEYS => {
                    for _ in 0..dec.count()? {
                        kvs.push(codec::decode_entry(&mut dec)?);
                    }
                }
                FRAME_END => {}
                other => return Err(format!("unknown snapshot frame {other}")),
            }
            dec.finish()?;
            Ok(frame.payload.first() == Some(&FRAME_END))
        })()
        .map_err(at(frame.offset))?;
        if last {
            end_offset = Some(frame.offset);
            break;
        }
    }
    let end_offset =
        end_offset.ok_or_else(|| (data.len(), "snapshot has no end frame".to_owned()))?;
    if frames.next().is_some() {
        return Err((end_offset, "frames after the snapshot's end".to_owned()));
    }
    if leases.len() as u64 != lease_count || kvs.len() as u64 != key_count {
        return Err((
            end_offset,
            format!(
                "snapshot holds {} leases and {} keys, its summary says {lease_count} and {key_count}",
                leases.len(),
                kvs.len()
            ),
        ));
    }
    let state =
        StateMachine::from_parts(revision, next_lease, leases, kvs).map_err(at(meta.offset))?;
    Ok((state, next_index))
}
