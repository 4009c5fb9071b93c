//! The `[Container]` keys that map to Docker's host settings, security
//! options, time zone, host environment and reload, on real systemd hosts
//! with a real Docker engine: each unit is rendered as flotilla renders
//! it, started by the host's systemd with this build's `flotilla shim`, and
//! its container is checked with `docker inspect` and from inside.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::path::Path;
use std::time::Duration;

use common::TempDir;
use common::containers::{self, DROP, SHIM};
use flotilla_agent::container::render::render_service;
use flotilla_proto::UnitSpec;
use flotilla_testbed::{CgroupDriver, Host};

const DEADLINE: Duration = Duration::from_secs(20);

struct TestHost {
    host: Host,
    units: TempDir,
    driver: CgroupDriver,
}

impl TestHost {
    fn boot(driver: CgroupDriver) -> TestHost {
        let (host, units) = containers::boot(&format!("keys-{}", driver.as_str()), driver);
        TestHost {
            host,
            units,
            driver,
        }
    }

    /// Renders `text` as flotilla does, installs it as `name` and starts it.
    fn run(&self, name: &str, text: &str) {
        containers::install(&self.host, &self.units, name, text);
        let out = self.host.output(&["systemctl", "start", name]).unwrap();
        assert!(
            out.status.success(),
            "systemctl start {name} ({}): {}\n{}",
            self.driver.as_str(),
            String::from_utf8_lossy(&out.stderr),
            self.journal(name)
        );
    }

    /// `systemctl reload`; on a failure, fails with what the unit said.
    fn reload(&self, unit: &str) {
        let out = self.host.output(&["systemctl", "reload", unit]).unwrap();
        assert!(
            out.status.success(),
            "systemctl reload {unit} ({}): {}\n{}",
            self.driver.as_str(),
            String::from_utf8_lossy(&out.stderr),
            self.journal(unit)
        );
    }

    fn stop(&self, unit: &str) {
        self.sh(&format!("systemctl stop {unit}"));
    }

    fn sh(&self, script: &str) -> String {
        self.host.sh(script).unwrap()
    }

    /// `docker inspect` of a container, as JSON.
    fn inspect(&self, container: &str) -> serde_json::Value {
        containers::inspect(&self.host, container)
    }

    /// Runs `busybox ARGS` in the container.
    fn exec(&self, container: &str, args: &str) -> String {
        self.sh(&format!("docker exec {container} /bin/busybox {args}"))
    }

    fn journal(&self, unit: &str) -> String {
        containers::journal(&self.host, unit)
    }

