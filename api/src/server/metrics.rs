//! `GET /metrics`: the server's Prometheus metrics (docs/metrics.md), and
//! the API's own: requests by route and status, heartbeat latency, long
//! polls open. Also the small plain-HTTP listener an agent serves its own
//! metrics on (`serve_registry`).
//!
//! The page is OpenMetrics 1.0 when the scraper asks for it in `Accept`
//! (Prometheus does), and Prometheus' text format 0.0.4 otherwise (curl,
//! `promtool check metrics`). Both come from one registry; the label sets
//! are bounded: a route is its template (`/v1/units/{name}`), never the
//! path asked for, and requests to paths no route has are not counted.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use flotilla_scheduler::control::{ControlError, ControlPlane};
use flotilla_scheduler::metrics::SchedulerMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::routes::{Endpoint, ROUTES, Route};
use super::{ApiError, AppState};

/// The `Content-Type` of an OpenMetrics page.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The `Content-Type` of a page in Prometheus' text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: &'static str,
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// The API's own metrics.
#[derive(Debug, Clone)]
struct ApiMetrics {
    requests: Family<RequestLabels, Counter>,
    heartbeats: Histogram,
    long_polls: Family<RouteLabel, Gauge>,
}

/// What a server shows at `/metrics`: its registry, built once, and the
/// handles of the API's own metrics.
pub struct Metrics {
    registry: Registry,
    api: ApiMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// The API's metrics, the scheduler's (`scheduler`) and the build's.
    pub fn new(scheduler: &SchedulerMetrics) -> Metrics {
        let mut registry = Registry::default();
        build_info(&mut registry);
        scheduler.register(&mut registry);
        let api = ApiMetrics {
            requests: Family::default(),
            // 0.5 ms to 8 s, doubling.
            heartbeats: Histogram::new(exponential_buckets(0.0005, 2.0, 15)),
            long_polls: Family::default(),
        };
        registry.register(
            "flotilla_api_requests",
            "Requests answered, by method, route (its template) and status code",
            api.requests.clone(),
        );
        registry.register(
            "flotilla_heartbeat_duration_seconds",
            "How long the server took to answer agents' heartbeats",
            api.heartbeats.clone(),
        );
        registry.register(
            "flotilla_api_long_polls_open",
            "Long polls waiting for a change, by route",
            api.long_polls.clone(),
        );
        // Both long-poll routes show from the start, at 0.
        for endpoint in [Endpoint::Watch, Endpoint::MachineUnits] {
            let _ = api.long_polls.get_or_create_owned(&RouteLabel {
                route: path_of(endpoint),
            });
        }
        Metrics { registry, api }
    }

    /// The registry, for other parts of the server to add their metrics
    /// to before it is shared.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The page, in the format `accept` asks for: its content type and
    /// text.
    pub fn render(&self, accept: Option<&str>) -> Result<(&'static str, String), std::fmt::Error> {
        render(&self.registry, accept)
    }

    /// Counts a long poll as open until the guard is dropped.
    pub(super) fn long_poll(&self, endpoint: Endpoint) -> LongPoll {
        let gauge = self.api.long_polls.get_or_create_owned(&RouteLabel {
            route: path_of(endpoint),
        });
        gauge.inc();
        LongPoll(gauge)
    }
}

/// An open long poll; see [`Metrics::long_poll`].
pub(super) struct LongPoll(Gauge);

impl Drop for LongPoll {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The path template of `endpoint`'s route.
fn path_of(endpoint: Endpoint) -> &'static str {
    ROUTES
        .iter()
        .find(|r| r.endpoint == endpoint)
        .map_or("", |r| r.path)
}

/// Adds `flotilla_build_info{version}` (always 1) to `registry`.
pub fn build_info(registry: &mut Registry) {
    let info: Family<BuildLabels, Gauge> = Family::default();
    info.get_or_create(&BuildLabels {
        version: env!("CARGO_PKG_VERSION"),
    })
    .set(1);
    registry.register(
        "flotilla_build_info",
        "The version of flotilla this process runs (always 1)",
        info,
    );
}

/// Whether `accept` asks for OpenMetrics (a media range
/// `application/openmetrics-text` that is not refused with `q=0`).
fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|accept| {
        accept.split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        })
    })
}

