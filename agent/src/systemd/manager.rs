//! systemd's manager object (`org.freedesktop.systemd1.Manager` at
//! `/org/freedesktop/systemd1`), declared once with `#[zbus::proxy]` for
//! everything flotilla calls on it: the agent's jobs and unit reads
//! ([`super::DbusSystemd`]), the shim's stops, restarts and process moves
//! (`container::systemd`), and the benchmarks reading a test host.
//!
//! Only the methods flotilla uses are declared, rather than taking the
//! `zbus_systemd` crate, whose generated bindings of every systemd
//! interface would cost far more to build than these few lines. The
//! conversion of a call's error into [`SystemdError`] lives here too, so
//! that every caller reads systemd's refusals the same way.

use zbus::OwnedObjectPath;

use super::SystemdError;

/// The bus name systemd owns.
pub const DESTINATION: &str = "org.freedesktop.systemd1";
/// The interface of every unit object (`ActiveState`, `LoadState`...).
pub const UNIT_INTERFACE: &str = "org.freedesktop.systemd1.Unit";
/// The interface of service unit objects (`MainPID`, `TimeoutStartUSec`...).
pub const SERVICE_INTERFACE: &str = "org.freedesktop.systemd1.Service";
/// The standard properties interface (`Get`, `GetAll`, `PropertiesChanged`).
pub const PROPERTIES_INTERFACE: &str = "org.freedesktop.DBus.Properties";

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
pub trait Manager {
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn reload(&self) -> zbus::Result<()>;
    fn subscribe(&self) -> zbus::Result<()>;
    fn list_units_by_names(&self, names: &[&str]) -> zbus::Result<Vec<ListedUnit>>;
    fn list_units_by_patterns(
        &self,
        states: &[&str],
        patterns: &[&str],
    ) -> zbus::Result<Vec<ListedUnit>>;
    fn attach_processes_to_unit(
        &self,
        unit_name: &str,
        subcgroup: &str,
        pids: &[u32],
    ) -> zbus::Result<()>;

    /// systemd's version, such as `252.22-1~deb12u1`.
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;

    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;

    /// A unit systemd freed (unloaded).
    #[zbus(signal)]
    fn unit_removed(&self, id: String, unit: OwnedObjectPath) -> zbus::Result<()>;
}

/// One unit as systemd's `ListUnits*` calls return it: name, description,
/// load state, active state, sub state, followed unit, object path, job id,
/// job type, job path.
pub type ListedUnit = (
    String,
    String,
    String,
    String,
    String,
    String,
    OwnedObjectPath,
    u32,
    String,
    OwnedObjectPath,
);

/// An error of the bus itself, not of a unit ([`SystemdError::Bus`]).
pub(crate) fn bus_error(operation: &'static str, e: zbus::Error) -> SystemdError {
    SystemdError::Bus {
        operation,
        message: e.to_string(),
    }
}

/// A method call's error: systemd's own refusals (a D-Bus error reply) are
/// [`SystemdError::Refused`], except the bus's own errors (no reply, the
/// service gone), which are temporary.
pub(crate) fn call_error(operation: &'static str, unit: &str, e: zbus::Error) -> SystemdError {
    let refusal = match &e {
        zbus::Error::MethodError(name, detail, _) => {
            Some((name.as_str().to_owned(), detail.clone().unwrap_or_default()))
        }
        zbus::Error::FDO(fdo) => {
            let name = fdo_error_name(fdo);
            Some((name, fdo.to_string()))
        }
        _ => None,
    };
    match refusal {
        Some((name, message)) if !name.starts_with("org.freedesktop.DBus.Error.") => {
            SystemdError::Refused {
                operation,
                unit: unit.to_owned(),
                name,
                message,
            }
        }
        _ => SystemdError::Bus {
            operation,
            message: e.to_string(),
        },
    }
}

fn fdo_error_name(e: &zbus::fdo::Error) -> String {
    use zbus::DBusError;
    e.name().as_str().to_owned()
}