    fn wait(&self, unit: &str, what: &str, check: impl FnMut() -> bool) {
        if let Err(e) = self.host.wait_for(what, DEADLINE, check) {
            panic!(
                "{what} ({}): {e}\n{}",
                self.driver.as_str(),
                self.journal(unit)
            );
        }
    }
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// Devices, ulimits, /dev/shm, sysctls, annotations, user and groups,
/// security options, the user namespace, the time zone and the proxy
/// variables, each seen by Docker and, where it shows, from inside.
fn host_settings(t: &TestHost) {
    t.sh(r#"echo '{"defaultAction":"SCMP_ACT_ALLOW"}' > /etc/flotilla-seccomp.json"#);
    let unit = "keys.service";
    t.run(
        unit,
        "[Container]\nImage=local/busybox:latest\nExec=sleep 1000\nStopTimeout=1s\n\
         User=0\nGroup=1001\nGroupAdd=2000 2001\n\
         AddDevice=/dev/zero:/dev/myzero:r\nAddDevice=-/dev/flotilla-absent\n\
         Ulimit=nofile=1024:2048\nShmSize=32m\n\
         Sysctl=net.ipv4.ip_unprivileged_port_start=80 kernel.shmmax=65536\n\
         NoNewPrivileges=yes\nSeccompProfile=/etc/flotilla-seccomp.json\n\
         AppArmor=unconfined\nSecurityLabelDisable=yes\nUnmask=ALL\nUserNS=host\n\
         Timezone=Europe/Paris\nEnvironment=A=1\n\
         [Service]\nEnvironment=HTTPS_PROXY=http://proxy.invalid:3128 NOT_PASSED=1\n",
    );
    let c = t.inspect("flotilla-keys");
    let host = &c["HostConfig"];
    let devices = host["Devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1, "the absent optional device is left out");
    assert_eq!(devices[0]["PathOnHost"], "/dev/zero");
    assert_eq!(devices[0]["PathInContainer"], "/dev/myzero");
    assert_eq!(devices[0]["CgroupPermissions"], "r");
    assert_eq!(host["Ulimits"][0]["Name"], "nofile");
    assert_eq!(host["Ulimits"][0]["Soft"], 1024);
    assert_eq!(host["Ulimits"][0]["Hard"], 2048);
    assert_eq!(host["ShmSize"], 32 << 20);
    assert_eq!(host["Sysctls"]["net.ipv4.ip_unprivileged_port_start"], "80");
    assert_eq!(host["Sysctls"]["kernel.shmmax"], "65536");
    assert_eq!(strings(&host["GroupAdd"]), ["2000", "2001"]);
    assert_eq!(host["UsernsMode"], "host");
    // Unmask=ALL, as the docker CLI's systempaths=unconfined sends it.
    assert_eq!(host["MaskedPaths"], serde_json::json!([]));
    assert_eq!(host["ReadonlyPaths"], serde_json::json!([]));
    let opts = strings(&host["SecurityOpt"]);
    for opt in [
        "no-new-privileges:true",
        "apparmor=unconfined",
        "label=disable",
    ] {
        assert!(opts.contains(&opt.to_owned()), "{opt} in {opts:?}");
    }
    assert!(
        opts.iter()
            .any(|o| o.starts_with("seccomp=") && o.contains("SCMP_ACT_ALLOW")),
        "{opts:?}"
    );
    assert_eq!(c["Config"]["User"], "0:1001");
    assert_eq!(c["Config"]["StopTimeout"], 1);
    let env = strings(&c["Config"]["Env"]);
    for var in [
        "HTTPS_PROXY=http://proxy.invalid:3128",
        "TZ=Europe/Paris",
        "A=1",
    ] {
        assert!(env.contains(&var.to_owned()), "{var} in {env:?}");
    }
    assert!(!env.iter().any(|e| e.starts_with("NOT_PASSED=")), "{env:?}");
    let binds = strings(&host["Binds"]);
    assert!(
        binds.contains(&"/usr/share/zoneinfo/Europe/Paris:/etc/localtime:ro".to_owned()),
        "{binds:?}"
    );

    // And as the container's processes have them.
    let name = "flotilla-keys";
    // (The imported image's root directory is root's alone: the user
    // stays root, the group is Group=.)
    assert_eq!(t.exec(name, "id -u").trim(), "0");
    let groups = t.exec(name, "id -G");
    assert_eq!(
        groups.split_whitespace().collect::<Vec<_>>(),
        ["1001", "2000", "2001"]
    );
    assert!(t.exec(name, "ls -l /dev/myzero").starts_with('c'));
    let status = t.exec(name, "cat /proc/1/status");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    let limits = t.exec(name, "cat /proc/1/limits");
    let files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        files.split_whitespace().collect::<Vec<_>>()[3..5],
        ["1024", "2048"]
    );
    assert_eq!(
        t.exec(name, "cat /proc/sys/net/ipv4/ip_unprivileged_port_start")
            .trim(),
        "80"
    );
    assert!(t.exec(name, "df -k /dev/shm").contains(" 32768 "));
    assert_eq!(
        t.exec(name, "md5sum /etc/localtime")
            .split_whitespace()
            .next(),
        t.sh("md5sum /usr/share/zoneinfo/Europe/Paris")
            .split_whitespace()
            .next()
    );
    t.stop(unit);
}

/// `Annotation=` reaches an engine that keeps annotations (API 1.43,
/// Docker 24), and fails the start with the reason on an older one,
/// rather than being dropped.
fn annotations(t: &TestHost) {
    let unit = "annotated.service";
    let text = "[Container]\nImage=local/busybox:latest\nExec=sleep 1000\nStopTimeout=1s\n\
                Annotation=team=web\n";
    let api = t.sh("docker version --format '{{.Server.APIVersion}}'");
    let (major, minor) = api.trim().split_once('.').unwrap();
    let api: (u32, u32) = (major.parse().unwrap(), minor.parse().unwrap());
    if api >= (1, 43) {
        t.run(unit, text);
        let c = t.inspect("flotilla-annotated");
        assert_eq!(c["HostConfig"]["Annotations"]["team"], "web");
        t.stop(unit);
        return;
    }
    let checked = UnitSpec::check(unit, unit, text).unwrap();
    let rendered = render_service(&checked.spec, Path::new(SHIM)).unwrap();
    t.units.write(unit, &rendered.to_string());
    t.sh(&format!(
        "cp {DROP}/{unit} /run/systemd/system/{unit} && systemctl daemon-reload"
    ));
    let out = t.host.output(&["systemctl", "start", unit]).unwrap();
    assert!(!out.status.success());
    t.wait(unit, "the reason in the journal", || {
        t.journal(unit)
            .contains("Annotation= needs Docker 24 or later (API 1.43), and this engine speaks API")
    });
    t.sh(&format!("systemctl reset-failed {unit}"));
}

/// `EnvironmentHost=yes` passes the unit's environment (systemd's), but
/// not the shim's own link to systemd; `Timezone=local` binds the host's
/// zone.
fn host_environment(t: &TestHost) {
    let unit = "hostenv.service";
    t.run(
        unit,
        "[Container]\nImage=local/busybox:latest\nExec=sleep 1000\nStopTimeout=1s\n\
         EnvironmentHost=yes\nTimezone=local\nEnvironment=FROM_UNIT=container\n\
         [Service]\nEnvironment=FROM_SERVICE=yes FROM_UNIT=service\n",
    );
    let c = t.inspect("flotilla-hostenv");
    let env = strings(&c["Config"]["Env"]);
    assert!(env.contains(&"FROM_SERVICE=yes".to_owned()), "{env:?}");
    assert!(env.iter().any(|e| e.starts_with("PATH=")), "{env:?}");
    assert!(
        !env.iter()
            .any(|e| e.starts_with("NOTIFY_SOCKET=") || e.starts_with("WATCHDOG_")),
        "{env:?}"
    );
    // [Container] Environment= wins over the host's.
    let in_container = t.exec("flotilla-hostenv", "env");
    assert!(
        in_container.contains("FROM_UNIT=container\n"),
        "{in_container}"
    );
    let localtime = t.sh("readlink -f /etc/localtime");
    let binds = strings(&c["HostConfig"]["Binds"]);
    assert_eq!(binds, [format!("{}:/etc/localtime:ro", localtime.trim())]);
    assert!(!env.iter().any(|e| e.starts_with("TZ=")), "{env:?}");
    t.stop(unit);
}

/// `systemctl reload` reaches the container: `ReloadSignal=` signals its
/// main process, `ReloadCmd=` runs in it (its output in the journal, its
/// failure the reload's).
fn reload(t: &TestHost) {
    let unit = "sig.service";
    t.run(
        unit,
        "[Container]\nImage=local/busybox:latest\nStopTimeout=1s\nReloadSignal=HUP\n\
         Exec=sh -c 'trap \"echo reloaded by signal\" HUP; echo waiting; while true; do sleep 0.1; done'\n",
    );
    t.wait(unit, "the trap set", || t.journal(unit).contains("waiting"));
    t.reload(unit);
    t.wait(unit, "the signal in the container", || {
        t.journal(unit).contains("reloaded by signal")
    });
    assert_eq!(
        t.sh(&format!("systemctl show -P ActiveState {unit}"))
            .trim(),
        "active"
    );
    t.stop(unit);

    let unit = "cmd.service";
    t.run(
        unit,
        "[Container]\nImage=local/busybox:latest\nExec=sleep 1000\nStopTimeout=1s\n\
         ReloadCmd=sh -c 'echo reloaded by command; echo yes > /reloaded'\n",
    );
    t.reload(unit);
    assert_eq!(t.exec("flotilla-cmd", "cat /reloaded").trim(), "yes");
    t.wait(unit, "the command's output in the journal", || {
        t.journal(unit).contains("reloaded by command")
    });
    t.stop(unit);

    let unit = "badcmd.service";
    t.run(
        unit,
        "[Container]\nImage=local/busybox:latest\nExec=sleep 1000\nStopTimeout=1s\n\
         ReloadCmd=sh -c 'exit 3'\n",
    );
    let out = t.host.output(&["systemctl", "reload", unit]).unwrap();
    assert!(
        !out.status.success(),
        "a failing ReloadCmd= fails the reload"
    );
    assert_eq!(
        t.sh(&format!("systemctl show -P ActiveState {unit}"))
            .trim(),
        "active"
    );
    t.stop(unit);
}

#[test]
fn container_keys_reach_docker() {
    let t = TestHost::boot(CgroupDriver::Cgroupfs);
    host_settings(&t);
    annotations(&t);
    host_environment(&t);
    reload(&t);
    assert_eq!(t.sh("docker ps -a -q"), "");
}

#[test]
fn reload_with_dockers_systemd_driver() {
    let t = TestHost::boot(CgroupDriver::Systemd);
    reload(&t);
    assert_eq!(t.sh("docker ps -a -q"), "");
}
