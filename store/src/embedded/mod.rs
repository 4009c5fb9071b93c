//! [`EmbeddedStore`]: the durable store on local disk (the default for
//! `flotilla server --data-dir DIR` and `flotilla dev`). Its documentation
//! says how it works: files, group commit, snapshots, damage policy.

pub(crate) mod codec;
pub(crate) mod frame;
mod layout;
pub(crate) mod snapshot;
mod writer;

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use flotilla_proto::ClusterId;

use self::codec::{Dec, Enc};
use self::frame::sync_dir;
use self::snapshot::load_snapshot;
use self::writer::Writer;
use super::engine::{Committer, Engine, Shared};
use super::identity::{Identity, StateLocation, new_cluster_id, write_identity};
use super::state::{Command, Outcome, StateMachine};
use super::{
    BoxFuture, GetResponse, HistoryStats, LeaseGrant, LeaseId, Limits, RangeOptions, RangeResponse,
    Store, StoreError, StoreResult, Txn, TxnResponse, WatchOptions, Watcher, lock,
};

const WAL_MAGIC: &[u8; 8] = b"FLOTWAL1";
const WAL_HEADER_LEN: usize = frame::LOG_HEADER_LEN;
const LOCK_FILE: &str = "LOCK";

/// Requests waiting for the writer before callers wait to enqueue.
const QUEUE_LEN: usize = 4096;

/// Options of an [`EmbeddedStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// Request limits.
    pub limits: Limits,
    /// Watch history.
    pub watch: WatchOptions,
    /// Write a snapshot and start a new log once the log is larger than
    /// this many bytes, or than the last snapshot if that is larger (so that
    /// writing snapshots never costs more than writing the log).
    pub snapshot_threshold: u64,
    /// Most bytes of commands gathered into one group commit (one frame, one
    /// fsync); a single larger command still goes alone.
    pub max_group_bytes: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            limits: Limits::default(),
            watch: WatchOptions::default(),
            snapshot_threshold: 64 * 1024 * 1024,
            max_group_bytes: 4 * 1024 * 1024,
        }
    }
}

/// What opening an [`EmbeddedStore`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The cluster the directory belongs to (its identity file).
    pub cluster_id: ClusterId,
    /// Whether the directory was initialized before, or just now.
    pub initialized: Initialized,
    /// The generation opened (files `snapshot-<gen>` and `wal-<gen>`).
    pub generation: u64,
    /// The revision of the snapshot loaded, if there was one.
    pub snapshot_revision: Option<u64>,
    /// Commands replayed from the log.
    pub replayed_commands: u64,
    /// The store revision after opening.
    pub revision: u64,
    /// Leases restored, each with its whole TTL from now.
    pub leases: usize,
    /// An incomplete write cut off the end of the log: the last group
    /// commit, interrupted before it was acknowledged, or the end of a file
    /// that was truncated (the two look the same). Worth a warning in the
    /// log: its `Display` says so.
    pub torn_tail: Option<TornTail>,
    /// Leftovers of an interrupted snapshot that were removed.
    pub removed_files: Vec<PathBuf>,
}

/// When the directory got its identity file (see [`EmbeddedStore`],
/// Identity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initialized {
    /// On an earlier open: the directory's state was checked against it.
    Before,
    /// Now: the directory was empty (or absent), a new cluster.
    New,
    /// Now: the directory held a store made by an earlier version of
    /// flotilla, without an identity file; it was given one (and a warning
    /// logged).
    Adopted,
}

/// An incomplete write cut off the end of a log on open (see the damage
/// policy of [`EmbeddedStore`]). Its `Display` is the warning to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The log file.
    pub path: PathBuf,
    /// Where the log now ends.
    pub offset: u64,
    /// How many bytes were cut off.
    pub discarded_bytes: u64,
    /// What the tail looked like.
    pub reason: String,
}

impl std::fmt::Display for TornTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the store's log ends in an incomplete write: either the last group commit was \
             interrupted before it was acknowledged, or the file was truncated; cut {} bytes \
             at offset {} of {} ({})",
            self.discarded_bytes,
            self.offset,
            self.path.display(),
            self.reason
        )
    }
}

