//! Reading a CoreOS fleet cluster's registry from its etcd, through etcd's
//! v2 HTTP API, as fleet 1.0 lays it out (`registry/job.go` and
//! `registry/unit.go` in fleet's source):
//!
//! - `<prefix>job/<name>/object`: JSON `{"Name": "<name>", "UnitHash":
//!   [20 numbers]}`, the SHA-1 of the unit file fleet stored;
//! - `<prefix>job/<name>/target-state`: `inactive`, `loaded` or
//!   `launched`, the unit's desired state;
//! - `<prefix>unit/<sha1 hex>`: JSON `{"Raw": "<unit file text>"}`, kept for
//!   every version ever submitted (fleet never removes them).
//!
//! A job directory also holds `target` (the machine fleet placed it on) and
//! `job-state` (the placed unit's heartbeat): neither is carried over, since
//! flotilla places units itself. A job directory without an `object` is
//! skipped, as fleet skips it.
//!
//! Two requests read everything, as fleet itself does: the job tree first,
//! then every unit file (a unit file is written before the job that names
//! it, so reading in this order never misses one). Each answer is bounded
//! in bytes and each request in time.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use flotilla_proto::DesiredState;
use reqwest::{StatusCode, Url};
use serde::Deserialize;

/// fleet's default `etcd_key_prefix`.
pub const DEFAULT_KEY_PREFIX: &str = "/_coreos.com/fleet/";

/// The most bytes one answer of etcd may have: a fleet registry larger than
/// this is not one to import in one go.
pub const MAX_ANSWER_BYTES: u64 = 64 * 1024 * 1024;

/// How long one request to etcd may take by default, answer included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How fleet's etcd is reached.
#[derive(Debug, Clone)]
pub struct Options {
    /// CA certificates (PEM) to verify an https:// etcd with, instead of the
    /// system's.
    pub ca_pem: Option<Vec<u8>>,
    /// The most one request may take, its answer included.
    pub timeout: Duration,
    /// The most bytes one answer may have.
    pub max_bytes: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            ca_pem: None,
            timeout: DEFAULT_TIMEOUT,
            max_bytes: MAX_ANSWER_BYTES,
        }
    }
}

/// Why fleet's registry could not be read as a whole.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid etcd URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("the etcd CA file cannot be used: {reason}")]
    Ca { reason: String },
    #[error("cannot set up the http client for etcd: {reason}")]
    Client { reason: String },
    #[error("cannot reach etcd at {url}: {cause}")]
    Unreachable { url: String, cause: String },
    #[error("etcd at {url} did not answer within {seconds}s (--etcd-timeout)")]
    Timeout { url: String, seconds: u64 },
    #[error("the answer of etcd at {url} is larger than {limit} bytes: refusing to read it")]
    TooLarge { url: String, limit: u64 },
    #[error(
        "etcd at {url} does not serve its v2 API (fleet's registry lives there: etcd 3.4 needs --enable-v2)"
    )]
    NoV2Api { url: String },
    #[error("etcd at {url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("cannot decode the answer of etcd at {url}: {reason}")]
    Decode { url: String, reason: String },
    #[error(
        "etcd at {url} has no fleet registry under {prefix} (no key {key}): check --key-prefix (fleet's etcd_key_prefix)"
    )]
    NoRegistry {
        url: String,
        prefix: String,
        key: String,
    },
}

/// Why one of fleet's units cannot be read: the others still can.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error("fleet's job object {key} is not valid: {reason}")]
    Object { key: String, reason: String },
    #[error("fleet's registry lacks the unit file {hash} this unit names")]
    MissingUnitFile { hash: String },
    #[error("fleet's unit file {key} is not valid: {reason}")]
    UnitFile { key: String, reason: String },
    #[error("fleet's target state {value:?} at {key} is none of inactive, loaded, launched")]
    TargetState { key: String, value: String },
}

/// A unit of fleet's registry, as fleet's API would list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetUnit {
    /// The unit file, as fleet stored it (fleet keeps options, not
    /// comments or layout).
    pub text: String,
    /// fleet's desired state (`inactive` when fleet stored none).
    pub desired: DesiredState,
    /// fleet's hash of the unit file (SHA-1, hex).
    pub fleet_hash: String,
}

