//! `flotilla server`: the control plane (see `flotilla_api::daemon`), with
//! its settings from flags, environment and a YAML file, and systemd's
//! readiness protocol.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use flotilla_api::daemon::{Daemon, DaemonConfig, RaftSettings, SyncSettings, TlsSettings};
use flotilla_api::server::{ApiConfig, HttpLimits};
use flotilla_proto::duration::{format_timespan, parse_timespan, serde_timespan_option};
use flotilla_scheduler::events::EventRetention;
use flotilla_scheduler::keys::{DEFAULT_PREFIX, Keys};
use flotilla_scheduler::placement::Strategy;
use flotilla_scheduler::quota::Quotas;
use flotilla_scheduler::trust::AuditRetention;
use flotilla_store::{EtcdConfig, EtcdTls};
use serde::Deserialize;

use flotilla_agent::notify::notify;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
const DEFAULT_DATA_DIR: &str = "/var/lib/flotilla";
const DEFAULT_MACHINE_TTL: Duration = Duration::from_secs(10);
const DEFAULT_LEADER_TTL: Duration = Duration::from_secs(3);

/// Flags (and their environment variables) of `flotilla server`; each
/// overrides the same setting in the YAML file given with `--config`.
#[derive(Debug, Default, clap::Args)]
pub struct Args {
    /// A YAML configuration file (keys: listen, data-dir, machine-ttl,
    /// leader-ttl, strategy, token-file, key-prefix, tls: cert, key, san,
    /// insecure-http, allow-insecure-remote; http: max-connections,
    /// max-connections-per-peer, header-read-timeout, idle-timeout,
    /// body-read-timeout; audit: max-entries, max-age; events: max-events,
    /// max-age; quotas: units,
    /// unit-bytes, machines, metadata-keys, metadata-bytes, page-bytes;
    /// sync: max-sources, min-interval, default-interval, max-interval,
    /// fetch-timeout, max-units, max-files, max-bytes; etcd: endpoints,
    /// username, password, request-timeout, ca, cert, key; raft: id, peers
    /// (a map of id to peer address), join, listen).
    #[arg(long, env = "FLOTILLA_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Address and port the API listens on [default: 127.0.0.1:7070].
    #[arg(long, env = "FLOTILLA_LISTEN", value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,

    /// The server's data: the embedded store, the cluster CA (tls/), the
    /// first admin token; on etcd, the cluster this server serves
    /// [default: /var/lib/flotilla].
    #[arg(long, env = "FLOTILLA_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// How long a machine stays alive without a heartbeat from its agent
    /// [default: 10s].
    #[arg(long, env = "FLOTILLA_MACHINE_TTL", value_name = "TIMESPAN", value_parser = parse_span)]
    machine_ttl: Option<Duration>,

    /// How long the cluster waits for a dead leader before another server
    /// leads [default: 3s].
    #[arg(long, env = "FLOTILLA_LEADER_TTL", value_name = "TIMESPAN", value_parser = parse_span)]
    leader_ttl: Option<Duration>,

    /// How the leader chooses among eligible machines: spread (fleet's
    /// least-loaded) or binpack [default: spread].
    #[arg(long, env = "FLOTILLA_STRATEGY")]
    strategy: Option<Strategy>,

    /// An admin token of the operator's choosing (at least 32 characters),
    /// accepted by this server beside the cluster's own credentials. Prefer
    /// --token-file: a flag shows in `ps`.
    #[arg(long, env = "FLOTILLA_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// A file holding such an admin token.
    #[arg(long, env = "FLOTILLA_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,

    /// The key that seals the cluster's secrets (64 hex digits); default
    /// DATA_DIR/secrets.key, made at the first start. Every server of a
    /// cluster needs the same key.
    #[arg(long, env = "FLOTILLA_SECRETS_KEY", value_name = "FILE")]
    secrets_key: Option<PathBuf>,

    /// Make this server's secrets key the cluster's, although the cluster's
    /// secrets were sealed with another: to rotate the key (secrets sealed
    /// with the old one cannot be opened until `flotilla secret set` gives
    /// them a new value). Without it, a server whose key differs from the
    /// cluster's refuses to start.
    #[arg(long)]
    replace_secrets_key: bool,

