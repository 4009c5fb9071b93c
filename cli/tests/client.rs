//! The client verbs run as a user runs them, against a real `flotilla
//! server` process. Where a unit must reach `launched`, a simulated agent
//! (the real agent endpoints, no systemd) reports its state.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::{Agent, ServerProcess, TempDir, ok, stderr, stdout};
use flotilla_testbed::poll::eventually;

const WEB: &str = "[Unit]\nDescription=web\n\n[Service]\nExecStart=/bin/sleep 1000\n";

fn server(tag: &str) -> (TempDir, ServerProcess) {
    let dir = TempDir::new(tag);
    let server = ServerProcess::start(&dir.path().join("data"), &[]);
    (dir, server)
}

#[test]
fn submit_list_cat_and_destroy() {
    let (dir, s) = server("submit");
    dir.write("units/web.service", WEB);
    let cwd = dir.path().join("units");
    ok(&s.run(&cwd, &["submit", "web.service"]));
    let listing = ok(&s.run(&cwd, &["list-unit-files"]));
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 2, "{listing}");
    assert!(lines[0].starts_with("UNIT"), "{listing}");
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(cells[0], "web.service");
    assert_eq!(cells[2..], ["inactive", "inactive", "-"], "{listing}");

    assert_eq!(ok(&s.run(&cwd, &["cat", "web.service"])), WEB);

    let json = ok(&s.run(&cwd, &["list-unit-files", "-o", "json"]));
    let units: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(units[0]["name"], "web.service");
    assert_eq!(units[0]["desiredState"], "inactive");

    assert_eq!(
        ok(&s.run(&cwd, &["destroy", "web.service"])),
        "Destroyed web.service\n"
    );
    let listing = ok(&s.run(&cwd, &["list-unit-files"]));
    assert_eq!(listing.lines().count(), 1, "{listing}");
    let gone = s.run(&cwd, &["cat", "web.service"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        stderr(&gone).contains("does not exist"),
        "{}",
        stderr(&gone)
    );
}

#[test]
fn a_bad_unit_file_is_refused_with_file_line_and_option_and_nothing_stored() {
    let (dir, s) = server("bad");
    dir.write(
        "bad.service",
        "[Service]\nExecStart=/bin/true\n[X-Fleet]\nMachineOf=db.service\nGlobal=yes\n",
    );
    let out = s.run(dir.path(), &["submit", "bad.service"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "bad.service:5: error: [X-Fleet] Global: cannot be used with MachineOf (line 4)"
        ),
        "{}",
        stderr(&out)
    );
    let listing = ok(&s.run(dir.path(), &["list-unit-files"]));
    assert_eq!(
        listing.lines().count(),
        1,
        "something was stored: {listing}"
    );
}

#[test]
fn changed_contents_need_replace() {
    let (dir, s) = server("replace");
    let cwd = dir.path();
    dir.write("web.service", WEB);
    ok(&s.run(cwd, &["submit", "web.service"]));
    let before = ok(&s.run(cwd, &["cat", "web.service"]));
    dir.write("web.service", "[Service]\nExecStart=/bin/sleep 2000\n");
    let out = s.run(cwd, &["submit", "web.service"]);
    ok(&out);
    assert!(
        stderr(&out).contains("differs from the local file"),
        "{}",
        stderr(&out)
    );
    assert_eq!(ok(&s.run(cwd, &["cat", "web.service"])), before);
    ok(&s.run(cwd, &["submit", "--replace", "web.service"]));
    assert_eq!(
        ok(&s.run(cwd, &["cat", "web.service"])),
        "[Service]\nExecStart=/bin/sleep 2000\n"
    );
}

