//! `flotilla import-fleet` against real components: an etcd serving its v2
//! API, fleet 1.0's own fleetctl writing a fleet registry into it
//! (`--driver=etcd`, no fleetd needed), a `flotilla server` process, and,
//! in one test, the real agent on a systemd test host running what was
//! imported.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::hosts::{DEADLINE, boot, journal, show, start_agent};
use common::{ServerProcess, TempDir, ok, stderr, stdout};
use flotilla_api::client::{Client, StateQuery};
use flotilla_proto::wire::{Unit, UnitPut};
use flotilla_proto::{DesiredState, UnitFile, UnitName};
use flotilla_testbed::{Etcd, Host, free_port};

/// A fleet cluster's registry: an etcd, and fleetctl writing into it.
struct Fleet {
    etcd: Etcd,
    fleetctl: PathBuf,
    dir: TempDir,
}

impl Fleet {
    /// A fresh etcd with fleetctl at hand; `None` when fleet's source is
    /// not on this machine (the test then says it was skipped).
    fn start(tag: &str) -> Option<Fleet> {
        let bins = flotilla_testbed::fleet::binaries().unwrap()?;
        Some(Fleet {
            etcd: Etcd::start().unwrap(),
            fleetctl: bins.fleetctl,
            dir: TempDir::new(&format!("fleet-{tag}")),
        })
    }

    /// Writes unit files into the fleet directory.
    fn write(&self, name: &str, text: &str) {
        self.dir.write(name, text);
    }

