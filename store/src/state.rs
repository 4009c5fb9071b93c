//! The state machine both local backends share: keys, revisions and leases,
//! changed only by applying [`Command`]s.
//!
//! Applying is deterministic: no clock, no randomness, no I/O. The same
//! commands applied in the same order to the same state give the same state,
//! the same answers and the same events. That is what lets the embedded store
//! be "this state machine plus a write-ahead log of commands" (and later, a
//! raft log instead of a local one): a command is made durable first and
//! applied after, and replaying the log at startup rebuilds the state.
//! Lease *deadlines* are deliberately not part of it (see [`super::lease`]).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use super::{
    Compare, CompareOp, CompareTarget, DeleteResponse, GetResponse, KeyValue, LeaseGrant, LeaseId,
    Limits, PutResponse, RangeOptions, RangeResponse, StoreError, StoreResult, Txn, TxnOp,
    TxnOpResponse, TxnResponse, WatchEvent,
};

/// The revision of an empty store, as in etcd.
pub(crate) const INITIAL_REVISION: u64 = 1;

/// A change to the state, as logged. One command is one atomic step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// A transaction (every write of the store is one).
    Txn(Txn),
    /// Grant a lease with this TTL.
    Grant {
        /// The TTL in milliseconds.
        ttl_ms: u64,
        /// The id, chosen at random before the command is logged (so that
        /// lease ids cannot be guessed, and replaying the log gives the
        /// same ones); if it is taken, the next free one. `None` in logs
        /// written before ids were random: the state machine counts them.
        id: Option<LeaseId>,
    },
    /// End a lease and delete its keys.
    Revoke {
        /// The lease.
        lease: LeaseId,
        /// Why: a caller's revoke fails on an unknown lease, an expiry does
        /// nothing (a revoke may have won the race).
        reason: RevokeReason,
    },
}

/// Why a lease ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RevokeReason {
    /// A caller revoked it.
    Revoked,
    /// Its deadline passed without a keepalive.
    Expired,
}

/// What applying a command returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Txn(TxnResponse),
    Grant(LeaseGrant),
    /// The revision after the revoke.
    Revoke(u64),
}

/// A key's stored entry (the key itself is the map's key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) value: Arc<[u8]>,
    pub(crate) create_revision: u64,
    pub(crate) mod_revision: u64,
    pub(crate) version: u64,
    pub(crate) lease: Option<LeaseId>,
}

impl Entry {
    fn to_kv(&self, key: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: self.value.clone(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            lease: self.lease,
        }
    }
}

/// A lease as the state machine knows it: its TTL and its keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Lease {
    pub(crate) ttl_ms: u64,
    pub(crate) keys: BTreeSet<String>,
}

/// Keys, revisions and leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StateMachine {
    revision: u64,
    kvs: BTreeMap<String, Entry>,
    leases: BTreeMap<LeaseId, Lease>,
    next_lease: i64,
}

impl Default for StateMachine {
    fn default() -> Self {
        StateMachine {
            revision: INITIAL_REVISION,
            kvs: BTreeMap::new(),
            leases: BTreeMap::new(),
            next_lease: 1,
        }
    }
}

impl StateMachine {
    /// Rebuilds a state from its parts (a snapshot). Lease key sets are
    /// derived from the keys.
    pub(crate) fn from_parts(
        revision: u64,
        next_lease: i64,
        leases: impl IntoIterator<Item = (LeaseId, u64)>,
        kvs: impl IntoIterator<Item = (String, Entry)>,
    ) -> Result<Self, String> {
        let mut state = StateMachine {
            revision,
            kvs: BTreeMap::new(),
            leases: leases
                .into_iter()
                .map(|(id, ttl_ms)| {
                    (
                        id,
                        Lease {
                            ttl_ms,
                            keys: BTreeSet::new(),
                        },
                    )
                })
                .collect(),
            next_lease,
        };
        for (key, entry) in kvs {
            if let Some(lease) = entry.lease {
                state
                    .leases
                    .get_mut(&lease)
                    .ok_or_else(|| {
                        format!("key {key:?} is on lease {lease}, which does not exist")
                    })?
                    .keys
                    .insert(key.clone());
            }
            if entry.mod_revision > revision || entry.create_revision > entry.mod_revision {
                return Err(format!("key {key:?} has revisions beyond the store's"));
            }
            state.kvs.insert(key, entry);
        }
        Ok(state)
    }