#[test]
fn load_without_machines_gives_up_with_the_reason() {
    let (dir, s) = server("nomachines");
    dir.write("web.service", WEB);
    let out = s.run(
        dir.path(),
        &["load", "--block-attempts", "1", "web.service"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "gave up waiting for loaded: web.service is inactive (no machines in the cluster)"
        ),
        "{}",
        stderr(&out)
    );
    // --no-block returns at once, with the desired state recorded.
    ok(&s.run(dir.path(), &["start", "--no-block", "web.service"]));
    let listing = ok(&s.run(dir.path(), &["list-unit-files"]));
    assert!(listing.contains("launched"), "{listing}");
}

#[test]
fn start_blocks_until_the_unit_runs_and_list_units_shows_it() {
    let (dir, s) = server("start");
    let agent = Agent::start(&[&s], 7);
    dir.write("web.service", WEB);
    let out = ok(&s.run(dir.path(), &["start", "web.service"]));
    assert_eq!(
        out,
        format!("Unit web.service launched on {}\n", agent.id.short())
    );

    let listing = ok(&s.run(dir.path(), &["list-units"]));
    let lines: Vec<Vec<&str>> = listing
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["UNIT", "MACHINE", "ACTIVE", "SUB", "HEALTH"]);
    assert_eq!(
        lines[1],
        [
            "web.service",
            &format!("{}/10.9.9.7", agent.id.short()),
            "active",
            "running",
            "-"
        ]
    );
    let machines = ok(&s.run(dir.path(), &["list-machines"]));
    assert!(
        machines.contains(agent.id.short()) && machines.contains("10.9.9.7"),
        "{machines}"
    );

    // stop blocks until the unit is loaded but not running.
    let out = ok(&s.run(dir.path(), &["stop", "web.service"]));
    assert_eq!(
        out,
        format!("Unit web.service loaded on {}\n", agent.id.short())
    );
    // unload takes it off its machine.
    let out = ok(&s.run(dir.path(), &["unload", "web.service"]));
    assert_eq!(out, "Unit web.service inactive\n");
}

/// Many units in one command are sent several at a time; a unit the
/// cluster refuses fails the command with the error of the first refused
/// unit in the order given, and every other unit is in place.
#[test]
fn many_units_in_one_start_and_the_first_refusal_is_the_error() {
    let (dir, s) = server("many");
    let mut args = vec!["start".to_owned(), "--no-block".to_owned()];
    for i in 0..40 {
        let name = format!("u{i:02}.service");
        dir.write(&name, WEB);
        args.push(name);
        // Templates cannot be started: refused by the server, after the
        // units before them were sent.
        if i == 10 || i == 30 {
            let template = format!("t{i}@.service");
            dir.write(&template, WEB);
            args.push(template);
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = s.run(dir.path(), &args);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("t10@.service is a template"), "{err}");
    assert!(!err.contains("t30@"), "{err}");

    let json = ok(&s.run(dir.path(), &["list-unit-files", "-o", "json"]));
    let units: serde_json::Value = serde_json::from_str(&json).unwrap();
    let launched: Vec<&str> = units
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["desiredState"] == "launched")
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    let want: Vec<String> = (0..40).map(|i| format!("u{i:02}.service")).collect();
    assert_eq!(launched, want);
}

#[test]
fn an_instance_starts_from_a_local_template() {
    let (dir, s) = server("template");
    let _agent = Agent::start(&[&s], 7);
    dir.write("worker@.service", "[Service]\nExecStart=/bin/echo %i\n");
    let out = ok(&s.run(dir.path(), &["start", "worker@1.service"]));
    assert!(
        out.starts_with("Unit worker@1.service launched on "),
        "{out}"
    );
    assert_eq!(
        ok(&s.run(dir.path(), &["cat", "worker@1.service"])),
        "[Service]\nExecStart=/bin/echo %i\n"
    );
}

