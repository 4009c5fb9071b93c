//! What every client command shares: the API client (its endpoint, CA and
//! credential from flags, variables and the client configuration file),
//! the runtime, and the output format.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use flotilla_api::client::{Client, ClientOptions};
use flotilla_api::tls::{ClientIdentity, ServerTrust};

use crate::config::{ClusterEntry, ConfigFile, default_path};
use crate::{Global, Output};

/// Where the CLI calls when nothing says otherwise.
pub const DEFAULT_ENDPOINT: &str = "https://127.0.0.1:7070";

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
    let client = connect(global)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(command(Ctx {
        client,
        output: global.output,
    }))
}

/// The API client that `global` and the client configuration describe.
pub fn connect(global: &Global) -> anyhow::Result<Client> {
    let file = match default_path() {
        Some(path) => ConfigFile::load(&path)?,
        None => ConfigFile::default(),
    };
    let entry = file
        .entry(global.cluster.as_deref())?
        .cloned()
        .unwrap_or_default();
    let endpoints = if !global.endpoint.is_empty() {
        global.endpoint.clone()
    } else if !entry.endpoint.is_empty() {
        entry.endpoint.clone()
    } else {
        vec![DEFAULT_ENDPOINT.to_owned()]
    };
    let options = ClientOptions {
        token: token(global, &entry)?,
        trust: match global.ca.as_ref().or(entry.ca.as_ref()) {
            Some(ca) => ServerTrust::CaPem(read(ca, "CA certificate")?),
            None => ServerTrust::System,
        },
        identity: identity(global, &entry)?,
    };
    Client::with_options(endpoints.iter(), options).context("bad --endpoint, --token or --ca")
}

/// The token to call with: `--token`, else `--token-file`, else the
/// configuration's. An empty one is an error, never "no credential".
fn token(global: &Global, entry: &ClusterEntry) -> anyhow::Result<Option<String>> {
    if let Some(t) = &global.token {
        if t.trim().is_empty() {
            bail!("the token given (--token or FLOTILLA_TOKEN) is empty");
        }
        return Ok(Some(t.trim().to_owned()));
    }
    if let Some(path) = &global.token_file {
        return read_token(path).map(Some);
    }
    if let Some(t) = &entry.token {
        if t.trim().is_empty() {
            bail!("the token of the client configuration is empty");
        }
        return Ok(Some(t.trim().to_owned()));
    }
    entry.token_file.as_deref().map(read_token).transpose()
}

/// Reads a token file: its one non-empty line.
pub fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        bail!("the token file {} is empty", path.display());
    }
    Ok(token.to_owned())
}

fn identity(global: &Global, entry: &ClusterEntry) -> anyhow::Result<Option<ClientIdentity>> {
    let cert: Option<PathBuf> = global.cert.clone().or_else(|| entry.cert.clone());
    let key: Option<PathBuf> = global.key.clone().or_else(|| entry.key.clone());
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(ClientIdentity {
            cert_pem: read(&cert, "client certificate")?,
            key_pem: read(&key, "client key")?,
        })),
        _ => bail!("a client certificate needs both --cert and --key"),
    }
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read the {what} {}", path.display()))
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).context("encoding JSON")?
    );
    Ok(())
}
