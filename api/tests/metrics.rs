//! `GET /metrics` on a real server (embedded store, leader, reconcile loop)
//! over real HTTPS, after known actions by simulated agents (in-process
//! clients of the real agent endpoints, no systemd): the page parses with
//! Prometheus' own parser (`promtool`, from Debian's `prometheus` package,
//! which scripts/test installs), its values are what the actions imply,
//! only credentials allowed to read it can, and docs/metrics.md lists
//! exactly what it shows.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use flotilla_api::client::Client;
use flotilla_api::daemon::Daemon;
use flotilla_proto::trust::Role;
use flotilla_proto::wire::{StateReport, UnitPut};
use flotilla_proto::{DesiredState, MachineId, UnitName};
use flotilla_scheduler::placement::Strategy;
use support::{client_options, machine, machine_id, raw_request, token_create, unit_state};
use tokio::task::JoinHandle;

const TTL: Duration = Duration::from_secs(2);
const DEADLINE: Duration = Duration::from_secs(30);

/// A server on a temporary directory, stopped when the test ends.
struct Server {
    daemon: Option<Daemon>,
    ca_pem: Vec<u8>,
    admin: String,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let daemon = Daemon::start(support::daemon_config(
            dir.path().join("data"),
            TTL,
            Strategy::Spread,
        ))
        .await
        .unwrap();
        let ca_pem = daemon.trust().ca.cert_pem().as_bytes().to_vec();
        let admin = std::fs::read_to_string(daemon.admin_token_path().unwrap())
            .unwrap()
            .trim()
            .to_owned();
        Server {
            daemon: Some(daemon),
            ca_pem,
            admin,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        self.daemon.as_ref().unwrap().url()
    }

    fn client_with(&self, token: &str) -> Client {
        Client::with_options([self.url()], client_options(&self.ca_pem, Some(token))).unwrap()
    }

    async fn token(&self, role: Role) -> String {
        self.client_with(&self.admin)
            .create_token(&token_create(role))
            .await
            .unwrap()
            .token
    }

    /// `GET /metrics` with `token` (or none) and `accept` (or none): the
    /// status, the content type and the body.
    async fn scrape(&self, token: Option<&str>, accept: Option<&str>) -> (u16, String, String) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&self.ca_pem).unwrap()])
            .build()
            .unwrap();
        let mut request = http.get(format!("{}/metrics", self.url()));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        if let Some(a) = accept {
            request = request.header("accept", a);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let kind = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, kind, response.text().await.unwrap())
    }

    async fn stop(mut self) {
        if let Some(d) = self.daemon.take() {
            d.stop().await.unwrap();
        }
    }
}

/// A simulated agent: joins, registers its machine and heartbeats until it
/// is killed (or dropped).
struct Agent {
    id: MachineId,
    client: Client,
    heartbeat: JoinHandle<()>,
}

impl Agent {
    async fn join(server: &Server, n: u8) -> Agent {
        let join = server.token(Role::Join).await;
        let created = server
            .client_with(&join)
            .join(&machine_id(n))
            .await
            .unwrap();
        let client = server.client_with(&created.token);
        let reg = client.register_machine(&machine(n)).await.unwrap();
        let heartbeat = tokio::spawn({
            let client = client.clone();
            let id = machine_id(n);
            async move {
                loop {
                    tokio::time::sleep(TTL / 5).await;
                    let _ = client.heartbeat(&id, reg.lease).await;
                }
            }
        });
        Agent {
            id: machine_id(n),
            client,
            heartbeat,
        }
    }

