//! [`RaftStore`]: the embedded store replicated between three or five
//! servers with raft, so that the cluster needs no etcd to survive the loss
//! of a server.
//!
//! It is the same state machine as the memory and embedded stores
//! (`state.rs`, behind the same request paths, `engine.rs`), with raft's log
//! in place of the local write-ahead log: a write is proposed, replicated to
//! a quorum, committed, and applied by every server in the same order; the
//! server that proposed it answers its caller when it applies it. The
//! consensus itself is raft-rs (TiKV's); the log on disk (`log.rs`), the
//! node loop (`node.rs`) and the transport seam (`transport.rs`) are
//! flotilla's.
//!
//! - **Writes** from any server: a follower's proposal is forwarded to the
//!   leader by raft. Concurrent writes share one log write and one sync per
//!   loop turn (group commit).
//! - **Reads are linearizable through ReadIndex**: before a read (get, range,
//!   a read-only transaction, the start of a watch) the server asks the
//!   leader for its commit index, the leader confirms it still leads with a
//!   heartbeat round to a quorum, and the server answers once it has applied
//!   that index. ReadIndex rather than a leader lease: a lease read trusts
//!   clocks and timely scheduling, and a leader paused (SIGSTOP, a long GC
//!   or VM pause) past its lease would serve stale reads on waking; ReadIndex
//!   costs one heartbeat round per batch of reads (all reads queued in one
//!   loop turn share it) and is correct whatever the clocks do.
//! - **Leases** ride on raft leadership, as in etcd: keepalives are log
//!   entries (every server learns them, so the next leader knows which
//!   leases are alive), only the leader's expiry task revokes, and a new
//!   leader gives every lease a whole TTL.
//! - **Watches** are served by each server from its own history of what it
//!   applied. A follower that installs a snapshot ends its watches with
//!   [`StoreError::Compacted`]: their callers
//!   resync, as after any compaction.
//! - **Snapshots and compaction**: once the log holds more than
//!   [`RaftOptions::snapshot_entries`] entries the server writes its state
//!   as a snapshot and drops the log before it; a follower too far behind
//!   receives the leader's snapshot.
//! - **Membership**: the first servers are given with
//!   [`RaftOptions::peers`]; later ones are added with
//!   [`RaftStore::add_server`] and started with [`RaftOptions::join`], so
//!   that they learn everything from the leader instead of bootstrapping a
//!   cluster of their own.
//! - **Minority**: a server cut off from a quorum answers writes and reads
//!   with [`StoreError::Unavailable`] (at
//!   once when it knows no leader, after the request timeout otherwise).

mod local;
mod log;
mod node;
mod proposal;
mod snapshot;
mod storage;
mod transport;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use protobuf::Message as _;
use raft::prelude::{ConfChange, ConfChangeType, ConfState, Message};
use raft::{RawNode, ReadOnlyOption};
use tokio::sync::watch;

pub use local::{LocalNetwork, NetworkFaults};
pub use transport::{Inbox, NodeId, Transport};

use self::log::RaftLog;
use self::node::{Mailbox, Msg, Node, NodeConfig, NodeState, Reply};
use self::proposal::Body;
use self::storage::{LogStorage, MemoryLog};
use crate::engine::{Committer, Engine, Shared};
use crate::state::{Command, Outcome, RevokeReason, StateMachine};
use crate::{
    BoxFuture, GetResponse, HistoryStats, LeaseGrant, LeaseId, Limits, RangeOptions, RangeResponse,
    Store, StoreError, StoreResult, Txn, TxnResponse, WatchOptions, Watcher,
};

/// The raft log's directory inside a server's data directory.
pub const RAFT_DIR: &str = "raft";

/// Mailbox messages waiting for the node before requests are refused.
const MAILBOX_LEN: usize = 65_536;