/// The durable store on local disk (the default for `flotilla server
/// --data-dir DIR` and `flotilla dev`).
///
/// It is the shared state machine plus a write-ahead log of commands: a
/// write is encoded, appended to the log and fdatasync'd, and only then
/// applied and answered. So every acknowledged write survives kill -9 and a
/// power cut, readers and watchers never see a write that could still be
/// lost, and the log can later become a raft log.
///
/// # Files
///
/// In the data directory:
///
/// - `LOCK`: held (`flock`) while a store has the directory open.
/// - `identity`: the cluster the directory belongs to, written once when
///   the directory is initialized (JSON: `clusterId`, `createdAt`, `state`;
///   see `identity.rs`).
/// - `snapshot-<gen>` (16 hex digits): the whole state after every command
///   of the logs before generation `gen`. Absent for generation 0.
/// - `wal-<gen>`: the commands after that snapshot. A 20-byte header (magic
///   `FLOTWAL1`, the generation as `u64`, a CRC32 of both), then frames
///   (`[u32 length][u32 payload CRC][u32 header CRC][payload]`, see
///   `frame.rs`). One frame is one group commit: the log index of its first
///   command (`u64`), a count (`u32`), and the commands (one per
///   transaction, lease grant, revoke or expiry; encoding in `codec.rs`).
/// - `snapshot-<gen>.tmp`, `wal-<gen>.tmp`, `identity.tmp`: a file being
///   written; removed on open.
///
/// # Identity
///
/// A directory is initialized once. Opening an empty directory (no file at
/// all, or only `LOCK` and `lost+found`), or one that does not exist,
/// starts a new cluster: the first log is created (through a temporary
/// file, so it is never seen without its header), then the identity file
/// with a new random cluster id. From then on the store knows the
/// directory must hold its state, and refuses to open it
/// ([`StoreError::StateLost`], naming what is missing) when its log and
/// snapshots are missing, when the log is empty, or when the log after the
/// newest snapshot is missing or empty (except right after a crash between
/// a snapshot and its new log, when the previous log is still there). A
/// directory with other files but no identity and no log (a mistyped
/// `--data-dir`) is refused too ([`StoreError::NotAStore`]), as is the data
/// directory of a server on etcd. A directory with a log but no identity
/// file, made by an earlier version, is adopted: it gets an identity file
/// and a warning is logged ([`Recovery::initialized`]). So a lost log never
/// opens as an empty cluster whose agents would stop every unit.
///
/// # Group commit
///
/// One writer task owns the log. Requests queue to it; it takes every
/// request waiting (up to [`EmbeddedOptions::max_group_bytes`]), writes them
/// as one frame, fsyncs once, applies them in order and answers each. While
/// it waits for the disk, new requests queue up for the next group, so
/// concurrent writers share fsyncs.
///
/// # Snapshots
///
/// When the log passes [`EmbeddedOptions::snapshot_threshold`] (or the
/// size of the last snapshot, if larger), the writer
/// writes `snapshot-<gen+1>.tmp`, fsyncs it, renames it to
/// `snapshot-<gen+1>`, fsyncs the directory, creates `wal-<gen+1>` (fsync,
/// directory fsync), then removes generation `gen`. Open uses the newest
/// snapshot and its log (creating the log if the crash came before it), and
/// removes older generations, so a crash at any step loses nothing.
///
/// # Damage policy
///
/// On open, the log is read to its end:
/// - A **torn tail** is a log that ends in an incomplete write. Most often
///   it is the group commit that was being written when the process or
///   machine died: its fsync never finished, so none of its writes were
///   acknowledged. But a file truncated by something else (a copy or a
///   restore cut short, a full disk, a tool) ends the same way, and the
///   store cannot tell the two apart: a truncation may have removed
///   acknowledged writes (and one that falls exactly between two frames
///   leaves no trace at all). Recognised (from the first bad frame on) as:
///   fewer bytes left than a frame header; a frame whose checksummed length
///   runs past the end of the file; nothing but zeros up to the end of the
///   file; a header that fails its checksum and straddles a 512-byte sector
///   boundary after which the sector is zeros; or a *last* frame whose
///   payload fails its checksum and holds a whole zero sector. It is cut off
///   (the file truncated and synced) and reported in
///   [`Recovery::torn_tail`], whose `Display` is the warning to log: it
///   names both causes, the bytes cut and where.
/// - Anything else (a checksum mismatch in a frame written whole, a frame
///   that does not decode, a gap in log indexes, a damaged snapshot, a log
///   newer than every snapshot) is **corruption**: open fails with
///   [`StoreError::Corrupt`] naming the file and offset, and nothing is
///   loaded. An operator must restore the directory.
///
/// # Leases
///
/// Lease deadlines are not logged. Leases that exist when the store opens
/// get their whole TTL from the moment of opening (etcd does the same), so a
/// restarted server does not expire every machine at once.
///
/// # Write failures
///
/// If appending or fsyncing fails, what reached the disk is unknown; the
/// store then refuses every later write with that [`StoreError::Io`] (reads
/// still answer from memory). The process should stop and reopen the store.
///
/// # Use
///
/// Open it inside a tokio runtime. Call [`EmbeddedStore::close`] before
/// opening the same directory again in the same process: dropping the store
/// also stops it, but in the background.
pub struct EmbeddedStore {
    engine: Arc<Engine<Wal>>,
    dir: PathBuf,
    cluster_id: ClusterId,
    checkpoint_error: Arc<Mutex<Option<StoreError>>>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// A command waiting for the writer.
struct Pending {
    command: Command,
    encoded: Vec<u8>,
    reply: oneshot::Sender<StoreResult<Outcome>>,
}

enum Request {
    Commit(Pending),
    Checkpoint(oneshot::Sender<StoreResult<()>>),
    Close(oneshot::Sender<()>),
}

/// Commits through the writer task.
#[derive(Debug)]
struct Wal {
    tx: mpsc::Sender<Request>,
}

impl Committer for Wal {
    fn commit(
        &self,
        _shared: &Arc<Shared>,
        command: Command,
    ) -> impl Future<Output = StoreResult<Outcome>> + Send {
        let tx = self.tx.clone();
        async move {
            // Encode here, in the caller's task, to keep the writer's turn
            // short.
            let mut enc = Enc::default();
            codec::encode_command(&command, &mut enc);
            let (reply, answer) = oneshot::channel();
            let pending = Pending {
                command,
                encoded: enc.buf,
                reply,
            };
            tx.send(Request::Commit(pending))
                .await
                .map_err(|_| StoreError::Closed)?;
            answer.await.map_err(|_| StoreError::Closed)?
        }
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`: loads the newest snapshot,
    /// replays the log, cuts off a torn tail (reported in the [`Recovery`]),
    /// and refuses to open damaged files ([`StoreError::Corrupt`]) or a
    /// directory another store holds ([`StoreError::Locked`]).
    pub async fn open(
        dir: impl AsRef<Path>,
        options: EmbeddedOptions,
    ) -> StoreResult<(EmbeddedStore, Recovery)> {
        let dir = dir.as_ref().to_path_buf();
        let recovered = {
            let dir = dir.clone();
            blocking("opening", &dir.clone(), move || recover(&dir, &options)).await?
        };
        let (tx, rx) = mpsc::channel(QUEUE_LEN);
        let checkpoint_error = Arc::new(Mutex::new(None));
        let writer = Writer {
            dir: dir.clone(),
            shared: recovered.shared.clone(),
            wal: Some(recovered.wal),
            wal_path: recovered.wal_path,
            wal_len: recovered.wal_len,
            generation: recovered.recovery.generation,
            next_index: recovered.next_index,
            next_checkpoint_at: recovered.wal_len.max(WAL_HEADER_LEN as u64)
                + options.snapshot_threshold,
            options,
            failed: None,
            checkpoint_error: checkpoint_error.clone(),
            _lock: recovered.lock,
        };
        tokio::spawn(writer.run(rx));
        let engine = Engine::new(recovered.shared, Wal { tx }, options.limits);
        engine.start_expiry();
        Ok((
            EmbeddedStore {
                engine,
                dir,
                cluster_id: recovered.recovery.cluster_id,
                checkpoint_error,
            },
            recovered.recovery,
        ))
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cluster the directory belongs to (its identity file).
    pub fn cluster_id(&self) -> ClusterId {
        self.cluster_id
    }

    /// Writes a snapshot and starts a new log now (normally done when the
    /// log passes [`EmbeddedOptions::snapshot_threshold`]).
    pub async fn checkpoint(&self) -> StoreResult<()> {
        let (reply, answer) = oneshot::channel();
        self.engine
            .committer()
            .tx
            .send(Request::Checkpoint(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// The error of the last automatic snapshot, if it failed (the store
    /// goes on with its current log and tries again later).
    pub fn checkpoint_error(&self) -> Option<StoreError> {
        lock(&self.checkpoint_error).clone()
    }

    /// Stops the store: ends watches and lease expiry, lets the writer
    /// finish what was queued, closes the files and releases the directory.
    /// Later calls fail with [`StoreError::Closed`].
    pub async fn close(&self) {
        self.engine.close();
        let (reply, done) = oneshot::channel();
        if self
            .engine
            .committer()
            .tx
            .send(Request::Close(reply))
            .await
            .is_ok()
        {
            // An error means the writer already stopped: closed either way.
            let _ = done.await;
        }
    }
}

impl Store for EmbeddedStore {
    fn limits(&self) -> Limits {
        self.engine.limits()
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<GetResponse>> {
        Box::pin(async move { self.engine.get(key) })
    }

    fn range<'a>(
        &'a self,
        prefix: &'a str,
        options: RangeOptions,
    ) -> BoxFuture<'a, StoreResult<RangeResponse>> {
        Box::pin(async move { self.engine.range(prefix, &options) })
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, StoreResult<TxnResponse>> {
        Box::pin(self.engine.txn(txn))
    }

    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        from_revision: u64,
    ) -> BoxFuture<'a, StoreResult<Watcher>> {
        Box::pin(async move { self.engine.watch(prefix, from_revision) })
    }

    fn grant(&self, ttl: Duration) -> BoxFuture<'_, StoreResult<LeaseGrant>> {
        Box::pin(self.engine.grant(ttl))
    }

    fn keepalive(&self, lease: LeaseId) -> BoxFuture<'_, StoreResult<Duration>> {
        Box::pin(async move { self.engine.keepalive(lease) })
    }

    fn time_to_live(&self, lease: LeaseId) -> BoxFuture<'_, StoreResult<Duration>> {
        Box::pin(async move { self.engine.time_to_live(lease) })
    }

    fn revoke(&self, lease: LeaseId) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(self.engine.revoke(lease))
    }

    fn compact(&self, revision: u64) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move { self.engine.compact(revision) })
    }

    fn watch_history(&self) -> Option<HistoryStats> {
        Some(self.engine.watch_history())
    }

    fn cluster_id(&self) -> Option<ClusterId> {
        Some(self.cluster_id)
    }
}

/// Runs blocking file work off the async threads (and, under a paused test
/// clock, keeps the clock from jumping while the disk works).
async fn blocking<T: Send + 'static>(
    action: &'static str,
    path: &Path,
    work: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| {
            Err(StoreError::io(
                action,
                path,
                io::Error::other(join.to_string()),
            ))
        })
}

fn snapshot_name(generation: u64) -> String {
    format!("snapshot-{generation:016x}")
}

fn wal_name(generation: u64) -> String {
    format!("wal-{generation:016x}")
}

fn wal_header(generation: u64) -> [u8; WAL_HEADER_LEN] {
    frame::log_header(WAL_MAGIC, generation)
}

/// Creates a new, empty log (the directory entry is the caller's to sync).
fn create_wal(path: &Path, generation: u64) -> StoreResult<File> {
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(path)
        .map_err(|e| StoreError::io("creating", path, e))?;
    file.write_all(&wal_header(generation))
        .and_then(|()| file.sync_all())
        .map_err(|e| StoreError::io("writing", path, e))?;
    Ok(file)
}

/// Creates a new, empty log through a temporary file (header, fsync,
/// rename, directory fsync), so that it is never seen without its header.
fn create_wal_atomically(dir: &Path, generation: u64) -> StoreResult<()> {
    let path = dir.join(wal_name(generation));
    let tmp = dir.join(format!("{}.tmp", wal_name(generation)));
    let _ = fs::remove_file(&tmp);
    drop(create_wal(&tmp, generation)?);
    fs::rename(&tmp, &path).map_err(|e| StoreError::io("renaming", &tmp, e))?;
    sync_dir(dir)
}

/// What opening found, for the writer.
struct Recovered {
    shared: Arc<Shared>,
    wal: File,
    wal_path: PathBuf,
    wal_len: u64,
    next_index: u64,
    lock: File,
    recovery: Recovery,
}

fn recover(dir: &Path, options: &EmbeddedOptions) -> StoreResult<Recovered> {
    let created = !dir.exists();
    fs::create_dir_all(dir).map_err(|e| StoreError::io("creating", dir, e))?;
    if created && let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    layout::refuse_foreign(dir)?;
    let lock_path = dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError::io("opening", &lock_path, e))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Err(StoreError::Locked { path: lock_path }),
        Err(TryLockError::Error(e)) => return Err(StoreError::io("locking", &lock_path, e)),
    }

    // Refuses a directory that lost its state or is not a store's; removes
    // the leftovers of interrupted writes.
    let layout = layout::inspect(dir)?;
    let generation = layout.generation();
    let layout::Layout {
        snapshots,
        wals,
        mut removed_files,
        identity,
        ..
    } = layout;

    let (state, mut next_index) = if generation > 0 {
        load_snapshot(&dir.join(snapshot_name(generation)))?
    } else {
        (StateMachine::default(), 1)
    };
    let snapshot_revision = (generation > 0).then(|| state.revision());
    let shared = Arc::new(Shared::new(state, options.watch));

    let wal_path = dir.join(wal_name(generation));
    let mut replayed_commands = 0;
    let mut torn_tail = None;
    let wal_len = if wals.contains(&generation) {
        let replay = replay_wal(&wal_path, generation, next_index, &shared)?;
        next_index = replay.next_index;
        replayed_commands = replay.commands;
        torn_tail = replay.torn_tail;
        replay.len
    } else {
        // A new store, or a crash between a snapshot's rename and its log's
        // creation. Made whole before it is renamed into place, so that a
        // log without its header is never the store's own doing (at
        // generation 0, before the identity file exists, it would be
        // refused).
        create_wal_atomically(dir, generation)?;
        WAL_HEADER_LEN as u64
    };

    let mut stale = Vec::new();
    for &g in snapshots.iter().filter(|&&g| g < generation) {
        stale.push(dir.join(snapshot_name(g)));
    }
    for &g in wals.iter().filter(|&&g| g < generation) {
        stale.push(dir.join(wal_name(g)));
    }
    for path in stale {
        fs::remove_file(&path).map_err(|e| StoreError::io("removing", &path, e))?;
        removed_files.push(path);
    }
    if !removed_files.is_empty() {
        sync_dir(dir)?;
    }

    // Written once the log is in place and replayed: from here on, a
    // missing or empty log is a lost state, not a new cluster.
    let (identity, initialized) = match identity {
        Some(identity) => (identity, Initialized::Before),
        None => {
            let identity = Identity::new(new_cluster_id()?, StateLocation::Embedded);
            write_identity(dir, &identity)?;
            let adopted = snapshot_revision.is_some() || replayed_commands > 0;
            if adopted {
                tracing::warn!(
                    cluster = %identity.cluster_id,
                    dir = %dir.display(),
                    "the store directory, made by an earlier version of flotilla, had no identity file: \
                     adopted it as cluster {}",
                    identity.cluster_id
                );
                (identity, Initialized::Adopted)
            } else {
                tracing::info!(
                    cluster = %identity.cluster_id,
                    dir = %dir.display(),
                    "initialized a new cluster"
                );
                (identity, Initialized::New)
            }
        }
    };

    let wal = OpenOptions::new()
        .append(true)
        .open(&wal_path)
        .map_err(|e| StoreError::io("opening", &wal_path, e))?;
    let (revision, leases) = {
        let state = shared.read();
        (state.revision(), state.leases().len())
    };
    Ok(Recovered {
        shared,
        wal,
        wal_path,
        wal_len,
        next_index,
        lock,
        recovery: Recovery {
            cluster_id: identity.cluster_id,
            initialized,
            generation,
            snapshot_revision,
            replayed_commands,
            revision,
            leases,
            torn_tail,
            removed_files,
        },
    })
}

struct Replay {
    len: u64,
    next_index: u64,
    commands: u64,
    torn_tail: Option<TornTail>,
}

/// Replays a log into `shared`, cutting off a torn tail.
fn replay_wal(
    path: &Path,
    generation: u64,
    mut next_index: u64,
    shared: &Shared,
) -> StoreResult<Replay> {
    let corrupt = |offset: usize, reason: String| StoreError::Corrupt {
        path: path.to_owned(),
        offset: offset as u64,
        reason,
    };
    let data = fs::read(path).map_err(|e| StoreError::io("reading", path, e))?;
    let header = wal_header(generation);
    if data.len() < WAL_HEADER_LEN || data.iter().all(|&b| b == 0) {
        // The crash came while the log was being created: it never held a
        // frame. Write its header again.
        let mut file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| StoreError::io("opening", path, e))?;
        file.set_len(0)
            .and_then(|()| file.write_all(&header))
            .and_then(|()| file.sync_all())
            .map_err(|e| StoreError::io("repairing", path, e))?;
        return Ok(Replay {
            len: WAL_HEADER_LEN as u64,
            next_index,
            commands: 0,
            torn_tail: (!data.is_empty()).then(|| TornTail {
                path: path.to_owned(),
                offset: 0,
                discarded_bytes: data.len() as u64,
                reason: "log header never fully written".to_owned(),
            }),
        });
    }
    if data[..WAL_HEADER_LEN] != header {
        return Err(corrupt(
            0,
            format!("not a flotilla log header for generation {generation}"),
        ));
    }

    let (frames, end) = frame::scan(&data, WAL_HEADER_LEN);
    let mut commands = 0;
    for frame in frames {
        let mut dec = Dec::new(frame.payload);
        let decoded = (|| {
            let first = dec.u64()?;
            let count = dec.count()?;
            let group = (0..count)
                .map(|_| codec::decode_command(&mut dec))
                .collect::<Result<Vec<_>, _>>()?;
            dec.finish()?;
            Ok::<_, String>((first, group))
        })();
        let (first, group) = decoded.map_err(|reason| corrupt(frame.offset, reason))?;
        if first != next_index {
            return Err(corrupt(
                frame.offset,
                format!("frame starts at log index {first}, expected {next_index}"),
            ));
        }
        // Applying is deterministic: the outcomes are those the callers got.
        shared.apply(&group);
        next_index += group.len() as u64;
        commands += group.len() as u64;
    }
    let (len, torn_tail) = match end {
        frame::End::Clean => (data.len() as u64, None),
        frame::End::Corrupt { offset, reason } => return Err(corrupt(offset, reason)),
        frame::End::Torn { offset, reason } => {
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| StoreError::io("opening", path, e))?;
            file.set_len(offset as u64)
                .and_then(|()| file.sync_all())
                .map_err(|e| StoreError::io("truncating", path, e))?;
            let torn = TornTail {
                path: path.to_owned(),
                offset: offset as u64,
                discarded_bytes: (data.len() - offset) as u64,
                reason,
            };
            (offset as u64, Some(torn))
        }
    };
    Ok(Replay {
        len,
        next_index,
        commands,
        torn_tail,
    })
}
