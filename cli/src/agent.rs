//! `flotilla agent`: the agent of this machine (see `flotilla_agent`), with
//! its settings from flags, environment and a YAML file, systemd's
//! readiness protocol, and a graceful stop that leaves units running.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use flotilla_agent::metrics::AgentMetrics;
use flotilla_agent::notify::notify;
use flotilla_agent::systemd::{DbusSystemd, RUNTIME_UNIT_DIR};
use flotilla_agent::{Agent, AgentConfig};
use flotilla_api::server::metrics::registry_router;
use flotilla_api::server::{HttpLimits, Transport, serve};
use prometheus_client::registry::Registry;
use serde::Deserialize;

use crate::server::{DEFAULT_LISTEN, read_config, wait_for_signal};

/// Flags (and their environment variables) of `flotilla agent`; each
/// overrides the same setting in the YAML file given with `--config`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A YAML configuration file (keys: server, metadata, join-token,
    /// join-token-file, ca, state-dir, unit-dir, metrics-listen,
    /// metrics-allow-remote).
    #[arg(long, env = "FLOTILLA_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// The servers, comma-separated; when one cannot be reached the next is
    /// tried [default: https://127.0.0.1:7070].
    #[arg(
        long,
        env = "FLOTILLA_SERVER",
        value_delimiter = ',',
        value_name = "URL[,URL...]"
    )]
    server: Vec<String>,

    /// This machine's metadata, comma-separated `key=value` pairs, which
    /// units select machines by (`MachineMetadata=`).
    #[arg(
        long,
        env = "FLOTILLA_METADATA",
        value_delimiter = ',',
        value_name = "K=V[,K=V...]",
        value_parser = parse_pair
    )]
    metadata: Vec<(String, String)>,

    /// A join token (`flotilla token create --role join` prints it), used
    /// once, when this machine has no credential yet. Its join line also
    /// pins the cluster CA. Prefer --join-token-file: a flag shows in `ps`.
    #[arg(long, env = "FLOTILLA_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,

    /// A file holding the join token.
    #[arg(long, env = "FLOTILLA_JOIN_TOKEN_FILE", value_name = "FILE")]
    join_token_file: Option<PathBuf>,

    /// The cluster CA's certificate (PEM), when the join token does not
    /// carry its fingerprint, or the servers use certificates of their own.
    #[arg(long, env = "FLOTILLA_CA", value_name = "FILE")]
    ca: Option<PathBuf>,

    /// Where the machine's credential is kept [default:
    /// /var/lib/flotilla-agent].
    #[arg(long, env = "FLOTILLA_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// Where unit files are written [default: /run/systemd/system].
    #[arg(long, env = "FLOTILLA_UNIT_DIR", value_name = "DIR")]
    unit_dir: Option<PathBuf>,

    /// Serve the agent's Prometheus metrics at http://ADDR/metrics, plain
    /// HTTP with no credential (docs/metrics.md) [default: not served].
    /// Loopback only, unless --metrics-allow-remote is given too.
    #[arg(long, env = "FLOTILLA_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,

    /// With --metrics-listen: allow an address other than loopback, where
    /// anyone who reaches it reads the metrics.
    #[arg(long, env = "FLOTILLA_METRICS_ALLOW_REMOTE")]
    metrics_allow_remote: bool,
}

/// One `key=value` of machine metadata: a non-empty key and value, no
/// second `=` (as `MachineMetadata=` reads them).
pub fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() && !v.contains('=') => {
            Ok((k.trim().to_owned(), v.trim().to_owned()))
        }
        _ => Err(format!(
            "expected key=value with a non-empty key and value, found {s:?}"
        )),
    }
}

/// The YAML configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    #[serde(default)]
    server: Servers,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    join_token: Option<String>,
    join_token_file: Option<PathBuf>,
    ca: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    unit_dir: Option<PathBuf>,
    metrics_listen: Option<SocketAddr>,
    #[serde(default)]
    metrics_allow_remote: bool,
}