/// Settings of a [`RaftStore`].
#[derive(Debug, Clone)]
pub struct RaftOptions {
    /// This server's id in the raft group: unique, never reused.
    pub id: NodeId,
    /// The servers of a new cluster, with their peer addresses, this one
    /// included: on a fresh data directory without `join`, the cluster is
    /// bootstrapped with them as voters. Otherwise only hints of addresses
    /// (membership comes from the log).
    pub peers: BTreeMap<NodeId, String>,
    /// This server was added to an existing cluster
    /// ([`RaftStore::add_server`]): on a fresh data directory it bootstraps
    /// nothing and waits for the leader's snapshot.
    pub join: bool,
    /// One raft tick.
    pub tick: Duration,
    /// Ticks without a leader before an election (raft randomizes between
    /// this and twice this).
    pub election_ticks: usize,
    /// Ticks between the leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// How long a request waits for the cluster before it fails with
    /// [`StoreError::Unavailable`].
    pub request_timeout: Duration,
    /// Entries the log holds before the server snapshots and compacts it.
    pub snapshot_entries: u64,
    /// Request limits.
    pub limits: Limits,
    /// Watch history.
    pub watch: WatchOptions,
}

impl RaftOptions {
    /// Options for server `id` of a cluster of `peers`, with the defaults:
    /// 50 ms ticks, elections after 0.5 to 1 s without a leader, heartbeats
    /// every tick.
    pub fn new(id: NodeId, peers: BTreeMap<NodeId, String>) -> Self {
        RaftOptions {
            id,
            peers,
            join: false,
            tick: Duration::from_millis(50),
            election_ticks: 10,
            heartbeat_ticks: 1,
            request_timeout: Duration::from_secs(5),
            snapshot_entries: 20_000,
            limits: Limits::default(),
            watch: WatchOptions::default(),
        }
    }
}

/// A server's role in the raft group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RaftRole {
    Leader,
    Follower,
    Candidate,
    /// Removed from the cluster: it serves nothing more.
    Removed,
}

impl RaftRole {
    pub fn as_str(self) -> &'static str {
        match self {
            RaftRole::Leader => "leader",
            RaftRole::Follower => "follower",
            RaftRole::Candidate => "candidate",
            RaftRole::Removed => "removed",
        }
    }
}

/// A member of the raft group, as one server sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RaftMember {
    pub id: NodeId,
    /// Its peer address.
    pub address: String,
    /// A voter (else a learner).
    pub voter: bool,
    /// The last log index known replicated to it: on the leader only.
    pub matched: Option<u64>,
}

/// One server's view of the raft group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RaftStatus {
    pub id: NodeId,
    pub role: RaftRole,
    pub term: u64,
    /// The leader this server knows of.
    pub leader: Option<NodeId>,
    /// The highest log index known committed.
    pub commit: u64,
    /// The highest log index applied to this server's state.
    pub applied: u64,
    pub last_index: u64,
    pub members: Vec<RaftMember>,
    /// Whether elections prefer this server ([`RaftStore::prefer`]).
    pub preferred: bool,
}

/// The raft-replicated store (see the [module documentation](self)).
#[derive(Debug)]
pub struct RaftStore {
    engine: Arc<Engine<RaftCommitter>>,
    mailbox: Arc<Mailbox>,
    leader: watch::Receiver<bool>,
}

/// Proposes commands through the node.
#[derive(Debug)]
struct RaftCommitter {
    mailbox: Arc<Mailbox>,
}

impl Committer for RaftCommitter {
    async fn commit(&self, _shared: &Arc<Shared>, command: Command) -> StoreResult<Outcome> {
        if let Command::Revoke {
            reason: RevokeReason::Expired,
            ..
        } = command
            && !self
                .mailbox
                .state
                .is_leader
                .load(std::sync::atomic::Ordering::SeqCst)
        {
            // Only the leader ends leases; a follower's deadlines are a
            // guess, kept warm for when it leads.
            return Err(StoreError::Unavailable {
                reason: "leases are ended by the leader".to_owned(),
            });
        }
        self.mailbox
            .ask(|tx| Msg::Propose {
                body: Body::Command(command),
                reply: Reply::Command(tx),
            })
            .await?
    }
}

