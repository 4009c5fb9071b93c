//! Secrets end to end on a real systemd host with Docker: a `flotilla
//! server` here, a test host running the real agent, and the CLI as a
//! user runs it. The container reads the secret; the value is in no unit
//! read, listing, journal or (for a file) `docker inspect`; a new value
//! restarts the unit; the host's copy goes with the unit.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use common::hosts::{HOST_BIN, journal, start_agent, wait_for};
use common::{BIN, ServerProcess, TempDir, ok};
use flotilla_testbed::{CgroupDriver, Host, HostOptions};

const FILE_VALUE: &str = "s3cr3t-file-value-7f1c";
const NEW_VALUE: &str = "s3cr3t-rotated-value-91ab";
const ENV_VALUE: &str = "s3cr3t-env-value-c0de";

const UNIT: &str = "[Unit]\nDescription=app\n\n[Container]\nImage=local/busybox:latest\n\
Exec=sleep 100000\nSecret=db\nSecret=db,target=/etc/app/db.conf,uid=1000,mode=0440\n\
Secret=token,type=env,target=API_TOKEN\nStopTimeout=1\n";

const HOST_DIR: &str = "/run/flotilla/secrets/app.service";

fn docker(host: &Host, script: &str) -> String {
    host.sh(script).unwrap_or_default().trim().to_owned()
}

#[test]
fn secrets_reach_the_container_only() {
    let dir = TempDir::new("secrets-host");
    let data = dir.path().join("data");
    let server = ServerProcess::start_with_ttl(&data, "10s", &[]);
    let host = Host::boot(
        "flt-secrets",
        &HostOptions {
            binds_ro: vec![(BIN.into(), HOST_BIN.into())],
            ..HostOptions::default()
        },
    )
    .unwrap();
    host.start_docker(CgroupDriver::Cgroupfs).unwrap();
    host.load_busybox().unwrap();
    start_agent(&host, &server, "role=web");

    dir.write("db.txt", FILE_VALUE);
    dir.write("token.txt", ENV_VALUE);
    ok(&server.run(dir.path(), &["secret", "create", "db", "--file", "db.txt"]));
    ok(&server.run(
        dir.path(),
        &["secret", "create", "token", "--file", "token.txt"],
    ));
    dir.write("app.service", UNIT);
    ok(&server.run(dir.path(), &["start", "--no-block", "app.service"]));

    // The container reads both files, and has the variable.
    let read = |path: &str| docker(&host, &format!("docker exec flotilla-app cat {path}"));
    wait_for(&host, "the container reads the secret", || {
        (read("/run/secrets/db") == FILE_VALUE).then_some(())
    });
    assert_eq!(read("/etc/app/db.conf"), FILE_VALUE);
    assert_eq!(
        docker(&host, "docker exec flotilla-app sh -c 'echo $API_TOKEN'"),
        ENV_VALUE
    );
    // Owned and moded as asked; read-only.
    assert_eq!(
        docker(
            &host,
            "docker exec flotilla-app busybox stat -c '%u %a' /etc/app/db.conf /run/secrets/db"
        ),
        "1000 440\n0 400"
    );
    let write = host.sh("docker exec flotilla-app sh -c 'echo x > /run/secrets/db'");
    assert!(write.is_err(), "the secret is writable in the container");
    // On the host: tmpfs, root only.
    assert_eq!(
        docker(&host, &format!("stat -c '%a %U' {HOST_DIR} {HOST_DIR}/db")),
        "700 root\n400 root"
    );
    assert_eq!(
        docker(&host, "stat -f -c %T /run/flotilla/secrets"),
        "tmpfs"
    );

    // The value is in no read: the unit, the listings, the journals, and
    // for the file secret docker inspect (the variable is, as documented).
    let reads = [
        ok(&server.run(dir.path(), &["cat", "app.service"])),
        ok(&server.run(dir.path(), &["list-unit-files", "-o", "json"])),
        ok(&server.run(dir.path(), &["secret", "list", "-o", "json"])),
        ok(&server.run(dir.path(), &["secret", "list"])),
        ok(&server.run(dir.path(), &["audit"])),
        ok(&server.run(dir.path(), &["events"])),
        docker(&host, "journalctl --no-pager -o cat -u app.service"),
        journal(&host),
        docker(&host, "cat /run/systemd/system/app.service"),
    ];
    for text in &reads {
        for value in [FILE_VALUE, ENV_VALUE] {
            assert!(!text.contains(value), "{value} shows in:\n{text}");
        }
    }
    let listed = ok(&server.run(dir.path(), &["secret", "list", "-o", "json"]));
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["name"], "db");
    assert_eq!(listed[0]["usedBy"][0], "app.service");
    let inspect = docker(&host, "docker inspect flotilla-app");
    assert!(!inspect.contains(FILE_VALUE), "{inspect}");
    assert!(
        inspect.contains(ENV_VALUE),
        "the variable is in docker inspect"
    );

    // A new value restarts the unit, which then reads it.
    let first = docker(&host, "docker inspect -f '{{.Id}}' flotilla-app");
    dir.write("db.txt", NEW_VALUE);
    ok(&server.run(dir.path(), &["secret", "set", "db", "--file", "db.txt"]));
    wait_for(&host, "the container reads the new value", || {
        (read("/run/secrets/db") == NEW_VALUE).then_some(())
    });
    let second = docker(&host, "docker inspect -f '{{.Id}}' flotilla-app");
    assert_ne!(first, second, "the container was not made again");
    assert_eq!(read("/etc/app/db.conf"), NEW_VALUE);

    // Destroyed: the host's copy goes.
    ok(&server.run(dir.path(), &["destroy", "app.service"]));
    wait_for(&host, "the secrets leave the host", || {
        host.sh(&format!("test -e {HOST_DIR}"))
            .is_err()
            .then_some(())
    });
}

