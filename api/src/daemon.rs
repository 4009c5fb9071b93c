//! The whole control plane of one server, assembled: the embedded store,
//! the [`Cluster`] behind the API, the election, and the reconcile loop
//! while this server leads. `flotilla server` runs one; tests run them
//! in-process.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flotilla_scheduler::cluster::{Cluster, ClusterConfig};
use flotilla_scheduler::events::{EventLog, EventRetention};
use flotilla_scheduler::identity::{self, IdentityError};
use flotilla_scheduler::keys::Keys;
use flotilla_scheduler::leader::{ElectionConfig, ElectionError, campaign};
use flotilla_scheduler::metered_store::MeteredStore;
use flotilla_scheduler::metrics::SchedulerMetrics;
use flotilla_scheduler::placement::Strategy;
use flotilla_scheduler::presence;
use flotilla_scheduler::quota::Quotas;
use flotilla_scheduler::reconciler::{self, ReconcileError, ReconcilerConfig};
use flotilla_scheduler::records::LeaderRecord;
use flotilla_scheduler::secrets::{KEY_FILE, KeyError, Secrets, SecretsError, SecretsKey};
use flotilla_scheduler::trust::{AuditLog, AuditRetention, Credentials, TrustError};
use flotilla_store::raft::{NodeId, RaftOptions, RaftStore};
use flotilla_store::{
    Compare, EmbeddedOptions, EmbeddedStore, EtcdConfig, EtcdConnectError, EtcdStore, MemoryStore,
    Recovery, Store, StoreError, Txn, TxnOp,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use flotilla_sync::git::TreeLimits;
use flotilla_sync::{FollowConfig, SourceLimits, Sources, SyncMetrics};

use crate::peer::{DialOptions, PeerError, PeerLimits, PeerListener, PeerTls, PeerTransport};
use crate::server::{ApiConfig, Metrics, Transport, Trust, router_with_metrics, serve};
use crate::tls::{self, ClusterCa, IssuedCert, TLS_DIR, TlsError};

/// How the API is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSettings {
    /// HTTPS with a certificate this server makes at each start, signed by
    /// the cluster CA, for its listen address, host name, loopback and
    /// these names.
    ClusterCa { extra_names: Vec<String> },
    /// HTTPS with the operator's own certificate (chain) and key, PEM.
    Files { cert: PathBuf, key: PathBuf },
    /// Plain HTTP (`--insecure-http`): anyone on the path sees every
    /// credential.
    Insecure,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings::ClusterCa {
            extra_names: Vec::new(),
        }
    }
}

/// The raft-replicated store's settings: this server's id, the servers'
/// peer addresses, and whether it joins an existing cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftSettings {
    /// This server's id (`--raft-id`).
    pub id: NodeId,
    /// Every server of a new cluster and its peer address
    /// (`https://HOST:PORT`), this one included (`--peers`).
    pub peers: std::collections::BTreeMap<NodeId, String>,
    /// Added to an existing cluster with `flotilla server add` (`--join`):
    /// bootstrap nothing, take everything from the leader.
    pub join: bool,
    /// Where to listen for peers (`--peer-listen`); by default the port of
    /// this server's peer address, on every interface.
    pub listen: Option<SocketAddr>,
}

/// Settings of one server.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub listen: SocketAddr,
    /// The embedded store's directory; with `etcd`, where the server
    /// records the cluster it serves (`flotilla_scheduler::identity`).
    pub data_dir: PathBuf,
    /// Keep the state in etcd instead of the embedded store.
    pub etcd: Option<EtcdConfig>,
    /// Replicate the embedded store between servers with raft.
    pub raft: Option<RaftSettings>,
    /// How long a machine stays alive without a heartbeat.
    pub machine_ttl: Duration,
    /// The leader's lease TTL: how long the cluster waits for a dead leader.
    pub leader_ttl: Duration,
    pub strategy: Strategy,
    pub keys: Keys,
    pub api: ApiConfig,
    pub tls: TlsSettings,
    /// An admin token the operator gives the server (`--token`), known to
    /// this server only, beside the credentials in the store.
    pub static_admin_token: Option<String>,
    /// The file of the key that seals secrets (`--secrets-key`); `None`:
    /// `DATA_DIR/secrets.key`, made at the first start.
    pub secrets_key: Option<PathBuf>,
    /// Record this server's secrets key as the cluster's even if another is
    /// recorded (`--replace-secrets-key`, to rotate it).
    pub replace_secrets_key: bool,
    /// How much of the audit log is kept.
    pub audit: AuditRetention,
    /// What the cluster may hold.
    pub quotas: Quotas,
    /// How much of the cluster's history (`flotilla events`) is kept.
    pub events: EventRetention,
    /// How the leader follows git sources (docs/git-sync.md).
    pub sync: SyncSettings,
}

