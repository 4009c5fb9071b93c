//! The client's calls about the cluster's history (`GET /v1/events`).

use std::time::Duration;

use flotilla_proto::UnitName;
use flotilla_proto::event::EventPage;
use reqwest::Method;

use super::{Client, ClientError, LONG_POLL_MARGIN, PageQuery, decode, page_query, wait_param};

/// Filters of `GET /v1/events`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// Events at or after this time (milliseconds since the Unix epoch).
    pub since_ms: Option<u64>,
    pub unit: Option<UnitName>,
    /// A machine id, or the start of one.
    pub machine: Option<String>,
}

impl EventQuery {
    fn params(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        if let Some(since) = self.since_ms {
            query.push(("sinceMs", since.to_string()));
        }
        if let Some(unit) = &self.unit {
            query.push(("unit", unit.to_string()));
        }
        if let Some(machine) = &self.machine {
            query.push(("machine", machine.clone()));
        }
        query
    }
}

impl Client {
    /// `GET /v1/events`: one page of the cluster's history, oldest first.
    pub async fn events(
        &self,
        filter: &EventQuery,
        page: &PageQuery,
    ) -> Result<EventPage, ClientError> {
        let mut query = page_query(page);
        query.extend(filter.params());
        self.get_json(&["v1", "events"], query).await
    }

    /// `GET /v1/events?index=N&wait=W`: the events written after store
    /// revision `index`, waiting up to `wait` (the server caps it) for the
    /// first; pass the answer's `index` next time.
    pub async fn follow_events(
        &self,
        filter: &EventQuery,
        index: i64,
        wait: Duration,
    ) -> Result<EventPage, ClientError> {
        let mut call = self.call(Method::GET, &["v1", "events"]);
        call.query = filter.params();
        call.query.push(("index", index.to_string()));
        call.query.push(("wait", wait_param(wait)));
        call.timeout = wait.saturating_add(LONG_POLL_MARGIN);
        let (endpoint, _, body) = self.send(call).await?;
        decode(&endpoint, &body)
    }
}