    /// Serve HTTPS with this certificate (chain, PEM) instead of one made by
    /// the cluster CA.
    #[arg(
        long,
        env = "FLOTILLA_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(
        long,
        env = "FLOTILLA_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,

    /// More names (host names or addresses) for the certificate the server
    /// makes itself, comma-separated: those clients reach it by, beside its
    /// listen address, host name and loopback.
    #[arg(
        long,
        env = "FLOTILLA_TLS_SAN",
        value_delimiter = ',',
        value_name = "NAME[,NAME...]"
    )]
    tls_san: Vec<String>,

    /// Serve plain HTTP, without TLS: every token crosses the network in
    /// clear. Refused on an address other than loopback unless
    /// --allow-insecure-remote is given too.
    #[arg(long, env = "FLOTILLA_INSECURE_HTTP")]
    insecure_http: bool,

    /// With --insecure-http: allow it on an address other than loopback.
    #[arg(long, env = "FLOTILLA_ALLOW_INSECURE_REMOTE")]
    allow_insecure_remote: bool,

    /// Most connections open at once [default: 8192, within the file
    /// limit].
    #[arg(long, env = "FLOTILLA_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<usize>,

    /// Most connections open at once from one IP address [default: 256].
    #[arg(long, env = "FLOTILLA_MAX_CONNECTIONS_PER_PEER", value_name = "N")]
    max_connections_per_peer: Option<usize>,

    /// How long a connection may take to send a request's head, and its
    /// TLS handshake [default: 10s].
    #[arg(long, env = "FLOTILLA_HEADER_READ_TIMEOUT", value_name = "TIMESPAN", value_parser = parse_span)]
    header_read_timeout: Option<Duration>,

    /// How long a connection may stay idle between requests [default: 90s].
    #[arg(long, env = "FLOTILLA_IDLE_TIMEOUT", value_name = "TIMESPAN", value_parser = parse_span)]
    idle_timeout: Option<Duration>,

    /// How long a request may take to send its body [default: 30s].
    #[arg(long, env = "FLOTILLA_BODY_READ_TIMEOUT", value_name = "TIMESPAN", value_parser = parse_span)]
    body_read_timeout: Option<Duration>,

    /// Prefix of every key in the store [default: /flotilla/v1/].
    #[arg(long, env = "FLOTILLA_KEY_PREFIX", value_name = "PREFIX")]
    key_prefix: Option<String>,

    /// Keep the cluster's state in etcd, at these client URLs
    /// (comma-separated), instead of the embedded store.
    #[arg(
        long,
        env = "FLOTILLA_ETCD",
        value_name = "URL[,URL...]",
        value_delimiter = ','
    )]
    etcd: Vec<String>,

    /// The etcd user, when etcd has authentication enabled.
    #[arg(long, env = "FLOTILLA_ETCD_USERNAME", value_name = "USER")]
    etcd_username: Option<String>,

    /// The etcd user's password.
    #[arg(long, env = "FLOTILLA_ETCD_PASSWORD", hide_env_values = true)]
    etcd_password: Option<String>,

    /// TLS to etcd: the CA certificate (PEM) that signed etcd's certificates.
    #[arg(long, env = "FLOTILLA_ETCD_CA", value_name = "FILE")]
    etcd_ca: Option<PathBuf>,

    /// TLS to etcd: this server's client certificate (PEM), for etcd's
    /// `--client-cert-auth`.
    #[arg(long, env = "FLOTILLA_ETCD_CERT", value_name = "FILE")]
    etcd_cert: Option<PathBuf>,

    /// TLS to etcd: the client certificate's private key (PEM).
    #[arg(long, env = "FLOTILLA_ETCD_KEY", value_name = "FILE")]
    etcd_key: Option<PathBuf>,

    /// The longest one etcd request may take [default: 5s].
    #[arg(long, env = "FLOTILLA_ETCD_TIMEOUT", value_name = "TIMESPAN", value_parser = parse_span)]
    etcd_timeout: Option<Duration>,

    /// Replicate the store with raft between these servers, without etcd:
    /// each server's id and peer address, this one's included
    /// (comma-separated). Needs --raft-id. The servers share the cluster CA
    /// (DATA_DIR/tls) and the secrets key, copied from the first server.
    #[arg(
        long,
        env = "FLOTILLA_PEERS",
        value_name = "ID=https://HOST:PORT[,...]",
        value_delimiter = ',',
        value_parser = parse_peer
    )]
    peers: Vec<(u64, String)>,

    /// This server's id among --peers (a number, unique in the cluster and
    /// never reused).
    #[arg(long, env = "FLOTILLA_RAFT_ID", value_name = "ID")]
    raft_id: Option<u64>,

    /// This server was added to a running cluster (`flotilla server add`):
    /// on its first start it bootstraps nothing and takes the cluster's
    /// state from the leader.
    #[arg(long, env = "FLOTILLA_JOIN")]
    join: bool,

    /// Where to listen for the other servers [default: every interface, on
    /// the port of this server's peer address].
    #[arg(long, env = "FLOTILLA_PEER_LISTEN", value_name = "ADDR:PORT")]
    peer_listen: Option<SocketAddr>,
}

