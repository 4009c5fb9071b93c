//! B5's measured scenarios with the agent (steps 2 to 5): the cold starts
//! and the changes, with the host and the server watched until they
//! converge.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow, bail};
use flotilla_agent::systemd::{JobKind, SystemdManager};
use flotilla_api::client::{Client, StateQuery};
use flotilla_proto::UnitName;
use flotilla_proto::wire::UnitPut;
use flotilla_testbed::Host;

use super::host::{Units, container_text, plain_text, spread, submit};
use super::reference::Reference;
use super::report::{Changes, NewUnits, Rate, Timeline, agent_journal, cold_row, per_second};
use super::{
    AGENT_PATTERN, AGENT_RECORD, CHANGE_LIMIT, CHANGE_POLL, CONVERGE_LIMIT, Config, HOST_POLL,
    SERVER_POLL, SETTLE, STALL_LIMIT,
};
use crate::agent_host::{self, start_agent, stop_agent};
use crate::hostbus::{HostBus, jobs_at_once};
use crate::procs::ServerProc;
use crate::report::Row;
use crate::stats::{Samples, dur};

/// Everything the agent's phases share.
pub(super) struct AgentRun<'a> {
    pub(super) config: &'a Config,
    pub(super) flotilla: &'a Path,
    pub(super) work: &'a Path,
    pub(super) host: &'a Host,
    pub(super) bus: &'a HostBus,
    pub(super) units: &'a Units,
    pub(super) reference: &'a Reference,
}

/// How one cold start went, from the agent's start.
pub(super) struct Converged {
    /// When each unit was first seen active on the host.
    pub(super) active: HashMap<String, Duration>,
    /// When `systemd-run` returned: the agent said `READY=1`, which it
    /// does once its machine is registered.
    pub(super) ready: Duration,
    /// When the API first showed every unit active.
    pub(super) server_all: Option<Duration>,
    pub(super) timeline: Timeline,
}

impl Converged {
    /// When the last of `names` became active.
    pub(super) fn last(&self, names: &[String]) -> Duration {
        names
            .iter()
            .filter_map(|n| self.active.get(n))
            .max()
            .copied()
            .unwrap_or_default()
    }

    /// When the `p`-th percent of `names` were active.
    pub(super) fn percentile(&self, names: &[String], p: f64) -> Duration {
        let mut s = Samples::default();
        for d in names.iter().filter_map(|n| self.active.get(n)) {
            s.push(*d);
        }
        s.percentile(p)
    }

    pub(super) fn describe(&self, names: &[String]) -> String {
        format!(
            "agent ready (registered) +{}, first unit active +{}, half +{}, all +{}; the API showed all active {}",
            dur(self.ready),
            dur(self.percentile(names, 0.0)),
            dur(self.percentile(names, 50.0)),
            dur(self.last(names)),
            self.server_all.map_or_else(
                || "never (within 30 s)".to_owned(),
                |d| format!("+{}", dur(d))
            )
        )
    }
}

