//! B5's reference (step 1): what systemd itself allows on the host, with
//! bare D-Bus calls and no agent, to set the agent's figures against.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flotilla_agent::systemd::{JobKind, SystemdManager};

use super::host::{Units, base_name, container_text, plain_text, rendered, spread};
use super::report::Rate;
use super::{Config, SYSTEMD_RUN_S};
use crate::hostbus::{HostBus, IN_FLIGHT, jobs_at_once, jobs_in_sequence};
use crate::report::Row;
use crate::stats::{Samples, dur};

/// What systemd itself allows on the host.
pub(super) struct Reference {
    pub(super) plain_seq: Rate,
    pub(super) plain_batch: Rate,
    pub(super) containers_seq: Option<Rate>,
    pub(super) containers_batch: Option<Rate>,
    /// A `Reload` with the plain units running, and with all of them.
    pub(super) reload_plain: Duration,
    pub(super) reload_all: Duration,
    /// What the agent does before each pass: `LoadUnit` and the unit's
    /// and service's properties (`GetAll` twice), unit after unit, for
    /// every unit running.
    pub(super) observe_all: Duration,
    pub(super) change_plain: Samples,
    pub(super) change_container: Samples,
    pub(super) reloads: Samples,
}

impl Reference {
    pub(super) fn best_plain(&self) -> f64 {
        self.plain_seq.per_s().max(self.plain_batch.per_s())
    }

    pub(super) fn best_containers(&self) -> Option<f64> {
        match (self.containers_seq, self.containers_batch) {
            (Some(a), Some(b)) => Some(a.per_s().max(b.per_s())),
            _ => None,
        }
    }

    pub(super) fn containers(&self) -> String {
        match (self.containers_seq, self.containers_batch) {
            (Some(s), Some(b)) => {
                format!(
                    "in sequence {}, concurrently {}",
                    s.describe(),
                    b.describe()
                )
            }
            _ => "none".to_owned(),
        }
    }

    pub(super) fn row(&self, config: &Config) -> Row {
        let mut change_plain = self.change_plain.clone();
        let mut change_container = self.change_container.clone();
        let mut reloads = self.reloads.clone();
        Row {
            id: "B5",
            case: format!(
                "reference: bare D-Bus StartUnit on the same host, {} plain + {} container units",
                config.plain, config.containers
            ),
            figure: format!(
                "new unit files started without a daemon-reload (systemd loads them on StartUnit): plain in sequence {}, concurrently {}; containers {}; a daemon-reload with {} plain units running {}, with all {} {}; reading every unit's state as the agent's pass does (LoadUnit + 2 GetAll each, one unit after the other) {} for {}; one change done bare (write, Reload, RestartUnit) with all running: plain p50 {} max {}, container p50 {} max {} (the Reload alone p50 {})",
                self.plain_seq.describe(),
                self.plain_batch.describe(),
                self.containers(),
                config.plain,
                dur(self.reload_plain),
                config.plain + config.containers,
                dur(self.reload_all),
                dur(self.observe_all),
                config.plain + config.containers,
                dur(change_plain.percentile(50.0)),
                dur(change_plain.max()),
                dur(change_container.percentile(50.0)),
                dur(change_container.max()),
                dur(reloads.percentile(50.0)),
            ),
            anchor: "systemd-run ~22 ms per transient service (45/s)".to_owned(),
            goal: "reference for the rows below".to_owned(),
            ratio: format!(
                "plain, best of the two: {:.1}x systemd-run",
                self.best_plain() * SYSTEMD_RUN_S
            ),
        }
    }
}

pub(super) async fn reference(
    config: &Config,
    bus: &HostBus,
    units: &Units,
) -> anyhow::Result<Reference> {
    let plain: Vec<String> = units.plain.iter().map(|n| base_name(n)).collect();
    let containers: Vec<String> = units.containers.iter().map(|n| base_name(n)).collect();
    let all: Vec<String> = plain.iter().chain(&containers).cloned().collect();
    let systemd = bus.jobs().await?;
    let result = reference_on(config, bus, &systemd, &plain, &containers).await;
    // Whatever happened: nothing of the reference stays for the agent.
    let cleanup = async {
        jobs_at_once(&systemd, JobKind::Stop, &all).await?;
        for name in &all {
            bus.remove_unit(name)?;
        }
        systemd.reload().await?;
        anyhow::Ok(())
    }
    .await;
    drop(systemd);
    let reference = result?;
    cleanup.context("cannot remove the reference's units")?;
    let left = bus.active(&["b5base-*"]).await?;
    if !left.is_empty() {
        bail!(
            "{} reference units still run after their removal",
            left.len()
        );
    }
    Ok(reference)
}