/// One `ID=URL` of --peers.
pub(crate) fn parse_peer(s: &str) -> Result<(u64, String), String> {
    let (id, url) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not ID=https://HOST:PORT"))?;
    let id: u64 = id
        .trim()
        .parse()
        .map_err(|_| format!("{id:?} is not a server id (a number from 1)"))?;
    if id == 0 {
        return Err("server ids start at 1".to_owned());
    }
    let url = url.trim();
    if !url.starts_with("https://") {
        return Err(format!(
            "the peer address {url:?} must be https://HOST:PORT (servers speak mutual TLS)"
        ));
    }
    Ok((id, url.to_owned()))
}

fn parse_span(s: &str) -> Result<Duration, String> {
    parse_timespan(s).map_err(|e| e.to_string())
}

/// The YAML configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    #[serde(default, with = "serde_timespan_option")]
    machine_ttl: Option<Duration>,
    #[serde(default, with = "serde_timespan_option")]
    leader_ttl: Option<Duration>,
    strategy: Option<String>,
    token_file: Option<PathBuf>,
    secrets_key: Option<PathBuf>,
    key_prefix: Option<String>,
    #[serde(default)]
    tls: TlsFile,
    #[serde(default)]
    http: HttpFile,
    #[serde(default)]
    audit: AuditFile,
    #[serde(default)]
    events: EventsFile,
    #[serde(default)]
    quotas: QuotasFile,
    #[serde(default)]
    sync: SyncFile,
    etcd: Option<EtcdFile>,
    raft: Option<RaftFile>,
}

/// The `raft:` section of the YAML file: the store replicated between
/// servers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RaftFile {
    id: Option<u64>,
    #[serde(default)]
    peers: std::collections::BTreeMap<u64, String>,
    #[serde(default)]
    join: bool,
    listen: Option<SocketAddr>,
}

/// The `quotas:` section of the YAML file: what the cluster may hold
/// (docs/operations.md).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct QuotasFile {
    units: Option<u64>,
    unit_bytes: Option<u64>,
    machines: Option<u64>,
    metadata_keys: Option<usize>,
    metadata_bytes: Option<usize>,
    page_bytes: Option<usize>,
}

impl QuotasFile {
    fn resolve(&self) -> Quotas {
        let d = Quotas::default();
        Quotas {
            units: self.units.unwrap_or(d.units),
            unit_bytes: self.unit_bytes.unwrap_or(d.unit_bytes),
            machines: self.machines.unwrap_or(d.machines),
            metadata_keys: self.metadata_keys.unwrap_or(d.metadata_keys),
            metadata_bytes: self.metadata_bytes.unwrap_or(d.metadata_bytes),
            page_bytes: self.page_bytes.unwrap_or(d.page_bytes),
        }
    }
}

