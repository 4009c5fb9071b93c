//! `flotilla sync`: git sources the leader follows (docs/git-sync.md):
//! add (or change) one, show what each last did, pause, resume, remove.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use flotilla_proto::duration::format_timespan;
use flotilla_proto::sync::{DriftMode, MAX_SOURCE_TRUST_LEN, SourceInfo, SourcePut};

use crate::Output;
use crate::client::{Ctx, print_json};
use crate::table::print;
use crate::trust::timestamp;

#[derive(Debug, clap::Subcommand)]
pub enum SyncCommand {
    /// Make the leader follow a branch of a repository (https://, ssh://,
    /// git:// or file://), applying each new commit as `flotilla apply`
    /// would; or change a source that exists.
    Add {
        name: String,
        /// The repository's address: https://HOST/PATH,
        /// ssh://USER@HOST/PATH (or ssh://USER@HOST:PORT/PATH),
        /// git://HOST/PATH (or git://HOST:PORT/PATH) or file:///PATH.
        #[arg(long, value_name = "URL")]
        repo: String,
        /// The branch followed [default: main].
        #[arg(long, value_name = "BRANCH")]
        branch: Option<String>,
        /// The directory of the repository that holds the units [default:
        /// the top].
        #[arg(long, value_name = "DIR")]
        path: Option<String>,
        /// How often the branch is fetched (a systemd time span: 30s,
        /// 5min) [default: 1min; at least 10s].
        #[arg(long, value_name = "SPAN")]
        interval: Option<String>,
        /// Destroy units of this source that a new commit no longer names
        /// (never units it does not own).
        #[arg(long)]
        prune: bool,
        /// A unit of this source changed by hand: put it back at the next
        /// sync (revert), or leave it and report it (warn).
        #[arg(long, value_name = "revert|warn", default_value = "revert")]
        drift: DriftMode,
        /// The cluster secret the fetch authenticates with (flotilla
        /// secret create): USER:PASSWORD (or USER:TOKEN) for https://, the
        /// deploy key (an OpenSSH private key) for ssh://.
        #[arg(long, value_name = "SECRET")]
        credentials: Option<String>,
        /// https:// only: trust the CA certificates (PEM) in FILE for the
        /// repository's server, instead of the system's.
        #[arg(long, value_name = "FILE")]
        ca_file: Option<PathBuf>,
        /// ssh://, needed there: the server's host keys, in OpenSSH's
        /// known_hosts form (what ssh-keyscan prints; check them first).
        #[arg(long, value_name = "FILE")]
        known_hosts_file: Option<PathBuf>,
        /// Apply only commits signed (git's SSH signatures) by one of the
        /// SSH public keys in FILE, one per line.
        #[arg(long, value_name = "FILE")]
        signers_file: Option<PathBuf>,
    },
    /// Show each source (or one): the last fetched and applied commits,
    /// what changed, drift and the last error.
    Status { name: Option<String> },
    /// Stop following a source until it is resumed.
    Pause { name: String },
    /// Follow a paused source again.
    Resume { name: String },
    /// Remove a source; the units it made stay.
    Remove { name: String },
}

/// A CA bundle or known_hosts file, read whole up to the server's limit
/// (which checks the rest).
fn read_trust(path: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_SOURCE_TRUST_LEN as u64 + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if text.len() > MAX_SOURCE_TRUST_LEN {
        anyhow::bail!("{}: over {MAX_SOURCE_TRUST_LEN} bytes", path.display());
    }
    Ok(text)
}

fn short(commit: &str) -> &str {
    commit.get(..7).unwrap_or(commit)
}

fn commit_at(c: Option<&flotilla_proto::sync::CommitAt>) -> String {
    c.map_or("-".to_owned(), |c| {
        format!("{} at {}", short(&c.commit), timestamp(c.at_ms))
    })
}

