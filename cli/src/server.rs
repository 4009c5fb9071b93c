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
use serde::Deserialize;

use crate::notify::notify;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
const DEFAULT_DATA_DIR: &str = "/var/lib/flotilla";
const DEFAULT_MACHINE_TTL: Duration = Duration::from_secs(10);
const DEFAULT_LEADER_TTL: Duration = Duration::from_secs(3);

/// Flags (and their environment variables) of `flotilla server`; each
/// overrides the same setting in the YAML file given with `--config`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A YAML configuration file (keys: listen, data-dir, machine-ttl,
    /// leader-ttl, strategy, token, key-prefix).
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
    Ok(DaemonConfig {
        listen,
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

fn read_config(path: &Path) -> anyhow::Result<FileConfig> {
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

async fn wait_for_signal() {
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
