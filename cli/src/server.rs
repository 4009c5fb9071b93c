//! `flotilla server`: the control plane (see `flotilla_api::daemon`), with
//! its settings from flags, environment and a YAML file, and systemd's
//! readiness protocol.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use flotilla_api::daemon::{Daemon, DaemonConfig};
use flotilla_api::server::ApiConfig;
use flotilla_proto::duration::{parse_timespan, serde_timespan_option};
use flotilla_scheduler::keys::{DEFAULT_PREFIX, Keys};
use flotilla_scheduler::placement::Strategy;
use flotilla_scheduler::store::{EtcdConfig, EtcdTls};
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
    /// leader-ttl, strategy, token, key-prefix, and etcd: endpoints,
    /// username, password, request-timeout, ca, cert, key).
    #[arg(long, env = "FLOTILLA_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Address and port the API listens on [default: 127.0.0.1:7070].
    #[arg(long, env = "FLOTILLA_LISTEN", value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,

    /// Directory of the embedded store [default: /var/lib/flotilla].
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

    /// Require `Authorization: Bearer TOKEN` on every API call.
    #[arg(long, env = "FLOTILLA_TOKEN", hide_env_values = true)]
    token: Option<String>,

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
    token: Option<String>,
    key_prefix: Option<String>,
    etcd: Option<EtcdFile>,
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
    let etcd_file = file.etcd.unwrap_or_default();
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
    Ok(DaemonConfig {
        listen,
        etcd,
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
            token: args.token.or(file.token).filter(|t| !t.is_empty()),
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
/// server` with no flags, file or environment, but for where it listens and
/// keeps its data.
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