/// The `sync:` section of the YAML file: what git sources may ask for
/// and how much one sync reads (docs/operations.md, Git sources).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SyncFile {
    max_sources: Option<usize>,
    #[serde(default, with = "serde_timespan_option")]
    min_interval: Option<Duration>,
    #[serde(default, with = "serde_timespan_option")]
    default_interval: Option<Duration>,
    #[serde(default, with = "serde_timespan_option")]
    max_interval: Option<Duration>,
    #[serde(default, with = "serde_timespan_option")]
    fetch_timeout: Option<Duration>,
    max_units: Option<usize>,
    max_files: Option<usize>,
    max_bytes: Option<u64>,
}

impl SyncFile {
    fn resolve(&self) -> anyhow::Result<SyncSettings> {
        let mut sync = SyncSettings::default();
        let limits = &mut sync.limits;
        limits.max_sources = self.max_sources.unwrap_or(limits.max_sources);
        limits.min_interval = self.min_interval.unwrap_or(limits.min_interval);
        limits.default_interval = self.default_interval.unwrap_or(limits.default_interval);
        limits.max_interval = self.max_interval.unwrap_or(limits.max_interval);
        let follow = &mut sync.follow;
        follow.fetch_timeout = self.fetch_timeout.unwrap_or(follow.fetch_timeout);
        let tree = &mut follow.tree;
        tree.max_files = self.max_files.unwrap_or(tree.max_files);
        tree.max_bytes = self.max_bytes.unwrap_or(tree.max_bytes);
        let most_units = tree.max_units;
        tree.max_units = self.max_units.unwrap_or(tree.max_units);
        let span = format_timespan;
        if limits.min_interval < Duration::from_secs(1)
            || limits.min_interval > limits.default_interval
            || limits.default_interval > limits.max_interval
        {
            anyhow::bail!(
                "sync: give 1s <= min-interval <= default-interval <= max-interval (here {}, {}, {})",
                span(limits.min_interval),
                span(limits.default_interval),
                span(limits.max_interval)
            );
        }
        if follow.fetch_timeout < Duration::from_secs(1) {
            anyhow::bail!("sync: fetch-timeout must be at least 1s");
        }
        if tree.max_units == 0 || tree.max_units > most_units {
            anyhow::bail!(
                "sync: max-units must be 1 to {most_units} (a source's status names each unit it owns, in one store value)"
            );
        }
        if limits.max_sources == 0 || tree.max_files == 0 || tree.max_bytes == 0 {
            anyhow::bail!("sync: max-sources, max-files and max-bytes must be at least 1");
        }
        Ok(sync)
    }
}

/// The `tls:` section of the YAML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct TlsFile {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    #[serde(default)]
    san: Vec<String>,
    #[serde(default)]
    insecure_http: bool,
    #[serde(default)]
    allow_insecure_remote: bool,
}

/// The `http:` section of the YAML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct HttpFile {
    max_connections: Option<usize>,
    max_connections_per_peer: Option<usize>,
    #[serde(default, with = "serde_timespan_option")]
    header_read_timeout: Option<Duration>,
    #[serde(default, with = "serde_timespan_option")]
    idle_timeout: Option<Duration>,
    #[serde(default, with = "serde_timespan_option")]
    body_read_timeout: Option<Duration>,
}

/// The `audit:` section of the YAML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct AuditFile {
    max_entries: Option<usize>,
    #[serde(default, with = "serde_timespan_option")]
    max_age: Option<Duration>,
}

/// The `events:` section of the YAML file: how much of the cluster's
/// history is kept.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct EventsFile {
    max_events: Option<usize>,
    #[serde(default, with = "serde_timespan_option")]
    max_age: Option<Duration>,
}

impl EventsFile {
    fn resolve(&self) -> EventRetention {
        let d = EventRetention::default();
        EventRetention {
            max_events: self.max_events.unwrap_or(d.max_events),
            max_age: self.max_age.unwrap_or(d.max_age),
        }
    }
}

/// The `etcd:` section of the YAML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct EtcdFile {
    #[serde(default)]
    endpoints: Vec<String>,
    username: Option<String>,
    password: Option<String>,
    #[serde(default, with = "serde_timespan_option")]
    request_timeout: Option<Duration>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

