//! Container units on real systemd hosts with a real Docker engine, under
//! both of Docker's cgroup drivers: the unit is rendered as flotilla renders
//! it, written to the host's `/run/systemd/system`, and started by the
//! host's systemd, whose main process is this build's `flotilla shim`.
//!
//! One host per driver; the scenarios run one after the other in it, and
//! the two hosts run side by side.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::TempDir;
use common::containers::{self, IMAGE};
use flotilla_testbed::{CgroupDriver, Host};

const DEADLINE: Duration = Duration::from_secs(20);

struct TestHost {
    host: Host,
    units: TempDir,
    driver: CgroupDriver,
}

impl TestHost {
    fn boot(driver: CgroupDriver) -> TestHost {
        let (host, units) = containers::boot(&format!("ct-{}", driver.as_str()), driver);
        TestHost {
            host,
            units,
            driver,
        }
    }

    /// Renders `text` as flotilla does and installs it as `name`.
    fn install(&self, name: &str, text: &str) {
        containers::install(&self.host, &self.units, name, text);
    }

    /// `systemctl start`; on a failure, fails with what the unit said.
    fn start(&self, unit: &str) {
        let out = self.host.output(&["systemctl", "start", unit]).unwrap();
        assert!(
            out.status.success(),
            "systemctl start {unit} ({}): {}\n{}",
            self.driver.as_str(),
            String::from_utf8_lossy(&out.stderr),
            self.journal(unit)
        );
    }

    fn sh(&self, script: &str) -> String {
        self.host.sh(script).unwrap()
    }

    fn show(&self, unit: &str, property: &str) -> String {
        self.sh(&format!("systemctl show -P {property} {unit}"))
            .trim()
            .to_owned()
    }

    /// The `container=` of the unit's StatusText, and its `health=`.
    fn status(&self, unit: &str) -> Option<(String, String)> {
        let text = self.show(unit, "StatusText");
        let rest = text.strip_prefix("flotilla: container=")?;
        let (id, health) = rest.split_once(" health=")?;
        Some((id.to_owned(), health.to_owned()))
    }

    /// Polls `check` until it holds; on a timeout, fails with what `unit`
    /// went through.
    fn wait(&self, unit: &str, what: &str, check: impl FnMut() -> bool) {
        if let Err(e) = self.host.wait_for(what, DEADLINE, check) {
            let status = self
                .host
                .output(&["systemctl", "status", "--no-pager", "-l", unit]);
            let status = status.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            panic!(
                "{what} ({}): {e}\n{}\n{}",
                self.driver.as_str(),
                status.unwrap_or_default(),
                self.journal(unit)
            );
        }
    }

    fn wait_state(&self, unit: &str, state: &str) {
        self.wait(unit, &format!("{unit} {state}"), || {
            self.show(unit, "ActiveState") == state
        });
    }

    /// The names of all containers, running or not.
    fn containers(&self) -> Vec<String> {
        self.sh("docker ps -a --format '{{.Names}}'")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn container_pid(&self, name: &str) -> u32 {
        self.sh(&format!("docker inspect -f '{{{{.State.Pid}}}}' {name}"))
            .trim()
            .parse()
            .unwrap()
    }

    fn journal(&self, unit: &str) -> String {
        containers::journal(&self.host, unit)
    }
}

/// A container that ignores SIGTERM (busybox `sleep` as PID 1).
const SLEEPER: &str = "[Unit]\nDescription=sleeper\n[Container]\nImage=local/busybox:latest\n\
     Exec=sh -c 'echo hello from the container; exec sleep 1000'\nStopTimeout=1s\n";

/// The container runs in the unit's cgroup, is its main process, its
/// output is in the journal, and `systemctl stop` removes it within its
/// stop timeout although it ignores SIGTERM.
fn containment_and_stop(t: &TestHost) {
    let unit = "sleeper.service";
    t.install(unit, SLEEPER);
    t.start(unit);
    assert_eq!(t.show(unit, "ActiveState"), "active");
    let pid = t.container_pid("flotilla-sleeper");
    assert_eq!(
        t.show(unit, "MainPID"),
        pid.to_string(),
        "MainPID is the container's"
    );
    let cgroup = t.sh(&format!("cat /proc/{pid}/cgroup"));
    let expected = match t.driver {
        CgroupDriver::Cgroupfs => "0::/system.slice/sleeper.service/",
        CgroupDriver::Systemd => "0::/system.slice/sleeper.service/payload",
    };
    assert!(cgroup.contains(expected), "{cgroup}");
    let status = t.sh(&format!("systemctl status --no-pager -l {unit} || true"));
    assert!(status.contains(&format!("{pid} sleep 1000")), "{status}");
    let (id, health) = t.status(unit).unwrap();
    assert!(id.starts_with(&t.sh("docker inspect -f '{{.Id}}' flotilla-sleeper")[..12]));
    assert_eq!(health, "none");
    t.wait(unit, "the container's output in the journal", || {
        t.journal(unit).contains("hello from the container")
    });

    let started = Instant::now();
    t.sh(&format!("systemctl stop {unit}"));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "stop took {took:?}");
    assert_eq!(t.show(unit, "ActiveState"), "inactive");
    assert_eq!(t.show(unit, "Result"), "success");
    assert!(!t.containers().contains(&"flotilla-sleeper".to_owned()));
    let gone = t
        .host
        .output(&["test", "-e", &format!("/proc/{pid}")])
        .unwrap();
    assert!(!gone.status.success(), "the container's process is gone");
}

