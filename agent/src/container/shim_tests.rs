//! The shim's lifecycle against the in-memory engine, a recording systemd
//! and a cgroup tree in a temporary directory.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_proto::{Health, UnitName};
use tokio::sync::mpsc;

use super::cgroup::Cgroups;
use super::config::{UNIT_LABEL, parse_spec};
use super::fake::{Call, FakeRuntime};
use super::pull::{PullError, PullSettings};
use super::runtime::{CgroupDriver, Output, OutputStream, RuntimeError};
use super::shim::{
    Cleanup, Exit, FAILED_STATUS, RecordingNotifier, Shim, ShimError, Watchdog, WatchdogMode,
    cleanup_with, exit_status, report_failure, watchdog_interval,
};
use super::systemd::{FakeUnitControl, SystemdError, UnitCall};
use crate::systemd::TRANSACTION_IS_DESTRUCTIVE;

const UNIT: &str = "web.service";
const NAME: &str = "flotilla-web";
const SHIM_PID: u32 = 77;
const IMAGE: &str = "local/busybox:latest";

type TestShim = Shim<FakeRuntime, FakeUnitControl, RecordingNotifier>;

struct Harness {
    _root: tempfile::TempDir,
    cgroups: Cgroups,
    runtime: FakeRuntime,
    systemd: FakeUnitControl,
    notifier: RecordingNotifier,
    pulls: PullSettings,
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A unit's cgroup `/system.slice/web.service` holding the shim, and an
/// engine with the given driver. With the systemd driver, a started
/// container's process sits in `docker-<id>.scope` until systemd attaches
/// it to the unit, as on a real host.
fn harness(driver: CgroupDriver) -> Harness {
    let root = tempfile::tempdir().unwrap();
    let cgroups = Cgroups {
        proc_root: root.path().join("proc"),
        cgroup_root: root.path().join("cgroup"),
    };
    write(
        &cgroups.proc_root.join("self/cgroup"),
        "0::/system.slice/web.service\n",
    );
    std::fs::create_dir_all(cgroups.dir("/system.slice/web.service")).unwrap();
    let runtime = FakeRuntime::new(driver, &[IMAGE]);
    let root_locks = root.path().join("locks");
    let root_docker = root.path().join("docker");
    let mut systemd = FakeUnitControl::default();
    if driver == CgroupDriver::Systemd {
        let cg = cgroups.clone();
        runtime.on_start(move |id, pid| {
            let scope = format!("/system.slice/docker-{id}.scope");
            write(
                &cg.proc_root.join(format!("{pid}/cgroup")),
                &format!("0::{scope}\n"),
            );
            write(&cg.dir(&scope).join("cgroup.procs"), &format!("{pid}\n"));
        });
        let cg = cgroups.clone();
        systemd = FakeUnitControl::with_attach(move |subcgroup, pids| {
            let target = format!("/system.slice/web.service{subcgroup}");
            for pid in pids {
                let from = cg.of(&pid.to_string()).unwrap();
                write(&cg.dir(&from).join("cgroup.procs"), "");
                write(
                    &cg.proc_root.join(format!("{pid}/cgroup")),
                    &format!("0::{target}\n"),
                );
                write(&cg.dir(&target).join("cgroup.procs"), &format!("{pid}\n"));
            }
        });
    }
    Harness {
        _root: root,
        cgroups,
        runtime,
        systemd,
        notifier: RecordingNotifier::default(),
        pulls: PullSettings {
            lock_dir: root_locks,
            docker_config: Some(root_docker),
        },
    }
}

fn shim(h: &Harness, section: &str) -> TestShim {
    let unit = UnitName::parse(UNIT).unwrap();
    let text = format!("[X-Container]\nImage={IMAGE}\n{section}\n");
    Shim {
        spec: parse_spec(&unit, Path::new("/run/systemd/system/web.service"), &text).unwrap(),
        unit,
        runtime: h.runtime.clone(),
        systemd: h.systemd.clone(),
        notifier: h.notifier.clone(),
        cgroups: h.cgroups.clone(),
        pid: SHIM_PID,
        watchdog: None,
        env_files: Vec::new(),
        notify_dir: None,
        host: Default::default(),
        pulls: h.pulls.clone(),
        auto_update: None,
    }
}

type Collected = Arc<Mutex<Vec<Output>>>;

/// Starts the shim; returns its stop requests, its output and its result.
fn spawn(
    shim: TestShim,
) -> (
    mpsc::Sender<()>,
    Collected,
    tokio::task::JoinHandle<Result<Exit, ShimError>>,
) {
    let (tx, rx) = mpsc::channel(1);
    let out: Collected = Arc::default();
    let sink = {
        let out = out.clone();
        Box::new(move |o: Output| out.lock().unwrap().push(o))
    };
    let task = tokio::spawn(async move { shim.run(rx, sink).await });
    (tx, out, task)
}

/// Polls `check` until it holds, for up to 5 (virtual, when paused) seconds.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn id(h: &Harness) -> String {
    h.runtime.container(NAME).unwrap().id
}

