//! `flotilla shim`: the processes of a container unit, run by systemd from
//! the unit flotilla renders (`ExecStart=`, `ExecStop=`, `ExecStopPost=`,
//! `ExecReload=`),
//! not by hand. The work is in `flotilla_agent::container::shim`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use flotilla_agent::container::object;
use flotilla_agent::container::reload;
use flotilla_agent::container::shim::{self, SHIM_FAILURE, UnitOptions, WatchdogMode};
use flotilla_proto::UnitName;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the unit's container until it exits (the unit's ExecStart=);
    /// exits with the container's exit status.
    Run {
        #[command(flatten)]
        unit: Unit,
        /// What the unit's WatchdogSec= watches: the container's health
        /// (the user's watchdog) or the shim's life (flotilla's own).
        #[arg(long, value_enum, default_value_t = Watch::Health)]
        watchdog: Watch,
    },
    /// Stop the unit's container through its running shim (ExecStop=).
    Stop {
        #[command(flatten)]
        unit: Unit,
        /// The container's name.
        #[arg(long)]
        container: String,
    },
    /// Run ReloadCmd= in the unit's container, or send it ReloadSignal=
    /// (ExecReload=); exits with the command's status.
    Reload {
        #[command(flatten)]
        unit: Unit,
        /// The container's name.
        #[arg(long)]
        container: String,
    },
    /// Create the Docker network of a .network unit unless it exists
    /// (its ExecStart=), or remove it (--remove, its ExecStopPost= with
    /// NetworkDeleteOnStop=yes).
    Network {
        #[command(flatten)]
        unit: Unit,
        /// Remove the network, if flotilla created it for this unit.
        #[arg(long)]
        remove: bool,
    },
    /// Create the Docker volume of a .volume unit unless it exists (its
    /// ExecStart=).
    Volume {
        #[command(flatten)]
        unit: Unit,
    },
    /// Remove the unit's container if it is still there (ExecStopPost=).
    Cleanup {
        #[command(flatten)]
        unit: Unit,
        /// The container's name.
        #[arg(long)]
        container: String,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Watch {
    Health,
    Liveness,
}

#[derive(Debug, clap::Args)]
struct Unit {
    /// The unit's name, such as web.service.
    #[arg(long)]
    unit: String,
    /// The rendered unit file; default /run/systemd/system/UNIT (or its
    /// template's, for an instance).
    #[arg(long)]
    unit_file: Option<PathBuf>,
}

impl Unit {
    fn object(&self, kind: &str, remove: bool) -> anyhow::Result<()> {
        let unit = UnitName::parse(&self.unit)
            .with_context(|| format!("bad unit name {:?}", self.unit))?;
        let path = object::unit_path(Path::new(shim::UNIT_DIR), &unit, self.unit_file.as_ref());
        Ok(object::run(&unit, &path, kind, remove)?)
    }

    fn options(&self) -> anyhow::Result<UnitOptions> {
        Ok(UnitOptions {
            watchdog: WatchdogMode::Health,
            unit: UnitName::parse(&self.unit)
                .with_context(|| format!("bad unit name {:?}", self.unit))?,
            unit_file: self.unit_file.clone(),
        })
    }
}

pub fn run(args: Args) -> ExitCode {
    crate::logging::init();
    let result = match &args.command {
        Command::Run { unit, watchdog } => unit.options().and_then(|o| {
            let o = UnitOptions {
                watchdog: match watchdog {
                    Watch::Health => WatchdogMode::Health,
                    Watch::Liveness => WatchdogMode::Liveness,
                },
                ..o
            };
            shim::run(&o).context("flotilla shim run")
        }),
        Command::Stop { unit, container } => unit
            .options()
            .and_then(|o| shim::stop(&o, container).context("flotilla shim stop"))
            .map(|()| 0),
        Command::Reload { unit, container } => unit
            .options()
            .and_then(|o| reload::reload(&o, container).context("flotilla shim reload")),
        Command::Network { unit, remove } => unit
            .object("network", *remove)
            .context("flotilla shim network")
            .map(|()| 0),
        Command::Volume { unit } => unit
            .object("volume", false)
            .context("flotilla shim volume")
            .map(|()| 0),
        Command::Cleanup { unit, container } => unit
            .options()
            .and_then(|o| shim::cleanup(&o, container).context("flotilla shim cleanup"))
            .map(|()| 0),
    };
    match result {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(SHIM_FAILURE)
        }
    }
}
