//! The unit file flotilla writes to systemd for a container unit.
//!
//! The user's unit is kept as written, with these changes:
//!
//! - `[Container]` becomes `[X-Container]`: systemd ignores sections
//!   starting with `X-` silently, and the shim reads the container's
//!   settings from there, so the unit file on the host is the one source
//!   of truth for the container.
//! - `[Service]` gains what makes the shim the service: `Type=notify` (the
//!   shim says when the container is ready), `NotifyAccess=all` (the shim
//!   notifies for the container's process, which becomes `MAINPID`),
//!   `Delegate=yes` (the container's processes live in a sub-cgroup of the
//!   unit), `KillMode=mixed` (unless set: systemd's SIGTERM goes to the
//!   main process only, and the rest are killed at the end),
//!   `ExecStart=` the shim, `ExecStop=` a request to the shim to stop the
//!   container, `ExecStopPost=` a cleanup that removes the container even
//!   when the shim was killed, a `TimeoutStopSec=` longer than
//!   `StopTimeout` unless the unit sets one, and, for a unit with
//!   `ReloadCmd=` or `ReloadSignal=`, `ExecReload=` the shim's reload
//!   ([`super::reload`]).
//! - Unless the unit sets `WatchdogSec=`: `WatchdogSec=10s` and
//!   `WatchdogSignal=SIGKILL` (unless set), with the shim told to ping it
//!   for as long as it lives (`--watchdog liveness`). The container's
//!   process is the unit's main process, so systemd would not notice a
//!   killed shim; with the watchdog, the unit fails within 10s, the
//!   cleanup removes the container, and `Restart=` applies. A unit's own
//!   `WatchdogSec=` (`0` turns it off) is pinged only while the container
//!   is not unhealthy.
//!
//! Why `ExecStop=`: the shim hands systemd the container's process as the
//! unit's main process (`MAINPID=`), so systemd's own stop signal would go
//! to the container's init directly, not through Docker with the
//! container's `StopSignal=`. `shim stop` asks the running shim (SIGTERM to
//! it, found in the unit's `shim` sub-cgroup) to stop the container with
//! its `StopSignal=` and `StopTimeout=`, and waits for it; by the time
//! systemd would send its own signal, the container is gone.

use std::path::Path;
use std::time::Duration;

use flotilla_proto::UnitSpec;
use flotilla_proto::unit_file::{Entry, Section, UnitFile};

/// The section the shim reads the container's settings from in the
/// rendered unit.
pub const RENDERED_SECTION: &str = "X-Container";

/// flotilla's watchdog on the shim, for a unit that sets no
/// `WatchdogSec=`: see [`super::shim::WatchdogMode::Liveness`].
pub const LIVENESS_WATCHDOG: Duration = Duration::from_secs(10);

/// How much longer than the container's `StopTimeout` systemd waits before
/// it kills what is left of the unit.
pub const STOP_MARGIN: Duration = Duration::from_secs(10);