async fn running(h: &Harness) -> (String, u32) {
    until("the container runs and MAINPID is sent", || {
        h.notifier.sent().iter().any(|s| s.starts_with("MAINPID="))
    })
    .await;
    let c = h.runtime.container(NAME).unwrap();
    (c.id, c.pid)
}

#[tokio::test]
async fn cgroupfs_the_container_runs_in_the_units_cgroup_and_its_exit_status_is_the_units() {
    let h = harness(CgroupDriver::Cgroupfs);
    let (_stop, out, task) = spawn(shim(&h, "Exec=sleep 100\nLabel=team=web"));
    let (id, pid) = running(&h).await;
    assert_eq!(
        h.notifier.sent()[0],
        format!("MAINPID={pid}\nSTATUS=flotilla: container={id} health=none\nREADY=1")
    );
    // The shim left the unit's cgroup for a leaf; the container's cgroup is
    // under the unit's.
    assert_eq!(
        h.cgroups.procs("/system.slice/web.service/shim").unwrap(),
        [SHIM_PID]
    );
    let config = h.runtime.config(NAME).unwrap();
    assert_eq!(config.cgroup_parent, "/system.slice/web.service");
    assert_eq!(config.cmd, ["sleep", "100"]);
    assert_eq!(config.labels[UNIT_LABEL], UNIT);
    assert_eq!(config.labels["team"], "web");
    // Output is attached before the start.
    let calls = h.runtime.calls();
    let attach = calls
        .iter()
        .position(|c| *c == Call::Attach(id.clone()))
        .unwrap();
    let start = calls
        .iter()
        .position(|c| *c == Call::Start(id.clone()))
        .unwrap();
    assert!(attach < start, "{calls:?}");
    h.runtime.emit(
        NAME,
        Output {
            stream: OutputStream::Stderr,
            bytes: b"oops\n".to_vec(),
        },
    );
    until("the output reaches the sink", || {
        out.lock().unwrap().len() == 1
    })
    .await;
    h.runtime.exit(NAME, 3);
    let exit = task.await.unwrap().unwrap();
    assert_eq!(exit.code, 3);
    assert!(!exit.stop_requested);
    assert_eq!(exit.status(), 3);
    // The shim took MAINPID back before exiting, and removed the container.
    let sent = h.notifier.sent();
    assert_eq!(
        sent[sent.len() - 2..],
        [format!("MAINPID={SHIM_PID}"), "BARRIER=1".into()]
    );
    assert!(h.runtime.is_empty());
    assert!(h.systemd.calls().is_empty());
}

#[tokio::test]
async fn systemd_driver_the_container_is_attached_to_the_units_payload() {
    let h = harness(CgroupDriver::Systemd);
    let (stop, _out, task) = spawn(shim(&h, ""));
    let (id, pid) = running(&h).await;
    assert_eq!(
        h.runtime.config(NAME).unwrap().cgroup_parent,
        "system.slice"
    );
    assert_eq!(
        h.systemd.calls(),
        [UnitCall::Attach {
            unit: UNIT.into(),
            subcgroup: "/payload".into(),
            pids: vec![pid],
        }]
    );
    assert_eq!(
        h.cgroups.of(&pid.to_string()).unwrap(),
        "/system.slice/web.service/payload"
    );
    assert!(
        h.notifier.sent()[0]
            .starts_with(&format!("MAINPID={pid}\nSTATUS=flotilla: container={id} "))
    );
    stop.send(()).await.unwrap();
    assert_eq!(task.await.unwrap().unwrap().status(), 0);
}

