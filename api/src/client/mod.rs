//! The typed HTTP client of the API, used by the CLI verbs and the agent.
//!
//! A [`Client`] knows one or more servers. A call that cannot connect to
//! the current one tries the next, and the client sticks to the first that
//! answered. A call that connected but then timed out or broke is not
//! retried (it may have taken effect): it fails with
//! [`ClientError::Unreachable`], and the next call starts at the next
//! server.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use flotilla_proto::rollout::{Rollout, RolloutList, RolloutRequest};
use flotilla_proto::wire::{
    ErrorBody, Heartbeat, MachinePage, MachinePatch, MachineResource, MachineUnits, Registration,
    ServerList, StatePage, StateReport, Unit, UnitPage, UnitPut,
};
use flotilla_proto::{Machine, MachineId, UnitName, UnitState};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

mod inspect;
mod secrets;
mod servers;
mod sync;
mod trust;

pub use secrets::OpenedSecret;

pub use inspect::{JournalQuery, JournalStream};
// The cluster's history.
mod events;
pub use events::EventQuery;

use crate::tls::{ClientIdentity, ServerTrust};
use crate::wire::WatchIndex;

pub use reqwest::Url;

/// How long an ordinary call may take, connection included, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long connecting to one server may take before the next is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a long poll may take beyond its `wait` before it counts as timed
/// out: the server answers when `wait` passes, this covers the trip.
pub const LONG_POLL_MARGIN: Duration = Duration::from_secs(15);

/// How long an idle pooled connection is kept: well under the servers'
/// idle timeout (`http.idle-timeout`, 90 s by default).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// [`Client::new`] was given no server.
    #[error("no server endpoint given")]
    NoEndpoint,
    /// A server URL that the client cannot use.
    #[error("invalid server endpoint {url:?}: {reason}")]
    InvalidEndpoint { url: String, reason: String },
    /// A token with characters an HTTP header cannot carry (such as a
    /// newline), or an empty one.
    #[error("the token is empty or has characters an http header cannot carry")]
    InvalidToken,
    /// The CA or client certificate given cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The server answered with an error: `status` and `reason` are the
    /// JSON error body's, `message` is for a person (for a rejected unit
    /// file, one `FILE:LINE: error: ...` line per problem).
    #[error("{message} ({status} {reason})")]
    Api {
        status: u16,
        reason: String,
        message: String,
    },
    /// No server could be connected to, or the one connected to timed out
    /// or broke the connection. Temporary: try again later (the client
    /// starts the next call at the next server).
    #[error("cannot reach {endpoint}: {cause}")]
    Unreachable {
        endpoint: String,
        /// The innermost cause, such as "connection refused".
        cause: String,
        error: reqwest::Error,
    },
    /// A request body that cannot be encoded as JSON (a bug).
    #[error("cannot encode the request to {endpoint}: {source}")]
    Encode {
        endpoint: String,
        source: serde_json::Error,
    },
    /// A successful answer whose body is not the JSON expected.
    #[error("cannot decode the answer of {endpoint}: {source}")]
    Decode {
        endpoint: String,
        source: serde_json::Error,
    },
    /// A successful answer that does not follow the API, such as a status
    /// this route never gives.
    #[error("unexpected answer from {endpoint}: {message}")]
    Protocol { endpoint: String, message: String },
}

impl ClientError {
    /// The HTTP status of an [`ClientError::Api`] error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            ClientError::NoEndpoint
            | ClientError::InvalidEndpoint { .. }
            | ClientError::InvalidToken
            | ClientError::Tls(_)
            | ClientError::Unreachable { .. }
            | ClientError::Encode { .. }
            | ClientError::Decode { .. }
            | ClientError::Protocol { .. } => None,
        }
    }

    /// Whether the server said the thing asked about does not exist (404);
    /// for a heartbeat: the lease expired, register again.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// Whether trying again later may succeed: no server reachable, or the
    /// store behind it unavailable (503).
    pub fn is_temporary(&self) -> bool {
        matches!(self, ClientError::Unreachable { .. }) || self.status() == Some(503)
    }
}

/// What `PUT /v1/units/{name}` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The unit did not exist and was created (201).
    Created,
    /// The unit existed (204).
    Updated,
}

/// Which page of a listing to fetch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageQuery {
    /// The previous page's `nextPageToken`; `None` for the first page.
    pub token: Option<String>,
    /// At most this many items; `None` for the server's default.
    pub limit: Option<usize>,
}

