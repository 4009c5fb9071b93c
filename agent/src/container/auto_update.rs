//! `AutoUpdate=registry`: while the container runs, the shim asks the
//! registry for a newer image of its tag every so often (as `Pull=newer`
//! does); when there is one, it pulls it and asks systemd to restart the
//! unit, whose new container runs it.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use flotilla_proto::container::{AutoUpdate, ContainerSpec, ImagePull, PullPolicy};

use super::pull::{self, PullError};
use super::runtime::ContainerRuntime;
use super::shim::{Notifier, Shim};
use super::systemd::UnitControl;

/// How often a unit with `AutoUpdate=registry` asks the registry for a
/// newer image, unless its environment says otherwise
/// ([`AUTO_UPDATE_ENV`]).
pub const DEFAULT_AUTO_UPDATE_INTERVAL: Duration = Duration::from_secs(3600);

/// The shim's environment variable (the unit's `Environment=`) that sets
/// how often `AutoUpdate=registry` checks: a time span such as `10min`.
pub const AUTO_UPDATE_ENV: &str = "FLOTILLA_AUTO_UPDATE_INTERVAL";

/// How long one `AutoUpdate=registry` check (and the pull it may do) may
/// take: it holds the image's lock, which other units' pulls wait for.
const AUTO_UPDATE_TIMEOUT: Duration = Duration::from_secs(600);

/// An `AutoUpdate=registry` check in flight.
pub(super) type UpdateCheck<'a> =
    Pin<Box<dyn Future<Output = Result<pull::Outcome, PullError>> + Send + 'a>>;

/// The next tick, if there are ticks; else never.
pub(super) async fn next_tick(ticks: &mut Option<tokio::time::Interval>) {
    match ticks {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// How often `AutoUpdate=registry` checks: [`AUTO_UPDATE_ENV`] (a time
/// span, at least 1s) or [`DEFAULT_AUTO_UPDATE_INTERVAL`]; `None` without
/// `AutoUpdate=registry`.
pub fn auto_update_interval(spec: &ContainerSpec, env: Option<&str>) -> Option<Duration> {
    if spec.pull.auto_update != AutoUpdate::Registry {
        return None;
    }
    let every = match env.map(flotilla_proto::duration::parse_timespan) {
        Some(Ok(d)) if d >= Duration::from_secs(1) => d,
        Some(_) => {
            tracing::warn!(
                "{AUTO_UPDATE_ENV} is not a time span of at least 1s: checking every {}s",
                DEFAULT_AUTO_UPDATE_INTERVAL.as_secs()
            );
            DEFAULT_AUTO_UPDATE_INTERVAL
        }
        None => DEFAULT_AUTO_UPDATE_INTERVAL,
    };
    Some(every)
}

impl<R: ContainerRuntime, U: UnitControl, N: Notifier> Shim<R, U, N> {
    /// `AutoUpdate=registry`: pulls the image if the registry has a newer
    /// one (as `Pull=newer`).
    pub(super) async fn check_update(&self) -> Result<pull::Outcome, PullError> {
        let newer = ImagePull {
            policy: PullPolicy::Newer,
            ..self.spec.pull.clone()
        };
        pull::ensure_image(
            &self.runtime,
            &self.spec.image,
            &newer,
            &self.pulls,
            async { Some(AUTO_UPDATE_TIMEOUT) },
            || {},
        )
        .await
    }

    /// After an `AutoUpdate=registry` check: a newer image restarts the
    /// unit, so that its new container runs it.
    pub(super) async fn updated(&self, result: Result<pull::Outcome, PullError>) {
        let unit = self.unit.as_str();
        let image = &self.spec.image;
        match result {
            Ok(pull::Outcome::Pulled | pull::Outcome::Shared) => {
                tracing::info!(
                    "AutoUpdate=registry: a newer image {image} is here; restarting {unit}"
                );
                match self.systemd.restart_unit(unit).await {
                    Ok(()) => {}
                    Err(e) if e.is_conflict() => {
                        tracing::info!("{e}: the job already queued decides");
                    }
                    Err(e) => {
                        tracing::warn!("AutoUpdate=registry: cannot restart {unit}: {e}");
                    }
                }
            }
            Ok(pull::Outcome::Local | pull::Outcome::UpToDate) => {}
            Err(e) => tracing::warn!("AutoUpdate=registry: {e}"),
        }
    }
}
