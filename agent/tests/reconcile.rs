//! The reconcile pass against the in-memory systemd: render everything,
//! write only what changed, reload only when systemd needs it, then
//! start/stop/restart without waiting for the jobs; never
//! touch what flotilla did not write; a second pass does nothing.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::sync::Arc;

use flotilla_agent::reconcile::{Action, CONTAINER_JOBS_IN_FLIGHT, Reconciler};
use flotilla_agent::systemd::{FakeCall, FakeSystemd, JobKind};
use flotilla_agent::unit_dir::{UnitDir, managed_content, marker_hash};
use flotilla_proto::wire::AssignedUnit;
use flotilla_proto::{DesiredState, UnitFile};

const SHIM: &str = "/opt/flotilla/bin/flotilla";

struct Setup {
    dir: tempfile::TempDir,
    systemd: Arc<FakeSystemd>,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("system")).unwrap();
        let systemd = Arc::new(FakeSystemd::new(&dir.path().join("system")));
        Setup { dir, systemd }
    }

    fn units(&self) -> PathBuf {
        self.dir.path().join("system")
    }

    /// As [`Setup::new`], with a systemd older than 246, which loads a new
    /// unit's file only at a reload.
    fn before_246() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("system")).unwrap();
        let systemd = Arc::new(FakeSystemd::new(&dir.path().join("system")).before_246());
        Setup { dir, systemd }
    }

    /// A reconciler with no memory, as after the agent starts.
    fn reconciler(&self) -> Reconciler<FakeSystemd> {
        Reconciler::new(
            self.systemd.clone(),
            UnitDir::new(self.units()),
            PathBuf::from(SHIM),
        )
    }

    /// A reconciler that keeps which hash it started each unit with in the
    /// unit directory, as the agent's does.
    fn remembering(&self) -> Reconciler<FakeSystemd> {
        self.reconciler().remembering()
    }

    fn file(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.units().join(name)).ok()
    }
}

fn unit(name: &str, text: &str, state: DesiredState) -> AssignedUnit {
    let (file, diags) = UnitFile::parse(text);
    assert!(diags.is_empty(), "{diags:?}");
    AssignedUnit {
        name: name.to_owned(),
        text: text.to_owned(),
        hash: file.content_hash(),
        desired_state: state,
        global: false,
        secrets: Default::default(),
    }
}

fn sleeper(tag: &str) -> String {
    format!("[Unit]\nDescription={tag}\n\n[Service]\nExecStart=/bin/sleep infinity\n")
}

const CONTAINER: &str =
    "[Unit]\nDescription=web\n[Container]\nImage=local/busybox:latest\nExec=httpd -f\n";

fn job(kind: JobKind, name: &str) -> FakeCall {
    FakeCall::Job(kind, name.to_owned())
}