fn resolve(args: Args) -> anyhow::Result<DaemonConfig> {
    let file = match &args.config {
        Some(path) => read_config(path)?,
        None => FileConfig::default(),
    };
    let strategy = match (args.strategy, file.strategy) {
        (Some(s), _) => s,
        (None, Some(s)) => s
            .parse()
            .with_context(|| "in the configuration file".to_owned())?,
        (None, None) => Strategy::default(),
    };
    let listen = match args.listen.or(file.listen) {
        Some(l) => l,
        None => DEFAULT_LISTEN.parse().context("default listen address")?,
    };
    let tls = tls_settings(&args, &file.tls, listen)?;
    let etcd_file = file.etcd.unwrap_or_default();
    let on_etcd = !args.etcd.is_empty() || !etcd_file.endpoints.is_empty();
    let raft = raft_settings(&args, file.raft.unwrap_or_default(), on_etcd)?;
    let endpoints = if args.etcd.is_empty() {
        etcd_file.endpoints
    } else {
        args.etcd
    };
    let etcd = (!endpoints.is_empty()).then(|| {
        let mut config = EtcdConfig::new(endpoints);
        config.username = args.etcd_username.or(etcd_file.username);
        config.password = args.etcd_password.or(etcd_file.password);
        if let Some(t) = args.etcd_timeout.or(etcd_file.request_timeout) {
            config.request_timeout = t;
        }
        config.tls = args.etcd_ca.or(etcd_file.ca).map(|ca| EtcdTls {
            ca,
            cert: args.etcd_cert.or(etcd_file.cert),
            key: args.etcd_key.or(etcd_file.key),
        });
        config
    });
    let static_admin_token = static_token(
        args.token.as_deref(),
        args.token_file.as_deref().or(file.token_file.as_deref()),
    )?;
    let defaults = HttpLimits::default();
    let http = HttpLimits {
        max_connections: args.max_connections.or(file.http.max_connections),
        max_connections_per_peer: args
            .max_connections_per_peer
            .or(file.http.max_connections_per_peer)
            .unwrap_or(defaults.max_connections_per_peer),
        header_read_timeout: args
            .header_read_timeout
            .or(file.http.header_read_timeout)
            .unwrap_or(defaults.header_read_timeout),
        idle_timeout: args
            .idle_timeout
            .or(file.http.idle_timeout)
            .unwrap_or(defaults.idle_timeout),
        body_read_timeout: args
            .body_read_timeout
            .or(file.http.body_read_timeout)
            .unwrap_or(defaults.body_read_timeout),
    };
    let audit_defaults = AuditRetention::default();
    let audit = AuditRetention {
        max_entries: file.audit.max_entries.unwrap_or(audit_defaults.max_entries),
        max_age: file.audit.max_age.unwrap_or(audit_defaults.max_age),
    };
    Ok(DaemonConfig {
        listen,
        secrets_key: args.secrets_key.or(file.secrets_key),
        replace_secrets_key: args.replace_secrets_key,
        tls,
        static_admin_token,
        audit,
        events: file.events.resolve(),
        quotas: file.quotas.resolve(),
        sync: file.sync.resolve()?,
        etcd,
        raft,
        data_dir: args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
        machine_ttl: args
            .machine_ttl
            .or(file.machine_ttl)
            .unwrap_or(DEFAULT_MACHINE_TTL),
        leader_ttl: args
            .leader_ttl
            .or(file.leader_ttl)
            .unwrap_or(DEFAULT_LEADER_TTL),
        strategy,
        api: ApiConfig {
            http,
            ..ApiConfig::default()
        },
        keys: Keys::new(
            args.key_prefix
                .or(file.key_prefix)
                .as_deref()
                .unwrap_or(DEFAULT_PREFIX),
        ),
    })
}

