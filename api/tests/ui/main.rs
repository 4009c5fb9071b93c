#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test
//! The web console in a real browser: a whole server over HTTPS with units
//! on simulated machines (registered and reporting states through the
//! agent routes, as agents do), and headless Chromium driven through
//! WebDriver. Screenshots of the main pages go to `FLOTILLA_UI_SCREENSHOTS`
//! (default `target/ui-screenshots`); docs/ui/ holds copies.

#[path = "../support/mod.rs"]
mod support;
mod webdriver;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flotilla_api::client::Client;
use flotilla_api::daemon::Daemon;
use flotilla_proto::inspect::{JournalEntry, ReplyLine, RequestKind, UnitStatus};
use flotilla_proto::trust::Role;
use flotilla_proto::wire::{StateReport, UnitPut};
use flotilla_proto::{DesiredState, MachineId, UnitName};
use flotilla_scheduler::placement::Strategy;
use flotilla_store::MemoryStore;

use support::{client_options, eventually, machine, machine_id, tester, token_create, unit_state};
use webdriver::Browser;

/// How long any awaited condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A whole server on an in-memory store.
struct Server {
    url: String,
    ca_pem: Vec<u8>,
    admin: String,
    daemon: Option<Daemon>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        // Machines outlive the test without heartbeats.
        let config = support::daemon_config(
            dir.path().join("data"),
            Duration::from_secs(600),
            Strategy::default(),
        );
        let daemon = Daemon::start_in_memory(config, Arc::new(MemoryStore::new()))
            .await
            .unwrap();
        let admin = std::fs::read_to_string(daemon.admin_token_path().unwrap()).unwrap();
        Server {
            url: daemon.url(),
            ca_pem: daemon.trust().ca.cert_pem().as_bytes().to_vec(),
            admin: admin.trim().to_owned(),
            daemon: Some(daemon),
            _dir: dir,
        }
    }

    fn client(&self, token: &str) -> Client {
        Client::with_options([&self.url], client_options(&self.ca_pem, Some(token))).unwrap()
    }

    async fn token(&self, role: Role) -> String {
        let trust = self.daemon.as_ref().unwrap().trust();
        let (_, token) = trust
            .credentials
            .create_token(&token_create(role), &tester())
            .await
            .unwrap();
        token.expose()
    }

    /// Machine `n`'s agent, joined and registered.
    async fn agent(&self, n: u8) -> Client {
        let join = self.token(Role::Join).await;
        let created = self.client(&join).join(&machine_id(n)).await.unwrap();
        let agent = self.client(&created.token);
        agent.register_machine(&machine(n)).await.unwrap();
        agent
    }
}

fn put(desired: DesiredState, text: &str) -> UnitPut {
    UnitPut {
        desired_state: Some(desired),
        text: Some(text.to_owned()),
        ..UnitPut::default()
    }
}

fn name(s: &str) -> UnitName {
    UnitName::parse(s).unwrap()
}

