//! The writer task of the embedded store: the single owner of the log.
//! It gathers waiting requests into group commits (one frame, one fsync),
//! applies and answers them, and writes snapshots when the log grows; the
//! store's documentation says how.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::codec::Enc;
use super::snapshot::write_snapshot;
use super::{
    EmbeddedOptions, Pending, Request, WAL_HEADER_LEN, blocking, create_wal, frame, snapshot_name,
    sync_dir, wal_name,
};
use crate::engine::Shared;
use crate::{StoreError, StoreResult, lock};

/// The single owner of the log.
pub(super) struct Writer {
    pub(super) dir: PathBuf,
    pub(super) shared: Arc<Shared>,
    /// The open log; `None` once a failure made it unusable.
    pub(super) wal: Option<File>,
    pub(super) wal_path: PathBuf,
    pub(super) wal_len: u64,
    pub(super) generation: u64,
    /// The log index of the next command.
    pub(super) next_index: u64,
    pub(super) next_checkpoint_at: u64,
    pub(super) options: EmbeddedOptions,
    /// Set when the log can no longer be trusted; every later write fails
    /// with it.
    pub(super) failed: Option<StoreError>,
    pub(super) checkpoint_error: Arc<Mutex<Option<StoreError>>>,
    /// Held for the writer's life: releases the directory when dropped.
    pub(super) _lock: File,
}

impl Writer {
    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut close = None;
        while close.is_none() {
            let Some(first) = rx.recv().await else {
                break;
            };
            let mut group = Vec::new();
            let mut bytes = 0;
            let mut checkpoints = Vec::new();
            let mut next = Some(first);
            while let Some(request) = next.take() {
                match request {
                    Request::Commit(pending) => {
                        bytes += pending.encoded.len();
                        group.push(pending);
                    }
                    Request::Checkpoint(reply) => checkpoints.push(reply),
                    Request::Close(reply) => {
                        close = Some(reply);
                        break;
                    }
                }
                if bytes >= self.options.max_group_bytes {
                    break;
                }
                next = rx.try_recv().ok();
            }
            self.commit_group(group).await;
            if !checkpoints.is_empty() || self.wal_len >= self.next_checkpoint_at {
                let result = self.checkpoint().await;
                *lock(&self.checkpoint_error) = result.as_ref().err().cloned();
                if result.is_err() {
                    // Try again after another threshold's worth of log.
                    self.next_checkpoint_at = self.wal_len + self.options.snapshot_threshold;
                }
                for reply in checkpoints {
                    let _ = reply.send(result.clone());
                }
            }
        }
        rx.close();
        while let Ok(request) = rx.try_recv() {
            match request {
                Request::Commit(pending) => {
                    let _ = pending.reply.send(Err(StoreError::Closed));
                }
                Request::Checkpoint(reply) => {
                    let _ = reply.send(Err(StoreError::Closed));
                }
                Request::Close(reply) => {
                    let _ = reply.send(());
                }
            }
        }
        // Close the log and release the lock before saying so.
        drop(self);
        if let Some(reply) = close {
            let _ = reply.send(());
        }
    }

    /// Appends a group as one frame, fsyncs, applies, answers.
    async fn commit_group(&mut self, group: Vec<Pending>) {
        if group.is_empty() {
            return;
        }
        if let Err(error) = self.append(&group).await {
            for pending in group {
                let _ = pending.reply.send(Err(error.clone()));
            }
            return;
        }
        let outcomes = self.shared.apply(group.iter().map(|p| &p.command));
        for (pending, outcome) in group.into_iter().zip(outcomes) {
            // The caller may have given up waiting: the write stands anyway.
            let _ = pending.reply.send(outcome);
        }
    }

    async fn append(&mut self, group: &[Pending]) -> StoreResult<()> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let Some(mut file) = self.wal.take() else {
            return Err(StoreError::Closed);
        };
        let mut payload = Enc::default();
        payload.u64(self.next_index);
        payload.len(group.len());
        for pending in group {
            payload.buf.extend_from_slice(&pending.encoded);
        }
        let mut bytes = Vec::with_capacity(payload.buf.len() + frame::HEADER_LEN);
        frame::encode(&payload.buf, &mut bytes);
        let len = bytes.len() as u64;
        let written = tokio::task::spawn_blocking(move || {
            let result = file.write_all(&bytes).and_then(|()| file.sync_data());
            (file, result)
        })
        .await;
        let error = match written {
            Ok((file, Ok(()))) => {
                self.wal = Some(file);
                self.wal_len += len;
                self.next_index += group.len() as u64;
                return Ok(());
            }
            Ok((_, Err(error))) => error,
            Err(join) => io::Error::other(join.to_string()),
        };
        let error = StoreError::io("appending to", &self.wal_path, error);
        self.failed = Some(error.clone());
        Err(error)
    }

    /// Writes a snapshot of the applied state and switches to a new log.
    async fn checkpoint(&mut self) -> StoreResult<()> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let old = self.generation;
        let new = old + 1;
        let tmp = self.dir.join(format!("{}.tmp", snapshot_name(new)));
        let snapshot_len = {
            let (shared, tmp2, next_index) = (self.shared.clone(), tmp.clone(), self.next_index);
            // Failing here leaves the current log in use: nothing is lost.
            blocking("writing", &tmp, move || {
                write_snapshot(&tmp2, &shared, next_index)
            })
            .await
            .inspect_err(|_| {
                let _ = fs::remove_file(&tmp);
            })?
        };
        // Once the rename may have happened, the new snapshot is what a
        // restart loads and the current log would be ignored: every later
        // write must go to the new log, or the store must stop writing.
        let dir = self.dir.clone();
        let switched = blocking("starting a new log in", &self.dir, move || {
            let snapshot = dir.join(snapshot_name(new));
            fs::rename(&tmp, &snapshot).map_err(|e| StoreError::io("renaming", &tmp, e))?;
            sync_dir(&dir)?;
            let wal_path = dir.join(wal_name(new));
            let wal = create_wal(&wal_path, new)?;
            sync_dir(&dir)?;
            Ok((wal, wal_path))
        })
        .await;
        let (wal, wal_path) = match switched {
            Ok(switched) => switched,
            Err(error) => {
                self.wal = None;
                self.failed = Some(error.clone());
                return Err(error);
            }
        };
        self.wal = Some(wal);
        self.wal_path = wal_path;
        self.wal_len = WAL_HEADER_LEN as u64;
        self.generation = new;
        self.next_checkpoint_at = self.wal_len + self.options.snapshot_threshold.max(snapshot_len);
        // The old generation is garbage now; a failure to remove it is
        // harmless (open removes leftovers).
        let dir = self.dir.clone();
        let _ = blocking("removing old files in", &self.dir, move || {
            let _ = fs::remove_file(dir.join(wal_name(old)));
            let _ = fs::remove_file(dir.join(snapshot_name(old)));
            sync_dir(&dir)
        })
        .await;
        Ok(())
    }
}