impl RaftStore {
    /// Opens (or creates) this server's raft store in `dir`, in a tokio
    /// runtime, and starts its node.
    pub async fn open(
        dir: &std::path::Path,
        options: RaftOptions,
        transport: Arc<dyn Transport>,
    ) -> StoreResult<RaftStore> {
        let data_dir = dir;
        let dir = dir.join(RAFT_DIR);
        // A data directory that served a cluster but has no raft log lost
        // it: this server would come back having forgotten its votes and
        // its log, which raft's safety cannot afford. Refused before
        // anything is written.
        if !dir.exists()
            && let Some(identity) = crate::identity::read_identity(data_dir)?
        {
            return Err(StoreError::StateLost {
                dir: data_dir.to_owned(),
                cluster_id: identity.cluster_id,
                created_at: identity.created_at,
                missing: format!(
                    "its raft log ({}) is missing: remove this server from the cluster \
                     (flotilla server remove {id}) and add it back under a new id with an \
                     empty data directory and --join",
                    dir.display(),
                    id = options.id
                ),
            });
        }
        let (log, recovered) = RaftLog::open(&dir)?;
        if let Some(torn) = &recovered.torn_tail {
            tracing::warn!("{torn}");
        }
        let bootstrap = (recovered.fresh && !options.join).then(|| bootstrap_snapshot(&options));
        if let Some(snap) = &bootstrap {
            log.apply_snapshot(snap.clone())?;
            tracing::info!(peers = ?options.peers, "bootstrapped a new raft cluster");
        }
        let (state, applied, mut members, dedup) =
            match recovered.snapshot.as_ref().or(bootstrap.as_ref()) {
                Some(snap) => {
                    let decoded = snapshot::decode(snap.get_data()).map_err(|reason| {
                        StoreError::Corrupt {
                            path: dir.clone(),
                            offset: 0,
                            reason: format!("the raft snapshot's state: {reason}"),
                        }
                    })?;
                    (
                        decoded.state,
                        snap.get_metadata().index,
                        decoded.members,
                        decoded.dedup,
                    )
                }
                None => (
                    StateMachine::default(),
                    0,
                    BTreeMap::new(),
                    node::Dedup::default(),
                ),
            };
        // The members' addresses come from the log; those given are hints
        // for servers it does not name yet.
        for (id, address) in &options.peers {
            members.entry(*id).or_insert_with(|| address.clone());
        }
        tracing::info!(
            dir = %dir.display(),
            applied,
            first_index = recovered.first_index,
            last_index = recovered.last_index,
            term = recovered.hard_state.term,
            commit = recovered.hard_state.commit,
            voters = ?if recovered.fresh && !options.join {
                options.peers.keys().copied().collect()
            } else {
                recovered.conf_state.voters.clone()
            },
            "raft log opened"
        );
        Ok(Self::start(
            log, state, applied, dedup, members, options, transport,
        ))
    }

