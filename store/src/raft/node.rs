//! The raft node: one thread per store owns raft-rs's `RawNode`, its log and
//! the apply path. Everything else talks to it through its mailbox: frames
//! from peers, proposals, read barriers, membership changes, status.
//!
//! One loop turn takes every message waiting (up to a batch), ticks when a
//! tick is due, and handles one Ready: entries and hard state written with
//! one sync (so concurrent proposals share a sync, as the embedded store's
//! group commit does), messages sent, committed entries applied to the
//! shared state machine, read barriers released once the applied index
//! reaches their read index.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::prelude::{
    ConfChange, ConfChangeType, ConfState, Entry, EntryType, Message, MessageType, Snapshot,
};
use raft::{RawNode, SnapshotStatus, StateRole};
use tokio::sync::{oneshot, watch};

use super::proposal::{self, Body, Origin};
use super::storage::LogStorage;
use super::{NodeId, RaftMember, RaftRole, RaftStatus, Transport, snapshot};
use crate::engine::Shared;
use crate::state::{Command, Outcome};
use crate::{StoreError, StoreResult, lock};

/// Most mailbox messages handled in one loop turn.
const MAX_TURN_MESSAGES: usize = 4096;

/// How often a proposal or read barrier not answered yet is sent again: a
/// follower forwards both to the leader in one message, which the network
/// may lose (a broken connection, a partition). Sending again is safe: a
/// read barrier only asks, and a proposal applied twice is applied once
/// (the [`Dedup`] window).
const RETRY_EVERY: Duration = Duration::from_millis(300);

/// A proposal is sent again only this long after it was first made, well
/// inside the window in which duplicates are recognised.
const RETRY_FOR: Duration = Duration::from_secs(3);

/// Log indexes over which applied proposals are remembered, to apply a
/// proposal sent twice (a retry, a duplicated frame) only once. At the
/// store's peak write rate (tens of thousands per second) this is several
/// seconds, longer than [`RETRY_FOR`].
pub(crate) const DEDUP_WINDOW: u64 = 200_000;

/// A request to the node.
pub(crate) enum Msg {
    /// A frame from a peer, decoded.
    Raft(Box<Message>),
    Propose {
        body: Body,
        reply: Reply,
    },
    /// A linearizable read barrier: answered once this node has applied
    /// everything committed when the barrier was asked.
    Read(oneshot::Sender<StoreResult<()>>),
    ChangeMembers {
        change: ConfChange,
        address: String,
        reply: oneshot::Sender<StoreResult<()>>,
    },
    Status(oneshot::Sender<RaftStatus>),
    /// Whether elections should prefer this server (see
    /// [`RaftStore::prefer`](super::RaftStore::prefer)).
    Prefer(bool),
    Stop,
}

/// Who waits for a proposal.
pub(crate) enum Reply {
    Command(oneshot::Sender<StoreResult<Outcome>>),
    Keepalive(oneshot::Sender<StoreResult<Duration>>),
}

impl Reply {
    fn fail(self, error: StoreError) {
        match self {
            Reply::Command(tx) => {
                let _ = tx.send(Err(error));
            }
            Reply::Keepalive(tx) => {
                let _ = tx.send(Err(error));
            }
        }
    }
}

/// What the node shares with the store's handles.
#[derive(Debug)]
pub(crate) struct NodeState {
    /// Whether this node leads (lease expiry runs only there).
    pub(crate) is_leader: AtomicBool,
    /// The same, for tasks that wait for a change (the scheduler's
    /// election rides on it).
    pub(crate) leader_tx: watch::Sender<bool>,
}

/// Timing and sizes of a node.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NodeConfig {
    pub(crate) tick: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) snapshot_entries: u64,
}

struct Waiting<T> {
    reply: T,
    deadline: Instant,
}

/// Callers waiting at one read barrier.
type Barrier = Vec<Waiting<oneshot::Sender<StoreResult<()>>>>;

/// A proposal waiting to be applied, with what is needed to send it again.
struct Proposed {
    reply: Reply,
    data: Vec<u8>,
    first: Instant,
    retry_at: Instant,
    deadline: Instant,
}

/// The proposals applied over the last [`DEDUP_WINDOW`] log indexes. Every
/// server applies the same entries and installs the same snapshots (which
/// carry this window), so every server skips the same duplicates.
#[derive(Debug, Default)]
pub(crate) struct Dedup {
    order: std::collections::VecDeque<(u64, Origin)>,
    seen: std::collections::HashSet<Origin>,
}