    /// `fleetctl --driver=etcd ARGS`, in the fleet directory; fails the
    /// test when fleetctl does.
    fn ctl(&self, args: &[&str]) {
        let out = Command::new(&self.fleetctl)
            .current_dir(self.dir.path())
            .args([
                "--driver=etcd",
                &format!("--endpoint={}", self.etcd.endpoint()),
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "fleetctl {args:?}: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }

    fn url(&self) -> String {
        self.etcd.endpoint()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn units(client: &Client) -> Vec<Unit> {
    runtime().block_on(client.all_units()).unwrap()
}

fn unit(client: &Client, name: &str) -> Unit {
    runtime()
        .block_on(client.get_unit(&UnitName::parse(name).unwrap()))
        .unwrap()
}

fn hash(text: &str) -> String {
    UnitFile::parse(text).0.content_hash()
}

/// `flotilla import-fleet --etcd URL ARGS` against `server`.
fn import(server: &ServerProcess, dir: &Path, fleet: &Fleet, args: &[&str]) -> Output {
    let etcd = fleet.url();
    let mut all = vec!["import-fleet", "--etcd", &etcd];
    all.extend_from_slice(args);
    server.run(dir, &all)
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(out))
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\nstderr:\n{}", stdout(out), stderr(out)))
}

/// The status of each unit in a JSON report, in report order.
fn statuses(report: &serde_json::Value) -> Vec<(String, String)> {
    report["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["unit"].as_str().unwrap().to_owned(),
                u["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

const HELLO: &str = "# a comment fleet does not keep\n[Unit]\nDescription=hello\n\n[Service]\nExecStart=/bin/sleep infinity\n\n[X-Fleet]\nMachineMetadata=role=web\n";
const WEB: &str = "[Unit]\nDescription=web %i\n\n[Service]\nExecStart=/bin/sleep 10%i\n\n[X-Fleet]\nConflicts=web@*.service\n";
/// A template whose instances may share a machine.
const WORKER: &str = "[Unit]\nDescription=worker %i\n\n[Service]\nExecStart=/bin/sleep infinity\n";
const SUB: &str = "[Unit]\nDescription=submitted only\n\n[Service]\nExecStart=/bin/true\n";

#[test]
fn units_templates_and_states_carry_over_once() {
    let Some(fleet) = Fleet::start("states") else {
        return;
    };
    fleet.write("hello.service", HELLO);
    fleet.write("web@.service", WEB);
    fleet.write("sub.service", SUB);
    fleet.ctl(&["submit", "hello.service", "web@.service", "sub.service"]);
    fleet.ctl(&["start", "--no-block", "hello.service", "web@3.service"]);
    fleet.ctl(&["load", "--no-block", "web@1.service"]);

    let dir = TempDir::new("import-states");
    let server = ServerProcess::start(&dir.path().join("data"), &[]);
    let client = server.client();

    // A dry run reports the plan and changes nothing.
    let out = import(&server, dir.path(), &fleet, &["--dry-run"]);
    let text = ok(&out);
    assert!(
        text.contains("would create   hello.service (launched)"),
        "{text}"
    );
    assert!(text.contains("dry run, nothing was changed"), "{text}");
    assert!(units(&client).is_empty(), "a dry run created units");

    // The import: templates first, every unit created.
    let out = import(&server, dir.path(), &fleet, &["-o", "json"]);
    let report = json(&out);
    assert!(out.status.success(), "{report}");
    assert_eq!(
        statuses(&report),
        [
            ("web@.service".into(), "created".into()),
            ("hello.service".into(), "created".into()),
            ("sub.service".into(), "created".into()),
            ("web@1.service".into(), "created".into()),
            ("web@3.service".into(), "created".into()),
        ]
    );
    assert_eq!(report["summary"]["created"], 5);
    assert_eq!(report["dryRun"], false);

    // Same contents (fleet keeps no comments: flotilla's content hash
    // ignores them), same desired states; instances carry the template's.
    let expect = [
        ("hello.service", HELLO, DesiredState::Launched),
        ("sub.service", SUB, DesiredState::Inactive),
        ("web@.service", WEB, DesiredState::Inactive),
        ("web@1.service", WEB, DesiredState::Loaded),
        ("web@3.service", WEB, DesiredState::Launched),
    ];
    let got = units(&client);
    assert_eq!(got.len(), expect.len());
    for (name, text, state) in expect {
        let u = unit(&client, name);
        assert_eq!(u.hash, hash(text), "{name}: {}", u.text);
        assert_eq!(u.desired_state, state, "{name}");
    }
    assert!(
        unit(&client, "hello.service")
            .text
            .contains("MachineMetadata=role=web")
    );

    // Twice: nothing to do.
    let out = import(&server, dir.path(), &fleet, &[]);
    let text = ok(&out);
    assert!(
        text.contains("nothing to do: 5 units of fleet already in flotilla"),
        "{text}"
    );
    assert!(!text.contains("created"), "{text}");

    // A state changed in fleet follows, and only that.
    fleet.ctl(&["load", "--no-block", "hello.service"]);
    let dry = import(&server, dir.path(), &fleet, &["--dry-run"]);
    assert!(
        ok(&dry).contains("would change   hello.service: launched -> loaded"),
        "{}",
        stdout(&dry)
    );
    assert_eq!(
        unit(&client, "hello.service").desired_state,
        DesiredState::Launched,
        "a dry run changed the state"
    );
    let text = ok(&import(&server, dir.path(), &fleet, &[]));
    assert!(
        text.contains("state changed  hello.service: launched -> loaded"),
        "{text}"
    );
    assert!(
        text.contains("unchanged      web@3.service (launched)"),
        "{text}"
    );
    assert_eq!(
        unit(&client, "hello.service").desired_state,
        DesiredState::Loaded
    );

    // A batch: only the units named (globs as fleet's).
    fleet.ctl(&["start", "--no-block", "web@7.service"]);
    let text = ok(&import(&server, dir.path(), &fleet, &["web@7*"]));
    assert!(
        text.contains("created        web@7.service (launched)"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 2, "{text}");
    let out = import(&server, dir.path(), &fleet, &["nope@*.service"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no unit of fleet matches"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn other_contents_are_reported_and_replaced_only_when_asked() {
    let Some(fleet) = Fleet::start("differs") else {
        return;
    };
    fleet.write("db.service", SUB);
    fleet.ctl(&["start", "--no-block", "db.service"]);

    let dir = TempDir::new("import-differs");
    let server = ServerProcess::start(&dir.path().join("data"), &[]);
    let client = server.client();
    let ours = "[Unit]\nDescription=flotilla's own db\n\n[Service]\nExecStart=/bin/sleep 1\n";
    runtime()
        .block_on(client.put_unit(
            &UnitName::parse("db.service").unwrap(),
            &UnitPut {
                desired_state: Some(DesiredState::Inactive),
                text: Some(ours.into()),
                ..UnitPut::default()
            },
        ))
        .unwrap();

    // Reported, left alone, and the exit code says so.
    let out = import(&server, dir.path(), &fleet, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("differs        db.service: flotilla has other contents"),
        "{}",
        stdout(&out)
    );
    let u = unit(&client, "db.service");
    assert_eq!(u.hash, hash(ours));
    assert_eq!(u.desired_state, DesiredState::Inactive);

    // A dry run with --replace says it would replace, and does not.
    let out = import(&server, dir.path(), &fleet, &["--replace", "--dry-run"]);
    assert!(
        ok(&out).contains("would replace  db.service (launched)"),
        "{}",
        stdout(&out)
    );
    assert_eq!(unit(&client, "db.service").hash, hash(ours));

    // --replace replaces contents and state.
    let report = json(&import(
        &server,
        dir.path(),
        &fleet,
        &["--replace", "-o", "json"],
    ));
    assert_eq!(
        statuses(&report),
        [("db.service".into(), "replaced".into())]
    );
    let u = unit(&client, "db.service");
    assert_eq!(u.hash, hash(SUB));
    assert_eq!(u.desired_state, DesiredState::Launched);
    assert!(ok(&import(&server, dir.path(), &fleet, &[])).contains("nothing to do"));
}

#[test]
fn a_unit_flotilla_refuses_is_reported_and_the_others_imported() {
    let Some(fleet) = Fleet::start("refused") else {
        return;
    };
    // fleet takes any MachineID; flotilla wants a machine id.
    fleet.write(
        "bad.service",
        "[Unit]\nDescription=bad\n\n[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nMachineID=not-a-machine\n",
    );
    fleet.write("good.service", SUB);
    fleet.ctl(&["submit", "bad.service", "good.service"]);

    let dir = TempDir::new("import-refused");
    let server = ServerProcess::start(&dir.path().join("data"), &[]);
    let client = server.client();

    for dry_run in [true, false] {
        let mut args = vec!["-o", "json"];
        if dry_run {
            args.push("--dry-run");
        }
        let out = import(&server, dir.path(), &fleet, &args);
        assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
        let report = json(&out);
        assert_eq!(
            statuses(&report),
            [
                ("bad.service".into(), "failed".into()),
                ("good.service".into(), "created".into())
            ]
        );
        // flotilla's error: file, line and option.
        let reason = report["units"][0]["reason"].as_str().unwrap();
        assert!(
            reason.contains("bad.service:8: error: [X-Fleet] MachineID"),
            "{reason}"
        );
        assert_eq!(report["summary"]["failed"], 1);
    }
    let names: Vec<String> = units(&client).into_iter().map(|u| u.name).collect();
    assert_eq!(names, ["good.service"]);

    // The text report shows the same.
    let out = import(&server, dir.path(), &fleet, &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("failed         bad.service: bad.service:8: error: [X-Fleet] MachineID"),
        "{text}"
    );
    assert!(
        text.contains("unchanged      good.service (inactive)"),
        "{text}"
    );
    assert!(text.contains("1 failed"), "{text}");
}

#[test]
fn a_wrong_prefix_or_etcd_is_a_clear_error() {
    let Some(fleet) = Fleet::start("errors") else {
        return;
    };
    fleet.write("a.service", SUB);
    fleet.ctl(&["submit", "a.service"]);
    let dir = TempDir::new("import-errors");
    let server = ServerProcess::start(&dir.path().join("data"), &[]);

    let out = import(
        &server,
        dir.path(),
        &fleet,
        &["--key-prefix", "/elsewhere/"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no fleet registry under /elsewhere/"),
        "{}",
        stderr(&out)
    );
    // fleetctl's own --etcd-key-prefix writes elsewhere; the import follows.
    fleet.ctl(&["--etcd-key-prefix=/custom/fleet/", "submit", "a.service"]);
    let text = ok(&import(
        &server,
        dir.path(),
        &fleet,
        &["--key-prefix", "/custom/fleet", "--dry-run"],
    ));
    assert!(
        text.contains("would create   a.service (inactive)"),
        "{text}"
    );

    // Nothing listening.
    let closed = free_port();
    let out = server.run(
        dir.path(),
        &[
            "import-fleet",
            "--etcd",
            &format!("http://127.0.0.1:{closed}"),
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot reach etcd"),
        "{}",
        stderr(&out)
    );
    assert!(units(&server.client()).is_empty());
}

/// An etcd serving its v2 API over TLS, with a certificate of its own CA
/// (made with the `openssl` command); killed and removed when dropped.
struct TlsEtcd {
    child: std::process::Child,
    dir: TempDir,
    port: u16,
}

impl TlsEtcd {
    fn start() -> TlsEtcd {
        let dir = TempDir::new("tls-etcd");
        make_certificates(dir.path());
        let port = free_port();
        let peer = format!("http://127.0.0.1:{}", free_port());
        let url = format!("https://127.0.0.1:{port}");
        let file = |name: &str| dir.path().join(name).display().to_string();
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let child = Command::new(Etcd::binary().unwrap())
            .arg("--name=import-tls")
            .arg(format!("--data-dir={}", file("data")))
            .arg(format!("--cert-file={}", file("server.pem")))
            .arg(format!("--key-file={}", file("server.key")))
            .arg(format!("--listen-client-urls={url}"))
            .arg(format!("--advertise-client-urls={url}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=import-tls={peer}"))
            .arg("--log-level=warn")
            .arg("--enable-v2")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        TlsEtcd { child, dir, port }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

impl Drop for TlsEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a server certificate for 127.0.0.1 in `dir` (P-256 keys).
fn make_certificates(dir: &Path) {
    std::fs::write(
        dir.join("openssl.cnf"),
        "[req]\n\
         distinguished_name = dn\n\
         [dn]\n\
         [ca]\n\
         basicConstraints = critical,CA:TRUE\n\
         keyUsage = critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier = hash\n\
         [server]\n\
         basicConstraints = CA:FALSE\n\
         keyUsage = critical,digitalSignature\n\
         extendedKeyUsage = serverAuth\n\
         subjectAltName = IP:127.0.0.1\n",
    )
    .unwrap();
    // No argument has a space in it: each command is one line of words.
    let openssl = |command: &str| {
        let output = Command::new("openssl")
            .args(command.split_whitespace())
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("running openssl ({e}): scripts/test installs it"));
        assert!(
            output.status.success(),
            "openssl {command}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let new_key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    openssl(&format!(
        "req -config openssl.cnf -x509 -extensions ca {new_key} \
         -keyout ca.key -out ca.pem -days 2 -subj /CN=import-test-ca"
    ));
    openssl(&format!(
        "req -config openssl.cnf {new_key} -keyout server.key -out server.csr -subj /CN=etcd"
    ));
    openssl(
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
         -out server.pem -days 2 -extfile openssl.cnf -extensions server",
    );
}

#[test]
fn an_https_etcd_is_read_with_its_ca() {
    let Some(bins) = flotilla_testbed::fleet::binaries().unwrap() else {
        return;
    };
    let etcd = TlsEtcd::start();
    let units = TempDir::new("tls-units");
    units.write("a.service", SUB);
    // fleetctl writes the registry over TLS; it fails until etcd listens.
    let until = Instant::now() + DEADLINE;
    loop {
        let out = Command::new(&bins.fleetctl)
            .current_dir(units.path())
            .arg("--driver=etcd")
            .arg(format!("--endpoint={}", etcd.url()))
            .arg(format!("--ca-file={}", etcd.ca().display()))
            .args(["start", "--no-block", "a.service"])
            .output()
            .unwrap();
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < until,
            "fleetctl could not write to etcd over TLS: {}{}",
            stderr(&out),
            std::fs::read_to_string(etcd.dir.path().join("etcd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let dir = TempDir::new("import-tls");
    let server = ServerProcess::start(&dir.path().join("data"), &[]);
    let url = etcd.url();
    let ca = etcd.ca().display().to_string();
    // Not trusted without its CA.
    let out = server.run(dir.path(), &["import-fleet", "--etcd", &url]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot reach etcd"),
        "{}",
        stderr(&out)
    );
    let text = ok(&server.run(
        dir.path(),
        &["import-fleet", "--etcd", &url, "--etcd-ca", &ca],
    ));
    assert!(
        text.contains("created        a.service (launched)"),
        "{text}"
    );
    assert_eq!(
        unit(&server.client(), "a.service").desired_state,
        DesiredState::Launched
    );
}

// ---- real agents on a test host ----

fn active_state(host: &Host, unit: &str) -> String {
    show(host, unit)
        .get("ActiveState")
        .cloned()
        .unwrap_or_default()
}

#[test]
fn imported_launched_units_run_under_flotilla_s_agent() {
    let Some(fleet) = Fleet::start("agent") else {
        return;
    };
    // What a fleet cluster ran: a plain unit bound to machines by
    // metadata, and two instances of a template (one only loaded).
    fleet.write("hello.service", HELLO);
    fleet.write("worker@.service", WORKER);
    fleet.ctl(&["submit", "hello.service", "worker@.service"]);
    fleet.ctl(&["start", "--no-block", "hello.service", "worker@1.service"]);
    fleet.ctl(&["load", "--no-block", "worker@2.service"]);

    let dir = TempDir::new("import-agent");
    let server = ServerProcess::start_with_ttl(&dir.path().join("data"), "10s", &[]);
    let host = boot("flt-import");
    // The machine metadata fleet's units ask for comes from the agent.
    start_agent(&host, &server, "role=web");

    let text = ok(&import(&server, dir.path(), &fleet, &[]));
    assert!(
        text.contains("created        hello.service (launched)"),
        "{text}"
    );

    let client = server.client();
    let until = Instant::now() + DEADLINE;
    loop {
        let host_active = ["hello.service", "worker@1.service"]
            .iter()
            .all(|u| active_state(&host, u) == "active");
        let reported = runtime()
            .block_on(client.all_states(&StateQuery::default()))
            .unwrap()
            .into_iter()
            .filter(|s| s.active_state == "active")
            .map(|s| s.unit.to_string())
            .collect::<Vec<_>>();
        let units_launched = ["hello.service", "worker@1.service"]
            .iter()
            .all(|u| unit(&client, u).current_state == Some(DesiredState::Launched));
        if host_active && units_launched && reported.len() == 2 {
            break;
        }
        assert!(
            Instant::now() < until,
            "imported units not running within {}s (host: hello {}, worker@1 {}; reported active: {reported:?})\nagent log:\n{}",
            DEADLINE.as_secs(),
            active_state(&host, "hello.service"),
            active_state(&host, "worker@1.service"),
            journal(&host)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The instance is the template's, with its instance name.
    let description = host
        .run(&[
            "systemctl",
            "show",
            "-p",
            "Description",
            "--value",
            "worker@1.service",
        ])
        .unwrap();
    assert_eq!(description.trim(), "worker 1");
    // Loaded, not started: its file is there, it does not run.
    let u = unit(&client, "worker@2.service");
    assert_eq!(u.desired_state, DesiredState::Loaded);
    assert_ne!(active_state(&host, "worker@2.service"), "active");
}
