//! The rest of a container unit: what its `[Service]` section may set.

use crate::diagnostic::Diagnostics;
use crate::duration::{self, Timespan};
use crate::unit_file::UnitFile;
use crate::value::parse_bool;

use super::ContainerSpec;

/// Checks the rest of the unit against what flotilla renders for a
/// container unit: its own `ExecStart=`, `Type=notify`, `NotifyAccess=all`,
/// `Delegate=yes` and a `KillMode=` that reaches every process.
pub(super) fn check_service(file: &UnitFile, spec: &ContainerSpec, diags: &mut Diagnostics) {
    for v in file.values("Service", "ExecStart") {
        if !v.value.is_empty() {
            diags.push(v.error(
                "a container unit must not set ExecStart=: flotilla's shim is the main process and runs the container; give the command in [Container] Exec=",
            ));
        }
    }
    if let Some(v) = file.last_value("Service", "Type")
        && !v.value.is_empty()
        && v.value != "notify"
    {
        diags.push(v.error(format!(
            "a container unit must not set Type={}: flotilla runs it as Type=notify, so that it is ready when the container is",
            v.value
        )));
    }
    if let Some(v) = file.last_value("Service", "NotifyAccess")
        && !v.value.is_empty()
        && v.value != "all"
    {
        diags.push(v.error(format!(
            "a container unit must not set NotifyAccess={}: flotilla sets NotifyAccess=all, as the shim reports readiness after it has made the container the main process",
            v.value
        )));
    }
    if let Some(v) = file.last_value("Service", "Delegate")
        && parse_bool(v.value) == Some(false)
    {
        diags.push(v.error(
            "a container unit must not set Delegate=no: the container's processes run in a cgroup delegated under the unit's",
        ));
    }
    if let Some(v) = file.last_value("Service", "KillMode")
        && !v.value.is_empty()
        && v.value != "control-group"
        && v.value != "mixed"
    {
        diags.push(v.error(format!(
            "a container unit must not set KillMode={}: use control-group or mixed (flotilla's default), so that stopping the unit stops every process of the container",
            v.value
        )));
    }
    // TimeoutSec= sets the stop timeout too; the last of the two wins.
    let stop = file
        .entries("Service")
        .filter(|v| v.key == "TimeoutStopSec" || v.key == "TimeoutSec")
        .last();
    if let Some(v) = stop
        && let Ok(Timespan::Finite(limit)) = duration::parse_timespan_or_infinity(v.value)
        // systemd reads 0 as no timeout.
        && !limit.is_zero()
        && limit <= spec.stop_timeout
    {
        diags.push(v.warning(format!(
            "systemd kills the unit {} after stopping it, leaving the container no time past its StopTimeout of {}; make {} longer than StopTimeout",
            duration::format_timespan(limit),
            duration::format_timespan(spec.stop_timeout),
            v.key
        )));
    }
}