impl Dedup {
    /// Records `origin` applied at `index`; false if it was applied before.
    pub(crate) fn first_time(&mut self, index: u64, origin: Origin) -> bool {
        while let Some(&(old, o)) = self.order.front()
            && old + DEDUP_WINDOW < index
        {
            self.order.pop_front();
            self.seen.remove(&o);
        }
        if !self.seen.insert(origin) {
            return false;
        }
        self.order.push_back((index, origin));
        true
    }

    pub(crate) fn entries(&self) -> impl Iterator<Item = &(u64, Origin)> {
        self.order.iter()
    }

    pub(crate) fn from_entries(entries: impl IntoIterator<Item = (u64, Origin)>) -> Self {
        let mut dedup = Dedup::default();
        for (index, origin) in entries {
            dedup.seen.insert(origin);
            dedup.order.push_back((index, origin));
        }
        dedup
    }
}

pub(crate) struct Node<L: LogStorage> {
    raw: RawNode<L>,
    log: L,
    id: NodeId,
    shared: Arc<Shared>,
    transport: Arc<dyn Transport>,
    members: BTreeMap<NodeId, String>,
    state: Arc<NodeState>,
    config: NodeConfig,
    next_request: u64,
    proposals: HashMap<u64, Proposed>,
    dedup: Dedup,
    changes: HashMap<u64, Waiting<oneshot::Sender<StoreResult<()>>>>,
    reads_queued: Barrier,
    /// Read barriers asked, by context, with when to ask again.
    reads_asked: HashMap<u64, (Instant, Barrier)>,
    /// Barriers whose read index is known, waiting for the applied index.
    reads_known: Vec<(u64, Barrier)>,
    applied: u64,
    removed: bool,
}

