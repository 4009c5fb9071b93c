//! `flotilla dev`: a one-machine cluster in one process: a server on the
//! embedded store, and the agent of this machine pointed at it. Once it is
//! ready (the machine registered), `flotilla start unit.service` runs the
//! unit in this machine's systemd.
//!
//! It is secure as any server: HTTPS with the cluster CA it makes, on
//! loopback by default. It writes the cluster `dev` into the client
//! configuration (its endpoint, CA and admin token file) and makes it
//! current, so the CLI on this machine needs no flags; its agent joins
//! with a join token made in process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use flotilla_agent::AgentConfig;
use flotilla_api::daemon::Daemon;
use flotilla_api::tls::{CA_CERT_FILE, TLS_DIR};
use flotilla_proto::trust::{Role, TokenCreate};
use flotilla_scheduler::trust::{ADMIN_TOKEN_FILE, Identity};

use crate::agent::{own_binary, parse_pair, start, supervise};
use crate::config::{ClusterEntry, set_cluster};
use crate::server::{DEFAULT_LISTEN, dev_config, wait_for_signal};

/// The name of the cluster `flotilla dev` writes into the client
/// configuration.
pub const DEV_CLUSTER: &str = "dev";

/// Default directory of the embedded store of `flotilla dev`.
const DEFAULT_DATA_DIR: &str = "/var/lib/flotilla-dev";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address and port the API listens on [default: 127.0.0.1:7070].
    #[arg(long, env = "FLOTILLA_LISTEN", value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,

    /// Directory of the embedded store [default: /var/lib/flotilla-dev].
    #[arg(long, env = "FLOTILLA_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// This machine's metadata, comma-separated `key=value` pairs.
    #[arg(
        long,
        env = "FLOTILLA_METADATA",
        value_delimiter = ',',
        value_name = "K=V[,K=V...]",
        value_parser = parse_pair
    )]
    metadata: Vec<(String, String)>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let listen = match args.listen {
        Some(l) => l,
        None => DEFAULT_LISTEN.parse().context("default listen address")?,
    };
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let server = dev_config(listen, data_dir.clone())?;
    let shim = own_binary()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let daemon = Daemon::start(server).await?;
        let url = daemon.url();
        match set_up_client(&data_dir, &url) {
            Ok(path) => eprintln!(
                "flotilla dev: the CLI on this machine now talks to this cluster as admin (cluster {DEV_CLUSTER} in {})",
                path.display()
            ),
            Err(e) => eprintln!("flotilla dev: cannot write the client configuration: {e:#}"),
        }
        let mut config = AgentConfig::new(vec![url], shim);
        config.metadata = args.metadata.into_iter().collect();
        config.state_dir = data_dir.join("agent");
        config.ca = Some(daemon.trust().ca.cert_pem().as_bytes().to_vec());
        if !config.state_dir.join(flotilla_agent::credential::CREDENTIAL_FILE).exists() {
            config.join_token = Some(join_token(&daemon).await?);
        }
        let signal = wait_for_signal();
        tokio::pin!(signal);
        let ran = tokio::select! {
            started = start(config) => match started {
                Ok(agent) => supervise(agent).await,
                Err(e) => Err(e),
            },
            () = &mut signal => Ok(()),
        };
        // The agent has stopped (units left running): now the server.
        let stopped = daemon.stop().await;
        ran?;
        stopped?;
        Ok(())
    })
}

/// Writes the cluster `dev` into the client configuration, current.
fn set_up_client(data_dir: &Path, url: &str) -> anyhow::Result<PathBuf> {
    let absolute = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    let token_file = absolute.join(ADMIN_TOKEN_FILE);
    let entry = ClusterEntry {
        endpoint: vec![url.to_owned()],
        ca: Some(absolute.join(TLS_DIR).join(CA_CERT_FILE)),
        token_file: token_file.exists().then_some(token_file),
        ..ClusterEntry::default()
    };
    set_cluster(None, DEV_CLUSTER, entry, true)
}

/// A join token for this machine's agent, made in process: one use, ten
/// minutes.
async fn join_token(daemon: &Daemon) -> anyhow::Result<String> {
    let trust = daemon.trust();
    let by = Identity {
        id: "dev".into(),
        name: "flotilla dev".into(),
        role: Role::Admin,
        machine: None,
    };
    let create = TokenCreate {
        role: Role::Join,
        name: "flotilla dev's agent".into(),
        ttl_ms: Some(600_000),
        uses: Some(1),
    };
    let (_, token) = trust
        .credentials
        .create_token(&create, &by)
        .await
        .context("cannot make a join token for the agent")?;
    Ok(token.expose())
}