/// One job of fleet's registry: its name, and its unit or why it cannot
/// be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub name: String,
    pub unit: Result<FleetUnit, JobError>,
}

/// What the registry held when it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// etcd's index when the jobs were read (`X-Etcd-Index`).
    pub etcd_index: Option<u64>,
    /// Every job, sorted by name.
    pub jobs: Vec<Job>,
}

/// fleet's registry in one etcd.
pub struct Registry {
    http: reqwest::Client,
    base: Url,
    prefix: Vec<String>,
    options: Options,
}

impl Registry {
    /// The registry under `key_prefix` of the etcd member at `etcd`.
    pub fn new(etcd: &str, key_prefix: &str, options: Options) -> Result<Registry, RegistryError> {
        let invalid = |reason: &str| RegistryError::InvalidUrl {
            url: etcd.to_owned(),
            reason: reason.to_owned(),
        };
        let base = Url::parse(etcd).map_err(|e| invalid(&e.to_string()))?;
        match base.scheme() {
            "http" | "https" => {}
            _ => return Err(invalid("the scheme must be http or https")),
        }
        if base.cannot_be_a_base() || base.host().is_none() {
            return Err(invalid("it names no host"));
        }
        if base.query().is_some() || base.fragment().is_some() || !base.username().is_empty() {
            return Err(invalid(
                "give the member's client URL only, without a query or user name",
            ));
        }
        if options.ca_pem.is_some() && base.scheme() != "https" {
            return Err(invalid("--etcd-ca is for an https:// etcd"));
        }
        // reqwest here comes without a crypto provider: flotilla uses ring
        // everywhere. Installing fails only when one is installed already,
        // which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout);
        if let Some(pem) = &options.ca_pem {
            let certs =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|e| RegistryError::Ca {
                    reason: root_cause(&e),
                })?;
            if certs.is_empty() {
                return Err(RegistryError::Ca {
                    reason: "it holds no PEM certificate".into(),
                });
            }
            builder = builder.tls_certs_only(certs);
        }
        let http = builder.build().map_err(|e| RegistryError::Client {
            reason: root_cause(&e),
        })?;
        let prefix = key_prefix
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(Registry {
            http,
            base,
            prefix,
            options,
        })
    }

    /// The key prefix as fleet writes it: `/a/b/`.
    pub fn prefix(&self) -> String {
        let mut out = String::from("/");
        for s in &self.prefix {
            out.push_str(s);
            out.push('/');
        }
        out
    }

    /// Reads every job and the unit files they name.
    pub async fn read(&self) -> Result<Snapshot, RegistryError> {
        let job_key = format!("{}job", self.prefix());
        let Some((jobs, etcd_index)) = self.get_tree("job").await? else {
            return Err(RegistryError::NoRegistry {
                url: self.base.to_string(),
                prefix: self.prefix(),
                key: job_key,
            });
        };
        // No unit file yet: every job then lacks its file.
        let units = self.get_tree("unit").await?.map(|(n, _)| n);
        Ok(Snapshot {
            etcd_index,
            jobs: decode_jobs(&jobs, units.as_ref()),
        })
    }

    /// `GET /v2/keys/<prefix><leaf>?recursive=true&sorted=true`: the tree,
    /// or `None` when etcd has no such key.
    async fn get_tree(&self, leaf: &str) -> Result<Option<(Node, Option<u64>)>, RegistryError> {
        let mut url = self.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|()| RegistryError::InvalidUrl {
                    url: self.base.to_string(),
                    reason: "it cannot take a path".into(),
                })?;
            path.pop_if_empty().extend(["v2", "keys"]);
            path.extend(&self.prefix);
            path.push(leaf);
        }
        url.query_pairs_mut()
            .append_pair("recursive", "true")
            .append_pair("sorted", "true")
            .append_pair("quorum", "true");
        let shown = url.to_string();
        let fail = |e: reqwest::Error| {
            if e.is_timeout() {
                RegistryError::Timeout {
                    url: shown.clone(),
                    seconds: self.options.timeout.as_secs().max(1),
                }
            } else {
                RegistryError::Unreachable {
                    url: shown.clone(),
                    cause: root_cause(&e),
                }
            }
        };
        let mut response = self.http.get(url.clone()).send().await.map_err(fail)?;
        let status = response.status();
        let index = response
            .headers()
            .get("x-etcd-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let limit = self.options.max_bytes;
        let too_large = || RegistryError::TooLarge {
            url: shown.clone(),
            limit,
        };
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(fail)? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        if status == StatusCode::NOT_FOUND {
            // etcd's own "key not found" is JSON with errorCode 100; a 404
            // that is not JSON means the v2 API is not served at all.
            return match serde_json::from_slice::<EtcdError>(&body) {
                Ok(e) if e.error_code == KEY_NOT_FOUND => Ok(None),
                _ => Err(RegistryError::NoV2Api {
                    url: self.base.to_string(),
                }),
            };
        }
        if !status.is_success() {
            return Err(RegistryError::Status {
                url: shown,
                status: status.as_u16(),
                body: excerpt(&body),
            });
        }
        let answer: Answer = serde_json::from_slice(&body).map_err(|e| RegistryError::Decode {
            url: shown.clone(),
            reason: e.to_string(),
        })?;
        Ok(Some((answer.node, index)))
    }
}