impl<L: LogStorage> Node<L> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        raw: RawNode<L>,
        log: L,
        shared: Arc<Shared>,
        transport: Arc<dyn Transport>,
        members: BTreeMap<NodeId, String>,
        state: Arc<NodeState>,
        config: NodeConfig,
        applied: u64,
        dedup: Dedup,
    ) -> Self {
        let id = raw.raft.id;
        let node = Node {
            raw,
            log,
            id,
            shared,
            transport,
            members,
            state,
            config,
            // Request numbers start from the clock, so that a restarted
            // server's requests never look like its earlier ones.
            next_request: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX / 2))
                .unwrap_or(1),
            proposals: HashMap::new(),
            dedup,
            changes: HashMap::new(),
            reads_queued: Vec::new(),
            reads_asked: HashMap::new(),
            reads_known: Vec::new(),
            applied,
            removed: false,
        };
        node.publish_peers();
        node
    }

    /// Runs the node until it is stopped or its log fails.
    pub(crate) fn run(mut self, mailbox: Receiver<Msg>) {
        let mut next_tick = Instant::now() + self.config.tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match mailbox.recv_timeout(wait) {
                Ok(msg) => {
                    if !self.handle(msg) {
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let mut stop = false;
            for _ in 0..MAX_TURN_MESSAGES {
                match mailbox.try_recv() {
                    Ok(msg) => {
                        if !self.handle(msg) {
                            stop = true;
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            if stop {
                break;
            }
            let now = Instant::now();
            if now >= next_tick {
                self.raw.tick();
                next_tick = now + self.config.tick;
                self.expire(now);
            }
            self.ask_reads();
            if let Err(e) = self.on_ready() {
                tracing::error!("the raft log failed, this server's store stops: {e}");
                self.fail_all(&e);
                break;
            }
        }
        self.fail_all(&StoreError::Closed);
        self.state.is_leader.store(false, Ordering::SeqCst);
        self.state.leader_tx.send_replace(false);
    }

    /// Handles one mailbox message; false to stop.
    fn handle(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Raft(message) => {
                // Errors are messages from unknown peers or of the wrong
                // kind: raft ignores them, and so do we.
                let _ = self.raw.step(*message);
            }
            Msg::Propose { body, reply } => self.propose(body, reply),
            Msg::Read(reply) => self.reads_queued.push(Waiting {
                reply,
                deadline: Instant::now() + self.config.request_timeout,
            }),
            Msg::ChangeMembers {
                change,
                address,
                reply,
            } => self.change_members(change, &address, reply),
            Msg::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Msg::Prefer(preferred) => self.raw.raft.set_priority(i64::from(preferred)),
            Msg::Stop => return false,
        }
        true
    }

    fn request_id(&mut self) -> u64 {
        let id = self.next_request;
        self.next_request += 1;
        id
    }

    fn propose(&mut self, body: Body, reply: Reply) {
        if let Some(error) = self.refusal() {
            return reply.fail(error);
        }
        let request = self.request_id();
        let data = proposal::encode(
            Origin {
                node: self.id,
                request,
            },
            &body,
        );
        match self.raw.propose(Vec::new(), data.clone()) {
            Ok(()) => {
                let now = Instant::now();
                self.proposals.insert(
                    request,
                    Proposed {
                        reply,
                        data,
                        first: now,
                        retry_at: now + RETRY_EVERY,
                        deadline: now + self.config.request_timeout,
                    },
                );
            }
            Err(e) => reply.fail(unavailable(&e)),
        }
    }

    fn change_members(
        &mut self,
        change: ConfChange,
        address: &str,
        reply: oneshot::Sender<StoreResult<()>>,
    ) {
        if let Some(error) = self.refusal() {
            let _ = reply.send(Err(error));
            return;
        }
        let request = self.request_id();
        let context = proposal::encode_conf_context(
            Origin {
                node: self.id,
                request,
            },
            address,
        );
        match self.raw.propose_conf_change(context, change) {
            Ok(()) => {
                self.changes.insert(
                    request,
                    Waiting {
                        reply,
                        deadline: Instant::now() + self.config.request_timeout,
                    },
                );
            }
            Err(e) => {
                let _ = reply.send(Err(unavailable(&e)));
            }
        }
    }

    /// Why this node cannot take a request now, if it cannot.
    fn refusal(&self) -> Option<StoreError> {
        if self.removed {
            return Some(StoreError::Unavailable {
                reason: "this server was removed from the cluster".to_owned(),
            });
        }
        if self.raw.raft.leader_id == raft::INVALID_ID {
            return Some(StoreError::Unavailable {
                reason: "the cluster has no leader this server can reach".to_owned(),
            });
        }
        None
    }

    /// Asks raft for one read index covering every barrier queued since the
    /// last turn.
    fn ask_reads(&mut self) {
        if self.reads_queued.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut self.reads_queued);
        if let Some(error) = self.refusal() {
            for w in waiting {
                let _ = w.reply.send(Err(error.clone()));
            }
            return;
        }
        let context = self.request_id();
        self.raw.read_index(context.to_be_bytes().to_vec());
        self.reads_asked
            .insert(context, (Instant::now() + RETRY_EVERY, waiting));
    }

    /// Fails requests past their deadline: a proposal lost with a leader
    /// change, a read barrier the leader never answered (a partition).
    fn expire(&mut self, now: Instant) {
        self.retry(now);
        let timeout = || StoreError::Unavailable {
            reason: "the cluster did not answer in time (no quorum reachable?)".to_owned(),
        };
        let late: Vec<u64> = self
            .proposals
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in late {
            if let Some(w) = self.proposals.remove(&id) {
                w.reply.fail(timeout());
            }
        }
        let late: Vec<u64> = self
            .changes
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in late {
            if let Some(w) = self.changes.remove(&id) {
                let _ = w.reply.send(Err(timeout()));
            }
        }
        let expire_reads = |list: &mut Barrier| {
            let (late, kept): (Vec<_>, Vec<_>) = std::mem::take(list)
                .into_iter()
                .partition(|w| w.deadline <= now);
            *list = kept;
            for w in late {
                let _ = w.reply.send(Err(timeout()));
            }
        };
        for (_, list) in self.reads_asked.values_mut() {
            expire_reads(list);
        }
        self.reads_asked.retain(|_, (_, list)| !list.is_empty());
        for (_, list) in &mut self.reads_known {
            expire_reads(list);
        }
        self.reads_known.retain(|(_, list)| !list.is_empty());
    }

    /// Sends again the proposals and read barriers not answered in
    /// [`RETRY_EVERY`], while a leader is known.
    fn retry(&mut self, now: Instant) {
        if self.refusal().is_some() {
            return;
        }
        let mut again = Vec::new();
        for p in self.proposals.values_mut() {
            if p.retry_at <= now && now < p.first + RETRY_FOR {
                p.retry_at = now + RETRY_EVERY;
                again.push(p.data.clone());
            }
        }
        for data in again {
            let _ = self.raw.propose(Vec::new(), data);
        }
        let mut contexts = Vec::new();
        for (context, (retry_at, _)) in &mut self.reads_asked {
            if *retry_at <= now {
                *retry_at = now + RETRY_EVERY;
                contexts.push(*context);
            }
        }
        for context in contexts {
            self.raw.read_index(context.to_be_bytes().to_vec());
        }
    }

    fn fail_all(&mut self, error: &StoreError) {
        for (_, w) in self.proposals.drain() {
            w.reply.fail(error.clone());
        }
        for (_, w) in self.changes.drain() {
            let _ = w.reply.send(Err(error.clone()));
        }
        let reads = self
            .reads_queued
            .drain(..)
            .chain(self.reads_asked.drain().flat_map(|(_, (_, l))| l))
            .chain(self.reads_known.drain(..).flat_map(|(_, l)| l));
        for w in reads {
            let _ = w.reply.send(Err(error.clone()));
        }
    }

    fn send(&mut self, messages: Vec<Message>) {
        for message in messages {
            let to = message.to;
            let snapshot = message.get_msg_type() == MessageType::MsgSnapshot;
            match message.write_to_bytes() {
                Ok(frame) => self.transport.send(to, frame),
                Err(e) => tracing::warn!("cannot encode a raft message to {to}: {e}"),
            }
            if snapshot {
                // Sent at best effort: if it is lost, the follower rejects
                // the next append and the leader sends the snapshot again.
                self.raw.report_snapshot(to, SnapshotStatus::Finish);
            }
        }
    }

    fn on_ready(&mut self) -> StoreResult<()> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        if let Some(ss) = ready.ss() {
            self.role_changed(ss.raft_state);
        }
        if !ready.messages().is_empty() {
            self.send(ready.take_messages());
        }
        if !ready.snapshot().is_empty() {
            self.install(ready.snapshot().clone())?;
        }
        self.apply(ready.take_committed_entries())?;
        let mut written = false;
        if !ready.entries().is_empty() {
            self.log.append(ready.entries())?;
            written = true;
        }
        if let Some(hs) = ready.hs() {
            self.log.set_hard_state(hs)?;
            written = true;
        }
        if written || ready.must_sync() {
            self.log.sync()?;
        }
        if !ready.persisted_messages().is_empty() {
            self.send(ready.take_persisted_messages());
        }
        for read in ready.take_read_states() {
            let context = read
                .request_ctx
                .as_slice()
                .try_into()
                .map(u64::from_be_bytes)
                .unwrap_or_default();
            if let Some((_, waiting)) = self.reads_asked.remove(&context) {
                self.reads_known.push((read.index, waiting));
            }
        }
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.log.set_commit(commit)?;
        }
        self.send(light.take_messages());
        self.apply(light.take_committed_entries())?;
        self.raw.advance_apply();
        self.release_reads();
        self.maybe_compact()?;
        Ok(())
    }

    fn role_changed(&mut self, role: StateRole) {
        let leads = role == StateRole::Leader;
        let led = self.state.is_leader.swap(leads, Ordering::SeqCst);
        if leads && !led {
            // Deadlines on this node followed the keepalives it applied,
            // later than the old leader saw them: give every lease a whole
            // TTL, as etcd's new leader does, so that no lease ends because
            // leadership moved.
            self.shared.renew_all_leases();
            tracing::info!(
                term = self.raw.raft.term,
                "this server leads the raft group"
            );
        }
        if leads != led {
            self.state.leader_tx.send_replace(leads);
        }
    }

    /// Installs a snapshot from the leader: the whole state replaced.
    fn install(&mut self, snap: Snapshot) -> StoreResult<()> {
        let decoded = snapshot::decode(snap.get_data()).map_err(|reason| StoreError::Internal {
            reason: format!("the leader's snapshot cannot be read: {reason}"),
        })?;
        let index = snap.get_metadata().index;
        self.log.apply_snapshot(snap)?;
        self.shared.restore(decoded.state);
        self.members = decoded.members;
        self.dedup = decoded.dedup;
        self.publish_peers();
        self.applied = index;
        tracing::info!(index, "installed a snapshot from the leader");
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) -> StoreResult<()> {
        let mut run: Vec<(Origin, Command)> = Vec::new();
        for entry in entries {
            match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => {}
                EntryType::EntryNormal => match proposal::decode(&entry.data) {
                    Ok((origin, _)) if !self.dedup.first_time(entry.index, origin) => {}
                    Ok((origin, Body::Command(command))) => run.push((origin, command)),
                    Ok((origin, Body::Keepalive(lease))) => {
                        self.apply_commands(&mut run);
                        self.apply_keepalive(origin, lease);
                    }
                    Err(reason) => {
                        return Err(StoreError::Internal {
                            reason: format!("raft entry {} cannot be read: {reason}", entry.index),
                        });
                    }
                },
                EntryType::EntryConfChange => {
                    self.apply_commands(&mut run);
                    self.apply_change(&entry)?;
                }
                EntryType::EntryConfChangeV2 => {
                    self.apply_commands(&mut run);
                    tracing::warn!(index = entry.index, "ignoring a joint membership change");
                }
            }
            self.applied = entry.index;
        }
        self.apply_commands(&mut run);
        Ok(())
    }

    /// Applies a run of commands under one lock, answering those this node
    /// proposed.
    fn apply_commands(&mut self, run: &mut Vec<(Origin, Command)>) {
        if run.is_empty() {
            return;
        }
        let outcomes = self.shared.apply(run.iter().map(|(_, c)| c));
        for ((origin, _), outcome) in run.drain(..).zip(outcomes) {
            if origin.node != self.id {
                continue;
            }
            if let Some(w) = self.proposals.remove(&origin.request) {
                match w.reply {
                    Reply::Command(tx) => {
                        let _ = tx.send(outcome);
                    }
                    other => other.fail(StoreError::Internal {
                        reason: "a command was answered as a keepalive".to_owned(),
                    }),
                }
            }
        }
    }

    fn apply_keepalive(&mut self, origin: Origin, lease: crate::LeaseId) {
        let ttl = self
            .shared
            .read()
            .lease(lease)
            .map(|l| Duration::from_millis(l.ttl_ms));
        if let Some(ttl) = ttl {
            self.shared.lessor().start(lease, ttl);
        }
        if origin.node != self.id {
            return;
        }
        if let Some(w) = self.proposals.remove(&origin.request) {
            let answer = ttl.ok_or(StoreError::LeaseNotFound { lease });
            match w.reply {
                Reply::Keepalive(tx) => {
                    let _ = tx.send(answer);
                }
                other => other.fail(StoreError::Internal {
                    reason: "a keepalive was answered as a command".to_owned(),
                }),
            }
        }
    }

    fn apply_change(&mut self, entry: &Entry) -> StoreResult<()> {
        let mut change = ConfChange::default();
        change
            .merge_from_bytes(&entry.data)
            .map_err(|e| StoreError::Internal {
                reason: format!("membership change {} cannot be read: {e}", entry.index),
            })?;
        // raft-rs carries the proposal's context in the entry.
        let (origin, address) = proposal::decode_conf_context(&entry.context).unwrap_or((
            Origin {
                node: 0,
                request: 0,
            },
            String::new(),
        ));
        let answer = match self.raw.apply_conf_change(&change) {
            Ok(cs) => {
                self.log.set_conf_state(cs)?;
                match change.get_change_type() {
                    ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                        self.members.insert(change.node_id, address);
                    }
                    ConfChangeType::RemoveNode => {
                        self.members.remove(&change.node_id);
                        if change.node_id == self.id {
                            self.removed = true;
                            tracing::warn!("this server was removed from the cluster");
                        }
                    }
                }
                self.publish_peers();
                Ok(())
            }
            Err(e) => Err(StoreError::Unavailable {
                reason: format!("the membership change was refused: {e}"),
            }),
        };
        if origin.node == self.id
            && let Some(w) = self.changes.remove(&origin.request)
        {
            let _ = w.reply.send(answer);
        }
        Ok(())
    }

    fn release_reads(&mut self) {
        let applied = self.applied;
        let (ready, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_known)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.reads_known = kept;
        for w in ready.into_iter().flat_map(|(_, list)| list) {
            let _ = w.reply.send(Ok(()));
        }
    }

    /// Writes a snapshot of the applied state and drops the log it covers,
    /// once the log holds more than the configured number of entries, or
    /// raft needs a newer snapshot for a follower.
    fn maybe_compact(&mut self) -> StoreResult<()> {
        let requested = self.log.take_snapshot_request();
        if !requested && self.log.entries_held() <= self.config.snapshot_entries {
            return Ok(());
        }
        let index = self.applied;
        let term = match self.raw.raft.raft_log.term(index) {
            Ok(term) => term,
            // Already compacted to (or past) this index.
            Err(_) => return Ok(()),
        };
        let data = snapshot::encode(&self.shared.read(), index, &self.members, &self.dedup);
        let mut snap = Snapshot::default();
        snap.set_data(data.into());
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(self.conf_state());
        self.log.compact(snap)
    }

    fn conf_state(&self) -> ConfState {
        self.raw.raft.prs().conf().to_conf_state()
    }

    fn publish_peers(&self) {
        let peers: BTreeMap<NodeId, String> = self
            .members
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, a)| (*id, a.clone()))
            .collect();
        self.transport.set_peers(&peers);
    }

    fn status(&self) -> RaftStatus {
        let raft = &self.raw.raft;
        let role = match raft.state {
            StateRole::Leader => RaftRole::Leader,
            StateRole::Follower => RaftRole::Follower,
            StateRole::Candidate | StateRole::PreCandidate => RaftRole::Candidate,
        };
        let conf = self.conf_state();
        let last_index = raft.raft_log.last_index();
        let members = conf
            .voters
            .iter()
            .map(|&id| (id, true))
            .chain(conf.learners.iter().map(|&id| (id, false)))
            .map(|(id, voter)| RaftMember {
                id,
                address: self.members.get(&id).cloned().unwrap_or_default(),
                voter,
                matched: (raft.state == StateRole::Leader)
                    .then(|| raft.prs().get(id).map(|p| p.matched))
                    .flatten(),
            })
            .collect();
        RaftStatus {
            id: self.id,
            role: if self.removed {
                RaftRole::Removed
            } else {
                role
            },
            term: raft.term,
            leader: (raft.leader_id != raft::INVALID_ID).then_some(raft.leader_id),
            commit: raft.raft_log.committed,
            applied: self.applied,
            last_index,
            members,
            preferred: raft.priority > 0,
        }
    }
}

