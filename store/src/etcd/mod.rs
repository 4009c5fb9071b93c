//! [`EtcdStore`]: the store on an etcd v3 cluster, through the `etcd-client`
//! crate (KV, Txn, Watch and Lease over gRPC).
//!
//! etcd *is* the contract's model, so most methods are one request each:
//!
//! - Revisions, versions and lease ids are etcd's own (`int64` there, `u64`
//!   here; see `convert.rs`). Each transaction is one etcd `Txn`, with
//!   `prev_kv` asked for on puts and deletes so that the answers carry the
//!   previous values; a delete-prefix or a range is a key range ending at the
//!   prefix's end, and a page after `start_after` starts at
//!   `start_after + "\0"`.
//! - Transactions are checked here before they are sent (`TooManyOps`,
//!   `ValueTooLarge`, `EmptyKey`, `DuplicateKey`), against
//!   [`EtcdConfig::limits`], which must not exceed the server's
//!   (`--max-txn-ops`, 128 by default, and `--max-request-bytes`, 1.5 MiB).
//! - Watches ask for `prev_kv` (but those of
//!   [`watch_changes`](super::Store::watch_changes)) and are resumed from
//!   the next revision when
//!   their stream breaks (`watch.rs`); etcd reports a compacted start on the
//!   stream, so [`StoreError::Compacted`] comes from the watcher's first
//!   `next`.
//! - Leases count in whole seconds, and etcd raises a TTL below its minimum
//!   (1.5 election timeouts, rounded up: 2 s by default): a grant rounds up
//!   and returns what etcd granted. Time-to-live answers in whole seconds,
//!   rounded down. Keepalive is one request on a short-lived keepalive
//!   stream.
//! - Every request is bounded by [`EtcdConfig::request_timeout`]: a request
//!   that cannot reach etcd (down, partitioned, no leader) fails with
//!   [`StoreError::Unavailable`] by then at the latest.
//!
//! TLS (feature `etcd-tls`, on by default): `https://` endpoints, trusting
//! the CA of [`EtcdTls`] only, with a client certificate for etcd's
//! `--client-cert-auth` if one is given. A build without the feature refuses
//! a configuration that asks for TLS ([`EtcdConnectError::TlsUnsupported`]).

mod convert;
mod watch;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use etcd_client::{
    Client, CompactionOptions, ConnectOptions, DeleteOptions, GetOptions, KvClient, LeaseClient,
    PutOptions, WatchClient,
};

use self::convert::{
    Failure, generic, header_revision, key_value, key_values, prefix_range, timed_out, to_i64,
    to_u64,
};
use self::watch::{EtcdWatch, Target};
use super::engine::MAX_TTL;
use super::state::validate_txn;
use super::{
    BoxFuture, Compare, CompareOp, CompareTarget, DeleteResponse, GetResponse, LeaseGrant, LeaseId,
    Limits, PutResponse, RangeOptions, RangeResponse, Store, StoreError, StoreResult, Txn, TxnOp,
    TxnOpResponse, TxnResponse, Watcher, lock,
};

/// The largest message accepted from etcd: its Go client's default
/// (`math.MaxInt32`), rather than tonic's 4 MiB, so that a large range or a
/// watch batch of a large transaction is not refused.
const MAX_DECODING_MESSAGE_SIZE: usize = i32::MAX as usize;

/// Lease TTLs remembered for keepalive answers, at most (see
/// [`EtcdStore::keepalive`]); forgotten all at once beyond it.
const MAX_REMEMBERED_LEASES: usize = 65_536;

/// Files for TLS to etcd (PEM). Needs the `etcd-tls` feature, and
/// `https://` endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// The CA certificate that signed etcd's server certificates: the only
    /// one trusted. The certificates must name the endpoints' hosts (an IP
    /// address endpoint needs an IP address subject alternative name).
    pub ca: PathBuf,
    /// The client certificate, for etcd's `--client-cert-auth` (with `key`).
    pub cert: Option<PathBuf>,
    /// The client certificate's private key.
    pub key: Option<PathBuf>,
}

