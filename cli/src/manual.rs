//! `flotilla man DIR`: the manual pages, rendered from the same clap
//! definitions as `--help`: `flotilla.1` and one `flotilla-COMMAND.1` per
//! command (and `flotilla-COMMAND-SUBCOMMAND.1` below those that have
//! them). The package ships them in /usr/share/man/man1.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

use crate::version;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The directory to write the pages to (made if missing).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let mut cmd = crate::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let written = write_pages(cmd, &args.dir)?;
    println!("{written} manual pages in {}", args.dir.display());
    Ok(ExitCode::SUCCESS)
}

/// Writes the page of `cmd` and those of its visible subcommands; returns
/// how many were written.
fn write_pages(cmd: clap::Command, dir: &Path) -> anyhow::Result<usize> {
    let mut written = 0;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        written += write_pages(sub.clone(), dir)?;
    }
    let man = clap_mangen::Man::new(cmd)
        .date(version::BUILD_DATE)
        .source(format!("flotilla {}", version::VERSION))
        .manual("flotilla manual");
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page)
        .with_context(|| format!("cannot render {}", path.display()))?;
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(written + 1)
}
