//! `flotilla dev`: a one-machine cluster in one process: a server on the
//! embedded store, and the agent of this machine pointed at it. Once it is
//! ready (the machine registered), `flotilla start unit.service` runs the
//! unit in this machine's systemd.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use flotilla_agent::AgentConfig;
use flotilla_api::daemon::Daemon;

use crate::agent::{own_binary, parse_pair, start, supervise};
use crate::server::{DEFAULT_LISTEN, dev_config};

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
    let server = dev_config(listen, data_dir)?;
    let shim = own_binary()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let daemon = Daemon::start(server).await?;
        let mut config =
            AgentConfig::new(vec![format!("http://{}", local(daemon.address()))], shim);
        config.metadata = args.metadata.into_iter().collect();
        let ran = match start(config).await {
            Ok(agent) => supervise(agent).await,
            Err(e) => Err(e),
        };
        // The agent has stopped (units left running): now the server.
        let stopped = daemon.stop().await;
        ran?;
        stopped?;
        Ok(())
    })
}

/// Where the agent reaches a server listening on `address`: on a wildcard
/// address, through loopback.
fn local(address: SocketAddr) -> SocketAddr {
    match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), address.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), address.port())
        }
        _ => address,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_addresses_are_reached_on_loopback() {
        let a: SocketAddr = "0.0.0.0:7070".parse().unwrap();
        assert_eq!(local(a).to_string(), "127.0.0.1:7070");
        let a: SocketAddr = "[::]:7070".parse().unwrap();
        assert_eq!(local(a).to_string(), "[::1]:7070");
        let a: SocketAddr = "10.1.2.3:7070".parse().unwrap();
        assert_eq!(local(a), a);
    }
}
