//! The Debian package as an operator uses it: built by scripts/package
//! from the test's binary, installed with `dpkg -i` on a real systemd host
//! (a writable overlay on its /usr and its own copy of the dpkg database,
//! TESTING.md), the agent configured and started from the packaged unit,
//! joined to a real server, a unit started through flotilla; then an
//! upgrade (same binary, newer package version), and a removal.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::hosts::{journal, main_pid, show, wait_active, wait_for};
use common::{BIN, ServerProcess, TempDir, ok};
use flotilla_testbed::{Host, HostOptions};

/// Builds the package of the test's binary as `version` into `out`.
fn package(version: &str, out: &Path) -> PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/package");
    let built = Command::new(script)
        .args(["--binary", BIN, "--version", version, "--compress", "none"])
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    let stdout = ok(&built);
    let deb = PathBuf::from(stdout.lines().last().unwrap());
    assert_eq!(
        deb,
        out.join(format!("flotilla_{version}_{}.deb", arch())),
        "{stdout}"
    );
    deb
}

fn arch() -> String {
    let out = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .unwrap();
    ok(&out).trim().to_owned()
}

/// A host whose /usr and dpkg database are its own copies.
fn boot(name: &str, dir: &TempDir, debs: &Path) -> Host {
    let upper = dir.path().join("usr-upper");
    let dpkg = dir.path().join("dpkg");
    std::fs::create_dir_all(&upper).unwrap();
    let copied = Command::new("cp")
        .args(["-a", "/var/lib/dpkg"])
        .arg(&dpkg)
        .status()
        .unwrap();
    assert!(copied.success());
    // The host's fresh /etc lacks the groups the VM's overrides name.
    std::fs::write(dpkg.join("statoverride"), "").unwrap();
    let host = Host::boot(
        name,
        &HostOptions {
            binds_ro: vec![(debs.to_owned(), PathBuf::from("/debs"))],
            binds: vec![(dpkg, PathBuf::from("/var/lib/dpkg"))],
            overlays: vec![(PathBuf::from("/usr"), upper)],
        },
    )
    .unwrap();
    // A machine's own policy, not the build machine's: CI images forbid
    // maintainer scripts to start services (policy-rc.d exits 101), which
    // the package honours.
    host.sh("rm -f /usr/sbin/policy-rc.d").unwrap();
    host
}

fn sh(host: &Host, script: &str) -> String {
    host.sh(script)
        .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", journal(host)))
}

fn dpkg_install(host: &Host, version: &str) {
    sh(
        host,
        &format!("dpkg -i /debs/flotilla_{version}_{}.deb 2>&1", arch()),
    );
    assert_eq!(
        sh(host, "dpkg-query -W -f '${Version} ${Status}' flotilla"),
        format!("{version} install ok installed")
    );
}

fn active(host: &Host, unit: &str) -> String {
    show(host, unit)["ActiveState"].clone()
}

