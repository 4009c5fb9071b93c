#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test
//! The store contract (`contract/mod.rs`) run against the memory and the
//! embedded stores.

#[macro_use]
mod contract;

use std::sync::Arc;

use flotilla_store::{EmbeddedOptions, EmbeddedStore, MemoryStore};

use contract::Fixture;

mod memory {
    use super::*;

    async fn memory() -> Fixture {
        Fixture {
            store: Arc::new(MemoryStore::new()),
            guard: Box::new(()),
        }
    }

    contract_tests!(
        #[tokio::test(start_paused = true)]
        memory
    );
    history_contract_tests!(
        #[tokio::test(start_paused = true)]
        memory
    );
}

mod embedded {
    use super::*;

    /// An embedded store in a temporary directory (removed when the fixture
    /// drops, on success or failure), with a small snapshot threshold so
    /// that the cases also cross snapshots.
    async fn embedded() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let options = EmbeddedOptions {
            snapshot_threshold: 16 * 1024,
            ..EmbeddedOptions::default()
        };
        let (store, recovery) = EmbeddedStore::open(dir.path().join("data"), options)
            .await
            .unwrap();
        assert_eq!(recovery.revision, 1);
        Fixture {
            store: Arc::new(store),
            guard: Box::new(dir),
        }
    }

    contract_tests!(
        #[tokio::test(start_paused = true)]
        embedded
    );

    /// As [`embedded`], with snapshots every 16 MiB of log: the history
    /// cases write hundreds of megabytes, and a snapshot after every write
    /// would only make them slow.
    async fn embedded_large() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let options = EmbeddedOptions {
            snapshot_threshold: 16 * 1024 * 1024,
            ..EmbeddedOptions::default()
        };
        let (store, _) = EmbeddedStore::open(dir.path().join("data"), options)
            .await
            .unwrap();
        Fixture {
            store: Arc::new(store),
            guard: Box::new(dir),
        }
    }

    history_contract_tests!(
        #[tokio::test(start_paused = true)]
        embedded_large
    );
}
