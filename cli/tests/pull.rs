//! Container units pulling their images from real registries, through a
//! real cluster: `flotilla dev` (a server and an agent) on a systemd test
//! host with Docker, units started with the `flotilla` CLI, and what they
//! did read back with `flotilla list-units` and the unit's journal.
//!
//! Two registries (Debian's `docker-registry`, see the testbed's
//! `Registry`): a plain one, and one with TLS and a user. Their images are
//! built on the host, pushed, and removed from the host, so that the
//! units have to pull them.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::TempDir;
use common::hosts::HOST_BIN;
use flotilla_testbed::{CgroupDriver, Host, HostOptions, Registry};

/// Where the test's unit files are in the host.
const UNITS: &str = "/srv/flotilla-units";
const DEADLINE: Duration = Duration::from_secs(60);
const USER: &str = "alice";
const PASSWORD: &str = "pull-s3cret";

struct Cluster {
    host: Host,
    units: TempDir,
}

impl Cluster {
    fn boot() -> Cluster {
        let units = TempDir::new("pull-units");
        let host = Host::boot(
            "flt-pull",
            &HostOptions {
                binds_ro: vec![
                    (PathBuf::from(common::BIN), PathBuf::from(HOST_BIN)),
                    (units.path().to_owned(), PathBuf::from(UNITS)),
                ],
                ..HostOptions::default()
            },
        )
        .unwrap();
        host.start_docker(CgroupDriver::Cgroupfs).unwrap();
        host.load_busybox().unwrap();
        let port = flotilla_testbed::free_port();
        // Ready (READY=1) once its own machine is registered; the CLI in
        // the host is set up by it.
        host.spawn_unit(
            "flotilla-dev",
            &[
                "--property=Type=notify",
                "--setenv=HOME=/root",
                HOST_BIN,
                "dev",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
                "/var/lib/flotilla-dev",
            ],
        )
        .unwrap();
        Cluster { host, units }
    }

    fn flotilla(&self, args: &[&str]) -> Output {
        let mut argv = vec![HOST_BIN];
        argv.extend_from_slice(args);
        self.host.output(&argv).unwrap()
    }

    fn sh(&self, script: &str) -> String {
        self.host.sh(script).unwrap()
    }

    /// An image `reference` whose `/version` says `version`, built on the
    /// host from its busybox.
    fn build(&self, reference: &str, version: &str) {
        self.sh(&format!(
            "set -e; d=$(mktemp -d); mkdir -p $d/bin; cp $(command -v busybox) $d/bin/busybox; \
             for c in sh sleep cat; do ln -sf busybox $d/bin/$c; done; echo {version} > $d/version; \
             tar -C $d -c . | docker import - {reference} >/dev/null; rm -rf $d"
        ));
    }

    fn local(&self, reference: &str) -> bool {
        self.host
            .output(&["docker", "image", "inspect", reference])
            .unwrap()
            .status
            .success()
    }