    /// The current revision.
    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }

    /// The next lease id the state machine will grant.
    pub(crate) fn next_lease(&self) -> i64 {
        self.next_lease
    }

    /// Every key, in order.
    pub(crate) fn entries(&self) -> impl ExactSizeIterator<Item = (&String, &Entry)> {
        self.kvs.iter()
    }

    /// One lease, if it exists.
    pub(crate) fn lease(&self, id: LeaseId) -> Option<&Lease> {
        self.leases.get(&id)
    }

    /// Every lease, in order.
    pub(crate) fn leases(&self) -> impl ExactSizeIterator<Item = (&LeaseId, &Lease)> {
        self.leases.iter()
    }

    /// Reads one key.
    pub(crate) fn get(&self, key: &str) -> GetResponse {
        GetResponse {
            kv: self.kvs.get(key).map(|e| e.to_kv(key)),
            revision: self.revision,
        }
    }

    /// Reads keys by prefix.
    pub(crate) fn range(&self, prefix: &str, options: &RangeOptions) -> RangeResponse {
        let start = match &options.start_after {
            Some(after) if after.as_str() >= prefix => Bound::Excluded(after.as_str()),
            _ => Bound::Included(prefix),
        };
        let mut kvs = Vec::new();
        let mut more = false;
        for (key, entry) in self
            .kvs
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
        {
            if options.limit != 0 && kvs.len() == options.limit {
                more = true;
                break;
            }
            kvs.push(entry.to_kv(key));
        }
        RangeResponse {
            kvs,
            more,
            revision: self.revision,
        }
    }

    /// Runs a transaction that does not write (see [`Txn::is_read_only`]),
    /// without a command: it changes nothing.
    pub(crate) fn read_txn(&self, txn: &Txn) -> TxnResponse {
        let succeeded = txn.compares.iter().all(|c| self.compare(c));
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let responses = ops
            .iter()
            .map(|op| match op {
                TxnOp::Get { key } => TxnOpResponse::Get(self.get(key)),
                TxnOp::Range { prefix, options } => {
                    TxnOpResponse::Range(self.range(prefix, options))
                }
                // `read_txn` is only called for read-only transactions; a
                // write here would be a bug in the caller, answered as if it
                // did nothing rather than panicking a server.
                TxnOp::Put { .. } | TxnOp::Delete { .. } | TxnOp::DeletePrefix { .. } => {
                    TxnOpResponse::Delete(DeleteResponse {
                        revision: self.revision,
                        deleted: Vec::new(),
                    })
                }
            })
            .collect();
        TxnResponse {
            succeeded,
            revision: self.revision,
            responses,
        }
    }

    fn compare(&self, compare: &Compare) -> bool {
        let entry = self.kvs.get(&compare.key);
        let ordering = match (&compare.target, entry) {
            // etcd: a value compare on an absent key is always false.
            (CompareTarget::Value(_), None) => return false,
            (CompareTarget::Value(target), Some(e)) => e.value[..].cmp(&target[..]),
            (CompareTarget::Version(target), e) => e.map_or(0, |e| e.version).cmp(target),
            (CompareTarget::CreateRevision(target), e) => {
                e.map_or(0, |e| e.create_revision).cmp(target)
            }
            (CompareTarget::ModRevision(target), e) => e.map_or(0, |e| e.mod_revision).cmp(target),
            (CompareTarget::Lease(target), e) => {
                let current = e.and_then(|e| e.lease).map_or(0, |l| l.0);
                current.cmp(&target.map_or(0, |l| l.0))
            }
        };
        match compare.op {
            CompareOp::Equal => ordering.is_eq(),
            CompareOp::NotEqual => ordering.is_ne(),
            CompareOp::Greater => ordering.is_gt(),
            CompareOp::Less => ordering.is_lt(),
        }
    }

    /// Applies a command, appending the changes it made to `events` (all at
    /// the command's revision). An error means the command changed nothing.
    pub(crate) fn apply(
        &mut self,
        command: &Command,
        events: &mut Vec<WatchEvent>,
    ) -> StoreResult<Outcome> {
        match command {
            Command::Txn(txn) => self.apply_txn(txn, events).map(Outcome::Txn),
            Command::Grant { ttl_ms, id } => {
                let mut id = match id {
                    Some(id) => *id,
                    None => {
                        let id = LeaseId(self.next_lease);
                        self.next_lease += 1;
                        id
                    }
                };
                // A collision of random ids (or with a counted one) moves
                // to the next free id: the same on every replay.
                while id.0 <= 0 || self.leases.contains_key(&id) {
                    id = LeaseId(id.0.checked_add(1).unwrap_or(1));
                }
                self.leases.insert(
                    id,
                    Lease {
                        ttl_ms: *ttl_ms,
                        keys: BTreeSet::new(),
                    },
                );
                Ok(Outcome::Grant(LeaseGrant {
                    id,
                    ttl: Duration::from_millis(*ttl_ms),
                }))
            }
            Command::Revoke { lease, reason } => {
                let Some(entry) = self.leases.remove(lease) else {
                    return match reason {
                        RevokeReason::Revoked => Err(StoreError::LeaseNotFound { lease: *lease }),
                        RevokeReason::Expired => Ok(Outcome::Revoke(self.revision)),
                    };
                };
                let revision = self.revision + 1;
                for key in entry.keys {
                    if let Some(prev) = self.kvs.remove(&key) {
                        events.push(WatchEvent::Delete {
                            revision,
                            prev: Some(prev.to_kv(&key)),
                            key,
                        });
                    }
                }
                if !events.is_empty() {
                    self.revision = revision;
                }
                Ok(Outcome::Revoke(self.revision))
            }
        }
    }

    fn apply_txn(&mut self, txn: &Txn, events: &mut Vec<WatchEvent>) -> StoreResult<TxnResponse> {
        let succeeded = txn.compares.iter().all(|c| self.compare(c));
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        // Check everything that can fail before changing anything, so that a
        // failed transaction changes nothing.
        for op in ops {
            if let TxnOp::Put {
                lease: Some(lease), ..
            } = op
                && !self.leases.contains_key(lease)
            {
                return Err(StoreError::LeaseNotFound { lease: *lease });
            }
        }
        let revision = self.revision + 1;
        let first_event = events.len();
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            // Reads see the writes before them; their revision is fixed below.
            let response = match op {
                TxnOp::Put { key, value, lease } => {
                    let (prev, kv) = self.put(key, value, *lease, revision);
                    events.push(WatchEvent::Put {
                        kv,
                        prev: prev.clone(),
                    });
                    TxnOpResponse::Put(PutResponse { revision, prev })
                }
                TxnOp::Delete { key } => {
                    let deleted: Vec<KeyValue> = self.delete(key).into_iter().collect();
                    push_deletes(events, &deleted, revision);
                    TxnOpResponse::Delete(DeleteResponse { revision, deleted })
                }
                TxnOp::DeletePrefix { prefix } => {
                    let keys: Vec<String> = self
                        .kvs
                        .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
                        .take_while(|(k, _)| k.starts_with(prefix.as_str()))
                        .map(|(k, _)| k.clone())
                        .collect();
                    let deleted: Vec<KeyValue> =
                        keys.iter().filter_map(|key| self.delete(key)).collect();
                    push_deletes(events, &deleted, revision);
                    TxnOpResponse::Delete(DeleteResponse { revision, deleted })
                }
                TxnOp::Get { key } => TxnOpResponse::Get(self.get(key)),
                TxnOp::Range { prefix, options } => {
                    TxnOpResponse::Range(self.range(prefix, options))
                }
            };
            responses.push(response);
        }
        let changed = events.len() > first_event;
        if changed {
            self.revision = revision;
        }
        // Every answer inside a transaction carries the transaction's
        // revision; a write that did nothing leaves the revision unchanged.
        for response in &mut responses {
            match response {
                TxnOpResponse::Put(r) => r.revision = self.revision,
                TxnOpResponse::Delete(r) => r.revision = self.revision,
                TxnOpResponse::Get(r) => r.revision = self.revision,
                TxnOpResponse::Range(r) => r.revision = self.revision,
            }
        }
        Ok(TxnResponse {
            succeeded,
            revision: self.revision,
            responses,
        })
    }

    /// Writes a key at `revision`, returning what it was and what it is.
    fn put(
        &mut self,
        key: &str,
        value: &Arc<[u8]>,
        lease: Option<LeaseId>,
        revision: u64,
    ) -> (Option<KeyValue>, KeyValue) {
        let prev = self.kvs.get(key).map(|e| e.to_kv(key));
        let entry = Entry {
            value: value.clone(),
            create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
            mod_revision: revision,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            lease,
        };
        let old_lease = prev.as_ref().and_then(|p| p.lease);
        if old_lease != lease {
            if let Some(old) = old_lease.and_then(|l| self.leases.get_mut(&l)) {
                old.keys.remove(key);
            }
            if let Some(new) = lease.and_then(|l| self.leases.get_mut(&l)) {
                new.keys.insert(key.to_owned());
            }
        }
        let kv = entry.to_kv(key);
        self.kvs.insert(key.to_owned(), entry);
        (prev, kv)
    }

    /// Deletes a key, returning what it was.
    fn delete(&mut self, key: &str) -> Option<KeyValue> {
        let prev = self.kvs.remove(key)?;
        if let Some(lease) = prev.lease.and_then(|l| self.leases.get_mut(&l)) {
            lease.keys.remove(key);
        }
        Some(prev.to_kv(key))
    }
}

