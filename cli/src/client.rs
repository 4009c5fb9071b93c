//! What every client command shares: the API client, the runtime, and the
//! output format.

use std::future::Future;
use std::process::ExitCode;

use anyhow::Context;
use flotilla_api::client::Client;

use crate::{Global, Output};

/// A client command's view of the world.
pub struct Ctx {
    pub client: Client,
    pub output: Output,
}

/// Runs a client command on a fresh runtime.
pub fn run<F, Fut>(global: &Global, command: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = anyhow::Result<ExitCode>>,
{
    let client = Client::new(global.endpoint.iter(), global.token.as_deref())
        .context("bad --endpoint or --token")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(command(Ctx {
        client,
        output: global.output,
    }))
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).context("encoding JSON")?
    );
    Ok(())
}