/// Where screenshots go.
fn screenshots() -> PathBuf {
    let dir = std::env::var_os("FLOTILLA_UI_SCREENSHOTS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ui-screenshots"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn save(browser: &Browser, file: &str) {
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "{file}: not a PNG");
    std::fs::write(screenshots().join(file), png).unwrap();
}

/// Reports `unit` on `machine` with systemd's `active` state.
async fn report(agent: &Client, unit: &str, machine: &MachineId, active: &str, sub: &str) {
    let mut state = unit_state(unit, machine);
    state.active_state = active.into();
    state.sub_state = sub.into();
    agent
        .report_states(
            machine,
            &StateReport {
                states: vec![state],
                removed: vec![],
            },
        )
        .await
        .unwrap();
}

const SERVICE: &str = "[Unit]\nDescription=web\n\n[Service]\nExecStart=/bin/sleep infinity\nMemoryMax=1G\nCPUQuota=50%\n";

/// A cluster of two machines with units running, one stopped and one that
/// fits nowhere; answers the agents.
async fn cluster(server: &Server) -> Vec<(MachineId, Client)> {
    let agents = vec![
        (machine_id(1), server.agent(1).await),
        (machine_id(2), server.agent(2).await),
    ];
    let admin = server.client(&server.admin);
    for unit in ["web.service", "api.service", "db.service"] {
        admin
            .put_unit(&name(unit), &put(DesiredState::Launched, SERVICE))
            .await
            .unwrap();
    }
    admin
        .put_unit(&name("batch.service"), &put(DesiredState::Loaded, SERVICE))
        .await
        .unwrap();
    admin
        .put_unit(
            &name("huge.service"),
            &put(
                DesiredState::Launched,
                "[Service]\nExecStart=/bin/sleep infinity\nMemoryMax=100G\n",
            ),
        )
        .await
        .unwrap();
    // Each launched unit's machine reports it running, as its agent would.
    for unit in ["web.service", "api.service", "db.service"] {
        let placed = eventually(&format!("{unit} placed"), DEADLINE, || async {
            admin.get_unit(&name(unit)).await.unwrap().machine_id
        })
        .await;
        let (_, agent) = agents.iter().find(|(id, _)| *id == placed).unwrap();
        report(agent, unit, &placed, "active", "running").await;
    }
    eventually("the units launched", DEADLINE, || async {
        let u = admin.get_unit(&name("web.service")).await.unwrap();
        (u.current_state == Some(DesiredState::Launched)).then_some(())
    })
    .await;
    agents
}

/// Answers the status requests the server hands machine `id`'s agent, as
/// an agent reads systemd and the journal; until aborted.
fn answer_status(agent: Client, id: MachineId) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok(asked) = agent.agent_requests(&id, Duration::from_secs(5)).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            for request in asked.requests {
                // The server asks for no lines on a viewer's behalf.
                let lines = match request.kind {
                    RequestKind::Status { lines } => lines as usize,
                    RequestKind::Journal { .. } => 0,
                };
                let status = UnitStatus {
                    unit: request.unit.to_string(),
                    machine: Some(id.clone()),
                    hostname: machine(id.as_str()[..2].parse().unwrap_or(1)).hostname,
                    active_state: "active".into(),
                    sub_state: "running".into(),
                    main_pid: Some(4242),
                    memory_bytes: Some(64 << 20),
                    log: vec![JournalEntry {
                        at_us: 1_700_000_000_000_000,
                        identifier: "sleep".into(),
                        pid: Some(4242),
                        priority: Some(6),
                        message: format!("{} listening on :8080", request.unit),
                        truncated: false,
                    }]
                    .into_iter()
                    .take(lines)
                    .collect(),
                    ..UnitStatus::default()
                };
                let mut body = serde_json::to_vec(&ReplyLine::Status(Box::new(status))).unwrap();
                body.push(b'\n');
                body.extend(
                    serde_json::to_vec(&ReplyLine::End {
                        reason: "done".into(),
                    })
                    .unwrap(),
                );
                body.push(b'\n');
                let chunks = futures_util::stream::iter([Ok::<_, std::io::Error>(body)]);
                let _ = agent.agent_reply(&id, &request.id, chunks).await;
            }
        }
    })
}

