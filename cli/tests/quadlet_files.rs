//! Podman Quadlet files as they are: `NAME.container` is the unit
//! `NAME.service` for `verify`, `submit`, `start` and `apply`, with its
//! Quadlet drop-ins merged in; errors name the file and line they are in;
//! Quadlet's other files are reported, not silently skipped.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::process::{Command, Output, Stdio};

use common::{ServerProcess, TempDir, ok, stderr, stdout};

const WEB: &str = "[Unit]\nDescription=web\n\n[Container]\nImage=\"docker.io/library/nginx:1.27\"\nPublishPort=:8080:80\n\n[Service]\nRestart=always\n\n[Install]\nWantedBy=default.target\n";

fn flotilla(args: &[&str], dir: &TempDir) -> Output {
    Command::new(common::BIN)
        .args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn verify_checks_a_container_file_as_its_service_with_its_dropins() {
    let dir = TempDir::new("quadlet-verify");
    dir.write("web.container", WEB);
    let out = flotilla(&["verify", "-o", "json", "web.container"], &dir);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["files"][0]["unit"], "web.service");

    // A drop-in's error names the drop-in and its own line; the top-level
    // container.d applies too.
    dir.write(
        "web.container.d/10-env.conf",
        "# more settings\n[Container]\nEnvironment=A=\\x41\nPublishPort=x\n",
    );
    dir.write("container.d/20-all.conf", "[Container]\nUser=nobody:\n");
    let out = flotilla(&["verify", "web.container"], &dir);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("web.container.d/10-env.conf:4: error: [Container] PublishPort: expected"),
        "{text}"
    );
    assert!(
        text.contains("container.d/20-all.conf:2: error: [Container] User: expected"),
        "{text}"
    );
    assert!(
        text.ends_with("1 unit file checked: 2 errors, 0 warnings\n"),
        "{text}"
    );
}

#[test]
fn verify_of_a_directory_reads_container_files_and_reports_the_others() {
    let dir = TempDir::new("quadlet-dir");
    dir.write("units/web.container", WEB);
    dir.write(
        "units/bad.container",
        "[Container]\nImage=nginx\nPod=x.pod\n",
    );
    dir.write("units/net.network", "[Network]\n");
    dir.write("units/data.volume", "[Volume]\n");
    dir.write("units/app.pod", "[Pod]\n");
    let out = flotilla(&["verify", "units"], &dir);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        "units/app.pod: warning: Podman Quadlet .pod files are not read by flotilla: skipped\n\
         units/bad.container:3: error: [Container] Pod: this Podman Quadlet key is not supported by flotilla; Docker has no pods: run each container as a unit of its own, ordered with After= and BindsTo=\n\
         4 unit files checked: 1 error, 1 warning\n"
    );
}

#[test]
fn submit_start_and_apply_take_container_files() {
    let dir = TempDir::new("quadlet-server");
    let s = ServerProcess::start(&dir.path().join("data"), &[]);
    dir.write("web.container", WEB);
    dir.write(
        "web.container.d/10-port.conf",
        "[Container]\nPublishPort=9090:90\n",
    );
    ok(&s.run(dir.path(), &["submit", "web.container"]));
    let cat = ok(&s.run(dir.path(), &["cat", "web.service"]));
    assert!(cat.starts_with(WEB), "{cat}");
    assert!(
        cat.ends_with("\n\n[Container]\nPublishPort=9090:90\n"),
        "{cat}"
    );

    // start names the unit by its .container file, and a template's
    // instance from the local template's .container.
    dir.write(
        "worker@.container",
        "[Container]\nImage=busybox\nExec=echo %i\n",
    );
    ok(&s.run(
        dir.path(),
        &["start", "--no-block", "web.container", "worker@1.container"],
    ));
    let units = ok(&s.run(dir.path(), &["list-unit-files"]));
    assert!(units.contains("web.service"), "{units}");
    assert!(units.contains("worker@1.service"), "{units}");

    // A bad drop-in is refused naming the drop-in, and nothing changes.
    dir.write(
        "web.container.d/20-bad.conf",
        "[Container]\nStopTimeout=soon\n",
    );
    let out = s.run(dir.path(), &["submit", "--replace", "web.container"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("web.container.d/20-bad.conf:2: error: [Container] StopTimeout:"),
        "{}",
        stderr(&out)
    );

    // apply DIR: .container files are units, other Quadlet files reported.
    dir.write("repo/db.container", "[Container]\nImage=postgres:16\n");
    dir.write("repo/db.container.d/10.conf", "[Service]\nRestart=always\n");
    dir.write("repo/net.network", "[Network]\n");
    dir.write("repo/app.pod", "[Pod]\n");
    let repo = dir.path().join("repo");
    let out = s.run(dir.path(), &["diff", repo.to_str().unwrap()]);
    assert_eq!(
        stdout(&out),
        "+ db.service (launched)\n+ net-network.service (launched)\n"
    );
    assert!(
        stderr(&out).contains(
            "app.pod: warning: Podman Quadlet .pod files are not read by flotilla: skipped"
        ),
        "{}",
        stderr(&out)
    );
    ok(&s.run(dir.path(), &["apply", "--no-block", repo.to_str().unwrap()]));
    assert_eq!(
        ok(&s.run(dir.path(), &["cat", "db.service"])),
        "[Container]\nImage=postgres:16\n\n[Service]\nRestart=always\n"
    );
}
