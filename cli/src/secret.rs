//! `flotilla secret`: make, replace, list and remove the cluster's
//! secrets. A value is read from a file or stdin and never printed.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use flotilla_proto::secret::MAX_SECRET_BYTES;

use crate::Output;
use crate::client::{Ctx, print_json};
use crate::table::print;

#[derive(Debug, clap::Subcommand)]
pub enum SecretCommand {
    /// Make a secret from a file, or from stdin. Units name it in
    /// `[Container] Secret=NAME`.
    Create {
        name: String,
        /// Read the value from this file [default: stdin].
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Replace the value of a secret that exists: the units that use
        /// it restart with the new value.
        #[arg(long)]
        replace: bool,
    },
    /// Give a secret that exists a new value (`create --replace`).
    Set {
        name: String,
        /// Read the value from this file [default: stdin].
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// List the secrets: names, sizes, versions and the units that use
    /// them; never a value.
    List,
    /// Remove a secret that no unit uses.
    Rm { name: String },
}

fn read_value(file: Option<&PathBuf>) -> anyhow::Result<Vec<u8>> {
    let limit = MAX_SECRET_BYTES as u64 + 1;
    let mut value = Vec::new();
    match file {
        Some(path) => std::fs::File::open(path)
            .and_then(|f| f.take(limit).read_to_end(&mut value))
            .with_context(|| format!("cannot read {}", path.display()))?,
        None => std::io::stdin()
            .take(limit)
            .read_to_end(&mut value)
            .context("cannot read the value from stdin")?,
    };
    Ok(value)
}

pub async fn secret(ctx: Ctx, command: SecretCommand) -> anyhow::Result<ExitCode> {
    let (name, file, replace) = match command {
        SecretCommand::Create {
            name,
            file,
            replace,
        } => (name, file, replace),
        SecretCommand::Set { name, file } => (name, file, true),
        SecretCommand::List => {
            let list = ctx.client.list_secrets().await?;
            if ctx.output == Output::Json {
                print_json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|s| {
                        vec![
                            s.name.clone(),
                            s.size.to_string(),
                            s.version.to_string(),
                            crate::trust::timestamp(s.updated_ms),
                            if s.used_by.is_empty() {
                                "-".into()
                            } else {
                                s.used_by.join(",")
                            },
                        ]
                    })
                    .collect();
                print(&["NAME", "SIZE", "VERSION", "UPDATED", "USED BY"], &rows);
            }
            return Ok(ExitCode::SUCCESS);
        }
        SecretCommand::Rm { name } => {
            let removed = ctx.client.delete_secret(&name).await?;
            if ctx.output == Output::Json {
                print_json(&removed)?;
            } else {
                eprintln!(
                    "removed secret {} (version {})",
                    removed.name, removed.version
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    let value = read_value(file.as_ref())?;
    let info = ctx.client.put_secret(&name, &value, replace).await?;
    if ctx.output == Output::Json {
        print_json(&info)?;
    } else {
        eprintln!(
            "secret {} version {} ({} bytes)",
            info.name, info.version, info.size
        );
    }
    Ok(ExitCode::SUCCESS)
}
