//! Test hosts for container units without a server: a real systemd host
//! with Docker and the test image, the flotilla binary inside it as the
//! shim, and unit files rendered as the agent renders them.

use std::path::{Path, PathBuf};

use flotilla_agent::container::render::render_service;
use flotilla_proto::UnitSpec;
use flotilla_testbed::{CgroupDriver, Host, HostOptions};

use super::TempDir;

/// Where the binary is in the hosts.
pub const SHIM: &str = "/opt/flotilla/bin/flotilla";
/// Where the test's unit files are handed to the hosts.
pub const DROP: &str = "/srv/flotilla-units";
/// The busybox image every test host has loaded.
pub const IMAGE: &str = "local/busybox:latest";

/// Boots host `name` with the binary at [`SHIM`] and a directory of unit
/// files at [`DROP`], starts Docker with `driver` and loads [`IMAGE`].
pub fn boot(name: &str, driver: CgroupDriver) -> (Host, TempDir) {
    let units = TempDir::new(name);
    let options = HostOptions {
        binds_ro: vec![
            (
                PathBuf::from(env!("CARGO_BIN_EXE_flotilla")),
                PathBuf::from(SHIM),
            ),
            (units.path().to_owned(), PathBuf::from(DROP)),
        ],
        ..HostOptions::default()
    };
    let host = Host::boot(name, &options).unwrap();
    host.start_docker(driver).unwrap();
    host.load_busybox().unwrap();
    (host, units)
}

/// Renders the unit file `file` (`web.service`, `db.network`...) as the
/// agent does and installs it in the host's `/run/systemd/system`; returns
/// its unit name (`db.network` is `db-network.service`).
pub fn install(host: &Host, units: &TempDir, file: &str, text: &str) -> String {
    let checked = UnitSpec::check(file, file, text).unwrap();
    let rendered = render_service(&checked.spec, Path::new(SHIM)).unwrap();
    let name = checked.spec.name.as_str();
    units.write(name, &rendered.to_string());
    host.sh(&format!(
        "cp {DROP}/{name} /run/systemd/system/{name} && systemctl daemon-reload"
    ))
    .unwrap();
    name.to_owned()
}

/// `docker inspect` of a container, as JSON.
pub fn inspect(host: &Host, container: &str) -> serde_json::Value {
    let text = host.sh(&format!("docker inspect {container}")).unwrap();
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    all[0].clone()
}

/// The unit's journal, its messages only.
pub fn journal(host: &Host, unit: &str) -> String {
    host.sh(&format!("journalctl -q -u {unit} --no-pager -o cat"))
        .unwrap()
}