#[tokio::test]
async fn a_stop_stops_the_container_with_its_timeout_and_the_unit_ends_cleanly() {
    let h = harness(CgroupDriver::Cgroupfs);
    h.runtime.ignore_stop_signal();
    let (stop, _out, task) = spawn(shim(&h, "StopTimeout=3s\nStopSignal=INT"));
    let (id, _) = running(&h).await;
    assert_eq!(
        h.runtime.config(NAME).unwrap().stop_signal.as_deref(),
        Some("SIGINT")
    );
    stop.send(()).await.unwrap();
    let exit = task.await.unwrap().unwrap();
    assert!(
        h.runtime
            .calls()
            .contains(&Call::Stop(id, Duration::from_secs(3)))
    );
    // Killed after the timeout, yet a stop that was asked for is a success.
    assert_eq!(exit.code, 137);
    assert!(exit.stop_requested);
    assert_eq!(exit.status(), 0);
    assert!(h.runtime.is_empty());
}

#[tokio::test]
async fn a_failed_stop_kills_the_container() {
    let h = harness(CgroupDriver::Cgroupfs);
    let (stop, _out, task) = spawn(shim(&h, ""));
    let (id, _) = running(&h).await;
    h.runtime
        .fail_next("stop", RuntimeError::Unavailable("boom".into()));
    stop.send(()).await.unwrap();
    let exit = task.await.unwrap().unwrap();
    assert!(
        h.runtime
            .calls()
            .contains(&Call::Kill(id, "SIGKILL".into()))
    );
    assert_eq!(exit.status(), 0);
}

#[tokio::test]
async fn a_leftover_of_the_unit_is_replaced_and_anothers_container_is_left_alone() {
    let h = harness(CgroupDriver::Cgroupfs);
    let old = h.runtime.add_container(NAME, &[(UNIT_LABEL, UNIT)], true);
    let (_stop, _out, task) = spawn(shim(&h, ""));
    running(&h).await;
    assert_ne!(id(&h), old);
    assert!(h.runtime.calls().contains(&Call::Remove(old)));
    h.runtime.exit(NAME, 0);
    assert_eq!(task.await.unwrap().unwrap().status(), 0);

    let h = harness(CgroupDriver::Cgroupfs);
    let theirs = h
        .runtime
        .add_container(NAME, &[(UNIT_LABEL, "other.service")], true);
    let err = shim(&h, "")
        .run(mpsc::channel(1).1, Box::new(|_| {}))
        .await
        .unwrap_err();
    assert!(matches!(err, ShimError::ForeignContainer { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("flotilla did not create for web.service"),
        "{err}"
    );
    assert_eq!(id(&h), theirs);
    assert!(h.runtime.container(NAME).unwrap().running);
    // Nor does the unit's cleanup touch it.
    assert_eq!(
        cleanup_with(&h.runtime, UNIT, NAME).await.unwrap(),
        Cleanup::Foreign
    );
    assert_eq!(id(&h), theirs);
}

#[tokio::test]
async fn a_missing_image_fails_at_once_with_a_clear_message() {
    let h = harness(CgroupDriver::Cgroupfs);
    let mut s = shim(&h, "");
    s.spec.image = "local/nope:1".into();
    let err = s
        .run(mpsc::channel(1).1, Box::new(|_| {}))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ShimError::Pull(PullError::Runtime { source: RuntimeError::ImageNotInRegistry { image, .. }, .. }) if image == "local/nope:1"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("image local/nope:1 is not in its registry"),
        "{err}"
    );
    assert!(h.runtime.is_empty());
    assert_eq!(h.notifier.sent(), ["STATUS=flotilla: pulling=local/nope:1"]);
    report_failure(&h.notifier, &err);
    let sent = h.notifier.sent();
    assert_eq!(
        sent[1],
        format!("STATUS={FAILED_STATUS}{err}"),
        "the reason is left in the unit's status"
    );
    assert_eq!(
        sent[2], "BARRIER=1",
        "and systemd has read it before the exit"
    );
}

#[tokio::test]
async fn pull_never_without_the_image_fails_without_asking_the_registry() {
    let h = harness(CgroupDriver::Cgroupfs);
    let mut s = shim(&h, "Pull=never");
    s.spec.image = "reg.example.com/app:1".into();
    h.runtime.publish("reg.example.com/app:1", "sha256:1");
    let err = s
        .run(mpsc::channel(1).1, Box::new(|_| {}))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(
            "image reg.example.com/app:1 is not on this host and Pull=never forbids pulling it"
        ),
        "{err}"
    );
    assert!(!h.runtime.calls().iter().any(|c| matches!(c, Call::Pull(_))));
    assert!(h.runtime.is_empty());
}

