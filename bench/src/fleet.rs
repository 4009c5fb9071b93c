//! CoreOS fleet 1.0 in test hosts (B8), deployed as fleet's guide
//! (`Documentation/deployment-and-configuration.md`) and fleet's own
//! functional tests deployed it: `fleetd` with a config file, started as
//! `fleet.service`, its API served on a TCP socket that systemd passes it
//! (`fleet.socket`: fleetd serves its API only on sockets it is given),
//! and every fleetd on one etcd with the v2 API. The binaries are built
//! from fleet's source kept beside the project
//! ([`flotilla_testbed::fleet::binaries`]).
//!
//! fleet's API is plain HTTP with no credentials, as fleetd serves it;
//! [`FleetApi`] reads it the way `fleetctl` does, page by page.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use flotilla_testbed::{Host, HostOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where fleetd is in a host.
pub const FLEETD_IN_HOST: &str = "/opt/fleet/bin/fleetd";
/// fleetd's unit in a host.
pub const SERVICE_UNIT: &str = "fleet.service";
const SOCKET_UNIT: &str = "fleet.socket";
/// fleetd's config file in a host (fleet's default path).
const CONFIG_FILE: &str = "/etc/fleet/fleet.conf";
/// fleet's keys in etcd (fleetd's default `etcd_key_prefix`).
const KEY_PREFIX: &str = "/_coreos.com/fleet";
/// How long one HTTP call to fleetd or etcd may take.
const CALL_LIMIT: Duration = Duration::from_secs(20);

/// Boots a test host named `name` with `fleetd` at [`FLEETD_IN_HOST`],
/// and notes its PID 1 for `scripts/bench`'s cleanup.
pub fn boot(name: &str, fleetd: &Path) -> anyhow::Result<Host> {
    let host = Host::boot(
        name,
        &HostOptions {
            binds_ro: vec![(fleetd.to_owned(), PathBuf::from(FLEETD_IN_HOST))],
            ..HostOptions::default()
        },
    )?;
    crate::procs::record_pid(host.leader_pid());
    Ok(host)
}

/// fleetd's config: the etcd to use, the agent TTL, and the address it
/// publishes (everything here is on loopback). Every other option keeps
/// fleet's default (`engine_reconcile_interval` 2 s, `token_limit` 100,
/// `etcd_request_timeout` 1 s).
fn config_text(etcd: &str, agent_ttl: Duration) -> String {
    format!(
        "etcd_servers=[\"{etcd}\"]\nagent_ttl={}s\npublic_ip=127.0.0.1\n",
        agent_ttl.as_secs()
    )
}

/// fleet's API socket on `127.0.0.1:port`, passed to `fleet.service`.
fn socket_text(port: u16) -> String {
    format!("[Socket]\nListenStream=127.0.0.1:{port}\nService={SERVICE_UNIT}\n")
}

fn service_text() -> String {
    format!(
        "[Unit]\nDescription=fleet daemon\n\n[Service]\nExecStart={FLEETD_IN_HOST} -config {CONFIG_FILE}\n"
    )
}

/// Starts fleetd in `host` on `etcd` with `agent_ttl`, its API on
/// `127.0.0.1:api_port`: writes its config and its two units (into the
/// host's `/run/systemd/system`), then starts them.
pub fn start_fleetd(
    host: &Host,
    etcd: &str,
    agent_ttl: Duration,
    api_port: u16,
) -> anyhow::Result<()> {
    let root = PathBuf::from(format!("/proc/{}/root", host.leader_pid()));
    let write = |path: &str, text: &str| -> anyhow::Result<()> {
        let path = root.join(path.trim_start_matches('/'));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    write(CONFIG_FILE, &config_text(etcd, agent_ttl))?;
    write(
        &format!("/run/systemd/system/{SOCKET_UNIT}"),
        &socket_text(api_port),
    )?;
    write(
        &format!("/run/systemd/system/{SERVICE_UNIT}"),
        &service_text(),
    )?;
    host.run(&["systemctl", "daemon-reload"])?;
    host.run(&["systemctl", "start", SOCKET_UNIT, SERVICE_UNIT])
        .with_context(|| {
            format!(
                "fleetd did not start:\n{}",
                crate::agent_host::unit_journal_tail(host, SERVICE_UNIT)
            )
        })?;
    Ok(())
}

/// `fleetctl` as a user runs it against fleetd's API at `endpoint`
/// (fleetctl's default driver, `API`); the request timeout is raised from
/// 3 s so that a busy machine does not fail a call.
pub fn fleetctl(bin: &Path, endpoint: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(bin);
    cmd.arg(format!("--endpoint={endpoint}"))
        .arg("--request-timeout=20")
        .env_remove("FLEETCTL_ENDPOINT")
        .env_remove("FLEETCTL_DRIVER")
        .env_remove("FLEETCTL_TUNNEL");
    cmd
}

/// A unit's state as fleet's API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetState {
    pub unit: String,
    pub machine: String,
    pub active: String,
}

/// fleet's HTTP API (`/fleet/v1/`) served by one fleetd.
#[derive(Debug, Clone)]
pub struct FleetApi {
    port: u16,
}

impl FleetApi {
    pub fn new(port: u16) -> FleetApi {
        FleetApi { port }
    }