/// `server:` as one URL, comma-separated URLs, or a list.
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum Servers {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Servers {
    fn into_vec(self) -> Vec<String> {
        match self {
            Servers::None => Vec::new(),
            Servers::One(s) => s
                .split(',')
                .map(|u| u.trim().to_owned())
                .filter(|u| !u.is_empty())
                .collect(),
            Servers::Many(v) => v,
        }
    }
}

/// The agent's settings, and where it serves its metrics (if anywhere).
fn resolve(args: Args) -> anyhow::Result<(AgentConfig, Option<SocketAddr>)> {
    let file: FileConfig = match &args.config {
        Some(path) => read_config(path)?,
        None => FileConfig::default(),
    };
    if let Some(path) = &args.config {
        for (k, v) in &file.metadata {
            parse_pair(&format!("{k}={v}"))
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("metadata in {}", path.display()))?;
        }
    }
    let metrics_listen = metrics_address(
        args.metrics_listen.or(file.metrics_listen),
        args.metrics_allow_remote || file.metrics_allow_remote,
    )?;
    let mut servers = args.server;
    if servers.is_empty() {
        servers = file.server.into_vec();
    }
    if servers.is_empty() {
        servers = vec![format!("https://{DEFAULT_LISTEN}")];
    }
    let metadata = if args.metadata.is_empty() {
        file.metadata
    } else {
        args.metadata.into_iter().collect()
    };
    let mut config = AgentConfig::new(servers, own_binary()?);
    config.metadata = metadata;
    config.join_token = match (
        args.join_token.or(file.join_token),
        args.join_token_file.or(file.join_token_file),
    ) {
        (Some(_), Some(_)) => bail!("give a join token or a join token file, not both"),
        (Some(t), None) if t.trim().is_empty() => bail!("the join token given is empty"),
        (Some(t), None) => Some(t.trim().to_owned()),
        (None, Some(path)) => Some(crate::client::read_token(&path)?),
        (None, None) => None,
    };
    config.ca = args
        .ca
        .or(file.ca)
        .map(|path| {
            std::fs::read(&path)
                .with_context(|| format!("cannot read the CA certificate {}", path.display()))
        })
        .transpose()?;
    if let Some(dir) = args.state_dir.or(file.state_dir) {
        config.state_dir = dir;
    }
    config.unit_dir = args
        .unit_dir
        .or(file.unit_dir)
        .unwrap_or_else(|| PathBuf::from(RUNTIME_UNIT_DIR));
    Ok((config, metrics_listen))
}

/// Where the metrics are served: refused on an address other than
/// loopback unless `remote_ok`, since they are served with no credential.
fn metrics_address(
    listen: Option<SocketAddr>,
    remote_ok: bool,
) -> anyhow::Result<Option<SocketAddr>> {
    match listen {
        Some(addr) if !addr.ip().is_loopback() && !remote_ok => bail!(
            "--metrics-listen {addr} would show this machine's metrics to anyone who reaches it, with no credential: listen on loopback (127.0.0.1:9559) and scrape locally, or add --metrics-allow-remote if the network is trusted"
        ),
        other => Ok(other),
    }
}

/// Serves `metrics` on `listen` (plain HTTP, `GET /metrics` only) until
/// the process ends.
async fn serve_metrics(listen: SocketAddr, metrics: &AgentMetrics) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen for metrics on {listen}"))?;
    let address = listener.local_addr().unwrap_or(listen);
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let router = registry_router(Arc::new(registry));
    // A scraper or two: few connections, and none held idle for long.
    let limits = HttpLimits {
        max_connections: Some(METRICS_CONNECTIONS),
        max_connections_per_peer: METRICS_CONNECTIONS,
        ..HttpLimits::default()
    };
    tokio::spawn(async move {
        let forever = std::future::pending::<()>();
        if let Err(e) = serve(listener, router, Transport::Plain, limits, forever).await {
            tracing::error!("the metrics listener failed: {e}");
        }
    });
    if !address.ip().is_loopback() {
        tracing::warn!("serving metrics with no credential on {address}, beyond loopback");
    }
    tracing::info!("serving metrics on http://{address}/metrics");
    Ok(())
}

/// Most connections open at once on the metrics listener.
const METRICS_CONNECTIONS: usize = 16;

