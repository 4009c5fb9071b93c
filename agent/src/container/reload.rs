//! `flotilla shim reload`: what `systemctl reload` does to a container unit
//! with `ReloadCmd=` or `ReloadSignal=`.
//!
//! flotilla renders `ExecReload=flotilla shim reload --unit NAME
//! --container CNAME` for such a unit ([`exec_reload`]), as Quadlet renders
//! `ExecReload=podman exec ...` or `podman kill --signal ...`. The reload
//! reads the unit's `[X-Container]`, finds the unit's running container
//! (one with the unit's label) and either runs `ReloadCmd=` in it, as
//! `docker exec` (its output goes to the journal, and its exit status is
//! the reload's, so a failed command fails `systemctl reload`), or sends
//! it `ReloadSignal=`, as `docker kill --signal`.

use std::io::Write;
use std::time::Duration;

use flotilla_proto::container::ContainerSpec;

use super::config::{self, UNIT_LABEL};
use super::runtime::{ContainerRuntime, OutputStream, RuntimeError};
use super::shim::{SHIM_FAILURE, ShimError, UnitOptions, docker, tokio_runtime};

/// The `ExecReload=` line for a container unit that asks for one: `shim`
/// is the path of the `flotilla` binary, `unit` the unit's name.
pub fn exec_reload(spec: &ContainerSpec, shim: &str, unit: &str) -> Option<(&'static str, String)> {
    (!spec.reload.is_empty()).then(|| {
        (
            "ExecReload",
            format!(
                "{shim} shim reload --unit {unit} --container {}",
                spec.container_name
            ),
        )
    })
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// `ReloadCmd=` ran, and ended with this status.
    Ran(i64),
    /// `ReloadSignal=` was sent.
    Signalled,
    /// The unit has neither key: nothing to do.
    Nothing,
}

/// `flotilla shim reload`: reloads the unit's container; returns the exit
/// status of the reload.
pub fn reload(options: &UnitOptions, container: &str) -> Result<u8, ShimError> {
    let spec = config::read_spec(&options.unit, &options.path())?;
    tokio_runtime()?.block_on(async {
        let docker = docker(Duration::ZERO).await?;
        let reloaded = reload_with(&docker, options.unit.as_str(), &spec, container).await?;
        Ok(match reloaded {
            Reloaded::Ran(code) => u8::try_from(code).unwrap_or(SHIM_FAILURE),
            Reloaded::Signalled | Reloaded::Nothing => 0,
        })
    })
}

/// [`reload`] with any engine; the command's output goes to this process's
/// stdout and stderr (the unit's journal).
pub async fn reload_with<R: ContainerRuntime>(
    runtime: &R,
    unit: &str,
    spec: &ContainerSpec,
    container: &str,
) -> Result<Reloaded, ShimError> {
    if spec.reload.is_empty() {
        return Ok(Reloaded::Nothing);
    }
    let Some(c) = runtime.inspect(container).await? else {
        return Err(RuntimeError::NoSuchContainer(container.to_owned()).into());
    };
    let found = c.labels.get(UNIT_LABEL);
    if found.map(String::as_str) != Some(unit) {
        return Err(ShimError::ForeignContainer {
            name: container.to_owned(),
            unit: unit.to_owned(),
            found: found.cloned(),
        });
    }
    if !c.running {
        return Err(RuntimeError::NoSuchContainer(format!(
            "{container} (it is not running, so there is nothing to reload)"
        ))
        .into());
    }
    if let Some(signal) = spec.reload.signal {
        runtime.kill(&c.id, &signal.to_string()).await?;
        tracing::info!("sent {signal} to container {container} (ReloadSignal=)");
        return Ok(Reloaded::Signalled);
    }
    let result = runtime.exec(&c.id, &spec.reload.cmd).await?;
    for out in &result.output {
        // The journal is gone only when systemd is: nothing to report to.
        let _ = match out.stream {
            OutputStream::Stdout => std::io::stdout().write_all(&out.bytes),
            OutputStream::Stderr => std::io::stderr().write_all(&out.bytes),
        };
    }
    if result.exit_code != 0 {
        tracing::warn!(
            "ReloadCmd= in container {container} exited with status {}",
            result.exit_code
        );
    }
    Ok(Reloaded::Ran(result.exit_code))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use flotilla_proto::UnitName;

    use super::*;
    use crate::container::config::{create_config, parse_spec};
    use crate::container::fake::{Call, FakeRuntime};
    use crate::container::runtime::CgroupDriver;

    fn spec(section: &str) -> ContainerSpec {
        let unit = UnitName::parse("web.service").unwrap();
        let text = format!("[X-Container]\nImage=local/busybox:latest\n{section}\n");
        parse_spec(&unit, Path::new("/run/systemd/system/web.service"), &text).unwrap()
    }

    async fn running(fake: &FakeRuntime, spec: &ContainerSpec) -> String {
        let unit = UnitName::parse("web.service").unwrap();
        let config = create_config(spec, &unit, Vec::new(), "/x".into(), None);
        let id = fake.create(&config).await.unwrap();
        fake.start(&id).await.unwrap();
        id
    }

    #[tokio::test]
    async fn a_reload_signals_or_execs_in_the_units_container() {
        let fake = FakeRuntime::new(CgroupDriver::Cgroupfs, &["local/busybox:latest"]);
        let s = spec("ReloadCmd=/bin/sh -c \"kill -HUP 1\"");
        let id = running(&fake, &s).await;
        let done = reload_with(&fake, "web.service", &s, "flotilla-web")
            .await
            .unwrap();
        assert_eq!(done, Reloaded::Ran(0));
        assert!(fake.calls().contains(&Call::Exec(
            id.clone(),
            vec!["/bin/sh".into(), "-c".into(), "kill -HUP 1".into()]
        )));
        let s = spec("ReloadSignal=USR1");
        let done = reload_with(&fake, "web.service", &s, "flotilla-web")
            .await
            .unwrap();
        assert_eq!(done, Reloaded::Signalled);
        assert!(fake.calls().contains(&Call::Kill(id, "SIGUSR1".into())));
    }

    #[tokio::test]
    async fn another_units_container_is_not_reloaded() {
        let fake = FakeRuntime::new(CgroupDriver::Cgroupfs, &["local/busybox:latest"]);
        let s = spec("ReloadSignal=HUP");
        running(&fake, &s).await;
        let err = reload_with(&fake, "other.service", &s, "flotilla-web")
            .await
            .unwrap_err();
        assert!(matches!(err, ShimError::ForeignContainer { .. }), "{err}");
        let err = reload_with(&fake, "web.service", &s, "missing")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no container missing"), "{err}");
        assert!(!fake.calls().iter().any(|c| matches!(c, Call::Kill(..))));
    }

    #[test]
    fn exec_reload_is_rendered_only_when_asked() {
        assert_eq!(exec_reload(&spec(""), "/f", "web.service"), None);
        assert_eq!(
            exec_reload(&spec("ReloadSignal=HUP"), "/f", "web.service"),
            Some((
                "ExecReload",
                "/f shim reload --unit web.service --container flotilla-web".to_owned()
            ))
        );
    }
}