#[test]
fn the_package_installs_runs_the_agent_upgrades_and_removes_without_touching_units() {
    let dir = TempDir::new("package");
    let debs = dir.path().join("debs");
    for version in ["0.1.0~pkg1", "0.1.0~pkg2", "0.1.0~pkg3"] {
        package(version, &debs);
    }
    let server = ServerProcess::start_with_ttl(&dir.path().join("data"), "10s", &[]);
    let host = boot("flt-package", &dir, &debs);
    // The VM's /usr is not the host's to change.
    assert!(!Path::new("/usr/bin/flotilla").exists() || BIN == "/usr/bin/flotilla");

    // Installed: the binary, the units (disabled, stopped, running
    // /usr/bin/flotilla), the example configurations as conffiles, the
    // agent's state directory root's only, completions and pages.
    dpkg_install(&host, "0.1.0~pkg1");
    let version = sh(&host, "/usr/bin/flotilla version");
    assert!(
        version.starts_with(&format!("flotilla {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    for unit in ["flotilla-agent.service", "flotilla-server.service"] {
        let enabled = host.output(&["systemctl", "is-enabled", unit]).unwrap();
        assert_eq!(String::from_utf8_lossy(&enabled.stdout).trim(), "disabled");
        assert_eq!(active(&host, unit), "inactive");
        assert_eq!(
            show(&host, unit)["FragmentPath"],
            format!("/lib/systemd/system/{unit}")
        );
        let exec = sh(
            &host,
            &format!("systemctl show -p ExecStart --value {unit}"),
        );
        assert!(exec.contains("path=/usr/bin/flotilla "), "{exec}");
    }
    let conffiles = sh(&host, "dpkg-query -W -f '${Conffiles}' flotilla");
    for example in [
        "agent.example.yaml",
        "server.example.yaml",
        "server.raft.example.yaml",
    ] {
        let path = format!("/etc/flotilla/{example}");
        assert!(conffiles.contains(&path), "{conffiles}");
        let ours = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../deploy")
                .join(example),
        )
        .unwrap();
        assert_eq!(sh(&host, &format!("cat {path}")), ours);
    }
    assert_eq!(
        sh(&host, "stat -c '%a %U' /var/lib/flotilla-agent").trim(),
        "700 root"
    );
    sh(
        &host,
        "test -s /usr/share/bash-completion/completions/flotilla && \
         test -s /usr/share/zsh/vendor-completions/_flotilla && \
         test -s /usr/share/fish/vendor_completions.d/flotilla.fish",
    );
    let page = sh(
        &host,
        "MANWIDTH=80 man -l -P cat /usr/share/man/man1/flotilla-start.1.gz",
    );
    assert!(page.contains("Schedule and start units"), "{page}");
    sh(&host, "test -s /usr/share/man/man1/flotilla.1.gz");

    // An upgrade of a machine whose agent is not running starts nothing.
    dpkg_install(&host, "0.1.0~pkg2");
    assert_eq!(active(&host, "flotilla-agent.service"), "inactive");
    assert_eq!(active(&host, "flotilla-server.service"), "inactive");

    // Configured as docs/deploying.md says, enabled and started from the
    // packaged unit: it joins the server (Type=notify: ready once
    // registered).
    let join = server.join_string();
    sh(
        &host,
        &format!(
            "set -e; (umask 077; echo '{join}' >/etc/flotilla/join.token); \
             printf 'server:\\n  - {}\\njoin-token-file: /etc/flotilla/join.token\\nmetadata:\\n  role: web\\n' \
               >/etc/flotilla/agent.yaml; \
             systemctl enable --now flotilla-agent 2>&1",
            server.endpoint
        ),
    );
    let machine_id = host.machine_id().unwrap();
    let machines = ok(&server.run(dir.path(), &["list-machines", "-o", "json"]));
    let machines: Vec<serde_json::Value> = serde_json::from_str(&machines).unwrap();
    assert_eq!(machines.len(), 1);
    assert_eq!(machines[0]["id"], machine_id.as_str());
    assert_eq!(machines[0]["agentVersion"], env!("CARGO_PKG_VERSION"));
    let table = ok(&server.run(dir.path(), &["list-machines"]));
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header.last(), Some(&"VERSION"), "{table}");
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row.last(), Some(&env!("CARGO_PKG_VERSION")), "{table}");

    // A unit started through flotilla.
    dir.write(
        "pkg-run.service",
        "[Service]\nExecStart=/bin/sleep infinity\n\n[X-Fleet]\nMachineMetadata=role=web\n",
    );
    ok(&server.run(dir.path(), &["start", "--no-block", "pkg-run.service"]));
    let unit_pid = wait_active(&host, "pkg-run.service");
    // Nothing ties the unit to the agent: no dependency through which
    // stopping or restarting the agent would reach it.
    let deps = sh(
        &host,
        "systemctl show -p Requires,Requisite,BindsTo,PartOf,PropagatesStopTo,StopPropagatedFrom pkg-run.service",
    );
    assert!(!deps.contains("flotilla-agent"), "{deps}");
    let agent_unit = sh(
        &host,
        "systemctl show -p KillMode,Requires,BindsTo flotilla-agent",
    );
    assert!(agent_unit.contains("KillMode=process"), "{agent_unit}");
    assert!(!agent_unit.contains("pkg-run"), "{agent_unit}");

    // Upgraded: the agent is restarted (a new process), the unit is not.
    let agent_pid = main_pid(&host, "flotilla-agent.service");
    dpkg_install(&host, "0.1.0~pkg3");
    let new_agent = wait_for(&host, "the agent restarted by the upgrade", || {
        let pid = main_pid(&host, "flotilla-agent.service");
        (pid != 0 && pid != agent_pid && active(&host, "flotilla-agent.service") == "active")
            .then_some(pid)
    });
    assert_ne!(new_agent, agent_pid);
    assert_eq!(
        main_pid(&host, "pkg-run.service"),
        unit_pid,
        "the unit was restarted"
    );
    // The restarted agent works: it runs a unit started after the upgrade,
    // and still leaves the first one alone.
    dir.write(
        "pkg-after.service",
        "[Service]\nExecStart=/bin/sleep infinity\n\n[X-Fleet]\nMachineMetadata=role=web\n",
    );
    ok(&server.run(dir.path(), &["start", "--no-block", "pkg-after.service"]));
    wait_active(&host, "pkg-after.service");
    assert_eq!(main_pid(&host, "pkg-run.service"), unit_pid);
    assert_eq!(active(&host, "flotilla-server.service"), "inactive");

    // Removed: the agent is stopped, the units run on, the configuration
    // stays.
    sh(&host, "dpkg -r flotilla 2>&1");
    assert_eq!(
        sh(&host, "dpkg-query -W -f '${Status}' flotilla"),
        "deinstall ok config-files"
    );
    assert!(host.run(&["test", "-e", "/usr/bin/flotilla"]).is_err());
    assert_ne!(active(&host, "flotilla-agent.service"), "active");
    assert_eq!(active(&host, "pkg-run.service"), "active");
    assert_eq!(main_pid(&host, "pkg-run.service"), unit_pid);
    assert_eq!(active(&host, "pkg-after.service"), "active");
    sh(
        &host,
        "test -s /etc/flotilla/agent.yaml && test -s /etc/flotilla/join.token && \
         test -s /etc/flotilla/agent.example.yaml && test -d /var/lib/flotilla-agent",
    );
}
