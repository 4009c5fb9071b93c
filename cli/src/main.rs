//! `flotilla`: one binary for the server, the agent and the client verbs.
//! This file only parses arguments and hands each command to its module.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod agent;
mod apply;
mod client;
mod completion;
mod config;
mod dev;
mod events;
mod import_fleet;
mod inspect;
mod live;
mod logging;
mod manual;
mod membership;
mod rollout;
mod secret;
mod server;
mod shim;
mod sync;
mod table;
mod trust;
mod unit_source;
mod units;
mod verify;
mod version;

#[derive(Debug, Parser)]
#[command(
    name = "flotilla",
    version = version::LONG,
    about = "A cluster scheduler for systemd units"
)]
pub struct Cli {
    #[command(flatten)]
    global: Global,

    #[command(subcommand)]
    command: Command,
}

/// Options of every client command. Each overrides the same setting of
/// the current cluster in the client configuration file
/// (~/.config/flotilla/config.yaml, or FLOTILLA_CLIENT_CONFIG).
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// The cluster of the client configuration file to use [default: its
    /// current one].
    #[arg(long, global = true, env = "FLOTILLA_CLUSTER", value_name = "NAME")]
    cluster: Option<String>,

    /// The server(s) to talk to, comma-separated; the next is tried when one
    /// cannot be reached [default: https://127.0.0.1:7070].
    #[arg(
        long,
        global = true,
        env = "FLOTILLA_ENDPOINT",
        value_delimiter = ',',
        value_name = "URL[,URL...]"
    )]
    endpoint: Vec<String>,

    /// A token to call with (prefer --token-file: a flag shows in `ps`).
    #[arg(long, global = true, env = "FLOTILLA_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// A file holding the token to call with.
    #[arg(long, global = true, env = "FLOTILLA_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<std::path::PathBuf>,

    /// The cluster CA's certificate (PEM), to verify the servers with.
    #[arg(long, global = true, env = "FLOTILLA_CA", value_name = "FILE")]
    ca: Option<std::path::PathBuf>,

    /// A client certificate (PEM) signed by the cluster CA, to call with
    /// instead of a token (see `flotilla cert create`).
    #[arg(long, global = true, env = "FLOTILLA_CERT", value_name = "FILE")]
    cert: Option<std::path::PathBuf>,

    /// The client certificate's private key (PEM).
    #[arg(long, global = true, env = "FLOTILLA_KEY", value_name = "FILE")]
    key: Option<std::path::PathBuf>,

    /// Output format of listings and reports.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// How a command prints its result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable text and tables.
    #[default]
    Text,
    /// JSON.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane: the store, the API and the scheduler; or
    /// add a server to, or remove one from, a raft cluster.
    Server(Box<membership::ServerCli>),

    /// Run the agent of this machine: register it, run its units in
    /// systemd, report their state.
    Agent(agent::Args),

    /// Run a server on the embedded store and an agent for this machine in
    /// one process: a one-machine cluster, ready for `flotilla start`.
    Dev(dev::Args),

    /// The main process of a container unit (run by systemd, not by hand).
    #[command(hide = true)]
    Shim(shim::Args),

    // The help text names sections as [X-Fleet], which rustdoc would read as
    // links.
    #[allow(rustdoc::broken_intra_doc_links)]
    /// Check unit files offline: syntax, names, [X-Fleet], [Container] and
    /// resource settings, with no server involved.
    ///
    /// Prints one `FILE:LINE: error: message` or `FILE:LINE: warning: message`
    /// line per problem and a summary line. Exits 1 when any file has an
    /// error (or, with --strict, a warning), 0 otherwise.
    Verify(verify::Args),

    /// Store units in the cluster without scheduling them (desired state
    /// inactive).
    Submit(units::SubmitArgs),
    /// Schedule units to machines without starting them (loaded).
    Load(units::StateArgs),
    /// Schedule and start units (launched).
    Start(units::StateArgs),
    /// Stop units, leaving them scheduled (loaded).
    Stop(units::StateArgs),
    /// Stop units and take them off their machines (inactive).
    Unload(units::StateArgs),
    /// Remove units from the cluster.
    Destroy(units::NamesArgs),
    /// Stop, then start units again.
    Restart(units::StateArgs),
    /// Print a unit's file as stored in the cluster.
    Cat(units::NamesArgs),
    /// List the units and where and how they run.
    ListUnits,
    /// List the unit files in the cluster and their desired states.
    ListUnitFiles,
    /// Show units as their hosts' systemd has them: state and since when,
    /// main PID, tasks, memory, CPU, restarts, last result, and the last
    /// lines of their journal (operators and admins).
    Status(inspect::StatusArgs),
    /// Print a unit's journal from its host (operators and admins); -f
    /// follows it.
    Journal(inspect::JournalArgs),
    /// List the machines of the cluster.
    ListMachines,
    /// List the servers of the cluster and which one leads.
    ListServers,

    /// Make the cluster's units match a directory of unit files.
    Apply(apply::Args),
    /// Show what `apply` would change.
    Diff(apply::DiffArgs),
    /// Rolling updates: units whose contents change together restart in
    /// waves (docs/rollouts.md).
    #[command(subcommand)]
    Rollout(rollout::RolloutCommand),

    /// Copy the units of a running CoreOS fleet cluster into flotilla.
    ///
    /// Reads fleet's registry from its etcd (v2 API) and gives flotilla
    /// each unit with fleet's text and desired state: a unit flotilla lacks
    /// is created, one with the same contents gets fleet's desired state,
    /// one with other contents is reported and left alone (--replace
    /// replaces it), one flotilla refuses is reported with the error.
    /// Prints a line per unit and a summary; running it again finds nothing
    /// to do. Exits 1 when any unit failed or differs.
    /// See docs/migrating-from-fleet.md.
    ImportFleet(import_fleet::Args),

    /// Make, replace, list and remove secrets that container units use
    /// (`Secret=`); values are never printed.
    #[command(subcommand)]
    Secret(secret::SecretCommand),
    /// Follow git repositories: the leader applies each new commit of a
    /// branch as `apply` would, and reports (or puts back) hand changes.
    /// See docs/git-sync.md.
    #[command(subcommand)]
    Sync(sync::SyncCommand),
    /// Make, list and revoke tokens (admin).
    #[command(subcommand)]
    Token(trust::TokenCommand),
    /// Make client certificates signed by the cluster CA (admin).
    #[command(subcommand)]
    Cert(trust::CertCommand),
    /// Manage machines (admin).
    #[command(subcommand)]
    Machine(trust::MachineCommand),
    /// Read the audit log: every change, who made it, how it ended (admin).
    Audit(trust::AuditArgs),

    /// The cluster's history: units placed, moved (and why), started and
    /// failed, machines joined and lost, leaders, and changes people made.
    Events(events::Args),
    /// Show the credential the CLI calls with.
    Whoami,
    /// Edit the client configuration file (the clusters this CLI knows).
    #[command(subcommand)]
    Config(trust::ConfigCommand),

    /// Print the version, the git commit and the build date of this binary.
    Version,
    /// Print the completion script of a shell (bash, zsh, fish).
    ///
    /// Unit names are completed from the cluster of the client
    /// configuration, when there is one. bash: `flotilla completion bash
    /// >/etc/bash_completion.d/flotilla` (the package installs all three).
    Completion(completion::Args),
    /// The cluster's unit names starting with PREFIX (for the completion
    /// scripts; silent without a cluster).
    #[command(name = "__complete-units", hide = true)]
    CompleteUnits(completion::UnitsArgs),
    /// Write the manual pages (flotilla.1, flotilla-COMMAND.1) to DIR.
    #[command(hide = true)]
    Man(manual::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let global = cli.global;
    let result = match cli.command {
        Command::Verify(args) => return verify::run(&args, global.output),
        Command::Server(cli) => match cli.command {
            Some(cmd) => client::run(&global, |c| membership::run(c, cmd)),
            None => {
                logging::init();
                server::run(cli.daemon).map(|()| ExitCode::SUCCESS)
            }
        },
        Command::Agent(args) => {
            logging::init();
            agent::run(args).map(|()| ExitCode::SUCCESS)
        }
        Command::Dev(args) => {
            logging::init();
            dev::run(args).map(|()| ExitCode::SUCCESS)
        }
        Command::Shim(args) => return shim::run(args),
        Command::Submit(args) => client::run(&global, |c| units::submit(c, args)),
        Command::Load(args) => {
            client::run(&global, |c| units::set_state(c, args, units::Verb::Load))
        }
        Command::Start(args) => {
            client::run(&global, |c| units::set_state(c, args, units::Verb::Start))
        }
        Command::Stop(args) => {
            client::run(&global, |c| units::set_state(c, args, units::Verb::Stop))
        }
        Command::Unload(args) => {
            client::run(&global, |c| units::set_state(c, args, units::Verb::Unload))
        }
        Command::Restart(args) => client::run(&global, |c| units::restart(c, args)),
        Command::Destroy(args) => client::run(&global, |c| units::destroy(c, args)),
        Command::Cat(args) => client::run(&global, |c| units::cat(c, args)),
        Command::ListUnits => client::run(&global, table::list_units),
        Command::ListUnitFiles => client::run(&global, table::list_unit_files),
        Command::Status(args) => client::run(&global, |c| inspect::status(c, args)),
        Command::Journal(args) => client::run(&global, |c| inspect::journal(c, args)),
        Command::ListMachines => client::run(&global, table::list_machines),
        Command::ListServers => client::run(&global, table::list_servers),
        Command::Apply(args) => client::run(&global, |c| apply::apply(c, args)),
        Command::Diff(args) => {
            // With --exit-code, 1 says "changes": errors say 2.
            let exit_code = args.exit_code();
            match client::run(&global, |c| apply::diff(c, args)) {
                Err(e) if exit_code => {
                    eprintln!("flotilla: {e:#}");
                    return ExitCode::from(2);
                }
                r => r,
            }
        }
        Command::Rollout(cmd) => client::run(&global, |c| rollout::run(c, cmd)),
        Command::ImportFleet(args) => client::run(&global, |c| import_fleet::run(c, args)),
        Command::Secret(cmd) => client::run(&global, |c| secret::secret(c, cmd)),
        Command::Sync(cmd) => client::run(&global, |c| sync::sync(c, cmd)),
        Command::Token(cmd) => client::run(&global, |c| trust::token(c, cmd)),
        Command::Cert(cmd) => client::run(&global, |c| trust::cert(c, cmd)),
        Command::Machine(cmd) => client::run(&global, |c| trust::machine(c, cmd)),
        Command::Audit(args) => client::run(&global, |c| trust::audit(c, args)),
        Command::Events(args) => client::run(&global, |c| events::run(c, args)),
        Command::Whoami => client::run(&global, trust::whoami),
        Command::Config(cmd) => trust::config(&global, cmd),
        Command::Version => version::run(global.output),
        Command::Completion(args) => completion::run(&args),
        Command::CompleteUnits(args) => return completion::units(&global, &args),
        Command::Man(args) => manual::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("flotilla: {e:#}");
            ExitCode::FAILURE
        }
    }
}