/// How to reach etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs of the cluster's members (`http://host:2379`); requests are
    /// balanced over them.
    pub endpoints: Vec<String>,
    /// The longest a request may take, connection included; past it the
    /// request fails with [`StoreError::Unavailable`]. Default 5 s.
    pub request_timeout: Duration,
    /// The longest one connection attempt to a member may take. Default 3 s.
    pub connect_timeout: Duration,
    /// How often HTTP/2 pings check a connection that has open streams (a
    /// watch), so that a silent partition breaks the stream instead of
    /// hanging it. etcd refuses pings more often than every 5 s
    /// (`--grpc-keepalive-min-time`). Default 10 s.
    pub keep_alive_interval: Duration,
    /// How long a watch whose stream broke tries to resume before it ends
    /// with [`StoreError::Unavailable`]. Default 30 s.
    pub watch_resume_timeout: Duration,
    /// The etcd user, when etcd has authentication enabled (with
    /// `password`).
    pub username: Option<String>,
    /// The etcd user's password.
    pub password: Option<String>,
    /// TLS to etcd; `None`: plain `http://` endpoints.
    pub tls: Option<EtcdTls>,
    /// The request limits, checked before a request is sent. They must not
    /// exceed the server's: the default matches etcd's defaults.
    pub limits: Limits,
}

impl EtcdConfig {
    /// A configuration with default timeouts and limits, no credentials and
    /// no TLS.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            keep_alive_interval: Duration::from_secs(10),
            watch_resume_timeout: Duration::from_secs(30),
            username: None,
            password: None,
            tls: None,
            limits: Limits::default(),
        }
    }
}

/// Why [`EtcdStore::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdConnectError {
    /// No endpoint was given.
    #[error("no etcd endpoint configured")]
    NoEndpoints,
    /// A username without a password, or a password without a username.
    #[error("etcd credentials need both a username and a password")]
    IncompleteCredentials,
    /// TLS was asked for (a TLS configuration or an `https://` endpoint) by
    /// a build without the `etcd-tls` feature.
    #[error("tls to etcd is not supported by this build ({what}): build with the etcd-tls feature")]
    TlsUnsupported {
        /// What asked for it.
        what: String,
    },
    /// TLS is configured but an endpoint is not `https://`, or an
    /// `https://` endpoint has no TLS configuration (no CA to trust).
    #[error("etcd endpoint {endpoint} {problem}")]
    TlsMismatch {
        /// The endpoint.
        endpoint: String,
        /// What does not match.
        problem: &'static str,
    },
    /// A client certificate without its key, or a key without its
    /// certificate.
    #[error("etcd tls needs both a client certificate and its key, or neither")]
    IncompleteTlsIdentity,
    /// A TLS file could not be read.
    #[error("cannot read etcd tls {what} {path}: {source}")]
    TlsFile {
        /// "ca", "certificate" or "key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// An endpoint that is not a URL the client accepts.
    #[error("invalid etcd endpoint in {endpoints:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoints given.
        endpoints: Vec<String>,
        /// What the client said.
        reason: String,
    },
    /// The client could not be set up (with credentials: authenticating
    /// failed or etcd could not be reached).
    #[error("cannot connect to etcd at {endpoints:?}: {source}")]
    Connect {
        /// The endpoints given.
        endpoints: Vec<String>,
        /// What went wrong.
        #[source]
        source: StoreError,
    },
}

