//! One run of a container unit ([`Shim::run`]): prepare, pull, create,
//! contain, run and exit, as the shim module's documentation says, with the
//! container's output forwarded to an [`OutputSink`].

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use flotilla_proto::Health;
use flotilla_proto::container::Notify;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::health::{WatchdogTask, ping_watchdog};
use super::notify::{notify_socket, receive};
use super::{
    ATTACH_RETRY, ATTACH_ROUNDS, BARRIER_TIMEOUT, DEFAULT_START_TIMEOUT, Exit, Notifier,
    OUTPUT_DRAIN, RESUBSCRIBE, Shim, ShimError, status_text,
};
use crate::container::auto_update::{UpdateCheck, next_tick};
use crate::container::cgroup::{Cgroups, PAYLOAD_LEAF, SHIM_LEAF};
use crate::container::config::{self, UNIT_LABEL};
use crate::container::host_config;
use crate::container::pull;
use crate::container::runtime::{
    BoxStream, CgroupDriver, ContainerRuntime, Output, OutputStream, RuntimeError,
};
use crate::container::systemd::UnitControl;

/// Where the container's output goes.
pub type OutputSink = Box<dyn FnMut(Output) + Send + 'static>;

/// Writes the container's stdout to the shim's stdout and its stderr to the
/// shim's stderr: the journal, under systemd.
pub fn stdio_sink() -> OutputSink {
    Box::new(|output: Output| {
        // A write error (the journal went away) is not worth dying for.
        let _ = match output.stream {
            OutputStream::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(&output.bytes).and_then(|()| out.flush())
            }
            OutputStream::Stderr => {
                let mut err = std::io::stderr().lock();
                err.write_all(&output.bytes).and_then(|()| err.flush())
            }
        };
    })
}

/// Health and readiness as the shim last reported them.
#[derive(Debug)]
pub(super) struct Reported {
    pub(super) container: String,
    pub(super) health: Health,
    pub(super) ready: bool,
}

/// A call to the engine in flight.
type Pending<'a, T> = Pin<Box<dyn Future<Output = Result<T, RuntimeError>> + Send + 'a>>;