/// The container's exit status is the unit's.
fn exit_status(t: &TestHost) {
    let unit = "three.service";
    t.install(
        unit,
        "[Container]\nImage=local/busybox:latest\nExec=sh -c 'sleep 0.3; exit 3'\n",
    );
    t.start(unit);
    t.wait_state(unit, "failed");
    assert_eq!(t.show(unit, "ExecMainStatus"), "3");
    assert_eq!(t.show(unit, "Result"), "exit-code");
    t.wait(unit, "the container removed", || {
        !t.containers().contains(&"flotilla-three".to_owned())
    });
}

/// `Restart=on-failure` brings a crashed container back, as a new one.
fn restart_on_failure(t: &TestHost) {
    let unit = "crashy.service";
    t.install(
        unit,
        "[Container]\nImage=local/busybox:latest\nExec=sh -c 'sleep 1; exit 1'\n\
         [Service]\nRestart=on-failure\nRestartSec=100ms\n",
    );
    t.start(unit);
    let (first, _) = t.status(unit).unwrap();
    t.wait(unit, "a restart with a new container", || {
        t.show(unit, "NRestarts") != "0"
            && t.status(unit).is_some_and(|(id, _)| id != first)
            && t.show(unit, "ActiveState") == "active"
    });
    t.sh(&format!("systemctl stop {unit}"));
    assert!(!t.containers().contains(&"flotilla-crashy".to_owned()));
}

/// A shim killed with SIGKILL: flotilla's watchdog fails the unit, the
/// cleanup removes the container, and none is left behind.
fn killed_shim(t: &TestHost) {
    let unit = "orphan.service";
    t.install(unit, &SLEEPER.replace("sleeper", "orphan"));
    t.start(unit);
    let shim = t.sh("cat /sys/fs/cgroup/system.slice/orphan.service/shim/cgroup.procs");
    let shim = shim.trim();
    assert!(!shim.is_empty());
    t.sh(&format!("kill -KILL {shim}"));
    t.wait_state(unit, "failed");
    assert_eq!(t.show(unit, "Result"), "watchdog");
    t.wait(unit, "no container left", || {
        !t.containers().contains(&"flotilla-orphan".to_owned())
    });
    t.sh(&format!("systemctl reset-failed {unit}"));
}

/// Health goes `starting` then `healthy` then `unhealthy` in StatusText;
/// with `HealthOnFailure=kill` and `Restart=on-failure`, an unhealthy
/// container is killed and the unit comes back with a new one; with
/// `stop`, the unit is stopped (and not restarted, whatever `Restart=`
/// says); with `restart`, systemd restarts the unit.
fn health(t: &TestHost) {
    // Healthy for 3 seconds, then sick for good.
    let container = "[Container]\nImage=local/busybox:latest\n\
         Exec=sh -c 'sleep 3; echo > /sick; exec sleep 1000'\n\
         HealthCmd=test ! -e /sick\nHealthInterval=1s\nHealthRetries=1\nStopTimeout=1s\n";
    let watched = "watched.service";
    let killed = "killed.service";
    let stopped = "stopped.service";
    let restarted = "restarted.service";
    t.install(watched, &format!("{container}Notify=healthy\n"));
    let restart = "[Service]\nRestart=on-failure\nRestartSec=100ms\n";
    for (unit, policy) in [(killed, "kill"), (stopped, "stop"), (restarted, "restart")] {
        t.install(
            unit,
            &format!("{container}HealthOnFailure={policy}\n{restart}"),
        );
    }
    t.sh(&format!(
        "systemctl start --no-block {watched} {killed} {stopped} {restarted}"
    ));
    let mut seen = Vec::new();
    let mut first = None;
    let mut first_restarted = None;
    t.wait(watched, "health to go starting, healthy, unhealthy", || {
        if first.is_none() {
            first = t.status(killed).map(|(id, _)| id);
        }
        if first_restarted.is_none() {
            first_restarted = t.status(restarted).map(|(id, _)| id);
        }
        if let Some((_, h)) = t.status(watched)
            && seen.last() != Some(&h)
        {
            seen.push(h);
        }
        seen.last().is_some_and(|h| h == "unhealthy")
    });
    assert_eq!(seen, ["starting", "healthy", "unhealthy"]);
    // Notify=healthy: the start job ended once it was healthy.
    assert_eq!(t.show(watched, "ActiveState"), "active");
    let first = first.unwrap();
    t.wait(
        killed,
        "the unhealthy container killed and replaced",
        || {
            t.show(killed, "NRestarts") != "0"
                && t.status(killed).is_some_and(|(id, _)| id != first)
        },
    );
    assert!(
        t.journal(killed)
            .contains(&format!("container {first} is unhealthy"))
    );
    t.wait_state(stopped, "inactive");
    assert_eq!(t.show(stopped, "Result"), "success");
    assert_eq!(t.show(stopped, "NRestarts"), "0");
    let first_restarted = first_restarted.unwrap();
    t.wait(restarted, "the unit restarted by systemd", || {
        t.status(restarted)
            .is_some_and(|(id, _)| id != first_restarted)
    });
    assert_eq!(t.show(restarted, "NRestarts"), "0");
    t.sh(&format!(
        "systemctl stop {watched} {killed} {stopped} {restarted}"
    ));
    let left = t.containers();
    assert!(left.is_empty(), "{left:?}");
}