impl AgentRun<'_> {
    pub(super) async fn run(&self, rows: &mut Vec<Row>) -> anyhow::Result<()> {
        let units = self.units;
        let reference = self.reference;
        let best_plain = reference.best_plain();

        // Plain units from cold.
        let (server, client) = self.start_server("a").await?;
        self.join_cluster(&server).await?;
        submit(&client, &self.texts(&units.plain, false)).await?;
        let cold = self.cold(&client, &server.endpoint, &units.plain).await?;
        let rate = Rate {
            units: units.plain.len(),
            took: cold.last(&units.plain),
        };
        println!(
            "  cold start, {} plain units: {} ({})",
            units.plain.len(),
            rate.describe(),
            cold.describe(&units.plain)
        );
        println!("  agent: {}", cold.timeline.describe());
        rows.push(cold_row(
            format!(
                "cold start: {} plain units on an empty host, submitted while no agent ran",
                units.plain.len()
            ),
            rate,
            &cold.describe(&units.plain),
            &cold.timeline,
            format!(
                "plain in sequence {}, concurrently {}",
                per_second(reference.plain_seq.per_s()),
                per_second(reference.plain_batch.per_s())
            ),
            best_plain,
        ));

        // Container units, the agent started again.
        if !units.containers.is_empty() {
            stop_agent(self.host);
            submit(&client, &self.texts(&units.containers, true)).await?;
            let cold = self
                .cold(&client, &server.endpoint, &units.containers)
                .await?;
            let rate = Rate {
                units: units.containers.len(),
                took: cold.last(&units.containers),
            };
            println!(
                "  cold start, {} container units ({} plain running): {} ({})",
                units.containers.len(),
                units.plain.len(),
                rate.describe(),
                cold.describe(&units.containers)
            );
            println!("  agent: {}", cold.timeline.describe());
            if let (Some(s), Some(b), Some(best)) = (
                reference.containers_seq,
                reference.containers_batch,
                reference.best_containers(),
            ) {
                rows.push(cold_row(
                    format!(
                        "cold start: {} container units submitted while the agent was stopped ({} plain units running), then the agent started",
                        units.containers.len(),
                        units.plain.len()
                    ),
                    rate,
                    &cold.describe(&units.containers),
                    &cold.timeline,
                    format!(
                        "containers in sequence {}, concurrently {}",
                        per_second(s.per_s()),
                        per_second(b.per_s())
                    ),
                    best,
                ));
            }
        }

        // Everything together, from an empty host and a fresh server.
        let all = units.all();
        self.empty_host(&all).await?;
        drop(server);
        let (server, client) = self.start_server("b").await?;
        self.join_cluster(&server).await?;
        let mut texts = self.texts(&units.plain, false);
        texts.extend(self.texts(&units.containers, true));
        submit(&client, &texts).await?;
        let cold = self.cold(&client, &server.endpoint, &all).await?;
        let rate = Rate {
            units: all.len(),
            took: cold.last(&all),
        };
        let split = format!(
            "plain all active +{}, containers all active +{}",
            dur(cold.last(&units.plain)),
            dur(cold.last(&units.containers))
        );
        println!(
            "  cold start, {} plain + {} container units together: {} ({split}; {})",
            units.plain.len(),
            units.containers.len(),
            rate.describe(),
            cold.describe(&all)
        );
        println!("  agent: {}", cold.timeline.describe());
        // systemd's own time for the same units: each kind at its best
        // rate, one after the other.
        let bare_s = units.plain.len() as f64 / best_plain
            + reference
                .best_containers()
                .map_or(0.0, |r| units.containers.len() as f64 / r);
        rows.push(cold_row(
            format!(
                "cold start: {} plain + {} container units together on an empty host, submitted while no agent ran",
                units.plain.len(),
                units.containers.len()
            ),
            rate,
            &format!("{split}; {}", cold.describe(&all)),
            &cold.timeline,
            format!(
                "the same units at the best bare rate of each kind: {}",
                dur(Duration::from_secs_f64(bare_s))
            ),
            all.len() as f64 / bare_s.max(1e-9),
        ));

        // One change at a time.
        let plain_changes: Vec<(usize, String)> = spread(&units.plain, self.config.changes);
        let container_changes: Vec<(usize, String)> =
            spread(&units.containers, self.config.container_changes);
        let mut k = 0;
        for (picked, container) in [(plain_changes, false), (container_changes, true)] {
            if picked.is_empty() {
                continue;
            }
            let changes = self.changes(&client, &picked, container, &mut k).await?;
            let kind = if container { "container" } else { "plain" };
            let bare = if container {
                reference.change_container.clone()
            } else {
                reference.change_plain.clone()
            };
            let row = changes.row(kind, all.len(), bare);
            println!("  {}: {}", row.case, row.figure);
            rows.push(row);
        }
        // New units, one at a time: files systemd never loaded.
        if self.config.new_units > 0 {
            let news = self
                .new_units(&client, self.config.new_units, all.len())
                .await?;
            let row = news.row();
            println!("  {}: {}", row.case, row.figure);
            rows.push(row);
        }
        stop_agent(self.host);
        drop(server);
        Ok(())
    }

    /// Submits `n` new plain units one at a time, each launched, and times
    /// each from the API call's return until it is active on the host
    /// (polled every 5 ms with `ListUnitsByPatterns`, which loads nothing).
    pub(super) async fn new_units(
        &self,
        client: &Client,
        n: usize,
        running: usize,
    ) -> anyhow::Result<NewUnits> {
        let wall0 = SystemTime::now();
        let mut out = NewUnits {
            running,
            ..NewUnits::default()
        };
        for k in 0..n {
            let name = format!("b5-n-{k:04}.service");
            let unit = UnitName::parse(&name)?;
            let put = UnitPut {
                text: Some(plain_text(10_000 + k, None)),
                desired_state: Some(flotilla_proto::DesiredState::Launched),
                ..UnitPut::default()
            };
            let called = Instant::now();
            client
                .put_unit(&unit, &put)
                .await
                .with_context(|| format!("cannot submit {name}"))?;
            let returned = Instant::now();
            out.put.push(returned - called);
            loop {
                if self.bus.active(&[name.as_str()]).await?.contains(&name) {
                    break;
                }
                if returned.elapsed() > CHANGE_LIMIT {
                    bail!(
                        "{name} was not active within {} of its submission",
                        dur(CHANGE_LIMIT)
                    );
                }
                tokio::time::sleep(CHANGE_POLL).await;
            }
            out.active.push(returned.elapsed());
            tokio::time::sleep(SETTLE).await;
        }
        let lines = agent_journal(self.host, wall0);
        let passes = lines.iter().filter(|l| l.message.contains("reconciled"));
        out.passes = passes.clone().count();
        out.reloads = passes
            .filter(|l| l.message.contains("reloaded=true"))
            .count();
        Ok(out)
    }

    pub(super) fn texts(&self, names: &[String], container: bool) -> Vec<(String, String)> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let text = if container {
                    container_text(i, None)
                } else {
                    plain_text(i, None)
                };
                (n.clone(), text)
            })
            .collect()
    }

    /// A fresh `flotilla server` with its data on the tmpfs, and a client
    /// once it has a leader.
    pub(super) async fn start_server(&self, tag: &str) -> anyhow::Result<(ServerProc, Client)> {
        agent_host::start_server(
            self.flotilla,
            &self.work.join(format!("server-{tag}")),
            &self.work.join(format!("b5-server-{tag}.log")),
            // Long enough that the agent's restarts keep the machine.
            "30s",
        )
        .await
    }

    /// Readies the host to join `server`'s cluster at the agent's next
    /// start ([`agent_host::join_cluster`]).
    pub(super) async fn join_cluster(&self, server: &ServerProc) -> anyhow::Result<()> {
        agent_host::join_cluster(self.host, server).await
    }

    /// Starts the agent and waits until every unit of `names` is active on
    /// the host.
    pub(super) async fn cold(
        &self,
        client: &Client,
        endpoint: &str,
        names: &[String],
    ) -> anyhow::Result<Converged> {
        let expected: Arc<HashSet<String>> = Arc::new(names.iter().cloned().collect());
        let t0 = Instant::now();
        let wall0 = SystemTime::now();
        let host_watch = tokio::spawn(watch_host(self.bus.clone(), expected.clone(), t0));
        let server_watch = tokio::spawn(watch_server(client.clone(), expected.clone(), t0));
        if let Err(e) = start_agent(self.host, endpoint) {
            host_watch.abort();
            server_watch.abort();
            return Err(e);
        }
        let ready = t0.elapsed();
        let active = match host_watch.await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                server_watch.abort();
                return Err(e);
            }
            Err(e) => {
                server_watch.abort();
                return Err(anyhow!("the host watch failed: {e}"));
            }
        };
        let mut server_watch = server_watch;
        let server_all =
            match tokio::time::timeout(Duration::from_secs(30), &mut server_watch).await {
                Ok(Ok(d)) => Some(d),
                _ => {
                    server_watch.abort();
                    None
                }
            };
        let timeline = Timeline::read(self.host, wall0);
        Ok(Converged {
            active,
            ready,
            server_all,
            timeline,
        })
    }

    /// Stops the agent, then every unit of `names` on the host, removes
    /// their files and reloads systemd.
    pub(super) async fn empty_host(&self, names: &[String]) -> anyhow::Result<()> {
        stop_agent(self.host);
        let t = Instant::now();
        let systemd = self.bus.jobs().await?;
        jobs_at_once(&systemd, JobKind::Stop, names).await?;
        for name in names {
            self.bus.remove_unit(name)?;
        }
        // As after a reboot: the agent's record of what it started (in
        // /run, like the units) goes too.
        self.bus.remove_unit(AGENT_RECORD)?;
        systemd.reload().await?;
        drop(systemd);
        let left = self.bus.active(&[AGENT_PATTERN]).await?;
        if !left.is_empty() {
            bail!("{} units still run on the emptied host", left.len());
        }
        println!(
            "  host emptied: agent stopped, {} units stopped and their files removed in {}",
            names.len(),
            dur(t.elapsed())
        );
        Ok(())
    }

    /// Changes each of `picked` in turn and times it.
    pub(super) async fn changes(
        &self,
        client: &Client,
        picked: &[(usize, String)],
        container: bool,
        k: &mut usize,
    ) -> anyhow::Result<Changes> {
        let wall0 = SystemTime::now();
        let mut out = Changes::default();
        let mut marks = Vec::new();
        for (i, name) in picked {
            *k += 1;
            let text = if container {
                container_text(*i, Some(*k))
            } else {
                plain_text(*i, Some(*k))
            };
            let path = self.bus.unit_path(name).await?;
            let (old, _) = self.bus.main_pid(&path).await?;
            let put = UnitPut {
                text: Some(text),
                replace: true,
                ..UnitPut::default()
            };
            let unit = UnitName::parse(name)?;
            let called = Instant::now();
            client
                .put_unit(&unit, &put)
                .await
                .with_context(|| format!("cannot change {name}"))?;
            let returned = Instant::now();
            let wall = SystemTime::now();
            out.put.push(returned - called);
            let pid = loop {
                let (pid, state) = self.bus.main_pid(&path).await?;
                if state == "active" && pid != 0 && pid != old {
                    break pid;
                }
                if returned.elapsed() > CHANGE_LIMIT {
                    bail!(
                        "{name} did not run again within {} of its change (MainPID {pid}, {state})",
                        dur(CHANGE_LIMIT)
                    );
                }
                tokio::time::sleep(CHANGE_POLL).await;
            };
            out.restarted.push(returned.elapsed());
            let file = self.bus.read_unit(name)?;
            if !file.contains(&format!("B5_CHANGE={k}\n")) {
                bail!("{name} runs again, but its file on the host is not the changed one");
            }
            // When the API shows the new process: the one the host runs
            // now, read again each time (a container unit's first MainPID
            // can be a step of its start that hands over to the next).
            let query = StateQuery {
                unit: Some(unit.clone()),
                machine: None,
            };
            loop {
                let (now, _) = self.bus.main_pid(&path).await?;
                let current = if now != 0 && now != old { now } else { pid };
                let seen = client.all_states(&query).await.is_ok_and(|states| {
                    states
                        .iter()
                        .any(|s| s.main_pid == Some(current) && s.active_state == "active")
                });
                if seen {
                    out.server.push(returned.elapsed());
                    break;
                }
                if returned.elapsed() > Duration::from_secs(10) {
                    let shown = client.all_states(&query).await.map(|states| {
                        states
                            .iter()
                            .map(|s| format!("{} pid {:?}", s.active_state, s.main_pid))
                            .collect::<Vec<_>>()
                    });
                    let (now, state) = self.bus.main_pid(&path).await?;
                    println!(
                        "  {name}: the API never showed MainPID {pid} within 10 s: it shows {shown:?}; the host has MainPID {now} ({state})"
                    );
                    out.server_missed += 1;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            marks.push((name.clone(), wall));
            tokio::time::sleep(SETTLE).await;
        }
        // Where the time went, from the agent's journal.
        let lines = agent_journal(self.host, wall0);
        for (name, wall) in &marks {
            let after = |needle: &str| {
                lines
                    .iter()
                    .find(|l| l.at >= *wall && l.message.contains(needle))
                    .map(|l| l.at)
            };
            let wrote = after(&format!("wrote /run/systemd/system/{name}"));
            let done = after(&format!("restart {name}: "));
            if let (Some(w), Some(d)) = (wrote, done) {
                out.to_written
                    .push(w.duration_since(*wall).unwrap_or_default());
                out.written_to_done
                    .push(d.duration_since(w).unwrap_or_default());
            }
        }
        out.passes = lines
            .iter()
            .filter(|l| l.message.contains("reconciled"))
            .count();
        out.count = picked.len();
        Ok(out)
    }
}

/// Polls the host until every unit of `expected` is active; when each
/// first was, from `t0`.
pub(super) async fn watch_host(
    bus: HostBus,
    expected: Arc<HashSet<String>>,
    t0: Instant,
) -> anyhow::Result<HashMap<String, Duration>> {
    let mut seen = HashMap::new();
    let mut progress = Duration::ZERO;
    loop {
        let now = t0.elapsed();
        for name in bus.active(&[AGENT_PATTERN]).await? {
            if expected.contains(&name) {
                seen.entry(name).or_insert_with(|| {
                    progress = now;
                    now
                });
            }
        }
        if seen.len() >= expected.len() {
            return Ok(seen);
        }
        if now.saturating_sub(progress) > STALL_LIMIT {
            bail!(
                "{} of {} units were active on the host {} after the agent started, and none became active in the last {}",
                seen.len(),
                expected.len(),
                dur(now),
                dur(STALL_LIMIT)
            );
        }
        if t0.elapsed() > CONVERGE_LIMIT {
            bail!(
                "only {} of {} units were active on the host {} after the agent started",
                seen.len(),
                expected.len(),
                dur(CONVERGE_LIMIT)
            );
        }
        tokio::time::sleep(HOST_POLL).await;
    }
}

/// Polls the API until it shows every unit of `expected` active.
pub(super) async fn watch_server(
    client: Client,
    expected: Arc<HashSet<String>>,
    t0: Instant,
) -> Duration {
    loop {
        if let Ok(states) = client.all_states(&StateQuery::default()).await {
            let active = states
                .iter()
                .filter(|s| s.active_state == "active" && expected.contains(s.unit.as_str()))
                .map(|s| s.unit.as_str())
                .collect::<HashSet<_>>()
                .len();
            if active >= expected.len() {
                return t0.elapsed();
            }
        }
        tokio::time::sleep(SERVER_POLL).await;
    }
}