    /// A store whose log is in memory only (tests): the node's state is lost
    /// with the process, so it must never be restarted as the same member.
    pub fn in_memory(options: RaftOptions, transport: Arc<dyn Transport>) -> RaftStore {
        let log = MemoryLog::new(None);
        let mut applied = 0;
        if !options.join {
            let snap = bootstrap_snapshot(&options);
            applied = snap.get_metadata().index;
            // A fresh in-memory log takes any snapshot.
            if let Err(e) = log.apply_snapshot(snap) {
                tracing::error!("cannot bootstrap the in-memory raft log: {e}");
            }
        }
        Self::start(
            log,
            StateMachine::default(),
            applied,
            node::Dedup::default(),
            options.peers.clone(),
            options,
            transport,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn start<L: LogStorage>(
        log: L,
        state: StateMachine,
        applied: u64,
        dedup: node::Dedup,
        members: BTreeMap<NodeId, String>,
        options: RaftOptions,
        transport: Arc<dyn Transport>,
    ) -> RaftStore {
        let config = raft::Config {
            id: options.id,
            election_tick: options.election_ticks,
            heartbeat_tick: options.heartbeat_ticks,
            applied,
            check_quorum: true,
            pre_vote: true,
            read_only_option: ReadOnlyOption::Safe,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            max_uncommitted_size: 64 * 1024 * 1024,
            ..raft::Config::default()
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let shared = Arc::new(Shared::new(state, options.watch));
        let (leader_tx, leader) = watch::channel(false);
        let state = Arc::new(NodeState {
            is_leader: AtomicBool::new(false),
            leader_tx,
        });
        let (tx, rx) = mpsc::sync_channel(MAILBOX_LEN);
        let node_config = NodeConfig {
            tick: options.tick,
            request_timeout: options.request_timeout,
            snapshot_entries: options.snapshot_entries,
        };
        let thread_state = state.clone();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("raft-{}", options.id))
            .spawn(move || {
                let raw = match RawNode::new(&config, log.clone(), &logger) {
                    Ok(raw) => raw,
                    Err(e) => {
                        tracing::error!("cannot start the raft node: {e}");
                        return;
                    }
                };
                Node::new(
                    raw,
                    log,
                    thread_shared,
                    transport,
                    members,
                    thread_state,
                    node_config,
                    applied,
                    dedup,
                )
                .run(rx)
            });
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("cannot start the raft thread: {e}");
                std::thread::spawn(|| {})
            }
        };
        let mailbox = Arc::new(Mailbox::new(tx, state, options.request_timeout, thread));
        let engine = Engine::new(
            shared,
            RaftCommitter {
                mailbox: mailbox.clone(),
            },
            options.limits,
        );
        engine.start_expiry();
        RaftStore {
            engine,
            mailbox,
            leader,
        }
    }

    /// Where the transport delivers this server's frames.
    pub fn inbox(&self) -> Arc<dyn Inbox> {
        Arc::new(RaftInbox {
            mailbox: self.mailbox.clone(),
        })
    }

    /// Whether this server leads the raft group, as it changes.
    pub fn leadership(&self) -> watch::Receiver<bool> {
        self.leader.clone()
    }

    /// Whether elections should prefer this server: a server that is not
    /// preferred gets no vote from one that is, unless its log is longer.
    /// So among servers with the same log, one that is preferred wins; when
    /// none is (as at a cluster's first start), any may. The scheduler
    /// prefers servers whose warm placement view is ready, so that a new
    /// leader plans at once instead of loading the cluster first. Servers
    /// start not preferred.
    pub fn prefer(&self, preferred: bool) -> StoreResult<()> {
        self.mailbox.post(Msg::Prefer(preferred))
    }

    /// This server's view of the raft group.
    pub async fn status(&self) -> StoreResult<RaftStatus> {
        self.mailbox.ask(Msg::Status).await
    }

    /// Adds a server to the cluster (a voter), reachable at `address`. Start
    /// it afterwards with [`RaftOptions::join`].
    pub async fn add_server(&self, id: NodeId, address: &str) -> StoreResult<()> {
        let mut change = ConfChange::default();
        change.set_change_type(ConfChangeType::AddNode);
        change.node_id = id;
        let address = address.to_owned();
        self.mailbox
            .ask(|reply| Msg::ChangeMembers {
                change,
                address,
                reply,
            })
            .await?
    }

    /// Removes a server from the cluster.
    pub async fn remove_server(&self, id: NodeId) -> StoreResult<()> {
        let mut change = ConfChange::default();
        change.set_change_type(ConfChangeType::RemoveNode);
        change.node_id = id;
        self.mailbox
            .ask(|reply| Msg::ChangeMembers {
                change,
                address: String::new(),
                reply,
            })
            .await?
    }

