//! The reporter against the in-memory systemd, on a paused clock: changes
//! are read when systemd signals them, gathered for the batch window and
//! sent in one call; only what changed is sent, except after a
//! registration; failed sends are retried; removed units are reported.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_agent::reconcile::Reconciler;
use flotilla_agent::report::{Interest, ReportSink, Reporter, ReporterInputs};
use flotilla_agent::systemd::{FakeSystemd, SystemdManager};
use flotilla_agent::unit_dir::UnitDir;
use flotilla_api::client::ClientError;
use flotilla_proto::wire::{AssignedUnit, StateReport};
use flotilla_proto::{DesiredState, MachineId, UnitFile};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

const BATCH: Duration = Duration::from_millis(100);

/// Records reports; fails while `failing` is set.
#[derive(Clone)]
struct Recorder {
    reports: mpsc::UnboundedSender<StateReport>,
    failing: Arc<Mutex<bool>>,
}

impl ReportSink for Recorder {
    async fn send(&self, report: StateReport) -> Result<(), ClientError> {
        if *self.failing.lock().unwrap() {
            return Err(ClientError::Protocol {
                endpoint: "test".into(),
                message: "down".into(),
            });
        }
        self.reports.send(report).unwrap();
        Ok(())
    }
}

fn unit(name: &str, tag: &str, state: DesiredState) -> AssignedUnit {
    let text = format!("[Unit]\nDescription={tag}\n[Service]\nExecStart=/bin/sleep infinity\n");
    AssignedUnit {
        name: name.to_owned(),
        hash: UnitFile::parse(&text).0.content_hash(),
        text,
        desired_state: state,
        global: false,
        secrets: Default::default(),
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    systemd: Arc<FakeSystemd>,
    reconciler: Reconciler<FakeSystemd>,
    passes: mpsc::Sender<Interest>,
    registered: watch::Sender<u64>,
    shutdown: watch::Sender<bool>,
    reports: mpsc::UnboundedReceiver<StateReport>,
    failing: Arc<Mutex<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Harness {
    /// A reporter whose machine registered `registered` times so far.
    async fn start(registered: u64) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let systemd = Arc::new(FakeSystemd::new(dir.path()));
        let reconciler = Reconciler::new(
            systemd.clone(),
            UnitDir::new(dir.path()),
            PathBuf::from("/usr/bin/flotilla"),
        );
        let (tx, reports) = mpsc::unbounded_channel();
        let failing = Arc::new(Mutex::new(false));
        let sink = Recorder {
            reports: tx,
            failing: failing.clone(),
        };
        let machine = MachineId::parse("0123456789abcdef0123456789abcdef").unwrap();
        let reporter = Reporter::new(systemd.clone(), sink, machine, BATCH);
        let (passes, passes_rx) = mpsc::channel(16);
        let (registered, registered_rx) = watch::channel(registered);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let inputs = ReporterInputs {
            changes: systemd.subscribe().await.unwrap(),
            passes: passes_rx,
            registered: registered_rx,
            shutdown: shutdown_rx,
        };
        let task = tokio::spawn(async move { reporter.run(inputs).await.unwrap() });
        Harness {
            _dir: dir,
            systemd,
            reconciler,
            passes,
            registered,
            shutdown,
            reports,
            failing,
            task,
        }
    }

    async fn reconcile(&mut self, feed: &[AssignedUnit]) {
        let pass = self.reconciler.reconcile(feed).await.unwrap();
        self.passes.send(Interest::from(&pass)).await.unwrap();
    }

    async fn next(&mut self) -> StateReport {
        tokio::time::timeout(Duration::from_secs(60), self.reports.recv())
            .await
            .expect("a report within a minute")
            .unwrap()
    }

    async fn nothing_more(&mut self) {
        let more = tokio::time::timeout(Duration::from_secs(30), self.reports.recv()).await;
        assert!(more.is_err(), "unexpected report {more:?}");
    }

    async fn stop(self) {
        self.shutdown.send(true).unwrap();
        self.task.await.unwrap();
    }
}

fn names(report: &StateReport) -> Vec<&str> {
    report.states.iter().map(|s| s.unit.as_str()).collect()
}

#[tokio::test(start_paused = true)]
async fn changes_are_batched_and_only_changes_are_sent() {
    let mut h = Harness::start(1).await;
    let feed = vec![
        unit("a.service", "a", DesiredState::Launched),
        unit("b.service", "b", DesiredState::Launched),
        unit("c.service", "c", DesiredState::Loaded),
    ];
    let began = Instant::now();
    h.reconcile(&feed).await;
    // Every unit, in one report, after the batch window.
    let first = h.next().await;
    assert!(began.elapsed() >= BATCH);
    assert_eq!(names(&first), ["a.service", "b.service", "c.service"]);
    let a = &first.states[0];
    assert_eq!(a.active_state, "active");
    assert!(a.main_pid.is_some());
    assert_eq!(a.hash.as_deref(), Some(feed[0].hash.as_str()));
    assert_eq!(first.states[2].active_state, "inactive");
    h.nothing_more().await;

    // Two units fail at once: one report with both, nothing else.
    h.systemd.crash("a.service");
    h.systemd.crash("b.service");
    let report = h.next().await;
    assert_eq!(names(&report), ["a.service", "b.service"]);
    assert_eq!(report.states[0].active_state, "failed");
    assert_eq!(
        report.states[0].last_error.as_deref(),
        Some("the unit failed: exit status 0")
    );
    h.nothing_more().await;

    // A unit leaves the machine: reported removed.
    h.reconcile(&feed[1..]).await;
    let report = h.next().await;
    assert_eq!(report.removed, ["a.service"]);
    h.nothing_more().await;
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_registration_sends_everything_and_failed_sends_are_retried() {
    let mut h = Harness::start(1).await;
    let feed = vec![
        unit("a.service", "a", DesiredState::Launched),
        unit("b.service", "b", DesiredState::Launched),
    ];
    h.reconcile(&feed).await;
    assert_eq!(h.next().await.states.len(), 2);

    // Registered again (say the lease expired): every unit again.
    h.registered.send_modify(|n| *n += 1);
    let report = h.next().await;
    assert_eq!(names(&report), ["a.service", "b.service"]);

    // The servers are down while a unit fails: sent once they are back.
    *h.failing.lock().unwrap() = true;
    h.systemd.crash("a.service");
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.systemd.crash("b.service");
    *h.failing.lock().unwrap() = false;
    let report = h.next().await;
    assert_eq!(names(&report), ["a.service", "b.service"]);
    assert!(report.states.iter().all(|s| s.active_state == "failed"));
    h.nothing_more().await;
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn nothing_is_sent_before_the_first_registration() {
    let mut h = Harness::start(0).await;
    h.reconcile(&[unit("a.service", "a", DesiredState::Launched)])
        .await;
    h.nothing_more().await;
    h.registered.send_replace(1);
    assert_eq!(names(&h.next().await), ["a.service"]);
    h.stop().await;
}