/// Filters of `GET /v1/state`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateQuery {
    pub unit: Option<UnitName>,
    pub machine: Option<MachineId>,
}

/// How a client proves who it is and whom it trusts.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// A bearer token (`flt1....`).
    pub token: Option<String>,
    /// Which CA signs the servers' certificates (https endpoints).
    pub trust: ServerTrust,
    /// A client certificate signed by the cluster CA, instead of (or
    /// beside) a token.
    pub identity: Option<ClientIdentity>,
}

/// The API's typed client. Cheap to clone: clones share connections and
/// the choice of server.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    endpoints: Vec<Url>,
    /// Index in `endpoints` of the server the next call tries first.
    current: AtomicUsize,
    /// `Bearer TOKEN`, marked sensitive.
    auth: Option<HeaderValue>,
    timeout: Duration,
}

impl fmt::Debug for Client {
    // The token is a secret: it never reaches a log through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.inner.endpoints)
            .field("current", &self.endpoint())
            .field("token", &self.inner.auth.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

/// A request before it is sent to one server or the next.
struct Call<'a> {
    method: Method,
    path: &'a [&'a str],
    query: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    timeout: Duration,
}

impl Client {
    /// A client of the servers at `endpoints` (`https://host:port`, or
    /// `http://` for a server run with `--insecure-http`; with a path
    /// prefix or not), tried in order, sending `token` as a bearer token
    /// when given, and trusting the system's CAs.
    pub fn new<I, S>(endpoints: I, token: Option<&str>) -> Result<Client, ClientError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Client::with_options(
            endpoints,
            ClientOptions {
                token: token.map(str::to_owned),
                ..ClientOptions::default()
            },
        )
    }

    /// A client of the servers at `endpoints` with `options`.
    pub fn with_options<I, S>(endpoints: I, options: ClientOptions) -> Result<Client, ClientError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let endpoints = endpoints
            .into_iter()
            .map(|e| parse_endpoint(e.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoint);
        }
        let auth = options
            .token
            .as_deref()
            .map(|t| {
                let t = t.trim();
                if t.is_empty() {
                    return Err(ClientError::InvalidToken);
                }
                let mut value = HeaderValue::from_str(&format!("Bearer {t}"))
                    .map_err(|_| ClientError::InvalidToken)?;
                value.set_sensitive(true);
                Ok(value)
            })
            .transpose()?;
        crate::tls::install_provider();
        let mut headers = reqwest::header::HeaderMap::new();
        // Servers refuse (426) callers of a release line they do not serve.
        headers.insert(
            crate::version::HEADER,
            HeaderValue::from_static(crate::version::VERSION),
        );
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(CONNECT_TIMEOUT)
            // Shorter than the servers' idle timeout, so that a pooled
            // connection is not reused just as the server closes it.
            .pool_idle_timeout(POOL_IDLE_TIMEOUT);
        match &options.trust {
            ServerTrust::CaPem(pem) => {
                let config = crate::tls::client_config(pem, options.identity.as_ref())?;
                builder = builder.tls_backend_preconfigured(config);
            }
            ServerTrust::System => {
                if let Some(id) = &options.identity {
                    let mut pem = id.cert_pem.clone();
                    pem.extend_from_slice(b"\n");
                    pem.extend_from_slice(&id.key_pem);
                    let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                        crate::tls::TlsError::Invalid {
                            what: "the client certificate".into(),
                            reason: root_cause(&e),
                        }
                    })?;
                    builder = builder.identity(identity);
                }
            }
        }
        let http = builder.build().map_err(|e| ClientError::InvalidEndpoint {
            url: endpoints[0].to_string(),
            reason: format!("cannot set up the http client: {}", root_cause(&e)),
        })?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                endpoints,
                current: AtomicUsize::new(0),
                auth,
                timeout: DEFAULT_TIMEOUT,
            }),
        })
    }

    /// The same client with another timeout for ordinary calls (long
    /// polls take their `wait` plus [`LONG_POLL_MARGIN`]).
    pub fn with_timeout(self, timeout: Duration) -> Client {
        let inner = &self.inner;
        Client {
            inner: Arc::new(Inner {
                http: inner.http.clone(),
                endpoints: inner.endpoints.clone(),
                current: AtomicUsize::new(inner.current.load(Ordering::Relaxed)),
                auth: inner.auth.clone(),
                timeout,
            }),
        }
    }

    /// The server the next call tries first.
    pub fn endpoint(&self) -> &Url {
        let i = self.inner.current.load(Ordering::Relaxed) % self.inner.endpoints.len();
        &self.inner.endpoints[i]
    }

    /// Every server this client knows, in order.
    pub fn endpoints(&self) -> &[Url] {
        &self.inner.endpoints
    }

    // ---- units ----

    /// `GET /v1/units`: one page of units, in name order.
    pub async fn list_units(&self, page: &PageQuery) -> Result<UnitPage, ClientError> {
        self.get_json(&["v1", "units"], page_query(page)).await
    }

    /// Every unit, walking the pages.
    pub async fn all_units(&self) -> Result<Vec<Unit>, ClientError> {
        let mut units = Vec::new();
        self.walk(
            |page| async move { self.list_units(&page).await },
            |p| (p.units, p.next_page_token),
            &mut units,
        )
        .await?;
        Ok(units)
    }

    /// `GET /v1/units/{name}`.
    pub async fn get_unit(&self, name: &UnitName) -> Result<Unit, ClientError> {
        self.get_json(&["v1", "units", name.as_str()], Vec::new())
            .await
    }

    /// `PUT /v1/units/{name}`: creates a unit, replaces its contents, or
    /// changes its desired state.
    pub async fn put_unit(
        &self,
        name: &UnitName,
        put: &UnitPut,
    ) -> Result<PutOutcome, ClientError> {
        let path = ["v1", "units", name.as_str()];
        let call = self.call_with_body(Method::PUT, &path, put)?;
        let (endpoint, status, _) = self.send(call).await?;
        match status {
            StatusCode::CREATED => Ok(PutOutcome::Created),
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(PutOutcome::Updated),
            other => Err(ClientError::Protocol {
                endpoint,
                message: format!("status {other} to a unit put"),
            }),
        }
    }

    /// `POST /v1/rollouts`: starts a rolling update of units whose
    /// contents change together.
    pub async fn start_rollout(&self, request: &RolloutRequest) -> Result<Rollout, ClientError> {
        let call = self.call_with_body(Method::POST, &["v1", "rollouts"], request)?;
        let (endpoint, _, body) = self.send(call).await?;
        decode(&endpoint, &body)
    }

    /// `GET /v1/rollouts`.
    pub async fn list_rollouts(&self) -> Result<RolloutList, ClientError> {
        self.get_json(&["v1", "rollouts"], Vec::new()).await
    }

    /// `GET /v1/rollouts/{name}`: by id, or the latest of a group.
    pub async fn get_rollout(&self, name: &str) -> Result<Rollout, ClientError> {
        self.get_json(&["v1", "rollouts", name], Vec::new()).await
    }

    /// `DELETE /v1/units/{name}`.
    pub async fn delete_unit(&self, name: &UnitName) -> Result<(), ClientError> {
        let path = ["v1", "units", name.as_str()];
        self.send(self.call(Method::DELETE, &path)).await?;
        Ok(())
    }

    /// `GET /v1/watch`: waits until something changed after store revision
    /// `index`, or `wait` passed (the server caps it); returns the revision
    /// to pass next time.
    pub async fn watch(&self, index: i64, wait: Duration) -> Result<i64, ClientError> {
        let mut call = self.call(Method::GET, &["v1", "watch"]);
        call.query = vec![("index", index.to_string()), ("wait", wait_param(wait))];
        call.timeout = wait.saturating_add(LONG_POLL_MARGIN);
        let (endpoint, _, body) = self.send(call).await?;
        decode::<WatchIndex>(&endpoint, &body).map(|w| w.index)
    }

    // ---- observed state and machines ----

    /// `GET /v1/state`: one page of observed states.
    pub async fn list_states(
        &self,
        filter: &StateQuery,
        page: &PageQuery,
    ) -> Result<StatePage, ClientError> {
        let mut query = page_query(page);
        if let Some(unit) = &filter.unit {
            query.push(("unitName", unit.to_string()));
        }
        if let Some(machine) = &filter.machine {
            query.push(("machineID", machine.to_string()));
        }
        self.get_json(&["v1", "state"], query).await
    }

    /// Every observed state that matches `filter`, walking the pages.
    pub async fn all_states(&self, filter: &StateQuery) -> Result<Vec<UnitState>, ClientError> {
        let mut states = Vec::new();
        self.walk(
            |page| async move { self.list_states(filter, &page).await },
            |p| (p.states, p.next_page_token),
            &mut states,
        )
        .await?;
        Ok(states)
    }

    /// `GET /v1/machines`: one page of live machines.
    pub async fn list_machines(&self, page: &PageQuery) -> Result<MachinePage, ClientError> {
        self.get_json(&["v1", "machines"], page_query(page)).await
    }

    /// Every live machine, walking the pages.
    pub async fn all_machines(&self) -> Result<Vec<MachineResource>, ClientError> {
        let mut machines = Vec::new();
        self.walk(
            |page| async move { self.list_machines(&page).await },
            |p| (p.machines, p.next_page_token),
            &mut machines,
        )
        .await?;
        Ok(machines)
    }

    /// `GET /v1/servers`: every live server, and which one leads.
    pub async fn list_servers(&self) -> Result<ServerList, ClientError> {
        self.get_json(&["v1", "servers"], Vec::new()).await
    }

    /// `PATCH /v1/machines/{id}`: sets metadata keys, removes those given
    /// as `None`.
    pub async fn patch_machine(
        &self,
        id: &MachineId,
        patch: &MachinePatch,
    ) -> Result<MachineResource, ClientError> {
        let path = ["v1", "machines", id.as_str()];
        self.send_json(self.call_with_body(Method::PATCH, &path, patch)?)
            .await
    }

    // ---- agents ----

    /// `POST /v1/agent/machines`: registers `machine` on a new lease.
    pub async fn register_machine(&self, machine: &Machine) -> Result<Registration, ClientError> {
        let path = ["v1", "agent", "machines"];
        self.send_json(self.call_with_body(Method::POST, &path, machine)?)
            .await
    }

    /// `POST /v1/agent/machines/{id}/heartbeat`: keeps the lease alive. A
    /// 404 ([`ClientError::is_not_found`]) means it expired: register
    /// again.
    pub async fn heartbeat(&self, id: &MachineId, lease: i64) -> Result<Registration, ClientError> {
        let path = ["v1", "agent", "machines", id.as_str(), "heartbeat"];
        let call = self.call_with_body(Method::POST, &path, &Heartbeat { lease })?;
        self.send_json(call).await
    }

    /// `GET /v1/agent/machines/{id}/units`: the machine's units; with
    /// `index`, once something changed for it after that revision, or
    /// `wait` passed.
    pub async fn machine_units(
        &self,
        id: &MachineId,
        index: Option<i64>,
        wait: Duration,
    ) -> Result<MachineUnits, ClientError> {
        let path = ["v1", "agent", "machines", id.as_str(), "units"];
        let mut call = self.call(Method::GET, &path);
        if let Some(index) = index {
            call.query = vec![("index", index.to_string()), ("wait", wait_param(wait))];
            call.timeout = wait.saturating_add(LONG_POLL_MARGIN);
        }
        self.send_json(call).await
    }

    /// `PUT /v1/agent/machines/{id}/state`: a batch of observed states.
    pub async fn report_states(
        &self,
        id: &MachineId,
        report: &StateReport,
    ) -> Result<(), ClientError> {
        let path = ["v1", "agent", "machines", id.as_str(), "state"];
        self.send(self.call_with_body(Method::PUT, &path, report)?)
            .await?;
        Ok(())
    }

    // ---- the API itself ----

    /// `GET /v1/openapi.json`: the server's OpenAPI document.
    pub async fn openapi(&self) -> Result<serde_json::Value, ClientError> {
        self.get_json(&["v1", "openapi.json"], Vec::new()).await
    }

    /// `GET /healthz`: succeeds while the server serves HTTP.
    pub async fn health(&self) -> Result<(), ClientError> {
        self.send(self.call(Method::GET, &["healthz"])).await?;
        Ok(())
    }

    // ---- plumbing ----

    fn call<'a>(&self, method: Method, path: &'a [&'a str]) -> Call<'a> {
        Call {
            method,
            path,
            query: Vec::new(),
            body: None,
            timeout: self.inner.timeout,
        }
    }

    fn call_with_body<'a, T: Serialize>(
        &self,
        method: Method,
        path: &'a [&'a str],
        body: &T,
    ) -> Result<Call<'a>, ClientError> {
        let body = serde_json::to_vec(body).map_err(|source| ClientError::Encode {
            endpoint: path.join("/"),
            source,
        })?;
        let mut call = self.call(method, path);
        call.body = Some(body);
        Ok(call)
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        path: &[&str],
        query: Vec<(&'static str, String)>,
    ) -> Result<T, ClientError> {
        let mut call = self.call(Method::GET, path);
        call.query = query;
        self.send_json(call).await
    }

    async fn send_json<T: DeserializeOwned>(&self, call: Call<'_>) -> Result<T, ClientError> {
        let (endpoint, _, body) = self.send(call).await?;
        decode(&endpoint, &body)
    }

    /// Sends `call` to the current server, or to the next ones while
    /// connecting fails; returns the URL called, and the status and body of
    /// a successful answer.
    async fn send(&self, call: Call<'_>) -> Result<(String, StatusCode, Vec<u8>), ClientError> {
        let inner = &self.inner;
        let count = inner.endpoints.len();
        let start = inner.current.load(Ordering::Relaxed);
        let mut last_failure = None;
        for attempt in 0..count {
            let i = (start + attempt) % count;
            let url = request_url(&inner.endpoints[i], call.path, &call.query);
            let endpoint = format!("{} {}", call.method, url);
            let mut request = inner
                .http
                .request(call.method.clone(), url)
                .timeout(call.timeout);
            if let Some(auth) = &inner.auth {
                request = request.header(AUTHORIZATION, auth.clone());
            }
            if let Some(body) = &call.body {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(error) if error.is_connect() => {
                    // Nothing was sent: the next server may take it.
                    last_failure = Some(unreachable(endpoint, error));
                    continue;
                }
                Err(error) => {
                    // Sent, then timed out or broke: it may have taken
                    // effect, so it is not retried, but the next call starts
                    // at the next server.
                    inner.current.store((i + 1) % count, Ordering::Relaxed);
                    return Err(unreachable(endpoint, error));
                }
            };
            inner.current.store(i, Ordering::Relaxed);
            let status = response.status();
            let body = match response.bytes().await {
                Ok(body) => body.to_vec(),
                Err(error) => {
                    inner.current.store((i + 1) % count, Ordering::Relaxed);
                    return Err(unreachable(endpoint, error));
                }
            };
            if status.is_success() {
                return Ok((endpoint, status, body));
            }
            return Err(api_error(status, &body));
        }
        Err(last_failure.unwrap_or(ClientError::NoEndpoint))
    }

    /// Fetches every page: `fetch` gets one, `split` takes its items and
    /// next token apart.
    async fn walk<P, T, F, Fut>(
        &self,
        fetch: F,
        split: impl Fn(P) -> (Vec<T>, Option<String>),
        into: &mut Vec<T>,
    ) -> Result<(), ClientError>
    where
        F: Fn(PageQuery) -> Fut,
        Fut: Future<Output = Result<P, ClientError>>,
    {
        let mut page = PageQuery::default();
        loop {
            let (items, next) = split(fetch(page.clone()).await?);
            into.extend(items);
            match next {
                None => return Ok(()),
                Some(token) if page.token.as_ref() == Some(&token) => {
                    return Err(ClientError::Protocol {
                        endpoint: self.endpoint().to_string(),
                        message: format!("the page token {token:?} came back unchanged"),
                    });
                }
                Some(token) => page.token = Some(token),
            }
        }
    }
}