#[tokio::test]
async fn a_pulled_image_runs() {
    let h = harness(CgroupDriver::Cgroupfs);
    let mut s = shim(&h, "");
    s.spec.image = "reg.example.com/app:1".into();
    h.runtime.publish("reg.example.com/app:1", "sha256:1");
    let (tx, _, task) = spawn(s);
    running(&h).await;
    let calls = h.runtime.calls();
    let pull = calls
        .iter()
        .position(|c| matches!(c, Call::Pull(_)))
        .unwrap();
    let create = calls
        .iter()
        .position(|c| matches!(c, Call::Create(_)))
        .unwrap();
    assert!(pull < create, "{calls:?}");
    assert_eq!(
        h.notifier.sent()[0],
        "STATUS=flotilla: pulling=reg.example.com/app:1"
    );
    tx.send(()).await.unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_container_that_cannot_start_is_removed() {
    let h = harness(CgroupDriver::Cgroupfs);
    h.runtime.fail_next(
        "start",
        RuntimeError::Create {
            container: NAME.into(),
            message: "executable file not found".into(),
        },
    );
    let err = shim(&h, "")
        .run(mpsc::channel(1).1, Box::new(|_| {}))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("executable file not found"),
        "{err}"
    );
    assert!(h.runtime.is_empty());
}

fn statuses(h: &Harness) -> Vec<String> {
    h.notifier
        .sent()
        .iter()
        .flat_map(|s| s.lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|l| l.starts_with("STATUS=") || l == "READY=1")
        .collect()
}