    /// `http://127.0.0.1:PORT`, for fleetctl's `--endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every unit state, page after page (`GET /fleet/v1/state`), as
    /// `fleetctl list-units` reads them.
    pub async fn states(&self) -> anyhow::Result<Vec<FleetState>> {
        let mut out = Vec::new();
        for page in self.pages("state", "states").await? {
            out.push(FleetState {
                unit: text_field(&page, "name")?,
                machine: text_field(&page, "machineID")?,
                active: text_field(&page, "systemdActiveState")?,
            });
        }
        Ok(out)
    }

    /// The ids of the machines fleet sees alive (`GET /fleet/v1/machines`).
    pub async fn machines(&self) -> anyhow::Result<Vec<String>> {
        self.pages("machines", "machines")
            .await?
            .iter()
            .map(|m| text_field(m, "id"))
            .collect()
    }

    /// The items of every page of a listing.
    async fn pages(&self, resource: &str, items: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        // fleet pages by 100: a bound well above what a run lists.
        for _ in 0..10_000 {
            let path = match &token {
                None => format!("/fleet/v1/{resource}"),
                Some(t) => format!("/fleet/v1/{resource}?nextPageToken={}", query_escape(t)),
            };
            let page = get_json(self.port, &path).await?;
            if let Some(list) = page.get(items).and_then(|v| v.as_array()) {
                out.extend(list.iter().cloned());
            }
            match page.get("nextPageToken").and_then(|v| v.as_str()) {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => return Ok(out),
            }
        }
        bail!("fleet's {resource} listing did not end after 10,000 pages")
    }
}

/// The machine id of the fleetd that leads fleet's engine (the lease
/// `engine-leader` in etcd), if one does.
pub async fn engine_leader(etcd_port: u16) -> anyhow::Result<Option<String>> {
    let path = format!("/v2/keys{KEY_PREFIX}/lease/engine-leader");
    let answer = get_json(etcd_port, &path).await?;
    let Some(value) = answer.pointer("/node/value").and_then(|v| v.as_str()) else {
        return Ok(None);
    };
    let lease: serde_json::Value =
        serde_json::from_str(value).context("fleet's engine lease is not JSON")?;
    Ok(lease
        .get("MachineID")
        .and_then(|v| v.as_str())
        .map(str::to_owned))
}

/// The port of an `http://127.0.0.1:PORT` endpoint.
pub fn port_of(endpoint: &str) -> anyhow::Result<u16> {
    endpoint
        .rsplit_once(':')
        .and_then(|(_, p)| p.trim_end_matches('/').parse().ok())
        .with_context(|| format!("no port in {endpoint}"))
}

fn text_field(v: &serde_json::Value, name: &str) -> anyhow::Result<String> {
    v.get(name)
        .and_then(|f| f.as_str())
        .map(str::to_owned)
        .with_context(|| format!("fleet's answer has no {name}: {v}"))
}

/// Escapes a page token for a query string (fleet's are base64 with `=`).
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET path` from `127.0.0.1:port` over HTTP/1.0 (one connection per
/// call, as fleetctl's client does against a socket it just opened); the
/// body as JSON, or an error naming the status.
async fn get_json(port: u16, path: &str) -> anyhow::Result<serde_json::Value> {
    let call = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("cannot connect to 127.0.0.1:{port}"))?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        anyhow::Ok(answer)
    };
    let answer = tokio::time::timeout(CALL_LIMIT, call)
        .await
        .with_context(|| format!("GET {path} on 127.0.0.1:{port} took over {CALL_LIMIT:?}"))??;
    let (status, body) = split_response(&answer)
        .with_context(|| format!("GET {path} on 127.0.0.1:{port}: not an HTTP answer"))?;
    if status != 200 {
        bail!(
            "GET {path} on 127.0.0.1:{port}: status {status}: {}",
            String::from_utf8_lossy(body).trim()
        );
    }
    serde_json::from_slice(body).with_context(|| format!("GET {path}: the body is not JSON"))
}

/// An HTTP/1.x answer's status and body.
fn split_response(answer: &[u8]) -> Option<(u16, &[u8])> {
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&answer[..end]).ok()?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, &answer[end + 4..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleetd_is_configured_as_fleet_documents_it() {
        let conf = config_text("http://127.0.0.1:2379", Duration::from_secs(5));
        assert_eq!(
            conf,
            "etcd_servers=[\"http://127.0.0.1:2379\"]\nagent_ttl=5s\npublic_ip=127.0.0.1\n"
        );
        assert!(socket_text(4002).contains("ListenStream=127.0.0.1:4002\n"));
        assert!(socket_text(4002).contains("Service=fleet.service\n"));
        assert!(
            service_text()
                .contains("ExecStart=/opt/fleet/bin/fleetd -config /etc/fleet/fleet.conf\n")
        );
    }

    #[test]
    fn answers_are_split_and_tokens_escaped() {
        let answer = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"states\":[]}";
        let (status, body) = split_response(answer).unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, b"{\"states\":[]}");
        assert!(split_response(b"garbage").is_none());
        assert_eq!(query_escape("ab-_=="), "ab-_%3D%3D");
        assert_eq!(port_of("http://127.0.0.1:4001").unwrap(), 4001);
        assert!(port_of("http://127.0.0.1").is_err());
    }
}