#[tokio::test]
async fn renders_everything_and_writes_what_changed() {
    let s = Setup::new();
    let mut r = s.reconciler();
    let feed = vec![
        unit("a.service", &sleeper("a"), DesiredState::Launched),
        unit("b.service", &sleeper("b"), DesiredState::Loaded),
        unit("web.service", CONTAINER, DesiredState::Launched),
        // Not scheduled here: nothing is written for it.
        unit("c.service", &sleeper("c"), DesiredState::Inactive),
    ];
    let pass = r.reconcile(&feed).await.unwrap();
    assert_eq!(pass.action, Action::AwaitChange);
    assert_eq!(pass.plan.write.len(), 3);
    assert!(pass.plan.refused.is_empty(), "{:?}", pass.plan.refused);
    // New units need no reload: the jobs load their files.
    assert_eq!(
        s.systemd.changes(),
        [
            job(JobKind::Start, "a.service"),
            job(JobKind::Start, "web.service"),
        ]
    );
    assert!(s.systemd.is_active("a.service"));
    assert!(!s.systemd.is_active("b.service"));
    assert!(s.file("c.service").is_none());

    // Plain units as written, behind the marker.
    let a = s.file("a.service").unwrap();
    assert_eq!(marker_hash(&a), Some(feed[0].hash.as_str()));
    assert!(a.ends_with(&sleeper("a")));
    assert_eq!(s.systemd.loaded_text("a.service").unwrap(), a);
    // Container units through the shim.
    let web = s.file("web.service").unwrap();
    assert_eq!(marker_hash(&web), Some(feed[2].hash.as_str()));
    assert!(web.contains(&format!("ExecStart={SHIM} shim run --unit web.service")));
    assert!(web.contains("[X-Container]"));

    // The same feed again: nothing at all changes.
    s.systemd.clear_calls();
    let mtime = std::fs::metadata(s.units().join("a.service"))
        .unwrap()
        .modified()
        .unwrap();
    let pass = r.reconcile(&feed).await.unwrap();
    assert!(pass.plan.is_empty(), "{:?}", pass.plan);
    assert_eq!(s.systemd.changes(), []);
    let again = std::fs::metadata(s.units().join("a.service"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(mtime, again);
    assert_eq!(pass.units.len(), 3);
    assert_eq!(
        pass.units["a.service"].hash.as_deref(),
        Some(feed[0].hash.as_str())
    );
}

#[tokio::test]
async fn a_changed_unit_is_rewritten_and_restarted_and_nothing_else() {
    let s = Setup::new();
    let mut r = s.reconciler();
    let mut feed = vec![
        unit("a.service", &sleeper("a"), DesiredState::Launched),
        unit("b.service", &sleeper("b"), DesiredState::Launched),
    ];
    r.reconcile(&feed).await.unwrap();
    let (pid_a, pid_b) = (
        s.systemd.peek("a.service").main_pid,
        s.systemd.peek("b.service").main_pid,
    );
    s.systemd.clear_calls();
    feed[0] = unit("a.service", &sleeper("a, changed"), DesiredState::Launched);
    let pass = r.reconcile(&feed).await.unwrap();
    assert_eq!(pass.plan.write.len(), 1);
    assert_eq!(
        s.systemd.changes(),
        [FakeCall::Reload, job(JobKind::Restart, "a.service")]
    );
    assert_ne!(s.systemd.peek("a.service").main_pid, pid_a);
    assert_eq!(s.systemd.peek("b.service").main_pid, pid_b);
    assert!(
        s.systemd
            .loaded_text("a.service")
            .unwrap()
            .contains("a, changed")
    );
    assert_eq!(
        marker_hash(&s.file("a.service").unwrap()),
        Some(feed[0].hash.as_str())
    );

    // A changed unit that is only loaded is rewritten, not started.
    s.systemd.clear_calls();
    feed[1] = unit("b.service", &sleeper("b, changed"), DesiredState::Loaded);
    r.reconcile(&feed).await.unwrap();
    assert_eq!(
        s.systemd.changes(),
        [FakeCall::Reload, job(JobKind::Stop, "b.service")]
    );
}

#[tokio::test]
async fn stopped_units_keep_their_files_and_removed_units_lose_them() {
    let s = Setup::new();
    let mut r = s.reconciler();
    let mut feed = vec![
        unit("a.service", &sleeper("a"), DesiredState::Launched),
        unit("b.service", &sleeper("b"), DesiredState::Launched),
    ];
    r.reconcile(&feed).await.unwrap();
    s.systemd.clear_calls();

    // launched -> loaded: stopped, file kept, no reload needed.
    feed[0].desired_state = DesiredState::Loaded;
    let pass = r.reconcile(&feed).await.unwrap();
    assert_eq!(s.systemd.changes(), [job(JobKind::Stop, "a.service")]);
    assert!(pass.removed.is_empty());
    assert!(s.file("a.service").is_some());
    assert!(!s.systemd.is_active("a.service"));

    // loaded -> launched again: started (a `flotilla restart`).
    s.systemd.clear_calls();
    feed[0].desired_state = DesiredState::Launched;
    r.reconcile(&feed).await.unwrap();
    assert_eq!(s.systemd.changes(), [job(JobKind::Start, "a.service")]);

    // Gone from the feed: stopped first, then its file removed, one reload.
    s.systemd.clear_calls();
    feed.remove(0);
    let pass = r.reconcile(&feed).await.unwrap();
    assert_eq!(
        s.systemd.changes(),
        [job(JobKind::Stop, "a.service"), FakeCall::Reload]
    );
    assert_eq!(pass.removed, ["a.service"]);
    assert!(s.file("a.service").is_none());
    assert!(!s.systemd.is_active("a.service"));
    assert!(s.systemd.is_active("b.service"));
    assert!(!pass.units.contains_key("a.service"));

    // An empty feed removes everything flotilla wrote, and only that.
    std::fs::write(s.units().join("mine-not.service"), sleeper("host")).unwrap();
    let pass = r.reconcile(&[]).await.unwrap();
    assert_eq!(pass.removed, ["b.service"]);
    assert_eq!(s.file("mine-not.service").unwrap(), sleeper("host"));
}

/// Before systemd 246 a unit looked up before its file existed stays not
/// found until a reload: one reload, after every file was written, before
/// any job. From 246 on, only changed files need one.
#[tokio::test]
async fn new_units_need_one_reload_only_before_systemd_246() {
    let feed = vec![
        unit("a.service", &sleeper("a"), DesiredState::Launched),
        unit("b.service", &sleeper("b"), DesiredState::Launched),
    ];
    let s = Setup::before_246();
    let mut r = s.reconciler();
    r.reconcile(&feed).await.unwrap();
    assert_eq!(
        s.systemd.changes(),
        [
            FakeCall::Reload,
            job(JobKind::Start, "a.service"),
            job(JobKind::Start, "b.service"),
        ]
    );
    assert!(s.systemd.is_active("a.service") && s.systemd.is_active("b.service"));

    // A changed file needs the reload on any systemd.
    for s in [Setup::new(), Setup::before_246()] {
        let mut r = s.reconciler();
        r.reconcile(&feed).await.unwrap();
        s.systemd.clear_calls();
        let changed = vec![
            unit("a.service", &sleeper("a2"), DesiredState::Launched),
            feed[1].clone(),
        ];
        r.reconcile(&changed).await.unwrap();
        assert_eq!(
            s.systemd.changes(),
            [FakeCall::Reload, job(JobKind::Restart, "a.service")]
        );
        assert_eq!(
            s.systemd.loaded_text("a.service").unwrap(),
            s.file("a.service").unwrap()
        );
    }
}

#[tokio::test]
async fn units_flotilla_did_not_write_are_never_touched() {
    let s = Setup::new();
    // A host unit of the same name, defined in /etc and running.
    let etc = Path::new("/etc/systemd/system/x.service");
    s.systemd.add_host_unit("x.service", etc);
    let pid = s.systemd.peek("x.service").main_pid;
    // A file flotilla did not write at flotilla's own path.
    std::fs::write(s.units().join("y.service"), sleeper("by hand")).unwrap();

    let mut r = s.reconciler();
    let feed = vec![
        unit("x.service", &sleeper("x"), DesiredState::Loaded),
        unit("y.service", &sleeper("y"), DesiredState::Launched),
        unit("z.service", &sleeper("z"), DesiredState::Launched),
    ];
    let pass = r.reconcile(&feed).await.unwrap();
    let x = pass.units["x.service"].refused.as_deref().unwrap();
    assert!(x.contains("/etc/systemd/system/x.service"), "{x}");
    let y = pass.units["y.service"].refused.as_deref().unwrap();
    assert!(y.contains("not written by flotilla"), "{y}");
    assert_eq!(pass.units["x.service"].hash, None);
    assert!(pass.units["z.service"].refused.is_none());
    // Only z was written and started; x kept running as it was.
    assert_eq!(pass.plan.write.len(), 1);
    assert_eq!(s.systemd.changes(), [job(JobKind::Start, "z.service")]);
    assert!(s.file("x.service").is_none());
    assert_eq!(s.file("y.service").unwrap(), sleeper("by hand"));
    assert_eq!(s.systemd.peek("x.service").main_pid, pid);

    // Dropped from the feed, they are still not touched.
    s.systemd.clear_calls();
    let pass = r.reconcile(&feed[2..]).await.unwrap();
    assert!(pass.removed.is_empty());
    assert_eq!(s.systemd.changes(), []);
    assert_eq!(s.file("y.service").unwrap(), sleeper("by hand"));
    assert!(s.systemd.is_active("x.service"));
}

#[tokio::test]
async fn a_restarted_agent_changes_nothing() {
    let s = Setup::new();
    let feed = vec![
        unit("a.service", &sleeper("a"), DesiredState::Launched),
        unit("web.service", CONTAINER, DesiredState::Launched),
        unit("b.service", &sleeper("b"), DesiredState::Loaded),
    ];
    s.reconciler().reconcile(&feed).await.unwrap();
    let pids: Vec<u32> = ["a.service", "web.service"]
        .iter()
        .map(|u| s.systemd.peek(u).main_pid)
        .collect();
    s.systemd.clear_calls();
    // A new reconciler knows only what is on disk and in systemd.
    let pass = s.reconciler().reconcile(&feed).await.unwrap();
    assert!(pass.plan.is_empty(), "{:?}", pass.plan);
    assert_eq!(s.systemd.changes(), []);
    let after: Vec<u32> = ["a.service", "web.service"]
        .iter()
        .map(|u| s.systemd.peek(u).main_pid)
        .collect();
    assert_eq!(pids, after);
}

#[tokio::test]
async fn an_agent_that_crashed_between_writing_and_restarting_restarts_when_back() {
    let s = Setup::new();
    let v1 = vec![unit("a.service", &sleeper("a"), DesiredState::Launched)];
    s.remembering().reconcile(&v1).await.unwrap();
    let pid = s.systemd.peek("a.service").main_pid;

    // A restarted agent with nothing new restarts nothing.
    s.systemd.clear_calls();
    let pass = s.remembering().reconcile(&v1).await.unwrap();
    assert!(pass.plan.is_empty(), "{:?}", pass.plan);

    // The agent wrote a's new file, and died before restarting it.
    let v2 = vec![unit(
        "a.service",
        &sleeper("a, changed"),
        DesiredState::Launched,
    )];
    UnitDir::new(s.units())
        .write("a.service", &managed_content(&v2[0].hash, &v2[0].text))
        .unwrap();
    s.systemd.clear_calls();
    let pass = s.remembering().reconcile(&v2).await.unwrap();
    assert!(pass.plan.write.is_empty(), "{:?}", pass.plan);
    assert!(
        s.systemd
            .changes()
            .contains(&job(JobKind::Restart, "a.service")),
        "{:?}",
        s.systemd.changes()
    );
    assert_ne!(s.systemd.peek("a.service").main_pid, pid);

    // And the record now says so: the next agent restarts nothing.
    s.systemd.clear_calls();
    let pass = s.remembering().reconcile(&v2).await.unwrap();
    assert!(pass.plan.is_empty(), "{:?}", pass.plan);
    // The record is not a unit.
    let managed = UnitDir::new(s.units()).managed().unwrap();
    assert_eq!(managed.keys().collect::<Vec<_>>(), ["a.service"]);

    // A unit that stopped while no agent ran is started by the next one:
    // the record decides restarts, not starts.
    s.systemd.crash("a.service");
    s.systemd.clear_calls();
    s.remembering().reconcile(&v2).await.unwrap();
    assert_eq!(s.systemd.changes(), [job(JobKind::Start, "a.service")]);
    assert!(s.systemd.is_active("a.service"));
}

#[tokio::test]
async fn after_the_first_pass_only_units_not_as_left_are_read_whole() {
    let s = Setup::new();
    let mut r = s.reconciler();
    let mut feed: Vec<AssignedUnit> = (0..10)
        .map(|i| {
            unit(
                &format!("u{i}.service"),
                &sleeper("u"),
                DesiredState::Launched,
            )
        })
        .collect();
    r.reconcile(&feed).await.unwrap();
    // The first pass saw them before they had files; the second reads them
    // whole once more.
    r.reconcile(&feed).await.unwrap();
    let reads = |calls: Vec<FakeCall>| -> Vec<String> {
        calls
            .into_iter()
            .filter_map(|c| match c {
                FakeCall::Unit(name) => Some(name),
                _ => None,
            })
            .collect()
    };
    // Nothing changed: the states of all ten in one call, no unit read.
    s.systemd.clear_calls();
    let pass = r.reconcile(&feed).await.unwrap();
    assert!(pass.plan.is_empty(), "{:?}", pass.plan);
    assert_eq!(reads(s.systemd.calls()), Vec::<String>::new());
    assert!(s.systemd.calls().contains(&FakeCall::UnitStates(10)));

    // One changed, one crashed: only those two are read whole.
    feed[3] = unit("u3.service", &sleeper("u, changed"), DesiredState::Launched);
    s.systemd.crash("u7.service");
    s.systemd.clear_calls();
    r.reconcile(&feed).await.unwrap();
    assert_eq!(reads(s.systemd.calls()), ["u3.service", "u7.service"]);
    assert_eq!(
        s.systemd.changes(),
        [FakeCall::Reload, job(JobKind::Restart, "u3.service")]
    );
}

/// New units, which systemd has no file for, are known from one call for
/// them all; only units systemd has loaded are read whole.
#[tokio::test]
async fn new_units_cost_one_call_for_all() {
    let s = Setup::new();
    let etc = Path::new("/etc/systemd/system/host.service");
    s.systemd.add_host_unit("host.service", etc);
    let mut r = s.reconciler();
    let mut feed: Vec<AssignedUnit> = (0..5)
        .map(|i| {
            unit(
                &format!("n{i}.service"),
                &sleeper("n"),
                DesiredState::Launched,
            )
        })
        .collect();
    feed.push(unit("host.service", &sleeper("h"), DesiredState::Launched));
    let pass = r.reconcile(&feed).await.unwrap();
    let reads: Vec<FakeCall> = s
        .systemd
        .calls()
        .into_iter()
        .filter(|c| matches!(c, FakeCall::Unit(_) | FakeCall::UnitStates(_)))
        .collect();
    assert_eq!(
        reads,
        [
            FakeCall::UnitStates(6),
            FakeCall::Unit("host.service".to_owned())
        ]
    );
    // The host's own unit is still found and refused.
    let refused = pass.units["host.service"].refused.as_deref().unwrap();
    assert!(
        refused.contains("/etc/systemd/system/host.service"),
        "{refused}"
    );
    for i in 0..5 {
        assert!(s.systemd.is_active(&format!("n{i}.service")));
    }
}

#[tokio::test]
async fn a_failed_unit_is_left_to_systemd_until_it_changes() {
    let s = Setup::new();
    s.systemd.fail_jobs_of("a.service");
    let mut r = s.reconciler();
    let mut feed = vec![unit("a.service", &sleeper("a"), DesiredState::Launched)];
    let pass = r.reconcile(&feed).await.unwrap();
    assert_eq!(pass.action, Action::AwaitChange);
    let error = pass.units["a.service"].error.as_deref().unwrap();
    assert!(error.contains("failed"), "{error}");
    assert_eq!(s.systemd.peek("a.service").active_state, "failed");

    // Another pass does not start it again: Restart= decides.
    s.systemd.clear_calls();
    let pass = r.reconcile(&feed).await.unwrap();
    assert_eq!(s.systemd.changes(), []);
    assert!(pass.units["a.service"].error.is_some());

    // Nor does a unit that crashed after it ran.
    s.systemd.crash("a.service");
    r.reconcile(&feed).await.unwrap();
    assert_eq!(s.systemd.changes(), []);

    // New contents are started again (the fake still fails them).
    feed[0] = unit("a.service", &sleeper("a, fixed"), DesiredState::Launched);
    let pass = r.reconcile(&feed).await.unwrap();
    assert!(
        s.systemd
            .changes()
            .contains(&job(JobKind::Start, "a.service"))
    );
    assert_eq!(pass.plan.jobs, [(JobKind::Start, "a.service".to_owned())]);
}

#[tokio::test]
async fn systemd_unavailable_is_an_error_to_retry_and_the_retry_completes() {
    let s = Setup::new();
    let mut r = s.reconciler();
    let feed = vec![unit("a.service", &sleeper("a"), DesiredState::Launched)];
    s.systemd.set_unavailable(true);
    let e = r.reconcile(&feed).await.unwrap_err();
    assert!(e.to_string().contains("d-bus"), "{e}");
    s.systemd.set_unavailable(false);
    let pass = r.reconcile(&feed).await.unwrap();
    assert_eq!(pass.action, Action::AwaitChange);
    assert!(s.systemd.is_active("a.service"));
}

#[tokio::test]
async fn invalid_units_are_refused_with_the_reason() {
    let s = Setup::new();
    let mut r = s.reconciler();
    let bad = AssignedUnit {
        name: "bad.service".into(),
        text: "[Service]\nExecStart=/bin/true\nnot an assignment\n".into(),
        hash: "h".into(),
        desired_state: DesiredState::Launched,
        global: false,
        secrets: Default::default(),
    };
    let template = unit("t@.service", &sleeper("t"), DesiredState::Launched);
    let pass = r.reconcile(&[bad, template]).await.unwrap();
    assert!(pass.units["bad.service"].refused.is_some());
    let t = pass.units["t@.service"].refused.as_deref().unwrap();
    assert!(t.contains("template"), "{t}");
    assert_eq!(s.systemd.changes(), []);
    assert!(s.file("bad.service").is_none());
}

const WITH_SECRET: &str =
    "[Unit]\nDescription=web\n[Container]\nImage=local/busybox:latest\nSecret=db\n";

#[tokio::test]
async fn a_new_secret_version_restarts_the_unit_and_a_missing_secret_refuses_it() {
    let s = Setup::new();
    let mut r = s.reconciler();
    let mut web = unit("web.service", WITH_SECRET, DesiredState::Launched);
    // Secret db does not exist: the feed carries no version for it.
    let pass = r.reconcile(std::slice::from_ref(&web)).await.unwrap();
    let why = &pass.plan.refused["web.service"];
    assert!(why.contains("secret db does not exist"), "{why}");
    assert!(!s.systemd.is_active("web.service"));

    web.secrets.insert("db".into(), 1);
    let pass = r.reconcile(std::slice::from_ref(&web)).await.unwrap();
    assert!(pass.plan.refused.is_empty(), "{:?}", pass.plan.refused);
    assert!(s.systemd.is_active("web.service"));
    // The unit's own hash is reported, not the versions.
    assert_eq!(
        pass.units["web.service"].hash.as_deref(),
        Some(web.hash.as_str())
    );

    // The same versions: nothing happens.
    s.systemd.clear_calls();
    let pass = r.reconcile(std::slice::from_ref(&web)).await.unwrap();
    assert!(pass.plan.is_empty(), "{:?}", pass.plan);

    // A new version of db: the unit restarts, with the same unit file.
    web.secrets.insert("db".into(), 2);
    let pass = r.reconcile(std::slice::from_ref(&web)).await.unwrap();
    assert_eq!(
        pass.plan.jobs,
        vec![(JobKind::Restart, "web.service".to_owned())]
    );
    assert_eq!(
        pass.units["web.service"].hash.as_deref(),
        Some(web.hash.as_str())
    );
}

#[tokio::test]
async fn a_held_unit_is_left_alone_and_the_pass_retried() {
    let s = Setup::new();
    let mut r = s.reconciler();
    let mut web = unit("web.service", WITH_SECRET, DesiredState::Launched);
    web.secrets.insert("db".into(), 1);
    let other = unit("a.service", &sleeper("a"), DesiredState::Launched);
    let feed = vec![web.clone(), other];
    r.hold([("web.service".to_owned(), "cannot fetch".to_owned())].into());
    let pass = r.reconcile(&feed).await.unwrap();
    assert_eq!(pass.action, Action::Retry);
    assert_eq!(pass.plan.refused["web.service"], "cannot fetch");
    assert!(!s.systemd.is_active("web.service"));
    // The others are not held up.
    assert!(s.systemd.is_active("a.service"));
    // Held for one pass only.
    let pass = r.reconcile(&feed).await.unwrap();
    assert_eq!(pass.action, Action::AwaitChange);
    assert!(s.systemd.is_active("web.service"));
}

/// Lets the job tasks run until systemd has taken `n` jobs (they run on
/// this test's one thread, between its awaits).
async fn until_jobs_taken(s: &Setup, n: usize) {
    for _ in 0..10_000 {
        let taken = s
            .systemd
            .changes()
            .iter()
            .filter(|c| matches!(c, FakeCall::Job(..)))
            .count();
        if taken >= n {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("systemd never took {n} jobs: {:?}", s.systemd.changes());
}

/// Waits for every job the passes sent; how many ended and whether any
/// failed.
async fn finish_jobs(r: &mut Reconciler<FakeSystemd>) -> (usize, bool) {
    let (mut ended, mut failed) = (0, false);
    while r.has_jobs() {
        let done = r.jobs_finished().await;
        ended += done.ended;
        failed |= done.failed;
    }
    (ended, failed)
}

/// The agent's passes do not wait for their jobs: units that arrive while
/// others start are written and started at once, and no unit gets a second
/// job for the contents its running job starts.
#[tokio::test]
async fn a_pass_does_not_wait_for_the_jobs_of_the_last() {
    let s = Setup::new();
    let mut r = s.reconciler();
    s.systemd.hold_jobs(true);
    let a = unit("a.service", &sleeper("a"), DesiredState::Launched);
    let b = unit("b.service", &sleeper("b"), DesiredState::Launched);
    let pass = r
        .reconcile_overlapping(std::slice::from_ref(&a))
        .await
        .unwrap();
    assert_eq!(pass.action, Action::AwaitChange);
    assert_eq!(pass.plan.jobs, [(JobKind::Start, "a.service".to_owned())]);
    until_jobs_taken(&s, 1).await;
    assert!(r.has_jobs());
    assert!(!s.systemd.is_active("a.service"));

    // b arrives while a still starts: a, whose job is under way, is not
    // read whole again.
    let both = vec![a.clone(), b.clone()];
    let taken = s.systemd.calls().len();
    let pass = r.reconcile_overlapping(&both).await.unwrap();
    assert_eq!(pass.plan.jobs, [(JobKind::Start, "b.service".to_owned())]);
    assert!(s.file("b.service").is_some());
    let read_a = FakeCall::Unit("a.service".to_owned());
    assert!(
        !s.systemd.calls()[taken..].contains(&read_a),
        "{:?}",
        s.systemd.calls()
    );
    until_jobs_taken(&s, 2).await;

    s.systemd.hold_jobs(false);
    assert_eq!(finish_jobs(&mut r).await, (2, false));
    assert!(s.systemd.is_active("a.service") && s.systemd.is_active("b.service"));
    assert_eq!(
        s.systemd.changes(),
        [
            job(JobKind::Start, "a.service"),
            job(JobKind::Start, "b.service")
        ]
    );
    // All done: nothing more to do, and nothing restarted.
    let pass = r.reconcile_overlapping(&both).await.unwrap();
    assert!(pass.plan.is_empty(), "{:?}", pass.plan);
    assert!(!r.has_jobs());
}

/// A unit whose contents change while its start still runs is restarted,
/// so that it ends up running the new contents, not the start merged into
/// the old one.
#[tokio::test]
async fn contents_changed_during_a_start_restart_the_unit() {
    let s = Setup::new();
    let mut r = s.reconciler();
    s.systemd.hold_jobs(true);
    let v1 = unit("a.service", &sleeper("v1"), DesiredState::Launched);
    let v2 = unit("a.service", &sleeper("v2"), DesiredState::Launched);
    r.reconcile_overlapping(&[v1]).await.unwrap();
    until_jobs_taken(&s, 1).await;
    let pass = r.reconcile_overlapping(&[v2]).await.unwrap();
    assert_eq!(pass.plan.jobs, [(JobKind::Restart, "a.service".to_owned())]);
    s.systemd.hold_jobs(false);
    finish_jobs(&mut r).await;
    assert!(s.systemd.is_active("a.service"));
    assert_eq!(
        s.systemd.loaded_text("a.service").unwrap(),
        s.file("a.service").unwrap()
    );
    assert!(s.file("a.service").unwrap().ends_with(&sleeper("v2")));
    // What runs is v2: the next pass has nothing to do.
    s.systemd.clear_calls();
    let v2 = unit("a.service", &sleeper("v2"), DesiredState::Launched);
    let pass = r.reconcile_overlapping(&[v2]).await.unwrap();
    assert!(pass.plan.is_empty(), "{:?}", pass.plan);
}

/// A job that fails after its pass returned is reported by the next pass,
/// which starts nothing again (the unit is left to systemd's `Restart=`).
#[tokio::test]
async fn a_job_failing_after_its_pass_is_reported_by_the_next() {
    let s = Setup::new();
    let mut r = s.reconciler();
    s.systemd.fail_jobs_of("a.service");
    let feed = vec![unit("a.service", &sleeper("a"), DesiredState::Launched)];
    let pass = r.reconcile_overlapping(&feed).await.unwrap();
    assert_eq!(pass.units["a.service"].error, None);
    let done = r.jobs_finished().await;
    assert_eq!(
        done,
        flotilla_agent::reconcile::JobsDone {
            ended: 1,
            failed: true,
            retry: false
        }
    );
    s.systemd.clear_calls();
    let pass = r.reconcile_overlapping(&feed).await.unwrap();
    let error = pass.units["a.service"].error.as_deref().unwrap();
    assert!(error.contains("failed"), "{error}");
    assert_eq!(s.systemd.changes(), []);
    assert!(!r.has_jobs());
}

/// A unit's note says it was started with new contents only once the job
/// that restarts it with them has ended: the pass that sends the job still
/// says the old ones, and [`Reconciler::refresh`] brings the note up to
/// date after.
#[tokio::test]
async fn notes_say_the_contents_started_once_the_job_ended() {
    let s = Setup::new();
    let mut r = s.reconciler();
    let v1 = unit("a.service", &sleeper("v1"), DesiredState::Launched);
    let v2 = unit("a.service", &sleeper("v2"), DesiredState::Launched);
    let pass = r
        .reconcile_overlapping(std::slice::from_ref(&v1))
        .await
        .unwrap();
    assert_eq!(pass.units["a.service"].started, None, "not started yet");
    finish_jobs(&mut r).await;
    let mut units = pass.units.clone();
    r.refresh(&mut units, &pass.hashes);
    assert_eq!(
        units["a.service"].started.as_deref(),
        Some(v1.hash.as_str())
    );

    s.systemd.hold_jobs(true);
    let pass = r
        .reconcile_overlapping(std::slice::from_ref(&v2))
        .await
        .unwrap();
    assert_eq!(pass.plan.jobs, [(JobKind::Restart, "a.service".to_owned())]);
    let note = &pass.units["a.service"];
    assert_eq!(note.hash.as_deref(), Some(v2.hash.as_str()), "file written");
    assert_eq!(
        note.started.as_deref(),
        Some(v1.hash.as_str()),
        "the restart has not ended: v1 still runs"
    );
    until_jobs_taken(&s, 2).await;
    s.systemd.hold_jobs(false);
    finish_jobs(&mut r).await;
    let mut units = pass.units.clone();
    r.refresh(&mut units, &pass.hashes);
    assert_eq!(
        units["a.service"].started.as_deref(),
        Some(v2.hash.as_str())
    );
}

/// A container's start lasts as long as its image pull: a pass sends the
/// other units' jobs first, and container starts never hold more than
/// their share of the job slots, so units that come later are not left
/// waiting behind them.
#[tokio::test]
async fn container_starts_go_last_and_leave_job_slots_to_other_units() {
    let s = Setup::new();
    let mut r = s.reconciler();
    s.systemd.hold_jobs(true);
    let many = CONTAINER_JOBS_IN_FLIGHT + 10;
    // The containers sort before the plain unit by name.
    let mut feed: Vec<AssignedUnit> = (0..many)
        .map(|i| {
            unit(
                &format!("a-web-{i:03}.service"),
                CONTAINER,
                DesiredState::Launched,
            )
        })
        .collect();
    feed.push(unit(
        "z-plain.service",
        &sleeper("plain"),
        DesiredState::Launched,
    ));
    let pass = r.reconcile_overlapping(&feed).await.unwrap();
    assert_eq!(pass.plan.jobs.len(), many + 1);
    until_jobs_taken(&s, CONTAINER_JOBS_IN_FLIGHT + 1).await;
    for _ in 0..1_000 {
        tokio::task::yield_now().await;
    }
    let taken: Vec<FakeCall> = s
        .systemd
        .changes()
        .into_iter()
        .filter(|c| matches!(c, FakeCall::Job(..)))
        .collect();
    assert_eq!(taken[0], job(JobKind::Start, "z-plain.service"));
    assert_eq!(
        taken.len(),
        CONTAINER_JOBS_IN_FLIGHT + 1,
        "the containers held more than their share of the slots"
    );

    // A unit that comes while the containers' starts hold their share
    // is started at once.
    feed.push(unit(
        "z-later.service",
        &sleeper("later"),
        DesiredState::Launched,
    ));
    let pass = r.reconcile_overlapping(&feed).await.unwrap();
    assert_eq!(
        pass.plan.jobs,
        [(JobKind::Start, "z-later.service".to_owned())]
    );
    until_jobs_taken(&s, CONTAINER_JOBS_IN_FLIGHT + 2).await;

    s.systemd.hold_jobs(false);
    assert_eq!(finish_jobs(&mut r).await, (many + 2, false));
    assert!(s.systemd.is_active("a-web-000.service"));
    assert!(s.systemd.is_active("z-later.service"));
}
