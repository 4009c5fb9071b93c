//! What the shim asks of systemd over D-Bus: to take the container's
//! processes into the unit (Docker's systemd driver), to stop or restart
//! the unit when its container turns unhealthy, and the unit's start
//! timeout (which bounds a pull).
//!
//! [`UnitControl`] is that seam; [`SystemdBus`] the real one (the system
//! bus, `org.freedesktop.systemd1.Manager`), [`FakeUnitControl`] a recorder
//! for unit tests. The system bus is only connected to when first needed, so
//! a shim under the cgroupfs driver without a health policy or a pull never
//! uses it.
//!
//! The calls are those of the agent's declaration of systemd's manager
//! ([`crate::systemd::manager`]) and fail with the agent's
//! [`SystemdError`]; the shim queues its jobs in mode `fail`, and a job
//! refused because another is queued is [`SystemdError::is_conflict`].

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;

pub use crate::systemd::SystemdError;
use crate::systemd::manager::{
    DESTINATION, ManagerProxy, SERVICE_INTERFACE, bus_error, call_error,
};

/// systemd, as the shim uses it.
pub trait UnitControl: Send + Sync + 'static {
    /// Moves `pids` into the sub-cgroup `subcgroup` (such as `/payload`;
    /// it must exist) of `unit`, which has `Delegate=yes`.
    fn attach_processes(
        &self,
        unit: &str,
        subcgroup: &str,
        pids: &[u32],
    ) -> impl Future<Output = Result<(), SystemdError>> + Send;

    /// Queues a stop job for `unit`, unless another job of the unit is
    /// queued ([`SystemdError::is_conflict`]).
    fn stop_unit(&self, unit: &str) -> impl Future<Output = Result<(), SystemdError>> + Send;

    /// Queues a restart job for `unit`, unless another job of the unit is
    /// queued ([`SystemdError::is_conflict`]): a user's `systemctl stop` must
    /// not be cancelled by the shim's restart.
    fn restart_unit(&self, unit: &str) -> impl Future<Output = Result<(), SystemdError>> + Send;

    /// The unit's start timeout (`TimeoutStartSec=`, its
    /// `TimeoutStartUSec` property); `None` when it has none (`infinity`).
    fn start_timeout(
        &self,
        unit: &str,
    ) -> impl Future<Output = Result<Option<Duration>, SystemdError>> + Send;
}

/// systemd's manager on the system bus.
#[derive(Debug, Default)]
pub struct SystemdBus {
    proxy: OnceCell<ManagerProxy<'static>>,
}

impl SystemdBus {
    async fn manager(&self) -> Result<&ManagerProxy<'static>, SystemdError> {
        self.proxy
            .get_or_try_init(|| async {
                let bus = zbus::Connection::system()
                    .await
                    .map_err(|e| SystemdError::Connect(e.to_string()))?;
                ManagerProxy::new(&bus)
                    .await
                    .map_err(|e| bus_error("proxy", e))
            })
            .await
    }
}

impl UnitControl for SystemdBus {
    async fn attach_processes(
        &self,
        unit: &str,
        subcgroup: &str,
        pids: &[u32],
    ) -> Result<(), SystemdError> {
        self.manager()
            .await?
            .attach_processes_to_unit(unit, subcgroup, pids)
            .await
            .map_err(|e| call_error("AttachProcessesToUnit", unit, e))
    }

    async fn stop_unit(&self, unit: &str) -> Result<(), SystemdError> {
        self.manager()
            .await?
            .stop_unit(unit, "fail")
            .await
            .map(drop)
            .map_err(|e| call_error("StopUnit", unit, e))
    }

    async fn restart_unit(&self, unit: &str) -> Result<(), SystemdError> {
        self.manager()
            .await?
            .restart_unit(unit, "fail")
            .await
            .map(drop)
            .map_err(|e| call_error("RestartUnit", unit, e))
    }

    async fn start_timeout(&self, unit: &str) -> Result<Option<Duration>, SystemdError> {
        let manager = self.manager().await?;
        let path = manager
            .get_unit(unit)
            .await
            .map_err(|e| call_error("GetUnit", unit, e))?;
        let service = zbus::Proxy::new(
            manager.inner().connection(),
            DESTINATION,
            path,
            SERVICE_INTERFACE,
        )
        .await
        .map_err(|e| bus_error("proxy", e))?;
        let usec: u64 = service
            .get_property("TimeoutStartUSec")
            .await
            .map_err(|e| call_error("TimeoutStartUSec", unit, e))?;
        // systemd shows a timeout turned off (`infinity`, or `0`) as the
        // largest value.
        Ok((usec != u64::MAX && usec != 0).then(|| Duration::from_micros(usec)))
    }
}

/// A request the shim made of systemd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitCall {
    Attach {
        unit: String,
        subcgroup: String,
        pids: Vec<u32>,
    },
    Stop(String),
    Restart(String),
}

/// A callback with an attach's sub-cgroup and PIDs.
type OnAttach = dyn Fn(&str, &[u32]) + Send + Sync;

/// Records requests; `on_attach` can act out a move (tests write the
/// cgroup files as systemd would).
#[derive(Clone, Default)]
pub struct FakeUnitControl {
    calls: Arc<Mutex<Vec<UnitCall>>>,
    fail_next: Arc<Mutex<Option<SystemdError>>>,
    on_attach: Option<Arc<OnAttach>>,
    start_timeout: Arc<Mutex<Option<Duration>>>,
}

impl std::fmt::Debug for FakeUnitControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeUnitControl")
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

impl FakeUnitControl {
    /// A recorder that runs `f(subcgroup, pids)` on each attach.
    pub fn with_attach(f: impl Fn(&str, &[u32]) + Send + Sync + 'static) -> Self {
        FakeUnitControl {
            calls: Arc::default(),
            fail_next: Arc::default(),
            on_attach: Some(Arc::new(f)),
            start_timeout: Arc::default(),
        }
    }

    /// The unit's start timeout from now on (none at first).
    pub fn set_start_timeout(&self, timeout: Option<Duration>) {
        *self.start_timeout.lock().unwrap_or_else(|p| p.into_inner()) = timeout;
    }

    /// The next stop or restart request fails with `error`.
    pub fn fail_next(&self, error: SystemdError) {
        *self.fail_next.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }

    fn fault(&self) -> Result<(), SystemdError> {
        match self
            .fail_next
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The requests so far.
    pub fn calls(&self) -> Vec<UnitCall> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn record(&self, call: UnitCall) {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(call);
    }
}

impl UnitControl for FakeUnitControl {
    async fn attach_processes(
        &self,
        unit: &str,
        subcgroup: &str,
        pids: &[u32],
    ) -> Result<(), SystemdError> {
        self.record(UnitCall::Attach {
            unit: unit.to_owned(),
            subcgroup: subcgroup.to_owned(),
            pids: pids.to_vec(),
        });
        if let Some(f) = &self.on_attach {
            f(subcgroup, pids);
        }
        Ok(())
    }

    async fn stop_unit(&self, unit: &str) -> Result<(), SystemdError> {
        self.record(UnitCall::Stop(unit.to_owned()));
        self.fault()
    }

    async fn restart_unit(&self, unit: &str) -> Result<(), SystemdError> {
        self.record(UnitCall::Restart(unit.to_owned()));
        self.fault()
    }

    async fn start_timeout(&self, _unit: &str) -> Result<Option<Duration>, SystemdError> {
        Ok(*self.start_timeout.lock().unwrap_or_else(|p| p.into_inner()))
    }
}
