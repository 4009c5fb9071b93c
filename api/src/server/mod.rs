//! The HTTP server: the public REST API (`/v1/units`, `/v1/state`,
//! `/v1/machines`, `/v1/watch`), the agent endpoints (`/v1/agent/...`), the
//! OpenAPI document and `/healthz`.
//!
//! One file per resource, as in firecracker's `api_server/request/`: each
//! handler parses its request with the extractors of `extract.rs`, checks
//! what only HTTP can tell (path against body, both or neither of two
//! fields), calls one [`ControlPlane`] method and prints the answer. No
//! scheduling logic lives here.

mod agent;
mod auth;
mod error;
mod extract;
mod machines;
mod meta;
mod routes;
mod servers;
mod state;
mod units;
mod watch;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use flotilla_scheduler::control::ControlPlane;
use tokio::net::TcpListener;
use tokio::sync::watch as signal;

pub use error::ApiError;
pub use routes::{Endpoint, HttpMethod, ROUTES, Route};

/// The largest request body accepted by default: 1 MiB, four times the
/// largest unit file (`MAX_UNIT_FILE_BYTES`) with room for JSON escaping.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// How long a long poll waits when the request gives no `wait`.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// The longest a long poll waits, whatever the request asks.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// How long [`serve`] lets in-flight requests finish after shutdown was
/// asked for, before it returns anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How the server behaves; [`ApiConfig::default`] suits production.
#[derive(Clone)]
pub struct ApiConfig {
    /// When set, every `/v1/` route requires `Authorization: Bearer TOKEN`
    /// (401 otherwise). `/healthz` stays open.
    pub token: Option<String>,
    /// Request bodies larger than this are refused with 413.
    pub body_limit: usize,
    /// The `wait` of a long poll that gives none.
    pub default_wait: Duration,
    /// The cap on the `wait` of a long poll.
    pub max_wait: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            token: None,
            body_limit: DEFAULT_BODY_LIMIT,
            default_wait: DEFAULT_WAIT,
            max_wait: MAX_WAIT,
        }
    }
}

impl fmt::Debug for ApiConfig {
    // The token is a secret: it never reaches a log through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("body_limit", &self.body_limit)
            .field("default_wait", &self.default_wait)
            .field("max_wait", &self.max_wait)
            .finish()
    }
}

/// What every handler is given: the control plane and the configuration.
pub(crate) struct AppState<C> {
    pub(crate) control: Arc<C>,
    pub(crate) config: Arc<ApiConfig>,
}

// Not derived: a derive would require `C: Clone`, and only the `Arc` is
// cloned.
impl<C> Clone for AppState<C> {
    fn clone(&self) -> Self {
        AppState {
            control: Arc::clone(&self.control),
            config: Arc::clone(&self.config),
        }
    }
}

/// The API's router over `control`: every route of [`ROUTES`], JSON errors
/// for unknown routes (404) and methods (405), the body limit and, when
/// `config.token` is set, bearer-token auth on `/v1/`.
pub fn router<C: ControlPlane>(control: Arc<C>, config: ApiConfig) -> Router {
    let token = config.token.clone();
    let body_limit = config.body_limit;
    let state = AppState {
        control,
        config: Arc::new(config),
    };
    let mut router = Router::new();
    for route in ROUTES {
        router = router.route(route.path, routes::method_router::<C>(route));
    }
    let router = router
        .method_not_allowed_fallback(error::method_not_allowed)
        .fallback(error::route_not_found)
        .with_state(state)
        .layer(DefaultBodyLimit::max(body_limit));
    match token {
        Some(token) => router.layer(axum::middleware::from_fn_with_state(
            Arc::<str>::from(token),
            auth::require_token,
        )),
        None => router,
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then drains:
/// stops accepting, answers the long polls in flight at once (as if their
/// wait had passed), lets other requests finish, and returns when every
/// connection closed or after [`SHUTDOWN_GRACE`], whichever comes first.
pub async fn serve<F>(listener: TcpListener, router: Router, shutdown: F) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let (draining, drain) = signal::channel(false);
    let router = router.layer(axum::Extension(extract::Draining(drain.clone())));
    let signal = async move {
        shutdown.await;
        // Only fails when no receiver is left, and `drain` is one.
        let _ = draining.send(true);
    };
    let mut grace = drain;
    let server = axum::serve(listener, router).with_graceful_shutdown(signal);
    tokio::select! {
        result = server => result,
        () = async move {
            if grace.wait_for(|d| *d).await.is_ok() {
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => Ok(()),
    }
}
