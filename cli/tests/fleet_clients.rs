//! fleet's own clients against flotilla, unchanged: `fleetctl` 1.0 (built
//! from fleet's source beside the project) and the Python client `fleet`
//! 0.1.3 (from PyPI), over HTTPS with a client certificate signed by the
//! cluster CA, against a real server with real agents on systemd test
//! hosts. What fleetctl prints is checked against what fleetctl prints for
//! fleet (its own format strings), and what the hosts run against their
//! systemd.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::hosts::{boot, show, start_agent, wait_active, wait_for};
use common::{ServerProcess, TempDir, ok, stderr, stdout};
use flotilla_testbed::Host;

/// fleetctl, as a user runs it against one server with a client
/// certificate, in a directory of unit files.
struct Fleetctl {
    bin: PathBuf,
    endpoint: String,
    certs: PathBuf,
    cwd: PathBuf,
}

impl Fleetctl {
    /// `fleetctl ARGS` as a user types it, with the endpoint and the
    /// client certificate.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.bin);
        command
            .arg(format!("--endpoint={}", self.endpoint))
            .arg(format!("--ca-file={}", self.certs.join("ca.crt").display()))
            .arg(format!(
                "--cert-file={}",
                self.certs.join("client.crt").display()
            ))
            .arg(format!(
                "--key-file={}",
                self.certs.join("client.key").display()
            ))
            // fleetctl's default request timeout is 3 s; a slow CI machine
            // should not make a test fail on it.
            .arg("--request-timeout=20")
            .args(args)
            .current_dir(&self.cwd)
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs fleetctl under a deadline (blocking verbs wait forever by
    /// default); fails the test if it does not end in time.
    fn run_within(&self, args: &[&str], deadline: Duration) -> Output {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let until = Instant::now() + deadline;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > until {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "fleetctl {args:?} did not end within {}s\nstdout: {}\nstderr: {}",
                    deadline.as_secs(),
                    stdout(&out),
                    stderr(&out)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    }

    /// `fleetctl ARGS`, which must succeed; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        self.ok_output(args).0
    }

    /// `fleetctl ARGS`, which must succeed; returns stdout and stderr.
    fn ok_output(&self, args: &[&str]) -> (String, String) {
        let out = self.run_within(args, BLOCK_DEADLINE);
        assert!(
            out.status.success(),
            "fleetctl {args:?}: {}\nstdout: {}\nstderr: {}",
            out.status,
            stdout(&out),
            stderr(&out)
        );
        (stdout(&out), stderr(&out))
    }

    /// `list-units` / `list-unit-files` rows, without the header, as
    /// `field -> value` maps keyed by the unit.
    fn table(&self, args: &[&str]) -> BTreeMap<String, Vec<String>> {
        let out = self.ok(args);
        out.lines()
            .skip(1)
            .map(|l| {
                let cols: Vec<String> = l
                    .split('\t')
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect();
                (cols[0].clone(), cols[1..].to_vec())
            })
            .collect()
    }
}

/// How long a blocking fleetctl verb may take.
const BLOCK_DEADLINE: Duration = Duration::from_secs(90);

/// A server, two real hosts with real agents, and fleetctl with an
/// operator's client certificate.
struct Cluster {
    _server: ServerProcess,
    hosts: Vec<Host>,
    /// Machine id -> host index.
    machines: BTreeMap<String, usize>,
    fleetctl: Fleetctl,
    dir: TempDir,
}

impl Cluster {
    fn start(tag: &str, hosts: usize, fleetctl: PathBuf) -> Cluster {
        let dir = TempDir::new(tag);
        let server = ServerProcess::start(&dir.path().join("data"), &[]);
        let hosts: Vec<Host> = (1..=hosts).map(|n| boot(&format!("{tag}{n}"))).collect();
        let mut machines = BTreeMap::new();
        for (i, host) in hosts.iter().enumerate() {
            start_agent(host, &server, &format!("role=web,n={}", i + 1));
            machines.insert(host.machine_id().unwrap(), i);
        }
        ok(&server.run(
            dir.path(),
            &[
                "cert", "create", "--role", "operator", "--name", "fleetctl", "--out", "certs",
            ],
        ));
        let fleetctl = Fleetctl {
            bin: fleetctl,
            endpoint: server.endpoint.clone(),
            certs: dir.path().join("certs"),
            cwd: dir.path().to_owned(),
        };
        Cluster {
            _server: server,
            hosts,
            machines,
            fleetctl,
            dir,
        }
    }

