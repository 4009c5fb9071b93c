//! `flotilla server`: runs the daemon, or with `add`/`remove` changes the
//! raft group's membership through the API.

use std::process::ExitCode;

use clap::Subcommand;
use flotilla_proto::wire::ServerMembership;

use crate::Output;
use crate::client::{Ctx, print_json};
use crate::server;

/// `flotilla server [FLAGS]` runs the daemon; `flotilla server add|remove`
/// changes the membership of a raft cluster.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServerCli {
    #[command(subcommand)]
    pub command: Option<ServerCommand>,
    #[command(flatten)]
    pub daemon: server::Args,
}

#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Add a server to the raft group (admin), then start it with --join.
    Add {
        /// The new server's raft id (never used before in this cluster)
        /// and the address its peers reach it on.
        #[arg(value_name = "ID=https://HOST:PORT", value_parser = server::parse_peer)]
        server: (u64, String),
    },
    /// Remove a server from the raft group (admin); stop it afterwards.
    Remove {
        /// The server's raft id.
        #[arg(value_name = "ID")]
        id: u64,
    },
}

pub async fn run(ctx: Ctx, command: ServerCommand) -> anyhow::Result<ExitCode> {
    match command {
        ServerCommand::Add {
            server: (id, address),
        } => {
            let members = ctx.client.add_server(id, &address).await?;
            if ctx.output == Output::Json {
                print_json(&members)?;
            } else {
                println!("added server {id} at {address} to the raft group");
                println!("{}", next_steps(id, &members));
            }
        }
        ServerCommand::Remove { id } => {
            let members = ctx.client.remove_server(id).await?;
            if ctx.output == Output::Json {
                print_json(&members)?;
            } else {
                println!(
                    "removed server {id} from the raft group; stop it now (members: {})",
                    peers(&members)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `1=https://a:7201,2=https://b:7201`: the members as --peers takes them.
fn peers(members: &ServerMembership) -> String {
    members
        .members
        .iter()
        .map(|m| format!("{}={}", m.id, m.peer_address))
        .collect::<Vec<_>>()
        .join(",")
}

/// What to do after adding server `id`.
fn next_steps(id: u64, members: &ServerMembership) -> String {
    format!(
        "next, on the new server:\n\
         \x20 1. copy DATA_DIR/tls/ and DATA_DIR/secrets.key from a running server into its data directory\n\
         \x20 2. start it: flotilla server --data-dir DATA_DIR --raft-id {id} --join --peers {}\n\
         it takes the cluster's state from the leader; `flotilla list-servers` shows it catch up",
        peers(members)
    )
}

#[cfg(test)]
mod tests {
    use flotilla_proto::wire::RaftMemberResource;

    use super::*;

    #[test]
    fn next_steps_name_the_id_and_every_member() {
        let members = ServerMembership {
            members: vec![
                RaftMemberResource {
                    id: 1,
                    peer_address: "https://a:7201".into(),
                    voter: true,
                },
                RaftMemberResource {
                    id: 4,
                    peer_address: "https://d:7201".into(),
                    voter: true,
                },
            ],
        };
        let text = next_steps(4, &members);
        assert!(
            text.contains("--raft-id 4 --join --peers 1=https://a:7201,4=https://d:7201"),
            "{text}"
        );
        assert!(text.contains("secrets.key"), "{text}");
    }
}
