//! The agent reports a unit's state from the `PropertiesChanged` signals
//! that told of its change, without reading the unit again: on a test host
//! (its own systemd as PID 1, see `flotilla_testbed::Host`), what the
//! signals said of units that start, send a status, fail and stop is what
//! a full read of each unit (`LoadUnit` and `GetAll`) says, field by field;
//! a unit systemd frees is forgotten and read again. What a reconcile pass
//! reads of where a unit comes from (`unit_source`: two properties) is
//! what a full read says.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::path::PathBuf;
use std::time::Duration;

use flotilla_agent::systemd::{DbusSystemd, JobKind, SystemdManager, UnitProperties, UnitSource};
use flotilla_testbed::poll::eventually_async_or;
use flotilla_testbed::{Host, HostOptions};

const DEADLINE: Duration = Duration::from_secs(30);

/// Units started on the host, and the active state each settles in.
const UNITS: [(&str, &str, &str); 3] = [
    (
        "sig-plain.service",
        "[Service]\nExecStart=/bin/sleep infinity\n",
        "active",
    ),
    (
        "sig-status.service",
        "[Service]\nType=notify\nNotifyAccess=all\n\
         ExecStart=/bin/sh -c 'systemd-notify --ready --status=\"flotilla: container=abc health=healthy\"; exec sleep infinity'\n",
        "active",
    ),
    (
        "sig-fails.service",
        "[Service]\nExecStart=/bin/sh -c 'exit 3'\n",
        "failed",
    ),
];

/// A test host named `name`, its root seen from here, and its systemd
/// over its bus socket. The host stops when dropped.
async fn boot(name: &str) -> (Host, PathBuf, DbusSystemd) {
    let host = Host::boot(name, &HostOptions::default()).unwrap();
    let root = PathBuf::from(format!("/proc/{}/root", host.leader_pid()));
    let systemd = DbusSystemd::connect_socket(&root.join("run/dbus/system_bus_socket"))
        .await
        .unwrap();
    (host, root, systemd)
}

/// The fields a state report uses.
fn status_fields(p: &UnitProperties) -> String {
    format!(
        "load={} active={} sub={} since={} pid={} restarts={} status={:?} result={} exit={}",
        p.load_state,
        p.active_state,
        p.sub_state,
        p.state_change_usec,
        p.main_pid,
        p.n_restarts,
        p.status_text,
        p.result,
        p.exec_main_status
    )
}

/// Waits until the signals told all of `name`'s state, it is `active`, and
/// a full read agrees with them.
async fn signalled_as_read(systemd: &DbusSystemd, name: &str, active: &str) -> UnitProperties {
    let what = format!("the signals of {name} to say {active} as a read does");
    eventually_async_or(&what, DEADLINE, async || {
        let read = systemd.unit(name).await.map_err(|e| e.to_string())?;
        match systemd.signalled(name, &read.load_state) {
            Some(s) if s.active_state == active && status_fields(&s) == status_fields(&read) => {
                Ok(s)
            }
            s => Err(format!(
                "signalled: {}\nread:      {}",
                s.as_ref().map_or("nothing".to_owned(), status_fields),
                status_fields(&read)
            )),
        }
    })
    .await
}