/// The raft settings from the flags and the `raft:` section, if the
/// store is replicated.
fn raft_settings(
    args: &Args,
    file: RaftFile,
    on_etcd: bool,
) -> anyhow::Result<Option<RaftSettings>> {
    let mut peers = file.peers;
    if !args.peers.is_empty() {
        peers = std::collections::BTreeMap::new();
        for (id, url) in &args.peers {
            if peers.insert(*id, url.clone()).is_some() {
                bail!("--peers names server {id} twice");
            }
        }
    }
    let id = args.raft_id.or(file.id);
    let join = args.join || file.join;
    let listen = args.peer_listen.or(file.listen);
    if peers.is_empty() {
        if id.is_some() || join || listen.is_some() {
            bail!(
                "--raft-id, --join and --peer-listen need --peers: the servers of the cluster and their peer addresses"
            );
        }
        return Ok(None);
    }
    if on_etcd {
        bail!(
            "give --etcd or --peers, not both: the store is either etcd or replicated by the servers"
        );
    }
    let Some(id) = id else {
        bail!("--peers needs --raft-id: which of the servers this one is");
    };
    if !peers.contains_key(&id) {
        bail!("--peers must list this server ({id}) with its own peer address too");
    }
    Ok(Some(RaftSettings {
        id,
        peers,
        join,
        listen,
    }))
}

/// Shortest admin token an operator may give with `--token`: about 190
/// bits if random.
const MIN_STATIC_TOKEN: usize = 32;

/// The operator's admin token, from `--token` (`FLOTILLA_TOKEN`) or a file.
/// An empty one is an error, never "auth off".
fn static_token(flag: Option<&str>, file: Option<&Path>) -> anyhow::Result<Option<String>> {
    // clap reads a variable set to "" as absent: look at it directly.
    let from_env = std::env::var_os("FLOTILLA_TOKEN");
    if from_env.as_ref().is_some_and(|v| v.is_empty()) && flag.is_none_or(str::is_empty) {
        bail!(
            "FLOTILLA_TOKEN is set but empty: an empty token is an error, not \"no authentication\"; unset it, or give a token of at least {MIN_STATIC_TOKEN} characters"
        );
    }
    let token = match (flag, file) {
        (Some(_), Some(_)) => bail!("give --token or --token-file, not both"),
        (Some(t), None) => t.trim().to_owned(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?
            .trim()
            .to_owned(),
        (None, None) => return Ok(None),
    };
    if token.is_empty() {
        bail!(
            "the token given (--token, FLOTILLA_TOKEN or --token-file) is empty: an empty token is an error, not \"no authentication\""
        );
    }
    if token.len() < MIN_STATIC_TOKEN {
        bail!(
            "the token given is {} characters: give at least {MIN_STATIC_TOKEN} random ones",
            token.len()
        );
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("the token given has spaces or control characters");
    }
    Ok(Some(token))
}

/// How the API is served: TLS unless --insecure-http, which is refused off
/// loopback without --allow-insecure-remote.
fn tls_settings(args: &Args, file: &TlsFile, listen: SocketAddr) -> anyhow::Result<TlsSettings> {
    let insecure = args.insecure_http || file.insecure_http;
    let remote_ok = args.allow_insecure_remote || file.allow_insecure_remote;
    let cert = args.tls_cert.clone().or_else(|| file.cert.clone());
    let key = args.tls_key.clone().or_else(|| file.key.clone());
    if insecure {
        if cert.is_some() {
            bail!("--insecure-http serves no TLS: do not give --tls-cert with it");
        }
        if !listen.ip().is_loopback() && !remote_ok {
            bail!(
                "--insecure-http on {listen} would send every token in clear text over the network: listen on loopback, drop --insecure-http, or add --allow-insecure-remote if the network is really trusted"
            );
        }
        if !listen.ip().is_loopback() {
            tracing::warn!(
                "INSECURE: serving plain HTTP on {listen}: anyone on the network path can read and reuse every credential"
            );
        }
        return Ok(TlsSettings::Insecure);
    }
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(TlsSettings::Files { cert, key }),
        (None, None) => {
            let mut extra_names = args.tls_san.clone();
            extra_names.extend(file.san.iter().cloned());
            Ok(TlsSettings::ClusterCa { extra_names })
        }
        _ => bail!("a TLS certificate needs both tls cert and key"),
    }
}