fn unavailable(e: &raft::Error) -> StoreError {
    StoreError::Unavailable {
        reason: match e {
            raft::Error::ProposalDropped => {
                "the cluster has no leader this server can reach".to_owned()
            }
            other => format!("raft refused the request: {other}"),
        },
    }
}

/// A handle's way into the node.
#[derive(Debug)]
pub(crate) struct Mailbox {
    tx: SyncSender<Msg>,
    pub(crate) state: Arc<NodeState>,
    pub(crate) timeout: Duration,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Mailbox {
    pub(crate) fn new(
        tx: SyncSender<Msg>,
        state: Arc<NodeState>,
        timeout: Duration,
        thread: std::thread::JoinHandle<()>,
    ) -> Self {
        Mailbox {
            tx,
            state,
            timeout,
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Queues a message without waiting.
    pub(crate) fn post(&self, msg: Msg) -> StoreResult<()> {
        self.tx.try_send(msg).map_err(|e| match e {
            TrySendError::Full(_) => StoreError::Unavailable {
                reason: "the raft node is busy: too many requests waiting".to_owned(),
            },
            TrySendError::Disconnected(_) => StoreError::Closed,
        })
    }

    /// Sends a request and waits for its answer (bounded by the request
    /// timeout, plus a margin for the node's own deadline to fire first).
    pub(crate) async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Msg,
    ) -> StoreResult<T> {
        let (tx, rx) = oneshot::channel();
        self.post(make(tx))?;
        match tokio::time::timeout(self.timeout + Duration::from_secs(1), rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(StoreError::Closed),
            Err(_) => Err(StoreError::Unavailable {
                reason: "the raft node did not answer in time".to_owned(),
            }),
        }
    }

    /// Stops the node and waits for its thread.
    pub(crate) async fn stop(&self) {
        if let Err(TrySendError::Full(stop)) = self.tx.try_send(Msg::Stop) {
            // A full mailbox drains quickly; wait for room off the async
            // threads.
            let tx = self.tx.clone();
            let _ = tokio::task::spawn_blocking(move || tx.send(stop)).await;
        }
        let thread = lock(&self.thread).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}