#[tokio::test(flavor = "current_thread")]
async fn unit_states_from_signals_match_what_systemd_reads() {
    let (_host, root, systemd) = boot("signals").await;
    for (name, text, _) in UNITS {
        std::fs::write(root.join("run/systemd/system").join(name), text).unwrap();
    }
    // Before any change, nothing was signalled: a status is read.
    assert!(systemd.signalled("sig-plain.service", "loaded").is_none());
    for (name, _, _) in UNITS {
        // The job of the failing unit fails; its state is what counts.
        systemd.job(JobKind::Start, name).await.unwrap();
    }
    for (name, _, active) in UNITS {
        let s = signalled_as_read(&systemd, name, active).await;
        let mut statuses = systemd.unit_statuses(vec![name.to_owned()], 1).await;
        assert_eq!(statuses.remove(name).unwrap().unwrap(), s);
    }
    let status = systemd.signalled("sig-status.service", "loaded").unwrap();
    assert_eq!(status.status_text, "flotilla: container=abc health=healthy");
    assert_ne!(status.main_pid, 0);
    let failed = systemd.signalled("sig-fails.service", "loaded").unwrap();
    assert_eq!(
        (failed.result.as_str(), failed.exec_main_status),
        ("exit-code", 3)
    );

    // Stopped, the unit is freed at once (nothing refers to it) and
    // forgotten: its status is read again, and agrees with systemd.
    systemd
        .job(JobKind::Stop, "sig-plain.service")
        .await
        .unwrap();
    eventually_async_or("the freed unit forgotten", DEADLINE, async || match systemd
        .signalled("sig-plain.service", "loaded")
    {
        None => Ok(()),
        Some(s) => Err(status_fields(&s)),
    })
    .await;
    let mut statuses = systemd
        .unit_statuses(vec!["sig-plain.service".to_owned()], 1)
        .await;
    let stopped = statuses.remove("sig-plain.service").unwrap().unwrap();
    assert_eq!(
        status_fields(&stopped),
        status_fields(&systemd.unit("sig-plain.service").await.unwrap())
    );
    assert_eq!(
        (stopped.active_state.as_str(), stopped.main_pid),
        ("inactive", 0)
    );

    // Its file removed and systemd reloaded: not found.
    std::fs::remove_file(root.join("run/systemd/system/sig-plain.service")).unwrap();
    systemd.reload().await.unwrap();
    let mut statuses = systemd
        .unit_statuses(vec!["sig-plain.service".to_owned()], 1)
        .await;
    let gone = statuses.remove("sig-plain.service").unwrap().unwrap();
    assert_eq!(gone.load_state, "not-found");
}

/// `unit_source` of `name`, and the same fields of a full read.
async fn source_and_read(systemd: &DbusSystemd, name: &str) -> (UnitSource, UnitSource) {
    let source = systemd.unit_source(name).await.unwrap();
    let read = systemd.unit(name).await.unwrap();
    let from_read = UnitSource {
        fragment_path: read.fragment_path,
        need_daemon_reload: read.need_daemon_reload,
    };
    (source, from_read)
}

#[tokio::test(flavor = "current_thread")]
async fn a_units_source_is_what_a_full_read_says() {
    let (_host, root, systemd) = boot("unit-source").await;
    let run = root.join("run/systemd/system");
    let name = "src-plain.service";
    std::fs::write(run.join(name), "[Service]\nExecStart=/bin/sleep infinity\n").unwrap();
    systemd.job(JobKind::Start, name).await.unwrap();

    // Loaded from its file and running.
    let (source, read) = source_and_read(&systemd, name).await;
    assert_eq!(source, read);
    assert_eq!(
        source,
        UnitSource {
            fragment_path: format!("/run/systemd/system/{name}"),
            need_daemon_reload: false,
        }
    );

    // Its file changed since systemd read it.
    std::fs::write(run.join(name), "[Service]\nExecStart=/bin/sleep 1000\n").unwrap();
    let (source, read) = source_and_read(&systemd, name).await;
    assert_eq!(source, read);
    assert!(source.need_daemon_reload, "{source:?}");

    // Defined in /etc too: systemd takes that one.
    std::fs::write(
        root.join("etc/systemd/system").join(name),
        "[Service]\nExecStart=/bin/sleep infinity\n",
    )
    .unwrap();
    systemd.reload().await.unwrap();
    let (source, read) = source_and_read(&systemd, name).await;
    assert_eq!(source, read);
    assert_eq!(
        source,
        UnitSource {
            fragment_path: format!("/etc/systemd/system/{name}"),
            need_daemon_reload: false,
        }
    );

    // No file anywhere: not found, from nowhere.
    let (source, read) = source_and_read(&systemd, "src-nowhere.service").await;
    assert_eq!(source, read);
    assert_eq!(source, UnitSource::default());
}
