//! The whole control plane of one server, assembled: the embedded store,
//! the [`Cluster`] behind the API, the election, and the reconcile loop
//! while this server leads. `flotilla server` runs one; tests run them
//! in-process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flotilla_scheduler::cluster::{Cluster, ClusterConfig};
use flotilla_scheduler::keys::Keys;
use flotilla_scheduler::leader::{ElectionConfig, ElectionError, campaign};
use flotilla_scheduler::placement::Strategy;
use flotilla_scheduler::presence;
use flotilla_scheduler::reconciler::{self, ReconcileError, ReconcilerConfig};
use flotilla_scheduler::records::LeaderRecord;
use flotilla_scheduler::store::{
    EmbeddedOptions, EmbeddedStore, EtcdConfig, EtcdConnectError, EtcdStore, Recovery, Store,
    StoreError,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::server::{ApiConfig, router, serve};

/// Settings of one server.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub listen: SocketAddr,
    /// The embedded store's directory; unused when `etcd` is set.
    pub data_dir: PathBuf,
    /// Keep the state in etcd instead of the embedded store.
    pub etcd: Option<EtcdConfig>,
    /// How long a machine stays alive without a heartbeat.
    pub machine_ttl: Duration,
    /// The leader's lease TTL: how long the cluster waits for a dead leader.
    pub leader_ttl: Duration,
    pub strategy: Strategy,
    pub keys: Keys,
    pub api: ApiConfig,
}

/// Why a server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the store in {path}: {source}")]
    Store { path: PathBuf, source: StoreError },
    #[error("cannot use etcd: {0}")]
    Etcd(#[from] EtcdConnectError),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("the API server failed: {0}")]
    Serve(std::io::Error),
}

/// A running server.
#[derive(Debug)]
pub struct Daemon {
    address: SocketAddr,
    /// What opening the embedded store found; `None` on etcd.
    recovery: Option<Recovery>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), DaemonError>>,
}

impl Daemon {
    /// Opens the store, binds the listener and starts serving and
    /// campaigning. Returns once the API accepts connections.
    pub async fn start(config: DaemonConfig) -> Result<Daemon, DaemonError> {
        let (store, recovery) = open_store(&config).await?;
        let listener = match tokio::net::TcpListener::bind(config.listen).await {
            Ok(l) => l,
            Err(source) => {
                store.close().await;
                return Err(DaemonError::Listen {
                    address: config.listen,
                    source,
                });
            }
        };
        let address = listener
            .local_addr()
            .map_err(|source| DaemonError::Listen {
                address: config.listen,
                source,
            })?;
        let dyn_store = store.dyn_store();
        let cluster = Arc::new(Cluster::new(
            dyn_store.clone(),
            ClusterConfig {
                keys: config.keys.clone(),
                machine_ttl: config.machine_ttl,
                ..ClusterConfig::default()
            },
        ));
        let api = router(cluster, config.api.clone());
        let (stop, stopped) = watch::channel(false);
        let election = ElectionConfig {
            keys: config.keys.clone(),
            ttl: config.leader_ttl,
            record: LeaderRecord {
                id: format!("{}-{}", hostname(), std::process::id()),
                address: format!("http://{address}"),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            },
        };
        let reconcile = ReconcilerConfig {
            keys: config.keys.clone(),
            strategy: config.strategy,
            machine_grace: config.machine_ttl,
            ..ReconcilerConfig::default()
        };
        let announcing = tokio::spawn(presence::announce(
            dyn_store.clone(),
            config.keys.clone(),
            election.record.clone(),
            config.leader_ttl,
            stopped.clone(),
        ));
        let task = tokio::spawn(async move {
            let leading = tokio::spawn(lead(dyn_store, election, reconcile, stopped.clone()));
            let mut until = stopped;
            let shutdown = async move {
                let _ = until.wait_for(|s| *s).await;
            };
            let served = serve(listener, api, shutdown).await;
            if let Err(e) = leading.await {
                tracing::error!("leader task failed: {e}");
            }
            let _ = announcing.await;
            store.close().await;
            served.map_err(DaemonError::Serve)
        });
        tracing::info!("flotilla server listening on http://{address}");
        Ok(Daemon {
            address,
            recovery,
            stop,
            task,
        })
    }

    /// Where the API listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// What opening the embedded store found; `None` on etcd.
    pub fn recovery(&self) -> Option<&Recovery> {
        self.recovery.as_ref()
    }

    /// Stops serving, gives up leadership (so another server takes over at
    /// once), and closes the store.
    pub async fn stop(self) -> Result<(), DaemonError> {
        let _ = self.stop.send(true);
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(DaemonError::Serve(std::io::Error::other(e))),
        }
    }
}

/// The store a server runs on.
enum OpenStore {
    Embedded(Arc<EmbeddedStore>),
    Etcd(Arc<EtcdStore>),
}

impl OpenStore {
    fn dyn_store(&self) -> Arc<dyn Store> {
        match self {
            OpenStore::Embedded(s) => s.clone(),
            OpenStore::Etcd(s) => s.clone(),
        }
    }

    /// Lets pending writes finish and releases the store.
    async fn close(&self) {
        match self {
            OpenStore::Embedded(s) => s.close().await,
            // Dropping the last handle closes the connections.
            OpenStore::Etcd(_) => {}
        }
    }
}

async fn open_store(config: &DaemonConfig) -> Result<(OpenStore, Option<Recovery>), DaemonError> {
    if let Some(etcd) = &config.etcd {
        let store = EtcdStore::connect(etcd.clone()).await?;
        tracing::info!(endpoints = ?etcd.endpoints, "using etcd");
        return Ok((OpenStore::Etcd(Arc::new(store)), None));
    }
    std::fs::create_dir_all(&config.data_dir).map_err(|source| DaemonError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let (store, recovery) = EmbeddedStore::open(&config.data_dir, EmbeddedOptions::default())
        .await
        .map_err(|source| DaemonError::Store {
            path: config.data_dir.clone(),
            source,
        })?;
    if let Some(torn) = &recovery.torn_tail {
        tracing::warn!(
            "the store's log ended in a torn write that was never acknowledged: cut {} bytes at offset {} of {} ({})",
            torn.discarded_bytes,
            torn.offset,
            torn.path.display(),
            torn.reason
        );
    }
    tracing::info!(
        dir = %config.data_dir.display(),
        revision = recovery.revision,
        leases = recovery.leases,
        "store opened"
    );
    Ok((OpenStore::Embedded(Arc::new(store)), Some(recovery)))
}

/// Campaigns, leads while it can, and campaigns again, until shutdown.
async fn lead(
    store: Arc<dyn Store>,
    election: ElectionConfig,
    reconcile: ReconcilerConfig,
    shutdown: watch::Receiver<bool>,
) {
    loop {
        let leadership = match campaign(store.clone(), &election, shutdown.clone()).await {
            Ok(l) => l,
            Err(ElectionError::Cancelled) => return,
            Err(e) => {
                tracing::error!("campaign failed: {e}");
                let mut shutdown = shutdown.clone();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        };
        tracing::info!(revision = leadership.revision(), "this server leads");
        match reconciler::run(store.clone(), &leadership, &reconcile, shutdown.clone()).await {
            ReconcileError::Shutdown => {
                leadership.resign(&*store).await;
                return;
            }
            ReconcileError::LeadershipLost => tracing::warn!("leadership lost"),
            ReconcileError::Store(e) => {
                tracing::error!("reconcile loop failed, stepping down: {e}");
                leadership.resign(&*store).await;
            }
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}
