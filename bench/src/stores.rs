//! The stores B2 and B4 run on, writing the cluster into them, and a leader
//! (the real election and reconcile loop) running on them in process.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flotilla_api::tls::ClusterCa;
use flotilla_proto::{Machine, UnitName};
use flotilla_scheduler::keys::{Key, Keys};
use flotilla_scheduler::leader::{ElectionConfig, Leadership, campaign};
use flotilla_scheduler::placement::Strategy;
use flotilla_scheduler::reconciler::{self, ReconcileError, ReconcilerConfig};
use flotilla_scheduler::records::{self, LeaderRecord, SchedRecord, UnitRecord};
use flotilla_store::{
    EmbeddedOptions, EmbeddedStore, EtcdConfig, EtcdStore, LeaseId, RangeOptions, Store,
    StoreError, Txn, TxnOp, WatchEvent,
};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::procs::{EtcdProc, dir_bytes};
use crate::raft_cluster::RaftCluster;
use flotilla_testbed::free_port;

/// Which store, and where its data lives.
#[derive(Debug, Clone)]
pub enum Backend {
    /// The embedded store in a directory under this one.
    Embedded(PathBuf),
    /// A local etcd process with its data under this directory.
    Etcd(PathBuf),
    /// Three raft stores in this process, their logs in directories under
    /// this one, replicating over mutual TLS on loopback; the store given
    /// out is the leader's.
    Raft(PathBuf),
}

/// A store opened for one run, with what must be closed after it.
pub struct OpenStore {
    pub store: Arc<dyn Store>,
    embedded: Option<Arc<EmbeddedStore>>,
    etcd: Option<EtcdProc>,
    raft: Option<RaftCluster>,
    dir: Option<PathBuf>,
}