/// Reads a YAML configuration file (of `flotilla server` or `flotilla
/// agent`).
pub(crate) fn read_config<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read configuration file {}", path.display()))?;
    serde_norway::from_str(&text)
        .with_context(|| format!("configuration file {} is not valid", path.display()))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = resolve(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let daemon = Daemon::start(config).await?;
        notify("READY=1");
        wait_for_signal().await;
        tracing::info!("shutting down");
        notify("STOPPING=1");
        daemon.stop().await?;
        Ok(())
    })
}

/// The settings `flotilla dev` runs its server with: those of `flotilla
/// server` with no flags or file, but for where it listens and keeps its
/// data.
pub(crate) fn dev_config(listen: SocketAddr, data_dir: PathBuf) -> anyhow::Result<DaemonConfig> {
    resolve(Args {
        listen: Some(listen),
        data_dir: Some(data_dir),
        ..Args::default()
    })
}

/// Waits for SIGTERM or SIGINT.
pub(crate) async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for signals; stop the server with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `deploy/NAME` resolved as `flotilla server --config deploy/NAME`.
    fn example(name: &str) -> DaemonConfig {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy")
            .join(name);
        resolve(Args {
            config: Some(path),
            ..Args::default()
        })
        .unwrap()
    }

    fn sync_of(yaml: &str) -> anyhow::Result<SyncSettings> {
        let file: FileConfig = serde_norway::from_str(yaml).unwrap();
        file.sync.resolve()
    }

    #[test]
    fn the_sync_section_sets_the_git_sources_limits() {
        let sync = sync_of(
            "sync:\n  max-sources: 5\n  min-interval: 5s\n  default-interval: 10min\n  fetch-timeout: 2min\n  max-units: 200\n  max-bytes: 1048576\n",
        )
        .unwrap();
        assert_eq!(sync.limits.max_sources, 5);
        assert_eq!(sync.limits.min_interval, Duration::from_secs(5));
        assert_eq!(sync.limits.default_interval, Duration::from_secs(600));
        assert_eq!(sync.follow.fetch_timeout, Duration::from_secs(120));
        assert_eq!(sync.follow.tree.max_units, 200);
        assert_eq!(sync.follow.tree.max_bytes, 1_048_576);
        // The rest keep their defaults.
        let d = SyncSettings::default();
        assert_eq!(sync.limits.max_interval, d.limits.max_interval);
        assert_eq!(sync.follow.tree.max_files, d.follow.tree.max_files);
        assert_eq!(sync_of("{}").unwrap().limits, d.limits);

        for (yaml, why) in [
            (
                "sync: {min-interval: 5min, default-interval: 1min}",
                "min-interval <= default-interval",
            ),
            ("sync: {min-interval: 100ms}", "1s <= min-interval"),
            ("sync: {max-units: 5000}", "max-units must be 1 to 1000"),
            ("sync: {max-sources: 0}", "at least 1"),
            ("sync: {fetch-timeout: 0s}", "fetch-timeout"),
        ] {
            let e = sync_of(yaml).unwrap_err().to_string();
            assert!(e.contains(why), "{yaml}: {e}");
        }
        assert!(serde_norway::from_str::<FileConfig>("sync: {max-source: 1}").is_err());
    }

    #[test]
    fn the_example_configurations_say_what_their_comments_say() {
        let etcd = example("server.example.yaml");
        assert_eq!(etcd.etcd.map(|e| e.endpoints.len()), Some(3));
        assert_eq!(etcd.raft, None);

        let raft = example("server.raft.example.yaml");
        assert!(raft.etcd.is_none());
        let settings = raft.raft.unwrap();
        assert_eq!(settings.id, 1);
        assert_eq!(
            settings
                .peers
                .values()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            [
                "https://10.0.0.1:7071",
                "https://10.0.0.2:7071",
                "https://10.0.0.3:7071"
            ]
        );
        assert!(!settings.join);
        assert_eq!(settings.listen, None);
        assert_eq!(raft.listen, "0.0.0.0:7070".parse().unwrap());
    }
}
