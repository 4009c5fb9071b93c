//! The HTTP server: the public REST API (`/v1/units`, `/v1/state`,
//! `/v1/machines`, `/v1/servers`, `/v1/watch`, `/v1/events`, `/v1/secrets`, `/v1/sync`), the agent endpoints (`/v1/agent/...`),
//! fleet's v1 API for fleet's clients (`/fleet/v1/...`, in `fleet/`), the
//! OpenAPI document, `/healthz`, and the web console (`/ui/`, in `ui/`).
//!
//! One file per resource, as in firecracker's `api_server/request/`: each
//! handler parses its request with the extractors of `extract.rs`, checks
//! what only HTTP can tell (path against body, both or neither of two
//! fields), calls one [`ControlPlane`] method and prints the answer. No
//! scheduling logic lives here.

mod agent;
mod auth;
#[cfg(test)]
mod bodies_fuzz;
mod error;
mod events;
mod extract;
mod fleet;
mod inspect;
mod listen;
mod machines;
mod meta;
pub mod metrics;
pub mod relay;
mod rollouts;
mod routes;
mod secrets;
mod servers;
mod state;
mod sync;
mod trust;
pub mod ui;
mod units;
mod version;
mod watch;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use flotilla_scheduler::control::ControlPlane;
use flotilla_store::raft::RaftStore;

pub use auth::Trust;
pub use error::ApiError;
pub use listen::{ConnInfo, DEFAULT_MAX_CONNECTIONS, HttpLimits, SHUTDOWN_GRACE, Transport, serve};
pub use metrics::Metrics;
pub use routes::{Access, Endpoint, HttpMethod, ROUTES, Route};

/// The largest request body accepted by default: 1 MiB, four times the
/// largest unit file (`MAX_UNIT_FILE_BYTES`) with room for JSON escaping.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// How long a long poll waits when the request gives no `wait`.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// The longest a long poll waits, whatever the request asks.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// How the server behaves; [`ApiConfig::default`] suits production.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Request bodies larger than this are refused with 413.
    pub body_limit: usize,
    /// The `wait` of a long poll that gives none.
    pub default_wait: Duration,
    /// The cap on the `wait` of a long poll.
    pub max_wait: Duration,
    /// Connection caps and read timeouts.
    pub http: HttpLimits,
    /// The web console's sessions.
    pub ui: ui::UiConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            body_limit: DEFAULT_BODY_LIMIT,
            default_wait: DEFAULT_WAIT,
            max_wait: MAX_WAIT,
            http: HttpLimits::default(),
            ui: ui::UiConfig::default(),
        }
    }
}

/// What every handler is given: the control plane, the credentials and
/// the configuration.
pub(crate) struct AppState<C> {
    pub(crate) control: Arc<C>,
    pub(crate) trust: Arc<Trust>,
    pub(crate) config: Arc<ApiConfig>,
    /// Units fleet's clients just asked to stop (see `fleet::Stopping`).
    pub(crate) stopping: Arc<fleet::Stopping>,
    /// Requests to machines' agents (status, journal).
    pub(crate) relay: Arc<relay::Relay>,
    /// What `/metrics` shows, and the API's own metrics.
    pub(crate) metrics: Arc<Metrics>,
    /// The raft store, when the server runs on one: its members are listed,
    /// added and removed at `/v1/servers`.
    pub(crate) raft: Option<Arc<RaftStore>>,
    /// The web console's sessions.
    pub(crate) sessions: Arc<ui::sessions::Sessions>,
}

// Not derived: a derive would require `C: Clone`, and only the `Arc`s are
// cloned.
impl<C> Clone for AppState<C> {
    fn clone(&self) -> Self {
        AppState {
            control: Arc::clone(&self.control),
            trust: Arc::clone(&self.trust),
            config: Arc::clone(&self.config),
            stopping: Arc::clone(&self.stopping),
            relay: Arc::clone(&self.relay),
            metrics: Arc::clone(&self.metrics),
            raft: self.raft.clone(),
            sessions: Arc::clone(&self.sessions),
        }
    }
}

impl<C> fmt::Debug for AppState<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The API's router over `control`: every route of [`ROUTES`], each behind
/// its [`Access`] (401 without a valid credential, 403 with one that may
/// not) and, for changes, the audit log; JSON errors for unknown routes
/// (404) and methods (405); the body limit. Its `/metrics` shows the API's
/// own metrics (and the scheduler's, all at rest): see
/// [`router_with_metrics`].
pub fn router<C: ControlPlane>(control: Arc<C>, trust: Arc<Trust>, config: ApiConfig) -> Router {
    let metrics = Arc::new(Metrics::new(
        &flotilla_scheduler::metrics::SchedulerMetrics::default(),
    ));
    router_with_metrics(control, trust, config, metrics, None)
}

/// [`router`], counting into `metrics` and showing it at `/metrics`; with
/// `raft`, the servers' routes show and change the raft group.
pub fn router_with_metrics<C: ControlPlane>(
    control: Arc<C>,
    trust: Arc<Trust>,
    config: ApiConfig,
    metrics: Arc<Metrics>,
    raft: Option<Arc<RaftStore>>,
) -> Router {
    let body_limit = config.body_limit;
    let sessions = Arc::new(ui::sessions::Sessions::new(config.ui));
    let state = AppState {
        control,
        trust: Arc::clone(&trust),
        config: Arc::new(config),
        stopping: Arc::default(),
        relay: Arc::default(),
        metrics: Arc::clone(&metrics),
        raft,
        sessions: Arc::clone(&sessions),
    };
    let mut router = Router::new();
    for route in ROUTES {
        let guarded =
            routes::method_router::<C>(route).route_layer(axum::middleware::from_fn_with_state(
                auth::Guard {
                    route: *route,
                    trust: Arc::clone(&trust),
                    sessions: Arc::clone(&sessions),
                },
                auth::guard,
            ));
        // Outside the guard, so that refusals are counted too.
        let guarded = guarded.route_layer(axum::middleware::from_fn_with_state(
            metrics::Counted {
                route: *route,
                metrics: Arc::clone(&metrics),
            },
            metrics::count,
        ));
        router = router.route(route.path, guarded);
    }
    // The console's files: public, as they hold nothing of the cluster.
    router
        .route("/ui", axum::routing::get(ui::redirect))
        .route("/ui/", axum::routing::get(ui::index))
        .route("/ui/{file}", axum::routing::get(ui::asset))
        .method_not_allowed_fallback(auth::method_not_allowed::<C>)
        .fallback(auth::route_not_found::<C>)
        .with_state(state)
        .layer(DefaultBodyLimit::max(body_limit))
        // Before routing and credentials: a caller of another release
        // line learns that first.
        .layer(axum::middleware::from_fn(version::check))
}