    /// Starts the unit `name` with `[Container]` lines `container` (and
    /// `[Service]` lines `service`) through the cluster, without waiting.
    fn start(&self, name: &str, container: &str, service: &str) {
        self.units.write(
            name,
            &format!("[Container]\n{container}\nStopTimeout=1s\n\n[Service]\n{service}\n"),
        );
        let out = self.flotilla(&["start", "--no-block", &format!("{UNITS}/{name}")]);
        assert!(
            out.status.success(),
            "flotilla start {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The unit's row in `flotilla list-units -o json`.
    fn row(&self, unit: &str) -> Option<serde_json::Value> {
        let out = self.flotilla(&["list-units", "-o", "json"]);
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).ok()?;
        rows.into_iter().find(|r| r["unit"] == unit)
    }

    fn journal(&self, unit: &str) -> String {
        self.sh(&format!("journalctl -q -u {unit} --no-pager -o cat"))
    }

    fn wait_for<T>(&self, unit: &str, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let until = Instant::now() + DEADLINE;
        loop {
            if let Some(v) = check() {
                return v;
            }
            assert!(
                Instant::now() < until,
                "{unit}: {what} did not happen within {}s\nrow: {:?}\njournal:\n{}",
                DEADLINE.as_secs(),
                self.row(unit),
                self.journal(unit)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the unit runs and its container has printed its
    /// version; returns the journal.
    fn running(&self, unit: &str, version: &str) -> String {
        self.wait_for(unit, "active, its version printed", || {
            let row = self.row(unit)?;
            let journal = self.journal(unit);
            (row["activeState"] == "active" && journal.lines().any(|l| l == version))
                .then_some(journal)
        })
    }

    /// Waits until `list-units` reports the unit failed; returns its error,
    /// after checking the journal says the same.
    fn failed(&self, unit: &str) -> String {
        let error = self.wait_for(unit, "failed with a reason", || {
            let row = self.row(unit)?;
            (row["activeState"] == "failed")
                .then(|| row["lastError"].as_str().map(str::to_owned))
                .flatten()
        });
        let reason = error
            .strip_prefix("the container did not start: ")
            .unwrap_or_else(|| panic!("{unit}: not the shim's reason: {error}"));
        let journal = self.journal(unit);
        assert!(journal.contains(reason), "{unit}: {reason}\n{journal}");
        error
    }
}

/// A TCP server that accepts connections and never answers: a registry
/// that hangs.
struct Silent {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Silent {
    fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => held.push(stream),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(_) => break,
                }
            }
        });
        Silent {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn b64(s: &str) -> String {
    // The host's base64, not a dependency of the tests.
    let out = std::process::Command::new("sh")
        .args(["-c", "printf %s \"$0\" | base64 -w0", s])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// Pulls from a plain registry: the image is pulled when it is not local,
/// `Pull=missing` keeps a local image, `Pull=always` pulls a changed tag
/// again, `Pull=newer` pulls only when the registry's digest differs, and
/// two units needing the same image pull it once.
fn plain_registry(c: &Cluster, reg: &Registry) {
    let app = format!("{}/app:1", reg.address());
    c.build(&app, "v1");
    reg.push(&c.host, &app, "app:1", None).unwrap();
    assert!(!c.local(&app), "the image is not on the host before");

    c.start(
        "first.service",
        &format!("Image={app}\nExec=sh -c 'cat /version; exec sleep 1000'"),
        "",
    );
    let journal = c.running("first.service", "v1");
    assert!(
        journal.contains(&format!("pulling image {app}")),
        "{journal}"
    );
    assert!(journal.contains(": Pull complete"), "{journal}");
    // One line per layer state, not one per progress tick.
    let downloading = journal
        .lines()
        .filter(|l| l.ends_with(": Downloading"))
        .count();
    let layers = journal
        .lines()
        .filter(|l| l.ends_with(": Pull complete"))
        .count();
    assert!(downloading <= layers, "{journal}");
    assert!(c.local(&app));

    // The tag changes in the registry.
    c.build(&app, "v2");
    reg.push(&c.host, &app, "app:1", None).unwrap();
    c.build(&app, "v1-local");
    c.start(
        "missing.service",
        &format!("Image={app}\nExec=sh -c 'cat /version; exec sleep 1000'"),
        "",
    );
    let journal = c.running("missing.service", "v1-local");
    assert!(!journal.contains("pulling image"), "{journal}");
    c.start(
        "always.service",
        &format!("Image={app}\nPull=always\nExec=sh -c 'cat /version; exec sleep 1000'"),
        "",
    );
    c.running("always.service", "v2");

    // The local image (v2, as pulled) stays: the push of v3 removes the
    // tag from the host, which gets it back.
    c.sh(&format!("docker tag {app} keep/app:v2"));
    c.build(&app, "v3");
    reg.push(&c.host, &app, "app:1", None).unwrap();
    c.sh(&format!("docker tag keep/app:v2 {app}"));
    c.start(
        "newer.service",
        &format!("Image={app}\nPull=newer\nExec=sh -c 'cat /version; exec sleep 1000'"),
        "",
    );
    let journal = c.running("newer.service", "v3");
    assert!(
        journal.contains("the registry has a newer image"),
        "{journal}"
    );
    c.start(
        "newer2.service",
        &format!("Image={app}\nPull=newer\nExec=sh -c 'cat /version; exec sleep 1000'"),
        "",
    );
    let journal = c.running("newer2.service", "v3");
    assert!(
        journal.contains("is up to date with its registry"),
        "{journal}"
    );
    assert!(!journal.contains("pulling image"), "{journal}");

    // Two units, one new image: one pull.
    let shared = format!("{}/shared:1", reg.address());
    c.build(&shared, "s1");
    reg.push(&c.host, &shared, "shared:1", None).unwrap();
    for unit in ["s1.service", "s2.service"] {
        c.units.write(
            unit,
            &format!(
                "[Container]\nImage={shared}\nExec=sh -c 'cat /version; exec sleep 1000'\nStopTimeout=1s\n"
            ),
        );
    }
    let out = c.flotilla(&[
        "start",
        "--no-block",
        &format!("{UNITS}/s1.service"),
        &format!("{UNITS}/s2.service"),
    ]);
    assert!(out.status.success());
    c.running("s1.service", "s1");
    c.running("s2.service", "s1");
    let pulls = ["s1.service", "s2.service"]
        .iter()
        .filter(|u| c.journal(u).contains(&format!("pulling image {shared}")))
        .count();
    assert_eq!(pulls, 1, "the image is pulled once");

    // Pull=never and an image only in the registry.
    let other = format!("{}/other:1", reg.address());
    c.build(&other, "o1");
    reg.push(&c.host, &other, "other:1", None).unwrap();
    c.start("never.service", &format!("Image={other}\nPull=never"), "");
    let error = c.failed("never.service");
    assert!(
        error.contains(&format!(
            "image {other} is not on this host and Pull=never forbids pulling it"
        )),
        "{error}"
    );
    // The table shows the reason too.
    let table = c.flotilla(&["list-units"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("Pull=never forbids pulling it"), "{table}");

    // An image the registry does not have.
    c.start(
        "absent.service",
        &format!("Image={}/nothere:1", reg.address()),
        "",
    );
    let error = c.failed("absent.service");
    assert!(
        error.contains(&format!(
            "image {}/nothere:1 is not in its registry",
            reg.address()
        )),
        "{error}"
    );
}

/// `AutoUpdate=registry`: when the registry's image changes, the running
/// unit pulls it and restarts onto it.
fn auto_update(c: &Cluster, reg: &Registry) {
    let auto = format!("{}/auto:1", reg.address());
    c.build(&auto, "a1");
    reg.push(&c.host, &auto, "auto:1", None).unwrap();
    c.start(
        "auto.service",
        &format!("Image={auto}\nAutoUpdate=registry\nExec=sh -c 'cat /version; exec sleep 1000'"),
        "Environment=FLOTILLA_AUTO_UPDATE_INTERVAL=1s",
    );
    c.running("auto.service", "a1");
    // The registry gets a new image under the tag; the host keeps the one
    // it runs.
    let running = c.sh(&format!("docker image inspect -f '{{{{.Id}}}}' {auto}"));
    c.build("local/auto-next:1", "a2");
    reg.push(&c.host, "local/auto-next:1", "auto:1", None)
        .unwrap();
    c.sh(&format!("docker tag {} {auto}", running.trim()));
    let journal = c.wait_for("auto.service", "restarted onto the new image", || {
        let journal = c.journal("auto.service");
        journal.lines().any(|l| l == "a2").then_some(journal)
    });
    assert!(
        journal.contains("AutoUpdate=registry: a newer image"),
        "{journal}"
    );
    c.running("auto.service", "a2");
}

/// Pulls from a TLS registry that wants a user: the right credentials in
/// `AuthFile=` or in the host's Docker configuration pull, wrong or
/// missing ones fail the unit saying so, and the secret is never shown.
fn registry_with_auth(c: &Cluster, sec: &Registry) {
    sec.trust_on(&c.host).unwrap();
    let app = format!("{}/private:1", sec.address());
    c.build(&app, "p1");
    sec.push(&c.host, &app, "private:1", Some((USER, PASSWORD)))
        .unwrap();
    assert!(!c.local(&app));
    let auth = |password: &str| {
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{}"}}}}}}"#,
            sec.address(),
            b64(&format!("{USER}:{password}"))
        )
    };
    c.sh(&format!(
        "mkdir -p /etc/flotilla && cat > /etc/flotilla/wrong.json <<'EOF'\n{}\nEOF\ncat > /etc/flotilla/good.json <<'EOF'\n{}\nEOF",
        auth("wrong-password"),
        auth(PASSWORD)
    ));

    c.start(
        "wrong.service",
        &format!("Image={app}\nAuthFile=/etc/flotilla/wrong.json"),
        "",
    );
    let error = c.failed("wrong.service");
    assert!(
        error.contains(&format!(
            "the registry refused to serve image {app} (wrong or missing credentials)"
        )),
        "{error}"
    );

    c.start("anonymous.service", &format!("Image={app}"), "");
    let error = c.failed("anonymous.service");
    assert!(
        error.contains(&format!(
            "this host has no credentials for registry {}",
            sec.address()
        )),
        "{error}"
    );

    c.start(
        "authfile.service",
        &format!("Image={app}\nAuthFile=/etc/flotilla/good.json\nExec=sh -c 'cat /version; exec sleep 1000'"),
        "",
    );
    let journal = c.running("authfile.service", "p1");
    assert!(
        journal.contains(&format!(
            "with the credentials for {} in /etc/flotilla/good.json",
            sec.address()
        )),
        "{journal}"
    );

    // The host's own Docker configuration, as `docker login` writes it.
    // Untagged (its container still runs): the unit has to pull it again.
    c.sh(&format!("docker rmi -f {app} >/dev/null"));
    c.sh(&format!(
        "printf %s '{PASSWORD}' | docker login -u {USER} --password-stdin {} >/dev/null 2>&1",
        sec.address()
    ));
    c.start(
        "login.service",
        &format!("Image={app}\nExec=sh -c 'cat /version; exec sleep 1000'"),
        "",
    );
    let journal = c.running("login.service", "p1");
    assert!(
        journal.contains("in /root/.docker/config.json"),
        "{journal}"
    );

    // A credential helper named by the Docker configuration in
    // DOCKER_CONFIG, found on the unit's PATH.
    c.sh(&format!("docker rmi -f {app} >/dev/null"));
    c.sh(&format!(
        r#"set -e; mkdir -p /etc/flotilla/bin /etc/flotilla/helper
cat > /etc/flotilla/bin/docker-credential-flotest <<'EOF'
#!/bin/sh
read server
printf '{{"ServerURL":"%s","Username":"{USER}","Secret":"{PASSWORD}"}}' "$server"
EOF
chmod 755 /etc/flotilla/bin/docker-credential-flotest
echo '{{"credHelpers": {{"{}": "flotest"}}}}' > /etc/flotilla/helper/config.json"#,
        sec.address()
    ));
    c.start(
        "helper.service",
        &format!("Image={app}\nExec=sh -c 'cat /version; exec sleep 1000'"),
        "Environment=DOCKER_CONFIG=/etc/flotilla/helper \"PATH=/etc/flotilla/bin:/usr/sbin:/usr/bin:/sbin:/bin\"",
    );
    let journal = c.running("helper.service", "p1");
    assert!(
        journal.contains("in /etc/flotilla/helper/config.json"),
        "{journal}"
    );

    let all = c.sh("journalctl -q --no-pager -o cat");
    assert!(!all.contains(PASSWORD), "the password is in the journal");
    assert!(
        !all.contains(&b64(&format!("{USER}:{PASSWORD}"))),
        "the encoded credentials are in the journal"
    );
}

/// A registry that cannot be reached, and one that never answers (the pull
/// ends with the unit's start timeout).
fn unreachable_registries(c: &Cluster) {
    let mut gone = Registry::plain().unwrap();
    let address = gone.address();
    gone.stop();
    c.start("unreachable.service", &format!("Image={address}/app:1"), "");
    let error = c.failed("unreachable.service");
    assert!(
        error.contains(&format!(
            "cannot reach the registry of image {address}/app:1"
        )),
        "{error}"
    );
    drop(gone);

    let silent = Silent::start();
    let image = format!("127.0.0.1:{}/app:1", silent.port);
    let started = Instant::now();
    c.start(
        "slow.service",
        &format!("Image={image}"),
        "TimeoutStartSec=6s",
    );
    let error = c.failed("slow.service");
    assert!(
        error.contains(&format!(
            "pulling image {image} did not finish within the unit's start timeout (TimeoutStartSec=6s)"
        )),
        "{error}"
    );
    // The shim gave up, not systemd.
    let result = c.sh("systemctl show -P Result slow.service");
    assert_eq!(result.trim(), "exit-code", "{error}");
    assert!(started.elapsed() < DEADLINE);
}

#[test]
fn container_units_pull_from_real_registries() {
    let c = Cluster::boot();
    let reg = Registry::plain().unwrap();
    let sec = Registry::with_auth(USER, PASSWORD).unwrap();
    plain_registry(&c, &reg);
    auto_update(&c, &reg);
    registry_with_auth(&c, &sec);
    unreachable_registries(&c);
}