/// A [`Store`] on etcd. Cheap to share behind an `Arc`; the connection is
/// shared by every call.
pub struct EtcdStore {
    kv: KvClient,
    watch: WatchClient,
    lease: LeaseClient,
    config: EtcdConfig,
    /// The TTL etcd granted each lease this store granted or looked up: a
    /// keepalive answers it (etcd's keepalive stream says it too, but the
    /// client crate keeps that answer to itself). A lease's TTL never
    /// changes.
    lease_ttls: Mutex<HashMap<LeaseId, Duration>>,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.config.endpoints)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Sets up the client. Without credentials this does not reach etcd yet
    /// (the first requests connect, and fail with
    /// [`StoreError::Unavailable`] while etcd cannot be reached); with
    /// credentials it authenticates, within the connect and request
    /// timeouts.
    pub async fn connect(config: EtcdConfig) -> Result<Self, EtcdConnectError> {
        if config.endpoints.is_empty() {
            return Err(EtcdConnectError::NoEndpoints);
        }
        for endpoint in &config.endpoints {
            let https = endpoint.to_ascii_lowercase().starts_with("https://");
            let problem = match (https, config.tls.is_some()) {
                (true, false) => "is https:// but no tls (ca) is configured",
                (false, true) => "is not https:// but tls is configured",
                _ => continue,
            };
            return Err(EtcdConnectError::TlsMismatch {
                endpoint: endpoint.clone(),
                problem,
            });
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_timeout(config.request_timeout)
            .with_keep_alive(config.keep_alive_interval, config.request_timeout)
            // etcd refuses pings on a connection without streams
            // (`PermitWithoutStream` is off): ping only while a watch is open.
            .with_keep_alive_while_idle(false);
        match (&config.username, &config.password) {
            (Some(user), Some(password)) => {
                options = options
                    .with_user(user.clone(), password.clone())
                    .with_auto_token_refresh(true);
            }
            (None, None) => {}
            _ => return Err(EtcdConnectError::IncompleteCredentials),
        }
        if let Some(tls) = &config.tls {
            options = with_tls(options, tls)?;
        }
        let bound = config.connect_timeout + config.request_timeout;
        let client =
            match tokio::time::timeout(bound, Client::connect(&config.endpoints, Some(options)))
                .await
            {
                Ok(Ok(client)) => client,
                Ok(Err(error)) => {
                    let endpoints = config.endpoints.clone();
                    return Err(match error {
                        etcd_client::Error::InvalidUri(_) | etcd_client::Error::InvalidArgs(_) => {
                            EtcdConnectError::InvalidEndpoint {
                                endpoints,
                                reason: error.to_string(),
                            }
                        }
                        other => EtcdConnectError::Connect {
                            endpoints,
                            source: generic("authentication", Failure::of(&other)),
                        },
                    });
                }
                Err(_) => {
                    return Err(EtcdConnectError::Connect {
                        endpoints: config.endpoints.clone(),
                        source: timed_out("authentication", bound),
                    });
                }
            };
        Ok(EtcdStore {
            kv: client
                .kv_client()
                .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
            watch: client
                .watch_client()
                .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
            lease: client.lease_client(),
            config,
            lease_ttls: Mutex::new(HashMap::new()),
        })
    }

    /// The endpoints this store talks to.
    pub fn endpoints(&self) -> &[String] {
        &self.config.endpoints
    }

    /// Runs one etcd request within the request timeout.
    async fn call<T>(
        &self,
        what: &str,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(self.config.request_timeout, request).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => Err(Failure::of(&error)),
            Err(_) => Err(Failure::Unavailable(format!(
                "{what} did not answer within {:?}",
                self.config.request_timeout
            ))),
        }
    }

    /// The store's current revision (for an error that reports it).
    async fn current_revision(&self) -> StoreResult<u64> {
        let mut kv = self.kv.clone();
        // The smallest possible key: a read that returns nothing, for its
        // header.
        let response = self
            .call(
                "get",
                kv.get(vec![0], Some(GetOptions::new().with_count_only())),
            )
            .await
            .map_err(|f| generic("get", f))?;
        header_revision(response.header())
    }

    fn remember_ttl(&self, lease: LeaseId, ttl: Duration) {
        let mut ttls = lock(&self.lease_ttls);
        if ttls.len() >= MAX_REMEMBERED_LEASES {
            ttls.clear();
        }
        ttls.insert(lease, ttl);
    }

    fn forget_ttl(&self, lease: LeaseId) {
        lock(&self.lease_ttls).remove(&lease);
    }

    async fn get_impl(&self, key: &str) -> StoreResult<GetResponse> {
        if key.is_empty() {
            return Err(StoreError::EmptyKey { what: "key" });
        }
        let mut kv = self.kv.clone();
        let response = self
            .call("get", kv.get(key, None))
            .await
            .map_err(|f| generic("get", f))?;
        Ok(GetResponse {
            kv: response.kvs().first().map(key_value).transpose()?,
            revision: header_revision(response.header())?,
        })
    }

    async fn range_impl(&self, prefix: &str, options: &RangeOptions) -> StoreResult<RangeResponse> {
        let (start, options) = range_request(prefix, options);
        let mut kv = self.kv.clone();
        let response = self
            .call("range", kv.get(start, Some(options)))
            .await
            .map_err(|f| generic("range", f))?;
        Ok(RangeResponse {
            kvs: key_values(response.kvs())?,
            more: response.more(),
            revision: header_revision(response.header())?,
        })
    }

    async fn txn_impl(&self, txn: Txn) -> StoreResult<TxnResponse> {
        validate_txn(&txn, &self.config.limits)?;
        let request = etcd_client::Txn::new()
            .when(txn.compares.iter().map(compare).collect::<Vec<_>>())
            .and_then(txn.success.iter().map(op).collect::<Vec<_>>())
            .or_else(txn.failure.iter().map(op).collect::<Vec<_>>());
        let mut kv = self.kv.clone();
        let response = match self.call("txn", kv.txn(request)).await {
            Ok(response) => response,
            Err(failure) => return Err(self.txn_error(&txn, failure).await),
        };
        let revision = header_revision(response.header())?;
        let succeeded = response.succeeded();
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let answers = response.op_responses();
        if answers.len() != ops.len() {
            return Err(StoreError::Internal {
                reason: format!(
                    "etcd answered {} operations of a transaction branch with {}",
                    ops.len(),
                    answers.len()
                ),
            });
        }
        let responses = ops
            .iter()
            .zip(answers)
            .map(|(op, answer)| op_response(op, answer, revision))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(TxnResponse {
            succeeded,
            revision,
            responses,
        })
    }

    /// What a failed transaction means, with what etcd does not say (which
    /// lease, which key).
    async fn txn_error(&self, txn: &Txn, failure: Failure) -> StoreError {
        let ops = || txn.success.iter().chain(&txn.failure);
        match failure {
            Failure::LeaseNotFound => StoreError::LeaseNotFound {
                lease: self.missing_lease(txn).await,
            },
            Failure::TooManyOps => StoreError::TooManyOps {
                what: "operations or compares (etcd's --max-txn-ops is below this store's limit)",
                ops: txn
                    .compares
                    .len()
                    .max(txn.success.len())
                    .max(txn.failure.len()),
                max: self.config.limits.max_txn_ops,
            },
            Failure::TooLarge => {
                // etcd bounds the whole request (--max-request-bytes): name
                // the largest value, and the request's total.
                let mut largest: Option<(&str, usize)> = None;
                let mut total = 0;
                for op in ops() {
                    if let TxnOp::Put { key, value, .. } = op {
                        total += key.len() + value.len();
                        if largest.is_none_or(|(_, size)| value.len() > size) {
                            largest = Some((key, value.len()));
                        }
                    }
                }
                StoreError::ValueTooLarge {
                    key: largest.map_or_else(String::new, |(key, _)| key.to_owned()),
                    size: total,
                    max: self.config.limits.max_value_size,
                }
            }
            Failure::DuplicateKey => StoreError::DuplicateKey {
                key: String::from("(etcd does not say which)"),
            },
            Failure::EmptyKey => StoreError::EmptyKey { what: "key" },
            other => generic("txn", other),
        }
    }

    /// The lease of a transaction that etcd did not find: the only one it
    /// puts keys on, or the first of them that is gone.
    async fn missing_lease(&self, txn: &Txn) -> LeaseId {
        let leases: BTreeSet<LeaseId> = txn
            .success
            .iter()
            .chain(&txn.failure)
            .filter_map(|op| match op {
                TxnOp::Put { lease, .. } => *lease,
                _ => None,
            })
            .collect();
        if leases.len() > 1 {
            for &lease in &leases {
                if matches!(
                    self.time_to_live_impl(lease).await,
                    Err(StoreError::LeaseNotFound { .. })
                ) {
                    return lease;
                }
            }
        }
        // etcd said a lease is missing, so there is at least one; 0 is
        // never a lease id.
        leases.first().copied().unwrap_or(LeaseId(0))
    }

    async fn watch_impl(
        &self,
        prefix: &str,
        from_revision: u64,
        prev: bool,
    ) -> StoreResult<Watcher> {
        let (key, range_end) = prefix_range(prefix, None);
        let target = Target {
            client: self.watch.clone(),
            key,
            range_end,
            prev,
            request_timeout: self.config.request_timeout,
            resume_timeout: self.config.watch_resume_timeout,
        };
        let (stream, revision) = target.open(from_revision).await?;
        let start = if from_revision == 0 {
            revision + 1
        } else {
            from_revision
        };
        let source = EtcdWatch::new(target, stream, start);
        Ok(Watcher::new(Box::new(source), prefix, start))
    }

    async fn grant_impl(&self, ttl: Duration) -> StoreResult<LeaseGrant> {
        if ttl.is_zero() || ttl > MAX_TTL {
            return Err(StoreError::InvalidTtl {
                ttl_ms: ttl.as_millis(),
            });
        }
        // Whole seconds, rounded up; at most MAX_TTL, so it fits.
        let seconds = i64::try_from(ttl.as_nanos().div_ceil(1_000_000_000)).unwrap_or(i64::MAX);
        let mut lease = self.lease.clone();
        let response = self
            .call("lease grant", lease.grant(seconds, None))
            .await
            .map_err(|f| generic("lease grant", f))?;
        if !response.error().is_empty() {
            return Err(StoreError::Internal {
                reason: format!("etcd refused a lease grant: {}", response.error()),
            });
        }
        let grant = LeaseGrant {
            id: LeaseId(response.id()),
            ttl: Duration::from_secs(to_u64(response.ttl(), "lease ttl")?),
        };
        self.remember_ttl(grant.id, grant.ttl);
        Ok(grant)
    }

    async fn keepalive_impl(&self, lease: LeaseId) -> StoreResult<Duration> {
        let mut client = self.lease.clone();
        // Opening the keepalive stream sends one keepalive and reads its
        // answer; dropping the stream ends it.
        let renewed = self
            .call("lease keepalive", async {
                client.keep_alive(lease.0).await.map(|_| ())
            })
            .await;
        match renewed {
            Ok(()) => {}
            Err(Failure::LeaseNotFound) => {
                self.forget_ttl(lease);
                return Err(StoreError::LeaseNotFound { lease });
            }
            Err(other) => return Err(generic("lease keepalive", other)),
        }
        let known = lock(&self.lease_ttls).get(&lease).copied();
        match known {
            Some(ttl) => Ok(ttl),
            None => {
                // A lease granted elsewhere (another server): ask once.
                self.time_to_live_impl(lease).await?;
                lock(&self.lease_ttls)
                    .get(&lease)
                    .copied()
                    .ok_or(StoreError::LeaseNotFound { lease })
            }
        }
    }

    async fn time_to_live_impl(&self, lease: LeaseId) -> StoreResult<Duration> {
        let mut client = self.lease.clone();
        let response = match self
            .call("lease time-to-live", client.time_to_live(lease.0, None))
            .await
        {
            Ok(response) => response,
            Err(Failure::LeaseNotFound) => {
                self.forget_ttl(lease);
                return Err(StoreError::LeaseNotFound { lease });
            }
            Err(other) => return Err(generic("lease time-to-live", other)),
        };
        // etcd answers -1 for a lease it does not have.
        let Ok(left) = u64::try_from(response.ttl()) else {
            self.forget_ttl(lease);
            return Err(StoreError::LeaseNotFound { lease });
        };
        if let Ok(granted) = u64::try_from(response.granted_ttl()) {
            self.remember_ttl(lease, Duration::from_secs(granted));
        }
        Ok(Duration::from_secs(left))
    }

    async fn revoke_impl(&self, lease: LeaseId) -> StoreResult<u64> {
        let mut client = self.lease.clone();
        let response = self.call("lease revoke", client.revoke(lease.0)).await;
        self.forget_ttl(lease);
        match response {
            Ok(response) => header_revision(response.header()),
            Err(Failure::LeaseNotFound) => Err(StoreError::LeaseNotFound { lease }),
            Err(other) => Err(generic("lease revoke", other)),
        }
    }

    async fn compact_impl(&self, revision: u64) -> StoreResult<()> {
        let mut kv = self.kv.clone();
        // Physical: answer once the history is gone, so that a watch from
        // before it fails from then on.
        let options = CompactionOptions::new().with_physical();
        match self
            .call("compact", kv.compact(to_i64(revision), Some(options)))
            .await
        {
            // Compacting to a revision already compacted does nothing.
            Ok(_) | Err(Failure::Compacted) => Ok(()),
            Err(Failure::FutureRevision) => Err(StoreError::FutureRevision {
                requested: revision,
                current: self.current_revision().await?,
            }),
            Err(other) => Err(generic("compact", other)),
        }
    }
}