/// This binary: container units run it as their shim.
pub fn own_binary() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("cannot tell where the flotilla binary is")
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (config, metrics_listen) = resolve(args)?;
    // One thread: the agent waits on systemd and the servers and computes
    // little, and allocating from one thread keeps its heap in one arena
    // (with a thread per core, a burst of hundreds of jobs left the agent
    // holding several megabytes more once idle).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        if let Some(listen) = metrics_listen {
            serve_metrics(listen, &config.metrics).await?;
        }
        // Joining waits for a server: a signal meanwhile stops the agent.
        let signal = wait_for_signal();
        tokio::pin!(signal);
        let agent = tokio::select! {
            agent = start(config) => agent?,
            () = &mut signal => return Ok(()),
        };
        supervise(agent).await
    })
}

/// Connects to systemd and starts the agent.
pub async fn start(config: AgentConfig) -> anyhow::Result<Agent> {
    let systemd = DbusSystemd::connect()
        .await
        .context("the agent needs systemd")?
        .with_metrics(config.metrics.clone());
    check_unit_dir(&config.unit_dir)?;
    Ok(Agent::start(config, Arc::new(systemd)).await?)
}

fn check_unit_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the unit directory {}", dir.display()))
}

/// Runs the agent until SIGTERM or SIGINT (or until it fails), telling
/// systemd it is ready once the machine is registered. Units are left
/// running when it stops.
pub async fn supervise(mut agent: Agent) -> anyhow::Result<()> {
    let signal = wait_for_signal();
    tokio::pin!(signal);
    tokio::select! {
        r = agent.registered() => {
            r?;
            notify("READY=1");
        }
        () = &mut signal => {
            notify("STOPPING=1");
            agent.stop().await?;
            return Ok(());
        }
    }
    tokio::select! {
        e = agent.finished() => {
            return Err(anyhow::Error::from(e).context("the agent stopped"));
        }
        () = &mut signal => {}
    }
    tracing::info!("shutting down; units keep running");
    notify("STOPPING=1");
    agent.stop().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_pairs() {
        assert_eq!(parse_pair("role=web"), Ok(("role".into(), "web".into())));
        assert!(parse_pair("role").is_err());
        assert!(parse_pair("=web").is_err());
        assert!(parse_pair("role=").is_err());
        assert!(parse_pair("a=b=c").is_err());
    }

    #[test]
    fn metrics_stay_on_loopback_unless_allowed() {
        let at = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
        assert_eq!(
            metrics_address(at("127.0.0.1:9559"), false).unwrap(),
            at("127.0.0.1:9559")
        );
        assert_eq!(
            metrics_address(at("[::1]:9559"), false).unwrap(),
            at("[::1]:9559")
        );
        let refused = metrics_address(at("0.0.0.0:9559"), false).unwrap_err();
        assert!(
            refused.to_string().contains("--metrics-allow-remote"),
            "{refused}"
        );
        assert!(metrics_address(at("10.1.2.3:9559"), false).is_err());
        assert_eq!(
            metrics_address(at("0.0.0.0:9559"), true).unwrap(),
            at("0.0.0.0:9559")
        );
        assert_eq!(metrics_address(None, false).unwrap(), None);
        let file: FileConfig = serde_norway::from_str(
            "metrics-listen: 127.0.0.1:9559
metrics-allow-remote: true
",
        )
        .unwrap();
        assert_eq!(file.metrics_listen, at("127.0.0.1:9559"));
        assert!(file.metrics_allow_remote);
    }

    #[test]
    fn server_lists() {
        let one: FileConfig = serde_norway::from_str("server: http://a:1, http://b:2\n").unwrap();
        assert_eq!(one.server.into_vec(), ["http://a:1", "http://b:2"]);
        let many: FileConfig =
            serde_norway::from_str("server: [http://a:1]\nmetadata: {role: web}\n").unwrap();
        assert_eq!(many.server.into_vec(), ["http://a:1"]);
        assert_eq!(many.metadata["role"], "web");
        assert!(serde_norway::from_str::<FileConfig>("servers: x\n").is_err());
    }
}