pub(super) async fn reference_on(
    config: &Config,
    bus: &HostBus,
    systemd: &Arc<flotilla_agent::systemd::DbusSystemd>,
    plain: &[String],
    containers: &[String],
) -> anyhow::Result<Reference> {
    // New unit files need no daemon-reload: systemd reads a unit's file
    // when the unit is first asked for (and again, if it was not found,
    // once its directory changed).
    for (i, name) in plain.iter().enumerate() {
        bus.write_unit(name, &plain_text(i, None))?;
    }
    let plain_seq = Rate {
        units: plain.len(),
        took: jobs_in_sequence(systemd, JobKind::Start, plain).await?,
    };
    println!(
        "  reference: {} plain units started one after the other over D-Bus: {}",
        plain.len(),
        plain_seq.describe()
    );
    let t = Instant::now();
    systemd.reload().await?;
    let reload_plain = t.elapsed();
    jobs_at_once(systemd, JobKind::Stop, plain).await?;
    let plain_batch = Rate {
        units: plain.len(),
        took: jobs_at_once(systemd, JobKind::Start, plain).await?,
    };
    println!(
        "  reference: the same started concurrently ({IN_FLIGHT} jobs in flight at most): {} (a daemon-reload with them running: {})",
        plain_batch.describe(),
        dur(reload_plain)
    );

    for (i, name) in containers.iter().enumerate() {
        bus.write_unit(name, &rendered(name, &container_text(i, None))?)?;
    }
    let (mut containers_seq, mut containers_batch) = (None, None);
    if !containers.is_empty() {
        let seq = Rate {
            units: containers.len(),
            took: jobs_in_sequence(systemd, JobKind::Start, containers).await?,
        };
        println!(
            "  reference: {} container units started one after the other: {}",
            containers.len(),
            seq.describe()
        );
        jobs_at_once(systemd, JobKind::Stop, containers).await?;
        let batch = Rate {
            units: containers.len(),
            took: jobs_at_once(systemd, JobKind::Start, containers).await?,
        };
        println!(
            "  reference: the same started concurrently: {}",
            batch.describe(),
        );
        containers_seq = Some(seq);
        containers_batch = Some(batch);
    }
    let t = Instant::now();
    systemd.reload().await?;
    let reload_all = t.elapsed();
    let t = Instant::now();
    for name in plain.iter().chain(containers) {
        systemd.unit(name).await?;
    }
    let observe_all = t.elapsed();
    println!(
        "  reference: with all {} running, a daemon-reload takes {}, and reading every unit's state as the agent's pass does {}",
        plain.len() + containers.len(),
        dur(reload_all),
        dur(observe_all)
    );

    // One change at a time, bare, with everything running.
    let mut reloads = Samples::default();
    let mut change_plain = Samples::default();
    let mut change_container = Samples::default();
    let mut k = 0;
    for (n, names, samples, container) in [
        (config.changes, plain, &mut change_plain, false),
        (
            config.container_changes,
            containers,
            &mut change_container,
            true,
        ),
    ] {
        for (i, name) in spread(names, n) {
            k += 1;
            let name = &name;
            let content = if container {
                rendered(name, &container_text(i, Some(k)))?
            } else {
                plain_text(i, Some(k))
            };
            let t = Instant::now();
            bus.write_unit(name, &content)?;
            let r = Instant::now();
            systemd.reload().await?;
            reloads.push(r.elapsed());
            let result = systemd.job(JobKind::Restart, name).await?;
            if !result.is_success() {
                bail!("restarting {name} ended with {}", result.as_str());
            }
            samples.push(t.elapsed());
        }
    }
    println!(
        "  reference: one change done bare (write, Reload, RestartUnit): plain p50 {}, container p50 {}; Reload alone p50 {}",
        dur(change_plain.percentile(50.0)),
        dur(change_container.percentile(50.0)),
        dur(reloads.percentile(50.0))
    );
    Ok(Reference {
        plain_seq,
        plain_batch,
        containers_seq,
        containers_batch,
        reload_plain,
        reload_all,
        observe_all,
        change_plain,
        change_container,
        reloads,
    })
}