/// Checks that `raw` is a URL this client can call.
fn parse_endpoint(raw: &str) -> Result<Url, ClientError> {
    let invalid = |reason: &str| ClientError::InvalidEndpoint {
        url: raw.to_owned(),
        reason: reason.to_owned(),
    };
    let mut url = Url::parse(raw).map_err(|e| invalid(&e.to_string()))?;
    match url.scheme() {
        "http" | "https" => {}
        _ => return Err(invalid("the scheme must be https (or http)")),
    }
    if url.host().is_none() {
        return Err(invalid("no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("a server endpoint has no query or fragment"));
    }
    // Paths of calls are appended segment by segment; an http URL with a
    // host always has segments to append to.
    if url.path_segments_mut().is_err() {
        return Err(invalid("cannot append paths to it"));
    }
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    Ok(url)
}

/// `base` with the path segments (percent-encoded each) and query added.
fn request_url(base: &Url, path: &[&str], query: &[(&str, String)]) -> Url {
    let mut url = base.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        // `parse_endpoint` checked that an endpoint takes segments.
        segments.pop_if_empty().extend(path);
    }
    if !query.is_empty() {
        url.query_pairs_mut()
            .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
    }
    url
}

fn page_query(page: &PageQuery) -> Vec<(&'static str, String)> {
    let mut query = Vec::new();
    if let Some(token) = &page.token {
        query.push(("nextPageToken", token.clone()));
    }
    if let Some(limit) = page.limit {
        query.push(("limit", limit.to_string()));
    }
    query
}

/// Seconds, with the fraction the server accepts.
fn wait_param(wait: Duration) -> String {
    format!("{}", wait.as_secs_f64())
}

fn decode<T: DeserializeOwned>(endpoint: &str, body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|source| ClientError::Decode {
        endpoint: endpoint.to_owned(),
        source,
    })
}