/// `registry` as a page in the format `accept` asks for.
pub fn render(
    registry: &Registry,
    accept: Option<&str>,
) -> Result<(&'static str, String), std::fmt::Error> {
    let mut text = String::new();
    if wants_openmetrics(accept) {
        prometheus_client::encoding::text::encode(&mut text, registry)?;
        Ok((OPENMETRICS, text))
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut text, registry)?;
        Ok((PROMETHEUS_TEXT, text))
    }
}

fn page(registry: &Registry, headers: &HeaderMap) -> Result<Response, ApiError> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    // Writing into a String fails only if a collector does, which ours
    // do not; answered as any internal error would be.
    let (content_type, text) = render(registry, accept).map_err(|e| {
        ApiError::Control(ControlError::Internal(format!(
            "cannot encode the metrics: {e}"
        )))
    })?;
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        text,
    )
        .into_response())
}

/// `GET /metrics`.
pub(super) async fn metrics<C: ControlPlane>(
    State(s): State<AppState<C>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    page(&s.metrics.registry, &headers)
}

/// The state of one route's counting layer.
#[derive(Clone)]
pub(super) struct Counted {
    pub(super) route: Route,
    pub(super) metrics: Arc<Metrics>,
}

/// Counts the route's requests by status, outside its guard (so refusals
/// count too), and times heartbeats.
pub(super) async fn count(State(c): State<Counted>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    c.metrics
        .api
        .requests
        .get_or_create(&RequestLabels {
            method: c.route.method.as_str(),
            route: c.route.path,
            code: response.status().as_u16(),
        })
        .inc();
    if c.route.endpoint == Endpoint::Heartbeat {
        c.metrics
            .api
            .heartbeats
            .observe(started.elapsed().as_secs_f64());
    }
    response
}

/// A router that answers `GET /metrics` with `registry` and nothing else
/// (404, or 405 for other methods): what an agent serves on its metrics
/// listener, with [`serve`](super::serve) and no TLS.
pub fn registry_router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(r): State<Arc<Registry>>, headers: HeaderMap| async move {
                page(&r, &headers)
            }),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "only /metrics is served here\n") })
        .with_state(registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_only_when_asked() {
        // What Prometheus sends.
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(wants_openmetrics(Some("Application/OpenMetrics-Text")));
        assert!(!wants_openmetrics(None));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(Some("text/plain")));
        assert!(!wants_openmetrics(Some(
            "application/openmetrics-text;q=0, text/plain"
        )));
    }

    #[test]
    fn pages_in_both_formats() {
        let metrics = Metrics::new(&SchedulerMetrics::default());
        let (kind, text) = metrics.render(None).unwrap();
        assert_eq!(kind, PROMETHEUS_TEXT);
        assert!(
            text.contains("# TYPE flotilla_leader_changes_total counter\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
        let (kind, text) = metrics
            .render(Some("application/openmetrics-text"))
            .unwrap();
        assert_eq!(kind, OPENMETRICS);
        assert!(
            text.contains("# TYPE flotilla_leader_changes counter\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            text.contains(
                "flotilla_api_long_polls_open{route=\"/v1/agent/machines/{id}/units\"} 0\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "flotilla_build_info{{version=\"{}\"}} 1\n",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
    }

    #[test]
    fn long_polls_are_counted_while_open() {
        let metrics = Metrics::new(&SchedulerMetrics::default());
        let open = |m: &Metrics| {
            m.render(None)
                .unwrap()
                .1
                .lines()
                .find(|l| l.starts_with("flotilla_api_long_polls_open{route=\"/v1/watch\"}"))
                .map(str::to_owned)
        };
        let first = metrics.long_poll(Endpoint::Watch);
        let second = metrics.long_poll(Endpoint::Watch);
        assert_eq!(
            open(&metrics).as_deref(),
            Some("flotilla_api_long_polls_open{route=\"/v1/watch\"} 2")
        );
        drop(first);
        drop(second);
        assert_eq!(
            open(&metrics).as_deref(),
            Some("flotilla_api_long_polls_open{route=\"/v1/watch\"} 0")
        );
    }
}