/// The bounds of git sources.
#[derive(Debug, Clone, Default)]
pub struct SyncSettings {
    /// What a source may ask for (its interval's floor, how many sources).
    pub limits: SourceLimits,
    /// How long a fetch may take, how much of a commit is read, how often
    /// the leader rereads the list of sources.
    pub follow: SyncFollow,
}

/// The leader's side of [`SyncSettings`].
#[derive(Debug, Clone)]
pub struct SyncFollow {
    pub fetch_timeout: Duration,
    pub tree: TreeLimits,
    pub poll: Duration,
}

impl Default for SyncFollow {
    fn default() -> Self {
        let d = FollowConfig::new(PathBuf::new());
        SyncFollow {
            fetch_timeout: d.fetch_timeout,
            tree: d.tree,
            poll: d.poll,
        }
    }
}

/// The directory of the data directory where git sources keep their
/// cache repositories.
pub const SYNC_DIR: &str = "sync";

/// What the leader needs to follow git sources.
struct SyncRunner {
    cluster: Arc<Cluster>,
    sources: Sources,
    secrets: Arc<Secrets>,
    audit: AuditLog,
    config: FollowConfig,
    metrics: SyncMetrics,
}

/// Why a server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    // The source is not repeated in the message: the binary prints the
    // whole chain.
    #[error("cannot open the store in {path}")]
    Store { path: PathBuf, source: StoreError },
    #[error("cannot use etcd: {0}")]
    Etcd(Box<EtcdConnectError>),
    #[error("the raft store: {0}")]
    Raft(String),
    #[error("the raft store's peer transport: {0}")]
    Peer(#[from] PeerError),
    #[error(transparent)]
    Identity(Box<IdentityError>),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("the API server failed: {0}")]
    Serve(std::io::Error),
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Ca(String),
    #[error("cannot set up the credentials: {0}")]
    Trust(#[from] TrustError),
    #[error(transparent)]
    SecretsKey(#[from] KeyError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
}

impl From<EtcdConnectError> for DaemonError {
    fn from(e: EtcdConnectError) -> DaemonError {
        DaemonError::Etcd(Box::new(e))
    }
}

impl From<IdentityError> for DaemonError {
    fn from(e: IdentityError) -> DaemonError {
        DaemonError::Identity(Box::new(e))
    }
}

/// This server's id, unique per process start: `<hostname>-<pid>`, with
/// `-<n>` for the second and later servers started in one process (tests),
/// so that they do not announce themselves under one key.
fn server_id() -> String {
    static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = format!("{}-{}", hostname(), std::process::id());
    if n == 0 { id } else { format!("{id}-{n}") }
}

/// A running server.
#[derive(Debug)]
pub struct Daemon {
    address: SocketAddr,
    /// `https` or `http`.
    scheme: &'static str,
    trust: Arc<Trust>,
    /// Where this server wrote the cluster's first admin token, when it
    /// made it at this start.
    admin_token: Option<PathBuf>,
    /// What opening the embedded store found; `None` on etcd.
    recovery: Option<Recovery>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), DaemonError>>,
}

impl Daemon {
    /// Opens the store, sets up TLS and the credentials, binds the
    /// listener and starts serving and campaigning. Returns once the API
    /// accepts connections.
    pub async fn start(config: DaemonConfig) -> Result<Daemon, DaemonError> {
        create_data_dir(&config)?;
        let (store, recovery) = open_store(&config).await?;
        match Daemon::start_on(config, store.clone(), recovery).await {
            Ok(d) => Ok(d),
            Err(e) => {
                store.close().await;
                Err(e)
            }
        }
    }

    /// A server as [`Daemon::start`] assembles it (the API, the election,
    /// the reconcile loop, the credentials, the data directory's CA,
    /// secrets key and first admin token), over `store` instead of the
    /// store `config` names (its `etcd` and `raft` are not used). For
    /// tests: they keep `store` to look into it and to make it fail; its
    /// state lives as long as its last handle.
    pub async fn start_in_memory(
        config: DaemonConfig,
        store: Arc<MemoryStore>,
    ) -> Result<Daemon, DaemonError> {
        create_data_dir(&config)?;
        Daemon::start_on(config, OpenStore::Memory(store), None).await
    }