#[test]
fn apply_converges_and_a_second_apply_changes_nothing() {
    let (dir, s) = server("apply");
    let _agent = Agent::start(&[&s], 7);
    dir.write("repo/web.service", WEB);
    dir.write("repo/db.service", "[Service]\nExecStart=/bin/sleep 1000\n");
    dir.write(
        "repo/worker@.service",
        "[Service]\nExecStart=/bin/echo %i\n",
    );
    dir.write(
        "repo/flotilla.yaml",
        "states:\n  db.service: loaded\ninstances:\n  worker@.service: [1, 2]\n",
    );
    dir.write("repo/README.md", "not a unit\n");
    let repo = dir.path().join("repo");
    let repo = repo.to_str().unwrap();

    let diff = ok(&s.run(dir.path(), &["diff", repo]));
    assert_eq!(
        diff,
        "+ db.service (loaded)\n+ web.service (launched)\n+ worker@.service (inactive)\n\
         + worker@1.service (launched)\n+ worker@2.service (launched)\n"
    );
    ok(&s.run(dir.path(), &["apply", repo]));
    assert_eq!(ok(&s.run(dir.path(), &["diff", repo])), "no changes\n");
    assert_eq!(ok(&s.run(dir.path(), &["apply", repo])), "no changes\n");

    // Editing one file changes only that unit.
    dir.write("repo/web.service", "[Service]\nExecStart=/bin/sleep 2000\n");
    assert_eq!(
        ok(&s.run(dir.path(), &["apply", repo])),
        "~ web.service: contents changed (launched)\n"
    );

    // A unit not in the directory stays, unless pruned.
    dir.write("extra/extra.service", WEB);
    ok(&s.run(&dir.path().join("extra"), &["submit", "extra.service"]));
    assert_eq!(ok(&s.run(dir.path(), &["diff", repo])), "no changes\n");
    assert_eq!(
        ok(&s.run(dir.path(), &["diff", "--prune", repo])),
        "- extra.service\n"
    );
    ok(&s.run(dir.path(), &["apply", "--prune", repo]));
    let listing = ok(&s.run(dir.path(), &["list-unit-files"]));
    assert!(!listing.contains("extra.service"), "{listing}");

    // A bad file anywhere in the directory changes nothing.
    dir.write(
        "repo/broken.service",
        "[Service]\nExecStart=/bin/true\n[X-Fleet]\nConflict=x\n",
    );
    dir.write("repo/db.service", "[Service]\nExecStart=/bin/sleep 3000\n");
    let out = s.run(dir.path(), &["apply", repo]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("broken.service:4: error: [X-Fleet] Conflict: unknown key in [X-Fleet]; did you mean Conflicts?"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing was changed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        ok(&s.run(dir.path(), &["cat", "db.service"])),
        "[Service]\nExecStart=/bin/sleep 1000\n"
    );
}

#[test]
fn list_servers_shows_the_leader() {
    let (dir, s) = server("servers");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let listing = loop {
        let listing = ok(&s.run(dir.path(), &["list-servers"]));
        if listing.contains(" yes") {
            break listing;
        }
        assert!(std::time::Instant::now() < deadline, "no leader: {listing}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let lines: Vec<Vec<&str>> = listing
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["SERVER", "ADDRESS", "VERSION", "LEADER"]);
    assert_eq!(lines.len(), 2, "{listing}");
    assert_eq!(lines[1][1], s.endpoint);
    assert_eq!(lines[1][2], env!("CARGO_PKG_VERSION"));
    assert_eq!(lines[1][3], "yes");
}

#[test]
fn an_unreachable_server_is_a_clear_error() {
    let dir = TempDir::new("unreachable");
    let out = std::process::Command::new(common::BIN)
        .args(["--endpoint", "http://127.0.0.1:9", "list-units"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("flotilla: cannot reach GET http://127.0.0.1:9/v1/units: "),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());
}

#[test]
fn the_server_reads_a_yaml_configuration_and_refuses_a_bad_one() {
    let dir = TempDir::new("config");
    let data = dir.path().join("data");
    let config = dir.write(
        "server.yaml",
        &format!(
            "listen: 127.0.0.1:0\ndata-dir: {}\nmachine-ttl: 1min 30s\nstrategy: binpack\n",
            data.display()
        ),
    );
    let config = config.to_str().unwrap();
    // The file gives the address and the data directory.
    let s = ServerProcess::start_args(&data, &["--config", config]);
    assert!(
        s.endpoint.starts_with("https://127.0.0.1:"),
        "{}",
        s.endpoint
    );
    assert!(data.is_dir(), "the store is not where the file says");
    drop(s);
    // A flag wins over the file.
    let flagged = dir.path().join("flagged");
    let s = ServerProcess::start_args(
        &flagged,
        &["--config", config, "--data-dir", flagged.to_str().unwrap()],
    );
    assert!(flagged.is_dir());
    drop(s);

    let bad = dir.write("bad.yaml", "listen: 127.0.0.1:0\nmachine-tll: 10s\n");
    let out = std::process::Command::new(common::BIN)
        .args(["server", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("bad.yaml is not valid"), "{err}");
    assert!(err.contains("unknown field `machine-tll`"), "{err}");
}

const WEB_V2: &str = "[Unit]\nDescription=web, version 2\n\n[Service]\nExecStart=/bin/sleep 2000\n";

/// A `flotilla` command running in the background, killed if the test
/// ends before it does.
struct Background(Option<std::process::Child>);

impl Background {
    fn spawn(s: &ServerProcess, cwd: &std::path::Path, args: &[&str]) -> Background {
        let child = s
            .command(cwd)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        Background(Some(child))
    }

    fn has_exited(&mut self) -> bool {
        let child = self.0.as_mut().unwrap();
        child.try_wait().unwrap().is_some()
    }

    /// Waits (with a deadline) for it to end; its output.
    fn finish(mut self, what: &str) -> std::process::Output {
        eventually(what, Duration::from_secs(60), || {
            self.has_exited().then_some(())
        });
        self.0.take().unwrap().wait_with_output().unwrap()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The state the server has of `unit` on the agent's machine.
fn state_of(s: &ServerProcess, agent: &Agent, unit: &str) -> Option<flotilla_proto::UnitState> {
    let client = s.client();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let filter = flotilla_api::client::StateQuery {
        unit: Some(flotilla_proto::UnitName::parse(unit).unwrap()),
        machine: Some(agent.id.clone()),
    };
    rt.block_on(client.all_states(&filter))
        .unwrap()
        .into_iter()
        .next()
}

fn hash_of(text: &str) -> String {
    flotilla_proto::UnitFile::parse(text).0.content_hash()
}

/// Until the agent has sent `n` more reports than now.
fn after_reports(agent: &Agent, n: u64) {
    let from = agent.reports();
    eventually("the agent to report again", Duration::from_secs(30), || {
        (agent.reports() >= from + n).then_some(())
    });
}

/// `start --replace` of a launched unit returns only once its machine
/// reports it started with the new contents: not while the agent reports
/// the new file written and the old contents running.
#[test]
fn start_replace_returns_once_the_new_contents_run() {
    let (dir, s) = server("live");
    let agent = Agent::start(&[&s], 7);
    dir.write("web.service", WEB);
    ok(&s.run(dir.path(), &["start", "web.service"]));
    let (old, new) = (hash_of(WEB), hash_of(WEB_V2));
    assert_eq!(
        state_of(&s, &agent, "web.service").unwrap().started_hash,
        Some(old.clone())
    );

    agent.control(|c| c.hold = true);
    dir.write("web.service", WEB_V2);
    let mut start = Background::spawn(&s, dir.path(), &["start", "--replace", "web.service"]);
    // The agent has the new file and still runs the old contents.
    eventually(
        "the new file to be reported",
        Duration::from_secs(30),
        || {
            let st = state_of(&s, &agent, "web.service")?;
            (st.hash.as_deref() == Some(new.as_str())).then_some(st)
        },
    );
    let st = state_of(&s, &agent, "web.service").unwrap();
    assert_eq!(st.active_state, "active");
    assert_eq!(st.started_hash.as_deref(), Some(old.as_str()));
    // Several more reports of the same, each a change the command sees.
    after_reports(&agent, 3);
    assert!(
        !start.has_exited(),
        "start --replace returned while the old contents ran"
    );

    agent.control(|c| c.hold = false);
    let out = start.finish("start --replace to return once the new contents run");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("Unit web.service launched on {}\n", agent.id.short())
    );
    assert_eq!(
        state_of(&s, &agent, "web.service").unwrap().started_hash,
        Some(new)
    );
}

/// A unit that fails with its new contents ends the wait with an error
/// naming the unit, the machine and the reason.
#[test]
fn start_replace_fails_clearly_when_the_new_contents_fail() {
    let (dir, s) = server("livefail");
    let agent = Agent::start(&[&s], 7);
    dir.write("web.service", WEB);
    ok(&s.run(dir.path(), &["start", "web.service"]));
    agent.control(|c| c.fail = Some("the unit failed: exit status 3".into()));
    dir.write("web.service", WEB_V2);
    let out = Background::spawn(&s, dir.path(), &["start", "--replace", "web.service"])
        .finish("start --replace to fail");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "web.service failed with its new contents on machine {}: the unit failed: exit status 3",
            agent.id
        )),
        "{}",
        stderr(&out)
    );
}

/// `submit --replace` of a launched unit and `apply` wait as `start
/// --replace` does; `--no-block` returns at once.
#[test]
fn submit_replace_and_apply_wait_for_the_new_contents() {
    let (dir, s) = server("livesubmit");
    let agent = Agent::start(&[&s], 7);
    dir.write("repo/web.service", WEB);
    let repo = dir.path().join("repo");
    let repo = repo.to_str().unwrap();
    ok(&s.run(dir.path(), &["apply", repo]));

    agent.control(|c| c.hold = true);
    dir.write("repo/web.service", WEB_V2);
    let mut submit = Background::spawn(
        &s,
        &dir.path().join("repo"),
        &["submit", "--replace", "web.service"],
    );
    eventually(
        "the new file to be reported",
        Duration::from_secs(30),
        || {
            let st = state_of(&s, &agent, "web.service")?;
            (st.hash.as_deref() == Some(hash_of(WEB_V2).as_str())).then_some(())
        },
    );
    after_reports(&agent, 3);
    assert!(!submit.has_exited(), "submit --replace returned early");
    agent.control(|c| c.hold = false);
    let out = submit.finish("submit --replace to return");
    assert!(out.status.success(), "{}", stderr(&out));

    // apply: the same, back to the first contents.
    agent.control(|c| c.hold = true);
    dir.write("repo/web.service", WEB);
    let mut apply = Background::spawn(&s, dir.path(), &["apply", repo]);
    eventually(
        "the new file to be reported",
        Duration::from_secs(30),
        || {
            let st = state_of(&s, &agent, "web.service")?;
            (st.hash.as_deref() == Some(hash_of(WEB).as_str())).then_some(())
        },
    );
    after_reports(&agent, 3);
    assert!(!apply.has_exited(), "apply returned early");
    // --no-block returns while the old contents still run.
    const WEB_V3: &str = "[Service]\nExecStart=/bin/sleep 3000\n";
    dir.write("repo/web.service", WEB_V3);
    let out = Background::spawn(&s, dir.path(), &["apply", "--no-block", repo])
        .finish("apply --no-block to return");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        state_of(&s, &agent, "web.service").unwrap().started_hash,
        Some(hash_of(WEB_V2)),
        "still the contents started by submit"
    );
    let out = apply.finish("the first apply to give up");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("contents of web.service changed again"),
        "{}",
        stderr(&out)
    );
}

