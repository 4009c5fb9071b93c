//! [`AuditLog`]: every change made through the API, kept in the store
//! (`audit/<ms>-<random>`, in time order) with bounded retention.

use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::trust::{AuditEntry, AuditPage};

use super::credentials::{TrustError, now_ms};
use super::token::{hex, random_bytes};
use crate::keys::Keys;
use crate::records;
use flotilla_store::{RangeOptions, Store, StoreError, Txn, TxnOp};

/// How much of the audit log is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditRetention {
    /// The newest this many entries.
    pub max_entries: usize,
    /// Entries younger than this.
    pub max_age: Duration,
}

impl Default for AuditRetention {
    fn default() -> Self {
        AuditRetention {
            max_entries: 10_000,
            max_age: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// Longest `action` and `target` kept in an entry; longer ones are cut.
pub const MAX_FIELD_LEN: usize = 512;

/// Most entries in one page of `GET /v1/audit`.
pub const MAX_AUDIT_PAGE: usize = 1000;

/// The audit log over a store.
#[derive(Clone)]
pub struct AuditLog {
    store: Arc<dyn Store>,
    keys: Keys,
    retention: AuditRetention,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    pub fn new(store: Arc<dyn Store>, keys: Keys, retention: AuditRetention) -> AuditLog {
        AuditLog {
            store,
            keys,
            retention,
        }
    }

    /// Appends an entry.
    pub async fn record(&self, mut entry: AuditEntry) -> Result<(), TrustError> {
        truncate(&mut entry.action);
        truncate(&mut entry.target);
        let key = format!(
            "{}{:016}-{}",
            self.keys.audit(),
            entry.at_ms,
            hex(&random_bytes(4)?)
        );
        self.store
            .txn(Txn::new().and_then([TxnOp::put(key, records::encode(&entry))]))
            .await?;
        Ok(())
    }

    /// Entries from `since_ms` on (all kept, when `None`), oldest first, a
    /// page at a time; `token` is the previous page's `nextPageToken`.
    pub async fn list(
        &self,
        since_ms: Option<u64>,
        token: Option<&str>,
        limit: usize,
    ) -> Result<AuditPage, TrustError> {
        let prefix = self.keys.audit();
        let limit = limit.clamp(1, MAX_AUDIT_PAGE);
        let mut options = RangeOptions::default().limit(limit);
        // Keys are `<16-digit ms>-<random>`: every key of a millisecond
        // sorts after the bare millisecond.
        let after = match (token, since_ms) {
            (Some(t), _) => Some(format!("{prefix}{t}")),
            (None, Some(ms)) => Some(format!("{prefix}{ms:016}")),
            (None, None) => None,
        };
        if let Some(a) = after {
            options = options.start_after(a);
        }
        let page = self.store.range(&prefix, options).await?;
        let mut entries = Vec::with_capacity(page.kvs.len());
        for kv in &page.kvs {
            entries.push(
                records::decode::<AuditEntry>(&kv.key, &kv.value)
                    .map_err(|e| TrustError::Internal(e.to_string()))?,
            );
        }
        let next_page_token = if page.more {
            page.kvs
                .last()
                .and_then(|kv| kv.key.strip_prefix(&prefix))
                .map(str::to_owned)
        } else {
            None
        };
        Ok(AuditPage {
            entries,
            next_page_token,
        })
    }

    /// Drops the entries past the retention: older than `max_age`, and the
    /// oldest beyond `max_entries`. Returns how many were dropped.
    pub async fn trim(&self) -> Result<usize, StoreError> {
        let prefix = self.keys.audit();
        let cutoff = now_ms()
            .saturating_sub(u64::try_from(self.retention.max_age.as_millis()).unwrap_or(u64::MAX));
        // Two passes over the keys: count, then delete the oldest. Entries
        // are small and bounded in number, so the keys fit in memory.
        let mut keys = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut options = RangeOptions::default().limit(1000);
            if let Some(a) = &after {
                options = options.start_after(a.clone());
            }
            let page = self.store.range(&prefix, options).await?;
            keys.extend(page.kvs.iter().map(|kv| kv.key.clone()));
            if !page.more {
                break;
            }
            after = page.kvs.last().map(|kv| kv.key.clone());
        }
        let over = keys.len().saturating_sub(self.retention.max_entries);
        let old = keys
            .iter()
            .take_while(|k| {
                k.strip_prefix(&prefix)
                    .and_then(|rest| rest.split('-').next())
                    .and_then(|ms| ms.parse::<u64>().ok())
                    .is_some_and(|ms| ms < cutoff)
            })
            .count();
        let drop = over.max(old);
        let max_ops = self.store.limits().max_txn_ops.max(1);
        for chunk in keys[..drop].chunks(max_ops) {
            self.store
                .txn(Txn::new().and_then(chunk.iter().map(TxnOp::delete)))
                .await?;
        }
        Ok(drop)
    }
}

fn truncate(s: &mut String) {
    if s.len() > MAX_FIELD_LEN {
        let mut end = MAX_FIELD_LEN;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
}