#[test]
fn the_secrets_key_is_made_once_or_given() {
    use std::os::unix::fs::PermissionsExt;

    let dir = TempDir::new("secrets-key");
    // Made at the first start, owner-only, and kept.
    let data = dir.path().join("data");
    let server = ServerProcess::start(&data, &[]);
    let key = data.join("secrets.key");
    let made = std::fs::read_to_string(&key).unwrap();
    assert_eq!(made.trim().len(), 64, "{made}");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    server.kill();
    let server = ServerProcess::start(&data, &[]);
    assert_eq!(std::fs::read_to_string(&key).unwrap(), made);
    server.kill();

    // Given: used, and none is made in the data directory.
    let given = dir.write("cluster.key", &made);
    let other = dir.path().join("other");
    let server = ServerProcess::start(&other, &["--secrets-key", given.to_str().unwrap()]);
    assert!(!other.join("secrets.key").exists());
    server.kill();

    // A server that must not start: what it says on stderr.
    let refused = |data: &std::path::Path, key: &std::path::Path| {
        // Bounded: a server that starts instead is killed after 30 s.
        let out = std::process::Command::new("timeout")
            .args(["30", BIN, "server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .arg("--secrets-key")
            .arg(key)
            .env_remove("FLOTILLA_TOKEN")
            .env_remove("FLOTILLA_TOKEN_FILE")
            .env_remove("FLOTILLA_CONFIG")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{err}");
        err
    };

    // Given and missing, or not a key: the server refuses to start.
    for (file, says) in [
        ("missing.key", "cannot read the secrets key"),
        ("cluster.token", "is not a secrets key"),
    ] {
        if file == "cluster.token" {
            dir.write(file, "not a key\n");
        }
        let err = refused(
            &dir.path().join(format!("data-{file}")),
            &dir.path().join(file),
        );
        assert!(err.contains(says) && err.contains(file), "{err}");
    }

    // A key other than the one the cluster's secrets are sealed with: the
    // server refuses to start rather than seal values the others cannot
    // open.
    let stranger = dir.write("stranger.key", &format!("{}\n", "ab".repeat(32)));
    let err = refused(&data, &stranger);
    assert!(
        err.contains("every server of a cluster needs the same secrets key"),
        "{err}"
    );
    // Rotated on purpose: the new key becomes the cluster's, and the old
    // one is the stranger now.
    let server = ServerProcess::start(
        &data,
        &[
            "--secrets-key",
            stranger.to_str().unwrap(),
            "--replace-secrets-key",
        ],
    );
    server.kill();
    let err = refused(&data, &given);
    assert!(
        err.contains("every server of a cluster needs the same secrets key"),
        "{err}"
    );
}