/// The error of a failed answer: its JSON error body's, or the status and
/// the start of whatever text came instead (from a proxy, say).
fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error }) => ClientError::Api {
            status: status.as_u16(),
            reason: error.reason,
            message: error.message,
        },
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let message: String = text.trim().chars().take(512).collect();
            ClientError::Api {
                status: status.as_u16(),
                reason: status
                    .canonical_reason()
                    .unwrap_or("unknown")
                    .to_lowercase()
                    .replace(' ', "_"),
                message: if message.is_empty() {
                    format!("status {status} without an error body")
                } else {
                    message
                },
            }
        }
    }
}

fn unreachable(endpoint: String, error: reqwest::Error) -> ClientError {
    ClientError::Unreachable {
        endpoint,
        cause: root_cause(&error),
        error,
    }
}

/// The innermost error of a chain: "connection refused" rather than
/// "error sending request"; for TLS failures, what they mean.
pub(crate) fn root_cause(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".to_owned();
    }
    let mut cause: &dyn std::error::Error = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    let text = cause.to_string();
    match tls_hint(&text) {
        Some(hint) => format!("{text}: {hint}"),
        None => text,
    }
}

/// What a TLS failure means for the person who sees it.
fn tls_hint(cause: &str) -> Option<&'static str> {
    if cause.contains("UnknownIssuer")
        || cause.contains("unknown issuer")
        || cause.contains("BadSignature")
    {
        Some(
            "the server's certificate is not signed by a CA this client trusts (give the cluster's CA with --ca or FLOTILLA_CA)",
        )
    } else if cause.contains("NotValidForName") || cause.contains("not valid for name") {
        Some(
            "the server's certificate does not name the host in the endpoint (a server's names are its listen address, host name, loopback and --tls-san)",
        )
    } else if cause.contains("InvalidContentType")
        || cause.contains("corrupt message")
        || cause.contains("invalid content type")
    {
        Some("the server does not speak TLS: it runs with --insecure-http, reach it with http://")
    } else if cause.contains("Expired") || cause.contains("expired") {
        Some("a certificate has expired")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let url = parse_endpoint("http://127.0.0.1:4001/").unwrap();
        assert_eq!(
            request_url(&url, &["v1", "units", "web@1.service"], &[]).as_str(),
            "http://127.0.0.1:4001/v1/units/web@1.service"
        );
        let url = parse_endpoint("http://h:1/api/").unwrap();
        assert_eq!(
            request_url(&url, &["v1", "watch"], &[("index", "3".into())]).as_str(),
            "http://h:1/api/v1/watch?index=3"
        );
        assert!(parse_endpoint("https://h:7070").is_ok());
        for bad in ["ftp://h", "h:4001", "http://h/?x=1", "not a url"] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            Client::new(Vec::<String>::new(), None),
            Err(ClientError::NoEndpoint)
        ));
        assert!(matches!(
            Client::new(["http://h:1"], Some("a\nb")),
            Err(ClientError::InvalidToken)
        ));
    }

    #[test]
    fn error_bodies() {
        let body = br#"{"error":{"code":409,"reason":"conflict","message":"differs"}}"#;
        let e = api_error(StatusCode::CONFLICT, body);
        assert_eq!(e.to_string(), "differs (409 conflict)");
        let e = api_error(StatusCode::BAD_GATEWAY, b"<html>proxy</html>");
        assert!(
            matches!(e, ClientError::Api { status: 502, ref reason, .. } if reason == "bad_gateway")
        );
        assert_eq!(wait_param(Duration::from_millis(1500)), "1.5");
    }

    #[test]
    fn token_is_redacted() {
        let client = Client::new(["http://h:1"], Some("s3cret")).unwrap();
        assert!(!format!("{client:?}").contains("s3cret"));
    }
}