/// Adds TLS to the connection options.
#[cfg(feature = "etcd-tls")]
fn with_tls(options: ConnectOptions, tls: &EtcdTls) -> Result<ConnectOptions, EtcdConnectError> {
    use etcd_client::{Certificate, Identity, TlsOptions};
    let read = |what: &'static str, path: &PathBuf| {
        std::fs::read(path).map_err(|source| EtcdConnectError::TlsFile {
            what,
            path: path.clone(),
            source,
        })
    };
    let mut tls_options =
        TlsOptions::new().ca_certificate(Certificate::from_pem(read("ca", &tls.ca)?));
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            tls_options = tls_options.identity(Identity::from_pem(
                read("certificate", cert)?,
                read("key", key)?,
            ));
        }
        (None, None) => {}
        _ => return Err(EtcdConnectError::IncompleteTlsIdentity),
    }
    Ok(options.with_tls(tls_options))
}

/// Refuses TLS: this build has none.
#[cfg(not(feature = "etcd-tls"))]
fn with_tls(_options: ConnectOptions, tls: &EtcdTls) -> Result<ConnectOptions, EtcdConnectError> {
    Err(EtcdConnectError::TlsUnsupported {
        what: format!("a tls configuration with ca {}", tls.ca.display()),
    })
}

/// The start key and options of a range read under `prefix`.
fn range_request(prefix: &str, options: &RangeOptions) -> (Vec<u8>, GetOptions) {
    let (start, end) = prefix_range(prefix, options.start_after.as_deref());
    let mut get = GetOptions::new().with_range(end);
    if options.limit != 0 {
        get = get.with_limit(i64::try_from(options.limit).unwrap_or(i64::MAX));
    }
    (start, get)
}