    /// Reports `unit` in `active_state` on this machine.
    async fn report(&self, unit: &str, active_state: &str) {
        let mut state = unit_state(unit, &self.id);
        state.active_state = active_state.into();
        self.client
            .report_states(
                &self.id,
                &StateReport {
                    states: vec![state],
                    removed: Vec::new(),
                },
            )
            .await
            .unwrap();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

async fn put(client: &Client, name: &str, desired: DesiredState, fleet: &str) {
    let put = UnitPut {
        desired_state: Some(desired),
        text: Some(format!(
            "[Service]\nExecStart=/bin/sleep 1000\n[X-Fleet]\n{fleet}\n"
        )),
        ..UnitPut::default()
    };
    client
        .put_unit(&UnitName::parse(name).unwrap(), &put)
        .await
        .unwrap();
}

/// Runs Prometheus' OpenMetrics parser on an OpenMetrics page, through
/// `promtool tsdb create-blocks-from openmetrics`, which imports such a
/// page (it wants a timestamp on each sample, so one is added).
fn promtool_check_openmetrics(page: &str) {
    let dir = tempfile::tempdir().unwrap();
    let stamped: String = page
        .lines()
        .map(|l| {
            if l.starts_with('#') {
                format!("{l}\n")
            } else {
                format!("{l} 1700000000\n")
            }
        })
        .collect();
    let input = dir.path().join("page.txt");
    std::fs::write(&input, stamped).unwrap();
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&input)
        .arg(dir.path().join("blocks"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool refused the OpenMetrics page: {}{}\n{page}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The samples of a page in Prometheus' text format (which promtool
/// accepted): `name{labels}` as written, and the value.
fn samples(page: &str) -> BTreeMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

/// The families of a page: name and type, from its `# TYPE` lines.
fn families(page: &str) -> BTreeMap<String, String> {
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            (name.to_owned(), kind.to_owned())
        })
        .collect()
}

/// The metrics docs/metrics.md lists under `heading`: name and type.
fn documented(heading: &str) -> BTreeMap<String, String> {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md"),
    )
    .unwrap();
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with(heading))
        .unwrap_or_else(|| panic!("docs/metrics.md has no section {heading}"));
    section
        .lines()
        .filter(|l| l.starts_with("| `flotilla_"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`').to_owned(), cells[2].to_owned())
        })
        .collect()
}

/// Scrapes with `token` until `check` accepts the samples, or fails after
/// the deadline showing the last page.
async fn until(
    server: &Server,
    token: &str,
    what: &str,
    check: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> String {
    flotilla_testbed::poll::eventually_async_or(what, DEADLINE, || async {
        let (status, _, page) = server.scrape(Some(token), None).await;
        assert_eq!(status, 200, "{page}");
        if check(&samples(&page)) {
            Ok(page)
        } else {
            Err(format!("the last page:\n{page}"))
        }
    })
    .await
}

fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(f64::NAN)
}

fn units(desired: &str, current: &str) -> String {
    format!("flotilla_units{{desired=\"{desired}\",current=\"{current}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_cluster_did() {
    let server = Server::start().await;
    let admin = server.client_with(&server.admin);
    let metrics_token = server.token(Role::Metrics).await;

    // Who may read: a metrics token, and nobody without a credential; the
    // metrics token reads nothing else.
    let (status, _, _) = server.scrape(None, None).await;
    assert_eq!(status, 401);
    let (status, _, _) = server.scrape(Some(&metrics_token), None).await;
    assert_eq!(status, 200);
    let (status, _, _) = raw_request(
        &server.ca_pem,
        Some(&metrics_token),
        "GET",
        &format!("{}/v1/units", server.url()),
        None,
        "",
    )
    .await;
    assert_eq!(status, 403);

    // Two machines; five units: two launched anywhere, one launched on a
    // machine that does not exist (unschedulable), one loaded, one
    // inactive; and a template, which is not counted.
    let one = Agent::join(&server, 1).await;
    let two = Agent::join(&server, 2).await;
    put(&admin, "a.service", DesiredState::Launched, "").await;
    put(&admin, "b.service", DesiredState::Launched, "").await;
    put(
        &admin,
        "c.service",
        DesiredState::Launched,
        &format!("MachineID={}", machine_id(9)),
    )
    .await;
    put(&admin, "d.service", DesiredState::Loaded, "").await;
    put(&admin, "e.service", DesiredState::Inactive, "").await;
    put(&admin, "web@.service", DesiredState::Inactive, "").await;
    let placed = until(&server, &metrics_token, "three units placed", |s| {
        value(s, "flotilla_placements_total") == 3.0
            && value(s, "flotilla_units_unschedulable") == 1.0
    })
    .await;
    let placed = samples(&placed);
    assert_eq!(value(&placed, &units("launched", "inactive")), 1.0, "c");
    assert_eq!(value(&placed, &units("launched", "loaded")), 2.0, "a, b");
    assert_eq!(value(&placed, &units("loaded", "loaded")), 1.0, "d");
    assert_eq!(value(&placed, &units("inactive", "inactive")), 1.0, "e");

    // The agents report: a running where it is placed, b failed.
    let all = admin.all_units().await.unwrap();
    let on = |name: &str| {
        let machine = all
            .iter()
            .find(|u| u.name == name)
            .and_then(|u| u.machine_id.clone())
            .unwrap();
        if machine == one.id { &one } else { &two }
    };
    on("a.service").report("a.service", "active").await;
    on("b.service").report("b.service", "failed").await;
    until(&server, &metrics_token, "a.service counted running", |s| {
        value(s, &units("launched", "launched")) == 1.0
    })
    .await;

    // A long poll of machine 1's units, open until something changes for
    // it.
    let index = one
        .client
        .machine_units(&one.id, None, Duration::ZERO)
        .await
        .unwrap()
        .index;
    let poll = tokio::spawn({
        let client = one.client.clone();
        let id = one.id.clone();
        async move { client.machine_units(&id, Some(index), DEADLINE).await }
    });
    let long_polls = "flotilla_api_long_polls_open{route=\"/v1/agent/machines/{id}/units\"}";
    until(&server, &metrics_token, "the long poll counted", |s| {
        value(s, long_polls) == 1.0
    })
    .await;

    // The whole page, in both formats, through Prometheus' parsers.
    let page = until(
        &server,
        &metrics_token,
        "a heartbeat, and the watch caught up",
        |s| {
            value(s, "flotilla_heartbeat_duration_seconds_count") >= 1.0
                && value(s, "flotilla_watch_lag_revisions") == 0.0
        },
    )
    .await;
    flotilla_testbed::promtool::check_metrics(&page);
    let (status, kind, openmetrics) = server
        .scrape(
            Some(&metrics_token),
            Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        kind.starts_with("application/openmetrics-text; version=1.0.0"),
        "{kind}"
    );
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    promtool_check_openmetrics(&openmetrics);

    let s = samples(&page);
    assert_eq!(value(&s, "flotilla_leader"), 1.0);
    assert_eq!(value(&s, "flotilla_leader_changes_total"), 1.0);
    assert_eq!(value(&s, "flotilla_machines"), 2.0);
    assert_eq!(value(&s, &units("launched", "loaded")), 1.0, "b failed");
    assert_eq!(
        value(
            &s,
            "flotilla_api_requests_total{method=\"PUT\",route=\"/v1/units/{name}\",code=\"201\"}"
        ),
        6.0
    );
    assert_eq!(
        value(
            &s,
            "flotilla_api_requests_total{method=\"GET\",route=\"/metrics\",code=\"401\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "flotilla_api_requests_total{method=\"GET\",route=\"/v1/units\",code=\"403\"}"
        ),
        1.0
    );
    assert!(
        value(
            &s,
            "flotilla_store_request_duration_seconds_count{backend=\"embedded\",op=\"txn\"}"
        ) >= 10.0
    );
    assert_eq!(
        value(
            &s,
            &format!(
                "flotilla_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );

    // A unit for machine 1 ends its long poll.
    put(
        &admin,
        "f.service",
        DesiredState::Launched,
        &format!("MachineID={}", one.id),
    )
    .await;
    poll.await.unwrap().unwrap();
    until(
        &server,
        &metrics_token,
        "the long poll counted closed",
        |s| value(s, long_polls) == 0.0,
    )
    .await;

    // Machine 2 dies: it is counted lost, and its units move.
    two.heartbeat.abort();
    let page = until(&server, &metrics_token, "machine 2 counted lost", |s| {
        value(s, "flotilla_machines_lost_total") == 1.0 && value(s, "flotilla_machines") == 1.0
    })
    .await;
    let s = samples(&page);
    assert!(
        value(&s, "flotilla_unassignments_total{reason=\"machine_gone\"}") >= 1.0,
        "{page}"
    );

    // docs/metrics.md lists exactly what a leading server shows.
    assert_eq!(
        families(&page),
        documented("Servers"),
        "docs/metrics.md's table of the servers' metrics differs from the page"
    );
    drop(one);
    drop(two);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_may_read_the_metrics() {
    let server = Server::start().await;
    let viewer = server.token(Role::Viewer).await;
    let (status, kind, page) = server.scrape(Some(&viewer), None).await;
    assert_eq!(status, 200);
    assert_eq!(kind, "text/plain; version=0.0.4; charset=utf-8");
    flotilla_testbed::promtool::check_metrics(&page);
    server.stop().await;
}

/// The repository's `deploy/` directory.
fn deploy() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn promtool(args: &[&str], dir: &std::path::Path) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): install Debian's prometheus package (scripts/test does)"
            )
        });
    assert!(
        out.status.success(),
        "promtool {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The metric names an expression or file refers to, as documented (a
/// histogram's `_bucket`, `_sum` and `_count` series are its own).
fn referred(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("flotilla_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let name = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.insert(name.to_owned());
        rest = &tail[end..];
    }
    out
}

#[test]
fn the_example_alerts_check_and_fire_as_their_tests_say() {
    let dir = deploy().join("prometheus");
    promtool(&["check", "rules", "alerts.yml"], &dir);
    promtool(&["test", "rules", "alerts_test.yml"], &dir);
}

#[test]
fn the_dashboard_and_the_alerts_use_documented_metrics() {
    let mut known: std::collections::BTreeSet<String> = documented("Servers").into_keys().collect();
    known.extend(documented("Agents").into_keys());
    let alerts = std::fs::read_to_string(deploy().join("prometheus/alerts.yml")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy().join("grafana/flotilla.json")).unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(exprs.len() >= 15, "{exprs:?}");
    let mut used = referred(&alerts);
    for e in &exprs {
        used.extend(referred(e));
    }
    let unknown: Vec<&String> = used.difference(&known).collect();
    assert!(unknown.is_empty(), "not in docs/metrics.md: {unknown:?}");
    // Every panel's query is PromQL that Prometheus parses: checked as
    // recording rules.
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:panel{i}\n        expr: {}\n",
            serde_json::to_string(e).unwrap()
        ));
    }
    std::fs::write(dir.path().join("dashboard.yml"), rules).unwrap();
    promtool(&["check", "rules", "dashboard.yml"], dir.path());
}
