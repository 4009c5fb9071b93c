//! `flotilla`: one binary for the server, the agent and the client verbs.
//! This file only parses arguments and hands each command to its module.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod verify;

#[derive(Debug, Parser)]
#[command(
    name = "flotilla",
    version,
    about = "A cluster scheduler for systemd units"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How a command prints its result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON document.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check unit files offline: syntax, names, [X-Fleet], [Container] and
    /// resource settings, with no server involved.
    ///
    /// Prints one `FILE:LINE: error: message` or `FILE:LINE: warning: message`
    /// line per problem and a summary line. Exits 1 when any file has an
    /// error (or, with --strict, a warning), 0 otherwise.
    Verify(verify::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Verify(args) => verify::run(&args),
    }
}