/// A compare, for etcd.
fn compare(compare: &Compare) -> etcd_client::Compare {
    use etcd_client::CompareOp as Op;
    let op = match compare.op {
        CompareOp::Equal => Op::Equal,
        CompareOp::NotEqual => Op::NotEqual,
        CompareOp::Greater => Op::Greater,
        CompareOp::Less => Op::Less,
    };
    let key = compare.key.as_str();
    match &compare.target {
        CompareTarget::Value(value) => etcd_client::Compare::value(key, op, value.to_vec()),
        CompareTarget::Version(version) => etcd_client::Compare::version(key, op, to_i64(*version)),
        CompareTarget::CreateRevision(revision) => {
            etcd_client::Compare::create_revision(key, op, to_i64(*revision))
        }
        CompareTarget::ModRevision(revision) => {
            etcd_client::Compare::mod_revision(key, op, to_i64(*revision))
        }
        // etcd orders lease ids with no lease as 0, as the contract does.
        CompareTarget::Lease(lease) => {
            etcd_client::Compare::lease(key, op, lease.map_or(0, |l| l.0))
        }
    }
}

/// An operation, for etcd; writes ask for the previous values.
fn op(op: &TxnOp) -> etcd_client::TxnOp {
    match op {
        TxnOp::Put { key, value, lease } => {
            let options = PutOptions::new()
                .with_prev_key()
                .with_lease(lease.map_or(0, |l| l.0));
            etcd_client::TxnOp::put(key.as_str(), value.to_vec(), Some(options))
        }
        TxnOp::Delete { key } => {
            etcd_client::TxnOp::delete(key.as_str(), Some(DeleteOptions::new().with_prev_key()))
        }
        TxnOp::DeletePrefix { prefix } => {
            let (start, end) = prefix_range(prefix, None);
            let options = DeleteOptions::new().with_range(end).with_prev_key();
            etcd_client::TxnOp::delete(start, Some(options))
        }
        TxnOp::Get { key } => etcd_client::TxnOp::get(key.as_str(), None),
        TxnOp::Range { prefix, options } => {
            let (start, options) = range_request(prefix, options);
            etcd_client::TxnOp::get(start, Some(options))
        }
    }
}