/// One source, as `sync status NAME` prints it.
fn describe(info: &SourceInfo) {
    let (s, st) = (&info.source, &info.status);
    println!("source:       {}", s.name);
    println!("repository:   {} branch {}", s.repo, s.branch);
    if let Some(c) = &s.credentials {
        println!("credentials:  secret {c}");
    }
    if s.ca.is_some() {
        println!("trust:        its own CA");
    }
    let count = |text: &str| {
        text.lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .count()
    };
    if let Some(hosts) = &s.known_hosts {
        println!("host keys:    {}", count(hosts));
    }
    if let Some(keys) = &s.signers {
        println!("signed by:    one of {} keys", count(keys));
    }
    if !s.path.is_empty() {
        println!("path:         {}", s.path);
    }
    println!(
        "interval:     {}{}{}",
        format_timespan(s.interval),
        if s.prune { ", prune" } else { "" },
        format_args!(", drift {}", s.drift)
    );
    println!(
        "state:        {}",
        if s.paused { "paused" } else { "following" }
    );
    println!("fetched:      {}", commit_at(st.last_fetched.as_ref()));
    println!("applied:      {}", commit_at(st.last_applied.as_ref()));
    println!("owned units:  {}", st.owned.len());
    if let Some(c) = &st.last_changes {
        println!("last changes: {c}");
        for (sign, units) in [
            ("+", &c.created),
            ("~", &c.replaced),
            ("~", &c.state_changed),
            ("-", &c.destroyed),
        ] {
            for u in units {
                println!("  {sign} {u}");
            }
        }
    }
    for d in &st.drifted {
        println!("drifted:      {} ({}), left as it is", d.unit, d.how);
    }
    if let Some(d) = &st.last_drift {
        let units: Vec<String> = d
            .units
            .iter()
            .map(|u| format!("{} ({})", u.unit, u.how))
            .collect();
        println!(
            "last drift:   {} at {}{}",
            units.join(", "),
            timestamp(d.at_ms),
            if d.reverted { ", put back" } else { "" }
        );
    }
    if let Some(e) = &st.last_error {
        match &e.commit {
            Some(c) => println!(
                "error:        commit {} refused at {}:",
                short(c),
                timestamp(e.at_ms)
            ),
            None => println!("error:        at {}:", timestamp(e.at_ms)),
        }
        for line in e.message.lines() {
            println!("  {line}");
        }
    }
}

pub async fn sync(ctx: Ctx, command: SyncCommand) -> anyhow::Result<ExitCode> {
    match command {
        SyncCommand::Add {
            name,
            repo,
            branch,
            path,
            interval,
            prune,
            drift,
            credentials,
            ca_file,
            known_hosts_file,
            signers_file,
        } => {
            let put = SourcePut {
                repo,
                branch,
                path,
                interval,
                prune,
                drift,
                credentials,
                ca: ca_file.as_deref().map(read_trust).transpose()?,
                known_hosts: known_hosts_file.as_deref().map(read_trust).transpose()?,
                signers: signers_file.as_deref().map(read_trust).transpose()?,
            };
            let info = ctx.client.put_sync_source(&name, &put).await?;
            if ctx.output == Output::Json {
                print_json(&info)?;
            } else {
                eprintln!(
                    "following {} branch {} as source {} every {}",
                    info.source.repo,
                    info.source.branch,
                    info.source.name,
                    format_timespan(info.source.interval)
                );
            }
        }
        SyncCommand::Status { name: Some(name) } => {
            let info = ctx.client.get_sync_source(&name).await?;
            if ctx.output == Output::Json {
                print_json(&info)?;
            } else {
                describe(&info);
            }
        }
        SyncCommand::Status { name: None } => {
            let list = ctx.client.list_sync_sources().await?;
            if ctx.output == Output::Json {
                print_json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|i| {
                        let st = &i.status;
                        vec![
                            i.source.name.clone(),
                            if i.source.paused {
                                "paused"
                            } else {
                                "following"
                            }
                            .into(),
                            st.last_fetched
                                .as_ref()
                                .map_or("-".into(), |c| short(&c.commit).into()),
                            st.last_applied
                                .as_ref()
                                .map_or("-".into(), |c| short(&c.commit).into()),
                            st.last_applied
                                .as_ref()
                                .map_or("-".into(), |c| timestamp(c.at_ms)),
                            st.last_changes.as_ref().map_or("-".into(), |c| {
                                format!(
                                    "+{} ~{} -{}",
                                    c.created.len(),
                                    c.replaced.len() + c.state_changed.len(),
                                    c.destroyed.len()
                                )
                            }),
                            st.drifted.len().to_string(),
                            st.last_error
                                .as_ref()
                                .and_then(|e| e.message.lines().next())
                                .unwrap_or("-")
                                .to_owned(),
                        ]
                    })
                    .collect();
                print(
                    &[
                        "NAME", "STATE", "FETCHED", "APPLIED", "WHEN", "CHANGES", "DRIFTED",
                        "ERROR",
                    ],
                    &rows,
                );
            }
        }
        SyncCommand::Pause { name } => {
            let info = ctx.client.pause_sync_source(&name, true).await?;
            print_or(&ctx, &info, format!("source {name} paused"))?;
        }
        SyncCommand::Resume { name } => {
            let info = ctx.client.pause_sync_source(&name, false).await?;
            print_or(&ctx, &info, format!("source {name} followed again"))?;
        }
        SyncCommand::Remove { name } => {
            let info = ctx.client.delete_sync_source(&name).await?;
            print_or(
                &ctx,
                &info,
                format!(
                    "removed source {name}; its {} units stay",
                    info.status.owned.len()
                ),
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_or(ctx: &Ctx, info: &SourceInfo, text: String) -> anyhow::Result<()> {
    if ctx.output == Output::Json {
        print_json(info)
    } else {
        eprintln!("{text}");
        Ok(())
    }
}