/// Renders a container unit (one with a `[Container]` section) for systemd,
/// or a `.network` or `.volume` unit ([`super::object`]); `shim` is the
/// path of the `flotilla` binary on the host. Returns `None` for any other
/// unit.
pub fn render_service(spec: &UnitSpec, shim: &Path) -> Option<UnitFile> {
    if spec.object.is_some() {
        return super::object::render_object(spec, shim);
    }
    let container = spec.container.as_ref()?;
    let mut file = spec.file.clone();
    super::object::add_requirements(&mut file, container);
    for section in &mut file.sections {
        if section.name == flotilla_proto::container::SECTION {
            section.name = RENDERED_SECTION.to_owned();
        }
    }
    let service = match file.sections.iter().position(|s| s.name == "Service") {
        Some(i) => i,
        None => {
            file.sections.push(Section {
                name: "Service".to_owned(),
                line: 0,
                entries: Vec::new(),
            });
            file.sections.len() - 1
        }
    };
    // Set, as systemd reads it: the last assignment, not an empty one.
    let has = |key: &str| {
        spec.file
            .last_value("Service", key)
            .is_some_and(|v| !v.value.is_empty())
    };
    let shim = shim.display();
    let name = spec.name.as_str();
    // Without a watchdog of the user's, one on the shim's own life.
    let liveness = !has("WatchdogSec");
    let watch = if liveness { " --watchdog liveness" } else { "" };
    let mut add = vec![
        ("Type", "notify".to_owned()),
        ("NotifyAccess", "all".to_owned()),
        ("Delegate", "yes".to_owned()),
        ("ExecStart", format!("{shim} shim run --unit {name}{watch}")),
        (
            "ExecStop",
            format!(
                "{shim} shim stop --unit {name} --container {}",
                container.container_name
            ),
        ),
        (
            "ExecStopPost",
            format!(
                "{shim} shim cleanup --unit {name} --container {}",
                container.container_name
            ),
        ),
    ];
    add.extend(super::reload::exec_reload(
        container,
        &shim.to_string(),
        name,
    ));
    if liveness {
        add.push(("WatchdogSec", format!("{}s", LIVENESS_WATCHDOG.as_secs())));
        if !has("WatchdogSignal") {
            // The shim is gone: nothing is left to stop the container
            // gracefully, and the cleanup removes it.
            add.push(("WatchdogSignal", "SIGKILL".to_owned()));
        }
    }
    if !has("KillMode") {
        add.push(("KillMode", "mixed".to_owned()));
    }
    if !has("TimeoutStopSec") && !has("TimeoutSec") {
        let seconds = (container.stop_timeout + STOP_MARGIN).as_secs();
        add.push(("TimeoutStopSec", format!("{seconds}s")));
    }
    let entries = &mut file.sections[service].entries;
    for (key, value) in add {
        entries.push(Entry {
            key: key.to_owned(),
            value,
            line: 0,
        });
    }
    Some(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_unit_becomes_a_shim_service() {
        let text = "[Unit]\nDescription=web\n[Container]\nImage=local/busybox:latest\nExec=httpd -f\n[Service]\nRestart=on-failure\n";
        let checked = UnitSpec::check("web.service", "web.service", text).unwrap();
        let file = render_service(&checked.spec, Path::new("/opt/flotilla/bin/flotilla")).unwrap();
        assert_eq!(
            file.to_string(),
            "[Unit]\nDescription=web\n\n[X-Container]\nImage=local/busybox:latest\nExec=httpd -f\n\n\
             [Service]\nRestart=on-failure\nType=notify\nNotifyAccess=all\nDelegate=yes\n\
             ExecStart=/opt/flotilla/bin/flotilla shim run --unit web.service --watchdog liveness\n\
             ExecStop=/opt/flotilla/bin/flotilla shim stop --unit web.service --container flotilla-web\n\
             ExecStopPost=/opt/flotilla/bin/flotilla shim cleanup --unit web.service --container flotilla-web\n\
             WatchdogSec=10s\nWatchdogSignal=SIGKILL\nKillMode=mixed\nTimeoutStopSec=20s\n"
        );
        let plain =
            UnitSpec::check("a.service", "a.service", "[Service]\nExecStart=/bin/true\n").unwrap();
        assert!(render_service(&plain.spec, Path::new("/x")).is_none());
    }

    #[test]
    fn the_units_own_settings_are_kept() {
        let text = "[Container]\nImage=a\nStopTimeout=30s\n[Service]\nWatchdogSec=5s\nKillMode=control-group\nTimeoutStopSec=1min\n";
        let checked = UnitSpec::check("w.service", "w.service", text).unwrap();
        let file = render_service(&checked.spec, Path::new("/f")).unwrap();
        let service: Vec<String> = file
            .entries("Service")
            .map(|v| format!("{}={}", v.key, v.value))
            .collect();
        assert!(service.contains(&"ExecStart=/f shim run --unit w.service".to_owned()));
        for key in ["WatchdogSec", "KillMode", "TimeoutStopSec"] {
            assert_eq!(
                service
                    .iter()
                    .filter(|e| e.starts_with(&format!("{key}=")))
                    .count(),
                1,
                "{key}: {service:?}"
            );
        }
        assert!(!service.iter().any(|e| e.starts_with("WatchdogSignal=")));
        // An empty assignment resets: the unit has no watchdog of its own.
        let text = "[Container]\nImage=a\n[Service]\nWatchdogSec=5s\nWatchdogSec=\n";
        let checked = UnitSpec::check("w.service", "w.service", text).unwrap();
        let file = render_service(&checked.spec, Path::new("/f")).unwrap();
        assert!(file.to_string().contains("--watchdog liveness\n"));
        assert!(file.to_string().ends_with(
            "WatchdogSec=10s\nWatchdogSignal=SIGKILL\nKillMode=mixed\nTimeoutStopSec=20s\n"
        ));
    }
}