/// etcd's answer to one operation; every revision is the transaction's.
fn op_response(
    op: &TxnOp,
    answer: etcd_client::TxnOpResponse,
    revision: u64,
) -> StoreResult<TxnOpResponse> {
    use etcd_client::TxnOpResponse as Answer;
    Ok(match (op, answer) {
        (TxnOp::Put { .. }, Answer::Put(put)) => TxnOpResponse::Put(PutResponse {
            revision,
            prev: put.prev_key().map(key_value).transpose()?,
        }),
        (TxnOp::Delete { .. } | TxnOp::DeletePrefix { .. }, Answer::Delete(delete)) => {
            TxnOpResponse::Delete(DeleteResponse {
                revision,
                deleted: key_values(delete.prev_kvs())?,
            })
        }
        (TxnOp::Get { .. }, Answer::Get(get)) => TxnOpResponse::Get(GetResponse {
            kv: get.kvs().first().map(key_value).transpose()?,
            revision,
        }),
        (TxnOp::Range { .. }, Answer::Get(range)) => TxnOpResponse::Range(RangeResponse {
            kvs: key_values(range.kvs())?,
            more: range.more(),
            revision,
        }),
        (op, answer) => {
            return Err(StoreError::Internal {
                reason: format!("etcd answered {op:?} with {answer:?}"),
            });
        }
    })
}

