//! A Quadlet `.container` file and its drop-in, as they are, run on a real
//! systemd host with a real Docker engine: the values reach the container
//! as Quadlet and systemd would give them (C escapes decoded, specifiers of
//! the system manager expanded, a quoted `Image=`, an empty `Entrypoint=`,
//! `Environment=NAME` taking the service's own variable from
//! `[Service] Environment=`, and `${NAME}` and `$$` in `Exec=` substituted
//! from it as systemd does in Quadlet's `ExecStart=`).
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::path::Path;
use std::time::Duration;

use common::containers::{self, DROP, SHIM};
use flotilla_agent::container::render::render_service;
use flotilla_proto::UnitName;
use flotilla_proto::quadlet::{Merged, Source};
use flotilla_testbed::CgroupDriver;

const CONTAINER: &str = r#"[Unit]
Description=values as Quadlet reads them

[Container]
Image="local/busybox:latest"
Entrypoint=
Exec=sh -c 'echo "from-service=$FROM_SERVICE unset=$${UNSET_ONE-none} escaped=$ESCAPED home=%h run=%t systemd=${FROM_SERVICE} braced=$BRACED price=$PRICE"'
Environment=FROM_SERVICE UNSET_ONE BRACED=${FROM_SERVICE}! PRICE=$$5

[Service]
Environment="FROM_SERVICE=hello world"
"#;

const DROPIN: &str = "[Container]\nEnvironment=ESCAPED=\\x41\\102\\u00e9\\sx\n";

#[test]
fn a_quadlet_file_runs_with_its_values_as_quadlet_reads_them() {
    let (host, units) = containers::boot("quadlet-ct", CgroupDriver::Cgroupfs);

    let merged = Merged::new(
        Source {
            file: "values.container".into(),
            text: CONTAINER.into(),
        },
        vec![Source {
            file: "values.container.d/10-escaped.conf".into(),
            text: DROPIN.into(),
        }],
    );
    let name = UnitName::parse("values.service").unwrap();
    let (checked, _) = merged.check(&name).unwrap();
    let rendered = render_service(&checked.spec, Path::new(SHIM)).unwrap();
    units.write("values.service", &rendered.to_string());
    host.sh(&format!(
        "cp {DROP}/values.service /run/systemd/system/values.service && systemctl daemon-reload"
    ))
    .unwrap();
    let _ = host
        .output(&["systemctl", "start", "values.service"])
        .unwrap();

    let journal = || {
        host.sh("journalctl -q -u values.service --no-pager -o cat")
            .unwrap_or_default()
    };
    let expected = "from-service=hello world unset=none escaped=AB\u{e9} x home=/root run=/run systemd=hello world braced=hello world! price=$5";
    let found = host.wait_for("the container's line", Duration::from_secs(30), || {
        journal().lines().any(|l| l == expected)
    });
    assert!(found.is_ok(), "{found:?}\n{}", journal());
}