    /// The host a unit runs on, from `fleetctl list-units --full`, once a
    /// machine reports it.
    fn host_of(&self, unit: &str) -> &Host {
        let until = Instant::now() + BLOCK_DEADLINE;
        loop {
            let rows = self
                .fleetctl
                .table(&["list-units", "--full", "--fields=unit,machine"]);
            if let Some(row) = rows.get(unit) {
                let machine = row[0].split('/').next().unwrap();
                return &self.hosts[self.machines[machine]];
            }
            assert!(
                Instant::now() < until,
                "no machine reports {unit}: {rows:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn fleet_binaries() -> Option<flotilla_testbed::fleet::FleetBinaries> {
    flotilla_testbed::fleet::binaries().unwrap()
}

/// A service whose `ExecStart` continues on a second line, written as
/// fleet writes unit files (so that `fleetctl cat` prints it back as is).
fn sleeper(description: &str) -> String {
    format!(
        "[Unit]\nDescription={description}\n\n[Service]\nExecStart=/bin/sh -c \\\n  \"exec sleep infinity\"\n"
    )
}

#[test]
fn fleetctl_drives_units_on_real_hosts() {
    let Some(fleet) = fleet_binaries() else {
        return;
    };
    let c = Cluster::start("fctl", 2, fleet.fleetctl);
    let f = &c.fleetctl;

    // list-machines: both hosts, by their machine ids.
    let machines = f.ok(&["list-machines", "--full"]);
    for id in c.machines.keys() {
        assert!(machines.contains(id.as_str()), "{machines}");
    }
    assert!(
        machines.contains("n=1") && machines.contains("role=web"),
        "{machines}"
    );

    // submit, as fleet prints it; the same file again is no change and no
    // warning (fleetctl compares fleet's hashes of the two).
    c.dir.write("hello.service", &sleeper("hello"));
    assert_eq!(
        f.ok(&["submit", "hello.service"]),
        "Unit hello.service inactive\n"
    );
    assert_eq!(
        f.ok_output(&["submit", "hello.service"]),
        (String::new(), String::new())
    );
    assert_eq!(f.ok(&["cat", "hello.service"]), sleeper("hello"));
    let files = f.table(&["list-unit-files", "--full"]);
    let hello = &files["hello.service"];
    // UNIT HASH DSTATE STATE TARGET
    assert_eq!(hello[1..], ["inactive", "inactive", "-"], "{files:?}");
    let hash = hello[0].clone();
    assert_eq!(hash.len(), 40);

    // load, then start (blocking): fleetctl waits for the unit's state,
    // then for systemd's, through /fleet/v1/state/{name}.
    let loaded = f.ok(&["load", "hello.service"]);
    assert!(
        loaded.starts_with("Unit hello.service loaded on "),
        "{loaded}"
    );
    let started = f.ok(&["start", "hello.service"]);
    assert!(
        started.starts_with("Unit hello.service launched on "),
        "{started}"
    );
    let host = c.host_of("hello.service");
    let pid = wait_active(host, "hello.service");
    // The state's hash is fleet's hash of the file, as fleetctl computes it.
    let units = f.table(&[
        "list-units",
        "--full",
        "--fields=unit,hash,active,sub,machine",
    ]);
    assert_eq!(units["hello.service"][0], hash, "{units:?}");
    assert_eq!(units["hello.service"][1..3], ["active", "running"]);
    let short = f.table(&["list-units"]);
    assert_eq!(
        short["hello.service"][1..],
        ["active", "running"],
        "{short:?}"
    );

    // restart: fleet's rolling restart (stop, wait, start, wait).
    let out = f.run_within(&["restart", "hello.service"], BLOCK_DEADLINE);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for(host, "hello.service restarted", || {
        let s = show(host, "hello.service");
        let now: u32 = s["MainPID"].parse().unwrap_or(0);
        (s["ActiveState"] == "active" && now != 0 && now != pid).then_some(())
    });

    // --replace: a changed file replaces the running unit.
    c.dir.write("hello.service", &sleeper("hello again"));
    let out = f.run(&["submit", "hello.service"]);
    assert!(
        stderr(&out).contains(
            "WARNING: Unit hello.service in registry differs from local unit file hello.service"
        ),
        "{}",
        stderr(&out)
    );
    f.ok(&["start", "--replace", "hello.service"]);
    let host = c.host_of("hello.service");
    wait_for(host, "the new description", || {
        let d = host
            .run(&[
                "systemctl",
                "show",
                "-p",
                "Description,ActiveState",
                "hello.service",
            ])
            .unwrap();
        (d.contains("Description=hello again") && d.contains("ActiveState=active")).then_some(())
    });
    assert_eq!(f.ok(&["cat", "hello.service"]), sleeper("hello again"));

    // stop, unload, destroy.
    let stopped = f.ok(&["stop", "hello.service"]);
    assert!(
        stopped.starts_with("Unit hello.service loaded on "),
        "{stopped}"
    );
    wait_for(host, "hello.service stopped", || {
        (show(host, "hello.service")["ActiveState"] == "inactive").then_some(())
    });
    assert_eq!(
        f.ok(&["unload", "hello.service"]),
        "Unit hello.service inactive\n"
    );
    wait_for(host, "hello.service's file gone", || {
        (show(host, "hello.service")["LoadState"] == "not-found").then_some(())
    });
    assert_eq!(
        f.ok(&["destroy", "hello.service"]),
        "Destroyed hello.service\n"
    );
    assert!(!f.table(&["list-unit-files"]).contains_key("hello.service"));

    // Templates and instances: fleetctl makes each instance from the
    // template file it finds here; Conflicts spreads them over the hosts.
    c.dir.write(
        "web@.service",
        "[Service]\nExecStart=/bin/sleep infinity\n\n[X-Fleet]\nConflicts=web@*.service\n",
    );
    f.ok(&["submit", "web@.service"]);
    let out = f.ok(&["start", "web@1.service", "web@2.service"]);
    // fleetctl looks machines up for both units at once, and its cache of
    // them races: one line may lack " on MACHINE", with fleet too.
    assert!(
        out.contains("Unit web@1.service launched") && out.contains("Unit web@2.service launched"),
        "{out}"
    );
    let a = c.host_of("web@1.service").name().to_owned();
    let b = c.host_of("web@2.service").name().to_owned();
    assert_ne!(a, b, "Conflicts=web@*.service put both instances on {a}");
    let files = f.table(&["list-unit-files", "--fields=unit,dstate,state,global"]);
    assert_eq!(
        files["web@.service"],
        ["inactive", "inactive", "false"],
        "{files:?}"
    );
    assert_eq!(files["web@1.service"], ["launched", "launched", "false"]);

    // --no-block returns at once; --block-attempts gives up on a unit
    // that cannot be placed.
    c.dir.write(
        "later.service",
        "[Service]\nExecStart=/bin/sleep infinity\n",
    );
    assert_eq!(
        f.ok(&["start", "--no-block", "later.service"]),
        // Twice, as fleetctl prints it: once for the unit, once for systemd.
        "Unit later.service inactive\nTriggered unit later.service start\nTriggered unit later.service start\n"
    );
    wait_active(c.host_of("later.service"), "later.service");
    c.dir.write(
        "nowhere.service",
        "[Service]\nExecStart=/bin/sleep infinity\n\n[X-Fleet]\nMachineMetadata=role=nowhere\n",
    );
    let out = f.run_within(
        &["start", "--block-attempts=2", "nowhere.service"],
        BLOCK_DEADLINE,
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out)
            .contains("timed out waiting for unit nowhere.service to report state launched"),
        "{}",
        stderr(&out)
    );

    // A Global unit runs on every host; fleetctl does not wait for it.
    c.dir.write(
        "everywhere.service",
        "[Service]\nExecStart=/bin/sleep infinity\n\n[X-Fleet]\nGlobal=true\n",
    );
    assert_eq!(
        f.ok(&["start", "everywhere.service"]),
        // fleet gives a Global unit no current state, so fleetctl prints none.
        "Unit everywhere.service \nTriggered global unit everywhere.service start\n"
    );
    for host in &c.hosts {
        wait_active(host, "everywhere.service");
    }
    let files = f.table(&["list-unit-files", "--fields=unit,global,target"]);
    assert_eq!(files["everywhere.service"], ["true", "global"], "{files:?}");
}

#[test]
fn fleets_python_client_lists_creates_and_destroys() {
    let python = flotilla_testbed::fleet::python_client().unwrap();
    let c = Cluster::start("fpy", 1, PathBuf::new());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fleet_py/client.py");
    let certs = &c.fleetctl.certs;
    let out = Command::new(python)
        .arg(script)
        .arg(&c.fleetctl.endpoint)
        .arg(certs.join("ca.crt"))
        .arg(certs.join("client.crt"))
        .arg(certs.join("client.key"))
        .arg("py.service")
        .arg(BLOCK_DEADLINE.as_secs().to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let seen: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let machine = c.machines.keys().next().unwrap();
    assert_eq!(seen["machines"], serde_json::json!([machine]));
    assert_eq!(
        seen["created"],
        serde_json::json!({"name": "py.service", "desiredState": "launched"})
    );
    assert_eq!(seen["listed"], serde_json::json!(["py.service"]));
    let states = seen["states"].as_array().unwrap();
    assert_eq!(states.len(), 1, "{seen}");
    assert_eq!(states[0]["machineID"], serde_json::json!(machine));
    assert_eq!(states[0]["active"], "active");
    assert_eq!(
        states[0]["hash"].as_str().unwrap().len(),
        40,
        "fleet's SHA-1"
    );
    assert_eq!(seen["stopped"], "loaded");
    assert_eq!(
        seen["missing"],
        serde_json::json!({"code": 404, "message": "unit does not exist"})
    );
    assert_eq!(seen["destroyed"], true);
    assert_eq!(seen["after"], serde_json::json!([]));
    // The unit really ran on the host, and is gone from it.
    wait_for(&c.hosts[0], "py.service gone", || {
        (show(&c.hosts[0], "py.service")["LoadState"] == "not-found").then_some(())
    });
}

/// Unit files as people write them: comments, blank lines, a continued
/// line, repeated keys, several `[X-Fleet]` values, a template, an
/// instance and a Global unit.
const FILES: [(&str, &str); 5] = [
    (
        "a.service",
        "# the web front\n[Unit]\nDescription=front end\nAfter=network.target\n\n[Service]\n; two lines\nExecStart=/bin/sh -c \\\n   \"exec sleep infinity\"\nEnvironment=A=1\nEnvironment=B=2\n",
    ),
    (
        "b.service",
        "[Unit]\nDescription=back end\n[Service]\nExecStart=/bin/sleep infinity\n[X-Fleet]\nMachineMetadata=\"region=eu\" disk=ssd\nConflicts=a.service b*.service\n",
    ),
    (
        "w@.service",
        "[Unit]\nDescription=worker %i\n\n[Service]\nExecStart=/bin/sleep infinity\n",
    ),
    (
        "g.service",
        "[Service]\nExecStart=/bin/sleep infinity\n\n[X-Fleet]\nGlobal=true\n",
    ),
    ("empty-desc.service", "[Service]\nExecStart=/bin/true\n"),
];

#[test]
fn fleetctl_prints_for_flotilla_what_it_prints_for_fleet() {
    let Some(fleet) = fleet_binaries() else {
        return;
    };
    let dir = TempDir::new("fctl-same");
    for (name, text) in FILES {
        dir.write(name, text);
    }
    let units: Vec<&str> = FILES
        .iter()
        .map(|(n, _)| *n)
        .chain(["w@1.service"])
        .collect();

    // fleet: fleetctl writing fleet's registry in a real etcd.
    let etcd = flotilla_testbed::Etcd::start().unwrap();
    let on_fleet = |args: &[&str]| -> String {
        let out = Command::new(&fleet.fleetctl)
            .arg("--driver=etcd")
            .arg(format!("--endpoint={}", etcd.endpoint()))
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "fleet: {args:?}: {}", stderr(&out));
        stdout(&out)
    };
    // flotilla: the same fleetctl, through /fleet/v1/.
    let server = ServerProcess::start(&dir.path().join("data"), &[]);
    ok(&server.run(
        dir.path(),
        &[
            "cert", "create", "--role", "operator", "--name", "same", "--out", "certs",
        ],
    ));
    let flotilla = Fleetctl {
        bin: fleet.fleetctl.clone(),
        endpoint: server.endpoint.clone(),
        certs: dir.path().join("certs"),
        cwd: dir.path().to_owned(),
    };

    let mut submit = vec!["submit"];
    submit.extend(&units);
    // fleetctl waits for the units in parallel, so its lines come in any
    // order, for fleet as for flotilla.
    let sorted = |out: String| {
        let mut lines: Vec<String> = out.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    assert_eq!(sorted(flotilla.ok(&submit)), sorted(on_fleet(&submit)));
    let list = [
        "list-unit-files",
        "--full",
        "--fields=unit,hash,desc,dstate,state,target,global",
    ];
    let listed = flotilla.ok(&list);
    assert_eq!(listed, on_fleet(&list));
    assert_eq!(listed.lines().count(), units.len() + 1, "{listed}");
    for unit in &units {
        assert_eq!(
            flotilla.ok(&["cat", unit]),
            on_fleet(&["cat", unit]),
            "cat {unit}"
        );
    }
    // Submitting the same files again: no change, no warning, on both.
    let again = flotilla.ok_output(&submit);
    assert_eq!(again, (String::new(), String::new()));
}
