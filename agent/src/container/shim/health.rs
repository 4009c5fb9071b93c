//! What the shim does with the container's health: `STATUS=` on every
//! transition, readiness under `Notify=healthy`, `HealthOnFailure=`'s
//! action on `unhealthy`, and the watchdog's pings (`WatchdogSec=`),
//! suspended while an unhealthy container is what the watchdog watches.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flotilla_proto::Health;
use flotilla_proto::container::{HealthOnFailure, Notify};

use super::lifecycle::Reported;
use super::{Notifier, Shim, health_word, status_text};
use crate::container::runtime::ContainerRuntime;
use crate::container::systemd::UnitControl;

/// What the shim does when the container turns unhealthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnhealthyAction {
    /// Only report it (`HealthOnFailure=none`).
    Report,
    /// Kill the container: the unit fails with status 137 and `Restart=`
    /// applies (`kill`).
    Kill,
    /// Ask systemd to stop the unit, which does not restart it (`stop`).
    StopUnit,
    /// Ask systemd to restart the unit: a new container, whatever
    /// `Restart=` says (`restart`).
    RestartUnit,
}

impl UnhealthyAction {
    /// The action for a unit's `HealthOnFailure=`.
    pub fn for_policy(policy: HealthOnFailure) -> UnhealthyAction {
        match policy {
            HealthOnFailure::None => UnhealthyAction::Report,
            HealthOnFailure::Kill => UnhealthyAction::Kill,
            HealthOnFailure::Stop => UnhealthyAction::StopUnit,
            HealthOnFailure::Restart => UnhealthyAction::RestartUnit,
        }
    }
}

/// The watchdog's ping interval from systemd's `WATCHDOG_USEC` (half of
/// it, as sd_watchdog_enabled(3) advises); `None` without a watchdog or
/// when it is meant for another process (`WATCHDOG_PID`).
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.parse::<u32>().ok() != Some(own_pid)
    {
        return None;
    }
    let usec: u64 = usec?.parse().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(usec / 2))
}

/// What the unit's watchdog (`WatchdogSec=`) watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watchdog {
    /// How often to send `WATCHDOG=1`: see [`watchdog_interval`].
    pub interval: Duration,
    /// What a missed ping means.
    pub mode: WatchdogMode,
}

/// What the unit's watchdog watches: flotilla's own (rendered when the unit
/// sets no `WatchdogSec=`) or the user's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WatchdogMode {
    /// The user's `WatchdogSec=`: pings while the container is not
    /// unhealthy, so an unhealthy container fails the unit.
    #[default]
    Health,
    /// flotilla's: pings while the shim lives, whatever the health, so a
    /// shim that was killed fails the unit (and its cleanup removes the
    /// container) instead of leaving the container running unsupervised.
    Liveness,
}

impl<R: ContainerRuntime, U: UnitControl, N: Notifier> Shim<R, U, N> {
    /// Suspends the watchdog's pings while the container is unhealthy, if
    /// that is what it watches.
    pub(super) fn gate_watchdog(&self, suspended: &AtomicBool, health: Health) {
        if self
            .watchdog
            .is_some_and(|w| w.mode == WatchdogMode::Health)
        {
            suspended.store(health == Health::Unhealthy, Ordering::Relaxed);
        }
    }

    /// Whether the unit is ready as soon as the container runs with this
    /// health.
    pub(super) fn ready_now(&self, health: Health) -> bool {
        match self.spec.notify {
            Notify::Running => true,
            Notify::Healthy => health == Health::Healthy,
            Notify::Container => false,
        }
    }

    /// Reports a health transition and acts on it. Returns `Some(true)`
    /// when the shim must stop the container itself (a stop request to
    /// systemd failed).
    pub(super) async fn health_changed(
        &self,
        reported: &mut Reported,
        health: Health,
    ) -> Option<bool> {
        if reported.health == health {
            return None;
        }
        reported.health = health;
        let mut state = format!("STATUS={}", status_text(&reported.container, health));
        if !reported.ready && self.spec.notify == Notify::Healthy && health == Health::Healthy {
            reported.ready = true;
            state.push_str("\nREADY=1");
        }
        self.notifier.notify(&state);
        tracing::info!(
            "container {} is {}",
            reported.container,
            health_word(health)
        );
        if health != Health::Unhealthy {
            return Some(false);
        }
        let unit = self.unit.as_str();
        let id = &reported.container;
        match UnhealthyAction::for_policy(self.spec.health_on_failure) {
            UnhealthyAction::Report => Some(false),
            UnhealthyAction::Kill => {
                tracing::info!("HealthOnFailure=kill: killing container {id}");
                if let Err(e) = self.runtime.kill(id, "SIGKILL").await {
                    tracing::warn!("cannot kill container {id}: {e}");
                }
                Some(false)
            }
            UnhealthyAction::StopUnit => {
                tracing::info!("HealthOnFailure=stop: stopping {unit}");
                match self.systemd.stop_unit(unit).await {
                    Ok(()) => Some(false),
                    Err(e) if e.is_conflict() => {
                        tracing::info!("{e}: the job already queued decides");
                        Some(false)
                    }
                    Err(e) => {
                        tracing::warn!("{e}; stopping the container instead");
                        Some(true)
                    }
                }
            }
            UnhealthyAction::RestartUnit => {
                tracing::info!("HealthOnFailure=restart: restarting {unit}");
                match self.systemd.restart_unit(unit).await {
                    Ok(()) => {}
                    Err(e) if e.is_conflict() => {
                        tracing::info!("{e}: the job already queued decides");
                    }
                    Err(e) => {
                        tracing::warn!("{e}; killing the container instead");
                        if let Err(e) = self.runtime.kill(id, "SIGKILL").await {
                            tracing::warn!("cannot kill container {id}: {e}");
                        }
                    }
                }
                Some(false)
            }
        }
    }
}

/// The watchdog's pinger, stopped with the run.
pub(super) struct WatchdogTask {
    pub(super) task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchdogTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends `WATCHDOG=1` every `interval` unless `suspended`.
pub(super) async fn ping_watchdog<N: Notifier>(
    interval: Duration,
    notifier: N,
    suspended: Arc<AtomicBool>,
) {
    let mut ticks = tokio::time::interval(interval);
    loop {
        ticks.tick().await;
        if !suspended.load(Ordering::Relaxed) {
            notifier.notify("WATCHDOG=1");
        }
    }
}
