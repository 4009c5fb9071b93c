//! The client's calls to look at units on their hosts (`flotilla status`,
//! `flotilla journal`), and the agent's side of them: taking requests and
//! streaming the answers back.

use std::time::Duration;

use flotilla_proto::inspect::{AgentRequests, ReplyLine, UnitStatus};
use flotilla_proto::{MachineId, UnitName};
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};

use super::{
    Client, ClientError, LONG_POLL_MARGIN, api_error, request_url, unreachable, wait_param,
};

/// The longest line of a journal stream read; a longer one is an error.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// What `GET /v1/units/{name}/journal` is asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalQuery {
    /// The last this many lines (the server's default when `None`).
    pub lines: Option<u32>,
    pub follow: bool,
    /// As `journalctl --since` reads it.
    pub since: Option<String>,
    /// The machine, for a `Global` unit.
    pub machine: Option<MachineId>,
}

/// A journal as it streams in, a line at a time.
pub struct JournalStream {
    endpoint: String,
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl JournalStream {
    /// The next line; `None` when the stream ended (normally after an
    /// `end` or `error` line; without one, it was cut).
    pub async fn next_line(&mut self) -> Result<Option<ReplyLine>, ClientError> {
        loop {
            if let Some(at) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=at).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(&line).map(Some).map_err(|source| {
                    ClientError::Decode {
                        endpoint: self.endpoint.clone(),
                        source,
                    }
                });
            }
            if self.buffer.len() > MAX_LINE_BYTES {
                return Err(ClientError::Protocol {
                    endpoint: self.endpoint.clone(),
                    message: format!("a line longer than {MAX_LINE_BYTES} bytes"),
                });
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                Ok(None) => return Ok(None),
                Err(e) => return Err(unreachable(self.endpoint.clone(), e)),
            }
        }
    }
}

impl Client {
    /// `GET /v1/units/{name}/status`: the unit as its host's systemd has
    /// it, with its last `lines` journal lines (for operators and admins).
    pub async fn unit_status(
        &self,
        name: &UnitName,
        machine: Option<&MachineId>,
        lines: Option<u32>,
    ) -> Result<UnitStatus, ClientError> {
        let mut query = Vec::new();
        if let Some(m) = machine {
            query.push(("machine", m.to_string()));
        }
        if let Some(n) = lines {
            query.push(("lines", n.to_string()));
        }
        self.get_json(&["v1", "units", name.as_str(), "status"], query)
            .await
    }

    /// `GET /v1/units/{name}/journal`: the unit's journal from its host, a
    /// line at a time as the server passes it on. Not retried on another
    /// server once it started.
    pub async fn journal(
        &self,
        name: &UnitName,
        query: &JournalQuery,
    ) -> Result<JournalStream, ClientError> {
        let mut params = vec![("follow", query.follow.to_string())];
        if let Some(n) = query.lines {
            params.push(("lines", n.to_string()));
        }
        if let Some(since) = &query.since {
            params.push(("since", since.clone()));
        }
        if let Some(m) = &query.machine {
            params.push(("machine", m.to_string()));
        }
        let path = ["v1", "units", name.as_str(), "journal"];
        let inner = &self.inner;
        let mut last_failure = None;
        for base in &inner.endpoints {
            let url = request_url(base, &path, &params);
            let endpoint = format!("GET {url}");
            let mut request = inner.http.request(Method::GET, url);
            if let Some(auth) = &inner.auth {
                request = request.header(AUTHORIZATION, auth.clone());
            }
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) if e.is_connect() => {
                    last_failure = Some(unreachable(endpoint, e));
                    continue;
                }
                Err(e) => return Err(unreachable(endpoint, e)),
            };
            let status = response.status();
            if !status.is_success() {
                let body = response.bytes().await.unwrap_or_default();
                return Err(api_error(status, &body));
            }
            return Ok(JournalStream {
                endpoint,
                response,
                buffer: Vec::new(),
            });
        }
        Err(last_failure.unwrap_or(ClientError::NoEndpoint))
    }

    // ---- the agent's side ----

    /// `GET /v1/agent/machines/{id}/requests`: what this server asks of the
    /// machine's agent, once there is something or `wait` passed.
    pub async fn agent_requests(
        &self,
        id: &MachineId,
        wait: Duration,
    ) -> Result<AgentRequests, ClientError> {
        let path = ["v1", "agent", "machines", id.as_str(), "requests"];
        let mut call = self.call(Method::GET, &path);
        call.query = vec![("wait", wait_param(wait))];
        call.timeout = wait.saturating_add(LONG_POLL_MARGIN);
        self.send_json(call).await
    }

    /// `POST /v1/agent/machines/{id}/replies/{request}`: streams `body`
    /// (newline-delimited JSON [`ReplyLine`]s) as the answer to a request,
    /// to the first server of this client (the one that asked: an agent
    /// keeps one client per server). `Ok(false)` when the server says the
    /// asker went away.
    pub async fn agent_reply<S>(
        &self,
        id: &MachineId,
        request: &str,
        body: S,
    ) -> Result<bool, ClientError>
    where
        S: futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + Sync + 'static,
    {
        let inner = &self.inner;
        let path = ["v1", "agent", "machines", id.as_str(), "replies", request];
        let url = request_url(&inner.endpoints[0], &path, &[]);
        let endpoint = format!("POST {url}");
        let mut call = inner
            .http
            .request(Method::POST, url)
            .header(CONTENT_TYPE, "application/x-ndjson")
            .body(reqwest::Body::wrap_stream(body));
        if let Some(auth) = &inner.auth {
            call = call.header(AUTHORIZATION, auth.clone());
        }
        let response = call.send().await.map_err(|e| unreachable(endpoint, e))?;
        let status = response.status();
        if status == reqwest::StatusCode::GONE {
            return Ok(false);
        }
        if !status.is_success() {
            let body = response.bytes().await.unwrap_or_default();
            return Err(api_error(status, &body));
        }
        Ok(true)
    }
}