/// etcd v2's "key not found".
const KEY_NOT_FOUND: u64 = 100;

#[derive(Debug, Deserialize)]
struct EtcdError {
    #[serde(rename = "errorCode")]
    error_code: u64,
}

/// An answer of etcd v2's keys API.
#[derive(Debug, Deserialize)]
struct Answer {
    node: Node,
}

/// A key or directory of etcd v2.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Node {
    key: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    dir: bool,
    #[serde(default)]
    nodes: Vec<Node>,
}

impl Node {
    /// The last part of the key.
    fn leaf(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or(&self.key)
    }

    fn child(&self, leaf: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| !n.dir && n.leaf() == leaf)
    }
}

/// fleet's `jobModel`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct JobModel {
    name: String,
    unit_hash: [u8; 20],
}

/// fleet's `unitModel`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UnitModel {
    raw: String,
}

/// Every job under `jobs`, with the unit files of `units` they name.
pub(crate) fn decode_jobs(jobs: &Node, units: Option<&Node>) -> Vec<Job> {
    let files: HashMap<&str, &Node> = units
        .map(|u| u.nodes.iter().map(|n| (n.leaf(), n)).collect())
        .unwrap_or_default();
    let mut out: Vec<Job> = jobs
        .nodes
        .iter()
        .filter(|dir| dir.dir)
        .filter_map(|dir| {
            let object = dir.child("object")?;
            Some(Job {
                name: dir.leaf().to_owned(),
                unit: decode_job(dir, object, &files),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn decode_job(
    dir: &Node,
    object: &Node,
    files: &HashMap<&str, &Node>,
) -> Result<FleetUnit, JobError> {
    let bad_object = |reason: String| JobError::Object {
        key: object.key.clone(),
        reason,
    };
    let model: JobModel = serde_json::from_str(object.value.as_deref().unwrap_or_default())
        .map_err(|e| bad_object(e.to_string()))?;
    if model.name != dir.leaf() {
        return Err(bad_object(format!("it names unit {:?}", model.name)));
    }
    let hash = hex(&model.unit_hash);
    let file = files
        .get(hash.as_str())
        .filter(|n| !n.dir)
        .ok_or_else(|| JobError::MissingUnitFile { hash: hash.clone() })?;
    let unit: UnitModel =
        serde_json::from_str(file.value.as_deref().unwrap_or_default()).map_err(|e| {
            JobError::UnitFile {
                key: file.key.clone(),
                reason: e.to_string(),
            }
        })?;
    let desired = match dir.child("target-state") {
        // fleet writes a target state with every job; a job without one
        // is fleet's default, inactive.
        None => DesiredState::Inactive,
        Some(node) => {
            let value = node.value.as_deref().unwrap_or_default();
            if value.is_empty() {
                DesiredState::Inactive
            } else {
                value.parse().map_err(|_| JobError::TargetState {
                    key: node.key.clone(),
                    value: value.to_owned(),
                })?
            }
        }
    };
    Ok(FleetUnit {
        text: unit.raw,
        desired,
        fleet_hash: hash,
    })
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The start of an error body, for a message.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

/// The innermost cause of an error, such as "connection refused".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What etcd answered for a registry written by fleetctl 1.0
    /// (`submit hello.service`, `start hello.service`), abridged.
    const JOBS: &str = r#"{"action":"get","node":{"key":"/_coreos.com/fleet/job","dir":true,"nodes":[
        {"key":"/_coreos.com/fleet/job/hello.service","dir":true,"nodes":[
            {"key":"/_coreos.com/fleet/job/hello.service/object","value":"{\"Name\":\"hello.service\",\"UnitHash\":[64,69,226,22,160,186,243,114,58,145,114,21,155,47,1,94,29,139,118,109]}"},
            {"key":"/_coreos.com/fleet/job/hello.service/target-state","value":"launched"},
            {"key":"/_coreos.com/fleet/job/hello.service/target","value":"2b5c"}]},
        {"key":"/_coreos.com/fleet/job/leftover.service","dir":true,"nodes":[
            {"key":"/_coreos.com/fleet/job/leftover.service/target","value":"2b5c"}]},
        {"key":"/_coreos.com/fleet/job/gone.service","dir":true,"nodes":[
            {"key":"/_coreos.com/fleet/job/gone.service/object","value":"{\"Name\":\"gone.service\",\"UnitHash\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20]}"}]},
        {"key":"/_coreos.com/fleet/job/bad.service","dir":true,"nodes":[
            {"key":"/_coreos.com/fleet/job/bad.service/object","value":"{\"Name\":\"bad.service\",\"UnitHash\":[64,69,226,22,160,186,243,114,58,145,114,21,155,47,1,94,29,139,118,109]}"},
            {"key":"/_coreos.com/fleet/job/bad.service/target-state","value":"running"}]}
    ]}}"#;

    const UNITS: &str = r#"{"action":"get","node":{"key":"/_coreos.com/fleet/unit","dir":true,"nodes":[
        {"key":"/_coreos.com/fleet/unit/4045e216a0baf3723a9172159b2f015e1d8b766d","value":"{\"Raw\":\"[Unit]\\nDescription=hello\\n\\n[Service]\\nExecStart=/bin/sleep infinity\\n\"}"}
    ]}}"#;

    fn node(json: &str) -> Node {
        serde_json::from_str::<Answer>(json).unwrap().node
    }

    #[test]
    fn jobs_decode_as_fleet_reads_them() {
        let jobs = decode_jobs(&node(JOBS), Some(&node(UNITS)));
        let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
        // Sorted; the job without an object is not a unit, as in fleet.
        assert_eq!(names, ["bad.service", "gone.service", "hello.service"]);
        assert_eq!(
            jobs[2].unit,
            Ok(FleetUnit {
                text: "[Unit]\nDescription=hello\n\n[Service]\nExecStart=/bin/sleep infinity\n"
                    .into(),
                desired: DesiredState::Launched,
                fleet_hash: "4045e216a0baf3723a9172159b2f015e1d8b766d".into(),
            })
        );
        assert_eq!(
            jobs[1].unit,
            Err(JobError::MissingUnitFile {
                hash: "0102030405060708090a0b0c0d0e0f1011121314".into()
            })
        );
        assert!(
            matches!(&jobs[0].unit, Err(JobError::TargetState { value, .. }) if value == "running")
        );
    }

    #[test]
    fn a_job_without_target_state_is_inactive_and_a_bad_object_is_reported() {
        let jobs = r#"{"node":{"key":"/p/job","dir":true,"nodes":[
            {"key":"/p/job/a.service","dir":true,"nodes":[
                {"key":"/p/job/a.service/object","value":"{\"Name\":\"a.service\",\"UnitHash\":[64,69,226,22,160,186,243,114,58,145,114,21,155,47,1,94,29,139,118,109]}"}]},
            {"key":"/p/job/b.service","dir":true,"nodes":[
                {"key":"/p/job/b.service/object","value":"{\"Name\":\"other.service\",\"UnitHash\":[64,69,226,22,160,186,243,114,58,145,114,21,155,47,1,94,29,139,118,109]}"}]},
            {"key":"/p/job/c.service","dir":true,"nodes":[
                {"key":"/p/job/c.service/object","value":"not json"}]}
        ]}}"#;
        let units = UNITS.replace("/_coreos.com/fleet/", "/p/");
        let jobs = decode_jobs(&node(jobs), Some(&node(&units)));
        assert_eq!(
            jobs[0].unit.as_ref().unwrap().desired,
            DesiredState::Inactive
        );
        let b = jobs[1].unit.as_ref().unwrap_err().to_string();
        assert!(
            b.contains("/p/job/b.service/object") && b.contains("other.service"),
            "{b}"
        );
        assert!(matches!(jobs[2].unit, Err(JobError::Object { .. })));
        // No unit files at all: every job lacks its file.
        let none = decode_jobs(
            &node(
                r#"{"node":{"key":"/p/job","dir":true,"nodes":[
            {"key":"/p/job/a.service","dir":true,"nodes":[
                {"key":"/p/job/a.service/object","value":"{\"Name\":\"a.service\",\"UnitHash\":[64,69,226,22,160,186,243,114,58,145,114,21,155,47,1,94,29,139,118,109]}"}]}]}}"#,
            ),
            None,
        );
        assert!(matches!(
            none[0].unit,
            Err(JobError::MissingUnitFile { .. })
        ));
    }

    #[test]
    fn urls_are_checked() {
        let err = |url: &str, options: Options| {
            Registry::new(url, DEFAULT_KEY_PREFIX, options)
                .err()
                .unwrap()
                .to_string()
        };
        assert!(err("127.0.0.1:2379", Options::default()).contains("invalid etcd URL"));
        assert!(err("ftp://h:1", Options::default()).contains("http or https"));
        let with_ca = Options {
            ca_pem: Some(b"x".to_vec()),
            ..Options::default()
        };
        assert!(err("http://h:1", with_ca.clone()).contains("--etcd-ca is for an https://"));
        assert!(err("https://h:1", with_ca).contains("etcd CA file"));
        let r = Registry::new("http://h:1/", "_coreos.com//fleet", Options::default()).unwrap();
        assert_eq!(r.prefix(), "/_coreos.com/fleet/");
    }

    /// A loopback server that answers every connection with `answer`
    /// (or, when `None`, reads the request and never answers). Returns its
    /// URL.
    async fn serve(answer: Option<Vec<u8>>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    match answer {
                        Some(a) => {
                            let _ = conn.write_all(&a).await;
                        }
                        None => {
                            // Hold the connection open without answering.
                            let _ = conn.read(&mut buf).await;
                        }
                    }
                });
            }
        });
        url
    }

    fn options(max_bytes: u64, timeout: Duration) -> Options {
        Options {
            ca_pem: None,
            timeout,
            max_bytes,
        }
    }

    #[tokio::test]
    async fn an_answer_over_the_cap_is_refused_with_or_without_its_length() {
        let body = format!(
            "{{\"node\":{{\"key\":\"/x\",\"value\":\"{}\"}}}}",
            "a".repeat(5000)
        );
        let announced = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let chunked = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        );
        for answer in [announced, chunked] {
            let url = serve(Some(answer.into_bytes())).await;
            let small = Registry::new(&url, "/p/", options(4096, DEFAULT_TIMEOUT)).unwrap();
            let err = small.read().await.unwrap_err();
            assert!(
                matches!(err, RegistryError::TooLarge { limit: 4096, .. }),
                "{err}"
            );
            assert!(err.to_string().contains("larger than 4096 bytes"), "{err}");
            // The same answer under a larger cap is read.
            let large = Registry::new(&url, "/p/", options(1 << 20, DEFAULT_TIMEOUT)).unwrap();
            let node = large.get_tree("job").await.unwrap().unwrap().0;
            assert_eq!(node.value.unwrap().len(), 5000);
        }
    }

    #[tokio::test]
    async fn a_silent_etcd_times_out() {
        let url = serve(None).await;
        let r = Registry::new(&url, "/p/", options(4096, Duration::from_millis(200))).unwrap();
        let err = r.read().await.unwrap_err();
        assert!(matches!(err, RegistryError::Timeout { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_404_that_is_not_etcd_s_means_no_v2_api() {
        let answer = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 19\r\nConnection: close\r\n\r\n404 page not found\n".to_vec();
        let url = serve(Some(answer)).await;
        let r = Registry::new(&url, "/p/", Options::default()).unwrap();
        let err = r.read().await.unwrap_err();
        assert!(matches!(err, RegistryError::NoV2Api { .. }), "{err}");
        assert!(err.to_string().contains("--enable-v2"), "{err}");
    }
}
