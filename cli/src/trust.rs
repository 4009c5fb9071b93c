//! `flotilla token`, `cert`, `machine`, `audit`, `whoami` and `config`:
//! credentials, machines, the audit log and the client configuration.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use flotilla_api::client::PageQuery;
use flotilla_api::tls::make_signing_request;
use flotilla_proto::MachineId;
use flotilla_proto::duration::parse_timespan;
use flotilla_proto::trust::{CertCreate, CredentialInfo, Role, TokenCreate};

use crate::client::{Ctx, print_json};
use crate::config::{ClusterEntry, ConfigFile, default_path, set_cluster};
use crate::table::print;
use crate::{Global, Output};

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Make a token. Its secret is printed once: keep it.
    Create {
        /// viewer, operator, admin, join (for machines to join with), or
        /// metrics (for Prometheus: reads /metrics only).
        #[arg(long)]
        role: Role,
        /// A name for people: who or what holds it.
        #[arg(long)]
        name: Option<String>,
        /// How long it works (e.g. 1h, 30d) [default: forever; join
        /// tokens: 1h].
        #[arg(long, value_name = "TIMESPAN", value_parser = parse_span)]
        ttl: Option<Duration>,
        /// For a join token: how many machines may join with it.
        #[arg(long, value_name = "N")]
        uses: Option<u32>,
    },
    /// List every credential (tokens, client certificates, machines).
    List,
    /// Revoke a token or a client certificate: refused from now on.
    Revoke {
        /// The credential's id (flotilla token list).
        id: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum CertCommand {
    /// Make a key here, have the cluster CA sign a certificate for it, and
    /// write both (and the CA) to a directory: `client.crt`, `client.key`
    /// (0600) and `ca.crt`. Use them with --cert, --key and --ca, or with
    /// fleetctl's --cert-file, --key-file and --ca-file.
    Create {
        /// viewer, operator, admin, or metrics (for Prometheus).
        #[arg(long)]
        role: Role,
        /// Who holds it (the certificate's common name).
        #[arg(long)]
        name: String,
        /// Where to write the files (made if absent).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// How long it is valid [default: 1 year].
        #[arg(long, value_name = "TIMESPAN", value_parser = parse_span)]
        ttl: Option<Duration>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum MachineCommand {
    /// Remove a machine: its units are placed elsewhere, its credential is
    /// revoked, and its agent is refused from now on. To let it join again,
    /// delete its agent's credential file and give it a join token.
    Remove {
        /// The machine's id (flotilla list-machines).
        id: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Only entries younger than this (e.g. 1h, 7d).
    #[arg(long, value_name = "TIMESPAN", value_parser = parse_span)]
    since: Option<Duration>,
}

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Add or replace a cluster in the client configuration.
    SetCluster {
        /// A name for the cluster.
        name: String,
        /// Its servers, comma-separated.
        #[arg(
            long,
            value_delimiter = ',',
            required = true,
            value_name = "URL[,URL...]"
        )]
        endpoint: Vec<String>,
        /// Its CA certificate (PEM file).
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        /// A file holding the token to call with.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// A client certificate and its key (PEM files).
        #[arg(long, value_name = "FILE", requires = "key")]
        cert: Option<PathBuf>,
        #[arg(long, value_name = "FILE", requires = "cert")]
        key: Option<PathBuf>,
        /// Make it the current cluster.
        #[arg(long = "use")]
        current: bool,
    },
    /// Make a cluster the current one.
    Use { name: String },
    /// Show the client configuration (tokens written in it are hidden).
    View,
}

fn parse_span(s: &str) -> Result<Duration, String> {
    parse_timespan(s).map_err(|e| e.to_string())
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub async fn token(ctx: Ctx, command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create {
            role,
            name,
            ttl,
            uses,
        } => {
            let name = name.unwrap_or_else(|| format!("{role} token"));
            let created = ctx
                .client
                .create_token(&TokenCreate {
                    role,
                    name,
                    ttl_ms: ttl.map(ms),
                    uses,
                })
                .await?;
            if ctx.output == Output::Json {
                print_json(&created)?;
            } else {
                describe(&created.credential);
                println!("token:      {}", created.token);
                if let Some(join) = &created.join {
                    println!("join:       {join}");
                    eprintln!(
                        "give the join line to `flotilla agent --join-token` (or `join-token:` in its configuration): it also pins the cluster CA"
                    );
                }
                eprintln!("the token is shown only now: keep it secret");
            }
        }
        TokenCommand::List => {
            let list = ctx.client.list_credentials().await?;
            if ctx.output == Output::Json {
                print_json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|c| {
                        vec![
                            c.id.clone(),
                            c.name.clone(),
                            c.role.to_string(),
                            format!("{:?}", c.kind).to_lowercase(),
                            c.machine_id
                                .as_ref()
                                .map_or("-".into(), ToString::to_string),
                            timestamp(c.created_ms),
                            expiry(c),
                            c.uses_left.map_or("-".into(), |n| n.to_string()),
                            c.created_by.clone(),
                        ]
                    })
                    .collect();
                print(
                    &[
                        "ID",
                        "NAME",
                        "ROLE",
                        "KIND",
                        "MACHINE",
                        "CREATED",
                        "EXPIRES",
                        "USES",
                        "CREATED BY",
                    ],
                    &rows,
                );
            }
        }
        TokenCommand::Revoke { id } => {
            let revoked = ctx.client.revoke_credential(&id).await?;
            if ctx.output == Output::Json {
                print_json(&revoked)?;
            } else {
                println!(
                    "revoked {} ({}, {})",
                    revoked.id, revoked.name, revoked.role
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(c: &CredentialInfo) {
    println!("id:         {}", c.id);
    println!("name:       {}", c.name);
    println!("role:       {}", c.role);
    println!("expires:    {}", expiry(c));
    if let Some(n) = c.uses_left {
        println!("uses:       {n}");
    }
}

fn expiry(c: &CredentialInfo) -> String {
    match c.expires_ms {
        None => "never".into(),
        Some(at) if at <= flotilla_scheduler::trust::now_ms() => {
            format!("{} (expired)", timestamp(at))
        }
        Some(at) => timestamp(at),
    }
}

pub async fn cert(ctx: Ctx, command: CertCommand) -> anyhow::Result<ExitCode> {
    let CertCommand::Create {
        role,
        name,
        out,
        ttl,
    } = command;
    let (key_pem, csr_pem) = make_signing_request(&name)?;
    let issued = ctx
        .client
        .create_certificate(&CertCreate {
            role,
            name,
            csr_pem,
            ttl_ms: ttl.map(ms),
        })
        .await?;
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    write(&out.join("client.key"), &key_pem, 0o600)?;
    write(&out.join("client.crt"), &issued.certificate_pem, 0o644)?;
    write(&out.join("ca.crt"), &issued.ca_pem, 0o644)?;
    if ctx.output == Output::Json {
        print_json(&issued.credential)?;
    } else {
        describe(&issued.credential);
        println!(
            "wrote:      {0}/client.crt, {0}/client.key, {0}/ca.crt",
            out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn write(path: &std::path::Path, text: &str, mode: u32) -> anyhow::Result<()> {
    flotilla_api::files::write_atomically(path, text.as_bytes(), mode)
        .with_context(|| format!("cannot write {}", path.display()))
}

pub async fn machine(ctx: Ctx, command: MachineCommand) -> anyhow::Result<ExitCode> {
    let MachineCommand::Remove { id } = command;
    let id = MachineId::parse(&id).map_err(anyhow::Error::msg)?;
    ctx.client.remove_machine(&id).await?;
    if ctx.output == Output::Text {
        println!("removed machine {id}: its units move elsewhere, its agent is refused");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn audit(ctx: Ctx, args: AuditArgs) -> anyhow::Result<ExitCode> {
    let since = args
        .since
        .map(|d| flotilla_scheduler::trust::now_ms().saturating_sub(ms(d)));
    let mut entries = Vec::new();
    let mut page = PageQuery::default();
    loop {
        let got = ctx.client.audit(since, &page).await?;
        entries.extend(got.entries);
        match got.next_page_token {
            Some(t) if page.token.as_ref() != Some(&t) => page.token = Some(t),
            _ => break,
        }
    }
    if ctx.output == Output::Json {
        print_json(&entries)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                timestamp(e.at_ms),
                format!("{} ({})", e.actor_name, e.actor_id),
                e.role.to_string(),
                e.action.clone(),
                e.status.to_string(),
                e.peer.clone(),
            ]
        })
        .collect();
    print(&["TIME", "WHO", "ROLE", "ACTION", "STATUS", "FROM"], &rows);
    Ok(ExitCode::SUCCESS)
}

pub async fn whoami(ctx: Ctx) -> anyhow::Result<ExitCode> {
    let me = ctx.client.whoami().await?;
    if ctx.output == Output::Json {
        print_json(&me)?;
    } else {
        match &me.machine_id {
            Some(m) => println!("{} ({}), role {}, machine {m}", me.name, me.id, me.role),
            None => println!("{} ({}), role {}", me.name, me.id, me.role),
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn config(global: &Global, command: ConfigCommand) -> anyhow::Result<ExitCode> {
    let path = default_path().context(
        "cannot tell where the client configuration is: set HOME or FLOTILLA_CLIENT_CONFIG",
    )?;
    match command {
        ConfigCommand::SetCluster {
            name,
            endpoint,
            ca,
            token_file,
            cert,
            key,
            current,
        } => {
            let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
            let entry = ClusterEntry {
                endpoint,
                ca: ca.map(absolute),
                token: None,
                token_file: token_file.map(absolute),
                cert: cert.map(absolute),
                key: key.map(absolute),
            };
            let written = set_cluster(Some(&path), &name, entry, current)?;
            eprintln!("cluster {name} written to {}", written.display());
        }
        ConfigCommand::Use { name } => {
            let mut file = ConfigFile::load(&path)?;
            if !file.clusters.contains_key(&name) {
                bail!("no cluster {name:?} in {}", path.display());
            }
            file.current = Some(name);
            file.save(&path)?;
        }
        ConfigCommand::View => {
            let mut file = ConfigFile::load(&path)?;
            for entry in file.clusters.values_mut() {
                if entry.token.is_some() {
                    entry.token = Some("<hidden>".into());
                }
            }
            if global.output == Output::Json {
                print_json(&file)?;
            } else {
                println!("# {}", path.display());
                print!("{}", serde_norway::to_string(&file).context("encoding")?);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `2026-12-05 21:03:04Z` of milliseconds since the Unix epoch.
pub fn timestamp(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX);
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00Z");
        assert_eq!(timestamp(1_796_504_584_000), "2026-12-05 21:03:04Z");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29 00:00:00Z");
    }
}