    async fn start_on(
        config: DaemonConfig,
        store: OpenStore,
        recovery: Option<Recovery>,
    ) -> Result<Daemon, DaemonError> {
        // Every component reaches the store through one timed handle.
        let scheduler_metrics = SchedulerMetrics::default();
        let dyn_store: Arc<dyn Store> = Arc::new(MeteredStore::new(
            store.dyn_store(),
            store.backend(),
            scheduler_metrics.store().clone(),
        ));
        let cluster_id = patiently(
            "read the cluster's id",
            || {
                let backend = match store.raft() {
                    Some(_) => identity::Replicated::Raft,
                    None => identity::Replicated::Etcd,
                };
                identity::cluster_id_on(&*dyn_store, &config.keys, &config.data_dir, backend)
            },
            |e| matches!(e, IdentityError::Store { source, .. } if source.is_temporary()),
        )
        .await?;
        let ca = Arc::new(cluster_ca(&*dyn_store, &config).await?);
        let listen_error = |source| DaemonError::Listen {
            address: config.listen,
            source,
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(listen_error)?;
        let address = listener.local_addr().map_err(listen_error)?;
        let transport = transport(&config, &ca, address)?;
        let scheme = match transport {
            Transport::Tls(_) => "https",
            Transport::Plain => "http",
        };
        let credentials = Credentials::start(
            dyn_store.clone(),
            config.keys.clone(),
            config.static_admin_token.as_deref(),
        );
        let admin_token = credentials.bootstrap_admin(&config.data_dir).await?;
        if let Some(path) = &admin_token {
            tracing::info!(
                "this is the cluster's first start: its admin token is in {} (readable by this user only)",
                path.display()
            );
        }
        let audit = AuditLog::new(dyn_store.clone(), config.keys.clone(), config.audit);
        // A key named on the command line must exist; the data
        // directory's is made at the first start.
        let secrets_key = match &config.secrets_key {
            Some(path) => SecretsKey::read(path)?,
            None => SecretsKey::read_or_create(&config.data_dir.join(KEY_FILE))?,
        };
        let secrets = Secrets::new(dyn_store.clone(), config.keys.clone(), secrets_key);
        if config.replace_secrets_key {
            secrets.replace_key().await?;
            tracing::warn!(
                "this server's secrets key is now the cluster's: secrets sealed with the previous key cannot be opened until flotilla secret set gives them a new value"
            );
        } else {
            secrets.claim_key().await?;
        }
        let sources = Sources::new(dyn_store.clone(), config.keys.clone(), config.sync.limits);
        let secrets = Arc::new(secrets);
        let trust = Arc::new(Trust {
            credentials,
            audit: audit.clone(),
            ca,
            secrets: Arc::clone(&secrets),
            sync: Arc::new(sources.clone()),
        });
        // One log for the API and the reconcile loop: this server's events
        // keep one order.
        let events = EventLog::new(dyn_store.clone(), config.keys.clone(), config.events);
        let cluster = Arc::new(
            Cluster::new(
                dyn_store.clone(),
                ClusterConfig {
                    keys: config.keys.clone(),
                    machine_ttl: config.machine_ttl,
                    cluster_id,
                    quotas: config.quotas,
                },
            )
            .with_events(events.clone()),
        );
        cluster.start_counting();
        let sync_metrics = SyncMetrics::default();
        let mut metrics = Metrics::new(&scheduler_metrics);
        sync_metrics.register(metrics.registry_mut());
        let metrics = Arc::new(metrics);
        let sync = SyncRunner {
            cluster: Arc::clone(&cluster),
            sources,
            secrets,
            audit: audit.clone(),
            config: FollowConfig {
                cache_dir: config.data_dir.join(SYNC_DIR),
                fetch_timeout: config.sync.follow.fetch_timeout,
                tree: config.sync.follow.tree,
                poll: config.sync.follow.poll,
            },
            metrics: sync_metrics,
        };
        let api = router_with_metrics(
            cluster,
            Arc::clone(&trust),
            config.api.clone(),
            metrics,
            store.raft().cloned(),
        );
        let (stop, stopped) = watch::channel(false);
        let election = ElectionConfig {
            keys: config.keys.clone(),
            ttl: config.leader_ttl,
            record: LeaderRecord {
                id: server_id(),
                address: format!("{scheme}://{address}"),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            },
            // On raft, the scheduler leads where the store leads: its
            // writes go to the leader without a hop, and failover is as
            // fast as raft's election.
            follow: store.raft().map(|r| r.leadership()),
        };
        let mut reconcile = ReconcilerConfig {
            keys: config.keys.clone(),
            strategy: config.strategy,
            machine_grace: config.machine_ttl,
            events: Some(events.clone()),
            server: format!("{} ({})", election.record.id, election.record.address),
            metrics: scheduler_metrics,
            ..ReconcilerConfig::default()
        };
        // While it follows, a server that shares its store with others
        // (etcd, raft) keeps the placement view warm, so that it plans at
        // once when it comes to lead. A server alone on the embedded store
        // leads from its start and nobody takes over from it: a warm view
        // would only be a second load beside its own.
        if !matches!(store, OpenStore::Embedded(_) | OpenStore::Memory(_)) {
            let warm = flotilla_scheduler::warm::keep_warm(
                dyn_store.clone(),
                reconcile.clone(),
                stopped.clone(),
            );
            // On raft, elections prefer the servers whose view is ready.
            if let Some(raft) = store.raft() {
                tokio::spawn(prefer_when_warm(
                    raft.clone(),
                    warm.ready(),
                    stopped.clone(),
                ));
            }
            reconcile.warm = Some(warm);
        }
        let announcing = tokio::spawn(presence::announce(
            dyn_store.clone(),
            config.keys.clone(),
            election.record.clone(),
            store.raft().cloned(),
            config.leader_ttl,
            stopped.clone(),
        ));
        let trimming = tokio::spawn(trim_audit(audit, stopped.clone()));
        let trimming_events = tokio::spawn(trim_events(events.clone(), stopped.clone()));
        let limits = config.api.http;
        let task = tokio::spawn(async move {
            let leading = tokio::spawn(lead(dyn_store, election, reconcile, sync, stopped.clone()));
            let mut until = stopped;
            let shutdown = async move {
                let _ = until.wait_for(|s| *s).await;
            };
            let served = serve(listener, api, transport, limits, shutdown).await;
            if let Err(e) = leading.await {
                tracing::error!("leader task failed: {e}");
            }
            let _ = announcing.await;
            let _ = trimming.await;
            let _ = trimming_events.await;
            // The last events (the leader resigning its units' decisions,
            // the last reports) are written before the store closes, unless
            // the store is stuck.
            if tokio::time::timeout(EVENTS_FLUSH_TIMEOUT, events.flush())
                .await
                .is_err()
            {
                tracing::warn!("the last events could not be written before shutdown");
            }
            store.close().await;
            served.map_err(DaemonError::Serve)
        });
        if scheme == "http" {
            tracing::warn!(
                "serving plain HTTP (--insecure-http): every credential and unit crosses the network in clear text"
            );
        }
        tracing::info!("the cluster CA's fingerprint is {}", trust.ca.fingerprint());
        tracing::info!("flotilla server listening on {scheme}://{address}");
        Ok(Daemon {
            address,
            scheme,
            trust,
            admin_token,
            recovery,
            stop,
            task,
        })
    }

    /// The URL clients reach this server at (`https://ADDR:PORT`), with a
    /// wildcard listen address replaced by loopback.
    pub fn url(&self) -> String {
        let ip = match self.address.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!(
            "{}://{}",
            self.scheme,
            SocketAddr::new(ip, self.address.port())
        )
    }

    /// The credentials, the audit log and the CA this server serves with.
    pub fn trust(&self) -> &Arc<Trust> {
        &self.trust
    }

    /// Where this server wrote the cluster's first admin token, when it
    /// made it at this start.
    pub fn admin_token_path(&self) -> Option<&Path> {
        self.admin_token.as_deref()
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

/// The data directory holds the store, the CA key and the admin token:
/// readable by the server's user only.
fn create_data_dir(config: &DaemonConfig) -> Result<(), DaemonError> {
    crate::files::create_private_dir(&config.data_dir).map_err(|source| DaemonError::DataDir {
        path: config.data_dir.clone(),
        source,
    })
}

/// The store a server runs on.
#[derive(Clone)]
enum OpenStore {
    Embedded(Arc<EmbeddedStore>),
    Etcd(Arc<EtcdStore>),
    Raft(Arc<RaftServer>),
    /// In memory, alone ([`Daemon::start_in_memory`]).
    Memory(Arc<MemoryStore>),
}

/// A raft store with the listener its peers reach it on.
struct RaftServer {
    store: Arc<RaftStore>,
    listener: std::sync::Mutex<Option<PeerListener>>,
}

impl OpenStore {
    fn dyn_store(&self) -> Arc<dyn Store> {
        match self {
            OpenStore::Embedded(s) => s.clone(),
            OpenStore::Etcd(s) => s.clone(),
            OpenStore::Raft(r) => r.store.clone(),
            OpenStore::Memory(s) => s.clone(),
        }
    }

    /// The raft store, when the server runs on one.
    fn raft(&self) -> Option<&Arc<RaftStore>> {
        match self {
            OpenStore::Raft(r) => Some(&r.store),
            _ => None,
        }
    }

    /// The backend's name in the metrics.
    fn backend(&self) -> &'static str {
        match self {
            OpenStore::Embedded(_) => "embedded",
            OpenStore::Etcd(_) => "etcd",
            OpenStore::Raft(_) => "raft",
            OpenStore::Memory(_) => "memory",
        }
    }

    /// Lets pending writes finish and releases the store.
    async fn close(&self) {
        match self {
            OpenStore::Embedded(s) => s.close().await,
            OpenStore::Raft(r) => {
                let listener = flotilla_store::lock(&r.listener).take();
                if let Some(listener) = listener {
                    listener.shutdown().await;
                }
                r.store.close().await;
            }
            // Dropping the last handle closes the connections; a memory
            // store has nothing to write out.
            OpenStore::Etcd(_) | OpenStore::Memory(_) => {}
        }
    }
}

async fn open_store(config: &DaemonConfig) -> Result<(OpenStore, Option<Recovery>), DaemonError> {
    if let Some(etcd) = &config.etcd {
        let store = EtcdStore::connect(etcd.clone()).await?;
        tracing::info!(endpoints = ?etcd.endpoints, "using etcd");
        return Ok((OpenStore::Etcd(Arc::new(store)), None));
    }
    if let Some(raft) = &config.raft {
        return Ok((
            OpenStore::Raft(Arc::new(open_raft(config, raft).await?)),
            None,
        ));
    }
    let (store, recovery) = EmbeddedStore::open(&config.data_dir, EmbeddedOptions::default())
        .await
        .map_err(|source| DaemonError::Store {
            path: config.data_dir.clone(),
            source,
        })?;
    if let Some(torn) = &recovery.torn_tail {
        tracing::warn!("{torn}");
    }
    tracing::info!(
        dir = %config.data_dir.display(),
        revision = recovery.revision,
        leases = recovery.leases,
        "store opened"
    );
    Ok((OpenStore::Embedded(Arc::new(store)), Some(recovery)))
}

/// Opens the raft store and listens for its peers. The peers' mutual TLS
/// needs the cluster CA before the store can answer, so with raft the CA
/// comes from `DATA_DIR/tls/` first: made at the first start of the first
/// server, copied to the others before theirs (docs/deploying.md).
async fn open_raft(config: &DaemonConfig, raft: &RaftSettings) -> Result<RaftServer, DaemonError> {
    let (ca, made) = ClusterCa::load_or_create(&config.data_dir.join(TLS_DIR))?;
    if made {
        tracing::warn!(
            fingerprint = ca.fingerprint(),
            "made a new cluster CA: the other servers of this cluster need a copy of {} before they start",
            config.data_dir.join(TLS_DIR).display()
        );
    }
    // The secrets key too, so that both can be copied to the other servers
    // as soon as the first one has started (the rest of the start waits for
    // a quorum).
    if config.secrets_key.is_none() {
        SecretsKey::read_or_create(&config.data_dir.join(KEY_FILE))?;
    }
    let url = raft.peers.get(&raft.id).ok_or_else(|| {
        DaemonError::Raft(format!(
            "--peers must list this server ({}) with its own peer address too",
            raft.id
        ))
    })?;
    let tls = Arc::new(PeerTls::new(Arc::new(ca), raft.id, url)?);
    let listen = match raft.listen {
        Some(listen) => listen,
        None => {
            let (_, port) = crate::peer::cert::parse_peer_url(url)?;
            SocketAddr::from(([0, 0, 0, 0], port))
        }
    };
    let transport = Arc::new(PeerTransport::new(
        tls.clone(),
        tokio::runtime::Handle::current(),
        DialOptions::default(),
    ));
    let mut options = RaftOptions::new(raft.id, raft.peers.clone());
    options.join = raft.join;
    let store = RaftStore::open(&config.data_dir, options, transport)
        .await
        .map_err(|source| DaemonError::Store {
            path: config.data_dir.clone(),
            source,
        })?;
    let store = Arc::new(store);
    let listener = match PeerListener::bind(listen, tls, store.inbox(), PeerLimits::default()).await
    {
        Ok(l) => l,
        Err(e) => {
            store.close().await;
            return Err(e.into());
        }
    };
    tracing::info!(
        id = raft.id,
        peers = ?raft.peers,
        listen = %listener.local_addr(),
        join = raft.join,
        "replicating the store with raft"
    );
    Ok(RaftServer {
        store,
        listener: std::sync::Mutex::new(Some(listener)),
    })
}

/// The cluster CA: this server's copy in `DATA_DIR/tls/`, which must be the
/// one whose certificate the store holds (servers on one etcd share it by
/// copying the files); made, and published, at the cluster's first start.
async fn cluster_ca(store: &dyn Store, config: &DaemonConfig) -> Result<ClusterCa, DaemonError> {
    let dir = config.data_dir.join(TLS_DIR);
    let key = config.keys.ca();
    let copy = |why: String| {
        DaemonError::Ca(format!(
            "{why}; servers of one cluster share its CA: copy {cert} and {key_file} from the data directory of a server of this cluster into {dir}",
            cert = Path::new(TLS_DIR).join(tls::CA_CERT_FILE).display(),
            key_file = Path::new(TLS_DIR).join(tls::CA_KEY_FILE).display(),
            dir = dir.display()
        ))
    };
    let published = patiently(
        "read the cluster CA",
        || store.get(&key),
        StoreError::is_temporary,
    )
    .await
    .map_err(|e| DaemonError::Ca(format!("cannot read the cluster CA from the store: {e}")))?
    .kv
    .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
    let local = ClusterCa::load(&dir)?;
    match (published, local) {
        (Some(pem), Some(ca)) => {
            let theirs = tls::certificates_from_pem("the cluster CA in the store", pem.as_bytes())?;
            let theirs = tls::fingerprint(&theirs[0]);
            if theirs != ca.fingerprint() {
                return Err(copy(format!(
                    "this server's CA ({}) is not the cluster's ({theirs})",
                    ca.fingerprint()
                )));
            }
            Ok(ca)
        }
        (Some(_), None) => Err(copy(format!(
            "the cluster has a CA, and {} has none",
            dir.display()
        ))),
        (None, local) => {
            let ca = match local {
                Some(ca) => ca,
                None => {
                    let (ca, _) = ClusterCa::load_or_create(&dir)?;
                    tracing::info!(
                        fingerprint = ca.fingerprint(),
                        "made the cluster CA in {}",
                        dir.display()
                    );
                    ca
                }
            };
            let publish = || {
                store.txn(
                    Txn::new()
                        .when([Compare::absent(&key)])
                        .and_then([TxnOp::put(&key, ca.cert_pem().as_bytes().to_vec())]),
                )
            };
            let published = patiently("publish the cluster CA", publish, StoreError::is_temporary)
                .await
                .map_err(|e| DaemonError::Ca(format!("cannot publish the cluster CA: {e}")))?;
            if !published.succeeded {
                // Ours, from an attempt whose answer was lost, or another
                // server's, made at the same time.
                let now = patiently(
                    "read the cluster CA",
                    || store.get(&key),
                    StoreError::is_temporary,
                )
                .await
                .map_err(|e| {
                    DaemonError::Ca(format!("cannot read the cluster CA from the store: {e}"))
                })?;
                if now
                    .kv
                    .is_none_or(|kv| &*kv.value != ca.cert_pem().as_bytes())
                {
                    return Err(copy(
                        "another server published the cluster's CA at the same time".into(),
                    ));
                }
            }
            Ok(ca)
        }
    }
}

/// How long a starting server waits for a store that is not reachable yet
/// (etcd starting beside it) before it gives up.
const STORE_PATIENCE: Duration = Duration::from_secs(30);

/// Runs `op` until it succeeds, fails for good (an error `temporary`
/// does not accept), or the store has been unavailable for
/// [`STORE_PATIENCE`]. A write retried this way must be idempotent (a
/// compare-and-swap that is refused the second time is).
async fn patiently<T, E, F, Fut>(
    what: &str,
    mut op: F,
    temporary: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + STORE_PATIENCE;
    let mut backoff =
        flotilla_proto::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        match op().await {
            Err(e) if temporary(&e) && tokio::time::Instant::now() < deadline => {
                tracing::warn!("cannot {what} yet, trying again: {e}");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            other => return other,
        }
    }
}

/// The names a server's certificate is made for: its listen address (or,
/// on a wildcard address, every address of the machine), its host name,
/// loopback, and `extra`.
fn server_names(listen: SocketAddr, extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut add = |n: String| {
        if !n.is_empty() && !names.contains(&n) {
            names.push(n);
        }
    };
    if listen.ip().is_unspecified() {
        if let Ok(found) = if_addrs::get_if_addrs() {
            for i in found {
                add(i.ip().to_string());
            }
        }
    } else {
        add(listen.ip().to_string());
    }
    add(hostname());
    add("localhost".into());
    add("127.0.0.1".into());
    add("::1".into());
    for n in extra {
        add(n.clone());
    }
    names
}

/// How this server serves its API.
fn transport(
    config: &DaemonConfig,
    ca: &ClusterCa,
    address: SocketAddr,
) -> Result<Transport, DaemonError> {
    let cert = match &config.tls {
        TlsSettings::Insecure => return Ok(Transport::Plain),
        TlsSettings::ClusterCa { extra_names } => {
            ca.issue_server(&server_names(address, extra_names))?
        }
        TlsSettings::Files { cert, key } => {
            let read = |path: &PathBuf| {
                std::fs::read(path).map_err(|source| TlsError::Read {
                    path: path.clone(),
                    source,
                })
            };
            IssuedCert {
                chain: tls::certificates_from_pem(&cert.display().to_string(), &read(cert)?)?,
                key: tls::private_key_from_pem(&key.display().to_string(), &read(key)?)?,
            }
        }
    };
    Ok(Transport::Tls(tls::server_config(cert, ca.cert_der())?))
}

/// Tells the raft store whether this server's warm view is ready, as it
/// changes, so that elections prefer servers that plan at once.
async fn prefer_when_warm(
    raft: Arc<RaftStore>,
    mut ready: watch::Receiver<bool>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let preferred = *ready.borrow_and_update();
        // The node's mailbox may be full for a moment: try again shortly.
        while raft.prefer(preferred).is_err() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
        }
        tokio::select! {
            changed = ready.changed() => if changed.is_err() { return },
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}

/// Trims the audit log now and then, until shutdown.
async fn trim_audit(audit: AuditLog, mut stopped: watch::Receiver<bool>) {
    loop {
        match audit.trim().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(dropped = n, "trimmed the audit log"),
            Err(e) => tracing::warn!("cannot trim the audit log: {e}"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(300)) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}

/// How long a server stopping waits for its last events to be written.
const EVENTS_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Trims the event log now and then, until shutdown.
async fn trim_events(events: EventLog, mut stopped: watch::Receiver<bool>) {
    loop {
        match events.trim().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(dropped = n, "trimmed the event log"),
            Err(e) => tracing::warn!("cannot trim the event log: {e}"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(300)) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}

/// Campaigns, leads while it can, and campaigns again, until shutdown.
async fn lead(
    store: Arc<dyn Store>,
    election: ElectionConfig,
    reconcile: ReconcilerConfig,
    sync: SyncRunner,
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
        // Git sources are followed while this server leads.
        let (stop_following, following) = watch::channel(false);
        let follower = tokio::spawn(flotilla_sync::follow(
            Arc::clone(&sync.cluster),
            sync.sources.clone(),
            Arc::clone(&sync.secrets),
            sync.audit.clone(),
            sync.config.clone(),
            sync.metrics.clone(),
            following,
        ));
        let ended = reconciler::run(store.clone(), &leadership, &reconcile, shutdown.clone()).await;
        let _ = stop_following.send(true);
        if let Err(e) = follower.await {
            tracing::error!("the git sources' task failed: {e}");
        }
        match ended {
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