    /// Waits until this server has applied everything committed before the
    /// call: the barrier of a linearizable read.
    async fn barrier(&self) -> StoreResult<()> {
        self.mailbox.ask(Msg::Read).await?
    }

    /// Stops the node and refuses every later call.
    pub async fn close(&self) {
        self.mailbox.stop().await;
        self.engine.close();
    }
}

impl Drop for RaftStore {
    fn drop(&mut self) {
        // The node's thread ends once its mailbox is gone too; asking it to
        // stop ends it even while a transport still holds the inbox.
        let _ = self.mailbox.post(Msg::Stop);
        self.engine.close();
    }
}

/// The first state of a new cluster: a snapshot at log index 1 of an empty
/// store, whose membership is the first servers. Starting the log after a
/// snapshot, rather than from nothing, means that a server added later
/// always starts from a snapshot (the leader holds no entry 1 to send it),
/// and so learns every member; from entries alone it would learn only the
/// changes made after the bootstrap, and think itself the only voter.
fn bootstrap_snapshot(options: &RaftOptions) -> raft::prelude::Snapshot {
    let voters: Vec<NodeId> = options.peers.keys().copied().collect();
    let mut snap = raft::prelude::Snapshot::default();
    snap.set_data(
        snapshot::encode(
            &StateMachine::default(),
            BOOTSTRAP_INDEX,
            &options.peers,
            &node::Dedup::default(),
        )
        .into(),
    );
    let meta = snap.mut_metadata();
    meta.index = BOOTSTRAP_INDEX;
    meta.term = BOOTSTRAP_INDEX;
    meta.set_conf_state(ConfState::from((voters, Vec::new())));
    snap
}

/// The log index (and term) of a new cluster's first snapshot.
const BOOTSTRAP_INDEX: u64 = 1;

/// Decodes frames from peers into the node's mailbox.
struct RaftInbox {
    mailbox: Arc<Mailbox>,
}

impl Inbox for RaftInbox {
    fn deliver(&self, from: NodeId, frame: Vec<u8>) {
        match Message::parse_from_bytes(&frame) {
            // A server speaks only for itself.
            Ok(message) if message.from != from => tracing::warn!(
                "dropping a raft message from server {from} that claims to come from {}",
                message.from
            ),
            // A full mailbox drops the message: raft sends again.
            Ok(message) => {
                let _ = self.mailbox.post(Msg::Raft(Box::new(message)));
            }
            Err(e) => tracing::warn!("dropping a raft frame that cannot be decoded: {e}"),
        }
    }
}

impl Store for RaftStore {
    fn limits(&self) -> Limits {
        self.engine.limits()
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<GetResponse>> {
        Box::pin(async move {
            self.barrier().await?;
            self.engine.get(key)
        })
    }

    fn range<'a>(
        &'a self,
        prefix: &'a str,
        options: RangeOptions,
    ) -> BoxFuture<'a, StoreResult<RangeResponse>> {
        Box::pin(async move {
            self.barrier().await?;
            self.engine.range(prefix, &options)
        })
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, StoreResult<TxnResponse>> {
        Box::pin(async move {
            if txn.is_read_only() {
                self.barrier().await?;
            }
            self.engine.txn(txn).await
        })
    }

    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        from_revision: u64,
    ) -> BoxFuture<'a, StoreResult<Watcher>> {
        Box::pin(async move {
            self.barrier().await?;
            self.engine.watch(prefix, from_revision)
        })
    }

    fn grant(&self, ttl: Duration) -> BoxFuture<'_, StoreResult<LeaseGrant>> {
        Box::pin(self.engine.grant(ttl))
    }

    fn keepalive(&self, lease: LeaseId) -> BoxFuture<'_, StoreResult<Duration>> {
        Box::pin(async move {
            self.mailbox
                .ask(|tx| Msg::Propose {
                    body: Body::Keepalive(lease),
                    reply: Reply::Keepalive(tx),
                })
                .await?
        })
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
}