async fn sign_in(browser: &Browser, token: &str) {
    let field = browser.find("#token").await;
    browser.type_text(&field, token).await;
    assert_eq!(
        browser.text(&field).await,
        "",
        "a password field shows nothing"
    );
    browser.click_on("#sign-in-form button[type=submit]").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_browser() {
    let server = Server::start().await;
    let agents = cluster(&server).await;
    let answering: Vec<_> = agents
        .iter()
        .map(|(id, agent)| answer_status(agent.clone(), id.clone()))
        .collect();
    let browser = Browser::start().await;
    let ui = format!("{}/ui/", server.url);

    // A wrong token is refused, with the server's reason.
    browser.goto(&ui).await;
    sign_in(&browser, "flt1.0123456789abcdef.wrong").await;
    let refused = browser.wait_text("#sign-in-error", "Sign-in refused").await;
    assert!(refused.len() > "Sign-in refused: ".len(), "{refused}");
    assert!(browser.all("#nav:not([hidden])").await.is_empty());
    save(&browser, "sign-in.png").await;

    // The admin signs in and sees the overview.
    sign_in(&browser, &server.admin).await;
    browser.wait_text("h1", "Cluster overview").await;
    browser.wait_text("#who-role", "admin").await;
    // The session cookie is out of scripts' reach (HttpOnly).
    let cookies = browser.eval("return document.cookie;").await;
    assert!(!cookies.to_string().contains("flotilla"), "{cookies}");
    browser.wait_text("main", "host1").await;
    browser.wait_text("main", "huge.service").await;
    browser.wait_text("#live", "Live").await;
    save(&browser, "overview.png").await;

    // The units, with their states.
    browser.goto(&format!("{ui}#/units")).await;
    let row = browser.wait_text("tbody tr", "web.service").await;
    assert!(row.contains("launched"), "{row}");
    assert!(row.contains("active"), "{row}");
    let stopped = browser.wait_text("tbody tr", "batch.service").await;
    assert!(stopped.contains("loaded"), "{stopped}");
    // Every field has its label.
    let unlabelled = browser
        .eval("return [...document.querySelectorAll('input, select')].filter((e) => e.labels.length === 0).map((e) => e.id);")
        .await;
    assert_eq!(unlabelled, serde_json::json!([]));
    // Filtered as one types.
    let filter = browser.find("#unit-filter").await;
    browser.type_text(&filter, "ap").await;
    browser.wait_text("#view", "1 of 5 units").await;
    let rows = browser.all("tbody tr").await;
    assert_eq!(rows.len(), 1);
    browser.wait_text("tbody tr", "api.service").await;
    browser.type_text(&filter, "service").await;
    browser.wait_text("#view", "5 of 5 units").await;
    save(&browser, "units.png").await;

    // Following a unit to its page.
    browser.click_on("a[href='#/units/web.service']").await;
    browser.wait_text("h1", "web.service").await;
    browser.wait_text("#current-state", "launched").await;
    browser
        .wait_text("main", "ExecStart=/bin/sleep infinity")
        .await;
    browser.wait_text("main", "unit-placed").await;
    assert_eq!(browser.all("[data-action]").await.len(), 4);
    // Its status and journal lines, from its host's agent.
    browser
        .wait_text("main", "web.service listening on :8080")
        .await;
    // A mark that a reload would wipe.
    browser.eval("window.notReloaded = true;").await;
    browser.set_size(1280, 1750).await;
    save(&browser, "unit.png").await;
    browser.set_size(1280, 900).await;

    // Stop, confirmed: the page follows the change without a reload.
    browser.click_on("[data-action=stop]").await;
    browser
        .wait_text("#confirm-title", "Stop web.service?")
        .await;
    browser.click_on("#confirm-ok").await;
    browser.wait_text("#desired-state", "loaded").await;
    let admin = server.client(&server.admin);
    let unit = admin.get_unit(&name("web.service")).await.unwrap();
    assert_eq!(unit.desired_state, DesiredState::Loaded);
    // Its machine stops it and says so.
    let machine = unit.machine_id.unwrap();
    let (_, agent) = agents.iter().find(|(id, _)| *id == machine).unwrap();
    report(agent, "web.service", &machine, "inactive", "dead").await;
    browser.wait_text("#current-state", "loaded").await;
    browser.wait_text("table", "inactive").await;
    assert_eq!(
        browser.eval("return window.notReloaded === true;").await,
        true
    );

    // Restart: stopped, then started again once its machine reports it
    // stopped.
    browser.goto(&format!("{ui}#/units/db.service")).await;
    browser.wait_text("h1", "db.service").await;
    browser.click_on("[data-action=restart]").await;
    browser.click_on("#confirm-ok").await;
    browser.wait_text("#desired-state", "loaded").await;
    let db = admin.get_unit(&name("db.service")).await.unwrap();
    let machine = db.machine_id.unwrap();
    let (_, agent) = agents.iter().find(|(id, _)| *id == machine).unwrap();
    report(agent, "db.service", &machine, "inactive", "dead").await;
    browser.wait_text("#desired-state", "launched").await;
    report(agent, "db.service", &machine, "active", "running").await;
    browser.wait_text("#current-state", "launched").await;

    // Destroy: cancelled, nothing happens; confirmed, the unit is gone.
    browser.goto(&format!("{ui}#/units/batch.service")).await;
    browser.wait_text("h1", "batch.service").await;
    browser.click_on("[data-action=destroy]").await;
    browser.wait_text("#confirm-text", "cannot be undone").await;
    browser.click_on("#confirm-cancel").await;
    admin.get_unit(&name("batch.service")).await.unwrap();
    browser.click_on("[data-action=destroy]").await;
    browser.click_on("#confirm-ok").await;
    browser.wait_text("h1", "Units").await;
    let gone = admin.get_unit(&name("batch.service")).await.unwrap_err();
    assert!(gone.is_not_found(), "{gone}");

    // Machines.
    browser.goto(&format!("{ui}#/machines")).await;
    browser.wait_text("tbody", "host2").await;
    save(&browser, "machines.png").await;
    browser
        .click_on("a[href='#/machines/02020202020202020202020202020202']")
        .await;
    browser.wait_text("h1", "host2").await;
    browser.wait_text("main", "live: its lease is held").await;
    browser.wait_text("main", "role=web").await;
    browser.wait_text("tbody", "api.service").await;
    save(&browser, "machine.png").await;

    // Events, followed live.
    browser.goto(&format!("{ui}#/events")).await;
    browser.wait_text("tbody", "unit-placed").await;
    browser.eval("window.notReloaded = true;").await;
    admin
        .put_unit(&name("late.service"), &put(DesiredState::Inactive, SERVICE))
        .await
        .unwrap();
    browser.wait_text("tbody", "late.service").await;
    assert_eq!(
        browser.eval("return window.notReloaded === true;").await,
        true
    );
    save(&browser, "events.png").await;

    // On a phone's screen.
    browser.set_size(390, 844).await;
    browser.goto(&format!("{ui}#/")).await;
    browser.wait_text("h1", "Cluster overview").await;
    save(&browser, "overview-phone.png").await;
    browser.set_size(1280, 900).await;

    // Signing out.
    browser.click_on("#sign-out").await;
    browser.wait_text("#sign-in-error", "Signed out").await;

    // A viewer reads, and is offered no action.
    // With the keyboard alone: the token, then Enter.
    let viewer = server.token(Role::Viewer).await;
    let field = browser.find("#token").await;
    browser
        .type_text(&field, &format!("{viewer}\u{e007}"))
        .await;
    browser.wait_text("#who-role", "viewer").await;
    browser.goto(&format!("{ui}#/units/db.service")).await;
    browser.wait_text("h1", "db.service").await;
    browser.wait_text("#current-state", "launched").await;
    assert!(browser.all("[data-action]").await.is_empty());
    assert!(browser.all("#view button").await.is_empty());
    // Its status, without the journal: logs can hold secrets.
    browser
        .wait_text("main", "Journal lines are for operators")
        .await;
    assert!(
        browser.all("#view pre").await.len() == 1,
        "the unit file only"
    );
    for task in answering {
        task.abort();
    }

    drop(browser);
    let mut server = server;
    server.daemon.take().unwrap().stop().await.unwrap();
}