/// An agent from before `startedHash`: the wait takes an active unit with
/// the new file as running it, says so, and does not hang.
#[test]
fn an_agent_that_does_not_say_what_it_started_does_not_hang_the_wait() {
    let (dir, s) = server("liveold");
    let _agent = Agent::start(&[&s], 7);
    _agent.control(|c| c.old_agent = true);
    dir.write("web.service", WEB);
    ok(&s.run(dir.path(), &["start", "web.service"]));
    dir.write("web.service", WEB_V2);
    let out = Background::spawn(&s, dir.path(), &["start", "--replace", "web.service"])
        .finish("start --replace to return");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("does not say which contents web.service was started with"),
        "{}",
        stderr(&out)
    );
}

/// `diff --exit-code`: 0 without changes, 1 with, 2 for an error.
#[test]
fn diff_exit_code_tells_changes_from_none() {
    let (dir, s) = server("diffcode");
    let _agent = Agent::start(&[&s], 7);
    dir.write("repo/web.service", WEB);
    let repo = dir.path().join("repo");
    let repo = repo.to_str().unwrap();
    let out = s.run(dir.path(), &["diff", "--exit-code", repo]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stdout(&out), "+ web.service (launched)\n");
    // Without the flag, changes are no failure.
    ok(&s.run(dir.path(), &["diff", repo]));
    ok(&s.run(dir.path(), &["apply", repo]));
    let out = s.run(dir.path(), &["diff", "--exit-code", repo]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "no changes\n");
    let missing = dir.path().join("nowhere");
    let out = s.run(
        dir.path(),
        &["diff", "--exit-code", missing.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not a directory"),
        "{}",
        stderr(&out)
    );
}

/// `flotilla sync`: a source added from the command line is followed at
/// once (a real repository served by `git daemon`), and its status,
/// pause, resume and removal read as documented.
#[test]
fn sync_add_status_pause_resume_remove() {
    let (dir, s) = server("sync");
    let git = flotilla_testbed::GitServer::start("cli").unwrap();
    let commit = git
        .commit(
            &[
                ("site/web.service", Some(WEB)),
                ("site/flotilla.yaml", Some("default-state: loaded\n")),
            ],
            "first",
        )
        .unwrap();
    let out = s.run(
        dir.path(),
        &[
            "sync",
            "add",
            "site",
            "--repo",
            &git.url(),
            "--path",
            "site",
            "--interval",
            "10s",
            "--drift",
            "warn",
        ],
    );
    ok(&out);
    assert!(
        stderr(&out).contains(&format!(
            "following {} branch main as source site every 10s",
            git.url()
        )),
        "{}",
        stderr(&out)
    );
    let short = &commit[..7];
    let status = eventually("the commit to be applied", Duration::from_secs(20), || {
        let status = ok(&s.run(dir.path(), &["sync", "status", "site"]));
        status
            .contains(&format!("applied:      {short} at"))
            .then_some(status)
    });
    assert!(
        status.contains("last changes: 1 created, 0 replaced"),
        "{status}"
    );
    assert!(status.contains("  + web.service"), "{status}");
    assert!(status.contains("drift warn"), "{status}");
    assert_eq!(ok(&s.run(dir.path(), &["cat", "web.service"])), WEB);

    let listing = ok(&s.run(dir.path(), &["sync", "status"]));
    let row: Vec<&str> = listing.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..4], ["site", "following", short, short], "{listing}");

    ok(&s.run(dir.path(), &["sync", "pause", "site"]));
    let json = ok(&s.run(dir.path(), &["sync", "status", "site", "-o", "json"]));
    let info: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(info["source"]["paused"], true);
    ok(&s.run(dir.path(), &["sync", "resume", "site"]));

    let out = s.run(
        dir.path(),
        &[
            "sync",
            "add",
            "bad",
            "--repo",
            "ssh://git@example.com/r.git",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("knownHosts: an ssh:// repository needs its server's host keys"),
        "{}",
        stderr(&out)
    );

    let out = ok(&s.run(dir.path(), &["sync", "remove", "site"]));
    assert!(out.is_empty());
    assert_eq!(ok(&s.run(dir.path(), &["cat", "web.service"])), WEB);
    let out = s.run(dir.path(), &["sync", "status", "site"]);
    assert_eq!(out.status.code(), Some(1));
}