impl Store for EtcdStore {
    fn limits(&self) -> Limits {
        self.config.limits
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, StoreResult<GetResponse>> {
        Box::pin(self.get_impl(key))
    }

    fn range<'a>(
        &'a self,
        prefix: &'a str,
        options: RangeOptions,
    ) -> BoxFuture<'a, StoreResult<RangeResponse>> {
        Box::pin(async move { self.range_impl(prefix, &options).await })
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, StoreResult<TxnResponse>> {
        Box::pin(self.txn_impl(txn))
    }

    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        from_revision: u64,
    ) -> BoxFuture<'a, StoreResult<Watcher>> {
        Box::pin(self.watch_impl(prefix, from_revision, true))
    }

    fn watch_changes<'a>(
        &'a self,
        prefix: &'a str,
        from_revision: u64,
    ) -> BoxFuture<'a, StoreResult<Watcher>> {
        Box::pin(self.watch_impl(prefix, from_revision, false))
    }

    fn grant(&self, ttl: Duration) -> BoxFuture<'_, StoreResult<LeaseGrant>> {
        Box::pin(self.grant_impl(ttl))
    }

    fn keepalive(&self, lease: LeaseId) -> BoxFuture<'_, StoreResult<Duration>> {
        Box::pin(self.keepalive_impl(lease))
    }

    fn time_to_live(&self, lease: LeaseId) -> BoxFuture<'_, StoreResult<Duration>> {
        Box::pin(self.time_to_live_impl(lease))
    }

    fn revoke(&self, lease: LeaseId) -> BoxFuture<'_, StoreResult<u64>> {
        Box::pin(self.revoke_impl(lease))
    }

    fn compact(&self, revision: u64) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(self.compact_impl(revision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_tls_and_incomplete_credentials_are_refused_before_connecting() {
        let tls = EtcdTls {
            ca: PathBuf::from("/nonexistent/ca.pem"),
            cert: None,
            key: None,
        };
        let mut config = EtcdConfig::new(["http://127.0.0.1:1"]);
        config.tls = Some(tls.clone());
        let err = EtcdStore::connect(config).await.unwrap_err();
        assert!(matches!(err, EtcdConnectError::TlsMismatch { .. }), "{err}");
        let err = EtcdStore::connect(EtcdConfig::new(["https://127.0.0.1:1"]))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("https://127.0.0.1:1"), "{err}");
        let mut config = EtcdConfig::new(["https://127.0.0.1:1"]);
        config.tls = Some(tls.clone());
        let err = EtcdStore::connect(config).await.unwrap_err();
        if cfg!(feature = "etcd-tls") {
            assert!(
                matches!(err, EtcdConnectError::TlsFile { what: "ca", .. }),
                "{err}"
            );
        } else {
            assert!(
                matches!(err, EtcdConnectError::TlsUnsupported { .. }),
                "{err}"
            );
        }
        let mut config = EtcdConfig::new(["http://127.0.0.1:1"]);
        config.username = Some("root".to_owned());
        assert!(matches!(
            EtcdStore::connect(config).await,
            Err(EtcdConnectError::IncompleteCredentials)
        ));
        assert!(matches!(
            EtcdStore::connect(EtcdConfig::new(Vec::<String>::new())).await,
            Err(EtcdConnectError::NoEndpoints)
        ));
    }

    #[tokio::test]
    async fn requests_fail_unavailable_when_nothing_listens() {
        // Port 1 on loopback: nothing listens there, the connection is
        // refused at once.
        let mut config = EtcdConfig::new(["http://127.0.0.1:1"]);
        config.request_timeout = Duration::from_millis(500);
        let store = EtcdStore::connect(config).await.unwrap();
        let err = store.get("/a").await.unwrap_err();
        assert!(err.is_temporary(), "{err:?}");
    }
}