impl OpenStore {
    pub async fn open(backend: &Backend, tag: &str) -> anyhow::Result<OpenStore> {
        match backend {
            Backend::Embedded(parent) => {
                let dir = parent.join(format!("embedded-{tag}-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                let (store, _) = EmbeddedStore::open(&dir, EmbeddedOptions::default())
                    .await
                    .with_context(|| {
                        format!("cannot open the embedded store in {}", dir.display())
                    })?;
                let store = Arc::new(store);
                Ok(OpenStore {
                    store: store.clone(),
                    embedded: Some(store),
                    etcd: None,
                    raft: None,
                    dir: Some(dir),
                })
            }
            Backend::Etcd(parent) => {
                let etcd = EtcdProc::start(parent, tag)?;
                let store = EtcdStore::connect(EtcdConfig::new([etcd.endpoint.clone()]))
                    .await
                    .context("cannot connect to etcd")?;
                Ok(OpenStore {
                    store: Arc::new(store),
                    embedded: None,
                    etcd: Some(etcd),
                    raft: None,
                    dir: None,
                })
            }
            Backend::Raft(parent) => {
                let dir = parent.join(format!("raft-{tag}-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                let ca = Arc::new(ClusterCa::generate().context("cannot make a cluster CA")?);
                let ports = [free_port(), free_port(), free_port()];
                let dirs = (1..=ports.len())
                    .map(|i| dir.join(format!("server-{i}")))
                    .collect();
                let cluster = RaftCluster::open(dirs, &ports, ca).await?;
                let leader = cluster.leader().await?;
                let store: Arc<dyn Store> = cluster.stores[leader].clone();
                Ok(OpenStore {
                    store,
                    embedded: None,
                    etcd: None,
                    raft: Some(cluster),
                    dir: Some(dir),
                })
            }
        }
    }

    /// Bytes on disk of the store's data.
    pub fn data_bytes(&self) -> u64 {
        if let Some(raft) = &self.raft {
            return raft.data_bytes();
        }
        match (&self.dir, &self.etcd) {
            (Some(dir), _) => dir_bytes(dir),
            (None, Some(etcd)) => etcd.data_bytes(),
            (None, None) => 0,
        }
    }

    /// Closes the store, stops etcd, removes the data.
    pub async fn close(mut self) {
        if let Some(e) = self.embedded.take() {
            e.close().await;
        }
        drop(self.etcd.take());
        if let Some(raft) = self.raft.take() {
            raft.close().await;
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Drop for OpenStore {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Where a directory lives: `tmpfs` or the real disk, from /proc/mounts.
pub fn filesystem_of(path: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let mut best: Option<(usize, String)> = None;
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        let (Some(dev), Some(mount), Some(fs)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if path.starts_with(mount) && best.as_ref().is_none_or(|(l, _)| mount.len() > *l) {
            best = Some((mount.len(), format!("{fs} ({dev})")));
        }
    }
    best.map_or_else(|| "unknown".to_owned(), |(_, fs)| fs)
}

/// Writes `ops` in transactions of the store's limit, `parallel` at a time.
pub async fn write_all(
    store: &Arc<dyn Store>,
    ops: impl IntoIterator<Item = TxnOp>,
    parallel: usize,
) -> anyhow::Result<usize> {
    let max = store.limits().max_txn_ops.max(1);
    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();
    let mut ops = ops.into_iter().peekable();
    let mut written = 0;
    while ops.peek().is_some() {
        let chunk: Vec<TxnOp> = ops.by_ref().take(max).collect();
        written += chunk.len();
        let store = store.clone();
        tasks.spawn(async move {
            let resp = store.txn(Txn::new().and_then(chunk)).await?;
            if !resp.succeeded {
                bail!("a transaction without compares did not succeed");
            }
            Ok(())
        });
        while tasks.len() >= parallel.max(1) {
            if let Some(r) = tasks.join_next().await {
                r.context("a writer task failed")?
                    .context("writing the cluster")?;
            }
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.context("a writer task failed")?
            .context("writing the cluster")?;
    }
    Ok(written)
}

/// The puts of units: `(name, shared encoded record)`.
pub fn unit_ops<'a>(
    keys: &'a Keys,
    units: impl IntoIterator<Item = (UnitName, Arc<[u8]>)> + 'a,
) -> impl Iterator<Item = TxnOp> + 'a {
    units
        .into_iter()
        .map(|(name, value)| TxnOp::put(keys.unit(&name), value))
}

pub fn encoded(record: &UnitRecord) -> Arc<[u8]> {
    records::encode(record).into()
}

/// The puts of machines, each on its lease.
pub fn machine_ops<'a>(
    keys: &'a Keys,
    machines: impl IntoIterator<Item = (Machine, LeaseId)> + 'a,
) -> impl Iterator<Item = TxnOp> + 'a {
    machines
        .into_iter()
        .map(|(m, lease)| TxnOp::put_with_lease(keys.machine(&m.id), records::encode(&m), lease))
}

/// A leader running the real election and reconcile loop on a store.
pub struct Leader {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<(ReconcileError, Leadership)>,
    store: Arc<dyn Store>,
}

impl Leader {
    /// Campaigns (the store is empty of leaders, so at once) and starts the
    /// reconcile loop.
    pub async fn start(store: Arc<dyn Store>, strategy: Strategy) -> anyhow::Result<Leader> {
        let keys = Keys::default();
        let (stop, stopped) = watch::channel(false);
        let election = ElectionConfig {
            keys: keys.clone(),
            ttl: Duration::from_secs(10),
            record: LeaderRecord {
                id: format!("bench-{}", std::process::id()),
                address: "http://127.0.0.1:0".to_owned(),
                version: "bench".to_owned(),
            },
            follow: None,
        };
        let leadership = campaign(store.clone(), &election, stopped.clone())
            .await
            .context("campaigning")?;
        let config = ReconcilerConfig {
            keys,
            strategy,
            ..ReconcilerConfig::default()
        };
        let loop_store = store.clone();
        let task = tokio::spawn(async move {
            let e = reconciler::run(loop_store, &leadership, &config, stopped).await;
            (e, leadership)
        });
        Ok(Leader { stop, task, store })
    }

    /// Stops the loop and resigns. Reports how the loop ended if it ended
    /// on its own (an error).
    pub async fn stop(self) -> Option<String> {
        let ended_early = self.task.is_finished();
        let _ = self.stop.send(true);
        match self.task.await {
            Ok((e, leadership)) => {
                leadership.resign(&*self.store).await;
                ended_early.then(|| e.to_string())
            }
            Err(e) => Some(format!("the reconcile loop panicked: {e}")),
        }
    }
}

/// When each unit's decision was committed: follows the whole prefix from
/// a revision, and notes the first assignment and when every unit of a set
/// had its `sched/` record written.
pub struct Progress {
    pub first_assign: Option<Instant>,
    pub all_decided: Option<Instant>,
    pub placed: usize,
    pub unschedulable: usize,
    /// Where each unit was placed.
    pub placement: HashMap<String, String>,
    pub resyncs: usize,
}

/// Follows the store until every one of `expected` units has a decision,
/// or `deadline` passes.
pub async fn follow_decisions(
    store: Arc<dyn Store>,
    from_revision: u64,
    expected: usize,
    deadline: Duration,
) -> anyhow::Result<Progress> {
    let keys = Keys::default();
    let mut progress = Progress {
        first_assign: None,
        all_decided: None,
        placed: 0,
        unschedulable: 0,
        placement: HashMap::with_capacity(expected),
        resyncs: 0,
    };
    let mut decided: HashSet<String> = HashSet::with_capacity(expected);
    let end = tokio::time::Instant::now() + deadline;
    let mut from = from_revision;
    'watch: loop {
        let mut w = store.watch(keys.root(), from).await?;
        loop {
            let events = match tokio::time::timeout_at(end, w.next()).await {
                Err(_) => break 'watch,
                Ok(Ok(events)) => events,
                Ok(Err(StoreError::Compacted { .. })) => {
                    // This follower fell behind the embedded store's window:
                    // read the decisions as they are now and go on.
                    progress.resyncs += 1;
                    from = resync(&*store, &keys, &mut decided, &mut progress).await? + 1;
                    if decided.len() >= expected {
                        progress.all_decided.get_or_insert_with(Instant::now);
                        break 'watch;
                    }
                    continue 'watch;
                }
                Ok(Err(e)) => return Err(e).context("following the store"),
            };
            let now = Instant::now();
            for e in &events {
                let WatchEvent::Put { kv, .. } = e else {
                    continue;
                };
                match keys.parse(&kv.key) {
                    Some(Key::Assignment(..)) => {
                        progress.first_assign.get_or_insert(now);
                    }
                    Some(Key::Sched(unit)) => {
                        note_sched(&kv.key, &kv.value, unit, &mut decided, &mut progress);
                    }
                    _ => {}
                }
            }
            if decided.len() >= expected {
                progress.all_decided = Some(now);
                break 'watch;
            }
        }
    }
    Ok(progress)
}

fn note_sched(
    key: &str,
    value: &[u8],
    unit: UnitName,
    decided: &mut HashSet<String>,
    progress: &mut Progress,
) {
    let Ok(record) = records::decode::<SchedRecord>(key, value) else {
        return;
    };
    let unit = unit.to_string();
    let fresh = decided.insert(unit.clone());
    match record.machine {
        Some(m) => {
            if fresh {
                progress.placed += 1;
            } else if !progress.placement.contains_key(&unit) {
                progress.placed += 1;
                progress.unschedulable = progress.unschedulable.saturating_sub(1);
            }
            progress.placement.insert(unit, m.to_string());
        }
        None => {
            if fresh {
                progress.unschedulable += 1;
            } else if progress.placement.remove(&unit).is_some() {
                progress.placed = progress.placed.saturating_sub(1);
                progress.unschedulable += 1;
            }
        }
    }
}

async fn resync(
    store: &dyn Store,
    keys: &Keys,
    decided: &mut HashSet<String>,
    progress: &mut Progress,
) -> anyhow::Result<u64> {
    decided.clear();
    progress.placed = 0;
    progress.unschedulable = 0;
    progress.placement.clear();
    let mut after: Option<String> = None;
    let mut revision = None;
    for _ in 0..10_000 {
        let mut options = RangeOptions::default().limit(10_000);
        if let Some(a) = after.take() {
            options = options.start_after(a);
        }
        let page = store.range(&keys.scheds(), options).await?;
        revision.get_or_insert(page.revision);
        for kv in &page.kvs {
            if let Some(Key::Sched(unit)) = keys.parse(&kv.key) {
                note_sched(&kv.key, &kv.value, unit, decided, progress);
            }
        }
        after = page.kvs.last().map(|kv| kv.key.clone());
        if !page.more {
            break;
        }
    }
    revision.context("no page read")
}

/// The store's current revision.
pub async fn revision(store: &dyn Store) -> anyhow::Result<u64> {
    Ok(store.get(&Keys::default().leader()).await?.revision)
}

/// Every assignment of one machine.
pub async fn units_on(
    store: &dyn Store,
    machine: &flotilla_proto::MachineId,
) -> anyhow::Result<HashSet<String>> {
    let keys = Keys::default();
    let mut out = HashSet::new();
    let mut after: Option<String> = None;
    for _ in 0..10_000 {
        let mut options = RangeOptions::default().limit(10_000);
        if let Some(a) = after.take() {
            options = options.start_after(a);
        }
        let page = store
            .range(&keys.machine_assignments(machine), options)
            .await?;
        for kv in &page.kvs {
            if let Some(Key::Assignment(_, unit)) = keys.parse(&kv.key) {
                out.insert(unit.to_string());
            }
        }
        after = page.kvs.last().map(|kv| kv.key.clone());
        if !page.more {
            return Ok(out);
        }
    }
    bail!("too many pages of assignments")
}