/// Awaits the future in `slot` if there is one, else never resolves.
async fn maybe<F: Future + Unpin>(slot: &mut Option<F>) -> F::Output {
    match slot {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

impl<R: ContainerRuntime, U: UnitControl, N: Notifier> Shim<R, U, N> {
    /// Runs the container until it exits. A request on `stop` (SIGTERM)
    /// stops it with its stop signal and timeout. Output goes to `sink`.
    pub async fn run(&self, stop: mpsc::Receiver<()>, sink: OutputSink) -> Result<Exit, ShimError> {
        let unit = self.unit.as_str();
        // From the very start: creating a container or stopping one may
        // take longer than the watchdog's period.
        let suspended = Arc::new(AtomicBool::new(false));
        let _watchdog = self.watchdog.map(|w| WatchdogTask {
            task: tokio::spawn(ping_watchdog(
                w.interval,
                self.notifier.clone(),
                suspended.clone(),
            )),
        });
        let engine = self.runtime.info().await?;
        let own = self.cgroups.of("self")?;
        let unit_cgroup = Cgroups::unit_path(&own, unit)?;
        self.cgroups
            .enter(&format!("{unit_cgroup}/{SHIM_LEAF}"), self.pid)?;
        self.replace_leftover().await?;
        self.pull().await?;
        let cgroup_parent = match engine.cgroup_driver {
            CgroupDriver::Cgroupfs => unit_cgroup.clone(),
            CgroupDriver::Systemd => Cgroups::slice_of(&unit_cgroup),
        };
        let notify_socket = match (&self.spec.notify, &self.notify_dir) {
            (Notify::Container, Some(dir)) => Some(notify_socket(dir)?),
            _ => None,
        };
        let mut config = config::create_config(
            &self.spec,
            &self.unit,
            self.env_files.clone(),
            cgroup_parent,
            notify_socket.as_ref().and(self.notify_dir.as_deref()),
        );
        host_config::apply(&self.spec, &self.host, &mut config);
        let id = self.runtime.create(&config).await?;
        tracing::info!(
            "created container {} ({id}) with Docker {} ({} cgroup driver)",
            config.name,
            engine.version,
            match engine.cgroup_driver {
                CgroupDriver::Cgroupfs => "cgroupfs",
                CgroupDriver::Systemd => "systemd",
            }
        );
        let started = self
            .start(
                &id,
                (engine.cgroup_driver, &unit_cgroup),
                stop,
                sink,
                notify_socket,
                &suspended,
            )
            .await;
        match started {
            Ok(exit) => Ok(exit),
            Err(e) => {
                if let Err(r) = self.runtime.remove(&id).await {
                    tracing::warn!("cannot remove container {id}: {r}");
                }
                Err(e)
            }
        }
    }

    /// Makes the image ready as `Pull=` says, within the unit's start
    /// timeout.
    async fn pull(&self) -> Result<(), ShimError> {
        let unit = self.unit.as_str();
        let image = &self.spec.image;
        let start_timeout = async {
            match self.systemd.start_timeout(unit).await {
                Ok(timeout) => timeout,
                Err(e) => {
                    tracing::warn!(
                        "{e}; assuming systemd's default start timeout of {}s",
                        DEFAULT_START_TIMEOUT.as_secs()
                    );
                    Some(DEFAULT_START_TIMEOUT)
                }
            }
        };
        let pulling = || {
            self.notifier
                .notify(&format!("STATUS=flotilla: pulling={image}"));
        };
        pull::ensure_image(
            &self.runtime,
            image,
            &self.spec.pull,
            &self.pulls,
            start_timeout,
            pulling,
        )
        .await?;
        Ok(())
    }

    /// Removes a container of this unit left by a crash; refuses to touch
    /// someone else's.
    async fn replace_leftover(&self) -> Result<(), ShimError> {
        let name = &self.spec.container_name;
        let Some(old) = self.runtime.inspect(name).await? else {
            return Ok(());
        };
        let label = old.labels.get(UNIT_LABEL);
        if label.map(String::as_str) != Some(self.unit.as_str()) {
            return Err(ShimError::ForeignContainer {
                name: name.clone(),
                unit: self.unit.as_str().to_owned(),
                found: label.cloned(),
            });
        }
        tracing::info!("replacing the leftover container {name} ({})", old.id);
        self.runtime.remove(&old.id).await?;
        Ok(())
    }

    async fn start(
        &self,
        id: &str,
        (driver, unit_cgroup): (CgroupDriver, &str),
        mut stop: mpsc::Receiver<()>,
        sink: OutputSink,
        notify_socket: Option<tokio::net::UnixDatagram>,
        suspended: &AtomicBool,
    ) -> Result<Exit, ShimError> {
        let output = self.runtime.attach(id).await?;
        let mut events = self.runtime.health_events(id);
        self.runtime.start(id).await?;
        let output = tokio::spawn(forward_output(output, sink));
        let mut wait: Pending<'_, i64> = Box::pin(self.runtime.wait(id));
        let info = self.runtime.inspect(id).await?;
        let mut reported = Reported {
            container: id.to_owned(),
            health: Health::None,
            ready: false,
        };
        let mut stop_requested = false;
        if let Some(info) = info.filter(|i| i.running && i.pid > 0) {
            if driver == CgroupDriver::Systemd {
                self.contain(unit_cgroup, info.pid).await?;
            }
            reported.health = info.health;
            let mut state = format!(
                "MAINPID={}\nSTATUS={}",
                info.pid,
                status_text(id, info.health)
            );
            if self.ready_now(info.health) {
                reported.ready = true;
                state.push_str("\nREADY=1");
            }
            self.notifier.notify(&state);
            tracing::info!("container {id} runs as PID {}", info.pid);
        }
        let mut stopping: Option<Pending<'_, ()>> = None;
        let mut update_every = self.auto_update.map(|every| {
            let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks
        });
        let mut updating: Option<UpdateCheck<'_>> = None;
        let mut resubscribe: Option<Instant> = None;
        let mut proxy_buf = vec![0u8; 4096];
        let code = loop {
            tokio::select! {
                code = &mut wait => match code {
                    Ok(code) => break code,
                    Err(e) => {
                        // The engine dropped the wait: ask again, unless the
                        // container is already gone.
                        tracing::warn!("waiting for container {id}: {e}");
                        match self.runtime.inspect(id).await {
                            Ok(Some(i)) if !i.running => break i.exit_code.unwrap_or(255),
                            Ok(None) => break 255,
                            _ => {
                                tokio::time::sleep(RESUBSCRIBE).await;
                                wait = Box::pin(self.runtime.wait(id));
                            }
                        }
                    }
                },
                Some(()) = stop.recv(), if !stop_requested => {
                    tracing::info!(
                        "stopping container {id} (stop signal, then SIGKILL after {}s)",
                        self.spec.stop_timeout.as_secs()
                    );
                    stop_requested = true;
                    stopping = Some(Box::pin(self.runtime.stop(id, self.spec.stop_timeout)));
                }
                result = maybe(&mut stopping) => {
                    stopping = None;
                    if let Err(e) = result {
                        tracing::warn!("cannot stop container {id}: {e}; killing it");
                        if let Err(e) = self.runtime.kill(id, "SIGKILL").await {
                            tracing::warn!("cannot kill container {id}: {e}");
                        }
                    }
                }
                event = events.next() => match event {
                    Some(Ok(health)) => {
                        self.gate_watchdog(suspended, health);
                        if let Some(request) = self.health_changed(&mut reported, health).await {
                            stop_requested |= request;
                            if request && stopping.is_none() {
                                stopping = Some(Box::pin(self.runtime.stop(id, self.spec.stop_timeout)));
                            }
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!("health events of container {id}: {e}");
                        events = Box::pin(futures_util::stream::pending());
                        resubscribe = Some(Instant::now() + RESUBSCRIBE);
                    }
                    None => {
                        events = Box::pin(futures_util::stream::pending());
                        resubscribe = Some(Instant::now() + RESUBSCRIBE);
                    }
                },
                () = async { tokio::time::sleep_until(resubscribe.unwrap_or_else(Instant::now)).await },
                    if resubscribe.is_some() => {
                    resubscribe = None;
                    events = self.runtime.health_events(id);
                    // Catch up with what happened while not subscribed.
                    if let Ok(Some(info)) = self.runtime.inspect(id).await {
                        self.gate_watchdog(suspended, info.health);
                        if self.health_changed(&mut reported, info.health).await == Some(true)
                            && stopping.is_none()
                        {
                            stop_requested = true;
                            stopping = Some(Box::pin(self.runtime.stop(id, self.spec.stop_timeout)));
                        }
                    }
                }
                () = next_tick(&mut update_every), if updating.is_none() && !stop_requested => {
                    updating = Some(Box::pin(self.check_update()));
                }
                result = maybe(&mut updating) => {
                    updating = None;
                    self.updated(result).await;
                }
                received = receive(notify_socket.as_ref(), &mut proxy_buf),
                    if notify_socket.is_some() => {
                    if let Ok(n) = received
                        && !reported.ready
                        && String::from_utf8_lossy(&proxy_buf[..n]).lines().any(|l| l == "READY=1")
                    {
                        reported.ready = true;
                        tracing::info!("the container reports ready");
                        self.notifier.notify("READY=1");
                    }
                }
            }
        };
        // systemd learns exit statuses only from its own children: the shim
        // becomes the main process again before it exits with the code, and
        // waits until systemd has taken that in (a MAINPID= read after the
        // shim exited would be refused, and the status lost).
        self.notifier.notify(&format!("MAINPID={}", self.pid));
        if !self.notifier.barrier(BARRIER_TIMEOUT) {
            tracing::warn!(
                "systemd did not confirm the shim as main process: the exit status may be lost"
            );
        }
        tracing::info!("container {id} exited with status {code}");
        if tokio::time::timeout(OUTPUT_DRAIN, output).await.is_err() {
            tracing::warn!("the output of container {id} did not end with it");
        }
        if let Err(e) = self.runtime.remove(id).await {
            tracing::warn!("cannot remove container {id}: {e} (the unit's cleanup retries)");
        }
        Ok(Exit {
            container: id.to_owned(),
            code,
            stop_requested,
        })
    }

    /// Docker's systemd driver put the container in a scope of its own:
    /// systemd moves its processes into the unit's `payload` leaf, round
    /// after round while the container forks.
    async fn contain(&self, unit_cgroup: &str, pid: u32) -> Result<(), ShimError> {
        let unit = self.unit.as_str();
        let payload = format!("{unit_cgroup}/{PAYLOAD_LEAF}");
        self.cgroups.create(&payload)?;
        let Ok(scope) = self.cgroups.of(&pid.to_string()) else {
            // Already gone: the container exited, and the wait says how.
            return Ok(());
        };
        if scope == payload {
            return Ok(());
        }
        let mut failed = None;
        for _ in 0..ATTACH_ROUNDS {
            let pids = self.cgroups.procs(&scope)?;
            if pids.is_empty() {
                return Ok(());
            }
            // systemd refuses the whole call if one of the processes has
            // exited since the list was read: read it again and retry.
            match self
                .systemd
                .attach_processes(unit, &format!("/{PAYLOAD_LEAF}"), &pids)
                .await
            {
                Ok(()) => failed = None,
                Err(e) => {
                    tracing::debug!("{e}; trying again");
                    failed = Some(e);
                    tokio::time::sleep(ATTACH_RETRY).await;
                }
            }
        }
        Err(match failed {
            Some(e) => ShimError::Systemd(e),
            None => ShimError::Contain {
                unit: unit.to_owned(),
                reason: format!("processes kept appearing in {scope}"),
            },
        })
    }
}

async fn forward_output(mut output: BoxStream<Result<Output, RuntimeError>>, mut sink: OutputSink) {
    while let Some(item) = output.next().await {
        match item {
            Ok(out) => sink(out),
            Err(e) => {
                tracing::warn!("{e}");
                break;
            }
        }
    }
}