fn push_deletes(events: &mut Vec<WatchEvent>, deleted: &[KeyValue], revision: u64) {
    events.extend(deleted.iter().map(|prev| WatchEvent::Delete {
        key: prev.key.clone(),
        revision,
        prev: Some(prev.clone()),
    }));
}

/// Checks what can be checked without the state: limits, empty keys, and
/// keys written twice in one branch (which etcd refuses too). A transaction
/// that passes may still fail when applied ([`StoreError::LeaseNotFound`]).
pub(crate) fn validate_txn(txn: &Txn, limits: &Limits) -> StoreResult<()> {
    for (what, len) in [
        ("compares", txn.compares.len()),
        ("success operations", txn.success.len()),
        ("failure operations", txn.failure.len()),
    ] {
        if len > limits.max_txn_ops {
            return Err(StoreError::TooManyOps {
                what,
                ops: len,
                max: limits.max_txn_ops,
            });
        }
    }
    for compare in &txn.compares {
        if compare.key.is_empty() {
            return Err(StoreError::EmptyKey { what: "key" });
        }
    }
    validate_branch(&txn.success, limits)?;
    validate_branch(&txn.failure, limits)
}

fn validate_branch(ops: &[TxnOp], limits: &Limits) -> StoreResult<()> {
    let mut puts = HashSet::new();
    let mut deleted_keys = HashSet::new();
    let mut deleted_prefixes = Vec::new();
    for op in ops {
        match op {
            TxnOp::Put { key, value, .. } => {
                if key.is_empty() {
                    return Err(StoreError::EmptyKey { what: "key" });
                }
                if value.len() > limits.max_value_size {
                    return Err(StoreError::ValueTooLarge {
                        key: key.clone(),
                        size: value.len(),
                        max: limits.max_value_size,
                    });
                }
                if !puts.insert(key.as_str()) {
                    return Err(StoreError::DuplicateKey { key: key.clone() });
                }
            }
            TxnOp::Delete { key } | TxnOp::Get { key } => {
                if key.is_empty() {
                    return Err(StoreError::EmptyKey { what: "key" });
                }
                if op.is_write() {
                    deleted_keys.insert(key.as_str());
                }
            }
            TxnOp::DeletePrefix { prefix } => {
                if prefix.is_empty() {
                    return Err(StoreError::EmptyKey {
                        what: "delete prefix",
                    });
                }
                deleted_prefixes.push(prefix.as_str());
            }
            TxnOp::Range { .. } => {}
        }
    }
    for key in puts {
        if deleted_keys.contains(key) || deleted_prefixes.iter().any(|p| key.starts_with(p)) {
            return Err(StoreError::DuplicateKey {
                key: key.to_owned(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> TxnOp {
        TxnOp::put(key, value.as_bytes())
    }

    fn apply(
        state: &mut StateMachine,
        command: Command,
    ) -> (StoreResult<Outcome>, Vec<WatchEvent>) {
        let mut events = Vec::new();
        let outcome = state.apply(&command, &mut events);
        (outcome, events)
    }

    #[test]
    fn applying_the_same_commands_gives_the_same_state() {
        let commands = vec![
            Command::Grant {
                ttl_ms: 5000,
                id: None,
            },
            Command::Txn(Txn::new().and_then([put("/a", "1"), put("/b", "2")])),
            Command::Txn(Txn::new().and_then([TxnOp::put_with_lease(
                "/c",
                b"3".as_slice(),
                LeaseId(1),
            )])),
            Command::Txn(
                Txn::new()
                    .when([Compare::version("/a", CompareOp::Equal, 7)])
                    .and_then([put("/x", "no")])
                    .or_else([TxnOp::delete("/b")]),
            ),
            Command::Revoke {
                lease: LeaseId(1),
                reason: RevokeReason::Expired,
            },
        ];
        let run = || {
            let mut state = StateMachine::default();
            let mut all = Vec::new();
            for command in &commands {
                let mut events = Vec::new();
                let outcome = state.apply(command, &mut events);
                all.push((outcome.map_err(|e| e.to_string()), events));
            }
            (state, all)
        };
        let (a, outcomes_a) = run();
        let (b, outcomes_b) = run();
        assert_eq!(a, b);
        assert_eq!(outcomes_a, outcomes_b);
        assert_eq!(a.revision(), INITIAL_REVISION + 4);
        assert_eq!(
            a.entries().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["/a"]
        );
    }

    #[test]
    fn a_failed_lease_check_changes_nothing() {
        let mut state = StateMachine::default();
        let before = state.clone();
        let (outcome, events) = apply(
            &mut state,
            Command::Txn(Txn::new().and_then([
                put("/a", "1"),
                TxnOp::put_with_lease("/b", b"2".as_slice(), LeaseId(9)),
            ])),
        );
        assert!(matches!(
            outcome,
            Err(StoreError::LeaseNotFound { lease: LeaseId(9) })
        ));
        assert!(events.is_empty());
        assert_eq!(state, before);
    }

    #[test]
    fn expiry_of_an_unknown_lease_is_a_no_op_but_a_revoke_fails() {
        let mut state = StateMachine::default();
        let (outcome, _) = apply(
            &mut state,
            Command::Revoke {
                lease: LeaseId(3),
                reason: RevokeReason::Expired,
            },
        );
        assert_eq!(outcome.ok(), Some(Outcome::Revoke(INITIAL_REVISION)));
        let (outcome, _) = apply(
            &mut state,
            Command::Revoke {
                lease: LeaseId(3),
                reason: RevokeReason::Revoked,
            },
        );
        assert!(matches!(outcome, Err(StoreError::LeaseNotFound { .. })));
    }

    #[test]
    fn from_parts_rejects_keys_on_missing_leases() {
        let entry = Entry {
            value: Arc::from(b"v".as_slice()),
            create_revision: 2,
            mod_revision: 2,
            version: 1,
            lease: Some(LeaseId(4)),
        };
        let err = StateMachine::from_parts(3, 5, [], [("/k".to_owned(), entry)]).unwrap_err();
        assert!(err.contains("lease 4"), "{err}");
    }

    #[test]
    fn validation_catches_static_errors() {
        let limits = Limits {
            max_txn_ops: 2,
            max_value_size: 3,
        };
        let too_many = Txn::new().and_then([put("/a", "1"), put("/b", "1"), put("/c", "1")]);
        assert!(matches!(
            validate_txn(&too_many, &limits),
            Err(StoreError::TooManyOps { ops: 3, max: 2, .. })
        ));
        let big = Txn::new().and_then([put("/a", "1234")]);
        assert!(matches!(
            validate_txn(&big, &limits),
            Err(StoreError::ValueTooLarge { size: 4, .. })
        ));
        let twice = Txn::new().or_else([put("/a", "1"), put("/a", "2")]);
        assert!(matches!(
            validate_txn(&twice, &limits),
            Err(StoreError::DuplicateKey { .. })
        ));
        let inside_deleted = Txn::new().and_then([TxnOp::delete_prefix("/x/"), put("/x/1", "1")]);
        assert!(matches!(
            validate_txn(&inside_deleted, &limits),
            Err(StoreError::DuplicateKey { .. })
        ));
        let deletes_may_overlap =
            Txn::new().and_then([TxnOp::delete("/x/1"), TxnOp::delete_prefix("/x/")]);
        assert!(validate_txn(&deletes_may_overlap, &limits).is_ok());
        let empty = Txn::new().and_then([TxnOp::delete_prefix("")]);
        assert!(matches!(
            validate_txn(&empty, &limits),
            Err(StoreError::EmptyKey { .. })
        ));
    }
}