#[tokio::test]
async fn health_transitions_are_reported_and_notify_healthy_waits_for_healthy() {
    let h = harness(CgroupDriver::Cgroupfs);
    let (_stop, _out, task) = spawn(shim(
        &h,
        "HealthCmd=true\nHealthInterval=1s\nNotify=healthy",
    ));
    let (id, _) = running(&h).await;
    let status = |health: &str| format!("STATUS=flotilla: container={id} health={health}");
    assert_eq!(statuses(&h), [status("starting")]);
    h.runtime.set_health(NAME, Health::Healthy);
    until("healthy is reported", || statuses(&h).len() == 3).await;
    assert_eq!(statuses(&h)[1..], [status("healthy"), "READY=1".to_owned()]);
    h.runtime.set_health(NAME, Health::Unhealthy);
    until("unhealthy is reported", || statuses(&h).len() == 4).await;
    assert_eq!(statuses(&h)[3], status("unhealthy"));
    // HealthOnFailure=none: only reported.
    assert!(h.runtime.container(NAME).unwrap().running);
    h.runtime.set_health(NAME, Health::Healthy);
    until("healthy again", || statuses(&h).len() == 5).await;
    assert_eq!(statuses(&h)[4], status("healthy"));
    h.runtime.exit(NAME, 0);
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn health_on_failure_kill_fails_the_unit() {
    let h = harness(CgroupDriver::Cgroupfs);
    let (_stop, _out, task) = spawn(shim(&h, "HealthCmd=true\nHealthOnFailure=kill"));
    let (id, _) = running(&h).await;
    h.runtime.set_health(NAME, Health::Unhealthy);
    let exit = task.await.unwrap().unwrap();
    assert!(
        h.runtime
            .calls()
            .contains(&Call::Kill(id, "SIGKILL".into()))
    );
    assert_eq!(exit.status(), 137);
}

#[tokio::test]
async fn health_on_failure_stop_and_restart_ask_systemd() {
    for (policy, call) in [
        ("stop", UnitCall::Stop(UNIT.into())),
        ("restart", UnitCall::Restart(UNIT.into())),
    ] {
        let h = harness(CgroupDriver::Cgroupfs);
        let (stop, _out, task) = spawn(shim(
            &h,
            &format!("HealthCmd=true\nHealthOnFailure={policy}"),
        ));
        running(&h).await;
        h.runtime.set_health(NAME, Health::Unhealthy);
        until("systemd is asked", || !h.systemd.calls().is_empty()).await;
        assert_eq!(h.systemd.calls(), [call]);
        // systemd's stop job reaches the shim as SIGTERM.
        stop.send(()).await.unwrap();
        assert_eq!(task.await.unwrap().unwrap().status(), 0);
    }
}

#[tokio::test]
async fn a_queued_job_wins_over_the_health_policy_and_a_broken_bus_falls_back() {
    // A stop someone queued: the shim's restart is refused, nothing else.
    let h = harness(CgroupDriver::Cgroupfs);
    h.systemd.fail_next(SystemdError::Refused {
        operation: "RestartUnit",
        unit: UNIT.into(),
        name: TRANSACTION_IS_DESTRUCTIVE.into(),
        message: "a stop job is queued".into(),
    });
    let (stop, _out, task) = spawn(shim(&h, "HealthCmd=true\nHealthOnFailure=restart"));
    let (id, _) = running(&h).await;
    h.runtime.set_health(NAME, Health::Unhealthy);
    until("systemd is asked", || !h.systemd.calls().is_empty()).await;
    stop.send(()).await.unwrap();
    assert_eq!(task.await.unwrap().unwrap().status(), 0);
    assert!(
        !h.runtime
            .calls()
            .contains(&Call::Kill(id, "SIGKILL".into()))
    );

    // No systemd to ask: restart falls back to a kill (Restart= applies),
    // stop to stopping the container itself.
    for (policy, status) in [("restart", 137), ("stop", 0)] {
        let h = harness(CgroupDriver::Cgroupfs);
        h.systemd.fail_next(SystemdError::Connect("no bus".into()));
        let (_stop, _out, task) = spawn(shim(
            &h,
            &format!("HealthCmd=true\nHealthOnFailure={policy}"),
        ));
        running(&h).await;
        h.runtime.set_health(NAME, Health::Unhealthy);
        assert_eq!(task.await.unwrap().unwrap().status(), status, "{policy}");
    }
}

fn pings(h: &Harness) -> usize {
    h.notifier
        .sent()
        .iter()
        .filter(|s| *s == "WATCHDOG=1")
        .count()
}

#[tokio::test(start_paused = true)]
async fn the_users_watchdog_is_pinged_while_the_container_is_not_unhealthy() {
    for mode in [WatchdogMode::Health, WatchdogMode::Liveness] {
        let h = harness(CgroupDriver::Cgroupfs);
        let mut s = shim(&h, "HealthCmd=true");
        s.watchdog = Some(Watchdog {
            interval: Duration::from_millis(10),
            mode,
        });
        let (_stop, _out, task) = spawn(s);
        running(&h).await;
        until("pings", || pings(&h) >= 3).await;
        h.runtime.set_health(NAME, Health::Unhealthy);
        until("unhealthy is reported", || statuses(&h).len() == 2).await;
        let before = pings(&h);
        tokio::time::sleep(Duration::from_millis(100)).await;
        match mode {
            // Missed pings: systemd fails the unit.
            WatchdogMode::Health => assert_eq!(pings(&h), before),
            // The shim lives: pings go on.
            WatchdogMode::Liveness => assert!(pings(&h) >= before + 5),
        }
        h.runtime.set_health(NAME, Health::Healthy);
        until("pings again", || pings(&h) >= before + 3).await;
        h.runtime.exit(NAME, 0);
        task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn the_cleanup_removes_the_units_container_only() {
    let runtime = FakeRuntime::new(CgroupDriver::Cgroupfs, &[]);
    assert_eq!(
        cleanup_with(&runtime, UNIT, NAME).await.unwrap(),
        Cleanup::Absent
    );
    let id = runtime.add_container(NAME, &[(UNIT_LABEL, UNIT)], true);
    assert_eq!(
        cleanup_with(&runtime, UNIT, NAME).await.unwrap(),
        Cleanup::Removed(id)
    );
    assert!(runtime.is_empty());
}

#[test]
fn exit_statuses() {
    assert_eq!(exit_status(0, false), 0);
    assert_eq!(exit_status(3, false), 3);
    assert_eq!(exit_status(137, false), 137);
    assert_eq!(exit_status(137, true), 0);
    assert_eq!(exit_status(-1, false), 255);
    assert_eq!(exit_status(300, false), 255);
}

#[test]
fn the_watchdog_period_is_half_of_systemds() {
    assert_eq!(
        watchdog_interval(Some("10000000"), None, 5),
        Some(Duration::from_secs(5))
    );
    assert_eq!(
        watchdog_interval(Some("10000000"), Some("5"), 5),
        Some(Duration::from_secs(5))
    );
    assert_eq!(watchdog_interval(Some("10000000"), Some("6"), 5), None);
    assert_eq!(watchdog_interval(None, None, 5), None);
    assert_eq!(watchdog_interval(Some("0"), None, 5), None);
}

#[test]
fn a_failure_is_left_as_one_line_with_its_backslashes_escaped_for_systemd() {
    let n = RecordingNotifier::default();
    let e = ShimError::Runtime(RuntimeError::Unavailable("a \"b\\n\"\nc".into()));
    report_failure(&n, &e);
    assert_eq!(
        n.sent(),
        [
            format!("STATUS={FAILED_STATUS}docker: a \"b\\\\n\" c"),
            "BARRIER=1".to_owned()
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn auto_update_restarts_the_unit_when_the_registry_has_a_newer_image() {
    let h = harness(CgroupDriver::Cgroupfs);
    let mut s = shim(&h, "AutoUpdate=registry");
    s.auto_update = Some(Duration::from_secs(3600));
    // The registry has what the host has.
    h.runtime.publish(IMAGE, "sha256:local");
    let (_stop, _out, task) = spawn(s);
    running(&h).await;
    let checks = |h: &Harness| {
        h.runtime
            .calls()
            .iter()
            .filter(|c| matches!(c, Call::RegistryDigest(_)))
            .count()
    };
    tokio::time::sleep(Duration::from_secs(3601)).await;
    until("the first check", || checks(&h) == 1).await;
    assert!(h.systemd.calls().is_empty(), "up to date: no restart");
    h.runtime.publish(IMAGE, "sha256:2");
    tokio::time::sleep(Duration::from_secs(3600)).await;
    until("systemd is asked to restart the unit", || {
        !h.systemd.calls().is_empty()
    })
    .await;
    assert_eq!(h.systemd.calls(), [UnitCall::Restart(UNIT.to_owned())]);
    assert_eq!(h.runtime.local_digest(IMAGE).as_deref(), Some("sha256:2"));
    assert_eq!(checks(&h), 2);
    task.abort();
}

#[test]
fn auto_update_checks_hourly_unless_the_unit_says_otherwise() {
    use super::auto_update::auto_update_interval;
    let unit = UnitName::parse(UNIT).unwrap();
    let spec = |section: &str| {
        parse_spec(
            &unit,
            Path::new("/run/systemd/system/web.service"),
            &format!("[X-Container]\nImage={IMAGE}\n{section}\n"),
        )
        .unwrap()
    };
    let on = spec("AutoUpdate=registry");
    assert_eq!(auto_update_interval(&spec(""), Some("1s")), None);
    assert_eq!(
        auto_update_interval(&on, None),
        Some(Duration::from_secs(3600))
    );
    assert_eq!(
        auto_update_interval(&on, Some("10min")),
        Some(Duration::from_secs(600))
    );
    assert_eq!(
        auto_update_interval(&on, Some("10ms")),
        Some(Duration::from_secs(3600))
    );
}
