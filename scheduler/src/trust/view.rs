//! Each server's view of the credentials: loaded from the store, then
//! kept by following the store's watch of `auth/creds/`, so that checking
//! a request costs no store round trip.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use super::credentials::{CredentialRecord, Credentials};
use crate::records;
use flotilla_store::{RangeOptions, Store, StoreError, WatchEvent};

/// A credential as this server's view holds it, with the revision it was
/// last written at (for compare-and-swap).
#[derive(Debug, Clone)]
pub(super) struct Held {
    pub(super) record: CredentialRecord,
    pub(super) mod_revision: u64,
}

/// The in-memory view of `auth/creds/`.
#[derive(Debug, Default)]
pub(super) struct View {
    pub(super) by_id: HashMap<String, Held>,
}

/// Applies watch events of `auth/creds/` (under `prefix`) to `view`, each
/// only if newer than what it holds.
pub(super) fn apply(view: &RwLock<View>, prefix: &str, events: &[WatchEvent]) {
    let mut view = lock_write(view);
    for event in events {
        match event {
            WatchEvent::Put { kv, .. } => {
                let Some(id) = kv.key.strip_prefix(prefix) else {
                    continue;
                };
                match records::decode::<CredentialRecord>(&kv.key, &kv.value) {
                    Ok(record) => {
                        let newer = view
                            .by_id
                            .get(id)
                            .is_none_or(|h| h.mod_revision < kv.mod_revision);
                        if newer {
                            view.by_id.insert(
                                id.to_owned(),
                                Held {
                                    record,
                                    mod_revision: kv.mod_revision,
                                },
                            );
                        }
                    }
                    Err(e) => tracing::error!("ignoring a credential: {e}"),
                }
            }
            WatchEvent::Delete { key, revision, .. } => {
                if let Some(id) = key.strip_prefix(prefix)
                    && view
                        .by_id
                        .get(id)
                        .is_some_and(|h| h.mod_revision < *revision)
                {
                    view.by_id.remove(id);
                }
            }
        }
    }
}

pub(super) fn lock_read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // The view stays consistent even if a holder panicked: each write
    // replaces whole entries.
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(super) fn lock_write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Loads the credentials, then follows their changes, until the
/// [`Credentials`] is dropped. Reloads when the watch falls behind the
/// store's history or breaks.
pub(super) async fn follow(
    credentials: std::sync::Weak<Credentials>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut backoff =
        flotilla_proto::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let Some(c) = credentials.upgrade() else {
            return;
        };
        let store = Arc::clone(&c.store);
        let prefix = c.keys.credentials();
        drop(c);
        let loaded = tokio::select! {
            r = load(&*store, &prefix) => r,
            _ = stopped.wait_for(|s| *s) => return,
        };
        let (records, revision) = match loaded {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("cannot load the credentials, trying again: {e}");
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => continue,
                    _ = stopped.wait_for(|s| *s) => return,
                }
            }
        };
        let Some(c) = credentials.upgrade() else {
            return;
        };
        lock_write(&c.view).by_id = records;
        c.applied
            .send_modify(|r| *r = Some(r.unwrap_or(0).max(revision)));
        drop(c);
        let mut watcher = match store.watch(&prefix, revision + 1).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!("cannot watch the credentials, loading again: {e}");
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => continue,
                    _ = stopped.wait_for(|s| *s) => return,
                }
            }
        };
        backoff.reset();
        loop {
            let next = tokio::select! {
                r = watcher.next() => r,
                _ = stopped.wait_for(|s| *s) => return,
            };
            let events = match next {
                Ok(events) => events,
                Err(StoreError::Closed) => return,
                Err(e) => {
                    tracing::debug!("the credentials watch ended, loading again: {e}");
                    break;
                }
            };
            let Some(c) = credentials.upgrade() else {
                return;
            };
            apply(&c.view, &c.keys.credentials(), &events);
            if let Some(last) = events.last() {
                c.applied
                    .send_modify(|r| *r = Some(r.unwrap_or(0).max(last.revision())));
            }
        }
    }
}

/// Every credential under `prefix`, and the revision of the first page
/// (see [`flotilla_store::RangeResponse::revision`]).
async fn load(store: &dyn Store, prefix: &str) -> Result<(HashMap<String, Held>, u64), StoreError> {
    let mut out = HashMap::new();
    let mut first_revision = None;
    let mut after: Option<String> = None;
    loop {
        let mut options = RangeOptions::default().limit(1000);
        if let Some(a) = &after {
            options = options.start_after(a.clone());
        }
        let page = store.range(prefix, options).await?;
        first_revision.get_or_insert(page.revision);
        for kv in &page.kvs {
            let Some(id) = kv.key.strip_prefix(prefix) else {
                continue;
            };
            match records::decode::<CredentialRecord>(&kv.key, &kv.value) {
                Ok(record) => {
                    out.insert(
                        id.to_owned(),
                        Held {
                            record,
                            mod_revision: kv.mod_revision,
                        },
                    );
                }
                Err(e) => tracing::error!("ignoring a credential: {e}"),
            }
        }
        if !page.more {
            break;
        }
        after = page.kvs.last().map(|kv| kv.key.clone());
    }
    Ok((out, first_revision.unwrap_or(0)))
}