/// A missing image that may not be pulled fails the start at once, saying
/// so in the journal and in the unit's status.
fn missing_image(t: &TestHost) {
    let unit = "noimage.service";
    t.install(unit, "[Container]\nImage=local/nope:1\nPull=never\n");
    let started = Instant::now();
    let out = t.host.output(&["systemctl", "start", unit]).unwrap();
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(t.show(unit, "ActiveState"), "failed");
    let journal = t.journal(unit);
    assert!(
        journal
            .contains("image local/nope:1 is not on this host and Pull=never forbids pulling it"),
        "{journal}"
    );
    assert!(
        t.show(unit, "StatusText")
            .starts_with("flotilla: failed: image local/nope:1 is not on this host and Pull=never"),
        "the reason stays in the failed unit's status"
    );
    t.sh(&format!("systemctl reset-failed {unit}"));
}

/// A leftover container of the unit (from a crash) is replaced; a container
/// of the same name that is not the unit's is left alone, and the start
/// fails saying why.
fn leftovers(t: &TestHost) {
    let unit = "left.service";
    t.install(unit, SLEEPER.replace("sleeper", "left").as_str());
    let old = t.sh(&format!(
        "docker run -d --name flotilla-left --label flotilla.unit={unit} {IMAGE} sleep 1000"
    ));
    t.start(unit);
    let (id, _) = t.status(unit).unwrap();
    assert_ne!(id, old.trim());
    assert!(!t.sh("docker ps -a -q --no-trunc").contains(old.trim()));
    t.sh(&format!("systemctl stop {unit}"));

    let theirs = t.sh(&format!(
        "docker run -d --name flotilla-left {IMAGE} sleep 1000"
    ));
    let out = t.host.output(&["systemctl", "start", unit]).unwrap();
    assert!(!out.status.success());
    assert!(
        t.journal(unit)
            .contains("flotilla did not create for left.service")
    );
    // Still there, after the unit's cleanup too.
    assert!(t.sh("docker ps -q --no-trunc").contains(theirs.trim()));
    t.sh("docker rm -f flotilla-left");
    t.sh(&format!("systemctl reset-failed {unit}"));
}

/// `Notify=yes`: the unit is ready when the program in the container says
/// so over `$NOTIFY_SOCKET` (here the host's own `systemd-notify`, in an
/// image of its own).
fn notify_from_the_container(t: &TestHost) {
    t.sh(
        "set -e; d=$(mktemp -d); mkdir -p $d/bin; cp $(command -v busybox) $d/bin/busybox; \
         for c in sh sleep; do ln -sf busybox $d/bin/$c; done; \
         n=$(command -v systemd-notify); tar -ch $n $(ldd $n | grep -o '/[^ ]*') 2>/dev/null | tar -C $d -x; \
         tar -C $d -c . | docker import - local/notify:latest >/dev/null; rm -rf $d",
    );
    let unit = "ready.service";
    t.install(
        unit,
        "[Container]\nImage=local/notify:latest\nNotify=yes\nStopTimeout=1s\n\
         Exec=sh -c 'sleep 1; systemd-notify --ready; exec sleep 1000'\n",
    );
    t.sh(&format!("systemctl start --no-block {unit}"));
    t.wait(unit, "the container running", || t.status(unit).is_some());
    assert_eq!(t.show(unit, "ActiveState"), "activating");
    t.wait_state(unit, "active");
    assert!(t.journal(unit).contains("the container reports ready"));
    t.sh(&format!("systemctl stop {unit}"));
}

fn scenarios(driver: CgroupDriver) {
    let t = TestHost::boot(driver);
    containment_and_stop(&t);
    exit_status(&t);
    restart_on_failure(&t);
    missing_image(&t);
    leftovers(&t);
    health(&t);
    notify_from_the_container(&t);
    killed_shim(&t);
    assert_eq!(t.containers(), Vec::<String>::new());
}

#[test]
fn container_units_with_dockers_cgroupfs_driver() {
    scenarios(CgroupDriver::Cgroupfs);
}

#[test]
fn container_units_with_dockers_systemd_driver() {
    scenarios(CgroupDriver::Systemd);
}
